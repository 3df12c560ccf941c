//! The journal of batches (`remediation_retention_batches`): pending
//! batches with their locations, finished ones with what they moved.

use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;
use sqlx::postgres::PgPool;

use crate::StoreError;
use crate::retention::{
    BATCH_IDS_SQL, BatchIds, BatchPlaces, BatchRecord, INSTALLATION_SQL, JournalRow, Locate,
    PENDING_SQL, PendingBatch, PlacesRow, installation,
};

/// A batch recorded as pending: its number, the location of its files and
/// the installation id that location is under.
pub(super) struct Begun {
    pub(super) batch: i64,
    pub(super) location: String,
    pub(super) installation: String,
}

/// Records a pending batch, with its location, in one statement and its own
/// commit: the number is drawn first, so no row is ever without a location.
pub(super) async fn begin_batch(
    pool: &PgPool,
    now: DateTime<Utc>,
    source: &str,
    locate: Locate<'_>,
) -> Result<Begun, StoreError> {
    let installation = installation(
        sqlx::query_scalar(INSTALLATION_SQL)
            .fetch_optional(pool)
            .await?,
    )?;
    let batch: i64 = sqlx::query_scalar(
        "SELECT nextval(pg_get_serial_sequence('remediation_retention_batches', 'id'))",
    )
    .fetch_one(pool)
    .await?;
    let location = locate(&installation, batch);
    sqlx::query(
        "INSERT INTO remediation_retention_batches (id, run_now, source, location) VALUES ($1, $2, $3, $4)",
    )
    .bind(batch)
    .bind(now)
    .bind(source)
    .bind(&location)
    .execute(pool)
    .await?;
    Ok(Begun {
        batch,
        location,
        installation,
    })
}

pub(super) async fn pending_batches(pool: &PgPool) -> Result<Vec<PendingBatch>, StoreError> {
    Ok(sqlx::query_as(PENDING_SQL).fetch_all(pool).await?)
}

/// True of a journal row `b` whose rows are committed in the archive tables:
/// a week moved whole, whose files may still be unwritten.
pub(super) const COMMITTED: &str = "(EXISTS (SELECT 1 FROM remediation_audit_archive a WHERE a.archive_batch = b.id) \
     OR EXISTS (SELECT 1 FROM remediation_audit_events_archive a WHERE a.archive_batch = b.id))";

/// Forgets a pending batch, unless its rows are committed in the archive:
/// that one stays pending, and the next batch taken writes its files.
pub(super) async fn forget_batch(pool: &PgPool, batch: i64) -> Result<(), StoreError> {
    sqlx::query(AssertSqlSafe(format!(
        "DELETE FROM remediation_retention_batches b \
         WHERE id = $1 AND state = 'pending' AND NOT {COMMITTED}"
    )))
    .bind(batch)
    .execute(pool)
    .await?;
    Ok(())
}

/// Gives a pending batch whose rows are committed in the archive a new
/// number and location (its old location held another writer's files, or
/// an interrupted run's): the rows are tagged anew and the old journal row
/// goes, in one transaction, so nothing can finish the old number any more.
/// False, and nothing changed, for any other batch.
pub(super) async fn renumber_batch(
    pool: &PgPool,
    batch: i64,
    locate: Locate<'_>,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    let committed: bool = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT EXISTS (SELECT 1 FROM remediation_retention_batches b \
                        WHERE id = $1 AND state = 'pending' AND {COMMITTED})"
    )))
    .bind(batch)
    .fetch_one(&mut *tx)
    .await?;
    if !committed {
        return Ok(false);
    }
    let installation = installation(
        sqlx::query_scalar(INSTALLATION_SQL)
            .fetch_optional(&mut *tx)
            .await?,
    )?;
    let renumbered: i64 = sqlx::query_scalar(
        "SELECT nextval(pg_get_serial_sequence('remediation_retention_batches', 'id'))",
    )
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO remediation_retention_batches (id, run_now, source, location) \
         SELECT $2, run_now, source, $3 FROM remediation_retention_batches WHERE id = $1",
    )
    .bind(batch)
    .bind(renumbered)
    .bind(locate(&installation, renumbered))
    .execute(&mut *tx)
    .await?;
    for table in [
        "remediation_audit_archive",
        "remediation_audit_events_archive",
    ] {
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE {table} SET archive_batch = $2 WHERE archive_batch = $1"
        )))
        .bind(batch)
        .bind(renumbered)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query("DELETE FROM remediation_retention_batches WHERE id = $1")
        .bind(batch)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::warn!(
        batch,
        renumbered,
        "a batch whose rows the archive holds has a new number and location; its files are written there"
    );
    Ok(true)
}

pub(super) async fn finished_batches(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<BatchRecord>, StoreError> {
    let rows: Vec<JournalRow> = sqlx::query_as(
        "SELECT id, location, remediations, events, manifest_sha256 FROM remediation_retention_batches \
         WHERE state = 'done' AND start_time_max >= $1 AND start_time_min < $2 ORDER BY id",
    )
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

pub(super) async fn batch_places(pool: &PgPool, batch: i64) -> Result<BatchPlaces, StoreError> {
    let row: PlacesRow = sqlx::query_as(
        "SELECT \
           (SELECT count(*) FROM remediation_audit_archive WHERE archive_batch = $1) AS ar, \
           (SELECT count(*) FROM remediation_audit_events_archive WHERE archive_batch = $1) AS ae, \
           (SELECT count(*) FROM remediation_audit r JOIN remediation_audit_archive a \
              ON r.id = a.id AND r.start_time = a.start_time WHERE a.archive_batch = $1) AS lr, \
           (SELECT count(*) FROM remediation_audit_events e JOIN remediation_audit_events_archive a \
              ON e.id = a.id AND e.start_time = a.start_time WHERE a.archive_batch = $1) AS le",
    )
    .bind(batch)
    .fetch_one(pool)
    .await?;
    Ok(row.into())
}

pub(super) async fn batch_ids(pool: &PgPool, batch: i64) -> Result<BatchIds, StoreError> {
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
