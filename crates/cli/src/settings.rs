//! The settings of each process, layered in one way: the defaults (each
//! settings type's `Default`), then an optional TOML file (`--config FILE` /
//! `REMAUDIT_CONFIG`), then the `REMAUDIT_*` environment variables, then
//! flags. Clap reads the last two and tells which one a value came from
//! ([`ValueSource`]); a value it only filled in from its default leaves the
//! file's (or the default's) in place.
//!
//! One settings file serves every command ([`SettingsFile`]): a deployment
//! can give the same file to `migrate`, `serve`, `publish` and `controller`,
//! and each reads the tables it uses and ignores the others. Unknown keys are
//! refused at every level, whichever command reads the file. `remaudit
//! config print COMMAND` prints what one command uses, with its effective
//! values (itself a valid settings file).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use chrono::TimeDelta;
use clap::ArgMatches;
use clap::parser::ValueSource;
use remaudit_client::PublisherSettings;
use remaudit_retention::{Archive, ArchiveFormat};
use remaudit_server::ServerSettings;
use remaudit_server::tls::TlsSettings;
use remaudit_store::{PoolSettings, RetentionPolicy};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

use crate::auth::{AuthArgs, AuthSettings};
use crate::chain::{ChainArgs, ChainCheckArgs, ChainSettings};
use crate::retention::PolicyArgs;

/// Used when no database URL is given: a SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://remaudit.db";

/// Whether the value of `id` came from a flag or an environment variable,
/// rather than from clap's default.
pub fn given(matches: &ArgMatches, id: &str) -> bool {
    matches!(
        matches.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// The value of `id` when it came from a flag or an environment variable;
/// for the arguments of another module, whose fields are not ours to read.
///
/// # Errors
/// When `id` is not an argument of type `T` (a mistake in this file).
fn explicit<T: Clone + Send + Sync + 'static>(
    matches: &ArgMatches,
    id: &str,
) -> anyhow::Result<Option<T>> {
    // A command without that argument (`retention verify` has no policy flags).
    if matches.try_contains_id(id).is_err() || !given(matches, id) {
        return Ok(None);
    }
    let value = matches
        .try_get_one::<T>(id)
        .with_context(|| format!("reading the value of --{id}"))?;
    Ok(value.cloned())
}

/// Overrides each setting with its argument's value when a flag or an
/// environment variable gave one: `field => target` or, converting,
/// `field => target, via function`.
macro_rules! layer {
    ($matches:expr, $args:expr, { $($field:ident => $target:expr $(, via $f:expr)?;)+ }) => {$(
        if $crate::settings::given($matches, stringify!($field)) {
            $target = layer!(@convert $args.$field.clone() $(, $f)?);
        }
    )+};
    (@convert $value:expr) => { $value };
    (@convert $value:expr, $f:expr) => { ($f)($value) };
}
pub(crate) use layer;

/// The schema of a settings file, shared by every command: top-level keys,
/// then one table per part. Each command takes what it uses.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SettingsFile {
    /// Log format (every command).
    pub log_format: LogFormat,
    /// Address `serve` listens on.
    pub listen: SocketAddr,
    /// `serve`'s statement timeout of listings and analytics.
    pub analytics_statement_timeout_secs: Option<u64>,
    /// `publish`'s deadline.
    pub deadline_secs: u64,
    /// `[database]`: `serve`, `migrate`, `retention`.
    pub database: DatabaseSettings,
    /// `[server]`: `serve`.
    pub server: ServerSettings,
    /// `[retention]`: `serve`, `retention`.
    pub retention: RetentionSettings,
    /// `[auth]`: `serve`.
    pub auth: AuthSettings,
    /// `[chain]`: `serve`.
    pub chain: ChainSettings,
    /// `[publisher]`: `publish`, `controller`, `simulate`.
    pub publisher: PublisherSettings,
    /// `[controller]`: `controller`.
    pub controller: crate::controller::ControllerTable,
    /// `[tls]`: `serve`.
    pub tls: TlsSettings,
}

impl Default for SettingsFile {
    fn default() -> Self {
        let serve = ServeSettings::default();
        let publish = crate::publish::PublishSettings::default();
        Self {
            log_format: LogFormat::default(),
            listen: serve.listen,
            analytics_statement_timeout_secs: serve.analytics_statement_timeout_secs,
            deadline_secs: publish.deadline_secs,
            database: serve.database,
            server: serve.server,
            retention: serve.retention,
            auth: serve.auth,
            chain: serve.chain,
            publisher: publish.publisher,
            controller: crate::controller::ControllerTable::default(),
            tls: serve.tls,
        }
    }
}

/// Reads the settings file, when there is one, over the defaults; every key
/// it holds must be one of [`SettingsFile`]'s.
///
/// # Errors
/// When the file cannot be read, is not TOML, or holds an unknown key or a
/// value of the wrong type.
pub fn read_file(file: Option<&Path>) -> anyhow::Result<SettingsFile> {
    let Some(path) = file else {
        return Ok(SettingsFile::default());
    };
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the settings file {}: set --config / REMAUDIT_CONFIG to a readable file",
            path.display()
        )
    })?;
    let f: SettingsFile = toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!("settings file {}: {}", path.display(), describe(&e, &text))
    })?;
    // Refused rather than brought into range, as the flags are.
    let p = &f.publisher;
    ensure!(
        (1..=PublisherSettings::MAX_BATCH_RECORDS).contains(&p.batch_records),
        "settings file {}: setting publisher.batch_records = {} must be from 1 to {}",
        path.display(),
        p.batch_records,
        PublisherSettings::MAX_BATCH_RECORDS
    );
    ensure!(
        p.memory_records >= 1,
        "settings file {}: setting publisher.memory_records = 0 must be at least 1",
        path.display()
    );
    Ok(f)
}

