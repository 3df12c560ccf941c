//! `remaudit retention verify`: every row a finished batch moved is in the
//! archive tables and in that batch's files, whose checksums match, and is
//! no longer in the live tables.

use std::io::{BufRead as _, BufReader};

use crate::manifest::Manifest;
use chrono::{DateTime, Utc};
use flate2::read::GzDecoder;
use remaudit_store::RetentionStore;

use crate::archive::{hex_sha256, manifest_path};
use crate::{Archive, RetentionError};

/// What a verification found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifyReport {
    /// Finished batches checked.
    pub batches: u64,
    /// Summary rows those batches moved.
    pub remediations: u64,
    /// Events those batches moved.
    pub events: u64,
    /// Batches an interrupted run left; the next run removes their files.
    pub pending: Vec<i64>,
    /// Each discrepancy, in words; empty when all is well.
    pub problems: Vec<String>,
}

impl VerifyReport {
    /// True when no problem was found.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The widest range [`verify`] takes: years 1 to 9999, which both backends store.
#[must_use]
pub fn all_time() -> (DateTime<Utc>, DateTime<Utc>) {
    let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap_or_default();
    (at("0001-01-01T00:00:00Z"), at("9999-12-31T23:59:59Z"))
}

/// Checks the batches with rows that started in `[from, to)`.
///
/// # Errors
/// When the database or the object store cannot be read; discrepancies are
/// reported in [`VerifyReport::problems`], not as errors.
pub async fn verify(
    store: &dyn RetentionStore,
    archive: &Archive,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<VerifyReport, RetentionError> {
    let mut report = VerifyReport {
        pending: store
            .pending_batches()
            .await?
            .into_iter()
            .map(|p| p.batch)
            .collect(),
        ..VerifyReport::default()
    };
    for batch in store.finished_batches(from, to).await? {
        report.batches += 1;
        report.remediations += batch.remediations;
        report.events += batch.events;
        let problems = &mut report.problems;
        let id = batch.batch;
        let Some(body) = archive.read(&manifest_path(&batch.location)).await? else {
            problems.push(format!(
                "batch {id}: manifest {} is missing",
                manifest_path(&batch.location)
            ));
            continue;
        };
        if batch.manifest_sha256.as_deref() != Some(hex_sha256(&body).as_str()) {
            problems.push(format!(
                "batch {id}: the manifest's SHA-256 differs from the one recorded"
            ));
        }
        let manifest: Manifest = match serde_json::from_slice(&body) {
            Ok(m) => m,
            Err(e) => {
                problems.push(format!("batch {id}: the manifest does not parse: {e}"));
                continue;
            }
        };
        if manifest.batch != id {
            problems.push(format!(
                "batch {id}: the manifest at {} is batch {}'s",
                manifest_path(&batch.location),
                manifest.batch
            ));
        }
        let ids = store.batch_ids(id).await?;
        for file in &manifest.files {
            let Some(bytes) = archive.read(&file.path).await? else {
                problems.push(format!("batch {id}: file {} is missing", file.path));
                continue;
            };
            if hex_sha256(&bytes) != file.sha256 {
                problems.push(format!(
                    "batch {id}: {} does not match its SHA-256",
                    file.path
                ));
                continue;
            }
            let mut found = Vec::new();
            for line in BufReader::new(GzDecoder::new(bytes.as_ref())).lines() {
                let parsed = line.map_err(|e| e.to_string()).and_then(|l| {
                    serde_json::from_str::<serde_json::Value>(&l).map_err(|e| e.to_string())
                });
                match parsed.map(|v| v.get("id").and_then(serde_json::Value::as_i64)) {
                    Ok(Some(row)) => found.push(row),
                    Ok(None) => {
                        problems.push(format!("batch {id}: a line of {} has no id", file.path));
                    }
                    Err(e) => {
                        problems.push(format!("batch {id}: {} is unreadable: {e}", file.path));
                        break;
                    }
                }
            }
            found.sort_unstable();
            let expected = if file.table == "remediation_audit" {
                &ids.remediations
            } else {
                &ids.events
            };
            if found.len() as u64 != file.rows || &found != expected {
                problems.push(format!(
                    "batch {id}: {} holds {} rows, the manifest says {} and the archive table {}",
                    file.path,
                    found.len(),
                    file.rows,
                    expected.len()
                ));
            }
        }
        let places = store.batch_places(id).await?;
        if places.archived_remediations != batch.remediations
            || places.archived_events != batch.events
        {
            problems.push(format!(
                "batch {id}: the archive tables hold {} rows and {} events, the journal says {} and {}",
                places.archived_remediations, places.archived_events, batch.remediations, batch.events
            ));
        }
        if places.live_remediations > 0 || places.live_events > 0 {
            problems.push(format!(
                "batch {id}: {} rows and {} events are both archived and still live",
                places.live_remediations, places.live_events
            ));
        }
    }
    Ok(report)
}
