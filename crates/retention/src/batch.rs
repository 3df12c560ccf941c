//! The protocol of one batch: the store numbers it and copies its rows into
//! the archive tables; this writes the files and the manifest, then has the
//! rows removed from the live tables and the batch marked done, all in the
//! store's one transaction. The checkpoints between the steps are where the
//! crash tests stop the process; each leaves the rows live, or archived and
//! gone from the live tables, never both and never neither.

use remaudit_store::RetentionStore;
use remaudit_store::retention::{ArchiveTable, BatchTotals, RetireRequest, Retiring};

use crate::RetentionError;
use crate::manifest::{MANIFEST_FORMAT, Manifest};
use crate::sink::{ArchiveSink, Step};

/// What one batch moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchReport {
    /// Batch number; 0 for a week that held no row to archive.
    pub batch: i64,
    /// `rows`, `deleted` or the partition's name.
    pub source: String,
    /// Summary rows archived and removed.
    pub remediations: u64,
    /// Events archived and removed.
    pub events: u64,
    /// Bytes of files written.
    pub bytes: u64,
    /// Rows of a retired partition that were not due and stay live.
    pub kept: u64,
    /// Where the files are.
    pub location: String,
}

/// Moves the next batch of due rows to the archive; `None` when nothing is due.
pub(crate) async fn retire_next(
    store: &dyn RetentionStore,
    sink: &dyn ArchiveSink,
    request: &RetireRequest,
) -> Result<Option<BatchReport>, RetentionError> {
    let locate = |installation: &str, batch: i64| {
        sink.checkpoint(Step::BatchNumbered);
        sink.location(installation, batch)
    };
    let mut batch = match store.next_batch(request, &locate).await? {
        None => return Ok(None),
        Some(Retiring::Emptied { source, kept }) => {
            return Ok(Some(BatchReport {
                batch: 0,
                source,
                remediations: 0,
                events: 0,
                bytes: 0,
                kept,
                location: String::new(),
            }));
        }
        Some(Retiring::Batch(batch)) => batch,
    };
    sink.checkpoint(Step::ArchiveInserted);
    let location = batch.location().to_owned();
    let mut files = Vec::with_capacity(ArchiveTable::ALL.len());
    for table in ArchiveTable::ALL {
        files.push(sink.write_file(&location, table, batch.rows(table)).await?);
    }
    let (start_time_min, start_time_max) = batch.start_times().await?;
    let chain_heads = batch.chain_heads().await?;
    let mut manifest = Manifest {
        format: MANIFEST_FORMAT.to_owned(),
        batch: batch.number(),
        installation: Some(batch.installation().to_owned()),
        source: batch.source().to_owned(),
        run_now: request.now,
        start_time_min,
        start_time_max,
        files,
        chain_heads,
        signature: None,
    };
    if let Some(ring) = sink.archive().chain_keys() {
        manifest.sign(ring);
    }
    let manifest_sha256 = sink.write_manifest(&location, &manifest).await?;
    sink.checkpoint(Step::FileWritten);
    let totals = BatchTotals {
        remediations: manifest.rows(0),
        events: manifest.rows(1),
        bytes: manifest.bytes(),
        start_time_min,
        start_time_max,
        manifest_sha256,
    };
    sink.checkpoint(Step::BeforeDelete);
    let report = BatchReport {
        batch: batch.number(),
        source: manifest.source,
        remediations: totals.remediations,
        events: totals.events,
        bytes: totals.bytes,
        kept: batch.kept(),
        location,
    };
    batch.finish(&totals).await?;
    Ok(Some(report))
}
