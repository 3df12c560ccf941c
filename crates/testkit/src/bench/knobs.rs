//! Knobs: what a run is asked for through its arguments and environment
//! (the smoke switch, numbers, names, reuse of a loaded database).

/// The argument that asks a benchmark for its smoke mode.
pub const SMOKE_ARG: &str = "--smoke";

/// The environment variable that asks for it too (`1` or `true`).
pub const SMOKE_VAR: &str = "BENCH_SMOKE";

/// Whether this run is a smoke run: `--smoke` among the arguments, or
/// `BENCH_SMOKE=1`.
#[must_use]
pub fn smoke() -> bool {
    std::env::args().skip(1).any(|a| a == SMOKE_ARG)
        || std::env::var(SMOKE_VAR).is_ok_and(|v| v == "1" || v == "true")
}

/// A numeric knob from the environment (`_` allowed as a digit separator),
/// or `default` when it is unset or not a number.
#[must_use]
pub fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// A knob whose default depends on the mode: `smoke` in a smoke run, `full`
/// otherwise.
#[must_use]
pub fn sized_knob(name: &str, full: usize, smoke_default: usize) -> usize {
    knob(name, if smoke() { smoke_default } else { full })
}

/// A text knob from the environment, or `default` when it is unset.
#[must_use]
pub fn text_knob(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The environment variable that asks a benchmark to keep its loaded
/// database and reuse it next time (`1` or `true`), as `--reuse` does.
pub const REUSE_VAR: &str = "REMAUDIT_BENCH_REUSE";

/// Whether [`REUSE_VAR`] asks for reuse; never in a smoke run, whose
/// database is dropped at the end.
#[must_use]
pub fn reuse() -> bool {
    !smoke() && std::env::var(REUSE_VAR).is_ok_and(|v| v == "1" || v == "true")
}

/// The environment variable that names a benchmark's database.
pub const DATABASE_VAR: &str = "BENCH_DATABASE";

/// The name of the benchmark `bench`'s database: [`DATABASE_VAR`], or
/// `remaudit_bench_<bench>` (`remaudit_bench_smoke_<bench>` in a smoke run,
/// so that a smoke run never drops a loaded database).
#[must_use]
pub fn database_name(bench: &str) -> String {
    let default = if smoke() {
        format!("remaudit_bench_smoke_{bench}")
    } else {
        format!("remaudit_bench_{bench}")
    };
    text_knob(DATABASE_VAR, &default)
}
