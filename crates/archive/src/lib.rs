//! The archive tier: read-only SQL over the Parquet files the retention job
//! writes, with Apache DataFusion.
//!
//! [`ArchiveQuery::open`] reads the archive's manifests and registers two
//! tables over the Parquet files they list, `remediation_audit` and
//! `remediation_audit_events`, with the columns of the live tables (times
//! as UTC timestamps, JSON documents as text). Only the files a manifest
//! lists are read, so an interrupted batch (no manifest yet) never shows;
//! each file's size is checked against its manifest before a query runs,
//! and a file that does not decode fails the query with its name. Batches
//! written as JSON Lines are not queried: they are counted in
//! [`ArchiveQuery::skipped`].

mod analytics;
mod checked;

pub use analytics::{LiveRows, MAX_LIVE_BYTES, MAX_LIVE_ROWS, merge_postmortem};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, NaiveDate, Utc, Weekday};
use datafusion::arrow::array::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use futures::StreamExt as _;
use object_store_df::{ObjectStore, ObjectStoreExt as _};
use remaudit_model::analytics::RemediationBrief;
use remaudit_model::approx_f64;
use remaudit_model::{EventRecord, StoredAudit};
use remaudit_retention::{
    Archive, CHECK_CHUNK_BYTES, FileUrl, StoredManifest, columnar, is_parquet_part,
};
use remaudit_store::retention::ArchiveTable;

/// What can go wrong with a query of the archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveQueryError {
    /// The archive cannot be opened or listed, or a manifest is unreadable.
    #[error("{0}")]
    Archive(String),
    /// A file a manifest lists is missing or is not the size it records:
    /// the archive is damaged, so no answer is given.
    #[error(
        "archive file {path} {what}; no answer is given from a damaged archive: \
         run `remaudit retention verify` and restore the file from a copy"
    )]
    Damaged {
        /// The file, relative to the archive.
        path: String,
        /// What is wrong with it.
        what: String,
    },
    /// The SQL is not valid, not read-only, or failed while it ran (a file
    /// that does not decode fails it here, with the file's name).
    #[error("query failed: {0}")]
    Query(String),
    /// The query ran longer than its time limit.
    #[error("query took longer than {0:?} and was stopped")]
    Timeout(Duration),
    /// The answer has more rows than the row limit.
    #[error("the answer has more than {0} rows: narrow the query or add LIMIT")]
    TooManyRows(usize),
    /// The query needed more memory than a query may use.
    #[error("the query needs more memory than it may use ({0}): narrow it")]
    TooLarge(String),
    /// The engine failed on a file that passed its checksums (a file the
    /// archive's writer got wrong), or on its own: a fault of the service.
    #[error("the query engine failed: {0}")]
    Engine(String),
}

/// Memory a query may use (its hash tables, sorts and buffers); past it the
/// query fails rather than the process running out.
const QUERY_MEMORY: usize = 512 << 20;

/// Keeps the manifests of one installation: the one named, or the only one
/// there is. Two manifests of one batch number (an interrupted batch whose
/// rows were moved again, a restored backup) are refused: one of them is
/// not the batch the database finished.
fn one_installation(
    url: &str,
    installation: Option<&str>,
    manifests: &mut Vec<StoredManifest>,
) -> Result<(), ArchiveQueryError> {
    let owner = |m: &StoredManifest| {
        m.manifest
            .installation
            .clone()
            .unwrap_or_else(|| "(before installation ids)".to_owned())
    };
    let mut owners: Vec<String> = manifests.iter().map(owner).collect();
    owners.sort();
    owners.dedup();
    match installation {
        Some(wanted) => manifests.retain(|m| owner(m) == wanted),
        None if owners.len() > 1 => {
            return Err(ArchiveQueryError::Archive(format!(
                "{url} holds the batches of {} databases ({}): name one with --installation",
                owners.len(),
                owners.join(", ")
            )));
        }
        None => {}
    }
    let mut numbers: Vec<(i64, &str)> = manifests
        .iter()
        .map(|m| (m.manifest.batch, m.location.as_str()))
        .collect();
    numbers.sort_unstable();
    if let Some(pair) = numbers.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(ArchiveQueryError::Archive(format!(
            "batch {} has two manifests, at {} and {}: one is a batch the database did not \
             finish; run `remaudit retention run` (it removes interrupted batches) and \
             `remaudit retention verify`",
            pair[0].0, pair[0].1, pair[1].1
        )));
    }
    Ok(())
}

