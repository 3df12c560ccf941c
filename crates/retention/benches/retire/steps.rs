//! The steps that retire data, each measured, printed and checked: raw
//! PostgreSQL row-wise (a) and by partition (b), then the retention job by
//! partition (c) and row-wise (d). Each returns its lines of the summary.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use remaudit_retention::Settings;
use remaudit_testkit::bench::{mib, surprise, thousands};
use sqlx::{AssertSqlSafe, PgPool};

use crate::measure::{Checkpointer, Cost, Retirer, busy, count, mark, since};
use crate::report::{Line, print_cost, print_report};
use crate::{as_i64, day, events_week, summary_week, table_of};

/// a: raw PostgreSQL, row-wise: `DELETE` of one day (Wednesday of the
/// oldest week, `w0`) from both live tables, then `VACUUM` of the week.
pub(crate) async fn raw_delete_day(
    pool: &PgPool,
    su: &mut Checkpointer,
    w0: DateTime<Utc>,
) -> anyhow::Result<Vec<Line>> {
    let mut lines = Vec::new();
    let day_a = w0 + TimeDelta::days(2);
    println!();
    println!(
        "a. raw PostgreSQL, row-wise: DELETE one day ({}) from both live tables, committed; then VACUUM ({})",
        day(day_a),
        busy(pool).await
    );
    su.checkpoint().await;
    let m = mark(pool).await?;
    let mut tx = pool.begin().await?;
    let t = Instant::now();
    let deleted_events = sqlx::query(
        "DELETE FROM remediation_audit_events WHERE start_time >= $1 AND start_time < $2",
    )
    .bind(day_a)
    .bind(day_a + TimeDelta::days(1))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let events_seconds = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let deleted =
        sqlx::query("DELETE FROM remediation_audit WHERE start_time >= $1 AND start_time < $2")
            .bind(day_a)
            .bind(day_a + TimeDelta::days(1))
            .execute(&mut *tx)
            .await?
            .rows_affected();
    let summary_seconds = t.elapsed().as_secs_f64();
    tx.commit().await?;
    let delete_cost = since(pool, &m).await?;
    println!(
        "  DELETE events {events_seconds:.3} s, DELETE summary {summary_seconds:.3} s, with COMMIT:"
    );
    print_cost(
        "DELETE one day (both tables)",
        &format!(
            "{} remediations, {} events",
            thousands(as_i64(deleted)),
            thousands(as_i64(deleted_events))
        ),
        delete_cost,
    );
    let m = mark(pool).await?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "VACUUM {}, {}",
        summary_week(w0),
        events_week(w0)
    )))
    .execute(pool)
    .await?;
    let vacuum_cost = since(pool, &m).await?;
    print_cost(
        "VACUUM the week's two partitions",
        "(autovacuum is off on this cluster)",
        vacuum_cost,
    );
    lines.push(Line {
        name: "a  raw DELETE, 1 day".to_owned(),
        remediations: as_i64(deleted),
        events: as_i64(deleted_events),
        cost: delete_cost,
        days: 1.0,
        note: String::new(),
    });
    lines.push(Line {
        name: "a' raw DELETE + VACUUM, 1 day".to_owned(),
        remediations: as_i64(deleted),
        events: as_i64(deleted_events),
        cost: Cost {
            seconds: delete_cost.seconds + vacuum_cost.seconds,
            wal: delete_cost.wal + vacuum_cost.wal,
        },
        days: 1.0,
        note: String::new(),
    });
    Ok(lines)
}

/// b: raw PostgreSQL, by partition: `DETACH PARTITION` + `DROP TABLE` of
/// the oldest week's pair (`w0`, which a took one day of).
pub(crate) async fn raw_drop_week(
    pool: &PgPool,
    su: &mut Checkpointer,
    w0: DateTime<Utc>,
) -> anyhow::Result<Line> {
    println!();
    println!(
        "b. raw PostgreSQL, partition: DETACH PARTITION + DROP TABLE of week {} (both tables; {})",
        day(w0),
        busy(pool).await
    );
    let (s0, e0) = (summary_week(w0), events_week(w0));
    let rows_b = count(pool, &format!("SELECT count(*) FROM {s0}")).await?;
    let events_b = count(pool, &format!("SELECT count(*) FROM {e0}")).await?;
    su.checkpoint().await;
    let m = mark(pool).await?;
    let mut conn = pool.acquire().await?;
    let mut parts = Vec::new();
    for sql in [
        format!("ALTER TABLE remediation_audit DETACH PARTITION {s0}"),
        format!("ALTER TABLE remediation_audit_events DETACH PARTITION {e0}"),
        format!("DROP TABLE {s0}, {e0}"),
    ] {
        let t = Instant::now();
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await?;
        parts.push(t.elapsed().as_secs_f64());
    }
    drop(conn);
    let drop_cost = since(pool, &m).await?;
    println!(
        "  DETACH summary {:.3} s, DETACH events {:.3} s, DROP both {:.3} s:",
        parts[0], parts[1], parts[2]
    );
    print_cost(
        "DETACH + DROP one week",
        &format!(
            "{} remediations, {} events (6 days: a took one)",
            thousands(rows_b),
            thousands(events_b)
        ),
        drop_cost,
    );
    Ok(Line {
        name: "b  raw DETACH + DROP, 1 week".to_owned(),
        remediations: rows_b,
        events: events_b,
        cost: drop_cost,
        days: 7.0,
        note: String::new(),
    })
}

