-- The retention benchmark's data (crates/retention/benches/retire.rs runs
-- this file to define the functions, then calls them; it is not meant for psql
-- on its own). Knobs, read from session settings:
--   remaudit.bench_end       the end of the data, a Monday 00:00 UTC (timestamptz)
--   remaudit.bench_days      how many days of data before it (a multiple of 7)
--   remaudit.bench_per_day   remediations started per day
--   remaudit.bench_alerts    distinct alert fingerprints
--   remaudit.bench_age_days  the retention age that sets retention_expiry_time
--
-- What the rows look like:
--   * remediation k (ids count from 1 in start_time order) starts on day
--     (k - 1) / per_day after the origin, exactly per_day a day, with a daily
--     cycle (three times as many starts at the busiest hour, about 15:00 UTC,
--     as at the quietest); the rows' physical order is that of start_time;
--   * 20 namespaces team-01 .. team-20; bench_alerts fingerprints (md5 hex),
--     each in one namespace, Zipf-like (with 4,000: the most frequent alert has
--     about 11 % of the remediations, the rarest about three a day);
--   * about 85 % completed, 11 % failed (in processing, analyzing or
--     executing, with one of eight reasons), 3.5 % timed out (after 30 or 60
--     minutes, no completion time), 0.5 % stuck in an in-progress phase for
--     good; those whose end would come after bench_end are still running;
--   * durations log-normal around 3 minutes, capped at an hour;
--   * retention_expiry_time = completion (or start) + the age for terminal
--     rows, NULL for the others; duration_us and duration_bin as the store
--     writes them; legal_hold on one row in 20,000;
--   * events: 2 or 3 per remediation (processing, maybe the phase where it
--     ended or an executing step, then the terminal phase; pending then the
--     current phase for those not finished), each with a small JSON record;
--     event ids and the summary's event_id are md5-derived UUIDs, so a day
--     range always generates the same rows.
-- The seed depends on the first day only: filling the same day range again
-- (a week the benchmark retired) gives the same rows.

-- Inserts remediations of days [first_day, last_day) into `summary` (the
-- summary table or one of its weekly partitions, or a table like it), then
-- their events into `events`, reading the rows back from `summary`. Returns
-- the remediations written.
CREATE OR REPLACE FUNCTION remaudit_bench_fill(summary regclass, events regclass, first_day int, last_day int)
RETURNS bigint LANGUAGE plpgsql AS $fill$
DECLARE
    data_end timestamptz := current_setting('remaudit.bench_end')::timestamptz;
    days int := current_setting('remaudit.bench_days')::int;
    per_day bigint := current_setting('remaudit.bench_per_day')::bigint;
    alerts int := current_setting('remaudit.bench_alerts')::int;
    age interval := current_setting('remaudit.bench_age_days')::int * interval '1 day';
    origin timestamptz := data_end - days * interval '1 day';
    lo bigint := first_day::bigint * per_day + 1;
    hi bigint := last_day::bigint * per_day;
    written bigint;
