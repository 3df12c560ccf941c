//! [`ApiClient`]: one typed client of the remaudit HTTP API, speaking the
//! types of `remaudit-api`, for the publisher, the CLI, benchmarks and tests.
//!
//! Answers are decoded strictly: a value the client does not know (such as a
//! new batch item status) is a [`ApiError::Decode`], never mapped to a
//! default.
//!
//! With a [`TokenFile`], every request carries `Authorization: Bearer`; a
//! 401 makes the client read the file again at once and, when the token
//! changed since the request was sent, send the request once more.

use std::time::Duration;

use bytes::Bytes;
use remaudit_api::admin::{AdminLogParams, AdminLogResponse, ReasonBody};
use remaudit_api::analytics::{
    AnalyticsParams, DurationsReport, FailuresReport, RemediationList, RetriesReport,
    SuccessRateReport,
};
use remaudit_api::audit::{
    BatchResponse, ListResponse, MAX_PAGE, StoreResult, TimelineParams, TimelineResponse,
};
use remaudit_api::{Problem, RemediationOrchestrationAudit, StoredAudit, paths};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::credentials::{Bearer, CredentialError, TokenFile};

/// How long one call of a client made by [`ApiClient::new`] may take.
pub const API_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a call of the API failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The HTTP client could not be built.
    #[error("cannot build HTTP client: {0}")]
    Build(#[source] reqwest::Error),
    /// The base URL and path make no URL.
    #[error(
        "{url:?} is not a URL: {reason}; give the service's base URL, such as http://127.0.0.1:8085"
    )]
    InvalidUrl {
        /// What was tried.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The request or the reading of its answer did not complete
    /// (connection refused, timeout, reset, ...). Worth retrying.
    #[error("request to {url} failed: {source}")]
    Transport {
        /// The URL asked.
        url: String,
        /// What the HTTP client said.
        #[source]
        source: reqwest::Error,
    },
    /// The service answered 408, 429 or 5xx: it may take the same request
    /// later.
    #[error("{url} answered {status}, try again later: {}", describe(problem.as_deref(), body))]
    Unavailable {
        /// The URL asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// Its `Retry-After`, in whole seconds, when it gave one.
        retry_after: Option<Duration>,
        /// The error document, when the body was one.
        problem: Option<Box<Problem>>,
        /// The body as text.
        body: String,
    },
    /// The service refused the request with another status; sending it
    /// again unchanged will not help.
    #[error("{url} answered {status}: {}", describe(problem.as_deref(), body))]
    Refused {
        /// The URL asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// Its `Retry-After`, in whole seconds, when it gave one.
        retry_after: Option<Duration>,
        /// The error document, when the body was one.
        problem: Option<Box<Problem>>,
        /// The body as text.
        body: String,
    },
    /// The service refused the caller: 401 (no credential, or one it does
    /// not accept) or 403 (a caller without the route's role).
    #[error("{url} answered {status}: {detail}")]
    Denied {
        /// The URL asked.
        url: String,
        /// 401 or 403.
        status: u16,
        /// The error document's detail, else the body as text.
        detail: String,
        /// The error document, when the body was one.
        problem: Option<Box<Problem>>,
    },
    /// The credentials could not be put into the request (the token file
    /// became unreadable, say).
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    /// A success answer this client cannot read: a server newer than the
    /// client, or something in between that is not the service.
    #[error(
        "cannot read the answer of {url} (at {path}: {message}); are the client and the service the same version?"
    )]
    Decode {
        /// The URL asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// Where in the JSON reading stopped.
        path: String,
        /// What was wrong there.
        message: String,
    },
}

/// The detail of a problem, else the body.
fn describe<'a>(problem: Option<&'a Problem>, body: &'a str) -> &'a str {
    problem.map_or(body, |p| p.detail.as_str())
}

impl ApiError {
    /// Whether the same request may succeed later: transport errors and
    /// statuses 408, 429 and 5xx.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Transport { .. } | Self::Unavailable { .. })
    }

    /// Whether the request failed in the TLS handshake or TLS layer (an
    /// unknown CA, a name mismatch, a refused client certificate).
    #[must_use]
    pub fn is_tls(&self) -> bool {
        let Self::Transport { source, .. } = self else {
            return false;
        };
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source);
        while let Some(e) = cause {
            if e.is::<rustls::Error>() {
                return true;
            }
            // An I/O error's `source` skips the error it wraps: step into that.
            cause = match e
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
            {
                Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
                None => e.source(),
            };
        }
        false
    }

    /// The HTTP status of the answer, when there was one.
    #[must_use]
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Unavailable { status, .. }
            | Self::Refused { status, .. }
            | Self::Denied { status, .. }
            | Self::Decode { status, .. } => Some(*status),
            Self::Build(_)
            | Self::InvalidUrl { .. }
            | Self::Transport { .. }
            | Self::Credentials(_) => None,
        }
    }

    /// The error document of a non-2xx answer, when its body was one.
    #[must_use]
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Self::Unavailable { problem, .. }
            | Self::Refused { problem, .. }
            | Self::Denied { problem, .. } => problem.as_deref(),
            _ => None,
        }
    }

    /// The body of a non-2xx answer, as text.
    #[must_use]
    pub fn body(&self) -> Option<&str> {
        match self {
            Self::Unavailable { body, .. } | Self::Refused { body, .. } => Some(body),
            _ => None,
        }
    }

    /// The `Retry-After` of a non-2xx answer.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Unavailable { retry_after, .. } | Self::Refused { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }
}

