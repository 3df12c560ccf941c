//! The protocol of one batch: the store numbers it and copies its rows into
//! the archive tables; this writes the files and the manifest, then has the
//! rows removed from the live tables and the batch marked done, all in the
//! store's one transaction. The checkpoints between the steps are where the
//! crash tests stop the process; each leaves the rows live, or archived and
//! gone from the live tables, never both and never neither.

use chrono::{DateTime, Datelike as _, NaiveDate, NaiveTime, TimeDelta, Utc, Weekday};
use remaudit_store::RetentionStore;
use remaudit_store::retention::{ArchiveTable, BatchTotals, RetireRequest, Retiring};

use crate::manifest::{MANIFEST_FORMAT, MANIFEST_FORMAT_V3, Manifest};
use crate::sink::{ArchiveSink, Step};
use crate::{ArchiveFormat, RetentionError};

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
    let format = sink.archive().format();
    let mut files = Vec::with_capacity(ArchiveTable::ALL.len());
    for table in ArchiveTable::ALL {
        match format {
            ArchiveFormat::Jsonl => {
                files.push(sink.write_file(&location, table, batch.rows(table)).await?);
            }
            ArchiveFormat::Parquet => {
                for (week, from, to) in weeks(batch.start_days(table).await?) {
                    let meta = [
                        ("batch", batch.number().to_string()),
                        ("installation", batch.installation().to_owned()),
                        ("week", week.clone()),
                    ];
                    let lines = batch.sorted_rows(table, from, to);
                    files.extend(
                        sink.write_week(&location, table, &week, &meta, lines)
                            .await?,
                    );
                }
            }
        }
    }
    let (start_time_min, start_time_max) = batch.start_times().await?;
    let chain_heads = batch.chain_heads().await?;
    let mut manifest = Manifest {
        format: match format {
            ArchiveFormat::Jsonl => MANIFEST_FORMAT,
            ArchiveFormat::Parquet => MANIFEST_FORMAT_V3,
        }
        .to_owned(),
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
    // The files must hold every row the batch is about to remove from the
    // live tables: a batch whose files hold fewer (or more) stops here, its
    // rows staying live.
    for table in ArchiveTable::ALL {
        let (name, in_batch) = (table.live_name(), batch.row_count(table).await?);
        let in_files = manifest.rows(name);
        if in_files != in_batch {
            return Err(RetentionError::Archive(format!(
                "batch {}: its files hold {in_files} rows of {name} where the batch has \
                 {in_batch}; the batch stops and its rows stay live",
                batch.number()
            )));
        }
    }
    if let Some(ring) = sink.archive().chain_keys() {
        manifest.sign(ring);
    }
    let manifest_sha256 = sink.write_manifest(&location, &manifest).await?;
    sink.checkpoint(Step::FileWritten);
    let totals = BatchTotals {
        remediations: manifest.rows(ArchiveTable::Remediations.live_name()),
        events: manifest.rows(ArchiveTable::Events.live_name()),
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

/// The ISO weeks (Monday to Monday, UTC) that hold `days`, in order: each
/// as its label (`2026-W33`) and its bounds.
fn weeks(days: Vec<NaiveDate>) -> Vec<(String, DateTime<Utc>, DateTime<Utc>)> {
    let mut mondays = days
        .into_iter()
        .map(|day| day.week(Weekday::Mon).first_day())
        .collect::<Vec<_>>();
    mondays.dedup();
    mondays
        .into_iter()
        .map(|monday| {
            let week = monday.iso_week();
            let from = monday.and_time(NaiveTime::MIN).and_utc();
            (
                format!("{:04}-W{:02}", week.year(), week.week()),
                from,
                from + TimeDelta::weeks(1),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_fall_into_iso_weeks_including_across_a_year_end() {
        let day = |s: &str| s.parse::<NaiveDate>().expect("day");
        let got = weeks(vec![
            day("2024-12-29"),
            day("2024-12-30"),
            day("2025-01-01"),
            day("2025-01-05"),
            day("2025-01-06"),
            day("2026-08-16"),
        ]);
        let labels = got.iter().map(|(w, _, _)| w.as_str()).collect::<Vec<_>>();
        assert_eq!(labels, ["2024-W52", "2025-W01", "2025-W02", "2026-W33"]);
        assert_eq!(got[1].1.to_rfc3339(), "2024-12-30T00:00:00+00:00");
        assert_eq!(got[1].2.to_rfc3339(), "2025-01-06T00:00:00+00:00");
    }
}
