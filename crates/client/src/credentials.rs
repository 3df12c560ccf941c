//! What a client presents to the server: a bearer token re-read when it rotates, a CA bundle, a client certificate.
//!
//! [`CredentialSettings`] says where each one comes from (the CLI's flags, or
//! the `[publisher.credentials]` table of a settings file);
//! [`CredentialSettings::load`] reads them into [`Credentials`], which builds
//! the HTTP client and hands the token to the [`ApiClient`].
//!
//! The token is read from a file, never from a flag or a variable, so it
//! stays out of process listings and shell history, and so that a projected
//! ServiceAccount token that the kubelet rotates is picked up: the file is
//! read again at most every [`TOKEN_RECHECK`], and at once after a 401. The
//! token is held as a [`SecretString`] and never logged; errors name the
//! file, never its content.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use reqwest::header::HeaderValue;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

use crate::ApiClient;

/// Where a projected ServiceAccount token for remaudit is mounted in a pod
/// (audience `remaudit`, the audience the server's `TokenReview` asks for by
/// default).
pub const POD_TOKEN_PATH: &str = "/var/run/secrets/remaudit/token";

/// How long a token read from its file is used before the file is read
/// again: short against the kubelet's rotation (at 80 % of a token's
/// lifetime, at least ten minutes), long against a read per request.
pub const TOKEN_RECHECK: Duration = Duration::from_secs(5);

/// Why credentials cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The token file cannot be read.
    #[error(
        "cannot read the token file {} ({error}); give a readable file with --token-file / REMAUDIT_TOKEN_FILE, or --no-token to send none",
        path.display()
    )]
    TokenUnreadable {
        /// The file.
        path: PathBuf,
        /// What the system said (in the message, so that logs carry it).
        error: std::io::Error,
    },
    /// The token file holds nothing but blanks.
    #[error(
        "the token file {} is empty; write the token into it (remaudit token create prints one)",
        path.display()
    )]
    TokenEmpty {
        /// The file.
        path: PathBuf,
    },
    /// The token file holds more than one token, or characters an HTTP header cannot carry.
    #[error(
        "the token file {} does not hold one token: it has blanks inside it or characters an HTTP header cannot carry",
        path.display()
    )]
    TokenMalformed {
        /// The file.
        path: PathBuf,
    },
    /// A certificate or key file cannot be read.
    #[error("cannot read the {what} {}: {error}", path.display())]
    FileUnreadable {
        /// Which file: `CA file`, `client certificate`, `client key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the system said (in the message, so that logs carry it).
        error: std::io::Error,
    },
    /// A certificate or key file holds no usable PEM.
    #[error("the {what} {} is not usable: {reason}", path.display())]
    BadPem {
        /// Which file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The settings contradict each other.
    #[error("{0}")]
    Conflict(&'static str),
    /// The HTTP client refused the TLS material (a key that does not match its certificate, say).
    #[error("cannot set up TLS with the given CA file and client certificate")]
    Client(#[source] reqwest::Error),
}

/// Where a client's credentials come from. Every field is optional; with
/// none, nothing is sent and the system's roots verify the server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CredentialSettings {
    /// File holding the bearer token (`--token-file` / `REMAUDIT_TOKEN_FILE`).
    pub token_file: Option<PathBuf>,
    /// Send no token, even in a pod where [`POD_TOKEN_PATH`] exists (`--no-token`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_token: bool,
    /// PEM bundle of the CAs that may sign the server's certificate; it
    /// replaces the system's roots (`--ca-file` / `REMAUDIT_CA_FILE`).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for mutual TLS (`--client-cert` / `REMAUDIT_CLIENT_CERT`).
    pub client_cert: Option<PathBuf>,
    /// PEM private key of the client certificate (`--client-key` / `REMAUDIT_CLIENT_KEY`).
    pub client_key: Option<PathBuf>,
}

impl CredentialSettings {
    /// Whether nothing is set (then a settings file need not show them).
    #[must_use]
    pub fn is_unset(&self) -> bool {
        *self == Self::default()
    }

    /// These settings with the token a pod has by default: when no token
    /// file is given, `--no-token` is not set, the process runs in
    /// Kubernetes (`in_kubernetes`, which the binary reads from
    /// `KUBERNETES_SERVICE_HOST`) and [`POD_TOKEN_PATH`] exists, that file.
    ///
    /// A projected token of its own, rather than the pod's default
    /// ServiceAccount token, because it is bound to the audience `remaudit`:
    /// a token stolen from the audit service cannot call the Kubernetes API,
    /// and the API server's token cannot call remaudit.
    #[must_use]
    pub fn with_pod_default(self, in_kubernetes: bool) -> Self {
        self.with_default_token(in_kubernetes, Path::new(POD_TOKEN_PATH))
    }

    /// [`with_pod_default`](Self::with_pod_default) with the pod's token at `pod_token`.
    #[must_use]
    pub fn with_default_token(mut self, in_kubernetes: bool, pod_token: &Path) -> Self {
        if self.token_file.is_none() && !self.no_token && in_kubernetes && pod_token.is_file() {
            self.token_file = Some(pod_token.to_owned());
        }
        self
    }

    /// Reads the token (once, now) and the certificate files.
    ///
    /// # Errors
    /// A file that cannot be read or holds nothing usable, naming the file;
    /// a token file given with `no_token`; a client certificate without its
    /// key or a key without its certificate.
    pub fn load(&self) -> Result<Credentials, CredentialError> {
        if self.no_token && self.token_file.is_some() {
            return Err(CredentialError::Conflict(
                "a token file and --no-token are both given: keep one (--token-file / REMAUDIT_TOKEN_FILE, or --no-token)",
            ));
        }
        let token = match (&self.token_file, self.no_token) {
            (Some(path), false) => Some(TokenFile::open(path)?),
            _ => None,
        };
        let roots = match &self.ca_file {
            Some(path) => {
                let pem = read("CA file", path)?;
                let roots = reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| bad_pem("CA file", path, &e))?;
                if roots.is_empty() {
                    return Err(CredentialError::BadPem {
                        what: "CA file",
                        path: path.clone(),
                        reason: "it holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
                    });
                }
                roots
            }
            None => Vec::new(),
        };
        let identity = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                let mut pem = read("client certificate", cert)?;
                if !contains_certificate(&pem) {
                    return Err(CredentialError::BadPem {
                        what: "client certificate",
                        path: cert.clone(),
                        reason: "it holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
                    });
                }
                pem.push(b'\n');
                pem.extend(read("client key", key)?);
                Some(
                    reqwest::Identity::from_pem(&pem)
                        .map_err(|e| bad_pem("client key", key, &e))?,
                )
            }
            (None, None) => None,
            _ => {
                return Err(CredentialError::Conflict(
                    "a client certificate needs its key and a key its certificate: give both --client-cert and --client-key",
                ));
            }
        };
        Ok(Credentials {
            token,
            roots,
            identity,
        })
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, CredentialError> {
    std::fs::read(path).map_err(|error| CredentialError::FileUnreadable {
        what,
        path: path.to_owned(),
        error,
    })
}

