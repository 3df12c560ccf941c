//! Weekly partitions: created ahead, and when due moved whole into the
//! archive (their rows that are not due kept live) in one short transaction.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgConnection, PgPool};

use crate::StoreError;
use crate::postgres::weeks::{makes, monday, oldest_kept};
use crate::retention::{RetireRequest, Upkeep};

/// Key of the transaction lock that callers of `remaudit_ensure_partitions`
/// take in turn. The function creates a week's tables when it finds them
/// missing; two callers at once (two servers starting, or one connecting
/// while another's retention run makes the weeks) would both find them
/// missing, both create them, and all but one fail on PostgreSQL's unique
/// index of type names. It is not the retention run's lock, which a run
/// holds (on another connection) while it calls this.
const PARTITIONS_LOCK_KEY: i64 = 0x7265_6d61_7061_7274;

/// How long making the weeks waits for each lock. Attaching a week takes
/// the default partition exclusively, so it waits for every transaction that
/// touches it (a row-wise retention batch writing its files, a long read),
/// and ingest queues behind the waiting attach: the wait is kept short.
const ENSURE_LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '300ms'";
/// Attempts to make the weeks before giving up until the next call.
const ENSURE_ATTEMPTS: u32 = 3;

/// The error of a lock not granted within `lock_timeout`.
pub(in crate::postgres) const BUSY: &str = "55P03";
/// The error of an attach that meets rows of its week in the default
/// partition: an insert that had not committed when the attempt looked
/// for such rows. The next attempt sees them and moves them in.
pub(in crate::postgres) const RACED: &str = "23514";

/// Creates the weekly partitions from `from`'s week to `to` that are
/// missing; how many tables it created. Callers take turns, so that each
/// week is made once however many processes ask at the same moment. When the
/// tables stay locked it makes none and says so: rows of a week not made yet
/// land in the default partition, and the next run or start-up makes it.
pub(in crate::postgres) async fn ensure_partitions(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<u32, StoreError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match try_ensure_partitions(pool, from, to).await {
            Err(StoreError::Database(sqlx::Error::Database(e)))
                if matches!(e.code().as_deref(), Some(BUSY | RACED)) =>
            {
                if attempt >= ENSURE_ATTEMPTS {
                    tracing::warn!(
                        attempts = attempt,
                        "weekly partitions not made now: their tables stayed locked (a retention batch or a long read in flight); a later retention run or start-up makes them"
                    );
                    return Ok(0);
                }
                tokio::time::sleep(std::time::Duration::from_millis(250 * u64::from(attempt)))
                    .await;
            }
            other => return other,
        }
    }
}

/// One attempt of [`ensure_partitions`]: fails with the lock timeout's
/// error (`55P03`) when the tables stay locked.
pub(in crate::postgres) async fn try_ensure_partitions(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<u32, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query(ENSURE_LOCK_TIMEOUT).execute(&mut *tx).await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(PARTITIONS_LOCK_KEY)
        .execute(&mut *tx)
        .await?;
    // Rows in a default partition within the range belong to a week not made
    // yet, which will take them out. Attaching a week locks the parent only
    // against other schema changes, so a read planned before the attach and
    // run after it would see neither the moved rows' old place nor their new
    // one: with rows to move, the tables are taken whole, in the one order.
    let moving: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM remediation_audit_default \
                        WHERE start_time >= date_trunc('week', $1, 'UTC') \
                          AND start_time < date_trunc('week', $2, 'UTC') + INTERVAL '7 days') \
             OR EXISTS (SELECT 1 FROM remediation_audit_events_default \
                        WHERE start_time >= date_trunc('week', $1, 'UTC') \
                          AND start_time < date_trunc('week', $2, 'UTC') + INTERVAL '7 days')",
    )
    .bind(from)
    .bind(to)
    .fetch_one(&mut *tx)
    .await?;
    if moving {
        sqlx::query(
            "LOCK TABLE remediation_audit, remediation_audit_events IN ACCESS EXCLUSIVE MODE",
        )
        .execute(&mut *tx)
        .await?;
    }
    // A statement after the locks: its snapshot sees the weeks the caller
    // before made.
    let created: i32 = sqlx::query_scalar("SELECT remaudit_ensure_partitions($1, $2)")
        .bind(from)
        .bind(to)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(u32::try_from(created).unwrap_or(0))
}

