//! Leader election against a scripted API server: every read and write of
//! the `Lease`, with its exact body.

use std::time::Duration;

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use http::Method;
use remaudit_controller::leader::{LeaderElector, Leadership, LeaseConfig, run_as_leader};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::reconcile::mock::{self, ApiServer};

const LIMIT: Duration = Duration::from_secs(20);
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/default/leases/remaudit-controller";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/default/leases";
const QUERY: &str = "?&fieldManager=remaudit-leader-election";

fn elector() -> (LeaderElector, ApiServer) {
    let (client, server) = mock::client();
    (
        LeaderElector::new(client, "default", "remaudit-controller", "me"),
        server,
    )
}

/// A lease held by `holder`, last renewed `ago` before now, at resourceVersion `version`.
fn lease(holder: &str, ago: TimeDelta, version: &str) -> Value {
    // A lease's times have microsecond precision.
    let renewed = (Utc::now() - ago).trunc_subsecs(6);
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": "remaudit-controller",
            "namespace": "default",
            "resourceVersion": version,
        },
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": 15,
            "acquireTime": renewed - TimeDelta::seconds(600),
            "renewTime": renewed,
            "leaseTransitions": 3,
        },
    })
}

fn time(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value.as_str().expect("a time string"))
        .expect("RFC 3339")
        .to_utc()
}

/// Asserts that `value` is a time within the last minute.
fn is_recent(value: &Value) {
    let t = time(value);
    let now = Utc::now();
    assert!(
        t <= now && now - t < TimeDelta::seconds(60),
        "{t} is not recent"
    );
}

async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("finishes within the limit")
}

