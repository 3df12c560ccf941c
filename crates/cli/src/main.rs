//! `remaudit`: the audit service and its tools.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{ArgMatches, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use metrics_exporter_prometheus::PrometheusHandle;
use remaudit_server::AppState;
use secrecy::ExposeSecret as _;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

mod admin;
mod archive;
mod auth;
mod chain;
mod config;
mod controller;
mod credentials;
mod kubernetes_auth;
mod publish;
mod query;
mod retention;
mod settings;
mod simulate;
mod telemetry;
mod tls;

pub(crate) use settings::DatabaseArgs;
use settings::{LogFormat, MigrateArgs, MigrateSettings, PublisherArgs, ServeArgs, ServeSettings};

#[derive(Debug, Parser)]
#[command(
    name = "remaudit",
    version,
    about = "Audit trail of Kubernetes remediation orchestration"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, env = "REMAUDIT_LOG_FORMAT", value_enum, default_value_t = LogFormat::default())]
    log_format: LogFormat,
    /// Settings file (TOML) of serve, migrate, publish or controller: it sets
    /// what the defaults would, and the environment and flags override it
    /// (`remaudit config print COMMAND` shows the result).
    #[arg(long, global = true, env = "REMAUDIT_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the audit service.
    Serve(ServeArgs),
    /// Apply database migrations, then exit.
    Migrate(MigrateArgs),
    /// Send records (JSON lines on standard input) through the publisher.
    ///
    /// Exits 0 once every record is acknowledged, 1 when lines were invalid or
    /// rejected (the others still go), 3 when the deadline passed with records
    /// left in the spool. A later run with the same spool sends those first.
    Publish(publish::PublishArgs),
    /// Simulate remediations through the orchestrator's state machine and the
    /// publisher, against a running service; exits 0 once every record is acknowledged.
    Simulate {
        #[command(flatten)]
        args: simulate::SimulateArgs,
        #[command(flatten)]
        publisher: PublisherArgs,
    },
    /// Print the CustomResourceDefinitions of the orchestrator as YAML.
    Crdgen,
    /// Run the remediation orchestrator (leader-elected), auditing every phase transition.
    Controller(controller::ControllerArgs),
    /// Archive and remove expired audit rows, or verify the archive.
    Retention(retention::RetentionArgs),
    /// Ask the archive (the Parquet files retention writes) questions in SQL.
    Archive(archive::ArchiveArgs),
    /// Ask a running service analytics questions (post-mortems, success rates,
    /// durations, failures, retries, timelines).
    Query(query::QueryArgs),
    /// Show the settings a command would run with.
    Config(config::ConfigArgs),
    /// Manage the bearer tokens of a tokens file (`serve --auth-tokens-file`).
    Token(auth::TokenArgs),
    /// Manage the chain keys of a key file (`serve --chain-key-file`).
    ChainKey(chain::ChainKeyArgs),
    /// Check the hash chains of stored events: exits 0 when every chain is
    /// whole, 1 with one line per broken link, 2 when the check cannot run.
    Verify(chain::VerifyArgs),
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if format == LogFormat::Json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// This program, to run again as a child: on Linux the running binary
/// itself (`/proc/self/exe`), which stays the same file when a package
/// upgrade replaces the one at its path.
fn own_program() -> anyhow::Result<std::path::PathBuf> {
    let proc = std::path::Path::new("/proc/self/exe");
    if proc.exists() {
        return Ok(proc.to_path_buf());
    }
    std::env::current_exe().context("cannot find this program's own path")
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

/// The matches of the innermost subcommand: where its flags' values and
/// their sources are (global flags are copied down to it).
fn innermost(matches: &ArgMatches) -> &ArgMatches {
    match matches.subcommand() {
        Some((_, sub)) => innermost(sub),
        None => matches,
    }
}

/// Resolves when SIGINT or SIGTERM arrives, then cancels the token it returns.
fn cancel_on_signal(message: &'static str) -> CancellationToken {
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            shutdown_signal().await;
            tracing::info!("{message}");
            shutdown.cancel();
        }
    });
    shutdown
}

async fn run(cli: Cli, matches: &ArgMatches) -> anyhow::Result<u8> {
    let given = innermost(matches);
    let file = cli.config.as_deref();
    match cli.command {
        Command::Serve(args) => {
            let settings = ServeSettings::load(&args, given, file)?;
            init_logging(settings.log_format);
            // Installed before anything records.
            let metrics = telemetry::install()?;
            serve(settings, metrics).await
        }
        Command::Migrate(args) => {
            let settings = MigrateSettings::load(&args, given, file)?;
            init_logging(settings.log_format);
            let store = remaudit_store::connect(
                settings.database.url.expose_secret(),
                settings.database.pool(),
            )
            .await
            .context("cannot migrate the database")?;
            store.close().await;
            println!("migrations applied ({})", store.backend());
            Ok(0)
        }
        Command::Publish(args) => {
            let settings = publish::PublishSettings::load(&args, given, file)?;
            init_logging(settings.log_format);
            publish::run(settings, args.progress).await
        }
        Command::Controller(args) => {
            let settings = controller::ControllerSettings::load(&args, given, file)?;
            init_logging(settings.log_format);
            let metrics = telemetry::install()?;
            let shutdown =
                cancel_on_signal("shutting down: stopping the controller, flushing audit records");
            controller::run(settings, metrics, shutdown).await
        }
        Command::Config(args) => config::run(&args, given, file),
        Command::Simulate { args, publisher } => {
            let f = settings::read_file(file)?;
            init_logging(settings::given_log_format(given)?.unwrap_or(f.log_format));
            let mut config = f.publisher;
            publisher.layer(&mut config, given);
            simulate::run(args, config).await
        }
        Command::Query(args) => {
            if let Some(file) = file {
                anyhow::bail!(
                    "remaudit query reads no settings file, but --config / REMAUDIT_CONFIG is {}: unset it for query",
                    file.display()
                );
            }
            init_logging(cli.log_format);
            query::run(args).await
        }
        Command::Retention(args) => {
            let f = settings::read_file(file)?;
            init_logging(settings::given_log_format(given)?.unwrap_or(f.log_format));
            let s = settings::RetentionRunSettings::load(f, given)?;
            retention::run(args, &s).await
        }
        Command::Archive(args) => {
            without_settings_file(given, file, cli.log_format)?;
            archive::run(args).await
        }
        Command::Token(args) => {
            without_settings_file(given, file, cli.log_format)?;
            auth::run(args)
        }
        Command::ChainKey(args) => {
            without_settings_file(given, file, cli.log_format)?;
            chain::run_key(args)
        }
        Command::Verify(args) => {
            without_settings_file(given, file, cli.log_format)?;
            Ok(chain::run_verify(args).await)
        }
        Command::Crdgen => {
            without_settings_file(given, file, cli.log_format)?;
            print!("{}", remaudit_controller::try_crds_yaml()?);
            Ok(0)
        }
    }
}

