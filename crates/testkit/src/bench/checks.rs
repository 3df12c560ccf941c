//! The benchmarks' own checks. A benchmark asserts no speed, but it does
//! check what it measured; a failed check is a *surprise*: [`surprise`]
//! prints it and [`verdict`] turns any into an error at the end. [`census`]
//! and [`check_stored`] check where the rows of the partitioned tables are.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::bail;
use sqlx::{AssertSqlSafe, PgPool};

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
    #[must_use]
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

/// Waits until the projection queue is empty, so that the summary and the
/// rollups hold every record acknowledged so far, and returns the seconds
/// from `started` until then. A queue that does not empty within two
/// minutes is a surprise (the projector has stalled).
///
/// # Errors
/// When PostgreSQL refuses the look at the queue.
pub async fn projected_after(pool: &PgPool, started: std::time::Instant) -> anyhow::Result<f64> {
    let limit = std::time::Duration::from_mins(2);
    let waited = std::time::Instant::now();
    loop {
        let queued: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM remediation_projection_queue)")
                .fetch_one(pool)
                .await?;
        if !queued {
            return Ok(started.elapsed().as_secs_f64());
        }
        if waited.elapsed() > limit {
            surprise(format_args!(
                "the projection queue was not empty {} s after the last answer",
                limit.as_secs()
            ));
            return Ok(started.elapsed().as_secs_f64());
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// Checks what one write path stored: `records` timeline rows and
/// `remediations` summary rows, each once and in its weekly partition (none
/// in the default one), once the projection queue is empty. `path` names
/// the path in the surprises.
///
/// # Errors
/// When PostgreSQL refuses a count.
pub async fn check_stored(
    pool: &PgPool,
    path: &str,
    records: usize,
    remediations: usize,
) -> anyhow::Result<()> {
    projected_after(pool, std::time::Instant::now()).await?;
    for (table, want) in [
        ("remediation_audit_events", records),
        ("remediation_audit", remediations),
    ] {
        let census = census(pool, table).await?;
        // Each failure is already reported as a surprise.
        let _ = census.check(&format!("{path}: {table}"), true);
        expect_eq(
            &format!("{path}: {table} rows"),
            &census.total,
            &i64::try_from(want)?,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
