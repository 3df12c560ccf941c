//! The manifest written beside each batch's files: what the batch holds,
//! with each file's row count and SHA-256.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The manifest's format tag.
pub const MANIFEST_FORMAT: &str = "remaudit-archive/1";

/// One written archive file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedFile {
    /// The table the rows came from.
    pub table: String,
    /// Object path of the file.
    pub path: String,
    /// Rows (lines) in the file.
    pub rows: u64,
    /// Size of the compressed file in bytes.
    pub bytes: u64,
    /// SHA-256 of the compressed file, lowercase hex.
    pub sha256: String,
}

/// The manifest written beside a batch's files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format tag, `remaudit-archive/1`.
    pub format: String,
    /// Batch number (the journal's id).
    pub batch: i64,
    /// The installation id of the database that wrote the batch; absent in
    /// manifests written before installation ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installation: Option<String>,
    /// Where the rows came from: `rows` or a partition name.
    pub source: String,
    /// The run's clock.
    pub run_now: DateTime<Utc>,
    /// Earliest `start_time` in the batch.
    pub start_time_min: Option<DateTime<Utc>>,
    /// Latest `start_time` in the batch.
    pub start_time_max: Option<DateTime<Utc>>,
    /// The files, remediations first.
    pub files: Vec<ArchivedFile>,
}

impl Manifest {
    /// Rows of the `i`th file (0: summary rows, 1: events).
    pub(crate) fn rows(&self, i: usize) -> u64 {
        self.files.get(i).map_or(0, |f| f.rows)
    }

    /// Compressed bytes of every file.
    pub(crate) fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }
}
