//! The Parquet form of archive files: each table's rows of one week as
//! zstd-compressed Parquet with typed columns (times as UTC microseconds,
//! JSON documents as text), sorted so that a reader looking for one alert or
//! one remediation can skip the row groups whose statistics rule it out.
//!
//! Rows arrive as the JSON objects the store writes for JSON Lines files; a
//! column the schema below does not name fails the batch (its rows stay
//! live) rather than being left out of the archive.

use std::sync::Arc;

use arrow_array::cast::AsArray as _;
use arrow_array::types::TimestampMicrosecondType;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_json::reader::Decoder;
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use remaudit_store::retention::ArchiveTable;
use serde_json::{Map, Value};

/// Rows decoded and handed to the Parquet writer at a time.
pub(crate) const BATCH_ROWS: usize = 4096;

/// Rows in one row group: small enough that one alert's rows span few
/// groups, large enough that a week's file has a few hundred at most.
const ROW_GROUP_ROWS: usize = 16 * 1024;

/// Rows in one file before the week goes on in the next part.
pub(crate) const PART_ROWS: u64 = 1_000_000;

/// Bytes of one file before the week goes on in the next part, whatever its rows.
pub(crate) const PART_BYTES: u64 = 512 << 20;

/// Bytes of JSON lines gathered before they are encoded, whatever their count.
pub(crate) const BATCH_BYTES: usize = 8 << 20;

/// Encoded bytes a row group may hold in memory before it is written out,
/// whatever its rows: large records cannot make the writer hold gigabytes.
const ROW_GROUP_BYTES: usize = 64 << 20;

/// How a column's JSON value becomes a Parquet value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A whole number: 64-bit.
    Int,
    /// Text.
    Text,
    /// A JSON document, kept as its text.
    Json,
    /// A point in time: UTC microseconds.
    Time,
    /// True or false.
    Bool,
    /// A PostgreSQL transaction id (`xid8`), which JSON carries as text: unsigned 64-bit.
    Xid,
}

/// The summary table's archived columns, in the live table's order.
const SUMMARY: &[(&str, Kind)] = &[
    ("id", Kind::Int),
    ("alert_fingerprint", Kind::Text),
    ("remediation_name", Kind::Text),
    ("overall_phase", Kind::Text),
    ("start_time", Kind::Time),
    ("completion_time", Kind::Time),
    ("remediation_processing_name", Kind::Text),
    ("ai_analysis_name", Kind::Text),
    ("workflow_execution_name", Kind::Text),
    ("kubernetes_execution_name", Kind::Text),
    ("service_crd_statuses", Kind::Json),
    ("timeout_phase", Kind::Text),
    ("timeout_time", Kind::Time),
    ("failure_phase", Kind::Text),
    ("failure_reason", Kind::Text),
    ("duplicate_count", Kind::Int),
    ("last_duplicate_time", Kind::Time),
    ("retention_expiry_time", Kind::Time),
    ("deleted_at", Kind::Time),
    ("created_at", Kind::Time),
    ("updated_at", Kind::Time),
    ("namespace", Kind::Text),
    ("phase_rank", Kind::Int),
    ("event_id", Kind::Text),
    ("event_time", Kind::Time),
    ("duration_us", Kind::Int),
    ("duration_bin", Kind::Int),
    ("legal_hold", Kind::Bool),
    ("created_xid", Kind::Xid),
    ("archived_at", Kind::Time),
    ("archive_batch", Kind::Int),
];

/// The events table's archived columns, in the live table's order.
const EVENTS: &[(&str, Kind)] = &[
    ("id", Kind::Int),
    ("event_id", Kind::Text),
    ("namespace", Kind::Text),
    ("remediation_name", Kind::Text),
    ("start_time", Kind::Time),
    ("overall_phase", Kind::Text),
    ("event_time", Kind::Time),
    ("received_at", Kind::Time),
    ("record", Kind::Json),
    ("content_hash", Kind::Text),
    ("chain_seq", Kind::Int),
    ("chain_key_id", Kind::Text),
    ("chain_mac", Kind::Text),
    ("archived_at", Kind::Time),
    ("archive_batch", Kind::Int),
];

fn columns(table: ArchiveTable) -> &'static [(&'static str, Kind)] {
    match table {
        ArchiveTable::Remediations => SUMMARY,
        ArchiveTable::Events => EVENTS,
    }
}

