//! The analytics endpoints over HTTP: answers, echoes, links and bad input.

use serde_json::{Value, json};

use crate::helpers::TestApp;

crate::both_backends!(analytics:
    analytics_endpoints_answer_over_http,
    bad_analytics_input_gets_a_precise_400,
);

const HOSTILE: &str = "fp'; DROP TABLE x;--%_&?#";

/// Three remediations of one (hostile) alert and one of another.
fn data() -> Vec<Value> {
    let mut records = Vec::new();
    let mut add = |name: &str, fp: &str, start: &str, end: Option<(&str, &str)>| {
        let base = json!({"remediation_name": name, "alert_fingerprint": fp, "start_time": start, "namespace": "prod"});
        let mut pending = base.clone();
        pending["overall_phase"] = json!("pending");
        records.push(pending);
        if let Some((phase, at)) = end {
            let mut done = base;
            done["overall_phase"] = json!(phase);
            done["completion_time"] = json!(at);
            if phase == "failed" {
                done["failure_phase"] = json!("executing");
                done["failure_reason"] = json!("workflow rejected");
            }
            records.push(done);
        }
    };
    add(
        "rr-1",
        HOSTILE,
        "2026-11-20T01:00:00Z",
        Some(("failed", "2026-11-20T01:02:00Z")),
    );
    add(
        "rr-2",
        HOSTILE,
        "2026-11-20T03:00:00Z",
        Some(("completed", "2026-11-20T03:04:10Z")),
    );
    add("rr-3", HOSTILE, "2026-11-20T05:00:00Z", None);
    add(
        "rr-4",
        "other",
        "2026-11-20T02:00:00Z",
        Some(("completed", "2026-11-20T02:01:00Z")),
    );
    records
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

const WINDOW: &str = "since=2026-11-19T00:00:00Z&until=2026-11-21T00:00:00Z";

pub async fn analytics_endpoints_answer_over_http(app: &TestApp) {
    assert_eq!(app.post_batch(&data()).await.status, 200);
    let base = "/api/v1/audit/analytics";

    let rate = app
        .get(&format!("{base}/success-rate?{WINDOW}&bucket=1d"))
        .await;
    assert_eq!(rate.status, 200, "{}", rate.body);
    assert_eq!(
        rate.body["query"]["window"],
        json!({"since": "2026-11-19T00:00:00Z", "until": "2026-11-21T00:00:00Z", "aligned_to": "day"})
    );
    let totals = &rate.body["totals"];
    assert_eq!(
        (
            totals["started"].as_u64(),
            totals["finished"].as_u64(),
            totals["in_progress"].as_u64()
        ),
        (Some(4), Some(3), Some(1))
    );
    assert!((totals["success_rate"].as_f64().expect("rate") - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(rate.body["series"].as_array().map(Vec::len), Some(2));
    assert_eq!(rate.body["series"][1]["started"], 4);

    let durations = app
        .get(&format!("{base}/durations?{WINDOW}&exact=true"))
        .await;
    assert_eq!(durations.status, 200, "{}", durations.body);
    let completed = &durations.body["phases"][0];
    assert_eq!(
        (
            completed["final_phase"].as_str(),
            completed["count"].as_u64()
        ),
        (Some("completed"), Some(2))
    );
    assert_eq!(completed["avg_seconds"], json!(f64::midpoint(250.0, 60.0)));

    let post = app
        .get(&format!(
            "{base}/postmortem?{WINDOW}&alert_fingerprint={}",
            encode(HOSTILE)
        ))
        .await;
    assert_eq!(post.status, 200, "{}", post.body);
    assert_eq!(post.body["query"]["alert_fingerprint"], HOSTILE);
    let names: Vec<&str> = post.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["remediation_name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        ["rr-3", "rr-2", "rr-1"],
        "newest first, only that alert"
    );
    assert_eq!(post.body["items"][1]["duration_seconds"], 250.0);
    assert_eq!(post.body["items"][2]["failure_reason"], "workflow rejected");
    let link = post.body["items"][1]["timeline"]
        .as_str()
        .expect("link")
        .to_owned();
    let timeline = app.get(&link).await;
    assert_eq!(
        (
            timeline.status,
            timeline.body["remediation"]["remediation_name"].as_str()
        ),
        (200, Some("rr-2"))
    );

    let slowest = app.get(&format!("{base}/slowest?{WINDOW}&limit=1")).await;
    assert_eq!(slowest.body["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(slowest.body["items"][0]["remediation_name"], "rr-2");
    assert_eq!(slowest.body["query"]["limit"], 1);

    let failures = app.get(&format!("{base}/failures?{WINDOW}")).await;
    assert_eq!(
        failures.body["items"],
        json!([{"outcome": "failed", "phase": "executing", "count": 1, "unique_alerts": 1, "sample_reasons": ["workflow rejected"]}])
    );

    let retries = app
        .get(&format!("{base}/retries?{WINDOW}&namespace=prod"))
        .await;
    assert_eq!(
        (
            retries.body["alerts"].as_u64(),
            retries.body["alerts_retried"].as_u64(),
            retries.body["attempts"].as_u64()
        ),
        (Some(2), Some(1), Some(4))
    );
    assert_eq!(retries.body["items"][0]["alert_fingerprint"], HOSTILE);
    assert_eq!(
        retries.body["items"][0]["phase_progression"],
        json!(["failed", "completed", "pending"])
    );
    assert_eq!(retries.body["items"][0]["eventually_successful"], true);

    let empty = app
        .get(&format!("{base}/retries?{WINDOW}&namespace=nobody"))
        .await;
    assert_eq!(
        (empty.status, empty.body["items"].as_array().map(Vec::len)),
        (200, Some(0))
    );
}

pub async fn bad_analytics_input_gets_a_precise_400(app: &TestApp) {
    let cases: &[(&str, &str, &str)] = &[
        ("success-rate?window=7y", "window", "duration"),
        ("success-rate?window=0d", "window", "duration"),
        (
            "durations?since=2026-11-20T00:00:00Z&until=2026-11-19T00:00:00Z",
            "since",
            "before_until",
        ),
        (
            "durations?since=2026-11-20T00:00:00Z&until=2026-11-20T00:00:00Z",
            "since",
            "before_until",
        ),
        ("failures?window=91d", "window", "max_retention"),
        (
            "retries?since=2026-01-01T00:00:00Z&until=2026-11-01T00:00:00Z",
            "window",
            "max_retention",
        ),
        ("slowest?limit=0", "limit", "range"),
        ("slowest?limit=1000000", "limit", "range"),
        ("retries?limit=ten", "limit", "range"),
        ("durations?limit=5", "limit", "unexpected"),
        ("durations?bucket=1h", "bucket", "unexpected"),
        ("success-rate?bucket=30m", "bucket", "whole_hours"),
        ("success-rate?bucket=fortnight", "bucket", "duration"),
        ("success-rate?exact=yes", "exact", "boolean"),
        ("success-rate?since=yesterday", "since", "rfc3339"),
        (
            "success-rate?since=2026-11-19T00:00:00Z&until=2026-11-20T00:00:00Z&window=1d",
            "window",
            "conflict",
        ),
        ("postmortem", "alert_fingerprint", "required"),
        (
            "postmortem?alert_fingerprint=a%00b",
            "alert_fingerprint",
            "text",
        ),
        ("failures?namespace=", "namespace", "text"),
        ("failures?colour=red", "", "query"),
    ];
    for (query, field, rule) in cases {
        let answer = app.get(&format!("/api/v1/audit/analytics/{query}")).await;
        let errors = answer.assert_problem(400, "invalid-query");
        assert!(
            errors.contains(&((*field).to_owned(), (*rule).to_owned())),
            "{query}: expected {field}/{rule}, got {errors:?}"
        );
    }
}

/// A question PostgreSQL cancels at the read statement timeout answers 503
/// `query-timeout` with `Retry-After`.
#[tokio::test]
async fn a_question_past_the_statement_timeout_is_a_503_with_retry_after() {
    let db = remaudit_testkit::PgDb::create().await;
    let store = remaudit_store::connect(
        db.url(),
        remaudit_store::PoolSettings {
            read_statement_timeout: Some(std::time::Duration::from_millis(5)),
            ..remaudit_store::PoolSettings::default()
        },
    )
    .await
    .expect("store");
    // Enough finished remediations that exact percentiles take far longer than 5 ms.
    sqlx::query(
        "INSERT INTO remediation_audit (alert_fingerprint, remediation_name, overall_phase, \
           start_time, completion_time, phase_rank, event_id, event_time, duration_us, duration_bin) \
         SELECT 'fp', 'bulk-' || g, 'completed', \
           TIMESTAMPTZ '2026-11-01T00:00:00Z' + g * INTERVAL '1 second', \
           TIMESTAMPTZ '2026-11-01T00:00:00Z' + g * INTERVAL '1 second' + INTERVAL '1 minute', \
           9, gen_random_uuid(), TIMESTAMPTZ '2026-11-01T00:00:00Z' + g * INTERVAL '1 second', \
           (g * 7919 % 3600000) * 1000, remaudit_duration_bin((g * 7919 % 3600000) * 1000) \
         FROM generate_series(1::int8, 200000) AS g",
    )
    .execute(&db.pool().await)
    .await
    .expect("fill");
    let app = crate::helpers::spawn_app(store).await;
    let path = "/api/v1/audit/analytics/durations?exact=true&since=2026-11-01T00:00:00Z&until=2026-11-08T00:00:00Z";
    let answer = app.get(path).await;
    answer.assert_problem(503, "query-timeout");
    assert!(
        answer
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|secs| secs >= 1),
        "{:?}",
        answer.headers
    );
}
