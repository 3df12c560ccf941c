//! The archive files in object storage, one directory per batch with a
//! manifest of row counts and SHA-256 sums: Parquet by default, or
//! gzip-compressed JSON Lines.
//!
//! Layout under the archive URL's prefix, `{installation}` being the
//! database's installation id (a UUID) and `{tag}` eight random hex digits
//! drawn for the batch. Parquet, one file per table and week (and more
//! parts when a week holds over a million rows), in Hive-style directories:
//! `{installation}/batch-000000000042-{tag}/table=remediation_audit/week=2026-W33/part-0.parquet`,
//! `{installation}/batch-000000000042-{tag}/table=remediation_audit_events/week=2026-W33/part-0.parquet`;
//! JSON Lines, one file per table:
//! `{installation}/batch-000000000042-{tag}/remediation_audit.jsonl.gz`,
//! `{installation}/batch-000000000042-{tag}/remediation_audit_events.jsonl.gz`;
//! and either way `{installation}/batch-000000000042-{tag}/manifest.json`.
//! The installation id keeps databases apart; the tag keeps apart two
//! histories of one database (a copy of its file, a restored backup), which
//! share its id and number their batches alike. Batches written before
//! installation ids sit at `batch-000000000042/…`; the journal records each
//! batch's location, so they are read and cleaned up where they are.
//!
//! Every object is written create-only: a name already taken fails the batch
//! rather than being overwritten. A local archive's directories are 0700 and
//! its files 0600.

use std::io::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use futures::StreamExt as _;
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutMode, PutPayload};
use remaudit_model::chain::KeyRing;
use remaudit_store::retention::{ArchiveTable, Lines, PendingBatch};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

use crate::manifest::{ArchivedFile, CHECK_CHUNK_BYTES, Manifest};
use crate::{RetentionError, columnar};

/// Compressed bytes gathered before they are handed to the upload.
const CHUNK: usize = 1 << 20;

/// The form of the data files a batch writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// Parquet, one file per table and week, typed and sorted (the default).
    #[default]
    Parquet,
    /// Gzip-compressed JSON Lines, one file per table.
    Jsonl,
}

impl std::str::FromStr for ArchiveFormat {
    type Err = RetentionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "parquet" => Ok(Self::Parquet),
            "jsonl" => Ok(Self::Jsonl),
            other => Err(RetentionError::Config(format!(
                "unknown archive format {other:?}: use parquet or jsonl"
            ))),
        }
    }
}

impl std::fmt::Display for ArchiveFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Parquet => "parquet",
            Self::Jsonl => "jsonl",
        })
    }
}

/// An archive location: an object store and a prefix in it.
#[derive(Debug, Clone)]
pub struct Archive {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    url: String,
    /// The directory of a `file://` archive.
    local_root: Option<std::path::PathBuf>,
    /// What this process wrote for the batch it writes now.
    claims: Arc<std::sync::Mutex<Claims>>,
    /// The chain keys manifests are signed with; `None` leaves them unsigned.
    chain: Option<Arc<KeyRing>>,
    /// The form of the data files new batches write.
    format: ArchiveFormat,
}

/// The names this process created for one batch's location, and whether a
/// name there was already taken.
#[derive(Debug, Default)]
struct Claims {
    location: String,
    own: Vec<Path>,
    taken: bool,
}

