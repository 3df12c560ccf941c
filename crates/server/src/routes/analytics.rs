//! `/api/v1/audit/analytics/…`: the post-mortem and analytics questions.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use chrono::{DateTime, Datelike, Duration, Utc};
use remaudit_api::Problem;
use remaudit_api::analytics::{AnalyticsParams, Endpoint as Spec};
use remaudit_model::FieldError;
use remaudit_model::analytics::{
    DurationsReport, FailuresReport, RemediationList, RetriesReport, SuccessRateReport, Window,
    WindowError, parse_window, window_ends,
};
use remaudit_store::AnalyticsQuery;
use remaudit_store::analytics::MAX_SERIES_BUCKETS;
use tracing::instrument;

use crate::error::ApiError;
use crate::routes::audit::time_param;
use crate::startup::AppState;
use remaudit_api::audit::MAX_PAGE;

fn text_param(
    field: &str,
    value: Option<String>,
    max: usize,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    let value = value?;
    if value.is_empty() || value.chars().count() > max || value.chars().any(char::is_control) {
        errors.push(FieldError::new(
            field,
            "text",
            format!("must be 1 to {max} characters without control characters"),
        ));
        return None;
    }
    Some(value)
}

fn length_param(
    field: &str,
    value: Option<&str>,
    errors: &mut Vec<FieldError>,
) -> Option<Duration> {
    match parse_window(value?) {
        Ok(d) => Some(d),
        Err(e) => {
            errors.push(FieldError::new(field, "duration", e.to_string()));
            None
        }
    }
}

fn unexpected(field: &str, given: bool, errors: &mut Vec<FieldError>) {
    if given {
        errors.push(FieldError::new(
            field,
            "unexpected",
            "is not a parameter of this endpoint",
        ));
    }
}

/// A `true` or `false` parameter, false when absent.
pub(crate) fn bool_param(field: &str, value: Option<&str>, errors: &mut Vec<FieldError>) -> bool {
    match value {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            errors.push(FieldError::new(
                field,
                "boolean",
                format!("must be true or false, got {other:?}"),
            ));
            false
        }
    }
}

/// The ends of the window the parameters ask for.
fn ends(
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    window: Option<Duration>,
    default: Duration,
    now: DateTime<Utc>,
    errors: &mut Vec<FieldError>,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let ends = window_ends(since, until, window, default, now);
    if ends.is_none() {
        errors.push(FieldError::new(
            "window",
            "conflict",
            "give at most two of since, until and window",
        ));
    }
    ends
}

/// The analytics query the parameters ask for, at `now`, and whether it
/// reads the archive too.
fn analytics_query(
    params: AnalyticsParams,
    spec: &Spec,
    now: DateTime<Utc>,
) -> Result<(AnalyticsQuery, bool), ApiError> {
    let mut errors = Vec::new();
    let since = time_param("since", params.since.as_deref(), &mut errors);
    let until = time_param("until", params.until.as_deref(), &mut errors);
    let length = length_param("window", params.window.as_deref(), &mut errors);
    let exact = bool_param("exact", params.exact.as_deref(), &mut errors);
    let archive = bool_param("archive", params.archive.as_deref(), &mut errors);
    let namespace = text_param("namespace", params.namespace, 63, &mut errors);
    let alert_fingerprint = text_param(
        "alert_fingerprint",
        params.alert_fingerprint,
        64,
        &mut errors,
    );
    if spec.requires_fingerprint
        && alert_fingerprint.is_none()
        && !errors.iter().any(|e| e.field == "alert_fingerprint")
    {
        errors.push(FieldError::new(
            "alert_fingerprint",
            "required",
            "is required",
        ));
    }
    let limit = match (spec.default_limit, params.limit.as_deref()) {
        (None, given) => {
            unexpected("limit", given.is_some(), &mut errors);
            0
        }
        (Some(default), None) => default,
        (Some(default), Some(text)) => match text.parse::<u32>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                errors.push(FieldError::new(
                    "limit",
                    "range",
                    format!("must be a whole number from 1 to {MAX_PAGE}, got {text:?}"),
                ));
                default
            }
        },
    };
    if !spec.bucket {
        unexpected("bucket", params.bucket.is_some(), &mut errors);
    }
    let bucket = length_param("bucket", params.bucket.as_deref(), &mut errors);
    let window = ends(
        since,
        until,
        length,
        Duration::days(spec.default_window_days),
        now,
        &mut errors,
    )
    .and_then(|(s, u)| {
        match if archive {
            Window::over_archive(s, u, exact)
        } else {
            Window::new(s, u, exact)
        } {
            Ok(w) => Some(w),
            Err(e) => {
                let (field, rule) = match e {
                    WindowError::Reversed { .. } => ("since", "before_until"),
                    WindowError::TooLong(_) => ("window", "max_retention"),
                    WindowError::TooLongForArchive(_) => ("window", "max_archive"),
                    WindowError::Syntax(_) => ("window", "duration"),
                };
                errors.push(FieldError::new(field, rule, e.to_string()));
                None
            }
        }
    });
    // Answers echo the window's ends as RFC 3339 times, which have four-digit years.
    if let Some(w) = window
        && (w.since.year() < 0 || w.until.year() > 9999)
    {
        errors.push(FieldError::new(
            if w.since.year() < 0 { "since" } else { "until" },
            "time_range",
            format!(
                "the window must lie within the years 0000 to 9999, got {} to {}",
                w.since.to_rfc3339(),
                w.until.to_rfc3339()
            ),
        ));
    }
    if let (Some(b), Some(w)) = (bucket, window) {
        if b.num_seconds() % 3600 != 0 {
            errors.push(FieldError::new(
                "bucket",
                "whole_hours",
                "must be a whole number of hours, such as 1h, 6h or 1d",
            ));
        } else if (w.until - w.since).num_seconds() / b.num_seconds() > MAX_SERIES_BUCKETS {
            errors.push(FieldError::new(
                "bucket",
                "max_buckets",
                format!("gives more than {MAX_SERIES_BUCKETS} buckets over this window; choose a larger bucket"),
            ));
        }
    }
    match window {
        Some(window) if errors.is_empty() => Ok((
            AnalyticsQuery {
                window,
                namespace,
                alert_fingerprint,
                limit,
                bucket,
            },
            archive,
        )),
        _ => Err(ApiError::InvalidQuery(errors)),
    }
}

