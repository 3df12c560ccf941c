//! Authentication and authorization over HTTP: every route of
//! `api_routes()` against every kind of caller, the anonymous writer, the
//! metrics flag, the denial counter and log (never the token), the reload of
//! a changed tokens file, and the OpenAPI document's agreement with the
//! route table.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use remaudit_api::paths;
use remaudit_model::chain::{ChainKey, KeyRing};
use remaudit_server::auth::tokens::{TokenRecord, hash_token, render};
use remaudit_server::auth::{AuthPolicy, Authenticator, Role, TokensFile};
use remaudit_server::{ApiRoute, AppState, ServerSettings, api_routes};
use remaudit_store::Store;
use reqwest::Method;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::helpers::{Answer, TestApp, metrics};

pub(crate) const WRITER: &str = "rmt_writer-token-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
pub(crate) const READER: &str = "rmt_reader-token-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
pub(crate) const ADMIN: &str = "rmt_admin-token-cccccccccccccccccccccccccccccccccccccc";
const EXPIRED: &str = "rmt_expired-token-dddddddddddddddddddddddddddddddddd";
const UNKNOWN: &str = "rmt_unknown-token-eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee";

fn token(token: &str, subject: &str, role: Role, expired: bool) -> TokenRecord {
    let now = Utc::now();
    TokenRecord {
        sha256: hash_token(token),
        subject: subject.to_owned(),
        role,
        created: now - chrono::Duration::days(2),
        expires: expired.then(|| now - chrono::Duration::days(1)),
    }
}

fn all_tokens() -> Vec<TokenRecord> {
    vec![
        token(WRITER, "orchestrator", Role::Writer, false),
        token(READER, "dashboard", Role::Reader, false),
        token(ADMIN, "ops", Role::Admin, false),
        token(EXPIRED, "former-admin", Role::Admin, true),
    ]
}

/// Writes a tokens file the way `remaudit token` does: a new file renamed over the old.
fn write_tokens(path: &Path, records: &[TokenRecord]) {
    write_text(path, &render(records));
}

fn write_text(path: &Path, text: &str) {
    let temp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&temp).expect("create");
    f.write_all(text.as_bytes()).expect("write");
    f.sync_all().expect("sync");
    std::fs::rename(&temp, path).expect("rename");
}

/// A service over `store` with the tokens file in `dir` enforced.
pub(crate) struct Secured {
    pub(crate) app: TestApp,
    tokens: Arc<TokensFile>,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

pub(crate) async fn spawn_secured(
    store: Arc<dyn Store>,
    anonymous_role: Option<Role>,
    metrics_require_reader: bool,
) -> Secured {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tokens.toml");
    write_tokens(&path, &all_tokens());
    let tokens = TokensFile::load(&path).expect("tokens file");
    let policy = AuthPolicy::Enforced {
        authenticators: vec![tokens.clone() as Arc<dyn Authenticator>],
        anonymous_role,
        metrics_require_reader,
    };
    Secured {
        app: spawn_with_policy(store, policy).await,
        tokens,
        path,
        _dir: dir,
    }
}

async fn spawn_with_policy(store: Arc<dyn Store>, policy: AuthPolicy) -> TestApp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let shutdown = CancellationToken::new();
    // Chained, so that the admin verification route answers its success.
    let settings = ServerSettings {
        chain: Some(Arc::new(KeyRing::single(
            ChainKey::new("auth-matrix", [5; 32]).expect("key"),
        ))),
        ..ServerSettings::default()
    };
    let state = AppState::new(store.clone(), settings, metrics()).with_auth(policy);
    let server = tokio::spawn(remaudit_server::serve(listener, state, shutdown.clone()));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    TestApp {
        address,
        api: remaudit_client::ApiClient::with_http(&format!("http://{address}"), http.clone()),
        http,
        store,
        shutdown,
        server,
    }
}

/// Sends a request with an optional bearer token (and an optional body).
pub(crate) async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<&Value>,
) -> Answer {
    let mut request = app.http.request(method, app.url(path));
    if let Some(t) = bearer {
        request = request.bearer_auth(t);
    }
    if let Some(b) = body {
        request = request.json(b);
    }
    Answer::read(request.send().await.expect("request")).await
}

/// The status of a GET, whatever its body (the metrics are text).
async fn get_status(app: &TestApp, path: &str, bearer: Option<&str>) -> u16 {
    let mut request = app.http.get(app.url(path));
    if let Some(t) = bearer {
        request = request.bearer_auth(t);
    }
    request.send().await.expect("request").status().as_u16()
}

