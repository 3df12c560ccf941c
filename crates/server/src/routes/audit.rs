//! `/api/v1/audit/remediation-orchestration`: ingestion and reads.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use remaudit_api::admin::{ReasonBody, ReasonParams};
use remaudit_api::audit::{
    BatchItem, BatchResponse, DEFAULT_PAGE, ItemStatus, ListParams, ListResponse, MAX_PAGE,
    StoreResult, TimelineParams, TimelineResponse,
};
use remaudit_api::paths;
use remaudit_model::{FieldError, NewAudit, RemediationOrchestrationAudit, StoredAudit};
use remaudit_store::{
    Actor, Cursor, DeleteOutcome, InsertOutcome, InsertRules, ListQuery, Refusal, TimelineCursor,
    TimelineQuery,
};
use tracing::instrument;

use crate::ServerSettings;
use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::routes::{admin, body};
use crate::startup::AppState;

/// The status of a record the store judged, and the rule it broke, if any.
fn judged(
    outcome: InsertOutcome,
    record: &NewAudit,
    settings: &ServerSettings,
) -> (ItemStatus, Vec<FieldError>) {
    let at = || record.start_time.to_rfc3339();
    let remediation = || format!("{}/{}", record.namespace, record.remediation_name);
    match outcome {
        InsertOutcome::Created => (ItemStatus::Created, Vec::new()),
        InsertOutcome::Duplicate => (ItemStatus::Duplicate, Vec::new()),
        InsertOutcome::Conflict => (
            ItemStatus::Conflict,
            vec![FieldError::new(
                "event_id",
                "conflict",
                format!(
                    "{} with start_time {} is already stored with other content; a replay must repeat the record unchanged, and a new transition needs a new event_id",
                    record.event_id,
                    at()
                ),
            )],
        ),
        InsertOutcome::Refused(Refusal::Archived) => (
            ItemStatus::Rejected,
            vec![FieldError::new(
                "start_time",
                "archived",
                format!(
                    "remediation {} that started at {} was archived by retention; records of it are no longer taken",
                    remediation(),
                    at()
                ),
            )],
        ),
        InsertOutcome::Refused(Refusal::Retention) => (
            ItemStatus::Rejected,
            vec![FieldError::new(
                "start_time",
                "retention",
                format!(
                    "is older than the retention age ({} days) and no live remediation {} has it: retention would archive it at once",
                    settings
                        .refuse_new_older_than
                        .map_or(0, |age| age.num_days()),
                    remediation()
                ),
            )],
        ),
        InsertOutcome::Refused(Refusal::MaxEvents) => (
            ItemStatus::Rejected,
            vec![FieldError::new(
                "remediation_name",
                "max_events",
                format!(
                    "remediation {} that started at {} already has {} events, the most one may have (--max-events-per-remediation)",
                    remediation(),
                    at(),
                    settings.max_events_per_remediation
                ),
            )],
        ),
    }
}

/// The store's rules for a write received at `now`.
pub(crate) fn insert_rules(settings: &ServerSettings, now: DateTime<Utc>) -> InsertRules {
    InsertRules {
        max_events_per_remediation: settings.max_events_per_remediation,
        refuse_new_before: settings
            .refuse_new_older_than
            .and_then(|age| now.checked_sub_signed(age)),
        chain: settings.chain.clone(),
    }
}

/// A timeline query from its parameters, and whether it may read the archive.
fn timeline_query(params: &TimelineParams) -> Result<(TimelineQuery, bool), ApiError> {
    let mut errors = Vec::new();
    let limit = page_limit(params.limit.as_deref(), &mut errors);
    let archive =
        crate::routes::analytics::bool_param("archive", params.archive.as_deref(), &mut errors);
    let after = params.cursor.as_deref().and_then(|token| {
        let cursor = TimelineCursor::decode(token);
        if cursor.is_none() {
            errors.push(bad_cursor());
        }
        cursor
    });
    if !errors.is_empty() {
        return Err(ApiError::InvalidQuery(errors));
    }
    Ok((TimelineQuery { after, limit }, archive))
}

