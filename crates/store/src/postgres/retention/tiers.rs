//! The warm and cold tiers: whole weekly partitions moved to other
//! tablespaces as they age, with their indexes.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::AssertSqlSafe;
use sqlx::postgres::PgPool;

use super::partitions::{BUSY, week_of};
use crate::StoreError;
use crate::retention::{TierReport, Tiers};

/// The four partitioned audit tables, in the order every writer locks them
/// (see `TABLE_LOCKS` in postgres.rs): summary, its archive, events, theirs.
const PARENTS: [&str; 4] = [
    "remediation_audit",
    "remediation_audit_archive",
    "remediation_audit_events",
    "remediation_audit_events_archive",
];

/// How long moving a week waits for its tables' locks. Ingest and reads of
/// the week queue behind a waiting move, so it gives up early and the next
/// run tries again.
const LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '300ms'";

/// A name as an SQL identifier.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A weekly partition, or one of its indexes, and where it is.
#[derive(sqlx::FromRow)]
struct Placed {
    /// The partitioned table it belongs to (its position in [`PARENTS`] orders the locks).
    parent: String,
    /// The weekly partition (for an index, the table it indexes).
    owner: String,
    /// The table's or the index's own name.
    relname: String,
    /// Whether it is an index.
    is_index: bool,
    /// Its tablespace; empty for the database's default.
    tablespace: String,
}

/// The weekly partitions of the four tables and their indexes, by week.
async fn placed(pool: &PgPool) -> Result<BTreeMap<NaiveDate, Vec<Placed>>, StoreError> {
    let rows: Vec<Placed> = sqlx::query_as(
        "WITH parts AS (SELECT p.relname::text AS parent, c.oid, c.relname::text AS owner \
           FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
           JOIN pg_class p ON p.oid = i.inhparent \
           WHERE p.relname = ANY($1) AND c.relname ~ '_w[0-9]{8}$') \
         SELECT parts.parent, parts.owner, parts.owner AS relname, false AS is_index, \
                COALESCE(t.spcname::text, '') AS tablespace \
           FROM parts JOIN pg_class c ON c.oid = parts.oid \
           LEFT JOIN pg_tablespace t ON t.oid = c.reltablespace \
         UNION ALL \
         SELECT parts.parent, parts.owner, ic.relname::text, true, COALESCE(t.spcname::text, '') \
           FROM parts JOIN pg_index x ON x.indrelid = parts.oid \
           JOIN pg_class ic ON ic.oid = x.indexrelid \
           LEFT JOIN pg_tablespace t ON t.oid = ic.reltablespace",
    )
    .bind(PARENTS.map(str::to_owned).to_vec())
    .fetch_all(pool)
    .await?;
    let mut weeks: BTreeMap<NaiveDate, Vec<Placed>> = BTreeMap::new();
    for row in rows {
        if let Some(week) = week_of(&row.owner) {
            weeks.entry(week).or_default().push(row);
        }
    }
    Ok(weeks)
}

/// Checks that every tablespace of `tiers` exists.
async fn check_tablespaces(pool: &PgPool, tiers: &Tiers) -> Result<(), StoreError> {
    for (tier, name) in [("warm", &tiers.warm), ("cold", &tiers.cold)] {
        let Some(name) = name else { continue };
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_tablespace WHERE spcname = $1)")
                .bind(name)
                .fetch_one(pool)
                .await?;
        if !exists {
            return Err(StoreError::Config(format!(
                "the {tier} tablespace {name:?} does not exist: a superuser makes it with \
                 CREATE TABLESPACE {} LOCATION '/a/directory' and grants CREATE on it to this \
                 role, or unset --{tier}-tablespace",
                quoted(name)
            )));
        }
    }
    Ok(())
}

/// Moves every weekly partition old enough for a tier, with its indexes,
/// into that tier's tablespace; a week whose tables stay locked is left for
/// the next run.
pub(super) async fn move_to_tiers(
    pool: &PgPool,
    tiers: &Tiers,
    now: DateTime<Utc>,
) -> Result<TierReport, StoreError> {
    let mut report = TierReport::default();
    if tiers.is_empty() {
        return Ok(report);
    }
    check_tablespaces(pool, tiers).await?;
    for (week, mut items) in placed(pool).await? {
        let Some(target) = tiers.of_week(week, now) else {
            continue;
        };
        items.retain(|p| p.tablespace != target);
        if items.is_empty() {
            continue;
        }
        // Tables in the writers' lock order, each before its indexes.
        let rank = |p: &Placed| PARENTS.iter().position(|q| *q == p.parent).unwrap_or(0);
        items.sort_by(|a, b| {
            (rank(a), &a.owner, a.is_index, &a.relname).cmp(&(
                rank(b),
                &b.owner,
                b.is_index,
                &b.relname,
            ))
        });
        match move_week(pool, &items, target).await {
            Ok(()) => {
                tracing::info!(week = %week, tablespace = target, "moved a week to its tier");
                report.moved.push((week, target.to_owned()));
            }
            Err(StoreError::Database(sqlx::Error::Database(e)))
                if e.code().as_deref() == Some(BUSY) =>
            {
                tracing::warn!(week = %week, tablespace = target, "a week's tables stayed locked; the next run moves it");
                report.busy.push(week);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(report)
}

/// Moves `items` (one week's tables and indexes) to `target` in one
/// transaction: its tables locked first, in order, without waiting long.
async fn move_week(pool: &PgPool, items: &[Placed], target: &str) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query(LOCK_TIMEOUT).execute(&mut *tx).await?;
    let mut owners: Vec<&str> = items.iter().map(|p| p.owner.as_str()).collect();
    owners.dedup();
    let tables = owners
        .iter()
        .map(|t| quoted(t))
        .collect::<Vec<_>>()
        .join(", ");
    sqlx::query(AssertSqlSafe(format!(
        "LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE"
    )))
    .execute(&mut *tx)
    .await?;
    for item in items {
        let kind = if item.is_index { "INDEX" } else { "TABLE" };
        sqlx::query(AssertSqlSafe(format!(
            "ALTER {kind} {} SET TABLESPACE {}",
            quoted(&item.relname),
            quoted(target)
        )))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
