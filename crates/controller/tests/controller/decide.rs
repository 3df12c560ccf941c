//! The state machine, transition by transition.

use std::time::Duration;

use chrono::TimeDelta;
use kube::Resource;
use remaudit_controller::{
    Action, ChildKind, ChildObject, ChildPhase, Children, RemediationPhase, RemediationRequest,
    RemediationRequestStatus, Timeouts, Transition, child_name, decide,
};

use crate::helpers::{IN_FLIGHT, World, at, request, set_child, t0};

fn created_names(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|Action::Create(c)| c.name().to_owned())
        .collect()
}

fn kind_of(phase: RemediationPhase) -> ChildKind {
    match phase {
        RemediationPhase::Processing => ChildKind::RemediationProcessing,
        RemediationPhase::Analyzing => ChildKind::AIAnalysis,
        RemediationPhase::Executing => ChildKind::WorkflowExecution,
        other => panic!("{other} has no child"),
    }
}

fn next_phase(phase: RemediationPhase) -> RemediationPhase {
    let i = RemediationPhase::ALL
        .iter()
        .position(|p| *p == phase)
        .expect("listed");
    RemediationPhase::ALL[i + 1]
}

#[test]
fn a_new_request_creates_processing_and_enters_processing() {
    let rr = request("rr-1", "uid-1");
    let d = decide(&rr, &Children::default(), t0());

    assert_eq!(d.status.phase, Some(RemediationPhase::Processing));
    assert_eq!(d.status.start_time, Some(t0()));
    assert_eq!(d.status.phase_start_time, Some(t0()));
    let expected_name = child_name("rr-1", ChildKind::RemediationProcessing);
    assert_eq!(
        d.status
            .remediation_processing_ref
            .as_ref()
            .map(|r| &r.name),
        Some(&expected_name)
    );
    assert_eq!(
        d.transition,
        Some(Transition {
            phase: RemediationPhase::Processing,
            sequence: 1,
            time: t0()
        })
    );
    assert_eq!(d.status.last_transition, d.transition);
    assert!(d.phase_changed());
    assert!(d.status_changed(&rr));

    let [Action::Create(ChildObject::RemediationProcessing(child))] = d.actions.as_slice() else {
        panic!(
            "expected one RemediationProcessing create, got {:?}",
            d.actions
        );
    };
    assert_eq!(child.metadata.name.as_ref(), Some(&expected_name));
    assert_eq!(child.metadata.namespace, rr.metadata.namespace);
    assert_eq!(child.spec.remediation_request_ref.name, "rr-1");
    let owners = child
        .metadata
        .owner_references
        .as_deref()
        .unwrap_or_default();
    assert_eq!(owners.len(), 1);
    let owner = &owners[0];
    assert_eq!(Some(&owner.uid), rr.metadata.uid.as_ref());
    assert_eq!(Some(&owner.name), rr.metadata.name.as_ref());
    assert_eq!(owner.kind, RemediationRequest::kind(&()));
    assert_eq!(owner.api_version, RemediationRequest::api_version(&()));
    assert_eq!(owner.controller, Some(true));
}

#[test]
fn an_explicit_pending_status_behaves_like_no_status() {
    let mut rr = request("rr-1", "uid-1");
    let fresh = decide(&rr, &Children::default(), t0());
    rr.status = Some(RemediationRequestStatus {
        phase: Some(RemediationPhase::Pending),
        ..RemediationRequestStatus::default()
    });
    assert_eq!(decide(&rr, &Children::default(), t0()), fresh);
}

