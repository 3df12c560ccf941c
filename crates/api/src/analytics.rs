//! The post-mortem and analytics questions: their parameters, and (re-exported
//! from `remaudit-model`, where the store builds them) their answers.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

pub use remaudit_model::analytics::{
    Alignment, DurationsReport, FailureGroup, FailuresReport, MAX_WINDOW_DAYS, OutcomeCounts,
    PhaseDurations, QueryEcho, RemediationBrief, RemediationList, RetriesReport, RetryGroup,
    SeriesPoint, SuccessRateReport, Window,
};

/// The window, filters and options every analytics endpoint takes.
///
/// Values travel as text so that the server can name each invalid one; the
/// `with_*` methods fill them from typed values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AnalyticsParams {
    /// Start of the window (RFC 3339), on `start_time`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// End of the window (RFC 3339, excluded); default now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Length of the window, such as `24h`, `7d` or `2w` (units m, h, d, w); with `since` or `until`, or alone (ending now). At most 90 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// Only this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Only this alert (required by the post-mortem).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_fingerprint: Option<String>,
    /// `true` to compute from the remediations with the exact window and exact percentiles (slower); by default windows are aligned to hours (days from 48 h on) and rollups answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// Most items listed, 1 to 1000 (lists only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// Series bucket size, a whole number of hours such as `1h` or `1d` (success rate only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
}

impl AnalyticsParams {
    /// Starts the window at this time.
    #[must_use]
    pub fn with_since(mut self, since: DateTime<Utc>) -> Self {
        self.since = Some(since.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        self
    }

    /// Ends the window (excluded) at this time.
    #[must_use]
    pub fn with_until(mut self, until: DateTime<Utc>) -> Self {
        self.until = Some(until.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        self
    }

    /// Sets the window's length, such as `24h` or `7d`.
    #[must_use]
    pub fn with_window(mut self, window: impl Into<String>) -> Self {
        self.window = Some(window.into());
        self
    }

    /// Only this namespace.
    #[must_use]
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Only this alert.
    #[must_use]
    pub fn with_alert_fingerprint(mut self, fingerprint: impl Into<String>) -> Self {
        self.alert_fingerprint = Some(fingerprint.into());
        self
    }

    /// Exact windows and percentiles (`true`) or aligned rollups (`false`).
    #[must_use]
    pub fn with_exact(mut self, exact: bool) -> Self {
        self.exact = Some(exact.to_string());
        self
    }

    /// Most items listed (list endpoints only).
    #[must_use]
    pub fn with_limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit.to_string());
        self
    }

    /// Series bucket size, such as `1h` (success rate only).
    #[must_use]
    pub fn with_bucket(mut self, bucket: impl Into<String>) -> Self {
        self.bucket = Some(bucket.into());
        self
    }
}
