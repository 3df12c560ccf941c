//! Building the router and serving it until shutdown.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::PrometheusHandle;
use remaudit_api::paths;
use remaudit_store::Store;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::auth::layer::{Guard, authorize};
use crate::auth::{AuthPolicy, ClientCertificate, Role};
use crate::chain;
use crate::error::ApiError;
use crate::openapi;
use crate::routes::{admin, analytics, archive, audit, health, session};
use crate::settings::ServerSettings;
use crate::telemetry;
use crate::tls::{self, Tls};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// Where records go.
    pub store: Arc<dyn Store>,
    /// Limits and timeouts.
    pub settings: Arc<ServerSettings>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Who may call what.
    pub auth: Arc<AuthPolicy>,
    /// The archive `archive=true` reads, when the service has one.
    pub archive: Option<Arc<crate::archive::ArchiveReader>>,
    /// The writers single POSTs share, started on the first one.
    coalescer: Arc<std::sync::OnceLock<crate::coalesce::Coalescer>>,
}

impl AppState {
    /// State over a store; `metrics` renders `/metrics` (the handle of the
    /// recorder the binary installed).
    #[must_use]
    pub fn new(store: Arc<dyn Store>, settings: ServerSettings, metrics: PrometheusHandle) -> Self {
        Self {
            store,
            settings: Arc::new(settings),
            metrics,
            auth: Arc::new(AuthPolicy::default()),
            archive: None,
            coalescer: Arc::new(std::sync::OnceLock::new()),
        }
    }

    /// The group commit of single POSTs, unless it is off
    /// (`single_post_batch_records` 1).
    pub(crate) fn coalescer(&self) -> Option<&crate::coalesce::Coalescer> {
        (self.settings.single_post_batch_records > 1).then(|| {
            self.coalescer
                .get_or_init(|| crate::coalesce::Coalescer::start(&self.store, &self.settings))
        })
    }

    /// The same state under `policy` (without it, every route is open).
    #[must_use]
    pub fn with_auth(mut self, policy: AuthPolicy) -> Self {
        self.auth = Arc::new(policy);
        self
    }

    /// The same state, answering `archive=true` from `archive`.
    #[must_use]
    pub fn with_archive(mut self, archive: crate::archive::ArchiveReader) -> Self {
        self.archive = Some(Arc::new(archive));
        self
    }
}

/// One `/api/v1` route: its method, path template, the role it needs, and
/// its handler.
pub struct ApiRoute {
    /// The HTTP method.
    pub method: Method,
    /// The path template, as in [`remaudit_api::paths`].
    pub path: &'static str,
    /// What a caller needs to use it.
    pub role: Role,
    handler: MethodRouter<AppState>,
}

impl std::fmt::Debug for ApiRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiRoute")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

fn row(
    method: Method,
    path: &'static str,
    role: Role,
    handler: MethodRouter<AppState>,
) -> ApiRoute {
    ApiRoute {
        method,
        path,
        role,
        handler,
    }
}

