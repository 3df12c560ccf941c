//! `archive=true` on the analytics endpoints: each question asked of the
//! archive's weeks of the window together with the remediations the
//! database still holds there, computed as the store computes it.
//!
//! The archive is opened for each question (its manifests read afresh), so
//! that a batch retention has just finished is never missed. One question
//! runs at a time, its engine on one core: each may hold the archive
//! engine's memory limit and the live rows of its window (within
//! [`remaudit_archive::MAX_LIVE_ROWS`]), and ingest must not pay for them; a
//! second one is told to retry.
//!
//! SQL over the archive (`POST /api/v1/archive/sql`) runs in a child
//! process, `remaudit archive sql`, with its heap capped: a statement is the
//! caller's own, and one that builds huge values (`repeat`, `replace` over
//! long text) must fail there rather than take the service's memory. The
//! child runs at a lower CPU priority, stops itself a second before the
//! question's time is up (and is killed and reaped if it has not), and ends
//! when its answer outgrows [`MAX_SQL_ANSWER_BYTES`] (its output is closed).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Instant;

use remaudit_api::archive::{
    DEFAULT_SQL_ROWS, MAX_SQL_ANSWER_BYTES, MAX_SQL_CHARS, MAX_SQL_ROWS, SqlAnswer, SqlRequest,
};
use remaudit_archive::{ArchiveQuery, ArchiveQueryError, Limits, LiveRows, merge_postmortem};
use remaudit_model::analytics::{
    DurationsReport, FailuresReport, RemediationList, RetriesReport, SuccessRateReport,
};
use remaudit_model::{EventRecord, FieldError, StoredAudit};
use remaudit_store::{AnalyticsQuery, ListQuery, StoreError};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;
use crate::startup::AppState;

/// Where the service's archive is, and the turn its questions take.
#[derive(Debug)]
pub struct ArchiveReader {
    url: String,
    limits: Limits,
    turn: Arc<Semaphore>,
    /// Answers to statements held in memory while they are sent.
    answers: Arc<Semaphore>,
    /// The `remaudit` program that runs SQL over the archive.
    program: Option<PathBuf>,
}

impl ArchiveReader {
    /// Reads the archive at `url` (`file:///dir` or `s3://bucket/prefix`):
    /// each question within `time` (keep it under the request timeout), its
    /// engine on one core.
    #[must_use]
    pub fn new(url: impl Into<String>, time: std::time::Duration) -> Self {
        Self {
            url: url.into(),
            limits: Limits {
                time,
                partitions: 1,
                ..Limits::default()
            },
            turn: Arc::new(Semaphore::new(1)),
            answers: Arc::new(Semaphore::new(SQL_ANSWERS_HELD)),
            program: None,
        }
    }

    /// The same reader, answering SQL over the archive with `program`, the
    /// `remaudit` binary (`remaudit serve` gives its own).
    #[must_use]
    pub fn with_sql_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = Some(program.into());
        self
    }

    /// The archive's URL.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// The store's failure as the API's.
fn store_error(state: &AppState) -> impl Fn(StoreError) -> ApiError + '_ {
    |e| ApiError::from_store(&e, state.settings.retry_after)
}

/// The archive's failure as the API's.
fn archive_error(state: &AppState, e: ArchiveQueryError) -> ApiError {
    match e {
        ArchiveQueryError::Archive(why) => {
            tracing::warn!(error = %why, "archive unreadable");
            ApiError::ArchiveUnavailable(why, state.settings.retry_after)
        }
        e @ ArchiveQueryError::Damaged { .. } => {
            tracing::error!(error = %e, "archive damaged");
            ApiError::ArchiveDamaged(e.to_string())
        }
        ArchiveQueryError::Timeout(limit) => {
            ApiError::ArchiveTimeout(limit, state.settings.retry_after)
        }
        e @ ArchiveQueryError::TooLarge(_) => ApiError::AnswerTooLarge(e.to_string()),
        e @ ArchiveQueryError::Engine(_) => {
            tracing::error!(error = %e, "archive engine failed");
            ApiError::Internal
        }
        e @ (ArchiveQueryError::Query(_) | ArchiveQueryError::TooManyRows(_)) => {
            tracing::error!(error = %e, "archive question failed");
            ApiError::Internal
        }
    }
}

/// The service's archive reader, or [`ApiError::ArchiveUnavailable`] when it has none.
fn reader(state: &AppState) -> Result<&ArchiveReader, ApiError> {
    state.archive.as_deref().ok_or_else(|| {
        ApiError::ArchiveUnavailable(
            "this service was started without an archive to read".to_owned(),
            state.settings.retry_after,
        )
    })
}

