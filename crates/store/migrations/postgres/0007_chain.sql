-- Tamper evidence: every event stored from now on gets a place in its
-- remediation's chain (chain_seq, from 1, handed out under the remediation's
-- chain head in the transaction that stores the event) and, when the server
-- holds a chain key, an HMAC-SHA-256 (chain_mac, made with key chain_key_id)
-- over its content and the previous chained event's MAC. Events stored
-- before this migration keep NULLs: "unchained", not tampered.
ALTER TABLE remediation_audit_events
    ADD COLUMN chain_seq BIGINT,
    ADD COLUMN chain_key_id TEXT,
    ADD COLUMN chain_mac BYTEA;

-- A remediation's chain head: its last sequence number and the MAC of its
-- last chained event. Its row lock serialises the writers of one
-- remediation only.
CREATE TABLE remediation_chain_heads (
    namespace VARCHAR(63) NOT NULL,
    remediation_name VARCHAR(255) NOT NULL,
    start_time TIMESTAMPTZ NOT NULL,
    last_seq BIGINT NOT NULL,
    last_mac BYTEA,
    PRIMARY KEY (namespace, remediation_name, start_time)
);
CREATE INDEX idx_chain_heads_start ON remediation_chain_heads (start_time, namespace, remediation_name);

-- Weeks detached by an unfinished retention run get the columns too.
DO $$
DECLARE
    t TEXT;
BEGIN
    FOR t IN
        SELECT c.relname FROM pg_class c
        WHERE c.relkind = 'r' AND c.relname LIKE 'remediation\_audit\_events\_w%'
          AND NOT c.relispartition
    LOOP
        EXECUTE format('ALTER TABLE %I ADD COLUMN IF NOT EXISTS chain_seq BIGINT, '
            'ADD COLUMN IF NOT EXISTS chain_key_id TEXT, ADD COLUMN IF NOT EXISTS chain_mac BYTEA', t);
    END LOOP;
END
$$;

-- The archive keeps the live columns in order before archived_at and
-- archive_batch (retention copies with `SELECT *, now(), $1`), so it is
-- rebuilt as migration 0005 rebuilt it.
ALTER TABLE remediation_audit_events_archive RENAME TO remediation_audit_events_archive_0007;
ALTER TABLE remediation_audit_events_archive_0007
    RENAME CONSTRAINT remediation_audit_events_archive_pkey TO remediation_audit_events_archive_0007_pkey;
ALTER TABLE remediation_audit_events_archive_default RENAME TO remediation_audit_events_archive_default_0007;
ALTER INDEX idx_events_archive_batch RENAME TO idx_events_archive_batch_0007;
ALTER INDEX idx_events_archive_remediation RENAME TO idx_events_archive_remediation_0007;
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
        WHERE i.inhparent = 'remediation_audit_events_archive_0007'::regclass
          AND c.relname <> 'remediation_audit_events_archive_default_0007'
        ORDER BY c.relname
    LOOP
        EXECUTE format('ALTER TABLE remediation_audit_events_archive_0007 DETACH PARTITION %s', part.name);
        EXECUTE format('ALTER TABLE %s ADD COLUMN chain_seq BIGINT, ADD COLUMN chain_key_id TEXT, '
            'ADD COLUMN chain_mac BYTEA', part.name);
        EXECUTE format('ALTER TABLE remediation_audit_events_archive ATTACH PARTITION %s %s', part.name, part.bound);
    END LOOP;
END
$$;
INSERT INTO remediation_audit_events_archive
    (id, event_id, namespace, remediation_name, start_time, overall_phase, event_time, received_at,
     record, content_hash, archived_at, archive_batch)
SELECT id, event_id, namespace, remediation_name, start_time, overall_phase, event_time, received_at,
       record, content_hash, archived_at, archive_batch
FROM remediation_audit_events_archive_default_0007;
DROP TABLE remediation_audit_events_archive_0007;

CREATE INDEX idx_events_archive_batch ON remediation_audit_events_archive (archive_batch);
CREATE INDEX idx_events_archive_remediation
    ON remediation_audit_events_archive (namespace, remediation_name, start_time);
