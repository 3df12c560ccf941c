//! Settings of the publisher, each with a documented default. The library
//! reads no environment: the binary layers its settings file, `REMAUDIT_*`
//! variables and flags over these defaults and hands the result over. The
//! serde names are the keys of a settings file's `[publisher]` table.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::credentials::CredentialSettings;
use crate::spool::{DEFAULT_MAX_BYTES, DEFAULT_SEGMENT_BYTES};

/// How the publisher queues, spools, batches and retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PublisherSettings {
    /// Base URL of the remaudit service (`REMAUDIT_URL`; default `http://127.0.0.1:8085`).
    pub url: String,
    /// Directory of the on-disk spool (`REMAUDIT_SPOOL_DIR`). `None` keeps records in
    /// memory only: they are lost with the process.
    pub spool_dir: Option<PathBuf>,
    /// Records the memory queue holds (`REMAUDIT_PUBLISHER_MEMORY_RECORDS`; default
    /// 32,768, about 32 MiB at 1 KiB a record, enough for a 25,000-record burst
    /// with no spool at all). With a spool, it holds only the records the spool
    /// could not take (it was full, or a write failed).
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
    #[serde(rename = "spool_fsync_ms", with = "millis")]
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
    #[serde(rename = "linger_ms", with = "millis")]
    pub linger: Duration,
    /// Timeout of one request (`REMAUDIT_PUBLISHER_TIMEOUT_MS`; default 10 s).
    #[serde(rename = "timeout_ms", with = "millis")]
    pub request_timeout: Duration,
    /// First retry delay (`REMAUDIT_PUBLISHER_MIN_BACKOFF_MS`; default 100 ms).
    #[serde(rename = "min_backoff_ms", with = "millis")]
    pub min_backoff: Duration,
    /// Longest retry delay (`REMAUDIT_PUBLISHER_MAX_BACKOFF_MS`; default 30 s).
    #[serde(rename = "max_backoff_ms", with = "millis")]
    pub max_backoff: Duration,
    /// Longest `Retry-After` honoured (`REMAUDIT_PUBLISHER_MAX_RETRY_AFTER_MS`;
    /// default 300 s): a service that asks for more is tried again after this.
    #[serde(rename = "max_retry_after_ms", with = "millis")]
    pub max_retry_after: Duration,
    /// What the publisher presents to the service: the `[publisher.credentials]`
    /// table (token file, CA file, client certificate); none by default.
    #[serde(skip_serializing_if = "CredentialSettings::is_unset")]
    pub credentials: CredentialSettings,
}

impl Default for PublisherSettings {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8085".to_owned(),
            spool_dir: None,
            memory_records: 32_768,
            spool_max_bytes: DEFAULT_MAX_BYTES,
            spool_segment_bytes: DEFAULT_SEGMENT_BYTES,
            fsync_interval: Duration::from_millis(100),
            batch_records: 500,
            batch_bytes: 3 << 20,
            max_in_flight: 4,
            linger: Duration::from_millis(50),
            request_timeout: Duration::from_secs(10),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_mins(5),
            credentials: CredentialSettings::default(),
        }
    }
}

impl PublisherSettings {
    /// Most records in one request the service accepts.
    pub const MAX_BATCH_RECORDS: usize = 1000;

    /// These settings with out-of-range values brought into range: a batch of
    /// 1 to [`MAX_BATCH_RECORDS`](Self::MAX_BATCH_RECORDS) records, a memory
    /// queue of at least one record.
    #[must_use]
    pub fn clamped(mut self) -> Self {
        self.batch_records = self.batch_records.clamp(1, Self::MAX_BATCH_RECORDS);
        self.memory_records = self.memory_records.max(1);
        self
    }
}

/// A [`Duration`] as a whole number of milliseconds, the unit of the
/// publisher's `*_ms` settings.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spool_defaults_are_the_spools_own() {
        let c = PublisherSettings::default();
        assert_eq!(c.spool_max_bytes, crate::spool::DEFAULT_MAX_BYTES);
        assert_eq!(c.spool_segment_bytes, crate::spool::DEFAULT_SEGMENT_BYTES);
    }

    #[test]
    fn clamping_brings_batches_and_the_queue_into_range() {
        let c = PublisherSettings {
            batch_records: 5000,
            memory_records: 0,
            ..PublisherSettings::default()
        }
        .clamped();
        assert_eq!((c.batch_records, c.memory_records), (1000, 1));
        let c = PublisherSettings {
            batch_records: 0,
            ..PublisherSettings::default()
        }
        .clamped();
        assert_eq!(c.batch_records, 1);
    }
}
