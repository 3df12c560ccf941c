//! Building the router and serving it until shutdown.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use remaudit_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;

use crate::error::ApiError;
use crate::openapi::ApiDoc;
use crate::routes::{analytics, audit, health};
use crate::settings::ServerSettings;
use crate::telemetry;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// Where records go.
    pub store: Arc<dyn Store>,
    /// Limits and timeouts.
    pub settings: Arc<ServerSettings>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
}

impl AppState {
    /// State over a store, with the process-wide metrics recorder.
    #[must_use]
    pub fn new(store: Arc<dyn Store>, settings: ServerSettings) -> Self {
        Self {
            store,
            settings: Arc::new(settings),
            metrics: telemetry::metrics_handle(),
        }
    }
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

async fn not_found(request: Request) -> ApiError {
    ApiError::NotFound(format!(
        "no route for {} {}",
        request.method(),
        request.uri().path()
    ))
}

/// Answers 503 when a request runs past the configured timeout.
async fn deadline(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit = state.settings.request_timeout;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(?limit, "request timed out");
            ApiError::Timeout(limit).into_response()
        }
    }
}

/// The service's routes and middleware.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/api/v1/audit/remediation-orchestration",
            post(audit::create).get(audit::list),
        )
        .route(
            "/api/v1/audit/remediation-orchestration/batch",
            post(audit::create_batch),
        )
        .route(
            "/api/v1/audit/remediation-orchestration/{id}",
            get(audit::get).delete(audit::delete),
        )
        .route(
            "/api/v1/audit/remediation-orchestration/{id}/legal-hold",
            put(audit::hold).delete(audit::release),
        )
        .route(
            "/api/v1/audit/analytics/postmortem",
            get(analytics::postmortem),
        )
        .route(
            "/api/v1/audit/analytics/success-rate",
            get(analytics::success_rate),
        )
        .route(
            "/api/v1/audit/analytics/durations",
            get(analytics::durations),
        )
        .route("/api/v1/audit/analytics/slowest", get(analytics::slowest))
        .route("/api/v1/audit/analytics/failures", get(analytics::failures))
        .route("/api/v1/audit/analytics/retries", get(analytics::retries))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/api/v1/openapi.json", get(openapi))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), deadline))
        .layer(middleware::from_fn(telemetry::track))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves until `shutdown` is cancelled, then lets in-flight requests finish.
///
/// # Errors
/// When the listener fails.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let upkeep = {
        let handle = state.metrics.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = every.tick() => handle.run_upkeep(),
                }
            }
        })
    };
    let app = router(state);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    upkeep.abort();
    result
}
