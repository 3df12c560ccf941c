-- Timestamps are TEXT in one fixed format (YYYY-MM-DDTHH:MM:SS.ffffffZ), so
-- they compare correctly as strings. Event ids are hyphenated UUID text.
CREATE TABLE remediation_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
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

    duplicate_count INTEGER NOT NULL DEFAULT 0 CHECK (duplicate_count >= 0),
    last_duplicate_time TEXT,

    retention_expiry_time TEXT,
    deleted_at TEXT,

    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,

    namespace TEXT NOT NULL DEFAULT 'default',
    phase_rank INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    event_time TEXT NOT NULL,

    UNIQUE (namespace, remediation_name, start_time)
);

CREATE INDEX idx_alert_fingerprint ON remediation_audit (alert_fingerprint, start_time DESC);
CREATE INDEX idx_remediation_name ON remediation_audit (remediation_name);
CREATE INDEX idx_overall_phase ON remediation_audit (overall_phase);
CREATE INDEX idx_retention_expiry ON remediation_audit (retention_expiry_time);
CREATE INDEX idx_created_at ON remediation_audit (created_at);
CREATE INDEX idx_start_time_id ON remediation_audit (start_time DESC, id DESC);

CREATE TABLE remediation_audit_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    namespace TEXT NOT NULL,
    remediation_name TEXT NOT NULL,
    start_time TEXT NOT NULL,
    overall_phase TEXT NOT NULL,
    event_time TEXT NOT NULL,
    received_at TEXT NOT NULL,
    record TEXT NOT NULL
);

CREATE INDEX idx_events_remediation
    ON remediation_audit_events (namespace, remediation_name, start_time, event_time);

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
    archived_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'))
);