/// Whether a partitioned parent's statistics are stale: never gathered, or
/// its row estimate more than a tenth away from the sum of its partitions'
/// (which autovacuum keeps fresh). `ANALYZE` of a parent samples every
/// partition as well, so it runs only when the estimate drifted: after a
/// week left or a large load, not every run.
async fn stale(pool: &PgPool, parent: &str) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT p.reltuples < 0 OR abs(p.reltuples - s.total) > 0.1 * greatest(s.total, 1000) \
         FROM pg_class p, LATERAL (SELECT coalesce(sum(greatest(c.reltuples, 0)), 0) AS total \
                                   FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                                   WHERE i.inhparent = p.oid) s \
         WHERE p.oid = to_regclass($1)",
    )
    .bind(parent)
    .fetch_optional(pool)
    .await?
    .unwrap_or(false))
}

/// A run's upkeep of the partitions (see `RetentionStore::partition_upkeep`).
pub(super) async fn upkeep(pool: &PgPool, request: &RetireRequest) -> Result<Upkeep, StoreError> {
    let waiting: Vec<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT date_trunc('week', start_time, 'UTC') FROM remediation_audit_default \
         UNION SELECT date_trunc('week', start_time, 'UTC') FROM remediation_audit_events_default \
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await?;
    let mut tables_made = 0;
    for week in waiting {
        if makes(monday(week), request.now, request.age) {
            tables_made += ensure_partitions(pool, week, week + TimeDelta::weeks(1)).await?;
        }
    }
    for parent in ["remediation_audit", "remediation_audit_events"] {
        if stale(pool, parent).await? {
            sqlx::query(AssertSqlSafe(format!("ANALYZE {parent}")))
                .execute(pool)
                .await?;
        }
    }
    // Rows of weeks that are not due belong in a weekly partition; the
    // others (due, and waiting for a row-wise batch or held) do not.
    let oldest_kept = oldest_kept(request.now, request.age);
    let (remediations, events): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM remediation_audit_default WHERE start_time >= $1), \
                (SELECT count(*) FROM remediation_audit_events_default WHERE start_time >= $1)",
    )
    .bind(oldest_kept.and_hms_opt(0, 0, 0).map(|t| t.and_utc()))
    .fetch_one(pool)
    .await?;
    Ok(Upkeep {
        tables_made,
        default_remediations: u64::try_from(remediations).unwrap_or(0),
        default_events: u64::try_from(events).unwrap_or(0),
    })
}

/// The Monday a weekly partition's name (`remediation_audit_wYYYYMMDD`) starts on.
pub(super) fn week_of(name: &str) -> Option<NaiveDate> {
    let digits = name.rsplit_once("_w")?.1;
    NaiveDate::parse_from_str(digits, "%Y%m%d").ok()
}

pub(super) fn week_due(week: NaiveDate, request: &RetireRequest) -> bool {
    let end = week
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc() + TimeDelta::days(7));
    end.and_then(|end| end.checked_add_signed(request.age))
        .is_some_and(|due| due <= request.now)
}

/// Attached weekly partitions of the summary table, oldest first.
pub(super) async fn attached_weeks(pool: &PgPool) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'remediation_audit'::regclass \
           AND c.relname ~ '^remediation_audit_w[0-9]{8}$' ORDER BY 1",
    )
    .fetch_all(pool)
    .await?)
}

/// A weekly table an earlier run detached and did not finish.
pub(super) async fn detached_week(pool: &PgPool) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT relname::text FROM pg_class \
         WHERE relkind = 'r' AND NOT relispartition AND relname ~ '^remediation_audit_w[0-9]{8}$' \
         ORDER BY 1 LIMIT 1",
    )
    .fetch_optional(pool)
    .await?)
}

pub(super) fn events_table(week_table: &str) -> String {
    week_table.replacen("remediation_audit_", "remediation_audit_events_", 1)
}

