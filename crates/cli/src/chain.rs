//! `remaudit verify` and `remaudit chain-key`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::ArgMatches;
use remaudit_model::chain::{ChainKey, KEY_BYTES, KeyRing};
use serde::{Deserialize, Serialize};

use crate::settings::layer;

/// The chain flag of `serve`, `retention run` and `retention verify`.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Tamper evidence")]
pub struct ChainArgs {
    /// Chain key file (written by `remaudit chain-key create`). `serve` signs
    /// every stored event with its newest key and chains it to the previous
    /// event of its remediation (without it, `serve` runs unchained);
    /// `retention run` signs each archive manifest; `retention verify` checks
    /// those signatures and the archived chains.
    #[arg(long, env = "REMAUDIT_CHAIN_KEY_FILE")]
    chain_key_file: Option<PathBuf>,
}

/// `serve`'s own check of recent chains.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Tamper evidence")]
pub struct ChainCheckArgs {
    /// With a chain key, seconds between the service's own checks of the
    /// chains of remediations started in the last 25 hours (one also runs at
    /// start-up); breaks are logged and counted in
    /// `remaudit_chain_breaks_found_total`. 0 turns the check off.
    #[arg(long, env = "REMAUDIT_CHAIN_VERIFY_INTERVAL_SECS", default_value_t = ChainSettings::default().verify_interval_secs)]
    chain_verify_interval_secs: u64,
}

/// How far back the service's own chain check looks: a day, and an hour
/// for the check before it that may have run late.
pub const CHAIN_CHECK_WINDOW_HOURS: i64 = 25;

/// The `[chain]` table of a settings file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChainSettings {
    /// The chain key file; unset runs unchained.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Seconds between `serve`'s own checks of recent chains; 0 turns them off.
    pub verify_interval_secs: u64,
}

impl Default for ChainSettings {
    fn default() -> Self {
        Self {
            key_file: None,
            verify_interval_secs: 3600,
        }
    }
}

impl ChainSettings {
    /// Layers the flag and environment variable over the file's value.
    pub fn layer(&mut self, args: &ChainArgs, m: &ArgMatches) {
        layer!(m, args, {
            chain_key_file => self.key_file;
        });
    }

    /// Layers `serve`'s check interval over the file's value.
    pub fn layer_check(&mut self, args: &ChainCheckArgs, m: &ArgMatches) {
        layer!(m, args, {
            chain_verify_interval_secs => self.verify_interval_secs;
        });
    }

    /// The key ring `serve` signs with, read once at start; `None` unchained.
    ///
    /// # Errors
    /// When the key file cannot be read or holds no valid key.
    pub fn ring(&self) -> anyhow::Result<Option<Arc<KeyRing>>> {
        self.key_file
            .as_deref()
            .map(|path| read_ring(path).map(Arc::new))
            .transpose()
    }
}

/// Reads a key file.
fn read_ring(path: &Path) -> anyhow::Result<KeyRing> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the chain key file {}: create one with `remaudit chain-key create --out FILE`",
            path.display()
        )
    })?;
    KeyRing::parse(&text).with_context(|| path.display().to_string())
}

