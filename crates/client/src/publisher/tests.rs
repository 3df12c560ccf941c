//! The publisher against a scripted batch endpoint on loopback: splitting of
//! refused batches, final answers, `Retry-After`, the acknowledged prefix and
//! what shutdown leaves behind.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::{Publisher, PublisherSettings, PublisherStats};
use remaudit_api::paths::AUDIT_BATCH as BATCH_PATH;

/// What the scripted server answers to one request.
enum Reply {
    /// This status for the whole request, with an optional `Retry-After` value.
    Status(u16, Option<&'static str>),
    /// 200 with one item per record, with these statuses.
    Items(Vec<&'static str>),
    /// 200 with these items as they are.
    Raw(Vec<Value>),
    /// No answer until the gate opens.
    Hold(Arc<Notify>),
}

type Script = dyn Fn(usize, &[u64]) -> Reply + Send + Sync;

/// The server's state: its script and what it received.
type ServerState = (Arc<Script>, Arc<Mutex<Vec<Seen>>>);

/// One request the server received: when, and the `n` of each record.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    records: Vec<u64>,
}

/// A batch endpoint that answers per a script and records what it received.
struct Scripted {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Scripted {
    async fn start(script: impl Fn(usize, &[u64]) -> Reply + Send + Sync + 'static) -> Self {
        let script: Arc<Script> = Arc::new(script);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = (script, seen.clone());
        let app = axum::Router::new()
            .route(BATCH_PATH, axum::routing::post(answer))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        Self { url, seen, server }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// The records of every request, in the order they came.
    fn requests(&self) -> Vec<Vec<u64>> {
        self.seen().into_iter().map(|s| s.records).collect()
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A batch answer as the service writes it: counts by status, then `items`.
fn batch_answer(items: &[Value]) -> Value {
    let count = |status: &str| items.iter().filter(|i| i["status"] == status).count();
    json!({
        "created": count("created"),
        "duplicates": count("duplicate"),
        "rejected": count("rejected"),
        "conflicts": count("conflict"),
        "items": items,
    })
}

async fn answer(
    axum::extract::State((script, seen)): axum::extract::State<ServerState>,
    body: Bytes,
) -> Response {
    let records: Vec<Value> = serde_json::from_slice(&body).expect("a JSON array");
    let ns: Vec<u64> = records
        .iter()
        .map(|r| {
            r["n"].as_u64().unwrap_or_else(|| {
                // A typed record carries its number in its name, `n-<n>`.
                r["remediation_name"]
                    .as_str()
                    .and_then(|name| name.strip_prefix("n-"))
                    .and_then(|n| n.parse().ok())
                    .expect("n, or a remediation named n-<n>")
            })
        })
        .collect();
    let request = {
        let mut seen = seen.lock().expect("lock");
        seen.push(Seen {
            at: Instant::now(),
            records: ns.clone(),
        });
        seen.len() - 1
    };
    let reply = script(request, &ns);
    match reply {
        Reply::Status(status, retry_after) => {
            let mut response = (
                StatusCode::from_u16(status).expect("status"),
                [(header::CONTENT_TYPE, "application/problem+json")],
                r#"{"type":"about:blank","title":"scripted"}"#,
            )
                .into_response();
            if let Some(after) = retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static(after));
            }
            response
        }
        Reply::Items(statuses) => {
            let items: Vec<Value> = statuses
                .iter()
                .enumerate()
                .map(|(index, status)| json!({"index": index, "status": status}))
                .collect();
            axum::Json(batch_answer(&items)).into_response()
        }
        Reply::Raw(items) => axum::Json(batch_answer(&items)).into_response(),
        Reply::Hold(gate) => {
            gate.notified().await;
            axum::Json(batch_answer(
                &ns.iter()
                    .enumerate()
                    .map(|(i, _)| json!({"index": i, "status": "created"}))
                    .collect::<Vec<_>>(),
            ))
            .into_response()
        }
    }
}

fn created(ns: &[u64]) -> Reply {
    Reply::Items(vec!["created"; ns.len()])
}

fn config(url: &str) -> PublisherSettings {
    PublisherSettings {
        url: url.to_owned(),
        linger: Duration::from_millis(20),
        fsync_interval: Duration::from_millis(10),
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        request_timeout: Duration::from_secs(30),
        ..PublisherSettings::default()
    }
}

fn publish(publisher: &Publisher, ns: impl IntoIterator<Item = u64>) {
    for n in ns {
        publisher
            .publish_json(Bytes::from(json!({ "n": n }).to_string()))
            .expect("accepted");
    }
}

async fn flushed(publisher: &Publisher) {
    tokio::time::timeout(Duration::from_secs(20), publisher.flush())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "not flushed: {} pending, {:?}",
                publisher.pending(),
                publisher.stats()
            )
        });
}

