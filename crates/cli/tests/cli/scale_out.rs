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
//! Server A takes the records forward, server B backward (a remediation's
//! terminal record first), in requests of random size, as batches or as
//! concurrent single records.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use rand::{Rng, SeedableRng};
use remaudit_api::audit::{BatchResponse, ItemStatus, StoreResult};
use remaudit_api::{Problem, paths};
use remaudit_store::{PoolSettings, RetentionPolicy};
use remaudit_testkit::history::{Written, load};
use remaudit_testkit::{PgDb, wait_for};
use serde_json::json;
use tokio::sync::watch;
use uuid::Uuid;

use crate::helpers::{Running, free_port, remaudit, wait_healthy};

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
        let text = reqwest::get(format!("{}{}", self.url(), paths::METRICS))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
            .filter(|l| l.contains(labels))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Falls due seconds after the stream starts; archived while it runs.
    Cohort,
    /// Started half an hour ago; never due during the test.
    Fresh,
    /// A new transition of a cohort remediation, sent after it was archived.
    Straggler,
}

/// One record of the stream, as both servers receive it.
struct Record {
    text: String,
    event_id: Uuid,
    remediation: String,
    kind: Kind,
}

/// The records, and the parts the two servers take them in.
struct Stream {
    records: Vec<Record>,
    /// Cohort records that open server A's stream (and close B's).
    head: Vec<usize>,
    middle: Vec<usize>,
    /// Cohort records that open server B's stream (and close A's).
    tail: Vec<usize>,
    stragglers: Vec<usize>,
}

impl Stream {
    /// The stream as of `now`: the cohort falls due from `now + DUE_AFTER`.
    fn new(now: DateTime<Utc>) -> Self {
        let mut stream = Self {
            records: Vec::new(),
            head: Vec::new(),
            middle: Vec::new(),
            tail: Vec::new(),
            stragglers: Vec::new(),
        };
        let cohort = i32::try_from(COHORT_SIZE).expect("small");
        for j in 0..cohort {
            // Completed one second after it started, so that it expires (and
            // is refused as new) a day after its start plus that second.
            let due = now + DUE_AFTER + DUE_SPREAD * j / cohort;
            let start = due - TimeDelta::days(1) - TimeDelta::seconds(1);
            let name = format!("{COHORT}{j:03}");
            for (phase, after) in [("processing", 0), ("executing", 500), ("completed", 1000)] {
                let at = start + TimeDelta::milliseconds(after);
                let i = stream.push(&name, phase, start, at, Kind::Cohort);
                if j < cohort / 2 {
                    stream.head.push(i);
                } else {
                    stream.tail.push(i);
                }
            }
            if j % 4 == 0 {
                let at = start + TimeDelta::seconds(1);
                let i = stream.push(&name, "completed", start, at, Kind::Straggler);
                stream.stragglers.push(i);
            }
        }
        for i in 0..FRESH_SIZE {
            let start = now - TimeDelta::minutes(30)
                + TimeDelta::seconds(2 * i64::try_from(i).expect("small"));
            let name = format!("fresh-{i:04}");
            let phases: &[&str] = match i % 3 {
                0 => &["processing", "executing", "completed"],
                1 => &["processing", "executing", "failed"],
                _ => &["processing", "executing"],
            };
            for (n, phase) in (0..).zip(phases) {
                let at = start + TimeDelta::seconds(10 * (n + 1));
                let r = stream.push(&name, phase, start, at, Kind::Fresh);
                stream.middle.push(r);
            }
        }
        stream
    }

