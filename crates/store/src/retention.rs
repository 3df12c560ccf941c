//! What the store does for retention: the policy that sets each row's
//! expiry when it is written, and the data steps of moving expired rows to
//! the archive. The retention job (crate `remaudit-retention`) owns the
//! protocol: it names each batch's location, writes the files and the
//! manifest, and passes its crash-test checkpoints; the store only moves rows.
//!
//! One batch moves in one database transaction, held by the [`ArchiveBatch`]
//! that [`RetentionStore::next_batch`] hands out: the rows and their events
//! are already copied into the archive tables; the job reads them back
//! ([`ArchiveBatch::rows`]) to write the batch's files, then has them removed
//! from the live tables and the batch marked done in one step
//! ([`ArchiveBatch::finish`]), which commits. The batch is recorded as
//! `pending`, with its location, in its own commit before the transaction
//! starts, so a crash at any point leaves the rows live and at most some
//! files of a pending batch, which the next run removes before it starts.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use futures::stream::BoxStream;
use remaudit_model::chain::ChainHead;
use remaudit_model::{NewAudit, StoredAudit};
use serde::Serialize;

use crate::StoreError;
use crate::admin_log::AdminLogStore;

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

/// Rows of one archive file, one JSON object per line.
pub type Lines<'a> = BoxStream<'a, Result<String, StoreError>>;

/// Names where a batch's files go, given the database's installation id
/// and the batch's number. [`RetentionStore::next_batch`] calls it once the
/// batch has its number and before its journal row is written.
pub type Locate<'a> = &'a (dyn Fn(&str, i64) -> String + Send + Sync);

/// The two archive tables a batch's rows are copied into, in the order
/// their files are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveTable {
    /// `remediation_audit_archive`: summary rows.
    Remediations,
    /// `remediation_audit_events_archive`: timeline events.
    Events,
}

impl ArchiveTable {
    /// Both tables, summary rows first.
    pub const ALL: [Self; 2] = [Self::Remediations, Self::Events];

    /// The table's name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Remediations => "remediation_audit_archive",
            Self::Events => "remediation_audit_events_archive",
        }
    }

    /// The live table whose rows it keeps, as manifests and file names call it.
    #[must_use]
    pub const fn live_name(self) -> &'static str {
        match self {
            Self::Remediations => "remediation_audit",
            Self::Events => "remediation_audit_events",
        }
    }

    /// The archive table of the live table `name`, if it is one.
    #[must_use]
    pub fn of_live(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.live_name() == name)
    }

    /// The columns [`ArchiveBatch::sorted_rows`] orders by: summary rows by
    /// alert, events by remediation, each then by start time and id.
    #[must_use]
    pub fn sort_columns(self) -> &'static [&'static str] {
        match self {
            Self::Remediations => &["alert_fingerprint", "start_time", "id"],
            Self::Events => &["namespace", "remediation_name", "start_time", "id"],
        }
    }
}

/// What a batch's files hold, recorded in the journal when it finishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchTotals {
    /// Summary rows written.
    pub remediations: u64,
    /// Events written.
    pub events: u64,
    /// Compressed bytes written.
    pub bytes: u64,
    /// Earliest `start_time` in the batch.
    pub start_time_min: Option<DateTime<Utc>>,
    /// Latest `start_time` in the batch.
    pub start_time_max: Option<DateTime<Utc>>,
    /// SHA-256 of the batch's manifest, lowercase hex.
    pub manifest_sha256: String,
}

/// The next piece of retention work the store found.
pub enum Retiring<'a> {
    /// A due weekly partition that held no row at all was dropped: no batch,
    /// no file, and no checkpoint (nothing was archived, so nothing can be
    /// lost between its steps). `kept` rows that were not due went back to
    /// the live table.
    Emptied {
        /// The partition's name.
        source: String,
        /// Rows that were not due and stay live.
        kept: u64,
    },
    /// A batch whose rows are copied into the archive tables, in an open
    /// transaction (on SQLite it also holds the store's write turn).
    Batch(Box<dyn ArchiveBatch + 'a>),
}

impl std::fmt::Debug for Retiring<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Emptied { source, kept } => f
                .debug_struct("Emptied")
                .field("source", source)
                .field("kept", kept)
                .finish(),
            Self::Batch(b) => f.debug_tuple("Batch").field(&b.number()).finish(),
        }
    }
}

