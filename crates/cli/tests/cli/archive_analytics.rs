//! The analytics questions over archived weeks, as an operator asks them:
//! `remaudit query …` against a running service, before the retention job
//! archives the oldest weeks and again, with `--archive`, after. The answers
//! must be the same, on PostgreSQL (whose aligned answers come from its
//! rollups) and on SQLite.

use std::process::Output;

use chrono::{DateTime, TimeDelta, Utc};
use remaudit_api::paths;
use remaudit_model::NewAudit;
use remaudit_retention::CRASH_AT_VAR;
use remaudit_store::{Actor, DeleteOutcome, InsertRules, ListQuery, Store};
use remaudit_testkit::history::clock;
use remaudit_testkit::{PgDb, SqliteDb, record};
use serde_json::{Value, json};

use crate::helpers::{remaudit, serve_on};

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A history of the 120 days before [`clock`], varied so that every
/// figure of every answer depends on the rows: durations over four orders
/// of magnitude, failures in three phases with several reasons (one longer
/// than a sample shows, in two-byte characters), timeouts with and without
/// a completion time, unfinished remediations, three namespaces, and
/// thirteen alerts retried many times.
fn varied(now: DateTime<Utc>) -> Vec<NewAudit> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    let reasons = [
        "pod OOMKilled".to_owned(),
        "image pull back-off".to_owned(),
        "workflow step exited 1".to_owned(),
        "é".repeat(130),
    ];
    let mut records = Vec::new();
    for day in 0..120_i64 {
        for n in 0..(5 + day % 4) {
            let r = next();
            let start = now - TimeDelta::days(120 - day)
                + TimeDelta::seconds(i64::try_from(r % 86_000).expect("small"));
            let seconds = [3, 45, 300, 1_800, 7_200][usize::try_from(r % 5).expect("small")];
            let took = TimeDelta::seconds(seconds + i64::try_from(r % 97).expect("small"))
                + TimeDelta::milliseconds(i64::try_from(r % 1_000).expect("small"));
            let end = start + took;
            let namespace = ["prod", "staging", "dev"][usize::try_from(r % 3).expect("small")];
            let base = json!({
                "alert_fingerprint": format!("fp-{}", r % 13),
                "remediation_name": format!("rr-{day}-{n}"),
                "namespace": namespace,
                "start_time": start.to_rfc3339(),
            });
            let mut first = base.clone();
            first["overall_phase"] = json!("processing");
            first["event_time"] = json!((start + TimeDelta::seconds(1)).to_rfc3339());
            records.push(record(first));
            let mut last = base;
            last["event_time"] = json!(end.to_rfc3339());
            match r % 10 {
                0..=5 => {
                    last["overall_phase"] = json!("completed");
                    last["completion_time"] = json!(end.to_rfc3339());
                }
                6 | 7 => {
                    last["overall_phase"] = json!("failed");
                    last["completion_time"] = json!(end.to_rfc3339());
                    let phase = ["processing", "analyzing", "executing"]
                        [usize::try_from((r >> 8) % 3).expect("small")];
                    last["failure_phase"] = json!(phase);
                    last["failure_reason"] =
                        json!(reasons[usize::try_from((r >> 4) % 4).expect("small")]);
                }
                8 => {
                    last["overall_phase"] = json!("timeout");
                    last["timeout_phase"] =
                        json!(if r % 2 == 0 { "analyzing" } else { "executing" });
                    last["timeout_time"] = json!(end.to_rfc3339());
                    if r % 4 == 0 {
                        last["completion_time"] = json!(end.to_rfc3339());
                        last["failure_reason"] = json!("no answer from the analysis");
                    }
                }
                _ => last["overall_phase"] = json!("executing"),
            }
            records.push(record(last));
        }
    }
    records
}

/// Stores the history, then soft-deletes one remediation of an old week and
/// puts another under legal hold: the first is archived marked deleted (and
/// must stay out of every answer), the second stays live in its archived
/// week (and must stay in).
async fn load(store: &dyn Store) {
    for chunk in varied(clock()).chunks(500) {
        store
            .insert_with(chunk, &InsertRules::default())
            .await
            .expect("insert");
    }
    store.settle().await.expect("project");
    let old = store
        .list(&ListQuery {
            since: Some("2026-05-12T00:00:00Z".parse().expect("time")),
            until: Some("2026-05-14T00:00:00Z".parse().expect("time")),
            limit: 20,
            ..ListQuery::default()
        })
        .await
        .expect("list");
    let finished: Vec<i64> = old
        .items
        .iter()
        .filter(|r| r.completion_time.is_some())
        .map(|r| r.id)
        .collect();
    assert!(finished.len() >= 2, "{old:?}");
    let actor = Actor::new("ops", "archive analytics");
    let deleted = store
        .soft_delete(finished[0], clock(), &actor)
        .await
        .expect("delete");
    assert!(matches!(deleted, DeleteOutcome::Deleted(_)), "{deleted:?}");
    let held = store
        .set_legal_hold(finished[1], true, &actor)
        .await
        .expect("hold");
    assert!(held.is_some());
    store.close().await;
}

