//! `remaudit query`: the analytics endpoints of a running service, shown as a
//! table, as JSON or as CSV.
//!
//! This file holds the arguments and [`run`], which asks the service;
//! printing is apart from fetching: [`render`](mod@render) has what every answer's text
//! shares and [`reports`](mod@reports) what each answer shows, as pure functions of the
//! decoded answer, tested without a server.

pub(crate) mod render;
mod reports;

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use chrono::{DateTime, Datelike as _, Utc};
use remaudit_api::analytics::{AnalyticsParams, Endpoint as Spec, Window};
use remaudit_api::audit::TimelineResponse;
use remaudit_api::{Problem, paths};
use remaudit_client::{ApiClient, ApiError};
use remaudit_model::analytics::{parse_window, window_ends};

use crate::credentials::CredentialArgs;
use render::{Report, clean_text, render};
use reports::{Postmortem, Slowest};

/// How long a query may take before the CLI gives up.
const REQUEST_TIMEOUT: Duration = Duration::from_mins(1);
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
    #[command(flatten)]
    credentials: CredentialArgs,
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

/// Where the archive is, for the questions that can also read it.
#[derive(Debug, Default, clap::Args)]
pub struct ArchiveFlags {
    /// Also read the archive (the Parquet files retention wrote); needs
    /// `--archive-url` or `REMAUDIT_ARCHIVE_URL`.
    #[arg(long)]
    archive: bool,
    /// Where the archive is, for --archive: `file:///dir` or `s3://bucket/prefix`.
    #[arg(long, env = "REMAUDIT_ARCHIVE_URL", value_name = "URL")]
    archive_url: Option<String>,
    /// For --archive: the database whose batches to read (its installation
    /// id), when the archive holds more than one's.
    #[arg(long, value_name = "ID")]
    installation: Option<String>,
}

impl ArchiveFlags {
    /// The archive to read, when --archive asks for one.
    async fn open(&self) -> anyhow::Result<Option<remaudit_archive::ArchiveQuery>> {
        if !self.archive {
            return Ok(None);
        }
        let Some(url) = &self.archive_url else {
            return Err(anyhow!(
                "--archive needs the archive's location: set --archive-url or REMAUDIT_ARCHIVE_URL"
            ));
        };
        let archive = remaudit_archive::ArchiveQuery::open(
            url,
            self.installation.as_deref(),
            remaudit_archive::Limits::default(),
        )
        .await
        .context("cannot read the archive")?;
        if archive.skipped() > 0 {
            eprintln!(
                "remaudit query: {} archive batches are JSON Lines and were not searched; \
                 remediations archived before the archive's files became Parquet are not found",
                archive.skipped()
            );
        }
        Ok(Some(archive))
    }
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
        /// Also list the alert's archived remediations, merged with the live ones.
        #[command(flatten)]
        archive: ArchiveFlags,
    },
    /// How many remediations completed, failed or timed out.
    SuccessRate {
        #[command(flatten)]
        filters: Filters,
        /// Also break the window into buckets of this length, such as 1h or 1d.
        #[arg(long, value_name = "LENGTH")]
        bucket: Option<String>,
        /// Also count the archived remediations of the window.
        #[command(flatten)]
        archive: ArchiveFlags,
    },
    /// How long remediations took, by final phase.
    Durations {
        #[command(flatten)]
        filters: Filters,
        /// Also count the archived remediations of the window.
        #[command(flatten)]
        archive: ArchiveFlags,
    },
    /// The remediations that took longest.
    Slowest {
        #[command(flatten)]
        filters: Filters,
        /// Most remediations listed.
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        /// Also list the archived remediations of the window.
        #[command(flatten)]
        archive: ArchiveFlags,
    },
    /// Failures and timeouts, grouped by the phase they happened in.
    Failures {
        #[command(flatten)]
        filters: Filters,
        /// Most groups listed.
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        /// Also count the archived remediations of the window.
        #[command(flatten)]
        archive: ArchiveFlags,
    },
    /// Alerts remediated more than once.
    Retries {
        #[command(flatten)]
        filters: Filters,
        /// Most alerts listed.
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        /// Also count the archived remediations of the window.
        #[command(flatten)]
        archive: ArchiveFlags,
    },
    /// One remediation and every transition it went through.
    Timeline {
        /// The remediation's id (as the other queries list it).
        id: i64,
        /// Look in the archive when the service no longer holds it.
        #[command(flatten)]
        archive: ArchiveFlags,
    },
    /// The admin log: every legal hold set or cleared, soft delete and
    /// retention run, with who, when and why, newest first (needs the admin role).
    AdminLog(crate::admin::AdminLogArgs),
}