/// One batch in flight: recorded as pending at its location, its rows
/// copied into the archive tables in a transaction this value holds.
/// Dropping it without [`ArchiveBatch::finish`] rolls the transaction back:
/// the rows stay live and the batch stays pending. On SQLite the batch holds
/// the store's write turn: no write method of the same store may be called
/// while a batch is held.
#[async_trait::async_trait]
pub trait ArchiveBatch: Send {
    /// The batch's number (the journal's id).
    fn number(&self) -> i64;
    /// Where its files go, as the journal records it.
    fn location(&self) -> &str;
    /// The installation id of the database, which the location is under.
    fn installation(&self) -> &str;
    /// Where the rows came from: `rows`, `deleted` or a partition's name.
    fn source(&self) -> &str;
    /// Rows of a retired partition that were not due and stay live.
    fn kept(&self) -> u64;
    /// The batch's rows of one archive table, one JSON object a line, by id.
    fn rows(&mut self, table: ArchiveTable) -> Lines<'_>;
    /// How many rows of one archive table the batch holds: what its files must hold.
    async fn row_count(&mut self, table: ArchiveTable) -> Result<u64, StoreError>;
    /// The days (UTC) on which the batch's rows of one archive table started.
    async fn start_days(&mut self, table: ArchiveTable) -> Result<Vec<NaiveDate>, StoreError>;
    /// The batch's rows of one archive table that started in `[from, to)`,
    /// one JSON object a line, ordered by [`ArchiveTable::sort_columns`]
    /// (text compared byte by byte).
    fn sorted_rows(
        &mut self,
        table: ArchiveTable,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Lines<'_>;
    /// Earliest and latest `start_time` of the batch's summary rows.
    async fn start_times(
        &mut self,
    ) -> Result<(Option<DateTime<Utc>>, Option<DateTime<Utc>>), StoreError>;
    /// The chain heads of the batch's remediations, which its manifest
    /// carries so that their chains can be checked once they left the
    /// database (PostgreSQL locks them until the batch ends).
    async fn chain_heads(&mut self) -> Result<Vec<ChainHead>, StoreError>;
    /// Removes the batch's rows, and their remediations' chain heads, from
    /// the live tables, records the batch as
    /// done with what its files hold, and commits, all in the batch's one
    /// transaction. Call it only once the files and the manifest are written.
    /// When the journal no longer holds the batch as pending (another run
    /// took it for interrupted and removed its files), it fails with
    /// [`StoreError::NotPending`] and commits nothing: the rows stay live.
    async fn finish(self: Box<Self>, totals: &BatchTotals) -> Result<(), StoreError>;
}

/// The data steps of retention: partitions, the run lock, due rows, and
/// the journal of batches moved to the archive. Every run is an admin
/// action, recorded in the admin log, hence the supertrait.
#[async_trait::async_trait]
pub trait RetentionStore: AdminLogStore {
    /// Creates the partitions that cover `[from, to)` (PostgreSQL; nothing on SQLite).
    async fn ensure_partitions(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<u32, StoreError>;

    /// Takes the lock that keeps retention runs from overlapping; `None` when another run holds it.
    async fn retention_lock(&self) -> Result<Option<RetentionLock>, StoreError>;

    /// Rows a retention run would move, per start day; changes nothing.
    async fn retention_preview(&self, request: &RetireRequest)
    -> Result<Vec<DayCount>, StoreError>;

    /// Starts the next batch of due rows: numbers it, records it as pending
    /// at the location `locate` names, and copies its rows into the archive
    /// tables in a transaction the returned batch holds, or (a whole week on
    /// PostgreSQL) commits them there first, so that the batch only writes
    /// files and marks itself done; a batch so committed and left pending by
    /// an interrupted run comes back first. `None` when nothing is due.
    async fn next_batch<'a>(
        &'a self,
        request: &RetireRequest,
        locate: Locate<'_>,
    ) -> Result<Option<Retiring<'a>>, StoreError>;

    /// Batches that an interrupted run left pending.
    async fn pending_batches(&self) -> Result<Vec<PendingBatch>, StoreError>;

    /// This database's installation id, which its archive batches are under.
    async fn installation_id(&self) -> Result<String, StoreError>;

    /// Moves each weekly partition (of the live and the archive tables, with
    /// their indexes) whose week is old enough into the tablespace `tiers`
    /// gives it at `now`, one week's tables in one short transaction that
    /// gives up rather than wait for their locks. Nothing on SQLite, whose
    /// settings refuse tiers.
    async fn move_to_tiers(
        &self,
        tiers: &Tiers,
        now: DateTime<Utc>,
    ) -> Result<TierReport, StoreError> {
        let _ = (tiers, now);
        Ok(TierReport::default())
    }

    /// Drops the journal entry of a pending batch whose files are removed,
    /// unless its rows are committed in the archive tables: then it stays
    /// pending, for the next run to write its files again.
    async fn forget_batch(&self, batch: i64) -> Result<(), StoreError>;

