//! Hostile clients over raw loopback sockets: half-sent and stalled requests,
//! more connections or requests than allowed, shutdown under them, and
//! invented methods and paths against the metrics' labels.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::sync::Arc;
use std::time::Duration;

use remaudit_server::ServerSettings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Notify, Semaphore};

use crate::helpers::{TestApp, go_record, spawn_app_with};
use crate::shutdown::GatedStore;

/// Longest any test waits for something that must happen.
const WAIT: Duration = Duration::from_secs(10);
/// Short enough that a test sees it pass, long enough for loopback.
const SHORT: Duration = Duration::from_millis(300);

const HEALTH: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";

async fn sqlite_app(settings: ServerSettings) -> (remaudit_testkit::SqliteDb, TestApp) {
    let db = remaudit_testkit::SqliteDb::create();
    let app = spawn_app_with(db.store().await, settings).await;
    (db, app)
}

async fn gated_app(
    settings: ServerSettings,
) -> (remaudit_testkit::SqliteDb, Arc<GatedStore>, TestApp) {
    let db = remaudit_testkit::SqliteDb::create();
    let gated = Arc::new(GatedStore {
        inner: db.store().await,
        reached: Notify::new(),
        gate: Semaphore::new(0),
    });
    let app = spawn_app_with(gated.clone(), settings).await;
    (db, gated, app)
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.address).await.expect("connect")
}

