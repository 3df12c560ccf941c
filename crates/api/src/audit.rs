//! Ingestion and reads of remediation audit records.

use chrono::{DateTime, SecondsFormat, Utc};
use remaudit_model::{EventRecord, FieldError, StoredAudit};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// Largest page a listing returns.
pub const MAX_PAGE: u32 = 1000;
/// Page size when none is asked for.
pub const DEFAULT_PAGE: u32 = 100;

/// What happened to a record sent for storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ItemStatus {
    /// Stored now.
    Created,
    /// Already stored earlier (same `event_id` and `start_time`, same content); nothing changed.
    Duplicate,
    /// Invalid, or refused by a rule of what is stored; not stored. Do not retry it unchanged.
    Rejected,
    /// Another record with the same `event_id` and `start_time` but other
    /// content is stored; this one was not. Do not retry it unchanged.
    Conflict,
}

impl ItemStatus {
    /// Its name on the wire.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Duplicate => "duplicate",
            Self::Rejected => "rejected",
            Self::Conflict => "conflict",
        }
    }

    /// Whether the record is stored (now or earlier).
    #[must_use]
    pub const fn is_stored(self) -> bool {
        matches!(self, Self::Created | Self::Duplicate)
    }
}

/// The answer to a single record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StoreResult {
    /// The record's idempotency key, given or derived.
    pub event_id: Uuid,
    /// `created` or `duplicate` (a conflict is answered 409, a refusal 422).
    pub status: ItemStatus,
}

/// The answer for one record of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BatchItem {
    /// Position in the request array, from 0.
    pub index: usize,
    /// What happened to it.
    pub status: ItemStatus,
    /// Its idempotency key, when it was valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<Uuid>,
    /// Why it was rejected, or what it conflicts with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// The answer to a batch: counts, and one item per record in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BatchResponse {
    /// Records stored now.
    pub created: usize,
    /// Records that were already stored.
    pub duplicates: usize,
    /// Invalid or refused records, not stored.
    pub rejected: usize,
    /// Records that reuse a stored key with other content, not stored.
    #[serde(default)]
    pub conflicts: usize,
    /// One entry per record.
    pub items: Vec<BatchItem>,
}

impl BatchResponse {
    /// The answer for `items`, with the counts taken from them.
    #[must_use]
    pub fn from_items(items: Vec<BatchItem>) -> Self {
        let tally = |s: ItemStatus| items.iter().filter(|i| i.status == s).count();
        Self {
            created: tally(ItemStatus::Created),
            duplicates: tally(ItemStatus::Duplicate),
            rejected: tally(ItemStatus::Rejected),
            conflicts: tally(ItemStatus::Conflict),
            items,
        }
    }
}

/// A page of remediations, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ListResponse {
    /// The remediations.
    pub items: Vec<StoredAudit>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// One remediation and one page of its timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TimelineResponse {
    /// The summary row.
    pub remediation: StoredAudit,
    /// Accepted transitions, oldest first: one page of them.
    pub timeline: Vec<EventRecord>,
    /// Pass as `cursor` to get the next page of the timeline; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A time as query parameters carry it (RFC 3339, UTC).
pub(crate) fn time_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Paging of a timeline.
///
/// Values travel as text so that the server can name each invalid one; the
/// `with_*` methods fill them from typed values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TimelineParams {
    /// Most events on the page, 1 to 1000 (default 100). A page also ends
    /// early rather than carry more than 2 MiB of records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(min_length = 1)]
    pub cursor: Option<String>,
    /// `true` to look in the service's archive when the database no longer
    /// holds the remediation: the archived summary row and its whole
    /// timeline, in one page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<bool>)]
    pub archive: Option<String>,
}

impl TimelineParams {
    /// Sets the page size.
    #[must_use]
    pub fn with_limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit.to_string());
        self
    }

    /// Continues after a page.
    #[must_use]
    pub fn with_cursor(mut self, cursor: impl Into<String>) -> Self {
        self.cursor = Some(cursor.into());
        self
    }
}

/// Filters and paging of the listing.
///
/// Values travel as text so that the server can name each invalid one; the
/// `with_*` methods fill them from typed values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only this alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub alert_fingerprint: Option<String>,
    /// Only remediations whose current phase is this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub overall_phase: Option<String>,
    /// Only this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub namespace: Option<String>,
    /// Only remediations with this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub remediation_name: Option<String>,
    /// Started at or after this RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<String>, format = DateTime)]
    pub since: Option<String>,
    /// Started before this RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<String>, format = DateTime)]
    pub until: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(min_length = 1)]
    pub cursor: Option<String>,
}

impl ListParams {
    /// Only this alert.
    #[must_use]
    pub fn with_alert_fingerprint(mut self, fingerprint: impl Into<String>) -> Self {
        self.alert_fingerprint = Some(fingerprint.into());
        self
    }

    /// Only remediations whose current phase is this one.
    #[must_use]
    pub fn with_overall_phase(mut self, phase: impl Into<String>) -> Self {
        self.overall_phase = Some(phase.into());
        self
    }

    /// Only this namespace.
    #[must_use]
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Only remediations with this name.
    #[must_use]
    pub fn with_remediation_name(mut self, name: impl Into<String>) -> Self {
        self.remediation_name = Some(name.into());
        self
    }

    /// Started at or after this time.
    #[must_use]
    pub fn with_since(mut self, since: DateTime<Utc>) -> Self {
        self.since = Some(time_text(since));
        self
    }

    /// Started before this time.
    #[must_use]
    pub fn with_until(mut self, until: DateTime<Utc>) -> Self {
        self.until = Some(time_text(until));
        self
    }

    /// Sets the page size.
    #[must_use]
    pub fn with_limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit.to_string());
        self
    }

    /// Continues after a page.
    #[must_use]
    pub fn with_cursor(mut self, cursor: impl Into<String>) -> Self {
        self.cursor = Some(cursor.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_status_fails_to_decode() {
        let known: ItemStatus = serde_json::from_str("\"conflict\"").expect("known");
        assert_eq!(known, ItemStatus::Conflict);
        assert!(serde_json::from_str::<ItemStatus>("\"deferred\"").is_err());
    }

    #[test]
    fn statuses_serialise_as_their_names() {
        for status in [
            ItemStatus::Created,
            ItemStatus::Duplicate,
            ItemStatus::Rejected,
            ItemStatus::Conflict,
        ] {
            assert_eq!(
                serde_json::to_value(status).expect("serialise"),
                status.as_str()
            );
        }
    }

    #[test]
    fn counts_come_from_the_items() {
        let item = |index, status| BatchItem {
            index,
            status,
            event_id: None,
            errors: Vec::new(),
        };
        let answer = BatchResponse::from_items(vec![
            item(0, ItemStatus::Created),
            item(1, ItemStatus::Rejected),
            item(2, ItemStatus::Created),
            item(3, ItemStatus::Conflict),
        ]);
        assert_eq!(
            (
                answer.created,
                answer.duplicates,
                answer.rejected,
                answer.conflicts
            ),
            (2, 0, 1, 1)
        );
    }

    #[test]
    fn typed_setters_write_wire_text() {
        let at = "2026-01-02T03:04:05Z".parse().expect("time");
        let params = ListParams::default().with_since(at).with_limit(5);
        assert_eq!(params.since.as_deref(), Some("2026-01-02T03:04:05Z"));
        assert_eq!(params.limit.as_deref(), Some("5"));
    }
}
