//! Simulated remediations: requests whose children complete, fail or hang at
//! random, driven through the real state machine ([`decide`]) and audited
//! through a real [`Publisher`], the way the reconcile loop does it, but with
//! a simulated clock and no API server. A demo, a load generator, and the
//! end-to-end test's source of truth.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use remaudit_client::Publisher;

use crate::{
    Action, ChildObject, ChildPhase, ChildStatus, Children, RemediationPhase, RemediationRequest,
    RemediationRequestSpec, TargetResource, Timeouts, audit_record, decide, mark_audited,
    unaudited_transition,
};

/// The most decisions one simulated remediation may take; it needs at most a dozen.
const MAX_STEPS: usize = 64;

/// Timeouts of simulated requests (seconds): short, so that every simulated
/// time lies in the past when the records are sent.
const TIMEOUTS: Timeouts = Timeouts {
    processing_seconds: Some(120),
    analyzing_seconds: Some(180),
    executing_seconds: Some(300),
    overall_seconds: Some(900),
};

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulationConfig {
    /// How many remediations.
    pub count: usize,
    /// Remediations started per second of real time; `None` for as fast as possible.
    pub rate: Option<f64>,
    /// Share of remediations whose child fails (0 to 1).
    pub fail_ratio: f64,
    /// Share of remediations whose child hangs until the phase times out (0 to 1).
    pub timeout_ratio: f64,
    /// Seed of the random choices; the same seed gives the same remediations.
    pub seed: u64,
    /// Namespace of the simulated requests.
    pub namespace: String,
}

impl Default for SimulationConfig {
    fn default() -> Self {
        Self {
            count: 100,
            rate: None,
            fail_ratio: 0.2,
            timeout_ratio: 0.1,
            seed: 1,
            namespace: "simulation".to_owned(),
        }
    }
}

/// How one simulated remediation ends, chosen up front.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Every child completes.
    Completes,
    /// The child of this phase fails.
    FailsIn(RemediationPhase),
    /// The child of this phase never finishes.
    HangsIn(RemediationPhase),
}

/// One simulated remediation as it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Simulated {
    /// The request's name.
    pub name: String,
    /// The alert's fingerprint.
    pub fingerprint: String,
    /// The request's creation time.
    pub start_time: DateTime<Utc>,
    /// What was meant to happen.
    pub fate: Fate,
    /// The phase it ended in.
    pub phase: RemediationPhase,
    /// When it ended.
    pub completion_time: Option<DateTime<Utc>>,
    /// The phase whose child failed.
    pub failed_phase: Option<RemediationPhase>,
    /// The child's error.
    pub error_message: Option<String>,
    /// Audit records handed to the publisher.
    pub records: usize,
    /// Records the publisher refused.
    pub refused: usize,
}

/// Validates ratios and count.
///
/// # Errors
/// A message naming the bad setting.
pub fn check(config: &SimulationConfig) -> Result<(), String> {
    for (name, value) in [
        ("fail ratio", config.fail_ratio),
        ("timeout ratio", config.timeout_ratio),
    ] {
        if !(0.0..=1.0).contains(&value) {
            return Err(format!("{name} must be between 0 and 1, got {value}"));
        }
    }
    if config.fail_ratio + config.timeout_ratio > 1.0 {
        return Err(format!(
            "fail ratio + timeout ratio must be at most 1, got {}",
            config.fail_ratio + config.timeout_ratio
        ));
    }
    if let Some(rate) = config.rate
        && !(rate.is_finite() && rate > 0.0)
    {
        return Err(format!(
            "rate must be a positive number of remediations per second, got {rate}"
        ));
    }
    Ok(())
}

fn k8s_time(time: DateTime<Utc>) -> Time {
    let nanos = i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0);
    Time(Timestamp::new(time.timestamp(), nanos).unwrap_or(Timestamp::UNIX_EPOCH))
}

fn stamp(meta: &mut ObjectMeta, now: DateTime<Utc>) {
    meta.creation_timestamp = Some(k8s_time(now));
    meta.uid = Some(format!("sim-{}", meta.name.as_deref().unwrap_or_default()));
}

