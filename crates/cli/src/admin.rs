//! Admin actions on the command line: who and why (`--subject`, `--reason`)
//! for the actions the CLI runs itself, and `remaudit query admin-log`, the
//! log of every hold, release, soft delete and retention run, as a table,
//! JSON or CSV.

use std::fmt::Write as _;

use anyhow::Context as _;
use remaudit_api::admin::{
    AdminAction, AdminLogEntry, AdminLogParams, AdminLogResponse, MAX_ADMIN_LOG_PAGE, check_reason,
};
use remaudit_client::{ApiClient, ApiError};
use serde::Serialize;

use crate::query::render::{Report, align_right, clean_text, csv_text, new_table, ts};

/// The reason a `remaudit retention run` records when none is given.
pub const MANUAL_RUN_REASON: &str = "manual retention run (remaudit retention run)";

/// The subject a CLI action records when `--subject` is not given: the OS
/// user, else `cli`.
pub fn default_subject() -> String {
    ["USER", "LOGNAME"]
        .into_iter()
        .filter_map(|name| std::env::var(name).ok())
        .find(|user| parse_subject(user).is_ok())
        .unwrap_or_else(|| "cli".to_owned())
}

/// Reads `--subject`: 1 to 1024 characters, no control characters.
///
/// # Errors
/// The rule broken, in words.
pub fn parse_subject(text: &str) -> Result<String, String> {
    if text.is_empty() || text.chars().count() > 1024 || text.chars().any(char::is_control) {
        return Err("must be 1 to 1024 characters without control characters".to_owned());
    }
    Ok(text.to_owned())
}

/// Reads `--reason` by the server's rules ([`check_reason`]).
///
/// # Errors
/// The rule broken, in words.
pub fn parse_reason(text: &str) -> Result<String, String> {
    check_reason(Some(text))
        .map(str::to_owned)
        .map_err(|e| e.message)
}

fn parse_action(text: &str) -> Result<AdminAction, String> {
    text.parse()
}

/// `remaudit query admin-log`: filters, and how many entries to show.
#[derive(Debug, clap::Args)]
pub struct AdminLogArgs {
    /// Only actions recorded at or after this time (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    since: Option<String>,
    /// Only actions recorded before this time (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    until: Option<String>,
    /// Only this subject's actions.
    #[arg(long, value_name = "NAME", value_parser = parse_subject)]
    subject: Option<String>,
    /// Only this action: `hold`, `release`, `delete` or `retention_run`.
    #[arg(long, value_name = "ACTION", value_parser = parse_action)]
    action: Option<AdminAction>,
    /// Only actions on this remediation (its id).
    #[arg(long, value_name = "ID")]
    target: Option<i64>,
    /// Most entries shown, newest first; pages are followed until there are
    /// this many.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    limit: u32,
}

impl AdminLogArgs {
    /// The service's query parameters for the first page.
    fn params(&self) -> AdminLogParams {
        let mut params = AdminLogParams {
            since: self.since.clone(),
            until: self.until.clone(),
            subject: self.subject.clone(),
            ..AdminLogParams::default()
        }
        .with_limit(self.limit.min(MAX_ADMIN_LOG_PAGE));
        if let Some(action) = self.action {
            params = params.with_action(action);
        }
        if let Some(target) = self.target {
            params = params.with_target(target);
        }
        params
    }
}

/// Reads the admin log, following pages until `args.limit` entries or the
/// end; `next_cursor` of the answer is set when more entries remain.
///
/// # Errors
/// As [`ApiClient::admin_log`].
pub async fn fetch(api: &ApiClient, args: &AdminLogArgs) -> Result<AdminLog, ApiError> {
    let want = usize::try_from(args.limit).unwrap_or(usize::MAX);
    let first = args.params();
    let mut answer = api.admin_log(&first).await?;
    while answer.items.len() < want
        && let Some(cursor) = answer.next_cursor.take()
    {
        let left = u32::try_from(want - answer.items.len()).unwrap_or(MAX_ADMIN_LOG_PAGE);
        let next = first
            .clone()
            .with_limit(left.min(MAX_ADMIN_LOG_PAGE))
            .with_cursor(cursor);
        let page = api.admin_log(&next).await?;
        answer.items.extend(page.items);
        answer.next_cursor = page.next_cursor;
    }
    Ok(AdminLog(answer))
}

/// A page of the admin log, as `remaudit query admin-log` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct AdminLog(pub AdminLogResponse);

/// Longest reason shown in a table cell.
const MAX_REASON_CELL: usize = 60;

