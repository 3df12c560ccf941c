//! The projector: applies the projection queue that ingest fills to the
//! summary table and the rollups, in batches.
//!
//! Ingest stores each new event with a queue row in one transaction; the
//! summary and rollups are a projection of those events. A background task
//! per store takes batches off the queue (one projection at a time, across
//! every copy of the service, under an advisory lock), and every read
//! of the summary first projects what is queued, waiting for batches in
//! flight, so that a read sees every event acknowledged before it began.
//! Retention projects a week's queued rows inside the transaction that moves
//! the week, and leaves out of a row-wise batch any remediation that still
//! has rows queued. A queue row whose event is no longer live, or whose
//! remediation is archived without a live summary row, is skipped, so a
//! late projection never brings an archived remediation back.
//!
//! A batch that fails with a data or constraint error is split in halves
//! until the row at fault is found alone; that row moves to the quarantine
//! table with its error (migration 0011), so that one bad row never holds
//! up the rows behind it. A read waits for the projection for at most the
//! read statement timeout, then fails as a timed-out read would.

use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use remaudit_model::supersedes_sql;
use sqlx::postgres::PgPool;
use sqlx::{AssertSqlSafe, PgConnection, Row};
use tokio::sync::Notify;

use crate::StoreError;

/// The columns of a queue row, named as in `batch_columns!` (postgres.rs).
pub(super) const QUEUE_COLUMNS: &str = "event_id, namespace, alert_fingerprint, remediation_name, \
     overall_phase, phase_rank, start_time, completion_time, remediation_processing_name, \
     ai_analysis_name, workflow_execution_name, kubernetes_execution_name, service_crd_statuses, \
     timeout_phase, timeout_time, failure_phase, failure_reason, duplicate_count, \
     last_duplicate_time, event_time, duration_us, duration_bin, retention_expiry_time";

/// Key of the transaction-level advisory lock every projection takes after
/// the table locks: one projection at a time, across every copy of the
/// service, so that queued rows are applied in queue order (which of two
/// terminal records wins depends on it).
const PROJECTION_LOCK_KEY: i64 = 0x7265_6d61_7072_6f6a;

/// Queue rows one statement projects at most.
pub(super) const BATCH_ROWS: i64 = 5_000;

/// How often the background projector looks at the queue when no write of
/// its own store woke it (another copy of the service may have written).
const POLL: Duration = Duration::from_millis(100);

/// How long the projector lets rows gather after a write woke it, so that
/// it projects them in a few large batches rather than one per write: each
/// statement is planned afresh (it is sent as one message), and the
/// summary upserts and rollup counts of one batch are shared by all its
/// rows. Reads never wait for it: they settle the queue themselves.
const LINGER: Duration = Duration::from_millis(100);

/// Seconds from an event's acknowledgement to its projection: the oldest
/// row of each batch.
pub const LAG_SECONDS: &str = "remaudit_projection_lag_seconds";
/// Buckets of [`LAG_SECONDS`]: the target is under a second.
pub const LAG_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Queue rows projected.
pub const PROJECTED: &str = "remaudit_projection_records_total";
/// Queue rows dropped because their event was no longer live.
pub const SKIPPED: &str = "remaudit_projection_skipped_total";
/// Failed projection batches (each is retried).
pub const ERRORS: &str = "remaudit_projection_errors_total";
/// Queue rows moved to the quarantine table because they failed alone.
pub const QUARANTINED: &str = "remaudit_projection_quarantined_total";
/// Rows in the quarantine table now: events missing from the summary until
/// an operator puts them back.
pub const QUARANTINE_ROWS: &str = "remaudit_projection_quarantine_rows";

