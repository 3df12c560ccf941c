//! `remaudit query`: the analytics endpoints of a running service, shown as a
//! table, as JSON or as CSV.
//!
//! Fetching is kept apart from rendering: every report has pure functions
//! from the decoded answer to the text printed, tested without a server.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use chrono::{DateTime, SecondsFormat, Utc};
use comfy_table::{CellAlignment, ContentArrangement, Table};
use remaudit_model::analytics::{
    Alignment, DurationsReport, FailuresReport, OutcomeCounts, QueryEcho, RemediationBrief,
    RemediationList, RetriesReport, SuccessRateReport,
};
use remaudit_model::{CrdStatusSnapshot, EventRecord, ServiceCrdStatuses, StoredAudit};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// How long a query may take before the CLI gives up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest free text (failure reasons) shown in a table cell.
const MAX_TEXT_CHARS: usize = 60;
/// Most phases of a retry progression shown in a table cell.
const MAX_PROGRESSION: usize = 8;

/// How answers are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// A header naming the window, then a table.
    Table,
    /// The server's answer, pretty-printed.
    Json,
    /// A header row and data rows; durations in seconds, rates from 0 to 1.
    Csv,
}

/// Settings of one `query` run.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// Base URL of the remaudit service.
    #[arg(
        long,
        global = true,
        env = "REMAUDIT_URL",
        default_value = "http://127.0.0.1:8085",
        display_order = 100
    )]
    url: String,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Table, display_order = 101)]
    output: Output,
    #[command(subcommand)]
    command: QueryCommand,
}

/// The time window and namespace of a query; the server fills in what is left out.
#[derive(Debug, Default, clap::Args)]
pub struct WindowArgs {
    /// First instant covered (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    since: Option<String>,
    /// First instant not covered (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    until: Option<String>,
    /// Length of the window, such as 30m, 24h, 7d or 2w.
    #[arg(long, value_name = "LENGTH")]
    window: Option<String>,
    /// Only remediations of this namespace.
    #[arg(long, value_name = "NS")]
    namespace: Option<String>,
    /// Use the window as given, without rounding its ends to whole hours or days.
    #[arg(long)]
    exact: bool,
}

/// The window, plus an alert filter.
#[derive(Debug, Default, clap::Args)]
pub struct Filters {
    #[command(flatten)]
    window: WindowArgs,
    /// Only remediations of this alert.
    #[arg(long, value_name = "FP")]
    alert_fingerprint: Option<String>,
}