/// Records the children a decision created, as running from `now`.
fn observe_created(children: &mut Children, actions: &[Action], now: DateTime<Utc>) {
    let running = Some(ChildStatus {
        phase: Some(ChildPhase::Running),
        ..ChildStatus::default()
    });
    for Action::Create(child) in actions {
        match child.clone() {
            ChildObject::RemediationProcessing(mut c) => {
                stamp(&mut c.metadata, now);
                c.status.clone_from(&running);
                children.remediation_processing = Some(c);
            }
            ChildObject::AIAnalysis(mut c) => {
                stamp(&mut c.metadata, now);
                c.status.clone_from(&running);
                children.ai_analysis = Some(c);
            }
            ChildObject::WorkflowExecution(mut c) => {
                stamp(&mut c.metadata, now);
                c.status.clone_from(&running);
                children.workflow_execution = Some(c);
            }
        }
    }
}

/// The status of the child running `phase`, to change it.
fn child_status(
    children: &mut Children,
    phase: RemediationPhase,
) -> Option<&mut Option<ChildStatus>> {
    match phase {
        RemediationPhase::Processing => children
            .remediation_processing
            .as_mut()
            .map(|c| &mut c.status),
        RemediationPhase::Analyzing => children.ai_analysis.as_mut().map(|c| &mut c.status),
        RemediationPhase::Executing => children.workflow_execution.as_mut().map(|c| &mut c.status),
        _ => None,
    }
}

fn choose_fate(rng: &mut StdRng, config: &SimulationConfig) -> Fate {
    let stages = [
        RemediationPhase::Processing,
        RemediationPhase::Analyzing,
        RemediationPhase::Executing,
    ];
    let stage = stages[rng.random_range(0..stages.len())];
    let roll: f64 = rng.random();
    if roll < config.fail_ratio {
        Fate::FailsIn(stage)
    } else if roll < config.fail_ratio + config.timeout_ratio {
        Fate::HangsIn(stage)
    } else {
        Fate::Completes
    }
}

/// Simulates remediation `index`, publishing a record on every phase change.
fn simulate_one(
    config: &SimulationConfig,
    index: usize,
    rng: &mut StdRng,
    publisher: &Publisher,
    start_time: DateTime<Utc>,
) -> Simulated {
    let name = format!("sim-{}-{index:06}", config.seed);
    let alerts = (config.count / 4).max(1);
    let fingerprint = format!("sim-{}-alert-{:05}", config.seed, index % alerts);
    let fate = choose_fate(rng, config);
    let mut request = RemediationRequest::new(
        &name,
        RemediationRequestSpec {
            signal_fingerprint: fingerprint.clone(),
            signal_name: "HighMemoryUsage".to_owned(),
            severity: ["critical", "warning"][index % 2].to_owned(),
            target_resource: TargetResource {
                kind: "Deployment".to_owned(),
                name: format!("app-{}", index % 17),
                namespace: Some(config.namespace.clone()),
            },
            timeouts: TIMEOUTS,
        },
    );
    request.metadata.namespace = Some(config.namespace.clone());
    request.metadata.uid =
        Some(uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()).to_string());
    request.metadata.creation_timestamp = Some(k8s_time(start_time));

    let mut children = Children::default();
    let mut now = start_time;
    let (mut records, mut refused) = (0, 0);
    for _ in 0..MAX_STEPS {
        let decision = decide(&request, &children, now);
        observe_created(&mut children, &decision.actions, now);
        request = decision.applied_to(&request);
        let status = request.status.clone().unwrap_or_default();
        if let Some(transition) = unaudited_transition(&status).cloned() {
            records += 1;
            if publisher
                .publish(audit_record(&request, &children, &transition))
                .is_err()
            {
                refused += 1;
            }
            if let Some(s) = request.status.as_mut() {
                mark_audited(s, &transition);
            }
        }
        let phase = status.phase.unwrap_or_default();
        if phase.is_terminal() {
            break;
        }
        let Some(child) = child_status(&mut children, phase) else {
            continue;
        };
        match fate {
            Fate::HangsIn(stage) if stage == phase => {
                let wait = decision.requeue_after.unwrap_or(Duration::from_mins(1));
                now += TimeDelta::from_std(wait).unwrap_or(TimeDelta::seconds(60))
                    + TimeDelta::seconds(1);
            }
            Fate::FailsIn(stage) if stage == phase => {
                now += TimeDelta::seconds(rng.random_range(2..60));
                *child = Some(ChildStatus {
                    phase: Some(ChildPhase::Failed),
                    completed_at: Some(now),
                    error_message: Some(format!(
                        "{} step failed: simulated error {}",
                        phase.as_str(),
                        rng.random_range(1..4)
                    )),
                });
            }
            _ => {
                now += TimeDelta::seconds(rng.random_range(5..100));
                *child = Some(ChildStatus {
                    phase: Some(ChildPhase::Completed),
                    completed_at: Some(now),
                    error_message: None,
                });
            }
        }
    }
    let status = request.status.unwrap_or_default();
    Simulated {
        name,
        fingerprint,
        start_time,
        fate,
        phase: status.phase.unwrap_or_default(),
        completion_time: status.completion_time,
        failed_phase: status.failed_phase,
        error_message: status.error_message,
        records,
        refused,
    }
}