/// Waits until `check` holds, failing after ten seconds.
async fn until(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A server that holds its first request until the returned gate is
/// notified, and stores every record after it.
async fn holding_the_first_request() -> (Scripted, Arc<Notify>) {
    let gate = Arc::new(Notify::new());
    let held = gate.clone();
    let server = Scripted::start(move |request, ns| {
        if request == 0 {
            Reply::Hold(held.clone())
        } else {
            created(ns)
        }
    })
    .await;
    (server, gate)
}

fn stats(created: u64, conflicts: u64, rejected: u64) -> PublisherStats {
    PublisherStats {
        created,
        conflicts,
        rejected,
        ..PublisherStats::default()
    }
}

fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort_unstable();
    v
}

#[tokio::test]
async fn a_batch_too_large_is_sent_in_halves_until_it_fits() {
    let server = Scripted::start(|_, ns| {
        if ns.len() > 2 {
            Reply::Status(413, None)
        } else {
            created(ns)
        }
    })
    .await;
    let publisher = Publisher::start(PublisherSettings {
        batch_records: 8,
        ..config(&server.url)
    })
    .expect("start");
    publish(&publisher, 0..8);
    flushed(&publisher).await;
    assert_eq!(publisher.stats(), stats(8, 0, 0));
    assert_eq!(
        server.requests(),
        vec![
            vec![0, 1, 2, 3, 4, 5, 6, 7],
            vec![0, 1, 2, 3],
            vec![0, 1],
            vec![2, 3],
            vec![4, 5, 6, 7],
            vec![4, 5],
            vec![6, 7],
        ]
    );
}

#[tokio::test]
async fn one_bad_record_costs_only_itself_when_the_batch_is_refused_whole() {
    for status in [400, 422] {
        // The record 5 spoils any request it is in, as a record too deep
        // for the server's parser does.
        let server = Scripted::start(move |_, ns| {
            if ns.contains(&5) {
                Reply::Status(status, None)
            } else {
                created(ns)
            }
        })
        .await;
        let publisher = Publisher::start(PublisherSettings {
            batch_records: 8,
            ..config(&server.url)
        })
        .expect("start");
        publish(&publisher, 0..8);
        flushed(&publisher).await;
        assert_eq!(publisher.stats(), stats(7, 0, 1), "status {status}");
        let requests = server.requests();
        // 8 -> 4 -> 2 -> 1: the path to the bad record, and one sibling at each level.
        assert_eq!(requests.len(), 7, "status {status}: {requests:?}");
        assert_eq!(
            requests.iter().filter(|r| r.as_slice() == [5]).count(),
            1,
            "status {status}: the bad record is refused once, on its own"
        );
        let stored: Vec<u64> = requests
            .iter()
            .filter(|r| !r.contains(&5))
            .flatten()
            .copied()
            .collect();
        assert_eq!(sorted(stored), vec![0, 1, 2, 3, 4, 6, 7], "status {status}");
        let report = publisher.shutdown(Duration::from_secs(1)).await;
        assert_eq!(report.acknowledged, 8);
    }
}

#[tokio::test]
async fn a_server_refusing_everything_costs_under_two_requests_a_record() {
    let server = Scripted::start(|_, _| Reply::Status(400, None)).await;
    let publisher = Publisher::start(PublisherSettings {
        batch_records: 16,
        ..config(&server.url)
    })
    .expect("start");
    publish(&publisher, 0..16);
    flushed(&publisher).await;
    assert_eq!(publisher.stats(), stats(0, 0, 16));
    let requests = server.requests();
    assert_eq!(requests.len(), 2 * 16 - 1, "a full binary tree of halves");
    let singles: Vec<u64> = requests
        .iter()
        .filter(|r| r.len() == 1)
        .map(|r| r[0])
        .collect();
    assert_eq!(
        sorted(singles),
        (0..16).collect::<Vec<_>>(),
        "each record was refused on its own before it was given up"
    );
}

