//! The admin verification route: unchained servers say so (409), chained
//! ones verify clean, name tampering done behind their back, page through a
//! range with a cursor and refuse unbounded ranges.

use std::sync::Arc;

use remaudit_api::chain::{ChainVerification, encode_cursor};
use remaudit_api::paths;
use remaudit_model::chain::{BreakKind, ChainKey, ChainRemediation, KeyRing};
use remaudit_server::ServerSettings;
use remaudit_server::telemetry::CHAIN_BREAKS_FOUND;
use remaudit_store::Store;
use serde_json::json;

use crate::helpers::{TestApp, series_value, spawn_app, spawn_app_with};

async fn chained(store: Arc<dyn Store>) -> TestApp {
    let ring = KeyRing::single(ChainKey::new("api-test", [3; 32]).expect("key"));
    spawn_app_with(
        store,
        ServerSettings {
            chain: Some(Arc::new(ring)),
            ..ServerSettings::default()
        },
    )
    .await
}

/// Five events of each of `names`, started an hour ago.
async fn seed(app: &TestApp, names: &[&str]) {
    let start = chrono::Utc::now() - chrono::TimeDelta::hours(1);
    for name in names {
        for step in 0..5 {
            let record = json!({"namespace": "api", "remediation_name": name, "alert_fingerprint": "fp",
                "start_time": start.to_rfc3339(), "overall_phase": "processing",
                "event_time": (start + chrono::TimeDelta::seconds(step)).to_rfc3339(),
                "failure_reason": format!("step {step}")});
            assert_eq!(app.post_record(&record).await.status, 201);
        }
    }
}

fn verification(body: serde_json::Value) -> ChainVerification {
    serde_json::from_value(body).expect("a ChainVerification")
}

#[tokio::test]
async fn unchained_server_answers_409_and_readyz_says_off() {
    let db = remaudit_testkit::SqliteDb::create();
    let app = spawn_app(db.store().await).await;
    assert_eq!(app.get(paths::READYZ).await.body["chain"], "off");
    let answer = app.get(paths::ADMIN_VERIFY).await;
    answer.assert_problem(409, "conflict");
    assert!(
        answer.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("--chain-key-file")),
        "{}",
        answer.body
    );
}

/// What the tests change behind the server's back.
const TAMPER: &str = "UPDATE remediation_audit_events SET overall_phase = 'failed' \
     WHERE remediation_name = 'rr-b' AND chain_seq = 3";

#[tokio::test]
async fn postgres_chained_server_verifies_names_tampering_and_pages() {
    let db = remaudit_testkit::PgDb::create().await;
    let pool = db.pool().await;
    chained_server_verifies_names_tampering_and_pages(db.store().await, async move {
        sqlx::query(TAMPER)
            .execute(&pool)
            .await
            .expect("tamper")
            .rows_affected()
    })
    .await;
}

#[tokio::test]
async fn sqlite_chained_server_verifies_names_tampering_and_pages() {
    let db = remaudit_testkit::SqliteDb::create();
    let store = db.store().await;
    let pool = sqlx::SqlitePool::connect(&db.url()).await.expect("sqlite");
    chained_server_verifies_names_tampering_and_pages(store, async move {
        sqlx::query(TAMPER)
            .execute(&pool)
            .await
            .expect("tamper")
            .rows_affected()
    })
    .await;
}

async fn chained_server_verifies_names_tampering_and_pages(
    store: Arc<dyn Store>,
    tamper: impl Future<Output = u64>,
) {
    let app = chained(store).await;
    assert_eq!(app.get(paths::READYZ).await.body["chain"], "on");
    seed(&app, &["rr-a", "rr-b", "rr-c"]).await;

    let clean = app.get(paths::ADMIN_VERIFY).await;
    assert_eq!(clean.status, 200, "{}", clean.body);
    let clean = verification(clean.body);
    assert_eq!(
        (clean.remediations, clean.verified, clean.breaks.len()),
        (3, 15, 0)
    );
    assert_eq!(clean.next, None);

    // Two a page: the cursor goes on where the first page stopped.
    let first = verification(
        app.get(&format!("{}?limit=2", paths::ADMIN_VERIFY))
            .await
            .body,
    );
    assert_eq!(first.remediations, 2);
    let next = first.next.expect("a cursor");
    let second = verification(
        app.get(&format!("{}?limit=2&after={next}", paths::ADMIN_VERIFY))
            .await
            .body,
    );
    assert_eq!((second.remediations, second.next), (1, None));

    // Every kind's counter exists from the start, so that an alert on its
    // increase sees the first break.
    for kind in ["edited", "deleted", "inserted", "reordered"] {
        assert!(
            series_value(CHAIN_BREAKS_FOUND, &format!("kind=\"{kind}\"")).is_some(),
            "{kind}"
        );
    }
    let edited = || series_value(CHAIN_BREAKS_FOUND, "kind=\"edited\"").unwrap_or(0.0);
    let before = edited();
    assert_eq!(tamper.await, 1);
    let broken = verification(app.get(paths::ADMIN_VERIFY).await.body);
    // At least this page's one edited link (the other backend's test shares
    // the process's counters and may add its own).
    assert!(edited() >= before + 1.0, "{before} then {}", edited());
    let found: Vec<_> = broken
        .breaks
        .iter()
        .map(|b| (b.remediation.remediation_name.as_str(), b.seq, b.kind))
        .collect();
    assert_eq!(found, [("rr-b", Some(3), BreakKind::Edited)]);
}

#[tokio::test]
async fn bad_ranges_cursors_and_limits_are_400() {
    let db = remaudit_testkit::SqliteDb::create();
    let app = chained(db.store().await).await;
    let bogus = encode_cursor(&ChainRemediation {
        start_time: chrono::Utc::now(),
        namespace: "x".into(),
        remediation_name: "y".into(),
    });
    for query in [
        "since=2026-01-01T00:00:00Z&until=2026-03-01T00:00:00Z",
        "since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
        "since=yesterday",
        "after=not-a-cursor",
        "limit=0",
        "limit=100000",
    ] {
        app.get(&format!("{}?{query}", paths::ADMIN_VERIFY))
            .await
            .assert_problem(400, "invalid-query");
    }
    assert_eq!(
        app.get(&format!("{}?after={bogus}", paths::ADMIN_VERIFY))
            .await
            .status,
        200
    );
}