/// Registers the projector's metrics' descriptions with the installed
/// recorder, and starts its counters at 0.
pub fn describe_metrics() {
    metrics::describe_histogram!(
        LAG_SECONDS,
        metrics::Unit::Seconds,
        "Seconds from an event's acknowledgement to its projection into the summary and rollups (the oldest event of each projected batch)"
    );
    metrics::describe_counter!(PROJECTED, "Events projected into the summary and rollups");
    metrics::describe_counter!(
        SKIPPED,
        "Queued events dropped unprojected because the event was no longer live (archived or deleted first)"
    );
    metrics::describe_counter!(
        ERRORS,
        "Projection batches that failed and were tried again"
    );
    metrics::describe_counter!(
        QUARANTINED,
        "Queued events that could not be projected even alone, moved to remediation_projection_quarantine"
    );
    metrics::describe_gauge!(
        QUARANTINE_ROWS,
        "Events in remediation_projection_quarantine: stored, but missing from the summary and rollups until put back"
    );
    for counter in [PROJECTED, SKIPPED, ERRORS, QUARANTINED] {
        metrics::counter!(counter).increment(0);
    }
}

/// Which queue rows a projection takes.
#[derive(Debug, Clone, Copy)]
enum Pick {
    /// The oldest.
    Free,
    /// The oldest up to id `$2`, waiting for rows another projector holds
    /// (those are then gone): what a read needs.
    Upto,
    /// Those of the week starting at `$2`.
    Week,
    /// The one with id `$2`.
    One,
}

impl Pick {
    fn sql(self) -> String {
        let filter = match self {
            Pick::Free => "true",
            Pick::Upto => "q.id <= $2",
            Pick::Week => "q.start_time >= $2 AND q.start_time < $2 + INTERVAL '7 days'",
            Pick::One => "q.id = $2",
        };
        format!(
            "SELECT q.id FROM remediation_projection_queue q WHERE {filter} \
             ORDER BY q.id LIMIT $1 FOR UPDATE"
        )
    }
}

/// `project.sql` with the summary rule written in, one per [`Pick`].
static PROJECT_SQL: LazyLock<[String; 4]> = LazyLock::new(|| {
    let base = include_str!("project.sql").replace("__WINS__", &supersedes_sql("ra", "EXCLUDED"));
    [Pick::Free, Pick::Upto, Pick::Week, Pick::One]
        .map(|pick| base.replace("__PICK__", &pick.sql()))
});

/// What one projection statement did.
#[derive(Debug, Default, Clone, Copy)]
struct Batch {
    /// Queue rows taken (quarantined ones included).
    taken: u64,
    /// Of those, rows whose event was live and was applied.
    projected: u64,
    /// Seconds since the oldest row taken was queued.
    lag_seconds: Option<f64>,
}

impl Batch {
    /// The two batches as one.
    fn and(self, other: Self) -> Self {
        Self {
            taken: self.taken + other.taken,
            projected: self.projected + other.projected,
            lag_seconds: match (self.lag_seconds, other.lag_seconds) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
        }
    }

    fn record(self) {
        if self.taken == 0 {
            return;
        }
        metrics::counter!(PROJECTED).increment(self.projected);
        if self.taken > self.projected {
            let skipped = self.taken - self.projected;
            metrics::counter!(SKIPPED).increment(skipped);
            tracing::warn!(
                rows = skipped,
                "projection rows whose event is no longer live were dropped (archived or deleted before they were projected)"
            );
        }
        if let Some(lag) = self.lag_seconds {
            metrics::histogram!(LAG_SECONDS).record(lag.max(0.0));
        }
    }
}

/// What the projection statement's one row says.
fn batch_of(row: &sqlx::postgres::PgRow) -> Result<Batch, StoreError> {
    let count = |name: &str| -> Result<u64, StoreError> {
        Ok(u64::try_from(row.try_get::<i64, _>(name)?).unwrap_or(0))
    };
    let batch = Batch {
        taken: count("taken")?,
        projected: count("projected")?,
        lag_seconds: row.try_get("lag_seconds")?,
    };
    batch.record();
    Ok(batch)
}