/// `remaudit chain-key`.
#[derive(Debug, clap::Args)]
pub struct ChainKeyArgs {
    #[command(subcommand)]
    command: ChainKeyCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ChainKeyCommand {
    /// Write a new key to FILE (created with mode 0600, or added to it, so
    /// that keys rotate: the newest signs, all verify). Prints the key id,
    /// never the key.
    Create {
        /// The key file.
        #[arg(long)]
        out: PathBuf,
        /// The new key's id; default `k<UTC time>-<random>`.
        #[arg(long)]
        id: Option<String>,
    },
}

/// Runs `remaudit chain-key`.
///
/// # Errors
/// When the file cannot be read, is damaged, or cannot be replaced.
pub fn run_key(args: ChainKeyArgs) -> anyhow::Result<u8> {
    let ChainKeyCommand::Create { out, id } = args.command;
    let id = id.unwrap_or_else(|| {
        format!(
            "k{}-{:04x}",
            Utc::now().format("%Y%m%dT%H%M%SZ"),
            rand::random::<u16>()
        )
    });
    let key = ChainKey::new(id, rand::random::<[u8; KEY_BYTES]>())?;
    let id = key.id().to_owned();
    let total = add_key(&out, key)?;
    println!("{id}");
    eprintln!(
        "chain key {id} written to {} ({total} key(s); {id} signs new events)",
        out.display()
    );
    Ok(0)
}

/// Adds `key` to the file at `path` (creating it), replacing the file
/// atomically under a lock file beside it; the number of keys it then holds.
fn add_key(path: &Path, key: ChainKey) -> anyhow::Result<usize> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut lock_name = path.file_name().unwrap_or_default().to_os_string();
    lock_name.push(".lock");
    let lock_path = dir.join(lock_name);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open the lock file {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    let ring = match std::fs::read_to_string(path) {
        Ok(text) => {
            let mut ring = KeyRing::parse(&text).with_context(|| {
                format!(
                    "{} is not a chain key file; nothing was changed",
                    path.display()
                )
            })?;
            ring.push(key)?;
            ring
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => KeyRing::single(key),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write a file in {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        // Before any secret is written: the key file is the owner's alone.
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o600))?;
    }
    tmp.write_all(ring.to_file_text().as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(ring.ids().count())
}

/// `remaudit verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The database to verify (`postgres://…` or `sqlite://…`).
    #[arg(long, env = "REMAUDIT_DATABASE_URL")]
    database_url: String,
    /// The chain key file the server signs with (every key in it verifies).
    #[arg(long, env = "REMAUDIT_CHAIN_KEY_FILE")]
    chain_key_file: PathBuf,
    /// Check remediations started at or after this time (RFC 3339); default: all.
    #[arg(long, value_parser = parse_time)]
    since: Option<DateTime<Utc>>,
    /// Check remediations started before this time (RFC 3339); default: all.
    #[arg(long, value_parser = parse_time)]
    until: Option<DateTime<Utc>>,
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("must be an RFC 3339 time such as 2026-01-02T03:04:05Z ({e})"))
}

/// Exit code of `verify` when a link is broken.
const BROKEN: u8 = 1;
/// Exit code of `verify` on a usage or IO error.
const UNUSABLE: u8 = 2;

/// Runs `remaudit verify`: one line per broken link on standard output,
/// a summary on standard error; exits 0 when every chain is whole, 1 when a
/// link is broken, 2 when the check could not run.
pub async fn run_verify(args: VerifyArgs) -> u8 {
    match verify(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("remaudit verify: {e:#}");
            UNUSABLE
        }
    }
}

async fn verify(args: VerifyArgs) -> anyhow::Result<u8> {
    let ring = read_ring(&args.chain_key_file)?;
    let since = args.since.unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    let until = args
        .until
        .unwrap_or_else(|| Utc::now() + chrono::TimeDelta::days(3650));
    anyhow::ensure!(
        since < until,
        "--since {since} must be before --until {until}"
    );
    let store =
        remaudit_store::connect(&args.database_url, remaudit_store::PoolSettings::default())
            .await
            .with_context(|| {
                format!(
                    "cannot open the database {}",
                    remaudit_store::redact(&args.database_url)
                )
            })?;
    let (mut remediations, mut verified, mut unchained, mut broken) = (0, 0, 0, 0);
    let mut after = None;
    let mut out = std::io::stdout().lock();
    loop {
        let page = remaudit_store::verify_page(
            store.as_ref(),
            &ring,
            since,
            until,
            after.as_ref(),
            remaudit_store::chain::MAX_VERIFY_PAGE,
        )
        .await
        .context("cannot read the chains")?;
        remediations += page.remediations;
        verified += page.verified;
        unchained += page.unchained;
        broken += page.breaks.len();
        for b in &page.breaks {
            writeln!(out, "{b}")?;
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    store.close().await;
    eprintln!(
        "{remediations} remediation(s), {verified} event(s) verified, {unchained} unchained, {broken} broken link(s)"
    );
    Ok(if broken == 0 { 0 } else { BROKEN })
}
