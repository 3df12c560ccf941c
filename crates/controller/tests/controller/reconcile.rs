//! The reconcile loop against a scripted API server (tower-test, as
//! kube-rs/controller-rs does) and a real `Publisher` sending to a local
//! recording audit service.
//!
//! Each scenario asserts the exact method, path and body of every request the
//! reconcile makes, in order, and answers it. A request the script does not
//! expect is never answered, so the reconcile hangs and the test's timeout
//! fails it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use http::Method;
use kube::runtime::controller::Action;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use remaudit_client::{Publisher, PublisherSettings};
use remaudit_controller::reconcile::{self, Context, DEFAULT_REQUEUE};
use remaudit_controller::{RemediationPhase, RemediationRequest, Transition, transition_event_id};
use remaudit_model::{CrdStatusSnapshot, RemediationOrchestrationAudit, ServiceCrdStatuses};
use serde_json::{Value, json};

use crate::helpers::{at, request, t0};

/// Longest any one scenario may take.
const LIMIT: Duration = Duration::from_secs(20);

/// A scripted Kubernetes API server.
pub mod mock {
    use http::{Method, Request, Response};
    use kube::client::Body;
    use serde_json::{Value, json};
    use tower_test::mock::{Handle, SendResponse};

    /// The test's side of the client's connection.
    pub struct ApiServer(Handle<Request<Body>, Response<Body>>);

    /// A client whose every request goes to the returned [`ApiServer`].
    pub fn client() -> (kube::Client, ApiServer) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        (kube::Client::new(service, "default"), ApiServer(handle))
    }

    /// One request received, waiting for its answer.
    pub struct Call {
        /// Its JSON body (`null` when empty).
        pub body: Value,
        respond: SendResponse<Response<Body>>,
    }

    impl ApiServer {
        /// Takes the next request and asserts its method and path (with query).
        pub async fn expect(&mut self, method: Method, path: &str) -> Call {
            let (request, respond) = self
                .0
                .next_request()
                .await
                .expect("the client sends another request");
            let uri = request.uri().to_string();
            assert_eq!(
                (request.method(), uri.as_str()),
                (&method, path),
                "unexpected request"
            );
            let bytes = request
                .into_body()
                .collect_bytes()
                .await
                .expect("a readable body");
            let body = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).expect("a JSON body")
            };
            Call { body, respond }
        }

        /// The next request as it came, or `None` once the client is dropped.
        pub async fn next_raw(&mut self) -> Option<(Request<Body>, SendResponse<Response<Body>>)> {
            self.0.next_request().await
        }

        /// Asserts that the client sends nothing more before it is dropped.
        pub async fn done(mut self) {
            if let Some((request, _)) = self.0.next_request().await {
                panic!("unexpected request {} {}", request.method(), request.uri());
            }
        }
    }

    impl Call {
        /// Answers with `status` and a JSON body.
        pub fn reply(self, status: u16, body: &Value) {
            let response = Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(body).expect("JSON")))
                .expect("a valid response");
            self.respond.send_response(response);
        }

        /// Answers 200 with `body`.
        pub fn ok(self, body: &Value) {
            self.reply(200, body);
        }

        /// Answers with a Kubernetes `Status` failure.
        pub fn fail(self, code: u16, reason: &str) {
            let status = json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": format!("{reason} (scripted)"),
                "reason": reason,
                "code": code,
            });
            self.reply(code, &status);
        }

        /// Answers 404 `NotFound`.
        pub fn not_found(self) {
            self.fail(404, "NotFound");
        }
    }

    /// Applies a JSON merge patch (RFC 7386) to `target`, as the API server does.
    pub fn merge(target: &mut Value, patch: &Value) {
        match (target, patch) {
            (Value::Object(t), Value::Object(p)) => {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
            (t, p) => *t = p.clone(),
        }
    }
}

use mock::{ApiServer, Call};

/// Where the request and its children live.
const NS: &str = "prod";
const RR_PATH: &str =
    "/apis/remediation.kubernaut.io/v1alpha1/namespaces/prod/remediationrequests/rr-1";
const QUERY: &str = "?&fieldManager=remaudit-controller";

/// One child kind's API coordinates.
#[derive(Clone, Copy)]
struct ChildKind {
    api_version: &'static str,
    kind: &'static str,
    plural: &'static str,
    suffix: &'static str,
}

const RP: ChildKind = ChildKind {
    api_version: "remediationprocessing.kubernaut.io/v1alpha1",
    kind: "RemediationProcessing",
    plural: "remediationprocessings",
    suffix: "processing",
};
const AIA: ChildKind = ChildKind {
    api_version: "aianalysis.kubernaut.io/v1alpha1",
    kind: "AIAnalysis",
    plural: "aianalyses",
    suffix: "analysis",
};
const WE: ChildKind = ChildKind {
    api_version: "workflowexecution.kubernaut.io/v1alpha1",
    kind: "WorkflowExecution",
    plural: "workflowexecutions",
    suffix: "workflow",
};

