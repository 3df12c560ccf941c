//! The one error type of the API, rendered as `application/problem+json`
//! (RFC 9457). Internal detail goes to the log, never to the client.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
pub use remaudit_api::problem::{PROBLEM_JSON, PROBLEM_TYPE_PREFIX, Problem};
use remaudit_model::FieldError;
use remaudit_store::StoreError;

use crate::auth::{DenyReason, Role};

/// Why a request failed.
#[derive(Debug)]
pub enum ApiError {
    /// The body is not JSON.
    MalformedJson(String),
    /// The query string is unusable.
    InvalidQuery(Vec<FieldError>),
    /// The record (or batch) breaks rules.
    InvalidRecord(Vec<FieldError>),
    /// An admin action without a usable `reason` (absent, blank, too long,
    /// control characters, or query and body disagreeing).
    InvalidReason(Vec<FieldError>),
    /// The body is larger than allowed.
    PayloadTooLarge(String),
    /// The body is not declared as JSON.
    UnsupportedMediaType(String),
    /// Nothing at this address.
    NotFound(String),
    /// The resource's state forbids the request.
    Conflict(String),
    /// The record reuses a stored key with other content.
    RecordConflict(Vec<FieldError>),
    /// The database is unreachable; try again after the delay.
    Unavailable(Duration),
    /// The request took longer than the server allows.
    Timeout(Duration),
    /// The database cancelled a read that ran past its statement timeout; try again after the delay.
    QueryTimeout(Duration),
    /// The summary and rollups were still taking in earlier events when the
    /// read's time was up; try again after the delay.
    ProjectionBehind(Duration),
    /// The service is handling as many requests as it may; try again after the delay.
    Overloaded(Duration),
    /// The client paused longer than allowed while sending the body.
    BodyTimeout(Duration),
    /// No credential, or one no authenticator accepts (401, with `WWW-Authenticate: Bearer`).
    Unauthenticated(DenyReason),
    /// A known caller without the role the route needs (403).
    Forbidden(Role),
    /// The identity service could not be asked; try again after the delay (503).
    AuthUnavailable(Duration),
    /// The archive cannot be read (`archive=true`); try again after the delay.
    ArchiveUnavailable(String, Duration),
    /// A file of the archive is missing or damaged (`archive=true`): no answer is given.
    ArchiveDamaged(String),
    /// Another question over the archive is running: one runs at a time
    /// (429, with `Retry-After`).
    ArchiveBusy(Duration),
    /// A question over the archive ran past its time limit (`archive=true`);
    /// the limit, and the delay before a retry.
    ArchiveTimeout(Duration, Duration),
    /// A statement over the archive that is not valid, not read-only, or
    /// failed on its own terms (400).
    InvalidSql(String),
    /// An answer over the archive with more rows or bytes than allowed, or
    /// needing more memory than a question may use (422).
    AnswerTooLarge(String),
    /// A fault of the server; details are in its log.
    Internal,
}

