//! Writers meeting on PostgreSQL: a record for a remediation that retention
//! is moving must not start a new live row, a batch that another run took
//! over must not finish, processes making the weekly partitions at once
//! neither fail nor stall ingest nor hide rows from reads, and a record that
//! loses its key to another writer mid-insert must not leave a hole in its
//! remediation's chain.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use remaudit_store::retention::{ArchiveTable, BatchTotals, Retiring};
use remaudit_store::{Actor, InsertOutcome, ListQuery, Refusal, RetireRequest};
use remaudit_testkit::{at, record};
use serde_json::json;
use tokio::sync::Notify;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_record_arriving_while_its_remediation_is_archived_does_not_bring_it_back() {
    let db = remaudit_testkit::PgDb::create().await;
    let store = db.store().await;
    let pool = db.pool().await;
    let with = |phase: &str, minute: i64| {
        record(json!({"namespace": "ns", "remediation_name": "rr-race",
            "alert_fingerprint": "fp", "start_time": at(0).to_rfc3339(),
            "overall_phase": phase, "event_time": at(minute).to_rfc3339()}))
    };
    assert_eq!(
        store.insert(&[with("processing", 1)]).await.unwrap(),
        [InsertOutcome::Created]
    );
    let id = store
        .list(&ListQuery {
            limit: 10,
            ..ListQuery::default()
        })
        .await
        .unwrap()
        .items[0]
        .id;
    // A soft-deleted row is archived at the next run, whatever its age.
    store
        .soft_delete(id, chrono::Utc::now(), &Actor::new("ops", "race"))
        .await
        .unwrap();

    // The batch holds its transaction open between reading its first
    // file's rows and going on, until the test releases it.
    let written = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let (written_tx, release_rx) = (written.clone(), release.clone());
    let retiring = store.clone();
    let retire = tokio::spawn(async move {
        let locate = |installation: &str, batch: i64| format!("{installation}/batch-{batch}");
        let request = RetireRequest {
            now: chrono::Utc::now(),
            age: chrono::TimeDelta::days(90),
            batch_rows: 100,
            exact: true,
        };
        let Some(Retiring::Batch(mut batch)) = retiring.next_batch(&request, &locate).await? else {
            return Ok(None);
        };
        let mut rows = [0_u64; 2];
        for (i, table) in ArchiveTable::ALL.into_iter().enumerate() {
            let mut lines = batch.rows(table);
            while let Some(line) = lines.next().await {
                line?;
                rows[i] += 1;
            }
            drop(lines);
            if table == ArchiveTable::Remediations {
                written_tx.notify_one();
                release_rx.notified().await;
            }
        }
        let (start_time_min, start_time_max) = batch.start_times().await?;
        let number = batch.number();
        batch
            .finish(&BatchTotals {
                remediations: rows[0],
                events: rows[1],
                bytes: 1,
                start_time_min,
                start_time_max,
                manifest_sha256: "00".into(),
            })
            .await?;
        Ok::<_, remaudit_store::StoreError>(Some(number))
    });
    // The batch has copied the row and its events and holds them locked.
    written.notified().await;

    let inserting = store.clone();
    let late = tokio::spawn(async move { inserting.insert(&[with("analyzing", 2)]).await });
    // Wait until the insert waits on a lock (or, without the row lock, has
    // already finished), then let the batch commit.
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            if waiting > 0 || late.is_finished() {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the late insert neither waited nor finished");
    release.notify_one();

    retire
        .await
        .unwrap()
        .unwrap()
        .expect("a batch was archived");
    let answer = late.await.unwrap().unwrap();
    assert_eq!(answer, [InsertOutcome::Refused(Refusal::Archived)]);
    let live: i64 = sqlx::query_scalar("SELECT count(*) FROM remediation_audit")
        .fetch_one(&pool)
        .await
        .unwrap();
    let live_events: i64 = sqlx::query_scalar("SELECT count(*) FROM remediation_audit_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!((live, live_events), (0, 0), "nothing is live again");
}

/// A batch that another run took for interrupted (its journal row forgotten,
/// its files removed) must not finish: the live rows stay, nothing is lost.
#[tokio::test]
async fn a_batch_taken_over_by_another_run_does_not_remove_its_rows() {
    let db = remaudit_testkit::PgDb::create().await;
    let store = db.store().await;
    let pool = db.pool().await;
    store
        .insert(&[record(
            json!({"namespace": "ns", "remediation_name": "rr-taken",
            "alert_fingerprint": "fp", "start_time": at(0).to_rfc3339(),
            "overall_phase": "processing", "event_time": at(1).to_rfc3339()}),
        )])
        .await
        .unwrap();
    let listed = ListQuery {
        limit: 10,
        ..ListQuery::default()
    };
    let id = store.list(&listed).await.unwrap().items[0].id;
    store
        .soft_delete(id, chrono::Utc::now(), &Actor::new("ops", "race"))
        .await
        .unwrap();

    let locate = |installation: &str, batch: i64| format!("{installation}/batch-{batch}");
    let request = RetireRequest {
        now: chrono::Utc::now(),
        age: chrono::TimeDelta::days(90),
        batch_rows: 100,
        exact: true,
    };
    let Some(Retiring::Batch(batch)) = store.next_batch(&request, &locate).await.unwrap() else {
        panic!("the soft-deleted row makes a batch");
    };
    let number = batch.number();
    // What a second run does with a batch it finds pending.
    store.forget_batch(number).await.unwrap();

    let err = batch
        .finish(&BatchTotals {
            remediations: 1,
            events: 1,
            bytes: 1,
            start_time_min: None,
            start_time_max: None,
            manifest_sha256: "00".into(),
        })
        .await
        .expect_err("a batch no longer pending cannot finish");
    assert!(
        matches!(err, remaudit_store::StoreError::NotPending(n) if n == number),
        "{err}"
    );
    let live: i64 = sqlx::query_scalar("SELECT count(*) FROM remediation_audit")
        .fetch_one(&pool)
        .await
        .unwrap();
    let archived: i64 = sqlx::query_scalar("SELECT count(*) FROM remediation_audit_archive")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        (live, archived),
        (1, 0),
        "the row stays live, and only there"
    );
}

/// Several processes that make the weekly partitions at the same moment
/// (replicas of `serve` starting together, one connecting while another's
/// retention run makes the weeks) each make a missing week once, and none
/// fails: they used to all find it missing, all create it, and all but one
/// fail on PostgreSQL's unique index of type names.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_making_the_weeks_at_once_make_each_once_and_none_fails() {
    const CALLERS: usize = 6;
    let db = remaudit_testkit::PgDb::create().await;
    let pool = db.pool().await;
    let mut stores = Vec::new();
    for _ in 0..CALLERS {
        stores.push(db.store().await);
    }
    let now = chrono::Utc::now();
    for round in 0..3 {
        // The weeks hold no row yet: drop them, as if the service had not run
        // since they fell due to be made.
        let weeks: Vec<String> = sqlx::query_scalar(
            "SELECT relname::text FROM pg_class WHERE relkind = 'r' AND relispartition \
             AND relname ~ '^remediation_audit_(events_)?w[0-9]{8}$'",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert!(weeks.len() >= 12, "the weeks around now: {weeks:?}");
        for week in &weeks {
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {week}")))
                .execute(&pool)
                .await
                .unwrap();
        }
        let start = Arc::new(tokio::sync::Barrier::new(CALLERS));
        let mut callers = tokio::task::JoinSet::new();
        for store in &stores {
            let (store, start) = (store.clone(), start.clone());
            callers.spawn(async move {
                start.wait().await;
                store
                    .ensure_partitions(
                        now - chrono::TimeDelta::weeks(1),
                        now + chrono::TimeDelta::weeks(5),
                    )
                    .await
            });
        }
        let mut created = 0;
        while let Some(made) = callers.join_next().await {
            created += made
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
        }
        assert_eq!(
            usize::try_from(created).unwrap(),
            weeks.len(),
            "round {round}: each week made once"
        );
    }
}

/// Making a missing week while a retention batch holds the default
/// partition (a row-wise batch keeps its rows locked while it writes its
/// files) gives up after a short wait: attaching the week waits for the batch,
/// and every insert, on every server, queued behind that wait. A `serve`
/// starting then did not answer until the batch ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn making_a_week_while_a_batch_holds_the_default_partition_holds_up_no_insert() {
    let db = remaudit_testkit::PgDb::create().await;
    let store = db.store().await;
    let pool = db.pool().await;
    let old = chrono::Utc::now() - chrono::TimeDelta::days(200);
    let with = |name: &str, start: chrono::DateTime<chrono::Utc>| {
        record(json!({"namespace": "ns", "remediation_name": name,
            "alert_fingerprint": "fp", "start_time": start.to_rfc3339(),
            "overall_phase": "completed", "completion_time": start.to_rfc3339()}))
    };
    store.insert(&[with("rr-old", old)]).await.unwrap();
    // The oldest week, not made yet.
    let first = oldest_week(&pool).await;
    let events = first.replacen("remediation_audit_", "remediation_audit_events_", 1);
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {first}, {events}")))
        .execute(&pool)
        .await
        .unwrap();
    // A batch in flight: the old row locked in the default partition.
    let mut batch = pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM remediation_audit WHERE remediation_name = 'rr-old' FOR UPDATE")
        .fetch_all(&mut *batch)
        .await
        .unwrap();

    let now = chrono::Utc::now();
    let weeks = (
        now - chrono::TimeDelta::weeks(1),
        now + chrono::TimeDelta::weeks(5),
    );
    let making = {
        let store = store.clone();
        tokio::spawn(async move { store.ensure_partitions(weeks.0, weeks.1).await })
    };
    let inserted = tokio::time::timeout(
        Duration::from_secs(10),
        store.insert(&[with("rr-new", now - chrono::TimeDelta::minutes(5))]),
    )
    .await
    .expect("an insert does not wait for the batch")
    .unwrap();
    assert_eq!(inserted, [InsertOutcome::Created]);
    let made = tokio::time::timeout(Duration::from_secs(10), making)
        .await
        .expect("making the weeks does not wait for the batch")
        .unwrap()
        .unwrap();
    assert_eq!(made, 0, "the week waits for a later call");

    batch.rollback().await.unwrap();
    assert_eq!(
        store.ensure_partitions(weeks.0, weeks.1).await.unwrap(),
        2,
        "the week's two tables, once the batch is gone"
    );
}

