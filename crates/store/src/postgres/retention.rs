//! Retention on PostgreSQL: whole weekly partitions where a week is due,
//! row-wise batches for the default partition and soft-deleted rows.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use futures::TryStreamExt as _;
use sqlx::postgres::{PgConnection, PgPool, Postgres};
use sqlx::{AssertSqlSafe, Row as _, Transaction};
use tracing::instrument;

use super::PgStore;
use crate::StoreError;
use crate::retention::{
    ArchiveBatch, ArchiveTable, BATCH_IDS_SQL, BatchIds, BatchPlaces, BatchRecord, BatchTotals,
    DayCount, INSTALLATION_SQL, JournalRow, Lines, Locate, PENDING_SQL, PendingBatch, PlacesRow,
    RetentionLock, RetentionStore, RetireRequest, Retiring, installation, journal_count,
};

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
        preview(&self.pool, request).await
    }

    #[instrument(skip_all, fields(now = %request.now, exact = request.exact, batch_rows = request.batch_rows), err)]
    async fn next_batch<'a>(
        &'a self,
        request: &RetireRequest,
        locate: Locate<'_>,
    ) -> Result<Option<Retiring<'a>>, StoreError> {
        next_batch(&self.pool, request, locate).await
    }

    #[instrument(skip_all, err)]
    async fn pending_batches(&self) -> Result<Vec<PendingBatch>, StoreError> {
        pending_batches(&self.pool).await
    }

    #[instrument(skip_all, fields(batch = batch), err)]
    async fn forget_batch(&self, batch: i64) -> Result<(), StoreError> {
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

/// Key of the advisory lock one retention run holds at a time.
const LOCK_KEY: i64 = 0x7265_6d61_7564_6974;

/// Rows retention moves at the clock `$1`: soft-deleted or expired, and not held.
const DUE: &str = "NOT legal_hold AND (deleted_at IS NOT NULL OR retention_expiry_time <= $1)";
/// The exact complement of [`DUE`], with the clock as `$1`.
const KEEP: &str = "legal_hold OR (deleted_at IS NULL AND (retention_expiry_time IS NULL OR retention_expiry_time > $1))";

/// A held advisory lock: the connection that holds it; dropping it closes
/// the connection, which releases the lock.
pub(crate) struct PgLock(#[allow(dead_code)] PgConnection);

pub(super) async fn lock(pool: &PgPool) -> Result<Option<PgLock>, StoreError> {
    let mut conn = pool.acquire().await?.detach();
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(LOCK_KEY)
        .fetch_one(&mut conn)
        .await?;
    Ok(got.then_some(PgLock(conn)))
}

pub(super) async fn ensure_partitions(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<u32, StoreError> {
    let created: i32 = sqlx::query_scalar("SELECT remaudit_ensure_partitions($1, $2)")
        .bind(from)
        .bind(to)
        .fetch_one(pool)
        .await?;
    Ok(u32::try_from(created).unwrap_or(0))
}

/// The Monday a weekly partition's name (`remediation_audit_wYYYYMMDD`) starts on.
fn week_of(name: &str) -> Option<NaiveDate> {
    let digits = name.rsplit_once("_w")?.1;
    NaiveDate::parse_from_str(digits, "%Y%m%d").ok()
}

fn week_due(week: NaiveDate, request: &RetireRequest) -> bool {
    let end = week
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc() + TimeDelta::days(7));
    end.and_then(|end| end.checked_add_signed(request.age))
        .is_some_and(|due| due <= request.now)
}

/// Attached weekly partitions of the summary table, oldest first.
async fn attached_weeks(pool: &PgPool) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'remediation_audit'::regclass \
           AND c.relname ~ '^remediation_audit_w[0-9]{8}$' ORDER BY 1",
    )
    .fetch_all(pool)
    .await?)
}

/// A weekly table an earlier run detached and did not finish.
async fn detached_week(pool: &PgPool) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT relname::text FROM pg_class \
         WHERE relkind = 'r' AND NOT relispartition AND relname ~ '^remediation_audit_w[0-9]{8}$' \
         ORDER BY 1 LIMIT 1",
    )
    .fetch_optional(pool)
    .await?)
}

fn events_table(week_table: &str) -> String {
    week_table.replacen("remediation_audit_", "remediation_audit_events_", 1)
}

