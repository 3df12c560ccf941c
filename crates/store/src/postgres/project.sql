-- Applies a batch of the projection queue in one statement: takes the rows
-- (__PICK__ picks them), skips any whose event is no longer live (archived or
-- dropped since), and upserts the best record of each remediation in the
-- batch into the summary, then counts what changed in the rollups.
-- The summary rule is remaudit_model::supersedes, written in by
-- remaudit_model::supersedes_sql: a terminal row is final;
-- otherwise a higher rank wins, then a strictly later event. The
-- winner's child names and status snapshot win; where it has none, the best
-- record that has one fills the gap, so arrival order does not matter.
-- Terminal fields (completion, failure, timeout) come from the winner only.
-- Duplicate counts only grow, whichever record wins.
-- A new summary row's created_at is when its first event was written (the
-- queue row's queued_at, that write transaction's start), not when it was
-- projected, so rows projected together keep the order they were stored in.
-- The column is set on insert only.
WITH picked AS (
    __PICK__
),
taken AS (
    DELETE FROM remediation_projection_queue q
    USING picked p
    WHERE q.id = p.id
    RETURNING q.*
),
-- The queue's order stands for arrival order (`ord`): a remediation's
-- writers take turns, so its rows are queued in the order they committed,
-- and one projection runs at a time (the advisory lock every projection
-- takes first), so rows are applied in that order.
-- A row is applied only while its event is live and its remediation is not
-- archived without a live summary row: a late projection never brings an
-- archived remediation back.
input AS (
    SELECT t.*, t.id AS ord
    FROM taken t
    WHERE EXISTS (SELECT 1 FROM remediation_audit_events e
        WHERE e.event_id = t.event_id AND e.start_time = t.start_time)
      AND (EXISTS (SELECT 1 FROM remediation_audit r WHERE r.namespace = t.namespace
              AND r.remediation_name = t.remediation_name AND r.start_time = t.start_time)
          OR NOT EXISTS (SELECT 1 FROM remediation_audit_archive a WHERE a.namespace = t.namespace
              AND a.remediation_name = t.remediation_name AND a.start_time = t.start_time))
),
inserted AS (
    SELECT event_id, start_time FROM input
),
best AS (
    SELECT DISTINCT ON (i.namespace, i.remediation_name, i.start_time)
        i.*,
        max(i.duplicate_count) OVER w AS max_duplicate_count,
        max(i.last_duplicate_time) OVER w AS max_last_duplicate_time,
        min(i.queued_at) OVER w AS first_queued_at,
        first_value(i.remediation_processing_name) OVER (PARTITION BY i.namespace, i.remediation_name, i.start_time
            ORDER BY i.remediation_processing_name IS NULL, i.phase_rank DESC, i.event_time DESC) AS fill_remediation_processing_name,
        first_value(i.ai_analysis_name) OVER (PARTITION BY i.namespace, i.remediation_name, i.start_time
            ORDER BY i.ai_analysis_name IS NULL, i.phase_rank DESC, i.event_time DESC) AS fill_ai_analysis_name,
        first_value(i.workflow_execution_name) OVER (PARTITION BY i.namespace, i.remediation_name, i.start_time
            ORDER BY i.workflow_execution_name IS NULL, i.phase_rank DESC, i.event_time DESC) AS fill_workflow_execution_name,
        first_value(i.kubernetes_execution_name) OVER (PARTITION BY i.namespace, i.remediation_name, i.start_time
            ORDER BY i.kubernetes_execution_name IS NULL, i.phase_rank DESC, i.event_time DESC) AS fill_kubernetes_execution_name,
        first_value(i.service_crd_statuses) OVER (PARTITION BY i.namespace, i.remediation_name, i.start_time
            ORDER BY i.service_crd_statuses IS NULL, i.phase_rank DESC, i.event_time DESC) AS fill_service_crd_statuses
    FROM input i
    JOIN inserted USING (event_id, start_time)
    WINDOW w AS (PARTITION BY i.namespace, i.remediation_name, i.start_time)
    ORDER BY i.namespace, i.remediation_name, i.start_time,
        i.phase_rank DESC,
        CASE WHEN i.phase_rank = 9 THEN i.ord ELSE 0 END,
        i.event_time DESC,
        i.ord
),
upserted AS (
    INSERT INTO remediation_audit AS ra (
        namespace, alert_fingerprint, remediation_name, overall_phase, phase_rank,
        start_time, completion_time, remediation_processing_name, ai_analysis_name,
        workflow_execution_name, kubernetes_execution_name, service_crd_statuses,
        timeout_phase, timeout_time, failure_phase, failure_reason, duplicate_count,
        last_duplicate_time, event_id, event_time, duration_us, duration_bin, retention_expiry_time,
        created_at
    )
    SELECT
        namespace, alert_fingerprint, remediation_name, overall_phase, phase_rank,
        start_time, completion_time, fill_remediation_processing_name, fill_ai_analysis_name,
        fill_workflow_execution_name, fill_kubernetes_execution_name, fill_service_crd_statuses::jsonb,
        timeout_phase, timeout_time, failure_phase, failure_reason, max_duplicate_count,
        max_last_duplicate_time, event_id, event_time, duration_us, duration_bin, retention_expiry_time,
        first_queued_at
    FROM best
    ORDER BY namespace, remediation_name, start_time
    ON CONFLICT (namespace, remediation_name, start_time) DO UPDATE SET
        overall_phase = CASE WHEN __WINS__ THEN EXCLUDED.overall_phase ELSE ra.overall_phase END,
        phase_rank = CASE WHEN __WINS__ THEN EXCLUDED.phase_rank ELSE ra.phase_rank END,
        completion_time = CASE WHEN __WINS__ THEN COALESCE(EXCLUDED.completion_time, ra.completion_time) ELSE ra.completion_time END,
        duration_us = CASE WHEN __WINS__ AND EXCLUDED.completion_time IS NOT NULL THEN EXCLUDED.duration_us ELSE ra.duration_us END,
        duration_bin = CASE WHEN __WINS__ AND EXCLUDED.completion_time IS NOT NULL THEN EXCLUDED.duration_bin ELSE ra.duration_bin END,
        retention_expiry_time = CASE WHEN __WINS__ THEN EXCLUDED.retention_expiry_time ELSE ra.retention_expiry_time END,
        remediation_processing_name = CASE WHEN __WINS__ THEN COALESCE(EXCLUDED.remediation_processing_name, ra.remediation_processing_name) ELSE COALESCE(ra.remediation_processing_name, EXCLUDED.remediation_processing_name) END,
        ai_analysis_name = CASE WHEN __WINS__ THEN COALESCE(EXCLUDED.ai_analysis_name, ra.ai_analysis_name) ELSE COALESCE(ra.ai_analysis_name, EXCLUDED.ai_analysis_name) END,
        workflow_execution_name = CASE WHEN __WINS__ THEN COALESCE(EXCLUDED.workflow_execution_name, ra.workflow_execution_name) ELSE COALESCE(ra.workflow_execution_name, EXCLUDED.workflow_execution_name) END,
        kubernetes_execution_name = CASE WHEN __WINS__ THEN COALESCE(EXCLUDED.kubernetes_execution_name, ra.kubernetes_execution_name) ELSE COALESCE(ra.kubernetes_execution_name, EXCLUDED.kubernetes_execution_name) END,
        service_crd_statuses = CASE WHEN __WINS__ THEN COALESCE(EXCLUDED.service_crd_statuses, ra.service_crd_statuses) ELSE COALESCE(ra.service_crd_statuses, EXCLUDED.service_crd_statuses) END,
        timeout_phase = CASE WHEN __WINS__ THEN COALESCE(EXCLUDED.timeout_phase, ra.timeout_phase) ELSE ra.timeout_phase END,
        timeout_time = CASE WHEN __WINS__ THEN COALESCE(EXCLUDED.timeout_time, ra.timeout_time) ELSE ra.timeout_time END,
        failure_phase = CASE WHEN __WINS__ THEN COALESCE(EXCLUDED.failure_phase, ra.failure_phase) ELSE ra.failure_phase END,
        failure_reason = CASE WHEN __WINS__ THEN COALESCE(EXCLUDED.failure_reason, ra.failure_reason) ELSE ra.failure_reason END,
        event_id = CASE WHEN __WINS__ THEN EXCLUDED.event_id ELSE ra.event_id END,
        event_time = CASE WHEN __WINS__ THEN EXCLUDED.event_time ELSE ra.event_time END,
        duplicate_count = GREATEST(ra.duplicate_count, EXCLUDED.duplicate_count),
        last_duplicate_time = GREATEST(ra.last_duplicate_time, EXCLUDED.last_duplicate_time),
        updated_at = now()
    RETURNING ra.namespace, ra.remediation_name, ra.start_time, ra.alert_fingerprint,
        ra.overall_phase, ra.phase_rank, ra.event_id, ra.duration_us, ra.duration_bin,
        ra.failure_phase, ra.timeout_phase, ra.deleted_at, (ra.created_xid = pg_current_xact_id()) AS fresh
),
-- What this statement changed: `fresh` rows are new remediations; `finished`
-- ones became terminal through a record of this batch (the row's event is the
-- batch's winner, which can happen only once per remediation, since a
-- terminal row is final and every event is stored once). Soft-deleted rows
-- left the rollups when they were deleted and stay out of them.
changed AS (
    SELECT u.*, (u.phase_rank = 9 AND u.event_id = b.event_id) AS finished
    FROM upserted u
    JOIN best b USING (namespace, remediation_name, start_time)
    WHERE u.deleted_at IS NULL
),
-- The rollups (see migrations/postgres/0002_analytics.sql), each upserted in
-- key order so that concurrent batches take row locks in the same order.
rollup_outcomes AS (
    INSERT INTO remediation_rollup_outcomes AS r (bucket, namespace, final_phase, remediations)
    SELECT date_trunc('hour', c.start_time, 'UTC'), s.ns, c.overall_phase, count(*)
    FROM changed c, LATERAL (VALUES (''::varchar), (c.namespace)) AS s(ns)
    WHERE c.finished
    GROUP BY 2, 1, 3
    ORDER BY 2, 1, 3
    ON CONFLICT (namespace, bucket, final_phase) DO UPDATE SET
        remediations = r.remediations + EXCLUDED.remediations
),
rollup_durations AS (
    INSERT INTO remediation_rollup_durations AS r
        (bucket_hours, namespace, bucket, final_phase, bin, remediations, duration_us)
    SELECT g.hours, g.ns, g.bucket, c.overall_phase, c.duration_bin, count(*), sum(c.duration_us)
    FROM changed c, LATERAL (VALUES
        (1::int2, ''::varchar, date_trunc('hour', c.start_time, 'UTC')),
        (24::int2, ''::varchar, date_trunc('day', c.start_time, 'UTC')),
        (24::int2, c.namespace, date_trunc('day', c.start_time, 'UTC'))
    ) AS g(hours, ns, bucket)
    WHERE c.finished AND c.duration_bin IS NOT NULL
    GROUP BY 1, 2, 3, 4, 5
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (bucket_hours, namespace, bucket, final_phase, bin) DO UPDATE SET
        remediations = r.remediations + EXCLUDED.remediations,
        duration_us = r.duration_us + EXCLUDED.duration_us
),
-- The per-alert rollups key alerts by remaudit_alert_key; a new remediation
-- records its alert's key once (the dictionary only grows).
alert_keys AS (
    INSERT INTO remediation_alert_keys (alert_key, alert_fingerprint)
    SELECT DISTINCT remaudit_alert_key(c.alert_fingerprint), c.alert_fingerprint
    FROM changed c
    WHERE c.fresh
    ORDER BY 1, 2
    ON CONFLICT DO NOTHING
),
rollup_alerts AS (
    INSERT INTO remediation_rollup_alerts AS r
        (bucket_days, bucket, namespace, alert_key, attempts, completed, failed, timed_out, last_start)
    SELECT g.days, date_bin(g.width, c.start_time, TIMESTAMPTZ 'epoch'), c.namespace,
        remaudit_alert_key(c.alert_fingerprint),
        count(*) FILTER (WHERE c.fresh),
        count(*) FILTER (WHERE c.finished AND c.overall_phase = 'completed'),
        count(*) FILTER (WHERE c.finished AND c.overall_phase = 'failed'),
        count(*) FILTER (WHERE c.finished AND c.overall_phase NOT IN ('completed', 'failed')),
        max(c.start_time)
    FROM changed c, LATERAL (VALUES (1::int2, INTERVAL '1 day'), (7::int2, INTERVAL '7 days')) AS g(days, width)
    WHERE c.fresh OR c.finished
    GROUP BY 1, 2, 3, 4
    ORDER BY 1, 2, 3, 4
    ON CONFLICT (bucket_days, bucket, namespace, alert_key) DO UPDATE SET
        attempts = r.attempts + EXCLUDED.attempts,
        completed = r.completed + EXCLUDED.completed,
        failed = r.failed + EXCLUDED.failed,
        timed_out = r.timed_out + EXCLUDED.timed_out,
        last_start = GREATEST(r.last_start, EXCLUDED.last_start)
),
rollup_failures AS (
    INSERT INTO remediation_rollup_failures AS r
        (bucket_days, bucket, outcome, phase, namespace, alert_key, failures)
    SELECT g.days, date_bin(g.width, c.start_time, TIMESTAMPTZ 'epoch'), f.outcome, COALESCE(f.phase, ''),
        c.namespace, remaudit_alert_key(c.alert_fingerprint), count(*)
    FROM changed c,
    LATERAL (VALUES (1::int2, INTERVAL '1 day'), (7::int2, INTERVAL '7 days')) AS g(days, width),
    LATERAL (SELECT
        CASE WHEN c.overall_phase = 'failed' THEN 'failed' ELSE 'timeout' END,
        CASE WHEN c.overall_phase = 'failed' THEN c.failure_phase ELSE c.timeout_phase END
    ) AS f(outcome, phase)
    WHERE c.finished AND c.overall_phase <> 'completed'
    GROUP BY 1, 2, 3, 4, 5, 6
    ORDER BY 1, 2, 3, 4, 5, 6
    ON CONFLICT (bucket_days, bucket, outcome, phase, namespace, alert_key) DO UPDATE SET
        failures = r.failures + EXCLUDED.failures
)
SELECT (SELECT count(*) FROM taken) AS taken,
    (SELECT count(*) FROM input) AS projected,
    -- On the database's clock, as queued_at is.
    (SELECT extract(epoch FROM clock_timestamp() - min(queued_at))::float8 FROM taken) AS lag_seconds
