//! 120 days of remediations before a clock, for retention tests.

use chrono::{DateTime, TimeDelta, Utc};
use remaudit_model::NewAudit;
use remaudit_store::{InsertRules, Store};
use serde_json::json;

use crate::record;

/// A fixed clock for retention tests: a Tuesday.
///
/// # Panics
/// Never: the literal is valid.
#[must_use]
pub fn clock() -> DateTime<Utc> {
    "2026-09-01T06:00:00Z".parse().expect("time")
}

/// What the generator wrote.
#[derive(Debug, Clone, Copy, Default)]
pub struct Written {
    /// Remediations (summary rows).
    pub remediations: i64,
    /// Records (timeline events).
    pub events: i64,
}

/// Per day for 120 days before `now`: a completed, a failed and a timed-out
/// remediation (three records each) and one that never finished (two).
#[must_use]
pub fn history(now: DateTime<Utc>) -> (Vec<NewAudit>, Written) {
    let mut records = Vec::new();
    let mut written = Written::default();
    for day in 0..120 {
        let start = now - TimeDelta::days(120 - day) + TimeDelta::minutes(day * 7 % 600);
        for (n, end) in ["completed", "failed", "timeout", "running"]
            .iter()
            .enumerate()
        {
            let name = format!("rr-{day}-{n}");
            let base = json!({
                "alert_fingerprint": format!("fp-{}", day % 9),
                "remediation_name": name,
                "namespace": if n % 2 == 0 { "prod" } else { "staging" },
                "start_time": start.to_rfc3339(),
                "duplicate_count": 0,
            });
            let mut phases = vec![("processing", 1)];
            phases.push(("executing", 3));
            if *end != "running" {
                phases.push((end, 20));
            }
            for (phase, minutes) in phases {
                let mut r = base.clone();
                r["overall_phase"] = json!(phase);
                r["event_time"] = json!((start + TimeDelta::minutes(minutes)).to_rfc3339());
                match phase {
                    "completed" | "failed" => {
                        r["completion_time"] =
                            json!((start + TimeDelta::minutes(minutes)).to_rfc3339());
                    }
                    "timeout" => {
                        r["timeout_phase"] = json!("executing");
                        r["timeout_time"] =
                            json!((start + TimeDelta::minutes(minutes)).to_rfc3339());
                    }
                    _ => {}
                }
                if phase == "failed" {
                    r["failure_phase"] = json!("executing");
                    r["failure_reason"] = json!("pod OOMKilled");
                }
                records.push(record(r));
                written.events += 1;
            }
            written.remediations += 1;
        }
    }
    (records, written)
}

/// Stores the history in batches, the way the service receives it, and
/// projects it.
///
/// # Panics
/// When the store refuses a batch.
pub async fn load(store: &dyn Store, now: DateTime<Utc>) -> Written {
    load_with(store, now, &InsertRules::default()).await
}

/// [`load`] under `rules` (a chain key, for one). The history is projected
/// before it returns, so that the summary tables hold it for checks that
/// read them directly.
///
/// # Panics
/// When the store refuses a batch.
pub async fn load_with(store: &dyn Store, now: DateTime<Utc>, rules: &InsertRules) -> Written {
    let (records, written) = history(now);
    for chunk in records.chunks(500) {
        store
            .insert_with(chunk, rules)
            .await
            .expect("insert history");
    }
    store.settle().await.expect("project the history");
    written
}