/// Making a week that takes rows out of the default partition hides none of
/// them from a read at the same moment. Attaching a week locks the parent
/// only against other schema changes: a read planned before the attach and
/// run after it saw the rows neither in the default partition nor in the
/// week, and a listing (or an insert's check that its remediation is live)
/// came back without them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_while_a_week_takes_rows_from_the_default_partition_see_every_row() {
    const ROWS: i64 = 7;
    let db = remaudit_testkit::PgDb::create().await;
    let store = db.store().await;
    let pool = db.pool().await;
    let week = oldest_week(&pool).await;
    let events = week.replacen("remediation_audit_", "remediation_audit_events_", 1);
    let monday = chrono::NaiveDate::parse_from_str(&week[week.len() - 8..], "%Y%m%d")
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    // Stored in their week (the write path makes it when it is missing)...
    for n in 0..ROWS {
        let start = monday + chrono::TimeDelta::hours(n);
        store
            .insert(&[record(
                json!({"namespace": "ns", "remediation_name": format!("rr-{n}"),
                "alert_fingerprint": "fp", "start_time": start.to_rfc3339(),
                "overall_phase": "processing"}),
            )])
            .await
            .unwrap();
    }
    // The reader below counts summary rows: they are made first.
    store.settle().await.unwrap();

    // ...then the week is unmade: its rows wait in the default partition
    // until the week is made again.
    let unmake = format!(
        "LOCK TABLE remediation_audit, remediation_audit_events IN ACCESS EXCLUSIVE MODE; \
         ALTER TABLE remediation_audit_events DETACH PARTITION {events}; \
         ALTER TABLE remediation_audit DETACH PARTITION {week}; \
         WITH kept AS (DELETE FROM {week} RETURNING *) INSERT INTO remediation_audit SELECT * FROM kept; \
         WITH kept AS (DELETE FROM {events} RETURNING *) INSERT INTO remediation_audit_events SELECT * FROM kept; \
         DROP TABLE {week}, {events}"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("BEGIN; {unmake}; COMMIT")))
        .execute(&pool)
        .await
        .unwrap();

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (pool, stop) = (pool.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut reads, mut fewest) = (0, ROWS);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let n: i64 = sqlx::query_scalar("SELECT count(*) FROM remediation_audit")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                fewest = fewest.min(n);
                reads += 1;
            }
            (reads, fewest)
        })
    };
    for _ in 0..100 {
        let made = store
            .ensure_partitions(monday, monday + chrono::TimeDelta::days(1))
            .await
            .unwrap();
        assert_eq!(made, 2, "the week's two tables");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("BEGIN; {unmake}; COMMIT")))
            .execute(&pool)
            .await
            .unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (reads, fewest) = reader.await.unwrap();
    assert!(reads > 100, "the reader ran alongside: {reads} reads");
    assert_eq!(fewest, ROWS, "a read missed rows moving into their week");
}

