//! The background task: batches, sends, retries, acknowledges, and keeps
//! the spool synced.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::{BufMut, Bytes, BytesMut};
use remaudit_api::audit::{BatchResponse, ItemStatus};
use remaudit_model::approx_f64;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::denied::Denial;
use super::{Entry, Shared, ShutdownReport, State};
use crate::metrics as m;
use crate::spool::SpoolReader;
use crate::{ApiClient, ApiError};

/// Final answers for the records of one request, by kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    created: u64,
    duplicates: u64,
    conflicts: u64,
    rejected: u64,
}

/// What one request achieved.
#[derive(Debug)]
enum Sent {
    /// The service answered for every record.
    Answered(Tally),
    /// The service refused the batch as a whole (too large, or one record
    /// spoiled it): send it in halves until each record gets its own answer.
    Split,
    /// Try again later, not before `retry_after` when the service said so;
    /// `denied` when the credentials were the cause.
    Retry {
        retry_after: Option<Duration>,
        why: String,
        denied: Option<Denial>,
    },
}

fn json_array(entries: &[Entry]) -> Bytes {
    let size = entries.iter().map(|e| e.body.len() + 1).sum::<usize>() + 2;
    let mut body = BytesMut::with_capacity(size);
    body.put_u8(b'[');
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            body.put_u8(b',');
        }
        body.put_slice(&e.body);
    }
    body.put_u8(b']');
    body.freeze()
}

/// Counts the per-record answers of a batch of `records`, or says why the
/// answer cannot be trusted for every record (then nothing is logged as final).
fn tally(answer: BatchResponse, records: usize) -> Result<Tally, String> {
    let mut seen = vec![false; records];
    for item in &answer.items {
        match seen.get_mut(item.index) {
            Some(seen) if !*seen => *seen = true,
            Some(_) => return Err(format!("record {} answered twice", item.index)),
            None => {
                return Err(format!(
                    "answer for record {} of a batch of {records}",
                    item.index
                ));
            }
        }
    }
    if let Some(missing) = seen.iter().position(|s| !s) {
        return Err(format!("no answer for record {missing}"));
    }
    let mut tally = Tally::default();
    for item in answer.items {
        match item.status {
            ItemStatus::Created => tally.created += 1,
            ItemStatus::Duplicate => tally.duplicates += 1,
            ItemStatus::Conflict => {
                tally.conflicts += 1;
                tracing::warn!(
                    index = item.index,
                    "the audit service already holds a different record with this record's event_id and start_time; it will not be retried"
                );
            }
            ItemStatus::Rejected => {
                tally.rejected += 1;
                tracing::warn!(
                    index = item.index,
                    errors = %serde_json::to_string(&item.errors).unwrap_or_default(),
                    "the audit service rejected a record as invalid; it will not be retried"
                );
            }
        }
    }
    Ok(tally)
}

/// Sends one batch (a JSON array of records), and says what came of it.
///
/// A success answer this client cannot read (an unknown item status from a
/// newer server, or a broken proxy) keeps the records: they are sent again.
async fn post(api: &ApiClient, entries: &[Entry], cap: Duration) -> Sent {
    let err = match api.ingest_batch_json(json_array(entries)).await {
        Ok(answer) => match tally(answer, entries.len()) {
            Ok(tally) => return Sent::Answered(tally),
            Err(why) => return unreadable(200, entries.len(), &why, None),
        },
        Err(err) => err,
    };
    let status = match &err {
        ApiError::Decode { status, .. } => {
            return unreadable(*status, entries.len(), &err.to_string(), None);
        }
        ApiError::Unavailable { status, .. } | ApiError::Refused { status, .. } => *status,
        ApiError::Build(_)
        | ApiError::InvalidUrl { .. }
        | ApiError::Transport { .. }
        | ApiError::Denied { .. }
        | ApiError::Credentials(_) => {
            return Sent::Retry {
                retry_after: None,
                why: err.to_string(),
                denied: Denial::of(&err),
            };
        }
    };
    let after = err.retry_after().map(|after| after.min(cap));
    match status {
        400 | 409 | 413 | 422 if entries.len() > 1 => Sent::Split,
        400 | 409 | 413 | 422 => {
            let body = err.body().unwrap_or_default();
            let mut tally = Tally::default();
            if status == 409 {
                tally.conflicts = 1;
                tracing::warn!(status, %body, "the audit service already holds a different record with this record's event_id and start_time; it will not be retried");
            } else {
                tally.rejected = 1;
                tracing::warn!(status, %body, "the audit service refused a record; it will not be retried");
            }
            Sent::Answered(tally)
        }
        _ => Sent::Retry {
            retry_after: after,
            why: format!("status {status}"),
            denied: None,
        },
    }
}