/// `e`, naming the settings file when there is one (a value out of range
/// after layering came from it: clap checks the flags').
fn in_file(e: anyhow::Error, file: Option<&Path>) -> anyhow::Error {
    match file {
        Some(path) => e.context(format!("settings file {}", path.display())),
        None => e,
    }
}

/// The error's message with the line and column it points at; never the
/// source text itself, which may hold a password.
fn describe(e: &toml::de::Error, text: &str) -> String {
    let message = e.message().trim_end();
    let Some(span) = e.span() else {
        return message.to_owned();
    };
    let start = span.start.min(text.len());
    let before = text.get(..start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit_once('\n')
        .map_or(before, |(_, tail)| tail)
        .chars()
        .count()
        + 1;
    format!("line {line}, column {column}: {message}")
}

/// Refuses a value a flag would have refused, naming its key.
fn at_least<T: PartialOrd + std::fmt::Display + Copy>(
    key: &str,
    value: T,
    least: T,
) -> anyhow::Result<()> {
    ensure!(
        value >= least,
        "setting {key} = {value} must be at least {least}"
    );
    Ok(())
}

/// How logs are written (to standard error).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object a line.
    Json,
}

#[allow(
    clippy::unnecessary_wraps,
    reason = "clap's value_parser takes a function that may fail"
)]
fn parse_secret(s: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(s))
}

/// The database flags.
#[derive(Debug, clap::Args)]
pub struct DatabaseArgs {
    /// `postgres://USER@HOST:PORT/DB` or `sqlite://PATH` (created on first run).
    #[arg(long, env = "REMAUDIT_DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true, value_parser = parse_secret)]
    pub database_url: SecretString,
    /// Most database connections.
    #[arg(long, env = "REMAUDIT_DB_MAX_CONNECTIONS", default_value_t = DatabaseSettings::default().max_connections)]
    pub db_max_connections: u32,
    /// Seconds a request waits for a database connection before answering 503.
    #[arg(long, env = "REMAUDIT_DB_ACQUIRE_TIMEOUT_SECS", default_value_t = DatabaseSettings::default().acquire_timeout_secs)]
    pub db_acquire_timeout_secs: u64,
    /// Most connections of the separate pool listings and analytics read through
    /// (on top of --db-max-connections, so that slow reads never hold the ones writes need).
    #[arg(long, env = "REMAUDIT_DB_READ_MAX_CONNECTIONS", default_value_t = DatabaseSettings::default().read_max_connections, value_parser = clap::value_parser!(u32).range(1..))]
    pub db_read_max_connections: u32,
}

/// Where the database is and how many connections it gets: the
/// `[database]` table of a settings file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `postgres://…` or `sqlite://…`; it may hold a password, so it is
    /// only exposed where the connection is made, and printed redacted.
    #[serde(serialize_with = "serialize_redacted_url")]
    pub url: SecretString,
    /// Most database connections.
    pub max_connections: u32,
    /// Seconds a request waits for a connection.
    pub acquire_timeout_secs: u64,
    /// Most connections of the read pool.
    pub read_max_connections: u32,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        let pool = PoolSettings::default();
        Self {
            url: SecretString::from(DEFAULT_DATABASE_URL),
            max_connections: 10,
            acquire_timeout_secs: 3,
            read_max_connections: pool.read_max_connections,
        }
    }
}

impl DatabaseSettings {
    fn layer(&mut self, args: &DatabaseArgs, m: &ArgMatches) {
        layer!(m, args, {
            database_url => self.url;
            db_max_connections => self.max_connections;
            db_acquire_timeout_secs => self.acquire_timeout_secs;
            db_read_max_connections => self.read_max_connections;
        });
    }

    fn check(&self) -> anyhow::Result<()> {
        at_least(
            "database.read_max_connections",
            self.read_max_connections,
            1,
        )
    }

    /// The store's pool settings.
    pub fn pool(&self) -> PoolSettings {
        PoolSettings {
            max_connections: self.max_connections,
            acquire_timeout: Duration::from_secs(self.acquire_timeout_secs),
            read_max_connections: self.read_max_connections,
            ..PoolSettings::default()
        }
    }
}

fn serialize_redacted_url<S: serde::Serializer>(
    url: &SecretString,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(url.expose_secret()))
}

/// `url` with its passwords masked: the store's redaction, the one the
/// whole binary uses.
pub fn redact_url(url: &str) -> String {
    remaudit_store::redact(url)
}

