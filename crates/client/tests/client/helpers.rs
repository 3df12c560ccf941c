//! The service in-process on SQLite with its tokens file enforced, token
//! files as a client holds them, and the process's metrics.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use metrics_exporter_prometheus::PrometheusHandle;
use remaudit_client::PublisherSettings;
use remaudit_client::credentials::CredentialSettings;
use remaudit_server::auth::tokens::{TokenRecord, hash_token, render};
use remaudit_server::auth::{AuthPolicy, Authenticator, Role, TokensFile};
use remaudit_server::{AppState, ServerSettings};
use remaudit_store::Store;
use remaudit_testkit::SqliteDb;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub const WRITER: &str = "rmt_client-writer-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
pub const WRITER_NEXT: &str = "rmt_client-writer-next-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
pub const READER: &str = "rmt_client-reader-cccccccccccccccccccccccccccccccccccc";
pub const READER_NEXT: &str = "rmt_client-reader-next-dddddddddddddddddddddddddddddd";
pub const UNKNOWN: &str = "rmt_client-unknown-eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee";

/// The metrics recorder of this test process (the publisher counts on
/// worker threads, so only a global recorder sees it).
pub fn metrics() -> PrometheusHandle {
    remaudit_testkit::metrics_handle(&[])
}

/// The value of one counter series in the Prometheus text, 0 when absent.
pub fn counter(name: &str, labels: &str) -> f64 {
    let series = format!("{name}{{{labels}}} ");
    metrics()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0.0, |v| v.trim().parse().expect("a number"))
}

/// Writes `text` the way an operator or the kubelet replaces a file: a new
/// file renamed over the old one.
pub fn write_file(path: &Path, text: &str) {
    let temp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&temp).expect("create");
    f.write_all(text.as_bytes()).expect("write");
    f.sync_all().expect("sync");
    std::fs::rename(&temp, path).expect("rename");
}

fn record_of(token: &str, subject: &str, role: Role) -> TokenRecord {
    TokenRecord {
        sha256: hash_token(token),
        subject: subject.to_owned(),
        role,
        created: Utc::now() - chrono::Duration::days(1),
        expires: None,
    }
}

/// The service on SQLite over loopback, with a tokens file enforced.
pub struct Secured {
    pub address: SocketAddr,
    pub store: Arc<dyn Store>,
    tokens: Arc<TokensFile>,
    tokens_path: PathBuf,
    /// Where tests keep their token files.
    pub dir: tempfile::TempDir,
    shutdown: CancellationToken,
    _db: SqliteDb,
}

impl Secured {
    /// Starts with `tokens` (token, role) in force.
    pub async fn start(tokens: &[(&str, Role)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let tokens_path = dir.path().join("tokens.toml");
        let db = SqliteDb::create();
        let store = db.store().await;
        write_file(&tokens_path, &render(&records(tokens)));
        let file = TokensFile::load(&tokens_path).expect("tokens file");
        let policy = AuthPolicy::Enforced {
            authenticators: vec![file.clone() as Arc<dyn Authenticator>],
            anonymous_role: None,
            metrics_require_reader: false,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let shutdown = CancellationToken::new();
        let state =
            AppState::new(store.clone(), ServerSettings::default(), metrics()).with_auth(policy);
        tokio::spawn(remaudit_server::serve(listener, state, shutdown.clone()));
        Self {
            address,
            store,
            tokens: file,
            tokens_path,
            dir,
            shutdown,
            _db: db,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Puts exactly `tokens` in force (as an operator editing the tokens
    /// file, and the service's reload after it).
    pub fn set_tokens(&self, tokens: &[(&str, Role)]) {
        write_file(&self.tokens_path, &render(&records(tokens)));
        self.tokens.reload();
    }

    /// A file in this service's directory holding `token`.
    pub fn token_file(&self, name: &str, token: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        write_file(&path, &format!("{token}\n"));
        path
    }

    /// How many remediations the service stored (asked as the store, not over HTTP).
    pub async fn stored(&self) -> usize {
        let page = self
            .store
            .list(&remaudit_store::ListQuery {
                limit: 1000,
                ..remaudit_store::ListQuery::default()
            })
            .await
            .expect("list");
        page.items.len()
    }
}

fn records(tokens: &[(&str, Role)]) -> Vec<TokenRecord> {
    tokens
        .iter()
        .enumerate()
        .map(|(i, (token, role))| record_of(token, &format!("subject-{i}"), *role))
        .collect()
}

impl Drop for Secured {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Publisher settings for tests: short waits, a spool in `spool`, the
/// token in `token_file`.
pub fn publisher_settings(url: &str, spool: &Path, token_file: &Path) -> PublisherSettings {
    PublisherSettings {
        url: url.to_owned(),
        spool_dir: Some(spool.to_owned()),
        linger: Duration::from_millis(1),
        fsync_interval: Duration::from_millis(10),
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        credentials: CredentialSettings {
            token_file: Some(token_file.to_owned()),
            ..CredentialSettings::default()
        },
        ..PublisherSettings::default()
    }
}

/// A valid record of remediation `name`.
pub fn record(name: &str) -> remaudit_model::RemediationOrchestrationAudit {
    let value: Value = json!({
        "alert_fingerprint": "fp-client", "remediation_name": name, "overall_phase": "completed",
        "start_time": (Utc::now() - chrono::Duration::minutes(5)).to_rfc3339(),
    });
    serde_json::from_value(value).expect("record")
}

/// A typed client of `url` with `credentials`.
pub fn api_with(url: &str, credentials: &CredentialSettings) -> remaudit_client::ApiClient {
    credentials
        .load()
        .expect("credentials")
        .api_client(
            url,
            reqwest::Client::builder().timeout(Duration::from_secs(10)),
        )
        .expect("client")
}
