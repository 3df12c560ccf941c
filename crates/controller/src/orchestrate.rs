//! The orchestration of one `RemediationRequest` as a pure function of
//! (request, observed children, now) to (next status, actions).
//!
//! The reconcile loop that uses it should, in this order:
//! 1. create every child in [`Decision::actions`] (an `AlreadyExists` answer
//!    counts as success: an earlier attempt got that far);
//! 2. write [`Decision::status`] when it differs from the stored one;
//! 3. when [`Decision::transition`] is set, publish its audit record and then
//!    record it as `lastAuditedTransition` (see [`crate::unaudited_transition`]);
//! 4. requeue after [`Decision::requeue_after`] so that timeouts fire on time.
//!
//! Each step can be repeated after a crash: a child whose ref is set, or that
//! is already observed, is never created again, and deciding again from the
//! old status gives the same transition (same phase and sequence, hence the
//! same audit `event_id`).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

use crate::crd::{
    AIAnalysis, AIAnalysisSpec, ChildPhase, ChildRef, ChildStatus, RemediationPhase,
    RemediationProcessing, RemediationProcessingSpec, RemediationRequest, RemediationRequestStatus,
    RequestRef, Transition, WorkflowExecution, WorkflowExecutionSpec,
};
use crate::time::to_chrono;

/// Longest name Kubernetes accepts for these objects (a DNS subdomain).
const MAX_NAME_LEN: usize = 253;

/// The children of one request as the controller currently observes them
/// (from its cache); `None` when not (yet) seen.
///
/// Pass only children owned by this request (its uid in their owner references).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Children {
    /// The `RemediationProcessing` child.
    pub remediation_processing: Option<RemediationProcessing>,
    /// The `AIAnalysis` child.
    pub ai_analysis: Option<AIAnalysis>,
    /// The `WorkflowExecution` child.
    pub workflow_execution: Option<WorkflowExecution>,
}

/// A child object the controller creates.
#[derive(Clone, Debug, PartialEq)]
pub enum ChildObject {
    /// Created on entering `processing`.
    RemediationProcessing(RemediationProcessing),
    /// Created on entering `analyzing`.
    AIAnalysis(AIAnalysis),
    /// Created on entering `executing`.
    WorkflowExecution(WorkflowExecution),
}

impl ChildObject {
    /// The child's metadata (name, namespace, owner reference).
    #[must_use]
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Self::RemediationProcessing(c) => &c.metadata,
            Self::AIAnalysis(c) => &c.metadata,
            Self::WorkflowExecution(c) => &c.metadata,
        }
    }

    /// The child's name.
    #[must_use]
    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or_default()
    }
}

/// Something the reconcile loop must do against the API server.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Create this child (treat `AlreadyExists` as done).
    Create(ChildObject),
}

/// What to do next for one request.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The status the request should have.
    pub status: RemediationRequestStatus,
    /// API calls to make before writing the status.
    pub actions: Vec<Action>,
    /// The phase change decided now, if any; it needs an audit record.
    pub transition: Option<Transition>,
    /// When to look again even if nothing changes: the nearest timeout
    /// deadline of the phase in flight; `None` in terminal phases.
    pub requeue_after: Option<Duration>,
}

impl Decision {
    /// Whether the phase changed.
    #[must_use]
    pub fn phase_changed(&self) -> bool {
        self.transition.is_some()
    }

    /// Whether the status differs from the request's stored one (and must be written).
    #[must_use]
    pub fn status_changed(&self, request: &RemediationRequest) -> bool {
        request.status.as_ref() != Some(&self.status)
    }

    /// The request as it is once this decision's status is written.
    #[must_use]
    pub fn applied_to(&self, request: &RemediationRequest) -> RemediationRequest {
        let mut next = request.clone();
        next.status = Some(self.status.clone());
        next
    }
}

/// The in-flight phases, each run by one child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    Processing,
    Analyzing,
    Executing,
}

impl Stage {
    #[cfg(test)]
    pub(crate) const ALL: [Self; 3] = [Self::Processing, Self::Analyzing, Self::Executing];

    fn of(phase: RemediationPhase) -> Option<Self> {
        match phase {
            RemediationPhase::Processing => Some(Self::Processing),
            RemediationPhase::Analyzing => Some(Self::Analyzing),
            RemediationPhase::Executing => Some(Self::Executing),
            _ => None,
        }
    }

    fn phase(self) -> RemediationPhase {
        match self {
            Self::Processing => RemediationPhase::Processing,
            Self::Analyzing => RemediationPhase::Analyzing,
            Self::Executing => RemediationPhase::Executing,
        }
    }