/// A typed client of one remaudit service.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    /// The base URL, without a trailing slash.
    base: String,
    /// The token sent with every request, when there is one.
    token: Option<TokenFile>,
}

impl ApiClient {
    /// A client of the service at `base_url` (such as `http://127.0.0.1:8085`)
    /// whose calls time out after [`API_TIMEOUT`].
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(base_url: &str) -> Result<Self, ApiError> {
        let http = reqwest::Client::builder()
            .timeout(API_TIMEOUT)
            .build()
            .map_err(ApiError::Build)?;
        Ok(Self::with_http(base_url, http))
    }

    /// A client of the service at `base_url` over a configured HTTP client
    /// (timeouts, TLS, ...).
    #[must_use]
    pub fn with_http(base_url: &str, http: reqwest::Client) -> Self {
        Self {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
            token: None,
        }
    }

    /// This client sending the token in `token` (none for `None`) with
    /// every request. [`Credentials::api_client`](crate::credentials::Credentials::api_client)
    /// builds a client with its TLS settings and token at once.
    #[must_use]
    pub fn with_token(mut self, token: Option<TokenFile>) -> Self {
        self.token = token;
        self
    }

    /// The token file this client sends from, when it sends one.
    #[must_use]
    pub fn token(&self) -> Option<&TokenFile> {
        self.token.as_ref()
    }

    /// The base URL, without a trailing slash.
    #[must_use]
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Stores one record: `created`, or `duplicate` for a replay.
    ///
    /// # Errors
    /// See [`ApiError`]; a conflict is [`ApiError::Refused`] with status 409.
    pub async fn ingest(
        &self,
        record: &RemediationOrchestrationAudit,
    ) -> Result<StoreResult, ApiError> {
        let url = self.url(paths::AUDIT);
        let request = self.http.post(&url).json(record);
        self.send(url, request).await
    }

    /// Stores a batch; the answer has one item per record, in order.
    ///
    /// # Errors
    /// See [`ApiError`].
    pub async fn ingest_batch(
        &self,
        records: &[RemediationOrchestrationAudit],
    ) -> Result<BatchResponse, ApiError> {
        let url = self.url(paths::AUDIT_BATCH);
        let request = self.http.post(&url).json(records);
        self.send(url, request).await
    }

    /// Stores a batch already encoded as a JSON array of records (as the
    /// publisher keeps them).
    ///
    /// # Errors
    /// See [`ApiError`].
    pub async fn ingest_batch_json(&self, body: Bytes) -> Result<BatchResponse, ApiError> {
        let url = self.url(paths::AUDIT_BATCH);
        let request = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        self.send(url, request).await
    }

    /// One page of remediations, newest first.
    ///
    /// # Errors
    /// See [`ApiError`].
    pub async fn list(
        &self,
        params: &remaudit_api::audit::ListParams,
    ) -> Result<ListResponse, ApiError> {
        self.get(paths::AUDIT, params).await
    }

    /// One remediation and one page of its timeline.
    ///
    /// # Errors
    /// See [`ApiError`]; an unknown id is [`ApiError::Refused`] with status 404.
    pub async fn timeline(
        &self,
        id: i64,
        params: &TimelineParams,
    ) -> Result<TimelineResponse, ApiError> {
        self.get(&paths::audit_item(id), params).await
    }

    /// One remediation and its whole timeline, following every page.
    ///
    /// # Errors
    /// See [`ApiError`].
    pub async fn timeline_all(&self, id: i64) -> Result<TimelineResponse, ApiError> {
        let first = TimelineParams::default().with_limit(MAX_PAGE);
        let mut answer = self.timeline(id, &first).await?;
        while let Some(cursor) = answer.next_cursor.take() {
            let next = TimelineParams::default()
                .with_limit(MAX_PAGE)
                .with_cursor(cursor);
            let page = self.timeline(id, &next).await?;
            answer.timeline.extend(page.timeline);
            answer.next_cursor = page.next_cursor;
        }
        Ok(answer)
    }