/// The questions: windows wholly in archived weeks and windows across the
/// boundary, aligned (from rollups on PostgreSQL) and exact, with filters.
fn questions() -> Vec<Vec<&'static str>> {
    const ACROSS: [&str; 4] = [
        "--since",
        "2026-05-10T00:00:00Z",
        "--until",
        "2026-08-08T00:00:00Z",
    ];
    const ARCHIVED: [&str; 4] = [
        "--since",
        "2026-05-04T00:00:00Z",
        "--until",
        "2026-05-31T00:00:00Z",
    ];
    const HOURS: [&str; 4] = [
        "--since",
        "2026-05-20T00:00:00Z",
        "--until",
        "2026-05-21T12:00:00Z",
    ];
    const EXACT: [&str; 5] = [
        "--since",
        "2026-05-06T03:17:00Z",
        "--until",
        "2026-06-20T11:00:00Z",
        "--exact",
    ];
    let mut asked = Vec::new();
    for window in [&ACROSS[..], &ARCHIVED[..], &HOURS[..], &EXACT[..]] {
        for question in [
            &["success-rate", "--bucket", "1d"][..],
            &["durations"][..],
            &["slowest", "--limit", "15"][..],
            &["failures"][..],
            &["retries", "--limit", "6"][..],
        ] {
            let mut args = question.to_vec();
            args.extend_from_slice(window);
            asked.push(args.clone());
            args.extend_from_slice(&["--namespace", "prod"]);
            asked.push(args);
        }
    }
    asked.push([&["retries", "--alert-fingerprint", "fp-4"][..], &ACROSS[..]].concat());
    asked.push(
        [
            &["durations", "--alert-fingerprint", "fp-7"][..],
            &EXACT[..],
        ]
        .concat(),
    );
    asked
}

/// `remaudit query ARGS --output json`, with `--archive` when given one.
fn ask(url: &str, args: &[&str], archive: Option<&str>) -> Value {
    let mut cmd = remaudit();
    cmd.arg("query")
        .args(args)
        .args(["--output", "json"])
        .env("REMAUDIT_URL", url)
        .env_remove("REMAUDIT_ARCHIVE_URL");
    if let Some(archive) = archive {
        cmd.args(["--archive", "--archive-url", archive]);
    }
    let out = cmd.output().expect("run remaudit query");
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    serde_json::from_slice(&out.stdout).expect("json")
}

/// The same question through the API with `archive=true`: `args` as
/// `remaudit query` takes them, turned into the endpoint and its parameters.
async fn ask_api(url: &str, args: &[&str]) -> Value {
    let (question, mut rest) = args.split_first().expect("a question");
    let path = match *question {
        "success-rate" => paths::ANALYTICS_SUCCESS_RATE,
        "durations" => paths::ANALYTICS_DURATIONS,
        "slowest" => paths::ANALYTICS_SLOWEST,
        "failures" => paths::ANALYTICS_FAILURES,
        "retries" => paths::ANALYTICS_RETRIES,
        "postmortem" => paths::ANALYTICS_POSTMORTEM,
        other => panic!("no endpoint for {other}"),
    };
    let mut params = vec![("archive".to_owned(), "true".to_owned())];
    while let Some((flag, more)) = rest.split_first() {
        let name = flag.trim_start_matches("--").replace('-', "_");
        if *flag == "--exact" {
            params.push((name, "true".to_owned()));
            rest = more;
        } else {
            let (value, more) = more.split_first().expect("a value");
            params.push((name, (*value).to_owned()));
            rest = more;
        }
    }
    let address = reqwest::Url::parse_with_params(&format!("{url}{path}"), &params).expect("url");
    let response = reqwest::Client::new()
        .get(address)
        .send()
        .await
        .expect("ask");
    assert_eq!(response.status(), 200, "{args:?}");
    response.json().await.expect("json")
}