/// One batch in a transaction of its own, sent as one message (the table
/// locks, then the statement, with its two numbers written in): the server
/// runs it to its commit without waiting on this process, so a projector
/// whose runtime stalls (or whose process stops) between two awaits never
/// holds queue rows that reads wait for. `upto` is the pick's `$2`; `rows`
/// bounds the batch. With a `limit`, the server cancels any of its
/// statements that runs longer (`SET LOCAL statement_timeout`), so a read
/// that gives up never leaves a statement behind on a pooled connection.
async fn project_batch(
    pool: &PgPool,
    pick: Pick,
    upto: i64,
    rows: i64,
    limit: Option<Duration>,
) -> Result<Batch, StoreError> {
    let statement = PROJECT_SQL[pick as usize]
        .replace("$1", &rows.to_string())
        .replace("$2", &upto.to_string());
    let timeout = limit.map_or_else(String::new, |limit| {
        format!(
            "SET LOCAL statement_timeout = '{}ms'; ",
            limit.as_millis().max(1)
        )
    });
    let rows = sqlx::raw_sql(AssertSqlSafe(format!(
        "{timeout}{}; SELECT pg_advisory_xact_lock({PROJECTION_LOCK_KEY}); {statement}",
        super::TABLE_LOCKS
    )))
    .fetch_all(pool)
    .await?;
    let row = rows
        .last()
        .ok_or(StoreError::Database(sqlx::Error::RowNotFound))?;
    batch_of(row)
}

/// Whether a projection failed because of what one of its rows holds, so
/// that the same rows will fail again however often they are tried: a value
/// the summary's types refuse (bad text for a type, too long, out of range,
/// a bad date, bad JSON) or a NOT NULL or CHECK constraint. Errors that every
/// row would meet alike (a missing table or column, a lock or statement
/// timeout, a lost connection, a unique key) are not, so such a failure
/// stops the projection, to be retried, rather than quarantining the queue.
fn is_bad_data(err: &StoreError) -> bool {
    let StoreError::Database(sqlx::Error::Database(db)) = err else {
        return false;
    };
    db.code().is_some_and(|code| {
        matches!(
            code.as_ref(),
            "22P02" // invalid text representation
                | "22001" // string data right truncation
                | "22003" // numeric value out of range
                | "22007" // invalid datetime format
                | "22008" // datetime field overflow
                | "22021" // character not in repertoire
                | "22P05" // untranslatable character
                | "23502" // not null violation
                | "23514" // check violation
        ) || code.starts_with("2203") // the SQL/JSON errors
    })
}

/// Projects one batch of the oldest queued rows (those with id up to `upto`
/// when given). When the batch fails because of what a row holds
/// ([`is_bad_data`]), it is bisected: the first half of the failing block is
/// tried; whether that fails or is projected, the row at fault lies in the
/// next block of that size, so the size halves each time, down to the
/// oldest row alone, which, if it fails too, goes to the quarantine table
/// with its error. The rows before it are projected in the halves that
/// succeed, in queue order, and finding one bad row among [`BATCH_ROWS`]
/// costs about thirteen statements, most of them small.
async fn project(
    pool: &PgPool,
    upto: Option<i64>,
    limit: Option<Duration>,
) -> Result<Batch, StoreError> {
    let (pick, bound) = match upto {
        Some(upto) => (Pick::Upto, upto),
        None => (Pick::Free, i64::MAX),
    };
    let mut rows = BATCH_ROWS;
    let mut done = Batch::default();
    loop {
        match project_batch(pool, pick, bound, rows, limit).await {
            Ok(batch) if rows == BATCH_ROWS => return Ok(batch),
            Ok(batch) if batch.taken == 0 => return Ok(done),
            Ok(batch) => done = done.and(batch),
            Err(e) if is_bad_data(&e) => {
                tracing::warn!(error = %e, rows, "a projection batch failed on what a row holds; bisecting it");
            }
            Err(e) => return Err(e),
        }
        rows /= 2;
        if rows <= 1 {
            return Ok(done.and(project_oldest_alone(pool, bound, limit).await?));
        }
    }
}

