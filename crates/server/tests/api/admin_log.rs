//! The admin log over HTTP, on both backends: every hold, release and delete
//! leaves exactly one entry naming the authenticated caller, the target and
//! the reason; actions that fail leave none; each reason rule is a precise
//! 400; the log's filters and paging (stable while entries are appended).

use std::sync::Arc;

use remaudit_api::admin::{AdminLogParams, AdminLogResponse};
use remaudit_api::paths;
use remaudit_store::Store;
use reqwest::Method;
use serde_json::{Value, json};

use crate::auth::{ADMIN, READER, WRITER, seed, send, spawn_secured};
use crate::helpers::{Answer, TestApp, spawn_app};

crate::both_stores!(
    every_admin_action_leaves_one_entry_naming_its_caller,
    failed_actions_leave_no_entry,
    each_reason_rule_is_a_precise_400,
    admin_log_pages_are_stable_while_entries_are_appended,
    admin_log_filters_and_bad_parameters,
    without_authentication_the_caller_is_anonymous,
);

/// A request as the admin, with a raw body when one is given.
async fn admin(app: &TestApp, method: Method, path: &str, body: Option<(&str, &[u8])>) -> Answer {
    let mut request = app.http.request(method, app.url(path)).bearer_auth(ADMIN);
    if let Some((content_type, bytes)) = body {
        request = request
            .header("content-type", content_type)
            .body(bytes.to_vec());
    }
    Answer::read(request.send().await.expect("request")).await
}

/// The whole admin log (every page) as the admin reads it, newest first.
async fn log(app: &TestApp, query: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("{}?limit=1000&{query}&cursor={c}", paths::ADMIN_LOG),
            None => format!("{}?limit=1000&{query}", paths::ADMIN_LOG),
        };
        let page = send(app, Method::GET, &path, Some(ADMIN), None).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        items.extend(
            page.body["items"]
                .as_array()
                .expect("items")
                .iter()
                .cloned(),
        );
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
}

/// `(action, target, subject, reason)` of each entry.
fn summary(entries: &[Value]) -> Vec<(String, Option<i64>, String, String)> {
    entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().expect("action").to_owned(),
                e["target"].as_i64(),
                e["subject"].as_str().expect("subject").to_owned(),
                e["reason"].as_str().expect("reason").to_owned(),
            )
        })
        .collect()
}

