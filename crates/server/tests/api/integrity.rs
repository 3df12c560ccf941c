//! What the store holds decides what a record gets: a reused key with other
//! content is a conflict, a remediation has a bounded number of events and a
//! paged timeline, fields the server does not know are not stored, and an
//! archived remediation does not come back.

use std::sync::Arc;

use chrono::{Duration, Utc};
use remaudit_server::ServerSettings;
use remaudit_store::Store;
use serde_json::{Value, json};

use crate::helpers::{TestApp, go_record, spawn_app_with};

crate::both_stores!(
    a_reused_key_with_other_content_is_a_conflict,
    a_record_spelt_another_way_is_a_duplicate,
    unknown_fields_are_not_stored,
    the_timeline_is_paged,
    events_past_the_cap_are_refused,
    an_archived_remediation_does_not_come_back,
);

const SINGLE: &str = "/api/v1/audit/remediation-orchestration";

fn ago(minutes: i64) -> String {
    (Utc::now() - Duration::minutes(minutes)).to_rfc3339()
}

fn statuses(answer: &Value) -> Vec<String> {
    answer["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["status"].as_str().expect("status").to_owned())
        .collect()
}

async fn only_id(app: &TestApp) -> i64 {
    let items = app.list_all().await;
    assert_eq!(items.len(), 1, "{items:?}");
    items[0]["id"].as_i64().expect("id")
}

pub async fn a_reused_key_with_other_content_is_a_conflict(store: Arc<dyn Store>) {
    let app = spawn_app_with(store, ServerSettings::default()).await;
    // No event_time: the server's default must not make the replay differ.
    let first = go_record("rr-conflict", "fp", "failed", &ago(10));
    let answer = app.post_record(&first).await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert_eq!(answer.body["status"], "created");
    let event_id = answer.body["event_id"].as_str().expect("id").to_owned();
    let replay = app.post_record(&first).await;
    assert_eq!(
        (replay.status, replay.body["status"].as_str()),
        (201, Some("duplicate"))
    );

    let mut other = first.clone();
    other["failure_reason"] = json!("a different story");
    other["event_id"] = json!(event_id);
    let conflict = app.post_record(&other).await;
    assert_eq!(
        conflict.assert_problem(409, "conflict"),
        [("event_id".to_owned(), "conflict".to_owned())]
    );

    let batch = app.post_batch(&[other.clone(), first.clone(), other]).await;
    assert_eq!(batch.status, 200, "{}", batch.body);
    assert_eq!(statuses(&batch.body), ["conflict", "duplicate", "conflict"]);
    assert_eq!(batch.body["conflicts"], 2);
    assert_eq!(batch.body["duplicates"], 1);
    assert_eq!(batch.body["items"][0]["errors"][0]["field"], "event_id");

    let id = only_id(&app).await;
    let timeline = app.get(&format!("{SINGLE}/{id}")).await;
    let events = timeline.body["timeline"].as_array().expect("timeline");
    assert_eq!(events.len(), 1);
    assert!(events[0]["record"].get("failure_reason").is_none());

    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("remaudit_audit_records_total{outcome=\"conflict\"}"),
        "{metrics}"
    );
}

