//! The warm and cold tiers on real PostgreSQL: weekly partitions, with their
//! indexes, moved into real tablespaces as their weeks age, never waiting on
//! a locked week, and refused when a tablespace does not exist.

use chrono::{NaiveDate, NaiveTime, TimeDelta};
use remaudit_retention::{Archive, Settings};
use remaudit_store::{COLD_AFTER_DAYS, Tiers, WARM_AFTER_DAYS};
use remaudit_testkit::PgDb;
use remaudit_testkit::history::load;
use sqlx::Connection as _;

use super::{live_rows, now, ops};

/// A role that may create tablespaces: the local server's superuser.
fn superuser_url() -> String {
    std::env::var("REMAUDIT_TEST_SUPERUSER_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A tablespace in a directory of its own, owned by the test role.
struct Tablespace {
    name: String,
    _dir: tempfile::TempDir,
}

impl Tablespace {
    async fn create(tier: &str) -> Self {
        let dir = tempfile::tempdir().expect("dir");
        // The server writes the tablespace's files as its own OS user.
        let chown = std::process::Command::new("chown")
            .args(["postgres:postgres"])
            .arg(dir.path())
            .status()
            .expect("run chown");
        assert!(chown.success(), "chown the tablespace directory");
        let name = format!(
            "remaudit_test_{tier}_{}_{}",
            std::process::id(),
            rand_suffix()
        );
        let mut admin = sqlx::PgConnection::connect(&superuser_url())
            .await
            .expect("connect as the superuser (REMAUDIT_TEST_SUPERUSER_URL)");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TABLESPACE {name} OWNER remaudit LOCATION '{}'",
            dir.path().display()
        )))
        .execute(&mut admin)
        .await
        .expect("create tablespace");
        Self { name, _dir: dir }
    }
}

impl Drop for Tablespace {
    /// Drops the tablespace (after the test's database, declared after it,
    /// is gone), also when the test fails.
    fn drop(&mut self) {
        remaudit_testkit::execute_now(superuser_url(), format!("DROP TABLESPACE {}", self.name));
    }
}

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Every weekly partition of the four audit tables and each of their
/// indexes: (week, name, tablespace or empty for the default).
async fn placements(pool: &sqlx::PgPool) -> Vec<(NaiveDate, String, String)> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "WITH parts AS (SELECT c.oid, c.relname::text AS owner FROM pg_inherits i \
           JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent \
           WHERE p.relname IN ('remediation_audit', 'remediation_audit_archive', \
             'remediation_audit_events', 'remediation_audit_events_archive') \
             AND c.relname ~ '_w[0-9]{8}$') \
         SELECT owner, owner, COALESCE(t.spcname::text, '') FROM parts \
           JOIN pg_class c ON c.oid = parts.oid LEFT JOIN pg_tablespace t ON t.oid = c.reltablespace \
         UNION ALL SELECT owner, ic.relname::text, COALESCE(t.spcname::text, '') FROM parts \
           JOIN pg_index x ON x.indrelid = parts.oid JOIN pg_class ic ON ic.oid = x.indexrelid \
           LEFT JOIN pg_tablespace t ON t.oid = ic.reltablespace",
    )
    .fetch_all(pool)
    .await
    .expect("placements");
    rows.into_iter()
        .map(|(owner, name, space)| {
            let digits = owner.rsplit_once("_w").expect("weekly").1;
            let week = NaiveDate::parse_from_str(digits, "%Y%m%d").expect("week");
            (week, name, space)
        })
        .collect()
}