/// A permit of `places`, or [`ApiError::ArchiveBusy`] while all are taken.
fn place(state: &AppState, places: &Arc<Semaphore>) -> Result<OwnedSemaphorePermit, ApiError> {
    Arc::clone(places)
        .try_acquire_owned()
        .map_err(|_| ApiError::ArchiveBusy(state.settings.retry_after))
}

/// The archive's turn, or [`ApiError::ArchiveBusy`] while another question has it.
fn turn(state: &AppState) -> Result<(&ArchiveReader, OwnedSemaphorePermit), ApiError> {
    let reader = reader(state)?;
    Ok((reader, place(state, &reader.turn)?))
}

/// The service's archive, opened for one question: the batches of this
/// database's installation.
/// `None` while the archive is a local directory that does not exist yet:
/// the retention job makes it with its first batch, so nothing is archived.
async fn open(state: &AppState, reader: &ArchiveReader) -> Result<Option<ArchiveQuery>, ApiError> {
    if let Some(dir) = reader.url.strip_prefix("file://")
        && !std::path::Path::new(dir).exists()
    {
        return Ok(None);
    }
    let installation = state
        .store
        .installation_id()
        .await
        .map_err(store_error(state))?;
    ArchiveQuery::open(&reader.url, Some(&installation), reader.limits)
        .await
        .map(Some)
        .map_err(|e| archive_error(state, e))
}

/// Whether `archive` holds any week of `q`'s window (refusing one it cannot read).
fn holds(archive: Option<&ArchiveQuery>, q: &AnalyticsQuery) -> Result<bool, ApiError> {
    let Some(archive) = archive else {
        return Ok(false);
    };
    readable(archive, q)?;
    Ok(archive.holds(q.window.since, q.window.until))
}

/// The remediations the store holds in `q`'s window, a page at a time.
async fn live_rows(state: &AppState, q: &AnalyticsQuery) -> Result<LiveRows, ApiError> {
    let mut list = ListQuery {
        alert_fingerprint: q.alert_fingerprint.clone(),
        namespace: q.namespace.clone(),
        since: Some(q.window.since),
        until: Some(q.window.until),
        limit: remaudit_api::audit::MAX_PAGE,
        ..ListQuery::default()
    };
    let mut rows = LiveRows::default();
    loop {
        let page = state.store.list(&list).await.map_err(store_error(state))?;
        rows.take(page.items).map_err(|why| {
            ApiError::InvalidQuery(vec![FieldError::new("archive", "live_rows", why)])
        })?;
        match page.next {
            Some(cursor) => list.after = Some(cursor),
            None => return Ok(rows),
        }
    }
}

/// Refuses a window in which the archive holds batches it cannot read.
fn readable(archive: &ArchiveQuery, q: &AnalyticsQuery) -> Result<(), ApiError> {
    match archive.unreadable_in(q.window.since, q.window.until) {
        0 => Ok(()),
        n => Err(ApiError::InvalidQuery(vec![FieldError::new(
            "archive",
            "jsonl_batches",
            format!(
                "{n} archive batches that may hold remediations of this window are JSON Lines, \
                 which questions cannot read, so an answer would leave them out"
            ),
        )])),
    }
}

/// Runs `ask` within the archive's time limit.
async fn in_time<R>(
    state: &AppState,
    reader: &ArchiveReader,
    ask: impl Future<Output = Result<R, ApiError>>,
) -> Result<R, ApiError> {
    tokio::time::timeout(reader.limits.time, ask)
        .await
        .map_err(|_| ApiError::ArchiveTimeout(reader.limits.time, state.settings.retry_after))?
}

/// The post-mortem: the store's list and the archive's, merged.
pub(crate) async fn postmortem(
    state: &AppState,
    q: &AnalyticsQuery,
) -> Result<RemediationList, ApiError> {
    let (reader, _turn) = turn(state)?;
    in_time(state, reader, async {
        // The database first, then the archive: a batch retention finishes
        // in between has its manifest before its rows leave, so it is read.
        let mut answer = state
            .store
            .postmortem(q)
            .await
            .map_err(store_error(state))?;
        let Some(archive) = open(state, reader).await? else {
            return Ok(answer);
        };
        readable(&archive, q)?;
        let archived = archive
            .postmortem(
                q.alert_fingerprint.as_deref().unwrap_or_default(),
                q.window.since,
                q.window.until,
                q.namespace.as_deref(),
                q.limit,
            )
            .await
            .map_err(|e| archive_error(state, e))?;
        merge_postmortem(&mut answer, archived);
        Ok(answer)
    })
    .await
}