BEGIN
    PERFORM setseed(0.2026 + first_day / 1000.0);
    -- Each level computes a few columns from the one below; OFFSET 0 keeps
    -- the planner from folding the levels (and re-evaluating expressions).
    EXECUTE format($sql$
        INSERT INTO %s (id, alert_fingerprint, remediation_name, overall_phase, start_time, completion_time,
            remediation_processing_name, ai_analysis_name, workflow_execution_name, kubernetes_execution_name,
            service_crd_statuses, timeout_phase, timeout_time, failure_phase, failure_reason, duplicate_count,
            last_duplicate_time, retention_expiry_time, created_at, updated_at, namespace, phase_rank, event_id,
            event_time, duration_us, duration_bin, legal_hold)
        SELECT c.k, c.fingerprint, c.name, c.phase, c.start_time, c.completion_time,
            c.name || '-rp',
            CASE WHEN c.reached >= 2 THEN c.name || '-ai' END,
            CASE WHEN c.reached >= 3 THEN c.name || '-we' END,
            CASE WHEN c.reached >= 3 THEN c.name || '-job' END,
            CASE WHEN c.u_status < 0.2 THEN jsonb_build_object(
                'remediationProcessing', jsonb_build_object('phase', 'completed', 'success', true),
                'workflowExecution', CASE WHEN c.reached >= 3 THEN jsonb_build_object(
                    'phase', c.phase, 'success', c.phase = 'completed', 'steps', 1 + c.k %% 5) END) END,
            c.timeout_phase, c.timeout_time, c.failure_phase,
            CASE WHEN c.failure_phase IS NOT NULL THEN (ARRAY[
                'signal enrichment failed: context API returned 503 Service Unavailable',
                'target resource not found: deployment/payments-api',
                'LLM provider rate limit exceeded (429); retry budget exhausted',
                'AI analysis confidence 0.41 below threshold 0.70; human review required',
                'workflow step scale-deployment failed: admission webhook denied the request: replicas exceed quota',
                'rollout restart did not converge: 2 of 6 pods in CrashLoopBackOff after 300s',
                'kubernetes job exited with code 137 (OOMKilled)',
                'node drain blocked by PodDisruptionBudget payments-pdb (0 disruptions allowed)'
            ])[1 + floor(c.u_misc * 8)::int] END,
            c.duplicates,
            CASE WHEN c.duplicates > 0 THEN c.start_time + interval '30 seconds' END,
            CASE WHEN c.rank = 9 THEN COALESCE(c.completion_time, c.start_time) + $7 END,
            c.start_time + interval '50 milliseconds',
            c.event_time + interval '40 milliseconds',
            c.namespace, c.rank,
            md5(c.k || '/' || c.events)::uuid,
            c.event_time, c.duration_us, remaudit_duration_bin(c.duration_us), c.u_hold < 0.00005
        FROM (
            SELECT b.*,
                CASE WHEN b.completion_time IS NOT NULL
                     THEN (EXTRACT(EPOCH FROM b.completion_time - b.start_time) * 1000000)::bigint END AS duration_us,
                CASE WHEN b.rank < 9 THEN 2
                     WHEN b.phase = 'completed' THEN 2 + (b.k %% 2)::int
                     WHEN b.where_phase = 'processing' THEN 2
                     ELSE 3 END AS events,
                CASE WHEN b.rank < 9 THEN b.rank
                     WHEN b.phase = 'completed' THEN 3
                     ELSE CASE b.where_phase WHEN 'processing' THEN 1 WHEN 'analyzing' THEN 2 ELSE 3 END
                END AS reached
            FROM (
                SELECT a.k, a.u_misc, a.u_status, a.u_hold, a.duplicates, a.fingerprint, a.namespace, a.name,
                    a.where_phase, a.start_time, a.phase,
                    CASE a.phase WHEN 'processing' THEN 1 WHEN 'analyzing' THEN 2 WHEN 'executing' THEN 3
                                 ELSE 9 END::int2 AS rank,
                    CASE WHEN a.phase IN ('completed', 'failed') THEN a.would_end END AS completion_time,
                    CASE WHEN a.phase = 'timeout' THEN a.would_end END AS timeout_time,
                    CASE WHEN a.phase = 'timeout' THEN a.where_phase END AS timeout_phase,
                    CASE WHEN a.phase = 'failed' THEN a.where_phase END AS failure_phase,
                    CASE WHEN a.phase IN ('completed', 'failed', 'timeout') THEN a.would_end
                         ELSE a.start_time + (LEAST(a.would_end, $2) - a.start_time) * 0.9 END AS event_time
                FROM (
                    SELECT y.*,
                        CASE WHEN y.outcome = 'stuck' THEN y.where_phase
                             WHEN y.would_end > $2 THEN (ARRAY['processing', 'analyzing', 'executing'])[
                                 1 + LEAST(2, floor(3 * EXTRACT(EPOCH FROM $2 - y.start_time) / y.seconds))::int]
                             ELSE y.outcome END AS phase
                    FROM (
                        SELECT x.*, x.start_time + x.seconds * interval '1 second' AS would_end
                        FROM (
                            SELECT w.*,
                                CASE w.outcome
                                    WHEN 'timeout' THEN CASE w.where_phase WHEN 'executing' THEN 3600 ELSE 1800 END
                                                        + w.u_misc * 60
                                    ELSE LEAST(3600, GREATEST(4, 180 * exp(0.95 * w.z)
                                        * CASE WHEN w.outcome <> 'failed' THEN 1
                                               WHEN w.where_phase = 'processing' THEN 0.3
                                               WHEN w.where_phase = 'analyzing' THEN 0.6 ELSE 1 END))
                                END AS seconds
                            FROM (
                                SELECT g.k, g.u_misc, g.u_status, g.u_hold, g.z,
                                    $1 + (g.s - 0.25 / pi() * (sin(2 * pi() * (g.s - 0.583)) + sin(2 * pi() * 0.583)))
                                         * interval '1 day' AS start_time,
                                    md5('fp-' || g.alert) AS fingerprint,
                                    'team-' || lpad((1 + g.alert %% 20)::text, 2, '0') AS namespace,
                                    'rr-' || g.k AS name,
                                    CASE WHEN g.u_outcome < 0.85 THEN 'completed'
                                         WHEN g.u_outcome < 0.96 THEN 'failed'
                                         WHEN g.u_outcome < 0.995 THEN 'timeout'
                                         ELSE 'stuck' END AS outcome,
                                    CASE WHEN g.u_phase < 0.25 THEN 'processing'
                                         WHEN g.u_phase < 0.6 THEN 'analyzing'
                                         ELSE 'executing' END AS where_phase,
                                    CASE WHEN g.u_status > 0.97 THEN 1 + (g.k %% 3)::int ELSE 0 END AS duplicates
                                FROM (
                                    SELECT k,
                                        -- Days after the origin; the warp above keeps whole days whole.
                                        (k - 1 + random()) / $3 AS s,
                                        -- Popularity ~ 1/rank, ranks scattered over alert numbers.
                                        ((LEAST($4 - 1, floor(exp(random() * ln($4 + 1.0))) - 1)::bigint * 7919) %% $4)::int
                                            AS alert,
                                        random() AS u_outcome,
                                        random() AS u_phase,
                                        random() AS u_misc,
                                        random() AS u_status,
                                        random() AS u_hold,
                                        sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()) AS z
                                    FROM generate_series($5, $6) AS k
                                    OFFSET 0
                                ) g
                                OFFSET 0
                            ) w
                            OFFSET 0
                        ) x
                        OFFSET 0
                    ) y
                    OFFSET 0
                ) a
                OFFSET 0
            ) b
            OFFSET 0
        ) c
    $sql$, summary) USING origin, data_end, per_day, alerts, lo, hi, age;
    GET DIAGNOSTICS written = ROW_COUNT;

    EXECUTE format($sql$
        INSERT INTO %s (id, event_id, namespace, remediation_name, start_time, overall_phase, event_time,
            received_at, record)
        SELECT s.id * 4 + e.j, md5(s.id || '/' || e.j)::uuid, s.namespace, s.remediation_name, s.start_time,
            e.phase, e.at, e.at + interval '25 milliseconds',
            jsonb_build_object('remediation_name', s.remediation_name, 'overall_phase', e.phase, 'event_time', e.at)
        FROM (
            SELECT s.id, s.namespace, s.remediation_name, s.start_time, s.event_time,
                CASE WHEN s.phase_rank < 9 THEN ARRAY['pending', s.overall_phase]::text[]
                     WHEN s.overall_phase = 'completed' AND s.id %% 2 = 1
                         THEN ARRAY['processing', 'executing', 'completed']::text[]
                     WHEN s.overall_phase = 'completed' THEN ARRAY['processing', 'completed']::text[]
                     WHEN COALESCE(s.failure_phase, s.timeout_phase) = 'processing'
                         THEN ARRAY['processing', s.overall_phase]::text[]
                     ELSE ARRAY['processing', COALESCE(s.failure_phase, s.timeout_phase), s.overall_phase]::text[]
                END AS phases
            FROM %s s
            WHERE s.id BETWEEN $1 AND $2
            OFFSET 0
        ) s,
        LATERAL (
            SELECT j, s.phases[j] AS phase,
                   s.start_time + (s.event_time - s.start_time) * (j::float8 / cardinality(s.phases)) AS at
            FROM generate_series(1, cardinality(s.phases)) AS j
        ) e
    $sql$, events, summary) USING lo, hi;
    RETURN written;
