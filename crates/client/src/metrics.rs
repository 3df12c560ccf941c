//! Metric names of the publisher. The first four are the design's; the rest
//! sit beside them. Libraries only emit: the binary installs the exporter.

/// Requests sent to the service, by `status` (`success` or `error`); one
/// attempt is one batch request, and retries count again.
pub const PUBLISH_ATTEMPTS: &str = "kubernaut_orchestrator_audit_publish_attempts_total";
/// Records that will never be stored: rejected by the service as invalid or
/// as a conflict, or dropped.
pub const PUBLISH_FAILURES: &str = "kubernaut_orchestrator_audit_publish_failures_total";
/// Duration of each batch request.
pub const PUBLISH_DURATION: &str = "kubernaut_orchestrator_audit_publish_duration_seconds";
/// Records published and not yet acknowledged (memory, spool and in flight).
pub const PENDING_RECORDS: &str = "kubernaut_orchestrator_pending_audit_records";
/// Buckets of [`PUBLISH_DURATION`], as the design sets them.
pub const PUBLISH_DURATION_BUCKETS: [f64; 7] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0];

/// Records acknowledged by the service, by `outcome` (`created`, `duplicate`,
/// `conflict`, `rejected`).
pub const RECORDS: &str = "remaudit_publisher_records_total";
/// Records dropped, by `reason` (one of [`DROP_REASONS`]).
pub const DROPPED: &str = "remaudit_publisher_dropped_total";
/// Every `reason` of [`DROPPED`].
pub const DROP_REASONS: [&str; 5] = [
    "queue_full",
    "queue_and_spool_full",
    "too_large",
    "closed",
    "shutdown",
];
/// Retry delays taken after a failed request.
pub const RETRIES: &str = "remaudit_publisher_retries_total";
/// Bytes of spool files on disk.
pub const SPOOL_BYTES: &str = "remaudit_publisher_spool_bytes";
/// The spool's size limit in bytes (`spool_max_bytes`); absent without a spool.
pub const SPOOL_MAX_BYTES: &str = "remaudit_publisher_spool_max_bytes";
/// Spooled records skipped because they were damaged on disk.
pub const SPOOL_CORRUPT: &str = "remaudit_publisher_spool_corrupt_records_total";
/// Spool operations that failed (disk errors).
pub const SPOOL_ERRORS: &str = "remaudit_publisher_spool_errors_total";
/// Records per request.
pub const BATCH_RECORDS: &str = "remaudit_publisher_batch_records";
/// Batch requests denied for the publisher's credentials, by `reason`
/// (`unauthorized` 401, `forbidden` 403, `token_file` unusable, `tls`
/// handshake failed); their records stay queued and are retried.
pub const DENIED: &str = "remaudit_publisher_denied_total";

/// Registers descriptions of every publisher metric with the installed recorder.
pub fn describe() {
    metrics::describe_counter!(
        PUBLISH_ATTEMPTS,
        "Batch requests sent to the audit service, by status (success, error)"
    );
    metrics::describe_counter!(
        PUBLISH_FAILURES,
        "Audit records that will never be stored: rejected (invalid or conflict), or dropped"
    );
    metrics::describe_histogram!(
        PUBLISH_DURATION,
        metrics::Unit::Seconds,
        "Duration of each batch request"
    );
    metrics::describe_gauge!(
        PENDING_RECORDS,
        "Audit records waiting to be acknowledged (memory, spool, in flight)"
    );
    metrics::describe_counter!(
        RECORDS,
        "Audit records acknowledged by the service, by outcome"
    );
    metrics::describe_counter!(DROPPED, "Audit records dropped, by reason");
    metrics::describe_counter!(RETRIES, "Retry delays taken after failed requests");
    metrics::describe_gauge!(
        SPOOL_BYTES,
        metrics::Unit::Bytes,
        "Bytes of spool files on disk"
    );
    metrics::describe_gauge!(
        SPOOL_MAX_BYTES,
        metrics::Unit::Bytes,
        "Most bytes the spool may hold on disk"
    );
    metrics::describe_counter!(
        SPOOL_CORRUPT,
        "Spooled records skipped because they were damaged on disk"
    );
    metrics::describe_counter!(SPOOL_ERRORS, "Spool operations that failed");
    metrics::describe_histogram!(BATCH_RECORDS, "Records per batch request");
    metrics::describe_counter!(
        DENIED,
        "Batch requests denied for the publisher's credentials (unauthorized, forbidden, token_file, tls); their records stay queued and are retried"
    );
}

/// Starts the counters of records that will never be stored at 0, so that
/// an alert on their increase sees the first failure or drop: a series that
/// first appears at 1 has no increase to show.
pub(crate) fn start_counters() {
    metrics::counter!(PUBLISH_FAILURES).increment(0);
    for reason in DROP_REASONS {
        metrics::counter!(DROPPED, "reason" => reason).increment(0);
    }
}
