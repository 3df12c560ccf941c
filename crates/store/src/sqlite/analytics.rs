//! Analytics on SQLite, computed from the remediations themselves. The
//! answers are the ones PostgreSQL gives from its rollups: the same bins, the
//! same counts.

use remaudit_model::analytics::{
    DurationsReport, FailuresReport, RemediationBrief, RemediationList, RetriesReport,
    SuccessRateReport,
};
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::{QueryBuilder, Row, Sqlite};

use super::{decode_time, encode_time, json_column, optional_time_column, time_column};
use crate::StoreError;
use crate::analytics::{
    self, ALERT_GROUP_SQL, AlertRow, AnalyticsQuery, BinRow, BriefRow, FailureRow, MAX_PROGRESSION,
    OutcomeRow, Source, bins_sql, distinct_reasons, durations_from_bins, durations_from_values,
    failure_groups_sql, failure_samples_sql, postmortem_sql, push_filters, slowest_sql,
    success_rate,
};

type Qb = QueryBuilder<Sqlite>;

fn filtered(head: &str, q: &AnalyticsQuery) -> Qb {
    analytics::filtered(head, q, encode_time)
}

fn brief(row: &SqliteRow, with_statuses: bool) -> Result<BriefRow, sqlx::Error> {
    Ok(BriefRow {
        id: row.try_get("id")?,
        namespace: row.try_get("namespace")?,
        alert_fingerprint: row.try_get("alert_fingerprint")?,
        remediation_name: row.try_get("remediation_name")?,
        overall_phase: row.try_get("overall_phase")?,
        start_time: time_column(row, "start_time")?,
        completion_time: optional_time_column(row, "completion_time")?,
        duration_us: row.try_get("duration_us")?,
        failure_phase: row.try_get("failure_phase")?,
        failure_reason: row.try_get("failure_reason")?,
        timeout_phase: row.try_get("timeout_phase")?,
        timeout_time: optional_time_column(row, "timeout_time")?,
        service_crd_statuses: if with_statuses {
            json_column(row, "service_crd_statuses")?
        } else {
            None
        },
    })
}

async fn briefs(
    pool: &SqlitePool,
    mut qb: Qb,
    statuses: bool,
) -> Result<Vec<RemediationBrief>, StoreError> {
    let rows = qb.build().fetch_all(pool).await?;
    Ok(rows
        .iter()
        .map(|r| brief(r, statuses).map(RemediationBrief::from))
        .collect::<Result<_, _>>()?)
}

pub(crate) async fn postmortem(
    pool: &SqlitePool,
    q: &AnalyticsQuery,
) -> Result<RemediationList, StoreError> {
    Ok(RemediationList {
        query: q.echo(Source::Rows, true),
        items: briefs(pool, postmortem_sql(q, encode_time), false).await?,
    })
}

pub(crate) async fn slowest(
    pool: &SqlitePool,
    q: &AnalyticsQuery,
) -> Result<RemediationList, StoreError> {
    Ok(RemediationList {
        query: q.echo(Source::Rows, true),
        items: briefs(pool, slowest_sql(q, encode_time), true).await?,
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
        let mut qb = filtered(
            "SELECT overall_phase, duration_us FROM remediation_audit \
             WHERE phase_rank = 9 AND duration_us IS NOT NULL",
            q,
        );
        let rows = qb
            .build()
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| Ok((r.try_get("overall_phase")?, r.try_get("duration_us")?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        return Ok(durations_from_values(q, rows));
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
    let groups = failure_groups_sql(q, encode_time)
        .build_query_as::<FailureRow>()
        .fetch_all(pool)
        .await?;
    let mut items = Vec::with_capacity(groups.len());
    for group in groups {
        let reasons: Vec<String> = failure_samples_sql(q, &group, encode_time)
            .build_query_scalar()
            .fetch_all(pool)
            .await?;
        items.push(group.into_group(distinct_reasons(reasons)));
    }
    Ok(FailuresReport {
        query: q.echo(Source::Rows, true),
        items,
    })
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
