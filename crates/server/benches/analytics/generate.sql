-- Fills remediation_audit with a synthetic fleet for the analytics benchmark:
-- by default 90 days ending at "now", 110,000 remediations a day (9.9 million
-- rows), no timeline events. Run it on a database where the PostgreSQL
-- migrations are applied and remediation_audit is still empty, for example
--
--   psql "$URL" -v ON_ERROR_STOP=1 -f crates/server/benches/analytics/generate.sql
--
-- Knobs, read from session settings (psql: PGOPTIONS='-c remaudit.bench_days=2'):
--   remaudit.bench_now      the end of the data, a timestamptz (default: now())
--   remaudit.bench_days     how many days of data (default 90)
--   remaudit.bench_per_day  remediations started per day (default 110000)
--
-- What the rows look like:
--   * start_time spread over the days with a daily cycle (three times as many
--     starts at the busiest hour, about 14:00 UTC, as at the quietest); ids
--     follow start_time, and so does the rows' physical order;
--   * 20 namespaces team-01 .. team-20; 10,000 alert fingerprints (md5 hex),
--     each in one namespace, with a Zipf-like popularity (the most frequent
--     alert has about 7 % of all remediations, the rarest a few a week);
--   * outcomes: about 85 % completed, 12 % failed (with a failure phase and
--     one of 30 reasons, some longer than 100 characters), 3 % timed out
--     (after the phase's timeout, 30 or 60 minutes);
--   * durations log-normal around a 3 minute median, capped at one hour;
--   * a remediation whose end would come after "now" is still running, in the
--     phase its elapsed time suggests, with no completion time;
--   * created_at a fraction of a second after start_time (the design's SQL
--     filters on it), updated_at just after the last transition;
--   * child names as the orchestrator sets them, a status snapshot on one
--     row in five, duplicates on 3 %.
-- The same settings give the same rows (event ids aside).
--
-- Layout, for the benchmark harness (psql just runs everything in order):
--   "-- session:" opens what every connection runs first;
--   "-- step: NAME" opens a step; steps run in order, and are timed;
--   "-- part" splits a step into parts that may run at the same time on
--     different connections (each takes the next part not yet started).
-- The load runs without indexes: those of remediation_audit (index-backed
-- constraints included) are dropped first and rebuilt from their saved
-- definitions afterwards, whatever the migrations define. User triggers are
-- off meanwhile; the rollups are rebuilt in one go at the end. Halves of the
-- data are generated at once: the first straight into remediation_audit, the
-- second into a staging table that is then appended, so the physical order
-- stays that of start_time. The helpers (remaudit_bench_* tables, view and
-- functions) are dropped again at the end.

-- session:
SET synchronous_commit = off;
SET TimeZone = 'UTC';
-- Compiling the generator's expressions costs more than it saves.
SET jit = off;
SET maintenance_work_mem = '1GB';
SET work_mem = '256MB';
SET max_parallel_maintenance_workers = 2;
-- Only errors: VACUUM warns about every catalog it may not vacuum.
SET client_min_messages = error;
SELECT set_config('remaudit.bench_now',
                  COALESCE(NULLIF(current_setting('remaudit.bench_now', true), ''), now()::text), false),
       set_config('remaudit.bench_days',
                  COALESCE(NULLIF(current_setting('remaudit.bench_days', true), ''), '90'), false),
       set_config('remaudit.bench_per_day',
                  COALESCE(NULLIF(current_setting('remaudit.bench_per_day', true), ''), '110000'), false);

-- step: prepare
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM remediation_audit) THEN
        RAISE EXCEPTION 'remediation_audit already has rows: run the generator on a fresh database';
    END IF;
END
$$;
DROP TABLE IF EXISTS remaudit_bench_saved_indexes, remaudit_bench_staging;
CREATE UNLOGGED TABLE remaudit_bench_staging (LIKE remediation_audit);
-- Every index of remediation_audit; for those behind a constraint, the
-- constraint too. `built` marks those rebuilt.
CREATE TABLE remaudit_bench_saved_indexes AS
SELECT i.indexrelid::regclass::text AS name,
       pg_get_indexdef(i.indexrelid) AS definition,
       c.conname::text AS constraint_name,
       c.contype::text AS constraint_type,
       false AS built