fn bad_pem(what: &'static str, path: &Path, e: &reqwest::Error) -> CredentialError {
    // The innermost cause says what is wrong.
    let mut cause: &dyn std::error::Error = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    CredentialError::BadPem {
        what,
        path: path.to_owned(),
        reason: cause.to_string(),
    }
}

fn contains_certificate(pem: &[u8]) -> bool {
    pem.windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
}

/// Credentials read and ready: what [`Credentials::http_client`] and
/// [`Credentials::api_client`] put into every request.
#[derive(Clone, Default)]
pub struct Credentials {
    token: Option<TokenFile>,
    /// The roots that replace the system's; empty for the system's.
    roots: Vec<reqwest::Certificate>,
    identity: Option<reqwest::Identity>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("token", &self.token)
            .field("ca_roots", &self.roots.len())
            .field("client_certificate", &self.identity.is_some())
            .finish()
    }
}

impl Credentials {
    /// No token, the system's roots, no client certificate.
    #[must_use]
    pub fn none() -> Self {
        Self::default()
    }

    /// The token file, when a token is sent.
    #[must_use]
    pub fn token(&self) -> Option<&TokenFile> {
        self.token.as_ref()
    }

    /// Builds `builder` (with its timeouts and so on) into a client that
    /// trusts only the CA file's roots when one was given, and presents the
    /// client certificate when one was given.
    ///
    /// # Errors
    /// When the HTTP client refuses the TLS material.
    pub fn http_client(
        &self,
        builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::Client, CredentialError> {
        let mut builder = builder;
        if !self.roots.is_empty() {
            builder = builder.tls_certs_only(self.roots.iter().cloned());
        }
        if let Some(identity) = &self.identity {
            builder = builder.identity(identity.clone());
        }
        builder.build().map_err(CredentialError::Client)
    }

    /// A typed client of the service at `base_url` over
    /// [`http_client`](Self::http_client), sending the token with every request.
    ///
    /// # Errors
    /// As [`http_client`](Self::http_client).
    pub fn api_client(
        &self,
        base_url: &str,
        builder: reqwest::ClientBuilder,
    ) -> Result<ApiClient, CredentialError> {
        let http = self.http_client(builder)?;
        Ok(ApiClient::with_http(base_url, http).with_token(self.token.clone()))
    }
}

/// A bearer token read from a file, read again when it may have rotated.
/// Clones share one cache.
#[derive(Clone)]
pub struct TokenFile {
    inner: Arc<TokenInner>,
}

struct TokenInner {
    path: PathBuf,
    recheck: Duration,
    state: Mutex<TokenState>,
}

struct TokenState {
    token: SecretString,
    /// Incremented whenever a read finds a different token.
    generation: u64,
    /// When the file was last read successfully.
    read_at: Instant,
}

/// The `Authorization` header of one request, and which version of the
/// token it carries.
#[derive(Clone)]
pub(crate) struct Bearer {
    pub header: HeaderValue,
    pub generation: u64,
}

impl std::fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenFile")
            .field("path", &self.inner.path)
            .field("recheck", &self.inner.recheck)
            .finish_non_exhaustive()
    }
}

