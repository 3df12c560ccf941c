//! What the store does for retention: the policy that sets each row's
//! expiry when it is written, and the steps of moving expired rows to the
//! archive. The retention job (crate `remaudit-retention`) drives the steps
//! and writes the archive files through an [`ArchiveSink`].
//!
//! One batch moves in one database transaction: copy the rows and their
//! events into the archive tables, write the batch's files, then remove the
//! rows from the live tables and mark the batch done. The batch is recorded as
//! `pending`, with its location, in its own commit before any file is
//! written, so a crash at any point leaves the rows live and at most some
//! files of a pending batch, which the next run removes before it starts.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use futures::stream::BoxStream;
use remaudit_model::{NewAudit, StoredAudit};
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// How long rows are kept, and which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Age at which a row expires, counted from its completion (or its start
    /// when it never completed).
    pub age: TimeDelta,
    /// Whether only terminal rows expire; when false, a remediation that never
    /// finished expires `age` after it started.
    pub terminal_only: bool,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self {
            age: TimeDelta::days(90),
            terminal_only: true,
        }
    }
}

impl RetentionPolicy {
    /// The expiry a summary row gets when `record` sets its state.
    #[must_use]
    pub fn expiry(&self, record: &NewAudit) -> Option<DateTime<Utc>> {
        if self.terminal_only && !record.is_terminal() {
            return None;
        }
        record
            .completion_time
            .unwrap_or(record.start_time)
            .checked_add_signed(self.age)
    }
}

/// What one retention pass may move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetireRequest {
    /// The clock of the run: rows whose expiry is at or before it are due.
    pub now: DateTime<Utc>,
    /// The policy's age, which says when a whole weekly partition is due.
    pub age: TimeDelta,
    /// Most rows a row-wise batch moves.
    pub batch_rows: u32,
    /// On PostgreSQL, also move due rows of weeks that are not wholly due,
    /// row by row; otherwise they leave with their week.
    pub exact: bool,
}

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

/// Rows of one archive file, one JSON object per line.
pub type Lines<'a> = BoxStream<'a, Result<String, StoreError>>;

/// One written archive file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedFile {
    /// The table the rows came from.
    pub table: String,
    /// Object path of the file.
    pub path: String,
    /// Rows (lines) in the file.
    pub rows: u64,
    /// Size of the compressed file in bytes.
    pub bytes: u64,
    /// SHA-256 of the compressed file, lowercase hex.
    pub sha256: String,
}

/// The manifest written beside a batch's files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format tag, `remaudit-archive/1`.
    pub format: String,
    /// Batch number (the journal's id).
    pub batch: i64,
    /// The installation id of the database that wrote the batch; absent in
    /// manifests written before installation ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installation: Option<String>,
    /// Where the rows came from: `rows` or a partition name.
    pub source: String,
    /// The run's clock.
    pub run_now: DateTime<Utc>,
    /// Earliest `start_time` in the batch.
    pub start_time_min: Option<DateTime<Utc>>,
    /// Latest `start_time` in the batch.
    pub start_time_max: Option<DateTime<Utc>>,
    /// The files, remediations first.
    pub files: Vec<ArchivedFile>,
}

/// The manifest's format tag.
pub const MANIFEST_FORMAT: &str = "remaudit-archive/1";

/// Where archive files go; the retention job implements it over object storage.
#[async_trait::async_trait]
pub trait ArchiveSink: Send + Sync {
    /// The location (object prefix) of batch `batch`'s files, for the
    /// database whose installation id is `installation`.
    fn location(&self, installation: &str, batch: i64) -> String;

    /// Writes one compressed file of `lines` under `location`.
    async fn write_file(
        &self,
        location: &str,
        table: &str,
        lines: Lines<'_>,
    ) -> Result<ArchivedFile, StoreError>;

    /// Writes the manifest under `location`; returns its SHA-256.
    async fn write_manifest(
        &self,
        location: &str,
        manifest: &Manifest,
    ) -> Result<String, StoreError>;

    /// Called as a batch passes each step.
    fn checkpoint(&self, step: Step);
}

/// What one batch moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchReport {
    /// Batch number.
    pub batch: i64,
    /// `rows`, `deleted` or the partition's name.
    pub source: String,
    /// Summary rows archived and removed.
    pub remediations: u64,
    /// Events archived and removed.
    pub events: u64,
    /// Bytes of files written.
    pub bytes: u64,
    /// Rows of a retired partition that were not due and stay live.
    pub kept: u64,
    /// Where the files are.
    pub location: String,
}

/// A batch that did not finish, whose files must go.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PendingBatch {
    /// Batch number.
    #[sqlx(rename = "id")]
    pub batch: i64,
    /// Where its files may be; empty when the batch was interrupted before
    /// it had a location (a journal row from before the location was written
    /// with the row), and so wrote no file.
    pub location: String,
    /// This database's installation id; `None` before its migration.
    pub installation: Option<String>,
}

/// How many rows of one start day a run would move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DayCount {
    /// The UTC day of `start_time`.
    pub day: NaiveDate,
    /// Summary rows.
    pub remediations: u64,
    /// Timeline events.
    pub events: u64,
}

/// A finished batch, as the journal records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRecord {
    /// Batch number.
    pub batch: i64,
    /// Where its files are.
    pub location: String,
    /// Summary rows it moved.
    pub remediations: u64,
    /// Events it moved.
    pub events: u64,
    /// SHA-256 of its manifest.
    pub manifest_sha256: Option<String>,
}

