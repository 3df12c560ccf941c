-- What every connection of the analytics benchmark's load runs first. The
-- harness sets the knobs before this (remaudit.bench_now, bench_days,
-- bench_per_day).
SET synchronous_commit = off;
SET TimeZone = 'UTC';
-- Compiling the generator's expressions costs more than it saves.
SET jit = off;
SET maintenance_work_mem = '1GB';
SET work_mem = '256MB';
-- Two connections build indexes side by side on this two-core machine; a
-- parallel worker for each would only take turns with the other build.
SET max_parallel_maintenance_workers = 0;
-- Only errors: VACUUM warns about every catalog it may not vacuum.
SET client_min_messages = error;
