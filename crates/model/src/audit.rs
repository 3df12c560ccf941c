//! The orchestration audit record, as the orchestrator sends it and as the
//! store hands it back.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::phase::{Phase, PhaseRank};

/// One phase transition of a `RemediationRequest`, in the JSON shape that the
/// orchestrator's Go `RemediationOrchestrationAudit` marshals, plus optional
/// extensions (`event_id`, `namespace`, `event_time`,
/// `kubernetes_execution_name`, `alert_processing_name`).
///
/// Server-owned fields (`id`, `created_at`, `updated_at`,
/// `retention_expiry_time`, `deleted_at`) are accepted and ignored.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct RemediationOrchestrationAudit {
    /// Ignored: the server assigns ids.
    #[serde(default, skip_serializing)]
    #[schema(value_type = Option<i64>)]
    pub id: Option<IgnoredAny>,
    /// The alert's fingerprint (at most 64 characters).
    pub alert_fingerprint: String,
    /// The `RemediationRequest`'s name (at most 255 characters).
    pub remediation_name: String,
    /// The phase the remediation entered (lower-case, at most 50 characters).
    pub overall_phase: String,
    /// When the remediation started (its creation time).
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    pub start_time: DateTime<Utc>,
    /// When the remediation ended, for terminal phases.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::rfc3339::serialize_option"
    )]
    pub completion_time: Option<DateTime<Utc>>,
    /// Name of the `RemediationProcessing` child.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediation_processing_name: Option<String>,
    /// Alias of `remediation_processing_name`, the name the design's table uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_processing_name: Option<String>,
    /// Name of the `AIAnalysis` child.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai_analysis_name: Option<String>,
    /// Name of the `WorkflowExecution` child.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_execution_name: Option<String>,
    /// Name of the Kubernetes execution, when one ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_execution_name: Option<String>,
    /// Snapshot of the children's statuses (a JSON object, see [`ServiceCrdStatuses`]).
    // Kept as its text: validation refuses it by size before any value is
    // built from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<ServiceCrdStatuses>)]
    pub service_crd_statuses: Option<Box<serde_json::value::RawValue>>,
    /// The phase that timed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_phase: Option<String>,
    /// When the timeout fired.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::rfc3339::serialize_option"
    )]
    pub timeout_time: Option<DateTime<Utc>>,
    /// The phase that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_phase: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// How many duplicate alerts joined this remediation.
    #[serde(default)]
    pub duplicate_count: i64,
    /// When the last duplicate alert arrived.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::rfc3339::serialize_option"
    )]
    pub last_duplicate_time: Option<DateTime<Utc>>,
    /// Ignored: the server computes retention.
    #[serde(default, skip_serializing)]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub retention_expiry_time: Option<IgnoredAny>,
    /// Ignored: soft deletion is an operation of the server.
    #[serde(default, skip_serializing)]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub deleted_at: Option<IgnoredAny>,
    /// Ignored: set by the server.
    #[serde(default, skip_serializing)]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub created_at: Option<IgnoredAny>,
    /// Ignored: set by the server.
    #[serde(default, skip_serializing)]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub updated_at: Option<IgnoredAny>,
    /// Idempotency key; when absent, one is derived from the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<Uuid>,
    /// The request's namespace (default `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// When the transition happened (default: when the server received it).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::rfc3339::serialize_option"
    )]
    pub event_time: Option<DateTime<Utc>>,
}

/// The children's status snapshots, keyed as the orchestrator keys them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ServiceCrdStatuses {
    /// The `RemediationProcessing` child.
    #[serde(
        rename = "remediationProcessing",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub remediation_processing: Option<CrdStatusSnapshot>,
    /// The `AIAnalysis` child.
    #[serde(
        rename = "aiAnalysis",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ai_analysis: Option<CrdStatusSnapshot>,
    /// The `WorkflowExecution` child.
    #[serde(
        rename = "workflowExecution",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub workflow_execution: Option<CrdStatusSnapshot>,
}

