//! Retention on PostgreSQL: whole weekly partitions where a week is due,
//! row-wise batches for the default partition and soft-deleted rows.
//! `partitions` moves a due week into the archive in one short transaction;
//! `batches` takes one batch (a week or rows) through its files; `journal`
//! records batches; `tiers` moves aged weeks to the warm and cold
//! tablespaces.

mod batches;
mod journal;
mod partitions;
mod tiers;

use chrono::{DateTime, Utc};
use sqlx::Row as _;
use sqlx::postgres::{PgConnection, PgPool};
use tracing::instrument;

use super::PgStore;
use crate::StoreError;
use crate::retention::{
    BatchIds, BatchPlaces, BatchRecord, DayCount, Locate, PendingBatch, RetentionLock,
    RetentionStore, RetireRequest, Retiring, TierReport, Tiers, Upkeep,
};
use batches::next_batch;
use journal::{
    batch_ids, batch_places, finished_batches, forget_batch, pending_batches, renumber_batch,
};
pub(super) use partitions::{ensure_partitions, try_ensure_partitions};

#[async_trait::async_trait]
impl RetentionStore for PgStore {
    #[instrument(skip_all, fields(from = %from, to = %to), err)]
    async fn ensure_partitions(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<u32, StoreError> {
        ensure_partitions(&self.pool, from, to).await
    }

    #[instrument(skip_all, err)]
    async fn retention_lock(&self) -> Result<Option<RetentionLock>, StoreError> {
        Ok(lock(&self.pool).await?.map(RetentionLock::new))
    }

    #[instrument(skip_all, fields(now = %request.now, exact = request.exact), err)]
    async fn retention_preview(
        &self,
        request: &RetireRequest,
    ) -> Result<Vec<DayCount>, StoreError> {
        self.projector.settle_fully(&self.pool).await?;
        preview(&self.pool, request).await
    }

    #[instrument(skip_all, fields(now = %request.now, exact = request.exact, batch_rows = request.batch_rows), err)]
    async fn next_batch<'a>(
        &'a self,
        request: &RetireRequest,
        locate: Locate<'_>,
    ) -> Result<Option<Retiring<'a>>, StoreError> {
        self.projector.settle_fully(&self.pool).await?;
        next_batch(&self.pool, request, locate).await
    }

    #[instrument(skip_all, err)]
    async fn pending_batches(&self) -> Result<Vec<PendingBatch>, StoreError> {
        pending_batches(&self.pool).await
    }

    #[instrument(skip_all, err)]
    async fn move_to_tiers(
        &self,
        tiers: &Tiers,
        now: DateTime<Utc>,
    ) -> Result<TierReport, StoreError> {
        tiers::move_to_tiers(&self.pool, tiers, now).await
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
        forget_batch(&self.pool, batch).await
    }

    #[instrument(skip_all, fields(batch = batch), err)]
    async fn renumber_batch(&self, batch: i64, locate: Locate<'_>) -> Result<bool, StoreError> {
        renumber_batch(&self.pool, batch, locate).await
    }

    #[instrument(skip_all, fields(now = %request.now), err)]
    async fn partition_upkeep(&self, request: &RetireRequest) -> Result<Upkeep, StoreError> {
        partitions::upkeep(&self.pool, request).await
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

/// Key of the advisory lock one retention run holds at a time.
const LOCK_KEY: i64 = 0x7265_6d61_7564_6974;

/// Rows retention moves at the clock `$1`: soft-deleted or expired, and not held.
const DUE: &str = "NOT legal_hold AND (deleted_at IS NOT NULL OR retention_expiry_time <= $1)";

/// A held advisory lock: the connection that holds it; dropping it closes
/// the connection, which releases the lock.
pub(crate) struct PgLock(#[allow(dead_code)] PgConnection);

async fn lock(pool: &PgPool) -> Result<Option<PgLock>, StoreError> {
    let mut conn = pool.acquire().await?.detach();
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(LOCK_KEY)
        .fetch_one(&mut conn)
        .await?;
    Ok(got.then_some(PgLock(conn)))
}

async fn preview(pool: &PgPool, request: &RetireRequest) -> Result<Vec<DayCount>, StoreError> {
    // A row moves when it is due and either the run is exact, it sits in the
    // default partition, it is soft-deleted, or its whole week is due.
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH due AS ( \
           SELECT namespace, remediation_name, start_time FROM remediation_audit \
           WHERE ({DUE}) AND ($2 OR deleted_at IS NOT NULL \
             OR tableoid = 'remediation_audit_default'::regclass \
             OR date_trunc('week', start_time, 'UTC') + INTERVAL '7 days' + $3 <= $1)) \
         SELECT (date_trunc('day', d.start_time, 'UTC') AT TIME ZONE 'UTC')::date AS day, \
                count(DISTINCT (d.namespace, d.remediation_name, d.start_time)) AS remediations, \
                count(e.id) AS events \
         FROM due d LEFT JOIN remediation_audit_events e ON e.namespace = d.namespace \
           AND e.remediation_name = d.remediation_name AND e.start_time = d.start_time \
         GROUP BY 1 ORDER BY 1"
    )))
    .bind(request.now)
    .bind(request.exact)
    .bind(request.age)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(DayCount {
                day: row.try_get("day")?,
                remediations: u64::try_from(row.try_get::<i64, _>("remediations")?).unwrap_or(0),
                events: u64::try_from(row.try_get::<i64, _>("events")?).unwrap_or(0),
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}