async fn every_admin_action_leaves_one_entry_naming_its_caller(store: Arc<dyn Store>) {
    let s = spawn_secured(store, None, false).await;
    let app = &s.app;
    let id = seed(app, "rr-admin").await;
    let hold = format!("{}?reason=court%20order%2042", paths::audit_legal_hold(id));
    assert_eq!(admin(app, Method::PUT, &hold, None).await.status, 200);
    let release = admin(
        app,
        Method::DELETE,
        &paths::audit_legal_hold(id),
        Some(("application/json", br#"{"reason": "case closed"}"#)),
    )
    .await;
    assert_eq!(release.status, 200, "{}", release.body);
    // The same reason in the query and the body is one reason.
    let delete = admin(
        app,
        Method::DELETE,
        &format!("{}?reason=duplicate%20alert", paths::audit_item(id)),
        Some(("application/json", br#"{"reason": "duplicate alert"}"#)),
    )
    .await;
    assert_eq!(delete.status, 204, "{}", delete.body);

    let entries = log(app, "").await;
    let ops = |action: &str, reason: &str| {
        (
            action.to_owned(),
            Some(id),
            "ops".to_owned(),
            reason.to_owned(),
        )
    };
    assert_eq!(
        summary(&entries),
        [
            ops("delete", "duplicate alert"),
            ops("release", "case closed"),
            ops("hold", "court order 42"),
        ]
    );
    for e in &entries {
        assert_eq!(e["detail"]["remediation_name"], "rr-admin", "{e}");
        assert_eq!(e["detail"]["namespace"], "default", "{e}");
        assert!(e["at"].as_str().is_some_and(|t| t.ends_with('Z')), "{e}");
    }
    let ids: Vec<i64> = entries
        .iter()
        .map(|e| e["id"].as_i64().expect("id"))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");

    // The typed client reads the same log.
    let typed: AdminLogResponse =
        serde_json::from_value(json!({"items": entries})).expect("decode");
    assert_eq!(typed.items.len(), 3);
}

async fn failed_actions_leave_no_entry(store: Arc<dyn Store>) {
    let s = spawn_secured(store, None, false).await;
    let app = &s.app;
    let id = seed(app, "rr-fail").await;
    let reason = "reason=try";
    // No such remediation.
    for (method, path) in [
        (Method::PUT, paths::audit_legal_hold(424_242)),
        (Method::DELETE, paths::audit_legal_hold(424_242)),
        (Method::DELETE, paths::audit_item(424_242)),
    ] {
        admin(app, method, &format!("{path}?{reason}"), None)
            .await
            .assert_problem(404, "not-found");
    }
    // No reason: refused before anything changes.
    admin(app, Method::PUT, &paths::audit_legal_hold(id), None)
        .await
        .assert_problem(400, "invalid-reason");
    let row = send(app, Method::GET, &paths::audit_item(id), Some(READER), None).await;
    assert_eq!(row.body["remediation"]["legal_hold"], false, "not held");
    // The wrong role: refused before the handler.
    send(
        app,
        Method::DELETE,
        &format!("{}?{reason}", paths::audit_item(id)),
        Some(WRITER),
        None,
    )
    .await
    .assert_problem(403, "forbidden");
    assert!(log(app, "").await.is_empty(), "nothing recorded yet");

    // A held row cannot be deleted: the hold is recorded, the refusal is not.
    let held = admin(
        app,
        Method::PUT,
        &format!("{}?{reason}", paths::audit_legal_hold(id)),
        None,
    )
    .await;
    assert_eq!(held.status, 200);
    admin(
        app,
        Method::DELETE,
        &format!("{}?{reason}", paths::audit_item(id)),
        None,
    )
    .await
    .assert_problem(409, "conflict");
    assert_eq!(
        summary(&log(app, "").await),
        [(
            "hold".to_owned(),
            Some(id),
            "ops".to_owned(),
            "try".to_owned()
        )]
    );
}

/// A request body: its content type and bytes.
type Body = Option<(&'static str, Vec<u8>)>;

async fn each_reason_rule_is_a_precise_400(store: Arc<dyn Store>) {
    let s = spawn_secured(store, None, false).await;
    let app = &s.app;
    let id = seed(app, "rr-rules").await;
    let long = "x".repeat(1025);
    let cases: Vec<(String, Body, &str)> = vec![
        (String::new(), None, "required"),
        ("?reason=".to_owned(), None, "required"),
        ("?reason=%20%E3%80%80%20".to_owned(), None, "required"),
        (format!("?reason={long}"), None, "max_length"),
        ("?reason=a%0Ab".to_owned(), None, "text"),
        ("?reason=a%09b".to_owned(), None, "text"),
        (
            String::new(),
            Some(("application/json", br#"{"reason": "  "}"#.to_vec())),
            "required",
        ),
        (
            String::new(),
            Some(("application/json", br#"{"reason": "a\u0007"}"#.to_vec())),
            "text",
        ),
        (
            "?reason=one".to_owned(),
            Some(("application/json", br#"{"reason": "two"}"#.to_vec())),
            "conflict",
        ),
        (
            String::new(),
            Some(("application/json", br#"{"reason": 5}"#.to_vec())),
            "body",
        ),
        (
            String::new(),
            Some((
                "application/json",
                br#"{"reason": "x", "why": "y"}"#.to_vec(),
            )),
            "body",
        ),
        (
            String::new(),
            Some(("application/json", b"{not json".to_vec())),
            "body",
        ),
        // `null` is no body: the reason is still missing.
        (
            String::new(),
            Some(("application/json", b"null".to_vec())),
            "required",
        ),
    ];
    for path in [paths::audit_legal_hold(id), paths::audit_item(id)] {
        for method in [Method::PUT, Method::DELETE] {
            if method == Method::PUT && path == paths::audit_item(id) {
                continue;
            }
            for (query, body, rule) in &cases {
                let body = body.as_ref().map(|(ct, b)| (*ct, b.as_slice()));
                let answer = admin(app, method.clone(), &format!("{path}{query}"), body).await;
                let what = format!("{method} {path}{query} {body:?}");
                let errors = answer.assert_problem(400, "invalid-reason");
                assert_eq!(
                    errors,
                    [("reason".to_owned(), (*rule).to_owned())],
                    "{what}"
                );
            }
        }
    }
    // A body that is not JSON, and an unknown query parameter.
    admin(
        app,
        Method::PUT,
        &paths::audit_legal_hold(id),
        Some(("text/plain", b"because")),
    )
    .await
    .assert_problem(415, "unsupported-media-type");
    admin(
        app,
        Method::PUT,
        &format!("{}?why=because", paths::audit_legal_hold(id)),
        None,
    )
    .await
    .assert_problem(400, "invalid-query");
    // The longest reason, in characters not bytes, is taken.
    let longest = "é".repeat(1024);
    let body = serde_json::to_vec(&json!({ "reason": longest })).expect("json");
    let held = admin(
        app,
        Method::PUT,
        &paths::audit_legal_hold(id),
        Some(("application/json", &body)),
    )
    .await;
    assert_eq!(held.status, 200, "{}", held.body);
    let entries = log(app, "").await;
    assert_eq!(entries.len(), 1, "only the valid call is recorded");
    assert_eq!(entries[0]["reason"], json!(longest));
}

async fn admin_log_pages_are_stable_while_entries_are_appended(store: Arc<dyn Store>) {
    let s = spawn_secured(store, None, false).await;
    let app = &s.app;
    let id = seed(app, "rr-pages").await;
    let toggle = |n: usize| {
        let method = if n.is_multiple_of(2) {
            Method::PUT
        } else {
            Method::DELETE
        };
        (
            method,
            format!("{}?reason=toggle-{n}", paths::audit_legal_hold(id)),
        )
    };
    for n in 0..23 {
        let (method, path) = toggle(n);
        assert_eq!(admin(app, method, &path, None).await.status, 200);
    }
    let before: Vec<i64> = log(app, "")
        .await
        .iter()
        .map(|e| e["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(before.len(), 23);

    // Page by 5 through the typed client, appending an entry after each page:
    // the pages still hold exactly the entries there were, once each, in order.
    let mut seen = Vec::new();
    let mut params = AdminLogParams::default().with_limit(5);
    let mut n = 100;
    loop {
        let path = format!("{}?{}", paths::ADMIN_LOG, query_string(&params));
        let answer = send(app, Method::GET, &path, Some(ADMIN), None).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let page: AdminLogResponse = serde_json::from_value(answer.body).expect("a page");
        assert!(page.items.len() <= 5);
        seen.extend(page.items.iter().map(|e| e.id));
        let (method, path) = toggle(n);
        n += 1;
        assert_eq!(admin(app, method, &path, None).await.status, 200);
        match page.next_cursor {
            Some(cursor) => params = AdminLogParams::default().with_limit(5).with_cursor(cursor),
            None => break,
        }
    }
    assert_eq!(seen, before);
    assert_eq!(log(app, "").await.len(), 23 + (n - 100));
}

/// `params` as a query string, the way the typed client writes it.
fn query_string(params: &AdminLogParams) -> String {
    let Value::Object(fields) = serde_json::to_value(params).expect("params") else {
        panic!("params are an object");
    };
    let mut url = reqwest::Url::parse("http://x/").expect("url");
    for (name, value) in fields {
        if let Value::String(text) = value {
            url.query_pairs_mut().append_pair(&name, &text);
        }
    }
    url.query().unwrap_or_default().to_owned()
}

async fn admin_log_filters_and_bad_parameters(store: Arc<dyn Store>) {
    let s = spawn_secured(store, None, false).await;
    let app = &s.app;
    let a = seed(app, "rr-filter-a").await;
    let b = seed(app, "rr-filter-b").await;
    for path in [
        format!("{}?reason=r1", paths::audit_legal_hold(a)),
        format!("{}?reason=r2", paths::audit_legal_hold(b)),
    ] {
        assert_eq!(admin(app, Method::PUT, &path, None).await.status, 200);
    }
    assert_eq!(
        admin(
            app,
            Method::DELETE,
            &format!("{}?reason=r3", paths::audit_legal_hold(b)),
            None
        )
        .await
        .status,
        200
    );
    let count = |q: &'static str| async move { log(app, q).await.len() };
    assert_eq!(count("action=hold").await, 2);
    assert_eq!(count("action=release").await, 1);
    assert_eq!(count("action=retention_run").await, 0);
    assert_eq!(count("subject=ops").await, 3);
    assert_eq!(count("subject=nobody").await, 0);
    assert_eq!(log(app, &format!("target={b}")).await.len(), 2);
    assert_eq!(
        count("since=2000-01-01T00:00:00Z&until=2999-01-01T00:00:00Z").await,
        3
    );
    assert_eq!(count("until=2000-01-01T00:00:00Z").await, 0);
    assert_eq!(count("since=2999-01-01T00:00:00Z").await, 0);

    for (query, field, rule) in [
        ("limit=0", "limit", "range"),
        ("limit=1001", "limit", "range"),
        ("cursor=bogus", "cursor", "cursor"),
        ("action=purge", "action", "enum"),
        ("target=x", "target", "integer"),
        ("since=yesterday", "since", "rfc3339"),
        ("subject=", "subject", "text"),
        (
            "since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z",
            "since",
            "before_until",
        ),
    ] {
        let errors = send(
            app,
            Method::GET,
            &format!("{}?{query}", paths::ADMIN_LOG),
            Some(ADMIN),
            None,
        )
        .await
        .assert_problem(400, "invalid-query");
        assert_eq!(errors, [(field.to_owned(), rule.to_owned())], "{query}");
    }
    // A listing's cursor is not the log's.
    let listing = send(
        app,
        Method::GET,
        &format!("{}?limit=1", paths::AUDIT),
        Some(READER),
        None,
    )
    .await;
    let cursor = listing.body["next_cursor"].as_str().expect("a cursor");
    let errors = send(
        app,
        Method::GET,
        &format!("{}?cursor={cursor}", paths::ADMIN_LOG),
        Some(ADMIN),
        None,
    )
    .await
    .assert_problem(400, "invalid-query");
    assert_eq!(errors, [("cursor".to_owned(), "cursor".to_owned())]);
}

async fn without_authentication_the_caller_is_anonymous(store: Arc<dyn Store>) {
    let app = spawn_app(store).await;
    assert_eq!(
        app.post_record(&crate::auth::record("rr-anon"))
            .await
            .status,
        201
    );
    let id = app.list_all().await[0]["id"].as_i64().expect("id");
    let held = app
        .api
        .set_legal_hold(id, "quick start")
        .await
        .expect("hold");
    assert!(held.legal_hold);
    app.api
        .clear_legal_hold(id, "quick start")
        .await
        .expect("release");
    app.api
        .soft_delete(id, "quick start")
        .await
        .expect("delete");
    let page = app
        .api
        .admin_log(&AdminLogParams::default())
        .await
        .expect("admin log");
    let who: Vec<_> = page
        .items
        .iter()
        .map(|e| (e.action.as_str(), e.subject.as_str(), e.reason.as_str()))
        .collect();
    assert_eq!(
        who,
        [
            ("delete", "anonymous", "quick start"),
            ("release", "anonymous", "quick start"),
            ("hold", "anonymous", "quick start"),
        ]
    );
    // The client's reason rules are the server's.
    let err = app.api.set_legal_hold(id, " ").await.expect_err("blank");
    assert_eq!(err.status(), Some(400));
}