/// The publisher's tuning flags (the service URL and spool directory are
/// each command's own flags).
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Publisher")]
pub struct PublisherArgs {
    /// Records the publisher's memory queue holds.
    #[arg(long, env = "REMAUDIT_PUBLISHER_MEMORY_RECORDS", default_value_t = PublisherSettings::default().memory_records, value_parser = trimmed::<usize>)]
    pub publisher_memory_records: usize,
    /// Most bytes of spool files.
    #[arg(long, env = "REMAUDIT_SPOOL_MAX_BYTES", default_value_t = PublisherSettings::default().spool_max_bytes, value_parser = trimmed::<u64>)]
    pub spool_max_bytes: u64,
    /// Size at which the spool starts a new segment file, in bytes.
    #[arg(long, env = "REMAUDIT_SPOOL_SEGMENT_BYTES", default_value_t = PublisherSettings::default().spool_segment_bytes, value_parser = trimmed::<u64>)]
    pub spool_segment_bytes: u64,
    /// Milliseconds between fsyncs of the spool.
    #[arg(long, env = "REMAUDIT_SPOOL_FSYNC_MS", default_value_t = ms(PublisherSettings::default().fsync_interval), value_parser = trimmed::<u64>)]
    pub spool_fsync_ms: u64,
    /// Most records in one request (1 to 1000).
    #[arg(long, env = "REMAUDIT_PUBLISHER_BATCH_RECORDS", default_value_t = PublisherSettings::default().batch_records, value_parser = trimmed::<usize>)]
    pub publisher_batch_records: usize,
    /// Most payload bytes in one request.
    #[arg(long, env = "REMAUDIT_PUBLISHER_BATCH_BYTES", default_value_t = PublisherSettings::default().batch_bytes, value_parser = trimmed::<usize>)]
    pub publisher_batch_bytes: usize,
    /// Batches in flight at once.
    #[arg(long, env = "REMAUDIT_PUBLISHER_MAX_IN_FLIGHT", default_value_t = PublisherSettings::default().max_in_flight, value_parser = trimmed::<usize>)]
    pub publisher_max_in_flight: usize,
    /// Milliseconds a partial batch waits for more records.
    #[arg(long, env = "REMAUDIT_PUBLISHER_LINGER_MS", default_value_t = ms(PublisherSettings::default().linger), value_parser = trimmed::<u64>)]
    pub publisher_linger_ms: u64,
    /// Milliseconds one request may take.
    #[arg(long, env = "REMAUDIT_PUBLISHER_TIMEOUT_MS", default_value_t = ms(PublisherSettings::default().request_timeout), value_parser = trimmed::<u64>)]
    pub publisher_timeout_ms: u64,
    /// First retry delay, in milliseconds.
    #[arg(long, env = "REMAUDIT_PUBLISHER_MIN_BACKOFF_MS", default_value_t = ms(PublisherSettings::default().min_backoff), value_parser = trimmed::<u64>)]
    pub publisher_min_backoff_ms: u64,
    /// Longest retry delay, in milliseconds.
    #[arg(long, env = "REMAUDIT_PUBLISHER_MAX_BACKOFF_MS", default_value_t = ms(PublisherSettings::default().max_backoff), value_parser = trimmed::<u64>)]
    pub publisher_max_backoff_ms: u64,
    /// Longest `Retry-After` honoured, in milliseconds.
    #[arg(long, env = "REMAUDIT_PUBLISHER_MAX_RETRY_AFTER_MS", default_value_t = ms(PublisherSettings::default().max_retry_after), value_parser = trimmed::<u64>)]
    pub publisher_max_retry_after_ms: u64,
    /// What the publisher presents to the service.
    #[command(flatten)]
    pub credentials: crate::credentials::CredentialArgs,
}

