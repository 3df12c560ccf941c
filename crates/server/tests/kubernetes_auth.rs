//! The Kubernetes authenticator against a fake API server over loopback.
//!
//! Why a fake: the behaviour under test is the authenticator's (what it asks,
//! how it reads the answers, what it caches, how it fails), and each case
//! needs the API server to answer in a chosen way (refuse an audience, deny a
//! verb, fail with 500, hang, count calls). A real kube-apiserver is issue
//! 14's work; this one is a small axum service that speaks the two review
//! APIs on their real paths with their real JSON (the `k8s-openapi` types),
//! decides as the API server and RBAC do (audiences intersect, a grant
//! matches user or group, verb, group, resource and namespace), and records
//! every request body so that the tests check what was asked. The
//! authenticator talks to it through an ordinary `kube::Client` over HTTP.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewStatus, UserInfo};
use k8s_openapi::api::authorization::v1::{SubjectAccessReview, SubjectAccessReviewStatus};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use remaudit_server::auth::kubernetes::{
    CACHE_HITS_TOTAL, KubernetesAuthConfig, KubernetesAuthenticator, REVIEWS_TOTAL,
};
use remaudit_server::auth::{Authenticator as _, Credential, Decision, DenyReason, Role};

/// A counter's name, sorted labels and value.
type Series = (String, Vec<(String, String)>, u64);

/// How the fake answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// As an API server does.
    Normal,
    /// 500 to token reviews, 503 to access reviews (which kube's client
    /// retries with backoff: the review timeout ends them).
    Failing,
    /// Never answers.
    Hanging,
    /// Authenticates without checking or returning audiences (an
    /// audience-unaware authenticator).
    AudienceUnaware,
}

/// A service account the fake knows: its token's audiences and groups.
#[derive(Debug, Clone)]
struct Account {
    username: String,
    groups: Vec<String>,
    audiences: Vec<String>,
}

/// An RBAC grant on remediationaudits.remaudit.kubernaut.io.
#[derive(Debug, Clone)]
struct Grant {
    /// A user or a group.
    subject: String,
    verb: &'static str,
    /// `None`: a `ClusterRoleBinding`; `Some`: a `RoleBinding` in that namespace.
    namespace: Option<String>,
}

#[derive(Debug)]
struct Fake {
    mode: Mutex<Mode>,
    tokens: Mutex<HashMap<String, Account>>,
    grants: Mutex<Vec<Grant>>,
    token_reviews: AtomicUsize,
    access_reviews: AtomicUsize,
    seen_token_reviews: Mutex<Vec<TokenReview>>,
    seen_access_reviews: Mutex<Vec<SubjectAccessReview>>,
}

impl Fake {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            mode: Mutex::new(Mode::Normal),
            tokens: Mutex::new(HashMap::new()),
            grants: Mutex::new(Vec::new()),
            token_reviews: AtomicUsize::new(0),
            access_reviews: AtomicUsize::new(0),
            seen_token_reviews: Mutex::new(Vec::new()),
            seen_access_reviews: Mutex::new(Vec::new()),
        })
    }

    fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn mode(&self) -> Mode {
        *self.mode.lock().unwrap()
    }

    /// Mints a JWT-shaped token for `name` in namespace `ns`, bound to
    /// `audiences`, expiring at `exp` (seconds since the epoch).
    fn mint(&self, ns: &str, name: &str, audiences: &[&str], exp: u64) -> String {
        let claims = serde_json::json!({
            "aud": audiences,
            "exp": exp,
            "sub": format!("system:serviceaccount:{ns}:{name}"),
            "jti": uuid_like(),
        });
        let token = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"fake"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            URL_SAFE_NO_PAD.encode(uuid_like()),
        );
        self.tokens.lock().unwrap().insert(
            token.clone(),
            Account {
                username: format!("system:serviceaccount:{ns}:{name}"),
                groups: vec![
                    "system:serviceaccounts".to_owned(),
                    format!("system:serviceaccounts:{ns}"),
                    "system:authenticated".to_owned(),
                ],
                audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
            },
        );
        token
    }

    /// A valid token for `name` in `ns`, bound to `remaudit`, for an hour.
    fn token(&self, ns: &str, name: &str) -> String {
        self.mint(ns, name, &["remaudit"], in_an_hour())
    }

    fn grant(&self, subject: &str, verb: &'static str, namespace: Option<&str>) {
        self.grants.lock().unwrap().push(Grant {
            subject: subject.to_owned(),
            verb,
            namespace: namespace.map(str::to_owned),
        });
    }

    fn token_reviews(&self) -> usize {
        self.token_reviews.load(Ordering::SeqCst)
    }

    fn access_reviews(&self) -> usize {
        self.access_reviews.load(Ordering::SeqCst)
    }
}

