//! Weekly partitions: created ahead, and when due moved whole into the
//! archive (their rows that are not due kept live) in one short transaction.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgConnection, PgPool};

use crate::StoreError;
use crate::postgres::weeks::{makes, monday};
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
                if e.code().as_deref() == Some("55P03") =>
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
    sqlx::query("ANALYZE remediation_audit, remediation_audit_events")
        .execute(pool)
        .await?;
    let (remediations, events): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM remediation_audit_default), \
                (SELECT count(*) FROM remediation_audit_events_default)",
    )
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
pub(super) const KEEP: &str = "legal_hold OR (deleted_at IS NULL AND (retention_expiry_time IS NULL OR retention_expiry_time > $1))";

/// Moves a detached week's rows that are not due, and their events, back
/// into the live tables (they land in the default partition) in one
/// statement (PostgreSQL runs every data-changing `WITH` part to the end);
/// returns how many summary rows.
pub(super) async fn keep_rows(
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
                if e.code().as_deref() == Some("55P03") && attempt < MOVE_ATTEMPTS =>
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
    let start = week_of(table)
        .and_then(|w| w.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| StoreError::Config(format!("{table} is not a weekly partition")))?;
    let mut tx = pool.begin().await?;
    sqlx::query(MOVE_LOCK_TIMEOUT).execute(&mut *tx).await?;
    sqlx::query(MOVE_LOCKS).execute(&mut *tx).await?;
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
            sqlx::query(AssertSqlSafe(format!(
                "ALTER TABLE {parent} DETACH PARTITION {part}"
            )))
            .execute(&mut *tx)
            .await?;
        }
    }
    let kept = keep_rows(&mut tx, table, now).await?;
    let left: bool = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT EXISTS (SELECT 1 FROM {table}) OR EXISTS (SELECT 1 FROM {events})"
    )))
    .fetch_one(&mut *tx)
    .await?;
    if !left {
        sqlx::query(AssertSqlSafe(format!("DROP TABLE {table}, {events}")))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        return Ok(WeekMove::Dropped { kept });
    }
    let twin: bool =
        sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL OR to_regclass($2) IS NOT NULL")
            .bind(archive_table(table, "remediation_audit_archive"))
            .bind(archive_table(table, "remediation_audit_events_archive"))
            .fetch_one(&mut *tx)
            .await?;
    let Some(batch) = batch.filter(|_| !twin) else {
        tx.rollback().await?;
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
pub(super) async fn attach_to_archive(
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
