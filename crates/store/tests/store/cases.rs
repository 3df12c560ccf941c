//! The cases of the conformance suite, written once against `dyn Store`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use remaudit_model::{NewAudit, StoredAudit};
use remaudit_store::{InsertOutcome, ListQuery, Store};
use remaudit_testkit::{at, record};
use serde_json::json;

use InsertOutcome::{Created, Duplicate};

/// The records of one remediation's life, in the order they happen.
fn lifecycle(
    ns: &str,
    name: &str,
    fingerprint: &str,
    start: DateTime<Utc>,
    end: &str,
) -> Vec<NewAudit> {
    let t = |m: i64| (start + chrono::Duration::minutes(m)).to_rfc3339();
    let base = json!({
        "namespace": ns,
        "remediation_name": name,
        "alert_fingerprint": fingerprint,
        "start_time": start.to_rfc3339(),
    });
    let with = |extra: serde_json::Value| {
        let mut v = base.clone();
        for (k, val) in extra.as_object().expect("object") {
            v[k] = val.clone();
        }
        record(v)
    };
    let mut records = vec![
        with(json!({"overall_phase": "pending", "event_time": t(0)})),
        with(json!({"overall_phase": "processing", "event_time": t(1),
                    "remediation_processing_name": format!("{name}-rp")})),
        with(json!({"overall_phase": "analyzing", "event_time": t(2),
                    "remediation_processing_name": format!("{name}-rp"),
                    "ai_analysis_name": format!("{name}-ai"),
                    "service_crd_statuses": {"remediationProcessing": {"phase": "completed", "startTime": t(1), "success": true}}})),
    ];
    records.push(match end {
        "completed" => with(json!({"overall_phase": "completed", "event_time": t(5), "completion_time": t(5),
                                   "remediation_processing_name": format!("{name}-rp"),
                                   "ai_analysis_name": format!("{name}-ai"),
                                   "workflow_execution_name": format!("{name}-we")})),
        "failed" => with(json!({"overall_phase": "failed", "event_time": t(4), "completion_time": t(4),
                                "failure_phase": "analyzing", "failure_reason": "model unavailable"})),
        _ => with(json!({"overall_phase": "timeout", "event_time": t(9), "completion_time": t(9),
                         "timeout_phase": "analyzing", "timeout_time": t(9)})),
    });
    records
}

async fn all_rows(store: &dyn Store) -> Vec<StoredAudit> {
    store
        .list(&ListQuery {
            limit: 1000,
            ..ListQuery::default()
        })
        .await
        .expect("list")
        .items
}

/// The summary fields that depend on which record won, without row ids and clocks.
fn essence(row: &StoredAudit) -> serde_json::Value {
    json!({
        "namespace": row.namespace, "name": row.remediation_name, "phase": row.overall_phase,
        "fingerprint": row.alert_fingerprint, "start": row.start_time, "completion": row.completion_time,
        "rp": row.remediation_processing_name, "ai": row.ai_analysis_name, "we": row.workflow_execution_name,
        "statuses": row.service_crd_statuses, "failure_phase": row.failure_phase,
        "failure_reason": row.failure_reason, "timeout_phase": row.timeout_phase,
        "event_id": row.event_id, "event_time": row.event_time, "duplicates": row.duplicate_count,
    })
}

pub async fn stores_a_remediation_and_its_timeline(store: Arc<dyn Store>) {
    let records = lifecycle("prod", "rr-1", "fp-1", at(0), "completed");
    let outcomes = store.insert(&records).await.expect("insert");
    assert_eq!(outcomes, vec![Created; 4]);

    let rows = all_rows(&*store).await;
    assert_eq!(rows.len(), 1, "one summary row per remediation");
    let row = &rows[0];
    let last = &records[3];
    assert_eq!(row.overall_phase, "completed");
    assert_eq!(row.completion_time, last.completion_time);
    assert_eq!(row.workflow_execution_name.as_deref(), Some("rr-1-we"));
    assert_eq!(row.event_id, last.event_id);
    // Fields the terminal record omitted are kept from earlier records.
    assert_eq!(row.service_crd_statuses, records[2].service_crd_statuses);

    let timeline = store
        .timeline(row.id)
        .await
        .expect("timeline")
        .expect("exists");
    assert_eq!(timeline.remediation, *row);
    let phases: Vec<_> = timeline
        .events
        .iter()
        .map(|e| e.overall_phase.as_str())
        .collect();
    assert_eq!(phases, ["pending", "processing", "analyzing", "completed"]);
    assert_eq!(
        timeline.events[1].record, records[1].raw,
        "the record is kept as received"
    );
    assert!(
        store
            .timeline(row.id + 1000)
            .await
            .expect("timeline")
            .is_none()
    );
}

