//! The store conformance suite: every case runs against PostgreSQL and SQLite.

mod admin_log;
mod analytics;
mod cases;
mod chain;
mod phase_rule;
mod projection;
mod race;
mod schema;
mod upgrade;
mod weeks;

/// Generates one test per case and backend.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    let db = remaudit_testkit::PgDb::create().await;
                    crate::cases::$case(db.store().await).await;
                }
            )*
            #[tokio::test]
            async fn analytics_answers_match_the_generated_truth() {
                let db = remaudit_testkit::PgDb::create().await;
                crate::analytics::analytics_answers_match_the_generated_truth(db.store().await).await;
            }
            #[tokio::test]
            async fn analytics_of_an_empty_store_are_empty() {
                let db = remaudit_testkit::PgDb::create().await;
                crate::analytics::analytics_of_an_empty_store_are_empty(db.store().await).await;
            }
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    let db = remaudit_testkit::SqliteDb::create();
                    crate::cases::$case(db.store().await).await;
                }
            )*
            #[tokio::test]
            async fn analytics_answers_match_the_generated_truth() {
                let db = remaudit_testkit::SqliteDb::create();
                crate::analytics::analytics_answers_match_the_generated_truth(db.store().await).await;
            }
            #[tokio::test]
            async fn analytics_of_an_empty_store_are_empty() {
                let db = remaudit_testkit::SqliteDb::create();
                crate::analytics::analytics_of_an_empty_store_are_empty(db.store().await).await;
            }
        }
    };
}

conformance!(
    stores_a_remediation_and_its_timeline,
    replays_are_stored_once,
    shuffled_transitions_end_in_the_in_order_summary,
    terminal_phase_is_final,
    duplicate_counts_only_grow,
    unknown_phase_is_kept_as_in_progress,
    filters_select_the_matching_rows,
    keyset_pagination_visits_every_row_once,
    sql_metacharacters_are_stored_verbatim,
    fresh_store_is_ready,
    same_key_with_other_content_is_a_conflict,
    unknown_fields_are_not_stored,
    events_past_the_cap_are_refused,
    concurrent_batches_do_not_overshoot_the_cap,
    timeline_pages_visit_every_event_once_in_order,
    large_events_page_without_one_huge_answer,
    every_field_is_stored_and_read_back,
);

/// Checks that only PostgreSQL's rollups need.
mod rollups {
    use remaudit_model::histogram::duration_bin;
    use remaudit_testkit::{PgDb, SqliteDb, text_rows};
    use serde_json::Value;

    use crate::analytics::{generate, load, questions};

    /// Every rollup (and the alert keys), in a stable order.
    pub(crate) const ROLLUPS: [&str; 5] = [
        "SELECT * FROM remediation_alert_keys ORDER BY 1",
        "SELECT * FROM remediation_rollup_outcomes ORDER BY 1, 2, 3",
        "SELECT * FROM remediation_rollup_durations ORDER BY 1, 2, 3, 4, 5",
        "SELECT * FROM remediation_rollup_alerts ORDER BY 1, 2, 3, 4",
        "SELECT * FROM remediation_rollup_failures ORDER BY 1, 2, 3, 4, 5, 6",
    ];

    /// Asserts that every rollup equals what `remaudit_rebuild_rollups()`
    /// makes from the rows: nothing was counted twice or missed.
    pub(crate) async fn assert_rollups_equal_a_rebuild(pool: &sqlx::PgPool) {
        let mut kept = Vec::new();
        for sql in ROLLUPS {
            kept.push(text_rows(pool, sql).await);
        }
        text_rows(pool, "SELECT remaudit_rebuild_rollups()").await;
        for (sql, before) in ROLLUPS.iter().zip(kept) {
            assert_eq!(text_rows(pool, sql).await, before, "{sql}");
        }
    }

    #[tokio::test]
    async fn rollups_kept_on_write_equal_a_rebuild_from_the_rows() {
        let db = PgDb::create().await;
        let store = db.store().await;
        load(&*store, &generate(5, 700)).await;
        store.settle().await.expect("settle");
        let pool = db.pool().await;
        let mut kept = Vec::new();
        for sql in ROLLUPS {
            let rows = text_rows(&pool, sql).await;
            assert!(!rows.is_empty(), "{sql} is empty");
            kept.push(rows);
        }
        text_rows(&pool, "SELECT remaudit_rebuild_rollups()").await;
        for (sql, before) in ROLLUPS.iter().zip(kept) {
            assert_eq!(text_rows(&pool, sql).await, before, "{sql}");
        }
    }