FROM pg_index i
LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid
WHERE i.indrelid = 'remediation_audit'::regclass;
DO $$
DECLARE
    r record;
BEGIN
    IF EXISTS (SELECT 1 FROM remaudit_bench_saved_indexes
               WHERE constraint_type IS NOT NULL AND constraint_type NOT IN ('p', 'u')) THEN
        RAISE EXCEPTION 'remediation_audit has an index-backed constraint the generator cannot rebuild';
    END IF;
    FOR r IN SELECT * FROM remaudit_bench_saved_indexes LOOP
        IF r.constraint_name IS NOT NULL THEN
            EXECUTE format('ALTER TABLE remediation_audit DROP CONSTRAINT %I', r.constraint_name);
        ELSE
            EXECUTE format('DROP INDEX %s', r.name);
        END IF;
    END LOOP;
END
$$;
ALTER TABLE remediation_audit DISABLE TRIGGER USER;

-- The rows of remediation ids remaudit.bench_lo .. remaudit.bench_hi (ids
-- count from 1 in start_time order). Each level of the nested SELECT computes
-- a few columns from the one below; OFFSET 0 keeps the planner from folding
-- the levels together, which would copy (and re-evaluate) every expression
-- wherever a column above uses it.
CREATE VIEW remaudit_bench_rows AS
SELECT
    f.k AS id,
    f.fingerprint AS alert_fingerprint,
    f.name AS remediation_name,
    f.phase AS overall_phase,
    f.start_time,
    f.completion_time,
    f.name || '-rp' AS remediation_processing_name,
    CASE WHEN f.reached >= 2 THEN f.name || '-ai' END AS ai_analysis_name,
    CASE WHEN f.reached >= 3 THEN f.name || '-we' END AS workflow_execution_name,
    CASE WHEN f.reached >= 3 THEN f.name || '-job' END AS kubernetes_execution_name,
    CASE WHEN f.u_status < 0.2 THEN jsonb_build_object(
        'remediationProcessing', jsonb_build_object(
            'phase', CASE WHEN f.reached > 1 THEN 'completed' ELSE f.phase END,
            'success', f.reached > 1 OR f.phase = 'completed'),
        'aiAnalysis', CASE WHEN f.reached >= 2 THEN jsonb_build_object(
            'phase', CASE WHEN f.reached > 2 THEN 'completed' ELSE f.phase END,
            'success', f.reached > 2 OR f.phase = 'completed',
            'confidence', round((0.55 + f.u_status * 2)::numeric, 2)) END,
        'workflowExecution', CASE WHEN f.reached >= 3 THEN jsonb_build_object(
            'phase', f.phase,
            'success', f.phase = 'completed',
            'steps', 1 + (f.k % 5)) END) END AS service_crd_statuses,
    f.timeout_phase,
    CASE WHEN f.timeout_phase IS NOT NULL THEN f.completion_time END AS timeout_time,
    f.failure_phase,
    f.failure_reason,
    f.duplicates AS duplicate_count,
    CASE WHEN f.duplicates > 0 THEN f.start_time + (f.u_status * 60) * interval '1 second' END
        AS last_duplicate_time,
    f.created_at,
    GREATEST(f.created_at, LEAST(f.bench_now, f.event_time + interval '40 milliseconds')) AS updated_at,
    f.namespace,
    f.rank AS phase_rank,
    gen_random_uuid() AS event_id,
    f.event_time,
    f.duration_us,
    remaudit_duration_bin(f.duration_us) AS duration_bin