fn in_an_hour() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600
}

fn uuid_like() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// A `Status` body as the API server sends with an error.
fn status_error(code: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": "InternalError", "code": code.as_u16(),
    });
    (code, Json(body)).into_response()
}

async fn token_review(
    State(fake): State<Arc<Fake>>,
    Json(mut review): Json<TokenReview>,
) -> Response {
    fake.token_reviews.fetch_add(1, Ordering::SeqCst);
    fake.seen_token_reviews.lock().unwrap().push(review.clone());
    let mode = fake.mode();
    match mode {
        Mode::Failing => {
            return status_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "etcdserver: request timed out",
            );
        }
        Mode::Hanging => std::future::pending::<()>().await,
        Mode::Normal | Mode::AudienceUnaware => {}
    }
    let account = review
        .spec
        .token
        .as_ref()
        .and_then(|t| fake.tokens.lock().unwrap().get(t).cloned());
    // The API server's own audience when the request names none.
    let wanted = review
        .spec
        .audiences
        .clone()
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| vec!["https://kubernetes.default.svc".to_owned()]);
    let status = match account {
        None => TokenReviewStatus {
            authenticated: Some(false),
            error: Some(
                "[invalid bearer token, square/go-jose: error in cryptographic primitive]"
                    .to_owned(),
            ),
            ..TokenReviewStatus::default()
        },
        Some(account) => {
            let common: Vec<String> = account
                .audiences
                .iter()
                .filter(|a| wanted.contains(a))
                .cloned()
                .collect();
            let user = Some(UserInfo {
                username: Some(account.username.clone()),
                uid: Some("0b4f6a2e-uid".to_owned()),
                groups: Some(account.groups.clone()),
                extra: None,
            });
            if mode == Mode::AudienceUnaware {
                TokenReviewStatus {
                    authenticated: Some(true),
                    user,
                    ..TokenReviewStatus::default()
                }
            } else if common.is_empty() {
                TokenReviewStatus {
                    authenticated: Some(false),
                    error: Some(format!(
                        "[invalid bearer token, token audiences {:?} is invalid for the target audiences {wanted:?}]",
                        account.audiences
                    )),
                    ..TokenReviewStatus::default()
                }
            } else {
                TokenReviewStatus {
                    authenticated: Some(true),
                    audiences: Some(common),
                    user,
                    ..TokenReviewStatus::default()
                }
            }
        }
    };
    review.spec.token = None;
    review.status = Some(status);
    (StatusCode::CREATED, Json(review)).into_response()
}

