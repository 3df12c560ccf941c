//! Analytics latency on a large data set: the service's analytics endpoints
//! against the design's own SQL for the same questions, in the same run, on
//! the same database.
//!
//! The data: 90 days of a large fleet, 110,000 remediations a day (about ten
//! million rows in `remediation_audit`, no timeline events), generated inside
//! PostgreSQL by `benches/analytics/generate.sql` into a fresh database whose
//! migrations the store applied, straight into the weekly partitions (created
//! first for the whole range), with the table's indexes and constraints
//! dropped during the load and rebuilt after it (the shared preparation in
//! `remaudit_testkit::bench`). The database is kept after the run, so that
//! `--reuse` (or `REMAUDIT_BENCH_REUSE=1`) can skip the load next time.
//!
//! Then, for each window (7d and 90d), for every namespace and for one
//! (`team-01`), and for each question, three figures, each from requests sent
//! one after another over loopback:
//! - **ours**: `GET /api/v1/audit/analytics/...` on `remaudit serve`, run as
//!   a child process (rollups, windows aligned to hours or days); its peak
//!   memory (`VmHWM`) is printed at the end;
//! - **exact**: the same request with `exact=true` (computed from the rows);
//! - **raw**: the design's SQL for that question ("Audit Use Cases" in the
//!   design), with its interval replaced by the window, run through the
//!   simple-query protocol and every row fetched. The series has no query in
//!   the design: its success-rate query grouped by day stands in. The
//!   post-mortem query has no interval in the design and runs as written.
//!
//! Each figure is the p50 and p95 of up to `BENCH_REQUESTS` (50) timed calls
//! after up to `BENCH_WARMUP` (5) warm-up calls; a slow question stops after
//! `BENCH_CASE_SECONDS` (15) once it has `BENCH_MIN_SAMPLES` (3) calls, and the
//! table says how many calls each figure is made of.
//!
//! With `--check` (and always in smoke mode) it then checks: every row in
//! exactly one weekly partition, and each endpoint, rollups and exact, equal
//! to the design's SQL (counts by outcome, durations, failures, retries, the
//! post-mortem and slowest lists) over whole days up to today, which hold
//! every row when the data spans less than 90 days (a window's maximum): the
//! endpoints get `since`/`until`, the SQL the same range on `start_time`.
//! A difference prints `SURPRISE` and the run exits non-zero.
//!
//! `--smoke` (or `BENCH_SMOKE=1`): 8 days x 500 remediations in the database
//! `remaudit_bench_smoke_analytics`, one call per figure on the 7d window,
//! the checks, and the database dropped at the end; seconds.
//!
//! Run with `scripts/bench-analytics [OPTIONS]` (it prepares PostgreSQL), or
//! `cargo bench --workspace --bench publish --no-run && cargo bench -p remaudit-server
//! --bench analytics -- [OPTIONS]` (the first command builds the `remaudit` binary
//! the benchmark runs as its service). Options:
//! `--smoke`, `--check`, `--reuse`, `--drop` (drop the database at the end),
//! `--sql-only`, `--load-only`, `--windows 7d,90d`,
//! `--questions success-rate,durations,…`, `--no-namespace`. Knobs:
//! `BENCH_DAYS`, `BENCH_PER_DAY`, `BENCH_DATABASE`, `BENCH_LOAD_CONNECTIONS`
//! (2: the load's jobs run side by side), and the four above. PostgreSQL is
//! `REMAUDIT_TEST_DATABASE_URL` (which `scripts/pg-prepare` sets), its role
//! allowed to create databases.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chrono::{DateTime, SecondsFormat, Utc};
use remaudit_model::analytics::{
    DurationsReport, FailuresReport, RemediationList, RetriesReport, SuccessRateReport,
};
use remaudit_testkit::bench::{self, BenchDb, Job, expect_eq, knob, sized_knob};
use remaudit_testkit::{design_sql, text_rows};
use sqlx::{AssertSqlSafe, Connection as _, PgConnection, PgPool};

/// What every load connection runs first.
const SESSION: &str = include_str!("analytics/session.sql");

/// The generator's view and function.
const GENERATOR: &str = include_str!("analytics/generate.sql");

/// The table, in the benchmark database, that records how it was loaded.
const LOAD_TABLE: &str = "bench_analytics_load";

/// The namespace of the scoped runs; the generator's first.
const SCOPED_NAMESPACE: &str = "team-01";

/// What to run, from the command line and the environment.
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent command-line switches"
)]
struct Options {
    check: bool,
    reuse: bool,
    drop: bool,
    sql_only: bool,
    load_only: bool,
    namespaces: bool,
    windows: Vec<String>,
    questions: Vec<Question>,
    database: String,
    days: usize,
    per_day: usize,
    requests: usize,
    warmup: usize,
    min_samples: usize,
    budget: Duration,
}

