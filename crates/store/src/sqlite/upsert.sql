-- Upserts one record into the summary; the same rule as the PostgreSQL
-- batch statement (remaudit_model::supersedes, written in by
-- remaudit_model::supersedes_sql). Timestamps are fixed-format
-- text, so comparing them as strings compares the instants. The alert
-- fingerprint is the first record's. A losing record
-- still fills child names and the status snapshot where the row has none.
-- The columns and their `VALUES (?1, ...)` come from `summary_values!` in
-- sqlite.rs, the list that also binds them.
INSERT INTO remediation_audit AS ra __VALUES__
ON CONFLICT (namespace, remediation_name, start_time) DO UPDATE SET
    overall_phase = CASE WHEN __WINS__ THEN excluded.overall_phase ELSE ra.overall_phase END,
    phase_rank = CASE WHEN __WINS__ THEN excluded.phase_rank ELSE ra.phase_rank END,
    completion_time = CASE WHEN __WINS__ THEN coalesce(excluded.completion_time, ra.completion_time) ELSE ra.completion_time END,
    duration_us = CASE WHEN __WINS__ AND excluded.completion_time IS NOT NULL THEN excluded.duration_us ELSE ra.duration_us END,
    duration_bin = CASE WHEN __WINS__ AND excluded.completion_time IS NOT NULL THEN excluded.duration_bin ELSE ra.duration_bin END,
    retention_expiry_time = CASE WHEN __WINS__ THEN excluded.retention_expiry_time ELSE ra.retention_expiry_time END,
    remediation_processing_name = CASE WHEN __WINS__ THEN coalesce(excluded.remediation_processing_name, ra.remediation_processing_name) ELSE coalesce(ra.remediation_processing_name, excluded.remediation_processing_name) END,
    ai_analysis_name = CASE WHEN __WINS__ THEN coalesce(excluded.ai_analysis_name, ra.ai_analysis_name) ELSE coalesce(ra.ai_analysis_name, excluded.ai_analysis_name) END,
    workflow_execution_name = CASE WHEN __WINS__ THEN coalesce(excluded.workflow_execution_name, ra.workflow_execution_name) ELSE coalesce(ra.workflow_execution_name, excluded.workflow_execution_name) END,
    kubernetes_execution_name = CASE WHEN __WINS__ THEN coalesce(excluded.kubernetes_execution_name, ra.kubernetes_execution_name) ELSE coalesce(ra.kubernetes_execution_name, excluded.kubernetes_execution_name) END,
    service_crd_statuses = CASE WHEN __WINS__ THEN coalesce(excluded.service_crd_statuses, ra.service_crd_statuses) ELSE coalesce(ra.service_crd_statuses, excluded.service_crd_statuses) END,
    timeout_phase = CASE WHEN __WINS__ THEN coalesce(excluded.timeout_phase, ra.timeout_phase) ELSE ra.timeout_phase END,
    timeout_time = CASE WHEN __WINS__ THEN coalesce(excluded.timeout_time, ra.timeout_time) ELSE ra.timeout_time END,
    failure_phase = CASE WHEN __WINS__ THEN coalesce(excluded.failure_phase, ra.failure_phase) ELSE ra.failure_phase END,
    failure_reason = CASE WHEN __WINS__ THEN coalesce(excluded.failure_reason, ra.failure_reason) ELSE ra.failure_reason END,
    event_id = CASE WHEN __WINS__ THEN excluded.event_id ELSE ra.event_id END,
    event_time = CASE WHEN __WINS__ THEN excluded.event_time ELSE ra.event_time END,
    duplicate_count = max(ra.duplicate_count, excluded.duplicate_count),
    last_duplicate_time = max(coalesce(ra.last_duplicate_time, excluded.last_duplicate_time), coalesce(excluded.last_duplicate_time, ra.last_duplicate_time)),
    updated_at = excluded.updated_at