/// The questions `query` can ask.
#[derive(Debug, clap::Subcommand)]
pub enum QueryCommand {
    /// Every remediation of one alert in the window, for a post-mortem.
    Postmortem {
        /// The alert's fingerprint.
        fingerprint: String,
        #[command(flatten)]
        window: WindowArgs,
        /// Most remediations listed.
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
    /// How many remediations completed, failed or timed out.
    SuccessRate {
        #[command(flatten)]
        filters: Filters,
        /// Also break the window into buckets of this length, such as 1h or 1d.
        #[arg(long, value_name = "LENGTH")]
        bucket: Option<String>,
    },
    /// How long remediations took, by final phase.
    Durations {
        #[command(flatten)]
        filters: Filters,
    },
    /// The remediations that took longest.
    Slowest {
        #[command(flatten)]
        filters: Filters,
        /// Most remediations listed.
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
    /// Failures and timeouts, grouped by the phase they happened in.
    Failures {
        #[command(flatten)]
        filters: Filters,
        /// Most groups listed.
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
    /// Alerts remediated more than once.
    Retries {
        #[command(flatten)]
        filters: Filters,
        /// Most alerts listed.
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
    /// One remediation and every transition it went through.
    Timeline {
        /// The remediation's id (as the other queries list it).
        id: i64,
    },
}

impl WindowArgs {
    fn push_params(&self, params: &mut Vec<(&'static str, String)>) {
        let given = [
            ("since", &self.since),
            ("until", &self.until),
            ("window", &self.window),
            ("namespace", &self.namespace),
        ];
        for (name, value) in given {
            if let Some(value) = value {
                params.push((name, value.clone()));
            }
        }
        if self.exact {
            params.push(("exact", "true".to_owned()));
        }
    }
}

impl Filters {
    fn params(&self) -> Vec<(&'static str, String)> {
        let mut params = Vec::new();
        self.window.push_params(&mut params);
        if let Some(fp) = &self.alert_fingerprint {
            params.push(("alert_fingerprint", fp.clone()));
        }
        params
    }
}

fn push_limit(params: &mut Vec<(&'static str, String)>, limit: Option<u32>) {
    if let Some(limit) = limit {
        params.push(("limit", limit.to_string()));
    }
}

/// Asks one analytics endpoint and renders its answer.
async fn ask<R: Report + DeserializeOwned>(
    api: &Api,
    endpoint: &str,
    params: &[(&str, String)],
    output: Output,
) -> anyhow::Result<String> {
    let report: R = api
        .analytics(&format!("/api/v1/audit/analytics/{endpoint}"), params)
        .await?;
    render(&report, output)
}

/// Runs the command; returns the exit status.
///
/// # Errors
/// When the server is unreachable, refuses the query (its explanation is in
/// the error), or answers something that cannot be read.
pub async fn run(args: QueryArgs) -> anyhow::Result<u8> {
    let api = Api::new(&args.url)?;
    let output = args.output;
    let text = match args.command {
        QueryCommand::Postmortem {
            fingerprint,
            window,
            limit,
        } => {
            let mut params = vec![("alert_fingerprint", fingerprint)];
            window.push_params(&mut params);
            push_limit(&mut params, limit);
            ask::<Postmortem>(&api, "postmortem", &params, output).await?
        }
        QueryCommand::SuccessRate { filters, bucket } => {
            let mut params = filters.params();
            if let Some(bucket) = bucket {
                params.push(("bucket", bucket));
            }
            ask::<SuccessRateReport>(&api, "success-rate", &params, output).await?
        }
        QueryCommand::Durations { filters } => {
            ask::<DurationsReport>(&api, "durations", &filters.params(), output).await?
        }
        QueryCommand::Slowest { filters, limit } => {
            let mut params = filters.params();
            push_limit(&mut params, limit);
            ask::<Slowest>(&api, "slowest", &params, output).await?
        }
        QueryCommand::Failures { filters, limit } => {
            let mut params = filters.params();
            push_limit(&mut params, limit);
            ask::<FailuresReport>(&api, "failures", &params, output).await?
        }
        QueryCommand::Retries { filters, limit } => {
            let mut params = filters.params();
            push_limit(&mut params, limit);
            ask::<RetriesReport>(&api, "retries", &params, output).await?
        }
        QueryCommand::Timeline { id } => {
            let path = format!("/api/v1/audit/remediation-orchestration/{id}");
            let not_found = format!(
                "no remediation with id {id} at {}; the other queries list the ids",
                api.base
            );
            // The service answers the timeline a page at a time.
            let page = |cursor: Option<String>| {
                let mut params = vec![("limit", "1000".to_owned())];
                params.extend(cursor.map(|c| ("cursor", c)));
                params
            };
            let mut report: Timeline = api.get(&path, &page(None), &not_found).await?;
            while let Some(cursor) = report.next_cursor.take() {
                let next: Timeline = api.get(&path, &page(Some(cursor)), &not_found).await?;
                report.timeline.extend(next.timeline);
                report.next_cursor = next.next_cursor;
            }
            render(&report, output)?
        }
    };
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // The reader went away (`| head`): nothing left to say.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(e).context("cannot write to standard output"),
        Ok(()) => Ok(0),
    }
}

/// The service's HTTP API, as far as queries need it.
struct Api {
    http: reqwest::Client,
    /// The base URL without a trailing slash.
    base: String,
}

/// An error body (`application/problem+json`), read leniently.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Problem {
    title: String,
    detail: String,
    errors: Vec<ProblemField>,
}

/// One broken rule of an error body.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ProblemField {
    field: String,
    message: String,
}

impl Problem {
    /// The detail, then each broken rule on its own line.
    fn message(&self) -> String {
        let mut text = if self.detail.is_empty() {
            self.title.clone()
        } else {
            self.detail.clone()
        };
        for e in &self.errors {
            if e.field.is_empty() {
                let _ = write!(text, "\n  {}", e.message);
            } else {
                let _ = write!(text, "\n  {}: {}", e.field, e.message);
            }
        }
        text
    }
}

impl Api {
    fn new(url: &str) -> anyhow::Result<Self> {
        let base = url.trim_end_matches('/').to_owned();
        let parsed = reqwest::Url::parse(&base).map_err(|e| {
            anyhow!(
                "{url:?} is not a URL ({e}): set --url or REMAUDIT_URL to one such as http://127.0.0.1:8085"
            )
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(anyhow!(
                "{url:?} is not an http:// or https:// URL: set --url or REMAUDIT_URL"
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .context("cannot set up the HTTP client")?;
        Ok(Self { http, base })
    }

    /// One analytics answer.
    async fn analytics<T: DeserializeOwned>(
        &self,
        path: &str,
        params: &[(&str, String)],
    ) -> anyhow::Result<T> {
        let not_found = format!(
            "the server at {} has no {path}: it may run a remaudit older than this command",
            self.base
        );
        self.get(path, params, &not_found).await
    }

    /// GETs `path` with `params` and decodes the JSON answer; a 404 becomes `not_found`.
    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        params: &[(&str, String)],
        not_found: &str,
    ) -> anyhow::Result<T> {
        let mut url = reqwest::Url::parse(&format!("{}{path}", self.base))
            .with_context(|| format!("cannot build a URL from {}", self.base))?;
        if !params.is_empty() {
            let mut query = url.query_pairs_mut();
            for (name, value) in params {
                query.append_pair(name, value);
            }
        }
        let response = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| self.send_error(&e))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| self.send_error(&e))?;
        if status.is_success() {
            let mut decoder = serde_json::Deserializer::from_slice(&body);
            return serde_path_to_error::deserialize(&mut decoder).map_err(|e| {
                anyhow!(
                    "the server at {} answered JSON this command cannot read (at {}: {}): are the CLI and the service the same version?",
                    self.base,
                    e.path(),
                    e.inner()
                )
            });
        }
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(anyhow!("{not_found}"));
        }
        match serde_json::from_slice::<Problem>(&body) {
            Ok(problem) if !problem.detail.is_empty() || !problem.title.is_empty() => {
                Err(anyhow!("{}", problem.message()))
            }
            _ => {
                let text = String::from_utf8_lossy(&body);
                let text = clean_text(text.trim(), 200);
                Err(anyhow!(
                    "the server at {} answered {status}{}{text}",
                    self.base,
                    if text.is_empty() { "" } else { ": " }
                ))
            }
        }
    }

    fn send_error(&self, err: &reqwest::Error) -> anyhow::Error {
        let base = &self.base;
        // The innermost cause says what happened ("Connection refused").
        let mut cause: &dyn std::error::Error = err;
        while let Some(inner) = cause.source() {
            cause = inner;
        }
        if err.is_connect() {
            anyhow!(
                "the server at {base} is unreachable ({cause}): is `remaudit serve` running there? set --url or REMAUDIT_URL"
            )
        } else if err.is_timeout() {
            anyhow!(
                "the server at {base} did not answer within {} s: try a shorter window, or check its health",
                REQUEST_TIMEOUT.as_secs()
            )
        } else {
            anyhow!("the request to {base} failed ({cause}); set --url or REMAUDIT_URL")
        }
    }
}

/// An answer that can be printed in every [`Output`] format.
pub trait Report: Serialize {
    /// The table, with its header and notes.
    fn table(&self) -> String;
    /// The rows as CSV, with a header row.
    ///
    /// # Errors
    /// When CSV cannot be written (it always can, into memory).
    fn csv(&self) -> anyhow::Result<String>;
}

/// Renders `report` as `output`; the text ends with a newline.
///
/// # Errors
/// When the report cannot be serialised.
pub fn render(report: &impl Report, output: Output) -> anyhow::Result<String> {
    Ok(match output {
        Output::Table => report.table(),
        Output::Json => {
            let mut text = serde_json::to_string_pretty(report).context("cannot print JSON")?;
            text.push('\n');
            text
        }
        Output::Csv => report.csv()?,
    })
}

/// The post-mortem list: every remediation of one alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Postmortem(pub RemediationList);

/// The slowest remediations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Slowest(pub RemediationList);

/// The answer of `GET /api/v1/audit/remediation-orchestration/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// The summary row.
    pub remediation: StoredAudit,
    /// Every accepted transition, oldest first.
    pub timeline: Vec<EventRecord>,
    /// Where the service's next page of the timeline starts; followed to the end before rendering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A timestamp in RFC 3339, UTC, to the second.
fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A duration for people: `0s`, `850ms`, `4.2s`, `42s`, `4m 10s`, `1h 02m`, `2d 3h`.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn human_duration(seconds: f64) -> String {
    if !seconds.is_finite() {
        return "-".to_owned();
    }
    if seconds < 0.0 {
        return format!("-{}", human_duration(-seconds));
    }
    if seconds == 0.0 {
        return "0s".to_owned();
    }
    let millis = (seconds * 1000.0).round();
    if millis < 1000.0 {
        return format!("{millis}ms");
    }
    let tenths = (seconds * 10.0).round() / 10.0;
    if tenths < 10.0 {
        return format!("{tenths:.1}s");
    }
    let secs = seconds.round() as u64;
    if secs < 60 {
        return format!("{secs}s");
    }
    if secs < 3600 {
        return format!("{}m {:02}s", secs / 60, secs % 60);
    }
    let minutes = (seconds / 60.0).round() as u64;
    if minutes < 24 * 60 {
        return format!("{}h {:02}m", minutes / 60, minutes % 60);
    }
    let hours = (seconds / 3600.0).round() as u64;
    format!("{}d {}h", hours / 24, hours % 24)
}

/// A bucket or window length in its largest whole unit: `15m`, `1h`, `1d`.
fn human_length(seconds: i64) -> String {
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if seconds != 0 && seconds % size == 0 {
            return format!("{}{unit}", seconds / size);
        }
    }
    format!("{seconds}s")
}

/// A rate from 0 to 1 as a percentage, `-` when there is none.
fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0))
}

