//! Property tests: random child status changes, clock advances, watch lag and
//! lost status writes never move a remediation backwards, and the same
//! inputs always give the same outputs.

use std::collections::{HashMap, HashSet};

use chrono::TimeDelta;
use proptest::prelude::*;
use remaudit_controller::{
    Action, ChildObject, ChildPhase, Children, Decision, RemediationPhase, Timeouts, decide,
    transition_event_id,
};
use remaudit_model::Phase;

use crate::helpers::{IN_FLIGHT, observe_created, request_with, set_child, t0};

#[derive(Clone, Debug)]
enum Event {
    /// The clock moves on by this many seconds.
    Tick(i64),
    /// The child of this in-flight phase (if observed) reports this phase.
    Child(usize, ChildPhase),
    /// The watch catches up: created children become visible.
    Observe,
}

/// One reconcile: the event, then whether the status write after it is lost.
type Step = (Event, bool);

fn child_phase() -> impl Strategy<Value = ChildPhase> {
    // Weighted towards success so that runs also reach `completed`.
    prop_oneof![
        1 => Just(ChildPhase::Pending),
        2 => Just(ChildPhase::Running),
        5 => Just(ChildPhase::Completed),
        1 => Just(ChildPhase::Failed),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        2 => (0i64..120).prop_map(Event::Tick),
        3 => (0..IN_FLIGHT.len(), child_phase()).prop_map(|(i, p)| Event::Child(i, p)),
        2 => Just(Event::Observe),
    ]
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec((event(), prop::bool::weighted(0.15)), 1..60)
}

fn timeouts() -> impl Strategy<Value = Timeouts> {
    (1u32..600, 1u32..600, 1u32..600, 1u32..3000).prop_map(|(p, a, e, o)| Timeouts {
        processing_seconds: Some(p),
        analyzing_seconds: Some(a),
        executing_seconds: Some(e),
        overall_seconds: Some(o),
    })
}

fn rank(phase: Option<RemediationPhase>) -> remaudit_model::PhaseRank {
    Phase::parse(phase.unwrap_or_default().as_str()).rank()
}

fn is_observed(children: &Children, child: &ChildObject) -> bool {
    match child {
        ChildObject::RemediationProcessing(_) => children.remediation_processing.is_some(),
        ChildObject::AIAnalysis(_) => children.ai_analysis.is_some(),
        ChildObject::WorkflowExecution(_) => children.workflow_execution.is_some(),
    }
}

/// Runs the steps, checking the per-step rules, and returns every decision.
fn run(timeouts: &Timeouts, steps: &[Step]) -> Result<Vec<Decision>, TestCaseError> {
    let mut request = request_with("rr-1", "uid-1", timeouts.clone());
    let mut children = Children::default();
    let mut created_not_seen: Vec<Action> = Vec::new();
    let mut now = t0();
    let mut created = HashSet::new();
    let mut any_lost = false;
    let mut ids = HashMap::new();
    let mut decisions = Vec::new();

    for (event, lost) in steps {
        match event {
            Event::Tick(seconds) => now += TimeDelta::seconds(*seconds),
            Event::Child(i, phase) => {
                let stage = IN_FLIGHT[*i];
                if crate::helpers::child_status_mut(&mut children, stage).is_some() {
                    set_child(&mut children, stage, *phase, now, Some("child error"));
                }
            }
            Event::Observe => {
                observe_created(&mut children, &created_not_seen, now);
                created_not_seen.clear();
            }
        }

        let stored = request.status.clone();
        let stored_phase = stored.as_ref().and_then(|s| s.phase);
        let d = decide(&request, &children, now);
        prop_assert_eq!(
            &d,
            &decide(&request, &children, now),
            "same inputs, same output"
        );

        prop_assert!(
            rank(d.status.phase) >= rank(stored_phase),
            "{:?} -> {:?}",
            stored_phase,
            d.status.phase
        );
        if stored_phase.is_some_and(RemediationPhase::is_terminal) {
            prop_assert_eq!(
                Some(&d.status),
                stored.as_ref(),
                "terminal phases are final"
            );
            prop_assert!(d.actions.is_empty());
            prop_assert!(d.transition.is_none());
        }
        if let Some(t) = &d.transition {
            let previous = stored
                .as_ref()
                .and_then(|s| s.last_transition.as_ref())
                .map_or(0, |t| t.sequence);
            prop_assert_eq!(t.sequence, previous + 1);
            prop_assert_eq!(Some(t.phase), d.status.phase);
            prop_assert_eq!(Some(t), d.status.last_transition.as_ref());
            prop_assert_eq!(t.time, now);
            let id = transition_event_id("uid-1", t);
            let named = ids.entry(id).or_insert((t.phase, t.sequence));
            prop_assert_eq!(*named, (t.phase, t.sequence), "one id, one transition");
        } else {
            prop_assert_eq!(
                d.status.phase.unwrap_or_default(),
                stored_phase.unwrap_or_default()
            );
        }
        for Action::Create(child) in &d.actions {
            // Only a child neither referenced in the stored status nor observed is created.
            let referenced = stored.as_ref().is_some_and(|s| {
                [
                    &s.remediation_processing_ref,
                    &s.ai_analysis_ref,
                    &s.workflow_execution_ref,
                ]
                .into_iter()
                .flatten()
                .any(|r| r.name == child.name())
            });
            prop_assert!(!referenced, "{} is already referenced", child.name());
            prop_assert!(
                !is_observed(&children, child),
                "{} is already observed",
                child.name()
            );
            if !created.insert(child.name().to_owned()) {
                // Only a lost status write can lead to a second create (answered AlreadyExists).
                prop_assert!(any_lost, "{} created twice", child.name());
            }
        }

        // Creates happen first; then the status write, unless it is lost.
        created_not_seen.extend(d.actions.iter().cloned());
        if *lost {
            any_lost = true;
        } else {
            request = d.applied_to(&request);
        }
        decisions.push(d);
    }
    Ok(decisions)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn phases_never_regress_and_decisions_are_deterministic(timeouts in timeouts(), steps in steps()) {
        let first = run(&timeouts, &steps)?;
        let second = run(&timeouts, &steps)?;
        prop_assert_eq!(first, second, "the same run twice gives the same decisions");
    }
}
