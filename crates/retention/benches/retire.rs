//! Retention at scale: what retiring expired audit rows costs on PostgreSQL,
//! the retention job (`remaudit_retention::run_once`) beside raw PostgreSQL
//! doing the bare minimum in the same run, on the same database.
//!
//! The data: 91 days (13 ISO weeks) of a large fleet, 110,000 remediations a
//! day (about ten million summary rows and 25 million timeline events),
//! ending at a fixed clock (Monday 2026-11-02 00:00 UTC), generated inside
//! PostgreSQL by `benches/retire/generate.sql` into a database the store
//! migrated, with the weekly partitions of the whole range created first so
//! that every row lands in its week. Indexes are dropped during the load and
//! rebuilt afterwards, then everything is vacuumed and analyzed. The
//! database is kept; `--reuse` skips the load next time and regenerates only
//! the weeks an earlier run retired (each day range generates the same rows).
//!
//! With W0 the oldest week and T the end of the data, the steps, in an order
//! where none disturbs another:
//! - **e** post-mortem lookups (`alert_fingerprint = $1 ORDER BY start_time
//!   DESC, id DESC LIMIT 50`) on the weekly-partitioned table, on a copy of
//!   its rows partitioned by day and on an unpartitioned copy (same index),
//!   for random fingerprints, warm caches: p50/p95/p99;
//! - **a** raw row-wise: `DELETE` of one day (Wednesday of W0) from both live
//!   tables, committed, then `VACUUM` of the week's two partitions;
//! - **b** raw partition: `DETACH PARTITION` + `DROP TABLE` of W0's pair;
//! - **c** remaudit by partition: `run_once` at the clock where W1 (now the
//!   oldest) is wholly due, archiving to a `file://` directory;
//! - **f** ingest latency: 8 tasks calling `store.insert` with batches of 100
//!   records at the current time, first alone, then while `run_once`
//!   retires W2 (when the job cannot detach the week under ingest, the
//!   benchmark detaches it by hand with ingest stopped and measures the rest
//!   of the job, archive copy, files and drop, under ingest);
//! - **d** remaudit row-wise: `run_once` with `exact` (5,000-row batches) at
//!   the clock where one more day (Monday of W3) is due.
//!
//! Each of a–d prints rows, seconds and WAL bytes (the difference of
//! `pg_current_wal_lsn()`, cluster-wide, after a `CHECKPOINT` when the
//! superuser may be used, so every step pays its full-page images the same
//! way), then a summary with per-day figures and ratios. A sampler of
//! `pg_stat_activity` shows where the job's time went.
//!
//! Every step checks its counts; at the end every loaded row (and event) is
//! in exactly one place, the live tables or the archive, except the week
//! the raw steps deleted, and `verify` finds the job's batches intact. A
//! failed check prints `SURPRISE` and the run exits non-zero.
//!
//! `--smoke` (or `BENCH_SMOKE=1`): 28 days x 100 remediations (about 2,800
//! and 7,000 events) in `remaudit_bench_smoke_retention`, 20 lookups, 3 s of
//! ingest by 2 tasks, every check, the database dropped at the end; seconds.
//!
//! Run with `scripts/bench-retention [OPTIONS]` (it prepares PostgreSQL), or
//! `cargo bench -p remaudit-retention --bench retire -- [OPTIONS]`. Options:
//! `--smoke`, `--reuse`, `--drop`, `--load-only`, `--remediations N` (load
//! about N instead of ten million), `--ingest-seconds S`, `--lookups N`,
//! `--no-ingest`, `--no-lookups`. Knobs: `BENCH_DATABASE`
//! (`remaudit_bench_retention`), `BENCH_DAYS` (91), `BENCH_PER_DAY`,
//! `BENCH_ALERTS` (4,000), `BENCH_DATA_END`, `BENCH_LOAD_CONNECTIONS` (2),
//! `BENCH_INGEST_TASKS` (8), `BENCH_INGEST_BATCH` (100), `BENCH_SUPERUSER`
//! (`postgres`). PostgreSQL is `REMAUDIT_TEST_DATABASE_URL` (which
//! `scripts/pg-prepare` sets), its role allowed to create databases.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use chrono::{DateTime, Datelike as _, SecondsFormat, TimeDelta, Timelike as _, Utc, Weekday};
use remaudit_model::NewAudit;
use remaudit_retention::{Archive, RunReport, Settings};
use remaudit_store::{
    AuditStore as _, HealthStore as _, PgStore, PoolSettings, RetentionStore as _,
};
use remaudit_testkit::bench::{
    self, BenchDb, Job, expect_eq, knob, mib, sized_knob, step, surprise, thousands,
};
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection as _, PgConnection, PgPool};

/// What every load connection runs first.
const SESSION: &str = include_str!("retire/session.sql");

/// The generator's functions.
const GENERATOR: &str = include_str!("retire/generate.sql");

/// The table, in the benchmark database, that records how it was loaded.
const LOAD_TABLE: &str = "bench_retention_load";

/// The rows each week held right after the load.
const WEEKS_TABLE: &str = "bench_retention_weeks";

/// Application names, so that the activity sampler can tell who is who.
const RETENTION_APP: &str = "remaudit-bench-retention";
const INGEST_APP: &str = "remaudit-bench-ingest";

/// The post-mortem lookup, on any of the three tables.
const LOOKUP_COLUMNS: &str = "id, remediation_name, overall_phase, start_time, completion_time, failure_phase, failure_reason";

const USAGE: &str = "options: --smoke --reuse --drop --load-only --remediations N --ingest-seconds S \
                     --lookups N --no-ingest --no-lookups";

/// What to run, from the command line and the environment.
struct Options {
    smoke: bool,
    reuse: bool,
    drop: bool,
    load_only: bool,
    ingest: bool,
    lookup: bool,
    database: String,
    days: u32,
    per_day: u32,
    alerts: u32,
    data_end: DateTime<Utc>,
    lookups: usize,
    ingest_seconds: u64,
    ingest_tasks: usize,
    ingest_batch: usize,
    load_connections: usize,
    superuser: String,
}

