//! Analytics latency on a large data set: the service's analytics endpoints
//! against the design's own SQL for the same questions, in the same run, on
//! the same database.
//!
//! The data: 90 days of a large fleet, 110,000 remediations a day (about ten
//! million rows in `remediation_audit`, no timeline events), generated inside
//! PostgreSQL by `benches/analytics/generate.sql` into a fresh database whose
//! migrations the store applied. The database is kept after the run, so that
//! `--reuse` (or `REMAUDIT_BENCH_REUSE=1`) can skip the load next time.
//!
//! Then, for each window (7d and 90d), for every namespace and for one
//! (`team-01`), and for each question, three figures, each from requests sent
//! one after another over loopback:
//! - **ours**: `GET /api/v1/audit/analytics/...` on the service, started in
//!   this process (rollups, windows aligned to hours or days);
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
//! Run with `scripts/bench-analytics [OPTIONS]` (it prepares PostgreSQL), or
//! `cargo bench -p remaudit-server --bench analytics -- [OPTIONS]`. Options:
//! `--reuse`, `--drop` (drop the database at the end), `--sql-only`,
//! `--load-only`, `--windows 7d,90d`, `--questions success-rate,durations,…`,
//! `--no-namespace`. Knobs: `BENCH_DAYS`, `BENCH_PER_DAY`, `BENCH_DATABASE`,
//! `BENCH_LOAD_CONNECTIONS` (2: the generator's parts run side by side), and
//! the four above. PostgreSQL is `REMAUDIT_TEST_DATABASE_URL` (which
//! `scripts/pg-prepare` sets), its role allowed to create databases.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chrono::{DateTime, SecondsFormat, Utc};
use remaudit_server::{AppState, ServerSettings};
use remaudit_store::{PgStore, PoolSettings, Store as _};
use sqlx::{Connection as _, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

/// The generator; see its header for the markers that split it.
const GENERATOR: &str = include_str!("analytics/generate.sql");

/// The table, in the benchmark database, that records how it was loaded.
const LOAD_TABLE: &str = "bench_analytics_load";

/// The namespace of the scoped runs; the generator's first.
const SCOPED_NAMESPACE: &str = "team-01";

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What to run, from the command line and the environment.
struct Options {
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

const USAGE: &str = "options: --reuse --drop --sql-only --load-only --no-namespace \
                     --windows 7d,90d --questions postmortem,success-rate,series,durations,slowest,failures,retries";

impl Options {
    fn parse() -> anyhow::Result<Self> {
        let mut options = Self {
            reuse: std::env::var("REMAUDIT_BENCH_REUSE").is_ok_and(|v| v == "1" || v == "true"),
            drop: false,
            sql_only: false,
            load_only: false,
            namespaces: true,
            windows: vec!["7d".to_owned(), "90d".to_owned()],
            questions: Question::ALL.to_vec(),
            database: std::env::var("BENCH_DATABASE")
                .unwrap_or_else(|_| "remaudit_bench_analytics".to_owned()),
            days: knob("BENCH_DAYS", 90),
            per_day: knob("BENCH_PER_DAY", 110_000),
            requests: knob("BENCH_REQUESTS", 50).max(1),
            warmup: knob("BENCH_WARMUP", 5),
            min_samples: knob("BENCH_MIN_SAMPLES", 3).max(1),
            budget: Duration::from_secs(u64::try_from(knob("BENCH_CASE_SECONDS", 15))?),
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                // cargo bench passes this to every harness-less bench.
                "--bench" => {}
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
        if !options
            .database
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            bail!("BENCH_DATABASE must be lower-case letters, digits and underscores");
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
    fn path(self, scope: &Scope, window: &str, exact: bool) -> String {
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
        let mut path = format!("/api/v1/audit/analytics/{endpoint}?window={window}{extra}");
        if let Some(ns) = &scope.namespace {
            let _ = write!(path, "&namespace={ns}");
        }
        if exact {
            path.push_str("&exact=true");
        }
        path
    }

    /// The design's query for this question over `interval` (as in `7 days`).
    fn design_sql(self, scope: &Scope, interval: &str) -> String {
        let and_namespace = scope
            .namespace
            .as_ref()
            .map_or_else(String::new, |ns| format!("\n  AND namespace = '{ns}'"));
        match self {
            Self::Postmortem => format!(
                "SELECT remediation_name, overall_phase, start_time, completion_time,
    EXTRACT(EPOCH FROM (completion_time - start_time)) as duration_seconds,
    failure_phase, failure_reason
FROM remediation_audit
WHERE alert_fingerprint = '{}'{and_namespace}
ORDER BY start_time DESC
LIMIT 10",
                scope.fingerprint
            ),
            Self::SuccessRate => format!(
                "SELECT overall_phase, COUNT(*) as total,
    COUNT(CASE WHEN overall_phase = 'completed' THEN 1 END) as successful,
    COUNT(CASE WHEN overall_phase = 'failed' THEN 1 END) as failed,
    ROUND(100.0 * COUNT(CASE WHEN overall_phase = 'completed' THEN 1 END) / COUNT(*), 2) as success_rate_pct
FROM remediation_audit
WHERE created_at > NOW() - INTERVAL '{interval}'{and_namespace}
GROUP BY overall_phase"
            ),
            Self::Series => format!(
                "SELECT date_trunc('day', created_at) AS day, overall_phase, COUNT(*) as total,
    COUNT(CASE WHEN overall_phase = 'completed' THEN 1 END) as successful,
    COUNT(CASE WHEN overall_phase = 'failed' THEN 1 END) as failed,
    ROUND(100.0 * COUNT(CASE WHEN overall_phase = 'completed' THEN 1 END) / COUNT(*), 2) as success_rate_pct
FROM remediation_audit
WHERE created_at > NOW() - INTERVAL '{interval}'{and_namespace}
GROUP BY 1, overall_phase
ORDER BY 1"
            ),
            Self::Durations => format!(
                "SELECT overall_phase, COUNT(*) as total_remediations,
    AVG(EXTRACT(EPOCH FROM (completion_time - start_time))) as avg_duration_seconds,
    PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM (completion_time - start_time))) as p50_duration,
    PERCENTILE_CONT(0.95) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM (completion_time - start_time))) as p95_duration
FROM remediation_audit
WHERE completion_time IS NOT NULL
  AND created_at > NOW() - INTERVAL '{interval}'{and_namespace}
GROUP BY overall_phase"
            ),
            Self::Slowest => format!(
                "SELECT remediation_name, alert_fingerprint, overall_phase, start_time, completion_time,
    EXTRACT(EPOCH FROM (completion_time - start_time)) as duration_seconds,
    service_crd_statuses
FROM remediation_audit
WHERE completion_time IS NOT NULL
  AND created_at > NOW() - INTERVAL '{interval}'{and_namespace}
ORDER BY duration_seconds DESC
LIMIT 20"
            ),
            Self::Failures => format!(
                "SELECT failure_phase, COUNT(*) as failure_count,
    COUNT(DISTINCT alert_fingerprint) as unique_alerts_affected,
    ARRAY_AGG(DISTINCT substring(failure_reason, 1, 100)) as sample_reasons
FROM remediation_audit
WHERE failure_phase IS NOT NULL
  AND created_at > NOW() - INTERVAL '{interval}'{and_namespace}
GROUP BY failure_phase
ORDER BY failure_count DESC"
            ),
            Self::Retries => format!(
                "SELECT alert_fingerprint, COUNT(*) as retry_count, MAX(created_at) as last_attempt,
    ARRAY_AGG(overall_phase ORDER BY created_at) as phase_progression,
    BOOL_OR(overall_phase = 'completed') as eventually_successful
FROM remediation_audit
WHERE created_at > NOW() - INTERVAL '{interval}'{and_namespace}
GROUP BY alert_fingerprint
HAVING COUNT(*) > 1
ORDER BY retry_count DESC"
            ),
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
    latencies: Vec<Duration>,
    size: usize,
}

impl Timing {
    fn percentile_ms(&self, p: f64) -> f64 {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let index = ((sorted.len() - 1) as f64 * p).round() as usize;
        sorted[index].as_secs_f64() * 1e3
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
            t.percentile_ms(0.5),
            t.percentile_ms(0.95),
            t.latencies.len()
        ),
    }
}

fn ratio(raw: &anyhow::Result<Timing>, ours: Option<&anyhow::Result<Timing>>) -> String {
    match (raw, ours) {
        (Ok(raw), Some(Ok(ours))) => {
            let r = raw.percentile_ms(0.5) / ours.percentile_ms(0.5);
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

async fn recorded_load(conn: &mut PgConnection) -> anyhow::Result<Option<Loaded>> {
    let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(LOAD_TABLE)
        .fetch_one(&mut *conn)
        .await?;
    if exists.is_none() {
        return Ok(None);
    }
    let row: Option<(DateTime<Utc>, i32, i32, f64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT data_end, days, per_day, load_seconds FROM {LOAD_TABLE} ORDER BY loaded_at DESC LIMIT 1"
    )))
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|(data_end, days, per_day, seconds)| Loaded {
        data_end,
        days,
        per_day,
        seconds,
    }))
}

