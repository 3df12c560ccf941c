//! Tamper evidence served: the admin verification route, and the periodic
//! check of recent chains that the `chain verification failing` alert
//! watches.

use std::sync::Arc;
use std::time::Duration;

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

use remaudit_model::chain::KeyRing;
use remaudit_store::chain::MAX_VERIFY_PAGE;
use remaudit_store::{Store, StoreError};
use tokio_util::sync::CancellationToken;

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

/// Checks the chains of the remediations started in the last `window`, now
/// and then every `every`, until `shutdown`. Each broken link found is
/// logged and counted in [`CHAIN_BREAKS_FOUND`](crate::telemetry::CHAIN_BREAKS_FOUND) (a pass
/// that meets a break again counts it again, so the alert keeps firing
/// until it is dealt with); each finished pass sets
/// [`CHAIN_LAST_CHECK`](crate::telemetry::CHAIN_LAST_CHECK). A pass that cannot read the
/// store is logged, and the next one tries again.
pub fn spawn_periodic_check(
    store: Arc<dyn Store>,
    ring: Arc<KeyRing>,
    every: Duration,
    window: TimeDelta,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                pass = check_recent(store.as_ref(), &ring, window) => match pass {
                    Ok((remediations, breaks)) => {
                        metrics::gauge!(crate::telemetry::CHAIN_LAST_CHECK)
                            .set(remaudit_model::approx_f64(Utc::now().timestamp_millis()) / 1000.0);
                        tracing::info!(remediations, breaks, "periodic chain check finished");
                    }
                    Err(e) => tracing::error!(error = %e, "periodic chain check could not read the store; the next one tries again"),
                },
            }
        }
    })
}

/// One pass over the remediations started in the last `window` (and any
/// started up to an hour ahead of the clock): how many it checked and how
/// many broken links it found.
async fn check_recent(
    store: &dyn Store,
    ring: &KeyRing,
    window: TimeDelta,
) -> Result<(u64, u64), StoreError> {
    let now = Utc::now();
    let (since, until) = (now - window, now + TimeDelta::hours(1));
    let (mut remediations, mut breaks) = (0, 0);
    let mut after = None;
    loop {
        let page =
            remaudit_store::verify_page(store, ring, since, until, after.as_ref(), MAX_VERIFY_PAGE)
                .await?;
        crate::telemetry::count_chain_breaks(page.breaks.iter().map(|b| b.kind));
        for b in &page.breaks {
            tracing::warn!(broken = %b, "periodic chain check found a broken link");
        }
        remediations += page.remediations;
        breaks += page.breaks.len() as u64;
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok((remediations, breaks)),
        }
    }
}