    fn next(self) -> Option<Self> {
        match self {
            Self::Processing => Some(Self::Analyzing),
            Self::Analyzing => Some(Self::Executing),
            Self::Executing => None,
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Self::Processing => "RemediationProcessing",
            Self::Analyzing => "AIAnalysis",
            Self::Executing => "WorkflowExecution",
        }
    }

    fn name_suffix(self) -> &'static str {
        match self {
            Self::Processing => "processing",
            Self::Analyzing => "analysis",
            Self::Executing => "workflow",
        }
    }

    pub(crate) fn child_ref(self, status: &RemediationRequestStatus) -> Option<&ChildRef> {
        match self {
            Self::Processing => status.remediation_processing_ref.as_ref(),
            Self::Analyzing => status.ai_analysis_ref.as_ref(),
            Self::Executing => status.workflow_execution_ref.as_ref(),
        }
    }

    fn child_ref_mut(self, status: &mut RemediationRequestStatus) -> &mut Option<ChildRef> {
        match self {
            Self::Processing => &mut status.remediation_processing_ref,
            Self::Analyzing => &mut status.ai_analysis_ref,
            Self::Executing => &mut status.workflow_execution_ref,
        }
    }

    fn build(self, meta: ObjectMeta, request_name: &str) -> ChildObject {
        let remediation_request_ref = RequestRef {
            name: request_name.to_owned(),
        };
        match self {
            Self::Processing => ChildObject::RemediationProcessing(RemediationProcessing {
                metadata: meta,
                spec: RemediationProcessingSpec {
                    remediation_request_ref,
                },
                status: None,
            }),
            Self::Analyzing => ChildObject::AIAnalysis(AIAnalysis {
                metadata: meta,
                spec: AIAnalysisSpec {
                    remediation_request_ref,
                },
                status: None,
            }),
            Self::Executing => ChildObject::WorkflowExecution(WorkflowExecution {
                metadata: meta,
                spec: WorkflowExecutionSpec {
                    remediation_request_ref,
                },
                status: None,
            }),
        }
    }
}

/// The parts of an observed child that orchestration and audit read.
pub(crate) struct ChildView<'a> {
    pub(crate) meta: &'a ObjectMeta,
    pub(crate) status: Option<&'a ChildStatus>,
}

impl ChildView<'_> {
    pub(crate) fn phase(&self) -> ChildPhase {
        self.status.and_then(|s| s.phase).unwrap_or_default()
    }

    pub(crate) fn error(&self) -> Option<&str> {
        self.status
            .and_then(|s| s.error_message.as_deref())
            .filter(|e| !e.is_empty())
    }

    pub(crate) fn name(&self) -> &str {
        self.meta.name.as_deref().unwrap_or_default()
    }

    pub(crate) fn created(&self) -> Option<DateTime<Utc>> {
        self.meta.creation_timestamp.as_ref().and_then(to_chrono)
    }
}

impl Children {
    pub(crate) fn view(&self, stage: Stage) -> Option<ChildView<'_>> {
        match stage {
            Stage::Processing => self.remediation_processing.as_ref().map(|c| ChildView {
                meta: &c.metadata,
                status: c.status.as_ref(),
            }),
            Stage::Analyzing => self.ai_analysis.as_ref().map(|c| ChildView {
                meta: &c.metadata,
                status: c.status.as_ref(),
            }),
            Stage::Executing => self.workflow_execution.as_ref().map(|c| ChildView {
                meta: &c.metadata,
                status: c.status.as_ref(),
            }),
        }
    }
}

/// The name the controller gives a request's child: `<request>-processing`,
/// `<request>-analysis` or `<request>-workflow`. Names that would pass the
/// 253-character limit are cut and given a short hash of the full request
/// name, so they stay unique and the same on every reconcile.
#[must_use]
pub fn child_name(request_name: &str, kind: ChildKind) -> String {
    let suffix = kind.stage().name_suffix();
    let plain = format!("{request_name}-{suffix}");
    if plain.len() <= MAX_NAME_LEN {
        return plain;
    }
    let hash = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, request_name.as_bytes()).simple();
    let hash = &hash.to_string()[..8];
    let keep = MAX_NAME_LEN - suffix.len() - hash.len() - 2;
    // Request names are ASCII (DNS subdomains); cut on a char boundary anyway.
    let mut cut = keep.min(request_name.len());
    while !request_name.is_char_boundary(cut) {
        cut -= 1;
    }
    let prefix = request_name[..cut].trim_end_matches(['-', '.']);
    format!("{prefix}-{hash}-{suffix}")
}

/// The three kinds of child.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChildKind {
    /// `RemediationProcessing`.
    RemediationProcessing,
    /// `AIAnalysis`.
    AIAnalysis,
    /// `WorkflowExecution`.
    WorkflowExecution,
}