#[tokio::test]
async fn a_missing_lease_is_created_and_held() {
    let (elector, mut server) = elector();
    let (won, ()) = within(async {
        tokio::join!(elector.acquire(), async {
            server.expect(Method::GET, LEASE).await.not_found();
            let call = server
                .expect(Method::POST, &format!("{LEASES}{QUERY}"))
                .await;
            let body = call.body.clone();
            assert_eq!(body["metadata"]["name"], "remaudit-controller");
            assert_eq!(body["metadata"]["namespace"], "default");
            let spec = &body["spec"];
            assert_eq!(spec["holderIdentity"], "me");
            assert_eq!(spec["leaseDurationSeconds"], 15);
            assert_eq!(spec["leaseTransitions"], 0);
            is_recent(&spec["renewTime"]);
            assert_eq!(spec["acquireTime"], spec["renewTime"]);
            call.reply(201, &body);
        })
    })
    .await;
    assert!(won.expect("no API error"));
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_with_the_resource_version_read() {
    let (elector, mut server) = elector();
    let (won, ()) = within(async {
        tokio::join!(elector.acquire(), async {
            server.expect(Method::GET, LEASE).await.ok(&lease(
                "other",
                TimeDelta::seconds(60),
                "7",
            ));
            let call = server.expect(Method::PUT, &format!("{LEASE}{QUERY}")).await;
            let body = call.body.clone();
            assert_eq!(
                body["metadata"]["resourceVersion"], "7",
                "optimistic concurrency"
            );
            let spec = &body["spec"];
            assert_eq!(spec["holderIdentity"], "me");
            assert_eq!(spec["leaseTransitions"], 4, "one more holder change");
            assert_eq!(spec["leaseDurationSeconds"], 15);
            is_recent(&spec["acquireTime"]);
            is_recent(&spec["renewTime"]);
            call.ok(&body);
        })
    })
    .await;
    assert!(won.expect("no API error"));
}

#[tokio::test]
async fn a_takeover_race_lost_to_another_replica_is_not_a_win() {
    let (elector, mut server) = elector();
    let (won, ()) = within(async {
        tokio::join!(elector.acquire(), async {
            server.expect(Method::GET, LEASE).await.ok(&lease(
                "other",
                TimeDelta::seconds(60),
                "7",
            ));
            server
                .expect(Method::PUT, &format!("{LEASE}{QUERY}"))
                .await
                .fail(409, "Conflict");
        })
    })
    .await;
    assert!(!won.expect("a conflict is no error"));
}

#[tokio::test]
async fn a_live_lease_of_another_replica_is_left_alone() {
    let (elector, mut server) = elector();
    let (won, ()) = within(async {
        tokio::join!(elector.acquire(), async {
            server
                .expect(Method::GET, LEASE)
                .await
                .ok(&lease("other", TimeDelta::seconds(2), "7"));
        })
    })
    .await;
    assert!(!won.expect("no API error"));
    drop(elector);
    within(server.done()).await;
}

#[tokio::test]
async fn a_released_lease_is_taken_at_once() {
    let (elector, mut server) = elector();
    let mut released = lease("other", TimeDelta::seconds(1), "8");
    released["spec"]["holderIdentity"] = Value::Null;
    let (won, ()) = within(async {
        tokio::join!(elector.acquire(), async {
            server.expect(Method::GET, LEASE).await.ok(&released);
            let call = server.expect(Method::PUT, &format!("{LEASE}{QUERY}")).await;
            assert_eq!(call.body["metadata"]["resourceVersion"], "8");
            assert_eq!(call.body["spec"]["holderIdentity"], "me");
            let body = call.body.clone();
            call.ok(&body);
        })
    })
    .await;
    assert!(won.expect("no API error"));
}

#[tokio::test]
async fn the_holder_renews_its_own_lease() {
    let (elector, mut server) = elector();
    let held = lease("me", TimeDelta::seconds(5), "9");
    let (renewed, ()) = within(async {
        tokio::join!(elector.renew(), async {
            server.expect(Method::GET, LEASE).await.ok(&held);
            let call = server.expect(Method::PUT, &format!("{LEASE}{QUERY}")).await;
            let body = call.body.clone();
            assert_eq!(body["metadata"]["resourceVersion"], "9");
            let spec = &body["spec"];
            assert_eq!(spec["holderIdentity"], "me");
            assert_eq!(
                time(&spec["acquireTime"]),
                time(&held["spec"]["acquireTime"]),
                "kept"
            );
            assert_eq!(spec["leaseTransitions"], 3, "no holder change");
            assert!(time(&spec["renewTime"]) > time(&held["spec"]["renewTime"]));
            is_recent(&spec["renewTime"]);
            call.ok(&body);
        })
    })
    .await;
    assert!(renewed.expect("no API error"));
}

#[tokio::test]
async fn a_lease_taken_by_another_replica_is_not_renewed() {
    let (elector, mut server) = elector();
    let (renewed, ()) = within(async {
        tokio::join!(elector.renew(), async {
            server
                .expect(Method::GET, LEASE)
                .await
                .ok(&lease("other", TimeDelta::seconds(1), "9"));
        })
    })
    .await;
    assert!(!renewed.expect("no API error"));
    drop(elector);
    within(server.done()).await;
}

#[tokio::test]
async fn release_clears_the_holder() {
    let (elector, mut server) = elector();
    let (released, ()) = within(async {
        tokio::join!(elector.release(), async {
            server
                .expect(Method::GET, LEASE)
                .await
                .ok(&lease("me", TimeDelta::seconds(1), "9"));
            let call = server.expect(Method::PUT, &format!("{LEASE}{QUERY}")).await;
            assert_eq!(call.body["metadata"]["resourceVersion"], "9");
            assert_eq!(call.body["spec"].get("holderIdentity"), None);
            assert_eq!(call.body["spec"]["leaseDurationSeconds"], 1);
            let body = call.body.clone();
            call.ok(&body);
        })
    })
    .await;
    assert!(released.expect("no API error"));
}

#[tokio::test]
async fn run_as_leader_acquires_runs_the_work_and_releases() {
    let (client, mut server) = mock::client();
    let shutdown = CancellationToken::new();
    let (outcome, ()) = within(async {
        tokio::join!(
            run_as_leader(
                client,
                "remaudit-controller",
                "default",
                "me".to_owned(),
                shutdown.clone(),
                async |stop: CancellationToken| {
                    assert!(!stop.is_cancelled());
                    42
                },
            ),
            async {
                server.expect(Method::GET, LEASE).await.not_found();
                let call = server
                    .expect(Method::POST, &format!("{LEASES}{QUERY}"))
                    .await;
                let mut created = call.body.clone();
                created["metadata"]["resourceVersion"] = json!("1");
                call.reply(201, &created);
                // The work ended: release.
                server.expect(Method::GET, LEASE).await.ok(&created);
                let call = server.expect(Method::PUT, &format!("{LEASE}{QUERY}")).await;
                assert_eq!(call.body["metadata"]["resourceVersion"], "1");
                assert_eq!(call.body["spec"].get("holderIdentity"), None);
                let body = call.body.clone();
                call.ok(&body);
            }
        )
    })
    .await;
    assert_eq!(outcome, Leadership::Finished(42));
}

#[tokio::test]
async fn shutdown_while_waiting_for_the_lease_never_runs_the_work() {
    let (elector, mut server) = elector();
    let shutdown = CancellationToken::new();
    let (outcome, ()) = within(async {
        tokio::join!(
            elector.run(shutdown.clone(), async |_| {
                panic!("the work must not run without the lease")
            }),
            async {
                server.expect(Method::GET, LEASE).await.ok(&lease(
                    "other",
                    TimeDelta::seconds(1),
                    "7",
                ));
                shutdown.cancel();
            }
        )
    })
    .await;
    assert_eq!(outcome, Leadership::<()>::Shutdown);
}

#[tokio::test]
async fn a_lost_lease_cancels_the_work() {
    let (client, mut server) = mock::client();
    let elector = LeaderElector::new(client, "default", "remaudit-controller", "me").with_config(
        LeaseConfig {
            renew_every: Duration::from_millis(20),
            ..LeaseConfig::default()
        },
    );
    let shutdown = CancellationToken::new();
    let (outcome, ()) = within(async {
        tokio::join!(
            elector.run(shutdown.clone(), async |stop: CancellationToken| {
                stop.cancelled().await;
                "stopped"
            }),
            async {
                server.expect(Method::GET, LEASE).await.ok(&lease(
                    "other",
                    TimeDelta::seconds(60),
                    "7",
                ));
                let call = server.expect(Method::PUT, &format!("{LEASE}{QUERY}")).await;
                let body = call.body.clone();
                call.ok(&body);
                // First renewal: another replica has it now.
                server.expect(Method::GET, LEASE).await.ok(&lease(
                    "other",
                    TimeDelta::seconds(0),
                    "12",
                ));
            }
        )
    })
    .await;
    assert_eq!(outcome, Leadership::Lost("stopped"));
    assert!(
        !shutdown.is_cancelled(),
        "only the work's token was cancelled"
    );
}
