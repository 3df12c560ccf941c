//! Ingestion: the design's client, replays, batches and hostile input.

use remaudit_model::RemediationOrchestrationAudit;
use serde_json::{Value, json};

use crate::helpers::{TestApp, go_record};

crate::both_backends!(ingest:
    go_client_stores_and_replays,
    replayed_record_and_batch_are_stored_once,
    hostile_records_are_rejected_and_nothing_is_stored,
    oversized_and_malformed_bodies_are_rejected,
    batch_bounds_are_enforced,
    batch_keeps_valid_records_and_reports_invalid_ones,
    sql_metacharacters_in_every_field_are_stored_verbatim,
    shuffled_transitions_end_in_the_same_summary_and_terminal_is_final,
);

const SINGLE: &str = "/api/v1/audit/remediation-orchestration";
const BATCH: &str = "/api/v1/audit/remediation-orchestration/batch";

fn minutes_ago(m: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::minutes(m)).to_rfc3339()
}

pub async fn go_client_stores_and_replays(app: &TestApp) {
    let client = remaudit_client::AuditStorageClient::new(&app.url("")).expect("client");
    let start = minutes_ago(10);
    let mut audit: RemediationOrchestrationAudit =
        serde_json::from_value(go_record("rr-go", "test-alert-123", "completed", &start))
            .expect("record");
    audit.completion_time = Some(chrono::Utc::now());
    client
        .store_remediation_orchestration_audit(&audit)
        .await
        .expect("first store");
    client
        .store_remediation_orchestration_audit(&audit)
        .await
        .expect("replay answers 201 too");

    let items = app.list_all().await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["overall_phase"], "completed");
    assert_eq!(items[0]["alert_fingerprint"], "test-alert-123");
    let id = items[0]["id"].as_i64().expect("id");
    let timeline = app.get(&format!("{SINGLE}/{id}")).await;
    assert_eq!(
        timeline.body["timeline"]
            .as_array()
            .expect("timeline")
            .len(),
        1
    );
    // What the server answers decodes as the design's record again.
    let _: RemediationOrchestrationAudit =
        serde_json::from_value(timeline.body["remediation"].clone()).expect("Go-shaped answer");
}

pub async fn replayed_record_and_batch_are_stored_once(app: &TestApp) {
    use remaudit_api::audit::ItemStatus;

    let start = minutes_ago(5);
    let typed = |phase: &str, name: &str| -> RemediationOrchestrationAudit {
        serde_json::from_value(go_record(name, "fp", phase, &start)).expect("record")
    };
    let record = typed("processing", "rr-replay");
    let first = app.api.ingest(&record).await.expect("stored");
    assert_eq!(first.status, ItemStatus::Created);
    let second = app.api.ingest(&record).await.expect("replayed");
    assert_eq!(second.status, ItemStatus::Duplicate);
    assert_eq!(second.event_id, first.event_id);

    let batch: Vec<RemediationOrchestrationAudit> = ["pending", "processing", "analyzing"]
        .iter()
        .map(|p| typed(p, "rr-batch"))
        .collect();
    let once = app.api.ingest_batch(&batch).await.expect("batch");
    assert_eq!((once.created, once.duplicates), (3, 0));
    let again = app.api.ingest_batch(&batch).await.expect("batch again");
    assert_eq!((again.created, again.duplicates), (0, 3));

    let items = app.list_all().await;
    assert_eq!(items.len(), 2);
    for item in items {
        let id = item["id"].as_i64().expect("id");
        let timeline = app.api.timeline_all(id).await.expect("timeline");
        let expected = if item["remediation_name"] == "rr-batch" {
            3
        } else {
            1
        };
        assert_eq!(timeline.timeline.len(), expected);
    }
}

/// Patches a valid record.
fn with(patch: &Value) -> Value {
    let mut record = go_record("rr-bad", "fp-bad", "failed", &minutes_ago(30));
    for (k, v) in patch.as_object().expect("object") {
        if v.is_null() {
            record.as_object_mut().expect("object").remove(k);
        } else {
            record[k] = v.clone();
        }
    }
    record
}

