//! e: post-mortem lookups (`alert_fingerprint = $1 ORDER BY start_time DESC,
//! id DESC LIMIT 50`) on the weekly-partitioned live table, on a copy
//! partitioned by day and on an unpartitioned copy, for random
//! fingerprints with warm caches: their latencies and a typical plan.

use std::time::Instant;

use remaudit_testkit::bench::{percentile_f64, sorted_f64};
use serde_json::Value;
use sqlx::{AssertSqlSafe, Connection as _, PgConnection, PgPool};

use crate::Options;
use crate::measure::busy;

/// The post-mortem lookup's columns, on any of the three tables.
const LOOKUP_COLUMNS: &str = "id, remediation_name, overall_phase, start_time, completion_time, failure_phase, failure_reason";

/// The latencies (ms, sorted) of one table's lookups.
pub(crate) struct LookupLine {
    pub(crate) table: &'static str,
    pub(crate) latencies: Vec<f64>,
    pub(crate) rows: usize,
}

impl LookupLine {
    fn rows_each(&self) -> f64 {
        remaudit_model::approx_f64(self.rows)
            / remaudit_model::approx_f64(self.latencies.len().max(1))
    }
}

pub(crate) fn print_lookups(lines: &[LookupLine]) {
    let Some(first) = lines.first() else { return };
    println!("  post-mortem lookup latency (ms; p50 relative to the weekly table's):");
    let base = percentile_f64(&first.latencies, 0.5);
    for l in lines {
        println!(
            "    {:<32} p50 {:>7.3}  p95 {:>7.3}  p99 {:>7.3}  ({} lookups, {:.1} rows each)  {:>5.2}x",
            l.table,
            percentile_f64(&l.latencies, 0.5),
            percentile_f64(&l.latencies, 0.95),
            percentile_f64(&l.latencies, 0.99),
            l.latencies.len(),
            l.rows_each(),
            percentile_f64(&l.latencies, 0.5) / base
        );
    }
}

/// The plan of one lookup: its shape, partitions scanned, buffers, times.
fn plan_summary(explain: &Value) -> String {
    fn walk(node: &Value, scans: &mut usize, types: &mut Vec<String>, depth: usize) {
        let kind = node["Node Type"].as_str().unwrap_or("?");
        if kind.contains("Scan") {
            *scans += 1;
        } else if depth < 3 {
            types.push(kind.to_owned());
        }
        if let Some(children) = node["Plans"].as_array() {
            for child in children {
                walk(child, scans, types, depth + 1);
            }
        }
    }
    let top = &explain[0];
    let plan = &top["Plan"];
    let (mut scans, mut types) = (0, Vec::new());
    walk(plan, &mut scans, &mut types, 0);
    format!(
        "{} over {scans} index scans; buffers hit {} read {}; planning {:.2} ms, execution {:.2} ms",
        types.join(" > "),
        plan["Shared Hit Blocks"].as_i64().unwrap_or(0),
        plan["Shared Read Blocks"].as_i64().unwrap_or(0),
        top["Planning Time"].as_f64().unwrap_or(f64::NAN),
        top["Execution Time"].as_f64().unwrap_or(f64::NAN),
    )
}

/// Runs the lookups on the full data and prints their latencies.
pub(crate) async fn step(
    url: &str,
    options: &Options,
    pool: &PgPool,
) -> anyhow::Result<Vec<LookupLine>> {
    println!();
    println!(
        "e. post-mortem lookup: SELECT {LOOKUP_COLUMNS} ... WHERE alert_fingerprint = $1 \
         ORDER BY start_time DESC, id DESC LIMIT 50 ({} random fingerprints of {}, warm caches; {})",
        options.lookups,
        options.alerts,
        busy(pool).await
    );
    let lines = lookups(url, options).await?;
    print_lookups(&lines);
    Ok(lines)
}

async fn lookups(url: &str, options: &Options) -> anyhow::Result<Vec<LookupLine>> {
    let tables = [
        ("remediation_audit", "weekly partitions (live table)"),
        ("bench_lookup_daily", "daily partitions (copy)"),
        ("bench_lookup_flat", "not partitioned (copy)"),
    ];
    let mut conn = PgConnection::connect(url).await?;
    let fingerprints: Vec<String> = sqlx::query_scalar(
        "SELECT md5('fp-' || a) FROM generate_series(0, $1 - 1) AS a ORDER BY md5('pick-' || a) LIMIT $2",
    )
    .bind(i32::try_from(options.alerts)?)
    .bind(i64::try_from(options.lookups)?)
    .fetch_all(&mut conn)
    .await?;
    let sql: Vec<String> = tables
        .iter()
        .map(|(t, _)| {
            format!(
                "SELECT {LOOKUP_COLUMNS} FROM {t} WHERE alert_fingerprint = $1 \
                 ORDER BY start_time DESC, id DESC LIMIT 50"
            )
        })
        .collect();
    // Warm-up: every lookup once on every table.
    for q in &sql {
        for fp in &fingerprints {
            sqlx::query(AssertSqlSafe(q.clone()))
                .bind(fp)
                .fetch_all(&mut conn)
                .await?;
        }
    }
    let mut latencies = vec![Vec::new(); tables.len()];
    let mut rows = vec![0; tables.len()];
    for (i, fp) in fingerprints.iter().enumerate() {
        for j in 0..tables.len() {
            let which = (i + j) % tables.len();
            let t = Instant::now();
            let got = sqlx::query(AssertSqlSafe(sql[which].clone()))
                .bind(fp)
                .fetch_all(&mut conn)
                .await?;
            latencies[which].push(t.elapsed().as_secs_f64() * 1e3);
            rows[which] += got.len();
        }
    }
    // The plan of a typical (median-popularity) fingerprint on each table.
    let mut per_fp: Vec<(i64, &String)> = Vec::new();
    for fp in fingerprints.iter().take(41) {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM bench_lookup_flat WHERE alert_fingerprint = $1",
        )
        .bind(fp)
        .fetch_one(&mut conn)
        .await?;
        per_fp.push((n, fp));
    }
    per_fp.sort();
    let (typical_rows, typical) = per_fp[per_fp.len() / 2];
    println!(
        "  plans for a median fingerprint of the sample ({typical_rows} remediations in 91 days):"
    );
    let mut lines = Vec::new();
    for (((table, label), lat), n) in tables.iter().zip(latencies).zip(rows) {
        let explain: Value = sqlx::query_scalar(AssertSqlSafe(format!(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT {LOOKUP_COLUMNS} FROM {table} \
             WHERE alert_fingerprint = '{typical}' ORDER BY start_time DESC, id DESC LIMIT 50"
        )))
        .fetch_one(&mut conn)
        .await?;
        let shape = plan_summary(&explain);
        println!("    {label:<32} {shape}");
        lines.push(LookupLine {
            table: label,
            latencies: sorted_f64(lat),
            rows: n,
        });
    }
    conn.close().await?;
    Ok(lines)
}
