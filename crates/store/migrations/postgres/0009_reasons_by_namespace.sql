-- The sample reasons of a failure group in one namespace: with the reason
-- indexes of 0002 alone, the latest reasons of one namespace were found by
-- visiting the whole window's failures of the phase in every namespace
-- (62,000 pages for a 7-day window of the benchmark's fleet; 1,400 with
-- these). Partial like those, so they hold only the rows that carry a reason.
CREATE INDEX idx_failure_reasons_namespace ON remediation_audit (namespace, failure_phase, start_time DESC, id DESC)
    WHERE failure_reason IS NOT NULL AND overall_phase = 'failed';
CREATE INDEX idx_timeout_reasons_namespace ON remediation_audit (namespace, timeout_phase, start_time DESC, id DESC)
    WHERE failure_reason IS NOT NULL AND overall_phase = 'timeout';