async fn access_review(
    State(fake): State<Arc<Fake>>,
    Json(mut review): Json<SubjectAccessReview>,
) -> Response {
    fake.access_reviews.fetch_add(1, Ordering::SeqCst);
    fake.seen_access_reviews
        .lock()
        .unwrap()
        .push(review.clone());
    match fake.mode() {
        Mode::Failing => {
            return status_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is currently unable to handle the request",
            );
        }
        Mode::Hanging => std::future::pending::<()>().await,
        Mode::Normal | Mode::AudienceUnaware => {}
    }
    let spec = &review.spec;
    let attributes = spec.resource_attributes.clone().unwrap_or_default();
    let subjects: Vec<String> = spec
        .user
        .iter()
        .chain(spec.groups.iter().flatten())
        .cloned()
        .collect();
    let allowed = attributes.group.as_deref() == Some("remaudit.kubernaut.io")
        && attributes.resource.as_deref() == Some("remediationaudits")
        && fake.grants.lock().unwrap().iter().any(|g| {
            subjects.contains(&g.subject)
                && attributes.verb.as_deref() == Some(g.verb)
                && (g.namespace.is_none() || g.namespace == attributes.namespace)
        });
    review.status = Some(SubjectAccessReviewStatus {
        allowed,
        reason: Some(if allowed {
            "RBAC: allowed by ClusterRoleBinding".to_owned()
        } else {
            String::new()
        }),
        ..SubjectAccessReviewStatus::default()
    });
    (StatusCode::CREATED, Json(review)).into_response()
}

