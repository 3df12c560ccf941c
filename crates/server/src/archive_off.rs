//! `archive=true` and SQL over the archive in a build without the archive
//! reader (feature `archive` off, as the fuzz targets build the service):
//! every such question is answered 503 `archive-unavailable`.
// The same signatures as the reader's, awaited by the same handlers.
#![allow(clippy::unused_async)]

use std::path::PathBuf;

use remaudit_api::archive::{SqlAnswer, SqlRequest};
use remaudit_model::analytics::{
    DurationsReport, FailuresReport, RemediationList, RetriesReport, SuccessRateReport,
};
use remaudit_model::{EventRecord, StoredAudit};
use remaudit_store::AnalyticsQuery;

use crate::error::ApiError;
use crate::startup::AppState;

/// Where the service's archive is; this build cannot read it.
#[derive(Debug)]
pub struct ArchiveReader {
    url: String,
}

impl ArchiveReader {
    /// An archive at `url` this build does not read.
    #[must_use]
    pub fn new(url: impl Into<String>, _time: std::time::Duration) -> Self {
        Self { url: url.into() }
    }

    /// The same reader; this build runs no statement.
    #[must_use]
    pub fn with_sql_program(self, _program: impl Into<PathBuf>) -> Self {
        self
    }

    /// The archive's URL.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// The refusal of every archive question in this build.
fn unbuilt(state: &AppState) -> ApiError {
    ApiError::ArchiveUnavailable(
        "this build of the service has no archive reader".to_owned(),
        state.settings.retry_after,
    )
}

/// Refused: this build reads no archive.
pub(crate) async fn postmortem(
    state: &AppState,
    _q: &AnalyticsQuery,
) -> Result<RemediationList, ApiError> {
    Err(unbuilt(state))
}

/// Refused: this build reads no archive.
pub(crate) async fn timeline(
    state: &AppState,
    _id: i64,
) -> Result<Option<(StoredAudit, Vec<EventRecord>)>, ApiError> {
    Err(unbuilt(state))
}

/// Refused: this build reads no archive.
pub(crate) async fn sql(
    state: &AppState,
    _request: &SqlRequest,
    _subject: &str,
) -> Result<(SqlAnswer, tokio::sync::OwnedSemaphorePermit), ApiError> {
    Err(unbuilt(state))
}

/// Defines `$name`, refused in this build.
macro_rules! unbuilt {
    ($name:ident, $report:ty) => {
        /// Refused: this build reads no archive.
        pub(crate) async fn $name(
            state: &AppState,
            _q: &AnalyticsQuery,
        ) -> Result<$report, ApiError> {
            Err(unbuilt(state))
        }
    };
}

unbuilt!(success_rate, SuccessRateReport);
unbuilt!(durations, DurationsReport);
unbuilt!(slowest, RemediationList);
unbuilt!(failures, FailuresReport);
unbuilt!(retries, RetriesReport);
