//! `remaudit retention run | verify` as an operator runs them: killed at
//! each step and run again, against a directory and an S3-compatible server.

use std::process::Output;

use chrono::TimeDelta;
use remaudit_retention::CRASH_AT_VAR;
use remaudit_testkit::history::{Written, clock, load};
use remaudit_testkit::s3::MotoServer;
use remaudit_testkit::{PgDb, SqliteDb};

use crate::helpers::remaudit;

const STEPS: [&str; 3] = ["archive-inserted", "file-written", "before-delete"];

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

/// Batch directories in the archive directory.
fn batch_dirs(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
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
        assert!(pending >= 1, "the interrupted batch is recorded as pending");
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

    // A damaged file is found: replace one with other bytes.
    let location: String = sqlx::query_scalar(
        "SELECT location FROM remediation_retention_batches WHERE state = 'done' ORDER BY id LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .expect("batch");
    let s3 = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(moto.endpoint())
        .with_allow_http(true)
        .with_bucket_name("audit-archive")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .with_region("us-east-1")
        .build()
        .expect("s3 client");
    let path = object_store::path::Path::from(format!(
        "remaudit/prod/{location}/remediation_audit.jsonl.gz"
    ));
    object_store::ObjectStoreExt::put(&s3, &path, "not gzip".into())
        .await
        .expect("overwrite a file");
    let damaged = retention(
        &["verify", "--database-url", db.url(), "--archive-url", url],
        &env,
    );
    assert_eq!(damaged.status.code(), Some(1), "{}", text(&damaged));
    assert!(
        text(&damaged).contains("does not match its SHA-256"),
        "{}",
        text(&damaged)
    );
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
    let days = stdout.lines().filter(|l| l.starts_with("2026-")).count() as i64;
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
        page.items.len() as i64,
        written.remediations,
        "nothing moved"
    );
    assert!(
        !db.url().is_empty()
            && !std::path::Path::new(&db.url()["sqlite://".len()..])
                .with_file_name("remaudit-archive")
                .join("batch-000000000001")
                .exists(),
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
                let text = http
                    .get(format!("http://127.0.0.1:{port}/metrics"))
                    .send()
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()?;
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
    assert!(value("remaudit_retention_last_success_timestamp_seconds") >= now.timestamp() as f64);
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
    let left = listed["items"].as_array().map_or(0, Vec::len) as f64;
    assert_eq!(
        left + archived,
        written.remediations as f64,
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
}