/// The exact complement of [`DUE`], with the clock as `$1`. Each arm is one
/// of the summary table's indexes (`idx_legal_hold`, `idx_retention_expiry`),
/// so finding the few rows a due week keeps reads no more than they are.
const KEEP: &str = "legal_hold OR (deleted_at IS NULL AND (retention_expiry_time IS NULL OR retention_expiry_time > $1))";

/// Moves a detached week's rows that are not due, and their events, back
/// into the live tables (they land in the default partition) in one
/// statement (PostgreSQL runs every data-changing `WITH` part to the end);
/// returns how many summary rows.
async fn keep_rows(
    conn: &mut PgConnection,
    table: &str,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let events = events_table(table);
    let kept: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "WITH kept AS (DELETE FROM {table} WHERE {KEEP} RETURNING *), \
              back AS (INSERT INTO remediation_audit SELECT * FROM kept \
                       RETURNING namespace, remediation_name, start_time), \
              moved AS (DELETE FROM {events} e USING back b WHERE e.namespace = b.namespace \
                          AND e.remediation_name = b.remediation_name AND e.start_time = b.start_time \
                        RETURNING e.*), \
              events_back AS (INSERT INTO remediation_audit_events SELECT * FROM moved) \
         SELECT count(*) FROM back"
    )))
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    Ok(u64::try_from(kept).unwrap_or(0))
}

/// How long one attempt to move a week waits for the table locks. Ingest
/// queues behind a waiting move, so the wait is kept short and retried.
const MOVE_LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '300ms'";
/// Attempts to move a week before the run gives up until the next one.
const MOVE_ATTEMPTS: u32 = 20;

/// The four audit tables, in the one order every writer locks them in
/// (see `TABLE_LOCKS` in postgres.rs): summary, its archive, events, theirs.
const MOVE_LOCKS: &str = "LOCK TABLE remediation_audit, remediation_audit_archive, \
     remediation_audit_events, remediation_audit_events_archive IN ACCESS EXCLUSIVE MODE";

/// For each of a week's tables: the index the archive's partitions carry
/// that the live week lacks, as (name suffix, columns).
const ARCHIVE_INDEXES: [(&str, &str); 2] = [
    ("start", "start_time"),
    ("remediation", "namespace, remediation_name, start_time"),
];

/// Readies a due week for its move while it is still live, with nothing
/// locked against ingest for longer than a catalog change: builds
/// (concurrently) the index the archive's partition needs that the live
/// week lacks, and a validated check of the week's bounds, so that attaching
/// the week to the archive attaches that index and skips the scan of its
/// rows rather than doing both under the move's locks. Idempotent.
pub(super) async fn prepare_week(pool: &PgPool, table: &str) -> Result<(), StoreError> {
    let start = week_start(table)?;
    let end = start + TimeDelta::weeks(1);
    for (part, (suffix, columns)) in [table.to_owned(), events_table(table)]
        .into_iter()
        .zip(ARCHIVE_INDEXES)
    {
        let index = format!("{part}_{suffix}");
        let valid: Option<bool> = sqlx::query_scalar(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)",
        )
        .bind(&index)
        .fetch_optional(pool)
        .await?;
        if valid == Some(false) {
            // Left by a build that stopped half-way.
            sqlx::query(AssertSqlSafe(format!("DROP INDEX CONCURRENTLY {index}")))
                .execute(pool)
                .await?;
        }
        if valid != Some(true) {
            sqlx::query(AssertSqlSafe(format!(
                "CREATE INDEX CONCURRENTLY IF NOT EXISTS {index} ON {part} ({columns})"
            )))
            .execute(pool)
            .await?;
        }
        let check = format!("{part}_week");
        let checked: Option<bool> = sqlx::query_scalar(
            "SELECT convalidated FROM pg_constraint WHERE conrelid = to_regclass($1) AND conname = $2",
        )
        .bind(&part)
        .bind(&check)
        .fetch_optional(pool)
        .await?;
        if checked.is_none() {
            add_bounds(pool, &part, &check, start, end).await?;
        }
        if checked != Some(true) {
            sqlx::query(AssertSqlSafe(format!(
                "ALTER TABLE {part} VALIDATE CONSTRAINT {check}"
            )))
            .execute(pool)
            .await?;
        }
    }
    Ok(())
}

