-- The admin log: one row per admin action (a legal hold set or cleared, a
-- soft delete, a retention run), with who did it, when, to which remediation
-- and why. Hold, release and delete write their row in the transaction that
-- makes the change, so there is never one without the other. The table is
-- append-only: triggers refuse UPDATE, DELETE and TRUNCATE, whoever asks.
CREATE TABLE remaudit_admin_log (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at TIMESTAMPTZ NOT NULL DEFAULT now(),
    subject TEXT NOT NULL CHECK (subject <> ''),
    action TEXT NOT NULL CHECK (action IN ('hold', 'release', 'delete', 'retention_run')),
    target BIGINT,
    reason TEXT NOT NULL CHECK (btrim(reason) <> '' AND char_length(reason) <= 1024),
    detail JSONB NOT NULL DEFAULT '{}'::jsonb,
    CHECK ((target IS NULL) = (action = 'retention_run'))
);
CREATE INDEX remaudit_admin_log_at ON remaudit_admin_log (at);
CREATE INDEX remaudit_admin_log_target ON remaudit_admin_log (target) WHERE target IS NOT NULL;

CREATE FUNCTION remaudit_admin_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'remaudit_admin_log is append-only: % is refused', TG_OP;
END
$$;
CREATE TRIGGER remaudit_admin_log_no_change BEFORE UPDATE OR DELETE ON remaudit_admin_log
    FOR EACH ROW EXECUTE FUNCTION remaudit_admin_log_append_only();
CREATE TRIGGER remaudit_admin_log_no_truncate BEFORE TRUNCATE ON remaudit_admin_log
    FOR EACH STATEMENT EXECUTE FUNCTION remaudit_admin_log_append_only();
