//! Analytics shared by both backends: the query, which source answers it,
//! and how rows (from rollups or from the remediations) become answers.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, TimeZone, Utc};
use remaudit_model::analytics::{
    Alignment, DurationsReport, FailureGroup, OutcomeCounts, PhaseDurations, QueryEcho,
    RemediationBrief, RetryGroup, SeriesPoint, Window,
};
use remaudit_model::approx_f64;
use remaudit_model::histogram::{Histogram, RELATIVE_ERROR};
use sqlx::{Database, Encode, QueryBuilder, Type};

/// Most buckets a success-rate series may have.
pub const MAX_SERIES_BUCKETS: i64 = 5000;

/// Most phases listed in a retry's progression: the latest attempts.
pub const MAX_PROGRESSION: usize = 100;

/// Distinct reasons listed per failure group.
pub const SAMPLE_REASONS: usize = 5;

/// Failures read per group to find the sample reasons.
pub const SAMPLE_SCAN: i64 = 500;

/// One analytics question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalyticsQuery {
    /// The remediations by `start_time`; exact when not aligned.
    pub window: Window,
    /// Only this namespace.
    pub namespace: Option<String>,
    /// Only this alert.
    pub alert_fingerprint: Option<String>,
    /// Most items in a list.
    pub limit: u32,
    /// Bucket size of a success-rate series, a whole number of hours.
    pub bucket: Option<Duration>,
}

impl AnalyticsQuery {
    /// A query over `window` with no filters and a limit of 20.
    #[must_use]
    pub fn new(window: Window) -> Self {
        Self {
            window,
            namespace: None,
            alert_fingerprint: None,
            limit: 20,
            bucket: None,
        }
    }

    /// Whether percentiles and counts must come from the remediations themselves.
    #[must_use]
    pub fn exact(&self) -> bool {
        self.window.aligned_to == Alignment::None
    }

    /// The echo of this query, answered from `source`.
    #[must_use]
    pub fn echo(&self, source: Source, limit: bool) -> QueryEcho {
        QueryEcho {
            window: self.window,
            namespace: self.namespace.clone(),
            alert_fingerprint: self.alert_fingerprint.clone(),
            limit: limit.then_some(self.limit),
            source: source.name().to_owned(),
        }
    }

    /// The rollup namespace key: `''` stands for every namespace.
    pub(crate) fn scope(&self) -> &str {
        self.namespace.as_deref().unwrap_or("")
    }

    /// Whether hourly outcome rollups can answer (success rate).
    pub(crate) fn outcomes_from_rollup(&self) -> bool {
        !self.exact() && self.alert_fingerprint.is_none()
    }

    /// The duration rollup grain (hours per bucket) that can answer, if any.
    pub(crate) fn durations_rollup(&self) -> Option<i16> {
        if self.alert_fingerprint.is_some() {
            return None;
        }
        match self.window.aligned_to {
            Alignment::Day => Some(24),
            Alignment::Hour if self.namespace.is_none() => Some(1),
            _ => None,
        }
    }

    /// Whether daily per-alert rollups can answer (failures, retries).
    pub(crate) fn alerts_from_rollup(&self) -> bool {
        self.alert_fingerprint.is_none() && self.window.aligned_to == Alignment::Day
    }
}

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Rollups kept as remediations finish.
    Rollup,
    /// The remediations themselves.
    Rows,
    /// The live remediations and the archive's, read together.
    Archive,
}

impl Source {
    /// The name echoed in answers.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Rollup => "rollup",
            Self::Rows => "rows",
            Self::Archive => "archive",
        }
    }
}

