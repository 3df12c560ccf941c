//! `remaudit archive sql`: read-only SQL over the Parquet archive.

use std::io::{Read as _, Write as _};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use remaudit_api::archive::{SqlAnswer, SqlColumn};
use remaudit_archive::{ArchiveQuery, ArchiveQueryError, Limits};

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
    Sql(SqlArgs),
}

/// `remaudit archive sql`.
#[derive(Debug, clap::Args)]
struct SqlArgs {
    /// Where the archive is: `file:///dir` or `s3://bucket/prefix` (`AWS_*` variables configure S3).
    #[arg(long, env = "REMAUDIT_ARCHIVE_URL")]
    archive_url: String,
    /// The database whose batches to read (its installation id, the
    /// archive's first directory level); needed when the archive holds
    /// more than one database's.
    #[arg(long, value_name = "ID")]
    installation: Option<String>,
    /// How the answer is printed: `table`, `json` (an array of objects),
    /// `csv` (with a header), or `answer` (the service's answer document:
    /// columns, then rows as arrays; a failure is printed as
    /// `{"error": {"kind", "message"}}` too).
    #[arg(long, default_value = "table", value_parser = ["table", "json", "csv", "answer"])]
    output: String,
    /// Longest the query may run, in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    timeout_secs: u64,
    /// Most rows the answer may have; a larger answer is refused, not cut.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    max_rows: u64,
    /// Parts the query is split into and run at once (0: one per core).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=256))]
    partitions: u16,
    /// Caps this process's heap at this many MiB (the data segment limit),
    /// so that a statement building huge values fails instead of taking the
    /// machine's memory, and makes it the first the kernel kills when memory
    /// runs out.
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(256..=1_048_576))]
    memory_limit_mib: Option<u64>,
    /// Reads a local archive directory that does not exist as an empty
    /// archive instead of failing (the service does, before retention's
    /// first batch makes the directory).
    #[arg(long)]
    missing_ok: bool,
    /// Lowers the query's CPU priority by this much (as `nice`), so that
    /// the machine's other work goes first.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=19))]
    nice: u8,
    /// The statement: `SELECT …` (or `WITH …`, `EXPLAIN …`); `-` reads it from standard input.
    sql: String,
}

/// Runs `remaudit archive …`; the exit code.
pub async fn run(args: ArchiveArgs) -> anyhow::Result<u8> {
    let ArchiveCommand::Sql(args) = args.command;
    if let Some(mib) = args.memory_limit_mib {
        let bytes = mib.saturating_mul(1 << 20);
        rlimit::setrlimit(rlimit::Resource::DATA, bytes, bytes)
            .context("cannot set the memory limit (RLIMIT_DATA)")?;
        // Raising one's own score needs no privilege; where /proc is not
        // writable the heap cap still holds.
        let _ = std::fs::write("/proc/self/oom_score_adj", "1000");
    }
    let sql = if args.sql == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the statement from standard input")?;
        text
    } else {
        args.sql.clone()
    };
    let limits = Limits {
        time: Duration::from_secs(args.timeout_secs),
        rows: usize::try_from(args.max_rows).unwrap_or(usize::MAX),
        partitions: usize::from(args.partitions),
    };
    let answer = on_own_runtime(limits.partitions, args.nice, {
        let (url, installation) = (args.archive_url.clone(), args.installation.clone());
        let missing_ok = args.missing_ok;
        async move {
            // The limit covers reading the manifests too.
            let ask = async {
                let query = if missing_ok {
                    ArchiveQuery::open_or_empty(&url, installation.as_deref(), limits).await?
                } else {
                    ArchiveQuery::open(&url, installation.as_deref(), limits).await?
                };
                let batches = query.sql(&sql).await?;
                Ok::<_, ArchiveQueryError>((query, batches))
            };
            tokio::time::timeout(limits.time, ask)
                .await
                .unwrap_or(Err(ArchiveQueryError::Timeout(limits.time)))
        }
    })
    .await?;
    let mut out = std::io::stdout().lock();
    let (query, batches) = match answer {
        Ok(answer) => answer,
        Err(e) => return failure(&mut out, &args.output, kind(&e), &e.to_string()),
    };
    if query.skipped() > 0 {
        eprintln!(
            "remaudit archive sql: {} batches written as JSON Lines are not part of the tables",
            query.skipped()
        );
    }
    match print(&mut out, &args.output, &query, &batches) {
        Ok(()) => {}
        Err(e) if args.output == "answer" => {
            return failure(&mut out, &args.output, "query", &format!("{e:#}"));
        }
        Err(e) => return Err(e.context("cannot print the answer")),
    }
    out.flush().context("cannot print the answer")?;
    Ok(0)
}

/// Stack of the thread that plans a query: planning recurses as deep as
/// the statement's expressions.
const QUERY_STACK_BYTES: usize = 16 << 20;

/// Most worker threads a query's runtime has.
const MAX_QUERY_WORKERS: usize = 8;

