//! The publisher against the real service on PostgreSQL over loopback:
//! outages, crashes, a flaky or slow service, poison records, bursts, and a
//! damaged spool. Nothing is lost and nothing is stored twice.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::Stdio;
use std::time::Duration;

use remaudit_client::{Publisher, PublisherSettings};
use remaudit_testkit::wait_for;

use crate::helpers::{
    Fault, Proxy, Running, Service, free_port, metrics, output_with_stdin, record, remaudit,
};

fn config(url: String, spool: Option<&std::path::Path>) -> PublisherSettings {
    PublisherSettings {
        url,
        spool_dir: spool.map(std::path::Path::to_path_buf),
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_secs(2),
        ..PublisherSettings::default()
    }
}

async fn flushed(publisher: &Publisher, within: Duration) {
    tokio::time::timeout(within, publisher.flush())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "not flushed within {within:?}; {} pending, {:?}",
                publisher.pending(),
                publisher.stats()
            )
        });
}

#[tokio::test]
async fn records_published_during_an_outage_all_arrive_once() {
    let spool = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let publisher = Publisher::start(config(
        format!("http://127.0.0.1:{port}"),
        Some(spool.path()),
    ))
    .expect("start");
    let records: Vec<_> = (0..10_000).map(|i| record("outage", i)).collect();
    let ids: std::collections::HashSet<_> = records.iter().filter_map(|r| r.event_id).collect();
    for r in records {
        publisher.publish(r).expect("accepted");
    }
    // The service stays down through several retries of the publisher.
    wait_for(
        "an outage of five retries",
        Duration::from_mins(2),
        || async { (publisher.stats().retries >= 5).then_some(()) },
    )
    .await;
    assert_eq!(
        publisher.pending(),
        10_000,
        "nothing acknowledged while the service is down"
    );

    let service = Service::start_on(remaudit_testkit::PgDb::create().await, port).await;
    flushed(&publisher, Duration::from_mins(2)).await;
    assert_eq!(service.events().await, (10_000, 10_000));
    assert_eq!(service.event_ids().await, ids);
    let stats = publisher.stats();
    assert_eq!(
        (stats.created, stats.duplicates, stats.dropped),
        (10_000, 0, 0)
    );
    let report = publisher.shutdown(Duration::from_secs(5)).await;
    assert_eq!((report.left_in_spool, report.lost), (0, 0));
}

// Multi-threaded: the test thread blocks on the child while the service runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_publisher_loses_nothing_it_accepted() {
    let service = Service::start().await;
    // One slow batch at a time (at most 1,000 records a second), so the kill
    // lands with most accepted records still unsent even on a loaded machine.
    let slow = Proxy::start(service.url(), Fault::Slow(Duration::from_millis(500))).await;
    let spool = tempfile::tempdir().expect("tempdir");
    let records: Vec<_> = (0..5_000).map(|i| record("crash", i)).collect();
    let lines: Vec<String> = records
        .iter()
        .map(|r| serde_json::to_string(r).expect("json"))
        .collect();

    let mut child = Running(
        remaudit()
            .args(["publish", "--url", &slow.url(), "--progress", "250"])
            .env("REMAUDIT_PUBLISHER_MAX_IN_FLIGHT", "1")
            .arg("--spool-dir")
            .arg(spool.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    let mut stdin = child.0.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        for line in lines {
            if writeln!(stdin, "{line}").is_err() {
                return; // the child was killed
            }
        }
    });
    let stdout = BufReader::new(child.0.stdout.take().expect("stdout"));
    let mut accepted = 0_usize;
    for line in stdout.lines() {
        let line = line.expect("line");
        if let Some(n) = line.strip_prefix("accepted ") {
            accepted = n.parse().expect("count");
            if accepted >= 2_500 {
                break;
            }
        }
    }
    child.0.kill().expect("SIGKILL");
    child.0.wait().expect("reaped");
    writer.join().expect("writer");
    assert!(accepted >= 2_500);
    let before = service.events().await.0;
    assert!(
        before < i64::try_from(accepted).expect("small"),
        "the kill came mid-stream ({before} stored)"
    );

    let status = remaudit()
        .args(["publish", "--url", &service.url()])
        .arg("--spool-dir")
        .arg(spool.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("drain run");
    assert!(
        status.success(),
        "the second run drains the spool: {status:?}"
    );
    let stored = service.event_ids().await;
    for r in &records[..accepted] {
        assert!(
            stored.contains(&r.event_id.expect("id")),
            "{} was accepted and lost",
            r.remediation_name
        );
    }
    let (events, distinct) = service.events().await;
    assert_eq!(events, distinct);
    assert!(events <= 5_000);
}

