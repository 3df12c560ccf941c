//! `POST /api/v1/archive/sql`: one read-only statement over the archive.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse as _, Response};
use remaudit_api::archive::{MAX_SQL_CHARS, SqlAnswer, SqlRequest};
use remaudit_api::{Problem, paths};
use tokio::sync::OwnedSemaphorePermit;
use tracing::instrument;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::routes::body::read_json_body;
use crate::startup::AppState;

/// Most bytes of the request body: the longest statement with every
/// character escaped as a `\uXXXX\uXXXX` pair, and room to spare.
const MAX_SQL_BODY_BYTES: usize = 12 * MAX_SQL_CHARS + 1024;

/// Pieces the answer is sent in: the next is made once the last is taken.
const SEND_PIECE_BYTES: usize = 64 * 1024;

/// Longest a caller may take to read an answer; past it the connection is
/// closed, and the answer's place in memory is free.
const SEND_TIME: Duration = Duration::from_mins(1);

/// An answer being sent, and its place in memory.
type Held = Arc<Mutex<Option<(Bytes, OwnedSemaphorePermit)>>>;

/// The answer a response body is sending: dropped with the body (the caller
/// hung up, or the connection failed), it frees the answer and its place at
/// once, not when the send timer would.
struct Sending(Held);

impl Drop for Sending {
    fn drop(&mut self) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
    }
}

/// Runs one read-only SQL statement over the service's archive.
#[utoipa::path(
    post,
    path = paths::ARCHIVE_SQL,
    tag = "archive",
    request_body = SqlRequest,
    responses(
        (status = 200, description = "The answer: its columns, then its rows as arrays of values in column order", body = SqlAnswer),
        (status = 400, description = "The body is not the request (`malformed-json`, `invalid-query`: an empty, whitespace-only or longer than 16384-character statement, max_rows outside 1 to 10000), or the statement is not valid SQL over the archive's tables, is not read-only, or failed on its own terms (`invalid-sql`, with the engine's reason)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than allowed", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not declared as JSON", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Another question over the archive is running; the service answers one at a time (`archive-busy`, with Retry-After)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The answer has more rows than max_rows, is larger than 16 MiB as JSON, or needs more memory than a statement may use (`answer-too-large`): it is refused, never cut", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "A file of the archive is missing or damaged (`archive-damaged`, naming it): no answer is given", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The archive cannot be read, or the statement's process was killed from outside (`archive-unavailable`), or the statement ran past its time (`query-timeout`); both with Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
#[instrument(skip_all)]
pub(crate) async fn sql(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
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
    let (answer, place) = crate::archive::sql(&state, &request, &subject).await?;
    let body = serde_json::to_vec(&answer).map_err(|e| {
        tracing::error!(error = %e, "cannot write the answer");
        ApiError::Internal
    })?;
    drop(answer);
    // Sent a piece at a time, holding one of the few places for answers in
    // memory until the last piece is taken. A timer, not the caller's
    // reading, ends a slow send: at the deadline it drops the answer and
    // the place, and the next piece asked for closes the connection.
    let held: Held = Arc::new(Mutex::new(Some((Bytes::from(body), place))));
    tokio::spawn({
        let held = Arc::clone(&held);
        async move {
            tokio::time::sleep(SEND_TIME).await;
            if held
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
                .is_some()
            {
                tracing::warn!("answer over the archive not read in time; connection closed");
            }
        }
    });
    let pieces = futures::stream::unfold(Some(Sending(held)), |sending| async move {
        let sending = sending?;
        let mut slot = sending.0.lock().unwrap_or_else(PoisonError::into_inner);
        let Some((rest, _place)) = slot.as_mut() else {
            let late = std::io::Error::new(std::io::ErrorKind::TimedOut, "answer not read in time");
            drop(slot);
            return Some((Err(late), None));
        };
        if rest.is_empty() {
            // All taken: the answer and its place go.
            *slot = None;
            return None;
        }
        let piece = rest.split_to(rest.len().min(SEND_PIECE_BYTES));
        drop(slot);
        Some((Ok(piece), Some(sending)))
    });
    let mut response = Body::from_stream(pieces).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