/// Moves a detached week's rows that are not due back into the live table
/// (they land in the default partition); returns how many summary rows.
async fn keep_rows(
    conn: &mut PgConnection,
    table: &str,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let kept = sqlx::query(AssertSqlSafe(format!(
        "WITH kept AS (DELETE FROM {table} WHERE {KEEP} RETURNING *) \
         INSERT INTO remediation_audit SELECT * FROM kept"
    )))
    .bind(now)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let events = events_table(table);
    if kept > 0 {
        sqlx::query(AssertSqlSafe(format!(
            "WITH kept AS (DELETE FROM {events} e USING remediation_audit_default d \
               WHERE e.namespace = d.namespace AND e.remediation_name = d.remediation_name \
                 AND e.start_time = d.start_time RETURNING e.*) \
             INSERT INTO remediation_audit_events SELECT * FROM kept"
        )))
        .execute(&mut *conn)
        .await?;
    }
    Ok(kept)
}

/// How long one attempt to detach a week waits for the table lock. Ingest
/// queues behind a waiting detach, so the wait is kept short and retried.
const DETACH_LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '300ms'";
/// Attempts to detach a week before the run gives up until the next one.
const DETACH_ATTEMPTS: u32 = 20;

/// Detaches a due week from both tables and moves its rows that are not
/// due back into the live tables, in one short transaction; retried while
/// the lock is busy.
async fn detach_week(pool: &PgPool, table: &str, now: DateTime<Utc>) -> Result<u64, StoreError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match try_detach_week(pool, table, now).await {
            Err(StoreError::Database(sqlx::Error::Database(e)))
                if e.code().as_deref() == Some("55P03") && attempt < DETACH_ATTEMPTS =>
            {
                tracing::debug!(
                    table,
                    attempt,
                    "the table lock is busy; detaching again soon"
                );
                tokio::time::sleep(std::time::Duration::from_millis(250 * u64::from(attempt)))
                    .await;
            }
            other => return other,
        }
    }
}

async fn try_detach_week(
    pool: &PgPool,
    table: &str,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query(DETACH_LOCK_TIMEOUT).execute(&mut *tx).await?;
    // Both locks first, in the one order every writer takes the audit tables
    // in (see `TABLE_LOCKS` in postgres.rs): summary, then events.
    sqlx::query("LOCK TABLE remediation_audit, remediation_audit_events IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let events = events_table(table);
    let attached: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass($1))",
    )
    .bind(&events)
    .fetch_one(&mut *tx)
    .await?;
    if attached {
        sqlx::query(AssertSqlSafe(format!(
            "ALTER TABLE remediation_audit_events DETACH PARTITION {events}"
        )))
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(AssertSqlSafe(format!(
        "ALTER TABLE remediation_audit DETACH PARTITION {table}"
    )))
    .execute(&mut *tx)
    .await?;
    let kept = keep_rows(&mut tx, table, now).await?;
    tx.commit().await?;
    Ok(kept)
}

/// A batch recorded as pending: its number, the location of its files and
/// the installation id that location is under.
struct Begun {
    batch: i64,
    location: String,
    installation: String,
}

/// Records a pending batch, with its location, in one statement and its own
/// commit: the number is drawn first, so no row is ever without a location.
async fn begin_batch(
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

/// The rows of a row-wise batch, as it archived them: the files read them
/// by id rather than by batch, which keeps every read an index probe.
struct Moved {
    remediations: Vec<i64>,
    events: Vec<i64>,
    start_times: Vec<DateTime<Utc>>,
    event_times: Vec<DateTime<Utc>>,
}

/// A PostgreSQL batch in flight: a whole week or a row-wise batch, its rows
/// in the archive tables within `tx`.
struct PgBatch {
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

    async fn finish(mut self: Box<Self>, totals: &BatchTotals) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE remediation_retention_batches SET state = 'done', finished_at = now(), \
             remediations = $2, events = $3, bytes = $4, start_time_min = $5, start_time_max = $6, \
             manifest_sha256 = $7 WHERE id = $1",
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
        self.tx.commit().await?;
        Ok(())
    }
}

