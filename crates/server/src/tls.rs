//! Serving TLS from certificate and key files.
//!
//! [`TlsSettings`] is the `[tls]` table of `serve`'s settings file; TLS is on
//! when it names both a certificate and a key. [`Tls::load`] reads and checks
//! them (and the client CA, for mutual TLS) once at start-up, refusing with
//! an error that names the file. While serving, the certificate and key are
//! read again every `reload_interval`: a new pair that loads is served to the
//! next handshake without a restart; one that does not (half-written, a key
//! of another certificate) is logged, counted in [`RELOAD_TOTAL`] and the
//! pair served before stays in force.
//!
//! With a client CA, every client certificate is verified against it, and
//! one is **required** unless `client_cert_optional` is set: a client
//! without a certificate is refused during the handshake. The verified
//! certificate's subject reaches the auth layer as a
//! [`ClientCertificate`](crate::auth::ClientCertificate), where
//! [`ClientCertAuthenticator`](crate::auth::client_cert::ClientCertAuthenticator)
//! maps it to a role.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject as _};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use serde::{Deserialize, Serialize};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use x509_cert::Certificate;
use x509_cert::der::Decode as _;
use x509_cert::name::Name;

use crate::auth::Role;

/// Name of the counter of certificate reloads, labelled `outcome`
/// (`reloaded`, `failed`).
pub const RELOAD_TOTAL: &str = "remaudit_tls_reload_total";

/// Name of the counter of TLS handshakes that did not complete, labelled
/// `reason` (`timeout`, `refused`).
pub const HANDSHAKE_FAILED_TOTAL: &str = "remaudit_tls_handshake_failed_total";

/// The `[tls]` table: where the certificate, key and client CA are, and how
/// client certificate subjects map to roles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain, the server's own certificate first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// PEM private key of the certificate (PKCS#8, PKCS#1 or SEC1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// PEM bundle of the CAs client certificates are verified against;
    /// setting it turns mutual TLS on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
    /// With a client CA, let clients without a certificate finish the
    /// handshake (they then need a token); off: they are refused.
    pub client_cert_optional: bool,
    /// Client certificate subject (RFC 4514, as `CN=orchestrator,O=kubernaut`)
    /// to the role it holds.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub client_roles: BTreeMap<String, Role>,
    /// How often the certificate and key files are checked for new content;
    /// zero turns reloading off.
    #[serde(rename = "reload_interval_secs", with = "secs")]
    pub reload_interval: Duration,
    /// Longest a client may take to complete the TLS handshake.
    #[serde(rename = "handshake_timeout_secs", with = "secs")]
    pub handshake_timeout: Duration,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            cert: None,
            key: None,
            client_ca: None,
            client_cert_optional: false,
            client_roles: BTreeMap::new(),
            reload_interval: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

impl TlsSettings {
    /// Whether TLS is asked for (a certificate or a key is set).
    #[must_use]
    pub fn enabled(&self) -> bool {
        self.cert.is_some() || self.key.is_some()
    }

    /// Checks what can be checked without reading the files: the certificate
    /// and key come together, the client settings have a client CA and a TLS
    /// listener to apply to, subjects are RFC 4514 names, the handshake
    /// timeout is not zero.
    ///
    /// # Errors
    /// The first fault, naming the setting and its flag.
    pub fn check(&self) -> Result<(), TlsError> {
        let settings = |message: String| Err(TlsError::Settings(message));
        match (&self.cert, &self.key) {
            (Some(_), None) => {
                return settings(
                    "a certificate without a key: set tls.key / --tls-key / REMAUDIT_TLS_KEY too"
                        .to_owned(),
                );
            }
            (None, Some(_)) => {
                return settings(
                    "a key without a certificate: set tls.cert / --tls-cert / REMAUDIT_TLS_CERT too"
                        .to_owned(),
                );
            }
            _ => {}
        }
        if self.client_ca.is_some() && !self.enabled() {
            return settings(
                "a client CA without TLS: set tls.cert and tls.key (--tls-cert, --tls-key) too"
                    .to_owned(),
            );
        }
        if self.client_ca.is_none() {
            if self.client_cert_optional {
                return settings(
                    "tls.client_cert_optional without a client CA: set tls.client_ca / --tls-client-ca"
                        .to_owned(),
                );
            }
            if !self.client_roles.is_empty() {
                return settings(
                    "tls.client_roles without a client CA: client certificates are only read with tls.client_ca / --tls-client-ca"
                        .to_owned(),
                );
            }
        }
        for subject in self.client_roles.keys() {
            normalize_subject(subject).map_err(TlsError::Settings)?;
        }
        if self.handshake_timeout.is_zero() {
            return settings("tls.handshake_timeout_secs must be at least 1".to_owned());
        }
        Ok(())
    }
}

