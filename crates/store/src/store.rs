//! The storage contract shared by both backends.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use remaudit_model::analytics::{
    DurationsReport, FailuresReport, RemediationList, RetriesReport, SuccessRateReport,
};
use remaudit_model::{EventRecord, NewAudit, StoredAudit};

use sqlx::{Database, Encode, QueryBuilder, Type};

use crate::admin_log::{Actor, AdminLogStore};
use crate::analytics::AnalyticsQuery;
use crate::chain::ChainStore;
use crate::retention::{DeleteOutcome, RetentionStore};
use crate::{PgStore, RetentionPolicy, SqliteStore, StoreError};

/// What happened to one record of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    /// The record was new and is now stored.
    Created,
    /// A record with the same `(event_id, start_time)` and the same content
    /// was already stored (or came earlier in the batch); nothing changed.
    Duplicate,
    /// A record with the same `(event_id, start_time)` but other content was
    /// already stored (or came earlier in the batch); this one was not stored.
    Conflict,
    /// The record breaks a rule that depends on what is stored; not stored.
    Refused(Refusal),
}

/// Why the store refused a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its remediation was archived by retention; it would come back as a
    /// new live row that never expires.
    Archived,
    /// It would start a new live row for a remediation older than
    /// [`InsertRules::refuse_new_before`].
    Retention,
    /// Its remediation already has [`InsertRules::max_events_per_remediation`] events.
    MaxEvents,
}

/// Most timeline events one remediation may have, unless configured otherwise.
pub const DEFAULT_MAX_EVENTS_PER_REMEDIATION: u32 = 1000;

/// Rules of a write that depend on what is already stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsertRules {
    /// Most events one remediation may have; records past it are refused
    /// ([`Refusal::MaxEvents`]). Checked while the remediation is locked, so
    /// concurrent writes cannot overshoot it.
    pub max_events_per_remediation: u32,
    /// When set, a record that would create a new live row and started
    /// before this instant is refused ([`Refusal::Retention`]): retention
    /// would find it already due. Records of live rows are not affected.
    pub refuse_new_before: Option<DateTime<Utc>>,
    /// The chain keys new events are signed with; `None` runs unchained
    /// (events still get their sequence number, without a MAC).
    pub chain: Option<Arc<remaudit_model::chain::KeyRing>>,
}

impl Default for InsertRules {
    fn default() -> Self {
        Self {
            max_events_per_remediation: DEFAULT_MAX_EVENTS_PER_REMEDIATION,
            refuse_new_before: None,
            chain: None,
        }
    }
}

/// Position in a listing: the last row of the previous page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// `start_time` of that row.
    pub start_time: DateTime<Utc>,
    /// `id` of that row.
    pub id: i64,
}

impl Cursor {
    /// Renders the cursor as an opaque URL-safe token.
    #[must_use]
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "{}:{}",
            self.start_time.timestamp_micros(),
            self.id
        ))
    }

    /// Reads a token made by [`Cursor::encode`]; `None` when it is not one.
    #[must_use]
    pub fn decode(token: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let (micros, id) = text.split_once(':')?;
        Some(Self {
            start_time: DateTime::from_timestamp_micros(micros.parse().ok()?)?,
            id: id.parse().ok()?,
        })
    }
}

/// Filters and paging of a listing; newest `start_time` first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Only this alert.
    pub alert_fingerprint: Option<String>,
    /// Only remediations whose current phase is this one.
    pub overall_phase: Option<String>,
    /// Only this namespace.
    pub namespace: Option<String>,
    /// Only remediations with this name.
    pub remediation_name: Option<String>,
    /// Only remediations that started at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only remediations that started before this time.
    pub until: Option<DateTime<Utc>>,
    /// Continue after this row.
    pub after: Option<Cursor>,
    /// Page size.
    pub limit: u32,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The rows.
    pub items: Vec<StoredAudit>,
    /// Where the next page starts, when there may be one.
    pub next: Option<Cursor>,
}

/// Position in a timeline: the last event of the previous page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimelineCursor {
    /// `event_time` of that event.
    pub event_time: DateTime<Utc>,
    /// Row id of that event.
    pub id: i64,
}

impl TimelineCursor {
    /// Renders the cursor as an opaque URL-safe token.
    #[must_use]
    pub fn encode(&self) -> String {
        Cursor {
            start_time: self.event_time,
            id: self.id,
        }
        .encode()
    }

