//! f: ingest latency, `store.insert` calls by a few tasks at the current
//! time, first alone, then while the retention job retires a week; when
//! the job cannot detach the week under ingest, the week is detached by
//! hand with ingest stopped and the rest of the job measured under ingest.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike as _, SecondsFormat, TimeDelta, Timelike as _, Utc};
use remaudit_model::NewAudit;
use remaudit_retention::Settings;
use remaudit_store::{AuditStore as _, HealthStore as _, PgStore, RetentionStore as _};
use remaudit_testkit::bench::{
    self, StoreOptions, percentile_f64, sorted_f64, surprise, thousands,
};
use serde_json::json;
use sqlx::AssertSqlSafe;

use crate::measure::{Checkpointer, INGEST_APP, Retirer, Run, Sampler, busy};
use crate::report::{print_cost, print_report};
use crate::{Options, as_i64, day, events_week, summary_week};

/// f: ingest latency, alone and while `run_once` retires week `w2`; returns
/// the summary's lines. Without the ingest step (`--no-ingest`) it retires
/// the week anyway, so that d finds the same state.
pub(crate) async fn step(
    options: &Options,
    url: &str,
    retirer: &Retirer<'_>,
    su: &mut Checkpointer,
    w2: DateTime<Utc>,
    age: TimeDelta,
) -> anyhow::Result<Vec<String>> {
    let pool = retirer.pool;
    let clock_f = w2 + TimeDelta::weeks(1) + age;
    let mut ingest_lines = Vec::new();
    if options.ingest {
        let ingest_store = Arc::new(
            bench::pg_store(
                url,
                StoreOptions {
                    application: Some(INGEST_APP),
                    max_connections: Some(u32::try_from(options.ingest_tasks + 2)?),
                    acquire_timeout: Some(Duration::from_mins(2)),
                    ..StoreOptions::default()
                },
            )
            .await?,
        );
        let now = Utc::now();
        ingest_store
            .ensure_partitions(now - TimeDelta::weeks(1), now + TimeDelta::weeks(2))
            .await?;
        let ingest_env = IngestEnv {
            store: ingest_store.clone(),
            spec: IngestSpec {
                tasks: options.ingest_tasks,
                batch: options.ingest_batch,
                alerts: options.alerts,
            },
            window: Duration::from_secs(options.ingest_seconds),
            run: Utc::now().format("%Y%m%d%H%M%S").to_string(),
        };
        println!();
        println!(
            "f. ingest: {} tasks, store.insert of {} records a call (half start remediations, half finish them), \
             start_time now; WAL below includes the ingest's ({})",
            options.ingest_tasks,
            options.ingest_batch,
            busy(pool).await
        );
        let alone = ingest_env.alone("a").await?;
        println!("  {}", alone.line("without retention", None));
        ingest_lines.push(alone.line("without retention", None));

        su.checkpoint().await;
        println!(
            "  run_once at {} (week {} wholly due), 2 s into a window of ingest:",
            clock_f.to_rfc3339_opts(SecondsFormat::Secs, true),
            day(w2)
        );
        let (during, run_f, span) = ingest_env.with_job(retirer, clock_f, "b").await?;
        print_report(&run_f.report());
        print_cost(
            "run_once, one week, under ingest",
            &run_rows(&run_f),
            run_f.cost,
        );
        ingest_lines.extend(ingest_env.compare(&alone, &during, span, "with run_once"));
        if run_f.report.is_err() {
            // The rest of the job (archive copy, files, drop) under ingest:
            // detach the week by hand while nothing writes, as the job would;
            // the next run archives the detached week first.
            let (sw, ew) = (summary_week(w2), events_week(w2));
            let t = Instant::now();
            sqlx::raw_sql(AssertSqlSafe(format!(
                "ALTER TABLE remediation_audit DETACH PARTITION {sw}; \
                 ALTER TABLE remediation_audit_events DETACH PARTITION {ew};"
            )))
            .execute(pool)
            .await?;
            println!(
                "  the job could not detach the week under ingest; detached it by hand with no ingest ({:.3} s), \
                 then run_once archives and drops the detached week under ingest:",
                t.elapsed().as_secs_f64()
            );
            su.checkpoint().await;
            let (during, run, span) = ingest_env.with_job(retirer, clock_f, "c").await?;
            print_report(&run.report());
            print_cost(
                "run_once, one detached week, under ingest",
                &run_rows(&run),
                run.cost,
            );
            ingest_lines.extend(ingest_env.compare(
                &alone,
                &during,
                span,
                "with run_once, archive part",
            ));
        }
        ingest_store.close().await;
    } else {
        // Without the ingest step, retire W2 anyway so that d finds the same state.
        retirer.run(&Settings::default(), clock_f).await?;
    }
    Ok(ingest_lines)
}