/// Every `/api/v1` route with the role it needs: the one table the router,
/// the auth layer and the OpenAPI document's security are built from.
/// Adding a route is adding a row.
#[must_use]
pub fn api_routes() -> Vec<ApiRoute> {
    use Role::{Admin, Reader, Writer};
    vec![
        row(Method::POST, paths::AUDIT, Writer, post(audit::create)),
        row(
            Method::POST,
            paths::AUDIT_BATCH,
            Writer,
            post(audit::create_batch),
        ),
        row(Method::GET, paths::AUDIT, Reader, get(audit::list)),
        row(Method::GET, paths::ADMIN_VERIFY, Admin, get(chain::verify)),
        row(Method::GET, paths::AUDIT_ITEM, Reader, get(audit::get)),
        row(
            Method::DELETE,
            paths::AUDIT_ITEM,
            Admin,
            delete(audit::delete),
        ),
        row(
            Method::PUT,
            paths::AUDIT_LEGAL_HOLD,
            Admin,
            put(audit::hold),
        ),
        row(
            Method::DELETE,
            paths::AUDIT_LEGAL_HOLD,
            Admin,
            delete(audit::release),
        ),
        row(
            Method::GET,
            paths::ANALYTICS_POSTMORTEM,
            Reader,
            get(analytics::postmortem),
        ),
        row(
            Method::GET,
            paths::ANALYTICS_SUCCESS_RATE,
            Reader,
            get(analytics::success_rate),
        ),
        row(
            Method::GET,
            paths::ANALYTICS_DURATIONS,
            Reader,
            get(analytics::durations),
        ),
        row(
            Method::GET,
            paths::ANALYTICS_SLOWEST,
            Reader,
            get(analytics::slowest),
        ),
        row(
            Method::GET,
            paths::ANALYTICS_FAILURES,
            Reader,
            get(analytics::failures),
        ),
        row(
            Method::GET,
            paths::ANALYTICS_RETRIES,
            Reader,
            get(analytics::retries),
        ),
        row(Method::POST, paths::ARCHIVE_SQL, Reader, post(archive::sql)),
        row(Method::GET, paths::ADMIN_LOG, Admin, get(admin::log)),
        row(Method::GET, paths::WHOAMI, Reader, get(session::whoami)),
        // The document describes the API, not its data; still a reader's,
        // as every /api/v1 route needs a role (docs/security.md).
        row(
            Method::GET,
            paths::OPENAPI,
            Reader,
            get(openapi::serve_document),
        ),
    ]
}

/// `handler` behind the guard of `role`.
fn guarded(
    state: &AppState,
    method: &Method,
    path: &'static str,
    role: Role,
    handler: MethodRouter<AppState>,
) -> MethodRouter<AppState> {
    let guard = Guard {
        policy: state.auth.clone(),
        role,
        method: method_name(method),
        route: path,
        retry_after: state.settings.retry_after,
    };
    handler.route_layer(middleware::from_fn_with_state(guard, authorize))
}

fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        _ => "other",
    }
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
    if let Ok(response) = tokio::time::timeout(limit, next.run(request)).await {
        response
    } else {
        tracing::warn!(?limit, "request timed out");
        ApiError::Timeout(limit).into_response()
    }
}

/// The request limit and what to answer past it.
#[derive(Clone)]
struct Shed {
    permits: Arc<Semaphore>,
    limit: usize,
    retry_after: Duration,
}

/// Answers 503 with `Retry-After` when as many requests as allowed are in
/// progress, rather than queueing them behind the database.
async fn shed_load(State(shed): State<Shed>, request: Request, next: Next) -> Response {
    let Ok(_permit) = shed.permits.try_acquire() else {
        tracing::warn!(limit = shed.limit, "request shed: too many in progress");
        return ApiError::Overloaded(shed.retry_after).into_response();
    };
    next.run(request).await
}

/// The service's routes and middleware; starts the counters its alerts read at 0.
pub fn router(state: AppState) -> Router {
    crate::telemetry::start_counters();
    let shed = Shed {
        permits: Arc::new(Semaphore::new(
            state
                .settings
                .max_concurrent_requests
                .clamp(1, Semaphore::MAX_PERMITS),
        )),
        limit: state.settings.max_concurrent_requests,
        retry_after: state.settings.retry_after,
    };
    // Same path, several rows: axum merges their method routers.
    let api = api_routes()
        .into_iter()
        .fold(Router::new(), |router, r| {
            let handler = guarded(&state, &r.method, r.path, r.role, r.handler);
            router.route(r.path, handler)
        })
        // Readiness asks the database, so it counts; an overloaded replica
        // reporting not-ready is what should happen.
        .route(paths::READYZ, get(health::readyz))
        .route_layer(middleware::from_fn_with_state(shed, shed_load));
    // Liveness and metrics are answered from memory, even at the limit.
    let metrics = if state.auth.metrics_guarded() {
        guarded(
            &state,
            &Method::GET,
            paths::METRICS,
            Role::Reader,
            get(health::metrics),
        )
    } else {
        get(health::metrics)
    };
    let operations = Router::new()
        .route(paths::HEALTHZ, get(health::healthz))
        .route(paths::METRICS, metrics);
    api.merge(operations)
        .merge(crate::web::routes())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), deadline))
        .layer(middleware::from_fn(telemetry::track))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves until `shutdown` is cancelled, then gives requests in flight
