//! The admin log: an append-only record of every legal hold set or cleared,
//! every soft delete and every retention run, with who, when, what and why.
//!
//! Hold, release and soft delete write their entry in the transaction that
//! makes the change ([`AuditStore::set_legal_hold`](crate::AuditStore::set_legal_hold)
//! and [`AuditStore::soft_delete`](crate::AuditStore::soft_delete) take the
//! [`Actor`]), so a crash never leaves a change without its entry or an entry
//! without its change; an action that changes nothing (no such row, a held
//! row) leaves no entry. Retention runs record theirs with
//! [`AdminLogStore::record_admin_action`]. Both backends refuse `UPDATE` and
//! `DELETE` of an entry with triggers (and `TRUNCATE` on PostgreSQL).

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use remaudit_model::StoredAudit;
pub use remaudit_model::admin::{AdminAction, AdminLogEntry};
use sqlx::{Database, Encode, QueryBuilder, Type};

use crate::StoreError;

/// Largest page of the admin log one read returns.
pub const MAX_ADMIN_LOG_PAGE: u32 = 1000;

/// Who acts, and why: what a hold, a release or a soft delete records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The authenticated subject (`anonymous` when the server runs without
    /// authentication).
    pub subject: String,
    /// Why, as the caller gave it; checked by the caller
    /// ([`remaudit_model::admin::check_reason`]); the database refuses an
    /// empty one.
    pub reason: String,
}

impl Actor {
    /// `subject` acting for `reason`.
    #[must_use]
    pub fn new(subject: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            subject: subject.into(),
            reason: reason.into(),
        }
    }
}

/// An entry to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAdminEntry {
    /// Who acted.
    pub actor: Actor,
    /// What they did.
    pub action: AdminAction,
    /// The remediation acted on; `None` for a retention run (and only then).
    pub target: Option<i64>,
    /// What the action touched, as a JSON object.
    pub detail: serde_json::Value,
}

/// Position in the admin log: the id of the last entry of the previous page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminLogCursor {
    /// That entry's id.
    pub id: i64,
}

impl AdminLogCursor {
    /// Renders the cursor as an opaque URL-safe token.
    #[must_use]
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("admin:{}", self.id))
    }

    /// Reads a token made by [`AdminLogCursor::encode`]; `None` when it is not one.
    #[must_use]
    pub fn decode(token: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let id = text.strip_prefix("admin:")?.parse().ok()?;
        Some(Self { id })
    }
}

/// Filters and paging of the admin log; newest entry first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminLogQuery {
    /// Only entries recorded at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only entries recorded before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only this subject's entries.
    pub subject: Option<String>,
    /// Only entries of this action.
    pub action: Option<AdminAction>,
    /// Only entries about this remediation.
    pub target: Option<i64>,
    /// Continue after this entry.
    pub after: Option<AdminLogCursor>,
    /// Page size, 1 to [`MAX_ADMIN_LOG_PAGE`] (larger values are cut to it).
    pub limit: u32,
}

impl Default for AdminLogQuery {
    fn default() -> Self {
        Self {
            since: None,
            until: None,
            subject: None,
            action: None,
            target: None,
            after: None,
            limit: 100,
        }
    }
}

/// One page of the admin log.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminLogPage {
    /// The entries, newest first.
    pub items: Vec<AdminLogEntry>,
    /// Where the next page starts, when there may be one.
    pub next: Option<AdminLogCursor>,
}

/// The append-only log of admin actions.
#[async_trait]
pub trait AdminLogStore: Send + Sync + 'static {
    /// Appends one entry and returns it as stored (with its id and time).
    /// Hold, release and soft delete record theirs themselves, in the
    /// transaction of their change; this is for actions outside a row's
    /// transaction, such as a retention run.
    async fn record_admin_action(&self, entry: &NewAdminEntry)
    -> Result<AdminLogEntry, StoreError>;

    /// One page of the log, newest first. Pages are cut by entry id, so
    /// entries appended while a reader pages never shift what it has still
    /// to read.
    async fn admin_log(&self, query: &AdminLogQuery) -> Result<AdminLogPage, StoreError>;
}

