//! The token a client sends: read from its file, refused with the
//! service's explanation, and re-read when it rotates, without a restart.

use std::time::Duration;

use remaudit_api::audit::ListParams;
use remaudit_client::credentials::{CredentialSettings, TokenFile};
use remaudit_client::{ApiClient, ApiError};
use remaudit_server::auth::Role;

use crate::helpers::{READER, READER_NEXT, Secured, UNKNOWN, WRITER, api_with, write_file};

fn denied_status(err: &ApiError) -> (u16, String) {
    match err {
        ApiError::Denied {
            status,
            detail,
            problem,
            ..
        } => {
            let problem = problem.as_deref().expect("a problem+json body");
            assert_eq!(problem.status, *status);
            (*status, detail.clone())
        }
        other => panic!("expected a denial, got {other:?}"),
    }
}

#[tokio::test]
async fn the_client_sends_the_token_in_its_file_and_reads_denials() {
    let app = Secured::start(&[(READER, Role::Reader), (WRITER, Role::Writer)]).await;
    let reader = CredentialSettings {
        token_file: Some(app.token_file("reader", READER)),
        ..CredentialSettings::default()
    };
    api_with(&app.url(), &reader)
        .list(&ListParams::default())
        .await
        .expect("the reader's token reads");

    let anonymous = api_with(&app.url(), &CredentialSettings::default());
    let err = anonymous
        .list(&ListParams::default())
        .await
        .expect_err("no token");
    let (status, detail) = denied_status(&err);
    assert_eq!(status, 401);
    assert!(!detail.is_empty());
    assert!(!err.is_retryable());

    let writer = CredentialSettings {
        token_file: Some(app.token_file("writer", WRITER)),
        ..CredentialSettings::default()
    };
    let err = api_with(&app.url(), &writer)
        .list(&ListParams::default())
        .await
        .expect_err("a writer may not read");
    assert_eq!(denied_status(&err).0, 403);

    let unknown = CredentialSettings {
        token_file: Some(app.token_file("unknown", UNKNOWN)),
        ..CredentialSettings::default()
    };
    let err = api_with(&app.url(), &unknown)
        .list(&ListParams::default())
        .await
        .expect_err("an unknown token");
    assert_eq!(denied_status(&err).0, 401);
    assert!(!err.to_string().contains(UNKNOWN), "{err}");
}

#[tokio::test]
async fn a_token_revoked_and_rotated_is_read_again_after_the_401_and_the_request_sent_once_more() {
    let app = Secured::start(&[(READER, Role::Reader), (READER_NEXT, Role::Reader)]).await;
    let path = app.token_file("token", READER);
    let credentials = CredentialSettings {
        token_file: Some(path.clone()),
        ..CredentialSettings::default()
    };
    let api = api_with(&app.url(), &credentials);
    api.list(&ListParams::default()).await.expect("first token");

    // The old token is revoked and the new one written, within the client's
    // recheck interval: the 401 makes it read the file at once.
    app.set_tokens(&[(READER_NEXT, Role::Reader)]);
    write_file(&path, &format!("{READER_NEXT}\n"));
    api.list(&ListParams::default())
        .await
        .expect("the rotated token, without a restart");
    assert_eq!(api.token().expect("a token").rotations(), 1);

    // Revoked with nothing new in the file: the 401 stands.
    app.set_tokens(&[(READER, Role::Reader)]);
    let err = api.list(&ListParams::default()).await.expect_err("revoked");
    assert_eq!(denied_status(&err).0, 401);
    assert_eq!(api.token().expect("a token").rotations(), 1);
}

#[tokio::test]
async fn a_rotated_token_is_picked_up_when_the_recheck_interval_passes() {
    let app = Secured::start(&[(WRITER, Role::Writer), (READER, Role::Reader)]).await;
    let path = app.token_file("token", WRITER);
    // A writer's token gets 403 on a read: no 401, so only the interval
    // brings the new token in.
    let token = TokenFile::open_with_recheck(&path, Duration::ZERO).expect("token");
    let api = ApiClient::with_http(&app.url(), reqwest::Client::new()).with_token(Some(token));
    let err = api.list(&ListParams::default()).await.expect_err("writer");
    assert_eq!(denied_status(&err).0, 403);
    write_file(&path, &format!("  {READER}  \n"));
    api.list(&ListParams::default())
        .await
        .expect("the reader's token, read again from the file");
}

#[tokio::test]
async fn a_token_file_that_becomes_unreadable_is_an_error_naming_it() {
    let app = Secured::start(&[(READER, Role::Reader)]).await;
    let path = app.token_file("token", READER);
    let token = TokenFile::open_with_recheck(&path, Duration::ZERO).expect("token");
    let api = ApiClient::with_http(&app.url(), reqwest::Client::new()).with_token(Some(token));
    std::fs::remove_file(&path).expect("remove");
    let err = api.list(&ListParams::default()).await.expect_err("no file");
    assert!(matches!(err, ApiError::Credentials(_)), "{err:?}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}