/// The Arrow schema of a table's archive files; every column may be null.
#[must_use]
pub fn schema(table: ArchiveTable) -> SchemaRef {
    schema_in(table, "UTC")
}

/// The schema with times in time zone `zone`: the JSON decoder parses
/// times only into an offset (`+00:00`); the files name the zone `UTC`.
fn schema_in(table: ArchiveTable, zone: &str) -> SchemaRef {
    let fields = columns(table)
        .iter()
        .map(|(name, kind)| {
            let data_type = match kind {
                Kind::Int => DataType::Int64,
                Kind::Text | Kind::Json => DataType::Utf8,
                Kind::Time => DataType::Timestamp(TimeUnit::Microsecond, Some(zone.into())),
                Kind::Bool => DataType::Boolean,
                Kind::Xid => DataType::UInt64,
            };
            Field::new(*name, data_type, true)
        })
        .collect::<Vec<_>>();
    Arc::new(Schema::new(fields))
}

/// Turns one row's JSON object, as the store writes it, into the shape the
/// schema decodes: JSON documents as their text, transaction ids as numbers.
///
/// # Errors
/// A line that is not a JSON object, or that has a column the schema does
/// not know, or a transaction id that is not a number.
fn normalise(table: ArchiveTable, line: &str) -> Result<Map<String, Value>, String> {
    let mut row: Map<String, Value> =
        serde_json::from_str(line).map_err(|e| format!("a row is not a JSON object: {e}"))?;
    let known = columns(table);
    for (column, value) in &mut row {
        let Some((_, kind)) = known.iter().find(|(name, _)| name == column) else {
            return Err(format!(
                "{} has a column {column:?} the Parquet archive does not know; \
                 this version cannot archive it as Parquet (use --archive-format jsonl)",
                table.name()
            ));
        };
        match (kind, &*value) {
            (_, Value::Null) => {}
            (Kind::Json, _) => *value = Value::String(value.to_string()),
            (Kind::Xid, Value::String(text)) => {
                let xid = text
                    .parse::<u64>()
                    .map_err(|e| format!("{column} {text:?} is not a transaction id: {e}"))?;
                *value = Value::from(xid);
            }
            _ => {}
        }
    }
    Ok(row)
}

/// Writes one Parquet file in pieces: rows go in as JSON lines, encoded
/// bytes come out as soon as the writer has them.
pub(crate) struct PartWriter {
    table: ArchiveTable,
    /// The files' schema, times in `UTC`.
    schema: SchemaRef,
    decoder: Decoder,
    writer: ArrowWriter<Vec<u8>>,
    rows: u64,
}

