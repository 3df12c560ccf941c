//! What can go wrong in a retention run, each saying what to do next.

use remaudit_store::StoreError;

/// What went wrong in a retention run.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// A setting or URL is unusable.
    #[error("{0}")]
    Config(String),
    /// The object store failed or refused a write; the message says what
    /// became of the batch and what to check.
    #[error("archive: {0}")]
    Archive(String),
    /// A manifest could not be written, or one in the archive does not
    /// describe its own batch.
    #[error("archive manifest: {0}")]
    Manifest(String),
    /// The database failed.
    #[error(
        "{0}; the retention run stopped: what it moved stays moved and the batch it was \
         moving stays live, so run it again once the database answers"
    )]
    Store(#[from] StoreError),
}
