//! `remaudit`: the audit service and its tools.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use remaudit_server::{AppState, ServerSettings};
use remaudit_store::PoolSettings;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

mod controller;
mod publish;
mod query;
mod retention;
mod simulate;

/// Used when no database URL is given: a SQLite file in the working directory.
const DEFAULT_DATABASE_URL: &str = "sqlite://remaudit.db";

#[derive(Debug, Parser)]
#[command(
    name = "remaudit",
    version,
    about = "Audit trail of Kubernetes remediation orchestration"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, env = "REMAUDIT_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct DatabaseArgs {
    /// `postgres://USER@HOST:PORT/DB` or `sqlite://PATH` (created on first run).
    #[arg(long, env = "REMAUDIT_DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    database_url: String,
    /// Most database connections.
    #[arg(long, env = "REMAUDIT_DB_MAX_CONNECTIONS", default_value_t = 10)]
    db_max_connections: u32,
    /// Seconds a request waits for a database connection before answering 503.
    #[arg(long, env = "REMAUDIT_DB_ACQUIRE_TIMEOUT_SECS", default_value_t = 3)]
    db_acquire_timeout_secs: u64,
    /// Most connections of the separate pool listings and analytics read through
    /// (on top of --db-max-connections, so that slow reads never hold the ones writes need).
    #[arg(long, env = "REMAUDIT_DB_READ_MAX_CONNECTIONS", default_value_t = PoolSettings::default().read_max_connections, value_parser = clap::value_parser!(u32).range(1..))]
    db_read_max_connections: u32,
}

impl DatabaseArgs {
    fn pool(&self) -> PoolSettings {
        PoolSettings {
            max_connections: self.db_max_connections,
            acquire_timeout: Duration::from_secs(self.db_acquire_timeout_secs),
            read_max_connections: self.db_read_max_connections,
            ..PoolSettings::default()
        }
    }
}

/// Connection and request limits of `serve`.
#[derive(Debug, clap::Args)]
struct ConnectionArgs {
    /// Seconds a client may take to send a request's headers (also how long an idle connection stays open).
    #[arg(long, env = "REMAUDIT_HEADER_READ_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    header_read_timeout_secs: u64,
    /// Seconds a request body, or the client's reading of an answer, may stall.
    #[arg(long, env = "REMAUDIT_IDLE_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout_secs: u64,
    /// Most open connections; more wait in the listen backlog.
    #[arg(long, env = "REMAUDIT_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Most requests handled at once; more are answered 503 with Retry-After.
    #[arg(long, env = "REMAUDIT_MAX_CONCURRENT_REQUESTS", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    max_concurrent_requests: u32,
    /// Seconds requests in flight may take after SIGTERM before connections are dropped.
    #[arg(long, env = "REMAUDIT_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    shutdown_grace_secs: u64,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the audit service.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "REMAUDIT_LISTEN", default_value = "127.0.0.1:8085")]
        listen: SocketAddr,
        #[command(flatten)]
        database: DatabaseArgs,
        /// Largest request body, in bytes.
        #[arg(long, env = "REMAUDIT_MAX_BODY_BYTES", default_value_t = ServerSettings::default().max_body_bytes)]
        max_body_bytes: usize,
        /// Most records in one batch.
        #[arg(long, env = "REMAUDIT_MAX_BATCH_RECORDS", default_value_t = ServerSettings::default().max_batch_records)]
        max_batch_records: usize,
        /// Seconds a request may take before it is answered 503.
        #[arg(long, env = "REMAUDIT_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
        request_timeout_secs: u64,
        /// Most timeline events one remediation may have; records past it are refused (422).
        #[arg(long, env = "REMAUDIT_MAX_EVENTS_PER_REMEDIATION", default_value_t = ServerSettings::default().max_events_per_remediation, value_parser = clap::value_parser!(u32).range(1..))]
        max_events_per_remediation: u32,
        /// Seconds PostgreSQL lets one listing or analytics statement run before
        /// cancelling it (answered 503 `query-timeout`); default 2 s less than the
        /// request timeout, 0 for no limit.
        #[arg(long, env = "REMAUDIT_ANALYTICS_STATEMENT_TIMEOUT_SECS")]
        analytics_statement_timeout_secs: Option<u64>,
        #[command(flatten)]
        limits: ConnectionArgs,
        #[command(flatten)]
        retention: retention::PolicyArgs,
        /// Seconds between retention runs (one also runs at start-up); 0 turns the job off.
        #[arg(long, env = "REMAUDIT_RETENTION_INTERVAL_SECS", default_value_t = 3600)]
        retention_interval_secs: u64,
    },
    /// Apply database migrations, then exit.
    Migrate {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Send records (JSON lines on standard input) through the publisher.
    ///
    /// Exits 0 once every record is acknowledged, 1 when lines were invalid or
    /// rejected (the others still go), 3 when the deadline passed with records
    /// left in the spool. A later run with the same spool sends those first.
    Publish(publish::PublishArgs),
    /// Simulate remediations through the orchestrator's state machine and the
    /// publisher, against a running service; exits 0 once every record is acknowledged.
    Simulate(simulate::SimulateArgs),
    /// Print the CustomResourceDefinitions of the orchestrator as YAML.
    Crdgen,
    /// Run the remediation orchestrator (leader-elected), auditing every phase transition.
    Controller(controller::ControllerArgs),
    /// Archive and remove expired audit rows, or verify the archive.
    Retention(retention::RetentionArgs),
    /// Ask a running service analytics questions (post-mortems, success rates,
    /// durations, failures, retries, timelines).
    Query(query::QueryArgs),
}

