//! One batch in flight: a retired week or a row-wise batch, its rows
//! copied into the archive tables in a transaction the batch holds.

use chrono::{DateTime, Utc};
use futures::TryStreamExt as _;
use sqlx::postgres::{PgPool, Postgres};
use sqlx::{AssertSqlSafe, Row as _, Transaction};
use tracing::instrument;

use super::journal::{Begun, begin_batch, forget_batch};
use super::partitions::{
    archive_table, attach_to_archive, attached_weeks, detach_week, detached_week, events_table,
    keep_rows, week_due, week_of,
};
use crate::StoreError;
use crate::chain::HeadColumns;
use crate::retention::{
    ArchiveBatch, ArchiveTable, BATCH_HEADS_SQL, BatchTotals, DELETE_BATCH_HEADS_SQL, Lines,
    Locate, RetireRequest, Retiring, journal_count,
};
use remaudit_model::chain::ChainHead;

/// The rows of a row-wise batch, as it archived them: the files read them
/// by id rather than by batch, which keeps every read an index probe.
pub(super) struct Moved {
    remediations: Vec<i64>,
    events: Vec<i64>,
    start_times: Vec<DateTime<Utc>>,
    event_times: Vec<DateTime<Utc>>,
}

/// A PostgreSQL batch in flight: a whole week or a row-wise batch, its rows
/// in the archive tables within `tx`.
pub(super) struct PgBatch {
    tx: Transaction<'static, Postgres>,
    begun: Begun,
    source: String,
    kept: u64,
    /// The rows of a row-wise batch; `None` for a week.
    moved: Option<Moved>,
    /// The week's tables to drop once archived, when its rows were copied
    /// rather than attached to the archive.
    drop: Option<String>,
}