    fn push(
        &mut self,
        name: &str,
        phase: &str,
        start: DateTime<Utc>,
        at: DateTime<Utc>,
        kind: Kind,
    ) -> usize {
        let event_id = Uuid::new_v4();
        let mut record = json!({
            "alert_fingerprint": format!("fp-{}", self.records.len() % 13),
            "remediation_name": name,
            "namespace": NAMESPACE,
            "overall_phase": phase,
            "start_time": time(start),
            "event_time": time(at),
            "event_id": event_id,
        });
        if matches!(phase, "completed" | "failed") {
            record["completion_time"] = json!(time(at));
        }
        if phase == "failed" {
            record["failure_phase"] = json!("executing");
            record["failure_reason"] = json!("pod OOMKilled");
        }
        self.records.push(Record {
            text: record.to_string(),
            event_id,
            remediation: name.to_owned(),
            kind,
        });
        self.records.len() - 1
    }

    fn cohort_names(&self) -> BTreeSet<&str> {
        self.records
            .iter()
            .filter(|r| r.kind == Kind::Cohort)
            .map(|r| r.remediation.as_str())
            .collect()
    }

    fn fresh_names(&self) -> BTreeSet<&str> {
        self.records
            .iter()
            .filter(|r| r.kind == Kind::Fresh)
            .map(|r| r.remediation.as_str())
            .collect()
    }

    /// Server A's requests: the head, the middle, then (once the cohort is
    /// archived) the tail and the stragglers, in that order.
    fn forward(&self, seed: u64) -> Vec<Step> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut steps = requests(&self.head, &mut rng);
        steps.extend(requests(&self.middle, &mut rng));
        steps.push(Step::Gate);
        steps.extend(requests(&self.tail, &mut rng));
        steps.extend(requests(&self.stragglers, &mut rng));
        steps
    }

    /// Server B's requests: everything backwards, the tail first.
    fn backward(&self, seed: u64) -> Vec<Step> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let rev = |part: &[usize]| part.iter().rev().copied().collect::<Vec<_>>();
        let mut steps = requests(&rev(&self.tail), &mut rng);
        steps.extend(requests(&rev(&self.middle), &mut rng));
        steps.push(Step::Gate);
        steps.extend(requests(&rev(&self.head), &mut rng));
        steps.extend(requests(&rev(&self.stragglers), &mut rng));
        steps
    }
}

/// One step of a server's stream.
#[derive(Debug, Clone)]
enum Step {
    /// One batch request.
    Batch(Vec<usize>),
    /// Single-record requests, sent concurrently.
    Singles(Vec<usize>),
    /// Wait until every cohort remediation is archived.
    Gate,
}

/// `order` cut into requests of 1 to 40 records, most of them batches.
fn requests(order: &[usize], rng: &mut rand::rngs::StdRng) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut rest = order;
    while !rest.is_empty() {
        let batch = rng.random_bool(0.7);
        let most = if batch { 40 } else { 8 };
        let n = rng.random_range(1..=most).min(rest.len());
        let (now, later) = rest.split_at(n);
        steps.push(if batch {
            Step::Batch(now.to_vec())
        } else {
            Step::Singles(now.to_vec())
        });
        rest = later;
    }
    steps
}

/// What a server answered for one record.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Created,
    Duplicate,
    /// Refused, with the rules it broke.
    Rejected(String),
    Conflict,
    /// Anything else: a status or body the contract does not have here.
    Unexpected(String),
}

impl Outcome {
    fn judged(status: ItemStatus, rules: String) -> Self {
        match status {
            ItemStatus::Created => Self::Created,
            ItemStatus::Duplicate => Self::Duplicate,
            ItemStatus::Rejected => Self::Rejected(rules),
            ItemStatus::Conflict => Self::Conflict,
        }
    }
}

/// Everything one server's stream got back.
#[derive(Debug, Default)]
struct Answers {
    /// The final answer for each record, by record index.
    outcomes: HashMap<usize, Outcome>,
    /// Records of requests that were cut off (the server died) and sent again.
    interrupted: BTreeSet<usize>,
    /// Answers 503 (the request was sent again).
    busy: u32,
    requests: usize,
    /// When the stream reached its gate (all but the late copies sent).
    at_gate: Duration,
}

