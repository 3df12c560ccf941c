//! `remaudit controller`: the remediation orchestrator. It reconciles
//! `RemediationRequest`s while this replica holds the leader lease, audits
//! every phase transition through the publisher, and serves `/metrics`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use axum::routing::get;
use remaudit_client::{Publisher, PublisherConfig};
use remaudit_controller::leader::{Leadership, default_identity, run_as_leader};
use tokio_util::sync::CancellationToken;

/// Settings of the controller.
#[derive(Debug, clap::Args)]
pub struct ControllerArgs {
    /// Base URL of the remaudit service that audit records go to.
    #[arg(long, env = "REMAUDIT_URL", default_value = "http://127.0.0.1:8085")]
    url: String,
    /// Spool directory of the publisher (records wait there while the service is down).
    #[arg(long, env = "REMAUDIT_SPOOL_DIR")]
    spool_dir: Option<PathBuf>,
    /// Watch only this namespace (default: every namespace).
    #[arg(long, env = "REMAUDIT_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Name of the coordination.k8s.io Lease that elects the active replica.
    #[arg(
        long,
        env = "REMAUDIT_LEASE_NAME",
        default_value = "remaudit-controller"
    )]
    lease_name: String,
    /// Namespace of that Lease (in a pod, set POD_NAMESPACE from the downward API).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Address of `/metrics` and `/healthz`.
    #[arg(long, env = "REMAUDIT_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    metrics_listen: SocketAddr,
    /// Seconds the publisher may take to send what is queued at shutdown; the
    /// rest stays in the spool.
    #[arg(long, env = "REMAUDIT_SHUTDOWN_FLUSH_SECS", default_value_t = 10)]
    flush_secs: u64,
}

/// Runs the controller until SIGINT or SIGTERM; returns the exit status.
///
/// # Errors
/// No Kubernetes configuration, an unusable spool, or a metrics address in use.
pub async fn run(args: ControllerArgs, shutdown: CancellationToken) -> anyhow::Result<u8> {
    let metrics = remaudit_server::telemetry::metrics_handle_with(&[(
        remaudit_client::metrics::PUBLISH_DURATION,
        &remaudit_client::metrics::PUBLISH_DURATION_BUCKETS,
    )]);
    let client = kube::Client::try_default().await.context(
        "no Kubernetes configuration found: run in a pod with a service account, or set KUBECONFIG",
    )?;
    let mut config = PublisherConfig::from_env()?;
    config.url = args.url;
    config.spool_dir = args.spool_dir;
    let publisher = Publisher::start(config)?;

    let listener = tokio::net::TcpListener::bind(args.metrics_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} for metrics: set --metrics-listen / REMAUDIT_METRICS_LISTEN",
                args.metrics_listen
            )
        })?;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || std::future::ready(metrics.render())),
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
    tracing::info!(%identity, lease = %args.lease_name, "waiting for leadership");
    let namespace = args.namespace;
    let outcome = run_as_leader(
        client.clone(),
        &args.lease_name,
        &args.lease_namespace,
        identity,
        shutdown.clone(),
        |stop| remaudit_controller::reconcile::run(client, publisher.clone(), namespace, stop),
    )
    .await;
    let report = publisher
        .shutdown(Duration::from_secs(args.flush_secs))
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
