//! The error document (`application/problem+json`, RFC 9457).

use remaudit_model::FieldError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Media type of error bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Prefix of every problem's `type`.
pub const PROBLEM_TYPE_PREFIX: &str = "urn:remaudit:problem:";

/// An error body: what went wrong, and for invalid input, which field broke which rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// A stable identifier of the kind of problem, e.g. `urn:remaudit:problem:invalid-record`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What happened this time.
    pub detail: String,
    /// The broken rules, for invalid input.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl Problem {
    /// The kind without its prefix, e.g. `invalid-record`.
    #[must_use]
    pub fn short_kind(&self) -> &str {
        self.kind
            .strip_prefix(PROBLEM_TYPE_PREFIX)
            .unwrap_or(&self.kind)
    }

    /// Whether some broken rule names `field`.
    #[must_use]
    pub fn names_field(&self, field: &str) -> bool {
        self.errors.iter().any(|e| e.field == field)
    }
}