    /// Reads a token made by [`TimelineCursor::encode`]; `None` when it is not one.
    #[must_use]
    pub fn decode(token: &str) -> Option<Self> {
        Cursor::decode(token).map(|c| Self {
            event_time: c.start_time,
            id: c.id,
        })
    }
}

/// Which page of a timeline to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimelineQuery {
    /// Continue after this event.
    pub after: Option<TimelineCursor>,
    /// Most events on the page.
    pub limit: u32,
}

impl Default for TimelineQuery {
    fn default() -> Self {
        Self {
            after: None,
            limit: 100,
        }
    }
}

/// Most bytes of stored records one timeline page carries: a page ends early
/// (with a cursor) rather than pass it, though it always holds one event.
pub const TIMELINE_PAGE_BYTES: usize = 2 * 1024 * 1024;

/// A remediation and one page of the transitions recorded for it, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    /// The summary row.
    pub remediation: StoredAudit,
    /// The transitions, by event time.
    pub events: Vec<EventRecord>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<TimelineCursor>,
}

/// Collects one timeline page from events read in order, `limit + 1` at most.
pub(crate) struct TimelinePage {
    limit: usize,
    events: Vec<EventRecord>,
    last_id: i64,
    bytes: usize,
    next: Option<TimelineCursor>,
}

impl TimelinePage {
    pub(crate) fn new(limit: u32) -> Self {
        Self {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            events: Vec::new(),
            last_id: 0,
            bytes: 0,
            next: None,
        }
    }

    /// Adds the next event (row `id`, its record `bytes` long); `false` when
    /// the page is full, so that reading stops: the event is left for the
    /// next page, which the cursor now points to.
    pub(crate) fn push(&mut self, id: i64, event: EventRecord, bytes: usize) -> bool {
        let full = self.events.len() >= self.limit
            || (!self.events.is_empty() && self.bytes + bytes > TIMELINE_PAGE_BYTES);
        if full {
            self.next = self.events.last().map(|last| TimelineCursor {
                event_time: last.event_time,
                id: self.last_id,
            });
            return false;
        }
        self.bytes += bytes;
        self.last_id = id;
        self.events.push(event);
        true
    }

    pub(crate) fn finish(self) -> (Vec<EventRecord>, Option<TimelineCursor>) {
        (self.events, self.next)
    }
}

/// Connection pool figures, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Open connections.
    pub size: u32,
    /// Open connections not in use.
    pub idle: u32,
    /// The most connections the pool may open.
    pub max: u32,
}

impl PoolStats {
    /// The figures of two pools together.
    #[must_use]
    pub fn plus(self, other: Self) -> Self {
        Self {
            size: self.size + other.size,
            idle: self.idle + other.idle,
            max: self.max + other.max,
        }
    }
}

/// Connection pool settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Most connections of the main pool: writes, timelines, retention and health checks.
    pub max_connections: u32,
    /// How long a request waits for a connection before the database counts as unavailable.
    pub acquire_timeout: Duration,
    /// Most connections of the separate pool that listings and analytics read
    /// through, so that slow reads never hold the connections writes need.
    pub read_max_connections: u32,
    /// Longest one read statement may run on PostgreSQL before the server
    /// cancels it (`statement_timeout`); `None` for no limit. SQLite has no such limit.
    pub read_statement_timeout: Option<Duration>,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(3),
            read_max_connections: 4,
            read_statement_timeout: Some(Duration::from_secs(28)),
        }
    }
}

