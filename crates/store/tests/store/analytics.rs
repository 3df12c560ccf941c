//! Analytics answers against truths computed here, independently, from the
//! generated remediations: on both backends, through rollups and from rows.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use remaudit_model::NewAudit;
use remaudit_model::analytics::Window;
use remaudit_model::histogram::{RELATIVE_ERROR, percentile_cont};
use remaudit_store::{AnalyticsQuery, Store};
use remaudit_testkit::record;
use serde_json::json;

/// A fingerprint full of SQL metacharacters.
pub const HOSTILE_FINGERPRINT: &str = "fp'; DROP TABLE remediation_audit;--%_\\";

const REASONS: [&str; 4] = [
    "model unavailable",
    "workflow rejected by policy",
    "ünïcode réason that is deliberately long so that it has to be cut at one hundred characters when sampled, and then some more",
    "timeout talking to the cluster",
];

/// One generated remediation, as the test knows it.
#[derive(Debug, Clone)]
pub struct Truth {
    pub name: String,
    pub namespace: String,
    pub fingerprint: String,
    pub start: DateTime<Utc>,
    /// `None` while in progress.
    pub outcome: Option<&'static str>,
    pub duration_us: i64,
    pub failure_phase: Option<&'static str>,
    pub reason: Option<&'static str>,
}

/// The fixed base of the data: well in the past, so validation's clock does not matter.
pub fn base() -> DateTime<Utc> {
    "2026-11-01T00:00:00Z".parse().expect("time")
}

/// `count` remediations over ten days, deterministic for `seed`.
pub fn generate(seed: u64, count: usize) -> Vec<Truth> {
    let mut rng = StdRng::seed_from_u64(seed);
    let fingerprints: Vec<String> = (0..30)
        .map(|i| format!("fp-{i:02}"))
        .chain([HOSTILE_FINGERPRINT.to_owned()])
        .collect();
    let step = Duration::minutes(10 * 24 * 60) / i32::try_from(count).expect("small");
    (0..count)
        .map(|i| {
            let start = base()
                + step * i32::try_from(i).expect("small")
                + Duration::microseconds(rng.random_range(0..step.num_microseconds().unwrap() / 2));
            let outcome = match rng.random_range(0..100) {
                0..=64 => Some("completed"),
                65..=84 => Some("failed"),
                85..=92 => Some("timeout"),
                _ => None,
            };
            let failure_phase = match outcome {
                Some("failed") => [
                    Some("processing"),
                    Some("analyzing"),
                    Some("executing"),
                    None,
                ][rng.random_range(0..4)],
                Some("timeout") => Some(["analyzing", "executing"][rng.random_range(0..2)]),
                _ => None,
            };
            Truth {
                name: format!("rr-{i:04}"),
                namespace: ["team-a", "team-b", "team-c"][rng.random_range(0..3)].to_owned(),
                fingerprint: fingerprints[rng.random_range(0..fingerprints.len())].clone(),
                start,
                outcome,
                duration_us: rng.random_range(500..7_200_000_000),
                failure_phase,
                reason: (outcome == Some("failed"))
                    .then(|| REASONS[rng.random_range(0..REASONS.len())]),
            }
        })
        .collect()
}

/// The records of each remediation: `pending`, then its terminal record.
pub fn records(truths: &[Truth]) -> Vec<NewAudit> {
    let mut out = Vec::new();
    for t in truths {
        let base = json!({
            "namespace": t.namespace, "remediation_name": t.name,
            "alert_fingerprint": t.fingerprint, "start_time": t.start.to_rfc3339(),
        });
        let mut pending = base.clone();
        pending["overall_phase"] = json!("pending");
        pending["event_time"] = json!(t.start.to_rfc3339());
        out.push(record(pending));
        if let Some(outcome) = t.outcome {
            let end = (t.start + Duration::microseconds(t.duration_us)).to_rfc3339();
            let mut done = base;
            done["overall_phase"] = json!(outcome);
            done["event_time"] = json!(end);
            done["completion_time"] = json!(end);
            match outcome {
                "failed" => {
                    done["failure_phase"] = json!(t.failure_phase);
                    done["failure_reason"] = json!(t.reason);
                }
                "timeout" => {
                    done["timeout_phase"] = json!(t.failure_phase);
                    done["timeout_time"] = json!(end);
                }
                _ => {}
            }
            out.push(record(done));
        }
    }
    out
}

