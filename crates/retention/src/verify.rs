//! `remaudit retention verify`: every row a finished batch moved is in the
//! archive tables and in that batch's files, whose checksums match, and is
//! no longer in the live tables; with the chain keys, each manifest's
//! signature holds and each archived remediation's events chain up to the
//! head its manifest carries.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};

use remaudit_store::retention::ArchiveTable;

use crate::manifest::{
    CHECK_CHUNK_BYTES, MANIFEST_FORMAT, MANIFEST_FORMAT_V1, MANIFEST_FORMAT_V3, Manifest,
    SignatureCheck,
};
use chrono::{DateTime, Utc};
use flate2::read::GzDecoder;
use remaudit_model::RemediationOrchestrationAudit;
use remaudit_model::chain::{
    ChainHead, ChainRemediation, ChainedEvent, KeyRing, decode_hex_vec, verify_chain,
};
use remaudit_store::RetentionStore;
use serde::Deserialize;

use crate::archive::{hex_sha256, manifest_path};
use crate::{Archive, RetentionError, columnar};

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
    /// Whether signatures and chains were checked (a key ring was given).
    pub chains_checked: bool,
    /// Archived remediations whose chain was checked against its head.
    pub chains: u64,
    /// Archived events whose link verified.
    pub links_verified: u64,
    /// Archived events stored before chaining or by an unchained server.
    pub unchained: u64,
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

/// One line of an archived events file, as far as its chain goes.
#[derive(Deserialize)]
struct ArchivedEvent {
    id: i64,
    event_id: uuid::Uuid,
    namespace: String,
    remediation_name: String,
    start_time: DateTime<Utc>,
    overall_phase: String,
    event_time: DateTime<Utc>,
    record: serde_json::Value,
    #[serde(default)]
    chain_seq: Option<i64>,
    #[serde(default)]
    chain_key_id: Option<String>,
    /// `\x` and hex, as PostgreSQL writes a `bytea` into JSON.
    #[serde(default)]
    chain_mac: Option<String>,
}

impl ArchivedEvent {
    fn into_chained(self) -> (ChainRemediation, ChainedEvent) {
        let remediation = ChainRemediation {
            start_time: self.start_time,
            namespace: self.namespace,
            remediation_name: self.remediation_name,
        };
        let event = ChainedEvent {
            id: self.id,
            event_id: self.event_id,
            seq: self.chain_seq,
            key_id: self.chain_key_id,
            // A MAC that is not `\x` and hex reads as a wrong MAC, an edit.
            mac: self
                .chain_mac
                .map(|m| decode_hex_vec(m.strip_prefix("\\x").unwrap_or(&m)).unwrap_or_default()),
            event_time: self.event_time,
            overall_phase: self.overall_phase,
            content_hash: serde_json::from_value::<RemediationOrchestrationAudit>(self.record)
                .ok()
                .and_then(RemediationOrchestrationAudit::stored_content_hash),
        };
        (remediation, event)
    }
}

/// Each archived remediation's events, as an events file holds them.
type Chains = BTreeMap<ChainRemediation, Vec<ChainedEvent>>;