pub async fn hostile_records_are_rejected_and_nothing_is_stored(app: &TestApp) {
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "wrong type",
            with(&json!({"start_time": 5})),
            "start_time",
            "type",
        ),
        (
            "string count",
            with(&json!({"duplicate_count": "1"})),
            "duplicate_count",
            "type",
        ),
        (
            "missing name",
            with(&json!({"remediation_name": null})),
            "remediation_name",
            "required",
        ),
        (
            "missing start",
            with(&json!({"start_time": null})),
            "start_time",
            "required",
        ),
        (
            "empty fingerprint",
            with(&json!({"alert_fingerprint": ""})),
            "alert_fingerprint",
            "required",
        ),
        (
            "65-char fingerprint",
            with(&json!({"alert_fingerprint": "f".repeat(65)})),
            "alert_fingerprint",
            "max_length",
        ),
        (
            "256-char name",
            with(&json!({"remediation_name": "n".repeat(256)})),
            "remediation_name",
            "max_length",
        ),
        (
            "51-char phase",
            with(&json!({"overall_phase": "p".repeat(51)})),
            "overall_phase",
            "max_length",
        ),
        (
            "upper-case phase",
            with(&json!({"overall_phase": "Failed"})),
            "overall_phase",
            "lower_case",
        ),
        (
            "bad timestamp",
            with(&json!({"start_time": "yesterday"})),
            "start_time",
            "type",
        ),
        (
            "year 1999",
            with(&json!({"start_time": "1999-06-01T00:00:00Z"})),
            "start_time",
            "time_range",
        ),
        (
            "future",
            with(
                &json!({"event_time": (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339()}),
            ),
            "event_time",
            "time_range",
        ),
        (
            "completion before start",
            with(&json!({"completion_time": minutes_ago(60)})),
            "completion_time",
            "not_before_start",
        ),
        (
            "negative duplicates",
            with(&json!({"duplicate_count": -1})),
            "duplicate_count",
            "minimum",
        ),
        (
            "control character",
            with(&json!({"remediation_name": "rr\u{7}"})),
            "remediation_name",
            "no_control_characters",
        ),
        (
            "huge reason",
            with(&json!({"failure_reason": "x".repeat(17 * 1024)})),
            "failure_reason",
            "max_size",
        ),
        (
            "statuses not an object",
            with(&json!({"service_crd_statuses": "ok"})),
            "service_crd_statuses",
            "type",
        ),
        (
            "bad event id",
            with(&json!({"event_id": "not-a-uuid"})),
            "event_id",
            "type",
        ),
        (
            "bad namespace",
            with(&json!({"namespace": "Not_A_Namespace"})),
            "namespace",
            "dns_label",
        ),
        ("not an object", json!([1, 2]), "", "type"),
    ];
    for (name, record, field, rule) in cases {
        let answer = app.post_record(&record).await;
        let errors = answer.assert_problem(422, "invalid-record");
        assert_eq!(
            errors,
            vec![(field.to_owned(), rule.to_owned())],
            "case {name}: {}",
            answer.body
        );
    }
    assert!(
        app.list_all().await.is_empty(),
        "nothing invalid was stored"
    );
}

pub async fn oversized_and_malformed_bodies_are_rejected(app: &TestApp) {
    let malformed = app
        .post_raw(
            SINGLE,
            Some("application/json"),
            br#"{"alert_fingerprint": "#.to_vec(),
        )
        .await;
    malformed.assert_problem(400, "malformed-json");

    let not_json = app
        .post_raw(SINGLE, Some("text/plain"), b"{}".to_vec())
        .await;
    not_json.assert_problem(415, "unsupported-media-type");
    let no_type = app.post_raw(SINGLE, None, b"{}".to_vec()).await;
    no_type.assert_problem(415, "unsupported-media-type");

    // A 10 MB body: a valid record padded with a huge string.
    let mut huge = with(&json!({}));
    huge["failure_reason"] = json!("x".repeat(10 * 1024 * 1024));
    let too_large = app.post_record(&huge).await;
    too_large.assert_problem(413, "payload-too-large");
    let too_large_batch = app.post_batch(&[huge]).await;
    too_large_batch.assert_problem(413, "payload-too-large");

    assert!(app.list_all().await.is_empty());
}

