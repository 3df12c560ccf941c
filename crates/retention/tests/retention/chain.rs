//! Chains across the archive boundary: a batch's manifest carries its
//! remediations' chain heads and is signed, so that `verify` with the key
//! still names an event changed before archiving, a manifest edited after
//! it, an unsigned manifest and a key it does not know.

use std::sync::Arc;

use remaudit_model::chain::{ChainKey, KeyRing};
use remaudit_retention::{Archive, Settings};
use remaudit_store::Store;
use remaudit_testkit::history::load_with;
use remaudit_testkit::{PgDb, SqliteDb};

use crate::{Counter, chained, live_rows, now, ops, ring};

/// Every `manifest.json` under `dir`, sorted.
fn manifests(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                todo.push(path);
            } else if path.file_name().is_some_and(|n| n == "manifest.json") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Rewrites a manifest through `edit`, as someone with access to the
/// archive but not the key would.
fn edit_manifest(path: &std::path::Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).expect("read manifest")).expect("json");
    edit(&mut manifest);
    std::fs::write(path, serde_json::to_vec_pretty(&manifest).expect("json")).expect("write");
}

async fn problems(store: &Arc<dyn Store>, archive: &Archive, ring: &KeyRing) -> Vec<String> {
    let (first, last) = remaudit_retention::all_time();
    remaudit_retention::verify(store.as_ref(), archive, first, last, Some(ring))
        .await
        .expect("verify")
        .problems
}

async fn archived_chains_are_checked(store: Arc<dyn Store>, counter: Counter) {
    load_with(store.as_ref(), now(), &chained()).await;
    // An event of an old, due remediation is changed behind the service's
    // back before retention takes it.
    let victim = live_rows(store.as_ref())
        .await
        .into_iter()
        .find(|r| {
            r.overall_phase == "completed" && r.start_time < now() - chrono::TimeDelta::days(110)
        })
        .expect("an old completed remediation");
    let touched = counter
        .execute(&format!(
            "UPDATE remediation_audit_events SET overall_phase = 'failed' \
             WHERE namespace = '{}' AND remediation_name = '{}' AND chain_seq = 1",
            victim.namespace, victim.remediation_name
        ))
        .await;
    assert_eq!(touched, 1);

    let dir = tempfile::tempdir().expect("dir");
    let archive = Archive::open(&format!("file://{}", dir.path().display()))
        .expect("archive")
        .with_chain_keys(Some(ring()));
    let settings = Settings {
        batch_rows: 40,
        ..Settings::default()
    };
    let report =
        remaudit_retention::run_once(store.as_ref(), &archive, &settings, now(), false, &ops())
            .await
            .expect("run");
    assert!(report.batches.len() >= 2, "{:?}", report.batches);
    assert_eq!(counter.misplaced_heads().await.0, 0);

    // The edit made before archiving is found in the archive, by
    // remediation and sequence, and nothing else is.
    let found = problems(&store, &archive, &ring()).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains(&format!("{}/{}", victim.namespace, victim.remediation_name))
            && found[0].contains("seq 1: edited"),
        "{found:?}"
    );

    // A key the verifier does not hold: every signature and link is unknown.
    let stranger = KeyRing::single(ChainKey::new("stranger", [9; 32]).expect("key"));
    let found = problems(&store, &archive, &stranger).await;
    assert!(
        found
            .iter()
            .any(|p| p
                .contains("signed with key \"retention-test\", which the key file does not hold")),
        "{found:?}"
    );

    // A manifest edited after the fact (one head rewound, as someone hiding
    // a deleted last event would) and one stripped of its signature.
    let files = manifests(dir.path());
    assert!(files.len() >= 2);
    edit_manifest(&files[0], |m| {
        let seq = m["chain_heads"][0]["last_seq"].as_i64().expect("a head");
        m["chain_heads"][0]["last_seq"] = (seq - 1).into();
    });
    edit_manifest(&files[1], |m| {
        m.as_object_mut().expect("object").remove("signature");
    });
    let found = problems(&store, &archive, &ring()).await;
    let batch_of = |path: &std::path::Path| -> i64 {
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path).expect("read")).expect("json");
        m["batch"].as_i64().expect("batch")
    };
    let (edited, stripped) = (batch_of(&files[0]), batch_of(&files[1]));
    for expected in [
        format!("batch {edited}: the manifest's signature does not match its content"),
        format!("batch {stripped}: the manifest is not signed"),
        format!("batch {edited}: the manifest's SHA-256 differs from the one recorded"),
    ] {
        assert!(
            found.iter().any(|p| p.starts_with(&expected)),
            "{expected:?} not in {found:?}"
        );
    }
}

#[tokio::test]
async fn sqlite_archived_chains_and_signed_manifests_are_verified() {
    let db = SqliteDb::create();
    let store = db.store().await;
    let pool = sqlx::SqlitePool::connect(&db.url()).await.expect("pool");
    archived_chains_are_checked(store, Counter::Sqlite(pool)).await;
}

#[tokio::test]
async fn postgres_archived_chains_and_signed_manifests_are_verified() {
    let db = PgDb::create().await;
    archived_chains_are_checked(db.store().await, Counter::Pg(db.pool().await)).await;
}