/// Stores the records in shuffled batches, as a busy publisher would, and
/// waits for their projection.
pub async fn load(store: &dyn Store, truths: &[Truth]) {
    let mut all = records(truths);
    all.shuffle(&mut StdRng::seed_from_u64(7));
    for batch in all.chunks(97) {
        store.insert(batch).await.expect("insert");
    }
    // Callers read the tables directly too, not only through the store.
    store.settle().await.expect("settle");
}

fn selected<'a>(truths: &'a [Truth], q: &AnalyticsQuery) -> Vec<&'a Truth> {
    truths
        .iter()
        .filter(|t| t.start >= q.window.since && t.start < q.window.until)
        .filter(|t| q.namespace.as_ref().is_none_or(|n| *n == t.namespace))
        .filter(|t| {
            q.alert_fingerprint
                .as_ref()
                .is_none_or(|f| *f == t.fingerprint)
        })
        .collect()
}

fn window(since: &str, until: &str, exact: bool) -> Window {
    Window::new(
        since.parse().expect("time"),
        until.parse().expect("time"),
        exact,
    )
    .expect("window")
}

/// The questions asked of every data set: aligned to days, to hours, exact,
/// by namespace, by (hostile) fingerprint, an empty window and one with only
/// remediations in progress.
pub fn questions(truths: &[Truth]) -> Vec<AnalyticsQuery> {
    let last = truths.iter().map(|t| t.start).max().expect("data");
    let running = truths
        .iter()
        .filter(|t| t.outcome.is_none())
        .map(|t| t.start)
        .next()
        .expect("one in progress");
    let mut qs = vec![
        AnalyticsQuery::new(window(
            "2026-11-02T05:00:00Z",
            "2026-11-09T05:00:00Z",
            false,
        )),
        AnalyticsQuery::new(window(
            "2026-11-03T10:20:00Z",
            "2026-11-04T06:40:00Z",
            false,
        )),
        AnalyticsQuery::new(window("2026-11-03T10:20:00Z", "2026-11-09T06:40:00Z", true)),
        AnalyticsQuery::new(window(
            "2026-10-01T00:00:00Z",
            "2026-10-05T00:00:00Z",
            false,
        )),
        AnalyticsQuery::new(
            Window::new(running, running + Duration::microseconds(1), true).expect("window"),
        ),
    ];
    let mut by_ns = AnalyticsQuery::new(window(
        "2026-11-01T00:00:00Z",
        last.to_rfc3339().as_str(),
        false,
    ));
    by_ns.namespace = Some("team-b".into());
    let mut by_ns_hours = AnalyticsQuery::new(window(
        "2026-11-05T01:00:00Z",
        "2026-11-05T20:00:00Z",
        false,
    ));
    by_ns_hours.namespace = Some("team-a".into());
    let mut by_fp = AnalyticsQuery::new(window(
        "2026-11-01T00:00:00Z",
        "2026-11-12T00:00:00Z",
        false,
    ));
    by_fp.alert_fingerprint = Some(HOSTILE_FINGERPRINT.into());
    qs.extend([by_ns, by_ns_hours, by_fp]);
    for q in &mut qs {
        q.limit = 7;
        q.bucket = Some(if q.window.until - q.window.since >= Duration::days(2) {
            Duration::days(1)
        } else {
            Duration::hours(3)
        });
    }
    qs
}

