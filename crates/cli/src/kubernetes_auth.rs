//! `serve`'s Kubernetes authentication: the `--auth-kubernetes*` flags, the
//! `[auth.kubernetes]` table, and the authenticator they make (ServiceAccount
//! tokens checked by `TokenReview`, roles by `SubjectAccessReview`).

use std::time::Duration;

use anyhow::{Context as _, ensure};
use clap::ArgMatches;
use remaudit_server::auth::kubernetes::{KubernetesAuthConfig, KubernetesAuthenticator};
use serde::{Deserialize, Serialize};

use crate::settings::layer;

/// The Kubernetes authentication flags of `serve`.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Kubernetes authentication")]
#[allow(
    clippy::struct_field_names,
    reason = "the fields are the flags' ids, which `layer!` reads by name"
)]
pub struct KubernetesAuthArgs {
    /// Accept Kubernetes ServiceAccount tokens: `TokenReview` checks the token,
    /// `SubjectAccessReview` the verb on remediationaudits.remaudit.kubernaut.io
    /// (create: writer, get: reader, delete: admin).
    #[arg(long, env = "REMAUDIT_AUTH_KUBERNETES")]
    auth_kubernetes: bool,
    /// Audiences a token must be bound to (comma-separated or repeated).
    #[arg(long, env = "REMAUDIT_AUTH_KUBERNETES_AUDIENCE", value_delimiter = ',', default_values_t = KubernetesAuthSettings::default().audiences)]
    auth_kubernetes_audience: Vec<String>,
    /// Namespace the `SubjectAccessReview` asks about; unset for a cluster-wide check.
    #[arg(long, env = "REMAUDIT_AUTH_KUBERNETES_NAMESPACE")]
    auth_kubernetes_namespace: Option<String>,
    /// Seconds a granted identity or access stays cached.
    #[arg(long, env = "REMAUDIT_AUTH_KUBERNETES_ALLOWED_TTL_SECS", default_value_t = KubernetesAuthSettings::default().allowed_ttl_secs)]
    auth_kubernetes_allowed_ttl_secs: u64,
    /// Seconds a refusal stays cached (at most the allowed TTL).
    #[arg(long, env = "REMAUDIT_AUTH_KUBERNETES_DENIED_TTL_SECS", default_value_t = KubernetesAuthSettings::default().denied_ttl_secs)]
    auth_kubernetes_denied_ttl_secs: u64,
    /// Most entries in each of the two caches (identities, access).
    #[arg(long, env = "REMAUDIT_AUTH_KUBERNETES_CACHE_ENTRIES", default_value_t = KubernetesAuthSettings::default().cache_entries, value_parser = clap::value_parser!(u64).range(1..))]
    auth_kubernetes_cache_entries: u64,
    /// Seconds one review may take before the request is answered 503.
    #[arg(long, env = "REMAUDIT_AUTH_KUBERNETES_REVIEW_TIMEOUT_SECS", default_value_t = KubernetesAuthSettings::default().review_timeout_secs, value_parser = clap::value_parser!(u64).range(1..))]
    auth_kubernetes_review_timeout_secs: u64,
}

/// The `[auth.kubernetes]` table of a settings file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesAuthSettings {
    /// Whether ServiceAccount tokens are accepted.
    pub enabled: bool,
    /// Audiences a token must be bound to.
    pub audiences: Vec<String>,
    /// Namespace of the access check; unset for cluster-wide.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Seconds a grant stays cached.
    pub allowed_ttl_secs: u64,
    /// Seconds a refusal stays cached.
    pub denied_ttl_secs: u64,
    /// Most entries per cache.
    pub cache_entries: u64,
    /// Seconds one review may take.
    pub review_timeout_secs: u64,
}

impl Default for KubernetesAuthSettings {
    fn default() -> Self {
        let config = KubernetesAuthConfig::default();
        Self {
            enabled: false,
            audiences: config.audiences,
            namespace: config.namespace,
            allowed_ttl_secs: config.allowed_ttl.as_secs(),
            denied_ttl_secs: config.denied_ttl.as_secs(),
            cache_entries: config.max_entries,
            review_timeout_secs: config.review_timeout.as_secs(),
        }
    }
}

impl KubernetesAuthSettings {
    /// Layers the flags and environment variables over the file's values.
    pub fn layer(&mut self, args: &KubernetesAuthArgs, m: &ArgMatches) {
        layer!(m, args, {
            auth_kubernetes => self.enabled;
            auth_kubernetes_audience => self.audiences;
            auth_kubernetes_namespace => self.namespace;
            auth_kubernetes_allowed_ttl_secs => self.allowed_ttl_secs;
            auth_kubernetes_denied_ttl_secs => self.denied_ttl_secs;
            auth_kubernetes_cache_entries => self.cache_entries;
            auth_kubernetes_review_timeout_secs => self.review_timeout_secs;
        });
    }

    /// Refuses values a flag would refuse, naming the key.
    ///
    /// # Errors
    /// No audience, a blank one, or a zero cache size or review timeout.
    pub fn check(&self) -> anyhow::Result<()> {
        ensure!(
            !self.audiences.is_empty(),
            "setting auth.kubernetes.audiences is empty: tokens must be bound to at least one audience (default \"remaudit\")"
        );
        ensure!(
            self.audiences.iter().all(|a| !a.trim().is_empty()),
            "setting auth.kubernetes.audiences holds a blank audience"
        );
        ensure!(
            self.namespace
                .as_deref()
                .is_none_or(|n| !n.trim().is_empty()),
            "setting auth.kubernetes.namespace is blank: leave it unset for a cluster-wide check"
        );
        ensure!(
            self.cache_entries >= 1,
            "setting auth.kubernetes.cache_entries = 0 must be at least 1"
        );
        ensure!(
            self.review_timeout_secs >= 1,
            "setting auth.kubernetes.review_timeout_secs = 0 must be at least 1"
        );
        Ok(())
    }

    /// The authenticator's configuration.
    #[must_use]
    pub fn config(&self) -> KubernetesAuthConfig {
        KubernetesAuthConfig {
            audiences: self.audiences.clone(),
            namespace: self.namespace.clone(),
            allowed_ttl: Duration::from_secs(self.allowed_ttl_secs),
            denied_ttl: Duration::from_secs(self.denied_ttl_secs),
            max_entries: self.cache_entries,
            review_timeout: Duration::from_secs(self.review_timeout_secs),
        }
    }

    /// The authenticator when it is enabled, talking to the API server of the
    /// pod's service account or of `KUBECONFIG`.
    ///
    /// # Errors
    /// Enabled with no Kubernetes configuration to be found.
    pub async fn authenticator(&self) -> anyhow::Result<Option<KubernetesAuthenticator>> {
        if !self.enabled {
            return Ok(None);
        }
        let client = kube::Client::try_default().await.context(
            "--auth-kubernetes: no Kubernetes configuration found: run in a pod with a service account, or set KUBECONFIG",
        )?;
        Ok(Some(KubernetesAuthenticator::new(client, self.config())))
    }
}
