//! Databases written by earlier versions. Before events kept a content hash
//! (migration 0005): their events are kept, answer replays as duplicates, and
//! retention's copies (`SELECT *` into the archive, `RETURNING *` out of its
//! default partition) still line up column for column. Before alert keys
//! (0008): the per-alert rollups carry over.

use std::path::Path;

use remaudit_model::NewAudit;
use remaudit_store::{
    AuditStore as _, Backfill, InsertOutcome, PgStore, PoolSettings, SqliteStore,
};
use remaudit_testkit::{PgDb, SqliteDb, at, record};
use serde_json::json;

/// The migrations of `backend` before 0005, in a directory of their own.
fn before_0005(backend: &str) -> tempfile::TempDir {
    migrations_before(backend, "0005")
}

/// The migrations of `backend` numbered below `version`, in a directory of
/// their own.
fn migrations_before(backend: &str, version: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    for entry in std::fs::read_dir(from).expect("migrations") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        if name.as_str() < version {
            std::fs::copy(&path, dir.path().join(&name)).expect("copy");
        }
    }
    dir
}

/// Migrates `pool` with the PostgreSQL migrations numbered below `version`.
async fn postgres_before(pool: &sqlx::PgPool, version: &str) {
    let dir = migrations_before("postgres", version);
    sqlx::migrate::Migrator::new(dir.path())
        .await
        .expect("old migrations")
        .run(pool)
        .await
        .expect("apply");
}

fn legacy(name: &str, reason: &str) -> NewAudit {
    record(json!({
        "namespace": "old", "remediation_name": name, "alert_fingerprint": "fp",
        "start_time": at(0).to_rfc3339(), "overall_phase": "failed",
        "event_time": at(1).to_rfc3339(), "completion_time": at(1).to_rfc3339(),
        "failure_phase": "executing", "failure_reason": reason,
    }))
}

