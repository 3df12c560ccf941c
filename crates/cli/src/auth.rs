//! Who may call `serve`: the authentication flags and the `[auth]` table,
//! the policy they make (with the refusal to listen beyond loopback without
//! authentication), and `remaudit token create | list | revoke`, which manage
//! a tokens file.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail, ensure};
use chrono::{SecondsFormat, TimeDelta, Utc};
use clap::ArgMatches;
use remaudit_server::auth::tokens::{self, POLL_INTERVAL, TokenRecord};
use remaudit_server::auth::{AuthPolicy, Authenticator, Role, TokensFile};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::kubernetes_auth::{KubernetesAuthArgs, KubernetesAuthSettings};
use crate::settings::layer;

/// The authentication flags of `serve`.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Authentication")]
pub struct AuthArgs {
    /// Tokens file (written by `remaudit token create`): bearer tokens by
    /// hash, with subject and role; re-read when it changes.
    #[arg(long, env = "REMAUDIT_AUTH_TOKENS_FILE")]
    auth_tokens_file: Option<PathBuf>,
    /// Leave every route open even on a non-loopback address; a warning is
    /// logged at start and on every admin call.
    #[arg(long, env = "REMAUDIT_INSECURE_NO_AUTH")]
    insecure_no_auth: bool,
    /// What a caller without a credential may do. Only `writer` is allowed:
    /// such callers may append records and nothing else.
    #[arg(long, env = "REMAUDIT_ANONYMOUS_ROLE", value_parser = parse_anonymous_role)]
    anonymous_role: Option<Role>,
    /// Put `/metrics` behind the `reader` role.
    #[arg(long, env = "REMAUDIT_METRICS_REQUIRE_READER")]
    metrics_require_reader: bool,
    #[command(flatten)]
    kubernetes: KubernetesAuthArgs,
}

fn parse_anonymous_role(s: &str) -> Result<Role, String> {
    match s.trim().parse::<Role>()? {
        Role::Writer => Ok(Role::Writer),
        other => Err(format!(
            "anonymous callers may only be given the writer role, not {other}: reads and admin always need a credential"
        )),
    }
}

/// The `[auth]` table of a settings file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// The tokens file, if bearer tokens from a file are accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_file: Option<PathBuf>,
    /// Every route open even beyond loopback.
    pub insecure_no_auth: bool,
    /// What callers without a credential may do (`writer` or unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anonymous_role: Option<Role>,
    /// Whether `/metrics` needs the `reader` role.
    pub metrics_require_reader: bool,
    /// `[auth.kubernetes]`: ServiceAccount tokens.
    pub kubernetes: KubernetesAuthSettings,
}

impl AuthSettings {
    /// Layers the flags and environment variables over the file's values.
    pub fn layer(&mut self, args: &AuthArgs, m: &ArgMatches) {
        layer!(m, args, {
            auth_tokens_file => self.tokens_file;
            insecure_no_auth => self.insecure_no_auth;
            anonymous_role => self.anonymous_role;
            metrics_require_reader => self.metrics_require_reader;
        });
        self.kubernetes.layer(&args.kubernetes, m);
    }

    /// Refuses contradictory settings, naming the keys.
    ///
    /// # Errors
    /// An anonymous role other than `writer`, `insecure_no_auth` beside an
    /// authenticator, or a bad Kubernetes setting.
    pub fn check(&self) -> anyhow::Result<()> {
        if let Some(role) = self.anonymous_role {
            ensure!(
                role == Role::Writer,
                "setting auth.anonymous_role = {role:?}: anonymous callers may only be given the writer role"
            );
        }
        if self.insecure_no_auth {
            ensure!(
                self.tokens_file.is_none() && !self.kubernetes.enabled,
                "--insecure-no-auth turns authentication off, but an authenticator is configured too (auth.tokens_file or auth.kubernetes): choose one"
            );
            ensure!(
                self.anonymous_role.is_none(),
                "--insecure-no-auth already lets anyone do anything: drop --anonymous-role, or drop --insecure-no-auth to let anonymous callers only write"
            );
        }
        self.kubernetes.check()
    }

