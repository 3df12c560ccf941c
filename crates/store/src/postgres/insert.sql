-- Stores a batch in one statement: each event once (by event_id), then the
-- best record of each remediation in the batch upserted into the summary.
-- The summary rule mirrors remaudit_model::supersedes: a terminal row is
-- final; otherwise a higher rank wins, then a strictly later event. The
-- winner's child names and status snapshot win; where it has none, the best
-- record that has one fills the gap, so arrival order does not matter.
-- Terminal fields (completion, failure, timeout) come from the winner only.
-- Duplicate counts only grow, whichever record wins.
WITH input AS (
    SELECT *
    FROM UNNEST(
        $1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int2[],
        $7::timestamptz[], $8::timestamptz[], $9::text[], $10::text[], $11::text[],
        $12::text[], $13::text[], $14::text[], $15::timestamptz[], $16::text[],
        $17::text[], $18::int4[], $19::timestamptz[], $20::timestamptz[], $21::text[]
    ) WITH ORDINALITY AS t(
        event_id, namespace, alert_fingerprint, remediation_name, overall_phase, phase_rank,
        start_time, completion_time, remediation_processing_name, ai_analysis_name,
        workflow_execution_name, kubernetes_execution_name, service_crd_statuses,
        timeout_phase, timeout_time, failure_phase, failure_reason, duplicate_count,
        last_duplicate_time, event_time, record, ord
    )
),
inserted AS (
    INSERT INTO remediation_audit_events
        (event_id, namespace, remediation_name, start_time, overall_phase, event_time, record)
    SELECT event_id, namespace, remediation_name, start_time, overall_phase, event_time, record::jsonb
    FROM input
    ORDER BY event_id
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
),
best AS (
    SELECT DISTINCT ON (i.namespace, i.remediation_name, i.start_time)
        i.*,
        max(i.duplicate_count) OVER w AS max_duplicate_count,
        max(i.last_duplicate_time) OVER w AS max_last_duplicate_time,
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
    JOIN inserted USING (event_id)
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
        last_duplicate_time, event_id, event_time
    )
    SELECT
        namespace, alert_fingerprint, remediation_name, overall_phase, phase_rank,
        start_time, completion_time, fill_remediation_processing_name, fill_ai_analysis_name,
        fill_workflow_execution_name, fill_kubernetes_execution_name, fill_service_crd_statuses::jsonb,
        timeout_phase, timeout_time, failure_phase, failure_reason, max_duplicate_count,
        max_last_duplicate_time, event_id, event_time
    FROM best
    ORDER BY namespace, remediation_name, start_time
    ON CONFLICT (namespace, remediation_name, start_time) DO UPDATE SET
        alert_fingerprint = CASE WHEN __WINS__ THEN EXCLUDED.alert_fingerprint ELSE ra.alert_fingerprint END,
        overall_phase = CASE WHEN __WINS__ THEN EXCLUDED.overall_phase ELSE ra.overall_phase END,
        phase_rank = CASE WHEN __WINS__ THEN EXCLUDED.phase_rank ELSE ra.phase_rank END,
        completion_time = CASE WHEN __WINS__ THEN COALESCE(EXCLUDED.completion_time, ra.completion_time) ELSE ra.completion_time END,
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
    RETURNING 1
)
SELECT event_id FROM inserted