FROM (
    SELECT
        e.*,
        CASE WHEN e.completion_time IS NOT NULL
             THEN (EXTRACT(EPOCH FROM e.completion_time - e.start_time) * 1000000)::bigint END
            AS duration_us,
        COALESCE(e.completion_time,
                 e.start_time + (e.bench_now - e.start_time) * (e.rank / 4.0)) AS event_time,
        -- The last phase the remediation entered: 1 processing, 2 analyzing, 3 executing.
        CASE WHEN e.completion_time IS NULL THEN e.rank
             ELSE CASE COALESCE(e.failure_phase, e.timeout_phase, 'executing')
                      WHEN 'processing' THEN 1 WHEN 'analyzing' THEN 2 ELSE 3 END
        END AS reached
    FROM (
        SELECT
            d.bench_now, d.k, d.start_time, d.created_at, d.u_status, d.duplicates, d.name,
            d.fingerprint, d.namespace,
            CASE WHEN d.would_end > d.bench_now
                 THEN (ARRAY['pending', 'processing', 'analyzing', 'executing'])[1 + d.running_rank]
                 ELSE d.outcome END AS phase,
            CASE WHEN d.would_end > d.bench_now THEN d.running_rank ELSE 9 END::smallint AS rank,
            CASE WHEN d.would_end <= d.bench_now THEN d.would_end END AS completion_time,
            CASE WHEN d.would_end <= d.bench_now AND d.outcome = 'failed' THEN d.where_phase END
                AS failure_phase,
            CASE WHEN d.would_end <= d.bench_now AND d.outcome = 'failed' THEN d.reason END
                AS failure_reason,
            CASE WHEN d.would_end <= d.bench_now AND d.outcome = 'timeout' THEN d.where_phase END
                AS timeout_phase
        FROM (
            SELECT
                c.*,
                c.start_time + c.seconds * interval '1 second' AS would_end,
                LEAST(3, floor(4 * EXTRACT(EPOCH FROM c.bench_now - c.start_time)
                                 / GREATEST(c.seconds, 1)))::int AS running_rank
            FROM (
                SELECT
                    b.*,
                    CASE b.outcome
                        WHEN 'timeout' THEN
                            CASE b.where_phase WHEN 'executing' THEN 3600 ELSE 1800 END
                            + b.u_jitter * 60
                        ELSE
                            LEAST(3600, GREATEST(4,
                                180 * exp(0.95 * b.z)
                                    * CASE b.where_phase WHEN 'processing' THEN 0.3
                                                         WHEN 'analyzing' THEN 0.6 ELSE 1 END))
                    END AS seconds,
                    CASE b.outcome WHEN 'failed' THEN
                        (ARRAY[
                            -- processing
                            'signal enrichment failed: context API returned 503 Service Unavailable',
                            'alert labels missing required key "namespace"',
                            'target resource not found: deployment/payments-api',
                            'environment classification failed: no matching namespace label',
                            'duplicate suppression lookup timed out after 5s',
                            'RBAC: serviceaccount remediation-processor cannot get pods in this namespace',
                            'signal payload exceeds 256 KiB after enrichment',
                            'failed to resolve owner reference chain for pod (ReplicaSet deleted while resolving, possibly during a rollout)',
                            'cluster API unreachable: dial tcp 10.96.0.1:443: i/o timeout',
                            'invalid alert fingerprint format',
                            -- analyzing
                            'LLM provider rate limit exceeded (429); retry budget exhausted',
                            'AI analysis confidence 0.41 below threshold 0.70; human review required',
                            'holmesgpt investigation failed: toolset kubernetes/logs returned no data for container app',
                            'no remediation workflow matches the root cause "node disk pressure" in the catalog',
                            'analysis response could not be parsed: expected JSON object with field "recommendations", got plain text',
                            'context window exceeded while summarizing 1,200 log lines; truncated input rejected by the model',
                            'historical success rate for recommended action below 30%; action blocked by policy',
                            'AI analysis cancelled: parent RemediationRequest deleted',
                            'vector store query failed: connection refused',
                            'recommendation rejected by safety policy: action "delete-namespace" is never allowed in production clusters',
                            -- executing
                            'workflow step scale-deployment failed: admission webhook "policy.example.com" denied the request: replicas exceed quota',
                            'rollout restart did not converge: 2 of 6 pods in CrashLoopBackOff after 300s',
                            'kubernetes job exited with code 137 (OOMKilled)',
                            'node drain blocked by PodDisruptionBudget payments-pdb (0 disruptions allowed)',
                            'precondition failed: deployment generation changed during execution',
                            'rollback failed: previous revision 41 no longer in history (revisionHistoryLimit reached)',
                            'step increase-memory-limit failed: LimitRange max memory 4Gi exceeded for container app in namespace',
                            'validation after execution failed: alert still firing 10 minutes after the action completed',
                            'execution aborted: another remediation holds the lock on this resource',
                            'step cordon-node failed: nodes "worker-17" is forbidden: User cannot patch resource "nodes"'
                        ])[1 + CASE b.where_phase WHEN 'processing' THEN 0 WHEN 'analyzing' THEN 10 ELSE 20 END
                             + floor(b.u_jitter * 10)::int]
                    END AS reason
                FROM (
                    SELECT
                        a.*,
                        'rr-' || a.k AS name,
                        md5('fp-' || a.alert) AS fingerprint,
                        'team-' || lpad((1 + a.alert % 20)::text, 2, '0') AS namespace,
                        CASE WHEN a.u_outcome < 0.85 THEN 'completed'
                             WHEN a.u_outcome < 0.97 THEN 'failed'
                             ELSE 'timeout' END AS outcome,
                        CASE WHEN a.u_outcome < 0.85 THEN 'executing'
                             WHEN a.u_phase < 0.25 THEN 'processing'
                             WHEN a.u_phase < 0.6 THEN 'analyzing'
                             ELSE 'executing' END AS where_phase,
                        a.origin + a.at_day * interval '86400 seconds' AS start_time,
                        LEAST(a.bench_now, a.origin + a.at_day * interval '86400 seconds'
                                           + (0.02 + a.u_jitter * 0.5) * interval '1 second') AS created_at
                    FROM (
                        SELECT
                            g.bench_now,
                            g.origin,
                            g.k,
                            -- Position in days, warped by the daily cycle (monotone,
                            -- from 0 to the number of days).
                            g.s - 0.5 / (2 * pi()) * (sin(2 * pi() * (g.s - g.peak)) + sin(2 * pi() * g.peak))
                                AS at_day,
                            -- Alert popularity ~ 1/rank, ranks scattered over alert numbers.
                            ((LEAST(9999, floor(exp(random() * ln(10001.0))) - 1)::bigint * 7919) % 10000)::int
                                AS alert,
                            random() AS u_outcome,
                            random() AS u_phase,
                            random() AS u_jitter,
                            random() AS u_status,
                            sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()) AS z,
                            CASE WHEN random() < 0.03 THEN 1 + (g.k % 3)::int ELSE 0 END AS duplicates
                        FROM (
                            SELECT p.bench_now, p.origin, p.peak, k,
                                   (k - 1 + random()) * p.days / p.total AS s
                            FROM (
                                -- The phase of the warp that puts the busiest time at
                                -- 14:00 UTC: a few rounds of c = t + sin(2 pi c) / 4 pi,
                                -- t being 14:00 in days after the origin's time of day.
                                SELECT r.*,
                                       r.t + 0.25 / pi() * sin(2 * pi() * (
                                       r.t + 0.25 / pi() * sin(2 * pi() * (
                                       r.t + 0.25 / pi() * sin(2 * pi() * (
                                       r.t + 0.25 / pi() * sin(2 * pi() * (
                                       r.t + 0.25 / pi() * sin(2 * pi() * r.t))))))))) AS peak
                                FROM (
                                    SELECT q.bench_now, q.days, q.days::bigint * q.per_day AS total, q.lo, q.hi,
                                           q.bench_now - q.days * interval '86400 seconds' AS origin,
                                           mod(1 + 14.0 / 24
                                                 - mod(extract(epoch FROM q.bench_now - q.days * interval '86400 seconds')::numeric,
                                                       86400) / 86400, 1)::float8 AS t
                                    FROM (
                                        SELECT current_setting('remaudit.bench_now')::timestamptz AS bench_now,
                                               current_setting('remaudit.bench_days')::int AS days,
                                               current_setting('remaudit.bench_per_day')::int AS per_day,
                                               current_setting('remaudit.bench_lo')::bigint AS lo,
                                               current_setting('remaudit.bench_hi')::bigint AS hi
                                    ) q
                                ) r
                                OFFSET 0
                            ) p,
                            generate_series(p.lo, p.hi) AS k
                            OFFSET 0
                        ) g
                        OFFSET 0
                    ) a
                    OFFSET 0
                ) b
                OFFSET 0
            ) c
            OFFSET 0
        ) d
        OFFSET 0
    ) e
    OFFSET 0
) f;