/// Files whose sizes are asked for at once before a query.
const HEADS_AT_ONCE: usize = 16;

/// The limits every query runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest a query may run.
    pub time: Duration,
    /// Most rows an answer may have.
    pub rows: usize,
    /// Parts a query is split into, run at once (0: one per core).
    pub partitions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            time: Duration::from_mins(1),
            rows: 100_000,
            partitions: 0,
        }
    }
}

/// A file a table reads: its name in the archive, its URL for the engine and its size.
#[derive(Debug, Clone)]
struct Listed {
    path: String,
    url: String,
    bytes: u64,
    /// The table whose rows it holds.
    table: ArchiveTable,
    /// The Monday (UTC) that starts the week whose rows it holds.
    week: Option<NaiveDate>,
}

/// The first and last start time of a batch's rows, as its manifest records them.
type Span = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// The archive's Parquet files, registered as tables for SQL.
pub struct ArchiveQuery {
    ctx: SessionContext,
    /// Where the archive is.
    url: String,
    /// The store the files are read from, unchecked (for their sizes).
    store: Arc<dyn ObjectStore>,
    files: Vec<Listed>,
    /// Numbers the tables a post-mortem registers for its window.
    windows: AtomicU64,
    batches: usize,
    skipped: usize,
    /// The start times (first, last) of the batches left out as JSON Lines.
    skipped_spans: Vec<Span>,
    /// The installation asked for when opened.
    installation: Option<String>,
    limits: Limits,
    /// Bytes the checked store has fetched.
    fetched: Arc<AtomicU64>,
}

impl std::fmt::Debug for ArchiveQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveQuery")
            .field("archive", &self.url)
            .field("files", &self.files.len())
            .field("batches", &self.batches)
            .field("skipped", &self.skipped)
            .finish_non_exhaustive()
    }
}

impl ArchiveQuery {
    /// Reads the manifests of the archive at `url` (`file:///dir` or
    /// `s3://bucket/prefix`, S3 configured by the `AWS_*` variables) and
    /// registers its tables.
    ///
    /// # Errors
    /// [`ArchiveQueryError::Archive`] when the archive cannot be opened or
    /// listed, or a manifest is unreadable.
    pub async fn open(
        url: &str,
        installation: Option<&str>,
        limits: Limits,
    ) -> Result<Self, ArchiveQueryError> {
        Self::open_with(url, installation, limits, false).await
    }

    /// As [`ArchiveQuery::open`], but a local archive directory that does
    /// not exist yet (retention makes it with its first batch) reads as an
    /// empty archive instead of failing.
    ///
    /// # Errors
    /// As [`ArchiveQuery::open`].
    pub async fn open_or_empty(
        url: &str,
        installation: Option<&str>,
        limits: Limits,
    ) -> Result<Self, ArchiveQueryError> {
        Self::open_with(url, installation, limits, true).await
    }