/// Projects the oldest queued row (with id up to `upto`) alone, and moves it
/// to the quarantine table when that fails because of what it holds. Taken
/// by id, so a row another projector took meanwhile is never mistaken for it.
async fn project_oldest_alone(
    pool: &PgPool,
    upto: i64,
    limit: Option<Duration>,
) -> Result<Batch, StoreError> {
    let oldest: Option<i64> = sqlx::query_scalar(
        "SELECT id FROM remediation_projection_queue WHERE id <= $1 ORDER BY id LIMIT 1",
    )
    .bind(upto)
    .fetch_optional(pool)
    .await?;
    let Some(id) = oldest else {
        return Ok(Batch::default());
    };
    match project_batch(pool, Pick::One, id, 1, limit).await {
        Err(e) if is_bad_data(&e) => {
            quarantine(pool, id, &e, limit).await?;
            Ok(Batch {
                taken: 1,
                ..Batch::default()
            })
        }
        other => other,
    }
}

/// `quarantine`'s statement: moves one queue row, named by id, with the
/// error, column by column (so a column the queue gains later cannot shift
/// the values).
static QUARANTINE_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH moved AS (DELETE FROM remediation_projection_queue WHERE id = $1 RETURNING *) \
         INSERT INTO remediation_projection_quarantine (id, queued_at, {QUEUE_COLUMNS}, error) \
         SELECT id, queued_at, {QUEUE_COLUMNS}, $2 FROM moved \
         RETURNING event_id, namespace, remediation_name"
    )
});

/// Moves queue row `id` to the quarantine table with `why`, in one
/// transaction (bounded by `limit`, as [`project_batch`]).
async fn quarantine(
    pool: &PgPool,
    id: i64,
    why: &StoreError,
    limit: Option<Duration>,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    if let Some(limit) = limit {
        sqlx::query("SELECT set_config('statement_timeout', $1, true)")
            .bind(format!("{}ms", limit.as_millis().max(1)))
            .execute(&mut *tx)
            .await?;
    }
    let moved: Option<(uuid::Uuid, String, String)> =
        sqlx::query_as(AssertSqlSafe(QUARANTINE_SQL.as_str()))
            .bind(id)
            .bind(why.to_string())
            .fetch_optional(&mut *tx)
            .await?;
    tx.commit().await?;
    if let Some((event_id, namespace, remediation)) = moved {
        metrics::counter!(QUARANTINED).increment(1);
        count_quarantine(pool).await?;
        tracing::error!(
            %event_id, %namespace, %remediation, error = %why,
            "an event could not be projected into the summary and rollups; it is kept in remediation_projection_quarantine and the rows behind it go on"
        );
    }
    Ok(())
}

/// Sets [`QUARANTINE_ROWS`] from the quarantine table (small: rows arrive
/// there only through a defect).
async fn count_quarantine(pool: &PgPool) -> Result<(), StoreError> {
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM remediation_projection_quarantine")
        .fetch_one(pool)
        .await?;
    #[allow(clippy::cast_precision_loss)]
    metrics::gauge!(QUARANTINE_ROWS).set(rows as f64);
    Ok(())
}

/// Projects, inside the caller's transaction (which holds every table's
/// lock exclusively, so no other projection runs), every queued row of the
/// week starting at `week`, in one statement: rows of one new remediation
/// split over two statements of one transaction would count it new twice.
pub(super) async fn settle_week(
    conn: &mut PgConnection,
    week: DateTime<Utc>,
) -> Result<(), StoreError> {
    let sql = &PROJECT_SQL[Pick::Week as usize];
    let row = sqlx::query(AssertSqlSafe(sql.as_str()))
        .bind(i64::MAX)
        .bind(week)
        .fetch_one(&mut *conn)
        .await?;
    batch_of(&row)?;
    // The week's events go to the archive whole; quarantined rows of it
    // would only keep their names and reasons past the week's retention.
    let purged = sqlx::query(
        "DELETE FROM remediation_projection_quarantine \
         WHERE start_time >= $1 AND start_time < $1 + INTERVAL '7 days'",
    )
    .bind(week)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if purged > 0 {
        tracing::warn!(
            rows = purged,
            week = %week,
            "quarantined projection rows of an archived week were dropped (their events are in the archive)"
        );
    }
    Ok(())
}