/// A page size from the `limit` parameter, 1 to [`MAX_PAGE`].
pub(crate) fn page_limit(limit: Option<&str>, errors: &mut Vec<FieldError>) -> u32 {
    match limit.map(str::parse::<u32>) {
        None => DEFAULT_PAGE,
        Some(Ok(n)) if (1..=MAX_PAGE).contains(&n) => n,
        Some(_) => {
            errors.push(FieldError::new(
                "limit",
                "range",
                format!(
                    "must be a whole number from 1 to {MAX_PAGE}, got {:?}",
                    limit.unwrap_or_default()
                ),
            ));
            DEFAULT_PAGE
        }
    }
}

pub(crate) fn bad_cursor() -> FieldError {
    FieldError::new(
        "cursor",
        "cursor",
        "is not a cursor this server issued; pass next_cursor from the previous page unchanged",
    )
}

pub(crate) fn time_param(
    field: &str,
    value: Option<&str>,
    errors: &mut Vec<FieldError>,
) -> Option<DateTime<Utc>> {
    let value = value?;
    // chrono also reads a space between date and time; RFC 3339 (and the
    // document's `date-time`) has a `T` there.
    let parsed = match value.as_bytes().get(10) {
        Some(b'T' | b't') => DateTime::parse_from_rfc3339(value).map_err(|e| e.to_string()),
        _ => Err("no T between date and time".to_owned()),
    };
    match parsed {
        Ok(t) => Some(t.with_timezone(&Utc)),
        Err(e) => {
            errors.push(FieldError::new(
                field,
                "rfc3339",
                format!(
                    "must be an RFC 3339 time such as 2026-01-02T03:04:05Z, got {value:?} ({e})"
                ),
            ));
            None
        }
    }
}

/// The `since` and `until` parameters of a listing: two RFC 3339 times,
/// `since` before `until` when both are given.
pub(crate) fn time_range(
    since: Option<&str>,
    until: Option<&str>,
    errors: &mut Vec<FieldError>,
) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let since = time_param("since", since, errors);
    let until = time_param("until", until, errors);
    if let (Some(s), Some(u)) = (since, until)
        && s >= u
    {
        errors.push(FieldError::new(
            "since",
            "before_until",
            format!(
                "must be before until ({}), got {}",
                u.to_rfc3339(),
                s.to_rfc3339()
            ),
        ));
    }
    (since, until)
}

/// A listing query from its parameters.
fn list_query(params: ListParams) -> Result<ListQuery, ApiError> {
    let mut errors = Vec::new();
    let (since, until) = time_range(
        params.since.as_deref(),
        params.until.as_deref(),
        &mut errors,
    );
    for (field, value) in [
        ("alert_fingerprint", &params.alert_fingerprint),
        ("overall_phase", &params.overall_phase),
        ("namespace", &params.namespace),
        ("remediation_name", &params.remediation_name),
    ] {
        // No stored value holds one, and PostgreSQL text cannot hold NUL.
        if value
            .as_deref()
            .is_some_and(|v| v.chars().any(char::is_control))
        {
            errors.push(FieldError::new(
                field,
                "text",
                "must not contain control characters",
            ));
        }
    }
    let limit = page_limit(params.limit.as_deref(), &mut errors);
    let after = params.cursor.as_deref().and_then(|token| {
        let cursor = Cursor::decode(token);
        if cursor.is_none() {
            errors.push(bad_cursor());
        }
        cursor
    });
    if !errors.is_empty() {
        return Err(ApiError::InvalidQuery(errors));
    }
    Ok(ListQuery {
        alert_fingerprint: params.alert_fingerprint,
        overall_phase: params.overall_phase,
        namespace: params.namespace,
        remediation_name: params.remediation_name,
        since,
        until,
        after,
        limit,
    })
}

/// Reads a JSON body within the service's size and pause limits.
async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<axum::body::Bytes, ApiError> {
    let settings = &state.settings;
    body::read_json_body(
        headers,
        body,
        settings.max_body_bytes,
        settings.idle_timeout,
    )
    .await
}

/// Turns one record's JSON text into a validated record, or the rules it broke.
fn parse_record(
    text: &str,
    state: &AppState,
    now: DateTime<Utc>,
) -> Result<NewAudit, Vec<FieldError>> {
    body::parse_element(text)?
        .validate(now, &state.settings.limits)
        .map_err(|e| e.0)
}

fn count(outcome: ItemStatus, n: usize) {
    metrics::counter!("remaudit_audit_records_total", "outcome" => outcome.as_str())
        .increment(n as u64);
}

