//! The keyed hash chain on both backends: tampering with SQL behind the
//! store's back is named by remediation and sequence; concurrent, shuffled
//! writers leave chains that verify clean; rotated keys still verify.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use remaudit_model::NewAudit;
use remaudit_model::chain::BreakKind::{self, Deleted, Edited, Inserted, Reordered};
use remaudit_model::chain::{ChainKey, KeyRing};
use remaudit_store::{InsertOutcome, InsertRules, Store, VerifyPage, verify_page};
use remaudit_testkit::{at, record};
use serde_json::json;

/// Raw SQL on the store's database, behind its back.
pub enum Sql {
    /// PostgreSQL.
    Pg(sqlx::PgPool),
    /// SQLite.
    Lite(sqlx::SqlitePool),
}

impl Sql {
    async fn run(&self, sql: &'static str) -> u64 {
        match self {
            Self::Pg(p) => sqlx::query(sql)
                .execute(p)
                .await
                .expect(sql)
                .rows_affected(),
            Self::Lite(p) => sqlx::query(sql)
                .execute(p)
                .await
                .expect(sql)
                .rows_affected(),
        }
    }

    fn is_pg(&self) -> bool {
        matches!(self, Self::Pg(_))
    }
}

fn ring(ids: &[(&str, u8)]) -> Arc<KeyRing> {
    let mut keys = ids
        .iter()
        .map(|&(id, b)| ChainKey::new(id, [b; 32]).expect("key"));
    let mut ring = KeyRing::single(keys.next().expect("one key"));
    for k in keys {
        ring.push(k).expect("push");
    }
    Arc::new(ring)
}

fn rules(ring: Option<&Arc<KeyRing>>) -> InsertRules {
    InsertRules {
        chain: ring.cloned(),
        ..InsertRules::default()
    }
}

/// `n` events of one remediation, in the order they happen.
fn events(name: &str, start: DateTime<Utc>, n: i64, from: i64) -> Vec<NewAudit> {
    (from..from + n)
        .map(|i| {
            record(json!({
                "namespace": "chain", "remediation_name": name, "alert_fingerprint": "fp",
                "start_time": start.to_rfc3339(), "overall_phase": "processing",
                "event_time": (start + TimeDelta::seconds(i)).to_rfc3339(),
                "failure_reason": format!("step {i}"),
            }))
        })
        .collect()
}

async fn verify(store: &Arc<dyn Store>, ring: &KeyRing) -> VerifyPage {
    verify_page(&**store, ring, at(-600), at(600), None, 1000)
        .await
        .expect("verify")
}

fn breaks(page: &VerifyPage) -> Vec<(String, Option<i64>, BreakKind)> {
    let mut v: Vec<_> = page
        .breaks
        .iter()
        .map(|b| (b.remediation.remediation_name.clone(), b.seq, b.kind))
        .collect();
    v.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    v
}

async fn store_all(store: &Arc<dyn Store>, records: &[NewAudit], rules: &InsertRules) {
    let outcomes = store.insert_with(records, rules).await.expect("insert");
    assert!(
        outcomes.iter().all(|o| *o == InsertOutcome::Created),
        "{outcomes:?}"
    );
}

pub async fn tampering_is_named_by_remediation_and_sequence(store: Arc<dyn Store>, sql: Sql) {
    let ring = ring(&[("k1", 7)]);
    let rules = rules(Some(&ring));
    for (i, name) in [
        "rr-clean",
        "rr-edit",
        "rr-record",
        "rr-delete",
        "rr-insert",
        "rr-swap",
    ]
    .iter()
    .enumerate()
    {
        let start = at(i64::try_from(i).expect("small") * 10);
        for e in events(name, start, 5, 0) {
            store_all(&store, &[e], &rules).await;
        }
    }
    let clean = verify(&store, &ring).await;
    assert_eq!(
        (clean.remediations, clean.verified, clean.breaks.len()),
        (6, 30, 0),
        "{:?}",
        clean.breaks
    );

    sql.run(
        "UPDATE remediation_audit_events SET overall_phase = 'failed' \
             WHERE remediation_name = 'rr-edit' AND chain_seq = 3",
    )
    .await;
    if sql.is_pg() {
        sql.run("UPDATE remediation_audit_events SET record = record || '{\"failure_reason\": \"forged\"}'::jsonb \
                 WHERE remediation_name = 'rr-record' AND chain_seq = 3")
            .await;
        sql.run("INSERT INTO remediation_audit_events \
                 (event_id, namespace, remediation_name, start_time, overall_phase, event_time, record) \
                 SELECT '00000000-0000-4000-8000-000000000001', namespace, remediation_name, start_time, \
                        overall_phase, event_time, record \
                 FROM remediation_audit_events WHERE remediation_name = 'rr-insert' AND chain_seq = 2")
            .await;
    } else {
        sql.run("UPDATE remediation_audit_events SET record = json_set(record, '$.failure_reason', 'forged') \
                 WHERE remediation_name = 'rr-record' AND chain_seq = 3")
            .await;
        sql.run("INSERT INTO remediation_audit_events \
                 (event_id, namespace, remediation_name, start_time, overall_phase, event_time, received_at, record) \
                 SELECT '00000000-0000-4000-8000-000000000001', namespace, remediation_name, start_time, \
                        overall_phase, event_time, received_at, record \
                 FROM remediation_audit_events WHERE remediation_name = 'rr-insert' AND chain_seq = 2")
            .await;
    }
    assert_eq!(
        sql.run("DELETE FROM remediation_audit_events WHERE remediation_name = 'rr-delete' AND chain_seq = 2")
            .await,
        1
    );
    assert_eq!(
        sql.run("UPDATE remediation_audit_events SET chain_seq = CASE chain_seq WHEN 2 THEN 4 ELSE 2 END \
                 WHERE remediation_name = 'rr-swap' AND chain_seq IN (2, 4)")
            .await,
        2
    );

    let page = verify(&store, &ring).await;
    assert_eq!(
        breaks(&page),
        [
            ("rr-delete".to_owned(), Some(2), Deleted),
            ("rr-edit".to_owned(), Some(3), Edited),
            ("rr-insert".to_owned(), None, Inserted),
            ("rr-record".to_owned(), Some(3), Edited),
            ("rr-swap".to_owned(), Some(2), Reordered),
            ("rr-swap".to_owned(), Some(4), Reordered),
        ],
        "{:#?}",
        page.breaks
    );
    for b in &page.breaks {
        let line = b.to_string();
        assert!(line.contains(&b.remediation.remediation_name), "{line}");
        assert!(line.contains(&b.kind.to_string()), "{line}");
    }

    // Deleting a remediation's last event, or its head, is named too.
    sql.run("DELETE FROM remediation_audit_events WHERE remediation_name = 'rr-clean' AND chain_seq = 5")
        .await;
    sql.run("DELETE FROM remediation_chain_heads WHERE remediation_name = 'rr-edit'")
        .await;
    let again = breaks(&verify(&store, &ring).await);
    assert!(
        again.contains(&("rr-clean".to_owned(), Some(5), Deleted)),
        "{again:?}"
    );
    assert!(
        again.contains(&("rr-edit".to_owned(), None, Deleted)),
        "{again:?}"
    );
}

