-- Queue rows the projector could not apply, even alone: a row whose
-- projection fails with a data or constraint error is moved here (with the
-- error) so that the rows behind it go on being projected. Its event stays
-- stored and on the remediation's timeline; only the summary and rollups
-- lack it. An operator who has fixed the cause puts the row back with
--   WITH back AS (DELETE FROM remediation_projection_quarantine RETURNING *)
--   INSERT INTO remediation_projection_queue (<the queue's columns but id>)
--   SELECT <the same columns> FROM back;
-- (docs/runbooks.md has it in full). Rows arrive here only through a
-- defect, so the table stays small and nothing expires them.
CREATE TABLE remediation_projection_quarantine (
    LIKE remediation_projection_queue,
    quarantined_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    error TEXT NOT NULL,
    PRIMARY KEY (id)
);
