//! Publisher figures: the cost of `publish()` on the caller's thread, with
//! the service reachable and with it down (every record spooled), and the
//! end-to-end rate from `publish()` to rows in PostgreSQL against posting the
//! same batches straight to the service in the same run.
//!
//! Each run checks that every record arrived exactly once (direct posts and
//! publisher alike: the timeline's rows and one summary row per remediation,
//! in the weekly partitions) and that, with the service down, every record
//! is left in the spool; a failed check prints `SURPRISE` and the run exits
//! non-zero.
//!
//! Run with `scripts/bench-publish [--smoke]` (it prepares PostgreSQL), or
//! `cargo bench -p remaudit-cli --bench publish -- [--smoke]`.
//! `BENCH_RECORDS` sets the count (100,000; 2,000 with `--smoke`); the
//! publisher's `REMAUDIT_*` variables tune it.

use std::time::{Duration, Instant};

use remaudit_client::{Publisher, PublisherSettings, with_identity};
use remaudit_model::RemediationOrchestrationAudit;
use remaudit_testkit::bench::{self, expect_eq, sized_knob};

fn records(run: &str, count: usize) -> Vec<RemediationOrchestrationAudit> {
    let phases = [
        "pending",
        "processing",
        "analyzing",
        "executing",
        "completed",
    ];
    let start = chrono::Utc::now() - chrono::Duration::hours(1);
    (0..count)
        .map(|i| {
            let remediation = i / phases.len();
            let mut r: RemediationOrchestrationAudit = serde_json::from_value(serde_json::json!({
                "alert_fingerprint": format!("alert-{:05}", remediation % 5000),
                "remediation_name": format!("{run}-{remediation:07}"),
                "namespace": "prod",
                "overall_phase": phases[i % phases.len()],
                "start_time": start.to_rfc3339(),
                "remediation_processing_name": format!("{run}-{remediation:07}-rp"),
                "ai_analysis_name": format!("{run}-{remediation:07}-ai"),
                "service_crd_statuses": {
                    "remediationProcessing": {"phase": "completed", "startTime": start.to_rfc3339(), "success": true},
                    "aiAnalysis": {"phase": "completed", "startTime": start.to_rfc3339(), "success": true},
                },
            }))
            .expect("record");
            r = with_identity(r);
            r
        })
        .collect()
}

/// Publishes every record, timing each call; returns the sorted timings and
/// the minor page faults the publishing thread took meanwhile (when Linux
/// tells them).
fn publish_all(
    publisher: &Publisher,
    records: Vec<RemediationOrchestrationAudit>,
) -> (Vec<Duration>, Option<u64>) {
    // Written through now, so that its pages' first-touch faults are not
    // counted as the publisher's.
    let mut timings = vec![Duration::MAX; records.len()];
    let faults_before = minor_faults();
    for (i, r) in records.into_iter().enumerate() {
        let t = Instant::now();
        let accepted = publisher.publish(r);
        timings[i] = t.elapsed();
        if let Err(e) = accepted {
            bench::surprise(format_args!("publish() of record {i} refused: {e}"));
        }
    }
    let faults = minor_faults()
        .zip(faults_before)
        .map(|(after, before)| after.saturating_sub(before));
    timings.sort();
    (timings, faults)
}

/// Minor page faults of the calling thread so far (`minflt` of
/// `/proc/thread-self/stat`), or `None` where that cannot be read. A fault
/// in `publish()` costs microseconds, so they are printed beside the
/// percentiles.
fn minor_faults() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // The fields after the command name, which may hold spaces and
    // parentheses: state, ppid, pgrp, session, tty_nr, tpgid, flags, minflt.
    let (_, fields) = stat.rsplit_once(')')?;
    fields.split_whitespace().nth(7)?.parse().ok()
}

/// Checks that `records` records of `records / 5` remediations arrived,
/// each once, in the weekly partitions.
async fn check_arrived(
    db: &remaudit_testkit::PgDb,
    path: &str,
    records: usize,
) -> anyhow::Result<()> {
    let pool = db.pool().await;
    bench::check_stored(&pool, path, records, records.div_ceil(5)).await?;
    pool.close().await;
    Ok(())
}

/// `remaudit serve` on a fresh database, as a child process.
async fn service(
    name: &str,
    http: &reqwest::Client,
) -> anyhow::Result<(remaudit_testkit::PgDb, bench::Service)> {
    let db = remaudit_testkit::PgDb::create().await;
    let args = ["--database-url".to_owned(), db.url().to_owned()];
    let service = bench::Service::start(name, &args, http, false).await?;
    Ok((db, service))
}