async fn check_success_rate(store: &dyn Store, truths: &[Truth], q: &AnalyticsQuery) {
    let report = store.success_rate(q).await.expect("success rate");
    let rows = selected(truths, q);
    let count = |f: &dyn Fn(&Truth) -> bool| rows.iter().filter(|t| f(t)).count() as u64;
    let totals = report.totals;
    assert_eq!(totals.started, rows.len() as u64, "{q:?}");
    assert_eq!(totals.in_progress, count(&|t| t.outcome.is_none()));
    assert_eq!(totals.completed, count(&|t| t.outcome == Some("completed")));
    assert_eq!(totals.failed, count(&|t| t.outcome == Some("failed")));
    assert_eq!(totals.timed_out, count(&|t| t.outcome == Some("timeout")));
    let finished = totals.completed + totals.failed + totals.timed_out;
    assert_eq!(totals.finished, finished);
    assert_eq!(
        totals.success_rate,
        (finished > 0)
            .then(|| remaudit_model::approx_f64(totals.completed)
                / remaudit_model::approx_f64(finished))
    );
    assert_eq!(report.query.window, q.window);
    // The series partitions the window and its buckets add up to the totals.
    let series = &report.series;
    assert_eq!(series.first().map(|p| p.since), Some(q.window.since));
    assert_eq!(series.last().map(|p| p.until), Some(q.window.until));
    for pair in series.windows(2) {
        assert_eq!(pair[0].until, pair[1].since);
    }
    for point in series {
        let inside = rows
            .iter()
            .filter(|t| t.start >= point.since && t.start < point.until)
            .count() as u64;
        assert_eq!(point.counts.started, inside, "bucket {point:?}");
    }
}

async fn check_durations(store: &dyn Store, truths: &[Truth], q: &AnalyticsQuery) {
    let report = store.durations(q).await.expect("durations");
    let rows = selected(truths, q);
    let mut expected: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for t in rows.iter().filter(|t| t.outcome.is_some()) {
        expected
            .entry(t.outcome.expect("finished").to_owned())
            .or_default()
            .push(t.duration_us);
        expected
            .entry("all".to_owned())
            .or_default()
            .push(t.duration_us);
    }
    let got: BTreeSet<&str> = report
        .phases
        .iter()
        .map(|p| p.final_phase.as_str())
        .collect();
    assert_eq!(got, expected.keys().map(String::as_str).collect(), "{q:?}");
    assert_eq!(
        report.phases.last().map(|p| p.final_phase.as_str()),
        expected.contains_key("all").then_some("all")
    );
    let error = if q.window.aligned_to == remaudit_model::analytics::Alignment::None {
        1e-9
    } else {
        RELATIVE_ERROR * (1.0 + 1e-9)
    };
    assert_eq!(report.relative_error > 0.0, error > 1e-9);
    for p in &report.phases {
        let mut values = expected[&p.final_phase].clone();
        values.sort_unstable();
        let seconds: Vec<f64> = values
            .iter()
            .map(|&v| remaudit_model::approx_f64(v) / 1e6)
            .collect();
        assert_eq!(p.count, values.len() as u64);
        let mean = values
            .iter()
            .map(|&v| remaudit_model::approx_f64(v))
            .sum::<f64>()
            / remaudit_model::approx_f64(values.len())
            / 1e6;
        assert!(
            (p.avg_seconds - mean).abs() <= 1e-6 * mean.max(1.0),
            "{}: mean {} vs {mean}",
            p.final_phase,
            p.avg_seconds
        );
        for (q_, got) in [
            (0.5, p.p50_seconds),
            (0.95, p.p95_seconds),
            (0.99, p.p99_seconds),
        ] {
            let exact = percentile_cont(&seconds, q_).expect("values");
            assert!(
                (got - exact).abs() <= error * exact + 1e-6,
                "{} p{q_}: {got} vs exact {exact}",
                p.final_phase
            );
        }
    }
}

async fn check_lists(store: &dyn Store, truths: &[Truth], q: &AnalyticsQuery) {
    let rows = selected(truths, q);
    let mut slow: Vec<&&Truth> = rows.iter().filter(|t| t.outcome.is_some()).collect();
    slow.sort_by_key(|t| (std::cmp::Reverse(t.duration_us), std::cmp::Reverse(t.start)));
    let got = store.slowest(q).await.expect("slowest");
    let names: Vec<&str> = got
        .items
        .iter()
        .map(|b| b.remediation_name.as_str())
        .collect();
    let want: Vec<&str> = slow
        .iter()
        .take(q.limit as usize)
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(names, want, "slowest {q:?}");
    for b in &got.items {
        let t = truths
            .iter()
            .find(|t| t.name == b.remediation_name)
            .expect("known");
        assert_eq!(
            b.duration_seconds,
            Some(remaudit_model::approx_f64(t.duration_us) / 1e6)
        );
        assert_eq!(
            b.timeline,
            format!("/api/v1/audit/remediation-orchestration/{}", b.id)
        );
    }

    let fp = q
        .alert_fingerprint
        .clone()
        .unwrap_or_else(|| "fp-03".to_owned());
    let pq = AnalyticsQuery {
        alert_fingerprint: Some(fp.clone()),
        ..q.clone()
    };
    let mut attempts = selected(truths, &pq);
    attempts.sort_by_key(|t| std::cmp::Reverse(t.start));
    let got = store.postmortem(&pq).await.expect("postmortem");
    let names: Vec<&str> = got
        .items
        .iter()
        .map(|b| b.remediation_name.as_str())
        .collect();
    let want: Vec<&str> = attempts
        .iter()
        .take(q.limit as usize)
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(names, want, "postmortem {pq:?}");
    for b in &got.items {
        let t = truths
            .iter()
            .find(|t| t.name == b.remediation_name)
            .expect("known");
        assert_eq!(b.alert_fingerprint, fp);
        assert_eq!(b.failure_reason.as_deref(), t.reason);
        assert_eq!(b.completion_time.is_some(), t.outcome.is_some());
    }
}

