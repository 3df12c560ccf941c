//! `remaudit serve` and `remaudit migrate` as an operator runs them.

use std::process::{Command, Stdio};

use crate::helpers::{Running, free_port, remaudit, wait_healthy};

#[tokio::test]
async fn serve_defaults_to_sqlite_in_the_working_directory_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut child = Running(
        remaudit()
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    wait_healthy(port).await;
    assert!(
        dir.path().join("remaudit.db").exists(),
        "SQLite file created on first run"
    );

    let http = reqwest::Client::new();
    let record = serde_json::json!({
        "alert_fingerprint": "fp", "remediation_name": "rr-cli", "overall_phase": "completed",
        "start_time": (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339(),
    });
    let stored = http
        .post(format!(
            "http://127.0.0.1:{port}/api/v1/audit/remediation-orchestration"
        ))
        .json(&record)
        .send()
        .await
        .expect("post");
    assert_eq!(stored.status(), 201);

    let pid = child.0.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.0.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(exit.success(), "clean exit on SIGTERM, got {exit:?}");
}

#[test]
fn migrate_applies_migrations_to_postgres_and_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/m.db", dir.path().display());
    let out = remaudit()
        .args(["migrate", "--database-url", &url])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "migrations applied (sqlite)"
    );

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let db = rt.block_on(remaudit_testkit::PgDb::create());
    let out = remaudit()
        .args(["migrate"])
        .env("REMAUDIT_DATABASE_URL", db.url())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "migrations applied (postgres)"
    );
    drop(db);
}

#[test]
fn unusable_database_urls_fail_with_a_clear_message() {
    let out = remaudit()
        .args(["migrate", "--database-url", "mysql://x@y/z"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unsupported database URL") && stderr.contains("postgres://"),
        "{stderr}"
    );

    // Nothing listens on port 1: the message names the address and what to do.
    let out = remaudit()
        .args([
            "migrate",
            "--database-url",
            "postgres://u@127.0.0.1:1/db",
            "--db-acquire-timeout-secs",
            "1",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("127.0.0.1:1") && stderr.contains("REMAUDIT_DATABASE_URL"),
        "{stderr}"
    );
}

#[test]
fn database_passwords_never_reach_the_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-dir/audit.db");
    for url in [
        "mysql://u:s3cr3t@y/z?password=s3cr3t".to_owned(),
        "postgress://u@y/z?PASSWORD=s3cr3t".to_owned(),
        "postgres://u:s3cr3t@127.0.0.1:99999/db".to_owned(),
        "postgres://u:s3cr3t@127.0.0.1:1/db?password=s3cr3t".to_owned(),
        "postgres://u@127.0.0.1:1/db?Password=s3cr3t".to_owned(),
        "postgres://u@127.0.0.1:1/db?sslpassword=s3cr3t".to_owned(),
        format!("sqlite://{}?password=s3cr3t", missing.display()),
    ] {
        let out = remaudit()
            .args([
                "migrate",
                "--database-url",
                &url,
                "--db-acquire-timeout-secs",
                "1",
            ])
            .env("RUST_LOG", "debug")
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(1), "{url}");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.contains("s3cr3t"), "{url}: {all}");
    }
}

#[test]
fn bad_flags_are_usage_errors() {
    let out = remaudit()
        .args(["serve", "--listen", "not-an-address"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
}

#[test]
fn controller_without_a_cluster_says_how_to_configure_one() {
    let home = tempfile::tempdir().expect("tempdir");
    let out = remaudit()
        .args(["controller", "--metrics-listen", "127.0.0.1:0"])
        .env("HOME", home.path())
        .env("KUBECONFIG", home.path().join("missing-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no Kubernetes configuration found") && stderr.contains("KUBECONFIG"),
        "{stderr}"
    );
}
