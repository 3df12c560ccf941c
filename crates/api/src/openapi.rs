//! Rules of the contract that derived schemas cannot carry, written into the
//! OpenAPI document: string lengths and patterns of the record, the batch's
//! size, the shape of each batch item by its status, and which analytics
//! endpoint takes which parameter.
//!
//! Rules that tie two values together (a window's ends, `completion_time`
//! after `start_time`) or depend on the server's clock or stored state (how
//! old a record may be, events per remediation) cannot be stated in a schema;
//! the descriptions say them in words.

use serde_json::{Value, json};

use crate::analytics::Endpoint;
use crate::paths;

/// Most records in one batch, unless the server is configured otherwise.
pub const DEFAULT_MAX_BATCH_RECORDS: usize = 1000;

/// An RFC 3339 time: date, `T`, time with an optional fraction, and `Z` or
/// an offset (either letter in either case).
pub const DATE_TIME_PATTERN: &str = r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$";

/// A UUID in its hyphenated form.
pub const UUID_PATTERN: &str =
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// Text without control characters (Unicode category Cc).
pub const NO_CONTROL_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F]*$";

/// A phase name: lower-case letters, digits, `-` and `_`.
pub const PHASE_PATTERN: &str = "^[a-z0-9_-]*$";

/// A Kubernetes namespace name, or empty (the default namespace).
pub const NAMESPACE_PATTERN: &str = "^([a-z0-9]([a-z0-9-]*[a-z0-9])?)?$";

/// A window length the server takes: a whole number of minutes, hours, days
/// or weeks (leading zeros allowed), from one minute to 90 days.
pub const WINDOW_PATTERN: &str = "^0*((129600|129[0-5][0-9]{2}|12[0-8][0-9]{3}|1[01][0-9]{4}|[1-9][0-9]{0,4})m|(2160|21[0-5][0-9]|20[0-9]{2}|1[0-9]{3}|[1-9][0-9]{0,2})h|(90|[1-8][0-9]|[1-9])d|(1[0-2]|[1-9])w)$";

/// A series bucket: a whole number (1 to 1,000,000) of hours, days or weeks.
pub const BUCKET_PATTERN: &str = "^0*([1-9][0-9]{0,5}|1000000)[hdw]$";

/// Writes the contract's rules into `doc`, an OpenAPI document serialised
/// as JSON. Parts the document does not have are left alone.
pub fn state_rules(doc: &mut Value) {
    formats(doc);
    record_rules(doc);
    batch_rules(doc);
    analytics_rules(doc);
}

/// Adds a pattern to every string schema of format `date-time` or `uuid`:
/// OpenAPI 3.1 treats formats as annotations, and the pattern is what makes
/// the rule checkable (an empty `since=` is not a time).
fn formats(doc: &mut Value) {
    match doc {
        Value::Object(map) => {
            let pattern = match map.get("format").and_then(Value::as_str) {
                Some("date-time") => Some(DATE_TIME_PATTERN),
                Some("uuid") => Some(UUID_PATTERN),
                _ => None,
            };
            if let Some(pattern) = pattern
                && !map.contains_key("pattern")
            {
                map.insert("pattern".to_owned(), Value::from(pattern));
            }
            map.values_mut().for_each(formats);
        }
        Value::Array(items) => items.iter_mut().for_each(formats),
        _ => {}
    }
}

/// Merges `rules` into the schema at `pointer`, when there is one.
fn merge(doc: &mut Value, pointer: &str, rules: &Value) {
    if let (Some(Value::Object(schema)), Value::Object(rules)) = (doc.pointer_mut(pointer), rules) {
        for (key, value) in rules {
            schema.insert(key.clone(), value.clone());
        }
    }
}

/// The record's rules that tie fields together or depend on the server's
/// clock or stored state.
const RECORD_RULES: &str = "One phase transition of a RemediationRequest. Beyond each field's own rules: `completion_time` is not before `start_time`; `alert_processing_name`, an alias of `remediation_processing_name`, matches it when both are given; every time is in 2000 or later and at most an hour ahead of the server's clock; `failure_reason` is at most 16384 bytes (UTF-8); the record's known fields serialise to at most 131072 bytes. The empty string counts as absent. A record older than the retention age (and of no live remediation), of an archived remediation, or past the most events one remediation may have is refused (422). Fields this version does not know are dropped.";