/// A record whose event key another remediation's writer takes while the
/// insert is under way loses it; the events of its batch that were stored
/// are linked again without it, so its remediation's chain has no hole.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_record_that_loses_its_key_mid_insert_leaves_a_whole_chain() {
    use remaudit_model::chain::{ChainKey, KeyRing};
    use remaudit_store::{InsertRules, verify_page};

    let db = remaudit_testkit::PgDb::create().await;
    let store = db.store().await;
    let pool = db.pool().await;
    let taken = uuid::Uuid::new_v4();
    let event = |minute: i64, event_id: Option<uuid::Uuid>| {
        let mut r = json!({"namespace": "ns", "remediation_name": "rr-keys",
            "alert_fingerprint": "fp", "start_time": at(0).to_rfc3339(),
            "overall_phase": "processing", "event_time": at(minute).to_rfc3339(),
            "failure_reason": format!("step {minute}")});
        if let Some(id) = event_id {
            r["event_id"] = json!(id);
        }
        record(r)
    };
    let batch = vec![event(1, None), event(2, Some(taken)), event(3, None)];

    // Another remediation's writer holds the key, not yet committed: the
    // insert cannot see it, and blocks on it when it writes.
    let mut other = pool.begin().await.expect("begin");
    sqlx::query(
        "INSERT INTO remediation_audit_events (event_id, namespace, remediation_name, start_time, \
         overall_phase, event_time, received_at, record, content_hash) \
         VALUES ($1, 'ns', 'rr-other', $2, 'processing', $2, now(), '{}'::jsonb, '\\xdeadbeef'::bytea)",
    )
    .bind(taken)
    .bind(at(0))
    .execute(&mut *other)
    .await
    .expect("take the key");

    let ring = Arc::new(KeyRing::single(ChainKey::new("k1", [7; 32]).expect("key")));
    let rules = InsertRules {
        chain: Some(ring.clone()),
        ..InsertRules::default()
    };
    let writer = store.clone();
    let insert = tokio::spawn(async move { writer.insert_with(&batch, &rules).await });
    // Waits until the insert is blocked on the other writer's row.
    let blocked = async {
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&pool)
            .await
            .expect("activity");
            if waiting > 0 {
                return;
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), blocked)
        .await
        .expect("the insert waits on the taken key");
    other.commit().await.expect("commit");
    let outcomes = insert.await.expect("join").expect("insert");
    assert_eq!(
        outcomes,
        [
            InsertOutcome::Created,
            InsertOutcome::Conflict,
            InsertOutcome::Created
        ]
    );

    let seqs: Vec<(String, Option<i64>)> = sqlx::query_as(
        // By link, not by id: the batch's rows take ids in the order the
        // insert met them, which its event ids decide, not the batch order.
        "SELECT remediation_name::text, chain_seq FROM remediation_audit_events \
         ORDER BY chain_seq NULLS FIRST",
    )
    .fetch_all(&pool)
    .await
    .expect("seqs");
    assert_eq!(
        seqs,
        [
            ("rr-other".to_owned(), None),
            ("rr-keys".to_owned(), Some(1)),
            ("rr-keys".to_owned(), Some(2)),
        ]
    );
    let page = verify_page(&*store, &ring, at(-600), at(600), None, 1000)
        .await
        .expect("verify");
    assert!(page.breaks.is_empty(), "{:?}", page.breaks);
    assert_eq!((page.verified, page.unchained), (2, 1));
}

/// The oldest attached weekly table of the summary.
async fn oldest_week(pool: &sqlx::PgPool) -> String {
    sqlx::query_scalar(
        "SELECT relname::text FROM pg_class WHERE relkind = 'r' AND relispartition \
         AND relname ~ '^remediation_audit_w[0-9]{8}$' ORDER BY 1 LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}
