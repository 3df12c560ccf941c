//! Whole weeks on PostgreSQL: a due week becomes the archive's in one short
//! transaction of its own, and only then are its files written, so ingest
//! never waits on the files and the week is never neither live nor archived.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use remaudit_retention::{Archive, Settings};
use remaudit_store::{InsertOutcome, InsertRules, Refusal, Store};
use remaudit_testkit::history::{Written, load};
use remaudit_testkit::{PgDb, record};
use serde_json::json;

use super::{Contended, Counter, THEIRS, local_archive, now, ops, theirs};

/// A PostgreSQL store holding history in weekly partitions, as a service
/// running all along keeps it.
struct Weekly {
    _db: PgDb,
    store: Arc<dyn Store>,
    pool: sqlx::PgPool,
    counter: Counter,
    written: Written,
}

impl Weekly {
    async fn new() -> Self {
        let db = PgDb::create().await;
        let store = db.store().await;
        let pool = db.pool().await;
        let written = load(store.as_ref(), now()).await;
        store
            .ensure_partitions(now() - TimeDelta::days(130), now() + TimeDelta::days(35))
            .await
            .expect("partitions");
        Self {
            _db: db,
            store,
            counter: Counter::Pg(pool.clone()),
            pool,
            written,
        }
    }
}

fn settings() -> Settings {
    Settings {
        batch_rows: 100,
        ..Settings::default()
    }
}

async fn verified(store: &dyn Store, archive: &Archive) {
    let (first, last) = remaudit_retention::all_time();
    let report = remaudit_retention::verify(store, archive, first, last, None)
        .await
        .expect("verify");
    assert!(report.ok(), "{:?}", report.problems);
    assert!(report.pending.is_empty(), "{:?}", report.pending);
}

#[tokio::test]
async fn postgres_ingest_goes_on_while_a_week_writes_its_files_and_the_week_stays_archived() {
    let Weekly {
        _db,
        store,
        pool,
        counter,
        written,
    } = Weekly::new().await;
    let (_dir, local, url) = local_archive();
    let store_held = Arc::new(Contended::holding(local));
    let run = tokio::spawn({
        let store = Arc::clone(&store);
        let archive = Archive::with_object_store(store_held.clone(), "", &url);
        async move {
            remaudit_retention::run_once(
                store.as_ref(),
                &archive,
                &settings(),
                now(),
                false,
                &ops(),
            )
            .await
        }
    });
    let hold = store_held.hold.as_ref().expect("a holding store");
    tokio::time::timeout(Duration::from_mins(1), hold.started.notified())
        .await
        .expect("the run starts writing its first file");

    // The batch in flight is a whole week, already the archive's.
    let (batch, source): (i64, String) = sqlx::query_as(
        "SELECT id, source FROM remediation_retention_batches WHERE state = 'pending'",
    )
    .fetch_one(&pool)
    .await
    .expect("one batch in flight");
    assert!(source.starts_with("remediation_audit_w"), "{source}");
    let (fingerprint, namespace, name, start): (String, String, String, DateTime<Utc>) =
        sqlx::query_as(
            "SELECT alert_fingerprint, namespace, remediation_name, start_time \
             FROM remediation_audit_archive WHERE archive_batch = $1 ORDER BY id LIMIT 1",
        )
        .bind(batch)
        .fetch_one(&pool)
        .await
        .expect("a remediation of the week");

    // A new remediation is stored at once, while the files are held.
    let fresh = record(json!({
        "alert_fingerprint": "fp-fresh",
        "remediation_name": "rr-fresh",
        "namespace": "prod",
        "start_time": (now() - TimeDelta::hours(1)).to_rfc3339(),
        "overall_phase": "processing",
        "event_time": now().to_rfc3339(),
        "duplicate_count": 0,
    }));
    // A late record of the week's remediation finds it archived.
    let late = record(json!({
        "alert_fingerprint": fingerprint,
        "remediation_name": name,
        "namespace": namespace,
        "start_time": start.to_rfc3339(),
        "overall_phase": "analyzing",
        "event_time": (start + TimeDelta::minutes(2)).to_rfc3339(),
        "duplicate_count": 0,
    }));
    for (what, records, expected) in [
        ("a new remediation", fresh, InsertOutcome::Created),
        (
            "a record of the week being archived",
            late,
            InsertOutcome::Refused(Refusal::Archived),
        ),
    ] {
        let outcome = tokio::time::timeout(
            Duration::from_secs(10),
            store.insert_with(&[records], &InsertRules::default()),
        )
        .await
        .unwrap_or_else(|_| panic!("{what} waited on the batch writing its files"))
        .expect("insert");
        assert_eq!(outcome, vec![expected], "{what}");
    }

    hold.release.notify_one();
    let report = run.await.expect("the run's task").expect("the run");
    assert!(
        report.batches.iter().any(|b| b.batch == batch),
        "{:?}",
        report.batches
    );
    store.settle().await.expect("settle");
    let (live, archived, ..) = counter.places().await;
    assert_eq!(live + archived, written.remediations + 1);
    assert_eq!(counter.doubled().await, 0);
    verified(store.as_ref(), &Archive::open(&url).expect("archive")).await;
}