/// The generator, read from its markers: what every connection runs first,
/// then the steps in order, each made of parts that may run at once.
struct Script {
    session: String,
    steps: Vec<(String, Vec<String>)>,
}

/// Whether SQL text holds anything but blank lines and comments.
fn has_sql(text: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim();
        !l.is_empty() && !l.starts_with("--")
    })
}

impl Script {
    fn parse(text: &str) -> Self {
        let mut script = Self {
            session: String::new(),
            steps: Vec::new(),
        };
        let mut in_session = false;
        for line in text.lines() {
            if line.starts_with("-- session:") {
                in_session = true;
            } else if let Some(name) = line.strip_prefix("-- step:") {
                in_session = false;
                script
                    .steps
                    .push((name.trim().to_owned(), vec![String::new()]));
            } else if line.trim_end() == "-- part" {
                if let Some((_, parts)) = script.steps.last_mut() {
                    parts.push(String::new());
                }
            } else if in_session {
                script.session.push_str(line);
                script.session.push('\n');
            } else if let Some(part) = script.steps.last_mut().and_then(|(_, p)| p.last_mut()) {
                part.push_str(line);
                part.push('\n');
            }
        }
        for (_, parts) in &mut script.steps {
            parts.retain(|p| has_sql(p));
        }
        script
    }
}

