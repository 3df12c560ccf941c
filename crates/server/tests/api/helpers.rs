//! Spawning the service on a free port, with the typed [`ApiClient`] for
//! well-formed requests and raw helpers for the malformed ones.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use remaudit_api::audit::{ListParams, MAX_PAGE};
use remaudit_client::ApiClient;
use remaudit_server::telemetry::{HTTP_DURATION, HTTP_DURATION_BUCKETS};
use remaudit_server::{AppState, PROBLEM_JSON, ServerSettings};
use remaudit_store::Store;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running service on 127.0.0.1 and a client for it.
pub struct TestApp {
    pub address: SocketAddr,
    /// Raw HTTP, for requests the typed client cannot make (malformed bodies, odd headers).
    pub http: reqwest::Client,
    /// The typed client, for well-formed requests.
    pub api: ApiClient,
    pub store: Arc<dyn Store>,
    pub shutdown: CancellationToken,
    pub server: JoinHandle<std::io::Result<()>>,
}

/// The Prometheus recorder of this test process, installed on first use with
/// the buckets `remaudit serve` gives the request histogram: the service runs
/// on the runtime's worker threads, so only a global recorder sees it.
pub fn metrics() -> PrometheusHandle {
    let handle = remaudit_testkit::metrics_handle(&[(HTTP_DURATION, &HTTP_DURATION_BUCKETS)]);
    remaudit_server::telemetry::describe();
    handle
}

/// The value of one series in this process's Prometheus text (`labels` as
/// rendered, e.g. `kind="edited"`), `None` when it is absent.
pub fn series_value(name: &str, labels: &str) -> Option<f64> {
    let series = format!("{name}{{{labels}}} ");
    metrics()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .map(|v| v.trim().parse().expect("a number"))
}

/// Starts the service over `store` on a free port.
pub async fn spawn_app(store: Arc<dyn Store>) -> TestApp {
    spawn_app_with(store, ServerSettings::default()).await
}

/// Starts the service with custom settings.
pub async fn spawn_app_with(store: Arc<dyn Store>, settings: ServerSettings) -> TestApp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let shutdown = CancellationToken::new();
    let state = AppState::new(store.clone(), settings, metrics());
    let server = tokio::spawn(remaudit_server::serve(listener, state, shutdown.clone()));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    TestApp {
        address,
        api: ApiClient::with_http(&format!("http://{address}"), http.clone()),
        http,
        store,
        shutdown,
        server,
    }
}

/// A response read whole: status, headers and body as JSON (`Null` when empty).
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub async fn read(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text}"))
        };
        Self {
            status,
            headers,
            body,
        }
    }

    /// Asserts a problem+json answer of this status and type; returns its `(field, rule)` pairs.
    pub fn assert_problem(&self, status: u16, kind: &str) -> Vec<(String, String)> {
        assert_eq!(self.status, status, "body: {}", self.body);
        assert_eq!(
            self.headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some(PROBLEM_JSON)
        );
        assert_eq!(
            self.body["type"],
            format!("urn:remaudit:problem:{kind}"),
            "{}",
            self.body
        );
        assert_eq!(self.body["status"], status);
        assert!(self.body["title"].is_string() && self.body["detail"].is_string());
        self.body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| {
                        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
                        (
                            e["field"].as_str().unwrap_or_default().to_owned(),
                            e["rule"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// POSTs raw bytes with a content type.
    pub async fn post_raw(&self, path: &str, content_type: Option<&str>, body: Vec<u8>) -> Answer {
        let mut request = self.http.post(self.url(path)).body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        Answer::read(request.send().await.expect("request")).await
    }

    /// POSTs JSON.
    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.post_raw(
            path,
            Some("application/json"),
            serde_json::to_vec(body).expect("json"),
        )
        .await
    }

    /// POSTs one record.
    pub async fn post_record(&self, record: &Value) -> Answer {
        self.post("/api/v1/audit/remediation-orchestration", record)
            .await
    }

    /// POSTs a batch.
    pub async fn post_batch(&self, records: &[Value]) -> Answer {
        self.post(
            "/api/v1/audit/remediation-orchestration/batch",
            &Value::from(records.to_vec()),
        )
        .await
    }

    /// GETs a path.
    pub async fn get(&self, path: &str) -> Answer {
        Answer::read(self.http.get(self.url(path)).send().await.expect("request")).await
    }

    /// Sends a request without a body.
    pub async fn call(&self, method: reqwest::Method, path: &str) -> Answer {
        Answer::read(
            self.http
                .request(method, self.url(path))
                .send()
                .await
                .expect("request"),
        )
        .await
    }

    /// The names of every stored remediation, sorted.
    pub async fn names(&self) -> Vec<String> {
        let mut names: Vec<_> = self
            .list_all()
            .await
            .iter()
            .map(|i| i["remediation_name"].as_str().expect("name").to_owned())
            .collect();
        names.sort();
        names
    }

    /// Every remediation the listing returns (all pages), as JSON.
    pub async fn list_all(&self) -> Vec<Value> {
        let mut items = Vec::new();
        let mut params = ListParams::default().with_limit(MAX_PAGE);
        loop {
            let page = self.api.list(&params).await.expect("list");
            items.extend(
                page.items
                    .iter()
                    .map(|item| serde_json::to_value(item).expect("json")),
            );
            match page.next_cursor {
                Some(cursor) => params = params.with_cursor(cursor),
                None => return items,
            }
        }
    }
}

/// A record as the design's Go client marshals it, with zero server fields.
pub fn go_record(name: &str, fingerprint: &str, phase: &str, start: &str) -> Value {
    serde_json::json!({
        "id": 0,
        "alert_fingerprint": fingerprint,
        "remediation_name": name,
        "overall_phase": phase,
        "start_time": start,
        "duplicate_count": 0,
        "created_at": "0001-01-01T00:00:00Z",
        "updated_at": "0001-01-01T00:00:00Z",
    })
}

/// Generates one test per backend for each listed case in `$module`.
#[macro_export]
macro_rules! both_backends {
    ($module:ident: $($case:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    let db = remaudit_testkit::PgDb::create().await;
                    let app = $crate::helpers::spawn_app(db.store().await).await;
                    $crate::$module::$case(&app).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    let db = remaudit_testkit::SqliteDb::create();
                    let app = $crate::helpers::spawn_app(db.store().await).await;
                    $crate::$module::$case(&app).await;
                }
            )*
        }
    };
}

/// Runs each named `async fn(Arc<dyn Store>)` of the calling module on a
/// fresh PostgreSQL database and on a fresh SQLite file, for tests that
/// start their own service around the store.
#[macro_export]
macro_rules! both_stores {
    ($($case:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    let db = remaudit_testkit::PgDb::create().await;
                    super::$case(db.store().await).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    let db = remaudit_testkit::SqliteDb::create();
                    super::$case(db.store().await).await;
                }
            )*
        }
    };
}
