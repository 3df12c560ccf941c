//! The audit record of a phase transition, built as the design's
//! `publishAuditRecord` builds it, plus the idempotency key and the
//! bookkeeping that finds transitions not yet handed to the publisher.

use std::borrow::Cow;

use remaudit_model::{
    CrdStatusSnapshot, Limits, RemediationOrchestrationAudit, ServiceCrdStatuses,
};
use uuid::Uuid;

use crate::crd::{
    ChildPhase, RemediationPhase, RemediationRequest, RemediationRequestStatus, Transition,
};
use crate::orchestrate::{ChildView, Children, Stage};
use crate::time::to_chrono;

/// Namespace of the v5 UUIDs that name transitions (fixed for good: changing
/// it would make replays of old transitions count twice).
const TRANSITION_ID_NAMESPACE: Uuid = Uuid::from_u128(0x3b7e_91c4_0d52_4f6a_8a13_e6c0_5f29_d174);

/// The audit `event_id` of one transition of the request with this uid: a
/// UUID v5 over the uid, the phase entered and the transition's sequence
/// number. Deciding the same transition again (after a crash or a lost status
/// write) gives the same id, so the server stores it once.
#[must_use]
pub fn transition_event_id(uid: &str, transition: &Transition) -> Uuid {
    let name = format!(
        "{uid}\n{}\n{}",
        transition.phase.as_str(),
        transition.sequence
    );
    Uuid::new_v5(&TRANSITION_ID_NAMESPACE, name.as_bytes())
}

/// The transition recorded in `status` that has not been handed to the
/// publisher yet: `lastTransition` when it differs from `lastAuditedTransition`.
///
/// The reconcile loop publishes it (with [`audit_record`]) before deciding
/// anything new, then marks it with [`mark_audited`]; that is how a crash
/// between a status write and a publish is caught up.
#[must_use]
pub fn unaudited_transition(status: &RemediationRequestStatus) -> Option<&Transition> {
    status
        .last_transition
        .as_ref()
        .filter(|t| status.last_audited_transition.as_ref() != Some(*t))
}

/// Records that `transition` was handed to the publisher.
pub fn mark_audited(status: &mut RemediationRequestStatus, transition: &Transition) {
    status.last_audited_transition = Some(transition.clone());
}

/// The audit record of `transition` of `request`.
///
/// `request` must carry the status the transition produced (for a fresh
/// decision, [`crate::Decision::applied_to`]); `children` are the observed
/// children. Fields follow the design:
/// - fingerprint, name, namespace, `overall_phase` = the phase entered,
///   `start_time` = the request's creation time;
/// - child names from the status refs, and a snapshot of every observed child
///   (phase, its creation time, `completedAt`, success = completed, error);
/// - `completion_time` for `completed`, `failed` and `timeout`; failure fields
///   for `failed`; timeout fields for `timeout`; the duplicate counters;
/// - `event_time` = when the transition happened, `event_id` from
///   [`transition_event_id`]. A request without a uid (never the case for an
///   object read from the API server) gets no `event_id`: the server derives one.
#[must_use]
pub fn audit_record(
    request: &RemediationRequest,
    children: &Children,
    transition: &Transition,
) -> RemediationOrchestrationAudit {
    let status = request.status.clone().unwrap_or_default();
    let phase = transition.phase;
    let start_time = request
        .metadata
        .creation_timestamp
        .as_ref()
        .and_then(to_chrono)
        .or(status.start_time)
        .unwrap_or(transition.time);
    let snapshot = |stage| {
        children
            .view(stage)
            .map(|child| snapshot(&child, transition))
    };
    let statuses = ServiceCrdStatuses {
        remediation_processing: snapshot(Stage::Processing),
        ai_analysis: snapshot(Stage::Analyzing),
        workflow_execution: snapshot(Stage::Executing),
    };
    let child_name = |stage: Stage| stage.child_ref(&status).map(|r| r.name.clone());
    let failed = phase == RemediationPhase::Failed;
    let timed_out = phase == RemediationPhase::Timeout;

    RemediationOrchestrationAudit {
        alert_fingerprint: request.spec.signal_fingerprint.clone(),
        remediation_name: request.metadata.name.clone().unwrap_or_default(),
        namespace: request.metadata.namespace.clone(),
        overall_phase: phase.as_str().to_owned(),
        start_time,
        completion_time: phase
            .is_terminal()
            .then(|| status.completion_time.unwrap_or(transition.time)),
        remediation_processing_name: child_name(Stage::Processing),
        ai_analysis_name: child_name(Stage::Analyzing),
        workflow_execution_name: child_name(Stage::Executing),
        // The Go client always sends the (possibly empty) object.
        service_crd_statuses: serde_json::value::to_raw_value(&statuses)
            .ok()
            .or_else(|| serde_json::value::RawValue::from_string("{}".to_owned()).ok()),
        timeout_phase: timed_out
            .then(|| status.timeout_phase.map(|p| p.as_str().to_owned()))
            .flatten(),
        timeout_time: timed_out.then(|| status.timeout_time.unwrap_or(transition.time)),
        failure_phase: failed
            .then(|| status.failed_phase.map(|p| p.as_str().to_owned()))
            .flatten(),
        failure_reason: failed
            .then(|| status.error_message.as_deref().map(failure_reason))
            .flatten(),
        duplicate_count: status.duplicate_count,
        last_duplicate_time: status.last_duplicate_time,
        event_time: Some(transition.time),
        event_id: request
            .metadata
            .uid
            .as_deref()
            .filter(|uid| !uid.is_empty())
            .map(|uid| transition_event_id(uid, transition)),
        ..RemediationOrchestrationAudit::default()
    }
}

