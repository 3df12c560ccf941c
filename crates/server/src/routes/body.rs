//! Reading request bodies: the JSON content type, the byte limit, the pause
//! limit between body frames, and splitting a batch into its elements so that
//! each record is parsed, and judged, on its own.

use std::cell::Cell;
use std::fmt;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use http_body_util::BodyExt;
use remaudit_model::json_text::{Token, tokens};
use remaudit_model::{FieldError, RemediationOrchestrationAudit};
use serde::Deserializer as _;
use serde::de::{self, IgnoredAny, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::error::ApiError;

/// Deepest nesting of arrays and objects a record may have, counting the
/// record itself as 1. Real records nest 3 levels; the headroom below
/// `serde_json`'s own limit (128) keeps every stored record readable inside the
/// envelopes that reads wrap around it (timeline, archive).
pub(crate) const MAX_RECORD_DEPTH: usize = 32;

/// Most bytes reserved for a body before they arrive.
const PREALLOCATE: usize = 64 * 1024;

/// Reads a JSON body of at most `max` bytes, answering 408 when the client
/// pauses longer than `pause` between two pieces of it.
pub(crate) async fn read_json_body(
    headers: &HeaderMap,
    body: Body,
    max: usize,
    pause: Duration,
) -> Result<Bytes, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if !(essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json")))
    {
        return Err(ApiError::UnsupportedMediaType(format!(
            "the body must be JSON with Content-Type: application/json, got {content_type:?}"
        )));
    }
    let too_large = || {
        ApiError::PayloadTooLarge(format!(
            "the body must be at most {max} bytes; send fewer records per batch"
        ))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > max) {
        return Err(too_large());
    }
    let mut body = body;
    // A declared length is a hint, not a promise: reserve little up front so
    // that a client cannot make the server hold memory it never sends.
    let mut bytes = Vec::with_capacity(declared.unwrap_or(0).min(PREALLOCATE));
    loop {
        let frame = match tokio::time::timeout(pause, body.frame()).await {
            Err(_) => return Err(ApiError::BodyTimeout(pause)),
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(ApiError::MalformedJson(format!(
                    "the body could not be read: {e}"
                )));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > max {
                return Err(too_large());
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(bytes))
}

/// Why one JSON document (a record) could not be parsed.
fn element_error(err: &serde_path_to_error::Error<serde_json::Error>) -> FieldError {
    let field = top_field(err.path());
    let inner = err.inner();
    if inner.to_string().starts_with("recursion limit exceeded") {
        FieldError::new(
            field,
            "max_depth",
            format!("nests arrays and objects deeper than {MAX_RECORD_DEPTH} levels"),
        )
    } else {
        FieldError::new(field, "json", format!("is not valid JSON: {inner}"))
    }
}

/// The record's top-level field a path starts with (`""` for the record itself).
fn top_field(path: &serde_path_to_error::Path) -> String {
    match path.iter().next() {
        Some(serde_path_to_error::Segment::Map { key }) => key.clone(),
        _ => String::new(),
    }
}

/// The first top-level field of the record `text` that nests arrays and
/// objects deeper than the limit, or `Some("")` when the record itself is not
/// an object and is too deep. Read off the text, keeping nothing: a deep
/// field is refused before any of the record is built.
fn too_deep(text: &str) -> Option<String> {
    let (mut depth, mut object) = (0_usize, false);
    // The last string at the record's own level: in an object, the key of
    // the value that follows it.
    let mut key: Option<(usize, usize)> = None;
    for token in tokens(text) {
        match token {
            Token::Str { start, end } if depth == 1 => key = Some((start, end)),
            Token::Byte(_, b @ (b'{' | b'[')) => {
                if depth == 0 {
                    object = b == b'{';
                }
                depth += 1;
                if depth > MAX_RECORD_DEPTH {
                    if !object {
                        return Some(String::new());
                    }
                    return Some(
                        key.and_then(|(from, to)| serde_json::from_str(&text[from..to]).ok())
                            .unwrap_or_default(),
                    );
                }
            }
            Token::Byte(_, b'}' | b']') => depth = depth.saturating_sub(1),
            Token::Str { .. } | Token::Byte(..) => {}
        }
    }
    None
}

/// Why a record's text is not a record.
fn record_error(err: &serde_path_to_error::Error<serde_json::Error>) -> FieldError {
    let inner = err.inner();
    if !inner.is_data() {
        // Syntax (a number out of range, a broken escape) or recursion.
        return element_error(err);
    }
    let message = inner.to_string();
    match message
        .strip_prefix("missing field `")
        .and_then(|m| m.split('`').next())
    {
        Some(field) => FieldError::new(field, "required", "is required"),
        None => FieldError::new(
            err.path().to_string(),
            "type",
            format!("has the wrong type or format: {message}"),
        ),
    }
}

/// Reads one record from its JSON text on its own (`serde_json`'s recursion
/// limit counts from the record, not from the batch around it), held to
/// [`MAX_RECORD_DEPTH`]. The record is deserialized straight from the text:
/// fields it does not know are skipped without being built, and the status
/// snapshot is kept as text for validation to measure.
pub(crate) fn parse_element(text: &str) -> Result<RemediationOrchestrationAudit, Vec<FieldError>> {
    if let Some(field) = too_deep(text) {
        return Err(vec![FieldError::new(
            field,
            "max_depth",
            format!("nests arrays and objects deeper than {MAX_RECORD_DEPTH} levels"),
        )]);
    }
    if !text.trim_start().starts_with('{') {
        return Err(vec![FieldError::new(
            "",
            "type",
            "each record must be a JSON object",
        )]);
    }
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let record: RemediationOrchestrationAudit =
        serde_path_to_error::deserialize(&mut deserializer).map_err(|e| vec![record_error(&e)])?;
    deserializer.end().map_err(|e| {
        vec![FieldError::new(
            "",
            "json",
            format!("is not valid JSON: {e}"),
        )]
    })?;
    Ok(record)
}

/// Parses a single-record body: 400 when it is not JSON, 422 when it is JSON
/// that no record can be (too deep, a number out of range, not a record).
pub(crate) fn parse_document(bytes: &[u8]) -> Result<RemediationOrchestrationAudit, ApiError> {
    let text = match serde_json::from_slice::<IgnoredAny>(bytes) {
        Err(e) => {
            return Err(ApiError::MalformedJson(format!(
                "the body is not valid JSON: {e}"
            )));
        }
        // Valid JSON is UTF-8.
        Ok(_) => std::str::from_utf8(bytes)
            .map_err(|e| ApiError::MalformedJson(format!("the body is not valid JSON: {e}")))?,
    };
    parse_element(text).map_err(ApiError::InvalidRecord)
}

/// Walks the top-level array, keeping each element's text and counting as it
/// goes; it stops at the first element past `max` without looking further.
struct Elements<'c> {
    max: usize,
    too_many: &'c Cell<bool>,
}

impl<'de> Visitor<'de> for Elements<'_> {
    type Value = Vec<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut elements = Vec::new();
        // Skipping an element to find its end keeps no value and has no
        // recursion limit (serde_json tracks nesting on a heap stack), so a deep
        // element is judged later, on its own.
        while let Some(element) = seq.next_element::<&'de RawValue>()? {
            if elements.len() == self.max {
                self.too_many.set(true);
                return Err(de::Error::custom("too many records"));
            }
            elements.push(element);
        }
        Ok(elements)
    }
}

