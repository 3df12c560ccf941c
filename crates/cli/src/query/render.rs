//! How answers are printed: the [`Report`] trait every answer implements,
//! and the shared pieces of its text (timestamps and durations for people,
//! tables of a fixed look, CSV, the window line).

use std::fmt::Write as _;

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, Utc};
use comfy_table::{CellAlignment, ContentArrangement, Table};
use remaudit_model::analytics::{Alignment, QueryEcho};
use remaudit_model::approx_f64;
use serde::Serialize;

use super::Output;

/// An answer that can be printed in every [`Output`] format.
pub trait Report: Serialize {
    /// The table, with its header and notes.
    fn table(&self) -> String;
    /// The rows as CSV, with a header row.
    ///
    /// # Errors
    /// When CSV cannot be written (it always can, into memory).
    fn csv(&self) -> anyhow::Result<String>;
}

/// Renders `report` as `output`; the text ends with a newline.
///
/// # Errors
/// When the report cannot be serialised.
pub fn render(report: &impl Report, output: Output) -> anyhow::Result<String> {
    Ok(match output {
        Output::Table => report.table(),
        Output::Json => {
            let mut text = serde_json::to_string_pretty(report).context("cannot print JSON")?;
            text.push('\n');
            text
        }
        Output::Csv => report.csv()?,
    })
}

/// A timestamp in RFC 3339, UTC, to the second.
pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A duration for people: `0s`, `850ms`, `4.2s`, `42s`, `4m 10s`, `1h 02m`, `2d 3h`.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "whole seconds and minutes of a finite, non-negative duration, rounded first"
)]
pub(super) fn human_duration(seconds: f64) -> String {
    if !seconds.is_finite() {
        return "-".to_owned();
    }
    if seconds < 0.0 {
        return format!("-{}", human_duration(-seconds));
    }
    if seconds == 0.0 {
        return "0s".to_owned();
    }
    let millis = (seconds * 1000.0).round();
    if millis < 1000.0 {
        return format!("{millis}ms");
    }
    let tenths = (seconds * 10.0).round() / 10.0;
    if tenths < 10.0 {
        return format!("{tenths:.1}s");
    }
    let secs = seconds.round() as u64;
    if secs < 60 {
        return format!("{secs}s");
    }
    if secs < 3600 {
        return format!("{}m {:02}s", secs / 60, secs % 60);
    }
    let minutes = (seconds / 60.0).round() as u64;
    if minutes < 24 * 60 {
        return format!("{}h {:02}m", minutes / 60, minutes % 60);
    }
    let hours = (seconds / 3600.0).round() as u64;
    format!("{}d {}h", hours / 24, hours % 24)
}

/// A bucket or window length in its largest whole unit: `15m`, `1h`, `1d`.
pub(super) fn human_length(seconds: i64) -> String {
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if seconds != 0 && seconds % size == 0 {
            return format!("{}{unit}", seconds / size);
        }
    }
    format!("{seconds}s")
}

/// A rate from 0 to 1 as a percentage, `-` when there is none.
pub(super) fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0))
}