impl ChildKind {
    fn stage(self) -> Stage {
        match self {
            Self::RemediationProcessing => Stage::Processing,
            Self::AIAnalysis => Stage::Analyzing,
            Self::WorkflowExecution => Stage::Executing,
        }
    }

    fn of(stage: Stage) -> Self {
        match stage {
            Stage::Processing => Self::RemediationProcessing,
            Stage::Analyzing => Self::AIAnalysis,
            Stage::Executing => Self::WorkflowExecution,
        }
    }
}

/// Decides the next status and actions of `request`, given its observed
/// `children` and the clock.
///
/// - `pending` (or no status): create the `RemediationProcessing` child, enter `processing`.
/// - `processing` / `analyzing` / `executing`: when the phase's child
///   completed, create the next child and enter the next phase (after
///   `executing`: `completed`); when it failed, enter `failed` with
///   `failedPhase` and the child's error; otherwise, when the overall
///   deadline (`startTime` plus the overall timeout) or the phase deadline
///   (`phaseStartTime` plus the phase timeout) is reached
///   (`now >= deadline`), enter `timeout` with `timeoutPhase` and
///   `timeoutTime`. A finished child wins over a deadline passed in the
///   same reconcile: the work did finish.
/// - `completed`, `failed`, `timeout`: final; the same status, no actions.
#[must_use]
pub fn decide(request: &RemediationRequest, children: &Children, now: DateTime<Utc>) -> Decision {
    let status = request.status.clone().unwrap_or_default();
    let phase = status.phase.unwrap_or_default();
    if phase.is_terminal() {
        return Decision {
            status,
            actions: Vec::new(),
            transition: None,
            requeue_after: None,
        };
    }
    let mut plan = Plan {
        request,
        children,
        now,
        status,
        actions: Vec::new(),
        transition: None,
    };
    match Stage::of(phase) {
        None => {
            plan.status.start_time.get_or_insert(now);
            plan.start(Stage::Processing);
        }
        Some(stage) => {
            if stage.child_ref(&plan.status).is_none() {
                // The ref was lost (or never written): recover it without a transition.
                plan.ensure_child(stage);
            }
            let observed = children.view(stage);
            match observed.as_ref().map(ChildView::phase) {
                Some(ChildPhase::Completed) => {
                    if let Some(next) = stage.next() {
                        plan.start(next);
                    } else {
                        plan.enter(RemediationPhase::Completed);
                        plan.status.completion_time = Some(now);
                    }
                }
                Some(ChildPhase::Failed) => {
                    // Bounded as the audit record's `failure_reason` is, so the
                    // status does not carry a child's error of any size either.
                    let reason = observed.as_ref().and_then(ChildView::error).map_or_else(
                        || {
                            let name = observed.as_ref().map(ChildView::name).unwrap_or_default();
                            format!("{} {name} failed without an error message", stage.kind())
                        },
                        crate::audit::failure_reason,
                    );
                    plan.enter(RemediationPhase::Failed);
                    plan.status.failed_phase = Some(stage.phase());
                    plan.status.error_message = Some(reason);
                    plan.status.completion_time = Some(now);
                }
                _ => plan.check_deadlines(stage),
            }
        }
    }
    plan.finish()
}

struct Plan<'a> {
    request: &'a RemediationRequest,
    children: &'a Children,
    now: DateTime<Utc>,
    status: RemediationRequestStatus,
    actions: Vec<Action>,
    transition: Option<Transition>,
}