    /// The policy `serve` enforces on `listen`, with `extra` authenticators
    /// (client certificates) after the tokens file and Kubernetes. Starts the
    /// tokens file's reload task, which ends with `shutdown`.
    ///
    /// # Errors
    /// No authentication on a non-loopback address without
    /// `--insecure-no-auth`, an unreadable or invalid tokens file, or
    /// Kubernetes authentication without a Kubernetes configuration.
    pub async fn policy(
        &self,
        listen: SocketAddr,
        extra: Vec<Arc<dyn Authenticator>>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<AuthPolicy> {
        self.check()?;
        let mut authenticators: Vec<Arc<dyn Authenticator>> = Vec::new();
        if let Some(path) = &self.tokens_file {
            let file = TokensFile::load(path)?;
            if file.is_empty() {
                tracing::warn!(file = %path.display(), "the tokens file holds no token: every bearer token is refused until one is added");
            }
            file.spawn_reload(POLL_INTERVAL, shutdown.clone());
            authenticators.push(file);
        }
        if let Some(kubernetes) = self.kubernetes.authenticator().await? {
            authenticators.push(Arc::new(kubernetes));
        }
        authenticators.extend(extra);
        if self.insecure_no_auth {
            ensure!(
                authenticators.is_empty(),
                "--insecure-no-auth turns authentication off, but client certificates are mapped to roles: choose one"
            );
        }
        if authenticators.is_empty() && self.anonymous_role.is_none() {
            let loopback = listen.ip().is_loopback();
            if self.insecure_no_auth {
                tracing::warn!(
                    address = %listen,
                    "authentication is OFF (--insecure-no-auth): anyone who reaches this address may write, read, hold and delete audit records"
                );
            } else if loopback {
                tracing::info!(
                    address = %listen,
                    "authentication is off: the service listens on loopback only"
                );
            } else {
                bail!(
                    "refusing to listen on {listen} without authentication: give --auth-tokens-file FILE \
                     (see `remaudit token create`), --auth-kubernetes or --tls-client-ca with --tls-client-role, \
                     or --insecure-no-auth to leave every route open"
                );
            }
            return Ok(AuthPolicy::Off {
                warn_on_admin: self.insecure_no_auth && !loopback,
            });
        }
        let names: Vec<&str> = authenticators.iter().map(|a| a.name()).collect();
        tracing::info!(
            authenticators = ?names,
            metrics_require_reader = self.metrics_require_reader,
            "authentication is on: every /api/v1 route needs its role"
        );
        if let Some(role) = self.anonymous_role {
            tracing::warn!(
                anonymous_role = %role,
                "anonymous writes are on: callers without a credential may append records (and nothing else)"
            );
        }
        Ok(AuthPolicy::Enforced {
            authenticators,
            anonymous_role: self.anonymous_role,
            metrics_require_reader: self.metrics_require_reader,
        })
    }
}

/// `remaudit token`: manage a tokens file.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Debug, clap::Subcommand)]
enum TokenCommand {
    /// Make a new token, add its hash to the tokens file (creating it), and
    /// print the token once on standard output.
    Create {
        /// Who holds the token (letters, digits and . _ - : @ /).
        #[arg(long)]
        subject: String,
        /// What it may do: writer (append records), reader (lists, timelines,
        /// analytics) or admin (reads, legal hold, soft delete, retention).
        #[arg(long)]
        role: Role,
        /// Days until it stops working; unset for never.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=36_500))]
        expires_in_days: Option<u32>,
        #[command(flatten)]
        file: TokensFileArg,
    },
    /// List the tokens of the file (hashes shortened; the tokens themselves
    /// are never stored).
    List {
        #[command(flatten)]
        file: TokensFileArg,
    },
    /// Remove tokens from the file: every token of a subject, or the one
    /// whose hash starts with a prefix. A running service drops them within
    /// seconds.
    Revoke {
        /// Remove every token of this subject.
        #[arg(long, conflicts_with = "sha256", required_unless_present = "sha256")]
        subject: Option<String>,
        /// Remove the one token whose hash starts with this (at least 8 hex digits, as `token list` shows).
        #[arg(long)]
        sha256: Option<String>,
        #[command(flatten)]
        file: TokensFileArg,
    },
}

#[derive(Debug, clap::Args)]
struct TokensFileArg {
    /// The tokens file `serve --auth-tokens-file` reads.
    #[arg(long, env = "REMAUDIT_AUTH_TOKENS_FILE")]
    tokens_file: PathBuf,
}

/// Shortest hash prefix `token revoke --sha256` takes.
const MIN_HASH_PREFIX: usize = 8;

/// Runs `remaudit token`; returns the exit status.
///
/// # Errors
/// A bad subject or hash prefix, a tokens file that cannot be read, has a
/// fault, or cannot be written, or a revoke that matches nothing.
pub fn run(args: TokenArgs) -> anyhow::Result<u8> {
    match args.command {
        TokenCommand::Create {
            subject,
            role,
            expires_in_days,
            file,
        } => {
            tokens::check_subject(&subject).map_err(|e| anyhow::anyhow!("--subject: {e}"))?;
            let token = tokens::generate_token();
            let created = Utc::now();
            let record = TokenRecord {
                sha256: tokens::hash_token(&token),
                subject: subject.clone(),
                role,
                created,
                expires: expires_in_days.map(|d| created + TimeDelta::days(i64::from(d))),
            };
            edit(&file.tokens_file, |records| {
                records.push(record);
                Ok(())
            })?;
            println!("{token}");
            eprintln!(
                "added a {role} token for {subject} to {}; it is shown only this once",
                file.tokens_file.display()
            );
            Ok(0)
        }
        TokenCommand::List { file } => {
            let records = tokens::read(&file.tokens_file)?;
            list(&records, &mut std::io::stdout().lock())?;
            Ok(0)
        }
        TokenCommand::Revoke {
            subject,
            sha256,
            file,
        } => {
            let mut removed = Vec::new();
            edit(&file.tokens_file, |records| {
                removed = revoke(records, subject.as_deref(), sha256.as_deref())?;
                Ok(())
            })?;
            for r in &removed {
                eprintln!(
                    "revoked the {} token {} of {}",
                    r.role,
                    short(&r.sha256),
                    r.subject
                );
            }
            Ok(0)
        }
    }
}

/// Removes the matching tokens from `records`; returns them.
fn revoke(
    records: &mut Vec<TokenRecord>,
    subject: Option<&str>,
    sha256: Option<&str>,
) -> anyhow::Result<Vec<TokenRecord>> {
    let matches: Box<dyn Fn(&TokenRecord) -> bool> = match (subject, sha256) {
        (Some(subject), _) => {
            let subject = subject.to_owned();
            Box::new(move |r: &TokenRecord| r.subject == subject)
        }
        (None, Some(prefix)) => {
            let prefix = prefix.trim().to_ascii_lowercase();
            ensure!(
                prefix.len() >= MIN_HASH_PREFIX && prefix.chars().all(|c| c.is_ascii_hexdigit()),
                "--sha256 {prefix:?}: give at least {MIN_HASH_PREFIX} hex digits of the hash, as `remaudit token list` shows"
            );
            let hits = records
                .iter()
                .filter(|r| r.sha256.starts_with(&prefix))
                .count();
            ensure!(
                hits <= 1,
                "--sha256 {prefix}: {hits} tokens have a hash starting so; give more digits"
            );
            Box::new(move |r: &TokenRecord| r.sha256.starts_with(&prefix))
        }
        (None, None) => bail!("give --subject or --sha256"),
    };
    let (removed, kept): (Vec<_>, Vec<_>) = records.drain(..).partition(|r| matches(r));
    *records = kept;
    ensure!(
        !removed.is_empty(),
        "no token matches: nothing was revoked (see `remaudit token list`)"
    );
    Ok(removed)
}

/// The first 12 hex digits of a hash, as listed.
fn short(sha256: &str) -> &str {
    sha256.get(..12).unwrap_or(sha256)
}

fn list(records: &[TokenRecord], out: &mut impl std::io::Write) -> std::io::Result<()> {
    let now = Utc::now();
    writeln!(
        out,
        "{:<12}  {:<6}  {:<20}  {:<20}  {:<7}  SUBJECT",
        "SHA256", "ROLE", "CREATED", "EXPIRES", "STATE"
    )?;
    for r in records {
        let time = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
        writeln!(
            out,
            "{:<12}  {:<6}  {:<20}  {:<20}  {:<7}  {}",
            short(&r.sha256),
            r.role,
            time(r.created),
            r.expires.map_or_else(|| "never".to_owned(), time),
            if r.expired(now) { "expired" } else { "active" },
            r.subject
        )?;
    }
    Ok(())
}

/// Reads the tokens file (empty when it does not exist), lets `change` edit
/// its records, and replaces the file atomically. A lock file beside it keeps
/// two edits from losing each other's tokens; a file with any fault is left
/// untouched.
fn edit(
    path: &Path,
    change: impl FnOnce(&mut Vec<TokenRecord>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let lock_path = {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".lock");
        dir.join(name)
    };
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open the lock file {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    let existing = match std::fs::metadata(path) {
        Ok(meta) => Some(meta.permissions()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut records = if existing.is_some() {
        tokens::read(path)?
    } else {
        Vec::new()
    };
    change(&mut records)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write a file in {}", dir.display()))?;
    tmp.write_all(tokens::render(&records).as_bytes())?;
    tmp.as_file().sync_all()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        // Hashes are not secrets, but who may use the service is nobody
        // else's business: a new file is the owner's alone.
        let permissions = existing.unwrap_or_else(|| std::fs::Permissions::from_mode(0o600));
        std::fs::set_permissions(tmp.path(), permissions)?;
    }
    tmp.persist(path)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(subject: &str, sha: char) -> TokenRecord {
        TokenRecord {
            sha256: std::iter::repeat_n(sha, 64).collect(),
            subject: subject.to_owned(),
            role: Role::Reader,
            created: Utc::now(),
            expires: None,
        }
    }

    #[test]
    fn revoke_by_subject_removes_every_token_of_it() {
        let mut records = vec![record("a", 'a'), record("b", 'b'), record("a", 'c')];
        let removed = revoke(&mut records, Some("a"), None).unwrap();
        assert_eq!(removed.len(), 2);
        assert!(removed.iter().all(|r| r.subject == "a"));
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].subject, "b");
    }

    #[test]
    fn revoke_by_hash_needs_a_long_unique_prefix() {
        let mut records = vec![record("a", 'a'), record("b", 'b')];
        let short = revoke(&mut records, None, Some("aaaa")).unwrap_err();
        assert!(
            short.to_string().contains("at least 8 hex digits"),
            "{short}"
        );
        let none = revoke(&mut records, None, Some("cccccccc")).unwrap_err();
        assert!(none.to_string().contains("no token matches"), "{none}");
        let removed = revoke(&mut records, None, Some("AAAAAAAA")).unwrap();
        assert_eq!(removed[0].subject, "a");
        assert_eq!(records.len(), 1);
    }

    #[test]
    fn the_auth_table_refuses_contradictions_and_unknown_keys() {
        let parse = |text: &str| toml::from_str::<AuthSettings>(text);
        let admin = parse("anonymous_role = \"admin\"")
            .expect("parses")
            .check()
            .unwrap_err();
        assert!(
            admin.to_string().contains("only be given the writer role"),
            "{admin}"
        );
        let both = parse("insecure_no_auth = true\ntokens_file = \"/t\"")
            .expect("parses")
            .check()
            .unwrap_err();
        assert!(both.to_string().contains("choose one"), "{both}");
        let no_audience = parse("[kubernetes]\nenabled = true\naudiences = []")
            .expect("parses")
            .check()
            .unwrap_err();
        assert!(
            no_audience.to_string().contains("at least one audience"),
            "{no_audience}"
        );
        assert!(
            parse("token_file = \"/t\"").is_err(),
            "a misspelt key is refused"
        );
        assert!(parse("").expect("parses").check().is_ok());
    }

    #[test]
    fn anonymous_role_is_writer_or_nothing() {
        assert_eq!(parse_anonymous_role("writer"), Ok(Role::Writer));
        assert!(
            parse_anonymous_role("reader")
                .unwrap_err()
                .contains("only be given the writer role")
        );
        assert!(
            parse_anonymous_role("root")
                .unwrap_err()
                .contains("unknown role")
        );
    }
}