/// The calls of one ingest window.
struct Ingest {
    /// (start, end) of each call, seconds after the window began, and whether it succeeded.
    calls: Vec<(f64, f64, bool)>,
    errors: Vec<String>,
    records: usize,
    wall: f64,
}

impl Ingest {
    fn latencies_ms(&self, within: Option<(f64, f64)>) -> Vec<f64> {
        sorted_f64(
            self.calls
                .iter()
                .filter(|(s, e, _)| within.is_none_or(|(from, to)| *e >= from && *s <= to))
                .map(|(s, e, _)| (e - s) * 1e3)
                .collect(),
        )
    }

    fn line(&self, what: &str, within: Option<(f64, f64)>) -> String {
        let l = self.latencies_ms(within);
        let rate = remaudit_model::approx_f64(self.records) / self.wall;
        format!(
            "{what:<40} calls {:>6}  p50 {:>8.1} ms  p99 {:>8.1} ms  max {:>8.1} ms  ({rate:>6.0} records/s over {:.1} s, {} errors)",
            l.len(),
            percentile_f64(&l, 0.5),
            percentile_f64(&l, 0.99),
            l.last().copied().unwrap_or(f64::NAN),
            self.wall,
            self.errors.len()
        )
    }
}

/// A record as the orchestrator sends it, through the model's validation.
fn ingest_record(
    name: &str,
    fingerprint: &str,
    namespace: &str,
    phase: &str,
    start: DateTime<Utc>,
    now: DateTime<Utc>,
) -> NewAudit {
    let mut r = json!({
        "alert_fingerprint": fingerprint,
        "remediation_name": name,
        "namespace": namespace,
        "overall_phase": phase,
        "start_time": start.to_rfc3339(),
        "event_time": now.to_rfc3339(),
        "duplicate_count": 0,
        "remediation_processing_name": format!("{name}-rp"),
    });
    match phase {
        "completed" => {
            r["completion_time"] = json!(now.to_rfc3339());
            r["workflow_execution_name"] = json!(format!("{name}-we"));
        }
        "failed" => {
            r["completion_time"] = json!(now.to_rfc3339());
            r["failure_phase"] = json!("executing");
            r["failure_reason"] = json!("kubernetes job exited with code 137 (OOMKilled)");
        }
        _ => {}
    }
    remaudit_testkit::record(r)
}

/// How the ingest step writes.
#[derive(Clone, Copy)]
struct IngestSpec {
    tasks: usize,
    batch: usize,
    alerts: u32,
}

/// Ingests with `spec.tasks` tasks until `stop`; half of each batch starts new
/// remediations, half finishes those the previous batch started.
async fn ingest(
    store: Arc<PgStore>,
    spec: IngestSpec,
    stop: Arc<AtomicBool>,
    run: String,
    started: Instant,
) -> Ingest {
    let tasks: Vec<_> = (0..spec.tasks)
        .map(|task| {
            let (store, stop, run) = (store.clone(), stop.clone(), run.clone());
            let (batch, alerts) = (spec.batch, spec.alerts);
            tokio::spawn(async move {
                let mut calls = Vec::new();
                let mut errors = Vec::new();
                let mut records = 0;
                let mut open: Vec<(String, String, String, DateTime<Utc>)> = Vec::new();
                let mut n = 0_u64;
                while !stop.load(Ordering::Relaxed) {
                    let now = Utc::now();
                    let mut recs = Vec::with_capacity(batch);
                    for (i, (name, fp, ns, start)) in open.drain(..).enumerate() {
                        let phase = if i % 8 == 7 { "failed" } else { "completed" };
                        recs.push(ingest_record(&name, &fp, &ns, phase, start, now));
                    }
                    while recs.len() < batch {
                        n += 1;
                        let alert = (n * 7919 + task as u64 * 104_729) % u64::from(alerts);
                        let name = format!("bench-{run}-{task}-{n}");
                        let fp = format!("ingest-alert-{alert:05}");
                        let ns = format!("team-{:02}", 1 + alert % 20);
                        let start = now - TimeDelta::milliseconds(500);
                        recs.push(ingest_record(&name, &fp, &ns, "processing", start, now));
                        if open.len() < batch / 2 {
                            open.push((name, fp, ns, start));
                        }
                    }
                    let t0 = started.elapsed().as_secs_f64();
                    let result = store.insert(&recs).await;
                    let t1 = started.elapsed().as_secs_f64();
                    calls.push((t0, t1, result.is_ok()));
                    match result {
                        Ok(_) => records += recs.len(),
                        Err(e) => {
                            errors.push(format!("{t0:.1} s: {e}"));
                            open.clear();
                        }
                    }
                }
                (calls, errors, records)
            })
        })
        .collect();
    let mut out = Ingest {
        calls: Vec::new(),
        errors: Vec::new(),
        records: 0,
        wall: 0.0,
    };
    for task in tasks {
        if let Ok((calls, errors, records)) = task.await {
            out.calls.extend(calls);
            out.errors.extend(errors);
            out.records += records;
        }
    }
    out.wall = started.elapsed().as_secs_f64();
    out
}