pub async fn batch_bounds_are_enforced(app: &TestApp) {
    app.post_batch(&[])
        .await
        .assert_problem(422, "invalid-record");
    let not_array = app.post(BATCH, &with(&json!({}))).await;
    assert_eq!(
        not_array.assert_problem(422, "invalid-record"),
        vec![(String::new(), "type".to_owned())]
    );

    let too_many: Vec<Value> = (0..1001)
        .map(|i| go_record(&format!("rr-{i}"), "fp", "pending", &minutes_ago(5)))
        .collect();
    app.post_batch(&too_many)
        .await
        .assert_problem(413, "payload-too-large");
    assert!(app.list_all().await.is_empty());

    let most = &too_many[..1000];
    let answer = app.post_batch(most).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body["created"], 1000);
    assert_eq!(app.list_all().await.len(), 1000);
}

pub async fn batch_keeps_valid_records_and_reports_invalid_ones(app: &TestApp) {
    let batch = vec![
        go_record("rr-a", "fp", "pending", &minutes_ago(5)),
        with(&json!({"alert_fingerprint": "f".repeat(65)})),
        go_record("rr-b", "fp", "processing", &minutes_ago(5)),
        json!("not a record"),
        go_record("rr-c", "fp", "completed", &minutes_ago(5)),
    ];
    let answer = app.post_batch(&batch).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["created"], 3);
    assert_eq!(answer.body["rejected"], 2);
    let items = answer.body["items"].as_array().expect("items");
    let statuses: Vec<_> = items
        .iter()
        .map(|i| i["status"].as_str().expect("status"))
        .collect();
    assert_eq!(
        statuses,
        ["created", "rejected", "created", "rejected", "created"]
    );
    assert_eq!(items[1]["errors"][0]["field"], "alert_fingerprint");
    assert_eq!(items[1]["errors"][0]["rule"], "max_length");
    assert_eq!(items[3]["errors"][0]["rule"], "type");
    assert!(items[1].get("event_id").is_none());

    assert_eq!(app.names().await, ["rr-a", "rr-b", "rr-c"]);
}

pub async fn sql_metacharacters_in_every_field_are_stored_verbatim(app: &TestApp) {
    let nasty = "a'b\"c;--%_\\ $1 ?2 /* */ DROP TABLE remediation_audit;";
    let record = with(&json!({
        "alert_fingerprint": "fp'%_\"--",
        "remediation_name": nasty,
        "overall_phase": "failed",
        "remediation_processing_name": nasty,
        "alert_processing_name": nasty,
        "ai_analysis_name": nasty,
        "workflow_execution_name": nasty,
        "kubernetes_execution_name": nasty,
        "failure_phase": "executing",
        "failure_reason": nasty,
        "timeout_phase": "executing",
        "service_crd_statuses": {"workflowExecution": {"phase": nasty, "startTime": minutes_ago(20), "success": false, "error": nasty}},
    }));
    let answer = app.post_record(&record).await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    let items = app.list_all().await;
    assert_eq!(items.len(), 1);
    let row = &items[0];
    for field in [
        "remediation_name",
        "remediation_processing_name",
        "ai_analysis_name",
        "workflow_execution_name",
        "kubernetes_execution_name",
        "failure_reason",
    ] {
        assert_eq!(row[field], nasty, "{field}");
    }
    assert_eq!(row["alert_fingerprint"], "fp'%_\"--");
    assert_eq!(row["service_crd_statuses"], record["service_crd_statuses"]);
    let query = format!(
        "/api/v1/audit/remediation-orchestration?alert_fingerprint={}",
        "fp%27%25_%22--"
    );
    assert_eq!(
        app.get(&query).await.body["items"]
            .as_array()
            .expect("items")
            .len(),
        1
    );
}

