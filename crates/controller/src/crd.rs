//! The four custom resources of the orchestrator: the `RemediationRequest` it
//! drives and the three children it creates, one per phase.
//!
//! Timeouts are whole seconds (`timeouts.processingSeconds`, ...), not Go
//! duration strings: the API server's schema then rejects a bad value when the
//! request is applied, instead of the controller finding it mid-remediation,
//! and no duration parser is needed on either side.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::CrdError;

/// Default `processing` phase timeout: 5 minutes.
pub const DEFAULT_PROCESSING_TIMEOUT: Duration = Duration::from_mins(5);
/// Default `analyzing` phase timeout: 10 minutes.
pub const DEFAULT_ANALYZING_TIMEOUT: Duration = Duration::from_mins(10);
/// Default `executing` phase timeout: 30 minutes.
pub const DEFAULT_EXECUTING_TIMEOUT: Duration = Duration::from_mins(30);
/// Default overall timeout of a remediation: 1 hour.
pub const DEFAULT_OVERALL_TIMEOUT: Duration = Duration::from_hours(1);

/// What a `RemediationRequest` asks for: remediate the resource an alert fired on.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "remediation.kubernaut.io",
    version = "v1alpha1",
    kind = "RemediationRequest",
    plural = "remediationrequests",
    shortname = "rr",
    category = "kubernaut",
    namespaced,
    status = "RemediationRequestStatus",
    derive = "PartialEq",
    doc = "A remediation of one alert, driven through processing, analysis and execution by the orchestrator.",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Severity","type":"string","jsonPath":".spec.severity"}"#,
    printcolumn = r#"{"name":"Target Kind","type":"string","jsonPath":".spec.targetResource.kind"}"#,
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.targetResource.name"}"#,
    printcolumn = r#"{"name":"Signal","type":"string","jsonPath":".spec.signalName","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RemediationRequestSpec {
    /// Fingerprint of the alert (signal) that started this remediation.
    #[schemars(length(min = 1, max = 64))]
    pub signal_fingerprint: String,
    /// Name of the alert, e.g. `HighMemoryUsage`.
    pub signal_name: String,
    /// Severity of the alert, e.g. `critical`.
    pub severity: String,
    /// The Kubernetes object to remediate.
    pub target_resource: TargetResource,
    /// Per-phase and overall timeouts, in seconds; absent values take the defaults.
    #[serde(default)]
    pub timeouts: Timeouts,
}

/// The Kubernetes object a remediation acts on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetResource {
    /// Its kind, e.g. `Deployment`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its namespace; absent for cluster-scoped kinds such as `Node`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Timeouts in whole seconds. A phase times out when it has run this long;
/// the overall timeout counts from `status.startTime`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    /// Longest time in `processing`, in seconds (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub processing_seconds: Option<u32>,
    /// Longest time in `analyzing`, in seconds (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub analyzing_seconds: Option<u32>,
    /// Longest time in `executing`, in seconds (default 1800).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub executing_seconds: Option<u32>,
    /// Longest time for the whole remediation, in seconds (default 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub overall_seconds: Option<u32>,
}

impl Timeouts {
    /// The timeout of an in-flight phase; `None` for `pending` and terminal phases.
    #[must_use]
    pub fn for_phase(&self, phase: RemediationPhase) -> Option<Duration> {
        let (given, default) = match phase {
            RemediationPhase::Processing => (self.processing_seconds, DEFAULT_PROCESSING_TIMEOUT),
            RemediationPhase::Analyzing => (self.analyzing_seconds, DEFAULT_ANALYZING_TIMEOUT),
            RemediationPhase::Executing => (self.executing_seconds, DEFAULT_EXECUTING_TIMEOUT),
            _ => return None,
        };
        Some(given.map_or(default, |s| Duration::from_secs(u64::from(s))))
    }

    /// The overall timeout of the remediation.
    #[must_use]
    pub fn overall(&self) -> Duration {
        self.overall_seconds.map_or(DEFAULT_OVERALL_TIMEOUT, |s| {
            Duration::from_secs(u64::from(s))
        })
    }
}

/// The phase of a `RemediationRequest`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RemediationPhase {
    /// Created; nothing started yet.
    #[default]
    Pending,
    /// The `RemediationProcessing` child runs.
    Processing,
    /// The `AIAnalysis` child runs.
    Analyzing,
    /// The `WorkflowExecution` child runs.
    Executing,
    /// Every child completed (terminal).
    Completed,
    /// A child failed (terminal).
    Failed,
    /// A phase or the whole remediation ran out of time (terminal).
    Timeout,
}

