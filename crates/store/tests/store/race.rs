//! Ingest racing a retention batch on PostgreSQL: a record for a remediation
//! that retention is moving must not start a new live row.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use remaudit_store::retention::{ArchiveSink, ArchivedFile, Lines, Manifest, Step};
use remaudit_store::{InsertOutcome, ListQuery, Refusal, RetireRequest, StoreError};
use remaudit_testkit::{at, record};
use serde_json::json;
use tokio::sync::Notify;

/// An archive that holds the batch's transaction open between writing its
/// first file and going on, until the test releases it.
struct HeldSink {
    written: Arc<Notify>,
    release: Arc<Notify>,
}

#[async_trait::async_trait]
impl ArchiveSink for HeldSink {
    fn location(&self, installation: &str, batch: i64) -> String {
        format!("{installation}/batch-{batch}")
    }
    async fn write_file(
        &self,
        location: &str,
        table: &str,
        mut lines: Lines<'_>,
    ) -> Result<ArchivedFile, StoreError> {
        let mut rows = 0;
        while let Some(line) = lines.next().await {
            line?;
            rows += 1;
        }
        if table == "remediation_audit_archive" {
            self.written.notify_one();
            self.release.notified().await;
        }
        Ok(ArchivedFile {
            table: table.trim_end_matches("_archive").to_owned(),
            path: format!("{location}/{table}"),
            rows,
            bytes: 1,
            sha256: "00".into(),
        })
    }
    async fn write_manifest(&self, _: &str, _: &Manifest) -> Result<String, StoreError> {
        Ok("00".into())
    }
    fn checkpoint(&self, _: Step) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_record_arriving_while_its_remediation_is_archived_does_not_bring_it_back() {
    let db = remaudit_testkit::PgDb::create().await;
    let store = db.store().await;
    let pool = db.pool().await;
    let with = |phase: &str, minute: i64| {
        record(json!({"namespace": "ns", "remediation_name": "rr-race",
            "alert_fingerprint": "fp", "start_time": at(0).to_rfc3339(),
            "overall_phase": phase, "event_time": at(minute).to_rfc3339()}))
    };
    assert_eq!(
        store.insert(&[with("processing", 1)]).await.unwrap(),
        [InsertOutcome::Created]
    );
    let id = store
        .list(&ListQuery {
            limit: 10,
            ..ListQuery::default()
        })
        .await
        .unwrap()
        .items[0]
        .id;
    // A soft-deleted row is archived at the next run, whatever its age.
    store.soft_delete(id, chrono::Utc::now()).await.unwrap();

    let written = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let sink = HeldSink {
        written: written.clone(),
        release: release.clone(),
    };
    let retiring = store.clone();
    let retire = tokio::spawn(async move {
        retiring
            .retire_next(
                &RetireRequest {
                    now: chrono::Utc::now(),
                    age: chrono::TimeDelta::days(90),
                    batch_rows: 100,
                    exact: true,
                },
                &sink,
            )
            .await
    });
    // The batch has copied the row and its events and holds them locked.
    written.notified().await;

    let inserting = store.clone();
    let late = tokio::spawn(async move { inserting.insert(&[with("analyzing", 2)]).await });
    // Wait until the insert waits on a lock (or, without the row lock, has
    // already finished), then let the batch commit.
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            if waiting > 0 || late.is_finished() {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the late insert neither waited nor finished");
    release.notify_one();

    retire
        .await
        .unwrap()
        .unwrap()
        .expect("a batch was archived");
    let answer = late.await.unwrap().unwrap();
    assert_eq!(answer, [InsertOutcome::Refused(Refusal::Archived)]);
    let live: i64 = sqlx::query_scalar("SELECT count(*) FROM remediation_audit")
        .fetch_one(&pool)
        .await
        .unwrap();
    let live_events: i64 = sqlx::query_scalar("SELECT count(*) FROM remediation_audit_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!((live, live_events), (0, 0), "nothing is live again");
}
