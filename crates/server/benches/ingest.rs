//! Ingest throughput: 100,000 records posted in batches of 500 to the service
//! on PostgreSQL, against the same rows written straight to PostgreSQL in the
//! same run.
//!
//! The figures, all over loopback on this machine:
//! - **http**: `POST .../batch` through the service (JSON parsing, validation,
//!   idempotent event insert with its projection queue row), with no auth, TLS
//!   or chain;
//! - **secure**: the same with all three on, as a production `serve` runs:
//!   a bearer token checked against a tokens file, HTTPS (rustls, a test CA),
//!   and every event signed and chained;
//! - **store**: the same batches through `PgStore::insert` without HTTP;
//! - **chain**: the same through the store with a chain key;
//! - **raw**: a plain multi-row `INSERT ... SELECT FROM UNNEST` of the same
//!   events into a table of the same columns with no constraints, the floor
//!   of what PostgreSQL itself costs here;
//! - **shaped**: the same insert into a table shaped and indexed like the
//!   events table (its columns and defaults, partitioned by start time,
//!   every one of its indexes), with no summary and no rollups: the raw
//!   figure the ingest target in `docs/benchmarks.md` compares against.
//!
//! The service and store paths also print their rate counted until the
//! projector had applied every record to the summary and rollups (the
//! projection queue empty), and how long after the last answer that was; the
//! second ratio line compares those rates with the shaped insert.
//!
//! The service is `remaudit serve` itself, a child process started afresh
//! for each run on a fresh database; each run prints the service's peak
//! memory (`VmHWM`), and the end of the benchmark the largest of them.
//!
//! Each run checks what it wrote: every record stored once on each path (the
//! timeline's rows, one summary row per remediation, every row in a weekly
//! partition, none in the default one) and every batch answered 200 with
//! nothing rejected; a failed check prints `SURPRISE` and the run exits
//! non-zero.
//!
//! Then single POSTs in an open loop (`BENCH_SINGLE_RATES` requests a second,
//! 500, 1,000 and 2,000 by default, 200 with `--smoke`; `BENCH_SINGLE_SECONDS`
//! each, 10, 1 with `--smoke`): each request leaves at its planned time
//! whatever the answers before it, and its latency counts from that time, so
//! a stall shows as latency rather than as fewer requests. Each rate runs with
//! a commit per POST and with shared commits. A POST past the service's
//! request limit is answered 503 (load shed, counted); every other POST must
//! be answered 201 and every 201 stored once.
//!
//! Run with `scripts/bench-ingest [--smoke]` (it prepares PostgreSQL), or
//! `cargo bench --workspace --bench publish --no-run && cargo bench -p remaudit-server
//! --bench ingest -- [--smoke]` (the first command builds the `remaudit` binary
//! the benchmark runs as its service). Knobs:
//! `BENCH_RECORDS` (100,000; 5,000 with `--smoke`), `BENCH_BATCH` (500),
//! `BENCH_CONCURRENCY` (4), `BENCH_ROUNDS` (3 rounds of plain and secure
//! service runs; 1 with `--smoke`).

use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use remaudit_model::chain::{ChainKey, KeyRing};
use remaudit_model::{Limits, NewAudit, RemediationOrchestrationAudit};
use remaudit_server::auth::Role;
use remaudit_server::auth::tokens::{TokenRecord, generate_token, hash_token, render};
use remaudit_store::{AuditStore as _, HealthStore as _};
use remaudit_testkit::bench::{self, expect_eq, knob, sized_knob};
use serde_json::{Value, json};

/// Records as the orchestrator sends them: five transitions per remediation.
fn records(count: usize, now: DateTime<Utc>) -> Vec<Value> {
    let phases = [
        "pending",
        "processing",
        "analyzing",
        "executing",
        "completed",
    ];
    (0..count)
        .map(|i| {
            let remediation = i / phases.len();
            let phase = phases[i % phases.len()];
            let start = now - chrono::Duration::hours(2) + chrono::Duration::milliseconds(i64::try_from(remediation).unwrap_or(0));
            let mut r = json!({
                "id": 0,
                "alert_fingerprint": format!("alert-{:05}", remediation % 5000),
                "remediation_name": format!("rr-{remediation:07}"),
                "namespace": "prod",
                "overall_phase": phase,
                "start_time": start.to_rfc3339(),
                "duplicate_count": 0,
                "remediation_processing_name": format!("rr-{remediation:07}-rp"),
                "ai_analysis_name": format!("rr-{remediation:07}-ai"),
                "service_crd_statuses": {
                    "remediationProcessing": {"phase": "completed", "startTime": start.to_rfc3339(), "success": true},
                    "aiAnalysis": {"phase": "completed", "startTime": start.to_rfc3339(), "success": true},
                },
                "created_at": "0001-01-01T00:00:00Z",
                "updated_at": "0001-01-01T00:00:00Z",
            });
            if phase == "completed" {
                r["completion_time"] = json!((start + chrono::Duration::seconds(95)).to_rfc3339());
            }
            r
        })
        .collect()
}