/// Appends the window and filters of `q` to a `WHERE` clause over `remediation_audit`.
pub(crate) fn push_filters<DB, T>(
    qb: &mut QueryBuilder<DB>,
    q: &AnalyticsQuery,
    time: impl Fn(DateTime<Utc>) -> T,
) where
    DB: Database,
    DB::Arguments: Default,
    String: for<'t> Encode<'t, DB> + Type<DB>,
    T: for<'t> Encode<'t, DB> + Type<DB> + 'static,
{
    qb.push(" AND deleted_at IS NULL AND start_time >= ")
        .push_bind(time(q.window.since))
        .push(" AND start_time < ")
        .push_bind(time(q.window.until));
    if let Some(ns) = &q.namespace {
        qb.push(" AND namespace = ").push_bind(ns.clone());
    }
    if let Some(fp) = &q.alert_fingerprint {
        qb.push(" AND alert_fingerprint = ").push_bind(fp.clone());
    }
}

/// A query over `remediation_audit` that starts with `head` (which ends in a
/// `WHERE` condition) and adds the window and filters of `q`.
pub(crate) fn filtered<DB, T>(
    head: &str,
    q: &AnalyticsQuery,
    time: impl Fn(DateTime<Utc>) -> T,
) -> QueryBuilder<DB>
where
    DB: Database,
    DB::Arguments: Default,
    String: for<'t> Encode<'t, DB> + Type<DB>,
    T: for<'t> Encode<'t, DB> + Type<DB> + 'static,
{
    let mut qb = QueryBuilder::new(head.to_owned());
    push_filters(&mut qb, q, time);
    qb
}

/// The post-mortem list: one alert's remediations, newest first.
pub(crate) fn postmortem_sql<DB, T>(
    q: &AnalyticsQuery,
    time: impl Fn(DateTime<Utc>) -> T,
) -> QueryBuilder<DB>
where
    DB: Database,
    DB::Arguments: Default,
    String: for<'t> Encode<'t, DB> + Type<DB>,
    i64: for<'t> Encode<'t, DB> + Type<DB>,
    T: for<'t> Encode<'t, DB> + Type<DB> + 'static,
{
    let mut qb = filtered(
        &format!("SELECT {BRIEF_COLUMNS} FROM remediation_audit WHERE 1 = 1"),
        q,
        time,
    );
    qb.push(" ORDER BY start_time DESC, id DESC LIMIT ")
        .push_bind(i64::from(q.limit));
    qb
}

/// The slowest list: finished remediations by duration, longest first.
pub(crate) fn slowest_sql<DB, T>(
    q: &AnalyticsQuery,
    time: impl Fn(DateTime<Utc>) -> T,
) -> QueryBuilder<DB>
where
    DB: Database,
    DB::Arguments: Default,
    String: for<'t> Encode<'t, DB> + Type<DB>,
    i64: for<'t> Encode<'t, DB> + Type<DB>,
    T: for<'t> Encode<'t, DB> + Type<DB> + 'static,
{
    let mut qb = filtered(
        &format!(
            "SELECT {BRIEF_COLUMNS}, service_crd_statuses FROM remediation_audit WHERE duration_us IS NOT NULL"
        ),
        q,
        time,
    );
    qb.push(" ORDER BY duration_us DESC, start_time DESC, id DESC LIMIT ")
        .push_bind(i64::from(q.limit));
    qb
}

/// Failure groups computed from the remediations, most common first.
pub(crate) fn failure_groups_sql<DB, T>(
    q: &AnalyticsQuery,
    time: impl Fn(DateTime<Utc>) -> T,
) -> QueryBuilder<DB>
where
    DB: Database,
    DB::Arguments: Default,
    String: for<'t> Encode<'t, DB> + Type<DB>,
    i64: for<'t> Encode<'t, DB> + Type<DB>,
    T: for<'t> Encode<'t, DB> + Type<DB> + 'static,
{
    let mut qb = filtered(FAILURE_GROUP_SQL, q, time);
    qb.push(" GROUP BY 1, 2");
    qb
}

