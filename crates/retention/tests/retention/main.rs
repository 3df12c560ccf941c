//! The retention job against real PostgreSQL and SQLite, with archive files
//! in a real directory: 120 days of remediations under a fixed clock.

mod chain;
mod tiers;
mod weeks;

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use remaudit_model::chain::{ChainKey, KeyRing};
use remaudit_retention::{Archive, ArchiveFormat, Settings};
use remaudit_store::{Actor, AdminAction, AdminLogQuery, InsertRules, ListQuery, Store};
use remaudit_testkit::history::{load, load_with};
use remaudit_testkit::{PgDb, SqliteDb};

/// The chain key the chained scenarios sign with.
///
/// # Panics
/// Never: the key id is valid.
#[must_use]
pub fn ring() -> Arc<KeyRing> {
    Arc::new(KeyRing::single(
        ChainKey::new("retention-test", [7; 32]).expect("key"),
    ))
}

/// Insert rules that sign and chain with [`ring`].
#[must_use]
pub fn chained() -> InsertRules {
    InsertRules {
        chain: Some(ring()),
        ..InsertRules::default()
    }
}

/// The run's clock: a Tuesday.
#[must_use]
pub fn now() -> DateTime<Utc> {
    remaudit_testkit::history::clock()
}

/// The operator of the scenario's admin actions.
#[must_use]
pub fn ops() -> Actor {
    Actor::new("ops", "retention scenario")
}

/// Every live summary row, through the store's reads.
///
/// # Panics
/// If a read fails (a test failure).
pub async fn live_rows(store: &dyn Store) -> Vec<remaudit_model::StoredAudit> {
    let mut rows = Vec::new();
    let mut query = ListQuery {
        limit: 1000,
        ..ListQuery::default()
    };
    loop {
        let page = store.list(&query).await.expect("list");
        rows.extend(page.items);
        match page.next {
            Some(next) => query.after = Some(next),
            None => return rows,
        }
    }
}

/// Counts by SQL that reads the same on both backends.
pub enum Counter {
    /// PostgreSQL.
    Pg(sqlx::PgPool),
    /// SQLite.
    Sqlite(sqlx::SqlitePool),
}

impl Counter {
    /// The single count `sql` selects.
    ///
    /// # Panics
    /// If the query fails (a test failure).
    pub async fn count(&self, sql: &str) -> i64 {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self {
            Self::Pg(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
            Self::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
        }
        .expect("count")
    }

    /// Runs `sql` behind the store's back; the rows it touched.
    ///
    /// # Panics
    /// If the statement fails (a test failure).
    pub async fn execute(&self, sql: &str) -> u64 {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self {
            Self::Pg(pool) => sqlx::query(sql)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()),
            Self::Sqlite(pool) => sqlx::query(sql)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()),
        }
        .expect("execute")
    }

    /// Archived remediations that still have a chain head (must be 0), and
    /// live remediations that have none (must be 0 when every write was
    /// chained).
    pub async fn misplaced_heads(&self) -> (i64, i64) {
        let same = "h.namespace = r.namespace AND h.remediation_name = r.remediation_name \
                    AND h.start_time = r.start_time";
        (
            self.count(&format!(
                "SELECT count(*) FROM remediation_chain_heads h WHERE EXISTS \
                 (SELECT 1 FROM remediation_audit_archive r WHERE {same})"
            ))
            .await,
            self.count(&format!(
                "SELECT count(*) FROM remediation_audit r WHERE NOT EXISTS \
                 (SELECT 1 FROM remediation_chain_heads h WHERE {same})"
            ))
            .await,
        )
    }

    /// (live summary rows, archived summary rows, live events, archived events).
    pub async fn places(&self) -> (i64, i64, i64, i64) {
        (
            self.count("SELECT count(*) FROM remediation_audit").await,
            self.count("SELECT count(*) FROM remediation_audit_archive")
                .await,
            self.count("SELECT count(*) FROM remediation_audit_events")
                .await,
            self.count("SELECT count(*) FROM remediation_audit_events_archive")
                .await,
        )
    }

    /// Rows in both a live and an archive table (must be 0).
    pub async fn doubled(&self) -> i64 {
        self.count(
            "SELECT (SELECT count(*) FROM remediation_audit r JOIN remediation_audit_archive a ON a.id = r.id) \
             + (SELECT count(*) FROM remediation_audit_events e JOIN remediation_audit_events_archive a ON a.id = e.id)",
        )
        .await
    }
}

