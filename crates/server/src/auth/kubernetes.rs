//! Kubernetes ServiceAccount tokens: `TokenReview` and `SubjectAccessReview`.
//!
//! A bearer token that looks like a JWT is sent to the Kubernetes API server
//! in a `TokenReview` (authentication.k8s.io/v1) bound to the configured
//! audiences; the answer must name one of them. The authenticated user and
//! groups are then checked with a `SubjectAccessReview`
//! (authorization.k8s.io/v1) on the virtual resource
//! `remediationaudits.remaudit.kubernaut.io`: verb `create` for a writer,
//! `get` for a reader, `delete` for an admin. No such resource exists; RBAC
//! rules may name any resource, and this one only stands for the audit trail.
//!
//! The check is cluster-scoped unless a namespace is configured: then a
//! `RoleBinding` in that namespace grants access as well as a
//! `ClusterRoleBinding` does.
//!
//! Answers are cached in two bounded caches (identities, and access per
//! role), keyed by the SHA-256 of the token, never the token. Allowed answers
//! live for the allowed TTL (never past the token's own `exp`), refusals for
//! the shorter denied TTL; failures to ask are not cached. Concurrent misses
//! for one key share a single review.
//!
//! A token that is not JWT-shaped (`rmt_…` from the tokens file) is never
//! sent to the API server: it is [`Decision::NotMine`], so remaudit's own
//! tokens do not leak to another service, nor fail when it is down.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use moka::Expiry;
use moka::future::Cache;
use sha2::{Digest as _, Sha256};

use super::{Authenticator, Credential, Decision, DenyReason, Role};

/// API group of the virtual resource checked by `SubjectAccessReview`.
pub const RESOURCE_GROUP: &str = "remaudit.kubernaut.io";
/// The virtual resource checked by `SubjectAccessReview`.
pub const RESOURCE: &str = "remediationaudits";
/// Counter of reviews sent to the API server, by `kind` (`token`, `access`)
/// and `outcome` (`allowed`, `denied`, `error`).
pub const REVIEWS_TOTAL: &str = "remaudit_auth_kubernetes_reviews_total";
/// Counter of answers taken from the cache, by `kind` (`token`, `access`).
pub const CACHE_HITS_TOTAL: &str = "remaudit_auth_kubernetes_cache_hits_total";

/// Registers the descriptions of this module's metrics with the installed recorder.
pub fn describe_metrics() {
    metrics::describe_counter!(
        REVIEWS_TOTAL,
        "TokenReviews (kind=token) and SubjectAccessReviews (kind=access) sent to the Kubernetes API server, by outcome (allowed, denied, error)"
    );
    metrics::describe_counter!(
        CACHE_HITS_TOTAL,
        "Kubernetes auth answers taken from the cache instead of the API server, by kind (token, access)"
    );
}

/// The RBAC verb on [`RESOURCE`] that grants `role`.
#[must_use]
pub fn verb(role: Role) -> &'static str {
    match role {
        Role::Writer => "create",
        Role::Reader => "get",
        Role::Admin => "delete",
    }
}

/// How the Kubernetes authenticator asks and caches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesAuthConfig {
    /// Audiences a token must be bound to (at least one).
    pub audiences: Vec<String>,
    /// Namespace of the `SubjectAccessReview`; `None` for a cluster-scoped check.
    pub namespace: Option<String>,
    /// How long an identity or an access that was granted stays cached.
    pub allowed_ttl: Duration,
    /// How long a refusal stays cached (at most `allowed_ttl`).
    pub denied_ttl: Duration,
    /// Most entries in each of the two caches (identities, access).
    pub max_entries: u64,
    /// Longest wait for one review before the answer is 503.
    pub review_timeout: Duration,
}

impl KubernetesAuthConfig {
    /// The audience tokens are bound to when none is configured.
    pub const DEFAULT_AUDIENCE: &'static str = "remaudit";
}

impl Default for KubernetesAuthConfig {
    fn default() -> Self {
        Self {
            audiences: vec![Self::DEFAULT_AUDIENCE.to_owned()],
            namespace: None,
            allowed_ttl: Duration::from_mins(1),
            denied_ttl: Duration::from_secs(10),
            max_entries: 10_000,
            review_timeout: Duration::from_secs(5),
        }
    }
}

/// SHA-256 of a token: the only form in which a token is kept.
type TokenHash = [u8; 32];

/// Who the API server says a token belongs to.
#[derive(Debug)]
struct User {
    username: String,
    uid: Option<String>,
    groups: Vec<String>,
    extra: BTreeMap<String, Vec<String>>,
}

/// A `TokenReview`'s answer.
#[derive(Debug, Clone)]
enum Identity {
    Authenticated(Arc<User>),
    Rejected,
}

/// A cached answer with its own lifetime.
#[derive(Debug, Clone)]
struct Cached<T> {
    value: T,
    ttl: Duration,
}

/// Each entry expires after the TTL it carries.
struct CarriedTtl;

