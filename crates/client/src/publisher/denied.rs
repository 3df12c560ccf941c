//! Requests refused for the caller's credentials (401, 403), or that could
//! not carry them (an unusable token file, a failed TLS handshake). Their
//! records stay queued and are retried with backoff, as in an outage; each
//! such request is counted by reason, and logged at warn at most once a
//! [`LOG_EVERY`] per reason, never with the token.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::ApiError;
use crate::metrics as m;

/// Least time between two warnings for the same reason.
pub(crate) const LOG_EVERY: Duration = Duration::from_mins(1);

/// Why a request was denied; the `reason` label of [`m::DENIED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denial {
    /// 401: no token, or one the service does not accept.
    Unauthorized,
    /// 403: a caller without the writer role.
    Forbidden,
    /// The token file cannot be read, is empty or holds no single token.
    TokenFile,
    /// The TLS handshake or layer failed.
    Tls,
}

impl Denial {
    const ALL: [Denial; 4] = [
        Denial::Unauthorized,
        Denial::Forbidden,
        Denial::TokenFile,
        Denial::Tls,
    ];

    /// The denial `err` is, if it is one.
    pub(crate) fn of(err: &ApiError) -> Option<Self> {
        match err {
            ApiError::Denied { status: 403, .. } => Some(Self::Forbidden),
            ApiError::Denied { .. } => Some(Self::Unauthorized),
            ApiError::Credentials(_) => Some(Self::TokenFile),
            ApiError::Transport { .. } if err.is_tls() => Some(Self::Tls),
            _ => None,
        }
    }

    /// The metric label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::TokenFile => "token_file",
            Self::Tls => "tls",
        }
    }

    /// What the operator should look at.
    fn hint(self) -> &'static str {
        match self {
            Self::Unauthorized => {
                "the audit service does not accept the publisher's token (or none was sent): check --token-file / REMAUDIT_TOKEN_FILE against the service's tokens file or TokenReview audience"
            }
            Self::Forbidden => {
                "the publisher's token lacks the writer role: give it a token whose subject may write"
            }
            Self::TokenFile => {
                "the publisher cannot use its token file: make it readable and hold one token"
            }
            Self::Tls => {
                "TLS with the audit service failed: check --ca-file / REMAUDIT_CA_FILE and the client certificate"
            }
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|d| *d == self).unwrap_or(0)
    }
}

/// Per reason: when it was last logged, and how many denials since.
#[derive(Default)]
pub(crate) struct DenialLog {
    last: Mutex<[Option<(Instant, u64)>; 4]>,
}

impl DenialLog {
    /// Counts one denied request and logs it when this reason has not been
    /// logged for [`LOG_EVERY`]; `error` is the error's message (which never
    /// holds the token).
    pub(crate) fn record(&self, denial: Denial, records: usize, error: &str) {
        metrics::counter!(m::DENIED, "reason" => denial.as_str()).increment(1);
        let now = Instant::now();
        let suppressed = {
            let mut last = self
                .last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let slot = &mut last[denial.index()];
            match slot {
                Some((at, since)) if now.duration_since(*at) < LOG_EVERY => {
                    *since += 1;
                    return;
                }
                Some((_, since)) => {
                    let n = *since;
                    *slot = Some((now, 0));
                    n
                }
                None => {
                    *slot = Some((now, 0));
                    0
                }
            }
        };
        tracing::warn!(
            reason = denial.as_str(),
            records,
            %error,
            similar_since_last_warning = suppressed,
            "audit batch denied; its records stay queued and are retried: {}",
            denial.hint()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_failures_map_to_bounded_reasons() {
        let denied = |status| ApiError::Denied {
            url: "u".into(),
            status,
            detail: String::new(),
            problem: None,
        };
        assert_eq!(Denial::of(&denied(401)), Some(Denial::Unauthorized));
        assert_eq!(Denial::of(&denied(403)), Some(Denial::Forbidden));
        let unreadable = ApiError::Credentials(crate::credentials::CredentialError::TokenEmpty {
            path: "t".into(),
        });
        assert_eq!(Denial::of(&unreadable), Some(Denial::TokenFile));
        let refused = ApiError::Refused {
            url: "u".into(),
            status: 422,
            retry_after: None,
            problem: None,
            body: String::new(),
        };
        assert_eq!(Denial::of(&refused), None);
        for d in Denial::ALL {
            assert_eq!(Denial::ALL[d.index()], d);
        }
    }
}
