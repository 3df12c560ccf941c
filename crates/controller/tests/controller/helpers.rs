//! Fixtures: a request, its children as the API server would show them, and
//! a small driver that carries out decisions the way the reconcile loop does.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use remaudit_controller::{
    Action, ChildObject, ChildPhase, ChildStatus, Children, Decision, RemediationPhase,
    RemediationRequest, RemediationRequestSpec, TargetResource, Timeouts, decide,
};

/// The request's creation time, the origin of every test clock.
pub fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_764_000_000, 0).expect("in range")
}

/// `seconds` after [`t0`].
pub fn at(seconds: i64) -> DateTime<Utc> {
    t0() + chrono::TimeDelta::seconds(seconds)
}

/// The API server's form of a time.
pub fn k8s_time(time: DateTime<Utc>) -> Time {
    Time(
        Timestamp::new(
            time.timestamp(),
            i32::try_from(time.timestamp_subsec_nanos()).expect("< 1e9"),
        )
        .expect("in range"),
    )
}

/// A freshly created request (no status yet) with the given timeouts.
pub fn request_with(name: &str, uid: &str, timeouts: Timeouts) -> RemediationRequest {
    let mut request = RemediationRequest::new(
        name,
        RemediationRequestSpec {
            signal_fingerprint: format!("fp-{name}"),
            signal_name: "HighMemoryUsage".to_owned(),
            severity: "critical".to_owned(),
            target_resource: TargetResource {
                kind: "Deployment".to_owned(),
                name: "web".to_owned(),
                namespace: Some("prod".to_owned()),
            },
            timeouts,
        },
    );
    request.metadata.namespace = Some("prod".to_owned());
    request.metadata.uid = Some(uid.to_owned());
    request.metadata.creation_timestamp = Some(k8s_time(t0()));
    request
}

/// A freshly created request with the default timeouts.
pub fn request(name: &str, uid: &str) -> RemediationRequest {
    request_with(name, uid, Timeouts::default())
}

/// Stamps `meta` as the API server does on create.
fn stamp(meta: &mut ObjectMeta, now: DateTime<Utc>) {
    meta.creation_timestamp = Some(k8s_time(now));
    meta.uid = Some(format!(
        "uid-of-{}",
        meta.name.as_deref().unwrap_or_default()
    ));
}

/// Puts each created child of `actions` into `children`, as the watch would show it.
pub fn observe_created(children: &mut Children, actions: &[Action], now: DateTime<Utc>) {
    for Action::Create(child) in actions {
        match child.clone() {
            ChildObject::RemediationProcessing(mut c) => {
                stamp(&mut c.metadata, now);
                children.remediation_processing = Some(c);
            }
            ChildObject::AIAnalysis(mut c) => {
                stamp(&mut c.metadata, now);
                children.ai_analysis = Some(c);
            }
            ChildObject::WorkflowExecution(mut c) => {
                stamp(&mut c.metadata, now);
                children.workflow_execution = Some(c);
            }
        }
    }
}

/// The status of the child that runs `phase`, if that child is observed.
pub fn child_status_mut(
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

/// Sets the status of the child running `phase`.
pub fn set_child(
    children: &mut Children,
    phase: RemediationPhase,
    child_phase: ChildPhase,
    now: DateTime<Utc>,
    error: Option<&str>,
) {
    let status = child_status_mut(children, phase).expect("the child is observed");
    *status = Some(ChildStatus {
        phase: Some(child_phase),
        completed_at: matches!(child_phase, ChildPhase::Completed | ChildPhase::Failed)
            .then_some(now),
        error_message: error.map(str::to_owned),
    });
}

/// A request and its children, moved along by decisions.
pub struct World {
    /// The request as stored.
    pub request: RemediationRequest,
    /// The children as observed.
    pub children: Children,
}

impl World {
    /// A fresh request with these timeouts and no children.
    pub fn new(timeouts: Timeouts) -> Self {
        Self {
            request: request_with("rr-1", "uid-1", timeouts),
            children: Children::default(),
        }
    }

    /// Decides at `now`, carries the decision out (children created and
    /// observed at once, status written) and returns it.
    pub fn step(&mut self, now: DateTime<Utc>) -> Decision {
        let decision = decide(&self.request, &self.children, now);
        observe_created(&mut self.children, &decision.actions, now);
        self.request = decision.applied_to(&self.request);
        decision
    }

    /// The current phase.
    pub fn phase(&self) -> RemediationPhase {
        self.request
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .unwrap_or_default()
    }

    /// Steps from a fresh request into `target` (an in-flight phase), each
    /// child completing `gap` seconds after the previous step; returns the time
    /// of the last step.
    pub fn drive_to(&mut self, target: RemediationPhase, gap: i64) -> DateTime<Utc> {
        let mut now = t0();
        self.step(now);
        while self.phase() != target {
            now += chrono::TimeDelta::seconds(gap);
            let phase = self.phase();
            set_child(&mut self.children, phase, ChildPhase::Completed, now, None);
            self.step(now);
            assert!(!self.phase().is_terminal(), "{target} is not on the way");
        }
        now
    }
}

/// The in-flight phases, in order.
pub const IN_FLIGHT: [RemediationPhase; 3] = [
    RemediationPhase::Processing,
    RemediationPhase::Analyzing,
    RemediationPhase::Executing,
];