#[test]
fn each_completed_child_starts_the_next_phase_and_the_last_completes() {
    let mut world = World::new(Timeouts::default());
    world.step(t0());
    for (i, phase) in IN_FLIGHT.into_iter().enumerate() {
        let now = at(10 * (i64::try_from(i).expect("small") + 1));
        assert_eq!(world.phase(), phase);
        set_child(&mut world.children, phase, ChildPhase::Completed, now, None);
        let before = world.request.status.clone().expect("status");
        let d = world.step(now);
        let sequence = before.last_transition.as_ref().map_or(0, |t| t.sequence) + 1;
        let next = next_phase(phase);
        assert_eq!(d.status.phase, Some(next));
        assert_eq!(d.status.phase_start_time, Some(now));
        assert_eq!(d.status.start_time, before.start_time, "start time is kept");
        assert_eq!(
            d.transition,
            Some(Transition {
                phase: next,
                sequence,
                time: now
            })
        );
        if next == RemediationPhase::Completed {
            assert!(d.actions.is_empty());
            assert_eq!(d.status.completion_time, Some(now));
            assert_eq!(d.requeue_after, None);
        } else {
            assert_eq!(
                created_names(&d.actions),
                [child_name("rr-1", kind_of(next))]
            );
            assert_eq!(d.status.completion_time, None);
        }
    }
    assert_eq!(world.phase(), RemediationPhase::Completed);
}

#[test]
fn a_running_child_changes_nothing_and_asks_to_be_woken_at_the_nearest_deadline() {
    let timeouts = Timeouts {
        processing_seconds: Some(300),
        overall_seconds: Some(400),
        ..Timeouts::default()
    };
    let mut world = World::new(timeouts.clone());
    world.step(t0());
    set_child(
        &mut world.children,
        RemediationPhase::Processing,
        ChildPhase::Running,
        t0(),
        None,
    );
    let stored = world.request.status.clone();
    let d = decide(&world.request, &world.children, at(100));
    assert_eq!(Some(&d.status), stored.as_ref());
    assert!(d.actions.is_empty());
    assert!(!d.phase_changed());
    assert!(!d.status_changed(&world.request));
    // Phase deadline t0+300, overall t0+400: the nearer one.
    let phase_deadline = t0()
        + TimeDelta::from_std(
            timeouts
                .for_phase(RemediationPhase::Processing)
                .expect("in flight"),
        )
        .expect("small");
    assert_eq!(d.requeue_after, (phase_deadline - at(100)).to_std().ok());
}

#[test]
fn a_failed_child_fails_the_remediation_with_its_phase_and_error() {
    for phase in IN_FLIGHT {
        let mut world = World::new(Timeouts::default());
        let entered = world.drive_to(phase, 10);
        let now = entered + TimeDelta::seconds(5);
        let error = format!("{phase} broke");
        set_child(
            &mut world.children,
            phase,
            ChildPhase::Failed,
            now,
            Some(&error),
        );
        let before = world.request.status.clone().expect("status");
        let d = world.step(now);
        assert_eq!(d.status.phase, Some(RemediationPhase::Failed), "{phase}");
        assert_eq!(d.status.failed_phase, Some(phase));
        assert_eq!(d.status.error_message.as_deref(), Some(error.as_str()));
        assert_eq!(d.status.completion_time, Some(now));
        assert_eq!(d.status.timeout_phase, None);
        assert!(d.actions.is_empty(), "no next child after a failure");
        let previous = before.last_transition.expect("entered a phase before");
        assert_eq!(
            d.transition,
            Some(Transition {
                phase: RemediationPhase::Failed,
                sequence: previous.sequence + 1,
                time: now
            })
        );
    }
}

#[test]
fn a_failed_child_without_a_message_is_named_in_the_error() {
    let mut world = World::new(Timeouts::default());
    world.step(t0());
    set_child(
        &mut world.children,
        RemediationPhase::Processing,
        ChildPhase::Failed,
        at(1),
        Some(""),
    );
    let d = world.step(at(1));
    let message = d.status.error_message.expect("an error message");
    assert!(
        message.contains(&child_name("rr-1", ChildKind::RemediationProcessing)),
        "{message}"
    );
}

