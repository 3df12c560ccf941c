//! Group commit for single-record POSTs.
//!
//! Each single POST used to be its own transaction and its own commit, so a
//! burst of them queued on the database's commit rate. Here a few writer
//! tasks take records from one queue: a writer takes the record at the head
//! and every record queued behind it (up to a batch), and stores them in one
//! transaction. Under light load a record finds an idle writer and is written
//! alone at once; under heavy load the records that arrived while a commit
//! was running share the next one. Each caller is answered only after the
//! transaction that holds its record has committed, so `201` still means
//! durable.
//!
//! A batch that fails as a whole is written again one record at a time, so
//! one record can never cost another its write. Records of one batch are
//! judged as if they had arrived one after another in queue order (a second
//! record with the same key is a duplicate or a conflict of the first).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use remaudit_model::NewAudit;
use remaudit_store::{InsertOutcome, InsertRules, Store, StoreError};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::settings::ServerSettings;
use crate::telemetry::SINGLE_POSTS_WAITING;

/// Writer tasks, and so transactions of single records in flight at once.
const WRITERS: usize = 4;

/// One record waiting for its transaction.
struct Pending {
    record: NewAudit,
    /// When its request arrived: the store's time rules (the retention
    /// cutoff for new remediations) are taken from the batch's earliest.
    received: DateTime<Utc>,
    reply: oneshot::Sender<Result<InsertOutcome, StoreError>>,
}

/// The queue of single records and the writers that store them.
pub(crate) struct Coalescer {
    queue: mpsc::Sender<Pending>,
}

impl Coalescer {
    /// Starts the writers over `store`; they stop when the coalescer is
    /// dropped and its queue is empty.
    pub(crate) fn start(store: &Arc<dyn Store>, settings: &Arc<ServerSettings>) -> Self {
        // Never more than a batch POST may carry.
        let batch = settings
            .single_post_batch_records
            .clamp(1, settings.max_batch_records.max(1));
        // Each waiting record is a request in flight, which the service
        // bounds (max_concurrent_requests); the queue holds that many.
        let (queue, receiver) = mpsc::channel(settings.max_concurrent_requests.max(1));
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..WRITERS {
            tokio::spawn(write_batches(
                store.clone(),
                settings.clone(),
                receiver.clone(),
                batch,
            ));
        }
        Self { queue }
    }

    /// Stores `record` (its request arrived at `received`), sharing a
    /// transaction with the records queued beside it; returns once that
    /// transaction has committed (or failed).
    pub(crate) async fn insert(
        &self,
        record: NewAudit,
        received: DateTime<Utc>,
    ) -> Result<InsertOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        // A place in the queue first: a request dropped while it waits for
        // one has queued nothing and counted nothing.
        let Ok(place) = self.queue.reserve().await else {
            return Err(StoreError::Unavailable(
                "the service is shutting down".to_owned(),
            ));
        };
        metrics::gauge!(SINGLE_POSTS_WAITING).increment(1.0);
        place.send(Pending {
            record,
            received,
            reply,
        });
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the record's writer stopped before answering".to_owned(),
            ))
        })
    }
}

/// One writer: takes the head of the queue and what is queued behind it, up
/// to `batch` records, and stores them together.
async fn write_batches(
    store: Arc<dyn Store>,
    settings: Arc<ServerSettings>,
    receiver: Arc<Mutex<mpsc::Receiver<Pending>>>,
    batch: usize,
) {
    let mut taken = Vec::with_capacity(batch);
    loop {
        {
            let mut queue = receiver.lock().await;
            if queue.recv_many(&mut taken, batch).await == 0 {
                return;
            }
        }
        let count = remaudit_model::approx_f64(taken.len());
        // In a task of its own, so that a panic costs this batch (its
        // callers hear that the writer stopped) and not the writer.
        let (store, settings, pending) =
            (store.clone(), settings.clone(), std::mem::take(&mut taken));
        if tokio::spawn(async move { write(&*store, &settings, pending).await })
            .await
            .is_err()
        {
            tracing::error!("a single-POST batch write panicked; its callers were answered 503");
        }
        metrics::gauge!(SINGLE_POSTS_WAITING).decrement(count);
    }
}

/// Stores `pending` in one transaction and answers each caller (a caller
/// that gave up, on a timeout or a closed connection, is no longer waiting).
/// When the database is unavailable, every caller hears so; when the
/// transaction fails otherwise, each record is stored alone.
async fn write(store: &dyn Store, settings: &ServerSettings, pending: Vec<Pending>) {
    let earliest = pending
        .iter()
        .map(|p| p.received)
        .min()
        .unwrap_or_else(Utc::now);
    let rules = crate::routes::audit::insert_rules(settings, earliest);
    if let [_, _, ..] = pending.as_slice() {
        let records: Vec<NewAudit> = pending.iter().map(|p| p.record.clone()).collect();
        let unavailable = match store.insert_with(&records, &rules).await {
            Ok(outcomes) if outcomes.len() == pending.len() => {
                for (p, outcome) in pending.into_iter().zip(outcomes) {
                    let _ = p.reply.send(Ok(outcome));
                }
                return;
            }
            // Committed, but not answerable record by record: never written twice.
            Ok(_) => {
                Some("the store answered a batch with the wrong number of outcomes".to_owned())
            }
            Err(StoreError::Unavailable(why)) => Some(why),
            // Written alone below: a failure one record caused stays its own.
            Err(_) => None,
        };
        if let Some(why) = unavailable {
            for p in pending {
                let _ = p.reply.send(Err(StoreError::Unavailable(why.clone())));
            }
            return;
        }
    }
    for p in pending {
        let _ = p.reply.send(insert_one(store, &p.record, &rules).await);
    }
}

/// Stores one record in a transaction of its own: what a single POST does
/// when it shares no commit, and what a shared batch falls back to.
pub(crate) async fn insert_one(
    store: &dyn Store,
    record: &NewAudit,
    rules: &InsertRules,
) -> Result<InsertOutcome, StoreError> {
    store
        .insert_with(std::slice::from_ref(record), rules)
        .await?
        .first()
        .copied()
        .ok_or_else(|| StoreError::Unavailable("the store answered no outcome".to_owned()))
}
