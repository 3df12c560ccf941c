//! Re-reading files on a timer: the tokens file and the TLS certificate.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Runs `check` on a blocking thread every `every` (the first time one
/// interval from now) until `shutdown` is cancelled. A slow check delays the
/// next one rather than piling up.
pub(crate) fn spawn_polling<F>(
    every: Duration,
    shutdown: CancellationToken,
    check: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn() + Clone + Send + 'static,
{
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = ticks.tick() => {
                    let _ = tokio::task::spawn_blocking(check.clone()).await;
                }
            }
        }
    })
}