/// One child's snapshot. The API server always sets a creation time; a child
/// without one (only seen in tests) is dated at the transition.
fn snapshot(child: &ChildView<'_>, transition: &Transition) -> CrdStatusSnapshot {
    let phase = child.phase();
    CrdStatusSnapshot {
        phase: phase.as_str().to_owned(),
        start_time: child.created().unwrap_or(transition.time),
        completion_time: child.status.and_then(|s| s.completed_at),
        success: phase == ChildPhase::Completed,
        error: child.error().map(snapshot_error),
    }
}

/// How a text that was cut short ends: the marker and the bytes left out.
fn marker(cut: usize) -> String {
    format!("… [truncated {cut} bytes]")
}

/// `text` made fit for the audit service: NUL characters (which it refuses
/// anywhere in a record) replaced by U+FFFD, then, when `width` of the whole
/// is over `max`, cut on a character boundary and ended with [`marker`], so
/// that the result is at most `max` wide. `width` measures one character as
/// the service measures the field.
pub(crate) fn fit(text: &str, max: usize, width: impl Fn(char) -> usize) -> Cow<'_, str> {
    let text = if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    };
    if text.chars().map(&width).sum::<usize>() <= max {
        return text;
    }
    // The marker is widest when everything is cut.
    let room = max.saturating_sub(marker(text.len()).chars().map(&width).sum());
    let mut used = 0;
    let mut keep = 0;
    for (at, c) in text.char_indices() {
        used += width(c);
        if used > room {
            break;
        }
        keep = at + c.len_utf8();
    }
    Cow::Owned(format!("{}{}", &text[..keep], marker(text.len() - keep)))
}

