//! `POST /api/v1/archive/sql` on `remaudit serve`, as a reader asks it: the
//! same answer the CLI prints, for readers and admins only, within its row,
//! byte, memory and time limits, and never at the service's expense.

use std::path::Path;
use std::process::Output;

use remaudit_testkit::SqliteDb;
use remaudit_testkit::history::{clock, load};
use remaudit_testkit::wait_for;
use serde_json::{Value, json};

use crate::helpers::{Running, create_token, remaudit, serve_on};

const SQL: &str = remaudit_api::paths::ARCHIVE_SQL;

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A SQLite database whose history's old weeks a retention run archived.
struct Archived {
    db: SqliteDb,
    dir: tempfile::TempDir,
    url: String,
    tokens: std::path::PathBuf,
    reader: String,
    admin: String,
    writer: String,
}

async fn archived() -> Archived {
    let db = SqliteDb::create();
    let store = db.store().await;
    load(store.as_ref(), clock()).await;
    store.close().await;
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("file://{}", dir.path().join("archive").display());
    let out = remaudit()
        .current_dir(dir.path())
        .args(["retention", "run", "--database-url", &db.url()])
        .args(["--archive-url", &url, "--now", &clock().to_rfc3339()])
        .env_remove("REMAUDIT_ARCHIVE_URL")
        .output()
        .expect("run remaudit retention");
    assert!(out.status.success(), "{}", text(&out));
    let tokens = dir.path().join("tokens.toml");
    Archived {
        reader: create_token(&tokens, "sre", "reader"),
        admin: create_token(&tokens, "ops", "admin"),
        writer: create_token(&tokens, "orchestrator", "writer"),
        db,
        dir,
        url,
        tokens,
    }
}

impl Archived {
    /// `remaudit serve` over it, reading its archive, with `args`.
    async fn serve(&self, args: &[&str]) -> (Running, String) {
        let tokens = self.tokens.to_str().expect("utf-8");
        let mut all = vec![
            "--retention-interval-secs",
            "0",
            "--archive-url",
            &self.url,
            "--auth-tokens-file",
            tokens,
        ];
        all.extend_from_slice(args);
        serve_on(&self.db.url(), &all).await
    }

    /// `remaudit archive sql --output json SQL` over the archive.
    fn cli(&self, sql: &str) -> Vec<serde_json::Map<String, Value>> {
        let out = remaudit()
            .args([
                "archive",
                "sql",
                "--archive-url",
                &self.url,
                "--output",
                "json",
            ])
            .arg(sql)
            .env_remove("REMAUDIT_ARCHIVE_URL")
            .output()
            .expect("run remaudit archive sql");
        assert!(out.status.success(), "{sql}: {}", text(&out));
        serde_json::from_slice(&out.stdout).expect("a JSON array of objects")
    }
}

/// Posts `body` with `token`; the status and the JSON answer.
async fn post(
    http: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    body: &Value,
) -> (u16, Value) {
    let (status, _, value) = post_full(http, base, token, body).await;
    (status, value)
}

/// Posts `body` with `token`; the status, `Retry-After` and the JSON answer.
async fn post_full(
    http: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    body: &Value,
) -> (u16, Option<String>, Value) {
    let mut request = http.post(format!("{base}{SQL}")).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("send");
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let value = response.json().await.unwrap_or(Value::Null);
    (status, retry, value)
}

/// The answer's rows as objects by column name, nulls left out, as the
/// CLI's JSON prints them.
fn as_objects(answer: &Value) -> Vec<serde_json::Map<String, Value>> {
    let names: Vec<&str> = answer["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    answer["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| {
            names
                .iter()
                .zip(row.as_array().expect("a row is an array"))
                .filter(|(_, v)| !v.is_null())
                .map(|(n, v)| ((*n).to_owned(), v.clone()))
                .collect()
        })
        .collect()
}

/// The `remaudit archive sql` children of process `parent` still running.
fn statement_children(parent: u32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            let dir = e.path();
            let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
            // The parent's pid is the second field after the command's `)`.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .unwrap_or_default()
                .to_owned();
            let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
            ppid == Some(parent)
                && state != "Z"
                && String::from_utf8_lossy(&cmdline).contains("archive\0sql")
        })
        .count()
}

