//! The publisher: hands audit records to the service without ever making the
//! caller wait on the network, and without losing them when the service is
//! down or the process dies.
//!
//! `publish` appends the record to the on-disk spool (a copy into a mapped
//! segment, which is the kernel's page cache: no system call, no fsync, no
//! network) and to a bounded memory queue that caches the
//! spool's tail, then wakes one background task. That task takes batches
//! (from memory, or from disk when memory overflowed or after a restart),
//! sends them to the batch endpoint, retries what may succeed later, and
//! acknowledges what the service answered for. A record leaves the spool only
//! after the service stored it, said it already had it, refused it as a
//! conflict with a different stored record, or rejected it as invalid. A
//! batch the service refuses as a whole is sent again in halves, down to
//! single records, so one bad record never costs the others.
//!
//! A request refused for the publisher's credentials (401, 403), or that
//! could not carry them (an unusable token file, a failed TLS handshake),
//! never costs a record either: the batch is retried with backoff as in an
//! outage, and the denial is counted and logged (see `denied`).

mod denied;
mod sender;
mod settings;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use remaudit_model::{DEFAULT_NAMESPACE, RemediationOrchestrationAudit, derive_event_id};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

pub use settings::PublisherSettings;

use crate::credentials::CredentialError;
use crate::metrics as m;
use crate::spool::{Spool, SpoolError, SpoolSettings};

/// Why `publish` did not take a record.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The memory queue and the spool are both full; the record was dropped and counted.
    #[error("audit record dropped: the memory queue and the spool are full")]
    Dropped,
    /// The record could not be serialised, or is larger than any request may be.
    #[error("audit record refused: {0}")]
    Invalid(String),
    /// The publisher is shutting down.
    #[error("audit publisher is shut down")]
    Closed,
}

/// Why the publisher could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The spool could not be opened.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The credentials could not be read, or the HTTP client not built with them.
    #[error(transparent)]
    Credentials(#[from] CredentialError),
}

/// What a shutdown left behind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Records the service answered for (stored, already stored, conflict or rejected) during this run.
    pub acknowledged: u64,
    /// Records left in the spool for the next start.
    pub left_in_spool: u64,
    /// Records that were only in memory and could not be spooled (no spool, or it was full).
    pub lost: u64,
}

/// Running totals of one publisher, for callers and tests (metrics are process-wide).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub created: AtomicU64,
    pub duplicates: AtomicU64,
    pub conflicts: AtomicU64,
    pub rejected: AtomicU64,
    pub dropped: AtomicU64,
    pub retries: AtomicU64,
    pub denied: AtomicU64,
}

/// Totals of one publisher since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublisherStats {
    /// Records the service stored.
    pub created: u64,
    /// Records the service already had (replays).
    pub duplicates: u64,
    /// Records the service refused because it holds a different record under
    /// the same idempotency key (`event_id`, `start_time`); never retried.
    pub conflicts: u64,
    /// Records the service rejected as invalid; never retried.
    pub rejected: u64,
    /// Records dropped because the memory queue and the spool were full.
    pub dropped: u64,
    /// Failed requests that were retried.
    pub retries: u64,
    /// Requests denied for the publisher's credentials (401, 403, an
    /// unusable token file, a failed TLS handshake); also counted in
    /// `retries`, since their records are sent again.
    pub denied: u64,
}

/// One queued record: its spool sequence number when it is on disk, and its JSON.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub seq: Option<u64>,
    pub body: Bytes,
}

/// What the publishing side and the sender share, under one short lock.
pub(crate) struct State {
    pub spool: Option<Spool>,
    /// Cached or memory-only records, oldest first, not yet taken by the sender.
    pub memory: VecDeque<Entry>,
    /// When set, spooled records from this sequence number on are on disk only.
    pub backlog_from: Option<u64>,
    /// Records taken by the sender and not yet acknowledged.
    pub in_flight: usize,
    /// No more records are accepted.
    pub closed: bool,
}

impl State {
    /// Records published and not yet acknowledged.
    pub fn pending(&self) -> u64 {
        let backlog = match (&self.spool, self.backlog_from) {
            (Some(spool), Some(from)) => spool.next_seq().saturating_sub(from),
            _ => 0,
        };
        self.memory.len() as u64 + backlog + self.in_flight as u64
    }
}

