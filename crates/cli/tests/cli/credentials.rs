//! `remaudit publish` and `remaudit query` with `--token-file` /
//! `REMAUDIT_TOKEN_FILE` against the service with a tokens file enforced,
//! and the clear failures of a missing file or a refused token.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;

use chrono::Utc;
use remaudit_server::auth::tokens::{TokenRecord, hash_token, render};
use remaudit_server::auth::{AuthPolicy, Authenticator, Role, TokensFile};
use remaudit_server::{AppState, ServerSettings};
use remaudit_testkit::SqliteDb;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::helpers::{metrics, output_with_stdin, remaudit};

const WRITER: &str = "rmt_cli-writer-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const READER: &str = "rmt_cli-reader-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const FINGERPRINT: &str = "fp-cli-credentials";

/// The service on SQLite with a tokens file of one writer and one reader,
/// and a file holding each token.
struct Secured {
    url: String,
    writer: PathBuf,
    reader: PathBuf,
    dir: tempfile::TempDir,
    shutdown: CancellationToken,
    _db: SqliteDb,
}

impl Secured {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let tokens = [
            (WRITER, "orchestrator", Role::Writer),
            (READER, "dashboard", Role::Reader),
        ]
        .map(|(token, subject, role)| TokenRecord {
            sha256: hash_token(token),
            subject: subject.to_owned(),
            role,
            created: Utc::now(),
            expires: None,
        });
        let tokens_path = dir.path().join("tokens.toml");
        std::fs::write(&tokens_path, render(&tokens)).expect("tokens file");
        let policy = AuthPolicy::Enforced {
            authenticators: vec![
                TokensFile::load(&tokens_path).expect("tokens") as Arc<dyn Authenticator>
            ],
            anonymous_role: None,
            metrics_require_reader: false,
        };
        let db = SqliteDb::create();
        let state =
            AppState::new(db.store().await, ServerSettings::default(), metrics()).with_auth(policy);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let shutdown = CancellationToken::new();
        tokio::spawn(remaudit_server::serve(listener, state, shutdown.clone()));
        let writer = token_file(dir.path(), "writer-token", WRITER);
        let reader = token_file(dir.path(), "reader-token", READER);
        Self {
            url,
            writer,
            reader,
            dir,
            shutdown,
            _db: db,
        }
    }
}

impl Drop for Secured {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn token_file(dir: &Path, name: &str, token: &str) -> PathBuf {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).expect("create");
    writeln!(f, "{token}").expect("write");
    path
}

