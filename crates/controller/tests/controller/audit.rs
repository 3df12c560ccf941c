//! The audit record of each kind of transition, field by field.

use chrono::{DateTime, TimeDelta, Utc};
use remaudit_controller::{
    ChildKind, ChildPhase, Children, RemediationPhase, RemediationRequest, Timeouts, Transition,
    audit_record, child_name, mark_audited, transition_event_id, unaudited_transition,
};
use remaudit_model::{
    CrdStatusSnapshot, Limits, RemediationOrchestrationAudit, ServiceCrdStatuses,
};

use crate::helpers::{World, at, set_child, t0};

const DUPLICATES: i64 = 3;

fn last_duplicate() -> DateTime<Utc> {
    at(2)
}

/// A world whose request has seen duplicates (set by the alert deduplicator).
fn world(timeouts: Timeouts) -> World {
    let mut world = World::new(timeouts);
    world.step(t0());
    let status = world.request.status.as_mut().expect("status");
    status.duplicate_count = DUPLICATES;
    status.last_duplicate_time = Some(last_duplicate());
    world
}

/// The snapshot the record must carry for the child running `phase`, computed
/// from the observed child.
fn expected_snapshot(children: &Children, phase: RemediationPhase) -> Option<CrdStatusSnapshot> {
    let (meta, status) = match phase {
        RemediationPhase::Processing => children
            .remediation_processing
            .as_ref()
            .map(|c| (&c.metadata, c.status.clone().unwrap_or_default()))?,
        RemediationPhase::Analyzing => children
            .ai_analysis
            .as_ref()
            .map(|c| (&c.metadata, c.status.clone().unwrap_or_default()))?,
        RemediationPhase::Executing => children
            .workflow_execution
            .as_ref()
            .map(|c| (&c.metadata, c.status.clone().unwrap_or_default()))?,
        _ => return None,
    };
    let created = meta.creation_timestamp.as_ref().expect("stamped").0;
    let child_phase = status.phase.unwrap_or_default();
    Some(CrdStatusSnapshot {
        phase: child_phase.as_str().to_owned(),
        start_time: DateTime::from_timestamp(created.as_second(), 0).expect("in range"),
        completion_time: status.completed_at,
        success: child_phase == ChildPhase::Completed,
        error: status.error_message.filter(|e| !e.is_empty()),
    })
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

/// The fields every record carries, whatever the phase.
fn assert_common(
    record: &RemediationOrchestrationAudit,
    request: &RemediationRequest,
    children: &Children,
    transition: &Transition,
) {
    assert_eq!(record.alert_fingerprint, request.spec.signal_fingerprint);
    assert_eq!(
        Some(&record.remediation_name),
        request.metadata.name.as_ref()
    );
    assert_eq!(record.namespace, request.metadata.namespace);
    assert_eq!(record.overall_phase, transition.phase.as_str());
    assert_eq!(record.start_time, t0(), "the request's creation time");
    assert_eq!(record.event_time, Some(transition.time));
    assert_eq!(
        record.event_id,
        Some(transition_event_id(
            request.metadata.uid.as_deref().expect("uid"),
            transition
        ))
    );
    assert_eq!(record.duplicate_count, DUPLICATES);
    assert_eq!(record.last_duplicate_time, Some(last_duplicate()));
    let status = request.status.as_ref().expect("status");
    assert_eq!(
        record.remediation_processing_name,
        status
            .remediation_processing_ref
            .as_ref()
            .map(|r| r.name.clone())
    );
    assert_eq!(
        record.ai_analysis_name,
        status.ai_analysis_ref.as_ref().map(|r| r.name.clone())
    );
    assert_eq!(
        record.workflow_execution_name,
        status
            .workflow_execution_ref
            .as_ref()
            .map(|r| r.name.clone())
    );
    assert_eq!(
        record.alert_processing_name, None,
        "the alias is for old senders"
    );
    assert_eq!(record.kubernetes_execution_name, None);
    let s = statuses(record);
    assert_eq!(
        s.remediation_processing,
        expected_snapshot(children, RemediationPhase::Processing)
    );
    assert_eq!(
        s.ai_analysis,
        expected_snapshot(children, RemediationPhase::Analyzing)
    );
    assert_eq!(
        s.workflow_execution,
        expected_snapshot(children, RemediationPhase::Executing)
    );

    // The server accepts it.
    let raw = serde_json::to_value(record).expect("serialises");
    let parsed: RemediationOrchestrationAudit = serde_json::from_value(raw).expect("round trip");
    parsed
        .validate(transition.time, &Limits::default())
        .expect("the server's rules hold");
}

#[test]
fn the_first_transition_has_no_end_failure_or_timeout_fields() {
    let world = world(Timeouts::default());
    let transition = world
        .request
        .status
        .as_ref()
        .and_then(|s| s.last_transition.clone())
        .expect("entered processing");
    let record = audit_record(&world.request, &world.children, &transition);
    assert_common(&record, &world.request, &world.children, &transition);
    assert_eq!(record.overall_phase, "processing");
    assert_eq!(
        record.remediation_processing_name,
        Some(child_name("rr-1", ChildKind::RemediationProcessing))
    );
    assert_eq!(record.completion_time, None);
    assert_eq!(record.failure_phase, None);
    assert_eq!(record.failure_reason, None);
    assert_eq!(record.timeout_phase, None);
    assert_eq!(record.timeout_time, None);
}

#[test]
fn a_completed_record() {
    let mut world = world(Timeouts::default());
    let mut now = t0();
    for phase in crate::helpers::IN_FLIGHT {
        now += TimeDelta::seconds(20);
        set_child(&mut world.children, phase, ChildPhase::Completed, now, None);
        world.step(now);
    }
    let transition = world
        .request
        .status
        .as_ref()
        .and_then(|s| s.last_transition.clone())
        .expect("changed");
    assert_eq!(transition.phase, RemediationPhase::Completed);
    let record = audit_record(&world.request, &world.children, &transition);
    assert_common(&record, &world.request, &world.children, &transition);
    assert_eq!(record.completion_time, Some(now));
    assert_eq!(record.failure_phase, None);
    assert_eq!(record.failure_reason, None);
    assert_eq!(record.timeout_phase, None);
    assert_eq!(record.timeout_time, None);
    let s = statuses(&record);
    for snapshot in [
        s.remediation_processing,
        s.ai_analysis,
        s.workflow_execution,
    ] {
        let snapshot = snapshot.expect("every child observed");
        assert!(snapshot.success);
        assert_eq!(snapshot.phase, "completed");
        assert!(snapshot.completion_time.is_some());
    }
}

#[test]
fn a_failed_record() {
    let mut world = world(Timeouts::default());
    set_child(
        &mut world.children,
        RemediationPhase::Processing,
        ChildPhase::Completed,
        at(10),
        None,
    );
    world.step(at(10));
    set_child(
        &mut world.children,
        RemediationPhase::Analyzing,
        ChildPhase::Failed,
        at(15),
        Some("model unavailable"),
    );
    let d = world.step(at(16));
    let transition = d.transition.expect("changed");
    let record = audit_record(&world.request, &world.children, &transition);
    assert_common(&record, &world.request, &world.children, &transition);
    assert_eq!(record.overall_phase, "failed");
    assert_eq!(record.completion_time, Some(at(16)));
    assert_eq!(record.failure_phase.as_deref(), Some("analyzing"));
    assert_eq!(record.failure_reason.as_deref(), Some("model unavailable"));
    assert_eq!(record.timeout_phase, None);
    assert_eq!(record.timeout_time, None);
    assert_eq!(record.workflow_execution_name, None, "never created");
    let s = statuses(&record);
    let failed = s.ai_analysis.expect("observed");
    assert!(!failed.success);
    assert_eq!(failed.error.as_deref(), Some("model unavailable"));
    assert!(s.remediation_processing.expect("observed").success);
    assert_eq!(s.workflow_execution, None);
}

#[test]
fn a_timeout_record() {
    let mut world = world(Timeouts {
        executing_seconds: Some(60),
        ..Timeouts::default()
    });
    set_child(
        &mut world.children,
        RemediationPhase::Processing,
        ChildPhase::Completed,
        at(10),
        None,
    );
    world.step(at(10));
    set_child(
        &mut world.children,
        RemediationPhase::Analyzing,
        ChildPhase::Completed,
        at(20),
        None,
    );
    world.step(at(20));
    set_child(
        &mut world.children,
        RemediationPhase::Executing,
        ChildPhase::Running,
        at(21),
        None,
    );
    let d = world.step(at(80));
    let transition = d.transition.expect("changed");
    assert_eq!(transition.phase, RemediationPhase::Timeout);
    let record = audit_record(&world.request, &world.children, &transition);
    assert_common(&record, &world.request, &world.children, &transition);
    assert_eq!(record.overall_phase, "timeout");
    assert_eq!(record.completion_time, Some(at(80)));
    assert_eq!(record.timeout_phase.as_deref(), Some("executing"));
    assert_eq!(record.timeout_time, Some(at(80)));
    assert_eq!(record.failure_phase, None);
    assert_eq!(record.failure_reason, None);
    let running = statuses(&record).workflow_execution.expect("observed");
    assert_eq!(running.phase, "running");
    assert!(!running.success);
    assert_eq!(running.completion_time, None);
}

#[test]
fn a_transition_missed_by_a_crash_is_rebuilt_with_the_same_record() {
    let mut world = world(Timeouts::default());
    set_child(
        &mut world.children,
        RemediationPhase::Processing,
        ChildPhase::Completed,
        at(10),
        None,
    );
    let d = world.step(at(10));
    let published = audit_record(
        &world.request,
        &world.children,
        d.transition.as_ref().expect("changed"),
    );

    // Restart: only the stored status is known.
    let status = world.request.status.clone().expect("status");
    let missed = unaudited_transition(&status)
        .expect("not yet marked")
        .clone();
    let rebuilt = audit_record(&world.request, &world.children, &missed);
    assert_eq!(
        serde_json::to_value(&rebuilt).expect("json"),
        serde_json::to_value(&published).expect("json")
    );

    let mut status = status;
    mark_audited(&mut status, &missed);
    assert_eq!(unaudited_transition(&status), None);
}

#[test]
fn event_ids_are_stable_and_distinct() {
    let mut world = world(Timeouts::default());
    let first = world
        .request
        .status
        .as_ref()
        .and_then(|s| s.last_transition.clone())
        .expect("changed");
    let a = audit_record(&world.request, &world.children, &first).event_id;
    assert_eq!(
        a,
        audit_record(&world.request, &world.children, &first).event_id,
        "stable across calls"
    );

    set_child(
        &mut world.children,
        RemediationPhase::Processing,
        ChildPhase::Completed,
        at(10),
        None,
    );
    let second = world.step(at(10)).transition.expect("changed");
    let b = audit_record(&world.request, &world.children, &second).event_id;
    assert_ne!(a, b, "differs between transitions");

    let mut other = world.request.clone();
    other.metadata.uid = Some("uid-2".to_owned());
    assert_ne!(
        audit_record(&other, &world.children, &second).event_id,
        b,
        "differs between uids (a request recreated under the same name)"
    );
}

#[test]
fn a_request_without_uid_leaves_the_event_id_to_the_server() {
    let mut world = world(Timeouts::default());
    world.request.metadata.uid = None;
    let transition = world
        .request
        .status
        .as_ref()
        .and_then(|s| s.last_transition.clone())
        .expect("changed");
    assert_eq!(
        audit_record(&world.request, &world.children, &transition).event_id,
        None
    );
}