/// The scenario on either backend: history, a hold, a soft delete, one run.
async fn scenario(
    store: Arc<dyn Store>,
    counter: Counter,
    exact: bool,
    partitioned: bool,
    format: ArchiveFormat,
) {
    let written = load_with(store.as_ref(), now(), &chained()).await;
    if partitioned {
        // As if the service had run all along, creating weeks ahead: the rows
        // that landed in the default partition move into their weeks.
        let created = store
            .ensure_partitions(now() - TimeDelta::days(130), now() + TimeDelta::days(35))
            .await
            .expect("partitions");
        assert!(created > 0);
        assert_eq!(
            counter
                .count("SELECT count(*) FROM remediation_audit_default")
                .await,
            0,
            "every generated row has a week"
        );
    }
    let rows = live_rows(store.as_ref()).await;
    assert_eq!(
        i64::try_from(rows.len()).expect("fits"),
        written.remediations
    );
    // Expiry is computed at write time: 90 days after completion, or after
    // the start when a terminal record has no completion; none while running.
    for row in &rows {
        let expected = match row.overall_phase.as_str() {
            "completed" | "failed" => row.completion_time.map(|t| t + TimeDelta::days(90)),
            "timeout" => Some(row.start_time + TimeDelta::days(90)),
            _ => None,
        };
        assert_eq!(
            row.retention_expiry_time, expected,
            "{}",
            row.remediation_name
        );
    }
    let held = rows
        .iter()
        .find(|r| r.overall_phase == "completed" && r.start_time < now() - TimeDelta::days(110))
        .expect("an old completed row");
    assert!(
        store
            .set_legal_hold(held.id, true, &ops())
            .await
            .expect("hold")
            .is_some()
    );
    let deleted = rows
        .iter()
        .find(|r| r.overall_phase == "failed" && r.start_time > now() - TimeDelta::days(10))
        .expect("a recent failed row");
    store
        .soft_delete(deleted.id, now(), &ops())
        .await
        .expect("soft delete");
    assert!(store.timeline(deleted.id).await.expect("read").is_none());

    let dir = tempfile::tempdir().expect("dir");
    let archive = Archive::open(&format!("file://{}", dir.path().display()))
        .expect("archive")
        .with_chain_keys(Some(ring()))
        .with_format(format);
    let settings = Settings {
        exact,
        batch_rows: 100,
        ..Settings::default()
    };
    let preview =
        remaudit_retention::run_once(store.as_ref(), &archive, &settings, now(), true, &ops())
            .await
            .expect("dry run");
    let previewed: u64 = preview.preview.iter().map(|d| d.remediations).sum();
    assert_eq!(
        counter.places().await.0,
        written.remediations,
        "a dry run moves nothing"
    );

    let report =
        remaudit_retention::run_once(store.as_ref(), &archive, &settings, now(), false, &ops())
            .await
            .expect("run");
    assert!(report.ran);
    assert_eq!(
        report.remediations(),
        previewed,
        "the dry run said what would move"
    );

    // Nothing is lost or doubled.
    let (live, archived, live_events, archived_events) = counter.places().await;
    assert_eq!(live + archived, written.remediations);
    assert_eq!(live_events + archived_events, written.events);
    assert_eq!(counter.doubled().await, 0);
    assert_eq!(
        u64::try_from(archived).expect("a count"),
        report.remediations()
    );
    assert_eq!(
        u64::try_from(archived_events).expect("a count"),
        report.events()
    );

    // What is left live: rows not due, the held row, and (when whole weeks
    // are the unit) due rows of a week whose end is not yet 90 days old.
    let left = live_rows(store.as_ref()).await;
    for row in &left {
        let due = row.retention_expiry_time.is_some_and(|t| t <= now());
        if due && !row.legal_hold {
            assert!(!exact, "exact runs leave nothing due: {row:?}");
            let week_start = row
                .start_time
                .date_naive()
                .week(chrono::Weekday::Mon)
                .first_day();
            let week_end =
                week_start.and_hms_opt(0, 0, 0).expect("midnight").and_utc() + TimeDelta::days(7);
            assert!(
                week_end + TimeDelta::days(90) > now(),
                "a due week was left: {row:?}"
            );
        }
    }
    assert!(
        left.iter().any(|r| r.id == held.id && r.legal_hold),
        "the held row stays"
    );
    assert!(
        left.iter().all(|r| r.id != deleted.id),
        "the soft-deleted row is gone"
    );
    assert_eq!(
        counter
            .count(&format!("SELECT count(*) FROM remediation_audit_archive WHERE id = {} AND deleted_at IS NOT NULL", deleted.id))
            .await,
        1,
        "the soft-deleted row is archived, marked deleted"
    );
    let unfinished_old = left
        .iter()
        .filter(|r| r.overall_phase == "executing" && r.start_time < now() - TimeDelta::days(100))
        .count();
    assert!(
        unfinished_old >= 19,
        "unfinished rows stay: {unfinished_old}"
    );

    // The chain heads left with their remediations, in the same commit.
    assert_eq!(counter.misplaced_heads().await, (0, 0));

    // Every archived row is in a file whose checksum matches, under a
    // signed manifest, and each archived chain is whole up to its head.
    let (first, last) = remaudit_retention::all_time();
    let verified = remaudit_retention::verify(store.as_ref(), &archive, first, last, Some(&ring()))
        .await
        .expect("verify");
    assert!(verified.ok(), "{:?}", verified.problems);
    assert_eq!(verified.remediations, report.remediations());
    assert_eq!(verified.events, report.events());
    assert_eq!(verified.chains, report.remediations());
    assert_eq!(verified.links_verified, report.events());
    assert_eq!(verified.unchained, 0);

    // A second run finds nothing to do, and the hold survives it.
    let again =
        remaudit_retention::run_once(store.as_ref(), &archive, &settings, now(), false, &ops())
            .await
            .expect("second run");
    assert_eq!(again.remediations(), 0);
    let held_now = store
        .timeline(held.id)
        .await
        .expect("read")
        .expect("held row");
    assert!(held_now.remediation.legal_hold);
    assert!(!held_now.events.is_empty(), "its events stay too");

    // Cleared, the hold lets the row go at the next run.
    store
        .set_legal_hold(held.id, false, &ops())
        .await
        .expect("clear");
    if partitioned {
        // Its week made again (a backfill would): the rows kept from the
        // retired week move into it, and the next run archives this week a
        // second time, by copying, since the archive already has the week.
        store
            .ensure_partitions(now() - TimeDelta::days(130), now() + TimeDelta::days(35))
            .await
            .expect("partitions again");
    }
    let third =
        remaudit_retention::run_once(store.as_ref(), &archive, &settings, now(), false, &ops())
            .await
            .expect("third run");
    assert_eq!(third.remediations(), 1);
    assert!(store.timeline(held.id).await.expect("read").is_none());
    let (live, archived, live_events, archived_events) = counter.places().await;
    assert_eq!(live + archived, written.remediations);
    assert_eq!(live_events + archived_events, written.events);
    assert_eq!(counter.doubled().await, 0);
    assert_eq!(counter.misplaced_heads().await, (0, 0));
    let verified = remaudit_retention::verify(store.as_ref(), &archive, first, last, Some(&ring()))
        .await
        .expect("verify");
    assert!(verified.ok(), "{:?}", verified.problems);
    assert_eq!(verified.links_verified, verified.events);

    // The admin log has each action once, newest first: the hold, the
    // delete, three runs (not the dry run) with what each moved, the release.
    let log = store
        .admin_log(&AdminLogQuery::default())
        .await
        .expect("admin log");
    let actions: Vec<(AdminAction, Option<i64>)> = log
        .items
        .iter()
        .rev()
        .map(|e| (e.action, e.target))
        .collect();
    assert_eq!(
        actions,
        [
            (AdminAction::Hold, Some(held.id)),
            (AdminAction::Delete, Some(deleted.id)),
            (AdminAction::RetentionRun, None),
            (AdminAction::RetentionRun, None),
            (AdminAction::Release, Some(held.id)),
            (AdminAction::RetentionRun, None),
        ]
    );
    assert!(
        log.items
            .iter()
            .all(|e| e.subject == "ops" && e.reason == "retention scenario")
    );
    let moved: Vec<u64> = log
        .items
        .iter()
        .rev()
        .filter(|e| e.action == AdminAction::RetentionRun)
        .map(|e| {
            assert_eq!(e.detail["outcome"], "ok", "{e:?}");
            e.detail["remediations"].as_u64().expect("a count")
        })
        .collect();
    assert_eq!(moved, [report.remediations(), 0, 1]);
}

