//! `remaudit retention run | verify` as an operator runs them: killed at
//! each step and run again, against a directory and an S3-compatible server.

use std::process::Output;

use chrono::TimeDelta;
use remaudit_retention::CRASH_AT_VAR;
use remaudit_testkit::history::{Written, clock, load};
use remaudit_testkit::s3::MotoServer;
use remaudit_testkit::{PgDb, SqliteDb};
use serde_json::json;

use crate::helpers::remaudit;

const STEPS: [&str; 4] = [
    "batch-numbered",
    "archive-inserted",
    "file-written",
    "before-delete",
];

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn retention(args: &[&str], env: &[(String, String)]) -> Output {
    // Default archive directories land in a throwaway working directory.
    let cwd = tempfile::tempdir().expect("dir");
    let mut cmd = remaudit();
    cmd.current_dir(cwd.path())
        .arg("retention")
        .args(args)
        .env_remove("REMAUDIT_ARCHIVE_URL");
    cmd.env_remove(CRASH_AT_VAR);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run remaudit")
}

async fn count(pool: &sqlx::PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Rows per place: (live + detached, archived) summary rows and events, and
/// how many rows are in two places at once.
async fn places(pool: &sqlx::PgPool) -> (i64, i64, i64, i64, i64) {
    let detached: Vec<String> = sqlx::query_scalar(
        "SELECT relname::text FROM pg_class WHERE relkind = 'r' AND NOT relispartition \
         AND relname ~ '^remediation_audit_(events_)?w[0-9]{8}$'",
    )
    .fetch_all(pool)
    .await
    .expect("detached");
    let mut live = count(pool, "SELECT count(*) FROM remediation_audit").await;
    let mut live_events = count(pool, "SELECT count(*) FROM remediation_audit_events").await;
    let mut doubled = count(
        pool,
        "SELECT (SELECT count(*) FROM remediation_audit r JOIN remediation_audit_archive a USING (id)) \
         + (SELECT count(*) FROM remediation_audit_events e JOIN remediation_audit_events_archive a USING (id))",
    )
    .await;
    for table in &detached {
        let (archive, n) = if table.contains("_events_") {
            ("remediation_audit_events_archive", &mut live_events)
        } else {
            ("remediation_audit_archive", &mut live)
        };
        *n += count(pool, &format!("SELECT count(*) FROM {table}")).await;
        doubled += count(
            pool,
            &format!("SELECT count(*) FROM {table} t JOIN {archive} a USING (id)"),
        )
        .await;
    }
    (
        live,
        count(pool, "SELECT count(*) FROM remediation_audit_archive").await,
        live_events,
        count(
            pool,
            "SELECT count(*) FROM remediation_audit_events_archive",
        )
        .await,
        doubled,
    )
}

async fn assert_each_row_in_one_place(pool: &sqlx::PgPool, written: Written, when: &str) {
    let (live, archived, live_events, archived_events, doubled) = places(pool).await;
    assert_eq!(
        live + archived,
        written.remediations,
        "{when}: summary rows"
    );
    assert_eq!(
        live_events + archived_events,
        written.events,
        "{when}: events"
    );
    assert_eq!(doubled, 0, "{when}: rows in two places");
}

/// Batch directories in the archive directory, `{installation}/batch-…`.
fn batch_dirs(dir: &std::path::Path) -> Vec<String> {
    // A batch's directory is the path up to its `batch-…` part; Parquet
    // files sit deeper, under `table=…/week=…/`.
    let mut names: Vec<String> = archive_files(dir)
        .into_keys()
        .filter_map(|f| {
            let parts: Vec<&str> = f.split('/').collect();
            let at = parts.iter().position(|p| p.starts_with("batch-"))?;
            Some(parts[..=at].join("/"))
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Every file under `dir` (path relative to it, with `/`) and its bytes.
fn archive_files(dir: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fn walk(
        root: &std::path::Path,
        dir: &std::path::Path,
        out: &mut std::collections::BTreeMap<String, Vec<u8>>,
    ) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let name = path.strip_prefix(root).expect("under root");
                out.insert(
                    name.display().to_string(),
                    std::fs::read(&path).expect("read"),
                );
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

async fn crash_and_rerun(partitioned: bool) {
    let db = PgDb::create().await;
    let store = db.store().await;
    let written = load(store.as_ref(), clock()).await;
    if partitioned {
        // As if the service had kept weeks ready all along.
        store
            .ensure_partitions(
                clock() - TimeDelta::days(130),
                clock() + TimeDelta::days(35),
            )
            .await
            .expect("partitions");
    }
    let pool = db.pool().await;
    let dir = tempfile::tempdir().expect("dir");
    let archive_url = format!("file://{}", dir.path().display());
    let now = clock().to_rfc3339();
    let args = vec![
        "run",
        "--database-url",
        db.url(),
        "--archive-url",
        &archive_url,
        "--now",
        &now,
        "--retention-batch-rows",
        "50",
    ];
    for step in STEPS {
        let crash = [(CRASH_AT_VAR.to_owned(), step.to_owned())];
        let out = retention(&args, &crash);
        assert!(
            !out.status.success(),
            "the run stops at {step}: {}",
            text(&out)
        );
        assert!(text(&out).contains("stopping at"), "{}", text(&out));
        assert_each_row_in_one_place(&pool, written, &format!("killed at {step}")).await;
        let pending = count(
            &pool,
            "SELECT count(*) FROM remediation_retention_batches WHERE state = 'pending'",
        )
        .await;
        // Killed before its journal row, a batch leaves nothing to clean.
        if step != "batch-numbered" {
            assert!(pending >= 1, "the interrupted batch is recorded as pending");
        }
        let unplaced = count(
            &pool,
            "SELECT count(*) FROM remediation_retention_batches WHERE location = ''",
        )
        .await;
        assert_eq!(unplaced, 0, "killed at {step}: a batch without a location");
    }
    let out = retention(&args, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("removed the files of interrupted batch"),
        "{}",
        text(&out)
    );
    assert_each_row_in_one_place(&pool, written, "after the full run").await;
    let (_, archived, ..) = places(&pool).await;
    assert!(archived > 0, "rows were archived");
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM remediation_retention_batches WHERE state = 'pending'"
        )
        .await,
        0
    );
    // Every batch directory left belongs to a finished batch: no orphans.
    let done: Vec<String> = sqlx::query_scalar(
        "SELECT location FROM remediation_retention_batches WHERE state = 'done' ORDER BY location",
    )
    .fetch_all(&pool)
    .await
    .expect("done");
    assert_eq!(batch_dirs(dir.path()), done);

    let verified = retention(
        &[
            "verify",
            "--database-url",
            db.url(),
            "--archive-url",
            &archive_url,
        ],
        &[],
    );
    assert!(verified.status.success(), "{}", text(&verified));
    assert!(
        text(&verified).contains(&format!("({archived} remediations")),
        "{}",
        text(&verified)
    );
}

#[tokio::test]
async fn killed_at_each_step_of_a_partition_batch_then_rerun_nothing_is_lost_or_doubled() {
    crash_and_rerun(true).await;
}

#[tokio::test]
async fn killed_at_each_step_of_a_row_batch_then_rerun_nothing_is_lost_or_doubled() {
    // Without weeks for the history, its rows sit in the default partition
    // and leave in row-wise batches.
    crash_and_rerun(false).await;
}

#[tokio::test]
async fn archives_to_an_s3_compatible_server_and_verifies() {
    let moto = MotoServer::start().await;
    moto.create_bucket("audit-archive").await;
    let db = PgDb::create().await;
    let store = db.store().await;
    let written = load(store.as_ref(), clock()).await;
    let pool = db.pool().await;
    let now = clock().to_rfc3339();
    let url = "s3://audit-archive/remaudit/prod";
    let env = moto.s3_env();
    let out = retention(
        &[
            "run",
            "--database-url",
            db.url(),
            "--archive-url",
            url,
            "--now",
            &now,
        ],
        &env,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_each_row_in_one_place(&pool, written, "after the run").await;
    let (_, archived, ..) = places(&pool).await;
    assert!(archived > 0);
    let verified = retention(
        &["verify", "--database-url", db.url(), "--archive-url", url],
        &env,
    );
    assert!(verified.status.success(), "{}", text(&verified));
    assert!(text(&verified).contains(&format!("({archived} remediations")));

    let s3 = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(moto.endpoint())
        .with_allow_http(true)
        .with_bucket_name("audit-archive")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .with_region("us-east-1")
        .build()
        .expect("s3 client");
    // A second reader, pyarrow, finds every archived row in the Parquet files.
    let parquet = parquet_rows_match_the_archive(&pool, &s3, "remaudit/prod").await;
    // SQL over the archive on S3 counts what the archive tables hold.
    let counted = archive_sql(
        url,
        "json",
        "SELECT count(*) AS n, count(DISTINCT alert_fingerprint) AS alerts FROM remediation_audit",
        &env,
    );
    assert!(counted.status.success(), "{}", text(&counted));
    let want: (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT alert_fingerprint) FROM remediation_audit_archive",
    )
    .fetch_one(&pool)
    .await
    .expect("archived");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&counted.stdout).expect("json"),
        json!([{"n": want.0, "alerts": want.1}])
    );

    // A second installation on the same prefix numbers its batches alike,
    // and neither overwrites the other's objects; it writes JSON Lines.
    let other = PgDb::create().await;
    let other_written = load(other.store().await.as_ref(), clock()).await;
    let out = retention(
        &[
            "run",
            "--database-url",
            other.url(),
            "--archive-url",
            url,
            "--archive-format",
            "jsonl",
            "--now",
            &now,
        ],
        &env,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_each_row_in_one_place(
        &other.pool().await,
        other_written,
        "the second installation",
    )
    .await;
    for db_url in [db.url(), other.url()] {
        let verified = retention(
            &["verify", "--database-url", db_url, "--archive-url", url],
            &env,
        );
        assert!(verified.status.success(), "{}", text(&verified));
    }

    let other_pool = other.pool().await;
    let location: String = sqlx::query_scalar(
        "SELECT location FROM remediation_retention_batches WHERE state = 'done' ORDER BY id LIMIT 1",
    )
    .fetch_one(&other_pool)
    .await
    .expect("batch");
    let jsonl = object_store::path::Path::from(format!(
        "remaudit/prod/{location}/remediation_audit.jsonl.gz"
    ));
    object_store::ObjectStoreExt::head(&s3, &jsonl)
        .await
        .expect("the second installation wrote JSON Lines");

    // A damaged Parquet file is found: replace one with a cut-short copy.
    let path = object_store::path::Path::from(format!("remaudit/prod/{parquet}"));
    // The server refuses a create-only write to a taken name, as every
    // archive write is: nothing the job writes can replace an object.
    let again = object_store::ObjectStore::put_opts(
        &s3,
        &path,
        "again".into(),
        object_store::PutMode::Create.into(),
    )
    .await;
    assert!(
        matches!(again, Err(object_store::Error::AlreadyExists { .. })),
        "{again:?}"
    );
    let whole = object_store::ObjectStoreExt::get(&s3, &path)
        .await
        .expect("read a Parquet file")
        .bytes()
        .await
        .expect("its bytes");
    object_store::ObjectStoreExt::put(&s3, &path, whole.slice(..whole.len() / 2).into())
        .await
        .expect("overwrite a file");
    let damaged = retention(
        &["verify", "--database-url", db.url(), "--archive-url", url],
        &env,
    );
    assert_eq!(damaged.status.code(), Some(1), "{}", text(&damaged));
    assert!(
        text(&damaged).contains("does not match its SHA-256")
            && text(&damaged).contains(parquet.as_str()),
        "{}",
        text(&damaged)
    );
    // Two databases now share the prefix: a query names the one it reads.
    let both = archive_sql(url, "json", "SELECT 1 AS one", &env);
    assert_eq!(both.status.code(), Some(1), "{}", text(&both));
    assert!(text(&both).contains("--installation"), "{}", text(&both));
    // A query meets the damaged file: it fails, naming it, with no answer.
    let installation = parquet.split('/').next().expect("installation");
    let mut env_one = env.clone();
    env_one.push((
        "REMAUDIT_TEST_INSTALLATION".to_owned(),
        installation.to_owned(),
    ));
    let refused = archive_sql(
        url,
        "json",
        "SELECT count(*) AS n FROM remediation_audit_events",
        &env_one,
    );
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(refused.stdout.is_empty(), "{}", text(&refused));
    assert!(
        text(&refused).contains(parquet.as_str()),
        "{}",
        text(&refused)
    );
}

/// `remaudit archive sql --output OUTPUT SQL` over the archive at `url`.
fn archive_sql(url: &str, output: &str, sql: &str, env: &[(String, String)]) -> Output {
    let mut cmd = remaudit();
    cmd.args(["archive", "sql", "--archive-url", url, "--output", output])
        .env_remove("REMAUDIT_ARCHIVE_URL");
    for (k, v) in env {
        // Not the binary's: names the installation to read.
        if k == "REMAUDIT_TEST_INSTALLATION" {
            cmd.args(["--installation", v]);
        } else {
            cmd.env(k, v);
        }
    }
    cmd.arg(sql);
    cmd.output().expect("run remaudit")
}

#[tokio::test]
async fn archive_sql_prints_table_json_and_csv_and_refuses_what_is_not_a_read() {
    let db = SqliteDb::create();
    let store = db.store().await;
    load(store.as_ref(), clock()).await;
    store.close().await;
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("file://{}", dir.path().display());
    let now = clock().to_rfc3339();
    let out = retention(
        &[
            "run",
            "--database-url",
            &db.url(),
            "--archive-url",
            &url,
            "--now",
            &now,
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    let sql = "SELECT overall_phase, count(*) AS n FROM remediation_audit \
               GROUP BY overall_phase ORDER BY overall_phase";
    let json_out = archive_sql(&url, "json", sql, &[]);
    assert!(json_out.status.success(), "{}", text(&json_out));
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&json_out.stdout).expect("a JSON array");
    assert!(rows.len() >= 3, "{rows:?}");
    let csv = archive_sql(&url, "csv", sql, &[]);
    assert!(csv.status.success(), "{}", text(&csv));
    let csv = String::from_utf8(csv.stdout).expect("utf-8");
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("overall_phase,n"));
    for (line, row) in lines.zip(&rows) {
        assert_eq!(
            line,
            format!(
                "{},{}",
                row["overall_phase"].as_str().expect("phase"),
                row["n"]
            )
        );
    }
    let table = archive_sql(&url, "table", sql, &[]);
    assert!(table.status.success(), "{}", text(&table));
    let table = String::from_utf8(table.stdout).expect("utf-8");
    assert!(table.contains("| overall_phase |"), "{table}");
    assert!(table.contains("| completed"), "{table}");

    // An answer without rows is an empty array.
    let none = archive_sql(
        &url,
        "json",
        "SELECT id FROM remediation_audit WHERE id < 0",
        &[],
    );
    assert!(none.status.success(), "{}", text(&none));
    assert_eq!(String::from_utf8_lossy(&none.stdout), "[]\n");
    // What is not a read, or not SQL, exits 1 with the reason.
    for bad in [
        "CREATE TABLE t AS SELECT 1",
        "INSERT INTO remediation_audit (id) VALUES (1)",
        "SELEKT 1",
        "SELECT * FROM no_such_table",
    ] {
        let out = archive_sql(&url, "json", bad, &[]);
        assert_eq!(out.status.code(), Some(1), "{bad}: {}", text(&out));
        assert!(text(&out).contains("query failed"), "{bad}: {}", text(&out));
        assert!(out.stdout.is_empty(), "{bad}");
    }
    // Bad arguments exit 2.
    let out = archive_sql(&url, "xml", sql, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let mut cmd = remaudit();
    let out = cmd
        .args([
            "archive",
            "sql",
            "--archive-url",
            &url,
            "--max-rows",
            "0",
            sql,
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // An archive URL that is not one exits 1 and says why.
    let out = archive_sql("ftp://x", "json", sql, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("unsupported archive URL"),
        "{}",
        text(&out)
    );
}

/// Reads every Parquet file of the finished batches under `prefix` with
/// pyarrow (`scripts/parquet-rows`), and checks that the files hold each
/// row of the archive tables once, with the same values, sorted, with
/// min/max statistics for the sort's first column; returns one file's path
/// under the prefix.
async fn parquet_rows_match_the_archive(
    pool: &sqlx::PgPool,
    s3: &dyn object_store::ObjectStore,
    prefix: &str,
) -> String {
    let locations: Vec<String> = sqlx::query_scalar(
        "SELECT location FROM remediation_retention_batches WHERE state = 'done' ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .expect("batches");
    assert!(!locations.is_empty());
    let read = |path: String| async move {
        object_store::ObjectStoreExt::get(s3, &object_store::path::Path::from(path.clone()))
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .bytes()
            .await
            .expect("bytes")
    };
    let dir = tempfile::tempdir().expect("dir");
    let mut files = Vec::new();
    for location in &locations {
        let manifest: serde_json::Value =
            serde_json::from_slice(&read(format!("{prefix}/{location}/manifest.json")).await)
                .expect("manifest");
        assert_eq!(manifest["format"], "remaudit-archive/3", "{manifest}");
        for file in manifest["files"].as_array().expect("files") {
            let path = file["path"].as_str().expect("path").to_owned();
            let (table, week) = (file["table"].as_str().expect("table"), &file["week"]);
            assert!(
                path.starts_with(&format!(
                    "{location}/table={table}/week={}/part-",
                    week.as_str().expect("week")
                )) && path.ends_with(".parquet"),
                "{path}"
            );
            let local = dir.path().join(format!("{}.parquet", files.len()));
            std::fs::write(&local, read(format!("{prefix}/{path}")).await).expect("copy");
            files.push((local, table.to_owned(), path));
        }
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/parquet-rows");
    let out = std::process::Command::new(script)
        .args(files.iter().map(|(local, ..)| local))
        .output()
        .expect("run scripts/parquet-rows");
    assert!(out.status.success(), "{}", text(&out));
    let mut rows: std::collections::BTreeMap<(String, i64), serde_json::Value> =
        std::collections::BTreeMap::new();
    let mut sorted_by = std::collections::BTreeMap::new();
    let mut last: Option<(String, Vec<serde_json::Value>)> = None;
    for line in String::from_utf8(out.stdout).expect("utf-8").lines() {
        let line: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let local = line["file"].as_str().expect("file");
        let (_, table, _) = files
            .iter()
            .find(|(l, ..)| l.to_str() == Some(local))
            .expect("a file of ours");
        let Some(row) = line.get("row") else {
            let sort = if table == "remediation_audit" {
                json!(["alert_fingerprint", "start_time", "id"])
            } else {
                json!(["namespace", "remediation_name", "start_time", "id"])
            };
            assert_eq!(line["sorting"], sort, "{line}");
            assert_eq!(
                line["min_max"][sort[0].as_str().expect("name")],
                true,
                "{line}"
            );
            assert_eq!(
                line["columns"]["start_time"], "timestamp[us, tz=UTC]",
                "{line}"
            );
            assert_eq!(line["columns"]["id"], "int64", "{line}");
            sorted_by.insert(table.clone(), sort);
            continue;
        };
        // Rows come in the file's order: by the sort columns within a file.
        let key: Vec<serde_json::Value> = sorted_by[table]
            .as_array()
            .expect("names")
            .iter()
            .map(|c| row[c.as_str().expect("name")].clone())
            .collect();
        if let Some((file, before)) = &last
            && file == local
        {
            assert!(
                compare_keys(before, &key).is_le(),
                "{local}: {before:?} then {key:?}"
            );
        }
        last = Some((local.to_owned(), key));
        let id = row["id"].as_i64().expect("id");
        let doubled = rows.insert((table.clone(), id), row.clone());
        assert!(doubled.is_none(), "{table} row {id} is in two files");
    }
    for table in ["remediation_audit", "remediation_audit_events"] {
        let archived: Vec<(i64, serde_json::Value)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT id, row_to_json(a)::jsonb FROM {table}_archive a ORDER BY id"
        )))
        .fetch_all(pool)
        .await
        .expect("archived rows");
        let in_files = rows.keys().filter(|(t, _)| t == table).count();
        assert_eq!(in_files, archived.len(), "{table}");
        for (id, want) in archived {
            let got = &rows[&(table.to_owned(), id)];
            for (column, value) in want.as_object().expect("an object") {
                let found = got.get(column).unwrap_or(&serde_json::Value::Null);
                let same = match (value, found) {
                    (serde_json::Value::String(time), serde_json::Value::Number(micros))
                        if column.ends_with("_time")
                            || column.ends_with("_at")
                            || column == "completion_time" =>
                    {
                        time.parse::<chrono::DateTime<chrono::Utc>>()
                            .expect("a time")
                            .timestamp_micros()
                            == micros.as_i64().expect("micros")
                    }
                    (serde_json::Value::String(xid), serde_json::Value::Number(n))
                        if column == "created_xid" =>
                    {
                        xid.parse::<u64>().ok() == n.as_u64()
                    }
                    (document, serde_json::Value::String(text))
                        if column == "record" || column == "service_crd_statuses" =>
                    {
                        serde_json::from_str::<serde_json::Value>(text)
                            .ok()
                            .as_ref()
                            == Some(document)
                    }
                    _ => value == found,
                };
                assert!(
                    same,
                    "{table} {id} {column}: {value} in the database, {found} in the file"
                );
            }
            let extra: Vec<&String> = got
                .as_object()
                .expect("an object")
                .keys()
                .filter(|k| !want.as_object().expect("object").contains_key(*k))
                .collect();
            assert!(
                extra.is_empty(),
                "{table} {id}: columns {extra:?} are not the table's"
            );
        }
    }
    files.swap_remove(0).2
}

/// Orders two sort keys as the archive sorts: text byte by byte, numbers as numbers.
fn compare_keys(a: &[serde_json::Value], b: &[serde_json::Value]) -> std::cmp::Ordering {
    a.iter()
        .zip(b)
        .map(|(x, y)| match (x, y) {
            (serde_json::Value::String(x), serde_json::Value::String(y)) => {
                x.as_bytes().cmp(y.as_bytes())
            }
            (x, y) => x
                .as_i64()
                .unwrap_or_default()
                .cmp(&y.as_i64().unwrap_or_default()),
        })
        .find(|o| o.is_ne())
        .unwrap_or(std::cmp::Ordering::Equal)
}

#[tokio::test]
async fn a_dry_run_counts_per_day_and_changes_nothing() {
    let db = SqliteDb::create();
    let store = db.store().await;
    let written = load(store.as_ref(), clock()).await;
    store.close().await;
    let now = clock().to_rfc3339();
    let out = retention(
        &[
            "run",
            "--database-url",
            &db.url(),
            "--dry-run",
            "--now",
            &now,
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.contains("nothing changed"), "{stdout}");
    // Due: 30 days (90 to 120 days old) of three finished remediations each.
    let total = stdout
        .lines()
        .find(|l| l.starts_with("total"))
        .expect("a total line");
    let numbers: Vec<i64> = total
        .split_whitespace()
        .skip(1)
        .map(|n| n.parse().expect("number"))
        .collect();
    let days =
        i64::try_from(stdout.lines().filter(|l| l.starts_with("2026-")).count()).expect("fits");
    assert_eq!(numbers[0], days * 3, "{stdout}");
    assert_eq!(numbers[1], days * 3 * 3, "three events each: {stdout}");
    assert!((29..=31).contains(&days), "{stdout}");

    let store = db.store().await;
    let page = store
        .list(&remaudit_store::ListQuery {
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(
        i64::try_from(page.items.len()).expect("fits"),
        written.remediations,
        "nothing moved"
    );
    let archive =
        std::path::Path::new(&db.url()["sqlite://".len()..]).with_file_name("remaudit-archive");
    assert!(
        archive_files(&archive).is_empty(),
        "a dry run writes no files"
    );
}

#[test]
fn bad_retention_input_fails_with_a_clear_message() {
    let cases: &[(&[&str], i32, &str)] = &[
        (&["run", "--now", "yesterday"], 2, "RFC 3339"),
        (&["run", "--retention-days", "0"], 2, "retention-days"),
        (
            &["run", "--archive-url", "ftp://host/x"],
            1,
            "unsupported archive URL",
        ),
        (
            &["run", "--database-url", "mysql://x"],
            1,
            "unsupported database URL",
        ),
        (&["verify", "--since", "2026-13-01"], 2, "RFC 3339"),
    ];
    for (args, code, needle) in cases {
        let out = retention(args, &[]);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(needle), "{args:?}: {}", text(&out));
    }
    let out = retention(
        &["run", "--dry-run"],
        &[(CRASH_AT_VAR.to_owned(), "sometimes".to_owned())],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("archive-inserted"), "{}", text(&out));
}

#[tokio::test]
#[allow(
    clippy::float_cmp,
    reason = "the counts compared are whole numbers far below 2^53, so exact"
)]
async fn serve_runs_retention_at_start_up_and_reports_it_in_metrics() {
    let db = SqliteDb::create();
    let store = db.store().await;
    let now = chrono::Utc::now();
    let written = load(store.as_ref(), now).await;
    store.close().await;
    let port = crate::helpers::free_port();
    let cwd = tempfile::tempdir().expect("dir");
    let _child = crate::helpers::Running(
        remaudit()
            .current_dir(cwd.path())
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--database-url", &db.url()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    crate::helpers::wait_healthy(port).await;
    let http = reqwest::Client::new();
    let metrics = remaudit_testkit::wait_for(
        "the start-up retention run to finish",
        std::time::Duration::from_secs(30),
        || {
            let http = http.clone();
            async move {
                let text = crate::helpers::metrics_text(&http, &format!("http://127.0.0.1:{port}"))
                    .await?;
                text.contains("remaudit_retention_last_success_timestamp_seconds")
                    .then_some(text)
            }
        },
    )
    .await;
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    let archived = value("remaudit_retention_rows_archived_total{table=\"remediation_audit\"}");
    assert!(
        archived >= 90.0,
        "30 days of three finished remediations: {archived}"
    );
    assert!(value("remaudit_retention_bytes_written_total") > 0.0);
    assert!(
        value("remaudit_retention_last_success_timestamp_seconds")
            >= remaudit_model::approx_f64(now.timestamp())
    );
    let listed = http
        .get(format!(
            "http://127.0.0.1:{port}/api/v1/audit/remediation-orchestration?limit=1000"
        ))
        .send()
        .await
        .expect("list")
        .json::<serde_json::Value>()
        .await
        .expect("json");
    let left = remaudit_model::approx_f64(listed["items"].as_array().map_or(0, Vec::len));
    assert_eq!(
        left + archived,
        remaudit_model::approx_f64(written.remediations),
        "moved, not lost"
    );
    assert!(
        db.url()
            .strip_prefix("sqlite://")
            .map(std::path::Path::new)
            .and_then(std::path::Path::parent)
            .is_some_and(|d| d.join("remaudit-archive").is_dir()),
        "the archive sits beside the database"
    );
    // The run is in the admin log as the scheduled job's, with what it moved.
    let log = http
        .get(format!("http://127.0.0.1:{port}/api/v1/admin/log"))
        .send()
        .await
        .expect("admin log")
        .json::<serde_json::Value>()
        .await
        .expect("json");
    let entry = &log["items"][0];
    assert_eq!(
        (
            &entry["subject"],
            &entry["action"],
            &entry["detail"]["outcome"]
        ),
        (&json!("retention"), &json!("retention_run"), &json!("ok")),
        "{log}"
    );
    assert_eq!(
        entry["detail"]["remediations"]
            .as_u64()
            .map(remaudit_model::approx_f64),
        Some(archived)
    );
}

/// A connection pool of either backend.
enum Pool {
    Pg(sqlx::PgPool),
    Sqlite(sqlx::SqlitePool),
}

/// A database of either backend, for the SQL a test runs beside the CLI.
struct Db {
    url: String,
    pool: Pool,
    /// Keeps a test database (or its directory) until the test ends.
    #[allow(dead_code, reason = "held only for its drop")]
    owned: Option<Box<dyn std::any::Any>>,
}

impl Db {
    /// The SQLite database at `url`.
    async fn sqlite(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            pool: Pool::Sqlite(sqlx::SqlitePool::connect(url).await.expect("pool")),
            owned: None,
        }
    }

    /// A new database holding 120 days of history.
    async fn with_history(postgres: bool) -> (Self, Written) {
        if postgres {
            let db = PgDb::create().await;
            let written = load(db.store().await.as_ref(), clock()).await;
            let pool = Pool::Pg(db.pool().await);
            let url = db.url().to_owned();
            let db = Self {
                url,
                pool,
                owned: Some(Box::new(db)),
            };
            (db, written)
        } else {
            let owned = SqliteDb::create();
            let store = owned.store().await;
            let written = load(store.as_ref(), clock()).await;
            store.close().await;
            let mut db = Self::sqlite(&owned.url()).await;
            db.owned = Some(Box::new(owned));
            (db, written)
        }
    }

    fn url(&self) -> String {
        self.url.clone()
    }

    async fn scalar(&self, sql: &str) -> i64 {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match &self.pool {
            Pool::Pg(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
            Pool::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
        }
        .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn text(&self, sql: &str) -> Vec<String> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match &self.pool {
            Pool::Pg(pool) => sqlx::query_scalar(sql).fetch_all(pool).await,
            Pool::Sqlite(pool) => sqlx::query_scalar(sql).fetch_all(pool).await,
        }
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// (live, archived) summary rows and events, and rows in both places.
    async fn places(&self) -> [i64; 5] {
        [
            self.scalar("SELECT count(*) FROM remediation_audit").await,
            self.scalar("SELECT count(*) FROM remediation_audit_archive")
                .await,
            self.scalar("SELECT count(*) FROM remediation_audit_events")
                .await,
            self.scalar("SELECT count(*) FROM remediation_audit_events_archive")
                .await,
            self.scalar(
                "SELECT (SELECT count(*) FROM remediation_audit r JOIN remediation_audit_archive a ON a.id = r.id) \
                 + (SELECT count(*) FROM remediation_audit_events e JOIN remediation_audit_events_archive a ON a.id = e.id)",
            )
            .await,
        ]
    }

    async fn assert_each_row_in_one_place(&self, written: Written, when: &str) {
        let [live, archived, live_events, archived_events, doubled] = self.places().await;
        assert_eq!(
            live + archived,
            written.remediations,
            "{when}: summary rows"
        );
        assert_eq!(
            live_events + archived_events,
            written.events,
            "{when}: events"
        );
        assert_eq!(doubled, 0, "{when}: rows in two places");
    }
}

/// `retention run` at `now`, with the archive at `archive_url` (the default
/// beside the database when `None`).
fn run_at(
    db: &str,
    archive_url: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
    crash: Option<&str>,
) -> Output {
    let now = now.to_rfc3339();
    let mut args = vec![
        "run",
        "--database-url",
        db,
        "--now",
        &now,
        "--retention-batch-rows",
        "20",
    ];
    if let Some(url) = archive_url {
        args.extend(["--archive-url", url]);
    }
    let env: Vec<(String, String)> = crash
        .map(|step| (CRASH_AT_VAR.to_owned(), step.to_owned()))
        .into_iter()
        .collect();
    retention(&args, &env)
}

fn verify_ok(db: &str, archive_url: Option<&str>) -> String {
    let mut args = vec!["verify", "--database-url", db];
    if let Some(url) = archive_url {
        args.extend(["--archive-url", url]);
    }
    let out = retention(&args, &[]);
    assert!(out.status.success(), "verify: {}", text(&out));
    text(&out)
}

/// Every file of `before` is still in `dir`, byte for byte.
fn assert_intact(
    dir: &std::path::Path,
    before: &std::collections::BTreeMap<String, Vec<u8>>,
    when: &str,
) {
    let now = archive_files(dir);
    for (name, bytes) in before {
        assert!(
            now.get(name) == Some(bytes),
            "{when}: {name} was removed or changed"
        );
    }
}

#[tokio::test]
async fn sqlite_killed_at_each_step_then_rerun_keeps_every_earlier_batch_and_verifies() {
    let (db, written) = Db::with_history(false).await;
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("file://{}", dir.path().display());
    // Earlier batches: the rows that were due two weeks before the clock.
    let out = run_at(&db.url(), Some(&url), clock() - TimeDelta::days(14), None);
    assert!(out.status.success(), "{}", text(&out));
    let earlier = archive_files(dir.path());
    assert!(
        earlier.len() >= 6,
        "a few batches of three files: {earlier:?}"
    );
    for step in STEPS {
        let out = run_at(&db.url(), Some(&url), clock(), Some(step));
        assert!(
            !out.status.success(),
            "the run stops at {step}: {}",
            text(&out)
        );
        assert!(text(&out).contains("stopping at"), "{}", text(&out));
        db.assert_each_row_in_one_place(written, &format!("killed at {step}"))
            .await;
        assert_eq!(
            db.scalar("SELECT count(*) FROM remediation_retention_batches WHERE location = ''")
                .await,
            0,
            "killed at {step}: a batch without a location"
        );
        assert_intact(dir.path(), &earlier, &format!("killed at {step}"));
    }
    let out = run_at(&db.url(), Some(&url), clock(), None);
    assert!(out.status.success(), "{}", text(&out));
    db.assert_each_row_in_one_place(written, "after the full run")
        .await;
    assert_intact(dir.path(), &earlier, "after the full run");
    let done = db
        .text("SELECT location FROM remediation_retention_batches WHERE state = 'done' ORDER BY location")
        .await;
    assert_eq!(
        batch_dirs(dir.path()),
        done,
        "no directory but the finished batches'"
    );
    let archived = db.places().await[1];
    assert!(verify_ok(&db.url(), Some(&url)).contains(&format!("({archived} remediations")));
}

/// An older version recorded a batch's number, then its location, in two
/// commits; killed between them it left a pending batch with an empty
/// location, whose clean-up then removed the whole archive.
async fn a_pending_batch_without_a_location_removes_no_file(postgres: bool) {
    let (db, written) = Db::with_history(postgres).await;
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("file://{}", dir.path().display());
    let out = run_at(&db.url(), Some(&url), clock() - TimeDelta::days(14), None);
    assert!(out.status.success(), "{}", text(&out));
    // The state such a kill leaves, exactly; and a batch of the old layout
    // (no installation directory) killed after writing a file.
    db.text(
        "INSERT INTO remediation_retention_batches (run_now, source, location) \
         VALUES ('2026-08-01T00:00:00Z', 'rows', '') RETURNING CAST(id AS TEXT)",
    )
    .await;
    let old = db
        .text(
            "INSERT INTO remediation_retention_batches (run_now, source, location) \
             VALUES ('2026-08-01T00:00:00Z', 'rows', 'pending') RETURNING CAST(id AS TEXT)",
        )
        .await[0]
        .parse::<i64>()
        .expect("id");
    let old_location = format!("batch-{old:012}");
    db.text(&format!(
        "UPDATE remediation_retention_batches SET location = '{old_location}' WHERE id = {old} RETURNING location"
    ))
    .await;
    std::fs::create_dir(dir.path().join(&old_location)).expect("old batch dir");
    std::fs::write(
        dir.path()
            .join(&old_location)
            .join("remediation_audit.jsonl.gz"),
        b"partial",
    )
    .expect("old file");
    std::fs::write(dir.path().join("operator-notes.txt"), b"kept").expect("notes");
    let mut earlier = archive_files(dir.path());
    earlier.remove(&format!("{old_location}/remediation_audit.jsonl.gz"));
    assert!(earlier.len() >= 7, "{earlier:?}");

    let out = run_at(&db.url(), Some(&url), clock(), None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("removed the files of interrupted batch {old}")),
        "{}",
        text(&out)
    );
    assert_intact(dir.path(), &earlier, "after the run");
    assert!(
        !dir.path().join(&old_location).exists(),
        "the old batch's own files went"
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM remediation_retention_batches WHERE state = 'pending'")
            .await,
        0
    );
    db.assert_each_row_in_one_place(written, "after the run")
        .await;
    verify_ok(&db.url(), Some(&url));
}

#[tokio::test]
async fn sqlite_a_pending_batch_left_without_a_location_removes_no_file() {
    a_pending_batch_without_a_location_removes_no_file(false).await;
}

#[tokio::test]
async fn postgres_a_pending_batch_left_without_a_location_removes_no_file() {
    a_pending_batch_without_a_location_removes_no_file(true).await;
}

#[tokio::test]
async fn two_sqlite_databases_in_one_directory_share_the_default_archive_without_overwriting() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("dir");
    let mut dbs = Vec::new();
    for name in ["a.db", "b.db"] {
        let url = format!("sqlite://{}/{name}", dir.path().display());
        let store = remaudit_store::connect(&url, remaudit_store::PoolSettings::default())
            .await
            .expect("open");
        let written = load(store.as_ref(), clock()).await;
        store.close().await;
        dbs.push((url, written));
    }
    let archive = dir.path().join("remaudit-archive");
    let (a, _) = &dbs[0];
    let out = run_at(a, None, clock(), None);
    assert!(out.status.success(), "{}", text(&out));
    let a_files = archive_files(&archive);
    assert!(!a_files.is_empty());
    // The same batch numbers, the same archive directory.
    let (b, _) = &dbs[1];
    let out = run_at(b, None, clock(), None);
    assert!(out.status.success(), "{}", text(&out));
    assert_intact(&archive, &a_files, "after the second database's run");
    let all = archive_files(&archive);
    assert_eq!(
        all.len(),
        2 * a_files.len(),
        "each database has its own files"
    );
    let installations: std::collections::BTreeSet<&str> =
        all.keys().filter_map(|f| f.split('/').next()).collect();
    assert_eq!(installations.len(), 2, "{installations:?}");
    for (url, written) in &dbs {
        let verified = verify_ok(url, None);
        assert!(verified.contains("verified"), "{verified}");
        Db::sqlite(url)
            .await
            .assert_each_row_in_one_place(*written, url)
            .await;
    }
    // A local archive is the owner's alone.
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&archive), 0o700);
    for name in all.keys() {
        let file = archive.join(name);
        assert_eq!(mode(&file), 0o600, "{name}");
        let mut parent = file.parent();
        while let Some(d) = parent.filter(|d| *d != archive) {
            assert_eq!(mode(d), 0o700, "{}", d.display());
            parent = d.parent();
        }
    }
}

#[tokio::test]
async fn a_copy_of_a_sqlite_database_beside_it_shares_its_installation_id_but_no_file_name() {
    let dir = tempfile::tempdir().expect("dir");
    let original = format!("sqlite://{}/audit.db", dir.path().display());
    let store = remaudit_store::connect(&original, remaudit_store::PoolSettings::default())
        .await
        .expect("open");
    let written = load(store.as_ref(), clock()).await;
    store.close().await;
    // The operator copies the file (a test instance, a backup put back).
    std::fs::copy(dir.path().join("audit.db"), dir.path().join("copy.db")).expect("copy");
    let copy = format!("sqlite://{}/copy.db", dir.path().display());
    let ids = |url: String| async move {
        Db::sqlite(&url)
            .await
            .text("SELECT id FROM remaudit_installation")
            .await
    };
    assert_eq!(ids(original.clone()).await, ids(copy.clone()).await);

    let archive = dir.path().join("remaudit-archive");
    let out = run_at(&original, None, clock(), None);
    assert!(out.status.success(), "{}", text(&out));
    let first = archive_files(&archive);
    // The copy numbers its batches as the original did.
    let out = run_at(&copy, None, clock(), None);
    assert!(out.status.success(), "{}", text(&out));
    assert_intact(&archive, &first, "after the copy's run");
    assert_eq!(archive_files(&archive).len(), 2 * first.len());
    for url in [&original, &copy] {
        verify_ok(url, None);
        Db::sqlite(url)
            .await
            .assert_each_row_in_one_place(written, url)
            .await;
    }
}

#[tokio::test]
async fn each_run_is_in_the_admin_log_with_its_subject_and_reason() {
    let (db, _) = Db::with_history(false).await;
    let dir = tempfile::tempdir().expect("dir");
    let archive = format!("file://{}", dir.path().display());
    let now = clock().to_rfc3339();
    let base = [
        "run",
        "--database-url",
        &db.url,
        "--archive-url",
        &archive,
        "--now",
        &now,
    ];
    let run = |extra: &[&str], user: Option<&str>| {
        let mut cmd = remaudit();
        cmd.arg("retention")
            .args(base)
            .args(extra)
            .env_remove("USER")
            .env_remove("LOGNAME")
            .env_remove(CRASH_AT_VAR);
        if let Some(user) = user {
            cmd.env("USER", user);
        }
        let out = cmd.output().expect("run remaudit");
        assert!(out.status.success(), "{extra:?}: {}", text(&out));
    };
    run(
        &["--subject", "alice", "--reason", "quarterly clean-up"],
        None,
    );
    run(&["--dry-run"], None);
    run(&[], Some("bob"));
    run(&[], None);
    let entries = db
        .text(
            "SELECT subject || '|' || action || '|' || reason || '|' || json_extract(detail, '$.outcome') \
             || '|' || (json_extract(detail, '$.remediations') > 0) FROM remaudit_admin_log ORDER BY id",
        )
        .await;
    assert_eq!(
        entries,
        [
            "alice|retention_run|quarterly clean-up|ok|1",
            "bob|retention_run|manual retention run (remaudit retention run)|ok|0",
            "cli|retention_run|manual retention run (remaudit retention run)|ok|0",
        ],
        "one entry per run that did its work; the dry run is not one"
    );

    for (flag, value, needle) in [
        ("--reason", " ", "whitespace"),
        ("--reason", "a\nb", "control characters"),
        ("--subject", "", "1 to 1024 characters"),
    ] {
        let out = retention(&["run", flag, value], &[]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{flag} {value:?}: {}",
            text(&out)
        );
        assert!(
            text(&out).contains(needle),
            "{flag} {value:?}: {}",
            text(&out)
        );
    }
}

/// `remaudit serve` on `database`, without the retention job.
async fn serve(database: &str) -> (crate::helpers::Running, String) {
    crate::helpers::serve_on(database, &["--retention-interval-secs", "0"]).await
}

/// `remaudit query timeline ID --output json`, with `--archive` when given one.
fn timeline(url: &str, id: i64, archive: Option<&str>) -> Output {
    let mut cmd = remaudit();
    cmd.args(["query", "timeline", &id.to_string(), "--output", "json"])
        .env("REMAUDIT_URL", url)
        .env_remove("REMAUDIT_ARCHIVE_URL");
    if let Some(archive) = archive {
        cmd.args(["--archive", "--archive-url", archive]);
    }
    cmd.output().expect("run remaudit query")
}

/// `remaudit query postmortem FP` over 90 days of the history, as JSON.
fn postmortem(url: &str, fingerprint: &str, archive: Option<&str>) -> serde_json::Value {
    let mut cmd = remaudit();
    cmd.args([
        "query",
        "postmortem",
        fingerprint,
        // 90 days, the longest window the service takes: the first weeks
        // leave at the retention run, the rest stay live.
        "--since",
        "2026-05-10T00:00:00Z",
        "--until",
        "2026-08-08T00:00:00Z",
        "--limit",
        "1000",
        "--output",
        "json",
    ])
    .env("REMAUDIT_URL", url)
    .env_remove("REMAUDIT_ARCHIVE_URL");
    if let Some(archive) = archive {
        cmd.args(["--archive", "--archive-url", archive]);
    }
    let out = cmd.output().expect("run remaudit query");
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).expect("json")
}

#[tokio::test]
async fn a_postmortem_across_the_archive_boundary_answers_as_before_archiving() {
    let db = SqliteDb::create();
    let store = db.store().await;
    load(store.as_ref(), clock()).await;
    store.close().await;
    let (server, url) = serve(&db.url()).await;
    let before: Vec<serde_json::Value> = (0..3)
        .map(|n| postmortem(&url, &format!("fp-{n}"), None))
        .collect();
    // The oldest completed remediation of the first alert: archived below.
    let oldest = before[0]["items"]
        .as_array()
        .expect("items")
        .iter()
        .rev()
        .find(|r| r["overall_phase"] == "completed")
        .expect("a completed remediation")["id"]
        .as_i64()
        .expect("id");
    let timeline_before = timeline(&url, oldest, None);
    assert!(
        timeline_before.status.success(),
        "{}",
        text(&timeline_before)
    );
    drop(server);

    let dir = tempfile::tempdir().expect("dir");
    let archive = format!("file://{}", dir.path().display());
    let now = clock().to_rfc3339();
    let out = retention(
        &[
            "run",
            "--database-url",
            &db.url(),
            "--archive-url",
            &archive,
            "--now",
            &now,
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));

    let (_server, url) = serve(&db.url()).await;
    for (n, before) in before.iter().enumerate() {
        let fingerprint = format!("fp-{n}");
        let live_only = postmortem(&url, &fingerprint, None);
        let merged = postmortem(&url, &fingerprint, Some(&archive));
        let count = |v: &serde_json::Value| v["items"].as_array().expect("items").len();
        assert!(
            count(&live_only) < count(before) && count(&live_only) > 0,
            "{fingerprint}: some of its remediations are archived, some live: {} of {}",
            count(&live_only),
            count(before)
        );
        assert_eq!(merged["query"]["source"], "archive", "{fingerprint}");
        let mut merged = merged;
        merged["query"]["source"] = before["query"]["source"].clone();
        assert_eq!(&merged, before, "{fingerprint}");
    }
    // Its timeline has left the service; the archive answers it as before.
    let gone = timeline(&url, oldest, None);
    assert!(!gone.status.success(), "{}", text(&gone));
    assert!(text(&gone).contains("--archive"), "{}", text(&gone));
    let archived = timeline(&url, oldest, Some(&archive));
    assert!(archived.status.success(), "{}", text(&archived));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&archived.stdout).expect("json"),
        serde_json::from_slice::<serde_json::Value>(&timeline_before.stdout).expect("json"),
    );
    let nowhere = timeline(&url, 999_999, Some(&archive));
    assert!(!nowhere.status.success());
    assert!(
        text(&nowhere).contains("nor in the archive"),
        "{}",
        text(&nowhere)
    );
    // Without a location, --archive says what it needs.
    let out = remaudit()
        .args(["query", "postmortem", "fp-0", "--archive"])
        .env("REMAUDIT_URL", &url)
        .env_remove("REMAUDIT_ARCHIVE_URL")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(text(&out).contains("--archive-url"), "{}", text(&out));
}

#[test]
fn tablespaces_are_names_and_need_postgresql() {
    let out = retention(
        &[
            "run",
            "--database-url",
            "sqlite://remaudit.db",
            "--warm-tablespace",
            "warm_disks",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("need PostgreSQL"), "{}", text(&out));
    for bad in ["1cold", "cold disks", "", "x\"; DROP TABLE y"] {
        let out = retention(&["run", "--cold-tablespace", bad], &[]);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", text(&out));
        assert!(
            text(&out).contains("not a tablespace name"),
            "{bad:?}: {}",
            text(&out)
        );
    }
}
