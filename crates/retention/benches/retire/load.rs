//! Loading the benchmark database: the store's migrations, the weekly
//! partitions of the whole range, the generator's rows (with the indexes
//! dropped, rebuilt afterwards), the lookup copies, then everything
//! vacuumed and analyzed. A kept database is reused with `--reuse`, its
//! retired weeks regenerated.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use remaudit_testkit::bench::{self, BenchDb, Job, expect_eq, mib, print_step, step, thousands};
use sqlx::{AssertSqlSafe, Connection as _, PgConnection, PgPool};

use crate::{Options, day, events_week, summary_week};

/// What every load connection runs first.
const SESSION: &str = include_str!("session.sql");

/// The generator's functions.
const GENERATOR: &str = include_str!("generate.sql");

/// The table, in the benchmark database, that records how it was loaded.
const LOAD_TABLE: &str = "bench_retention_load";

/// The rows each week held right after the load.
pub(crate) const WEEKS_TABLE: &str = "bench_retention_weeks";

/// Connections for the generator, with its knobs and session settings.
async fn load_connections(url: &str, options: &Options) -> anyhow::Result<Vec<PgConnection>> {
    let mut connections = bench::connect_all(
        url,
        options.load_connections,
        &format!("{}\n{SESSION}", options.knobs()),
    )
    .await?;
    sqlx::raw_sql(AssertSqlSafe(GENERATOR.to_owned()))
        .execute(&mut connections[0])
        .await
        .context("generator functions")?;
    Ok(connections)
}

/// The statements that regenerate one week into fresh tables and attach them.
fn rebuild_week_job(options: &Options, week: DateTime<Utc>) -> Job {
    let (summary, events) = (summary_week(week), events_week(week));
    let (first, last) = options.week_days(week);
    let (lo, hi) = (
        week.to_rfc3339_opts(SecondsFormat::Secs, true),
        (week + TimeDelta::weeks(1)).to_rfc3339_opts(SecondsFormat::Secs, true),
    );
    Job::new(
        format!("week {}", day(week)),
        &summary,
        vec![
            format!("DROP TABLE IF EXISTS {summary}, {events}"),
            format!(
                "CREATE TABLE {summary} (LIKE remediation_audit INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
            ),
            format!(
                "CREATE TABLE {events} (LIKE remediation_audit_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
            ),
            format!("SELECT remaudit_bench_fill('{summary}', '{events}', {first}, {last})"),
            format!(
                "ALTER TABLE remediation_audit ATTACH PARTITION {summary} FOR VALUES FROM ('{lo}') TO ('{hi}')"
            ),
            format!(
                "ALTER TABLE remediation_audit_events ATTACH PARTITION {events} FOR VALUES FROM ('{lo}') TO ('{hi}')"
            ),
            format!("VACUUM (ANALYZE) {summary}, {events}"),
        ],
    )
}

/// Rows per weekly partition of both live tables, by week.
async fn week_counts(pool: &PgPool) -> anyhow::Result<BTreeMap<String, (i64, i64)>> {
    let mut counts: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (table, events) in [
        ("remediation_audit", false),
        ("remediation_audit_events", true),
    ] {
        let rows: Vec<(String, i64)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT tableoid::regclass::text, count(*) FROM {table} GROUP BY 1"
        )))
        .fetch_all(pool)
        .await?;
        for (partition, n) in rows {
            let Some((_, week)) = partition.rsplit_once("_w") else {
                continue;
            };
            let entry = counts.entry(week.to_owned()).or_default();
            if events {
                entry.1 = n;
            } else {
                entry.0 = n;
            }
        }
    }
    Ok(counts)
}