fn validated(batch: &[Value], now: DateTime<Utc>) -> Vec<NewAudit> {
    batch
        .iter()
        .map(|v| {
            let r: RemediationOrchestrationAudit =
                serde_json::from_value(v.clone()).expect("record");
            r.validate(now, &Limits::default()).expect("valid")
        })
        .collect()
}

struct Run {
    seconds: f64,
    /// Sorted.
    latencies: Vec<Duration>,
    /// From the start until the summary and rollups held every record too
    /// (the projection queue empty), on the paths that have one.
    projected_seconds: Option<f64>,
}

impl Run {
    fn rate(&self, records: usize) -> f64 {
        remaudit_model::approx_f64(records) / self.seconds
    }

    /// Records a second counted until they were projected too.
    fn projected_rate(&self, records: usize) -> Option<f64> {
        self.projected_seconds
            .map(|s| remaudit_model::approx_f64(records) / s)
    }
}

/// Runs `work` over every batch with `concurrency` workers; times each call.
async fn drive<T, F, Fut>(batches: Arc<Vec<T>>, concurrency: usize, work: F) -> Run
where
    T: Send + Sync + 'static,
    F: Fn(Arc<Vec<T>>, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (batches, next, work) = (batches.clone(), next.clone(), work.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= batches.len() {
                        return latencies;
                    }
                    let t = Instant::now();
                    work(batches.clone(), i).await;
                    latencies.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for w in workers {
        latencies.extend(w.await.expect("worker"));
    }
    latencies.sort();
    Run {
        seconds: started.elapsed().as_secs_f64(),
        latencies,
        projected_seconds: None,
    }
}

#[allow(clippy::too_many_lines)]
async fn bench() -> anyhow::Result<()> {
    let total = sized_knob("BENCH_RECORDS", 100_000, 5_000);
    let batch = knob("BENCH_BATCH", 500);
    let concurrency = knob("BENCH_CONCURRENCY", 4);
    let now = Utc::now();
    let all = records(total, now);
    let remediations = total.div_ceil(5);
    println!(
        "ingest: {total} records, batches of {batch}, {concurrency} concurrent senders, PostgreSQL on loopback{}",
        bench::smoke_note()
    );

    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        all.chunks(batch)
            .map(|c| serde_json::to_vec(c).expect("json"))
            .collect(),
    );
    let bytes: usize = bodies.iter().map(Vec::len).sum();
    // Through the service, plain, then with auth, TLS and chaining on.
    let expected = (total, remediations);
    let ring = Arc::new(KeyRing::single(ChainKey::new("bench", [7; 32])?));
    // Plain and secure runs alternate (the secure one first in odd rounds),
    // so that neither always meets a warmer cache; the ratio printed is the
    // median of the rounds'.
    let rounds = sized_knob("BENCH_ROUNDS", 3, 1).max(1);
    let mut pairs: Vec<(Run, Run)> = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let secure_first = round % 2 == 1;
        let first = through_service(
            &bodies,
            concurrency,
            expected,
            secure_first.then(|| ring.clone()),
        )
        .await?;
        let second = through_service(
            &bodies,
            concurrency,
            expected,
            (!secure_first).then(|| ring.clone()),
        )
        .await?;
        let (plain, secure) = if secure_first {
            (second, first)
        } else {
            (first, second)
        };
        println!(
            "round {}: http {:.0} records/s, secure {:.0} records/s, secure/http {:.2}",
            round + 1,
            plain.rate(total),
            secure.rate(total),
            secure.rate(total) / plain.rate(total)
        );
        pairs.push((plain, secure));
    }
    pairs.sort_by(|a, b| {
        (a.1.rate(total) / a.0.rate(total)).total_cmp(&(b.1.rate(total) / b.0.rate(total)))
    });
    let (http_run, secure_run) = pairs.swap_remove(pairs.len() / 2);

    // Straight into the store, no HTTP.
    let db2 = remaudit_testkit::PgDb::create().await;
    let pg = Arc::new(bench::pg_store(db2.url(), bench::StoreOptions::default()).await?);
    let prepared: Arc<Vec<Vec<NewAudit>>> =
        Arc::new(all.chunks(batch).map(|c| validated(c, now)).collect());
    let store_started = Instant::now();
    let mut store_run = {
        let pg = pg.clone();
        drive(prepared.clone(), concurrency, move |batches, i| {
            let pg = pg.clone();
            async move {
                if let Err(e) = pg.insert(&batches[i]).await {
                    bench::surprise(format_args!("store batch {i}: {e}"));
                }
            }
        })
        .await
    };
    store_run.projected_seconds = Some(bench::projected_after(pg.pool(), store_started).await?);
    bench::check_stored(pg.pool(), "store", total, remediations).await?;

    // The same, every event signed and chained (`serve --chain-key-file`).
    let db3 = remaudit_testkit::PgDb::create().await;
    let chained = Arc::new(bench::pg_store(db3.url(), bench::StoreOptions::default()).await?);
    let rules = remaudit_store::InsertRules {
        chain: Some(ring),
        ..remaudit_store::InsertRules::default()
    };
    let chain_started = Instant::now();
    let mut chain_run = {
        let chained = chained.clone();
        drive(prepared.clone(), concurrency, move |batches, i| {
            let (chained, rules) = (chained.clone(), rules.clone());
            async move {
                if let Err(e) = chained.insert_with(&batches[i], &rules).await {
                    bench::surprise(format_args!("chained batch {i}: {e}"));
                }
            }
        })
        .await
    };
    chain_run.projected_seconds =
        Some(bench::projected_after(chained.pool(), chain_started).await?);
    bench::check_stored(chained.pool(), "chain", total, remediations).await?;
    chained.close().await;

    // Raw PostgreSQL: the same events into an unconstrained table, then
    // into a table shaped and indexed like the events table (its columns
    // and defaults, partitioned by start time with one partition holding
    // the run, and every index of the events table).
    sqlx::query(
        "CREATE TABLE raw_events (event_id uuid, namespace text, remediation_name text, \
         start_time timestamptz, overall_phase text, event_time timestamptz, record jsonb, \
         content_hash bytea)",
    )
    .execute(pg.pool())
    .await?;
    let raw_run = raw_inserts(pg.pool(), "raw_events", &prepared, concurrency).await?;
    shape_like_events(pg.pool()).await?;
    let shaped_run = raw_inserts(pg.pool(), "raw_shaped", &prepared, concurrency).await?;

    let line = |name: &str, run: &Run| {
        let projected = run.projected_rate(total).map_or(String::new(), |rate| {
            format!(
                "  projected too: {rate:>7.0} records/s, last projection {:.2} s after the last answer",
                run.projected_seconds.unwrap_or_default() - run.seconds
            )
        });
        println!(
            "{name:<6} {:>9.0} records/s  {:>6.2} s  batch p50 {:>7.1} ms  p99 {:>7.1} ms{projected}",
            run.rate(total),
            run.seconds,
            bench::percentile_ms(&run.latencies, 0.50),
            bench::percentile_ms(&run.latencies, 0.99),
        );
    };
    // The service lines are the median round's.
    line("http", &http_run);
    line("secure", &secure_run);
    line("store", &store_run);
    line("chain", &chain_run);
    line("raw", &raw_run);
    line("shaped", &shaped_run);
    println!(
        "request bodies: {:.1} MiB in all",
        bench::mib(i64::try_from(bytes)?)
    );
    println!(
        "ratio: http/raw {:.2}, store/raw {:.2}, http/store {:.2}",
        http_run.rate(total) / raw_run.rate(total),
        store_run.rate(total) / raw_run.rate(total),
        http_run.rate(total) / store_run.rate(total),
    );
    println!(
        "ratio: http/shaped {:.2}, store/shaped {:.2} (raw into a table shaped and indexed like the events table)",
        http_run.rate(total) / shaped_run.rate(total),
        store_run.rate(total) / shaped_run.rate(total),
    );
    let projected = |run: &Run| run.projected_rate(total).unwrap_or(f64::NAN);
    println!(
        "ratio, counted until projected: http/shaped {:.2}, store/shaped {:.2}",
        projected(&http_run) / shaped_run.rate(total),
        projected(&store_run) / shaped_run.rate(total),
    );
    println!(
        "ratio: chain/store {:.2} (chained ingest against unchained, both through the store)",
        chain_run.rate(total) / store_run.rate(total),
    );
    println!(
        "ratio: secure/http {:.2} (auth + TLS + chain on against all three off, both through the service; median of {rounds} rounds)",
        secure_run.rate(total) / http_run.rate(total),
    );
    pg.close().await;

    // Single POSTs, open loop: each sent at its planned time whatever the
    // answers before it, each with a commit of its own and then with shared
    // commits, on a fresh database each time.
    let seconds = sized_knob("BENCH_SINGLE_SECONDS", 10, 1);
    let rates = std::env::var("BENCH_SINGLE_RATES").unwrap_or_else(|_| {
        if bench::smoke() {
            "200"
        } else {
            "500,1000,2000"
        }
        .to_owned()
    });
    println!(
        "single POSTs, open loop, {seconds} s a rate, unique records; latency from each request's planned send time"
    );
    for rate in rates.split(',') {
        let rate: u32 = rate.trim().parse()?;
        for shared in [false, true] {
            open_loop(rate, seconds, shared).await?;
        }
    }
    bench::verdict("bench-ingest")
}

