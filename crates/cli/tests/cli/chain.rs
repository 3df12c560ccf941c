//! `remaudit chain-key create`, `serve --chain-key-file` and `remaudit
//! verify` as an operator runs them: a key file made by the CLI signs what
//! the service stores, `verify` exits 0 on a whole database, 1 naming a link
//! changed behind the service's back, and 2 when it cannot run.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::helpers::{Running, free_port, remaudit, wait_healthy};

const LIST: &str = "/api/v1/audit/remediation-orchestration";

/// `remaudit chain-key create --out file`; the key id it printed.
fn create_key(file: &Path) -> String {
    let out = remaudit()
        .args(["chain-key", "create", "--out"])
        .arg(file)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// `remaudit verify` of the SQLite database in `dir`: exit code, stdout.
fn verify(dir: &Path, key_file: &Path, extra: &[&str]) -> (i32, String, String) {
    let out = remaudit()
        .arg("verify")
        .arg("--database-url")
        .arg(format!("sqlite://{}/audit.db", dir.display()))
        .arg("--chain-key-file")
        .arg(key_file)
        .args(extra)
        .output()
        .expect("run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn chain_key_create_writes_a_private_file_and_rotates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("chain.keys");
    let first = create_key(&file);
    let second = create_key(&file);
    assert_ne!(first, second);
    let text = std::fs::read_to_string(&file).expect("key file");
    let ids: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        ids,
        [first.as_str(), second.as_str()],
        "the newest last: it signs"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The printed id is all that is printed: never a secret.
    assert!(!first.contains(' ') && first.len() < 40, "{first}");

    std::fs::write(&file, "garbage\n").expect("damage");
    let out = remaudit()
        .args(["chain-key", "create", "--out"])
        .arg(&file)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing was changed"));
    assert_eq!(std::fs::read_to_string(&file).expect("kept"), "garbage\n");
}

/// `remaudit serve` on the SQLite database in `dir`, chained with `keys`,
/// no retention, with `extra` flags, its log in `dir/serve.log`; once
/// healthy, the process and its address.
async fn chained_service(dir: &Path, keys: &Path, extra: &[&str]) -> (Running, String) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let log = std::fs::File::create(dir.join("serve.log")).expect("log");
    let service = Running(
        remaudit()
            .args([
                "serve",
                "--listen",
                &listen,
                "--retention-interval-secs",
                "0",
            ])
            .args(extra)
            .arg("--database-url")
            .arg(format!("sqlite://{}/audit.db", dir.display()))
            .arg("--chain-key-file")
            .arg(keys)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn"),
    );
    wait_healthy(port).await;
    (service, listen)
}

#[tokio::test]
async fn a_chained_service_verifies_and_tampering_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("chain.keys");
    create_key(&keys);
    let (service, listen) = chained_service(dir.path(), &keys, &[]).await;
    let http = reqwest::Client::new();
    let ready: serde_json::Value = http
        .get(format!("http://{listen}/readyz"))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    assert_eq!(ready["chain"], "on");
    for i in 0..3 {
        let status = http
            .post(format!("http://{listen}{LIST}"))
            .json(&crate::helpers::record("chain", i))
            .send()
            .await
            .expect("post")
            .status();
        assert_eq!(status, 201);
    }
    drop(service);

    let (code, out, err) = verify(dir.path(), &keys, &[]);
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    assert!(err.contains("3 event(s) verified"), "{err}");

    edit_phase(dir.path(), "chain-rr-000001").await;
    let (code, out, _) = verify(dir.path(), &keys, &[]);
    assert_eq!(code, 1);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert!(
        lines[0].contains("chain-rr-000001") && lines[0].contains("seq 1: edited"),
        "{out}"
    );
    // Outside the range asked for, nothing is checked.
    let (code, _, err) = verify(dir.path(), &keys, &["--until", "2000-01-01T00:00:00Z"]);
    assert_eq!(code, 0, "{err}");

    // Retention takes the remediations, their chain heads with them, under
    // a signed manifest; the edit made before is still named from the archive.
    let later = (chrono::Utc::now() + chrono::TimeDelta::days(100)).to_rfc3339();
    let out = retention(dir.path(), &["run", "--now", &later], Some(&keys));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}/audit.db", dir.path().display()))
        .await
        .expect("sqlite");
    let heads: i64 = sqlx::query_scalar("SELECT count(*) FROM remediation_chain_heads")
        .fetch_one(&pool)
        .await
        .expect("count");
    pool.close().await;
    assert_eq!(heads, 0, "archived remediations keep no chain head");
    let (code, out, err) = verify(dir.path(), &keys, &[]);
    assert_eq!((code, out.as_str()), (0, ""), "nothing live is left: {err}");

    let out = retention(dir.path(), &["verify"], Some(&keys));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let problems: Vec<&str> = text.lines().filter(|l| l.starts_with("PROBLEM")).collect();
    assert_eq!(problems.len(), 1, "{text}");
    assert!(
        problems[0].contains("chain-rr-000001") && problems[0].contains("seq 1: edited"),
        "{text}"
    );
    // Without the key, the files still match their checksums, and the
    // command says what it did not check.
    let out = retention(dir.path(), &["verify"], None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("signatures and chains not checked"), "{text}");
}