#[tokio::test]
async fn per_record_answers_are_final_and_counted_by_kind() {
    let server = Scripted::start(|request, ns| match request {
        0 => Reply::Items(vec![
            "created",
            "duplicate",
            "conflict",
            "rejected",
            "created",
        ]),
        // A single POST's conflict, for a record sent alone.
        _ if ns == [5] => Reply::Status(409, None),
        _ => created(ns),
    })
    .await;
    let publisher = Publisher::start(PublisherSettings {
        batch_records: 5,
        ..config(&server.url)
    })
    .expect("start");
    publish(&publisher, 0..5);
    flushed(&publisher).await;
    publish(&publisher, [5]);
    flushed(&publisher).await;
    assert_eq!(
        publisher.stats(),
        PublisherStats {
            created: 2,
            duplicates: 1,
            conflicts: 2,
            rejected: 1,
            ..PublisherStats::default()
        }
    );
    assert_eq!(
        server.requests(),
        vec![vec![0, 1, 2, 3, 4], vec![5]],
        "no final answer is sent again"
    );
}

#[tokio::test]
async fn an_answer_the_publisher_cannot_account_for_is_retried_not_dropped() {
    let answers = [
        // A status a newer server may send.
        vec![
            json!({"index": 0, "status": "created"}),
            json!({"index": 1, "status": "quarantined"}),
        ],
        // A record missing from the answer.
        vec![json!({"index": 0, "status": "created"})],
        // An index out of range.
        vec![
            json!({"index": 0, "status": "created"}),
            json!({"index": 1, "status": "created"}),
            json!({"index": 2, "status": "created"}),
        ],
        // A record answered twice.
        vec![
            json!({"index": 0, "status": "created"}),
            json!({"index": 0, "status": "created"}),
        ],
    ];
    for bad in answers {
        let first = bad.clone();
        let server = Scripted::start(move |request, ns| match request {
            0 => Reply::Raw(first.clone()),
            _ => created(ns),
        })
        .await;
        let publisher = Publisher::start(PublisherSettings {
            batch_records: 2,
            ..config(&server.url)
        })
        .expect("start");
        publish(&publisher, 0..2);
        flushed(&publisher).await;
        let stats = publisher.stats();
        assert_eq!(
            (stats.created, stats.rejected, stats.retries),
            (2, 0, 1),
            "{bad:?}"
        );
        assert_eq!(server.requests(), vec![vec![0, 1], vec![0, 1]], "{bad:?}");
    }
}

#[tokio::test]
async fn retry_after_is_honoured_up_to_the_cap() {
    // A year is cut to the cap.
    let server = Scripted::start(|request, ns| match request {
        0 => Reply::Status(503, Some("31536000")),
        _ => created(ns),
    })
    .await;
    let cap = Duration::from_millis(300);
    let publisher = Publisher::start(PublisherSettings {
        max_retry_after: cap,
        ..config(&server.url)
    })
    .expect("start");
    publish(&publisher, [0]);
    flushed(&publisher).await;
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    let gap = seen[1].at - seen[0].at;
    assert!(gap >= cap, "waited {gap:?}, under the cap");
    assert_eq!(publisher.stats().retries, 1);

    // One under the cap is waited out, though the backoff is far shorter.
    let server = Scripted::start(|request, ns| match request {
        0 => Reply::Status(429, Some("1")),
        _ => created(ns),
    })
    .await;
    let publisher = Publisher::start(config(&server.url)).expect("start");
    publish(&publisher, [0]);
    flushed(&publisher).await;
    let seen = server.seen();
    let gap = seen[1].at - seen[0].at;
    assert!(gap >= Duration::from_secs(1), "waited only {gap:?}");
}

