//! Batches are judged record by record, and the record limit is enforced while
//! the body is split, before any record is parsed.

use serde_json::{Value, json};

use crate::helpers::{TestApp, go_record};

crate::both_backends!(limits:
    a_deep_record_costs_only_itself,
    the_record_limit_is_enforced_while_splitting,
    a_body_of_zeros_is_refused_at_the_record_limit,
);

const SINGLE: &str = "/api/v1/audit/remediation-orchestration";
const BATCH: &str = "/api/v1/audit/remediation-orchestration/batch";

fn minutes_ago(m: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::minutes(m)).to_rfc3339()
}

/// A record whose `service_crd_statuses` holds `levels` nested objects, as text
/// (`serde_json`'s `Value` cannot be serialised this deep through `json!`).
fn deep_record(name: &str, levels: usize) -> String {
    let record = go_record(name, "fp", "pending", &minutes_ago(5));
    let text = serde_json::to_string(&record).expect("json");
    let nested = format!(
        "{}{{}}{}",
        r#"{"a":"#.repeat(levels - 1),
        "}".repeat(levels - 1)
    );
    format!(
        r#"{},"service_crd_statuses":{nested}}}"#,
        text.strip_suffix('}').expect("object")
    )
}

/// `(field, rule)` of each error of a batch item.
fn item_rules(item: &Value) -> Vec<(String, String)> {
    item["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| {
            (
                e["field"].as_str().expect("field").to_owned(),
                e["rule"].as_str().expect("rule").to_owned(),
            )
        })
        .collect()
}

pub async fn a_deep_record_costs_only_itself(app: &TestApp) {
    // 127 levels: inside serde_json's recursion limit (128) on its own, past it
    // inside the batch's array.
    let deep = deep_record("rr-deep", 126);
    assert!(serde_json::from_str::<Value>(&deep).is_ok());
    let deeper = deep_record("rr-deeper", 5_000);
    let good = |name: &str| {
        serde_json::to_string(&go_record(name, "fp", "pending", &minutes_ago(5))).expect("json")
    };
    let body = format!(
        "[{}, {deep}, {}, {deeper}]",
        good("rr-good-1"),
        good("rr-good-2")
    );
    let answer = app
        .post_raw(BATCH, Some("application/json"), body.into_bytes())
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["created"], 2);
    assert_eq!(answer.body["rejected"], 2);
    let items = answer.body["items"].as_array().expect("items");
    let statuses: Vec<_> = items
        .iter()
        .map(|i| i["status"].as_str().expect("status"))
        .collect();
    assert_eq!(statuses, ["created", "rejected", "created", "rejected"]);
    let too_deep = vec![("service_crd_statuses".to_owned(), "max_depth".to_owned())];
    assert_eq!(item_rules(&items[1]), too_deep);
    assert_eq!(item_rules(&items[3]), too_deep);
    assert_eq!(app.names().await, ["rr-good-1", "rr-good-2"]);

    // Alone, the same record gets the same answer: refused, with the same rule.
    for record in [deep, deeper] {
        let alone = app
            .post_raw(SINGLE, Some("application/json"), record.into_bytes())
            .await;
        assert_eq!(alone.assert_problem(422, "invalid-record"), too_deep);
    }
    assert_eq!(app.names().await, ["rr-good-1", "rr-good-2"]);
}

fn zeros(n: usize) -> String {
    format!("[{}0]", "0,".repeat(n - 1))
}

pub async fn the_record_limit_is_enforced_while_splitting(app: &TestApp) {
    let too_many = app
        .post_raw(BATCH, Some("application/json"), zeros(1001).into_bytes())
        .await;
    too_many.assert_problem(413, "payload-too-large");
    let detail = too_many.body["detail"].as_str().expect("detail");
    assert!(detail.contains("at most 1000 records"), "{detail}");

    // What follows record 1001 is never read: garbage there changes nothing.
    let garbage = format!("[{}0, !!! not JSON", "0,".repeat(1000));
    app.post_raw(BATCH, Some("application/json"), garbage.into_bytes())
        .await
        .assert_problem(413, "payload-too-large");

    // At the limit every element is judged, each on its own.
    let most = app
        .post_raw(BATCH, Some("application/json"), zeros(1000).into_bytes())
        .await;
    assert_eq!(most.status, 200, "{}", most.body);
    assert_eq!(most.body["rejected"], 1000);
    assert_eq!(
        item_rules(&most.body["items"][999]),
        [(String::new(), "type".to_owned())]
    );
    // Garbage inside the first 1000 records is a malformed body.
    let malformed = format!("[{}0, !!! not JSON", "0,".repeat(10));
    app.post_raw(BATCH, Some("application/json"), malformed.into_bytes())
        .await
        .assert_problem(400, "malformed-json");
    assert!(app.list_all().await.is_empty());
}

pub async fn a_body_of_zeros_is_refused_at_the_record_limit(app: &TestApp) {
    // Two million elements in 4 MiB: refused after the 1001st, not parsed whole.
    let max = 4 * 1024 * 1024;
    let body = zeros((max - 1) / 2);
    assert!(body.len() <= max);
    let answer = app
        .post_raw(BATCH, Some("application/json"), body.into_bytes())
        .await;
    answer.assert_problem(413, "payload-too-large");
    assert!(
        answer.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("at most 1000 records")),
        "{}",
        answer.body
    );
    // A batch that is not an array is still refused whole.
    let not_array = app.post(BATCH, &json!({"records": []})).await;
    assert_eq!(
        not_array.assert_problem(422, "invalid-record"),
        [(String::new(), "type".to_owned())]
    );
}