/// A number, with the blanks around it ignored (as the publisher's
/// environment variables always allowed).
fn trimmed<T: std::str::FromStr>(s: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    s.trim().parse().map_err(|e: T::Err| e.to_string())
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl PublisherArgs {
    /// Layers these flags over `config`, then brings it into range.
    pub fn layer(&self, config: &mut PublisherSettings, m: &ArgMatches) {
        layer!(m, self, {
            publisher_memory_records => config.memory_records;
            spool_max_bytes => config.spool_max_bytes;
            spool_segment_bytes => config.spool_segment_bytes;
            spool_fsync_ms => config.fsync_interval, via Duration::from_millis;
            publisher_batch_records => config.batch_records;
            publisher_batch_bytes => config.batch_bytes;
            publisher_max_in_flight => config.max_in_flight;
            publisher_linger_ms => config.linger, via Duration::from_millis;
            publisher_timeout_ms => config.request_timeout, via Duration::from_millis;
            publisher_min_backoff_ms => config.min_backoff, via Duration::from_millis;
            publisher_max_backoff_ms => config.max_backoff, via Duration::from_millis;
            publisher_max_retry_after_ms => config.max_retry_after, via Duration::from_millis;
        });
        self.credentials.layer(&mut config.credentials, m);
        *config = config.clone().clamped();
    }
}

/// A count as a flag's `u32`.
fn narrow(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A flag's `u32` as a count.
fn widen(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Connection and request limits of `serve`.
#[derive(Debug, clap::Args)]
pub struct ConnectionArgs {
    /// Seconds a client may take to send a request's headers (also how long an idle connection stays open).
    #[arg(long, env = "REMAUDIT_HEADER_READ_TIMEOUT_SECS", default_value_t = ServerSettings::default().header_read_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    header_read_timeout_secs: u64,
    /// Seconds a request body, or the client's reading of an answer, may stall.
    #[arg(long, env = "REMAUDIT_IDLE_TIMEOUT_SECS", default_value_t = ServerSettings::default().idle_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout_secs: u64,
    /// Most open connections; more wait in the listen backlog.
    #[arg(long, env = "REMAUDIT_MAX_CONNECTIONS", default_value_t = narrow(ServerSettings::default().max_connections), value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Most requests handled at once; more are answered 503 with Retry-After.
    #[arg(long, env = "REMAUDIT_MAX_CONCURRENT_REQUESTS", default_value_t = narrow(ServerSettings::default().max_concurrent_requests), value_parser = clap::value_parser!(u32).range(1..))]
    max_concurrent_requests: u32,
    /// Seconds requests in flight may take after SIGTERM before connections are dropped.
    #[arg(long, env = "REMAUDIT_SHUTDOWN_GRACE_SECS", default_value_t = ServerSettings::default().shutdown_grace.as_secs())]
    shutdown_grace_secs: u64,
}

/// The flags of `remaudit serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "REMAUDIT_LISTEN", default_value_t = ServeSettings::default().listen)]
    listen: SocketAddr,
    #[command(flatten)]
    database: DatabaseArgs,
    /// Largest request body, in bytes.
    #[arg(long, env = "REMAUDIT_MAX_BODY_BYTES", default_value_t = ServerSettings::default().max_body_bytes)]
    max_body_bytes: usize,
    /// Most records in one batch.
    #[arg(long, env = "REMAUDIT_MAX_BATCH_RECORDS", default_value_t = ServerSettings::default().max_batch_records)]
    max_batch_records: usize,
    /// Most single-record POSTs that share one transaction and commit; 1 gives each its own.
    #[arg(long, env = "REMAUDIT_SINGLE_POST_BATCH_RECORDS", default_value_t = narrow(ServerSettings::default().single_post_batch_records), value_parser = clap::value_parser!(u32).range(1..))]
    single_post_batch_records: u32,
    /// Seconds a request may take before it is answered 503.
    #[arg(long, env = "REMAUDIT_REQUEST_TIMEOUT_SECS", default_value_t = ServerSettings::default().request_timeout.as_secs())]
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
    retention: PolicyArgs,
    /// Seconds between retention runs (one also runs at start-up); 0 turns the job off.
    #[arg(long, env = "REMAUDIT_RETENTION_INTERVAL_SECS", default_value_t = RetentionSettings::default().interval_secs)]
    retention_interval_secs: u64,
    #[command(flatten)]
    auth: AuthArgs,
    #[command(flatten)]
    tls: crate::tls::TlsArgs,
    #[command(flatten)]
    chain: ChainArgs,
    #[command(flatten)]
    chain_check: ChainCheckArgs,
}

/// Everything `remaudit serve` runs with.
#[derive(Debug, Clone, Serialize)]
pub struct ServeSettings {
    /// Log format.
    pub log_format: LogFormat,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Seconds a listing or analytics statement may run on PostgreSQL; unset
    /// for 2 s under the request timeout, 0 for no limit.
    pub analytics_statement_timeout_secs: Option<u64>,
    /// The database.
    pub database: DatabaseSettings,
    /// Limits and timeouts of the HTTP service.
    pub server: ServerSettings,
    /// The retention policy and job.
    pub retention: RetentionSettings,
    /// Who may call which route.
    pub auth: AuthSettings,
    /// TLS and mutual TLS.
    pub tls: TlsSettings,
    /// Tamper evidence: the chain key file.
    pub chain: ChainSettings,
}

impl Default for ServeSettings {
    fn default() -> Self {
        Self {
            log_format: LogFormat::default(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8085)),
            analytics_statement_timeout_secs: None,
            database: DatabaseSettings::default(),
            server: ServerSettings::default(),
            retention: RetentionSettings::default(),
            auth: AuthSettings::default(),
            tls: TlsSettings::default(),
            chain: ChainSettings::default(),
        }
    }
}

impl ServeSettings {
    /// Defaults, then `file`, then the environment and flags in `m`.
    ///
    /// # Errors
    /// An unreadable or invalid file, or a value out of range.
    pub fn load(args: &ServeArgs, m: &ArgMatches, file: Option<&Path>) -> anyhow::Result<Self> {
        let f = read_file(file)?;
        let mut s = Self {
            log_format: f.log_format,
            listen: f.listen,
            analytics_statement_timeout_secs: f.analytics_statement_timeout_secs,
            database: f.database,
            server: f.server,
            retention: f.retention,
            auth: f.auth,
            tls: f.tls,
            chain: f.chain,
        };
        layer!(m, args, {
            listen => s.listen;
            max_body_bytes => s.server.max_body_bytes;
            max_batch_records => s.server.max_batch_records;
            single_post_batch_records => s.server.single_post_batch_records, via widen;
            request_timeout_secs => s.server.request_timeout, via Duration::from_secs;
            max_events_per_remediation => s.server.max_events_per_remediation;
            analytics_statement_timeout_secs => s.analytics_statement_timeout_secs;
            retention_interval_secs => s.retention.interval_secs;
        });
        layer!(m, args.limits, {
            header_read_timeout_secs => s.server.header_read_timeout, via Duration::from_secs;
            idle_timeout_secs => s.server.idle_timeout, via Duration::from_secs;
            max_connections => s.server.max_connections, via widen;
            max_concurrent_requests => s.server.max_concurrent_requests, via widen;
            shutdown_grace_secs => s.server.shutdown_grace, via Duration::from_secs;
        });
        if let Some(format) = explicit::<LogFormat>(m, "log_format")? {
            s.log_format = format;
        }
        s.database.layer(&args.database, m);
        s.retention.layer(m)?;
        s.auth.layer(&args.auth, m);
        args.tls
            .layer(&mut s.tls, m)
            .map_err(|e| in_file(e, file))?;
        s.chain.layer(&args.chain, m);
        s.chain.layer_check(&args.chain_check, m);
        s.check().map_err(|e| in_file(e, file))?;
        Ok(s)
    }

    fn check(&self) -> anyhow::Result<()> {
        self.database.check()?;
        self.retention.check()?;
        self.auth.check()?;
        let server = &self.server;
        at_least(
            "server.header_read_timeout_secs",
            server.header_read_timeout.as_secs(),
            1,
        )?;
        at_least("server.idle_timeout_secs", server.idle_timeout.as_secs(), 1)?;
        at_least("server.max_connections", server.max_connections, 1)?;
        at_least(
            "server.max_concurrent_requests",
            server.max_concurrent_requests,
            1,
        )?;
        at_least(
            "server.single_post_batch_records",
            server.single_post_batch_records,
            1,
        )?;
        at_least(
            "server.max_events_per_remediation",
            server.max_events_per_remediation,
            1,
        )
    }

    /// The store's pool: the database's, with the read statement timeout.
    pub fn pool(&self) -> PoolSettings {
        let mut pool = self.database.pool();
        pool.read_statement_timeout =
            match self.analytics_statement_timeout_secs.unwrap_or_else(|| {
                self.server
                    .request_timeout
                    .as_secs()
                    .saturating_sub(2)
                    .max(1)
            }) {
                0 => None,
                secs => Some(Duration::from_secs(secs)),
            };
        pool
    }

    /// The service's settings; a record older than the retention age that
    /// would start a new remediation is refused (retention would archive it
    /// at once).
    pub fn server(&self) -> ServerSettings {
        ServerSettings {
            refuse_new_older_than: Some(self.retention.policy().age),
            ..self.server.clone()
        }
    }
}

/// The retention policy, and the job `serve` runs: the `[retention]` table
/// of `serve`'s settings file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSettings {
    /// Days a finished remediation is kept (1 to 36,500).
    pub days: u32,
    /// Let remediations that never finished expire too.
    pub include_unfinished: bool,
    /// Most rows one row-wise archive batch moves (1 to 1,000,000).
    pub batch_rows: u32,
    /// On PostgreSQL, also move due rows of weeks not yet wholly due.
    pub exact: bool,
    /// Where archive files go; unset for beside the database.
    pub archive_url: Option<String>,
    /// The form new archive files take: `parquet` or `jsonl`.
    pub archive_format: String,
    /// On PostgreSQL, where weekly partitions go 7 days after their week ends.
    pub warm_tablespace: Option<String>,
    /// On PostgreSQL, where weekly partitions go 30 days after their week ends.
    pub cold_tablespace: Option<String>,
    /// Seconds between runs; 0 turns the job off.
    pub interval_secs: u64,
}