async fn bench() -> anyhow::Result<()> {
    let total = sized_knob("BENCH_RECORDS", 100_000, 2_000);
    println!(
        "publish: {total} records, default publisher settings, spool on local disk, PostgreSQL on loopback{}",
        bench::smoke_note()
    );

    // Baseline: the storage service's rate, as the ingest benchmark measures it:
    // the same batches of 500 posted straight to it by 4 concurrent senders.
    // The recorder `remaudit publish` installs, so that publish() records
    // its metrics as it does there.
    let _recorder = metrics_handle();
    let http = reqwest::Client::new();
    let (direct_db, direct) = service("direct posts", &http).await?;
    let direct_url = direct.base().to_owned();
    let bodies: Vec<Vec<u8>> = records("direct", total)
        .chunks(500)
        .map(|c| serde_json::to_vec(c).expect("json"))
        .collect();
    let queue = std::sync::Arc::new(std::sync::Mutex::new(bodies));
    let t = Instant::now();
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let (queue, http, url) = (queue.clone(), http.clone(), direct_url.clone());
            tokio::spawn(async move {
                loop {
                    let Some(body) = queue.lock().expect("queue").pop() else {
                        return;
                    };
                    let answer = http
                        .post(format!(
                            "{url}/api/v1/audit/remediation-orchestration/batch"
                        ))
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await;
                    match answer {
                        Ok(a) => {
                            expect_eq("direct post: status", &a.status().as_u16(), &200);
                        }
                        Err(e) => bench::surprise(format_args!("direct post: {e}")),
                    }
                }
            })
        })
        .collect();
    for s in senders {
        s.await?;
    }
    let direct_secs = t.elapsed().as_secs_f64();
    check_arrived(&direct_db, "direct posts", total).await?;
    direct.stop().await?;

    let (db, service) = service("publisher", &http).await?;
    let url = service.base().to_owned();

    // Through the publisher, service reachable.
    let spool = tempfile::tempdir()?;
    let publisher = Publisher::start(PublisherSettings {
        url: url.clone(),
        spool_dir: Some(spool.path().to_path_buf()),
        ..PublisherSettings::default()
    })?;
    let batch = records("published", total);
    let t = Instant::now();
    let (up, up_faults) = publish_all(&publisher, batch);
    publisher.flush().await;
    let e2e_secs = t.elapsed().as_secs_f64();
    publisher.shutdown(Duration::from_secs(5)).await;
    check_arrived(&db, "publisher", total).await?;

    // Service down: every record goes to the spool only.
    let down_spool = tempfile::tempdir()?;
    let down = Publisher::start(PublisherSettings {
        url: "http://127.0.0.1:9".to_owned(),
        spool_dir: Some(down_spool.path().to_path_buf()),
        ..PublisherSettings::default()
    })?;
    let (spooled, down_faults) = publish_all(&down, records("spooled", total));
    let report = down.shutdown(Duration::ZERO).await;
    expect_eq(
        "service down: records left in the spool",
        &report.left_in_spool,
        &u64::try_from(total)?,
    );
    service.stop().await?;

    for (name, timings, faults) in [
        ("reachable", &up, up_faults),
        ("down", &spooled, down_faults),
    ] {
        println!(
            "publish() with the service {name:<9}: p50 {:>6} ns  p99 {:>7} ns  p99.9 {:>8} ns  minor page faults {}",
            bench::percentile_ns(timings, 0.50),
            bench::percentile_ns(timings, 0.99),
            bench::percentile_ns(timings, 0.999),
            faults.map_or_else(|| "unknown".to_owned(), |f| f.to_string())
        );
    }
    let rate = |secs: f64| remaudit_model::approx_f64(total) / secs;
    println!(
        "storage service, batches of 500 by 4 senders: {:>8.0} records/s",
        rate(direct_secs)
    );
    println!(
        "publish() to rows in PostgreSQL:              {:>8.0} records/s",
        rate(e2e_secs)
    );
    println!(
        "ratio publisher/storage service: {:.2}",
        direct_secs / e2e_secs
    );
    bench::verdict("bench-publish")
}

fn main() -> anyhow::Result<()> {
    bench::block_on(bench())
}

/// The process's recorder, with the publish histogram's buckets, as
/// `remaudit publish` installs it.
fn metrics_handle() -> metrics_exporter_prometheus::PrometheusHandle {
    use remaudit_client::metrics::{PUBLISH_DURATION, PUBLISH_DURATION_BUCKETS};
    bench::metrics_handle(&[(PUBLISH_DURATION, &PUBLISH_DURATION_BUCKETS)])
}
