-- Retention: legal holds, the archive of timeline events and the journal of
-- archive batches. SQLite has no partitions; retention deletes row by row.
ALTER TABLE remediation_audit ADD COLUMN legal_hold INTEGER NOT NULL DEFAULT 0;
CREATE INDEX idx_deleted ON remediation_audit (deleted_at) WHERE deleted_at IS NOT NULL;
CREATE INDEX idx_legal_hold ON remediation_audit (start_time) WHERE legal_hold;

-- The archive keeps remediation_audit's column order, then archived_at, then
-- the batch that archived the row.
ALTER TABLE remediation_audit_archive RENAME TO remediation_audit_archive_0002;
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
    legal_hold INTEGER NOT NULL DEFAULT 0,
    archived_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    archive_batch INTEGER
);
INSERT INTO remediation_audit_archive
SELECT id, alert_fingerprint, remediation_name, overall_phase, start_time, completion_time,
       remediation_processing_name, ai_analysis_name, workflow_execution_name,
       kubernetes_execution_name, service_crd_statuses, timeout_phase, timeout_time,
       failure_phase, failure_reason, duplicate_count, last_duplicate_time,
       retention_expiry_time, deleted_at, created_at, updated_at, namespace, phase_rank,
       event_id, event_time, duration_us, duration_bin, 0, archived_at, NULL
FROM remediation_audit_archive_0002;
DROP TABLE remediation_audit_archive_0002;
CREATE INDEX idx_archive_batch ON remediation_audit_archive (archive_batch);
CREATE INDEX idx_archive_start_time ON remediation_audit_archive (start_time);

CREATE TABLE remediation_audit_events_archive (
    id INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    namespace TEXT NOT NULL,
    remediation_name TEXT NOT NULL,
    start_time TEXT NOT NULL,
    overall_phase TEXT NOT NULL,
    event_time TEXT NOT NULL,
    received_at TEXT NOT NULL,
    record TEXT NOT NULL,
    archived_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    archive_batch INTEGER
);
CREATE INDEX idx_events_archive_batch ON remediation_audit_events_archive (archive_batch);
CREATE INDEX idx_events_archive_remediation
    ON remediation_audit_events_archive (namespace, remediation_name, start_time);

-- One row per archive batch; see the PostgreSQL migration for the states.
CREATE TABLE remediation_retention_batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done')),
    run_now TEXT NOT NULL,
    source TEXT NOT NULL,
    location TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    finished_at TEXT,
    remediations INTEGER NOT NULL DEFAULT 0,
    events INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    start_time_min TEXT,
    start_time_max TEXT,
    manifest_sha256 TEXT
);
