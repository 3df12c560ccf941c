//! Every metric the Grafana dashboard and the Prometheus alert rules name
//! exists in the code.
//!
//! The code's list comes from the code itself: each crate's `describe`
//! function runs against a recorder that only writes down names and kinds.
//! The files' list is every token with the project's metric prefixes
//! (`remaudit_`, `kubernaut_`) in the rules files and in the dashboard's
//! Prometheus queries, variables and texts (the PostgreSQL panels are left
//! out: their names are tables, checked by scripts/observability-check).
//! A histogram's `_bucket`, `_sum` and `_count` series count as its own,
//! `_bucket` only for the histograms `remaudit serve` and `remaudit
//! controller` give buckets: the exporter renders every other histogram as
//! a summary, which has no buckets.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A recorder that keeps the name and kind of every metric described or registered.
#[derive(Default)]
struct Names(Mutex<BTreeMap<String, Kind>>);

impl Names {
    fn note(&self, name: &str, kind: Kind) {
        self.0.lock().expect("names").insert(name.to_owned(), kind);
    }
}

impl Recorder for Names {
    fn describe_counter(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        self.note(key.as_str(), Kind::Counter);
    }
    fn describe_gauge(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        self.note(key.as_str(), Kind::Gauge);
    }
    fn describe_histogram(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        self.note(key.as_str(), Kind::Histogram);
    }
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.note(key.name(), Kind::Counter);
        Counter::noop()
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.note(key.name(), Kind::Gauge);
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.note(key.name(), Kind::Histogram);
        Histogram::noop()
    }
}

/// Every metric the four crates that emit describe, by name.
fn code_metrics() -> BTreeMap<String, Kind> {
    let names = Names::default();
    metrics::with_local_recorder(&names, || {
        remaudit_server::telemetry::describe();
        remaudit_client::metrics::describe();
        remaudit_retention::describe_metrics();
        remaudit_controller::reconcile::describe_metrics();
        remaudit_store::projection::describe_metrics();
    });
    names.0.into_inner().expect("names")
}

/// The histograms given buckets by `remaudit`'s recorder
/// (`crates/cli/src/telemetry.rs`); the others are exported as summaries.
const BUCKETED: [&str; 3] = [
    remaudit_server::telemetry::HTTP_DURATION,
    remaudit_client::metrics::PUBLISH_DURATION,
    remaudit_store::projection::LAG_SECONDS,
];

const PREFIXES: [&str; 2] = ["remaudit_", "kubernaut_"];

/// Every token of `text` that starts with one of [`PREFIXES`].
fn prefixed_tokens(text: &str, into: &mut BTreeSet<String>) {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut rest = text;
    while let Some(start) = rest.find(|c: char| is_name(c)) {
        let tail = &rest[start..];
        let end = tail.find(|c: char| !is_name(c)).unwrap_or(tail.len());
        let token = &tail[..end];
        if PREFIXES.iter().any(|p| token.starts_with(p)) {
            into.insert(token.to_owned());
        }
        rest = &tail[end..];
    }
}

/// The names a Grafana dashboard's Prometheus side uses: every string in
/// it, except in objects whose datasource is not Prometheus (the SQL panels
/// and their variable).
fn dashboard_tokens(value: &serde_json::Value, into: &mut BTreeSet<String>) {
    match value {
        serde_json::Value::String(s) => prefixed_tokens(s, into),
        serde_json::Value::Array(items) => {
            for item in items {
                dashboard_tokens(item, into);
            }
        }
        serde_json::Value::Object(map) => {
            let other_source = map
                .get("datasource")
                .and_then(|d| d.get("type"))
                .and_then(serde_json::Value::as_str)
                .is_some_and(|t| t != "prometheus");
            if !other_source {
                for item in map.values() {
                    dashboard_tokens(item, into);
                }
            }
        }
        _ => {}
    }
}