    async fn open_with(
        url: &str,
        installation: Option<&str>,
        limits: Limits,
        missing_is_empty: bool,
    ) -> Result<Self, ArchiveQueryError> {
        let missing = url
            .strip_prefix("file://")
            .is_some_and(|dir| !dir.is_empty() && !std::path::Path::new(dir).exists());
        let archive = if missing && missing_is_empty {
            None
        } else {
            Some(
                Archive::open_to_read(url)
                    .map_err(|e| ArchiveQueryError::Archive(e.to_string()))?,
            )
        };
        let mut manifests = match &archive {
            Some(archive) => archive
                .manifests()
                .await
                .map_err(|e| ArchiveQueryError::Archive(e.to_string()))?,
            None => Vec::new(),
        };
        one_installation(url, installation, &mut manifests)?;
        // Pruning by row-group statistics and the page index, and filters
        // applied while decoding, so that one alert's rows cost few reads.
        // Past the memory limit a query fails: nothing spills to disk,
        // whose temporary space (a pod's small /tmp) no limit here covers.
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(QUERY_MEMORY, 1.0)
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()
            .map_err(|e| ArchiveQueryError::Archive(e.to_string()))?;
        let mut config = SessionConfig::new();
        if limits.partitions > 0 {
            config = config.with_target_partitions(limits.partitions);
        }
        let config = config
            .set_bool("datafusion.execution.parquet.pushdown_filters", true)
            .set_bool("datafusion.execution.parquet.reorder_filters", true)
            .set_bool("datafusion.execution.parquet.enable_page_index", true);
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .build();
        let ctx = SessionContext::new_with_state(state);
        let (store, base): (Arc<dyn ObjectStore>, String) =
            if let Some(rest) = url.strip_prefix("s3://") {
                let bucket = rest.split('/').next().unwrap_or_default();
                let s3 = object_store_df::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .build()
                    .map_err(|e| ArchiveQueryError::Archive(format!("cannot read {url}: {e}")))?;
                (Arc::new(s3), format!("s3://{bucket}"))
            } else {
                (
                    Arc::new(object_store_df::local::LocalFileSystem::new()),
                    "file://".to_owned(),
                )
            };
        let mut files = Vec::new();
        let mut expected = HashMap::new();
        let (mut batches, mut skipped) = (0, 0);
        let mut skipped_spans = Vec::new();
        for stored in &manifests {
            // Only an archive that was opened has manifests.
            let Some(archive) = &archive else { break };
            if !stored
                .manifest
                .files
                .iter()
                .all(|f| f.path.ends_with(".parquet"))
            {
                skipped += 1;
                skipped_spans.push((
                    stored.manifest.start_time_min,
                    stored.manifest.start_time_max,
                ));
                continue;
            }
            batches += 1;
            for file in &stored.manifest.files {
                // A manifest names only its own batch's files: a name
                // elsewhere means the manifest was altered.
                if !is_parquet_part(&stored.location, &file.path) {
                    return Err(ArchiveQueryError::Archive(format!(
                        "the manifest of {} lists {}, which is not a file of its batch; \
                         run `remaudit retention verify`",
                        stored.location, file.path
                    )));
                }
                let table =
                    ArchiveTable::of_live(&file.table).unwrap_or(ArchiveTable::Remediations);
                let listed = Listed {
                    path: file.path.clone(),
                    url: engine_url(&archive.file_url(&file.path)),
                    bytes: file.bytes,
                    table,
                    week: file.week.as_deref().and_then(monday_of),
                };
                // Files written before chunk checksums are checked whole.
                let (chunk, digests) = if file.chunk_sha256.is_empty() {
                    (file.bytes, vec![file.sha256.clone()])
                } else {
                    (CHECK_CHUNK_BYTES, file.chunk_sha256.clone())
                };
                expected.insert(
                    location_of(&listed.url)?,
                    checked::Expected {
                        name: file.path.clone(),
                        bytes: file.bytes,
                        chunk,
                        digests,
                    },
                );
                files.push(listed);
            }
        }
        let base = url::Url::parse(&base)
            .map_err(|e| ArchiveQueryError::Archive(format!("{url}: {e}")))?;
        let checked = checked::Checked::new(Arc::clone(&store), expected);
        let fetched = checked.fetched();
        ctx.register_object_store(&base, Arc::new(checked));
        for table in ArchiveTable::ALL {
            let of_table: Vec<&Listed> = files.iter().filter(|f| f.table == table).collect();
            register(&ctx, table.live_name(), table, &of_table)?;
        }
        Ok(Self {
            ctx,
            url: url.to_owned(),
            store,
            files,
            windows: AtomicU64::new(0),
            batches,
            skipped,
            skipped_spans,
            installation: installation.map(str::to_owned),
            limits,
            fetched,
        })
    }

    /// Bytes of archive files read so far by this archive's queries (whole
    /// checked chunks; the size checks read none).
    #[must_use]
    pub fn bytes_read(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }

