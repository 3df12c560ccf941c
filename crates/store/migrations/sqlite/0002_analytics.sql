-- Analytics: each remediation's duration in microseconds and its bin in
-- remaudit_model::histogram (computed by the store when it writes). SQLite
-- answers analytics from these rows directly; it keeps no rollups.
ALTER TABLE remediation_audit ADD COLUMN duration_us INTEGER;
ALTER TABLE remediation_audit ADD COLUMN duration_bin INTEGER;

-- Rows written before this migration get both when the store opens the
-- database (SQLite's date arithmetic is not exact to the microsecond).

-- The archive keeps remediation_audit's column order, then archived_at.
ALTER TABLE remediation_audit_archive RENAME TO remediation_audit_archive_0001;
CREATE TABLE remediation_audit_archive (
    id INTEGER PRIMARY KEY,
    alert_fingerprint TEXT NOT NULL,
    remediation_name TEXT NOT NULL,
    overall_phase TEXT NOT NULL,
    start_time TEXT NOT NULL,
    completion_time TEXT,
    remediation_processing_name TEXT,
    ai_analysis_name TEXT,
    workflow_execution_name TEXT,
    kubernetes_execution_name TEXT,
    service_crd_statuses TEXT,
    timeout_phase TEXT,
    timeout_time TEXT,
    failure_phase TEXT,
    failure_reason TEXT,
    duplicate_count INTEGER NOT NULL DEFAULT 0,
    last_duplicate_time TEXT,
    retention_expiry_time TEXT,
    deleted_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    namespace TEXT NOT NULL,
    phase_rank INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    event_time TEXT NOT NULL,
    duration_us INTEGER,
    duration_bin INTEGER,
    archived_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'))
);
INSERT INTO remediation_audit_archive
SELECT id, alert_fingerprint, remediation_name, overall_phase, start_time, completion_time,
       remediation_processing_name, ai_analysis_name, workflow_execution_name,
       kubernetes_execution_name, service_crd_statuses, timeout_phase, timeout_time,
       failure_phase, failure_reason, duplicate_count, last_duplicate_time,
       retention_expiry_time, deleted_at, created_at, updated_at, namespace, phase_rank,
       event_id, event_time, NULL, NULL, archived_at
FROM remediation_audit_archive_0001;
DROP TABLE remediation_audit_archive_0001;

CREATE INDEX idx_in_progress ON remediation_audit (start_time) WHERE phase_rank < 9;
CREATE INDEX idx_duration ON remediation_audit (duration_us DESC) WHERE duration_us IS NOT NULL;
CREATE INDEX idx_namespace_start_time ON remediation_audit (namespace, start_time);
CREATE INDEX idx_failure_reasons ON remediation_audit (failure_phase, start_time DESC, id DESC)
    WHERE failure_reason IS NOT NULL AND overall_phase = 'failed';
CREATE INDEX idx_timeout_reasons ON remediation_audit (timeout_phase, start_time DESC, id DESC)
    WHERE failure_reason IS NOT NULL AND overall_phase = 'timeout';

-- A post-mortem and a retry's progression read one alert's latest
-- remediations; with id in the key the index gives their exact order, so a
-- busy alert costs a few index entries instead of a sort of all its rows.
DROP INDEX idx_alert_fingerprint;
CREATE INDEX idx_alert_fingerprint ON remediation_audit (alert_fingerprint, start_time DESC, id DESC);