impl TokenFile {
    /// Reads the token in `path` now; it is read again when
    /// [`TOKEN_RECHECK`] has passed.
    ///
    /// # Errors
    /// When the file cannot be read, is empty, or does not hold one token.
    pub fn open(path: &Path) -> Result<Self, CredentialError> {
        Self::open_with_recheck(path, TOKEN_RECHECK)
    }

    /// As [`open`](Self::open), reading the file again after `recheck`.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_with_recheck(path: &Path, recheck: Duration) -> Result<Self, CredentialError> {
        let token = read_token(path)?;
        Ok(Self {
            inner: Arc::new(TokenInner {
                path: path.to_owned(),
                recheck,
                state: Mutex::new(TokenState {
                    token,
                    generation: 0,
                    read_at: Instant::now(),
                }),
            }),
        })
    }

    /// The file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// How many times a read found a token different from the one before.
    #[must_use]
    pub fn rotations(&self) -> u64 {
        self.lock().generation
    }

    fn lock(&self) -> MutexGuard<'_, TokenState> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The header to send: the token last read, or the file's content when
    /// the recheck interval has passed.
    ///
    /// # Errors
    /// When the file must be read again and cannot be, or no longer holds one
    /// token; the next call tries again.
    pub(crate) fn bearer(&self) -> Result<Bearer, CredentialError> {
        {
            let st = self.lock();
            if st.read_at.elapsed() < self.inner.recheck {
                return Ok(bearer_of(&st));
            }
        }
        self.reload()
    }

    /// Reads the file now, whatever the interval; the header to send.
    ///
    /// # Errors
    /// As [`bearer`](Self::bearer).
    pub(crate) fn reload(&self) -> Result<Bearer, CredentialError> {
        let token = read_token(&self.inner.path)?;
        let mut st = self.lock();
        if st.token.expose_secret() != token.expose_secret() {
            st.token = token;
            st.generation += 1;
            tracing::info!(file = %self.inner.path.display(), "the token file holds a new token; sending it from now on");
        }
        st.read_at = Instant::now();
        Ok(bearer_of(&st))
    }
}

fn bearer_of(st: &TokenState) -> Bearer {
    let mut header = HeaderValue::from_str(&format!("Bearer {}", st.token.expose_secret()))
        .expect("read_token accepts only header-safe tokens");
    header.set_sensitive(true);
    Bearer {
        header,
        generation: st.generation,
    }
}

