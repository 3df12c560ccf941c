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
//!
//! This file holds the run's options and its order of steps; the steps live
//! in `retire/`: `load.rs` (the database), `measure.rs` (costs, sampler,
//! the job measured), `lookups.rs` (e), `steps.rs` (a to d), `ingest.rs`
//! (f) and `report.rs` (the summary and the final checks).

// A bench target's modules would resolve beside it, in benches/ (where each
// file is a bench of its own): each names its file in retire/.
#[path = "retire/ingest.rs"]
mod ingest;
#[path = "retire/load.rs"]
mod load;
#[path = "retire/lookups.rs"]
mod lookups;
#[path = "retire/measure.rs"]
mod measure;
#[path = "retire/report.rs"]
mod report;
#[path = "retire/steps.rs"]
mod steps;

use anyhow::{Context as _, bail, ensure};
use chrono::{DateTime, Datelike as _, SecondsFormat, TimeDelta, Timelike as _, Utc, Weekday};
use remaudit_retention::Settings;
use remaudit_store::HealthStore as _;
use remaudit_testkit::bench::{self, knob, sized_knob};

use crate::measure::{Checkpointer, Retirer};

const USAGE: &str = "options: --smoke --reuse --drop --load-only --remediations N --ingest-seconds S \
                     --lookups N --no-ingest --no-lookups";

/// What to run, from the command line and the environment.
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent command-line switches"
)]
pub(crate) struct Options {
    pub(crate) reuse: bool,
    pub(crate) drop: bool,
    pub(crate) load_only: bool,
    pub(crate) ingest: bool,
    pub(crate) lookup: bool,
    pub(crate) database: String,
    pub(crate) days: u32,
    pub(crate) per_day: u32,
    pub(crate) alerts: u32,
    pub(crate) data_end: DateTime<Utc>,
    pub(crate) lookups: usize,
    pub(crate) ingest_seconds: u64,
    pub(crate) ingest_tasks: usize,
    pub(crate) ingest_batch: usize,
    pub(crate) load_connections: usize,
    pub(crate) superuser: String,
}

impl Options {
    fn parse() -> anyhow::Result<Self> {
        let data_end = bench::text_knob("BENCH_DATA_END", "2026-11-02T00:00:00Z")
            .parse::<DateTime<Utc>>()
            .context("BENCH_DATA_END: an RFC 3339 time")?;
        let smoke = bench::smoke();
        let mut options = Self {
            reuse: bench::reuse(),
            drop: smoke,
            load_only: false,
            ingest: true,
            lookup: true,
            database: bench::database_name("retention"),
            days: u32::try_from(sized_knob("BENCH_DAYS", 91, 28))?,
            per_day: u32::try_from(sized_knob("BENCH_PER_DAY", 110_000, 100))?,
            alerts: u32::try_from(sized_knob("BENCH_ALERTS", 4000, 100))?,
            data_end,
            lookups: sized_knob("BENCH_LOOKUPS", 600, 20),
            ingest_seconds: u64::try_from(sized_knob("BENCH_INGEST_SECONDS", 20, 3))?,
            ingest_tasks: sized_knob("BENCH_INGEST_TASKS", 8, 2).max(1),
            ingest_batch: sized_knob("BENCH_INGEST_BATCH", 100, 20).max(2),
            load_connections: knob("BENCH_LOAD_CONNECTIONS", 2).max(1),
            superuser: bench::text_knob("BENCH_SUPERUSER", "postgres"),
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

    pub(crate) fn origin(&self) -> DateTime<Utc> {
        self.data_end - TimeDelta::days(i64::from(self.days))
    }

    /// The Mondays that start the data's weeks, oldest first.
    pub(crate) fn weeks(&self) -> Vec<DateTime<Utc>> {
        (0..i64::from(self.days / 7))
            .map(|i| self.origin() + TimeDelta::weeks(i))
            .collect()
    }

    /// The days [first, last) after the origin that a week holds.
    pub(crate) fn week_days(&self, week: DateTime<Utc>) -> (i64, i64) {
        let first = (week - self.origin()).num_days();
        (first, first + 7)
    }

    /// The knobs the generator reads, as SET statements.
    pub(crate) fn knobs(&self) -> String {
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

/// The name of a week's partition of the table `prefix`.
pub(crate) fn table_of(prefix: &str, week: DateTime<Utc>) -> String {
    format!("{prefix}_w{}", week.format("%Y%m%d"))
}

/// The week's partition of the summary table.
pub(crate) fn summary_week(week: DateTime<Utc>) -> String {
    table_of("remediation_audit", week)
}

/// The week's partition of the timeline.
pub(crate) fn events_week(week: DateTime<Utc>) -> String {
    table_of("remediation_audit_events", week)
}

/// The date of an instant, as the output prints it.
pub(crate) fn day(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

/// A count as `i64` (saturating), for the figures.
pub(crate) fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

async fn run() -> anyhow::Result<()> {
    let options = Options::parse()?;
    bench::print_smoke_load(options.days, options.per_day);
    let db = load::prepare(&options).await?;
    let url = db.url.clone();
    let pool = bench::pool(&url, 4).await?;
    load::describe(&pool).await?;
    load::check_loaded(&pool, &options).await?;
    if options.load_only {
        pool.close().await;
        db.finish(options.drop).await?;
        return bench::verdict("bench-retention");
    }
    let mut su = Checkpointer::connect(&url, &options.superuser).await;
    let weeks = options.weeks();
    let age = Settings::default().policy.age;
    let expected = load::weeks_as_loaded(&pool).await?;
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
        if su.enabled() {
            ", a CHECKPOINT before each"
        } else {
            ""
        }
    );

    // e: post-mortem lookups, on the full data.
    let lookup_lines = if options.lookup {
        lookups::step(&url, &options, &pool).await?
    } else {
        Vec::new()
    };
    // a and b: raw PostgreSQL on the oldest week, W0.
    let mut lines = steps::raw_delete_day(&pool, &mut su, weeks[0]).await?;
    lines.push(steps::raw_drop_week(&pool, &mut su, weeks[0]).await?);
    // c: remaudit by partition, W1.
    let store = measure::retention_store(&url).await?;
    let retirer = Retirer {
        store: &store,
        pool: &pool,
        archive_dir: &archive_dir,
    };
    lines.push(
        steps::by_partition(&retirer, &mut su, weeks[1], age, expected_week(weeks[1])).await?,
    );
    // f: ingest, alone and while the job retires W2.
    let ingest_lines = ingest::step(&options, &url, &retirer, &mut su, weeks[2], age).await?;
    // d: remaudit row-wise, Monday of W3.
    lines.push(steps::row_wise(&retirer, &mut su, weeks[3], age).await?);
    store.close().await;

    report::print_summary(
        &pool,
        i64::from(options.per_day),
        &lines,
        &lookup_lines,
        &ingest_lines,
    )
    .await;
    println!();
    println!("checks: every loaded row in exactly one place; the job's batches verified");
    report::check_places(&pool, &expected_week(weeks[0])).await?;
    report::check_archive(&url, &archive_dir).await?;
    su.close().await;

    pool.close().await;
    if !options.drop {
        println!("(the next --reuse run regenerates the weeks this run retired)");
    }
    db.finish(options.drop).await?;
    bench::verdict("bench-retention")
}

fn main() -> anyhow::Result<()> {
    bench::block_on(run())
}