/// Loads a fresh database; returns the seconds the generator took.
async fn load(db: &BenchDb, options: &Options) -> anyhow::Result<f64> {
    let url = &db.url;
    db.migrate().await?;
    let started = Instant::now();
    let mut connections = load_connections(url, options).await?;
    let conn = &mut connections[0];
    let created = bench::ensure_partitions(conn, options.origin(), options.data_end).await?;
    let saved =
        bench::drop_indexes(conn, &["remediation_audit", "remediation_audit_events"]).await?;
    print_step(
        "prepare",
        started.elapsed().as_secs_f64(),
        &format!("  ({created} partitions, {} indexes dropped)", saved.len()),
    );

    let fills = options
        .weeks()
        .into_iter()
        .map(|week| {
            let (first, last) = options.week_days(week);
            let (summary, events) = (summary_week(week), events_week(week));
            Job::new(
                format!("week {}", day(week)),
                &summary,
                vec![format!(
                    "SELECT remaudit_bench_fill('{summary}', '{events}', {first}, {last})"
                )],
            )
        })
        .collect();
    let connections = step("insert rows", connections, fills).await?;
    let mut connections = step(
        "indexes and constraints",
        connections,
        bench::index_jobs(&saved, "remediation_audit_events"),
    )
    .await?;
    bench::sync_id_sequence(&mut connections[0], "remediation_audit").await?;
    bench::sync_id_sequence(&mut connections[0], "remediation_audit_events").await?;
    sqlx::raw_sql("SELECT remaudit_bench_lookup_tables();")
        .execute(&mut connections[0])
        .await?;
    let copies = ["bench_lookup_flat", "bench_lookup_daily"];
    let connections = step(
        "lookup copies",
        connections,
        copies
            .iter()
            .map(|t| {
                Job::new(
                    *t,
                    t,
                    vec![
                        format!("INSERT INTO {t} SELECT * FROM remediation_audit"),
                        format!(
                            "CREATE INDEX {t}_fingerprint ON {t} (alert_fingerprint, start_time DESC, id DESC)"
                        ),
                    ],
                )
            })
            .collect(),
    )
    .await?;
    let connections = step(
        "vacuum analyze",
        connections,
        [
            "remediation_audit_events",
            "remediation_audit",
            "bench_lookup_flat",
            "bench_lookup_daily",
        ]
        .iter()
        .map(|t| Job::new(*t, t, vec![format!("VACUUM (ANALYZE) {t}")]))
        .collect(),
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    for conn in connections {
        conn.close().await?;
    }

    let pool = bench::pool(url, 2).await?;
    let counts = week_counts(&pool).await?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE TABLE {LOAD_TABLE} (data_end TIMESTAMPTZ NOT NULL, days INT NOT NULL, per_day INT NOT NULL,
             alerts INT NOT NULL, load_seconds FLOAT8 NOT NULL, loaded_at TIMESTAMPTZ NOT NULL DEFAULT now());
         CREATE TABLE {WEEKS_TABLE} (week TEXT PRIMARY KEY, remediations BIGINT NOT NULL, events BIGINT NOT NULL);"
    )))
    .execute(&pool)
    .await?;
    for week in options.weeks() {
        let key = week.format("%Y%m%d").to_string();
        let (r, e) = counts.get(&key).copied().unwrap_or_default();
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {WEEKS_TABLE} (week, remediations, events) VALUES ($1, $2, $3)"
        )))
        .bind(&key)
        .bind(r)
        .bind(e)
        .execute(&pool)
        .await?;
    }
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {LOAD_TABLE} (data_end, days, per_day, alerts, load_seconds) VALUES ($1, $2, $3, $4, $5)"
    )))
    .bind(options.data_end)
    .bind(i32::try_from(options.days)?)
    .bind(i32::try_from(options.per_day)?)
    .bind(i32::try_from(options.alerts)?)
    .bind(seconds)
    .execute(&pool)
    .await?;
    pool.close().await;
    Ok(seconds)
}

