//! The socket directory: its checks, its lock, the pidfile, and the cleanup of what a dead
//! master left in its ledger.

use std::fmt;
use std::fs::{DirBuilder, File, OpenOptions, TryLockError};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use netmcore_resources::ledger::{Ledger, LedgerObject, ObjectKind};

use crate::{Error, Result};

/// The name of the lock file in the socket directory.
pub const LOCK_FILE_NAME: &str = "netmcore.lock";

/// Permission bits that make a socket directory unsafe: write access for group or others.
const UNSAFE_BITS: u32 = 0o022;

/// Creates the socket directory (mode 0700) if it is missing, and checks that it is a real
/// directory owned by this user and writable by nobody else.
pub(crate) fn prepare(dir: &Path) -> Result<()> {
    check_socket_path_len(dir)?;
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
    check(dir, &meta)
}

/// The longest path a Unix socket address holds (`sun_path` is 108 bytes with the NUL).
const SOCKET_PATH_MAX: usize = 107;

/// Refuses, before anything is created, a directory whose admin socket path would not fit in a
/// Unix socket address.
fn check_socket_path_len(dir: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let len = dir
        .join(crate::admin::ADMIN_SOCKET_NAME)
        .as_os_str()
        .as_bytes()
        .len();
    if len > SOCKET_PATH_MAX {
        return Err(Error::SocketDirectoryPathTooLong {
            path: dir.to_owned(),
            len,
            limit: SOCKET_PATH_MAX,
        });
    }
    Ok(())
}

/// Checks that `dir`, whose `lstat` is `meta`, is a real directory owned by this user and
/// writable by nobody else.
fn check(dir: &Path, meta: &std::fs::Metadata) -> Result<()> {
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

/// How long [`lock_patiently`] waits for a lock that is held.
///
/// When a master dies, the lock can stay held for a few milliseconds more: by its guardian,
/// which takes it while it destroys what the ledger lists, and by a worker forked in the
/// master's last instant, before that worker closes its copy and dies with its master.
pub(crate) const LOCK_PATIENCE: Duration = Duration::from_secs(1);

/// [`lock`], retrying for up to [`LOCK_PATIENCE`] while the lock is held, so that a master
/// started right after another one died is not turned away by that master's guardian.
pub(crate) fn lock_patiently(dir: &Path) -> Result<File> {
    let deadline = Instant::now() + LOCK_PATIENCE;
    loop {
        match lock(dir) {
            Err(Error::SocketDirectoryInUse(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
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

/// Whether [`destroy_object`] removed the object or found it gone already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gone {
    /// It existed and was removed now.
    Destroyed,
    /// It did not exist (any more, or ever: an object is recorded before it is created).
    AlreadyGone,
}

/// Destroys one object a ledger lists: unlinks the file, shm or semaphore.
pub(crate) fn destroy_object(object: &LedgerObject) -> Result<Gone> {
    let gone = |e: &netmcore_ipc::Error| matches!(e, netmcore_ipc::Error::Os { source, .. } if source.kind() == ErrorKind::NotFound);
    match object.kind() {
        ObjectKind::File => match std::fs::remove_file(object.path()) {
            Ok(()) => Ok(Gone::Destroyed),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Gone::AlreadyGone),
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
                Ok(()) => Ok(Gone::Destroyed),
                Err(e) if gone(&e) => Ok(Gone::AlreadyGone),
                Err(e) => Err(Error::InMaster {
                    op: if kind == ObjectKind::Shm {
                        "shm_unlink"
                    } else {
                        "sem_unlink"
                    }
                    .to_owned(),
                    target: name.into_owned(),
                    message: e.to_string(),
                }),
            }
        }
    }
}

/// What a cleanup of a socket directory did: [`destroy_resources_in`](crate::destroy_resources_in),
/// the cleanup at `startup`, and the guardian's after the master died.
///
/// ```
/// use netmcore_master::{DestroyReport, destroy_resources_in};
///
/// // A directory no master ever used: nothing to do.
/// let dir = tempfile::tempdir()?;
/// let report: DestroyReport = destroy_resources_in(dir.path())?;
/// assert!(report.is_empty() && report.is_clean());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DestroyReport {
    /// The objects the ledger listed that existed and were removed now.
    pub destroyed: Vec<LedgerObject>,
    /// The objects the ledger listed that did not exist any more (or were never created: an
    /// object is recorded before it is created).
    pub already_gone: Vec<LedgerObject>,
    /// The objects that could not be removed, with the reason; they stay listed in the
    /// ledger.
    pub failed: Vec<(LedgerObject, String)>,
    /// The stale socket files removed from the directory (`admin.sock`).
    pub sockets_removed: Vec<PathBuf>,
}

impl DestroyReport {
    /// Whether nothing failed: every object the ledger listed is gone now.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.failed.is_empty()
    }

    /// Whether there was nothing to do at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.destroyed.is_empty()
            && self.already_gone.is_empty()
            && self.failed.is_empty()
            && self.sockets_removed.is_empty()
    }
}

