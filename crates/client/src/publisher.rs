//! The publisher: hands audit records to the service without ever making the
//! caller wait on the network, and without losing them when the service is
//! down or the process dies.
//!
//! `publish` writes the record's JSON into the publishing thread's reusable
//! buffer and appends it to the on-disk spool (a copy into a mapped segment,
//! which is the kernel's page cache: no system call, no fsync, no network),
//! then wakes the background task if it was idle. That task reads batches
//! back from the spool, sends them to the batch endpoint, retries what may
//! succeed later, and acknowledges what the service answered for. A record
//! leaves the spool only after the service stored it, said it already had it, refused it as a
//! conflict with a different stored record, or rejected it as invalid. A
//! batch the service refuses as a whole is sent again in halves, down to
//! single records, so one bad record never costs the others. Without a spool,
//! or when the spool is full or failing, records wait in a bounded memory
//! queue instead, and the task takes those first.
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
    pub spool_errors: AtomicU64,
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
    /// Spool operations that failed: a write (the record then waits in
    /// memory), a read, an fsync or a ledger write.
    pub spool_errors: u64,
}

/// A record's JSON as `publish` hands it over: in the caller's buffer, or
/// owned.
enum Body<'a> {
    Borrowed(&'a [u8]),
    Owned(Bytes),
}

impl Body<'_> {
    fn as_slice(&self) -> &[u8] {
        match self {
            Body::Borrowed(b) => b,
            Body::Owned(b) => b,
        }
    }

    /// The JSON as the memory queue keeps it (a copy when it was borrowed).
    fn into_bytes(self) -> Bytes {
        match self {
            Body::Borrowed(b) => Bytes::copy_from_slice(b),
            Body::Owned(b) => b,
        }
    }
}

/// A buffer kept this large or smaller is used again for the thread's next
/// record; a larger one is given back.
const SCRATCH_KEEP_BYTES: usize = 64 * 1024;

thread_local! {
    /// The publishing thread's buffer for a record's JSON on its way into the
    /// spool.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
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
    /// Records only memory holds (there is no spool, or it could not take
    /// them), oldest first, not yet taken by the sender.
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
    /// The pending-records gauge, taken from the recorder installed when
    /// the publisher started, so `publish` does not look it up each time.
    pub pending_gauge: metrics::Gauge,
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

    /// Counts a failed spool operation.
    pub fn count_spool_error(&self) {
        metrics::counter!(m::SPOOL_ERRORS).increment(1);
        self.counters.spool_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Publishes the pending count to the gauge and to `flush` waiters.
    pub fn report_pending(&self, state: &State) {
        self.pending.send_replace(self.gauge_pending(state));
    }

    /// Publishes the pending count after a record was taken: to the gauge
    /// and to [`Publisher::pending`], without waking `flush` waiters. They
    /// wait for the count to reach zero, which taking a record never does;
    /// waking them costs `publish` a lock of every waiter list the watch
    /// keeps, whether anyone waits or not.
    fn report_taken(&self, state: &State) {
        let pending = self.gauge_pending(state);
        self.pending.send_if_modified(|current| {
            *current = pending;
            false
        });
    }

    /// Sets the pending gauge from `state` and returns the count.
    fn gauge_pending(&self, state: &State) -> u64 {
        let pending = state.pending();
        self.pending_gauge.set(remaudit_model::approx_f64(pending));
        pending
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
            pending_gauge: metrics::gauge!(m::PENDING_RECORDS),
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
        let record = with_identity(record);
        if self.shared.config.spool_dir.is_none() {
            // The memory queue keeps the JSON, so it gets a buffer of its own,
            // sized like the last record's so that it is written without
            // growing (and copying) again and again.
            let hint = self.shared.json_len.load(Ordering::Relaxed);
            let mut body = Vec::with_capacity(hint + hint / 4);
            serde_json::to_writer(&mut body, &record)
                .map_err(|e| PublishError::Invalid(e.to_string()))?;
            drop(record);
            self.shared.json_len.store(body.len(), Ordering::Relaxed);
            return self.accept(Body::Owned(Bytes::from(body)));
        }
        // With a spool, the JSON is only copied into it: it is written into
        // this thread's buffer, used again for the next record, so that no
        // allocation is made and kept for each record (a heap that grows
        // takes a page fault every few records). It is taken out rather than
        // borrowed, so a publish re-entered on this thread (from a log line or
        // a metric `accept` emits) gets a fresh one instead of a panic.
        let mut scratch = SCRATCH.take();
        scratch.clear();
        let written = serde_json::to_writer(&mut scratch, &record)
            .map_err(|e| PublishError::Invalid(e.to_string()));
        drop(record);
        let accepted = written.and_then(|()| self.accept(Body::Borrowed(&scratch)));
        // One huge record does not pin its buffer for the thread's life.
        if scratch.capacity() <= SCRATCH_KEEP_BYTES {
            SCRATCH.set(scratch);
        }
        accepted
    }

    /// Hands over a record already serialised as JSON (one object), as
    /// [`Publisher::publish`] does. The JSON should carry an `event_id`.
    ///
    /// # Errors
    /// As [`Publisher::publish`].
    pub fn publish_json(&self, body: Bytes) -> Result<(), PublishError> {
        self.accept(Body::Owned(body))
    }

    /// Spools `body` (then only the spool holds it, and the sender reads it
    /// back from there), or, when there is no spool or it cannot take the
    /// record, queues it in memory.
    fn accept(&self, body: Body<'_>) -> Result<(), PublishError> {
        let shared = &self.shared;
        let mut st = shared.lock();
        if st.closed {
            drop(st);
            shared.count_drop("closed");
            return Err(PublishError::Closed);
        }
        let was_idle = st.memory.is_empty() && st.backlog_from.is_none();
        let seq = match st.spool.as_mut().map(|s| s.append(body.as_slice())) {
            None | Some(Err(SpoolError::Full { .. })) => None,
            Some(Ok(seq)) => Some(seq),
            Some(Err(SpoolError::TooLarge { .. })) => {
                drop(st);
                shared.count_drop("too_large");
                return Err(PublishError::Invalid(format!(
                    "a record of {} bytes is larger than any request may be",
                    body.as_slice().len()
                )));
            }
            Some(Err(e)) => {
                shared.count_spool_error();
                tracing::warn!(error = %e, "cannot spool audit record; keeping it in memory");
                None
            }
        };
        match seq {
            Some(seq) => {
                // On disk; the sender reads it from there, after any record
                // spooled before it.
                st.backlog_from.get_or_insert(seq);
            }
            None if st.memory.len() < shared.config.memory_records => st.memory.push_back(Entry {
                seq: None,
                body: body.into_bytes(),
            }),
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
        shared.report_taken(&st);
        drop(st);
        if was_idle {
            // The sender waits for work only when it has none; while records
            // wait, it comes back for them by itself.
            shared.wake.notify_one();
        }
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
            spool_errors: c.spool_errors.load(Ordering::Relaxed),
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