-- Inserts the days [first_day, last_day) of the data into `target`, five
-- days per statement, with a random seed of its own (so the rows do not
-- depend on which connection runs what).
CREATE FUNCTION remaudit_bench_fill(target regclass, first_day int, last_day int)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    per_day bigint := current_setting('remaudit.bench_per_day')::bigint;
    day int := first_day;
    columns text;
BEGIN
    SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO columns
    FROM pg_attribute
    WHERE attrelid = 'remaudit_bench_rows'::regclass AND attnum > 0;
    PERFORM setseed(0.2026 + first_day / 100000.0);
    WHILE day < last_day LOOP
        PERFORM set_config('remaudit.bench_lo', (day * per_day + 1)::text, false),
                set_config('remaudit.bench_hi', (LEAST(day + 5, last_day) * per_day)::text, false);
        EXECUTE format('INSERT INTO %s (%s) SELECT %s FROM remaudit_bench_rows', target, columns, columns);
        day := day + 5;
    END LOOP;
END
$$;

-- Rebuilds the saved indexes nobody has claimed yet, one at a time; several
-- connections may run it at once.
CREATE FUNCTION remaudit_bench_build_indexes() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    next_name text;
    next_definition text;
BEGIN
    LOOP
        SELECT name, definition INTO next_name, next_definition
        FROM remaudit_bench_saved_indexes
        WHERE NOT built
        ORDER BY name
        LIMIT 1
        FOR UPDATE SKIP LOCKED;
        EXIT WHEN next_name IS NULL;
        EXECUTE next_definition;
        UPDATE remaudit_bench_saved_indexes SET built = true WHERE name = next_name;
    END LOOP;
