//! TLS and mutual TLS over loopback, with a CA made in the test: HTTPS from
//! certificate files, client certificate subjects mapped to roles through
//! the auth layer, clients without (or with a foreign) certificate refused,
//! a rotated certificate served without a restart, a bad new pair kept out,
//! a stalled handshake that does not hold a connection slot, and start-up
//! errors that name the file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use remaudit_server::auth::client_cert::ClientCertAuthenticator;
use remaudit_server::auth::{AuthPolicy, Authenticator, Role};
use remaudit_server::tls::{Reload, Tls, TlsError, TlsSettings, serial_of, subject_of};
use remaudit_server::{AppState, ServerSettings};
use remaudit_testkit::pki::{TestCa, https_client, peer_certificate, write_atomically};
use remaudit_testkit::{SqliteDb, wait_for};
use serde_json::json;
use tokio::io::AsyncReadExt as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::helpers::{Answer, metrics};

const ORCHESTRATOR: &str = "CN=orchestrator,O=kubernaut";
const DASHBOARD: &str = "CN=dashboard,O=kubernaut";

/// A service over SQLite serving TLS.
struct TlsApp {
    address: SocketAddr,
    shutdown: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
    _db: SqliteDb,
}

impl TlsApp {
    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.address)
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.server.await.expect("join").expect("serve");
    }
}

async fn spawn_tls(tls: Tls, policy: AuthPolicy, settings: ServerSettings) -> TlsApp {
    let db = SqliteDb::create();
    let store = db.store().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let shutdown = CancellationToken::new();
    let state = AppState::new(store, settings, metrics()).with_auth(policy);
    let server = tokio::spawn(remaudit_server::serve_with(
        listener,
        state,
        shutdown.clone(),
        Some(tls),
    ));
    TlsApp {
        address,
        shutdown,
        server,
        _db: db,
    }
}

/// The settings of a server whose certificate and key are `files`.
fn settings_for((cert, key): (PathBuf, PathBuf)) -> TlsSettings {
    TlsSettings {
        cert: Some(cert),
        key: Some(key),
        ..TlsSettings::default()
    }
}

/// Mutual TLS trusting `ca`, with the two kubernaut subjects mapped.
fn mutual(dir: &Path, ca: &TestCa, files: (PathBuf, PathBuf)) -> TlsSettings {
    let ca_file = dir.join("clients-ca.crt");
    write_atomically(&ca_file, ca.pem().as_bytes());
    TlsSettings {
        client_ca: Some(ca_file),
        client_roles: BTreeMap::from([
            (ORCHESTRATOR.to_owned(), Role::Writer),
            (DASHBOARD.to_owned(), Role::Reader),
        ]),
        ..settings_for(files)
    }
}

fn enforced(settings: &TlsSettings) -> AuthPolicy {
    let certificates = ClientCertAuthenticator::from_settings(settings).expect("mutual TLS");
    AuthPolicy::Enforced {
        authenticators: vec![certificates as Arc<dyn Authenticator>],
        anonymous_role: None,
        metrics_require_reader: false,
    }
}

fn record(name: &str) -> serde_json::Value {
    json!({
        "alert_fingerprint": "fp",
        "remediation_name": name,
        "overall_phase": "completed",
        "start_time": (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339(),
    })
}

const RECORDS: &str = "/api/v1/audit/remediation-orchestration";

async fn post(client: &reqwest::Client, app: &TlsApp, name: &str) -> Answer {
    Answer::read(
        client
            .post(app.url(RECORDS))
            .json(&record(name))
            .send()
            .await
            .expect("request"),
    )
    .await
}

async fn list(client: &reqwest::Client, app: &TlsApp) -> Answer {
    Answer::read(client.get(app.url(RECORDS)).send().await.expect("request")).await
}

/// The serial of the certificate served now: a new client, so that no
/// resumed session stands in for a full handshake.
async fn served_serial(ca: &TestCa, app: &TlsApp) -> String {
    let response = https_client(ca, None)
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(response.status(), 200);
    serial_of(&peer_certificate(&response)).expect("X.509")
}

#[tokio::test]
async fn https_is_served_from_certificate_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("remaudit test CA");
    let server = ca.server(1);
    let tls = Tls::load(&settings_for(server.write(dir.path(), "tls"))).expect("TLS");
    let app = spawn_tls(tls, AuthPolicy::default(), ServerSettings::default()).await;

    let client = https_client(&ca, None);
    let response = client.get(app.url("/healthz")).send().await.expect("HTTPS");
    assert_eq!(response.status(), 200);
    assert_eq!(
        peer_certificate(&response),
        server.der,
        "the file's certificate"
    );
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_eq!(post(&client, &app, "rr-tls").await.status, 201);
    assert_eq!(
        list(&client, &app).await.body["items"][0]["remediation_name"],
        "rr-tls"
    );

    // A client that does not trust the CA refuses the server; plain HTTP
    // on the TLS port gets no answer.
    let stranger = https_client(&TestCa::new("another CA"), None);
    let refused = stranger.get(app.url("/healthz")).send().await;
    assert!(refused.is_err(), "{refused:?}");
    let plain = reqwest::Client::new()
        .get(format!("http://{}/healthz", app.address))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
    app.stop().await;
}

