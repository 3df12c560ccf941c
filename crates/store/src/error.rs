//! Errors of the store, classified by what the caller should do about them.

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is overloaded; retrying later may succeed.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database URL or settings are unusable.
    #[error("{0}")]
    Config(String),
    /// A read ran past its statement timeout and the database cancelled it;
    /// a narrower question, or the same one when the database is less busy, may succeed.
    #[error("query cancelled: {0}")]
    Timeout(String),
    /// Migrations could not be applied, or the schema is behind this build.
    #[error("database schema: {0}")]
    Schema(String),
    /// A retention batch was no longer pending when it was to finish: another
    /// run took it for interrupted. Nothing was committed; the rows stay live.
    #[error(
        "retention batch {0} is no longer pending (another retention run took it over); \
         its rows stay live and the next run archives them again"
    )]
    NotPending(i64),
    /// A read waited its whole time limit for the summary and rollups to
    /// take in the events queued before it (a backlog, or a projection held
    /// up by a lock); nothing is lost, and the same read may succeed later.
    #[error("the summary is catching up: {0}")]
    Behind(String),
    /// Any other database failure.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

impl StoreError {
    /// Whether a retry may succeed.
    #[must_use]
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    /// Whether the database cancelled a statement that ran past its timeout.
    #[must_use]
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout(_))
    }

    /// Whether a read gave up waiting for the projection to catch up.
    #[must_use]
    pub fn is_behind(&self) -> bool {
        matches!(self, Self::Behind(_))
    }
}

/// PostgreSQL SQLSTATE classes and codes that mean "try again later".
fn is_transient_code(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || matches!(
            code,
            "40001" // serialization failure
                | "40P01" // deadlock detected
                | "53300" // too many connections
                | "57P01" // admin shutdown
                | "57P02" // crash shutdown
                | "57P03" // cannot connect now
                | "5" // SQLITE_BUSY
                | "6" // SQLITE_LOCKED
                | "261" // SQLITE_BUSY_RECOVERY
                | "517" // SQLITE_BUSY_SNAPSHOT
        )
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => Self::Unavailable(err.to_string()),
            sqlx::Error::Database(db) if db.code().is_some_and(|c| is_transient_code(&c)) => {
                Self::Unavailable(err.to_string())
            }
            // query_canceled: statement_timeout, or a cancel request.
            sqlx::Error::Database(db) if db.code().is_some_and(|c| c == "57014") => {
                Self::Timeout(err.to_string())
            }
            _ => Self::Database(err),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        match err {
            sqlx::migrate::MigrateError::Execute(e) => match Self::from(e) {
                Self::Database(e) => Self::Schema(e.to_string()),
                other => other,
            },
            other => Self::Schema(other.to_string()),
        }
    }
}
