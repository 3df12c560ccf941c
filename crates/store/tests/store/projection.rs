//! PostgreSQL's projection of the events into the summary and rollups: an
//! acknowledged event waits in the queue until projected, survives the
//! death of the process that wrote it, is projected once however many
//! projectors run, and never brings an archived remediation back.

use std::time::Duration;

use chrono::TimeDelta;
use remaudit_store::{InsertOutcome, ListQuery};
use remaudit_testkit::{PgDb, at, record, text_rows};
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
    let mut kept = Vec::new();
    for sql in crate::rollups::ROLLUPS {
        kept.push(text_rows(&pool, sql).await);
    }
    text_rows(&pool, "SELECT remaudit_rebuild_rollups()").await;
    for (sql, before) in crate::rollups::ROLLUPS.iter().zip(kept) {
        assert_eq!(text_rows(&pool, sql).await, before, "{sql}");
    }
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
    let mut blocker = pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE remediation_audit IN EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .expect("lock");
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