/// The HTTP answer to one request, after any repeats.
struct Reply {
    status: u16,
    body: Vec<u8>,
    cut: bool,
    busy: u32,
}

/// Posts `body` until the server answers something other than 503, as a
/// publisher does: a request cut off because the server died is sent again
/// once a server listens on the port.
async fn post(http: &reqwest::Client, url: &str, body: String) -> Reply {
    let cut = AtomicBool::new(false);
    let busy = AtomicU32::new(0);
    let (cut_ref, busy_ref) = (&cut, &busy);
    let (status, body) = wait_for(&format!("{url} to answer a request"), PATIENCE, move || {
        let (cut, busy, body) = (cut_ref, busy_ref, body.clone());
        async move {
            match http
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
            {
                Ok(answer) if answer.status() == 503 => {
                    busy.fetch_add(1, Ordering::Relaxed);
                    None
                }
                Ok(answer) => {
                    let status = answer.status().as_u16();
                    let bytes = answer.bytes().await;
                    cut.fetch_or(bytes.is_err(), Ordering::Relaxed);
                    bytes.ok().map(|b| (status, b.to_vec()))
                }
                Err(_) => {
                    cut.store(true, Ordering::Relaxed);
                    None
                }
            }
        }
    })
    .await;
    Reply {
        status,
        body,
        cut: cut.into_inner(),
        busy: busy.into_inner(),
    }
}

/// Sends `steps` to `url` in order; `answered` counts requests answered.
async fn send(
    url: String,
    steps: Vec<Step>,
    stream: Arc<Stream>,
    mut gate: watch::Receiver<bool>,
    answered: Arc<AtomicUsize>,
) -> Answers {
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut answers = Answers::default();
    let batch_url = format!("{url}{}", paths::AUDIT_BATCH);
    let single_url = format!("{url}{}", paths::AUDIT);
    for step in steps {
        match step {
            Step::Gate => {
                answers.at_gate = started.elapsed();
                tokio::time::timeout(PATIENCE, gate.wait_for(|open| *open))
                    .await
                    .expect("the cohort to be archived in time")
                    .expect("gate");
            }
            Step::Batch(records) => {
                let texts: Vec<&str> = records
                    .iter()
                    .map(|&i| stream.records[i].text.as_str())
                    .collect();
                let reply = post(&http, &batch_url, format!("[{}]", texts.join(","))).await;
                answered.fetch_add(1, Ordering::Relaxed);
                answers.requests += 1;
                answers.busy += reply.busy;
                if reply.cut {
                    answers.interrupted.extend(&records);
                }
                let outcomes: Vec<Outcome> = match reply.status {
                    200 => {
                        let batch: BatchResponse =
                            serde_json::from_slice(&reply.body).expect("a batch answer");
                        assert_eq!(batch.items.len(), records.len(), "one item per record");
                        batch
                            .items
                            .into_iter()
                            .map(|item| {
                                let rules: Vec<String> =
                                    item.errors.into_iter().map(|e| e.rule).collect();
                                Outcome::judged(item.status, rules.join(","))
                            })
                            .collect()
                    }
                    status => {
                        let text = String::from_utf8_lossy(&reply.body);
                        vec![Outcome::Unexpected(format!("batch {status}: {text}")); records.len()]
                    }
                };
                answers
                    .outcomes
                    .extend(records.iter().copied().zip(outcomes));
            }
            Step::Singles(records) => {
                let mut set = tokio::task::JoinSet::new();
                for i in records {
                    let (http, url) = (http.clone(), single_url.clone());
                    let text = stream.records[i].text.clone();
                    set.spawn(async move { (i, post(&http, &url, text).await) });
                }
                while let Some(joined) = set.join_next().await {
                    let (i, reply) = joined.expect("single request");
                    answered.fetch_add(1, Ordering::Relaxed);
                    answers.requests += 1;
                    answers.busy += reply.busy;
                    if reply.cut {
                        answers.interrupted.insert(i);
                    }
                    let outcome = match reply.status {
                        201 => {
                            let stored: StoreResult =
                                serde_json::from_slice(&reply.body).expect("a store result");
                            Outcome::judged(stored.status, String::new())
                        }
                        409 => Outcome::Conflict,
                        422 => {
                            let problem: Problem =
                                serde_json::from_slice(&reply.body).expect("a problem");
                            let rules: Vec<String> =
                                problem.errors.into_iter().map(|e| e.rule).collect();
                            Outcome::Rejected(rules.join(","))
                        }
                        status => Outcome::Unexpected(format!(
                            "single {status}: {}",
                            String::from_utf8_lossy(&reply.body)
                        )),
                    };
                    answers.outcomes.insert(i, outcome);
                }
            }
        }
    }
    answers
}