/// An archived remediation and its whole timeline, for a timeline the
/// database no longer holds; `None` when the archive holds none by `id`.
pub(crate) async fn timeline(
    state: &AppState,
    id: i64,
) -> Result<Option<(StoredAudit, Vec<EventRecord>)>, ApiError> {
    let (reader, _turn) = turn(state)?;
    in_time(state, reader, async {
        let Some(archive) = open(state, reader).await? else {
            return Ok(None);
        };
        archive
            .timeline(id)
            .await
            .map_err(|e| archive_error(state, e))
    })
    .await
}

/// Defines `$name`: the question over the archive and the live rows of its
/// window; the store's own answer when the archive holds none of the
/// window's weeks.
macro_rules! over_archive {
    ($name:ident, $report:ty, $doc:literal) => {
        #[doc = $doc]
        pub(crate) async fn $name(
            state: &AppState,
            q: &AnalyticsQuery,
        ) -> Result<$report, ApiError> {
            let (reader, _turn) = turn(state)?;
            in_time(state, reader, async {
                if !holds(open(state, reader).await?.as_ref(), q)? {
                    let answer = state.store.$name(q).await.map_err(store_error(state))?;
                    // Still none after the database answered: no batch of
                    // the window left it in between, so its answer is whole.
                    if !holds(open(state, reader).await?.as_ref(), q)? {
                        return Ok(answer);
                    }
                }
                let rows = live_rows(state, q).await?;
                // Read again after the live rows: a batch finished meanwhile
                // (its rows gone from the live tables) is in the archive now.
                let Some(archive) = open(state, reader).await? else {
                    return Err(ApiError::ArchiveUnavailable(
                        "the archive directory went away during the question".to_owned(),
                        state.settings.retry_after,
                    ));
                };
                readable(&archive, q)?;
                archive
                    .$name(q, rows.rows())
                    .await
                    .map_err(|e| archive_error(state, e))
            })
            .await
        }
    };
}

over_archive!(
    success_rate,
    SuccessRateReport,
    "Outcomes over the archive too."
);
over_archive!(
    durations,
    DurationsReport,
    "Durations over the archive too."
);
over_archive!(
    slowest,
    RemediationList,
    "The slowest over the archive too."
);
over_archive!(failures, FailuresReport, "Failures over the archive too.");
over_archive!(retries, RetriesReport, "Retries over the archive too.");

/// Heap the child that runs a statement may take, in MiB: the engine's own
/// limit (512 MiB) with room for the answer, its threads and the process.
const SQL_MEMORY_MIB: u64 = 768;

/// How much lower the child's CPU priority is than the service's.
const SQL_NICE: &str = "10";

/// Bytes of the end of the child's error output kept: where a process that
/// aborts says why.
const SQL_STDERR_BYTES: usize = 16 * 1024;

/// Answers to statements that may be in memory at once while their callers
/// read them, each at most [`MAX_SQL_ANSWER_BYTES`].
const SQL_ANSWERS_HELD: usize = 2;

/// Checks a statement request: its text and row limit.
fn check_sql(request: &SqlRequest) -> Result<usize, ApiError> {
    let mut errors = Vec::new();
    let chars = request.sql.chars().count();
    if request.sql.trim().is_empty() {
        errors.push(FieldError::new(
            "sql",
            "required",
            "must be a statement, not empty or only whitespace",
        ));
    } else if chars > MAX_SQL_CHARS {
        errors.push(FieldError::new(
            "sql",
            "max_length",
            format!("must be at most {MAX_SQL_CHARS} characters, got {chars}"),
        ));
    }
    let rows = request.max_rows.unwrap_or(DEFAULT_SQL_ROWS);
    if !(1..=MAX_SQL_ROWS).contains(&rows) {
        errors.push(FieldError::new(
            "max_rows",
            "range",
            format!("must be 1 to {MAX_SQL_ROWS}, got {rows}"),
        ));
    }
    if errors.is_empty() {
        Ok(usize::try_from(rows).unwrap_or(usize::MAX))
    } else {
        Err(ApiError::InvalidQuery(errors))
    }
}

/// A failure the child reported, as `{"error": {"kind", "message"}}`.
#[derive(serde::Deserialize)]
struct ChildFailure {
    error: ChildError,
}

