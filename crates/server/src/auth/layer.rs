//! The middleware that guards each `/api/v1` route: it reads the request's
//! credential, asks the authenticators in order, and either lets the request
//! through with its [`Caller`] or answers 401, 403 or 503 (problem+json).
//! Denials are logged (never with the token) and counted by reason.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{Authenticator, Caller, ClientCertificate, Credential, Decision, DenyReason, Role};
use crate::error::ApiError;

/// Name of the counter of refused requests, labelled `reason`
/// (`missing`, `invalid`, `expired`, `role`, `unavailable`).
pub const DENIED_TOTAL: &str = "remaudit_auth_denied_total";

/// Who may call what.
#[derive(Clone)]
pub enum AuthPolicy {
    /// Every route is open (loopback, or `--insecure-no-auth`).
    Off {
        /// Log a warning on every admin call (`--insecure-no-auth` on a
        /// non-loopback address).
        warn_on_admin: bool,
    },
    /// Every `/api/v1` route needs its role.
    Enforced {
        /// Asked in order; the first that recognises the credential decides.
        authenticators: Vec<Arc<dyn Authenticator>>,
        /// What a request with no credential at all may do (`writer`: append only).
        anonymous_role: Option<Role>,
        /// Whether `/metrics` needs the `reader` role.
        metrics_require_reader: bool,
    },
}

impl Default for AuthPolicy {
    /// Open, without warnings: what a library user or a test gets unless it
    /// asks for more. `remaudit serve` decides its own default.
    fn default() -> Self {
        AuthPolicy::Off {
            warn_on_admin: false,
        }
    }
}

impl std::fmt::Debug for AuthPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthPolicy::Off { warn_on_admin } => f
                .debug_struct("Off")
                .field("warn_on_admin", warn_on_admin)
                .finish(),
            AuthPolicy::Enforced {
                authenticators,
                anonymous_role,
                metrics_require_reader,
            } => f
                .debug_struct("Enforced")
                .field(
                    "authenticators",
                    &authenticators.iter().map(|a| a.name()).collect::<Vec<_>>(),
                )
                .field("anonymous_role", anonymous_role)
                .field("metrics_require_reader", metrics_require_reader)
                .finish(),
        }
    }
}

impl AuthPolicy {
    /// Whether `/metrics` is guarded by the `reader` role.
    #[must_use]
    pub fn metrics_guarded(&self) -> bool {
        matches!(
            self,
            AuthPolicy::Enforced {
                metrics_require_reader: true,
                ..
            }
        )
    }
}

/// What the guard of one route knows: the policy and the route's needs.
#[derive(Clone)]
pub(crate) struct Guard {
    pub(crate) policy: Arc<AuthPolicy>,
    pub(crate) role: Role,
    pub(crate) method: &'static str,
    pub(crate) route: &'static str,
    pub(crate) retry_after: Duration,
}

/// The credential a request carries, owned so that it outlives the borrow of
/// the request. `Err` for an `Authorization` header that is not a bearer token.
enum Presented {
    None,
    Bearer(String),
    Certificate(String),
}

fn presented(request: &Request) -> Result<Presented, ()> {
    presented_parts(
        request.headers(),
        request.extensions().get::<ClientCertificate>(),
    )
}

fn presented_parts(
    headers: &HeaderMap,
    certificate: Option<&ClientCertificate>,
) -> Result<Presented, ()> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| ())?;
        let (scheme, token) = value.trim().split_once(' ').ok_or(())?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(());
        }
        return Ok(Presented::Bearer(token.to_owned()));
    }
    if let Some(cert) = certificate {
        return Ok(Presented::Certificate(cert.subject.clone()));
    }
    Ok(Presented::None)
}

/// What the authenticators made of a credential.
enum Verdict {
    Allowed(Caller),
    Denied {
        subject: Option<String>,
        reason: DenyReason,
        error: ApiError,
        detail: Option<String>,
    },
}

fn denied(reason: DenyReason) -> Verdict {
    Verdict::Denied {
        subject: None,
        reason,
        error: ApiError::Unauthenticated(reason),
        detail: None,
    }
}

