//! What the benchmarks share, written once: knobs and the smoke switch
//! (see [Knobs](#knobs)), nearest-rank percentiles and the printing of
//! figures, the verdict on their own checks and the census of rows, the
//! benchmark database and the store opened on it, `remaudit serve` run as a
//! child process whose own peak memory is measured ([`Service`]), and the
//! fast load of a database (connections, jobs, partitions, indexes).
//!
//! A benchmark prints figures and asserts no speed, but it does check what it
//! measured (counts, answers equal to the design's SQL, every row in exactly
//! one place). A failed check is a *surprise*: [`surprise`] prints it, and
//! [`verdict`] at the end turns any into an error, so the process exits
//! non-zero. Each benchmark has a smoke mode ([`smoke`]): a few thousand
//! rows, seconds, every check, that `scripts/bench-smoke` (and so CI) runs.
//!
//! # Knobs
//! Numbers and names come from the environment ([`knob`], [`sized_knob`],
//! [`text_knob`], [`database_name`]); [`reuse`] and [`smoke`] read the
//! switches every benchmark knows.

mod checks;
mod database;
mod knobs;
mod load;
mod recorder;
mod report;
mod service;

pub use checks::{
    Census, census, check_stored, expect_eq, projected_after, surprise, surprises, verdict,
};
pub use database::{BenchDb, StoreOptions, pg_store, pool, print_database_size};
pub use knobs::{
    DATABASE_VAR, REUSE_VAR, SMOKE_ARG, SMOKE_VAR, database_name, knob, reuse, sized_knob, smoke,
    text_knob,
};
pub use load::{
    Job, SavedIndex, connect_all, drop_indexes, ensure_partitions, index_jobs, run_jobs,
    saved_indexes, step, sync_id_sequence,
};
pub use recorder::metrics_handle;
pub use report::{
    mib, percentile, percentile_f64, percentile_ms, percentile_ns, print_smoke_load, print_step,
    smoke_note, sorted_f64, thousands,
};
pub use service::{BIN_VAR, Service};

/// Runs a benchmark's `main` future on a multi-threaded runtime: the body
/// of every benchmark's `main`.
///
/// # Errors
/// When the runtime cannot start, or what the future returns.
pub fn block_on<F>(bench: F) -> anyhow::Result<()>
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench);
    print_peak_memory();
    result
}

/// The peak resident memory of this process so far (`VmHWM`), in bytes;
/// `None` where `/proc` does not say.
#[must_use]
pub fn peak_memory() -> Option<u64> {
    service::vm_hwm("/proc/self/status")
}

/// Prints [`peak_memory`], and the largest peak of the `remaudit serve`
/// processes the benchmark ran ([`Service`]): the service's own memory,
/// apart from the load, which this process generates and checks.
fn print_peak_memory() {
    println!();
    service::print_largest_peak();
    if let Some(bytes) = peak_memory() {
        println!(
            "peak memory (VmHWM) of the benchmark process (its load, its checks, and whatever it runs in process): {:.1} MiB",
            service::peak_mib(bytes)
        );
    }
}
