//! The moto server of `remaudit_testkit::s3` stands in for S3: `object_store`'s
//! S3 client, configured from `MotoServer::s3_env`, stores, lists and reads
//! objects on it.

use futures::TryStreamExt as _;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path;
use object_store::{ObjectStore as _, ObjectStoreExt as _};
use remaudit_testkit::s3::MotoServer;

#[tokio::test]
async fn object_store_s3_client_configured_from_s3_env_puts_lists_and_gets_an_object_on_moto() {
    let moto = MotoServer::start().await;
    moto.create_bucket("remaudit-test").await;

    // The same parsing as `AmazonS3Builder::from_env()` (upper-case `AWS_`
    // names, lower-cased into config keys), without changing this process's
    // environment: every name must be one that from_env reads.
    let mut builder = AmazonS3Builder::new().with_bucket_name("remaudit-test");
    for (name, value) in moto.s3_env() {
        assert!(name.starts_with("AWS_"), "from_env ignores {name}");
        let key: AmazonS3ConfigKey = name
            .to_ascii_lowercase()
            .parse()
            .unwrap_or_else(|e| panic!("from_env does not read {name}: {e}"));
        builder = builder.with_config(key, value);
    }
    let store = builder.build().expect("S3 client for moto");

    let path = Path::from("archive/2024-05-01/records.jsonl.gz");
    // Not UTF-8, so nothing on the way may treat the object as text.
    let bytes: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    store
        .put(&path, bytes.clone().into())
        .await
        .expect("put the object");

    let listed: Vec<_> = store
        .list(Some(&Path::from("archive")))
        .map_ok(|meta| (meta.location, meta.size))
        .try_collect()
        .await
        .expect("list the bucket");
    assert_eq!(listed, vec![(path.clone(), bytes.len() as u64)]);

    let got = store
        .get(&path)
        .await
        .expect("get the object")
        .bytes()
        .await
        .expect("read the object");
    assert_eq!(got.as_ref(), bytes.as_slice());
}
