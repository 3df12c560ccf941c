//! Bearer tokens from a file: each `[[token]]` table holds the SHA-256 of a
//! token (never the token), its subject, role, creation time and optional
//! expiry. The file is polled for changes; a version that does not parse is
//! logged and ignored, and the last good set stays in force.
//!
//! ```toml
//! [[token]]
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! subject = "orchestrator"
//! role = "writer"
//! created = "2026-12-02T21:00:00Z"
//! expires = "2027-12-02T21:00:00Z"   # optional
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use rand::RngCore as _;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;

use super::{Authenticator, Credential, Decision, DenyReason, Role};

/// Prefix of every token `remaudit token create` makes.
pub const TOKEN_PREFIX: &str = "rmt_";

/// Name of the counter of reloads, labelled `outcome` (`reloaded`, `failed`).
pub const RELOAD_TOTAL: &str = "remaudit_auth_tokens_reload_total";

/// How often the file is checked for new content.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Longest subject a token may carry.
pub const MAX_SUBJECT_CHARS: usize = 128;

/// A new random token: `rmt_` and 43 base64url characters (32 random bytes).
#[must_use]
pub fn generate_token() -> String {
    let mut bytes = [0_u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The lowercase hex SHA-256 of a token, as a tokens file stores it.
#[must_use]
pub fn hash_token(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Checks a subject: 1 to 128 characters among letters, digits and
/// `. _ - : @ /` (room for `system:serviceaccount:ns:name` and e-mail
/// addresses; nothing that could forge a log line).
///
/// # Errors
/// A message naming what is wrong.
pub fn check_subject(subject: &str) -> Result<(), String> {
    if subject.is_empty() {
        return Err("the subject is empty".to_owned());
    }
    if subject.chars().count() > MAX_SUBJECT_CHARS {
        return Err(format!(
            "the subject is longer than {MAX_SUBJECT_CHARS} characters"
        ));
    }
    if let Some(c) = subject
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@' | '/')))
    {
        return Err(format!(
            "the subject {subject:?} holds {c:?}: use letters, digits and . _ - : @ /"
        ));
    }
    Ok(())
}

/// One token of a tokens file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Lowercase hex SHA-256 of the token.
    pub sha256: String,
    /// Who holds it.
    pub subject: String,
    /// What it may do.
    pub role: Role,
    /// When it was made.
    pub created: DateTime<Utc>,
    /// When it stops working, if ever.
    pub expires: Option<DateTime<Utc>>,
}

impl TokenRecord {
    /// Whether it has expired at `now`.
    #[must_use]
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }

    /// The record as a `[[token]]` table.
    #[must_use]
    pub fn to_toml(&self) -> String {
        let mut out = String::from("[[token]]\n");
        let _ = writeln!(out, "sha256 = \"{}\"", self.sha256);
        // Subjects are checked to hold no quote or backslash.
        let _ = writeln!(out, "subject = \"{}\"", self.subject);
        let _ = writeln!(out, "role = \"{}\"", self.role);
        let _ = writeln!(
            out,
            "created = \"{}\"",
            self.created.to_rfc3339_opts(SecondsFormat::Secs, true)
        );
        if let Some(expires) = self.expires {
            let _ = writeln!(
                out,
                "expires = \"{}\"",
                expires.to_rfc3339_opts(SecondsFormat::Secs, true)
            );
        }
        out
    }
}

/// Renders a whole tokens file.
#[must_use]
pub fn render(records: &[TokenRecord]) -> String {
    let mut out = String::from(
        "# remaudit tokens: SHA-256 hashes only. Managed by `remaudit token create | revoke`.\n",
    );
    for r in records {
        out.push('\n');
        out.push_str(&r.to_toml());
    }
    out
}

/// Why a tokens file was refused: the file, the line, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokensFileError {
    /// The file.
    pub path: PathBuf,
    /// The line (1-based), when the fault has one.
    pub line: Option<usize>,
    /// What is wrong and what to do.
    pub message: String,
}

