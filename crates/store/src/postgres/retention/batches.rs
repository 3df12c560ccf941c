//! One batch in flight: a retired week or a row-wise batch, its rows
//! copied into the archive tables in a transaction the batch holds.

use std::collections::HashSet;

use chrono::{DateTime, NaiveDate, Utc};
use futures::TryStreamExt as _;
use sqlx::postgres::{PgPool, Postgres};
use sqlx::{AssertSqlSafe, Row as _, Transaction};
use tracing::instrument;

use super::journal::{Begun, COMMITTED, begin_batch, forget_batch};
use super::partitions::{
    WeekMove, archive_has_week, attached_weeks, detached_week, holds_rows, move_week, prepare_week,
    week_due, week_of,
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
    /// The rows of a row-wise batch; `None` for a week, whose rows the
    /// archive already holds (committed) when the batch starts.
    moved: Option<Moved>,
}

impl PgBatch {
    /// The condition that picks a row-wise batch's rows of `table` by id
    /// (`$2`), with the ids; empty for a week, whose rows the batch number picks.
    fn by_id(&self, table: ArchiveTable) -> (&'static str, Vec<i64>) {
        match &self.moved {
            Some(m) => (
                " AND id = ANY($2)",
                match table {
                    ArchiveTable::Remediations => m.remediations.clone(),
                    ArchiveTable::Events => m.events.clone(),
                },
            ),
            None => ("", Vec::new()),
        }
    }

    #[instrument(skip_all, fields(batch = self.begun.batch), err)]
    /// Removes the batch's rows from the live tables (not yet committed).
    async fn remove_live(&mut self) -> Result<(), StoreError> {
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
        let (by_id, ids) = self.by_id(table);
        let lines = sqlx::query_scalar::<_, String>(AssertSqlSafe(format!(
            "SELECT row_to_json(a)::text FROM {} a WHERE archive_batch = $1{by_id} ORDER BY id",
            table.name()
        )))
        .bind(self.begun.batch)
        .bind(ids)
        .fetch(&mut *self.tx)
        .map_err(StoreError::from);
        Box::pin(lines)
    }