/// A success answer that cannot be trusted for every record: say so loudly
/// and send the batch again.
fn unreadable(status: u16, records: usize, why: &str, retry_after: Option<Duration>) -> Sent {
    tracing::error!(
        status,
        records,
        %why,
        "cannot read the audit service's answer to a batch; the batch will be sent again (is the server newer than this client?)"
    );
    Sent::Retry {
        retry_after,
        why: format!("unreadable answer: {why}"),
        denied: None,
    }
}

/// Counts final answers in the metrics and the publisher's totals.
fn count(shared: &Shared, t: Tally) {
    metrics::counter!(m::RECORDS, "outcome" => "created").increment(t.created);
    metrics::counter!(m::RECORDS, "outcome" => "duplicate").increment(t.duplicates);
    metrics::counter!(m::RECORDS, "outcome" => "conflict").increment(t.conflicts);
    metrics::counter!(m::RECORDS, "outcome" => "rejected").increment(t.rejected);
    metrics::counter!(m::PUBLISH_FAILURES).increment(t.conflicts + t.rejected);
    let c = &shared.counters;
    c.created.fetch_add(t.created, Ordering::Relaxed);
    c.duplicates.fetch_add(t.duplicates, Ordering::Relaxed);
    c.conflicts.fetch_add(t.conflicts, Ordering::Relaxed);
    c.rejected.fetch_add(t.rejected, Ordering::Relaxed);
}