#[tokio::test]
async fn postgres_a_taken_file_name_gives_an_archived_week_a_new_number_and_overwrites_nothing() {
    let Weekly {
        _db,
        store,
        pool,
        counter,
        written,
    } = Weekly::new().await;
    let (_dir, local, url) = local_archive();
    let contended = Arc::new(Contended::planting(Arc::clone(&local)));
    let archive = Archive::with_object_store(contended.clone(), "", &url);
    let err =
        remaudit_retention::run_once(store.as_ref(), &archive, &settings(), now(), false, &ops())
            .await
            .expect_err("the name is taken")
            .to_string();
    assert!(err.contains("already exists"), "{err}");
    let planted = contended.planted();

    // The week's rows are the archive's already: its batch cannot be
    // forgotten, so it has a new number, at a new location.
    let pending: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT id, source, location FROM remediation_retention_batches WHERE state = 'pending'",
    )
    .fetch_all(&pool)
    .await
    .expect("journal");
    assert_eq!(pending.len(), 1, "{pending:?}");
    let (batch, source, location) = &pending[0];
    assert!(source.starts_with("remediation_audit_w"), "{source}");
    assert!(
        !planted.as_ref().starts_with(location.as_str()),
        "{planted} is not under {location}"
    );
    let elsewhere: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM remediation_audit_archive WHERE archive_batch <> $1",
    )
    .bind(batch)
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(elsewhere, 0, "every archived row is the renumbered batch's");
    let (live, archived, ..) = counter.places().await;
    assert!(archived > 0);
    assert_eq!(live + archived, written.remediations);

    let archive = Archive::open(&url).expect("archive");
    let report =
        remaudit_retention::run_once(store.as_ref(), &archive, &settings(), now(), false, &ops())
            .await
            .expect("the next run");
    // The next run finds it pending: it removes what may be there, gives it
    // yet another number (so that no run still holding this one can mark it
    // done), and writes the week first.
    assert_eq!(report.cleaned, [*batch]);
    let first = report.batches.first().expect("a batch");
    assert_eq!(&first.source, source);
    assert!(first.batch > *batch, "{first:?}");
    assert_eq!(theirs(local, planted).await.as_ref(), THEIRS);
    let (live, archived, ..) = counter.places().await;
    assert_eq!(live + archived, written.remediations);
    assert_eq!(counter.doubled().await, 0);
    verified(store.as_ref(), &archive).await;
}