/// The transitions of one remediation, as the orchestrator sends them.
fn transitions(namespace: &str, start: chrono::DateTime<chrono::Utc>) -> Vec<Value> {
    let at = |m: i64| (start + chrono::Duration::minutes(m)).to_rfc3339();
    let mut records: Vec<Value> = ["pending", "processing", "analyzing", "executing", "failed"]
        .iter()
        .enumerate()
        .map(|(i, phase)| {
            let mut r = go_record("rr-order", "fp-order", phase, &start.to_rfc3339());
            r["namespace"] = json!(namespace);
            r["event_time"] = json!(at(5 + 5 * i64::try_from(i).expect("small")));
            if i >= 1 {
                r["remediation_processing_name"] = json!("rr-order-rp");
            }
            if i >= 2 {
                r["ai_analysis_name"] = json!("rr-order-ai");
            }
            r
        })
        .collect();
    let failed = records.last_mut().expect("terminal");
    failed["completion_time"] = json!(at(25));
    failed["failure_phase"] = json!("executing");
    failed["failure_reason"] = json!("rollout stuck");
    records
}

pub async fn shuffled_transitions_end_in_the_same_summary_and_terminal_is_final(app: &TestApp) {
    let start = chrono::Utc::now() - chrono::Duration::minutes(55);
    for r in transitions("in-order", start) {
        assert_eq!(app.post_record(&r).await.status, 201);
    }
    // Terminal first, then the rest newest first, one by one.
    let mut shuffled = transitions("shuffled", start);
    shuffled.reverse();
    for r in &shuffled {
        assert_eq!(app.post_record(r).await.status, 201);
    }
    // A straggler after the end changes nothing but the timeline.
    let mut late = go_record("rr-order", "fp-order", "executing", &start.to_rfc3339());
    late["namespace"] = json!("shuffled");
    late["event_time"] = json!(minutes_ago(1));
    assert_eq!(app.post_record(&late).await.status, 201);

    let items = app.list_all().await;
    assert_eq!(items.len(), 2);
    let summary = |ns: &str| {
        let mut row = items
            .iter()
            .find(|i| i["namespace"] == ns)
            .expect("row")
            .clone();
        for server_owned in ["id", "namespace", "event_id", "created_at", "updated_at"] {
            row.as_object_mut().expect("object").remove(server_owned);
        }
        row
    };
    let in_order = summary("in-order");
    assert_eq!(in_order["overall_phase"], "failed");
    assert_eq!(in_order["failure_reason"], "rollout stuck");
    assert_eq!(in_order["remediation_processing_name"], "rr-order-rp");
    assert_eq!(summary("shuffled"), in_order);
}

/// Single POSTs that arrive while the writers are busy share transactions.
mod shared_commits {
    use std::time::Duration;

    use serde_json::json;

    use super::{SINGLE, minutes_ago};
    use crate::helpers::{go_record, metrics, spawn_app};

    /// How many single POSTs wait for their commit, from this process's metrics.
    fn waiting() -> f64 {
        metrics()
            .render()
            .lines()
            .find_map(|l| l.strip_prefix("remaudit_single_posts_waiting "))
            .map_or(0.0, |v| v.trim().parse().expect("a number"))
    }

