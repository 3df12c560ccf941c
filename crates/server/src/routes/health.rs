//! Liveness, readiness and metrics.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use remaudit_api::chain::ChainMode;
use remaudit_api::health::{Health, HealthStatus};
use remaudit_api::paths;

use crate::error::{ApiError, Problem};
use crate::startup::AppState;

/// The process is up.
#[utoipa::path(get, path = paths::HEALTHZ, tag = "health", responses((status = 200, body = Health)))]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health {
        status: HealthStatus::Ok,
        database: None,
        chain: None,
    })
}

/// The database answers and its schema is current.
#[utoipa::path(
    get,
    path = paths::READYZ,
    tag = "health",
    responses(
        (status = 200, body = Health),
        (status = 503, description = "Not ready; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    let retry_after = state.settings.retry_after;
    let checked = tokio::time::timeout(Duration::from_secs(2), state.store.ready()).await;
    crate::telemetry::database_up(matches!(checked, Ok(Ok(()))));
    match checked {
        Ok(Ok(())) => Ok(Json(Health {
            status: HealthStatus::Ready,
            database: Some(state.store.backend().to_owned()),
            chain: Some(if state.settings.chain.is_some() {
                ChainMode::On
            } else {
                ChainMode::Off
            }),
        })),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready");
            Err(ApiError::Unavailable(retry_after))
        }
        Err(_) => {
            tracing::warn!("not ready: database did not answer within 2 s");
            Err(ApiError::Unavailable(retry_after))
        }
    }
}

/// Prometheus metrics of the service.
#[utoipa::path(get, path = paths::METRICS, tag = "health", responses((status = 200, content_type = "text/plain", body = String)))]
pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    crate::telemetry::record_process_metrics();
    let pool = state.store.pool_stats();
    metrics::gauge!("remaudit_db_pool_connections", "state" => "idle").set(f64::from(pool.idle));
    metrics::gauge!("remaudit_db_pool_connections", "state" => "in_use")
        .set(f64::from(pool.size.saturating_sub(pool.idle)));
    metrics::gauge!("remaudit_db_pool_max_connections").set(f64::from(pool.max));
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
