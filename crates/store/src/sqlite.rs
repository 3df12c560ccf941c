//! The SQLite store: the embedded default, for a quick start and small
//! installations. One process writes at a time; writes are serialised here.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::LazyLock;

use crate::AnalyticsQuery;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use remaudit_model::analytics::{
    DurationsReport, FailuresReport, RemediationList, RetriesReport, SuccessRateReport,
};
use remaudit_model::histogram::duration_bin;
use remaudit_model::{EventRecord, NewAudit, StoredAudit, supersedes_sql};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use tokio::sync::Mutex;
use tracing::instrument;
use uuid::Uuid;

use crate::admin_log::{Actor, delete_entry, hold_entry};
use crate::chain::link_events;
use crate::retention::{DeleteOutcome, RetentionPolicy};
use crate::store::{
    RemediationKey, SUMMARY_COLUMNS, StoredEvent, StoredRemediation, TimelinePage, backfill_hashes,
    check_schema, first_occurrences, judge, list_sql, outcomes, page, pool_stats, redact,
    remediation_key, summary_from_row,
};
use crate::{
    AnalyticsStore, AuditStore, Backfill, HealthStore, InsertOutcome, InsertRules, ListQuery, Page,
    PoolSettings, PoolStats, StoreError, Timeline, TimelineQuery,
};

mod admin_log;
mod analytics;
mod chain;
mod files;
mod retention;

/// This backend's name, in spans and [`HealthStore::backend`].
const BACKEND: &str = "sqlite";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// `upsert.sql` with its columns and values ([`summary_values_sql`]) and the
/// summary rule ([`supersedes_sql`]) written in.
static UPSERT_SQL: LazyLock<String> = LazyLock::new(|| {
    include_str!("sqlite/upsert.sql")
        .replace("__VALUES__", &summary_values_sql())
        .replace("__WINS__", &supersedes_sql("ra", "excluded"))
});

/// Declares once the columns a record writes into its summary row and the
/// value each is bound to: the `(columns) VALUES (?1, ...)` head of
/// `upsert.sql` and its binding are made from this one list.
macro_rules! summary_values {
    (|$r:ident, $now:ident, $policy:ident| $($name:ident = $value:expr;)*) => {
        /// `(column, ...) VALUES (?1, ...)`, in the order [`bind_summary`] binds.
        fn summary_values_sql() -> String {
            let names: &[&str] = &[$(stringify!($name)),*];
            let slots: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
            format!("({}) VALUES ({})", names.join(", "), slots.join(", "))
        }

        /// Binds record `r`'s summary values (written at `now`) to `upsert.sql`.
        fn bind_summary<'q>(
            query: SqliteQuery<'q>,
            $r: &'q NewAudit,
            $now: &str,
            $policy: &RetentionPolicy,
        ) -> SqliteQuery<'q> {
            query$(.bind($value))*
        }
    };
}

/// A statement for SQLite, its parameters still to bind.
type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

summary_values! { |r, now, policy|
    namespace = &r.namespace;
    alert_fingerprint = &r.alert_fingerprint;
    remediation_name = &r.remediation_name;
    overall_phase = &r.overall_phase;
    phase_rank = r.phase_rank.0;
    start_time = encode_time(r.start_time);
    completion_time = r.completion_time.map(encode_time);
    remediation_processing_name = &r.remediation_processing_name;
    ai_analysis_name = &r.ai_analysis_name;
    workflow_execution_name = &r.workflow_execution_name;
    kubernetes_execution_name = &r.kubernetes_execution_name;
    service_crd_statuses = &r.service_crd_statuses;
    timeout_phase = &r.timeout_phase;
    timeout_time = r.timeout_time.map(encode_time);
    failure_phase = &r.failure_phase;
    failure_reason = &r.failure_reason;
    duplicate_count = r.duplicate_count;
    last_duplicate_time = r.last_duplicate_time.map(encode_time);
    event_id = r.event_id.to_string();
    event_time = encode_time(r.event_time);
    created_at = now.to_owned();
    updated_at = now.to_owned();
    duration_us = r.duration_micros();
    duration_bin = r.duration_micros().map(duration_bin);
    retention_expiry_time = policy.expiry(r).map(encode_time);
}

/// The one text form of timestamps in SQLite; fixed width, so text order is time order.
pub(crate) fn encode_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

