//! Analytics on PostgreSQL: rollups where they can answer, the remediations otherwise.

use chrono::{DateTime, Utc};
use remaudit_model::analytics::{
    DurationsReport, FailuresReport, RemediationList, RetriesReport, SuccessRateReport,
};
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{Postgres, QueryBuilder, Row};

use crate::StoreError;
use crate::analytics::{
    self, ALERT_GROUP_SQL, AlertRow, AnalyticsQuery, BinRow, FailureRow, MAX_PROGRESSION,
    OutcomeRow, SAMPLE_SCAN, Source, bins_sql, durations_from_bins, failure_groups_sql,
    failure_phase_column, order_phases, postmortem_sql, push_filters, push_sample_pick,
    retry_groups, samples_by_group, slowest_sql, success_rate, top_failure_groups, whole_weeks,
};
use remaudit_model::analytics::PhaseDurations;

type Qb = QueryBuilder<Postgres>;

fn filtered(head: &str, q: &AnalyticsQuery) -> Qb {
    analytics::filtered(head, q, |t| t)
}

/// Selects the daily and weekly rollup rows that tile the (day-aligned)
/// window: whole weeks inside it, whole days around them.
fn push_day_buckets(qb: &mut Qb, q: &AnalyticsQuery) {
    let (since, until) = (q.window.since, q.window.until);
    let (first_week, end_of_weeks) = whole_weeks(since, until);
    qb.push(" WHERE ((bucket_days = 1 AND bucket >= ")
        .push_bind(since)
        .push(" AND bucket < ")
        .push_bind(first_week)
        .push(") OR (bucket_days = 7 AND bucket >= ")
        .push_bind(first_week)
        .push(" AND bucket < ")
        .push_bind(end_of_weeks)
        .push(") OR (bucket_days = 1 AND bucket >= ")
        .push_bind(end_of_weeks)
        .push(" AND bucket < ")
        .push_bind(until)
        .push("))");
    if let Some(ns) = &q.namespace {
        qb.push(" AND namespace = ").push_bind(ns.clone());
    }
}

fn alert_row(row: &PgRow) -> Result<AlertRow, sqlx::Error> {
    Ok(AlertRow {
        alert_fingerprint: row.try_get("alert_fingerprint")?,
        attempts: row.try_get("attempts")?,
        completed: row.try_get("completed")?,
        failed: row.try_get("failed")?,
        timed_out: row.try_get("timed_out")?,
        last_start: row.try_get("last_start")?,
    })
}

/// Runs a query that reads the latest rows of a group (one alert's
/// remediations, one failure phase's reasons) in index order.
///
/// The planner estimates every group at the average row count, so for a busy
/// group (or a parameter it cannot see, as in a lateral join) it would
/// rather collect all the group's rows in the window with a bitmap scan and
/// sort them than walk the index and stop after `LIMIT` rows. Bitmap scans
/// are turned off for this one transaction.
async fn latest_in_index_order(pool: &PgPool, mut qb: Qb) -> Result<Vec<PgRow>, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL enable_bitmapscan = off")
        .execute(&mut *tx)
        .await?;
    let rows = qb.build().fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(rows)
}

pub(crate) async fn postmortem(
    pool: &PgPool,
    q: &AnalyticsQuery,
) -> Result<RemediationList, StoreError> {
    Ok(RemediationList {
        query: q.echo(Source::Rows, true),
        items: analytics::briefs(&latest_in_index_order(pool, postmortem_sql(q, |t| t)).await?)?,
    })
}

pub(crate) async fn slowest(
    pool: &PgPool,
    q: &AnalyticsQuery,
) -> Result<RemediationList, StoreError> {
    Ok(RemediationList {
        query: q.echo(Source::Rows, true),
        items: analytics::briefs(&slowest_sql(q, |t| t).build().fetch_all(pool).await?)?,
    })
}

fn outcome_rows(rows: &[PgRow]) -> Result<Vec<OutcomeRow>, sqlx::Error> {
    rows.iter()
        .map(|r| {
            Ok(OutcomeRow {
                hour: r.try_get("hour")?,
                phase: r.try_get("phase")?,
                count: r.try_get("n")?,
            })
        })
        .collect()
}

