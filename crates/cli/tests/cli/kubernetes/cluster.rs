//! The real API server the `kube` tests run against (started by
//! `scripts/kube-apiserver start`, found through `REMAUDIT_TEST_KUBECONFIG`),
//! and what the tests set up in it: the CRDs from `remaudit crdgen`, a
//! namespace of their own, `ServiceAccounts` bound to the chart's RBAC rules
//! with tokens minted by the `TokenRequest` API, and `remaudit` processes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, Config};
use remaudit_controller::{RemediationPhase, RemediationRequest, Transition};
use remaudit_testkit::wait_for;

use crate::helpers::{Running, remaudit};

/// The environment variable naming the admin kubeconfig of the test API
/// server; `scripts/test` sets it from `scripts/kube-apiserver start`.
pub const KUBECONFIG_VAR: &str = "REMAUDIT_TEST_KUBECONFIG";

/// The chart's least-privilege rules for the controller.
pub const CONTROLLER_RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/helm/remaudit/files/controller-rbac-rules.yaml"
);
/// The chart's rules for the storage service's Kubernetes authentication.
pub const SERVER_RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/helm/remaudit/files/server-rbac-rules.yaml"
);

/// How long anything the API server or a `remaudit` process does may take.
pub const WAIT: Duration = Duration::from_mins(1);

/// A connection to the test API server as its administrator.
pub struct Cluster {
    pub admin: Client,
    server: String,
    ca_data: String,
}

