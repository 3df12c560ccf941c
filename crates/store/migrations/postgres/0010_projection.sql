-- The projection queue: what an accepted event still has to do to the
-- summary (remediation_audit) and the rollups. Ingest writes each new event
-- and its queue row in one transaction, so an acknowledged event is never
-- without either; the projector (src/postgres/projection.rs) takes rows off
-- the queue and applies them in batches, one summary upsert per remediation
-- per batch, in the same transaction that deletes them, so each is applied
-- exactly once. The row carries the event's summary fields as ingest
-- derived them, so projecting needs no parse of the stored record.
CREATE TABLE remediation_projection_queue (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queued_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    event_id UUID NOT NULL,
    namespace TEXT NOT NULL,
    alert_fingerprint TEXT NOT NULL,
    remediation_name TEXT NOT NULL,
    overall_phase TEXT NOT NULL,
    phase_rank INT2 NOT NULL,
    start_time TIMESTAMPTZ NOT NULL,
    completion_time TIMESTAMPTZ,
    remediation_processing_name TEXT,
    ai_analysis_name TEXT,
    workflow_execution_name TEXT,
    kubernetes_execution_name TEXT,
    service_crd_statuses TEXT,
    timeout_phase TEXT,
    timeout_time TIMESTAMPTZ,
    failure_phase TEXT,
    failure_reason TEXT,
    duplicate_count INT4 NOT NULL,
    last_duplicate_time TIMESTAMPTZ,
    event_time TIMESTAMPTZ NOT NULL,
    duration_us INT8,
    duration_bin INT4,
    retention_expiry_time TIMESTAMPTZ
) WITH (
    -- Every row is deleted soon after it is written: vacuum by row count,
    -- not by a share of a table that is usually near empty.
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 10000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 10000
);
-- No index beyond the key: the queue holds about a second of events, and
-- retention, which projects the rows of what it archives first, reads it
-- whole.