/// Stores one transition record.
#[utoipa::path(
    post,
    path = paths::AUDIT,
    tag = "audit",
    request_body = RemediationOrchestrationAudit,
    responses(
        (status = 201, description = "Stored, or already stored (a replay)", body = StoreResult),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body stalled; retry", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Another record with this event_id and start_time is stored (type conflict); not stored", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The record breaks rules (field rules, or archived, retention, max_events)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable, request timed out, or too many requests in progress; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
#[instrument(skip_all)]
pub(crate) async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<StoreResult>), ApiError> {
    let bytes = read_body(&state, &headers, body).await?;
    let audit = body::parse_document(&bytes).inspect_err(|e| {
        if let ApiError::InvalidRecord(_) = e {
            count(ItemStatus::Rejected, 1);
        }
    })?;
    drop(bytes);
    let now = Utc::now();
    let record = audit.validate(now, &state.settings.limits).map_err(|e| {
        let errors = e.0;
        count(ItemStatus::Rejected, 1);
        ApiError::InvalidRecord(errors)
    })?;
    let event_id = record.event_id;
    let outcome = match state.coalescer() {
        Some(coalescer) => coalescer.insert(record.clone(), now).await,
        None => {
            crate::coalesce::insert_one(&*state.store, &record, &insert_rules(&state.settings, now))
                .await
        }
    }
    .map_err(|e| ApiError::from_store(&e, state.settings.retry_after))?;
    let (status, errors) = judged(outcome, &record, &state.settings);
    count(status, 1);
    match status {
        ItemStatus::Conflict => Err(ApiError::RecordConflict(errors)),
        ItemStatus::Rejected => Err(ApiError::InvalidRecord(errors)),
        ItemStatus::Created | ItemStatus::Duplicate => {
            Ok((StatusCode::CREATED, Json(StoreResult { event_id, status })))
        }
    }
}