impl Cluster {
    /// Connects as the administrator and applies the CRDs of `remaudit crdgen`.
    ///
    /// # Panics
    /// When `REMAUDIT_TEST_KUBECONFIG` is not set: the message says how to
    /// start an API server. These tests never skip themselves.
    pub async fn connect() -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let path = std::env::var_os(KUBECONFIG_VAR).unwrap_or_else(|| {
            panic!(
                "\n\n*** the Kubernetes tests need a real kube-apiserver, but {KUBECONFIG_VAR} is not set.\n\
                 *** scripts/test builds and starts one; by hand:\n\
                 ***   scripts/kube-apiserver build && scripts/kube-apiserver start /tmp/kube && source /tmp/kube/env\n\
                 *** (docs/testing-kubernetes.md) ***\n\n"
            )
        });
        let kubeconfig = Kubeconfig::read_from(&path)
            .unwrap_or_else(|e| panic!("{KUBECONFIG_VAR}={}: {e}", path.to_string_lossy()));
        let cluster = kubeconfig
            .clusters
            .first()
            .and_then(|c| c.cluster.clone())
            .expect("a cluster in the kubeconfig");
        let server = cluster.server.expect("server");
        let ca_data = cluster
            .certificate_authority_data
            .expect("certificate-authority-data");
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("admin configuration");
        let admin = Client::try_from(config).expect("admin client");
        let this = Self {
            admin,
            server,
            ca_data,
        };
        this.apply_crds().await;
        this
    }

    /// Applies `remaudit crdgen` (server-side apply, so every test may) and
    /// waits until every CRD is established.
    async fn apply_crds(&self) {
        let out = remaudit().arg("crdgen").output().expect("run crdgen");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).expect("utf-8");
        let api: Api<CustomResourceDefinition> = Api::all(self.admin.clone());
        let mut names = Vec::new();
        for document in serde_norway::Deserializer::from_str(&text) {
            let crd: CustomResourceDefinition =
                serde::Deserialize::deserialize(document).expect("a CRD");
            let name = crd.metadata.name.clone().expect("name");
            api.patch(
                &name,
                &PatchParams::apply("remaudit-kube-tests").force(),
                &Patch::Apply(&crd),
            )
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "apply CRD {name} at {}: {e}\n*** is the API server of {KUBECONFIG_VAR} running? \
                     (scripts/kube-apiserver start DIR) ***",
                    self.server
                )
            });
            names.push(name);
        }
        assert_eq!(names.len(), 4, "crdgen gives the four CRDs: {names:?}");
        for name in names {
            let api = api.clone();
            wait_for(&format!("CRD {name} to be established"), WAIT, || {
                let (api, name) = (api.clone(), name.clone());
                async move {
                    let crd = api.get(&name).await.ok()?;
                    crd.status?
                        .conditions?
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                        .then_some(())
                }
            })
            .await;
        }
    }

    /// A new namespace named `prefix-<random>`.
    pub async fn namespace(&self, prefix: &str) -> String {
        let name = format!(
            "{prefix}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        Api::<Namespace>::all(self.admin.clone())
            .create(
                &PostParams::default(),
                &Namespace {
                    metadata: named(&name),
                    ..Namespace::default()
                },
            )
            .await
            .expect("create namespace");
        name
    }

    /// A `ServiceAccount` `namespace/name` bound cluster-wide (a `ClusterRole`
    /// and a `ClusterRoleBinding`, as the chart does) to `rules`; no binding
    /// when `rules` is empty.
    pub async fn service_account(&self, namespace: &str, name: &str, rules: Vec<PolicyRule>) {
        Api::<ServiceAccount>::namespaced(self.admin.clone(), namespace)
            .create(
                &PostParams::default(),
                &ServiceAccount {
                    metadata: named(name),
                    ..ServiceAccount::default()
                },
            )
            .await
            .expect("create service account");
        if rules.is_empty() {
            return;
        }
        let role = format!("{namespace}-{name}");
        Api::<ClusterRole>::all(self.admin.clone())
            .create(
                &PostParams::default(),
                &ClusterRole {
                    metadata: named(&role),
                    rules: Some(rules),
                    ..ClusterRole::default()
                },
            )
            .await
            .expect("create cluster role");
        Api::<ClusterRoleBinding>::all(self.admin.clone())
            .create(
                &PostParams::default(),
                &ClusterRoleBinding {
                    metadata: named(&role),
                    role_ref: role_ref("ClusterRole", &role),
                    subjects: Some(service_account_subject(namespace, name)),
                },
            )
            .await
            .expect("create cluster role binding");
    }

    /// The controller's `ServiceAccount` `namespace/remaudit-controller`,
    /// bound cluster-wide to `rules` and, as the chart does it, to a Role in
    /// `namespace` that may create Leases and read and renew only the
    /// controller's own (`remaudit-controller`).
    pub async fn controller_account(&self, namespace: &str, rules: Vec<PolicyRule>) {
        let name = "remaudit-controller";
        self.service_account(namespace, name, rules).await;
        let lease = |verbs: &[&str], names: Option<Vec<String>>| PolicyRule {
            api_groups: Some(vec!["coordination.k8s.io".to_owned()]),
            resources: Some(vec!["leases".to_owned()]),
            resource_names: names,
            verbs: verbs.iter().map(|&v| v.to_owned()).collect(),
            ..PolicyRule::default()
        };
        let role = format!("{name}-lease");
        Api::<Role>::namespaced(self.admin.clone(), namespace)
            .create(
                &PostParams::default(),
                &Role {
                    metadata: named(&role),
                    rules: Some(vec![
                        lease(&["create"], None),
                        lease(&["get", "update"], Some(vec![name.to_owned()])),
                    ]),
                },
            )
            .await
            .expect("create lease role");
        Api::<RoleBinding>::namespaced(self.admin.clone(), namespace)
            .create(
                &PostParams::default(),
                &RoleBinding {
                    metadata: named(&role),
                    role_ref: role_ref("Role", &role),
                    subjects: Some(service_account_subject(namespace, name)),
                },
            )
            .await
            .expect("create lease role binding");
    }

    /// A token for `namespace/name` from the `TokenRequest` API, bound to
    /// `audiences` (the API server's own when empty).
    pub async fn token(&self, namespace: &str, name: &str, audiences: &[&str]) -> String {
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: audiences.iter().map(|&a| a.to_owned()).collect(),
                expiration_seconds: Some(3600),
                bound_object_ref: None,
            },
            ..TokenRequest::default()
        };
        Api::<ServiceAccount>::namespaced(self.admin.clone(), namespace)
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .expect("TokenRequest")
            .status
            .expect("token in the answer")
            .token
    }

    /// Writes a kubeconfig into `dir` that talks to this API server with
    /// `token`; its path.
    pub fn kubeconfig(&self, dir: &Path, token: &str) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\n\
             clusters:\n- name: test\n  cluster:\n    server: {}\n    certificate-authority-data: {}\n\
             users:\n- name: sa\n  user:\n    token: {token}\n\
             contexts:\n- name: test\n  context:\n    cluster: test\n    user: sa\n\
             current-context: test\n",
            self.server, self.ca_data
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }
}

/// Metadata holding only a name.
fn named(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    }
}

/// A reference to the RBAC `kind` (`Role` or `ClusterRole`) `name`.
fn role_ref(kind: &str, name: &str) -> RoleRef {
    RoleRef {
        api_group: "rbac.authorization.k8s.io".to_owned(),
        kind: kind.to_owned(),
        name: name.to_owned(),
    }
}

/// The subjects of a binding to the `ServiceAccount` `namespace/name`.
fn service_account_subject(namespace: &str, name: &str) -> Vec<Subject> {
    vec![Subject {
        kind: "ServiceAccount".to_owned(),
        name: name.to_owned(),
        namespace: Some(namespace.to_owned()),
        ..Subject::default()
    }]
}

/// `PolicyRules` from one of the chart's rule files.
pub fn rules(path: &str) -> Vec<PolicyRule> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_norway::from_str(&text)
        .unwrap_or_else(|e| panic!("{path} is not a list of PolicyRules: {e}"))
}

/// A `remaudit` process whose log goes to a file.
pub struct Process {
    pub running: Running,
    pub log: PathBuf,
}