/// A projected batch older than this (seconds since its oldest row was
/// queued) says the projector is falling behind the writes.
const LAG_LIMIT_SECONDS: f64 = 0.5;

/// The longest a write waits for the projector to catch up.
const PACE_WAIT: Duration = Duration::from_secs(2);

/// The store's side of the projector: wakes the background task after a
/// write, holds writes back while it falls behind, and lets reads settle
/// the queue one at a time.
#[derive(Debug, Default)]
pub(super) struct Projector {
    wake: Notify,
    /// The last batch was full, or older than [`LAG_LIMIT_SECONDS`].
    behind: std::sync::atomic::AtomicBool,
    /// Notified when a batch finds the projector caught up.
    caught_up: Notify,
    /// Held by the read settling the queue: others wait here, not on the
    /// queue's row locks, so that a backlog costs the pool one connection
    /// however many reads wait for it.
    settling: tokio::sync::Mutex<()>,
    /// The longest a read waits for [`Projector::settle`]; `None` for no limit.
    settle_limit: Option<Duration>,
}

impl Projector {
    /// Starts the background projector of a store; it stops once every
    /// handle to `projector` is dropped or the pool is closed. Reads wait
    /// for it at most `settle_limit`.
    pub(super) fn start(pool: PgPool, settle_limit: Option<Duration>) -> Arc<Self> {
        let projector = Arc::new(Self {
            settle_limit,
            ..Self::default()
        });
        tokio::spawn(run(pool, Arc::downgrade(&projector)));
        projector
    }

    /// Says that events were queued.
    pub(super) fn queued(&self) {
        self.wake.notify_one();
    }

    /// Records whether the projector is behind, after a batch.
    fn paced(&self, behind: bool) {
        self.behind
            .store(behind, std::sync::atomic::Ordering::Relaxed);
        if !behind {
            self.caught_up.notify_waiters();
        }
    }

    /// Holds a write's answer while the projector is behind, until it
    /// catches up or [`PACE_WAIT`] passes: when writes come faster than the
    /// summary and rollups can take them, the writers slow down instead of
    /// the projection falling ever further behind (its lag stays bounded,
    /// and the queue with it).
    pub(super) async fn keep_pace(&self) {
        let deadline = tokio::time::Instant::now() + PACE_WAIT;
        while self.behind.load(std::sync::atomic::Ordering::Relaxed) {
            // Created before the check below, so a notification between the
            // two is not lost.
            let caught_up = self.caught_up.notified();
            if !self.behind.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            if tokio::time::timeout_at(deadline, caught_up).await.is_err() {
                return;
            }
        }
    }

    /// Projects everything queued before the call, waiting for batches
    /// other projectors have in flight: after it, a read sees every
    /// acknowledged event in the summary and the rollups. Rows queued after
    /// the call are left to the background task, so a stream of writes
    /// cannot hold a read up. Costs one index probe when the queue is empty.
    ///
    /// # Errors
    /// [`StoreError::Behind`] when that takes longer than the store's read
    /// statement timeout (a backlog after an outage, or a projection held up
    /// by a lock): the read fails with a clear error rather than holding
    /// its caller without end, and the server cancels the statement it was
    /// running, so its connection goes back to the pool. What was projected
    /// meanwhile stays projected.
    pub(super) async fn settle(&self, pool: &PgPool) -> Result<(), StoreError> {
        self.settle_within(pool, self.settle_limit).await
    }

    /// [`Projector::settle`] without a time limit, for retention, which must
    /// see every event of what it moves however long the backlog takes.
    pub(super) async fn settle_fully(&self, pool: &PgPool) -> Result<(), StoreError> {
        self.settle_within(pool, None).await
    }