impl std::fmt::Display for TokensFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(
                f,
                "tokens file {}, line {line}: {}",
                self.path.display(),
                self.message
            ),
            None => write!(f, "tokens file {}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for TokensFileError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileShape {
    #[serde(default)]
    token: Vec<FileToken>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToken {
    sha256: toml::Spanned<String>,
    subject: toml::Spanned<String>,
    role: toml::Spanned<String>,
    created: toml::Spanned<String>,
    expires: Option<toml::Spanned<String>>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset.min(text.len()))
        .unwrap_or(text)
        .matches('\n')
        .count()
        + 1
}

fn timestamp(
    text: &str,
    field: &str,
    value: &toml::Spanned<String>,
) -> Result<DateTime<Utc>, (usize, String)> {
    DateTime::parse_from_rfc3339(value.get_ref())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            (
                line_of(text, value.span().start),
                format!(
                    "{field} = {:?} is not an RFC 3339 time ({e}); write it as 2026-12-02T21:00:00Z",
                    value.get_ref()
                ),
            )
        })
}

/// Parses and checks the text of a tokens file: every hash 64 hex digits and
/// used once, every subject well-formed, every role known, every time RFC 3339.
///
/// # Errors
/// The first fault, with its line.
pub fn parse(path: &Path, text: &str) -> Result<Vec<TokenRecord>, TokensFileError> {
    let fail = |line: Option<usize>, message: String| TokensFileError {
        path: path.to_owned(),
        line,
        message,
    };
    let shape: FileShape = toml::from_str(text).map_err(|e| {
        fail(
            e.span().map(|s| line_of(text, s.start)),
            e.message().trim_end().to_owned(),
        )
    })?;
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut records = Vec::with_capacity(shape.token.len());
    for t in shape.token {
        let at = |s: &toml::Spanned<String>| line_of(text, s.span().start);
        let sha = t.sha256.get_ref().to_ascii_lowercase();
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(fail(
                Some(at(&t.sha256)),
                format!(
                    "sha256 = {:?} is not 64 hex digits: store the SHA-256 of the token, never the token",
                    t.sha256.get_ref()
                ),
            ));
        }
        let line = at(&t.sha256);
        if let Some(first) = seen.insert(sha.clone(), line) {
            return Err(fail(
                Some(line),
                format!("this sha256 is already the token of line {first}: each token once"),
            ));
        }
        check_subject(t.subject.get_ref()).map_err(|m| fail(Some(at(&t.subject)), m))?;
        let role: Role = t
            .role
            .get_ref()
            .parse()
            .map_err(|m| fail(Some(at(&t.role)), m))?;
        let created = timestamp(text, "created", &t.created).map_err(|(l, m)| fail(Some(l), m))?;
        let expires = t
            .expires
            .as_ref()
            .map(|e| timestamp(text, "expires", e))
            .transpose()
            .map_err(|(l, m)| fail(Some(l), m))?;
        records.push(TokenRecord {
            sha256: sha,
            subject: t.subject.into_inner(),
            role,
            created,
            expires,
        });
    }
    Ok(records)
}

/// Reads and parses a tokens file.
///
/// # Errors
/// When it cannot be read or is refused by [`parse`].
pub fn read(path: &Path) -> Result<Vec<TokenRecord>, TokensFileError> {
    let text = std::fs::read_to_string(path).map_err(|e| TokensFileError {
        path: path.to_owned(),
        line: None,
        message: format!("cannot read it ({e}); create it with `remaudit token create`"),
    })?;
    parse(path, &text)
}

type Index = HashMap<String, TokenRecord>;

fn index(records: Vec<TokenRecord>) -> Index {
    records.into_iter().map(|r| (r.sha256.clone(), r)).collect()
}

/// The tokens-file authenticator: bearer tokens looked up by their hash.
pub struct TokensFile {
    path: PathBuf,
    tokens: RwLock<Arc<Index>>,
    /// The content last read, good or bad: a change is acted on once.
    last_text: RwLock<String>,
}

impl std::fmt::Debug for TokensFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokensFile")
            .field("path", &self.path)
            .field("tokens", &self.len())
            .finish_non_exhaustive()
    }
}

