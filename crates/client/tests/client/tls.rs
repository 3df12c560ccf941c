//! TLS from the client's side, against the real router behind a small
//! rustls listener with certificates made here by rcgen: the CA file
//! replaces the system's roots, the client certificate is presented for
//! mutual TLS, and the publisher keeps its records through TLS failures.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use remaudit_api::audit::ListParams;
use remaudit_client::credentials::{CredentialError, CredentialSettings};
use remaudit_client::metrics::DENIED;
use remaudit_client::{Publisher, PublisherSettings};
use remaudit_server::{AppState, ServerSettings};
use remaudit_testkit::{SqliteDb, wait_for};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio_util::sync::CancellationToken;

use crate::helpers::{api_with, counter, metrics, record};

/// A CA made for one test, and what it signed, as PEM files in `dir`.
struct Pki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key.
struct Leaf {
    der: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    cert_file: PathBuf,
    key_file: PathBuf,
}

impl Pki {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
        let pki = Self {
            dir: tempfile::tempdir().expect("dir"),
            ca,
        };
        std::fs::write(pki.ca_file(), pki.ca.pem()).expect("write CA");
        pki
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A certificate signed by this CA: for the server at 127.0.0.1, or for a client named `name`.
    fn leaf(&self, name: &str, server: bool) -> Leaf {
        let sans = if server {
            vec!["127.0.0.1".to_owned(), "localhost".to_owned()]
        } else {
            Vec::new()
        };
        let mut params = CertificateParams::new(sans).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca).expect("sign");
        let cert_file = self.dir.path().join(format!("{name}.pem"));
        let key_file = self.dir.path().join(format!("{name}-key.pem"));
        std::fs::write(&cert_file, cert.pem()).expect("write cert");
        std::fs::write(&key_file, key.serialize_pem()).expect("write key");
        Leaf {
            der: cert.der().clone(),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            cert_file,
            key_file,
        }
    }
}

/// The service's router (no authentication) behind a rustls listener.
struct TlsService {
    address: SocketAddr,
    /// The client certificate each completed handshake presented.
    peers: Arc<Mutex<Vec<Option<CertificateDer<'static>>>>>,
    shutdown: CancellationToken,
    _db: SqliteDb,
}

impl TlsService {
    /// Serves with `server`'s certificate; asks for a client certificate
    /// signed by `client_ca` when one is given.
    async fn start(server: &Leaf, client_ca: Option<&Pki>) -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let builder = rustls::ServerConfig::builder();
        let builder = match client_ca {
            Some(pki) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(pki.ca.der().clone()).expect("root");
                let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                    .build()
                    .expect("verifier");
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(vec![server.der.clone()], server.key.clone_key())
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let db = SqliteDb::create();
        let app = remaudit_server::router(AppState::new(
            db.store().await,
            ServerSettings::default(),
            metrics(),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let peers = Arc::new(Mutex::new(Vec::new()));
        let shutdown = CancellationToken::new();
        tokio::spawn({
            let (peers, shutdown) = (peers.clone(), shutdown.clone());
            async move {
                loop {
                    let tcp = tokio::select! {
                        () = shutdown.cancelled() => return,
                        accepted = listener.accept() => accepted.expect("accept").0,
                    };
                    let (acceptor, app, peers) = (acceptor.clone(), app.clone(), peers.clone());
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let peer = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|chain| chain.first().cloned());
                        peers.lock().expect("lock").push(peer);
                        let service = hyper_util::service::TowerToHyperService::new(app);
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                            .await;
                    });
                }
            }
        });
        Self {
            address,
            peers,
            shutdown,
            _db: db,
        }
    }

    fn url(&self) -> String {
        format!("https://{}", self.address)
    }
}

