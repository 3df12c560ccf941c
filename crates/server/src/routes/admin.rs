//! Admin actions: the actor and reason every hold, release and delete
//! records, and `/api/v1/admin/log`, the append-only log they go to.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use remaudit_api::admin::{
    AdminAction, AdminLogParams, AdminLogResponse, ReasonBody, ReasonParams, check_reason,
};
use remaudit_api::{Problem, paths};
use remaudit_model::FieldError;
use remaudit_store::{Actor, AdminLogCursor, AdminLogQuery};
use tracing::instrument;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::routes::audit::{bad_cursor, page_limit, time_range};
use crate::routes::body::read_json_body;
use crate::startup::AppState;

/// Most bytes of the JSON body that carries a reason: 1024 characters
/// escaped as `\uXXXX` each, and room to spare.
const MAX_REASON_BODY_BYTES: usize = 16 * 1024;

/// Whether the request has a body at all: HTTP/1.1 sends one only with a
/// `Content-Length` above zero or a `Transfer-Encoding`.
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

fn invalid(rule: &str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidReason(vec![FieldError::new("reason", rule, message)])
}

/// Who does an admin action and why: the caller the auth layer let in
/// (`anonymous` when no credential vouched for it) and the reason from the
/// query or the JSON body, checked by [`check_reason`].
pub(crate) async fn actor(
    state: &AppState,
    caller: Option<Caller>,
    query: Result<Query<ReasonParams>, QueryRejection>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Actor, ApiError> {
    let Query(query) = query
        .map_err(|e| ApiError::InvalidQuery(vec![FieldError::new("", "query", e.body_text())]))?;
    let from_body = if has_body(headers) {
        let bytes = read_json_body(
            headers,
            body,
            MAX_REASON_BODY_BYTES,
            state.settings.idle_timeout,
        )
        .await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            // `null` is no body, as the document's `oneOf` says.
            let parsed: Option<ReasonBody> = serde_json::from_slice(&bytes).map_err(|e| {
                invalid(
                    "body",
                    format!("the body must be a JSON object {{\"reason\": \"TEXT\"}}: {e}"),
                )
            })?;
            parsed.map(|b| b.reason)
        }
    } else {
        None
    };
    let reason = match (query.reason, from_body) {
        (Some(q), Some(b)) if q != b => {
            return Err(invalid(
                "conflict",
                "is given in both the query and the body, with different values: give it once",
            ));
        }
        (q, b) => q.or(b),
    };
    let reason = check_reason(reason.as_deref())
        .map_err(|e| ApiError::InvalidReason(vec![e]))?
        .to_owned();
    let subject = caller.unwrap_or_else(Caller::anonymous).subject;
    Ok(Actor { subject, reason })
}

/// The store's query for the log's parameters.
fn log_query(params: AdminLogParams) -> Result<AdminLogQuery, ApiError> {
    let mut errors = Vec::new();
    let (since, until) = time_range(
        params.since.as_deref(),
        params.until.as_deref(),
        &mut errors,
    );
    if let Some(subject) = &params.subject
        && (subject.is_empty()
            || subject.chars().count() > 1024
            || subject.chars().any(char::is_control))
    {
        errors.push(FieldError::new(
            "subject",
            "text",
            "must be 1 to 1024 characters without control characters",
        ));
    }
    let action = params
        .action
        .as_deref()
        .and_then(|text| match text.parse::<AdminAction>() {
            Ok(action) => Some(action),
            Err(message) => {
                errors.push(FieldError::new("action", "enum", message));
                None
            }
        });
    let target = params.target.as_deref().and_then(|text| {
        let id = text.parse::<i64>().ok();
        if id.is_none() {
            errors.push(FieldError::new(
                "target",
                "integer",
                format!("must be a remediation id (a whole number), got {text:?}"),
            ));
        }
        id
    });
    let limit = page_limit(params.limit.as_deref(), &mut errors);
    let after = params.cursor.as_deref().and_then(|token| {
        let cursor = AdminLogCursor::decode(token);
        if cursor.is_none() {
            errors.push(bad_cursor());
        }
        cursor
    });
    if !errors.is_empty() {
        return Err(ApiError::InvalidQuery(errors));
    }
    Ok(AdminLogQuery {
        since,
        until,
        subject: params.subject,
        action,
        target,
        after,
        limit,
    })
}

/// The admin log: every legal hold set or cleared, soft delete and
/// retention run, newest first, with keyset pagination. Entries are never
/// changed or removed.
#[utoipa::path(
    get,
    path = paths::ADMIN_LOG,
    tag = "admin",
    params(AdminLogParams),
    responses(
        (status = 200, description = "A page of the admin log, newest first", body = AdminLogResponse),
        (status = 400, description = "Invalid query parameters", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[instrument(skip_all)]
pub(crate) async fn log(
    State(state): State<AppState>,
    params: Result<Query<AdminLogParams>, QueryRejection>,
) -> Result<Json<AdminLogResponse>, ApiError> {
    let Query(params) = params
        .map_err(|e| ApiError::InvalidQuery(vec![FieldError::new("", "query", e.body_text())]))?;
    let query = log_query(params)?;
    let page = state
        .store
        .admin_log(&query)
        .await
        .map_err(|e| ApiError::from_store(&e, state.settings.retry_after))?;
    Ok(Json(AdminLogResponse {
        items: page.items,
        next_cursor: page.next.map(|c| c.encode()),
    }))
}
