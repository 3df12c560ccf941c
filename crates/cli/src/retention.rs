//! `remaudit retention run | verify`, and the retention settings that
//! `remaudit serve` shares.

use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use remaudit_retention::{Archive, ArchiveSink, CrashAt, Settings};
use remaudit_store::Actor;
use secrecy::ExposeSecret as _;

use crate::DatabaseArgs;
use crate::admin;
use crate::chain::ChainArgs;
use crate::settings::{RetentionRunSettings, RetentionSettings};

/// The retention policy and job settings.
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyArgs {
    /// Days a finished remediation is kept, counted from its completion (or its start).
    #[arg(long, env = "REMAUDIT_RETENTION_DAYS", default_value_t = RetentionSettings::default().days, value_parser = clap::value_parser!(u32).range(1..=36500))]
    retention_days: u32,
    /// Let remediations that never finished expire too, counted from their start.
    #[arg(long, env = "REMAUDIT_RETENTION_INCLUDE_UNFINISHED")]
    retention_include_unfinished: bool,
    /// Most rows one row-wise archive batch moves.
    #[arg(long, env = "REMAUDIT_RETENTION_BATCH_ROWS", default_value_t = RetentionSettings::default().batch_rows, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    retention_batch_rows: u32,
    /// On PostgreSQL, also move due rows of weeks not yet wholly due, row by
    /// row, instead of waiting to drop their week's partition.
    #[arg(long, env = "REMAUDIT_RETENTION_EXACT")]
    retention_exact: bool,
    /// Where archive files go: `file:///dir` or `s3://bucket/prefix` (`AWS_*` variables
    /// configure S3). Default: remaudit-archive beside a SQLite file, or in the
    /// working directory.
    #[arg(long, env = "REMAUDIT_ARCHIVE_URL")]
    archive_url: Option<String>,
    /// The form new archive files take: `parquet` (typed, one file per table
    /// and week, readable by any Parquet engine) or `jsonl`
    /// (gzip-compressed JSON Lines). Files already written stay readable either way.
    #[arg(long, env = "REMAUDIT_ARCHIVE_FORMAT", default_value = "parquet", value_parser = ["parquet", "jsonl"])]
    archive_format: String,
    /// On PostgreSQL, the tablespace weekly partitions move to 7 days after
    /// their week ends (the warm tier); unset keeps them where they are.
    #[arg(long, env = "REMAUDIT_WARM_TABLESPACE", value_parser = crate::settings::parse_tablespace)]
    warm_tablespace: Option<String>,
    /// On PostgreSQL, the tablespace weekly partitions move to 30 days after
    /// their week ends (the cold tier); unset keeps them where they are.
    #[arg(long, env = "REMAUDIT_COLD_TABLESPACE", value_parser = crate::settings::parse_tablespace)]
    cold_tablespace: Option<String>,
}

/// `remaudit retention`.
#[derive(Debug, clap::Args)]
pub struct RetentionArgs {
    #[command(subcommand)]
    command: RetentionCommand,
}

#[derive(Debug, clap::Subcommand)]
enum RetentionCommand {
    /// Archive every due row (and its events) to the archive tables and files, then remove it.
    ///
    /// Exits 0 when the run finished (or another run held the lock), 1 on failure;
    /// a failed or killed run is safe to repeat.
    Run {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        policy: PolicyArgs,
        // Signs each batch's manifest with the newest key of the file.
        #[command(flatten)]
        chain: ChainArgs,
        /// Say how many rows per day would move, and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// The clock of the run, RFC 3339 (tests and backfills); default now.
        #[arg(long, value_parser = parse_time)]
        now: Option<DateTime<Utc>>,
        /// Who runs it, as the admin log records the run; default: the OS
        /// user ($USER or $LOGNAME), else `cli`.
        #[arg(long, value_parser = admin::parse_subject)]
        subject: Option<String>,
        /// Why, as the admin log records the run.
        #[arg(long, value_parser = admin::parse_reason, default_value = admin::MANUAL_RUN_REASON)]
        reason: String,
    },
    /// Check that every archived row of a time range is in the archive tables
    /// and in files whose checksums match, and in no live table.
    ///
    /// Exits 0 when all is well, 1 when something is missing, doubled or damaged.
    Verify {
        #[command(flatten)]
        database: DatabaseArgs,
        /// Where archive files are (see `retention run`).
        #[arg(long, env = "REMAUDIT_ARCHIVE_URL")]
        archive_url: Option<String>,
        /// Check batches with remediations that started at or after this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        since: Option<DateTime<Utc>>,
        /// ... and before this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        until: Option<DateTime<Utc>>,
        // With the key file, signatures and archived chains are checked too.
        #[command(flatten)]
        chain: ChainArgs,
    },
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{s:?} is not an RFC 3339 time such as 2026-09-01T00:00:00Z: {e}"))
}

