//! The design's synchronous-per-call client: one POST per record, 5 s
//! timeout, 201 expected. A thin face over [`ApiClient`].

use std::time::Duration;

use remaudit_model::RemediationOrchestrationAudit;

use crate::{ApiClient, ApiError};

/// How long one call may take, as in the design's Go client.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Path of the single-record endpoint.
pub const AUDIT_PATH: &str = remaudit_api::paths::AUDIT;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The HTTP client could not be built.
    #[error("cannot build HTTP client: {0}")]
    Build(#[source] reqwest::Error),
    /// The request did not complete (connection refused, timeout, ...).
    #[error("failed to store audit: {0}")]
    Transport(#[source] reqwest::Error),
    /// The service answered something other than 201.
    #[error("audit storage failed with status: {status}: {body}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The response body (a problem+json document for errors).
        body: String,
    },
    /// The service answered success with a body this client cannot read, or
    /// the URL is unusable.
    #[error("failed to store audit: {0}")]
    Unreadable(#[source] ApiError),
}

impl ClientError {
    /// Whether retrying the same record may succeed (transport errors, 408, 429, 5xx).
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Build(_) | Self::Unreadable(_) => false,
            Self::Transport(_) => true,
            Self::Status { status, .. } => matches!(status, 408 | 429) || *status >= 500,
        }
    }
}

/// Stores records in a remaudit service, one request per record.
#[derive(Debug, Clone)]
pub struct AuditStorageClient {
    api: ApiClient,
}

impl AuditStorageClient {
    /// A client of the service at `storage_service_url` (e.g. `http://127.0.0.1:8085`).
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(storage_service_url: &str) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(DEFAULT_TIMEOUT)
            .build()
            .map_err(ClientError::Build)?;
        Ok(Self {
            api: ApiClient::with_http(storage_service_url, http),
        })
    }

    /// Stores one record; succeeds on 201 Created (a replay also answers 201)
    /// with an answer this client can read.
    ///
    /// # Errors
    /// On transport failure or any other status.
    pub async fn store_remediation_orchestration_audit(
        &self,
        audit: &RemediationOrchestrationAudit,
    ) -> Result<(), ClientError> {
        match self.api.ingest(audit).await {
            Ok(_) => Ok(()),
            Err(ApiError::Transport { source, .. }) => Err(ClientError::Transport(source)),
            Err(
                ApiError::Unavailable { status, body, .. }
                | ApiError::Refused { status, body, .. }
                | ApiError::Denied {
                    status,
                    detail: body,
                    ..
                },
            ) => Err(ClientError::Status { status, body }),
            Err(err) => Err(ClientError::Unreadable(err)),
        }
    }
}
