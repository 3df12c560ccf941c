//! The admin log on both backends: one entry per hold, release and soft
//! delete, written with the change or not at all; entries cannot be changed
//! or removed by SQL; filters, bounded pages and paging that stays stable
//! while entries are appended.

use std::sync::Arc;

use remaudit_store::{
    Actor, AdminAction, AdminLogQuery, DeleteOutcome, ListQuery, NewAdminEntry, Store,
};
use remaudit_testkit::{at, record};
use serde_json::json;

/// Plain SQL on the store's database, behind its back.
enum Sql {
    Pg(sqlx::PgPool),
    Lite(sqlx::SqlitePool),
}

impl Sql {
    async fn execute(&self, sql: &str) -> Result<u64, String> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self {
            Self::Pg(pool) => sqlx::query(sql)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()),
            Self::Lite(pool) => sqlx::query(sql)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()),
        }
        .map_err(|e| e.to_string())
    }

    async fn count(&self, sql: &str) -> i64 {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self {
            Self::Pg(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
            Self::Lite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
        }
        .expect("count")
    }
}

macro_rules! both {
    ($($case:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    let db = remaudit_testkit::PgDb::create().await;
                    let store = db.store().await;
                    super::$case(store, super::Sql::Pg(db.pool().await)).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    let db = remaudit_testkit::SqliteDb::create();
                    let store = db.store().await;
                    let pool = sqlx::SqlitePool::connect(&db.url()).await.expect("connect");
                    super::$case(store, super::Sql::Lite(pool)).await;
                }
            )*
        }
    };
}

both!(
    each_action_leaves_one_entry_with_the_change,
    actions_that_change_nothing_leave_no_entry,
    an_entry_that_cannot_be_written_undoes_its_change,
    entries_cannot_be_changed_or_removed_by_sql,
    pages_are_bounded_filtered_and_stable,
);

/// Two remediations; their ids, oldest start first.
async fn two_rows(store: &dyn Store) -> (i64, i64) {
    for name in ["rr-one", "rr-two"] {
        store
            .insert(&[record(json!({
                "alert_fingerprint": "fp-admin", "remediation_name": name,
                "overall_phase": "completed", "start_time": at(if name == "rr-one" { 0 } else { 5 }),
            }))])
            .await
            .expect("insert");
    }
    let page = store
        .list(&ListQuery {
            limit: 10,
            ..ListQuery::default()
        })
        .await
        .expect("list");
    let id = |name: &str| {
        page.items
            .iter()
            .find(|r| r.remediation_name == name)
            .map(|r| r.id)
            .expect("listed")
    };
    (id("rr-one"), id("rr-two"))
}

fn ops(reason: &str) -> Actor {
    Actor::new("ops", reason)
}

async fn each_action_leaves_one_entry_with_the_change(store: Arc<dyn Store>, sql: Sql) {
    let (one, two) = two_rows(store.as_ref()).await;
    let held = store
        .set_legal_hold(one, true, &ops("litigation"))
        .await
        .expect("hold")
        .expect("a row");
    assert!(held.legal_hold);
    store
        .set_legal_hold(one, false, &Actor::new("lawyer", "released"))
        .await
        .expect("release")
        .expect("a row");
    let DeleteOutcome::Deleted(gone) = store
        .soft_delete(two, at(30), &ops("test data"))
        .await
        .expect("delete")
    else {
        panic!("not deleted");
    };
    assert_eq!(gone.id, two);

    let log = store
        .admin_log(&AdminLogQuery::default())
        .await
        .expect("log");
    let got: Vec<_> = log
        .items
        .iter()
        .map(|e| (e.action, e.target, e.subject.as_str(), e.reason.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (AdminAction::Delete, Some(two), "ops", "test data"),
            (AdminAction::Release, Some(one), "lawyer", "released"),
            (AdminAction::Hold, Some(one), "ops", "litigation"),
        ]
    );
    assert_eq!(log.items[0].detail["remediation_name"], "rr-two");
    assert_eq!(log.items[0].detail["alert_fingerprint"], "fp-admin");
    assert!(log.items.windows(2).all(|w| w[0].at >= w[1].at));
    assert_eq!(log.next, None);
    assert_eq!(
        sql.count("SELECT count(*) FROM remaudit_admin_log").await,
        3
    );
}

async fn actions_that_change_nothing_leave_no_entry(store: Arc<dyn Store>, sql: Sql) {
    let (one, _) = two_rows(store.as_ref()).await;
    assert!(
        store
            .set_legal_hold(4242, true, &ops("no such row"))
            .await
            .expect("hold")
            .is_none()
    );
    assert_eq!(
        store
            .soft_delete(4242, at(30), &ops("no such row"))
            .await
            .expect("delete"),
        DeleteOutcome::NotFound
    );
    store
        .set_legal_hold(one, true, &ops("hold"))
        .await
        .expect("hold");
    assert_eq!(
        store
            .soft_delete(one, at(30), &ops("refused"))
            .await
            .expect("delete"),
        DeleteOutcome::Held
    );
    let entries: Vec<_> = store
        .admin_log(&AdminLogQuery::default())
        .await
        .expect("log")
        .items
        .into_iter()
        .map(|e| (e.action, e.reason))
        .collect();
    assert_eq!(entries, [(AdminAction::Hold, "hold".to_owned())]);
    assert_eq!(
        sql.count("SELECT count(*) FROM remaudit_admin_log").await,
        1
    );
}