impl PgBatch {
    #[instrument(skip_all, fields(batch = self.begun.batch), err)]
    /// Removes the batch's rows from the live tables (not yet committed).
    async fn remove_live(&mut self) -> Result<(), StoreError> {
        if let Some(tables) = &self.drop {
            sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {tables}")))
                .execute(&mut *self.tx)
                .await?;
        }
        let Some(moved) = &self.moved else {
            return Ok(());
        };
        sqlx::query(
            "DELETE FROM remediation_audit_events e \
             USING UNNEST($1::bigint[], $2::timestamptz[]) AS k(id, st) \
             WHERE e.id = k.id AND e.start_time = k.st",
        )
        .bind(&moved.events)
        .bind(&moved.event_times)
        .execute(&mut *self.tx)
        .await?;
        sqlx::query(
            "DELETE FROM remediation_audit r \
             USING UNNEST($1::bigint[], $2::timestamptz[]) AS k(id, st) \
             WHERE r.id = k.id AND r.start_time = k.st",
        )
        .bind(&moved.remediations)
        .bind(&moved.start_times)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl ArchiveBatch for PgBatch {
    fn number(&self) -> i64 {
        self.begun.batch
    }

    fn location(&self) -> &str {
        &self.begun.location
    }

    fn installation(&self) -> &str {
        &self.begun.installation
    }

    fn source(&self) -> &str {
        &self.source
    }

    fn kept(&self) -> u64 {
        self.kept
    }

    fn rows(&mut self, table: ArchiveTable) -> Lines<'_> {
        let ids = self.moved.as_ref().map(|m| match table {
            ArchiveTable::Remediations => m.remediations.clone(),
            ArchiveTable::Events => m.events.clone(),
        });
        let by_id = if ids.is_some() {
            " AND id = ANY($2)"
        } else {
            ""
        };
        let lines = sqlx::query_scalar::<_, String>(AssertSqlSafe(format!(
            "SELECT row_to_json(a)::text FROM {} a WHERE archive_batch = $1{by_id} ORDER BY id",
            table.name()
        )))
        .bind(self.begun.batch)
        .bind(ids.unwrap_or_default())
        .fetch(&mut *self.tx)
        .map_err(StoreError::from);
        Box::pin(lines)
    }

    #[instrument(skip_all, fields(batch = self.begun.batch), err)]
    async fn start_times(
        &mut self,
    ) -> Result<(Option<DateTime<Utc>>, Option<DateTime<Utc>>), StoreError> {
        if let Some(m) = &self.moved {
            return Ok((
                m.start_times.iter().min().copied(),
                m.start_times.iter().max().copied(),
            ));
        }
        let row = sqlx::query(
            "SELECT min(start_time) AS lo, max(start_time) AS hi FROM remediation_audit_archive WHERE archive_batch = $1",
        )
        .bind(self.begun.batch)
        .fetch_one(&mut *self.tx)
        .await?;
        Ok((row.try_get("lo")?, row.try_get("hi")?))
    }

    #[instrument(skip_all, fields(batch = self.begun.batch), err)]
    async fn chain_heads(&mut self) -> Result<Vec<ChainHead>, StoreError> {
        let rows: Vec<HeadColumns<DateTime<Utc>>> =
            sqlx::query_as(AssertSqlSafe(format!("{BATCH_HEADS_SQL} FOR UPDATE")))
                .bind(self.begun.batch)
                .fetch_all(&mut *self.tx)
                .await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let start = row.start_time;
                row.into_head(start)
            })
            .collect())
    }

    #[instrument(skip_all, fields(batch = self.begun.batch), err)]
    async fn finish(mut self: Box<Self>, totals: &BatchTotals) -> Result<(), StoreError> {
        self.remove_live().await?;
        sqlx::query(DELETE_BATCH_HEADS_SQL)
            .bind(self.begun.batch)
            .execute(&mut *self.tx)
            .await?;
        let marked = sqlx::query(
            "UPDATE remediation_retention_batches SET state = 'done', finished_at = now(), \
             remediations = $2, events = $3, bytes = $4, start_time_min = $5, start_time_max = $6, \
             manifest_sha256 = $7 WHERE id = $1 AND state = 'pending'",
        )
        .bind(self.begun.batch)
        .bind(journal_count(totals.remediations))
        .bind(journal_count(totals.events))
        .bind(journal_count(totals.bytes))
        .bind(totals.start_time_min)
        .bind(totals.start_time_max)
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

/// Archives every row of a detached week into the archive tables, or, when
/// it holds no row, drops it; `kept` rows already went back live.
pub(super) async fn retire_week(
    pool: &PgPool,
    request: &RetireRequest,
    locate: Locate<'_>,
    table: &str,
    kept: u64,
) -> Result<Retiring<'static>, StoreError> {
    let events = events_table(table);
    let rows: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT (SELECT count(*) FROM {table}) + (SELECT count(*) FROM {events})"
    )))
    .fetch_one(pool)
    .await?;
    let begun = if rows > 0 {
        Some(begin_batch(pool, request.now, table, locate).await?)
    } else {
        None
    };
    let mut tx = pool.begin().await?;
    let kept = kept + keep_rows(&mut tx, table, request.now).await?;
    let Some(begun) = begun else {
        sqlx::query(AssertSqlSafe(format!(
            "DROP TABLE IF EXISTS {table}, {events}"
        )))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        return Ok(Retiring::Emptied {
            source: table.to_owned(),
            kept,
        });
    };
    let batch = begun.batch;
    let archives = [
        archive_table(table, "remediation_audit_archive"),
        archive_table(table, "remediation_audit_events_archive"),
    ];
    let mut whole = true;
    for name in &archives {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        whole &= !exists;
    }
    if whole {
        // The detached tables become the archive's partitions for the week:
        // no row is copied.
        let start = week_of(table)
            .and_then(|w| w.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc())
            .ok_or_else(|| StoreError::Config(format!("{table} is not a weekly partition")))?;
        for (live, parent) in [
            (table, "remediation_audit_archive"),
            (events.as_str(), "remediation_audit_events_archive"),
        ] {
            attach_to_archive(&mut tx, live, parent, batch, start).await?;
        }
    } else {
        // The week was archived before (its rows came back): copy these.
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO remediation_audit_archive SELECT *, now(), $1 FROM {table}"
        )))
        .bind(batch)
        .execute(&mut *tx)
        .await?;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO remediation_audit_events_archive SELECT *, now(), $1 FROM {events}"
        )))
        .bind(batch)
        .execute(&mut *tx)
        .await?;
    }
    Ok(Retiring::Batch(Box::new(PgBatch {
        tx,
        begun,
        source: table.to_owned(),
        kept,
        moved: None,
        drop: (!whole).then(|| format!("{table}, {events}")),
    })))
}

/// Where row-wise batches take rows from.
#[derive(Clone, Copy)]
pub(super) enum RowSource {
    /// Expired rows anywhere (with `exact`).
    Everywhere,
    /// Expired rows in the default partition.
    Default,
    /// Soft-deleted rows anywhere.
    Deleted,
}

impl RowSource {
    /// The table, the condition (clock `$1`) and an order its indexes serve:
    /// expired rows through the expiry index, deleted ones through theirs.
    fn query_parts(self) -> (&'static str, &'static str, &'static str) {
        const EXPIRED: &str = "NOT legal_hold AND retention_expiry_time <= $1";
        match self {
            Self::Everywhere => ("remediation_audit", EXPIRED, "retention_expiry_time, id"),
            Self::Default => (
                "remediation_audit_default",
                EXPIRED,
                "retention_expiry_time, id",
            ),
            Self::Deleted => (
                "remediation_audit",
                "NOT legal_hold AND deleted_at IS NOT NULL AND $1 IS NOT NULL",
                "deleted_at, id",
            ),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Everywhere | Self::Default => "rows",
            Self::Deleted => "deleted",
        }
    }
}

