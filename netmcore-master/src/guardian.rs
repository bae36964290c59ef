//! The guardian: a small process that outlives a master killed by SIGKILL just long enough to
//! destroy what the master's ledger lists.
//!
//! # Design
//!
//! `startup` forks the guardian right after it has taken the directory's lock and opened
//! the ledger, before it records anything or forks a worker. The two are connected by a pipe
//! whose write end only the master holds (close-on-exec; every worker child closes its copy
//! on the fork path). The guardian:
//!
//! * starts a session of its own (`setsid`), so that a SIGINT from the terminal or a signal
//!   to the master's process group does not reach it, and it has no death signal: the
//!   master's death must not kill it;
//! * closes every descriptor except the read end of the pipe and those of stdin, stdout and
//!   stderr that are not the master's (so it holds neither the directory's lock nor the
//!   ledger, and a new master can start at once);
//! * blocks reading the pipe. A byte [`CLEAN_END`] means the master ended normally and
//!   destroyed what it held: the guardian exits. End of file without it means the master
//!   died: the guardian takes the directory's lock (retrying briefly, since a child forked
//!   by the master in its last instant may hold a copy for a moment), opens the ledger by
//!   path (a file description of its own, so `flock` works), destroys everything it lists,
//!   empties it, removes the stale admin socket and the master's pidfile, and exits. If a new
//!   master holds the lock instead, that master cleaned the ledger at its startup, and the
//!   guardian leaves.
//!
//! On a normal end the master writes [`CLEAN_END`], closes the pipe and reaps the guardian,
//! so that no zombie is left. The guardian never logs through `tracing` (a subscriber's
//! descriptors are closed in it); it writes a failure to stderr.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use netmcore_resources::ledger::{Ledger, ledger_path};
use rustix::io::Errno;
use rustix::pipe::{PipeFlags, pipe_with};
use rustix::process::{Pid, WaitOptions};

use crate::dir;
use crate::sys::{self, Forked};
use crate::{Error, Result};

/// The byte that tells the guardian that the master ended normally.
pub(crate) const CLEAN_END: u8 = b'.';

/// How long a guardian tries to take the lock of a dead master's directory.
const LOCK_PATIENCE: Duration = Duration::from_secs(2);

/// The master's side of a running guardian.
#[derive(Debug)]
pub(crate) struct Guardian {
    pid: Pid,
    /// The write end of the pipe. Dropping it without [`Guardian::finish`] (in a worker
    /// child, or when the master unwinds) means "the master died" to the guardian — which is
    /// right in the master, and harmless in a child, whose copy is one of two.
    pipe: OwnedFd,
}

impl Guardian {
    /// The write end of the pipe (for a forked child that closes it by number).
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.pipe)
    }

    /// Forks the guardian of the master whose socket directory is `dir`. `master_fds` are
    /// descriptors of the master (its lock) that the guardian must not keep even if they are
    /// numbered 0, 1 or 2.
    pub(crate) fn spawn(
        dir: &Path,
        pidfile: Option<&Path>,
        master_fds: &[RawFd],
    ) -> Result<Guardian> {
        let (read, write) =
            pipe_with(PipeFlags::CLOEXEC).map_err(|e| Error::io("pipe2", "guardian pipe", e))?;
        let master = rustix::process::getpid();
        // Output buffered in the master must not be written once more by the child.
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        match sys::fork() {
            Ok(Forked::Child) => {
                let mut keep: Vec<RawFd> = vec![read.as_raw_fd()];
                keep.extend(
                    (0..=2).filter(|fd| *fd != write.as_raw_fd() && !master_fds.contains(fd)),
                );
                // The values owning the other descriptors are never dropped or used here.
                std::mem::forget(write);
                sys::close_fds_in_guardian(&keep);
                let code =
                    std::panic::catch_unwind(|| watch(read, dir, pidfile, master)).unwrap_or(1);
                std::process::exit(code)
            }
            Ok(Forked::Parent(pid)) => {
                drop(read);
                tracing::debug!(guardian = pid.as_raw_pid(), "guardian started");
                Ok(Guardian { pid, pipe: write })
            }
            Err(e) => Err(Error::io("fork", "the guardian", e)),
        }
    }

    /// The master ends normally: tells the guardian so and reaps it.
    pub(crate) fn finish(self) {
        let Guardian { pid, pipe } = self;
        // A guardian that is gone (killed by someone) reads nothing: it is reaped anyway.
        while let Err(Errno::INTR) = rustix::io::write(&pipe, &[CLEAN_END]) {}
        drop(pipe);
        // ECHILD: reaped by the kernel already (the program ignores SIGCHLD).
        while let Err(Errno::INTR) = rustix::process::waitpid(Some(pid), WaitOptions::empty()) {}
    }
}

/// The guardian's life: waits for the master's end; cleans up if it died. Returns the exit
/// code.
fn watch(pipe: OwnedFd, dir: &Path, pidfile: Option<&Path>, master: Pid) -> i32 {
    // Out of the master's session and process group: signals meant for them (a terminal's
    // SIGINT, a kill of the group) must not stop the cleanup.
    let _ = rustix::process::setsid();
    let mut byte = [0u8; 1];
    loop {
        match rustix::io::read(&pipe, &mut byte) {
            Ok(1) if byte[0] == CLEAN_END => return 0,
            Ok(0) => break,
            Ok(_) | Err(Errno::INTR) => {}
            // Cannot happen on a pipe we own; treat it as the master's end to be safe.
            Err(_) => break,
        }
    }
    drop(pipe);
    match clean_after_death(dir) {
        Ok(Some(report)) => {
            if let Some(path) = pidfile {
                remove_pidfile(path, master);
            }
            if report.is_clean() {
                0
            } else {
                let _ = writeln!(
                    std::io::stderr(),
                    "netmcore guardian of {}: the dead master's objects were not all destroyed:\n{report}",
                    dir.display()
                );
                1
            }
        }
        // A new master holds the directory and cleaned it at its startup.
        Ok(None) => 0,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "netmcore guardian of {}: cannot clean up after the dead master: {e}",
                dir.display()
            );
            1
        }
    }
}

/// Takes the lock of `dir` and cleans what its ledger lists; `None` when a live master holds
/// the lock.
fn clean_after_death(dir: &Path) -> Result<Option<dir::DestroyReport>> {
    let deadline = Instant::now() + LOCK_PATIENCE;
    let _lock = loop {
        match dir::lock(dir) {
            Ok(lock) => break lock,
            Err(Error::SocketDirectoryInUse(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(Error::SocketDirectoryInUse(_)) => return Ok(None),
            // The directory is gone, and the ledger with it: nothing is known to clean.
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
    };
    if !ledger_path(dir).exists() {
        let mut report = dir::DestroyReport::default();
        dir::remove_stale_sockets(dir, &mut report);
        return Ok(Some(report));
    }
    let mut ledger = Ledger::open(dir)?;
    dir::clean(dir, &mut ledger, true).map(Some)
}

/// Removes the dead master's pidfile if it still names the master.
fn remove_pidfile(path: &Path, master: Pid) {
    let path: PathBuf = path.to_owned();
    let names_master = std::fs::read_to_string(&path)
        .is_ok_and(|text| text.trim() == master.as_raw_pid().to_string());
    if names_master {
        let _ = std::fs::remove_file(&path);
    }
}