async fn judge(
    authenticators: &[Arc<dyn Authenticator>],
    anonymous_role: Option<Role>,
    credential: Result<Presented, ()>,
    needed: Role,
    retry_after: Duration,
) -> Verdict {
    let credential = match credential {
        Err(()) => return denied(DenyReason::Invalid),
        Ok(Presented::None) => {
            return if anonymous_role.is_some_and(|r| r.grants(needed)) {
                Verdict::Allowed(Caller::anonymous())
            } else {
                denied(DenyReason::Missing)
            };
        }
        Ok(p) => p,
    };
    let credential = match &credential {
        Presented::Bearer(t) => Credential::Bearer(t),
        Presented::Certificate(s) => Credential::ClientCertificate(s),
        Presented::None => unreachable!("handled above"),
    };
    for authenticator in authenticators {
        match authenticator.decide(credential, needed).await {
            Decision::NotMine => {}
            Decision::Allowed { subject } => return Verdict::Allowed(Caller { subject }),
            Decision::Unauthenticated { reason } => return denied(reason),
            Decision::Forbidden { subject } => {
                return Verdict::Denied {
                    subject: Some(subject),
                    reason: DenyReason::Role,
                    error: ApiError::Forbidden(needed),
                    detail: None,
                };
            }
            Decision::Unavailable { detail } => {
                return Verdict::Denied {
                    subject: None,
                    reason: DenyReason::Unavailable,
                    error: ApiError::AuthUnavailable(retry_after),
                    detail: Some(format!("{}: {detail}", authenticator.name())),
                };
            }
        }
    }
    denied(DenyReason::Invalid)
}

/// Lets the request through with its [`Caller`], or refuses it.
pub(crate) async fn authorize(
    State(guard): State<Guard>,
    mut request: Request,
    next: Next,
) -> Response {
    let (authenticators, anonymous_role) = match &*guard.policy {
        AuthPolicy::Off { warn_on_admin } => {
            if *warn_on_admin && guard.role == Role::Admin {
                tracing::warn!(
                    method = guard.method,
                    route = guard.route,
                    "admin call without authentication: the server runs with --insecure-no-auth"
                );
            }
            request.extensions_mut().insert(Caller::anonymous());
            return next.run(request).await;
        }
        AuthPolicy::Enforced {
            authenticators,
            anonymous_role,
            ..
        } => (authenticators, *anonymous_role),
    };
    let credential = presented(&request);
    match judge(
        authenticators,
        anonymous_role,
        credential,
        guard.role,
        guard.retry_after,
    )
    .await
    {
        Verdict::Allowed(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Verdict::Denied {
            subject,
            reason,
            error,
            detail,
        } => {
            // The dashboard asks whoami before it knows whether auth is on:
            // a probe without any credential is not worth a warning or a
            // count that an alert could read as an attack.
            if reason == DenyReason::Missing && guard.route == remaudit_api::paths::WHOAMI {
                tracing::debug!(route = guard.route, "whoami without a credential");
                return error.into_response();
            }
            tracing::warn!(
                subject = subject.as_deref().unwrap_or("-"),
                method = guard.method,
                route = guard.route,
                needed = guard.role.as_str(),
                reason = reason.as_str(),
                detail = detail.as_deref().unwrap_or(""),
                "request denied"
            );
            metrics::counter!(DENIED_TOTAL, "reason" => reason.as_str()).increment(1);
            error.into_response()
        }
    }
}

/// Whether the caller who presented `headers` (and `certificate`) also holds `role`, asked of the
/// authenticators as a route needing it would ask (so a Kubernetes
/// SubjectAccessReview answers for Kubernetes callers). Never counted as a
/// denial: the dashboard asks this to decide what to show.
pub(crate) async fn holds(
    policy: &AuthPolicy,
    headers: &HeaderMap,
    certificate: Option<&ClientCertificate>,
    role: Role,
) -> bool {
    match policy {
        AuthPolicy::Off { .. } => true,
        AuthPolicy::Enforced {
            authenticators,
            anonymous_role,
            ..
        } => {
            // A denial here is not answered, so its Retry-After is unused.
            matches!(
                judge(
                    authenticators,
                    *anonymous_role,
                    presented_parts(headers, certificate),
                    role,
                    Duration::ZERO,
                )
                .await,
                Verdict::Allowed(_)
            )
        }
    }
}
