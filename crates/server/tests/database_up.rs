//! `remaudit_database_up` follows the readiness check: 1 while the database
//! answers with a current schema, 0 when it does not, 1 again once it does.
//!
//! A test binary of its own: the gauge has no labels, so in the `api`
//! binary every other test's `/readyz` would set it too. Here one service
//! runs over SQLite, and the schema check fails while the migrations table
//! is renamed away behind the service's back.

use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use remaudit_api::paths;
use remaudit_server::telemetry::{DATABASE_UP, HTTP_DURATION, HTTP_DURATION_BUCKETS};
use remaudit_server::{AppState, ServerSettings};
use tokio_util::sync::CancellationToken;

fn gauge(metrics: &PrometheusHandle) -> Option<f64> {
    let prefix = format!("{DATABASE_UP} ");
    metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().parse().expect("a number"))
}

#[tokio::test]
async fn database_up_follows_readiness() {
    let metrics = remaudit_testkit::metrics_handle(&[(HTTP_DURATION, &HTTP_DURATION_BUCKETS)]);
    remaudit_server::telemetry::describe();
    let db = remaudit_testkit::SqliteDb::create();
    let store = db.store().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let readyz = format!(
        "http://{}{}",
        listener.local_addr().expect("address"),
        paths::READYZ
    );
    let shutdown = CancellationToken::new();
    let state = AppState::new(store, ServerSettings::default(), metrics.clone());
    let server = tokio::spawn(remaudit_server::serve(listener, state, shutdown.clone()));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let ready = || async {
        http.get(&readyz)
            .send()
            .await
            .expect("readyz")
            .status()
            .as_u16()
    };
    let behind_its_back = sqlx::SqlitePool::connect(&db.url()).await.expect("sqlite");

    assert_eq!(gauge(&metrics), None, "set by the first check, not before");
    assert_eq!(ready().await, 200);
    assert_eq!(gauge(&metrics), Some(1.0));

    sqlx::query("ALTER TABLE _sqlx_migrations RENAME TO moved_away")
        .execute(&behind_its_back)
        .await
        .expect("rename");
    assert_eq!(ready().await, 503);
    assert_eq!(gauge(&metrics), Some(0.0));

    sqlx::query("ALTER TABLE moved_away RENAME TO _sqlx_migrations")
        .execute(&behind_its_back)
        .await
        .expect("rename back");
    assert_eq!(ready().await, 200);
    assert_eq!(gauge(&metrics), Some(1.0));

    shutdown.cancel();
    server.await.expect("join").expect("serve");
}
