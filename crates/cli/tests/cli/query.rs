//! `remaudit query` against `remaudit serve` on a fresh SQLite database,
//! loaded with a small fixed set of remediations.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::process::Output;

use serde_json::{Value, json};

use crate::helpers::{Running, free_port, remaudit, serve_on};

/// The window every query below covers: it holds the whole data set.
const SINCE: &str = "2026-11-20T09:00:00Z";
const UNTIL: &str = "2026-11-20T13:00:00Z";

/// Placeholder of the timestamps the server takes from its own clock
/// (as long as the RFC 3339 form it replaces, so tables stay aligned).
const SERVER_TIME: &str = "YYYY-MM-DDThh:mm:ssZ";

/// One transition of a remediation, as the orchestrator would send it.
fn event(name: &str, alert: &str, namespace: &str, start: &str, phase: &str, at: &str) -> Value {
    json!({
        "alert_fingerprint": alert,
        "remediation_name": name,
        "namespace": namespace,
        "overall_phase": phase,
        "start_time": start,
        "event_time": at,
    })
}

/// Sets `field` of a record.
fn with(mut record: Value, field: &str, value: Value) -> Value {
    record[field] = value;
    record
}

/// The data set: five remediations of three alerts, every transition of each.
///
/// | remediation | alert | namespace | outcome |
/// |---|---|---|---|
/// | rr-mem-1 | mem-pressure-prod-123 | prod | completed after 4m 10s |
/// | rr-mem-2 | mem-pressure-prod-123 | prod | failed in executing after 11m 30s |
/// | rr-mem-3 | mem-pressure-prod-123 | prod | completed after 2m 30s |
/// | rr-disk-1 | disk-full-db-7 | staging | timed out in analyzing after 1h 02m |
/// | rr-cpu-1 | cpu-throttle-api-9 | prod | still executing |
fn data_set() -> Vec<Value> {
    let mem = "mem-pressure-prod-123";
    let (s1, s2, s3) = (
        "2026-11-20T10:00:00Z",
        "2026-11-20T10:20:00Z",
        "2026-11-20T11:00:00Z",
    );
    let (disk, s4) = ("disk-full-db-7", "2026-11-20T10:30:00Z");
    let (cpu, s5) = ("cpu-throttle-api-9", "2026-11-20T12:00:00Z");
    let done = |record: Value, at: &str| with(record, "completion_time", json!(at));
    vec![
        event("rr-mem-1", mem, "prod", s1, "pending", s1),
        event(
            "rr-mem-1",
            mem,
            "prod",
            s1,
            "processing",
            "2026-11-20T10:00:05Z",
        ),
        event(
            "rr-mem-1",
            mem,
            "prod",
            s1,
            "executing",
            "2026-11-20T10:01:00Z",
        ),
        with(
            done(
                event(
                    "rr-mem-1",
                    mem,
                    "prod",
                    s1,
                    "completed",
                    "2026-11-20T10:04:10Z",
                ),
                "2026-11-20T10:04:10Z",
            ),
            "service_crd_statuses",
            json!({
                "remediationProcessing": {"phase": "completed", "startTime": "2026-11-20T10:00:01Z", "completionTime": "2026-11-20T10:00:05Z", "success": true},
                "aiAnalysis": {"phase": "completed", "startTime": "2026-11-20T10:00:05Z", "completionTime": "2026-11-20T10:01:00Z", "success": true},
                "workflowExecution": {"phase": "completed", "startTime": "2026-11-20T10:01:00Z", "completionTime": "2026-11-20T10:04:09Z", "success": true},
            }),
        ),
        event("rr-mem-2", mem, "prod", s2, "pending", s2),
        event(
            "rr-mem-2",
            mem,
            "prod",
            s2,
            "executing",
            "2026-11-20T10:22:00Z",
        ),
        with(
            with(
                done(
                    event(
                        "rr-mem-2",
                        mem,
                        "prod",
                        s2,
                        "failed",
                        "2026-11-20T10:31:30Z",
                    ),
                    "2026-11-20T10:31:30Z",
                ),
                "failure_phase",
                json!("executing"),
            ),
            "failure_reason",
            json!("pod OOMKilled while restarting deployment/api"),
        ),
        event("rr-mem-3", mem, "prod", s3, "pending", s3),
        done(
            event(
                "rr-mem-3",
                mem,
                "prod",
                s3,
                "completed",
                "2026-11-20T11:02:30Z",
            ),
            "2026-11-20T11:02:30Z",
        ),
        event("rr-disk-1", disk, "staging", s4, "pending", s4),
        event(
            "rr-disk-1",
            disk,
            "staging",
            s4,
            "analyzing",
            "2026-11-20T10:31:00Z",
        ),
        with(
            with(
                done(
                    event(
                        "rr-disk-1",
                        disk,
                        "staging",
                        s4,
                        "timeout",
                        "2026-11-20T11:32:00Z",
                    ),
                    "2026-11-20T11:32:00Z",
                ),
                "timeout_phase",
                json!("analyzing"),
            ),
            "timeout_time",
            json!("2026-11-20T11:32:00Z"),
        ),
        event("rr-cpu-1", cpu, "prod", s5, "pending", s5),
        event(
            "rr-cpu-1",
            cpu,
            "prod",
            s5,
            "executing",
            "2026-11-20T12:00:30Z",
        ),
    ]
}