/// What [`open_loop`] counts a `503 overloaded` answer as.
const SHED: u16 = 1503;

/// Sends `rate` single POSTs a second for `seconds` to a fresh service, each
/// at its planned time (no coordinated omission: a slow answer delays no
/// later request, and latency counts from the planned time), and prints the
/// latency percentiles and what was answered. `shared`: single POSTs share
/// commits (the default); otherwise each has its own (`single_post_batch_records` 1).
async fn open_loop(rate: u32, seconds: usize, shared: bool) -> anyhow::Result<()> {
    let db = remaudit_testkit::PgDb::create().await;
    let http = reqwest::Client::builder().build()?;
    let sharing = if shared { "64" } else { "1" };
    let name = format!("single {rate}/s {}", if shared { "shared" } else { "own" });
    let args = [
        "--database-url".to_owned(),
        db.url().to_owned(),
        "--single-post-batch-records".to_owned(),
        sharing.to_owned(),
    ];
    let service = bench::Service::start(&name, &args, &http, false).await?;
    let url = format!("{}/api/v1/audit/remediation-orchestration", service.base());
    let total = usize::try_from(rate)? * seconds;
    let now = Utc::now();
    let bodies: Vec<Vec<u8>> = (0..total)
        .map(|i| {
            let start = now - chrono::Duration::minutes(30)
                + chrono::Duration::milliseconds(i64::try_from(i).unwrap_or(0));
            serde_json::to_vec(&json!({
                "alert_fingerprint": format!("alert-{:04}", i % 2000),
                "remediation_name": format!("rr-single-{i:07}"),
                "namespace": "prod",
                "overall_phase": "pending",
                "start_time": start.to_rfc3339(),
            }))
            .expect("json")
        })
        .collect();
    let interval = Duration::from_secs(1) / rate;
    let started = tokio::time::Instant::now();
    let mut sent = Vec::with_capacity(total);
    for (i, body) in bodies.into_iter().enumerate() {
        let planned = started + interval * u32::try_from(i)?;
        tokio::time::sleep_until(planned).await;
        let (http, url) = (http.clone(), url.clone());
        sent.push(tokio::spawn(async move {
            // 503 `overloaded` is the service shedding load past its request
            // limit; any other answer than that or 201 is counted as itself.
            let status = match http
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
            {
                Ok(response) if response.status().as_u16() == 503 => {
                    let problem: Value = response.json().await.unwrap_or_default();
                    if problem["type"]
                        .as_str()
                        .is_some_and(|t| t.ends_with(":overloaded"))
                    {
                        SHED
                    } else {
                        503
                    }
                }
                Ok(response) => response.status().as_u16(),
                Err(_) => 0,
            };
            (planned.elapsed(), status)
        }));
    }
    // Latencies of the stored POSTs only: a shed one is answered at once.
    let mut latencies = Vec::with_capacity(total);
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for task in sent {
        let (latency, status) = task.await?;
        if status == 201 {
            latencies.push(latency);
        }
        *statuses.entry(status).or_default() += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let created = statuses.get(&201).copied().unwrap_or(0);
    let shed = statuses.get(&SHED).copied().unwrap_or(0);
    expect_eq(
        &format!(
            "single {rate}/s: POSTs answered neither 201 nor 503 overloaded (status: count, 0 no answer)"
        ),
        &statuses
            .iter()
            .filter(|(s, _)| ![201, SHED].contains(*s))
            .map(|(s, n)| (*s, *n))
            .collect::<Vec<_>>(),
        &Vec::new(),
    );
    if created == 0 {
        bench::surprise(format_args!("single {rate}/s: no POST was stored"));
    }
    let pool = db.pool().await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM remediation_audit_events")
        .fetch_one(&pool)
        .await?;
    expect_eq(
        &format!("single {rate}/s: stored events"),
        &stored,
        &i64::try_from(created)?,
    );
    let transactions: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT xmin::text) FROM remediation_audit_events")
            .fetch_one(&pool)
            .await?;
    println!(
        "single {rate:>5}/s {:<6} stored: p50 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  max {:>7.1} ms  sent {:>6.0}/s  shed (503) {:>5}  {} stored in {} transactions",
        if shared { "shared" } else { "own" },
        bench::percentile_ms(&latencies, 0.50),
        bench::percentile_ms(&latencies, 0.99),
        bench::percentile_ms(&latencies, 0.999),
        latencies.last().map_or(0.0, |l| l.as_secs_f64() * 1000.0),
        remaudit_model::approx_f64(total) / elapsed,
        shed,
        stored,
        transactions,
    );
    pool.close().await;
    service.stop().await?;
    Ok(())
}