impl Options {
    fn parse() -> anyhow::Result<Self> {
        let data_end = std::env::var("BENCH_DATA_END")
            .unwrap_or_else(|_| "2026-11-02T00:00:00Z".to_owned())
            .parse::<DateTime<Utc>>()
            .context("BENCH_DATA_END: an RFC 3339 time")?;
        let smoke = bench::smoke();
        let mut options = Self {
            smoke,
            reuse: !smoke
                && std::env::var("REMAUDIT_BENCH_REUSE").is_ok_and(|v| v == "1" || v == "true"),
            drop: smoke,
            load_only: false,
            ingest: true,
            lookup: true,
            database: std::env::var("BENCH_DATABASE").unwrap_or_else(|_| {
                if smoke {
                    "remaudit_bench_smoke_retention"
                } else {
                    "remaudit_bench_retention"
                }
                .to_owned()
            }),
            days: u32::try_from(sized_knob("BENCH_DAYS", 91, 28))?,
            per_day: u32::try_from(sized_knob("BENCH_PER_DAY", 110_000, 100))?,
            alerts: u32::try_from(sized_knob("BENCH_ALERTS", 4000, 100))?,
            data_end,
            lookups: sized_knob("BENCH_LOOKUPS", 600, 20),
            ingest_seconds: u64::try_from(sized_knob("BENCH_INGEST_SECONDS", 20, 3))?,
            ingest_tasks: sized_knob("BENCH_INGEST_TASKS", 8, 2).max(1),
            ingest_batch: sized_knob("BENCH_INGEST_BATCH", 100, 20).max(2),
            load_connections: knob("BENCH_LOAD_CONNECTIONS", 2).max(1),
            superuser: std::env::var("BENCH_SUPERUSER").unwrap_or_else(|_| "postgres".to_owned()),
        };
        let mut remediations = None;
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut number = |what: &str| -> anyhow::Result<usize> {
                let value = args
                    .next()
                    .with_context(|| format!("{what} needs a number"))?;
                value
                    .replace('_', "")
                    .parse()
                    .with_context(|| format!("{what} {value:?}: a number"))
            };
            match arg.as_str() {
                // cargo bench passes this to every harness-less bench.
                "--bench" | "--smoke" => {}
                "--reuse" => options.reuse = true,
                "--drop" => options.drop = true,
                "--load-only" => options.load_only = true,
                "--no-ingest" => options.ingest = false,
                "--no-lookups" => options.lookup = false,
                "--remediations" => remediations = Some(number("--remediations")?),
                "--ingest-seconds" => {
                    options.ingest_seconds = u64::try_from(number("--ingest-seconds")?)?;
                }
                "--lookups" => options.lookups = number("--lookups")?,
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other:?}; {USAGE}"),
            }
        }
        if let Some(n) = remediations {
            options.per_day = u32::try_from(n.div_ceil(options.days.max(1) as usize).max(1))?;
        }
        ensure!(
            options.days >= 28 && options.days.is_multiple_of(7),
            "BENCH_DAYS must be a multiple of 7, at least 28 (the steps use four weeks)"
        );
        ensure!(options.per_day >= 1, "BENCH_PER_DAY must be at least 1");
        ensure!(options.alerts >= 20, "BENCH_ALERTS must be at least 20");
        ensure!(
            options.data_end.weekday() == Weekday::Mon
                && options.data_end.num_seconds_from_midnight() == 0
                && options.data_end.nanosecond() == 0,
            "BENCH_DATA_END must be a Monday 00:00 UTC (weeks are partitions)"
        );
        Ok(options)
    }

    fn origin(&self) -> DateTime<Utc> {
        self.data_end - TimeDelta::days(i64::from(self.days))
    }

    /// The Mondays that start the data's weeks, oldest first.
    fn weeks(&self) -> Vec<DateTime<Utc>> {
        (0..i64::from(self.days / 7))
            .map(|i| self.origin() + TimeDelta::weeks(i))
            .collect()
    }

    /// The days [first, last) after the origin that a week holds.
    fn week_days(&self, week: DateTime<Utc>) -> (i64, i64) {
        let first = (week - self.origin()).num_days();
        (first, first + 7)
    }

    /// The knobs the generator reads, as SET statements.
    fn knobs(&self) -> String {
        format!(
            "SET remaudit.bench_end = '{}'; SET remaudit.bench_days = '{}'; \
             SET remaudit.bench_per_day = '{}'; SET remaudit.bench_alerts = '{}'; \
             SET remaudit.bench_age_days = '{}';",
            self.data_end.to_rfc3339_opts(SecondsFormat::Secs, true),
            self.days,
            self.per_day,
            self.alerts,
            Settings::default().policy.age.num_days()
        )
    }
}

fn table_of(prefix: &str, week: DateTime<Utc>) -> String {
    format!("{prefix}_w{}", week.format("%Y%m%d"))
}

fn summary_week(week: DateTime<Utc>) -> String {
    table_of("remediation_audit", week)
}

fn events_week(week: DateTime<Utc>) -> String {
    table_of("remediation_audit_events", week)
}

fn day(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

// ---------------------------------------------------------------------------
// Loading

/// Connections for the generator, with its knobs and session settings.
async fn load_connections(url: &str, options: &Options) -> anyhow::Result<Vec<PgConnection>> {
    let mut connections = bench::connect_all(
        url,
        options.load_connections,
        &format!("{}\n{SESSION}", options.knobs()),
    )
    .await?;
    sqlx::raw_sql(AssertSqlSafe(GENERATOR.to_owned()))
        .execute(&mut connections[0])
        .await
        .context("generator functions")?;
    Ok(connections)
}

/// The statements that regenerate one week into fresh tables and attach them.
fn rebuild_week_job(options: &Options, week: DateTime<Utc>) -> Job {
    let (summary, events) = (summary_week(week), events_week(week));
    let (first, last) = options.week_days(week);
    let (lo, hi) = (
        week.to_rfc3339_opts(SecondsFormat::Secs, true),
        (week + TimeDelta::weeks(1)).to_rfc3339_opts(SecondsFormat::Secs, true),
    );
    Job::new(
        format!("week {}", day(week)),
        &summary,
        vec![
            format!("DROP TABLE IF EXISTS {summary}, {events}"),
            format!(
                "CREATE TABLE {summary} (LIKE remediation_audit INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
            ),
            format!(
                "CREATE TABLE {events} (LIKE remediation_audit_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
            ),
            format!("SELECT remaudit_bench_fill('{summary}', '{events}', {first}, {last})"),
            format!(
                "ALTER TABLE remediation_audit ATTACH PARTITION {summary} FOR VALUES FROM ('{lo}') TO ('{hi}')"
            ),
            format!(
                "ALTER TABLE remediation_audit_events ATTACH PARTITION {events} FOR VALUES FROM ('{lo}') TO ('{hi}')"
            ),
            format!("VACUUM (ANALYZE) {summary}, {events}"),
        ],
    )
}

/// Rows per weekly partition of both live tables, by week.
async fn week_counts(pool: &PgPool) -> anyhow::Result<BTreeMap<String, (i64, i64)>> {
    let mut counts: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (table, events) in [
        ("remediation_audit", false),
        ("remediation_audit_events", true),
    ] {
        let rows: Vec<(String, i64)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT tableoid::regclass::text, count(*) FROM {table} GROUP BY 1"
        )))
        .fetch_all(pool)
        .await?;
        for (partition, n) in rows {
            let Some((_, week)) = partition.rsplit_once("_w") else {
                continue;
            };
            let entry = counts.entry(week.to_owned()).or_default();
            if events {
                entry.1 = n;
            } else {
                entry.0 = n;
            }
        }
    }
    Ok(counts)
}

/// Loads a fresh database; returns the seconds the generator took.
async fn load(url: &str, options: &Options) -> anyhow::Result<f64> {
    let t = Instant::now();
    PgStore::connect(url, PoolSettings::default())
        .await?
        .close()
        .await;
    println!(
        "  {:<28} {:>8.1} s",
        "migrations",
        t.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let mut connections = load_connections(url, options).await?;
    let conn = &mut connections[0];
    let created = bench::ensure_partitions(conn, options.origin(), options.data_end).await?;
    let saved =
        bench::drop_indexes(conn, &["remediation_audit", "remediation_audit_events"]).await?;
    println!(
        "  {:<28} {:>8.1} s  ({created} partitions, {} indexes dropped)",
        "prepare",
        started.elapsed().as_secs_f64(),
        saved.len()
    );

    let fills = options
        .weeks()
        .into_iter()
        .map(|week| {
            let (first, last) = options.week_days(week);
            let (summary, events) = (summary_week(week), events_week(week));
            Job::new(
                format!("week {}", day(week)),
                &summary,
                vec![format!(
                    "SELECT remaudit_bench_fill('{summary}', '{events}', {first}, {last})"
                )],
            )
        })
        .collect();
    let connections = step("insert rows", connections, fills).await?;
    let mut connections = step(
        "indexes and constraints",
        connections,
        bench::index_jobs(&saved, "remediation_audit_events"),
    )
    .await?;
    bench::sync_id_sequence(&mut connections[0], "remediation_audit").await?;
    bench::sync_id_sequence(&mut connections[0], "remediation_audit_events").await?;
    sqlx::raw_sql("SELECT remaudit_bench_lookup_tables();")
        .execute(&mut connections[0])
        .await?;
    let copies = ["bench_lookup_flat", "bench_lookup_daily"];
    let connections = step(
        "lookup copies",
        connections,
        copies
            .iter()
            .map(|t| {
                Job::new(
                    *t,
                    t,
                    vec![
                        format!("INSERT INTO {t} SELECT * FROM remediation_audit"),
                        format!(
                            "CREATE INDEX {t}_fingerprint ON {t} (alert_fingerprint, start_time DESC, id DESC)"
                        ),
                    ],
                )
            })
            .collect(),
    )
    .await?;
    let connections = step(
        "vacuum analyze",
        connections,
        [
            "remediation_audit_events",
            "remediation_audit",
            "bench_lookup_flat",
            "bench_lookup_daily",
        ]
        .iter()
        .map(|t| Job::new(*t, t, vec![format!("VACUUM (ANALYZE) {t}")]))
        .collect(),
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    for conn in connections {
        conn.close().await?;
    }

    let pool = PgPoolOptions::new().max_connections(2).connect(url).await?;
    let counts = week_counts(&pool).await?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE TABLE {LOAD_TABLE} (data_end TIMESTAMPTZ NOT NULL, days INT NOT NULL, per_day INT NOT NULL,
             alerts INT NOT NULL, load_seconds FLOAT8 NOT NULL, loaded_at TIMESTAMPTZ NOT NULL DEFAULT now());
         CREATE TABLE {WEEKS_TABLE} (week TEXT PRIMARY KEY, remediations BIGINT NOT NULL, events BIGINT NOT NULL);"
    )))
    .execute(&pool)
    .await?;
    for week in options.weeks() {
        let key = week.format("%Y%m%d").to_string();
        let (r, e) = counts.get(&key).copied().unwrap_or_default();
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {WEEKS_TABLE} (week, remediations, events) VALUES ($1, $2, $3)"
        )))
        .bind(&key)
        .bind(r)
        .bind(e)
        .execute(&pool)
        .await?;
    }
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {LOAD_TABLE} (data_end, days, per_day, alerts, load_seconds) VALUES ($1, $2, $3, $4, $5)"
    )))
    .bind(options.data_end)
    .bind(i32::try_from(options.days)?)
    .bind(i32::try_from(options.per_day)?)
    .bind(i32::try_from(options.alerts)?)
    .bind(seconds)
    .execute(&pool)
    .await?;
    pool.close().await;
    Ok(seconds)
}