/// Runs `remaudit retention ...` with the effective settings (file,
/// environment, flags); the exit code.
pub async fn run(args: RetentionArgs, settings: &RetentionRunSettings) -> anyhow::Result<u8> {
    let (database, retention) = (&settings.database, &settings.retention);
    // The key first: a run told to sign or check never starts without it.
    let ring = settings.chain.ring()?;
    match args.command {
        RetentionCommand::Run {
            dry_run,
            now,
            subject,
            reason,
            ..
        } => {
            let actor = Actor::new(subject.unwrap_or_else(admin::default_subject), reason);
            retention.check_backend(database.url.expose_secret())?;
            let archive = retention
                .archive(database.url.expose_secret())?
                .with_chain_keys(ring);
            // Only this one-shot command can be stopped at a step (the crash
            // tests kill it so); `serve` runs the plain archive.
            let sink: Box<dyn ArchiveSink> = match remaudit_retention::crash_step_from_env()? {
                Some(step) => Box::new(CrashAt::new(archive, step)),
                None => Box::new(archive),
            };
            let store = remaudit_store::connect_with(
                database.url.expose_secret(),
                database.pool(),
                retention.policy(),
            )
            .await
            .context("cannot open the database")?;
            let now = now.unwrap_or_else(Utc::now);
            let settings = Settings {
                interval: Duration::ZERO,
                ..retention.job()
            };
            let report = remaudit_retention::run_once(
                store.as_ref(),
                sink.as_ref(),
                &settings,
                now,
                dry_run,
                &actor,
            )
            .await
            .context("retention run failed; running it again is safe")?;
            store.close().await;
            if dry_run {
                let (mut rows, mut events) = (0, 0);
                println!("dry run at {}: nothing changed", now.to_rfc3339());
                println!(
                    "{:<12} {:>12} {:>12}",
                    "start day", "remediations", "events"
                );
                for day in &report.preview {
                    println!(
                        "{:<12} {:>12} {:>12}",
                        day.day, day.remediations, day.events
                    );
                    rows += day.remediations;
                    events += day.events;
                }
                println!("{:<12} {rows:>12} {events:>12}", "total");
            } else if !report.ran {
                println!("another retention run holds the lock; nothing done");
            } else {
                for batch in &report.cleaned {
                    println!("removed the files of interrupted batch {batch}");
                }
                for b in &report.batches {
                    println!(
                        "batch {} ({}): {} remediations, {} events, {} bytes{}",
                        b.batch,
                        b.source,
                        b.remediations,
                        b.events,
                        b.bytes,
                        if b.kept > 0 {
                            format!(", {} rows kept live", b.kept)
                        } else {
                            String::new()
                        }
                    );
                }
                println!(
                    "archived and removed {} remediations and {} events in {} batches to {} (clock {})",
                    report.remediations(),
                    report.events(),
                    report.batches.len(),
                    sink.archive().url(),
                    now.to_rfc3339()
                );
                for (week, tablespace) in &report.tiers.moved {
                    println!("moved the week of {week} to tablespace {tablespace}");
                }
                for week in &report.tiers.busy {
                    println!(
                        "the week of {week} stayed locked and was not moved; the next run moves it"
                    );
                }
            }
            Ok(0)
        }
        RetentionCommand::Verify { since, until, .. } => {
            let url = retention
                .archive_url
                .clone()
                .unwrap_or_else(|| Archive::default_url(database.url.expose_secret()));
            let archive = Archive::open(&url)?;
            let store = remaudit_store::connect(database.url.expose_secret(), database.pool())
                .await
                .context("cannot open the database")?;
            let (first, last) = remaudit_retention::all_time();
            let from = since.unwrap_or(first).max(first);
            let to = until.unwrap_or(last).min(last);
            let report =
                remaudit_retention::verify(store.as_ref(), &archive, from, to, ring.as_deref())
                    .await?;
            store.close().await;
            for batch in &report.pending {
                println!("batch {batch} was interrupted; the next run removes its files");
            }
            for problem in &report.problems {
                println!("PROBLEM {problem}");
            }
            if report.ok() {
                println!(
                    "verified {} batches ({} remediations, {} events): each row is in the archive tables and in a file whose SHA-256 matches, and in no live table",
                    report.batches, report.remediations, report.events
                );
                if report.chains_checked {
                    println!(
                        "every manifest's signature holds; {} archived chains whole ({} links verified, {} events unchained)",
                        report.chains, report.links_verified, report.unchained
                    );
                } else {
                    println!(
                        "signatures and chains not checked: give --chain-key-file to check them"
                    );
                }
                Ok(0)
            } else {
                println!(
                    "{} problems in {} batches",
                    report.problems.len(),
                    report.batches
                );
                Ok(1)
            }
        }
    }
}