/// `answer` without the name of the source it was read from.
fn sourceless(mut answer: Value) -> Value {
    if let Some(query) = answer.get_mut("query").and_then(Value::as_object_mut) {
        query.remove("source");
    }
    answer
}

/// Whether two answers are equal, numbers that are not integers to 1e-9
/// relative (the service computes an exact average and percentiles in
/// PostgreSQL's arithmetic, the archive in Rust's).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if !(x.is_i64() && y.is_i64()) => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1e-9)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

async fn answers_as_before_archiving(database: &str, store: &dyn Store) {
    load(store).await;
    let asked = questions();
    let (server, url) = serve_on(database, &["--retention-interval-secs", "0"]).await;
    let before: Vec<Value> = asked.iter().map(|args| ask(&url, args, None)).collect();
    // Two windows of at most 90 days that together make one of 119 days,
    // longer than the service takes without the archive.
    let halves: Vec<(Value, Value)> = [LATER, EARLIER]
        .iter()
        .map(|half| {
            (
                ask(
                    &url,
                    &[&["postmortem", "fp-3", "--limit", "1000"][..], half].concat(),
                    None,
                ),
                ask(&url, &[&["success-rate"][..], half].concat(), None),
            )
        })
        .collect();
    // A remediation of an archived week, and its timeline as the service shows it.
    let (_, _, listed) = get(&format!(
        "{url}{}?since=2026-05-19T00:00:00Z&until=2026-05-20T00:00:00Z&limit=1",
        paths::AUDIT
    ))
    .await;
    let old_id = listed["items"][0]["id"]
        .as_i64()
        .expect("an old remediation");
    let (status, _, old_timeline) = get(&format!("{url}{}", paths::audit_item(old_id))).await;
    assert_eq!(status, 200, "{old_timeline}");
    let (_, _, first_page) = get(&format!("{url}{}?limit=1", paths::audit_item(old_id))).await;
    let cursor = first_page["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_owned();
    drop(server);

    let dir = tempfile::tempdir().expect("dir");
    let archive = format!("file://{}", dir.path().display());
    let cwd = tempfile::tempdir().expect("dir");
    let retention = |crash: Option<&str>| {
        let mut cmd = remaudit();
        cmd.current_dir(cwd.path())
            .args([
                "retention",
                "run",
                "--database-url",
                database,
                "--archive-url",
                &archive,
            ])
            .args(["--now", &clock().to_rfc3339()])
            .env_remove(CRASH_AT_VAR);
        if let Some(step) = crash {
            cmd.env(CRASH_AT_VAR, step);
        }
        cmd.output().expect("run retention")
    };
    // A run killed after its first batch's manifest and before its rows
    // leave: that batch's remediations are in the archive and still live.
    let out = retention(Some("before-delete"));
    assert!(!out.status.success(), "{}", text(&out));
    {
        let (_server, url) = serve_on(database, &["--retention-interval-secs", "0"]).await;
        for (args, before) in asked.iter().zip(&before) {
            let merged = ask(&url, args, Some(&archive));
            assert!(
                same(&sourceless(merged.clone()), &sourceless(before.clone())),
                "{args:?}, a batch both live and archived\nbefore: {before:#}\nwith --archive: {merged:#}"
            );
        }
    }
    let out = retention(None);
    assert!(out.status.success(), "{}", text(&out));

    let (_server, url) = serve_on(
        database,
        &["--retention-interval-secs", "0", "--archive-url", &archive],
    )
    .await;
    let mut changed = 0;
    for (args, before) in asked.iter().zip(&before) {
        let live = ask(&url, args, None);
        if !same(&sourceless(live), &sourceless(before.clone())) {
            changed += 1;
        }
        let merged = ask(&url, args, Some(&archive));
        assert_eq!(merged["query"]["source"], "archive", "{args:?}");
        assert!(
            same(&sourceless(merged.clone()), &sourceless(before.clone())),
            "{args:?}\nbefore archiving: {before:#}\nwith --archive: {merged:#}"
        );
        // The service answers archive=true with the same computation.
        assert_eq!(ask_api(&url, args).await, merged, "{args:?}");
    }
    assert_eq!(
        ask_api(
            &url,
            &[
                "postmortem",
                "--alert-fingerprint",
                "fp-3",
                "--since",
                "2026-05-10T00:00:00Z",
                "--until",
                "2026-08-08T00:00:00Z",
                "--limit",
                "1000"
            ]
        )
        .await["items"],
        ask(
            &url,
            &[
                "postmortem",
                "fp-3",
                "--since",
                "2026-05-10T00:00:00Z",
                "--until",
                "2026-08-08T00:00:00Z",
                "--limit",
                "1000"
            ],
            Some(&archive)
        )["items"],
    );
    long_windows(&url, &archive, &halves).await;
    // Its timeline has left the service; archive=true finds it as it was.
    let item = format!("{url}{}", paths::audit_item(old_id));
    let (status, _, _) = get(&item).await;
    assert_eq!(status, 404);
    let (status, _, archived) = get(&format!("{item}?archive=true")).await;
    assert_eq!(status, 200, "{archived}");
    assert_eq!(archived, old_timeline);
    // A page the database began cannot go on from the archive.
    let (status, _, problem) = get(&format!("{item}?archive=true&cursor={cursor}")).await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "cursor", "{problem}");
    let (status, _, problem) =
        get(&format!("{url}{}?archive=true", paths::audit_item(999_999))).await;
    assert_eq!(status, 404, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("nor in the archive"),
        "{problem}"
    );
    refusals(&url, dir.path(), &archive).await;
    // Without --archive, every question over archived weeks answers
    // differently now: the archive really holds what the answers count.
    assert!(
        changed > asked.len() / 2,
        "only {changed} of {} answers changed when their weeks were archived",
        asked.len()
    );
}

