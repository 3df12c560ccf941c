-- Retention: legal holds, weekly partitions by start_time, the archive of
-- timeline events and the journal of archive batches.
--
-- remediation_audit and remediation_audit_events become tables partitioned
-- by RANGE (start_time), one partition per ISO week (Monday 00:00 UTC), so
-- that retention removes a whole week at once. A remediation's events carry
-- its start_time, so they sit in the same week as its summary row and leave
-- together. Rows outside every partition land in the *_default partitions.
-- A partitioned table's unique keys must contain start_time: the summary
-- keeps (namespace, remediation_name, start_time) and gets (id, start_time);
-- an event is stored once per (event_id, start_time), the pair every replay
-- of a record carries.

-- Creates the weekly partitions of both tables that cover [from_time,
-- to_time), moving rows that already landed in a default partition into the
-- new one. Returns how many partitions it created. Idempotent.
CREATE FUNCTION remaudit_ensure_partitions(from_time TIMESTAMPTZ, to_time TIMESTAMPTZ)
RETURNS INT LANGUAGE plpgsql AS $$
DECLARE
    week TIMESTAMPTZ := date_trunc('week', from_time, 'UTC');
    parent TEXT;
    part TEXT;
    created INT := 0;
BEGIN
    WHILE week < to_time LOOP
        FOREACH parent IN ARRAY ARRAY['remediation_audit', 'remediation_audit_events'] LOOP
            part := parent || '_w' || to_char(week AT TIME ZONE 'UTC', 'YYYYMMDD');
            IF to_regclass(part) IS NULL THEN
                EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part, parent);
                EXECUTE format(
                    'WITH moved AS (DELETE FROM %I WHERE start_time >= $1 AND start_time < $2 RETURNING *) '
                    'INSERT INTO %I SELECT * FROM moved', parent || '_default', part)
                USING week, week + INTERVAL '7 days';
                EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                    parent, part, week, week + INTERVAL '7 days');
                created := created + 1;
            END IF;
        END LOOP;
        week := week + INTERVAL '7 days';
    END LOOP;
    RETURN created;
END
$$;

-- The summary table, partitioned, with legal_hold, then created_xid: the
-- transaction that inserted the row, which tells the batch statement which
-- rows it created (xmax cannot be read back from a partitioned table).
ALTER TABLE remediation_audit RENAME TO remediation_audit_0002;
ALTER TABLE remediation_audit_0002 RENAME CONSTRAINT remediation_audit_pkey TO remediation_audit_0002_pkey;
ALTER TABLE remediation_audit_0002 RENAME CONSTRAINT remediation_audit_identity TO remediation_audit_0002_identity;
DROP INDEX idx_alert_fingerprint, idx_remediation_name, idx_overall_phase, idx_retention_expiry,
    idx_created_at, idx_start_time_id, idx_in_progress, idx_duration, idx_namespace_start_time,
    idx_failure_reasons, idx_timeout_reasons;

CREATE TABLE remediation_audit (
    LIKE remediation_audit_0002 INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
    legal_hold BOOLEAN NOT NULL DEFAULT false,
    created_xid XID8 NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (id, start_time),
    CONSTRAINT remediation_audit_identity UNIQUE (namespace, remediation_name, start_time)
) PARTITION BY RANGE (start_time);
ALTER SEQUENCE remediation_audit_id_seq OWNED BY remediation_audit.id;
CREATE TABLE remediation_audit_default PARTITION OF remediation_audit DEFAULT;

ALTER TABLE remediation_audit_events RENAME TO remediation_audit_events_0002;
ALTER TABLE remediation_audit_events_0002 RENAME CONSTRAINT remediation_audit_events_pkey TO remediation_audit_events_0002_pkey;
ALTER TABLE remediation_audit_events_0002 RENAME CONSTRAINT remediation_audit_events_event_id_key TO remediation_audit_events_0002_event_id_key;
DROP INDEX idx_events_remediation;

CREATE TABLE remediation_audit_events (
    LIKE remediation_audit_events_0002 INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
    PRIMARY KEY (id, start_time),
    CONSTRAINT remediation_audit_events_identity UNIQUE (event_id, start_time)
) PARTITION BY RANGE (start_time);
ALTER SEQUENCE remediation_audit_events_id_seq OWNED BY remediation_audit_events.id;
CREATE TABLE remediation_audit_events_default PARTITION OF remediation_audit_events DEFAULT;

