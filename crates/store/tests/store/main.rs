//! The store conformance suite: every case runs against PostgreSQL and SQLite.

mod cases;

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
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    let db = remaudit_testkit::SqliteDb::create();
                    crate::cases::$case(db.store().await).await;
                }
            )*
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
);