#[tokio::test]
async fn analytics_over_archived_weeks_answer_as_before_archiving_on_postgres() {
    let db = PgDb::create().await;
    let store = db.store().await;
    answers_as_before_archiving(db.url(), store.as_ref()).await;
}

#[tokio::test]
async fn analytics_over_archived_weeks_answer_as_before_archiving_on_sqlite() {
    let db = SqliteDb::create();
    let store = db.store().await;
    answers_as_before_archiving(&db.url(), store.as_ref()).await;
}

/// The later and the earlier half of [`LONG`].
const LATER: [&str; 4] = [
    "--since",
    "2026-07-03T00:00:00Z",
    "--until",
    "2026-08-31T00:00:00Z",
];
const EARLIER: [&str; 4] = [
    "--since",
    "2026-05-04T00:00:00Z",
    "--until",
    "2026-07-03T00:00:00Z",
];
/// 119 days: longer than the retention period.
const LONG: [&str; 4] = [
    "--since",
    "2026-05-04T00:00:00Z",
    "--until",
    "2026-08-31T00:00:00Z",
];

/// Windows longer than the service takes alone: with the archive they
/// answer what the two halves answered before archiving, put together.
async fn long_windows(url: &str, archive: &str, halves: &[(Value, Value)]) {
    let postmortem = ask(
        url,
        &[&["postmortem", "fp-3", "--limit", "1000"][..], &LONG[..]].concat(),
        Some(archive),
    );
    let items = |v: &Value| v["items"].as_array().expect("items").clone();
    let joined: Vec<Value> = halves.iter().flat_map(|(p, _)| items(p)).collect();
    assert!(!joined.is_empty());
    assert_eq!(
        items(&postmortem),
        joined,
        "a 119-day post-mortem is its halves' lists, newest first"
    );
    let success = ask(
        url,
        &[&["success-rate"][..], &LONG[..]].concat(),
        Some(archive),
    );
    for field in ["started", "completed", "failed", "timed_out", "in_progress"] {
        let sum: u64 = halves
            .iter()
            .map(|(_, r)| r["totals"][field].as_u64().expect("count"))
            .sum();
        assert_eq!(success["totals"][field].as_u64(), Some(sum), "{field}");
    }
    assert_eq!(
        ask_api(url, &[&["success-rate"][..], &LONG[..]].concat()).await,
        success,
        "the service answers the long window with archive=true too"
    );
    // A long window is checked here as the service checks the ones it takes.
    let out = remaudit()
        .args([
            "query",
            "success-rate",
            "--bucket",
            "30m",
            "--archive",
            "--archive-url",
            archive,
        ])
        .args(LONG)
        .env("REMAUDIT_URL", url)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("whole number of hours"),
        "{}",
        text(&out)
    );
    // Without the archive the service refuses it, saying what takes it.
    let out = remaudit()
        .args(["query", "success-rate"])
        .args(LONG)
        .env("REMAUDIT_URL", url)
        .env_remove("REMAUDIT_ARCHIVE_URL")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("archive=true (--archive)"),
        "{}",
        text(&out)
    );
}

