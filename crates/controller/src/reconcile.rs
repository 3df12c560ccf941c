//! The reconcile loop: reads a `RemediationRequest` and its children from the
//! API server, carries out what [`decide`] says, and hands every phase
//! transition to the audit [`Publisher`].
//!
//! One reconcile, in this order (see the `orchestrate` module of this crate):
//! 1. read the three children (by the names in the status refs, else by
//!    [`child_name`]), keeping only those owned by this request's uid;
//! 2. `decide`; when the decision makes a new transition while the stored
//!    `lastTransition` was never handed to the publisher (the controller
//!    stopped between a status write and a publish), publish that missed one
//!    first, since the new status write replaces it;
//! 3. create the children the decision asks for (`AlreadyExists` is success);
//! 4. write the status when it changed (merge patch of the status
//!    subresource, with the `resourceVersion` read, so a stale read fails
//!    with a conflict instead of overwriting a newer status);
//! 5. when the status holds a transition not yet audited, publish its record
//!    and then patch `lastAuditedTransition`;
//! 6. requeue at the next timeout deadline.
//!
//! Audit never fails a reconcile: a refused publish or a failed
//! `lastAuditedTransition` patch is logged, counted in
//! `remaudit_controller_audit_failures_total`, and retried on a near requeue;
//! the server deduplicates by `event_id`, so a retry never counts twice.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use remaudit_client::Publisher;
use remaudit_model::RemediationOrchestrationAudit;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::instrument;

use crate::{
    AIAnalysis, Action as Step, ChildKind, ChildObject, Children, RemediationProcessing,
    RemediationRequest, RemediationRequestStatus, Transition, WorkflowExecution, audit_record,
    child_name, decide, mark_audited, unaudited_transition,
};

/// Requeue delay when no timeout deadline is pending: a safety net for missed watch events.
pub const DEFAULT_REQUEUE: Duration = Duration::from_mins(5);

/// Requeue delay after an audit failure, so the transition is retried soon.
const AUDIT_RETRY: Duration = Duration::from_secs(30);

/// Shortest requeue delay, so a deadline that has just passed does not spin.
const MIN_REQUEUE: Duration = Duration::from_secs(1);

/// First delay after a failed reconcile; it doubles with each failure in a row.
const ERROR_BACKOFF_START: Duration = Duration::from_secs(2);

/// Longest delay after failed reconciles.
const ERROR_BACKOFF_MAX: Duration = Duration::from_mins(5);

/// The field manager the controller's writes are recorded under.
pub const FIELD_MANAGER: &str = "remaudit-controller";

/// How long each reconcile took, in seconds, by `result` (`ok` or `error`);
/// its `_count` is the number of reconciles.
pub const RECONCILE_DURATION_SECONDS: &str = "remaudit_controller_reconcile_duration_seconds";
/// Audit failures, counted by `reason`: `publish` (the publisher refused the
/// record) or `mark_audited` (the `lastAuditedTransition` patch failed).
pub const AUDIT_FAILURES_TOTAL: &str = "remaudit_controller_audit_failures_total";

/// Something the reconcile loop could not do against the API server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object lacks a field the API server always sets.
    #[error("RemediationRequest without {0}: the API server always sets it; was it built by hand?")]
    MissingField(&'static str),
    /// Reading a child failed.
    #[error("cannot read {kind} {namespace}/{name}: {source}")]
    Read {
        /// The child's kind.
        kind: String,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// What the API server or the connection said.
        #[source]
        source: kube::Error,
    },
    /// Creating a child failed.
    #[error(
        "cannot create {kind} {namespace}/{name}: {source}; may the controller's service account create it?"
    )]
    Create {
        /// The child's kind.
        kind: String,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// What the API server or the connection said.
        #[source]
        source: kube::Error,
    },
    /// Writing the request's status failed (a conflict means it changed since it was read).
    #[error("cannot write the status of RemediationRequest {namespace}/{name}: {source}")]
    WriteStatus {
        /// The request's namespace.
        namespace: String,
        /// The request's name.
        name: String,
        /// What the API server or the connection said.
        #[source]
        source: kube::Error,
    },
    /// A resource kind the controller needs cannot be listed.
    #[error(
        "cannot list {kind}: {source}; is its CustomResourceDefinition installed (`remaudit crdgen | kubectl apply -f -`) and may the controller's service account list and watch it?"
    )]
    Unavailable {
        /// The kind.
        kind: String,
        /// What the API server or the connection said.
        #[source]
        source: kube::Error,
    },
}

