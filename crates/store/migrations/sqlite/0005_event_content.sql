-- Each timeline event keeps a hash of its content (see the PostgreSQL
-- migration of the same number), and an event is identified by
-- (event_id, start_time), as on PostgreSQL, rather than by event_id alone.
-- SQLite cannot change a column's UNIQUE constraint, so the table is rebuilt;
-- its AUTOINCREMENT counter is carried over, so that no id of an event
-- already archived is handed out again.
CREATE TABLE remediation_audit_events_0005_seq AS
    SELECT max(
        coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'remediation_audit_events'), 0),
        coalesce((SELECT max(id) FROM remediation_audit_events_archive), 0)
    ) AS seq;

CREATE TABLE remediation_audit_events_0005 (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    namespace TEXT NOT NULL,
    remediation_name TEXT NOT NULL,
    start_time TEXT NOT NULL,
    overall_phase TEXT NOT NULL,
    event_time TEXT NOT NULL,
    received_at TEXT NOT NULL,
    record TEXT NOT NULL,
    content_hash BLOB
);
INSERT INTO remediation_audit_events_0005
    (id, event_id, namespace, remediation_name, start_time, overall_phase, event_time, received_at, record)
SELECT id, event_id, namespace, remediation_name, start_time, overall_phase, event_time, received_at, record
FROM remediation_audit_events;
DROP TABLE remediation_audit_events;
ALTER TABLE remediation_audit_events_0005 RENAME TO remediation_audit_events;
DELETE FROM sqlite_sequence WHERE name = 'remediation_audit_events';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'remediation_audit_events', seq FROM remediation_audit_events_0005_seq;
DROP TABLE remediation_audit_events_0005_seq;
CREATE UNIQUE INDEX idx_events_identity ON remediation_audit_events (event_id, start_time);
CREATE INDEX idx_events_remediation
    ON remediation_audit_events (namespace, remediation_name, start_time, event_time);

-- The archive of events keeps the live table's columns in order, then
-- archived_at and archive_batch (retention copies with `SELECT e.*, ...`).
CREATE TABLE remediation_audit_events_archive_0005 (
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
    archived_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    archive_batch INTEGER
);
INSERT INTO remediation_audit_events_archive_0005
    (id, event_id, namespace, remediation_name, start_time, overall_phase, event_time, received_at,
     record, archived_at, archive_batch)
SELECT id, event_id, namespace, remediation_name, start_time, overall_phase, event_time, received_at,
       record, archived_at, archive_batch
FROM remediation_audit_events_archive;
DROP TABLE remediation_audit_events_archive;
ALTER TABLE remediation_audit_events_archive_0005 RENAME TO remediation_audit_events_archive;
CREATE INDEX idx_events_archive_batch ON remediation_audit_events_archive (archive_batch);
CREATE INDEX idx_events_archive_remediation
    ON remediation_audit_events_archive (namespace, remediation_name, start_time);
