//! The design's SQL, written once: the "Audit Use Cases" queries and the
//! "Data Retention Policy" statements of the design
//! (`remediation-audit-design.md`), character for character, and the few
//! rewrites that tests and benchmarks apply to them (another period, a
//! namespace, another alert, a series by day).
//!
//! The design's queries are the yardstick of the analytics endpoints: the
//! API tests check that they run unchanged against the schema, and the
//! analytics benchmark times them beside the endpoints and checks the
//! endpoints' answers against them.

/// The period most queries filter on, as the design writes it (with its
/// interval, `7 days` or `24 hours`, in place of `…`): see [`with_period`].
const PERIOD_START: &str = "created_at > NOW() - INTERVAL '";

/// The alert the post-mortem query names as its example: see
/// [`with_fingerprint`].
pub const EXAMPLE_FINGERPRINT: &str = "mem-pressure-prod-123";

/// Post-mortem analysis: every remediation attempt for one alert (the
/// example's, [`EXAMPLE_FINGERPRINT`]), newest first. It has no period.
pub const POSTMORTEM: &str = "SELECT
    remediation_name,
    overall_phase,
    start_time,
    completion_time,
    EXTRACT(EPOCH FROM (completion_time - start_time)) as duration_seconds,
    failure_phase,
    failure_reason
FROM remediation_audit
WHERE alert_fingerprint = 'mem-pressure-prod-123'
ORDER BY start_time DESC
LIMIT 10;";

/// Orchestration success rate over the last 7 days, by phase.
pub const SUCCESS_RATE: &str = "SELECT
    overall_phase,
    COUNT(*) as total,
    COUNT(CASE WHEN overall_phase = 'completed' THEN 1 END) as successful,
    COUNT(CASE WHEN overall_phase = 'failed' THEN 1 END) as failed,
    ROUND(100.0 * COUNT(CASE WHEN overall_phase = 'completed' THEN 1 END) / COUNT(*), 2) as success_rate_pct
FROM remediation_audit
WHERE created_at > NOW() - INTERVAL '7 days'
GROUP BY overall_phase;";

/// Average, p50 and p95 duration of finished remediations over the last 7
/// days, by phase.
pub const DURATIONS: &str = "SELECT
    overall_phase,
    COUNT(*) as total_remediations,
    AVG(EXTRACT(EPOCH FROM (completion_time - start_time))) as avg_duration_seconds,
    PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM (completion_time - start_time))) as p50_duration,
    PERCENTILE_CONT(0.95) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM (completion_time - start_time))) as p95_duration
FROM remediation_audit
WHERE completion_time IS NOT NULL
  AND created_at > NOW() - INTERVAL '7 days'
GROUP BY overall_phase;";

/// The 20 slowest finished remediations of the last 24 hours.
pub const SLOWEST: &str = "SELECT
    remediation_name,
    alert_fingerprint,
    overall_phase,
    start_time,
    completion_time,
    EXTRACT(EPOCH FROM (completion_time - start_time)) as duration_seconds,
    service_crd_statuses
FROM remediation_audit
WHERE completion_time IS NOT NULL
  AND created_at > NOW() - INTERVAL '24 hours'
ORDER BY duration_seconds DESC
LIMIT 20;";

/// The most common failure phases of the last 7 days, with the alerts they
/// hit and sample reasons.
pub const FAILURES: &str = "SELECT
    failure_phase,
    COUNT(*) as failure_count,
    COUNT(DISTINCT alert_fingerprint) as unique_alerts_affected,
    ARRAY_AGG(DISTINCT substring(failure_reason, 1, 100)) as sample_reasons
FROM remediation_audit
WHERE failure_phase IS NOT NULL
  AND created_at > NOW() - INTERVAL '7 days'
GROUP BY failure_phase
ORDER BY failure_count DESC;";

/// Retry analysis: the alerts remediated more than once in the last 24
/// hours, their phases in order and whether one attempt succeeded.
pub const RETRIES: &str = "SELECT
    alert_fingerprint,
    COUNT(*) as retry_count,
    MAX(created_at) as last_attempt,
    ARRAY_AGG(overall_phase ORDER BY created_at) as phase_progression,
    BOOL_OR(overall_phase = 'completed') as eventually_successful
FROM remediation_audit
WHERE created_at > NOW() - INTERVAL '24 hours'
GROUP BY alert_fingerprint
HAVING COUNT(*) > 1
ORDER BY retry_count DESC;";

/// The retention policy's cleanup: finished records older than 90 days.
pub const RETENTION_DELETE: &str = "DELETE FROM remediation_audit
WHERE created_at < NOW() - INTERVAL '90 days'
  AND overall_phase IN ('completed', 'failed');";

/// The retention policy's archive copy, run before the cleanup.
pub const RETENTION_ARCHIVE: &str = "INSERT INTO remediation_audit_archive
SELECT * FROM remediation_audit
WHERE created_at < NOW() - INTERVAL '90 days';";