impl ChildKind {
    fn name(self) -> String {
        format!("rr-1-{}", self.suffix)
    }

    fn collection(self) -> String {
        format!("/apis/{}/namespaces/{NS}/{}", self.api_version, self.plural)
    }

    fn path(self) -> String {
        format!("{}/{}", self.collection(), self.name())
    }

    /// The child as the API server shows it: created at `created`, owned by
    /// the request, with `status`.
    fn object(self, created: DateTime<Utc>, status: &Value) -> Value {
        let name = self.name();
        json!({
            "apiVersion": self.api_version,
            "kind": self.kind,
            "metadata": {
                "name": name,
                "namespace": NS,
                "uid": format!("uid-of-{name}"),
                "resourceVersion": "7",
                "creationTimestamp": created,
                "ownerReferences": [owner()],
            },
            "spec": { "remediationRequestRef": { "name": "rr-1" } },
            "status": status,
        })
    }
}

fn owner() -> Value {
    json!({
        "apiVersion": "remediation.kubernaut.io/v1alpha1",
        "kind": "RemediationRequest",
        "name": "rr-1",
        "uid": "uid-1",
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

fn transition(phase: RemediationPhase, sequence: u32, time: DateTime<Utc>) -> Transition {
    Transition {
        phase,
        sequence,
        time,
    }
}

/// The request `rr-1` (uid `uid-1`, created at `t0`) with this status (JSON)
/// at resourceVersion 100.
fn stored(status: Option<Value>) -> RemediationRequest {
    let mut value = serde_json::to_value(request("rr-1", "uid-1")).expect("serialises");
    value["metadata"]["resourceVersion"] = json!("100");
    if let Some(status) = status {
        value["status"] = status;
    }
    serde_json::from_value(value).expect("a valid request")
}

/// The status right after the first reconcile (entered `processing` at `at(5)`),
/// already audited.
fn processing_status() -> Value {
    let t1 = transition(RemediationPhase::Processing, 1, at(5));
    json!({
        "phase": "processing",
        "remediationProcessingRef": { "name": "rr-1-processing" },
        "startTime": at(5),
        "phaseStartTime": at(5),
        "duplicateCount": 0,
        "lastTransition": t1,
        "lastAuditedTransition": t1,
    })
}

/// The status after `analyzing` was entered at `at(30)`; `audited` says
/// whether that transition was handed to the publisher.
fn analyzing_status(audited: bool) -> Value {
    let t1 = transition(RemediationPhase::Processing, 1, at(5));
    let t2 = transition(RemediationPhase::Analyzing, 2, at(30));
    json!({
        "phase": "analyzing",
        "remediationProcessingRef": { "name": "rr-1-processing" },
        "aiAnalysisRef": { "name": "rr-1-analysis" },
        "startTime": at(5),
        "phaseStartTime": at(30),
        "duplicateCount": 0,
        "lastTransition": t2,
        "lastAuditedTransition": if audited { &t2 } else { &t1 },
    })
}

/// A local audit service that stores every batch it is sent.
struct AuditSink {
    url: String,
    records: Arc<Mutex<Vec<Value>>>,
}

async fn audit_sink() -> AuditSink {
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::post;

    type Records = Arc<Mutex<Vec<Value>>>;
    async fn batch(
        State(records): State<Records>,
        axum::Json(items): axum::Json<Vec<Value>>,
    ) -> (StatusCode, axum::Json<Value>) {
        let answers: Vec<Value> = (0..items.len())
            .map(|index| json!({ "index": index, "status": "created" }))
            .collect();
        records.lock().expect("lock").extend(items);
        let created = answers.len();
        let answer = json!({
            "created": created, "duplicates": 0, "rejected": 0, "conflicts": 0, "items": answers
        });
        (StatusCode::OK, axum::Json(answer))
    }

    let records: Records = Arc::default();
    let app = axum::Router::new()
        .route("/api/v1/audit/remediation-orchestration/batch", post(batch))
        .with_state(records.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let url = format!("http://{}", listener.local_addr().expect("bound"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    AuditSink { url, records }
}

impl AuditSink {
    /// Waits until `publisher` has delivered everything, then returns what arrived.
    async fn delivered(&self, publisher: &Publisher) -> Vec<RemediationOrchestrationAudit> {
        tokio::time::timeout(LIMIT, publisher.flush())
            .await
            .expect("the publisher delivers within the limit");
        self.records
            .lock()
            .expect("lock")
            .iter()
            .map(|v| serde_json::from_value(v.clone()).expect("a valid record"))
            .collect()
    }
}

fn publisher_config(url: &str) -> PublisherSettings {
    PublisherSettings {
        url: url.to_owned(),
        linger: Duration::ZERO,
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        ..PublisherSettings::default()
    }
}

/// A context on a scripted API server, publishing to `config`, with the clock stopped at `now`.
fn context(config: PublisherSettings, now: DateTime<Utc>) -> (Arc<Context>, ApiServer, Publisher) {
    let (client, server) = mock::client();
    let publisher = Publisher::start(config).expect("the publisher starts");
    let ctx = Context::new(client, publisher.clone()).with_clock(move || now);
    (Arc::new(ctx), server, publisher)
}

/// Runs one reconcile of `request` while `script` plays the API server.
async fn reconcile_with(
    request: RemediationRequest,
    ctx: Arc<Context>,
    server: &mut ApiServer,
    script: impl AsyncFnOnce(&mut ApiServer),
) -> Result<Action, reconcile::Error> {
    let run = async {
        let (result, ()) =
            tokio::join!(reconcile::reconcile(Arc::new(request), ctx), script(server));
        result
    };
    tokio::time::timeout(LIMIT, run)
        .await
        .expect("the reconcile finishes within the limit")
}

/// Answers the three child reads: `objects` in order (processing, analysis,
/// workflow), `None` for not found.
async fn children(server: &mut ApiServer, objects: [Option<Value>; 3]) {
    for (kind, object) in [RP, AIA, WE].into_iter().zip(objects) {
        let call = server.expect(Method::GET, &kind.path()).await;
        match object {
            Some(o) => call.ok(&o),
            None => call.not_found(),
        }
    }
}

/// Expects the create of `kind`, checks the object sent and answers as the
/// API server would (stamped at `created`); returns the body sent.
async fn create(server: &mut ApiServer, kind: ChildKind, created: DateTime<Utc>) -> Value {
    let call = server
        .expect(Method::POST, &format!("{}{QUERY}", kind.collection()))
        .await;
    let sent = call.body.clone();
    assert_eq!(sent["apiVersion"], kind.api_version);
    assert_eq!(sent["kind"], kind.kind);
    assert_eq!(sent["metadata"]["name"], kind.name().as_str());
    assert_eq!(sent["metadata"]["namespace"], NS);
    assert_eq!(sent["metadata"]["ownerReferences"], json!([owner()]));
    assert_eq!(
        sent["spec"],
        json!({ "remediationRequestRef": { "name": "rr-1" } })
    );
    let mut answer = sent.clone();
    mock::merge(&mut answer, &kind.object(created, &Value::Null));
    call.reply(201, &answer);
    sent
}

/// Expects the status write and checks its body exactly; answers with the
/// request patched.
async fn write_status(server: &mut ApiServer, request: &RemediationRequest, status: &Value) {
    let call = server
        .expect(Method::PATCH, &format!("{RR_PATH}/status{QUERY}"))
        .await;
    assert_eq!(
        call.body,
        json!({ "metadata": { "resourceVersion": "100" }, "status": status }),
        "the status write"
    );
    answer_patch(call, request);
}

/// Expects the `lastAuditedTransition` patch of `transition`.
async fn mark_audited(server: &mut ApiServer, request: &RemediationRequest, t: &Transition) {
    let call = server
        .expect(Method::PATCH, &format!("{RR_PATH}/status{QUERY}"))
        .await;
    assert_eq!(
        call.body,
        json!({ "status": { "lastAuditedTransition": t } }),
        "the mark-audited patch"
    );
    answer_patch(call, request);
}

fn answer_patch(call: Call, request: &RemediationRequest) {
    let mut object = serde_json::to_value(request).expect("serialises");
    mock::merge(&mut object, &call.body);
    object["metadata"]["resourceVersion"] = json!("101");
    call.ok(&object);
}

fn statuses(record: &RemediationOrchestrationAudit) -> ServiceCrdStatuses {
    serde_json::from_str(
        record
            .service_crd_statuses
            .as_ref()
            .expect("always sent")
            .get(),
    )
    .expect("the design's shape")
}

fn snapshot(phase: &str, created: DateTime<Utc>, done: Option<DateTime<Utc>>) -> CrdStatusSnapshot {
    CrdStatusSnapshot {
        phase: phase.to_owned(),
        start_time: created,
        completion_time: done,
        success: phase == "completed",
        error: None,
    }
}

/// A counter's name, labels and value.
type Count = (String, Vec<(String, String)>, u64);

/// The counters recorded so far (taking a snapshot resets them): name,
/// labels and value.
fn counters(snapshotter: &Snapshotter) -> Vec<Count> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, .., value)| {
            let n = match value {
                DebugValue::Counter(n) => n,
                // A histogram counts its samples.
                DebugValue::Histogram(samples) => samples.len() as u64,
                DebugValue::Gauge(_) => return None,
            };
            let labels = key
                .key()
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            Some((key.key().name().to_owned(), labels, n))
        })
        .collect()
}

/// The value of the counter `name` with this label, 0 when never incremented.
fn counter(counters: &[Count], name: &str, label: (&str, &str)) -> u64 {
    counters
        .iter()
        .filter(|(n, labels, _)| {
            n == name && labels.iter().any(|(k, v)| k == label.0 && v == label.1)
        })
        .map(|(.., value)| value)
        .sum()
}

#[tokio::test]
async fn a_pending_request_gets_its_processing_child_and_one_audit_record() {
    let sink = audit_sink().await;
    let now = at(5);
    let (ctx, mut server, publisher) = context(publisher_config(&sink.url), now);
    let request = stored(None);
    let t1 = transition(RemediationPhase::Processing, 1, now);

    let answer = request.clone();
    let action = reconcile_with(request, ctx, &mut server, async |server| {
        children(server, [None, None, None]).await;
        let sent = create(server, RP, now).await;
        assert_eq!(sent["status"], Value::Null, "no status on create");
        let status = json!({
            "phase": "processing",
            "remediationProcessingRef": { "name": "rr-1-processing" },
            "startTime": now,
            "phaseStartTime": now,
            "duplicateCount": 0,
            "lastTransition": t1,
        });
        write_status(server, &answer, &status).await;
        mark_audited(server, &answer, &t1).await;
    })
    .await
    .expect("reconciled");
    assert_eq!(
        action,
        Action::requeue(Duration::from_mins(5)),
        "at the processing deadline"
    );

    let records = sink.delivered(&publisher).await;
    assert_eq!(records.len(), 1, "exactly one record: {records:?}");
    let r = &records[0];
    assert_eq!(r.alert_fingerprint, "fp-rr-1");
    assert_eq!(r.remediation_name, "rr-1");
    assert_eq!(r.namespace.as_deref(), Some(NS));
    assert_eq!(r.overall_phase, "processing");
    assert_eq!(r.start_time, t0(), "the request's creation time");
    assert_eq!(r.completion_time, None);
    assert_eq!(
        r.remediation_processing_name.as_deref(),
        Some("rr-1-processing")
    );
    assert_eq!(r.ai_analysis_name, None);
    assert_eq!(r.workflow_execution_name, None);
    assert_eq!(r.event_id, Some(transition_event_id("uid-1", &t1)));
    assert_eq!(r.event_time, Some(now));
    assert_eq!(r.failure_phase, None);
    assert_eq!(r.failure_reason, None);
    assert_eq!(r.timeout_phase, None);
    let s = statuses(r);
    assert_eq!(
        s.remediation_processing,
        Some(snapshot("pending", now, None)),
        "the child just created"
    );
    assert_eq!(s.ai_analysis, None);
    assert_eq!(s.workflow_execution, None);
}

#[tokio::test]
async fn a_completed_processing_child_leads_to_analyzing() {
    let sink = audit_sink().await;
    let now = at(30);
    let (ctx, mut server, publisher) = context(publisher_config(&sink.url), now);
    let request = stored(Some(processing_status()));
    let t2 = transition(RemediationPhase::Analyzing, 2, now);
    let done = json!({ "phase": "completed", "completedAt": at(20) });

    let answer = request.clone();
    let action = reconcile_with(request, ctx, &mut server, async |server| {
        children(server, [Some(RP.object(at(5), &done)), None, None]).await;
        create(server, AIA, now).await;
        let mut status = analyzing_status(true);
        status["lastAuditedTransition"] = processing_status()["lastAuditedTransition"].clone();
        write_status(server, &answer, &status).await;
        mark_audited(server, &answer, &t2).await;
    })
    .await
    .expect("reconciled");
    assert_eq!(action, Action::requeue(Duration::from_mins(10)));

    let records = sink.delivered(&publisher).await;
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!(r.overall_phase, "analyzing");
    assert_eq!(r.start_time, t0());
    assert_eq!(r.event_id, Some(transition_event_id("uid-1", &t2)));
    assert_eq!(r.event_time, Some(now));
    assert_eq!(
        r.remediation_processing_name.as_deref(),
        Some("rr-1-processing")
    );
    assert_eq!(r.ai_analysis_name.as_deref(), Some("rr-1-analysis"));
    assert_eq!(r.workflow_execution_name, None);
    let s = statuses(r);
    assert_eq!(
        s.remediation_processing,
        Some(snapshot("completed", at(5), Some(at(20))))
    );
    assert_eq!(s.ai_analysis, Some(snapshot("pending", now, None)));
}

#[tokio::test]
async fn a_failed_child_fails_the_remediation_with_the_failure_in_the_record() {
    let sink = audit_sink().await;
    let now = at(90);
    let (ctx, mut server, publisher) = context(publisher_config(&sink.url), now);
    let request = stored(Some(analyzing_status(true)));
    let t3 = transition(RemediationPhase::Failed, 3, now);
    let done = json!({ "phase": "completed", "completedAt": at(20) });
    let failed =
        json!({ "phase": "failed", "completedAt": at(80), "errorMessage": "model unavailable" });

    let answer = request.clone();
    let action = reconcile_with(request, ctx, &mut server, async |server| {
        children(
            server,
            [
                Some(RP.object(at(5), &done)),
                Some(AIA.object(at(30), &failed)),
                None,
            ],
        )
        .await;
        let mut status = analyzing_status(true);
        let audited = status["lastAuditedTransition"].clone();
        mock::merge(
            &mut status,
            &json!({
                "phase": "failed",
                "phaseStartTime": now,
                "completionTime": now,
                "failedPhase": "analyzing",
                "errorMessage": "model unavailable",
                "lastTransition": t3,
                "lastAuditedTransition": audited,
            }),
        );
        write_status(server, &answer, &status).await;
        mark_audited(server, &answer, &t3).await;
    })
    .await
    .expect("reconciled");
    assert_eq!(action, Action::requeue(DEFAULT_REQUEUE), "no deadline left");

    let records = sink.delivered(&publisher).await;
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!(r.overall_phase, "failed");
    assert_eq!(r.failure_phase.as_deref(), Some("analyzing"));
    assert_eq!(r.failure_reason.as_deref(), Some("model unavailable"));
    assert_eq!(r.completion_time, Some(now));
    assert_eq!(r.event_id, Some(transition_event_id("uid-1", &t3)));
    assert_eq!(r.ai_analysis_name.as_deref(), Some("rr-1-analysis"));
    let s = statuses(r);
    assert_eq!(
        s.ai_analysis,
        Some(CrdStatusSnapshot {
            error: Some("model unavailable".to_owned()),
            ..snapshot("failed", at(30), Some(at(80)))
        })
    );
}

#[tokio::test]
async fn a_failure_with_a_megabyte_error_message_is_still_audited() {
    let sink = audit_sink().await;
    let now = at(90);
    let (ctx, mut server, publisher) = context(publisher_config(&sink.url), now);
    let request = stored(Some(analyzing_status(true)));
    let t3 = transition(RemediationPhase::Failed, 3, now);
    // 1 MiB of one- to four-byte characters, quotes, newlines and a NUL.
    let message = "x\0aé€😀\"\n"
        .chars()
        .cycle()
        .take(1 << 20)
        .collect::<String>();
    let done = json!({ "phase": "completed", "completedAt": at(20) });
    let failed = json!({ "phase": "failed", "completedAt": at(80), "errorMessage": message });

    // The status carries the message cut as the record does.
    let written = Mutex::new(String::new());
    let answer = request.clone();
    reconcile_with(request, ctx, &mut server, async |server| {
        children(
            server,
            [
                Some(RP.object(at(5), &done)),
                Some(AIA.object(at(30), &failed)),
                None,
            ],
        )
        .await;
        let mut status = analyzing_status(true);
        let audited = status["lastAuditedTransition"].clone();
        mock::merge(
            &mut status,
            &json!({
                "phase": "failed",
                "phaseStartTime": now,
                "completionTime": now,
                "failedPhase": "analyzing",
                "lastTransition": t3,
                "lastAuditedTransition": audited,
            }),
        );
        let call = server
            .expect(Method::PATCH, &format!("{RR_PATH}/status{QUERY}"))
            .await;
        let sent = call.body["status"]["errorMessage"]
            .as_str()
            .expect("an error message")
            .to_owned();
        status["errorMessage"] = json!(sent);
        assert_eq!(
            call.body,
            json!({ "metadata": { "resourceVersion": "100" }, "status": status }),
            "the status write"
        );
        answer_patch(call, &answer);
        *written.lock().expect("lock") = sent;
        mark_audited(server, &answer, &t3).await;
    })
    .await
    .expect("reconciled");

    let records = sink.delivered(&publisher).await;
    assert_eq!(records.len(), 1);
    let record = records.into_iter().next().expect("one");
    let limits = remaudit_model::Limits::default();
    let reason = record.failure_reason.clone().expect("a failure reason");
    assert_eq!(
        reason,
        *written.lock().expect("lock"),
        "the status and the record say the same"
    );
    assert!(reason.len() <= limits.max_failure_reason_bytes);
    assert!(
        reason.contains("[truncated "),
        "marked as cut: {}",
        &reason[reason.len() - 40..]
    );
    assert!(
        message
            .replace('\0', "\u{FFFD}")
            .starts_with(reason.split("… [truncated").next().expect("kept")),
        "the start of the message is kept"
    );
    let error = statuses(&record)
        .ai_analysis
        .and_then(|s| s.error)
        .expect("the child's error");
    assert!(error.contains("[truncated "));
    // The service's own rules accept the record, so its answer is not a
    // final refusal that would leave the failure unaudited.
    record
        .validate(now, &limits)
        .expect("the published record passes the service's validation");
}

#[tokio::test]
async fn nothing_changed_means_no_create_no_status_write_and_no_publish() {
    let sink = audit_sink().await;
    let (ctx, mut server, publisher) = context(publisher_config(&sink.url), at(60));
    let request = stored(Some(processing_status()));
    let running = json!({ "phase": "running" });

    let action = reconcile_with(request, ctx, &mut server, async |server| {
        children(server, [Some(RP.object(at(5), &running)), None, None]).await;
    })
    .await
    .expect("reconciled");
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(300 - 55)),
        "at the processing deadline"
    );
    assert_eq!(publisher.pending(), 0, "nothing was published");
    assert!(sink.delivered(&publisher).await.is_empty());
}

#[tokio::test]
async fn a_finished_and_audited_request_is_not_read_again() {
    let sink = audit_sink().await;
    let (ctx, mut server, publisher) = context(publisher_config(&sink.url), at(500));
    let t3 = transition(RemediationPhase::Completed, 4, at(400));
    let request = stored(Some(json!({
        "phase": "completed",
        "completionTime": at(400),
        "duplicateCount": 0,
        "lastTransition": t3,
        "lastAuditedTransition": t3,
    })));

    let action = reconcile_with(request, ctx, &mut server, async |_| {})
        .await
        .expect("reconciled");
    assert_eq!(action, Action::await_change());
    assert!(sink.delivered(&publisher).await.is_empty());
}

#[tokio::test]
async fn a_transition_written_but_never_published_is_published_once_on_the_next_reconcile() {
    let sink = audit_sink().await;
    let now = at(45);
    let (ctx, mut server, publisher) = context(publisher_config(&sink.url), now);
    // The earlier run wrote `analyzing` and stopped before publishing it.
    let request = stored(Some(analyzing_status(false)));
    let t2 = transition(RemediationPhase::Analyzing, 2, at(30));
    let done = json!({ "phase": "completed", "completedAt": at(20) });
    let running = json!({ "phase": "running" });

    let answer = request.clone();
    reconcile_with(request, ctx, &mut server, async |server| {
        children(
            server,
            [
                Some(RP.object(at(5), &done)),
                Some(AIA.object(at(30), &running)),
                None,
            ],
        )
        .await;
        // No status write: nothing new was decided.
        mark_audited(server, &answer, &t2).await;
    })
    .await
    .expect("reconciled");

    let records = sink.delivered(&publisher).await;
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!(r.overall_phase, "analyzing");
    assert_eq!(
        r.event_id,
        Some(transition_event_id("uid-1", &t2)),
        "the id the lost publish would have had"
    );
    assert_eq!(r.event_time, Some(at(30)), "when the transition happened");
}

#[tokio::test]
async fn a_missed_transition_is_published_before_a_new_one_replaces_it() {
    let sink = audit_sink().await;
    let now = at(70);
    let (ctx, mut server, publisher) = context(publisher_config(&sink.url), now);
    let request = stored(Some(analyzing_status(false)));
    let t2 = transition(RemediationPhase::Analyzing, 2, at(30));
    let t3 = transition(RemediationPhase::Executing, 3, now);
    let done = |at| json!({ "phase": "completed", "completedAt": at });

    let answer = request.clone();
    reconcile_with(request, ctx, &mut server, async |server| {
        children(
            server,
            [
                Some(RP.object(at(5), &done(at(20)))),
                Some(AIA.object(at(30), &done(at(60)))),
                None,
            ],
        )
        .await;
        create(server, WE, now).await;
        let mut status = analyzing_status(false);
        mock::merge(
            &mut status,
            &json!({
                "phase": "executing",
                "workflowExecutionRef": { "name": "rr-1-workflow" },
                "phaseStartTime": now,
                "lastTransition": t3,
            }),
        );
        write_status(server, &answer, &status).await;
        mark_audited(server, &answer, &t3).await;
    })
    .await
    .expect("reconciled");

    let records = sink.delivered(&publisher).await;
    let ids: Vec<_> = records
        .iter()
        .map(|r| (r.overall_phase.clone(), r.event_id))
        .collect();
    assert_eq!(
        ids,
        [
            (
                "analyzing".to_owned(),
                Some(transition_event_id("uid-1", &t2))
            ),
            (
                "executing".to_owned(),
                Some(transition_event_id("uid-1", &t3))
            ),
        ],
        "the missed transition first, then the new one"
    );
}

#[tokio::test]
async fn a_child_that_already_exists_counts_as_created() {
    let sink = audit_sink().await;
    let now = at(5);
    let (ctx, mut server, publisher) = context(publisher_config(&sink.url), now);
    let request = stored(None);
    let t1 = transition(RemediationPhase::Processing, 1, now);

    let answer = request.clone();
    reconcile_with(request, ctx, &mut server, async |server| {
        children(server, [None, None, None]).await;
        server
            .expect(Method::POST, &format!("{}{QUERY}", RP.collection()))
            .await
            .fail(409, "AlreadyExists");
        let call = server
            .expect(Method::PATCH, &format!("{RR_PATH}/status{QUERY}"))
            .await;
        assert_eq!(call.body["status"]["phase"], "processing");
        assert_eq!(
            call.body["status"]["remediationProcessingRef"],
            json!({ "name": "rr-1-processing" })
        );
        answer_patch(call, &answer);
        mark_audited(server, &answer, &t1).await;
    })
    .await
    .expect("reconciled");
    assert_eq!(sink.delivered(&publisher).await.len(), 1);
}

#[tokio::test]
async fn a_status_conflict_fails_the_reconcile_and_publishes_nothing() {
    let sink = audit_sink().await;
    let (ctx, mut server, publisher) = context(publisher_config(&sink.url), at(5));
    let request = stored(None);

    let result = reconcile_with(request, ctx, &mut server, async |server| {
        children(server, [None, None, None]).await;
        create(server, RP, at(5)).await;
        server
            .expect(Method::PATCH, &format!("{RR_PATH}/status{QUERY}"))
            .await
            .fail(409, "Conflict");
    })
    .await;
    let error = result.expect_err("a conflict is an error");
    assert!(
        matches!(error, reconcile::Error::WriteStatus { .. }),
        "{error}"
    );
    assert!(
        sink.delivered(&publisher).await.is_empty(),
        "a transition is published only once its status is written"
    );
}

#[tokio::test]
async fn with_the_storage_service_down_the_record_waits_in_the_spool_and_reconcile_succeeds() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let url = format!("http://{}", closed.local_addr().expect("bound"));
    drop(closed);
    let spool = tempfile::tempdir().expect("a temporary directory");
    let config = PublisherSettings {
        spool_dir: Some(spool.path().to_owned()),
        ..publisher_config(&url)
    };
    let now = at(5);
    let (ctx, mut server, publisher) = context(config, now);
    let request = stored(None);
    let t1 = transition(RemediationPhase::Processing, 1, now);

    let answer = request.clone();
    let action = reconcile_with(request, ctx, &mut server, async |server| {
        children(server, [None, None, None]).await;
        create(server, RP, now).await;
        server
            .expect(Method::PATCH, &format!("{RR_PATH}/status{QUERY}"))
            .await
            .ok(&serde_json::to_value(&answer).expect("serialises"));
        mark_audited(server, &answer, &t1).await;
    })
    .await
    .expect("audit never fails a reconcile");
    assert_eq!(action, Action::requeue(Duration::from_mins(5)));
    assert_eq!(publisher.pending(), 1, "the record waits for the service");
    let counts = counters(&snapshotter);
    assert_eq!(
        counter(
            &counts,
            reconcile::AUDIT_FAILURES_TOTAL,
            ("reason", "publish")
        ),
        0
    );
    assert_eq!(
        counter(
            &counts,
            reconcile::RECONCILE_DURATION_SECONDS,
            ("result", "ok")
        ),
        1
    );
    let report = publisher.shutdown(Duration::ZERO).await;
    assert_eq!(report.left_in_spool, 1, "kept for the next start");
}

