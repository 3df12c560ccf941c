//! The admin log: what an operator did (a legal hold set or cleared, a soft
//! delete, a retention run), by whom, when, to what and why. Entries are
//! append-only; both stores refuse to change or remove one.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::FieldError;

/// Longest reason an admin action may give, in characters.
pub const MAX_REASON_CHARS: usize = 1024;

/// What an admin did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AdminAction {
    /// Put a remediation under legal hold.
    Hold,
    /// Cleared a remediation's legal hold.
    Release,
    /// Soft-deleted a remediation.
    Delete,
    /// Ran retention: expired and soft-deleted rows moved to the archive.
    RetentionRun,
}

impl AdminAction {
    /// Every action, in a fixed order.
    pub const ALL: [Self; 4] = [Self::Hold, Self::Release, Self::Delete, Self::RetentionRun];

    /// Its name on the wire and in the database.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Hold => "hold",
            Self::Release => "release",
            Self::Delete => "delete",
            Self::RetentionRun => "retention_run",
        }
    }
}

impl std::fmt::Display for AdminAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AdminAction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown admin action {s:?}: expected hold, release, delete or retention_run"
                )
            })
    }
}

impl TryFrom<String> for AdminAction {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// One admin action as the log keeps it: who, when, what, to which
/// remediation and why.
// Column names follow the fields: with the `sqlx` feature both stores decode
// a row straight into this type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct AdminLogEntry {
    /// The entry's id; later entries have larger ids.
    pub id: i64,
    /// When the action was recorded (the database's clock).
    pub at: DateTime<Utc>,
    /// Who did it: the authenticated subject, `anonymous` when the server
    /// runs without authentication, `retention` for the scheduled job.
    pub subject: String,
    /// What was done.
    #[cfg_attr(feature = "sqlx", sqlx(try_from = "String"))]
    pub action: AdminAction,
    /// The remediation's id; absent for a retention run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<i64>,
    /// Why, as the caller gave it.
    pub reason: String,
    /// What the action touched: the remediation's namespace, name and start
    /// time, or the rows, events and batches a retention run moved.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// Checks a reason an admin action gives: present, not blank, at most
/// [`MAX_REASON_CHARS`] characters, no control characters.
///
/// # Errors
/// The rule broken, on field `reason`: `required` (absent or only
/// whitespace), `max_length` or `text`.
pub fn check_reason(reason: Option<&str>) -> Result<&str, FieldError> {
    let Some(reason) = reason else {
        return Err(FieldError::new(
            "reason",
            "required",
            "is required: say why, as ?reason=TEXT or a JSON body {\"reason\": \"TEXT\"}",
        ));
    };
    if reason.chars().any(char::is_control) {
        return Err(FieldError::new(
            "reason",
            "text",
            "must not contain control characters (line breaks and tabs included)",
        ));
    }
    if reason.chars().all(char::is_whitespace) {
        return Err(FieldError::new(
            "reason",
            "required",
            "must not be empty or only whitespace: say why",
        ));
    }
    let chars = reason.chars().count();
    if chars > MAX_REASON_CHARS {
        return Err(FieldError::new(
            "reason",
            "max_length",
            format!("must be at most {MAX_REASON_CHARS} characters, got {chars}"),
        ));
    }
    Ok(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_round_trip_by_name() {
        for action in AdminAction::ALL {
            assert_eq!(action.as_str().parse::<AdminAction>(), Ok(action));
            assert_eq!(
                serde_json::to_value(action).expect("serialise"),
                action.as_str()
            );
        }
        assert!("purge".parse::<AdminAction>().is_err());
        assert!(serde_json::from_str::<AdminAction>("\"purge\"").is_err());
    }

    #[test]
    fn reasons_follow_each_rule() {
        let rule = |r: Option<&str>| check_reason(r).err().map(|e| e.rule);
        assert_eq!(rule(Some("court order 2026-114")), None);
        assert_eq!(rule(Some(&"x".repeat(MAX_REASON_CHARS))), None);
        assert_eq!(rule(Some(&"é".repeat(MAX_REASON_CHARS))), None);
        assert_eq!(rule(None).as_deref(), Some("required"));
        assert_eq!(rule(Some("")).as_deref(), Some("required"));
        assert_eq!(rule(Some(" \u{3000} ")).as_deref(), Some("required"));
        assert_eq!(rule(Some("a\nb")).as_deref(), Some("text"));
        assert_eq!(rule(Some("a\u{0}")).as_deref(), Some("text"));
        assert_eq!(rule(Some("a\u{85}")).as_deref(), Some("text"));
        assert_eq!(
            rule(Some(&"x".repeat(MAX_REASON_CHARS + 1))).as_deref(),
            Some("max_length")
        );
    }
}