impl TokensFile {
    /// Loads the file; start-up refuses a file with any fault.
    ///
    /// # Errors
    /// When the file cannot be read or has a fault (a duplicate hash, an
    /// unknown role, a bad time, a malformed subject), naming the line.
    pub fn load(path: &Path) -> Result<Arc<Self>, TokensFileError> {
        let text = std::fs::read_to_string(path).map_err(|e| TokensFileError {
            path: path.to_owned(),
            line: None,
            message: format!("cannot read it ({e}); create it with `remaudit token create`"),
        })?;
        let records = parse(path, &text)?;
        Ok(Arc::new(Self {
            path: path.to_owned(),
            tokens: RwLock::new(Arc::new(index(records))),
            last_text: RwLock::new(text),
        }))
    }

    /// The file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many tokens are in force.
    #[must_use]
    pub fn len(&self) -> usize {
        self.current().len()
    }

    /// Whether no token is in force.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn current(&self) -> Arc<Index> {
        self.tokens
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Reads the file again when its content changed: a good version
    /// replaces the tokens; a bad or unreadable one is logged (file and
    /// line) and counted, and the tokens stay as they were.
    pub fn reload(&self) {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) => {
                // Logged once per change of content: an empty marker.
                let marker = format!("\0unreadable: {}", e.kind());
                if self.swap_text(marker) {
                    tracing::error!(file = %self.path.display(), error = %e, "cannot read the tokens file; the tokens loaded before stay in force");
                    metrics::counter!(RELOAD_TOTAL, "outcome" => "failed").increment(1);
                }
                return;
            }
        };
        if !self.swap_text(text.clone()) {
            return;
        }
        match parse(&self.path, &text) {
            Ok(records) => {
                let count = records.len();
                *self
                    .tokens
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(index(records));
                tracing::info!(file = %self.path.display(), tokens = count, "tokens file reloaded");
                metrics::counter!(RELOAD_TOTAL, "outcome" => "reloaded").increment(1);
            }
            Err(e) => {
                tracing::error!(file = %e.path.display(), line = e.line, error = %e.message, "tokens file refused; the tokens loaded before stay in force");
                metrics::counter!(RELOAD_TOTAL, "outcome" => "failed").increment(1);
            }
        }
    }

    /// Records `text` as the last content seen; whether it differs.
    fn swap_text(&self, text: String) -> bool {
        let mut last = self
            .last_text
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *last == text {
            return false;
        }
        *last = text;
        true
    }

    /// Polls the file every `every` (production: [`POLL_INTERVAL`]) until
    /// `shutdown` is cancelled.
    pub fn spawn_reload(
        self: &Arc<Self>,
        every: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        crate::poll::spawn_polling(every, shutdown, move || this.reload())
    }

    /// Decides for one token at `now`.
    #[must_use]
    pub fn decide_at(&self, token: &str, needed: Role, now: DateTime<Utc>) -> Decision {
        let tokens = self.current();
        let Some(record) = tokens.get(&hash_token(token)) else {
            return Decision::NotMine;
        };
        if record.expired(now) {
            Decision::Unauthenticated {
                reason: DenyReason::Expired,
            }
        } else if record.role.grants(needed) {
            Decision::Allowed {
                subject: record.subject.clone(),
            }
        } else {
            Decision::Forbidden {
                subject: record.subject.clone(),
            }
        }
    }
}

#[async_trait]
impl Authenticator for TokensFile {
    async fn decide(&self, credential: Credential<'_>, needed: Role) -> Decision {
        match credential {
            Credential::Bearer(token) => self.decide_at(token, needed, Utc::now()),
            Credential::ClientCertificate(_) => Decision::NotMine,
        }
    }