#[tokio::test]
async fn client_certificate_subjects_get_their_roles_through_the_auth_layer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("remaudit test CA");
    let settings = mutual(dir.path(), &ca, ca.server(1).write(dir.path(), "tls"));
    let tls = Tls::load(&settings).expect("TLS");
    let app = spawn_tls(tls, enforced(&settings), ServerSettings::default()).await;

    let orchestrator = ca.client("orchestrator", "kubernaut");
    assert_eq!(subject_of(&orchestrator.der).as_deref(), Some(ORCHESTRATOR));
    let writer = https_client(&ca, Some(&orchestrator));
    let reader = https_client(&ca, Some(&ca.client("dashboard", "kubernaut")));
    let stranger = https_client(&ca, Some(&ca.client("stranger", "kubernaut")));

    assert_eq!(post(&writer, &app, "rr-mtls").await.status, 201);
    list(&writer, &app).await.assert_problem(403, "forbidden");
    let listed = list(&reader, &app).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(listed.body["items"][0]["remediation_name"], "rr-mtls");
    post(&reader, &app, "rr-reader")
        .await
        .assert_problem(403, "forbidden");

    // Verified by the CA, but with no role: refused, for every route.
    post(&stranger, &app, "rr-stranger")
        .await
        .assert_problem(403, "forbidden");
    list(&stranger, &app).await.assert_problem(403, "forbidden");
    app.stop().await;
}

#[tokio::test]
async fn clients_without_a_certificate_of_the_client_ca_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("remaudit test CA");
    let settings = mutual(dir.path(), &ca, ca.server(1).write(dir.path(), "tls"));
    let tls = Tls::load(&settings).expect("TLS");
    let app = spawn_tls(tls, enforced(&settings), ServerSettings::default()).await;

    // No certificate: the handshake fails, nothing is answered.
    let anonymous = https_client(&ca, None);
    let refused = anonymous.get(app.url("/healthz")).send().await;
    assert!(refused.is_err(), "{refused:?}");
    // The same subject as a mapped one, from another CA: refused too.
    let rogue = TestCa::new("rogue CA");
    let impostor = https_client(&ca, Some(&rogue.client("orchestrator", "kubernaut")));
    let refused = impostor
        .post(app.url(RECORDS))
        .json(&record("rr-x"))
        .send()
        .await;
    assert!(refused.is_err(), "{refused:?}");
    let rendered = metrics().render();
    assert!(
        rendered.contains("remaudit_tls_handshake_failed_total{reason=\"refused\"}"),
        "{rendered}"
    );
    app.stop().await;
}

#[tokio::test]
async fn optional_client_certificates_leave_the_others_to_the_auth_layer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("remaudit test CA");
    let settings = TlsSettings {
        client_cert_optional: true,
        ..mutual(dir.path(), &ca, ca.server(1).write(dir.path(), "tls"))
    };
    let tls = Tls::load(&settings).expect("TLS");
    let app = spawn_tls(tls, enforced(&settings), ServerSettings::default()).await;

    let anonymous = https_client(&ca, None);
    assert_eq!(
        anonymous
            .get(app.url("/healthz"))
            .send()
            .await
            .expect("served")
            .status(),
        200
    );
    post(&anonymous, &app, "rr-anon")
        .await
        .assert_problem(401, "unauthenticated");
    let writer = https_client(&ca, Some(&ca.client("orchestrator", "kubernaut")));
    assert_eq!(post(&writer, &app, "rr-cert").await.status, 201);
    app.stop().await;
}