impl Drop for TlsService {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn ca_only(ca: &Path) -> CredentialSettings {
    CredentialSettings {
        ca_file: Some(ca.to_owned()),
        ..CredentialSettings::default()
    }
}

#[tokio::test]
async fn the_ca_file_replaces_the_system_roots() {
    let pki = Pki::new("remaudit test CA");
    let service = TlsService::start(&pki.leaf("server", true), None).await;
    api_with(&service.url(), &ca_only(&pki.ca_file()))
        .list(&ListParams::default())
        .await
        .expect("the server's CA is trusted");

    // The system's roots do not know a CA made in this test.
    let err = api_with(&service.url(), &CredentialSettings::default())
        .list(&ListParams::default())
        .await
        .expect_err("unknown CA");
    assert!(err.is_tls(), "{err:?}");

    // Another CA's bundle replaces the roots, so it does not help either.
    let other = Pki::new("another CA");
    let err = api_with(&service.url(), &ca_only(&other.ca_file()))
        .list(&ListParams::default())
        .await
        .expect_err("wrong CA");
    assert!(err.is_tls(), "{err:?}");
}

#[tokio::test]
async fn the_client_certificate_is_presented_for_mutual_tls() {
    let pki = Pki::new("remaudit test CA");
    let service = TlsService::start(&pki.leaf("server", true), Some(&pki)).await;
    let client = pki.leaf("orchestrator", false);
    let mutual = CredentialSettings {
        ca_file: Some(pki.ca_file()),
        client_cert: Some(client.cert_file.clone()),
        client_key: Some(client.key_file.clone()),
        ..CredentialSettings::default()
    };
    api_with(&service.url(), &mutual)
        .list(&ListParams::default())
        .await
        .expect("mutual TLS");
    assert_eq!(
        service.peers.lock().expect("lock").last(),
        Some(&Some(client.der.clone())),
        "the server saw the client's certificate"
    );

    let err = api_with(&service.url(), &ca_only(&pki.ca_file()))
        .list(&ListParams::default())
        .await
        .expect_err("no client certificate");
    assert!(err.is_tls(), "{err:?}");
}

#[tokio::test]
async fn a_key_that_is_not_a_key_is_refused_by_name() {
    let pki = Pki::new("remaudit test CA");
    let client = pki.leaf("orchestrator", false);
    let settings = CredentialSettings {
        client_cert: Some(client.cert_file.clone()),
        client_key: Some(pki.ca_file()),
        ..CredentialSettings::default()
    };
    let err = settings
        .load()
        .and_then(|c| c.http_client(reqwest::Client::builder()))
        .expect_err("a certificate given as the key");
    assert!(
        matches!(
            err,
            CredentialError::BadPem {
                what: "client key",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("ca.pem"), "{err}");
}

#[tokio::test]
async fn the_publisher_keeps_its_records_through_tls_failures() {
    metrics();
    let pki = Pki::new("remaudit test CA");
    let service = TlsService::start(&pki.leaf("server", true), None).await;
    let spool = tempfile::tempdir().expect("spool");
    let settings = PublisherSettings {
        url: service.url(),
        spool_dir: Some(spool.path().to_owned()),
        linger: Duration::from_millis(1),
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        ..PublisherSettings::default()
    };
    let before = counter(DENIED, r#"reason="tls""#);
    let publisher = Publisher::start(settings.clone()).expect("start");
    publisher.publish(record("over-tls")).expect("accepted");
    wait_for("a TLS denial", Duration::from_secs(30), || async {
        (publisher.stats().denied >= 2).then_some(())
    })
    .await;
    assert!(counter(DENIED, r#"reason="tls""#) >= before + 2.0);
    let report = publisher.shutdown(Duration::ZERO).await;
    assert_eq!((report.left_in_spool, report.lost), (1, 0));

    let publisher = Publisher::start(PublisherSettings {
        credentials: ca_only(&pki.ca_file()),
        ..settings
    })
    .expect("restart with the CA");
    tokio::time::timeout(Duration::from_secs(30), publisher.flush())
        .await
        .expect("delivered over TLS");
    assert_eq!(publisher.stats().created, 1);
    publisher.shutdown(Duration::from_secs(5)).await;
}