    #[instrument(skip_all, fields(batch = self.begun.batch), err)]
    async fn row_count(&mut self, table: ArchiveTable) -> Result<u64, StoreError> {
        let (by_id, ids) = self.by_id(table);
        let count: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT count(*) FROM {} WHERE archive_batch = $1{by_id}",
            table.name()
        )))
        .bind(self.begun.batch)
        .bind(ids)
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(u64::try_from(count).unwrap_or_default())
    }

    #[instrument(skip_all, fields(batch = self.begun.batch), err)]
    async fn start_days(&mut self, table: ArchiveTable) -> Result<Vec<NaiveDate>, StoreError> {
        let (by_id, ids) = self.by_id(table);
        Ok(sqlx::query_scalar::<_, NaiveDate>(AssertSqlSafe(format!(
            "SELECT DISTINCT (start_time AT TIME ZONE 'UTC')::date FROM {} \
             WHERE archive_batch = $1{by_id} ORDER BY 1",
            table.name()
        )))
        .bind(self.begun.batch)
        .bind(ids)
        .fetch_all(&mut *self.tx)
        .await?)
    }

    fn sorted_rows(
        &mut self,
        table: ArchiveTable,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Lines<'_> {
        let (by_id, ids) = self.by_id(table);
        // Text in byte order, as Parquet's statistics compare it.
        let order = table
            .sort_columns()
            .iter()
            .map(|c| match *c {
                "start_time" | "id" => (*c).to_owned(),
                text => format!("{text} COLLATE \"C\""),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let lines = sqlx::query_scalar::<_, String>(AssertSqlSafe(format!(
            "SELECT row_to_json(a)::text FROM {} a WHERE archive_batch = $1{by_id} \
             AND start_time >= $3 AND start_time < $4 ORDER BY {order}",
            table.name()
        )))
        .bind(self.begun.batch)
        .bind(ids)
        .bind(from)
        .bind(to)
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

/// Retires a due week: when it holds rows, it becomes the archive's
/// partition for the week in one short transaction (see [`move_week`]) and
/// the batch that writes its files reads it there; when nothing is left once
/// the rows that stay live went back, it is dropped. `None` when the archive
/// already has the week: its rows then leave row by row.
async fn retire_week(
    pool: &PgPool,
    request: &RetireRequest,
    locate: Locate<'_>,
    table: &str,
) -> Result<Option<Retiring<'static>>, StoreError> {
    let begun = if holds_rows(pool, table).await? {
        prepare_week(pool, table).await?;
        Some(begin_batch(pool, request.now, table, locate).await?)
    } else {
        None
    };
    let moved = move_week(pool, table, request.now, begun.as_ref().map(|b| b.batch)).await;
    let forget = |begun: Option<Begun>| async move {
        match begun {
            Some(begun) => forget_batch(pool, begun.batch).await,
            None => Ok(()),
        }
    };
    match moved {
        Err(e) => {
            forget(begun).await?;
            Err(e)
        }
        Ok(WeekMove::RowWise) => {
            forget(begun).await?;
            Ok(None)
        }
        Ok(WeekMove::Dropped { kept }) => {
            forget(begun).await?;
            Ok(Some(Retiring::Emptied {
                source: table.to_owned(),
                kept,
            }))
        }
        Ok(WeekMove::Attached { kept }) => {
            let begun = begun.ok_or_else(|| {
                StoreError::Config(format!("{table} was archived without a batch"))
            })?;
            Ok(Some(Retiring::Batch(Box::new(PgBatch {
                tx: pool.begin().await?,
                begun,
                source: table.to_owned(),
                kept,
                moved: None,
            }))))
        }
    }
}

/// A pending batch whose rows are already committed in the archive tables
/// (a week moved whole, whose files an earlier run did not finish): it is
/// taken up again, its files written anew from those rows.
async fn resume_batch(pool: &PgPool) -> Result<Option<Retiring<'static>>, StoreError> {
    let Some(row) = sqlx::query(AssertSqlSafe(format!(
        "SELECT id, location, source FROM remediation_retention_batches b \
         WHERE state = 'pending' AND {COMMITTED} ORDER BY id LIMIT 1"
    )))
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let installation = crate::retention::installation(
        sqlx::query_scalar(crate::retention::INSTALLATION_SQL)
            .fetch_optional(pool)
            .await?,
    )?;
    let begun = Begun {
        batch: row.try_get("id")?,
        location: row.try_get("location")?,
        installation,
    };
    tracing::warn!(
        batch = begun.batch,
        "taking up a batch whose rows an earlier run archived but whose files it did not finish"
    );
    Ok(Some(Retiring::Batch(Box::new(PgBatch {
        tx: pool.begin().await?,
        begun,
        source: row.try_get("source")?,
        kept: 0,
        moved: None,
    }))))
}

/// Where row-wise batches take rows from.
#[derive(Clone, Copy)]
pub(super) enum RowSource<'a> {
    /// Expired rows anywhere (with `exact`).
    Everywhere,
    /// Expired rows in the default partition.
    Default,
    /// Soft-deleted rows anywhere.
    Deleted,
    /// Due rows of a due week whose week the archive already has (rows
    /// that came in after it was archived): they cannot be attached whole.
    Week(&'a str),
}

impl<'a> RowSource<'a> {
    /// The table, the condition (clock `$1`) and an order its indexes serve:
    /// expired rows through the expiry index, deleted ones through theirs.
    fn query_parts(self) -> (&'a str, &'static str, &'static str) {
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
            Self::Week(table) => (table, super::DUE, "id"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Everywhere | Self::Default | Self::Week(_) => "rows",
            Self::Deleted => "deleted",
        }
    }
}

pub(super) async fn retire_rows(
    pool: &PgPool,
    request: &RetireRequest,
    locate: Locate<'_>,
    source: RowSource<'_>,
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
    let (mut chosen_namespaces, mut chosen_names) = (Vec::new(), Vec::new());
    for row in &chosen {
        let start: DateTime<Utc> = row.try_get("start_time")?;
        let (namespace, name): (String, String) =
            (row.try_get("namespace")?, row.try_get("remediation_name")?);
        chosen_ids.push(row.try_get::<i64, _>("id")?);
        chosen_starts.push(start);
        locks.push(crate::postgres::remediation_lock(&namespace, &name, start));
        chosen_namespaces.push(namespace);
        chosen_names.push(name);
    }
    sqlx::query("SELECT pg_advisory_xact_lock($1, k) FROM UNNEST($2::int4[]) AS k")
        .bind(crate::postgres::REMEDIATION_LOCK_CLASS)
        .bind(crate::postgres::sorted_locks(locks.into_iter()))
        .execute(&mut *tx)
        .await?;
    // A remediation with events still queued for its summary waits for a
    // later batch (the next run settles the queue first): projecting here,
    // in a transaction that stays open while the files are written, would
    // hold every read that settles the queue until then.
    let queued: Vec<i64> = sqlx::query_scalar(
        "SELECT k.i FROM UNNEST($1::text[], $2::text[], $3::timestamptz[]) WITH ORDINALITY \
              AS k(ns, name, st, i) \
         WHERE EXISTS (SELECT 1 FROM remediation_projection_queue q \
           WHERE q.namespace = k.ns AND q.remediation_name = k.name AND q.start_time = k.st)",
    )
    .bind(&chosen_namespaces)
    .bind(&chosen_names)
    .bind(&chosen_starts)
    .fetch_all(&mut *tx)
    .await?;
    if !queued.is_empty() {
        let waits: HashSet<usize> = queued
            .iter()
            .filter_map(|&i| usize::try_from(i - 1).ok())
            .collect();
        let keep = |i: &usize| !waits.contains(i);
        chosen_ids = chosen_ids
            .into_iter()
            .enumerate()
            .filter(|(i, _)| keep(i))
            .map(|(_, id)| id)
            .collect();
        chosen_starts = chosen_starts
            .into_iter()
            .enumerate()
            .filter(|(i, _)| keep(i))
            .map(|(_, start)| start)
            .collect();
    }
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
    }))))
}

pub(super) async fn next_batch(
    pool: &PgPool,
    request: &RetireRequest,
    locate: Locate<'_>,
) -> Result<Option<Retiring<'static>>, StoreError> {
    if let Some(batch) = resume_batch(pool).await? {
        return Ok(Some(batch));
    }
    // A week an older version detached and did not finish.
    if let Some(table) = detached_week(pool).await?
        && let Some(batch) = retire_week(pool, request, locate, &table).await?
    {
        return Ok(Some(batch));
    }
    let due = attached_weeks(pool)
        .await?
        .into_iter()
        .filter(|t| week_of(t).is_some_and(|w| week_due(w, request)));
    for table in due {
        if archive_has_week(pool, &table).await?
            && let Some(batch) = retire_rows(pool, request, locate, RowSource::Week(&table)).await?
        {
            return Ok(Some(batch));
        }
        if let Some(batch) = retire_week(pool, request, locate, &table).await? {
            return Ok(Some(batch));
        }
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