const USAGE: &str = "options: --smoke --check --reuse --drop --sql-only --load-only --no-namespace \
                     --windows 7d,90d --questions postmortem,success-rate,series,durations,slowest,failures,retries";

impl Options {
    fn parse() -> anyhow::Result<Self> {
        let smoke = bench::smoke();
        let mut options = Self {
            check: smoke,
            reuse: bench::reuse(),
            drop: smoke,
            sql_only: false,
            load_only: false,
            namespaces: true,
            windows: if smoke {
                vec!["7d".to_owned()]
            } else {
                vec!["7d".to_owned(), "90d".to_owned()]
            },
            questions: Question::ALL.to_vec(),
            database: bench::database_name("analytics"),
            days: sized_knob("BENCH_DAYS", 90, 8).max(1),
            per_day: sized_knob("BENCH_PER_DAY", 110_000, 500).max(1),
            requests: sized_knob("BENCH_REQUESTS", 50, 1).max(1),
            warmup: sized_knob("BENCH_WARMUP", 5, 0),
            min_samples: sized_knob("BENCH_MIN_SAMPLES", 3, 1).max(1),
            budget: Duration::from_secs(u64::try_from(sized_knob("BENCH_CASE_SECONDS", 15, 1))?),
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                // cargo bench passes this to every harness-less bench.
                "--bench" | "--smoke" => {}
                "--check" => options.check = true,
                "--reuse" => options.reuse = true,
                "--drop" => options.drop = true,
                "--sql-only" => options.sql_only = true,
                "--load-only" => options.load_only = true,
                "--no-namespace" => options.namespaces = false,
                "--windows" => {
                    let list = args.next().context(USAGE)?;
                    options.windows = list.split(',').map(str::to_owned).collect();
                    for w in &options.windows {
                        interval(w)?;
                    }
                }
                "--questions" => {
                    let list = args.next().context(USAGE)?;
                    options.questions = list
                        .split(',')
                        .map(|name| {
                            Question::ALL
                                .into_iter()
                                .find(|q| q.name() == name)
                                .with_context(|| format!("unknown question {name:?}; {USAGE}"))
                        })
                        .collect::<anyhow::Result<_>>()?;
                }
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other:?}; {USAGE}"),
            }
        }
        Ok(options)
    }
}

/// The design's interval for a window such as `7d` or `24h`.
fn interval(window: &str) -> anyhow::Result<String> {
    let unit_at = window.len().saturating_sub(1);
    let (number, unit) = window.split_at(unit_at);
    let n: u32 = number
        .parse()
        .with_context(|| format!("window {window:?}: a number then d or h"))?;
    match unit {
        "d" => Ok(format!("{n} days")),
        "h" => Ok(format!("{n} hours")),
        _ => bail!("window {window:?}: a number then d or h"),
    }
}

/// The time a question covers.
enum Period {
    /// The last `window` (`7d`): the design's `created_at > NOW() - INTERVAL`.
    Last { window: String, interval: String },
    /// Remediations that started in `[since, until)`, whole days: the
    /// checks' period, the same rows for the endpoints and the SQL.
    Range {
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    },
}

impl Period {
    fn last(window: &str) -> anyhow::Result<Self> {
        Ok(Self::Last {
            window: window.to_owned(),
            interval: interval(window)?,
        })
    }

    /// The endpoint's query parameters.
    fn query(&self) -> String {
        match self {
            Self::Last { window, .. } => format!("window={window}"),
            Self::Range { since, until } => format!(
                "since={}&until={}",
                since.to_rfc3339_opts(SecondsFormat::Secs, true),
                until.to_rfc3339_opts(SecondsFormat::Secs, true)
            ),
        }
    }

    /// The SQL condition that stands for it.
    fn condition(&self) -> String {
        match self {
            Self::Last { interval, .. } => format!("created_at > NOW() - INTERVAL '{interval}'"),
            Self::Range { since, until } => format!(
                "start_time >= '{}' AND start_time < '{}'",
                since.to_rfc3339(),
                until.to_rfc3339()
            ),
        }
    }
}

/// One analytics question, as an endpoint and as the design's SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Question {
    Postmortem,
    SuccessRate,
    Series,
    Durations,
    Slowest,
    Failures,
    Retries,
}