    #[tokio::test]
    async fn soft_deletes_leave_the_rollups_equal_to_a_rebuild_without_them() {
        let db = PgDb::create().await;
        let store = db.store().await;
        load(&*store, &generate(5, 700)).await;
        let pool = db.pool().await;
        // One row of each outcome, running ones too, and the last of its group.
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT DISTINCT ON (overall_phase, phase_rank = 9) id FROM remediation_audit \
             ORDER BY overall_phase, phase_rank = 9, id",
        )
        .fetch_all(&pool)
        .await
        .expect("ids");
        assert!(ids.len() >= 4, "{ids:?}");
        for &id in &ids {
            let outcome = store
                .soft_delete(
                    id,
                    chrono::Utc::now(),
                    &remaudit_store::Actor::new("ops", "test"),
                )
                .await
                .expect("delete");
            assert!(
                matches!(outcome, remaudit_store::DeleteOutcome::Deleted(_)),
                "{id}"
            );
        }
        assert_rollups_equal_a_rebuild(&pool).await;
    }

    #[tokio::test]
    async fn the_sql_bin_function_agrees_with_the_model() {
        let db = PgDb::create().await;
        let _migrated = db.store().await;
        let pool = db.pool().await;
        let mut micros: Vec<i64> = vec![0, 999, 1_000, 1_001, 1_000_000, 3_600_000_000];
        let mut x = 1_000.0_f64;
        while x < 1e13 {
            #[allow(
                clippy::cast_possible_truncation,
                reason = "x stays below 1e13, well inside i64"
            )]
            let whole = x as i64;
            micros.extend([whole - 1, whole, whole + 1]);
            x *= 1.003_7;
        }
        let list = micros
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let rows = text_rows(&pool, &format!("SELECT remaudit_duration_bin(m) FROM unnest(ARRAY[{list}]::int8[]) WITH ORDINALITY AS t(m, o) ORDER BY o")).await;
        for (m, row) in micros.iter().zip(rows) {
            assert_eq!(
                row[0].as_deref(),
                Some(duration_bin(*m).to_string().as_str()),
                "{m} µs"
            );
        }
    }

    /// Everything but the source, which differs by design.
    fn essence<T: serde::Serialize>(report: &T) -> Value {
        let mut v = serde_json::to_value(report).expect("json");
        v["query"]["source"] = Value::Null;
        v
    }

    /// Equal, but for the last bits of floating point: exact percentiles are
    /// computed by PostgreSQL on one side and in Rust on the other.
    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => {
                let (x, y) = (
                    x.as_f64().unwrap_or(f64::NAN),
                    y.as_f64().unwrap_or(f64::NAN),
                );
                (x - y).abs() <= 1e-12 * x.abs().max(y.abs()).max(1.0)
            }
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
            }
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
            }
            _ => a == b,
        }
    }

    #[tokio::test]
    async fn both_backends_give_the_same_answers() {
        let truths = generate(9, 800);
        let (pg, lite) = (PgDb::create().await, SqliteDb::create());
        let (pg, lite) = (pg.store().await, lite.store().await);
        load(&*pg, &truths).await;
        load(&*lite, &truths).await;
        for q in questions(&truths) {
            let ids_free = |mut v: Value| {
                for item in v["items"].as_array_mut().into_iter().flatten() {
                    item["id"] = Value::Null;
                    item["timeline"] = Value::Null;
                }
                v
            };
            assert!(
                same(
                    &essence(&pg.success_rate(&q).await.unwrap()),
                    &essence(&lite.success_rate(&q).await.unwrap())
                ),
                "{q:?}"
            );
            assert!(
                same(
                    &essence(&pg.durations(&q).await.unwrap()),
                    &essence(&lite.durations(&q).await.unwrap())
                ),
                "{q:?}"
            );
            assert!(
                same(
                    &ids_free(essence(&pg.slowest(&q).await.unwrap())),
                    &ids_free(essence(&lite.slowest(&q).await.unwrap()))
                ),
                "{q:?}"
            );
            assert!(
                same(
                    &essence(&pg.failures(&q).await.unwrap()),
                    &essence(&lite.failures(&q).await.unwrap())
                ),
                "{q:?}"
            );
            assert!(
                same(
                    &essence(&pg.retries(&q).await.unwrap()),
                    &essence(&lite.retries(&q).await.unwrap())
                ),
                "{q:?}"
            );
        }
    }

    #[tokio::test]
    async fn rollup_percentiles_are_within_the_stated_error_of_percentile_cont() {
        use remaudit_model::analytics::Window;
        use remaudit_model::histogram::RELATIVE_ERROR;
        let truths = generate(11, 900);
        let db = PgDb::create().await;
        let store = db.store().await;
        load(&*store, &truths).await;
        let mut compared = 0;
        for q in questions(&truths) {
            let approx = store.durations(&q).await.expect("rollup");
            if approx.query.source != "rollup" {
                continue;
            }
            let exact_window = Window::new(q.window.since, q.window.until, true).expect("window");
            let exact = store
                .durations(&remaudit_store::AnalyticsQuery {
                    window: exact_window,
                    ..q.clone()
                })
                .await
                .expect("exact");
            assert_eq!(exact.query.source, "rows");
            assert_eq!(approx.phases.len(), exact.phases.len());
            for (a, e) in approx.phases.iter().zip(&exact.phases) {
                assert_eq!((&a.final_phase, a.count), (&e.final_phase, e.count));
                assert!((a.avg_seconds - e.avg_seconds).abs() <= 1e-9 * e.avg_seconds);
                for (x, y) in [
                    (a.p50_seconds, e.p50_seconds),
                    (a.p95_seconds, e.p95_seconds),
                    (a.p99_seconds, e.p99_seconds),
                ] {
                    assert!(
                        (x - y).abs() <= RELATIVE_ERROR * y * (1.0 + 1e-9),
                        "{}: {x} vs PERCENTILE_CONT {y}",
                        a.final_phase
                    );
                }
                compared += 1;
            }
        }
        assert!(compared >= 8, "rollups answered {compared} phase figures");
    }
}