/// What an entry touched, in a few words.
fn what(entry: &AdminLogEntry) -> String {
    let d = &entry.detail;
    let text = |key: &str| d.get(key).and_then(|v| v.as_str()).unwrap_or("?");
    let count = |key: &str| d.get(key).and_then(serde_json::Value::as_u64).unwrap_or(0);
    match entry.action {
        AdminAction::RetentionRun => {
            let mut words = format!(
                "{} remediations, {} events",
                count("remediations"),
                count("events")
            );
            if d.get("outcome").and_then(|v| v.as_str()) == Some("error") {
                words.push_str(", ended in an error");
            }
            words
        }
        AdminAction::Hold | AdminAction::Release | AdminAction::Delete => format!(
            "{}/{} started {}",
            text("namespace"),
            text("remediation_name"),
            text("start_time")
        ),
    }
}

impl Report for AdminLog {
    fn table(&self) -> String {
        let entries = &self.0.items;
        if entries.is_empty() {
            return "no admin actions recorded that match\n".to_owned();
        }
        let mut table = new_table(&["ID", "AT", "SUBJECT", "ACTION", "TARGET", "REASON", "WHAT"]);
        for e in entries {
            table.add_row(vec![
                e.id.to_string(),
                ts(e.at),
                clean_text(&e.subject, MAX_REASON_CELL),
                e.action.to_string(),
                e.target.map_or_else(|| "-".to_owned(), |t| t.to_string()),
                clean_text(&e.reason, MAX_REASON_CELL),
                clean_text(&what(e), MAX_REASON_CELL),
            ]);
        }
        align_right(&mut table, &[0, 4]);
        let n = entries.len();
        let mut text = table.trim_fmt();
        let _ = write!(
            text,
            "\n\n{n} {}, newest first{}\n",
            if n == 1 { "action" } else { "actions" },
            if self.0.next_cursor.is_some() {
                "; older ones exist (raise --limit)"
            } else {
                ""
            }
        );
        text
    }

    fn csv(&self) -> anyhow::Result<String> {
        let rows = self
            .0
            .items
            .iter()
            .map(|e| -> anyhow::Result<[String; 7]> {
                Ok([
                    e.id.to_string(),
                    ts(e.at),
                    e.subject.clone(),
                    e.action.to_string(),
                    e.target.map(|t| t.to_string()).unwrap_or_default(),
                    e.reason.clone(),
                    serde_json::to_string(&e.detail).context("cannot print an entry's detail")?,
                ])
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        csv_text(
            &[
                "id", "at", "subject", "action", "target", "reason", "detail",
            ],
            rows,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::Output;
    use crate::query::render::render;

    fn entries() -> AdminLog {
        let at = "2026-11-20T10:00:00Z".parse().expect("time");
        AdminLog(AdminLogResponse {
            items: vec![
                AdminLogEntry {
                    id: 3,
                    at,
                    subject: "retention".into(),
                    action: AdminAction::RetentionRun,
                    target: None,
                    reason: "scheduled".into(),
                    detail: serde_json::json!({"outcome": "ok", "remediations": 12, "events": 48}),
                },
                AdminLogEntry {
                    id: 2,
                    at,
                    subject: "ops".into(),
                    action: AdminAction::Hold,
                    target: Some(41),
                    reason: "legal case 7,\"urgent\"".into(),
                    detail: serde_json::json!({"namespace": "prod", "remediation_name": "rr-1", "start_time": "2026-11-20T09:00:00Z"}),
                },
            ],
            next_cursor: Some("abc".into()),
        })
    }

    #[test]
    fn the_log_reads_as_a_table_and_as_csv() {
        insta::assert_snapshot!(render(&entries(), Output::Table).expect("table"));
        insta::assert_snapshot!(render(&entries(), Output::Csv).expect("csv"));
        assert_eq!(
            render(
                &AdminLog(AdminLogResponse {
                    items: vec![],
                    next_cursor: None
                }),
                Output::Table
            )
            .expect("empty"),
            "no admin actions recorded that match\n"
        );
    }

    #[test]
    fn flags_are_checked_before_asking() {
        assert!(parse_reason("  ").is_err());
        assert!(parse_reason("a\tb").is_err());
        assert_eq!(
            parse_reason("audit request 12").as_deref(),
            Ok("audit request 12")
        );
        assert!(parse_subject("").is_err());
        assert!(parse_action("purge").is_err());
        assert_eq!(parse_action("retention_run"), Ok(AdminAction::RetentionRun));
        assert!(parse_subject(&default_subject()).is_ok());
    }
}