/// `remaudit serve` on its own SQLite database, loaded with [`data_set`].
struct Fixture {
    url: String,
    /// Remediation ids by name.
    ids: HashMap<String, i64>,
    /// The timestamps the server set from its clock, as they are printed.
    filters: Vec<String>,
    _server: Running,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let database = format!("sqlite://{}/query.db", dir.path().display());
        // The data set has fixed dates: keep them younger than the
        // retention age, which refuses older new remediations.
        let (server, url) = serve_on(&database, &["--retention-days", "36500"]).await;
        let http = reqwest::Client::new();
        let records = data_set();
        let answer: Value = http
            .post(format!(
                "{url}/api/v1/audit/remediation-orchestration/batch"
            ))
            .json(&records)
            .send()
            .await
            .expect("post batch")
            .json()
            .await
            .expect("batch answer");
        assert_eq!(answer["created"], json!(records.len()), "{answer:#}");

        // Ids come from a fresh database, so they are the same on every run
        // (though not consecutive); the server's clock readings are not.
        let listing: Value = http
            .get(format!(
                "{url}/api/v1/audit/remediation-orchestration?limit=100"
            ))
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("listing");
        let mut ids = HashMap::new();
        let mut filters = Vec::new();
        for item in listing["items"].as_array().expect("items") {
            let id = item["id"].as_i64().expect("id");
            ids.insert(
                item["remediation_name"].as_str().expect("name").to_owned(),
                id,
            );
            let timeline: Value = http
                .get(format!("{url}/api/v1/audit/remediation-orchestration/{id}"))
                .send()
                .await
                .expect("get timeline")
                .json()
                .await
                .expect("timeline answer");
            let summary = &timeline["remediation"];
            let mut stamps = vec![
                &summary["created_at"],
                &summary["updated_at"],
                &summary["retention_expiry_time"],
            ];
            if let Some(events) = timeline["timeline"].as_array() {
                stamps.extend(events.iter().map(|e| &e["received_at"]));
            }
            for stamp in stamps.into_iter().filter_map(Value::as_str) {
                // As the server wrote it (JSON), and to the second (tables, CSV).
                let seconds = stamp.get(..19).expect("RFC 3339");
                filters.push(stamp.to_owned());
                filters.push(format!("{seconds}Z"));
            }
        }
        assert_eq!(ids.len(), 5, "{listing:#}");
        // Longest first, so that no shorter form cuts a longer one.
        filters.sort();
        filters.dedup();
        filters.sort_by_key(|f| std::cmp::Reverse(f.len()));
        Self {
            url,
            ids,
            filters,
            _server: server,
            _dir: dir,
        }
    }

    /// Runs `remaudit query ARGS` against this server.
    fn query(&self, args: &[&str]) -> Output {
        remaudit()
            .arg("query")
            .args(args)
            .env("REMAUDIT_URL", &self.url)
            .output()
            .expect("run remaudit query")
    }

    /// Runs a query that must succeed; returns its standard output.
    fn stdout(&self, args: &[&str]) -> String {
        let out = self.query(args);
        assert!(
            out.status.success(),
            "remaudit query {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    /// Replaces the server's clock readings by [`SERVER_TIME`].
    fn redact(&self, text: &str) -> String {
        self.filters.iter().fold(text.to_owned(), |text, stamp| {
            text.replace(stamp, SERVER_TIME)
        })
    }

    /// Snapshots `args` in each output format, as `NAME_FORMAT`.
    fn snapshot_formats(&self, name: &str, args: &[&str]) {
        for format in ["table", "json", "csv"] {
            let mut full = vec!["--output", format];
            full.extend_from_slice(args);
            let text = self.redact(&self.stdout(&full));
            insta::assert_snapshot!(format!("{name}_{format}"), text, full.join(" ").as_str());
        }
    }
}

/// `ARGS --since SINCE --until UNTIL`.
fn windowed<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--since", SINCE, "--until", UNTIL]);
    all
}

#[tokio::test]
async fn postmortem_lists_every_remediation_of_the_alert() {
    let f = Fixture::start().await;
    f.snapshot_formats(
        "e2e_postmortem",
        &windowed(&["postmortem", "mem-pressure-prod-123", "--exact"]),
    );
}