/// Where the rows of one finished batch are now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchPlaces {
    /// Summary rows of the batch in the archive table.
    pub archived_remediations: u64,
    /// Events of the batch in the archive table.
    pub archived_events: u64,
    /// Of those, summary rows also still in the live table (should be 0).
    pub live_remediations: u64,
    /// Of those, events also still in the live table (should be 0).
    pub live_events: u64,
}

/// Ids of a batch's archived rows, for checking files against the tables.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BatchIds {
    /// Summary row ids.
    pub remediations: Vec<i64>,
    /// Event row ids.
    pub events: Vec<i64>,
}

/// The answer to a soft delete.
#[derive(Debug, Clone, PartialEq)]
pub enum DeleteOutcome {
    /// The row is now hidden from reads; the next retention run archives it.
    Deleted(Box<StoredAudit>),
    /// A legal hold keeps the row; clear the hold first.
    Held,
    /// No such row, or it was already deleted.
    NotFound,
}

/// Held while a retention run works, so that two runs never overlap;
/// dropping it releases the lock.
pub struct RetentionLock {
    _held: Box<dyn std::any::Any + Send + Sync>,
}

impl RetentionLock {
    pub(crate) fn new(held: impl std::any::Any + Send + Sync) -> Self {
        Self {
            _held: Box::new(held),
        }
    }
}

impl std::fmt::Debug for RetentionLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RetentionLock")
    }
}

/// Selects the pending batches; the same text on both backends.
pub(crate) const PENDING_SQL: &str = "SELECT id, location, \
    (SELECT CAST(i.id AS TEXT) FROM remaudit_installation i) AS installation \
    FROM remediation_retention_batches WHERE state = 'pending' ORDER BY id";

/// Selects the installation id as text; the same text on both backends.
pub(crate) const INSTALLATION_SQL: &str = "SELECT CAST(id AS TEXT) FROM remaudit_installation";

/// The installation id [`INSTALLATION_SQL`] found, when it is a UUID.
pub(crate) fn installation(found: Option<String>) -> Result<String, StoreError> {
    match found {
        Some(id) if uuid::Uuid::try_parse(&id).is_ok() => Ok(id),
        other => Err(StoreError::Schema(format!(
            "the database's installation id is {other:?}, not a UUID: run `remaudit migrate` \
             (migration 4 makes it) and never edit the table remaudit_installation"
        ))),
    }
}

/// The ids of a batch's archived summary rows and events, `$1` the batch;
/// the same text on both backends.
pub(crate) const BATCH_IDS_SQL: [&str; 2] = [
    "SELECT id FROM remediation_audit_archive WHERE archive_batch = $1 ORDER BY id",
    "SELECT id FROM remediation_audit_events_archive WHERE archive_batch = $1 ORDER BY id",
];

/// A finished batch's journal row, as both backends store it.
#[derive(sqlx::FromRow)]
pub(crate) struct JournalRow {
    id: i64,
    location: String,
    remediations: i64,
    events: i64,
    manifest_sha256: Option<String>,
}

impl From<JournalRow> for BatchRecord {
    fn from(row: JournalRow) -> Self {
        Self {
            batch: row.id,
            location: row.location,
            remediations: u64::try_from(row.remediations).unwrap_or(0),
            events: u64::try_from(row.events).unwrap_or(0),
            manifest_sha256: row.manifest_sha256,
        }
    }
}

/// The four counts of [`BatchPlaces`], as both backends select them.
#[derive(sqlx::FromRow)]
pub(crate) struct PlacesRow {
    ar: i64,
    ae: i64,
    lr: i64,
    le: i64,
}

impl From<PlacesRow> for BatchPlaces {
    fn from(row: PlacesRow) -> Self {
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        Self {
            archived_remediations: n(row.ar),
            archived_events: n(row.ae),
            live_remediations: n(row.lr),
            live_events: n(row.le),
        }
    }
}

/// What a batch's files hold: summary rows, events, compressed bytes.
pub(crate) struct Totals {
    pub(crate) remediations: u64,
    pub(crate) events: u64,
    pub(crate) bytes: u64,
}

/// Writes a batch's manifest over its two written files (summary rows
/// first), passes the `FileWritten` step, and returns the manifest's SHA-256
/// with the batch's totals; the same on both backends.
pub(crate) async fn write_manifest(
    sink: &dyn ArchiveSink,
    location: &str,
    mut manifest: Manifest,
    files: Vec<ArchivedFile>,
) -> Result<(String, Totals), StoreError> {
    manifest.files = files;
    let sha = sink.write_manifest(location, &manifest).await?;
    sink.checkpoint(Step::FileWritten);
    let rows = |i: usize| manifest.files.get(i).map_or(0, |f| f.rows);
    let totals = Totals {
        remediations: rows(0),
        events: rows(1),
        bytes: manifest.files.iter().map(|f| f.bytes).sum(),
    };
    Ok((sha, totals))
}

impl Manifest {
    /// A manifest of batch `batch` whose files are still to be written.
    pub(crate) fn new(
        batch: i64,
        installation: &str,
        source: &str,
        run_now: DateTime<Utc>,
        start_time_min: Option<DateTime<Utc>>,
        start_time_max: Option<DateTime<Utc>>,
    ) -> Self {
        Self {
            format: MANIFEST_FORMAT.to_owned(),
            batch,
            installation: Some(installation.to_owned()),
            source: source.to_owned(),
            run_now,
            start_time_min,
            start_time_max,
            files: Vec::new(),
        }
    }
}

/// A count as the journal's BIGINT.
pub(crate) fn journal_count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
