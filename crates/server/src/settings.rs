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
    /// What `Retry-After` tells clients when the database is unavailable or
    /// the service is at its request limit.
    pub retry_after: Duration,
    /// Bounds on record fields.
    pub limits: Limits,
    // Connection and request limits: what one client, or many, may hold.
    /// Longest a client may take to send a request's headers; an idle
    /// keep-alive connection is closed after the same time (HTTP/1).
    pub header_read_timeout: Duration,
    /// Longest a transfer may stall: a pause in a request body (answered 408),
    /// or a client not reading the answer (the connection is closed).
    pub idle_timeout: Duration,
    /// Most open connections; further ones wait in the listen backlog until
    /// one closes.
    pub max_connections: usize,
    /// Most requests handled at once; further ones are answered 503 with
    /// `Retry-After` (`/healthz` and `/metrics` are not counted).
    pub max_concurrent_requests: usize,
    /// After shutdown begins, how long requests in flight may take before
    /// their connections are dropped.
    pub shutdown_grace: Duration,
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
        }
    }
}
