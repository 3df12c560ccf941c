//! `remaudit serve` with TLS and mutual TLS as an operator turns them on
//! (flags, environment, the `[tls]` table), and refused with the file or
//! flag named when the settings are wrong.

use std::process::{Command, Stdio};

use remaudit_testkit::pki::{TestCa, https_client};

use crate::helpers::{Running, free_port, remaudit, wait_answering};

/// Waits until `client` gets 200 from `/healthz` over HTTPS on `port`.
async fn wait_https(client: &reqwest::Client, port: u16) {
    wait_answering(client, &format!("https://127.0.0.1:{port}/healthz")).await;
}

fn stop(child: Running) {
    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let mut child = child;
    let exit = child.0.wait().expect("wait");
    assert!(exit.success(), "clean exit on SIGTERM, got {exit:?}");
}

#[tokio::test]
async fn serve_with_a_certificate_and_key_serves_https() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("remaudit test CA");
    let (cert, key) = ca.server(1).write(dir.path(), "tls");
    let port = free_port();
    let child = Running(
        remaudit()
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    let client = https_client(&ca, None);
    wait_https(&client, port).await;
    let record = serde_json::json!({
        "alert_fingerprint": "fp", "remediation_name": "rr-https", "overall_phase": "completed",
        "start_time": (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339(),
    });
    let stored = client
        .post(format!(
            "https://127.0.0.1:{port}/api/v1/audit/remediation-orchestration"
        ))
        .json(&record)
        .send()
        .await
        .expect("post over HTTPS");
    assert_eq!(stored.status(), 201);
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    stop(child);
}

#[tokio::test]
async fn mutual_tls_from_the_environment_refuses_clients_without_a_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("remaudit test CA");
    let (cert, key) = ca.server(1).write(dir.path(), "tls");
    let client_ca = dir.path().join("clients.crt");
    std::fs::write(&client_ca, ca.pem()).expect("write");
    let port = free_port();
    let child = Running(
        remaudit()
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("REMAUDIT_TLS_CERT", &cert)
            .env("REMAUDIT_TLS_KEY", &key)
            .env("REMAUDIT_TLS_CLIENT_CA", &client_ca)
            .env(
                "REMAUDIT_TLS_CLIENT_ROLES",
                "CN=orchestrator,O=kubernaut=writer;CN=dashboard,O=kubernaut=reader",
            )
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    let with_certificate = https_client(&ca, Some(&ca.client("orchestrator", "kubernaut")));
    wait_https(&with_certificate, port).await;
    let refused = https_client(&ca, None)
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "served without a certificate: {refused:?}"
    );
    stop(child);
}

#[test]
fn bad_tls_settings_stop_serve_naming_the_file_or_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("remaudit test CA");
    let (cert, _) = ca.server(1).write(dir.path(), "tls");
    let (_, other_key) = ca.server(2).write(dir.path(), "other");
    let missing = dir.path().join("missing.key");
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let run = |args: &[&std::ffi::OsStr]| {
        let out = remaudit()
            .args(["serve", "--listen", &listen])
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&[
        "--tls-cert".as_ref(),
        cert.as_os_str(),
        "--tls-key".as_ref(),
        missing.as_os_str(),
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("cannot serve TLS")
            && err.contains(&format!(
                "cannot read the TLS key file {}",
                missing.display()
            )),
        "{err}"
    );
    let (code, err) = run(&[
        "--tls-cert".as_ref(),
        cert.as_os_str(),
        "--tls-key".as_ref(),
        other_key.as_os_str(),
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "the TLS key file {} does not match the certificate in {}",
            other_key.display(),
            cert.display()
        )),
        "{err}"
    );
    let (code, err) = run(&["--tls-cert".as_ref(), cert.as_os_str()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("a certificate without a key") && err.contains("--tls-key"),
        "{err}"
    );
    // A malformed flag is a usage error.
    let (code, err) = run(&["--tls-client-role".as_ref(), "orchestrator=writer".as_ref()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--tls-client-role") && err.contains("RFC 4514"),
        "{err}"
    );
}

#[test]
fn config_print_shows_the_tls_table_layered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("remaudit.toml");
    std::fs::write(
        &file,
        r#"
[tls]
cert = "/etc/remaudit/tls.crt"
key = "/etc/remaudit/tls.key"
client_ca = "/etc/remaudit/clients.crt"
handshake_timeout_secs = 4

[tls.client_roles]
"CN=orchestrator,O=kubernaut" = "writer"
"#,
    )
    .expect("write");
    let out = remaudit()
        .arg("--config")
        .arg(&file)
        .args([
            "config",
            "print",
            "serve",
            "--tls-reload-interval-secs",
            "30",
        ])
        .env_remove("REMAUDIT_LOG_FORMAT")
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, tail) = stdout
        .split_once("[tls]\n")
        .unwrap_or_else(|| panic!("no [tls] table: {stdout}"));
    // The tables after [tls] (the chain's) are not this test's business.
    let tail = tail.split_once("\n[chain]").map_or(tail, |(tls, _)| tls);
    assert_eq!(
        tail,
        r#"cert = "/etc/remaudit/tls.crt"
key = "/etc/remaudit/tls.key"
client_ca = "/etc/remaudit/clients.crt"
client_cert_optional = false
reload_interval_secs = 30
handshake_timeout_secs = 4

[tls.client_roles]
"CN=orchestrator,O=kubernaut" = "writer"
"#
    );
}
