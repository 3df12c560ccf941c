//! `remaudit controller` and `remaudit serve --auth-kubernetes` against a
//! real kube-apiserver backed by etcd (`scripts/kube-apiserver`; see
//! docs/testing-kubernetes.md). Each test takes a namespace of its own, runs
//! its controllers in that namespace only (their Lease too), and plays the
//! child controllers itself by writing the children's status.
//!
//! The controller always runs as a ServiceAccount bound to the chart's
//! rules (`deploy/helm/remaudit/files/controller-rbac-rules.yaml`) with a
//! token from the `TokenRequest` API, never as the administrator, so that every
//! test also proves those rules sufficient.

mod cluster;

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound as _, Utc};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Resource};
use remaudit_api::audit::ListParams;
use remaudit_client::ApiClient;
use remaudit_controller::leader::LeaseConfig;
use remaudit_controller::{
    AIAnalysis, ChildKind, RemediationPhase, RemediationProcessing, RemediationRequest, Transition,
    WorkflowExecution, child_name, transition_event_id,
};
use remaudit_model::EventRecord;
use remaudit_testkit::wait_for;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use cluster::{
    CONTROLLER_RULES, Cluster, SERVER_RULES, Transitions, WAIT, chrono_time, controller, request,
    rules, serve,
};

/// What the test, as a child controller, did to one child.
#[derive(Clone, Copy)]
struct ChildState<'a> {
    phase: &'a str,
    completed: Option<DateTime<Utc>>,
    error: Option<&'a str>,
}

const PENDING: ChildState<'static> = ChildState {
    phase: "pending",
    completed: None,
    error: None,
};

/// One namespace with `remaudit serve` and the controller's ServiceAccount
/// kubeconfig in it.
struct Setup {
    cluster: Cluster,
    namespace: String,
    dir: tempfile::TempDir,
    url: String,
    serve: cluster::Process,
    kubeconfig: std::path::PathBuf,
    requests: Api<RemediationRequest>,
    transitions: Transitions,
}

impl Drop for Setup {
    /// A failed test shows the logs of its `remaudit` processes.
    fn drop(&mut self) {
        drop(cluster::LogsOnFailure(self.dir.path()));
    }
}

impl Setup {
    async fn new(prefix: &str) -> Self {
        let cluster = Cluster::connect().await;
        let namespace = cluster.namespace(prefix).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let (url, serve) = serve(dir.path(), &[], &[]).await;
        cluster
            .controller_account(&namespace, rules(CONTROLLER_RULES))
            .await;
        let token = cluster.token(&namespace, "remaudit-controller", &[]).await;
        let kubeconfig = cluster.kubeconfig(dir.path(), &token);
        let requests = Api::namespaced(cluster.admin.clone(), &namespace);
        let transitions = Transitions::watch(requests.clone());
        Self {
            cluster,
            namespace,
            dir,
            url,
            serve,
            kubeconfig,
            requests,
            transitions,
        }
    }

    fn controller(&self, identity: &str) -> cluster::Process {
        controller(
            self.dir.path(),
            &self.kubeconfig,
            &self.namespace,
            identity,
            &self.url,
        )
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
    {
        Api::namespaced(self.cluster.admin.clone(), &self.namespace)
    }

    async fn create(&self, name: &str, timeouts: Value) -> RemediationRequest {
        self.requests
            .create(&PostParams::default(), &request(name, &timeouts))
            .await
            .expect("create RemediationRequest")
    }

    /// Writes a child's status as its own controller would; the time it
    /// gave as `completedAt` when it finished it.
    async fn set_child<K>(
        &self,
        request: &str,
        kind: ChildKind,
        phase: &str,
        error: Option<&str>,
    ) -> Option<DateTime<Utc>>
    where
        K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let finished = matches!(phase, "completed" | "failed").then(Utc::now);
        let mut status = json!({ "phase": phase });
        if let Some(at) = finished {
            status["completedAt"] = json!(at);
        }
        if let Some(error) = error {
            status["errorMessage"] = json!(error);
        }
        self.api::<K>()
            .patch_status(
                &child_name(request, kind),
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
            .unwrap_or_else(|e| panic!("write the status of {request}'s {kind:?}: {e}"));
        finished
    }

    /// The creation time of a child.
    async fn child_created<K>(&self, request: &str, kind: ChildKind) -> DateTime<Utc>
    where
        K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let child = self
            .api::<K>()
            .get(&child_name(request, kind))
            .await
            .expect("child");
        chrono_time(child.meta().creation_timestamp.as_ref().expect("created"))
    }