    /// Sixty POSTs at once while a table lock holds the writers: every record
    /// is taken into a blocked transaction or queued behind one; once the
    /// lock is released they commit in at most eight transactions (each of
    /// the four writers' blocked batch, then what queued meanwhile). Each
    /// caller still gets its own answer: a key reused with other content in
    /// a shared batch is a conflict, an identical replay a duplicate.
    #[tokio::test]
    async fn postgres_single_posts_queued_behind_busy_writers_share_commits_and_keep_their_own_answers()
     {
        let db = remaudit_testkit::PgDb::create().await;
        let app = spawn_app(db.store().await).await;
        let pool = db.pool().await;
        let start = minutes_ago(30);
        let mut records: Vec<_> = (0..56)
            .map(|i| go_record(&format!("rr-{i:02}"), "fp-shared", "pending", &start))
            .collect();
        let key = "4b1c6b9e-0d52-4a8e-9c49-3e0f5a1d2c77";
        let mut first = go_record("rr-key", "fp-shared", "failed", &start);
        first["event_id"] = json!(key);
        first["failure_reason"] = json!("one story");
        let mut other = first.clone();
        other["failure_reason"] = json!("another story");
        let replayed = go_record("rr-replayed", "fp-shared", "pending", &start);
        records.extend([first, other, replayed.clone(), replayed]);

        // Other tests of this process (under `cargo test`) count in the gauge too.
        let before = waiting();
        let mut lock = pool.begin().await.expect("tx");
        sqlx::query("LOCK TABLE remediation_audit_events IN EXCLUSIVE MODE")
            .execute(&mut *lock)
            .await
            .expect("lock");
        let posts: Vec<_> = records
            .iter()
            .map(|r| {
                let (app_url, http, body) = (app.url(SINGLE), app.http.clone(), r.clone());
                tokio::spawn(async move {
                    let answer = http.post(app_url).json(&body).send().await.expect("post");
                    let status = answer.status().as_u16();
                    let body: serde_json::Value = answer.json().await.expect("json");
                    (status, body)
                })
            })
            .collect();
        // Every record has reached the writers' queue, and they are blocked.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let blocked: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&pool)
            .await
            .expect("activity");
            if blocked >= 1 && (waiting() - before - 60.0).abs() < f64::EPSILON {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never saw all 60 records waiting behind a blocked writer: {blocked} blocked, {} waiting",
                waiting()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        lock.rollback().await.expect("release");

        let mut answers = Vec::new();
        for post in posts {
            answers.push(post.await.expect("task"));
        }
        for (status, body) in &answers[..56] {
            assert_eq!(
                (*status, body["status"].as_str()),
                (201, Some("created")),
                "{body}"
            );
        }
        let mut pair: Vec<u16> = answers[56..58].iter().map(|(s, _)| *s).collect();
        pair.sort_unstable();
        assert_eq!(
            pair,
            [201, 409],
            "a reused key with other content: {answers:?}"
        );
        // The caller answered 201 is the one whose story was stored.
        let stored: String = sqlx::query_scalar(
            "SELECT record->>'failure_reason' FROM remediation_audit_events WHERE event_id = $1::uuid",
        )
        .bind(key)
        .fetch_one(&pool)
        .await
        .expect("the pair's event");
        let winner = if answers[56].0 == 201 { 56 } else { 57 };
        assert_eq!(
            stored,
            records[winner]["failure_reason"].as_str().expect("reason")
        );
        let mut replay: Vec<_> = answers[58..]
            .iter()
            .map(|(s, b)| (*s, b["status"].as_str().unwrap_or_default().to_owned()))
            .collect();
        replay.sort();
        assert_eq!(
            replay,
            [(201, "created".to_owned()), (201, "duplicate".to_owned())]
        );

        let (events, transactions): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(DISTINCT xmin::text) FROM remediation_audit_events",
        )
        .fetch_one(&pool)
        .await
        .expect("events");
        assert_eq!(events, 58, "56 records, one of the pair, one of the replay");
        assert!(
            transactions <= 8,
            "58 events in {transactions} transactions: the queued records did not share commits"
        );
        assert!(
            (waiting() - before).abs() < f64::EPSILON,
            "nothing is left waiting"
        );
    }
}