/// Runs one step's parts on the connections, each connection taking the next
/// part not yet started; returns the connections and each part's seconds.
async fn run_parts(
    connections: Vec<PgConnection>,
    parts: Vec<String>,
    step: &str,
) -> anyhow::Result<(Vec<PgConnection>, Vec<f64>)> {
    let parts = Arc::new(parts);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks: Vec<_> = connections
        .into_iter()
        .map(|mut conn| {
            let (parts, next, step) = (parts.clone(), next.clone(), step.to_owned());
            tokio::spawn(async move {
                let mut times = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(sql) = parts.get(i) else {
                        return anyhow::Ok((conn, times));
                    };
                    let t = Instant::now();
                    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
                        .execute(&mut conn)
                        .await
                        .with_context(|| format!("generator step {step:?}, part {}", i + 1))?;
                    times.push((i, t.elapsed().as_secs_f64()));
                }
            })
        })
        .collect();
    let mut connections = Vec::new();
    let mut times = vec![0.0; parts.len()];
    for task in tasks {
        let (conn, done) = task.await??;
        connections.push(conn);
        for (i, seconds) in done {
            times[i] = seconds;
        }
    }
    Ok((connections, times))
}

/// Runs the generator on `url` over `BENCH_LOAD_CONNECTIONS` (2) connections,
/// printing each step's time; records the load in [`LOAD_TABLE`].
async fn generate(url: &str, options: &Options, data_end: DateTime<Utc>) -> anyhow::Result<f64> {
    let script = Script::parse(GENERATOR);
    let knobs = format!(
        "SET remaudit.bench_now = '{}'; SET remaudit.bench_days = '{}'; SET remaudit.bench_per_day = '{}';",
        data_end.to_rfc3339_opts(SecondsFormat::Micros, true),
        options.days,
        options.per_day
    );
    let mut connections = Vec::new();
    for _ in 0..knob("BENCH_LOAD_CONNECTIONS", 2).max(1) {
        let mut conn = PgConnection::connect(url).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("{knobs}\n{}", script.session)))
            .execute(&mut conn)
            .await
            .context("generator session settings")?;
        connections.push(conn);
    }
    let started = Instant::now();
    for (name, parts) in script.steps {
        let t = Instant::now();
        let (back, times) = run_parts(connections, parts, &name).await?;
        connections = back;
        let detail = if times.len() > 1 {
            let each: Vec<String> = times.iter().map(|s| format!("{s:.1}")).collect();
            format!("  (parts at once: {} s)", each.join(", "))
        } else {
            String::new()
        };
        println!("  {name:<22} {:>8.1} s{detail}", t.elapsed().as_secs_f64());
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut conn = connections.pop().context("a connection")?;
    for other in connections {
        other.close().await?;
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {LOAD_TABLE} (data_end TIMESTAMPTZ NOT NULL, days INT NOT NULL, \
         per_day INT NOT NULL, load_seconds FLOAT8 NOT NULL, loaded_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    )))
    .execute(&mut conn)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
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