#[derive(serde::Deserialize)]
struct ChildError {
    kind: String,
    message: String,
}

/// One read-only statement over the service's archive, run by the child
/// `remaudit archive sql` under the archive's time limit, the request's row
/// limit and [`SQL_MEMORY_MIB`]; `subject` is logged with it. The answer
/// comes with one of [`SQL_ANSWERS_HELD`] places, which the caller keeps
/// until the answer is sent; the archive's turn is free once it is read.
pub(crate) async fn sql(
    state: &AppState,
    request: &SqlRequest,
    subject: &str,
) -> Result<(SqlAnswer, OwnedSemaphorePermit), ApiError> {
    let rows = check_sql(request)?;
    let reader = reader(state)?;
    let answer_place = place(state, &reader.answers)?;
    let turn = place(state, &reader.turn)?;
    let Some(program) = reader.program.as_deref() else {
        return Err(ApiError::ArchiveUnavailable(
            "this service was started without the program that runs statements".to_owned(),
            state.settings.retry_after,
        ));
    };
    let installation = state
        .store
        .installation_id()
        .await
        .map_err(store_error(state))?;
    let started = Instant::now();
    let answer = run_child(state, reader, program, &installation, request, rows).await;
    let outcome = match &answer {
        Ok(answer) => format!("{} rows", answer.row_count),
        Err(e) => e.problem().kind,
    };
    tracing::info!(
        subject,
        sql_chars = request.sql.chars().count(),
        outcome,
        elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "statement over the archive"
    );
    drop(turn);
    answer.map(|answer| (answer, answer_place))
}

/// Runs the child and reads its answer. Past the archive's time limit the
/// child is killed and reaped before the turn is given back; when the
/// caller goes away, dropping the child kills it (`kill_on_drop`).
async fn run_child(
    state: &AppState,
    reader: &ArchiveReader,
    program: &std::path::Path,
    installation: &str,
    request: &SqlRequest,
    rows: usize,
) -> Result<SqlAnswer, ApiError> {
    let internal = |what: &'static str| {
        move |e: std::io::Error| {
            tracing::error!(error = %e, program = %program.display(), "{what}");
            ApiError::Internal
        }
    };
    // The child stops itself a second before the service would kill it.
    let own_limit = reader
        .limits
        .time
        .saturating_sub(std::time::Duration::from_secs(1))
        .as_secs()
        .max(1);
    let mut child = tokio::process::Command::new(program)
        .args(["archive", "sql", "--archive-url"])
        .arg(&reader.url)
        .args([
            "--installation",
            installation,
            "--output",
            "answer",
            "--missing-ok",
        ])
        .args(["--timeout-secs", &own_limit.to_string()])
        .args(["--max-rows", &rows.to_string()])
        .args(["--partitions", "1", "--nice", SQL_NICE])
        .args(["--memory-limit-mib", &SQL_MEMORY_MIB.to_string()])
        .arg("-")
        .env_remove("REMAUDIT_CONFIG")
        .env("RUST_LOG", "off")
        .env("RUST_BACKTRACE", "0")
        // The child's own main runtime: one worker, whose stack counts in its cap.
        .env("TOKIO_WORKER_THREADS", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(internal("cannot start the statement's process"))?;
    let (Some(mut stdin), Some(stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(ApiError::Internal);
    };
    let text = request.sql.clone();
    let write = async move {
        // A child that fails before reading its statement closes the pipe:
        // its own answer says why.
        let _ = stdin.write_all(text.as_bytes()).await;
        drop(stdin);
    };
    let limit = u64::try_from(MAX_SQL_ANSWER_BYTES).unwrap_or(u64::MAX) + 64 * 1024;
    let read_out = async {
        let mut out = Vec::new();
        // Past the limit the pipe is closed, and the child's next write ends it.
        stdout
            .take(limit + 1)
            .read_to_end(&mut out)
            .await
            .map(|_| out)
    };
    let read_err = async {
        // All of it is read, so that the child never blocks on a full
        // pipe; its end is kept.
        let mut kept: Vec<u8> = Vec::new();
        let mut piece = [0_u8; 4096];
        loop {
            let n = stderr.read(&mut piece).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(kept);
            }
            kept.extend_from_slice(&piece[..n]);
            if kept.len() > SQL_STDERR_BYTES {
                kept.drain(..kept.len() - SQL_STDERR_BYTES);
            }
        }
    };
    let talk = async {
        let ((), out, err) = tokio::join!(write, read_out, read_err);
        Ok::<_, std::io::Error>((out?, err?))
    };
    let Ok(talked) = tokio::time::timeout(reader.limits.time, talk).await else {
        // Killed and reaped while the turn is still held.
        let _ = child.kill().await;
        return Err(ApiError::ArchiveTimeout(
            reader.limits.time,
            state.settings.retry_after,
        ));
    };
    let (out, err) = talked.map_err(internal("cannot read the statement's process"))?;
    if u64::try_from(out.len()).unwrap_or(u64::MAX) > limit {
        let _ = child.kill().await;
        return Err(too_large_answer());
    }
    let status = child
        .wait()
        .await
        .map_err(internal("cannot wait for the statement's process"))?;
    let err = String::from_utf8_lossy(&err);
    if status.success() {
        let answer: SqlAnswer = serde_json::from_slice(&out).map_err(|e| {
            tracing::error!(error = %e, stderr = %err, "the statement's process answered no document");
            ApiError::Internal
        })?;
        if answer.rows.get().len() > MAX_SQL_ANSWER_BYTES {
            return Err(too_large_answer());
        }
        return Ok(answer);
    }
    if let Ok(ChildFailure { error }) = serde_json::from_slice::<ChildFailure>(&out) {
        return Err(child_failure(state, reader, error));
    }
    Err(child_death(state, status, &err))
}

