//! Settings as an operator layers them: defaults, a TOML file, the
//! environment, flags; `remaudit config print` shows the result.

use std::path::Path;

use crate::helpers::remaudit;

/// Writes `text` as a settings file in `dir`.
fn settings_file(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("remaudit.toml");
    std::fs::write(&path, text).expect("write settings");
    path
}

/// `remaudit config print ARGS...` with `env`; its standard output and error, and whether it succeeded.
fn print(args: &[&str], env: &[(&str, &str)]) -> (String, String, bool) {
    let mut cmd = remaudit();
    cmd.args(["config", "print"]).args(args);
    for var in [
        "REMAUDIT_MAX_BODY_BYTES",
        "REMAUDIT_MAX_BATCH_RECORDS",
        "REMAUDIT_REQUEST_TIMEOUT_SECS",
        "REMAUDIT_RETENTION_DAYS",
        "REMAUDIT_PUBLISHER_LINGER_MS",
        "REMAUDIT_LOG_FORMAT",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run");
    (
        String::from_utf8(out.stdout).expect("utf-8"),
        String::from_utf8(out.stderr).expect("utf-8"),
        out.status.success(),
    )
}

fn value(settings: &toml::Table, path: &str) -> toml::Value {
    let mut at = toml::Value::Table(settings.clone());
    for key in path.split('.') {
        at = at
            .get(key)
            .unwrap_or_else(|| panic!("no {path} in {settings}"))
            .clone();
    }
    at
}

#[test]
fn defaults_then_file_then_environment_then_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = settings_file(
        dir.path(),
        r#"
listen = "127.0.0.1:9999"
[server]
max_body_bytes = 1000
max_batch_records = 10
request_timeout_secs = 7
[retention]
days = 30
"#,
    );
    let file = file.to_str().expect("path");
    let (out, err, ok) = print(
        &[
            "--config",
            file,
            "serve",
            "--max-batch-records",
            "30",
            "--retention-days",
            "7",
        ],
        &[
            ("REMAUDIT_MAX_BODY_BYTES", "2000"),
            ("REMAUDIT_MAX_BATCH_RECORDS", "20"),
        ],
    );
    assert!(ok, "{err}");
    let settings: toml::Table = toml::from_str(&out).expect("config print writes TOML");
    // Only the file: its value.
    assert_eq!(value(&settings, "listen").as_str(), Some("127.0.0.1:9999"));
    assert_eq!(
        value(&settings, "server.request_timeout_secs").as_integer(),
        Some(7)
    );
    // File and environment: the environment's.
    assert_eq!(
        value(&settings, "server.max_body_bytes").as_integer(),
        Some(2000)
    );
    // File, environment and flag: the flag's.
    assert_eq!(
        value(&settings, "server.max_batch_records").as_integer(),
        Some(30)
    );
    assert_eq!(value(&settings, "retention.days").as_integer(), Some(7));
    // Nothing: the default.
    assert_eq!(
        value(&settings, "server.max_connections").as_integer(),
        Some(1024)
    );
    assert_eq!(
        value(&settings, "database.url").as_str(),
        Some("sqlite://remaudit.db")
    );

    // What config print writes is a settings file that gives the same settings.
    let again = settings_file(dir.path(), &out);
    let (out2, err, ok) = print(&["--config", again.to_str().expect("path"), "serve"], &[]);
    assert!(ok, "{err}");
    assert_eq!(out2, out);
}

#[test]
fn the_settings_file_also_comes_from_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = settings_file(
        dir.path(),
        "deadline_secs = 12\n[publisher]\nlinger_ms = 7\nspool_dir = \"/var/spool/remaudit\"\n",
    );
    let (out, err, ok) = print(
        &["publish"],
        &[
            ("REMAUDIT_CONFIG", file.to_str().expect("path")),
            ("REMAUDIT_PUBLISHER_LINGER_MS", "9"),
        ],
    );
    assert!(ok, "{err}");
    let settings: toml::Table = toml::from_str(&out).expect("TOML");
    assert_eq!(value(&settings, "deadline_secs").as_integer(), Some(12));
    assert_eq!(
        value(&settings, "publisher.linger_ms").as_integer(),
        Some(9)
    );
    assert_eq!(
        value(&settings, "publisher.spool_dir").as_str(),
        Some("/var/spool/remaudit")
    );
    assert_eq!(
        value(&settings, "publisher.url").as_str(),
        Some("http://127.0.0.1:8085")
    );
}

