//! Retention on SQLite: row-wise batches, one transaction each.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use futures::TryStreamExt as _;
use sqlx::sqlite::{Sqlite, SqlitePool};
use sqlx::{AssertSqlSafe, Row as _, Transaction};
use tokio::sync::MutexGuard;
use tracing::instrument;

use remaudit_model::chain::ChainHead;

use super::{SqliteStore, decode_time, encode_time};
use crate::StoreError;
use crate::chain::HeadColumns;
use crate::retention::{
    ArchiveBatch, ArchiveTable, BATCH_HEADS_SQL, BATCH_IDS_SQL, BatchIds, BatchPlaces, BatchRecord,
    BatchTotals, DELETE_BATCH_HEADS_SQL, DayCount, INSTALLATION_SQL, JournalRow, Lines, Locate,
    PENDING_SQL, PendingBatch, PlacesRow, RetentionLock, RetentionStore, RetireRequest, Retiring,
    installation, journal_count,
};

#[async_trait::async_trait]
impl RetentionStore for SqliteStore {
    #[instrument(skip_all, fields(from = %_from, to = %_to), err)]
    async fn ensure_partitions(
        &self,
        _from: DateTime<Utc>,
        _to: DateTime<Utc>,
    ) -> Result<u32, StoreError> {
        Ok(0)
    }

