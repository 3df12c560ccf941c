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
    assert_eq!(row.service_crd_statuses, records[2].statuses());

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
        timeline.events[1].record,
        records[1].record(),
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
    assert_eq!(row.service_crd_statuses, r.statuses());
    let timeline = store
        .timeline(row.id)
        .await
        .expect("timeline")
        .expect("exists");
    assert_eq!(timeline.events[0].record, r.record());
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

/// One record of remediation `name` (started at `at(0)`), with `extra` fields.
fn one(name: &str, extra: &serde_json::Value) -> NewAudit {
    let mut v = json!({
        "namespace": "keys", "remediation_name": name, "alert_fingerprint": "fp",
        "start_time": at(0).to_rfc3339(), "overall_phase": "processing",
    });
    for (k, val) in extra.as_object().expect("object") {
        v[k] = val.clone();
    }
    record(v)
}

pub async fn same_key_with_other_content_is_a_conflict(store: Arc<dyn Store>) {
    use InsertOutcome::Conflict;
    // No event_time: the server's default differs on every delivery, and
    // must not make a replay a conflict.
    let first = one("rr-key", &json!({}));
    assert_eq!(
        store
            .insert(std::slice::from_ref(&first))
            .await
            .expect("insert"),
        [Created]
    );
    let replay = one("rr-key", &json!({}));
    assert_ne!(first.event_time, replay.event_time);
    assert_eq!(store.insert(&[replay]).await.expect("replay"), [Duplicate]);

    // The same key (given id, same start) with other content is refused.
    let id = first.event_id.to_string();
    let other = one(
        "rr-key",
        &json!({"event_id": id, "failure_reason": "rewritten"}),
    );
    assert_eq!(other.event_id, first.event_id);
    assert_eq!(store.insert(&[other]).await.expect("insert"), [Conflict]);
    // The same event id with another start time is another event (SQLite
    // used to key on event_id alone and drop it as a duplicate).
    let later = record(json!({
        "namespace": "keys", "remediation_name": "rr-key", "alert_fingerprint": "fp",
        "start_time": at(1).to_rfc3339(), "overall_phase": "processing", "event_id": id,
    }));
    assert_eq!(store.insert(&[later]).await.expect("insert"), [Created]);

    // Within one batch: identical repeats are duplicates, changed ones conflicts,
    // whether the first of the key is new or already stored.
    let a = one("rr-batch", &json!({"event_time": at(2).to_rfc3339()}));
    let a_changed = one(
        "rr-batch",
        &json!({"event_time": at(2).to_rfc3339(), "event_id": a.event_id.to_string(), "remediation_processing_name": "rp"}),
    );
    assert_eq!(
        store
            .insert(&[a.clone(), a.clone(), a_changed.clone()])
            .await
            .expect("insert"),
        [Created, Duplicate, Conflict]
    );
    assert_eq!(
        store
            .insert(&[a_changed.clone(), a.clone(), a_changed])
            .await
            .expect("insert"),
        [Conflict, Duplicate, Conflict]
    );

    let rows = all_rows(&*store).await;
    let key_row = rows
        .iter()
        .find(|r| r.remediation_name == "rr-key" && r.start_time == at(0))
        .expect("row");
    let events = store
        .timeline(key_row.id)
        .await
        .expect("timeline")
        .expect("exists")
        .events;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        events[0].record,
        first.record(),
        "the first content is kept"
    );
    let batch_row = rows
        .iter()
        .find(|r| r.remediation_name == "rr-batch")
        .expect("row");
    assert_eq!(batch_row.remediation_processing_name, None);
}

pub async fn unknown_fields_are_not_stored(store: Arc<dyn Store>) {
    let junk = "j".repeat(3_900_000);
    let r = one("rr-junk", &json!({"junk": junk, "newer_field": [1, 2, 3]}));
    assert_eq!(store.insert(&[r]).await.expect("insert"), [Created]);
    let row = all_rows(&*store).await.remove(0);
    let event = store
        .timeline(row.id)
        .await
        .expect("timeline")
        .expect("exists")
        .events
        .remove(0);
    let stored = event.record.as_object().expect("object");
    assert!(!stored.contains_key("junk") && !stored.contains_key("newer_field"));
    assert!(event.record.to_string().len() < 1024, "{}", event.record);
}