/// Free text fit for one table cell: control characters become spaces and
/// long text is cut with an ellipsis.
fn clean_text(text: &str, max_chars: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max_chars {
        return flat;
    }
    let mut cut: String = flat.chars().take(max_chars.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// The line that says which window (and filters) an answer covers.
fn window_line(q: &QueryEcho) -> String {
    let w = &q.window;
    let alignment = match w.aligned_to {
        Alignment::None => "exact",
        Alignment::Hour => "aligned to whole hours",
        Alignment::Day => "aligned to whole days",
    };
    let mut line = format!(
        "window {} → {} ({alignment}), source {}",
        ts(w.since),
        ts(w.until),
        q.source
    );
    if let Some(ns) = &q.namespace {
        let _ = write!(line, ", namespace {ns}");
    }
    if let Some(fp) = &q.alert_fingerprint {
        let _ = write!(line, ", alert {fp}");
    }
    if let Some(limit) = q.limit {
        let _ = write!(line, ", limit {limit}");
    }
    line
}

/// A table with the fixed look of this command: plain ASCII, no colours, no
/// wrapping to the terminal's width.
fn new_table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_style(comfy_table::presets::ASCII_MARKDOWN)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    table
}

/// Aligns the given columns to the right (numbers).
fn align_right(table: &mut Table, columns: &[usize]) {
    for &i in columns {
        if let Some(column) = table.column_mut(i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
}

/// The window line, the table (or `empty` in words), and notes, one per line.
fn page(
    query: &QueryEcho,
    extra: &[String],
    body: Option<Table>,
    empty: &str,
    notes: &[String],
) -> String {
    let mut text = window_line(query);
    text.push('\n');
    for line in extra {
        text.push_str(line);
        text.push('\n');
    }
    text.push('\n');
    match body {
        Some(table) => {
            text.push_str(&table.trim_fmt());
            text.push('\n');
            for note in notes {
                text.push('\n');
                text.push_str(note);
            }
            if !notes.is_empty() {
                text.push('\n');
            }
        }
        None => {
            text.push_str(empty);
            text.push('\n');
        }
    }
    text
}

/// CSV text from a header and rows.
fn csv_text<I, R>(header: &[&str], rows: I) -> anyhow::Result<String>
where
    I: IntoIterator<Item = R>,
    R: IntoIterator<Item = String>,
{
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(header).context("cannot write CSV")?;
    for row in rows {
        writer
            .write_record(row.into_iter().collect::<Vec<_>>())
            .context("cannot write CSV")?;
    }
    let bytes = writer.into_inner().context("cannot write CSV")?;
    String::from_utf8(bytes).context("CSV is not UTF-8")
}

fn opt_ts(t: Option<DateTime<Utc>>) -> String {
    t.map(ts).unwrap_or_default()
}

fn opt_num(n: Option<f64>) -> String {
    n.map(|n| n.to_string()).unwrap_or_default()
}

/// Seconds for CSV, to the microsecond (what the store keeps), so that float
/// noise such as `3265.499999999999` reads `3265.5`.
fn csv_seconds(seconds: f64) -> String {
    ((seconds * 1e6).round() / 1e6).to_string()
}

fn opt_text(s: Option<&String>) -> String {
    s.cloned().unwrap_or_default()
}

/// What went wrong with a remediation, in a few words.
fn trouble(r: &RemediationBrief) -> String {
    if r.overall_phase == "failed" || r.failure_phase.is_some() || r.failure_reason.is_some() {
        let phase = r.failure_phase.as_deref().unwrap_or("an unrecorded phase");
        return match &r.failure_reason {
            Some(reason) => format!("failed in {phase}: {}", clean_text(reason, MAX_TEXT_CHARS)),
            None => format!("failed in {phase}"),
        };
    }
    if r.overall_phase == "timeout" || r.timeout_phase.is_some() {
        let phase = r.timeout_phase.as_deref().unwrap_or("an unrecorded phase");
        return match r.timeout_time {
            Some(at) => format!("timed out in {phase} at {}", ts(at)),
            None => format!("timed out in {phase}"),
        };
    }
    String::new()
}

fn duration_cell(seconds: Option<f64>) -> String {
    seconds.map_or_else(|| "-".to_owned(), human_duration)
}

/// The children's durations (or phases, when they have not finished).
fn children(statuses: Option<&serde_json::Value>) -> String {
    let Some(statuses) = statuses else {
        return String::new();
    };
    let Ok(statuses) = serde_json::from_value::<ServiceCrdStatuses>(statuses.clone()) else {
        return String::new();
    };
    let named: [(&str, Option<CrdStatusSnapshot>); 3] = [
        ("processing", statuses.remediation_processing),
        ("analysis", statuses.ai_analysis),
        ("workflow", statuses.workflow_execution),
    ];
    named
        .into_iter()
        .filter_map(|(name, child)| {
            let child = child?;
            Some(match child.completion_time {
                Some(end) => format!(
                    "{name} {}",
                    human_duration(seconds_between(child.start_time, end))
                ),
                None => format!("{name} {}", child.phase),
            })
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[allow(clippy::cast_precision_loss)]
fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    let d = to - from;
    d.num_microseconds()
        .map_or(d.num_seconds() as f64, |us| us as f64 / 1e6)
}

fn remediations_note(n: usize) -> String {
    let noun = if n == 1 {
        "remediation"
    } else {
        "remediations"
    };
    format!("{n} {noun}; `remaudit query timeline ID` shows one's transitions")
}

const LIST_CSV_HEADER: [&str; 13] = [
    "id",
    "namespace",
    "alert_fingerprint",
    "remediation_name",
    "overall_phase",
    "start_time",
    "completion_time",
    "duration_seconds",
    "failure_phase",
    "failure_reason",
    "timeout_phase",
    "timeout_time",
    "timeline",
];

fn list_csv(list: &RemediationList) -> anyhow::Result<String> {
    csv_text(
        &LIST_CSV_HEADER,
        list.items.iter().map(|r| {
            [
                r.id.to_string(),
                r.namespace.clone(),
                r.alert_fingerprint.clone(),
                r.remediation_name.clone(),
                r.overall_phase.clone(),
                ts(r.start_time),
                opt_ts(r.completion_time),
                r.duration_seconds.map(csv_seconds).unwrap_or_default(),
                opt_text(r.failure_phase.as_ref()),
                opt_text(r.failure_reason.as_ref()),
                opt_text(r.timeout_phase.as_ref()),
                opt_ts(r.timeout_time),
                r.timeline.clone(),
            ]
        }),
    )
}

impl Report for Postmortem {
    fn table(&self) -> String {
        let list = &self.0;
        let alert = list.query.alert_fingerprint.as_deref().unwrap_or("(any)");
        let body = (!list.items.is_empty()).then(|| {
            let mut table = new_table(&[
                "ID",
                "NAME",
                "NAMESPACE",
                "PHASE",
                "STARTED",
                "DURATION",
                "WHAT WENT WRONG",
            ]);
            for r in &list.items {
                table.add_row(vec![
                    r.id.to_string(),
                    r.remediation_name.clone(),
                    r.namespace.clone(),
                    r.overall_phase.clone(),
                    ts(r.start_time),
                    duration_cell(r.duration_seconds),
                    trouble(r),
                ]);
            }
            align_right(&mut table, &[0, 5]);
            table
        });
        page(
            &list.query,
            &[],
            body,
            &format!("no remediations for alert {alert} in this window"),
            &[remediations_note(list.items.len())],
        )
    }

    fn csv(&self) -> anyhow::Result<String> {
        list_csv(&self.0)
    }
}

impl Report for Slowest {
    fn table(&self) -> String {
        let list = &self.0;
        let body = (!list.items.is_empty()).then(|| {
            let mut table = new_table(&[
                "ID",
                "ALERT",
                "NAME",
                "NAMESPACE",
                "PHASE",
                "STARTED",
                "DURATION",
                "CHILDREN",
            ]);
            for r in &list.items {
                table.add_row(vec![
                    r.id.to_string(),
                    r.alert_fingerprint.clone(),
                    r.remediation_name.clone(),
                    r.namespace.clone(),
                    r.overall_phase.clone(),
                    ts(r.start_time),
                    duration_cell(r.duration_seconds),
                    children(r.service_crd_statuses.as_ref()),
                ]);
            }
            align_right(&mut table, &[0, 6]);
            table
        });
        page(
            &list.query,
            &[],
            body,
            "no finished remediations in this window",
            &[remediations_note(list.items.len())],
        )
    }

    fn csv(&self) -> anyhow::Result<String> {
        list_csv(&self.0)
    }
}

fn counts_cells(c: &OutcomeCounts) -> [String; 7] {
    [
        c.started.to_string(),
        c.in_progress.to_string(),
        c.finished.to_string(),
        c.completed.to_string(),
        c.failed.to_string(),
        c.timed_out.to_string(),
        percent(c.success_rate),
    ]
}

fn counts_csv(c: &OutcomeCounts) -> [String; 7] {
    [
        c.started.to_string(),
        c.in_progress.to_string(),
        c.finished.to_string(),
        c.completed.to_string(),
        c.failed.to_string(),
        c.timed_out.to_string(),
        opt_num(c.success_rate),
    ]
}

impl Report for SuccessRateReport {
    fn table(&self) -> String {
        let extra: Vec<String> = self
            .bucket_seconds
            .map(|s| format!("in buckets of {}", human_length(s)))
            .into_iter()
            .collect();
        let body = (self.totals.started > 0).then(|| {
            let mut table = new_table(&[
                "PERIOD",
                "STARTED",
                "IN PROGRESS",
                "FINISHED",
                "COMPLETED",
                "FAILED",
                "TIMED OUT",
                "SUCCESS",
            ]);
            let mut total = vec!["whole window".to_owned()];
            total.extend(counts_cells(&self.totals));
            table.add_row(total);
            for point in &self.series {
                let mut row = vec![ts(point.since)];
                row.extend(counts_cells(&point.counts));
                table.add_row(row);
            }
            align_right(&mut table, &[1, 2, 3, 4, 5, 6, 7]);
            table
        });
        let notes = vec![
            "success = completed / finished; in-progress remediations are not counted".to_owned(),
        ];
        page(
            &self.query,
            &extra,
            body,
            "no remediations started in this window",
            &notes,
        )
    }

    fn csv(&self) -> anyhow::Result<String> {
        let window = &self.query.window;
        let mut rows = Vec::with_capacity(self.series.len() + 1);
        let mut total = vec!["total".to_owned(), ts(window.since), ts(window.until)];
        total.extend(counts_csv(&self.totals));
        rows.push(total);
        for point in &self.series {
            let mut row = vec!["bucket".to_owned(), ts(point.since), ts(point.until)];
            row.extend(counts_csv(&point.counts));
            rows.push(row);
        }
        // Nothing started: only the header, as for every empty answer.
        if self.totals.started == 0 {
            rows.clear();
        }
        csv_text(
            &[
                "period",
                "since",
                "until",
                "started",
                "in_progress",
                "finished",
                "completed",
                "failed",
                "timed_out",
                "success_rate",
            ],
            rows,
        )
    }
}

/// How close the percentiles are, in words.
fn accuracy_note(relative_error: f64) -> String {
    if relative_error <= 0.0 {
        "percentiles are exact".to_owned()
    } else {
        let pct = relative_error * 100.0;
        let pct = if (pct - pct.round()).abs() < 1e-9 {
            format!("{pct:.0}")
        } else {
            format!("{pct:.2}")
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_owned()
        };
        format!("percentiles within {pct}% of exact; averages are exact")
    }
}

impl Report for DurationsReport {
    fn table(&self) -> String {
        let body = (!self.phases.is_empty()).then(|| {
            let mut table = new_table(&["FINAL PHASE", "COUNT", "AVG", "P50", "P95", "P99"]);
            for p in &self.phases {
                table.add_row(vec![
                    p.final_phase.clone(),
                    p.count.to_string(),
                    human_duration(p.avg_seconds),
                    human_duration(p.p50_seconds),
                    human_duration(p.p95_seconds),
                    human_duration(p.p99_seconds),
                ]);
            }
            align_right(&mut table, &[1, 2, 3, 4, 5]);
            table
        });
        page(
            &self.query,
            &[],
            body,
            "no finished remediations in this window",
            &[accuracy_note(self.relative_error)],
        )
    }

    fn csv(&self) -> anyhow::Result<String> {
        csv_text(
            &[
                "final_phase",
                "count",
                "avg_seconds",
                "p50_seconds",
                "p95_seconds",
                "p99_seconds",
                "relative_error",
            ],
            self.phases.iter().map(|p| {
                [
                    p.final_phase.clone(),
                    p.count.to_string(),
                    csv_seconds(p.avg_seconds),
                    csv_seconds(p.p50_seconds),
                    csv_seconds(p.p95_seconds),
                    csv_seconds(p.p99_seconds),
                    self.relative_error.to_string(),
                ]
            }),
        )
    }
}

fn outcome_words(outcome: &str) -> &str {
    match outcome {
        "timeout" => "timed out",
        other => other,
    }
}

impl Report for FailuresReport {
    fn table(&self) -> String {
        let body = (!self.items.is_empty()).then(|| {
            let mut table = new_table(&["OUTCOME", "PHASE", "COUNT", "ALERTS", "SAMPLE REASONS"]);
            for g in &self.items {
                let reasons = g
                    .sample_reasons
                    .iter()
                    .map(|r| clean_text(r, MAX_TEXT_CHARS))
                    .collect::<Vec<_>>()
                    .join("\n");
                table.add_row(vec![
                    outcome_words(&g.outcome).to_owned(),
                    g.phase
                        .clone()
                        .unwrap_or_else(|| "(not recorded)".to_owned()),
                    g.count.to_string(),
                    g.unique_alerts.to_string(),
                    reasons,
                ]);
            }
            align_right(&mut table, &[2, 3]);
            table
        });
        let total: u64 = self.items.iter().map(|g| g.count).sum();
        let noun = if total == 1 {
            "remediation"
        } else {
            "remediations"
        };
        page(
            &self.query,
            &[],
            body,
            "no failures in this window",
            &[format!(
                "{total} {noun} failed or timed out in the groups listed; ALERTS counts distinct alerts"
            )],
        )
    }

    fn csv(&self) -> anyhow::Result<String> {
        csv_text(
            &[
                "outcome",
                "phase",
                "count",
                "unique_alerts",
                "sample_reasons",
            ],
            self.items.iter().map(|g| {
                [
                    g.outcome.clone(),
                    opt_text(g.phase.as_ref()),
                    g.count.to_string(),
                    g.unique_alerts.to_string(),
                    g.sample_reasons.join(" | "),
                ]
            }),
        )
    }
}

fn progression(phases: &[String]) -> String {
    let mut shown = phases
        .iter()
        .take(MAX_PROGRESSION)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(" → ");
    if phases.len() > MAX_PROGRESSION {
        let _ = write!(shown, " (+{} more)", phases.len() - MAX_PROGRESSION);
    }
    shown
}

impl Report for RetriesReport {
    fn table(&self) -> String {
        let alerts = if self.alerts == 1 { "alert" } else { "alerts" };
        let attempts = if self.attempts == 1 {
            "remediation"
        } else {
            "remediations"
        };
        let extra = [format!(
            "{} {alerts} remediated, {} of them more than once; {} {attempts} in all",
            self.alerts, self.alerts_retried, self.attempts
        )];
        let body = (!self.items.is_empty()).then(|| {
            let mut table = new_table(&[
                "ALERT",
                "ATTEMPTS",
                "COMPLETED",
                "FAILED",
                "TIMED OUT",
                "IN PROGRESS",
                "LAST ATTEMPT",
                "RESOLVED",
                "PHASES, OLDEST FIRST",
            ]);
            for g in &self.items {
                table.add_row(vec![
                    g.alert_fingerprint.clone(),
                    g.attempts.to_string(),
                    g.completed.to_string(),
                    g.failed.to_string(),
                    g.timed_out.to_string(),
                    g.in_progress.to_string(),
                    ts(g.last_attempt),
                    if g.eventually_successful { "yes" } else { "no" }.to_owned(),
                    progression(&g.phase_progression),
                ]);
            }
            align_right(&mut table, &[1, 2, 3, 4, 5]);
            table
        });
        page(
            &self.query,
            &extra,
            body,
            "no alerts remediated more than once in this window",
            &[],
        )
    }

    fn csv(&self) -> anyhow::Result<String> {
        csv_text(
            &[
                "alert_fingerprint",
                "attempts",
                "completed",
                "failed",
                "timed_out",
                "in_progress",
                "last_attempt",
                "eventually_successful",
                "phase_progression",
            ],
            self.items.iter().map(|g| {
                [
                    g.alert_fingerprint.clone(),
                    g.attempts.to_string(),
                    g.completed.to_string(),
                    g.failed.to_string(),
                    g.timed_out.to_string(),
                    g.in_progress.to_string(),
                    ts(g.last_attempt),
                    g.eventually_successful.to_string(),
                    g.phase_progression.join(" "),
                ]
            }),
        )
    }
}

impl Report for Timeline {
    fn table(&self) -> String {
        let r = &self.remediation;
        let mut text = format!(
            "remediation {}: {} in namespace {}, alert {}\n",
            r.id, r.remediation_name, r.namespace, r.alert_fingerprint
        );
        let _ = write!(
            text,
            "phase {}, started {}",
            r.overall_phase,
            ts(r.start_time)
        );
        if let Some(end) = r.completion_time {
            let _ = write!(
                text,
                ", ended {} (after {})",
                ts(end),
                human_duration(seconds_between(r.start_time, end))
            );
        }
        text.push('\n');
        if let Some(phase) = &r.failure_phase {
            let _ = write!(text, "failed in {phase}");
            if let Some(reason) = &r.failure_reason {
                let _ = write!(text, ": {}", clean_text(reason, 200));
            }
            text.push('\n');
        } else if let Some(reason) = &r.failure_reason {
            let _ = writeln!(text, "failed: {}", clean_text(reason, 200));
        }
        if let Some(phase) = &r.timeout_phase {
            let _ = write!(text, "timed out in {phase}");
            if let Some(at) = r.timeout_time {
                let _ = write!(text, " at {}", ts(at));
            }
            text.push('\n');
        }
        text.push('\n');
        if self.timeline.is_empty() {
            text.push_str("no transitions stored for this remediation\n");
            return text;
        }
        let mut table = new_table(&["EVENT TIME", "PHASE", "AFTER START", "RECEIVED", "EVENT ID"]);
        for e in &self.timeline {
            table.add_row(vec![
                ts(e.event_time),
                e.overall_phase.clone(),
                human_duration(seconds_between(r.start_time, e.event_time)),
                ts(e.received_at),
                e.event_id.to_string(),
            ]);
        }
        align_right(&mut table, &[2]);
        text.push_str(&table.trim_fmt());
        let n = self.timeline.len();
        let _ = write!(
            text,
            "\n\n{n} {}, oldest first\n",
            if n == 1 { "transition" } else { "transitions" }
        );
        text
    }

    fn csv(&self) -> anyhow::Result<String> {
        let start = self.remediation.start_time;
        csv_text(
            &[
                "event_id",
                "overall_phase",
                "event_time",
                "seconds_after_start",
                "received_at",
            ],
            self.timeline.iter().map(|e| {
                [
                    e.event_id.to_string(),
                    e.overall_phase.clone(),
                    ts(e.event_time),
                    csv_seconds(seconds_between(start, e.event_time)),
                    ts(e.received_at),
                ]
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use remaudit_model::analytics::{
        FailureGroup, PhaseDurations, RetryGroup, SeriesPoint, Window,
    };

    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("timestamp")
    }

    fn query(aligned_to: Alignment, source: &str) -> QueryEcho {
        QueryEcho {
            window: Window {
                since: t("2026-11-20T08:00:00Z"),
                until: t("2026-11-20T14:00:00Z"),
                aligned_to,
            },
            namespace: None,
            alert_fingerprint: None,
            limit: None,
            source: source.to_owned(),
        }
    }

    fn brief(
        id: i64,
        name: &str,
        phase: &str,
        start: &str,
        seconds: Option<f64>,
    ) -> RemediationBrief {
        let start = t(start);
        RemediationBrief {
            id,
            namespace: "prod".to_owned(),
            alert_fingerprint: "mem-pressure-prod-123".to_owned(),
            remediation_name: name.to_owned(),
            overall_phase: phase.to_owned(),
            start_time: start,
            completion_time: seconds.map(|s| {
                #[allow(clippy::cast_possible_truncation)]
                let ms = (s * 1000.0) as i64;
                start + chrono::Duration::milliseconds(ms)
            }),
            duration_seconds: seconds,
            failure_phase: None,
            failure_reason: None,
            timeout_phase: None,
            timeout_time: None,
            service_crd_statuses: None,
            timeline: RemediationBrief::timeline_path(id),
        }
    }

    fn remediations() -> RemediationList {
        let mut failed = brief(2, "rr-mem-2", "failed", "2026-11-20T09:10:00Z", Some(690.0));
        failed.failure_phase = Some("executing".to_owned());
        failed.failure_reason = Some(
            "pod OOMKilled\nwhile restarting deployment/api: memory limit 512Mi reached".to_owned(),
        );
        let mut timed_out = brief(
            3,
            "rr-mem-3",
            "timeout",
            "2026-11-20T10:00:00Z",
            Some(3720.0),
        );
        timed_out.timeout_phase = Some("analyzing".to_owned());
        timed_out.timeout_time = Some(t("2026-11-20T11:02:00Z"));
        let mut q = query(Alignment::Hour, "rows");
        q.alert_fingerprint = Some("mem-pressure-prod-123".to_owned());
        q.limit = Some(50);
        RemediationList {
            query: q,
            items: vec![
                brief(
                    1,
                    "rr-mem-1",
                    "completed",
                    "2026-11-20T08:30:00Z",
                    Some(250.0),
                ),
                failed,
                timed_out,
                brief(4, "rr-mem-4", "executing", "2026-11-20T13:00:00Z", None),
            ],
        }
    }

    fn snapshot(name: &str, text: &str) {
        insta::with_settings!({ snapshot_path => "../tests/cli/snapshots" }, {
            insta::assert_snapshot!(name, text);
        });
    }

    fn all_formats(name: &str, report: &impl Report) {
        for (format, output) in [
            ("table", Output::Table),
            ("json", Output::Json),
            ("csv", Output::Csv),
        ] {
            let text = render(report, output).expect("render");
            snapshot(&format!("{name}_{format}"), &text);
        }
    }

    #[test]
    fn durations_read_like_people_write_them() {
        let cases = [
            (0.0, "0s"),
            (0.000_4, "0ms"),
            (0.85, "850ms"),
            (0.999_6, "1.0s"),
            (4.24, "4.2s"),
            (9.96, "10s"),
            (42.4, "42s"),
            (59.6, "1m 00s"),
            (250.0, "4m 10s"),
            (3599.6, "1h 00m"),
            (3720.0, "1h 02m"),
            (86_399.0, "1d 0h"),
            (183_600.0, "2d 3h"),
            (-5.0, "-5.0s"),
            (f64::NAN, "-"),
        ];
        for (seconds, text) in cases {
            assert_eq!(human_duration(seconds), text, "{seconds}");
        }
        assert_eq!(human_length(3600), "1h");
        assert_eq!(human_length(900), "15m");
        assert_eq!(human_length(172_800), "2d");
        assert_eq!(human_length(90), "90s");
        assert_eq!(percent(Some(0.934_2)), "93.4%");
        assert_eq!(percent(Some(1.0)), "100.0%");
        assert_eq!(percent(None), "-");
        assert_eq!(accuracy_note(0.0), "percentiles are exact");
        assert_eq!(csv_seconds(3_265.499_999_999_999), "3265.5");
        assert_eq!(csv_seconds(0.000_001_4), "0.000001");
        assert_eq!(csv_seconds(250.0), "250");
        assert_eq!(
            accuracy_note(0.01),
            "percentiles within 1% of exact; averages are exact"
        );
        assert_eq!(
            accuracy_note(0.005),
            "percentiles within 0.5% of exact; averages are exact"
        );
    }

    #[test]
    fn cell_text_is_flattened_and_cut() {
        assert_eq!(clean_text("a\nb\tc", 10), "a b c");
        assert_eq!(clean_text("abcdefghij", 5), "abcd…");
        assert_eq!(clean_text("ééééé", 5), "ééééé");
    }

    #[test]
    fn problems_name_each_broken_rule() {
        let problem: Problem = serde_json::from_value(serde_json::json!({
            "type": "urn:remaudit:problem:invalid-query",
            "title": "Invalid query parameters",
            "status": 400,
            "detail": "one or more query parameters are invalid; see errors",
            "errors": [
                {"field": "window", "rule": "format", "message": "must be a whole number followed by m, h, d or w"},
                {"field": "", "rule": "query", "message": "unknown field `x`"}
            ]
        }))
        .expect("problem");
        assert_eq!(
            problem.message(),
            "one or more query parameters are invalid; see errors\n  window: must be a whole number followed by m, h, d or w\n  unknown field `x`"
        );
    }

    #[test]
    fn postmortem() {
        all_formats("postmortem", &Postmortem(remediations()));
    }

    #[test]
    fn slowest() {
        let mut list = remediations();
        list.query.alert_fingerprint = None;
        list.query.namespace = Some("prod".to_owned());
        list.query.limit = Some(3);
        list.items.truncate(3);
        list.items.reverse();
        list.items[0].service_crd_statuses = Some(serde_json::json!({
            "remediationProcessing": {"phase": "completed", "startTime": "2026-11-20T10:00:00Z", "completionTime": "2026-11-20T10:00:12Z", "success": true},
            "aiAnalysis": {"phase": "analyzing", "startTime": "2026-11-20T10:00:12Z", "success": false}
        }));
        all_formats("slowest", &Slowest(list));
    }

    fn counts(completed: u64, failed: u64, timed_out: u64, in_progress: u64) -> OutcomeCounts {
        let mut c = OutcomeCounts::default();
        c.add(Some("completed"), completed);
        c.add(Some("failed"), failed);
        c.add(Some("timeout"), timed_out);
        c.add(None, in_progress);
        c.with_rate()
    }

    #[test]
    fn success_rate_with_a_series() {
        let point = |since: &str, until: &str, c| SeriesPoint {
            since: t(since),
            until: t(until),
            counts: c,
        };
        let report = SuccessRateReport {
            query: query(Alignment::None, "rollup"),
            totals: counts(140, 7, 3, 2),
            bucket_seconds: Some(7200),
            series: vec![
                point(
                    "2026-11-20T08:00:00Z",
                    "2026-11-20T10:00:00Z",
                    counts(70, 2, 1, 0),
                ),
                point(
                    "2026-11-20T10:00:00Z",
                    "2026-11-20T12:00:00Z",
                    counts(70, 5, 2, 2),
                ),
                point(
                    "2026-11-20T12:00:00Z",
                    "2026-11-20T14:00:00Z",
                    counts(0, 0, 0, 0),
                ),
            ],
        };
        all_formats("success_rate_series", &report);
    }

    #[test]
    fn success_rate_totals_only() {
        let report = SuccessRateReport {
            query: query(Alignment::Day, "rollup"),
            totals: counts(0, 0, 0, 3),
            bucket_seconds: None,
            series: Vec::new(),
        };
        snapshot("success_rate_totals_table", &report.table());
        snapshot("success_rate_totals_csv", &report.csv().expect("csv"));
    }

    #[test]
    fn durations() {
        let phase = |name: &str, count, avg, p50, p95, p99| PhaseDurations {
            final_phase: name.to_owned(),
            count,
            avg_seconds: avg,
            p50_seconds: p50,
            p95_seconds: p95,
            p99_seconds: p99,
        };
        let report = DurationsReport {
            query: query(Alignment::Hour, "rollup"),
            relative_error: 0.01,
            phases: vec![
                phase("completed", 140, 251.3, 248.9, 412.0, 3725.0),
                phase("failed", 7, 690.0, 612.4, 1203.7, 1210.0),
                phase("timeout", 1, 0.85, 0.85, 0.85, 0.85),
                phase("all", 148, 272.2, 250.1, 1190.2, 3725.0),
            ],
        };
        all_formats("durations", &report);
        let exact = DurationsReport {
            relative_error: 0.0,
            ..report
        };
        assert!(exact.table().contains("percentiles are exact"));
    }

    #[test]
    fn failures() {
        let report = FailuresReport {
            query: query(Alignment::Hour, "rows"),
            items: vec![
                FailureGroup {
                    outcome: "failed".to_owned(),
                    phase: Some("executing".to_owned()),
                    count: 5,
                    unique_alerts: 2,
                    sample_reasons: vec![
                        "pod OOMKilled".to_owned(),
                        "image pull backoff: registry.example/api:1.2".to_owned(),
                    ],
                },
                FailureGroup {
                    outcome: "timeout".to_owned(),
                    phase: None,
                    count: 1,
                    unique_alerts: 1,
                    sample_reasons: Vec::new(),
                },
            ],
        };
        all_formats("failures", &report);
    }

    #[test]
    fn retries() {
        let phases: Vec<String> = [
            "failed",
            "timeout",
            "failed",
            "failed",
            "failed",
            "failed",
            "failed",
            "failed",
            "failed",
            "completed",
        ]
        .map(str::to_owned)
        .to_vec();
        let report = RetriesReport {
            query: query(Alignment::Hour, "rows"),
            alerts: 4,
            alerts_retried: 2,
            attempts: 14,
            items: vec![
                RetryGroup {
                    alert_fingerprint: "disk-full-db-7".to_owned(),
                    attempts: 10,
                    completed: 1,
                    failed: 8,
                    timed_out: 1,
                    in_progress: 0,
                    last_attempt: t("2026-11-20T13:40:00Z"),
                    eventually_successful: true,
                    phase_progression: phases,
                },
                RetryGroup {
                    alert_fingerprint: "mem-pressure-prod-123".to_owned(),
                    attempts: 2,
                    completed: 0,
                    failed: 1,
                    timed_out: 0,
                    in_progress: 1,
                    last_attempt: t("2026-11-20T13:00:00Z"),
                    eventually_successful: false,
                    phase_progression: vec!["failed".to_owned(), "executing".to_owned()],
                },
            ],
        };
        all_formats("retries", &report);
    }

    #[test]
    fn empty_answers_say_so() {
        let mut list = remediations();
        list.items.clear();
        let postmortem = Postmortem(list.clone());
        assert_eq!(
            postmortem.table(),
            "window 2026-11-20T08:00:00Z → 2026-11-20T14:00:00Z (aligned to whole hours), source rows, alert mem-pressure-prod-123, limit 50\n\nno remediations for alert mem-pressure-prod-123 in this window\n"
        );
        assert_eq!(postmortem.csv().expect("csv").lines().count(), 1);
        assert!(
            render(&postmortem, Output::Json)
                .expect("json")
                .contains("\"items\": []")
        );
        assert!(
            Slowest(list)
                .table()
                .ends_with("no finished remediations in this window\n")
        );
        let failures = FailuresReport {
            query: query(Alignment::Hour, "rows"),
            items: Vec::new(),
        };
        assert!(failures.table().ends_with("\nno failures in this window\n"));
        assert_eq!(
            failures.csv().expect("csv"),
            "outcome,phase,count,unique_alerts,sample_reasons\n"
        );
        let rates = SuccessRateReport {
            query: query(Alignment::Hour, "rollup"),
            totals: OutcomeCounts::default(),
            bucket_seconds: None,
            series: Vec::new(),
        };
        assert!(
            rates
                .table()
                .ends_with("\nno remediations started in this window\n")
        );
        assert_eq!(rates.csv().expect("csv").lines().count(), 1);
        let durations = DurationsReport {
            query: query(Alignment::Hour, "rollup"),
            relative_error: 0.0,
            phases: Vec::new(),
        };
        assert!(
            durations
                .table()
                .ends_with("\nno finished remediations in this window\n")
        );
        assert_eq!(durations.csv().expect("csv").lines().count(), 1);
        let retries = RetriesReport {
            query: query(Alignment::Hour, "rows"),
            alerts: 0,
            alerts_retried: 0,
            attempts: 0,
            items: Vec::new(),
        };
        assert!(
            retries
                .table()
                .contains("0 alerts remediated, 0 of them more than once; 0 remediations in all")
        );
        assert!(
            retries
                .table()
                .ends_with("\nno alerts remediated more than once in this window\n")
        );
        assert_eq!(retries.csv().expect("csv").lines().count(), 1);
    }

    #[test]
    fn timeline() {
        let start = t("2026-11-20T09:10:00Z");
        let event = |n: u128, phase: &str, at: &str| EventRecord {
            event_id: uuid::Uuid::from_u128(n),
            overall_phase: phase.to_owned(),
            event_time: t(at),
            received_at: t(at) + chrono::Duration::milliseconds(40),
            record: serde_json::json!({"overall_phase": phase}),
        };
        let report = Timeline {
            remediation: StoredAudit {
                id: 2,
                namespace: "prod".to_owned(),
                alert_fingerprint: "mem-pressure-prod-123".to_owned(),
                remediation_name: "rr-mem-2".to_owned(),
                overall_phase: "failed".to_owned(),
                start_time: start,
                completion_time: Some(t("2026-11-20T09:21:30Z")),
                remediation_processing_name: None,
                ai_analysis_name: None,
                workflow_execution_name: None,
                kubernetes_execution_name: None,
                service_crd_statuses: None,
                timeout_phase: None,
                timeout_time: None,
                failure_phase: Some("executing".to_owned()),
                failure_reason: Some("pod OOMKilled".to_owned()),
                duplicate_count: 0,
                last_duplicate_time: None,
                retention_expiry_time: None,
                legal_hold: false,
                event_id: uuid::Uuid::from_u128(4),
                event_time: t("2026-11-20T09:21:30Z"),
                created_at: t("2026-11-20T09:10:00Z"),
                updated_at: t("2026-11-20T09:21:30Z"),
            },
            timeline: vec![
                event(1, "pending", "2026-11-20T09:10:00Z"),
                event(2, "processing", "2026-11-20T09:10:05Z"),
                event(3, "executing", "2026-11-20T09:12:40Z"),
                event(4, "failed", "2026-11-20T09:21:30Z"),
            ],
            next_cursor: None,
        };
        all_formats("timeline", &report);
    }
}