impl Question {
    const ALL: [Self; 7] = [
        Self::Postmortem,
        Self::SuccessRate,
        Self::Series,
        Self::Durations,
        Self::Slowest,
        Self::Failures,
        Self::Retries,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Postmortem => "postmortem",
            Self::SuccessRate => "success-rate",
            Self::Series => "series",
            Self::Durations => "durations",
            Self::Slowest => "slowest",
            Self::Failures => "failures",
            Self::Retries => "retries",
        }
    }

    /// Path and query of the endpoint.
    fn path(self, scope: &Scope, period: &Period, exact: bool) -> String {
        let (endpoint, extra) = match self {
            Self::Postmortem => (
                "postmortem",
                format!("&alert_fingerprint={}&limit=10", scope.fingerprint),
            ),
            Self::SuccessRate => ("success-rate", String::new()),
            Self::Series => ("success-rate", "&bucket=1d".to_owned()),
            Self::Durations => ("durations", String::new()),
            Self::Slowest => ("slowest", "&limit=20".to_owned()),
            Self::Failures => ("failures", String::new()),
            Self::Retries => ("retries", String::new()),
        };
        let mut path = format!(
            "/api/v1/audit/analytics/{endpoint}?{}{extra}",
            period.query()
        );
        if let Some(ns) = &scope.namespace {
            let _ = write!(path, "&namespace={ns}");
        }
        if exact {
            path.push_str("&exact=true");
        }
        path
    }

    /// The design's query for this question over the period: its interval
    /// replaced by the window's, or, for a range, its condition on
    /// `created_at` by one on `start_time` (which the endpoints filter on).
    fn design_sql(self, scope: &Scope, period: &Period) -> String {
        let query = match self {
            Self::Postmortem => {
                design_sql::with_fingerprint(design_sql::POSTMORTEM, &scope.fingerprint)
            }
            Self::SuccessRate => design_sql::SUCCESS_RATE.to_owned(),
            Self::Series => design_sql::success_rate_by_day(design_sql::SUCCESS_RATE),
            Self::Durations => design_sql::DURATIONS.to_owned(),
            Self::Slowest => design_sql::SLOWEST.to_owned(),
            Self::Failures => design_sql::FAILURES.to_owned(),
            Self::Retries => design_sql::RETRIES.to_owned(),
        };
        // The post-mortem query has no period in the design: a window leaves
        // it as written, a range (the checks') still applies, as it does to
        // the endpoint.
        let query = match period {
            Period::Last { interval, .. } => design_sql::with_interval(&query, interval),
            Period::Range { .. } => design_sql::with_period(&query, &period.condition()),
        };
        match &scope.namespace {
            Some(ns) => design_sql::with_namespace(&query, ns),
            None => query,
        }
    }
}

/// Which remediations a run looks at.
struct Scope {
    /// `None`: every namespace.
    namespace: Option<String>,
    /// The alert of the post-mortem: the scope's most frequent of the last day.
    fingerprint: String,
}

/// One way of asking a question.
enum Probe {
    /// A path and query on the service.
    Http(String),
    /// SQL, through the simple-query protocol.
    Sql(String),
}

/// Where probes go.
struct Targets {
    http: reqwest::Client,
    base: String,
    pool: PgPool,
}

impl Probe {
    /// Asks once; returns the size of the answer (bytes, or rows for SQL).
    async fn once(&self, targets: &Targets) -> anyhow::Result<usize> {
        match self {
            Self::Http(path) => {
                let response = targets
                    .http
                    .get(format!("{}{path}", targets.base))
                    .send()
                    .await?;
                let status = response.status();
                let body = response.bytes().await?;
                if !status.is_success() {
                    let text = String::from_utf8_lossy(&body);
                    bail!("{status}: {}", text.chars().take(300).collect::<String>());
                }
                Ok(body.len())
            }
            Self::Sql(sql) => Ok(sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
                .fetch_all(&targets.pool)
                .await?
                .len()),
        }
    }
}

/// The timed calls of one probe.
struct Timing {
    /// Sorted.
    latencies: Vec<Duration>,
    size: usize,
}

impl Timing {
    /// Milliseconds of the `p` quantile of the calls.
    fn ms(&self, p: f64) -> f64 {
        bench::percentile_ms(&self.latencies, p)
    }
}

/// Warms up, then times calls until the sample or the time budget is used up.
async fn measure(probe: &Probe, targets: &Targets, options: &Options) -> anyhow::Result<Timing> {
    let started = Instant::now();
    for _ in 0..options.warmup {
        probe.once(targets).await?;
        if started.elapsed() > options.budget / 3 {
            break;
        }
    }
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut size = 0;
    while latencies.len() < options.requests
        && (latencies.len() < options.min_samples || started.elapsed() < options.budget)
    {
        let t = Instant::now();
        size = probe.once(targets).await?;
        latencies.push(t.elapsed());
    }
    latencies.sort();
    Ok(Timing { latencies, size })
}

