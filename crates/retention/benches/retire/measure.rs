//! Measuring a step: its seconds and WAL bytes ([`Cost`]), a `CHECKPOINT`
//! before it, what else the machine is doing, where the sessions' time
//! went ([`Sampler`]), and the retention job run once, measured
//! ([`Retirer`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::str::FromStr as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use remaudit_retention::{Archive, ArchiveFormat, RunReport, Settings};
use remaudit_store::PgStore;
use remaudit_testkit::bench::{self, StoreOptions, surprise};
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection as _, PgConnection, PgPool};

/// Application names, so that the activity sampler can tell who is who.
pub(crate) const RETENTION_APP: &str = "remaudit-bench-retention";
/// The ingest step's sessions.
pub(crate) const INGEST_APP: &str = "remaudit-bench-ingest";

/// What one measured step cost.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cost {
    pub(crate) seconds: f64,
    pub(crate) wal: i64,
}

/// Starts a measurement: the time and the WAL position.
pub(crate) async fn mark(pool: &PgPool) -> anyhow::Result<(Instant, String)> {
    let lsn: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(pool)
        .await?;
    Ok((Instant::now(), lsn))
}

pub(crate) async fn since(pool: &PgPool, from: &(Instant, String)) -> anyhow::Result<Cost> {
    let seconds = from.0.elapsed().as_secs_f64();
    let wal: i64 =
        sqlx::query_scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::int8")
            .bind(&from.1)
            .fetch_one(pool)
            .await?;
    Ok(Cost { seconds, wal })
}

/// The superuser connection for CHECKPOINT, when trust or a password lets us in.
pub(crate) struct Checkpointer(Option<PgConnection>);

impl Checkpointer {
    pub(crate) async fn connect(url: &str, user: &str) -> Self {
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

    /// Whether it is connected, so that each step starts with a CHECKPOINT.
    pub(crate) fn enabled(&self) -> bool {
        self.0.is_some()
    }

    /// Closes the superuser's connection (before the database is dropped).
    pub(crate) async fn close(self) {
        if let Some(conn) = self.0 {
            let _ = conn.close().await;
        }
    }

    pub(crate) async fn checkpoint(&mut self) {
        if let Some(conn) = &mut self.0
            && let Err(e) = sqlx::raw_sql("CHECKPOINT").execute(&mut *conn).await
        {
            println!("note: CHECKPOINT failed: {e}");
            self.0 = None;
        }
    }
}

/// The machine's 1-minute load average and what else PostgreSQL is doing.
pub(crate) async fn busy(pool: &PgPool) -> String {
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
        // Writing into a `String` cannot fail.
        let _ = write!(
            out,
            "; BUSY: {others} active sessions in other databases, {test_dbs} test databases"
        );
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
pub(crate) struct Sampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(Samples, u32, f64)>,
}

impl Sampler {
    pub(crate) fn start(pool: PgPool, apps: &[&str]) -> Self {
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
    pub(crate) async fn finish(self, top: usize) {
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

pub(crate) async fn count(pool: &PgPool, sql: &str) -> anyhow::Result<i64> {
    sqlx::query_scalar(AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .with_context(|| sql.to_owned())
}

/// A retention store: its own pool, tagged for the sampler.
pub(crate) async fn retention_store(url: &str) -> anyhow::Result<PgStore> {
    bench::pg_store(
        url,
        StoreOptions {
            application: Some(RETENTION_APP),
            max_connections: Some(4),
            acquire_timeout: Some(Duration::from_mins(1)),
            ..StoreOptions::default()
        },
    )
    .await
}

/// What a measured run of the job did.
pub(crate) struct Run {
    pub(crate) report: Result<RunReport, String>,
    pub(crate) cost: Cost,
    /// Files and bytes the run added to the archive.
    pub(crate) files: (u64, u64),
}

impl Run {
    /// The report, or an empty one after printing the failure.
    pub(crate) fn report(&self) -> RunReport {
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

/// Where the retention job runs: its store, the pool the measurements use,
/// and one archive for every run, as an installation has.
pub(crate) struct Retirer<'a> {
    pub(crate) store: &'a PgStore,
    pub(crate) pool: &'a PgPool,
    pub(crate) archive_dir: &'a Path,
}

impl Retirer<'_> {
    /// The archive, in the form `BENCH_ARCHIVE_FORMAT` names (`parquet`, the default, or `jsonl`).
    fn archive(&self) -> anyhow::Result<Archive> {
        Ok(
            Archive::open(&format!("file://{}", self.archive_dir.display()))?
                .with_format(archive_format()?),
        )
    }

    /// Runs the job once at `clock`, measured and sampled.
    pub(crate) async fn measured(
        &self,
        settings: &Settings,
        clock: DateTime<Utc>,
    ) -> anyhow::Result<Run> {
        std::fs::create_dir_all(self.archive_dir)?;
        let before = dir_size(self.archive_dir);
        let archive = self.archive()?;
        let sampler = Sampler::start(self.pool.clone(), &[RETENTION_APP]);
        let m = mark(self.pool).await?;
        let result = remaudit_retention::run_once(
            self.store,
            &archive,
            settings,
            clock,
            false,
            &remaudit_retention::scheduled_actor(),
        )
        .await;
        let cost = since(self.pool, &m).await?;
        sampler.finish(8).await;
        Ok(Run {
            report: result.map_err(|e| format!("{e:#}")),
            cost,
            files: {
                let after = dir_size(self.archive_dir);
                (
                    after.0.saturating_sub(before.0),
                    after.1.saturating_sub(before.1),
                )
            },
        })
    }

    /// Runs the job once at `clock`, unmeasured.
    pub(crate) async fn run(
        &self,
        settings: &Settings,
        clock: DateTime<Utc>,
    ) -> anyhow::Result<RunReport> {
        let archive = self.archive()?;
        Ok(remaudit_retention::run_once(
            self.store,
            &archive,
            settings,
            clock,
            false,
            &remaudit_retention::scheduled_actor(),
        )
        .await?)
    }
}

/// The archive form the run writes: `BENCH_ARCHIVE_FORMAT`, `parquet` when unset.
pub(crate) fn archive_format() -> anyhow::Result<ArchiveFormat> {
    Ok(std::env::var("BENCH_ARCHIVE_FORMAT")
        .unwrap_or_else(|_| "parquet".to_owned())
        .parse()?)
}
