-- Analytics: each remediation's duration, and rollups kept as remediations
-- finish, so that success rates, duration percentiles, failures and retries
-- over weeks of data read a few thousand rows instead of millions.

-- The duration's bin in remaudit_model::histogram (relative error 1 %). The
-- store computes bins in Rust when it writes; this function is for backfills
-- and bulk loads, and a test checks that both agree.
CREATE FUNCTION remaudit_duration_bin(micros BIGINT) RETURNS INT
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN micros < 1000 THEN -100000
                ELSE ceil(ln(micros::float8 / 1e6::float8) / ln(1.01::float8 / 0.99::float8))::int END
$$;

ALTER TABLE remediation_audit
    ADD COLUMN duration_us BIGINT,
    ADD COLUMN duration_bin INT;

UPDATE remediation_audit
SET duration_us = (EXTRACT(EPOCH FROM completion_time - start_time) * 1000000)::bigint,
    duration_bin = remaudit_duration_bin((EXTRACT(EPOCH FROM completion_time - start_time) * 1000000)::bigint)
WHERE completion_time IS NOT NULL;

-- The archive keeps remediation_audit's column order (then archived_at), so
-- it is rebuilt with the two new columns in place.
ALTER TABLE remediation_audit_archive RENAME TO remediation_audit_archive_0001;
ALTER TABLE remediation_audit_archive_0001 DROP CONSTRAINT remediation_audit_archive_pkey;
CREATE TABLE remediation_audit_archive (
    LIKE remediation_audit,
    archived_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (id)
);
INSERT INTO remediation_audit_archive
SELECT id, alert_fingerprint, remediation_name, overall_phase, start_time, completion_time,
       remediation_processing_name, ai_analysis_name, workflow_execution_name,
       kubernetes_execution_name, service_crd_statuses, timeout_phase, timeout_time,
       failure_phase, failure_reason, duplicate_count, last_duplicate_time,
       retention_expiry_time, deleted_at, created_at, updated_at, namespace, phase_rank,
       event_id, event_time,
       CASE WHEN completion_time IS NOT NULL
            THEN (EXTRACT(EPOCH FROM completion_time - start_time) * 1000000)::bigint END,
       CASE WHEN completion_time IS NOT NULL
            THEN remaudit_duration_bin((EXTRACT(EPOCH FROM completion_time - start_time) * 1000000)::bigint) END,
       archived_at
FROM remediation_audit_archive_0001;
DROP TABLE remediation_audit_archive_0001;

-- Finished remediations per hour of start_time and final phase; namespace ''
-- counts every namespace.
CREATE TABLE remediation_rollup_outcomes (
    bucket TIMESTAMPTZ NOT NULL,
    namespace VARCHAR(63) NOT NULL,
    final_phase VARCHAR(50) NOT NULL,
    remediations BIGINT NOT NULL,
    PRIMARY KEY (namespace, bucket, final_phase)
);

-- Duration histograms of finished remediations with a completion time:
-- per hour (bucket_hours 1, every namespace only) and per day (bucket_hours
-- 24, every namespace and each namespace), final phase and bin, with the
-- exact sum of durations so that averages are exact.
CREATE TABLE remediation_rollup_durations (
    bucket_hours SMALLINT NOT NULL,
    namespace VARCHAR(63) NOT NULL,
    bucket TIMESTAMPTZ NOT NULL,
    final_phase VARCHAR(50) NOT NULL,
    bin INT NOT NULL,
    remediations BIGINT NOT NULL,
    duration_us BIGINT NOT NULL,
    PRIMARY KEY (bucket_hours, namespace, bucket, final_phase, bin)
);

-- Remediations per alert and day (bucket_days 1) or week (bucket_days 7,
-- weeks counted from the Unix epoch) of start_time: started, and how the
-- finished ones ended. Long windows read whole weeks where they can.
CREATE TABLE remediation_rollup_alerts (
    bucket_days SMALLINT NOT NULL,
    bucket TIMESTAMPTZ NOT NULL,
    namespace VARCHAR(63) NOT NULL,
    alert_fingerprint VARCHAR(64) NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    completed BIGINT NOT NULL DEFAULT 0,
    failed BIGINT NOT NULL DEFAULT 0,
    timed_out BIGINT NOT NULL DEFAULT 0,
    last_start TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (bucket_days, bucket, namespace, alert_fingerprint)
);