/// Where the reconcile loop reads the time; replaceable in tests.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// What every reconcile shares: the API client, the audit publisher, the
/// clock and the per-request count of failures in a row (for backoff).
pub struct Context {
    client: Client,
    publisher: Publisher,
    clock: Clock,
    failures: Mutex<HashMap<(String, String), u32>>,
}

impl Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("publisher", &self.publisher)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context over this client and publisher, on the system clock.
    #[must_use]
    pub fn new(client: Client, publisher: Publisher) -> Self {
        describe_metrics();
        Self {
            client,
            publisher,
            clock: Arc::new(Utc::now),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// The same context reading the time from `clock` (for tests).
    #[must_use]
    pub fn with_clock(mut self, clock: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The publisher audit records go to.
    #[must_use]
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// Hands a record to the publisher; a refusal is logged and counted.
    fn publish(&self, record: RemediationOrchestrationAudit) -> bool {
        let phase = record.overall_phase.clone();
        match self.publisher.publish(record) {
            Ok(()) => true,
            Err(error) => {
                metrics::counter!(AUDIT_FAILURES_TOTAL, "reason" => "publish").increment(1);
                tracing::warn!(%error, %phase, "audit record of a transition not handed to the publisher; retrying on the next reconcile");
                false
            }
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), u32>> {
        self.failures.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Registers descriptions of the controller's metrics with the installed recorder.
pub fn describe_metrics() {
    metrics::describe_histogram!(
        RECONCILE_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "How long one RemediationRequest reconcile took, by result (ok or error); _count counts reconciles"
    );
    metrics::describe_counter!(
        AUDIT_FAILURES_TOTAL,
        "Phase transitions whose audit hand-over failed, by reason (publish or mark_audited); each is retried"
    );
}

/// The key of a request in the failure counts.
fn key(request: &RemediationRequest) -> (String, String) {
    (
        request.metadata.namespace.clone().unwrap_or_default(),
        request.name_any(),
    )
}

/// Reconciles one `RemediationRequest`: observe its children, decide, create
/// children, write the status, audit the transition, requeue.
///
/// # Errors
/// When the API server cannot be read or written (the controller retries
/// after [`error_policy`]'s delay). Audit failures are never errors.
#[instrument(skip_all, fields(name, namespace), err)]
pub async fn reconcile(
    request: Arc<RemediationRequest>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_request(&request, &ctx).await;
    let label = if result.is_ok() { "ok" } else { "error" };
    metrics::histogram!(RECONCILE_DURATION_SECONDS, "result" => label)
        .record(started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.failures().remove(&key(&request));
    }
    result
}

/// What to do after a failed reconcile: try again after a delay that
/// doubles with each failure in a row of the same request (2 s up to 5 min).
#[allow(
    clippy::needless_pass_by_value,
    reason = "kube's `Controller::run` takes the error policy with this signature"
)]
pub fn error_policy(request: Arc<RemediationRequest>, error: &Error, ctx: Arc<Context>) -> Action {
    let failures = {
        let mut all = ctx.failures();
        let n = all.entry(key(&request)).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = ERROR_BACKOFF_START
        .saturating_mul(2_u32.saturating_pow(failures.saturating_sub(1).min(16)))
        .min(ERROR_BACKOFF_MAX);
    tracing::warn!(
        %error,
        failures,
        retry_in_seconds = delay.as_secs(),
        "reconcile failed"
    );
    Action::requeue(delay)
}

/// The namespace and name of a request, and the handles on its kinds.
struct Apis<'a> {
    namespace: &'a str,
    name: &'a str,
    requests: Api<RemediationRequest>,
    processing: Api<RemediationProcessing>,
    analysis: Api<AIAnalysis>,
    workflow: Api<WorkflowExecution>,
}

async fn reconcile_request(request: &RemediationRequest, ctx: &Context) -> Result<Action, Error> {
    let name = request
        .metadata
        .name
        .as_deref()
        .ok_or(Error::MissingField("metadata.name"))?;
    let namespace = request
        .metadata
        .namespace
        .as_deref()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let span = tracing::Span::current();
    span.record("name", name);
    span.record("namespace", namespace);
    let uid = request
        .metadata
        .uid
        .as_deref()
        .filter(|u| !u.is_empty())
        .ok_or(Error::MissingField("metadata.uid"))?;

    if request.metadata.deletion_timestamp.is_some() {
        // Being deleted: the garbage collector removes the children; no
        // child may be created and no phase changes any more.
        return Ok(Action::await_change());
    }
    let stored = request.status.clone().unwrap_or_default();
    if stored.phase.unwrap_or_default().is_terminal() && unaudited_transition(&stored).is_none() {
        // Finished and audited: nothing can change any more.
        return Ok(Action::await_change());
    }

    let client = &ctx.client;
    let apis = Apis {
        namespace,
        name,
        requests: Api::namespaced(client.clone(), namespace),
        processing: Api::namespaced(client.clone(), namespace),
        analysis: Api::namespaced(client.clone(), namespace),
        workflow: Api::namespaced(client.clone(), namespace),
    };

    // 1. Observe.
    let children = observe(&apis, &stored, uid).await?;

    // 2. Decide.
    let now = (ctx.clock)();
    let decision = decide(request, &children, now);
    let mut audit_ok = true;
    if decision.transition.is_some()
        && let Some(missed) = unaudited_transition(&stored)
    {
        // The status write below replaces it: hand it over now or never.
        tracing::info!(phase = %missed.phase, sequence = missed.sequence, "publishing a transition missed by an earlier run");
        audit_ok &= ctx.publish(audit_record(request, &children, missed));
    }

    // 3. Create children.
    let mut seen = children;
    for Step::Create(child) in &decision.actions {
        create(&apis, child, &mut seen).await?;
    }

    // 4. Write the status.
    let current = if decision.status_changed(request) {
        write_status(&apis, request, &decision.status).await?;
        decision.applied_to(request)
    } else {
        request.clone()
    };
    if let Some(transition) = &decision.transition {
        tracing::info!(phase = %transition.phase, sequence = transition.sequence, "phase changed");
    }

    // 5. Audit the latest transition.
    let status = current.status.clone().unwrap_or_default();
    if let Some(transition) = unaudited_transition(&status) {
        if ctx.publish(audit_record(&current, &seen, transition)) {
            audit_ok &= mark_transition_audited(&apis, status.clone(), transition).await;
        } else {
            audit_ok = false;
        }
    }

    // 6. Requeue.
    let mut after = decision
        .requeue_after
        .unwrap_or(DEFAULT_REQUEUE)
        .max(MIN_REQUEUE);
    if !audit_ok {
        after = after.min(AUDIT_RETRY);
    }
    Ok(Action::requeue(after))
}

/// Reads the three children by name and keeps those owned by `uid`.
async fn observe(
    apis: &Apis<'_>,
    status: &RemediationRequestStatus,
    uid: &str,
) -> Result<Children, Error> {
    let named = |given: Option<&crate::ChildRef>, kind| {
        given.map_or_else(|| child_name(apis.name, kind), |r| r.name.clone())
    };
    Ok(Children {
        remediation_processing: get_owned(
            &apis.processing,
            apis.namespace,
            &named(
                status.remediation_processing_ref.as_ref(),
                ChildKind::RemediationProcessing,
            ),
            uid,
        )
        .await?,
        ai_analysis: get_owned(
            &apis.analysis,
            apis.namespace,
            &named(status.ai_analysis_ref.as_ref(), ChildKind::AIAnalysis),
            uid,
        )
        .await?,
        workflow_execution: get_owned(
            &apis.workflow,
            apis.namespace,
            &named(
                status.workflow_execution_ref.as_ref(),
                ChildKind::WorkflowExecution,
            ),
            uid,
        )
        .await?,
    })
}

/// The object named `name` when it exists and is owned by `uid`.
async fn get_owned<K>(
    api: &Api<K>,
    namespace: &str,
    name: &str,
    uid: &str,
) -> Result<Option<K>, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let found = api.get_opt(name).await.map_err(|source| Error::Read {
        kind: kind_of::<K>(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        source,
    })?;
    Ok(found.filter(|child| {
        let owned = child.owner_references().iter().any(|o| o.uid == uid);
        if !owned {
            tracing::warn!(
                kind = %K::kind(&()),
                child = name,
                "an object with the child's name exists but is not owned by this request; ignoring it"
            );
        }
        owned
    }))
}

fn kind_of<K: Resource<DynamicType = ()>>() -> String {
    K::kind(&()).into_owned()
}

/// Creates one child and puts what the API server answered into `seen`.
async fn create(apis: &Apis<'_>, child: &ChildObject, seen: &mut Children) -> Result<(), Error> {
    match child {
        ChildObject::RemediationProcessing(c) => {
            if let Some(made) = create_one(&apis.processing, apis.namespace, c).await? {
                seen.remediation_processing = Some(made);
            }
        }
        ChildObject::AIAnalysis(c) => {
            if let Some(made) = create_one(&apis.analysis, apis.namespace, c).await? {
                seen.ai_analysis = Some(made);
            }
        }
        ChildObject::WorkflowExecution(c) => {
            if let Some(made) = create_one(&apis.workflow, apis.namespace, c).await? {
                seen.workflow_execution = Some(made);
            }
        }
    }
    Ok(())
}

/// Creates `object`; `None` when it already exists (an earlier attempt made it).
async fn create_one<K>(api: &Api<K>, namespace: &str, object: &K) -> Result<Option<K>, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug,
{
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    };
    let name = object.meta().name.clone().unwrap_or_default();
    match api.create(&params, object).await {
        Ok(made) => {
            tracing::info!(kind = %K::kind(&()), child = %name, "created child");
            Ok(Some(made))
        }
        Err(kube::Error::Api(status)) if status.is_already_exists() => {
            tracing::debug!(kind = %K::kind(&()), child = %name, "child already exists");
            Ok(None)
        }
        Err(source) => Err(Error::Create {
            kind: kind_of::<K>(),
            namespace: namespace.to_owned(),
            name,
            source,
        }),
    }
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    }
}

/// Writes `status` with a merge patch that carries the `resourceVersion`
/// read, so the API server refuses it if the request changed meanwhile.
async fn write_status(
    apis: &Apis<'_>,
    request: &RemediationRequest,
    status: &RemediationRequestStatus,
) -> Result<(), Error> {
    let mut body = serde_json::json!({ "status": status });
    if let Some(version) = &request.metadata.resource_version {
        body["metadata"] = serde_json::json!({ "resourceVersion": version });
    }
    apis.requests
        .patch_status(apis.name, &patch_params(), &Patch::Merge(&body))
        .await
        .map_err(|source| Error::WriteStatus {
            namespace: apis.namespace.to_owned(),
            name: apis.name.to_owned(),
            source,
        })?;
    Ok(())
}

/// Records `transition` as `lastAuditedTransition`; `false` (logged and
/// counted) when the patch failed.
///
/// The patch sets that one field and carries no `resourceVersion`: it only
/// says "this transition was handed over", which stays true whatever else
/// changed meanwhile.
async fn mark_transition_audited(
    apis: &Apis<'_>,
    mut status: RemediationRequestStatus,
    transition: &Transition,
) -> bool {
    mark_audited(&mut status, transition);
    let body = serde_json::json!({
        "status": { "lastAuditedTransition": status.last_audited_transition }
    });
    match apis
        .requests
        .patch_status(apis.name, &patch_params(), &Patch::Merge(&body))
        .await
    {
        Ok(_) => true,
        Err(error) => {
            metrics::counter!(AUDIT_FAILURES_TOTAL, "reason" => "mark_audited").increment(1);
            tracing::warn!(%error, phase = %transition.phase, "cannot record the audited transition; it will be published again (the server deduplicates it)");
            false
        }
    }
}

/// Fails early, with advice, when a kind cannot be listed.
async fn check_listable<K>(api: &Api<K>) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    api.list(&ListParams::default().limit(1))
        .await
        .map(|_| ())
        .map_err(|source| Error::Unavailable {
            kind: kind_of::<K>(),
            source,
        })
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the controller over every `RemediationRequest` in `namespace` (all
/// namespaces when `None`), watching the three child kinds it owns, until
/// `shutdown` is cancelled; then lets reconciles in flight finish and returns.
///
/// The publisher stays the caller's: flush or shut it down after this returns.
///
/// # Errors
/// [`Error::Unavailable`] when a kind cannot be listed at start (its
/// custom resource definition is missing, or RBAC forbids it). Errors of single
/// reconciles and watch errors are logged and retried, never returned.
pub async fn run(
    client: Client,
    publisher: Publisher,
    namespace: Option<String>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let ns = namespace.as_deref();
    let requests = api::<RemediationRequest>(&client, ns);
    let processing = api::<RemediationProcessing>(&client, ns);
    let analysis = api::<AIAnalysis>(&client, ns);
    let workflow = api::<WorkflowExecution>(&client, ns);
    check_listable(&requests).await?;
    check_listable(&processing).await?;
    check_listable(&analysis).await?;
    check_listable(&workflow).await?;

    tracing::info!(namespace = ns.unwrap_or("(all)"), "controller starting");
    let context = Arc::new(Context::new(client, publisher));
    let config = watcher::Config::default();
    Controller::new(requests, config.clone())
        .owns(processing, config.clone())
        .owns(analysis, config.clone())
        .owns(workflow, config)
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::trace!(name = %object.name, "reconciled"),
                Err(error) => tracing::warn!(%error, "controller error"),
            }
        })
        .await;
    tracing::info!("controller stopped");
    Ok(())
}