#[tokio::test]
async fn postgres_whole_weeks_leave_and_nothing_is_lost() {
    let db = PgDb::create().await;
    scenario(
        db.store().await,
        Counter::Pg(db.pool().await),
        false,
        true,
        ArchiveFormat::Parquet,
    )
    .await;
    let pool = db.pool().await;
    let weeks: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'remediation_audit'::regclass \
         AND inhrelid::regclass::text ~ '_w[0-9]{8}$' AND inhrelid::regclass::text < 'remediation_audit_w20260601'",
    )
    .fetch_one(&pool)
    .await
    .expect("weeks");
    assert_eq!(
        weeks, 0,
        "every week that ended 90 days before the clock is dropped"
    );
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM remediation_audit_default")
        .fetch_one(&pool)
        .await
        .expect("default");
    assert!(
        kept > 0,
        "unfinished rows of dropped weeks live on in the default partition"
    );
}

#[tokio::test]
async fn postgres_exact_runs_leave_nothing_older_than_the_policy() {
    let db = PgDb::create().await;
    scenario(
        db.store().await,
        Counter::Pg(db.pool().await),
        true,
        true,
        ArchiveFormat::Parquet,
    )
    .await;
}

#[tokio::test]
async fn postgres_rows_outside_every_partition_are_retired_row_by_row() {
    let db = PgDb::create().await;
    scenario(
        db.store().await,
        Counter::Pg(db.pool().await),
        false,
        false,
        ArchiveFormat::Parquet,
    )
    .await;
}

