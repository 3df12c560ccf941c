//! The retention job: archives expired and soft-deleted remediation audit
//! rows (summary rows and their timeline events) to the archive tables and
//! to compressed files in object storage, then removes them from the live
//! tables. It runs inside `remaudit serve` on a schedule, and on demand as
//! `remaudit retention run`; `remaudit retention verify` checks its work.

mod admin_log;
mod archive;
mod batch;
pub mod columnar;
mod error;
mod manifest;
mod sink;
pub mod telemetry;
mod verify;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use remaudit_store::retention::DayCount;
use remaudit_store::{Actor, RetentionPolicy, RetentionStore, RetireRequest, TierReport, Tiers};
use tokio_util::sync::CancellationToken;

pub use admin_log::scheduled_actor;
pub use archive::{Archive, ArchiveFormat, FileUrl, StoredManifest, is_parquet_part};
pub use batch::BatchReport;
pub use error::RetentionError;
pub use manifest::{
    ArchivedFile, CHECK_CHUNK_BYTES, MANIFEST_FORMAT, MANIFEST_FORMAT_V1, MANIFEST_FORMAT_V3,
    Manifest, Signature, SignatureCheck,
};
pub use sink::{ArchiveSink, CRASH_AT_VAR, CrashAt, Step, crash_step_from_env};
pub use telemetry::describe_metrics;
pub use verify::{VerifyReport, all_time, verify};

/// How the job runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Which rows expire and when.
    pub policy: RetentionPolicy,
    /// Time between scheduled runs inside `remaudit serve`.
    pub interval: Duration,
    /// Most rows a row-wise batch moves.
    pub batch_rows: u32,
    /// Move due rows row by row even where their week is not wholly due (PostgreSQL).
    pub exact: bool,
    /// Weeks of partitions kept ready ahead of the clock (PostgreSQL).
    pub weeks_ahead: u32,
    /// Tablespaces aged weeks move to (PostgreSQL); none by default.
    pub tiers: Tiers,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            policy: RetentionPolicy::default(),
            interval: Duration::from_hours(1),
            batch_rows: 5000,
            exact: false,
            weeks_ahead: 4,
            tiers: Tiers::default(),
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunReport {
    /// The clock the run used.
    pub now: Option<DateTime<Utc>>,
    /// False when another run held the lock and this one did nothing.
    pub ran: bool,
    /// Rows that would move, per start day (dry runs only).
    pub preview: Vec<DayCount>,
    /// Batches moved.
    pub batches: Vec<BatchReport>,
    /// Interrupted batches whose files were removed before the run.
    pub cleaned: Vec<i64>,
    /// Partitions created: ahead, and for rows that waited in a default partition.
    pub partitions_created: u32,
    /// Weeks moved to the warm or cold tablespace, and weeks left locked.
    pub tiers: TierReport,
}

impl RunReport {
    /// Summary rows moved.
    #[must_use]
    pub fn remediations(&self) -> u64 {
        self.batches.iter().map(|b| b.remediations).sum()
    }

    /// Events moved.
    #[must_use]
    pub fn events(&self) -> u64 {
        self.batches.iter().map(|b| b.events).sum()
    }

    /// Bytes of archive files written.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.batches.iter().map(|b| b.bytes).sum()
    }
}

/// One retention run at `now` on behalf of `actor`: partitions ahead, then
/// (unless `dry_run`) clean-up of interrupted batches and every due batch.
/// A run that took the lock and was not a dry run appends one `retention_run`
/// entry to the admin log, with what it moved, whether it ended in an error
/// or not.
///
/// # Errors
/// When the database or the object store fails, or the run's admin log
/// entry cannot be written; what was moved before the failure stays moved,
/// and the next run carries on.
pub async fn run_once(
    store: &dyn RetentionStore,
    archive: &dyn ArchiveSink,
    settings: &Settings,
    now: DateTime<Utc>,
    dry_run: bool,
    actor: &Actor,
) -> Result<RunReport, RetentionError> {
    let started = Instant::now();
    let mut report = RunReport {
        now: Some(now),
        ..RunReport::default()
    };
    let outcome = run_locked(store, archive, settings, dry_run, &mut report).await;
    let result = admin_log::record_run(store, actor, &report, dry_run, outcome)
        .await
        .map(|()| report);
    let outcome = match &result {
        Ok(report) if !report.ran => "skipped",
        Ok(_) => "ok",
        Err(_) => "error",
    };
    metrics::counter!(telemetry::RUNS_TOTAL, "outcome" => outcome).increment(1);
    if let Ok(report) = &result
        && report.ran
        && !dry_run
    {
        metrics::histogram!(telemetry::RUN_DURATION).record(started.elapsed().as_secs_f64());
        metrics::gauge!(telemetry::LAST_SUCCESS)
            .set(remaudit_model::approx_f64(Utc::now().timestamp_millis()) / 1000.0);
    }
    result
}

