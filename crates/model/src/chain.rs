//! The keyed hash chain over each remediation's events.
//!
//! Every stored event gets a sequence number from its remediation's chain
//! head (assigned by the database, in the transaction that stores it) and,
//! when the server holds a key, an HMAC-SHA-256 over its identity, content
//! hash, sequence and the previous chained event's MAC. [`verify_chain`]
//! walks one remediation's events in sequence order and names every broken
//! link. Keys live in a key file ([`KeyRing`]), never in the database.

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, Utc};
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

type HmacSha256 = hmac::Hmac<sha2_hmac::Sha256>;

/// Bytes of a chain key's secret.
pub const KEY_BYTES: usize = 32;

/// Bytes of a chain MAC.
pub const MAC_BYTES: usize = 32;

/// Longest key id a key file may hold.
pub const MAX_KEY_ID_LEN: usize = 64;

/// The first bytes of every MAC input: which format this is.
const DOMAIN: &[u8] = b"remaudit-chain-v1";

/// One chain key: its id (stored beside every MAC it makes) and its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ChainKey {
    id: String,
    secret: [u8; KEY_BYTES],
}

impl fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainKey")
            .field("id", &self.id)
            .field("secret", &"[redacted]")
            .finish()
    }
}

impl ChainKey {
    /// A key from its id and secret.
    ///
    /// # Errors
    /// When the id is empty, too long, or holds anything but ASCII letters,
    /// digits, `-`, `_` and `.`.
    pub fn new(id: impl Into<String>, secret: [u8; KEY_BYTES]) -> Result<Self, ChainError> {
        let id = id.into();
        let fine = !id.is_empty()
            && id.len() <= MAX_KEY_ID_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !fine {
            return Err(ChainError::KeyFile(format!(
                "key id {id:?} must be 1 to {MAX_KEY_ID_LEN} ASCII letters, digits, '-', '_' or '.'"
            )));
        }
        Ok(Self { id, secret })
    }

    /// This key's id.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The MAC of one link made with this key.
    ///
    /// # Panics
    /// Never: HMAC takes a key of any length.
    #[must_use]
    pub fn mac(&self, link: &Link<'_>, prev: Option<&[u8]>) -> [u8; MAC_BYTES] {
        let mut m = <HmacSha256 as KeyInit>::new_from_slice(&self.secret)
            .expect("HMAC takes a key of any length");
        let start = link.start_time.timestamp_micros().to_be_bytes();
        let seq = link.seq.to_be_bytes();
        let event_time = link.event_time.timestamp_micros().to_be_bytes();
        let fields: [&[u8]; 11] = [
            DOMAIN,
            self.id.as_bytes(),
            link.namespace.as_bytes(),
            link.remediation_name.as_bytes(),
            &start,
            &seq,
            link.event_id.as_bytes(),
            &event_time,
            link.overall_phase.as_bytes(),
            link.content_hash,
            prev.unwrap_or_default(),
        ];
        for field in fields {
            // Length-prefixed, so that no two field lists read as the same bytes.
            let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
            m.update(&len.to_be_bytes());
            m.update(field);
        }
        m.finalize().into_bytes().into()
    }
}

impl ChainKey {
    /// The MAC of a whole document, such as a retention manifest, under a
    /// domain tag of its own so that it never reads as a link's MAC.
    ///
    /// # Panics
    /// Never: HMAC takes a key of any length.
    #[must_use]
    pub fn mac_document(&self, domain: &str, body: &[u8]) -> [u8; MAC_BYTES] {
        let mut m = <HmacSha256 as KeyInit>::new_from_slice(&self.secret)
            .expect("HMAC takes a key of any length");
        for field in [domain.as_bytes(), self.id.as_bytes(), body] {
            let len = u64::try_from(field.len()).unwrap_or(u64::MAX);
            m.update(&len.to_be_bytes());
            m.update(field);
        }
        m.finalize().into_bytes().into()
    }

    /// Whether `mac` is this key's [`ChainKey::mac_document`] of `body`,
    /// compared in constant time.
    #[must_use]
    pub fn check_document(&self, domain: &str, body: &[u8], mac: &[u8]) -> bool {
        constant_time_eq(&self.mac_document(domain, body), mac)
    }
}

