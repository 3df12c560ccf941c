//! Analytics on SQLite, computed from the remediations themselves. The
//! answers are the ones PostgreSQL gives from its rollups: the same bins, the
//! same counts.

use futures::TryStreamExt as _;
use remaudit_model::analytics::{
    DurationsReport, FailuresReport, RemediationBrief, RemediationList, RetriesReport,
    SuccessRateReport,
};
use sqlx::sqlite::SqlitePool;
use sqlx::{QueryBuilder, Row, Sqlite};

use super::{decode_time, encode_time, time_column};
use crate::StoreError;
use crate::analytics::{
    self, ALERT_GROUP_SQL, AlertRow, AnalyticsQuery, BinRow, ExactDurations, FailureRow,
    MAX_PROGRESSION, OutcomeRow, SAMPLE_SCAN, Source, bins_sql, durations_from_bins,
    failure_groups_sql, failure_phase_column, postmortem_sql, push_filters, push_sample_pick,
    samples_by_group, slowest_sql, success_rate, top_failure_groups,
};

type Qb = QueryBuilder<Sqlite>;

fn filtered(head: &str, q: &AnalyticsQuery) -> Qb {
    analytics::filtered(head, q, encode_time)
}

async fn briefs(pool: &SqlitePool, mut qb: Qb) -> Result<Vec<RemediationBrief>, StoreError> {
    let rows = qb.build().fetch_all(pool).await?;
    Ok(analytics::briefs(&rows)?)
}

pub(crate) async fn postmortem(
    pool: &SqlitePool,
    q: &AnalyticsQuery,
) -> Result<RemediationList, StoreError> {
    Ok(RemediationList {
        query: q.echo(Source::Rows, true),
        items: briefs(pool, postmortem_sql(q, encode_time)).await?,
    })
}

pub(crate) async fn slowest(
    pool: &SqlitePool,
    q: &AnalyticsQuery,
) -> Result<RemediationList, StoreError> {
    Ok(RemediationList {
        query: q.echo(Source::Rows, true),
        items: briefs(pool, slowest_sql(q, encode_time)).await?,
    })
}

pub(crate) async fn success_rate_report(
    pool: &SqlitePool,
    q: &AnalyticsQuery,
) -> Result<SuccessRateReport, StoreError> {
    let mut qb = filtered(
        "SELECT substr(start_time, 1, 13) || ':00:00.000000Z' AS hour, \
         CASE WHEN phase_rank = 9 THEN overall_phase END AS phase, count(*) AS n \
         FROM remediation_audit WHERE 1 = 1",
        q,
    );
    qb.push(" GROUP BY 1, 2");
    let rows = qb
        .build()
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| {
            Ok(OutcomeRow {
                hour: decode_time(&r.try_get::<String, _>("hour")?)?,
                phase: r.try_get("phase")?,
                count: r.try_get("n")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let (totals, series) = success_rate(q, &rows);
    Ok(SuccessRateReport {
        query: q.echo(Source::Rows, false),
        totals,
        bucket_seconds: q.bucket.map(|b| b.num_seconds()),
        series,
    })
}

pub(crate) async fn durations_report(
    pool: &SqlitePool,
    q: &AnalyticsQuery,
) -> Result<DurationsReport, StoreError> {
    if q.exact() {
        return exact_durations(pool, q).await;
    }
    let rows = bins_sql(q, encode_time)
        .build_query_as::<BinRow>()
        .fetch_all(pool)
        .await?;
    Ok(durations_from_bins(q, Source::Rows, &rows))
}

pub(crate) async fn failures_report(
    pool: &SqlitePool,
    q: &AnalyticsQuery,
) -> Result<FailuresReport, StoreError> {
    let groups = top_failure_groups(
        failure_groups_sql(q, encode_time)
            .build_query_as::<FailureRow>()
            .fetch_all(pool)
            .await?,
        q.limit,
    );
    let samples = sample_reasons(pool, q, &groups).await?;
    let items = groups
        .into_iter()
        .zip(samples)
        .map(|(group, reasons)| group.into_group(reasons))
        .collect();
    Ok(FailuresReport {
        query: q.echo(Source::Rows, true),
        items,
    })
}

/// Exact durations without holding the window in memory: the counts per
/// final phase first, then every duration streamed in ascending order, of
/// which only the ranks the percentiles need are kept. Both reads see one
/// snapshot (one transaction), so the counts fit the stream.
async fn exact_durations(
    pool: &SqlitePool,
    q: &AnalyticsQuery,
) -> Result<DurationsReport, StoreError> {
    const FINISHED: &str =
        "FROM remediation_audit WHERE phase_rank = 9 AND duration_us IS NOT NULL";
    let mut tx = pool.begin().await?;
    let mut counts = filtered(
        &format!("SELECT overall_phase, count(*) AS n {FINISHED}"),
        q,
    );
    counts.push(" GROUP BY overall_phase");
    let counts = counts
        .build()
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("overall_phase")?, r.try_get("n")?)))
        .collect::<Result<Vec<(String, i64)>, sqlx::Error>>()?;
    let mut exact = ExactDurations::new(counts);
    let mut stream = filtered(&format!("SELECT overall_phase, duration_us {FINISHED}"), q);
    stream.push(" ORDER BY duration_us");
    {
        let mut rows = stream.build().fetch(&mut *tx);
        while let Some(row) = rows.try_next().await? {
            exact.add(
                &row.try_get::<String, _>("overall_phase")?,
                row.try_get("duration_us")?,
            );
        }
    }
    tx.commit().await?;
    Ok(exact.report(q, Source::Rows))
}

