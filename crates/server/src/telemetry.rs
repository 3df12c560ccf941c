//! Metrics the service emits: the per-request latency histogram (its
//! `_count` is the request count; no separate counter), with the buckets a
//! recorder should give it. The service only emits; the binary installs the
//! recorder and hands its handle to [`AppState`](crate::AppState).

use std::sync::LazyLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use remaudit_model::chain::BreakKind;

/// Name of the request latency histogram.
pub const HTTP_DURATION: &str = "remaudit_http_request_duration_seconds";

/// Gauge: 1 when the last readiness check (`/readyz`) found the database
/// answering with a current schema, 0 when it did not. The kubelet's
/// readiness probe keeps it fresh.
pub const DATABASE_UP: &str = "remaudit_database_up";

/// Counter of broken chain links found by the admin verification route and
/// by the periodic check ([`crate::spawn_periodic_check`]), by
/// `kind` (`edited`, `deleted`, `inserted`, `reordered`). A range verified
/// twice counts its breaks twice: it counts findings, not distinct links.
pub const CHAIN_BREAKS_FOUND: &str = "remaudit_chain_breaks_found_total";

/// Gauge: when the service's own periodic chain check last finished a
/// pass (Unix seconds); absent while none has.
pub const CHAIN_LAST_CHECK: &str = "remaudit_chain_last_check_timestamp_seconds";

/// Every `kind` of [`CHAIN_BREAKS_FOUND`].
const BREAK_KINDS: [BreakKind; 4] = [
    BreakKind::Edited,
    BreakKind::Deleted,
    BreakKind::Inserted,
    BreakKind::Reordered,
];

/// Single-record POSTs waiting for the commit of their shared transaction.
pub const SINGLE_POSTS_WAITING: &str = "remaudit_single_posts_waiting";

/// Buckets of [`HTTP_DURATION`], in seconds.
pub const HTTP_DURATION_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// The process's own figures: resident and virtual memory, CPU seconds,
/// threads, open and allowed file descriptors, start time, named
/// `process_*` as Prometheus' own client libraries name them.
static PROCESS: LazyLock<metrics_process::Collector> =
    LazyLock::new(metrics_process::Collector::default);

/// Reads the process's own figures (memory, CPU, threads, file
/// descriptors) into the recorder; each `/metrics` handler calls it before
/// rendering.
pub fn record_process_metrics() {
    PROCESS.collect();
}

/// Registers descriptions of the service's metrics with the installed recorder.
pub fn describe() {
    PROCESS.describe();
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
        SINGLE_POSTS_WAITING,
        "Single-record POSTs waiting for the commit of their shared transaction (queued or being written)"
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
    metrics::describe_counter!(
        crate::tls::RELOAD_TOTAL,
        "Reloads of the TLS certificate and key after they changed, by outcome (reloaded, failed: the last good pair stays)"
    );
    metrics::describe_counter!(
        crate::tls::HANDSHAKE_FAILED_TOTAL,
        "TLS handshakes that failed, by reason (refused, timeout)"
    );
    metrics::describe_gauge!(
        DATABASE_UP,
        "1 when the last readiness check found the database answering with a current schema, 0 when not"
    );
    metrics::describe_counter!(
        CHAIN_BREAKS_FOUND,
        "Broken chain links found by GET /api/v1/admin/verify and by the service's periodic check, by kind (edited, deleted, inserted, reordered)"
    );
    metrics::describe_gauge!(
        CHAIN_LAST_CHECK,
        metrics::Unit::Seconds,
        "When the service's periodic chain check last finished a pass (Unix time)"
    );
    crate::auth::kubernetes::describe_metrics();
}

/// Starts the chain-break counters at 0, so that an alert on their increase
/// sees the first break (a series first seen at 1 shows no increase). Called
/// when the service's router is built: only a process that serves has them.
pub(crate) fn start_counters() {
    for kind in BREAK_KINDS {
        metrics::counter!(CHAIN_BREAKS_FOUND, "kind" => kind.as_str()).increment(0);
    }
}

/// Counts the broken links one verification found, by kind.
pub(crate) fn count_chain_breaks(kinds: impl IntoIterator<Item = BreakKind>) {
    for kind in kinds {
        metrics::counter!(CHAIN_BREAKS_FOUND, "kind" => kind.as_str()).increment(1);
    }
}

/// Sets [`DATABASE_UP`] from a readiness check's result.
pub(crate) fn database_up(up: bool) {
    metrics::gauge!(DATABASE_UP).set(if up { 1.0 } else { 0.0 });
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