#[tokio::test]
async fn only_the_answered_prefix_leaves_the_spool() {
    let holding = Arc::new(AtomicBool::new(true));
    let gate = Arc::new(Notify::new());
    let (hold, gate_held) = (holding.clone(), gate.clone());
    let server = Scripted::start(move |_, ns| {
        if ns == [0] && hold.load(Ordering::SeqCst) {
            Reply::Hold(gate_held.clone())
        } else {
            created(ns)
        }
    })
    .await;
    let spool = tempfile::tempdir().expect("tempdir");
    let start = || {
        Publisher::start(PublisherSettings {
            batch_records: 1,
            max_in_flight: 2,
            spool_dir: Some(spool.path().to_path_buf()),
            ..config(&server.url)
        })
        .expect("start")
    };
    let publisher = start();
    publish(&publisher, 0..2);
    // Record 1 is answered while record 0 is still held.
    until("record 1 answered", || publisher.stats().created == 1).await;
    // Shutdown records in the ledger all that may be acknowledged.
    let report = publisher.shutdown(Duration::ZERO).await;
    assert_eq!(report.acknowledged, 1);
    assert_eq!(
        report.left_in_spool, 2,
        "record 1 was answered but record 0 before it was not: both stay"
    );

    // The next run sends both again.
    holding.store(false, Ordering::SeqCst);
    let publisher = start();
    until("both records answered", || publisher.stats().created == 2).await;
    let report = publisher.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        (report.acknowledged, report.left_in_spool, report.lost),
        (2, 0, 0)
    );
    gate.notify_waiters();
}

#[tokio::test]
async fn a_shutdown_during_a_split_leaves_the_whole_batch_in_the_spool() {
    // Batches are refused whole; record 0 alone is stored, and the service
    // then stops answering, as if the process died while splitting.
    let gate = Arc::new(Notify::new());
    let held = gate.clone();
    let server = Scripted::start(move |_, ns| match ns {
        [0] => created(ns),
        [_] => Reply::Hold(held.clone()),
        _ => Reply::Status(400, None),
    })
    .await;
    let spool = tempfile::tempdir().expect("tempdir");
    let with = |url: &str| PublisherSettings {
        batch_records: 4,
        spool_dir: Some(spool.path().to_path_buf()),
        ..config(url)
    };
    let publisher = Publisher::start(with(&server.url)).expect("start");
    publish(&publisher, 0..4);
    until("record 1 sent alone", || {
        server.requests().last() == Some(&vec![1])
    })
    .await;
    let report = publisher.shutdown(Duration::ZERO).await;
    assert_eq!(
        (report.acknowledged, report.left_in_spool, report.lost),
        (0, 4, 0),
        "a batch leaves the spool only once every record in it is answered"
    );

    let healthy = Scripted::start(|_, ns| created(ns)).await;
    let publisher = Publisher::start(with(&healthy.url)).expect("restart");
    flushed(&publisher).await;
    assert_eq!(healthy.requests(), vec![vec![0, 1, 2, 3]]);
    let report = publisher.shutdown(Duration::from_secs(5)).await;
    assert_eq!((report.left_in_spool, report.lost), (0, 0));
    gate.notify_waiters();
}

/// A typed record named `n-<n>`; the record with `n` 7 carries a status
/// snapshot of about 100 KiB.
fn typed(n: u64) -> remaudit_model::RemediationOrchestrationAudit {
    let mut record = json!({
        "alert_fingerprint": "fp-typed", "remediation_name": format!("n-{n}"),
        "overall_phase": "processing", "start_time": "2026-12-01T10:00:00Z",
    });
    if n == 7 {
        record["service_crd_statuses"] = json!({ "note": "x".repeat(100 * 1024) });
    }
    serde_json::from_value(record).expect("record")
}