/// Puts a reused database back into its loaded state: clears what earlier
/// runs left (archive tables, journal, default partitions, ingested rows,
/// rollups) and regenerates the weeks they retired.
async fn restore(url: &str, options: &Options) -> anyhow::Result<()> {
    let t = Instant::now();
    let pool = PgPoolOptions::new().max_connections(2).connect(url).await?;
    let leftovers: Vec<String> = sqlx::query_scalar(
        "SELECT relname::text FROM pg_class
         WHERE relkind = 'r' AND NOT relispartition
           AND relname ~ '^remediation_audit(_events)?_w[0-9]{8}$'",
    )
    .fetch_all(&pool)
    .await?;
    // Weeks an earlier run retired may live on as the archive's partitions.
    let archived: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent IN (SELECT oid FROM pg_class
                               WHERE relname IN ('remediation_audit_archive', 'remediation_audit_events_archive'))
           AND c.relname !~ '_default$'",
    )
    .fetch_all(&pool)
    .await?;
    for table in leftovers.iter().chain(&archived) {
        sqlx::raw_sql(AssertSqlSafe(format!("DROP TABLE {table}")))
            .execute(&pool)
            .await?;
    }
    let data_weeks: Vec<String> = options
        .weeks()
        .iter()
        .map(|w| w.format("%Y%m%d").to_string())
        .collect();
    let attached: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent IN ('remediation_audit'::regclass, 'remediation_audit_events'::regclass)
           AND c.relname ~ '_w[0-9]{8}$'",
    )
    .fetch_all(&pool)
    .await?;
    let mut clear = vec![
        "remediation_audit_default".to_owned(),
        "remediation_audit_events_default".to_owned(),
        "remediation_audit_archive".to_owned(),
        "remediation_audit_events_archive".to_owned(),
        "remediation_retention_batches".to_owned(),
        "remediation_rollup_outcomes".to_owned(),
        "remediation_rollup_durations".to_owned(),
        "remediation_rollup_alerts".to_owned(),
        "remediation_rollup_failures".to_owned(),
    ];
    // Weeks outside the data hold only what the ingest step wrote.
    clear.extend(attached.into_iter().filter(|name| {
        name.rsplit_once("_w")
            .is_some_and(|(_, w)| !data_weeks.iter().any(|d| d == w))
    }));
    sqlx::raw_sql(AssertSqlSafe(format!("TRUNCATE {}", clear.join(", "))))
        .execute(&pool)
        .await?;
    let expected: Vec<(String, i64, i64)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT week, remediations, events FROM {WEEKS_TABLE} ORDER BY week"
    )))
    .fetch_all(&pool)
    .await?;
    let counts = week_counts(&pool).await?;
    pool.close().await;
    let stale: Vec<DateTime<Utc>> = options
        .weeks()
        .into_iter()
        .filter(|week| {
            let key = week.format("%Y%m%d").to_string();
            let want = expected
                .iter()
                .find(|(w, _, _)| *w == key)
                .map(|(_, r, e)| (*r, *e));
            want.is_none() || want != counts.get(&key).copied()
        })
        .collect();
    println!(
        "  checked in {:.1} s: {} leftover tables dropped, {} archive partitions dropped, {} weeks to regenerate{}",
        t.elapsed().as_secs_f64(),
        leftovers.len(),
        archived.len(),
        stale.len(),
        if stale.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                stale.iter().map(|w| day(*w)).collect::<Vec<_>>().join(", ")
            )
        }
    );
    if stale.is_empty() {
        return Ok(());
    }
    let connections = load_connections(url, options).await?;
    let jobs = stale
        .iter()
        .map(|w| rebuild_week_job(options, *w))
        .collect();
    let mut connections = step("regenerate weeks", connections, jobs).await?;
    sqlx::raw_sql("ANALYZE remediation_audit, remediation_audit_events")
        .execute(&mut connections[0])
        .await?;
    for conn in connections {
        conn.close().await?;
    }
    Ok(())
}

/// How the benchmark database was filled, as recorded in [`LOAD_TABLE`].
struct Loaded {
    data_end: DateTime<Utc>,
    days: i32,
    per_day: i32,
    alerts: i32,
    seconds: f64,
}

async fn recorded_load(url: &str) -> anyhow::Result<Option<Loaded>> {
    let mut conn = PgConnection::connect(url).await?;
    let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(LOAD_TABLE)
        .fetch_one(&mut conn)
        .await?;
    let row: Option<(DateTime<Utc>, i32, i32, i32, f64)> = if exists.is_some() {
        sqlx::query_as(AssertSqlSafe(format!(
            "SELECT data_end, days, per_day, alerts, load_seconds FROM {LOAD_TABLE} ORDER BY loaded_at DESC LIMIT 1"
        )))
        .fetch_optional(&mut conn)
        .await?
    } else {
        None
    };
    conn.close().await?;
    Ok(
        row.map(|(data_end, days, per_day, alerts, seconds)| Loaded {
            data_end,
            days,
            per_day,
            alerts,
            seconds,
        }),
    )
}

