//! Metric names of the retention job, and their descriptions. The job only
//! emits: the binary installs the recorder and calls [`describe_metrics`].

/// Counter of runs, by `outcome` (`ok`, `error`, `skipped`: another run held
/// the lock).
pub const RUNS_TOTAL: &str = "remaudit_retention_runs_total";
/// Histogram of how long each run that moved data (not a dry run) took.
pub const RUN_DURATION: &str = "remaudit_retention_run_duration_seconds";
/// Gauge: Unix time of this process's last successful run.
pub const LAST_SUCCESS: &str = "remaudit_retention_last_success_timestamp_seconds";
/// Counter of rows copied to the archive, by `table`.
pub const ROWS_ARCHIVED: &str = "remaudit_retention_rows_archived_total";
/// Counter of rows removed from the live tables, by `table`.
pub const ROWS_DELETED: &str = "remaudit_retention_rows_deleted_total";
/// Counter of bytes written to the archive's object store.
pub const BYTES_WRITTEN: &str = "remaudit_retention_bytes_written_total";
/// Counter of weekly partitions retired whole (PostgreSQL).
pub const PARTITIONS_DROPPED: &str = "remaudit_retention_partitions_dropped_total";

/// Gauge, by `table` (PostgreSQL): rows of weeks not yet due that are still
/// in a default partition after the last run's upkeep, which could not make
/// their weeks. 0 in normal operation.
pub const DEFAULT_PARTITION_ROWS: &str = "remaudit_partition_default_rows";

/// Registers descriptions of the retention job's metrics with the installed recorder.
pub fn describe_metrics() {
    metrics::describe_counter!(
        RUNS_TOTAL,
        "Retention runs, by outcome (ok, error, skipped: another run held the lock)"
    );
    metrics::describe_histogram!(
        RUN_DURATION,
        metrics::Unit::Seconds,
        "Duration of each retention run that ran (not skipped, not a dry run)"
    );
    metrics::describe_gauge!(
        LAST_SUCCESS,
        metrics::Unit::Seconds,
        "Unix time of this process's last successful retention run"
    );
    metrics::describe_counter!(
        ROWS_ARCHIVED,
        "Rows archived, by table (remediation_audit, remediation_audit_events)"
    );
    metrics::describe_counter!(
        ROWS_DELETED,
        "Rows removed from the live tables, by table (remediation_audit, remediation_audit_events)"
    );
    metrics::describe_counter!(
        BYTES_WRITTEN,
        metrics::Unit::Bytes,
        "Bytes written to the archive"
    );
    metrics::describe_gauge!(
        DEFAULT_PARTITION_ROWS,
        "Rows of weeks not yet due still in the default partition after the last retention run's upkeep, by table (0 in normal operation)"
    );
    metrics::describe_counter!(
        PARTITIONS_DROPPED,
        "Weekly partitions retired whole (PostgreSQL)"
    );
}