pub(crate) fn decode_time(s: &str) -> Result<DateTime<Utc>, sqlx::Error> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| sqlx::Error::Decode(format!("bad timestamp {s:?} in SQLite: {e}").into()))
}

pub(crate) fn time_column(row: &SqliteRow, column: &str) -> Result<DateTime<Utc>, sqlx::Error> {
    decode_time(&row.try_get::<String, _>(column)?)
}

fn uuid_column(row: &SqliteRow, column: &str) -> Result<Uuid, sqlx::Error> {
    Uuid::parse_str(&row.try_get::<String, _>(column)?)
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// Remediation audit records in a SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Listings and analytics: a pool of their own (read-only connections),
    /// so that slow reads never hold the connections writes need; `None` for
    /// an in-memory database, which another pool would not see.
    reads: Option<SqlitePool>,
    /// SQLite has one writer; taking turns here avoids busy errors.
    writer: Mutex<()>,
    policy: RetentionPolicy,
    /// One retention run at a time in this process (a lock file guards across processes).
    retention: Arc<Mutex<()>>,
}

impl SqliteStore {
    /// Opens (creating it, readable by its owner only, when missing) the
    /// database file, then applies pending migrations.
    ///
    /// # Errors
    /// When the URL is malformed, the file cannot be opened or a migration fails.
    pub async fn connect(url: &str, settings: PoolSettings) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("invalid SQLite URL {:?}: {e}", redact(url))))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // An acknowledged record must survive a power cut.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(settings.acquire_timeout);
        let file = database_file(&options);
        if let Some(path) = &file {
            files::create_private(path)?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options.clone())
            .await
            .map_err(|e| {
                StoreError::Config(format!(
                    "cannot open SQLite database {:?}: {e}; check that the directory exists and is writable",
                    redact(url)
                ))
            })?;
        MIGRATOR.run(&pool).await?;
        backfill_durations(&pool).await?;
        let reads = file.as_ref().map(|path| {
            files::tighten_companions(path);
            SqlitePoolOptions::new()
                .max_connections(settings.read_max_connections.max(1))
                .acquire_timeout(settings.acquire_timeout)
                .connect_lazy_with(options.pragma("query_only", "ON"))
        });
        Ok(Self {
            pool,
            reads,
            writer: Mutex::new(()),
            policy: RetentionPolicy::default(),
            retention: Arc::new(Mutex::new(())),
        })
    }

    /// The pool listings and analytics read through.
    #[must_use]
    pub fn read_pool(&self) -> &SqlitePool {
        self.reads.as_ref().unwrap_or(&self.pool)
    }

    /// The same store, writing expiry times by `policy`.
    #[must_use]
    pub fn with_policy(mut self, policy: RetentionPolicy) -> Self {
        self.policy = policy;
        self
    }
}

/// The database's file, or `None` for an in-memory database.
fn database_file(options: &SqliteConnectOptions) -> Option<std::path::PathBuf> {
    let path = options.get_filename();
    let name = path.as_os_str();
    (!name.is_empty() && name != ":memory:" && !name.to_string_lossy().starts_with("file:"))
        .then(|| path.to_owned())
}

