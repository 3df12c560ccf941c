//! The design's synchronous-per-call client: one POST per record, 5 s
//! timeout, 201 expected.

use std::time::Duration;

use remaudit_model::RemediationOrchestrationAudit;

/// How long one call may take, as in the design's Go client.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Path of the single-record endpoint.
pub const AUDIT_PATH: &str = "/api/v1/audit/remediation-orchestration";

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
}

impl ClientError {
    /// Whether retrying the same record may succeed (transport errors, 408, 429, 5xx).
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Build(_) => false,
            Self::Transport(_) => true,
            Self::Status { status, .. } => matches!(status, 408 | 429) || *status >= 500,
        }
    }
}

/// Stores records in a remaudit service, one request per record.
#[derive(Debug, Clone)]
pub struct AuditStorageClient {
    storage_service_url: String,
    http: reqwest::Client,
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
            storage_service_url: storage_service_url.trim_end_matches('/').to_owned(),
            http,
        })
    }

    /// Stores one record; succeeds only on 201 Created (a replay also answers 201).
    ///
    /// # Errors
    /// On transport failure or any other status.
    pub async fn store_remediation_orchestration_audit(
        &self,
        audit: &RemediationOrchestrationAudit,
    ) -> Result<(), ClientError> {
        let url = format!("{}{AUDIT_PATH}", self.storage_service_url);
        let response = self
            .http
            .post(url)
            .json(audit)
            .send()
            .await
            .map_err(ClientError::Transport)?;
        let status = response.status().as_u16();
        if status == 201 {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        Err(ClientError::Status { status, body })
    }
}