    #[instrument(skip_all, err)]
    async fn retention_lock(&self) -> Result<Option<RetentionLock>, StoreError> {
        let Ok(turn) = Arc::clone(&self.retention).try_lock_owned() else {
            return Ok(None);
        };
        let path = self.pool.connect_options().get_filename().to_owned();
        if path.as_os_str().is_empty() || path.as_os_str() == ":memory:" {
            return Ok(Some(RetentionLock::new(turn)));
        }
        let mut lock_path = path.into_os_string();
        lock_path.push(".retention-lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| {
                StoreError::Config(format!(
                    "cannot open the retention lock file {}: {e}",
                    std::path::Path::new(&lock_path).display()
                ))
            })?;
        match file.try_lock() {
            Ok(()) => Ok(Some(RetentionLock::new((turn, file)))),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Config(format!(
                "cannot lock {}: {e}",
                std::path::Path::new(&lock_path).display()
            ))),
        }
    }

    #[instrument(skip_all, fields(now = %request.now), err)]
    async fn retention_preview(
        &self,
        request: &RetireRequest,
    ) -> Result<Vec<DayCount>, StoreError> {
        preview(&self.pool, request).await
    }

    #[instrument(skip_all, fields(now = %request.now, batch_rows = request.batch_rows), err)]
    async fn next_batch<'a>(
        &'a self,
        request: &RetireRequest,
        locate: Locate<'_>,
    ) -> Result<Option<Retiring<'a>>, StoreError> {
        let turn = self.writer.lock().await;
        next_batch(&self.pool, request, locate, turn).await
    }

    #[instrument(skip_all, err)]
    async fn pending_batches(&self) -> Result<Vec<PendingBatch>, StoreError> {
        pending_batches(&self.pool).await
    }

    #[instrument(skip_all, err)]
    async fn installation_id(&self) -> Result<String, StoreError> {
        crate::retention::installation(
            sqlx::query_scalar(crate::retention::INSTALLATION_SQL)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    #[instrument(skip_all, fields(batch = batch), err)]
    async fn forget_batch(&self, batch: i64) -> Result<(), StoreError> {
        let _turn = self.writer.lock().await;
        forget_batch(&self.pool, batch).await
    }

    #[instrument(skip_all, fields(from = %from, to = %to), err)]
    async fn finished_batches(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<BatchRecord>, StoreError> {
        finished_batches(&self.pool, from, to).await
    }

    #[instrument(skip_all, fields(batch = batch), err)]
    async fn batch_places(&self, batch: i64) -> Result<BatchPlaces, StoreError> {
        batch_places(&self.pool, batch).await
    }

    #[instrument(skip_all, fields(batch = batch), err)]
    async fn batch_ids(&self, batch: i64) -> Result<BatchIds, StoreError> {
        batch_ids(&self.pool, batch).await
    }
}

/// Due rows, with the clock as `?1`.
const DUE: &str = "NOT legal_hold AND (deleted_at IS NOT NULL OR retention_expiry_time <= ?1)";

/// One archived summary row as a JSON object, the shape PostgreSQL's
/// `row_to_json` gives.
const SUMMARY_JSON: &str = "json_object('id', id, 'alert_fingerprint', alert_fingerprint, \
    'remediation_name', remediation_name, 'overall_phase', overall_phase, 'start_time', start_time, \
    'completion_time', completion_time, 'remediation_processing_name', remediation_processing_name, \
    'ai_analysis_name', ai_analysis_name, 'workflow_execution_name', workflow_execution_name, \
    'kubernetes_execution_name', kubernetes_execution_name, \
    'service_crd_statuses', json(service_crd_statuses), 'timeout_phase', timeout_phase, \
    'timeout_time', timeout_time, 'failure_phase', failure_phase, 'failure_reason', failure_reason, \
    'duplicate_count', duplicate_count, 'last_duplicate_time', last_duplicate_time, \
    'retention_expiry_time', retention_expiry_time, 'deleted_at', deleted_at, \
    'created_at', created_at, 'updated_at', updated_at, 'namespace', namespace, \
    'phase_rank', phase_rank, 'event_id', event_id, 'event_time', event_time, \
    'duration_us', duration_us, 'duration_bin', duration_bin, \
    'legal_hold', json(CASE WHEN legal_hold THEN 'true' ELSE 'false' END), \
    'archived_at', archived_at, 'archive_batch', archive_batch)";

/// One archived event as a JSON object.
const EVENT_JSON: &str = "json_object('id', id, 'event_id', event_id, 'namespace', namespace, \
    'remediation_name', remediation_name, 'start_time', start_time, 'overall_phase', overall_phase, \
    'event_time', event_time, 'received_at', received_at, 'record', json(record), \
    'content_hash', CASE WHEN content_hash IS NULL THEN NULL ELSE '\\x' || lower(hex(content_hash)) END, \
    'chain_seq', chain_seq, 'chain_key_id', chain_key_id, \
    'chain_mac', CASE WHEN chain_mac IS NULL THEN NULL ELSE '\\x' || lower(hex(chain_mac)) END, \
    'archived_at', archived_at, 'archive_batch', archive_batch)";

/// A batch recorded as pending: its number, the location of its files and
/// the installation id that location is under.
struct Begun {
    batch: i64,
    location: String,
    installation: String,
}

/// Records a pending batch with its location in one commit: the number
/// comes from the insert, so the location is set in the same transaction,
/// and no pending row is ever seen without it.
async fn begin_batch(
    pool: &SqlitePool,
    now: DateTime<Utc>,
    locate: Locate<'_>,
) -> Result<Begun, StoreError> {
    // Read before the transaction, whose first statement then writes: a
    // transaction that read first could not always upgrade to a write
    // while ingest commits beside it.
    let installation = installation(
        sqlx::query_scalar(INSTALLATION_SQL)
            .fetch_optional(pool)
            .await?,
    )?;
    let mut tx = pool.begin().await?;
    let batch: i64 = sqlx::query_scalar(
        "INSERT INTO remediation_retention_batches (run_now, source, location) VALUES (?1, 'rows', '') RETURNING id",
    )
    .bind(encode_time(now))
    .fetch_one(&mut *tx)
    .await?;
    let location = locate(&installation, batch);
    sqlx::query("UPDATE remediation_retention_batches SET location = ?2 WHERE id = ?1")
        .bind(batch)
        .bind(&location)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Begun {
        batch,
        location,
        installation,
    })
}

/// A SQLite batch in flight: its rows in the archive tables within `tx`.
/// It holds the store's write turn, as every SQLite write does.
struct SqliteBatch<'a> {
    tx: Transaction<'static, Sqlite>,
    begun: Begun,
    /// The batch's `archived_at`, which is also its `finished_at`.
    archived_at: String,
    _turn: MutexGuard<'a, ()>,
}