/// Resolves once shutdown has begun and its deadline has passed.
async fn deadline_passed(drain: &mut watch::Receiver<Option<tokio::time::Instant>>) {
    loop {
        let deadline = *drain.borrow_and_update();
        match deadline {
            Some(at) => return tokio::time::sleep_until(at).await,
            None => {
                if drain.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        }
    }
}

/// Sends `entries` until every record is answered for, or `stop` fires.
/// Returns how many records were answered for.
async fn deliver(shared: &Shared, api: &ApiClient, entries: &[Entry]) -> Option<u64> {
    let mut drain = shared.drain.subscribe();
    let mut work: Vec<&[Entry]> = vec![entries];
    let mut answered = 0;
    while let Some(part) = work.pop() {
        let mut backoff = ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(shared.config.min_backoff)
            .with_max_delay(shared.config.max_backoff)
            .without_max_times()
            .build();
        loop {
            let started = Instant::now();
            metrics::histogram!(m::BATCH_RECORDS).record(approx_f64(part.len()));
            let sent = tokio::select! {
                sent = post(api, part, shared.config.max_retry_after) => sent,
                () = deadline_passed(&mut drain) => return None,
            };
            metrics::histogram!(m::PUBLISH_DURATION).record(started.elapsed().as_secs_f64());
            match sent {
                Sent::Answered(tally) => {
                    metrics::counter!(m::PUBLISH_ATTEMPTS, "status" => "success").increment(1);
                    count(shared, tally);
                    answered += part.len() as u64;
                    break;
                }
                Sent::Split => {
                    metrics::counter!(m::PUBLISH_ATTEMPTS, "status" => "error").increment(1);
                    tracing::debug!(
                        records = part.len(),
                        "the audit service refused a whole batch; sending it in halves"
                    );
                    let (a, b) = part.split_at(part.len() / 2);
                    work.push(b);
                    work.push(a);
                    break;
                }
                Sent::Retry {
                    retry_after,
                    why,
                    denied,
                } => {
                    metrics::counter!(m::PUBLISH_ATTEMPTS, "status" => "error").increment(1);
                    metrics::counter!(m::RETRIES).increment(1);
                    shared.counters.retries.fetch_add(1, Ordering::Relaxed);
                    if let Some(denial) = denied {
                        shared.counters.denied.fetch_add(1, Ordering::Relaxed);
                        shared.denials.record(denial, part.len(), &why);
                    }
                    let delay = backoff.next().unwrap_or(shared.config.max_backoff);
                    let delay = retry_after.map_or(delay, |after| after.max(delay));
                    tracing::debug!(%why, ?delay, records = part.len(), "audit batch not stored; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = deadline_passed(&mut drain) => return None,
                    }
                }
            }
        }
    }
    Some(answered)
}

/// Takes the next batch: from memory first, else from the disk backlog.
async fn take_batch(shared: &Arc<Shared>, reader: &mut Option<SpoolReader>) -> Vec<Entry> {
    let (max_records, max_bytes) = (shared.config.batch_records, shared.config.batch_bytes);
    let (from, until) = {
        let mut st = shared.lock();
        if !st.memory.is_empty() {
            let mut batch = Vec::new();
            let mut bytes = 0;
            while let Some(front) = st.memory.front() {
                if batch.len() >= max_records
                    || (!batch.is_empty() && bytes + front.body.len() > max_bytes)
                {
                    break;
                }
                bytes += front.body.len();
                batch.extend(st.memory.pop_front());
            }
            st.in_flight += batch.len();
            return batch;
        }
        match (st.backlog_from, &st.spool) {
            (Some(from), Some(spool)) => (from, spool.next_seq()),
            _ => return Vec::new(),
        }
    };
    let Some(mut r) = reader.take() else {
        return Vec::new();
    };
    let (r, read, corrupt) = tokio::task::spawn_blocking(move || {
        let before = r.corrupt_records();
        let read = r.read(from, until, max_records, max_bytes);
        let corrupt = r.corrupt_records() - before;
        (r, read, corrupt)
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    *reader = Some(r);
    if corrupt > 0 {
        metrics::counter!(m::SPOOL_CORRUPT).increment(corrupt);
        tracing::warn!(records = corrupt, "damaged spool records skipped");
    }
    let records = match read {
        Ok(records) => records,
        Err(e) => {
            shared.count_spool_error();
            tracing::error!(error = %e, "cannot read the spool; retrying");
            return Vec::new();
        }
    };
    let mut st = shared.lock();
    let next = records.last().map_or(until, |(seq, _)| seq + 1);
    let end = st
        .spool
        .as_ref()
        .map_or(next, crate::spool::Spool::next_seq);
    st.backlog_from = (next < end).then_some(next);
    st.in_flight += records.len();
    // Damaged or deleted records may have shrunk the backlog without a send.
    shared.report_pending(&st);
    records
        .into_iter()
        .map(|(seq, body)| Entry {
            seq: Some(seq),
            body: Bytes::from(body),
        })
        .collect()
}

/// Batches in flight, in the order they were taken. Spooled sequence
/// numbers grow in that order, so the answered prefix can be acknowledged.
#[derive(Default)]
struct Window {
    /// (batch id, highest spooled seq in it, answered)
    batches: VecDeque<(u64, Option<u64>, bool)>,
    next_id: u64,
    /// Everything at or below this was answered for.
    answered_through: Option<u64>,
    /// What the spool's ledger holds.
    persisted_through: Option<u64>,
}

impl Window {
    fn open(&mut self, batch: &[Entry]) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.batches
            .push_back((id, batch.iter().filter_map(|e| e.seq).max(), false));
        id
    }

    fn answered(&mut self, id: u64) {
        if let Some(b) = self.batches.iter_mut().find(|b| b.0 == id) {
            b.2 = true;
        }
        while self.batches.front().is_some_and(|b| b.2) {
            if let Some((_, Some(seq), _)) = self.batches.pop_front() {
                self.answered_through = Some(self.answered_through.map_or(seq, |a| a.max(seq)));
            }
        }
    }
}

/// Whether [`maintain`] runs on the cadence, or once more at shutdown (when
/// a spare segment would only be deleted by the next start).
#[derive(Debug, Clone, Copy)]
enum Cadence {
    Running,
    Stopping,
}

/// Syncs the spool, records in its ledger what was answered for, and
/// prepares the next segment (a spare of zeros) when none is ready. Done on
/// a cadence rather than per batch: the ledger write costs two fsyncs, and a
/// crash before it only means some records are sent again (and deduplicated).
/// The flush and the ledger write run off the lock, so `publish` is not held up by them.
async fn maintain(shared: &Shared, window: &mut Window, cadence: Cadence) {
    let (ack, sync, spare) = {
        let mut st = shared.lock();
        let Some(spool) = st.spool.as_mut() else {
            return;
        };
        let ack = window
            .answered_through
            .filter(|seq| window.persisted_through < Some(*seq))
            .map(|seq| (seq, spool.ack_work(seq)));
        metrics::gauge!(m::SPOOL_BYTES).set(approx_f64(spool.disk_bytes()));
        let spare = match cadence {
            Cadence::Running => spool.spare_work(),
            Cadence::Stopping => None,
        };
        (ack, spool.sync_work(), spare)
    };
    // Data first, then the ledger that lets it go, then the next segment's
    // zeros; all off the lock.
    let (synced, acked, prepared) = tokio::task::spawn_blocking(move || {
        let synced = sync.and_then(crate::spool::SyncWork::run);
        let acked = ack.map(|(seq, work)| work.run().map(|()| seq));
        let prepared = spare.map(crate::spool::SpareWork::run);
        (synced, acked, prepared)
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    if let Err(e) = synced {
        shared.count_spool_error();
        tracing::error!(error = %e, "cannot fsync the spool");
    }
    if let Some(Err(e)) = prepared {
        if let Some(spool) = shared.lock().spool.as_mut() {
            spool.spare_failed();
        }
        shared.count_spool_error();
        tracing::warn!(error = %e, "cannot prepare the next spool segment; it will write its own zeros");
    }
    match acked {
        Some(Ok(seq)) => window.persisted_through = Some(seq),
        Some(Err(e)) => {
            if let Some(spool) = shared.lock().spool.as_mut() {
                spool.ledger_unwritten();
            }
            shared.count_spool_error();
            tracing::error!(error = %e, "cannot record acknowledgements in the spool; records may be sent again after a restart");
        }
        None => {}
    }
}

/// Spools what only memory holds, syncs, and reports.
async fn finish(
    shared: &Shared,
    window: &mut Window,
    unsent: Vec<Entry>,
    acknowledged: u64,
) -> ShutdownReport {
    maintain(shared, window, Cadence::Stopping).await;
    let mut st = shared.lock();
    st.in_flight = 0;
    let memory_only: Vec<Entry> = unsent
        .into_iter()
        .chain(std::mem::take(&mut st.memory))
        .filter(|e| e.seq.is_none())
        .collect();
    let mut lost = 0;
    for entry in memory_only {
        let spooled = st
            .spool
            .as_mut()
            .is_some_and(|s| s.append(&entry.body).is_ok());
        if !spooled {
            lost += 1;
        }
    }
    if lost > 0 {
        shared.count_drops("shutdown", lost);
        tracing::warn!(
            records = lost,
            "audit records lost at shutdown: no room to spool them"
        );
    }
    if let Some(spool) = st.spool.as_mut()
        && let Err(e) = spool.sync_work().and_then(crate::spool::SyncWork::run)
    {
        shared.count_spool_error();
        tracing::error!(error = %e, "cannot fsync the spool");
    }
    let left_in_spool = st
        .spool
        .as_ref()
        .map_or(0, crate::spool::Spool::pending_records);
    // Closing the spool releases its directory for the next run.
    st.spool = None;
    st.backlog_from = None;
    shared.report_pending(&st);
    ShutdownReport {
        acknowledged,
        left_in_spool,
        lost,
    }
}

/// Records taken by no batch yet.
fn untaken(st: &State) -> u64 {
    st.pending() - st.in_flight as u64
}

/// The sender loop: keeps up to `max_in_flight` batches in flight; ends after
/// shutdown with a report.
pub(crate) async fn run(
    shared: Arc<Shared>,
    api: ApiClient,
    mut reader: Option<SpoolReader>,
) -> ShutdownReport {
    let max_in_flight = shared.config.max_in_flight.max(1);
    let mut drain = shared.drain.subscribe();
    // A second view of the same channel: `drain` is marked seen each turn,
    // this one is only waited on for the deadline.
    let mut deadline = shared.drain.subscribe();
    let mut tick =
        tokio::time::interval(shared.config.fsync_interval.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tasks: JoinSet<(u64, Vec<Entry>, Option<u64>)> = JoinSet::new();
    let mut window = Window::default();
    let mut unsent: Vec<Entry> = Vec::new();
    let mut stopping = false;
    let mut acknowledged = 0;
    loop {
        let draining = drain.borrow_and_update().is_some();
        while !stopping && tasks.len() < max_in_flight {
            let waiting = untaken(&shared.lock());
            if waiting == 0 {
                break;
            }
            if tasks.is_empty() && !draining && waiting < shared.config.batch_records as u64 {
                // Let a partial batch fill for a moment.
                tokio::select! {
                    () = tokio::time::sleep(shared.config.linger) => {}
                    _ = drain.changed() => {}
                }
            }
            let batch = take_batch(&shared, &mut reader).await;
            if batch.is_empty() {
                break;
            }
            let id = window.open(&batch);
            let (shared, api) = (shared.clone(), api.clone());
            tasks.spawn(async move {
                let answered = deliver(&shared, &api, &batch).await;
                (id, batch, answered)
            });
        }
        if tasks.is_empty() && (stopping || (draining && untaken(&shared.lock()) == 0)) {
            return finish(&shared, &mut window, unsent, acknowledged).await;
        }
        tokio::select! {
            Some(done) = tasks.join_next() => {
                let (id, batch, answered) = done.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
                let mut st = shared.lock();
                st.in_flight -= batch.len();
                if let Some(n) = answered {
                    acknowledged += n;
                    window.answered(id);
                } else {
                    stopping = true;
                    unsent.extend(batch);
                }
                shared.report_pending(&st);
            }
            () = shared.wake.notified(), if tasks.len() < max_in_flight => {}
            _ = drain.changed() => {}
            // Batches in flight give up at the deadline by themselves; this
            // ends the loop also when records wait but none can be taken (a
            // spool that cannot be read), which would otherwise retry forever.
            () = deadline_passed(&mut deadline), if !stopping => stopping = true,
            _ = tick.tick() => maintain(&shared, &mut window, Cadence::Running).await,
        }
    }
}