-- Partitions for every week that holds data, and for the weeks around now.
SELECT remaudit_ensure_partitions(w, w + INTERVAL '7 days')
FROM (SELECT DISTINCT date_trunc('week', start_time, 'UTC') AS w FROM remediation_audit_0002) AS weeks;
SELECT remaudit_ensure_partitions(now() - INTERVAL '7 days', now() + INTERVAL '35 days');

INSERT INTO remediation_audit SELECT *, false, '0'::xid8 FROM remediation_audit_0002;
INSERT INTO remediation_audit_events SELECT * FROM remediation_audit_events_0002;
DROP TABLE remediation_audit_0002, remediation_audit_events_0002;

CREATE INDEX idx_alert_fingerprint ON remediation_audit (alert_fingerprint, start_time DESC, id DESC);
CREATE INDEX idx_remediation_name ON remediation_audit (remediation_name);
CREATE INDEX idx_overall_phase ON remediation_audit (overall_phase);
CREATE INDEX idx_retention_expiry ON remediation_audit (retention_expiry_time);
CREATE INDEX idx_created_at ON remediation_audit (created_at);
CREATE INDEX idx_start_time_id ON remediation_audit (start_time DESC, id DESC);
CREATE INDEX idx_in_progress ON remediation_audit (start_time) WHERE phase_rank < 9;
CREATE INDEX idx_duration ON remediation_audit (duration_us DESC) WHERE duration_us IS NOT NULL;
CREATE INDEX idx_namespace_start_time ON remediation_audit (namespace, start_time);
CREATE INDEX idx_failure_reasons ON remediation_audit (failure_phase, start_time DESC, id DESC)
    WHERE failure_reason IS NOT NULL AND overall_phase = 'failed';
CREATE INDEX idx_timeout_reasons ON remediation_audit (timeout_phase, start_time DESC, id DESC)
    WHERE failure_reason IS NOT NULL AND overall_phase = 'timeout';
-- Rows the job must look at wherever they are: soft-deleted and held ones.
CREATE INDEX idx_deleted ON remediation_audit (deleted_at) WHERE deleted_at IS NOT NULL;
CREATE INDEX idx_legal_hold ON remediation_audit (start_time) WHERE legal_hold;
CREATE INDEX idx_events_remediation
    ON remediation_audit_events (namespace, remediation_name, start_time, event_time);

-- The archive keeps remediation_audit's columns in order, then archived_at,
-- then the batch that archived the row; rebuilt for the new columns. It is
-- partitioned like the live tables: retention turns a retired week's live
-- partition into the archive's partition for that week, without copying a
-- row; rows archived one by one land in the default partition.
ALTER TABLE remediation_audit_archive RENAME TO remediation_audit_archive_0002;
ALTER TABLE remediation_audit_archive_0002 DROP CONSTRAINT remediation_audit_archive_pkey;
CREATE TABLE remediation_audit_archive (
    LIKE remediation_audit,
    archived_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    archive_batch BIGINT,
    PRIMARY KEY (id, start_time)
) PARTITION BY RANGE (start_time);
CREATE TABLE remediation_audit_archive_default PARTITION OF remediation_audit_archive DEFAULT;
INSERT INTO remediation_audit_archive
SELECT id, alert_fingerprint, remediation_name, overall_phase, start_time, completion_time,
       remediation_processing_name, ai_analysis_name, workflow_execution_name,
       kubernetes_execution_name, service_crd_statuses, timeout_phase, timeout_time,
       failure_phase, failure_reason, duplicate_count, last_duplicate_time,
       retention_expiry_time, deleted_at, created_at, updated_at, namespace, phase_rank,
       event_id, event_time, duration_us, duration_bin, false, '0'::xid8, archived_at, NULL
FROM remediation_audit_archive_0002;
DROP TABLE remediation_audit_archive_0002;
CREATE INDEX idx_archive_batch ON remediation_audit_archive (archive_batch);
CREATE INDEX idx_archive_start_time ON remediation_audit_archive (start_time);