/// Gives rows stored before durations were kept their duration and bin.
async fn backfill_durations(pool: &SqlitePool) -> Result<(), StoreError> {
    let rows = sqlx::query(
        "SELECT id, start_time, completion_time FROM remediation_audit \
         WHERE completion_time IS NOT NULL AND duration_us IS NULL",
    )
    .fetch_all(pool)
    .await?;
    if rows.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    for row in &rows {
        let id: i64 = row.try_get("id")?;
        let micros = (time_column(row, "completion_time")? - time_column(row, "start_time")?)
            .num_microseconds();
        sqlx::query(
            "UPDATE remediation_audit SET duration_us = ?1, duration_bin = ?2 WHERE id = ?3",
        )
        .bind(micros)
        .bind(micros.map(duration_bin))
        .bind(id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// What the live and archived events hold for `r`'s key.
async fn stored_event(
    conn: &mut sqlx::SqliteConnection,
    r: &NewAudit,
) -> Result<StoredEvent, StoreError> {
    let start_time = encode_time(r.start_time);
    let live: Option<Option<Vec<u8>>> = sqlx::query_scalar(
        "SELECT content_hash FROM remediation_audit_events WHERE event_id = ?1 AND start_time = ?2",
    )
    .bind(r.event_id.to_string())
    .bind(&start_time)
    .fetch_optional(&mut *conn)
    .await?;
    let archived: Option<Option<Vec<u8>>> = sqlx::query_scalar(
        "SELECT content_hash FROM remediation_audit_events_archive \
         WHERE namespace = ?1 AND remediation_name = ?2 AND start_time = ?3 AND event_id = ?4 LIMIT 1",
    )
    .bind(&r.namespace)
    .bind(&r.remediation_name)
    .bind(&start_time)
    .bind(r.event_id.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    Ok(StoredEvent { live, archived })
}

/// What is stored about one remediation; the event count stops at the cap.
async fn stored_remediation(
    conn: &mut sqlx::SqliteConnection,
    key: &RemediationKey,
    rules: &InsertRules,
) -> Result<StoredRemediation, StoreError> {
    let row = sqlx::query(
        "SELECT EXISTS (SELECT 1 FROM remediation_audit \
                  WHERE namespace = ?1 AND remediation_name = ?2 AND start_time = ?3) AS live, \
                EXISTS (SELECT 1 FROM remediation_audit_archive \
                  WHERE namespace = ?1 AND remediation_name = ?2 AND start_time = ?3) AS archived, \
                (SELECT count(*) FROM (SELECT 1 FROM remediation_audit_events \
                  WHERE namespace = ?1 AND remediation_name = ?2 AND start_time = ?3 LIMIT ?4)) AS events",
    )
    .bind(&key.0)
    .bind(&key.1)
    .bind(encode_time(key.2))
    .bind(i64::from(rules.max_events_per_remediation))
    .fetch_one(&mut *conn)
    .await?;
    Ok(StoredRemediation {
        live: row.try_get("live")?,
        archived: row.try_get("archived")?,
        events: u64::try_from(row.try_get::<i64, _>("events")?).unwrap_or(0),
    })
}

#[async_trait]
impl AuditStore for SqliteStore {
    #[instrument(skip_all, fields(backend = BACKEND, records = records.len()), err)]
    async fn insert_with(
        &self,
        records: &[NewAudit],
        rules: &InsertRules,
    ) -> Result<Vec<InsertOutcome>, StoreError> {
        let candidates = first_occurrences(records);
        let _turn = self.writer.lock().await;
        // The write lock from the start: what is read below stays true until commit.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut stored = Vec::with_capacity(candidates.len());
        for &i in &candidates {
            stored.push(stored_event(&mut tx, &records[i]).await?);
        }
        let mut remediations = HashMap::new();
        for key in records.iter().map(remediation_key).collect::<HashSet<_>>() {
            let state = stored_remediation(&mut tx, &key, rules).await?;
            remediations.insert(key, state);
        }
        let verdicts = judge(records, &candidates, &stored, &mut remediations, rules);
        let now = encode_time(Utc::now());
        let written: Vec<usize> = candidates
            .iter()
            .zip(&verdicts)
            .filter(|(_, verdict)| verdict.is_none())
            .map(|(&i, _)| i)
            .collect();
        let mut heads = chain::read_heads(&mut tx, written.iter().map(|&i| &records[i])).await?;
        let links = link_events(
            rules.chain.as_deref(),
            &mut heads,
            written.iter().map(|&i| &records[i]),
        );
        for (&i, link) in written.iter().zip(&links) {
            let r = &records[i];
            let start_time = encode_time(r.start_time);
            let event_time = encode_time(r.event_time);
            sqlx::query(
                "INSERT INTO remediation_audit_events \
                 (event_id, namespace, remediation_name, start_time, overall_phase, event_time, received_at, record, content_hash, \
                  chain_seq, chain_key_id, chain_mac) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )
            .bind(r.event_id.to_string())
            .bind(&r.namespace)
            .bind(&r.remediation_name)
            .bind(&start_time)
            .bind(&r.overall_phase)
            .bind(&event_time)
            .bind(&now)
            .bind(r.raw.clone())
            .bind(r.content_hash.as_slice())
            .bind(link.seq)
            .bind(link.key_id.as_deref())
            .bind(link.mac.as_deref())
            .execute(&mut *tx)
            .await?;
            bind_summary(
                sqlx::query(sqlx::AssertSqlSafe(UPSERT_SQL.as_str())),
                r,
                &now,
                &self.policy,
            )
            .execute(&mut *tx)
            .await?;
        }
        chain::write_heads(&mut tx, &heads).await?;
        tx.commit().await?;
        let first: Vec<InsertOutcome> = verdicts
            .into_iter()
            .map(|v| v.unwrap_or(InsertOutcome::Created))
            .collect();
        Ok(outcomes(records, &candidates, &first, &stored))
    }

    #[instrument(skip_all, fields(backend = BACKEND, limit = query.limit), err)]
    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        let mut qb = list_sql(query, encode_time);
        let rows = qb.build().fetch_all(self.read_pool()).await?;
        let items = rows
            .iter()
            .map(summary_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page(items, query.limit))
    }

    #[instrument(skip_all, fields(backend = BACKEND, id = id, limit = query.limit), err)]
    async fn timeline_page(
        &self,
        id: i64,
        query: &TimelineQuery,
    ) -> Result<Option<Timeline>, StoreError> {
        let sql = format!(
            "SELECT {SUMMARY_COLUMNS} FROM remediation_audit WHERE id = ?1 AND deleted_at IS NULL"
        );
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.read_pool())
            .await?
        else {
            return Ok(None);
        };
        let remediation = summary_from_row(&row)?;
        let mut rows = sqlx::query(
            "SELECT id, event_id, overall_phase, event_time, received_at, record \
             FROM remediation_audit_events \
             WHERE namespace = ?1 AND remediation_name = ?2 AND start_time = ?3 \
               AND (?4 IS NULL OR (event_time, id) > (?4, ?5)) \
             ORDER BY event_time, id LIMIT ?6",
        )
        .bind(&remediation.namespace)
        .bind(&remediation.remediation_name)
        .bind(encode_time(remediation.start_time))
        .bind(query.after.map(|c| encode_time(c.event_time)))
        .bind(query.after.map_or(0, |c| c.id))
        .bind(i64::from(query.limit) + 1)
        .fetch(self.read_pool());
        let mut page = TimelinePage::new(query.limit);
        while let Some(row) = rows.try_next().await? {
            let record: String = row.try_get("record")?;
            let event = EventRecord {
                event_id: uuid_column(&row, "event_id")?,
                overall_phase: row.try_get("overall_phase")?,
                event_time: time_column(&row, "event_time")?,
                received_at: time_column(&row, "received_at")?,
                record: serde_json::from_str(&record)
                    .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            };
            if !page.push(row.try_get("id")?, event, record.len()) {
                break;
            }
        }
        let (events, next) = page.finish();
        Ok(Some(Timeline {
            remediation,
            events,
            next,
        }))
    }

    #[instrument(skip_all, fields(backend = BACKEND, id = id, hold = hold), err)]
    async fn set_legal_hold(
        &self,
        id: i64,
        hold: bool,
        actor: &Actor,
    ) -> Result<Option<StoredAudit>, StoreError> {
        let sql = format!(
            "UPDATE remediation_audit SET legal_hold = ?2, updated_at = ?3 \
             WHERE id = ?1 AND deleted_at IS NULL RETURNING {SUMMARY_COLUMNS}"
        );
        let _turn = self.writer.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(hold)
            .bind(encode_time(Utc::now()))
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(None);
        };
        let row = summary_from_row(&row)?;
        admin_log::append(&mut tx, &hold_entry(actor, &row, hold)).await?;
        tx.commit().await?;
        Ok(Some(row))
    }

    #[instrument(skip_all, fields(backend = BACKEND, id = id), err)]
    async fn soft_delete(
        &self,
        id: i64,
        at: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<DeleteOutcome, StoreError> {
        let sql = format!(
            "UPDATE remediation_audit SET deleted_at = ?2, updated_at = ?2 \
             WHERE id = ?1 AND deleted_at IS NULL AND NOT legal_hold RETURNING {SUMMARY_COLUMNS}"
        );
        let _turn = self.writer.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(encode_time(at))
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = row {
            let gone = summary_from_row(&row)?;
            admin_log::append(&mut tx, &delete_entry(actor, &gone)).await?;
            tx.commit().await?;
            return Ok(DeleteOutcome::Deleted(Box::new(gone)));
        }
        tx.rollback().await?;
        let held: Option<bool> = sqlx::query_scalar(
            "SELECT legal_hold FROM remediation_audit WHERE id = ?1 AND deleted_at IS NULL",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match held {
            Some(true) => DeleteOutcome::Held,
            _ => DeleteOutcome::NotFound,
        })
    }

    #[instrument(skip_all, fields(backend = BACKEND, after = after, limit = limit), err)]
    async fn backfill_content_hashes(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Backfill, StoreError> {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT id, record FROM remediation_audit_events \
             WHERE content_hash IS NULL AND id > ?1 ORDER BY id LIMIT ?2",
        )
        .bind(after)
        .bind(i64::from(limit.max(1)))
        .fetch_all(self.read_pool())
        .await?;
        let (mut done, hashed) = backfill_hashes(
            rows.into_iter()
                .map(|(id, record)| (id, (), record))
                .collect(),
        );
        if !hashed.is_empty() {
            let _turn = self.writer.lock().await;
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            for (id, (), hash) in hashed {
                done.hashed += sqlx::query(
                    "UPDATE remediation_audit_events SET content_hash = ?1 \
                     WHERE id = ?2 AND content_hash IS NULL",
                )
                .bind(hash)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            tx.commit().await?;
        }
        Ok(done)
    }
}

#[async_trait]
impl AnalyticsStore for SqliteStore {
    #[instrument(skip_all, fields(backend = BACKEND, limit = query.limit), err)]
    async fn postmortem(&self, query: &AnalyticsQuery) -> Result<RemediationList, StoreError> {
        analytics::postmortem(self.read_pool(), query).await
    }

    #[instrument(skip_all, fields(backend = BACKEND, limit = query.limit), err)]
    async fn slowest(&self, query: &AnalyticsQuery) -> Result<RemediationList, StoreError> {
        analytics::slowest(self.read_pool(), query).await
    }

    #[instrument(skip_all, fields(backend = BACKEND), err)]
    async fn success_rate(&self, query: &AnalyticsQuery) -> Result<SuccessRateReport, StoreError> {
        analytics::success_rate_report(self.read_pool(), query).await
    }

    #[instrument(skip_all, fields(backend = BACKEND), err)]
    async fn durations(&self, query: &AnalyticsQuery) -> Result<DurationsReport, StoreError> {
        analytics::durations_report(self.read_pool(), query).await
    }

    #[instrument(skip_all, fields(backend = BACKEND, limit = query.limit), err)]
    async fn failures(&self, query: &AnalyticsQuery) -> Result<FailuresReport, StoreError> {
        analytics::failures_report(self.read_pool(), query).await
    }

    #[instrument(skip_all, fields(backend = BACKEND, limit = query.limit), err)]
    async fn retries(&self, query: &AnalyticsQuery) -> Result<RetriesReport, StoreError> {
        analytics::retries_report(self.read_pool(), query).await
    }
}

#[async_trait]
impl HealthStore for SqliteStore {
    #[instrument(skip_all, fields(backend = BACKEND), err)]
    async fn ready(&self) -> Result<(), StoreError> {
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await?;
        check_schema(applied, &MIGRATOR)
    }

    fn pool_stats(&self) -> PoolStats {
        match &self.reads {
            Some(reads) => pool_stats(&self.pool).plus(pool_stats(reads)),
            None => pool_stats(&self.pool),
        }
    }

    fn backend(&self) -> &'static str {
        BACKEND
    }

    #[instrument(skip_all, fields(backend = BACKEND))]
    async fn close(&self) {
        if let Some(reads) = &self.reads {
            reads.close().await;
        }
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upsert_binds_every_column_in_order() {
        let sql = summary_values_sql();
        assert!(sql.starts_with("(namespace, alert_fingerprint, "), "{sql}");
        assert!(
            sql.contains(", duration_bin, retention_expiry_time) VALUES (?1, ?2, "),
            "{sql}"
        );
        assert!(sql.ends_with(", ?24, ?25)"), "{sql}");
    }

    #[test]
    fn encoded_times_sort_as_instants() {
        let a: DateTime<Utc> = "2026-01-02T03:04:05.000001Z".parse().expect("valid");
        let b: DateTime<Utc> = "2026-01-02T03:04:05.1Z".parse().expect("valid");
        assert!(encode_time(a) < encode_time(b));
        assert_eq!(encode_time(a), "2026-01-02T03:04:05.000001Z");
        assert_eq!(decode_time(&encode_time(b)).expect("round trip"), b);
    }
}