impl WindowArgs {
    /// The window as the service's query parameters.
    fn params(&self) -> AnalyticsParams {
        AnalyticsParams {
            since: self.since.clone(),
            until: self.until.clone(),
            window: self.window.clone(),
            namespace: self.namespace.clone(),
            exact: self.exact.then(|| "true".to_owned()),
            ..AnalyticsParams::default()
        }
    }
}

impl Filters {
    /// The window and the alert filter as the service's query parameters.
    fn params(&self) -> AnalyticsParams {
        AnalyticsParams {
            alert_fingerprint: self.alert_fingerprint.clone(),
            ..self.window.params()
        }
    }
}

impl Filters {
    /// What a question over these filters asked, for `--archive`.
    fn asked<'a>(
        &'a self,
        limit: Option<u32>,
        bucket: Option<&'a str>,
        spec: &'a Spec,
    ) -> Asked<'a> {
        Asked {
            window: &self.window,
            alert_fingerprint: self.alert_fingerprint.as_deref(),
            limit,
            bucket,
            spec,
        }
    }
}

/// `params` with `limit`, when one is given.
fn with_limit(params: AnalyticsParams, limit: Option<u32>) -> AnalyticsParams {
    match limit {
        Some(limit) => params.with_limit(limit),
        None => params,
    }
}

/// Renders one analytics answer, or explains why there is none; `path` is
/// the endpoint asked.
fn show<R: Report>(
    api: &ApiClient,
    path: &str,
    answer: Result<R, ApiError>,
    output: Output,
) -> anyhow::Result<String> {
    match answer {
        Ok(report) => render(&report, output),
        Err(err) => {
            let not_found = format!(
                "the server at {} has no {path}: it may run a remaudit older than this command",
                api.base_url()
            );
            Err(explain(api, err, &not_found))
        }
    }
}