/// The chain keys a server or verifier holds: the newest signs, all verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRing {
    keys: Vec<ChainKey>,
}

impl KeyRing {
    /// A ring of one key.
    #[must_use]
    pub fn single(key: ChainKey) -> Self {
        Self { keys: vec![key] }
    }

    /// Reads a key file: one key a line, `<key id> <64 hex digits>`; blank
    /// lines and lines starting with `#` are skipped; the last key signs.
    ///
    /// # Errors
    /// [`ChainError::KeyFile`] naming the line that is wrong (never its secret).
    pub fn parse(text: &str) -> Result<Self, ChainError> {
        let mut keys: Vec<ChainKey> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |what: &str| ChainError::KeyFile(format!("line {}: {what}", n + 1));
            let mut parts = line.split_whitespace();
            let (Some(id), Some(hex), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(bad("expected `<key id> <64 hex digits>`"));
            };
            let secret = decode_hex(hex)
                .ok_or_else(|| bad("the secret must be 64 hex digits (32 bytes)"))?;
            let key = ChainKey::new(id, secret)
                .map_err(|e| bad(&e.to_string().replace("chain key file: ", "")))?;
            if keys.iter().any(|k| k.id == key.id) {
                return Err(bad(&format!("key id {id:?} appears twice")));
            }
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(ChainError::KeyFile(
                "it holds no key; create one with `remaudit chain-key create --out FILE`".into(),
            ));
        }
        Ok(Self { keys })
    }

    /// The key file text of this ring, oldest key first.
    #[must_use]
    pub fn to_file_text(&self) -> String {
        let mut out = String::from(
            "# remaudit chain keys: `<key id> <secret in hex>`, one a line.\n\
             # The last key signs new events; every key verifies. Keep this file secret.\n",
        );
        for key in &self.keys {
            out.push_str(&key.id);
            out.push(' ');
            out.push_str(&encode_hex(&key.secret));
            out.push('\n');
        }
        out
    }

    /// Adds a key, which becomes the signing key.
    ///
    /// # Errors
    /// When the ring already holds a key with that id.
    pub fn push(&mut self, key: ChainKey) -> Result<(), ChainError> {
        if self.get(&key.id).is_some() {
            return Err(ChainError::KeyFile(format!(
                "key id {:?} is already in the file",
                key.id
            )));
        }
        self.keys.push(key);
        Ok(())
    }

    /// The key new events are signed with: the last one.
    ///
    /// # Panics
    /// Never: a ring is built with at least one key and only grows.
    #[must_use]
    pub fn signing(&self) -> &ChainKey {
        self.keys.last().expect("a key ring is never empty")
    }

    /// The key with this id.
    #[must_use]
    pub fn get(&self, id: &str) -> Option<&ChainKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// The ids of all keys, oldest first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }
}

/// Errors of chain keys.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The key file cannot be used.
    #[error("chain key file: {0}")]
    KeyFile(String),
}

/// What one event's MAC covers, beside its key id and the previous MAC.
#[derive(Debug, Clone, Copy)]
pub struct Link<'a> {
    /// The remediation's namespace.
    pub namespace: &'a str,
    /// The remediation's name.
    pub remediation_name: &'a str,
    /// The remediation's start.
    pub start_time: DateTime<Utc>,
    /// The event's place in its remediation's chain, from 1.
    pub seq: i64,
    /// The event's id.
    pub event_id: Uuid,
    /// When the event happened (stored column).
    pub event_time: DateTime<Utc>,
    /// The phase the event reports (stored column).
    pub overall_phase: &'a str,
    /// SHA-256 of the stored record (see `NewAudit::content_hash`).
    pub content_hash: &'a [u8; 32],
}

/// One remediation, as chains are kept: by namespace, name and start.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub struct ChainRemediation {
    /// When the remediation started.
    pub start_time: DateTime<Utc>,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub remediation_name: String,
}

impl fmt::Display for ChainRemediation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} (started {})",
            self.namespace,
            self.remediation_name,
            self.start_time
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        )
    }
}