pub(crate) struct Shared {
    pub config: PublisherSettings,
    pub state: Mutex<State>,
    pub wake: Notify,
    pub pending: watch::Sender<u64>,
    /// `Some(deadline)` once shutdown began.
    pub drain: watch::Sender<Option<tokio::time::Instant>>,
    pub task: Mutex<Option<JoinHandle<ShutdownReport>>>,
    pub counters: Counters,
    pub denials: denied::DenialLog,
    /// Bytes of the last record's JSON, to size the next one's buffer.
    pub json_len: std::sync::atomic::AtomicUsize,
}

impl Shared {
    /// The state; a panic elsewhere never makes audit unusable.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts records that will never be delivered.
    pub fn count_drop(&self, reason: &'static str) {
        self.count_drops(reason, 1);
    }

    /// Counts `n` records that will never be delivered.
    pub fn count_drops(&self, reason: &'static str, n: u64) {
        debug_assert!(
            m::DROP_REASONS.contains(&reason),
            "{reason} is not in DROP_REASONS: alerts would miss its first drop"
        );
        metrics::counter!(m::DROPPED, "reason" => reason).increment(n);
        metrics::counter!(m::PUBLISH_FAILURES).increment(n);
        self.counters.dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Publishes the pending count to the gauge and to `flush` waiters.
    pub fn report_pending(&self, state: &State) {
        let pending = state.pending();
        metrics::gauge!(m::PENDING_RECORDS).set(remaudit_model::approx_f64(pending));
        self.pending.send_replace(pending);
    }
}

/// A cheap, cloneable handle that publishes audit records.
#[derive(Clone)]
pub struct Publisher {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("url", &self.shared.config.url)
            .finish_non_exhaustive()
    }
}

/// Gives a record an `event_id` and `event_time` when it has none, so every
/// retry and replay is the same event to the service.
///
/// The id is derived from the namespace, name, start time and phase: the same
/// transition published twice (a re-reconcile, say) is stored once.
#[must_use]
pub fn with_identity(mut record: RemediationOrchestrationAudit) -> RemediationOrchestrationAudit {
    if record.event_id.is_none() {
        let namespace = record
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(DEFAULT_NAMESPACE);
        record.event_id = Some(derive_event_id(
            namespace,
            &record.remediation_name,
            record.start_time,
            &record.overall_phase,
            None,
        ));
    }
    if record.event_time.is_none() {
        record.event_time = Some(Utc::now());
    }
    record
}