#[test]
fn an_unknown_key_is_refused_naming_the_key_and_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = settings_file(dir.path(), "[server]\nmax_body_byte = 10\n");
    let file = file.to_str().expect("path");
    for args in [
        vec!["config", "print", "--config", file, "serve"],
        vec!["serve", "--config", file],
    ] {
        let out = remaudit().args(&args).output().expect("run");
        assert!(!out.status.success(), "{args:?} accepted an unknown key");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("max_body_byte"), "{err}");
        assert!(err.contains(file), "{err}");
    }
}

#[test]
fn a_value_a_flag_would_refuse_is_refused_from_the_file_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = settings_file(dir.path(), "[server]\nmax_connections = 0\n");
    let (_, err, ok) = print(&["--config", file.to_str().expect("path"), "serve"], &[]);
    assert!(!ok);
    assert!(err.contains("server.max_connections"), "{err}");
    assert!(err.contains(file.to_str().expect("path")), "{err}");
    let file = settings_file(dir.path(), "[publisher]\nbatch_records = 5000\n");
    for command in ["publish", "controller"] {
        let (_, err, ok) = print(&["--config", file.to_str().expect("path"), command], &[]);
        assert!(!ok, "{command}");
        assert!(err.contains("publisher.batch_records"), "{err}");
    }
}

#[test]
fn config_print_shows_the_effective_statement_timeout() {
    let (out, err, ok) = print(&["serve", "--request-timeout-secs", "30"], &[]);
    assert!(ok, "{err}");
    let settings: toml::Table = toml::from_str(&out).expect("TOML");
    assert_eq!(
        value(&settings, "analytics_statement_timeout_secs").as_integer(),
        Some(28)
    );
}

#[test]
fn config_print_never_shows_the_database_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = settings_file(
        dir.path(),
        "[database]\nurl = \"postgres://remaudit:from-the-file@db:5432/remaudit\"\n",
    );
    let file = file.to_str().expect("path");
    for (args, env) in [
        (vec!["--config", file, "serve"], vec![]),
        (vec!["--config", file, "migrate"], vec![]),
        (
            vec!["serve"],
            vec![(
                "REMAUDIT_DATABASE_URL",
                "postgres://remaudit:from-the-file@db/remaudit?password=from-the-file",
            )],
        ),
        (
            vec![
                "serve",
                "--database-url",
                "postgres://remaudit:from-the-file@db/remaudit",
            ],
            vec![],
        ),
    ] {
        let (out, err, ok) = print(&args, &env);
        assert!(ok, "{err}");
        assert!(!out.contains("from-the-file"), "{out}");
        assert!(out.contains("postgres://remaudit:***@db"), "{out}");
    }
}

#[test]
fn every_command_with_settings_prints_them() {
    for command in ["serve", "migrate", "publish", "controller"] {
        let (out, err, ok) = print(&[command], &[]);
        assert!(ok, "{command}: {err}");
        let _: toml::Table = toml::from_str(&out).expect("TOML");
        assert!(out.contains("log_format = \"text\""), "{command}: {out}");
    }
}

