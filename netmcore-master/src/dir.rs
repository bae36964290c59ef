//! The socket directory: its checks, its lock, the pidfile, and the cleanup of what a dead
//! master left in its ledger.

use std::fs::{DirBuilder, File, OpenOptions, TryLockError};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use netmcore_resources::ledger::{Ledger, LedgerObject, ObjectKind};

use crate::{Error, Result};

/// The name of the lock file in the socket directory.
pub const LOCK_FILE_NAME: &str = "netmcore.lock";

/// Permission bits that make a socket directory unsafe: write access for group or others.
const UNSAFE_BITS: u32 = 0o022;

/// Creates the socket directory (mode 0700) if it is missing, and checks that it is a real
/// directory owned by this user and writable by nobody else.
pub(crate) fn prepare(dir: &Path) -> Result<()> {
    let target = || dir.display().to_string();
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| Error::io("mkdir", target(), e))?;
            std::fs::symlink_metadata(dir).map_err(|e| Error::io("lstat", target(), e))?
        }
        Err(e) => return Err(Error::io("lstat", target(), e)),
    };
    let refuse = |reason: String| {
        Err(Error::InsecureSocketDirectory {
            path: dir.to_owned(),
            reason,
        })
    };
    if meta.file_type().is_symlink() {
        return refuse("it is a symbolic link".to_owned());
    }
    if !meta.is_dir() {
        return refuse("it is not a directory".to_owned());
    }
    let uid = rustix::process::geteuid().as_raw();
    if meta.uid() != uid {
        return refuse(format!(
            "it is owned by uid {}, not by uid {uid}",
            meta.uid()
        ));
    }
    if meta.mode() & UNSAFE_BITS != 0 {
        return refuse(format!(
            "its mode {:04o} lets group or others write to it",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// Opens and locks `netmcore.lock` in `dir` (`flock(LOCK_EX | LOCK_NB)`), close-on-exec.
pub(crate) fn lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE_NAME);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&path)
        .map_err(|e| Error::io("open", path.display().to_string(), e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(Error::SocketDirectoryInUse(dir.to_owned())),
        Err(TryLockError::Error(e)) => Err(Error::io("flock", path.display().to_string(), e)),
    }
}

/// A pidfile that holds the master's pid while it runs.
#[derive(Debug)]
pub(crate) struct Pidfile {
    path: PathBuf,
}

impl Pidfile {
    /// Writes `pid` and a newline to `path`.
    pub(crate) fn write(path: &Path, pid: u32) -> Result<Pidfile> {
        std::fs::write(path, format!("{pid}\n"))
            .map_err(|e| Error::io("write", path.display().to_string(), e))?;
        Ok(Pidfile {
            path: path.to_owned(),
        })
    }

    /// Removes the file (an explicit step of the master's end: a worker that drops its
    /// inherited copy of this value must not remove anything).
    pub(crate) fn remove(self) {
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the pidfile");
        }
    }
}

/// Destroys one object a ledger lists: unlinks the file, shm or semaphore. An object that is
/// already gone counts as destroyed.
pub(crate) fn destroy_object(object: &LedgerObject) -> Result<()> {
    let gone = |e: &netmcore_ipc::Error| matches!(e, netmcore_ipc::Error::Os { source, .. } if source.kind() == ErrorKind::NotFound);
    match object.kind() {
        ObjectKind::File => match std::fs::remove_file(object.path()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("unlink", object.path().display().to_string(), e)),
        },
        kind => {
            let name = object.name().to_string_lossy();
            let result = if kind == ObjectKind::Shm {
                netmcore_ipc::shm::unlink(&name)
            } else {
                netmcore_ipc::sem::unlink(&name)
            };
            match result {
                Ok(()) => Ok(()),
                Err(e) if gone(&e) => Ok(()),
                Err(e) => Err(Error::InMaster {
                    op: "unlink".to_owned(),
                    target: name.into_owned(),
                    message: e.to_string(),
                }),
            }
        }
    }
}

/// Opens the ledger of `dir` and destroys whatever a dead master left listed in it.
pub(crate) fn open_ledger(dir: &Path) -> Result<Ledger> {
    let mut ledger = Ledger::open(dir)?;
    let leftovers = ledger.live()?;
    if leftovers.is_empty() {
        return Ok(ledger);
    }
    let mut all_gone = true;
    for object in &leftovers {
        match destroy_object(object) {
            Ok(()) => {
                tracing::info!(kind = object.kind().as_str(), name = ?object.name(),
                    "destroyed an object left by a dead master");
                ledger.destroyed(object)?;
            }
            Err(e) => {
                all_gone = false;
                tracing::warn!(error = %e, "cannot destroy an object left by a dead master");
            }
        }
    }
    if all_gone {
        ledger.truncate()?;
    }
    Ok(ledger)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_missing_directory_is_created_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        prepare(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        // Preparing it again is fine.
        prepare(&dir).unwrap();
    }

    #[test]
    fn writable_by_others_symlinks_and_files_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let group = tmp.path().join("group");
        std::fs::create_dir(&group).unwrap();
        std::fs::set_permissions(&group, std::fs::Permissions::from_mode(0o770)).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(tmp.path(), &link).unwrap();
        let file = tmp.path().join("file");
        std::fs::write(&file, b"").unwrap();
        for (path, reason) in [
            (&group, "lets group or others write"),
            (&link, "symbolic link"),
            (&file, "not a directory"),
        ] {
            let e = prepare(path).unwrap_err();
            assert!(
                matches!(&e, Error::InsecureSocketDirectory { path: p, .. } if p == path),
                "{e:?}"
            );
            assert!(e.to_string().contains(reason), "{e}");
        }
    }

    #[test]
    fn a_directory_of_another_user_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let theirs = tmp.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        // Only root can give a directory away; elsewhere this case has nothing to check.
        if std::os::unix::fs::chown(&theirs, Some(4242), None).is_err() {
            return;
        }
        let e = prepare(&theirs).unwrap_err();
        assert!(e.to_string().contains("owned by uid 4242"), "{e}");
    }

    #[test]
    fn the_lock_is_exclusive_and_released_on_close() {
        let tmp = tempfile::tempdir().unwrap();
        let first = lock(tmp.path()).unwrap();
        assert!(matches!(lock(tmp.path()), Err(Error::SocketDirectoryInUse(d)) if d == tmp.path()));
        drop(first);
        lock(tmp.path()).unwrap();
    }

    #[test]
    fn the_pidfile_holds_the_pid_until_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("pid");
        let pidfile = Pidfile::write(&path, 4711).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "4711\n");
        pidfile.remove();
        assert!(!path.exists());
    }
}