/// Bytes a character takes inside a JSON string, as `serde_json` writes it.
fn json_width(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if u32::from(c) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// A child's error message as the record's `failure_reason`: at most the
/// service's limit on that field, in bytes. A longer one would have the
/// record refused for good, and the remediation's end never audited.
pub(crate) fn failure_reason(message: &str) -> String {
    fit(
        message,
        Limits::default().max_failure_reason_bytes,
        char::len_utf8,
    )
    .into_owned()
}

/// A child's error message inside the record's `service_crd_statuses`, which
/// the service measures as serialised JSON: each of the three snapshots may
/// take a quarter of that limit, leaving room for the rest of them.
pub(crate) fn snapshot_error(message: &str) -> String {
    fit(
        message,
        Limits::default().max_crd_statuses_bytes / 4,
        json_width,
    )
    .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_764_000_000 + seconds, 0).expect("in range")
    }

    fn transition(phase: RemediationPhase, sequence: u32) -> Transition {
        Transition {
            phase,
            sequence,
            time: at(i64::from(sequence)),
        }
    }

    #[test]
    fn event_id_is_stable_and_ignores_the_decision_time() {
        let t = transition(RemediationPhase::Processing, 1);
        let later = Transition {
            time: at(999),
            ..t.clone()
        };
        assert_eq!(
            transition_event_id("uid-1", &t),
            transition_event_id("uid-1", &t)
        );
        assert_eq!(
            transition_event_id("uid-1", &t),
            transition_event_id("uid-1", &later),
            "re-deciding the same transition later keeps its id"
        );
    }

    #[test]
    fn event_id_differs_between_transitions_and_uids() {
        let mut ids = std::collections::HashSet::new();
        for uid in ["uid-1", "uid-2"] {
            for (i, phase) in RemediationPhase::ALL.into_iter().enumerate() {
                for sequence in [1, 2] {
                    let seq = sequence + u32::try_from(i).expect("small");
                    assert!(
                        ids.insert(transition_event_id(uid, &transition(phase, seq))),
                        "{uid} {phase} {seq}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_latest_transition_is_unaudited_until_marked() {
        let mut status = RemediationRequestStatus::default();
        assert_eq!(unaudited_transition(&status), None);
        let first = transition(RemediationPhase::Processing, 1);
        status.last_transition = Some(first.clone());
        assert_eq!(unaudited_transition(&status), Some(&first));
        mark_audited(&mut status, &first);
        assert_eq!(unaudited_transition(&status), None);
        let second = transition(RemediationPhase::Analyzing, 2);
        status.last_transition = Some(second.clone());
        assert_eq!(unaudited_transition(&status), Some(&second));
    }

    /// A 1 MiB message whose characters take 1 to 4 bytes, so the cut lands
    /// inside or beside a multi-byte character depending on the limit.
    fn long_message() -> String {
        "aé€😀\"\n"
            .chars()
            .cycle()
            .take(600_000)
            .collect::<String>()
            + "end"
    }

    #[test]
    fn long_error_messages_are_cut_on_a_character_boundary_with_a_marker() {
        let message = long_message();
        assert!(message.len() >= 1 << 20);
        let limits = Limits::default();
        for max in [limits.max_failure_reason_bytes, 100, 101, 102, 103] {
            let fitted = fit(&message, max, char::len_utf8);
            assert!(fitted.len() <= max, "{max}: {} bytes", fitted.len());
            let (kept, tail) = fitted.split_once("… [truncated ").expect("marked");
            assert!(message.starts_with(kept), "{max}: a prefix is kept");
            assert!(max - fitted.len() < 4, "{max}: at most one character short");
            let cut: usize = tail
                .strip_suffix(" bytes]")
                .expect("marker")
                .parse()
                .expect("n");
            assert_eq!(kept.len() + cut, message.len(), "{max}: the count is exact");
        }
        let reason = failure_reason(&message);
        assert!(reason.len() <= limits.max_failure_reason_bytes);
        let error = snapshot_error(&message);
        assert!(
            serde_json::to_string(&error).expect("json").len() - 2
                <= limits.max_crd_statuses_bytes / 4,
            "measured as the service measures it: escaped JSON"
        );
    }

    #[test]
    fn short_messages_are_kept_and_nul_is_replaced() {
        assert_eq!(failure_reason("model unavailable"), "model unavailable");
        let exact = "é".repeat(Limits::default().max_failure_reason_bytes / 2);
        assert_eq!(failure_reason(&exact), exact, "exactly at the limit");
        assert_eq!(failure_reason("a\0b"), "a\u{FFFD}b");
        assert_eq!(snapshot_error("a\0b"), "a\u{FFFD}b");
    }
}