#[tokio::test]
async fn success_rate_has_totals_and_a_series() {
    let f = Fixture::start().await;
    f.snapshot_formats(
        "e2e_success_rate",
        &windowed(&["success-rate", "--bucket", "1h"]),
    );
}

#[tokio::test]
async fn durations_by_final_phase() {
    let f = Fixture::start().await;
    f.snapshot_formats("e2e_durations", &windowed(&["durations", "--exact"]));
}

#[tokio::test]
async fn slowest_in_one_namespace() {
    let f = Fixture::start().await;
    f.snapshot_formats(
        "e2e_slowest",
        &windowed(&["slowest", "--exact", "--namespace", "prod", "--limit", "2"]),
    );
}

#[tokio::test]
async fn failures_by_phase() {
    let f = Fixture::start().await;
    f.snapshot_formats("e2e_failures", &windowed(&["failures", "--exact"]));
}

#[tokio::test]
async fn retries_of_alerts_remediated_more_than_once() {
    let f = Fixture::start().await;
    f.snapshot_formats("e2e_retries", &windowed(&["retries", "--exact"]));
}

#[tokio::test]
async fn timeline_of_one_remediation() {
    let f = Fixture::start().await;
    let id = f.ids["rr-mem-2"].to_string();
    f.snapshot_formats("e2e_timeline", &["timeline", &id]);

    let out = f.query(&["timeline", "999"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("remaudit: no remediation with id 999 at http://127.0.0.1:"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

/// The service answers a timeline a page at a time (a page carries at most
/// 8 MiB of records); the command follows the pages and shows every event.
#[tokio::test]
async fn a_timeline_longer_than_one_page_is_shown_whole() {
    let f = Fixture::start().await;
    let start = (chrono::Utc::now() - chrono::Duration::hours(2)).to_rfc3339();
    let statuses = json!({"aiAnalysis": {"phase": "failed", "startTime": start, "success": false,
                          "error": "e".repeat(60_000)}});
    let records: Vec<Value> = (0..160)
        .map(|m| {
            let at = (chrono::Utc::now() - chrono::Duration::minutes(100 - m)).to_rfc3339();
            let record = event("rr-long", "fp-long", "prod", &start, "processing", &at);
            with(record, "service_crd_statuses", statuses.clone())
        })
        .collect();
    let http = reqwest::Client::new();
    for chunk in records.chunks(40) {
        let answer: Value = http
            .post(format!(
                "{}/api/v1/audit/remediation-orchestration/batch",
                f.url
            ))
            .json(chunk)
            .send()
            .await
            .expect("post batch")
            .json()
            .await
            .expect("batch answer");
        assert_eq!(answer["created"], json!(40), "{answer}");
    }
    let listing: Value = http
        .get(format!(
            "{}/api/v1/audit/remediation-orchestration?remediation_name=rr-long",
            f.url
        ))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("listing");
    let id = listing["items"][0]["id"].as_i64().expect("id").to_string();
    let first: Value = http
        .get(format!(
            "{}/api/v1/audit/remediation-orchestration/{id}?limit=1000",
            f.url
        ))
        .send()
        .await
        .expect("page")
        .json()
        .await
        .expect("page answer");
    assert!(
        first["next_cursor"].is_string(),
        "one page does not hold it all"
    );

    let shown: Value = serde_json::from_str(&f.stdout(&["--output", "json", "timeline", &id]))
        .expect("JSON output");
    assert_eq!(shown["timeline"].as_array().map(Vec::len), Some(160));
    assert!(shown.get("next_cursor").is_none());
}

#[tokio::test]
async fn json_output_is_the_servers_answer_with_every_field() {
    let f = Fixture::start().await;
    let window = format!("since={SINCE}&until={UNTIL}&exact=true");
    let id = f.ids["rr-mem-2"].to_string();
    let questions: [(&[&str], String); 7] = [
        (
            &["postmortem", "mem-pressure-prod-123"],
            format!("analytics/postmortem?alert_fingerprint=mem-pressure-prod-123&{window}"),
        ),
        (
            &["success-rate", "--bucket", "1h"],
            format!("analytics/success-rate?bucket=1h&{window}"),
        ),
        (&["durations"], format!("analytics/durations?{window}")),
        (&["slowest"], format!("analytics/slowest?{window}")),
        (&["failures"], format!("analytics/failures?{window}")),
        (&["retries"], format!("analytics/retries?{window}")),
        (
            &["timeline", &id],
            format!("remediation-orchestration/{id}"),
        ),
    ];
    let http = reqwest::Client::new();
    for (args, path) in questions {
        let expected: Value = http
            .get(format!("{}/api/v1/audit/{path}", f.url))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("answer");
        let mut full = vec!["--output", "json"];
        full.extend_from_slice(args);
        if args[0] != "timeline" {
            full.extend_from_slice(&["--since", SINCE, "--until", UNTIL, "--exact"]);
        }
        let printed: Value = serde_json::from_str(&f.stdout(&full)).expect("JSON output");
        assert_eq!(printed, expected, "{full:?}");
    }
}

#[tokio::test]
async fn empty_answers_say_so_in_every_format() {
    let f = Fixture::start().await;
    // A week before the data set: nothing started then.
    let (since, until) = ("2026-11-10T00:00:00Z", "2026-11-11T00:00:00Z");
    let mut all = String::new();
    for question in [
        &["postmortem", "mem-pressure-prod-123"][..],
        &["success-rate"],
        &["durations"],
        &["slowest"],
        &["failures"],
        &["retries"],
    ] {
        for format in ["table", "json", "csv"] {
            let mut args = vec!["--output", format];
            args.extend_from_slice(question);
            args.extend_from_slice(&["--since", since, "--until", until]);
            writeln!(all, "$ remaudit query {}", args.join(" ")).expect("write");
            all.push_str(&f.stdout(&args));
            all.push('\n');
        }
    }
    insta::assert_snapshot!("e2e_empty_answers", all);
}

#[tokio::test]
async fn a_bad_window_is_refused_with_the_servers_reason() {
    let f = Fixture::start().await;
    let out = f.query(&["durations", "--window", "7y"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    insta::assert_snapshot!(
        "e2e_bad_window_stderr",
        String::from_utf8_lossy(&out.stderr)
    );

    // A window longer than retention, and reversed ends, name their field too.
    let out = f.query(&[
        "success-rate",
        "--since",
        "2026-01-01T00:00:00Z",
        "--until",
        "2026-11-01T00:00:00Z",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\n  window: the window covers") && stderr.contains("90 days"),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_server_is_named_with_what_to_do() {
    // Bound, then released: nothing listens there.
    let url = format!("http://127.0.0.1:{}", free_port());
    let out = remaudit()
        .args(["query", "failures", "--url", &url])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!("remaudit: the server at {url} is unreachable"))
            && stderr.contains("set --url or REMAUDIT_URL"),
        "{stderr}"
    );

    let out = remaudit()
        .args(["query", "retries"])
        .env("REMAUDIT_URL", "not a url")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\"not a url\" is not a URL") && stderr.contains("REMAUDIT_URL"),
        "{stderr}"
    );
}

#[tokio::test]
async fn admin_log_shows_every_action_with_its_reason_and_follows_pages() {
    let f = Fixture::start().await;
    let http = reqwest::Client::new();
    let id = f.ids["rr-mem-2"];
    let hold = format!(
        "{}/api/v1/audit/remediation-orchestration/{id}/legal-hold",
        f.url
    );
    for n in 0_u32..3 {
        let request = if n.is_multiple_of(2) {
            http.put(&hold)
        } else {
            http.delete(&hold)
        };
        let answer = request
            .json(&json!({ "reason": format!("case {n}") }))
            .send()
            .await
            .expect("hold");
        assert_eq!(answer.status(), 200);
    }
    // The start-up retention run of `serve` is the job's entry; these are the caller's.
    let json_out: Value = serde_json::from_str(&f.stdout(&[
        "--output",
        "json",
        "admin-log",
        "--subject",
        "anonymous",
    ]))
    .expect("JSON");
    let actions: Vec<_> = json_out["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| {
            format!(
                "{} {} {} {}",
                e["subject"].as_str().expect("subject"),
                e["action"].as_str().expect("action"),
                e["target"],
                e["reason"].as_str().expect("reason")
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            format!("anonymous hold {id} case 2"),
            format!("anonymous release {id} case 1"),
            format!("anonymous hold {id} case 0"),
        ]
    );
    // Two entries, fetched a page at a time, say that older ones exist.
    let table = f.stdout(&["admin-log", "--limit", "2", "--action", "hold"]);
    assert!(
        table.contains("case 2") && table.contains("case 0"),
        "{table}"
    );
    assert!(table.contains("2 actions, newest first\n"), "{table}");
    let table = f.stdout(&["admin-log", "--limit", "2"]);
    assert!(table.contains("older ones exist"), "{table}");
    let csv = f.stdout(&["--output", "csv", "admin-log", "--subject", "nobody"]);
    assert_eq!(csv, "id,at,subject,action,target,reason,detail\n");

    let out = f.query(&["admin-log", "--action", "purge"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown admin action"));
    let out = f.query(&["admin-log", "--since", "yesterday"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("since: must be an RFC 3339 time"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