/// Archives every row of a detached week into the archive tables, or, when
/// it holds no row, drops it; `kept` rows already went back live.
async fn retire_week(
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

/// The archive partition's name for a live week's table.
fn archive_table(live: &str, parent: &str) -> String {
    let digits = live.rsplit_once("_w").map_or("", |(_, d)| d);
    format!("{parent}_w{digits}")
}

/// Turns a detached week's table into the archive's partition for that
/// week: drops its unique keys (the archive is keyed by id), adds the
/// archive's two columns (a catalog change: no row is rewritten), takes in
/// the rows of that week already in the archive's default partition, and
/// attaches it under the archive's name.
async fn attach_to_archive(
    conn: &mut PgConnection,
    live: &str,
    parent: &str,
    batch: i64,
    start: DateTime<Utc>,
) -> Result<(), StoreError> {
    let drops: Vec<String> = sqlx::query_scalar(
        "SELECT format('ALTER TABLE %I DROP CONSTRAINT %I', $1::text, conname) \
         FROM pg_constraint WHERE conrelid = to_regclass($1) AND contype = 'u'",
    )
    .bind(live)
    .fetch_all(&mut *conn)
    .await?;
    for drop in drops {
        sqlx::query(AssertSqlSafe(drop)).execute(&mut *conn).await?;
    }
    sqlx::query(AssertSqlSafe(format!(
        "ALTER TABLE {live} ADD COLUMN archived_at TIMESTAMPTZ NOT NULL DEFAULT now(), \
         ADD COLUMN archive_batch BIGINT DEFAULT {batch}"
    )))
    .execute(&mut *conn)
    .await?;
    sqlx::query(AssertSqlSafe(format!(
        "ALTER TABLE {live} ALTER COLUMN archive_batch DROP DEFAULT"
    )))
    .execute(&mut *conn)
    .await?;
    let end = start + TimeDelta::days(7);
    sqlx::query(AssertSqlSafe(format!(
        "WITH moved AS (DELETE FROM {parent}_default WHERE start_time >= $1 AND start_time < $2 RETURNING *) \
         INSERT INTO {live} SELECT * FROM moved"
    )))
    .bind(start)
    .bind(end)
    .execute(&mut *conn)
    .await?;
    sqlx::query(AssertSqlSafe(format!(
        "ALTER TABLE {parent} ATTACH PARTITION {live} FOR VALUES FROM ('{}') TO ('{}')",
        start.to_rfc3339(),
        end.to_rfc3339()
    )))
    .execute(&mut *conn)
    .await?;
    sqlx::query(AssertSqlSafe(format!(
        "ALTER TABLE {live} RENAME TO {}",
        archive_table(live, parent)
    )))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Where row-wise batches take rows from.
#[derive(Clone, Copy)]
enum RowSource {
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

async fn retire_rows(
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
        locks.push(super::remediation_lock(
            row.try_get("namespace")?,
            row.try_get("remediation_name")?,
            start,
        ));
    }
    sqlx::query("SELECT pg_advisory_xact_lock($1, k) FROM UNNEST($2::int4[]) AS k")
        .bind(super::REMEDIATION_LOCK_CLASS)
        .bind(super::sorted_locks(locks.into_iter()))
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

pub(super) async fn preview(
    pool: &PgPool,
    request: &RetireRequest,
) -> Result<Vec<DayCount>, StoreError> {
    // A row moves when it is due and either the run is exact, it sits in the
    // default partition, it is soft-deleted, or its whole week is due.
    let rows = sqlx::query(AssertSqlSafe(format!(
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

pub(super) async fn pending_batches(pool: &PgPool) -> Result<Vec<PendingBatch>, StoreError> {
    Ok(sqlx::query_as(PENDING_SQL).fetch_all(pool).await?)
}

pub(super) async fn forget_batch(pool: &PgPool, batch: i64) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM remediation_retention_batches WHERE id = $1 AND state = 'pending'")
        .bind(batch)
        .execute(pool)
        .await?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_week_is_due_when_its_last_day_is_older_than_the_age() {
        let week = week_of("remediation_audit_w20260817").expect("a week");
        assert_eq!(week, NaiveDate::from_ymd_opt(2026, 8, 17).expect("date"));
        let at = |s: &str| s.parse::<DateTime<Utc>>().expect("time");
        let request = |now| RetireRequest {
            now: at(now),
            age: TimeDelta::days(90),
            batch_rows: 10,
            exact: false,
        };
        // The week ends 2026-08-24; 90 days later is 2026-11-22.
        assert!(!week_due(week, &request("2026-11-21T23:59:59Z")));
        assert!(week_due(week, &request("2026-11-22T00:00:00Z")));
        assert_eq!(week_of("remediation_audit_default"), None);
    }
}