/// The two servers' streams, running.
struct Senders {
    a: tokio::task::JoinHandle<Answers>,
    b: tokio::task::JoinHandle<Answers>,
    /// Requests server A answered so far.
    a_answered: Arc<AtomicUsize>,
    a_requests: usize,
    gatekeeper: tokio::task::JoinHandle<Duration>,
}

impl Senders {
    /// Starts both streams, and a task that opens their gate once every
    /// cohort remediation is in the archive.
    fn start(stream: &Arc<Stream>, a: &Server, b: &Server, db_url: String) -> Self {
        let (open, gate) = watch::channel(false);
        let started = Instant::now();
        let cohort = i64::try_from(stream.cohort_names().len()).expect("small");
        let gatekeeper = tokio::spawn(async move {
            let pool = sqlx::PgPool::connect(&db_url).await.expect("connect");
            let pool_ref = &pool;
            wait_for(
                "every cohort remediation to be archived",
                PATIENCE,
                move || {
                    let pool = pool_ref;
                    async move {
                        let archived = scalar(
                            pool,
                            &format!(
                                "SELECT count(*) FROM remediation_audit_archive \
                             WHERE namespace = '{NAMESPACE}' AND remediation_name LIKE '{COHORT}%'"
                            ),
                        )
                        .await;
                        (archived == cohort).then_some(())
                    }
                },
            )
            .await;
            pool.close().await;
            // Senders that stopped early (a failed assertion) no longer listen.
            let _ = open.send(true);
            started.elapsed()
        });
        let forward = stream.forward(1);
        let a_requests = count_requests(&forward);
        let a_answered = Arc::new(AtomicUsize::new(0));
        Self {
            a: tokio::spawn(send(
                a.url(),
                forward,
                stream.clone(),
                gate.clone(),
                a_answered.clone(),
            )),
            b: tokio::spawn(send(
                b.url(),
                stream.backward(2),
                stream.clone(),
                gate,
                Arc::new(AtomicUsize::new(0)),
            )),
            a_answered,
            a_requests,
            gatekeeper,
        }
    }

    async fn finish(self) -> (Answers, Answers, Duration) {
        let gate = self.gatekeeper.await.expect("gatekeeper");
        (
            self.a.await.expect("server A's stream"),
            self.b.await.expect("server B's stream"),
            gate,
        )
    }
}

fn count_requests(steps: &[Step]) -> usize {
    steps
        .iter()
        .map(|s| match s {
            Step::Batch(_) => 1,
            Step::Singles(r) => r.len(),
            Step::Gate => 0,
        })
        .sum()
}

/// A database with 120 days of history written straight through the store
/// under the servers' policy (all but its last day due at once), an archive
/// directory, and two servers. Fields drop in order: the servers go before
/// their database.
struct Setup {
    a: Server,
    b: Server,
    history: Written,
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

