//! SQL over the archive (`POST /api/v1/archive/sql`): the statement asked
//! and the answer, as rows of values in column order.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

/// Longest statement taken, in characters.
pub const MAX_SQL_CHARS: usize = 16 * 1024;
/// Rows an answer may have when the request names no limit.
pub const DEFAULT_SQL_ROWS: u32 = 1000;
/// Most rows an answer may have.
pub const MAX_SQL_ROWS: u32 = 10_000;
/// Most bytes an answer's rows may take as JSON.
pub const MAX_SQL_ANSWER_BYTES: usize = 16 << 20;

/// One read-only SQL statement over the archive's tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlRequest {
    /// The statement (not only whitespace): `SELECT …`, `WITH …` or `EXPLAIN …` over the tables
    /// `remediation_audit` and `remediation_audit_events` (the live tables'
    /// columns, times as UTC timestamps, JSON documents as text).
    #[schema(
        min_length = 1,
        max_length = 16384,
        pattern = r"\S",
        example = "SELECT overall_phase, count(*) AS n FROM remediation_audit GROUP BY overall_phase"
    )]
    pub sql: String,
    /// Most rows the answer may have (1 to 10,000; 1,000 when absent): a
    /// larger answer is refused (422), never cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 10000)]
    pub max_rows: Option<u32>,
}

/// One column of an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlColumn {
    /// Its name in the statement.
    pub name: String,
    /// Its Apache Arrow type, such as `Int64`, `Utf8` or `Timestamp(µs, "UTC")`.
    #[serde(rename = "type")]
    pub data_type: String,
    /// Whether it may hold nulls.
    pub nullable: bool,
}

/// The answer to a statement over the archive.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlAnswer {
    /// The answer's columns, in order.
    pub columns: Vec<SqlColumn>,
    /// The rows, each an array of its values in column order: integers,
    /// floats and booleans as JSON's, decimals and times (RFC 3339) as
    /// text, nulls as `null`.
    #[schema(value_type = Vec<Vec<serde_json::Value>>)]
    pub rows: Box<RawValue>,
    /// How many rows there are.
    pub row_count: usize,
    /// Archive batches read as tables.
    pub batches: usize,
    /// Archive batches written as JSON Lines, which the tables do not hold.
    pub jsonl_batches: usize,
}