/// The figures of one question, window and scope.
struct Line {
    question: Question,
    window: String,
    scope: String,
    ours: Option<anyhow::Result<Timing>>,
    exact: Option<anyhow::Result<Timing>>,
    raw: anyhow::Result<Timing>,
}

fn cell(timing: Option<&anyhow::Result<Timing>>) -> String {
    match timing {
        None => format!("{:>22}", "-"),
        Some(Err(_)) => format!("{:>22}", "error"),
        Some(Ok(t)) => format!(
            "{:>9.1} {:>8.1} {:>3}",
            t.ms(0.5),
            t.ms(0.95),
            t.latencies.len()
        ),
    }
}

fn ratio(raw: &anyhow::Result<Timing>, ours: Option<&anyhow::Result<Timing>>) -> String {
    match (raw, ours) {
        (Ok(raw), Some(Ok(ours))) => {
            let r = raw.ms(0.5) / ours.ms(0.5);
            if r < 0.1 {
                format!("{r:>9.4}")
            } else {
                format!("{r:>9.1}")
            }
        }
        _ => format!("{:>9}", "-"),
    }
}

fn print_table(lines: &[Line]) {
    println!();
    println!(
        "{:<13} {:>6} {:<8} {:>22} {:>22} {:>22} {:>9} {:>9}",
        "question",
        "window",
        "scope",
        "ours p50/p95 ms (n)",
        "exact p50/p95 ms (n)",
        "raw SQL p50/p95 ms (n)",
        "raw/ours",
        "raw/exact"
    );
    for l in lines {
        println!(
            "{:<13} {:>6} {:<8} {} {} {} {} {}",
            l.question.name(),
            l.window,
            l.scope,
            cell(l.ours.as_ref()),
            cell(l.exact.as_ref()),
            cell(Some(&l.raw)),
            ratio(&l.raw, l.ours.as_ref()),
            ratio(&l.raw, l.exact.as_ref()),
        );
    }
    println!("ratios are of the p50s; n is the number of timed calls");
}

/// How the benchmark database was filled, as recorded in [`LOAD_TABLE`].
struct Loaded {
    data_end: DateTime<Utc>,
    days: i32,
    per_day: i32,
    seconds: f64,
}

async fn recorded_load(url: &str) -> anyhow::Result<Option<Loaded>> {
    let mut conn = PgConnection::connect(url).await?;
    let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(LOAD_TABLE)
        .fetch_one(&mut conn)
        .await?;
    let row: Option<(DateTime<Utc>, i32, i32, f64)> = if exists.is_some() {
        sqlx::query_as(AssertSqlSafe(format!(
            "SELECT data_end, days, per_day, load_seconds FROM {LOAD_TABLE} ORDER BY loaded_at DESC LIMIT 1"
        )))
        .fetch_optional(&mut conn)
        .await?
    } else {
        None
    };
    conn.close().await?;
    Ok(row.map(|(data_end, days, per_day, seconds)| Loaded {
        data_end,
        days,
        per_day,
        seconds,
    }))
}

