//! PostgreSQL's projection of the events into the summary and rollups: an
//! acknowledged event waits in the queue until projected, survives the
//! death of the process that wrote it, is projected once however many
//! projectors run, and never brings an archived remediation back.

use std::time::Duration;

use chrono::TimeDelta;
use remaudit_store::{InsertOutcome, ListQuery};
use remaudit_testkit::{PgDb, at, record};
use serde_json::json;

use crate::analytics::{generate, load};

/// One remediation's transitions, pending to completed.
fn transitions(name: &str) -> Vec<remaudit_model::NewAudit> {
    [
        "pending",
        "processing",
        "analyzing",
        "executing",
        "completed",
    ]
    .iter()
    .enumerate()
    .map(|(i, phase)| {
        let mut r = json!({
            "namespace": "team-q",
            "remediation_name": name,
            "alert_fingerprint": "fp-queue",
            "start_time": at(0).to_rfc3339(),
            "overall_phase": phase,
            "event_time": (at(0) + TimeDelta::minutes(i64::try_from(i).unwrap())).to_rfc3339(),
        });
        if *phase == "completed" {
            r["completion_time"] = json!((at(0) + TimeDelta::minutes(4)).to_rfc3339());
        }
        record(r)
    })
    .collect()
}

/// Every remediation, in one page.
fn all() -> ListQuery {
    ListQuery {
        limit: 1000,
        ..ListQuery::default()
    }
}

async fn count(pool: &sqlx::PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The projector is held off by a lock on the summary (its upsert needs the
/// table in ROW EXCLUSIVE mode); the writes are acknowledged all the same,
/// then the writing store's connections die with the projection half done.
/// A new store, as after a restart, answers with every acknowledged event
/// in the summary and the rollups.
#[tokio::test]
async fn acknowledged_events_survive_the_writer_dying_before_their_projection() {
    use sqlx::Connection as _;

    let db = PgDb::create().await;
    let writer = db.store().await;
    // The test's own two connections, the only ones to outlive the writer.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(db.url())
        .await
        .expect("pool");
    let mut blocker = sqlx::PgConnection::connect(db.url())
        .await
        .expect("connect");
    let ours: Vec<i32> = vec![
        sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .expect("pid"),
        sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut blocker)
            .await
            .expect("pid"),
    ];
    sqlx::raw_sql("BEGIN; LOCK TABLE remediation_audit IN EXCLUSIVE MODE")
        .execute(&mut blocker)
        .await
        .expect("lock");

    let outcomes = writer.insert(&transitions("rr-q")).await.expect("insert");
    assert!(
        outcomes.iter().all(|o| *o == InsertOutcome::Created),
        "{outcomes:?}"
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM remediation_audit_events").await,
        5
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM remediation_projection_queue").await,
        5,
        "the events wait in the queue"
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM remediation_audit").await,
        0
    );

    // The writer dies: its connections, the projector's blocked one among
    // them, are cut.
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> ALL($1)",
    )
    .bind(&ours)
    .execute(&pool)
    .await
    .expect("terminate");
    drop(writer);
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut blocker)
        .await
        .expect("unlock");

    let restarted = db.store().await;
    let page = restarted.list(&all()).await.expect("list");
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].overall_phase, "completed");
    assert_eq!(
        count(&pool, "SELECT count(*) FROM remediation_projection_queue").await,
        0
    );
    assert_eq!(
        count(
            &pool,
            "SELECT remediations FROM remediation_rollup_outcomes \
             WHERE namespace = 'team-q' AND final_phase = 'completed'"
        )
        .await,
        1,
        "counted once in the rollups"
    );
}

/// Two stores (two copies of the service) write and project the same
/// remediations side by side: the rollups equal a rebuild from the rows,
/// so no event was projected twice or lost.
#[tokio::test]
async fn two_projectors_side_by_side_project_every_event_once() {
    let db = PgDb::create().await;
    let (a, b) = (db.store().await, db.store().await);
    let truths = generate(11, 600);
    let (first, second) = truths.split_at(300);
    tokio::join!(load(&*a, first), load(&*b, second));
    a.settle().await.expect("settle");
    let pool = db.pool().await;
    assert_eq!(
        count(&pool, "SELECT count(*) FROM remediation_projection_queue").await,
        0
    );
    crate::rollups::assert_rollups_equal_a_rebuild(&pool).await;
    assert_eq!(
        count(&pool, "SELECT count(*) FROM remediation_audit").await,
        i64::try_from(truths.len()).unwrap()
    );
}

