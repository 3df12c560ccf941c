//! The remediation orchestrator's pure parts: its custom resources, the phase
//! state machine (`decide`) and the audit record of each phase transition.
//!
//! Nothing here talks to the API server; the reconcile loop built on top
//! feeds `decide` what it observes and carries out what it returns.

mod audit;
mod crd;
mod error;
mod orchestrate;
mod time;

pub use audit::{audit_record, mark_audited, transition_event_id, unaudited_transition};
pub use crd::{
    AIAnalysis, AIAnalysisSpec, ChildPhase, ChildRef, ChildStatus, DEFAULT_ANALYZING_TIMEOUT,
    DEFAULT_EXECUTING_TIMEOUT, DEFAULT_OVERALL_TIMEOUT, DEFAULT_PROCESSING_TIMEOUT,
    RemediationPhase, RemediationProcessing, RemediationProcessingSpec, RemediationRequest,
    RemediationRequestSpec, RemediationRequestStatus, RequestRef, TargetResource, Timeouts,
    Transition, WorkflowExecution, WorkflowExecutionSpec, crds, crds_yaml, try_crds_yaml,
};
pub use error::CrdError;
pub use orchestrate::{Action, ChildKind, ChildObject, Children, Decision, child_name, decide};