/// Stores up to 1000 records; valid ones are stored even when others are invalid.
#[utoipa::path(
    post,
    path = paths::AUDIT_BATCH,
    tag = "audit",
    request_body = Vec<RemediationOrchestrationAudit>,
    responses(
        (status = 200, description = "Processed; see each item", body = BatchResponse),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body stalled; retry", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large or too many records", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not an array, or an empty one", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable, request timed out, or too many requests in progress; nothing was stored; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
#[instrument(skip_all)]
pub(crate) async fn create_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<BatchResponse>, ApiError> {
    let bytes = read_body(&state, &headers, body).await?;
    // Each record's text, unparsed: one record's value is built at a time.
    let values = body::split_batch(&bytes, state.settings.max_batch_records)?;
    let now = Utc::now();
    let mut items = Vec::with_capacity(values.len());
    let mut valid = Vec::with_capacity(values.len());
    let mut valid_index = Vec::with_capacity(values.len());
    for (index, text) in values.into_iter().enumerate() {
        match parse_record(text.get(), &state, now) {
            Ok(record) => {
                items.push(BatchItem {
                    index,
                    status: ItemStatus::Created,
                    event_id: Some(record.event_id),
                    errors: Vec::new(),
                });
                valid_index.push(index);
                valid.push(record);
            }
            Err(errors) => items.push(BatchItem {
                index,
                status: ItemStatus::Rejected,
                event_id: None,
                errors,
            }),
        }
    }
    // Only the validated records wait for the database, not the body.
    drop(bytes);
    if !valid.is_empty() {
        let outcomes = state
            .store
            .insert_with(&valid, &insert_rules(&state.settings, now))
            .await
            .map_err(|e| ApiError::from_store(&e, state.settings.retry_after))?;
        for ((index, outcome), record) in valid_index.into_iter().zip(outcomes).zip(&valid) {
            (items[index].status, items[index].errors) = judged(outcome, record, &state.settings);
        }
    }
    let answer = BatchResponse::from_items(items);
    count(ItemStatus::Created, answer.created);
    count(ItemStatus::Duplicate, answer.duplicates);
    count(ItemStatus::Rejected, answer.rejected);
    count(ItemStatus::Conflict, answer.conflicts);
    Ok(Json(answer))
}

/// Lists remediations, newest start first, with keyset pagination.
#[utoipa::path(
    get,
    path = paths::AUDIT,
    tag = "audit",
    params(ListParams),
    responses(
        (status = 200, description = "A page of remediations", body = ListResponse),
        (status = 400, description = "Invalid query parameters", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable (`database-unavailable`), or the summary was still taking in records stored before the read when its time ran out (`projection-behind`); both with Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
#[instrument(skip_all)]
pub(crate) async fn list(
    State(state): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<ListResponse>, ApiError> {
    let Query(params) = params
        .map_err(|e| ApiError::InvalidQuery(vec![FieldError::new("", "query", e.body_text())]))?;
    let query = list_query(params)?;
    let page = state
        .store
        .list(&query)
        .await
        .map_err(|e| ApiError::from_store(&e, state.settings.retry_after))?;
    Ok(Json(ListResponse {
        items: page.items,
        next_cursor: page.next.map(|c| c.encode()),
    }))
}

/// One remediation with one page of its timeline, oldest event first.
#[utoipa::path(
    get,
    path = paths::AUDIT_ITEM,
    tag = "audit",
    params(("id" = i64, Path, description = "The remediation's id, as listings return it"), TimelineParams),
    responses(
        (status = 200, description = "The remediation and a page of its timeline; follow next_cursor for the rest", body = TimelineResponse),
        (status = 400, description = "The id is not a number, or the paging parameters are invalid", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such remediation (with archive=true, nor in the archive)", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "With archive=true, a file of the archive is missing or damaged (`archive-damaged`, naming it)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable (`database-unavailable`), or the summary was still taking in records stored before the read when its time ran out (`projection-behind`); with archive=true, also the archive cannot be read (`archive-unavailable`), or the search ran past its time (`query-timeout`); all with Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "With archive=true, another question over the archive is running; the service answers one at a time (`archive-busy`, with Retry-After)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[instrument(skip_all)]
pub(crate) async fn get(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
    params: Result<Query<TimelineParams>, QueryRejection>,
) -> Result<Json<TimelineResponse>, ApiError> {
    let Path(id) = id.map_err(|e| {
        ApiError::InvalidQuery(vec![FieldError::new("id", "integer", e.body_text())])
    })?;
    let Query(params) = params
        .map_err(|e| ApiError::InvalidQuery(vec![FieldError::new("", "query", e.body_text())]))?;
    let (query, archive) = timeline_query(&params)?;
    let found = state
        .store
        .timeline_page(id, &query)
        .await
        .map_err(|e| ApiError::from_store(&e, state.settings.retry_after))?;
    let Some(timeline) = found else {
        if !archive {
            return Err(ApiError::NotFound(format!("no remediation with id {id}")));
        }
        if query.after.is_some() {
            // The archive answers a whole timeline, not the rest of a page
            // the database began.
            return Err(ApiError::InvalidQuery(vec![FieldError::new(
                "cursor",
                "archived",
                format!(
                    "remediation {id} is not in the database (it may have been archived since \
                     the first page): ask again without cursor for its whole timeline from the archive"
                ),
            )]));
        }
        let (remediation, timeline) =
            crate::archive::timeline(&state, id).await?.ok_or_else(|| {
                ApiError::NotFound(format!("no remediation with id {id}, nor in the archive"))
            })?;
        return Ok(Json(TimelineResponse {
            remediation,
            timeline,
            next_cursor: None,
        }));
    };
    Ok(Json(TimelineResponse {
        remediation: timeline.remediation,
        timeline: timeline.events,
        next_cursor: timeline.next.map(|c| c.encode()),
    }))
}

fn path_id(id: Result<Path<i64>, PathRejection>) -> Result<i64, ApiError> {
    id.map(|Path(id)| id)
        .map_err(|e| ApiError::InvalidQuery(vec![FieldError::new("id", "integer", e.body_text())]))
}

async fn set_hold(
    state: &AppState,
    id: i64,
    hold: bool,
    actor: &Actor,
) -> Result<Json<StoredAudit>, ApiError> {
    let row = state
        .store
        .set_legal_hold(id, hold, actor)
        .await
        .map_err(|e| ApiError::from_store(&e, state.settings.retry_after))?
        .ok_or_else(|| ApiError::NotFound(format!("no remediation with id {id}")))?;
    tracing::info!(
        id,
        subject = %actor.subject,
        "legal hold {}",
        if hold { "set" } else { "cleared" }
    );
    Ok(Json(row))
}

/// Puts a remediation under legal hold: retention never archives or deletes
/// it. Recorded in the admin log with the caller and the reason.
#[utoipa::path(
    put,
    path = paths::AUDIT_LEGAL_HOLD,
    tag = "audit",
    params(("id" = i64, Path, description = "The remediation's id"), ReasonParams),
    request_body(content = Option<ReasonBody>, description = "The reason, when it is not in the query", content_type = "application/json"),
    responses(
        (status = 200, description = "The remediation, now held", body = StoredAudit),
        (status = 400, description = "The id is not a number, or the reason is missing or invalid (type invalid-reason)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such remediation", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body stalled; retry", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "A body that is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable (`database-unavailable`), or the summary was still taking in records stored before the request when its time ran out (`projection-behind`); both with Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
#[instrument(skip_all)]
pub(crate) async fn hold(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    id: Result<Path<i64>, PathRejection>,
    reason: Result<Query<ReasonParams>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<StoredAudit>, ApiError> {
    let id = path_id(id)?;
    let actor = admin::actor(&state, caller.map(|c| c.0), reason, &headers, body).await?;
    set_hold(&state, id, true, &actor).await
}

/// Clears a remediation's legal hold; retention treats it by the policy
/// again. Recorded in the admin log with the caller and the reason.
#[utoipa::path(
    delete,
    path = paths::AUDIT_LEGAL_HOLD,
    tag = "audit",
    params(("id" = i64, Path, description = "The remediation's id"), ReasonParams),
    request_body(content = Option<ReasonBody>, description = "The reason, when it is not in the query", content_type = "application/json"),
    responses(
        (status = 200, description = "The remediation, no longer held", body = StoredAudit),
        (status = 400, description = "The id is not a number, or the reason is missing or invalid (type invalid-reason)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such remediation", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body stalled; retry", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "A body that is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable (`database-unavailable`), or the summary was still taking in records stored before the request when its time ran out (`projection-behind`); both with Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
#[instrument(skip_all)]
pub(crate) async fn release(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    id: Result<Path<i64>, PathRejection>,
    reason: Result<Query<ReasonParams>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<StoredAudit>, ApiError> {
    let id = path_id(id)?;
    let actor = admin::actor(&state, caller.map(|c| c.0), reason, &headers, body).await?;
    set_hold(&state, id, false, &actor).await
}

/// Soft-deletes a remediation: every read hides it at once, and the next
/// retention run moves it (marked deleted) to the archive. Recorded in the
/// admin log with the caller and the reason.
#[utoipa::path(
    delete,
    path = paths::AUDIT_ITEM,
    tag = "audit",
    params(("id" = i64, Path, description = "The remediation's id"), ReasonParams),
    request_body(content = Option<ReasonBody>, description = "The reason, when it is not in the query", content_type = "application/json"),
    responses(
        (status = 204, description = "Deleted: hidden from reads, archived by the next retention run"),
        (status = 400, description = "The id is not a number, or the reason is missing or invalid (type invalid-reason)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such remediation, or already deleted", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body stalled; retry", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Under legal hold; clear the hold first", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "A body that is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable (`database-unavailable`), or the summary was still taking in records stored before the request when its time ran out (`projection-behind`); both with Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
#[instrument(skip_all)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    id: Result<Path<i64>, PathRejection>,
    reason: Result<Query<ReasonParams>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let id = path_id(id)?;
    let actor = admin::actor(&state, caller.map(|c| c.0), reason, &headers, body).await?;
    match state
        .store
        .soft_delete(id, chrono::Utc::now(), &actor)
        .await
        .map_err(|e| ApiError::from_store(&e, state.settings.retry_after))?
    {
        DeleteOutcome::Deleted(_) => {
            tracing::info!(id, subject = %actor.subject, "remediation soft-deleted");
            Ok(StatusCode::NO_CONTENT)
        }
        DeleteOutcome::Held => Err(ApiError::Conflict(format!(
            "remediation {id} is under legal hold; clear the hold (DELETE .../{id}/legal-hold) before deleting it"
        ))),
        DeleteOutcome::NotFound => Err(ApiError::NotFound(format!("no remediation with id {id}"))),
    }
}