#[tokio::test]
async fn sqlite_rows_are_retired_row_by_row_and_nothing_is_lost() {
    let db = SqliteDb::create();
    let store = db.store().await;
    let pool = sqlx::SqlitePool::connect(&db.url()).await.expect("pool");
    scenario(
        store,
        Counter::Sqlite(pool),
        true,
        false,
        ArchiveFormat::Parquet,
    )
    .await;
}

#[tokio::test]
async fn sqlite_rows_retired_as_json_lines_verify_as_before() {
    let db = SqliteDb::create();
    let store = db.store().await;
    let pool = sqlx::SqlitePool::connect(&db.url()).await.expect("pool");
    scenario(
        store,
        Counter::Sqlite(pool),
        true,
        false,
        ArchiveFormat::Jsonl,
    )
    .await;
}

#[tokio::test]
async fn postgres_whole_weeks_retired_as_json_lines_verify_as_before() {
    let db = PgDb::create().await;
    scenario(
        db.store().await,
        Counter::Pg(db.pool().await),
        false,
        true,
        ArchiveFormat::Jsonl,
    )
    .await;
}

/// A local object store that interferes with the first archive file this
/// process claims: another writer takes its name just before (`plant`, as a
/// second database writing the same names would), or the write waits until
/// the test releases it (`hold`), so that a batch stays in flight.
#[derive(Debug, Default)]
struct Contended {
    inner: Option<Arc<dyn object_store::ObjectStore>>,
    plant: bool,
    planted: std::sync::Mutex<Option<object_store::path::Path>>,
    hold: Option<Hold>,
}

/// The two sides of a held write.
#[derive(Debug, Default)]
struct Hold {
    /// Told when the write has begun waiting.
    started: tokio::sync::Notify,
    /// Lets the write go on.
    release: tokio::sync::Notify,
}