/// Creates (or reuses) the loaded database.
async fn prepare(options: &Options) -> anyhow::Result<BenchDb> {
    let db = BenchDb::named(&options.database)?;
    let url = &db.url;
    if options.reuse && db.exists().await? {
        match recorded_load(url).await? {
            Some(l)
                if l.data_end == options.data_end
                    && i64::from(l.days) == i64::from(options.days)
                    && i64::from(l.per_day) == i64::from(options.per_day)
                    && i64::from(l.alerts) == i64::from(options.alerts) =>
            {
                println!(
                    "reusing {}: {} days x {} a day ending {}, loaded in {:.0} s",
                    db.name,
                    l.days,
                    thousands(i64::from(l.per_day)),
                    l.data_end.to_rfc3339_opts(SecondsFormat::Secs, true),
                    l.seconds
                );
                match PgStore::connect(url, PoolSettings::default()).await {
                    Ok(store) => {
                        store.close().await;
                        restore(url, options).await?;
                        return Ok(db);
                    }
                    // A migration changed since the load: the data must be loaded again.
                    Err(e @ remaudit_store::StoreError::Schema(_)) => {
                        println!("  the schema changed since the load ({e}): loading it afresh");
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Some(_) => println!(
                "{} holds a load of another size or clock: loading it afresh",
                db.name
            ),
            None => println!(
                "{} exists but holds no recorded load: loading it afresh",
                db.name
            ),
        }
    }
    db.recreate().await?;
    println!(
        "loading {}: {} days x {} remediations a day = {} remediations, ending {}",
        db.name,
        options.days,
        thousands(i64::from(options.per_day)),
        thousands(i64::from(options.days) * i64::from(options.per_day)),
        options.data_end.to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    let seconds = load(url, options).await?;
    println!("load time {seconds:.1} s (generator, without the migrations)");
    Ok(db)
}

/// Prints the size of the database and of its big tables, and the rows' mix.
async fn describe(pool: &PgPool) -> anyhow::Result<()> {
    let database: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
        .fetch_one(pool)
        .await?;
    println!("database size {:.0} MiB", mib(database));
    let tables: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT c.relname::text,
                COALESCE(sum(pg_total_relation_size(p.oid)), pg_total_relation_size(c.oid))::int8,
                COALESCE(sum(pg_indexes_size(p.oid)), pg_indexes_size(c.oid))::int8
         FROM pg_class c
         LEFT JOIN pg_inherits i ON i.inhparent = c.oid
         LEFT JOIN pg_class p ON p.oid = i.inhrelid
         WHERE c.relname IN ('remediation_audit', 'remediation_audit_events', 'bench_lookup_daily', 'bench_lookup_flat')
         GROUP BY c.relname, c.oid ORDER BY 2 DESC",
    )
    .fetch_all(pool)
    .await?;
    for (name, total, indexes) in tables {
        println!(
            "  {name:<26} {:>9.1} MiB (indexes {:>8.1} MiB)",
            mib(total),
            mib(indexes)
        );
    }
    let weeks: (i64, i64, i64) = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT count(*), sum(remediations)::int8, sum(events)::int8 FROM {WEEKS_TABLE}"
    )))
    .fetch_one(pool)
    .await?;
    let phases: Vec<(String, i64)> = sqlx::query_as(
        "SELECT CASE WHEN legal_hold THEN 'on legal hold' WHEN phase_rank < 9 THEN 'not terminal'
                     ELSE overall_phase::text END, count(*)
         FROM bench_lookup_flat GROUP BY 1 ORDER BY 2 DESC",
    )
    .fetch_all(pool)
    .await?;
    #[allow(clippy::cast_precision_loss)]
    let per = weeks.2 as f64 / weeks.1.max(1) as f64;
    println!(
        "as loaded: {} weeks, {} remediations, {} events ({per:.2} a remediation); {}",
        weeks.0,
        thousands(weeks.1),
        thousands(weeks.2),
        phases
            .iter()
            .map(|(p, n)| format!("{p} {}", thousands(*n)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Measuring

/// What one measured step cost.
#[derive(Debug, Clone, Copy, Default)]
struct Cost {
    seconds: f64,
    wal: i64,
}

/// Starts a measurement: the time and the WAL position.
async fn mark(pool: &PgPool) -> anyhow::Result<(Instant, String)> {
    let lsn: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(pool)
        .await?;
    Ok((Instant::now(), lsn))
}

async fn since(pool: &PgPool, from: &(Instant, String)) -> anyhow::Result<Cost> {
    let seconds = from.0.elapsed().as_secs_f64();
    let wal: i64 =
        sqlx::query_scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::int8")
            .bind(&from.1)
            .fetch_one(pool)
            .await?;
    Ok(Cost { seconds, wal })
}

/// The superuser connection for CHECKPOINT, when trust or a password lets us in.
struct Checkpointer(Option<PgConnection>);

impl Checkpointer {
    async fn connect(url: &str, user: &str) -> Self {
        let Ok(options) = PgConnectOptions::from_str(url) else {
            return Self(None);
        };
        match PgConnection::connect_with(&options.username(user)).await {
            Ok(conn) => Self(Some(conn)),
            Err(e) => {
                println!("note: no CHECKPOINT before the steps (cannot connect as {user}: {e})");
                Self(None)
            }
        }
    }

    /// Closes the superuser's connection (before the database is dropped).
    async fn close(self) {
        if let Some(conn) = self.0 {
            let _ = conn.close().await;
        }
    }

    async fn checkpoint(&mut self) {
        if let Some(conn) = &mut self.0
            && let Err(e) = sqlx::raw_sql("CHECKPOINT").execute(&mut *conn).await
        {
            println!("note: CHECKPOINT failed: {e}");
            self.0 = None;
        }
    }
}

/// The machine's 1-minute load average and what else PostgreSQL is doing.
async fn busy(pool: &PgPool) -> String {
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned());
    let others: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE backend_type = 'client backend' AND state = 'active'
           AND datname IS DISTINCT FROM current_database()",
    )
    .fetch_one(pool)
    .await
    .unwrap_or(-1);
    let test_dbs: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_database WHERE datname LIKE 'remaudit\\_test\\_%'",
    )
    .fetch_one(pool)
    .await
    .unwrap_or(-1);
    let mut out = format!("load average {load}");
    if others > 0 || test_dbs > 0 {
        out.push_str(&format!(
            "; BUSY: {others} active sessions in other databases, {test_dbs} test databases"
        ));
    }
    out
}

/// application, state, wait type, wait (with the lock waited for), query
/// (marked when a parallel worker runs it).
type ActivityRow = (String, String, Option<String>, Option<String>, String);

/// Samples, first and last seen (seconds).
type Seen = (u32, f64, f64);

/// Per (application, what): samples, first and last seen (seconds).
type Samples = HashMap<(String, String), Seen>;

/// Samples `pg_stat_activity` every 100 ms: what the sessions of the given
/// applications are running, or waiting for.
struct Sampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(Samples, u32, f64)>,
}

impl Sampler {
    fn start(pool: PgPool, apps: &[&str]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let apps: Vec<String> = apps.iter().map(|a| (*a).to_owned()).collect();
        let watch_job = apps.iter().any(|a| a == RETENTION_APP);
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut counts: Samples = HashMap::new();
            let seen = |counts: &mut Samples, key: (String, String), at: f64| {
                let entry = counts.entry(key).or_insert((0, at, at));
                entry.0 += 1;
                entry.2 = at;
            };
            let mut rounds = 0_u32;
            while !flag.load(Ordering::Relaxed) {
                let rows: Vec<ActivityRow> =
                    sqlx::query_as(
                        "SELECT a.application_name::text, a.state::text, a.wait_event_type::text,
                                a.wait_event::text || COALESCE(' ' || (
                                    SELECT l.mode || ' on ' || COALESCE(l.relation::regclass::text, l.locktype)
                                    FROM pg_locks l WHERE l.pid = a.pid AND NOT l.granted LIMIT 1), ''),
                                CASE WHEN a.backend_type = 'parallel worker' THEN '(parallel worker) ' ELSE '' END
                                    || left(regexp_replace(a.query, '\\s+', ' ', 'g'), 110)
                         FROM pg_stat_activity a
                         WHERE a.application_name = ANY($1) AND a.pid <> pg_backend_pid()
                         ORDER BY a.state_change DESC NULLS LAST",
                    )
                    .bind(&apps)
                    .fetch_all(&pool)
                    .await
                    .unwrap_or_default();
                rounds += 1;
                let at = started.elapsed().as_secs_f64();
                let job_busy = rows
                    .iter()
                    .any(|(app, state, ..)| app == RETENTION_APP && state != "idle");
                if watch_job && !job_busy {
                    // The query the job finished last tells where its client is.
                    let last = rows
                        .iter()
                        .find(|(app, ..)| app == RETENTION_APP)
                        .map_or("?", |r| r.4.as_str());
                    seen(
                        &mut counts,
                        (
                            RETENTION_APP.to_owned(),
                            format!("(no session of the job busy; last finished: {last})"),
                        ),
                        at,
                    );
                }
                for (app, state, wait_type, wait, query) in rows {
                    let what = if state == "idle in transaction" {
                        "(idle in transaction: the client is working)".to_owned()
                    } else if state == "idle" {
                        continue;
                    } else {
                        let waiting = match (wait_type.as_deref(), wait) {
                            (Some("Lock"), Some(w)) => format!("[waits Lock:{w}] "),
                            (Some("IO"), Some(w)) => format!("[IO:{w}] "),
                            (Some("Client"), Some(w)) => format!("[Client:{w}] "),
                            _ => String::new(),
                        };
                        format!("{waiting}{query}")
                    };
                    seen(&mut counts, (app, what), at);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (counts, rounds, started.elapsed().as_secs_f64())
        });
        Self { stop, task }
    }