pub(crate) async fn success_rate_report(
    pool: &PgPool,
    q: &AnalyticsQuery,
) -> Result<SuccessRateReport, StoreError> {
    let (source, rows) = if q.outcomes_from_rollup() {
        let mut finished: Qb = QueryBuilder::new(
            "SELECT bucket AS hour, final_phase AS phase, remediations AS n \
             FROM remediation_rollup_outcomes WHERE namespace = ",
        );
        finished
            .push_bind(q.scope().to_owned())
            .push(" AND bucket >= ")
            .push_bind(q.window.since)
            .push(" AND bucket < ")
            .push_bind(q.window.until);
        let mut running = filtered(
            "SELECT date_trunc('hour', start_time, 'UTC') AS hour, NULL::text AS phase, count(*) AS n \
             FROM remediation_audit WHERE phase_rank < 9",
            q,
        );
        running.push(" GROUP BY 1");
        let mut rows = outcome_rows(&finished.build().fetch_all(pool).await?)?;
        rows.extend(outcome_rows(&running.build().fetch_all(pool).await?)?);
        (Source::Rollup, rows)
    } else {
        let mut qb = filtered(
            "SELECT date_trunc('hour', start_time, 'UTC') AS hour, \
             CASE WHEN phase_rank = 9 THEN overall_phase END AS phase, count(*) AS n \
             FROM remediation_audit WHERE 1 = 1",
            q,
        );
        qb.push(" GROUP BY 1, 2");
        (
            Source::Rows,
            outcome_rows(&qb.build().fetch_all(pool).await?)?,
        )
    };
    let (totals, series) = success_rate(q, &rows);
    Ok(SuccessRateReport {
        query: q.echo(source, false),
        totals,
        bucket_seconds: q.bucket.map(|b| b.num_seconds()),
        series,
    })
}

