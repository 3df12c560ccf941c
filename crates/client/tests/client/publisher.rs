//! The publisher never loses a record to its credentials: a 401, a 403 or
//! an unusable token file keeps the records queued and in the spool,
//! retried with backoff and counted by reason, until a valid token is in
//! the file.

use std::time::Duration;

use remaudit_client::metrics::DENIED;
use remaudit_client::{Publisher, StartError};
use remaudit_server::auth::Role;
use remaudit_testkit::wait_for;

use crate::helpers::{
    READER, Secured, UNKNOWN, WRITER, WRITER_NEXT, counter, metrics, publisher_settings, record,
    write_file,
};

const WAIT: Duration = Duration::from_secs(30);

fn publish(publisher: &Publisher, names: &[&str]) {
    for name in names {
        publisher.publish(record(name)).expect("accepted");
    }
}

/// Waits until the publisher has had at least `n` requests denied.
async fn denied_at_least(publisher: &Publisher, n: u64) {
    wait_for("denied requests", WAIT, || async {
        (publisher.stats().denied >= n).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_401_keeps_the_records_and_counts_until_a_valid_token_is_written() {
    metrics();
    let app = Secured::start(&[(WRITER, Role::Writer)]).await;
    let token = app.token_file("token", UNKNOWN);
    let spool = app.dir.path().join("spool");
    let before = counter(DENIED, r#"reason="unauthorized""#);
    let publisher =
        Publisher::start(publisher_settings(&app.url(), &spool, &token)).expect("start");
    publish(&publisher, &["denied-1", "denied-2", "denied-3"]);

    denied_at_least(&publisher, 3).await;
    let stats = publisher.stats();
    assert_eq!((stats.created, stats.dropped, stats.rejected), (0, 0, 0));
    assert_eq!(publisher.pending(), 3, "every record is still queued");
    assert_eq!(app.stored().await, 0);
    assert!(counter(DENIED, r#"reason="unauthorized""#) >= before + 3.0);

    write_file(&token, &format!("{WRITER}\n"));
    tokio::time::timeout(WAIT, publisher.flush())
        .await
        .expect("delivered once the token is valid");
    let report = publisher.shutdown(Duration::from_secs(5)).await;
    assert_eq!(publisher.stats().created, 3);
    assert_eq!((report.left_in_spool, report.lost), (0, 0));
    assert_eq!(app.stored().await, 3);
}

#[tokio::test]
async fn records_denied_at_shutdown_stay_in_the_spool_for_the_next_run() {
    let app = Secured::start(&[(WRITER, Role::Writer), (READER, Role::Reader)]).await;
    // A reader's token: 403, counted as forbidden.
    let token = app.token_file("token", READER);
    let spool = app.dir.path().join("spool");
    let settings = publisher_settings(&app.url(), &spool, &token);
    let before = counter(DENIED, r#"reason="forbidden""#);
    let publisher = Publisher::start(settings.clone()).expect("start");
    publish(&publisher, &["kept-1", "kept-2"]);
    denied_at_least(&publisher, 1).await;
    let report = publisher.shutdown(Duration::ZERO).await;
    assert_eq!((report.left_in_spool, report.lost), (2, 0));
    assert!(counter(DENIED, r#"reason="forbidden""#) > before);
    assert_eq!(app.stored().await, 0);

    write_file(&token, &format!("{WRITER}\n"));
    let publisher = Publisher::start(settings).expect("restart");
    tokio::time::timeout(WAIT, publisher.flush())
        .await
        .expect("the spooled records are delivered");
    let report = publisher.shutdown(Duration::from_secs(5)).await;
    assert_eq!((report.left_in_spool, report.lost), (0, 0));
    assert_eq!(app.stored().await, 2);
}

#[tokio::test]
async fn an_unreadable_token_file_is_a_denial_not_a_loss() {
    let app = Secured::start(&[(WRITER, Role::Writer)]).await;
    let token = app.token_file("token", WRITER);
    let spool = app.dir.path().join("spool");
    let publisher =
        Publisher::start(publisher_settings(&app.url(), &spool, &token)).expect("start");
    publish(&publisher, &["first"]);
    tokio::time::timeout(WAIT, publisher.flush())
        .await
        .expect("first");

    // The token is revoked and its file gone: the 401 makes the publisher
    // read the file, which fails.
    std::fs::remove_file(&token).expect("remove");
    app.set_tokens(&[(WRITER_NEXT, Role::Writer)]);
    let before = counter(DENIED, r#"reason="token_file""#);
    publish(&publisher, &["second"]);
    wait_for("a token_file denial", WAIT, || async {
        (counter(DENIED, r#"reason="token_file""#) > before).then_some(())
    })
    .await;
    assert_eq!(publisher.pending(), 1);

    write_file(&token, &format!("{WRITER_NEXT}\n"));
    tokio::time::timeout(WAIT, publisher.flush())
        .await
        .expect("delivered once the file is back");
    publisher.shutdown(Duration::from_secs(5)).await;
    assert_eq!(app.stored().await, 2);
}

#[tokio::test]
async fn a_missing_token_file_stops_the_start_naming_it() {
    let dir = tempfile::tempdir().expect("dir");
    let missing = dir.path().join("no-such-token");
    let settings = publisher_settings("http://127.0.0.1:9", &dir.path().join("spool"), &missing);
    let err = Publisher::start(settings).expect_err("no token file");
    assert!(matches!(err, StartError::Credentials(_)), "{err:?}");
    assert!(err.to_string().contains("no-such-token"), "{err}");
}