/// The failure groups an answer lists: most failures first, then by
/// outcome and phase compared byte by byte (the same on every backend and
/// in the archive, whatever a database's collation), at most `limit`.
#[must_use]
pub fn top_failure_groups(mut groups: Vec<FailureRow>, limit: u32) -> Vec<FailureRow> {
    groups.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.outcome.as_bytes().cmp(b.outcome.as_bytes()))
            .then_with(|| a.phase.as_bytes().cmp(b.phase.as_bytes()))
    });
    groups.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    groups
}

/// Ends the one query that reads every group's sample reasons: from
/// `s(i, reason, start_time, id)`, the latest [`SAMPLE_SCAN`] failures with a
/// reason of each group `i`, it keeps each group's first [`SAMPLE_REASONS`]
/// distinct reasons, newest first, as `(i, reason)` rows in that order.
pub(crate) fn push_sample_pick<DB>(qb: &mut QueryBuilder<DB>)
where
    DB: Database,
    DB::Arguments: Default,
{
    qb.push(format_args!(
        "), firsts AS (SELECT i, reason, min(rn) AS first \
         FROM (SELECT i, reason, row_number() OVER (PARTITION BY i ORDER BY start_time DESC, id DESC) AS rn \
         FROM s) AS ranked GROUP BY i, reason) \
         SELECT i, reason FROM (SELECT i, reason, row_number() OVER (PARTITION BY i ORDER BY first) AS k \
         FROM firsts) AS picked WHERE k <= {SAMPLE_REASONS} ORDER BY i, k"
    ));
}

/// The outcome literal and phase column that select a failure group's remediations.
pub(crate) fn failure_phase_column(outcome: &str) -> (&'static str, &'static str) {
    if outcome == "failed" {
        ("failed", "failure_phase")
    } else {
        ("timeout", "timeout_phase")
    }
}

/// Sorts the `(i, reason)` rows of a sample query into one list per group.
pub(crate) fn samples_by_group(
    groups: usize,
    rows: impl IntoIterator<Item = (i64, String)>,
) -> Vec<Vec<String>> {
    let mut out = vec![Vec::new(); groups];
    for (i, reason) in rows {
        if let Some(list) = usize::try_from(i).ok().and_then(|i| out.get_mut(i)) {
            list.push(reason);
        }
    }
    out
}

/// Duration bins computed from the remediations.
pub(crate) fn bins_sql<DB, T>(
    q: &AnalyticsQuery,
    time: impl Fn(DateTime<Utc>) -> T,
) -> QueryBuilder<DB>
where
    DB: Database,
    DB::Arguments: Default,
    String: for<'t> Encode<'t, DB> + Type<DB>,
    T: for<'t> Encode<'t, DB> + Type<DB> + 'static,
{
    let mut qb = filtered(
        "SELECT overall_phase AS phase, duration_bin AS bin, count(*) AS n, CAST(sum(duration_us) AS BIGINT) AS total \
         FROM remediation_audit WHERE phase_rank = 9 AND duration_bin IS NOT NULL",
        q,
        time,
    );
    qb.push(" GROUP BY 1, 2");
    qb
}