impl std::fmt::Debug for PartWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartWriter")
            .field("table", &self.table.name())
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl PartWriter {
    /// A writer of `table`'s rows; `meta` goes into the file's key-value metadata.
    pub(crate) fn new(table: ArchiveTable, meta: &[(&str, String)]) -> Result<Self, String> {
        let schema = schema(table);
        let decoder = arrow_json::ReaderBuilder::new(schema_in(table, "+00:00"))
            .with_batch_size(BATCH_ROWS)
            .with_strict_mode(true)
            .build_decoder()
            .map_err(|e| e.to_string())?;
        let sorting = table
            .sort_columns()
            .iter()
            .filter_map(|c| schema.index_of(c).ok())
            .map(|i| SortingColumn {
                column_idx: i32::try_from(i).unwrap_or(i32::MAX),
                descending: false,
                nulls_first: false,
            })
            .collect();
        let zstd = ZstdLevel::try_new(3).map_err(|e| e.to_string())?;
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(zstd))
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_sorting_columns(Some(sorting))
            .set_created_by(format!("remaudit {}", env!("CARGO_PKG_VERSION")))
            .set_key_value_metadata(Some(
                meta.iter()
                    .map(|(k, v)| KeyValue::new(format!("remaudit.{k}"), v.clone()))
                    .collect(),
            ))
            .build();
        let writer = ArrowWriter::try_new(Vec::new(), Arc::clone(&schema), Some(properties))
            .map_err(|e| e.to_string())?;
        Ok(Self {
            table,
            schema,
            decoder,
            writer,
            rows: 0,
        })
    }

    /// Rows written so far.
    pub(crate) fn rows(&self) -> u64 {
        self.rows
    }

    /// Adds rows; returns the file's bytes the writer has finished since the last call.
    pub(crate) fn write(&mut self, lines: &[String]) -> Result<Vec<u8>, String> {
        let rows = lines
            .iter()
            .map(|line| normalise(self.table, line))
            .collect::<Result<Vec<_>, _>>()?;
        self.decoder
            .serialize(&rows)
            .map_err(|e| format!("a row does not fit the Parquet schema: {e}"))?;
        if let Some(batch) = self
            .decoder
            .flush()
            .map_err(|e| format!("a row does not fit the Parquet schema: {e}"))?
        {
            self.write_batch(&batch)?;
        }
        Ok(std::mem::take(self.writer.inner_mut()))
    }

    fn write_batch(&mut self, batch: &RecordBatch) -> Result<(), String> {
        let batch = in_zone(batch, &self.schema, "UTC")?;
        self.writer.write(&batch).map_err(|e| e.to_string())?;
        if self.writer.in_progress_size() >= ROW_GROUP_BYTES {
            self.writer.flush().map_err(|e| e.to_string())?;
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Ends the file; returns its last bytes.
    pub(crate) fn finish(self) -> Result<Vec<u8>, String> {
        self.writer.into_inner().map_err(|e| e.to_string())
    }
}

/// The same rows with their times' zone named `zone`: the microseconds
/// (UTC) do not change, only the name the schema gives them.
fn in_zone(batch: &RecordBatch, schema: &SchemaRef, zone: &str) -> Result<RecordBatch, String> {
    let columns = batch
        .columns()
        .iter()
        .map(|column| match column.data_type() {
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                let times = column.as_primitive::<TimestampMicrosecondType>();
                Arc::new(times.clone().with_timezone(zone)) as ArrayRef
            }
            _ => Arc::clone(column),
        })
        .collect();
    RecordBatch::try_new(Arc::clone(schema), columns).map_err(|e| e.to_string())
}

/// Reads a Parquet archive file's rows back as the JSON objects the store
/// wrote (JSON documents parsed again, times as RFC 3339 text), a record
/// batch at a time.
///
/// # Errors
/// When the bytes are not a Parquet file or a page does not decode.
pub(crate) fn read_rows(
    table: ArchiveTable,
    bytes: Bytes,
    mut each: impl FnMut(Map<String, Value>),
) -> Result<u64, String> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| e.to_string())?
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| e.to_string())?;
    // Times are written as text with an offset, which needs no zone database.
    let offset = schema_in(table, "+00:00");
    let mut rows = 0;
    for batch in reader {
        let batch = in_zone(&batch.map_err(|e| e.to_string())?, &offset, "+00:00")?;
        for mut row in json_objects(std::slice::from_ref(&batch))? {
            parse_documents(table, &mut row)?;
            rows += 1;
            each(row);
        }
    }
    Ok(rows)
}

/// Rows as JSON objects (times as RFC 3339 text, nulls left out).
///
/// # Errors
/// When a value cannot be written as JSON.
pub fn json_objects(batches: &[RecordBatch]) -> Result<Vec<Map<String, Value>>, String> {
    let mut text = Vec::new();
    let mut lines = arrow_json::LineDelimitedWriter::new(&mut text);
    for batch in batches {
        lines.write(batch).map_err(|e| e.to_string())?;
    }
    lines.finish().map_err(|e| e.to_string())?;
    text.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|line| serde_json::from_slice(line).map_err(|e| e.to_string()))
        .collect()
}