/// One child's status at the time of the transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CrdStatusSnapshot {
    /// The child's phase.
    pub phase: String,
    /// When the child was created.
    #[serde(rename = "startTime")]
    pub start_time: DateTime<Utc>,
    /// When the child finished.
    #[serde(
        rename = "completionTime",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub completion_time: Option<DateTime<Utc>>,
    /// Whether the child completed successfully.
    pub success: bool,
    /// The child's error, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A validated record, normalised and ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAudit {
    /// The idempotency key, given or derived.
    pub event_id: Uuid,
    /// The request's namespace.
    pub namespace: String,
    /// The alert's fingerprint.
    pub alert_fingerprint: String,
    /// The request's name.
    pub remediation_name: String,
    /// The phase entered.
    pub overall_phase: String,
    /// The rank of `overall_phase`.
    pub phase_rank: PhaseRank,
    /// When the remediation started.
    pub start_time: DateTime<Utc>,
    /// When it ended.
    pub completion_time: Option<DateTime<Utc>>,
    /// `RemediationProcessing` child name.
    pub remediation_processing_name: Option<String>,
    /// `AIAnalysis` child name.
    pub ai_analysis_name: Option<String>,
    /// `WorkflowExecution` child name.
    pub workflow_execution_name: Option<String>,
    /// Kubernetes execution name.
    pub kubernetes_execution_name: Option<String>,
    /// Children's status snapshot: a JSON object, serialised with its keys
    /// in sorted order.
    pub service_crd_statuses: Option<String>,
    /// The phase that timed out.
    pub timeout_phase: Option<String>,
    /// When it timed out.
    pub timeout_time: Option<DateTime<Utc>>,
    /// The phase that failed.
    pub failure_phase: Option<String>,
    /// Why it failed.
    pub failure_reason: Option<String>,
    /// Duplicate alerts seen.
    pub duplicate_count: i32,
    /// When the last duplicate arrived.
    pub last_duplicate_time: Option<DateTime<Utc>>,
    /// When the transition happened.
    pub event_time: DateTime<Utc>,
    /// The record, serialised (JSON text) in its normalised form: known
    /// fields only, keys in sorted order, see
    /// [`RemediationOrchestrationAudit::validate`]; kept in the timeline.
    /// Text rather than a value tree, so that a batch waiting for the
    /// database holds a few bytes per byte of record, not tens.
    pub raw: String,
    /// SHA-256 of `raw`: what "the same content" means when a record reuses
    /// a stored `(event_id, start_time)`. Taken before any server default
    /// (such as `event_time`) is applied, so a replay of a record that left
    /// a field out hashes as the first delivery did.
    pub content_hash: [u8; 32],
}

impl NewAudit {
    /// Whether this record's phase is terminal.
    #[must_use]
    pub fn is_terminal(&self) -> bool {
        Phase::parse(&self.overall_phase).is_terminal()
    }

    /// The stored record ([`Self::raw`]) as a JSON value.
    ///
    /// # Panics
    /// Never for a record built by `validate`, whose `raw` is JSON text.
    #[must_use]
    pub fn record(&self) -> serde_json::Value {
        serde_json::from_str(&self.raw).expect("raw is JSON text")
    }

    /// The status snapshot ([`Self::service_crd_statuses`]) as a JSON value.
    ///
    /// # Panics
    /// Never for a record built by `validate`, whose snapshot is JSON text.
    #[must_use]
    pub fn statuses(&self) -> Option<serde_json::Value> {
        self.service_crd_statuses
            .as_deref()
            .map(|text| serde_json::from_str(text).expect("statuses are JSON text"))
    }

    /// `completion_time - start_time` in microseconds, when the record has a completion time.
    #[must_use]
    pub fn duration_micros(&self) -> Option<i64> {
        self.completion_time
            .and_then(|end| (end - self.start_time).num_microseconds())
    }
}

/// Namespace of the v5 UUIDs derived for records that carry no `event_id`.
const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2a8e_53d4_4b7a_9e0f_2c41_d8a7_35b9);

