//! `remaudit archive sql`: read-only SQL over the Parquet archive.

use std::io::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use datafusion::arrow::array::RecordBatch;
use remaudit_archive::{ArchiveQuery, Limits};

/// `remaudit archive`.
#[derive(Debug, clap::Args)]
pub struct ArchiveArgs {
    #[command(subcommand)]
    command: ArchiveCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ArchiveCommand {
    /// Run one read-only SQL statement over the archive's Parquet files, as
    /// tables `remediation_audit` and `remediation_audit_events` (the live
    /// tables' columns, times in UTC). Exits 0 with the answer, 1 when the
    /// query fails or meets a damaged file, 2 for bad arguments.
    Sql {
        /// Where the archive is: `file:///dir` or `s3://bucket/prefix` (`AWS_*` variables configure S3).
        #[arg(long, env = "REMAUDIT_ARCHIVE_URL")]
        archive_url: String,
        /// The database whose batches to read (its installation id, the
        /// archive's first directory level); needed when the archive holds
        /// more than one database's.
        #[arg(long, value_name = "ID")]
        installation: Option<String>,
        /// How the answer is printed.
        #[arg(long, default_value = "table", value_parser = ["table", "json", "csv"])]
        output: String,
        /// Longest the query may run, in seconds.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        timeout_secs: u64,
        /// Most rows the answer may have; a larger answer is refused, not cut.
        #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
        max_rows: u64,
        /// The statement: `SELECT …` (or `WITH …`, `EXPLAIN …`).
        sql: String,
    },
}

/// Runs `remaudit archive …`; the exit code.
pub async fn run(args: ArchiveArgs) -> anyhow::Result<u8> {
    let ArchiveCommand::Sql {
        archive_url,
        installation,
        output,
        timeout_secs,
        max_rows,
        sql,
    } = args.command;
    let limits = Limits {
        time: Duration::from_secs(timeout_secs),
        rows: usize::try_from(max_rows).unwrap_or(usize::MAX),
        ..Limits::default()
    };
    let query = match ArchiveQuery::open(&archive_url, installation.as_deref(), limits).await {
        Ok(query) => query,
        Err(e) => {
            eprintln!("remaudit archive sql: {e}");
            return Ok(1);
        }
    };
    if query.skipped() > 0 {
        eprintln!(
            "remaudit archive sql: {} batches written as JSON Lines are not part of the tables",
            query.skipped()
        );
    }
    let answer = match query.sql(&sql).await {
        Ok(answer) => answer,
        Err(e) => {
            eprintln!("remaudit archive sql: {e}");
            return Ok(1);
        }
    };
    let mut out = std::io::stdout().lock();
    print(&mut out, &output, &answer).context("cannot print the answer")?;
    out.flush().context("cannot print the answer")?;
    Ok(0)
}

/// Prints the answer as a table, JSON (an array of objects) or CSV with a header.
fn print(
    out: &mut impl std::io::Write,
    output: &str,
    answer: &[RecordBatch],
) -> anyhow::Result<()> {
    match output {
        "json" => {
            // The writer prints `[]` for an answer without rows.
            let mut writer = arrow_json::ArrayWriter::new(&mut *out);
            for batch in answer {
                writer.write(batch)?;
            }
            writer.finish()?;
            out.write_all(b"\n")?;
        }
        "csv" => {
            let mut writer = arrow_csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut *out);
            for batch in answer {
                writer.write(batch)?;
            }
        }
        _ => writeln!(
            out,
            "{}",
            datafusion::arrow::util::pretty::pretty_format_batches(answer)?
        )?,
    }
    Ok(())
}
