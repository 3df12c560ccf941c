//! End to end without a cluster: simulated remediations driven through the
//! orchestrator's state machine and the real publisher into the service on
//! PostgreSQL, checked with the design's own SQL.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use remaudit_client::{Publisher, PublisherSettings};
use remaudit_controller::RemediationPhase;
use remaudit_controller::simulation::{self, SimulationConfig};
use remaudit_testkit::design_sql;

use crate::helpers::{Service, remaudit};

async fn run_sql(pool: &sqlx::PgPool, sql: String) -> Vec<Vec<Option<String>>> {
    remaudit_testkit::text_rows(pool, &sql).await
}

#[tokio::test]
async fn two_hundred_simulated_remediations_agree_with_the_design_queries() {
    let service = Service::start().await;
    let publisher = Publisher::start(PublisherSettings {
        url: service.url(),
        ..PublisherSettings::default()
    })
    .expect("publisher");
    let config = SimulationConfig {
        count: 200,
        fail_ratio: 0.25,
        timeout_ratio: 0.15,
        seed: 42,
        ..SimulationConfig::default()
    };
    let done = simulation::run(&config, &publisher, |_| {}).await;
    tokio::time::timeout(Duration::from_mins(1), publisher.flush())
        .await
        .expect("flushed");
    let records: usize = done.iter().map(|s| s.records).sum();
    assert_eq!(
        service.events().await,
        (
            i64::try_from(records).expect("small"),
            i64::try_from(records).expect("small")
        )
    );
    assert_eq!(publisher.stats().rejected, 0);
    publisher.shutdown(Duration::from_secs(5)).await;

    let mut by_phase: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &done {
        *by_phase.entry(s.phase.as_str()).or_default() += 1;
    }
    for phase in ["completed", "failed", "timeout"] {
        assert!(
            by_phase.get(phase).copied().unwrap_or(0) > 0,
            "the simulation produced {phase} remediations"
        );
    }

    // The design's SQL reads the summary table directly: project first.
    service.db.store().await.settle().await.expect("settle");
    let pool = service.db.pool().await;
    // Success rate, as the design writes it.
    let rows = run_sql(&pool, design_sql::SUCCESS_RATE.to_owned()).await;
    let got: BTreeMap<String, usize> = rows
        .iter()
        .map(|r| {
            (
                r[0].clone().expect("phase"),
                r[1].as_deref().expect("total").parse().expect("count"),
            )
        })
        .collect();
    let want: BTreeMap<String, usize> = by_phase
        .iter()
        .map(|(k, v)| ((*k).to_owned(), *v))
        .collect();
    assert_eq!(got, want);

    // Post-mortem of a few alerts: the design's query with the alert filled in.
    for fingerprint in [
        "sim-42-alert-00000",
        "sim-42-alert-00007",
        "sim-42-alert-00031",
    ] {
        let rows = run_sql(
            &pool,
            design_sql::with_fingerprint(design_sql::POSTMORTEM, fingerprint),
        )
        .await;
        let mut expected: Vec<_> = done
            .iter()
            .filter(|s| s.fingerprint == fingerprint)
            .collect();
        expected.sort_by_key(|s| std::cmp::Reverse(s.start_time));
        expected.truncate(10);
        assert!(!expected.is_empty());
        assert_eq!(rows.len(), expected.len(), "{fingerprint}");
        for (row, sim) in rows.iter().zip(expected) {
            assert_eq!(row[0].as_deref(), Some(sim.name.as_str()));
            assert_eq!(row[1].as_deref(), Some(sim.phase.as_str()));
            let duration: f64 = row[4]
                .as_deref()
                .expect("finished")
                .parse()
                .expect("seconds");
            let want = sim.completion_time.expect("finished") - sim.start_time;
            let want = remaudit_model::approx_f64(want.num_microseconds().expect("small")) / 1e6;
            assert!(
                (duration - want).abs() < 1e-6,
                "{} took {duration}, simulated {want}",
                sim.name
            );
            assert_eq!(
                row[5].as_deref(),
                sim.failed_phase.map(RemediationPhase::as_str)
            );
            assert_eq!(
                row[6].as_deref(),
                sim.error_message
                    .as_deref()
                    .filter(|_| sim.phase == RemediationPhase::Failed)
            );
        }
    }
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_command_exits_zero_once_everything_is_acknowledged() {
    let service = Service::start().await;
    let out = tokio::task::spawn_blocking({
        let url = service.url();
        move || {
            remaudit()
                .args([
                    "simulate", "--url", &url, "--count", "20", "--seed", "3", "--rate", "200",
                ])
                .stdin(Stdio::null())
                .output()
                .expect("run")
        }
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("simulated 20 remediations"), "{stdout}");
    let sent: i64 = stdout
        .split("sent ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("a record count in the summary");
    assert_eq!(service.events().await, (sent, sent));
}

#[test]
fn crdgen_prints_the_four_custom_resource_definitions() {
    let out = remaudit().arg("crdgen").output().expect("run");
    assert!(out.status.success());
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        yaml.matches("kind: CustomResourceDefinition").count(),
        4,
        "{yaml}"
    );
    for name in [
        "remediationrequests.remediation.kubernaut.io",
        "remediationprocessings.remediationprocessing.kubernaut.io",
        "aianalyses.aianalysis.kubernaut.io",
        "workflowexecutions.workflowexecution.kubernaut.io",
    ] {
        assert!(yaml.contains(&format!("name: {name}")), "{name} missing");
    }
    assert_eq!(yaml, remaudit_controller::crds_yaml());
}

#[test]
fn crdgen_output_passes_kubernetes_validate_in_strict_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("crds.yaml");
    let out = remaudit().arg("crdgen").output().expect("run");
    std::fs::write(&file, &out.stdout).expect("write");
    let check = std::process::Command::new("kubernetes-validate")
        .args(["-k", "1.33.0", "--strict"])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| {
            panic!("kubernetes-validate is needed (pip install kubernetes-validate; scripts/test installs it): {e}")
        });
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(check.status.success(), "{report}");
    assert_eq!(
        report
            .matches(" passed for resource customresourcedefinition/")
            .count(),
        4,
        "{report}"
    );
}
