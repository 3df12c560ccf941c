//! `remaudit serve`'s authentication and `remaudit token`, as an operator
//! runs them: the refusal to run open beyond loopback, tokens made by the
//! CLI and honoured by the service, anonymous writes, and revocation.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use remaudit_testkit::wait_for;

use crate::helpers::{Running, create_token, free_port, remaudit, wait_healthy};

const LIST: &str = "/api/v1/audit/remediation-orchestration";

/// `remaudit serve` on SQLite in `dir`, on `listen`, with `extra` flags; its
/// log goes to `dir/serve.log`.
fn serve(dir: &Path, listen: &str, extra: &[&str]) -> Running {
    let log = std::fs::File::create(dir.join("serve.log")).expect("log");
    Running(
        remaudit()
            .args([
                "serve",
                "--listen",
                listen,
                "--retention-interval-secs",
                "0",
            ])
            .arg("--database-url")
            .arg(format!("sqlite://{}/audit.db", dir.display()))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn"),
    )
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
}

fn assert_logged(dir: &Path, needle: &str) {
    let log = log_of(dir);
    assert!(log.contains(needle), "{needle:?} not in the log:\n{log}");
}

async fn wait_for_log(dir: &Path, needle: &str) {
    let dir = dir.to_path_buf();
    wait_for(
        &format!("{needle:?} in the service's log"),
        Duration::from_secs(20),
        || {
            let dir = dir.clone();
            async move { log_of(&dir).contains(needle).then_some(()) }
        },
    )
    .await;
}

fn record(name: &str) -> serde_json::Value {
    serde_json::json!({
        "alert_fingerprint": "fp", "remediation_name": name, "overall_phase": "processing",
        "start_time": (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339(),
    })
}

async fn status_of(request: reqwest::RequestBuilder) -> u16 {
    request.send().await.expect("send").status().as_u16()
}

#[test]
fn serve_refuses_a_non_loopback_address_without_authentication() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = remaudit()
        .args(["serve", "--listen", &format!("0.0.0.0:{}", free_port())])
        .arg("--database-url")
        .arg(format!("sqlite://{}/audit.db", dir.path().display()))
        .output()
        .expect("run");
    assert!(!out.status.success(), "it must not run open on 0.0.0.0");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to listen on 0.0.0.0")
            && err.contains("--auth-tokens-file")
            && err.contains("--insecure-no-auth"),
        "{err}"
    );
}

#[test]
fn contradictory_auth_flags_are_refused_before_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens.toml");
    create_token(&tokens, "ops", "admin");
    let run = |args: &[&str]| {
        let out = remaudit()
            .args(["serve", "--listen", "127.0.0.1:1"])
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("run");
        assert!(!out.status.success(), "{args:?} must be refused");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let tokens = tokens.to_str().expect("utf-8 path");
    let both = run(&["--insecure-no-auth", "--auth-tokens-file", tokens]);
    assert!(both.contains("choose one"), "{both}");
    let reader = run(&["--anonymous-role", "reader"]);
    assert!(reader.contains("only be given the writer role"), "{reader}");
    let missing = run(&["--auth-tokens-file", "/nonexistent/tokens.toml"]);
    assert!(
        missing.contains("/nonexistent/tokens.toml") && missing.contains("remaudit token create"),
        "{missing}"
    );
}

#[tokio::test]
async fn insecure_no_auth_runs_open_and_warns_at_start_and_on_admin_calls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _child = serve(
        dir.path(),
        &format!("0.0.0.0:{port}"),
        &["--insecure-no-auth"],
    );
    wait_healthy(port).await;
    assert_logged(dir.path(), "authentication is OFF");
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    assert_eq!(
        status_of(http.post(format!("{base}{LIST}")).json(&record("rr-open"))).await,
        201
    );
    assert_eq!(status_of(http.get(format!("{base}{LIST}"))).await, 200);
    let hold = status_of(http.put(format!("{base}{LIST}/1/legal-hold?reason=inquiry"))).await;
    assert!(hold < 500, "hold answered {hold}");
    wait_for_log(dir.path(), "admin call without authentication").await;
}