/// Serves the fake on a loopback port; returns its address.
async fn serve(fake: Arc<Fake>) -> SocketAddr {
    let app = axum::Router::new()
        .route(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            post(token_review),
        )
        .route(
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            post(access_review),
        )
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn client(addr: SocketAddr) -> kube::Client {
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    kube::Client::try_from(config).unwrap()
}

/// A fake API server and an authenticator asking it with `config`.
async fn setup(config: KubernetesAuthConfig) -> (Arc<Fake>, KubernetesAuthenticator) {
    let fake = Fake::new();
    let addr = serve(fake.clone()).await;
    (fake, KubernetesAuthenticator::new(client(addr), config))
}

async fn decide(auth: &KubernetesAuthenticator, token: &str, role: Role) -> Decision {
    auth.decide(Credential::Bearer(token), role).await
}

fn allowed(subject: &str) -> Decision {
    Decision::Allowed {
        subject: subject.to_owned(),
    }
}

/// Polls `condition` every few milliseconds until it holds; fails after 10 s.
async fn eventually<F: Future<Output = bool>>(what: &str, mut condition: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn allowed_token_sends_audiences_and_the_resource_attributes_of_the_role() {
    let (fake, auth) = setup(KubernetesAuthConfig::default()).await;
    let token = fake.token("kubernaut", "orchestrator");
    fake.grant(
        "system:serviceaccount:kubernaut:orchestrator",
        "create",
        None,
    );

    assert_eq!(
        decide(&auth, &token, Role::Writer).await,
        allowed("system:serviceaccount:kubernaut:orchestrator")
    );

    let reviews = fake.seen_token_reviews.lock().unwrap().clone();
    assert_eq!(reviews.len(), 1);
    assert_eq!(reviews[0].spec.token.as_deref(), Some(token.as_str()));
    assert_eq!(reviews[0].spec.audiences, Some(vec!["remaudit".to_owned()]));

    let access = fake.seen_access_reviews.lock().unwrap().clone();
    assert_eq!(access.len(), 1);
    let spec = &access[0].spec;
    assert_eq!(
        spec.user.as_deref(),
        Some("system:serviceaccount:kubernaut:orchestrator")
    );
    assert_eq!(spec.uid.as_deref(), Some("0b4f6a2e-uid"));
    assert_eq!(
        spec.groups.as_deref(),
        Some(
            &[
                "system:serviceaccounts".to_owned(),
                "system:serviceaccounts:kubernaut".to_owned(),
                "system:authenticated".to_owned()
            ][..]
        )
    );
    let attributes = spec.resource_attributes.clone().unwrap();
    assert_eq!(attributes.group.as_deref(), Some("remaudit.kubernaut.io"));
    assert_eq!(attributes.resource.as_deref(), Some("remediationaudits"));
    assert_eq!(attributes.verb.as_deref(), Some("create"));
    assert_eq!(attributes.namespace, None, "cluster-scoped by default");
    assert!(spec.non_resource_attributes.is_none());

    // Reader and admin routes ask for their own verbs.
    fake.grant("system:serviceaccounts:kubernaut", "get", None);
    fake.grant("system:serviceaccounts:kubernaut", "delete", None);
    assert_eq!(
        decide(&auth, &token, Role::Reader).await,
        allowed("system:serviceaccount:kubernaut:orchestrator")
    );
    assert_eq!(
        decide(&auth, &token, Role::Admin).await,
        allowed("system:serviceaccount:kubernaut:orchestrator")
    );
    let verbs: Vec<_> = fake
        .seen_access_reviews
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.spec.resource_attributes.clone().unwrap().verb.unwrap())
        .collect();
    assert_eq!(verbs, ["create", "get", "delete"]);
}

#[tokio::test]
async fn unauthenticated_token_is_invalid_or_expired_and_never_reaches_access_review() {
    let (fake, auth) = setup(KubernetesAuthConfig::default()).await;
    fake.grant("system:authenticated", "create", None);

    // A JWT the API server does not know.
    let unknown = Fake::new().token("kubernaut", "ghost");
    assert_eq!(
        decide(&auth, &unknown, Role::Writer).await,
        Decision::Unauthenticated {
            reason: DenyReason::Invalid
        }
    );

    // One whose `exp` has passed: the API server refuses it (the fake
    // forgets it, as a real one would reject it), and the reason says so.
    let expired = fake.mint("kubernaut", "old", &["remaudit"], 1_600_000_000);
    fake.tokens.lock().unwrap().remove(&expired);
    assert_eq!(
        decide(&auth, &expired, Role::Writer).await,
        Decision::Unauthenticated {
            reason: DenyReason::Expired
        }
    );
    assert_eq!(fake.token_reviews(), 2);
    assert_eq!(fake.access_reviews(), 0);
}

#[tokio::test]
async fn token_for_another_audience_is_refused() {
    let (fake, auth) = setup(KubernetesAuthConfig {
        audiences: vec!["remaudit".to_owned(), "remaudit.example.org".to_owned()],
        ..KubernetesAuthConfig::default()
    })
    .await;
    fake.grant("system:authenticated", "create", None);

    let vault = fake.mint("kubernaut", "orchestrator", &["vault"], in_an_hour());
    assert_eq!(
        decide(&auth, &vault, Role::Writer).await,
        Decision::Unauthenticated {
            reason: DenyReason::Invalid
        }
    );
    assert_eq!(
        fake.seen_token_reviews.lock().unwrap()[0].spec.audiences,
        Some(vec![
            "remaudit".to_owned(),
            "remaudit.example.org".to_owned()
        ])
    );

    // Any one of the configured audiences is enough.
    let second = fake.mint(
        "kubernaut",
        "orchestrator",
        &["remaudit.example.org"],
        in_an_hour(),
    );
    assert_eq!(
        decide(&auth, &second, Role::Writer).await,
        allowed("system:serviceaccount:kubernaut:orchestrator")
    );

    // An audience-unaware answer (authenticated, no audiences) is a token
    // for the API server itself: refused.
    fake.set_mode(Mode::AudienceUnaware);
    let api_server_token = fake.mint(
        "kubernaut",
        "orchestrator",
        &["https://kubernetes.default.svc"],
        in_an_hour(),
    );
    assert_eq!(
        decide(&auth, &api_server_token, Role::Writer).await,
        Decision::Unauthenticated {
            reason: DenyReason::Invalid
        }
    );
    assert_eq!(
        fake.access_reviews(),
        1,
        "only the bound token was authorised"
    );
}

#[tokio::test]
async fn access_review_denial_is_forbidden_with_the_subject() {
    let (fake, auth) = setup(KubernetesAuthConfig::default()).await;
    let token = fake.token("monitoring", "grafana");
    fake.grant("system:serviceaccount:monitoring:grafana", "get", None);
    // A grant on another namespace does not count for a cluster-scoped check.
    fake.grant(
        "system:serviceaccount:monitoring:grafana",
        "create",
        Some("monitoring"),
    );

    assert_eq!(
        decide(&auth, &token, Role::Reader).await,
        allowed("system:serviceaccount:monitoring:grafana")
    );
    for role in [Role::Writer, Role::Admin] {
        assert_eq!(
            decide(&auth, &token, role).await,
            Decision::Forbidden {
                subject: "system:serviceaccount:monitoring:grafana".to_owned()
            },
            "{role}"
        );
    }
}

#[tokio::test]
async fn configured_namespace_is_sent_and_a_role_binding_there_grants() {
    let (fake, auth) = setup(KubernetesAuthConfig {
        namespace: Some("remaudit".to_owned()),
        ..KubernetesAuthConfig::default()
    })
    .await;
    let token = fake.token("kubernaut", "orchestrator");
    fake.grant(
        "system:serviceaccount:kubernaut:orchestrator",
        "create",
        Some("remaudit"),
    );
    fake.grant(
        "system:serviceaccount:kubernaut:orchestrator",
        "get",
        Some("elsewhere"),
    );

    assert_eq!(
        decide(&auth, &token, Role::Writer).await,
        allowed("system:serviceaccount:kubernaut:orchestrator")
    );
    assert_eq!(
        decide(&auth, &token, Role::Reader).await,
        Decision::Forbidden {
            subject: "system:serviceaccount:kubernaut:orchestrator".to_owned()
        }
    );
    let namespaces: Vec<_> = fake
        .seen_access_reviews
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.spec.resource_attributes.clone().unwrap().namespace)
        .collect();
    assert_eq!(
        namespaces,
        [Some("remaudit".to_owned()), Some("remaudit".to_owned())]
    );
}