/// The audit trail itself: writing records, reading them back, and the
/// operator's writes on a remediation (legal hold, soft delete).
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// [`AuditStore::insert_with`] under the default [`InsertRules`].
    async fn insert(&self, records: &[NewAudit]) -> Result<Vec<InsertOutcome>, StoreError> {
        self.insert_with(records, &InsertRules::default()).await
    }

    /// Stores records: each one's event once, and the summary of its
    /// remediation, which never moves backwards (on PostgreSQL through the
    /// projection queue, which every read applies first). One outcome per record, in
    /// order. An event is identified by `(event_id, start_time)`: a record
    /// repeating a stored (or earlier in the batch) key is a duplicate when
    /// its content hash matches (or the stored event has none), a conflict
    /// otherwise. A record that would bring back an archived remediation, or
    /// breaks `rules`, is refused. The whole batch is one transaction.
    async fn insert_with(
        &self,
        records: &[NewAudit],
        rules: &InsertRules,
    ) -> Result<Vec<InsertOutcome>, StoreError>;

    /// Applies every write acknowledged so far to the summary and the
    /// rollups. Reads do this themselves; it is for what reads the tables
    /// directly. A no-op where writes apply them inline (SQLite).
    async fn settle(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Lists summary rows, newest first.
    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError>;

    /// One remediation by id, with the first page of its timeline.
    async fn timeline(&self, id: i64) -> Result<Option<Timeline>, StoreError> {
        self.timeline_page(id, &TimelineQuery::default()).await
    }

    /// One remediation by id, with one page of its timeline (at most
    /// `query.limit` events and about [`TIMELINE_PAGE_BYTES`] of records).
    async fn timeline_page(
        &self,
        id: i64,
        query: &TimelineQuery,
    ) -> Result<Option<Timeline>, StoreError>;

    /// Sets or clears the legal hold of a remediation; `None` when there is
    /// no such (live) row. The admin log gets `actor`'s entry (`hold` or
    /// `release`) in the same transaction; a call that finds no row records
    /// nothing.
    async fn set_legal_hold(
        &self,
        id: i64,
        hold: bool,
        actor: &Actor,
    ) -> Result<Option<StoredAudit>, StoreError>;

    /// Soft-deletes a remediation: hidden from every read at once, archived
    /// by the next retention run. The admin log gets `actor`'s `delete` entry
    /// in the same transaction; a held or missing row records nothing.
    async fn soft_delete(
        &self,
        id: i64,
        at: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<DeleteOutcome, StoreError>;

    /// Gives up to `limit` live events stored without a content hash (before
    /// migration 0005), with row ids past `after`, the hash their record has
    /// today, so that a key they hold reused with other content is a
    /// `conflict` rather than a silent duplicate.
    async fn backfill_content_hashes(&self, after: i64, limit: u32)
    -> Result<Backfill, StoreError>;
}

/// Read-only figures computed over the stored remediations.
#[async_trait]
pub trait AnalyticsStore: Send + Sync + 'static {
    /// Every remediation of one alert in the window, newest first.
    async fn postmortem(&self, query: &AnalyticsQuery) -> Result<RemediationList, StoreError>;

    /// The remediations that took longest, longest first.
    async fn slowest(&self, query: &AnalyticsQuery) -> Result<RemediationList, StoreError>;

    /// Outcome counts and success rate, overall and, with a bucket, as a series.
    async fn success_rate(&self, query: &AnalyticsQuery) -> Result<SuccessRateReport, StoreError>;

    /// Duration figures by final phase.
    async fn durations(&self, query: &AnalyticsQuery) -> Result<DurationsReport, StoreError>;

    /// Failures and timeouts by the phase where they happened, most common first.
    async fn failures(&self, query: &AnalyticsQuery) -> Result<FailuresReport, StoreError>;

    /// Alerts remediated more than once, most attempts first.
    async fn retries(&self, query: &AnalyticsQuery) -> Result<RetriesReport, StoreError>;
}

/// The store as a running service: readiness, pool figures, backend, shutdown.
#[async_trait]
pub trait HealthStore: Send + Sync + 'static {
    /// Succeeds when the database answers and its schema is current.
    async fn ready(&self) -> Result<(), StoreError>;

    /// Connection pool figures.
    fn pool_stats(&self) -> PoolStats;

    /// `postgres` or `sqlite`.
    fn backend(&self) -> &'static str;

    /// Closes the pool, waiting for connections in use to be returned.
    async fn close(&self);
}

/// Where remediation audit records live: every role of the store at once.
///
/// Implemented for every type that implements the role traits; consumers
/// that need one role take that trait instead (an `Arc<dyn Store>` coerces
/// to `Arc<dyn AuditStore>` and the others).
pub trait Store:
    AuditStore + AnalyticsStore + RetentionStore + AdminLogStore + HealthStore + ChainStore
{
}

impl<
    T: AuditStore
        + AnalyticsStore
        + RetentionStore
        + AdminLogStore
        + HealthStore
        + ChainStore
        + ?Sized,
> Store for T
{
}

/// What one round of [`AuditStore::backfill_content_hashes`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backfill {
    /// Events that now have a hash.
    pub hashed: u64,
    /// Events whose stored record no longer reads as a valid record; they
    /// keep no hash, and so still answer any replay of their key as a duplicate.
    pub unreadable: u64,
    /// The last row id looked at; `None` when no event was left.
    pub last_id: Option<i64>,
}