pub(crate) async fn durations_report(
    pool: &PgPool,
    q: &AnalyticsQuery,
) -> Result<DurationsReport, StoreError> {
    if q.exact() {
        let mut qb = filtered(
            "SELECT COALESCE(overall_phase, 'all') AS phase, count(*) AS n, \
             (avg(duration_us) / 1e6)::float8 AS avg, \
             percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_us) / 1e6 AS p50, \
             percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_us) / 1e6 AS p95, \
             percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_us) / 1e6 AS p99 \
             FROM remediation_audit WHERE phase_rank = 9 AND duration_us IS NOT NULL",
            q,
        );
        qb.push(" GROUP BY GROUPING SETS ((overall_phase), ())");
        let phases = qb
            .build()
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| {
                Ok(PhaseDurations {
                    final_phase: r.try_get("phase")?,
                    count: u64::try_from(r.try_get::<i64, _>("n")?).unwrap_or(0),
                    avg_seconds: r.try_get::<Option<f64>, _>("avg")?.unwrap_or(0.0),
                    p50_seconds: r.try_get::<Option<f64>, _>("p50")?.unwrap_or(0.0),
                    p95_seconds: r.try_get::<Option<f64>, _>("p95")?.unwrap_or(0.0),
                    p99_seconds: r.try_get::<Option<f64>, _>("p99")?.unwrap_or(0.0),
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?
            .into_iter()
            .filter(|p| p.count > 0)
            .collect();
        return Ok(DurationsReport {
            query: q.echo(Source::Rows, false),
            relative_error: 0.0,
            phases: order_phases(phases),
        });
    }
    let (source, mut qb) = if let Some(hours) = q.durations_rollup() {
        let mut qb: Qb = QueryBuilder::new(
            "SELECT final_phase AS phase, bin, sum(remediations)::int8 AS n, sum(duration_us)::int8 AS total \
             FROM remediation_rollup_durations WHERE bucket_hours = ",
        );
        qb.push_bind(hours)
            .push(" AND namespace = ")
            .push_bind(q.scope().to_owned())
            .push(" AND bucket >= ")
            .push_bind(q.window.since)
            .push(" AND bucket < ")
            .push_bind(q.window.until)
            .push(" GROUP BY 1, 2");
        (Source::Rollup, qb)
    } else {
        (Source::Rows, bins_sql(q, |t| t))
    };
    let rows = qb.build_query_as::<BinRow>().fetch_all(pool).await?;
    Ok(durations_from_bins(q, source, &rows))
}

pub(crate) async fn failures_report(
    pool: &PgPool,
    q: &AnalyticsQuery,
) -> Result<FailuresReport, StoreError> {
    let (source, mut qb) = if q.alerts_from_rollup() {
        let mut qb: Qb = QueryBuilder::new(
            "SELECT outcome, phase, sum(failures)::int8 AS failures, count(*) AS unique_alerts \
             FROM (SELECT outcome, phase, alert_key, sum(failures) AS failures \
             FROM remediation_rollup_failures",
        );
        push_day_buckets(&mut qb, q);
        // Grouping by alert first lets a hash aggregate count distinct alerts
        // instead of the sort that count(DISTINCT …) would need.
        qb.push(" GROUP BY 1, 2, 3) AS per_alert GROUP BY 1, 2");
        (Source::Rollup, qb)
    } else {
        (Source::Rows, failure_groups_sql(q, |t| t))
    };
    let groups = top_failure_groups(
        qb.build_query_as::<FailureRow>().fetch_all(pool).await?,
        q.limit,
    );
    let samples = sample_reasons(pool, q, &groups).await?;
    let items = groups
        .into_iter()
        .zip(samples)
        .map(|(group, reasons)| group.into_group(reasons))
        .collect();
    Ok(FailuresReport {
        query: q.echo(source, true),
        items,
    })
}

/// The sample reasons of every group, in one query. Each group's latest
/// failures come from its own walk of a partial index on reasons
/// (`idx_failure_reasons`, `idx_timeout_reasons`, or with a namespace
/// `idx_failure_reasons_namespace`, `idx_timeout_reasons_namespace`), stopped after
/// [`SAMPLE_SCAN`] rows: a lateral join over the named phases of each
/// outcome, and a plain branch for the group without a phase.
async fn sample_reasons(
    pool: &PgPool,
    q: &AnalyticsQuery,
    groups: &[FailureRow],
) -> Result<Vec<Vec<String>>, StoreError> {
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    let mut qb: Qb = QueryBuilder::new("WITH s AS (");
    let mut branches = 0;
    for outcome in ["failed", "timeout"] {
        let mine = || {
            groups
                .iter()
                .enumerate()
                .filter(move |(_, g)| failure_phase_column(&g.outcome).0 == outcome)
        };
        let (phases, indices): (Vec<String>, Vec<i64>) = mine()
            .filter(|(_, g)| !g.phase.is_empty())
            .map(|(i, g)| (g.phase.clone(), i64::try_from(i).unwrap_or(i64::MAX)))
            .unzip();
        if !phases.is_empty() {
            if branches > 0 {
                qb.push(" UNION ALL ");
            }
            branches += 1;
            qb.push("SELECT g.i, x.reason, x.start_time, x.id FROM unnest(")
                .push_bind(phases)
                .push("::text[], ")
                .push_bind(indices)
                .push("::int8[]) AS g(phase, i), LATERAL (");
            push_latest_failures(&mut qb, q, outcome, true);
            qb.push(") AS x");
        }
        for (i, _) in mine().filter(|(_, g)| g.phase.is_empty()) {
            if branches > 0 {
                qb.push(" UNION ALL ");
            }
            branches += 1;
            qb.push(format_args!(
                "SELECT {i}::int8 AS i, x.reason, x.start_time, x.id FROM ("
            ));
            push_latest_failures(&mut qb, q, outcome, false);
            qb.push(") AS x");
        }
    }
    push_sample_pick(&mut qb);
    let rows = latest_in_index_order(pool, qb).await?;
    let rows = rows
        .iter()
        .map(|r| Ok((r.try_get("i")?, r.try_get("reason")?)))
        .collect::<Result<Vec<(i64, String)>, sqlx::Error>>()?;
    Ok(samples_by_group(groups.len(), rows))
}

/// The latest failures with a reason of one outcome in the window: of the
/// phase `g.phase` when `named`, of no phase otherwise.
fn push_latest_failures(qb: &mut Qb, q: &AnalyticsQuery, outcome: &str, named: bool) {
    let (outcome, column) = failure_phase_column(outcome);
    // Literals, not parameters, so that PostgreSQL can match the partial
    // indexes on reasons in a generic plan too.
    qb.push(format_args!(
        "SELECT substr(failure_reason, 1, 100) AS reason, start_time, id FROM remediation_audit \
         WHERE failure_reason IS NOT NULL AND overall_phase = '{outcome}' AND {column} {}",
        if named { "= g.phase" } else { "IS NULL" }
    ));
    push_filters(qb, q, |t: DateTime<Utc>| t);
    qb.push(" ORDER BY start_time DESC, id DESC LIMIT ")
        .push_bind(SAMPLE_SCAN);
}

pub(crate) async fn retries_report(
    pool: &PgPool,
    q: &AnalyticsQuery,
) -> Result<RetriesReport, StoreError> {
    let limit = i64::from(q.limit);
    let (source, mut qb) = if q.alerts_from_rollup() {
        // The rollups group alert keys; only the alerts that can make the
        // list (those tied with its last entry included) are looked up by
        // fingerprint, which breaks the remaining ties as the rows do.
        let mut qb: Qb = QueryBuilder::new(
            "WITH g AS (SELECT alert_key, sum(attempts)::int8 AS attempts, \
             sum(completed)::int8 AS completed, sum(failed)::int8 AS failed, \
             sum(timed_out)::int8 AS timed_out, max(last_start) AS last_start \
             FROM remediation_rollup_alerts",
        );
        push_day_buckets(&mut qb, q);
        qb.push(
            " GROUP BY alert_key), \
             ties AS (SELECT * FROM g WHERE attempts > 1 \
             ORDER BY attempts DESC, last_start DESC FETCH FIRST ",
        )
        .push_bind(limit)
        .push(
            " ROWS WITH TIES), \
             top AS (SELECT k.alert_fingerprint, ties.* FROM ties \
             JOIN remediation_alert_keys k USING (alert_key) \
             ORDER BY attempts DESC, last_start DESC, k.alert_fingerprint COLLATE \"C\" LIMIT ",
        );
        (Source::Rollup, qb)
    } else {
        let mut qb = QueryBuilder::new(format!("WITH g AS ({ALERT_GROUP_SQL}"));
        push_filters(&mut qb, q, |t| t);
        qb.push(
            " GROUP BY alert_fingerprint), \
             top AS (SELECT * FROM g WHERE attempts > 1 \
             ORDER BY attempts DESC, last_start DESC, alert_fingerprint COLLATE \"C\" LIMIT ",
        );
        (Source::Rows, qb)
    };
    // One pass over the groups gives the totals (on every row) and the top list.
    qb.push_bind(limit).push(
        "), totals AS (SELECT count(*) AS alerts, count(*) FILTER (WHERE attempts > 1) AS retried, \
         COALESCE(sum(attempts), 0)::int8 AS total FROM g) \
         SELECT totals.*, top.alert_fingerprint, top.attempts::int8, top.completed::int8, \
         top.failed::int8, top.timed_out::int8, top.last_start \
         FROM totals LEFT JOIN top ON true \
         ORDER BY top.attempts DESC, top.last_start DESC, top.alert_fingerprint COLLATE \"C\"",
    );
    let rows = qb.build().fetch_all(pool).await?;
    let total = |column: &str| -> Result<u64, sqlx::Error> {
        Ok(match rows.first() {
            Some(r) => u64::try_from(r.try_get::<i64, _>(column)?).unwrap_or(0),
            None => 0,
        })
    };
    let (alerts, alerts_retried, attempts) = (total("alerts")?, total("retried")?, total("total")?);
    let mut groups = Vec::new();
    for r in &rows {
        if r.try_get::<Option<String>, _>("alert_fingerprint")?
            .is_some()
        {
            groups.push(alert_row(r)?);
        }
    }
    let fingerprints: Vec<String> = groups.iter().map(|g| g.alert_fingerprint.clone()).collect();
    let mut latest: Qb = QueryBuilder::new("SELECT f.fp, p.overall_phase FROM unnest(");
    latest
        .push_bind(fingerprints)
        .push("::text[]) AS f(fp), LATERAL (SELECT overall_phase FROM remediation_audit WHERE alert_fingerprint = f.fp");
    let unfiltered = AnalyticsQuery {
        alert_fingerprint: None,
        ..q.clone()
    };
    push_filters(&mut latest, &unfiltered, |t: DateTime<Utc>| t);
    latest
        .push(" ORDER BY start_time DESC, id DESC LIMIT ")
        .push_bind(i64::try_from(MAX_PROGRESSION).unwrap_or(100))
        .push(") AS p");
    let mut phases: std::collections::HashMap<String, Vec<String>> =
        std::collections::HashMap::new();
    for r in latest_in_index_order(pool, latest).await? {
        phases
            .entry(r.try_get("fp")?)
            .or_default()
            .push(r.try_get("overall_phase")?);
    }
    let items = retry_groups(groups, phases);
    Ok(RetriesReport {
        query: q.echo(source, true),
        alerts,
        alerts_retried,
        attempts,
        items,
    })
}
