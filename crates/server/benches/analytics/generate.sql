-- Fills remediation_audit with a synthetic fleet for the analytics benchmark
-- (crates/server/benches/analytics.rs runs this file to define a view and a
-- function, then calls the function; it is not meant for psql on its own).
-- By default 90 days ending at "now", 110,000 remediations a day (9.9 million
-- rows), no timeline events. Knobs, read from session settings that the
-- harness sets before analytics/session.sql:
--   remaudit.bench_now      the end of the data, a timestamptz
--   remaudit.bench_days     how many days of data
--   remaudit.bench_per_day  remediations started per day
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
--     row in five, duplicates on 3 %; legal_hold and created_xid take the
--     table's defaults.
-- The same settings give the same rows (event ids aside).
--
-- The harness loads into the weekly partitions (remaudit_ensure_partitions
-- first), with the table's indexes and constraints dropped and rebuilt from
-- their saved definitions afterwards (remaudit_testkit::bench), then rebuilds
-- the rollups and drops the view and the function again.

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM remediation_audit) THEN
        RAISE EXCEPTION 'remediation_audit already has rows: run the generator on a fresh database';
    END IF;
END
$$;

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