impl ApiError {
    /// Maps a store failure, logging what the client will not see.
    pub fn from_store(err: &StoreError, retry_after: Duration) -> Self {
        if err.is_unavailable() {
            tracing::warn!(error = %err, "database unavailable");
            Self::Unavailable(retry_after)
        } else if err.is_timeout() {
            tracing::warn!(error = %err, "read cancelled by its statement timeout");
            Self::QueryTimeout(retry_after)
        } else if err.is_behind() {
            tracing::warn!(error = %err, "read gave up waiting for the projection");
            Self::ProjectionBehind(retry_after)
        } else {
            tracing::error!(error = %err, "store failure");
            Self::Internal
        }
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str, String) {
        match self {
            Self::MalformedJson(d) => (
                StatusCode::BAD_REQUEST,
                "malformed-json",
                "Malformed JSON",
                d.clone(),
            ),
            Self::InvalidQuery(_) => (
                StatusCode::BAD_REQUEST,
                "invalid-query",
                "Invalid query parameters",
                "one or more query parameters are invalid; see errors".to_owned(),
            ),
            Self::InvalidReason(_) => (
                StatusCode::BAD_REQUEST,
                "invalid-reason",
                "Reason required",
                "admin actions are recorded with a reason: give ?reason=TEXT or a JSON body {\"reason\": \"TEXT\"} (1 to 1024 characters, not only whitespace, no control characters); see errors".to_owned(),
            ),
            Self::InvalidRecord(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-record",
                "Invalid audit record",
                "the request breaks one or more rules; see errors. Do not retry it unchanged"
                    .to_owned(),
            ),
            Self::PayloadTooLarge(d) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
                d.clone(),
            ),
            Self::UnsupportedMediaType(d) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                d.clone(),
            ),
            Self::NotFound(d) => (StatusCode::NOT_FOUND, "not-found", "Not found", d.clone()),
            Self::Conflict(d) => (StatusCode::CONFLICT, "conflict", "Conflict", d.clone()),
            Self::RecordConflict(_) => (
                StatusCode::CONFLICT,
                "conflict",
                "Conflict",
                "another record with this event_id and start_time is stored; nothing was stored. Do not retry it unchanged".to_owned(),
            ),
            Self::Unavailable(after) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "database-unavailable",
                "Database unavailable",
                format!(
                    "the audit database cannot be reached; nothing was stored. Retry after {} s",
                    after.as_secs()
                ),
            ),
            Self::Timeout(limit) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "Request timed out",
                format!(
                    "the request took longer than {} s; it may or may not have been stored, and retrying it is safe",
                    limit.as_secs()
                ),
            ),
            Self::QueryTimeout(after) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "query-timeout",
                "Query took too long",
                format!(
                    "the database stopped this read when it ran past the analytics statement timeout; narrow it (a shorter window, or an aligned one instead of exact=true) or retry after {} s",
                    after.as_secs()
                ),
            ),
            Self::ProjectionBehind(after) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "projection-behind",
                "Summary catching up",
                format!(
                    "the summary and analytics were still taking in records stored before this read when its time was up (a backlog after an outage, or a held lock); every stored record is kept. Retry after {} s",
                    after.as_secs().max(1)
                ),
            ),
            Self::Overloaded(after) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "Too many requests in progress",
                format!(
                    "the server is handling as many requests as it may; nothing was stored. Retry after {} s",
                    after.as_secs().max(1)
                ),
            ),
            Self::BodyTimeout(limit) => (
                StatusCode::REQUEST_TIMEOUT,
                "body-timeout",
                "Request body too slow",
                format!(
                    "no part of the body arrived for {} ms; nothing was stored. Send the body without pauses and retry",
                    limit.as_millis()
                ),
            ),
            Self::Unauthenticated(reason) => (
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "Authentication required",
                match reason {
                    DenyReason::Missing => "this route needs a credential: send `Authorization: Bearer TOKEN` (remaudit token create makes one)",
                    DenyReason::Expired => "the token has expired: ask for a new one (remaudit token create)",
                    _ => "the credential is not valid: send `Authorization: Bearer TOKEN` with a token the server knows",
                }
                .to_owned(),
            ),
            Self::Forbidden(role) => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "Forbidden",
                format!("this route needs the {role} role, which the caller does not have"),
            ),
            Self::AuthUnavailable(after) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "auth-unavailable",
                "Authentication unavailable",
                format!(
                    "the identity service that checks this credential cannot be reached; nothing was done. Retry after {} s",
                    after.as_secs().max(1)
                ),
            ),
            Self::ArchiveUnavailable(why, after) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "archive-unavailable",
                "Archive unavailable",
                format!(
                    "the archive cannot be read ({why}); retry after {} s (questions without archive=true read only the database, and still answer)",
                    after.as_secs().max(1)
                ),
            ),
            Self::ArchiveDamaged(what) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "archive-damaged",
                "Archive damaged",
                what.clone(),
            ),
            Self::ArchiveTimeout(limit, _) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "query-timeout",
                "Query took too long",
                format!(
                    "the question over the archive ran past its {} s limit and was stopped; narrow it (fewer weeks, an aligned window instead of exact=true, or a more selective statement)",
                    limit.as_secs()
                ),
            ),
            Self::ArchiveBusy(after) => (
                StatusCode::TOO_MANY_REQUESTS,
                "archive-busy",
                "Archive busy",
                format!(
                    "another question over the archive is running, and the service answers one at a time; retry after {} s",
                    after.as_secs().max(1)
                ),
            ),
            Self::InvalidSql(why) => (
                StatusCode::BAD_REQUEST,
                "invalid-sql",
                "Statement refused",
                format!("the statement cannot be answered: {why}"),
            ),
            Self::AnswerTooLarge(why) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "answer-too-large",
                "Answer too large",
                why.clone(),
            ),
            Self::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                "the server failed; the cause is in its log".to_owned(),
            ),
        }
    }

    /// The body this error renders.
    #[must_use]
    pub fn problem(&self) -> Problem {
        let (status, kind, title, detail) = self.parts();
        let errors = match self {
            Self::InvalidQuery(e)
            | Self::InvalidRecord(e)
            | Self::InvalidReason(e)
            | Self::RecordConflict(e) => e.clone(),
            _ => Vec::new(),
        };
        Problem {
            kind: format!("{PROBLEM_TYPE_PREFIX}{kind}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail,
            errors,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        let status =
            StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Self::BodyTimeout(_) = &self {
            // The rest of the body is not read, so the connection cannot be reused.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Self::Unauthenticated(reason) = &self {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(if *reason == DenyReason::Missing {
                    "Bearer realm=\"remaudit\""
                } else {
                    "Bearer realm=\"remaudit\", error=\"invalid_token\""
                }),
            );
        }
        if let Self::Unavailable(after)
        | Self::AuthUnavailable(after)
        | Self::Timeout(after)
        | Self::Overloaded(after)
        | Self::QueryTimeout(after)
        | Self::ArchiveUnavailable(_, after)
        | Self::ArchiveTimeout(_, after)
        | Self::ArchiveBusy(after)
        | Self::ProjectionBehind(after) = &self
        {
            let secs = if matches!(self, Self::Timeout(_)) {
                1
            } else {
                after.as_secs().max(1)
            };
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