impl fmt::Display for DestroyReport {
    /// One line per object or socket, e.g. `destroyed shm /netmcore-4711-…`, `already gone
    /// file /tmp/out.bin`, `failed sem /x: …`, `removed socket /run/app/admin.sock`; `nothing
    /// to clean` when there was nothing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("nothing to clean");
        }
        let mut lines = Vec::new();
        lines.extend(self.destroyed.iter().map(|o| format!("destroyed {o}")));
        lines.extend(
            self.already_gone
                .iter()
                .map(|o| format!("already gone {o}")),
        );
        lines.extend(
            self.failed
                .iter()
                .map(|(o, why)| format!("failed {o}: {why}")),
        );
        lines.extend(
            self.sockets_removed
                .iter()
                .map(|p| format!("removed socket {}", p.display())),
        );
        f.write_str(&lines.join("\n"))
    }
}

/// Destroys every object `ledger` lists as live, records each one destroyed (or already
/// gone), empties the ledger when all are gone, and, with `sockets`, removes the directory's
/// stale sockets.
///
/// The caller holds the directory's lock: the next master (which replaces a stale admin
/// socket itself, so it passes `sockets: false`), `destroy_resources_in`, or the guardian of
/// a dead master. The one cleanup of the crate, shared by those three.
pub(crate) fn clean(dir: &Path, ledger: &mut Ledger, sockets: bool) -> Result<DestroyReport> {
    let mut report = DestroyReport::default();
    for object in ledger.live()? {
        match destroy_object(&object) {
            Ok(gone) => {
                ledger.destroyed(&object)?;
                match gone {
                    Gone::Destroyed => report.destroyed.push(object),
                    Gone::AlreadyGone => report.already_gone.push(object),
                }
            }
            Err(e) => report.failed.push((object, e.to_string())),
        }
    }
    if report.failed.is_empty() {
        ledger.truncate()?;
    }
    if sockets {
        remove_stale_sockets(dir, &mut report);
    }
    Ok(report)
}

/// Removes the socket files of a dead master from `dir` (the caller holds the lock).
pub(crate) fn remove_stale_sockets(dir: &Path, report: &mut DestroyReport) {
    for name in STALE_SOCKETS {
        let path = dir.join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_socket() => match std::fs::remove_file(&path) {
                Ok(()) => report.sockets_removed.push(path),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => report
                    .failed
                    .push((LedgerObject::file(&path), e.to_string())),
            },
            _ => {}
        }
    }
}

/// The socket files a master makes in its directory, which are stale once it is dead.
pub(crate) const STALE_SOCKETS: [&str; 1] = [crate::admin::ADMIN_SOCKET_NAME];

/// Opens the ledger of `dir` and destroys whatever a dead master left listed in it (the
/// caller holds the directory's lock).
pub(crate) fn open_ledger(dir: &Path) -> Result<Ledger> {
    let mut ledger = Ledger::open(dir)?;
    let report = clean(dir, &mut ledger, false)?;
    log_report(&report, "startup");
    Ok(ledger)
}

/// Logs what a cleanup did.
pub(crate) fn log_report(report: &DestroyReport, by: &str) {
    for object in &report.destroyed {
        tracing::info!(kind = object.kind().as_str(), name = ?object.name(),
            "{by}: destroyed an object left by a dead master");
    }
    for (object, why) in &report.failed {
        tracing::warn!(kind = object.kind().as_str(), name = ?object.name(),
            "{by}: cannot destroy an object left by a dead master: {why}");
    }
}

/// `destroy_resources_in`: cleans the socket directory of a dead master.
pub(crate) fn destroy_in(dir: &Path) -> Result<DestroyReport> {
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| Error::io("lstat", dir.display().to_string(), e))?;
    check(dir, &meta)?;
    let ledger_file = netmcore_resources::ledger::ledger_path(dir);
    let has_lock = std::fs::symlink_metadata(dir.join(LOCK_FILE_NAME)).is_ok();
    let has_ledger = std::fs::symlink_metadata(&ledger_file).is_ok();
    let has_socket = STALE_SOCKETS
        .iter()
        .any(|name| std::fs::symlink_metadata(dir.join(name)).is_ok());
    if !has_lock && !has_ledger && !has_socket {
        // No master ever used it: create nothing there.
        return Ok(DestroyReport::default());
    }
    // Held while cleaning, so that no master starts on the directory meanwhile.
    let _lock = lock_patiently(dir)?;
    if has_ledger {
        let mut ledger = Ledger::open(dir)?;
        clean(dir, &mut ledger, true)
    } else {
        let mut report = DestroyReport::default();
        remove_stale_sockets(dir, &mut report);
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_path_too_long_for_a_socket_is_refused_before_anything_is_created() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("d".repeat(120));
        match prepare(&dir) {
            Err(Error::SocketDirectoryPathTooLong { path, len, limit }) => {
                assert_eq!(path, dir);
                assert!(len > limit, "{len} > {limit}");
            }
            other => panic!("expected SocketDirectoryPathTooLong, got {other:?}"),
        }
        assert!(!dir.exists(), "nothing is created");
    }

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