-- Archived timeline events: the events table's columns, then the same two.
CREATE TABLE remediation_audit_events_archive (
    LIKE remediation_audit_events,
    archived_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    archive_batch BIGINT,
    PRIMARY KEY (id, start_time)
) PARTITION BY RANGE (start_time);
CREATE TABLE remediation_audit_events_archive_default PARTITION OF remediation_audit_events_archive DEFAULT;
CREATE INDEX idx_events_archive_batch ON remediation_audit_events_archive (archive_batch);
CREATE INDEX idx_events_archive_remediation
    ON remediation_audit_events_archive (namespace, remediation_name, start_time);

-- One row per archive batch. A batch is `pending` from before its files are
-- written until the transaction that moves its rows commits and marks it
-- `done`; a batch still pending at the next run was interrupted, so that run
-- removes its files and the row.
CREATE TABLE remediation_retention_batches (
    id BIGSERIAL PRIMARY KEY,
    state VARCHAR(10) NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done')),
    run_now TIMESTAMPTZ NOT NULL,
    source TEXT NOT NULL,
    location TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ,
    remediations BIGINT NOT NULL DEFAULT 0,
    events BIGINT NOT NULL DEFAULT 0,
    bytes BIGINT NOT NULL DEFAULT 0,
    start_time_min TIMESTAMPTZ,
    start_time_max TIMESTAMPTZ,
    manifest_sha256 TEXT
);

-- Rollups count live rows only: a soft delete subtracts its row, and a
-- rebuild leaves soft-deleted rows out.
CREATE OR REPLACE FUNCTION remaudit_rebuild_rollups() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE remediation_audit IN SHARE MODE;
    TRUNCATE remediation_rollup_outcomes, remediation_rollup_durations,
             remediation_rollup_alerts, remediation_rollup_failures;
    INSERT INTO remediation_rollup_outcomes
    SELECT date_trunc('hour', start_time, 'UTC'), ns, overall_phase, count(*)
    FROM remediation_audit, LATERAL (VALUES (''::varchar), (namespace)) AS s(ns)
    WHERE phase_rank = 9 AND deleted_at IS NULL
    GROUP BY 1, 2, 3;
    INSERT INTO remediation_rollup_durations
    SELECT 1, '', date_trunc('hour', start_time, 'UTC'), overall_phase, duration_bin, count(*), sum(duration_us)
    FROM remediation_audit
    WHERE phase_rank = 9 AND duration_bin IS NOT NULL AND deleted_at IS NULL
    GROUP BY 3, 4, 5;
    INSERT INTO remediation_rollup_durations
    SELECT 24, ns, date_trunc('day', start_time, 'UTC'), overall_phase, duration_bin, count(*), sum(duration_us)
    FROM remediation_audit, LATERAL (VALUES (''::varchar), (namespace)) AS s(ns)
    WHERE phase_rank = 9 AND duration_bin IS NOT NULL AND deleted_at IS NULL
    GROUP BY 2, 3, 4, 5;
    INSERT INTO remediation_rollup_alerts
    SELECT g.days, date_bin(g.width, start_time, TIMESTAMPTZ 'epoch'), namespace, alert_fingerprint, count(*),
           count(*) FILTER (WHERE phase_rank = 9 AND overall_phase = 'completed'),
           count(*) FILTER (WHERE phase_rank = 9 AND overall_phase = 'failed'),
           count(*) FILTER (WHERE phase_rank = 9 AND overall_phase NOT IN ('completed', 'failed')),
           max(start_time)
    FROM remediation_audit, LATERAL (VALUES (1::int2, INTERVAL '1 day'), (7::int2, INTERVAL '7 days')) AS g(days, width)
    WHERE deleted_at IS NULL
    GROUP BY 1, 2, 3, 4;
    INSERT INTO remediation_rollup_failures
    SELECT g.days, date_bin(g.width, start_time, TIMESTAMPTZ 'epoch'),
           CASE WHEN overall_phase = 'failed' THEN 'failed' ELSE 'timeout' END,
           COALESCE(CASE WHEN overall_phase = 'failed' THEN failure_phase ELSE timeout_phase END, ''),
           namespace, alert_fingerprint, count(*)
    FROM remediation_audit, LATERAL (VALUES (1::int2, INTERVAL '1 day'), (7::int2, INTERVAL '7 days')) AS g(days, width)
    WHERE phase_rank = 9 AND overall_phase <> 'completed' AND deleted_at IS NULL
    GROUP BY 1, 2, 3, 4, 5, 6;
END
$$;
