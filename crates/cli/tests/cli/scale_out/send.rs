//! Sending the stream to one server as a publisher would, and what came back.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use remaudit_api::audit::{BatchResponse, ItemStatus, StoreResult};
use remaudit_api::{Problem, paths};
use remaudit_testkit::wait_for;
use tokio::sync::watch;

use super::stream::{Step, Stream, count_requests};
use super::{COHORT, NAMESPACE, PATIENCE, Server, scalar};

/// What a server answered for one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
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
pub(super) struct Answers {
    /// The final answer for each record, by record index.
    pub(super) outcomes: HashMap<usize, Outcome>,
    /// Records of requests that were cut off (the server died) and sent again.
    pub(super) interrupted: BTreeSet<usize>,
    /// Answers 503 (the request was sent again).
    pub(super) busy: u32,
    pub(super) requests: usize,
    /// When the stream reached its gate (all but the late copies sent).
    pub(super) at_gate: Duration,
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
pub(super) struct Senders {
    a: tokio::task::JoinHandle<Answers>,
    b: tokio::task::JoinHandle<Answers>,
    /// Requests server A answered so far.
    pub(super) a_answered: Arc<AtomicUsize>,
    pub(super) a_requests: usize,
    gatekeeper: tokio::task::JoinHandle<Duration>,
}

impl Senders {
    /// Starts both streams, and a task that opens their gate once every
    /// cohort remediation is in the archive.
    pub(super) fn start(stream: &Arc<Stream>, a: &Server, b: &Server, db_url: String) -> Self {
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

    pub(super) async fn finish(self) -> (Answers, Answers, Duration) {
        let gate = self.gatekeeper.await.expect("gatekeeper");
        (
            self.a.await.expect("server A's stream"),
            self.b.await.expect("server B's stream"),
            gate,
        )
    }
}