/// The names in `used` that no metric of `code` accounts for, each with why.
fn unknown(used: &BTreeSet<String>, code: &BTreeMap<String, Kind>) -> Vec<String> {
    let mut missing = Vec::new();
    for name in used {
        if code.contains_key(name) {
            continue;
        }
        let histogram_series = ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            let base = name.strip_suffix(suffix)?;
            (code.get(base) == Some(&Kind::Histogram)).then_some((base, *suffix))
        });
        match histogram_series {
            Some((base, "_bucket")) if !BUCKETED.contains(&base) => missing.push(format!(
                "{name}: {base} has no buckets (exported as a summary: use _sum, _count or quantile)"
            )),
            Some(_) => {}
            None => missing.push(format!("{name}: no such metric in the code")),
        }
    }
    missing
}

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative)
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo_file(relative)).unwrap_or_else(|e| panic!("read {relative}: {e}"))
}

fn rules_tokens(relative: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    prefixed_tokens(&read(relative), &mut used);
    used
}

#[test]
fn every_metric_the_rules_name_exists_in_the_code() {
    let code = code_metrics();
    for file in [
        "deploy/prometheus/rules.yaml",
        "deploy/helm/remaudit/files/prometheus-rules.yaml",
    ] {
        let used = rules_tokens(file);
        assert!(used.len() >= 8, "{file} names only {used:?}");
        let missing = unknown(&used, &code);
        assert!(missing.is_empty(), "{file}:\n  {}", missing.join("\n  "));
    }
}

#[test]
fn every_metric_the_dashboard_names_exists_in_the_code() {
    let code = code_metrics();
    let file = "deploy/grafana/remaudit.json";
    let dashboard: serde_json::Value =
        serde_json::from_str(&read(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    let mut used = BTreeSet::new();
    dashboard_tokens(&dashboard, &mut used);
    // The design's four publisher metrics are on it.
    for design in [
        "kubernaut_orchestrator_audit_publish_attempts_total",
        "kubernaut_orchestrator_audit_publish_failures_total",
        "kubernaut_orchestrator_audit_publish_duration_seconds_bucket",
        "kubernaut_orchestrator_pending_audit_records",
    ] {
        assert!(used.contains(design), "{design} is not on the dashboard");
    }
    let missing = unknown(&used, &code);
    assert!(missing.is_empty(), "{file}:\n  {}", missing.join("\n  "));
}

#[test]
fn a_made_up_name_or_a_summary_bucket_is_reported_by_name() {
    let code = code_metrics();
    let mut used = BTreeSet::new();
    prefixed_tokens(
        "sum(rate(remaudit_made_up_total[5m])) / \
         sum(rate(remaudit_http_request_duration_seconds_count{route=~\"/api/.*\"}[5m])) \
         + histogram_quantile(0.9, rate(remaudit_retention_run_duration_seconds_bucket[1h])) \
         + remaudit_retention_run_duration_seconds_sum",
        &mut used,
    );
    assert_eq!(
        unknown(&used, &code),
        [
            "remaudit_made_up_total: no such metric in the code",
            "remaudit_retention_run_duration_seconds_bucket: remaudit_retention_run_duration_seconds has no buckets (exported as a summary: use _sum, _count or quantile)",
        ]
    );
}

#[test]
fn the_code_list_holds_every_crates_metrics() {
    let code = code_metrics();
    for (name, kind) in [
        (remaudit_server::telemetry::HTTP_DURATION, Kind::Histogram),
        (remaudit_server::telemetry::DATABASE_UP, Kind::Gauge),
        (
            remaudit_server::telemetry::CHAIN_BREAKS_FOUND,
            Kind::Counter,
        ),
        (remaudit_server::auth::DENIED_TOTAL, Kind::Counter),
        (remaudit_client::metrics::PENDING_RECORDS, Kind::Gauge),
        (remaudit_client::metrics::SPOOL_MAX_BYTES, Kind::Gauge),
        (remaudit_retention::telemetry::LAST_SUCCESS, Kind::Gauge),
        (
            remaudit_controller::reconcile::RECONCILE_DURATION_SECONDS,
            Kind::Histogram,
        ),
    ] {
        assert_eq!(code.get(name), Some(&kind), "{name}");
    }
}