/// Runs the command; returns the exit status.
///
/// # Errors
/// When the server is unreachable, refuses the query (its explanation is in
/// the error), or answers something that cannot be read.
pub async fn run(args: QueryArgs) -> anyhow::Result<u8> {
    let api = client(&args.url, &args.credentials)?;
    let output = args.output;
    let text = match args.command {
        QueryCommand::Postmortem {
            fingerprint,
            window,
            limit,
            archive,
        } => {
            let archive = archive.open().await?;
            let params = AnalyticsParams {
                alert_fingerprint: Some(fingerprint.clone()),
                ..window.params()
            };
            let asked = Asked {
                window: &window,
                alert_fingerprint: Some(&fingerprint),
                limit,
                bucket: None,
                spec: &Spec::POSTMORTEM,
            };
            let answer = with_archive(
                &api,
                archive.as_ref(),
                api.postmortem(&with_limit(params, limit)).await,
                &asked,
                |r| (r.query.clone(), None),
                async |a, q, rows| a.postmortem_over(q, rows).await,
            )
            .await?;
            show(
                &api,
                paths::ANALYTICS_POSTMORTEM,
                answer.map(Postmortem),
                output,
            )?
        }
        QueryCommand::SuccessRate {
            filters,
            bucket,
            archive,
        } => {
            let archive = archive.open().await?;
            let params = AnalyticsParams {
                bucket: bucket.clone(),
                ..filters.params()
            };
            let answer = with_archive(
                &api,
                archive.as_ref(),
                api.success_rate(&params).await,
                &filters.asked(None, bucket.as_deref(), &Spec::SUCCESS_RATE),
                |r| (r.query.clone(), r.bucket_seconds),
                async |a, q, rows| a.success_rate(q, rows).await,
            )
            .await?;
            show(&api, paths::ANALYTICS_SUCCESS_RATE, answer, output)?
        }
        QueryCommand::Durations { filters, archive } => {
            let archive = archive.open().await?;
            let answer = with_archive(
                &api,
                archive.as_ref(),
                api.durations(&filters.params()).await,
                &filters.asked(None, None, &Spec::DURATIONS),
                |r| (r.query.clone(), None),
                async |a, q, rows| a.durations(q, rows).await,
            )
            .await?;
            show(&api, paths::ANALYTICS_DURATIONS, answer, output)?
        }
        QueryCommand::Slowest {
            filters,
            limit,
            archive,
        } => {
            let archive = archive.open().await?;
            let answer = with_archive(
                &api,
                archive.as_ref(),
                api.slowest(&with_limit(filters.params(), limit)).await,
                &filters.asked(limit, None, &Spec::SLOWEST),
                |r| (r.query.clone(), None),
                async |a, q, rows| a.slowest(q, rows).await,
            )
            .await?;
            show(&api, paths::ANALYTICS_SLOWEST, answer.map(Slowest), output)?
        }
        QueryCommand::Failures {
            filters,
            limit,
            archive,
        } => {
            let archive = archive.open().await?;
            let answer = with_archive(
                &api,
                archive.as_ref(),
                api.failures(&with_limit(filters.params(), limit)).await,
                &filters.asked(limit, None, &Spec::FAILURES),
                |r| (r.query.clone(), None),
                async |a, q, rows| a.failures(q, rows).await,
            )
            .await?;
            show(&api, paths::ANALYTICS_FAILURES, answer, output)?
        }
        QueryCommand::Retries {
            filters,
            limit,
            archive,
        } => {
            let archive = archive.open().await?;
            let answer = with_archive(
                &api,
                archive.as_ref(),
                api.retries(&with_limit(filters.params(), limit)).await,
                &filters.asked(limit, None, &Spec::RETRIES),
                |r| (r.query.clone(), None),
                async |a, q, rows| a.retries(q, rows).await,
            )
            .await?;
            show(&api, paths::ANALYTICS_RETRIES, answer, output)?
        }
        QueryCommand::Timeline { id, archive } => {
            let archive = archive.open().await?;
            // The service answers the timeline a page at a time; the client
            // follows every page.
            let report = match (api.timeline_all(id).await, archive) {
                (Ok(report), _) => report,
                (
                    Err(
                        ApiError::Unavailable { status: 404, .. }
                        | ApiError::Refused { status: 404, .. },
                    ),
                    Some(archive),
                ) => match archive
                    .timeline(id)
                    .await
                    .context("cannot read the archive")?
                {
                    Some((remediation, timeline)) => TimelineResponse {
                        remediation,
                        timeline,
                        next_cursor: None,
                    },
                    None => {
                        return Err(anyhow!(
                            "no remediation with id {id} at {} nor in the archive; the other \
                             queries list the ids",
                            api.base_url()
                        ));
                    }
                },
                (Err(err), _) => {
                    let not_found = format!(
                        "no remediation with id {id} at {}; the other queries list the ids \
                         (--archive also looks in the archive)",
                        api.base_url()
                    );
                    return Err(explain(&api, err, &not_found));
                }
            };
            render(&report, output)?
        }
        QueryCommand::AdminLog(args) => {
            let answer = crate::admin::fetch(&api, &args).await;
            show(&api, paths::ADMIN_LOG, answer, output)?
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

/// What a question asked, to resolve its window here when the service
/// takes it only over the archive (a window longer than the retention period).
struct Asked<'a> {
    window: &'a WindowArgs,
    alert_fingerprint: Option<&'a str>,
    limit: Option<u32>,
    bucket: Option<&'a str>,
    spec: &'a Spec,
}

impl Asked<'_> {
    /// The question at `now`, its window resolved as the service resolves it
    /// with `archive=true` (the service has checked every other parameter).
    fn query(&self, now: DateTime<Utc>) -> anyhow::Result<remaudit_store::AnalyticsQuery> {
        let time = |flag: &str, text: Option<&str>| {
            text.map(|t| {
                DateTime::parse_from_rfc3339(t)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|e| anyhow!("--{flag} {t:?} is not an RFC 3339 time: {e}"))
            })
            .transpose()
        };
        let length = self
            .window
            .window
            .as_deref()
            .map(parse_window)
            .transpose()?;
        let (since, until) = window_ends(
            time("since", self.window.since.as_deref())?,
            time("until", self.window.until.as_deref())?,
            length,
            chrono::Duration::days(self.spec.default_window_days),
            now,
        )
        .ok_or_else(|| anyhow!("give at most two of --since, --until and --window"))?;
        let window = Window::over_archive(since, until, self.window.exact)?;
        // The checks the service makes of a window it accepts.
        if window.since.year() < 0 || window.until.year() > 9999 {
            return Err(anyhow!(
                "the window must lie within the years 0000 to 9999, got {} to {}",
                window.since.to_rfc3339(),
                window.until.to_rfc3339()
            ));
        }
        let bucket = self.bucket.map(parse_window).transpose()?;
        if let Some(b) = bucket {
            if b.num_seconds() % 3600 != 0 {
                return Err(anyhow!(
                    "--bucket must be a whole number of hours, such as 1h, 6h or 1d"
                ));
            }
            if (window.until - window.since).num_seconds() / b.num_seconds()
                > remaudit_store::analytics::MAX_SERIES_BUCKETS
            {
                return Err(anyhow!(
                    "--bucket gives more than {} buckets over this window; choose a larger bucket",
                    remaudit_store::analytics::MAX_SERIES_BUCKETS
                ));
            }
        }
        Ok(remaudit_store::AnalyticsQuery {
            window,
            namespace: self.window.namespace.clone(),
            alert_fingerprint: self.alert_fingerprint.map(str::to_owned),
            limit: self.limit.or(self.spec.default_limit).unwrap_or(0),
            bucket,
        })
    }
}

