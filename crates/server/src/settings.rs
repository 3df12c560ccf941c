//! Limits and timeouts of the HTTP service. The serde names are the keys of
//! the `[server]` table of `remaudit serve`'s settings file; the settings a
//! file does not set (`retry_after`, `limits`, `refuse_new_older_than`) are
//! skipped.

use std::time::Duration;

use remaudit_model::Limits;
use serde::{Deserialize, Serialize};

/// How the service bounds what it accepts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Most records in one batch.
    pub max_batch_records: usize,
    /// Longest a request may take before it is answered 503.
    #[serde(rename = "request_timeout_secs", with = "secs")]
    pub request_timeout: Duration,
    /// What `Retry-After` tells clients when the database is unavailable or
    /// the service is at its request limit.
    #[serde(skip)]
    pub retry_after: Duration,
    /// Bounds on record fields.
    #[serde(skip)]
    pub limits: Limits,
    // Connection and request limits: what one client, or many, may hold.
    /// Longest a client may take to send a request's headers; an idle
    /// keep-alive connection is closed after the same time (HTTP/1).
    #[serde(rename = "header_read_timeout_secs", with = "secs")]
    pub header_read_timeout: Duration,
    /// Longest a transfer may stall: a pause in a request body (answered 408),
    /// or a client not reading the answer (the connection is closed).
    #[serde(rename = "idle_timeout_secs", with = "secs")]
    pub idle_timeout: Duration,
    /// Most open connections; further ones wait in the listen backlog until
    /// one closes.
    pub max_connections: usize,
    /// Most requests handled at once; further ones are answered 503 with
    /// `Retry-After` (`/healthz` and `/metrics` are not counted).
    pub max_concurrent_requests: usize,
    /// After shutdown begins, how long requests in flight may take before
    /// their connections are dropped.
    #[serde(rename = "shutdown_grace_secs", with = "secs")]
    pub shutdown_grace: Duration,
    /// Most single-record POSTs that share one transaction and one commit
    /// (those that arrive while the writers are busy); 1 gives each its own.
    pub single_post_batch_records: usize,
    /// Most timeline events one remediation may have; records past it are refused (422, rule `max_events`).
    pub max_events_per_remediation: u32,
    /// When set, a record that would start a new live remediation older than
    /// this is refused (422, rule `retention`): retention would archive it at
    /// once. `remaudit serve` sets it to the retention age.
    #[serde(skip)]
    pub refuse_new_older_than: Option<chrono::TimeDelta>,
    /// The chain keys stored events are signed with (`--chain-key-file`);
    /// `None` runs unchained.
    #[serde(skip)]
    pub chain: Option<std::sync::Arc<remaudit_model::chain::KeyRing>>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 * 1024 * 1024,
            max_batch_records: 1000,
            request_timeout: Duration::from_secs(30),
            retry_after: Duration::from_secs(5),
            limits: Limits::default(),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_concurrent_requests: 64,
            shutdown_grace: Duration::from_secs(10),
            single_post_batch_records: 64,
            max_events_per_remediation: remaudit_store::DEFAULT_MAX_EVENTS_PER_REMEDIATION,
            refuse_new_older_than: None,
            chain: None,
        }
    }
}

/// A [`Duration`] as a whole number of seconds, the unit of the `*_secs` keys.
mod secs {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}
