//! The analytics questions over the archive and the live remediations
//! together: success rate, durations, slowest, failures and retries.
//!
//! A question reads one set of rows, `r`: the archived remediations of the
//! weeks its window touches, less any the caller also holds live, plus the
//! live remediations the caller passes (those the service still holds in the
//! window: the legal holds of archived weeks, and the recent weeks of a
//! window that reaches past the archive). Each answer is then computed as
//! the service computes it from its remediations, with the same functions,
//! so that a week answers the same before and after it is archived.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use datafusion::arrow::array::{
    Array, ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::prelude::DataFrame;
use futures::StreamExt as _;
use remaudit_model::Phase;
use remaudit_model::StoredAudit;
use remaudit_model::analytics::{
    DurationsReport, FailuresReport, RemediationBrief, RemediationList, RetriesReport,
    SuccessRateReport,
};
use remaudit_model::histogram::duration_bin;
use remaudit_store::analytics::{
    AlertRow, AnalyticsQuery, BinRow, ExactDurations, FailureRow, MAX_PROGRESSION, OutcomeRow,
    SAMPLE_REASONS, SAMPLE_SCAN, Source, durations_from_bins, retry_groups, success_rate,
    top_failure_groups,
};
use remaudit_store::retention::ArchiveTable;

use crate::{ArchiveQuery, ArchiveQueryError, Listed, brief, json_rows, read_only, register, utc};

/// Most live remediations a question over the archive takes in with the
/// archive's: they are held in memory while it runs.
pub const MAX_LIVE_ROWS: usize = 100_000;

/// Most bytes of text (names, reasons, status snapshots) those live
/// remediations may hold.
pub const MAX_LIVE_BYTES: usize = 256 << 20;

/// The live remediations of a question's window, read a page at a time,
/// within [`MAX_LIVE_ROWS`] and [`MAX_LIVE_BYTES`].
#[derive(Debug, Default)]
pub struct LiveRows {
    rows: Vec<StoredAudit>,
    bytes: usize,
}

impl LiveRows {
    /// Takes in one page.
    ///
    /// # Errors
    /// Past either bound, with the reason, in words for the caller.
    pub fn take(&mut self, page: Vec<StoredAudit>) -> Result<(), String> {
        for row in &page {
            self.bytes += row_bytes(row);
        }
        self.rows.extend(page);
        if self.rows.len() > MAX_LIVE_ROWS || self.bytes > MAX_LIVE_BYTES {
            return Err(format!(
                "the window holds more than {MAX_LIVE_ROWS} remediations (or {} MiB of them) that \
                 the service still keeps, and a question over the archive holds each of them to \
                 count them with the archive's: end the window nearer the archive's weeks, or ask \
                 without the archive",
                MAX_LIVE_BYTES >> 20
            ));
        }
        Ok(())
    }

    /// The rows taken in.
    #[must_use]
    pub fn rows(&self) -> &[StoredAudit] {
        &self.rows
    }
}

/// About how many bytes of text a row holds.
fn row_bytes(r: &StoredAudit) -> usize {
    let texts = [
        Some(&r.namespace),
        Some(&r.alert_fingerprint),
        Some(&r.remediation_name),
        Some(&r.overall_phase),
        r.remediation_processing_name.as_ref(),
        r.ai_analysis_name.as_ref(),
        r.workflow_execution_name.as_ref(),
        r.kubernetes_execution_name.as_ref(),
        r.timeout_phase.as_ref(),
        r.failure_phase.as_ref(),
        r.failure_reason.as_ref(),
    ];
    let statuses = r
        .service_crd_statuses
        .as_ref()
        .map_or(0, |v| v.to_string().len());
    std::mem::size_of::<StoredAudit>()
        + statuses
        + texts.iter().flatten().map(|t| t.len()).sum::<usize>()
}

