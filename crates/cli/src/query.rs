//! `remaudit query`: the analytics endpoints of a running service, shown as a
//! table, as JSON or as CSV.
//!
//! This file holds the arguments and [`run`], which asks the service;
//! printing is apart from fetching: [`render`] has what every answer's text
//! shares and [`reports`] what each answer shows, as pure functions of the
//! decoded answer, tested without a server.

mod render;
mod reports;

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use remaudit_model::analytics::{
    DurationsReport, FailuresReport, RetriesReport, SuccessRateReport,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use render::{Report, clean_text, render};
use reports::{Postmortem, Slowest, Timeline};

/// How long a query may take before the CLI gives up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