/// Loads a fresh database: the store's migrations, the weekly partitions of
/// the whole range, the generator's rows with the indexes dropped, the
/// indexes and constraints again, the rollups; records the load in
/// [`LOAD_TABLE`] and returns the seconds it took (without the migrations).
async fn load(db: &BenchDb, options: &Options, data_end: DateTime<Utc>) -> anyhow::Result<f64> {
    db.migrate().await?;
    let started = Instant::now();
    let knobs = format!(
        "SET remaudit.bench_now = '{}'; SET remaudit.bench_days = '{}'; SET remaudit.bench_per_day = '{}';",
        data_end.to_rfc3339_opts(SecondsFormat::Micros, true),
        options.days,
        options.per_day
    );
    let mut connections = bench::connect_all(
        &db.url,
        knob("BENCH_LOAD_CONNECTIONS", 2),
        &format!("{knobs}\n{SESSION}"),
    )
    .await?;
    let conn = &mut connections[0];
    sqlx::raw_sql(AssertSqlSafe(GENERATOR))
        .execute(&mut *conn)
        .await
        .context("the generator's view and function")?;
    let origin = data_end - chrono::Duration::days(i64::try_from(options.days)?);
    let created =
        bench::ensure_partitions(conn, origin, data_end + chrono::Duration::seconds(1)).await?;
    let saved = bench::drop_indexes(conn, &["remediation_audit"]).await?;
    bench::print_step(
        "prepare",
        started.elapsed().as_secs_f64(),
        &format!(
            "  ({created} partitions created, {} indexes dropped)",
            saved.len()
        ),
    );
    // A week of days per job, each job on its own connection: the rows of a
    // partition are written in start_time order (only the partitions a
    // job boundary cuts get rows from two jobs).
    let fills = (0..options.days)
        .step_by(7)
        .map(|first| {
            let last = (first + 7).min(options.days);
            Job::new(
                format!("days {first}-{last}"),
                &format!("days {first}"),
                vec![format!(
                    "SELECT remaudit_bench_fill('remediation_audit', {first}, {last})"
                )],
            )
        })
        .collect();
    let connections = bench::step("insert rows", connections, fills).await?;
    let mut connections = bench::step(
        "indexes and constraints",
        connections,
        bench::index_jobs(&saved, "remediation_audit"),
    )
    .await?;
    bench::sync_id_sequence(&mut connections[0], "remediation_audit").await?;
    sqlx::raw_sql(
        "DROP FUNCTION remaudit_bench_fill(regclass, int, int); DROP VIEW remaudit_bench_rows;",
    )
    .execute(&mut connections[0])
    .await?;
    let connections = bench::step(
        "rollups",
        connections,
        vec![Job::new(
            "rollups",
            "remediation_audit",
            vec!["SELECT remaudit_rebuild_rollups()".to_owned()],
        )],
    )
    .await?;
    let mut connections = bench::step(
        "vacuum analyze",
        connections,
        vec![Job::new(
            "vacuum",
            "database",
            vec!["VACUUM ANALYZE".to_owned()],
        )],
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    let mut conn = connections.pop().context("a connection")?;
    for other in connections {
        other.close().await?;
    }
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE TABLE {LOAD_TABLE} (data_end TIMESTAMPTZ NOT NULL, days INT NOT NULL, \
         per_day INT NOT NULL, load_seconds FLOAT8 NOT NULL, loaded_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    )))
    .execute(&mut conn)
    .await?;
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {LOAD_TABLE} (data_end, days, per_day, load_seconds) VALUES ($1, $2, $3, $4)"
    )))
    .bind(data_end)
    .bind(i32::try_from(options.days)?)
    .bind(i32::try_from(options.per_day)?)
    .bind(seconds)
    .execute(&mut conn)
    .await?;
    conn.close().await?;
    Ok(seconds)
}

/// Creates (or reuses) the loaded database.
async fn prepare(options: &Options) -> anyhow::Result<BenchDb> {
    let db = BenchDb::named(&options.database)?;
    if options.reuse && db.exists().await? {
        if let Some(l) = recorded_load(&db.url).await? {
            let age = Utc::now() - l.data_end;
            println!(
                "reusing {}: {} days x {} a day, ending {} ({:.1} h ago), loaded in {:.0} s",
                db.name,
                l.days,
                l.per_day,
                l.data_end.to_rfc3339_opts(SecondsFormat::Secs, true),
                age.as_seconds_f64() / 3600.0,
                l.seconds
            );
            if age > chrono::Duration::hours(24) {
                println!(
                    "  note: windows now cover {:.1} days less data than when loaded; run without --reuse to reload",
                    age.as_seconds_f64() / 86400.0
                );
            }
            let t = Instant::now();
            // A migration changed since the load: load again.
            if db.schema_current().await? {
                println!("  migrations checked in {:.1} s", t.elapsed().as_secs_f64());
                return Ok(db);
            }
        } else {
            println!(
                "{} exists but holds no recorded load: loading it afresh",
                db.name
            );
        }
    }
    db.recreate().await?;
    println!(
        "loading {}: {} days x {} remediations a day = {} rows",
        db.name,
        options.days,
        bench::thousands(i64::try_from(options.per_day)?),
        bench::thousands(i64::try_from(options.days * options.per_day)?)
    );
    let seconds = load(&db, options, Utc::now()).await?;
    println!("load time {seconds:.1} s (generator, without the migrations)");
    Ok(db)
}

/// Prints the size of the database and of its tables, and what the rows hold.
async fn describe(pool: &PgPool) -> anyhow::Result<()> {
    bench::print_database_size(pool).await?;
    let tables: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT c.relname::text,
                COALESCE(sum(pg_total_relation_size(p.oid)), pg_total_relation_size(c.oid))::int8,
                COALESCE(sum(pg_indexes_size(p.oid)), pg_indexes_size(c.oid))::int8,
                count(p.oid)
         FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
         LEFT JOIN pg_inherits i ON i.inhparent = c.oid
         LEFT JOIN pg_class p ON p.oid = i.inhrelid
         WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
         GROUP BY c.relname, c.oid ORDER BY 2 DESC LIMIT 8",
    )
    .fetch_all(pool)
    .await?;
    for (name, total, indexes, partitions) in tables {
        let parts = if partitions > 0 {
            format!("  {partitions} partitions")
        } else {
            String::new()
        };
        println!(
            "  {name:<34} {:>9.1} MiB (indexes {:>8.1} MiB){parts}",
            bench::mib(total),
            bench::mib(indexes)
        );
    }
    let phases: Vec<(String, i64)> = sqlx::query_as(
        "SELECT overall_phase::text, count(*) FROM remediation_audit GROUP BY 1 ORDER BY 2 DESC",
    )
    .fetch_all(pool)
    .await?;
    let total: i64 = phases.iter().map(|(_, n)| n).sum();
    let summary: Vec<String> = phases
        .iter()
        .map(|(phase, n)| format!("{phase} {n}"))
        .collect();
    println!("remediation_audit: {total} rows: {}", summary.join(", "));
    Ok(())
}

