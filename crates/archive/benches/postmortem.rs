//! A post-mortem over a year of archived weeks: how long one alert's
//! remediations take to list from the Parquet archive, and how many bytes
//! of it are read.
//!
//! The data: `--weeks` ISO weeks (52) of a fleet of `--per-day`
//! remediations a day (110,000) spread over `--alerts` alerts (4,000), each
//! week one archive batch written the way retention writes it
//! (`remaudit_retention::Archive::write_week`, then the manifest), into a
//! local directory (`--dir`, kept; a temporary one otherwise). Only summary
//! rows are written: a post-mortem reads no event. `--reuse` skips writing
//! when the directory already holds the weeks.
//!
//! The figures: opening the archive (reading every manifest), then
//! `--lookups` (5) post-mortems of random alerts over the whole span, the
//! 50 newest each, from a fresh open each time (no cache carries over):
//! seconds and bytes read (whole 1 MiB chunks, each checked against its
//! manifest). Every answer is checked: 50 rows (or all of the alert's), all
//! of that alert, newest first; a failed check prints `SURPRISE` and the
//! run exits non-zero. It asserts no speed.
//!
//! `--smoke` (or `BENCH_SMOKE=1`): 3 weeks x 300 remediations a day over 20
//! alerts, 2 lookups, every check. Run with `scripts/bench-archive [OPTIONS]`.

use std::path::PathBuf;
use std::time::Instant;

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Utc, Weekday};
use futures::StreamExt as _;
use remaudit_archive::{ArchiveQuery, Limits};
use remaudit_retention::{Archive, ArchiveSink, MANIFEST_FORMAT_V3, Manifest};
use remaudit_store::retention::ArchiveTable;
use serde_json::json;

/// The run's shape.
struct Options {
    weeks: u32,
    per_day: u64,
    alerts: u64,
    lookups: u32,
    dir: Option<PathBuf>,
    reuse: bool,
}

fn options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let smoke = std::env::var("BENCH_SMOKE").is_ok_and(|v| v == "1" || v == "true");
    let mut o = Options {
        weeks: 52,
        per_day: 110_000,
        alerts: 4_000,
        lookups: 5,
        dir: None,
        reuse: false,
    };
    if smoke {
        (o.weeks, o.per_day, o.alerts, o.lookups) = (3, 300, 20, 2);
    }
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        let number = |text: String, name: &str| {
            text.parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{name} takes a whole number above 0, got {text:?}"))
        };
        match arg.as_str() {
            "--smoke" => (o.weeks, o.per_day, o.alerts, o.lookups) = (3, 300, 20, 2),
            "--weeks" => {
                o.weeks = u32::try_from(number(value("--weeks")?, "--weeks")?)
                    .map_err(|e| e.to_string())?;
            }
            "--per-day" => o.per_day = number(value("--per-day")?, "--per-day")?,
            "--alerts" => o.alerts = number(value("--alerts")?, "--alerts")?,
            "--lookups" => {
                o.lookups = u32::try_from(number(value("--lookups")?, "--lookups")?)
                    .map_err(|e| e.to_string())?;
            }
            "--dir" => o.dir = Some(PathBuf::from(value("--dir")?)),
            "--reuse" => o.reuse = true,
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(o)
}

/// The Monday that starts week `w` of the data (week 0 is the oldest).
fn monday(o: &Options, w: u32) -> DateTime<Utc> {
    let last = NaiveDate::from_isoywd_opt(2026, 40, Weekday::Mon).unwrap_or_default();
    let first = last - TimeDelta::weeks(i64::from(o.weeks) - 1);
    (first + TimeDelta::weeks(i64::from(w)))
        .and_hms_opt(0, 0, 0)
        .unwrap_or_default()
        .and_utc()
}

/// An alert's fingerprint; zero-padded, so byte order is number order.
fn fingerprint(a: u64) -> String {
    format!("fp-{a:06}")
}

/// How many remediations alert `a` has in one week.
fn per_week(o: &Options, a: u64) -> u64 {
    let total = o.per_day * 7;
    total / o.alerts + u64::from(a < total % o.alerts)
}

/// Week `w`'s summary rows, sorted as retention sorts them.
fn week_rows(o: &Options, w: u32) -> impl Iterator<Item = String> + Send + use<> {
    let start = monday(o, w);
    let (weeks_before, alerts) = (u64::from(w), o.alerts);
    let counts: Vec<u64> = (0..alerts).map(|a| per_week(o, a)).collect();
    let week_total: u64 = counts.iter().sum();
    let mut first_id = weeks_before * week_total;
    (0..alerts).flat_map(move |a| {
        let n = counts[usize::try_from(a).unwrap_or(0)];
        let base = first_id;
        first_id += n;
        (0..n).map(move |k| {
            let offset = TimeDelta::seconds(i64::try_from(k * 604_800 / n.max(1)).unwrap_or(0))
                + TimeDelta::seconds(i64::try_from(a % 60).unwrap_or(0));
            let t = start + offset;
            let took = 30 + (a * 7 + k * 13) % 900;
            let end = t + TimeDelta::seconds(i64::try_from(took).unwrap_or(0));
            let failed = (a + k) % 10 == 0;
            let time = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, false);
            let namespace = ["prod", "staging", "dev"][usize::try_from(a % 3).unwrap_or(0)];
            let micros = took * 1_000_000;
            let bin = remaudit_model::histogram::duration_bin(i64::try_from(micros).unwrap_or(0));
            json!({
                "id": base + k + 1,
                "alert_fingerprint": fingerprint(a),
                "remediation_name": format!("rr-{a}-{w}-{k}"),
                "namespace": namespace,
                "overall_phase": if failed { "failed" } else { "completed" },
                "phase_rank": 9,
                "start_time": time(t),
                "completion_time": time(end),
                "failure_phase": failed.then_some("executing"),
                "failure_reason": failed.then_some("pod OOMKilled"),
                "duration_us": micros,
                "duration_bin": bin,
                "duplicate_count": 0,
                "legal_hold": false,
                "event_id": format!("00000000-0000-4000-8000-{:012x}", base + k + 1),
                "event_time": time(end),
                "created_at": time(end),
                "updated_at": time(end),
                "archive_batch": w + 1,
                "archived_at": time(end),
            })
            .to_string()
        })
    })
}