impl Contended {
    fn planting(inner: Arc<dyn object_store::ObjectStore>) -> Self {
        Self {
            inner: Some(inner),
            plant: true,
            ..Self::default()
        }
    }

    fn holding(inner: Arc<dyn object_store::ObjectStore>) -> Self {
        Self {
            inner: Some(inner),
            hold: Some(Hold::default()),
            ..Self::default()
        }
    }

    /// The name the other writer took (or the write held).
    fn planted(&self) -> object_store::path::Path {
        self.planted
            .lock()
            .expect("lock")
            .clone()
            .expect("a name was taken")
    }

    fn inner(&self) -> &dyn object_store::ObjectStore {
        self.inner.as_deref().expect("an inner store")
    }
}

/// The other writer's bytes.
const THEIRS: &[u8] = b"another writer's file";

/// A temporary archive directory: the directory, an object store over it,
/// and its `file://` URL.
fn local_archive() -> (
    tempfile::TempDir,
    Arc<dyn object_store::ObjectStore>,
    String,
) {
    let dir = tempfile::tempdir().expect("dir");
    let local: Arc<dyn object_store::ObjectStore> = Arc::new(
        object_store::local::LocalFileSystem::new_with_prefix(dir.path()).expect("local store"),
    );
    let url = format!("file://{}", dir.path().display());
    (dir, local, url)
}

/// The bytes of the object at `path`, which must be there.
async fn theirs(
    local: Arc<dyn object_store::ObjectStore>,
    path: object_store::path::Path,
) -> bytes::Bytes {
    object_store::ObjectStoreExt::get(local.as_ref(), &path)
        .await
        .expect("still there")
        .bytes()
        .await
        .expect("read")
}

impl std::fmt::Display for Contended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Contended({})", self.inner())
    }
}

#[async_trait::async_trait]
impl object_store::ObjectStore for Contended {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: object_store::PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        let first = opts.mode == object_store::PutMode::Create
            && (location.as_ref().ends_with("/remediation_audit.jsonl.gz")
                || (location.as_ref().contains("/table=remediation_audit/")
                    && location.as_ref().ends_with("/part-0.parquet")))
            && self.planted.lock().expect("lock").is_none();
        if first {
            if self.plant {
                object_store::ObjectStoreExt::put(self.inner(), location, THEIRS.into()).await?;
            }
            *self.planted.lock().expect("lock") = Some(location.clone());
            if let Some(hold) = &self.hold {
                hold.started.notify_one();
                hold.release.notified().await;
            }
        }
        self.inner().put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner().put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.inner().get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<
            'static,
            object_store::Result<object_store::path::Path>,
        >,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
        self.inner().delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.inner().list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner().list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.inner().copy_opts(from, to, options).await
    }
}