impl SqliteBatch<'_> {
    #[instrument(skip_all, fields(batch = self.begun.batch), err)]
    /// Removes the batch's rows from the live tables (not yet committed).
    async fn remove_live(&mut self) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM remediation_audit_events WHERE id IN \
             (SELECT id FROM remediation_audit_events_archive WHERE archive_batch = ?1)",
        )
        .bind(self.begun.batch)
        .execute(&mut *self.tx)
        .await?;
        sqlx::query(
            "DELETE FROM remediation_audit WHERE id IN \
             (SELECT id FROM remediation_audit_archive WHERE archive_batch = ?1)",
        )
        .bind(self.begun.batch)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl ArchiveBatch for SqliteBatch<'_> {
    fn number(&self) -> i64 {
        self.begun.batch
    }

    fn location(&self) -> &str {
        &self.begun.location
    }

    fn installation(&self) -> &str {
        &self.begun.installation
    }

    fn source(&self) -> &'static str {
        "rows"
    }

    fn kept(&self) -> u64 {
        0
    }

    fn rows(&mut self, table: ArchiveTable) -> Lines<'_> {
        let json = match table {
            ArchiveTable::Remediations => SUMMARY_JSON,
            ArchiveTable::Events => EVENT_JSON,
        };
        let lines = sqlx::query_scalar::<_, String>(AssertSqlSafe(format!(
            "SELECT {json} FROM {} WHERE archive_batch = ?1 ORDER BY id",
            table.name()
        )))
        .bind(self.begun.batch)
        .fetch(&mut *self.tx)
        .map_err(StoreError::from);
        Box::pin(lines)
    }

    #[instrument(skip_all, fields(batch = self.begun.batch), err)]
    async fn row_count(&mut self, table: ArchiveTable) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT count(*) FROM {} WHERE archive_batch = ?1",
            table.name()
        )))
        .bind(self.begun.batch)
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(u64::try_from(count).unwrap_or_default())
    }

    #[instrument(skip_all, fields(batch = self.begun.batch), err)]
    async fn start_days(&mut self, table: ArchiveTable) -> Result<Vec<NaiveDate>, StoreError> {
        // Times are stored as fixed-width RFC 3339 text in UTC: the day is its first ten bytes.
        let days = sqlx::query_scalar::<_, String>(AssertSqlSafe(format!(
            "SELECT DISTINCT substr(start_time, 1, 10) FROM {} WHERE archive_batch = ?1 ORDER BY 1",
            table.name()
        )))
        .bind(self.begun.batch)
        .fetch_all(&mut *self.tx)
        .await?;
        days.iter()
            .map(|d| {
                NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|e| {
                    StoreError::from(sqlx::Error::Decode(
                        format!("bad start day {d:?} in SQLite: {e}").into(),
                    ))
                })
            })
            .collect()
    }

    fn sorted_rows(
        &mut self,
        table: ArchiveTable,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Lines<'_> {
        let json = match table {
            ArchiveTable::Remediations => SUMMARY_JSON,
            ArchiveTable::Events => EVENT_JSON,
        };
        // SQLite compares text byte by byte unless told otherwise.
        let lines = sqlx::query_scalar::<_, String>(AssertSqlSafe(format!(
            "SELECT {json} FROM {} WHERE archive_batch = ?1 AND start_time >= ?2 \
             AND start_time < ?3 ORDER BY {}",
            table.name(),
            table.sort_columns().join(", ")
        )))
        .bind(self.begun.batch)
        .bind(encode_time(from))
        .bind(encode_time(to))
        .fetch(&mut *self.tx)
        .map_err(StoreError::from);
        Box::pin(lines)
    }

    #[instrument(skip_all, fields(batch = self.begun.batch), err)]
    async fn start_times(
        &mut self,
    ) -> Result<(Option<DateTime<Utc>>, Option<DateTime<Utc>>), StoreError> {
        let row = sqlx::query(
            "SELECT min(start_time) AS lo, max(start_time) AS hi FROM remediation_audit_archive WHERE archive_batch = ?1",
        )
        .bind(self.begun.batch)
        .fetch_one(&mut *self.tx)
        .await?;
        let time = |c: &str| -> Result<Option<DateTime<Utc>>, StoreError> {
            Ok(row
                .try_get::<Option<String>, _>(c)?
                .as_deref()
                .map(decode_time)
                .transpose()?)
        };
        Ok((time("lo")?, time("hi")?))
    }

    #[instrument(skip_all, fields(batch = self.begun.batch), err)]
    async fn chain_heads(&mut self) -> Result<Vec<ChainHead>, StoreError> {
        let rows: Vec<HeadColumns<String>> = sqlx::query_as(BATCH_HEADS_SQL)
            .bind(self.begun.batch)
            .fetch_all(&mut *self.tx)
            .await?;
        rows.into_iter()
            .map(|row| {
                let start = decode_time(&row.start_time)?;
                Ok(row.into_head(start))
            })
            .collect()
    }

    #[instrument(skip_all, fields(batch = self.begun.batch), err)]
    async fn finish(mut self: Box<Self>, totals: &BatchTotals) -> Result<(), StoreError> {
        self.remove_live().await?;
        sqlx::query(DELETE_BATCH_HEADS_SQL)
            .bind(self.begun.batch)
            .execute(&mut *self.tx)
            .await?;
        let marked = sqlx::query(
            "UPDATE remediation_retention_batches SET state = 'done', finished_at = ?2, \
             remediations = ?3, events = ?4, bytes = ?5, start_time_min = ?6, start_time_max = ?7, \
             manifest_sha256 = ?8 WHERE id = ?1 AND state = 'pending'",
        )
        .bind(self.begun.batch)
        .bind(&self.archived_at)
        .bind(journal_count(totals.remediations))
        .bind(journal_count(totals.events))
        .bind(journal_count(totals.bytes))
        .bind(totals.start_time_min.map(encode_time))
        .bind(totals.start_time_max.map(encode_time))
        .bind(&totals.manifest_sha256)
        .execute(&mut *self.tx)
        .await?;
        if marked.rows_affected() != 1 {
            // Dropping the transaction rolls the removal back.
            return Err(StoreError::NotPending(self.begun.batch));
        }
        self.tx.commit().await?;
        Ok(())
    }
}

