//! Validation of incoming records. Every rule names the field it checks and
//! says what is wrong in words an operator can act on.

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::DEFAULT_NAMESPACE;
use crate::audit::{NewAudit, RemediationOrchestrationAudit, derive_event_id};
use crate::phase::Phase;

/// Size bounds applied to records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest `failure_reason`, in bytes.
    pub max_failure_reason_bytes: usize,
    /// Largest serialised `service_crd_statuses`, in bytes.
    pub max_crd_statuses_bytes: usize,
    /// How far ahead of the server's clock a timestamp may be.
    pub max_clock_skew: Duration,
    /// Largest stored record (its known fields, serialised), in bytes.
    pub max_record_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_failure_reason_bytes: 16 * 1024,
            max_crd_statuses_bytes: 64 * 1024,
            max_clock_skew: Duration::hours(1),
            // Above the field limits together (64 KiB of statuses, 16 KiB of
            // failure reason, a few KiB of names), so that a record every
            // field rule accepts is stored; what it bounds is escaping (a
            // reason of control characters serialises six times larger).
            max_record_bytes: 128 * 1024,
        }
    }
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    /// The JSON field, e.g. `alert_fingerprint`.
    pub field: String,
    /// A stable rule name, e.g. `max_length`.
    pub rule: String,
    /// What is wrong, for people.
    pub message: String,
}

impl FieldError {
    /// A broken rule on a field.
    #[must_use]
    pub fn new(field: impl Into<String>, rule: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            rule: rule.to_owned(),
            message: message.into(),
        }
    }
}

/// Every rule a record broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid record: {}", .0.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; "))]
pub struct ValidationErrors(pub Vec<FieldError>);

/// Collects the errors of one record.
#[derive(Default)]
struct Checker(Vec<FieldError>);

const MIN_YEAR: i32 = 2000;

impl Checker {
    fn push(&mut self, field: &str, rule: &str, message: String) {
        self.0.push(FieldError::new(field, rule, message));
    }

    /// A name-like string: no control characters and at most `max` characters.
    fn text(&mut self, field: &str, value: &str, max: usize) {
        let len = value.chars().count();
        if len > max {
            self.push(
                field,
                "max_length",
                format!("must be at most {max} characters, got {len}"),
            );
        }
        if let Some(c) = value.chars().find(|c| c.is_control()) {
            self.push(
                field,
                "no_control_characters",
                format!(
                    "must not contain control characters, found U+{:04X}",
                    u32::from(c)
                ),
            );
        }
    }

    fn required(&mut self, field: &str, value: &str, max: usize) {
        if value.is_empty() {
            self.push(field, "required", "must not be empty".to_owned());
        } else {
            self.text(field, value, max);
        }
    }

    fn phase(&mut self, field: &str, value: &str) {
        self.text(field, value, 50);
        if !value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            self.push(
                field,
                "lower_case",
                format!("must be lower-case letters, digits, '-' or '_', got {value:?}"),
            );
        }
    }

    fn timestamp(
        &mut self,
        field: &str,
        value: DateTime<Utc>,
        now: DateTime<Utc>,
        limits: &Limits,
    ) {
        let floor = Utc
            .with_ymd_and_hms(MIN_YEAR, 1, 1, 0, 0, 0)
            .single()
            .expect("a valid constant date");
        if value < floor {
            self.push(
                field,
                "time_range",
                format!("must be in {MIN_YEAR} or later, got {}", value.to_rfc3339()),
            );
        } else if value > now + limits.max_clock_skew {
            self.push(
                field,
                "time_range",
                format!(
                    "must not be more than {} minutes ahead of the server's clock ({}), got {}",
                    limits.max_clock_skew.num_minutes(),
                    now.to_rfc3339(),
                    value.to_rfc3339()
                ),
            );
        }
    }
}

/// Treats the empty string the way Go's `omitempty` does: as absent.
fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|s| !s.is_empty())
}

fn is_dns_label(value: &str) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

/// `value` with every object's keys in sorted order, whatever order they came
/// in (and whether or not serde_json keeps insertion order), so that its
/// serialisation is one canonical text per content.
fn canonical(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, canonical(v)))
                    .collect(),
            )
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(canonical).collect())
        }
        other => other,
    }
}

/// The top-level field of `raw` whose value or keys hold a NUL character, if any.
fn field_with_nul(raw: &serde_json::Value) -> Option<String> {
    fn has_nul(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::String(s) => s.contains('\0'),
            serde_json::Value::Array(items) => items.iter().any(has_nul),
            serde_json::Value::Object(map) => {
                map.iter().any(|(k, v)| k.contains('\0') || has_nul(v))
            }
            _ => false,
        }
    }
    raw.as_object()?
        .iter()
        .find(|(k, v)| k.contains('\0') || has_nul(v))
        .map(|(k, _)| k.clone())
}