/// The whole weeks (counted from the Unix epoch, as the weekly rollups are)
/// inside `[since, until)`, as `[first, end)`; an empty range at `until`
/// when there is none.
pub(crate) fn whole_weeks(
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> (DateTime<Utc>, DateTime<Utc>) {
    const WEEK: i64 = 7 * 86_400;
    let at = |s: i64| Utc.timestamp_opt(s, 0).single().unwrap_or(until);
    let first = at(since.timestamp().div_euclid(WEEK) * WEEK
        + if since.timestamp().rem_euclid(WEEK) == 0 {
            0
        } else {
            WEEK
        });
    let end = at(until.timestamp().div_euclid(WEEK) * WEEK);
    if first < end {
        (first, end)
    } else {
        (until, until)
    }
}

/// Remediations of one hour with one outcome (`None`: still in progress).
#[derive(Debug, Clone)]
pub struct OutcomeRow {
    /// The hour's start.
    pub hour: DateTime<Utc>,
    /// The final phase; `None` while in progress.
    pub phase: Option<String>,
    /// How many.
    pub count: i64,
}

fn unsigned(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The totals and, when a bucket was asked for, the series of a success-rate answer.
#[must_use]
pub fn success_rate(q: &AnalyticsQuery, rows: &[OutcomeRow]) -> (OutcomeCounts, Vec<SeriesPoint>) {
    let mut totals = OutcomeCounts::default();
    for row in rows {
        totals.add(row.phase.as_deref(), unsigned(row.count));
    }
    let Some(bucket) = q.bucket else {
        return (totals.with_rate(), Vec::new());
    };
    let size = bucket.num_seconds().max(1);
    let index = |t: DateTime<Utc>| t.timestamp().div_euclid(size);
    let first = index(q.window.since);
    let last = index(q.window.until - Duration::microseconds(1));
    let mut counts = vec![OutcomeCounts::default(); usize::try_from(last - first + 1).unwrap_or(0)];
    for row in rows {
        let i = usize::try_from(index(row.hour) - first).unwrap_or(0);
        if let Some(c) = counts.get_mut(i) {
            c.add(row.phase.as_deref(), unsigned(row.count));
        }
    }
    let at = |i: i64| {
        Utc.timestamp_opt(i * size, 0)
            .single()
            .unwrap_or(q.window.since)
    };
    let series = counts
        .into_iter()
        .zip(first..)
        .map(|(c, i)| SeriesPoint {
            since: at(i).max(q.window.since),
            until: at(i + 1).min(q.window.until),
            counts: c.with_rate(),
        })
        .collect();
    (totals.with_rate(), series)
}

/// Duration bins of one final phase, summed; decoded alike on both backends.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BinRow {
    /// The final phase.
    pub phase: String,
    /// The histogram bin ([`duration_bin`](remaudit_model::histogram::duration_bin)).
    pub bin: i32,
    /// Remediations in the bin.
    #[sqlx(rename = "n")]
    pub count: i64,
    /// Their durations' sum, in microseconds.
    #[sqlx(rename = "total")]
    pub sum_micros: i64,
}

/// Output order of phases: the terminal ones first, then the rest by name.
fn phase_order(phase: &str) -> (usize, String) {
    let rank = ["completed", "failed", "timeout"]
        .iter()
        .position(|p| *p == phase)
        .unwrap_or(3);
    (rank, phase.to_owned())
}

/// Durations per final phase and overall, read off merged histograms.
#[must_use]
pub fn durations_from_bins(q: &AnalyticsQuery, source: Source, rows: &[BinRow]) -> DurationsReport {
    let mut by_phase: BTreeMap<(usize, String), Histogram> = BTreeMap::new();
    let mut all = Histogram::new();
    for row in rows {
        let h = by_phase.entry(phase_order(&row.phase)).or_default();
        h.add_bin(row.bin, unsigned(row.count), i128::from(row.sum_micros));
        all.add_bin(row.bin, unsigned(row.count), i128::from(row.sum_micros));
    }
    let figures = |name: String, h: &Histogram| PhaseDurations {
        final_phase: name,
        count: h.count(),
        avg_seconds: h.mean_seconds().unwrap_or(0.0),
        p50_seconds: h.quantile(0.5).unwrap_or(0.0),
        p95_seconds: h.quantile(0.95).unwrap_or(0.0),
        p99_seconds: h.quantile(0.99).unwrap_or(0.0),
    };
    let mut phases: Vec<PhaseDurations> = by_phase
        .iter()
        .map(|((_, name), h)| figures(name.clone(), h))
        .collect();
    if all.count() > 0 {
        phases.push(figures("all".to_owned(), &all));
    }
    DurationsReport {
        query: q.echo(source, false),
        relative_error: RELATIVE_ERROR,
        phases,
    }
}

/// Exact durations per final phase and overall, from durations streamed in
/// ascending order once the count of each phase is known: only the values at
/// the ranks the percentiles read are kept, so memory does not grow with the
/// window. The figures are those of [`percentile_cont`](remaudit_model::histogram::percentile_cont) over the sorted values.
pub struct ExactDurations {
    phases: HashMap<String, Ranks>,
    all: Ranks,
}

/// The percentiles every duration answer gives.
const PERCENTILES: [f64; 3] = [0.5, 0.95, 0.99];

/// One phase's (or all phases') running figures.
struct Ranks {
    count: u64,
    seen: u64,
    sum: i128,
    /// Per percentile: the rank below it, and the values at that rank and the next.
    picks: [(u64, Option<i64>, Option<i64>); 3],
}

impl Ranks {
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "float to index or count: the value is clamped to a valid range first, and counts stay far below 2^53"
    )]
    fn new(count: u64) -> Self {
        let last = count.saturating_sub(1);
        let picks = PERCENTILES.map(|q| ((q * last as f64).floor() as u64, None, None));
        Self {
            count,
            seen: 0,
            sum: 0,
            picks,
        }
    }

    fn add(&mut self, micros: i64) {
        for (lower, low, high) in &mut self.picks {
            if self.seen == *lower {
                *low = Some(micros);
            } else if self.seen == *lower + 1 {
                *high = Some(micros);
            }
        }
        self.seen += 1;
        self.sum += i128::from(micros);
    }

    /// As [`percentile_cont`](remaudit_model::histogram::percentile_cont) over the values in seconds.
    fn percentile(&self, i: usize) -> f64 {
        let seconds = |v: i64| approx_f64(v) / 1e6;
        let (_, low, high) = self.picks[i];
        let position = PERCENTILES[i] * approx_f64(self.count.saturating_sub(1));
        let fraction = position - position.floor();
        match (low.map(seconds), high.map(seconds)) {
            (Some(low), Some(high)) if fraction > 0.0 => low + fraction * (high - low),
            (Some(low), _) => low,
            (None, _) => 0.0,
        }
    }

    fn figures(&self, name: String) -> PhaseDurations {
        PhaseDurations {
            final_phase: name,
            count: self.seen,
            avg_seconds: approx_f64(self.sum) / approx_f64(self.seen) / 1e6,
            p50_seconds: self.percentile(0),
            p95_seconds: self.percentile(1),
            p99_seconds: self.percentile(2),
        }
    }
}