/// Adds `archived` (an alert's archived remediations of `live`'s window, as
/// [`ArchiveQuery::postmortem`] gives them) to a live post-mortem: one list,
/// newest first, within the answer's limit; a remediation in both places
/// (its batch was still being written) is listed once.
pub fn merge_postmortem(live: &mut RemediationList, archived: Vec<RemediationBrief>) {
    let limit = live.query.limit.unwrap_or(10);
    let known: std::collections::HashSet<i64> = live.items.iter().map(|r| r.id).collect();
    live.items
        .extend(archived.into_iter().filter(|r| !known.contains(&r.id)));
    live.items
        .sort_by(|a, b| b.start_time.cmp(&a.start_time).then(b.id.cmp(&a.id)));
    live.items
        .truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Source::Archive.name().clone_into(&mut live.query.source);
}

/// The columns a question reads, as the archive files type them.
const COLUMNS: [(&str, Kind); 15] = [
    ("id", Kind::Int),
    ("namespace", Kind::Text),
    ("alert_fingerprint", Kind::Text),
    ("remediation_name", Kind::Text),
    ("overall_phase", Kind::Text),
    ("phase_rank", Kind::Int),
    ("start_time", Kind::Time),
    ("completion_time", Kind::Time),
    ("duration_us", Kind::Int),
    ("duration_bin", Kind::Int),
    ("failure_phase", Kind::Text),
    ("failure_reason", Kind::Text),
    ("timeout_phase", Kind::Text),
    ("timeout_time", Kind::Time),
    ("service_crd_statuses", Kind::Text),
];

#[derive(Clone, Copy)]
enum Kind {
    Int,
    Text,
    Time,
}

/// The condition that picks a failure group's phase, as the service groups them.
const FAILURE_PHASE: &str =
    "COALESCE(CASE WHEN overall_phase = 'failed' THEN failure_phase ELSE timeout_phase END, '')";

/// The finished remediations with a duration, of the window's rows.
const FINISHED: &str = "FROM r WHERE phase_rank = 9 AND duration_us IS NOT NULL";

/// The failed and timed-out remediations of the window's rows.
const FAILURES: &str = "FROM r WHERE phase_rank = 9 AND overall_phase <> 'completed'";

/// Each alert's attempts and outcomes in the window's rows, as `g`.
const GROUPS: &str = ", g AS (SELECT alert_fingerprint, count(*) AS attempts, \
    sum(CASE WHEN phase_rank = 9 AND overall_phase = 'completed' THEN 1 ELSE 0 END) AS completed, \
    sum(CASE WHEN phase_rank = 9 AND overall_phase = 'failed' THEN 1 ELSE 0 END) AS failed, \
    sum(CASE WHEN phase_rank = 9 AND overall_phase NOT IN ('completed', 'failed') THEN 1 ELSE 0 END) AS timed_out, \
    max(start_time) AS last_start FROM r GROUP BY alert_fingerprint)";

/// Longest failure reason a sample shows, in characters.
const SAMPLE_REASON_CHARS: usize = 100;

/// The window's rows registered for one question, dropped after it.
struct Rows<'a> {
    archive: &'a ArchiveQuery,
    /// The summary files of the window's weeks.
    files: Vec<&'a Listed>,
    /// `WITH r AS (…)`: the rows every statement of the question reads.
    with: String,
    /// The window's and filters' parameters, `$1` onwards.
    params: Vec<ScalarValue>,
    /// The tables registered for this question.
    names: [String; 2],
}

impl Drop for Rows<'_> {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = self.archive.ctx.deregister_table(name.as_str());
        }
    }
}

impl Rows<'_> {
    /// Runs `sql` (which reads `r`) with the window's parameters then `more`.
    async fn run(
        &self,
        sql: &str,
        more: Vec<ScalarValue>,
    ) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, ArchiveQueryError> {
        let mut params = self.params.clone();
        params.extend(more);
        let answer = self
            .archive
            .run(&format!("{} {sql}", self.with), params, &self.files)
            .await?;
        json_rows(&answer)
    }

    /// The next parameter's number, after `more` others.
    fn next(&self, more: usize) -> usize {
        self.params.len() + more + 1
    }

    /// The statement `sql` as a frame to stream, under the archive's limits.
    async fn frame(&self, sql: &str) -> Result<DataFrame, ArchiveQueryError> {
        self.archive.check_sizes(self.files.iter().copied()).await?;
        self.archive
            .ctx
            .sql_with_options(&format!("{} {sql}", self.with), read_only())
            .await
            .and_then(|f| f.with_param_values(self.params.clone()))
            .map_err(|e| ArchiveQueryError::Query(e.to_string()))
    }
}

