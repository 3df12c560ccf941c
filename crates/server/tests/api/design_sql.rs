//! The design's use-case SQL (`remaudit_testkit::design_sql`) runs unchanged against the PostgreSQL schema,
//! over data stored through HTTP with the design's client, and answers what
//! the generated data says it must.
//!
//! The queries run through the simple-query protocol, so every value comes
//! back as text and no numeric decoding is needed.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use remaudit_client::AuditStorageClient;
use remaudit_model::RemediationOrchestrationAudit;
use remaudit_model::histogram::percentile_cont;
use remaudit_testkit::design_sql;
use serde_json::json;
use sqlx::PgPool;

use crate::helpers::spawn_app;

const FINGERPRINTS: [&str; 5] = [
    "mem-pressure-prod-123",
    "cpu-hot-1",
    "disk-full-2",
    "oom-3",
    "net-4",
];

/// One simulated remediation and what it must look like in the database.
struct Sim {
    name: String,
    fingerprint: String,
    phase: &'static str,
    start: DateTime<Utc>,
    /// Whole seconds from start to completion, for finished ones.
    duration: Option<i64>,
    failure: Option<(&'static str, String)>,
}

fn simulate(now: DateTime<Utc>) -> Vec<Sim> {
    let mut sims: Vec<Sim> = (0..40_i64)
        .map(|i| {
            let phase = ["completed", "completed", "failed", "timeout", "executing"]
                [usize::try_from(i % 5).expect("small")];
            let terminal = phase != "executing";
            Sim {
                name: format!("rr-{i:02}"),
                fingerprint: FINGERPRINTS[usize::try_from(i % 5 + i % 3).expect("small") % 5]
                    .to_owned(),
                phase,
                start: now - Duration::hours(3) + Duration::minutes(2 * i),
                duration: terminal.then_some(60 + 7 * i),
                failure: (phase == "failed").then(|| {
                    (
                        ["processing", "analyzing", "executing"]
                            [usize::try_from(i % 3).expect("small")],
                        format!("reason {}", i % 4),
                    )
                }),
            }
        })
        .collect();
    // Old remediations, to be backdated for the archive statement.
    sims.extend((0..3_i64).map(|i| Sim {
        name: format!("rr-old-{i}"),
        fingerprint: "fp-old".to_owned(),
        phase: "completed",
        start: now - Duration::hours(4) + Duration::minutes(i),
        duration: Some(30),
        failure: None,
    }));
    sims
}

/// Sends each remediation's transitions through the design's client, in order.
async fn publish(client: &AuditStorageClient, sim: &Sim) {
    let mut phases = vec!["pending", "processing", "analyzing"];
    if sim.phase != "failed" {
        phases.push("executing");
    }
    if sim.phase != "executing" {
        phases.push(sim.phase);
    }
    for phase in phases {
        let mut record = json!({
            "id": 0, "alert_fingerprint": sim.fingerprint, "remediation_name": sim.name,
            "overall_phase": phase, "start_time": sim.start.to_rfc3339(), "duplicate_count": 0,
            "created_at": "0001-01-01T00:00:00Z", "updated_at": "0001-01-01T00:00:00Z",
        });
        if phase == sim.phase {
            if let Some(d) = sim.duration {
                record["completion_time"] = json!((sim.start + Duration::seconds(d)).to_rfc3339());
            }
            if let Some((failed_phase, reason)) = &sim.failure {
                record["failure_phase"] = json!(failed_phase);
                record["failure_reason"] = json!(reason);
            }
        }
        let audit: RemediationOrchestrationAudit = serde_json::from_value(record).expect("record");
        client
            .store_remediation_orchestration_audit(&audit)
            .await
            .expect("stored");
    }
}

async fn run(pool: &PgPool, sql: &str) -> Vec<Vec<Option<String>>> {
    remaudit_testkit::text_rows(pool, sql).await
}

fn num(v: Option<&str>) -> f64 {
    v.expect("a number").parse().expect("numeric text")
}

/// Parses a one-dimensional PostgreSQL array literal of simple values.
fn array(v: Option<&str>) -> Vec<String> {
    let text = v.expect("an array");
    let inner = text.trim_start_matches('{').trim_end_matches('}');
    if inner.is_empty() {
        return Vec::new();
    }
    let (mut items, mut current, mut quoted) = (Vec::new(), String::new(), false);
    for c in inner.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => items.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    items.push(current);
    items
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

#[tokio::test]
#[allow(clippy::too_many_lines)]
async fn design_use_case_queries_run_unchanged_and_agree_with_the_data() {
    let db = remaudit_testkit::PgDb::create().await;
    let app = spawn_app(db.store().await).await;
    let client = AuditStorageClient::new(&app.url("")).expect("client");
    let now = Utc::now();
    let sims = simulate(now);
    for sim in &sims {
        publish(&client, sim).await;
    }
    // The design's SQL reads the summary table directly: project first.
    db.store().await.settle().await.expect("settle");
    let pool = db.pool().await;
    let live: Vec<&Sim> = sims.iter().filter(|s| s.fingerprint != "fp-old").collect();

    // Post-mortem: all attempts for one alert.
    let rows = run(&pool, design_sql::POSTMORTEM).await;
    let mut expected: Vec<&&Sim> = live
        .iter()
        .filter(|s| s.fingerprint == "mem-pressure-prod-123")
        .collect();
    expected.sort_by_key(|s| std::cmp::Reverse(s.start));
    expected.truncate(10);
    assert_eq!(rows.len(), expected.len());
    assert!(!rows.is_empty());
    for (row, sim) in rows.iter().zip(&expected) {
        assert_eq!(row[0].as_deref(), Some(sim.name.as_str()));
        assert_eq!(row[1].as_deref(), Some(sim.phase));
        match sim.duration {
            Some(d) => assert!(close(num(row[4].as_deref()), remaudit_model::approx_f64(d))),
            None => assert_eq!(row[4], None),
        }
        assert_eq!(row[5].as_deref(), sim.failure.as_ref().map(|f| f.0));
        assert_eq!(
            row[6].as_deref(),
            sim.failure.as_ref().map(|f| f.1.as_str())
        );
    }

    // Success rate, grouped by phase as the design writes it.
    let rows = run(&pool, design_sql::SUCCESS_RATE).await;
    let mut by_phase: BTreeMap<&str, usize> = BTreeMap::new();
    for sim in &sims {
        *by_phase.entry(sim.phase).or_default() += 1;
    }
    assert_eq!(rows.len(), by_phase.len());
    for row in &rows {
        let phase = row[0].as_deref().expect("phase");
        let total = by_phase[phase];
        assert_eq!(row[1], Some(total.to_string()), "{phase}");
        let successful = if phase == "completed" { total } else { 0 };
        assert_eq!(row[2], Some(successful.to_string()));
        assert_eq!(
            row[3],
            Some(if phase == "failed" { total } else { 0 }.to_string())
        );
        assert_eq!(
            row[4].as_deref(),
            Some(if phase == "completed" {
                "100.00"
            } else {
                "0.00"
            })
        );
    }

    // Average, p50 and p95 duration by phase.
    let rows = run(&pool, design_sql::DURATIONS).await;
    let mut durations: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for sim in &sims {
        if let Some(d) = sim.duration {
            durations
                .entry(sim.phase)
                .or_default()
                .push(remaudit_model::approx_f64(d));
        }
    }
    assert_eq!(rows.len(), durations.len());
    for row in &rows {
        let phase = row[0].as_deref().expect("phase");
        let mut values = durations[phase].clone();
        values.sort_by(f64::total_cmp);
        let avg = values.iter().sum::<f64>() / remaudit_model::approx_f64(values.len());
        assert_eq!(row[1], Some(values.len().to_string()));
        assert!(close(num(row[2].as_deref()), avg), "{phase} avg");
        assert!(
            close(
                num(row[3].as_deref()),
                percentile_cont(&values, 0.5).expect("values")
            ),
            "{phase} p50"
        );
        assert!(
            close(
                num(row[4].as_deref()),
                percentile_cont(&values, 0.95).expect("values")
            ),
            "{phase} p95"
        );
    }

    // Slowest orchestrations.
    let rows = run(&pool, design_sql::SLOWEST).await;
    let mut slowest: Vec<&Sim> = sims.iter().filter(|s| s.duration.is_some()).collect();
    slowest.sort_by_key(|s| std::cmp::Reverse(s.duration));
    slowest.truncate(20);
    let got: Vec<_> = rows.iter().map(|r| r[0].clone().expect("name")).collect();
    let want: Vec<_> = slowest.iter().map(|s| s.name.clone()).collect();
    assert_eq!(got, want);

    // Most common failure phases.
    let rows = run(&pool, design_sql::FAILURES).await;
    let mut failures: BTreeMap<&str, (usize, BTreeSet<&str>, BTreeSet<&str>)> = BTreeMap::new();
    for sim in &sims {
        if let Some((phase, reason)) = &sim.failure {
            let entry = failures.entry(phase).or_default();
            entry.0 += 1;
            entry.1.insert(&sim.fingerprint);
            entry.2.insert(reason);
        }
    }
    assert_eq!(rows.len(), failures.len());
    let counts: Vec<f64> = rows.iter().map(|r| num(r[1].as_deref())).collect();
    assert!(counts.windows(2).all(|w| w[0] >= w[1]), "ordered by count");
    for row in &rows {
        let (count, fingerprints, reasons) = &failures[row[0].as_deref().expect("phase")];
        assert_eq!(row[1], Some(count.to_string()));
        assert_eq!(row[2], Some(fingerprints.len().to_string()));
        let got: BTreeSet<String> = array(row[3].as_deref()).into_iter().collect();
        let want: BTreeSet<String> = reasons.iter().map(|r| (*r).to_owned()).collect();
        assert_eq!(got, want);
    }

    // Retry analysis: alerts remediated more than once.
    let rows = run(&pool, design_sql::RETRIES).await;
    let mut by_fingerprint: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for sim in &sims {
        by_fingerprint
            .entry(&sim.fingerprint)
            .or_default()
            .push(sim.phase);
    }
    by_fingerprint.retain(|_, phases| phases.len() > 1);
    assert_eq!(rows.len(), by_fingerprint.len());
    for row in &rows {
        let phases = &by_fingerprint[row[0].as_deref().expect("fingerprint")];
        assert_eq!(row[1], Some(phases.len().to_string()));
        assert!(row[2].is_some());
        assert_eq!(
            array(row[3].as_deref()),
            *phases,
            "in the order they were first stored"
        );
        let successful = phases.contains(&"completed");
        assert_eq!(row[4].as_deref(), Some(if successful { "t" } else { "f" }));
    }

    // Retention: the design's archive statement, then its delete, on rows made old.
    sqlx::query("UPDATE remediation_audit SET created_at = now() - INTERVAL '100 days' WHERE alert_fingerprint = 'fp-old'")
        .execute(&pool)
        .await
        .expect("backdate");
    run(&pool, design_sql::RETENTION_ARCHIVE).await;
    let archived: Vec<serde_json::Value> = sqlx::query_scalar(
        "SELECT to_jsonb(a) - 'archived_at' - 'archive_batch' FROM remediation_audit_archive a ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .expect("archive");
    let originals: Vec<serde_json::Value> =
        sqlx::query_scalar("SELECT to_jsonb(r) FROM remediation_audit r WHERE alert_fingerprint = 'fp-old' ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("originals");
    assert_eq!(archived.len(), 3);
    assert_eq!(archived, originals, "every column archived as it was");
    run(&pool, design_sql::RETENTION_DELETE).await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM remediation_audit")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(left, i64::try_from(live.len()).expect("small"));
}
