//! The admin log on PostgreSQL.

use async_trait::async_trait;
use sqlx::postgres::PgConnection;
use tracing::instrument;

use super::{BACKEND, PgStore};
use crate::StoreError;
use crate::admin_log::{
    AdminLogEntry, AdminLogPage, AdminLogQuery, AdminLogStore, ENTRY_COLUMNS, NewAdminEntry,
    admin_log_sql, admin_page,
};

/// Appends `entry` on `conn` (inside the caller's transaction, when it has one).
pub(super) async fn append(
    conn: &mut PgConnection,
    entry: &NewAdminEntry,
) -> Result<AdminLogEntry, StoreError> {
    let sql = format!(
        "INSERT INTO remaudit_admin_log (subject, action, target, reason, detail) \
         VALUES ($1, $2, $3, $4, $5) RETURNING {ENTRY_COLUMNS}"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(&entry.actor.subject)
        .bind(entry.action.as_str())
        .bind(entry.target)
        .bind(&entry.actor.reason)
        .bind(&entry.detail)
        .fetch_one(conn)
        .await?)
}

#[async_trait]
impl AdminLogStore for PgStore {
    #[instrument(skip_all, fields(backend = BACKEND, action = %entry.action), err)]
    async fn record_admin_action(
        &self,
        entry: &NewAdminEntry,
    ) -> Result<AdminLogEntry, StoreError> {
        let mut conn = self.pool.acquire().await?;
        append(&mut conn, entry).await
    }

    #[instrument(skip_all, fields(backend = BACKEND, limit = query.limit), err)]
    async fn admin_log(&self, query: &AdminLogQuery) -> Result<AdminLogPage, StoreError> {
        let mut qb = admin_log_sql(query, |t| t);
        let items = qb.build_query_as().fetch_all(&self.reads).await?;
        Ok(admin_page(items, query))
    }
}