impl ArchiveQuery {
    /// Whether the archive holds any week that `[since, until)` touches.
    #[must_use]
    pub fn holds(&self, since: DateTime<Utc>, until: DateTime<Utc>) -> bool {
        !self.summaries(since, until).is_empty()
    }

    /// The summary files of the weeks `[since, until)` touches.
    pub(crate) fn summaries(&self, since: DateTime<Utc>, until: DateTime<Utc>) -> Vec<&Listed> {
        self.files
            .iter()
            .filter(|f| f.table == ArchiveTable::Remediations)
            .filter(|f| {
                f.week.is_none_or(|monday| {
                    let from = monday.and_time(chrono::NaiveTime::MIN).and_utc();
                    from < until && from + TimeDelta::weeks(1) > since
                })
            })
            .collect()
    }

    /// Registers the rows of `q`'s window: the archived ones not in `live`, and `live`.
    fn rows<'a>(
        &'a self,
        q: &AnalyticsQuery,
        live: &[StoredAudit],
    ) -> Result<Rows<'a>, ArchiveQueryError> {
        let n = self
            .windows
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let names = [format!("archived_{n}"), format!("live_{n}")];
        let files = self.summaries(q.window.since, q.window.until);
        let mut rows = Rows {
            archive: self,
            files,
            with: String::new(),
            params: Vec::new(),
            names,
        };
        register(
            &self.ctx,
            &rows.names[0],
            ArchiveTable::Remediations,
            &rows.files,
        )?;
        let batch = live_batch(live)?;
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]])
            .map_err(|e| ArchiveQueryError::Archive(format!("cannot register live rows: {e}")))?;
        self.ctx
            .register_table(rows.names[1].as_str(), Arc::new(table))
            .map_err(|e| ArchiveQueryError::Archive(format!("cannot register live rows: {e}")))?;
        let mut params = vec![utc(q.window.since), utc(q.window.until)];
        let mut filters = "start_time >= $1 AND start_time < $2".to_owned();
        if let Some(ns) = &q.namespace {
            params.push(ScalarValue::from(ns.as_str()));
            let _ = write!(filters, " AND namespace = ${}", params.len());
        }
        if let Some(fp) = &q.alert_fingerprint {
            params.push(ScalarValue::from(fp.as_str()));
            let _ = write!(filters, " AND alert_fingerprint = ${}", params.len());
        }
        let columns = COLUMNS.map(|(name, _)| name).join(", ");
        let [archived, live] = &rows.names;
        rows.with = format!(
            "WITH r AS (SELECT {columns} FROM {archived} WHERE deleted_at IS NULL AND {filters} \
             AND id NOT IN (SELECT id FROM {live}) \
             UNION ALL SELECT {columns} FROM {live} WHERE {filters})"
        );
        rows.params = params;
        Ok(rows)
    }

    /// How many remediations of `q`'s window completed, failed or timed out,
    /// archived and `live` together.
    ///
    /// # Errors
    /// As [`ArchiveQuery::sql`].
    pub async fn success_rate(
        &self,
        q: &AnalyticsQuery,
        live: &[StoredAudit],
    ) -> Result<SuccessRateReport, ArchiveQueryError> {
        let rows = self.rows(q, live)?;
        let answer = rows
            .run(
                "SELECT date_trunc('hour', start_time) AS hour, \
                 CASE WHEN phase_rank = 9 THEN overall_phase END AS phase, count(*) AS n \
                 FROM r GROUP BY 1, 2",
                Vec::new(),
            )
            .await?;
        let outcomes = answer
            .iter()
            .map(|row| {
                Ok(OutcomeRow {
                    hour: time(row, "hour")?,
                    phase: text(row, "phase"),
                    count: int(row, "n")?,
                })
            })
            .collect::<Result<Vec<_>, ArchiveQueryError>>()?;
        let (totals, series) = success_rate(q, &outcomes);
        Ok(SuccessRateReport {
            query: q.echo(Source::Archive, false),
            totals,
            bucket_seconds: q.bucket.map(|b| b.num_seconds()),
            series,
        })
    }

    /// How long the remediations of `q`'s window took, by final phase:
    /// exact figures for an exact window, histogram figures for an aligned
    /// one, as the service answers.
    ///
    /// # Errors
    /// As [`ArchiveQuery::sql`].
    pub async fn durations(
        &self,
        q: &AnalyticsQuery,
        live: &[StoredAudit],
    ) -> Result<DurationsReport, ArchiveQueryError> {
        let rows = self.rows(q, live)?;
        if !q.exact() {
            let answer = rows
                .run(
                    "SELECT overall_phase AS phase, duration_bin AS bin, count(*) AS n, \
                     sum(duration_us) AS total FROM r \
                     WHERE phase_rank = 9 AND duration_bin IS NOT NULL GROUP BY 1, 2",
                    Vec::new(),
                )
                .await?;
            let bins = answer
                .iter()
                .map(|row| {
                    Ok(BinRow {
                        phase: text(row, "phase").unwrap_or_default(),
                        bin: i32::try_from(int(row, "bin")?).map_err(|_| bad("bin"))?,
                        count: int(row, "n")?,
                        sum_micros: int(row, "total")?,
                    })
                })
                .collect::<Result<Vec<_>, ArchiveQueryError>>()?;
            return Ok(durations_from_bins(q, Source::Archive, &bins));
        }
        // Exact: the counts per phase, then every duration in ascending
        // order, of which only the ranks the percentiles read are kept.
        let counts = rows
            .run(
                &format!("SELECT overall_phase, count(*) AS n {FINISHED} GROUP BY 1"),
                Vec::new(),
            )
            .await?
            .iter()
            .map(|row| {
                Ok((
                    text(row, "overall_phase").unwrap_or_default(),
                    int(row, "n")?,
                ))
            })
            .collect::<Result<Vec<(String, i64)>, ArchiveQueryError>>()?;
        let mut exact = ExactDurations::new(counts);
        let stream = async {
            let frame = rows
                .frame(&format!(
                    "SELECT overall_phase, duration_us {FINISHED} ORDER BY duration_us"
                ))
                .await?;
            let mut batches = frame
                .execute_stream()
                .await
                .map_err(|e| crate::failed(&e))?;
            while let Some(batch) = batches.next().await {
                let batch = batch.map_err(|e| crate::failed(&e))?;
                let phases = column::<StringArray>(&batch, 0)?;
                let micros = column::<Int64Array>(&batch, 1)?;
                for i in 0..batch.num_rows() {
                    exact.add(phases.value(i), micros.value(i));
                }
            }
            Ok::<_, ArchiveQueryError>(())
        };
        tokio::time::timeout(self.limits.time, stream)
            .await
            .map_err(|_| ArchiveQueryError::Timeout(self.limits.time))??;
        Ok(exact.report(q, Source::Archive))
    }

    /// One alert's remediations of `q`'s window (`q` names the alert),
    /// archived and `live` together, newest first, at most `q.limit`: the
    /// post-mortem, for windows the service does not answer alone.
    ///
    /// # Errors
    /// As [`ArchiveQuery::sql`].
    pub async fn postmortem_over(
        &self,
        q: &AnalyticsQuery,
        live: &[StoredAudit],
    ) -> Result<RemediationList, ArchiveQueryError> {
        let columns = COLUMNS
            .iter()
            .map(|(name, _)| *name)
            .filter(|name| *name != "service_crd_statuses")
            .collect::<Vec<_>>()
            .join(", ");
        self.list(
            q,
            live,
            &format!("SELECT {columns} FROM r ORDER BY start_time DESC, id DESC"),
        )
        .await
    }

    /// The remediations `select` (over `r`, ordered) lists, at most `q.limit`.
    async fn list(
        &self,
        q: &AnalyticsQuery,
        live: &[StoredAudit],
        select: &str,
    ) -> Result<RemediationList, ArchiveQueryError> {
        let rows = self.rows(q, live)?;
        let answer = rows
            .run(
                &format!("{select} LIMIT ${}", rows.next(0)),
                vec![ScalarValue::from(i64::from(q.limit))],
            )
            .await?;
        Ok(RemediationList {
            query: q.echo(Source::Archive, true),
            items: answer.iter().map(brief).collect::<Result<_, _>>()?,
        })
    }

    /// The finished remediations of `q`'s window that took longest.
    ///
    /// # Errors
    /// As [`ArchiveQuery::sql`].
    pub async fn slowest(
        &self,
        q: &AnalyticsQuery,
        live: &[StoredAudit],
    ) -> Result<RemediationList, ArchiveQueryError> {
        self.list(
            q,
            live,
            "SELECT * FROM r WHERE duration_us IS NOT NULL \
             ORDER BY duration_us DESC, start_time DESC, id DESC",
        )
        .await
    }

    /// Failures and timeouts of `q`'s window grouped by the phase they
    /// happened in, most common first, each with its latest distinct reasons.
    ///
    /// # Errors
    /// As [`ArchiveQuery::sql`].
    pub async fn failures(
        &self,
        q: &AnalyticsQuery,
        live: &[StoredAudit],
    ) -> Result<FailuresReport, ArchiveQueryError> {
        let rows = self.rows(q, live)?;
        let groups = rows
            .run(
                &format!(
                    "SELECT overall_phase AS outcome, {FAILURE_PHASE} AS phase, \
                     count(*) AS failures, count(DISTINCT alert_fingerprint) AS unique_alerts \
                     {FAILURES} GROUP BY 1, 2"
                ),
                Vec::new(),
            )
            .await?
            .iter()
            .map(|row| {
                Ok(FailureRow {
                    outcome: text(row, "outcome").unwrap_or_default(),
                    phase: text(row, "phase").unwrap_or_default(),
                    count: int(row, "failures")?,
                    unique_alerts: int(row, "unique_alerts")?,
                })
            })
            .collect::<Result<Vec<_>, ArchiveQueryError>>()?;
        let groups = top_failure_groups(groups, q.limit);
        let mut samples: HashMap<(String, String), Vec<String>> = HashMap::new();
        if !groups.is_empty() {
            // The listed groups' latest failures with a reason, newest first
            // (their reasons cut to the length a sample shows), and of those
            // each group's first distinct reasons, all in the engine.
            let keys: Vec<String> = (0..groups.len())
                .map(|i| format!("${}", rows.next(i + 1)))
                .collect();
            let mut more = vec![ScalarValue::from(SAMPLE_SCAN)];
            more.extend(
                groups
                    .iter()
                    .map(|g| ScalarValue::from(format!("{}\u{1f}{}", g.outcome, g.phase))),
            );
            let latest = rows
                .run(
                    &format!(
                        ", s AS (SELECT overall_phase AS outcome, {FAILURE_PHASE} AS phase, \
                         substr(failure_reason, 1, {SAMPLE_REASON_CHARS}) AS reason, row_number() OVER \
                         (PARTITION BY overall_phase, {FAILURE_PHASE} ORDER BY start_time DESC, id DESC) AS rn \
                         {FAILURES} AND failure_reason IS NOT NULL \
                         AND concat(overall_phase, chr(31), {FAILURE_PHASE}) IN ({})), \
                         firsts AS (SELECT outcome, phase, reason, min(rn) AS first FROM s \
                         WHERE rn <= ${} GROUP BY outcome, phase, reason) \
                         SELECT outcome, phase, reason FROM (SELECT outcome, phase, reason, \
                         row_number() OVER (PARTITION BY outcome, phase ORDER BY first) AS k \
                         FROM firsts) AS picked WHERE k <= {SAMPLE_REASONS} ORDER BY outcome, phase, k",
                        keys.join(", "),
                        rows.next(0)
                    ),
                    more,
                )
                .await?;
            for row in &latest {
                samples
                    .entry((
                        text(row, "outcome").unwrap_or_default(),
                        text(row, "phase").unwrap_or_default(),
                    ))
                    .or_default()
                    .push(text(row, "reason").unwrap_or_default());
            }
        }
        let items = groups
            .into_iter()
            .map(|g| {
                let reasons = samples
                    .remove(&(g.outcome.clone(), g.phase.clone()))
                    .unwrap_or_default();
                g.into_group(reasons)
            })
            .collect();
        Ok(FailuresReport {
            query: q.echo(Source::Archive, true),
            items,
        })
    }

    /// The alerts of `q`'s window remediated more than once, most attempts
    /// first, with the phases their latest attempts ended in.
    ///
    /// # Errors
    /// As [`ArchiveQuery::sql`].
    pub async fn retries(
        &self,
        q: &AnalyticsQuery,
        live: &[StoredAudit],
    ) -> Result<RetriesReport, ArchiveQueryError> {
        let rows = self.rows(q, live)?;
        let totals = rows
            .run(
                &format!(
                    "{GROUPS} SELECT count(*) AS alerts, \
                     COALESCE(sum(CASE WHEN attempts > 1 THEN 1 ELSE 0 END), 0) AS retried, \
                     COALESCE(sum(attempts), 0) AS total FROM g"
                ),
                Vec::new(),
            )
            .await?;
        let total = |column: &str| -> Result<u64, ArchiveQueryError> {
            match totals.first() {
                Some(row) => Ok(u64::try_from(int(row, column)?).unwrap_or(0)),
                None => Ok(0),
            }
        };
        let (alerts, alerts_retried, attempts) =
            (total("alerts")?, total("retried")?, total("total")?);
        let mut top = rows
            .run(
                &format!(
                    "{GROUPS} SELECT * FROM g WHERE attempts > 1 \
                     ORDER BY attempts DESC, last_start DESC, alert_fingerprint LIMIT ${}",
                    rows.next(0)
                ),
                vec![ScalarValue::from(i64::from(q.limit))],
            )
            .await?
            .iter()
            .map(|row| {
                Ok(AlertRow {
                    alert_fingerprint: text(row, "alert_fingerprint").unwrap_or_default(),
                    attempts: int(row, "attempts")?,
                    completed: int(row, "completed")?,
                    failed: int(row, "failed")?,
                    timed_out: int(row, "timed_out")?,
                    last_start: time(row, "last_start")?,
                })
            })
            .collect::<Result<Vec<_>, ArchiveQueryError>>()?;
        top.sort_by(|a, b| {
            b.attempts
                .cmp(&a.attempts)
                .then(b.last_start.cmp(&a.last_start))
                .then(a.alert_fingerprint.cmp(&b.alert_fingerprint))
        });
        let mut phases: HashMap<String, Vec<String>> = HashMap::new();
        if !top.is_empty() {
            let listed: Vec<String> = (0..top.len())
                .map(|i| format!("${}", rows.next(i + 1)))
                .collect();
            let mut more = vec![ScalarValue::from(
                i64::try_from(MAX_PROGRESSION).unwrap_or(100),
            )];
            more.extend(
                top.iter()
                    .map(|g| ScalarValue::from(g.alert_fingerprint.as_str())),
            );
            let latest = rows
                .run(
                    &format!(
                        "SELECT alert_fingerprint, overall_phase FROM (SELECT alert_fingerprint, \
                         overall_phase, row_number() OVER (PARTITION BY alert_fingerprint \
                         ORDER BY start_time DESC, id DESC) AS rn FROM r \
                         WHERE alert_fingerprint IN ({})) AS p WHERE rn <= ${} \
                         ORDER BY alert_fingerprint, rn",
                        listed.join(", "),
                        rows.next(0)
                    ),
                    more,
                )
                .await?;
            for row in &latest {
                phases
                    .entry(text(row, "alert_fingerprint").unwrap_or_default())
                    .or_default()
                    .push(text(row, "overall_phase").unwrap_or_default());
            }
        }
        let items = retry_groups(top, phases);
        Ok(RetriesReport {
            query: q.echo(Source::Archive, true),
            alerts,
            alerts_retried,
            attempts,
            items,
        })
    }
}

