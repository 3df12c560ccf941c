//! What the run prints at the end, and checks: the summary of every step
//! (rows, seconds, WAL, per day) with the ratios between them, and the
//! final checks that every loaded row is in exactly one place and that the
//! job's batches verify.

use remaudit_retention::{Archive, RunReport};
use remaudit_store::HealthStore as _;
use remaudit_testkit::bench::{self, expect_eq, mib, surprise, thousands};
use sqlx::{AssertSqlSafe, PgPool};

use crate::as_i64;
use crate::load::WEEKS_TABLE;
use crate::lookups::{LookupLine, print_lookups};
use crate::measure::{Cost, busy};

/// One line of the summary.
pub(crate) struct Line {
    pub(crate) name: String,
    pub(crate) remediations: i64,
    pub(crate) events: i64,
    pub(crate) cost: Cost,
    pub(crate) days: f64,
    pub(crate) note: String,
}

impl Line {
    pub(crate) fn per_day_seconds(&self) -> f64 {
        self.cost.seconds / self.days
    }

    pub(crate) fn per_day_wal(&self) -> f64 {
        remaudit_model::approx_f64(self.cost.wal) / self.days
    }
}

pub(crate) fn print_cost(what: &str, rows: &str, cost: Cost) {
    println!(
        "  {what:<44} {rows:<40} {:>9.3} s  WAL {:>10.1} MiB",
        cost.seconds,
        mib(cost.wal)
    );
}

pub(crate) fn print_report(report: &RunReport) {
    for b in &report.batches {
        println!(
            "    batch {:>4} {:<32} remediations {:>9} events {:>10} kept {:>6} bytes {:>12}",
            b.batch,
            b.source,
            thousands(as_i64(b.remediations)),
            thousands(as_i64(b.events)),
            thousands(as_i64(b.kept)),
            thousands(as_i64(b.bytes))
        );
    }
}

/// Prints the summary: a line per step, the ratios per day between them,
/// the lookups' latencies and ingest's (`per_day`: remediations a day).
pub(crate) async fn print_summary(
    pool: &PgPool,
    per_day: i64,
    lines: &[Line],
    lookup_lines: &[LookupLine],
    ingest_lines: &[String],
) {
    println!();
    println!(
        "summary ({} remediations a day; per day = per week / 7 for b and c):",
        thousands(per_day)
    );
    println!(
        "  {:<36} {:>11} {:>11} {:>10} {:>10} {:>11} {:>13}  note",
        "step", "remediations", "events", "seconds", "WAL MiB", "s per day", "WAL MiB/day"
    );
    for l in lines {
        println!(
            "  {:<36} {:>11} {:>11} {:>10.3} {:>10.1} {:>11.4} {:>13.2}  {}",
            l.name,
            thousands(l.remediations),
            thousands(l.events),
            l.cost.seconds,
            mib(l.cost.wal),
            l.per_day_seconds(),
            l.per_day_wal() / (1024.0 * 1024.0),
            l.note
        );
    }
    let find = |prefix: &str| lines.iter().find(|l| l.name.starts_with(prefix));
    let ratio = |what: &str, ours: Option<&Line>, raw: Option<&Line>| {
        if let (Some(o), Some(r)) = (ours, raw) {
            println!(
                "  {what:<58} time {:>9.1}x   WAL {:>9.1}x",
                o.per_day_seconds() / r.per_day_seconds(),
                o.per_day_wal() / r.per_day_wal().max(1.0)
            );
        }
    };
    println!("  ratios per day:");
    ratio(
        "remaudit row-wise (d) / raw DELETE (a)",
        find("d "),
        find("a "),
    );
    ratio(
        "remaudit row-wise (d) / raw DELETE + VACUUM (a')",
        find("d "),
        find("a'"),
    );
    ratio(
        "remaudit by partition (c) / raw DETACH + DROP (b)",
        find("c "),
        find("b "),
    );
    ratio(
        "raw DELETE (a) / raw DETACH + DROP (b)",
        find("a "),
        find("b "),
    );
    ratio(
        "remaudit row-wise (d) / remaudit by partition (c)",
        find("d "),
        find("c "),
    );
    print_lookups(lookup_lines);
    if !ingest_lines.is_empty() {
        println!("  ingest latency per store.insert call:");
        for l in ingest_lines {
            println!("    {l}");
        }
    }
    println!("  ({})", busy(pool).await);
}

/// Checks that every loaded row and event is in exactly one place, the live
/// tables or the archive, except those of the week the raw steps removed
/// (`removed`: its remediations and events as loaded).
pub(crate) async fn check_places(pool: &PgPool, removed: &(i64, i64)) -> anyhow::Result<()> {
    let loaded: (i64, i64) = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT sum(remediations)::int8, sum(events)::int8 FROM {WEEKS_TABLE}"
    )))
    .fetch_one(pool)
    .await?;
    // The generator names its remediations rr-<id>; the ingest step's are
    // bench-<run>-….
    for (what, live, archive, want) in [
        (
            "remediations",
            "remediation_audit",
            "remediation_audit_archive",
            loaded.0 - removed.0,
        ),
        (
            "events",
            "remediation_audit_events",
            "remediation_audit_events_archive",
            loaded.1 - removed.1,
        ),
    ] {
        let (places, distinct, live_n, archived_n): (i64, i64, i64, i64) =
            sqlx::query_as(AssertSqlSafe(format!(
                "WITH u AS (SELECT id, true AS live FROM {live} WHERE remediation_name LIKE 'rr-%'
                            UNION ALL SELECT id, false FROM {archive} WHERE remediation_name LIKE 'rr-%')
                 SELECT count(*), count(DISTINCT id), count(*) FILTER (WHERE live),
                        count(*) FILTER (WHERE NOT live) FROM u"
            )))
            .fetch_one(pool)
            .await?;
        println!(
            "  {what}: {} loaded, {} removed by the raw steps; {} live + {} archived",
            thousands(if what == "events" { loaded.1 } else { loaded.0 }),
            thousands(if what == "events" {
                removed.1
            } else {
                removed.0
            }),
            thousands(live_n),
            thousands(archived_n)
        );
        expect_eq(
            &format!("loaded {what} in the live tables or the archive"),
            &distinct,
            &want,
        );
        expect_eq(
            &format!("loaded {what} in more than one place"),
            &(places - distinct),
            &0,
        );
    }
    Ok(())
}

/// Checks every batch of the runs with `verify`.
pub(crate) async fn check_archive(url: &str, dir: &std::path::Path) -> anyhow::Result<()> {
    let store = bench::pg_store(url, bench::StoreOptions::default()).await?;
    let archive = Archive::open(&format!("file://{}", dir.display()))?;
    let (from, to) = remaudit_retention::all_time();
    let report = remaudit_retention::verify(&store, &archive, from, to, None).await?;
    store.close().await;
    println!(
        "  verify: {} batches, {} remediations, {} events, {} problems",
        report.batches,
        thousands(as_i64(report.remediations)),
        thousands(as_i64(report.events)),
        report.problems.len()
    );
    if report.batches == 0 {
        surprise("verify found no batch");
    }
    for problem in &report.problems {
        surprise(format_args!("verify: {problem}"));
    }
    Ok(())
}
