//! Reads that check what they read: every byte DataFusion takes from an
//! archive file is first checked against the SHA-256 its manifest lists for
//! the chunk it lies in, so a damaged file fails the query, naming the file,
//! rather than giving a wrong answer. Only the chunks a query reads are
//! fetched and hashed, so row-group pruning keeps its benefit.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use futures::StreamExt as _;
use futures::stream::BoxStream;
use object_store_df::path::Path;
use object_store_df::{
    CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, ObjectStoreExt as _, PutMultipartOptions, PutOptions, PutPayload,
    PutResult,
};
use sha2::{Digest as _, Sha256};

/// What the manifest says of one file: its size and its chunks' digests.
#[derive(Debug, Clone)]
pub(crate) struct Expected {
    /// The file's name in the archive, for messages.
    pub(crate) name: String,
    /// Its size in bytes.
    pub(crate) bytes: u64,
    /// The size of each chunk but the last.
    pub(crate) chunk: u64,
    /// Each chunk's SHA-256, lowercase hex.
    pub(crate) digests: Vec<String>,
}

impl Expected {
    /// Fails, naming the file, when it is not the size its manifest records.
    fn check_size(&self, size: u64) -> object_store_df::Result<()> {
        if size == self.bytes {
            return Ok(());
        }
        Err(damaged(&self.name, &size_mismatch(size, self.bytes)))
    }
}

/// How a file that is not its recorded size is described.
pub(crate) fn size_mismatch(size: u64, recorded: u64) -> String {
    format!("holds {size} bytes where its manifest records {recorded}")
}

/// A read-only object store over the archive's files that checks each read.
#[derive(Debug)]
pub(crate) struct Checked {
    inner: Arc<dyn ObjectStore>,
    files: HashMap<Path, Expected>,
    /// Bytes fetched from `inner` so far, whole chunks included.
    fetched: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Display for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "checked archive reads over {}", self.inner)
    }
}

impl Checked {
    /// Reads through `inner`, checking the files of `files` (by their path in `inner`).
    pub(crate) fn new(inner: Arc<dyn ObjectStore>, files: HashMap<Path, Expected>) -> Self {
        Self {
            inner,
            files,
            fetched: Arc::default(),
        }
    }

    /// The count of bytes fetched, shared.
    pub(crate) fn fetched(&self) -> Arc<std::sync::atomic::AtomicU64> {
        Arc::clone(&self.fetched)
    }
}

/// An error naming the file, for DataFusion to pass on.
fn damaged(name: &str, what: &str) -> object_store_df::Error {
    let damaged = crate::ArchiveQueryError::Damaged {
        path: name.to_owned(),
        what: what.to_owned(),
    };
    object_store_df::Error::Generic {
        store: "remaudit archive",
        // The error itself, so that the query's failure is known as damage
        // by its type.
        source: Box::new(damaged),
    }
}

fn read_only() -> object_store_df::Error {
    object_store_df::Error::NotSupported {
        source: "archive queries only read".into(),
    }
}

#[async_trait::async_trait]
impl ObjectStore for Checked {
    async fn put_opts(
        &self,
        _: &Path,
        _: PutPayload,
        _: PutOptions,
    ) -> object_store_df::Result<PutResult> {
        Err(read_only())
    }

    async fn put_multipart_opts(
        &self,
        _: &Path,
        _: PutMultipartOptions,
    ) -> object_store_df::Result<Box<dyn MultipartUpload>> {
        Err(read_only())
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store_df::Result<GetResult> {
        let Some(expected) = self.files.get(location) else {
            return Err(object_store_df::Error::NotFound {
                path: location.to_string(),
                source: "not a file any manifest of the archive lists".into(),
            });
        };
        if options.head {
            let meta = self.inner.head(location).await?;
            expected.check_size(meta.size)?;
            return self.inner.get_opts(location, options).await;
        }
        let wanted = options
            .range
            .clone()
            .unwrap_or(GetRange::Bounded(0..expected.bytes))
            .as_range(expected.bytes)
            .map_err(|e| object_store_df::Error::Generic {
                store: "remaudit archive",
                source: Box::new(e),
            })?;
        let (bytes, meta) = self
            .read_checked(location, expected, wanted.clone())
            .await?;
        Ok(GetResult {
            payload: GetResultPayload::Stream(
                futures::stream::once(async move { Ok(bytes) }).boxed(),
            ),
            meta,
            range: wanted,
            attributes: object_store_df::Attributes::default(),
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store_df::Result<Path>>,
    ) -> BoxStream<'static, object_store_df::Result<Path>> {
        drop(locations);
        futures::stream::once(async { Err(read_only()) }).boxed()
    }

    fn list(
        &self,
        prefix: Option<&Path>,
    ) -> BoxStream<'static, object_store_df::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&Path>,
    ) -> object_store_df::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, _: &Path, _: &Path, _: CopyOptions) -> object_store_df::Result<()> {
        Err(read_only())
    }
}