/// The content hash of a record stored as `text`, as ingest computes it
/// today, or `None` when the text is no longer a valid record.
pub(crate) fn stored_record_hash(text: &str) -> Option<Vec<u8>> {
    let audit: remaudit_model::RemediationOrchestrationAudit = serde_json::from_str(text).ok()?;
    audit.stored_content_hash().map(|h| h.to_vec())
}

/// One backfill round's events, `(row id, the row's key beside the id,
/// stored record)` in id order, split into the hashes to write and the
/// round's figures (`hashed` left for the caller to count as it writes).
pub(crate) fn backfill_hashes<K>(
    rows: Vec<(i64, K, String)>,
) -> (Backfill, Vec<(i64, K, Vec<u8>)>) {
    let mut done = Backfill {
        last_id: rows.last().map(|(id, _, _)| *id),
        ..Backfill::default()
    };
    let mut hashed = Vec::with_capacity(rows.len());
    for (id, key, record) in rows {
        match stored_record_hash(&record) {
            Some(hash) => hashed.push((id, key, hash)),
            None => done.unreadable += 1,
        }
    }
    (done, hashed)
}

/// Opens the store a URL names (`postgres://`, `postgresql://` or `sqlite://`)
/// and applies its migrations.
///
/// # Errors
/// [`StoreError::Config`] for an unknown scheme, [`StoreError::Unavailable`]
/// when the database cannot be reached, [`StoreError::Schema`] when migrations fail.
pub async fn connect(url: &str, pool: PoolSettings) -> Result<Arc<dyn Store>, StoreError> {
    connect_with(url, pool, RetentionPolicy::default()).await
}

/// [`connect`], with the retention policy that sets each row's expiry.
///
/// # Errors
/// As [`connect`].
pub async fn connect_with(
    url: &str,
    pool: PoolSettings,
    policy: RetentionPolicy,
) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(
            PgStore::connect(url, pool).await?.with_policy(policy),
        ))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(
            SqliteStore::connect(url, pool).await?.with_policy(policy),
        ))
    } else {
        Err(StoreError::Config(format!(
            "unsupported database URL {:?}: use postgres://USER@HOST:PORT/DB or sqlite://PATH",
            redact(url)
        )))
    }
}

/// A URL with any password replaced, fit for messages and logs: the one in
/// the user information (`user:PASSWORD@host`) and the value of every query
/// parameter whose name ends in `password`, in any case (`?password=`,
/// `&sslpassword=`).
#[must_use]
pub fn redact(url: &str) -> String {
    if !url.contains("://") {
        return redact_key_values(url);
    }
    let body = url.find("://").map_or(0, |s| s + 3);
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    if let Some(first_at) = url[body..].find('@').map(|i| body + i) {
        // The user information ends at the last `@` before the query, so a
        // password holding `@`, `/` or `?` is hidden whole.
        let limit = url[first_at..]
            .find('?')
            .map_or(url.len(), |i| first_at + i);
        let at = url[..limit].rfind('@').unwrap_or(first_at);
        if let Some((user, _)) = url[body..at].split_once(':') {
            out.push_str(&url[..body]);
            out.push_str(user);
            out.push_str(":***");
            rest = &url[at..];
        }
    }
    let Some((path, query)) = rest.split_once('?') else {
        out.push_str(rest);
        return out;
    };
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    out.push_str(path);
    out.push('?');
    for (i, param) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match param.split_once('=') {
            Some((name, _)) if name.to_ascii_lowercase().ends_with("password") => {
                out.push_str(name);
                out.push_str("=***");
            }
            _ => out.push_str(param),
        }
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// Refuses query parameters that look like a password but that the driver
/// does not take (`Password`, `sslpassword`): it would log them, value and
/// all, as unrecognised.
pub(crate) fn refuse_unknown_password_params(url: &str) -> Result<(), StoreError> {
    let Some((_, query)) = url.split_once('?') else {
        return Ok(());
    };
    let query = query.split('#').next().unwrap_or(query);
    for param in query.split('&') {
        let name = param.split('=').next().unwrap_or(param);
        if name != "password" && name.to_ascii_lowercase().ends_with("password") {
            return Err(StoreError::Config(format!(
                "database URL {:?} has a parameter {name:?} that is not supported: give the password as `password` (lower case) or in the user information (postgres://USER:PASSWORD@HOST/DB)",
                redact(url)
            )));
        }
    }
    Ok(())
}

/// The identity of an event.
pub(crate) type EventKey = (uuid::Uuid, DateTime<Utc>);

/// The identity of a remediation: namespace, name, start time.
pub(crate) type RemediationKey = (String, String, DateTime<Utc>);

/// `t` as both databases store it: to the microsecond.
pub(crate) fn stored_time(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// A record's event key as stored (start time to the microsecond).
pub(crate) fn event_key(r: &NewAudit) -> EventKey {
    (r.event_id, stored_time(r.start_time))
}

/// A record's remediation key as stored (start time to the microsecond).
pub(crate) fn remediation_key(r: &NewAudit) -> RemediationKey {
    (
        r.namespace.clone(),
        r.remediation_name.clone(),
        stored_time(r.start_time),
    )
}

/// The first occurrence of each `(event_id, start_time)`: indices to judge
/// against the database, in order; every later occurrence follows its first.
pub(crate) fn first_occurrences(records: &[NewAudit]) -> Vec<usize> {
    let mut seen = HashSet::with_capacity(records.len());
    (0..records.len())
        .filter(|&i| seen.insert(event_key(&records[i])))
        .collect()
}

/// What the database holds about one record's event.
#[derive(Debug, Default)]
#[allow(
    clippy::option_option,
    reason = "three states: no row, a row without a hash, a row with one"
)]
pub(crate) struct StoredEvent {
    /// The live event with the record's key: its hash, `None` when it predates hashes.
    pub live: Option<Option<Vec<u8>>>,
    /// An archived event of the record's remediation with its `event_id`.
    pub archived: Option<Option<Vec<u8>>>,
}

