//! Scale-out: two `remaudit serve` processes on one PostgreSQL database take
//! the same stream of records at once, each record sent to both in another
//! order, while both run the retention job on their own schedule with the
//! real clock; then the same with one of them killed (SIGKILL) while it is
//! ingesting and holds a retention batch.
//!
//! The stream has three parts:
//! - a cohort of remediations that finished just under a day ago: accepted
//!   when they arrive, due for retention (`--retention-days 1`) seconds later,
//!   so both servers' runs archive them while the stream goes on. Half the
//!   cohort opens one server's stream and half the other's; their second
//!   copies go out only once every cohort remediation is archived, so each is
//!   judged against the archive;
//! - fresh remediations, started half an hour ago, never due during the test;
//! - stragglers: a new transition of an archived cohort remediation, sent to
//!   both servers after the archiving. The store refuses records of archived
//!   remediations (they would come back as a live row that never expires),
//!   so both servers answer `rejected` (`archived`) and neither stores them.
//!
//! Server A takes the records forward. Server B takes the cohort backward
//! and the fresh remediations in A's order but each one's transitions
//! backward (its terminal record first), so that both servers write the same
//! remediations at the same moments. Each server cuts its stream into
//! requests of its own random sizes, as batches or concurrent single records.

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use remaudit_store::{PoolSettings, RetentionPolicy};
use remaudit_testkit::history::{Written, load};
use remaudit_testkit::{PgDb, wait_for};

use crate::helpers::{Running, free_port, remaudit, wait_healthy};

mod checks;
mod send;
mod stream;

use send::Senders;
use stream::Stream;

/// The namespace of every streamed record (the history uses others).
const NAMESPACE: &str = "scale";
/// Name prefix of the cohort's remediations.
const COHORT: &str = "cohort-";
/// The first cohort remediation falls due this long after the stream is made…
const DUE_AFTER: TimeDelta = TimeDelta::seconds(5);
/// …and the last this much later.
const DUE_SPREAD: TimeDelta = TimeDelta::seconds(5);
/// Cohort remediations (half at each end of the stream).
const COHORT_SIZE: usize = 40;
/// Fresh remediations in the middle of the stream.
const FRESH_SIZE: usize = 1100;
/// Rows one row-wise retention batch moves: small, so runs take many batches.
const BATCH_ROWS: &str = "25";

/// Longest wait for any one condition.
const PATIENCE: Duration = Duration::from_mins(1);

/// A batch of the journal: its number, its run's clock, when it began and
/// when it finished.
type Journal = (i64, DateTime<Utc>, DateTime<Utc>, DateTime<Utc>);

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

