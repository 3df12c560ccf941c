-- The admin log; see the PostgreSQL migration of the same number. Times are
-- the store's fixed-width UTC text; `detail` is a JSON object as text.
CREATE TABLE remaudit_admin_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    subject TEXT NOT NULL CHECK (subject <> ''),
    action TEXT NOT NULL CHECK (action IN ('hold', 'release', 'delete', 'retention_run')),
    target INTEGER,
    reason TEXT NOT NULL CHECK (trim(reason) <> '' AND length(reason) <= 1024),
    detail TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(detail)),
    CHECK ((target IS NULL) = (action = 'retention_run'))
);
CREATE INDEX remaudit_admin_log_at ON remaudit_admin_log (at);
CREATE INDEX remaudit_admin_log_target ON remaudit_admin_log (target) WHERE target IS NOT NULL;

CREATE TRIGGER remaudit_admin_log_no_update BEFORE UPDATE ON remaudit_admin_log
BEGIN
    SELECT RAISE(ABORT, 'remaudit_admin_log is append-only: UPDATE is refused');
END;
CREATE TRIGGER remaudit_admin_log_no_delete BEFORE DELETE ON remaudit_admin_log
BEGIN
    SELECT RAISE(ABORT, 'remaudit_admin_log is append-only: DELETE is refused');
END;