#[tokio::test]
async fn a_flaky_service_gets_everything_once_after_backoff() {
    let handle = metrics();
    let service = Service::start().await;
    let flaky = Proxy::start(service.url(), Fault::Flaky { seed: 11 }).await;
    let publisher = Publisher::start(config(flaky.url(), None)).expect("start");
    for i in 0..3_000 {
        publisher.publish(record("flaky", i)).expect("accepted");
    }
    flushed(&publisher, Duration::from_mins(2)).await;
    assert_eq!(service.events().await, (3_000, 3_000));
    let stats = publisher.stats();
    assert_eq!((stats.created, stats.duplicates), (3_000, 0));
    let seen = flaky.seen();
    let refused = seen.iter().filter(|s| s.refused).count();
    assert!(refused > 0, "the proxy refused some batches");
    assert_eq!(stats.retries, u64::try_from(refused).expect("small"));
    // Retry-After: 1 was honoured: no refused batch came back sooner.
    for (i, refusal) in seen.iter().enumerate().filter(|(_, s)| s.refused) {
        let retry = seen[i + 1..]
            .iter()
            .find(|s| s.body == refusal.body)
            .expect("the refused batch was sent again");
        assert!(
            retry.at - refusal.at >= Duration::from_millis(950),
            "retried after {:?}",
            retry.at - refusal.at
        );
    }
    let text = handle.render();
    let errors = text
        .lines()
        .find(|l| {
            l.starts_with("kubernaut_orchestrator_audit_publish_attempts_total{status=\"error\"}")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_default();
    assert!(
        errors >= 1.0,
        "failed attempts are visible in the metrics:\n{text}"
    );
    for bucket in ["le=\"0.01\"", "le=\"0.05\"", "le=\"0.25\"", "le=\"2\""] {
        assert!(
            text.lines().any(|l| l
                .starts_with("kubernaut_orchestrator_audit_publish_duration_seconds_bucket")
                && l.contains(bucket)),
            "bucket {bucket}"
        );
    }
    assert!(text.contains("remaudit_publisher_retries_total"));
    assert!(text.contains("kubernaut_orchestrator_pending_audit_records"));
    publisher.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn one_invalid_record_in_a_batch_is_rejected_once_and_the_rest_arrive() {
    let service = Service::start().await;
    let counting = Proxy::start(service.url(), Fault::None).await;
    let publisher = Publisher::start(PublisherSettings {
        linger: Duration::from_millis(500),
        ..config(counting.url(), None)
    })
    .expect("start");
    for i in 0..500 {
        let mut r = record("poison", i);
        if i == 250 {
            r.alert_fingerprint = "f".repeat(65);
        }
        publisher.publish(r).expect("accepted");
    }
    flushed(&publisher, Duration::from_mins(1)).await;
    assert_eq!(service.events().await, (499, 499));
    let stats = publisher.stats();
    assert_eq!((stats.created, stats.rejected, stats.retries), (499, 1, 0));
    assert_eq!(
        counting.seen().len(),
        1,
        "one request; the rejected record was never sent again"
    );
    publisher.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_burst_against_a_slow_service_drops_nothing_at_default_sizes() {
    let service = Service::start().await;
    let slow = Proxy::start(service.url(), Fault::Slow(Duration::from_millis(200))).await;
    let spool = tempfile::tempdir().expect("tempdir");
    let publisher = Publisher::start(PublisherSettings {
        url: slow.url(),
        spool_dir: Some(spool.path().to_path_buf()),
        ..PublisherSettings::default()
    })
    .expect("start");
    let mut refused = 0;
    for i in 0..25_000 {
        if publisher.publish(record("burst", i)).is_err() {
            refused += 1;
        }
    }
    assert_eq!(refused, 0);
    flushed(&publisher, Duration::from_mins(3)).await;
    assert_eq!(service.events().await, (25_000, 25_000));
    assert_eq!(publisher.stats().dropped, 0);
    publisher.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_damaged_spool_loses_only_the_damaged_records() {
    let spool = tempfile::tempdir().expect("tempdir");
    let down = format!("http://127.0.0.1:{}", free_port());
    let records: Vec<_> = (0..1_000).map(|i| record("damage", i)).collect();
    let first = Publisher::start(config(down, Some(spool.path()))).expect("start");
    for r in &records {
        first.publish(r.clone()).expect("accepted");
    }
    let report = first.shutdown(Duration::ZERO).await;
    assert_eq!(report.left_in_spool, 1_000);

    let segments: Vec<_> = std::fs::read_dir(spool.path())
        .expect("spool dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    assert_eq!(segments.len(), 1, "1,000 small records fit one segment");
    let mut bytes = std::fs::read(&segments[0]).expect("segment");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xFF; // a flipped byte mid-segment
    bytes.truncate(bytes.len() - 7); // and a torn last record
    std::fs::write(&segments[0], bytes).expect("damage");

    let service = Service::start().await;
    let second = Publisher::start(config(service.url(), Some(spool.path()))).expect("restart");
    flushed(&second, Duration::from_mins(1)).await;
    let stored = service.event_ids().await;
    assert_eq!(
        stored.len(),
        998,
        "exactly the two damaged records are missing"
    );
    assert!(
        !stored.contains(&records[999].event_id.expect("id")),
        "the torn last record"
    );
    second.shutdown(Duration::from_secs(5)).await;
}

#[test]
fn publish_reports_bad_lines_by_number_and_sends_the_rest() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let service = rt.block_on(Service::start());
    let good = |i| serde_json::to_string(&record("lines", i)).expect("json");
    let input = format!(
        "{}\nnot json\n{}\n{{\"alert_fingerprint\":\"x\"}}\n{}\n",
        good(0),
        good(1),
        good(2)
    );
    let out = output_with_stdin(
        remaudit()
            .args(["publish", "--url", &service.url(), "--deadline", "60"])
            .stderr(Stdio::piped()),
        &input,
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "invalid lines make the exit status 1"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 2: invalid record: not JSON"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 4: invalid record:") && stderr.contains("remediation_name"),
        "{stderr}"
    );
    assert_eq!(rt.block_on(service.events()), (3, 3));
}

#[test]
fn publish_leaves_the_rest_in_the_spool_at_the_deadline_and_the_next_run_sends_it() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let spool = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let input: String = (0..50)
        .map(|i| serde_json::to_string(&record("deadline", i)).expect("json") + "\n")
        .collect();
    let run = |stdin: &str, deadline: &str| {
        output_with_stdin(
            remaudit()
                .args([
                    "publish",
                    "--url",
                    &format!("http://127.0.0.1:{port}"),
                    "--deadline",
                    deadline,
                ])
                .arg("--spool-dir")
                .arg(spool.path())
                .stderr(Stdio::null()),
            stdin,
        )
    };
    let out = run(&input, "1");
    assert_eq!(out.status.code(), Some(3));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("50 records left in the spool"), "{stdout}");

    let service = rt.block_on(Service::start_on(
        rt.block_on(remaudit_testkit::PgDb::create()),
        port,
    ));
    let out = run("", "60");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(rt.block_on(service.events()), (50, 50));
}

/// A record valid alone whose `service_crd_statuses` nests 125 levels below
/// its own object: 127 levels with the record's, under `serde_json`'s limit
/// of 128, and one more inside a batch's array, over it.
fn deep(run: &str, i: usize) -> String {
    let mut value = serde_json::to_value(record(run, i)).expect("json");
    let mut nested = serde_json::json!({});
    for _ in 0..125 {
        nested = serde_json::json!({ "d": nested });
    }
    value["service_crd_statuses"] = nested;
    let line = serde_json::to_string(&value).expect("json");
    assert!(serde_json::from_str::<serde_json::Value>(&line).is_ok());
    assert!(serde_json::from_str::<serde_json::Value>(&format!("[{line}]")).is_err());
    line
}

#[test]
fn publish_stores_the_good_records_around_one_the_server_refuses() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let service = rt.block_on(Service::start());
    let good = |i| serde_json::to_string(&record("deep", i)).expect("json");
    let (first, last) = (good(0), good(2));
    let input = format!("{first}\n{}\n{last}\n", deep("deep", 1));
    let out = output_with_stdin(
        remaudit()
            .args(["publish", "--url", &service.url(), "--deadline", "60"])
            .stderr(Stdio::piped()),
        &input,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stored = rt.block_on(service.event_ids());
    let id = |line: &str| {
        serde_json::from_str::<serde_json::Value>(line).expect("json")["event_id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("event_id")
    };
    for (i, line) in [(0, &first), (2, &last)] {
        assert!(
            stored.contains(&id(line)),
            "good record {i} was not stored: {stdout}"
        );
    }
    // Whether the server stores the deep record (judging each element on
    // its own) or refuses it alone, it is answered for, once.
    assert!(
        stdout.contains("acknowledged 3 "),
        "every record answered for: {stdout}"
    );
    assert_ne!(out.status.code(), Some(3), "nothing left unsent: {stdout}");
}