/// Starts logging for a command that reads no settings file, refusing
/// `--config` there (a `REMAUDIT_CONFIG` meant for another command is ignored).
fn without_settings_file(
    given: &ArgMatches,
    file: Option<&Path>,
    log_format: LogFormat,
) -> anyhow::Result<()> {
    if let Some(file) = file
        && given.value_source("config") == Some(clap::parser::ValueSource::CommandLine)
    {
        anyhow::bail!(
            "--config {}: crdgen, token, chain-key, verify and archive read no settings file (serve, migrate, publish, controller, retention and simulate read a settings file)",
            file.display()
        );
    }
    init_logging(log_format);
    Ok(())
}

/// `remaudit serve`: the service, its retention job and the content hash
/// backfill, until SIGINT or SIGTERM.
async fn serve(settings: ServeSettings, metrics: PrometheusHandle) -> anyhow::Result<u8> {
    // The key first: a service told to sign never starts without it.
    let chain = settings.chain.ring()?;
    let database_url = settings.database.url.expose_secret();
    let retention = &settings.retention;
    retention.check_backend(database_url)?;
    let archive = (retention.interval_secs > 0)
        .then(|| retention.archive(database_url))
        .transpose()?
        .map(|archive| archive.with_chain_keys(chain.clone()));
    // Bad certificate files stop the start before anything listens.
    let tls = tls::load(&settings.tls)?;
    let store = remaudit_store::connect_with(database_url, settings.pool(), retention.policy())
        .await
        .context("cannot open the database")?;
    let listen = settings.listen;
    let shutdown = cancel_on_signal("shutting down: finishing in-flight requests");
    // Decided before binding: a service that would run open beyond
    // loopback never listens at all.
    let client_certificates: Vec<std::sync::Arc<dyn remaudit_server::auth::Authenticator>> =
        remaudit_server::auth::client_cert::ClientCertAuthenticator::from_settings(&settings.tls)
            .into_iter()
            .map(|a| a as std::sync::Arc<dyn remaudit_server::auth::Authenticator>)
            .collect();
    let policy = settings
        .auth
        .policy(listen, client_certificates, &shutdown)
        .await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}: is another process using it? set --listen / REMAUDIT_LISTEN"))?;
    tracing::info!(
        address = %listener.local_addr()?,
        database = store.backend(),
        tls = tls.is_some(),
        "remaudit listening"
    );
    let job = archive.map(|archive| {
        tracing::info!(
            archive = archive.url(),
            every_secs = retention.interval_secs,
            "retention job scheduled"
        );
        remaudit_retention::spawn(store.clone(), archive, retention.job(), shutdown.clone())
    });
    let backfill = tokio::spawn(backfill_content_hashes(store.clone(), shutdown.clone()));
    let mut server = settings.server();
    server.chain = chain;
    if let Some(ring) = &server.chain {
        tracing::info!(
            key_id = ring.signing().id(),
            "stored events are signed and chained"
        );
    } else {
        tracing::warn!(
            "no chain key (--chain-key-file): stored events are not signed; /readyz says chain off"
        );
    }
    let chain_check = server
        .chain
        .clone()
        .filter(|_| settings.chain.verify_interval_secs > 0)
        .map(|ring| {
            remaudit_server::spawn_periodic_check(
                store.clone(),
                ring,
                std::time::Duration::from_secs(settings.chain.verify_interval_secs),
                chrono::TimeDelta::hours(chain::CHAIN_CHECK_WINDOW_HOURS),
                shutdown.clone(),
            )
        });
    // A question over the archive ends before the request's own time does.
    let archive_time = server
        .request_timeout
        .saturating_sub(std::time::Duration::from_secs(2))
        .max(std::time::Duration::from_secs(1));
    let state = AppState::new(store.clone(), server, metrics)
        .with_auth(policy)
        .with_archive(
            remaudit_server::archive::ArchiveReader::new(
                retention.archive_url(database_url),
                archive_time,
            )
            .with_sql_program(own_program()?),
        );
    remaudit_server::serve_with(listener, state, shutdown.clone(), tls).await?;
    shutdown.cancel();
    if let Some(job) = job {
        let _ = job.await;
    }
    if let Some(check) = chain_check {
        let _ = check.await;
    }
    let _ = backfill.await;
    store.close().await;
    tracing::info!("stopped");
    Ok(0)
}

#[tokio::main]
async fn main() -> ExitCode {
    // One TLS crypto provider for kube and reqwest alike.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match run(cli, &matches).await {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("remaudit: {err:#}");
            ExitCode::FAILURE
        }
    }
}
