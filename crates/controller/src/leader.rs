//! Leader election over a `coordination.k8s.io/v1` `Lease`, so that of
//! several replicas only one reconciles (or runs the retention job) at a time.
//!
//! The rules, as client-go's `leaderelection` keeps them:
//! - a replica takes the lease when it does not exist (create), when nobody
//!   holds it (released), or when it has expired: its `renewTime` plus
//!   `leaseDurationSeconds` lies in the past;
//! - every write is a replace carrying the `resourceVersion` that was read, so
//!   when two replicas race for the same lease the API server accepts one and
//!   answers the other 409 Conflict;
//! - the holder renews every [`LeaseConfig::renew_every`]; when it cannot
//!   renew within [`LeaseConfig::renew_deadline`] (shorter than the lease
//!   duration) it stops working before anyone else may take over;
//! - on shutdown the holder releases the lease (clears the holder), so a
//!   successor takes over at once instead of after the lease expires.
//!
//! Expiry compares the lease's `renewTime` with this node's clock, so clocks
//! must agree to well within the lease duration (NTP does that).

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

/// The field manager the elector's writes are recorded under.
const FIELD_MANAGER: &str = "remaudit-leader-election";

/// Lease timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseConfig {
    /// How long a lease lasts after its last renewal (default 15 s).
    pub lease_duration: Duration,
    /// How often the holder renews (default 5 s).
    pub renew_every: Duration,
    /// How long the holder keeps working without a successful renewal
    /// (default 10 s; must be shorter than the lease duration).
    pub renew_deadline: Duration,
    /// How often a replica that is not the leader tries to take the lease (default 5 s).
    pub retry_every: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            renew_deadline: Duration::from_secs(10),
            retry_every: Duration::from_secs(5),
        }
    }
}

/// Something the lease could not be read or written for.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The API server refused or could not be reached.
    #[error(
        "cannot {action} Lease {namespace}/{name}: {source}; may the service account get, create and update leases.coordination.k8s.io in {namespace}?"
    )]
    Api {
        /// What was being done: read, create or update.
        action: &'static str,
        /// The lease's namespace.
        namespace: String,
        /// The lease's name.
        name: String,
        /// What the API server or the connection said.
        #[source]
        source: kube::Error,
    },
}

/// How a [`run_as_leader`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leadership<T> {
    /// Shutdown came before this replica became the leader; the work never ran.
    Shutdown,
    /// The work ran and ended (on its own or on shutdown); the lease was released.
    Finished(T),
    /// The lease was lost while working; the work was cancelled and has ended.
    /// The process should exit (or campaign again with fresh work).
    Lost(T),
}

/// One replica's hand on one `Lease`.
#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
    config: LeaseConfig,
}

impl std::fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElector")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("identity", &self.identity)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// This replica's holder identity: `POD_NAME` when set (the downward API),
/// else the host name with a random suffix, so two processes on one host differ.
#[must_use]
pub fn default_identity() -> String {
    if let Ok(pod) = std::env::var("POD_NAME")
        && !pod.trim().is_empty()
    {
        return pod.trim().to_owned();
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "remaudit".to_owned());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}", &suffix[..8])
}

fn whole_seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

/// Whether `spec` is free to take at `now`: nobody holds it, or its holder
/// has not renewed it for longer than its duration.
fn is_free(spec: &LeaseSpec, now: Timestamp) -> bool {
    if spec.holder_identity.as_deref().is_none_or(str::is_empty) {
        return true;
    }
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    renewed
        .0
        .checked_add(duration)
        .is_ok_and(|expires| expires < now)
}