/// Writes every batch into `table` with one `INSERT … SELECT FROM UNNEST`
/// a batch, from `concurrency` workers, and checks the row count.
async fn raw_inserts(
    pool: &sqlx::PgPool,
    table: &'static str,
    prepared: &Arc<Vec<Vec<NewAudit>>>,
    concurrency: usize,
) -> anyhow::Result<Run> {
    let sql = format!(
        "INSERT INTO {table} (event_id, namespace, remediation_name, start_time, \
         overall_phase, event_time, record, content_hash) \
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], \
         $5::text[], $6::timestamptz[], $7::text[]::jsonb[], $8::bytea[])"
    );
    let run = {
        let pool = pool.clone();
        drive(prepared.clone(), concurrency, move |batches, i| {
            let (pool, sql) = (pool.clone(), sql.clone());
            async move {
                let b = &batches[i];
                let inserted = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(b.iter().map(|r| r.event_id).collect::<Vec<_>>())
                    .bind(b.iter().map(|r| r.namespace.clone()).collect::<Vec<_>>())
                    .bind(
                        b.iter()
                            .map(|r| r.remediation_name.clone())
                            .collect::<Vec<_>>(),
                    )
                    .bind(b.iter().map(|r| r.start_time).collect::<Vec<_>>())
                    .bind(
                        b.iter()
                            .map(|r| r.overall_phase.clone())
                            .collect::<Vec<_>>(),
                    )
                    .bind(b.iter().map(|r| r.event_time).collect::<Vec<_>>())
                    .bind(b.iter().map(|r| r.raw.clone()).collect::<Vec<_>>())
                    .bind(
                        b.iter()
                            .map(|r| r.content_hash.to_vec())
                            .collect::<Vec<_>>(),
                    )
                    .execute(&pool)
                    .await;
                if let Err(e) = inserted {
                    bench::surprise(format_args!("{table} batch {i}: {e}"));
                }
            }
        })
        .await
    };
    let rows: i64 =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(pool)
            .await?;
    let total: usize = prepared.iter().map(Vec::len).sum();
    expect_eq(&format!("{table}: rows"), &rows, &i64::try_from(total)?);
    Ok(run)
}