/// A statement that runs until its time is up, posted as `reader` to the
/// service at `base` (process `pid`), once its process runs.
async fn start_endless(
    http: &reqwest::Client,
    base: &str,
    reader: &str,
    pid: u32,
) -> tokio::task::JoinHandle<(u16, Option<String>, Value)> {
    let endless = json!({"sql": "SELECT count(*) FROM generate_series(1, 1000000000000)"});
    let asking = tokio::spawn({
        let (http, base, reader) = (http.clone(), base.to_owned(), reader.to_owned());
        async move { post_full(&http, &base, Some(&reader), &endless).await }
    });
    wait_for(
        "the statement's process to start",
        std::time::Duration::from_secs(30),
        || async move { (statement_children(pid) > 0).then_some(()) },
    )
    .await;
    asking
}

/// Waits until no statement process of `pid` runs, within `secs`, then
/// checks that the archive's turn is free: a statement answers.
async fn assert_gone_and_turn_free(
    http: &reqwest::Client,
    base: &str,
    reader: &str,
    pid: u32,
    secs: u64,
) {
    wait_for(
        "the statement's process to be killed",
        std::time::Duration::from_secs(secs),
        || async move { (statement_children(pid) == 0).then_some(()) },
    )
    .await;
    let (status, answer) = post(http, base, Some(reader), &json!({"sql": "SELECT 1 AS one"})).await;
    assert_eq!(status, 200, "the turn is free again: {answer}");
    assert_eq!(answer["rows"], json!([[1]]));
}

