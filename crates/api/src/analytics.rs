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
    #[param(value_type = Option<String>, format = DateTime)]
    pub since: Option<String>,
    /// End of the window (RFC 3339, excluded); default now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<String>, format = DateTime)]
    pub until: Option<String>,
    /// Length of the window, such as `24h`, `7d` or `2w` (units m, h, d, w); with `since` or `until`, or alone (ending now). At most 90 days (1,098 with `archive=true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// Only this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(
        min_length = 1,
        max_length = 63,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub namespace: Option<String>,
    /// Only this alert (required by the post-mortem).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub alert_fingerprint: Option<String>,
    /// `true` to compute from the remediations with the exact window and exact percentiles (slower); by default windows are aligned to hours (days from 48 h on) and rollups answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<bool>)]
    pub exact: Option<String>,
    /// Most items listed, 1 to 1000 (lists only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// Series bucket size, a whole number of hours such as `1h` or `1d` (success rate only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// `true` to answer over the archive too: the remediations retention moved to the service's archive, with those still held live in the window (at most 100,000 of them). Answers then name `archive` as their source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<bool>)]
    pub archive: Option<String>,
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

/// What one analytics endpoint takes beyond the window and filters every one
/// takes: the server parses by it and the OpenAPI document lists by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// The route.
    pub path: &'static str,
    /// Length of the window when neither `since` nor `window` is given, in days.
    pub default_window_days: i64,
    /// `Some(default)` when the endpoint takes `limit`.
    pub default_limit: Option<u32>,
    /// Whether the endpoint takes `bucket`.
    pub bucket: bool,
    /// Whether `alert_fingerprint` is required.
    pub requires_fingerprint: bool,
}

impl Endpoint {
    /// An endpoint that answers one summary over the window.
    const fn summary(path: &'static str) -> Self {
        Self {
            path,
            default_window_days: 7,
            default_limit: None,
            bucket: false,
            requires_fingerprint: false,
        }
    }

    /// An endpoint that lists up to `limit` items (default `default_limit`).
    const fn list(path: &'static str, default_limit: u32) -> Self {
        Self {
            default_limit: Some(default_limit),
            ..Self::summary(path)
        }
    }

    /// Every remediation of one alert.
    pub const POSTMORTEM: Self = Self {
        default_window_days: MAX_WINDOW_DAYS,
        requires_fingerprint: true,
        ..Self::list(crate::paths::ANALYTICS_POSTMORTEM, 10)
    };
    /// Outcomes, success rate and an optional series.
    pub const SUCCESS_RATE: Self = Self {
        bucket: true,
        ..Self::summary(crate::paths::ANALYTICS_SUCCESS_RATE)
    };
    /// Duration percentiles.
    pub const DURATIONS: Self = Self::summary(crate::paths::ANALYTICS_DURATIONS);
    /// The longest remediations.
    pub const SLOWEST: Self = Self::list(crate::paths::ANALYTICS_SLOWEST, 20);
    /// Failures by phase.
    pub const FAILURES: Self = Self::list(crate::paths::ANALYTICS_FAILURES, 20);
    /// Alerts remediated more than once.
    pub const RETRIES: Self = Self::list(crate::paths::ANALYTICS_RETRIES, 20);
    /// Every analytics endpoint.
    pub const ALL: [Self; 6] = [
        Self::POSTMORTEM,
        Self::SUCCESS_RATE,
        Self::DURATIONS,
        Self::SLOWEST,
        Self::FAILURES,
        Self::RETRIES,
    ];
}