    fn name(&self) -> &'static str {
        "tokens-file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> Result<Vec<TokenRecord>, TokensFileError> {
        parse(Path::new("t.toml"), text)
    }

    const H1: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn tokens_have_the_documented_shape() {
        let t = generate_token();
        assert!(t.starts_with("rmt_"), "{t}");
        assert_eq!(t.len(), 4 + 43);
        assert!(
            t[4..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(generate_token(), t);
        assert_eq!(hash_token("test"), H1);
    }

    #[test]
    fn a_rendered_file_parses_back() {
        let r = TokenRecord {
            sha256: H1.to_owned(),
            subject: "system:serviceaccount:kubernaut:orchestrator".to_owned(),
            role: Role::Writer,
            created: DateTime::parse_from_rfc3339("2026-12-02T21:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
            expires: None,
        };
        assert_eq!(file(&render(std::slice::from_ref(&r))).unwrap(), vec![r]);
        assert_eq!(file("").unwrap(), vec![]);
    }

    #[test]
    fn faults_name_their_line() {
        let dup = format!(
            "[[token]]\nsha256 = \"{H1}\"\nsubject = \"a\"\nrole = \"writer\"\ncreated = \"2026-01-01T00:00:00Z\"\n\n[[token]]\nsha256 = \"{H1}\"\nsubject = \"b\"\nrole = \"reader\"\ncreated = \"2026-01-01T00:00:00Z\"\n"
        );
        let e = file(&dup).unwrap_err();
        assert_eq!(e.line, Some(8), "{e}");
        assert!(e.to_string().contains("line 2"), "{e}");

        let role = format!(
            "[[token]]\nsha256 = \"{H1}\"\nsubject = \"a\"\nrole = \"root\"\ncreated = \"2026-01-01T00:00:00Z\"\n"
        );
        let e = file(&role).unwrap_err();
        assert_eq!(e.line, Some(4));
        assert!(e.message.contains("unknown role"), "{e}");

        let date = format!(
            "[[token]]\nsha256 = \"{H1}\"\nsubject = \"a\"\nrole = \"admin\"\ncreated = \"2026-01-01T00:00:00Z\"\nexpires = \"tomorrow\"\n"
        );
        let e = file(&date).unwrap_err();
        assert_eq!(e.line, Some(6));
        assert!(e.message.contains("RFC 3339"), "{e}");

        let e = file("[[token]]\nsha256 = \"abc\"\n").unwrap_err();
        assert!(e.line.is_some(), "{e}");
        let e = file(&format!(
            "[[token]]\nsha256 = \"{H1}\"\nsubject = \"a b\"\nrole = \"admin\"\ncreated = \"2026-01-01T00:00:00Z\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.line, Some(3));
    }

    #[test]
    fn subjects_are_checked() {
        assert!(check_subject("orchestrator").is_ok());
        assert!(check_subject("ops@example.com").is_ok());
        for bad in ["", "a b", "a\"b", "a\nb", &"x".repeat(129)] {
            assert!(check_subject(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn decisions_follow_role_and_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let now = Utc::now();
        let records = [
            ("w", Role::Writer, None),
            ("a", Role::Admin, None),
            (
                "old",
                Role::Reader,
                Some(now - chrono::Duration::minutes(1)),
            ),
        ]
        .map(|(token, role, expires)| TokenRecord {
            sha256: hash_token(token),
            subject: format!("s-{token}"),
            role,
            created: now,
            expires,
        });
        std::fs::write(&path, render(&records)).unwrap();
        let tokens = TokensFile::load(&path).unwrap();
        assert_eq!(
            tokens.decide_at("w", Role::Writer, now),
            Decision::Allowed {
                subject: "s-w".into()
            }
        );
        assert_eq!(
            tokens.decide_at("w", Role::Reader, now),
            Decision::Forbidden {
                subject: "s-w".into()
            }
        );
        assert_eq!(
            tokens.decide_at("a", Role::Reader, now),
            Decision::Allowed {
                subject: "s-a".into()
            }
        );
        assert_eq!(
            tokens.decide_at("old", Role::Reader, now),
            Decision::Unauthenticated {
                reason: DenyReason::Expired
            }
        );
        assert_eq!(
            tokens.decide_at("nope", Role::Reader, now),
            Decision::NotMine
        );

        // A bad version keeps the good set; a good one replaces it.
        std::fs::write(&path, "[[token]]\nsha256 = 1\n").unwrap();
        tokens.reload();
        assert_eq!(tokens.len(), 3);
        std::fs::write(&path, render(&records[..1])).unwrap();
        tokens.reload();
        assert_eq!(tokens.len(), 1);
        assert_eq!(tokens.decide_at("a", Role::Reader, now), Decision::NotMine);
    }
}
