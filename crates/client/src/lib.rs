//! Clients of the remaudit service: [`ApiClient`], the typed client of its
//! whole API; [`AuditStorageClient`], the design's
//! one-record-per-call client, and [`Publisher`], which never makes its
//! caller wait and never loses a record to an outage or a crash, built on the
//! durable on-disk [`spool`].

mod api_client;
pub mod credentials;
pub mod metrics;
mod publisher;
pub mod spool;
mod storage_client;

pub use api_client::{API_TIMEOUT, ApiClient, ApiError};
pub use publisher::{
    PublishError, Publisher, PublisherSettings, PublisherStats, ShutdownReport, StartError,
    with_identity,
};
pub use storage_client::{AUDIT_PATH, AuditStorageClient, ClientError, DEFAULT_TIMEOUT};
