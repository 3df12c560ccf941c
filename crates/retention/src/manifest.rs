//! The manifest written beside each batch's files: what the batch holds,
//! with each file's row count and SHA-256, the chain heads of its
//! remediations, and, when the run holds a chain key, an HMAC-SHA-256 over
//! all of it.

use chrono::{DateTime, Utc};
use remaudit_model::chain::{ChainHead, KeyRing, decode_hex_vec, encode_hex};
use serde::{Deserialize, Serialize};

/// The format tag of the manifests this version writes.
pub const MANIFEST_FORMAT: &str = "remaudit-archive/2";

/// The format tag of the manifests of batches written as Parquet, whose
/// files carry their week.
pub const MANIFEST_FORMAT_V3: &str = "remaudit-archive/3";

/// The format tag of manifests written before chain heads and signatures;
/// still read.
pub const MANIFEST_FORMAT_V1: &str = "remaudit-archive/1";

/// The domain tag of a manifest's MAC, so that it never reads as a MAC of
/// anything else made with the same key.
const SIGNATURE_DOMAIN: &str = "remaudit-archive-manifest-v2";

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
    /// The ISO week (`2026-W33`) whose rows a Parquet file holds; absent
    /// for JSON Lines files, which hold the whole batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub week: Option<String>,
    /// SHA-256 of each successive [`CHECK_CHUNK_BYTES`] of a Parquet file
    /// (the last may be shorter), lowercase hex: a reader of part of the
    /// file checks the chunks it reads. Empty for JSON Lines files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunk_sha256: Vec<String>,
}

/// The size of the chunks of a Parquet file whose SHA-256 the manifest lists.
pub const CHECK_CHUNK_BYTES: u64 = 1 << 20;

/// A manifest's signature: an HMAC-SHA-256 made with a chain key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// The id of the chain key that made it.
    pub key_id: String,
    /// The MAC over the manifest without its signature, lowercase hex.
    pub hmac_sha256: String,
}

/// The manifest written beside a batch's files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format tag: [`MANIFEST_FORMAT`], or [`MANIFEST_FORMAT_V1`] in older batches.
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
    /// The chain head of each of the batch's remediations that had one when
    /// it left the database: what its archived events must chain up to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain_heads: Vec<ChainHead>,
    /// The signature over everything above; absent when the run held no
    /// chain key, and in [`MANIFEST_FORMAT_V1`] manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

/// What checking a manifest's signature found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureCheck {
    /// Made by a key of the ring over this very content.
    Valid,
    /// The manifest carries no signature.
    Unsigned,
    /// Made by a key the ring does not hold.
    UnknownKey(String),
    /// The MAC does not match the content: the manifest was changed.
    Mismatch,
}

impl Manifest {
    /// Rows of one table's files (`remediation_audit` or `remediation_audit_events`).
    pub(crate) fn rows(&self, table: &str) -> u64 {
        self.files
            .iter()
            .filter(|f| f.table == table)
            .map(|f| f.rows)
            .sum()
    }

    /// Compressed bytes of every file.
    pub(crate) fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }

    /// The bytes a signature covers: the manifest's compact JSON with no
    /// signature. Fields are written in declaration order, so a manifest
    /// read back and written again gives the same bytes.
    fn signed_bytes(&self) -> Vec<u8> {
        let unsigned = Self {
            signature: None,
            ..self.clone()
        };
        // Plain data: encoding to JSON cannot fail.
        serde_json::to_vec(&unsigned).unwrap_or_default()
    }

    /// Signs the manifest with the ring's signing key.
    pub fn sign(&mut self, ring: &KeyRing) {
        let key = ring.signing();
        let mac = key.mac_document(SIGNATURE_DOMAIN, &self.signed_bytes());
        self.signature = Some(Signature {
            key_id: key.id().to_owned(),
            hmac_sha256: encode_hex(&mac),
        });
    }

    /// Checks the manifest's signature against the keys of `ring`.
    #[must_use]
    pub fn check_signature(&self, ring: &KeyRing) -> SignatureCheck {
        let Some(signature) = &self.signature else {
            return SignatureCheck::Unsigned;
        };
        let Some(key) = ring.get(&signature.key_id) else {
            return SignatureCheck::UnknownKey(signature.key_id.clone());
        };
        match decode_hex_vec(&signature.hmac_sha256) {
            Some(mac) if key.check_document(SIGNATURE_DOMAIN, &self.signed_bytes(), &mac) => {
                SignatureCheck::Valid
            }
            _ => SignatureCheck::Mismatch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use remaudit_model::chain::{ChainKey, ChainRemediation};

    fn manifest() -> Manifest {
        let at = "2026-08-03T10:00:00.123456Z".parse().expect("time");
        Manifest {
            format: MANIFEST_FORMAT.to_owned(),
            batch: 7,
            installation: Some("6ed23026-a60f-46a1-accd-2b00f2e430bc".into()),
            source: "rows".into(),
            run_now: at,
            start_time_min: Some(at),
            start_time_max: Some(at),
            files: vec![ArchivedFile {
                table: "remediation_audit_events".into(),
                path: "x/remediation_audit_events.jsonl.gz".into(),
                rows: 3,
                bytes: 120,
                sha256: "ab".repeat(32),
                week: None,
                chunk_sha256: Vec::new(),
            }],
            chain_heads: vec![ChainHead {
                remediation: ChainRemediation {
                    start_time: at,
                    namespace: "prod".into(),
                    remediation_name: "rr-1".into(),
                },
                last_seq: 3,
                last_mac: Some("cd".repeat(32)),
            }],
            signature: None,
        }
    }

    fn ring(id: &str, byte: u8) -> KeyRing {
        KeyRing::single(ChainKey::new(id, [byte; 32]).expect("key"))
    }

    #[test]
    fn a_signature_survives_a_round_trip_through_json() {
        let mut m = manifest();
        m.sign(&ring("k1", 1));
        let text = serde_json::to_vec_pretty(&m).expect("json");
        let back: Manifest = serde_json::from_slice(&text).expect("parse");
        assert_eq!(back.check_signature(&ring("k1", 1)), SignatureCheck::Valid);
    }

    #[test]
    fn any_change_unknown_key_or_missing_signature_is_reported() {
        let mut m = manifest();
        assert_eq!(m.check_signature(&ring("k1", 1)), SignatureCheck::Unsigned);
        m.sign(&ring("k1", 1));
        assert_eq!(
            m.check_signature(&ring("k2", 1)),
            SignatureCheck::UnknownKey("k1".into())
        );
        assert_eq!(m.check_signature(&ring("k1", 2)), SignatureCheck::Mismatch);
        let mut edited = m.clone();
        edited.chain_heads[0].last_seq = 2;
        assert_eq!(
            edited.check_signature(&ring("k1", 1)),
            SignatureCheck::Mismatch
        );
        let mut edited = m.clone();
        edited.files[0].rows = 2;
        assert_eq!(
            edited.check_signature(&ring("k1", 1)),
            SignatureCheck::Mismatch
        );
        let mut edited = m;
        edited.signature.as_mut().expect("signed").hmac_sha256 = "not hex".into();
        assert_eq!(
            edited.check_signature(&ring("k1", 1)),
            SignatureCheck::Mismatch
        );
    }
}
