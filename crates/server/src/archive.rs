//! `archive=true` on the analytics endpoints: each question asked of the
//! archive's weeks of the window together with the remediations the
//! database still holds there, computed as the store computes it.
//!
//! The archive is opened for each question (its manifests read afresh), so
//! that a batch retention has just finished is never missed. One question
//! runs at a time, its engine on one core: each may hold the archive
//! engine's memory limit and the live rows of its window (within
//! [`remaudit_archive::MAX_LIVE_ROWS`]), and ingest must not pay for them; a
//! second one is told to retry.

use remaudit_archive::{ArchiveQuery, ArchiveQueryError, Limits, LiveRows, merge_postmortem};
use remaudit_model::analytics::{
    DurationsReport, FailuresReport, RemediationList, RetriesReport, SuccessRateReport,
};
use remaudit_model::{EventRecord, FieldError, StoredAudit};
use remaudit_store::{AnalyticsQuery, ListQuery, StoreError};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::error::ApiError;
use crate::startup::AppState;

/// Where the service's archive is, and the turn its questions take.
#[derive(Debug)]
pub struct ArchiveReader {
    url: String,
    limits: Limits,
    turn: Semaphore,
}

impl ArchiveReader {
    /// Reads the archive at `url` (`file:///dir` or `s3://bucket/prefix`):
    /// each question within `time` (keep it under the request timeout), its
    /// engine on one core.
    #[must_use]
    pub fn new(url: impl Into<String>, time: std::time::Duration) -> Self {
        Self {
            url: url.into(),
            limits: Limits {
                time,
                partitions: 1,
                ..Limits::default()
            },
            turn: Semaphore::new(1),
        }
    }

    /// The archive's URL.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// The store's failure as the API's.
fn store_error(state: &AppState) -> impl Fn(StoreError) -> ApiError + '_ {
    |e| ApiError::from_store(&e, state.settings.retry_after)
}

/// The archive's failure as the API's.
fn archive_error(state: &AppState, e: ArchiveQueryError) -> ApiError {
    match e {
        e if e.is_damage() => {
            tracing::error!(error = %e, "archive damaged");
            ApiError::ArchiveDamaged(e.to_string())
        }
        ArchiveQueryError::Archive(why) => {
            tracing::warn!(error = %why, "archive unreadable");
            ApiError::ArchiveUnavailable(why, state.settings.retry_after)
        }
        e @ ArchiveQueryError::Damaged { .. } => {
            tracing::error!(error = %e, "archive damaged");
            ApiError::ArchiveDamaged(e.to_string())
        }
        ArchiveQueryError::Timeout(limit) => ApiError::ArchiveTimeout(limit),
        e @ (ArchiveQueryError::Query(_) | ArchiveQueryError::TooManyRows(_)) => {
            tracing::error!(error = %e, "archive question failed");
            ApiError::Internal
        }
    }
}

/// The archive's turn, or [`ApiError::Overloaded`] while another question has it.
fn turn(state: &AppState) -> Result<(&ArchiveReader, SemaphorePermit<'_>), ApiError> {
    let Some(reader) = state.archive.as_deref() else {
        return Err(ApiError::ArchiveUnavailable(
            "this service was started without an archive to read".to_owned(),
            state.settings.retry_after,
        ));
    };
    match reader.turn.try_acquire() {
        Ok(permit) => Ok((reader, permit)),
        Err(_) => Err(ApiError::ArchiveUnavailable(
            "another question over the archive is running; the service answers one at a time"
                .to_owned(),
            state.settings.retry_after,
        )),
    }
}

/// The service's archive, opened for one question: the batches of this
/// database's installation.
/// `None` while the archive is a local directory that does not exist yet:
/// the retention job makes it with its first batch, so nothing is archived.
async fn open(state: &AppState, reader: &ArchiveReader) -> Result<Option<ArchiveQuery>, ApiError> {
    if let Some(dir) = reader.url.strip_prefix("file://")
        && !std::path::Path::new(dir).exists()
    {
        return Ok(None);
    }
    let installation = state
        .store
        .installation_id()
        .await
        .map_err(store_error(state))?;
    ArchiveQuery::open(&reader.url, Some(&installation), reader.limits)
        .await
        .map(Some)
        .map_err(|e| archive_error(state, e))
}

/// Whether `archive` holds any week of `q`'s window (refusing one it cannot read).
fn holds(archive: Option<&ArchiveQuery>, q: &AnalyticsQuery) -> Result<bool, ApiError> {
    let Some(archive) = archive else {
        return Ok(false);
    };
    readable(archive, q)?;
    Ok(archive.holds(q.window.since, q.window.until))
}

