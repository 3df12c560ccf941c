//! The chain on SQLite: heads read and moved in the insert's transaction
//! (which holds the database's write lock), and chains read back for
//! verification.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use remaudit_model::NewAudit;
use remaudit_model::chain::{ChainHead, ChainRemediation, ChainedEvent};
use sqlx::{FromRow, Row};
use tracing::instrument;

use super::{BACKEND, SqliteStore, encode_time, time_column, uuid_column};
use crate::StoreError;
use crate::chain::{ChainStore, EventColumns, Heads, head};
use crate::store::{RemediationKey, remediation_key};

/// The heads of the remediations of `records`.
pub(super) async fn read_heads<'r>(
    conn: &mut sqlx::SqliteConnection,
    records: impl Iterator<Item = &'r NewAudit>,
) -> Result<Heads, StoreError> {
    let keys: HashSet<RemediationKey> = records.map(remediation_key).collect();
    let mut heads = Heads::new();
    for key in keys {
        let row = sqlx::query(
            "SELECT last_seq, last_mac FROM remediation_chain_heads \
             WHERE namespace = ?1 AND remediation_name = ?2 AND start_time = ?3",
        )
        .bind(&key.0)
        .bind(&key.1)
        .bind(encode_time(key.2))
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(row) = row {
            heads.insert(key, (row.try_get("last_seq")?, row.try_get("last_mac")?));
        }
    }
    Ok(heads)
}

/// Writes the moved heads.
pub(super) async fn write_heads(
    conn: &mut sqlx::SqliteConnection,
    heads: &Heads,
) -> Result<(), StoreError> {
    for (key, (seq, mac)) in heads {
        sqlx::query(
            "INSERT INTO remediation_chain_heads (namespace, remediation_name, start_time, last_seq, last_mac) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (namespace, remediation_name, start_time) DO UPDATE \
               SET last_seq = excluded.last_seq, last_mac = excluded.last_mac",
        )
        .bind(&key.0)
        .bind(&key.1)
        .bind(encode_time(key.2))
        .bind(seq)
        .bind(mac.as_deref())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

#[async_trait]
impl ChainStore for SqliteStore {
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
               WHERE start_time >= ?1 AND start_time < ?2 \
               UNION \
               SELECT start_time, namespace, remediation_name FROM remediation_audit_events \
               WHERE start_time >= ?1 AND start_time < ?2 \
             ) k \
             WHERE (?3 IS NULL OR (start_time, namespace, remediation_name) > (?3, ?4, ?5)) \
               AND NOT EXISTS (SELECT 1 FROM remediation_audit_archive a WHERE a.namespace = k.namespace \
                 AND a.remediation_name = k.remediation_name AND a.start_time = k.start_time) \
             ORDER BY start_time, namespace, remediation_name LIMIT ?6",
        )
        .bind(encode_time(since))
        .bind(encode_time(until))
        .bind(after.map(|a| encode_time(a.start_time)))
        .bind(after.map(|a| a.namespace.clone()))
        .bind(after.map(|a| a.remediation_name.clone()))
        .bind(i64::from(limit))
        .fetch_all(self.read_pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ChainRemediation {
                    start_time: time_column(row, "start_time")?,
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
        let start = encode_time(r.start_time);
        let rows = sqlx::query(
            "SELECT id, event_id, chain_seq, chain_key_id, chain_mac, event_time, overall_phase, record \
             FROM remediation_audit_events \
             WHERE namespace = ?1 AND remediation_name = ?2 AND start_time = ?3 ORDER BY id",
        )
        .bind(&r.namespace)
        .bind(&r.remediation_name)
        .bind(&start)
        .fetch_all(self.read_pool())
        .await?;
        let events = rows
            .iter()
            .map(|row| {
                Ok(EventColumns::from_row(row)?.into_event(
                    uuid_column(row, "event_id")?,
                    time_column(row, "event_time")?,
                ))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let head = sqlx::query(
            "SELECT last_seq, last_mac FROM remediation_chain_heads \
             WHERE namespace = ?1 AND remediation_name = ?2 AND start_time = ?3",
        )
        .bind(&r.namespace)
        .bind(&r.remediation_name)
        .bind(&start)
        .fetch_optional(self.read_pool())
        .await?
        .map(|row| {
            let mac: Option<Vec<u8>> = row.try_get("last_mac")?;
            Ok::<_, sqlx::Error>(head(r, row.try_get("last_seq")?, mac.as_deref()))
        })
        .transpose()?;
        Ok((events, head))
    }
}
