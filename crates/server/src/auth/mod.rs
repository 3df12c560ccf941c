//! Who is calling, and what they may do.
//!
//! Every `/api/v1` route needs one [`Role`]. A request's [`Credential`] (a
//! bearer token, a verified client certificate, or nothing) goes to each
//! configured [`Authenticator`] in turn; the first that recognises it
//! decides. What a denial answers: [`Decision::Unauthenticated`] is 401,
//! [`Decision::Forbidden`] is 403, [`Decision::Unavailable`] is 503 (an
//! identity service that is down never turns into a 401).

pub mod client_cert;
pub mod kubernetes;
pub mod layer;
pub mod tokens;

pub use layer::{AuthPolicy, DENIED_TOTAL};
pub use tokens::TokensFile;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// What a route needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Appends records (POST only): the orchestrator.
    Writer,
    /// Reads lists, timelines and analytics.
    Reader,
    /// Legal hold, soft delete, retention, the admin log and verification.
    Admin,
}

impl Role {
    /// Every role, in a fixed order.
    pub const ALL: [Role; 3] = [Role::Writer, Role::Reader, Role::Admin];

    /// The role's name, as written in token files and logs.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Writer => "writer",
            Role::Reader => "reader",
            Role::Admin => "admin",
        }
    }

    /// Whether a caller holding `self` may use a route that needs `needed`:
    /// `admin` may also read; `writer` may only write.
    #[must_use]
    pub fn grants(self, needed: Role) -> bool {
        self == needed || (self == Role::Admin && needed == Role::Reader)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}: expected writer, reader or admin"))
    }
}

/// What a request presented.
#[derive(Debug, Clone, Copy)]
pub enum Credential<'a> {
    /// `Authorization: Bearer <token>`.
    Bearer(&'a str),
    /// A client certificate the TLS layer verified against the client CA;
    /// its subject as an RFC 4514 string.
    ClientCertificate(&'a str),
}

/// The verified client certificate of a TLS connection, put in each
/// request's extensions by the TLS layer.
#[derive(Debug, Clone)]
pub struct ClientCertificate {
    /// The certificate's subject, RFC 4514 (for example `CN=orchestrator,O=kubernaut`).
    pub subject: String,
}

/// Why a request was refused; the label of the denied-requests counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// No credential at all.
    Missing,
    /// A credential no authenticator accepts (unknown, malformed).
    Invalid,
    /// A token past its expiry.
    Expired,
    /// A known caller without the route's role.
    Role,
    /// The identity service could not be asked.
    Unavailable,
}

impl DenyReason {
    /// The counter label.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::Missing => "missing",
            DenyReason::Invalid => "invalid",
            DenyReason::Expired => "expired",
            DenyReason::Role => "role",
            DenyReason::Unavailable => "unavailable",
        }
    }
}

/// An authenticator's answer for one credential and one needed role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The credential is not of this authenticator's kind (a token it does
    /// not hold, a certificate it has no mapping for): ask the next one.
    NotMine,
    /// Known caller holding the role.
    Allowed {
        /// Who, for logs and the admin log.
        subject: String,
    },
    /// The credential was recognised but is not valid (expired, revoked): 401.
    Unauthenticated {
        /// Why.
        reason: DenyReason,
    },
    /// Known caller without the role: 403.
    Forbidden {
        /// Who.
        subject: String,
    },
    /// The identity service could not answer: 503.
    Unavailable {
        /// What failed, for the log (never a token).
        detail: String,
    },
}

/// One way of proving who a caller is.
#[async_trait]
pub trait Authenticator: Send + Sync {
    /// Decides whether `credential` may use a route that needs `needed`.
    async fn decide(&self, credential: Credential<'_>, needed: Role) -> Decision;

    /// A short name for logs (`tokens-file`, `kubernetes`, `client-certificate`).
    fn name(&self) -> &'static str;
}

/// Who made a request, put in its extensions by the auth layer before any
/// handler runs; handlers that record admin actions read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The authenticated subject; `anonymous` when auth is off or the
    /// anonymous role let the request in.
    pub subject: String,
}

impl Caller {
    /// The caller of a request no credential vouched for.
    #[must_use]
    pub fn anonymous() -> Self {
        Caller {
            subject: "anonymous".to_owned(),
        }
    }
}