impl RemediationPhase {
    /// Every phase, in lifecycle order.
    pub const ALL: [Self; 7] = [
        Self::Pending,
        Self::Processing,
        Self::Analyzing,
        Self::Executing,
        Self::Completed,
        Self::Failed,
        Self::Timeout,
    ];

    /// The phase as it appears on the wire and in audit records.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Analyzing => "analyzing",
            Self::Executing => "executing",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Timeout => "timeout",
        }
    }

    /// Whether the remediation never changes after this phase.
    #[must_use]
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Timeout)
    }
}

impl fmt::Display for RemediationPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reference to a child object, by name, in the request's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct ChildRef {
    /// The child's name.
    pub name: String,
}

/// One phase change of a `RemediationRequest`: which phase it entered, its
/// place in the request's sequence of changes (1 for the first) and when.
///
/// `(phase, sequence)` together with the request's uid names the transition
/// for good; its audit record's `event_id` is derived from them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct Transition {
    /// The phase entered.
    pub phase: RemediationPhase,
    /// 1 for the request's first transition, then one more for each.
    pub sequence: u32,
    /// When the controller decided it.
    pub time: DateTime<Utc>,
}

/// What the orchestrator has observed and done for a `RemediationRequest`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemediationRequestStatus {
    /// The current phase; absent means `pending`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RemediationPhase>,
    /// The `RemediationProcessing` child, once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediation_processing_ref: Option<ChildRef>,
    /// The `AIAnalysis` child, once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai_analysis_ref: Option<ChildRef>,
    /// The `WorkflowExecution` child, once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_execution_ref: Option<ChildRef>,
    /// When the orchestrator started the remediation; the overall timeout counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<DateTime<Utc>>,
    /// When the current phase began; its phase timeout counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_start_time: Option<DateTime<Utc>>,
    /// When the remediation reached a terminal phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<DateTime<Utc>>,
    /// The phase whose child failed, when the phase is `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_phase: Option<RemediationPhase>,
    /// Why the remediation failed or timed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// The phase that ran out of time, when the phase is `timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_phase: Option<RemediationPhase>,
    /// When the timeout was detected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_time: Option<DateTime<Utc>>,
    /// How many duplicate alerts joined this remediation (kept by whoever
    /// deduplicates alerts; the orchestrator only carries it over).
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub duplicate_count: i64,
    /// When the last duplicate alert arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_duplicate_time: Option<DateTime<Utc>>,
    /// The latest phase change the controller made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition: Option<Transition>,
    /// The latest phase change handed to the audit publisher. When it differs
    /// from `lastTransition`, the controller stopped between writing the
    /// status and publishing, and the transition is published again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_audited_transition: Option<Transition>,
}

/// A child's pointer back at the `RemediationRequest` it works for.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct RequestRef {
    /// The request's name (same namespace).
    pub name: String,
}

/// The phase of a child object.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChildPhase {
    /// Created, not started.
    #[default]
    Pending,
    /// Working.
    Running,
    /// Finished successfully.
    Completed,
    /// Finished with an error.
    Failed,
}

impl ChildPhase {
    /// The phase as it appears on the wire and in audit snapshots.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }
}

/// The status every child reports (written by the service that runs it).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChildStatus {
    /// The child's phase; absent means `pending`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ChildPhase>,
    /// When the child finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    /// Why the child failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

/// Spec of a `RemediationProcessing`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "remediationprocessing.kubernaut.io",
    version = "v1alpha1",
    kind = "RemediationProcessing",
    plural = "remediationprocessings",
    shortname = "rp",
    category = "kubernaut",
    namespaced,
    status = "ChildStatus",
    derive = "PartialEq",
    doc = "Signal processing (enrichment and classification) for one RemediationRequest.",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Request","type":"string","jsonPath":".spec.remediationRequestRef.name"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RemediationProcessingSpec {
    /// The request this child works for.
    pub remediation_request_ref: RequestRef,
}

