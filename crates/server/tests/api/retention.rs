//! Legal holds and soft deletes over HTTP: a deleted row leaves every read
//! at once, rollups included; a held row cannot be deleted.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::TestApp;

crate::both_backends!(retention:
    a_soft_deleted_row_leaves_every_read_at_once,
    a_legal_hold_blocks_deletion_until_cleared,
    bad_hold_and_delete_input_gets_precise_errors,
);

const WINDOW: &str = "since=2026-11-19T00:00:00Z&until=2026-11-21T00:00:00Z";
const BASE: &str = "/api/v1/audit/analytics";
const AUDIT: &str = "/api/v1/audit/remediation-orchestration";
/// The reason every hold, release and delete here gives.
const REASON: &str = "reason=retention%20test";

/// Two remediations of alert `fp-del` (one failed, one completed) and one of another alert.
fn data() -> Vec<Value> {
    let mut records = Vec::new();
    for (name, fp, start, phase, end) in [
        (
            "rr-a",
            "fp-del",
            "2026-11-20T01:00:00Z",
            "failed",
            "2026-11-20T01:02:00Z",
        ),
        (
            "rr-b",
            "fp-del",
            "2026-11-20T03:00:00Z",
            "completed",
            "2026-11-20T03:01:00Z",
        ),
        (
            "rr-c",
            "fp-other",
            "2026-11-20T04:00:00Z",
            "completed",
            "2026-11-20T04:00:30Z",
        ),
    ] {
        let base = json!({"remediation_name": name, "alert_fingerprint": fp, "start_time": start, "namespace": "prod"});
        let mut pending = base.clone();
        pending["overall_phase"] = json!("pending");
        records.push(pending);
        let mut done = base;
        done["overall_phase"] = json!(phase);
        done["completion_time"] = json!(end);
        if phase == "failed" {
            done["failure_phase"] = json!("executing");
            done["failure_reason"] = json!("workflow rejected");
        }
        records.push(done);
    }
    records
}

async fn id_of(app: &TestApp, name: &str) -> i64 {
    app.list_all()
        .await
        .iter()
        .find(|r| r["remediation_name"] == name)
        .and_then(|r| r["id"].as_i64())
        .unwrap_or_else(|| panic!("{name} is listed"))
}

/// What every read endpoint says about the window, from rollups and from rows.
async fn reads(app: &TestApp, exact: bool) -> Value {
    let e = if exact { "&exact=true" } else { "" };
    let get = |path: String| async move {
        let answer = app.get(&path).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        answer.body
    };
    let names = |body: &Value| -> Vec<String> {
        body["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| i["remediation_name"].as_str().expect("name").to_owned())
            .collect()
    };
    let rate = get(format!("{BASE}/success-rate?{WINDOW}{e}")).await;
    let durations = get(format!("{BASE}/durations?{WINDOW}{e}")).await;
    let failures = get(format!("{BASE}/failures?{WINDOW}{e}")).await;
    let retries = get(format!("{BASE}/retries?{WINDOW}{e}")).await;
    let post = get(format!(
        "{BASE}/postmortem?{WINDOW}&alert_fingerprint=fp-del"
    ))
    .await;
    let slowest = get(format!("{BASE}/slowest?{WINDOW}")).await;
    let mut listed: Vec<String> = app
        .list_all()
        .await
        .iter()
        .map(|r| r["remediation_name"].as_str().expect("name").to_owned())
        .collect();
    listed.sort();
    json!({
        "listed": listed,
        "started": rate["totals"]["started"],
        "failed": rate["totals"]["failed"],
        "phases": durations["phases"].as_array().expect("phases").iter()
            .map(|p| json!([p["final_phase"], p["count"]])).collect::<Vec<_>>(),
        "failures": failures["items"].as_array().map(Vec::len),
        "attempts": retries["attempts"],
        "alerts_retried": retries["alerts_retried"],
        "postmortem": names(&post),
        "slowest": names(&slowest),
    })
}

pub async fn a_soft_deleted_row_leaves_every_read_at_once(app: &TestApp) {
    assert_eq!(app.post_batch(&data()).await.status, 200);
    let id = id_of(app, "rr-a").await;
    for exact in [false, true] {
        assert_eq!(
            reads(app, exact).await,
            json!({
                "listed": ["rr-a", "rr-b", "rr-c"], "started": 3, "failed": 1,
                "phases": [["completed", 2], ["failed", 1], ["all", 3]], "failures": 1,
                "attempts": 3, "alerts_retried": 1,
                "postmortem": ["rr-b", "rr-a"], "slowest": ["rr-a", "rr-b", "rr-c"],
            }),
            "before, exact={exact}"
        );
    }

    let deleted = app
        .call(Method::DELETE, &format!("{AUDIT}/{id}?{REASON}"))
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.body);

    app.get(&format!("{AUDIT}/{id}"))
        .await
        .assert_problem(404, "not-found");
    for exact in [false, true] {
        assert_eq!(
            reads(app, exact).await,
            json!({
                "listed": ["rr-b", "rr-c"], "started": 2, "failed": 0,
                "phases": [["completed", 2], ["all", 2]], "failures": 0,
                "attempts": 2, "alerts_retried": 0,
                "postmortem": ["rr-b"], "slowest": ["rr-b", "rr-c"],
            }),
            "after, exact={exact}"
        );
    }
    // Deleting again finds nothing; a late record does not bring it back.
    app.call(Method::DELETE, &format!("{AUDIT}/{id}?{REASON}"))
        .await
        .assert_problem(404, "not-found");
    let mut late = data()[1].clone();
    late["event_time"] = json!("2026-11-20T01:05:00Z");
    late["duplicate_count"] = json!(3);
    assert_eq!(app.post_record(&late).await.status, 201);
    assert_eq!(reads(app, false).await["listed"], json!(["rr-b", "rr-c"]));
    assert_eq!(reads(app, false).await["started"], 2);
}

