//! The OpenAPI document is generated from the code and kept under snapshot.

use crate::helpers::spawn_app;

#[test]
fn openapi_document_matches_snapshot() {
    let doc = remaudit_server::ApiDoc::document();
    insta::assert_json_snapshot!("openapi", doc);
}

#[tokio::test]
async fn served_document_is_the_generated_one() {
    let db = remaudit_testkit::SqliteDb::create();
    let app = spawn_app(db.store().await).await;
    let served = app.get("/api/v1/openapi.json").await;
    assert_eq!(served.status, 200);
    let generated = remaudit_server::ApiDoc::document();
    assert_eq!(served.body, generated);
    for path in [
        "/api/v1/audit/remediation-orchestration",
        "/api/v1/audit/remediation-orchestration/batch",
        "/api/v1/audit/remediation-orchestration/{id}",
        "/readyz",
        "/api/v1/audit/analytics/postmortem",
        "/api/v1/audit/analytics/success-rate",
        "/api/v1/audit/analytics/durations",
        "/api/v1/audit/analytics/slowest",
        "/api/v1/audit/analytics/failures",
        "/api/v1/audit/analytics/retries",
    ] {
        assert!(
            served.body["paths"].get(path).is_some(),
            "{path} is documented"
        );
    }
}
