//! The database goes away while the service runs, and comes back.
//!
//! A TCP proxy sits between the service and the shared PostgreSQL; cutting
//! it drops every connection and refuses new ones, without touching the
//! server other tests use.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use remaudit_store::PoolSettings;
use remaudit_testkit::wait_for;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::helpers::{go_record, spawn_app};

/// A loopback TCP proxy that can be cut and restored.
struct Proxy {
    address: SocketAddr,
    open: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let address = listener.local_addr().expect("address");
        let open = Arc::new(AtomicBool::new(true));
        let (generation, _) = watch::channel(0_u64);
        let (accept_open, accept_generation) = (open.clone(), generation.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !accept_open.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let mut cut = accept_generation.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self {
            address,
            open,
            generation,
        }
    }

    /// Drops every connection and refuses new ones.
    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn service_answers_503_while_the_database_is_away_and_recovers_without_restart() {
    let db = remaudit_testkit::PgDb::create().await;
    let url = reqwest::Url::parse(db.url()).expect("url");
    let upstream: SocketAddr = format!(
        "{}:{}",
        url.host_str().expect("host"),
        url.port().unwrap_or(5432)
    )
    .parse()
    .expect("PostgreSQL on an IP address");
    let proxy = Proxy::start(upstream).await;
    let mut via_proxy = url.clone();
    via_proxy.set_host(Some("127.0.0.1")).expect("host");
    via_proxy
        .set_port(Some(proxy.address.port()))
        .expect("port");
    let store = remaudit_store::connect(
        via_proxy.as_str(),
        PoolSettings {
            max_connections: 4,
            acquire_timeout: Duration::from_secs(1),
            ..PoolSettings::default()
        },
    )
    .await
    .expect("store through proxy");
    let app = spawn_app(store).await;
    let start = (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339();

    assert_eq!(
        app.post_record(&go_record("rr-before", "fp", "pending", &start))
            .await
            .status,
        201
    );

    proxy.cut();
    let refused = app
        .post_record(&go_record("rr-during", "fp", "pending", &start))
        .await;
    refused.assert_problem(503, "database-unavailable");
    let retry_after: u64 = refused.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!(retry_after >= 1);
    let ready = app.get("/readyz").await;
    ready.assert_problem(503, "database-unavailable");
    assert!(ready.headers.contains_key("retry-after"));
    app.get("/api/v1/audit/remediation-orchestration")
        .await
        .assert_problem(503, "database-unavailable");
    assert_eq!(
        app.get("/healthz").await.status,
        200,
        "the process itself stays up"
    );

    proxy.restore();
    wait_for(
        "readiness after the database returns",
        Duration::from_secs(30),
        || async { (app.get("/readyz").await.status == 200).then_some(()) },
    )
    .await;
    // The record refused during the outage is sent again, as a client would.
    assert_eq!(
        app.post_record(&go_record("rr-during", "fp", "pending", &start))
            .await
            .status,
        201
    );
    assert_eq!(app.names().await, ["rr-before", "rr-during"]);
}

/// A listing whose wait for the projection runs past the read statement
/// timeout (another session holds the summary table) answers 503
/// `projection-behind` with `Retry-After`, and the listing answers once the
/// lock is gone; the record written meanwhile was acknowledged all along.
#[tokio::test]
async fn a_read_that_outwaits_the_projection_is_a_503_and_answers_later() {
    let db = remaudit_testkit::PgDb::create().await;
    let store = remaudit_store::connect(
        db.url(),
        PoolSettings {
            read_statement_timeout: Some(Duration::from_millis(300)),
            ..PoolSettings::default()
        },
    )
    .await
    .expect("store");
    let app = spawn_app(store).await;
    let pool = db.pool().await;
    let blocker = remaudit_testkit::PgDb::hold_the_summary(&pool).await;
    let start = (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339();
    assert_eq!(
        app.post_record(&go_record("rr-held", "fp", "pending", &start))
            .await
            .status,
        201
    );

    let behind = app.get("/api/v1/audit/remediation-orchestration").await;
    behind.assert_problem(503, "projection-behind");
    assert!(behind.headers.contains_key("retry-after"));

    blocker.rollback().await.expect("unlock");
    let answered = app.get("/api/v1/audit/remediation-orchestration").await;
    assert_eq!(answered.status, 200);
    assert_eq!(
        answered.body["items"][0]["remediation_name"], "rr-held",
        "{}",
        answered.body
    );
}
