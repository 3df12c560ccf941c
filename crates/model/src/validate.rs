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

/// `value` in one canonical form per content: every object's keys in sorted
/// order, whatever order they came in (and whether or not `serde_json` keeps
/// insertion order), and every integral number written as an integer (`1.0`,
/// `1e0` and `1` are one number; a fraction, or an integral value past 2^53
/// where `f64` is no longer exact, is kept as `serde_json` writes it).
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
        serde_json::Value::Number(n) if n.is_f64() => {
            const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
            match n.as_f64() {
                #[allow(
                    clippy::cast_possible_truncation,
                    reason = "a whole number within 2^53 fits an i64 exactly"
                )]
                Some(f) if f.fract() == 0.0 && f.abs() <= EXACT => {
                    serde_json::Value::Number((f as i64).into())
                }
                _ => serde_json::Value::Number(n),
            }
        }
        other => other,
    }
}

/// Whether a JSON value holds a NUL character in a string or a key.
fn has_nul(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(has_nul),
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// The length of JSON text without the whitespace between its tokens: what
/// it serialises to, give or take escapes spelt another way. Counted on the
/// text, so that an oversized value is refused before anything is built from it.
fn compact_len(text: &str) -> usize {
    crate::json_text::tokens(text)
        .map(|token| match token {
            crate::json_text::Token::Str { start, end } => end - start,
            crate::json_text::Token::Byte(..) => 1,
        })
        .sum()
}

/// Counts bytes written, keeping none.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The stored (and hashed) form of a record: its known fields, normalised,
/// declared in sorted key order so that serde writes one canonical text per
/// content. Absent fields are left out; so are `event_id` (the key, not the
/// content: derived or given, it is compared apart) and a namespace equal to
/// the default (so that `"default"`, `""` and no namespace are one record, and
/// records stored before this form keep their hash).
#[derive(Serialize)]
struct Normalised<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    ai_analysis_name: Option<&'a str>,
    alert_fingerprint: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_time: Option<DateTime<Utc>>,
    duplicate_count: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_time: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_phase: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kubernetes_execution_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_duplicate_time: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
    overall_phase: &'a str,
    remediation_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    remediation_processing_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_crd_statuses: Option<&'a serde_json::value::RawValue>,
    start_time: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout_phase: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout_time: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    workflow_execution_name: Option<&'a str>,
}

/// The size rule and canonical text of `service_crd_statuses`: refused by its
/// length before any value is built from it, then parsed (at most the limit),
/// checked, and written in canonical form.
fn statuses(
    c: &mut Checker,
    raw: Option<&serde_json::value::RawValue>,
    limits: &Limits,
) -> Option<Box<serde_json::value::RawValue>> {
    let raw = raw?;
    let too_large = |c: &mut Checker, size: usize| {
        c.push(
            "service_crd_statuses",
            "max_size",
            format!(
                "must serialise to at most {} bytes, got {size}",
                limits.max_crd_statuses_bytes
            ),
        );
    };
    let size = compact_len(raw.get());
    if size > limits.max_crd_statuses_bytes {
        too_large(c, size);
        return None;
    }
    let value = match serde_json::from_str::<serde_json::Value>(raw.get()) {
        Ok(value) => value,
        Err(e) => {
            // Only past serde_json's recursion limit: the text is valid JSON.
            c.push(
                "service_crd_statuses",
                "max_depth",
                format!("cannot be read: {e}"),
            );
            return None;
        }
    };
    if !value.is_object() {
        c.push(
            "service_crd_statuses",
            "type",
            "must be a JSON object keyed by remediationProcessing, aiAnalysis and workflowExecution".to_owned(),
        );
        return None;
    }
    if has_nul(&value) {
        c.push(
            "service_crd_statuses",
            "no_nul",
            "must not contain the NUL character (\\u0000), which the database cannot store"
                .to_owned(),
        );
        return None;
    }
    let text = canonical(value).to_string();
    if text.len() > limits.max_crd_statuses_bytes {
        too_large(c, text.len());
        return None;
    }
    // Serialised JSON text is a JSON value.
    serde_json::value::RawValue::from_string(text).ok()
}

