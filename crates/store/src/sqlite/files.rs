//! The database file and its companions (`-wal`, `-shm`) are readable by
//! their owner only: they hold the whole audit trail.

use std::path::{Path, PathBuf};

use crate::StoreError;

/// Suffixes of the files SQLite keeps beside a database in WAL mode.
const COMPANIONS: [&str; 2] = ["-wal", "-shm"];

/// Creates the database file with mode 0600 when it does not exist yet, so
/// that SQLite, which gives its `-wal` and `-shm` files the database file's
/// mode, never creates any of them readable by others. An existing file is
/// left as it is, with a warning when others may read it.
pub(super) fn create_private(path: &Path) -> Result<(), StoreError> {
    let failed = |e: std::io::Error| {
        StoreError::Config(format!(
            "cannot create SQLite database {}: {e}; check that the directory exists and is writable",
            path.display()
        ))
    };
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    match open.open(path) {
        // The umask may only have removed bits; set the mode exactly.
        Ok(_) => restrict(path).map_err(failed),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            warn_if_shared(path);
            Ok(())
        }
        Err(e) => Err(failed(e)),
    }
}

/// Gives the `-wal` and `-shm` files beside `path` mode 0600 when the
/// database file itself has it (a database made before this rule keeps the
/// mode its owner chose).
pub(super) fn tighten_companions(path: &Path) {
    if shared(path) {
        return;
    }
    for suffix in COMPANIONS {
        let companion = companion(path, suffix);
        if companion.exists()
            && shared(&companion)
            && let Err(e) = restrict(&companion)
        {
            tracing::warn!(file = %companion.display(), error = %e, "cannot make the file private (mode 0600)");
        }
    }
}

fn companion(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(unix)]
fn restrict(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn restrict(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

/// Whether users other than the owner may read or write the file.
#[cfg(unix)]
fn shared(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
}

#[cfg(not(unix))]
fn shared(_path: &Path) -> bool {
    false
}

fn warn_if_shared(path: &Path) {
    if shared(path) {
        tracing::warn!(
            file = %path.display(),
            "the SQLite database is readable by other users; `chmod 600` it and its -wal and -shm files"
        );
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use crate::{AuditStore as _, HealthStore as _, PoolSettings, SqliteStore};

    fn mode(path: &std::path::Path) -> u32 {
        std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    }

    #[tokio::test]
    async fn the_database_and_its_wal_files_are_private() {
        let dir = tempfile::tempdir().expect("directory");
        // Whatever the umask lets through, the files are made 0600.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let path = dir.path().join("audit.db");
        let store = SqliteStore::connect(
            &format!("sqlite://{}", path.display()),
            PoolSettings::default(),
        )
        .await
        .expect("store");
        // The -wal and -shm files exist while connections are open.
        store
            .list(&crate::ListQuery {
                limit: 1,
                ..crate::ListQuery::default()
            })
            .await
            .expect("read");
        for file in [
            path.clone(),
            super::companion(&path, "-wal"),
            super::companion(&path, "-shm"),
        ] {
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
        store.close().await;
    }

    #[tokio::test]
    async fn companions_of_a_private_database_are_tightened() {
        let dir = tempfile::tempdir().expect("directory");
        let path = dir.path().join("audit.db");
        std::fs::write(&path, b"").expect("create");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let wal = super::companion(&path, "-wal");
        std::fs::write(&wal, b"").expect("create");
        std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        super::tighten_companions(&path);
        assert_eq!(mode(&wal), 0o600);
    }
}