/// Parses the JSON documents of one of `table`'s rows back from the text
/// the files keep them as.
///
/// # Errors
/// When such a column's text is not a JSON document.
pub fn parse_documents(table: ArchiveTable, row: &mut Map<String, Value>) -> Result<(), String> {
    for (column, kind) in columns(table) {
        if *kind != Kind::Json {
            continue;
        }
        if let Some(Value::String(doc)) = row.get(*column) {
            let parsed = serde_json::from_str(doc)
                .map_err(|e| format!("{column} is not a JSON document: {e}"))?;
            row.insert((*column).to_owned(), parsed);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: i64, record: &str) -> String {
        format!(
            r#"{{"id":{id},"event_id":"6ed23026-a60f-46a1-accd-2b00f2e430bc","namespace":"prod",
            "remediation_name":"rr-1","start_time":"2026-08-03T10:00:00.123456+00:00",
            "overall_phase":"Completed","event_time":"2026-08-03T10:00:01Z",
            "received_at":"2026-08-03T10:00:01.5Z","record":{record},"content_hash":"\\xab",
            "chain_seq":null,"chain_key_id":null,"chain_mac":null,
            "archived_at":"2026-11-03T00:00:00Z","archive_batch":7}}"#
        )
        .replace('\n', "")
    }

    fn write(table: ArchiveTable, lines: &[String]) -> Bytes {
        let mut part = PartWriter::new(table, &[("batch", "7".into())]).expect("writer");
        let mut out = part.write(lines).expect("write");
        assert_eq!(part.rows(), lines.len() as u64);
        out.extend(part.finish().expect("finish"));
        Bytes::from(out)
    }

    #[test]
    fn rows_read_back_as_written_with_typed_columns() {
        let lines = [
            event(1, r#"{"alert":{"fingerprint":"fp-1"},"n":[1,2.5,"x"]}"#),
            event(2, r#""a bare string""#),
            event(3, "null"),
        ];
        let bytes = write(ArchiveTable::Events, &lines);
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes.clone()).expect("parquet");
        let schema = builder.schema();
        assert_eq!(
            schema
                .field_with_name("start_time")
                .expect("col")
                .data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert_eq!(
            schema.field_with_name("record").expect("col").data_type(),
            &DataType::Utf8
        );
        let meta = builder.metadata().file_metadata();
        assert!(
            meta.key_value_metadata()
                .expect("kv")
                .iter()
                .any(|kv| kv.key == "remaudit.batch" && kv.value.as_deref() == Some("7"))
        );
        let mut back = Vec::new();
        let rows = read_rows(ArchiveTable::Events, bytes, |row| back.push(row)).expect("read");
        assert_eq!(rows, 3);
        for (line, row) in lines.iter().zip(&back) {
            let mut want: Map<String, Value> = serde_json::from_str(line).expect("json");
            want.retain(|_, v| !v.is_null());
            for time in ["start_time", "event_time", "received_at", "archived_at"] {
                let at = |v: &Value| {
                    v.as_str()
                        .expect("text")
                        .parse::<chrono::DateTime<chrono::Utc>>()
                        .expect("time")
                };
                assert_eq!(at(&want[time]), at(&row[time]), "{time}");
                want.remove(time);
            }
            let mut got = row.clone();
            got.retain(|k, _| want.contains_key(k));
            assert_eq!(Value::Object(want), Value::Object(got));
        }
    }

    #[test]
    fn an_unknown_column_or_a_wrong_type_fails_the_file() {
        let extra = event(1, "{}").replace(r#""id":1,"#, r#""id":1,"surprise":2,"#);
        let mut part = PartWriter::new(ArchiveTable::Events, &[]).expect("writer");
        let err = part.write(&[extra]).expect_err("unknown column");
        assert!(err.contains("\"surprise\""), "{err}");
        let wrong = event(1, "{}").replace(r#""chain_seq":null"#, r#""chain_seq":"seven""#);
        let mut part = PartWriter::new(ArchiveTable::Events, &[]).expect("writer");
        let err = part.write(&[wrong]).expect_err("wrong type");
        assert!(err.contains("does not fit"), "{err}");
        let mut part = PartWriter::new(ArchiveTable::Events, &[]).expect("writer");
        assert!(part.write(&["[1]".to_owned()]).is_err());
    }

    #[test]
    fn a_transaction_id_in_text_becomes_a_number() {
        let row = normalise(
            ArchiveTable::Remediations,
            r#"{"id":1,"created_xid":"18446744073709551615"}"#,
        )
        .expect("row");
        assert_eq!(row["created_xid"], Value::from(u64::MAX));
        let err = normalise(ArchiveTable::Remediations, r#"{"created_xid":"x"}"#)
            .expect_err("not a number");
        assert!(err.contains("created_xid"), "{err}");
    }

    #[test]
    fn a_damaged_file_does_not_read() {
        let bytes = write(ArchiveTable::Events, &[event(1, "{}")]);
        let mut damaged = bytes.to_vec();
        let middle = damaged.len() / 2;
        damaged.truncate(middle);
        assert!(read_rows(ArchiveTable::Events, Bytes::from(damaged), |_| {}).is_err());
    }
}