/// Free text fit for one table cell: control characters become spaces and
/// long text is cut with an ellipsis.
pub(crate) fn clean_text(text: &str, max_chars: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max_chars {
        return flat;
    }
    let mut cut: String = flat.chars().take(max_chars.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// The line that says which window (and filters) an answer covers.
pub(super) fn window_line(q: &QueryEcho) -> String {
    let w = &q.window;
    let alignment = match w.aligned_to {
        Alignment::None => "exact",
        Alignment::Hour => "aligned to whole hours",
        Alignment::Day => "aligned to whole days",
    };
    let mut line = format!(
        "window {} → {} ({alignment}), source {}",
        ts(w.since),
        ts(w.until),
        q.source
    );
    if let Some(ns) = &q.namespace {
        let _ = write!(line, ", namespace {ns}");
    }
    if let Some(fp) = &q.alert_fingerprint {
        let _ = write!(line, ", alert {fp}");
    }
    if let Some(limit) = q.limit {
        let _ = write!(line, ", limit {limit}");
    }
    line
}

/// A table with the fixed look of this command: plain ASCII, no colours, no
/// wrapping to the terminal's width.
pub(crate) fn new_table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_style(comfy_table::presets::ASCII_MARKDOWN)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    table
}

/// Aligns the given columns to the right (numbers).
pub(crate) fn align_right(table: &mut Table, columns: &[usize]) {
    for &i in columns {
        if let Some(column) = table.column_mut(i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
}

/// The window line, the table (or `empty` in words), and notes, one per line.
pub(super) fn page(
    query: &QueryEcho,
    extra: &[String],
    body: Option<Table>,
    empty: &str,
    notes: &[String],
) -> String {
    let mut text = window_line(query);
    text.push('\n');
    for line in extra {
        text.push_str(line);
        text.push('\n');
    }
    text.push('\n');
    if let Some(table) = body {
        text.push_str(&table.trim_fmt());
        text.push('\n');
        for note in notes {
            text.push('\n');
            text.push_str(note);
        }
        if !notes.is_empty() {
            text.push('\n');
        }
    } else {
        text.push_str(empty);
        text.push('\n');
    }
    text
}

/// CSV text from a header and rows.
pub(crate) fn csv_text<I, R>(header: &[&str], rows: I) -> anyhow::Result<String>
where
    I: IntoIterator<Item = R>,
    R: IntoIterator<Item = String>,
{
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(header).context("cannot write CSV")?;
    for row in rows {
        writer
            .write_record(row.into_iter().collect::<Vec<_>>())
            .context("cannot write CSV")?;
    }
    let bytes = writer.into_inner().context("cannot write CSV")?;
    String::from_utf8(bytes).context("CSV is not UTF-8")
}

pub(super) fn opt_ts(t: Option<DateTime<Utc>>) -> String {
    t.map(ts).unwrap_or_default()
}

pub(super) fn opt_num(n: Option<f64>) -> String {
    n.map(|n| n.to_string()).unwrap_or_default()
}

/// Seconds for CSV, to the microsecond (what the store keeps), so that float
/// noise such as `3265.499999999999` reads `3265.5`.
pub(super) fn csv_seconds(seconds: f64) -> String {
    ((seconds * 1e6).round() / 1e6).to_string()
}

pub(super) fn opt_text(s: Option<&String>) -> String {
    s.cloned().unwrap_or_default()
}

pub(super) fn duration_cell(seconds: Option<f64>) -> String {
    seconds.map_or_else(|| "-".to_owned(), human_duration)
}

pub(super) fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    let d = to - from;
    d.num_microseconds()
        .map_or(approx_f64(d.num_seconds()), |us| approx_f64(us) / 1e6)
}

/// How close the percentiles are, in words.
pub(super) fn accuracy_note(relative_error: f64) -> String {
    if relative_error <= 0.0 {
        "percentiles are exact".to_owned()
    } else {
        let pct = relative_error * 100.0;
        let pct = if (pct - pct.round()).abs() < 1e-9 {
            format!("{pct:.0}")
        } else {
            format!("{pct:.2}")
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_owned()
        };
        format!("percentiles within {pct}% of exact; averages are exact")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        let cases = [
            (0.0, "0s"),
            (0.000_4, "0ms"),
            (0.85, "850ms"),
            (0.999_6, "1.0s"),
            (4.24, "4.2s"),
            (9.96, "10s"),
            (42.4, "42s"),
            (59.6, "1m 00s"),
            (250.0, "4m 10s"),
            (3599.6, "1h 00m"),
            (3720.0, "1h 02m"),
            (86_399.0, "1d 0h"),
            (183_600.0, "2d 3h"),
            (-5.0, "-5.0s"),
            (f64::NAN, "-"),
        ];
        for (seconds, text) in cases {
            assert_eq!(human_duration(seconds), text, "{seconds}");
        }
        assert_eq!(human_length(3600), "1h");
        assert_eq!(human_length(900), "15m");
        assert_eq!(human_length(172_800), "2d");
        assert_eq!(human_length(90), "90s");
        assert_eq!(percent(Some(0.934_2)), "93.4%");
        assert_eq!(percent(Some(1.0)), "100.0%");
        assert_eq!(percent(None), "-");
        assert_eq!(accuracy_note(0.0), "percentiles are exact");
        assert_eq!(csv_seconds(3_265.499_999_999_999), "3265.5");
        assert_eq!(csv_seconds(0.000_001_4), "0.000001");
        assert_eq!(csv_seconds(250.0), "250");
        assert_eq!(
            accuracy_note(0.01),
            "percentiles within 1% of exact; averages are exact"
        );
        assert_eq!(
            accuracy_note(0.005),
            "percentiles within 0.5% of exact; averages are exact"
        );
    }

    #[test]
    fn cell_text_is_flattened_and_cut() {
        assert_eq!(clean_text("a\nb\tc", 10), "a b c");
        assert_eq!(clean_text("abcdefghij", 5), "abcd…");
        assert_eq!(clean_text("ééééé", 5), "ééééé");
    }
}