    /// Every invariant of the scale-out test, after the streams and once
    /// retention has settled.
    async fn assert_invariants(&self, stream: &Stream, a: &Answers, b: &Answers) {
        let pool = &self.pool;
        Self::assert_answers(stream, a, b);

        // Every record's event is stored exactly once, live or archived (by
        // event id), and no straggler is stored at all.
        let stored: HashMap<Uuid, i64> = sqlx::query_as::<_, (Uuid, i64)>(
            "SELECT event_id, count(*) FROM (SELECT event_id FROM remediation_audit_events \
             UNION ALL SELECT event_id FROM remediation_audit_events_archive) e GROUP BY event_id",
        )
        .fetch_all(pool)
        .await
        .expect("events")
        .into_iter()
        .collect();
        let mut expected = self.history.events;
        for (i, record) in stream.records.iter().enumerate() {
            let n = stored.get(&record.event_id).copied().unwrap_or(0);
            if record.kind == Kind::Straggler {
                assert_eq!(n, 0, "straggler {i} ({}) is not stored", record.remediation);
            } else {
                assert_eq!(n, 1, "record {i} ({}) stored once", record.remediation);
                expected += 1;
            }
        }
        let total: i64 = stored.values().sum();
        assert_eq!(
            total, expected,
            "events: the history's and the stream's, no other"
        );

        // Every summary row is in exactly one place.
        let places: Vec<(String, String, bool)> = sqlx::query_as(
            "SELECT namespace, remediation_name, true FROM remediation_audit \
             UNION ALL SELECT namespace, remediation_name, false FROM remediation_audit_archive",
        )
        .fetch_all(pool)
        .await
        .expect("summary rows");
        let mut live = HashSet::new();
        let mut archived = HashSet::new();
        let (mut history_live, mut history_archived) = (0, 0);
        for (namespace, name, is_live) in places {
            if namespace == NAMESPACE {
                let set = if is_live { &mut live } else { &mut archived };
                assert!(set.insert(name.clone()), "{name} twice in one place");
            } else if is_live {
                history_live += 1;
            } else {
                history_archived += 1;
            }
        }
        assert_eq!(
            history_live + history_archived,
            self.history.remediations,
            "the history's summary rows, each in one place"
        );
        assert!(history_archived > 0, "the history's due rows were archived");
        let cohort: HashSet<String> = stream
            .cohort_names()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let fresh: HashSet<String> = stream
            .fresh_names()
            .into_iter()
            .map(str::to_owned)
            .collect();
        assert_eq!(archived, cohort, "archived: the cohort, every one of it");
        assert_eq!(live, fresh, "live: the fresh remediations");
        assert_eq!(
            scalar(
                pool,
                "SELECT (SELECT count(*) FROM remediation_audit r JOIN remediation_audit_archive a USING (id)) \
                 + (SELECT count(*) FROM remediation_audit_events e JOIN remediation_audit_events_archive a USING (id)) \
                 + (SELECT count(*) FROM remediation_audit r JOIN remediation_audit_archive a \
                    USING (namespace, remediation_name, start_time))",
            )
            .await,
            0,
            "no row both live and archived"
        );

        // Archived exactly once, only when due, with its events, by a finished batch.
        for (what, sql) in [
            (
                "summary rows archived twice",
                "SELECT count(*) - count(DISTINCT id) + count(*) \
                   - count(DISTINCT (namespace, remediation_name, start_time)) FROM remediation_audit_archive",
            ),
            (
                "events archived twice",
                "SELECT count(*) - count(DISTINCT id) + count(*) - count(DISTINCT event_id) \
                 FROM remediation_audit_events_archive",
            ),
            (
                "rows archived before they were due",
                "SELECT count(*) FROM remediation_audit_archive a \
                 JOIN remediation_retention_batches b ON b.id = a.archive_batch \
                 WHERE a.deleted_at IS NULL AND NOT (a.retention_expiry_time <= b.run_now)",
            ),
            (
                "live rows left due",
                "SELECT count(*) FROM remediation_audit \
                 WHERE NOT legal_hold AND retention_expiry_time <= now()",
            ),
            (
                "events archived apart from their remediation",
                "SELECT count(*) FROM remediation_audit_events_archive e \
                 LEFT JOIN remediation_audit_archive a \
                   USING (namespace, remediation_name, start_time) \
                 WHERE a.id IS NULL OR a.archive_batch <> e.archive_batch",
            ),
            (
                "live events without a live remediation",
                "SELECT count(*) FROM remediation_audit_events e \
                 WHERE NOT EXISTS (SELECT 1 FROM remediation_audit r \
                   WHERE (r.namespace, r.remediation_name, r.start_time) \
                       = (e.namespace, e.remediation_name, e.start_time))",
            ),
            (
                "batches not finished",
                "SELECT count(*) FROM remediation_retention_batches WHERE state <> 'done'",
            ),
            (
                "batches whose counts are not their rows'",
                "SELECT count(*) FROM remediation_retention_batches b \
                 WHERE b.remediations <> (SELECT count(*) FROM remediation_audit_archive a WHERE a.archive_batch = b.id) \
                    OR b.events <> (SELECT count(*) FROM remediation_audit_events_archive e WHERE e.archive_batch = b.id)",
            ),
            (
                "archived rows of no finished batch",
                "SELECT (SELECT count(*) FROM remediation_audit_archive a WHERE NOT EXISTS \
                   (SELECT 1 FROM remediation_retention_batches b WHERE b.id = a.archive_batch AND b.state = 'done')) \
                 + (SELECT count(*) FROM remediation_audit_events_archive e WHERE NOT EXISTS \
                   (SELECT 1 FROM remediation_retention_batches b WHERE b.id = e.archive_batch AND b.state = 'done'))",
            ),
        ] {
            assert_eq!(scalar(pool, sql).await, 0, "{what}");
        }

        // Runs never overlapped: batches of one run (one clock) are not
        // interleaved with another's, in number or in time.
        let batches: Vec<Journal> = sqlx::query_as(
            "SELECT id, run_now, created_at, finished_at FROM remediation_retention_batches ORDER BY id",
        )
        .fetch_all(pool)
        .await
        .expect("journal");
        let mut runs: Vec<(DateTime<Utc>, DateTime<Utc>, DateTime<Utc>)> = Vec::new();
        for (id, run, created, finished) in batches {
            match runs.last_mut() {
                Some(last) if last.0 == run => last.2 = finished,
                _ => {
                    assert!(
                        runs.iter().all(|r| r.0 != run),
                        "batch {id}: its run's batches are interleaved with another run's"
                    );
                    if let Some(last) = runs.last() {
                        assert!(
                            last.2 <= created,
                            "batch {id} began before the run before it ended"
                        );
                    }
                    runs.push((run, created, finished));
                }
            }
        }

        // Retention worked while the stream was being stored: batches
        // finished between the first and the last event the stream created.
        let during: i64 = scalar(
            pool,
            &format!(
                "WITH stream AS (SELECT received_at FROM remediation_audit_events WHERE namespace = '{NAMESPACE}' \
                   UNION ALL SELECT received_at FROM remediation_audit_events_archive WHERE namespace = '{NAMESPACE}') \
                 SELECT count(*) FROM remediation_retention_batches \
                 WHERE finished_at BETWEEN (SELECT min(received_at) FROM stream) AND (SELECT max(received_at) FROM stream)"
            ),
        )
        .await;
        assert!(during > 0, "no batch finished while the stream was stored");

        // The files are the finished batches', and they verify.
        let done: BTreeSet<String> = sqlx::query_scalar(
            "SELECT location FROM remediation_retention_batches WHERE state = 'done'",
        )
        .fetch_all(pool)
        .await
        .expect("locations")
        .into_iter()
        .collect();
        let mut dirs = BTreeSet::new();
        files_under(self.archive.path(), self.archive.path(), &mut dirs);
        assert_eq!(
            dirs, done,
            "batch directories with files: the finished batches'"
        );
        let out = remaudit()
            .args([
                "retention",
                "verify",
                "--database-url",
                self.db.url(),
                "--archive-url",
                &format!("file://{}", self.archive.path().display()),
            ])
            .output()
            .expect("run remaudit retention verify");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "retention verify: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows = scalar(pool, "SELECT count(*) FROM remediation_audit_archive").await;
        assert!(text.contains(&format!("({rows} remediations")), "{text}");
        println!(
            "{} batches in {} runs, {during} of them finished while the stream was stored; \
             {rows} remediations archived ({} of the history); {}",
            done.len(),
            runs.len(),
            history_archived,
            text.trim()
        );
    }