impl ExactDurations {
    /// Ready for the durations of phases with these counts.
    pub fn new(counts: impl IntoIterator<Item = (String, i64)>) -> Self {
        let mut total = 0;
        let phases = counts
            .into_iter()
            .map(|(phase, n)| {
                let n = unsigned(n);
                total += n;
                (phase, Ranks::new(n))
            })
            .collect();
        Self {
            phases,
            all: Ranks::new(total),
        }
    }

    /// Takes the next duration; they must come in ascending order.
    pub fn add(&mut self, phase: &str, micros: i64) {
        if let Some(ranks) = self.phases.get_mut(phase) {
            ranks.add(micros);
            self.all.add(micros);
        }
    }

    /// The answer, from `source`: the phases in their order, then `all`.
    #[must_use]
    pub fn report(self, q: &AnalyticsQuery, source: Source) -> DurationsReport {
        let mut by_phase: Vec<((usize, String), Ranks)> = self
            .phases
            .into_iter()
            .filter(|(_, r)| r.seen > 0)
            .map(|(name, r)| (phase_order(&name), r))
            .collect();
        by_phase.sort_by(|a, b| a.0.cmp(&b.0));
        let mut phases: Vec<PhaseDurations> = by_phase
            .into_iter()
            .map(|((_, name), r)| r.figures(name))
            .collect();
        if self.all.seen > 0 {
            phases.push(self.all.figures("all".to_owned()));
        }
        DurationsReport {
            query: q.echo(source, false),
            relative_error: 0.0,
            phases,
        }
    }
}

