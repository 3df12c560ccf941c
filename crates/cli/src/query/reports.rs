//! One [`Report`] per answer of the service: what its table, CSV and JSON
//! show. Pure functions of the decoded answer, tested without a server.

use std::fmt::Write as _;

use remaudit_api::audit::TimelineResponse;
use remaudit_model::analytics::{
    DurationsReport, FailuresReport, OutcomeCounts, RemediationBrief, RemediationList,
    RetriesReport, SuccessRateReport,
};
use remaudit_model::{CrdStatusSnapshot, ServiceCrdStatuses};
use serde::Serialize;

use super::render::{
    Report, accuracy_note, align_right, clean_text, csv_seconds, csv_text, duration_cell,
    human_duration, human_length, new_table, opt_num, opt_text, opt_ts, page, percent,
    seconds_between, ts,
};

/// Longest free text (failure reasons) shown in a table cell.
const MAX_TEXT_CHARS: usize = 60;
/// Most phases of a retry progression shown in a table cell.
const MAX_PROGRESSION: usize = 8;

/// The post-mortem list: every remediation of one alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Postmortem(pub RemediationList);

/// The slowest remediations.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Slowest(pub RemediationList);

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

impl Report for TimelineResponse {
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
    use chrono::{DateTime, Utc};
    use remaudit_model::analytics::{
        Alignment, FailureGroup, PhaseDurations, QueryEcho, RetryGroup, SeriesPoint, Window,
    };

    use super::*;
    use crate::query::Output;
    use crate::query::render::render;
    use remaudit_model::{EventRecord, StoredAudit};

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
                #[allow(
                    clippy::cast_possible_truncation,
                    reason = "a test's durations are a few hours"
                )]
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
        insta::with_settings!({ snapshot_path => "../../tests/cli/snapshots" }, {
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
        let report = TimelineResponse {
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