/// Reads a tablespace name: an SQL identifier of 1 to 63 letters, digits
/// and underscores, not starting with a digit (PostgreSQL folds nothing in
/// it, since remaudit quotes it).
///
/// # Errors
/// Any other text, with the rule it breaks.
pub fn parse_tablespace(name: &str) -> Result<String, String> {
    let valid = (1..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if valid {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "{name:?} is not a tablespace name: 1 to 63 letters, digits and underscores, not starting with a digit"
        ))
    }
}

impl Default for RetentionSettings {
    fn default() -> Self {
        let job = remaudit_retention::Settings::default();
        Self {
            days: 90,
            include_unfinished: false,
            batch_rows: job.batch_rows,
            exact: job.exact,
            archive_url: None,
            archive_format: ArchiveFormat::default().to_string(),
            warm_tablespace: None,
            cold_tablespace: None,
            interval_secs: job.interval.as_secs(),
        }
    }
}

impl RetentionSettings {
    /// Layers the retention flags (`retention::PolicyArgs`, read by id).
    fn layer(&mut self, m: &ArgMatches) -> anyhow::Result<()> {
        if let Some(v) = explicit(m, "retention_days")? {
            self.days = v;
        }
        if let Some(v) = explicit(m, "retention_include_unfinished")? {
            self.include_unfinished = v;
        }
        if let Some(v) = explicit(m, "retention_batch_rows")? {
            self.batch_rows = v;
        }
        if let Some(v) = explicit(m, "retention_exact")? {
            self.exact = v;
        }
        if let Some(v) = explicit::<String>(m, "archive_url")? {
            self.archive_url = Some(v);
        }
        if let Some(v) = explicit::<String>(m, "archive_format")? {
            self.archive_format = v;
        }
        if let Some(v) = explicit::<String>(m, "warm_tablespace")? {
            self.warm_tablespace = Some(v);
        }
        if let Some(v) = explicit::<String>(m, "cold_tablespace")? {
            self.cold_tablespace = Some(v);
        }
        Ok(())
    }