/// Adds the week's bounds as a check not yet validated: a catalog change,
/// but one that takes the table exclusively, so it waits briefly and retries.
async fn add_bounds(
    pool: &PgPool,
    part: &str,
    check: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<(), StoreError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut tx = pool.begin().await?;
        sqlx::query(MOVE_LOCK_TIMEOUT).execute(&mut *tx).await?;
        let added = sqlx::query(AssertSqlSafe(format!(
            "ALTER TABLE {part} ADD CONSTRAINT {check} CHECK (start_time IS NOT NULL \
             AND start_time >= '{}'::timestamptz AND start_time < '{}'::timestamptz) NOT VALID",
            start.to_rfc3339(),
            end.to_rfc3339()
        )))
        .execute(&mut *tx)
        .await;
        match added {
            Err(sqlx::Error::Database(e))
                if e.code().as_deref() == Some(BUSY) && attempt < MOVE_ATTEMPTS =>
            {
                drop(tx);
                tokio::time::sleep(std::time::Duration::from_millis(250 * u64::from(attempt)))
                    .await;
            }
            Err(e) => return Err(e.into()),
            Ok(_) => {
                tx.commit().await?;
                return Ok(());
            }
        }
    }
}

/// Where a due week went.
pub(super) enum WeekMove {
    /// Its tables are the archive's partitions for the week, their rows
    /// tagged with the batch, committed.
    Attached {
        /// Rows that were not due and went back live.
        kept: u64,
    },
    /// Nothing was left in it once the rows that stay were moved back live:
    /// its tables are dropped.
    Dropped {
        /// Rows that were not due and went back live.
        kept: u64,
    },
    /// It holds due rows that cannot be attached (the archive already has
    /// the week, or no batch was given): nothing changed; they leave row by row.
    RowWise,
}

/// Takes a due week out of the live tables and makes it the archive's, in
/// one short transaction: the week's rows are live or archived at every
/// instant, never neither, so a record for one of its remediations either
/// finds it live or finds it archived. Retried while the locks are busy.
/// `table` may already be detached (left so by an older version).
pub(super) async fn move_week(
    pool: &PgPool,
    table: &str,
    now: DateTime<Utc>,
    batch: Option<i64>,
) -> Result<WeekMove, StoreError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match try_move_week(pool, table, now, batch).await {
            Err(StoreError::Database(sqlx::Error::Database(e)))
                if e.code().as_deref() == Some(BUSY) && attempt < MOVE_ATTEMPTS =>
            {
                tracing::debug!(
                    table,
                    attempt,
                    "the table locks are busy; moving the week again soon"
                );
                tokio::time::sleep(std::time::Duration::from_millis(250 * u64::from(attempt)))
                    .await;
            }
            other => return other,
        }
    }
}

async fn try_move_week(
    pool: &PgPool,
    table: &str,
    now: DateTime<Utc>,
    batch: Option<i64>,
) -> Result<WeekMove, StoreError> {
    let events = events_table(table);
    let start = week_start(table)?;
    let mut tx = pool.begin().await?;
    sqlx::query(MOVE_LOCK_TIMEOUT).execute(&mut *tx).await?;
    sqlx::query(MOVE_LOCKS).execute(&mut *tx).await?;
    // What is still queued for the week goes into its summary before the
    // week moves; with the tables locked, nothing more can be queued for it.
    crate::postgres::projection::settle_week(&mut tx, start).await?;
    let mut was_attached = false;
    for (part, parent) in [
        (events.as_str(), "remediation_audit_events"),
        (table, "remediation_audit"),
    ] {
        let attached: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass($1))",
        )
        .bind(part)
        .fetch_one(&mut *tx)
        .await?;
        if attached {
            was_attached = true;
            sqlx::query(AssertSqlSafe(format!(
                "ALTER TABLE {parent} DETACH PARTITION {part}"
            )))
            .execute(&mut *tx)
            .await?;
        }
    }
    let kept = keep_rows(&mut tx, table, now).await?;
    if !holds_rows(&mut *tx, table).await? {
        sqlx::query(AssertSqlSafe(format!("DROP TABLE {table}, {events}")))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        return Ok(WeekMove::Dropped { kept });
    }
    let twin = archive_has_week(&mut *tx, table).await?;
    let Some(batch) = batch.filter(|_| !twin) else {
        if was_attached {
            tx.rollback().await?;
        } else {
            // Left detached by an older version, of a week the archive
            // already has: live again, so that it leaves row by row.
            reattach(&mut tx, table, start).await?;
            tx.commit().await?;
        }
        return Ok(WeekMove::RowWise);
    };
    for (live, parent) in [
        (table, "remediation_audit_archive"),
        (events.as_str(), "remediation_audit_events_archive"),
    ] {
        attach_to_archive(&mut tx, live, parent, batch, start).await?;
    }
    tx.commit().await?;
    Ok(WeekMove::Attached { kept })
}