pub(crate) fn record(name: &str) -> Value {
    json!({
        "alert_fingerprint": "fp-auth", "remediation_name": name, "overall_phase": "completed",
        "start_time": (Utc::now() - chrono::Duration::minutes(5)).to_rfc3339(),
    })
}

/// Stores a remediation (as the writer) and returns its id (read as the reader).
pub(crate) async fn seed(app: &TestApp, name: &str) -> i64 {
    let stored = send(
        app,
        Method::POST,
        paths::AUDIT,
        Some(WRITER),
        Some(&record(name)),
    )
    .await;
    assert_eq!(stored.status, 201, "{}", stored.body);
    let page = send(
        app,
        Method::GET,
        &format!("{}?limit=1000", paths::AUDIT),
        Some(READER),
        None,
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.body);
    page.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["remediation_name"] == name)
        .and_then(|i| i["id"].as_i64())
        .unwrap_or_else(|| panic!("{name} is listed"))
}

/// A request that succeeds on `route` for a caller with its role, and the
/// status it gets. A new route needs a line here: the matrix fails until it has one.
async fn happy(app: &TestApp, route: &ApiRoute, n: usize) -> (String, Option<Value>, u16) {
    let name = format!("rr-auth-{n}");
    let reason = "reason=auth-matrix";
    match (route.method.as_str(), route.path) {
        ("POST", paths::AUDIT) => (route.path.to_owned(), Some(record(&name)), 201),
        ("POST", paths::AUDIT_BATCH) => (route.path.to_owned(), Some(json!([record(&name)])), 200),
        ("GET", paths::AUDIT_ITEM) => (paths::audit_item(seed(app, &name).await), None, 200),
        ("DELETE", paths::AUDIT_ITEM) => (
            format!("{}?{reason}", paths::audit_item(seed(app, &name).await)),
            None,
            204,
        ),
        ("PUT" | "DELETE", paths::AUDIT_LEGAL_HOLD) => (
            format!(
                "{}?{reason}",
                paths::audit_legal_hold(seed(app, &name).await)
            ),
            None,
            200,
        ),
        ("GET", paths::ANALYTICS_POSTMORTEM) => (
            format!("{}?alert_fingerprint=fp-auth", route.path),
            None,
            200,
        ),
        (
            "GET",
            paths::AUDIT
            | paths::ANALYTICS_SUCCESS_RATE
            | paths::ANALYTICS_DURATIONS
            | paths::ANALYTICS_SLOWEST
            | paths::ANALYTICS_FAILURES
            | paths::ANALYTICS_RETRIES
            | paths::ADMIN_LOG
            | paths::ADMIN_VERIFY
            | paths::WHOAMI
            | paths::OPENAPI,
        ) => (route.path.to_owned(), None, 200),
        // This app has no archive: past the guard, the caller is told so
        // (503). The CLI's archive tests answer statements for real.
        ("POST", paths::ARCHIVE_SQL) => {
            (route.path.to_owned(), Some(json!({"sql": "SELECT 1"})), 503)
        }
        (method, path) => {
            panic!("no sample request for {method} {path}: add one to happy() in tests/api/auth.rs")
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Who {
    Nobody,
    Unknown,
    Expired,
    Holder(Role),
}

impl Who {
    const ALL: [Who; 6] = [
        Who::Nobody,
        Who::Unknown,
        Who::Expired,
        Who::Holder(Role::Writer),
        Who::Holder(Role::Reader),
        Who::Holder(Role::Admin),
    ];

    fn bearer(self) -> Option<&'static str> {
        match self {
            Who::Nobody => None,
            Who::Unknown => Some(UNKNOWN),
            Who::Expired => Some(EXPIRED),
            Who::Holder(Role::Writer) => Some(WRITER),
            Who::Holder(Role::Reader) => Some(READER),
            Who::Holder(Role::Admin) => Some(ADMIN),
        }
    }
}

fn assert_unauthenticated(answer: &Answer, what: &str) {
    assert_eq!(answer.status, 401, "{what}: {}", answer.body);
    answer.assert_problem(401, "unauthenticated");
    let challenge = answer
        .headers
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(challenge.starts_with("Bearer"), "{what}: {challenge:?}");
}

/// Every route of the table × no credential, unknown, expired, and each role:
/// exactly 401, 403 or the route's success status, with problem+json denials.
async fn every_route_answers_each_caller_by_its_role(store: Arc<dyn Store>) {
    let s = spawn_secured(store, None, false).await;
    let app = &s.app;
    let mut n = 0;
    for route in api_routes() {
        for who in Who::ALL {
            n += 1;
            let (path, body, success) = happy(app, &route, n).await;
            let answer = send(
                app,
                route.method.clone(),
                &path,
                who.bearer(),
                body.as_ref(),
            )
            .await;
            let what = format!("{} {} as {who:?}", route.method, route.path);
            match who {
                Who::Nobody | Who::Unknown | Who::Expired => assert_unauthenticated(&answer, &what),
                Who::Holder(role) if role.grants(route.role) => {
                    assert_eq!(answer.status, success, "{what}: {}", answer.body);
                }
                Who::Holder(_) => {
                    assert_eq!(answer.status, 403, "{what}: {}", answer.body);
                    answer.assert_problem(403, "forbidden");
                }
            }
        }
    }
    // The operational routes stay open.
    for path in [paths::HEALTHZ, paths::READYZ, paths::METRICS] {
        assert_eq!(get_status(app, path, None).await, 200, "{path}");
    }
}

/// With the anonymous role `writer`, a request without credential may append
/// and do nothing else; a credential that is presented is still checked.
async fn anonymous_writers_may_only_append(store: Arc<dyn Store>) {
    let s = spawn_secured(store, Some(Role::Writer), false).await;
    let app = &s.app;
    let mut n = 0;
    for route in api_routes() {
        n += 1;
        let (path, body, success) = happy(app, &route, n).await;
        let answer = send(app, route.method.clone(), &path, None, body.as_ref()).await;
        let what = format!("anonymous {} {}", route.method, route.path);
        if route.role == Role::Writer {
            assert_eq!(answer.status, success, "{what}: {}", answer.body);
        } else {
            assert_unauthenticated(&answer, &what);
        }
    }
    let bad = send(
        app,
        Method::POST,
        paths::AUDIT,
        Some(UNKNOWN),
        Some(&record("rr-x")),
    )
    .await;
    assert_unauthenticated(&bad, "an unknown token with anonymous writes on");
}

crate::both_stores!(
    every_route_answers_each_caller_by_its_role,
    anonymous_writers_may_only_append,
);

#[tokio::test]
async fn a_malformed_authorization_header_is_invalid() {
    let db = remaudit_testkit::SqliteDb::create();
    let s = spawn_secured(db.store().await, Some(Role::Writer), false).await;
    let app = &s.app;
    let values: [&[u8]; 5] = [
        b"Basic dXNlcjpwYXNz",
        b"Bearer ",
        b"Bearer",
        b"",
        b"Bearer \xff\xfe",
    ];
    for value in values {
        let answer = Answer::read(
            app.http
                .get(app.url(paths::AUDIT))
                .header(
                    "authorization",
                    reqwest::header::HeaderValue::from_bytes(value).expect("header"),
                )
                .send()
                .await
                .expect("request"),
        )
        .await;
        assert_unauthenticated(&answer, &String::from_utf8_lossy(value));
        assert!(
            answer.body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("not valid")),
            "{}",
            answer.body
        );
    }
}

#[tokio::test]
async fn metrics_need_a_reader_only_when_asked() {
    let db = remaudit_testkit::SqliteDb::create();
    let open = spawn_secured(db.store().await, None, false).await;
    assert_eq!(get_status(&open.app, paths::METRICS, None).await, 200);
    let guarded = spawn_secured(db.store().await, None, true).await;
    let app = &guarded.app;
    assert_unauthenticated(
        &send(app, Method::GET, paths::METRICS, None, None).await,
        "metrics without a token",
    );
    send(app, Method::GET, paths::METRICS, Some(WRITER), None)
        .await
        .assert_problem(403, "forbidden");
    for t in [READER, ADMIN] {
        assert_eq!(get_status(app, paths::METRICS, Some(t)).await, 200);
    }
    assert_eq!(get_status(app, paths::HEALTHZ, None).await, 200);
}

/// A sample of the counter `name` with these labels, from the rendered metrics.
fn sample(rendered: &str, name: &str, label: &str) -> f64 {
    rendered
        .lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Log lines written while the test runs, on this thread (a current-thread
/// runtime runs the server's tasks here too).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

#[tokio::test(flavor = "current_thread")]
async fn denials_are_counted_by_reason_and_logged_without_the_token() {
    let (logs, _guard) = capture();
    let handle = metrics();
    let db = remaudit_testkit::SqliteDb::create();
    let s = spawn_secured(db.store().await, None, false).await;
    let app = &s.app;
    let reasons = ["missing", "invalid", "expired", "role"];
    let before: Vec<f64> = reasons
        .iter()
        .map(|r| {
            sample(
                &handle.render(),
                "remaudit_auth_denied_total",
                &format!("reason=\"{r}\""),
            )
        })
        .collect();

    let list = paths::AUDIT;
    assert_eq!(send(app, Method::GET, list, None, None).await.status, 401);
    assert_eq!(
        send(app, Method::GET, list, Some(UNKNOWN), None)
            .await
            .status,
        401
    );
    assert_eq!(
        send(app, Method::GET, list, Some(EXPIRED), None)
            .await
            .status,
        401
    );
    assert_eq!(
        send(app, Method::GET, list, Some(WRITER), None)
            .await
            .status,
        403
    );
    assert_eq!(
        send(app, Method::GET, list, Some(READER), None)
            .await
            .status,
        200
    );
    // The dashboard's first question, before it knows whether auth is on:
    // refused, but neither counted nor logged as a denial.
    assert_eq!(
        send(app, Method::GET, paths::WHOAMI, None, None)
            .await
            .status,
        401
    );

    let rendered = handle.render();
    for (r, before) in reasons.iter().zip(before) {
        let now = sample(
            &rendered,
            "remaudit_auth_denied_total",
            &format!("reason=\"{r}\""),
        );
        assert!(
            (now - before - 1.0).abs() < f64::EPSILON,
            "reason {r}: {before} then {now}"
        );
    }
    let logs = logs.text();
    let denials: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("request denied"))
        .collect();
    assert_eq!(denials.len(), 4, "{logs}");
    assert!(
        denials
            .iter()
            .all(|l| l.contains("WARN") && l.contains("method=\"GET\"") && l.contains(list)),
        "{logs}"
    );
    assert!(
        denials
            .iter()
            .any(|l| l.contains("subject=\"orchestrator\"") && l.contains("reason=\"role\"")),
        "{logs}"
    );
    for t in [WRITER, READER, ADMIN, EXPIRED, UNKNOWN] {
        assert!(!logs.contains(t), "a token is in the log");
        assert!(!logs.contains(&t[4..]), "part of a token is in the log");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn insecure_mode_warns_on_every_admin_call() {
    let (logs, _guard) = capture();
    let db = remaudit_testkit::SqliteDb::create();
    let app = spawn_with_policy(
        db.store().await,
        AuthPolicy::Off {
            warn_on_admin: true,
        },
    )
    .await;
    assert_eq!(
        send(
            &app,
            Method::POST,
            paths::AUDIT,
            None,
            Some(&record("rr-i"))
        )
        .await
        .status,
        201
    );
    let page = send(&app, Method::GET, paths::AUDIT, None, None).await;
    let id = page.body["items"][0]["id"].as_i64().expect("id");
    assert_eq!(
        send(
            &app,
            Method::PUT,
            &format!("{}?reason=insecure", paths::audit_legal_hold(id)),
            None,
            None
        )
        .await
        .status,
        200
    );
    assert_eq!(
        send(
            &app,
            Method::DELETE,
            &format!("{}?reason=insecure", paths::audit_legal_hold(id)),
            None,
            None
        )
        .await
        .status,
        200
    );
    let logs = logs.text();
    let warnings: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("--insecure-no-auth"))
        .collect();
    assert_eq!(
        warnings.len(),
        2,
        "one warning per admin call, none for others: {logs}"
    );
}

#[tokio::test]
async fn a_changed_tokens_file_takes_effect_and_a_broken_one_is_ignored() {
    let handle = metrics();
    let db = remaudit_testkit::SqliteDb::create();
    let s = spawn_secured(db.store().await, None, false).await;
    let app = &s.app;
    let reload = s
        .tokens
        .spawn_reload(Duration::from_millis(100), app.shutdown.clone());
    let deadline = Duration::from_secs(15);
    let status = |t: &'static str| async move {
        send(app, Method::GET, paths::AUDIT, Some(t), None)
            .await
            .status
    };

    // The reader's token is revoked.
    let mut fewer = all_tokens();
    fewer.retain(|r| r.subject != "dashboard");
    write_tokens(&s.path, &fewer);
    remaudit_testkit::wait_for("the reader's token to be revoked", deadline, || async {
        (status(READER).await == 401).then_some(())
    })
    .await;
    assert_eq!(status(ADMIN).await, 200);

    // A broken version is refused and counted; the last good set stays.
    let failed = |h: &metrics_exporter_prometheus::PrometheusHandle| {
        sample(
            &h.render(),
            "remaudit_auth_tokens_reload_total",
            "outcome=\"failed\"",
        )
    };
    let before = failed(&handle);
    write_text(&s.path, "[[token]]\nsha256 = \"not hex\"\n");
    remaudit_testkit::wait_for("the broken file to be refused", deadline, || async {
        (failed(&handle) > before).then_some(())
    })
    .await;
    assert_eq!(
        status(ADMIN).await,
        200,
        "the last good tokens stay in force"
    );
    assert_eq!(status(READER).await, 401);

    // A new token is added.
    write_tokens(&s.path, &all_tokens());
    remaudit_testkit::wait_for("the reader's token to come back", deadline, || async {
        (status(READER).await == 200).then_some(())
    })
    .await;
    app.shutdown.cancel();
    reload.await.expect("reload task ends on shutdown");
}

#[test]
fn every_documented_operation_is_a_route_of_the_table_and_back() {
    let doc = remaudit_server::ApiDoc::document();
    let mut documented = BTreeSet::new();
    let mut open = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let key = (method.to_ascii_uppercase(), path.clone());
            if path.starts_with("/api/v1/") {
                assert_eq!(
                    op["security"],
                    json!([{"bearer": []}]),
                    "{method} {path} declares the bearer scheme"
                );
                for status in ["401", "403"] {
                    assert!(
                        op["responses"].get(status).is_some(),
                        "{method} {path} {status}"
                    );
                }
                documented.insert(key);
            } else {
                assert!(op.get("security").is_none(), "{method} {path} is open");
                open.insert(key);
            }
        }
    }
    let routed: BTreeSet<(String, String)> = api_routes()
        .iter()
        .map(|r| (r.method.as_str().to_owned(), r.path.to_owned()))
        .collect();
    assert_eq!(documented, routed);
    assert!(routed.iter().all(|(_, p)| p.starts_with("/api/v1/")));
    let operational: BTreeSet<(String, String)> = [paths::HEALTHZ, paths::READYZ, paths::METRICS]
        .iter()
        .map(|p| ("GET".to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(open, operational);
    assert!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer",
        "{}",
        doc["components"]["securitySchemes"]
    );
}

/// `whoami` names the caller and the roles it holds, so that the dashboard
/// shows admin actions to admins only; a writer cannot ask it (it cannot
/// read), and with auth off every caller is an anonymous admin.
#[tokio::test]
async fn whoami_names_the_caller_and_its_roles() {
    let db = remaudit_testkit::SqliteDb::create();
    let s = spawn_secured(db.store().await, None, false).await;
    let app = &s.app;
    let reader = send(app, Method::GET, paths::WHOAMI, Some(READER), None).await;
    assert_eq!(reader.status, 200, "{}", reader.body);
    assert_eq!(reader.body["roles"], json!(["reader"]));
    assert_eq!(reader.body["auth_enforced"], json!(true));
    assert!(
        reader.body["subject"]
            .as_str()
            .is_some_and(|s| !s.is_empty() && s != "anonymous"),
        "{}",
        reader.body
    );
    let admin = send(app, Method::GET, paths::WHOAMI, Some(ADMIN), None).await;
    assert_eq!(admin.status, 200, "{}", admin.body);
    assert_eq!(admin.body["roles"], json!(["reader", "admin"]));
    assert_ne!(admin.body["subject"], reader.body["subject"]);
    let writer = send(app, Method::GET, paths::WHOAMI, Some(WRITER), None).await;
    writer.assert_problem(403, "forbidden");
    assert_unauthenticated(
        &send(app, Method::GET, paths::WHOAMI, None, None).await,
        "whoami without a token",
    );

    let open = spawn_with_policy(db.store().await, AuthPolicy::default()).await;
    let anyone = send(&open, Method::GET, paths::WHOAMI, None, None).await;
    assert_eq!(
        anyone.body,
        json!({"subject": "anonymous", "roles": ["reader", "admin"], "auth_enforced": false})
    );
}