impl<K, T> Expiry<K, Cached<T>> for CarriedTtl {
    fn expire_after_create(
        &self,
        _key: &K,
        value: &Cached<T>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Accepts Kubernetes ServiceAccount tokens (see the module documentation).
pub struct KubernetesAuthenticator {
    client: kube::Client,
    config: KubernetesAuthConfig,
    identities: Cache<TokenHash, Cached<Identity>>,
    access: Cache<(TokenHash, Role), Cached<bool>>,
}

impl std::fmt::Debug for KubernetesAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesAuthenticator")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl KubernetesAuthenticator {
    /// An authenticator asking the API server behind `client`.
    #[must_use]
    pub fn new(client: kube::Client, mut config: KubernetesAuthConfig) -> Self {
        config.denied_ttl = config.denied_ttl.min(config.allowed_ttl);
        let identities = Cache::builder()
            .max_capacity(config.max_entries)
            .expire_after(CarriedTtl)
            .build();
        let access = Cache::builder()
            .max_capacity(config.max_entries)
            .expire_after(CarriedTtl)
            .build();
        Self {
            client,
            config,
            identities,
            access,
        }
    }

    /// The configuration in use.
    #[must_use]
    pub fn config(&self) -> &KubernetesAuthConfig {
        &self.config
    }

    /// Entries held by the identity cache and the access cache, once pending
    /// evictions are applied.
    pub async fn cached_entries(&self) -> (u64, u64) {
        self.identities.run_pending_tasks().await;
        self.access.run_pending_tasks().await;
        (self.identities.entry_count(), self.access.entry_count())
    }

    /// The identity behind `token`, from the cache or a `TokenReview`.
    async fn identity(&self, token: &str, key: TokenHash) -> Result<Identity, Arc<String>> {
        let asked = AtomicBool::new(false);
        let answer = self
            .identities
            .try_get_with(key, async {
                asked.store(true, Ordering::Relaxed);
                let result = self.token_review(token).await;
                let outcome = match &result {
                    Ok(Identity::Authenticated(_)) => "allowed",
                    Ok(Identity::Rejected) => "denied",
                    Err(_) => "error",
                };
                metrics::counter!(REVIEWS_TOTAL, "kind" => "token", "outcome" => outcome)
                    .increment(1);
                result.map(|identity| {
                    let ttl = match identity {
                        Identity::Authenticated(_) => {
                            let mut ttl = self.config.allowed_ttl;
                            if let Some(left) = jwt_expiry(token).map(time_left) {
                                ttl = ttl.min(left);
                            }
                            ttl
                        }
                        Identity::Rejected => self.config.denied_ttl,
                    };
                    Cached {
                        value: identity,
                        ttl,
                    }
                })
            })
            .await;
        if !asked.load(Ordering::Relaxed) {
            metrics::counter!(CACHE_HITS_TOTAL, "kind" => "token").increment(1);
        }
        answer.map(|cached| cached.value)
    }

    /// Whether `user` may act as `role`, from the cache or a `SubjectAccessReview`.
    async fn allowed(&self, key: TokenHash, user: &User, role: Role) -> Result<bool, Arc<String>> {
        let asked = AtomicBool::new(false);
        let answer = self
            .access
            .try_get_with((key, role), async {
                asked.store(true, Ordering::Relaxed);
                let result = self.access_review(user, role).await;
                let outcome = match result {
                    Ok(true) => "allowed",
                    Ok(false) => "denied",
                    Err(_) => "error",
                };
                metrics::counter!(REVIEWS_TOTAL, "kind" => "access", "outcome" => outcome)
                    .increment(1);
                result.map(|allowed| Cached {
                    value: allowed,
                    ttl: if allowed {
                        self.config.allowed_ttl
                    } else {
                        self.config.denied_ttl
                    },
                })
            })
            .await;
        if !asked.load(Ordering::Relaxed) {
            metrics::counter!(CACHE_HITS_TOTAL, "kind" => "access").increment(1);
        }
        answer.map(|cached| cached.value)
    }

    /// Sends a `TokenReview` for `token`.
    async fn token_review(&self, token: &str) -> Result<Identity, String> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(self.config.audiences.clone()),
            },
            ..TokenReview::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = self
            .ask("TokenReview", api.create(&PostParams::default(), &review))
            .await?;
        let Some(status) = answer.status else {
            return Err("the API server answered a TokenReview without a status".to_owned());
        };
        if status.authenticated != Some(true) {
            return Ok(Identity::Rejected);
        }
        // An authenticator that ignores audiences answers none: the token
        // would then be one for the API server itself, not for us.
        let bound = status
            .audiences
            .unwrap_or_default()
            .iter()
            .any(|a| self.config.audiences.contains(a));
        let user = status.user.unwrap_or_default();
        match user.username {
            Some(username) if bound && !username.is_empty() => {
                Ok(Identity::Authenticated(Arc::new(User {
                    username,
                    uid: user.uid,
                    groups: user.groups.unwrap_or_default(),
                    extra: user.extra.unwrap_or_default(),
                })))
            }
            _ => Ok(Identity::Rejected),
        }
    }

    /// Sends a `SubjectAccessReview` for `user` and the verb of `role`.
    async fn access_review(&self, user: &User, role: Role) -> Result<bool, String> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.username.clone()),
                uid: user.uid.clone(),
                groups: Some(user.groups.clone()),
                extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
                resource_attributes: Some(ResourceAttributes {
                    group: Some(RESOURCE_GROUP.to_owned()),
                    resource: Some(RESOURCE.to_owned()),
                    verb: Some(verb(role).to_owned()),
                    namespace: self.config.namespace.clone(),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let answer = self
            .ask(
                "SubjectAccessReview",
                api.create(&PostParams::default(), &review),
            )
            .await?;
        let Some(status) = answer.status else {
            return Err(
                "the API server answered a SubjectAccessReview without a status".to_owned(),
            );
        };
        Ok(status.allowed && status.denied != Some(true))
    }

    /// Awaits one review under the timeout; every failure is a message for the log.
    async fn ask<T>(
        &self,
        kind: &str,
        review: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(self.config.review_timeout, review).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(kube::Error::Api(status))) => {
                let hint = if matches!(status.code, 401 | 403) {
                    format!(
                        "; remaudit's own service account needs `create` on {}s (docs/security-kubernetes.md)",
                        kind.to_lowercase()
                    )
                } else {
                    String::new()
                };
                Err(format!(
                    "the Kubernetes API server refused the {kind} ({} {}): {}{hint}",
                    status.code, status.reason, status.message
                ))
            }
            Ok(Err(e)) => Err(format!(
                "cannot reach the Kubernetes API server for a {kind}: {e}"
            )),
            Err(_) => Err(format!(
                "the Kubernetes API server did not answer a {kind} within {:?}",
                self.config.review_timeout
            )),
        }
    }
}