    async fn settle_within(
        &self,
        pool: &PgPool,
        limit: Option<Duration>,
    ) -> Result<(), StoreError> {
        let Some(limit) = limit else {
            return self.settle_until(pool, None).await;
        };
        let behind = || {
            StoreError::Behind(format!(
                "the events queued before this read were not all projected within {} ms (a backlog, or a projection held up by a lock); nothing is lost, retry shortly",
                limit.as_millis()
            ))
        };
        let deadline = tokio::time::Instant::now() + limit;
        // The server cancels each statement at the deadline; this bound only
        // covers a server that stops answering altogether.
        match tokio::time::timeout_at(
            deadline + PAST_DEADLINE,
            self.settle_until(pool, Some(deadline)),
        )
        .await
        {
            Ok(Err(e)) if e.is_timeout() => Err(behind()),
            Ok(result) => result.map_err(|e| if e.is_behind() { behind() } else { e }),
            Err(_) => Err(behind()),
        }
    }

    /// Projects up to the newest row queued now, each statement bounded by
    /// what is left until `deadline`.
    async fn settle_until(
        &self,
        pool: &PgPool,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(), StoreError> {
        let last = sqlx::query_scalar::<_, Option<i64>>(
            "SELECT max(id) FROM remediation_projection_queue",
        )
        .fetch_one(pool)
        .await?;
        let Some(last) = last else {
            return Ok(());
        };
        let left = || match deadline {
            None => Ok(None),
            Some(deadline) => {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    Err(StoreError::Behind(String::new()))
                } else {
                    Ok(Some(left))
                }
            }
        };
        let _turn = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, self.settling.lock())
                .await
                .map_err(|_| StoreError::Behind(String::new()))?,
            None => self.settling.lock().await,
        };
        while project(pool, Some(last), left()?).await?.taken > 0 {}
        Ok(())
    }
}

/// How long past its deadline a settling read waits for a server that no
/// longer answers, beyond the statement timeout the server applies itself.
const PAST_DEADLINE: Duration = Duration::from_secs(5);

/// Whether anything is queued (one index probe).
async fn queued(pool: &PgPool) -> Result<bool, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM remediation_projection_queue)")
            .fetch_one(pool)
            .await?,
    )
}

/// How often the background projector refreshes [`QUARANTINE_ROWS`]
/// (it is also refreshed whenever a row is quarantined).
const COUNT_QUARANTINE_EVERY: Duration = Duration::from_secs(30);

/// The background loop: projects batches while there are full ones, then
/// waits to be woken (and lingers), or for the poll interval.
async fn run(pool: PgPool, projector: Weak<Projector>) {
    let full = u64::try_from(BATCH_ROWS).unwrap_or(u64::MAX);
    let mut failures: u32 = 0;
    let mut counted: Option<tokio::time::Instant> = None;
    loop {
        if pool.is_closed() {
            return;
        }
        if counted.is_none_or(|at| at.elapsed() >= COUNT_QUARANTINE_EVERY) {
            counted = Some(tokio::time::Instant::now());
            if let Err(e) = count_quarantine(&pool).await {
                tracing::warn!(error = %e, "could not count the quarantined projection rows");
            }
        }
        let result = match queued(&pool).await {
            Ok(true) => project(&pool, None, None).await,
            Ok(false) => Ok(Batch::default()),
            Err(e) => Err(e),
        };
        let Some(projector) = projector.upgrade() else {
            return;
        };
        let pause = match result {
            Ok(batch) => {
                failures = 0;
                let is_full = batch.taken >= full;
                projector
                    .paced(is_full || batch.lag_seconds.is_some_and(|l| l > LAG_LIMIT_SECONDS));
                if is_full {
                    continue;
                }
                POLL
            }
            Err(e) => {
                if pool.is_closed() {
                    return;
                }
                failures = failures.saturating_add(1);
                metrics::counter!(ERRORS).increment(1);
                tracing::warn!(error = %e, "projection batch failed; trying again");
                POLL * failures.min(50)
            }
        };
        if tokio::time::timeout(pause, projector.wake.notified())
            .await
            .is_ok()
        {
            drop(projector);
            tokio::time::sleep(LINGER).await;
        }
    }
}
