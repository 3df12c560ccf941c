//! A retention run's entry in the admin log: who ran it, and what it moved.

use remaudit_store::{Actor, AdminAction, NewAdminEntry, RetentionStore};
use serde_json::json;

use crate::{RetentionError, RunReport};

/// The subject of runs of the job that `remaudit serve` schedules.
pub const SCHEDULED_SUBJECT: &str = "retention";

/// Who runs the job that `remaudit serve` schedules, and why.
#[must_use]
pub fn scheduled_actor() -> Actor {
    Actor::new(
        SCHEDULED_SUBJECT,
        "scheduled retention run (remaudit serve --retention-interval-secs)",
    )
}

/// What a run's entry keeps: its clock, what it moved, and its error if it
/// ended in one.
fn detail(report: &RunReport, error: Option<&RetentionError>) -> serde_json::Value {
    json!({
        "outcome": if error.is_some() { "error" } else { "ok" },
        "clock": report.now,
        "remediations": report.remediations(),
        "events": report.events(),
        "bytes": report.bytes(),
        "batches": report.batches.iter().map(|b| b.batch).collect::<Vec<_>>(),
        "cleaned": report.cleaned,
        "partitions_created": report.partitions_created,
        "error": error.map(ToString::to_string),
    })
}

/// Appends the entry of a run that did something (it took the lock and was
/// not a dry run), then passes on the run's own `outcome`. A run that
/// succeeded but cannot be recorded fails; a run that failed keeps its own
/// error, and the recording's is logged.
pub(crate) async fn record_run(
    store: &dyn RetentionStore,
    actor: &Actor,
    report: &RunReport,
    dry_run: bool,
    outcome: Result<(), RetentionError>,
) -> Result<(), RetentionError> {
    if dry_run || !report.ran {
        return outcome;
    }
    let entry = NewAdminEntry {
        actor: actor.clone(),
        action: AdminAction::RetentionRun,
        target: None,
        detail: detail(report, outcome.as_ref().err()),
    };
    match (store.record_admin_action(&entry).await, outcome) {
        (Ok(_), outcome) => outcome,
        (Err(e), Ok(())) => Err(e.into()),
        (Err(e), Err(run)) => {
            tracing::error!(error = %e, "the failed retention run could not be recorded in the admin log");
            Err(run)
        }
    }
}