    /// Each record answered on both servers: one `created` and one
    /// `duplicate` (a record whose request was cut off by the kill may have
    /// been stored with its answer lost: then both say `duplicate`); a
    /// straggler `rejected` as archived on both; nothing else.
    fn assert_answers(stream: &Stream, a: &Answers, b: &Answers) {
        let mut tally: HashMap<&str, usize> = HashMap::new();
        for (i, record) in stream.records.iter().enumerate() {
            let answers = [&a.outcomes[&i], &b.outcomes[&i]];
            for answer in answers {
                if let Outcome::Unexpected(what) = answer {
                    panic!("record {i}: {what}");
                }
            }
            if record.kind == Kind::Straggler {
                for answer in answers {
                    assert_eq!(
                        *answer,
                        Outcome::Rejected("archived".to_owned()),
                        "straggler {i}"
                    );
                }
                *tally.entry("rejected as archived").or_default() += 2;
                continue;
            }
            let created = answers.iter().filter(|o| ***o == Outcome::Created).count();
            let duplicates = answers
                .iter()
                .filter(|o| ***o == Outcome::Duplicate)
                .count();
            let cut = a.interrupted.contains(&i) || b.interrupted.contains(&i);
            assert!(
                (created == 1 || (created == 0 && cut)) && created + duplicates == 2,
                "record {i} ({:?} {}): answered {answers:?}",
                record.kind,
                record.remediation
            );
            *tally.entry("created").or_default() += created;
            *tally.entry("duplicate").or_default() += duplicates;
        }
        println!(
            "answers: {tally:?}; requests A {} B {}; at the gate after A {:?} B {:?}; \
             cut off and sent again: A {} B {} records; 503 then sent again: A {} B {}",
            a.requests,
            b.requests,
            a.at_gate,
            b.at_gate,
            a.interrupted.len(),
            b.interrupted.len(),
            a.busy,
            b.busy
        );
    }
}

