//! POSIX named semaphores through libc's `sem_*` functions, the only place in the workspace
//! that calls them.
//!
//! # Safety
//!
//! The contract of this module, on which every `unsafe` block below relies:
//!
//! * A [`RawSemaphore`] holds the `sem_t *` that a successful `sem_open` returned (never null,
//!   never `SEM_FAILED`), and nothing else. It is the only owner of that pointer: the pointer is
//!   never handed out, every `sem_*` call goes through `&self`, and `Drop` calls `sem_close`
//!   exactly once, after which the value is gone. So every call sees a live semaphore.
//! * glibc's `sem_post`, `sem_wait`, `sem_trywait`, `sem_timedwait` and `sem_getvalue` are
//!   thread-safe (POSIX requires it), and a `sem_t *` from `sem_open` is not tied to a thread,
//!   so the handle is `Send` and `Sync`.
//! * Names reach libc as `CStr`s, so they are NUL-terminated and contain no interior NUL.
//! * A semaphore opened before a `fork` stays valid in the child, which inherits the mapping
//!   behind the pointer; parent and child each close their own copy.

use std::ffi::CString;
use std::io;
use std::ptr::NonNull;
use std::time::Duration;

use crate::{Error, Result};

/// The largest value of a named semaphore (`SEM_VALUE_MAX` on Linux, `INT_MAX`).
pub(crate) const SEM_VALUE_MAX: u32 = i32::MAX as u32;

/// The name as a `CString`, or `EINVAL` if it holds a NUL (validated names never do).
fn c_name(name: &str, op: &'static str) -> Result<CString> {
    CString::new(name).map_err(|_| Error::os(op, name, io::Error::from_raw_os_error(libc::EINVAL)))
}

/// An open named semaphore; see the module's safety contract.
pub(crate) struct RawSemaphore {
    sem: NonNull<libc::sem_t>,
}

// SAFETY: the `sem_t *` from `sem_open` is not tied to the thread that opened it (module
// contract), and `Drop` may run on any thread.
unsafe impl Send for RawSemaphore {}
// SAFETY: all shared access goes through the thread-safe `sem_*` functions (module contract).
unsafe impl Sync for RawSemaphore {}

impl RawSemaphore {
    /// `sem_open(name, O_CREAT | O_EXCL, 0600, initial)`: creates a new semaphore with value
    /// `initial`, failing if one of that name exists.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] naming `sem_open` and `name`: `EEXIST` when the name is taken, `EINVAL`
    /// when `initial` exceeds `SEM_VALUE_MAX`, `EACCES`, ...
    #[doc(alias = "sem_open")]
    pub(crate) fn create(name: &str, initial: u32) -> Result<RawSemaphore> {
        let c = c_name(name, "sem_open")?;
        let mode: libc::c_uint = 0o600;
        let initial: libc::c_uint = initial;
        let (name_ptr, flags) = (c.as_ptr(), libc::O_CREAT | libc::O_EXCL);
        // SAFETY: `name_ptr` points to the NUL-terminated `c`, which outlives the call; with
        // `O_CREAT` the variadic arguments are the mode and the initial value, passed as
        // `c_uint` as the C default argument promotions of `mode_t` and `unsigned int` require.
        let sem = unsafe { libc::sem_open(name_ptr, flags, mode, initial) };
        RawSemaphore::from_open(sem, name)
    }

    /// `sem_open(name, 0)`: opens an existing semaphore.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] naming `sem_open` and `name`, e.g. `ENOENT`.
    #[doc(alias = "sem_open")]
    pub(crate) fn open(name: &str) -> Result<RawSemaphore> {
        let c = c_name(name, "sem_open")?;
        // SAFETY: `c` is a NUL-terminated string that outlives the call; without `O_CREAT`
        // no variadic arguments are read.
        let sem = unsafe { libc::sem_open(c.as_ptr(), 0) };
        RawSemaphore::from_open(sem, name)
    }

    fn from_open(sem: *mut libc::sem_t, name: &str) -> Result<RawSemaphore> {
        if sem == libc::SEM_FAILED {
            return Err(Error::os("sem_open", name, io::Error::last_os_error()));
        }
        let sem = NonNull::new(sem).ok_or_else(|| {
            Error::os("sem_open", name, io::Error::from_raw_os_error(libc::EINVAL))
        })?;
        Ok(RawSemaphore { sem })
    }