#[tokio::test]
async fn postgres_a_week_left_detached_whose_week_is_archived_goes_back_live_then_leaves_row_by_row()
 {
    let Weekly {
        _db,
        store,
        pool,
        counter,
        written,
    } = Weekly::new().await;
    let (_dir, _local, url) = local_archive();
    let archive = Archive::open(&url).expect("archive");
    remaudit_retention::run_once(store.as_ref(), &archive, &settings(), now(), false, &ops())
        .await
        .expect("the first run");
    let week: String = sqlx::query_scalar(
        "SELECT relname::text FROM pg_class WHERE relname ~ '^remediation_audit_archive_w[0-9]{8}$' \
         ORDER BY 1 LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .expect("an archived week");
    let monday = chrono::NaiveDate::parse_from_str(&week[week.len() - 8..], "%Y%m%d")
        .expect("date")
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc();
    // New remediations of that week arrive late; a week table is made for
    // them, and an older version detached it and stopped there.
    let late: Vec<_> = (0..3)
        .map(|n| {
            let start = monday + TimeDelta::hours(n);
            record(json!({
                "alert_fingerprint": "fp-late",
                "remediation_name": format!("rr-late-{n}"),
                "namespace": "prod",
                "start_time": start.to_rfc3339(),
                "overall_phase": "completed",
                "completion_time": (start + TimeDelta::minutes(5)).to_rfc3339(),
                "event_time": (start + TimeDelta::minutes(5)).to_rfc3339(),
                "duplicate_count": 0,
            }))
        })
        .collect();
    let outcomes = store
        .insert_with(&late, &InsertRules::default())
        .await
        .expect("late records");
    assert!(
        outcomes.iter().all(|o| *o == InsertOutcome::Created),
        "{outcomes:?}"
    );
    // Their summary rows are made before the week is detached.
    store.settle().await.expect("settle");
    store
        .ensure_partitions(monday, monday + TimeDelta::days(1))
        .await
        .expect("the week again");
    let live = week.replacen("_archive_", "_", 1);
    let events = live.replacen("remediation_audit_", "remediation_audit_events_", 1);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER TABLE remediation_audit_events DETACH PARTITION {events}; \
         ALTER TABLE remediation_audit DETACH PARTITION {live};"
    )))
    .execute(&pool)
    .await
    .expect("detach as an older version did");
    let (live_before, archived_before, ..) = counter.places().await;
    // The detached table holds the late three and the week's rows that were
    // kept live when it was archived (remediations still running).
    let detached: i64 =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {live}")))
            .fetch_one(&pool)
            .await
            .expect("detached rows");
    assert!(detached > 3, "{detached}");
    assert_eq!(
        live_before + archived_before + detached,
        written.remediations + 3
    );

    let report =
        remaudit_retention::run_once(store.as_ref(), &archive, &settings(), now(), false, &ops())
            .await
            .expect("the next run");
    assert_eq!(report.remediations(), 3, "{:?}", report.batches);
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class WHERE relname ~ '^remediation_audit_(events_)?w[0-9]{8}$' \
           AND relkind = 'r' AND NOT relispartition",
    )
    .fetch_one(&pool)
    .await
    .expect("detached tables");
    assert_eq!(left, 0, "no week is left detached");
    let (live, archived, ..) = counter.places().await;
    assert_eq!(live + archived, written.remediations + 3);
    assert_eq!(archived, archived_before + 3);
    assert_eq!(counter.doubled().await, 0);
    verified(store.as_ref(), &archive).await;
}

/// A projection row quarantined in a week that leaves for the archive goes
/// with the week (its event is archived; the row would only keep its names
/// past the week's retention), and one of a week still live stays.
#[tokio::test]
async fn postgres_quarantined_projection_rows_leave_with_their_week() {
    let Weekly {
        _db, store, pool, ..
    } = Weekly::new().await;
    for (id, start) in [
        (1_i64, now() - TimeDelta::days(120)),
        (2, now() - TimeDelta::days(1)),
    ] {
        sqlx::query(
            "INSERT INTO remediation_projection_quarantine (id, queued_at, event_id, namespace, \
             alert_fingerprint, remediation_name, overall_phase, phase_rank, start_time, \
             duplicate_count, event_time, error) \
             VALUES ($1, now(), gen_random_uuid(), 'prod', 'fp-q', 'rr-q', 'failed', 9, $2, 0, $2, \
             'new row for relation violates check constraint')",
        )
        .bind(id)
        .bind(start)
        .execute(&pool)
        .await
        .expect("a quarantined row");
    }
    let (_dir, _local, url) = local_archive();
    let archive = Archive::open(&url).expect("archive");
    remaudit_retention::run_once(store.as_ref(), &archive, &settings(), now(), false, &ops())
        .await
        .expect("run");
    let left: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM remediation_projection_quarantine ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("quarantine");
    assert_eq!(left, [2]);
}