/// A queued row whose event is no longer live (archived, or its week
/// dropped, before the projector came to it) is dropped: it neither brings
/// the remediation back nor changes the summary of another.
#[tokio::test]
async fn a_queued_row_without_its_live_event_is_dropped_not_projected() {
    let db = PgDb::create().await;
    let store = db.store().await;
    store
        .insert(&transitions("rr-kept")[..2])
        .await
        .expect("insert");
    store.settle().await.expect("settle");
    let pool = db.pool().await;
    // A stray row for an event that is not live: of a remediation that is
    // gone, and a terminal one of the live remediation.
    for (name, phase, rank) in [("rr-gone", "processing", 2), ("rr-kept", "failed", 9)] {
        sqlx::query(
            "INSERT INTO remediation_projection_queue (event_id, namespace, alert_fingerprint, \
             remediation_name, overall_phase, phase_rank, start_time, duplicate_count, event_time) \
             VALUES (gen_random_uuid(), 'team-q', 'fp-queue', $1, $2, $3, $4, 0, $4)",
        )
        .bind(name)
        .bind(phase)
        .bind(rank)
        .bind(at(0))
        .execute(&pool)
        .await
        .expect("queue a stray row");
    }
    let page = store.list(&all()).await.expect("list");
    let names: Vec<(&str, &str)> = page
        .items
        .iter()
        .map(|r| (r.remediation_name.as_str(), r.overall_phase.as_str()))
        .collect();
    assert_eq!(names, [("rr-kept", "processing")]);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM remediation_projection_queue").await,
        0
    );
}

/// A read waits for what was queued before it, not for what comes after:
/// while writers keep the queue busy, every read still answers, and each
/// answer holds every write acknowledged before the read began.
#[tokio::test]
async fn reads_see_every_earlier_write_while_writes_go_on() {
    let db = PgDb::create().await;
    let store = db.store().await;
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for n in 0..40 {
                store
                    .insert(&transitions(&format!("rr-{n:02}")))
                    .await
                    .expect("insert");
            }
        })
    };
    let mut seen = 0;
    while !writer.is_finished() {
        let before = store.list(&all()).await.expect("list").items.len();
        assert!(
            before >= seen,
            "a read saw fewer remediations than the one before"
        );
        seen = before;
    }
    writer.await.expect("writer");
    let pool = db.pool().await;
    let events = count(
        &pool,
        "SELECT count(DISTINCT remediation_name) FROM remediation_audit_events",
    )
    .await;
    let listed = tokio::time::timeout(Duration::from_secs(30), store.list(&all()))
        .await
        .expect("a read after the writes ends")
        .expect("list");
    assert_eq!(i64::try_from(listed.items.len()).unwrap(), events);
    assert!(listed.items.iter().all(|r| r.overall_phase == "completed"));
}

/// The design's own retention SQL, run by hand, archives and deletes
/// summary rows but leaves their events live. A later record of such a
/// remediation is refused as archived, as before the projection, and a
/// row still queued for it is dropped: neither brings the remediation back.
#[tokio::test]
async fn summary_rows_archived_by_hand_are_not_brought_back() {
    use remaudit_store::{InsertRules, Refusal};

    let db = PgDb::create().await;
    let store = db.store().await;
    let all_five = transitions("rr-old");
    store.insert(&all_five[..4]).await.expect("insert");
    store.settle().await.expect("settle");
    let pool = db.pool().await;
    // Hold the projector off while one more record is queued.
    let mut blocker = PgDb::hold_the_summary(&pool).await;
    let queued = store
        .insert_with(&all_five[4..], &InsertRules::default())
        .await
        .expect("insert");
    assert_eq!(queued, [InsertOutcome::Created]);
    // The design's archive and delete, the summary row made old first.
    for sql in [
        "UPDATE remediation_audit SET created_at = now() - INTERVAL '100 days', overall_phase = 'failed'",
        remaudit_testkit::design_sql::RETENTION_ARCHIVE,
        remaudit_testkit::design_sql::RETENTION_DELETE,
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *blocker)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    blocker.commit().await.expect("commit");

    let late = record(json!({
        "namespace": "team-q", "remediation_name": "rr-old", "alert_fingerprint": "fp-queue",
        "start_time": at(0).to_rfc3339(), "overall_phase": "failed",
        "event_time": (at(0) + TimeDelta::minutes(9)).to_rfc3339(),
    }));
    assert_eq!(
        store.insert(&[late]).await.expect("insert"),
        [InsertOutcome::Refused(Refusal::Archived)]
    );
    assert!(store.list(&all()).await.expect("list").items.is_empty());
    assert_eq!(
        count(&pool, "SELECT count(*) FROM remediation_audit").await,
        0
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM remediation_projection_queue").await,
        0
    );
}