impl Plan<'_> {
    /// Makes sure the stage's child exists (or is being created) and its ref is set.
    fn ensure_child(&mut self, stage: Stage) {
        if stage.child_ref(&self.status).is_some() {
            // Set only after a successful create: never create twice.
            return;
        }
        let name = if let Some(seen) = self.children.view(stage) {
            // Created by an earlier attempt whose status write was lost.
            seen.name().to_owned()
        } else {
            let name = child_name(self.request_name(), ChildKind::of(stage));
            let meta = ObjectMeta {
                name: Some(name.clone()),
                namespace: self.request.metadata.namespace.clone(),
                owner_references: Some(vec![owner_reference(self.request)]),
                ..ObjectMeta::default()
            };
            self.actions
                .push(Action::Create(stage.build(meta, self.request_name())));
            name
        };
        *stage.child_ref_mut(&mut self.status) = Some(ChildRef { name });
    }

    fn start(&mut self, stage: Stage) {
        self.ensure_child(stage);
        self.enter(stage.phase());
    }

    fn enter(&mut self, phase: RemediationPhase) {
        let sequence = self
            .status
            .last_transition
            .as_ref()
            .map_or(1, |t| t.sequence.saturating_add(1));
        let transition = Transition {
            phase,
            sequence,
            time: self.now,
        };
        self.status.phase = Some(phase);
        self.status.phase_start_time = Some(self.now);
        self.status.last_transition = Some(transition.clone());
        self.transition = Some(transition);
    }

    fn check_deadlines(&mut self, stage: Stage) {
        let phase = stage.phase();
        let timeouts = &self.request.spec.timeouts;
        let (overall_at, phase_at) = deadlines(self.request, &self.status, phase);
        let message = if overall_at.is_some_and(|at| self.now >= at) {
            format!(
                "the remediation exceeded its overall timeout of {}s during {phase}",
                timeouts.overall().as_secs()
            )
        } else if phase_at.is_some_and(|at| self.now >= at) {
            format!(
                "the {phase} phase exceeded its timeout of {}s",
                timeouts.for_phase(phase).unwrap_or_default().as_secs()
            )
        } else {
            return;
        };
        self.enter(RemediationPhase::Timeout);
        self.status.timeout_phase = Some(phase);
        self.status.timeout_time = Some(self.now);
        self.status.completion_time = Some(self.now);
        self.status.error_message = Some(message);
    }

    fn request_name(&self) -> &str {
        self.request.metadata.name.as_deref().unwrap_or_default()
    }

    fn finish(self) -> Decision {
        let phase = self.status.phase.unwrap_or_default();
        let requeue_after = if phase.is_terminal() {
            None
        } else {
            let (overall_at, phase_at) = deadlines(self.request, &self.status, phase);
            [overall_at, phase_at]
                .into_iter()
                .flatten()
                .min()
                .map(|at| (at - self.now).to_std().unwrap_or(Duration::ZERO))
        };
        Decision {
            status: self.status,
            actions: self.actions,
            transition: self.transition,
            requeue_after,
        }
    }
}

/// The overall and the phase deadline of `phase` under `status`; `None` when
/// there is none or it lies beyond the calendar.
fn deadlines(
    request: &RemediationRequest,
    status: &RemediationRequestStatus,
    phase: RemediationPhase,
) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let started = status.start_time.or_else(|| {
        request
            .metadata
            .creation_timestamp
            .as_ref()
            .and_then(to_chrono)
    });
    let phase_started = status.phase_start_time.or(started);
    let timeouts = &request.spec.timeouts;
    let plus = |from: Option<DateTime<Utc>>, after: Option<Duration>| {
        from?.checked_add_signed(TimeDelta::from_std(after?).ok()?)
    };
    (
        plus(started, Some(timeouts.overall())),
        plus(phase_started, timeouts.for_phase(phase)),
    )
}

/// The owner reference that ties a child to its request: the request is its
/// controller, and deleting the request deletes the child.
fn owner_reference(request: &RemediationRequest) -> OwnerReference {
    OwnerReference {
        api_version: RemediationRequest::api_version(&()).into_owned(),
        kind: RemediationRequest::kind(&()).into_owned(),
        name: request.metadata.name.clone().unwrap_or_default(),
        uid: request.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_names_follow_the_request_name() {
        assert_eq!(
            child_name("rr-1", ChildKind::RemediationProcessing),
            "rr-1-processing"
        );
        assert_eq!(child_name("rr-1", ChildKind::AIAnalysis), "rr-1-analysis");
        assert_eq!(
            child_name("rr-1", ChildKind::WorkflowExecution),
            "rr-1-workflow"
        );
    }

    #[test]
    fn long_request_names_give_valid_distinct_child_names() {
        let a = "a".repeat(253);
        let b = format!("{}b", "a".repeat(252));
        for kind in [
            ChildKind::RemediationProcessing,
            ChildKind::AIAnalysis,
            ChildKind::WorkflowExecution,
        ] {
            let na = child_name(&a, kind);
            let nb = child_name(&b, kind);
            assert!(na.len() <= MAX_NAME_LEN, "{na}");
            assert!(nb.len() <= MAX_NAME_LEN, "{nb}");
            assert_ne!(na, nb);
            assert_eq!(na, child_name(&a, kind), "stable");
        }
    }

    #[test]
    fn stages_follow_the_lifecycle() {
        let phases: Vec<_> = Stage::ALL.iter().map(|s| s.phase()).collect();
        assert_eq!(
            phases,
            [
                RemediationPhase::Processing,
                RemediationPhase::Analyzing,
                RemediationPhase::Executing
            ]
        );
        for w in Stage::ALL.windows(2) {
            assert_eq!(w[0].next(), Some(w[1]));
        }
        assert_eq!(Stage::Executing.next(), None);
    }
}
