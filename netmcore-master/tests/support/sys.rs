//! Forking for the multi-process tests.
//!
//! # Safety
//!
//! `fork` is only sound here because the callers are single-threaded: the test binaries using
//! this module have `harness = false`, and their cases fork from the main thread (or from a
//! child that is itself single-threaded). The child runs its closure and leaves with `exit`,
//! never returning into the caller's stack.

use nix::unistd::{ForkResult, fork};

/// Forks; the child runs `body` and exits with its return value (101 if it panics). Returns
/// the child's pid in the parent.
pub fn fork_child(body: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the callers are single-threaded (see the module's safety contract), so the child
    // owns a consistent copy of the whole address space, and it leaves through `exit` below.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Parent { child } => child.as_raw(),
        ForkResult::Child => {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(101);
            std::process::exit(code)
        }
    }
}

/// `write(fd, bytes)` on a descriptor known only by its number, e.g. found in `/proc/self/fd`
/// (a test that plays a misbehaving worker writes garbage to its own channel this way).
pub fn write_raw_fd(fd: i32, bytes: &[u8]) -> std::io::Result<usize> {
    // SAFETY: the caller names a descriptor that is open in this process for the whole call
    // (it was just listed in /proc/self/fd, and this single-threaded process closes nothing
    // meanwhile); the borrow does not outlive the call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    rustix::io::write(fd, bytes).map_err(Into::into)
}