/// `shutdown_grace` to finish before dropping their connections.
///
/// HTTP/1.1 only. Each connection must send a request's headers within
/// `header_read_timeout` (also the keep-alive idle limit), and loses its
/// connection when it stops reading an answer for `idle_timeout`; at most
/// `max_connections` are open at once, and further ones wait in the listen
/// backlog until one closes.
///
/// # Errors
/// None today; the signature keeps room for listener failures.
///
/// # Panics
/// Never: the connection semaphore is never closed.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, state, shutdown, None).await
}

/// As [`serve`], over TLS when `tls` is given: each connection must complete
/// its handshake within the handshake timeout (holding one of the
/// `max_connections` slots meanwhile), the certificate files are checked for
/// new content until shutdown, and a verified client certificate's subject
/// is put in every request of its connection as a [`ClientCertificate`].
///
/// # Errors
/// None today; the signature keeps room for listener failures.
///
/// # Panics
/// Never: the connection semaphore is never closed.
pub async fn serve_with(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
    tls: Option<Tls>,
) -> std::io::Result<()> {
    let reload = tls
        .as_ref()
        .and_then(|tls| tls.spawn_reload(shutdown.clone()));
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
    let settings = state.settings.clone();
    let app = router(state);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        // Bounds what a connection buffers from the socket (headers, body chunks).
        .max_buf_size(MAX_READ_BUFFER);
    let builder = Arc::new(builder);
    // One permit per open connection; when shutting down, holding them all
    // means every connection has closed.
    let slots = u32::try_from(settings.max_connections.max(1)).unwrap_or(u32::MAX);
    let open = Arc::new(Semaphore::new(slots as usize));
    let dropped = CancellationToken::new();
    loop {
        let slot = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            slot = open.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(&e, &shutdown).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            app: app.clone(),
            builder: builder.clone(),
            idle_timeout: settings.idle_timeout,
            shutdown: shutdown.clone(),
            dropped: dropped.clone(),
            tls: tls.clone(),
        };
        tokio::spawn(connection.run(stream, slot));
    }
    drop(listener);
    let grace = settings.shutdown_grace;
    if tokio::time::timeout(grace, open.acquire_many(slots))
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            open = slots as usize - open.available_permits(),
            "shutdown grace period over; dropping connections still open"
        );
        dropped.cancel();
        let _ = open.acquire_many(slots).await;
    }
    upkeep.abort();
    if let Some(reload) = reload {
        reload.abort();
    }
    Ok(())
}

/// Largest buffer a connection keeps for what it reads: 1,024 connections
/// sending headers slowly hold at most 64 MiB.
const MAX_READ_BUFFER: usize = 64 * 1024;

/// Waits out an accept error: at once for errors of one connection, a
/// second for the others (out of file descriptors) so the loop does not spin.
async fn accept_failed(err: &std::io::Error, shutdown: &CancellationToken) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        err.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %err, "cannot accept connections; retrying in 1 s");
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(Duration::from_secs(1)) => {}
    }
}

/// What one connection's task needs.
struct Connection {
    app: Router,
    builder: Arc<http1::Builder>,
    idle_timeout: Duration,
    shutdown: CancellationToken,
    dropped: CancellationToken,
    tls: Option<Tls>,
}