#[tokio::test]
async fn tokens_from_the_cli_are_honoured_by_role_and_revocation_takes_effect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens.toml");
    let writer = create_token(&tokens, "orchestrator", "writer");
    let reader = create_token(&tokens, "sre", "reader");
    let port = free_port();
    let _child = serve(
        dir.path(),
        &format!("127.0.0.1:{port}"),
        &["--auth-tokens-file", tokens.to_str().expect("utf-8")],
    );
    wait_healthy(port).await;
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}{LIST}");

    assert_eq!(status_of(http.get(&url)).await, 401, "no token");
    assert_eq!(
        status_of(http.get(&url).bearer_auth("rmt_made-up")).await,
        401,
        "unknown token"
    );
    assert_eq!(
        status_of(http.post(&url).bearer_auth(&reader).json(&record("rr-1"))).await,
        403,
        "a reader may not write"
    );
    assert_eq!(
        status_of(http.post(&url).bearer_auth(&writer).json(&record("rr-1"))).await,
        201
    );
    assert_eq!(
        status_of(http.get(&url).bearer_auth(&writer)).await,
        403,
        "a writer may not read"
    );
    assert_eq!(status_of(http.get(&url).bearer_auth(&reader)).await, 200);

    // The list names both; the file holds hashes, never a token.
    let out = remaudit()
        .args(["token", "list", "--tokens-file"])
        .arg(&tokens)
        .output()
        .expect("run");
    assert!(out.status.success());
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("orchestrator") && listed.contains("sre"),
        "{listed}"
    );
    let stored = std::fs::read_to_string(&tokens).expect("read");
    assert!(!stored.contains(&writer) && !stored.contains(&reader));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&tokens)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "a new tokens file is the owner's alone"
        );
    }

    let out = remaudit()
        .args(["token", "revoke", "--subject", "sre", "--tokens-file"])
        .arg(&tokens)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let http2 = http.clone();
    wait_for(
        "the revoked token to be refused",
        Duration::from_secs(20),
        || {
            let (http, url, reader) = (http2.clone(), url.clone(), reader.clone());
            async move { (status_of(http.get(&url).bearer_auth(&reader)).await == 401).then_some(()) }
        },
    )
    .await;
    assert_eq!(
        status_of(http.post(&url).bearer_auth(&writer).json(&record("rr-2"))).await,
        201,
        "other tokens stay valid"
    );
    let again = remaudit()
        .args(["token", "revoke", "--subject", "sre", "--tokens-file"])
        .arg(&tokens)
        .output()
        .expect("run");
    assert!(!again.status.success(), "revoking nothing is an error");
    assert!(String::from_utf8_lossy(&again.stderr).contains("no token matches"));
}

#[tokio::test]
async fn anonymous_writer_may_append_and_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens: PathBuf = dir.path().join("tokens.toml");
    let admin = create_token(&tokens, "ops", "admin");
    let port = free_port();
    let _child = serve(
        dir.path(),
        &format!("0.0.0.0:{port}"),
        &[
            "--anonymous-role",
            "writer",
            "--auth-tokens-file",
            tokens.to_str().expect("utf-8"),
        ],
    );
    wait_healthy(port).await;
    assert_logged(dir.path(), "anonymous writes are on");
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}{LIST}");
    assert_eq!(
        status_of(http.post(&url).json(&record("rr-anon"))).await,
        201,
        "the design's own client sends no credential"
    );
    assert_eq!(status_of(http.get(&url)).await, 401, "reads need a token");
    assert_eq!(
        status_of(http.delete(format!("{url}/1?reason=cleanup"))).await,
        401,
        "admin needs a token"
    );
    assert_eq!(status_of(http.get(&url).bearer_auth(&admin)).await, 200);
}

#[test]
fn token_create_refuses_a_bad_subject_and_a_damaged_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens.toml");
    let out = remaudit()
        .args([
            "token",
            "create",
            "--subject",
            "bad\"name",
            "--role",
            "reader",
            "--tokens-file",
        ])
        .arg(&tokens)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--subject"));
    assert!(
        out.stdout.is_empty(),
        "no token is printed when none was added"
    );
    assert!(!tokens.exists());

    std::fs::write(&tokens, "[[token]]\nsha256 = \"nothex\"\n").expect("write");
    let out = remaudit()
        .args([
            "token",
            "create",
            "--subject",
            "ok",
            "--role",
            "reader",
            "--tokens-file",
        ])
        .arg(&tokens)
        .output()
        .expect("run");
    assert!(!out.status.success(), "a damaged file is not rewritten");
    assert!(out.stdout.is_empty());
    assert_eq!(
        std::fs::read_to_string(&tokens).expect("read"),
        "[[token]]\nsha256 = \"nothex\"\n"
    );
}

/// Eight `token create` and eight `chain-key create` processes at once on
/// one file each: the lock file serialises them, so every token and every
/// key they printed is in its file, and both files still parse.
#[test]
fn concurrent_creates_on_one_file_lose_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens.toml");
    let keys = dir.path().join("chain.keys");
    let spawn = |args: Vec<String>| {
        remaudit()
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let children: Vec<_> = (0..8)
        .flat_map(|i| {
            [
                spawn(vec![
                    "token".into(),
                    "create".into(),
                    "--subject".into(),
                    format!("writer-{i}"),
                    "--role".into(),
                    "writer".into(),
                    "--tokens-file".into(),
                    tokens.display().to_string(),
                ]),
                spawn(vec![
                    "chain-key".into(),
                    "create".into(),
                    "--out".into(),
                    keys.display().to_string(),
                ]),
            ]
        })
        .collect();
    let mut printed = Vec::new();
    for child in children {
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        printed.push(
            String::from_utf8(out.stdout)
                .expect("utf-8")
                .trim()
                .to_owned(),
        );
    }
    let token_hashes: Vec<String> = remaudit_server::auth::tokens::read(&tokens)
        .expect("the tokens file parses")
        .into_iter()
        .map(|t| t.sha256)
        .collect();
    let ring =
        remaudit_model::chain::KeyRing::parse(&std::fs::read_to_string(&keys).expect("keys"))
            .expect("the key file parses");
    let key_ids: Vec<&str> = ring.ids().collect();
    assert_eq!((token_hashes.len(), key_ids.len()), (8, 8));
    for line in &printed {
        if line.starts_with("rmt_") {
            let hash = remaudit_server::auth::tokens::hash_token(line);
            assert!(token_hashes.contains(&hash), "token {line} was lost");
        } else {
            assert!(key_ids.contains(&line.as_str()), "key {line} was lost");
        }
    }
}
