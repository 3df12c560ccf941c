//! Wire and domain types of remaudit: the orchestration audit record, its
//! validation, phase ranking and event identity. No IO lives here.

pub mod admin;
pub mod analytics;
mod approx;
mod audit;
pub mod chain;
pub mod histogram;
pub mod json_text;
mod phase;
mod rfc3339;
#[cfg(feature = "sqlx")]
pub mod row;
mod validate;

pub use approx::{ApproxF64, approx_f64};
pub use audit::{
    CrdStatusSnapshot, EventRecord, NewAudit, RemediationOrchestrationAudit, ServiceCrdStatuses,
    StoredAudit, derive_event_id,
};
pub use phase::{
    PHASE_RANKS, Phase, PhaseRank, TERMINAL_PHASES, UNKNOWN_PHASE_RANK, rank_sql, supersedes,
    supersedes_sql,
};
pub use validate::{FieldError, Limits, ValidationErrors};

/// Namespace used when a record does not name one.
pub const DEFAULT_NAMESPACE: &str = "default";