/// A batch that stopped because one of its names was taken: its location,
/// and the objects this process created there before that.
#[derive(Debug)]
pub(crate) struct Collision {
    pub(crate) location: String,
    own: Vec<Path>,
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
        Self::open_with(url, true)
    }

    /// Opens an archive to read it: as [`Archive::open`], but a `file://`
    /// directory that does not exist is an error rather than created.
    ///
    /// # Errors
    /// As [`Archive::open`], and when a local archive's directory is missing.
    pub fn open_to_read(url: &str) -> Result<Self, RetentionError> {
        Self::open_with(url, false)
    }

    fn open_with(url: &str, create: bool) -> Result<Self, RetentionError> {
        let mut local_root = None;
        let (store, prefix): (Arc<dyn ObjectStore>, &str) =
            if let Some(dir) = url.strip_prefix("file://") {
                if dir.is_empty() {
                    return Err(RetentionError::Config(format!(
                        "archive URL {url:?} names no directory: use file:///absolute/dir"
                    )));
                }
                if create {
                    private_dirs(std::path::Path::new(dir)).map_err(|e| {
                        RetentionError::Config(format!(
                            "cannot create the archive directory {dir:?}: {e}"
                        ))
                    })?;
                } else if !std::path::Path::new(dir).is_dir() {
                    return Err(RetentionError::Config(format!(
                        "the archive directory {dir:?} does not exist: check --archive-url"
                    )));
                }
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
            claims: Arc::default(),
            chain: None,
            format: ArchiveFormat::default(),
        })
    }

    /// The same archive, writing new batches' data files as `format`.
    #[must_use]
    pub fn with_format(mut self, format: ArchiveFormat) -> Self {
        self.format = format;
        self
    }

    /// The form of the data files new batches write.
    #[must_use]
    pub fn format(&self) -> ArchiveFormat {
        self.format
    }

    /// The same archive, signing the manifests it writes with the signing
    /// key of `ring` (none when `None`).
    #[must_use]
    pub fn with_chain_keys(mut self, ring: Option<Arc<KeyRing>>) -> Self {
        self.chain = ring;
        self
    }

    /// The keys manifests are signed with, if any.
    #[must_use]
    pub fn chain_keys(&self) -> Option<&KeyRing> {
        self.chain.as_deref()
    }

    /// An archive over an object store made elsewhere, under `prefix`;
    /// `url` names it in messages.
    #[must_use]
    pub fn with_object_store(store: Arc<dyn ObjectStore>, prefix: &str, url: &str) -> Self {
        Self {
            store,
            prefix: Path::from(prefix.trim_matches('/')),
            url: url.to_owned(),
            local_root: None,
            claims: Arc::default(),
            chain: None,
            format: ArchiveFormat::default(),
        }
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

    /// The URL the archive was opened with.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, relative: &str) -> Path {
        self.prefix
            .parts()
            .chain(Path::from(relative).parts())
            .collect()
    }

    /// Removes the files an interrupted batch can have written, and nothing
    /// else: its two data files and its manifest, by name, under its own
    /// location (`{installation}/batch-{id}-{tag}`, or `batch-{id}` from
    /// before installation ids), and the staging files a cut-short local
    /// upload of those names leaves. Any other location (empty, a bare
    /// prefix, another batch's or another installation's name, `..`) is
    /// refused before anything is deleted; nothing is ever deleted by
    /// prefix. Returns how many files were there.
    ///
    /// # Errors
    /// [`RetentionError::Archive`] when the location is not the batch's own,
    /// when its manifest lists a file outside the batch, or when the object
    /// store fails.
    pub async fn remove(&self, pending: &PendingBatch) -> Result<u64, RetentionError> {
        let location = pending.location.as_str();
        own_location(pending)?;
        if let Some(body) = self.read(&manifest_path(location)).await? {
            // What the manifest lists must be this batch's own data files;
            // a manifest that does not parse is a partial one: the fixed
            // names below cover everything the batch writes.
            if let Ok(manifest) = serde_json::from_slice::<Manifest>(&body) {
                let own = data_files(location);
                if let Some(stray) = manifest
                    .files
                    .iter()
                    .find(|f| !own.contains(&f.path) && !is_parquet_part(location, &f.path))
                {
                    return Err(RetentionError::Manifest(format!(
                        "the manifest of interrupted batch {} lists {:?}, outside {location}; \
                         nothing was deleted: check the archive and remove the journal row \
                         (remediation_retention_batches id {}) by hand",
                        pending.batch, stray.path, pending.batch
                    )));
                }
            }
        }
        let mut removed = 0;
        let parts = self.parquet_parts(location).await?;
        // The manifest first: a clean-up cut short leaves data files without
        // one, which readers skip as incomplete, rather than a manifest
        // whose files are gone.
        for relative in [manifest_path(location)]
            .into_iter()
            .chain(data_files(location))
            .chain(parts)
        {
            let path = self.path(&relative);
            match self.store.head(&path).await {
                Ok(_) => removed += 1,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(unreachable(&format!("reading {path}: {e}"))),
            }
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(unreachable(&format!("deleting {path}: {e}"))),
            }
        }
        if let Some(dir) = self.local_path(location) {
            removed += remove_local_leftovers(&dir)?;
        }
        Ok(removed)
    }

    /// The Parquet files a batch at `location` wrote, found by listing its
    /// own directory; only names such a batch gives its files are returned.
    async fn parquet_parts(&self, location: &str) -> Result<Vec<String>, RetentionError> {
        let mut listed = self.store.list(Some(&self.path(location)));
        let mut parts = Vec::new();
        while let Some(meta) = listed.next().await {
            let meta = meta.map_err(|e| unreachable(&format!("listing {location}: {e}")))?;
            let relative = self.relative(&meta.location);
            if is_parquet_part(location, &relative) {
                parts.push(relative);
            }
        }
        parts.sort();
        Ok(parts)
    }

    /// An object's path relative to the archive's prefix.
    fn relative(&self, path: &Path) -> String {
        path.parts()
            .skip(self.prefix.parts().count())
            .map(|p| p.as_ref().to_owned())
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Where `relative` is on disk, for a local archive.
    fn local_path(&self, relative: &str) -> Option<std::path::PathBuf> {
        let root = self.local_root.as_ref()?;
        Some(
            self.path(relative)
                .parts()
                .fold(root.clone(), |d, p| d.join(p.as_ref())),
        )
    }

    /// Reads one object whole; `None` when it does not exist.
    ///
    /// # Errors
    /// When the object store fails.
    pub async fn read(&self, relative: &str) -> Result<Option<Bytes>, RetentionError> {
        let path = self.path(relative);
        match self.store.get(&path).await {
            Ok(got) => {
                Ok(Some(got.bytes().await.map_err(|e| {
                    unreachable(&format!("reading {path}: {e}"))
                })?))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(unreachable(&format!("reading {path}: {e}"))),
        }
    }
}

impl Archive {
    /// Every batch manifest in the archive, found by listing it, sorted by
    /// location. A manifest is written after its batch's data files, so a
    /// batch without one is incomplete and left out; a batch whose run
    /// stopped after its manifest is listed until the next run removes it.
    ///
    /// # Errors
    /// When the object store fails, or a manifest does not parse (the
    /// message names it).
    pub async fn manifests(&self) -> Result<Vec<StoredManifest>, RetentionError> {
        let mut listed = self.store.list(Some(&self.prefix));
        let mut found = Vec::new();
        while let Some(meta) = listed.next().await {
            let meta = meta.map_err(|e| unreachable(&format!("listing {}: {e}", self.url)))?;
            let relative = self.relative(&meta.location);
            if let Some(location) = relative.strip_suffix("/manifest.json") {
                found.push(location.to_owned());
            }
        }
        found.sort();
        let mut manifests = Vec::with_capacity(found.len());
        for location in found {
            let path = manifest_path(&location);
            let Some(body) = self.read(&path).await? else {
                continue;
            };
            let manifest = serde_json::from_slice(&body).map_err(|e| {
                RetentionError::Manifest(format!("{path} in {} does not parse: {e}", self.url))
            })?;
            manifests.push(StoredManifest { location, manifest });
        }
        Ok(manifests)
    }

    /// Where `relative` is, as an engine outside remaudit names it.
    #[must_use]
    pub fn file_url(&self, relative: &str) -> FileUrl {
        if let Some(local) = self.local_path(relative) {
            return FileUrl::Local(local);
        }
        let bucket = self
            .url
            .strip_prefix("s3://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default()
            .to_owned();
        FileUrl::S3 {
            bucket,
            key: self.path(relative).to_string(),
        }
    }
}

/// A Parquet file in the making: its writer and its upload.
struct OpenPart {
    upload: BufWriter,
    table: ArchiveTable,
    relative: String,
    path: Path,
    /// Taken while a piece is encoded on the blocking pool.
    writer: Option<columnar::PartWriter>,
    sha: Sha256,
    /// The chunk being hashed, its length, and the digests of those before it.
    chunk: Sha256,
    chunk_len: u64,
    chunks: Vec<String>,
    bytes: u64,
    rows: u64,
}

impl OpenPart {
    /// Runs `step` on the writer on the blocking pool, then uploads what it gave.
    async fn encode(
        &mut self,
        step: impl FnOnce(&mut columnar::PartWriter) -> Result<Vec<u8>, String> + Send + 'static,
    ) -> Result<(), RetentionError> {
        let mut writer = self
            .writer
            .take()
            .ok_or_else(|| sink_error("Parquet writer lost"))?;
        let (writer, out) = tokio::task::spawn_blocking(move || {
            let out = step(&mut writer);
            (writer, out)
        })
        .await
        .map_err(|e| sink_error(&format!("encoding {}: {e}", self.path)))?;
        self.rows = writer.rows();
        self.writer = Some(writer);
        let out = out.map_err(|e| data_error(&self.path, &e))?;
        self.upload(out).await
    }

    /// Hands encoded bytes to the upload.
    async fn upload(&mut self, out: Vec<u8>) -> Result<(), RetentionError> {
        if out.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(out);
        self.sha.update(&chunk);
        self.bytes += chunk.len() as u64;
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            let room = usize::try_from(CHECK_CHUNK_BYTES - self.chunk_len).unwrap_or(usize::MAX);
            let (now, later) = rest.split_at(room.min(rest.len()));
            self.chunk.update(now);
            self.chunk_len += now.len() as u64;
            if self.chunk_len == CHECK_CHUNK_BYTES {
                self.chunks
                    .push(format!("{:x}", self.chunk.finalize_reset()));
                self.chunk_len = 0;
            }
            rest = later;
        }
        self.upload
            .put(chunk)
            .await
            .map_err(|e| sink_error(&format!("writing {}: {e}", self.path)))
    }
}

/// Rows that cannot be written in the archive's form: the batch stops.
fn data_error(path: &Path, e: &str) -> RetentionError {
    RetentionError::Archive(format!(
        "cannot write {path}: {e}; the batch stops and its rows stay live"
    ))
}

/// A batch's manifest as it stands in the archive, with where it is.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    /// The batch's location: the manifest's directory, relative to the archive.
    pub location: String,
    /// The manifest.
    pub manifest: Manifest,
}

