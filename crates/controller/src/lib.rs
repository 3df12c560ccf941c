//! The remediation orchestrator: its custom resources, the phase state
//! machine (`decide`), the audit record of each phase transition, the
//! reconcile loop and leader election that carry it out against the API
//! server, and a simulation that drives it without one.
//!
//! `decide` and `audit_record` are pure; [`reconcile`] feeds `decide` what it
//! observes and carries out what it returns.

mod audit;
mod crd;
mod error;
pub mod leader;
mod orchestrate;
pub mod reconcile;
pub mod simulation;
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