async fn scalar(pool: &sqlx::PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// One `remaudit serve` process: its port and settings stay the same across
/// a kill and a restart.
struct Server {
    name: &'static str,
    port: u16,
    database_url: String,
    archive_url: String,
    process: Option<Running>,
}

impl Server {
    /// A server on `db` whose connections carry `name` as their
    /// `application_name`, so that the database says which one holds a lock.
    fn new(name: &'static str, db: &PgDb, archive_url: &str) -> Self {
        let separator = if db.url().contains('?') { '&' } else { '?' };
        Self {
            name,
            port: free_port(),
            database_url: format!("{}{separator}application_name={name}", db.url()),
            archive_url: archive_url.to_owned(),
            process: None,
        }
    }

    /// Starts it with a one-day retention run every second, and waits until
    /// it answers.
    async fn start(&mut self) {
        let child = remaudit()
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{}", self.port),
                "--database-url",
                &self.database_url,
                "--retention-days",
                "1",
                "--retention-interval-secs",
                "1",
                "--retention-batch-rows",
                BATCH_ROWS,
                "--retention-exact",
                "--archive-url",
                &self.archive_url,
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn remaudit serve");
        self.process = Some(Running(child));
        wait_healthy(self.port).await;
    }

    /// SIGKILL, and the exit reaped.
    fn kill(&mut self) {
        let mut process = self.process.take().expect("a running server");
        process.0.kill().expect("SIGKILL");
        let status = process.0.wait().expect("wait");
        assert!(!status.success(), "{}: killed, got {status:?}", self.name);
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A counter or gauge from its `/metrics`, summed over the series whose
    /// labels contain `labels`.
    async fn metric(&self, name: &str, labels: &str) -> f64 {
        let text = crate::helpers::metrics_text(&reqwest::Client::new(), &self.url())
            .await
            .expect("metrics");
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
            .filter(|l| l.contains(labels))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }
}

/// A database with 120 days of history written straight through the store
/// under the servers' policy (all but its last day due at once), an archive
/// directory, and two servers. Fields drop in order: the servers go before
/// their database.
struct Setup {
    a: Server,
    b: Server,
    history: Written,
    /// Each history remediation: namespace, name, start (to the microsecond).
    history_keys: HashSet<(String, String, DateTime<Utc>)>,
    archive: tempfile::TempDir,
    pool: sqlx::PgPool,
    db: PgDb,
}

impl Setup {
    /// `weeks`: give the history its weekly partitions, so that whole weeks
    /// leave as partition batches; without, it sits in the default partition
    /// and leaves row by row.
    async fn new(weeks: bool) -> Self {
        let db = PgDb::create().await;
        // The store sets each row's expiry as it writes it, by its policy:
        // the servers' one (a day), so that the history is due at once.
        let policy = RetentionPolicy {
            age: TimeDelta::days(1),
            terminal_only: true,
        };
        let store = remaudit_store::connect_with(db.url(), PoolSettings::default(), policy)
            .await
            .expect("open the store");
        let now = Utc::now();
        let history = load(store.as_ref(), now).await;
        let history_keys = remaudit_testkit::history::history(now)
            .0
            .into_iter()
            .map(|r| {
                let start = DateTime::from_timestamp_micros(r.start_time.timestamp_micros());
                (r.namespace, r.remediation_name, start.expect("in range"))
            })
            .collect();
        if weeks {
            store
                .ensure_partitions(now - TimeDelta::days(130), now + TimeDelta::days(35))
                .await
                .expect("partitions");
        }
        store.close().await;
        let pool = db.pool().await;
        let archive = tempfile::tempdir().expect("archive dir");
        let archive_url = format!("file://{}", archive.path().display());
        let a = Server::new("scale-a", &db, &archive_url);
        let b = Server::new("scale-b", &db, &archive_url);
        Self {
            a,
            b,
            history,
            history_keys,
            archive,
            pool,
            db,
        }
    }

    /// Waits until retention has nothing left: no row due, no batch pending,
    /// no week detached.
    async fn settle(&self) {
        let pool = &self.pool;
        wait_for("retention to archive every due row", PATIENCE, move || async move {
            let left = scalar(
                pool,
                "SELECT (SELECT count(*) FROM remediation_audit \
                   WHERE NOT legal_hold AND (deleted_at IS NOT NULL OR retention_expiry_time <= now())) \
                 + (SELECT count(*) FROM remediation_retention_batches WHERE state = 'pending') \
                 + (SELECT count(*) FROM pg_class WHERE relkind = 'r' AND NOT relispartition \
                    AND relname ~ '^remediation_audit_(events_)?w[0-9]{8}$')",
            )
            .await;
            (left == 0).then_some(())
        })
        .await;
    }
}

/// Both servers up from the start, both running retention every second: the
/// history (whole weeks, then rows) and the cohort leave while the stream is
/// stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_two_servers_take_one_stream_and_retention_archives_each_due_row_once() {
    let started = Instant::now();
    let mut s = Setup::new(true).await;
    // Both at once, as replicas of a Deployment start.
    tokio::join!(s.a.start(), s.b.start());
    let stream = Arc::new(Stream::new(Utc::now()));
    let senders = Senders::start(&stream, &s.a, &s.b, s.db.url().to_owned());
    let (a, b, gate) = senders.finish().await;
    let streamed = started.elapsed();
    s.settle().await;
    s.assert_invariants(&stream, &a, &b).await;

    // Both ran the job all along, and what they say they archived is what
    // the archive holds.
    let mut archived = [0.0; 2];
    for server in [&s.a, &s.b] {
        // Runs every second, however busy the machine: wait for three.
        let (ok, skipped) = wait_for(
            &format!("{} to have run retention three times", server.name),
            PATIENCE,
            || async {
                // (+ 0.0: the sum of no series is -0.0)
                let ok = server
                    .metric("remaudit_retention_runs_total", "outcome=\"ok\"")
                    .await
                    + 0.0;
                let skipped = server
                    .metric("remaudit_retention_runs_total", "outcome=\"skipped\"")
                    .await
                    + 0.0;
                (ok + skipped >= 3.0).then_some((ok, skipped))
            },
        )
        .await;
        for (n, table) in ["remediation_audit", "remediation_audit_events"]
            .iter()
            .enumerate()
        {
            archived[n] += server
                .metric(
                    "remaudit_retention_rows_archived_total",
                    &format!("table=\"{table}\""),
                )
                .await;
        }
        println!(
            "{}: {ok} runs that took the lock, {skipped} skipped",
            server.name
        );
    }
    for (n, table) in [
        "remediation_audit_archive",
        "remediation_audit_events_archive",
    ]
    .iter()
    .enumerate()
    {
        let rows = scalar(&s.pool, &format!("SELECT count(*) FROM {table}")).await;
        #[allow(clippy::cast_precision_loss, reason = "a few thousand rows")]
        let rows = rows as f64;
        assert!(
            (archived[n] - rows).abs() < 0.5,
            "{table}: servers say {}, table has {rows}",
            archived[n]
        );
    }
    println!(
        "cohort archived {gate:?} after the stream began; streams done after {streamed:?}; all checked after {:?}",
        started.elapsed()
    );
}

/// Server A is killed (SIGKILL) while it ingests and while its retention run
/// holds a row-wise batch whose data files are written; B goes on taking the
/// stream, its next run removes A's batch, and A comes back and takes the
/// requests it had not answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_a_server_killed_holding_a_retention_batch_loses_and_doubles_nothing() {
    let started = Instant::now();
    let mut s = Setup::new(false).await;
    // Hold the chain head of the first due remediation, as a write in flight
    // on it would: the first row-wise batch, which moves it, writes its two
    // data files and then waits for that row before its manifest.
    // (Found first, on its own: a transaction that read the audit tables
    // would hold them against the run's partition changes.)
    let (namespace, name, start): (String, String, DateTime<Utc>) = sqlx::query_as(
        "SELECT namespace, remediation_name, start_time FROM remediation_audit \
         WHERE retention_expiry_time IS NOT NULL ORDER BY retention_expiry_time, id LIMIT 1",
    )
    .fetch_one(&s.pool)
    .await
    .expect("the first due remediation");
    let hold_pool = s.db.pool().await;
    let mut hold = hold_pool.begin().await.expect("begin");
    let holder: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *hold)
        .await
        .expect("pid");
    let locked = sqlx::query(
        "SELECT 1 FROM remediation_chain_heads \
         WHERE namespace = $1 AND remediation_name = $2 AND start_time = $3 FOR UPDATE",
    )
    .bind(&namespace)
    .bind(&name)
    .bind(start)
    .fetch_all(&mut *hold)
    .await
    .expect("lock a chain head");
    assert_eq!(locked.len(), 1, "{name} has a chain head");

    // A starts alone, so that its start-up run is the one that takes the batch.
    s.a.start().await;
    let archive = s.archive.path().to_owned();
    let archive = archive.as_path();
    let pool = &s.pool;
    let (batch, location): (i64, String) = wait_for(
        "server A to hold a batch with its data files written",
        PATIENCE,
        move || {
            async move {
                let pending: Option<(i64, String)> = sqlx::query_as(
                    "SELECT b.id, b.location FROM remediation_retention_batches b \
                     WHERE b.state = 'pending' \
                       AND EXISTS (SELECT 1 FROM pg_stat_activity a \
                                   WHERE a.application_name = 'scale-a' \
                                     AND $1 = ANY (pg_blocking_pids(a.pid))) \
                       AND EXISTS (SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                                   WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted \
                                     AND a.application_name = 'scale-a')",
                )
                .bind(holder)
                .fetch_optional(pool)
                .await
                .expect("journal");
                pending.filter(|(_, location)| wrote_both_tables(&archive.join(location)))
            }
        },
    )
    .await;
    s.b.start().await;

    let stream = Arc::new(Stream::new(Utc::now()));
    let senders = Senders::start(&stream, &s.a, &s.b, s.db.url().to_owned());
    let third = senders.a_requests / 3;
    let answered = &senders.a_answered;
    wait_for(
        "server A to answer a third of its requests",
        PATIENCE,
        move || async move { (answered.load(Ordering::Relaxed) >= third).then_some(()) },
    )
    .await;
    s.a.kill();
    let killed_at = started.elapsed();
    // The dead server's batch cannot commit: it stays pending, files and all.
    assert_eq!(
        scalar(
            pool,
            &format!("SELECT count(*) FROM remediation_retention_batches WHERE id = {batch} AND state = 'pending'"),
        )
        .await,
        1,
        "the killed server's batch is left pending"
    );
    assert!(
        wrote_both_tables(&archive.join(&location)),
        "its files are still there"
    );
    hold.rollback().await.expect("release the chain head");

    // The survivor's next run removes the batch's files and its journal row.
    let location = location.as_str();
    wait_for(
        "server B to clean up the killed server's batch",
        PATIENCE,
        move || {
            let dir = archive.join(location);
            async move {
                let left = scalar(
                    pool,
                    &format!(
                        "SELECT count(*) FROM remediation_retention_batches WHERE id = {batch}"
                    ),
                )
                .await;
                let files = std::fs::read_dir(&dir).map_or(0, Iterator::count);
                (left == 0 && files == 0).then_some(())
            }
        },
    )
    .await;
    let cleaned_at = started.elapsed();
    s.a.start().await;
    let (a, b, gate) = senders.finish().await;
    let streamed = started.elapsed();
    s.settle().await;
    s.assert_invariants(&stream, &a, &b).await;
    println!(
        "killed A at {killed_at:?} holding batch {batch}; B cleaned it by {cleaned_at:?}; \
         cohort archived {gate:?} after the stream began; streams done after {streamed:?}; all checked after {:?}",
        started.elapsed()
    );
}

/// Whether a batch's directory holds a file of each table: JSON Lines, or a
/// first Parquet part of some week.
fn wrote_both_tables(dir: &std::path::Path) -> bool {
    ["remediation_audit", "remediation_audit_events"]
        .iter()
        .all(|table| {
            dir.join(format!("{table}.jsonl.gz")).is_file()
                || std::fs::read_dir(dir.join(format!("table={table}"))).is_ok_and(|weeks| {
                    weeks
                        .flatten()
                        .any(|week| week.path().join("part-0.parquet").is_file())
                })
        })
}