/// Every file under `dir`, relative, sorted.
fn files_under(dir: &std::path::Path) -> Vec<String> {
    fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(
                    path.strip_prefix(root)
                        .expect("under root")
                        .display()
                        .to_string(),
                );
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A batch whose file name is already taken fails without overwriting the
/// object there; its rows stay live and its journal row goes, so no later
/// clean-up removes that object; the next run archives under a new name.
async fn a_taken_name_stops_the_batch(store: Arc<dyn Store>, counter: Counter) {
    use futures::TryStreamExt as _;
    let written = load(store.as_ref(), now()).await;
    let (dir, local, url) = local_archive();
    let contended = Arc::new(Contended::planting(Arc::clone(&local)));
    let archive = Archive::with_object_store(contended.clone(), "", &url);
    let settings = Settings {
        batch_rows: 100,
        ..Settings::default()
    };
    let err =
        remaudit_retention::run_once(store.as_ref(), &archive, &settings, now(), false, &ops())
            .await
            .expect_err("the name is taken")
            .to_string();
    assert!(err.contains("already exists"), "{err}");
    // The failed run is in the admin log, with its error.
    let runs = store
        .admin_log(&AdminLogQuery {
            action: Some(AdminAction::RetentionRun),
            ..AdminLogQuery::default()
        })
        .await
        .expect("admin log");
    assert_eq!(runs.items.len(), 1);
    assert_eq!(runs.items[0].detail["outcome"], "error");
    assert_eq!(runs.items[0].detail["error"].as_str(), Some(err.as_str()));
    let planted = contended.planted();
    assert_eq!(
        theirs(Arc::clone(&local), planted.clone()).await.as_ref(),
        THEIRS
    );
    assert_eq!(
        counter.places().await,
        (written.remediations, 0, written.events, 0),
        "every row stays live"
    );
    assert_eq!(
        counter
            .count("SELECT count(*) FROM remediation_retention_batches")
            .await,
        0,
        "the batch is forgotten"
    );
    let listed: Vec<_> = local
        .list(None)
        .map_ok(|m| m.location)
        .try_collect()
        .await
        .expect("list");
    assert_eq!(
        listed,
        vec![planted.clone()],
        "only the other writer's file is there"
    );

    let archive = Archive::open(&url).expect("archive");
    let report =
        remaudit_retention::run_once(store.as_ref(), &archive, &settings, now(), false, &ops())
            .await
            .expect("the next run");
    assert!(report.remediations() > 0);
    assert!(report.cleaned.is_empty(), "nothing left to clean");
    assert_eq!(
        theirs(Arc::clone(&local), planted.clone()).await.as_ref(),
        THEIRS
    );
    let (first, last) = remaudit_retention::all_time();
    let verified = remaudit_retention::verify(store.as_ref(), &archive, first, last, None)
        .await
        .expect("verify");
    assert!(verified.ok(), "{:?}", verified.problems);
    assert!(files_under(dir.path()).contains(&planted.to_string()));
}

#[tokio::test]
async fn sqlite_a_taken_file_name_stops_the_batch_and_overwrites_nothing() {
    let db = SqliteDb::create();
    let store = db.store().await;
    let pool = sqlx::SqlitePool::connect(&db.url()).await.expect("pool");
    a_taken_name_stops_the_batch(store, Counter::Sqlite(pool)).await;
}

#[tokio::test]
async fn postgres_a_taken_file_name_stops_the_batch_and_overwrites_nothing() {
    let db = PgDb::create().await;
    a_taken_name_stops_the_batch(db.store().await, Counter::Pg(db.pool().await)).await;
}

#[tokio::test]
async fn batches_archived_before_installation_ids_stay_where_they_are_and_verify() {
    use sha2::Digest as _;
    let db = SqliteDb::create();
    let store = db.store().await;
    let pool = sqlx::SqlitePool::connect(&db.url()).await.expect("pool");
    let written = load(store.as_ref(), now()).await;
    let dir = tempfile::tempdir().expect("dir");
    // Batches of that time were JSON Lines.
    let archive = Archive::open(&format!("file://{}", dir.path().display()))
        .expect("archive")
        .with_format(remaudit_retention::ArchiveFormat::Jsonl);
    let settings = Settings {
        batch_rows: 20,
        ..Settings::default()
    };
    let early = now() - TimeDelta::days(14);
    let report =
        remaudit_retention::run_once(store.as_ref(), &archive, &settings, early, false, &ops())
            .await
            .expect("run");
    assert!(report.batches.len() >= 2);
    // Rewrite every finished batch as a version without installation ids
    // wrote it: `batch-{id}/…` at the top of the archive, its manifest
    // naming those paths, the journal recording that location.
    for batch in &report.batches {
        let old = format!("batch-{:012}", batch.batch);
        let new_dir = dir.path().join(&batch.location);
        std::fs::create_dir(dir.path().join(&old)).expect("old dir");
        for file in [
            "remediation_audit.jsonl.gz",
            "remediation_audit_events.jsonl.gz",
        ] {
            std::fs::rename(new_dir.join(file), dir.path().join(&old).join(file)).expect("move");
        }
        let manifest = std::fs::read_to_string(new_dir.join("manifest.json")).expect("manifest");
        let mut manifest: serde_json::Value = serde_json::from_str(&manifest).expect("json");
        manifest
            .as_object_mut()
            .expect("object")
            .remove("installation");
        for file in manifest["files"].as_array_mut().expect("files") {
            let path = file["path"]
                .as_str()
                .expect("path")
                .replace(&batch.location, &old);
            file["path"] = path.into();
        }
        let body = serde_json::to_vec_pretty(&manifest).expect("encode");
        std::fs::write(dir.path().join(&old).join("manifest.json"), &body).expect("write");
        std::fs::remove_dir_all(&new_dir).expect("remove the new layout");
        sqlx::query(
            "UPDATE remediation_retention_batches SET location = ?2, manifest_sha256 = ?3 WHERE id = ?1",
        )
        .bind(batch.batch)
        .bind(&old)
        .bind(format!("{:x}", sha2::Sha256::digest(&body)))
        .execute(&pool)
        .await
        .expect("journal");
    }
    let before: Vec<(String, Vec<u8>)> = files_under(dir.path())
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(dir.path().join(&f)).expect("read");
            (f, bytes)
        })
        .collect();
    assert!(
        before.iter().all(|(f, _)| f.starts_with("batch-")),
        "{before:?}"
    );
    let (first, last) = remaudit_retention::all_time();
    let verified = remaudit_retention::verify(store.as_ref(), &archive, first, last, None)
        .await
        .expect("verify");
    assert!(verified.ok(), "{:?}", verified.problems);

    // The upgraded job writes beside them under its installation id.
    let report =
        remaudit_retention::run_once(store.as_ref(), &archive, &settings, now(), false, &ops())
            .await
            .expect("run after the upgrade");
    assert!(report.remediations() > 0);
    for (file, bytes) in &before {
        assert_eq!(
            std::fs::read(dir.path().join(file)).ok().as_ref(),
            Some(bytes),
            "{file}"
        );
    }
    let verified = remaudit_retention::verify(store.as_ref(), &archive, first, last, None)
        .await
        .expect("verify");
    assert!(verified.ok(), "{:?}", verified.problems);
    let counter = Counter::Sqlite(pool);
    let (live, archived, live_events, archived_events) = counter.places().await;
    assert_eq!(live + archived, written.remediations);
    assert_eq!(live_events + archived_events, written.events);
}

