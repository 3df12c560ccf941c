//! Limits and timeouts of the HTTP service.

use std::time::Duration;

use remaudit_model::Limits;

/// How the service bounds what it accepts.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Most records in one batch.
    pub max_batch_records: usize,
    /// Longest a request may take before it is answered 503.
    pub request_timeout: Duration,
    /// What `Retry-After` tells clients when the database is unavailable.
    pub retry_after: Duration,
    /// Bounds on record fields.
    pub limits: Limits,
    /// Most timeline events one remediation may have; records past it are refused (422, rule `max_events`).
    pub max_events_per_remediation: u32,
    /// When set, a record that would start a new live remediation older than
    /// this is refused (422, rule `retention`): retention would archive it at
    /// once. `remaudit serve` sets it to the retention age.
    pub refuse_new_older_than: Option<chrono::TimeDelta>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 * 1024 * 1024,
            max_batch_records: 1000,
            request_timeout: Duration::from_secs(30),
            retry_after: Duration::from_secs(5),
            limits: Limits::default(),
            max_events_per_remediation: remaudit_store::DEFAULT_MAX_EVENTS_PER_REMEDIATION,
            refuse_new_older_than: None,
        }
    }
}