    fn check(&self) -> anyhow::Result<()> {
        ensure!(
            (1..=36_500).contains(&self.days),
            "setting retention.days = {} must be from 1 to 36500",
            self.days
        );
        ensure!(
            (1..=1_000_000).contains(&self.batch_rows),
            "setting retention.batch_rows = {} must be from 1 to 1000000",
            self.batch_rows
        );
        self.archive_format
            .parse::<ArchiveFormat>()
            .map_err(|e| anyhow::anyhow!("setting retention.archive_format: {e}"))?;
        for (key, name) in [
            ("warm_tablespace", &self.warm_tablespace),
            ("cold_tablespace", &self.cold_tablespace),
        ] {
            if let Some(name) = name {
                parse_tablespace(name)
                    .map_err(|e| anyhow::anyhow!("setting retention.{key}: {e}"))?;
            }
        }
        Ok(())
    }

    /// Refuses tiers on a database that has no tablespaces (SQLite).
    ///
    /// # Errors
    /// When a tier is set and `database_url` is not PostgreSQL's.
    pub fn check_backend(&self, database_url: &str) -> anyhow::Result<()> {
        let postgres =
            database_url.starts_with("postgres://") || database_url.starts_with("postgresql://");
        ensure!(
            postgres || self.tiers().is_empty(),
            "--warm-tablespace and --cold-tablespace (retention.warm_tablespace, \
             retention.cold_tablespace) need PostgreSQL; this database is SQLite, which has no tablespaces"
        );
        Ok(())
    }

    /// The warm and cold tiers.
    pub fn tiers(&self) -> remaudit_store::Tiers {
        remaudit_store::Tiers {
            warm: self.warm_tablespace.clone(),
            cold: self.cold_tablespace.clone(),
        }
    }

    /// The store's policy.
    pub fn policy(&self) -> RetentionPolicy {
        RetentionPolicy {
            age: TimeDelta::days(i64::from(self.days)),
            terminal_only: !self.include_unfinished,
        }
    }

    /// The job's settings.
    pub fn job(&self) -> remaudit_retention::Settings {
        remaudit_retention::Settings {
            policy: self.policy(),
            interval: Duration::from_secs(self.interval_secs),
            batch_rows: self.batch_rows,
            exact: self.exact,
            tiers: self.tiers(),
            ..remaudit_retention::Settings::default()
        }
    }

    /// The archive's URL, the default one for `database_url` when none is set.
    pub fn archive_url(&self, database_url: &str) -> String {
        self.archive_url
            .clone()
            .unwrap_or_else(|| Archive::default_url(database_url))
    }

    /// Opens the archive, the default one for `database_url` when none is set.
    ///
    /// # Errors
    /// An archive URL that cannot be opened.
    pub fn archive(&self, database_url: &str) -> anyhow::Result<Archive> {
        let url = self.archive_url(database_url);
        let format = self
            .archive_format
            .parse::<ArchiveFormat>()
            .map_err(|e| anyhow::anyhow!("setting retention.archive_format: {e}"))?;
        Ok(Archive::open(&url)?.with_format(format))
    }
}

/// The flags of `remaudit migrate`.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    database: DatabaseArgs,
}

/// Everything `remaudit migrate` runs with.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MigrateSettings {
    /// Log format.
    pub log_format: LogFormat,
    /// The database.
    pub database: DatabaseSettings,
}

impl MigrateSettings {
    /// Defaults, then `file`, then the environment and flags in `m`.
    ///
    /// # Errors
    /// An unreadable or invalid file, or a value out of range.
    pub fn load(args: &MigrateArgs, m: &ArgMatches, file: Option<&Path>) -> anyhow::Result<Self> {
        let f = read_file(file)?;
        let mut s = Self {
            log_format: f.log_format,
            database: f.database,
        };
        if let Some(format) = explicit::<LogFormat>(m, "log_format")? {
            s.log_format = format;
        }
        s.database.layer(&args.database, m);
        s.database.check().map_err(|e| in_file(e, file))?;
        Ok(s)
    }
}

/// Everything `remaudit retention run | verify` works with: the
/// `[database]` and `[retention]` tables (`interval_secs` is `serve`'s).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetentionRunSettings {
    /// The database.
    pub database: DatabaseSettings,
    /// The retention policy and archive.
    pub retention: RetentionSettings,
    /// The chain key file that signs manifests (`run`) and checks them (`verify`).
    pub chain: ChainSettings,
}

impl RetentionRunSettings {
    /// The file's tables, then the environment and flags in `m` (read by id:
    /// the flags are `retention.rs`'s).
    ///
    /// # Errors
    /// An unreadable or invalid file, or a value out of range.
    pub fn load(f: SettingsFile, m: &ArgMatches) -> anyhow::Result<Self> {
        let mut s = Self {
            database: f.database,
            retention: f.retention,
            chain: f.chain,
        };
        if let Some(v) = explicit(m, "chain_key_file")? {
            s.chain.key_file = Some(v);
        }
        if let Some(v) = explicit(m, "database_url")? {
            s.database.url = v;
        }
        if let Some(v) = explicit(m, "db_max_connections")? {
            s.database.max_connections = v;
        }
        if let Some(v) = explicit(m, "db_acquire_timeout_secs")? {
            s.database.acquire_timeout_secs = v;
        }
        if let Some(v) = explicit(m, "db_read_max_connections")? {
            s.database.read_max_connections = v;
        }
        s.retention.layer(m)?;
        s.database.check()?;
        s.retention.check()?;
        Ok(s)
    }
}

