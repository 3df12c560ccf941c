//! Shared pieces: the binary, free ports, the service in-process on
//! PostgreSQL, and a fault-injecting HTTP proxy in front of it.

use std::net::SocketAddr;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt as _;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::PrometheusHandle;
use rand::{Rng, SeedableRng};
use remaudit_client::metrics::{PUBLISH_DURATION, PUBLISH_DURATION_BUCKETS};
use remaudit_model::RemediationOrchestrationAudit;
use remaudit_server::telemetry::{HTTP_DURATION, HTTP_DURATION_BUCKETS};
use remaudit_server::{AppState, ServerSettings};
use remaudit_testkit::{PgDb, wait_for};
use tokio_util::sync::CancellationToken;

/// The `remaudit` binary, without settings leaking in from the environment.
pub fn remaudit() -> Command {
    let mut cmd = Command::cargo_bin("remaudit").expect("binary built");
    for var in [
        "REMAUDIT_DATABASE_URL",
        "REMAUDIT_LISTEN",
        "REMAUDIT_URL",
        "REMAUDIT_SPOOL_DIR",
        "REMAUDIT_CONFIG",
        "REMAUDIT_TOKEN_FILE",
        "REMAUDIT_CA_FILE",
        "REMAUDIT_CLIENT_CERT",
        "REMAUDIT_CLIENT_KEY",
        "KUBERNETES_SERVICE_HOST",
        "REMAUDIT_AUTH_TOKENS_FILE",
        "REMAUDIT_INSECURE_NO_AUTH",
        "REMAUDIT_ANONYMOUS_ROLE",
        "REMAUDIT_AUTH_KUBERNETES",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs `command` with `input` on its standard input and collects its output.
pub fn output_with_stdin(command: &mut Command, input: &str) -> std::process::Output {
    use std::io::Write as _;
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    child.wait_with_output().expect("wait")
}

/// `remaudit token create`; the token it printed.
pub fn create_token(file: &std::path::Path, subject: &str, role: &str) -> String {
    let out = remaudit()
        .args(["token", "create", "--subject", subject, "--role", role])
        .arg("--tokens-file")
        .arg(file)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).expect("utf-8");
    let token = token.trim();
    assert!(token.starts_with("rmt_"), "{token}");
    token.to_owned()
}

/// A free loopback port (bound, then released for someone else to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Kills the child if the test fails before it exits.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `remaudit serve` on a free loopback port with `database` and the extra
/// `args`, its output discarded, once it answers `/healthz`; its base URL.
pub async fn serve_on(database: &str, args: &[&str]) -> (Running, String) {
    let port = free_port();
    let server = Running(
        remaudit()
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--database-url",
                database,
            ])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn remaudit serve"),
    );
    wait_healthy(port).await;
    (server, format!("http://127.0.0.1:{port}"))
}

/// Waits until something answers 200 on `/healthz` at `port`.
pub async fn wait_healthy(port: u16) {
    wait_answering(
        &reqwest::Client::new(),
        &format!("http://127.0.0.1:{port}/healthz"),
    )
    .await;
}

/// Waits until `http` gets 200 from `url`.
pub async fn wait_answering(http: &reqwest::Client, url: &str) {
    wait_for(
        &format!("{url} to answer 200"),
        Duration::from_secs(30),
        || async move {
            http.get(url)
                .send()
                .await
                .ok()
                .filter(|r| r.status() == 200)
                .map(|_| ())
        },
    )
    .await;
}

