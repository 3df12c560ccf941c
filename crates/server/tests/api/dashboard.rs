//! The dashboard's files over loopback: every page answers the same shell
//! under the strict policy, assets come with their types and entity tags, a
//! browser holding the current version gets `304`, and nothing is served
//! that the binary does not embed. The pages work in a real browser in
//! `web/test/dashboard.test.mjs` (scripts/web-test).

use remaudit_server::web::{CONTENT_SECURITY_POLICY, PAGES};

use crate::auth::spawn_secured;

#[tokio::test]
async fn pages_and_assets_are_served_without_a_token_under_the_policy() {
    let db = remaudit_testkit::SqliteDb::create();
    // Auth on and no anonymous role: the files need no token, the data does.
    let s = spawn_secured(db.store().await, None, false).await;
    let app = &s.app;
    let mut shell = None;
    for page in PAGES {
        let response = app
            .http
            .get(app.url(&format!("{page}?window=7d")))
            .send()
            .await
            .expect("page");
        assert_eq!(response.status(), 200, "{page}");
        let headers = response.headers().clone();
        assert_eq!(
            headers["content-security-policy"], CONTENT_SECURITY_POLICY,
            "{page}"
        );
        assert_eq!(headers["content-type"], "text/html; charset=utf-8");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["cache-control"], "no-cache");
        let body = response.text().await.expect("body");
        assert!(body.contains(r#"<script type="module" src="/assets/app.js">"#));
        assert!(!body.contains("<script>"), "no inline script");
        // Every page is the same shell; the script draws the one asked for.
        assert_eq!(shell.get_or_insert(body.clone()), &body, "{page}");
    }
    for (path, kind) in [
        ("/assets/app.js", "text/javascript; charset=utf-8"),
        ("/assets/style.css", "text/css; charset=utf-8"),
        (
            "/assets/vendor/uplot/uPlot.esm.js",
            "text/javascript; charset=utf-8",
        ),
        ("/assets/vendor/uplot/LICENSE", "text/plain; charset=utf-8"),
    ] {
        let response = app.http.get(app.url(path)).send().await.expect("asset");
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["content-type"], kind, "{path}");
        let etag = response.headers()["etag"].clone();
        let again = app
            .http
            .get(app.url(path))
            .header("if-none-match", etag.clone())
            .send()
            .await
            .expect("conditional");
        assert_eq!(again.status(), 304, "{path}");
        assert_eq!(again.headers()["etag"], etag);
        assert!(again.bytes().await.expect("body").is_empty());
    }
    // The data behind the pages still needs a token.
    let data = app
        .http
        .get(app.url(remaudit_api::paths::ANALYTICS_SUCCESS_RATE))
        .send()
        .await
        .expect("data");
    assert_eq!(data.status(), 401);
}

#[tokio::test]
async fn an_unknown_asset_or_path_is_a_problem_not_a_page() {
    let db = remaudit_testkit::SqliteDb::create();
    let app = crate::helpers::spawn_app(db.store().await).await;
    for path in [
        "/assets/nope.js",
        "/assets/../Cargo.toml",
        "/assets/%2e%2e/src/web.rs",
        "/assets/vendor/uplot",
        "/postmortem/extra",
    ] {
        let response = app.http.get(app.url(path)).send().await.expect("request");
        assert_eq!(response.status(), 404, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
}
