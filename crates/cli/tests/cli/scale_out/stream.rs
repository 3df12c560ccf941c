//! The stream both servers take: its records, and each server's requests.

use std::collections::BTreeSet;

use chrono::{DateTime, TimeDelta, Utc};
use rand::{Rng, SeedableRng};
use serde_json::json;
use uuid::Uuid;

use super::{COHORT, COHORT_SIZE, DUE_AFTER, DUE_SPREAD, FRESH_SIZE, NAMESPACE, time};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// Falls due seconds after the stream starts; archived while it runs.
    Cohort,
    /// Started half an hour ago; never due during the test.
    Fresh,
    /// A new transition of a cohort remediation, sent after it was archived.
    Straggler,
}

/// One record of the stream, as both servers receive it.
pub(super) struct Record {
    pub(super) text: String,
    pub(super) event_id: Uuid,
    pub(super) remediation: String,
    pub(super) kind: Kind,
}

/// The records, and the parts the two servers take them in.
pub(super) struct Stream {
    pub(super) records: Vec<Record>,
    /// Cohort records that open server A's stream (and close B's).
    head: Vec<usize>,
    middle: Vec<usize>,
    /// Cohort records that open server B's stream (and close A's).
    tail: Vec<usize>,
    stragglers: Vec<usize>,
}

impl Stream {
    /// The stream as of `now`: the cohort falls due from `now + DUE_AFTER`.
    pub(super) fn new(now: DateTime<Utc>) -> Self {
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

    pub(super) fn cohort_names(&self) -> BTreeSet<&str> {
        self.records
            .iter()
            .filter(|r| r.kind == Kind::Cohort)
            .map(|r| r.remediation.as_str())
            .collect()
    }

    pub(super) fn fresh_names(&self) -> BTreeSet<&str> {
        self.records
            .iter()
            .filter(|r| r.kind == Kind::Fresh)
            .map(|r| r.remediation.as_str())
            .collect()
    }

    /// Server A's requests: the head, the middle, then (once the cohort is
    /// archived) the tail and the stragglers, in that order.
    pub(super) fn forward(&self, seed: u64) -> Vec<Step> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut steps = requests(&self.head, &mut rng);
        steps.extend(requests(&self.middle, &mut rng));
        steps.push(Step::Gate);
        steps.extend(requests(&self.tail, &mut rng));
        steps.extend(requests(&self.stragglers, &mut rng));
        steps
    }

    /// Server B's requests: the cohort backwards, the tail first; the middle
    /// in A's order of remediations but each one's transitions backwards
    /// (its terminal record first), so that the two servers meet on the same
    /// remediations all along.
    pub(super) fn backward(&self, seed: u64) -> Vec<Step> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let rev = |part: &[usize]| part.iter().rev().copied().collect::<Vec<_>>();
        let mut steps = requests(&rev(&self.tail), &mut rng);
        let middle: Vec<usize> = self
            .middle
            .chunk_by(|&i, &j| self.records[i].remediation == self.records[j].remediation)
            .flat_map(|one| one.iter().rev().copied())
            .collect();
        steps.extend(requests(&middle, &mut rng));
        steps.push(Step::Gate);
        steps.extend(requests(&rev(&self.head), &mut rng));
        steps.extend(requests(&rev(&self.stragglers), &mut rng));
        steps
    }
}

/// One step of a server's stream.
#[derive(Debug, Clone)]
pub(super) enum Step {
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

pub(super) fn count_requests(steps: &[Step]) -> usize {
    steps
        .iter()
        .map(|s| match s {
            Step::Batch(_) => 1,
            Step::Singles(r) => r.len(),
            Step::Gate => 0,
        })
        .sum()
}