    /// For a pending batch whose rows are committed in the archive tables
    /// (its location held another writer's files, or an interrupted run
    /// left it): gives it a new number and location (from `locate`), so
    /// that nothing can finish the old one. False, and nothing changed, for
    /// any other batch, which can be forgotten instead.
    async fn renumber_batch(&self, batch: i64, locate: Locate<'_>) -> Result<bool, StoreError> {
        let _ = (batch, locate);
        Ok(false)
    }

    /// After a run: makes the weeks of the rows waiting in the default
    /// partitions that are not due yet (moving them in), refreshes the
    /// partitioned tables' statistics (autovacuum never analyses a
    /// partitioned parent itself), and counts the rows of weeks not yet due
    /// still in the default partitions. Nothing on SQLite, which has no partitions.
    async fn partition_upkeep(&self, request: &RetireRequest) -> Result<Upkeep, StoreError> {
        let _ = request;
        Ok(Upkeep::default())
    }

    /// Finished batches with rows that started in `[from, to)`.
    async fn finished_batches(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<BatchRecord>, StoreError>;

    /// Where a finished batch's rows are now.
    async fn batch_places(&self, batch: i64) -> Result<BatchPlaces, StoreError>;

    /// Ids of a finished batch's archived rows.
    async fn batch_ids(&self, batch: i64) -> Result<BatchIds, StoreError>;
}

/// What a run's partition upkeep did and found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Upkeep {
    /// Weekly tables made for rows that waited in a default partition.
    pub tables_made: u32,
    /// Summary rows still in the default partition that belong in a weekly
    /// one (their week is not due): 0 unless weeks could not be made. Rows of
    /// due weeks there (waiting for a row-wise batch, or held) do not count.
    pub default_remediations: u64,
    /// Events likewise.
    pub default_events: u64,
}

/// Days after its end that a weekly partition moves to the warm tablespace.
pub const WARM_AFTER_DAYS: i64 = 7;

/// Days after its end that a weekly partition moves to the cold tablespace.
pub const COLD_AFTER_DAYS: i64 = 30;

/// Tablespaces for whole weekly partitions by age (PostgreSQL): the warm
/// tier from [`WARM_AFTER_DAYS`] after a week ends, the cold tier from
/// [`COLD_AFTER_DAYS`]. Both are off (`None`) by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tiers {
    /// The warm tier's tablespace.
    pub warm: Option<String>,
    /// The cold tier's tablespace.
    pub cold: Option<String>,
}

impl Tiers {
    /// Whether neither tier is set.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.warm.is_none() && self.cold.is_none()
    }

    /// The tablespace a week starting on `monday` belongs in at `now`, if any.
    #[must_use]
    pub fn of_week(&self, monday: NaiveDate, now: DateTime<Utc>) -> Option<&str> {
        let end = monday.and_time(chrono::NaiveTime::MIN).and_utc() + TimeDelta::days(7);
        let age = now - end;
        match (&self.cold, &self.warm) {
            (Some(cold), _) if age >= TimeDelta::days(COLD_AFTER_DAYS) => Some(cold),
            (_, Some(warm)) if age >= TimeDelta::days(WARM_AFTER_DAYS) => Some(warm),
            _ => None,
        }
    }
}

/// What moving weeks between tiers did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TierReport {
    /// Weeks moved (by their Monday) and the tablespace each went to.
    pub moved: Vec<(NaiveDate, String)>,
    /// Weeks left where they were because their tables stayed locked; the
    /// next run moves them.
    pub busy: Vec<NaiveDate>,
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

/// The chain heads of a batch's archived remediations, `$1` the batch;
/// the same text on both backends.
pub(crate) const BATCH_HEADS_SQL: &str = "SELECT namespace, remediation_name, start_time, \
    last_seq, last_mac FROM remediation_chain_heads \
    WHERE (namespace, remediation_name, start_time) IN (SELECT namespace, remediation_name, \
    start_time FROM remediation_audit_archive WHERE archive_batch = $1) \
    ORDER BY start_time, namespace, remediation_name";

/// Removes the chain heads of a batch's archived remediations, `$1` the
/// batch: no event can join those chains again (the store refuses records
/// of archived remediations), and the manifest carries the heads.
pub(crate) const DELETE_BATCH_HEADS_SQL: &str = "DELETE FROM remediation_chain_heads \
    WHERE (namespace, remediation_name, start_time) IN (SELECT namespace, remediation_name, \
    start_time FROM remediation_audit_archive WHERE archive_batch = $1)";

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

/// A count as the journal's BIGINT.
pub(crate) fn journal_count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