/// What the database holds about one remediation.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct StoredRemediation {
    /// A live summary row exists (soft-deleted ones included).
    pub live: bool,
    /// An archived summary row exists.
    pub archived: bool,
    /// Live events.
    pub events: u64,
}

/// Whether a record's content matches a stored hash; events stored before
/// hashes were kept match anything, as they did before.
fn same_content(record: &NewAudit, stored: Option<&Vec<u8>>) -> bool {
    stored.is_none_or(|h| h.as_slice() == record.content_hash.as_slice())
}

/// Judges each first occurrence (`candidates`, with what the database holds
/// for it in `stored`) in order: `Some(outcome)` when it is not to be
/// written, `None` when it is. `remediations` is updated as records are
/// accepted, so that the event cap counts the batch's own records too.
pub(crate) fn judge(
    records: &[NewAudit],
    candidates: &[usize],
    stored: &[StoredEvent],
    remediations: &mut HashMap<RemediationKey, StoredRemediation>,
    rules: &InsertRules,
) -> Vec<Option<InsertOutcome>> {
    let mut verdicts = Vec::with_capacity(candidates.len());
    for (&i, event) in candidates.iter().zip(stored) {
        let r = &records[i];
        let state = remediations.entry(remediation_key(r)).or_default();
        let verdict = if let Some(hash) = &event.live {
            Some(if same_content(r, hash.as_ref()) {
                InsertOutcome::Duplicate
            } else {
                InsertOutcome::Conflict
            })
        } else if !state.live && event.archived.is_some() {
            Some(
                if same_content(r, event.archived.as_ref().and_then(Option::as_ref)) {
                    InsertOutcome::Duplicate
                } else {
                    InsertOutcome::Conflict
                },
            )
        } else if !state.live && state.archived {
            Some(InsertOutcome::Refused(Refusal::Archived))
        } else if !state.live && rules.refuse_new_before.is_some_and(|t| r.start_time < t) {
            Some(InsertOutcome::Refused(Refusal::Retention))
        } else if state.events >= u64::from(rules.max_events_per_remediation) {
            Some(InsertOutcome::Refused(Refusal::MaxEvents))
        } else {
            state.live = true;
            state.events += 1;
            None
        };
        verdicts.push(verdict);
    }
    verdicts
}