/// Why TLS could not be set up; each names the file or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The settings contradict each other.
    #[error("TLS settings: {0}")]
    Settings(String),
    /// A file could not be read.
    #[error("cannot read the TLS {what} file {path}: {source}")]
    Read {
        /// `certificate`, `key` or `client CA`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no usable PEM section of the expected kind.
    #[error("the TLS {what} file {path} {problem}")]
    NotPem {
        /// `certificate`, `key` or `client CA`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it and what it should hold.
        problem: String,
    },
    /// The key is not one rustls can sign with.
    #[error("the TLS key file {path} holds a key that cannot be used: {reason}")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The key belongs to another certificate.
    #[error(
        "the TLS key file {key} does not match the certificate in {cert}: give the key the certificate was issued for"
    )]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The client CA bundle cannot be used to verify clients.
    #[error("the TLS client CA file {path} cannot verify clients: {reason}")]
    ClientCa {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// A subject written in settings as the TLS layer writes a certificate's
/// (RFC 4514: most specific attribute first, `,` between them, upper-case
/// attribute names), so that the two compare equal.
///
/// # Errors
/// When `subject` is not an RFC 4514 distinguished name.
pub fn normalize_subject(subject: &str) -> Result<String, String> {
    let name = Name::from_str(subject).map_err(|e| {
        format!(
            "client subject {subject:?} is not an RFC 4514 name ({e}); write it as CN=orchestrator,O=kubernaut"
        )
    })?;
    if name.is_empty() {
        return Err(
            "a client subject is empty; write it as CN=orchestrator,O=kubernaut".to_owned(),
        );
    }
    Ok(name.to_string())
}

/// The subject of a DER certificate as an RFC 4514 string, or `None` when it
/// does not parse.
#[must_use]
pub fn subject_of(der: &[u8]) -> Option<String> {
    Certificate::from_der(der)
        .ok()
        .map(|c| c.tbs_certificate().subject().to_string())
}

/// The serial number of a DER certificate (hex bytes joined by `:`), or
/// `None` when it does not parse.
#[must_use]
pub fn serial_of(der: &[u8]) -> Option<String> {
    Certificate::from_der(der)
        .ok()
        .map(|c| c.tbs_certificate().serial_number().to_string())
}

/// How client certificates are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Not asked for.
    Off,
    /// Asked for and verified; a client without one is refused.
    Required,
    /// Verified when presented; a client without one is served.
    Optional,
}

impl ClientAuth {
    /// For logs.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::Off => "off",
            ClientAuth::Required => "required",
            ClientAuth::Optional => "optional",
        }
    }
}

/// What a reload found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// The files hold what they held at the last look.
    Unchanged,
    /// A new pair is served from now on.
    Reloaded,
    /// The new content was refused (logged and counted); the pair served
    /// before stays in force.
    Refused,
}

