-- Tamper evidence (see the PostgreSQL migration of the same number): each
-- event's place in its remediation's chain, the key id and MAC, and one
-- chain head per remediation.
ALTER TABLE remediation_audit_events ADD COLUMN chain_seq INTEGER;
ALTER TABLE remediation_audit_events ADD COLUMN chain_key_id TEXT;
ALTER TABLE remediation_audit_events ADD COLUMN chain_mac BLOB;

CREATE TABLE remediation_chain_heads (
    namespace TEXT NOT NULL,
    remediation_name TEXT NOT NULL,
    start_time TEXT NOT NULL,
    last_seq INTEGER NOT NULL,
    last_mac BLOB,
    PRIMARY KEY (namespace, remediation_name, start_time)
);
CREATE INDEX idx_chain_heads_start ON remediation_chain_heads (start_time, namespace, remediation_name);

-- The archive keeps the live columns in order before archived_at and
-- archive_batch (retention copies with `SELECT e.*, ...`): rebuilt.
CREATE TABLE remediation_audit_events_archive_0007 (
    id INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    namespace TEXT NOT NULL,
    remediation_name TEXT NOT NULL,
    start_time TEXT NOT NULL,
    overall_phase TEXT NOT NULL,
    event_time TEXT NOT NULL,
    received_at TEXT NOT NULL,
    record TEXT NOT NULL,
    content_hash BLOB,
    chain_seq INTEGER,
    chain_key_id TEXT,
    chain_mac BLOB,
    archived_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    archive_batch INTEGER
);
INSERT INTO remediation_audit_events_archive_0007
    (id, event_id, namespace, remediation_name, start_time, overall_phase, event_time, received_at,
     record, content_hash, archived_at, archive_batch)
SELECT id, event_id, namespace, remediation_name, start_time, overall_phase, event_time, received_at,
       record, content_hash, archived_at, archive_batch
FROM remediation_audit_events_archive;
DROP TABLE remediation_audit_events_archive;
ALTER TABLE remediation_audit_events_archive_0007 RENAME TO remediation_audit_events_archive;
CREATE INDEX idx_events_archive_batch ON remediation_audit_events_archive (archive_batch);
CREATE INDEX idx_events_archive_remediation
    ON remediation_audit_events_archive (namespace, remediation_name, start_time);