impl RemediationOrchestrationAudit {
    /// The content hash of a stored record as ingest computes it today;
    /// `None` when the record no longer passes validation.
    #[must_use]
    pub fn stored_content_hash(self) -> Option<[u8; 32]> {
        self.validate(Utc::now(), &Limits::default())
            .ok()
            .map(|r| r.content_hash)
    }

    /// Checks every rule and, when all hold, normalises the record for storage.
    ///
    /// Only the known fields are kept, normalised: the empty string counts as
    /// absent, `alert_processing_name` is folded into
    /// `remediation_processing_name`, and the status snapshot is written with
    /// sorted keys and integral numbers as integers. The stored record
    /// (`raw`) and its content hash are that normalised form, taken before
    /// any server default is applied (`event_time`) and without `event_id`
    /// or a default namespace, so that two deliveries of one record hash
    /// alike however they spell it. Fields this version does not know are
    /// dropped rather than refused, so that a newer orchestrator adding a
    /// field loses no record. `now` is the server's clock.
    ///
    /// # Errors
    /// Every broken rule, each naming its field.
    #[allow(clippy::too_many_lines)]
    pub fn validate(
        self,
        now: DateTime<Utc>,
        limits: &Limits,
    ) -> Result<NewAudit, ValidationErrors> {
        let mut c = Checker::default();
        // Every field by name: a field added to the wire type fails to
        // compile here until it is checked and given its stored form.
        let RemediationOrchestrationAudit {
            id: _,
            alert_fingerprint,
            remediation_name,
            overall_phase,
            start_time,
            completion_time,
            remediation_processing_name,
            alert_processing_name,
            ai_analysis_name,
            workflow_execution_name,
            kubernetes_execution_name,
            service_crd_statuses,
            timeout_phase,
            timeout_time,
            failure_phase,
            failure_reason,
            duplicate_count: given_duplicates,
            last_duplicate_time,
            retention_expiry_time: _,
            deleted_at: _,
            created_at: _,
            updated_at: _,
            event_id,
            namespace,
            event_time,
        } = self;
        c.required("alert_fingerprint", &alert_fingerprint, 64);
        c.required("remediation_name", &remediation_name, 255);
        if overall_phase.is_empty() {
            c.push("overall_phase", "required", "must not be empty".to_owned());
        } else {
            c.phase("overall_phase", &overall_phase);
        }

        let namespace = non_empty(namespace).unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        if !is_dns_label(&namespace) {
            c.push(
                "namespace",
                "dns_label",
                format!(
                    "must be a Kubernetes namespace name (lower-case letters, digits and '-', at most 63 characters), got {namespace:?}"
                ),
            );
        }

        let processing = non_empty(remediation_processing_name);
        let alias = non_empty(alert_processing_name);
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
        let ai_analysis_name = non_empty(ai_analysis_name);
        let workflow_execution_name = non_empty(workflow_execution_name);
        let kubernetes_execution_name = non_empty(kubernetes_execution_name);
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

        let timeout_phase = non_empty(timeout_phase);
        let failure_phase = non_empty(failure_phase);
        for (field, value) in [
            ("timeout_phase", &timeout_phase),
            ("failure_phase", &failure_phase),
        ] {
            if let Some(v) = value {
                c.phase(field, v);
            }
        }
        let failure_reason = non_empty(failure_reason);
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

        let service_crd_statuses = statuses(&mut c, service_crd_statuses.as_deref(), limits);

        c.timestamp("start_time", start_time, now, limits);
        for (field, value) in [
            ("completion_time", completion_time),
            ("timeout_time", timeout_time),
            ("last_duplicate_time", last_duplicate_time),
            ("event_time", event_time),
        ] {
            if let Some(v) = value {
                c.timestamp(field, v, now, limits);
            }
        }
        if let Some(done) = completion_time
            && done < start_time
        {
            c.push(
                "completion_time",
                "not_before_start",
                format!(
                    "must not be before start_time ({}), got {}",
                    start_time.to_rfc3339(),
                    done.to_rfc3339()
                ),
            );
        }

        let duplicate_count = match i32::try_from(given_duplicates) {
            Ok(n) if n >= 0 => n,
            _ if given_duplicates < 0 => {
                c.push(
                    "duplicate_count",
                    "minimum",
                    format!("must be 0 or more, got {given_duplicates}"),
                );
                0
            }
            _ => {
                c.push(
                    "duplicate_count",
                    "maximum",
                    format!("must be at most {}, got {}", i32::MAX, given_duplicates),
                );
                0
            }
        };

        // The first field, in key order, that holds a NUL (the snapshot is
        // checked on its own).
        let names = [
            ("ai_analysis_name", ai_analysis_name.as_deref()),
            ("alert_fingerprint", Some(alert_fingerprint.as_str())),
            ("failure_phase", failure_phase.as_deref()),
            ("failure_reason", failure_reason.as_deref()),
            (
                "kubernetes_execution_name",
                kubernetes_execution_name.as_deref(),
            ),
            ("namespace", Some(namespace.as_str())),
            ("overall_phase", Some(overall_phase.as_str())),
            ("remediation_name", Some(remediation_name.as_str())),
            (
                "remediation_processing_name",
                remediation_processing_name.as_deref(),
            ),
            ("timeout_phase", timeout_phase.as_deref()),
            (
                "workflow_execution_name",
                workflow_execution_name.as_deref(),
            ),
        ];
        if let Some((field, _)) = names
            .iter()
            .find(|(_, v)| v.is_some_and(|v| v.contains('\0')))
        {
            c.push(
                field,
                "no_nul",
                "must not contain the NUL character (\\u0000), which the database cannot store"
                    .to_owned(),
            );
        }

        let normalised = Normalised {
            ai_analysis_name: ai_analysis_name.as_deref(),
            alert_fingerprint: &alert_fingerprint,
            completion_time,
            duplicate_count: given_duplicates,
            event_time,
            failure_phase: failure_phase.as_deref(),
            failure_reason: failure_reason.as_deref(),
            kubernetes_execution_name: kubernetes_execution_name.as_deref(),
            last_duplicate_time,
            namespace: Some(namespace.as_str()).filter(|ns| *ns != DEFAULT_NAMESPACE),
            overall_phase: &overall_phase,
            remediation_name: &remediation_name,
            remediation_processing_name: remediation_processing_name.as_deref(),
            service_crd_statuses: service_crd_statuses.as_deref(),
            start_time,
            timeout_phase: timeout_phase.as_deref(),
            timeout_time,
            workflow_execution_name: workflow_execution_name.as_deref(),
        };
        // Measured without being kept: a refused record builds no text.
        let mut size = Counter(0);
        // Serialising strings, numbers, times and JSON text cannot fail.
        let _ = serde_json::to_writer(&mut size, &normalised);
        if size.0 > limits.max_record_bytes {
            c.push(
                "record",
                "max_size",
                format!(
                    "must serialise to at most {} bytes (its known fields), got {}",
                    limits.max_record_bytes, size.0
                ),
            );
        }

        if !c.0.is_empty() {
            return Err(ValidationErrors(c.0));
        }
        let raw = serde_json::to_string(&normalised).unwrap_or_default();
        let content_hash: [u8; 32] = Sha256::digest(raw.as_bytes()).into();
        let service_crd_statuses = service_crd_statuses.map(|r| String::from(Box::<str>::from(r)));

        let event_id = event_id.unwrap_or_else(|| {
            derive_event_id(
                &namespace,
                &remediation_name,
                start_time,
                &overall_phase,
                event_time,
            )
        });
        Ok(NewAudit {
            event_id,
            phase_rank: Phase::parse(&overall_phase).rank(),
            event_time: event_time.unwrap_or(now),
            namespace,
            alert_fingerprint,
            remediation_name,
            overall_phase,
            start_time,
            completion_time,
            remediation_processing_name,
            ai_analysis_name,
            workflow_execution_name,
            kubernetes_execution_name,
            service_crd_statuses,
            timeout_phase,
            timeout_time,
            failure_phase,
            failure_reason,
            duplicate_count,
            last_duplicate_time,
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

    fn check(patch: &serde_json::Value) -> Result<NewAudit, ValidationErrors> {
        let mut raw = valid();
        for (k, v) in patch.as_object().expect("object patch") {
            raw[k] = v.clone();
        }
        let record: RemediationOrchestrationAudit =
            serde_json::from_value(raw).expect("well-typed");
        record.validate(now(), &Limits::default())
    }

    fn rules(patch: &serde_json::Value) -> Vec<(String, String)> {
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
        let audit = check(&json!({})).expect("valid");
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
            rules(&json!({"alert_fingerprint": ""})),
            one("alert_fingerprint", "required")
        );
        assert_eq!(
            rules(&json!({"remediation_name": ""})),
            one("remediation_name", "required")
        );
        assert_eq!(
            rules(&json!({"overall_phase": ""})),
            one("overall_phase", "required")
        );
    }

    #[test]
    fn column_lengths_are_enforced() {
        assert!(check(&json!({"alert_fingerprint": "f".repeat(64)})).is_ok());
        assert_eq!(
            rules(&json!({"alert_fingerprint": "f".repeat(65)})),
            one("alert_fingerprint", "max_length")
        );
        assert_eq!(
            rules(&json!({"remediation_name": "n".repeat(256)})),
            one("remediation_name", "max_length")
        );
        assert_eq!(
            rules(&json!({"ai_analysis_name": "n".repeat(256)})),
            one("ai_analysis_name", "max_length")
        );
        assert_eq!(
            rules(&json!({"failure_phase": "p".repeat(51)})),
            one("failure_phase", "max_length")
        );
    }

    #[test]
    fn length_counts_characters_not_bytes() {
        assert!(check(&json!({"alert_fingerprint": "é".repeat(64)})).is_ok());
    }

    #[test]
    fn phases_are_lower_case() {
        assert_eq!(
            rules(&json!({"overall_phase": "Completed"})),
            one("overall_phase", "lower_case")
        );
        assert!(
            check(&json!({"overall_phase": "verifying"})).is_ok(),
            "unknown phases are kept"
        );
    }

    #[test]
    fn control_characters_are_rejected_in_names() {
        assert_eq!(
            rules(&json!({"remediation_name": "rr\n1"})),
            one("remediation_name", "no_control_characters")
        );
        assert_eq!(
            rules(&json!({"alert_fingerprint": "a\u{1}b"})),
            one("alert_fingerprint", "no_control_characters")
        );
    }

    #[test]
    fn nul_is_rejected_anywhere() {
        assert_eq!(
            rules(&json!({"failure_reason": "a\u{0}b"})),
            one("failure_reason", "no_nul")
        );
        assert_eq!(
            rules(&json!({"service_crd_statuses": {"aiAnalysis": {"error": "x\u{0}"}}})),
            one("service_crd_statuses", "no_nul")
        );
        assert!(check(&json!({"failure_reason": "line one\nline two\ttab"})).is_ok());
    }

    #[test]
    fn timestamps_are_range_checked() {
        assert_eq!(
            rules(&json!({"start_time": "1999-12-31T23:59:59Z"})),
            one("start_time", "time_range")
        );
        assert_eq!(
            rules(&json!({"start_time": "0001-01-01T00:00:00Z"})),
            one("start_time", "time_range")
        );
        assert_eq!(
            rules(&json!({"event_time": "2026-11-26T13:00:01Z"})),
            one("event_time", "time_range")
        );
        assert!(check(&json!({"event_time": "2026-11-26T13:00:00Z"})).is_ok());
        assert!(
            check(&json!({"start_time": "2001-01-01T00:00:00Z"})).is_ok(),
            "backfills are accepted"
        );
    }

    #[test]
    fn completion_must_not_precede_start() {
        assert_eq!(
            rules(&json!({"completion_time": "2026-11-26T10:59:59Z"})),
            one("completion_time", "not_before_start")
        );
    }

    #[test]
    fn duplicate_count_is_not_negative() {
        assert_eq!(
            rules(&json!({"duplicate_count": -1})),
            one("duplicate_count", "minimum")
        );
        assert_eq!(
            rules(&json!({"duplicate_count": 1_i64 << 40})),
            one("duplicate_count", "maximum")
        );
    }

    #[test]
    fn sizes_are_bounded() {
        assert_eq!(
            rules(&json!({"failure_reason": "x".repeat(16 * 1024 + 1)})),
            one("failure_reason", "max_size")
        );
        assert_eq!(
            rules(
                &json!({"service_crd_statuses": {"aiAnalysis": {"error": "x".repeat(64 * 1024)}}})
            ),
            one("service_crd_statuses", "max_size")
        );
        assert_eq!(
            rules(&json!({"service_crd_statuses": [1]})),
            one("service_crd_statuses", "type")
        );
    }

    #[test]
    fn namespace_must_be_a_label() {
        assert_eq!(
            rules(&json!({"namespace": "Prod"})),
            one("namespace", "dns_label")
        );
        assert_eq!(
            check(&json!({"namespace": "prod-1"}))
                .expect("valid")
                .namespace,
            "prod-1"
        );
    }

    #[test]
    fn processing_alias_is_merged_and_conflicts_are_reported() {
        let audit = check(&json!({"alert_processing_name": "rp-1"})).expect("valid");
        assert_eq!(audit.remediation_processing_name.as_deref(), Some("rp-1"));
        assert_eq!(
            rules(&json!({"alert_processing_name": "rp-1", "remediation_processing_name": "rp-2"})),
            one("alert_processing_name", "conflict")
        );
    }

    #[test]
    fn every_broken_rule_is_reported() {
        let errors =
            rules(&json!({"alert_fingerprint": "", "overall_phase": "X", "duplicate_count": -3}));
        assert_eq!(errors.len(), 3, "{errors:?}");
    }

    #[test]
    fn empty_optional_strings_are_absent() {
        let audit = check(&json!({"failure_phase": "", "failure_reason": ""})).expect("valid");
        assert_eq!(audit.failure_phase, None);
        assert_eq!(audit.failure_reason, None);
    }
    #[test]
    fn unknown_fields_are_dropped_not_refused() {
        let audit = check(&json!({"junk": "x".repeat(3_900_000), "future_field": {"a": 1}}))
            .expect("a record with fields this version does not know is kept");
        let record = audit.record();
        let stored = record.as_object().expect("object");
        assert!(!stored.contains_key("junk") && !stored.contains_key("future_field"));
        assert!(audit.raw.len() < 1024, "{}", audit.raw);
        // Server-owned fields the Go client sends are not kept either.
        assert!(!stored.contains_key("id") && !stored.contains_key("created_at"));
        assert_eq!(record["remediation_name"], "rr-1");
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
            rules(&json!({"failure_reason": escaped, "service_crd_statuses": statuses})),
            one("record", "max_size")
        );
    }

    #[test]
    fn content_hash_is_taken_before_defaults_and_ignores_key_order() {
        // No event_time: the server defaults it, at a different time on a replay.
        let first = check(&json!({})).expect("valid");
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
        let a = check(&json!({"service_crd_statuses": {"aiAnalysis": {"phase": "x", "success": true, "startTime": "2026-11-26T11:00:00Z"}}}))
            .expect("valid");
        let b = check(&json!({"start_time": "2026-11-26T12:00:00+01:00", "service_crd_statuses": {"aiAnalysis": {"startTime": "2026-11-26T11:00:00Z", "success": true, "phase": "x"}}}))
            .expect("valid");
        assert_eq!(a.content_hash, b.content_hash);
        assert_eq!(a.raw, b.raw);

        // Other content, same key.
        let c = check(&json!({"failure_reason": "other"})).expect("valid");
        assert_eq!(c.event_id, first.event_id);
        assert_ne!(c.content_hash, first.content_hash);
    }

    /// Known answer: the stored text and hash of a record. A change to either
    /// would turn every replay of a record stored before it into a conflict.
    #[test]
    fn content_hash_matches_a_known_answer() {
        let audit = check(&json!({})).expect("valid");
        assert_eq!(
            audit.raw,
            r#"{"alert_fingerprint":"mem-pressure-prod-123","duplicate_count":0,"overall_phase":"processing","remediation_name":"rr-1","start_time":"2026-11-26T11:00:00Z"}"#
        );
        let hex: String = audit.content_hash.iter().fold(String::new(), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "{b:02x}");
            s
        });
        assert_eq!(
            hex,
            "86d2cf098374a077b7aee01b36699c3565c6d9acac49881756a926d0e1084817"
        );
    }

    fn hash_of(patch: &serde_json::Value) -> [u8; 32] {
        check(patch).expect("valid").content_hash
    }

    /// Two deliveries of one record, spelt differently, are one content:
    /// a replay of either is a duplicate of the other, never a conflict.
    #[test]
    fn equivalent_records_hash_alike() {
        let statuses = |n: serde_json::Value| json!({"aiAnalysis": {"phase": "completed", "startTime": "2026-11-26T11:00:00Z", "success": true, "attempts": n}});
        let derived = derive_event_id(
            "default",
            "rr-1",
            "2026-11-26T11:00:00Z".parse().expect("valid time"),
            "processing",
            None,
        );
        let pairs = [
            (
                json!({"alert_processing_name": "rp"}),
                json!({"remediation_processing_name": "rp"}),
            ),
            (
                json!({"alert_processing_name": "rp", "remediation_processing_name": "rp"}),
                json!({"remediation_processing_name": "rp"}),
            ),
            (json!({"namespace": "default"}), json!({})),
            (json!({"namespace": ""}), json!({})),
            (json!({"namespace": null}), json!({})),
            (json!({"failure_reason": ""}), json!({})),
            (json!({"failure_phase": ""}), json!({})),
            (json!({"timeout_phase": ""}), json!({})),
            (json!({"ai_analysis_name": ""}), json!({})),
            (json!({"workflow_execution_name": ""}), json!({})),
            (json!({"kubernetes_execution_name": ""}), json!({})),
            (json!({"remediation_processing_name": ""}), json!({})),
            (json!({"alert_processing_name": ""}), json!({})),
            (json!({"service_crd_statuses": null}), json!({})),
            (json!({"event_id": derived.to_string()}), json!({})),
            (
                json!({"service_crd_statuses": statuses(json!(1.0))}),
                json!({"service_crd_statuses": statuses(json!(1))}),
            ),
            (
                json!({"service_crd_statuses": statuses(json!(-0.0))}),
                json!({"service_crd_statuses": statuses(json!(0))}),
            ),
            (
                json!({"event_time": "2026-11-26T12:30:00+01:00"}),
                json!({"event_time": "2026-11-26T11:30:00Z"}),
            ),
        ];
        for (a, b) in pairs {
            let (x, y) = (check(&a).expect("valid"), check(&b).expect("valid"));
            assert_eq!(x.content_hash, y.content_hash, "{a} vs {b}");
            assert_eq!(x.raw, y.raw, "{a} vs {b}");
            assert_eq!(x.event_id, y.event_id, "{a} vs {b}");
        }
        // Pretty-printed statuses: one text.
        let spaced: RemediationOrchestrationAudit = serde_json::from_str(
            r#"{"alert_fingerprint":"mem-pressure-prod-123","remediation_name":"rr-1","overall_phase":"processing","start_time":"2026-11-26T11:00:00Z",
                "service_crd_statuses": { "aiAnalysis" : { "success" : true , "phase" : "completed", "startTime": "2026-11-26T11:00:00Z", "attempts": 1e0 } } }"#,
        )
        .expect("well-typed");
        let spaced = spaced.validate(now(), &Limits::default()).expect("valid");
        assert_eq!(
            spaced.content_hash,
            hash_of(&json!({"service_crd_statuses": statuses(json!(1))}))
        );
    }

    #[test]
    fn different_content_hashes_differently() {
        let snapshot = |phase: &str| json!({"service_crd_statuses": {"aiAnalysis": {"phase": phase, "startTime": "2026-11-26T11:00:00Z", "success": true}}});
        let pairs = [
            (
                json!({"failure_reason": "oom"}),
                json!({"failure_reason": "timeout"}),
            ),
            (json!({"failure_reason": "oom"}), json!({})),
            (snapshot("analyzing"), snapshot("completed")),
            (snapshot("completed"), json!({})),
            (json!({"namespace": "prod"}), json!({})),
            (
                json!({"remediation_processing_name": "rp-1"}),
                json!({"remediation_processing_name": "rp-2"}),
            ),
            (json!({"duplicate_count": 1}), json!({})),
            (
                json!({"service_crd_statuses": {"aiAnalysis": {"attempts": 1.5}}}),
                json!({"service_crd_statuses": {"aiAnalysis": {"attempts": 1}}}),
            ),
            (json!({"event_time": "2026-11-26T11:30:00Z"}), json!({})),
        ];
        for (a, b) in pairs {
            assert_ne!(hash_of(&a), hash_of(&b), "{a} vs {b}");
        }
    }

    /// What a valid record keeps while it waits for the database is its
    /// text, within the record cap, not a value tree many times its size.
    #[test]
    fn a_valid_record_keeps_bounded_text() {
        let zeros = vec![0; 1950];
        let audit =
            check(&json!({"service_crd_statuses": {"a": zeros}, "junk": "x".repeat(100_000)}))
                .expect("valid");
        let limits = Limits::default();
        assert!(audit.raw.len() <= limits.max_record_bytes);
        let statuses = audit.service_crd_statuses.as_deref().expect("kept");
        assert!(statuses.len() <= limits.max_crd_statuses_bytes);
        assert_eq!(statuses.len(), "{\"a\":[]}".len() + 2 * 1950 - 1);
        assert!(
            audit.raw.len() < statuses.len() + 512,
            "{}",
            audit.raw.len()
        );
        assert_eq!(
            audit.record()["service_crd_statuses"],
            audit.statuses().expect("kept")
        );
    }

    #[test]
    fn oversized_statuses_are_refused_by_length_alone() {
        // Pretty-printing does not count; the content does.
        let limits = Limits {
            max_crd_statuses_bytes: 20,
            ..Limits::default()
        };
        let mut raw = valid();
        raw["service_crd_statuses"] = json!({"a": [0, 0, 0, 0, 0, 0]});
        let record: RemediationOrchestrationAudit =
            serde_json::from_value(raw.clone()).expect("well-typed");
        assert!(record.validate(now(), &limits).is_ok(), "19 bytes");
        raw["service_crd_statuses"] = json!({"a": [0, 0, 0, 0, 0, 0, 0]});
        let record: RemediationOrchestrationAudit =
            serde_json::from_value(raw).expect("well-typed");
        let errors = record.validate(now(), &limits).expect_err("21 bytes").0;
        assert_eq!(errors[0].rule, "max_size");
        assert_eq!(compact_len(" { \"a b\" : [ 1 , 2 ] } "), 13);
    }
}