fn record_rules(doc: &mut Value) {
    let base = "/components/schemas/RemediationOrchestrationAudit/properties";
    let text = |min: usize, max: usize, pattern: &str| json!({ "minLength": min, "maxLength": max, "pattern": pattern });
    let name = text(0, 255, NO_CONTROL_PATTERN);
    let phase = text(0, 50, PHASE_PATTERN);
    let rules = [
        ("alert_fingerprint", text(1, 64, NO_CONTROL_PATTERN)),
        ("remediation_name", text(1, 255, NO_CONTROL_PATTERN)),
        ("overall_phase", text(1, 50, PHASE_PATTERN)),
        ("namespace", text(0, 63, NAMESPACE_PATTERN)),
        ("remediation_processing_name", name.clone()),
        ("alert_processing_name", name.clone()),
        ("ai_analysis_name", name.clone()),
        ("workflow_execution_name", name.clone()),
        ("kubernetes_execution_name", name),
        ("timeout_phase", phase.clone()),
        ("failure_phase", phase),
        (
            "failure_reason",
            json!({ "maxLength": remaudit_model::Limits::default().max_failure_reason_bytes, "pattern": r"^[^\u0000]*$" }),
        ),
        (
            "duplicate_count",
            json!({ "minimum": 0, "maximum": i32::MAX }),
        ),
    ];
    for (field, rule) in rules {
        merge(doc, &format!("{base}/{field}"), &rule);
    }
    // Server-owned fields are read as any JSON value and dropped.
    for field in [
        "id",
        "retention_expiry_time",
        "deleted_at",
        "created_at",
        "updated_at",
    ] {
        if let Some(schema) = doc.pointer_mut(&format!("{base}/{field}")) {
            let description = schema.get("description").cloned();
            *schema = json!({ "description": description });
        }
    }
    // The snapshot is stored as any JSON object; its usual shape is ServiceCrdStatuses.
    let max = remaudit_model::Limits::default().max_crd_statuses_bytes;
    if let Some(schema) = doc.pointer_mut(&format!("{base}/service_crd_statuses")) {
        *schema = json!({
            "description": format!("Snapshot of the children's statuses: a JSON object, usually shaped as ServiceCrdStatuses, stored as given (keys sorted). At most {max} bytes serialised, and no NUL character (\\u0000) anywhere in it."),
            "anyOf": [
                { "$ref": "#/components/schemas/ServiceCrdStatuses" },
                { "type": "object" },
                { "type": "null" }
            ]
        });
    }
    if let Some(Value::Object(schema)) =
        doc.pointer_mut("/components/schemas/RemediationOrchestrationAudit")
    {
        let derived = schema
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        schema.insert(
            "description".to_owned(),
            Value::from(format!("{derived}\n\n{RECORD_RULES}")),
        );
    }
}