pub async fn replays_are_stored_once(store: Arc<dyn Store>) {
    let records = lifecycle("default", "rr-replay", "fp", at(0), "failed");
    assert_eq!(
        store.insert(&records[..2]).await.expect("insert"),
        vec![Created, Created]
    );
    // The whole batch again: the first two are replays.
    assert_eq!(
        store.insert(&records).await.expect("retry"),
        vec![Duplicate, Duplicate, Created, Created]
    );
    // The same record twice in one batch.
    let again = lifecycle("default", "rr-replay-2", "fp", at(1), "failed");
    let batch = vec![again[0].clone(), again[0].clone(), again[1].clone()];
    assert_eq!(
        store.insert(&batch).await.expect("insert"),
        vec![Created, Duplicate, Created]
    );

    let rows = all_rows(&*store).await;
    assert_eq!(rows.len(), 2);
    for row in rows {
        let events = store
            .timeline(row.id)
            .await
            .expect("timeline")
            .expect("exists")
            .events;
        let mut ids: Vec<_> = events.iter().map(|e| e.event_id).collect();
        ids.dedup();
        assert_eq!(ids.len(), events.len(), "no event stored twice");
    }
}

pub async fn shuffled_transitions_end_in_the_in_order_summary(store: Arc<dyn Store>) {
    let ends = ["completed", "failed", "timeout"];
    let mut in_order = Vec::new();
    let mut shuffled = Vec::new();
    for i in 0..9 {
        let end = ends[i % 3];
        in_order.extend(lifecycle(
            "ordered",
            &format!("rr-{i}"),
            "fp",
            at(i64::try_from(i).expect("small")),
            end,
        ));
        shuffled.extend(lifecycle(
            "shuffled",
            &format!("rr-{i}"),
            "fp",
            at(i64::try_from(i).expect("small")),
            end,
        ));
    }
    for r in &in_order {
        store.insert(std::slice::from_ref(r)).await.expect("insert");
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    shuffled.shuffle(&mut rng);
    // Half one at a time, half as batches: both paths must agree.
    let (singles, batched) = shuffled.split_at(shuffled.len() / 2);
    for r in singles {
        store.insert(std::slice::from_ref(r)).await.expect("insert");
    }
    for chunk in batched.chunks(5) {
        store.insert(chunk).await.expect("insert");
    }

    let rows = all_rows(&*store).await;
    let by_ns = |ns: &str| {
        let mut v: Vec<_> = rows
            .iter()
            .filter(|r| r.namespace == ns)
            .map(|r| {
                let mut e = essence(r);
                e["namespace"] = json!(null);
                e
            })
            .collect();
        v.sort_by_key(|e| e["name"].as_str().map(ToOwned::to_owned));
        v
    };
    let ordered = by_ns("ordered");
    assert_eq!(ordered.len(), 9);
    // Event ids include the namespace, so compare everything else.
    let strip = |mut v: Vec<serde_json::Value>| {
        for e in &mut v {
            e["event_id"] = json!(null);
        }
        v
    };
    assert_eq!(strip(by_ns("shuffled")), strip(ordered.clone()));
    for (i, e) in ordered.iter().enumerate() {
        assert_eq!(e["phase"], json!(ends[i % 3]));
    }
}

pub async fn terminal_phase_is_final(store: Arc<dyn Store>) {
    let records = lifecycle("default", "rr-final", "fp", at(0), "completed");
    store.insert(&records).await.expect("insert");
    let late = record(json!({
        "remediation_name": "rr-final", "alert_fingerprint": "fp", "start_time": at(0).to_rfc3339(),
        "overall_phase": "failed", "event_time": at(30).to_rfc3339(), "completion_time": at(30).to_rfc3339(),
        "failure_phase": "executing", "failure_reason": "late",
    }));
    let straggler = record(json!({
        "remediation_name": "rr-final", "alert_fingerprint": "fp", "start_time": at(0).to_rfc3339(),
        "overall_phase": "executing", "event_time": at(31).to_rfc3339(),
    }));
    assert_eq!(
        store.insert(&[late, straggler]).await.expect("insert"),
        vec![Created, Created]
    );
    let rows = all_rows(&*store).await;
    assert_eq!(rows[0].overall_phase, "completed");
    assert_eq!(rows[0].failure_reason, None);
    assert_eq!(rows[0].event_id, records[3].event_id);
    let events = store
        .timeline(rows[0].id)
        .await
        .expect("timeline")
        .expect("exists")
        .events;
    assert_eq!(events.len(), 6, "late records still join the timeline");
}

pub async fn duplicate_counts_only_grow(store: Arc<dyn Store>) {
    let r = |phase: &str, minute: i64, count: i64| {
        record(json!({
            "remediation_name": "rr-dup", "alert_fingerprint": "fp", "start_time": at(0).to_rfc3339(),
            "overall_phase": phase, "event_time": at(minute).to_rfc3339(),
            "duplicate_count": count, "last_duplicate_time": at(minute).to_rfc3339(),
        }))
    };
    store
        .insert(&[r("processing", 1, 3)])
        .await
        .expect("insert");
    store.insert(&[r("completed", 5, 4)]).await.expect("insert");
    // An older record with a smaller count arrives last.
    store.insert(&[r("pending", 0, 1)]).await.expect("insert");
    // A duplicate seen after completion still counts.
    store
        .insert(&[record(json!({
            "remediation_name": "rr-dup", "alert_fingerprint": "fp", "start_time": at(0).to_rfc3339(),
            "overall_phase": "completed", "event_time": at(9).to_rfc3339(), "event_id": "5b0c9a2e-2a6e-4d36-8d4a-0b1f3f1d2e11",
            "duplicate_count": 6, "last_duplicate_time": at(9).to_rfc3339(),
        }))])
        .await
        .expect("insert");
    let rows = all_rows(&*store).await;
    assert_eq!(rows[0].duplicate_count, 6);
    assert_eq!(rows[0].last_duplicate_time, Some(at(9)));
    assert_eq!(rows[0].overall_phase, "completed");
    assert_eq!(
        rows[0].event_time,
        at(5),
        "the first terminal record stays the state"
    );
}

pub async fn unknown_phase_is_kept_as_in_progress(store: Arc<dyn Store>) {
    let r = |phase: &str, minute: i64| {
        record(json!({
            "remediation_name": "rr-new", "alert_fingerprint": "fp", "start_time": at(0).to_rfc3339(),
            "overall_phase": phase, "event_time": at(minute).to_rfc3339(),
        }))
    };
    store
        .insert(&[r("executing", 1), r("verifying", 2)])
        .await
        .expect("insert");
    assert_eq!(all_rows(&*store).await[0].overall_phase, "verifying");
    store.insert(&[r("completed", 3)]).await.expect("insert");
    assert_eq!(all_rows(&*store).await[0].overall_phase, "completed");
}

/// Twenty remediations over namespaces, fingerprints and outcomes.
async fn fleet(store: &dyn Store) -> Vec<NewAudit> {
    let mut last = Vec::new();
    for i in 0..20_i64 {
        let ns = ["prod", "staging"][usize::try_from(i % 2).expect("small")];
        let fp = format!("fp-{}", i % 3);
        let end =
            ["completed", "failed", "timeout", "completed"][usize::try_from(i % 4).expect("small")];
        let records = lifecycle(ns, &format!("rr-{i:02}"), &fp, at(i * 10), end);
        store.insert(&records).await.expect("insert");
        last.push(records.last().cloned().expect("non-empty"));
    }
    last
}

pub async fn filters_select_the_matching_rows(store: Arc<dyn Store>) {
    let finals = fleet(&*store).await;
    let query = |q: ListQuery| {
        let store = store.clone();
        async move {
            let mut names: Vec<String> = store
                .list(&ListQuery { limit: 100, ..q })
                .await
                .expect("list")
                .items
                .into_iter()
                .map(|r| r.remediation_name)
                .collect();
            names.sort();
            names
        }
    };
    let expect = |pred: &dyn Fn(&NewAudit) -> bool| {
        let mut names: Vec<String> = finals
            .iter()
            .filter(|r| pred(r))
            .map(|r| r.remediation_name.clone())
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        query(ListQuery {
            alert_fingerprint: Some("fp-1".into()),
            ..ListQuery::default()
        })
        .await,
        expect(&|r| r.alert_fingerprint == "fp-1")
    );
    assert_eq!(
        query(ListQuery {
            overall_phase: Some("failed".into()),
            ..ListQuery::default()
        })
        .await,
        expect(&|r| r.overall_phase == "failed")
    );
    assert_eq!(
        query(ListQuery {
            namespace: Some("staging".into()),
            ..ListQuery::default()
        })
        .await,
        expect(&|r| r.namespace == "staging")
    );
    assert_eq!(
        query(ListQuery {
            remediation_name: Some("rr-07".into()),
            ..ListQuery::default()
        })
        .await,
        vec!["rr-07".to_owned()]
    );
    let (since, until) = (at(50), at(120));
    assert_eq!(
        query(ListQuery {
            since: Some(since),
            until: Some(until),
            ..ListQuery::default()
        })
        .await,
        expect(&|r| r.start_time >= since && r.start_time < until)
    );
    assert_eq!(
        query(ListQuery {
            namespace: Some("prod".into()),
            overall_phase: Some("completed".into()),
            ..ListQuery::default()
        })
        .await,
        expect(&|r| r.namespace == "prod" && r.overall_phase == "completed")
    );
}

pub async fn keyset_pagination_visits_every_row_once(store: Arc<dyn Store>) {
    fleet(&*store).await;
    // Two remediations sharing a start time: the id breaks the tie.
    store
        .insert(&lifecycle("prod", "rr-twin", "fp-0", at(30), "completed"))
        .await
        .expect("insert");
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list(&ListQuery {
                limit: 6,
                after,
                ..ListQuery::default()
            })
            .await
            .expect("list");
        assert!(page.items.len() <= 6);
        seen.extend(page.items.iter().map(|r| (r.start_time, r.id)));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let mut expected = seen.clone();
    expected.sort_by(|a, b| b.cmp(a));
    expected.dedup();
    assert_eq!(seen, expected, "newest first, no row twice");
    assert_eq!(seen.len(), 21);
}

pub async fn sql_metacharacters_are_stored_verbatim(store: Arc<dyn Store>) {
    let nasty = "x'; DROP TABLE remediation_audit; -- \" % _ \\ $1 ?1 `";
    let r = record(json!({
        "remediation_name": nasty, "alert_fingerprint": "fp'\"%_\\", "start_time": at(0).to_rfc3339(),
        "overall_phase": "failed", "completion_time": at(1).to_rfc3339(),
        "remediation_processing_name": nasty, "ai_analysis_name": nasty,
        "workflow_execution_name": nasty, "kubernetes_execution_name": nasty,
        "failure_phase": "analyzing", "failure_reason": nasty,
        "service_crd_statuses": {"aiAnalysis": {"phase": nasty, "startTime": at(0).to_rfc3339(), "success": false, "error": nasty}},
    }));
    store
        .insert(std::slice::from_ref(&r))
        .await
        .expect("insert");
    let page = store
        .list(&ListQuery {
            alert_fingerprint: Some("fp'\"%_\\".into()),
            remediation_name: Some(nasty.into()),
            limit: 10,
            ..ListQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(page.items.len(), 1);
    let row = &page.items[0];
    for value in [
        &row.remediation_name,
        row.remediation_processing_name.as_ref().expect("set"),
        row.ai_analysis_name.as_ref().expect("set"),
        row.workflow_execution_name.as_ref().expect("set"),
        row.kubernetes_execution_name.as_ref().expect("set"),
        row.failure_reason.as_ref().expect("set"),
    ] {
        assert_eq!(value, nasty);
    }
    assert_eq!(row.service_crd_statuses, r.service_crd_statuses);
    let timeline = store
        .timeline(row.id)
        .await
        .expect("timeline")
        .expect("exists");
    assert_eq!(timeline.events[0].record, r.raw);
    // A wildcard must not match as a pattern.
    let none = store
        .list(&ListQuery {
            alert_fingerprint: Some("fp%".into()),
            limit: 10,
            ..ListQuery::default()
        })
        .await
        .expect("list");
    assert!(none.items.is_empty());
}

pub async fn fresh_store_is_ready(store: Arc<dyn Store>) {
    store.ready().await.expect("ready");
    let stats = store.pool_stats();
    assert!(stats.max >= 1 && stats.size <= stats.max, "{stats:?}");
}
