-- The installation id; see the PostgreSQL migration. SQLite has no UUID
-- function: this is a version 4 UUID made of random bytes.
CREATE TABLE remaudit_installation (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    id TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'))
);
INSERT INTO remaudit_installation (singleton, id)
SELECT 1, lower(substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-4' || substr(h, 14, 3) || '-'
    || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(h, 18, 3) || '-' || substr(h, 21, 12))
FROM (SELECT hex(randomblob(16)) AS h);

CREATE TRIGGER remaudit_installation_no_update BEFORE UPDATE ON remaudit_installation
BEGIN
    SELECT RAISE(ABORT, 'the installation id never changes: archive object names depend on it');
END;
CREATE TRIGGER remaudit_installation_no_delete BEFORE DELETE ON remaudit_installation
BEGIN
    SELECT RAISE(ABORT, 'the installation id never changes: archive object names depend on it');
END;