impl Checked {
    /// Reads the chunks that cover `wanted`, checks each, and returns the wanted bytes.
    async fn read_checked(
        &self,
        location: &Path,
        expected: &Expected,
        wanted: Range<u64>,
    ) -> object_store_df::Result<(bytes::Bytes, ObjectMeta)> {
        let chunk = expected.chunk.max(1);
        let first = wanted.start / chunk;
        let last = wanted.end.saturating_sub(1).max(wanted.start) / chunk;
        let span = first * chunk..((last + 1) * chunk).min(expected.bytes);
        let got = self
            .inner
            .get_opts(
                location,
                GetOptions {
                    range: Some(GetRange::Bounded(span.clone())),
                    ..GetOptions::default()
                },
            )
            .await?;
        let meta = got.meta.clone();
        expected.check_size(meta.size)?;
        let read = got.bytes().await?;
        self.fetched
            .fetch_add(read.len() as u64, std::sync::atomic::Ordering::Relaxed);
        if read.len() as u64 != span.end - span.start {
            return Err(damaged(&expected.name, "could not be read whole"));
        }
        for (i, piece) in read
            .chunks(usize::try_from(chunk).unwrap_or(usize::MAX))
            .enumerate()
        {
            let index = usize::try_from(first)
                .unwrap_or(usize::MAX)
                .saturating_add(i);
            let digest = format!("{:x}", Sha256::digest(piece));
            if expected.digests.get(index) != Some(&digest) {
                return Err(damaged(
                    &expected.name,
                    &format!(
                        "does not match its manifest's SHA-256 at bytes {}..",
                        index as u64 * chunk
                    ),
                ));
            }
        }
        let from = usize::try_from(wanted.start - span.start).unwrap_or(usize::MAX);
        let to = usize::try_from(wanted.end - span.start).unwrap_or(usize::MAX);
        Ok((read.slice(from..to), meta))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store_df::memory::InMemory;

    const CHUNK: u64 = 16;

    /// A store holding `body` whose manifest describes `digests_of` (its
    /// size and 16-byte chunks), and a checked store over it.
    async fn store(body: &[u8], digests_of: &[u8]) -> (Checked, Path) {
        let inner = Arc::new(InMemory::new());
        let path = Path::from("a/part-0.parquet");
        inner.put(&path, body.to_vec().into()).await.expect("put");
        let digests = digests_of
            .chunks(usize::try_from(CHUNK).expect("fits"))
            .map(|c| format!("{:x}", Sha256::digest(c)))
            .collect();
        let expected = Expected {
            name: "a/part-0.parquet".to_owned(),
            bytes: digests_of.len() as u64,
            chunk: CHUNK,
            digests,
        };
        (
            Checked::new(inner, HashMap::from([(path.clone(), expected)])),
            path,
        )
    }

    #[tokio::test]
    async fn every_range_reads_back_exactly() {
        let body: Vec<u8> = (0..100).collect();
        let (checked, path) = store(&body, &body).await;
        for start in 0..100_u8 {
            for end in [start + 1, start + 15, start + 16, start + 17, 100] {
                let end = end.min(100);
                if end <= start {
                    continue;
                }
                let got = checked
                    .get_range(&path, u64::from(start)..u64::from(end))
                    .await
                    .expect("range");
                assert_eq!(
                    &got[..],
                    &body[usize::from(start)..usize::from(end)],
                    "{start}..{end}"
                );
            }
        }
        let whole = checked
            .get(&path)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        assert_eq!(&whole[..], &body[..]);
        let ranges = checked
            .get_ranges(&path, &[0..3, 40..70, 99..100])
            .await
            .expect("ranges");
        assert_eq!(&ranges[1][..], &body[40..70]);
    }

    #[tokio::test]
    async fn a_changed_chunk_fails_only_the_reads_that_touch_it() {
        let body: Vec<u8> = (0..100).collect();
        let mut changed = body.clone();
        changed[40] ^= 1; // in the third chunk, bytes 32..48
        let (checked, path) = store(&changed, &body).await;
        let err = checked
            .get_range(&path, 45..50)
            .await
            .expect_err("touches it");
        let text = err.to_string();
        assert!(
            text.contains("a/part-0.parquet") && text.contains("bytes 32.."),
            "{text}"
        );
        assert!(checked.get_range(&path, 30..33).await.is_err());
        assert_eq!(
            &checked.get_range(&path, 0..32).await.expect("before")[..],
            &body[..32]
        );
        assert_eq!(
            &checked.get_range(&path, 48..100).await.expect("after")[..],
            &body[48..]
        );
    }

    #[tokio::test]
    async fn unlisted_files_shorter_files_and_writes_are_refused() {
        let body: Vec<u8> = (0..100).collect();
        let (checked, path) = store(&body[..90], &body).await;
        let err = checked.get_range(&path, 0..10).await.expect_err("shorter");
        assert!(err.to_string().contains("holds 90 bytes"), "{err}");
        assert!(checked.get(&Path::from("other.parquet")).await.is_err());
        assert!(checked.put(&path, vec![1].into()).await.is_err());
    }
}