/// An archive whose Parquet writer loses the first row of each file it
/// writes, as a writer with a bug would.
struct Lossy(Archive);

#[async_trait::async_trait]
impl remaudit_retention::ArchiveSink for Lossy {
    fn archive(&self) -> &Archive {
        &self.0
    }

    async fn write_week(
        &self,
        location: &str,
        table: remaudit_store::retention::ArchiveTable,
        week: &str,
        meta: &[(&str, String)],
        lines: remaudit_store::retention::Lines<'_>,
    ) -> Result<Vec<remaudit_retention::ArchivedFile>, remaudit_retention::RetentionError> {
        use futures::StreamExt as _;
        self.0
            .write_week(location, table, week, meta, Box::pin(lines.skip(1)))
            .await
    }
}

async fn files_short_of_a_row_stop_the_batch(store: Arc<dyn Store>, counter: Counter) {
    let written = load(store.as_ref(), now()).await;
    let dir = tempfile::tempdir().expect("dir");
    let lossy = Lossy(Archive::open(&format!("file://{}", dir.path().display())).expect("archive"));
    let err = remaudit_retention::run_once(
        store.as_ref(),
        &lossy,
        &Settings::default(),
        now(),
        false,
        &ops(),
    )
    .await
    .expect_err("the files miss rows");
    assert!(err.to_string().contains("rows stay live"), "{err}");
    let (live, archived, live_events, archived_events) = counter.places().await;
    assert_eq!(
        (live, archived),
        (written.remediations, 0),
        "every row stays live"
    );
    assert_eq!((live_events, archived_events), (written.events, 0));
}

#[tokio::test]
async fn sqlite_files_short_of_a_row_stop_the_batch_and_every_row_stays_live() {
    let db = SqliteDb::create();
    let store = db.store().await;
    let pool = sqlx::SqlitePool::connect(&db.url()).await.expect("pool");
    files_short_of_a_row_stop_the_batch(store, Counter::Sqlite(pool)).await;
}

#[tokio::test]
async fn postgres_files_short_of_a_row_stop_the_batch_and_every_row_stays_live() {
    let db = PgDb::create().await;
    files_short_of_a_row_stop_the_batch(db.store().await, Counter::Pg(db.pool().await)).await;
}
