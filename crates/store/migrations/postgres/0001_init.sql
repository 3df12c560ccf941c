-- One row per remediation: the highest-ranked record received so far.
-- Every column of the design's table is here under the design's name, so its
-- use-case SQL runs unchanged; the columns after updated_at are remaudit's.
CREATE TABLE remediation_audit (
    id BIGSERIAL PRIMARY KEY,
    alert_fingerprint VARCHAR(64) NOT NULL,
    remediation_name VARCHAR(255) NOT NULL,
    overall_phase VARCHAR(50) NOT NULL,
    start_time TIMESTAMPTZ NOT NULL,
    completion_time TIMESTAMPTZ,

    remediation_processing_name VARCHAR(255),
    ai_analysis_name VARCHAR(255),
    workflow_execution_name VARCHAR(255),
    kubernetes_execution_name VARCHAR(255),

    service_crd_statuses JSONB,

    timeout_phase VARCHAR(50),
    timeout_time TIMESTAMPTZ,
    failure_phase VARCHAR(50),
    failure_reason TEXT,

    duplicate_count INT NOT NULL DEFAULT 0,
    last_duplicate_time TIMESTAMPTZ,

    retention_expiry_time TIMESTAMPTZ,
    deleted_at TIMESTAMPTZ,

    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),

    namespace VARCHAR(63) NOT NULL DEFAULT 'default',
    phase_rank SMALLINT NOT NULL,
    event_id UUID NOT NULL,
    event_time TIMESTAMPTZ NOT NULL,

    CONSTRAINT remediation_audit_identity UNIQUE (namespace, remediation_name, start_time),
    CONSTRAINT remediation_audit_duplicates_not_negative CHECK (duplicate_count >= 0)
);

CREATE INDEX idx_alert_fingerprint ON remediation_audit (alert_fingerprint, start_time DESC);
CREATE INDEX idx_remediation_name ON remediation_audit (remediation_name);
CREATE INDEX idx_overall_phase ON remediation_audit (overall_phase);
CREATE INDEX idx_retention_expiry ON remediation_audit (retention_expiry_time);
CREATE INDEX idx_created_at ON remediation_audit (created_at);
CREATE INDEX idx_start_time_id ON remediation_audit (start_time DESC, id DESC);

-- Append-only timeline: one row per accepted transition, as received.
CREATE TABLE remediation_audit_events (
    id BIGSERIAL PRIMARY KEY,
    event_id UUID NOT NULL UNIQUE,
    namespace VARCHAR(63) NOT NULL,
    remediation_name VARCHAR(255) NOT NULL,
    start_time TIMESTAMPTZ NOT NULL,
    overall_phase VARCHAR(50) NOT NULL,
    event_time TIMESTAMPTZ NOT NULL,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    record JSONB NOT NULL
);

CREATE INDEX idx_events_remediation
    ON remediation_audit_events (namespace, remediation_name, start_time, event_time);

-- The archive keeps remediation_audit's columns in the same order, so
-- `INSERT INTO remediation_audit_archive SELECT * FROM remediation_audit ...`
-- works; archived_at comes last and takes its default. A migration that adds a
-- column to remediation_audit must add it here too, before archived_at.
CREATE TABLE remediation_audit_archive (
    LIKE remediation_audit,
    archived_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (id)
);