fn parse(
    params: Result<Query<AnalyticsParams>, QueryRejection>,
    spec: &Spec,
) -> Result<(AnalyticsQuery, bool), ApiError> {
    let Query(params) = params
        .map_err(|e| ApiError::InvalidQuery(vec![FieldError::new("", "query", e.body_text())]))?;
    analytics_query(params, spec, Utc::now())
}

macro_rules! endpoint {
    ($name:ident, $spec:expr, $summary:literal, $body:ty, $method:ident) => {
        #[doc = $summary]
        #[utoipa::path(
            get,
            path = $spec.path,
            tag = "analytics",
            params(AnalyticsParams),
            responses(
                (status = 200, description = $summary, body = $body),
                (status = 400, description = "Invalid window, filter or limit", body = Problem, content_type = "application/problem+json"),
                (status = 500, description = "With archive=true, a file of the archive is missing or damaged (`archive-damaged`, naming it): no answer is given", body = Problem, content_type = "application/problem+json"),
                (status = 503, description = "Database unavailable (`database-unavailable`), the question ran past the analytics statement timeout (`query-timeout`), or the rollups were still taking in records stored before it when its time ran out (`projection-behind`); with archive=true, also the archive cannot be read (`archive-unavailable`); all with Retry-After", body = Problem, content_type = "application/problem+json"),
                (status = 429, description = "With archive=true, another question over the archive is running; the service answers one at a time (`archive-busy`, with Retry-After)", body = Problem, content_type = "application/problem+json"),
            )
        )]
        #[instrument(skip_all)]
        pub(crate) async fn $name(
            State(state): State<AppState>,
            params: Result<Query<AnalyticsParams>, QueryRejection>,
        ) -> Result<Json<$body>, ApiError> {
            let (query, archive) = parse(params, &$spec)?;
            let report = if archive {
                crate::archive::$method(&state, &query).await?
            } else {
                state
                    .store
                    .$method(&query)
                    .await
                    .map_err(|e| ApiError::from_store(&e, state.settings.retry_after))?
            };
            Ok(Json(report))
        }
    };
}

endpoint!(
    postmortem,
    Spec::POSTMORTEM,
    "Every remediation of one alert in the window, newest first, with durations, failure details and timeline links.",
    RemediationList,
    postmortem
);
endpoint!(
    success_rate,
    Spec::SUCCESS_RATE,
    "Remediations started in the window by outcome, and completed ÷ finished; with `bucket`, also as a series.",
    SuccessRateReport,
    success_rate
);
endpoint!(
    durations,
    Spec::DURATIONS,
    "Count, mean, p50, p95 and p99 of durations by final phase.",
    DurationsReport,
    durations
);
endpoint!(
    slowest,
    Spec::SLOWEST,
    "The remediations that took longest, longest first.",
    RemediationList,
    slowest
);
endpoint!(
    failures,
    Spec::FAILURES,
    "Failures and timeouts by the phase where they happened, with affected alerts and sample reasons.",
    FailuresReport,
    failures
);
endpoint!(
    retries,
    Spec::RETRIES,
    "Alerts remediated more than once, most attempts first, with their outcomes.",
    RetriesReport,
    retries
);

#[cfg(test)]
mod tests {
    use super::*;

    fn query(params: AnalyticsParams, spec: &Spec) -> Result<AnalyticsQuery, Vec<FieldError>> {
        let now = "2026-11-30T12:34:56Z".parse().expect("time");
        analytics_query(params, spec, now)
            .map(|(q, _)| q)
            .map_err(|e| e.problem().errors)
    }

    #[test]
    fn defaults_cover_the_last_week_aligned_to_days() {
        let q = query(AnalyticsParams::default(), &Spec::DURATIONS).expect("valid");
        assert_eq!(
            q.window.since,
            "2026-11-23T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(
            q.window.until,
            "2026-12-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
    }

    #[test]
    fn limit_and_bucket_belong_to_their_endpoints() {
        let params = AnalyticsParams {
            limit: Some("5".into()),
            bucket: Some("1h".into()),
            ..AnalyticsParams::default()
        };
        let errors = query(params, &Spec::DURATIONS).expect_err("invalid");
        let fields: Vec<_> = errors
            .iter()
            .map(|e| (e.field.as_str(), e.rule.as_str()))
            .collect();
        assert_eq!(fields, [("limit", "unexpected"), ("bucket", "unexpected")]);
    }
}
