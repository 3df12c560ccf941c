//! Where a batch's files go, as the protocol sees it: the production
//! [`Archive`], or the [`CrashAt`] decorator around it that crash tests use
//! to stop the process at a step.

use remaudit_store::retention::{ArchiveTable, Lines};

use crate::manifest::{ArchivedFile, Manifest};
use crate::{Archive, RetentionError};

/// The environment variable that stops a run at a step (crash tests only):
/// `batch-numbered`, `archive-inserted`, `file-written` or `before-delete`.
/// Only `remaudit retention run` reads it.
pub const CRASH_AT_VAR: &str = "REMAUDIT_RETENTION_CRASH_AT";

/// A point in a batch where the job can be stopped, for crash tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The batch has its number, and its journal row is not yet committed.
    BatchNumbered,
    /// The rows are copied into the archive tables (not yet committed).
    ArchiveInserted,
    /// The files and manifest are written.
    FileWritten,
    /// Just before the rows leave the live tables.
    BeforeDelete,
}

/// The step [`CRASH_AT_VAR`] names, if any.
///
/// # Errors
/// When the variable holds something else.
pub fn crash_step_from_env() -> Result<Option<Step>, RetentionError> {
    match std::env::var(CRASH_AT_VAR).ok().as_deref() {
        None | Some("") => Ok(None),
        Some("batch-numbered") => Ok(Some(Step::BatchNumbered)),
        Some("archive-inserted") => Ok(Some(Step::ArchiveInserted)),
        Some("file-written") => Ok(Some(Step::FileWritten)),
        Some("before-delete") => Ok(Some(Step::BeforeDelete)),
        Some(other) => Err(RetentionError::Config(format!(
            "{CRASH_AT_VAR}={other:?}: use batch-numbered, archive-inserted, file-written or before-delete"
        ))),
    }
}

/// Where the protocol writes a batch's files, and what it tells at each
/// step. Every method but [`ArchiveSink::archive`] has a default that
/// goes to the archive; [`ArchiveSink::checkpoint`] does nothing.
#[async_trait::async_trait]
pub trait ArchiveSink: Send + Sync {
    /// The archive underneath.
    fn archive(&self) -> &Archive;

    /// A fresh location for batch `batch` of installation `installation`.
    fn location(&self, installation: &str, batch: i64) -> String {
        self.archive().location(installation, batch)
    }

    /// Writes one table's rows of a batch under `location`.
    async fn write_file(
        &self,
        location: &str,
        table: ArchiveTable,
        lines: Lines<'_>,
    ) -> Result<ArchivedFile, RetentionError> {
        self.archive().write_file(location, table, lines).await
    }

    /// Writes one table's rows of ISO week `week` as Parquet under `location`.
    async fn write_week(
        &self,
        location: &str,
        table: ArchiveTable,
        week: &str,
        meta: &[(&str, String)],
        lines: Lines<'_>,
    ) -> Result<Vec<ArchivedFile>, RetentionError> {
        self.archive()
            .write_week(location, table, week, meta, lines)
            .await
    }

    /// Writes the manifest under `location`; returns its SHA-256.
    async fn write_manifest(
        &self,
        location: &str,
        manifest: &Manifest,
    ) -> Result<String, RetentionError> {
        self.archive().write_manifest(location, manifest).await
    }

    /// Called as a batch passes each step.
    fn checkpoint(&self, _step: Step) {}
}

impl ArchiveSink for Archive {
    fn archive(&self) -> &Archive {
        self
    }
}

/// An archive that aborts the process when a batch reaches one step: what
/// the crash tests kill `remaudit retention run` with. `remaudit serve`
/// never builds one.
#[derive(Debug)]
pub struct CrashAt {
    archive: Archive,
    step: Step,
}

impl CrashAt {
    /// `archive`, stopping the process at `step`.
    #[must_use]
    pub fn new(archive: Archive, step: Step) -> Self {
        Self { archive, step }
    }
}

impl ArchiveSink for CrashAt {
    fn archive(&self) -> &Archive {
        &self.archive
    }

    fn checkpoint(&self, step: Step) {
        if step == self.step {
            eprintln!("remaudit: stopping at {step:?}, as {CRASH_AT_VAR} asks");
            std::process::abort();
        }
    }
}