#[tokio::test]
async fn spooled_records_wait_in_the_spool_only_and_are_sent_from_it_in_order() {
    let (server, gate) = holding_the_first_request().await;
    let spool = tempfile::tempdir().expect("tempdir");
    let publisher = Publisher::start(PublisherSettings {
        batch_records: 10,
        max_in_flight: 1,
        spool_dir: Some(spool.path().to_path_buf()),
        ..config(&server.url)
    })
    .expect("start");
    for n in 0..50 {
        publisher.publish(typed(n)).expect("accepted");
    }
    // The thread's buffer is not kept at the size of the large record.
    let kept = super::SCRATCH.with_borrow(Vec::capacity);
    assert!(
        kept <= super::SCRATCH_KEEP_BYTES,
        "the buffer kept {kept} bytes"
    );
    until("the first batch in flight", || {
        !server.requests().is_empty()
    })
    .await;
    {
        let st = publisher.shared.lock();
        assert!(
            st.memory.is_empty(),
            "{} spooled records also kept in memory",
            st.memory.len()
        );
        assert_eq!(st.pending(), 50, "every record is pending");
    }
    // A permit, should the held request not be waiting yet.
    gate.notify_one();
    flushed(&publisher).await;
    let sent: Vec<u64> = server.requests().concat();
    assert_eq!(
        sent,
        (0..50).collect::<Vec<_>>(),
        "each record once, in order"
    );
    assert_eq!(publisher.stats(), stats(50, 0, 0));
    let report = publisher.shutdown(Duration::from_secs(5)).await;
    assert_eq!((report.left_in_spool, report.lost), (0, 0));
}

#[tokio::test]
async fn shutdown_counts_as_lost_only_what_could_not_be_spooled() {
    let gate = Arc::new(Notify::new());
    let held = gate.clone();
    let server = Scripted::start(move |_, _| Reply::Hold(held.clone())).await;

    // No spool: everything unanswered is lost, in flight or not.
    let publisher = Publisher::start(PublisherSettings {
        batch_records: 2,
        max_in_flight: 1,
        ..config(&server.url)
    })
    .expect("start");
    publish(&publisher, 0..5);
    until("a batch in flight", || !server.requests().is_empty()).await;
    let report = publisher.shutdown(Duration::ZERO).await;
    assert_eq!(
        (report.acknowledged, report.left_in_spool, report.lost),
        (0, 0, 5)
    );
    assert_eq!(publisher.stats().dropped, 5);

    // A spool with room for three records: the other two are lost.
    let spool = tempfile::tempdir().expect("tempdir");
    let frame = crate::spool::RECORD_OVERHEAD_BYTES + json!({"n": 0}).to_string().len() as u64;
    let publisher = Publisher::start(PublisherSettings {
        batch_records: 2,
        max_in_flight: 1,
        spool_dir: Some(spool.path().to_path_buf()),
        spool_max_bytes: 3 * frame + 1,
        ..config(&server.url)
    })
    .expect("start");
    publish(&publisher, 0..5);
    let report = publisher.shutdown(Duration::ZERO).await;
    assert_eq!(
        (report.acknowledged, report.left_in_spool, report.lost),
        (0, 3, 2)
    );
    assert_eq!(publisher.stats().dropped, 2);
    gate.notify_waiters();
}

/// What `start` puts in the exporter before any record: the spool's limit,
/// and the counters alerts read at 0 (a series first seen at 1 has no
/// increase to show, so the first drop would not alert).
#[tokio::test]
async fn start_exports_the_spool_limit_and_the_loss_counters_at_zero() {
    use metrics_exporter_prometheus::PrometheusBuilder;

    let recorder = PrometheusBuilder::new().build_recorder();
    let exported = recorder.handle();
    let spool = tempfile::tempdir().expect("tempdir");
    let publisher = metrics::with_local_recorder(&recorder, || {
        Publisher::start(PublisherSettings {
            spool_dir: Some(spool.path().to_path_buf()),
            spool_max_bytes: 123_456_789,
            ..config("http://127.0.0.1:9")
        })
    })
    .expect("start");
    let text = exported.render();
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(
        lines.contains(&"remaudit_publisher_spool_max_bytes 123456789"),
        "{text}"
    );
    assert!(
        lines.contains(&"kubernaut_orchestrator_audit_publish_failures_total 0"),
        "{text}"
    );
    for reason in crate::metrics::DROP_REASONS {
        let series = format!("remaudit_publisher_dropped_total{{reason=\"{reason}\"}} 0");
        assert!(lines.contains(&series.as_str()), "{series} in {text}");
    }
    publisher.shutdown(Duration::ZERO).await;
}