/// Checks the batches with rows that started in `[from, to)`; with `ring`,
/// also each manifest's signature and the chains of the archived events.
/// A batch's events are held in memory while its chains are checked.
///
/// # Errors
/// When the database or the object store cannot be read; discrepancies are
/// reported in [`VerifyReport::problems`], not as errors.
pub async fn verify(
    store: &dyn RetentionStore,
    archive: &Archive,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    ring: Option<&KeyRing>,
) -> Result<VerifyReport, RetentionError> {
    let mut report = VerifyReport {
        chains_checked: ring.is_some(),
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
        if ![MANIFEST_FORMAT, MANIFEST_FORMAT_V1, MANIFEST_FORMAT_V3]
            .contains(&manifest.format.as_str())
        {
            problems.push(format!(
                "batch {id}: the manifest's format {:?} is not one this version reads",
                manifest.format
            ));
        }
        if let Some(ring) = ring {
            check_signature(id, &manifest, ring, problems);
        }
        // The events of every file of the batch, by remediation; `None`
        // once a file could not be read whole (its chains are not judged).
        let mut chains: Option<Chains> = ring.map(|_| Chains::new());
        let ids = store.batch_ids(id).await?;
        let mut found: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
        for file in &manifest.files {
            let is_events = file.table == "remediation_audit_events";
            let Some(bytes) = archive.read(&file.path).await? else {
                problems.push(format!("batch {id}: file {} is missing", file.path));
                chains = chains.filter(|_| !is_events);
                continue;
            };
            if hex_sha256(&bytes) != file.sha256 {
                problems.push(format!(
                    "batch {id}: {} does not match its SHA-256",
                    file.path
                ));
                chains = chains.filter(|_| !is_events);
                continue;
            }
            if !file.chunk_sha256.is_empty() && chunk_digests(&bytes) != file.chunk_sha256 {
                problems.push(format!(
                    "batch {id}: the chunk checksums of {} in the manifest do not match it",
                    file.path
                ));
            }
            let ids_found = found.entry(file.table.as_str()).or_default();
            let before = ids_found.len();
            let mut row = |value: serde_json::Value| {
                match value.get("id").and_then(serde_json::Value::as_i64) {
                    Some(row) => ids_found.push(row),
                    None => {
                        problems.push(format!("batch {id}: a row of {} has no id", file.path));
                    }
                }
                if let Some(chains) = chains.as_mut().filter(|_| is_events) {
                    match serde_json::from_value::<ArchivedEvent>(value) {
                        Ok(event) => {
                            let (remediation, event) = event.into_chained();
                            chains.entry(remediation).or_default().push(event);
                        }
                        Err(e) => problems.push(format!(
                            "batch {id}: a row of {} is not an event: {e}",
                            file.path
                        )),
                    }
                }
            };
            let read = if file.path.ends_with(".parquet") {
                let table = if is_events {
                    ArchiveTable::Events
                } else {
                    ArchiveTable::Remediations
                };
                columnar::read_rows(table, bytes, |r| row(serde_json::Value::Object(r))).map(|_| ())
            } else {
                read_lines(&bytes, &mut row)
            };
            if let Err(e) = read {
                problems.push(format!("batch {id}: {} is unreadable: {e}", file.path));
                chains = chains.filter(|_| !is_events);
            }
            let rows = ids_found.len() - before;
            if rows as u64 != file.rows {
                problems.push(format!(
                    "batch {id}: {} holds {rows} rows, the manifest says {}",
                    file.path, file.rows
                ));
            }
        }
        for (table, expected) in [
            ("remediation_audit", &ids.remediations),
            ("remediation_audit_events", &ids.events),
        ] {
            let mut got = found.remove(table).unwrap_or_default();
            got.sort_unstable();
            if &got != expected {
                problems.push(format!(
                    "batch {id}: the files of {table} hold {} rows, the archive table {}{}",
                    got.len(),
                    expected.len(),
                    if got.len() == expected.len() {
                        " with other ids"
                    } else {
                        ""
                    }
                ));
            }
        }
        if let (Some(ring), Some(chains)) = (ring, chains) {
            check_chains(id, &manifest.chain_heads, chains, ring, &mut report);
        }
        let problems = &mut report.problems;
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

/// SHA-256 of each [`CHECK_CHUNK_BYTES`] of `bytes`, lowercase hex.
fn chunk_digests(bytes: &[u8]) -> Vec<String> {
    bytes
        .chunks(usize::try_from(CHECK_CHUNK_BYTES).unwrap_or(usize::MAX))
        .map(hex_sha256)
        .collect()
}

/// Reads a gzip-compressed JSON Lines file's rows into `row`.
fn read_lines(bytes: &[u8], row: &mut impl FnMut(serde_json::Value)) -> Result<(), String> {
    for line in BufReader::new(GzDecoder::new(bytes)).lines() {
        let line = line.map_err(|e| e.to_string())?;
        row(serde_json::from_str(&line).map_err(|e| e.to_string())?);
    }
    Ok(())
}

/// Adds a problem when the manifest's signature does not hold.
fn check_signature(id: i64, manifest: &Manifest, ring: &KeyRing, problems: &mut Vec<String>) {
    match manifest.check_signature(ring) {
        SignatureCheck::Valid => {}
        SignatureCheck::Unsigned => problems.push(format!(
            "batch {id}: the manifest is not signed (written before signing, or by a run \
             without --chain-key-file), so its content cannot be vouched for"
        )),
        SignatureCheck::UnknownKey(key) => problems.push(format!(
            "batch {id}: the manifest is signed with key {key:?}, which the key file does not hold"
        )),
        SignatureCheck::Mismatch => problems.push(format!(
            "batch {id}: the manifest's signature does not match its content: it was changed \
             after the batch was written"
        )),
    }
}

/// Checks each archived remediation's events against the head the
/// manifest carries, adding each broken link to the problems.
fn check_chains(
    id: i64,
    heads: &[ChainHead],
    mut chains: Chains,
    ring: &KeyRing,
    report: &mut VerifyReport,
) {
    let mut heads_of: BTreeMap<&ChainRemediation, &ChainHead> = BTreeMap::new();
    for head in heads {
        chains.entry(head.remediation.clone()).or_default();
        if heads_of.insert(&head.remediation, head).is_some() {
            report.problems.push(format!(
                "batch {id}: the manifest carries two chain heads for {}",
                head.remediation
            ));
        }
    }
    for (remediation, mut events) in chains {
        events.sort_by_key(|e| e.id);
        let verdict = verify_chain(
            ring,
            &remediation,
            &events,
            heads_of.get(&remediation).copied(),
        );
        report.chains += 1;
        report.links_verified += verdict.verified;
        report.unchained += verdict.unchained;
        report.problems.extend(
            verdict
                .breaks
                .iter()
                .map(|b| format!("batch {id}: chain of {b}")),
        );
    }
}