impl LeaderElector {
    /// An elector for the lease `namespace/name`, holding it as `identity`.
    #[must_use]
    pub fn new(client: Client, namespace: &str, name: &str, identity: impl Into<String>) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            identity: identity.into(),
            config: LeaseConfig::default(),
        }
    }

    /// The same elector with other timing.
    #[must_use]
    pub fn with_config(mut self, config: LeaseConfig) -> Self {
        self.config = config;
        self
    }

    /// The identity this replica holds the lease as.
    #[must_use]
    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn error(&self, action: &'static str) -> impl FnOnce(kube::Error) -> LeaderError + '_ {
        move |source| LeaderError::Api {
            action,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source,
        }
    }

    async fn read(&self) -> Result<Option<Lease>, LeaderError> {
        self.api
            .get_opt(&self.name)
            .await
            .map_err(self.error("read"))
    }

    fn params() -> PostParams {
        PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        }
    }

    /// Replaces `lease` (with the `resourceVersion` it was read with) by one
    /// with `spec`; `false` when someone else wrote it first (409 Conflict).
    async fn write(&self, mut lease: Lease, spec: LeaseSpec) -> Result<bool, LeaderError> {
        lease.spec = Some(spec);
        match self.api.replace(&self.name, &Self::params(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.is_conflict() => Ok(false),
            Err(e) => Err(self.error("update")(e)),
        }
    }

    /// Tries once to become (or stay) the holder: creates the lease when it
    /// does not exist, takes it when it is free or expired, renews it when it
    /// is already ours. `Ok(false)` when another replica holds a live lease
    /// or won a race for it.
    ///
    /// # Errors
    /// When the API server cannot be read or written.
    pub async fn acquire(&self) -> Result<bool, LeaderError> {
        let now = Timestamp::now();
        let Some(lease) = self.read().await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(whole_seconds(self.config.lease_duration)),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&Self::params(), &lease).await {
                Ok(_) => Ok(true),
                // Another replica created it first.
                Err(kube::Error::Api(status))
                    if status.is_already_exists() || status.is_conflict() =>
                {
                    Ok(false)
                }
                Err(e) => Err(self.error("create")(e)),
            };
        };
        let old = lease.spec.clone().unwrap_or_default();
        if old.holder_identity.as_deref() == Some(self.identity.as_str()) {
            return self.renew_from(lease, old, now).await;
        }
        if !is_free(&old, now) {
            return Ok(false);
        }
        let spec = LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(whole_seconds(self.config.lease_duration)),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(old.lease_transitions.unwrap_or(0).saturating_add(1)),
            ..old
        };
        self.write(lease, spec).await
    }

    async fn renew_from(
        &self,
        lease: Lease,
        old: LeaseSpec,
        now: Timestamp,
    ) -> Result<bool, LeaderError> {
        let spec = LeaseSpec {
            renew_time: Some(MicroTime(now)),
            lease_duration_seconds: Some(whole_seconds(self.config.lease_duration)),
            ..old
        };
        self.write(lease, spec).await
    }

    /// Renews the lease this replica holds. `Ok(false)` when it is no longer
    /// ours (another replica took it, or it was deleted).
    ///
    /// # Errors
    /// When the API server cannot be read or written.
    pub async fn renew(&self) -> Result<bool, LeaderError> {
        let now = Timestamp::now();
        let Some(lease) = self.read().await? else {
            return Ok(false);
        };
        let old = lease.spec.clone().unwrap_or_default();
        if old.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(false);
        }
        self.renew_from(lease, old, now).await
    }

    /// Gives the lease up, when this replica holds it, so that another takes
    /// over at once. `Ok(false)` when it was not ours.
    ///
    /// # Errors
    /// When the API server cannot be read or written.
    pub async fn release(&self) -> Result<bool, LeaderError> {
        let now = Timestamp::now();
        let Some(lease) = self.read().await? else {
            return Ok(false);
        };
        let old = lease.spec.clone().unwrap_or_default();
        if old.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(false);
        }
        let spec = LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            renew_time: Some(MicroTime(now)),
            ..old
        };
        self.write(lease, spec).await
    }

    /// Waits until this replica holds the lease; `false` when `shutdown`
    /// came first.
    async fn campaign(&self, shutdown: &CancellationToken) -> bool {
        loop {
            let attempt = tokio::select! {
                () = shutdown.cancelled() => return false,
                attempt = self.acquire() => attempt,
            };
            match attempt {
                Ok(true) => {
                    tracing::info!(identity = %self.identity, lease = %self.name, "became the leader");
                    return true;
                }
                Ok(false) => {
                    tracing::debug!(lease = %self.name, "another replica is the leader");
                }
                Err(error) => tracing::warn!(%error, "leader election attempt failed"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(self.config.retry_every) => {}
            }
        }
    }

    /// Renews the lease until it is lost: returns when another replica holds
    /// it or no renewal succeeded within the renew deadline.
    async fn hold(&self) {
        let mut last_renewed = tokio::time::Instant::now();
        let mut ticks = tokio::time::interval_at(
            tokio::time::Instant::now() + self.config.renew_every,
            self.config.renew_every,
        );
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let left = self
                .config
                .renew_deadline
                .saturating_sub(last_renewed.elapsed());
            match tokio::time::timeout(left, self.renew()).await {
                Ok(Ok(true)) => last_renewed = tokio::time::Instant::now(),
                Ok(Ok(false)) => {
                    tracing::warn!(lease = %self.name, "the lease was taken by another replica");
                    return;
                }
                Ok(Err(error)) if last_renewed.elapsed() < self.config.renew_deadline => {
                    tracing::warn!(%error, "cannot renew the lease; retrying");
                }
                Ok(Err(error)) => {
                    tracing::error!(%error, "cannot renew the lease within the deadline; stepping down");
                    return;
                }
                Err(_) => {
                    tracing::error!("lease renewal timed out past the deadline; stepping down");
                    return;
                }
            }
        }
    }

    /// Waits to become the leader, runs `work` while renewing the lease,
    /// and releases the lease when `work` ends. `work` gets a token that is
    /// cancelled on `shutdown` and when the lease is lost; it should stop
    /// soon after (the lease is renewed meanwhile, unless lost).
    pub async fn run<F, Fut>(&self, shutdown: CancellationToken, work: F) -> Leadership<Fut::Output>
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future,
    {
        if !self.campaign(&shutdown).await {
            return Leadership::Shutdown;
        }
        let stop = shutdown.child_token();
        let mut work = pin!(work(stop.clone()));
        let lost = tokio::select! {
            output = &mut work => Err(output),
            () = self.hold() => Ok(()),
        };
        if let Err(output) = lost {
            match self.release().await {
                Ok(true) => tracing::info!(lease = %self.name, "released the lease"),
                Ok(false) => {
                    tracing::warn!(lease = %self.name, "the lease was no longer ours to release");
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot release the lease; it expires on its own");
                }
            }
            Leadership::Finished(output)
        } else {
            stop.cancel();
            Leadership::Lost(work.await)
        }
    }
}

/// Runs `work` while this replica (as `identity`) holds the lease
/// `namespace/lease_name`, with the default timing: waits to acquire it,
/// renews it every 5 s, cancels `work`'s token when it is lost or on
/// `shutdown`, and releases it once `work` has ended.
pub async fn run_as_leader<F, Fut>(
    client: Client,
    lease_name: &str,
    namespace: &str,
    identity: String,
    shutdown: CancellationToken,
    work: F,
) -> Leadership<Fut::Output>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future,
{
    LeaderElector::new(client, namespace, lease_name, identity)
        .run(shutdown, work)
        .await
}
