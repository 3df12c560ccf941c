//! `remaudit simulate`: simulated remediations through the state machine and
//! the real publisher, against any remaudit service.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use remaudit_client::{Publisher, PublisherSettings};
use remaudit_controller::RemediationPhase;
use remaudit_controller::simulation::{self, SimulationConfig};

/// Exit status when the deadline passed before every record was acknowledged.
const EXIT_DEADLINE: u8 = 3;

/// Settings of one simulation.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// Base URL of the remaudit service.
    #[arg(long, env = "REMAUDIT_URL", default_value = "http://127.0.0.1:8085")]
    url: String,
    /// How many remediations to simulate.
    #[arg(long, default_value_t = 100)]
    count: usize,
    /// Remediations started per second (default: as fast as possible).
    #[arg(long)]
    rate: Option<f64>,
    /// Share of remediations whose child fails, 0 to 1.
    #[arg(long, default_value_t = 0.2)]
    fail_ratio: f64,
    /// Share of remediations whose child hangs until its phase times out, 0 to 1.
    #[arg(long, default_value_t = 0.1)]
    timeout_ratio: f64,
    /// Seed of the random choices; the same seed simulates the same remediations.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Namespace of the simulated requests.
    #[arg(long, default_value = "simulation")]
    namespace: String,
    /// Spool directory of the publisher (records wait there if the service is down).
    #[arg(long, env = "REMAUDIT_SPOOL_DIR")]
    spool_dir: Option<PathBuf>,
    /// Seconds to wait for every record to be acknowledged after the simulation.
    #[arg(long, default_value_t = 300)]
    deadline: u64,
}

/// Runs the command; returns the exit status.
///
/// # Errors
/// Bad settings, or a publisher that cannot start.
pub async fn run(
    args: SimulateArgs,
    mut publisher_config: PublisherSettings,
) -> anyhow::Result<u8> {
    let config = SimulationConfig {
        count: args.count,
        rate: args.rate,
        fail_ratio: args.fail_ratio,
        timeout_ratio: args.timeout_ratio,
        seed: args.seed,
        namespace: args.namespace,
    };
    simulation::check(&config).map_err(anyhow::Error::msg)?;
    publisher_config.url = args.url;
    publisher_config.spool_dir = args.spool_dir;
    let publisher = Publisher::start(publisher_config)?;

    let bar = ProgressBar::new(u64::try_from(config.count)?);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} remediations  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let done = simulation::run(&config, &publisher, |_| bar.inc(1)).await;
    bar.set_message("waiting for acknowledgements");
    let acknowledged = tokio::time::timeout(Duration::from_secs(args.deadline), publisher.flush())
        .await
        .is_ok();
    bar.finish_and_clear();
    let report = publisher.shutdown(Duration::ZERO).await;

    let count = |phase| done.iter().filter(|s| s.phase == phase).count();
    let records: usize = done.iter().map(|s| s.records).sum();
    let refused: usize = done.iter().map(|s| s.refused).sum();
    let stats = publisher.stats();
    let mut out = std::io::stdout();
    writeln!(
        out,
        "simulated {} remediations: {} completed, {} failed, {} timed out",
        done.len(),
        count(RemediationPhase::Completed),
        count(RemediationPhase::Failed),
        count(RemediationPhase::Timeout),
    )?;
    writeln!(
        out,
        "sent {records} audit records: {} stored, {} already stored, {} conflicts, {} rejected, {refused} refused by the publisher",
        stats.created, stats.duplicates, stats.conflicts, stats.rejected
    )?;
    if !acknowledged || report.left_in_spool > 0 || report.lost > 0 {
        writeln!(
            out,
            "not every record was acknowledged in time: {} left in the spool, {} lost",
            report.left_in_spool, report.lost
        )?;
        return Ok(EXIT_DEADLINE);
    }
    Ok(u8::from(
        refused > 0 || stats.rejected > 0 || stats.conflicts > 0,
    ))
}