pub async fn events_past_the_cap_are_refused(store: Arc<dyn Store>) {
    use remaudit_store::{InsertRules, Refusal};
    let rules = InsertRules {
        max_events_per_remediation: 5,
        ..InsertRules::default()
    };
    let events = |name: &str, from: i64, n: i64| -> Vec<NewAudit> {
        (from..from + n)
            .map(|m| one(name, &json!({"event_time": at(m).to_rfc3339()})))
            .collect()
    };
    let capped = InsertOutcome::Refused(Refusal::MaxEvents);
    let first = events("rr-cap", 0, 7);
    assert_eq!(
        store.insert_with(&first, &rules).await.expect("insert"),
        [Created, Created, Created, Created, Created, capped, capped]
    );
    // Later batches: still refused; replays of stored events stay duplicates;
    // other remediations are not affected.
    let mut next = events("rr-cap", 10, 1);
    next.push(first[0].clone());
    next.extend(events("rr-other", 0, 1));
    assert_eq!(
        store.insert_with(&next, &rules).await.expect("insert"),
        [capped, Duplicate, Created]
    );
    let row = all_rows(&*store)
        .await
        .into_iter()
        .find(|r| r.remediation_name == "rr-cap")
        .expect("row");
    let timeline = store.timeline(row.id).await.expect("read").expect("exists");
    assert_eq!(timeline.events.len(), 5);
    assert_eq!(timeline.next, None);
}

pub async fn concurrent_batches_do_not_overshoot_the_cap(store: Arc<dyn Store>) {
    use remaudit_store::InsertRules;
    let rules = InsertRules {
        max_events_per_remediation: 25,
        ..InsertRules::default()
    };
    // Eight writers of ten events each race for a remediation that does not exist yet.
    let writers: Vec<_> = (0..8_i64)
        .map(|w| {
            let (store, rules) = (Arc::clone(&store), rules.clone());
            let batch: Vec<NewAudit> = (0..10)
                .map(|m| {
                    one(
                        "rr-race",
                        &json!({"event_time": at(w * 10 + m).to_rfc3339()}),
                    )
                })
                .collect();
            tokio::spawn(async move { store.insert_with(&batch, &rules).await })
        })
        .collect();
    let mut created = 0;
    for writer in writers {
        let outcomes = writer.await.expect("joined").expect("insert");
        created += outcomes.iter().filter(|o| **o == Created).count();
    }
    assert_eq!(created, 25);
    let row = all_rows(&*store).await.remove(0);
    let query = remaudit_store::TimelineQuery {
        after: None,
        limit: 1000,
    };
    let timeline = store
        .timeline_page(row.id, &query)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(timeline.events.len(), 25);
}

/// Reads a whole timeline page by page; returns the pages' sizes too.
async fn read_pages(
    store: &dyn Store,
    id: i64,
    limit: u32,
) -> (Vec<remaudit_model::EventRecord>, Vec<usize>) {
    let mut query = remaudit_store::TimelineQuery { after: None, limit };
    let (mut events, mut sizes) = (Vec::new(), Vec::new());
    loop {
        let page = store
            .timeline_page(id, &query)
            .await
            .expect("read")
            .expect("exists");
        sizes.push(page.events.len());
        events.extend(page.events);
        match page.next {
            Some(next) => query.after = Some(next),
            None => return (events, sizes),
        }
        assert!(sizes.len() < 1000, "paging does not end");
    }
}

pub async fn timeline_pages_visit_every_event_once_in_order(store: Arc<dyn Store>) {
    // 23 events, three of them at one instant, stored in shuffled batches.
    let mut records: Vec<NewAudit> = (0..20)
        .map(|m| one("rr-pages", &json!({"event_time": at(m).to_rfc3339()})))
        .collect();
    for phase in ["verifying", "checking", "waiting"] {
        records.push(one(
            "rr-pages",
            &json!({"event_time": at(7).to_rfc3339(), "overall_phase": phase}),
        ));
    }
    let mut shuffled = records.clone();
    shuffled.shuffle(&mut rand::rngs::StdRng::seed_from_u64(11));
    for chunk in shuffled.chunks(4) {
        store.insert(chunk).await.expect("insert");
    }
    let id = all_rows(&*store).await.remove(0).id;
    let (whole, _) = read_pages(&*store, id, 1000).await;
    assert_eq!(whole.len(), 23);
    let (paged, sizes) = read_pages(&*store, id, 5).await;
    assert_eq!(sizes, [5, 5, 5, 5, 3]);
    assert_eq!(paged, whole, "every event once, in the same order");
    let times: Vec<_> = paged.iter().map(|e| e.event_time).collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "oldest first");
    let mut ids: Vec<_> = paged.iter().map(|e| e.event_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 23);
}