/// Whether the service refused only because the window is longer than it
/// takes without the archive.
fn beyond_retention(err: &ApiError) -> bool {
    matches!(err, ApiError::Refused { problem: Some(p), .. }
        if !p.errors.is_empty() && p.errors.iter().all(|e| e.rule == "max_retention"))
}

/// The service's `answer`, or with `--archive` (an `archive` to read) the
/// same question asked by `ask` of the archive and the remediations the
/// service holds in the window: the answer's window (`echo` gives the
/// answer's query and bucket length), or, when the service refused the
/// window only for its length, the window `asked` resolves here. The
/// service's answer stands when the archive holds none of its weeks.
async fn with_archive<R>(
    api: &ApiClient,
    archive: Option<&remaudit_archive::ArchiveQuery>,
    answer: Result<R, ApiError>,
    asked: &Asked<'_>,
    echo: impl FnOnce(&R) -> (remaudit_api::analytics::QueryEcho, Option<i64>),
    ask: impl AsyncFnOnce(
        &remaudit_archive::ArchiveQuery,
        &remaudit_store::AnalyticsQuery,
        &[remaudit_model::StoredAudit],
    ) -> Result<R, remaudit_archive::ArchiveQueryError>,
) -> anyhow::Result<Result<R, ApiError>> {
    let Some(archive) = archive else {
        return Ok(answer);
    };
    let q = match &answer {
        Ok(live) => {
            let (echo, bucket_seconds) = echo(live);
            // The archive as it is after the service answered: a batch that
            // left the service before is in it.
            let after = archive.reopen().await.context("cannot read the archive")?;
            readable(&after, echo.window.since, echo.window.until)?;
            if !after.holds(echo.window.since, echo.window.until) {
                return Ok(answer);
            }
            remaudit_store::AnalyticsQuery {
                window: echo.window,
                namespace: echo.namespace.clone(),
                alert_fingerprint: echo.alert_fingerprint.clone(),
                limit: echo.limit.unwrap_or(0),
                bucket: bucket_seconds.map(chrono::Duration::seconds),
            }
        }
        Err(err) if beyond_retention(err) => asked.query(Utc::now())?,
        Err(_) => return Ok(answer),
    };
    let rows = live_rows(api, &q).await?;
    // Read again after the live rows: a batch finished meanwhile (its rows
    // gone from the service) is in the archive now.
    let archive = archive.reopen().await.context("cannot read the archive")?;
    readable(&archive, q.window.since, q.window.until)?;
    Ok(Ok(ask(&archive, &q, rows.rows())
        .await
        .context("cannot read the archive")?))
}