/// `remaudit retention ARGS` on the SQLite database in `dir`, its archive
/// the default beside it, with the key file when given.
fn retention(dir: &Path, args: &[&str], keys: Option<&Path>) -> std::process::Output {
    let mut cmd = remaudit();
    cmd.arg("retention")
        .args(args)
        .arg("--database-url")
        .arg(format!("sqlite://{}/audit.db", dir.display()))
        .env_remove("REMAUDIT_ARCHIVE_URL")
        .env_remove("REMAUDIT_CHAIN_KEY_FILE");
    if let Some(keys) = keys {
        cmd.arg("--chain-key-file").arg(keys);
    }
    cmd.output().expect("run remaudit retention")
}

#[test]
fn verify_exits_2_when_it_cannot_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("chain.keys");
    let (code, _, err) = verify(dir.path(), &keys, &[]);
    assert_eq!(code, 2);
    assert!(err.contains("chain-key create"), "{err}");
    create_key(&keys);
    let (code, _, err) = verify(dir.path(), &keys, &["--since", "yesterday"]);
    assert_eq!(code, 2, "{err}");
    let out = remaudit()
        .args(["verify", "--database-url", "nosuch://x", "--chain-key-file"])
        .arg(&keys)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}

/// The value of `remaudit_chain_breaks_found_total{kind="edited"}` that
/// `/metrics` at `listen` shows, if any.
async fn edited_breaks(http: &reqwest::Client, listen: &str) -> Option<f64> {
    let text = crate::helpers::metrics_text(http, &format!("http://{listen}")).await?;
    text.lines()
        .find(|l| l.starts_with("remaudit_chain_breaks_found_total{kind=\"edited\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn the_service_checks_recent_chains_itself_and_counts_what_breaks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("chain.keys");
    create_key(&keys);
    let (_service, listen) =
        chained_service(dir.path(), &keys, &["--chain-verify-interval-secs", "1"]).await;
    let http = reqwest::Client::new();
    for i in 0..2 {
        let status = http
            .post(format!("http://{listen}{LIST}"))
            .json(&crate::helpers::record("check", i))
            .send()
            .await
            .expect("post")
            .status();
        assert_eq!(status, 201);
    }
    // Whole chains: passes run and find nothing.
    let log_path = dir.path().join("serve.log");
    let passes = || {
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .matches("periodic chain check finished")
            .count()
    };
    let before = passes();
    remaudit_testkit::wait_for(
        "two more chain check passes",
        Duration::from_secs(20),
        || {
            let n = passes();
            async move { (n >= before + 2).then_some(()) }
        },
    )
    .await;
    assert_eq!(edited_breaks(&http, &listen).await, Some(0.0));

    edit_phase(dir.path(), "check-rr-000001").await;
    let found = remaudit_testkit::wait_for(
        "the edit counted by the service's own check",
        Duration::from_secs(20),
        || {
            let http = http.clone();
            let listen = listen.clone();
            async move { edited_breaks(&http, &listen).await.filter(|&n| n >= 1.0) }
        },
    )
    .await;
    assert!(found >= 1.0);
    let logged = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        logged.contains("periodic chain check found a broken link")
            && logged.contains("check-rr-000001"),
        "{logged}"
    );
}

/// Edits the stored events of remediation `name` in the SQLite database
/// `audit.db` under `dir` behind the service's back, as a tamperer would.
async fn edit_phase(dir: &std::path::Path, name: &str) {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}/audit.db", dir.display()))
        .await
        .expect("sqlite");
    sqlx::query(
        "UPDATE remediation_audit_events SET overall_phase = 'failed' WHERE remediation_name = $1",
    )
    .bind(name)
    .execute(&pool)
    .await
    .expect("tamper");
    pool.close().await;
}
