//! Storage of remediation audit records: the [`Store`] trait and its
//! PostgreSQL and SQLite implementations, each with its own migrations.

pub mod admin_log;
pub mod analytics;
pub mod chain;
mod error;
mod postgres;
/// The PostgreSQL projector's metrics: names, buckets and descriptions.
pub mod projection {
    pub use crate::postgres::projection::{
        ERRORS, LAG_BUCKETS, LAG_SECONDS, PROJECTED, QUARANTINE_ROWS, QUARANTINED, SKIPPED,
        describe_metrics,
    };
}
pub mod retention;
mod sqlite;
mod store;

pub use admin_log::{
    Actor, AdminAction, AdminLogCursor, AdminLogEntry, AdminLogPage, AdminLogQuery, AdminLogStore,
    NewAdminEntry,
};
pub use analytics::AnalyticsQuery;
pub use chain::{ChainStore, VerifyPage, verify_page};
pub use error::StoreError;
pub use postgres::PgStore;
pub use retention::{
    COLD_AFTER_DAYS, DeleteOutcome, RetentionPolicy, RetentionStore, RetireRequest, TierReport,
    Tiers, WARM_AFTER_DAYS,
};
pub use sqlite::SqliteStore;
pub use store::{
    AnalyticsStore, AuditStore, Backfill, Cursor, DEFAULT_MAX_EVENTS_PER_REMEDIATION, HealthStore,
    InsertOutcome, InsertRules, ListQuery, Page, PoolSettings, PoolStats, Refusal, Store,
    TIMELINE_PAGE_BYTES, Timeline, TimelineCursor, TimelineQuery, connect, connect_with, redact,
};