pub async fn concurrent_shuffled_writers_leave_whole_chains(store: Arc<dyn Store>, _sql: Sql) {
    const REMEDIATIONS: i64 = 200;
    const EVENTS: i64 = 50;
    const WRITERS: usize = 8;
    let ring = ring(&[("k1", 7)]);
    let mut all: Vec<NewAudit> = (0..REMEDIATIONS)
        .flat_map(|r| events(&format!("rr-{r}"), at(r % 100), EVENTS, 0))
        .collect();
    all.shuffle(&mut rand::rngs::StdRng::seed_from_u64(13));
    let chunk = all.len().div_ceil(WRITERS);
    let mut writers = Vec::new();
    for part in all.chunks(chunk) {
        let (store, rules, part) = (store.clone(), rules(Some(&ring)), part.to_vec());
        writers.push(tokio::spawn(async move {
            for batch in part.chunks(50) {
                store.insert_with(batch, &rules).await.expect("insert");
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    let mut total = VerifyPage::default();
    let mut after = None;
    loop {
        let page = verify_page(&*store, &ring, at(-600), at(600), after.as_ref(), 64)
            .await
            .expect("verify");
        total.remediations += page.remediations;
        total.verified += page.verified;
        total.breaks.extend(page.breaks);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(total.breaks, []);
    assert_eq!((total.remediations, total.verified), (200, 10_000));
}

pub async fn rotated_and_unchained_events_verify(store: Arc<dyn Store>, sql: Sql) {
    let old = ring(&[("old", 1)]);
    let both = ring(&[("old", 1), ("new", 2)]);
    // Stored before chaining existed: no sequence at all.
    store_all(&store, &events("rr-rot", at(0), 2, 0), &rules(None)).await;
    sql.run("UPDATE remediation_audit_events SET chain_seq = NULL")
        .await;
    sql.run("DELETE FROM remediation_chain_heads").await;
    // Stored while the server ran without a key, then with the old key,
    // without a key again, and with the rotated ring.
    store_all(&store, &events("rr-rot", at(0), 1, 10), &rules(None)).await;
    store_all(&store, &events("rr-rot", at(0), 2, 20), &rules(Some(&old))).await;
    store_all(&store, &events("rr-rot", at(0), 1, 30), &rules(None)).await;
    store_all(&store, &events("rr-rot", at(0), 2, 40), &rules(Some(&both))).await;

    let page = verify(&store, &both).await;
    assert_eq!(page.breaks, []);
    assert_eq!((page.verified, page.unchained), (4, 4));

    let only_new = ring(&[("new", 2)]);
    let page = verify(&store, &only_new).await;
    assert_eq!(
        breaks(&page),
        [
            ("rr-rot".to_owned(), Some(2), BreakKind::Edited),
            ("rr-rot".to_owned(), Some(3), BreakKind::Edited)
        ],
        "{:#?}",
        page.breaks
    );
}

/// Generates each chain case on both backends.
macro_rules! chain_cases {
    ($($case:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let db = remaudit_testkit::PgDb::create().await;
                    let store = db.store().await;
                    let sql = super::Sql::Pg(db.pool().await);
                    super::$case(store, sql).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let db = remaudit_testkit::SqliteDb::create();
                    let store = db.store().await;
                    let pool = sqlx::SqlitePool::connect(&db.url()).await.expect("sqlite");
                    super::$case(store, super::Sql::Lite(pool)).await;
                }
            )*
        }
    };
}

chain_cases!(
    tampering_is_named_by_remediation_and_sequence,
    concurrent_shuffled_writers_leave_whole_chains,
    rotated_and_unchained_events_verify,
);
