//! SQL over a real archive: the retention job writes Parquet from a real
//! database into a directory, and the answers DataFusion gives over the
//! files equal the same questions asked of the archive tables.

use remaudit_archive::{ArchiveQuery, ArchiveQueryError, Limits, json_rows};
use remaudit_retention::{Archive, Settings};
use remaudit_store::Actor;
use remaudit_testkit::history::{clock, load};
use remaudit_testkit::{PgDb, SqliteDb};
use serde_json::{Value, json};

/// Retires the due part of the test history to a Parquet archive in a
/// fresh directory; returns the directory and its URL.
async fn archived(store: &dyn remaudit_store::Store) -> (tempfile::TempDir, String) {
    load(store, clock()).await;
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("file://{}", dir.path().display());
    let archive = Archive::open(&url).expect("archive");
    let settings = Settings {
        batch_rows: 40,
        ..Settings::default()
    };
    let actor = Actor::new("test".to_owned(), "archive queries".to_owned());
    let report = remaudit_retention::run_once(store, &archive, &settings, clock(), false, &actor)
        .await
        .expect("retention run");
    assert!(report.batches.len() > 1, "{report:?}");
    (dir, url)
}

/// The answer to `sql`, each row [`normalise`]d.
async fn answer(query: &ArchiveQuery, sql: &str) -> Vec<Value> {
    let rows = json_rows(
        &query
            .sql(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}")),
    )
    .expect("rows");
    rows.into_iter()
        .map(|row| normalise(Value::Object(row)))
        .collect()
}

/// The questions, asked of the archive and of the archive tables.
const QUESTIONS: [(&str, &str); 4] = [
    (
        "SELECT overall_phase, count(*) AS n, sum(duplicate_count) AS dups \
         FROM remediation_audit GROUP BY overall_phase ORDER BY overall_phase",
        "SELECT overall_phase, count(*) AS n, sum(duplicate_count) AS dups \
         FROM remediation_audit_archive GROUP BY overall_phase ORDER BY overall_phase",
    ),
    (
        "SELECT count(*) AS n, count(DISTINCT alert_fingerprint) AS alerts FROM remediation_audit",
        "SELECT count(*) AS n, count(DISTINCT alert_fingerprint) AS alerts FROM remediation_audit_archive",
    ),
    (
        "SELECT r.alert_fingerprint, count(*) AS events FROM remediation_audit r \
         JOIN remediation_audit_events e ON e.namespace = r.namespace \
         AND e.remediation_name = r.remediation_name AND e.start_time = r.start_time \
         GROUP BY r.alert_fingerprint ORDER BY events DESC, r.alert_fingerprint LIMIT 5",
        "SELECT r.alert_fingerprint, count(*) AS events FROM remediation_audit_archive r \
         JOIN remediation_audit_events_archive e ON e.namespace = r.namespace \
         AND e.remediation_name = r.remediation_name AND e.start_time = r.start_time \
         GROUP BY r.alert_fingerprint ORDER BY events DESC, r.alert_fingerprint LIMIT 5",
    ),
    (
        "SELECT id, remediation_name FROM remediation_audit_events \
         WHERE overall_phase = 'failed' ORDER BY id DESC LIMIT 3",
        "SELECT id, remediation_name FROM remediation_audit_events_archive \
         WHERE overall_phase = 'failed' ORDER BY id DESC LIMIT 3",
    ),
];

/// A database row as JSON, numbers as numbers.
fn normalise(row: Value) -> Value {
    match row {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, normalise(v)))
                .collect(),
        ),
        Value::String(s) if s.parse::<i64>().is_ok() => json!(s.parse::<i64>().ok()),
        other => other,
    }
}

#[tokio::test]
async fn postgres_answers_over_the_archive_equal_the_archive_tables() {
    let db = PgDb::create().await;
    let (_dir, url) = archived(db.store().await.as_ref()).await;
    let pool = db.pool().await;
    let query = ArchiveQuery::open(&url, None, Limits::default())
        .await
        .expect("open");
    assert!(query.batches() > 1);
    assert_eq!(query.skipped(), 0);
    for (archive_sql, table_sql) in QUESTIONS {
        let want: Vec<Value> = sqlx::query_scalar::<_, Value>(sqlx::AssertSqlSafe(format!(
            "SELECT to_jsonb(q) FROM ({table_sql}) q"
        )))
        .fetch_all(&pool)
        .await
        .expect(table_sql)
        .into_iter()
        .map(normalise)
        .collect();
        assert!(!want.is_empty(), "{table_sql}");
        let got = answer(&query, archive_sql).await;
        assert_eq!(got, want, "{archive_sql}");
    }
}

