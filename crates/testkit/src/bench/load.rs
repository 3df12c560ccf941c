//! Loading a benchmark database fast: connections with session settings,
//! jobs run side by side without lock conflicts, the weekly partitions of
//! the whole range, indexes dropped during a load and rebuilt after it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, Connection as _, PgConnection};

use super::print_step;

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
///
/// # Panics
/// If a job task panicked while holding the job queue lock.
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
    print_step(
        name,
        t.elapsed().as_secs_f64(),
        if count > 1 { &slowest } else { "" },
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