/// One stored event as the verifier reads it.
#[derive(Debug, Clone)]
pub struct ChainedEvent {
    /// The row id, in insertion order.
    pub id: i64,
    /// The event's id.
    pub event_id: Uuid,
    /// Its sequence number; `None` for events stored before chaining existed.
    pub seq: Option<i64>,
    /// The id of the key of its MAC; `None` when stored unchained.
    pub key_id: Option<String>,
    /// Its MAC; `None` when stored unchained.
    pub mac: Option<Vec<u8>>,
    /// The stored event time.
    pub event_time: DateTime<Utc>,
    /// The stored phase.
    pub overall_phase: String,
    /// SHA-256 recomputed from the stored record; `None` when the stored
    /// record no longer reads as a record.
    pub content_hash: Option<[u8; 32]>,
}

/// A remediation's chain head: its last sequence number and last MAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChainHead {
    /// The remediation.
    #[serde(flatten)]
    pub remediation: ChainRemediation,
    /// The sequence number of its last event.
    pub last_seq: i64,
    /// The MAC of its last chained event, in hex; `None` while no event of it was chained.
    pub last_mac: Option<String>,
}

/// What is wrong with a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BreakKind {
    /// The event's content, identity, sequence or MAC was changed.
    Edited,
    /// The event at this sequence number is missing.
    Deleted,
    /// An event that the chain does not account for.
    Inserted,
    /// An event stored under another sequence number than the one it was chained at.
    Reordered,
}

impl BreakKind {
    /// The kind's name, as serialized.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Edited => "edited",
            Self::Deleted => "deleted",
            Self::Inserted => "inserted",
            Self::Reordered => "reordered",
        }
    }
}

impl fmt::Display for BreakKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One broken link of a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChainBreak {
    /// The remediation whose chain broke.
    #[serde(flatten)]
    pub remediation: ChainRemediation,
    /// The sequence number of the broken link; `None` when the break has none
    /// (an inserted event without one, a missing chain head).
    pub seq: Option<i64>,
    /// What is wrong.
    pub kind: BreakKind,
    /// What was found, in words.
    pub detail: String,
}

impl fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seq = self.seq.map_or_else(|| "-".to_owned(), |s| s.to_string());
        write!(
            f,
            "{} seq {seq}: {}: {}",
            self.remediation, self.kind, self.detail
        )
    }
}

/// The verdict on one remediation's chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainVerdict {
    /// Events whose link verified.
    pub verified: u64,
    /// Events stored unchained (before chaining, or while the server had no
    /// key): not tampering, and not evidence either.
    pub unchained: u64,
    /// Every broken link.
    pub breaks: Vec<ChainBreak>,
}

