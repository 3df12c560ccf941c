//! The archive files: gzip-compressed JSON Lines in object storage, one
//! directory per batch with a manifest of row counts and SHA-256 sums.
//!
//! Layout under the archive URL's prefix:
//! `batch-000000000042/remediation_audit.jsonl.gz`,
//! `batch-000000000042/remediation_audit_events.jsonl.gz`,
//! `batch-000000000042/manifest.json`.

use std::io::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use futures::{StreamExt as _, TryStreamExt as _};
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _};
use remaudit_store::StoreError;
use remaudit_store::retention::{ArchiveSink, ArchivedFile, Lines, Manifest, Step};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

use crate::RetentionError;

/// Compressed bytes gathered before they are handed to the upload.
const CHUNK: usize = 1 << 20;

/// An archive location: an object store and a prefix in it.
#[derive(Debug, Clone)]
pub struct Archive {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    url: String,
    /// The directory of a `file://` archive.
    local_root: Option<std::path::PathBuf>,
    crash_at: Option<Step>,
}

impl Archive {
    /// Opens `file:///dir` (created when missing) or `s3://bucket/prefix`.
    /// S3 credentials, region and endpoint come from the usual `AWS_*`
    /// environment variables (`AWS_ENDPOINT` and `AWS_ALLOW_HTTP=true` for a
    /// local S3-compatible server).
    ///
    /// # Errors
    /// [`RetentionError::Config`] for an unknown scheme or an unusable location.
    pub fn open(url: &str) -> Result<Self, RetentionError> {
        let mut local_root = None;
        let (store, prefix): (Arc<dyn ObjectStore>, &str) = if let Some(dir) =
            url.strip_prefix("file://")
        {
            if dir.is_empty() {
                return Err(RetentionError::Config(format!(
                    "archive URL {url:?} names no directory: use file:///absolute/dir"
                )));
            }
            std::fs::create_dir_all(dir).map_err(|e| {
                RetentionError::Config(format!("cannot create the archive directory {dir:?}: {e}"))
            })?;
            let fs = LocalFileSystem::new_with_prefix(dir)
                .map_err(|e| {
                    RetentionError::Config(format!(
                        "cannot open the archive directory {dir:?}: {e}"
                    ))
                })?
                // A file is on disk before the rows it holds leave the database.
                .with_fsync(true);
            local_root = Some(std::path::PathBuf::from(dir));
            (Arc::new(fs), "")
        } else if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(RetentionError::Config(format!(
                    "archive URL {url:?} names no bucket: use s3://bucket/prefix"
                )));
            }
            let s3 = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(|e| {
                    RetentionError::Config(format!("cannot use the archive {url:?}: {e}"))
                })?;
            (Arc::new(s3), prefix)
        } else {
            return Err(RetentionError::Config(format!(
                "unsupported archive URL {url:?}: use file:///dir or s3://bucket/prefix"
            )));
        };
        Ok(Self {
            store,
            prefix: Path::from(prefix.trim_matches('/')),
            url: url.to_owned(),
            local_root,
            crash_at: None,
        })
    }

    /// The archive URL a database uses when none is given: a directory
    /// beside a SQLite file, or `remaudit-archive` in the working directory.
    #[must_use]
    pub fn default_url(database_url: &str) -> String {
        let sqlite_file = database_url
            .strip_prefix("sqlite://")
            .or_else(|| database_url.strip_prefix("sqlite:"))
            .map(|rest| rest.split('?').next().unwrap_or(rest))
            .filter(|path| !path.is_empty() && !path.contains(":memory:"));
        let base = match sqlite_file {
            Some(path) => std::path::absolute(path)
                .ok()
                .and_then(|p| p.parent().map(|d| d.join("remaudit-archive"))),
            None => std::path::absolute("remaudit-archive").ok(),
        };
        let dir = base.unwrap_or_else(|| "remaudit-archive".into());
        format!("file://{}", dir.display())
    }

    /// The same archive, stopping the process at `step` (crash tests).
    #[must_use]
    pub fn crash_at(mut self, step: Option<Step>) -> Self {
        self.crash_at = step;
        self
    }

    /// The URL the archive was opened with.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, relative: &str) -> Path {
        Path::from_iter(self.prefix.parts().chain(Path::from(relative).parts()))
    }

    /// Removes every file under a batch's location.
    ///
    /// # Errors
    /// When the object store fails.
    pub async fn remove(&self, location: &str) -> Result<u64, RetentionError> {
        let prefix = self.path(location);
        let paths: Vec<Path> = self
            .store
            .list(Some(&prefix))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(|e| RetentionError::Archive(format!("listing {prefix}: {e}")))?;
        for path in &paths {
            match self.store.delete(path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(RetentionError::Archive(format!("deleting {path}: {e}"))),
            }
        }
        if let Some(root) = &self.local_root {
            // Object stores have no directories; a local one leaves them behind.
            let dir = prefix.parts().fold(root.clone(), |d, p| d.join(p.as_ref()));
            match std::fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(RetentionError::Archive(format!(
                        "removing {}: {e}",
                        dir.display()
                    )));
                }
            }
        }
        Ok(paths.len() as u64)
    }

    /// Reads one object whole; `None` when it does not exist.
    ///
    /// # Errors
    /// When the object store fails.
    pub async fn read(&self, relative: &str) -> Result<Option<Bytes>, RetentionError> {
        let path = self.path(relative);
        match self.store.get(&path).await {
            Ok(got) => Ok(Some(got.bytes().await.map_err(|e| {
                RetentionError::Archive(format!("reading {path}: {e}"))
            })?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(RetentionError::Archive(format!("reading {path}: {e}"))),
        }
    }
}

fn sink_error(what: String) -> StoreError {
    StoreError::Unavailable(format!("archive: {what}"))
}

/// The file name of a table's rows: the live table's name.
pub(crate) fn file_name(table: &str) -> String {
    format!("{}.jsonl.gz", table.trim_end_matches("_archive"))
}

/// Where a manifest is, under a batch's location.
pub(crate) fn manifest_path(location: &str) -> String {
    format!("{location}/manifest.json")
}

/// SHA-256 as lowercase hex.
pub(crate) fn hex_sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

#[async_trait::async_trait]
impl ArchiveSink for Archive {
    fn location(&self, batch: i64) -> String {
        format!("batch-{batch:012}")
    }

    async fn write_file(
        &self,
        location: &str,
        table: &str,
        mut lines: Lines<'_>,
    ) -> Result<ArchivedFile, StoreError> {
        let relative = format!("{location}/{}", file_name(table));
        let path = self.path(&relative);
        let mut upload = BufWriter::new(Arc::clone(&self.store), path.clone());
        // The fastest level: the job shares the machine with ingest, and JSON
        // Lines still shrink several times at it. Compression runs on the
        // blocking pool, a chunk at a time, never on the request workers.
        let mut gz = Some(GzEncoder::new(
            Vec::with_capacity(CHUNK * 2),
            Compression::fast(),
        ));
        let mut sha = Sha256::new();
        let (mut rows, mut bytes) = (0_u64, 0_u64);
        let mut pending = Vec::with_capacity(CHUNK + 64 * 1024);
        let mut done = false;
        while !done {
            match lines.next().await {
                Some(line) => {
                    pending.extend_from_slice(line?.as_bytes());
                    pending.push(b'\n');
                    rows += 1;
                    if pending.len() < CHUNK {
                        continue;
                    }
                }
                None => done = true,
            }
            let input = std::mem::replace(&mut pending, Vec::with_capacity(CHUNK + 64 * 1024));
            let mut encoder = gz
                .take()
                .ok_or_else(|| sink_error("compressor lost".to_owned()))?;
            let (encoder, output) = tokio::task::spawn_blocking(move || {
                encoder.write_all(&input)?;
                if done {
                    return encoder.finish().map(|out| (None, out));
                }
                let out = std::mem::take(encoder.get_mut());
                Ok((Some(encoder), out))
            })
            .await
            .map_err(|e| sink_error(format!("compressing {path}: {e}")))?
            .map_err(|e: std::io::Error| sink_error(format!("compressing {path}: {e}")))?;
            gz = encoder;
            if !output.is_empty() {
                let chunk = Bytes::from(output);
                sha.update(&chunk);
                bytes += chunk.len() as u64;
                upload
                    .put(chunk)
                    .await
                    .map_err(|e| sink_error(format!("writing {path}: {e}")))?;
            }
        }
        upload
            .shutdown()
            .await
            .map_err(|e| sink_error(format!("finishing {path}: {e}")))?;
        Ok(ArchivedFile {
            table: table.trim_end_matches("_archive").to_owned(),
            path: relative,
            rows,
            bytes,
            sha256: format!("{:x}", sha.finalize()),
        })
    }

    async fn write_manifest(
        &self,
        location: &str,
        manifest: &Manifest,
    ) -> Result<String, StoreError> {
        let body = serde_json::to_vec_pretty(manifest)
            .map_err(|e| sink_error(format!("encoding the manifest: {e}")))?;
        let sha = hex_sha256(&body);
        let path = self.path(&manifest_path(location));
        self.store
            .put(&path, body.into())
            .await
            .map_err(|e| sink_error(format!("writing {path}: {e}")))?;
        Ok(sha)
    }

    fn checkpoint(&self, step: Step) {
        if self.crash_at == Some(step) {
            eprintln!("remaudit: stopping at {step:?}, as REMAUDIT_RETENTION_CRASH_AT asks");
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_archive_sits_beside_a_sqlite_file() {
        let url = Archive::default_url("sqlite:///var/lib/remaudit/audit.db?mode=rwc");
        assert_eq!(url, "file:///var/lib/remaudit/remaudit-archive");
        assert!(Archive::default_url("postgres://h/db").ends_with("/remaudit-archive"));
    }

    #[tokio::test]
    async fn a_written_batch_reads_back_and_removing_it_leaves_no_directory() {
        let dir = tempfile::tempdir().expect("dir");
        let archive = Archive::open(&format!("file://{}", dir.path().display())).expect("open");
        let location = archive.location(7);
        let lines: Vec<Result<String, StoreError>> =
            (0..3).map(|i| Ok(format!("{{\"id\":{i}}}"))).collect();
        let file = archive
            .write_file(
                &location,
                "remediation_audit_archive",
                Box::pin(futures::stream::iter(lines)),
            )
            .await
            .expect("write");
        assert_eq!((file.rows, file.table.as_str()), (3, "remediation_audit"));
        let bytes = archive
            .read(&file.path)
            .await
            .expect("read")
            .expect("exists");
        assert_eq!(hex_sha256(&bytes), file.sha256);
        assert_eq!(bytes.len() as u64, file.bytes);
        assert_eq!(archive.remove(&location).await.expect("remove"), 1);
        assert!(archive.read(&file.path).await.expect("read").is_none());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .collect();
        assert!(left.is_empty(), "the batch directory is gone: {left:?}");
    }

    #[test]
    fn unknown_schemes_and_empty_names_are_refused() {
        for url in ["ftp://x", "file://", "s3://", "/tmp/x"] {
            let err = Archive::open(url).expect_err(url).to_string();
            assert!(err.contains(url), "{err}");
        }
    }
}
