//! Any body posted to any POST route is answered 2xx or 4xx, never 5xx, and
//! the service stays up: random bytes, random JSON, and valid records and
//! batches with bytes flipped, inserted or cut. The POST routes come from
//! `api_routes()`, so a new one is covered without editing this file.

use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use remaudit_server::api_routes;
use remaudit_store::Store;
use reqwest::Method;
use serde_json::Value;

use crate::helpers::{TestApp, go_record, spawn_app};

/// Cases per route and backend; `PROPTEST_CASES` raises it for a longer run by hand.
const CASES: u32 = 96;

fn post_paths() -> Vec<&'static str> {
    let paths: Vec<_> = api_routes()
        .into_iter()
        .filter(|r| r.method == Method::POST)
        .map(|r| r.path)
        .collect();
    assert!(!paths.is_empty(), "the route table has POST routes");
    paths
}

/// A valid record's JSON text, to be damaged.
fn valid_record(i: u32) -> Vec<u8> {
    let start = (chrono::Utc::now() - chrono::Duration::minutes(10)).to_rfc3339();
    serde_json::to_vec(&go_record(
        &format!("rr-fuzz-{i}"),
        "fp-fuzz",
        "processing",
        &start,
    ))
    .expect("json")
}

fn valid_batch(i: u32) -> Vec<u8> {
    let records: Vec<Value> = (0..3)
        .map(|k| serde_json::from_slice(&valid_record(i * 10 + k)).expect("json"))
        .collect();
    serde_json::to_vec(&records).expect("json")
}

/// Arbitrary JSON, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("alert_fingerprint".to_owned()),
                    Just("remediation_name".to_owned()),
                    Just("overall_phase".to_owned()),
                    Just("start_time".to_owned()),
                    Just("service_crd_statuses".to_owned()),
                    "[a-z_]{1,12}",
                ],
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// How a valid body is damaged.
#[derive(Debug, Clone)]
enum Damage {
    Flip { at: usize, byte: u8 },
    Insert { at: usize, bytes: Vec<u8> },
    Cut { at: usize },
}

fn damage(mut body: Vec<u8>, damages: &[Damage]) -> Vec<u8> {
    for d in damages {
        let len = body.len().max(1);
        match d {
            Damage::Flip { at, byte } => {
                if let Some(b) = body.get_mut(at % len) {
                    *b = *byte;
                }
            }
            Damage::Insert { at, bytes } => {
                let at = (at % len).min(body.len());
                body.splice(at..at, bytes.iter().copied());
            }
            Damage::Cut { at } => body.truncate(at % len),
        }
    }
    body
}

fn damages() -> impl Strategy<Value = Vec<Damage>> {
    prop::collection::vec(
        prop_oneof![
            (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Damage::Flip { at, byte }),
            (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
                .prop_map(|(at, bytes)| Damage::Insert { at, bytes }),
            any::<usize>().prop_map(|at| Damage::Cut { at }),
        ],
        1..4,
    )
}

/// A body: random bytes, random JSON (alone or in an array), or a valid
/// record or batch with damage.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2048),
        json_value().prop_map(|v| serde_json::to_vec(&v).expect("json")),
        prop::collection::vec(json_value(), 0..6)
            .prop_map(|v| serde_json::to_vec(&v).expect("json")),
        (0..1_000_000_u32, damages()).prop_map(|(i, d)| damage(valid_record(i), &d)),
        (0..1_000_000_u32, damages()).prop_map(|(i, d)| damage(valid_batch(i), &d)),
    ]
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn run(rt: &tokio::runtime::Runtime, store: Arc<dyn Store>) {
    let app: TestApp = rt.block_on(spawn_app(store));
    for path in post_paths() {
        let mut runner = TestRunner::new(Config {
            cases: std::env::var("PROPTEST_CASES")
                .ok()
                .and_then(|c| c.parse().ok())
                .unwrap_or(CASES),
            failure_persistence: None,
            ..Config::default()
        });
        let result = runner.run(&body(), |body| {
            let answer = rt.block_on(app.post_raw(path, Some("application/json"), body.clone()));
            prop_assert!(
                (200..500).contains(&answer.status),
                "POST {path} answered {} to {:?}: {}",
                answer.status,
                String::from_utf8_lossy(&body),
                answer.body
            );
            Ok(())
        });
        if let Err(e) = result {
            panic!("{e}");
        }
    }
    // Still serving, and still storing: nothing above broke it.
    let after = rt.block_on(app.post_raw(
        post_paths()[0],
        Some("application/json"),
        valid_record(u32::MAX),
    ));
    assert!(
        (200..300).contains(&after.status),
        "a valid record after the run answered {}: {}",
        after.status,
        after.body
    );
}

#[test]
fn postgres_any_body_on_any_post_route_is_2xx_or_4xx() {
    let rt = runtime();
    let db = rt.block_on(remaudit_testkit::PgDb::create());
    let store = rt.block_on(db.store());
    run(&rt, store);
}

#[test]
fn sqlite_any_body_on_any_post_route_is_2xx_or_4xx() {
    let rt = runtime();
    let db = remaudit_testkit::SqliteDb::create();
    let store = rt.block_on(db.store());
    run(&rt, store);
}
