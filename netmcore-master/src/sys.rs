//! The one system call of this crate that the safe wrappers cannot express: `fork`.
//!
//! # Safety
//!
//! `fork` duplicates only the calling thread. The child of a process that has other threads
//! inherits their locks in whatever state they were, and may only call async-signal-safe
//! functions until it execs. netmcore forks only in the master, which is single-threaded by
//! design (DESIGN §2: it never starts a thread, and `startup` warns when the program already
//! has other threads). The child never returns into the caller's frames in a way that could
//! observe a half-updated state: [`fork`] is called between complete updates of the master's
//! state, and the child leaves through `std::process::exit`.

use rustix::io::Errno;
use rustix::process::Pid;

/// What [`fork`] returned in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forked {
    /// This is the parent; the child has this pid.
    Parent(Pid),
    /// This is the child.
    Child,
}

/// `fork()`: a copy of the calling process.
///
/// The caller must be the master (see the module's safety contract): single-threaded by
/// design, and not in the middle of an update of its state.
///
/// # Errors
///
/// The `errno` of `fork` (`EAGAIN` when the process limit is reached, `ENOMEM`).
pub(crate) fn fork() -> Result<Forked, Errno> {
    // SAFETY: only the master calls this, and the master is single-threaded by design (the
    // module's safety contract); a program that started threads anyway was warned by
    // `startup`. The child leaves through `std::process::exit` after running one body.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { child }) => Ok(Forked::Parent(
            Pid::from_raw(child.as_raw()).ok_or(Errno::SRCH)?,
        )),
        Ok(nix::unistd::ForkResult::Child) => Ok(Forked::Child),
        Err(e) => Err(Errno::from_raw_os_error(e as i32)),
    }
}