/// The decision is Unavailable (a 503), its detail names the review, and the
/// token is nowhere in it.
fn assert_unavailable(decision: &Decision, token: &str, mentions: &str) {
    let Decision::Unavailable { detail } = decision else {
        panic!("expected Unavailable, got {decision:?}");
    };
    assert!(detail.contains(mentions), "{detail}");
    assert!(!detail.contains(token), "the token leaked into {detail}");
}

#[tokio::test]
async fn api_server_down_failing_or_hanging_is_unavailable_and_not_cached() {
    // Nothing listens: the port of a listener that was closed.
    let closed = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let down = KubernetesAuthenticator::new(client(closed), KubernetesAuthConfig::default());
    let token = Fake::new().token("kubernaut", "orchestrator");
    assert_unavailable(
        &decide(&down, &token, Role::Writer).await,
        &token,
        "TokenReview",
    );

    let (fake, auth) = setup(KubernetesAuthConfig {
        review_timeout: Duration::from_millis(300),
        ..KubernetesAuthConfig::default()
    })
    .await;
    let token = fake.token("kubernaut", "orchestrator");
    fake.grant(
        "system:serviceaccount:kubernaut:orchestrator",
        "create",
        None,
    );

    fake.set_mode(Mode::Failing);
    assert_unavailable(
        &decide(&auth, &token, Role::Writer).await,
        &token,
        "TokenReview",
    );

    fake.set_mode(Mode::Hanging);
    assert_unavailable(
        &decide(&auth, &token, Role::Writer).await,
        &token,
        "did not answer",
    );

    // Failures were not cached: once the API server is back, the token works.
    fake.set_mode(Mode::Normal);
    assert_eq!(
        decide(&auth, &token, Role::Writer).await,
        allowed("system:serviceaccount:kubernaut:orchestrator")
    );
    assert_eq!(fake.token_reviews(), 3);

    // An access review that fails is Unavailable too, not Forbidden.
    fake.set_mode(Mode::Failing);
    assert_unavailable(
        &decide(&auth, &token, Role::Reader).await,
        &token,
        "SubjectAccessReview",
    );
}