    /// `sem_post(sem)`: adds one to the value and wakes a waiter if there is one.
    ///
    /// # Errors
    ///
    /// The OS error of `sem_post`: `EOVERFLOW` when the value is already `SEM_VALUE_MAX`.
    #[doc(alias = "sem_post")]
    pub(crate) fn post(&self) -> io::Result<()> {
        // SAFETY: `self.sem` is a live semaphore (module contract).
        let rc = unsafe { libc::sem_post(self.sem.as_ptr()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// `sem_wait(sem)`: takes one from the value, blocking while it is 0. Retries on `EINTR`.
    ///
    /// # Errors
    ///
    /// The OS error of `sem_wait` other than `EINTR` (none is expected for a valid semaphore).
    #[doc(alias = "sem_wait")]
    pub(crate) fn wait(&self) -> io::Result<()> {
        loop {
            // SAFETY: `self.sem` is a live semaphore (module contract).
            let rc = unsafe { libc::sem_wait(self.sem.as_ptr()) };
            if rc == 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
        }
    }

    /// `sem_trywait(sem)`: takes one from the value if it is positive. Returns `Ok(false)` on
    /// `EAGAIN` (the value was 0); retries on `EINTR`.
    ///
    /// # Errors
    ///
    /// The OS error of `sem_trywait` other than `EAGAIN` and `EINTR`.
    #[doc(alias = "sem_trywait")]
    pub(crate) fn try_wait(&self) -> io::Result<bool> {
        loop {
            // SAFETY: `self.sem` is a live semaphore (module contract).
            let rc = unsafe { libc::sem_trywait(self.sem.as_ptr()) };
            if rc == 0 {
                return Ok(true);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) => return Ok(false),
                Some(libc::EINTR) => {}
                _ => return Err(e),
            }
        }
    }

    /// `sem_timedwait(sem, now(CLOCK_REALTIME) + timeout)`: takes one from the value, blocking
    /// while it is 0 until the absolute `CLOCK_REALTIME` deadline. Returns `Ok(false)` on
    /// `ETIMEDOUT`; retries on `EINTR` with the same deadline.
    ///
    /// The deadline is on the wall clock, as `sem_timedwait` requires, so a jump of the system
    /// clock lengthens or shortens the wait.
    ///
    /// # Errors
    ///
    /// The OS error of `sem_timedwait` other than `ETIMEDOUT` and `EINTR`.
    #[doc(alias = "sem_timedwait")]
    pub(crate) fn timed_wait(&self, timeout: Duration) -> io::Result<bool> {
        let deadline = realtime_deadline(timeout);
        loop {
            // SAFETY: `self.sem` is a live semaphore (module contract) and `deadline` is a
            // valid timespec that outlives the call.
            let rc = unsafe { libc::sem_timedwait(self.sem.as_ptr(), &deadline) };
            if rc == 0 {
                return Ok(true);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ETIMEDOUT) => return Ok(false),
                Some(libc::EINTR) => {}
                _ => return Err(e),
            }
        }
    }

    /// `sem_getvalue(sem, &value)`: the current value (never negative on Linux).
    ///
    /// # Errors
    ///
    /// The OS error of `sem_getvalue` (none is expected for a valid semaphore).
    #[doc(alias = "sem_getvalue")]
    pub(crate) fn value(&self) -> io::Result<u32> {
        let mut value: libc::c_int = 0;
        // SAFETY: `self.sem` is a live semaphore (module contract) and `value` is a valid
        // `int` to write to.
        let rc = unsafe { libc::sem_getvalue(self.sem.as_ptr(), &mut value) };
        if rc == 0 {
            Ok(u32::try_from(value).unwrap_or(0))
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl Drop for RawSemaphore {
    /// `sem_close(sem)`; an error (which would mean a bug) is logged, never raised.
    fn drop(&mut self) {
        // SAFETY: `self.sem` is a live semaphore that no one uses after this call: `self` is
        // being dropped and owns the only copy of the pointer (module contract).
        let rc = unsafe { libc::sem_close(self.sem.as_ptr()) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            tracing::warn!(pid = std::process::id(), error = %e, "sem_close failed");
        }
    }
}

impl std::fmt::Debug for RawSemaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawSemaphore({:p})", self.sem)
    }
}

/// `sem_unlink(name)`: removes the name of a semaphore; processes that have it open keep it.
///
/// # Errors
///
/// [`Error::Os`] naming `sem_unlink` and `name`, e.g. `ENOENT`.
#[doc(alias = "sem_unlink")]
pub(crate) fn unlink(name: &str) -> Result<()> {
    let c = c_name(name, "sem_unlink")?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    let rc = unsafe { libc::sem_unlink(c.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::os("sem_unlink", name, io::Error::last_os_error()))
    }
}

/// `clock_gettime(CLOCK_REALTIME) + timeout` as a `timespec`, saturating far in the future.
fn realtime_deadline(timeout: Duration) -> libc::timespec {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
    let nanos = now.tv_nsec + i64::from(timeout.subsec_nanos());
    let secs = i64::try_from(timeout.as_secs())
        .unwrap_or(i64::MAX)
        .saturating_add(now.tv_sec)
        .saturating_add(nanos / 1_000_000_000);
    libc::timespec {
        tv_sec: libc::time_t::try_from(secs).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::try_from(nanos % 1_000_000_000).unwrap_or(0),
    }
}