#[tokio::test]
async fn a_publisher_that_refuses_is_counted_and_reconcile_still_succeeds() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let sink = audit_sink().await;
    let now = at(5);
    let (ctx, mut server, publisher) = context(publisher_config(&sink.url), now);
    publisher.shutdown(Duration::ZERO).await;
    let request = stored(None);

    let answer = request.clone();
    let action = reconcile_with(request, ctx, &mut server, async |server| {
        children(server, [None, None, None]).await;
        create(server, RP, now).await;
        server
            .expect(Method::PATCH, &format!("{RR_PATH}/status{QUERY}"))
            .await
            .ok(&serde_json::to_value(&answer).expect("serialises"));
        // Not marked audited: the next reconcile publishes it again.
    })
    .await
    .expect("audit never fails a reconcile");
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(30)),
        "retried soon"
    );
    let counts = counters(&snapshotter);
    assert_eq!(
        counter(
            &counts,
            reconcile::AUDIT_FAILURES_TOTAL,
            ("reason", "publish")
        ),
        1
    );
    assert_eq!(
        counter(
            &counts,
            reconcile::RECONCILE_DURATION_SECONDS,
            ("result", "ok")
        ),
        1
    );
}

#[tokio::test]
async fn a_failed_mark_audited_patch_is_counted_and_reconcile_still_succeeds() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let sink = audit_sink().await;
    let (ctx, mut server, publisher) = context(publisher_config(&sink.url), at(45));
    let request = stored(Some(analyzing_status(false)));
    let done = json!({ "phase": "completed", "completedAt": at(20) });
    let running = json!({ "phase": "running" });

    let action = reconcile_with(request, ctx, &mut server, async |server| {
        children(
            server,
            [
                Some(RP.object(at(5), &done)),
                Some(AIA.object(at(30), &running)),
                None,
            ],
        )
        .await;
        server
            .expect(Method::PATCH, &format!("{RR_PATH}/status{QUERY}"))
            .await
            .fail(500, "InternalError");
    })
    .await
    .expect("audit never fails a reconcile");
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));
    let counts = counters(&snapshotter);
    assert_eq!(
        counter(
            &counts,
            reconcile::AUDIT_FAILURES_TOTAL,
            ("reason", "mark_audited")
        ),
        1
    );
    assert_eq!(
        sink.delivered(&publisher).await.len(),
        1,
        "it was published"
    );
}