#[test]
fn config_is_refused_by_commands_without_settings() {
    let out = remaudit()
        .args(["crdgen", "--config", "/nonexistent.toml"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("read a settings file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_mistake_in_the_file_never_prints_the_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = settings_file(dir.path(), "database_url = \"postgres://u:s3cr3t@h/db\"\n");
    let file = file.to_str().expect("path");
    for args in [
        vec!["config", "print", "--config", file, "migrate"],
        vec!["migrate", "--config", file],
    ] {
        let out = remaudit().args(&args).output().expect("run");
        assert!(!out.status.success(), "{args:?} accepted an unknown key");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("s3cr3t"), "{err}");
        assert!(err.contains("line 1, column 1"), "{err}");
        assert!(err.contains(file), "{err}");
    }
}

/// One file for every command: `migrate` and `serve` share `[database]`,
/// `publish` and `controller` share `[publisher]`.
const SHARED: &str = r#"
log_format = "json"
listen = "0.0.0.0:8085"
deadline_secs = 60

[database]
url = "sqlite://shared.db"

[server]
max_body_bytes = 1000

[retention]
days = 30

[publisher]
url = "http://remaudit:8085"
linger_ms = 7

[controller]
lease_name = "shared-lease"
"#;

#[test]
fn one_file_serves_every_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = settings_file(dir.path(), SHARED);
    let env = [("REMAUDIT_CONFIG", file.to_str().expect("path"))];
    for (command, present, absent) in [
        (
            "serve",
            &[
                "listen",
                "database.url",
                "server.max_body_bytes",
                "retention.days",
            ][..],
            &["publisher", "controller", "deadline_secs"][..],
        ),
        (
            "migrate",
            &["database.url"][..],
            &["listen", "server", "retention", "publisher"][..],
        ),
        (
            "publish",
            &["deadline_secs", "publisher.linger_ms"][..],
            &["listen", "database", "controller"][..],
        ),
        (
            "controller",
            &["controller.lease_name", "publisher.url"][..],
            &["listen", "database", "deadline_secs"][..],
        ),
    ] {
        let (out, err, ok) = print(&[command], &env);
        assert!(ok, "{command}: {err}");
        let settings: toml::Table = toml::from_str(&out).expect("TOML");
        assert_eq!(
            value(&settings, "log_format").as_str(),
            Some("json"),
            "{command}"
        );
        for key in present {
            let _ = value(&settings, key);
        }
        for key in absent {
            assert!(
                !settings.contains_key(*key),
                "{command} printed {key}: {out}"
            );
        }
        // What it prints is a settings file too.
        let again = settings_file(dir.path(), &out);
        let (out2, err, ok) = print(&["--config", again.to_str().expect("path"), command], &[]);
        assert!(ok, "{command}: {err}");
        assert_eq!(out2, out, "{command}");
    }
}

#[test]
fn unknown_keys_are_refused_in_every_table_by_every_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    for text in [
        "bogus = 1\n",
        "[controller]\nbogus = 1\n",
        "[publisher]\nbogus = 1\n",
        "[bogus]\n",
    ] {
        let file = settings_file(dir.path(), text);
        for command in ["serve", "migrate", "publish", "controller"] {
            let (_, err, ok) = print(&["--config", file.to_str().expect("path"), command], &[]);
            assert!(!ok, "{command} accepted {text}");
            assert!(err.contains("bogus"), "{err}");
        }
    }
}

#[test]
fn retention_reads_the_database_and_retention_tables() {
    let dir = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("from-file.db");
    let file = settings_file(
        dir.path(),
        &format!(
            "[database]\nurl = \"sqlite://{}\"\n[retention]\ndays = 7\n[publisher]\nlinger_ms = 3\n",
            db.display()
        ),
    );
    let file = file.to_str().expect("path");
    let (out, err, ok) = print(&["retention"], &[("REMAUDIT_CONFIG", file)]);
    assert!(ok, "{err}");
    let settings: toml::Table = toml::from_str(&out).expect("TOML");
    assert_eq!(value(&settings, "retention.days").as_integer(), Some(7));
    assert!(!settings.contains_key("publisher"), "{out}");
    for args in [
        vec!["retention", "run", "--dry-run"],
        vec!["retention", "verify"],
    ] {
        let out = remaudit()
            .args(&args)
            .env("REMAUDIT_CONFIG", file)
            .current_dir(work.path())
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(db.exists(), "the file's database was not used");
    assert!(!work.path().join("remaudit.db").exists());
}

#[test]
fn query_refuses_a_settings_file_rather_than_ignore_it() {
    let out = remaudit()
        .args(["query", "retries"])
        .env("REMAUDIT_CONFIG", "/nonexistent.toml")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("reads no settings file"), "{err}");
}

#[test]
fn publisher_numbers_in_the_environment_are_trimmed() {
    let (out, err, ok) = print(
        &["publish"],
        &[("REMAUDIT_PUBLISHER_BATCH_RECORDS", " 100")],
    );
    assert!(ok, "{err}");
    let settings: toml::Table = toml::from_str(&out).expect("TOML");
    assert_eq!(
        value(&settings, "publisher.batch_records").as_integer(),
        Some(100)
    );
}

#[test]
fn config_print_masks_the_publishers_url_password() {
    for command in ["publish", "controller"] {
        let (out, err, ok) = print(&[command, "--url", "http://u:s3cr3t@svc:8085"], &[]);
        assert!(ok, "{err}");
        assert!(!out.contains("s3cr3t"), "{out}");
    }
}