#[async_trait]
impl Authenticator for KubernetesAuthenticator {
    async fn decide(&self, credential: Credential<'_>, needed: Role) -> Decision {
        let Credential::Bearer(token) = credential else {
            return Decision::NotMine;
        };
        if !looks_like_jwt(token) {
            return Decision::NotMine;
        }
        let key: TokenHash = Sha256::digest(token.as_bytes()).into();
        let user = match self.identity(token, key).await {
            Ok(Identity::Authenticated(user)) => user,
            Ok(Identity::Rejected) => {
                let expired = jwt_expiry(token).is_some_and(|exp| exp <= SystemTime::now());
                return Decision::Unauthenticated {
                    reason: if expired {
                        DenyReason::Expired
                    } else {
                        DenyReason::Invalid
                    },
                };
            }
            Err(detail) => {
                return Decision::Unavailable {
                    detail: detail.as_ref().clone(),
                };
            }
        };
        match self.allowed(key, &user, needed).await {
            Ok(true) => Decision::Allowed {
                subject: user.username.clone(),
            },
            Ok(false) => Decision::Forbidden {
                subject: user.username.clone(),
            },
            Err(detail) => Decision::Unavailable {
                detail: detail.as_ref().clone(),
            },
        }
    }

    fn name(&self) -> &'static str {
        "kubernetes"
    }
}

/// Whether `token` has the shape of a JWS compact serialisation: three
/// base64url segments, the first a JSON object (`eyJ` is `{"`).
fn looks_like_jwt(token: &str) -> bool {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    header.starts_with("eyJ")
        && [header, payload, signature].iter().all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The `exp` claim of a JWT-shaped token, unverified: used only to cache an
/// identity no longer than the token lives, and to name an expired token.
fn jwt_expiry(token: &str) -> Option<SystemTime> {
    #[derive(serde::Deserialize)]
    struct Claims {
        exp: Option<u64>,
    }
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: Claims = serde_json::from_slice(&bytes).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(claims.exp?))
}

/// Time from now until `at`; zero when it has passed.
fn time_left(at: SystemTime) -> Duration {
    at.duration_since(SystemTime::now()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#),
            URL_SAFE_NO_PAD.encode(claims)
        )
    }

    #[test]
    fn jwt_shape_is_recognised_and_file_tokens_are_not() {
        assert!(looks_like_jwt(&jwt(r#"{"sub":"a"}"#)));
        assert!(!looks_like_jwt("rmt_0123456789abcdef"));
        assert!(!looks_like_jwt("eyJ.a"));
        assert!(!looks_like_jwt("eyJ.a.b.c"));
        assert!(!looks_like_jwt("eyJ..b"));
        assert!(!looks_like_jwt("eyJ.a b.c"));
        assert!(!looks_like_jwt("abc.def.ghi"));
    }

    #[test]
    fn expiry_is_read_from_the_payload_when_present() {
        assert_eq!(
            jwt_expiry(&jwt(r#"{"exp":1700000000}"#)),
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(jwt_expiry(&jwt(r#"{"sub":"a"}"#)), None);
        assert_eq!(jwt_expiry("rmt_x"), None);
        assert_eq!(jwt_expiry("eyJ.!!!.x"), None);
    }

    #[test]
    fn each_role_has_its_own_verb() {
        assert_eq!(verb(Role::Writer), "create");
        assert_eq!(verb(Role::Reader), "get");
        assert_eq!(verb(Role::Admin), "delete");
    }
}