/// The remediations the store holds in `q`'s window, a page at a time.
async fn live_rows(state: &AppState, q: &AnalyticsQuery) -> Result<LiveRows, ApiError> {
    let mut list = ListQuery {
        alert_fingerprint: q.alert_fingerprint.clone(),
        namespace: q.namespace.clone(),
        since: Some(q.window.since),
        until: Some(q.window.until),
        limit: remaudit_api::audit::MAX_PAGE,
        ..ListQuery::default()
    };
    let mut rows = LiveRows::default();
    loop {
        let page = state.store.list(&list).await.map_err(store_error(state))?;
        rows.take(page.items).map_err(|why| {
            ApiError::InvalidQuery(vec![FieldError::new("archive", "live_rows", why)])
        })?;
        match page.next {
            Some(cursor) => list.after = Some(cursor),
            None => return Ok(rows),
        }
    }
}

/// Refuses a window in which the archive holds batches it cannot read.
fn readable(archive: &ArchiveQuery, q: &AnalyticsQuery) -> Result<(), ApiError> {
    match archive.unreadable_in(q.window.since, q.window.until) {
        0 => Ok(()),
        n => Err(ApiError::InvalidQuery(vec![FieldError::new(
            "archive",
            "jsonl_batches",
            format!(
                "{n} archive batches that may hold remediations of this window are JSON Lines, \
                 which questions cannot read, so an answer would leave them out"
            ),
        )])),
    }
}

/// Runs `ask` within the archive's time limit.
async fn in_time<R>(
    reader: &ArchiveReader,
    ask: impl Future<Output = Result<R, ApiError>>,
) -> Result<R, ApiError> {
    tokio::time::timeout(reader.limits.time, ask)
        .await
        .map_err(|_| ApiError::ArchiveTimeout(reader.limits.time))?
}

/// The post-mortem: the store's list and the archive's, merged.
pub(crate) async fn postmortem(
    state: &AppState,
    q: &AnalyticsQuery,
) -> Result<RemediationList, ApiError> {
    let (reader, _turn) = turn(state)?;
    in_time(reader, async {
        // The database first, then the archive: a batch retention finishes
        // in between has its manifest before its rows leave, so it is read.
        let mut answer = state
            .store
            .postmortem(q)
            .await
            .map_err(store_error(state))?;
        let Some(archive) = open(state, reader).await? else {
            return Ok(answer);
        };
        readable(&archive, q)?;
        let archived = archive
            .postmortem(
                q.alert_fingerprint.as_deref().unwrap_or_default(),
                q.window.since,
                q.window.until,
                q.namespace.as_deref(),
                q.limit,
            )
            .await
            .map_err(|e| archive_error(state, e))?;
        merge_postmortem(&mut answer, archived);
        Ok(answer)
    })
    .await
}

/// An archived remediation and its whole timeline, for a timeline the
/// database no longer holds; `None` when the archive holds none by `id`.
pub(crate) async fn timeline(
    state: &AppState,
    id: i64,
) -> Result<Option<(StoredAudit, Vec<EventRecord>)>, ApiError> {
    let (reader, _turn) = turn(state)?;
    in_time(reader, async {
        let Some(archive) = open(state, reader).await? else {
            return Ok(None);
        };
        archive
            .timeline(id)
            .await
            .map_err(|e| archive_error(state, e))
    })
    .await
}

/// Defines `$name`: the question over the archive and the live rows of its
/// window; the store's own answer when the archive holds none of the
/// window's weeks.
macro_rules! over_archive {
    ($name:ident, $report:ty, $doc:literal) => {
        #[doc = $doc]
        pub(crate) async fn $name(
            state: &AppState,
            q: &AnalyticsQuery,
        ) -> Result<$report, ApiError> {
            let (reader, _turn) = turn(state)?;
            in_time(reader, async {
                if !holds(open(state, reader).await?.as_ref(), q)? {
                    let answer = state.store.$name(q).await.map_err(store_error(state))?;
                    // Still none after the database answered: no batch of
                    // the window left it in between, so its answer is whole.
                    if !holds(open(state, reader).await?.as_ref(), q)? {
                        return Ok(answer);
                    }
                }
                let rows = live_rows(state, q).await?;
                // Read again after the live rows: a batch finished meanwhile
                // (its rows gone from the live tables) is in the archive now.
                let Some(archive) = open(state, reader).await? else {
                    return Err(ApiError::ArchiveUnavailable(
                        "the archive directory went away during the question".to_owned(),
                        state.settings.retry_after,
                    ));
                };
                readable(&archive, q)?;
                archive
                    .$name(q, rows.rows())
                    .await
                    .map_err(|e| archive_error(state, e))
            })
            .await
        }
    };
}

over_archive!(
    success_rate,
    SuccessRateReport,
    "Outcomes over the archive too."
);
over_archive!(
    durations,
    DurationsReport,
    "Durations over the archive too."
);
over_archive!(
    slowest,
    RemediationList,
    "The slowest over the archive too."
);
over_archive!(failures, FailuresReport, "Failures over the archive too.");
over_archive!(retries, RetriesReport, "Retries over the archive too.");