/// Puts exact per-phase figures in the answer's order, `all` last.
pub(crate) fn order_phases(mut phases: Vec<PhaseDurations>) -> Vec<PhaseDurations> {
    phases.sort_by_key(|p| {
        if p.final_phase == "all" {
            (usize::MAX, String::new())
        } else {
            phase_order(&p.final_phase)
        }
    });
    phases
}

/// A failure group before its sample reasons are read; decoded alike on both backends.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FailureRow {
    /// `failed` or `timeout`.
    pub outcome: String,
    /// The phase it happened in; empty when none was recorded.
    pub phase: String,
    /// Remediations in the group.
    #[sqlx(rename = "failures")]
    pub count: i64,
    /// Distinct alerts among them.
    pub unique_alerts: i64,
}

impl FailureRow {
    /// The group, with its reasons.
    #[must_use]
    pub fn into_group(self, sample_reasons: Vec<String>) -> FailureGroup {
        FailureGroup {
            outcome: self.outcome,
            phase: (!self.phase.is_empty()).then_some(self.phase),
            count: unsigned(self.count),
            unique_alerts: unsigned(self.unique_alerts),
            sample_reasons,
        }
    }
}

/// One alert's attempts in the window.
#[derive(Debug, Clone)]
pub struct AlertRow {
    /// The alert.
    pub alert_fingerprint: String,
    /// Its remediations.
    pub attempts: i64,
    /// Those that completed.
    pub completed: i64,
    /// Those that failed.
    pub failed: i64,
    /// Those that ended otherwise (timed out).
    pub timed_out: i64,
    /// The latest start.
    pub last_start: DateTime<Utc>,
}

impl AlertRow {
    /// The retry entry, with the phases of its latest attempts (newest first in `latest`).
    #[must_use]
    pub fn into_group(self, mut latest: Vec<String>) -> RetryGroup {
        latest.reverse();
        let finished = self.completed + self.failed + self.timed_out;
        RetryGroup {
            alert_fingerprint: self.alert_fingerprint,
            attempts: unsigned(self.attempts),
            completed: unsigned(self.completed),
            failed: unsigned(self.failed),
            timed_out: unsigned(self.timed_out),
            in_progress: unsigned(self.attempts - finished),
            last_attempt: self.last_start,
            eventually_successful: self.completed > 0,
            phase_progression: latest,
        }
    }
}

/// The retry entries of `groups`, each with the phases of its latest
/// attempts from `latest` (by alert, newest first).
#[must_use]
pub fn retry_groups<S: std::hash::BuildHasher>(
    groups: Vec<AlertRow>,
    mut latest: HashMap<String, Vec<String>, S>,
) -> Vec<RetryGroup> {
    groups
        .into_iter()
        .map(|g| {
            let phases = latest.remove(&g.alert_fingerprint).unwrap_or_default();
            g.into_group(phases)
        })
        .collect()
}

/// Columns of a [`RemediationBrief`] in `remediation_audit`.
pub(crate) const BRIEF_COLUMNS: &str = "id, namespace, alert_fingerprint, remediation_name, overall_phase, \
    start_time, completion_time, duration_us, failure_phase, failure_reason, timeout_phase, timeout_time";

/// The parts of a brief a backend decodes ([`BRIEF_COLUMNS`], and
/// `service_crd_statuses` when selected); the rest is derived.
#[derive(sqlx::FromRow)]
pub(crate) struct BriefRow {
    pub id: i64,
    pub namespace: String,
    pub alert_fingerprint: String,
    pub remediation_name: String,
    pub overall_phase: String,
    pub start_time: DateTime<Utc>,
    pub completion_time: Option<DateTime<Utc>>,
    pub duration_us: Option<i64>,
    pub failure_phase: Option<String>,
    pub failure_reason: Option<String>,
    pub timeout_phase: Option<String>,
    pub timeout_time: Option<DateTime<Utc>>,
    #[sqlx(default)]
    pub service_crd_statuses: Option<serde_json::Value>,
}

