//! Weekly partitions: created ahead, detached when due, their rows that
//! are not due kept live, and attached to the archive when retired.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgConnection, PgPool};

use crate::StoreError;
use crate::retention::RetireRequest;

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

async fn try_ensure_partitions(
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

/// The exact complement of [`DUE`], with the clock as `$1`.
pub(super) const KEEP: &str = "legal_hold OR (deleted_at IS NULL AND (retention_expiry_time IS NULL OR retention_expiry_time > $1))";

/// Moves a detached week's rows that are not due back into the live table
/// (they land in the default partition); returns how many summary rows.
pub(super) async fn keep_rows(
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
pub(super) const DETACH_LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '300ms'";
/// Attempts to detach a week before the run gives up until the next one.
pub(super) const DETACH_ATTEMPTS: u32 = 20;

/// Detaches a due week from both tables and moves its rows that are not
/// due back into the live tables, in one short transaction; retried while
/// the lock is busy.
pub(super) async fn detach_week(
    pool: &PgPool,
    table: &str,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
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

pub(super) async fn try_detach_week(
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