/// Every use-case query, by a short name (the analytics endpoints' names).
pub const USE_CASES: [(&str, &str); 6] = [
    ("postmortem", POSTMORTEM),
    ("success-rate", SUCCESS_RATE),
    ("durations", DURATIONS),
    ("slowest", SLOWEST),
    ("failures", FAILURES),
    ("retries", RETRIES),
];

/// `sql` with its period (`created_at > NOW() - INTERVAL '…'`) replaced by
/// `condition`; a query without one (the post-mortem) gets `condition`
/// added to its `WHERE` clause instead.
#[must_use]
pub fn with_period(sql: &str, condition: &str) -> String {
    if let Some(start) = sql.find(PERIOD_START) {
        let rest = &sql[start + PERIOD_START.len()..];
        if let Some(close) = rest.find('\'') {
            let end = start + PERIOD_START.len() + close + 1;
            return format!("{}{condition}{}", &sql[..start], &sql[end..]);
        }
    }
    and_where(sql, condition)
}

/// `sql` with its period's interval replaced by `interval` (`"90 days"`).
#[must_use]
pub fn with_interval(sql: &str, interval: &str) -> String {
    if sql.contains(PERIOD_START) {
        with_period(sql, &format!("{PERIOD_START}{interval}'"))
    } else {
        sql.to_owned()
    }
}

/// `sql` limited to one namespace.
#[must_use]
pub fn with_namespace(sql: &str, namespace: &str) -> String {
    and_where(
        sql,
        &format!("namespace = '{}'", namespace.replace('\'', "''")),
    )
}

/// The post-mortem query (or any naming the example alert) for another alert.
#[must_use]
pub fn with_fingerprint(sql: &str, fingerprint: &str) -> String {
    sql.replace(
        &format!("'{EXAMPLE_FINGERPRINT}'"),
        &format!("'{}'", fingerprint.replace('\'', "''")),
    )
}

/// The success rate as a series by day. The design has no query for the
/// series; its success-rate query, grouped by the day as well, stands in.
#[must_use]
pub fn success_rate_by_day(success_rate: &str) -> String {
    success_rate
        .replacen(
            "SELECT\n",
            "SELECT\n    date_trunc('day', created_at) AS day,\n",
            1,
        )
        .replacen(
            "GROUP BY overall_phase",
            "GROUP BY 1, overall_phase\nORDER BY 1",
            1,
        )
}

/// `sql` with `condition` added (`AND`) at the end of its `WHERE` clause,
/// which ends where its `GROUP BY`, `ORDER BY` or the statement does.
fn and_where(sql: &str, condition: &str) -> String {
    let (body, semicolon) = match sql.strip_suffix(';') {
        Some(body) => (body, ";"),
        None => (sql, ""),
    };
    let end = ["\nGROUP BY", "\nORDER BY"]
        .iter()
        .filter_map(|clause| body.find(clause))
        .min()
        .unwrap_or(body.len());
    format!(
        "{}\n  AND {condition}{}{semicolon}",
        &body[..end],
        &body[end..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_period_replaces_the_designs_interval() {
        let sql = with_period(SUCCESS_RATE, "start_time >= 'a'");
        assert!(sql.contains("WHERE start_time >= 'a'\nGROUP BY overall_phase;"));
        assert!(!sql.contains("INTERVAL"));
        assert_eq!(
            with_interval(SLOWEST, "90 days"),
            SLOWEST.replace("'24 hours'", "'90 days'")
        );
    }

    #[test]
    fn the_post_mortem_gets_its_period_and_namespace_added() {
        let sql = with_namespace(
            &with_period(&with_fingerprint(POSTMORTEM, "fp-1"), "start_time >= 'a'"),
            "team-01",
        );
        assert!(sql.ends_with(
            "WHERE alert_fingerprint = 'fp-1'\n  AND start_time >= 'a'\n  AND namespace = 'team-01'\nORDER BY start_time DESC\nLIMIT 10;"
        ));
        assert_eq!(with_interval(POSTMORTEM, "7 days"), POSTMORTEM);
    }

    #[test]
    fn quotes_in_values_are_doubled() {
        assert!(with_namespace(RETRIES, "a'b").contains("namespace = 'a''b'"));
        assert!(with_fingerprint(POSTMORTEM, "x'y").contains("= 'x''y'"));
    }

    #[test]
    fn the_series_groups_by_day_first() {
        let sql = success_rate_by_day(SUCCESS_RATE);
        assert!(
            sql.starts_with(
                "SELECT\n    date_trunc('day', created_at) AS day,\n    overall_phase,"
            )
        );
        assert!(sql.ends_with("GROUP BY 1, overall_phase\nORDER BY 1;"));
    }

    #[test]
    fn every_use_case_reads_remediation_audit_and_ends_once() {
        for (name, sql) in USE_CASES {
            assert!(sql.contains("\nFROM remediation_audit\nWHERE "), "{name}");
            assert_eq!(sql.matches(';').count(), 1, "{name}");
        }
    }
}
