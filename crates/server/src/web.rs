//! The dashboard: static pages and scripts compiled into the binary and
//! served from memory, under a strict Content-Security-Policy.
//!
//! Every page path answers the same HTML shell; `app.js` reads the path and
//! query string and draws the page from the public API, with the caller's
//! token. Nothing here reads the database or needs a role: the pages hold no
//! data until the API hands it over.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use crate::auth::tokens::hex;
use crate::error::ApiError;

/// The dashboard's pages: each answers the same HTML shell, and the script draws the one asked for.
pub const PAGES: [&str; 4] = ["/", "/postmortem", "/remediation", "/search"];

/// What the browser may load and run on a dashboard page: only this
/// origin's own scripts, styles and API; no inline script or style, no
/// frames, no other origin.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; font-src 'self'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $content_type:literal) => {
        Asset {
            path: $path,
            content_type: $content_type,
            body: include_bytes!(concat!("../assets/", $path)),
        }
    };
}

const INDEX: Asset = asset!("index.html", "text/html; charset=utf-8");

/// Files under `/assets/`.
const ASSETS: [Asset; 6] = [
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!(
        "vendor/uplot/uPlot.esm.js",
        "text/javascript; charset=utf-8"
    ),
    asset!("vendor/uplot/uPlot.min.css", "text/css; charset=utf-8"),
    asset!("vendor/uplot/LICENSE", "text/plain; charset=utf-8"),
];

/// Each file's entity tag: a quoted prefix of its SHA-256, computed once.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    std::iter::once(&INDEX)
        .chain(ASSETS.iter())
        .map(|a| {
            let digest = Sha256::digest(a.body);
            format!("\"{}\"", hex(&digest[..12]))
        })
        .collect()
});

/// The routes of the pages and their assets.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let router = PAGES.iter().fold(Router::new(), |router, page| {
        router.route(page, get(page_shell))
    });
    router.route("/assets/{*path}", get(asset_file))
}

async fn page_shell(headers: HeaderMap) -> Response {
    answer(&INDEX, &ETAGS[0], &headers)
}

async fn asset_file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().position(|a| a.path == path) {
        Some(i) => answer(&ASSETS[i], &ETAGS[i + 1], &headers),
        None => ApiError::NotFound(format!("no dashboard asset {path:?}")).into_response(),
    }
}

/// The file, or `304 Not Modified` when the browser holds this version.
/// `no-cache` makes the browser ask each time, so an upgraded binary's
/// files are seen at once; the question costs one round trip and no body.
fn answer(asset: &Asset, etag: &str, request: &HeaderMap) -> Response {
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            // If-None-Match compares weakly: a proxy may have marked the tag weak.
            v.split(',').any(|t| {
                let t = t.trim();
                t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag
            })
        });
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_the_page_names_is_served() {
        let index = std::str::from_utf8(INDEX.body).unwrap();
        for reference in index
            .split(['"', '\''])
            .filter(|s| s.starts_with("/assets/"))
        {
            let path = &reference["/assets/".len()..];
            assert!(
                ASSETS.iter().any(|a| a.path == path),
                "index.html names {reference}, which is not embedded"
            );
        }
        let app = std::str::from_utf8(ASSETS[0].body).unwrap();
        assert!(app.contains("/assets/vendor/uplot/uPlot.esm.js"));
    }

    #[test]
    fn the_policy_allows_nothing_inline_and_no_other_origin() {
        for forbidden in ["unsafe-inline", "unsafe-eval", "http:", "https:", "*"] {
            assert!(
                !CONTENT_SECURITY_POLICY.contains(forbidden),
                "{forbidden} in the policy"
            );
        }
    }

    #[test]
    fn an_etag_matches_and_a_stale_one_does_not() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&ETAGS[0]).unwrap(),
        );
        assert_eq!(
            answer(&INDEX, &ETAGS[0], &headers).status(),
            StatusCode::NOT_MODIFIED
        );
        let weak = format!("\"x\", W/{}", ETAGS[0]);
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(&weak).unwrap());
        assert_eq!(
            answer(&INDEX, &ETAGS[0], &headers).status(),
            StatusCode::NOT_MODIFIED
        );
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"old\""));
        assert_eq!(answer(&INDEX, &ETAGS[0], &headers).status(), StatusCode::OK);
    }
}
