-- Soft-deletes one remediation ($1 id, $2 deletion time) unless a legal hold
-- keeps it, and subtracts it from the rollups exactly where project.sql added
-- it: an attempt when it was first stored, an outcome, duration and failure
-- when it finished. The caller appends the final SELECT ... FROM gone.
WITH gone AS (
    UPDATE remediation_audit SET deleted_at = $2, updated_at = now()
    WHERE id = $1 AND deleted_at IS NULL AND NOT legal_hold
    RETURNING *
),
rollup_outcomes AS (
    UPDATE remediation_rollup_outcomes r SET remediations = r.remediations - 1
    FROM gone d, LATERAL (VALUES (''::varchar), (d.namespace)) AS s(ns)
    WHERE d.phase_rank = 9 AND r.namespace = s.ns
      AND r.bucket = date_trunc('hour', d.start_time, 'UTC') AND r.final_phase = d.overall_phase
),
rollup_durations AS (
    UPDATE remediation_rollup_durations r
    SET remediations = r.remediations - 1, duration_us = r.duration_us - d.duration_us
    FROM gone d, LATERAL (VALUES
        (1::int2, ''::varchar, date_trunc('hour', d.start_time, 'UTC')),
        (24::int2, ''::varchar, date_trunc('day', d.start_time, 'UTC')),
        (24::int2, d.namespace, date_trunc('day', d.start_time, 'UTC'))
    ) AS g(hours, ns, bucket)
    WHERE d.phase_rank = 9 AND d.duration_bin IS NOT NULL
      AND r.bucket_hours = g.hours AND r.namespace = g.ns AND r.bucket = g.bucket
      AND r.final_phase = d.overall_phase AND r.bin = d.duration_bin
),
rollup_alerts AS (
    UPDATE remediation_rollup_alerts r SET
        attempts = r.attempts - 1,
        completed = r.completed - (d.phase_rank = 9 AND d.overall_phase = 'completed')::int,
        failed = r.failed - (d.phase_rank = 9 AND d.overall_phase = 'failed')::int,
        timed_out = r.timed_out - (d.phase_rank = 9 AND d.overall_phase NOT IN ('completed', 'failed'))::int
    FROM gone d, LATERAL (VALUES (1::int2, INTERVAL '1 day'), (7::int2, INTERVAL '7 days')) AS g(days, width)
    WHERE r.bucket_days = g.days AND r.bucket = date_bin(g.width, d.start_time, TIMESTAMPTZ 'epoch')
      AND r.namespace = d.namespace AND r.alert_key = remaudit_alert_key(d.alert_fingerprint)
),
rollup_failures AS (
    UPDATE remediation_rollup_failures r SET failures = r.failures - 1
    FROM gone d,
    LATERAL (VALUES (1::int2, INTERVAL '1 day'), (7::int2, INTERVAL '7 days')) AS g(days, width),
    LATERAL (SELECT
        CASE WHEN d.overall_phase = 'failed' THEN 'failed' ELSE 'timeout' END,
        COALESCE(CASE WHEN d.overall_phase = 'failed' THEN d.failure_phase ELSE d.timeout_phase END, '')
    ) AS f(outcome, phase)
    WHERE d.phase_rank = 9 AND d.overall_phase <> 'completed'
      AND r.bucket_days = g.days AND r.bucket = date_bin(g.width, d.start_time, TIMESTAMPTZ 'epoch')
      AND r.outcome = f.outcome AND r.phase = f.phase
      AND r.namespace = d.namespace AND r.alert_key = remaudit_alert_key(d.alert_fingerprint)
)
