//! A certificate authority made in the test, for TLS and mutual TLS: server
//! certificates for `127.0.0.1` and `localhost`, client certificates with a
//! chosen subject, files written the way a rotation writes them, and an
//! HTTPS client that trusts the CA.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SerialNumber,
};

/// A self-signed CA that issues certificates.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM (PKCS#8).
    pub key_pem: String,
    /// The certificate, DER.
    pub der: Vec<u8>,
}

impl TestCa {
    /// A new CA whose subject is `CN=<name>`.
    ///
    /// # Panics
    /// When the key or certificate cannot be made.
    #[must_use]
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    /// The CA's certificate, PEM.
    #[must_use]
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `127.0.0.1` and `localhost` with this serial.
    ///
    /// # Panics
    /// When the key or certificate cannot be made.
    #[must_use]
    pub fn server(&self, serial: u64) -> Issued {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("server parameters");
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "remaudit");
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(&params)
    }

    /// A client certificate whose subject is `CN=<common_name>,O=<organization>`.
    ///
    /// # Panics
    /// When the key or certificate cannot be made.
    #[must_use]
    pub fn client(&self, common_name: &str, organization: &str) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client parameters");
        params.distinguished_name = DistinguishedName::new();
        // The most general attribute first in the certificate; RFC 4514
        // writes them the other way round.
        params
            .distinguished_name
            .push(DnType::OrganizationName, organization);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(&params)
    }

    fn issue(&self, params: &CertificateParams) -> Issued {
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

impl Issued {
    /// The certificate and key in one PEM, as an HTTPS client's identity.
    #[must_use]
    pub fn identity_pem(&self) -> Vec<u8> {
        format!("{}{}", self.cert_pem, self.key_pem).into_bytes()
    }

    /// Writes `<name>.crt` and `<name>.key` in `dir`; their paths.
    #[must_use]
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        write_atomically(&cert, self.cert_pem.as_bytes());
        write_atomically(&key, self.key_pem.as_bytes());
        (cert, key)
    }
}

/// Replaces `path` with `bytes` at once (a new file renamed over it), as
/// certificate managers and Kubernetes Secret volumes do.
///
/// # Panics
/// When the file cannot be written.
pub fn write_atomically(path: &Path, bytes: &[u8]) {
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, bytes).expect("write");
    std::fs::rename(&temp, path).expect("rename");
}

/// An HTTPS client that trusts only `ca`, presents `identity` when given,
/// opens a new connection for every request and exposes the peer
/// certificate ([`reqwest::tls::TlsInfo`]). A client resumes its earlier
/// TLS sessions, which carry the certificate of their first handshake: to
/// see the certificate served now, use a new client.
///
/// # Panics
/// When the client cannot be built.
#[must_use]
pub fn https_client(ca: &TestCa, identity: Option<&Issued>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.pem().as_bytes()).expect("CA")])
        .tls_info(true)
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10));
    if let Some(identity) = identity {
        builder = builder
            .identity(reqwest::Identity::from_pem(&identity.identity_pem()).expect("identity"));
    }
    builder.build().expect("HTTPS client")
}

/// The DER certificate the server presented for `response`.
///
/// # Panics
/// When the response did not come over TLS (or the client was not built
/// with `tls_info`).
#[must_use]
pub fn peer_certificate(response: &reqwest::Response) -> Vec<u8> {
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(reqwest::tls::TlsInfo::peer_certificate)
        .expect("a response over TLS")
        .to_vec()
}
