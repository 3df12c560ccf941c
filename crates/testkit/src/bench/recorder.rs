//! The one metrics recorder of a benchmark or test process.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// The process's Prometheus recorder, installed on the first call with
/// `buckets` (histogram name, bucket bounds) as `remaudit` installs its own;
/// later calls return the same handle, so every service a benchmark or test
/// starts renders the one recorder (a service runs on the runtime's worker
/// threads, so only a global recorder sees it).
///
/// # Panics
/// When bounds are empty, or another recorder is already installed (the
/// benchmark's metrics would be lost).
pub fn metrics_handle(buckets: &[(&str, &[f64])]) -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new();
            for (name, bounds) in buckets {
                builder = builder
                    .set_buckets_for_metric(Matcher::Full((*name).to_owned()), bounds)
                    .expect("non-empty buckets");
            }
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            assert!(
                metrics::set_global_recorder(recorder).is_ok(),
                "another metrics recorder is already installed: the benchmark's metrics would be lost"
            );
            handle
        })
        .clone()
}