/// Queues, for the first event of `name`, a row the projection cannot
/// apply: its status snapshot is not JSON, so casting it fails (SQLSTATE
/// 22P02), as a row left by a defect would.
async fn queue_a_bad_row(pool: &sqlx::PgPool, name: &str) {
    let queued = sqlx::query(
        "INSERT INTO remediation_projection_queue (event_id, namespace, alert_fingerprint, \
         remediation_name, overall_phase, phase_rank, start_time, duplicate_count, event_time, \
         service_crd_statuses) \
         SELECT event_id, namespace, 'fp-queue', remediation_name, 'analyzing', 3, \
           start_time, 0, event_time + INTERVAL '1 hour', '{not json' \
         FROM remediation_audit_events WHERE remediation_name = $1 ORDER BY event_time LIMIT 1",
    )
    .bind(name)
    .execute(pool)
    .await
    .expect("queue a bad row");
    assert_eq!(queued.rows_affected(), 1, "{name} has an event");
}

/// Stores and projects the first two transitions of `rr-bad`, the
/// remediation [`queue_a_bad_row`] is given.
async fn start_rr_bad(store: &dyn remaudit_store::Store) {
    store
        .insert(&transitions("rr-bad")[..2])
        .await
        .expect("insert");
    store.settle().await.expect("settle");
}

/// The remediations the summary lists, with their phases.
async fn listed(store: &dyn remaudit_store::Store) -> Vec<(String, String)> {
    store
        .list(&all())
        .await
        .expect("list")
        .items
        .into_iter()
        .map(|r| (r.remediation_name, r.overall_phase))
        .collect()
}

/// A queued row that cannot be projected, in the middle of a backlog of
/// good ones, holds none of them up: the batch is split until the bad row
/// is alone, that row goes to the quarantine table with its error, and
/// every other event (before it and after it) reaches the summary and the
/// rollups, which equal a rebuild from the summary.
#[tokio::test]
async fn a_row_that_cannot_be_projected_is_quarantined_and_the_rest_go_on() {
    let db = PgDb::create().await;
    let store = db.store().await;
    let pool = db.pool().await;
    start_rr_bad(&*store).await;

    // Hold the projector off while a backlog gathers around the bad row.
    let blocker = PgDb::hold_the_summary(&pool).await;
    // rr-split's transitions lie on both sides of the bad row, so the
    // bisection must apply its halves in order for it to end completed.
    let split = transitions("rr-split");
    for n in 0..30 {
        store
            .insert(&transitions(&format!("rr-before-{n:02}")))
            .await
            .expect("insert");
    }
    store.insert(&split[..3]).await.expect("insert");
    queue_a_bad_row(&pool, "rr-bad").await;
    store.insert(&split[3..]).await.expect("insert");
    for n in 0..30 {
        store
            .insert(&transitions(&format!("rr-after-{n:02}")))
            .await
            .expect("insert");
    }
    blocker.rollback().await.expect("unlock");

    let listed = listed(&*store).await;
    assert_eq!(listed.len(), 62, "{listed:?}");
    assert!(listed.contains(&("rr-bad".to_owned(), "processing".to_owned())));
    assert!(listed.contains(&("rr-split".to_owned(), "completed".to_owned())));
    assert_eq!(
        listed
            .iter()
            .filter(|(_, phase)| phase == "completed")
            .count(),
        61
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM remediation_projection_queue").await,
        0
    );
    let (name, error): (String, String) =
        sqlx::query_as("SELECT remediation_name, error FROM remediation_projection_quarantine")
            .fetch_one(&pool)
            .await
            .expect("one quarantined row");
    assert_eq!(name, "rr-bad");
    assert!(error.contains("json"), "{error}");

    crate::rollups::assert_rollups_equal_a_rebuild(&pool).await;
}