/// How one archive file is named to an engine that reads the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileUrl {
    /// A local file: its absolute path.
    Local(std::path::PathBuf),
    /// An S3 object: its bucket and key.
    S3 {
        /// The bucket.
        bucket: String,
        /// The object's key.
        key: String,
    },
}

/// An object store failure outside a batch's writes.
fn unreachable(what: &str) -> RetentionError {
    RetentionError::Archive(format!(
        "{what}; check that the archive is reachable and its credentials allow this, then run again"
    ))
}

/// An object store failure while a batch is written: its rows stay live.
fn sink_error(what: &str) -> RetentionError {
    RetentionError::Archive(format!(
        "{what}; the batch stops and its rows stay live: check that the archive is reachable \
         and writable, then run again"
    ))
}

/// The name of batch `batch`'s directory before installation ids, and the
/// start of its name after them (followed by `-{tag}`).
fn batch_dir(batch: i64) -> String {
    format!("batch-{batch:012}")
}

/// Hex digits in a batch's tag.
const TAG_LEN: usize = 8;

/// Checks that a pending batch's recorded location is a name that batch can
/// have: `{installation}/batch-{id}-{tag}` under this database's
/// installation id, or `batch-{id}` from before installation ids.
fn own_location(pending: &PendingBatch) -> Result<(), RetentionError> {
    let legacy = batch_dir(pending.batch);
    let current = pending
        .installation
        .as_deref()
        .filter(|i| uuid::Uuid::try_parse(i).is_ok())
        .map(|i| format!("{i}/{legacy}-"));
    let tagged = current.as_deref().is_some_and(|start| {
        pending.location.strip_prefix(start).is_some_and(|tag| {
            tag.len() == TAG_LEN && tag.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
    });
    if pending.batch > 0 && (pending.location == legacy || tagged) {
        return Ok(());
    }
    Err(RetentionError::Archive(format!(
        "interrupted batch {} records the location {:?}, which is not a name of that batch \
         ({}); nothing was deleted: check the archive and remove the journal row \
         (remediation_retention_batches id {}) by hand",
        pending.batch,
        pending.location,
        current.map_or(legacy, |start| format!("{start}{}", "x".repeat(TAG_LEN))),
        pending.batch
    )))
}

/// The data files a batch writes under `location`, summary rows first.
fn data_files(location: &str) -> [String; 2] {
    TABLES.map(|t| format!("{location}/{}", file_name(t)))
}

/// The tables whose rows a batch writes, by their live names.
const TABLES: [&str; 2] = [
    ArchiveTable::Remediations.live_name(),
    ArchiveTable::Events.live_name(),
];

/// The relative path of part `part` of `table`'s rows of ISO week `week`
/// in a batch at `location`.
pub(crate) fn parquet_path(location: &str, table: ArchiveTable, week: &str, part: u32) -> String {
    format!(
        "{location}/table={}/week={week}/part-{part}.parquet",
        table.live_name()
    )
}

/// Whether `path` is a name a batch at `location` gives a Parquet file:
/// `{location}/table={table}/week={YYYY}-W{ww}/part-{n}.parquet`.
#[must_use]
pub fn is_parquet_part(location: &str, path: &str) -> bool {
    let Some(rest) = path
        .strip_prefix(location)
        .and_then(|r| r.strip_prefix("/table="))
    else {
        return false;
    };
    let mut pieces = rest.split('/');
    let (Some(table), Some(week), Some(file), None) =
        (pieces.next(), pieces.next(), pieces.next(), pieces.next())
    else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    TABLES.contains(&table)
        && week.strip_prefix("week=").is_some_and(is_week_label)
        && file
            .strip_prefix("part-")
            .and_then(|f| f.strip_suffix(".parquet"))
            .is_some_and(digits)
}

/// Whether `label` reads as an ISO week, `2026-W33`.
fn is_week_label(label: &str) -> bool {
    let b = label.as_bytes();
    b.len() == 8
        && b[..4].iter().all(u8::is_ascii_digit)
        && &b[4..6] == b"-W"
        && b[6..].iter().all(u8::is_ascii_digit)
}

/// Creates `dir` and its missing parents, readable by the owner only.
fn private_dirs(dir: &std::path::Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Makes a written local file readable and writable by the owner only.
fn private_file(file: &std::path::Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::set_permissions(file, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    #[cfg(not(unix))]
    let _ = file;
    Ok(())
}

/// Removes what a local upload that was cut short leaves in a batch's
/// directory (`{file}#{n}` staging files of the batch's own file names),
/// then the directory when it is empty; returns how many files went.
fn remove_local_leftovers(dir: &std::path::Path) -> Result<u64, RetentionError> {
    let failed =
        |e: std::io::Error| RetentionError::Archive(format!("cleaning {}: {e}", dir.display()));
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(failed(e)),
    };
    let own = TABLES
        .map(file_name)
        .into_iter()
        .chain(["manifest.json".to_owned()])
        .collect::<Vec<_>>();
    let mut removed = remove_parquet_leftovers(dir)?;
    for entry in entries {
        let entry = entry.map_err(failed)?;
        let name = entry.file_name();
        let staged = name
            .to_str()
            .and_then(|n| n.rsplit_once('#'))
            .is_some_and(|(base, n)| {
                own.iter().any(|o| o == base)
                    && !n.is_empty()
                    && n.bytes().all(|b| b.is_ascii_digit())
            });
        if staged && entry.file_type().map_err(failed)?.is_file() {
            std::fs::remove_file(entry.path()).map_err(failed)?;
            removed += 1;
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => tracing::warn!(
            dir = %dir.display(),
            "an interrupted batch's directory holds files it did not write; left in place"
        ),
        Err(e) => return Err(failed(e)),
    }
    Ok(removed)
}

/// Removes the staging files a cut-short upload of a Parquet part leaves
/// (`part-{n}.parquet#{m}`) under a batch's `table=…/week=…` directories,
/// then those directories when they are empty; returns how many files went.
fn remove_parquet_leftovers(dir: &std::path::Path) -> Result<u64, RetentionError> {
    let failed =
        |e: std::io::Error| RetentionError::Archive(format!("cleaning {}: {e}", dir.display()));
    let mut removed = 0;
    for table in TABLES {
        let table_dir = dir.join(format!("table={table}"));
        let weeks = match std::fs::read_dir(&table_dir) {
            Ok(weeks) => weeks,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(failed(e)),
        };
        for week in weeks {
            let week = week.map_err(failed)?;
            let name = week.file_name();
            let is_week = name
                .to_str()
                .and_then(|n| n.strip_prefix("week="))
                .is_some_and(is_week_label);
            if !is_week || !week.file_type().map_err(failed)?.is_dir() {
                continue;
            }
            for file in std::fs::read_dir(week.path()).map_err(failed)? {
                let file = file.map_err(failed)?;
                let staged = file
                    .file_name()
                    .to_str()
                    .and_then(|n| n.rsplit_once('#'))
                    .is_some_and(|(base, n)| {
                        base.strip_prefix("part-")
                            .and_then(|b| b.strip_suffix(".parquet"))
                            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                            && !n.is_empty()
                            && n.bytes().all(|b| b.is_ascii_digit())
                    });
                if staged && file.file_type().map_err(failed)?.is_file() {
                    std::fs::remove_file(file.path()).map_err(failed)?;
                    removed += 1;
                }
            }
            remove_if_empty(&week.path()).map_err(failed)?;
        }
        remove_if_empty(&table_dir).map_err(failed)?;
    }
    Ok(removed)
}

/// Removes a directory if it is empty; one that is not, or is gone, stays as it is.
fn remove_if_empty(dir: &std::path::Path) -> std::io::Result<()> {
    match std::fs::remove_dir(dir) {
        Err(e)
            if !matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::DirectoryNotEmpty
            ) =>
        {
            Err(e)
        }
        _ => Ok(()),
    }
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

/// The error of a create-only write.
fn put_error(path: &Path, e: object_store::Error) -> RetentionError {
    match e {
        object_store::Error::AlreadyExists { .. } => RetentionError::Archive(format!(
            "{path} already exists and is not overwritten: the batch stops, its rows stay live \
             and the next run writes under a new name. Names are unique to this database and \
             batch, so something else writes into this archive: find it"
        )),
        e => sink_error(&format!("writing {path}: {e}")),
    }
}

impl Archive {
    /// A local batch directory, made owner-only before any file is in it.
    fn prepare(&self, location: &str) -> Result<(), RetentionError> {
        if let Some(dir) = self.local_path(location) {
            private_dirs(&dir)
                .map_err(|e| sink_error(&format!("creating {}: {e}", dir.display())))?;
        }
        Ok(())
    }

    /// Creates `path` under a batch's `location` with `body`, failing when
    /// the name is taken; remembers what it created.
    async fn put_new(
        &self,
        location: &str,
        path: &Path,
        body: PutPayload,
    ) -> Result<(), RetentionError> {
        self.prepare(location)?;
        let put = self
            .store
            .put_opts(path, body, PutMode::Create.into())
            .await;
        let mut claims = self
            .claims
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if claims.location != location {
            *claims = Claims {
                location: location.to_owned(),
                ..Claims::default()
            };
        }
        match put {
            Ok(_) => {
                claims.own.push(path.clone());
                Ok(())
            }
            Err(e) => {
                claims.taken |= matches!(e, object_store::Error::AlreadyExists { .. });
                Err(put_error(path, e))
            }
        }
    }

    /// Takes a file's name, create-only: an empty object the upload then
    /// replaces. A name already taken fails here, before any byte is
    /// written, since multipart uploads cannot be made create-only.
    async fn claim(&self, location: &str, path: &Path) -> Result<(), RetentionError> {
        self.put_new(location, path, PutPayload::new()).await
    }

    /// The batch that stopped because a name was taken, if the last one did.
    pub(crate) fn take_collision(&self) -> Option<Collision> {
        let mut claims = self
            .claims
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !claims.taken {
            return None;
        }
        let claims = std::mem::take(&mut *claims);
        Some(Collision {
            location: claims.location,
            own: claims.own,
        })
    }

    /// Deletes the objects this process created for a batch whose name
    /// was taken; the object that was there first is not touched.
    pub(crate) async fn remove_own(&self, collision: &Collision) -> Result<(), RetentionError> {
        for path in &collision.own {
            match self.store.delete(path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(unreachable(&format!("deleting {path}: {e}"))),
            }
        }
        Ok(())
    }

    /// A written local file, made owner-only.
    fn seal(&self, relative: &str) -> Result<(), RetentionError> {
        if let Some(file) = self.local_path(relative) {
            private_file(&file)
                .map_err(|e| sink_error(&format!("restricting {}: {e}", file.display())))?;
        }
        Ok(())
    }
}

impl Archive {
    /// A fresh location for batch `batch` of the database whose
    /// installation id is `installation`: a new tag each time.
    #[allow(
        clippy::unused_self,
        reason = "a method of the archive so callers name the archive the location is in"
    )]
    pub(crate) fn location(&self, installation: &str, batch: i64) -> String {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        format!("{installation}/{}-{}", batch_dir(batch), &tag[..TAG_LEN])
    }

    /// Writes one table's rows of a batch, gzip-compressed, under
    /// `location`, create-only.
    pub(crate) async fn write_file(
        &self,
        location: &str,
        table: ArchiveTable,
        mut lines: Lines<'_>,
    ) -> Result<ArchivedFile, RetentionError> {
        let table = table.name();
        let relative = format!("{location}/{}", file_name(table));
        let path = self.path(&relative);
        self.claim(location, &path).await?;
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
            let mut encoder = gz.take().ok_or_else(|| sink_error("compressor lost"))?;
            let (encoder, output) = tokio::task::spawn_blocking(move || {
                encoder.write_all(&input)?;
                if done {
                    return encoder.finish().map(|out| (None, out));
                }
                let out = std::mem::take(encoder.get_mut());
                Ok((Some(encoder), out))
            })
            .await
            .map_err(|e| sink_error(&format!("compressing {path}: {e}")))?
            .map_err(|e: std::io::Error| sink_error(&format!("compressing {path}: {e}")))?;
            gz = encoder;
            if !output.is_empty() {
                let chunk = Bytes::from(output);
                sha.update(&chunk);
                bytes += chunk.len() as u64;
                upload
                    .put(chunk)
                    .await
                    .map_err(|e| sink_error(&format!("writing {path}: {e}")))?;
            }
        }
        upload
            .shutdown()
            .await
            .map_err(|e| sink_error(&format!("finishing {path}: {e}")))?;
        self.seal(&relative)?;
        Ok(ArchivedFile {
            table: table.trim_end_matches("_archive").to_owned(),
            path: relative,
            rows,
            bytes,
            sha256: format!("{:x}", sha.finalize()),
            week: None,
            chunk_sha256: Vec::new(),
        })
    }

    /// Writes one table's rows of a batch that started in ISO week `week`
    /// (`2026-W33`) as Parquet under `location`, create-only: a file for
    /// each million rows (or 512 MiB), none when there are no rows. `meta`
    /// goes into each file's key-value metadata.
    ///
    /// # Errors
    /// When a row does not fit the schema or the object store fails: the
    /// batch stops and its rows stay live.
    pub async fn write_week(
        &self,
        location: &str,
        table: ArchiveTable,
        week: &str,
        meta: &[(&str, String)],
        mut lines: Lines<'_>,
    ) -> Result<Vec<ArchivedFile>, RetentionError> {
        let mut files = Vec::new();
        let mut open: Option<OpenPart> = None;
        let mut pending = Vec::with_capacity(columnar::BATCH_ROWS);
        let mut pending_bytes = 0;
        loop {
            let next = lines.next().await;
            let done = next.is_none();
            if let Some(line) = next {
                let line = line?;
                pending_bytes += line.len();
                pending.push(line);
                if pending.len() < columnar::BATCH_ROWS && pending_bytes < columnar::BATCH_BYTES {
                    continue;
                }
            }
            pending_bytes = 0;
            if !pending.is_empty() {
                if open.is_none() {
                    let number = u32::try_from(files.len()).unwrap_or(u32::MAX);
                    let relative = parquet_path(location, table, week, number);
                    open = Some(self.open_part(location, table, relative, meta).await?);
                }
                let Some(part) = open.as_mut() else {
                    return Err(sink_error("Parquet part lost"));
                };
                let input =
                    std::mem::replace(&mut pending, Vec::with_capacity(columnar::BATCH_ROWS));
                part.encode(move |w| w.write(&input)).await?;
                if (part.rows >= columnar::PART_ROWS || part.bytes >= columnar::PART_BYTES)
                    && let Some(full) = open.take()
                {
                    files.push(self.close_part(full, week).await?);
                }
            }
            if done {
                if let Some(last) = open.take() {
                    files.push(self.close_part(last, week).await?);
                }
                return Ok(files);
            }
        }
    }

    /// Claims a Parquet part's name and starts its upload.
    async fn open_part(
        &self,
        location: &str,
        table: ArchiveTable,
        relative: String,
        meta: &[(&str, String)],
    ) -> Result<OpenPart, RetentionError> {
        let path = self.path(&relative);
        // Its `table=…/week=…` directories, owner-only like the batch's.
        if let Some((dir, _)) = relative.rsplit_once('/') {
            self.prepare(dir)?;
        }
        self.claim(location, &path).await?;
        let writer = columnar::PartWriter::new(table, meta).map_err(|e| data_error(&path, &e))?;
        Ok(OpenPart {
            upload: BufWriter::new(Arc::clone(&self.store), path.clone()),
            table,
            relative,
            path,
            writer: Some(writer),
            sha: Sha256::new(),
            chunk: Sha256::new(),
            chunk_len: 0,
            chunks: Vec::new(),
            bytes: 0,
            rows: 0,
        })
    }

    /// Ends a Parquet part's file and its upload.
    async fn close_part(
        &self,
        mut part: OpenPart,
        week: &str,
    ) -> Result<ArchivedFile, RetentionError> {
        let writer = part
            .writer
            .take()
            .ok_or_else(|| sink_error("Parquet writer lost"))?;
        let path = part.path.clone();
        let out = tokio::task::spawn_blocking(move || writer.finish())
            .await
            .map_err(|e| sink_error(&format!("encoding {path}: {e}")))?
            .map_err(|e| data_error(&path, &e))?;
        part.upload(out).await?;
        if part.chunk_len > 0 {
            part.chunks
                .push(format!("{:x}", part.chunk.finalize_reset()));
        }
        part.upload
            .shutdown()
            .await
            .map_err(|e| sink_error(&format!("finishing {}: {e}", part.path)))?;
        self.seal(&part.relative)?;
        Ok(ArchivedFile {
            table: part.table.live_name().to_owned(),
            path: part.relative,
            rows: part.rows,
            bytes: part.bytes,
            sha256: format!("{:x}", part.sha.finalize()),
            week: Some(week.to_owned()),
            chunk_sha256: part.chunks,
        })
    }

    /// Writes a batch's manifest under `location`, create-only; returns its SHA-256.
    pub(crate) async fn write_manifest(
        &self,
        location: &str,
        manifest: &Manifest,
    ) -> Result<String, RetentionError> {
        let body = serde_json::to_vec_pretty(manifest).map_err(|e| {
            RetentionError::Manifest(format!(
                "cannot encode the manifest of batch {}: {e}; the batch stops and its rows stay live",
                manifest.batch
            ))
        })?;
        let sha = hex_sha256(&body);
        let relative = manifest_path(location);
        let path = self.path(&relative);
        self.put_new(location, &path, body.into()).await?;
        self.seal(&relative)?;
        Ok(sha)
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

    const INSTALLATION: &str = "6ed23026-a60f-46a1-accd-2b00f2e430bc";

    fn local(dir: &std::path::Path) -> Archive {
        Archive::open(&format!("file://{}", dir.display())).expect("open")
    }

    fn pending(batch: i64, location: &str) -> PendingBatch {
        PendingBatch {
            batch,
            location: location.to_owned(),
            installation: Some(INSTALLATION.to_owned()),
        }
    }

    async fn write(archive: &Archive, location: &str, table: &str) -> ArchivedFile {
        let table = if table == "remediation_audit_archive" {
            ArchiveTable::Remediations
        } else {
            ArchiveTable::Events
        };
        let lines: Vec<Result<String, remaudit_store::StoreError>> =
            (0..3).map(|i| Ok(format!("{{\"id\":{i}}}"))).collect();
        archive
            .write_file(location, table, Box::pin(futures::stream::iter(lines)))
            .await
            .expect("write")
    }

    /// Every file under `dir`, relative, sorted.
    fn files(dir: &std::path::Path) -> Vec<String> {
        fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).expect("dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    walk(root, &path, out);
                } else {
                    let relative = path.strip_prefix(root).expect("under root");
                    out.push(relative.display().to_string());
                }
            }
        }
        let mut out = Vec::new();
        walk(dir, dir, &mut out);
        out.sort();
        out
    }

    #[tokio::test]
    async fn a_written_batch_reads_back_and_removing_it_leaves_no_directory() {
        let dir = tempfile::tempdir().expect("dir");
        let archive = local(dir.path());
        let location = archive.location(INSTALLATION, 7);
        let tag = location
            .strip_prefix(&format!("{INSTALLATION}/batch-000000000007-"))
            .expect("installation, then batch, then tag");
        assert_eq!(tag.len(), TAG_LEN, "{location}");
        assert_ne!(
            location,
            archive.location(INSTALLATION, 7),
            "a fresh tag each time"
        );
        let file = write(&archive, &location, "remediation_audit_archive").await;
        assert_eq!((file.rows, file.table.as_str()), (3, "remediation_audit"));
        let bytes = archive
            .read(&file.path)
            .await
            .expect("read")
            .expect("exists");
        assert_eq!(hex_sha256(&bytes), file.sha256);
        assert_eq!(bytes.len() as u64, file.bytes);
        // An upload cut short leaves a staging file beside the batch's files.
        let batch_dir = dir.path().join(&location);
        std::fs::write(
            batch_dir.join("remediation_audit_events.jsonl.gz#1"),
            b"part",
        )
        .expect("staging");
        assert_eq!(
            archive
                .remove(&pending(7, &location))
                .await
                .expect("remove"),
            2
        );
        assert!(archive.read(&file.path).await.expect("read").is_none());
        assert!(!batch_dir.exists(), "the batch directory is gone");
        assert!(files(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn remove_refuses_every_name_but_the_batch_own_and_deletes_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let archive = local(dir.path());
        let mut written = Vec::new();
        let mut locations = Vec::new();
        for batch in [1, 2] {
            let location = archive.location(INSTALLATION, batch);
            locations.push(location.clone());
            written.push(
                write(&archive, &location, "remediation_audit_archive")
                    .await
                    .path,
            );
        }
        // A batch from before installation ids, at the top of the archive.
        written.push(
            write(&archive, "batch-000000000003", "remediation_audit_archive")
                .await
                .path,
        );
        // Another database's batch 1 in the same archive.
        let other = "0d6e4a4e-6cfe-4a1b-9e0e-2f1c0bb7a9d1";
        written.push(
            write(
                &archive,
                &format!("{other}/batch-000000000001"),
                "remediation_audit_archive",
            )
            .await
            .path,
        );
        let before = files(dir.path());
        assert_eq!(before.len(), written.len());
        let one = locations[0].as_str();
        let tag = &one[one.len() - TAG_LEN..];
        let refused = [
            (1, format!("{INSTALLATION}/batch-000000000001")),
            (1, format!("{INSTALLATION}/batch-000000000001-")),
            (
                1,
                format!("{INSTALLATION}/batch-000000000001-{}", &tag[1..]),
            ),
            (1, format!("{INSTALLATION}/batch-000000000001-{tag}0")),
            (
                1,
                format!(
                    "{INSTALLATION}/batch-000000000001-{}",
                    tag.to_uppercase()
                        .replace(|c: char| c.is_ascii_digit(), "A")
                ),
            ),
            (1, format!("{INSTALLATION}/batch-000000000001-../../x")),
            (1, format!("{INSTALLATION}/batch-000000000001-{tag}/..")),
            (1, format!("{INSTALLATION}/batch-000000000001-*")),
            (2, one.to_owned()),
        ];
        let more: [(i64, String); 20] = [
            (1, String::new()),
            (1, "/".to_owned()),
            (1, ".".to_owned()),
            (1, "..".to_owned()),
            (1, "*".to_owned()),
            (1, "batch-".to_owned()),
            (1, INSTALLATION.to_owned()),
            (1, format!("{INSTALLATION}/")),
            (1, format!("{INSTALLATION}/batch-")),
            (1, format!("{INSTALLATION}/batch-000000000002")),
            (1, format!("{INSTALLATION}/batch-000000000001/..")),
            (
                1,
                format!("{INSTALLATION}/batch-000000000001/remediation_audit.jsonl.gz"),
            ),
            (
                1,
                format!("{INSTALLATION}/../{INSTALLATION}/batch-000000000001"),
            ),
            (1, format!("/{INSTALLATION}/batch-000000000001")),
            (1, "batch-1".to_owned()),
            (1, "batch-000000000002".to_owned()),
            (1, format!("{other}/batch-000000000001")),
            (
                1,
                format!("{}/batch-000000000001", INSTALLATION.to_uppercase()),
            ),
            (0, format!("{INSTALLATION}/batch-000000000000")),
            (-1, format!("{INSTALLATION}/batch--00000000001")),
        ];
        for (batch, location) in refused.iter().chain(&more) {
            let (batch, location) = (*batch, location.as_str());
            let err = archive
                .remove(&pending(batch, location))
                .await
                .expect_err(location)
                .to_string();
            assert!(err.contains("nothing was deleted"), "{location:?}: {err}");
            assert_eq!(files(dir.path()), before, "{location:?} deleted something");
        }
        // Without an installation id only the old name is the batch's own.
        let unknown = PendingBatch {
            installation: None,
            ..pending(1, &format!("{INSTALLATION}/batch-000000000001"))
        };
        archive.remove(&unknown).await.expect_err("no installation");
        assert_eq!(files(dir.path()), before);

        // Its own names remove its files only.
        assert_eq!(
            archive
                .remove(&pending(2, &locations[1]))
                .await
                .expect("own"),
            1
        );
        assert_eq!(
            archive
                .remove(&pending(3, "batch-000000000003"))
                .await
                .expect("old"),
            1
        );
        let left = files(dir.path());
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(
            left.iter().all(|f| f.contains("/batch-000000000001")),
            "{left:?}"
        );
    }

    #[tokio::test]
    async fn a_manifest_that_lists_a_file_outside_its_batch_stops_the_removal() {
        let dir = tempfile::tempdir().expect("dir");
        let archive = local(dir.path());
        let keep = write(
            &archive,
            &archive.location(INSTALLATION, 1),
            "remediation_audit_archive",
        )
        .await;
        let location = archive.location(INSTALLATION, 2);
        let own = write(&archive, &location, "remediation_audit_archive").await;
        let manifest = Manifest {
            format: crate::manifest::MANIFEST_FORMAT.to_owned(),
            batch: 2,
            installation: Some(INSTALLATION.to_owned()),
            source: "rows".to_owned(),
            run_now: chrono::Utc::now(),
            start_time_min: None,
            start_time_max: None,
            files: vec![own, keep.clone()],
            chain_heads: Vec::new(),
            signature: None,
        };
        archive
            .write_manifest(&location, &manifest)
            .await
            .expect("manifest");
        let before = files(dir.path());
        let err = archive
            .remove(&pending(2, &location))
            .await
            .expect_err("stray")
            .to_string();
        assert!(err.contains(&keep.path), "{err}");
        assert_eq!(files(dir.path()), before);
    }

    #[tokio::test]
    async fn writes_are_create_only_and_local_files_are_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("dir");
        let root = dir.path().join("archive");
        let archive = local(&root);
        let location = archive.location(INSTALLATION, 4);
        let file = write(&archive, &location, "remediation_audit_events_archive").await;
        let manifest = Manifest {
            format: crate::manifest::MANIFEST_FORMAT.to_owned(),
            batch: 4,
            installation: Some(INSTALLATION.to_owned()),
            source: "rows".to_owned(),
            run_now: chrono::Utc::now(),
            start_time_min: None,
            start_time_max: None,
            files: vec![file.clone()],
            chain_heads: Vec::new(),
            signature: None,
        };
        archive
            .write_manifest(&location, &manifest)
            .await
            .expect("manifest");
        let mode =
            |p: &std::path::Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        for d in [root.clone(), root.join(INSTALLATION), root.join(&location)] {
            assert_eq!(mode(&d), 0o700, "{}", d.display());
        }
        for f in [root.join(&file.path), root.join(manifest_path(&location))] {
            assert_eq!(mode(&f), 0o600, "{}", f.display());
        }
        // Writing either again fails and leaves the first bytes.
        let first = archive
            .read(&file.path)
            .await
            .expect("read")
            .expect("there");
        let lines: Vec<Result<String, remaudit_store::StoreError>> =
            vec![Ok("{\"id\":9}".to_owned())];
        let err = archive
            .write_file(
                &location,
                ArchiveTable::Events,
                Box::pin(futures::stream::iter(lines)),
            )
            .await
            .expect_err("exists")
            .to_string();
        assert!(err.contains("already exists"), "{err}");
        assert_eq!(archive.read(&file.path).await.expect("read"), Some(first));
        let err = archive
            .write_manifest(&location, &manifest)
            .await
            .expect_err("exists")
            .to_string();
        assert!(err.contains("already exists"), "{err}");
    }

    #[tokio::test]
    async fn removing_an_interrupted_parquet_batch_leaves_nothing_of_it() {
        let dir = tempfile::tempdir().expect("dir");
        let archive = local(dir.path());
        let location = archive.location(INSTALLATION, 9);
        let other = archive.location(INSTALLATION, 10);
        let lines = |n: i64| -> Lines<'static> {
            let rows: Vec<Result<String, remaudit_store::StoreError>> = (0..n)
                .map(|i| Ok(format!("{{\"id\":{i},\"namespace\":\"prod\"}}")))
                .collect();
            Box::pin(futures::stream::iter(rows))
        };
        for at in [&location, &other] {
            let files = archive
                .write_week(at, ArchiveTable::Events, "2026-W33", &[], lines(3))
                .await
                .expect("part");
            assert_eq!(files.len(), 1);
            assert_eq!(files[0].rows, 3);
        }
        // A second part whose upload was cut short, as a killed run leaves it.
        let week = dir
            .path()
            .join(&location)
            .join("table=remediation_audit_events/week=2026-W33");
        std::fs::write(week.join("part-1.parquet#3"), b"part").expect("staging");
        std::fs::write(week.join("part-1.parquet"), b"").expect("claimed name");
        let before_other = files(&dir.path().join(&other));
        assert_eq!(
            archive
                .remove(&pending(9, &location))
                .await
                .expect("remove"),
            3,
            "the two parts and the staging file"
        );
        assert!(
            !dir.path().join(&location).exists(),
            "{:?}",
            files(dir.path())
        );
        assert_eq!(
            files(&dir.path().join(&other)),
            before_other,
            "the other batch stays"
        );
    }

    #[test]
    fn only_a_batch_s_own_parquet_names_are_its_parts() {
        let at = "inst/batch-000000000001-0a1b2c3d";
        let own = parquet_path(at, ArchiveTable::Events, "2026-W33", 2);
        assert_eq!(
            own,
            format!("{at}/table=remediation_audit_events/week=2026-W33/part-2.parquet")
        );
        assert!(is_parquet_part(at, &own));
        for other in [
            format!("{at}/table=remediation_audit/week=2026-W33/part-.parquet"),
            format!("{at}/table=remediation_audit/week=2026-33/part-0.parquet"),
            format!("{at}/table=other/week=2026-W33/part-0.parquet"),
            format!("{at}/table=remediation_audit/week=2026-W33/part-0.parquet/x"),
            format!("{at}/table=remediation_audit/week=2026-W33/../part-0.parquet"),
            format!("{at}/table=remediation_audit/week=2026-W33/part-0.parquet#1"),
            format!("{at}x/table=remediation_audit/week=2026-W33/part-0.parquet"),
            "../../etc/table=remediation_audit/week=2026-W33/part-0.parquet".to_owned(),
            format!("{at}/remediation_audit.jsonl.gz"),
        ] {
            assert!(!is_parquet_part(at, &other), "{other}");
        }
    }

    #[test]
    fn unknown_schemes_and_empty_names_are_refused() {
        for url in ["ftp://x", "file://", "s3://", "/tmp/x"] {
            let err = Archive::open(url).expect_err(url).to_string();
            assert!(err.contains(url), "{err}");
        }
    }
}