    /// Every remediation of one alert (`alert_fingerprint` is required).
    ///
    /// # Errors
    /// See [`ApiError`].
    pub async fn postmortem(&self, params: &AnalyticsParams) -> Result<RemediationList, ApiError> {
        self.get(paths::ANALYTICS_POSTMORTEM, params).await
    }

    /// Outcomes and success rate, with an optional series.
    ///
    /// # Errors
    /// See [`ApiError`].
    pub async fn success_rate(
        &self,
        params: &AnalyticsParams,
    ) -> Result<SuccessRateReport, ApiError> {
        self.get(paths::ANALYTICS_SUCCESS_RATE, params).await
    }

    /// Duration percentiles by final phase.
    ///
    /// # Errors
    /// See [`ApiError`].
    pub async fn durations(&self, params: &AnalyticsParams) -> Result<DurationsReport, ApiError> {
        self.get(paths::ANALYTICS_DURATIONS, params).await
    }

    /// The remediations that took longest.
    ///
    /// # Errors
    /// See [`ApiError`].
    pub async fn slowest(&self, params: &AnalyticsParams) -> Result<RemediationList, ApiError> {
        self.get(paths::ANALYTICS_SLOWEST, params).await
    }

    /// Failures and timeouts by phase.
    ///
    /// # Errors
    /// See [`ApiError`].
    pub async fn failures(&self, params: &AnalyticsParams) -> Result<FailuresReport, ApiError> {
        self.get(paths::ANALYTICS_FAILURES, params).await
    }

    /// Alerts remediated more than once.
    ///
    /// # Errors
    /// See [`ApiError`].
    pub async fn retries(&self, params: &AnalyticsParams) -> Result<RetriesReport, ApiError> {
        self.get(paths::ANALYTICS_RETRIES, params).await
    }

    /// Puts a remediation under legal hold, for `reason` (kept in the admin
    /// log); returns it.
    ///
    /// # Errors
    /// See [`ApiError`]; a missing or invalid reason is
    /// [`ApiError::Refused`] with status 400.
    pub async fn set_legal_hold(&self, id: i64, reason: &str) -> Result<StoredAudit, ApiError> {
        let url = self.url(&paths::audit_legal_hold(id));
        let request = self.http.put(&url).json(&ReasonBody {
            reason: reason.to_owned(),
        });
        self.send(url, request).await
    }

    /// Clears a remediation's legal hold, for `reason` (kept in the admin
    /// log); returns it.
    ///
    /// # Errors
    /// See [`ApiError`].
    pub async fn clear_legal_hold(&self, id: i64, reason: &str) -> Result<StoredAudit, ApiError> {
        let url = self.url(&paths::audit_legal_hold(id));
        let request = self.http.delete(&url).json(&ReasonBody {
            reason: reason.to_owned(),
        });
        self.send(url, request).await
    }

    /// Soft-deletes a remediation, for `reason` (kept in the admin log):
    /// hidden from reads, archived by the next retention run.
    ///
    /// # Errors
    /// See [`ApiError`]; a held remediation is [`ApiError::Refused`] with
    /// status 409.
    pub async fn soft_delete(&self, id: i64, reason: &str) -> Result<(), ApiError> {
        let url = self.url(&paths::audit_item(id));
        let request = self.http.delete(&url).json(&ReasonBody {
            reason: reason.to_owned(),
        });
        self.answer(&url, request).await.map(drop)
    }

    /// One page of the admin log, newest first (needs the admin role).
    ///
    /// # Errors
    /// See [`ApiError`].
    pub async fn admin_log(&self, params: &AdminLogParams) -> Result<AdminLogResponse, ApiError> {
        self.get(paths::ADMIN_LOG, params).await
    }