/// Derives the idempotency key of a record that carries none: the same
/// remediation entering the same phase (at the same event time, when one is
/// given) always gets the same id, so a replay is stored once.
#[must_use]
pub fn derive_event_id(
    namespace: &str,
    remediation_name: &str,
    start_time: DateTime<Utc>,
    overall_phase: &str,
    event_time: Option<DateTime<Utc>>,
) -> Uuid {
    let mut name = format!(
        "{namespace}\n{remediation_name}\n{}\n{overall_phase}",
        start_time.to_rfc3339_opts(SecondsFormat::Nanos, true)
    );
    if let Some(at) = event_time {
        name.push('\n');
        name.push_str(&at.to_rfc3339_opts(SecondsFormat::Nanos, true));
    }
    Uuid::new_v5(&EVENT_ID_NAMESPACE, name.as_bytes())
}

/// A remediation's summary row, as the read endpoints answer it. Field names
/// follow the design's Go type, so its client can decode it.
// Column names follow them too: with the `sqlx` feature, both stores decode
// the row straight into this type. (A plain comment: doc comments land in
// the OpenAPI document.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct StoredAudit {
    /// Row id.
    pub id: i64,
    /// The request's namespace.
    pub namespace: String,
    /// The alert's fingerprint.
    pub alert_fingerprint: String,
    /// The request's name.
    pub remediation_name: String,
    /// The current (highest-ranked) phase.
    pub overall_phase: String,
    /// When the remediation started.
    pub start_time: DateTime<Utc>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<DateTime<Utc>>,
    /// `RemediationProcessing` child name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediation_processing_name: Option<String>,
    /// `AIAnalysis` child name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai_analysis_name: Option<String>,
    /// `WorkflowExecution` child name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_execution_name: Option<String>,
    /// Kubernetes execution name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_execution_name: Option<String>,
    /// Children's status snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<ServiceCrdStatuses>)]
    pub service_crd_statuses: Option<serde_json::Value>,
    /// The phase that timed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_phase: Option<String>,
    /// When it timed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_time: Option<DateTime<Utc>>,
    /// The phase that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_phase: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// Duplicate alerts seen.
    pub duplicate_count: i32,
    /// When the last duplicate arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_duplicate_time: Option<DateTime<Utc>>,
    /// When retention may archive the row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_expiry_time: Option<DateTime<Utc>>,
    /// Whether a legal hold keeps the row from retention.
    #[serde(default)]
    pub legal_hold: bool,
    /// The event that set the current state.
    #[cfg_attr(feature = "sqlx", sqlx(try_from = "crate::row::UuidColumn"))]
    pub event_id: Uuid,
    /// When that event happened.
    pub event_time: DateTime<Utc>,
    /// When the row was first written.
    pub created_at: DateTime<Utc>,
    /// When the row last changed.
    pub updated_at: DateTime<Utc>,
}

/// One accepted transition in a remediation's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventRecord {
    /// The idempotency key.
    pub event_id: Uuid,
    /// The phase entered.
    pub overall_phase: String,
    /// When the transition happened.
    pub event_time: DateTime<Utc>,
    /// When the server stored it.
    pub received_at: DateTime<Utc>,
    /// The record as received.
    #[schema(value_type = Object)]
    pub record: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known answers: ids already derived (and spooled, and stored) by
    /// earlier versions must come out the same after any change here, or
    /// replays across an upgrade would be stored twice.
    #[test]
    fn derived_event_ids_match_known_answers() {
        let start: DateTime<Utc> = "2026-11-26T11:00:00Z".parse().expect("valid time");
        let at: DateTime<Utc> = "2026-11-26T11:04:05.123456Z".parse().expect("valid time");
        assert_eq!(
            derive_event_id("prod", "rr-known", start, "processing", None).to_string(),
            "ec1735a0-9afa-5f3b-ae7b-81cecb9f63e8"
        );
        assert_eq!(
            derive_event_id("prod", "rr-known", start, "completed", Some(at)).to_string(),
            "9e6fef34-334a-53fd-ac37-920a168a900c"
        );
    }
}