#[tokio::test]
async fn sqlite_answers_over_the_archive_equal_the_archive_tables() {
    let db = SqliteDb::create();
    let (_dir, url) = archived(db.store().await.as_ref()).await;
    let pool = sqlx::SqlitePool::connect(&db.url()).await.expect("pool");
    let query = ArchiveQuery::open(&url, None, Limits::default())
        .await
        .expect("open");
    for (archive_sql, table_sql) in QUESTIONS {
        let columns = if table_sql.contains("overall_phase, count") {
            "json_object('overall_phase', overall_phase, 'n', n, 'dups', dups)"
        } else if table_sql.contains("DISTINCT") {
            "json_object('n', n, 'alerts', alerts)"
        } else if table_sql.contains("events DESC") {
            "json_object('alert_fingerprint', alert_fingerprint, 'events', events)"
        } else {
            "json_object('id', id, 'remediation_name', remediation_name)"
        };
        let want: Vec<Value> = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!(
            "SELECT {columns} FROM ({table_sql})"
        )))
        .fetch_all(&pool)
        .await
        .expect(table_sql)
        .into_iter()
        .map(|text| normalise(serde_json::from_str(&text).expect("json")))
        .collect();
        let got = answer(&query, archive_sql).await;
        assert_eq!(got, want, "{archive_sql}");
    }
}

/// Every Parquet file under `dir`.
fn parquet_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn a_damaged_file_fails_the_query_with_its_name_and_never_answers() {
    let db = SqliteDb::create();
    let (dir, url) = archived(db.store().await.as_ref()).await;
    let files = parquet_files(dir.path());
    let count = "SELECT count(*) AS n FROM remediation_audit_events";

    // Cut short: its size no longer matches the manifest.
    let events = files
        .iter()
        .find(|f| {
            f.to_string_lossy()
                .contains("table=remediation_audit_events/")
        })
        .expect("an events file");
    let whole = std::fs::read(events).expect("read");
    std::fs::write(events, &whole[..whole.len() / 2]).expect("cut");
    let query = ArchiveQuery::open(&url, None, Limits::default())
        .await
        .expect("open");
    let err = query.sql(count).await.expect_err("damaged");
    let relative = events
        .strip_prefix(dir.path())
        .expect("under")
        .to_string_lossy()
        .into_owned();
    assert!(
        matches!(&err, ArchiveQueryError::Damaged { path, .. } if *path == relative),
        "{err}"
    );
    assert!(err.to_string().contains(&relative), "{err}");

    // The same size, other bytes in the middle: a query that reads them
    // fails, naming the file.
    let mut garbled = whole.clone();
    let middle = garbled.len() / 2;
    for b in &mut garbled[middle - 64..middle + 64] {
        *b = !*b;
    }
    std::fs::write(events, &garbled).expect("garble");
    let outcome = query
        .sql("SELECT sum(length(record)) AS n, max(event_time) AS t FROM remediation_audit_events")
        .await;
    // Known as damage by the error's type, whatever the engine wraps it in.
    match outcome {
        Err(ArchiveQueryError::Damaged { path, what }) => {
            assert_eq!(path, relative);
            assert!(what.contains("SHA-256"), "{what}");
        }
        other => panic!("a garbled file gives no answer: {other:?}"),
    }
    // A manifest altered to list a file outside its batch is refused.
    let manifest = events
        .ancestors()
        .find(|d| d.join("manifest.json").is_file())
        .expect("the batch directory")
        .join("manifest.json");
    let original = std::fs::read_to_string(&manifest).expect("manifest");
    let mut altered: Value = serde_json::from_str(&original).expect("json");
    altered["files"][0]["path"] =
        json!("../../../etc/table=remediation_audit/week=2026-W01/part-0.parquet");
    std::fs::write(&manifest, altered.to_string()).expect("alter");
    let err = ArchiveQuery::open(&url, None, Limits::default())
        .await
        .expect_err("altered manifest");
    assert!(err.to_string().contains("not a file of its batch"), "{err}");
    std::fs::write(&manifest, original).expect("restore");
    // A missing file is named too.
    std::fs::remove_file(events).expect("remove");
    let err = query.sql(count).await.expect_err("missing");
    assert!(err.to_string().contains("is missing"), "{err}");
}

#[tokio::test]
async fn only_reads_are_allowed_and_limits_hold() {
    let db = SqliteDb::create();
    let (dir, url) = archived(db.store().await.as_ref()).await;
    let query = ArchiveQuery::open(
        &url,
        None,
        Limits {
            rows: 3,
            ..Limits::default()
        },
    )
    .await
    .expect("open");
    let before = parquet_files(dir.path());
    let out = dir.path().join("copy");
    for sql in [
        "CREATE TABLE t AS SELECT 1".to_owned(),
        "DROP TABLE remediation_audit".to_owned(),
        "INSERT INTO remediation_audit (id) VALUES (1)".to_owned(),
        format!(
            "COPY remediation_audit TO '{}' STORED AS PARQUET",
            out.display()
        ),
        "SET datafusion.execution.batch_size = 1".to_owned(),
        "SELECT 1; SELECT 2".to_owned(),
        "SELEKT".to_owned(),
    ] {
        let err = query.sql(&sql).await.expect_err(&sql);
        assert!(matches!(err, ArchiveQueryError::Query(_)), "{sql}: {err}");
    }
    assert_eq!(parquet_files(dir.path()), before, "nothing was written");
    assert!(!out.exists());
    let err = query
        .sql("SELECT id FROM remediation_audit")
        .await
        .expect_err("too many rows");
    assert!(matches!(err, ArchiveQueryError::TooManyRows(3)), "{err}");
    let three = query
        .sql("SELECT id FROM remediation_audit ORDER BY id LIMIT 3")
        .await
        .expect("three rows");
    assert_eq!(json_rows(&three).expect("rows").len(), 3);
}