/// Runs the simulation, calling `progress` after each remediation.
///
/// Each remediation starts (in simulated time) one overall timeout before
/// the real moment it is simulated, so all its records lie in the past.
pub async fn run(
    config: &SimulationConfig,
    publisher: &Publisher,
    mut progress: impl FnMut(&Simulated),
) -> Vec<Simulated> {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut pace = config
        .rate
        .map(|rate| tokio::time::interval(Duration::from_secs_f64(1.0 / rate)));
    let lead = TimeDelta::seconds(i64::from(TIMEOUTS.overall_seconds.unwrap_or(900)) + 1);
    let mut done = Vec::with_capacity(config.count);
    for index in 0..config.count {
        if let Some(pace) = pace.as_mut() {
            pace.tick().await;
        }
        let simulated = simulate_one(config, index, &mut rng, publisher, Utc::now() - lead);
        progress(&simulated);
        done.push(simulated);
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_checked() {
        assert!(check(&SimulationConfig::default()).is_ok());
        let bad = |fail_ratio, timeout_ratio| SimulationConfig {
            fail_ratio,
            timeout_ratio,
            ..SimulationConfig::default()
        };
        assert!(check(&bad(1.5, 0.0)).unwrap_err().contains("fail ratio"));
        assert!(check(&bad(0.6, 0.6)).unwrap_err().contains("at most 1"));
        assert!(
            check(&SimulationConfig {
                rate: Some(0.0),
                ..SimulationConfig::default()
            })
            .is_err()
        );
    }

    #[tokio::test]
    async fn fates_end_in_their_phases() {
        // No spool and an unreachable service: records queue in memory, which is all this needs.
        let publisher = Publisher::start(remaudit_client::PublisherSettings {
            url: "http://127.0.0.1:9".to_owned(),
            ..remaudit_client::PublisherSettings::default()
        })
        .expect("publisher");
        let config = SimulationConfig {
            count: 60,
            fail_ratio: 0.3,
            timeout_ratio: 0.3,
            seed: 7,
            ..SimulationConfig::default()
        };
        let done = run(&config, &publisher, |_| {}).await;
        assert_eq!(done.len(), 60);
        for s in &done {
            match s.fate {
                Fate::Completes => assert_eq!(s.phase, RemediationPhase::Completed, "{s:?}"),
                Fate::FailsIn(stage) => {
                    assert_eq!(s.phase, RemediationPhase::Failed, "{s:?}");
                    assert_eq!(s.failed_phase, Some(stage));
                }
                Fate::HangsIn(_) => assert_eq!(s.phase, RemediationPhase::Timeout, "{s:?}"),
            }
            assert!(s.completion_time.is_some_and(|c| c <= Utc::now()), "{s:?}");
            assert_eq!(s.refused, 0);
        }
        let records: usize = done.iter().map(|s| s.records).sum();
        assert_eq!(publisher.pending(), records as u64);
        // The same seed gives the same remediations.
        let again = run(&config, &publisher, |_| {}).await;
        let fates = |v: &[Simulated]| {
            v.iter()
                .map(|s| (s.name.clone(), s.fate, s.phase))
                .collect::<Vec<_>>()
        };
        assert_eq!(fates(&done), fates(&again));
        publisher.shutdown(Duration::ZERO).await;
    }
}