#[tokio::test]
async fn a_rotated_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("remaudit test CA");
    let first = ca.server(1);
    let settings = TlsSettings {
        reload_interval: Duration::from_millis(50),
        ..settings_for(first.write(dir.path(), "tls"))
    };
    let app = spawn_tls(
        Tls::load(&settings).expect("TLS"),
        AuthPolicy::default(),
        ServerSettings::default(),
    )
    .await;
    assert_eq!(
        served_serial(&ca, &app).await,
        serial_of(&first.der).expect("X.509")
    );

    let second = ca.server(2);
    let _ = second.write(dir.path(), "tls");
    let expected = serial_of(&second.der).expect("X.509");
    wait_for(
        "the rotated certificate to be served",
        Duration::from_secs(10),
        || {
            let (ca, app, expected) = (&ca, &app, &expected);
            async move { (served_serial(ca, app).await == *expected).then_some(()) }
        },
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_bad_new_pair_is_refused_and_the_served_one_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("remaudit test CA");
    let first = ca.server(1);
    let (cert, key) = first.write(dir.path(), "tls");
    // Reloads by hand: the test decides when the files are read.
    let settings = TlsSettings {
        reload_interval: Duration::ZERO,
        ..settings_for((cert.clone(), key.clone()))
    };
    let tls = Tls::load(&settings).expect("TLS");
    let app = spawn_tls(
        tls.clone(),
        AuthPolicy::default(),
        ServerSettings::default(),
    )
    .await;
    let first_serial = serial_of(&first.der).expect("X.509");
    assert_eq!(tls.reload(), Reload::Unchanged);

    // Half a rotation: the new certificate beside the old key.
    let second = ca.server(2);
    write_atomically(&cert, second.cert_pem.as_bytes());
    assert_eq!(tls.reload(), Reload::Refused);
    assert_eq!(
        tls.reload(),
        Reload::Unchanged,
        "refused once, not every look"
    );
    assert_eq!(served_serial(&ca, &app).await, first_serial);
    // Not PEM at all.
    write_atomically(&cert, b"not a certificate");
    assert_eq!(tls.reload(), Reload::Refused);
    // Gone.
    std::fs::remove_file(&cert).expect("remove");
    assert_eq!(tls.reload(), Reload::Refused);
    assert_eq!(tls.reload(), Reload::Unchanged);
    assert_eq!(served_serial(&ca, &app).await, first_serial);
    let rendered = metrics().render();
    assert!(
        rendered.contains("remaudit_tls_reload_total{outcome=\"failed\"}"),
        "{rendered}"
    );

    // The rotation completed: served from the next handshake.
    let _ = second.write(dir.path(), "tls");
    assert_eq!(tls.reload(), Reload::Reloaded);
    assert_eq!(tls.serial(), serial_of(&second.der).expect("X.509"));
    assert_eq!(
        served_serial(&ca, &app).await,
        serial_of(&second.der).expect("X.509")
    );
    app.stop().await;
}

#[tokio::test]
async fn a_stalled_handshake_does_not_hold_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("remaudit test CA");
    let settings = TlsSettings {
        handshake_timeout: Duration::from_millis(300),
        ..settings_for(ca.server(1).write(dir.path(), "tls"))
    };
    // One connection slot, taken by a client that never says hello.
    let app = spawn_tls(
        Tls::load(&settings).expect("TLS"),
        AuthPolicy::default(),
        ServerSettings {
            max_connections: 1,
            ..ServerSettings::default()
        },
    )
    .await;
    let mut stalled = tokio::net::TcpStream::connect(app.address)
        .await
        .expect("connect");
    let client = https_client(&ca, None);
    let served = client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("served");
    assert_eq!(served.status(), 200);
    // The server closed the stalled connection when its handshake timed out.
    let mut buf = [0_u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut buf))
        .await
        .expect("closed by the server");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let rendered = metrics().render();
    assert!(
        rendered.contains("remaudit_tls_handshake_failed_total{reason=\"timeout\"}"),
        "{rendered}"
    );
    app.stop().await;
}

#[test]
fn bad_files_are_refused_at_start_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("remaudit test CA");
    let (cert, key) = ca.server(1).write(dir.path(), "tls");
    let (_, other_key) = ca.server(2).write(dir.path(), "other");
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not PEM at all\n").expect("write");
    let missing = dir.path().join("missing.crt");
    let pair = |cert: &Path, key: &Path| TlsSettings {
        cert: Some(cert.to_owned()),
        key: Some(key.to_owned()),
        ..TlsSettings::default()
    };
    let refused = |settings: TlsSettings| -> String {
        match Tls::load(&settings) {
            Ok(_) => panic!("loaded {settings:?}"),
            Err(e) => e.to_string(),
        }
    };

    let e = refused(pair(&missing, &key));
    assert!(
        e.starts_with(&format!(
            "cannot read the TLS certificate file {}",
            missing.display()
        )),
        "{e}"
    );
    let e = refused(pair(&text, &key));
    assert!(
        e.contains(&format!(
            "certificate file {} holds no PEM certificate",
            text.display()
        )),
        "{e}"
    );
    let e = refused(pair(&cert, &cert));
    assert!(
        e.contains(&format!(
            "key file {} holds no PEM private key",
            cert.display()
        )),
        "{e}"
    );
    let e = refused(pair(&cert, &other_key));
    assert_eq!(
        e,
        format!(
            "the TLS key file {} does not match the certificate in {}: give the key the certificate was issued for",
            other_key.display(),
            cert.display()
        )
    );
    let e = refused(TlsSettings {
        client_ca: Some(text.clone()),
        ..pair(&cert, &key)
    });
    assert!(
        e.contains(&format!(
            "client CA file {} holds no PEM certificate",
            text.display()
        )),
        "{e}"
    );
    let e = refused(TlsSettings {
        key: None,
        ..pair(&cert, &key)
    });
    assert!(e.contains("--tls-key"), "{e}");
    assert!(matches!(
        Tls::load(&TlsSettings::default()),
        Err(TlsError::Settings(_))
    ));
}