/// Batch directories (relative to `root`) that hold files.
fn files_under(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).expect("read archive dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files_under(root, &path, out);
        } else if let Some(parent) = path.parent() {
            out.insert(
                parent
                    .strip_prefix(root)
                    .expect("under root")
                    .display()
                    .to_string(),
            );
        }
    }
}

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
        let ok = server
            .metric("remaudit_retention_runs_total", "outcome=\"ok\"")
            .await;
        // (+ 0.0: the sum of no series is -0.0)
        let skipped = server
            .metric("remaudit_retention_runs_total", "outcome=\"skipped\"")
            .await
            + 0.0;
        assert!(
            ok + skipped >= 3.0,
            "{}: {ok} runs, {skipped} skipped",
            server.name
        );
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
                                   WHERE a.application_name = 'scale-a' AND a.wait_event_type = 'Lock') \
                       AND EXISTS (SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                                   WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted \
                                     AND a.application_name = 'scale-a')",
                )
                .fetch_optional(pool)
                .await
                .expect("journal");
                pending.filter(|(_, location)| {
                    ["remediation_audit.jsonl.gz", "remediation_audit_events.jsonl.gz"]
                        .iter()
                        .all(|f| archive.join(location).join(f).is_file())
                })
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
        archive
            .join(&location)
            .join("remediation_audit.jsonl.gz")
            .is_file(),
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
