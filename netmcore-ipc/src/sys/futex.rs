//! `futex` wait and wake on a word of (possibly shared) memory, through rustix.
//!
//! # Safety
//!
//! This module holds no `unsafe` code: rustix's futex wrappers are safe functions that take the
//! word as `&AtomicU32`, so the address is always valid, aligned and alive during the call.
//!
//! The contract that matters here is a different one: the calls never pass
//! `FUTEX_PRIVATE_FLAG`. The kernel then keys a waiter by the page behind the address (the
//! shared memory object and offset for a `MAP_SHARED` mapping), not by the address in one
//! process, so that a wake in one process reaches a waiter in another process that maps the
//! same word, at whatever address.
#![cfg_attr(
    netmcore_loom,
    allow(
        dead_code,
        reason = "under loom only the state machine is built, not the futex semaphore that calls these"
    )
)]

use std::io;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use rustix::io::Errno;
use rustix::thread::futex;

/// Why [`wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woke {
    /// Woken by [`wake`], or the word no longer held the expected value (`EAGAIN`), or a
    /// signal interrupted the wait (`EINTR`), or the kernel woke it spuriously: the caller
    /// reloads the word and decides again.
    Early,
    /// The timeout elapsed (`ETIMEDOUT`).
    TimedOut,
}

/// `futex(word, FUTEX_WAIT, expected, timeout)`: sleeps while `*word == expected`, until a
/// [`wake`] on the same word (from any process), a signal, or the relative `timeout` (measured
/// on `CLOCK_MONOTONIC`; `None` waits without limit).
///
/// The comparison and the going to sleep are atomic with respect to [`wake`], which is what
/// makes a check-then-sleep free of lost wakeups. Without `FUTEX_PRIVATE_FLAG`, so it works
/// across processes.
///
/// # Errors
///
/// The OS error of `futex` other than `EAGAIN`, `EINTR` and `ETIMEDOUT` (e.g. `EFAULT`, which
/// a `&AtomicU32` rules out).
#[doc(alias = "futex")]
#[doc(alias = "FUTEX_WAIT")]
pub(crate) fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> io::Result<Woke> {
    let timeout = timeout.map(|t| futex::Timespec {
        tv_sec: i64::try_from(t.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(t.subsec_nanos()),
    });
    match futex::wait(word, futex::Flags::empty(), expected, timeout.as_ref()) {
        Ok(()) | Err(Errno::AGAIN | Errno::INTR) => Ok(Woke::Early),
        Err(Errno::TIMEDOUT) => Ok(Woke::TimedOut),
        Err(e) => Err(e.into()),
    }
}

/// `futex(word, FUTEX_WAKE, count)`: wakes up to `count` waiters sleeping in [`wait`] on the
/// same word, in any process. Returns how many were woken. A `count` above `i32::MAX` counts
/// as `i32::MAX`: the kernel reads the count as a signed `int`, and `u32::MAX` would be `-1`,
/// which wakes a single waiter.
///
/// # Errors
///
/// The OS error of `futex` (none is expected for a valid word).
#[doc(alias = "futex")]
#[doc(alias = "FUTEX_WAKE")]
pub(crate) fn wake(word: &AtomicU32, count: u32) -> io::Result<usize> {
    let count = count.min(i32::MAX.unsigned_abs());
    futex::wake(word, futex::Flags::empty(), count).map_err(Into::into)
}
