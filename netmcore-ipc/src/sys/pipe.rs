//! The two calls of a byte stream that need `unsafe`: `vmsplice`, and keeping a broken pipe
//! from killing the writer with `SIGPIPE`.
//!
//! # Safety
//!
//! `vmsplice` without `SPLICE_F_GIFT` lends the kernel the caller's pages: a reader of the pipe
//! copies from them later. It is sound for memory safety whatever happens to the caller's
//! buffer (the kernel holds references to the pages themselves), but a reader would see
//! changes made to the buffer before it read; [`splice_in`] is therefore only called by
//! `stream::Writer::write_all`, which returns only once the pipe no longer refers to any page
//! it lent. The signal calls only read and write `sigset_t` values on the stack and this
//! thread's signal mask, which they restore.

use std::os::fd::BorrowedFd;

use rustix::pipe::{IoSliceRaw, SpliceFlags, vmsplice};

/// Puts up to `bytes.len()` bytes in the pipe whose write end is `writer`, by reference: the
/// pipe holds the pages of `bytes`, and a reader copies from them. Returns how many bytes went
/// in (it blocks while the pipe is full).
///
/// The caller keeps `bytes` unchanged and alive until the reader has read them or closed its
/// end (see `stream::Writer::write_all`, which ends with a copying write as long as the pipe);
/// the kernel keeps the pages themselves alive as long as the pipe refers to them.
pub(crate) fn splice_in(writer: BorrowedFd<'_>, bytes: &[u8]) -> rustix::io::Result<usize> {
    let slices = [IoSliceRaw::from_slice(bytes)];
    // SAFETY: `writer` is the write end of a pipe (the only fd `stream::Writer` holds), so the
    // kernel reads `bytes` and never writes to them; without `SpliceFlags::GIFT` it takes no
    // ownership of the pages, only references, which keep them alive on its side.
    unsafe { vmsplice(writer, &slices, SpliceFlags::empty()) }
}

/// Runs `write` with `SIGPIPE` blocked in the calling thread. When `broken` says that its
/// outcome is a broken pipe (`EPIPE`: the reader is gone), the `SIGPIPE` the failed write
/// raised is taken back before the mask is restored, so the process sees the error and no
/// signal, whatever its disposition of `SIGPIPE`. A `SIGPIPE` pending before, or one that
/// arrived for another reason while no write failed, is left as it was.
pub(crate) fn without_sigpipe<T>(write: impl FnOnce() -> T, broken: impl Fn(&T) -> bool) -> T {
    // SAFETY: an empty `sigset_t` is a valid argument to `sigemptyset`, which initializes it.
    let mut pipe_only: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `sigemptyset` only writes the set it is given.
    unsafe { libc::sigemptyset(&raw mut pipe_only) };
    // SAFETY: `sigaddset` only writes the set it is given, initialized above.
    unsafe { libc::sigaddset(&raw mut pipe_only, libc::SIGPIPE) };
    // SAFETY: as above.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    let block = &raw const pipe_only;
    // SAFETY: valid sets; `pthread_sigmask` changes this thread's mask only.
    let result = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, block, &raw mut old) };
    let blocked = result == 0;
    if !blocked {
        return write();
    }
    let pending_before = pending_sigpipe();
    let outcome = write();
    if broken(&outcome) && !pending_before && pending_sigpipe() {
        let no_wait = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid set and timeout; it takes the pending SIGPIPE (thread or process
        // directed) without running a handler.
        unsafe {
            libc::sigtimedwait(
                &raw const pipe_only,
                std::ptr::null_mut(),
                &raw const no_wait,
            );
        }
    }
    // SAFETY: `old` was filled by the call above; this restores the thread's mask.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &raw const old, std::ptr::null_mut());
    }
    outcome
}

/// Whether `SIGPIPE` is pending for this thread or the process.
fn pending_sigpipe() -> bool {
    // SAFETY: as in `without_sigpipe`.
    let mut pending: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `sigpending` fills the set it is given.
    if unsafe { libc::sigpending(&raw mut pending) } != 0 {
        return false;
    }
    // SAFETY: `pending` was filled above.
    unsafe { libc::sigismember(&raw const pending, libc::SIGPIPE) == 1 }
}
