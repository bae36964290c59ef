//! The few raw operations of the benchmark: a bare `fork` whose child leaves with `_exit`, for
//! the floors, and a plain `&[u64]` view of a preallocated shared memory region, for the shm
//! figure.
//!
//! # Safety
//!
//! [`fork_child`] is sound only in a single-threaded process: the floors run in a measuring
//! process of their own (this program re-executed with `--child`), which starts no thread,
//! so the child owns a consistent copy of the whole address space. The child runs its closure
//! and leaves with `_exit`, never returning into the caller's stack and running no exit
//! handler of the parent's.
//!
//! [`shm_words`] reads a region that nobody writes while the view lives: the master fills the
//! region before `startup`, then never writes it again, and the workers that get the view
//! only read it. The mapping is never unmapped in a process that inherited it, so the view
//! may be `'static`.

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};

use netmcore::SharedMemory;
use nix::unistd::{ForkResult, fork};
use rustix::process::{Pid, WaitOptions, waitpid};

/// `fork()`; the child runs `body` and leaves with `_exit(code)` (101 if `body` panicked).
/// Returns the child's pid in the parent.
///
/// # Errors
///
/// The error of `fork` (e.g. `EAGAIN` at the process limit).
#[doc(alias = "fork")]
pub fn fork_child(body: impl FnOnce() -> i32) -> io::Result<Pid> {
    // SAFETY: the caller is single-threaded (see the module's contract), so the child owns a
    // consistent copy of the address space, and it never returns from this function.
    match unsafe { fork() }.map_err(io::Error::from)? {
        ForkResult::Parent { child } => {
            Ok(Pid::from_raw(child.as_raw()).expect("a child pid is positive"))
        }
        ForkResult::Child => {
            let code = catch_unwind(AssertUnwindSafe(body)).unwrap_or(101);
            // SAFETY: `_exit` only ends the process; nothing of this process runs afterwards.
            unsafe { libc::_exit(code) }
        }
    }
}

/// `waitpid(pid, 0)`: waits for child `pid` and reaps it; returns its exit code (`None` when
/// it died by a signal).
///
/// # Errors
///
/// The error of `waitpid`.
#[doc(alias = "waitpid")]
pub fn wait_child(pid: Pid) -> io::Result<Option<i32>> {
    let status = waitpid(Some(pid), WaitOptions::empty())?;
    Ok(status.and_then(|(_, status)| status.exit_status()))
}

/// The region `memory` as 64-bit words (a trailing partial word is left out).
///
/// Only for a region that nobody writes while the view is used (see the module's contract).
///
/// # Panics
///
/// If the region does not start at an 8-byte boundary (a preallocated region starts at a
/// page boundary).
pub fn shm_words(memory: SharedMemory) -> &'static [u64] {
    let start = memory.as_ptr().cast::<u64>();
    assert!(start.is_aligned(), "a preallocated region is page-aligned");
    // SAFETY: the mapping is valid for `memory.len()` bytes for the life of the process and
    // `start` is aligned (checked above); every bit pattern is a valid `u64`; nobody writes
    // the region while the view lives (module contract).
    unsafe { std::slice::from_raw_parts(start, memory.len() / 8) }
}