/// Starts the next row-wise batch while holding the write turn `turn`,
/// which the batch keeps until it finishes.
async fn next_batch<'a>(
    pool: &SqlitePool,
    request: &RetireRequest,
    locate: Locate<'_>,
    turn: MutexGuard<'a, ()>,
) -> Result<Option<Retiring<'a>>, StoreError> {
    let now = encode_time(request.now);
    let any: bool = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT EXISTS (SELECT 1 FROM remediation_audit WHERE {DUE})"
    )))
    .bind(&now)
    .fetch_one(pool)
    .await?;
    if !any {
        return Ok(None);
    }
    let begun = begin_batch(pool, request.now, locate).await?;
    let batch = begun.batch;
    let archived_at = encode_time(Utc::now());
    let mut tx = pool.begin().await?;
    let moved = sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO remediation_audit_archive \
         SELECT *, ?2, ?3 FROM remediation_audit WHERE {DUE} ORDER BY start_time, id LIMIT ?4"
    )))
    .bind(&now)
    .bind(&archived_at)
    .bind(batch)
    .bind(i64::from(request.batch_rows.max(1)))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if moved == 0 {
        tx.rollback().await?;
        forget_batch(pool, batch).await?;
        return Ok(None);
    }
    sqlx::query(
        "INSERT INTO remediation_audit_events_archive \
         SELECT e.*, ?2, ?1 FROM remediation_audit_events e \
         JOIN remediation_audit_archive a ON a.namespace = e.namespace \
          AND a.remediation_name = e.remediation_name AND a.start_time = e.start_time \
         WHERE a.archive_batch = ?1",
    )
    .bind(batch)
    .bind(&archived_at)
    .execute(&mut *tx)
    .await?;
    Ok(Some(Retiring::Batch(Box::new(SqliteBatch {
        tx,
        begun,
        archived_at,
        _turn: turn,
    }))))
}