/// The log format given by a flag or `REMAUDIT_LOG_FORMAT`, if any.
///
/// # Errors
/// Never in practice: `log_format` is a global argument of this type.
pub fn given_log_format(m: &ArgMatches) -> anyhow::Result<Option<LogFormat>> {
    explicit(m, "log_format")
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, FromArgMatches as _};

    use super::*;
    use crate::{Cli, Command, innermost};

    /// Parses `argv` and loads the settings of its command, without a file.
    fn settings_of(flags: &[&str]) -> String {
        let m = Cli::command()
            .try_get_matches_from(flags)
            .expect("the flags parse");
        let cli = Cli::from_arg_matches(&m).expect("the flags parse");
        let given = innermost(&m);
        let text = match cli.command {
            Command::Serve(args) => {
                toml::to_string(&ServeSettings::load(&args, given, None).expect("settings"))
            }
            Command::Publish(args) => toml::to_string(
                &crate::publish::PublishSettings::load(&args, given, None).expect("settings"),
            ),
            Command::Controller(args) => toml::to_string(
                &crate::controller::ControllerSettings::load(&args, given, None).expect("settings"),
            ),
            other => panic!("no settings for {other:?}"),
        };
        text.expect("TOML")
    }

    #[test]
    fn every_serve_flag_reaches_its_setting() {
        let text = settings_of(&[
            "remaudit",
            "--log-format",
            "json",
            "serve",
            "--listen",
            "0.0.0.0:1",
            "--database-url",
            "postgres://u:pw@db/x",
            "--db-max-connections",
            "11",
            "--db-acquire-timeout-secs",
            "4",
            "--db-read-max-connections",
            "5",
            "--max-body-bytes",
            "12",
            "--max-batch-records",
            "13",
            "--single-post-batch-records",
            "30",
            "--request-timeout-secs",
            "14",
            "--max-events-per-remediation",
            "15",
            "--analytics-statement-timeout-secs",
            "16",
            "--header-read-timeout-secs",
            "17",
            "--idle-timeout-secs",
            "18",
            "--max-connections",
            "19",
            "--max-concurrent-requests",
            "20",
            "--shutdown-grace-secs",
            "21",
            "--retention-days",
            "22",
            "--retention-include-unfinished",
            "--retention-batch-rows",
            "23",
            "--retention-exact",
            "--archive-url",
            "file:///a",
            "--archive-format",
            "jsonl",
            "--retention-interval-secs",
            "24",
            "--auth-tokens-file",
            "/t.toml",
            "--anonymous-role",
            "writer",
            "--metrics-require-reader",
            "--auth-kubernetes",
            "--auth-kubernetes-audience",
            "a,b",
            "--auth-kubernetes-namespace",
            "ns",
            "--auth-kubernetes-allowed-ttl-secs",
            "25",
            "--auth-kubernetes-denied-ttl-secs",
            "26",
            "--auth-kubernetes-cache-entries",
            "27",
            "--auth-kubernetes-review-timeout-secs",
            "28",
            "--tls-cert",
            "/t/c.pem",
            "--tls-key",
            "/t/k.pem",
            "--tls-client-ca",
            "/t/ca.pem",
            "--tls-client-cert-optional",
            "--tls-client-role",
            "CN=orchestrator,O=kubernaut=writer",
            "--tls-client-role",
            "cn=dash=reader",
            "--tls-reload-interval-secs",
            "25",
            "--tls-handshake-timeout-secs",
            "26",
            "--chain-key-file",
            "/chain.keys",
            "--chain-verify-interval-secs",
            "29",
        ]);
        let expected = r#"log_format = "json"
listen = "0.0.0.0:1"
analytics_statement_timeout_secs = 16

[database]
url = "postgres://u:***@db/x"
max_connections = 11
acquire_timeout_secs = 4
read_max_connections = 5

[server]
max_body_bytes = 12
max_batch_records = 13
request_timeout_secs = 14
header_read_timeout_secs = 17
idle_timeout_secs = 18
max_connections = 19
max_concurrent_requests = 20
shutdown_grace_secs = 21
single_post_batch_records = 30
max_events_per_remediation = 15

[retention]
days = 22
include_unfinished = true
batch_rows = 23
exact = true
archive_url = "file:///a"
archive_format = "jsonl"
interval_secs = 24

[auth]
tokens_file = "/t.toml"
insecure_no_auth = false
anonymous_role = "writer"
metrics_require_reader = true

[auth.kubernetes]
enabled = true
audiences = ["a", "b"]
namespace = "ns"
allowed_ttl_secs = 25
denied_ttl_secs = 26
cache_entries = 27
review_timeout_secs = 28

[tls]
cert = "/t/c.pem"
key = "/t/k.pem"
client_ca = "/t/ca.pem"
client_cert_optional = true
reload_interval_secs = 25
handshake_timeout_secs = 26

[tls.client_roles]
"CN=dash" = "reader"
"CN=orchestrator,O=kubernaut" = "writer"

[chain]
key_file = "/chain.keys"
verify_interval_secs = 29
"#;
        assert_eq!(text, expected);
    }

    #[test]
    fn every_publisher_flag_reaches_its_setting() {
        let publisher = [
            "--url",
            "http://svc:1",
            "--spool-dir",
            "/s",
            "--publisher-memory-records",
            "2",
            "--spool-max-bytes",
            "3",
            "--spool-segment-bytes",
            "4",
            "--spool-fsync-ms",
            "5",
            "--publisher-batch-records",
            "6",
            "--publisher-batch-bytes",
            "7",
            "--publisher-max-in-flight",
            "8",
            "--publisher-linger-ms",
            "9",
            "--publisher-timeout-ms",
            "10",
            "--publisher-min-backoff-ms",
            "11",
            "--publisher-max-backoff-ms",
            "12",
            "--publisher-max-retry-after-ms",
            "13",
        ];
        let table = r#"[publisher]
url = "http://svc:1"
spool_dir = "/s"
memory_records = 2
spool_max_bytes = 3
spool_segment_bytes = 4
spool_fsync_ms = 5
batch_records = 6
batch_bytes = 7
max_in_flight = 8
linger_ms = 9
timeout_ms = 10
min_backoff_ms = 11
max_backoff_ms = 12
max_retry_after_ms = 13
"#;
        let mut argv = vec!["remaudit", "publish", "--deadline", "1"];
        argv.extend(publisher);
        assert_eq!(
            settings_of(&argv),
            format!("log_format = \"text\"\ndeadline_secs = 1\n\n{table}")
        );
        let mut argv = vec![
            "remaudit",
            "controller",
            "--namespace",
            "n",
            "--lease-name",
            "l",
            "--lease-namespace",
            "ln",
            "--metrics-listen",
            "127.0.0.1:1",
            "--flush-secs",
            "3",
        ];
        argv.extend(publisher);
        assert_eq!(
            settings_of(&argv),
            format!(
                "log_format = \"text\"\n\n[controller]\nnamespace = \"n\"\nlease_name = \"l\"\nlease_namespace = \"ln\"\nmetrics_listen = \"127.0.0.1:1\"\nflush_secs = 3\n\n{table}"
            )
        );
    }

    #[test]
    fn the_flags_show_the_defaults_the_settings_start_from() {
        // The retention flags belong to `retention.rs`; their clap defaults
        // must be the settings' defaults.
        let m = Cli::command()
            .try_get_matches_from(["remaudit", "serve"])
            .expect("parses");
        let given = innermost(&m);
        let retention = RetentionSettings::default();
        assert_eq!(
            given.get_one::<u32>("retention_days"),
            Some(&retention.days)
        );
        assert_eq!(
            given.get_one::<u32>("retention_batch_rows"),
            Some(&retention.batch_rows)
        );
    }

    #[test]
    fn passwords_are_redacted_from_urls() {
        for (url, shown) in [
            (
                "postgres://remaudit:hunter2@db:5432/remaudit",
                "postgres://remaudit:***@db:5432/remaudit",
            ),
            (
                "postgres://u:p%40ss@db/x?sslmode=require&password=hunter2",
                "postgres://u:***@db/x?sslmode=require&password=***",
            ),
            (
                "postgres://remaudit@db/remaudit",
                "postgres://remaudit@db/remaudit",
            ),
            ("sqlite://remaudit.db", "sqlite://remaudit.db"),
            ("postgres://a:b@c@db/x", "postgres://a:***@db/x"),
            ("postgres://a:b/c@db/x", "postgres://a:***@db/x"),
            ("postgres://u:se?cret@h/db", "postgres://u:***@h/db"),
            (
                "host=h password=s3cr3t dbname=x",
                "host=h password=*** dbname=x",
            ),
        ] {
            assert_eq!(redact_url(url), shown);
        }
    }

    #[test]
    fn file_errors_never_quote_the_source() {
        let text = "[database]\nurl = \"postgres://u:s3cr3t@h/db\"\nbogus = 1\n";
        let e = toml::from_str::<SettingsFile>(text).expect_err("unknown key");
        let shown = describe(&e, text);
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(
            shown.starts_with("line 3, column 1: unknown field `bogus`"),
            "{shown}"
        );
        let text = "database_url = \"postgres://u:s3cr3t@h/db\"";
        let e = toml::from_str::<SettingsFile>(text).expect_err("unknown key");
        let shown = describe(&e, text);
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.starts_with("line 1, column 1: "), "{shown}");
    }

    #[test]
    fn publisher_numbers_from_the_environment_may_have_blanks() {
        assert_eq!(trimmed::<usize>(" 100 "), Ok(100));
        assert!(trimmed::<usize>("x").is_err());
    }

    #[test]
    fn debug_never_prints_the_database_url() {
        let db = DatabaseSettings {
            url: SecretString::from("postgres://u:hunter2@db/x"),
            ..DatabaseSettings::default()
        };
        assert!(!format!("{db:?}").contains("hunter2"));
    }
}