    /// The same archive opened again: its manifests read afresh, so that it
    /// holds every batch finished since this one was opened.
    ///
    /// # Errors
    /// As [`ArchiveQuery::open`].
    pub async fn reopen(&self) -> Result<Self, ArchiveQueryError> {
        Self::open(&self.url, self.installation.as_deref(), self.limits).await
    }

    /// Batches left out as JSON Lines whose rows may have started in
    /// `[since, until)`: a question over that window cannot count them.
    #[must_use]
    pub fn unreadable_in(&self, since: DateTime<Utc>, until: DateTime<Utc>) -> usize {
        self.skipped_spans
            .iter()
            .filter(|(first, last)| {
                first.is_none_or(|first| first < until) && last.is_none_or(|last| last >= since)
            })
            .count()
    }

    /// Batches whose Parquet files the tables read.
    #[must_use]
    pub fn batches(&self) -> usize {
        self.batches
    }

    /// Batches left out because they were written as JSON Lines.
    #[must_use]
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// Runs one read-only SQL statement over the archive's tables and
    /// returns its answer (at least one batch, empty when no row answers,
    /// so that its columns are known); any statement that would change something
    /// (DDL, DML, `SET`, `COPY`) is refused.
    ///
    /// # Errors
    /// [`ArchiveQueryError::Damaged`] when a file is missing, not its
    /// recorded size or not its checksums, [`ArchiveQueryError::Query`] for
    /// bad SQL, [`ArchiveQueryError::Engine`] for a file that does not
    /// decode, [`ArchiveQueryError::Archive`] when storage fails,
    /// [`ArchiveQueryError::TooLarge`], [`ArchiveQueryError::Timeout`] and
    /// [`ArchiveQueryError::TooManyRows`] past the limits.
    pub async fn sql(&self, sql: &str) -> Result<Vec<RecordBatch>, ArchiveQueryError> {
        let run = async {
            self.check_sizes(self.files.iter()).await?;
            let frame = self
                .ctx
                .sql_with_options(sql, read_only())
                .await
                .map_err(|e| ArchiveQueryError::Query(e.to_string()))?;
            // One row past the limit says whether the answer is over it.
            let frame = frame
                .limit(0, Some(self.limits.rows.saturating_add(1)))
                .map_err(|e| ArchiveQueryError::Query(e.to_string()))?;
            let schema = Arc::clone(frame.schema().inner());
            let mut batches = frame.collect().await.map_err(|e| failed(&e))?;
            // An answer without rows still has its columns.
            if batches.is_empty() {
                batches.push(RecordBatch::new_empty(schema));
            }
            Ok::<_, ArchiveQueryError>(batches)
        };
        let batches = tokio::time::timeout(self.limits.time, run)
            .await
            .map_err(|_| ArchiveQueryError::Timeout(self.limits.time))??;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        if rows > self.limits.rows {
            return Err(ArchiveQueryError::TooManyRows(self.limits.rows));
        }
        Ok(batches)
    }