fn batch_rules(doc: &mut Value) {
    let body = format!(
        "/paths/{}/post/requestBody/content/application~1json/schema",
        paths::AUDIT_BATCH.replace('/', "~1")
    );
    merge(
        doc,
        &body,
        &json!({
            "minItems": 1,
            "maxItems": DEFAULT_MAX_BATCH_RECORDS,
            "description": format!("1 to {DEFAULT_MAX_BATCH_RECORDS} records (the server's --max-batch-records). Each element is judged alone: one that is not a valid record is answered `rejected` in its item, and the others are still stored."),
            "items": {}
        }),
    );
    let item = |status: &str, event_id: bool, errors: bool, description: &str| {
        let mut required = vec!["index", "status"];
        if event_id {
            required.push("event_id");
        }
        if errors {
            required.push("errors");
        }
        json!({
            "type": "object",
            "description": description,
            "required": required,
            "properties": {
                "index": { "type": "integer", "minimum": 0, "description": "Position in the request array, from 0." },
                "status": { "type": "string", "enum": [status] },
                "event_id": if event_id {
                    json!({ "type": "string", "format": "uuid", "description": "The record's idempotency key." })
                } else {
                    json!({ "type": "string", "format": "uuid", "description": "The record's idempotency key, when it was a valid record." })
                },
                "errors": if errors {
                    json!({ "type": "array", "minItems": 1, "items": { "$ref": "#/components/schemas/FieldError" } })
                } else {
                    json!({ "type": "array", "maxItems": 0 })
                }
            }
        })
    };
    if let Some(schema) = doc.pointer_mut("/components/schemas/BatchItem") {
        *schema = json!({
            "description": "The answer for one record of a batch, by its status.",
            "oneOf": [
                item("created", true, false, "Stored now."),
                item("duplicate", true, false, "Already stored (same event_id, start_time and content); nothing changed."),
                item("rejected", false, true, "Not stored: invalid (no event_id), or refused by a rule of what is stored (archived, retention, max_events; with its event_id). Do not retry it unchanged."),
                item("conflict", true, true, "Not stored: another record with this event_id and start_time but other content is stored. Do not retry it unchanged."),
            ],
            "discriminator": { "propertyName": "status" }
        });
    }
}

fn analytics_rules(doc: &mut Value) {
    for endpoint in Endpoint::ALL {
        let pointer = format!("/paths/{}/get/parameters", endpoint.path.replace('/', "~1"));
        let Some(Value::Array(parameters)) = doc.pointer_mut(&pointer) else {
            continue;
        };
        parameters.retain(|p| match p.get("name").and_then(Value::as_str) {
            Some("limit") => endpoint.default_limit.is_some(),
            Some("bucket") => endpoint.bucket,
            _ => true,
        });
        for parameter in parameters.iter_mut() {
            match parameter.get("name").and_then(Value::as_str) {
                Some("alert_fingerprint") if endpoint.requires_fingerprint => {
                    parameter["required"] = Value::Bool(true);
                }
                Some("window") => {
                    parameter["schema"]["pattern"] = json!(WINDOW_PATTERN);
                }
                Some("bucket") => {
                    parameter["schema"]["pattern"] = json!(BUCKET_PATTERN);
                }
                Some("limit") => {
                    if let Some(default) = endpoint.default_limit {
                        parameter["schema"]["default"] = json!(default);
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_hold_for_what_the_server_takes() {
        // Spot checks, without a regex engine: the patterns are plain text
        // here, and the served document's schemathesis run checks them for real.
        assert!(DATE_TIME_PATTERN.starts_with('^') && DATE_TIME_PATTERN.ends_with('$'));
        assert!(UUID_PATTERN.contains("{12}"));
    }

    #[test]
    fn endpoints_list_only_their_parameters() {
        let path = |p: &str| p.replace('/', "~1");
        let params = json!([
            { "name": "since" }, { "name": "limit" }, { "name": "bucket" }, { "name": "alert_fingerprint" }
        ]);
        let mut doc = json!({ "paths": {} });
        for endpoint in Endpoint::ALL {
            doc["paths"][endpoint.path] = json!({ "get": { "parameters": params.clone() } });
        }
        state_rules(&mut doc);
        let names = |p: &str| -> Vec<String> {
            doc.pointer(&format!("/paths/{}/get/parameters", path(p)))
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|p| p["name"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(
            names(paths::ANALYTICS_DURATIONS),
            ["since", "alert_fingerprint"]
        );
        assert_eq!(
            names(paths::ANALYTICS_SUCCESS_RATE),
            ["since", "bucket", "alert_fingerprint"]
        );
        assert_eq!(
            names(paths::ANALYTICS_POSTMORTEM),
            ["since", "limit", "alert_fingerprint"]
        );
        assert_eq!(
            doc.pointer(&format!(
                "/paths/{}/get/parameters/2/required",
                path(paths::ANALYTICS_POSTMORTEM)
            )),
            Some(&Value::Bool(true))
        );
    }
}
