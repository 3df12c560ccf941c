//! The PostgreSQL store: the production backend.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::LazyLock;

use crate::AnalyticsQuery;
use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use futures::TryStreamExt;
use remaudit_model::analytics::{
    DurationsReport, FailuresReport, RemediationList, RetriesReport, SuccessRateReport,
};
use remaudit_model::histogram::duration_bin;
use remaudit_model::{EventRecord, NewAudit, StoredAudit};
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tracing::instrument;
use uuid::Uuid;

use crate::admin_log::{Actor, delete_entry, hold_entry};
use crate::chain::{Linked, link_events};
use crate::retention::{DeleteOutcome, RetentionPolicy};
use crate::store::{
    EventKey, RemediationKey, SUMMARY_COLUMNS, StoredEvent, StoredRemediation, TimelinePage,
    backfill_hashes, check_schema, event_key, first_occurrences, judge, list_sql, outcomes, page,
    pool_stats, redact, refuse_unknown_password_params, remediation_key, summary_from_row,
};
use crate::{
    AnalyticsStore, AuditStore, Backfill, HealthStore, InsertOutcome, InsertRules, ListQuery, Page,
    PoolSettings, PoolStats, StoreError, Timeline, TimelineQuery,
};

mod admin_log;
mod analytics;
mod chain;
pub(crate) mod projection;
mod retention;
mod weeks;

/// Hides a row (`$1` id, `$2` time) and takes it out of every rollup it was
/// counted in, the way `project.sql` counted it; the caller selects from `gone`.
const SOFT_DELETE_SQL: &str = include_str!("postgres/soft_delete.sql");

/// After a soft delete (`$1` start time, `$2` namespace, `$3` alert):
/// removes the rollup rows it brought to zero, so that reads show no empty
/// groups, and recomputes the alert's latest start in its buckets.
const EMPTY_ROLLUPS_SQL: &str = "WITH o AS (DELETE FROM remediation_rollup_outcomes \
      WHERE namespace IN ('', $2) AND bucket = date_trunc('hour', $1, 'UTC') AND remediations <= 0), \
    d AS (DELETE FROM remediation_rollup_durations WHERE bucket_hours IN (1, 24) AND namespace IN ('', $2) \
      AND bucket IN (date_trunc('hour', $1, 'UTC'), date_trunc('day', $1, 'UTC')) AND remediations <= 0), \
    a AS (DELETE FROM remediation_rollup_alerts WHERE bucket_days IN (1, 7) \
      AND bucket IN (date_bin('1 day', $1, TIMESTAMPTZ 'epoch'), date_bin('7 days', $1, TIMESTAMPTZ 'epoch')) \
      AND namespace = $2 AND alert_key = remaudit_alert_key($3) AND attempts <= 0), \
    l AS (UPDATE remediation_rollup_alerts r SET last_start = COALESCE((SELECT max(x.start_time) \
        FROM remediation_audit x WHERE x.alert_fingerprint = $3 AND x.namespace = $2 \
          AND x.deleted_at IS NULL AND x.start_time >= r.bucket \
          AND x.start_time < r.bucket + make_interval(days => r.bucket_days)), r.last_start) \
      WHERE bucket_days IN (1, 7) \
      AND bucket IN (date_bin('1 day', $1, TIMESTAMPTZ 'epoch'), date_bin('7 days', $1, TIMESTAMPTZ 'epoch')) \
      AND namespace = $2 AND alert_key = remaudit_alert_key($3) AND attempts > 0) \
    DELETE FROM remediation_rollup_failures WHERE bucket_days IN (1, 7) \
      AND bucket IN (date_bin('1 day', $1, TIMESTAMPTZ 'epoch'), date_bin('7 days', $1, TIMESTAMPTZ 'epoch')) \
      AND namespace = $2 AND alert_key = remaudit_alert_key($3) AND failures <= 0";

/// This backend's name, in spans and [`HealthStore::backend`].
const BACKEND: &str = "postgres";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// `insert.sql` with its `UNNEST` ([`unnest_sql`]) and the projection
/// queue's columns written in.
static INSERT_SQL: LazyLock<String> = LazyLock::new(|| {
    include_str!("postgres/insert.sql")
        .replace("__UNNEST__", &unnest_sql())
        .replace("__QUEUE_COLUMNS__", projection::QUEUE_COLUMNS)
});