    /// One alert's archived remediations that started in `[since, until)`,
    /// optionally in one namespace, newest first, at most `limit`: what the
    /// live post-mortem listed before they were archived. Soft-deleted
    /// remediations, which reads never showed, are left out.
    ///
    /// # Errors
    /// As [`ArchiveQuery::sql`].
    pub async fn postmortem(
        &self,
        fingerprint: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        namespace: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RemediationBrief>, ArchiveQueryError> {
        let mut params = vec![
            ScalarValue::from(fingerprint),
            utc(since),
            utc(until),
            ScalarValue::from(i64::from(limit)),
        ];
        let in_namespace = match namespace {
            Some(ns) => {
                params.push(ScalarValue::from(ns));
                " AND namespace = $5"
            }
            None => "",
        };
        // Only the summary files of the weeks the window touches are read.
        let files = self.summaries(since, until);
        let sql = |table: &str| {
            format!(
                "SELECT id, namespace, alert_fingerprint, remediation_name, overall_phase, \
                 start_time, completion_time, duration_us, failure_phase, failure_reason, \
                 timeout_phase, timeout_time FROM {table} \
                 WHERE alert_fingerprint = $1 AND start_time >= $2 AND start_time < $3 \
                 AND deleted_at IS NULL{in_namespace} ORDER BY start_time DESC, id DESC LIMIT $4"
            )
        };
        let answer = self
            .run_over(ArchiveTable::Remediations, &files, sql, params)
            .await?;
        json_rows(&answer)?
            .into_iter()
            .map(|row| brief(&row))
            .collect()
    }

    /// An archived remediation's summary row and its events, oldest first,
    /// as the live timeline showed them; `None` when the archive holds no
    /// remediation `id` (or holds it soft-deleted, which reads never show).
    ///
    /// # Errors
    /// As [`ArchiveQuery::sql`], and when an archived row does not read as
    /// a summary row or an event.
    pub async fn timeline(
        &self,
        id: i64,
    ) -> Result<Option<(StoredAudit, Vec<EventRecord>)>, ArchiveQueryError> {
        let summaries: Vec<&Listed> = self
            .files
            .iter()
            .filter(|f| f.table == ArchiveTable::Remediations)
            .collect();
        let rows = self
            .run(
                "SELECT * FROM remediation_audit WHERE id = $1 AND deleted_at IS NULL",
                vec![ScalarValue::from(id)],
                &summaries,
            )
            .await?;
        let Some(summary) = json_rows(&rows)?.into_iter().next() else {
            return Ok(None);
        };
        let remediation: StoredAudit = from_row(summary, ArchiveTable::Remediations)?;
        // The events of one remediation are in the files of its start's week.
        let monday = remediation
            .start_time
            .date_naive()
            .week(Weekday::Mon)
            .first_day();
        let events: Vec<&Listed> = self
            .files
            .iter()
            .filter(|f| f.table == ArchiveTable::Events && f.week.is_none_or(|w| w == monday))
            .collect();
        let sql = |table: &str| {
            format!(
                "SELECT * FROM {table} WHERE namespace = $1 AND remediation_name = $2 \
                 AND start_time = $3 ORDER BY event_time, id"
            )
        };
        let params = vec![
            ScalarValue::from(remediation.namespace.as_str()),
            ScalarValue::from(remediation.remediation_name.as_str()),
            utc(remediation.start_time),
        ];
        let answer = self
            .run_over(ArchiveTable::Events, &events, sql, params)
            .await?;
        let timeline = json_rows(&answer)?
            .into_iter()
            .map(|row| from_row(row, ArchiveTable::Events))
            .collect::<Result<Vec<EventRecord>, _>>()?;
        Ok(Some((remediation, timeline)))
    }

    /// Runs the SQL `sql` makes of a table name over a table of `table`'s
    /// rows in `files` alone, registered for this query and dropped after it.
    async fn run_over(
        &self,
        table: ArchiveTable,
        files: &[&Listed],
        sql: impl FnOnce(&str) -> String,
        params: Vec<ScalarValue>,
    ) -> Result<Vec<RecordBatch>, ArchiveQueryError> {
        let name = format!(
            "{}_part_{}",
            table.live_name(),
            self.windows.fetch_add(1, Ordering::Relaxed)
        );
        register(&self.ctx, &name, table, files)?;
        let answer = self.run(&sql(&name), params, files).await;
        let _ = self.ctx.deregister_table(name.as_str());
        answer
    }

    /// Runs `sql` with `$n` parameters, under the limits.
    async fn run(
        &self,
        sql: &str,
        params: Vec<ScalarValue>,
        files: &[&Listed],
    ) -> Result<Vec<RecordBatch>, ArchiveQueryError> {
        let query = |e: datafusion::error::DataFusionError| ArchiveQueryError::Query(e.to_string());
        let run = async {
            self.check_sizes(files.iter().copied()).await?;
            let frame = self
                .ctx
                .sql_with_options(sql, read_only())
                .await
                .map_err(query)?
                .with_param_values(params)
                .map_err(query)?;
            frame.collect().await.map_err(|e| failed(&e))
        };
        tokio::time::timeout(self.limits.time, run)
            .await
            .map_err(|_| ArchiveQueryError::Timeout(self.limits.time))?
    }

    /// Checks that each of `files` is there at its recorded size.
    async fn check_sizes(
        &self,
        files: impl Iterator<Item = &Listed>,
    ) -> Result<(), ArchiveQueryError> {
        // Owned values, so that the stream's futures borrow only `self`.
        let files: Vec<Listed> = files.cloned().collect();
        let store = &self.store;
        let mut heads = futures::stream::iter(files)
            .map(|file| async move {
                let location = location_of(&file.url)?;
                let head = store.head(&location).await;
                Ok::<_, ArchiveQueryError>((file, head))
            })
            .buffer_unordered(HEADS_AT_ONCE);
        while let Some(head) = heads.next().await {
            let (file, head) = head?;
            match head {
                Ok(meta) if meta.size == file.bytes => {}
                Ok(meta) => {
                    return Err(ArchiveQueryError::Damaged {
                        path: file.path.clone(),
                        what: checked::size_mismatch(meta.size, file.bytes),
                    });
                }
                Err(object_store_df::Error::NotFound { .. }) => {
                    return Err(ArchiveQueryError::Damaged {
                        path: file.path.clone(),
                        what: "is missing".to_owned(),
                    });
                }
                Err(e) => {
                    return Err(ArchiveQueryError::Archive(format!(
                        "reading {}: {e}",
                        file.path
                    )));
                }
            }
        }
        Ok(())
    }
}

/// An answer's rows as JSON objects (times as RFC 3339 text, nulls left out).
///
/// # Errors
/// When a value cannot be written as JSON.
pub fn json_rows(
    answer: &[RecordBatch],
) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, ArchiveQueryError> {
    columnar::json_objects(answer).map_err(ArchiveQueryError::Query)
}

/// A failure met while a query ran, by its cause: damage the checked store
/// found (by its type, anywhere in the chain of causes, never by its
/// words, which a statement could echo), the memory limit, the archive's
/// storage, a file that does not decode, or the statement itself.
pub(crate) fn failed(e: &datafusion::error::DataFusionError) -> ArchiveQueryError {
    use datafusion::arrow::error::ArrowError;
    use datafusion::error::DataFusionError;
    use datafusion::parquet::errors::ParquetError;
    let (mut storage, mut decoding) = (false, false);
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = cause {
        if let Some(ArchiveQueryError::Damaged { path, what }) =
            error.downcast_ref::<ArchiveQueryError>()
        {
            return ArchiveQueryError::Damaged {
                path: path.clone(),
                what: what.clone(),
            };
        }
        storage |= error.is::<object_store_df::Error>() || error.is::<std::io::Error>();
        decoding |= error.is::<ParquetError>()
            || matches!(
                error.downcast_ref::<ArrowError>(),
                Some(ArrowError::ParquetError(_))
            );
        cause = error.source();
    }
    let message = e.to_string();
    if let DataFusionError::ResourcesExhausted(why) = e.find_root() {
        return ArchiveQueryError::TooLarge(why.clone());
    }
    if storage {
        ArchiveQueryError::Archive(message)
    } else if decoding {
        ArchiveQueryError::Engine(message)
    } else {
        ArchiveQueryError::Query(message)
    }
}

/// A time as a query parameter.
fn utc(t: DateTime<Utc>) -> ScalarValue {
    ScalarValue::TimestampMicrosecond(Some(t.timestamp_micros()), Some("UTC".into()))
}

/// What a query may do: read.
fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// A post-mortem row as the live list shows it.
fn brief(
    row: &serde_json::Map<String, serde_json::Value>,
) -> Result<RemediationBrief, ArchiveQueryError> {
    let text = |k: &str| {
        row.get(k)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    let time = |k: &str| -> Result<Option<DateTime<Utc>>, ArchiveQueryError> {
        text(k)
            .map(|t| {
                t.parse::<DateTime<Utc>>()
                    .map_err(|e| ArchiveQueryError::Query(format!("{k} {t:?}: {e}")))
            })
            .transpose()
    };
    let missing = |k: &str| ArchiveQueryError::Query(format!("an archived row has no {k}"));
    let id = row
        .get("id")
        .and_then(serde_json::Value::as_i64)
        .ok_or_else(|| missing("id"))?;
    Ok(RemediationBrief {
        id,
        namespace: text("namespace").ok_or_else(|| missing("namespace"))?,
        alert_fingerprint: text("alert_fingerprint").ok_or_else(|| missing("alert_fingerprint"))?,
        remediation_name: text("remediation_name").ok_or_else(|| missing("remediation_name"))?,
        overall_phase: text("overall_phase").ok_or_else(|| missing("overall_phase"))?,
        start_time: time("start_time")?.ok_or_else(|| missing("start_time"))?,
        completion_time: time("completion_time")?,
        duration_seconds: row
            .get("duration_us")
            .and_then(serde_json::Value::as_i64)
            .map(|us| approx_f64(us) / 1e6),
        failure_phase: text("failure_phase"),
        failure_reason: text("failure_reason"),
        timeout_phase: text("timeout_phase"),
        timeout_time: time("timeout_time")?,
        service_crd_statuses: text("service_crd_statuses")
            .map(|doc| {
                serde_json::from_str(&doc).map_err(|e| {
                    ArchiveQueryError::Query(format!(
                        "remediation {id}'s archived service_crd_statuses is not JSON: {e}"
                    ))
                })
            })
            .transpose()?,
        timeline: RemediationBrief::timeline_path(id),
    })
}

/// The object store path DataFusion asks for a file's URL by.
fn location_of(url: &str) -> Result<object_store_df::path::Path, ArchiveQueryError> {
    Ok(ListingTableUrl::parse(url)
        .map_err(|e| ArchiveQueryError::Archive(format!("{url}: {e}")))?
        .prefix()
        .clone())
}

/// The URL DataFusion reads a file by.
fn engine_url(file: &FileUrl) -> String {
    match file {
        FileUrl::Local(path) => format!("file://{}", path.display()),
        FileUrl::S3 { bucket, key } => format!("s3://{bucket}/{key}"),
    }
}

/// An archived row as the type the live reads give, its JSON documents
/// parsed back from their text.
fn from_row<T: serde::de::DeserializeOwned>(
    mut row: serde_json::Map<String, serde_json::Value>,
    table: ArchiveTable,
) -> Result<T, ArchiveQueryError> {
    columnar::parse_documents(table, &mut row)
        .map_err(|e| ArchiveQueryError::Query(format!("archived {e}")))?;
    serde_json::from_value(serde_json::Value::Object(row)).map_err(|e| {
        ArchiveQueryError::Query(format!(
            "an archived row of {} does not read: {e}",
            table.name()
        ))
    })
}

/// The Monday of ISO week `label` (`2026-W33`).
fn monday_of(label: &str) -> Option<NaiveDate> {
    let (year, week) = label.split_once("-W")?;
    NaiveDate::from_isoywd_opt(year.parse().ok()?, week.parse().ok()?, Weekday::Mon)
}

/// Registers `table`'s rows in `files` as table `name`, or an empty table when there are none.
fn register(
    ctx: &SessionContext,
    name: &str,
    table: ArchiveTable,
    files: &[&Listed],
) -> Result<(), ArchiveQueryError> {
    let schema = columnar::schema(table);
    let failed = |e: datafusion::error::DataFusionError| {
        ArchiveQueryError::Archive(format!("cannot register {name}: {e}"))
    };
    if files.is_empty() {
        let empty = MemTable::try_new(schema, vec![Vec::new()]).map_err(failed)?;
        ctx.register_table(name, Arc::new(empty)).map_err(failed)?;
        return Ok(());
    }
    let urls = files
        .iter()
        .map(|f| ListingTableUrl::parse(&f.url))
        .collect::<Result<Vec<_>, _>>()
        .map_err(failed)?;
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(schema);
    let listing = ListingTable::try_new(config).map_err(failed)?;
    ctx.register_table(name, Arc::new(listing))
        .map_err(failed)?;
    Ok(())
}
