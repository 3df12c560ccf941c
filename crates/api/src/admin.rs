//! Admin actions and the admin log: the `reason` every hold, release and
//! delete gives, and the log's filters, paging and answer.

use chrono::{DateTime, Utc};
pub use remaudit_model::admin::{AdminAction, AdminLogEntry, MAX_REASON_CHARS, check_reason};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::audit::time_text;

/// Largest page of the admin log.
pub const MAX_ADMIN_LOG_PAGE: u32 = 1000;
/// Page size of the admin log when none is asked for.
pub const DEFAULT_ADMIN_LOG_PAGE: u32 = 100;

/// A reason as the document states it: at least one character that is
/// neither whitespace nor a control character, no control character at all
/// (Unicode category Cc), whitespace as Rust's `char::is_whitespace` has it.
pub const REASON_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\u0000-\u001F\u007F-\u009F]*$";

/// The `reason` query parameter of a hold, a release or a delete.
///
/// The reason may come in the query or in a JSON body ([`ReasonBody`]), not
/// in both with different values; one of them is required.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReasonParams {
    /// Why: 1 to 1024 characters, not only whitespace, no control characters.
    /// Required here or as `reason` in the JSON body; kept in the admin log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(
        min_length = 1,
        max_length = 1024,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub reason: Option<String>,
}

/// The JSON body of a hold, a release or a delete: the reason, when it is
/// not in the query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    /// Why: 1 to 1024 characters, not only whitespace, no control characters;
    /// kept in the admin log. When the query also has `reason`, both must be
    /// the same.
    #[schema(
        min_length = 1,
        max_length = 1024,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub reason: String,
}

/// Filters and paging of the admin log, newest entry first.
///
/// Values travel as text so that the server can name each invalid one; the
/// `with_*` methods fill them from typed values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AdminLogParams {
    /// Recorded at or after this RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<String>, format = DateTime)]
    pub since: Option<String>,
    /// Recorded before this RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<String>, format = DateTime)]
    pub until: Option<String>,
    /// Only this subject's actions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(
        min_length = 1,
        max_length = 1024,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub subject: Option<String>,
    /// Only this action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<AdminAction>)]
    pub action: Option<String>,
    /// Only actions on this remediation (its id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<i64>)]
    pub target: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(min_length = 1)]
    pub cursor: Option<String>,
}

impl AdminLogParams {
    /// Recorded at or after this time.
    #[must_use]
    pub fn with_since(mut self, since: DateTime<Utc>) -> Self {
        self.since = Some(time_text(since));
        self
    }

    /// Recorded before this time.
    #[must_use]
    pub fn with_until(mut self, until: DateTime<Utc>) -> Self {
        self.until = Some(time_text(until));
        self
    }

    /// Only this subject's actions.
    #[must_use]
    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// Only this action.
    #[must_use]
    pub fn with_action(mut self, action: AdminAction) -> Self {
        self.action = Some(action.as_str().to_owned());
        self
    }

    /// Only actions on this remediation.
    #[must_use]
    pub fn with_target(mut self, id: i64) -> Self {
        self.target = Some(id.to_string());
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

/// A page of the admin log, newest entry first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AdminLogResponse {
    /// The entries.
    pub items: Vec<AdminLogEntry>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_pattern_is_the_one_the_params_carry() {
        // The attribute needs a literal; this keeps it and the constant one text.
        let params = serde_json::to_value(ReasonParams::into_params(|| None)).expect("params");
        assert_eq!(params[0]["schema"]["pattern"], REASON_PATTERN);
        let body =
            serde_json::to_value(<ReasonBody as utoipa::PartialSchema>::schema()).expect("schema");
        assert_eq!(body["properties"]["reason"]["pattern"], REASON_PATTERN);
    }

    #[test]
    fn typed_setters_write_wire_text() {
        let params = AdminLogParams::default()
            .with_action(AdminAction::RetentionRun)
            .with_target(7)
            .with_limit(2);
        assert_eq!(params.action.as_deref(), Some("retention_run"));
        assert_eq!(params.target.as_deref(), Some("7"));
        assert_eq!(params.limit.as_deref(), Some("2"));
    }
}
