-- The installation id: a UUID made once, when this database is migrated to
-- this version, and never changed. Retention names every archive object
-- under it (`{installation}/batch-…/…`), so that two databases sharing one
-- archive location (two SQLite files in one directory, a database made
-- again, two installations on one S3 prefix) never write the same names.
-- Batches archived before this migration keep the location their journal
-- row recorded.
CREATE TABLE remaudit_installation (
    singleton BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    id UUID NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO remaudit_installation (id) VALUES (gen_random_uuid());

CREATE FUNCTION remaudit_installation_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the installation id never changes: archive object names depend on it';
END
$$;
CREATE TRIGGER remaudit_installation_fixed BEFORE UPDATE OR DELETE ON remaudit_installation
    FOR EACH ROW EXECUTE FUNCTION remaudit_installation_fixed();