/// Remediation audit records in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Listings and analytics: a pool of their own, with a statement timeout,
    /// so that slow reads never hold the connections writes need.
    reads: PgPool,
    policy: RetentionPolicy,
    /// The weeks whose partitions the write path knows are made.
    weeks: std::sync::Arc<weeks::WeekCover>,
    /// The background projector of the summary and rollups, woken by writes.
    projector: std::sync::Arc<projection::Projector>,
}

impl PgStore {
    /// Connects, then applies pending migrations.
    ///
    /// # Errors
    /// When the URL is malformed, the server unreachable or a migration fails.
    pub async fn connect(url: &str, settings: PoolSettings) -> Result<Self, StoreError> {
        refuse_unknown_password_params(url)?;
        let options = PgConnectOptions::from_str(url).map_err(|e| {
            StoreError::Config(format!("invalid PostgreSQL URL {:?}: {e}", redact(url)))
        })?;
        let where_ = format!("{}:{}", options.get_host(), options.get_port());
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options.clone())
            .await
            .map_err(|e| match StoreError::from(e) {
                StoreError::Unavailable(msg) => StoreError::Unavailable(format!(
                    "cannot reach PostgreSQL at {where_}: {msg}; is it running, and is the URL right? (--database-url / REMAUDIT_DATABASE_URL)"
                )),
                other => other,
            })?;
        let reads = read_pool(options, &settings);
        Self::with_pools(pool, reads, settings.read_statement_timeout).await
    }

    /// Wraps an existing pool, applying pending migrations and creating the
    /// weekly partitions around now. Reads get a pool of their own over the
    /// same connection options, sized and limited as [`PoolSettings::default`].
    ///
    /// # Errors
    /// When a migration fails.
    pub async fn from_pool(pool: PgPool) -> Result<Self, StoreError> {
        let settings = PoolSettings::default();
        let reads = read_pool(pool.connect_options().as_ref().clone(), &settings);
        Self::with_pools(pool, reads, settings.read_statement_timeout).await
    }

    /// `read_limit` bounds the reads' statements, and their wait for the
    /// projection too.
    async fn with_pools(
        pool: PgPool,
        reads: PgPool,
        read_limit: Option<std::time::Duration>,
    ) -> Result<Self, StoreError> {
        MIGRATOR.run(&pool).await?;
        // Weeks ahead exist even when no retention job runs here.
        let now = Utc::now();
        retention::ensure_partitions(&pool, now - TimeDelta::weeks(1), now + TimeDelta::weeks(5))
            .await?;
        let projector = projection::Projector::start(pool.clone(), read_limit);
        Ok(Self {
            pool,
            reads,
            policy: RetentionPolicy::default(),
            weeks: std::sync::Arc::default(),
            projector,
        })
    }

    /// The same store, writing expiry times by `policy`.
    #[must_use]
    pub fn with_policy(mut self, policy: RetentionPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The underlying pool, for tools that run their own SQL.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The pool listings and analytics read through.
    #[must_use]
    pub fn read_pool(&self) -> &PgPool {
        &self.reads
    }
}

/// The pool of reads: opened on first use (the main pool has just proved the
/// server reachable), every session with `statement_timeout` set, so that
/// PostgreSQL itself stops a read that runs too long even after the HTTP
/// request that asked for it has given up.
fn read_pool(options: PgConnectOptions, settings: &PoolSettings) -> PgPool {
    let options = match settings.read_statement_timeout {
        Some(limit) => options.options([(
            "statement_timeout",
            format!("{}ms", limit.as_millis().max(1)),
        )]),
        None => options,
    };
    PgPoolOptions::new()
        .max_connections(settings.read_max_connections.max(1))
        .acquire_timeout(settings.acquire_timeout)
        .connect_lazy_with(options)
}