/// Briefs of rows selected with [`BRIEF_COLUMNS`], on either backend.
pub(crate) fn briefs<'r, R: sqlx::Row>(rows: &'r [R]) -> Result<Vec<RemediationBrief>, sqlx::Error>
where
    BriefRow: sqlx::FromRow<'r, R>,
{
    rows.iter()
        .map(|row| <BriefRow as sqlx::FromRow<R>>::from_row(row).map(RemediationBrief::from))
        .collect()
}

impl From<BriefRow> for RemediationBrief {
    fn from(r: BriefRow) -> Self {
        Self {
            id: r.id,
            timeline: Self::timeline_path(r.id),
            namespace: r.namespace,
            alert_fingerprint: r.alert_fingerprint,
            remediation_name: r.remediation_name,
            overall_phase: r.overall_phase,
            start_time: r.start_time,
            completion_time: r.completion_time,
            duration_seconds: r.duration_us.map(|us| approx_f64(us) / 1e6),
            failure_phase: r.failure_phase,
            failure_reason: r.failure_reason,
            timeout_phase: r.timeout_phase,
            timeout_time: r.timeout_time,
            service_crd_statuses: r.service_crd_statuses,
        }
    }
}

/// SQL of the raw per-group retry figures; `{where}` takes the filters.
pub(crate) const ALERT_GROUP_SQL: &str = "SELECT alert_fingerprint, count(*) AS attempts, \
    sum(CASE WHEN phase_rank = 9 AND overall_phase = 'completed' THEN 1 ELSE 0 END) AS completed, \
    sum(CASE WHEN phase_rank = 9 AND overall_phase = 'failed' THEN 1 ELSE 0 END) AS failed, \
    sum(CASE WHEN phase_rank = 9 AND overall_phase NOT IN ('completed', 'failed') THEN 1 ELSE 0 END) AS timed_out, \
    max(start_time) AS last_start FROM remediation_audit WHERE 1 = 1";

/// SQL of the raw failure groups (before filters, grouping and order).
const FAILURE_GROUP_SQL: &str = "SELECT overall_phase AS outcome, \
    COALESCE(CASE WHEN overall_phase = 'failed' THEN failure_phase ELSE timeout_phase END, '') AS phase, \
    count(*) AS failures, count(DISTINCT alert_fingerprint) AS unique_alerts \
    FROM remediation_audit WHERE phase_rank = 9 AND overall_phase <> 'completed'";

#[cfg(test)]
mod tests {
    use remaudit_model::histogram::percentile_cont;

    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    #[test]
    fn series_buckets_cover_the_window_and_count_each_hour_once() {
        let window =
            Window::new(t("2026-11-20T00:00:00Z"), t("2026-11-20T06:00:00Z"), false).unwrap();
        let mut q = AnalyticsQuery::new(window);
        q.bucket = Some(Duration::hours(2));
        let rows = vec![
            OutcomeRow {
                hour: t("2026-11-20T00:00:00Z"),
                phase: Some("completed".into()),
                count: 3,
            },
            OutcomeRow {
                hour: t("2026-11-20T01:00:00Z"),
                phase: Some("failed".into()),
                count: 1,
            },
            OutcomeRow {
                hour: t("2026-11-20T05:00:00Z"),
                phase: None,
                count: 2,
            },
        ];
        let (totals, series) = success_rate(&q, &rows);
        assert_eq!(
            (totals.started, totals.completed, totals.in_progress),
            (6, 3, 2)
        );
        assert_eq!(series.len(), 3);
        assert_eq!(series[0].counts.success_rate, Some(0.75));
        assert_eq!(series[1].counts.started, 0);
        assert_eq!(
            (series[2].since, series[2].until),
            (t("2026-11-20T04:00:00Z"), t("2026-11-20T06:00:00Z"))
        );
        assert_eq!(series[2].counts.in_progress, 2);
    }

