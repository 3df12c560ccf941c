//! The analytics answers (post-mortem, success rate, durations, slowest,
//! failures, retries) and the time window they cover.

use chrono::{DateTime, Duration, DurationRound, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The longest window an analytics query may cover: the retention period.
pub const MAX_WINDOW_DAYS: i64 = 90;

/// The longest window a question that also reads the archive may cover:
/// three years of archived weeks.
pub const MAX_ARCHIVE_WINDOW_DAYS: i64 = 3 * 366;

/// Windows at least this long are aligned to whole days, shorter ones to hours.
pub const DAY_ALIGNMENT_FROM_HOURS: i64 = 48;

/// How a window's ends were rounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Alignment {
    /// Not rounded (`exact=true`).
    None,
    /// To whole UTC hours.
    Hour,
    /// To whole UTC days.
    Day,
}

impl Alignment {
    /// The length of one step, when aligned.
    #[must_use]
    pub fn step(self) -> Option<Duration> {
        match self {
            Self::None => None,
            Self::Hour => Some(Duration::hours(1)),
            Self::Day => Some(Duration::days(1)),
        }
    }
}

/// Why a window is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// `window` is not a number followed by `m`, `h`, `d` or `w`.
    #[error(
        "must be a whole number followed by m, h, d or w (such as 30m, 24h, 7d, 2w), got {0:?}"
    )]
    Syntax(String),
    /// `since` is not before `until`.
    #[error("since ({since}) must be before until ({until})")]
    Reversed {
        /// The start asked for.
        since: DateTime<Utc>,
        /// The end asked for.
        until: DateTime<Utc>,
    },
    /// The window is longer than the retention period.
    #[error(
        "the window covers {0} hours; at most {MAX_WINDOW_DAYS} days (the retention period) are kept: \
         with archive=true (--archive) a window may cover up to {MAX_ARCHIVE_WINDOW_DAYS} days"
    )]
    TooLong(i64),
    /// The window is longer than a question over the archive may cover.
    #[error(
        "the window covers {0} hours; a question over the archive covers at most {MAX_ARCHIVE_WINDOW_DAYS} days"
    )]
    TooLongForArchive(i64),
}

/// Reads a window length such as `30m`, `24h`, `7d` or `2w`.
///
/// # Errors
/// [`WindowError::Syntax`] for anything else, including zero.
pub fn parse_window(text: &str) -> Result<Duration, WindowError> {
    let syntax = || WindowError::Syntax(text.to_owned());
    let unit_at = text.len().checked_sub(1).ok_or_else(syntax)?;
    if !text.is_char_boundary(unit_at) {
        return Err(syntax());
    }
    let (number, unit) = text.split_at(unit_at);
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(syntax());
    }
    let n: i64 = number.parse().map_err(|_| syntax())?;
    if n == 0 || n > 1_000_000 {
        return Err(syntax());
    }
    match unit {
        "m" => Ok(Duration::minutes(n)),
        "h" => Ok(Duration::hours(n)),
        "d" => Ok(Duration::days(n)),
        "w" => Ok(Duration::weeks(n)),
        _ => Err(syntax()),
    }
}

/// The ends of the window that `since`, `until` and a `length` ask for at
/// `now`: two of them, or one (with `default` as the length, `now` as the
/// end); `None` when all three are given.
#[must_use]
pub fn window_ends(
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    length: Option<Duration>,
    default: Duration,
    now: DateTime<Utc>,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    Some(match (since, until, length) {
        (Some(_), Some(_), Some(_)) => return None,
        (Some(s), Some(u), None) => (s, u),
        (Some(s), None, w) => (s, w.map_or(now, |w| s + w)),
        (None, Some(u), w) => (u - w.unwrap_or(default), u),
        (None, None, w) => (now - w.unwrap_or(default), now),
    })
}

/// The time range an analytics answer covers: remediations whose
/// `start_time` is in `[since, until)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Window {
    /// First instant included.
    pub since: DateTime<Utc>,
    /// First instant excluded.
    pub until: DateTime<Utc>,
    /// How the requested ends were rounded to get these.
    pub aligned_to: Alignment,
}

