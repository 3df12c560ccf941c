//! The chain on PostgreSQL: heads read and moved in the insert's
//! transaction, and chains read back for verification.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use remaudit_model::NewAudit;
use remaudit_model::chain::{ChainHead, ChainRemediation, ChainedEvent};
use sqlx::{FromRow, Row};
use tracing::instrument;
use uuid::Uuid;

use super::{BACKEND, PgStore};
use crate::StoreError;
use crate::chain::{ChainStore, EventColumns, Head, Heads, Linked, head};
use crate::store::{RemediationKey, remediation_key};

/// The heads of the remediations of `records`, locked until commit (the
/// remediation's advisory lock already keeps other writers out; the row
/// lock keeps it so for any writer that does not take it).
pub(super) async fn read_heads<'r>(
    conn: &mut sqlx::PgConnection,
    records: impl Iterator<Item = &'r NewAudit>,
) -> Result<Heads, StoreError> {
    let keys: Vec<RemediationKey> = records
        .map(remediation_key)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if keys.is_empty() {
        return Ok(Heads::new());
    }
    let rows = sqlx::query(
        "SELECT h.namespace, h.remediation_name, h.start_time, h.last_seq, h.last_mac \
         FROM remediation_chain_heads h \
         JOIN UNNEST($1::text[], $2::text[], $3::timestamptz[]) AS k(ns, name, st) \
           ON h.namespace = k.ns AND h.remediation_name = k.name AND h.start_time = k.st \
         ORDER BY h.namespace, h.remediation_name, h.start_time \
         FOR UPDATE OF h",
    )
    .bind(keys.iter().map(|k| k.0.clone()).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.1.clone()).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.2).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                (
                    row.try_get("namespace")?,
                    row.try_get("remediation_name")?,
                    row.try_get("start_time")?,
                ),
                (row.try_get("last_seq")?, row.try_get("last_mac")?),
            ))
        })
        .collect::<Result<Heads, sqlx::Error>>()
        .map_err(StoreError::from)
}

/// Writes the moved heads.
pub(super) async fn write_heads(
    conn: &mut sqlx::PgConnection,
    heads: &Heads,
) -> Result<(), StoreError> {
    if heads.is_empty() {
        return Ok(());
    }
    let mut keys: Vec<(&RemediationKey, &Head)> = heads.iter().collect();
    keys.sort_by(|a, b| a.0.cmp(b.0));
    sqlx::query(
        "INSERT INTO remediation_chain_heads (namespace, remediation_name, start_time, last_seq, last_mac) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::int8[], $5::bytea[]) \
         ON CONFLICT (namespace, remediation_name, start_time) DO UPDATE \
           SET last_seq = EXCLUDED.last_seq, last_mac = EXCLUDED.last_mac",
    )
    .bind(keys.iter().map(|(k, _)| k.0.clone()).collect::<Vec<_>>())
    .bind(keys.iter().map(|(k, _)| k.1.clone()).collect::<Vec<_>>())
    .bind(keys.iter().map(|(k, _)| k.2).collect::<Vec<_>>())
    .bind(keys.iter().map(|(_, h)| h.0).collect::<Vec<_>>())
    .bind(keys.iter().map(|(_, h)| h.1.clone()).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Rewrites the chain columns of stored events (after a record of the batch
/// lost its key to another remediation's).
pub(super) async fn relink<'r>(
    conn: &mut sqlx::PgConnection,
    records: impl Iterator<Item = &'r NewAudit>,
    links: &[Linked],
) -> Result<(), StoreError> {
    let (ids, starts): (Vec<Uuid>, Vec<DateTime<Utc>>) =
        records.map(|r| (r.event_id, r.start_time)).unzip();
    sqlx::query(
        "UPDATE remediation_audit_events e \
         SET chain_seq = u.seq, chain_key_id = u.key_id, chain_mac = u.mac \
         FROM UNNEST($1::uuid[], $2::timestamptz[], $3::int8[], $4::text[], $5::bytea[]) \
           AS u(event_id, start_time, seq, key_id, mac) \
         WHERE e.event_id = u.event_id AND e.start_time = u.start_time",
    )
    .bind(ids)
    .bind(starts)
    .bind(links.iter().map(|l| l.seq).collect::<Vec<_>>())
    .bind(links.iter().map(|l| l.key_id.clone()).collect::<Vec<_>>())
    .bind(links.iter().map(|l| l.mac.clone()).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[async_trait]
impl ChainStore for PgStore {
    #[instrument(skip_all, fields(backend = BACKEND, limit = limit), err)]
    async fn chain_remediations(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        after: Option<&ChainRemediation>,
        limit: u32,
    ) -> Result<Vec<ChainRemediation>, StoreError> {
        let rows = sqlx::query(
            "SELECT start_time, namespace, remediation_name FROM ( \
               SELECT start_time, namespace, remediation_name FROM remediation_chain_heads \
               WHERE start_time >= $1 AND start_time < $2 \
               UNION \
               SELECT start_time, namespace::text, remediation_name::text FROM remediation_audit_events \
               WHERE start_time >= $1 AND start_time < $2 \
             ) k \
             WHERE ($3::timestamptz IS NULL OR (start_time, namespace, remediation_name) > ($3, $4, $5)) \
               AND NOT EXISTS (SELECT 1 FROM remediation_audit_archive a WHERE a.namespace = k.namespace \
                 AND a.remediation_name = k.remediation_name AND a.start_time = k.start_time) \
             ORDER BY start_time, namespace, remediation_name LIMIT $6",
        )
        .bind(since)
        .bind(until)
        .bind(after.map(|a| a.start_time))
        .bind(after.map(|a| a.namespace.clone()))
        .bind(after.map(|a| a.remediation_name.clone()))
        .bind(i64::from(limit))
        .fetch_all(&self.reads)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ChainRemediation {
                    start_time: row.try_get("start_time")?,
                    namespace: row.try_get("namespace")?,
                    remediation_name: row.try_get("remediation_name")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    #[instrument(skip_all, fields(backend = BACKEND), err)]
    async fn chain_of(
        &self,
        r: &ChainRemediation,
    ) -> Result<(Vec<ChainedEvent>, Option<ChainHead>), StoreError> {
        let rows = sqlx::query(
            "SELECT id, event_id, chain_seq, chain_key_id, chain_mac, event_time, overall_phase, \
                    record::text AS record \
             FROM remediation_audit_events \
             WHERE namespace = $1 AND remediation_name = $2 AND start_time = $3 ORDER BY id",
        )
        .bind(&r.namespace)
        .bind(&r.remediation_name)
        .bind(r.start_time)
        .fetch_all(&self.reads)
        .await?;
        let events = rows
            .iter()
            .map(|row| {
                Ok(EventColumns::from_row(row)?
                    .into_event(row.try_get("event_id")?, row.try_get("event_time")?))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let head = sqlx::query(
            "SELECT last_seq, last_mac FROM remediation_chain_heads \
             WHERE namespace = $1 AND remediation_name = $2 AND start_time = $3",
        )
        .bind(&r.namespace)
        .bind(&r.remediation_name)
        .bind(r.start_time)
        .fetch_optional(&self.reads)
        .await?
        .map(|row| {
            let mac: Option<Vec<u8>> = row.try_get("last_mac")?;
            Ok::<_, sqlx::Error>(head(r, row.try_get("last_seq")?, mac.as_deref()))
        })
        .transpose()?;
        Ok((events, head))
    }
}