/// An answer past [`MAX_SQL_ANSWER_BYTES`].
fn too_large_answer() -> ApiError {
    ApiError::AnswerTooLarge(format!(
        "the answer is larger than {} MiB as JSON: select fewer columns or rows",
        MAX_SQL_ANSWER_BYTES >> 20
    ))
}

/// Whether `line` is the runtime's line before it aborts for an
/// allocation it could not make: `memory allocation of N bytes failed`.
fn is_allocation_failure(line: &str) -> bool {
    line.strip_prefix("memory allocation of ")
        .and_then(|rest| rest.strip_suffix(" bytes failed"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `line` is the runtime's line before it aborts for a stack
/// overflow: `thread 'NAME' (ID) has overflowed its stack`.
fn is_stack_overflow(line: &str) -> bool {
    line.starts_with("thread '") && line.ends_with(" has overflowed its stack")
}

/// The answer to a failure the child reported.
fn child_failure(state: &AppState, reader: &ArchiveReader, error: ChildError) -> ApiError {
    match error.kind.as_str() {
        "query" => ApiError::InvalidSql(error.message),
        "too_many_rows" | "too_large" => ApiError::AnswerTooLarge(error.message),
        "damaged" => {
            tracing::error!(error = %error.message, "archive damaged");
            ApiError::ArchiveDamaged(error.message)
        }
        "timeout" => ApiError::ArchiveTimeout(reader.limits.time, state.settings.retry_after),
        "archive" => {
            tracing::warn!(error = %error.message, "archive unreadable");
            ApiError::ArchiveUnavailable(error.message, state.settings.retry_after)
        }
        kind => {
            tracing::error!(kind, error = %error.message, "the statement's process failed");
            ApiError::Internal
        }
    }
}

/// The answer to a child that died without a document: of its heap cap (an
/// allocation it could not make aborts it), of a statement nested deeper
/// than its stack, or killed from outside (the kernel when the pod's memory
/// runs out, an operator).
fn child_death(state: &AppState, status: std::process::ExitStatus, err: &str) -> ApiError {
    use std::os::unix::process::ExitStatusExt as _;
    const SIGKILL: i32 = 9;
    const SIGABRT: i32 = 6;
    if status.signal() == Some(SIGKILL) {
        tracing::warn!(stderr = %err, "the statement's process was killed");
        return ApiError::ArchiveUnavailable(
            "the statement's process was killed, most likely because memory ran out".to_owned(),
            state.settings.retry_after,
        );
    }
    // What the Rust runtime prints, on a line of its own, before it aborts;
    // a panic, whose message could echo the statement, exits instead.
    let aborted = status.signal() == Some(SIGABRT);
    if aborted && err.lines().any(is_allocation_failure) {
        return ApiError::AnswerTooLarge(format!(
            "the statement needs more than {SQL_MEMORY_MIB} MiB of memory: narrow it"
        ));
    }
    if aborted && err.lines().any(is_stack_overflow) {
        return ApiError::InvalidSql(
            "the statement nests deeper than the engine can follow: split it or flatten its expressions"
                .to_owned(),
        );
    }
    tracing::error!(status = %status, stderr = %err, "the statement's process failed");
    ApiError::Internal
}