#[tokio::test]
async fn postgres_events_stored_before_hashes_are_kept_and_match_replays() {
    let db = PgDb::create().await;
    let pool = db.pool().await;
    postgres_before(&pool, "0005").await;
    let old = legacy("rr-old", "as first sent");
    sqlx::query(
        "INSERT INTO remediation_audit_events \
         (event_id, namespace, remediation_name, start_time, overall_phase, event_time, record) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(old.event_id)
    .bind(&old.namespace)
    .bind(&old.remediation_name)
    .bind(old.start_time)
    .bind(&old.overall_phase)
    .bind(old.event_time)
    .bind(old.record())
    .execute(&pool)
    .await
    .expect("old event");
    // Archived events in a weekly partition and in the default one.
    sqlx::raw_sql(
        "CREATE TABLE remediation_audit_events_archive_w20200106 PARTITION OF \
           remediation_audit_events_archive FOR VALUES FROM ('2020-01-06') TO ('2020-01-13'); \
         INSERT INTO remediation_audit_events_archive \
           (id, event_id, namespace, remediation_name, start_time, overall_phase, event_time, received_at, record, archive_batch) \
         VALUES (900001, gen_random_uuid(), 'old', 'rr-week', '2020-01-07', 'completed', '2020-01-07', now(), '{}', 1), \
                (900002, gen_random_uuid(), 'old', 'rr-default', '2019-01-07', 'completed', '2019-01-07', now(), '{}', 2);",
    )
    .execute(&pool)
    .await
    .expect("old archive");

    let store = PgStore::from_pool(pool.clone())
        .await
        .expect("migrate to now");
    let archived: i64 = sqlx::query_scalar("SELECT count(*) FROM remediation_audit_events_archive")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(archived, 2, "archived events survive the rebuild");
    // The old event has no hash: a replay, even one that differs, is a duplicate.
    let changed = legacy("rr-old", "sent again, worded otherwise");
    assert_eq!(changed.event_id, old.event_id);
    assert_eq!(
        store.insert(&[old.clone(), changed]).await.expect("insert"),
        [InsertOutcome::Duplicate, InsertOutcome::Duplicate]
    );
    // An event whose stored record no longer reads as one keeps no hash.
    sqlx::query(
        "INSERT INTO remediation_audit_events \
         (event_id, namespace, remediation_name, start_time, overall_phase, event_time, record) \
         VALUES (gen_random_uuid(), 'old', 'rr-odd', $1, 'failed', $1, '{}')",
    )
    .bind(at(0))
    .execute(&pool)
    .await
    .expect("unreadable event");
    // The backfill gives the old event its hash: after it, a reused key with
    // other content is a conflict, and the replay stays a duplicate.
    let round = store
        .backfill_content_hashes(0, 10)
        .await
        .expect("backfill");
    assert_eq!((round.hashed, round.unreadable), (1, 1), "{round:?}");
    let last = round.last_id.expect("events were looked at");
    assert_eq!(
        store
            .backfill_content_hashes(last, 10)
            .await
            .expect("backfill"),
        Backfill::default(),
        "nothing is left past the last id"
    );
    assert_eq!(
        store
            .insert(&[old.clone(), legacy("rr-old", "a third wording")])
            .await
            .expect("insert"),
        [InsertOutcome::Duplicate, InsertOutcome::Conflict]
    );
    // Retention's copies still line up.
    let mut tx = pool.begin().await.expect("tx");
    sqlx::query(
        "INSERT INTO remediation_audit_events_archive SELECT *, now(), 3 FROM remediation_audit_events",
    )
    .execute(&mut *tx)
    .await
    .expect("live events copy into the archive");
    sqlx::raw_sql(
        "CREATE TABLE w (LIKE remediation_audit_events_archive); \
         WITH moved AS (DELETE FROM remediation_audit_events_archive_default RETURNING *) \
         INSERT INTO w SELECT * FROM moved",
    )
    .execute(&mut *tx)
    .await
    .expect("the default partition's rows copy in the parent's order");
    tx.rollback().await.expect("rollback");
}

/// The per-alert rollups a database kept under fingerprints (before 0008)
/// are keyed by alert key after the upgrade, each count where a rebuild from
/// the rows would put it, and every alert is in the key dictionary.
#[tokio::test]
async fn postgres_per_alert_rollups_kept_by_fingerprint_carry_over_to_alert_keys() {
    let db = PgDb::create().await;
    let pool = db.pool().await;
    postgres_before(&pool, "0008").await;
    // Three alerts over two weeks: retried, failed in two phases, timed out,
    // one still running, one soft-deleted (out of the rollups).
    sqlx::raw_sql(
        "INSERT INTO remediation_audit (namespace, alert_fingerprint, remediation_name, overall_phase, \
           phase_rank, start_time, completion_time, failure_phase, timeout_phase, event_id, event_time, deleted_at) \
         SELECT 'ns-' || (n % 2), 'fp-' || (n % 3), 'rr-' || n, \
           (ARRAY['completed', 'failed', 'timeout', 'executing'])[1 + n % 4], \
           CASE WHEN n % 4 = 3 THEN 5 ELSE 9 END, \
           TIMESTAMPTZ '2026-06-01' + n * INTERVAL '7 hours', \
           CASE WHEN n % 4 <> 3 THEN TIMESTAMPTZ '2026-06-01' + n * INTERVAL '7 hours' + INTERVAL '3 minutes' END, \
           CASE WHEN n % 4 = 1 THEN (ARRAY['analyzing', 'executing'])[1 + n % 2] END, \
           CASE WHEN n % 4 = 2 THEN 'executing' END, \
           gen_random_uuid(), TIMESTAMPTZ '2026-06-01' + n * INTERVAL '7 hours', \
           CASE WHEN n = 17 THEN now() END \
         FROM generate_series(1, 60) AS n; \
         SELECT remaudit_rebuild_rollups();",
    )
    .execute(&pool)
    .await
    .expect("rows and their rollups under the old schema");
    let _store = PgStore::from_pool(pool.clone())
        .await
        .expect("migrate to now");
    let tables = [
        "SELECT * FROM remediation_alert_keys ORDER BY 1",
        "SELECT * FROM remediation_rollup_alerts ORDER BY 1, 2, 3, 4",
        "SELECT * FROM remediation_rollup_failures ORDER BY 1, 2, 3, 4, 5, 6",
    ];
    let mut migrated = Vec::new();
    for sql in tables {
        let rows = remaudit_testkit::text_rows(&pool, sql).await;
        assert!(!rows.is_empty(), "{sql} is empty after the upgrade");
        migrated.push(rows);
    }
    remaudit_testkit::text_rows(&pool, "SELECT remaudit_rebuild_rollups()").await;
    for (sql, before) in tables.iter().zip(migrated) {
        assert_eq!(
            remaudit_testkit::text_rows(&pool, sql).await,
            before,
            "{sql}: the upgrade and a rebuild disagree"
        );
    }
    let keys: Vec<(i64, String)> = sqlx::query_as(
        "SELECT alert_key, alert_fingerprint FROM remediation_alert_keys ORDER BY alert_fingerprint",
    )
    .fetch_all(&pool)
    .await
    .expect("keys");
    assert_eq!(
        keys.iter().map(|(_, fp)| fp.as_str()).collect::<Vec<_>>(),
        ["fp-0", "fp-1", "fp-2"]
    );
    let attempts: i64 = sqlx::query_scalar(
        "SELECT sum(attempts) FROM remediation_rollup_alerts WHERE bucket_days = 7",
    )
    .fetch_one(&pool)
    .await
    .expect("attempts");
    assert_eq!(attempts, 59, "every live remediation is one attempt");
}

#[tokio::test]
async fn sqlite_events_stored_before_hashes_are_kept_and_match_replays() {
    let db = SqliteDb::create();
    let url = db.url();
    {
        let options: sqlx::sqlite::SqliteConnectOptions = url.parse().expect("url");
        let pool = sqlx::SqlitePool::connect_with(options.create_if_missing(true))
            .await
            .expect("open");
        let dir = before_0005("sqlite");
        sqlx::migrate::Migrator::new(dir.path())
            .await
            .expect("old migrations")
            .run(&pool)
            .await
            .expect("apply");
        let old = legacy("rr-old", "as first sent");
        sqlx::query(
            "INSERT INTO remediation_audit_events \
             (id, event_id, namespace, remediation_name, start_time, overall_phase, event_time, received_at, record) \
             VALUES (7, ?1, 'old', 'rr-old', ?2, 'failed', ?2, ?2, ?3)",
        )
        .bind(old.event_id.to_string())
        .bind(old.start_time.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        .bind(old.raw.clone())
        .execute(&pool)
        .await
        .expect("old event");
        // An event archived with a higher id than any live one.
        sqlx::query(
            "INSERT INTO remediation_audit_events_archive \
             (id, event_id, namespace, remediation_name, start_time, overall_phase, event_time, received_at, record, archive_batch) \
             VALUES (50, 'x', 'old', 'rr-gone', 's', 'completed', 'e', 'r', '{}', 1)",
        )
        .execute(&pool)
        .await
        .expect("old archive");
        pool.close().await;
    }
    let store = SqliteStore::connect(&url, PoolSettings::default())
        .await
        .expect("migrate to now");
    let old = legacy("rr-old", "as first sent");
    let changed = legacy("rr-old", "sent again, worded otherwise");
    let fresh = record(json!({
        "namespace": "old", "remediation_name": "rr-new", "alert_fingerprint": "fp",
        "start_time": at(0).to_rfc3339(), "overall_phase": "pending",
    }));
    assert_eq!(
        store.insert(&[old, changed, fresh]).await.expect("insert"),
        [
            InsertOutcome::Duplicate,
            InsertOutcome::Duplicate,
            InsertOutcome::Created
        ]
    );
    let options: sqlx::sqlite::SqliteConnectOptions = url.parse().expect("url");
    let pool = sqlx::SqlitePool::connect_with(options).await.expect("open");
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM remediation_audit_events ORDER BY id")
        .fetch_all(&pool)
        .await
        .expect("ids");
    assert_eq!(ids.len(), 2);
    assert!(
        ids[1] > 50,
        "no archived event's id is handed out again: {ids:?}"
    );
    sqlx::query(
        "INSERT INTO remediation_audit_events_archive SELECT e.*, 'now', 9 FROM remediation_audit_events e",
    )
    .execute(&pool)
    .await
    .expect("live events copy into the archive");
    // The backfill gives the old event its hash: after it, a reused key with
    // other content is a conflict, and the replay stays a duplicate.
    let round = store
        .backfill_content_hashes(0, 10)
        .await
        .expect("backfill");
    assert_eq!((round.hashed, round.unreadable), (1, 0), "{round:?}");
    assert_eq!(
        store
            .insert(&[
                legacy("rr-old", "as first sent"),
                legacy("rr-old", "a third wording")
            ])
            .await
            .expect("insert"),
        [InsertOutcome::Duplicate, InsertOutcome::Conflict]
    );
}