    /// Stops and prints the `top` most sampled entries of each application.
    async fn finish(self, top: usize) {
        self.stop.store(true, Ordering::Relaxed);
        let Ok((counts, rounds, wall)) = self.task.await else {
            return;
        };
        let per = wall / f64::from(rounds.max(1));
        let mut by_app: BTreeMap<String, Vec<(String, Seen)>> = BTreeMap::new();
        for ((app, what), n) in counts {
            by_app.entry(app).or_default().push((what, n));
        }
        for (app, mut entries) in by_app {
            entries.sort_by_key(|e| std::cmp::Reverse(e.1.0));
            println!(
                "    where {app}'s sessions were (sampled every {:.0} ms; connection-seconds, first-last seen):",
                per * 1e3
            );
            for (what, (n, first, last)) in entries.iter().take(top) {
                println!(
                    "      ~{:>6.1} s  {first:>5.1}-{last:<5.1}  {what}",
                    f64::from(*n) * per
                );
            }
        }
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    bench::percentile(sorted, p).unwrap_or(f64::NAN)
}

fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    values
}

/// Total size of the files under a directory.
fn dir_size(path: &std::path::Path) -> (u64, u64) {
    let mut files = 0;
    let mut bytes = 0;
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                let (f, b) = dir_size(&entry.path());
                files += f;
                bytes += b;
            } else {
                files += 1;
                bytes += meta.len();
            }
        }
    }
    (files, bytes)
}

async fn count(pool: &PgPool, sql: &str) -> anyhow::Result<i64> {
    sqlx::query_scalar(AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .with_context(|| sql.to_owned())
}

// ---------------------------------------------------------------------------
// e: post-mortem lookups

struct LookupLine {
    table: &'static str,
    latencies: Vec<f64>,
    rows: usize,
}

impl LookupLine {
    #[allow(clippy::cast_precision_loss)]
    fn rows_each(&self) -> f64 {
        self.rows as f64 / self.latencies.len().max(1) as f64
    }
}

fn print_lookups(lines: &[LookupLine]) {
    let Some(first) = lines.first() else { return };
    println!("  post-mortem lookup latency (ms; p50 relative to the weekly table's):");
    let base = pct(&first.latencies, 0.5);
    for l in lines {
        println!(
            "    {:<32} p50 {:>7.3}  p95 {:>7.3}  p99 {:>7.3}  ({} lookups, {:.1} rows each)  {:>5.2}x",
            l.table,
            pct(&l.latencies, 0.5),
            pct(&l.latencies, 0.95),
            pct(&l.latencies, 0.99),
            l.latencies.len(),
            l.rows_each(),
            pct(&l.latencies, 0.5) / base
        );
    }
}

/// The plan of one lookup: its shape, partitions scanned, buffers, times.
fn plan_summary(explain: &Value) -> String {
    fn walk(node: &Value, scans: &mut usize, types: &mut Vec<String>, depth: usize) {
        let kind = node["Node Type"].as_str().unwrap_or("?");
        if kind.contains("Scan") {
            *scans += 1;
        } else if depth < 3 {
            types.push(kind.to_owned());
        }
        if let Some(children) = node["Plans"].as_array() {
            for child in children {
                walk(child, scans, types, depth + 1);
            }
        }
    }
    let top = &explain[0];
    let plan = &top["Plan"];
    let (mut scans, mut types) = (0, Vec::new());
    walk(plan, &mut scans, &mut types, 0);
    format!(
        "{} over {scans} index scans; buffers hit {} read {}; planning {:.2} ms, execution {:.2} ms",
        types.join(" > "),
        plan["Shared Hit Blocks"].as_i64().unwrap_or(0),
        plan["Shared Read Blocks"].as_i64().unwrap_or(0),
        top["Planning Time"].as_f64().unwrap_or(f64::NAN),
        top["Execution Time"].as_f64().unwrap_or(f64::NAN),
    )
}

async fn lookups(url: &str, options: &Options) -> anyhow::Result<Vec<LookupLine>> {
    let tables = [
        ("remediation_audit", "weekly partitions (live table)"),
        ("bench_lookup_daily", "daily partitions (copy)"),
        ("bench_lookup_flat", "not partitioned (copy)"),
    ];
    let mut conn = PgConnection::connect(url).await?;
    let fingerprints: Vec<String> = sqlx::query_scalar(
        "SELECT md5('fp-' || a) FROM generate_series(0, $1 - 1) AS a ORDER BY md5('pick-' || a) LIMIT $2",
    )
    .bind(i32::try_from(options.alerts)?)
    .bind(i64::try_from(options.lookups)?)
    .fetch_all(&mut conn)
    .await?;
    let sql: Vec<String> = tables
        .iter()
        .map(|(t, _)| {
            format!(
                "SELECT {LOOKUP_COLUMNS} FROM {t} WHERE alert_fingerprint = $1 \
                 ORDER BY start_time DESC, id DESC LIMIT 50"
            )
        })
        .collect();
    // Warm-up: every lookup once on every table.
    for q in &sql {
        for fp in &fingerprints {
            sqlx::query(AssertSqlSafe(q.clone()))
                .bind(fp)
                .fetch_all(&mut conn)
                .await?;
        }
    }
    let mut latencies = vec![Vec::new(); tables.len()];
    let mut rows = vec![0; tables.len()];
    for (i, fp) in fingerprints.iter().enumerate() {
        for j in 0..tables.len() {
            let which = (i + j) % tables.len();
            let t = Instant::now();
            let got = sqlx::query(AssertSqlSafe(sql[which].clone()))
                .bind(fp)
                .fetch_all(&mut conn)
                .await?;
            latencies[which].push(t.elapsed().as_secs_f64() * 1e3);
            rows[which] += got.len();
        }
    }
    // The plan of a typical (median-popularity) fingerprint on each table.
    let mut per_fp: Vec<(i64, &String)> = Vec::new();
    for fp in fingerprints.iter().take(41) {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM bench_lookup_flat WHERE alert_fingerprint = $1",
        )
        .bind(fp)
        .fetch_one(&mut conn)
        .await?;
        per_fp.push((n, fp));
    }
    per_fp.sort();
    let (typical_rows, typical) = per_fp[per_fp.len() / 2];
    println!(
        "  plans for a median fingerprint of the sample ({typical_rows} remediations in 91 days):"
    );
    let mut lines = Vec::new();
    for (((table, label), lat), n) in tables.iter().zip(latencies).zip(rows) {
        let explain: Value = sqlx::query_scalar(AssertSqlSafe(format!(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT {LOOKUP_COLUMNS} FROM {table} \
             WHERE alert_fingerprint = '{typical}' ORDER BY start_time DESC, id DESC LIMIT 50"
        )))
        .fetch_one(&mut conn)
        .await?;
        let shape = plan_summary(&explain);
        println!("    {label:<32} {shape}");
        lines.push(LookupLine {
            table: label,
            latencies: sorted(lat),
            rows: n,
        });
    }
    conn.close().await?;
    Ok(lines)
}