/// A replay that spells the same record differently (the processing alias,
/// the default namespace named, an empty optional string, the derived
/// `event_id` given, `1.0` for `1` in the snapshot) is a duplicate, not a conflict.
pub async fn a_record_spelt_another_way_is_a_duplicate(store: Arc<dyn Store>) {
    let app = spawn_app_with(store, ServerSettings::default()).await;
    let mut first = go_record("rr-spelling", "fp", "failed", &ago(10));
    first["remediation_processing_name"] = json!("rp");
    first["service_crd_statuses"] = json!({"aiAnalysis": {"phase": "failed", "startTime": ago(9), "success": false, "attempts": 1}});
    let answer = app.post_record(&first).await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    let event_id = answer.body["event_id"].clone();

    let variant = |patch: Value| {
        let mut record = first.clone();
        for (k, v) in patch.as_object().expect("object") {
            record[k] = v.clone();
        }
        record
    };
    let mut alias = variant(json!({"alert_processing_name": "rp"}));
    alias
        .as_object_mut()
        .expect("object")
        .remove("remediation_processing_name");
    let mut float = first.clone();
    float["service_crd_statuses"]["aiAnalysis"]["attempts"] = json!(1.0);
    let replays = [
        alias,
        variant(json!({"namespace": "default"})),
        variant(json!({"namespace": ""})),
        variant(json!({"failure_reason": "", "timeout_phase": ""})),
        variant(json!({"event_id": event_id})),
        float,
    ];
    let single = app.post_record(&replays[0]).await;
    assert_eq!(
        (single.status, single.body["status"].as_str()),
        (201, Some("duplicate")),
        "{}",
        single.body
    );
    let batch = app.post_batch(&replays).await;
    assert_eq!(batch.status, 200, "{}", batch.body);
    assert_eq!(statuses(&batch.body), ["duplicate"; 6], "{}", batch.body);

    let other = variant(json!({"failure_reason": "another story", "event_id": event_id}));
    let conflict = app.post_record(&other).await;
    conflict.assert_problem(409, "conflict");
}

pub async fn unknown_fields_are_not_stored(store: Arc<dyn Store>) {
    let app = spawn_app_with(store, ServerSettings::default()).await;
    let mut record = go_record("rr-junk", "fp", "pending", &ago(5));
    record["junk"] = json!("j".repeat(3_900_000));
    record["added_by_a_newer_orchestrator"] = json!({"a": 1});
    let answer = app.post_record(&record).await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    let id = only_id(&app).await;
    let timeline = app.get(&format!("{SINGLE}/{id}")).await;
    let stored = &timeline.body["timeline"][0]["record"];
    assert!(stored.get("junk").is_none() && stored.get("added_by_a_newer_orchestrator").is_none());
    assert_eq!(stored["remediation_name"], "rr-junk");
    assert!(timeline.body.to_string().len() < 4096, "{}", timeline.body);
}