/// Declares the batch's columns once: [`Columns`] (one array per column),
/// its filling from records, its binding, and the `UNNEST` of `insert.sql`
/// that reads the arrays back by name, so that the order of the binds and
/// of the statement's parameters cannot drift apart.
macro_rules! batch_columns {
    (|$r:ident, $policy:ident, $link:ident| $($name:ident: $ty:ty as $sql:literal = $value:expr;)*) => {
        /// The batch as column arrays, the shape `insert.sql` unnests.
        #[derive(Default)]
        struct Columns {
            $($name: Vec<$ty>,)*
        }

        impl Columns {
            fn push(&mut self, $r: &NewAudit, $policy: &RetentionPolicy, $link: &Linked) {
                $(self.$name.push($value);)*
            }

            /// Binds the arrays, in the order of [`unnest_sql`]'s parameters.
            fn bind(self, query: BatchQuery<'_>) -> BatchQuery<'_> {
                query$(.bind(self.$name))*
            }
        }

        /// `UNNEST($1::type[], ...) WITH ORDINALITY AS t(name, ..., ord)`
        /// over the arrays [`Columns::bind`] binds.
        fn unnest_sql() -> String {
            let types: &[&str] = &[$($sql),*];
            let names: &[&str] = &[$(stringify!($name)),*];
            let arrays: Vec<String> = types
                .iter()
                .enumerate()
                .map(|(i, ty)| format!("${}::{ty}[]", i + 1))
                .collect();
            format!(
                "UNNEST({}) WITH ORDINALITY AS t({}, ord)",
                arrays.join(", "),
                names.join(", ")
            )
        }
    };
}

/// The batch statement, its parameters still to bind.
type BatchQuery<'q> =
    sqlx::query::QueryAs<'q, sqlx::Postgres, EventKey, sqlx::postgres::PgArguments>;

batch_columns! { |r, policy, link|
    event_id: Uuid as "uuid" = r.event_id;
    namespace: String as "text" = r.namespace.clone();
    alert_fingerprint: String as "text" = r.alert_fingerprint.clone();
    remediation_name: String as "text" = r.remediation_name.clone();
    overall_phase: String as "text" = r.overall_phase.clone();
    phase_rank: i16 as "int2" = r.phase_rank.0;
    start_time: DateTime<Utc> as "timestamptz" = r.start_time;
    completion_time: Option<DateTime<Utc>> as "timestamptz" = r.completion_time;
    remediation_processing_name: Option<String> as "text" = r.remediation_processing_name.clone();
    ai_analysis_name: Option<String> as "text" = r.ai_analysis_name.clone();
    workflow_execution_name: Option<String> as "text" = r.workflow_execution_name.clone();
    kubernetes_execution_name: Option<String> as "text" = r.kubernetes_execution_name.clone();
    service_crd_statuses: Option<String> as "text" = r.service_crd_statuses.clone();
    timeout_phase: Option<String> as "text" = r.timeout_phase.clone();
    timeout_time: Option<DateTime<Utc>> as "timestamptz" = r.timeout_time;
    failure_phase: Option<String> as "text" = r.failure_phase.clone();
    failure_reason: Option<String> as "text" = r.failure_reason.clone();
    duplicate_count: i32 as "int4" = r.duplicate_count;
    last_duplicate_time: Option<DateTime<Utc>> as "timestamptz" = r.last_duplicate_time;
    event_time: DateTime<Utc> as "timestamptz" = r.event_time;
    record: String as "text" = r.raw.clone();
    duration_us: Option<i64> as "int8" = r.duration_micros();
    duration_bin: Option<i32> as "int4" = r.duration_micros().map(duration_bin);
    retention_expiry_time: Option<DateTime<Utc>> as "timestamptz" = policy.expiry(r);
    content_hash: Vec<u8> as "bytea" = r.content_hash.to_vec();
    chain_seq: i64 as "int8" = link.seq;
    chain_key_id: Option<String> as "text" = link.key_id.clone();
    chain_mac: Option<Vec<u8>> as "bytea" = link.mac.clone();
}

/// The first key of the advisory locks that serialise writers of one
/// remediation (the two-key form, apart from retention's one-key lock).
const REMEDIATION_LOCK_CLASS: i32 = 0x5241_5544;

/// Every table a batch reads or writes whose partitions retention creates,
/// detaches or attaches, locked before anything else, in one order: summary,
/// its archive, events, their archive. Retention takes its exclusive locks in
/// the same order (the partition function summary before events, the detach
/// `LOCK TABLE` likewise, the archive attach summary before events), so an
/// insert never holds one of them while it waits for another that retention
/// holds: retention waits for inserts in flight, inserts queue behind it, and
/// neither is ever cancelled as a deadlock victim.
const TABLE_LOCKS: &str = "LOCK TABLE remediation_audit, remediation_audit_archive, \
     remediation_audit_events, remediation_audit_events_archive IN ACCESS SHARE MODE";

/// The write transaction's start, one message: [`TABLE_LOCKS`], and generic
/// plans for its statements. Without that, PostgreSQL plans the big
/// `insert.sql` afresh for nearly every execution (the arrays bound to it
/// make each custom plan look cheaper than the generic one), and for the
/// one- or two-record transactions of single POSTs that planning was most
/// of the statement's cost: `scripts/bench-ingest` stored about twice as many
/// single-record transactions a second with generic plans
/// (docs/benchmarks.md §3).
static WRITE_START: LazyLock<String> =
    LazyLock::new(|| format!("SET LOCAL plan_cache_mode = force_generic_plan; {TABLE_LOCKS}"));

/// The second keys of the batch's remediation locks, sorted so that every
/// writer takes them in the same order. Two remediations may share a key:
/// that only makes their writers take turns.
fn remediation_locks(records: &[NewAudit]) -> Vec<i32> {
    sorted_locks(
        records
            .iter()
            .map(|r| remediation_lock(&r.namespace, &r.remediation_name, r.start_time)),
    )
}

/// The second key of one remediation's advisory lock. Ingest and row-wise
/// retention both take it, in [`sorted_locks`] order, before they touch the
/// remediation's rows.
fn remediation_lock(namespace: &str, remediation_name: &str, start_time: DateTime<Utc>) -> i32 {
    // FNV-1a: the same key in every process and version.
    let mut h: u32 = 0x811c_9dc5;
    let micros = start_time.timestamp_micros().to_le_bytes();
    for part in [namespace.as_bytes(), remediation_name.as_bytes(), &micros] {
        for &b in part.iter().chain(&[0xff]) {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
    }
    i32::from_ne_bytes(h.to_ne_bytes())
}

/// Lock keys sorted and without repeats: the order every writer takes them in.
fn sorted_locks(keys: impl Iterator<Item = i32>) -> Vec<i32> {
    let mut keys: Vec<i32> = keys.collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// What the live and archived events hold for the records at `indices`.
async fn stored_events(
    conn: &mut sqlx::PgConnection,
    records: &[NewAudit],
    indices: &[usize],
) -> Result<Vec<StoredEvent>, StoreError> {
    if indices.is_empty() {
        return Ok(Vec::new());
    }
    let pick = |f: &dyn Fn(&NewAudit) -> String| {
        indices.iter().map(|&i| f(&records[i])).collect::<Vec<_>>()
    };
    let ids: Vec<Uuid> = indices.iter().map(|&i| records[i].event_id).collect();
    let starts: Vec<DateTime<Utc>> = indices.iter().map(|&i| records[i].start_time).collect();
    // An empty hash stands for an event stored before hashes were kept.
    let rows = sqlx::query(
        "SELECT (SELECT coalesce(e.content_hash, '\\x'::bytea) FROM remediation_audit_events e \
                 WHERE e.event_id = i.event_id AND e.start_time = i.start_time) AS live, \
                (SELECT coalesce(a.content_hash, '\\x'::bytea) FROM remediation_audit_events_archive a \
                 WHERE a.namespace = i.namespace AND a.remediation_name = i.remediation_name \
                   AND a.start_time = i.start_time AND a.event_id = i.event_id LIMIT 1) AS archived \
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[]) WITH ORDINALITY \
              AS i(event_id, namespace, remediation_name, start_time, ord) \
         ORDER BY i.ord",
    )
    .bind(ids)
    .bind(pick(&|r| r.namespace.clone()))
    .bind(pick(&|r| r.remediation_name.clone()))
    .bind(starts)
    .fetch_all(&mut *conn)
    .await?;
    let hash = |h: Option<Vec<u8>>| h.map(|h| Some(h).filter(|h| !h.is_empty()));
    rows.iter()
        .map(|row| {
            Ok(StoredEvent {
                live: hash(row.try_get("live")?),
                archived: hash(row.try_get("archived")?),
            })
        })
        .collect()
}

/// What is stored about each remediation of the batch; event counts stop
/// at the cap, which is all the judgement needs.
async fn stored_remediations(
    conn: &mut sqlx::PgConnection,
    records: &[NewAudit],
    rules: &InsertRules,
) -> Result<HashMap<RemediationKey, StoredRemediation>, StoreError> {
    let keys: Vec<RemediationKey> = records
        .iter()
        .map(remediation_key)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let rows = sqlx::query(
        "SELECT EXISTS (SELECT 1 FROM remediation_audit r WHERE r.namespace = k.namespace \
                  AND r.remediation_name = k.remediation_name AND r.start_time = k.start_time) AS summary, \
                EXISTS (SELECT 1 FROM remediation_audit_events e WHERE e.namespace = k.namespace \
                  AND e.remediation_name = k.remediation_name AND e.start_time = k.start_time) AS events_live, \
                EXISTS (SELECT 1 FROM remediation_audit_archive a WHERE a.namespace = k.namespace \
                  AND a.remediation_name = k.remediation_name AND a.start_time = k.start_time) AS archived, \
                (SELECT count(*) FROM (SELECT 1 FROM remediation_audit_events e \
                  WHERE e.namespace = k.namespace AND e.remediation_name = k.remediation_name \
                    AND e.start_time = k.start_time LIMIT $4) AS capped) AS events \
         FROM UNNEST($1::text[], $2::text[], $3::timestamptz[]) WITH ORDINALITY \
              AS k(namespace, remediation_name, start_time, ord) \
         ORDER BY k.ord",
    )
    .bind(keys.iter().map(|k| k.0.clone()).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.1.clone()).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.2).collect::<Vec<_>>())
    .bind(i64::from(rules.max_events_per_remediation))
    .fetch_all(&mut *conn)
    .await?;
    keys.into_iter()
        .zip(&rows)
        .map(|(key, row)| {
            Ok((
                key,
                StoredRemediation {
                    // Live: a summary row, or events the projector has
                    // not yet made one of. Events whose summary row is in
                    // the archive (left behind by SQL run by hand) do not
                    // make the remediation live again.
                    live: row.try_get::<bool, _>("summary")?
                        || (row.try_get::<bool, _>("events_live")?
                            && !row.try_get::<bool, _>("archived")?),
                    archived: row.try_get("archived")?,
                    events: u64::try_from(row.try_get::<i64, _>("events")?).unwrap_or(0),
                },
            ))
        })
        .collect()
}

#[async_trait]
impl AuditStore for PgStore {
    #[instrument(skip_all, fields(backend = BACKEND, records = records.len()), err)]
    async fn insert_with(
        &self,
        records: &[NewAudit],
        rules: &InsertRules,
    ) -> Result<Vec<InsertOutcome>, StoreError> {
        let candidates = first_occurrences(records);
        // Before the transaction: making a week takes the tables a moment,
        // which this write's own table locks would hold against it.
        self.weeks
            .cover(
                &self.pool,
                self.policy.age,
                records.iter().map(|r| r.start_time),
            )
            .await;
        let mut tx = self.pool.begin().await?;
        // One writer per remediation at a time, new ones included, so that
        // the event count below stays true until this transaction commits.
        sqlx::query("SELECT pg_advisory_xact_lock($1, k) FROM UNNEST($2::int4[]) AS k")
            .bind(REMEDIATION_LOCK_CLASS)
            .bind(remediation_locks(records))
            .execute(&mut *tx)
            .await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(WRITE_START.as_str()))
            .execute(&mut *tx)
            .await?;
        let mut stored = stored_events(&mut tx, records, &candidates).await?;
        let mut remediations = stored_remediations(&mut tx, records, rules).await?;
        let verdicts = judge(records, &candidates, &stored, &mut remediations, rules);

        let written: Vec<usize> = candidates
            .iter()
            .zip(&verdicts)
            .filter(|(_, verdict)| verdict.is_none())
            .map(|(&i, _)| i)
            .collect();
        let heads = chain::read_heads(&mut tx, written.iter().map(|&i| &records[i])).await?;
        let mut moved = heads.clone();
        let links = link_events(
            rules.chain.as_deref(),
            &mut moved,
            written.iter().map(|&i| &records[i]),
        );
        let mut c = Columns::default();
        for (&i, link) in written.iter().zip(&links) {
            c.push(&records[i], &self.policy, link);
        }
        let created: HashSet<EventKey> = if written.is_empty() {
            HashSet::new()
        } else {
            c.bind(sqlx::query_as(sqlx::AssertSqlSafe(INSERT_SQL.as_str())))
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect()
        };
        // A key taken meanwhile by a record of another remediation (only an
        // explicit event_id can do that) is judged against what won.
        let lost: Vec<usize> = written
            .iter()
            .copied()
            .filter(|&i| !created.contains(&event_key(&records[i])))
            .collect();
        let winners = stored_events(&mut tx, records, &lost).await?;
        if !lost.is_empty() {
            // The lost records' places must not stay empty: link again
            // without them, and rewrite the links of what was stored.
            let kept: Vec<usize> = written
                .iter()
                .copied()
                .filter(|i| !lost.contains(i))
                .collect();
            moved = heads;
            let links = link_events(
                rules.chain.as_deref(),
                &mut moved,
                kept.iter().map(|&i| &records[i]),
            );
            chain::relink(&mut tx, kept.iter().map(|&i| &records[i]), &links).await?;
        }
        chain::write_heads(&mut tx, &moved).await?;
        tx.commit().await?;
        if !created.is_empty() {
            self.projector.queued();
            self.projector.keep_pace().await;
        }

        let mut winners: HashMap<usize, StoredEvent> = lost.into_iter().zip(winners).collect();
        let mut first = Vec::with_capacity(candidates.len());
        for ((&i, verdict), event) in candidates.iter().zip(verdicts).zip(&mut stored) {
            first.push(match (verdict, winners.remove(&i)) {
                (Some(outcome), _) => outcome,
                (None, None) => InsertOutcome::Created,
                (None, Some(winner)) => {
                    let same = winner.live.as_ref().is_none_or(|h| {
                        h.as_ref()
                            .is_none_or(|h| h.as_slice() == records[i].content_hash.as_slice())
                    });
                    *event = winner;
                    if same {
                        InsertOutcome::Duplicate
                    } else {
                        InsertOutcome::Conflict
                    }
                }
            });
        }
        Ok(outcomes(records, &candidates, &first, &stored))
    }

    #[instrument(skip_all, fields(backend = BACKEND), err)]
    async fn settle(&self) -> Result<(), StoreError> {
        self.projector.settle(&self.pool).await
    }

    #[instrument(skip_all, fields(backend = BACKEND, limit = query.limit), err)]
    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        self.projector.settle(&self.pool).await?;
        let mut qb = list_sql(query, |t| t);
        let rows = qb.build().fetch_all(&self.reads).await?;
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
        self.projector.settle(&self.pool).await?;
        let sql = format!(
            "SELECT {SUMMARY_COLUMNS} FROM remediation_audit WHERE id = $1 AND deleted_at IS NULL"
        );
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.reads)
            .await?
        else {
            return Ok(None);
        };
        let remediation = summary_from_row(&row)?;
        let mut rows = sqlx::query(
            "SELECT id, event_id, overall_phase, event_time, received_at, record::text AS record \
             FROM remediation_audit_events \
             WHERE namespace = $1 AND remediation_name = $2 AND start_time = $3 \
               AND ($4::timestamptz IS NULL OR (event_time, id) > ($4, $5)) \
             ORDER BY event_time, id LIMIT $6",
        )
        .bind(&remediation.namespace)
        .bind(&remediation.remediation_name)
        .bind(remediation.start_time)
        .bind(query.after.map(|c| c.event_time))
        .bind(query.after.map_or(0, |c| c.id))
        .bind(i64::from(query.limit) + 1)
        .fetch(&self.reads);
        let mut page = TimelinePage::new(query.limit);
        while let Some(row) = rows.try_next().await? {
            let record: String = row.try_get("record")?;
            let event = EventRecord {
                event_id: row.try_get("event_id")?,
                overall_phase: row.try_get("overall_phase")?,
                event_time: row.try_get("event_time")?,
                received_at: row.try_get("received_at")?,
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
        self.projector.settle(&self.pool).await?;
        let sql = format!(
            "UPDATE remediation_audit SET legal_hold = $2, updated_at = now() \
             WHERE id = $1 AND deleted_at IS NULL RETURNING {SUMMARY_COLUMNS}"
        );
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(hold)
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
        self.projector.settle(&self.pool).await?;
        let sql = format!("{SOFT_DELETE_SQL} SELECT {SUMMARY_COLUMNS} FROM gone");
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(at)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = row {
            let gone = summary_from_row(&row)?;
            sqlx::query(EMPTY_ROLLUPS_SQL)
                .bind(gone.start_time)
                .bind(&gone.namespace)
                .bind(&gone.alert_fingerprint)
                .execute(&mut *tx)
                .await?;
            admin_log::append(&mut tx, &delete_entry(actor, &gone)).await?;
            tx.commit().await?;
            return Ok(DeleteOutcome::Deleted(Box::new(gone)));
        }
        tx.rollback().await?;
        let held: Option<bool> = sqlx::query_scalar(
            "SELECT legal_hold FROM remediation_audit WHERE id = $1 AND deleted_at IS NULL",
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
        let rows: Vec<(i64, DateTime<Utc>, String)> = sqlx::query_as(
            "SELECT id, start_time, record::text FROM remediation_audit_events \
             WHERE content_hash IS NULL AND id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit.max(1)))
        .fetch_all(&self.pool)
        .await?;
        let (mut done, hashed) = backfill_hashes(rows);
        let (mut ids, mut starts, mut hashes) = (Vec::new(), Vec::new(), Vec::new());
        for (id, start, hash) in hashed {
            ids.push(id);
            starts.push(start);
            hashes.push(hash);
        }
        if !ids.is_empty() {
            done.hashed = sqlx::query(
                "UPDATE remediation_audit_events e SET content_hash = u.hash \
                 FROM UNNEST($1::bigint[], $2::timestamptz[], $3::bytea[]) AS u(id, start_time, hash) \
                 WHERE e.id = u.id AND e.start_time = u.start_time AND e.content_hash IS NULL",
            )
            .bind(&ids)
            .bind(&starts)
            .bind(&hashes)
            .execute(&self.pool)
            .await?
            .rows_affected();
        }
        Ok(done)
    }
}

#[async_trait]
impl AnalyticsStore for PgStore {
    #[instrument(skip_all, fields(backend = BACKEND, limit = query.limit), err)]
    async fn postmortem(&self, query: &AnalyticsQuery) -> Result<RemediationList, StoreError> {
        self.projector.settle(&self.pool).await?;
        analytics::postmortem(&self.reads, query).await
    }

    #[instrument(skip_all, fields(backend = BACKEND, limit = query.limit), err)]
    async fn slowest(&self, query: &AnalyticsQuery) -> Result<RemediationList, StoreError> {
        self.projector.settle(&self.pool).await?;
        analytics::slowest(&self.reads, query).await
    }

    #[instrument(skip_all, fields(backend = BACKEND), err)]
    async fn success_rate(&self, query: &AnalyticsQuery) -> Result<SuccessRateReport, StoreError> {
        self.projector.settle(&self.pool).await?;
        analytics::success_rate_report(&self.reads, query).await
    }

    #[instrument(skip_all, fields(backend = BACKEND), err)]
    async fn durations(&self, query: &AnalyticsQuery) -> Result<DurationsReport, StoreError> {
        self.projector.settle(&self.pool).await?;
        analytics::durations_report(&self.reads, query).await
    }

    #[instrument(skip_all, fields(backend = BACKEND, limit = query.limit), err)]
    async fn failures(&self, query: &AnalyticsQuery) -> Result<FailuresReport, StoreError> {
        self.projector.settle(&self.pool).await?;
        analytics::failures_report(&self.reads, query).await
    }

    #[instrument(skip_all, fields(backend = BACKEND, limit = query.limit), err)]
    async fn retries(&self, query: &AnalyticsQuery) -> Result<RetriesReport, StoreError> {
        self.projector.settle(&self.pool).await?;
        analytics::retries_report(&self.reads, query).await
    }
}

#[async_trait]
impl HealthStore for PgStore {
    #[instrument(skip_all, fields(backend = BACKEND), err)]
    async fn ready(&self) -> Result<(), StoreError> {
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await?;
        check_schema(applied, &MIGRATOR)
    }

    fn pool_stats(&self) -> PoolStats {
        pool_stats(&self.pool).plus(pool_stats(&self.reads))
    }

    fn backend(&self) -> &'static str {
        BACKEND
    }

    #[instrument(skip_all, fields(backend = BACKEND))]
    async fn close(&self) {
        self.reads.close().await;
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_batch_unnest_reads_every_bound_array_by_name() {
        let sql = super::unnest_sql();
        assert!(
            sql.starts_with("UNNEST($1::uuid[], $2::text[], $3::text[]"),
            "{sql}"
        );
        assert!(sql.contains(", $25::bytea[], $26::int8[], $27::text[], $28::bytea[]) WITH ORDINALITY AS t(event_id, namespace, "));
        assert!(
            sql.ends_with(", content_hash, chain_seq, chain_key_id, chain_mac, ord)"),
            "{sql}"
        );
    }
}