async fn check_failures(store: &dyn Store, truths: &[Truth], q: &AnalyticsQuery) {
    let rows = selected(truths, q);
    let mut groups: BTreeMap<(String, Option<String>), Vec<&Truth>> = BTreeMap::new();
    for t in rows
        .iter()
        .filter(|t| matches!(t.outcome, Some("failed" | "timeout")))
    {
        groups
            .entry((
                t.outcome.expect("finished").to_owned(),
                t.failure_phase.map(str::to_owned),
            ))
            .or_default()
            .push(t);
    }
    let got = store.failures(q).await.expect("failures");
    let mut want: Vec<_> = groups.iter().collect();
    want.sort_by_key(|((o, p), ts)| {
        (
            std::cmp::Reverse(ts.len()),
            o.clone(),
            p.clone().unwrap_or_default(),
        )
    });
    want.truncate(q.limit as usize);
    assert_eq!(got.items.len(), want.len(), "{q:?}");
    for (g, ((outcome, phase), ts)) in got.items.iter().zip(want) {
        assert_eq!(
            (&g.outcome, &g.phase, g.count),
            (outcome, phase, ts.len() as u64)
        );
        let unique: BTreeSet<&str> = ts.iter().map(|t| t.fingerprint.as_str()).collect();
        assert_eq!(g.unique_alerts, unique.len() as u64);
        let mut newest: Vec<&&Truth> = ts.iter().collect();
        newest.sort_by_key(|t| std::cmp::Reverse(t.start));
        let mut samples: Vec<String> = Vec::new();
        for r in newest.iter().filter_map(|t| t.reason) {
            let cut: String = r.chars().take(100).collect();
            if samples.len() < 5 && !samples.contains(&cut) {
                samples.push(cut);
            }
        }
        assert_eq!(g.sample_reasons, samples);
    }
}

async fn check_retries(store: &dyn Store, truths: &[Truth], q: &AnalyticsQuery) {
    let rows = selected(truths, q);
    let mut by_fp: BTreeMap<&str, Vec<&Truth>> = BTreeMap::new();
    for t in &rows {
        by_fp.entry(t.fingerprint.as_str()).or_default().push(t);
    }
    let got = store.retries(q).await.expect("retries");
    assert_eq!(got.alerts, by_fp.len() as u64, "{q:?}");
    assert_eq!(
        got.alerts_retried,
        by_fp.values().filter(|v| v.len() > 1).count() as u64
    );
    assert_eq!(got.attempts, rows.len() as u64);
    let mut want: Vec<(&str, &Vec<&Truth>)> = by_fp
        .iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(k, v)| (*k, v))
        .collect();
    let last = |v: &Vec<&Truth>| v.iter().map(|t| t.start).max().expect("some");
    want.sort_by_key(|(fp, v)| {
        (
            std::cmp::Reverse(v.len()),
            std::cmp::Reverse(last(v)),
            fp.to_string(),
        )
    });
    want.truncate(q.limit as usize);
    assert_eq!(got.items.len(), want.len());
    for (g, (fp, v)) in got.items.iter().zip(want) {
        assert_eq!(g.alert_fingerprint, fp);
        assert_eq!(g.attempts, v.len() as u64);
        let n = |o: &str| v.iter().filter(|t| t.outcome == Some(o)).count() as u64;
        assert_eq!(
            (g.completed, g.failed, g.timed_out),
            (n("completed"), n("failed"), n("timeout"))
        );
        assert_eq!(
            g.in_progress,
            v.iter().filter(|t| t.outcome.is_none()).count() as u64
        );
        assert_eq!(g.last_attempt, last(v));
        assert_eq!(g.eventually_successful, n("completed") > 0);
        let mut ordered = v.clone();
        ordered.sort_by_key(|t| t.start);
        let phases: Vec<&str> = ordered
            .iter()
            .map(|t| t.outcome.unwrap_or("pending"))
            .collect();
        assert_eq!(g.phase_progression, phases);
    }
}

