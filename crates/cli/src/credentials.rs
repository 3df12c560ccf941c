//! The credentials clients send: token file, CA bundle, client certificate.
//!
//! [`CredentialArgs`] are flattened into `publish`, `simulate` and
//! `controller` (through the publisher's flags, layered over the
//! `[publisher.credentials]` table of a settings file) and into `query`.
//! The library reads no environment, so the one variable that is not a
//! flag's, `KUBERNETES_SERVICE_HOST`, is read here: in a pod, with no token
//! file given and `--no-token` not set, the projected token at
//! [`POD_TOKEN_PATH`](remaudit_client::credentials::POD_TOKEN_PATH) is sent
//! when it exists.

use std::path::PathBuf;

use clap::ArgMatches;
use remaudit_client::credentials::CredentialSettings;

use crate::settings::layer;

/// The credential flags of every command that calls the service.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Credentials")]
pub struct CredentialArgs {
    /// File holding the bearer token to send; it is read again when it
    /// changes. In a pod the default is the projected token
    /// /var/run/secrets/remaudit/token, when it exists.
    #[arg(long, global = true, env = "REMAUDIT_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Send no token, whatever --token-file, `REMAUDIT_TOKEN_FILE`, the
    /// settings file or the pod provide.
    #[arg(long, global = true)]
    pub no_token: bool,
    /// PEM bundle of the CAs that may sign the service's certificate; it
    /// replaces the system's roots.
    #[arg(long, global = true, env = "REMAUDIT_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (with --client-key).
    #[arg(long, global = true, env = "REMAUDIT_CLIENT_CERT", value_name = "FILE")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long, global = true, env = "REMAUDIT_CLIENT_KEY", value_name = "FILE")]
    pub client_key: Option<PathBuf>,
}

impl CredentialArgs {
    /// Layers these flags (given on the command line or in the environment)
    /// over `settings`, then adds the pod's default token.
    pub fn layer(&self, settings: &mut CredentialSettings, m: &ArgMatches) {
        layer!(m, self, {
            token_file => settings.token_file;
            no_token => settings.no_token;
            ca_file => settings.ca_file;
            client_cert => settings.client_cert;
            client_key => settings.client_key;
        });
        if settings.no_token {
            settings.token_file = None;
        }
        *settings = std::mem::take(settings).with_pod_default(in_kubernetes());
    }

    /// The settings of a command that reads no settings file (`query`).
    pub fn settings(&self) -> CredentialSettings {
        CredentialSettings {
            token_file: self.token_file.clone().filter(|_| !self.no_token),
            no_token: self.no_token,
            ca_file: self.ca_file.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
        }
        .with_pod_default(in_kubernetes())
    }
}

/// Whether this process runs in a Kubernetes pod.
fn in_kubernetes() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some_and(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, FromArgMatches as _};

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Probe {
        #[command(flatten)]
        credentials: CredentialArgs,
    }

    fn layered(argv: &[&str], start: CredentialSettings) -> CredentialSettings {
        let m = Probe::command().try_get_matches_from(argv).expect("parses");
        let probe = Probe::from_arg_matches(&m).expect("parses");
        let mut s = start;
        probe.credentials.layer(&mut s, &m);
        s
    }

    #[test]
    fn flags_override_the_file_and_no_token_wins() {
        let file = CredentialSettings {
            token_file: Some("/file/token".into()),
            ca_file: Some("/file/ca.pem".into()),
            ..CredentialSettings::default()
        };
        let s = layered(&["probe", "--token-file", "/flag/token"], file.clone());
        assert_eq!(s.token_file, Some("/flag/token".into()));
        assert_eq!(s.ca_file, Some("/file/ca.pem".into()));
        let s = layered(&["probe", "--no-token"], file);
        assert_eq!((s.token_file, s.no_token), (None, true));
        let s = layered(
            &["probe", "--client-cert", "/c.pem", "--client-key", "/k.pem"],
            CredentialSettings::default(),
        );
        assert_eq!(
            (s.client_cert, s.client_key),
            (Some("/c.pem".into()), Some("/k.pem".into()))
        );
    }
}
