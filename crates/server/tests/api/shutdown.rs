//! Shutdown lets requests in flight finish before the server returns.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use remaudit_model::NewAudit;
use remaudit_model::StoredAudit;
use remaudit_model::analytics::{
    DurationsReport, FailuresReport, RemediationList, RetriesReport, SuccessRateReport,
};
use remaudit_model::chain::{ChainHead, ChainRemediation, ChainedEvent};
use remaudit_store::retention::{
    BatchIds, BatchPlaces, BatchRecord, DayCount, Locate, PendingBatch, RetentionLock, Retiring,
};
use remaudit_store::{
    Actor, AdminLogEntry, AdminLogPage, AdminLogQuery, AdminLogStore, AnalyticsQuery,
    AnalyticsStore, AuditStore, ChainStore, DeleteOutcome, HealthStore, InsertOutcome, InsertRules,
    ListQuery, NewAdminEntry, Page, PoolStats, RetentionStore, RetireRequest, Store, StoreError,
    Timeline, TimelineQuery,
};
use tokio::sync::{Notify, Semaphore};

use crate::helpers::{go_record, spawn_app};

/// A real store whose writes wait at a gate the test opens.
pub(crate) struct GatedStore {
    pub(crate) inner: Arc<dyn Store>,
    pub(crate) reached: Notify,
    pub(crate) gate: Semaphore,
}

#[async_trait]
impl AuditStore for GatedStore {
    async fn insert_with(
        &self,
        records: &[NewAudit],
        rules: &InsertRules,
    ) -> Result<Vec<InsertOutcome>, StoreError> {
        self.reached.notify_one();
        let _permit = self.gate.acquire().await.expect("gate open");
        self.inner.insert_with(records, rules).await
    }
    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        self.inner.list(query).await
    }
    async fn timeline_page(
        &self,
        id: i64,
        query: &TimelineQuery,
    ) -> Result<Option<Timeline>, StoreError> {
        self.inner.timeline_page(id, query).await
    }
    async fn set_legal_hold(
        &self,
        id: i64,
        hold: bool,
        actor: &Actor,
    ) -> Result<Option<StoredAudit>, StoreError> {
        self.inner.set_legal_hold(id, hold, actor).await
    }
    async fn soft_delete(
        &self,
        id: i64,
        at: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<DeleteOutcome, StoreError> {
        self.inner.soft_delete(id, at, actor).await
    }
    async fn backfill_content_hashes(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<remaudit_store::Backfill, StoreError> {
        self.inner.backfill_content_hashes(after, limit).await
    }
}

#[async_trait]
impl AnalyticsStore for GatedStore {
    async fn postmortem(&self, q: &AnalyticsQuery) -> Result<RemediationList, StoreError> {
        self.inner.postmortem(q).await
    }
    async fn slowest(&self, q: &AnalyticsQuery) -> Result<RemediationList, StoreError> {
        self.inner.slowest(q).await
    }
    async fn success_rate(&self, q: &AnalyticsQuery) -> Result<SuccessRateReport, StoreError> {
        self.inner.success_rate(q).await
    }
    async fn durations(&self, q: &AnalyticsQuery) -> Result<DurationsReport, StoreError> {
        self.inner.durations(q).await
    }
    async fn failures(&self, q: &AnalyticsQuery) -> Result<FailuresReport, StoreError> {
        self.inner.failures(q).await
    }
    async fn retries(&self, q: &AnalyticsQuery) -> Result<RetriesReport, StoreError> {
        self.inner.retries(q).await
    }
}

#[async_trait]
impl RetentionStore for GatedStore {
    async fn ensure_partitions(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<u32, StoreError> {
        self.inner.ensure_partitions(from, to).await
    }
    async fn retention_lock(&self) -> Result<Option<RetentionLock>, StoreError> {
        self.inner.retention_lock().await
    }
    async fn retention_preview(&self, r: &RetireRequest) -> Result<Vec<DayCount>, StoreError> {
        self.inner.retention_preview(r).await
    }
    async fn next_batch<'a>(
        &'a self,
        r: &RetireRequest,
        locate: Locate<'_>,
    ) -> Result<Option<Retiring<'a>>, StoreError> {
        self.inner.next_batch(r, locate).await
    }
    async fn pending_batches(&self) -> Result<Vec<PendingBatch>, StoreError> {
        self.inner.pending_batches().await
    }
    async fn installation_id(&self) -> Result<String, StoreError> {
        self.inner.installation_id().await
    }
    async fn forget_batch(&self, batch: i64) -> Result<(), StoreError> {
        self.inner.forget_batch(batch).await
    }
    async fn finished_batches(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<BatchRecord>, StoreError> {
        self.inner.finished_batches(from, to).await
    }
    async fn batch_places(&self, batch: i64) -> Result<BatchPlaces, StoreError> {
        self.inner.batch_places(batch).await
    }
    async fn batch_ids(&self, batch: i64) -> Result<BatchIds, StoreError> {
        self.inner.batch_ids(batch).await
    }
}

#[async_trait]
impl AdminLogStore for GatedStore {
    async fn record_admin_action(
        &self,
        entry: &NewAdminEntry,
    ) -> Result<AdminLogEntry, StoreError> {
        self.inner.record_admin_action(entry).await
    }
    async fn admin_log(&self, query: &AdminLogQuery) -> Result<AdminLogPage, StoreError> {
        self.inner.admin_log(query).await
    }
}

#[async_trait]
impl ChainStore for GatedStore {
    async fn chain_remediations(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        after: Option<&ChainRemediation>,
        limit: u32,
    ) -> Result<Vec<ChainRemediation>, StoreError> {
        self.inner
            .chain_remediations(since, until, after, limit)
            .await
    }
    async fn chain_of(
        &self,
        r: &ChainRemediation,
    ) -> Result<(Vec<ChainedEvent>, Option<ChainHead>), StoreError> {
        self.inner.chain_of(r).await
    }
}

#[async_trait]
impl HealthStore for GatedStore {
    async fn ready(&self) -> Result<(), StoreError> {
        self.inner.ready().await
    }
    fn pool_stats(&self) -> PoolStats {
        self.inner.pool_stats()
    }
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn close(&self) {
        self.inner.close().await;
    }
}

#[tokio::test]
async fn in_flight_request_finishes_after_shutdown_begins() {
    let db = remaudit_testkit::SqliteDb::create();
    let inner = db.store().await;
    let gated = Arc::new(GatedStore {
        inner: inner.clone(),
        reached: Notify::new(),
        gate: Semaphore::new(0),
    });
    let app = spawn_app(gated.clone()).await;

    let start = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    let request = {
        let (http, url) = (
            app.http.clone(),
            app.url("/api/v1/audit/remediation-orchestration"),
        );
        let record = go_record("rr-inflight", "fp", "completed", &start);
        tokio::spawn(async move { http.post(url).json(&record).send().await })
    };
    tokio::time::timeout(Duration::from_secs(10), gated.reached.notified())
        .await
        .expect("the request reached the store");

    app.shutdown.cancel();
    assert!(
        !app.server.is_finished(),
        "the server waits for the request in flight"
    );
    gated.gate.add_permits(1);

    let response = tokio::time::timeout(Duration::from_secs(10), request)
        .await
        .expect("answered in time")
        .expect("task")
        .expect("response");
    assert_eq!(response.status(), 201);
    tokio::time::timeout(Duration::from_secs(10), app.server)
        .await
        .expect("server stopped")
        .expect("task")
        .expect("clean exit");
    let stored = inner
        .list(&ListQuery {
            limit: 10,
            ..ListQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(stored.items.len(), 1, "the in-flight record was stored");
}