// ---------------------------------------------------------------------------
// f: ingest

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
        sorted(
            self.calls
                .iter()
                .filter(|(s, e, _)| within.is_none_or(|(from, to)| *e >= from && *s <= to))
                .map(|(s, e, _)| (e - s) * 1e3)
                .collect(),
        )
    }

    fn line(&self, what: &str, within: Option<(f64, f64)>) -> String {
        let l = self.latencies_ms(within);
        #[allow(clippy::cast_precision_loss)]
        let rate = self.records as f64 / self.wall;
        format!(
            "{what:<40} calls {:>6}  p50 {:>8.1} ms  p99 {:>8.1} ms  max {:>8.1} ms  ({rate:>6.0} records/s over {:.1} s, {} errors)",
            l.len(),
            pct(&l, 0.5),
            pct(&l, 0.99),
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
        store: &PgStore,
        pool: &PgPool,
        dir: &std::path::Path,
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
        let sampler = Sampler::start(pool.clone(), &[INGEST_APP]);
        let from = started.elapsed().as_secs_f64();
        let run = measured_run(store, pool, dir, &Settings::default(), clock).await?;
        let to = started.elapsed().as_secs_f64();
        if started.elapsed() < self.window {
            tokio::time::sleep(self.window - started.elapsed()).await;
        }
        stop.store(true, Ordering::Relaxed);
        let during = task.await?;
        sampler.finish(6).await;
        self.analyze().await?;
        Ok((during, run, (from, to)))
    }

    /// Prints (and returns) the lines of a window with the job beside the one without.
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
            pct(&b, 0.5) / pct(&a, 0.5),
            pct(&b, 0.99) / pct(&a, 0.99),
            b.last().unwrap_or(&f64::NAN) / a.last().unwrap_or(&f64::NAN),
            pct(&o, 0.5) / pct(&a, 0.5),
            pct(&o, 0.99) / pct(&a, 0.99),
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

// ---------------------------------------------------------------------------
// The steps

/// One line of the summary.
struct Line {
    name: String,
    remediations: i64,
    events: i64,
    cost: Cost,
    days: f64,
    note: String,
}

impl Line {
    fn per_day_seconds(&self) -> f64 {
        self.cost.seconds / self.days
    }

    #[allow(clippy::cast_precision_loss)]
    fn per_day_wal(&self) -> f64 {
        self.cost.wal as f64 / self.days
    }
}

fn print_cost(what: &str, rows: &str, cost: Cost) {
    println!(
        "  {what:<44} {rows:<40} {:>9.3} s  WAL {:>10.1} MiB",
        cost.seconds,
        mib(cost.wal)
    );
}

fn print_report(report: &RunReport) {
    for b in &report.batches {
        println!(
            "    batch {:>4} {:<32} remediations {:>9} events {:>10} kept {:>6} bytes {:>12}",
            b.batch,
            b.source,
            thousands(as_i64(b.remediations)),
            thousands(as_i64(b.events)),
            thousands(as_i64(b.kept)),
            thousands(as_i64(b.bytes))
        );
    }
}

/// Summary rows and events that a run at `clock` finds due, by the job's rule.
async fn due_rows(pool: &PgPool, clock: DateTime<Utc>) -> anyhow::Result<(i64, i64)> {
    let row: (i64, i64) = sqlx::query_as(
        "WITH due AS (SELECT namespace, remediation_name, start_time FROM remediation_audit
                      WHERE NOT legal_hold AND (deleted_at IS NOT NULL OR retention_expiry_time <= $1))
         SELECT (SELECT count(*) FROM due),
                (SELECT count(*) FROM remediation_audit_events e JOIN due d USING (namespace, remediation_name, start_time))",
    )
    .bind(clock)
    .fetch_one(pool)
    .await?;
    Ok(row)
}

/// A retention store: its own pool, tagged for the sampler.
async fn retention_store(url: &str) -> anyhow::Result<PgStore> {
    Ok(PgStore::connect(
        &format!("{url}?application_name={RETENTION_APP}"),
        PoolSettings {
            max_connections: 4,
            acquire_timeout: Duration::from_secs(60),
            ..PoolSettings::default()
        },
    )
    .await?)
}

/// What a measured run of the job did.
struct Run {
    report: Result<RunReport, String>,
    cost: Cost,
    /// Files and bytes the run added to the archive.
    files: (u64, u64),
}

impl Run {
    /// The report, or an empty one after printing the failure.
    fn report(&self) -> RunReport {
        match &self.report {
            Ok(r) => r.clone(),
            Err(e) => {
                surprise(format_args!(
                    "run_once failed after {:.1} s: {e}",
                    self.cost.seconds
                ));
                RunReport::default()
            }
        }
    }
}

/// Runs the job once at `clock`, measured and sampled.
async fn measured_run(
    store: &PgStore,
    pool: &PgPool,
    archive_dir: &std::path::Path,
    settings: &Settings,
    clock: DateTime<Utc>,
) -> anyhow::Result<Run> {
    std::fs::create_dir_all(archive_dir)?;
    let before = dir_size(archive_dir);
    let archive = Archive::open(&format!("file://{}", archive_dir.display()))?;
    let sampler = Sampler::start(pool.clone(), &[RETENTION_APP]);
    let m = mark(pool).await?;
    let result = remaudit_retention::run_once(store, &archive, settings, clock, false).await;
    let cost = since(pool, &m).await?;
    sampler.finish(8).await;
    Ok(Run {
        report: result.map_err(|e| format!("{e:#}")),
        cost,
        files: {
            let after = dir_size(archive_dir);
            (
                after.0.saturating_sub(before.0),
                after.1.saturating_sub(before.1),
            )
        },
    })
}

/// What became of a retired week's live tables.
async fn week_fate(pool: &PgPool, week: DateTime<Utc>) -> anyhow::Result<String> {
    let names = [
        summary_week(week),
        events_week(week),
        table_of("remediation_audit_archive", week),
        table_of("remediation_audit_events_archive", week),
    ];
    let mut present = Vec::new();
    for name in &names {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(name)
            .fetch_one(pool)
            .await?;
        present.push(exists);
    }
    Ok(match (present[0] || present[1], present[2] && present[3]) {
        (false, true) => format!(
            "now the archive's partitions {} and {} (no row copied)",
            names[2], names[3]
        ),
        (false, false) => "dropped (its rows were copied into the archive tables)".to_owned(),
        (true, _) => format!("{} / {} still exist", names[0], names[1]),
    })
}

/// Rows of a week that a retired partition left in the default partition.
async fn kept_in_default(pool: &PgPool, week: DateTime<Utc>) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM remediation_audit_default WHERE start_time >= $1 AND start_time < $2",
    )
    .bind(week)
    .bind(week + TimeDelta::weeks(1))
    .fetch_one(pool)
    .await?)
}

// ---------------------------------------------------------------------------
// Checks

/// Checks the load: every row in its weekly partition (none in the default
/// one, none twice) and as many remediations as the knobs ask for.
async fn check_loaded(pool: &PgPool, options: &Options) -> anyhow::Result<()> {
    let (weeks, remediations, events): (i64, i64, i64) = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT count(*), sum(remediations)::int8, sum(events)::int8 FROM {WEEKS_TABLE}"
    )))
    .fetch_one(pool)
    .await?;
    expect_eq(
        "weeks loaded",
        &weeks,
        &i64::try_from(options.weeks().len())?,
    );
    expect_eq(
        "remediations loaded",
        &remediations,
        &(i64::from(options.days) * i64::from(options.per_day)),
    );
    for (table, want) in [
        ("remediation_audit", remediations),
        ("remediation_audit_events", events),
    ] {
        let census = bench::census(pool, table).await?;
        census.check(table, true);
        expect_eq(&format!("{table}: rows"), &census.total, &want);
    }
    Ok(())
}

/// Checks that every loaded row and event is in exactly one place, the live
/// tables or the archive, except those of the week the raw steps removed
/// (`removed`: its remediations and events as loaded).
async fn check_places(pool: &PgPool, removed: &(i64, i64)) -> anyhow::Result<()> {
    let loaded: (i64, i64) = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT sum(remediations)::int8, sum(events)::int8 FROM {WEEKS_TABLE}"
    )))
    .fetch_one(pool)
    .await?;
    // The generator names its remediations rr-<id>; the ingest step's are
    // bench-<run>-….
    for (what, live, archive, want) in [
        (
            "remediations",
            "remediation_audit",
            "remediation_audit_archive",
            loaded.0 - removed.0,
        ),
        (
            "events",
            "remediation_audit_events",
            "remediation_audit_events_archive",
            loaded.1 - removed.1,
        ),
    ] {
        let (places, distinct, live_n, archived_n): (i64, i64, i64, i64) =
            sqlx::query_as(AssertSqlSafe(format!(
                "WITH u AS (SELECT id, true AS live FROM {live} WHERE remediation_name LIKE 'rr-%'
                            UNION ALL SELECT id, false FROM {archive} WHERE remediation_name LIKE 'rr-%')
                 SELECT count(*), count(DISTINCT id), count(*) FILTER (WHERE live),
                        count(*) FILTER (WHERE NOT live) FROM u"
            )))
            .fetch_one(pool)
            .await?;
        println!(
            "  {what}: {} loaded, {} removed by the raw steps; {} live + {} archived",
            thousands(if what == "events" { loaded.1 } else { loaded.0 }),
            thousands(if what == "events" {
                removed.1
            } else {
                removed.0
            }),
            thousands(live_n),
            thousands(archived_n)
        );
        expect_eq(
            &format!("loaded {what} in the live tables or the archive"),
            &distinct,
            &want,
        );
        expect_eq(
            &format!("loaded {what} in more than one place"),
            &(places - distinct),
            &0,
        );
    }
    Ok(())
}

