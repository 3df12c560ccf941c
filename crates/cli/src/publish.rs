//! `remaudit publish`: records as JSON lines on standard input, sent through
//! the publisher, for backfills, replays and scripts.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use clap::ArgMatches;
use remaudit_client::{PublishError, Publisher, PublisherSettings, with_identity};
use remaudit_model::{Limits, RemediationOrchestrationAudit};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt as _, BufReader};

use crate::settings::{LogFormat, PublisherArgs, given_log_format, layer, read_file};

/// Exit status when the deadline passed with records still unsent.
pub const EXIT_DEADLINE: u8 = 3;
/// Exit status when some lines were invalid, or the service rejected records
/// or refused them as conflicts with different stored records.
pub const EXIT_INVALID: u8 = 1;

/// The flags of one `publish` run.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// Base URL of the remaudit service.
    #[arg(long, env = "REMAUDIT_URL", default_value_t = PublisherSettings::default().url)]
    url: String,
    /// Directory of the spool; records not yet acknowledged wait here between runs.
    /// Without it, records not delivered by the deadline are lost.
    #[arg(long, env = "REMAUDIT_SPOOL_DIR")]
    spool_dir: Option<PathBuf>,
    /// Seconds to deliver everything before leaving the rest in the spool.
    #[arg(long, env = "REMAUDIT_PUBLISH_DEADLINE_SECS", default_value_t = PublishSettings::default().deadline_secs)]
    deadline: u64,
    /// Print `accepted N` on standard output after every N-th record handed to the publisher.
    #[arg(long, value_name = "N")]
    pub progress: Option<u64>,
    #[command(flatten)]
    publisher: PublisherArgs,
}

/// Everything a `publish` run works with (`--progress` aside, which is about
/// this one run's output).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublishSettings {
    /// Log format.
    pub log_format: LogFormat,
    /// Seconds to deliver everything before leaving the rest in the spool.
    pub deadline_secs: u64,
    /// The publisher (service URL, spool, batching).
    pub publisher: PublisherSettings,
}

impl Default for PublishSettings {
    fn default() -> Self {
        Self {
            log_format: LogFormat::default(),
            deadline_secs: 300,
            publisher: PublisherSettings::default(),
        }
    }
}

impl PublishSettings {
    /// Defaults, then `file`, then the environment and flags in `m`.
    ///
    /// # Errors
    /// An unreadable or invalid file.
    pub fn load(args: &PublishArgs, m: &ArgMatches, file: Option<&Path>) -> anyhow::Result<Self> {
        let f = read_file(file)?;
        let mut s = Self {
            log_format: f.log_format,
            deadline_secs: f.deadline_secs,
            publisher: f.publisher,
        };
        if let Some(format) = given_log_format(m)? {
            s.log_format = format;
        }
        layer!(m, args, {
            url => s.publisher.url;
            spool_dir => s.publisher.spool_dir;
            deadline => s.deadline_secs;
        });
        args.publisher.layer(&mut s.publisher, m);
        Ok(s)
    }
}

/// Why one line was not published.
fn parse_line(line: &str) -> Result<RemediationOrchestrationAudit, String> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let record: RemediationOrchestrationAudit = serde_path_to_error::deserialize(&value)
        .map_err(|e| format!("{}: {}", e.path(), e.inner()))?;
    record
        .clone()
        .validate(Utc::now(), &Limits::default())
        .map_err(|e| e.to_string())?;
    Ok(record)
}

/// Runs the command, printing `accepted N` every `progress` records;
/// returns the exit status.
///
/// # Errors
/// When the publisher cannot start (an unusable spool directory, say).
pub async fn run(settings: PublishSettings, progress: Option<u64>) -> anyhow::Result<u8> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(settings.deadline_secs);
    let publisher = Publisher::start(settings.publisher)?;

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let (mut line_no, mut accepted, mut invalid, mut dropped) = (0_u64, 0_u64, 0_u64, 0_u64);
    let mut stdout = std::io::stdout();
    loop {
        let line = tokio::select! {
            line = lines.next_line() => line?,
            () = tokio::time::sleep_until(deadline) => break,
        };
        let Some(line) = line else { break };
        line_no += 1;
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(&line) {
            Ok(record) => match publisher.publish(with_identity(record)) {
                Ok(()) => {
                    accepted += 1;
                    if progress.is_some_and(|n| n > 0 && accepted % n == 0) {
                        writeln!(stdout, "accepted {accepted}")?;
                        stdout.flush()?;
                    }
                }
                Err(PublishError::Dropped) => {
                    dropped += 1;
                    eprintln!("line {line_no}: dropped: the memory queue and the spool are full");
                }
                Err(e) => {
                    invalid += 1;
                    eprintln!("line {line_no}: {e}");
                }
            },
            Err(why) => {
                invalid += 1;
                eprintln!("line {line_no}: invalid record: {why}");
            }
        }
    }

    let delivered = tokio::time::timeout_at(deadline, publisher.flush())
        .await
        .is_ok();
    let report = publisher.shutdown(Duration::ZERO).await;
    let stats = publisher.stats();
    writeln!(
        stdout,
        "published {accepted} records from standard input; acknowledged {} (created {}, duplicates {}, conflicts {}, rejected {}); invalid lines {invalid}; dropped {dropped}",
        report.acknowledged, stats.created, stats.duplicates, stats.conflicts, stats.rejected,
    )?;
    if !delivered || report.left_in_spool > 0 || report.lost > 0 {
        writeln!(
            stdout,
            "deadline passed: {} records left in the spool for the next run, {} lost",
            report.left_in_spool, report.lost
        )?;
        return Ok(EXIT_DEADLINE);
    }
    if invalid > 0 || dropped > 0 || stats.rejected > 0 || stats.conflicts > 0 {
        return Ok(EXIT_INVALID);
    }
    Ok(0)
}