impl Publisher {
    /// Reads the credentials (the token once now), opens the spool
    /// (recovering what an earlier run left) and starts the background
    /// sender on the current Tokio runtime.
    ///
    /// # Errors
    /// When a credential file cannot be used (naming it), the spool
    /// directory cannot be used, or the HTTP client cannot be built.
    pub fn start(config: PublisherSettings) -> Result<Self, StartError> {
        m::describe();
        m::start_counters();
        let api = config.credentials.load()?.api_client(
            &config.url,
            reqwest::Client::builder().timeout(config.request_timeout),
        )?;
        let (spool, reader, backlog_from) = match &config.spool_dir {
            Some(dir) => {
                let mut options = SpoolSettings::new(dir);
                options.max_bytes = config.spool_max_bytes;
                options.segment_bytes = config.spool_segment_bytes;
                metrics::gauge!(m::SPOOL_MAX_BYTES)
                    .set(remaudit_model::approx_f64(config.spool_max_bytes));
                let (spool, recovery) = Spool::open(options)?;
                if recovery.corrupt_records > 0 || recovery.truncated_bytes > 0 {
                    tracing::warn!(
                        corrupt_records = recovery.corrupt_records,
                        truncated_bytes = recovery.truncated_bytes,
                        "spool damage skipped on open"
                    );
                }
                metrics::counter!(m::SPOOL_CORRUPT).increment(recovery.corrupt_records);
                if recovery.records > 0 {
                    tracing::info!(records = recovery.records, "resuming spooled audit records");
                }
                let backlog = (spool.pending_records() > 0).then(|| spool.first_unacked());
                let reader = spool.reader();
                (Some(spool), Some(reader), backlog)
            }
            None => (None, None, None),
        };
        let state = State {
            spool,
            memory: VecDeque::new(),
            backlog_from,
            in_flight: 0,
            closed: false,
        };
        let (pending, _) = watch::channel(state.pending());
        let (drain, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            config,
            state: Mutex::new(state),
            wake: Notify::new(),
            pending,
            drain,
            task: Mutex::new(None),
            counters: Counters::default(),
            denials: denied::DenialLog::default(),
            json_len: std::sync::atomic::AtomicUsize::new(1024),
        });
        shared.report_pending(&shared.lock());
        let task = tokio::spawn(sender::run(shared.clone(), api, reader));
        *shared
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(task);
        Ok(Self { shared })
    }

    /// Hands a record over; returns at once and never waits on the network.
    ///
    /// # Errors
    /// [`PublishError::Dropped`] when both the memory queue and the spool are
    /// full (counted), [`PublishError::Closed`] after shutdown began.
    pub fn publish(&self, record: RemediationOrchestrationAudit) -> Result<(), PublishError> {
        // Sized like the last record, so the JSON is written without
        // growing (and copying) its buffer again and again.
        let hint = self.shared.json_len.load(Ordering::Relaxed);
        let mut body = Vec::with_capacity(hint + hint / 4);
        serde_json::to_writer(&mut body, &with_identity(record))
            .map_err(|e| PublishError::Invalid(e.to_string()))?;
        self.shared.json_len.store(body.len(), Ordering::Relaxed);
        self.publish_json(Bytes::from(body))
    }

    /// Hands over a record already serialised as JSON (one object), as
    /// [`Publisher::publish`] does. The JSON should carry an `event_id`.
    ///
    /// # Errors
    /// As [`Publisher::publish`].
    pub fn publish_json(&self, body: Bytes) -> Result<(), PublishError> {
        let shared = &self.shared;
        let mut st = shared.lock();
        if st.closed {
            drop(st);
            shared.count_drop("closed");
            return Err(PublishError::Closed);
        }
        let seq = match st.spool.as_mut().map(|s| s.append(&body)) {
            None | Some(Err(SpoolError::Full { .. })) => None,
            Some(Ok(seq)) => Some(seq),
            Some(Err(SpoolError::TooLarge { .. })) => {
                drop(st);
                shared.count_drop("too_large");
                return Err(PublishError::Invalid(format!(
                    "a record of {} bytes is larger than any request may be",
                    body.len()
                )));
            }
            Some(Err(e)) => {
                metrics::counter!(m::SPOOL_ERRORS).increment(1);
                tracing::warn!(error = %e, "cannot spool audit record; keeping it in memory");
                None
            }
        };
        let room = st.memory.len() < shared.config.memory_records;
        match seq {
            Some(seq) if room && st.backlog_from.is_none() => st.memory.push_back(Entry {
                seq: Some(seq),
                body,
            }),
            Some(seq) => {
                // Memory is full: this record and the ones after it wait on disk
                // until the sender has caught up, so order is kept.
                st.backlog_from.get_or_insert(seq);
            }
            None if room => st.memory.push_back(Entry { seq: None, body }),
            None => {
                drop(st);
                shared.count_drop(if shared.config.spool_dir.is_some() {
                    "queue_and_spool_full"
                } else {
                    "queue_full"
                });
                return Err(PublishError::Dropped);
            }
        }
        shared.report_pending(&st);
        drop(st);
        shared.wake.notify_one();
        Ok(())
    }

    /// Totals since this publisher started.
    #[must_use]
    pub fn stats(&self) -> PublisherStats {
        let c = &self.shared.counters;
        PublisherStats {
            created: c.created.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            conflicts: c.conflicts.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            denied: c.denied.load(Ordering::Relaxed),
        }
    }

    /// Records published and not yet acknowledged.
    #[must_use]
    pub fn pending(&self) -> u64 {
        *self.shared.pending.borrow()
    }

    /// Waits until every record published so far is acknowledged. While the
    /// service is down this waits for it: bound it with a timeout.
    pub async fn flush(&self) {
        let mut pending = self.shared.pending.subscribe();
        let _ = pending.wait_for(|p| *p == 0).await;
    }

    /// Stops taking records, sends what it can until `deadline` passes, then
    /// leaves the rest in the spool for the next start.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        self.shared.lock().closed = true;
        self.shared
            .drain
            .send_replace(Some(tokio::time::Instant::now() + deadline));
        self.shared.wake.notify_one();
        let task = self
            .shared
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        match task {
            Some(task) => task.await.unwrap_or_else(|e| {
                tracing::error!(error = %e, "audit sender task failed");
                ShutdownReport::default()
            }),
            None => ShutdownReport::default(),
        }
    }
}