pub async fn a_legal_hold_blocks_deletion_until_cleared(app: &TestApp) {
    assert_eq!(app.post_batch(&data()).await.status, 200);
    let id = id_of(app, "rr-b").await;
    let held = app
        .call(Method::PUT, &format!("{AUDIT}/{id}/legal-hold?{REASON}"))
        .await;
    assert_eq!(held.status, 200, "{}", held.body);
    assert_eq!(held.body["legal_hold"], true);
    assert_eq!(held.body["remediation_name"], "rr-b");
    let shown = app.get(&format!("{AUDIT}/{id}")).await;
    assert_eq!(shown.body["remediation"]["legal_hold"], true);

    let refused = app
        .call(Method::DELETE, &format!("{AUDIT}/{id}?{REASON}"))
        .await;
    refused.assert_problem(409, "conflict");
    assert!(
        refused.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("legal hold")),
        "{}",
        refused.body
    );
    assert_eq!(
        app.get(&format!("{AUDIT}/{id}")).await.status,
        200,
        "still there"
    );

    let cleared = app
        .call(Method::DELETE, &format!("{AUDIT}/{id}/legal-hold?{REASON}"))
        .await;
    assert_eq!(
        (cleared.status, &cleared.body["legal_hold"]),
        (200, &json!(false))
    );
    assert_eq!(
        app.call(Method::DELETE, &format!("{AUDIT}/{id}?{REASON}"))
            .await
            .status,
        204
    );
    app.call(Method::PUT, &format!("{AUDIT}/{id}/legal-hold?{REASON}"))
        .await
        .assert_problem(404, "not-found");
}

pub async fn bad_hold_and_delete_input_gets_precise_errors(app: &TestApp) {
    for (method, path) in [
        (Method::DELETE, format!("{AUDIT}/abc")),
        (Method::PUT, format!("{AUDIT}/1.5/legal-hold")),
        (
            Method::DELETE,
            format!("{AUDIT}/99999999999999999999/legal-hold"),
        ),
    ] {
        let errors = app
            .call(method, &path)
            .await
            .assert_problem(400, "invalid-query");
        assert_eq!(errors, [("id".to_owned(), "integer".to_owned())], "{path}");
    }
    for (method, path) in [
        (Method::DELETE, format!("{AUDIT}/424242?{REASON}")),
        (Method::PUT, format!("{AUDIT}/424242/legal-hold?{REASON}")),
        (
            Method::DELETE,
            format!("{AUDIT}/424242/legal-hold?{REASON}"),
        ),
    ] {
        app.call(method, &path)
            .await
            .assert_problem(404, "not-found");
    }
    assert_eq!(app.list_all().await.len(), 0, "nothing was created");
}