/// Writes the weeks as batches 1.. of one installation.
async fn write(o: &Options, archive: &Archive) -> Result<u64, String> {
    let installation = "00000000-0000-4000-8000-00000000bench";
    let mut bytes = 0;
    for w in 0..o.weeks {
        let batch = i64::from(w) + 1;
        let location = ArchiveSink::location(archive, installation, batch);
        let start = monday(o, w);
        let iso = start.iso_week();
        let label = format!("{}-W{:02}", iso.year(), iso.week());
        let meta = [
            ("batch", batch.to_string()),
            ("installation", installation.to_owned()),
            ("week", label.clone()),
        ];
        let lines = futures::stream::iter(week_rows(o, w).map(Ok)).boxed();
        let files = ArchiveSink::write_week(
            archive,
            &location,
            ArchiveTable::Remediations,
            &label,
            &meta,
            lines,
        )
        .await
        .map_err(|e| e.to_string())?;
        bytes += files.iter().map(|f| f.bytes).sum::<u64>();
        let manifest = Manifest {
            format: MANIFEST_FORMAT_V3.to_owned(),
            batch,
            installation: Some(installation.to_owned()),
            source: "bench".to_owned(),
            run_now: start + TimeDelta::weeks(14),
            start_time_min: Some(start),
            start_time_max: Some(start + TimeDelta::weeks(1)),
            files,
            chain_heads: Vec::new(),
            signature: None,
        };
        ArchiveSink::write_manifest(archive, &location, &manifest)
            .await
            .map_err(|e| e.to_string())?;
        eprintln!("wrote week {label} ({} of {})", w + 1, o.weeks);
    }
    Ok(bytes)
}

async fn run() -> Result<bool, String> {
    let o = options()?;
    let temp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let dir = o.dir.clone().unwrap_or_else(|| temp.path().to_owned());
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let url = format!("file://{}", dir.display());
    let archive = Archive::open(&url).map_err(|e| e.to_string())?;
    let have = archive.manifests().await.map_err(|e| e.to_string())?.len();
    let rows = o.per_day * 7 * u64::from(o.weeks);
    if o.reuse && have == usize::try_from(o.weeks).unwrap_or(0) {
        println!("reusing {have} weeks in {}", dir.display());
    } else if have > 0 {
        return Err(format!(
            "{} already holds {have} batches: give --reuse, or an empty --dir",
            dir.display()
        ));
    } else {
        let started = Instant::now();
        let bytes = write(&o, &archive).await?;
        println!(
            "wrote {} weeks, {rows} remediations, {:.1} MiB of Parquet in {:.1} s",
            o.weeks,
            remaudit_model::approx_f64(bytes) / f64::from(1 << 20),
            started.elapsed().as_secs_f64()
        );
    }
    let limits = Limits {
        time: std::time::Duration::from_mins(10),
        ..Limits::default()
    };
    let (since, until) = (monday(&o, 0), monday(&o, o.weeks));
    let mut surprises = 0;
    for i in 0..o.lookups {
        let alert = (u64::from(i) * 7_919 + 13) % o.alerts;
        let opened = Instant::now();
        let query = ArchiveQuery::open(&url, None, limits)
            .await
            .map_err(|e| e.to_string())?;
        let open_secs = opened.elapsed().as_secs_f64();
        let asked = Instant::now();
        let answer = query
            .postmortem(&fingerprint(alert), since, until, None, 50)
            .await
            .map_err(|e| e.to_string())?;
        let secs = asked.elapsed().as_secs_f64();
        let expected = (per_week(&o, alert) * u64::from(o.weeks)).min(50);
        let ordered = answer
            .windows(2)
            .all(|w| w[0].start_time >= w[1].start_time);
        let theirs = answer
            .iter()
            .all(|r| r.alert_fingerprint == fingerprint(alert));
        if answer.len() as u64 != expected || !ordered || !theirs {
            surprises += 1;
            println!(
                "SURPRISE: {} answered {} rows (expected {expected}), ordered {ordered}, all its own {theirs}",
                fingerprint(alert),
                answer.len()
            );
        }
        println!(
            "post-mortem of {} over {} weeks ({rows} remediations): {secs:.3} s, {:.1} MiB read; opening the archive {open_secs:.3} s",
            fingerprint(alert),
            o.weeks,
            remaudit_model::approx_f64(query.bytes_read()) / f64::from(1 << 20),
        );
    }
    Ok(surprises == 0)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bench postmortem: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