/// A spool directory moved away under the running publisher: the records in
/// segments the reader has not opened yet can no longer be read back, so
/// they cannot be sent. Shutdown still ends at its deadline, and the records
/// are where the spool was moved to.
#[tokio::test]
async fn shutdown_ends_at_its_deadline_when_the_spool_cannot_be_read() {
    let (server, gate) = holding_the_first_request().await;
    let root = tempfile::tempdir().expect("tempdir");
    let (dir, moved) = (root.path().join("spool"), root.path().join("moved"));
    let frame = crate::spool::RECORD_OVERHEAD_BYTES + json!({"n": 0}).to_string().len() as u64;
    let with = |url: &str, fsync: Duration| PublisherSettings {
        max_in_flight: 1,
        // Two records a segment: the records after the first few are in
        // segments the reader opens later, by name.
        spool_segment_bytes: 2 * frame,
        // The timer then turns only at start, so no spool work by name
        // (a spare segment, the ledger) fails before shutdown; every spool
        // error counted below is a failed read.
        fsync_interval: fsync,
        spool_dir: Some(dir.clone()),
        ..config(url)
    };
    let publisher = Publisher::start(with(&server.url, Duration::from_hours(1))).expect("start");
    publish(&publisher, [0]);
    until("record 0 in flight", || !server.requests().is_empty()).await;
    publish(&publisher, 1..6);
    std::fs::rename(&dir, &moved).expect("move the spool away");
    std::fs::write(&dir, b"not a directory").expect("a file in its place");
    gate.notify_one();
    until("a failed read of the spool", || {
        publisher.stats().spool_errors > 0
    })
    .await;
    assert_eq!(publisher.stats().created, 1);
    let report = tokio::time::timeout(
        Duration::from_secs(10),
        publisher.shutdown(Duration::from_millis(100)),
    )
    .await
    .expect("shutdown ends soon after its deadline");
    assert_eq!((report.acknowledged, report.lost), (1, 0));
    assert!(report.left_in_spool >= 5, "{report:?}");
    assert_eq!(
        server.requests(),
        vec![vec![0]],
        "only record 0 could be sent"
    );

    // Put back, the spool gives up the other five to the next run.
    std::fs::remove_file(&dir).expect("remove the file");
    std::fs::rename(&moved, &dir).expect("move the spool back");
    let publisher =
        Publisher::start(with(&server.url, Duration::from_millis(10))).expect("restart");
    flushed(&publisher).await;
    let mut sent = server.requests().concat();
    sent.dedup();
    assert!(sent.ends_with(&[1, 2, 3, 4, 5]), "{sent:?}");
    let report = publisher.shutdown(Duration::from_secs(5)).await;
    assert_eq!((report.left_in_spool, report.lost), (0, 0));
}

/// With an fsync cadence of an hour the sender's timer never turns in this
/// test, so each record below is sent only if publishing woke the sender:
/// records published while a batch is held go out when it is answered, and
/// a record published after the sender went idle goes out on its own.
#[tokio::test]
async fn publishing_wakes_the_sender_whether_a_batch_is_held_or_it_is_idle() {
    let (server, gate) = holding_the_first_request().await;
    let spool = tempfile::tempdir().expect("tempdir");
    let publisher = Publisher::start(PublisherSettings {
        max_in_flight: 1,
        fsync_interval: Duration::from_hours(1),
        linger: Duration::from_millis(1),
        spool_dir: Some(spool.path().to_path_buf()),
        ..config(&server.url)
    })
    .expect("start");
    publish(&publisher, [0]);
    until("record 0 in flight", || !server.requests().is_empty()).await;
    publish(&publisher, 1..4);
    gate.notify_one();
    until("records 0 to 3 answered", || publisher.stats().created == 4).await;
    publish(&publisher, [4]);
    until("record 4 answered", || publisher.stats().created == 5).await;
    assert_eq!(
        server.requests(),
        vec![vec![0], vec![1, 2, 3], vec![4]],
        "each record once, in order"
    );
    let report = publisher.shutdown(Duration::from_secs(5)).await;
    assert_eq!((report.left_in_spool, report.lost), (0, 0));
}