    /// The stored timeline of `name` once it holds `count` events.
    async fn timeline(&self, name: &str, count: usize) -> Vec<EventRecord> {
        let client = ApiClient::new(&self.url).expect("client");
        let params = ListParams::default()
            .with_namespace(self.namespace.clone())
            .with_remediation_name(name);
        wait_for(
            &format!("{count} stored transitions of {name}"),
            WAIT,
            || {
                let (client, params) = (client.clone(), params.clone());
                async move {
                    let id = client.list(&params).await.ok()?.items.first()?.id;
                    let timeline = client.timeline_all(id).await.ok()?.timeline;
                    (timeline.len() >= count).then_some(timeline)
                }
            },
        )
        .await
    }
}

/// A time as the store keeps it: to the microsecond (the record as received
/// keeps every digit).
fn micros(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(6)
}

/// Compares a stored record with the expected one key by key; every key of
/// either must be equal (a missing key is `null`).
fn assert_fields(what: &str, actual: &Value, expected: &Value) {
    let (Value::Object(a), Value::Object(e)) = (actual, expected) else {
        panic!("{what}: not objects: {actual} / {expected}");
    };
    let mut wrong: Vec<(String, Value, Value)> = Vec::new();
    for key in a.keys().chain(e.keys()) {
        let (got, want) = (
            a.get(key).unwrap_or(&Value::Null),
            e.get(key).unwrap_or(&Value::Null),
        );
        if got != want && !wrong.iter().any(|(k, ..)| k == key) {
            wrong.push((key.clone(), got.clone(), want.clone()));
        }
    }
    assert!(
        wrong.is_empty(),
        "{what}: fields differ (field, stored, expected):\n{}",
        wrong
            .iter()
            .map(|(k, g, w)| format!("  {k}: {g} != {w}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A child's snapshot as the audit record carries it.
fn snapshot(created: DateTime<Utc>, child: ChildState<'_>) -> Value {
    let mut s = json!({
        "phase": child.phase,
        "startTime": created,
        "success": child.phase == "completed",
    });
    if let Some(at) = child.completed {
        s["completionTime"] = json!(at);
    }
    if let Some(error) = child.error {
        s["error"] = json!(error);
    }
    s
}

/// The record the controller must have sent for `transition` of `request`
/// (its `event_id` is the event's, checked apart: the stored record leaves it out),
/// given the children as they were then (`(creation time, state)` per phase,
/// in order, for those that existed).
fn expected_record(
    request: &RemediationRequest,
    transition: &Transition,
    children: &[(DateTime<Utc>, ChildState<'_>)],
) -> Value {
    let name = request.metadata.name.clone().expect("name");
    let created = chrono_time(
        request
            .metadata
            .creation_timestamp
            .as_ref()
            .expect("created"),
    );
    let mut record = json!({
        "alert_fingerprint": format!("fp-{name}"),
        "remediation_name": name,
        "namespace": request.metadata.namespace,
        "overall_phase": transition.phase.as_str(),
        "start_time": created,
        "duplicate_count": 0,
        "event_time": transition.time,
    });
    let kinds = [
        (
            "remediation_processing_name",
            "remediationProcessing",
            ChildKind::RemediationProcessing,
        ),
        ("ai_analysis_name", "aiAnalysis", ChildKind::AIAnalysis),
        (
            "workflow_execution_name",
            "workflowExecution",
            ChildKind::WorkflowExecution,
        ),
    ];
    let mut statuses = json!({});
    for ((field, key, kind), (created, state)) in kinds.into_iter().zip(children) {
        record[field] = json!(child_name(&name, kind));
        statuses[key] = snapshot(*created, *state);
    }
    record["service_crd_statuses"] = statuses;
    if transition.phase.is_terminal() {
        record["completion_time"] = json!(transition.time);
    }
    record
}

/// The stored event of `transition`, checked field by field.
fn check_event(
    timeline: &[EventRecord],
    request: &RemediationRequest,
    transition: &Transition,
    expected: &Value,
) {
    let uid = request.metadata.uid.as_deref().expect("uid");
    let id = transition_event_id(uid, transition);
    let matching: Vec<_> = timeline.iter().filter(|e| e.event_id == id).collect();
    assert_eq!(
        matching.len(),
        1,
        "{:?} {} must be stored exactly once: {timeline:#?}",
        request.metadata.name,
        transition.phase
    );
    let event = matching[0];
    assert_eq!(event.overall_phase, transition.phase.as_str());
    assert_eq!(event.event_time, micros(transition.time));
    assert_fields(
        &format!(
            "{} {}",
            request.metadata.name.as_deref().unwrap_or("?"),
            transition.phase
        ),
        &event.record,
        expected,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_audits_completed_failed_and_timed_out_remediations_field_by_field() {
    use RemediationPhase as P;
    let mut setup = Setup::new("lifecycle").await;
    let mut ctl = setup.controller("ctl-0");

    let done = setup.create("done", json!({})).await;
    let broken = setup.create("broken", json!({})).await;
    // Its processing child is never picked up: the phase times out after 3 s.
    let slow = setup
        .create("slow", json!({ "processingSeconds": 3 }))
        .await;
    let t = &setup.transitions;

    // done: every child completes.
    let done_1 = t.wait("done", P::Processing).await;
    let rp_done = setup
        .set_child::<RemediationProcessing>(
            "done",
            ChildKind::RemediationProcessing,
            "completed",
            None,
        )
        .await;
    let done_2 = t.wait("done", P::Analyzing).await;
    let aa_done = setup
        .set_child::<AIAnalysis>("done", ChildKind::AIAnalysis, "completed", None)
        .await;
    let done_3 = t.wait("done", P::Executing).await;
    setup
        .set_child::<WorkflowExecution>("done", ChildKind::WorkflowExecution, "running", None)
        .await;
    let we_done = setup
        .set_child::<WorkflowExecution>("done", ChildKind::WorkflowExecution, "completed", None)
        .await;
    let done_4 = t.wait("done", P::Completed).await;

    // broken: the analysis fails.
    let broken_1 = t.wait("broken", P::Processing).await;
    let rp_broken = setup
        .set_child::<RemediationProcessing>(
            "broken",
            ChildKind::RemediationProcessing,
            "completed",
            None,
        )
        .await;
    let broken_2 = t.wait("broken", P::Analyzing).await;
    let error = "the model endpoint answered 503 three times";
    let aa_broken = setup
        .set_child::<AIAnalysis>("broken", ChildKind::AIAnalysis, "failed", Some(error))
        .await;
    let broken_3 = t.wait("broken", P::Failed).await;

    // slow: times out in processing.
    let slow_1 = t.wait("slow", P::Processing).await;
    let slow_2 = t.wait("slow", P::Timeout).await;
    ctl.assert_running();

    // Every transition of each, in order, numbered from 1, and nothing more.
    for (name, phases) in [
        (
            "done",
            vec![P::Processing, P::Analyzing, P::Executing, P::Completed],
        ),
        ("broken", vec![P::Processing, P::Analyzing, P::Failed]),
        ("slow", vec![P::Processing, P::Timeout]),
    ] {
        let seen: Vec<_> = t.of(name).iter().map(|t| (t.phase, t.sequence)).collect();
        let want: Vec<_> = phases.into_iter().zip(1..).collect();
        assert_eq!(seen, want, "transitions of {name}");
    }

    // done
    let rp = setup
        .child_created::<RemediationProcessing>("done", ChildKind::RemediationProcessing)
        .await;
    let aa = setup
        .child_created::<AIAnalysis>("done", ChildKind::AIAnalysis)
        .await;
    let we = setup
        .child_created::<WorkflowExecution>("done", ChildKind::WorkflowExecution)
        .await;
    let completed = |at| ChildState {
        phase: "completed",
        completed: at,
        error: None,
    };
    let timeline = setup.timeline("done", 4).await;
    assert_eq!(timeline.len(), 4, "{timeline:#?}");
    check_event(
        &timeline,
        &done,
        &done_1,
        &expected_record(&done, &done_1, &[(rp, PENDING)]),
    );
    check_event(
        &timeline,
        &done,
        &done_2,
        &expected_record(&done, &done_2, &[(rp, completed(rp_done)), (aa, PENDING)]),
    );
    check_event(
        &timeline,
        &done,
        &done_3,
        &expected_record(
            &done,
            &done_3,
            &[
                (rp, completed(rp_done)),
                (aa, completed(aa_done)),
                (we, PENDING),
            ],
        ),
    );
    check_event(
        &timeline,
        &done,
        &done_4,
        &expected_record(
            &done,
            &done_4,
            &[
                (rp, completed(rp_done)),
                (aa, completed(aa_done)),
                (we, completed(we_done)),
            ],
        ),
    );

    // broken
    let rp = setup
        .child_created::<RemediationProcessing>("broken", ChildKind::RemediationProcessing)
        .await;
    let aa = setup
        .child_created::<AIAnalysis>("broken", ChildKind::AIAnalysis)
        .await;
    let timeline = setup.timeline("broken", 3).await;
    assert_eq!(timeline.len(), 3, "{timeline:#?}");
    check_event(
        &timeline,
        &broken,
        &broken_1,
        &expected_record(&broken, &broken_1, &[(rp, PENDING)]),
    );
    check_event(
        &timeline,
        &broken,
        &broken_2,
        &expected_record(
            &broken,
            &broken_2,
            &[(rp, completed(rp_broken)), (aa, PENDING)],
        ),
    );
    let failed = ChildState {
        phase: "failed",
        completed: aa_broken,
        error: Some(error),
    };
    let mut want = expected_record(
        &broken,
        &broken_3,
        &[(rp, completed(rp_broken)), (aa, failed)],
    );
    want["failure_phase"] = json!("analyzing");
    want["failure_reason"] = json!(error);
    check_event(&timeline, &broken, &broken_3, &want);

    // slow
    let rp = setup
        .child_created::<RemediationProcessing>("slow", ChildKind::RemediationProcessing)
        .await;
    let timeline = setup.timeline("slow", 2).await;
    assert_eq!(timeline.len(), 2, "{timeline:#?}");
    check_event(
        &timeline,
        &slow,
        &slow_1,
        &expected_record(&slow, &slow_1, &[(rp, PENDING)]),
    );
    let mut want = expected_record(&slow, &slow_2, &[(rp, PENDING)]);
    want["timeout_phase"] = json!("processing");
    want["timeout_time"] = json!(slow_2.time);
    check_event(&timeline, &slow, &slow_2, &want);
    assert!(
        slow_2.time - slow_1.time >= chrono::TimeDelta::seconds(3),
        "timed out before its 3 s: {slow_1:?} -> {slow_2:?}"
    );

    // The summary rows hold the last transition of each.
    let client = ApiClient::new(&setup.url).expect("client");
    let rows = client
        .list(&ListParams::default().with_namespace(setup.namespace.clone()))
        .await
        .expect("list")
        .items;
    assert_eq!(rows.len(), 3, "{rows:#?}");
    for (request, last) in [(&done, &done_4), (&broken, &broken_3), (&slow, &slow_2)] {
        let name = request.metadata.name.as_deref().expect("name");
        let row = rows
            .iter()
            .find(|r| r.remediation_name == name)
            .expect("row");
        assert_eq!(row.overall_phase, last.phase.as_str(), "{name}");
        assert_eq!(row.event_time, micros(last.time), "{name}");
        assert_eq!(row.completion_time, Some(micros(last.time)), "{name}");
        assert_eq!(
            row.event_id,
            transition_event_id(request.metadata.uid.as_deref().expect("uid"), last),
            "{name}"
        );
    }
    ctl.assert_running();
    setup.serve.assert_running();
}

/// The stored timeline of every request in `names` holds exactly the
/// transitions the API server showed for it, once each, numbered from 1.
async fn assert_stored_once(setup: &Setup, names: &[&str], phases: &[RemediationPhase]) {
    for &name in names {
        let request = setup.requests.get(name).await.expect("request");
        let uid = request.metadata.uid.as_deref().expect("uid");
        let seen = setup.transitions.of(name);
        let numbered: Vec<_> = seen.iter().map(|t| (t.phase, t.sequence)).collect();
        let want: Vec<_> = phases.iter().copied().zip(1..).collect();
        assert_eq!(numbered, want, "transitions of {name}");
        let timeline = setup.timeline(name, phases.len()).await;
        let mut stored: Vec<_> = timeline.iter().map(|e| e.event_id).collect();
        let mut expected: Vec<_> = seen.iter().map(|t| transition_event_id(uid, t)).collect();
        stored.sort_unstable();
        expected.sort_unstable();
        assert_eq!(
            stored, expected,
            "{name}: every transition stored exactly once"
        );
        for t in &seen {
            let event = timeline
                .iter()
                .find(|e| e.event_id == transition_event_id(uid, t))
                .expect("event");
            assert_eq!(event.overall_phase, t.phase.as_str(), "{name}");
            assert_eq!(event.event_time, micros(t.time), "{name}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_mid_run_and_restarted_stores_every_transition_once() {
    use RemediationPhase as P;
    let mut setup = Setup::new("sigkill").await;
    let names = ["r0", "r1", "r2", "r3"];
    let mut ctl = setup.controller("ctl-0");
    for name in names {
        setup.create(name, json!({})).await;
    }
    for name in names {
        setup.transitions.wait(name, P::Processing).await;
    }

    // Complete every processing child and kill the controller at once,
    // while it reconciles them; the same pod (identity, spool) restarts.
    for name in names {
        setup
            .set_child::<RemediationProcessing>(
                name,
                ChildKind::RemediationProcessing,
                "completed",
                None,
            )
            .await;
    }
    ctl.kill();
    let mut ctl = setup.controller("ctl-0");
    for name in names {
        setup.transitions.wait(name, P::Analyzing).await;
    }

    // Again for the analyses.
    for name in names {
        setup
            .set_child::<AIAnalysis>(name, ChildKind::AIAnalysis, "completed", None)
            .await;
    }
    ctl.kill();
    let mut ctl = setup.controller("ctl-0");
    for name in names {
        setup.transitions.wait(name, P::Executing).await;
    }
    for name in names {
        setup
            .set_child::<WorkflowExecution>(name, ChildKind::WorkflowExecution, "completed", None)
            .await;
    }
    for name in names {
        setup.transitions.wait(name, P::Completed).await;
    }

    assert_stored_once(
        &setup,
        &names,
        &[P::Processing, P::Analyzing, P::Executing, P::Completed],
    )
    .await;
    let rows = ApiClient::new(&setup.url)
        .expect("client")
        .list(&ListParams::default().with_namespace(setup.namespace.clone()))
        .await
        .expect("list")
        .items;
    assert_eq!(
        rows.len(),
        names.len(),
        "one remediation per request: {rows:#?}"
    );
    assert!(
        rows.iter().all(|r| r.overall_phase == "completed"),
        "{rows:#?}"
    );
    ctl.assert_running();
    setup.serve.assert_running();
}

/// The holder of the controller's Lease in `namespace`, when someone holds it.
async fn holder(leases: &Api<Lease>) -> Option<(String, i32)> {
    let spec = leases.get_opt("remaudit-controller").await.ok()??.spec?;
    let holder = spec.holder_identity.filter(|h| !h.is_empty())?;
    Some((holder, spec.lease_transitions.unwrap_or(0)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_leader_is_killed_the_standby_takes_the_lease_and_carries_on() {
    use RemediationPhase as P;
    let mut setup = Setup::new("lease").await;
    let leases: Api<Lease> = setup.api();
    let a = setup.controller("ctl-a");
    let b = setup.controller("ctl-b");
    let (leader, transitions) = wait_for("a leader", WAIT, || holder(&leases)).await;
    let (mut leader_process, standby, mut standby_process) = match leader.as_str() {
        "ctl-a" => (a, "ctl-b", b),
        "ctl-b" => (b, "ctl-a", a),
        other => panic!("unknown holder {other}"),
    };

    // The leader works: a request reaches processing.
    setup.create("before", json!({})).await;
    setup.transitions.wait("before", P::Processing).await;
    assert_eq!(
        holder(&leases).await.map(|h| h.0).as_deref(),
        Some(leader.as_str())
    );

    // SIGKILL: no release. The lease expires 15 s after its last renewal
    // (at most 15 s from now) and the standby tries every 5 s, so it must
    // hold the lease within the lease duration plus one retry period (and
    // a second for the API calls).
    leader_process.kill();
    let killed = Instant::now();
    // The controller runs with the default timing: 15 s leases, retried every 5 s.
    let timing = LeaseConfig::default();
    let limit = timing.lease_duration + timing.retry_every + Duration::from_secs(1);
    let (taken_by, after) = wait_for("the standby to take the lease", limit, || async {
        holder(&leases).await.filter(|(h, _)| h != &leader)
    })
    .await;
    let took = killed.elapsed();
    assert_eq!(taken_by, standby);
    assert_eq!(
        after,
        transitions + 1,
        "leaseTransitions counts the takeover"
    );
    assert!(took <= limit, "took {took:?}");

    // The new leader carries the earlier request on and takes new ones.
    setup
        .set_child::<RemediationProcessing>(
            "before",
            ChildKind::RemediationProcessing,
            "completed",
            None,
        )
        .await;
    setup.transitions.wait("before", P::Analyzing).await;
    setup.create("after", json!({})).await;
    setup.transitions.wait("after", P::Processing).await;

    // The killed replica comes back, as its Deployment restarts it, with
    // its spool: what it had accepted but not yet delivered when it was
    // killed (here: `before` entering processing) reaches the store from
    // there; the new leader does not send it again. It stays the standby.
    let mut back = setup.controller(&leader);
    assert_stored_once(&setup, &["before"], &[P::Processing, P::Analyzing]).await;
    assert_stored_once(&setup, &["after"], &[P::Processing]).await;
    assert_eq!(holder(&leases).await.map(|h| h.0).as_deref(), Some(standby));
    back.assert_running();
    standby_process.assert_running();
    setup.serve.assert_running();
}

/// The RBAC rule that lets a caller write audit records (`create` on the
/// virtual resource the server checks; docs/security.md).
fn writer_rule() -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec!["remaudit.kubernaut.io".to_owned()]),
        resources: Some(vec!["remediationaudits".to_owned()]),
        verbs: vec!["create".to_owned()],
        ..PolicyRule::default()
    }
}

fn audit_record(name: &str) -> Value {
    json!({
        "alert_fingerprint": "fp", "remediation_name": name, "overall_phase": "processing",
        "start_time": (Utc::now() - chrono::Duration::minutes(5)).to_rfc3339(),
    })
}

/// Posts a record with `token`; the status and body.
async fn post(url: &str, token: &str, name: &str) -> (u16, Value) {
    let answer = reqwest::Client::new()
        .post(format!("{url}/api/v1/audit/remediation-orchestration"))
        .bearer_auth(token)
        .json(&audit_record(name))
        .send()
        .await
        .expect("send");
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(Value::Null))
}

/// `remaudit serve --auth-kubernetes` as the ServiceAccount `identity` of
/// `namespace`, in `dir`.
async fn serve_with_kubernetes_auth(
    cluster: &Cluster,
    namespace: &str,
    identity: &str,
    dir: &Path,
) -> (String, cluster::Process) {
    let token = cluster.token(namespace, identity, &[]).await;
    let kubeconfig = cluster.kubeconfig(dir, &token);
    serve(
        dir,
        &[
            "--auth-kubernetes",
            "--auth-kubernetes-review-timeout-secs",
            "5",
        ],
        &[("KUBECONFIG", &kubeconfig)],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_authenticates_service_account_tokens_with_token_and_access_reviews() {
    let cluster = Cluster::connect().await;
    let ns = cluster.namespace("auth").await;
    cluster
        .service_account(&ns, "remaudit-server", rules(SERVER_RULES))
        .await;
    cluster
        .service_account(&ns, "orchestrator", vec![writer_rule()])
        .await;
    cluster.service_account(&ns, "stranger", Vec::new()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let _logs = cluster::LogsOnFailure(dir.path());
    let (url, mut server) =
        serve_with_kubernetes_auth(&cluster, &ns, "remaudit-server", dir.path()).await;

    let writer = cluster.token(&ns, "orchestrator", &["remaudit"]).await;
    let stranger = cluster.token(&ns, "stranger", &["remaudit"]).await;
    // A real token of the writer, but bound to the API server's audience.
    let wrong_audience = cluster.token(&ns, "orchestrator", &[]).await;

    let (status, body) = post(&url, &writer, "rr-allowed").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "created", "{body}");

    let (status, body) = post(&url, &stranger, "rr-stranger").await;
    assert_eq!(status, 403, "authenticated, without the RBAC rule: {body}");

    // JWT-shaped garbage goes to a TokenReview and is refused; other garbage
    // is no authenticator's.
    for garbage in [
        "eyJhbGciOiJSUzI1NiIsImtpZCI6IngifQ.eyJzdWIiOiJzeXN0ZW06YWRtaW4ifQ.c2lnbmF0dXJl",
        "not-a-token",
        wrong_audience.as_str(),
    ] {
        let (status, body) = post(&url, garbage, "rr-garbage").await;
        assert_eq!(status, 401, "{body}");
    }

    // The writer may not read: `get` is the reader's verb.
    let answer = reqwest::Client::new()
        .get(format!("{url}/api/v1/audit/remediation-orchestration"))
        .bearer_auth(&writer)
        .send()
        .await
        .expect("send");
    assert_eq!(answer.status().as_u16(), 403);
    server.assert_running();

    // The server's own rules are needed: without them it cannot ask, and
    // says so with 503 (never 401 or 403).
    cluster
        .service_account(&ns, "bare-server", Vec::new())
        .await;
    let bare = tempfile::tempdir().expect("tempdir");
    let _bare_logs = cluster::LogsOnFailure(bare.path());
    let (url, mut bare_server) =
        serve_with_kubernetes_auth(&cluster, &ns, "bare-server", bare.path()).await;
    let (status, body) = post(&url, &writer, "rr-bare").await;
    assert_eq!(status, 503, "{body}");
    bare_server.assert_running();
}

/// Plays every child controller of request `rr` in `namespace` at once:
/// each child that exists and has not completed is completed.
async fn complete_children(cluster: &Cluster, namespace: &str) {
    async fn complete<K>(api: Api<K>, kind: ChildKind)
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
        K: serde::Serialize,
    {
        let name = child_name("rr", kind);
        let Ok(Some(child)) = api.get_opt(&name).await else {
            return;
        };
        let status = serde_json::to_value(&child).ok();
        if status.as_ref().and_then(|c| c["status"]["phase"].as_str()) == Some("completed") {
            return;
        }
        let body = json!({ "status": { "phase": "completed", "completedAt": Utc::now() } });
        let _ = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(body))
            .await;
    }
    let client = &cluster.admin;
    complete::<RemediationProcessing>(
        Api::namespaced(client.clone(), namespace),
        ChildKind::RemediationProcessing,
    )
    .await;
    complete::<AIAnalysis>(
        Api::namespaced(client.clone(), namespace),
        ChildKind::AIAnalysis,
    )
    .await;
    complete::<WorkflowExecution>(
        Api::namespaced(client.clone(), namespace),
        ChildKind::WorkflowExecution,
    )
    .await;
}

/// Runs the controller with the chart's rules minus `verb` of rule `index`
/// and a request to work on; whether the API server refused it exactly that
/// (`cannot VERB resource "RESOURCE"` in its log).
async fn refused_without(cluster: &Cluster, all: &[PolicyRule], index: usize, verb: &str) -> bool {
    let mut fewer = all.to_vec();
    fewer[index].verbs.retain(|v| v != verb);
    if fewer[index].verbs.is_empty() {
        fewer.remove(index);
    }
    let namespace = cluster.namespace("rbac").await;
    cluster.controller_account(&namespace, fewer).await;
    let token = cluster.token(&namespace, "remaudit-controller", &[]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = cluster.kubeconfig(dir.path(), &token);
    Api::<RemediationRequest>::namespaced(cluster.admin.clone(), &namespace)
        .create(&PostParams::default(), &request("rr", &json!({})))
        .await
        .expect("create");
    // No service: what it would publish stays in its spool.
    let url = format!("http://127.0.0.1:{}", crate::helpers::free_port());
    let process = controller(dir.path(), &kubeconfig, &namespace, "ctl", &url);
    // What the API server answers when the verb is missing: RBAC names it;
    // the owner-reference admission plugin only says what it checked.
    let resources = all[index].resources.clone().unwrap_or_default();
    let needles: Vec<String> = resources
        .iter()
        .map(|r| {
            if r.ends_with("/finalizers") {
                "you can't set finalizers on".to_owned()
            } else {
                format!("cannot {verb} resource \"{r}\"")
            }
        })
        .collect();
    let deadline = Instant::now() + WAIT;
    loop {
        let log = process.log();
        if needles.iter().any(|n| log.contains(n)) {
            break true;
        }
        if Instant::now() >= deadline {
            eprintln!("===== without {verb} {resources:?} =====\n{log}");
            break false;
        }
        // Drive the request through every phase, so that each verb is used.
        complete_children(cluster, &namespace).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_verb_of_the_chart_controller_rules_is_needed() {
    let cluster = Cluster::connect().await;
    let all = rules(CONTROLLER_RULES);
    let cases: Vec<(usize, String)> = all
        .iter()
        .enumerate()
        .flat_map(|(i, rule)| rule.verbs.iter().map(move |v| (i, v.clone())))
        .collect();
    let results = futures::future::join_all(
        cases
            .iter()
            .map(|(i, verb)| refused_without(&cluster, &all, *i, verb)),
    )
    .await;
    let unneeded: Vec<_> = cases
        .iter()
        .zip(results)
        .filter(|(_, refused)| !refused)
        .map(|((i, verb), _)| format!("{verb} on {:?}", all[*i].resources))
        .collect();
    assert!(
        unneeded.is_empty(),
        "the controller worked without these (drop them from the chart's rules): {unneeded:?}"
    );
}
