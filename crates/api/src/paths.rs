//! Route paths of the API. Paths with an `{id}` segment have a function that
//! fills it in.

/// Ingest one record (`POST`) or list remediations (`GET`).
pub const AUDIT: &str = "/api/v1/audit/remediation-orchestration";
/// Ingest a batch of records (`POST`).
pub const AUDIT_BATCH: &str = "/api/v1/audit/remediation-orchestration/batch";
/// One remediation and its timeline (`GET`), or its soft deletion (`DELETE`).
pub const AUDIT_ITEM: &str = "/api/v1/audit/remediation-orchestration/{id}";
/// A remediation's legal hold: set (`PUT`) or cleared (`DELETE`).
pub const AUDIT_LEGAL_HOLD: &str = "/api/v1/audit/remediation-orchestration/{id}/legal-hold";
/// Every remediation of one alert (`GET`).
pub const ANALYTICS_POSTMORTEM: &str = "/api/v1/audit/analytics/postmortem";
/// Outcomes and success rate (`GET`).
pub const ANALYTICS_SUCCESS_RATE: &str = "/api/v1/audit/analytics/success-rate";
/// Duration percentiles by final phase (`GET`).
pub const ANALYTICS_DURATIONS: &str = "/api/v1/audit/analytics/durations";
/// The longest remediations (`GET`).
pub const ANALYTICS_SLOWEST: &str = "/api/v1/audit/analytics/slowest";
/// Failures by phase (`GET`).
pub const ANALYTICS_FAILURES: &str = "/api/v1/audit/analytics/failures";
/// Alerts remediated more than once (`GET`).
pub const ANALYTICS_RETRIES: &str = "/api/v1/audit/analytics/retries";
/// One read-only SQL statement over the archive (`POST`).
pub const ARCHIVE_SQL: &str = "/api/v1/archive/sql";
/// The append-only log of admin actions (`GET`).
pub const ADMIN_LOG: &str = "/api/v1/admin/log";
/// Checks the hash chains of a time range (`GET`).
pub const ADMIN_VERIFY: &str = "/api/v1/admin/verify";
/// The caller's subject and roles (`GET`).
pub const WHOAMI: &str = "/api/v1/whoami";
/// Liveness (`GET`).
pub const HEALTHZ: &str = "/healthz";
/// Readiness (`GET`).
pub const READYZ: &str = "/readyz";
/// Prometheus metrics (`GET`).
pub const METRICS: &str = "/metrics";
/// This API's OpenAPI document (`GET`).
pub const OPENAPI: &str = "/api/v1/openapi.json";

/// [`AUDIT_ITEM`] for one remediation.
#[must_use]
pub fn audit_item(id: i64) -> String {
    AUDIT_ITEM.replace("{id}", &id.to_string())
}

/// [`AUDIT_LEGAL_HOLD`] for one remediation.
#[must_use]
pub fn audit_legal_hold(id: i64) -> String {
    AUDIT_LEGAL_HOLD.replace("{id}", &id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_fill_their_segment() {
        assert_eq!(audit_item(42), "/api/v1/audit/remediation-orchestration/42");
        assert_eq!(
            audit_legal_hold(-1),
            "/api/v1/audit/remediation-orchestration/-1/legal-hold"
        );
    }

    #[test]
    fn every_path_is_under_its_prefix() {
        for path in [AUDIT_BATCH, AUDIT_ITEM, AUDIT_LEGAL_HOLD] {
            assert!(path.starts_with(AUDIT), "{path}");
        }
    }
}