/// `GET url` as (status, `Retry-After`, body).
async fn get(url: &str) -> (u16, Option<String>, Value) {
    let response = reqwest::get(url).await.expect("ask");
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().expect("text").to_owned());
    (status, retry, response.json().await.expect("json"))
}

/// Every file under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// What `archive=true` and `--archive` answer to a bad flag, an archive that
/// is not there, and a damaged file: a precise problem, never an answer.
async fn refusals(url: &str, dir: &std::path::Path, archive: &str) {
    let success = format!("{url}{}", paths::ANALYTICS_SUCCESS_RATE);
    let (status, _, problem) = get(&format!("{success}?archive=maybe")).await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "archive", "{problem}");

    // One summary file of an archived week, cut in half.
    let victim = files_under(dir)
        .into_iter()
        .find(|p| {
            p.to_string_lossy()
                .contains("table=remediation_audit/week=2026-W20")
        })
        .expect("a summary file of week 20");
    let bytes = std::fs::read(&victim).expect("read");
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).expect("cut");
    let name = victim
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let week = "week=2026-W20";
    let damaged = async |more: &str| {
        let (status, _, problem) = get(&format!(
            "{success}?archive=true&since=2026-05-04T00:00:00Z&until=2026-05-31T00:00:00Z{more}"
        ))
        .await;
        assert_eq!(status, 500, "{problem}");
        assert_eq!(
            problem["type"], "urn:remaudit:problem:archive-damaged",
            "{problem}"
        );
        let detail = problem["detail"].as_str().expect("detail");
        assert!(detail.contains(week) && detail.contains(&name), "{detail}");
    };
    damaged("").await;
    let mut cmd = remaudit();
    let out = cmd
        .args(["query", "success-rate", "--since", "2026-05-04T00:00:00Z"])
        .args([
            "--until",
            "2026-05-31T00:00:00Z",
            "--archive",
            "--archive-url",
            archive,
        ])
        .env("REMAUDIT_URL", url)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(out.stdout.is_empty(), "{}", text(&out));
    assert!(text(&out).contains(week), "{}", text(&out));
    // The same file, its size kept and one byte in its middle changed: the
    // chunk checksums find it while the question reads.
    let mut garbled = bytes.clone();
    let middle = garbled.len() / 2;
    garbled[middle] ^= 0xff;
    std::fs::write(&victim, &garbled).expect("garble");
    damaged("&exact=true").await;
    // A window the damaged week is not in still answers.
    let (status, _, answer) = get(&format!(
        "{success}?archive=true&since=2026-05-25T00:00:00Z&until=2026-06-08T00:00:00Z"
    ))
    .await;
    assert_eq!(status, 200, "{answer}");
    std::fs::write(&victim, &bytes).expect("restore");
}

#[tokio::test]
async fn archive_true_before_any_archive_answers_from_the_database_and_an_unreadable_one_is_refused()
 {
    let db = SqliteDb::create();
    db.store().await.close().await;
    let dir = tempfile::tempdir().expect("dir");
    let archive = format!("file://{}/archive", dir.path().display());
    let durations = |url: &str| format!("{url}{}?archive=true", paths::ANALYTICS_DURATIONS);
    {
        // No archive directory yet: retention has archived nothing, so the
        // database's answer is the whole answer.
        let (_server, url) = serve_on(
            &db.url(),
            &["--retention-interval-secs", "0", "--archive-url", &archive],
        )
        .await;
        let (status, _, answer) = get(&durations(&url)).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["query"]["source"], "rows", "{answer}");
    }
    // An archive whose manifest does not read cannot answer.
    let batch = dir
        .path()
        .join("archive/00000000-0000-4000-8000-000000000000/batch-1-abcdef");
    std::fs::create_dir_all(&batch).expect("dir");
    std::fs::write(batch.join("manifest.json"), "not a manifest").expect("write");
    let (_server, url) = serve_on(
        &db.url(),
        &["--retention-interval-secs", "0", "--archive-url", &archive],
    )
    .await;
    let (status, retry, problem) = get(&durations(&url)).await;
    assert_eq!(status, 503, "{problem}");
    assert_eq!(
        problem["type"], "urn:remaudit:problem:archive-unavailable",
        "{problem}"
    );
    assert!(retry.is_some(), "Retry-After");
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("manifest"),
        "{problem}"
    );
    // Without archive=true, the same question answers from the database.
    let (status, _, answer) = get(&format!("{url}{}", paths::ANALYTICS_DURATIONS)).await;
    assert_eq!(status, 200, "{answer}");
}
