//! What must hold once both streams are sent and retention has settled.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::send::{Answers, Outcome};
use super::stream::{Kind, Stream};
use super::{Journal, NAMESPACE, Setup, scalar};
use crate::helpers::remaudit;

impl Setup {
    /// Every invariant of the scale-out test, after the streams and once
    /// retention has settled.
    pub(super) async fn assert_invariants(&self, stream: &Stream, a: &Answers, b: &Answers) {
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
        let places: Vec<(String, String, DateTime<Utc>, bool)> = sqlx::query_as(
            "SELECT namespace, remediation_name, start_time, true FROM remediation_audit \
             UNION ALL SELECT namespace, remediation_name, start_time, false FROM remediation_audit_archive",
        )
        .fetch_all(pool)
        .await
        .expect("summary rows");
        let mut live = HashSet::new();
        let mut archived = HashSet::new();
        let mut history: HashMap<(String, String, DateTime<Utc>), Vec<bool>> = HashMap::new();
        for (namespace, name, start, is_live) in places {
            if namespace == NAMESPACE {
                let set = if is_live { &mut live } else { &mut archived };
                assert!(set.insert(name.clone()), "{name} twice in one place");
            } else {
                history
                    .entry((namespace, name, start))
                    .or_default()
                    .push(is_live);
            }
        }
        let misplaced: Vec<_> = history
            .iter()
            .filter(|(_, places)| places.len() != 1)
            .collect();
        assert!(
            misplaced.is_empty(),
            "history rows in more than one place (true: live): {misplaced:?}"
        );
        let missing: Vec<_> = self
            .history_keys
            .iter()
            .filter(|key| !history.contains_key(*key))
            .collect();
        assert!(missing.is_empty(), "history rows lost: {missing:?}");
        assert_eq!(
            i64::try_from(history.len()).expect("small"),
            self.history.remediations,
            "the history's summary rows, no other"
        );
        let history_archived = history.values().filter(|places| !places[0]).count();
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
            assert!(
                !answers.contains(&&Outcome::Rejected("retention".to_owned())),
                "record {i} ({}) was refused as new and already due: its first copy reached a server \
                 less than a second before the remediation fell due (DUE_AFTER too short for this machine)",
                record.remediation
            );
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
            if a.outcomes[&i] == Outcome::Created {
                *tally.entry("created by A").or_default() += 1;
            }
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
        } else {
            // The batch's directory: the path up to its `batch-…` part
            // (Parquet files sit deeper, under `table=…/week=…/`).
            let relative = path.strip_prefix(root).expect("under root");
            let mut batch = PathBuf::new();
            for part in relative {
                batch.push(part);
                if part.to_string_lossy().starts_with("batch-") {
                    break;
                }
            }
            out.insert(batch.display().to_string());
        }
    }
}