/// Creates `raw_shaped`: the events table's columns and defaults,
/// partitioned by start time into one partition, with each of the events
/// table's indexes re-created on it from its definition.
async fn shape_like_events(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    sqlx::query(
        "CREATE TABLE raw_shaped (LIKE remediation_audit_events INCLUDING DEFAULTS) \
         PARTITION BY RANGE (start_time)",
    )
    .execute(pool)
    .await?;
    sqlx::query(
        "CREATE TABLE raw_shaped_all PARTITION OF raw_shaped FOR VALUES FROM (MINVALUE) TO (MAXVALUE)",
    )
    .execute(pool)
    .await?;
    let definitions: Vec<String> = sqlx::query_scalar(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() \
         AND tablename = 'remediation_audit_events' ORDER BY indexname",
    )
    .fetch_all(pool)
    .await?;
    anyhow::ensure!(
        !definitions.is_empty(),
        "the events table has no index to copy"
    );
    for (n, definition) in definitions.iter().enumerate() {
        // `CREATE [UNIQUE] INDEX name ON [ONLY] schema.table USING ...`
        let (head, tail) = definition
            .split_once(" ON ")
            .ok_or_else(|| anyhow::anyhow!("an index definition without ON: {definition}"))?;
        let (_, using) = tail
            .split_once(" USING ")
            .ok_or_else(|| anyhow::anyhow!("an index definition without USING: {definition}"))?;
        let unique = if head.starts_with("CREATE UNIQUE") {
            "UNIQUE "
        } else {
            ""
        };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE {unique}INDEX raw_shaped_{n} ON raw_shaped USING {using}"
        )))
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// Posts every body to a fresh `remaudit serve` on PostgreSQL and checks
/// that each record was stored once. With a key ring, the service runs as
/// production does: a writer token from a tokens file, HTTPS, and events
/// chained with the ring; otherwise plain HTTP, no auth, unchained.
/// `expected` is (records, remediations).
async fn through_service(
    bodies: &Arc<Vec<Vec<u8>>>,
    concurrency: usize,
    expected: (usize, usize),
    ring: Option<Arc<KeyRing>>,
) -> anyhow::Result<Run> {
    let secure = ring.is_some();
    let dir = tempfile::tempdir()?;
    let db = remaudit_testkit::PgDb::create().await;
    let mut args = vec!["--database-url".to_owned(), db.url().to_owned()];
    let (mut http, mut token) = (reqwest::Client::builder(), None);
    if let Some(ring) = ring {
        let secret = generate_token();
        let tokens_path = dir.path().join("tokens.toml");
        std::fs::write(
            &tokens_path,
            render(&[TokenRecord {
                sha256: hash_token(&secret),
                subject: "bench-orchestrator".into(),
                role: Role::Writer,
                created: Utc::now(),
                expires: None,
            }]),
        )?;
        let keys_path = dir.path().join("chain.keys");
        std::fs::write(&keys_path, ring.to_file_text())?;
        std::fs::set_permissions(&keys_path, std::fs::Permissions::from_mode(0o600))?;
        let ca = remaudit_testkit::pki::TestCa::new("bench");
        let (cert, key) = ca.server(1).write(dir.path(), "server");
        for (flag, path) in [
            ("--auth-tokens-file", &tokens_path),
            ("--chain-key-file", &keys_path),
            ("--tls-cert", &cert),
            ("--tls-key", &key),
        ] {
            args.extend([flag.to_owned(), path.display().to_string()]);
        }
        http = http.tls_certs_only([reqwest::Certificate::from_pem(ca.pem().as_bytes())?]);
        token = Some(secret);
    }
    let http = http.build()?;
    let name = if secure { "secure" } else { "http" };
    let service = bench::Service::start(name, &args, &http, secure).await?;
    let url = format!(
        "{}/api/v1/audit/remediation-orchestration/batch",
        service.base()
    );
    let started = Instant::now();
    let mut run = drive(bodies.clone(), concurrency, move |bodies, i| {
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        async move {
            let mut request = http
                .post(url)
                .header("content-type", "application/json")
                .body(bodies[i].clone());
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let body: Value = response.json().await.unwrap_or_default();
                    expect_eq(&format!("batch {i}: status"), &status, &200);
                    expect_eq(
                        &format!("batch {i}: rejected"),
                        &body["rejected"],
                        &json!(0),
                    );
                }
                Err(e) => bench::surprise(format_args!("batch {i}: {e}")),
            }
        }
    })
    .await;
    let pool = db.pool().await;
    run.projected_seconds = Some(bench::projected_after(&pool, started).await?);
    bench::check_stored(&pool, name, expected.0, expected.1).await?;
    if secure {
        let unsigned: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM remediation_audit_events WHERE chain_mac IS NULL",
        )
        .fetch_one(&pool)
        .await?;
        expect_eq("secure: events without a MAC", &unsigned, &0);
    }
    pool.close().await;
    service.stop().await?;
    Ok(run)
}

fn main() -> anyhow::Result<()> {
    bench::block_on(bench())
}