/// Every endpoint's answer to every question matches the independent truth.
pub async fn analytics_answers_match_the_generated_truth(store: Arc<dyn Store>) {
    let truths = generate(42, 900);
    load(&*store, &truths).await;
    for q in questions(&truths) {
        check_success_rate(&*store, &truths, &q).await;
        check_durations(&*store, &truths, &q).await;
        check_lists(&*store, &truths, &q).await;
        check_failures(&*store, &truths, &q).await;
        check_retries(&*store, &truths, &q).await;
    }
}

/// An empty store answers every question with zeros and empty lists.
pub async fn analytics_of_an_empty_store_are_empty(store: Arc<dyn Store>) {
    let q = AnalyticsQuery::new(window(
        "2026-11-02T00:00:00Z",
        "2026-11-09T00:00:00Z",
        false,
    ));
    let rate = store.success_rate(&q).await.expect("rate");
    assert_eq!((rate.totals.started, rate.totals.success_rate), (0, None));
    assert!(
        store
            .durations(&q)
            .await
            .expect("durations")
            .phases
            .is_empty()
    );
    assert!(store.slowest(&q).await.expect("slowest").items.is_empty());
    assert!(store.failures(&q).await.expect("failures").items.is_empty());
    let retries = store.retries(&q).await.expect("retries");
    assert_eq!(
        (retries.alerts, retries.attempts, retries.items.len()),
        (0, 0, 0)
    );
}

/// Reads go through a pool of their own, so that slow analytics never hold
/// the connections writes need, and PostgreSQL stops a read that runs too long.
mod isolation {
    use std::time::{Duration, Instant};

    use remaudit_model::analytics::Window;
    use remaudit_store::{
        AnalyticsQuery, AnalyticsStore as _, AuditStore as _, ListQuery, PgStore, PoolSettings,
        SqliteStore, Store,
    };
    use remaudit_testkit::{PgDb, SqliteDb, wait_for};

    use super::{generate, records};

    /// A write pool of two and a read pool of one, waiting one second for a connection.
    fn tight() -> PoolSettings {
        PoolSettings {
            max_connections: 2,
            acquire_timeout: Duration::from_secs(1),
            read_max_connections: 1,
            ..PoolSettings::default()
        }
    }

    fn listing() -> ListQuery {
        ListQuery {
            limit: 10,
            ..ListQuery::default()
        }
    }

    /// Stores a batch, which must be answered well inside `limit`.
    async fn insert_promptly(store: &dyn Store, limit: Duration) {
        let batch = records(&generate(3, 20));
        let started = Instant::now();
        let outcomes = tokio::time::timeout(limit, store.insert(&batch))
            .await
            .expect("the insert waited for a connection that reads hold")
            .expect("insert");
        assert_eq!(outcomes.len(), batch.len());
        eprintln!("insert with the read pool held: {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn postgres_ingest_goes_on_while_slow_reads_hold_every_read_connection() {
        let db = PgDb::create().await;
        let store = PgStore::connect(db.url(), tight()).await.expect("store");
        // A slow analytics statement holds the read pool's only connection.
        let mut held = store.read_pool().acquire().await.expect("read connection");
        let slow = tokio::spawn(async move {
            let _ = sqlx::query("SELECT pg_sleep(20)").execute(&mut *held).await;
        });
        let admin = db.pool().await;
        wait_for("the slow read to run", Duration::from_secs(10), || async {
            let running: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(20)' AND state = 'active'",
            )
            .fetch_one(&admin)
            .await
            .expect("activity");
            (running == 1).then_some(())
        })
        .await;
        // Reads are capped: the next one waits, then counts the database as busy.
        let err = store.list(&listing()).await.expect_err("read pool is full");
        assert!(err.is_unavailable(), "{err}");
        // Writes have their own connections.
        insert_promptly(&store, Duration::from_secs(10)).await;
        slow.abort();
    }