pub(super) async fn retire_rows(
    pool: &PgPool,
    request: &RetireRequest,
    locate: Locate<'_>,
    source: RowSource,
) -> Result<Option<Retiring<'static>>, StoreError> {
    let (table, condition, order) = source.query_parts();
    let any: bool = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT EXISTS (SELECT 1 FROM {table} WHERE {condition})"
    )))
    .bind(request.now)
    .fetch_one(pool)
    .await?;
    if !any {
        return Ok(None);
    }
    let begun = begin_batch(pool, request.now, source.name(), locate).await?;
    let batch = begun.batch;
    let mut tx = pool.begin().await?;
    // The batch's remediations are locked as ingest locks them (the same
    // advisory keys, in the same order) before their rows are: a record for
    // one of them either commits first, and its event is copied with the
    // rest, or waits and then finds the remediation archived.
    let chosen = sqlx::query(AssertSqlSafe(format!(
        "SELECT id, start_time, namespace, remediation_name FROM {table} \
         WHERE {condition} ORDER BY {order} LIMIT $2"
    )))
    .bind(request.now)
    .bind(i64::from(request.batch_rows.max(1)))
    .fetch_all(&mut *tx)
    .await?;
    let (mut chosen_ids, mut chosen_starts, mut locks) = (Vec::new(), Vec::new(), Vec::new());
    for row in &chosen {
        let start: DateTime<Utc> = row.try_get("start_time")?;
        chosen_ids.push(row.try_get::<i64, _>("id")?);
        chosen_starts.push(start);
        locks.push(crate::postgres::remediation_lock(
            row.try_get("namespace")?,
            row.try_get("remediation_name")?,
            start,
        ));
    }
    sqlx::query("SELECT pg_advisory_xact_lock($1, k) FROM UNNEST($2::int4[]) AS k")
        .bind(crate::postgres::REMEDIATION_LOCK_CLASS)
        .bind(crate::postgres::sorted_locks(locks.into_iter()))
        .execute(&mut *tx)
        .await?;
    let rows = sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO remediation_audit_archive \
         SELECT *, now(), $2 FROM {table} WHERE {condition} \
           AND (id, start_time) IN (SELECT * FROM UNNEST($3::bigint[], $4::timestamptz[])) \
         ORDER BY {order} FOR UPDATE \
         RETURNING id, start_time, namespace, remediation_name"
    )))
    .bind(request.now)
    .bind(batch)
    .bind(&chosen_ids)
    .bind(&chosen_starts)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        tx.rollback().await?;
        forget_batch(pool, batch).await?;
        return Ok(None);
    }
    let mut moved = Moved {
        remediations: Vec::with_capacity(rows.len()),
        events: Vec::new(),
        start_times: Vec::with_capacity(rows.len()),
        event_times: Vec::new(),
    };
    let (mut namespaces, mut names) = (Vec::<String>::new(), Vec::<String>::new());
    for row in &rows {
        moved.remediations.push(row.try_get("id")?);
        moved.start_times.push(row.try_get("start_time")?);
        namespaces.push(row.try_get("namespace")?);
        names.push(row.try_get("remediation_name")?);
    }
    let events = sqlx::query(
        "INSERT INTO remediation_audit_events_archive \
         SELECT e.*, now(), $1 FROM UNNEST($2::text[], $3::text[], $4::timestamptz[]) AS k(ns, name, st) \
         JOIN remediation_audit_events e ON e.namespace = k.ns \
          AND e.remediation_name = k.name AND e.start_time = k.st \
         RETURNING id, start_time",
    )
    .bind(batch)
    .bind(&namespaces)
    .bind(&names)
    .bind(&moved.start_times)
    .fetch_all(&mut *tx)
    .await?;
    for row in &events {
        moved.events.push(row.try_get("id")?);
        moved
            .event_times
            .push(row.try_get::<DateTime<Utc>, _>("start_time")?);
    }
    Ok(Some(Retiring::Batch(Box::new(PgBatch {
        tx,
        begun,
        source: source.name().to_owned(),
        kept: 0,
        moved: Some(moved),
        drop: None,
    }))))
}

pub(super) async fn next_batch(
    pool: &PgPool,
    request: &RetireRequest,
    locate: Locate<'_>,
) -> Result<Option<Retiring<'static>>, StoreError> {
    if let Some(table) = detached_week(pool).await? {
        return retire_week(pool, request, locate, &table, 0)
            .await
            .map(Some);
    }
    let due = attached_weeks(pool)
        .await?
        .into_iter()
        .find(|t| week_of(t).is_some_and(|w| week_due(w, request)));
    if let Some(table) = due {
        let kept = detach_week(pool, &table, request.now).await?;
        return retire_week(pool, request, locate, &table, kept)
            .await
            .map(Some);
    }
    let sources: &[RowSource] = if request.exact {
        &[RowSource::Everywhere, RowSource::Deleted]
    } else {
        &[RowSource::Default, RowSource::Deleted]
    };
    for &source in sources {
        if let Some(batch) = retire_rows(pool, request, locate, source).await? {
            return Ok(Some(batch));
        }
    }
    Ok(None)
}
