//! `POST /api/v1/archive/sql`: one read-only statement over the archive.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::{Extension, Json};
use remaudit_api::archive::{MAX_SQL_BYTES, SqlAnswer, SqlRequest};
use remaudit_api::{Problem, paths};
use tracing::instrument;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::routes::body::read_json_body;
use crate::startup::AppState;

/// Most bytes of the request body: the longest statement with every
/// character escaped as `\uXXXX`, and room to spare.
const MAX_SQL_BODY_BYTES: usize = 6 * MAX_SQL_BYTES + 1024;

/// Runs one read-only SQL statement over the service's archive.
#[utoipa::path(
    post,
    path = paths::ARCHIVE_SQL,
    tag = "archive",
    request_body = SqlRequest,
    responses(
        (status = 200, description = "The answer: its columns, then its rows as arrays of values in column order", body = SqlAnswer),
        (status = 400, description = "The body is not the request (`malformed-json`, `invalid-query`: an empty or longer than 16384-byte statement, max_rows outside 1 to 10000), or the statement is not valid SQL over the archive's tables, is not read-only, or failed on its own terms (`invalid-sql`, with the engine's reason)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than allowed", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not declared as JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The answer has more rows than max_rows, is larger than 16 MiB as JSON, or needs more memory than a statement may use (`answer-too-large`): it is refused, never cut", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "A file of the archive is missing or damaged (`archive-damaged`, naming it): no answer is given", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The archive cannot be read or another archive question is running (`archive-unavailable`), or the statement ran past its time (`query-timeout`); both with Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
#[instrument(skip_all)]
pub(crate) async fn sql(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<SqlAnswer>, ApiError> {
    let bytes = read_json_body(
        &headers,
        body,
        MAX_SQL_BODY_BYTES,
        state.settings.idle_timeout,
    )
    .await?;
    let malformed = |why: String| {
        ApiError::MalformedJson(format!(
            "the body must be a JSON object {{\"sql\": \"SELECT …\", \"max_rows\": N}}: {why}"
        ))
    };
    // An object only: serde would also take the fields as an array.
    let body: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| malformed(e.to_string()))?;
    if !body.is_object() {
        return Err(malformed("got another JSON value".to_owned()));
    }
    let request: SqlRequest = serde_json::from_value(body).map_err(|e| malformed(e.to_string()))?;
    let subject = caller.map_or_else(|| Caller::anonymous().subject, |c| c.0.subject);
    crate::archive::sql(&state, &request, &subject)
        .await
        .map(Json)
}