pub(super) async fn preview(
    pool: &SqlitePool,
    request: &RetireRequest,
) -> Result<Vec<DayCount>, StoreError> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT substr(d.start_time, 1, 10) AS day, count(DISTINCT d.id) AS remediations, \
                count(e.id) AS events \
         FROM remediation_audit d LEFT JOIN remediation_audit_events e \
           ON e.namespace = d.namespace AND e.remediation_name = d.remediation_name \
          AND e.start_time = d.start_time \
         WHERE {DUE} GROUP BY 1 ORDER BY 1"
    )))
    .bind(encode_time(request.now))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let day: String = row.try_get("day")?;
            Ok(DayCount {
                day: NaiveDate::parse_from_str(&day, "%Y-%m-%d")
                    .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                remediations: u64::try_from(row.try_get::<i64, _>("remediations")?).unwrap_or(0),
                events: u64::try_from(row.try_get::<i64, _>("events")?).unwrap_or(0),
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

pub(super) async fn pending_batches(pool: &SqlitePool) -> Result<Vec<PendingBatch>, StoreError> {
    Ok(sqlx::query_as(PENDING_SQL).fetch_all(pool).await?)
}

pub(super) async fn forget_batch(pool: &SqlitePool, batch: i64) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM remediation_retention_batches WHERE id = ?1 AND state = 'pending'")
        .bind(batch)
        .execute(pool)
        .await?;
    Ok(())
}

pub(super) async fn finished_batches(
    pool: &SqlitePool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<BatchRecord>, StoreError> {
    let rows: Vec<JournalRow> = sqlx::query_as(
        "SELECT id, location, remediations, events, manifest_sha256 FROM remediation_retention_batches \
         WHERE state = 'done' AND start_time_max >= ?1 AND start_time_min < ?2 ORDER BY id",
    )
    .bind(encode_time(from))
    .bind(encode_time(to))
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

pub(super) async fn batch_places(pool: &SqlitePool, batch: i64) -> Result<BatchPlaces, StoreError> {
    let row: PlacesRow = sqlx::query_as(
        "SELECT \
           (SELECT count(*) FROM remediation_audit_archive WHERE archive_batch = ?1) AS ar, \
           (SELECT count(*) FROM remediation_audit_events_archive WHERE archive_batch = ?1) AS ae, \
           (SELECT count(*) FROM remediation_audit WHERE id IN \
              (SELECT id FROM remediation_audit_archive WHERE archive_batch = ?1)) AS lr, \
           (SELECT count(*) FROM remediation_audit_events WHERE id IN \
              (SELECT id FROM remediation_audit_events_archive WHERE archive_batch = ?1)) AS le",
    )
    .bind(batch)
    .fetch_one(pool)
    .await?;
    Ok(row.into())
}

pub(super) async fn batch_ids(pool: &SqlitePool, batch: i64) -> Result<BatchIds, StoreError> {
    let [remediations, events] = BATCH_IDS_SQL;
    Ok(BatchIds {
        remediations: sqlx::query_scalar(remediations)
            .bind(batch)
            .fetch_all(pool)
            .await?,
        events: sqlx::query_scalar(events)
            .bind(batch)
            .fetch_all(pool)
            .await?,
    })
}