/// TLS for the accept loop: the server configuration, the certificate
/// that is reloaded, and the handshake timeout. Cheap to clone.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    certs: Arc<ReloadingCert>,
    client_auth: ClientAuth,
    reload_interval: Duration,
    handshake_timeout: Duration,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.certs.cert)
            .field("key", &self.certs.key)
            .field("client_auth", &self.client_auth)
            .field("reload_interval", &self.reload_interval)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads the certificate, key and client CA of `settings` and builds the
    /// server configuration (TLS 1.2 and 1.3 as the crypto provider offers,
    /// ALPN `http/1.1`). Uses the process's default rustls crypto provider,
    /// or aws-lc-rs when none is installed.
    ///
    /// # Errors
    /// Settings that contradict each other or do not turn TLS on, a file
    /// that is missing or unreadable, holds no PEM section of its kind, a
    /// key of another certificate, a client CA bundle that cannot verify.
    pub fn load(settings: &TlsSettings) -> Result<Self, TlsError> {
        settings.check()?;
        let (Some(cert), Some(key)) = (&settings.cert, &settings.key) else {
            return Err(TlsError::Settings(
                "TLS is off: set tls.cert and tls.key (--tls-cert, --tls-key)".to_owned(),
            ));
        };
        let provider = CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
        let certs = Arc::new(ReloadingCert::load(cert, key, provider.clone())?);
        let (verifier, client_auth) = match &settings.client_ca {
            None => (None, ClientAuth::Off),
            Some(path) => {
                let roots = read_client_ca(path)?;
                let builder =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
                let (builder, auth) = if settings.client_cert_optional {
                    (builder.allow_unauthenticated(), ClientAuth::Optional)
                } else {
                    (builder, ClientAuth::Required)
                };
                let verifier = builder.build().map_err(|e| TlsError::ClientCa {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                (Some(verifier), auth)
            }
        };
        let builder = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| {
                TlsError::Settings(format!("the crypto provider offers no TLS version: {e}"))
            })?;
        let builder = match verifier {
            Some(verifier) => builder.with_client_cert_verifier(verifier),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(certs.clone());
        // The accept loop speaks HTTP/1.1 only.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            certs,
            client_auth,
            reload_interval: settings.reload_interval,
            handshake_timeout: settings.handshake_timeout,
        })
    }

    /// Completes the TLS handshake on `io`.
    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Longest a client may take to complete the handshake.
    #[must_use]
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// Whether client certificates are asked for.
    #[must_use]
    pub fn client_auth(&self) -> ClientAuth {
        self.client_auth
    }

    /// The serial number of the certificate served now.
    #[must_use]
    pub fn serial(&self) -> String {
        let current = self.certs.current();
        current
            .end_entity_cert()
            .ok()
            .and_then(|c| serial_of(c))
            .unwrap_or_default()
    }

    /// Reads the certificate and key files again and serves the new pair
    /// when their content changed and loads.
    #[must_use = "the outcome tells whether the new pair is served"]
    pub fn reload(&self) -> Reload {
        self.certs.reload()
    }

    /// Checks the files every `reload_interval` until `shutdown` is
    /// cancelled; `None` when reloading is off (interval zero).
    #[must_use]
    pub fn spawn_reload(&self, shutdown: CancellationToken) -> Option<tokio::task::JoinHandle<()>> {
        if self.reload_interval.is_zero() {
            return None;
        }
        let certs = self.certs.clone();
        Some(crate::poll::spawn_polling(
            self.reload_interval,
            shutdown,
            move || {
                let _ = certs.reload();
            },
        ))
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn certificates(
    what: &'static str,
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let not_pem = |problem: String| TlsError::NotPem {
        what,
        path: path.to_owned(),
        problem,
    };
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| not_pem(format!("is not valid PEM ({e})")))?;
    if certs.is_empty() {
        return Err(not_pem(
            "holds no PEM certificate: give a file with \"-----BEGIN CERTIFICATE-----\" sections"
                .to_owned(),
        ));
    }
    if let Some(index) = certs.iter().position(|c| Certificate::from_der(c).is_err()) {
        return Err(not_pem(format!(
            "holds a certificate (number {}) that is not X.509 DER inside its PEM",
            index + 1
        )));
    }
    Ok(certs)
}