/// The background projector, with no read to drive it, quarantines a bad
/// row too and goes on with the rows behind it.
#[tokio::test]
async fn the_background_projector_quarantines_a_bad_row_without_a_read() {
    let db = PgDb::create().await;
    let store = db.store().await;
    let pool = db.pool().await;
    start_rr_bad(&*store).await;
    queue_a_bad_row(&pool, "rr-bad").await;
    store
        .insert(&transitions("rr-after"))
        .await
        .expect("insert");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while count(&pool, "SELECT count(*) FROM remediation_projection_queue").await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the queue was not drained within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM remediation_projection_quarantine"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM remediation_audit \
             WHERE remediation_name = 'rr-after' AND overall_phase = 'completed'"
        )
        .await,
        1
    );
}

/// A read whose projection cannot finish (here another session holds the
/// summary table, which the projection must write) gives up after the read
/// statement timeout with a "behind" error, and the database cancels what
/// it was running: a dozen such reads leave the write pool free for writes,
/// and no session of the store is left waiting on the lock but the
/// background projector's. Once the lock is gone, the read answers.
#[tokio::test]
async fn a_read_waits_for_the_projection_no_longer_than_its_timeout() {
    let db = PgDb::create().await;
    let settings = remaudit_store::PoolSettings {
        read_statement_timeout: Some(Duration::from_millis(300)),
        ..remaudit_store::PoolSettings::default()
    };
    let store = remaudit_store::connect(db.url(), settings)
        .await
        .expect("store");
    let pool = db.pool().await;
    let blocker = PgDb::hold_the_summary(&pool).await;
    store.insert(&transitions("rr-held")).await.expect("insert");

    // More reads than the write pool has connections (10).
    for _ in 0..12 {
        let err = tokio::time::timeout(Duration::from_secs(10), store.list(&all()))
            .await
            .expect("the read ends")
            .expect_err("the projection is held up");
        assert!(err.is_behind(), "{err}");
        assert!(err.to_string().contains("300 ms"), "{err}");
    }
    store
        .insert(&transitions("rr-later"))
        .await
        .expect("a write after the reads gave up");
    let waiting = count(
        &pool,
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .await;
    assert!(
        waiting <= 1,
        "{waiting} sessions wait on a lock: the reads that gave up left statements running"
    );

    blocker.rollback().await.expect("unlock");
    let mut both = listed(&*store).await;
    both.sort();
    assert_eq!(
        both,
        [
            ("rr-held".to_owned(), "completed".to_owned()),
            ("rr-later".to_owned(), "completed".to_owned())
        ]
    );
}

/// A projection that fails for a reason every row meets alike (here a
/// rollup table is missing) quarantines nothing: the rows stay queued, the
/// read fails, and once the table is back every event is projected.
#[tokio::test]
async fn a_failure_every_row_meets_quarantines_nothing() {
    let db = PgDb::create().await;
    let store = db.store().await;
    let pool = db.pool().await;
    sqlx::query("ALTER TABLE remediation_rollup_outcomes RENAME TO rollup_outcomes_away")
        .execute(&pool)
        .await
        .expect("rename");
    store
        .insert(&transitions("rr-waits"))
        .await
        .expect("insert");
    let err = store.list(&all()).await.expect_err("no rollup table");
    assert!(
        err.to_string().contains("remediation_rollup_outcomes"),
        "{err}"
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM remediation_projection_quarantine"
        )
        .await,
        0
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM remediation_projection_queue").await,
        5
    );
    sqlx::query("ALTER TABLE rollup_outcomes_away RENAME TO remediation_rollup_outcomes")
        .execute(&pool)
        .await
        .expect("rename back");
    assert_eq!(
        listed(&*store).await,
        [("rr-waits".to_owned(), "completed".to_owned())]
    );
    crate::rollups::assert_rollups_equal_a_rebuild(&pool).await;
}