#[test]
fn a_phase_times_out_when_its_own_timeout_is_reached() {
    for phase in IN_FLIGHT {
        let limit = 30;
        let timeouts = Timeouts {
            processing_seconds: Some(limit),
            analyzing_seconds: Some(limit),
            executing_seconds: Some(limit),
            overall_seconds: Some(100_000),
        };
        let mut world = World::new(timeouts);
        let entered = world.drive_to(phase, 10);
        let limit = TimeDelta::seconds(i64::from(limit));

        let just_before = decide(
            &world.request,
            &world.children,
            entered + limit - TimeDelta::seconds(1),
        );
        assert_eq!(just_before.status.phase, Some(phase), "{phase}: not yet");
        assert_eq!(just_before.requeue_after, Some(Duration::from_secs(1)));

        let now = entered + limit;
        let d = world.step(now);
        assert_eq!(d.status.phase, Some(RemediationPhase::Timeout), "{phase}");
        assert_eq!(d.status.timeout_phase, Some(phase));
        assert_eq!(d.status.timeout_time, Some(now));
        assert_eq!(d.status.completion_time, Some(now));
        assert_eq!(d.status.failed_phase, None);
        assert!(d.actions.is_empty());
        assert_eq!(
            d.transition.as_ref().map(|t| t.phase),
            Some(RemediationPhase::Timeout)
        );
        let message = d.status.error_message.expect("says why");
        assert!(
            message.contains(phase.as_str()) && message.contains("30s"),
            "{message}"
        );
    }
}

#[test]
fn the_overall_timeout_counts_from_the_start_across_phases() {
    let overall = 100;
    let timeouts = Timeouts {
        overall_seconds: Some(overall),
        ..Timeouts::default()
    };
    let mut world = World::new(timeouts);
    // Two phases of 40s each: no phase is over its own (default) timeout.
    let entered = world.drive_to(RemediationPhase::Executing, 40);
    let deadline = t0() + TimeDelta::seconds(i64::from(overall));
    assert!(entered < deadline);

    let before = decide(
        &world.request,
        &world.children,
        deadline - TimeDelta::seconds(1),
    );
    assert_eq!(before.status.phase, Some(RemediationPhase::Executing));
    assert_eq!(before.requeue_after, Some(Duration::from_secs(1)));

    let d = world.step(deadline);
    assert_eq!(d.status.phase, Some(RemediationPhase::Timeout));
    assert_eq!(d.status.timeout_phase, Some(RemediationPhase::Executing));
    assert_eq!(d.status.timeout_time, Some(deadline));
    let message = d.status.error_message.expect("says why");
    assert!(
        message.contains("overall") && message.contains("100s"),
        "{message}"
    );
}

#[test]
fn a_timeout_fires_even_when_the_child_was_never_observed() {
    let timeouts = Timeouts {
        processing_seconds: Some(5),
        ..Timeouts::default()
    };
    let rr = request("rr-1", "uid-1");
    let rr = RemediationRequest {
        spec: remaudit_controller::RemediationRequestSpec {
            timeouts,
            ..rr.spec.clone()
        },
        ..rr
    };
    let first = decide(&rr, &Children::default(), t0());
    let rr = first.applied_to(&rr);
    let d = decide(&rr, &Children::default(), at(5));
    assert_eq!(d.status.phase, Some(RemediationPhase::Timeout));
    assert_eq!(d.status.timeout_phase, Some(RemediationPhase::Processing));
    assert!(
        d.actions.is_empty(),
        "no second create of the unobserved child"
    );
}

#[test]
fn a_child_that_finished_wins_over_a_deadline_passed_in_the_same_reconcile() {
    let timeouts = Timeouts {
        processing_seconds: Some(5),
        ..Timeouts::default()
    };
    let mut world = World::new(timeouts);
    world.step(t0());
    set_child(
        &mut world.children,
        RemediationPhase::Processing,
        ChildPhase::Completed,
        at(4),
        None,
    );
    let d = world.step(at(50));
    assert_eq!(d.status.phase, Some(RemediationPhase::Analyzing));
}

