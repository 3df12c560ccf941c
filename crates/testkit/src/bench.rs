//! What the benchmarks share: knobs, the smoke switch, percentiles, the
//! verdict on their own checks, and the preparation of a benchmark database
//! (a named database, load connections, weekly partitions, indexes dropped
//! during a load and rebuilt after it, the census of rows per partition).
//!
//! A benchmark prints figures and asserts no speed, but it does check what it
//! measured (counts, answers equal to the design's SQL, every row in exactly
//! one place). A failed check is a *surprise*: [`surprise`] prints it, and
//! [`verdict`] at the end turns any into an error, so the process exits
//! non-zero. Each benchmark has a smoke mode ([`smoke`]): a few thousand
//! rows, seconds, every check, that `scripts/bench-smoke` (and so CI) runs.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Display;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, Connection as _, PgConnection, PgPool};

use crate::{ADMIN_URL_VAR, DEFAULT_ADMIN_URL};

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

/// The `p` quantile (0 to 1) of sorted values, by the nearest rank;
/// `None` when there are none.
#[must_use]
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    let last = sorted.len().checked_sub(1)?;
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let index = ((last as f64) * p.clamp(0.0, 1.0)).round() as usize;
    sorted.get(index.min(last)).copied()
}

/// Milliseconds of the `p` quantile of sorted durations (NaN when empty).
#[must_use]
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    percentile(sorted, p).map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
}

