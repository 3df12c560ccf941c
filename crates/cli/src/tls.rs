//! The `[tls]` settings of `serve`: the flags and environment variables
//! that turn TLS and mutual TLS on, layered over the settings file's table.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::ArgMatches;
use remaudit_server::auth::Role;
use remaudit_server::tls::{Tls, TlsSettings, normalize_subject};

use crate::settings::layer;

/// The TLS flags of `remaudit serve`.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "TLS")]
#[allow(
    clippy::struct_field_names,
    reason = "the field names are the ids of the --tls-* flags, which settings' layer! reads"
)]
pub struct TlsArgs {
    /// PEM certificate chain to serve HTTPS with (the server's certificate
    /// first); needs --tls-key. Reloaded when the file changes.
    #[arg(long, env = "REMAUDIT_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "REMAUDIT_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// PEM bundle of CAs that client certificates are verified against:
    /// turns mutual TLS on, and a client without a certificate is refused
    /// (unless --tls-client-cert-optional).
    #[arg(long, env = "REMAUDIT_TLS_CLIENT_CA", value_name = "FILE")]
    tls_client_ca: Option<PathBuf>,
    /// With --tls-client-ca, also serve clients without a certificate (they
    /// then need a token).
    #[arg(long, env = "REMAUDIT_TLS_CLIENT_CERT_OPTIONAL")]
    tls_client_cert_optional: bool,
    /// The role of a client certificate subject, as
    /// `CN=orchestrator,O=kubernaut=writer`; repeat for more (in the
    /// environment, separate them with `;`). Replaces the settings file's
    /// `[tls.client_roles]` when given.
    #[arg(long = "tls-client-role", env = "REMAUDIT_TLS_CLIENT_ROLES", value_name = "SUBJECT=ROLE", value_delimiter = ';', value_parser = parse_client_role)]
    tls_client_roles: Vec<(String, Role)>,
    /// Seconds between checks of the certificate and key files for new
    /// content; 0 turns reloading off.
    #[arg(long, env = "REMAUDIT_TLS_RELOAD_INTERVAL_SECS", value_name = "SECS", default_value_t = TlsSettings::default().reload_interval.as_secs())]
    tls_reload_interval_secs: u64,
    /// Seconds a client may take to complete the TLS handshake.
    #[arg(long, env = "REMAUDIT_TLS_HANDSHAKE_TIMEOUT_SECS", value_name = "SECS", default_value_t = TlsSettings::default().handshake_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    tls_handshake_timeout_secs: u64,
}

/// `SUBJECT=ROLE`, split at the last `=` (the subject holds some).
fn parse_client_role(s: &str) -> Result<(String, Role), String> {
    let (subject, role) = s.trim().rsplit_once('=').ok_or_else(|| {
        format!("{s:?} is not SUBJECT=ROLE: write it as CN=orchestrator,O=kubernaut=writer")
    })?;
    let role: Role = role.trim().parse()?;
    let subject = normalize_subject(subject.trim())?;
    Ok((subject, role))
}

impl TlsArgs {
    /// Layers the flags and environment given in `m` over `settings` (the
    /// settings file's `[tls]`), then checks the result.
    ///
    /// # Errors
    /// Settings that contradict each other (a certificate without a key, a
    /// client CA without TLS, a subject that is not an RFC 4514 name).
    pub fn layer(&self, settings: &mut TlsSettings, m: &ArgMatches) -> anyhow::Result<()> {
        layer!(m, self, {
            tls_cert => settings.cert;
            tls_key => settings.key;
            tls_client_ca => settings.client_ca;
            tls_client_cert_optional => settings.client_cert_optional;
            tls_client_roles => settings.client_roles, via |roles: Vec<(String, Role)>| roles.into_iter().collect();
            tls_reload_interval_secs => settings.reload_interval, via Duration::from_secs;
            tls_handshake_timeout_secs => settings.handshake_timeout, via Duration::from_secs;
        });
        settings.check()?;
        Ok(())
    }
}

/// Loads the certificate, key and client CA when TLS is on; logs how it is
/// set up.
///
/// # Errors
/// A file that is missing, not PEM, or a key of another certificate; the
/// message names the file.
pub fn load(settings: &TlsSettings) -> anyhow::Result<Option<Tls>> {
    if !settings.enabled() {
        return Ok(None);
    }
    let tls = Tls::load(settings).context("cannot serve TLS")?;
    tracing::info!(
        cert = %settings.cert.as_deref().unwrap_or_else(|| std::path::Path::new("")).display(),
        serial = %tls.serial(),
        client_certificates = tls.client_auth().as_str(),
        client_roles = settings.client_roles.len(),
        "TLS on"
    );
    Ok(Some(tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_roles_split_at_the_last_equals_sign() {
        assert_eq!(
            parse_client_role("CN=orchestrator,O=kubernaut=writer"),
            Ok(("CN=orchestrator,O=kubernaut".to_owned(), Role::Writer))
        );
        assert_eq!(
            parse_client_role(" cn=ops = admin "),
            Ok(("CN=ops".to_owned(), Role::Admin))
        );
        assert!(
            parse_client_role("CN=x=owner")
                .unwrap_err()
                .contains("unknown role")
        );
        assert!(
            parse_client_role("writer")
                .unwrap_err()
                .contains("SUBJECT=ROLE")
        );
        assert!(
            parse_client_role("nobody=writer")
                .unwrap_err()
                .contains("RFC 4514")
        );
    }
}
