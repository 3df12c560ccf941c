//! The process's one metrics recorder. Libraries only emit (`metrics::counter!`
//! and friends); the binary installs the Prometheus recorder here, once, before
//! anything records, and hands its handle to whatever serves `/metrics`.

use anyhow::Context as _;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use remaudit_client::metrics::{PUBLISH_DURATION, PUBLISH_DURATION_BUCKETS};
use remaudit_server::telemetry::{HTTP_DURATION, HTTP_DURATION_BUCKETS};

/// Installs the Prometheus recorder as the process's global recorder, with the
/// buckets of the service's request histogram, the publisher's request
/// histogram and the projector's lag (every other histogram keeps the
/// exporter's default), and
/// describes the service's metrics. Call it once, at start-up.
///
/// # Errors
/// When a recorder is already installed.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(HTTP_DURATION.to_owned()),
            &HTTP_DURATION_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(PUBLISH_DURATION.to_owned()),
            &PUBLISH_DURATION_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(remaudit_store::projection::LAG_SECONDS.to_owned()),
            &remaudit_store::projection::LAG_BUCKETS,
        )?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .context("a metrics recorder is already installed in this process")?;
    remaudit_server::telemetry::describe();
    remaudit_retention::describe_metrics();
    remaudit_store::projection::describe_metrics();
    Ok(handle)
}
