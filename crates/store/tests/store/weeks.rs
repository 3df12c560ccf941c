//! Any week gets a partition (PostgreSQL): a record for a week that has none
//! makes it on the write path, and what could not be made then waits in the
//! default partition until retention's upkeep moves it into its week.

use chrono::{DateTime, TimeDelta, Utc};
use remaudit_store::{InsertOutcome, RetireRequest};
use remaudit_testkit::record;
use serde_json::json;

fn started(name: &str, start: DateTime<Utc>) -> remaudit_model::NewAudit {
    record(json!({
        "namespace": "backfill",
        "remediation_name": name,
        "alert_fingerprint": "fp-backfill",
        "start_time": start.to_rfc3339(),
        "overall_phase": "processing",
        "event_time": (start + TimeDelta::minutes(1)).to_rfc3339(),
    }))
}

/// The table each of the namespace's summary rows and events sits in.
async fn homes(pool: &sqlx::PgPool) -> (Vec<String>, Vec<String>) {
    let of = |table: &'static str| async move {
        sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!(
            "SELECT tableoid::regclass::text FROM {table} \
             WHERE namespace = 'backfill' ORDER BY start_time"
        )))
        .fetch_all(pool)
        .await
        .expect("homes")
    };
    (
        of("remediation_audit").await,
        of("remediation_audit_events").await,
    )
}

fn week_table(parent: &str, start: DateTime<Utc>) -> String {
    let day = start.date_naive();
    let monday = day
        - TimeDelta::days(i64::from(
            chrono::Datelike::weekday(&day).num_days_from_monday(),
        ));
    format!("{parent}_w{}", monday.format("%Y%m%d"))
}

#[tokio::test]
async fn a_backfill_of_old_weeks_lands_in_weekly_partitions_and_only_weeks_not_yet_due_are_made() {
    let db = remaudit_testkit::PgDb::create().await;
    let store = db.store().await;
    let pool = db.pool().await;
    let tables = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_class WHERE relname ~ '^remediation_audit_(events_)?w[0-9]{8}$'",
        )
        .fetch_one(&pool)
        .await
        .expect("tables")
    };
    let before = tables().await;
    // Ten weeks of history from before the store first opened, in one
    // batch, then one record from long past the retention age.
    let now = Utc::now();
    let kept: Vec<DateTime<Utc>> = (2..12).map(|w| now - TimeDelta::weeks(w)).collect();
    let records: Vec<_> = kept
        .iter()
        .enumerate()
        .map(|(n, &start)| started(&format!("rr-{n}"), start))
        .collect();
    let outcomes = store.insert(&records).await.expect("backfill");
    assert!(
        outcomes.iter().all(|o| *o == InsertOutcome::Created),
        "{outcomes:?}"
    );
    let old = now - TimeDelta::weeks(30);
    assert_eq!(
        store.insert(&[started("rr-old", old)]).await.expect("old"),
        [InsertOutcome::Created]
    );
    store.settle().await.expect("settle");

    let (summaries, events) = homes(&pool).await;
    let mut expected: Vec<String> = vec!["remediation_audit_default".to_owned()];
    expected.extend(
        kept.iter()
            .rev()
            .map(|&s| week_table("remediation_audit", s)),
    );
    assert_eq!(
        summaries, expected,
        "each row in its week; the due one in the default"
    );
    let mut expected: Vec<String> = vec!["remediation_audit_events_default".to_owned()];
    expected.extend(
        kept.iter()
            .rev()
            .map(|&s| week_table("remediation_audit_events", s)),
    );
    assert_eq!(events, expected);
    // The startup made the weeks from last week on; the backfill made its
    // ten, for both tables, and nothing for the week long past.
    assert_eq!(tables().await - before, 20);

    // A careless batch spread over two years makes no table beyond the
    // weeks that are not due, whatever its times.
    let before = tables().await;
    let spread: Vec<_> = (0..104)
        .map(|w| {
            started(
                &format!("rr-spread-{w}"),
                now - TimeDelta::weeks(w) - TimeDelta::hours(1),
            )
        })
        .collect();
    store.insert(&spread).await.expect("spread");
    let made = tables().await - before;
    assert!(
        made <= 4,
        "only the few not-due weeks still missing: {made}"
    );
    let due_weeks = sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM pg_class WHERE relname ~ '^remediation_audit_w[0-9]{8}$' \
           AND to_date(right(relname, 8), 'YYYYMMDD') < (now() - INTERVAL '98 days')::date",
    )
    .fetch_one(&pool)
    .await
    .expect("due weeks");
    assert_eq!(due_weeks, 0, "no table for a week already due");
}

#[tokio::test]
async fn rows_that_could_not_get_their_week_wait_in_the_default_partition_until_the_upkeep() {
    let db = remaudit_testkit::PgDb::create().await;
    let store = db.store().await;
    let pool = db.pool().await;
    // A long reader of the default partition keeps any week from being
    // attached (attaching takes the default partition exclusively).
    let mut reader = pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE remediation_audit_default IN ACCESS SHARE MODE")
        .execute(&mut *reader)
        .await
        .expect("lock");
    let start = Utc::now() - TimeDelta::weeks(6);
    assert_eq!(
        store
            .insert(&[started("rr-waiting", start)])
            .await
            .expect("insert"),
        [InsertOutcome::Created],
        "the write is stored even though its week cannot be made now"
    );
    store.settle().await.expect("settle");
    let (summaries, _) = homes(&pool).await;
    assert_eq!(summaries, ["remediation_audit_default"]);
    reader.rollback().await.expect("rollback");

    let upkeep = store
        .partition_upkeep(&RetireRequest {
            now: Utc::now(),
            age: TimeDelta::days(90),
            batch_rows: 100,
            exact: false,
        })
        .await
        .expect("upkeep");
    assert_eq!(upkeep.tables_made, 2, "{upkeep:?}");
    assert_eq!((upkeep.default_remediations, upkeep.default_events), (0, 0));
    let (summaries, events) = homes(&pool).await;
    assert_eq!(summaries, [week_table("remediation_audit", start)]);
    assert_eq!(events, [week_table("remediation_audit_events", start)]);
    // The parents' statistics are fresh: the planner knows the row is there.
    let analysed: Option<f32> =
        sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE relname = 'remediation_audit'")
            .fetch_one(&pool)
            .await
            .expect("reltuples");
    assert_eq!(analysed, Some(1.0));
}