    #[tokio::test]
    async fn sqlite_ingest_goes_on_while_a_read_holds_every_read_connection() {
        let db = SqliteDb::create();
        let store = SqliteStore::connect(&db.url(), tight())
            .await
            .expect("store");
        // A long read transaction holds the read pool's only connection.
        let mut held = store.read_pool().acquire().await.expect("read connection");
        sqlx::query("BEGIN")
            .execute(&mut *held)
            .await
            .expect("begin");
        let _: i64 = sqlx::query_scalar("SELECT count(*) FROM remediation_audit")
            .fetch_one(&mut *held)
            .await
            .expect("read");
        let err = store.list(&listing()).await.expect_err("read pool is full");
        assert!(err.is_unavailable(), "{err}");
        insert_promptly(&store, Duration::from_secs(10)).await;
        // The read connections cannot write.
        let write = sqlx::query("DELETE FROM remediation_audit")
            .execute(&mut *held)
            .await;
        assert!(write.is_err(), "a read connection wrote");
        sqlx::query("ROLLBACK")
            .execute(&mut *held)
            .await
            .expect("rollback");
        drop(held);
        assert_eq!(store.list(&listing()).await.expect("list").items.len(), 10);
    }

    /// Finished remediations straight into the table (no rollups: only exact
    /// answers read them), one a second from 2026-11-01.
    async fn fill(pool: &sqlx::PgPool, rows: i64) {
        sqlx::query(
            "INSERT INTO remediation_audit (alert_fingerprint, remediation_name, overall_phase, \
               start_time, completion_time, phase_rank, event_id, event_time, duration_us, duration_bin) \
             SELECT 'fp-' || (g % 50), 'bulk-' || g, 'completed', \
               TIMESTAMPTZ '2026-11-01T00:00:00Z' + g * INTERVAL '1 second', \
               TIMESTAMPTZ '2026-11-01T00:00:00Z' + g * INTERVAL '1 second' + (g * 7919 % 3600000) * INTERVAL '1 millisecond', \
               9, gen_random_uuid(), TIMESTAMPTZ '2026-11-01T00:00:00Z' + g * INTERVAL '1 second', \
               (g * 7919 % 3600000) * 1000, remaudit_duration_bin((g * 7919 % 3600000) * 1000) \
             FROM generate_series(1, $1) AS g",
        )
        .bind(rows)
        .execute(pool)
        .await
        .expect("fill");
    }

    fn exact_week() -> AnalyticsQuery {
        AnalyticsQuery::new(
            Window::new(
                "2026-11-01T00:00:00Z".parse().expect("time"),
                "2026-11-08T00:00:00Z".parse().expect("time"),
                true,
            )
            .expect("window"),
        )
    }

    #[tokio::test]
    async fn postgres_cancels_an_analytics_query_past_its_statement_timeout() {
        const ROWS: i64 = 200_000;
        let db = PgDb::create().await;
        let patient = PgStore::connect(
            db.url(),
            PoolSettings {
                read_statement_timeout: None,
                ..PoolSettings::default()
            },
        )
        .await
        .expect("store");
        fill(patient.pool(), ROWS).await;
        let started = Instant::now();
        let answer = patient.durations(&exact_week()).await.expect("no limit");
        eprintln!(
            "exact durations over {ROWS} rows without a limit: {:?}",
            started.elapsed()
        );
        assert_eq!(answer.phases.last().map(|p| p.count), Some(ROWS as u64));

        let hasty = PgStore::connect(
            db.url(),
            PoolSettings {
                read_statement_timeout: Some(Duration::from_millis(5)),
                ..PoolSettings::default()
            },
        )
        .await
        .expect("store");
        let started = Instant::now();
        let err = hasty
            .durations(&exact_week())
            .await
            .expect_err("past the statement timeout");
        eprintln!("cancelled after {:?}", started.elapsed());
        assert!(err.is_timeout(), "{err}");
        // The write pool has no such limit.
        insert_promptly(&hasty, Duration::from_secs(30)).await;
    }
}