fn lines(names: &[&str]) -> String {
    let start = (Utc::now() - chrono::Duration::minutes(5)).to_rfc3339();
    names
        .iter()
        .map(|name| {
            json!({
                "alert_fingerprint": FINGERPRINT, "remediation_name": name,
                "overall_phase": "completed", "start_time": start,
            })
            .to_string()
                + "\n"
        })
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The remediation names of a `query postmortem --output json` answer.
fn names(out: &Output) -> Vec<String> {
    assert!(out.status.success(), "{}", stderr(out));
    let answer: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let mut names: Vec<String> = answer["items"]
        .as_array()
        .unwrap_or_else(|| panic!("items in {answer}"))
        .iter()
        .map(|r| r["remediation_name"].as_str().expect("name").to_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn publish_and_query_send_the_token_in_their_token_file() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let service = rt.block_on(Secured::start());
    let out = output_with_stdin(
        remaudit()
            .args(["publish", "--url", &service.url, "--deadline", "60"])
            .arg("--token-file")
            .arg(&service.writer)
            .stderr(Stdio::piped()),
        &lines(&["rr-cli-1", "rr-cli-2"]),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("acknowledged 2 (created 2"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // From the environment, and as a flag after the query's name.
    let from_env = remaudit()
        .args(["query", "--url", &service.url, "--output", "json"])
        .args(["postmortem", FINGERPRINT])
        .env("REMAUDIT_TOKEN_FILE", &service.reader)
        .output()
        .expect("run");
    assert_eq!(names(&from_env), ["rr-cli-1", "rr-cli-2"]);
    let from_flag = remaudit()
        .args(["query", "postmortem", FINGERPRINT, "--output", "json"])
        .args(["--url", &service.url, "--token-file"])
        .arg(&service.reader)
        .output()
        .expect("run");
    assert_eq!(names(&from_flag), ["rr-cli-1", "rr-cli-2"]);
}

#[test]
fn a_refused_caller_is_told_what_to_give() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let service = rt.block_on(Secured::start());
    let none = remaudit()
        .args(["query", "--url", &service.url, "postmortem", FINGERPRINT])
        .output()
        .expect("run");
    assert_eq!(none.status.code(), Some(1));
    let text = stderr(&none);
    assert!(
        text.contains("needs a token") && text.contains("--token-file"),
        "{text}"
    );

    let writer = remaudit()
        .args(["query", "--url", &service.url, "postmortem", FINGERPRINT])
        .arg("--token-file")
        .arg(&service.writer)
        .output()
        .expect("run");
    assert_eq!(writer.status.code(), Some(1));
    let text = stderr(&writer);
    assert!(text.contains("reader role"), "{text}");
    assert!(!text.contains(WRITER), "the token is never printed: {text}");

    let unknown = token_file(
        service.dir.path(),
        "unknown",
        "rmt_not-a-token-of-this-service",
    );
    let out = remaudit()
        .args(["query", "--url", &service.url, "postmortem", FINGERPRINT])
        .arg("--token-file")
        .arg(&unknown)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(
        text.contains("does not accept the token in") && text.contains("unknown"),
        "{text}"
    );
    assert!(!text.contains("rmt_not-a-token"), "{text}");
}

#[test]
fn a_missing_token_file_is_a_clear_error_before_anything_is_sent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-token");
    let query = remaudit()
        .args(["query", "--url", "http://127.0.0.1:9", "success-rate"])
        .arg("--token-file")
        .arg(&missing)
        .output()
        .expect("run");
    assert_eq!(query.status.code(), Some(1));
    let text = stderr(&query);
    assert!(
        text.contains("cannot read the token file") && text.contains("no-such-token"),
        "{text}"
    );

    let publish = output_with_stdin(
        remaudit()
            .args(["publish", "--url", "http://127.0.0.1:9"])
            .env("REMAUDIT_TOKEN_FILE", &missing)
            .stderr(Stdio::piped()),
        &lines(&["never-sent"]),
    );
    assert_eq!(publish.status.code(), Some(1));
    let text = stderr(&publish);
    assert!(
        text.contains("cannot read the token file") && text.contains("no-such-token"),
        "{text}"
    );
}

#[test]
fn config_print_shows_the_credential_files_from_the_file_and_the_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("remaudit.toml");
    std::fs::write(
        &file,
        "[publisher.credentials]\ntoken_file = \"/file/token\"\nca_file = \"/file/ca.pem\"\n",
    )
    .expect("write");
    let out = remaudit()
        .arg("--config")
        .arg(&file)
        .args(["config", "print", "publish", "--token-file", "/flag/token"])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    let printed: toml::Table = toml::from_str(&String::from_utf8_lossy(&out.stdout)).expect("TOML");
    let credentials = &printed["publisher"]["credentials"];
    assert_eq!(credentials["token_file"].as_str(), Some("/flag/token"));
    assert_eq!(credentials["ca_file"].as_str(), Some("/file/ca.pem"));

    let out = remaudit()
        .args(["config", "print", "controller", "--no-token"])
        .arg("--config")
        .arg(&file)
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    let printed: toml::Table = toml::from_str(&String::from_utf8_lossy(&out.stdout)).expect("TOML");
    let credentials = &printed["publisher"]["credentials"];
    assert_eq!(credentials.get("token_file"), None);
    assert_eq!(credentials["no_token"].as_bool(), Some(true));
}