#[test]
fn terminal_phases_are_final() {
    for (terminal, make) in [
        (RemediationPhase::Completed, ChildPhase::Completed),
        (RemediationPhase::Failed, ChildPhase::Failed),
        (RemediationPhase::Timeout, ChildPhase::Running),
    ] {
        let timeouts = Timeouts {
            executing_seconds: Some(10),
            ..Timeouts::default()
        };
        let mut world = World::new(timeouts);
        let entered = world.drive_to(RemediationPhase::Executing, 1);
        set_child(
            &mut world.children,
            RemediationPhase::Executing,
            make,
            entered,
            Some("x"),
        );
        world.step(entered + TimeDelta::seconds(10));
        assert_eq!(world.phase(), terminal);
        let stored = world.request.status.clone().expect("status");

        // Whatever the children do next and however late it is, nothing moves.
        for child_phase in [
            ChildPhase::Pending,
            ChildPhase::Running,
            ChildPhase::Completed,
            ChildPhase::Failed,
        ] {
            for phase in crate::helpers::IN_FLIGHT {
                set_child(&mut world.children, phase, child_phase, entered, None);
            }
            for later in [0, 1, 1_000_000] {
                let d = decide(
                    &world.request,
                    &world.children,
                    entered + TimeDelta::seconds(later),
                );
                assert_eq!(d.status, stored, "{terminal}");
                assert!(d.actions.is_empty());
                assert_eq!(d.transition, None);
                assert_eq!(d.requeue_after, None);
            }
        }
        let without_children = decide(&world.request, &Children::default(), at(1_000_000));
        assert_eq!(without_children.status, stored);
        assert!(without_children.actions.is_empty());
    }
}

#[test]
fn a_child_whose_ref_is_set_but_not_yet_observed_is_not_created_again() {
    let rr = request("rr-1", "uid-1");
    let first = decide(&rr, &Children::default(), t0());
    assert_eq!(first.actions.len(), 1);
    let rr = first.applied_to(&rr);
    // The watch has not shown the child yet.
    let again = decide(&rr, &Children::default(), at(1));
    assert!(again.actions.is_empty(), "{:?}", again.actions);
    assert!(!again.phase_changed());
    assert_eq!(again.status, first.status);
}

#[test]
fn a_child_created_before_a_lost_status_write_is_adopted_not_created_again() {
    let rr = request("rr-1", "uid-1");
    let first = decide(&rr, &Children::default(), t0());
    let mut children = Children::default();
    crate::helpers::observe_created(&mut children, &first.actions, t0());
    // The status write was lost: decide again from the old status.
    let retry = decide(&rr, &children, at(3));
    assert!(retry.actions.is_empty());
    assert_eq!(
        retry.status.remediation_processing_ref,
        first.status.remediation_processing_ref
    );
    let (a, b) = (
        first.transition.expect("changed"),
        retry.transition.expect("changed"),
    );
    assert_eq!(
        (a.phase, a.sequence),
        (b.phase, b.sequence),
        "the same transition, so the same event id"
    );
}

#[test]
fn a_lost_ref_is_recovered_without_a_transition() {
    let mut world = World::new(Timeouts::default());
    world.step(t0());
    let mut status = world.request.status.clone().expect("status");
    let expected = status.remediation_processing_ref.take();
    world.request.status = Some(status);
    let d = decide(&world.request, &world.children, at(1));
    assert!(d.actions.is_empty(), "the observed child is adopted");
    assert_eq!(d.status.remediation_processing_ref, expected);
    assert!(!d.phase_changed());
}

#[test]
fn the_same_inputs_give_the_same_decision() {
    let mut world = World::new(Timeouts::default());
    let entered = world.drive_to(RemediationPhase::Analyzing, 7);
    set_child(
        &mut world.children,
        RemediationPhase::Analyzing,
        ChildPhase::Completed,
        entered,
        None,
    );
    let a = decide(&world.request, &world.children, entered);
    let b = decide(&world.request, &world.children, entered);
    assert_eq!(a, b);
}