pub async fn large_events_page_without_one_huge_answer(store: Arc<dyn Store>) {
    use remaudit_store::TIMELINE_PAGE_BYTES;
    // 160 events of about 60 KB: some 9.6 MB, more than one page may carry.
    let statuses = json!({"aiAnalysis": {"phase": "failed", "startTime": at(0).to_rfc3339(),
                          "success": false, "error": "e".repeat(60_000)}});
    let records: Vec<NewAudit> = (0..160)
        .map(|m| {
            one(
                "rr-large",
                &json!({"event_time": at(m).to_rfc3339(), "service_crd_statuses": statuses}),
            )
        })
        .collect();
    for chunk in records.chunks(40) {
        store.insert(chunk).await.expect("insert");
    }
    let id = all_rows(&*store).await.remove(0).id;
    let (events, sizes) = read_pages(&*store, id, 1000).await;
    assert_eq!(events.len(), 160, "every event once");
    assert!(sizes.len() >= 2, "{sizes:?}");
    let per_event = records[0].raw.clone().len();
    for &n in &sizes {
        assert!(
            n * per_event <= TIMELINE_PAGE_BYTES + per_event,
            "{sizes:?}"
        );
    }
}

/// The property names of a type's OpenAPI schema: every field it has.
fn schema_fields<T: utoipa::PartialSchema>() -> std::collections::BTreeSet<String> {
    match T::schema() {
        utoipa::openapi::RefOr::T(utoipa::openapi::Schema::Object(object)) => {
            object.properties.keys().cloned().collect()
        }
        _ => panic!("not an object schema"),
    }
}

/// A field added to the record must reach the summary row and come back:
/// the fixture sets every field of the wire record (this test fails until a
/// new one is set here), and every field of the row must come back set
/// (until the store writes it, on insert and on update, and reads it).
pub async fn every_field_is_stored_and_read_back(store: Arc<dyn Store>) {
    use remaudit_model::{RemediationOrchestrationAudit, StoredAudit};
    let t = |m: i64| at(m).to_rfc3339();
    let fixture = json!({
        "alert_fingerprint": "fp-full", "remediation_name": "rr-full", "namespace": "full",
        "overall_phase": "failed", "start_time": t(0), "completion_time": t(9),
        "remediation_processing_name": "rr-full-rp", "ai_analysis_name": "rr-full-ai",
        "workflow_execution_name": "rr-full-we", "kubernetes_execution_name": "rr-full-ke",
        "service_crd_statuses": {"aiAnalysis": {"phase": "failed", "startTime": t(1), "success": false}},
        "timeout_phase": "executing", "timeout_time": t(8),
        "failure_phase": "analyzing", "failure_reason": "model unavailable",
        "duplicate_count": 2, "last_duplicate_time": t(3),
        "event_id": "0e3c8a49-52a3-4c8e-9d51-3c1d7ad2a0f1", "event_time": t(9),
    });
    // Accepted and ignored (server-owned), or an alias of another field.
    let not_sent = [
        "id",
        "retention_expiry_time",
        "deleted_at",
        "created_at",
        "updated_at",
        "alert_processing_name",
    ];
    let sent: std::collections::BTreeSet<String> = fixture
        .as_object()
        .expect("object")
        .keys()
        .cloned()
        .collect();
    let mut wire = schema_fields::<RemediationOrchestrationAudit>();
    wire.retain(|f| !not_sent.contains(&f.as_str()));
    assert_eq!(
        sent, wire,
        "the fixture sets every field of the wire record"
    );

    // A first record with none of the optional fields, so that the full one
    // reaches the row through the upsert's ON CONFLICT branch.
    let first = record(json!({
        "alert_fingerprint": "fp-full", "remediation_name": "rr-full", "namespace": "full",
        "overall_phase": "pending", "start_time": t(0), "event_time": t(0),
    }));
    store.insert(&[first]).await.expect("insert");
    store.insert(&[record(fixture)]).await.expect("insert");
    let rows = all_rows(&*store).await;
    assert_eq!(rows.len(), 1);
    let row = serde_json::to_value(&rows[0]).expect("json");
    // Set by the store only under a retention policy, which this store has not.
    let may_be_empty = ["retention_expiry_time"];
    for field in schema_fields::<StoredAudit>() {
        assert!(
            may_be_empty.contains(&field.as_str()) || !row[&field].is_null(),
            "{} left `{field}` empty: write it in the insert statement and read it with the summary columns",
            store.backend()
        );
    }
}