impl Window {
    /// The window from `since` to `until`, aligned outwards to whole hours
    /// (or whole days, for windows of 48 hours or more) unless `exact`.
    ///
    /// # Errors
    /// When `since` is not before `until`, or the window (before alignment)
    /// is longer than [`MAX_WINDOW_DAYS`].
    pub fn new(
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        exact: bool,
    ) -> Result<Self, WindowError> {
        let length = until - since;
        if since < until && length > Duration::days(MAX_WINDOW_DAYS) {
            return Err(WindowError::TooLong(length.num_hours()));
        }
        Self::over_archive(since, until, exact)
    }

    /// As [`Window::new`], for a question that also reads the archive: up
    /// to [`MAX_ARCHIVE_WINDOW_DAYS`] long.
    ///
    /// # Errors
    /// When `since` is not before `until`, or the window (before alignment)
    /// is longer than [`MAX_ARCHIVE_WINDOW_DAYS`].
    pub fn over_archive(
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        exact: bool,
    ) -> Result<Self, WindowError> {
        if since >= until {
            return Err(WindowError::Reversed { since, until });
        }
        let length = until - since;
        if length > Duration::days(MAX_ARCHIVE_WINDOW_DAYS) {
            return Err(WindowError::TooLongForArchive(length.num_hours()));
        }
        if exact {
            return Ok(Self {
                since,
                until,
                aligned_to: Alignment::None,
            });
        }
        let aligned_to = if length >= Duration::hours(DAY_ALIGNMENT_FROM_HOURS) {
            Alignment::Day
        } else {
            Alignment::Hour
        };
        let step = aligned_to.step().unwrap_or_else(|| Duration::hours(1));
        let floor = |t: DateTime<Utc>| t.duration_trunc(step).unwrap_or(t);
        let ceil = |t: DateTime<Utc>| {
            let f = floor(t);
            if f == t { t } else { f + step }
        };
        Ok(Self {
            since: floor(since),
            until: ceil(until),
            aligned_to,
        })
    }
}

/// Remediations of a window by outcome. Rates are `null` when nothing finished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OutcomeCounts {
    /// Remediations that started in the window.
    pub started: u64,
    /// Of those, still running (not in a terminal phase).
    pub in_progress: u64,
    /// Of those, finished: completed, failed or timed out.
    pub finished: u64,
    /// Finished in `completed`.
    pub completed: u64,
    /// Finished in `failed`.
    pub failed: u64,
    /// Finished in `timeout`.
    pub timed_out: u64,
    /// `completed / finished`, from 0 to 1.
    pub success_rate: Option<f64>,
}

impl OutcomeCounts {
    /// Adds `n` remediations whose current phase is `phase` (`None`: in progress).
    pub fn add(&mut self, phase: Option<&str>, n: u64) {
        self.started += n;
        match phase {
            None => self.in_progress += n,
            Some(p) => {
                self.finished += n;
                match p {
                    "completed" => self.completed += n,
                    "failed" => self.failed += n,
                    _ => self.timed_out += n,
                }
            }
        }
    }

    /// Fills in the success rate from the counts.
    #[must_use]
    pub fn with_rate(mut self) -> Self {
        self.success_rate = (self.finished > 0)
            .then(|| crate::approx_f64(self.completed) / crate::approx_f64(self.finished));
        self
    }
}

/// One bucket of a success-rate series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SeriesPoint {
    /// First instant of the bucket.
    pub since: DateTime<Utc>,
    /// First instant after it.
    pub until: DateTime<Utc>,
    /// The bucket's remediations.
    #[serde(flatten)]
    pub counts: OutcomeCounts,
}

/// `GET /api/v1/audit/analytics/success-rate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SuccessRateReport {
    /// What was asked.
    pub query: QueryEcho,
    /// The whole window.
    pub totals: OutcomeCounts,
    /// Bucket size of `series`, in seconds, when a series was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_seconds: Option<i64>,
    /// One point per bucket, oldest first; empty unless `bucket` was given.
    #[serde(default)]
    pub series: Vec<SeriesPoint>,
}