END
$fill$;

-- The copies of the summary rows for the post-mortem lookup comparison:
-- bench_lookup_daily, partitioned by day (plus a default partition, as the
-- live table has), and bench_lookup_flat, not partitioned. Created empty;
-- the harness fills and indexes them.
CREATE OR REPLACE FUNCTION remaudit_bench_lookup_tables() RETURNS void LANGUAGE plpgsql AS $lookup$
DECLARE
    data_end timestamptz := current_setting('remaudit.bench_end')::timestamptz;
    days int := current_setting('remaudit.bench_days')::int;
    day timestamptz;
BEGIN
    DROP TABLE IF EXISTS bench_lookup_daily, bench_lookup_flat;
    CREATE TABLE bench_lookup_flat (LIKE remediation_audit INCLUDING DEFAULTS);
    CREATE TABLE bench_lookup_daily (LIKE remediation_audit INCLUDING DEFAULTS) PARTITION BY RANGE (start_time);
    CREATE TABLE bench_lookup_daily_default PARTITION OF bench_lookup_daily DEFAULT;
    FOR i IN 0 .. days - 1 LOOP
        day := data_end - (days - i) * interval '1 day';
        EXECUTE format('CREATE TABLE %I PARTITION OF bench_lookup_daily FOR VALUES FROM (%L) TO (%L)',
                       'bench_lookup_daily_d' || to_char(day AT TIME ZONE 'UTC', 'YYYYMMDD'),
                       day, day + interval '1 day');
    END LOOP;
END
$lookup$;
