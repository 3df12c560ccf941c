//! The chain side of the store: reading chains back for verification
//! ([`ChainStore`]), linking a batch's events onto their remediations'
//! chain heads at insert, and verifying a page of remediations
//! ([`verify_page`]), which the CLI and the admin route share.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use remaudit_model::NewAudit;
use remaudit_model::chain::{
    ChainBreak, ChainHead, ChainRemediation, ChainedEvent, KeyRing, Link, verify_chain,
};

use crate::StoreError;
use crate::store::RemediationKey;

/// Most remediations one [`verify_page`] call may check.
pub const MAX_VERIFY_PAGE: u32 = 1000;

/// Reading chains back, as stored, for verification.
#[async_trait]
pub trait ChainStore: Send + Sync + 'static {
    /// Remediations that have a chain head or live events, started in
    /// `[since, until)`, after `after` in (start, namespace, name) order, at
    /// most `limit`. Remediations that retention archived are left out: their
    /// chains are checked from the archive.
    async fn chain_remediations(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        after: Option<&ChainRemediation>,
        limit: u32,
    ) -> Result<Vec<ChainRemediation>, StoreError>;

    /// One remediation's live events and chain head.
    async fn chain_of(
        &self,
        remediation: &ChainRemediation,
    ) -> Result<(Vec<ChainedEvent>, Option<ChainHead>), StoreError>;
}

/// The chain columns of one stored event, as the insert writes them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Linked {
    /// Place in the remediation's chain.
    pub seq: i64,
    /// Key id of the MAC; `None` when the server runs unchained.
    pub key_id: Option<String>,
    /// The MAC; `None` when the server runs unchained.
    pub mac: Option<Vec<u8>>,
}

/// A remediation's head as the insert reads and writes it:
/// (last sequence number, last MAC).
pub(crate) type Head = (i64, Option<Vec<u8>>);

/// Each remediation's [`Head`].
pub(crate) type Heads = HashMap<RemediationKey, Head>;

/// Links `records` (in the order given, which is the order they are stored
/// in) onto `heads`, moving each head on. Without a key ring the events get
/// their sequence number only, and the heads keep their last MAC, so that
/// chaining resumes where it stopped.
pub(crate) fn link_events<'r>(
    ring: Option<&KeyRing>,
    heads: &mut Heads,
    records: impl IntoIterator<Item = &'r NewAudit>,
) -> Vec<Linked> {
    records
        .into_iter()
        .map(|r| {
            let key = crate::store::remediation_key(r);
            let head = heads.entry(key).or_insert((0, None));
            head.0 += 1;
            let Some(ring) = ring else {
                return Linked {
                    seq: head.0,
                    ..Linked::default()
                };
            };
            let signing = ring.signing();
            let link = Link {
                namespace: &r.namespace,
                remediation_name: &r.remediation_name,
                start_time: crate::store::stored_time(r.start_time),
                seq: head.0,
                event_id: r.event_id,
                event_time: crate::store::stored_time(r.event_time),
                overall_phase: &r.overall_phase,
                content_hash: &r.content_hash,
            };
            let mac = signing.mac(&link, head.1.as_deref()).to_vec();
            head.1 = Some(mac.clone());
            Linked {
                seq: head.0,
                key_id: Some(signing.id().to_owned()),
                mac: Some(mac),
            }
        })
        .collect()
}

/// One page of a verification.
#[derive(Debug, Clone, Default)]
pub struct VerifyPage {
    /// Remediations checked.
    pub remediations: u64,
    /// Events whose link verified.
    pub verified: u64,
    /// Events stored unchained.
    pub unchained: u64,
    /// Every broken link found.
    pub breaks: Vec<ChainBreak>,
    /// Where the next page starts; `None` when the range is done.
    pub next: Option<ChainRemediation>,
}

/// Verifies the chains of up to `limit` remediations started in
/// `[since, until)`, after `after`.
///
/// # Errors
/// When the store cannot be read.
pub async fn verify_page(
    store: &dyn ChainStore,
    ring: &KeyRing,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    after: Option<&ChainRemediation>,
    limit: u32,
) -> Result<VerifyPage, StoreError> {
    let limit = limit.clamp(1, MAX_VERIFY_PAGE);
    let remediations = store.chain_remediations(since, until, after, limit).await?;
    let mut page = VerifyPage::default();
    for r in &remediations {
        let (events, head) = store.chain_of(r).await?;
        let verdict = verify_chain(ring, r, &events, head.as_ref());
        page.remediations += 1;
        page.verified += verdict.verified;
        page.unchained += verdict.unchained;
        page.breaks.extend(verdict.breaks);
    }
    if remediations.len() == usize::try_from(limit).unwrap_or(usize::MAX) {
        page.next = remediations.last().cloned();
    }
    Ok(page)
}

/// The columns of a stored event that both backends decode alike.
#[derive(sqlx::FromRow)]
pub(crate) struct EventColumns {
    id: i64,
    chain_seq: Option<i64>,
    chain_key_id: Option<String>,
    chain_mac: Option<Vec<u8>>,
    overall_phase: String,
    record: String,
}

impl EventColumns {
    /// The event as the verifier reads it, its content hash recomputed
    /// from the stored record.
    pub(crate) fn into_event(
        self,
        event_id: uuid::Uuid,
        event_time: DateTime<Utc>,
    ) -> ChainedEvent {
        ChainedEvent {
            id: self.id,
            event_id,
            seq: self.chain_seq,
            key_id: self.chain_key_id,
            mac: self.chain_mac,
            event_time,
            overall_phase: self.overall_phase,
            content_hash: crate::store::stored_record_hash(&self.record)
                .and_then(|h| h.try_into().ok()),
        }
    }
}

/// A head row as both backends select it; `T` is how the backend stores
/// times (a timestamp on PostgreSQL, RFC 3339 text on SQLite).
#[derive(sqlx::FromRow)]
pub(crate) struct HeadColumns<T> {
    namespace: String,
    remediation_name: String,
    pub(crate) start_time: T,
    last_seq: i64,
    last_mac: Option<Vec<u8>>,
}

impl<T> HeadColumns<T> {
    /// The head, its remediation started at `start_time` (decoded by the backend).
    pub(crate) fn into_head(self, start_time: DateTime<Utc>) -> ChainHead {
        let remediation = ChainRemediation {
            start_time,
            namespace: self.namespace,
            remediation_name: self.remediation_name,
        };
        head(&remediation, self.last_seq, self.last_mac.as_deref())
    }
}

/// A head as stored: last sequence number and last MAC.
pub(crate) fn head(
    remediation: &ChainRemediation,
    last_seq: i64,
    last_mac: Option<&[u8]>,
) -> ChainHead {
    ChainHead {
        remediation: remediation.clone(),
        last_seq,
        last_mac: last_mac.map(remaudit_model::chain::encode_hex),
    }
}
