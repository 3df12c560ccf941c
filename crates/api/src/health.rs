//! Liveness and readiness answers.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How the service is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// The process is up (liveness).
    Ok,
    /// The database answers and its schema is current (readiness).
    Ready,
}

/// The answer of the health endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` (liveness) or `ready` (readiness).
    pub status: HealthStatus,
    /// `postgres` or `sqlite` (readiness only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Whether stored events are signed and chained (readiness only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<crate::chain::ChainMode>,
}
