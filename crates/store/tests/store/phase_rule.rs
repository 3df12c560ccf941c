//! The phase rule is written once, in `remaudit_model` (`PHASE_RANKS`,
//! `supersedes`), and both backends' SQL is generated from it
//! (`supersedes_sql`, `rank_sql`). These tests check that each database,
//! running that SQL, decides as `supersedes` does: the bare condition over
//! every pair of a set of records, then the summary rows the stores keep
//! for random histories.

use std::sync::atomic::{AtomicU32, Ordering};

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use remaudit_model::{Phase, PhaseRank, rank_sql, supersedes, supersedes_sql};
use remaudit_store::{ListQuery, Store};
use remaudit_testkit::{PgDb, SqliteDb, at, record};
use serde_json::json;

/// Every known phase and one this build does not know.
const PHASES: [&str; 8] = [
    "pending",
    "processing",
    "analyzing",
    "executing",
    "completed",
    "failed",
    "timeout",
    "verifying",
];

/// Event times that tie, differ by a microsecond, and by a second.
fn times() -> [DateTime<Utc>; 3] {
    let t = at(0);
    [t, t + Duration::microseconds(1), t + Duration::seconds(1)]
}

/// A record as the rule sees it: its phase and event time.
type Event<'a> = (&'a str, DateTime<Utc>);

/// The rule as SQL over every `(current, candidate)` pair, one row per
/// pair in order; `time` writes an event time as a literal of the backend.
fn pairs_sql(pairs: &[(Event<'_>, Event<'_>)], time: impl Fn(DateTime<Utc>) -> String) -> String {
    let values: Vec<String> = pairs
        .iter()
        .enumerate()
        .map(|(i, ((cp, ct), (np, nt)))| {
            format!("({i}, '{cp}', {}, '{np}', {})", time(*ct), time(*nt))
        })
        .collect();
    format!(
        "WITH v(i, cp, ct, np, nt) AS (VALUES {}), \
         cur AS (SELECT i, {} AS phase_rank, ct AS event_time FROM v), \
         cand AS (SELECT i, {} AS phase_rank, nt AS event_time FROM v) \
         SELECT {} AS wins FROM cur JOIN cand ON cur.i = cand.i ORDER BY cur.i",
        values.join(", "),
        rank_sql("cp"),
        rank_sql("np"),
        supersedes_sql("cur", "cand"),
    )
}

#[tokio::test]
async fn the_generated_sql_decides_as_supersedes_on_both_backends() {
    let records: Vec<Event<'_>> = PHASES
        .iter()
        .flat_map(|&p| times().map(move |t| (p, t)))
        .collect();
    let pairs: Vec<_> = records
        .iter()
        .flat_map(|&a| records.iter().map(move |&b| (a, b)))
        .collect();
    let rank = |p: &str| Phase::parse(p).rank();
    let want: Vec<bool> = pairs
        .iter()
        .map(|&((cp, ct), (np, nt))| supersedes((rank(cp), ct), (rank(np), nt)))
        .collect();
    assert!(want.iter().any(|&w| w) && want.iter().any(|&w| !w));

    let pg = PgDb::create().await;
    let pool = pg.pool().await;
    let sql = pairs_sql(&pairs, |t| {
        format!("CAST('{}' AS timestamptz)", t.to_rfc3339())
    });
    let got: Vec<bool> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_all(&pool)
        .await
        .expect("PostgreSQL evaluates the rule");
    assert_eq!(got, want, "PostgreSQL");
    pool.close().await;

    let lite = sqlx::SqlitePool::connect("sqlite::memory:")
        .await
        .expect("SQLite in memory");
    // SQLite keeps times as fixed-width text, as the store writes them.
    let sql = pairs_sql(&pairs, |t| {
        format!("'{}'", t.format("%Y-%m-%dT%H:%M:%S%.6fZ"))
    });
    let got: Vec<bool> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_all(&lite)
        .await
        .expect("SQLite evaluates the rule");
    assert_eq!(got, want, "SQLite");
}

/// One record of a random history: a phase and an event time.
fn history_record() -> impl Strategy<Value = (usize, i64)> {
    (0..PHASES.len(), 0i64..4)
}

/// The event time of a history record: `offset / 2` seconds and
/// `offset % 2` microseconds after a base, so that times tie, differ by a
/// microsecond or by a second.
fn history_time(offset: i64) -> DateTime<Utc> {
    at(0) + Duration::seconds(offset / 2) + Duration::microseconds(offset % 2)
}

#[test]
fn summaries_follow_supersedes_on_both_backends() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let pg = rt.block_on(PgDb::create());
    let lite = SqliteDb::create();
    let stores: Vec<std::sync::Arc<dyn Store>> =
        rt.block_on(async { vec![pg.store().await, lite.store().await] });
    let serial = AtomicU32::new(0);
    let mut runner = TestRunner::new(Config {
        cases: 48,
        ..Config::default()
    });
    let strategy = (prop::collection::vec(history_record(), 1..8), any::<bool>());
    let result = runner.run(&strategy, |(history, batched)| {
        let name = format!("rr-rule-{}", serial.fetch_add(1, Ordering::Relaxed));
        let records: Vec<_> = history
            .iter()
            .map(|&(p, offset)| {
                let t = history_time(offset).to_rfc3339();
                let mut r = json!({
                    "remediation_name": name, "alert_fingerprint": "fp",
                    "start_time": (at(0) - Duration::minutes(1)).to_rfc3339(),
                    "overall_phase": PHASES[p], "event_time": t,
                });
                if Phase::parse(PHASES[p]).is_terminal() {
                    r["completion_time"] = json!(t);
                }
                record(r)
            })
            .collect();
        let mut want: (PhaseRank, DateTime<Utc>, &str) = (
            records[0].phase_rank,
            records[0].event_time,
            &records[0].overall_phase,
        );
        for r in &records[1..] {
            if supersedes((want.0, want.1), (r.phase_rank, r.event_time)) {
                want = (r.phase_rank, r.event_time, &r.overall_phase);
            }
        }
        for store in &stores {
            let row = rt.block_on(async {
                if batched {
                    store.insert(&records).await.expect("insert");
                } else {
                    for r in &records {
                        store.insert(std::slice::from_ref(r)).await.expect("insert");
                    }
                }
                let page = store
                    .list(&ListQuery {
                        remediation_name: Some(name.clone()),
                        limit: 10,
                        ..ListQuery::default()
                    })
                    .await
                    .expect("list");
                assert_eq!(page.items.len(), 1);
                page.items.into_iter().next().expect("one row")
            });
            prop_assert_eq!(
                (row.overall_phase.as_str(), row.event_time),
                (want.2, want.1),
                "{} (batched: {})",
                store.backend(),
                batched
            );
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