/// c: remaudit by partition: `run_once` at the clock where week `w1` (now
/// the oldest) is wholly due; `expected` is what the week held as loaded
/// (remediations, events).
pub(crate) async fn by_partition(
    retirer: &Retirer<'_>,
    su: &mut Checkpointer,
    w1: DateTime<Utc>,
    age: TimeDelta,
    expected: (i64, i64),
) -> anyhow::Result<Line> {
    let pool = retirer.pool;
    let clock_c = w1 + TimeDelta::weeks(1) + age;
    println!();
    println!(
        "c. remaudit by partition: run_once at {} (week {} wholly due; {})",
        clock_c.to_rfc3339_opts(SecondsFormat::Secs, true),
        day(w1),
        busy(pool).await
    );
    println!(
        "   it readies the week (one index, a bounds check), moves it from the live tables into the \
         archive tables in one short transaction, then writes its archive files"
    );
    let s1 = summary_week(w1);
    let keep_c = count(
        pool,
        &format!(
            "SELECT count(*) FROM {s1} WHERE legal_hold OR (deleted_at IS NULL AND \
             (retention_expiry_time IS NULL OR retention_expiry_time > '{}'))",
            clock_c.to_rfc3339()
        ),
    )
    .await?;
    su.checkpoint().await;
    let run_c = retirer.measured(&Settings::default(), clock_c).await?;
    let (report_c, cost_c, files_c) = (run_c.report(), run_c.cost, run_c.files);
    print_report(&report_c);
    print_cost(
        "run_once, one week",
        &format!(
            "{} remediations, {} events moved",
            thousands(as_i64(report_c.remediations())),
            thousands(as_i64(report_c.events()))
        ),
        cost_c,
    );
    println!(
        "    archive: {} bytes in the batches, {} files, {:.1} MiB on disk; {:.1} MiB per million \
         remediations with their events ({})",
        thousands(as_i64(report_c.bytes())),
        files_c.0,
        mib(as_i64(files_c.1)),
        mib(as_i64(report_c.bytes())) * 1e6
            / remaudit_model::approx_f64(as_i64(report_c.remediations()).max(1)),
        crate::measure::archive_format()?
    );
    let (want_r, want_e) = expected;
    let kept_c: u64 = report_c.batches.iter().map(|b| b.kept).sum();
    let left_c = kept_in_default(pool, w1).await?;
    println!(
        "    check: the week held {} remediations and {} events; {} were not due; moved {} + now in the default partition {} = {}",
        thousands(want_r),
        thousands(want_e),
        thousands(keep_c),
        thousands(as_i64(report_c.remediations())),
        thousands(left_c),
        thousands(as_i64(report_c.remediations()) + left_c)
    );
    if as_i64(report_c.remediations()) + left_c != want_r || left_c != keep_c {
        surprise("the rows do not add up");
    }
    if as_i64(kept_c) != left_c {
        surprise(format_args!(
            "the batch reports kept = {kept_c}, but {left_c} rows of the week went back to the default partition"
        ));
    }
    println!("    the week's tables: {}", week_fate(pool, w1).await?);
    Ok(Line {
        name: "c  remaudit by partition, 1 week".to_owned(),
        remediations: as_i64(report_c.remediations()),
        events: as_i64(report_c.events()),
        cost: cost_c,
        days: 7.0,
        note: format!(
            "incl. archiving + {:.0} MiB gzip files",
            mib(as_i64(report_c.bytes()))
        ),
    })
}