/// The run itself, filling in `report` as it goes, so that a run that fails
/// half-way still says what it moved.
async fn run_locked(
    store: &dyn RetentionStore,
    sink: &dyn ArchiveSink,
    settings: &Settings,
    dry_run: bool,
    report: &mut RunReport,
) -> Result<(), RetentionError> {
    let now = report.now.unwrap_or_else(Utc::now);
    let request = RetireRequest {
        now,
        age: settings.policy.age,
        batch_rows: settings.batch_rows,
        exact: settings.exact,
    };
    if dry_run {
        report.ran = true;
        report.preview = store.retention_preview(&request).await?;
        return Ok(());
    }
    let Some(_lock) = store.retention_lock().await? else {
        tracing::info!("another retention run holds the lock; skipping this one");
        return Ok(());
    };
    report.ran = true;
    let archive = sink.archive();
    let ahead = TimeDelta::weeks(i64::from(settings.weeks_ahead) + 1);
    // From a week back, but never a week already due: with an age under a
    // week, that week would be made only for this run to retire it again.
    let back = TimeDelta::weeks(1).min(settings.policy.age);
    report.partitions_created = store.ensure_partitions(now - back, now + ahead).await?;
    let locate = |installation: &str, batch: i64| archive.location(installation, batch);
    for pending in store.pending_batches().await? {
        // A journal row written before the location went in with it, cut
        // off before it got one: the batch wrote no file.
        let removed = if pending.location.is_empty() {
            0
        } else {
            archive.remove(&pending).await?
        };
        // A batch whose rows the archive already holds (a week moved whole)
        // cannot be forgotten: it takes a new number, written first below,
        // and a run that still holds the old one (its lock lost) can no
        // longer mark it done over the files just removed.
        if !store.renumber_batch(pending.batch, &locate).await? {
            store.forget_batch(pending.batch).await?;
        }
        tracing::warn!(
            batch = pending.batch,
            files = removed,
            "removed the files of a batch an earlier run did not finish"
        );
        report.cleaned.push(pending.batch);
    }
    let retired = retire_all(store, sink, &request, report).await;
    // Upkeep runs after a failed batch too, so that its gauge stays current.
    let upkeep = store.partition_upkeep(&request).await;
    retired?;
    let upkeep = upkeep?;
    report.partitions_created += upkeep.tables_made;
    report.tiers = store.move_to_tiers(&settings.tiers, now).await?;
    for (table, rows) in [
        ("remediation_audit", upkeep.default_remediations),
        ("remediation_audit_events", upkeep.default_events),
    ] {
        metrics::gauge!(telemetry::DEFAULT_PARTITION_ROWS, "table" => table)
            .set(remaudit_model::approx_f64(rows));
    }
    Ok(())
}

/// Retires every due batch, one after another, into `report`.
async fn retire_all(
    store: &dyn RetentionStore,
    sink: &dyn ArchiveSink,
    request: &RetireRequest,
    report: &mut RunReport,
) -> Result<(), RetentionError> {
    let archive = sink.archive();
    loop {
        let batch = match batch::retire_next(store, sink, request).await {
            Ok(Some(batch)) => batch,
            Ok(None) => break,
            Err(e) => {
                if let Some(collision) = archive.take_collision()
                    && let Err(settle) = settle(store, archive, &collision).await
                {
                    tracing::error!(
                        location = %collision.location,
                        error = %settle,
                        "could not forget a batch whose file name was taken"
                    );
                }
                return Err(e);
            }
        };
        record(&batch);
        tracing::info!(
            batch = batch.batch,
            source = %batch.source,
            remediations = batch.remediations,
            events = batch.events,
            bytes = batch.bytes,
            kept = batch.kept,
            "archived and removed a batch"
        );
        report.batches.push(batch);
    }
    Ok(())
}

/// After a batch stopped because one of its file names was already taken
/// (its rows stayed live): forgets the batch first, so that no later clean-up
/// deletes by that name the object that was there, then deletes what this
/// process wrote for it. A week whose rows the archive already holds cannot
/// be forgotten: it moves to a new number and location instead.
async fn settle(
    store: &dyn RetentionStore,
    archive: &Archive,
    collision: &archive::Collision,
) -> Result<(), RetentionError> {
    let locate = |installation: &str, batch: i64| archive.location(installation, batch);
    for pending in store.pending_batches().await? {
        if pending.location != collision.location {
            continue;
        }
        if store.renumber_batch(pending.batch, &locate).await? {
            continue;
        }
        store.forget_batch(pending.batch).await?;
        tracing::warn!(
            batch = pending.batch,
            location = %pending.location,
            "a file name of the batch was taken; the batch is forgotten and its rows stay live"
        );
    }
    archive.remove_own(collision).await
}

fn record(batch: &BatchReport) {
    for (table, rows) in [
        ("remediation_audit", batch.remediations),
        ("remediation_audit_events", batch.events),
    ] {
        metrics::counter!(telemetry::ROWS_ARCHIVED, "table" => table).increment(rows);
        metrics::counter!(telemetry::ROWS_DELETED, "table" => table).increment(rows);
    }
    metrics::counter!(telemetry::BYTES_WRITTEN).increment(batch.bytes);
    if batch.source.starts_with("remediation_audit_w") {
        metrics::counter!(telemetry::PARTITIONS_DROPPED).increment(1);
    }
}

/// Runs the job now and then every `settings.interval` until `shutdown`;
/// failures are logged and the schedule goes on. Each run is recorded in the
/// admin log as [`scheduled_actor`]'s.
pub fn spawn(
    store: Arc<dyn RetentionStore>,
    archive: Archive,
    settings: Settings,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let actor = scheduled_actor();
        let mut every = tokio::time::interval(settings.interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = every.tick() => {}
            }
            let run = run_once(
                store.as_ref(),
                &archive,
                &settings,
                Utc::now(),
                false,
                &actor,
            );
            tokio::select! {
                () = shutdown.cancelled() => break,
                result = run => match result {
                    Ok(report) => tracing::info!(
                        remediations = report.remediations(),
                        events = report.events(),
                        batches = report.batches.len(),
                        "retention run finished"
                    ),
                    Err(e) => tracing::error!(error = %e, "retention run failed; the next one carries on"),
                },
            }
        }
    })
}