pub async fn the_timeline_is_paged(store: Arc<dyn Store>) {
    let app = spawn_app_with(store, ServerSettings::default()).await;
    let start = ago(60);
    let records: Vec<Value> = (0..12)
        .rev()
        .map(|m| {
            let mut r = go_record("rr-pages", "fp", "processing", &start);
            r["event_time"] = json!(ago(m));
            r
        })
        .collect();
    assert_eq!(app.post_batch(&records).await.body["created"], 12);
    let id = only_id(&app).await;

    let whole = app.get(&format!("{SINGLE}/{id}")).await;
    assert!(whole.body.get("next_cursor").is_none(), "{}", whole.body);
    let all = whole.body["timeline"].as_array().expect("timeline").clone();
    assert_eq!(all.len(), 12);

    let mut paged = Vec::new();
    let mut sizes = Vec::new();
    let mut path = format!("{SINGLE}/{id}?limit=5");
    loop {
        let page = app.get(&path).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let events = page.body["timeline"].as_array().expect("timeline");
        sizes.push(events.len());
        paged.extend(events.iter().cloned());
        match page.body["next_cursor"].as_str() {
            Some(cursor) => path = format!("{SINGLE}/{id}?limit=5&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(sizes, [5, 5, 2]);
    assert_eq!(paged, all, "every event once, oldest first");

    for bad in ["limit=0", "limit=1001", "cursor=nonsense", "colour=red"] {
        let answer = app.get(&format!("{SINGLE}/{id}?{bad}")).await;
        answer.assert_problem(400, "invalid-query");
    }
}

pub async fn events_past_the_cap_are_refused(store: Arc<dyn Store>) {
    let settings = ServerSettings {
        max_events_per_remediation: 3,
        ..ServerSettings::default()
    };
    let app = spawn_app_with(store, settings).await;
    let start = ago(30);
    let records: Vec<Value> = (0..5)
        .map(|m| {
            let mut r = go_record("rr-cap", "fp", "processing", &start);
            r["event_time"] = json!(ago(20 - m));
            r
        })
        .collect();
    let at = |m: usize| records[m].clone();
    let batch = app.post_batch(&[at(0), at(1), at(2), at(3)]).await;
    assert_eq!(batch.status, 200);
    assert_eq!(
        statuses(&batch.body),
        ["created", "created", "created", "rejected"]
    );
    assert_eq!(batch.body["items"][3]["errors"][0]["rule"], "max_events");
    let single = app.post_record(&at(4)).await;
    assert_eq!(
        single.assert_problem(422, "invalid-record"),
        [("remediation_name".to_owned(), "max_events".to_owned())]
    );
    // A replay of a stored event is still a duplicate, not a refusal.
    assert_eq!(app.post_record(&at(0)).await.body["status"], "duplicate");
}

pub async fn an_archived_remediation_does_not_come_back(store: Arc<dyn Store>) {
    // A remediation that finished 100 days ago, stored before retention ran.
    let start = (Utc::now() - Duration::days(100)).to_rfc3339();
    let done = (Utc::now() - Duration::days(100) + Duration::minutes(5)).to_rfc3339();
    let mut processing = go_record("rr-archived", "fp", "processing", &start);
    processing["event_time"] = json!(start);
    let mut completed = go_record("rr-archived", "fp", "completed", &start);
    completed["event_time"] = json!(done);
    completed["completion_time"] = json!(done);
    let records: Vec<_> = [&processing, &completed]
        .into_iter()
        .map(|v| remaudit_testkit::record(v.clone()))
        .collect();
    store.insert(&records).await.expect("insert");

    let dir = tempfile_dir();
    let archive = remaudit_retention::Archive::open(&format!("file://{}", dir.path().display()))
        .expect("archive");
    let report = remaudit_retention::run_once(
        &*store,
        &archive,
        &remaudit_retention::Settings::default(),
        Utc::now(),
        false,
        &remaudit_retention::scheduled_actor(),
    )
    .await
    .expect("retention");
    assert_eq!(report.remediations(), 1, "{report:?}");

    let settings = ServerSettings {
        refuse_new_older_than: Some(chrono::TimeDelta::days(90)),
        ..ServerSettings::default()
    };
    let app = spawn_app_with(store, settings).await;
    assert!(app.list_all().await.is_empty());
    // The replayed `processing` record used to make a live row that never
    // expires and counts as in progress forever. Its event is archived with
    // the same content: a duplicate, and nothing comes back.
    let replay = app.post_record(&processing).await;
    assert_eq!(
        (replay.status, replay.body["status"].as_str()),
        (201, Some("duplicate")),
        "{}",
        replay.body
    );
    // Without event_time (the server would date it now) it is another event
    // of the archived remediation: refused.
    let mut undated = processing.clone();
    undated
        .as_object_mut()
        .expect("object")
        .remove("event_time");
    assert_eq!(
        app.post_record(&undated)
            .await
            .assert_problem(422, "invalid-record"),
        [("start_time".to_owned(), "archived".to_owned())]
    );
    let mut executing = processing.clone();
    executing["overall_phase"] = json!("executing");
    let batch = app
        .post_batch(&[processing.clone(), executing, completed])
        .await;
    assert_eq!(
        statuses(&batch.body),
        ["duplicate", "rejected", "duplicate"]
    );
    assert_eq!(batch.body["items"][1]["errors"][0]["rule"], "archived");
    assert!(app.list_all().await.is_empty(), "nothing came back");

    // A remediation never seen, older than the retention age, is refused too.
    let mut stranger = go_record("rr-never-seen", "fp", "processing", &start);
    stranger["event_time"] = json!(start);
    assert_eq!(
        app.post_record(&stranger)
            .await
            .assert_problem(422, "invalid-record"),
        [("start_time".to_owned(), "retention".to_owned())]
    );
    // Recent ones are not.
    assert_eq!(
        app.post_record(&go_record("rr-new", "fp", "pending", &ago(1)))
            .await
            .status,
        201
    );
}

fn tempfile_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temporary directory")
}