/// Splits a batch body into the text of each record, without parsing any of
/// them: 400 when the body is not JSON, 422 when it is JSON but not a
/// non-empty array, 413 at the first record past `max`.
pub(crate) fn split_batch(bytes: &[u8], max: usize) -> Result<Vec<&RawValue>, ApiError> {
    let too_many = Cell::new(false);
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let split = deserializer
        .deserialize_seq(Elements {
            max,
            too_many: &too_many,
        })
        .and_then(|elements| deserializer.end().map(|()| elements));
    let elements = match split {
        Ok(elements) => elements,
        Err(_) if too_many.get() => {
            return Err(ApiError::PayloadTooLarge(format!(
                "a batch holds at most {max} records, got more; split it"
            )));
        }
        Err(e) if e.is_data() && serde_json::from_slice::<IgnoredAny>(bytes).is_ok() => {
            // Well-formed JSON of another type.
            return Err(ApiError::InvalidRecord(vec![FieldError::new(
                "",
                "type",
                "the body must be a JSON array of records",
            )]));
        }
        Err(e) => {
            return Err(ApiError::MalformedJson(format!(
                "the body is not a valid JSON array: {e}"
            )));
        }
    };
    if elements.is_empty() {
        return Err(ApiError::InvalidRecord(vec![FieldError::new(
            "",
            "min_items",
            "the batch must hold at least one record",
        )]));
    }
    Ok(elements)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: &str = r#""alert_fingerprint":"f","remediation_name":"rr","overall_phase":"processing","start_time":"2026-11-26T11:00:00Z""#;

    fn nested(levels: usize) -> String {
        // A record whose `service_crd_statuses` holds `levels` nested objects.
        format!(
            r#"{{{FIELDS},"service_crd_statuses":{}1{}}}"#,
            r#"{"a":"#.repeat(levels),
            "}".repeat(levels)
        )
    }

    fn rules<T: fmt::Debug>(result: Result<T, Vec<FieldError>>) -> Vec<(String, String)> {
        result
            .expect_err("rejected")
            .into_iter()
            .map(|e| (e.field, e.rule))
            .collect()
    }

    #[test]
    fn split_skips_elements_deeper_than_serde_json_allows_in_one_document() {
        // 126 objects under a record: 127 levels, inside serde_json's limit
        // (128) alone, past it inside an array. 5,000 is past it either way.
        assert!(serde_json::from_str::<serde_json::Value>(&nested(126)).is_ok());
        for levels in [126, 5_000] {
            let deep = nested(levels);
            let body = format!(r#"[{{"a":1}}, {deep}, {{"b":2}}]"#);
            assert!(serde_json::from_str::<serde_json::Value>(&body).is_err());
            let elements = split_batch(body.as_bytes(), 10).expect("split");
            assert_eq!(elements.len(), 3);
            assert_eq!(elements[1].get(), deep);
            assert_eq!(
                rules(parse_element(elements[1].get())),
                [("service_crd_statuses".to_owned(), "max_depth".to_owned())]
            );
            assert_eq!(
                rules(parse_element(elements[0].get()))[0].1,
                "required",
                "judged, not too deep"
            );
        }
    }

    #[test]
    fn depth_limit_counts_from_the_record() {
        // The record is level 1, `service_crd_statuses` level 2.
        assert!(parse_element(&nested(MAX_RECORD_DEPTH - 1)).is_ok());
        assert_eq!(
            rules(parse_element(&nested(MAX_RECORD_DEPTH))),
            [("service_crd_statuses".to_owned(), "max_depth".to_owned())]
        );
        let array = format!("{}{}", "[".repeat(40), "]".repeat(40));
        assert_eq!(
            rules(parse_element(&array)),
            [(String::new(), "max_depth".to_owned())]
        );
    }

    #[test]
    fn split_stops_at_the_first_record_past_the_limit() {
        // Garbage after record 4 is never read: the split stops at record 4.
        let body = b"[0,0,0,0,!!! not json";
        assert!(matches!(
            split_batch(body, 3),
            Err(ApiError::PayloadTooLarge(m)) if m.contains("at most 3 records")
        ));
        assert!(matches!(
            split_batch(body, 4),
            Err(ApiError::MalformedJson(_))
        ));
        assert_eq!(split_batch(b"[0,0,0]", 3).expect("three").len(), 3);
    }

    #[test]
    fn split_tells_malformed_from_wrong_type() {
        for body in [&b"[{}, {"[..], b"", b"[1 2]", b"[1] x", b"[\xff]"] {
            assert!(
                matches!(split_batch(body, 10), Err(ApiError::MalformedJson(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        for body in [&b"{}"[..], b"3", b"\"x\"", b"null"] {
            assert!(matches!(
                split_batch(body, 10),
                Err(ApiError::InvalidRecord(e)) if e[0].rule == "type"
            ));
        }
        assert!(matches!(
            split_batch(b" [ ] ", 10),
            Err(ApiError::InvalidRecord(e)) if e[0].rule == "min_items"
        ));
    }

    #[test]
    fn an_element_serde_json_cannot_hold_is_judged_alone() {
        let body = format!(
            r#"[{{"duplicate_count": 1e999}}, {{"remediation_name": "\ud800"}}, {{{FIELDS}}}]"#
        );
        let body = body.as_bytes();
        let elements = split_batch(body, 10).expect("split");
        assert_eq!(elements.len(), 3);
        assert_eq!(
            rules(parse_element(elements[0].get())),
            [("duplicate_count".to_owned(), "json".to_owned())]
        );
        assert_eq!(
            rules(parse_element(elements[1].get())),
            [("remediation_name".to_owned(), "json".to_owned())]
        );
        assert!(parse_element(elements[2].get()).is_ok());
    }

    #[test]
    fn a_single_document_is_malformed_or_invalid() {
        assert!(matches!(
            parse_document(b"{"),
            Err(ApiError::MalformedJson(_))
        ));
        assert!(matches!(
            parse_document(nested(200).as_bytes()),
            Err(ApiError::InvalidRecord(e)) if e[0].rule == "max_depth"
        ));
        assert!(parse_document(format!(" {{{FIELDS}}} ").as_bytes()).is_ok());
        assert!(matches!(
            parse_document(b" {} "),
            Err(ApiError::InvalidRecord(e)) if e[0].rule == "required"
        ));
        assert!(matches!(
            parse_document(b"[1]"),
            Err(ApiError::InvalidRecord(e)) if e[0].rule == "type"
        ));
    }

    #[test]
    fn depth_names_the_top_level_field() {
        let deep = |field: &str| {
            format!(
                r#"{{"a\"b":"x\\","{field}":{}1{}, "z":1}}"#,
                "[".repeat(40),
                "]".repeat(40)
            )
        };
        assert_eq!(
            rules(parse_element(&deep("junk"))),
            [("junk".to_owned(), "max_depth".to_owned())]
        );
        assert_eq!(
            rules(parse_element(&deep(r#"we\"ird"#))),
            [("we\"ird".to_owned(), "max_depth".to_owned())]
        );
        // Brackets inside strings do not nest.
        let quoted = format!(r#"{{{FIELDS},"failure_reason":"{}"}}"#, "[{".repeat(100));
        assert!(parse_element(&quoted).is_ok());
    }
}

/// The body decoding and validation the write routes run, without HTTP: what
/// the fuzz targets in `fuzz/` drive.
#[doc(hidden)]
pub mod fuzzing {
    use chrono::Utc;
    use remaudit_model::Limits;

    /// Decodes and validates a single-record body; whether it was accepted.
    #[must_use]
    pub fn record(bytes: &[u8]) -> bool {
        super::parse_document(bytes)
            .is_ok_and(|record| record.validate(Utc::now(), &Limits::default()).is_ok())
    }

    /// Splits a batch body of at most `max` records and decodes and
    /// validates each; how many were accepted, or `None` when the body as a
    /// whole was refused.
    #[must_use]
    pub fn batch(bytes: &[u8], max: usize) -> Option<usize> {
        let elements = super::split_batch(bytes, max).ok()?;
        assert!(
            elements.len() <= max,
            "the split kept more than {max} records"
        );
        let now = Utc::now();
        Some(
            elements
                .iter()
                .filter(|e| {
                    super::parse_element(e.get())
                        .is_ok_and(|r| r.validate(now, &Limits::default()).is_ok())
                })
                .count(),
        )
    }
}
