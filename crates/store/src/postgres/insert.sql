-- Stores a batch in one statement: each event once (by event_id and
-- start_time, the key partitioning allows, with its content hash), and, for
-- each event stored, a row of the projection queue that the projector
-- (projection.rs, project.sql) applies to the summary and the rollups.
WITH input AS (
    SELECT *
    -- The arrays bound in order, one per column, named as in
    -- `batch_columns!` (postgres.rs), which writes this UNNEST.
    FROM __UNNEST__
),
inserted AS (
    INSERT INTO remediation_audit_events
        (event_id, namespace, remediation_name, start_time, overall_phase, event_time, record, content_hash,
         chain_seq, chain_key_id, chain_mac)
    SELECT event_id, namespace, remediation_name, start_time, overall_phase, event_time, record::jsonb, content_hash,
        chain_seq, chain_key_id, chain_mac
    FROM input
    ORDER BY event_id
    ON CONFLICT (event_id, start_time) DO NOTHING
    RETURNING event_id, start_time
),
queued AS (
    INSERT INTO remediation_projection_queue
        (__QUEUE_COLUMNS__)
    SELECT __QUEUE_COLUMNS__
    FROM input
    JOIN inserted USING (event_id, start_time)
    ORDER BY ord
)
SELECT event_id, start_time FROM inserted