fn init_logging(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Resolves when SIGINT or SIGTERM arrives.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

/// Gives every event stored before content hashes existed its hash, a page
/// at a time, until none is left or the service stops; a failure is logged
/// and the work resumes at the next start.
async fn backfill_content_hashes(
    store: std::sync::Arc<dyn remaudit_store::Store>,
    shutdown: CancellationToken,
) {
    let (mut after, mut hashed, mut unreadable) = (0, 0, 0);
    loop {
        let round = tokio::select! {
            () = shutdown.cancelled() => return,
            round = store.backfill_content_hashes(after, 1000) => round,
        };
        match round {
            Ok(round) => {
                hashed += round.hashed;
                unreadable += round.unreadable;
                let Some(last) = round.last_id else { break };
                after = last;
            }
            Err(e) => {
                tracing::warn!(error = %e, "content hash backfill stopped; it resumes at the next start");
                return;
            }
        }
    }
    if hashed + unreadable > 0 {
        tracing::info!(
            hashed,
            unreadable,
            "events stored before content hashes now have one"
        );
    }
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Serve {
            listen,
            database,
            max_body_bytes,
            max_batch_records,
            request_timeout_secs,
            analytics_statement_timeout_secs,
            limits,
            max_events_per_remediation,
            retention,
            retention_interval_secs,
        } => {
            let mut pool = database.pool();
            pool.read_statement_timeout = match analytics_statement_timeout_secs
                .unwrap_or_else(|| request_timeout_secs.saturating_sub(2).max(1))
            {
                0 => None,
                secs => Some(Duration::from_secs(secs)),
            };
            let archive = (retention_interval_secs > 0)
                .then(|| retention.archive(&database.database_url))
                .transpose()?;
            let store =
                remaudit_store::connect_with(&database.database_url, pool, retention.policy())
                    .await
                    .context("cannot open the database")?;
            let settings = ServerSettings {
                max_body_bytes,
                max_batch_records,
                request_timeout: Duration::from_secs(request_timeout_secs),
                header_read_timeout: Duration::from_secs(limits.header_read_timeout_secs),
                idle_timeout: Duration::from_secs(limits.idle_timeout_secs),
                max_connections: limits.max_connections as usize,
                max_concurrent_requests: limits.max_concurrent_requests as usize,
                shutdown_grace: Duration::from_secs(limits.shutdown_grace_secs),
                max_events_per_remediation,
                // A record older than the retention age that would start a new
                // remediation is refused: retention would archive it at once.
                refuse_new_older_than: Some(retention.policy().age),
                ..ServerSettings::default()
            };
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}: is another process using it? set --listen / REMAUDIT_LISTEN"))?;
            tracing::info!(
                address = %listener.local_addr()?,
                database = store.backend(),
                "remaudit listening"
            );
            let shutdown = CancellationToken::new();
            tokio::spawn({
                let shutdown = shutdown.clone();
                async move {
                    shutdown_signal().await;
                    tracing::info!("shutting down: finishing in-flight requests");
                    shutdown.cancel();
                }
            });
            // Installed before anything records, with the publisher's buckets too.
            remaudit_server::telemetry::metrics_handle_with(&[(
                remaudit_client::metrics::PUBLISH_DURATION,
                &remaudit_client::metrics::PUBLISH_DURATION_BUCKETS,
            )]);
            let job = archive.map(|archive| {
                tracing::info!(
                    archive = archive.url(),
                    every_secs = retention_interval_secs,
                    "retention job scheduled"
                );
                remaudit_retention::spawn(
                    store.clone(),
                    archive,
                    retention.settings(Duration::from_secs(retention_interval_secs)),
                    shutdown.clone(),
                )
            });
            let backfill = tokio::spawn(backfill_content_hashes(store.clone(), shutdown.clone()));
            let state = AppState::new(store.clone(), settings);
            remaudit_server::serve(listener, state, shutdown.clone()).await?;
            shutdown.cancel();
            if let Some(job) = job {
                let _ = job.await;
            }
            let _ = backfill.await;
            store.close().await;
            tracing::info!("stopped");
            Ok(0)
        }
        Command::Migrate { database } => {
            let store = remaudit_store::connect(&database.database_url, database.pool())
                .await
                .context("cannot migrate the database")?;
            store.close().await;
            println!("migrations applied ({})", store.backend());
            Ok(0)
        }
        Command::Publish(args) => publish::run(args).await,
        Command::Simulate(args) => simulate::run(args).await,
        Command::Query(args) => query::run(args).await,
        Command::Retention(args) => retention::run(args).await,
        Command::Controller(args) => {
            let shutdown = CancellationToken::new();
            tokio::spawn({
                let shutdown = shutdown.clone();
                async move {
                    shutdown_signal().await;
                    tracing::info!(
                        "shutting down: stopping the controller, flushing audit records"
                    );
                    shutdown.cancel();
                }
            });
            controller::run(args, shutdown).await
        }
        Command::Crdgen => {
            print!("{}", remaudit_controller::try_crds_yaml()?);
            Ok(0)
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // One TLS crypto provider for kube and reqwest alike.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    match run(cli).await {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("remaudit: {err:#}");
            ExitCode::FAILURE
        }
    }
}
