//! Tamper evidence on the wire: the admin verification route's query and
//! answer, and the readiness field that says whether events are chained.

use chrono::{DateTime, Utc};
use remaudit_model::chain::{ChainRemediation, decode_hex_vec, encode_hex};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub use remaudit_model::chain::{BreakKind, ChainBreak};

/// Longest range one verification call may cover, in days.
pub const MAX_VERIFY_DAYS: i64 = 31;

/// Remediations one verification call checks unless `limit` says otherwise.
pub const DEFAULT_VERIFY_LIMIT: u32 = 100;

/// Most remediations one verification call may check.
pub const MAX_VERIFY_LIMIT: u32 = 1000;

/// Whether the server signs the events it stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChainMode {
    /// No chain key: events get their sequence number but no MAC.
    Off,
    /// Every stored event is signed and chained.
    On,
}

/// The query of `GET /api/v1/admin/verify`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VerifyParams {
    /// Check remediations started at or after this time (RFC 3339); default: `until` minus one day.
    #[param(value_type = Option<String>, format = DateTime)]
    pub since: Option<String>,
    /// Check remediations started before this time (RFC 3339); default: now. At most 31 days after `since`.
    #[param(value_type = Option<String>, format = DateTime)]
    pub until: Option<String>,
    /// Continue after this cursor (`next` of the previous answer).
    pub after: Option<String>,
    /// Most remediations to check (1 to 1000, default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// The answer of `GET /api/v1/admin/verify`: one page of remediations checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChainVerification {
    /// Start of the range checked.
    pub since: DateTime<Utc>,
    /// End of the range checked (exclusive).
    pub until: DateTime<Utc>,
    /// Remediations checked in this page.
    pub remediations: u64,
    /// Events whose link verified.
    pub verified: u64,
    /// Events stored without a MAC (before chaining, or while the server ran unchained).
    pub unchained: u64,
    /// Every broken link found in this page; empty when every chain is whole.
    pub breaks: Vec<ChainBreak>,
    /// Cursor of the next page (pass it as `after`); absent when the range is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// The cursor text of a position in the range: the last remediation checked.
#[must_use]
pub fn encode_cursor(after: &ChainRemediation) -> String {
    encode_hex(serde_json::to_string(after).unwrap_or_default().as_bytes())
}

/// The position a cursor names; `None` when it is not one.
#[must_use]
pub fn decode_cursor(text: &str) -> Option<ChainRemediation> {
    serde_json::from_slice(&decode_hex_vec(text)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let r = ChainRemediation {
            start_time: DateTime::from_timestamp(1_700_000_000, 5_000).expect("time"),
            namespace: "ns".into(),
            remediation_name: "a.b-c".into(),
        };
        assert_eq!(decode_cursor(&encode_cursor(&r)), Some(r));
        assert_eq!(decode_cursor("zz"), None);
        assert_eq!(decode_cursor("7b7d"), None);
    }
}