/// Puts a reused database back into its loaded state: clears what earlier
/// runs left (archive tables, journal, default partitions, ingested rows,
/// rollups) and regenerates the weeks they retired.
async fn restore(url: &str, options: &Options) -> anyhow::Result<()> {
    let t = Instant::now();
    let pool = bench::pool(url, 2).await?;
    let leftovers: Vec<String> = sqlx::query_scalar(
        "SELECT relname::text FROM pg_class
         WHERE relkind = 'r' AND NOT relispartition
           AND relname ~ '^remediation_audit(_events)?_w[0-9]{8}$'",
    )
    .fetch_all(&pool)
    .await?;
    // Weeks an earlier run retired may live on as the archive's partitions.
    let archived: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent IN (SELECT oid FROM pg_class
                               WHERE relname IN ('remediation_audit_archive', 'remediation_audit_events_archive'))
           AND c.relname !~ '_default$'",
    )
    .fetch_all(&pool)
    .await?;
    for table in leftovers.iter().chain(&archived) {
        sqlx::raw_sql(AssertSqlSafe(format!("DROP TABLE {table}")))
            .execute(&pool)
            .await?;
    }
    let data_weeks: Vec<String> = options
        .weeks()
        .iter()
        .map(|w| w.format("%Y%m%d").to_string())
        .collect();
    let attached: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent IN ('remediation_audit'::regclass, 'remediation_audit_events'::regclass)
           AND c.relname ~ '_w[0-9]{8}$'",
    )
    .fetch_all(&pool)
    .await?;
    let mut clear = vec![
        "remediation_audit_default".to_owned(),
        "remediation_audit_events_default".to_owned(),
        "remediation_audit_archive".to_owned(),
        "remediation_audit_events_archive".to_owned(),
        "remediation_retention_batches".to_owned(),
        "remediation_rollup_outcomes".to_owned(),
        "remediation_rollup_durations".to_owned(),
        "remediation_rollup_alerts".to_owned(),
        "remediation_rollup_failures".to_owned(),
    ];
    // Weeks outside the data hold only what the ingest step wrote.
    clear.extend(attached.into_iter().filter(|name| {
        name.rsplit_once("_w")
            .is_some_and(|(_, w)| !data_weeks.iter().any(|d| d == w))
    }));
    sqlx::raw_sql(AssertSqlSafe(format!("TRUNCATE {}", clear.join(", "))))
        .execute(&pool)
        .await?;
    let expected: Vec<(String, i64, i64)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT week, remediations, events FROM {WEEKS_TABLE} ORDER BY week"
    )))
    .fetch_all(&pool)
    .await?;
    let counts = week_counts(&pool).await?;
    pool.close().await;
    let stale: Vec<DateTime<Utc>> = options
        .weeks()
        .into_iter()
        .filter(|week| {
            let key = week.format("%Y%m%d").to_string();
            let want = expected
                .iter()
                .find(|(w, _, _)| *w == key)
                .map(|(_, r, e)| (*r, *e));
            want.is_none() || want != counts.get(&key).copied()
        })
        .collect();
    println!(
        "  checked in {:.1} s: {} leftover tables dropped, {} archive partitions dropped, {} weeks to regenerate{}",
        t.elapsed().as_secs_f64(),
        leftovers.len(),
        archived.len(),
        stale.len(),
        if stale.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                stale.iter().map(|w| day(*w)).collect::<Vec<_>>().join(", ")
            )
        }
    );
    if stale.is_empty() {
        return Ok(());
    }
    let connections = load_connections(url, options).await?;
    let jobs = stale
        .iter()
        .map(|w| rebuild_week_job(options, *w))
        .collect();
    let mut connections = step("regenerate weeks", connections, jobs).await?;
    sqlx::raw_sql("ANALYZE remediation_audit, remediation_audit_events")
        .execute(&mut connections[0])
        .await?;
    for conn in connections {
        conn.close().await?;
    }
    Ok(())
}

/// How the benchmark database was filled, as recorded in [`LOAD_TABLE`].
struct Loaded {
    data_end: DateTime<Utc>,
    days: i32,
    per_day: i32,
    alerts: i32,
    seconds: f64,
}

async fn recorded_load(url: &str) -> anyhow::Result<Option<Loaded>> {
    let mut conn = PgConnection::connect(url).await?;
    let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(LOAD_TABLE)
        .fetch_one(&mut conn)
        .await?;
    let row: Option<(DateTime<Utc>, i32, i32, i32, f64)> = if exists.is_some() {
        sqlx::query_as(AssertSqlSafe(format!(
            "SELECT data_end, days, per_day, alerts, load_seconds FROM {LOAD_TABLE} ORDER BY loaded_at DESC LIMIT 1"
        )))
        .fetch_optional(&mut conn)
        .await?
    } else {
        None
    };
    conn.close().await?;
    Ok(
        row.map(|(data_end, days, per_day, alerts, seconds)| Loaded {
            data_end,
            days,
            per_day,
            alerts,
            seconds,
        }),
    )
}