impl Process {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills it with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        self.running.0.kill().expect("SIGKILL");
        self.running.0.wait().expect("reap");
    }

    /// Fails the test, with the log, when the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.running.0.try_wait().expect("try_wait") {
            panic!(
                "{} exited with {status}:\n{}",
                self.log.display(),
                self.log()
            );
        }
    }
}

/// `remaudit serve` on SQLite in `dir`, on a free loopback port, with `extra`
/// flags and `env`; its URL and process once `/healthz` answers.
pub async fn serve(dir: &Path, extra: &[&str], env: &[(&str, &Path)]) -> (String, Process) {
    let port = crate::helpers::free_port();
    let log = dir.join("serve.log");
    let mut cmd = remaudit();
    cmd.args(["serve", "--retention-interval-secs", "0", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--database-url")
        .arg(format!("sqlite://{}/audit.db", dir.display()))
        .args(extra)
        .env_remove("KUBECONFIG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut process = Process {
        running: Running(cmd.spawn().expect("spawn serve")),
        log,
    };
    let url = format!("http://127.0.0.1:{port}");
    wait_for("remaudit serve to answer /healthz", WAIT, || {
        process.assert_running();
        let url = format!("{url}/healthz");
        async move {
            reqwest::get(url)
                .await
                .ok()
                .filter(|r| r.status() == 200)
                .map(|_| ())
        }
    })
    .await;
    (url, process)
}

/// `remaudit controller` in `namespace` (its Lease there too) as `identity`,
/// talking to the API server through `kubeconfig` and publishing to `url`,
/// spooling in `dir/spool-<identity>`; logs to `dir/controller-<identity>.log`
/// (appended, so a restart keeps the earlier run's lines).
pub fn controller(
    dir: &Path,
    kubeconfig: &Path,
    namespace: &str,
    identity: &str,
    url: &str,
) -> Process {
    let log = dir.join(format!("controller-{identity}.log"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .expect("log");
    let running = Running(
        remaudit()
            .args(["controller", "--url", url, "--namespace", namespace])
            .args(["--lease-namespace", namespace])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .arg("--spool-dir")
            .arg(dir.join(format!("spool-{identity}")))
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAME", identity)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn controller"),
    );
    Process { running, log }
}

/// A `RemediationRequest` named `name` with the given `timeouts` (JSON).
pub fn request(name: &str, timeouts: &serde_json::Value) -> RemediationRequest {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "remediation.kubernaut.io/v1alpha1",
        "kind": "RemediationRequest",
        "metadata": { "name": name },
        "spec": {
            "signalFingerprint": format!("fp-{name}"),
            "signalName": "HighMemoryUsage",
            "severity": "critical",
            "targetResource": { "kind": "Deployment", "name": "checkout", "namespace": "shop" },
            "timeouts": timeouts,
        }
    }))
    .expect("request")
}

/// Every `status.lastTransition` each RemediationRequest of a namespace has
/// shown, in order, as a watch on the API server delivers them.
#[derive(Clone, Default)]
pub struct Transitions(Arc<Mutex<HashMap<String, Vec<Transition>>>>);

impl Transitions {
    /// Starts watching the namespace.
    pub fn watch(api: Api<RemediationRequest>) -> Self {
        let this = Self::default();
        let seen = this.clone();
        tokio::spawn(async move {
            let mut stream = watcher(api, watcher::Config::default())
                .applied_objects()
                .boxed();
            while let Some(next) = stream.next().await {
                let Ok(request) = next else { continue };
                let Some(t) = request.status.and_then(|s| s.last_transition) else {
                    continue;
                };
                let name = request.metadata.name.unwrap_or_default();
                let mut all = seen.0.lock().expect("lock");
                let list = all.entry(name).or_default();
                if list.last() != Some(&t) {
                    list.push(t);
                }
            }
        });
        this
    }

    /// The transitions of `name` seen so far.
    pub fn of(&self, name: &str) -> Vec<Transition> {
        self.0
            .lock()
            .expect("lock")
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `name` has entered `phase`; that transition.
    pub async fn wait(&self, name: &str, phase: RemediationPhase) -> Transition {
        wait_for(&format!("{name} to enter {phase}"), WAIT, || async move {
            self.of(name).into_iter().find(|t| t.phase == phase)
        })
        .await
    }
}

/// A Kubernetes time as chrono's.
pub fn chrono_time(time: &Time) -> DateTime<Utc> {
    let nanos = time.0.as_nanosecond();
    let seconds = i64::try_from(nanos.div_euclid(1_000_000_000)).expect("seconds");
    let subsec = u32::try_from(nanos.rem_euclid(1_000_000_000)).expect("nanos");
    DateTime::from_timestamp(seconds, subsec).expect("time")
}

/// Prints the `*.log` files of a directory to standard error when the test
/// fails (is panicking) while it is dropped.
pub struct LogsOnFailure<'a>(pub &'a Path);

impl Drop for LogsOnFailure<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let Ok(entries) = std::fs::read_dir(self.0) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                eprintln!("===== {} =====\n{text}", path.display());
            }
        }
    }
}
