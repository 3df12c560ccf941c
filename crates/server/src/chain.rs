//! Tamper evidence served: the admin verification route.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use chrono::{TimeDelta, Utc};
use remaudit_api::chain::{
    ChainVerification, DEFAULT_VERIFY_LIMIT, MAX_VERIFY_DAYS, MAX_VERIFY_LIMIT, VerifyParams,
    decode_cursor, encode_cursor,
};
use remaudit_api::{Problem, paths};
use remaudit_model::FieldError;
use tracing::instrument;

use crate::error::ApiError;
use crate::routes::audit::time_param;
use crate::startup::AppState;

/// Checks the hash chains of one page of remediations started in a range
/// of at most 31 days, and names every broken link.
#[utoipa::path(
    get,
    path = paths::ADMIN_VERIFY,
    tag = "admin",
    params(VerifyParams),
    responses(
        (status = 200, description = "One page of remediations checked; `breaks` is empty when every chain in it is whole. Follow `next` for the rest of the range", body = ChainVerification),
        (status = 400, description = "Invalid range, cursor or limit", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The server runs unchained (started without --chain-key-file): there is no key to verify with", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
#[instrument(skip_all)]
pub(crate) async fn verify(
    State(state): State<AppState>,
    params: Result<Query<VerifyParams>, QueryRejection>,
) -> Result<Json<ChainVerification>, ApiError> {
    let Query(params) = params
        .map_err(|e| ApiError::InvalidQuery(vec![FieldError::new("", "query", e.body_text())]))?;
    let mut errors = Vec::new();
    let since = time_param("since", params.since.as_deref(), &mut errors);
    let until = time_param("until", params.until.as_deref(), &mut errors);
    let after = params.after.as_deref().and_then(|text| {
        let cursor = decode_cursor(text);
        if cursor.is_none() {
            errors.push(FieldError::new(
                "after",
                "cursor",
                "is not a cursor this server handed out (use `next` of the previous answer)",
            ));
        }
        cursor
    });
    let limit = params.limit.unwrap_or(DEFAULT_VERIFY_LIMIT);
    if !(1..=MAX_VERIFY_LIMIT).contains(&limit) {
        errors.push(FieldError::new(
            "limit",
            "range",
            format!("must be 1 to {MAX_VERIFY_LIMIT}"),
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::InvalidQuery(errors));
    }
    let until = until.unwrap_or_else(Utc::now);
    let since = since.unwrap_or(until - TimeDelta::days(1));
    if since >= until || until - since > TimeDelta::days(MAX_VERIFY_DAYS) {
        return Err(ApiError::InvalidQuery(vec![FieldError::new(
            "since",
            "range",
            format!(
                "since must be before until, and at most {MAX_VERIFY_DAYS} days before it; verify longer spans page by page or with `remaudit verify`"
            ),
        )]));
    }
    let Some(ring) = state.settings.chain.as_deref() else {
        return Err(ApiError::Conflict(
            "this server runs unchained: start it with --chain-key-file (or REMAUDIT_CHAIN_KEY_FILE) to sign and verify events, or run `remaudit verify` with the key file".to_owned(),
        ));
    };
    let page = remaudit_store::verify_page(
        state.store.as_ref(),
        ring,
        since,
        until,
        after.as_ref(),
        limit,
    )
    .await
    .map_err(|e| ApiError::from_store(&e, state.settings.retry_after))?;
    crate::telemetry::count_chain_breaks(page.breaks.iter().map(|b| b.kind));
    if !page.breaks.is_empty() {
        tracing::warn!(breaks = page.breaks.len(), "broken chain links found");
    }
    Ok(Json(ChainVerification {
        since,
        until,
        remediations: page.remediations,
        verified: page.verified,
        unchained: page.unchained,
        breaks: page.breaks,
        next: page.next.as_ref().map(encode_cursor),
    }))
}
