//! The spool directory: the names and modes of its files, the lock that
//! keeps a second process out, and the small file operations the writer,
//! the ledger, recovery and the reader share.
//!
//! Only files named here are ever touched; anything else in the directory
//! is left alone.

use std::fs::{self, DirBuilder, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::format::MAX_SEQ;
use super::{Spool, SpoolError};

/// Name of the ledger file.
pub(super) const LEDGER_FILE: &str = "ledger";
/// Name the ledger is written under before it is renamed into place.
pub(super) const LEDGER_TMP_FILE: &str = "ledger.tmp";
/// Name of the lock file.
pub(super) const LOCK_FILE: &str = "lock";
/// Name of the spare segment: zeros written ahead, off the lock, for the
/// next segment to be renamed from.
pub(super) const SPARE_FILE: &str = "spare";
/// Name the spare is written under before it is renamed into place.
pub(super) const SPARE_TMP_FILE: &str = "spare.tmp";
/// Ending of a segment file's name.
pub(super) const SEGMENT_SUFFIX: &str = ".seg";
/// Mode of the spool directory when the spool creates it: audit records are
/// for the owner only.
const DIR_MODE: u32 = 0o700;
/// Mode of every file the spool creates.
pub(super) const FILE_MODE: u32 = 0o600;

/// Creates `dir` (owner-only) if it is missing, takes its lock and checks
/// that files can be created in it. The returned file holds the lock until
/// it is dropped.
pub(super) fn prepare(dir: &Path) -> Result<File, SpoolError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|source| SpoolError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
    let lock = lock_dir(dir)?;
    check_writable(dir)?;
    Ok(lock)
}

/// Takes the directory's lock file.
fn lock_dir(dir: &Path) -> Result<File, SpoolError> {
    let path = dir.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(FILE_MODE)
        .open(&path)
        .map_err(|source| SpoolError::NotWritable {
            dir: dir.to_path_buf(),
            source,
        })?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(TryLockError::WouldBlock) => Err(SpoolError::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(TryLockError::Error(e)) => Err(SpoolError::io("locking", path)(e)),
    }
}

/// Checks that files can be created in the directory.
fn check_writable(dir: &Path) -> Result<(), SpoolError> {
    let probe = dir.join(LEDGER_TMP_FILE);
    create_fresh(&probe)
        .and_then(|_| fs::remove_file(&probe))
        .map_err(|source| SpoolError::NotWritable {
            dir: dir.to_path_buf(),
            source,
        })
}

/// Creates `path` as a new, empty file readable by the owner only, after
/// removing whatever was there. Never follows a symlink planted at `path`:
/// the link itself is removed, and an exclusive create fails rather than
/// open something that appeared in between.
pub(super) fn create_fresh(path: &Path) -> io::Result<File> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Path of the segment file whose first record is `base`.
pub(super) fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}{SEGMENT_SUFFIX}"))
}

/// First seqs of the segment files in `dir`, ascending.
pub(super) fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(digits) = name.to_str().and_then(|n| n.strip_suffix(SEGMENT_SUFFIX)) else {
            continue;
        };
        if digits.len() == 20
            && digits.bytes().all(|b| b.is_ascii_digit())
            && let Ok(base) = digits.parse()
            && base <= MAX_SEQ
        {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Deletes a segment file; one already gone is fine.
pub(super) fn remove_segment(dir: &Path, base: u64) -> Result<(), SpoolError> {
    remove_if_present(segment_path(dir, base), "deleting segment")
}

/// Deletes a file; one already gone is fine.
fn remove_if_present(path: PathBuf, action: &'static str) -> Result<(), SpoolError> {
    match fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(SpoolError::io(action, path)(e)),
        _ => Ok(()),
    }
}

/// Deletes the spare segment and its temporary file, if any; a spool that
/// opens prepares its own.
pub(super) fn remove_spares(dir: &Path) -> Result<(), SpoolError> {
    for name in [SPARE_TMP_FILE, SPARE_FILE] {
        remove_if_present(dir.join(name), "deleting spare segment")?;
    }
    Ok(())
}

/// Fsyncs the directory, so the files created, renamed or deleted in it
/// survive a power cut.
pub(super) fn sync(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(SpoolError::io("syncing directory", dir.to_path_buf()))
}

impl Spool {
    /// Fsyncs the directory if files were created, deleted or renamed in it
    /// since the last time.
    pub(super) fn sync_dir_if_dirty(&mut self) -> Result<(), SpoolError> {
        if self.dir_dirty {
            sync(&self.options.dir)?;
            self.dir_dirty = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::tests::{ack, open, options, payload, segment_files};
    use crate::spool::{Recovery, SpoolSettings};

    #[test]
    fn directory_that_cannot_be_created_is_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        fs::write(&file, b"x").unwrap();
        let err = Spool::open(SpoolSettings::new(file.join("spool")))
            .err()
            .unwrap();
        assert!(matches!(err, SpoolError::CreateDir { .. }), "{err:?}");
        assert!(err.to_string().contains("REMAUDIT_SPOOL_DIR"), "{err}");
    }

    #[test]
    fn second_open_of_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let opts = SpoolSettings::new(dir.path());
        let (spool, _) = open(&opts);
        let err = Spool::open(opts.clone()).err().unwrap();
        assert!(matches!(err, SpoolError::Locked { .. }), "{err:?}");
        drop(spool);
        open(&opts);
    }

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_spool_is_readable_by_its_owner_only() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("a").join("spool");
        let (mut spool, _) = open(&options(&dir, 64, 1 << 20));
        for i in 0..4 {
            spool.append(&payload(i, 40)).unwrap();
        }
        ack(&mut spool, 1);
        assert_eq!(mode(&dir), 0o700, "the spool directory");
        assert_eq!(
            mode(&parent.path().join("a")),
            0o700,
            "a directory made for it"
        );
        let files: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(files.iter().any(|f| f.ends_with(LEDGER_FILE)));
        assert!(files.iter().any(|f| f.ends_with(LOCK_FILE)));
        assert!(!segment_files(&dir).is_empty());
        for file in files {
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
    }

    #[test]
    fn unrelated_files_in_the_directory_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("notes.txt"), b"keep").unwrap();
        fs::write(dir.path().join("12.seg"), b"not a segment").unwrap();
        let opts = options(dir.path(), 200, 1 << 20);
        let (mut spool, recovery) = open(&opts);
        assert_eq!(recovery, Recovery::default());
        spool.append(b"one").unwrap();
        ack(&mut spool, 1);
        drop(spool);
        let (spool, recovery) = open(&opts);
        assert_eq!(recovery, Recovery::default());
        assert_eq!(spool.next_seq(), 2);
        assert_eq!(fs::read(dir.path().join("notes.txt")).unwrap(), b"keep");
        assert_eq!(
            fs::read(dir.path().join("12.seg")).unwrap(),
            b"not a segment"
        );
    }
}