/// Duration figures of remediations that ended in one phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PhaseDurations {
    /// `completed`, `failed`, `timeout`, or `all` for every finished remediation.
    pub final_phase: String,
    /// Remediations with a completion time.
    pub count: u64,
    /// Mean duration (exact).
    pub avg_seconds: f64,
    /// Median duration.
    pub p50_seconds: f64,
    /// 95th percentile.
    pub p95_seconds: f64,
    /// 99th percentile.
    pub p99_seconds: f64,
}

/// `GET /api/v1/audit/analytics/durations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DurationsReport {
    /// What was asked.
    pub query: QueryEcho,
    /// Largest relative error of the percentiles: 0 when exact.
    pub relative_error: f64,
    /// One entry per final phase that has durations, then `all`.
    pub phases: Vec<PhaseDurations>,
}

/// One remediation as the post-mortem and slowest lists show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RemediationBrief {
    /// Row id.
    pub id: i64,
    /// The request's namespace.
    pub namespace: String,
    /// The alert's fingerprint.
    pub alert_fingerprint: String,
    /// The request's name.
    pub remediation_name: String,
    /// Current phase.
    pub overall_phase: String,
    /// When it started.
    pub start_time: DateTime<Utc>,
    /// When it ended.
    pub completion_time: Option<DateTime<Utc>>,
    /// `completion_time - start_time`, when it ended.
    pub duration_seconds: Option<f64>,
    /// The phase that failed.
    pub failure_phase: Option<String>,
    /// Why it failed.
    pub failure_reason: Option<String>,
    /// The phase that timed out.
    pub timeout_phase: Option<String>,
    /// When it timed out.
    pub timeout_time: Option<DateTime<Utc>>,
    /// Children's status snapshot (in the slowest list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_crd_statuses: Option<serde_json::Value>,
    /// Path of the full timeline.
    pub timeline: String,
}

impl RemediationBrief {
    /// The timeline path of remediation `id`.
    #[must_use]
    pub fn timeline_path(id: i64) -> String {
        format!("/api/v1/audit/remediation-orchestration/{id}")
    }
}

/// `GET /api/v1/audit/analytics/postmortem` and `…/slowest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RemediationList {
    /// What was asked.
    pub query: QueryEcho,
    /// The remediations.
    pub items: Vec<RemediationBrief>,
}

/// Failures in one phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FailureGroup {
    /// `failed` or `timeout`.
    pub outcome: String,
    /// The phase that failed or timed out; `null` when the record did not say.
    pub phase: Option<String>,
    /// Remediations that ended so.
    pub count: u64,
    /// Distinct alerts among them.
    pub unique_alerts: u64,
    /// Up to five distinct reasons, each cut to 100 characters.
    pub sample_reasons: Vec<String>,
}

/// `GET /api/v1/audit/analytics/failures`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FailuresReport {
    /// What was asked.
    pub query: QueryEcho,
    /// Most common first.
    pub items: Vec<FailureGroup>,
}

/// An alert remediated more than once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RetryGroup {
    /// The alert.
    pub alert_fingerprint: String,
    /// Remediations started for it.
    pub attempts: u64,
    /// Of those, completed.
    pub completed: u64,
    /// Of those, failed.
    pub failed: u64,
    /// Of those, timed out.
    pub timed_out: u64,
    /// Of those, still running.
    pub in_progress: u64,
    /// Start of the latest attempt.
    pub last_attempt: DateTime<Utc>,
    /// Whether any attempt completed.
    pub eventually_successful: bool,
    /// The attempts' current phases, oldest first (at most 100).
    pub phase_progression: Vec<String>,
}

/// `GET /api/v1/audit/analytics/retries`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RetriesReport {
    /// What was asked.
    pub query: QueryEcho,
    /// Distinct alerts remediated in the window.
    pub alerts: u64,
    /// Of those, remediated more than once.
    pub alerts_retried: u64,
    /// Remediations in the window.
    pub attempts: u64,
    /// Most attempts first.
    pub items: Vec<RetryGroup>,
}