/// Checks one remediation's chain: its events (any order) against its head.
#[must_use]
pub fn verify_chain(
    ring: &KeyRing,
    remediation: &ChainRemediation,
    events: &[ChainedEvent],
    head: Option<&ChainHead>,
) -> ChainVerdict {
    let mut verdict = ChainVerdict::default();
    let brk = |seq: Option<i64>, kind: BreakKind, detail: String| ChainBreak {
        remediation: remediation.clone(),
        seq,
        kind,
        detail,
    };
    let first_chained_id = events
        .iter()
        .filter(|e| e.seq.is_some())
        .map(|e| e.id)
        .min();
    let mut sequenced: Vec<&ChainedEvent> = Vec::new();
    for e in events {
        match (e.seq, first_chained_id) {
            (Some(_), _) => sequenced.push(e),
            (None, Some(first)) if e.id > first => verdict.breaks.push(brk(
                None,
                BreakKind::Inserted,
                format!(
                    "event {} (row {}) has no sequence number but was stored after chaining began",
                    e.event_id, e.id
                ),
            )),
            (None, _) => verdict.unchained += 1,
        }
    }
    sequenced.sort_by_key(|e| (e.seq, e.id));
    let claimed_max = sequenced.last().and_then(|e| e.seq).unwrap_or(0);
    let last = if let Some(h) = head {
        h.last_seq
    } else {
        if !sequenced.is_empty() {
            verdict.breaks.push(brk(
                None,
                BreakKind::Deleted,
                "the chain head is missing although chained events exist".into(),
            ));
        }
        claimed_max
    };
    let mut by_seq: HashMap<i64, Vec<usize>> = HashMap::new();
    for (i, e) in sequenced.iter().enumerate() {
        by_seq.entry(e.seq.unwrap_or_default()).or_default().push(i);
    }
    let verifies = |e: &ChainedEvent, seq: i64, prev: Option<&[u8]>| -> bool {
        let (Some(key_id), Some(mac), Some(hash)) = (&e.key_id, &e.mac, &e.content_hash) else {
            return false;
        };
        let Some(key) = ring.get(key_id) else {
            return false;
        };
        let link = Link {
            namespace: &remediation.namespace,
            remediation_name: &remediation.remediation_name,
            start_time: remediation.start_time,
            seq,
            event_id: e.event_id,
            event_time: e.event_time,
            overall_phase: &e.overall_phase,
            content_hash: hash,
        };
        constant_time_eq(&key.mac(&link, prev), mac)
    };
    let mut used = vec![false; sequenced.len()];
    // The MAC the next chained event was made with; `known` is false after a
    // deleted event, when the next link cannot be checked.
    let mut prev: Option<Vec<u8>> = None;
    let mut known = true;
    for t in 1..=last {
        let claims: Vec<usize> = by_seq
            .get(&t)
            .map(|v| v.iter().copied().filter(|&i| !used[i]).collect())
            .unwrap_or_default();
        if let Some(&i) = claims.iter().find(|&&i| sequenced[i].mac.is_none()) {
            used[i] = true;
            verdict.unchained += 1;
            continue;
        }
        if let Some(&i) = claims
            .iter()
            .find(|&&i| verifies(sequenced[i], t, prev.as_deref()))
        {
            used[i] = true;
            verdict.verified += 1;
            prev.clone_from(&sequenced[i].mac);
            known = true;
            continue;
        }
        if known {
            let moved = (0..sequenced.len())
                .find(|&i| !used[i] && verifies(sequenced[i], t, prev.as_deref()));
            if let Some(i) = moved {
                used[i] = true;
                verdict.breaks.push(brk(
                    Some(t),
                    BreakKind::Reordered,
                    format!(
                        "event {} was chained at sequence {t} but is stored at sequence {}",
                        sequenced[i].event_id,
                        sequenced[i].seq.unwrap_or_default()
                    ),
                ));
                prev.clone_from(&sequenced[i].mac);
                continue;
            }
        }
        if let Some(&i) = claims.first() {
            used[i] = true;
            let e = sequenced[i];
            if known {
                verdict
                    .breaks
                    .push(brk(Some(t), BreakKind::Edited, edited_detail(ring, e)));
            }
            prev.clone_from(&e.mac);
            known = true;
            continue;
        }
        verdict.breaks.push(brk(
            Some(t),
            BreakKind::Deleted,
            format!("no event holds sequence {t} (the chain head is at {last})"),
        ));
        prev = None;
        known = false;
    }
    for (i, e) in sequenced.iter().enumerate() {
        if !used[i] {
            verdict.breaks.push(brk(
                e.seq,
                BreakKind::Inserted,
                format!(
                    "event {} (row {}) is not part of the chain (the head is at {last})",
                    e.event_id, e.id
                ),
            ));
        }
    }
    if let Some(h) = head
        && known
        && last > 0
        && h.last_mac.as_deref().map(decode_hex_vec) != Some(prev.clone())
        && !(h.last_mac.is_none() && prev.is_none())
    {
        verdict.breaks.push(brk(
            Some(last),
            BreakKind::Edited,
            "the chain head's MAC is not the MAC of the last chained event".into(),
        ));
    }
    verdict
        .breaks
        .sort_by_key(|b| (b.seq.unwrap_or(i64::MAX), b.kind as u8));
    verdict
}