END
$$;

-- step: insert rows
-- part
SELECT remaudit_bench_fill('remediation_audit',
                           0, current_setting('remaudit.bench_days')::int / 2);
-- part
SELECT remaudit_bench_fill('remaudit_bench_staging',
                           current_setting('remaudit.bench_days')::int / 2,
                           current_setting('remaudit.bench_days')::int);

-- step: append second half
INSERT INTO remediation_audit SELECT * FROM remaudit_bench_staging;
DROP TABLE remaudit_bench_staging;
SELECT setval(pg_get_serial_sequence('remediation_audit', 'id'),
              GREATEST(1, (SELECT max(id) FROM remediation_audit)));
ALTER TABLE remediation_audit ENABLE TRIGGER USER;

-- step: indexes and rollups
-- part
SELECT remaudit_rebuild_rollups();
SELECT remaudit_bench_build_indexes();
-- part
SELECT remaudit_bench_build_indexes();

-- step: constraints
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT * FROM remaudit_bench_saved_indexes WHERE constraint_name IS NOT NULL LOOP
        EXECUTE format('ALTER TABLE remediation_audit ADD CONSTRAINT %I %s USING INDEX %s',
                       r.constraint_name,
                       CASE r.constraint_type WHEN 'p' THEN 'PRIMARY KEY' ELSE 'UNIQUE' END,
                       r.name);
    END LOOP;
    IF EXISTS (SELECT 1 FROM remaudit_bench_saved_indexes WHERE NOT built) THEN
        RAISE EXCEPTION 'an index of remediation_audit was not rebuilt';
    END IF;
END
$$;
DROP TABLE remaudit_bench_saved_indexes;
DROP FUNCTION remaudit_bench_fill(regclass, int, int), remaudit_bench_build_indexes();
DROP VIEW remaudit_bench_rows;

-- step: vacuum analyze
VACUUM ANALYZE;

-- step: sizes
SELECT relname AS "table",
       n_live_tup AS "rows (estimate)",
       pg_size_pretty(pg_total_relation_size(relid)) AS "total size",
       pg_size_pretty(pg_indexes_size(relid)) AS "of which indexes"
FROM pg_stat_user_tables
ORDER BY pg_total_relation_size(relid) DESC;
SELECT pg_size_pretty(pg_database_size(current_database())) AS "database size";
