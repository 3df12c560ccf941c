//! The admin log on SQLite.

use async_trait::async_trait;
use sqlx::sqlite::SqliteConnection;
use tracing::instrument;

use super::{BACKEND, SqliteStore, encode_time};
use crate::StoreError;
use crate::admin_log::{
    AdminLogEntry, AdminLogPage, AdminLogQuery, AdminLogStore, ENTRY_COLUMNS, NewAdminEntry,
    admin_log_sql, admin_page,
};

/// Appends `entry` on `conn` (inside the caller's transaction, when it has
/// one); the caller holds the store's write turn.
pub(super) async fn append(
    conn: &mut SqliteConnection,
    entry: &NewAdminEntry,
) -> Result<AdminLogEntry, StoreError> {
    let sql = format!(
        "INSERT INTO remaudit_admin_log (subject, action, target, reason, detail) \
         VALUES (?1, ?2, ?3, ?4, ?5) RETURNING {ENTRY_COLUMNS}"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(&entry.actor.subject)
        .bind(entry.action.as_str())
        .bind(entry.target)
        .bind(&entry.actor.reason)
        .bind(entry.detail.to_string())
        .fetch_one(conn)
        .await?)
}

#[async_trait]
impl AdminLogStore for SqliteStore {
    #[instrument(skip_all, fields(backend = BACKEND, action = %entry.action), err)]
    async fn record_admin_action(
        &self,
        entry: &NewAdminEntry,
    ) -> Result<AdminLogEntry, StoreError> {
        let _turn = self.writer.lock().await;
        let mut conn = self.pool.acquire().await?;
        append(&mut conn, entry).await
    }

    #[instrument(skip_all, fields(backend = BACKEND, limit = query.limit), err)]
    async fn admin_log(&self, query: &AdminLogQuery) -> Result<AdminLogPage, StoreError> {
        let mut qb = admin_log_sql(query, encode_time);
        let items = qb.build_query_as().fetch_all(self.read_pool()).await?;
        Ok(admin_page(items, query))
    }
}