/// Every record's outcome: first occurrences as `first` says; each later
/// occurrence of a key is judged against the stored event when there is one
/// (`stored`, as for its first), else against its first: the same content
/// is a `duplicate` (or refused as its first was), other content a `conflict`.
pub(crate) fn outcomes(
    records: &[NewAudit],
    candidates: &[usize],
    first: &[InsertOutcome],
    stored: &[StoredEvent],
) -> Vec<InsertOutcome> {
    let mut by_key: HashMap<EventKey, (usize, InsertOutcome, &StoredEvent)> = HashMap::new();
    for ((&i, &outcome), event) in candidates.iter().zip(first).zip(stored) {
        by_key.insert(event_key(&records[i]), (i, outcome, event));
    }
    records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let (j, outcome, event) = by_key[&event_key(r)];
            let kept = event.live.as_ref().or(event.archived.as_ref());
            if i == j {
                outcome
            } else if let Some(hash) = kept {
                if same_content(r, hash.as_ref()) {
                    InsertOutcome::Duplicate
                } else {
                    InsertOutcome::Conflict
                }
            } else if r.content_hash != records[j].content_hash {
                InsertOutcome::Conflict
            } else if outcome == InsertOutcome::Created {
                InsertOutcome::Duplicate
            } else {
                outcome
            }
        })
        .collect()
}

/// Columns of `remediation_audit` that make a [`StoredAudit`].
pub(crate) const SUMMARY_COLUMNS: &str = "id, namespace, alert_fingerprint, remediation_name, overall_phase, \
    start_time, completion_time, remediation_processing_name, ai_analysis_name, \
    workflow_execution_name, kubernetes_execution_name, service_crd_statuses, timeout_phase, \
    timeout_time, failure_phase, failure_reason, duplicate_count, last_duplicate_time, \
    retention_expiry_time, legal_hold, event_id, event_time, created_at, updated_at";

/// Decodes a summary row selected with [`SUMMARY_COLUMNS`], on either backend.
pub(crate) fn summary_from_row<'r, R: sqlx::Row>(row: &'r R) -> Result<StoredAudit, sqlx::Error>
where
    StoredAudit: sqlx::FromRow<'r, R>,
{
    <StoredAudit as sqlx::FromRow<R>>::from_row(row)
}

/// The listing query for `query`, with timestamps bound through `time`.
pub(crate) fn list_sql<DB, T>(
    query: &ListQuery,
    time: impl Fn(DateTime<Utc>) -> T,
) -> QueryBuilder<DB>
where
    DB: Database,
    DB::Arguments: Default,
    String: for<'t> Encode<'t, DB> + Type<DB>,
    i64: for<'t> Encode<'t, DB> + Type<DB>,
    T: for<'t> Encode<'t, DB> + Type<DB>,
{
    let mut qb = QueryBuilder::new(format!(
        "SELECT {SUMMARY_COLUMNS} FROM remediation_audit WHERE deleted_at IS NULL"
    ));
    for (column, value) in [
        ("alert_fingerprint", &query.alert_fingerprint),
        ("overall_phase", &query.overall_phase),
        ("namespace", &query.namespace),
        ("remediation_name", &query.remediation_name),
    ] {
        if let Some(v) = value {
            qb.push(format_args!(" AND {column} = "))
                .push_bind(v.clone());
        }
    }
    if let Some(v) = query.since {
        qb.push(" AND start_time >= ").push_bind(time(v));
    }
    if let Some(v) = query.until {
        qb.push(" AND start_time < ").push_bind(time(v));
    }
    if let Some(cursor) = query.after {
        qb.push(" AND (start_time, id) < (")
            .push_bind(time(cursor.start_time))
            .push(", ")
            .push_bind(cursor.id)
            .push(")");
    }
    qb.push(" ORDER BY start_time DESC, id DESC LIMIT ")
        .push_bind(i64::from(query.limit));
    qb
}

/// Cuts a page fetched with `LIMIT limit` into items and the next cursor.
pub(crate) fn page(items: Vec<StoredAudit>, limit: u32) -> Page {
    let full = u32::try_from(items.len()).is_ok_and(|n| n == limit) && limit > 0;
    let next = if full {
        items.last().map(|last| Cursor {
            start_time: last.start_time,
            id: last.id,
        })
    } else {
        None
    };
    Page { items, next }
}

/// Fails when the database's schema is behind this build.
pub(crate) fn check_schema(
    applied: Option<i64>,
    migrator: &sqlx::migrate::Migrator,
) -> Result<(), StoreError> {
    let expected = migrator.iter().map(|m| m.version).max();
    if applied < expected {
        return Err(StoreError::Schema(format!(
            "migrations not applied: database at {applied:?}, this build expects {expected:?}; run `remaudit migrate`"
        )));
    }
    Ok(())
}