#[allow(clippy::cast_precision_loss)]
fn mib(bytes: i64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Prints the size of the database and of each table, and what the rows hold.
async fn describe(pool: &PgPool) -> anyhow::Result<()> {
    let database: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
        .fetch_one(pool)
        .await?;
    println!("database size {:.0} MiB", mib(database));
    let tables: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT relname::text, pg_total_relation_size(relid), pg_indexes_size(relid), n_live_tup
         FROM pg_stat_user_tables ORDER BY pg_total_relation_size(relid) DESC",
    )
    .fetch_all(pool)
    .await?;
    for (name, total, indexes, rows) in tables {
        println!(
            "  {name:<30} {:>9.1} MiB (indexes {:>8.1} MiB)  ~{rows} rows",
            mib(total),
            mib(indexes)
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

/// Creates (or reuses) the loaded database; returns its URL.
async fn prepare(options: &Options, admin_url: &str) -> anyhow::Result<String> {
    let base = admin_url
        .rsplit_once('/')
        .map_or(admin_url, |(base, _)| base);
    let url = format!("{base}/{}", options.database);
    let mut admin = PgConnection::connect(admin_url)
        .await
        .with_context(|| format!("PostgreSQL at {admin_url}; scripts/bench-analytics starts it"))?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&options.database)
            .fetch_one(&mut admin)
            .await?;
    if options.reuse && exists {
        let mut conn = PgConnection::connect(&url).await?;
        let loaded = recorded_load(&mut conn).await?;
        conn.close().await?;
        if let Some(l) = loaded {
            let age = Utc::now() - l.data_end;
            println!(
                "reusing {}: {} days x {} a day, ending {} ({:.1} h ago), loaded in {:.0} s",
                options.database,
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
            PgStore::connect(&url, PoolSettings::default())
                .await?
                .close()
                .await;
            println!("  migrations checked in {:.1} s", t.elapsed().as_secs_f64());
            return Ok(url);
        }
        println!(
            "{} exists but holds no recorded load: loading it afresh",
            options.database
        );
    }
    let name = &options.database;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    println!(
        "loading {name}: {} days x {} remediations a day = {} rows",
        options.days,
        options.per_day,
        options.days * options.per_day
    );
    let t = Instant::now();
    PgStore::connect(&url, PoolSettings::default())
        .await?
        .close()
        .await;
    println!(
        "  {:<22} {:>8.1} s",
        "migrations",
        t.elapsed().as_secs_f64()
    );
    let seconds = generate(&url, options, Utc::now()).await?;
    println!("load time {seconds:.1} s (generator, without the migrations)");
    Ok(url)
}

#[allow(clippy::too_many_lines)]
async fn bench() -> anyhow::Result<()> {
    let options = Options::parse()?;
    let admin_url = std::env::var(remaudit_testkit::ADMIN_URL_VAR)
        .unwrap_or_else(|_| remaudit_testkit::DEFAULT_ADMIN_URL.to_owned());
    let url = prepare(&options, &admin_url).await?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await?;
    describe(&pool).await?;
    if options.load_only {
        pool.close().await;
        return Ok(());
    }

    let store = Arc::new(
        PgStore::connect(
            &url,
            PoolSettings {
                max_connections: 10,
                ..PoolSettings::default()
            },
        )
        .await?,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    // The exact variants may read every row of 90 days: give them time.
    let settings = ServerSettings {
        request_timeout: Duration::from_secs(600),
        ..ServerSettings::default()
    };
    let server = tokio::spawn(remaudit_server::serve(
        listener,
        AppState::new(store.clone(), settings),
        shutdown.clone(),
    ));
    let targets = Targets {
        http: reqwest::Client::new(),
        base,
        pool: pool.clone(),
    };
    let http = if options.sql_only {
        false
    } else {
        let probe = targets
            .http
            .get(format!(
                "{}/api/v1/audit/analytics/success-rate?window=7d",
                targets.base
            ))
            .send()
            .await?;
        if probe.status() == reqwest::StatusCode::NOT_FOUND {
            println!("the service has no analytics endpoints yet: timing the design's SQL only");
            false
        } else {
            true
        }
    };

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
            let interval = interval(window)?;
            for &question in &options.questions {
                let report = |what: &str, timing: &anyhow::Result<Timing>| match timing {
                    Ok(t) => println!(
                        "  {:<13} {window:>4} {scope_name:<8} {what:<6} p50 {:>9.1} ms  p95 {:>9.1} ms  n {:>2}  ({} {})",
                        question.name(),
                        t.percentile_ms(0.5),
                        t.percentile_ms(0.95),
                        t.latencies.len(),
                        t.size,
                        if what == "raw" { "rows" } else { "bytes" }
                    ),
                    Err(e) => println!(
                        "  {:<13} {window:>4} {scope_name:<8} {what:<6} failed: {e:#}",
                        question.name()
                    ),
                };
                let (ours, exact) = if http {
                    let ours = measure(
                        &Probe::Http(question.path(scope, window, false)),
                        &targets,
                        &options,
                    )
                    .await;
                    report("ours", &ours);
                    let exact = measure(
                        &Probe::Http(question.path(scope, window, true)),
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
                    &Probe::Sql(question.design_sql(scope, &interval)),
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

    shutdown.cancel();
    server.await??;
    store.close().await;
    pool.close().await;
    if options.drop {
        let mut admin = PgConnection::connect(&admin_url).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            options.database
        )))
        .execute(&mut admin)
        .await?;
        println!("dropped {}", options.database);
    } else {
        println!(
            "kept {} for --reuse (drop it with --drop, or DROP DATABASE {})",
            options.database, options.database
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench())
}