/// The scope's most frequent alert over the last day of data.
async fn popular_fingerprint(pool: &PgPool, namespace: Option<&str>) -> anyhow::Result<String> {
    sqlx::query_scalar(
        "SELECT alert_fingerprint::text FROM remediation_audit
         WHERE start_time > (SELECT max(start_time) FROM remediation_audit) - INTERVAL '1 day'
           AND ($1::text IS NULL OR namespace = $1)
         GROUP BY 1 ORDER BY count(*) DESC LIMIT 1",
    )
    .bind(namespace)
    .fetch_optional(pool)
    .await?
    .context("no remediations in the last day of data")
}

// ---------------------------------------------------------------------------
// Checks

/// An endpoint's answer, decoded as the wire contract says.
async fn get_json<T: serde::de::DeserializeOwned>(
    targets: &Targets,
    path: &str,
) -> anyhow::Result<T> {
    let response = targets
        .http
        .get(format!("{}{path}", targets.base))
        .send()
        .await?;
    let status = response.status();
    let body = response.bytes().await?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        bail!(
            "{path}: {status}: {}",
            text.chars().take(300).collect::<String>()
        );
    }
    serde_json::from_slice(&body).with_context(|| format!("the answer of {path}"))
}

fn int(cell: Option<&Option<String>>) -> i64 {
    cell.and_then(Option::as_deref)
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1)
}