fn private_key(path: &Path, bytes: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| TlsError::NotPem {
        what: "key",
        path: path.to_owned(),
        problem: match e {
            pem::Error::NoItemsFound => "holds no PEM private key: give a file with a \"-----BEGIN PRIVATE KEY-----\" (PKCS#8), \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\" section".to_owned(),
            other => format!("is not valid PEM ({other})"),
        },
    })
}

fn read_client_ca(path: &Path) -> Result<RootCertStore, TlsError> {
    let bytes = read("client CA", path)?;
    let mut roots = RootCertStore::empty();
    for cert in certificates("client CA", path, &bytes)? {
        roots.add(cert).map_err(|e| TlsError::ClientCa {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// Loads a certificate chain and its key from the bytes of their files.
fn certified_key(
    cert_path: &Path,
    cert: &[u8],
    key_path: &Path,
    key: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = certificates("certificate", cert_path, cert)?;
    let key = private_key(key_path, key)?;
    let signer = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::BadKey {
            path: key_path.to_owned(),
            reason: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signer);
    match certified.keys_match() {
        // Unknown: the provider cannot tell (it does not expose the public key).
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(TlsError::Mismatch {
                cert: cert_path.to_owned(),
                key: key_path.to_owned(),
            });
        }
    }
    warn_if_expired(cert_path, &certified);
    Ok(certified)
}

fn warn_if_expired(path: &Path, certified: &CertifiedKey) {
    let Some(leaf) = certified
        .end_entity_cert()
        .ok()
        .and_then(|c| Certificate::from_der(c).ok())
    else {
        return;
    };
    let not_after = leaf.tbs_certificate().validity().not_after.to_system_time();
    if not_after <= SystemTime::now() {
        tracing::warn!(
            file = %path.display(),
            serial = %leaf.tbs_certificate().serial_number(),
            "the TLS certificate has expired: clients will refuse it; replace the file (it is reloaded)"
        );
    }
}

/// What was last read from the files: a change is acted on once.
#[derive(PartialEq, Eq)]
enum Seen {
    Content { cert: Vec<u8>, key: Vec<u8> },
    Unreadable(String),
}

/// The certificate resolver: the pair loaded last, replaced by [`Self::reload`].
struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    seen: Mutex<Seen>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    fn load(cert: &Path, key: &Path, provider: Arc<CryptoProvider>) -> Result<Self, TlsError> {
        let cert_bytes = read("certificate", cert)?;
        let key_bytes = read("key", key)?;
        let certified = certified_key(cert, &cert_bytes, key, &key_bytes, &provider)?;
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
            current: RwLock::new(Arc::new(certified)),
            seen: Mutex::new(Seen::Content {
                cert: cert_bytes,
                key: key_bytes,
            }),
        })
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Records what the files hold now; whether it differs from the last look.
    fn changed(&self, now: Seen) -> bool {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *seen == now {
            return false;
        }
        *seen = now;
        true
    }

    fn reload(&self) -> Reload {
        let files = read("certificate", &self.cert).and_then(|c| Ok((c, read("key", &self.key)?)));
        let (cert, key) = match files {
            Ok(files) => files,
            Err(e) => {
                if self.changed(Seen::Unreadable(e.to_string())) {
                    tracing::error!(error = %e, "TLS certificate not reloaded; the one loaded before is still served");
                    metrics::counter!(RELOAD_TOTAL, "outcome" => "failed").increment(1);
                    return Reload::Refused;
                }
                return Reload::Unchanged;
            }
        };
        if !self.changed(Seen::Content {
            cert: cert.clone(),
            key: key.clone(),
        }) {
            return Reload::Unchanged;
        }
        match certified_key(&self.cert, &cert, &self.key, &key, &self.provider) {
            Ok(certified) => {
                let serial = certified
                    .end_entity_cert()
                    .ok()
                    .and_then(|c| serial_of(c))
                    .unwrap_or_default();
                *self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(certified);
                tracing::info!(file = %self.cert.display(), %serial, "TLS certificate reloaded");
                metrics::counter!(RELOAD_TOTAL, "outcome" => "reloaded").increment(1);
                Reload::Reloaded
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS certificate not reloaded; the one loaded before is still served");
                metrics::counter!(RELOAD_TOTAL, "outcome" => "failed").increment(1);
                Reload::Refused
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A [`Duration`] as a whole number of seconds, the unit of the `*_secs` keys.
mod secs {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_written_as_certificates_are() {
        assert_eq!(
            normalize_subject("CN=orchestrator,O=kubernaut").unwrap(),
            "CN=orchestrator,O=kubernaut"
        );
        assert_eq!(
            normalize_subject("cn=orchestrator,o=kubernaut").unwrap(),
            "CN=orchestrator,O=kubernaut"
        );
        assert_eq!(normalize_subject("CN=a\\,b,O=x").unwrap(), "CN=a\\,b,O=x");
        assert!(normalize_subject("orchestrator").is_err());
        assert!(normalize_subject("").is_err());
    }

    #[test]
    fn contradicting_settings_are_refused_by_name() {
        let only_cert = TlsSettings {
            cert: Some("c.pem".into()),
            ..TlsSettings::default()
        };
        assert!(
            only_cert
                .check()
                .unwrap_err()
                .to_string()
                .contains("--tls-key")
        );
        let only_key = TlsSettings {
            key: Some("k.pem".into()),
            ..TlsSettings::default()
        };
        assert!(
            only_key
                .check()
                .unwrap_err()
                .to_string()
                .contains("--tls-cert")
        );
        let ca_alone = TlsSettings {
            client_ca: Some("ca.pem".into()),
            ..TlsSettings::default()
        };
        assert!(
            ca_alone
                .check()
                .unwrap_err()
                .to_string()
                .contains("client CA without TLS")
        );
        let pair = TlsSettings {
            cert: Some("c.pem".into()),
            key: Some("k.pem".into()),
            ..TlsSettings::default()
        };
        assert!(pair.check().is_ok());
        let roles_alone = TlsSettings {
            client_roles: BTreeMap::from([("CN=a".to_owned(), Role::Writer)]),
            ..pair.clone()
        };
        assert!(
            roles_alone
                .check()
                .unwrap_err()
                .to_string()
                .contains("client_roles")
        );
        let bad_subject = TlsSettings {
            client_ca: Some("ca.pem".into()),
            client_roles: BTreeMap::from([("orchestrator".to_owned(), Role::Writer)]),
            ..pair.clone()
        };
        assert!(
            bad_subject
                .check()
                .unwrap_err()
                .to_string()
                .contains("RFC 4514")
        );
        let no_timeout = TlsSettings {
            handshake_timeout: Duration::ZERO,
            ..pair
        };
        assert!(
            no_timeout
                .check()
                .unwrap_err()
                .to_string()
                .contains("handshake_timeout")
        );
    }

    #[test]
    fn the_table_reads_and_prints_with_its_keys() {
        let text = "cert = \"/tls/tls.crt\"\nkey = \"/tls/tls.key\"\nclient_ca = \"/tls/ca.crt\"\nclient_cert_optional = false\nreload_interval_secs = 7\nhandshake_timeout_secs = 3\n\n[client_roles]\n\"CN=orchestrator,O=kubernaut\" = \"writer\"\n";
        let settings: TlsSettings = toml::from_str(text).unwrap();
        assert_eq!(settings.reload_interval, Duration::from_secs(7));
        assert_eq!(
            settings.client_roles.get("CN=orchestrator,O=kubernaut"),
            Some(&Role::Writer)
        );
        assert_eq!(toml::to_string(&settings).unwrap(), text);
        assert!(toml::from_str::<TlsSettings>("certificate = \"x\"").is_err());
    }
}