impl RemediationOrchestrationAudit {
    /// Checks every rule and, when all hold, normalises the record for storage.
    ///
    /// Only the known fields are kept: the stored record (`raw`) and its
    /// content hash are rebuilt from them as the caller sent them, before any
    /// default is applied, and fields this version does not know are dropped
    /// rather than refused, so that a newer orchestrator adding a field loses
    /// no record. `now` is the server's clock.
    ///
    /// # Errors
    /// Every broken rule, each naming its field.
    pub fn validate(
        self,
        now: DateTime<Utc>,
        limits: &Limits,
    ) -> Result<NewAudit, ValidationErrors> {
        let mut c = Checker::default();
        // Serialising a struct of strings, numbers, times and a JSON value cannot fail.
        let raw = canonical(serde_json::to_value(&self).unwrap_or_default());
        let text = raw.to_string();
        if text.len() > limits.max_record_bytes {
            c.push(
                "record",
                "max_size",
                format!(
                    "must serialise to at most {} bytes (its known fields), got {}",
                    limits.max_record_bytes,
                    text.len()
                ),
            );
        }
        let content_hash: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        c.required("alert_fingerprint", &self.alert_fingerprint, 64);
        c.required("remediation_name", &self.remediation_name, 255);
        if self.overall_phase.is_empty() {
            c.push("overall_phase", "required", "must not be empty".to_owned());
        } else {
            c.phase("overall_phase", &self.overall_phase);
        }

        let namespace = non_empty(self.namespace).unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        if !is_dns_label(&namespace) {
            c.push(
                "namespace",
                "dns_label",
                format!(
                    "must be a Kubernetes namespace name (lower-case letters, digits and '-', at most 63 characters), got {namespace:?}"
                ),
            );
        }

        let processing = non_empty(self.remediation_processing_name);
        let alias = non_empty(self.alert_processing_name);
        let remediation_processing_name = match (processing, alias) {
            (Some(a), Some(b)) if a != b => {
                c.push(
                    "alert_processing_name",
                    "conflict",
                    format!(
                        "is an alias of remediation_processing_name and must match it when both are given ({b:?} vs {a:?})"
                    ),
                );
                Some(a)
            }
            (a, b) => a.or(b),
        };
        let ai_analysis_name = non_empty(self.ai_analysis_name);
        let workflow_execution_name = non_empty(self.workflow_execution_name);
        let kubernetes_execution_name = non_empty(self.kubernetes_execution_name);
        for (field, value) in [
            ("remediation_processing_name", &remediation_processing_name),
            ("ai_analysis_name", &ai_analysis_name),
            ("workflow_execution_name", &workflow_execution_name),
            ("kubernetes_execution_name", &kubernetes_execution_name),
        ] {
            if let Some(v) = value {
                c.text(field, v, 255);
            }
        }

        let timeout_phase = non_empty(self.timeout_phase);
        let failure_phase = non_empty(self.failure_phase);
        for (field, value) in [
            ("timeout_phase", &timeout_phase),
            ("failure_phase", &failure_phase),
        ] {
            if let Some(v) = value {
                c.phase(field, v);
            }
        }
        let failure_reason = non_empty(self.failure_reason);
        if let Some(reason) = &failure_reason
            && reason.len() > limits.max_failure_reason_bytes
        {
            c.push(
                "failure_reason",
                "max_size",
                format!(
                    "must be at most {} bytes, got {}",
                    limits.max_failure_reason_bytes,
                    reason.len()
                ),
            );
        }

        let service_crd_statuses = self.service_crd_statuses.filter(|v| !v.is_null());
        if let Some(statuses) = &service_crd_statuses {
            if statuses.is_object() {
                let size = statuses.to_string().len();
                if size > limits.max_crd_statuses_bytes {
                    c.push(
                        "service_crd_statuses",
                        "max_size",
                        format!(
                            "must serialise to at most {} bytes, got {size}",
                            limits.max_crd_statuses_bytes
                        ),
                    );
                }
            } else {
                c.push(
                    "service_crd_statuses",
                    "type",
                    "must be a JSON object keyed by remediationProcessing, aiAnalysis and workflowExecution".to_owned(),
                );
            }
        }

        c.timestamp("start_time", self.start_time, now, limits);
        for (field, value) in [
            ("completion_time", self.completion_time),
            ("timeout_time", self.timeout_time),
            ("last_duplicate_time", self.last_duplicate_time),
            ("event_time", self.event_time),
        ] {
            if let Some(v) = value {
                c.timestamp(field, v, now, limits);
            }
        }
        if let Some(done) = self.completion_time
            && done < self.start_time
        {
            c.push(
                "completion_time",
                "not_before_start",
                format!(
                    "must not be before start_time ({}), got {}",
                    self.start_time.to_rfc3339(),
                    done.to_rfc3339()
                ),
            );
        }

        let duplicate_count = match i32::try_from(self.duplicate_count) {
            Ok(n) if n >= 0 => n,
            _ if self.duplicate_count < 0 => {
                c.push(
                    "duplicate_count",
                    "minimum",
                    format!("must be 0 or more, got {}", self.duplicate_count),
                );
                0
            }
            _ => {
                c.push(
                    "duplicate_count",
                    "maximum",
                    format!("must be at most {}, got {}", i32::MAX, self.duplicate_count),
                );
                0
            }
        };

        if let Some(field) = field_with_nul(&raw) {
            c.push(
                &field,
                "no_nul",
                "must not contain the NUL character (\\u0000), which the database cannot store"
                    .to_owned(),
            );
        }

        if !c.0.is_empty() {
            return Err(ValidationErrors(c.0));
        }

        let event_id = self.event_id.unwrap_or_else(|| {
            derive_event_id(
                &namespace,
                &self.remediation_name,
                self.start_time,
                &self.overall_phase,
                self.event_time,
            )
        });
        Ok(NewAudit {
            event_id,
            phase_rank: Phase::parse(&self.overall_phase).rank(),
            event_time: self.event_time.unwrap_or(now),
            namespace,
            alert_fingerprint: self.alert_fingerprint,
            remediation_name: self.remediation_name,
            overall_phase: self.overall_phase,
            start_time: self.start_time,
            completion_time: self.completion_time,
            remediation_processing_name,
            ai_analysis_name,
            workflow_execution_name,
            kubernetes_execution_name,
            service_crd_statuses,
            timeout_phase,
            timeout_time: self.timeout_time,
            failure_phase,
            failure_reason,
            duplicate_count,
            last_duplicate_time: self.last_duplicate_time,
            raw,
            content_hash,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        "2026-11-26T12:00:00Z".parse().expect("valid time")
    }

    fn valid() -> serde_json::Value {
        json!({
            "id": 0,
            "alert_fingerprint": "mem-pressure-prod-123",
            "remediation_name": "rr-1",
            "overall_phase": "processing",
            "start_time": "2026-11-26T11:00:00Z",
            "duplicate_count": 0,
            "created_at": "0001-01-01T00:00:00Z",
            "updated_at": "0001-01-01T00:00:00Z"
        })
    }

    fn check(patch: serde_json::Value) -> Result<NewAudit, ValidationErrors> {
        let mut raw = valid();
        for (k, v) in patch.as_object().expect("object patch") {
            raw[k] = v.clone();
        }
        let record: RemediationOrchestrationAudit =
            serde_json::from_value(raw).expect("well-typed");
        record.validate(now(), &Limits::default())
    }

    fn rules(patch: serde_json::Value) -> Vec<(String, String)> {
        check(patch)
            .expect_err("should be invalid")
            .0
            .into_iter()
            .map(|e| (e.field, e.rule))
            .collect()
    }

    fn one(field: &str, rule: &str) -> Vec<(String, String)> {
        vec![(field.to_owned(), rule.to_owned())]
    }

    #[test]
    fn go_client_record_is_accepted_with_defaults() {
        let audit = check(json!({})).expect("valid");
        assert_eq!(audit.namespace, "default");
        assert_eq!(audit.event_time, now());
        assert_eq!(
            audit.event_id,
            derive_event_id("default", "rr-1", audit.start_time, "processing", None)
        );
    }

    #[test]
    fn derived_event_id_depends_on_phase_and_event_time() {
        let start = now();
        let a = derive_event_id("ns", "rr", start, "processing", None);
        assert_eq!(a, derive_event_id("ns", "rr", start, "processing", None));
        assert_ne!(a, derive_event_id("ns", "rr", start, "analyzing", None));
        assert_ne!(
            a,
            derive_event_id("ns", "rr", start, "processing", Some(start))
        );
        assert_ne!(a, derive_event_id("other", "rr", start, "processing", None));
    }

    #[test]
    fn required_fields_must_not_be_empty() {
        assert_eq!(
            rules(json!({"alert_fingerprint": ""})),
            one("alert_fingerprint", "required")
        );
        assert_eq!(
            rules(json!({"remediation_name": ""})),
            one("remediation_name", "required")
        );
        assert_eq!(
            rules(json!({"overall_phase": ""})),
            one("overall_phase", "required")
        );
    }

    #[test]
    fn column_lengths_are_enforced() {
        assert!(check(json!({"alert_fingerprint": "f".repeat(64)})).is_ok());
        assert_eq!(
            rules(json!({"alert_fingerprint": "f".repeat(65)})),
            one("alert_fingerprint", "max_length")
        );
        assert_eq!(
            rules(json!({"remediation_name": "n".repeat(256)})),
            one("remediation_name", "max_length")
        );
        assert_eq!(
            rules(json!({"ai_analysis_name": "n".repeat(256)})),
            one("ai_analysis_name", "max_length")
        );
        assert_eq!(
            rules(json!({"failure_phase": "p".repeat(51)})),
            one("failure_phase", "max_length")
        );
    }

    #[test]
    fn length_counts_characters_not_bytes() {
        assert!(check(json!({"alert_fingerprint": "é".repeat(64)})).is_ok());
    }

    #[test]
    fn phases_are_lower_case() {
        assert_eq!(
            rules(json!({"overall_phase": "Completed"})),
            one("overall_phase", "lower_case")
        );
        assert!(
            check(json!({"overall_phase": "verifying"})).is_ok(),
            "unknown phases are kept"
        );
    }

    #[test]
    fn control_characters_are_rejected_in_names() {
        assert_eq!(
            rules(json!({"remediation_name": "rr\n1"})),
            one("remediation_name", "no_control_characters")
        );
        assert_eq!(
            rules(json!({"alert_fingerprint": "a\u{1}b"})),
            one("alert_fingerprint", "no_control_characters")
        );
    }

    #[test]
    fn nul_is_rejected_anywhere() {
        assert_eq!(
            rules(json!({"failure_reason": "a\u{0}b"})),
            one("failure_reason", "no_nul")
        );
        assert_eq!(
            rules(json!({"service_crd_statuses": {"aiAnalysis": {"error": "x\u{0}"}}})),
            one("service_crd_statuses", "no_nul")
        );
        assert!(check(json!({"failure_reason": "line one\nline two\ttab"})).is_ok());
    }

    #[test]
    fn timestamps_are_range_checked() {
        assert_eq!(
            rules(json!({"start_time": "1999-12-31T23:59:59Z"})),
            one("start_time", "time_range")
        );
        assert_eq!(
            rules(json!({"start_time": "0001-01-01T00:00:00Z"})),
            one("start_time", "time_range")
        );
        assert_eq!(
            rules(json!({"event_time": "2026-11-26T13:00:01Z"})),
            one("event_time", "time_range")
        );
        assert!(check(json!({"event_time": "2026-11-26T13:00:00Z"})).is_ok());
        assert!(
            check(json!({"start_time": "2001-01-01T00:00:00Z"})).is_ok(),
            "backfills are accepted"
        );
    }

    #[test]
    fn completion_must_not_precede_start() {
        assert_eq!(
            rules(json!({"completion_time": "2026-11-26T10:59:59Z"})),
            one("completion_time", "not_before_start")
        );
    }

    #[test]
    fn duplicate_count_is_not_negative() {
        assert_eq!(
            rules(json!({"duplicate_count": -1})),
            one("duplicate_count", "minimum")
        );
        assert_eq!(
            rules(json!({"duplicate_count": 1_i64 << 40})),
            one("duplicate_count", "maximum")
        );
    }

    #[test]
    fn sizes_are_bounded() {
        assert_eq!(
            rules(json!({"failure_reason": "x".repeat(16 * 1024 + 1)})),
            one("failure_reason", "max_size")
        );
        assert_eq!(
            rules(
                json!({"service_crd_statuses": {"aiAnalysis": {"error": "x".repeat(64 * 1024)}}})
            ),
            one("service_crd_statuses", "max_size")
        );
        assert_eq!(
            rules(json!({"service_crd_statuses": [1]})),
            one("service_crd_statuses", "type")
        );
    }

    #[test]
    fn namespace_must_be_a_label() {
        assert_eq!(
            rules(json!({"namespace": "Prod"})),
            one("namespace", "dns_label")
        );
        assert_eq!(
            check(json!({"namespace": "prod-1"}))
                .expect("valid")
                .namespace,
            "prod-1"
        );
    }

    #[test]
    fn processing_alias_is_merged_and_conflicts_are_reported() {
        let audit = check(json!({"alert_processing_name": "rp-1"})).expect("valid");
        assert_eq!(audit.remediation_processing_name.as_deref(), Some("rp-1"));
        assert_eq!(
            rules(json!({"alert_processing_name": "rp-1", "remediation_processing_name": "rp-2"})),
            one("alert_processing_name", "conflict")
        );
    }

    #[test]
    fn every_broken_rule_is_reported() {
        let errors =
            rules(json!({"alert_fingerprint": "", "overall_phase": "X", "duplicate_count": -3}));
        assert_eq!(errors.len(), 3, "{errors:?}");
    }

    #[test]
    fn empty_optional_strings_are_absent() {
        let audit = check(json!({"failure_phase": "", "failure_reason": ""})).expect("valid");
        assert_eq!(audit.failure_phase, None);
        assert_eq!(audit.failure_reason, None);
    }
    #[test]
    fn unknown_fields_are_dropped_not_refused() {
        let audit = check(json!({"junk": "x".repeat(3_900_000), "future_field": {"a": 1}}))
            .expect("a record with fields this version does not know is kept");
        let stored = audit.raw.as_object().expect("object");
        assert!(!stored.contains_key("junk") && !stored.contains_key("future_field"));
        assert!(audit.raw.to_string().len() < 1024, "{}", audit.raw);
        // Server-owned fields the Go client sends are not kept either.
        assert!(!stored.contains_key("id") && !stored.contains_key("created_at"));
        assert_eq!(audit.raw["remediation_name"], "rr-1");
    }

    #[test]
    fn the_stored_record_is_capped() {
        let limits = Limits {
            max_record_bytes: 300,
            ..Limits::default()
        };
        let mut raw = valid();
        raw["failure_reason"] = json!("r".repeat(400));
        let record: RemediationOrchestrationAudit =
            serde_json::from_value(raw).expect("well-typed");
        let errors = record.validate(now(), &limits).expect_err("too large").0;
        assert_eq!(
            errors
                .iter()
                .map(|e| (e.field.as_str(), e.rule.as_str()))
                .collect::<Vec<_>>(),
            [("record", "max_size")]
        );
        // Escaping counts: control characters serialise as \u00XX.
        // 16 KiB of reason (96 KiB escaped) and 40 KiB of statuses pass their own rules.
        let escaped = "\u{1}".repeat(16 * 1024);
        let statuses = json!({"aiAnalysis": {"error": "e".repeat(40 * 1024)}});
        assert_eq!(
            rules(json!({"failure_reason": escaped, "service_crd_statuses": statuses})),
            one("record", "max_size")
        );
    }

    #[test]
    fn content_hash_is_taken_before_defaults_and_ignores_key_order() {
        // No event_time: the server defaults it, at a different time on a replay.
        let first = check(json!({})).expect("valid");
        let mut raw = valid();
        raw["overall_phase"] = json!("processing");
        let record: RemediationOrchestrationAudit =
            serde_json::from_value(raw).expect("well-typed");
        let later = record
            .validate(now() + Duration::minutes(5), &Limits::default())
            .expect("valid");
        assert_ne!(first.event_time, later.event_time);
        assert_eq!(first.event_id, later.event_id);
        assert_eq!(first.content_hash, later.content_hash);

        // The same content, keys in another order and times spelt another way.
        let a = check(json!({"service_crd_statuses": {"aiAnalysis": {"phase": "x", "success": true, "startTime": "2026-11-26T11:00:00Z"}}}))
            .expect("valid");
        let b = check(json!({"start_time": "2026-11-26T12:00:00+01:00", "service_crd_statuses": {"aiAnalysis": {"startTime": "2026-11-26T11:00:00Z", "success": true, "phase": "x"}}}))
            .expect("valid");
        assert_eq!(a.content_hash, b.content_hash);
        assert_eq!(a.raw.to_string(), b.raw.to_string());

        // Other content, same key.
        let c = check(json!({"failure_reason": "other"})).expect("valid");
        assert_eq!(c.event_id, first.event_id);
        assert_ne!(c.content_hash, first.content_hash);
    }

    /// Known answer: the stored text and hash of a record. A change to either
    /// would turn every replay of a record stored before it into a conflict.
    #[test]
    fn content_hash_matches_a_known_answer() {
        let audit = check(json!({})).expect("valid");
        assert_eq!(
            audit.raw.to_string(),
            r#"{"alert_fingerprint":"mem-pressure-prod-123","duplicate_count":0,"overall_phase":"processing","remediation_name":"rr-1","start_time":"2026-11-26T11:00:00Z"}"#
        );
        let hex: String = audit
            .content_hash
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "86d2cf098374a077b7aee01b36699c3565c6d9acac49881756a926d0e1084817"
        );
    }
}