/// The token in `path`, without the blanks around it.
fn read_token(path: &Path) -> Result<SecretString, CredentialError> {
    let text = std::fs::read_to_string(path).map_err(|error| CredentialError::TokenUnreadable {
        path: path.to_owned(),
        error,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(CredentialError::TokenEmpty {
            path: path.to_owned(),
        });
    }
    // Visible ASCII only: one token, and nothing a header could be split on.
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(CredentialError::TokenMalformed {
            path: path.to_owned(),
        });
    }
    Ok(SecretString::from(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    fn header(b: &Bearer) -> &str {
        b.header.to_str().expect("ascii")
    }

    #[test]
    fn a_token_is_trimmed_and_sent_as_a_sensitive_bearer_header() {
        let dir = tempfile::tempdir().expect("dir");
        let path = write(dir.path(), "token", "  rmt_abc.DEF-123  \n\n");
        let token = TokenFile::open(&path).expect("token");
        let bearer = token.bearer().expect("bearer");
        assert_eq!(header(&bearer), "Bearer rmt_abc.DEF-123");
        assert!(bearer.header.is_sensitive());
        assert!(!format!("{token:?}").contains("rmt_abc"));
    }

    #[test]
    fn bad_token_files_name_the_file_and_never_the_content() {
        let dir = tempfile::tempdir().expect("dir");
        let missing = dir.path().join("absent");
        let e = TokenFile::open(&missing).expect_err("missing");
        assert!(matches!(e, CredentialError::TokenUnreadable { .. }));
        assert!(
            e.to_string().contains(&missing.display().to_string()),
            "{e}"
        );
        assert!(e.to_string().contains("--token-file"), "{e}");

        let empty = write(dir.path(), "empty", " \n\t\n");
        let e = TokenFile::open(&empty).expect_err("empty");
        assert!(matches!(e, CredentialError::TokenEmpty { .. }), "{e}");
        assert!(e.to_string().contains(&empty.display().to_string()), "{e}");

        let two = write(dir.path(), "two", "secret-one\nsecret-two\n");
        let e = TokenFile::open(&two).expect_err("two lines");
        assert!(matches!(e, CredentialError::TokenMalformed { .. }), "{e}");
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn the_file_is_read_again_after_the_interval_and_at_once_on_reload() {
        let dir = tempfile::tempdir().expect("dir");
        let path = write(dir.path(), "token", "first");
        let slow = TokenFile::open_with_recheck(&path, Duration::from_hours(1)).expect("open");
        let eager = TokenFile::open_with_recheck(&path, Duration::ZERO).expect("open");
        write(dir.path(), "token", "second\n");
        assert_eq!(header(&slow.bearer().expect("cached")), "Bearer first");
        assert_eq!(header(&eager.bearer().expect("reread")), "Bearer second");
        let reloaded = slow.reload().expect("reload");
        assert_eq!(header(&reloaded), "Bearer second");
        assert_eq!((reloaded.generation, slow.rotations()), (1, 1));
        // Reading the same token again is no rotation.
        assert_eq!(slow.reload().expect("reload").generation, 1);
    }

    #[test]
    fn an_unreadable_file_fails_each_read_until_it_is_back() {
        let dir = tempfile::tempdir().expect("dir");
        let path = write(dir.path(), "token", "first");
        let token = TokenFile::open_with_recheck(&path, Duration::ZERO).expect("open");
        std::fs::remove_file(&path).expect("remove");
        assert!(matches!(
            token.bearer(),
            Err(CredentialError::TokenUnreadable { .. })
        ));
        write(dir.path(), "token", "back");
        assert_eq!(header(&token.bearer().expect("back")), "Bearer back");
    }

    #[test]
    fn in_a_pod_the_projected_token_is_the_default() {
        let dir = tempfile::tempdir().expect("dir");
        let pod = write(dir.path(), "token", "projected");
        let absent = dir.path().join("absent");
        let none = CredentialSettings::default();
        assert_eq!(
            none.clone().with_default_token(true, &pod).token_file,
            Some(pod.clone())
        );
        assert_eq!(
            none.clone().with_default_token(false, &pod).token_file,
            None
        );
        assert_eq!(none.with_default_token(true, &absent).token_file, None);
        let off = CredentialSettings {
            no_token: true,
            ..CredentialSettings::default()
        };
        assert_eq!(off.with_default_token(true, &pod).token_file, None);
        let given = CredentialSettings {
            token_file: Some(absent.clone()),
            ..CredentialSettings::default()
        };
        assert_eq!(
            given.with_default_token(true, &pod).token_file,
            Some(absent)
        );
    }

    #[test]
    fn contradictions_and_bad_pem_are_refused_by_name() {
        let dir = tempfile::tempdir().expect("dir");
        let token = write(dir.path(), "token", "t");
        let both = CredentialSettings {
            token_file: Some(token),
            no_token: true,
            ..CredentialSettings::default()
        };
        assert!(matches!(both.load(), Err(CredentialError::Conflict(_))));
        let cert = write(dir.path(), "cert.pem", "not a certificate");
        let half = CredentialSettings {
            client_cert: Some(cert.clone()),
            ..CredentialSettings::default()
        };
        assert!(matches!(half.load(), Err(CredentialError::Conflict(_))));
        let ca = CredentialSettings {
            ca_file: Some(cert.clone()),
            ..CredentialSettings::default()
        };
        let e = ca.load().expect_err("no certificate");
        assert!(
            matches!(
                e,
                CredentialError::BadPem {
                    what: "CA file",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("cert.pem"), "{e}");
        let missing = CredentialSettings {
            ca_file: Some(dir.path().join("absent.pem")),
            ..CredentialSettings::default()
        };
        assert!(matches!(
            missing.load(),
            Err(CredentialError::FileUnreadable {
                what: "CA file",
                ..
            })
        ));
        assert!(
            CredentialSettings::default()
                .load()
                .expect("none")
                .token()
                .is_none()
        );
    }
}