pub(crate) fn pool_stats<DB: sqlx::Database>(pool: &sqlx::Pool<DB>) -> PoolStats {
    PoolStats {
        size: pool.size(),
        idle: u32::try_from(pool.num_idle()).unwrap_or(u32::MAX),
        max: pool.options().get_max_connections(),
    }
}

/// A key/value connection string (`host=h password=x`) with every
/// `*password` value, quoted or not, replaced by `***`.
fn redact_key_values(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(eq) = rest.find('=') {
        let key = &rest[..eq];
        let name = key.rsplit(char::is_whitespace).next().unwrap_or(key);
        out.push_str(key);
        out.push('=');
        let value = &rest[eq + 1..];
        let end = match value.strip_prefix('\'') {
            Some(quoted) => quoted.find('\'').map_or(value.len(), |i| i + 2),
            None => value.find(char::is_whitespace).unwrap_or(value.len()),
        };
        if name.to_ascii_lowercase().ends_with("password") {
            out.push_str("***");
        } else {
            out.push_str(&value[..end]);
        }
        rest = &value[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let cursor = Cursor {
            start_time: DateTime::from_timestamp_micros(1_764_000_000_123_456).expect("valid"),
            id: 42,
        };
        assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
        assert_eq!(Cursor::decode("not a cursor!"), None);
        assert_eq!(Cursor::decode(&URL_SAFE_NO_PAD.encode("1:x")), None);
    }

    #[test]
    fn redact_hides_passwords_in_key_value_strings() {
        for (dsn, want) in [
            (
                "host=h password=s3cr3t dbname=x",
                "host=h password=*** dbname=x",
            ),
            (
                "host=h password='s3 cr3t' dbname=x",
                "host=h password=*** dbname=x",
            ),
            ("host=h sslpassword=s3cr3t", "host=h sslpassword=***"),
            ("host=h dbname=x", "host=h dbname=x"),
        ] {
            assert_eq!(redact(dsn), want, "{dsn}");
        }
    }

    #[test]
    fn redact_hides_passwords_only() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://a.db"), "sqlite://a.db");
        assert_eq!(
            redact("postgres://u@h/db?sslmode=require&application_name=x"),
            "postgres://u@h/db?sslmode=require&application_name=x"
        );
    }

    #[test]
    fn redact_hides_passwords_in_query_parameters() {
        for (url, want) in [
            (
                "postgres://u@h/db?password=secret",
                "postgres://u@h/db?password=***",
            ),
            (
                "postgres://h/db?sslmode=disable&PassWord=secret&application_name=a",
                "postgres://h/db?sslmode=disable&PassWord=***&application_name=a",
            ),
            (
                "postgresql://u:one@h/db?sslpassword=two#frag",
                "postgresql://u:***@h/db?sslpassword=***#frag",
            ),
            // A typo in the scheme still hides it (the "unsupported URL" error).
            (
                "postgress://h/db?password=secret",
                "postgress://h/db?password=***",
            ),
            (
                "postgres://h/db?password=a@b",
                "postgres://h/db?password=***",
            ),
            ("postgres://h/db?password=", "postgres://h/db?password=***"),
        ] {
            let got = redact(url);
            assert_eq!(got, want, "{url}");
            assert!(!got.contains("secret"), "{got}");
        }
    }

    #[test]
    fn password_parameters_the_driver_would_log_are_refused() {
        assert!(
            refuse_unknown_password_params("postgres://h/db?password=x&sslmode=disable").is_ok()
        );
        assert!(refuse_unknown_password_params("postgres://u:p@h/db").is_ok());
        for url in [
            "postgres://h/db?Password=secret",
            "postgres://h/db?sslmode=disable&sslpassword=secret",
        ] {
            let err = refuse_unknown_password_params(url)
                .expect_err(url)
                .to_string();
            assert!(!err.contains("secret") && err.contains("=***"), "{err}");
        }
    }

    #[test]
    fn redact_hides_passwords_holding_url_delimiters() {
        for url in [
            "postgres://u:se@cr/et@h:5432/db",
            "postgres://u:se?cret@h/db",
            "postgres://u:s:ecret@h/db?password=secret",
        ] {
            let got = redact(url);
            assert!(
                !got.contains("cr") && !got.contains("ecret"),
                "{url} -> {got}"
            );
            assert!(got.starts_with("postgres://u:***@h"), "{url} -> {got}");
        }
    }
}