/// Spec of an `AIAnalysis`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "aianalysis.kubernaut.io",
    version = "v1alpha1",
    kind = "AIAnalysis",
    plural = "aianalyses",
    shortname = "aia",
    category = "kubernaut",
    namespaced,
    status = "ChildStatus",
    derive = "PartialEq",
    doc = "AI analysis (root cause and recommended workflow) for one RemediationRequest.",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Request","type":"string","jsonPath":".spec.remediationRequestRef.name"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AIAnalysisSpec {
    /// The request this child works for.
    pub remediation_request_ref: RequestRef,
}

/// Spec of a `WorkflowExecution`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "workflowexecution.kubernaut.io",
    version = "v1alpha1",
    kind = "WorkflowExecution",
    plural = "workflowexecutions",
    shortname = "we",
    category = "kubernaut",
    namespaced,
    status = "ChildStatus",
    derive = "PartialEq",
    doc = "Execution of the remediation workflow for one RemediationRequest.",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Request","type":"string","jsonPath":".spec.remediationRequestRef.name"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowExecutionSpec {
    /// The request this child works for.
    pub remediation_request_ref: RequestRef,
}

/// The four custom resource definitions: the request first, then its children
/// in the order the orchestrator creates them.
#[must_use]
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        RemediationRequest::crd(),
        RemediationProcessing::crd(),
        AIAnalysis::crd(),
        WorkflowExecution::crd(),
    ]
}

/// The four custom resource definitions as one multi-document YAML stream.
///
/// # Errors
/// When a definition cannot be serialised (it always can; see [`crds_yaml`]).
pub fn try_crds_yaml() -> Result<String, CrdError> {
    let mut out = String::new();
    for (i, crd) in crds().iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&serde_norway::to_string(crd)?);
    }
    Ok(out)
}

/// The four custom resource definitions as one multi-document YAML stream, ready
/// for `kubectl apply -f -`.
///
/// YAML is written by `serde_norway`, the maintained fork of the unmaintained
/// `serde_yaml`.
///
/// # Panics
/// Never in practice: a `CustomResourceDefinition` has only string map keys
/// and plain data, which YAML can always represent.
#[must_use]
pub fn crds_yaml() -> String {
    try_crds_yaml().expect("a CustomResourceDefinition always serialises to YAML")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_default_when_absent_and_follow_the_spec_when_given() {
        let none = Timeouts::default();
        assert_eq!(
            none.for_phase(RemediationPhase::Processing),
            Some(DEFAULT_PROCESSING_TIMEOUT)
        );
        assert_eq!(
            none.for_phase(RemediationPhase::Analyzing),
            Some(DEFAULT_ANALYZING_TIMEOUT)
        );
        assert_eq!(
            none.for_phase(RemediationPhase::Executing),
            Some(DEFAULT_EXECUTING_TIMEOUT)
        );
        assert_eq!(none.overall(), DEFAULT_OVERALL_TIMEOUT);

        let given = Timeouts {
            processing_seconds: Some(1),
            analyzing_seconds: Some(2),
            executing_seconds: Some(3),
            overall_seconds: Some(4),
        };
        assert_eq!(
            given.for_phase(RemediationPhase::Processing),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            given.for_phase(RemediationPhase::Analyzing),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            given.for_phase(RemediationPhase::Executing),
            Some(Duration::from_secs(3))
        );
        assert_eq!(given.overall(), Duration::from_secs(4));
    }

    #[test]
    fn pending_and_terminal_phases_have_no_phase_timeout() {
        for phase in RemediationPhase::ALL {
            let in_flight = matches!(
                phase,
                RemediationPhase::Processing
                    | RemediationPhase::Analyzing
                    | RemediationPhase::Executing
            );
            assert_eq!(
                Timeouts::default().for_phase(phase).is_some(),
                in_flight,
                "{phase}"
            );
        }
    }

    #[test]
    fn phase_names_match_the_wire_and_the_model() {
        for phase in RemediationPhase::ALL {
            let json = serde_json::to_value(phase).expect("serialises");
            assert_eq!(json, serde_json::Value::from(phase.as_str()));
            assert_eq!(
                remaudit_model::Phase::parse(phase.as_str()).is_terminal(),
                phase.is_terminal(),
                "{phase}"
            );
        }
    }

    #[test]
    fn timeouts_are_read_from_camel_case_seconds() {
        let t: Timeouts =
            serde_json::from_str(r#"{"processingSeconds": 30, "overallSeconds": 90}"#)
                .expect("valid");
        assert_eq!(t.processing_seconds, Some(30));
        assert_eq!(t.overall_seconds, Some(90));
        assert_eq!(t.analyzing_seconds, None);
    }
}