/// Creates (or reuses) the loaded database.
pub(crate) async fn prepare(options: &Options) -> anyhow::Result<BenchDb> {
    let db = BenchDb::named(&options.database)?;
    let url = &db.url;
    if options.reuse && db.exists().await? {
        match recorded_load(url).await? {
            Some(l)
                if l.data_end == options.data_end
                    && i64::from(l.days) == i64::from(options.days)
                    && i64::from(l.per_day) == i64::from(options.per_day)
                    && i64::from(l.alerts) == i64::from(options.alerts) =>
            {
                println!(
                    "reusing {}: {} days x {} a day ending {}, loaded in {:.0} s",
                    db.name,
                    l.days,
                    thousands(i64::from(l.per_day)),
                    l.data_end.to_rfc3339_opts(SecondsFormat::Secs, true),
                    l.seconds
                );
                // A migration changed since the load: the data must be loaded again.
                if db.schema_current().await? {
                    restore(url, options).await?;
                    return Ok(db);
                }
            }
            Some(_) => println!(
                "{} holds a load of another size or clock: loading it afresh",
                db.name
            ),
            None => println!(
                "{} exists but holds no recorded load: loading it afresh",
                db.name
            ),
        }
    }
    db.recreate().await?;
    println!(
        "loading {}: {} days x {} remediations a day = {} remediations, ending {}",
        db.name,
        options.days,
        thousands(i64::from(options.per_day)),
        thousands(i64::from(options.days) * i64::from(options.per_day)),
        options.data_end.to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    let seconds = load(&db, options).await?;
    println!("load time {seconds:.1} s (generator, without the migrations)");
    Ok(db)
}

/// Prints the size of the database and of its big tables, and the rows' mix.
pub(crate) async fn describe(pool: &PgPool) -> anyhow::Result<()> {
    bench::print_database_size(pool).await?;
    let tables: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT c.relname::text,
                COALESCE(sum(pg_total_relation_size(p.oid)), pg_total_relation_size(c.oid))::int8,
                COALESCE(sum(pg_indexes_size(p.oid)), pg_indexes_size(c.oid))::int8
         FROM pg_class c
         LEFT JOIN pg_inherits i ON i.inhparent = c.oid
         LEFT JOIN pg_class p ON p.oid = i.inhrelid
         WHERE c.relname IN ('remediation_audit', 'remediation_audit_events', 'bench_lookup_daily', 'bench_lookup_flat')
         GROUP BY c.relname, c.oid ORDER BY 2 DESC",
    )
    .fetch_all(pool)
    .await?;
    for (name, total, indexes) in tables {
        println!(
            "  {name:<26} {:>9.1} MiB (indexes {:>8.1} MiB)",
            mib(total),
            mib(indexes)
        );
    }
    let weeks: (i64, i64, i64) = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT count(*), sum(remediations)::int8, sum(events)::int8 FROM {WEEKS_TABLE}"
    )))
    .fetch_one(pool)
    .await?;
    let phases: Vec<(String, i64)> = sqlx::query_as(
        "SELECT CASE WHEN legal_hold THEN 'on legal hold' WHEN phase_rank < 9 THEN 'not terminal'
                     ELSE overall_phase::text END, count(*)
         FROM bench_lookup_flat GROUP BY 1 ORDER BY 2 DESC",
    )
    .fetch_all(pool)
    .await?;
    let per = remaudit_model::approx_f64(weeks.2) / remaudit_model::approx_f64(weeks.1.max(1));
    println!(
        "as loaded: {} weeks, {} remediations, {} events ({per:.2} a remediation); {}",
        weeks.0,
        thousands(weeks.1),
        thousands(weeks.2),
        phases
            .iter()
            .map(|(p, n)| format!("{p} {}", thousands(*n)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// Checks the load: every row in its weekly partition (none in the default
/// one, none twice) and as many remediations as the knobs ask for.
pub(crate) async fn check_loaded(pool: &PgPool, options: &Options) -> anyhow::Result<()> {
    let (weeks, remediations, events): (i64, i64, i64) = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT count(*), sum(remediations)::int8, sum(events)::int8 FROM {WEEKS_TABLE}"
    )))
    .fetch_one(pool)
    .await?;
    expect_eq(
        "weeks loaded",
        &weeks,
        &i64::try_from(options.weeks().len())?,
    );
    expect_eq(
        "remediations loaded",
        &remediations,
        &(i64::from(options.days) * i64::from(options.per_day)),
    );
    for (table, want) in [
        ("remediation_audit", remediations),
        ("remediation_audit_events", events),
    ] {
        let census = bench::census(pool, table).await?;
        // Each failure is already reported as a surprise.
        let _ = census.check(table, true);
        expect_eq(&format!("{table}: rows"), &census.total, &want);
    }
    Ok(())
}

/// What each week held right after the load: (week, remediations, events),
/// oldest first.
pub(crate) async fn weeks_as_loaded(pool: &PgPool) -> anyhow::Result<Vec<(String, i64, i64)>> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT week, remediations, events FROM {WEEKS_TABLE} ORDER BY week"
    )))
    .fetch_all(pool)
    .await?)
}