/// The sample reasons of every group, in one query: the failures with a
/// reason in the window, numbered newest first within their group, the first
/// [`SAMPLE_SCAN`] of each kept.
async fn sample_reasons(
    pool: &SqlitePool,
    q: &AnalyticsQuery,
    groups: &[FailureRow],
) -> Result<Vec<Vec<String>>, StoreError> {
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    let mut qb: Qb = QueryBuilder::new("WITH g(i, outcome, phase) AS (VALUES ");
    for (i, group) in groups.iter().enumerate() {
        if i > 0 {
            qb.push(", ");
        }
        qb.push(format_args!(
            "({i}, '{}', ",
            failure_phase_column(&group.outcome).0
        ))
        .push_bind(group.phase.clone())
        .push(")");
    }
    qb.push(
        "), f AS (SELECT overall_phase AS outcome, \
         COALESCE(CASE WHEN overall_phase = 'failed' THEN failure_phase ELSE timeout_phase END, '') AS phase, \
         substr(failure_reason, 1, 100) AS reason, start_time, id FROM remediation_audit \
         WHERE failure_reason IS NOT NULL AND overall_phase IN ('failed', 'timeout')",
    );
    push_filters(&mut qb, q, encode_time);
    qb.push(
        "), s AS (SELECT i, reason, start_time, id FROM (SELECT g.i, f.reason, f.start_time, f.id, \
         row_number() OVER (PARTITION BY g.i ORDER BY f.start_time DESC, f.id DESC) AS rn \
         FROM f JOIN g ON g.outcome = f.outcome AND g.phase = f.phase) AS numbered WHERE rn <= ",
    )
    .push_bind(SAMPLE_SCAN);
    push_sample_pick(&mut qb);
    let rows = qb
        .build()
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("i")?, r.try_get("reason")?)))
        .collect::<Result<Vec<(i64, String)>, sqlx::Error>>()?;
    Ok(samples_by_group(groups.len(), rows))
}

pub(crate) async fn retries_report(
    pool: &SqlitePool,
    q: &AnalyticsQuery,
) -> Result<RetriesReport, StoreError> {
    let mut qb = QueryBuilder::new(format!("WITH g AS ({ALERT_GROUP_SQL}"));
    push_filters(&mut qb, q, encode_time);
    qb.push(
        " GROUP BY alert_fingerprint) SELECT count(*) AS alerts, \
         COALESCE(sum(CASE WHEN attempts > 1 THEN 1 ELSE 0 END), 0) AS retried, \
         COALESCE(sum(attempts), 0) AS total FROM g",
    );
    let totals = qb.build().fetch_one(pool).await?;
    let count = |column: &str| -> Result<u64, sqlx::Error> {
        Ok(u64::try_from(totals.try_get::<i64, _>(column)?).unwrap_or(0))
    };
    let (alerts, alerts_retried, attempts) = (count("alerts")?, count("retried")?, count("total")?);

    let mut qb = QueryBuilder::new(ALERT_GROUP_SQL.to_owned());
    push_filters(&mut qb, q, encode_time);
    qb.push(
        " GROUP BY alert_fingerprint HAVING count(*) > 1 \
         ORDER BY attempts DESC, last_start DESC, alert_fingerprint LIMIT ",
    )
    .push_bind(i64::from(q.limit));
    let groups = qb
        .build()
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| {
            Ok(AlertRow {
                alert_fingerprint: r.try_get("alert_fingerprint")?,
                attempts: r.try_get("attempts")?,
                completed: r.try_get("completed")?,
                failed: r.try_get("failed")?,
                timed_out: r.try_get("timed_out")?,
                last_start: time_column(r, "last_start")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let mut items = Vec::with_capacity(groups.len());
    for group in groups {
        let one = AnalyticsQuery {
            alert_fingerprint: Some(group.alert_fingerprint.clone()),
            ..q.clone()
        };
        let mut qb = filtered(
            "SELECT overall_phase FROM remediation_audit WHERE 1 = 1",
            &one,
        );
        qb.push(" ORDER BY start_time DESC, id DESC LIMIT ")
            .push_bind(i64::try_from(MAX_PROGRESSION).unwrap_or(100));
        let latest: Vec<String> = qb.build_query_scalar().fetch_all(pool).await?;
        items.push(group.into_group(latest));
    }
    Ok(RetriesReport {
        query: q.echo(Source::Rows, true),
        alerts,
        alerts_retried,
        attempts,
        items,
    })
}