-- Failed and timed-out remediations per day or week (as above), phase where
-- it happened ('' when the record did not say) and alert.
CREATE TABLE remediation_rollup_failures (
    bucket_days SMALLINT NOT NULL,
    bucket TIMESTAMPTZ NOT NULL,
    outcome VARCHAR(10) NOT NULL,
    phase VARCHAR(50) NOT NULL,
    namespace VARCHAR(63) NOT NULL,
    alert_fingerprint VARCHAR(64) NOT NULL,
    failures BIGINT NOT NULL,
    PRIMARY KEY (bucket_days, bucket, outcome, phase, namespace, alert_fingerprint)
);

-- Rebuilds every rollup from remediation_audit (bulk loads, repairs); the
-- store keeps them current on every write. Takes the tables' locks first so
-- that no write lands between the delete and the recount.
CREATE FUNCTION remaudit_rebuild_rollups() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE remediation_audit IN SHARE MODE;
    TRUNCATE remediation_rollup_outcomes, remediation_rollup_durations,
             remediation_rollup_alerts, remediation_rollup_failures;
    INSERT INTO remediation_rollup_outcomes
    SELECT date_trunc('hour', start_time, 'UTC'), ns, overall_phase, count(*)
    FROM remediation_audit, LATERAL (VALUES (''::varchar), (namespace)) AS s(ns)
    WHERE phase_rank = 9
    GROUP BY 1, 2, 3;
    INSERT INTO remediation_rollup_durations
    SELECT 1, '', date_trunc('hour', start_time, 'UTC'), overall_phase, duration_bin, count(*), sum(duration_us)
    FROM remediation_audit
    WHERE phase_rank = 9 AND duration_bin IS NOT NULL
    GROUP BY 3, 4, 5;
    INSERT INTO remediation_rollup_durations
    SELECT 24, ns, date_trunc('day', start_time, 'UTC'), overall_phase, duration_bin, count(*), sum(duration_us)
    FROM remediation_audit, LATERAL (VALUES (''::varchar), (namespace)) AS s(ns)
    WHERE phase_rank = 9 AND duration_bin IS NOT NULL
    GROUP BY 2, 3, 4, 5;
    INSERT INTO remediation_rollup_alerts
    SELECT g.days, date_bin(g.width, start_time, TIMESTAMPTZ 'epoch'), namespace, alert_fingerprint, count(*),
           count(*) FILTER (WHERE phase_rank = 9 AND overall_phase = 'completed'),
           count(*) FILTER (WHERE phase_rank = 9 AND overall_phase = 'failed'),
           count(*) FILTER (WHERE phase_rank = 9 AND overall_phase NOT IN ('completed', 'failed')),
           max(start_time)
    FROM remediation_audit, LATERAL (VALUES (1::int2, INTERVAL '1 day'), (7::int2, INTERVAL '7 days')) AS g(days, width)
    GROUP BY 1, 2, 3, 4;
    INSERT INTO remediation_rollup_failures
    SELECT g.days, date_bin(g.width, start_time, TIMESTAMPTZ 'epoch'),
           CASE WHEN overall_phase = 'failed' THEN 'failed' ELSE 'timeout' END,
           COALESCE(CASE WHEN overall_phase = 'failed' THEN failure_phase ELSE timeout_phase END, ''),
           namespace, alert_fingerprint, count(*)
    FROM remediation_audit, LATERAL (VALUES (1::int2, INTERVAL '1 day'), (7::int2, INTERVAL '7 days')) AS g(days, width)
    WHERE phase_rank = 9 AND overall_phase <> 'completed'
    GROUP BY 1, 2, 3, 4, 5, 6;
END
$$;

SELECT remaudit_rebuild_rollups();

CREATE INDEX idx_in_progress ON remediation_audit (start_time) WHERE phase_rank < 9;
CREATE INDEX idx_duration ON remediation_audit (duration_us DESC) WHERE duration_us IS NOT NULL;
CREATE INDEX idx_namespace_start_time ON remediation_audit (namespace, start_time);
-- The latest reasons of one failure group, found without reading the groups
-- that have none (timeouts rarely carry a reason).
CREATE INDEX idx_failure_reasons ON remediation_audit (failure_phase, start_time DESC, id DESC)
    WHERE failure_reason IS NOT NULL AND overall_phase = 'failed';
CREATE INDEX idx_timeout_reasons ON remediation_audit (timeout_phase, start_time DESC, id DESC)
    WHERE failure_reason IS NOT NULL AND overall_phase = 'timeout';

-- A post-mortem and a retry's progression read one alert's latest
-- remediations; with id in the key the index gives their exact order, so a
-- busy alert costs a few index entries instead of a sort of all its rows.
DROP INDEX idx_alert_fingerprint;
CREATE INDEX idx_alert_fingerprint ON remediation_audit (alert_fingerprint, start_time DESC, id DESC);