/// `n` with thousands separators.
#[must_use]
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// Bytes as MiB.
#[must_use]
#[allow(clippy::cast_precision_loss)]
pub fn mib(bytes: i64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

static SURPRISES: AtomicUsize = AtomicUsize::new(0);

/// Prints a failed check as `SURPRISE: …` and counts it for [`verdict`].
pub fn surprise(what: impl Display) {
    println!("    SURPRISE: {what}");
    SURPRISES.fetch_add(1, Ordering::Relaxed);
}

/// Checks that `got` equals `want`; a difference is a [`surprise`] that
/// names `what` and both values. Returns whether they were equal.
pub fn expect_eq<T: PartialEq + std::fmt::Debug>(what: &str, got: &T, want: &T) -> bool {
    if got == want {
        true
    } else {
        surprise(format_args!(
            "{what}: mismatch: got {got:?}, expected {want:?}"
        ));
        false
    }
}

/// How many surprises this run has printed so far.
#[must_use]
pub fn surprises() -> usize {
    SURPRISES.load(Ordering::Relaxed)
}

/// The run's verdict: an error when any check failed, so that the benchmark
/// exits non-zero; call it last.
///
/// # Errors
/// When [`surprise`] was called at least once.
pub fn verdict(bench: &str) -> anyhow::Result<()> {
    let n = surprises();
    if n > 0 {
        bail!("{bench}: {n} check(s) failed (see SURPRISE above): the figures cannot be trusted");
    }
    println!("{bench}: every check passed");
    Ok(())
}

// ---------------------------------------------------------------------------
// The benchmark database

/// A URL with its password (if any) replaced by `***`, for messages.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((user_info, host)) => {
            let user = user_info.split_once(':').map_or(user_info, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

/// The PostgreSQL server benchmarks create their databases on: the tests'
/// ([`ADMIN_URL_VAR`], which `scripts/pg-prepare` sets).
#[must_use]
pub fn admin_url() -> String {
    std::env::var(ADMIN_URL_VAR).unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

/// A named database for one benchmark, kept between runs unless dropped.
#[derive(Debug, Clone)]
pub struct BenchDb {
    /// The database's name.
    pub name: String,
    /// Its URL.
    pub url: String,
    admin_url: String,
}

impl BenchDb {
    /// The database `name` on the benchmarks' server (not created yet).
    ///
    /// # Errors
    /// When the name is not lower-case letters, digits and underscores.
    pub fn named(name: &str) -> anyhow::Result<Self> {
        ensure!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "database name {name:?}: use lower-case letters, digits and underscores (BENCH_DATABASE)"
        );
        let admin_url = admin_url();
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(base, _)| base);
        Ok(Self {
            name: name.to_owned(),
            url: format!("{base}/{name}"),
            admin_url,
        })
    }

    async fn admin(&self) -> anyhow::Result<PgConnection> {
        PgConnection::connect(&self.admin_url).await.with_context(|| {
            format!(
                "cannot reach PostgreSQL at {} ({ADMIN_URL_VAR}); the scripts/bench-* scripts start it",
                without_password(&self.admin_url)
            )
        })
    }

    /// Whether the database exists.
    ///
    /// # Errors
    /// When PostgreSQL is not reachable.
    pub async fn exists(&self) -> anyhow::Result<bool> {
        let mut admin = self.admin().await?;
        let exists =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(&self.name)
                .fetch_one(&mut admin)
                .await?;
        admin.close().await?;
        Ok(exists)
    }

    /// Drops the database when it exists, then creates it empty.
    ///
    /// # Errors
    /// When PostgreSQL refuses.
    pub async fn recreate(&self) -> anyhow::Result<()> {
        let mut admin = self.admin().await?;
        for sql in [
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            format!("CREATE DATABASE {}", self.name),
        ] {
            sqlx::raw_sql(AssertSqlSafe(sql))
                .execute(&mut admin)
                .await?;
        }
        admin.close().await?;
        Ok(())
    }

    /// Drops the database.
    ///
    /// # Errors
    /// When PostgreSQL refuses.
    pub async fn drop_database(&self) -> anyhow::Result<()> {
        let mut admin = self.admin().await?;
        // `WITH (FORCE)` cannot end a superuser's session, and a superuser
        // connection the benchmark closed may still be exiting: wait for it.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let superusers: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity a JOIN pg_roles r ON r.oid = a.usesysid \
                 WHERE a.datname = $1 AND r.rolsuper",
            )
            .bind(&self.name)
            .fetch_one(&mut admin)
            .await?;
            if superusers == 0 {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "a superuser session is still connected to {} after 30 s",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut admin)
        .await?;
        admin.close().await?;
        Ok(())
    }

    /// Drops the database when `drop` is set (smoke runs always do), or
    /// says how to reuse it.
    ///
    /// # Errors
    /// When PostgreSQL refuses the drop.
    pub async fn finish(&self, drop: bool) -> anyhow::Result<()> {
        if drop {
            self.drop_database().await?;
            println!("dropped {}", self.name);
        } else {
            println!(
                "kept {} for --reuse (drop it with --drop, or DROP DATABASE {})",
                self.name, self.name
            );
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Loading: connections, jobs, partitions and indexes

/// Opens `n` connections to `url`, each running `session` (SQL) first.
///
/// # Errors
/// When a connection or the session SQL fails.
pub async fn connect_all(url: &str, n: usize, session: &str) -> anyhow::Result<Vec<PgConnection>> {
    let mut connections = Vec::new();
    for _ in 0..n.max(1) {
        let mut conn = PgConnection::connect(url).await?;
        sqlx::raw_sql(AssertSqlSafe(session.to_owned()))
            .execute(&mut conn)
            .await
            .context("load session settings")?;
        connections.push(conn);
    }
    Ok(connections)
}

/// One unit of work for a load connection: statements run one after another,
/// each in its own transaction.
#[derive(Debug, Clone)]
pub struct Job {
    /// What the step's timing calls it.
    pub label: String,
    /// The statements.
    pub statements: Vec<String>,
    /// The table whose locks the job takes.
    pub table: String,
    /// Whether it takes the table's exclusive lock (`ALTER TABLE … ADD CONSTRAINT`).
    pub exclusive: bool,
}

impl Job {
    /// A job that shares its table with others.
    pub fn new(label: impl Into<String>, table: &str, statements: Vec<String>) -> Self {
        Self {
            label: label.into(),
            statements,
            table: table.to_owned(),
            exclusive: false,
        }
    }
}

type Queue = (VecDeque<Job>, Vec<(String, bool)>);

/// Runs the jobs on the connections, each connection taking the first job
/// whose table no other running job conflicts on; returns the connections
/// and each job's seconds.
///
/// # Errors
/// The first statement that failed, with its job's label.
pub async fn run_jobs(
    connections: Vec<PgConnection>,
    jobs: Vec<Job>,
) -> anyhow::Result<(Vec<PgConnection>, Vec<(String, f64)>)> {
    let state: Arc<Mutex<Queue>> = Arc::new(Mutex::new((jobs.into(), Vec::new())));
    let tasks: Vec<_> = connections
        .into_iter()
        .map(|mut conn| {
            let state = state.clone();
            tokio::spawn(async move {
                let mut times = Vec::new();
                loop {
                    let job = {
                        let mut guard = state.lock().expect("job queue");
                        let (pending, running) = &mut *guard;
                        if pending.is_empty() {
                            return anyhow::Ok((conn, times));
                        }
                        let fits = |job: &Job| {
                            running.iter().all(|(table, exclusive)| {
                                table != &job.table || !(job.exclusive || *exclusive)
                            })
                        };
                        let found = pending.iter().position(fits);
                        found.and_then(|i| pending.remove(i)).inspect(|job| {
                            running.push((job.table.clone(), job.exclusive));
                        })
                    };
                    let Some(job) = job else {
                        // Another connection holds the table; it frees it soon.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    let t = Instant::now();
                    for sql in &job.statements {
                        sqlx::raw_sql(AssertSqlSafe(sql.clone()))
                            .execute(&mut conn)
                            .await
                            .with_context(|| format!("{}: {sql}", job.label))?;
                    }
                    times.push((job.label.clone(), t.elapsed().as_secs_f64()));
                    let mut guard = state.lock().expect("job queue");
                    let running = &mut guard.1;
                    if let Some(i) = running
                        .iter()
                        .position(|(t, e)| t == &job.table && *e == job.exclusive)
                    {
                        running.remove(i);
                    }
                }
            })
        })
        .collect();
    let mut connections = Vec::new();
    let mut times = Vec::new();
    for task in tasks {
        let (conn, done) = task.await??;
        connections.push(conn);
        times.extend(done);
    }
    Ok((connections, times))
}

/// Runs a named load step's jobs and prints its time (and its slowest job).
///
/// # Errors
/// As [`run_jobs`].
pub async fn step(
    name: &str,
    connections: Vec<PgConnection>,
    jobs: Vec<Job>,
) -> anyhow::Result<Vec<PgConnection>> {
    let t = Instant::now();
    let count = jobs.len();
    let (connections, times) = run_jobs(connections, jobs).await?;
    let slowest = times
        .iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(label, s)| format!("  (slowest of {count}: {label} {s:.1} s)"))
        .unwrap_or_default();
    println!(
        "  {name:<28} {:>8.1} s{}",
        t.elapsed().as_secs_f64(),
        if count > 1 { slowest } else { String::new() }
    );
    Ok(connections)
}

/// Creates the weekly partitions of the live tables that cover
/// `[from, to)` (the store's own function); returns how many it created.
///
/// # Errors
/// When PostgreSQL refuses.
pub async fn ensure_partitions(
    conn: &mut PgConnection,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<i32> {
    sqlx::query_scalar("SELECT remaudit_ensure_partitions($1, $2)")
        .bind(from)
        .bind(to)
        .fetch_one(&mut *conn)
        .await
        .context("remaudit_ensure_partitions")
}

/// An index of a (partitioned) table, saved before a load drops it.
#[derive(Debug, Clone)]
pub struct SavedIndex {
    /// The table it indexes.
    pub table: String,
    /// The index's name.
    pub name: String,
    /// `pg_get_indexdef`.
    pub definition: String,
    /// The constraint behind it, when there is one: name and definition
    /// (`PRIMARY KEY (…)` or `UNIQUE (…)`).
    pub constraint: Option<(String, String)>,
}

impl SavedIndex {
    /// The statement that drops it (its constraint, when it has one).
    #[must_use]
    pub fn drop_sql(&self) -> String {
        match &self.constraint {
            Some((name, _)) => format!("ALTER TABLE {} DROP CONSTRAINT {name}", self.table),
            None => format!("DROP INDEX {}", self.name),
        }
    }

    /// The job that builds it again. A constraint is added back by its
    /// definition (`ADD CONSTRAINT … USING INDEX` does not work on a
    /// partitioned table), which takes the table's exclusive lock.
    #[must_use]
    pub fn job(&self) -> Job {
        let (sql, exclusive) = match &self.constraint {
            Some((name, definition)) => (
                format!(
                    "ALTER TABLE {} ADD CONSTRAINT {name} {definition}",
                    self.table
                ),
                true,
            ),
            // A partitioned index's definition reads `ON ONLY parent`, which
            // would create an invalid index on the parent alone. Its build
            // names one index per partition after the columns, so two built
            // at once on the same columns collide on a name: one at a time.
            None => (
                self.definition.replacen(" ON ONLY ", " ON ", 1),
                self.definition.contains(" ON ONLY "),
            ),
        };
        Job {
            label: self.name.clone(),
            statements: vec![sql],
            table: self.table.clone(),
            exclusive,
        }
    }
}

/// Every index of `tables`, with the constraints behind them.
///
/// # Errors
/// When a table has an index-backed constraint other than a primary key or
/// a unique one (which a load could not rebuild).
pub async fn saved_indexes(
    conn: &mut PgConnection,
    tables: &[&str],
) -> anyhow::Result<Vec<SavedIndex>> {
    type IndexRow = (
        String,
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let tables: Vec<String> = tables.iter().map(|t| (*t).to_owned()).collect();
    let rows: Vec<IndexRow> = sqlx::query_as(
        "SELECT t.relname::text, i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid),
                c.conname::text, c.contype::text, pg_get_constraintdef(c.oid)
         FROM pg_index i
         JOIN pg_class t ON t.oid = i.indrelid
         LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid
         WHERE i.indrelid = ANY (SELECT to_regclass(n)::oid FROM unnest($1::text[]) AS n)
         ORDER BY c.contype NULLS LAST, t.relname, 2",
    )
    .bind(&tables)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|(table, name, definition, con, kind, con_def)| {
            let constraint = match (con, kind, con_def) {
                (Some(c), Some(k), Some(d)) => {
                    ensure!(
                        k == "p" || k == "u",
                        "{table} has an index-backed constraint {c} of type {k} the load cannot rebuild"
                    );
                    Some((c, d))
                }
                _ => None,
            };
            Ok(SavedIndex {
                table,
                name,
                definition,
                constraint,
            })
        })
        .collect()
}

/// Saves the indexes of `tables` and drops them (before a load).
///
/// # Errors
/// As [`saved_indexes`], or when a drop fails.
pub async fn drop_indexes(
    conn: &mut PgConnection,
    tables: &[&str],
) -> anyhow::Result<Vec<SavedIndex>> {
    let saved = saved_indexes(conn, tables).await?;
    for index in &saved {
        sqlx::raw_sql(AssertSqlSafe(index.drop_sql()))
            .execute(&mut *conn)
            .await
            .with_context(|| index.drop_sql())?;
    }
    Ok(saved)
}

/// The jobs that rebuild saved indexes, in a good order: constraints first
/// (each locks its table), then the indexes of `biggest`, then the rest.
#[must_use]
pub fn index_jobs(saved: &[SavedIndex], biggest: &str) -> Vec<Job> {
    let mut jobs: Vec<(u8, Job)> = saved
        .iter()
        .map(|s| {
            let rank = match (&s.constraint, s.table == biggest) {
                (Some(_), _) => 0,
                (None, true) => 1,
                (None, false) => 2,
            };
            (rank, s.job())
        })
        .collect();
    jobs.sort_by_key(|(rank, _)| *rank);
    jobs.into_iter().map(|(_, j)| j).collect()
}

/// Moves a table's id sequence past its largest id (after rows were loaded
/// with explicit ids).
///
/// # Errors
/// When PostgreSQL refuses.
pub async fn sync_id_sequence(conn: &mut PgConnection, table: &str) -> anyhow::Result<()> {
    sqlx::raw_sql(AssertSqlSafe(format!(
        "SELECT setval(pg_get_serial_sequence('{table}', 'id'), GREATEST(1, (SELECT max(id) FROM {table})))"
    )))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Where the rows of a partitioned table are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Census {
    /// Rows read through the parent.
    pub total: i64,
    /// Distinct ids among them.
    pub distinct_ids: i64,
    /// Rows per partition (by name), the default partition included.
    pub partitions: BTreeMap<String, i64>,
    /// Rows per partition, read from each partition itself.
    pub direct: BTreeMap<String, i64>,
}

impl Census {
    /// Rows in the parent's default partition.
    #[must_use]
    pub fn in_default(&self) -> i64 {
        self.partitions
            .iter()
            .filter(|(name, _)| name.ends_with("_default"))
            .map(|(_, n)| n)
            .sum()
    }

    /// Checks that every row is in exactly one place: the parent's rows are
    /// the sum of its partitions' (each read on its own), no id appears
    /// twice, and (when `default_empty`) none fell into the default
    /// partition. Each failure is a [`surprise`]; returns whether all held.
    pub fn check(&self, table: &str, default_empty: bool) -> bool {
        let summed: i64 = self.direct.values().sum();
        let mut ok = expect_eq(
            &format!("{table}: rows through the parent vs the sum of its partitions"),
            &self.total,
            &summed,
        );
        ok &= expect_eq(
            &format!("{table}: rows vs distinct ids"),
            &self.total,
            &self.distinct_ids,
        );
        ok &= expect_eq(
            &format!("{table}: rows per partition, through the parent vs read directly"),
            &self.partitions,
            &self.direct,
        );
        if default_empty {
            ok &= expect_eq(
                &format!("{table}: rows in the default partition"),
                &self.in_default(),
                &0,
            );
        }
        ok
    }
}

/// Counts a partitioned table's rows: through the parent, by partition, and
/// in each partition read directly.
///
/// # Errors
/// When PostgreSQL refuses.
pub async fn census(pool: &PgPool, table: &str) -> anyhow::Result<Census> {
    let (total, distinct_ids): (i64, i64) = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT count(*), count(DISTINCT id) FROM {table}"
    )))
    .fetch_one(pool)
    .await?;
    let by_partition: Vec<(String, i64)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT tableoid::regclass::text, count(*) FROM {table} GROUP BY 1"
    )))
    .fetch_all(pool)
    .await?;
    let partitions: Vec<String> = sqlx::query_scalar(
        "SELECT c.oid::regclass::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = $1::regclass",
    )
    .bind(table)
    .fetch_all(pool)
    .await?;
    let mut direct = BTreeMap::new();
    for p in partitions {
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM ONLY {p}")))
            .fetch_one(pool)
            .await?;
        if n > 0 {
            direct.insert(p, n);
        }
    }
    Ok(Census {
        total,
        distinct_ids,
        partitions: by_partition.into_iter().collect(),
        direct,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_the_nearest_rank() {
        let v = [1, 2, 3, 4, 5];
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&v, 0.5), Some(3));
        assert_eq!(percentile(&v, 0.95), Some(5));
        assert_eq!(percentile::<i32>(&[], 0.5), None);
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(-1000), "-1,000");
    }

    #[test]
    fn messages_hide_the_password() {
        assert_eq!(
            without_password("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(without_password("postgres://h/db"), "postgres://h/db");
    }

    /// The census sees a row in the default partition, and passes when
    /// every row is in its own partition: on real PostgreSQL.
    #[tokio::test]
    async fn the_census_finds_rows_out_of_place() {
        let db = crate::PgDb::create().await;
        let pool = db.pool().await;
        sqlx::raw_sql(
            "CREATE TABLE t (id int, k int) PARTITION BY RANGE (k);
             CREATE TABLE t_low PARTITION OF t FOR VALUES FROM (0) TO (10);
             CREATE TABLE t_default PARTITION OF t DEFAULT;
             INSERT INTO t VALUES (1, 1), (2, 2);",
        )
        .execute(&pool)
        .await
        .expect("setup");
        let placed = census(&pool, "t").await.expect("census");
        assert_eq!((placed.total, placed.in_default()), (2, 0));
        assert!(placed.check("t", true));

        sqlx::raw_sql("INSERT INTO t VALUES (3, 42), (3, 5)")
            .execute(&pool)
            .await
            .expect("insert");
        let misplaced = census(&pool, "t").await.expect("census");
        assert_eq!(
            (
                misplaced.total,
                misplaced.distinct_ids,
                misplaced.in_default()
            ),
            (4, 3, 1)
        );
        let before = surprises();
        assert!(
            !misplaced.check("t", true),
            "a row in the default partition and an id twice"
        );
        assert!(surprises() >= before + 2);
        pool.close().await;
    }

    #[test]
    fn a_surprise_fails_the_verdict() {
        assert!(expect_eq("same", &1, &1));
        let before = surprises();
        assert!(!expect_eq("differs", &1, &2));
        assert_eq!(surprises(), before + 1);
        assert!(verdict("test").is_err());
    }
}