/// d: remaudit row-wise: `run_once` with `exact` (5,000-row batches) at the
/// clock where one more day (Monday of week `w3`) is due.
pub(crate) async fn row_wise(
    retirer: &Retirer<'_>,
    su: &mut Checkpointer,
    w3: DateTime<Utc>,
    age: TimeDelta,
) -> anyhow::Result<Line> {
    let pool = retirer.pool;
    let clock_d = w3 + TimeDelta::days(1) + age;
    let exact = Settings {
        exact: true,
        batch_rows: 5000,
        ..Settings::default()
    };
    println!();
    println!(
        "d. remaudit row-wise: run_once with exact, batch_rows 5000 at {} (Monday {} due, its week is not; {})",
        clock_d.to_rfc3339_opts(SecondsFormat::Secs, true),
        day(w3),
        busy(pool).await
    );
    let (due_r, due_e) = due_rows(pool, clock_d).await?;
    su.checkpoint().await;
    let run_d = retirer.measured(&exact, clock_d).await?;
    let (report_d, cost_d, files_d) = (run_d.report(), run_d.cost, run_d.files);
    let sources: BTreeMap<&str, usize> =
        report_d.batches.iter().fold(BTreeMap::new(), |mut m, b| {
            *m.entry(b.source.as_str()).or_default() += 1;
            m
        });
    println!(
        "    {} batches ({})",
        report_d.batches.len(),
        sources
            .iter()
            .map(|(s, n)| format!("{n} from {s}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    print_cost(
        "run_once exact, one day",
        &format!(
            "{} remediations, {} events moved",
            thousands(as_i64(report_d.remediations())),
            thousands(as_i64(report_d.events()))
        ),
        cost_d,
    );
    println!(
        "    archive: {} bytes in the batches, {} files, {:.1} MiB on disk",
        thousands(as_i64(report_d.bytes())),
        files_d.0,
        mib(as_i64(files_d.1))
    );
    let left = due_rows(pool, clock_d).await?;
    println!(
        "    check: {} remediations and {} events were due before the run; {} and {} after",
        thousands(due_r),
        thousands(due_e),
        thousands(left.0),
        thousands(left.1)
    );
    if as_i64(report_d.remediations()) != due_r || as_i64(report_d.events()) != due_e || left.0 != 0
    {
        surprise("the counts do not add up");
    }
    Ok(Line {
        name: "d  remaudit row-wise exact, 1 day".to_owned(),
        remediations: as_i64(report_d.remediations()),
        events: as_i64(report_d.events()),
        cost: cost_d,
        days: 1.0,
        note: format!(
            "{} batches, incl. archive rows + gzip files",
            report_d.batches.len()
        ),
    })
}

/// Summary rows and events that a run at `clock` finds due, by the job's rule.
async fn due_rows(pool: &PgPool, clock: DateTime<Utc>) -> anyhow::Result<(i64, i64)> {
    let row: (i64, i64) = sqlx::query_as(
        "WITH due AS (SELECT namespace, remediation_name, start_time FROM remediation_audit
                      WHERE NOT legal_hold AND (deleted_at IS NOT NULL OR retention_expiry_time <= $1))
         SELECT (SELECT count(*) FROM due),
                (SELECT count(*) FROM remediation_audit_events e JOIN due d USING (namespace, remediation_name, start_time))",
    )
    .bind(clock)
    .fetch_one(pool)
    .await?;
    Ok(row)
}

/// What became of a retired week's live tables.
async fn week_fate(pool: &PgPool, week: DateTime<Utc>) -> anyhow::Result<String> {
    let names = [
        summary_week(week),
        events_week(week),
        table_of("remediation_audit_archive", week),
        table_of("remediation_audit_events_archive", week),
    ];
    let mut present = Vec::new();
    for name in &names {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(name)
            .fetch_one(pool)
            .await?;
        present.push(exists);
    }
    Ok(match (present[0] || present[1], present[2] && present[3]) {
        (false, true) => format!(
            "now the archive's partitions {} and {} (no row copied)",
            names[2], names[3]
        ),
        (false, false) => "dropped (its rows were copied into the archive tables)".to_owned(),
        (true, _) => format!("{} / {} still exist", names[0], names[1]),
    })
}

/// Rows of a week that a retired partition left in the default partition.
async fn kept_in_default(pool: &PgPool, week: DateTime<Utc>) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM remediation_audit_default WHERE start_time >= $1 AND start_time < $2",
    )
    .bind(week)
    .bind(week + TimeDelta::weeks(1))
    .fetch_one(pool)
    .await?)
}
