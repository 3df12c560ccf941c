//! `remaudit controller`: the remediation orchestrator. It reconciles
//! `RemediationRequest`s while this replica holds the leader lease, audits
//! every phase transition through the publisher, and serves `/metrics`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use axum::routing::get;
use clap::ArgMatches;
use metrics_exporter_prometheus::PrometheusHandle;
use remaudit_client::{Publisher, PublisherSettings};
use remaudit_controller::leader::{Leadership, default_identity, run_as_leader};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::settings::{LogFormat, PublisherArgs, given_log_format, layer, read_file};

/// The flags of the controller.
#[derive(Debug, clap::Args)]
pub struct ControllerArgs {
    /// Base URL of the remaudit service that audit records go to.
    #[arg(long, env = "REMAUDIT_URL", default_value_t = PublisherSettings::default().url)]
    url: String,
    /// Spool directory of the publisher (records wait there while the service is down).
    #[arg(long, env = "REMAUDIT_SPOOL_DIR")]
    spool_dir: Option<PathBuf>,
    /// Watch only this namespace (default: every namespace).
    #[arg(long, env = "REMAUDIT_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Name of the coordination.k8s.io Lease that elects the active replica.
    #[arg(long, env = "REMAUDIT_LEASE_NAME", default_value_t = ControllerTable::default().lease_name)]
    lease_name: String,
    /// Namespace of that Lease (in a pod, set `POD_NAMESPACE` from the downward API).
    #[arg(long, env = "POD_NAMESPACE", default_value_t = ControllerTable::default().lease_namespace)]
    lease_namespace: String,
    /// Address of `/metrics` and `/healthz`.
    #[arg(long, env = "REMAUDIT_METRICS_LISTEN", default_value_t = ControllerTable::default().metrics_listen)]
    metrics_listen: SocketAddr,
    /// Seconds the publisher may take to send what is queued at shutdown; the
    /// rest stays in the spool.
    #[arg(long, env = "REMAUDIT_SHUTDOWN_FLUSH_SECS", default_value_t = ControllerTable::default().flush_secs)]
    flush_secs: u64,
    #[command(flatten)]
    publisher: PublisherArgs,
}

/// Everything the controller runs with.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ControllerSettings {
    /// Log format.
    pub log_format: LogFormat,
    /// The controller's own settings: the `[controller]` table.
    pub controller: ControllerTable,
    /// The publisher that audit records go through (service URL, spool, batching).
    pub publisher: PublisherSettings,
}

/// The `[controller]` table of a settings file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControllerTable {
    /// Watch only this namespace; unset for every namespace.
    pub namespace: Option<String>,
    /// Name of the Lease that elects the active replica.
    pub lease_name: String,
    /// Namespace of that Lease.
    pub lease_namespace: String,
    /// Address of `/metrics` and `/healthz`.
    pub metrics_listen: SocketAddr,
    /// Seconds the publisher may take to send what is queued at shutdown.
    pub flush_secs: u64,
}

impl Default for ControllerTable {
    fn default() -> Self {
        Self {
            namespace: None,
            lease_name: "remaudit-controller".to_owned(),
            lease_namespace: "default".to_owned(),
            metrics_listen: SocketAddr::from(([0, 0, 0, 0], 9090)),
            flush_secs: 10,
        }
    }
}

impl ControllerSettings {
    /// Defaults, then `file`, then the environment and flags in `m`.
    ///
    /// # Errors
    /// An unreadable or invalid file.
    pub fn load(
        args: &ControllerArgs,
        m: &ArgMatches,
        file: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let f = read_file(file)?;
        let mut s = Self {
            log_format: f.log_format,
            controller: f.controller,
            publisher: f.publisher,
        };
        if let Some(format) = given_log_format(m)? {
            s.log_format = format;
        }
        layer!(m, args, {
            url => s.publisher.url;
            spool_dir => s.publisher.spool_dir;
            namespace => s.controller.namespace;
            lease_name => s.controller.lease_name;
            lease_namespace => s.controller.lease_namespace;
            metrics_listen => s.controller.metrics_listen;
            flush_secs => s.controller.flush_secs;
        });
        args.publisher.layer(&mut s.publisher, m);
        Ok(s)
    }
}

/// Runs the controller until SIGINT or SIGTERM; returns the exit status.
/// `metrics` renders `/metrics`.
///
/// # Errors
/// No Kubernetes configuration, an unusable spool, or a metrics address in use.
pub async fn run(
    settings: ControllerSettings,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
) -> anyhow::Result<u8> {
    let client = kube::Client::try_default().await.context(
        "no Kubernetes configuration found: run in a pod with a service account, or set KUBECONFIG",
    )?;
    let publisher = Publisher::start(settings.publisher)?;
    let settings = settings.controller;

    let listener = tokio::net::TcpListener::bind(settings.metrics_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} for metrics: set --metrics-listen / REMAUDIT_METRICS_LISTEN",
                settings.metrics_listen
            )
        })?;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                remaudit_server::telemetry::record_process_metrics();
                std::future::ready(metrics.render())
            }),
        )
        .route("/healthz", get(|| std::future::ready("ok")));
    let metrics_server = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        }
    });

    let identity = default_identity();
    tracing::info!(%identity, lease = %settings.lease_name, "waiting for leadership");
    let namespace = settings.namespace;
    let outcome = run_as_leader(
        client.clone(),
        &settings.lease_name,
        &settings.lease_namespace,
        identity,
        shutdown.clone(),
        |stop| remaudit_controller::reconcile::run(client, publisher.clone(), namespace, stop),
    )
    .await;
    let report = publisher
        .shutdown(Duration::from_secs(settings.flush_secs))
        .await;
    tracing::info!(
        acknowledged = report.acknowledged,
        left_in_spool = report.left_in_spool,
        lost = report.lost,
        "audit publisher stopped"
    );
    shutdown.cancel();
    let _ = metrics_server.await;
    match outcome {
        Leadership::Finished(Ok(())) | Leadership::Lost(Ok(())) => Ok(0),
        Leadership::Finished(Err(e)) | Leadership::Lost(Err(e)) => Err(e.into()),
        Leadership::Shutdown => {
            tracing::info!("stopped before this replica became the leader");
            Ok(0)
        }
    }
}