/// The Prometheus text a running service at `base` (`http://host:port`)
/// serves on `/metrics`; `None` while it does not answer.
pub async fn metrics_text(http: &reqwest::Client, base: &str) -> Option<String> {
    http.get(format!("{base}{}", remaudit_api::paths::METRICS))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// The metrics recorder of this test process, installed on first use with
/// the buckets `remaudit` gives the request and publish histograms: the
/// service and the publisher run on the runtime's worker threads, so only a
/// global recorder sees them.
pub fn metrics() -> PrometheusHandle {
    let handle = remaudit_testkit::metrics_handle(&[
        (HTTP_DURATION, &HTTP_DURATION_BUCKETS),
        (PUBLISH_DURATION, &PUBLISH_DURATION_BUCKETS),
    ]);
    remaudit_server::telemetry::describe();
    handle
}

/// The audit service, in this process, on its own PostgreSQL database.
pub struct Service {
    pub db: PgDb,
    pub address: SocketAddr,
    shutdown: CancellationToken,
}

impl Service {
    /// Starts on a free port.
    pub async fn start() -> Self {
        Self::start_on(PgDb::create().await, 0).await
    }

    /// Starts on `port` (0 for any) over `db`.
    pub async fn start_on(db: PgDb, port: u16) -> Self {
        let store = db.store().await;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind service");
        let address = listener.local_addr().expect("address");
        let shutdown = CancellationToken::new();
        tokio::spawn(remaudit_server::serve(
            listener,
            AppState::new(store, ServerSettings::default(), metrics()),
            shutdown.clone(),
        ));
        Self {
            db,
            address,
            shutdown,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Events stored, and how many distinct event ids among them.
    pub async fn events(&self) -> (i64, i64) {
        let pool = self.db.pool().await;
        let counts = sqlx::query_as(
            "SELECT count(*), count(DISTINCT event_id) FROM remediation_audit_events",
        )
        .fetch_one(&pool)
        .await
        .expect("count");
        pool.close().await;
        counts
    }

    /// The stored event ids.
    pub async fn event_ids(&self) -> std::collections::HashSet<uuid::Uuid> {
        let pool = self.db.pool().await;
        let ids: Vec<uuid::Uuid> =
            sqlx::query_scalar("SELECT event_id FROM remediation_audit_events")
                .fetch_all(&pool)
                .await
                .expect("ids");
        pool.close().await;
        ids.into_iter().collect()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// How the proxy treats each request.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Forward untouched.
    None,
    /// Refuse about half the requests, with 503 or 429 and `Retry-After: 1`.
    Flaky { seed: u64 },
    /// Hold each request this long before forwarding it (a slow service).
    Slow(Duration),
}

/// One request the proxy saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub refused: bool,
    /// The request body: a retried batch is sent byte for byte again.
    pub body: Bytes,
}

struct ProxyState {
    upstream: String,
    fault: Fault,
    rng: Mutex<rand::rngs::StdRng>,
    seen: Mutex<Vec<Seen>>,
    http: reqwest::Client,
}

/// An HTTP proxy in front of the service that injects faults and records requests.
pub struct Proxy {
    pub address: SocketAddr,
    state: Arc<ProxyState>,
}

async fn relay(
    State(state): State<Arc<ProxyState>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let refuse = match state.fault {
        Fault::Flaky { .. } => state.rng.lock().expect("rng").random_bool(0.5),
        _ => false,
    };
    state.seen.lock().expect("seen").push(Seen {
        at: Instant::now(),
        refused: refuse,
        body: body.clone(),
    });
    if refuse {
        let status = if state.rng.lock().expect("rng").random_bool(0.5) {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        return (status, [("retry-after", "1")], "try later").into_response();
    }
    if let Fault::Slow(delay) = state.fault {
        // The service is slow: that is the scenario, not a wait for a condition.
        tokio::time::sleep(delay).await;
    }
    let mut request = state
        .http
        .post(format!("{}{}", state.upstream, uri.path()))
        .body(body);
    if let Some(ct) = headers.get("content-type") {
        request = request.header("content-type", ct.clone());
    }
    match request.send().await {
        Ok(answer) => {
            let status = StatusCode::from_u16(answer.status().as_u16()).expect("status");
            let bytes = answer.bytes().await.unwrap_or_default();
            (status, [("content-type", "application/json")], bytes).into_response()
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

impl Proxy {
    pub async fn start(upstream: String, fault: Fault) -> Self {
        let seed = match fault {
            Fault::Flaky { seed } => seed,
            _ => 0,
        };
        let state = Arc::new(ProxyState {
            upstream,
            fault,
            rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)),
            seen: Mutex::new(Vec::new()),
            http: reqwest::Client::new(),
        });
        let app = axum::Router::new()
            .fallback(relay)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { address, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("seen").clone()
    }
}

/// Record `i` of a run: its own remediation and a fresh event id.
pub fn record(run: &str, i: usize) -> RemediationOrchestrationAudit {
    let start = chrono::Utc::now() - chrono::Duration::minutes(30);
    serde_json::from_value(serde_json::json!({
        "alert_fingerprint": format!("{run}-alert-{}", i % 97),
        "remediation_name": format!("{run}-rr-{i:06}"),
        "overall_phase": "completed",
        "start_time": start.to_rfc3339(),
        "completion_time": (start + chrono::Duration::seconds(90)).to_rfc3339(),
        "event_id": uuid::Uuid::new_v4(),
        "service_crd_statuses": {"workflowExecution": {"phase": "completed", "startTime": start.to_rfc3339(), "success": true}},
    }))
    .expect("record")
}