impl Connection {
    /// Serves one connection until it closes, shutdown ends it gracefully, or
    /// the grace period is over; `slot` is released when it ends.
    async fn run(self, stream: TcpStream, slot: OwnedSemaphorePermit) {
        let io = StallLimit::new(stream, self.idle_timeout);
        match self.tls.clone() {
            None => self.serve(io, None).await,
            Some(tls) => {
                if let Some((stream, certificate)) = self.handshake(&tls, io).await {
                    self.serve(stream, certificate).await;
                }
            }
        }
        drop(slot);
    }

    /// The TLS handshake, bounded by the handshake timeout and shutdown;
    /// the stream and the subject of a verified client certificate, or
    /// `None` when the connection is to be closed.
    async fn handshake(
        &self,
        tls: &Tls,
        io: StallLimit,
    ) -> Option<(
        tokio_rustls::server::TlsStream<StallLimit>,
        Option<ClientCertificate>,
    )> {
        let limit = tls.handshake_timeout();
        let accepted = tokio::select! {
            () = self.shutdown.cancelled() => return None,
            accepted = tokio::time::timeout(limit, tls.acceptor().accept(io)) => accepted,
        };
        let stream = match accepted {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake refused");
                metrics::counter!(tls::HANDSHAKE_FAILED_TOTAL, "reason" => "refused").increment(1);
                return None;
            }
            Err(_) => {
                tracing::debug!(?limit, "TLS handshake timed out");
                metrics::counter!(tls::HANDSHAKE_FAILED_TOTAL, "reason" => "timeout").increment(1);
                return None;
            }
        };
        let certificate = match stream.get_ref().1.peer_certificates() {
            Some([leaf, ..]) => {
                // The verifier accepted it, so it parses; were it not to,
                // the connection must not go on as if it had none.
                let Some(subject) = tls::subject_of(leaf) else {
                    tracing::warn!(
                        "verified client certificate without a readable subject; connection closed"
                    );
                    return None;
                };
                Some(ClientCertificate { subject })
            }
            _ => None,
        };
        Some((stream, certificate))
    }

    /// Serves HTTP on `io`, with `certificate` in every request's extensions.
    async fn serve<I>(&self, io: I, certificate: Option<ClientCertificate>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let app = tower::ServiceExt::map_request(
            self.app.clone(),
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                if let Some(certificate) = &certificate {
                    request.extensions_mut().insert(certificate.clone());
                }
                request
            },
        );
        let service = TowerToHyperService::new(app);
        let connection = self.builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let ended = tokio::select! {
            ended = connection.as_mut() => ended,
            () = self.shutdown.cancelled() => {
                connection.as_mut().graceful_shutdown();
                tokio::select! {
                    ended = connection.as_mut() => ended,
                    () = self.dropped.cancelled() => Ok(()),
                }
            }
        };
        if let Err(e) = ended {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}

/// A socket whose writes fail once they have waited `limit` for the peer to
/// read: a client that stops reading its answer cannot hold the connection
/// (and the answer's memory) forever.
struct StallLimit {
    inner: TcpStream,
    limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl StallLimit {
    fn new(inner: TcpStream, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            stalled: None,
        }
    }
}

/// Tracks how long a write has been pending, failing it past the limit.
fn stall<T>(
    polled: Poll<std::io::Result<T>>,
    stalled: &mut Option<Pin<Box<Sleep>>>,
    limit: Duration,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<T>> {
    if polled.is_ready() {
        *stalled = None;
        return polled;
    }
    let timer = stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
    match timer.as_mut().poll(cx) {
        Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client stopped reading the answer",
        ))),
        Poll::Pending => Poll::Pending,
    }
}

impl AsyncRead for StallLimit {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for StallLimit {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        stall(polled, &mut this.stalled, this.limit, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        stall(polled, &mut this.stalled, this.limit, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        stall(polled, &mut this.stalled, this.limit, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        stall(polled, &mut this.stalled, this.limit, cx)
    }
}