#[tokio::test]
async fn two_databases_in_one_archive_are_read_one_at_a_time() {
    let (a, b) = (SqliteDb::create(), SqliteDb::create());
    let (dir, url) = archived(a.store().await.as_ref()).await;
    let store = b.store().await;
    load(store.as_ref(), clock()).await;
    let actor = Actor::new("test".to_owned(), "archive queries".to_owned());
    let archive = Archive::open(&url).expect("archive");
    remaudit_retention::run_once(
        store.as_ref(),
        &archive,
        &Settings::default(),
        clock(),
        false,
        &actor,
    )
    .await
    .expect("second database's run");
    let err = ArchiveQuery::open(&url, None, Limits::default())
        .await
        .expect_err("two databases");
    assert!(err.to_string().contains("--installation"), "{err}");
    let mut installations: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    installations.sort();
    assert_eq!(installations.len(), 2);
    let mut total = 0;
    for installation in &installations {
        let query = ArchiveQuery::open(&url, Some(installation), Limits::default())
            .await
            .expect("one database");
        let rows = answer(&query, "SELECT count(*) AS n FROM remediation_audit").await;
        total += rows[0]["n"].as_i64().expect("count");
    }
    let mut archived = 0;
    for db in [&a, &b] {
        let pool = sqlx::SqlitePool::connect(&db.url()).await.expect("pool");
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM remediation_audit_archive")
            .fetch_one(&pool)
            .await
            .expect("count");
        archived += n;
    }
    assert_eq!(total, archived);

    // A copy of a batch under another name (a second history of the
    // database) makes its number ambiguous: refused.
    let batch = std::fs::read_dir(dir.path().join(&installations[0]))
        .expect("batches")
        .map(|e| e.expect("entry").path())
        .find(|p| p.join("manifest.json").is_file())
        .expect("a batch");
    let name = batch
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let copy = batch.with_file_name(format!("{}ffffffff", &name[..name.len() - 8]));
    copy_dir(&batch, &copy);
    let err = ArchiveQuery::open(&url, Some(&installations[0]), Limits::default())
        .await
        .expect_err("two manifests of one batch");
    assert!(err.to_string().contains("has two manifests"), "{err}");

    // A directory that is not there is an error, and is not made.
    let missing = dir.path().join("nowhere");
    let err = ArchiveQuery::open(
        &format!("file://{}", missing.display()),
        None,
        Limits::default(),
    )
    .await
    .expect_err("missing directory");
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(!missing.exists());
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("dir") {
        let path = entry.expect("entry").path();
        let target = to.join(path.file_name().expect("name"));
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).expect("copy");
        }
    }
}

#[tokio::test]
async fn a_postmortem_reads_only_its_weeks_and_misses_no_row() {
    let db = SqliteDb::create();
    let (_dir, url) = archived(db.store().await.as_ref()).await;
    let query = ArchiveQuery::open(&url, None, Limits::default())
        .await
        .expect("open");
    let first = clock() - chrono::TimeDelta::days(125);
    let mut found = 0;
    // Windows of odd lengths starting at odd hours, across week boundaries.
    for (offset_hours, length_hours) in [(0, 24 * 40), (31, 24 * 7), (200, 24 * 9 + 5), (700, 50)] {
        let since = first + chrono::TimeDelta::hours(offset_hours);
        let until = since + chrono::TimeDelta::hours(length_hours);
        for fingerprint in ["fp-0", "fp-4"] {
            let listed: Vec<i64> = query
                .postmortem(fingerprint, since, until, None, 1000)
                .await
                .expect("postmortem")
                .iter()
                .map(|r| r.id)
                .collect();
            let sql = format!(
                "SELECT id FROM remediation_audit WHERE alert_fingerprint = '{fingerprint}' \
                 AND start_time >= TIMESTAMP '{}' AND start_time < TIMESTAMP '{}' \
                 AND deleted_at IS NULL ORDER BY start_time DESC, id DESC",
                since.format("%Y-%m-%dT%H:%M:%S"),
                until.format("%Y-%m-%dT%H:%M:%S")
            );
            let want: Vec<i64> = answer(&query, &sql)
                .await
                .iter()
                .map(|r| r["id"].as_i64().expect("id"))
                .collect();
            assert_eq!(listed, want, "{fingerprint} {since}..{until}");
            found += listed.len();
        }
    }
    assert!(
        found > 10,
        "the windows hold archived remediations: {found}"
    );
    // A namespace narrows it.
    let since = first;
    let until = clock();
    let prod = query
        .postmortem("fp-0", since, until, Some("prod"), 1000)
        .await
        .expect("postmortem");
    assert!(!prod.is_empty() && prod.iter().all(|r| r.namespace == "prod"));
}