/// What an entry about remediation `row` keeps of it: enough to know which
/// remediation it was after retention has moved the row away.
pub(crate) fn row_detail(row: &StoredAudit) -> serde_json::Value {
    serde_json::json!({
        "namespace": row.namespace,
        "remediation_name": row.remediation_name,
        "alert_fingerprint": row.alert_fingerprint,
        "start_time": row.start_time,
    })
}

/// The entry a hold (`hold` true) or a release of `row` by `actor` appends.
pub(crate) fn hold_entry(actor: &Actor, row: &StoredAudit, hold: bool) -> NewAdminEntry {
    NewAdminEntry {
        actor: actor.clone(),
        action: if hold {
            AdminAction::Hold
        } else {
            AdminAction::Release
        },
        target: Some(row.id),
        detail: row_detail(row),
    }
}

/// The entry a soft delete of `row` by `actor` appends.
pub(crate) fn delete_entry(actor: &Actor, row: &StoredAudit) -> NewAdminEntry {
    NewAdminEntry {
        actor: actor.clone(),
        action: AdminAction::Delete,
        target: Some(row.id),
        detail: row_detail(row),
    }
}

/// The page size a query may have.
pub(crate) fn page_limit(query: &AdminLogQuery) -> u32 {
    query.limit.clamp(1, MAX_ADMIN_LOG_PAGE)
}

/// Columns of `remaudit_admin_log` that make an [`AdminLogEntry`].
pub(crate) const ENTRY_COLUMNS: &str = "id, at, subject, action, target, reason, detail";

/// The read of one page for `query`, with timestamps bound through `time`;
/// it asks for one entry more than the page, to know whether another follows.
pub(crate) fn admin_log_sql<DB, T>(
    query: &AdminLogQuery,
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
        "SELECT {ENTRY_COLUMNS} FROM remaudit_admin_log WHERE TRUE"
    ));
    if let Some(v) = query.since {
        qb.push(" AND at >= ").push_bind(time(v));
    }
    if let Some(v) = query.until {
        qb.push(" AND at < ").push_bind(time(v));
    }
    if let Some(v) = &query.subject {
        qb.push(" AND subject = ").push_bind(v.clone());
    }
    if let Some(v) = query.action {
        qb.push(" AND action = ").push_bind(v.as_str().to_owned());
    }
    if let Some(v) = query.target {
        qb.push(" AND target = ").push_bind(v);
    }
    if let Some(cursor) = query.after {
        qb.push(" AND id < ").push_bind(cursor.id);
    }
    qb.push(" ORDER BY id DESC LIMIT ")
        .push_bind(i64::from(page_limit(query)) + 1);
    qb
}

/// Cuts entries read by [`admin_log_sql`] into a page and its cursor.
pub(crate) fn admin_page(mut items: Vec<AdminLogEntry>, query: &AdminLogQuery) -> AdminLogPage {
    let limit = usize::try_from(page_limit(query)).unwrap_or(usize::MAX);
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|e| AdminLogCursor { id: e.id })
    } else {
        None
    };
    AdminLogPage { items, next }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_others() {
        let cursor = AdminLogCursor { id: 42 };
        assert_eq!(AdminLogCursor::decode(&cursor.encode()), Some(cursor));
        assert_eq!(AdminLogCursor::decode("nope!"), None);
        // A listing's cursor is not an admin log cursor.
        assert_eq!(
            AdminLogCursor::decode(
                &crate::Cursor {
                    start_time: Utc::now(),
                    id: 1
                }
                .encode()
            ),
            None
        );
    }

    #[test]
    fn page_sizes_are_bounded() {
        for (asked, got) in [(0, 1), (5, 5), (1000, 1000), (u32::MAX, 1000)] {
            let query = AdminLogQuery {
                limit: asked,
                ..AdminLogQuery::default()
            };
            assert_eq!(page_limit(&query), got, "{asked}");
        }
    }
}
