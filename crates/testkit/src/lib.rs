//! Test support shared by remaudit's test suites: throwaway PostgreSQL
//! databases on the machine's server, SQLite files in temporary directories,
//! and record fixtures built through the real validation path.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use remaudit_model::{Limits, NewAudit, RemediationOrchestrationAudit};
use remaudit_store::{PoolSettings, Store};
use sqlx::{Connection, PgConnection};

pub mod bench;

pub use bench::metrics_handle;
pub mod design_sql;
/// 120 days of remediations before a clock, for retention tests.
pub mod history;
/// Test certificate authorities for TLS and mutual TLS.
pub mod pki;
/// A local S3-compatible server (moto, from `scripts/moto-prepare`) for object-store tests.
pub mod s3;

/// Environment variable naming the PostgreSQL server tests may create databases on.
pub const ADMIN_URL_VAR: &str = "REMAUDIT_TEST_DATABASE_URL";

/// Used when [`ADMIN_URL_VAR`] is not set: the machine's local server.
pub const DEFAULT_ADMIN_URL: &str = "postgres://remaudit:remaudit@127.0.0.1:5432/remaudit";

/// Prefix of every database the tests create; the test script drops leftovers.
pub const TEST_DB_PREFIX: &str = "remaudit_test_";

/// The PostgreSQL server tests and benchmarks create their databases on:
/// [`ADMIN_URL_VAR`] (which `scripts/pg-prepare` sets), else [`DEFAULT_ADMIN_URL`].
#[must_use]
pub fn admin_url() -> String {
    std::env::var(ADMIN_URL_VAR).unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

/// A database of its own for one test, dropped when the value is dropped.
#[derive(Debug)]
pub struct PgDb {
    name: String,
    url: String,
}

impl PgDb {
    /// Creates an empty database.
    ///
    /// # Panics
    /// When PostgreSQL is not reachable: the message says how to start it.
    pub async fn create() -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let admin = admin_url();
        let name = format!(
            "{TEST_DB_PREFIX}{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            Utc::now().timestamp_micros()
        );
        let mut conn = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!(
                "tests need PostgreSQL at {admin} ({ADMIN_URL_VAR}): {e}; run scripts/test, which starts it"
            )
        });
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let base = admin
            .rsplit_once('/')
            .map_or(admin.as_str(), |(base, _)| base);
        let url = format!("{base}/{name}");
        Self { name, url }
    }

    /// The URL of this database.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A migrated store on this database.
    ///
    /// # Panics
    /// When it cannot be opened.
    pub async fn store(&self) -> Arc<dyn Store> {
        remaudit_store::connect(&self.url, PoolSettings::default())
            .await
            .expect("open PostgreSQL store")
    }

    /// A transaction on `pool` that holds the summary table in EXCLUSIVE
    /// mode: reads of it go on, writes to it (the projector's) wait until
    /// the transaction ends (`rollback` lets them go).
    ///
    /// # Panics
    /// When the lock cannot be taken.
    pub async fn hold_the_summary(
        pool: &sqlx::PgPool,
    ) -> sqlx::Transaction<'static, sqlx::Postgres> {
        let mut blocker = pool.begin().await.expect("begin");
        sqlx::query("LOCK TABLE remediation_audit IN EXCLUSIVE MODE")
            .execute(&mut *blocker)
            .await
            .expect("lock the summary");
        blocker
    }

    /// A plain connection pool, for running the design's SQL by hand.
    ///
    /// # Panics
    /// When it cannot connect.
    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.url)
            .await
            .expect("connect to test database")
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        execute_now(
            admin_url(),
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// Runs `sql` on the PostgreSQL server at `url` and waits for it, from code
/// that may not be async (a `Drop`): on a thread with a runtime of its own.
/// Failures are ignored: it cleans up after tests.
pub fn execute_now(url: String, sql: String) {
    let _ = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            if let Ok(mut conn) = PgConnection::connect(&url).await {
                let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await;
            }
        });
    })
    .join();
}

/// A SQLite store in a temporary directory, removed when dropped.
pub struct SqliteDb {
    dir: tempfile::TempDir,
}

impl SqliteDb {
    /// A new, empty directory for the database file.
    ///
    /// # Panics
    /// When no temporary directory can be made.
    #[must_use]
    pub fn create() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    /// The URL of the database file.
    #[must_use]
    pub fn url(&self) -> String {
        format!("sqlite://{}/remaudit.db", self.dir.path().display())
    }

    /// A migrated store on this file.
    ///
    /// # Panics
    /// When it cannot be opened.
    pub async fn store(&self) -> Arc<dyn Store> {
        remaudit_store::connect(&self.url(), PoolSettings::default())
            .await
            .expect("open SQLite store")
    }
}

/// Builds a validated record from JSON, through the same path the server uses.
///
/// # Panics
/// When the JSON is not a valid record.
#[must_use]
pub fn record(json: serde_json::Value) -> NewAudit {
    let audit: RemediationOrchestrationAudit =
        serde_json::from_value(json).expect("well-typed fixture");
    audit
        .validate(Utc::now(), &Limits::default())
        .expect("valid fixture")
}

/// The instant `minutes` after a base fixed once per process (the start of
/// the hour a day before the first call).
///
/// # Panics
/// Only if the clock is outside the range `chrono` represents.
#[must_use]
pub fn at(minutes: i64) -> DateTime<Utc> {
    static BASE: OnceLock<DateTime<Utc>> = OnceLock::new();
    let base = *BASE.get_or_init(|| {
        let day_ago = Utc::now() - chrono::Duration::days(1);
        DateTime::from_timestamp(day_ago.timestamp() - day_ago.timestamp() % 3600, 0)
            .expect("in range")
    });
    base + chrono::Duration::minutes(minutes)
}

/// Runs SQL as written, through the simple-query protocol, and returns every
/// value as text (`None` for NULL): the design's queries run unchanged and no
/// numeric decoding is needed.
///
/// # Panics
/// When the SQL fails; the message shows it.
pub async fn text_rows(pool: &sqlx::PgPool, sql: &str) -> Vec<Vec<Option<String>>> {
    use sqlx::Row as _;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_all(pool)
        .await
        .unwrap_or_else(|e| panic!("SQL failed: {e}\n{sql}"))
        .iter()
        .map(|row| {
            (0..row.len())
                .map(|i| row.try_get_unchecked::<Option<String>, _>(i).expect("text"))
                .collect()
        })
        .collect()
}

/// Polls `check` until it returns `Some`, or panics after `timeout`.
///
/// # Panics
/// When the condition does not hold in time.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