    /// `path` under the base URL.
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GETs `path` with `params` as its query string.
    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        params: &impl Serialize,
    ) -> Result<T, ApiError> {
        let url = with_query(&self.url(path), params)?;
        let request = self
            .http
            .get(&url)
            .header(reqwest::header::ACCEPT, "application/json");
        self.send(url, request).await
    }

    /// Sends `request` and decodes its success answer.
    async fn send<T: DeserializeOwned>(
        &self,
        url: String,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ApiError> {
        let (status, body) = self.answer(&url, request).await?;
        let mut decoder = serde_json::Deserializer::from_slice(&body);
        serde_path_to_error::deserialize(&mut decoder).map_err(|e| ApiError::Decode {
            status,
            path: e.path().to_string(),
            message: e.inner().to_string(),
            url,
        })
    }

    /// Sends `request` with the token, when there is one; returns the status
    /// and body of a success answer. After a 401 the token file is read
    /// again at once, and the request is sent once more when the token
    /// changed since it was sent.
    async fn answer(
        &self,
        url: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<(u16, Bytes), ApiError> {
        let Some(token) = &self.token else {
            return exchange(url, request).await;
        };
        let bearer = token.bearer()?;
        let again = request.try_clone();
        let first = exchange(url, authorized(request, &bearer)).await;
        match (first, again) {
            (Err(ApiError::Denied { status: 401, .. }), Some(again))
                if token.reload()?.generation != bearer.generation =>
            {
                let bearer = token.bearer()?;
                exchange(url, authorized(again, &bearer)).await
            }
            (first, _) => first,
        }
    }
}

/// `request` with its `Authorization` header.
fn authorized(request: reqwest::RequestBuilder, bearer: &Bearer) -> reqwest::RequestBuilder {
    request.header(reqwest::header::AUTHORIZATION, bearer.header.clone())
}

/// Sends `request`; returns the status and body of a success answer.
async fn exchange(url: &str, request: reqwest::RequestBuilder) -> Result<(u16, Bytes), ApiError> {
    let transport = |source| ApiError::Transport {
        url: url.to_owned(),
        source,
    };
    let response = request.send().await.map_err(transport)?;
    let status = response.status().as_u16();
    let retry_after = retry_after(response.headers());
    let body = response.bytes().await.map_err(transport)?;
    if (200..300).contains(&status) {
        return Ok((status, body));
    }
    let problem = serde_json::from_slice::<Problem>(&body).ok().map(Box::new);
    let text = String::from_utf8_lossy(&body).into_owned();
    let url = url.to_owned();
    Err(if matches!(status, 401 | 403) {
        let detail = match problem.as_deref() {
            Some(p) if !p.detail.is_empty() => p.detail.clone(),
            _ => text.trim().to_owned(),
        };
        ApiError::Denied {
            url,
            status,
            detail,
            problem,
        }
    } else if matches!(status, 408 | 429) || status >= 500 {
        ApiError::Unavailable {
            url,
            status,
            retry_after,
            problem,
            body: text,
        }
    } else {
        ApiError::Refused {
            url,
            status,
            retry_after,
            problem,
            body: text,
        }
    })
}

/// `url` with `params` (a struct of optional text fields) as its query.
fn with_query(url: &str, params: &impl Serialize) -> Result<String, ApiError> {
    let invalid = |reason: String| ApiError::InvalidUrl {
        url: url.to_owned(),
        reason,
    };
    let mut parsed = reqwest::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
    let fields = match serde_json::to_value(params) {
        Ok(serde_json::Value::Object(fields)) => fields,
        Ok(_) => return Err(invalid("query parameters are not a set of fields".into())),
        Err(e) => return Err(invalid(e.to_string())),
    };
    let mut pairs: Vec<(String, String)> = fields
        .into_iter()
        .filter_map(|(name, value)| match value {
            serde_json::Value::Null => None,
            serde_json::Value::String(text) => Some((name, text)),
            other => Some((name, other.to_string())),
        })
        .collect();
    pairs.sort();
    if !pairs.is_empty() {
        parsed.query_pairs_mut().extend_pairs(pairs);
    }
    Ok(parsed.into())
}

/// The `Retry-After` of an answer, in whole seconds.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use remaudit_api::audit::ListParams;

    #[test]
    fn query_strings_carry_only_the_given_parameters() {
        let params = AnalyticsParams::default()
            .with_window("24h")
            .with_namespace("a b&c")
            .with_limit(5);
        let url = with_query("http://h:1/api", &params).expect("url");
        assert_eq!(url, "http://h:1/api?limit=5&namespace=a+b%26c&window=24h");
        let bare = with_query("http://h:1/api", &ListParams::default()).expect("url");
        assert_eq!(bare, "http://h:1/api");
        assert!(matches!(
            with_query("not a url/api", &ListParams::default()),
            Err(ApiError::InvalidUrl { .. })
        ));
    }

    #[test]
    fn an_unknown_batch_status_fails_to_decode() {
        let body = br#"{"created":0,"duplicates":0,"rejected":0,"conflicts":0,"items":[{"index":0,"status":"deferred"}]}"#;
        let mut decoder = serde_json::Deserializer::from_slice(body);
        let err = serde_path_to_error::deserialize::<_, BatchResponse>(&mut decoder)
            .expect_err("refused");
        assert_eq!(err.path().to_string(), "items[0].status");
    }

    #[test]
    fn retryable_errors_are_transport_and_unavailable_statuses() {
        let refused = ApiError::Refused {
            url: "u".into(),
            status: 422,
            retry_after: None,
            problem: None,
            body: "no".into(),
        };
        let unavailable = ApiError::Unavailable {
            url: "u".into(),
            status: 503,
            retry_after: Some(Duration::from_secs(2)),
            problem: None,
            body: String::new(),
        };
        assert!(!refused.is_retryable());
        assert!(unavailable.is_retryable());
        assert_eq!(unavailable.retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(refused.status(), Some(422));
        assert_eq!(refused.body(), Some("no"));
    }
}