#[tokio::test]
async fn answers_are_cached_per_token_and_role_and_concurrent_misses_ask_once() {
    let (fake, auth) = setup(KubernetesAuthConfig::default()).await;
    let auth = Arc::new(auth);
    let token = fake.token("kubernaut", "orchestrator");
    fake.grant(
        "system:serviceaccount:kubernaut:orchestrator",
        "create",
        None,
    );

    let calls: Vec<_> = (0..16)
        .map(|_| {
            let auth = auth.clone();
            let token = token.clone();
            tokio::spawn(async move { decide(&auth, &token, Role::Writer).await })
        })
        .collect();
    for call in calls {
        assert_eq!(
            call.await.unwrap(),
            allowed("system:serviceaccount:kubernaut:orchestrator")
        );
    }
    assert_eq!(
        fake.token_reviews(),
        1,
        "identical concurrent requests ask once"
    );
    assert_eq!(fake.access_reviews(), 1);

    // Another role reuses the identity but asks its own access review; a
    // denial is cached as well.
    for _ in 0..3 {
        assert_eq!(
            decide(&auth, &token, Role::Admin).await,
            Decision::Forbidden {
                subject: "system:serviceaccount:kubernaut:orchestrator".to_owned()
            }
        );
    }
    assert_eq!(fake.token_reviews(), 1);
    assert_eq!(fake.access_reviews(), 2);

    // An unknown token's refusal is cached too.
    let unknown = Fake::new().token("kubernaut", "ghost");
    for _ in 0..3 {
        assert!(matches!(
            decide(&auth, &unknown, Role::Writer).await,
            Decision::Unauthenticated { .. }
        ));
    }
    assert_eq!(fake.token_reviews(), 2);
}

#[tokio::test]
async fn cache_never_holds_more_entries_than_its_bound() {
    let (fake, auth) = setup(KubernetesAuthConfig {
        max_entries: 4,
        ..KubernetesAuthConfig::default()
    })
    .await;
    fake.grant("system:authenticated", "get", None);
    for i in 0..40 {
        let token = fake.token("tenants", &format!("reader-{i}"));
        assert_eq!(
            decide(&auth, &token, Role::Reader).await,
            allowed(&format!("system:serviceaccount:tenants:reader-{i}"))
        );
        let (identities, access) = auth.cached_entries().await;
        assert!(
            identities <= 4 && access <= 4,
            "{identities} identities, {access} access entries"
        );
        assert!(identities >= 1 && access >= 1, "the cache keeps something");
    }
    assert_eq!(fake.token_reviews(), 40);
}

#[tokio::test]
async fn entries_expire_after_their_ttl_and_refusals_sooner() {
    let (fake, auth) = setup(KubernetesAuthConfig {
        allowed_ttl: Duration::from_hours(1),
        denied_ttl: Duration::from_millis(200),
        ..KubernetesAuthConfig::default()
    })
    .await;
    let token = fake.token("kubernaut", "orchestrator");
    fake.grant(
        "system:serviceaccount:kubernaut:orchestrator",
        "create",
        None,
    );

    // The refusal expires: once the grant exists, the same token is let in
    // without any restart.
    fake.grants.lock().unwrap().clear();
    assert!(matches!(
        decide(&auth, &token, Role::Writer).await,
        Decision::Forbidden { .. }
    ));
    fake.grant(
        "system:serviceaccount:kubernaut:orchestrator",
        "create",
        None,
    );
    eventually("the cached denial expires", || async {
        decide(&auth, &token, Role::Writer).await
            == allowed("system:serviceaccount:kubernaut:orchestrator")
    })
    .await;
    // The identity (allowed, one hour) was asked once.
    assert_eq!(fake.token_reviews(), 1);

    // A short allowed TTL: a revoked grant stops working once it passes.
    let (fake, auth) = setup(KubernetesAuthConfig {
        allowed_ttl: Duration::from_millis(200),
        ..KubernetesAuthConfig::default()
    })
    .await;
    let token = fake.token("kubernaut", "orchestrator");
    fake.grant(
        "system:serviceaccount:kubernaut:orchestrator",
        "create",
        None,
    );
    assert_eq!(
        decide(&auth, &token, Role::Writer).await,
        allowed("system:serviceaccount:kubernaut:orchestrator")
    );
    fake.grants.lock().unwrap().clear();
    eventually("the cached access expires", || async {
        matches!(
            decide(&auth, &token, Role::Writer).await,
            Decision::Forbidden { .. }
        )
    })
    .await;
    assert!(fake.token_reviews() >= 2, "the identity was asked again");
}