/// The database refuses an empty reason; the change it came with is undone.
async fn an_entry_that_cannot_be_written_undoes_its_change(store: Arc<dyn Store>, sql: Sql) {
    let (one, two) = two_rows(store.as_ref()).await;
    store
        .set_legal_hold(one, true, &ops(""))
        .await
        .expect_err("an empty reason is refused");
    store
        .soft_delete(two, at(30), &Actor::new("", "no subject"))
        .await
        .expect_err("an empty subject is refused");
    assert_eq!(
        sql.count(
            "SELECT count(*) FROM remediation_audit WHERE legal_hold OR deleted_at IS NOT NULL"
        )
        .await,
        0,
        "neither change stayed"
    );
    assert_eq!(
        sql.count("SELECT count(*) FROM remaudit_admin_log").await,
        0
    );
    let listed = store
        .list(&ListQuery {
            limit: 10,
            ..ListQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(listed.items.len(), 2, "the deleted row is still listed");
}

async fn entries_cannot_be_changed_or_removed_by_sql(store: Arc<dyn Store>, sql: Sql) {
    let (one, _) = two_rows(store.as_ref()).await;
    store
        .set_legal_hold(one, true, &ops("kept"))
        .await
        .expect("hold");
    let mut statements = vec![
        "UPDATE remaudit_admin_log SET reason = 'rewritten'",
        "UPDATE remaudit_admin_log SET subject = 'someone else' WHERE id > 0",
        "DELETE FROM remaudit_admin_log",
        "DELETE FROM remaudit_admin_log WHERE reason = 'kept'",
    ];
    if let Sql::Pg(_) = sql {
        statements.push("TRUNCATE remaudit_admin_log");
    }
    for statement in statements {
        let err = sql.execute(statement).await.expect_err(statement);
        assert!(err.contains("append-only"), "{statement}: {err}");
    }
    let log = store
        .admin_log(&AdminLogQuery::default())
        .await
        .expect("log");
    assert_eq!(log.items.len(), 1);
    assert_eq!(
        (log.items[0].subject.as_str(), log.items[0].reason.as_str()),
        ("ops", "kept")
    );
}

async fn pages_are_bounded_filtered_and_stable(store: Arc<dyn Store>, _sql: Sql) {
    let run = |n: u64, subject: &str| NewAdminEntry {
        actor: Actor::new(subject, "scheduled"),
        action: AdminAction::RetentionRun,
        target: None,
        detail: json!({ "run": n }),
    };
    let mut ids = Vec::new();
    for n in 0_u64..17 {
        let subject = if n.is_multiple_of(3) {
            "cli"
        } else {
            "retention"
        };
        let entry = store
            .record_admin_action(&run(n, subject))
            .await
            .expect("record");
        assert_eq!(entry.detail, json!({ "run": n }));
        ids.push(entry.id);
    }
    ids.reverse();

    // Page by 4, appending an entry after each page: the pages hold exactly
    // the entries there were, newest first, once each.
    let mut seen = Vec::new();
    let mut query = AdminLogQuery {
        limit: 4,
        ..AdminLogQuery::default()
    };
    let mut extra = 100;
    loop {
        let page = store.admin_log(&query).await.expect("page");
        assert!(page.items.len() <= 4);
        seen.extend(page.items.iter().map(|e| e.id));
        store
            .record_admin_action(&run(extra, "retention"))
            .await
            .expect("record");
        extra += 1;
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ids);

    let count = |query: AdminLogQuery| {
        let store = Arc::clone(&store);
        async move {
            store
                .admin_log(&AdminLogQuery {
                    limit: 1000,
                    ..query
                })
                .await
                .expect("log")
                .items
                .len()
        }
    };
    assert_eq!(
        count(AdminLogQuery {
            subject: Some("cli".into()),
            ..AdminLogQuery::default()
        })
        .await,
        6
    );
    assert_eq!(
        count(AdminLogQuery {
            action: Some(AdminAction::Hold),
            ..AdminLogQuery::default()
        })
        .await,
        0
    );
    let newest = store
        .admin_log(&AdminLogQuery {
            limit: 1,
            ..AdminLogQuery::default()
        })
        .await
        .expect("newest")
        .items
        .remove(0);
    // `since` and `until` split the log at an instant, each entry on one side.
    let from_newest = count(AdminLogQuery {
        since: Some(newest.at),
        ..AdminLogQuery::default()
    })
    .await;
    let before_newest = count(AdminLogQuery {
        until: Some(newest.at),
        ..AdminLogQuery::default()
    })
    .await;
    assert!(from_newest >= 1);
    assert_eq!(
        from_newest + before_newest,
        usize::try_from(17 + (extra - 100)).expect("small")
    );
    // A page is never larger than the bound, whatever is asked.
    let all = 17 + (extra - 100);
    assert!(all > 20);
    let huge = store
        .admin_log(&AdminLogQuery {
            limit: u32::MAX,
            ..AdminLogQuery::default()
        })
        .await
        .expect("log");
    assert_eq!(huge.items.len(), usize::try_from(all).expect("small"));
    assert_eq!(huge.next, None);
}
