//! Settings of the publisher, each with a documented default and a
//! `REMAUDIT_*` environment variable.

use std::path::PathBuf;
use std::time::Duration;

/// How the publisher queues, spools, batches and retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherConfig {
    /// Base URL of the remaudit service (`REMAUDIT_URL`; default `http://127.0.0.1:8085`).
    pub url: String,
    /// Directory of the on-disk spool (`REMAUDIT_SPOOL_DIR`). `None` keeps records in
    /// memory only: they are lost with the process.
    pub spool_dir: Option<PathBuf>,
    /// Records the memory queue holds (`REMAUDIT_PUBLISHER_MEMORY_RECORDS`; default
    /// 32,768, about 32 MiB at 1 KiB a record, enough for a 25,000-record burst
    /// with no spool at all). With a spool, it is a cache of the spool's tail.
    pub memory_records: usize,
    /// Most bytes of spool files (`REMAUDIT_SPOOL_MAX_BYTES`; default 1 GiB, about a
    /// million records: days of audit at a busy cluster's rate).
    pub spool_max_bytes: u64,
    /// Size at which the spool starts a new segment file (`REMAUDIT_SPOOL_SEGMENT_BYTES`;
    /// default 8 MiB): small enough that acknowledged space comes back soon.
    pub spool_segment_bytes: u64,
    /// How often spooled records are fsync'd (`REMAUDIT_SPOOL_FSYNC_MS`; default 100 ms).
    /// Records reach the OS before `publish` returns, so only a power cut can lose
    /// the last interval.
    pub fsync_interval: Duration,
    /// Most records in one request (`REMAUDIT_PUBLISHER_BATCH_RECORDS`; default 500,
    /// where the service's measured ingest rate levels off; at most 1000, the
    /// service's limit).
    pub batch_records: usize,
    /// Most payload bytes in one request (`REMAUDIT_PUBLISHER_BATCH_BYTES`; default
    /// 3 MiB, under the service's 4 MiB body limit).
    pub batch_bytes: usize,
    /// Batches in flight at once (`REMAUDIT_PUBLISHER_MAX_IN_FLIGHT`; default 4: the
    /// service's measured ingest rate levels off there on a 2-core machine, and four
    /// requests hold at most four of its database connections).
    pub max_in_flight: usize,
    /// How long a partial batch waits for more records (`REMAUDIT_PUBLISHER_LINGER_MS`;
    /// default 50 ms: invisible to a post-mortem, and it turns a burst of reconciles
    /// into a few requests).
    pub linger: Duration,
    /// Timeout of one request (`REMAUDIT_PUBLISHER_TIMEOUT_MS`; default 10 s).
    pub request_timeout: Duration,
    /// First retry delay (`REMAUDIT_PUBLISHER_MIN_BACKOFF_MS`; default 100 ms).
    pub min_backoff: Duration,
    /// Longest retry delay (`REMAUDIT_PUBLISHER_MAX_BACKOFF_MS`; default 30 s).
    pub max_backoff: Duration,
    /// Longest `Retry-After` honoured (`REMAUDIT_PUBLISHER_MAX_RETRY_AFTER_MS`;
    /// default 300 s): a service that asks for more is tried again after this.
    pub max_retry_after: Duration,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8085".to_owned(),
            spool_dir: None,
            memory_records: 32_768,
            spool_max_bytes: 1 << 30,
            spool_segment_bytes: 8 << 20,
            fsync_interval: Duration::from_millis(100),
            batch_records: 500,
            batch_bytes: 3 << 20,
            max_in_flight: 4,
            linger: Duration::from_millis(50),
            request_timeout: Duration::from_secs(10),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(300),
        }
    }
}

/// A setting from the environment that is not usable.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}={value:?} is not {expected}")]
pub struct ConfigError {
    /// The variable.
    pub name: &'static str,
    /// Its value.
    pub value: String,
    /// What it should be.
    pub expected: &'static str,
}

fn var<T: std::str::FromStr>(
    name: &'static str,
    expected: &'static str,
) -> Result<Option<T>, ConfigError> {
    match std::env::var(name) {
        Ok(value) => value.trim().parse().map(Some).map_err(|_| ConfigError {
            name,
            value,
            expected,
        }),
        Err(_) => Ok(None),
    }
}

impl PublisherConfig {
    /// The defaults, overridden by any `REMAUDIT_*` variables that are set.
    ///
    /// # Errors
    /// When a variable is set to something unusable.
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut c = Self::default();
        let ms = |name| var::<u64>(name, "a whole number of milliseconds");
        if let Some(v) = var::<String>("REMAUDIT_URL", "a URL")? {
            c.url = v;
        }
        if let Some(v) = var::<PathBuf>("REMAUDIT_SPOOL_DIR", "a directory")? {
            c.spool_dir = Some(v);
        }
        if let Some(v) = var("REMAUDIT_PUBLISHER_MEMORY_RECORDS", "a whole number")? {
            c.memory_records = v;
        }
        if let Some(v) = var("REMAUDIT_SPOOL_MAX_BYTES", "a number of bytes")? {
            c.spool_max_bytes = v;
        }
        if let Some(v) = var("REMAUDIT_SPOOL_SEGMENT_BYTES", "a number of bytes")? {
            c.spool_segment_bytes = v;
        }
        if let Some(v) = ms("REMAUDIT_SPOOL_FSYNC_MS")? {
            c.fsync_interval = Duration::from_millis(v);
        }
        if let Some(v) = var(
            "REMAUDIT_PUBLISHER_BATCH_RECORDS",
            "a whole number from 1 to 1000",
        )? {
            c.batch_records = v;
        }
        if let Some(v) = var("REMAUDIT_PUBLISHER_BATCH_BYTES", "a number of bytes")? {
            c.batch_bytes = v;
        }
        if let Some(v) = var("REMAUDIT_PUBLISHER_MAX_IN_FLIGHT", "a whole number")? {
            c.max_in_flight = v;
        }
        if let Some(v) = ms("REMAUDIT_PUBLISHER_LINGER_MS")? {
            c.linger = Duration::from_millis(v);
        }
        if let Some(v) = ms("REMAUDIT_PUBLISHER_TIMEOUT_MS")? {
            c.request_timeout = Duration::from_millis(v);
        }
        if let Some(v) = ms("REMAUDIT_PUBLISHER_MIN_BACKOFF_MS")? {
            c.min_backoff = Duration::from_millis(v);
        }
        if let Some(v) = ms("REMAUDIT_PUBLISHER_MAX_BACKOFF_MS")? {
            c.max_backoff = Duration::from_millis(v);
        }
        if let Some(v) = ms("REMAUDIT_PUBLISHER_MAX_RETRY_AFTER_MS")? {
            c.max_retry_after = Duration::from_millis(v);
        }
        c.batch_records = c.batch_records.clamp(1, 1000);
        c.memory_records = c.memory_records.max(1);
        Ok(c)
    }
}