/// Checks every batch of the runs with `verify`.
async fn check_archive(url: &str, dir: &std::path::Path) -> anyhow::Result<()> {
    let store = PgStore::connect(url, PoolSettings::default()).await?;
    let archive = Archive::open(&format!("file://{}", dir.display()))?;
    let (from, to) = remaudit_retention::all_time();
    let report = remaudit_retention::verify(&store, &archive, from, to).await?;
    store.close().await;
    println!(
        "  verify: {} batches, {} remediations, {} events, {} problems",
        report.batches,
        thousands(as_i64(report.remediations)),
        thousands(as_i64(report.events)),
        report.problems.len()
    );
    if report.batches == 0 {
        surprise("verify found no batch");
    }
    for problem in &report.problems {
        surprise(format_args!("verify: {problem}"));
    }
    Ok(())
}

#[allow(clippy::too_many_lines)]
async fn run() -> anyhow::Result<()> {
    let options = Options::parse()?;
    if options.smoke {
        println!(
            "smoke run: {} days x {} remediations, correctness only (no figure here means anything)",
            options.days, options.per_day
        );
    }
    let db = prepare(&options).await?;
    let url = db.url.clone();
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await?;
    describe(&pool).await?;
    check_loaded(&pool, &options).await?;
    if options.load_only {
        pool.close().await;
        db.finish(options.drop).await?;
        return bench::verdict("bench-retention");
    }
    let mut su = Checkpointer::connect(&url, &options.superuser).await;
    let weeks = options.weeks();
    let age = Settings::default().policy.age;
    let per_day = i64::from(options.per_day);
    let expected: Vec<(String, i64, i64)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT week, remediations, events FROM {WEEKS_TABLE} ORDER BY week"
    )))
    .fetch_all(&pool)
    .await?;
    let expected_week = |week: DateTime<Utc>| {
        let key = week.format("%Y%m%d").to_string();
        expected
            .iter()
            .find(|(w, _, _)| *w == key)
            .map_or((0, 0), |(_, r, e)| (*r, *e))
    };
    let archive_root = tempfile::Builder::new()
        .prefix("remaudit-bench-retire-")
        .tempdir_in("/tmp")?;
    // One archive for every run, as an installation has.
    let archive_dir = archive_root.path().join("archive");
    println!(
        "clock of the data: {}; weeks {} .. {}; archive files under {}",
        options.data_end.to_rfc3339_opts(SecondsFormat::Secs, true),
        day(weeks[0]),
        day(*weeks.last().context("weeks")?),
        archive_root.path().display()
    );
    println!(
        "WAL: pg_wal_lsn_diff of pg_current_wal_lsn() around each step (cluster-wide){}",
        if su.0.is_some() {
            ", a CHECKPOINT before each"
        } else {
            ""
        }
    );
    let mut lines: Vec<Line> = Vec::new();

    // e: post-mortem lookups, on the full data.
    let lookup_lines = if options.lookup {
        println!();
        println!(
            "e. post-mortem lookup: SELECT {LOOKUP_COLUMNS} ... WHERE alert_fingerprint = $1 \
             ORDER BY start_time DESC, id DESC LIMIT 50 ({} random fingerprints of {}, warm caches; {})",
            options.lookups,
            options.alerts,
            busy(&pool).await
        );
        let lines = lookups(&url, &options).await?;
        print_lookups(&lines);
        lines
    } else {
        Vec::new()
    };

    // a: raw row-wise DELETE of one day, then VACUUM.
    let w0 = weeks[0];
    let day_a = w0 + TimeDelta::days(2);
    println!();
    println!(
        "a. raw PostgreSQL, row-wise: DELETE one day ({}) from both live tables, committed; then VACUUM ({})",
        day(day_a),
        busy(&pool).await
    );
    su.checkpoint().await;
    let m = mark(&pool).await?;
    let mut tx = pool.begin().await?;
    let t = Instant::now();
    let deleted_events = sqlx::query(
        "DELETE FROM remediation_audit_events WHERE start_time >= $1 AND start_time < $2",
    )
    .bind(day_a)
    .bind(day_a + TimeDelta::days(1))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let events_seconds = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let deleted =
        sqlx::query("DELETE FROM remediation_audit WHERE start_time >= $1 AND start_time < $2")
            .bind(day_a)
            .bind(day_a + TimeDelta::days(1))
            .execute(&mut *tx)
            .await?
            .rows_affected();
    let summary_seconds = t.elapsed().as_secs_f64();
    tx.commit().await?;
    let delete_cost = since(&pool, &m).await?;
    println!(
        "  DELETE events {events_seconds:.3} s, DELETE summary {summary_seconds:.3} s, with COMMIT:"
    );
    print_cost(
        "DELETE one day (both tables)",
        &format!(
            "{} remediations, {} events",
            thousands(as_i64(deleted)),
            thousands(as_i64(deleted_events))
        ),
        delete_cost,
    );
    let m = mark(&pool).await?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "VACUUM {}, {}",
        summary_week(w0),
        events_week(w0)
    )))
    .execute(&pool)
    .await?;
    let vacuum_cost = since(&pool, &m).await?;
    print_cost(
        "VACUUM the week's two partitions",
        "(autovacuum is off on this cluster)",
        vacuum_cost,
    );
    lines.push(Line {
        name: "a  raw DELETE, 1 day".to_owned(),
        remediations: as_i64(deleted),
        events: as_i64(deleted_events),
        cost: delete_cost,
        days: 1.0,
        note: String::new(),
    });
    lines.push(Line {
        name: "a' raw DELETE + VACUUM, 1 day".to_owned(),
        remediations: as_i64(deleted),
        events: as_i64(deleted_events),
        cost: Cost {
            seconds: delete_cost.seconds + vacuum_cost.seconds,
            wal: delete_cost.wal + vacuum_cost.wal,
        },
        days: 1.0,
        note: String::new(),
    });

    // b: raw DETACH + DROP of W0's pair.
    println!();
    println!(
        "b. raw PostgreSQL, partition: DETACH PARTITION + DROP TABLE of week {} (both tables; {})",
        day(w0),
        busy(&pool).await
    );
    let (s0, e0) = (summary_week(w0), events_week(w0));
    let rows_b = count(&pool, &format!("SELECT count(*) FROM {s0}")).await?;
    let events_b = count(&pool, &format!("SELECT count(*) FROM {e0}")).await?;
    su.checkpoint().await;
    let m = mark(&pool).await?;
    let mut conn = pool.acquire().await?;
    let mut parts = Vec::new();
    for sql in [
        format!("ALTER TABLE remediation_audit DETACH PARTITION {s0}"),
        format!("ALTER TABLE remediation_audit_events DETACH PARTITION {e0}"),
        format!("DROP TABLE {s0}, {e0}"),
    ] {
        let t = Instant::now();
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await?;
        parts.push(t.elapsed().as_secs_f64());
    }
    drop(conn);
    let drop_cost = since(&pool, &m).await?;
    println!(
        "  DETACH summary {:.3} s, DETACH events {:.3} s, DROP both {:.3} s:",
        parts[0], parts[1], parts[2]
    );
    print_cost(
        "DETACH + DROP one week",
        &format!(
            "{} remediations, {} events (6 days: a took one)",
            thousands(rows_b),
            thousands(events_b)
        ),
        drop_cost,
    );
    lines.push(Line {
        name: "b  raw DETACH + DROP, 1 week".to_owned(),
        remediations: rows_b,
        events: events_b,
        cost: drop_cost,
        days: 7.0,
        note: String::new(),
    });

    // c: remaudit by partition, W1.
    let w1 = weeks[1];
    let clock_c = w1 + TimeDelta::weeks(1) + age;
    let store = retention_store(&url).await?;
    println!();
    println!(
        "c. remaudit by partition: run_once at {} (week {} wholly due; {})",
        clock_c.to_rfc3339_opts(SecondsFormat::Secs, true),
        day(w1),
        busy(&pool).await
    );
    println!(
        "   it detaches the week from both live tables, archives its rows (archive tables and \
         gzip JSON Lines files), and takes the week out of the live tables"
    );
    let s1 = summary_week(w1);
    let keep_c = count(
        &pool,
        &format!(
            "SELECT count(*) FROM {s1} WHERE legal_hold OR (deleted_at IS NULL AND \
             (retention_expiry_time IS NULL OR retention_expiry_time > '{}'))",
            clock_c.to_rfc3339()
        ),
    )
    .await?;
    su.checkpoint().await;
    let run_c = measured_run(&store, &pool, &archive_dir, &Settings::default(), clock_c).await?;
    let (report_c, cost_c, files_c) = (run_c.report(), run_c.cost, run_c.files);
    print_report(&report_c);
    print_cost(
        "run_once, one week",
        &format!(
            "{} remediations, {} events moved",
            thousands(as_i64(report_c.remediations())),
            thousands(as_i64(report_c.events()))
        ),
        cost_c,
    );
    println!(
        "    archive: {} bytes in the batches, {} files, {:.1} MiB on disk",
        thousands(as_i64(report_c.bytes())),
        files_c.0,
        mib(as_i64(files_c.1))
    );
    let (want_r, want_e) = expected_week(w1);
    let kept_c: u64 = report_c.batches.iter().map(|b| b.kept).sum();
    let left_c = kept_in_default(&pool, w1).await?;
    println!(
        "    check: the week held {} remediations and {} events; {} were not due; moved {} + now in the default partition {} = {}",
        thousands(want_r),
        thousands(want_e),
        thousands(keep_c),
        thousands(as_i64(report_c.remediations())),
        thousands(left_c),
        thousands(as_i64(report_c.remediations()) + left_c)
    );
    if as_i64(report_c.remediations()) + left_c != want_r || left_c != keep_c {
        surprise("the rows do not add up");
    }
    if as_i64(kept_c) != left_c {
        surprise(format_args!(
            "the batch reports kept = {kept_c}, but {left_c} rows of the week went back to the default partition"
        ));
    }
    println!("    the week's tables: {}", week_fate(&pool, w1).await?);
    lines.push(Line {
        name: "c  remaudit by partition, 1 week".to_owned(),
        remediations: as_i64(report_c.remediations()),
        events: as_i64(report_c.events()),
        cost: cost_c,
        days: 7.0,
        note: format!(
            "incl. archiving + {:.0} MiB gzip files",
            mib(as_i64(report_c.bytes()))
        ),
    });

    // f: ingest, alone and while the job retires W2.
    let w2 = weeks[2];
    let clock_f = w2 + TimeDelta::weeks(1) + age;
    let mut ingest_lines = Vec::new();
    if options.ingest {
        let ingest_store = Arc::new(
            PgStore::connect(
                &format!("{url}?application_name={INGEST_APP}"),
                PoolSettings {
                    max_connections: u32::try_from(options.ingest_tasks + 2)?,
                    acquire_timeout: Duration::from_secs(120),
                    ..PoolSettings::default()
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
            busy(&pool).await
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
        let (during, run_f, span) = ingest_env
            .with_job(&store, &pool, &archive_dir, clock_f, "b")
            .await?;
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
            .execute(&pool)
            .await?;
            println!(
                "  the job could not detach the week under ingest; detached it by hand with no ingest ({:.3} s), \
                 then run_once archives and drops the detached week under ingest:",
                t.elapsed().as_secs_f64()
            );
            su.checkpoint().await;
            let (during, run, span) = ingest_env
                .with_job(&store, &pool, &archive_dir, clock_f, "c")
                .await?;
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
        let archive = Archive::open(&format!("file://{}", archive_dir.display()))?;
        remaudit_retention::run_once(&store, &archive, &Settings::default(), clock_f, false)
            .await?;
    }

    // d: remaudit row-wise, Monday of W3.
    let w3 = weeks[3];
    let clock_d = w3 + TimeDelta::days(1) + age;
    let exact = Settings {
        exact: true,
        batch_rows: 5000,
        ..Settings::default()
    };
    println!();
    println!(
        "d. remaudit row-wise: run_once with exact, batch_rows 5000 at {} (Monday {} due, its week is not; {})",
        clock_d.to_rfc3339_opts(SecondsFormat::Secs, true),
        day(w3),
        busy(&pool).await
    );
    let (due_r, due_e) = due_rows(&pool, clock_d).await?;
    su.checkpoint().await;
    let run_d = measured_run(&store, &pool, &archive_dir, &exact, clock_d).await?;
    let (report_d, cost_d, files_d) = (run_d.report(), run_d.cost, run_d.files);
    let sources: BTreeMap<&str, usize> =
        report_d.batches.iter().fold(BTreeMap::new(), |mut m, b| {
            *m.entry(b.source.as_str()).or_default() += 1;
            m
        });
    println!(
        "    {} batches ({})",
        report_d.batches.len(),
        sources
            .iter()
            .map(|(s, n)| format!("{n} from {s}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    print_cost(
        "run_once exact, one day",
        &format!(
            "{} remediations, {} events moved",
            thousands(as_i64(report_d.remediations())),
            thousands(as_i64(report_d.events()))
        ),
        cost_d,
    );
    println!(
        "    archive: {} bytes in the batches, {} files, {:.1} MiB on disk",
        thousands(as_i64(report_d.bytes())),
        files_d.0,
        mib(as_i64(files_d.1))
    );
    let left = due_rows(&pool, clock_d).await?;
    println!(
        "    check: {} remediations and {} events were due before the run; {} and {} after",
        thousands(due_r),
        thousands(due_e),
        thousands(left.0),
        thousands(left.1)
    );
    if as_i64(report_d.remediations()) != due_r || as_i64(report_d.events()) != due_e || left.0 != 0
    {
        surprise("the counts do not add up");
    }
    lines.push(Line {
        name: "d  remaudit row-wise exact, 1 day".to_owned(),
        remediations: as_i64(report_d.remediations()),
        events: as_i64(report_d.events()),
        cost: cost_d,
        days: 1.0,
        note: format!(
            "{} batches, incl. archive rows + gzip files",
            report_d.batches.len()
        ),
    });
    store.close().await;

    // Summary.
    println!();
    println!(
        "summary ({} remediations a day; per day = per week / 7 for b and c):",
        thousands(per_day)
    );
    println!(
        "  {:<36} {:>11} {:>11} {:>10} {:>10} {:>11} {:>13}  note",
        "step", "remediations", "events", "seconds", "WAL MiB", "s per day", "WAL MiB/day"
    );
    for l in &lines {
        println!(
            "  {:<36} {:>11} {:>11} {:>10.3} {:>10.1} {:>11.4} {:>13.2}  {}",
            l.name,
            thousands(l.remediations),
            thousands(l.events),
            l.cost.seconds,
            mib(l.cost.wal),
            l.per_day_seconds(),
            l.per_day_wal() / (1024.0 * 1024.0),
            l.note
        );
    }
    let find = |prefix: &str| lines.iter().find(|l| l.name.starts_with(prefix));
    let ratio = |what: &str, ours: Option<&Line>, raw: Option<&Line>| {
        if let (Some(o), Some(r)) = (ours, raw) {
            println!(
                "  {what:<58} time {:>9.1}x   WAL {:>9.1}x",
                o.per_day_seconds() / r.per_day_seconds(),
                o.per_day_wal() / r.per_day_wal().max(1.0)
            );
        }
    };
    println!("  ratios per day:");
    ratio(
        "remaudit row-wise (d) / raw DELETE (a)",
        find("d "),
        find("a "),
    );
    ratio(
        "remaudit row-wise (d) / raw DELETE + VACUUM (a')",
        find("d "),
        find("a'"),
    );
    ratio(
        "remaudit by partition (c) / raw DETACH + DROP (b)",
        find("c "),
        find("b "),
    );
    ratio(
        "raw DELETE (a) / raw DETACH + DROP (b)",
        find("a "),
        find("b "),
    );
    ratio(
        "remaudit row-wise (d) / remaudit by partition (c)",
        find("d "),
        find("c "),
    );
    print_lookups(&lookup_lines);
    if !ingest_lines.is_empty() {
        println!("  ingest latency per store.insert call:");
        for l in &ingest_lines {
            println!("    {l}");
        }
    }
    println!("  ({})", busy(&pool).await);

    println!();
    println!("checks: every loaded row in exactly one place; the job's batches verified");
    check_places(&pool, &expected_week(w0)).await?;
    check_archive(&url, &archive_dir).await?;
    su.close().await;

    pool.close().await;
    if !options.drop {
        println!("(the next --reuse run regenerates the weeks this run retired)");
    }
    db.finish(options.drop).await?;
    bench::verdict("bench-retention")
}

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}