/// Where the ingest step writes, and for how long.
struct IngestEnv {
    store: Arc<PgStore>,
    spec: IngestSpec,
    window: Duration,
    run: String,
}

impl IngestEnv {
    /// Ingest alone for the window.
    async fn alone(&self, tag: &str) -> anyhow::Result<Ingest> {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(ingest(
            self.store.clone(),
            self.spec,
            stop.clone(),
            format!("{}{tag}", self.run),
            Instant::now(),
        ));
        tokio::time::sleep(self.window).await;
        stop.store(true, Ordering::Relaxed);
        let ingest = task.await?;
        self.analyze().await?;
        Ok(ingest)
    }

    /// Analyzes the partitions ingest writes to, as autovacuum would (it is
    /// off on this cluster, and a week planned as empty is scanned whole).
    async fn analyze(&self) -> anyhow::Result<()> {
        let now = Utc::now();
        let week = now - TimeDelta::days(i64::from(now.weekday().num_days_from_monday()));
        let week = week - TimeDelta::seconds(i64::from(week.num_seconds_from_midnight()));
        let week = week.with_nanosecond(0).unwrap_or(week);
        sqlx::raw_sql(AssertSqlSafe(format!(
            "ANALYZE {}, {}",
            summary_week(week),
            events_week(week)
        )))
        .execute(self.store.pool())
        .await?;
        Ok(())
    }

    /// Ingest, the job 2 s later, ingest on until the job is done and the
    /// window is over; returns the calls, the run and when it ran.
    async fn with_job(
        &self,
        retirer: &Retirer<'_>,
        clock: DateTime<Utc>,
        tag: &str,
    ) -> anyhow::Result<(Ingest, Run, (f64, f64))> {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let task = tokio::spawn(ingest(
            self.store.clone(),
            self.spec,
            stop.clone(),
            format!("{}{tag}", self.run),
            started,
        ));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let sampler = Sampler::start(retirer.pool.clone(), &[INGEST_APP]);
        let from = started.elapsed().as_secs_f64();
        let run = retirer.measured(&Settings::default(), clock).await?;
        let to = started.elapsed().as_secs_f64();
        if started.elapsed() < self.window {
            tokio::time::sleep(self.window.checked_sub(started.elapsed()).unwrap()).await;
        }
        stop.store(true, Ordering::Relaxed);
        let during = task.await?;
        sampler.finish(6).await;
        self.analyze().await?;
        Ok((during, run, (from, to)))
    }

    /// Prints (and returns) the lines of a window with the job beside the one without.
    #[allow(
        clippy::unused_self,
        reason = "reads as a step of the run it reports on"
    )]
    fn compare(
        &self,
        alone: &Ingest,
        during: &Ingest,
        span: (f64, f64),
        what: &str,
    ) -> Vec<String> {
        let whole = during.line(&format!("{what} (whole window)"), None);
        let overlap = during.line(
            &format!("  calls overlapping it ({:.0}-{:.0} s)", span.0, span.1),
            Some(span),
        );
        println!("  {whole}");
        println!("  {overlap}");
        for e in during.errors.iter().take(5) {
            println!("    insert error: {e}");
        }
        if !during.errors.is_empty() {
            // Retention must never cost ingest a batch (a lock wait past its
            // timeout, a deadlock victim): any failed insert fails the run.
            surprise(format_args!(
                "{} inserts failed while the job ran",
                during.errors.len()
            ));
        }
        let a = alone.latencies_ms(None);
        let b = during.latencies_ms(None);
        let o = during.latencies_ms(Some(span));
        let ratio = format!(
            "  ratio to without: p50 {:.2}x, p99 {:.2}x, max {:.2}x (calls overlapping it: p50 {:.2}x, p99 {:.2}x)",
            percentile_f64(&b, 0.5) / percentile_f64(&a, 0.5),
            percentile_f64(&b, 0.99) / percentile_f64(&a, 0.99),
            b.last().unwrap_or(&f64::NAN) / a.last().unwrap_or(&f64::NAN),
            percentile_f64(&o, 0.5) / percentile_f64(&a, 0.5),
            percentile_f64(&o, 0.99) / percentile_f64(&a, 0.99),
        );
        println!("  {ratio}");
        vec![whole, overlap, ratio]
    }
}

fn run_rows(run: &Run) -> String {
    let (r, e) = run
        .report
        .as_ref()
        .map_or((0, 0), |r| (r.remediations(), r.events()));
    format!(
        "{} remediations, {} events moved",
        thousands(as_i64(r)),
        thousands(as_i64(e))
    )
}