/// The question an answer answers, echoed back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QueryEcho {
    /// The window covered.
    pub window: Window,
    /// Only this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Only this alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_fingerprint: Option<String>,
    /// Most items listed, for lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// `rollup` (kept as remediations finish) or `rows` (computed from the remediations).
    pub source: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    #[test]
    fn window_lengths_parse_and_reject_garbage() {
        assert_eq!(parse_window("30m"), Ok(Duration::minutes(30)));
        assert_eq!(parse_window("24h"), Ok(Duration::hours(24)));
        assert_eq!(parse_window("7d"), Ok(Duration::days(7)));
        assert_eq!(parse_window("2w"), Ok(Duration::weeks(2)));
        for bad in [
            "", "d", "7", "7y", "0d", "-1d", "1.5d", "7 d", "7dd", "9999999d", "7é",
        ] {
            assert_eq!(
                parse_window(bad),
                Err(WindowError::Syntax(bad.to_owned())),
                "{bad}"
            );
        }
    }

    #[test]
    fn windows_align_outwards_to_hours_or_days() {
        let w = Window::new(t("2026-11-20T10:15:00Z"), t("2026-11-20T12:45:00Z"), false).unwrap();
        assert_eq!(
            (w.since, w.until, w.aligned_to),
            (
                t("2026-11-20T10:00:00Z"),
                t("2026-11-20T13:00:00Z"),
                Alignment::Hour
            )
        );
        let w = Window::new(t("2026-11-20T10:15:00Z"), t("2026-11-27T10:15:00Z"), false).unwrap();
        assert_eq!(
            (w.since, w.until, w.aligned_to),
            (
                t("2026-11-20T00:00:00Z"),
                t("2026-11-28T00:00:00Z"),
                Alignment::Day
            )
        );
        let w = Window::new(t("2026-11-20T00:00:00Z"), t("2026-11-21T00:00:00Z"), false).unwrap();
        assert_eq!(
            (w.since, w.until),
            (t("2026-11-20T00:00:00Z"), t("2026-11-21T00:00:00Z"))
        );
        let w = Window::new(t("2026-11-20T10:15:00Z"), t("2026-11-20T12:45:00Z"), true).unwrap();
        assert_eq!(
            (w.since, w.until, w.aligned_to),
            (
                t("2026-11-20T10:15:00Z"),
                t("2026-11-20T12:45:00Z"),
                Alignment::None
            )
        );
    }

    #[test]
    fn windows_must_run_forwards_within_retention() {
        let a = t("2026-11-20T00:00:00Z");
        assert!(matches!(
            Window::new(a, a, false),
            Err(WindowError::Reversed { .. })
        ));
        assert!(matches!(
            Window::new(a + Duration::hours(1), a, false),
            Err(WindowError::Reversed { .. })
        ));
        assert_eq!(
            Window::new(a, a + Duration::days(91), false),
            Err(WindowError::TooLong(91 * 24))
        );
        assert!(Window::new(a, a + Duration::days(90), false).is_ok());
        assert!(Window::over_archive(a, a + Duration::days(365), false).is_ok());
        assert_eq!(
            Window::over_archive(a, a + Duration::days(MAX_ARCHIVE_WINDOW_DAYS + 1), false),
            Err(WindowError::TooLongForArchive(
                (MAX_ARCHIVE_WINDOW_DAYS + 1) * 24
            ))
        );
    }

    #[test]
    fn outcome_counts_add_up() {
        let mut c = OutcomeCounts::default();
        c.add(Some("completed"), 3);
        c.add(Some("failed"), 1);
        c.add(None, 2);
        let c = c.with_rate();
        assert_eq!((c.started, c.finished, c.in_progress), (6, 4, 2));
        assert_eq!(c.success_rate, Some(0.75));
        assert_eq!(OutcomeCounts::default().with_rate().success_rate, None);
    }
}