#[tokio::test]
async fn failures_back_off_and_a_success_resets_the_backoff() {
    let sink = audit_sink().await;
    let (ctx, mut server, _publisher) = context(publisher_config(&sink.url), at(60));
    let request = Arc::new(stored(Some(processing_status())));
    let error = || reconcile::Error::MissingField("test");
    let delays: Vec<_> = (0..10)
        .map(|_| reconcile::error_policy(request.clone(), &error(), ctx.clone()))
        .collect();
    assert_eq!(delays[0], Action::requeue(Duration::from_secs(2)));
    assert_eq!(delays[1], Action::requeue(Duration::from_secs(4)));
    assert_eq!(delays[2], Action::requeue(Duration::from_secs(8)));
    assert_eq!(delays[9], Action::requeue(Duration::from_mins(5)), "capped");

    let running = json!({ "phase": "running" });
    reconcile_with(
        (*request).clone(),
        ctx.clone(),
        &mut server,
        async |server| {
            children(server, [Some(RP.object(at(5), &running)), None, None]).await;
        },
    )
    .await
    .expect("reconciled");
    assert_eq!(
        reconcile::error_policy(request, &error(), ctx),
        Action::requeue(Duration::from_secs(2)),
        "back to the first delay"
    );
}

#[tokio::test]
async fn run_fails_with_advice_when_a_custom_resource_is_not_installed() {
    let (client, mut server) = mock::client();
    let sink = audit_sink().await;
    let publisher = Publisher::start(publisher_config(&sink.url)).expect("starts");
    let run = reconcile::run(
        client,
        publisher,
        Some(NS.to_owned()),
        tokio_util::sync::CancellationToken::new(),
    );
    let (result, ()) = tokio::time::timeout(
        LIMIT,
        async {
            tokio::join!(run, async {
                server
                    .expect(
                        Method::GET,
                        "/apis/remediation.kubernaut.io/v1alpha1/namespaces/prod/remediationrequests?&limit=1",
                    )
                    .await
                    .not_found();
            })
        },
    )
    .await
    .expect("within the limit");
    let error = result.expect_err("cannot start without the CRD");
    assert!(
        matches!(error, reconcile::Error::Unavailable { ref kind, .. } if kind == "RemediationRequest"),
        "{error}"
    );
    assert!(
        error.to_string().contains("CustomResourceDefinition"),
        "{error}"
    );
}

