//! The contract: what the OpenAPI document states about a value, the server
//! enforces, and the answers decode as the types of `remaudit-api`.

use remaudit_api::audit::{BatchResponse, ItemStatus, StoreResult};
use remaudit_api::openapi::{DATE_TIME_PATTERN, DEFAULT_MAX_BATCH_RECORDS};
use remaudit_api::{Problem, paths};
use serde_json::{Value, json};

use crate::helpers::{TestApp, go_record};

crate::both_backends!(contract:
    empty_and_loose_times_are_refused_with_the_field_named,
    an_analytics_window_stays_within_four_digit_years,
    an_empty_batch_is_refused_and_answers_decode_as_api_types,
    list_filters_with_control_characters_are_refused,
);

fn start() -> String {
    (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339()
}

pub async fn empty_and_loose_times_are_refused_with_the_field_named(app: &TestApp) {
    for (query, field) in [
        ("since=", "since"),
        ("until=", "until"),
        ("since=2026-01-02%2003:04:05Z", "since"),
    ] {
        for path in [paths::AUDIT, paths::ANALYTICS_DURATIONS] {
            let answer = app.get(&format!("{path}?{query}")).await;
            let rules = answer.assert_problem(400, "invalid-query");
            assert!(
                rules.contains(&(field.to_owned(), "rfc3339".to_owned())),
                "{path}?{query}: {rules:?}"
            );
            let problem: Problem = serde_json::from_value(answer.body).expect("a Problem");
            assert!(problem.names_field(field));
            assert_eq!(problem.short_kind(), "invalid-query");
        }
    }
    // The T may be lower-case, as RFC 3339 allows.
    let answer = app
        .get(&format!("{}?since=2026-01-02t03:04:05Z", paths::AUDIT))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

pub async fn an_analytics_window_stays_within_four_digit_years(app: &TestApp) {
    let answer = app
        .get(&format!(
            "{}?until=0000-01-01T00:00:00Z",
            paths::ANALYTICS_DURATIONS
        ))
        .await;
    assert_eq!(
        answer.assert_problem(400, "invalid-query"),
        [("since".to_owned(), "time_range".to_owned())]
    );
    let answer = app
        .get(&format!(
            "{}?since=9999-12-31T00:00:00Z&window=2d",
            paths::ANALYTICS_DURATIONS
        ))
        .await;
    assert_eq!(
        answer.assert_problem(400, "invalid-query"),
        [("until".to_owned(), "time_range".to_owned())]
    );
}

pub async fn an_empty_batch_is_refused_and_answers_decode_as_api_types(app: &TestApp) {
    let answer = app.post_batch(&[]).await;
    assert_eq!(
        answer.assert_problem(422, "invalid-record"),
        [(String::new(), "min_items".to_owned())]
    );

    let record = go_record("rr-contract", "fp-contract", "processing", &start());
    let answer = app.post_record(&record).await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    let stored: StoreResult = serde_json::from_value(answer.body).expect("a StoreResult");
    assert_eq!(stored.status, ItemStatus::Created);

    let mut other = record.clone();
    other["failure_reason"] = json!("other content");
    let answer = app
        .post_batch(&[record, other, json!({ "alert_fingerprint": 5 })])
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let batch: BatchResponse = serde_json::from_value(answer.body).expect("a BatchResponse");
    let statuses: Vec<_> = batch.items.iter().map(|i| i.status).collect();
    assert_eq!(
        statuses,
        [
            ItemStatus::Duplicate,
            ItemStatus::Conflict,
            ItemStatus::Rejected
        ]
    );
    assert_eq!(
        (batch.duplicates, batch.conflicts, batch.rejected),
        (1, 1, 1)
    );
}

/// The document states the batch's size, time and uuid patterns, and the
/// per-status shapes of a batch item.
#[test]
fn the_document_states_the_rules() {
    let doc = remaudit_server::ApiDoc::document();
    let batch = &doc["paths"][paths::AUDIT_BATCH]["post"]["requestBody"]["content"]["application/json"]
        ["schema"];
    assert_eq!(batch["minItems"], 1);
    assert_eq!(batch["maxItems"], DEFAULT_MAX_BATCH_RECORDS);
    let since = doc["paths"][paths::AUDIT]["get"]["parameters"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "since"))
        .expect("since is documented");
    assert_eq!(since["schema"]["format"], "date-time");
    assert_eq!(since["schema"]["pattern"], DATE_TIME_PATTERN);
    let shapes: Vec<&Value> = doc["components"]["schemas"]["BatchItem"]["oneOf"]
        .as_array()
        .expect("one shape per status")
        .iter()
        .map(|s| &s["properties"]["status"]["enum"][0])
        .collect();
    assert_eq!(shapes, ["created", "duplicate", "rejected", "conflict"]);
    let durations = doc["paths"][paths::ANALYTICS_DURATIONS]["get"]["parameters"]
        .as_array()
        .expect("parameters");
    assert!(
        durations
            .iter()
            .all(|p| p["name"] != "limit" && p["name"] != "bucket")
    );
}

/// A NUL in a filter was a 500 on PostgreSQL (its text cannot hold one); every
/// control character is now refused on both backends, as the document says.
pub async fn list_filters_with_control_characters_are_refused(app: &TestApp) {
    for field in [
        "alert_fingerprint",
        "overall_phase",
        "namespace",
        "remediation_name",
    ] {
        for value in ["a%00b", "a%0Ab", "%7F"] {
            let answer = app.get(&format!("{}?{field}={value}", paths::AUDIT)).await;
            assert_eq!(
                answer.assert_problem(400, "invalid-query"),
                [(field.to_owned(), "text".to_owned())],
                "{field}={value}"
            );
        }
    }
    let answer = app.get(&format!("{}?namespace=prod", paths::AUDIT)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}