    #[test]
    fn whole_weeks_are_epoch_weeks_inside_the_window() {
        // 1970-01-01 was a Thursday, so epoch weeks start on Thursdays.
        let (a, b) = whole_weeks(t("2026-11-02T00:00:00Z"), t("2026-11-21T00:00:00Z"));
        assert_eq!(
            (a, b),
            (t("2026-11-05T00:00:00Z"), t("2026-11-19T00:00:00Z"))
        );
        let (a, b) = whole_weeks(t("2026-11-05T00:00:00Z"), t("2026-11-12T00:00:00Z"));
        assert_eq!(
            (a, b),
            (t("2026-11-05T00:00:00Z"), t("2026-11-12T00:00:00Z"))
        );
        let until = t("2026-11-10T00:00:00Z");
        assert_eq!(
            whole_weeks(t("2026-11-02T00:00:00Z"), until),
            (until, until)
        );
    }

    /// The figures the streamed computation must reproduce exactly.
    fn sorted_figures(name: &str, mut values: Vec<i64>) -> PhaseDurations {
        values.sort_unstable();
        let seconds: Vec<f64> = values.iter().map(|&v| approx_f64(v) / 1e6).collect();
        let sum: i128 = values.iter().map(|&v| i128::from(v)).sum();
        PhaseDurations {
            final_phase: name.to_owned(),
            count: values.len() as u64,
            avg_seconds: approx_f64(sum) / approx_f64(values.len()) / 1e6,
            p50_seconds: percentile_cont(&seconds, 0.5).unwrap_or(0.0),
            p95_seconds: percentile_cont(&seconds, 0.95).unwrap_or(0.0),
            p99_seconds: percentile_cont(&seconds, 0.99).unwrap_or(0.0),
        }
    }

    proptest::proptest! {
        #[test]
        fn streamed_percentiles_equal_percentile_cont_of_the_sorted_values(
            rows in proptest::collection::vec((0_usize..4, 0_i64..10_000_000_000), 0..400)
        ) {
            let names = ["failed", "completed", "timeout", "odd"];
            let mut rows: Vec<(String, i64)> =
                rows.into_iter().map(|(p, v)| (names[p].to_owned(), v)).collect();
            let mut counts: HashMap<String, i64> = HashMap::new();
            for (p, _) in &rows {
                *counts.entry(p.clone()).or_default() += 1;
            }
            rows.sort_by_key(|(_, v)| *v);
            let mut exact = ExactDurations::new(counts);
            for (p, v) in &rows {
                exact.add(p, *v);
            }
            let q = AnalyticsQuery::new(Window::new(t("2026-11-20T00:00:00Z"), t("2026-11-21T00:00:00Z"), true).unwrap());
            let got = exact.report(&q, Source::Rows).phases;
            let mut want = Vec::new();
            for name in ["completed", "failed", "timeout", "odd"] {
                let values: Vec<i64> = rows.iter().filter(|(p, _)| p == name).map(|(_, v)| *v).collect();
                if !values.is_empty() {
                    want.push(sorted_figures(name, values));
                }
            }
            if !rows.is_empty() {
                want.push(sorted_figures("all", rows.iter().map(|(_, v)| *v).collect()));
            }
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn samples_land_in_their_groups() {
        let rows = [(0, "a"), (2, "b"), (0, "c"), (7, "ignored")].map(|(i, r)| (i, r.to_owned()));
        assert_eq!(
            samples_by_group(3, rows),
            [
                vec!["a".to_owned(), "c".to_owned()],
                vec![],
                vec!["b".to_owned()]
            ]
        );
    }
}