/// Why an event at its own place does not verify, in words.
fn edited_detail(ring: &KeyRing, e: &ChainedEvent) -> String {
    match (&e.key_id, &e.content_hash) {
        (Some(id), _) if ring.get(id).is_none() => format!(
            "event {} is signed with key id {id:?}, which the key file does not hold",
            e.event_id
        ),
        (_, None) => format!(
            "event {}'s stored record no longer reads as a record",
            e.event_id
        ),
        _ => format!(
            "event {}'s content, identity or MAC differs from what was chained",
            e.event_id
        ),
    }
}

/// Equality that takes as long whatever the bytes.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Lower-case hex of some bytes.
#[must_use]
pub fn encode_hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Bytes of a hex string (any case); `None` when it is not hex.
#[must_use]
pub fn decode_hex_vec(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) || !hex.is_ascii() {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect()
}

/// The 32 bytes of a key secret in hex.
fn decode_hex(hex: &str) -> Option<[u8; KEY_BYTES]> {
    decode_hex_vec(hex)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, byte: u8) -> ChainKey {
        ChainKey::new(id, [byte; KEY_BYTES]).expect("key")
    }

    fn remediation() -> ChainRemediation {
        ChainRemediation {
            start_time: DateTime::from_timestamp(1_700_000_000, 0).expect("time"),
            namespace: "prod".into(),
            remediation_name: "rr-1".into(),
        }
    }

    /// A chain of `n` events made as the store makes it.
    fn chain(ring: &KeyRing, n: i64) -> (Vec<ChainedEvent>, ChainHead) {
        let r = remediation();
        let mut prev: Option<Vec<u8>> = None;
        let mut events = Vec::new();
        for seq in 1..=n {
            let hash = [u8::try_from(seq).expect("small"); 32];
            let e = ChainedEvent {
                id: seq * 10,
                event_id: Uuid::from_u128(u128::try_from(seq).expect("positive")),
                seq: Some(seq),
                key_id: Some(ring.signing().id().into()),
                mac: None,
                event_time: r.start_time + chrono::TimeDelta::seconds(seq),
                overall_phase: "processing".into(),
                content_hash: Some(hash),
            };
            let link = Link {
                namespace: &r.namespace,
                remediation_name: &r.remediation_name,
                start_time: r.start_time,
                seq,
                event_id: e.event_id,
                event_time: e.event_time,
                overall_phase: &e.overall_phase,
                content_hash: &hash,
            };
            let mac = ring.signing().mac(&link, prev.as_deref()).to_vec();
            prev = Some(mac.clone());
            events.push(ChainedEvent {
                mac: Some(mac),
                ..e
            });
        }
        let head = ChainHead {
            remediation: r,
            last_seq: n,
            last_mac: prev.as_deref().map(encode_hex),
        };
        (events, head)
    }

    fn kinds(v: &ChainVerdict) -> Vec<(Option<i64>, BreakKind)> {
        v.breaks.iter().map(|b| (b.seq, b.kind)).collect()
    }

    #[test]
    /// Computed independently with Python's `hmac` over the same length-prefixed fields.
    fn mac_matches_a_known_answer() {
        let r = remediation();
        let link = Link {
            namespace: &r.namespace,
            remediation_name: &r.remediation_name,
            start_time: r.start_time,
            seq: 7,
            event_id: Uuid::from_u128(42),
            event_time: r.start_time,
            overall_phase: "completed",
            content_hash: &[9; 32],
        };
        let mac = key("k1", 1).mac(&link, Some(&[3; 32]));
        assert_eq!(
            encode_hex(&mac),
            "bfc1a33c0e9c5fcc70cc9d5154ef2fa9500e9560c4ed562b918eff84a96215ee"
        );
    }

    #[test]
    fn a_whole_chain_verifies() {
        let ring = KeyRing::single(key("k1", 1));
        let (events, head) = chain(&ring, 5);
        let v = verify_chain(&ring, &remediation(), &events, Some(&head));
        assert_eq!((v.verified, v.breaks.len()), (5, 0), "{v:?}");
    }

    #[test]
    fn each_kind_of_tampering_is_named_by_sequence() {
        let ring = KeyRing::single(key("k1", 1));
        let (events, head) = chain(&ring, 6);
        let r = remediation();

        let mut edited = events.clone();
        edited[2].overall_phase = "failed".into();
        let v = verify_chain(&ring, &r, &edited, Some(&head));
        assert_eq!(kinds(&v), [(Some(3), BreakKind::Edited)]);

        let mut deleted = events.clone();
        deleted.remove(3);
        let v = verify_chain(&ring, &r, &deleted, Some(&head));
        assert_eq!(kinds(&v), [(Some(4), BreakKind::Deleted)]);

        let mut last_deleted = events.clone();
        last_deleted.pop();
        let v = verify_chain(&ring, &r, &last_deleted, Some(&head));
        assert_eq!(kinds(&v), [(Some(6), BreakKind::Deleted)]);

        let mut inserted = events.clone();
        let mut forged = events[1].clone();
        forged.id = 99;
        forged.event_id = Uuid::from_u128(99);
        inserted.push(forged);
        let v = verify_chain(&ring, &r, &inserted, Some(&head));
        assert_eq!(kinds(&v), [(Some(2), BreakKind::Inserted)]);

        let mut unsequenced = events.clone();
        unsequenced.push(ChainedEvent {
            id: 1000,
            seq: None,
            key_id: None,
            mac: None,
            ..events[0].clone()
        });
        let v = verify_chain(&ring, &r, &unsequenced, Some(&head));
        assert_eq!(kinds(&v), [(None, BreakKind::Inserted)]);

        let mut swapped = events.clone();
        swapped[1].seq = Some(3);
        swapped[2].seq = Some(2);
        let v = verify_chain(&ring, &r, &swapped, Some(&head));
        assert_eq!(
            kinds(&v),
            [
                (Some(2), BreakKind::Reordered),
                (Some(3), BreakKind::Reordered)
            ]
        );
    }

    #[test]
    fn rotated_keys_verify_old_events_with_the_old_key() {
        let mut ring = KeyRing::single(key("old", 1));
        let (events, head) = chain(&ring, 3);
        ring.push(key("new", 2)).expect("push");
        assert_eq!(ring.signing().id(), "new");
        let v = verify_chain(&ring, &remediation(), &events, Some(&head));
        assert_eq!((v.verified, v.breaks.len()), (3, 0));

        let other = KeyRing::single(key("new", 2));
        let v = verify_chain(&other, &remediation(), &events, Some(&head));
        assert_eq!(v.breaks.first().map(|b| b.kind), Some(BreakKind::Edited));
        assert!(v.breaks[0].detail.contains("\"old\""), "{:?}", v.breaks[0]);
    }

    #[test]
    fn events_before_chaining_are_unchained_not_tampered() {
        let ring = KeyRing::single(key("k1", 1));
        let (mut events, head) = chain(&ring, 2);
        events.push(ChainedEvent {
            id: 1,
            seq: None,
            key_id: None,
            mac: None,
            ..events[0].clone()
        });
        let v = verify_chain(&ring, &remediation(), &events, Some(&head));
        assert_eq!((v.verified, v.unchained, v.breaks.len()), (2, 1, 0));
    }

    #[test]
    fn key_files_round_trip_and_refuse_garbage_without_echoing_secrets() {
        let mut ring = KeyRing::single(key("a", 1));
        ring.push(key("b", 2)).expect("push");
        let text = ring.to_file_text();
        assert_eq!(KeyRing::parse(&text).expect("parse"), ring);
        assert!(ring.push(key("a", 3)).is_err());
        let err = KeyRing::parse("k1 zz\n").expect_err("bad hex").to_string();
        assert!(err.contains("line 1"), "{err}");
        let err = KeyRing::parse("# nothing\n")
            .expect_err("empty")
            .to_string();
        assert!(err.contains("chain-key create"), "{err}");
        let secret = "ab".repeat(32);
        let err = KeyRing::parse(&format!("bad/id {secret}\n"))
            .expect_err("bad id")
            .to_string();
        assert!(!err.contains(&secret), "{err}");
        assert!(!format!("{ring:?}").contains(&"01".repeat(32)));
    }
}