/// Runs `work` on a thread of its own ([`QUERY_STACK_BYTES`] of stack, where
/// the statement is planned) with a runtime of its own: `partitions` workers
/// (one per core for 0, at most [`MAX_QUERY_WORKERS`]) and at most four
/// blocking threads, all at `nice` lower CPU priority. Made after the heap
/// cap, their stacks count within it, and are few.
async fn on_own_runtime<T: Send + 'static>(
    partitions: usize,
    nice: u8,
    work: impl Future<Output = T> + Send + 'static,
) -> anyhow::Result<T> {
    let workers = if partitions == 0 {
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
    } else {
        partitions
    }
    .min(MAX_QUERY_WORKERS);
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("archive-sql".to_owned())
        .stack_size(QUERY_STACK_BYTES)
        .spawn(move || {
            // Threads inherit their creator's priority: lower it first.
            if nice > 0 {
                let _ = rustix::process::nice(i32::from(nice));
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .max_blocking_threads(4)
                .enable_all()
                .build();
            let _ = tx.send(runtime.map(|runtime| {
                let out = runtime.block_on(work);
                // Not waiting for a step that does not yield: the answer
                // (a timeout, say) goes out now.
                runtime.shutdown_background();
                out
            }));
        })
        .context("cannot start the query's thread")?;
    rx.await
        .context("the query's thread stopped without an answer")?
        .context("cannot start the query's runtime")
}

/// Reports a failure on standard error and, with `--output answer`, as the
/// document `{"error": {"kind", "message"}}`; exit code 1.
fn failure(
    out: &mut impl std::io::Write,
    output: &str,
    kind: &str,
    message: &str,
) -> anyhow::Result<u8> {
    if output == "answer" {
        let failure = serde_json::json!({"error": {"kind": kind, "message": message}});
        writeln!(out, "{failure}").context("cannot print the failure")?;
    }
    eprintln!("remaudit archive sql: {message}");
    Ok(1)
}

/// The kind of failure the `answer` output names, for the service to answer by.
fn kind(e: &ArchiveQueryError) -> &'static str {
    match e {
        ArchiveQueryError::Archive(_) => "archive",
        ArchiveQueryError::Damaged { .. } => "damaged",
        ArchiveQueryError::Query(_) => "query",
        ArchiveQueryError::Timeout(_) => "timeout",
        ArchiveQueryError::TooManyRows(_) => "too_many_rows",
        ArchiveQueryError::TooLarge(_) => "too_large",
        ArchiveQueryError::Engine(_) => "engine",
    }
}

/// Prints the answer as a table, JSON (an array of objects), CSV with a
/// header, or the service's answer document.
fn print(
    out: &mut impl std::io::Write,
    output: &str,
    query: &ArchiveQuery,
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
        "answer" => {
            let document = SqlAnswer {
                columns: answer
                    .first()
                    .map(|b| columns(b.schema_ref()))
                    .unwrap_or_default(),
                rows: serde_json::value::RawValue::from_string(rows_as_arrays(answer)?)?,
                row_count: answer.iter().map(RecordBatch::num_rows).sum(),
                batches: query.batches(),
                jsonl_batches: query.skipped(),
            };
            serde_json::to_writer(&mut *out, &document)?;
            out.write_all(b"\n")?;
        }
        _ => writeln!(
            out,
            "{}",
            datafusion::arrow::util::pretty::pretty_format_batches(answer)?
        )?,
    }
    Ok(())
}

/// The answer's columns: name, Arrow type and whether nulls may appear.
fn columns(schema: &Schema) -> Vec<SqlColumn> {
    schema
        .fields()
        .iter()
        .map(|f| SqlColumn {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
            nullable: f.is_nullable(),
        })
        .collect()
}

/// The rows as a JSON array of arrays, values in column order, written as
/// the JSON writer writes them (lists, nulls explicit), never parsed again:
/// a number keeps every digit it was written with. Decimal columns are
/// written as text, so that readers that parse JSON numbers as binary
/// floats keep every digit too.
fn rows_as_arrays(answer: &[RecordBatch]) -> anyhow::Result<String> {
    let mut lines = Vec::new();
    let mut writer = arrow_json::WriterBuilder::new()
        .with_struct_mode(arrow_json::StructMode::ListOnly)
        .build::<_, arrow_json::writer::LineDelimited>(&mut lines);
    for batch in answer {
        let mut fields = Vec::with_capacity(batch.num_columns());
        let mut columns = Vec::with_capacity(batch.num_columns());
        for (field, column) in batch.schema_ref().fields().iter().zip(batch.columns()) {
            let column = match column.data_type() {
                DataType::Decimal32(..)
                | DataType::Decimal64(..)
                | DataType::Decimal128(..)
                | DataType::Decimal256(..) => cast(column, &DataType::Utf8)?,
                _ => Arc::clone(column),
            };
            fields.push(Field::new(field.name(), column.data_type().clone(), true));
            columns.push(column);
        }
        let batch = RecordBatch::try_new(Schema::new(fields).into(), columns)?;
        writer.write(&batch).context(
            "a column of the answer has a type JSON cannot show: cast it to text (CAST(x AS VARCHAR))",
        )?;
    }
    writer.finish()?;
    let mut text = String::with_capacity(lines.len() + 2);
    text.push('[');
    for (i, line) in lines
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        if i > 0 {
            text.push(',');
        }
        text.push_str(std::str::from_utf8(line)?);
    }
    text.push(']');
    Ok(text)
}