#[tokio::test]
async fn postgres_weeks_move_to_the_warm_and_cold_tablespaces_as_they_age() {
    // Made first, so that they are dropped after the database.
    let (warm, cold) = (
        Tablespace::create("warm").await,
        Tablespace::create("cold").await,
    );
    let db = PgDb::create().await;
    let store = db.store().await;
    let pool = db.pool().await;
    load(store.as_ref(), now()).await;
    let dir = tempfile::tempdir().expect("dir");
    let archive = Archive::open(&format!("file://{}", dir.path().display())).expect("archive");
    let settings = Settings {
        tiers: Tiers {
            warm: Some(warm.name.clone()),
            cold: Some(cold.name.clone()),
        },
        ..Settings::default()
    };
    let live_before = live_rows(store.as_ref()).await.len();
    let report =
        remaudit_retention::run_once(store.as_ref(), &archive, &settings, now(), false, &ops())
            .await
            .expect("run");
    assert!(report.tiers.busy.is_empty(), "{:?}", report.tiers);

    // Each week's tables and indexes are where its age puts them.
    let expected = |week: NaiveDate| {
        let end = week.and_time(NaiveTime::MIN).and_utc() + TimeDelta::days(7);
        let age = now() - end;
        if age >= TimeDelta::days(COLD_AFTER_DAYS) {
            cold.name.clone()
        } else if age >= TimeDelta::days(WARM_AFTER_DAYS) {
            warm.name.clone()
        } else {
            String::new()
        }
    };
    let placed = placements(&pool).await;
    for (week, name, space) in &placed {
        assert_eq!(space, &expected(*week), "{name} of the week of {week}");
    }
    let count = |space: &str| placed.iter().filter(|(_, _, s)| s == space).count();
    assert!(
        count(&warm.name) > 0 && count(&cold.name) > 0 && count("") > 0,
        "every tier holds weeks: {} warm, {} cold, {} default",
        count(&warm.name),
        count(&cold.name),
        count("")
    );
    let moved_weeks: std::collections::BTreeSet<NaiveDate> =
        report.tiers.moved.iter().map(|(w, _)| *w).collect();
    assert_eq!(
        moved_weeks,
        placed
            .iter()
            .filter(|(_, _, s)| !s.is_empty())
            .map(|(w, _, _)| *w)
            .collect(),
        "the report names every week it moved"
    );
    // Every live row still reads, through the store.
    let live_after = live_rows(store.as_ref()).await.len();
    assert!(
        live_after > 0 && live_after < live_before,
        "{live_after} of {live_before}"
    );

    // A second run finds nothing to move.
    let again =
        remaudit_retention::run_once(store.as_ref(), &archive, &settings, now(), false, &ops())
            .await
            .expect("run");
    assert!(again.tiers.moved.is_empty(), "{:?}", again.tiers);

    // A week whose table another transaction holds is left for the next run.
    let newest_warm = placed
        .iter()
        .filter(|(_, _, s)| *s == warm.name)
        .map(|(w, _, _)| *w)
        .max()
        .expect("a warm week");
    let week = newest_warm;
    let table = format!("remediation_audit_w{}", week.format("%Y%m%d"));
    assert!(placed.iter().any(|(_, name, _)| *name == table), "{table}");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER TABLE {table} SET TABLESPACE pg_default"
    )))
    .execute(&pool)
    .await
    .expect("move back");
    let mut reader = pool.begin().await.expect("begin");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "LOCK TABLE {table} IN ACCESS SHARE MODE"
    )))
    .execute(&mut *reader)
    .await
    .expect("lock");
    let blocked =
        remaudit_retention::run_once(store.as_ref(), &archive, &settings, now(), false, &ops())
            .await
            .expect("a run with a locked week still finishes");
    assert_eq!(blocked.tiers.busy, vec![week], "{:?}", blocked.tiers);
    reader.rollback().await.expect("release");
    let freed =
        remaudit_retention::run_once(store.as_ref(), &archive, &settings, now(), false, &ops())
            .await
            .expect("run");
    assert_eq!(freed.tiers.moved, vec![(week, warm.name.clone())]);

    // A tablespace that does not exist stops the run, naming it.
    let missing = Settings {
        tiers: Tiers {
            warm: Some("remaudit_no_such_space".to_owned()),
            cold: None,
        },
        ..Settings::default()
    };
    let err =
        remaudit_retention::run_once(store.as_ref(), &archive, &missing, now(), false, &ops())
            .await
            .expect_err("no such tablespace");
    assert!(err.to_string().contains("remaudit_no_such_space"), "{err}");

    store.close().await;
    pool.close().await;
}
