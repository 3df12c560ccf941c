//! The two backends' schemas agree: every table holds the same columns on
//! PostgreSQL and SQLite, apart from those listed here as backend-only, and
//! each archive table keeps its live table's columns in order (retention
//! copies rows with `SELECT *, ...`).

use std::collections::{BTreeMap, BTreeSet};

use remaudit_testkit::{PgDb, SqliteDb};
use sqlx::Row as _;

/// Tables only PostgreSQL has: the analytics rollups, kept by the projector
/// there and computed from the rows on SQLite, the alert keys they use, and
/// the projection queue and its quarantine (SQLite writes the summary inline).
const POSTGRES_ONLY_TABLES: [&str; 7] = [
    "remediation_projection_queue",
    "remediation_projection_quarantine",
    "remediation_alert_keys",
    "remediation_rollup_alerts",
    "remediation_rollup_durations",
    "remediation_rollup_failures",
    "remediation_rollup_outcomes",
];

/// Tables only SQLite has.
const SQLITE_ONLY_TABLES: [&str; 1] = [
    // SQLite's own counter of AUTOINCREMENT ids.
    "sqlite_sequence",
];

/// Columns only PostgreSQL has, as `table.column`.
const POSTGRES_ONLY_COLUMNS: [&str; 2] = [
    // The transaction that created the row: tells the batch insert which
    // remediations it created (for the rollups).
    "remediation_audit.created_xid",
    "remediation_audit_archive.created_xid",
];

/// Columns only SQLite has, as `table.column`.
const SQLITE_ONLY_COLUMNS: [&str; 0] = [];

/// Each archive table and the live table whose columns it starts with.
const ARCHIVES: [(&str, &str); 2] = [
    ("remediation_audit_archive", "remediation_audit"),
    (
        "remediation_audit_events_archive",
        "remediation_audit_events",
    ),
];

/// The columns an archive adds after its live table's.
const ARCHIVE_COLUMNS: [&str; 2] = ["archived_at", "archive_batch"];

/// Columns of every table, in their order. Partitions (PostgreSQL's weekly
/// and default ones) are left out: they have their parent's columns.
type Schema = BTreeMap<String, Vec<String>>;

async fn postgres_schema() -> Schema {
    let db = PgDb::create().await;
    let store = db.store().await;
    let pool = db.pool().await;
    let rows = sqlx::query(
        "SELECT c.relname::text AS table_name, a.attname::text AS column_name \
         FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_attribute a ON a.attrelid = c.oid \
         WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND NOT c.relispartition \
           AND a.attnum > 0 AND NOT a.attisdropped \
         ORDER BY c.relname, a.attnum",
    )
    .fetch_all(&pool)
    .await
    .expect("PostgreSQL columns");
    let mut schema = Schema::new();
    for row in rows {
        schema
            .entry(row.get("table_name"))
            .or_default()
            .push(row.get("column_name"));
    }
    pool.close().await;
    store.close().await;
    schema
}

async fn sqlite_schema() -> Schema {
    let db = SqliteDb::create();
    let store = db.store().await;
    let pool = sqlx::SqlitePool::connect(&db.url())
        .await
        .expect("open SQLite database");
    let rows = sqlx::query(
        "SELECT m.name AS table_name, p.name AS column_name \
         FROM sqlite_master m, pragma_table_info(m.name) p \
         WHERE m.type = 'table' ORDER BY m.name, p.cid",
    )
    .fetch_all(&pool)
    .await
    .expect("SQLite columns");
    let mut schema = Schema::new();
    for row in rows {
        schema
            .entry(row.get("table_name"))
            .or_default()
            .push(row.get("column_name"));
    }
    pool.close().await;
    store.close().await;
    schema
}

/// `table.column` for every column of `schema`, except the listed tables.
fn columns(schema: &Schema, only_here: &[&str]) -> BTreeSet<String> {
    schema
        .iter()
        .filter(|(table, _)| !only_here.contains(&table.as_str()))
        .flat_map(|(table, columns)| columns.iter().map(move |c| format!("{table}.{c}")))
        .collect()
}

#[tokio::test]
async fn both_backends_have_the_same_columns() {
    let (pg, lite) = (postgres_schema().await, sqlite_schema().await);
    for (schema, only, backend) in [
        (&pg, &POSTGRES_ONLY_TABLES[..], "PostgreSQL"),
        (&lite, &SQLITE_ONLY_TABLES[..], "SQLite"),
    ] {
        for table in only {
            assert!(
                schema.contains_key(*table),
                "{table} is listed as {backend}-only but {backend} has no such table: update the list"
            );
        }
    }
    let pg_columns = columns(&pg, &POSTGRES_ONLY_TABLES);
    let lite_columns = columns(&lite, &SQLITE_ONLY_TABLES);
    let pg_extra: BTreeSet<&str> = pg_columns
        .difference(&lite_columns)
        .map(String::as_str)
        .collect();
    let lite_extra: BTreeSet<&str> = lite_columns
        .difference(&pg_columns)
        .map(String::as_str)
        .collect();
    assert_eq!(
        pg_extra,
        POSTGRES_ONLY_COLUMNS.into_iter().collect::<BTreeSet<_>>(),
        "columns PostgreSQL has and SQLite lacks: add them to the other backend's migrations, or list them here as PostgreSQL-only"
    );
    assert_eq!(
        lite_extra,
        SQLITE_ONLY_COLUMNS.into_iter().collect::<BTreeSet<_>>(),
        "columns SQLite has and PostgreSQL lacks: add them to the other backend's migrations, or list them here as SQLite-only"
    );
}

#[tokio::test]
async fn archives_keep_their_live_tables_columns_in_order() {
    for (schema, backend) in [
        (postgres_schema().await, "PostgreSQL"),
        (sqlite_schema().await, "SQLite"),
    ] {
        for (archive, live) in ARCHIVES {
            let mut want = schema[live].clone();
            want.extend(ARCHIVE_COLUMNS.map(str::to_owned));
            assert_eq!(schema[archive], want, "{backend}: {archive} against {live}");
        }
    }
}
