//! Reads: listing with filters and cursors, one remediation's timeline, and
//! the precise errors for bad query input.

use serde_json::json;

use crate::helpers::{TestApp, go_record};

crate::both_backends!(reads:
    listing_pages_through_everything_with_filters,
    timeline_shows_every_transition_in_order,
    bad_query_input_gets_precise_errors,
    health_and_metrics_answer,
);

const LIST: &str = "/api/v1/audit/remediation-orchestration";

/// Start times `i` seconds after a base fixed once per test process.
fn start(i: i64) -> String {
    static BASE: std::sync::OnceLock<chrono::DateTime<chrono::Utc>> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| chrono::Utc::now() - chrono::Duration::hours(2));
    (base + chrono::Duration::seconds(i)).to_rfc3339()
}

pub async fn listing_pages_through_everything_with_filters(app: &TestApp) {
    let records: Vec<_> = (0..25_i64)
        .map(|i| {
            let mut r = go_record(
                &format!("rr-{i:02}"),
                &format!("fp-{}", i % 2),
                ["completed", "failed"][usize::try_from(i % 2).expect("small")],
                &start(i),
            );
            r["namespace"] = json!(if i < 10 { "team-a" } else { "team-b" });
            r
        })
        .collect();
    assert_eq!(app.post_batch(&records).await.body["created"], 25);

    let mut names = Vec::new();
    let mut path = format!("{LIST}?limit=7&alert_fingerprint=fp-0");
    loop {
        let page = app.get(&path).await;
        assert_eq!(page.status, 200);
        let items = page.body["items"].as_array().expect("items");
        assert!(items.len() <= 7);
        names.extend(
            items
                .iter()
                .map(|i| i["remediation_name"].as_str().expect("name").to_owned()),
        );
        match page.body["next_cursor"].as_str() {
            Some(c) => path = format!("{LIST}?limit=7&alert_fingerprint=fp-0&cursor={c}"),
            None => break,
        }
    }
    let expected: Vec<_> = (0..25_i64)
        .rev()
        .filter(|i| i % 2 == 0)
        .map(|i| format!("rr-{i:02}"))
        .collect();
    assert_eq!(names, expected, "newest first, each once");

    let team_a = app
        .get(&format!("{LIST}?namespace=team-a&overall_phase=failed"))
        .await;
    let got: Vec<_> = team_a.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["remediation_name"].clone())
        .collect();
    let want: Vec<_> = (0..10_i64)
        .rev()
        .filter(|i| i % 2 == 1)
        .map(|i| json!(format!("rr-{i:02}")))
        .collect();
    assert_eq!(got, want);

    let window = app
        .get(&format!(
            "{LIST}?since={}&until={}",
            urlencode(&start(5)),
            urlencode(&start(8))
        ))
        .await;
    let got: Vec<_> = window.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["remediation_name"].clone())
        .collect();
    assert_eq!(got, vec![json!("rr-07"), json!("rr-06"), json!("rr-05")]);
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

pub async fn timeline_shows_every_transition_in_order(app: &TestApp) {
    let s = start(0);
    let phases = [
        "pending",
        "processing",
        "analyzing",
        "executing",
        "completed",
    ];
    // Sent newest first: the timeline orders by event time all the same.
    for (i, phase) in phases.iter().enumerate().rev() {
        let mut r = go_record("rr-t", "fp-t", phase, &s);
        r["event_time"] = json!(
            (chrono::Utc::now() - chrono::Duration::minutes(60 - i64::try_from(i).expect("small")))
                .to_rfc3339()
        );
        assert_eq!(app.post_record(&r).await.status, 201);
    }
    let id = app.list_all().await[0]["id"].as_i64().expect("id");
    let answer = app.api.timeline_all(id).await.expect("timeline");
    assert_eq!(answer.remediation.overall_phase, "completed");
    let got: Vec<_> = answer
        .timeline
        .iter()
        .map(|e| e.overall_phase.as_str())
        .collect();
    assert_eq!(got, phases);
    let missing = app.api.timeline_all(999_999).await.expect_err("no such id");
    assert_eq!(missing.status(), Some(404));
    assert_eq!(
        missing.problem().map(remaudit_api::Problem::short_kind),
        Some("not-found")
    );

    app.get(&format!("{LIST}/999999"))
        .await
        .assert_problem(404, "not-found");
    app.get("/no/such/route")
        .await
        .assert_problem(404, "not-found");
}

pub async fn bad_query_input_gets_precise_errors(app: &TestApp) {
    let cases = [
        ("limit=0", "limit", "range"),
        ("limit=1000001", "limit", "range"),
        ("limit=ten", "limit", "range"),
        ("since=yesterday", "since", "rfc3339"),
        ("until=2026-13-01T00:00:00Z", "until", "rfc3339"),
        (
            "since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
            "since",
            "before_until",
        ),
        ("cursor=garbage!", "cursor", "cursor"),
        ("colour=blue", "", "query"),
    ];
    for (query, field, rule) in cases {
        let answer = app.get(&format!("{LIST}?{query}")).await;
        assert_eq!(
            answer.assert_problem(400, "invalid-query"),
            vec![(field.to_owned(), rule.to_owned())],
            "{query}: {}",
            answer.body
        );
    }
    app.get(&format!("{LIST}/not-a-number"))
        .await
        .assert_problem(400, "invalid-query");
}

pub async fn health_and_metrics_answer(app: &TestApp) {
    assert_eq!(app.get("/healthz").await.body["status"], "ok");
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.body["database"], app.store.backend());
    assert_eq!(ready.body["chain"], "off");
    assert_eq!(
        app.post_record(&go_record("rr-m", "fp", "pending", &start(0)))
            .await
            .status,
        201
    );
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for needle in [
        "remaudit_http_request_duration_seconds_count{method=\"POST\",route=\"/api/v1/audit/remediation-orchestration\",status=\"201\"}",
        "remaudit_audit_records_total{outcome=\"created\"}",
        "remaudit_db_pool_connections{state=\"idle\"}",
        "remaudit_db_pool_max_connections",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
    // The process's own figures, read at each scrape.
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
    };
    assert!(value("process_resident_memory_bytes") > 1024.0 * 1024.0);
    assert!(value("process_open_fds") >= 3.0);
}