#[tokio::test]
async fn statements_answer_as_the_cli_does_for_readers_and_admins_only() {
    let archive = archived().await;
    let (_server, base) = archive.serve(&[]).await;
    let http = reqwest::Client::new();
    let grouped = "SELECT overall_phase, count(*) AS n FROM remediation_audit \
                   GROUP BY overall_phase ORDER BY overall_phase";
    let (status, answer) = post(
        &http,
        &base,
        Some(&archive.reader),
        &json!({"sql": grouped}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["columns"],
        json!([
            {"name": "overall_phase", "type": "Utf8", "nullable": true},
            {"name": "n", "type": "Int64", "nullable": false},
        ])
    );
    let cli = archive.cli(grouped);
    assert!(cli.len() >= 3, "{cli:?}");
    assert_eq!(as_objects(&answer), cli);
    assert_eq!(answer["row_count"], json!(cli.len()));
    assert!(
        answer["batches"].as_u64().expect("batches") >= 1,
        "{answer}"
    );
    assert_eq!(answer["jsonl_batches"], json!(0));

    // Whole rows, times and nulls included, equal the CLI's too.
    let rows = "SELECT * FROM remediation_audit ORDER BY id LIMIT 50";
    let (status, answer) = post(&http, &base, Some(&archive.admin), &json!({"sql": rows})).await;
    assert_eq!(status, 200, "an admin reads too: {answer}");
    assert_eq!(as_objects(&answer), archive.cli(rows));
    let start = answer["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .position(|c| c["name"] == "start_time")
        .expect("start_time");
    let first = answer["rows"][0][start].as_str().expect("a time as text");
    first
        .parse::<chrono::DateTime<chrono::Utc>>()
        .unwrap_or_else(|e| panic!("{first}: {e}"));
    assert!(
        answer["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .any(|row| row.as_array().expect("row").contains(&Value::Null)),
        "nulls show as null: {answer}"
    );

    // Decimals as text, exactly; big integers as numbers, exactly.
    let (status, answer) = post(
        &http,
        &base,
        Some(&archive.reader),
        &json!({"sql": "SELECT CAST('12345678901234567.89' AS DECIMAL(20, 2)) AS d, \
                         CAST(9007199254740993 AS BIGINT) AS big"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["rows"],
        json!([["12345678901234567.89", 9_007_199_254_740_993_i64]])
    );

    // An answer without rows still names its columns.
    let (status, answer) = post(
        &http,
        &base,
        Some(&archive.reader),
        &json!({"sql": "SELECT id, namespace FROM remediation_audit WHERE id < 0"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["rows"], json!([]));
    assert_eq!(answer["row_count"], json!(0));
    assert_eq!(answer["columns"][1]["name"], "namespace");

    // Only readers and admins.
    let body = json!({"sql": grouped});
    let (status, _) = post(&http, &base, Some(&archive.writer), &body).await;
    assert_eq!(status, 403, "a writer may not read the archive");
    let (status, _) = post(&http, &base, None, &body).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn bad_statements_and_large_answers_are_refused_and_the_service_goes_on() {
    let archive = archived().await;
    let (_server, base) = archive.serve(&[]).await;
    let http = reqwest::Client::new();
    let reader = Some(archive.reader.as_str());
    let copied = archive.dir.path().join("copied.csv");
    let copy = format!("COPY (SELECT 1) TO '{}'", copied.display());
    for (sql, why) in [
        ("SELEKT 1", "not SQL"),
        ("SELECT * FROM no_such_table", "no such table"),
        ("CREATE TABLE t AS SELECT 1", "DDL"),
        ("INSERT INTO remediation_audit (id) VALUES (1)", "DML"),
        (copy.as_str(), "COPY"),
        ("SET datafusion.execution.batch_size = 1", "SET"),
        // Words of a damage report, echoed by a statement, are no damage.
        (
            "SELECT \"no answer is given from a damaged archive\"",
            "damage's words, planning",
        ),
        (
            "SELECT CAST('no answer is given from a damaged archive' AS INT)",
            "damage's words, running",
        ),
    ] {
        let (status, answer) = post(&http, &base, reader, &json!({"sql": sql})).await;
        assert_eq!(status, 400, "{why}: {answer}");
        assert_eq!(
            answer["type"], "urn:remaudit:problem:invalid-sql",
            "{why}: {answer}"
        );
        assert!(
            answer["detail"].as_str().expect("detail").len()
                > "the statement cannot be answered: ".len(),
            "{why}: the engine's reason is given: {answer}"
        );
    }
    assert!(!copied.exists(), "COPY wrote a file");
    // Any text is a statement's to hold, a NUL included.
    let (status, answer) = post(
        &http,
        &base,
        reader,
        &json!({"sql": "SELECT '\u{0}' AS nul"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["rows"], json!([["\u{0}"]]));

    // The request itself.
    for (body, field) in [
        (json!({"sql": ""}), "sql"),
        (json!({"sql": "   "}), "sql"),
        (
            json!({"sql": format!("SELECT 1{}", " ".repeat(16_384))}),
            "sql",
        ),
        (json!({"sql": "SELECT 1", "max_rows": 0}), "max_rows"),
        (json!({"sql": "SELECT 1", "max_rows": 10_001}), "max_rows"),
    ] {
        let (status, answer) = post(&http, &base, reader, &body).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["errors"][0]["field"], field, "{answer}");
    }
    for body in [
        json!({"sql": 1}),
        json!({"sql": "SELECT 1", "limit": 3}),
        json!(["SELECT 1"]),
    ] {
        let (status, answer) = post(&http, &base, reader, &body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["type"], "urn:remaudit:problem:malformed-json");
    }

    // Too many rows, too many bytes, too much memory: refused, never cut.
    let (status, answer) = post(
        &http,
        &base,
        reader,
        &json!({"sql": "SELECT value FROM generate_series(1, 11)", "max_rows": 10}),
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["detail"]
            .as_str()
            .expect("detail")
            .contains("more than 10 rows"),
        "{answer}"
    );
    let (status, answer) = post(
        &http,
        &base,
        reader,
        &json!({"sql": "SELECT value FROM generate_series(1, 10)", "max_rows": 10}),
    )
    .await;
    assert_eq!(status, 200, "exactly the limit answers: {answer}");
    assert_eq!(answer["row_count"], json!(10));
    let (status, answer) = post(
        &http,
        &base,
        reader,
        &json!({"sql": "SELECT repeat('x', 100000) AS wide FROM generate_series(1, 200)"}),
    )
    .await;
    assert_eq!(status, 422, "20 MB of JSON: {answer}");
    assert!(
        answer["detail"]
            .as_str()
            .expect("detail")
            .contains("16 MiB"),
        "{answer}"
    );
    let (status, answer) = post(
        &http,
        &base,
        reader,
        &json!({"sql": "SELECT length(repeat('x', 1500000000)) AS n"}),
    )
    .await;
    assert_eq!(status, 422, "a 1.5 GB value: {answer}");
    assert!(
        answer["detail"]
            .as_str()
            .expect("detail")
            .contains("memory"),
        "{answer}"
    );

    // A statement deeper than the child's stack: its process dies, not the service.
    let deep = format!("SELECT {} AS n", vec!["1"; 8000].join("+"));
    let (status, answer) = post(&http, &base, reader, &json!({"sql": deep})).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["detail"]
            .as_str()
            .expect("detail")
            .contains("nests deeper"),
        "{answer}"
    );

    // The service is whole, and the archive's turn is free again.
    let (status, answer) = post(
        &http,
        &base,
        reader,
        &json!({"sql": "SELECT count(*) AS n FROM remediation_audit"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["rows"][0][0].as_i64().expect("a count") > 0,
        "{answer}"
    );
}

#[tokio::test]
async fn a_statement_past_its_time_is_stopped_and_holds_the_archive_meanwhile() {
    let archive = archived().await;
    // Questions over the archive end 2 s before the request's 3 s.
    let (server, base) = archive.serve(&["--request-timeout-secs", "3"]).await;
    let http = reqwest::Client::new();
    let pid = server.0.id();
    let first = start_endless(&http, &base, &archive.reader, pid).await;
    // While it runs, another question over the archive is told to retry.
    let (status, answer) = post(
        &http,
        &base,
        Some(&archive.reader),
        &json!({"sql": "SELECT 1"}),
    )
    .await;
    assert_eq!(status, 429, "a caller's own load, not a fault: {answer}");
    assert_eq!(answer["type"], "urn:remaudit:problem:archive-busy");
    let (status, retry, answer) = first.await.expect("first question");
    assert_eq!(status, 503, "{answer}");
    // Killed and reaped before the answer, not after.
    assert_eq!(
        statement_children(pid),
        0,
        "a statement's process outlived its answer"
    );
    // The service's retry delay (5 s by default), not the question's limit.
    assert_eq!(retry.as_deref(), Some("5"), "{answer}");
    assert_eq!(
        answer["type"], "urn:remaudit:problem:query-timeout",
        "{answer}"
    );
    // Its process is gone, and the archive answers again.
    assert_gone_and_turn_free(&http, &base, &archive.reader, pid, 30).await;
}

#[tokio::test]
async fn a_damaged_file_gets_no_answer_and_is_named() {
    let archive = archived().await;
    let (_server, base) = archive.serve(&[]).await;
    let parquet = walk(&archive.dir.path().join("archive"))
        .into_iter()
        .find(|p| {
            p.to_string_lossy().contains("table=remediation_audit/")
                && p.extension().is_some_and(|e| e == "parquet")
        })
        .expect("a summary file");
    let bytes = std::fs::read(&parquet).expect("read");
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0xff;
    let name = parquet
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let http = reqwest::Client::new();
    let ask = json!({"sql": "SELECT max(remediation_name) AS m FROM remediation_audit"});
    // Cut short (found by its size before the query), and one byte changed
    // (found by its chunk's checksum while the query reads).
    for (how, damaged) in [
        ("cut", &bytes[..bytes.len() / 2]),
        ("changed", &flipped[..]),
    ] {
        std::fs::write(&parquet, damaged).expect("damage");
        let (status, answer) = post(&http, &base, Some(&archive.reader), &ask).await;
        assert_eq!(status, 500, "{how}: {answer}");
        assert_eq!(
            answer["type"], "urn:remaudit:problem:archive-damaged",
            "{how}"
        );
        assert!(
            answer["detail"].as_str().expect("detail").contains(&name),
            "{how}: {answer}"
        );
    }
    std::fs::write(&parquet, &bytes).expect("restore");
    let (status, answer) = post(&http, &base, Some(&archive.reader), &ask).await;
    assert_eq!(status, 200, "restored: {answer}");
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(Result::ok)
    {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test]
async fn before_the_first_batch_the_tables_are_empty() {
    let db = SqliteDb::create();
    let dir = tempfile::tempdir().expect("dir");
    let tokens = dir.path().join("tokens.toml");
    let reader = create_token(&tokens, "sre", "reader");
    let missing = format!("file://{}", dir.path().join("not-yet").display());
    let (_server, base) = serve_on(
        &db.url(),
        &[
            "--retention-interval-secs",
            "0",
            "--archive-url",
            &missing,
            "--auth-tokens-file",
            tokens.to_str().expect("utf-8"),
        ],
    )
    .await;
    let (status, answer) = post(
        &reqwest::Client::new(),
        &base,
        Some(&reader),
        &json!({"sql": "SELECT count(*) AS n FROM remediation_audit_events"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["rows"], json!([[0]]));
    assert_eq!(answer["batches"], json!(0));
    assert!(
        !dir.path().join("not-yet").exists(),
        "reading made the archive directory"
    );
}

#[tokio::test]
async fn a_caller_that_goes_away_takes_its_statement_with_it() {
    let archive = archived().await;
    // The default time: the child would stop itself only after 27 s.
    let (server, base) = archive.serve(&[]).await;
    let http = reqwest::Client::new();
    let pid = server.0.id();
    let asking = start_endless(&http, &base, &archive.reader, pid).await;
    // The caller hangs up: its connection closes.
    asking.abort();
    let _ = asking.await;
    // Well before the child's own 27 s: only the service can have ended it.
    assert_gone_and_turn_free(&http, &base, &archive.reader, pid, 20).await;
}

/// Sends `body` as `token` on a connection of its own, reads the first
/// bytes of the answer (its status line), and leaves the rest unread.
async fn ask_and_leave_unread(base: &str, token: &str, body: &Value) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let body = body.to_string();
    let request = format!(
        "POST {SQL} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut first = [0_u8; 12];
    stream.read_exact(&mut first).await.expect("status line");
    assert_eq!(
        &first,
        b"HTTP/1.1 200",
        "{}",
        String::from_utf8_lossy(&first)
    );
    stream
}

#[tokio::test]
async fn two_answers_at_most_are_held_while_callers_read_them() {
    use tokio::io::AsyncReadExt as _;
    let archive = archived().await;
    let (_server, base) = archive.serve(&[]).await;
    let http = reqwest::Client::new();
    // Nearly 16 MiB each: more than the sockets between take while unread.
    let wide = json!({"sql": "SELECT repeat('x', 100000) AS wide FROM generate_series(1, 160)"});
    let hung_up = ask_and_leave_unread(&base, &archive.reader, &wide).await;
    let mut slow = ask_and_leave_unread(&base, &archive.reader, &wide).await;
    let small = json!({"sql": "SELECT 1 AS one"});
    let (status, answer) = post(&http, &base, Some(&archive.reader), &small).await;
    assert_eq!(status, 429, "two answers are held: {answer}");
    assert_eq!(answer["type"], "urn:remaudit:problem:archive-busy");

    // A caller that hangs up frees its place.
    drop(hung_up);
    let (http, base, reader) = (&http, base.as_str(), archive.reader.as_str());
    let small = &small;
    wait_for(
        "a place freed by the caller that hung up",
        std::time::Duration::from_secs(30),
        || async move {
            let (status, answer) = post(http, base, Some(reader), small).await;
            (status == 200).then_some(answer)
        },
    )
    .await;
    // The other answer, read at last, arrives whole: its last chunk ends it.
    let mut read = Vec::new();
    let mut piece = vec![0_u8; 1 << 16];
    while !read.ends_with(b"\r\n0\r\n\r\n") {
        let n = slow.read(&mut piece).await.expect("read");
        assert!(n > 0, "the answer ended early, after {} bytes", read.len());
        read.extend_from_slice(&piece[..n]);
    }
    assert!(read.len() > 16_000_000, "{} bytes", read.len());
}