fn float(cell: Option<&Option<String>>) -> f64 {
    cell.and_then(Option::as_deref)
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn text(cell: Option<&Option<String>>) -> String {
    cell.and_then(Option::as_deref).unwrap_or("").to_owned()
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Durations equal to the millisecond, as text for the comparison.
fn millis(seconds: f64) -> String {
    format!("{seconds:.3}")
}

/// Checks that every loaded row is in exactly one weekly partition.
async fn check_rows(pool: &PgPool, expected: i64) -> anyhow::Result<()> {
    let census = bench::census(pool, "remediation_audit").await?;
    // Each failure is already reported as a surprise.
    let _ = census.check("remediation_audit", true);
    expect_eq("remediation_audit: rows loaded", &census.total, &expected);
    println!(
        "  rows: {} in {} weekly partitions, {} in the default partition",
        bench::thousands(census.total),
        census.direct.len(),
        census.in_default()
    );
    Ok(())
}

/// The checks' period: whole days up to the end of today, covering every
/// row when the data spans less than the 90 days a window may cover, else
/// the last 90 days.
fn check_period(days: usize) -> anyhow::Result<Period> {
    let today = Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .context("midnight")?
        .and_utc();
    let until = today + chrono::Duration::days(1);
    let since = until - chrono::Duration::days(i64::try_from((days + 1).min(90))?);
    Ok(Period::Range { since, until })
}

/// Checks each endpoint (rollups and exact) against the design's SQL over
/// the same rows, for one scope.
#[allow(clippy::too_many_lines)]
async fn check_scope(targets: &Targets, scope: &Scope, days: usize) -> anyhow::Result<()> {
    let period = check_period(days)?;
    let window = period.query();
    let name = scope.namespace.as_deref().unwrap_or("all");
    let design = |q: Question| q.design_sql(scope, &period);
    let pool = &targets.pool;

    // success-rate and its series: counts by outcome.
    let rows = text_rows(pool, &design(Question::SuccessRate)).await;
    let mut want = BTreeMap::new();
    for r in &rows {
        let phase = text(r.first());
        let key = match phase.as_str() {
            "completed" | "failed" | "timeout" => phase,
            _ => "in progress".to_owned(),
        };
        *want.entry(key).or_insert(0_i64) += int(r.get(1));
    }
    let started: i64 = want.values().sum();
    for exact in [false, true] {
        let how = if exact { "exact" } else { "rollups" };
        let r: SuccessRateReport =
            get_json(targets, &Question::SuccessRate.path(scope, &period, exact)).await?;
        let t = r.totals;
        let got: BTreeMap<String, i64> = [
            ("completed", t.completed),
            ("failed", t.failed),
            ("timeout", t.timed_out),
            ("in progress", t.in_progress),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| (k.to_owned(), count(n)))
        .collect();
        expect_eq(
            &format!("success-rate {name} ({how}) vs the design's SQL: remediations by outcome"),
            &got,
            &want,
        );
        expect_eq(
            &format!("success-rate {name} ({how}): started"),
            &count(t.started),
            &started,
        );
        let series: SuccessRateReport =
            get_json(targets, &Question::Series.path(scope, &period, exact)).await?;
        let summed: u64 = series.series.iter().map(|p| p.counts.started).sum();
        expect_eq(
            &format!("success-rate series {name} ({how}): started, summed over the days"),
            &count(summed),
            &started,
        );
    }

    // durations: count and mean by final phase.
    let rows = text_rows(pool, &design(Question::Durations)).await;
    let want: BTreeMap<String, (i64, String)> = rows
        .iter()
        .map(|r| (text(r.first()), (int(r.get(1)), millis(float(r.get(2))))))
        .collect();
    for exact in [false, true] {
        let how = if exact { "exact" } else { "rollups" };
        let r: DurationsReport =
            get_json(targets, &Question::Durations.path(scope, &period, exact)).await?;
        let got: BTreeMap<String, (i64, String)> = r
            .phases
            .iter()
            .filter(|p| p.final_phase != "all")
            .map(|p| {
                (
                    p.final_phase.clone(),
                    (count(p.count), millis(p.avg_seconds)),
                )
            })
            .collect();
        expect_eq(
            &format!("durations {name} ({how}) vs the design's SQL: count and mean by final phase"),
            &got,
            &want,
        );
    }

    // failures: count and distinct alerts by failed phase.
    let rows = text_rows(pool, &design(Question::Failures)).await;
    let want: BTreeMap<String, (i64, i64)> = rows
        .iter()
        .map(|r| (text(r.first()), (int(r.get(1)), int(r.get(2)))))
        .collect();
    for exact in [false, true] {
        let how = if exact { "exact" } else { "rollups" };
        let r: FailuresReport =
            get_json(targets, &Question::Failures.path(scope, &period, exact)).await?;
        let got: BTreeMap<String, (i64, i64)> = r
            .items
            .iter()
            .filter(|g| g.outcome == "failed")
            .map(|g| {
                (
                    g.phase.clone().unwrap_or_default(),
                    (count(g.count), count(g.unique_alerts)),
                )
            })
            .collect();
        expect_eq(
            &format!("failures {name} ({how}) vs the design's SQL: count and alerts by phase"),
            &got,
            &want,
        );
    }

    // retries: the alerts remediated more than once, and how often.
    let rows = text_rows(pool, &design(Question::Retries)).await;
    let want: BTreeMap<String, (i64, bool)> = rows
        .iter()
        .map(|r| (text(r.first()), (int(r.get(1)), text(r.get(4)) == "t")))
        .collect();
    for exact in [false, true] {
        let how = if exact { "exact" } else { "rollups" };
        let r: RetriesReport =
            get_json(targets, &Question::Retries.path(scope, &period, exact)).await?;
        expect_eq(
            &format!("retries {name} ({how}) vs the design's SQL: alerts retried"),
            &count(r.alerts_retried),
            &i64::try_from(want.len())?,
        );
        expect_eq(
            &format!("retries {name} ({how}): attempts"),
            &count(r.attempts),
            &started,
        );
        let listed: BTreeMap<String, (i64, bool)> = r
            .items
            .iter()
            .map(|g| {
                (
                    g.alert_fingerprint.clone(),
                    (count(g.attempts), g.eventually_successful),
                )
            })
            .collect();
        let design_of_listed: BTreeMap<String, (i64, bool)> = listed
            .keys()
            .map(|fp| (fp.clone(), want.get(fp).copied().unwrap_or((1, false))))
            .collect();
        expect_eq(
            &format!(
                "retries {name} ({how}) vs the design's SQL: attempts and success of the alerts listed"
            ),
            &listed,
            &design_of_listed,
        );
    }

    // post-mortem: the same remediations, newest first.
    let rows = text_rows(pool, &design(Question::Postmortem)).await;
    let want: Vec<String> = rows.iter().map(|r| text(r.first())).collect();
    let r: RemediationList =
        get_json(targets, &Question::Postmortem.path(scope, &period, false)).await?;
    let got: Vec<String> = r.items.iter().map(|i| i.remediation_name.clone()).collect();
    expect_eq(
        &format!("postmortem {name} vs the design's SQL: remediations, newest first"),
        &got,
        &want,
    );

    // slowest: the same durations, longest first (ties in any order).
    let rows = text_rows(pool, &design(Question::Slowest)).await;
    let want: Vec<String> = rows.iter().map(|r| millis(float(r.get(5)))).collect();
    for exact in [false, true] {
        let how = if exact { "exact" } else { "rollups" };
        let r: RemediationList =
            get_json(targets, &Question::Slowest.path(scope, &period, exact)).await?;
        let got: Vec<String> = r
            .items
            .iter()
            .map(|i| millis(i.duration_seconds.unwrap_or(f64::NAN)))
            .collect();
        expect_eq(
            &format!("slowest {name} ({how}) vs the design's SQL: durations, longest first"),
            &got,
            &want,
        );
    }
    println!("  {name}: every endpoint checked against the design's SQL over {window}");
    Ok(())
}

#[allow(clippy::too_many_lines)]
async fn run() -> anyhow::Result<()> {
    let options = Options::parse()?;
    bench::print_smoke_load(options.days, options.per_day);
    let db = prepare(&options).await?;
    let pool = bench::pool(&db.url, 2).await?;
    describe(&pool).await?;
    if options.check {
        check_rows(&pool, i64::try_from(options.days * options.per_day)?).await?;
    }
    if options.load_only {
        pool.close().await;
        db.finish(options.drop).await?;
        return bench::verdict("bench-analytics");
    }

    // `remaudit serve` over the database. The exact variants may read every
    // row of 90 days: give them time, in the service and (2 s less, by
    // default) in the database.
    let http_client = reqwest::Client::new();
    let args = [
        "--database-url".to_owned(),
        db.url.clone(),
        "--request-timeout-secs".to_owned(),
        "600".to_owned(),
    ];
    let service = bench::Service::start("analytics", &args, &http_client, false).await?;
    let base = service.base().to_owned();
    let targets = Targets {
        http: http_client,
        base,
        pool: pool.clone(),
    };
    let http = !options.sql_only;

    let mut scopes = vec![Scope {
        namespace: None,
        fingerprint: popular_fingerprint(&pool, None).await?,
    }];
    if options.namespaces {
        scopes.push(Scope {
            namespace: Some(SCOPED_NAMESPACE.to_owned()),
            fingerprint: popular_fingerprint(&pool, Some(SCOPED_NAMESPACE)).await?,
        });
    }
    println!(
        "timing: up to {} calls after up to {} warm-ups, {} s per figure once {} calls are in",
        options.requests,
        options.warmup,
        options.budget.as_secs(),
        options.min_samples
    );
    let mut lines = Vec::new();
    for scope in &scopes {
        let scope_name = scope.namespace.clone().unwrap_or_else(|| "all".to_owned());
        for window in &options.windows {
            let period = Period::last(window)?;
            for &question in &options.questions {
                let report = |what: &str, timing: &anyhow::Result<Timing>| match timing {
                    Ok(t) => println!(
                        "  {:<13} {window:>4} {scope_name:<8} {what:<6} p50 {:>9.1} ms  p95 {:>9.1} ms  n {:>2}  ({} {})",
                        question.name(),
                        t.ms(0.5),
                        t.ms(0.95),
                        t.latencies.len(),
                        t.size,
                        if what == "raw" { "rows" } else { "bytes" }
                    ),
                    Err(e) => bench::surprise(format_args!(
                        "{} {window} {scope_name} {what} failed: {e:#}",
                        question.name()
                    )),
                };
                let (ours, exact) = if http {
                    let ours = measure(
                        &Probe::Http(question.path(scope, &period, false)),
                        &targets,
                        &options,
                    )
                    .await;
                    report("ours", &ours);
                    let exact = measure(
                        &Probe::Http(question.path(scope, &period, true)),
                        &targets,
                        &options,
                    )
                    .await;
                    report("exact", &exact);
                    (Some(ours), Some(exact))
                } else {
                    (None, None)
                };
                let raw = measure(
                    &Probe::Sql(question.design_sql(scope, &period)),
                    &targets,
                    &options,
                )
                .await;
                report("raw", &raw);
                lines.push(Line {
                    question,
                    window: window.clone(),
                    scope: scope_name.clone(),
                    ours,
                    exact,
                    raw,
                });
            }
        }
    }
    print_table(&lines);

    if options.check && http {
        println!();
        println!("checks: each endpoint, from rollups and exact, against the design's SQL");
        for scope in &scopes {
            if let Err(e) = check_scope(&targets, scope, options.days).await {
                bench::surprise(format_args!("checking {:?}: {e:#}", scope.namespace));
            }
        }
    }

    service.stop().await?;
    pool.close().await;
    db.finish(options.drop).await?;
    bench::verdict("bench-analytics")
}

fn main() -> anyhow::Result<()> {
    bench::block_on(run())
}
