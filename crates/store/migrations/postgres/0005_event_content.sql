-- Each timeline event keeps a hash of its content: SHA-256 of the record as
-- the caller sent it (its known fields, keys sorted), taken before server
-- defaults such as event_time. A record that reuses a stored
-- (event_id, start_time) with the same hash is a replay (`duplicate`); with
-- another hash it is a `conflict`, and nothing is stored. Events stored
-- before this migration have no hash (NULL), which counts as a match: they
-- stay answerable as duplicates, as they were.
ALTER TABLE remediation_audit_events ADD COLUMN content_hash BYTEA;

-- A week detached by a retention run that has not finished yet is a table of
-- its own: give it the column too, so that it can go back or on to the archive.
DO $$
DECLARE
    t TEXT;
BEGIN
    FOR t IN
        SELECT c.relname FROM pg_class c
        WHERE c.relkind = 'r' AND c.relname LIKE 'remediation\_audit\_events\_w%'
          AND NOT c.relispartition
    LOOP
        EXECUTE format('ALTER TABLE %I ADD COLUMN IF NOT EXISTS content_hash BYTEA', t);
    END LOOP;
END
$$;

-- The archive of events keeps the live table's columns in order, then
-- archived_at and archive_batch, so that retention's
-- `INSERT INTO remediation_audit_events_archive SELECT *, now(), $1 FROM <week>`
-- goes on working: content_hash must come before archived_at. ADD COLUMN
-- would put it last, so the parent is rebuilt. Its weekly partitions move
-- over with the column added (ATTACH matches columns by name; they are only
-- ever read through the parent); the default partition, which retention
-- reads with `RETURNING *`, is copied into a new one in the parent's order.
ALTER TABLE remediation_audit_events_archive RENAME TO remediation_audit_events_archive_0004;
ALTER TABLE remediation_audit_events_archive_0004
    RENAME CONSTRAINT remediation_audit_events_archive_pkey TO remediation_audit_events_archive_0004_pkey;
ALTER TABLE remediation_audit_events_archive_default RENAME TO remediation_audit_events_archive_default_0004;
ALTER INDEX idx_events_archive_batch RENAME TO idx_events_archive_batch_0004;
ALTER INDEX idx_events_archive_remediation RENAME TO idx_events_archive_remediation_0004;
CREATE TABLE remediation_audit_events_archive (
    LIKE remediation_audit_events,
    archived_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    archive_batch BIGINT,
    PRIMARY KEY (id, start_time)
) PARTITION BY RANGE (start_time);
CREATE TABLE remediation_audit_events_archive_default PARTITION OF remediation_audit_events_archive DEFAULT;

DO $$
DECLARE
    part RECORD;
BEGIN
    FOR part IN
        SELECT c.oid::regclass::text AS name, pg_get_expr(c.relpartbound, c.oid) AS bound
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'remediation_audit_events_archive_0004'::regclass
          AND c.relname <> 'remediation_audit_events_archive_default_0004'
        ORDER BY c.relname
    LOOP
        EXECUTE format('ALTER TABLE remediation_audit_events_archive_0004 DETACH PARTITION %s', part.name);
        EXECUTE format('ALTER TABLE %s ADD COLUMN content_hash BYTEA', part.name);
        EXECUTE format('ALTER TABLE remediation_audit_events_archive ATTACH PARTITION %s %s', part.name, part.bound);
    END LOOP;
END
$$;
INSERT INTO remediation_audit_events_archive
    (id, event_id, namespace, remediation_name, start_time, overall_phase, event_time, received_at,
     record, archived_at, archive_batch)
SELECT id, event_id, namespace, remediation_name, start_time, overall_phase, event_time, received_at,
       record, archived_at, archive_batch
FROM remediation_audit_events_archive_default_0004;
DROP TABLE remediation_audit_events_archive_0004;

CREATE INDEX idx_events_archive_batch ON remediation_audit_events_archive (archive_batch);
CREATE INDEX idx_events_archive_remediation
    ON remediation_audit_events_archive (namespace, remediation_name, start_time);
