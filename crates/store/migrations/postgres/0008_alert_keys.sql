-- Per-alert rollups keyed by a 64-bit hash of the fingerprint instead of the
-- fingerprint itself: their rows shrink to about a third, and the failures
-- and retries questions group integers instead of 32-character strings. A
-- dictionary maps each key back to its fingerprint for the lists that name
-- alerts.

-- The key of an alert fingerprint: hashtextextended, the hash PostgreSQL
-- uses for hash partitioning, stable across its versions. Its value may
-- depend on the machine's byte order: a dump restored onto a machine of the
-- other byte order needs SELECT remaudit_rebuild_rollups(). Two fingerprints
-- with one key share their rollup rows; among ten million alerts the chance
-- that any two do is about three in a million.
CREATE FUNCTION remaudit_alert_key(fingerprint TEXT) RETURNS BIGINT
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT hashtextextended(fingerprint, 0)
$$;

-- Every alert key the rollups use, with its fingerprint. It only grows: one
-- row per alert ever stored.
CREATE TABLE remediation_alert_keys (
    alert_key BIGINT PRIMARY KEY,
    alert_fingerprint VARCHAR(64) NOT NULL
);

INSERT INTO remediation_alert_keys
SELECT DISTINCT ON (1) remaudit_alert_key(alert_fingerprint), alert_fingerprint
FROM (SELECT alert_fingerprint FROM remediation_rollup_alerts
      UNION SELECT alert_fingerprint FROM remediation_rollup_failures) AS f
ORDER BY 1, 2;

-- The counts are int4 (no alert is retried two billion times in a week), so
-- that sum() adds integers rather than numerics.
ALTER TABLE remediation_rollup_alerts RENAME TO remediation_rollup_alerts_0007;
ALTER TABLE remediation_rollup_alerts_0007 RENAME CONSTRAINT remediation_rollup_alerts_pkey TO remediation_rollup_alerts_0007_pkey;
CREATE TABLE remediation_rollup_alerts (
    bucket_days SMALLINT NOT NULL,
    bucket TIMESTAMPTZ NOT NULL,
    namespace VARCHAR(63) NOT NULL,
    alert_key BIGINT NOT NULL,
    attempts INT NOT NULL DEFAULT 0,
    completed INT NOT NULL DEFAULT 0,
    failed INT NOT NULL DEFAULT 0,
    timed_out INT NOT NULL DEFAULT 0,
    last_start TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (bucket_days, bucket, namespace, alert_key)
);
INSERT INTO remediation_rollup_alerts
SELECT bucket_days, bucket, namespace, remaudit_alert_key(alert_fingerprint),
       sum(attempts), sum(completed), sum(failed), sum(timed_out), max(last_start)
FROM remediation_rollup_alerts_0007
GROUP BY 1, 2, 3, 4
ORDER BY 1, 2;
DROP TABLE remediation_rollup_alerts_0007;

ALTER TABLE remediation_rollup_failures RENAME TO remediation_rollup_failures_0007;
ALTER TABLE remediation_rollup_failures_0007 RENAME CONSTRAINT remediation_rollup_failures_pkey TO remediation_rollup_failures_0007_pkey;
CREATE TABLE remediation_rollup_failures (
    bucket_days SMALLINT NOT NULL,
    bucket TIMESTAMPTZ NOT NULL,
    outcome VARCHAR(10) NOT NULL,
    phase VARCHAR(50) NOT NULL,
    namespace VARCHAR(63) NOT NULL,
    alert_key BIGINT NOT NULL,
    failures INT NOT NULL,
    PRIMARY KEY (bucket_days, bucket, outcome, phase, namespace, alert_key)
);
INSERT INTO remediation_rollup_failures
SELECT bucket_days, bucket, outcome, phase, namespace, remaudit_alert_key(alert_fingerprint), sum(failures)
FROM remediation_rollup_failures_0007
GROUP BY 1, 2, 3, 4, 5, 6
ORDER BY 1, 2;
DROP TABLE remediation_rollup_failures_0007;

-- New tables have no statistics until autovacuum comes by; without them the
-- first questions would be planned blind.
ANALYZE remediation_alert_keys, remediation_rollup_alerts, remediation_rollup_failures;

-- The rebuild writes each rollup in bucket order, as a day of writes does, so
-- that a window's rows sit together on disk after a bulk load too.
CREATE OR REPLACE FUNCTION remaudit_rebuild_rollups() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE remediation_audit IN SHARE MODE;
    TRUNCATE remediation_rollup_outcomes, remediation_rollup_durations,
             remediation_rollup_alerts, remediation_rollup_failures;
    INSERT INTO remediation_alert_keys
    SELECT DISTINCT remaudit_alert_key(alert_fingerprint), alert_fingerprint
    FROM remediation_audit
    WHERE deleted_at IS NULL
    ON CONFLICT DO NOTHING;
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
    SELECT g.days, date_bin(g.width, start_time, TIMESTAMPTZ 'epoch'), namespace,
           remaudit_alert_key(alert_fingerprint), count(*),
           count(*) FILTER (WHERE phase_rank = 9 AND overall_phase = 'completed'),
           count(*) FILTER (WHERE phase_rank = 9 AND overall_phase = 'failed'),
           count(*) FILTER (WHERE phase_rank = 9 AND overall_phase NOT IN ('completed', 'failed')),
           max(start_time)
    FROM remediation_audit, LATERAL (VALUES (1::int2, INTERVAL '1 day'), (7::int2, INTERVAL '7 days')) AS g(days, width)
    WHERE deleted_at IS NULL
    GROUP BY 1, 2, 3, 4
    ORDER BY 1, 2;
    INSERT INTO remediation_rollup_failures
    SELECT g.days, date_bin(g.width, start_time, TIMESTAMPTZ 'epoch'),
           CASE WHEN overall_phase = 'failed' THEN 'failed' ELSE 'timeout' END,
           COALESCE(CASE WHEN overall_phase = 'failed' THEN failure_phase ELSE timeout_phase END, ''),
           namespace, remaudit_alert_key(alert_fingerprint), count(*)
    FROM remediation_audit, LATERAL (VALUES (1::int2, INTERVAL '1 day'), (7::int2, INTERVAL '7 days')) AS g(days, width)
    WHERE phase_rank = 9 AND overall_phase <> 'completed' AND deleted_at IS NULL
    GROUP BY 1, 2, 3, 4, 5, 6
    ORDER BY 1, 2;
END
$$;