#[tokio::test]
async fn file_tokens_and_certificates_fall_through_without_asking() {
    let (fake, auth) = setup(KubernetesAuthConfig::default()).await;
    for token in [
        "rmt_3q2v8yb1c0y4m0kq7xg5r2n6f1w9d8s3",
        "not a token",
        "",
        "a.b",
    ] {
        assert_eq!(
            decide(&auth, token, Role::Writer).await,
            Decision::NotMine,
            "{token:?}"
        );
    }
    assert_eq!(
        auth.decide(
            Credential::ClientCertificate("CN=orchestrator"),
            Role::Writer
        )
        .await,
        Decision::NotMine
    );
    assert_eq!(fake.token_reviews(), 0);
    assert_eq!(fake.access_reviews(), 0);
}

#[tokio::test]
async fn reviews_and_cache_hits_are_counted_by_kind_and_outcome() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // The test runtime has one thread: everything below records here.
    let _local = metrics::set_default_local_recorder(&recorder);

    let (fake, auth) = setup(KubernetesAuthConfig {
        review_timeout: Duration::from_millis(300),
        ..KubernetesAuthConfig::default()
    })
    .await;
    let token = fake.token("kubernaut", "orchestrator");
    fake.grant(
        "system:serviceaccount:kubernaut:orchestrator",
        "create",
        None,
    );
    let unknown = Fake::new().token("kubernaut", "ghost");

    decide(&auth, &token, Role::Writer).await; // token allowed, access allowed
    decide(&auth, &token, Role::Writer).await; // two hits
    decide(&auth, &token, Role::Admin).await; // token hit, access denied
    decide(&auth, &unknown, Role::Writer).await; // token denied
    fake.set_mode(Mode::Failing);
    decide(&auth, &token, Role::Reader).await; // token hit, access error

    let mut counts: Vec<Series> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, .., value)| {
            let DebugValue::Counter(n) = value else {
                return None;
            };
            let mut labels: Vec<_> = key
                .key()
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            Some((key.key().name().to_owned(), labels, n))
        })
        .collect();
    counts.sort();
    let series = |name: &str, kind: &str, outcome: Option<&str>, n: u64| {
        let mut labels = vec![("kind".to_owned(), kind.to_owned())];
        if let Some(outcome) = outcome {
            labels.push(("outcome".to_owned(), outcome.to_owned()));
        }
        (name.to_owned(), labels, n)
    };
    let mut expected = vec![
        series(REVIEWS_TOTAL, "token", Some("allowed"), 1),
        series(REVIEWS_TOTAL, "token", Some("denied"), 1),
        series(REVIEWS_TOTAL, "access", Some("allowed"), 1),
        series(REVIEWS_TOTAL, "access", Some("denied"), 1),
        series(REVIEWS_TOTAL, "access", Some("error"), 1),
        series(CACHE_HITS_TOTAL, "token", None, 3),
        series(CACHE_HITS_TOTAL, "access", None, 1),
    ];
    expected.sort();
    assert_eq!(counts, expected);
}