/// Refuses a window in which the archive holds batches it cannot read.
fn readable(
    archive: &remaudit_archive::ArchiveQuery,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> anyhow::Result<()> {
    match archive.unreadable_in(since, until) {
        0 => Ok(()),
        n => Err(anyhow!(
            "{n} archive batches that may hold remediations of this window are JSON Lines, \
             which questions cannot read; an answer would leave them out"
        )),
    }
}

/// The remediations the service holds in `q`'s window, read a page at a time.
///
/// # Errors
/// When the service does not list them, or holds more than
/// [`LiveRows`](remaudit_archive::LiveRows) takes.
async fn live_rows(
    api: &ApiClient,
    q: &remaudit_store::AnalyticsQuery,
) -> anyhow::Result<remaudit_archive::LiveRows> {
    let time = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    let mut params = remaudit_api::audit::ListParams {
        alert_fingerprint: q.alert_fingerprint.clone(),
        namespace: q.namespace.clone(),
        since: Some(time(q.window.since)),
        until: Some(time(q.window.until)),
        limit: Some("1000".to_owned()),
        ..remaudit_api::audit::ListParams::default()
    };
    let mut live = remaudit_archive::LiveRows::default();
    loop {
        let page = api.list(&params).await.map_err(|err| {
            explain(
                api,
                err,
                &format!(
                    "the server at {} does not list remediations: it may run a remaudit older than this command",
                    api.base_url()
                ),
            )
        })?;
        live.take(page.items).map_err(|why| anyhow!("{why}"))?;
        match page.next_cursor {
            Some(cursor) => params.cursor = Some(cursor),
            None => return Ok(live),
        }
    }
}

/// The API client for `url`, after checking it is an http(s) URL, with
/// the credentials of `credentials`.
fn client(url: &str, credentials: &CredentialArgs) -> anyhow::Result<ApiClient> {
    let base = url.trim_end_matches('/');
    let parsed = reqwest::Url::parse(base).map_err(|e| {
        anyhow!(
            "{url:?} is not a URL ({e}): set --url or REMAUDIT_URL to one such as http://127.0.0.1:8085"
        )
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(anyhow!(
            "{url:?} is not an http:// or https:// URL: set --url or REMAUDIT_URL"
        ));
    }
    let builder = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT);
    Ok(credentials.settings().load()?.api_client(base, builder)?)
}

/// The detail of a problem (else its title), then each broken rule on its
/// own line.
fn problem_message(problem: &Problem) -> String {
    let mut text = if problem.detail.is_empty() {
        problem.title.clone()
    } else {
        problem.detail.clone()
    };
    for e in &problem.errors {
        if e.field.is_empty() {
            let _ = write!(text, "\n  {}", e.message);
        } else {
            let _ = write!(text, "\n  {}: {}", e.field, e.message);
        }
    }
    text
}

/// What to tell the user about a failed call to `api`'s server; a 404 is
/// `not_found`.
fn explain(api: &ApiClient, err: ApiError, not_found: &str) -> anyhow::Error {
    let base = api.base_url();
    match err {
        err @ ApiError::Transport { .. } if err.is_tls() => {
            let mut cause: &dyn std::error::Error = &err;
            while let Some(inner) = cause.source() {
                cause = inner;
            }
            anyhow!(
                "TLS with the server at {base} failed ({cause}): set --ca-file / REMAUDIT_CA_FILE to the CA that signed its certificate, and --client-cert / --client-key if it asks for one"
            )
        }
        ApiError::Transport { source, .. } => transport_error(base, &source),
        ApiError::Denied { status, detail, .. } => denied(api, status, &detail),
        err @ ApiError::Credentials(_) => anyhow!(err),
        ApiError::Decode { path, message, .. } => anyhow!(
            "the server at {base} answered JSON this command cannot read (at {path}: {message}): are the CLI and the service the same version?"
        ),
        ApiError::Unavailable { status: 404, .. } | ApiError::Refused { status: 404, .. } => {
            anyhow!("{not_found}")
        }
        ApiError::Unavailable {
            status,
            problem,
            body,
            ..
        }
        | ApiError::Refused {
            status,
            problem,
            body,
            ..
        } => match problem {
            Some(problem) if !problem.detail.is_empty() || !problem.title.is_empty() => {
                anyhow!("{}", problem_message(&problem))
            }
            _ => {
                let status = reqwest::StatusCode::from_u16(status)
                    .map_or_else(|_| status.to_string(), |s| s.to_string());
                let text = clean_text(body.trim(), 200);
                anyhow!(
                    "the server at {base} answered {status}{}{text}",
                    if text.is_empty() { "" } else { ": " }
                )
            }
        },
        err @ (ApiError::Build(_) | ApiError::InvalidUrl { .. }) => {
            anyhow!("{err}; set --url or REMAUDIT_URL")
        }
    }
}

/// What to tell the user when the server refused the caller (401, 403).
fn denied(api: &ApiClient, status: u16, detail: &str) -> anyhow::Error {
    let base = api.base_url();
    match (status, api.token()) {
        (401, None) => anyhow!(
            "the server at {base} needs a token ({detail}): give a file holding one with --token-file or REMAUDIT_TOKEN_FILE"
        ),
        (401, Some(token)) => anyhow!(
            "the server at {base} does not accept the token in {} ({detail}): is it current, and known to the server?",
            token.path().display()
        ),
        _ => anyhow!(
            "the server at {base} refused ({detail}): the token's subject lacks the reader role that queries need"
        ),
    }
}

/// What to tell the user when the request to `base` did not complete.
fn transport_error(base: &str, err: &reqwest::Error) -> anyhow::Error {
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
            problem_message(&problem),
            "one or more query parameters are invalid; see errors\n  window: must be a whole number followed by m, h, d or w\n  unknown field `x`"
        );
    }
}