/// The live remediations as a table of [`COLUMNS`].
fn live_batch(live: &[StoredAudit]) -> Result<RecordBatch, ArchiveQueryError> {
    let fields: Vec<Field> = COLUMNS
        .iter()
        .map(|(name, kind)| {
            let data_type = match kind {
                Kind::Int => DataType::Int64,
                Kind::Text => DataType::Utf8,
                Kind::Time => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            };
            Field::new(*name, data_type, true)
        })
        .collect();
    let ints = |f: &dyn Fn(&StoredAudit) -> Option<i64>| -> ArrayRef {
        Arc::new(live.iter().map(f).collect::<Int64Array>())
    };
    let texts = |f: &dyn Fn(&StoredAudit) -> Option<String>| -> ArrayRef {
        Arc::new(live.iter().map(f).collect::<StringArray>())
    };
    let times = |f: &dyn Fn(&StoredAudit) -> Option<DateTime<Utc>>| -> ArrayRef {
        Arc::new(
            live.iter()
                .map(|r| f(r).map(|t| t.timestamp_micros()))
                .collect::<TimestampMicrosecondArray>()
                .with_timezone("UTC"),
        )
    };
    let micros = |r: &StoredAudit| {
        r.completion_time
            .and_then(|end| (end - r.start_time).num_microseconds())
    };
    let columns: Vec<ArrayRef> = vec![
        ints(&|r| Some(r.id)),
        texts(&|r| Some(r.namespace.clone())),
        texts(&|r| Some(r.alert_fingerprint.clone())),
        texts(&|r| Some(r.remediation_name.clone())),
        texts(&|r| Some(r.overall_phase.clone())),
        ints(&|r| Some(i64::from(Phase::parse(&r.overall_phase).rank().0))),
        times(&|r| Some(r.start_time)),
        times(&|r| r.completion_time),
        ints(&micros),
        ints(&|r| micros(r).map(|us| i64::from(duration_bin(us)))),
        texts(&|r| r.failure_phase.clone()),
        texts(&|r| r.failure_reason.clone()),
        texts(&|r| r.timeout_phase.clone()),
        times(&|r| r.timeout_time),
        texts(&|r| r.service_crd_statuses.as_ref().map(ToString::to_string)),
    ];
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| ArchiveQueryError::Archive(format!("cannot hold the live rows: {e}")))
}

/// An answer's column `i` as an array of type `A`.
fn column<A: Array + 'static>(batch: &RecordBatch, i: usize) -> Result<&A, ArchiveQueryError> {
    batch
        .column(i)
        .as_any()
        .downcast_ref::<A>()
        .ok_or_else(|| bad(batch.schema().field(i).name()))
}

fn bad(column: &str) -> ArchiveQueryError {
    ArchiveQueryError::Query(format!("the answer's {column} is not of the type expected"))
}

fn text(row: &serde_json::Map<String, serde_json::Value>, key: &str) -> Option<String> {
    row.get(key)
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
}

fn int(
    row: &serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Result<i64, ArchiveQueryError> {
    row.get(key)
        .and_then(serde_json::Value::as_i64)
        .ok_or_else(|| bad(key))
}

fn time(
    row: &serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Result<DateTime<Utc>, ArchiveQueryError> {
    text(row, key)
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| bad(key))
}