#[tokio::test]
async fn run_watches_the_request_and_its_three_children_until_shutdown() {
    let (client, mut server) = mock::client();
    let sink = audit_sink().await;
    let publisher = Publisher::start(publisher_config(&sink.url)).expect("starts");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let run = reconcile::run(client, publisher, Some(NS.to_owned()), shutdown.clone());
    let api_server = async {
        let mut watches = Vec::new();
        let mut listed = std::collections::BTreeSet::new();
        while let Some((request, respond)) = server.next_raw().await {
            let uri = request.uri().to_string();
            assert_eq!(request.method(), Method::GET, "{uri}");
            let collection = uri.split('?').next().unwrap_or_default().to_owned();
            if uri.contains("watch=true") {
                // Hold the watch open until the controller stops.
                watches.push((collection, respond));
                if watches.len() == 4 {
                    shutdown.cancel();
                }
            } else {
                listed.insert(collection);
                let list = json!({
                    "apiVersion": "v1",
                    "kind": "List",
                    "metadata": { "resourceVersion": "1" },
                    "items": [],
                });
                let response = http::Response::builder()
                    .status(200)
                    .body(kube::client::Body::from(
                        serde_json::to_vec(&list).expect("JSON"),
                    ))
                    .expect("a response");
                respond.send_response(response);
            }
        }
        let mut kinds: Vec<_> = watches.into_iter().map(|(c, _)| c).collect();
        kinds.sort();
        (listed, kinds)
    };
    let (result, (listed, watched)) =
        tokio::time::timeout(LIMIT, async { tokio::join!(run, api_server) })
            .await
            .expect("stops within the limit after shutdown");
    result.expect("a clean stop");
    let expected: Vec<String> = [
        "/apis/aianalysis.kubernaut.io/v1alpha1/namespaces/prod/aianalyses",
        "/apis/remediation.kubernaut.io/v1alpha1/namespaces/prod/remediationrequests",
        "/apis/remediationprocessing.kubernaut.io/v1alpha1/namespaces/prod/remediationprocessings",
        "/apis/workflowexecution.kubernaut.io/v1alpha1/namespaces/prod/workflowexecutions",
    ]
    .map(str::to_owned)
    .to_vec();
    assert_eq!(listed.into_iter().collect::<Vec<_>>(), expected);
    assert_eq!(watched, expected);
}
