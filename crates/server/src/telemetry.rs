//! Metrics the service emits: the per-request latency histogram (its
//! `_count` is the request count; no separate counter), with the buckets a
//! recorder should give it. The service only emits; the binary installs the
//! recorder and hands its handle to [`AppState`](crate::AppState).

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

/// Name of the request latency histogram.
pub const HTTP_DURATION: &str = "remaudit_http_request_duration_seconds";

/// Buckets of [`HTTP_DURATION`], in seconds.
pub const HTTP_DURATION_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Registers descriptions of the service's metrics with the installed recorder.
pub fn describe() {
    metrics::describe_histogram!(
        HTTP_DURATION,
        metrics::Unit::Seconds,
        "HTTP request latency by method, route and status; _count counts requests"
    );
    metrics::describe_counter!(
        "remaudit_audit_records_total",
        "Audit records received, by outcome (created, duplicate, rejected)"
    );
    metrics::describe_gauge!(
        "remaudit_db_pool_connections",
        "Database connections by state (idle, in_use)"
    );
    metrics::describe_gauge!(
        "remaudit_db_pool_max_connections",
        "Most database connections the pool may open"
    );
    metrics::describe_counter!(
        crate::auth::DENIED_TOTAL,
        "Requests refused by authentication or authorization, by reason (missing, invalid, expired, role, unavailable)"
    );
    metrics::describe_counter!(
        crate::auth::tokens::RELOAD_TOTAL,
        "Reloads of the tokens file after it changed, by outcome (reloaded, failed: the last good tokens stay)"
    );
    crate::auth::kubernetes::describe_metrics();
}

/// The `method` label: a standard method's name, or `other` for any method a
/// client made up (each would otherwise be a new series).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Records each request's latency by method, matched route and status; every
/// label is from a closed set (standard methods or `other`, route templates or
/// `unmatched`, the statuses the service answers).
pub(crate) async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    // The route template, never the raw path: labels stay bounded.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!(HTTP_DURATION, "method" => method, "route" => route, "status" => status)
        .record(started.elapsed().as_secs_f64());
    response
}