/// Whether a week's tables (summary or events) hold any row.
pub(super) async fn holds_rows(
    conn: impl sqlx::PgExecutor<'_>,
    table: &str,
) -> Result<bool, StoreError> {
    let events = events_table(table);
    Ok(sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT EXISTS (SELECT 1 FROM {table}) OR EXISTS (SELECT 1 FROM {events})"
    )))
    .fetch_one(conn)
    .await?)
}

/// Whether the archive already has a partition for a live week's table.
pub(super) async fn archive_has_week(
    conn: impl sqlx::PgExecutor<'_>,
    table: &str,
) -> Result<bool, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL OR to_regclass($2) IS NOT NULL")
            .bind(archive_table(table, "remediation_audit_archive"))
            .bind(archive_table(table, "remediation_audit_events_archive"))
            .fetch_one(conn)
            .await?,
    )
}

/// The instant a weekly table's week starts.
fn week_start(table: &str) -> Result<DateTime<Utc>, StoreError> {
    week_of(table)
        .and_then(|w| w.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| StoreError::Config(format!("{table} is not a weekly partition")))
}

/// Attaches a detached week back to the live tables, with the rows of its
/// week that landed in the default partitions meanwhile.
async fn reattach(
    conn: &mut PgConnection,
    table: &str,
    start: DateTime<Utc>,
) -> Result<(), StoreError> {
    for (part, parent) in [
        (table.to_owned(), "remediation_audit"),
        (events_table(table), "remediation_audit_events"),
    ] {
        attach_week(conn, &part, parent, start).await?;
    }
    tracing::warn!(
        table,
        "a week left detached by an older version, which the archive already has, is live again; its rows leave row by row"
    );
    Ok(())
}

/// Attaches `part` to `parent` as the week from `start`, with the rows of
/// that week waiting in the parent's default partition moved in first.
async fn attach_week(
    conn: &mut PgConnection,
    part: &str,
    parent: &str,
    start: DateTime<Utc>,
) -> Result<(), StoreError> {
    let end = start + TimeDelta::weeks(1);
    sqlx::query(AssertSqlSafe(format!(
        "WITH moved AS (DELETE FROM {parent}_default WHERE start_time >= $1 AND start_time < $2 RETURNING *) \
         INSERT INTO {part} SELECT * FROM moved"
    )))
    .bind(start)
    .bind(end)
    .execute(&mut *conn)
    .await?;
    sqlx::query(AssertSqlSafe(format!(
        "ALTER TABLE {parent} ATTACH PARTITION {part} FOR VALUES FROM ('{}') TO ('{}')",
        start.to_rfc3339(),
        end.to_rfc3339()
    )))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The archive partition's name for a live week's table.
pub(super) fn archive_table(live: &str, parent: &str) -> String {
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
    attach_week(conn, live, parent, start).await?;
    sqlx::query(AssertSqlSafe(format!(
        "ALTER TABLE {live} RENAME TO {}",
        archive_table(live, parent)
    )))
    .execute(&mut *conn)
    .await?;
    Ok(())
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