/// Reads until the server closes the connection; what it sent before.
async fn until_closed(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    match tokio::time::timeout(WAIT, stream.read_to_end(&mut got))
        .await
        .expect("the server closed the connection in time")
    {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("read: {e}"),
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Reads one response (head and `Content-Length` body); its status and text.
async fn response(stream: &mut TcpStream) -> (u16, String) {
    let read = async {
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().expect("length"));
                if got.len() >= end + 4 + length {
                    let text = String::from_utf8_lossy(&got[..end + 4 + length]).into_owned();
                    let status = text[9..12].parse().expect("status");
                    return (status, text);
                }
            }
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(
                n > 0,
                "closed before a whole response: {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("answered in time")
}

#[tokio::test]
async fn half_sent_headers_and_silent_connections_are_closed_after_the_header_timeout() {
    let (_db, app) = sqlite_app(ServerSettings {
        header_read_timeout: SHORT,
        ..ServerSettings::default()
    })
    .await;
    let mut half = connect(&app).await;
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        .await
        .expect("write");
    let mut silent = connect(&app).await;
    // An answered keep-alive connection left idle is closed the same way.
    let mut idle = connect(&app).await;
    idle.write_all(HEALTH).await.expect("write");
    assert_eq!(response(&mut idle).await.0, 200);

    for stream in [&mut half, &mut silent, &mut idle] {
        let sent = until_closed(stream).await;
        assert!(
            sent.is_empty() || sent.starts_with("HTTP/1.1 408"),
            "{sent}"
        );
    }
    assert_eq!(app.get("/healthz").await.status, 200);
}

#[tokio::test]
async fn a_stalled_body_is_answered_408_and_the_connection_closed() {
    let (_db, app) = sqlite_app(ServerSettings {
        idle_timeout: SHORT,
        ..ServerSettings::default()
    })
    .await;
    let mut stream = connect(&app).await;
    stream
        .write_all(
            b"POST /api/v1/audit/remediation-orchestration/batch HTTP/1.1\r\nHost: t\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\n\r\n[{\"a\":",
        )
        .await
        .expect("write");
    let sent = until_closed(&mut stream).await;
    assert!(sent.starts_with("HTTP/1.1 408"), "{sent}");
    assert!(sent.contains("urn:remaudit:problem:body-timeout"), "{sent}");
}

#[tokio::test]
async fn past_the_request_limit_requests_are_answered_503_with_retry_after() {
    let (_db, gated, app) = gated_app(ServerSettings {
        max_concurrent_requests: 1,
        ..ServerSettings::default()
    })
    .await;
    let start = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    let held = {
        let (http, url) = (
            app.http.clone(),
            app.url("/api/v1/audit/remediation-orchestration"),
        );
        let record = go_record("rr-held", "fp", "completed", &start);
        tokio::spawn(async move { http.post(url).json(&record).send().await })
    };
    tokio::time::timeout(WAIT, gated.reached.notified())
        .await
        .expect("the first request holds the only slot");

    let shed = app.get("/api/v1/audit/remediation-orchestration").await;
    shed.assert_problem(503, "overloaded");
    assert_eq!(
        shed.headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("5")
    );
    // Readiness asks the database and counts; liveness and metrics do not.
    app.get("/readyz").await.assert_problem(503, "overloaded");
    assert_eq!(app.get("/healthz").await.status, 200);
    let metrics = app.http.get(app.url("/metrics")).send().await;
    assert_eq!(metrics.expect("metrics").status(), 200);

    gated.gate.add_permits(1);
    let answer = tokio::time::timeout(WAIT, held)
        .await
        .expect("answered")
        .expect("task")
        .expect("response");
    assert_eq!(answer.status(), 201);
    assert_eq!(
        app.get("/api/v1/audit/remediation-orchestration")
            .await
            .status,
        200,
        "the slot is free again"
    );
}

#[tokio::test]
async fn past_the_connection_cap_a_connection_waits_until_one_closes() {
    let (_db, app) = sqlite_app(ServerSettings {
        max_connections: 1,
        ..ServerSettings::default()
    })
    .await;
    let mut first = connect(&app).await;
    first.write_all(HEALTH).await.expect("write");
    assert_eq!(response(&mut first).await.0, 200);

    let mut second = connect(&app).await;
    second.write_all(HEALTH).await.expect("write");
    // The first connection is served again after the second one asked...
    first.write_all(HEALTH).await.expect("write");
    assert_eq!(response(&mut first).await.0, 200);
    // ...and the second has had no answer.
    let mut byte = [0u8; 1];
    assert_eq!(
        second.try_read(&mut byte).map_err(|e| e.kind()),
        Err(ErrorKind::WouldBlock),
        "the connection past the cap was not served"
    );

    drop(first);
    assert_eq!(response(&mut second).await.0, 200);
}

#[tokio::test]
async fn a_client_that_stops_reading_answers_loses_its_connection() {
    let (_db, app) = sqlite_app(ServerSettings {
        max_connections: 1,
        idle_timeout: SHORT,
        ..ServerSettings::default()
    })
    .await;
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("buffer");
    let stalled = socket.connect(app.address).await.expect("connect");
    // Pipelined requests for large answers, none of them read.
    let (_unread, mut writer) = stalled.into_split();
    tokio::spawn(async move {
        let request = b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: t\r\n\r\n";
        for _ in 0..2_000 {
            if writer.write_all(request).await.is_err() {
                break;
            }
        }
        writer
    });
    // The only connection slot comes free once the server gives up on it.
    let mut next = connect(&app).await;
    next.write_all(HEALTH).await.expect("write");
    assert_eq!(response(&mut next).await.0, 200);
}

#[tokio::test]
async fn half_sent_requests_do_not_keep_shutdown_past_the_grace_period() {
    let (_db, gated, app) = gated_app(ServerSettings {
        shutdown_grace: SHORT,
        header_read_timeout: Duration::from_mins(1),
        idle_timeout: Duration::from_mins(1),
        ..ServerSettings::default()
    })
    .await;
    let mut half = Vec::new();
    for _ in 0..3 {
        let mut stream = connect(&app).await;
        stream
            .write_all(b"POST /api/v1/audit/remediation-orchestration HTTP/1.1\r\nHost: t\r\n")
            .await
            .expect("write");
        half.push(stream);
    }
    let mut half_body = connect(&app).await;
    half_body
        .write_all(
            b"POST /api/v1/audit/remediation-orchestration HTTP/1.1\r\nHost: t\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
        )
        .await
        .expect("write");
    half.push(half_body);
    // And a request that never finishes: its store write waits forever.
    let start = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    let held = {
        let (http, url) = (
            app.http.clone(),
            app.url("/api/v1/audit/remediation-orchestration"),
        );
        let record = go_record("rr-held", "fp", "completed", &start);
        tokio::spawn(async move { http.post(url).json(&record).send().await })
    };
    tokio::time::timeout(WAIT, gated.reached.notified())
        .await
        .expect("the request reached the store");

    app.shutdown.cancel();
    tokio::time::timeout(WAIT, app.server)
        .await
        .expect("the server stopped once the grace period was over")
        .expect("task")
        .expect("clean exit");
    let held = tokio::time::timeout(WAIT, held)
        .await
        .expect("the held request ended")
        .expect("task");
    assert!(held.is_err(), "its connection was dropped: {held:?}");
    for stream in &mut half {
        until_closed(stream).await;
    }
}

/// `(method, route, status)` of every request series in `/metrics`.
fn request_series(metrics: &str) -> BTreeSet<(String, String, String)> {
    let label = |line: &str, name: &str| {
        let start = line.find(&format!("{name}=\"")).expect("label") + name.len() + 2;
        let end = start + line[start..].find('"').expect("closing quote");
        line[start..end].to_owned()
    };
    metrics
        .lines()
        .filter(|l| l.starts_with("remaudit_http_request_duration_seconds_count{"))
        .map(|l| (label(l, "method"), label(l, "route"), label(l, "status")))
        .collect()
}

#[tokio::test]
async fn invented_methods_and_paths_share_bounded_label_values() {
    let (_db, app) = sqlite_app(ServerSettings::default()).await;
    for i in 0..50 {
        let method =
            reqwest::Method::from_bytes(format!("INVENTED{i}").as_bytes()).expect("method");
        assert_eq!(app.call(method.clone(), "/healthz").await.status, 405);
        let path = format!("/no/such/path/{i}");
        assert_eq!(app.call(method, &path).await.status, 404);
        assert_eq!(app.get(&format!("{path}?q={i}")).await.status, 404);
        assert_eq!(
            app.get(&format!("/api/v1/audit/remediation-orchestration/{i}"))
                .await
                .status,
            404
        );
    }
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("text");
    let series = request_series(&metrics);
    let standard = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "other",
    ];
    let routes = [
        "/api/v1/audit/remediation-orchestration",
        "/api/v1/audit/remediation-orchestration/batch",
        "/api/v1/audit/remediation-orchestration/{id}",
        "/api/v1/audit/remediation-orchestration/{id}/legal-hold",
        "/api/v1/audit/analytics/postmortem",
        "/api/v1/audit/analytics/success-rate",
        "/api/v1/audit/analytics/durations",
        "/api/v1/audit/analytics/slowest",
        "/api/v1/audit/analytics/failures",
        "/api/v1/audit/analytics/retries",
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/openapi.json",
        "unmatched",
    ];
    // Other tests in this process share the recorder: every series they made
    // must obey the same closed sets.
    for (method, route, status) in &series {
        assert!(
            standard.contains(&method.as_str()),
            "method label {method:?}"
        );
        assert!(routes.contains(&route.as_str()), "route label {route:?}");
        assert!(
            status.len() == 3 && status.parse::<u16>().is_ok(),
            "status label {status:?}"
        );
    }
    let ours = |m: &str, r: &str, s: &str| (m.to_owned(), r.to_owned(), s.to_owned());
    for expected in [
        ours("other", "/healthz", "405"),
        ours("other", "unmatched", "404"),
        ours("GET", "unmatched", "404"),
        ours("GET", "/api/v1/audit/remediation-orchestration/{id}", "404"),
    ] {
        assert!(series.contains(&expected), "{expected:?} in {series:?}");
    }
    assert_eq!(
        series.iter().filter(|(m, _, _)| m == "other").count(),
        2,
        "200 invented requests make two series: {series:?}"
    );
}
