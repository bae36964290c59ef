//! The few raw operations of the benchmark: a bare `fork` whose child leaves with `_exit`, for
//! the floors, a `PTHREAD_PROCESS_SHARED` mutex in shared memory, for the mutex floor, and a
//! plain `&[u64]` view of a preallocated shared memory region, for the shm figure.
//!
//! # Safety
//!
//! [`fork_child`] is sound only in a single-threaded process: the floors run in a measuring
//! process of their own (this program re-executed with `--child`), which starts no thread,
//! so the child owns a consistent copy of the whole address space. The child runs its closure
//! and leaves with `_exit`, never returning into the caller's stack and running no exit
//! handler of the parent's.
//!
//! A [`SharedMutex`] owns the mapping its `pthread_mutex_t` lives in, at the mapping's start,
//! and is the only user of those bytes: its mapping is fresh anonymous shared memory that
//! nobody else maps, except the processes forked while the `SharedMutex` lives, which use the
//! mutex only through it. It is initialized once before any such fork, locked and unlocked
//! only through [`SharedMutexGuard`] (so only by the process that locked it), and destroyed
//! once, after every process that used it was reaped.
//!
//! [`shm_words`] reads a region that nobody writes while the view lives: the master fills the
//! region before `startup`, then never writes it again, and the workers that get the view
//! only read it. The mapping is never unmapped in a process that inherited it, so the view
//! may be `'static`.

use std::io;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::AtomicU64;

use netmcore::SharedMemory;
use netmcore::ipc::shm::Mapping;
use nix::unistd::{ForkResult, fork};
use rustix::process::{Pid, WaitId, WaitIdOptions, WaitOptions, waitid, waitpid};

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

/// `waitid(P_PID, pid, WEXITED | WNOHANG | WNOWAIT)`: whether child `pid` has ended, without
/// reaping it (a later [`wait_child`] still gets its status).
///
/// # Errors
///
/// The error of `waitid` (e.g. `ECHILD` for a pid that is not a child of this process).
#[doc(alias = "waitid")]
pub fn has_ended(pid: Pid) -> io::Result<bool> {
    let status = waitid(
        WaitId::Pid(pid),
        WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT,
    )?;
    Ok(status.is_some())
}

/// The size of a `pthread_mutex_t`, rounded up to whole 64-bit words.
const MUTEX_WORDS: usize = size_of::<libc::pthread_mutex_t>().div_ceil(8);

/// A `PTHREAD_PROCESS_SHARED` pthread mutex at the start of a shared mapping that it owns,
/// followed by the mapping's remaining 64-bit words ([`SharedMutex::words`]), which the
/// processes forked while it lives share with this one.
///
/// Dropping it destroys the mutex (ignoring an error; [`SharedMutex::destroy`] reports it)
/// and unmaps the memory: only once every process that used it has been reaped.
pub struct SharedMutex {
    mapping: Mapping,
    destroyed: bool,
}

impl SharedMutex {
    /// `pthread_mutexattr_setpshared(PTHREAD_PROCESS_SHARED)` and `pthread_mutex_init` at
    /// the start of `mapping`, which must be fresh shared memory that nobody else uses (see
    /// the module's contract) and longer than the mutex.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a mapping too short or not aligned for the mutex; the error of a
    /// `pthread_mutexattr_*` call or of `pthread_mutex_init`.
    #[doc(alias = "pthread_mutex_init")]
    pub fn new(mapping: Mapping) -> io::Result<SharedMutex> {
        let fits = mapping
            .as_atomic_u64s()
            .is_some_and(|words| words.len() > MUTEX_WORDS);
        if !fits
            || !mapping
                .as_ptr()
                .cast::<libc::pthread_mutex_t>()
                .is_aligned()
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a shared mutex needs an aligned mapping longer than a pthread_mutex_t",
            ));
        }
        let mut attr = MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: `attr` is writable storage for an attribute object, which this initializes.
        let rc = unsafe { libc::pthread_mutexattr_init(attr.as_mut_ptr()) };
        check(rc, "pthread_mutexattr_init")?;
        // SAFETY: `attr` was initialized just above and is not destroyed yet.
        let rc = unsafe {
            libc::pthread_mutexattr_setpshared(attr.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED)
        };
        let set = check(rc, "pthread_mutexattr_setpshared");
        let raw = mapping.as_ptr().cast::<libc::pthread_mutex_t>();
        let init = set.and_then(|()| {
            // SAFETY: the start of the mapping is aligned and large enough (checked above),
            // nobody else uses those bytes (module contract) and no process has been forked
            // from this one since it was mapped; `attr` is initialized.
            let rc = unsafe { libc::pthread_mutex_init(raw, attr.as_ptr()) };
            check(rc, "pthread_mutex_init")
        });
        // SAFETY: `attr` is initialized, and no longer needed once the mutex is.
        let rc = unsafe { libc::pthread_mutexattr_destroy(attr.as_mut_ptr()) };
        init?;
        let mutex = SharedMutex {
            mapping,
            destroyed: false,
        };
        check(rc, "pthread_mutexattr_destroy")?;
        Ok(mutex)
    }

    /// The mutex in the mapping.
    fn raw(&self) -> *mut libc::pthread_mutex_t {
        self.mapping.as_ptr().cast()
    }

    /// `pthread_mutex_lock`: waits for the mutex and holds it until the guard is dropped.
    ///
    /// # Errors
    ///
    /// The error of `pthread_mutex_lock` (e.g. `EAGAIN`, `EDEADLK`).
    #[doc(alias = "pthread_mutex_lock")]
    pub fn lock(&self) -> io::Result<SharedMutexGuard<'_>> {
        // SAFETY: the mutex was initialized by `new` and is not destroyed while `self` lives.
        let rc = unsafe { libc::pthread_mutex_lock(self.raw()) };
        check(rc, "pthread_mutex_lock")?;
        Ok(SharedMutexGuard {
            mutex: self,
            not_send: PhantomData,
        })
    }

    /// The 64-bit words of the mapping after the mutex (the first one shares its cache line).
    pub fn words(&self) -> &[AtomicU64] {
        self.mapping
            .as_atomic_u64s()
            .and_then(|words| words.get(MUTEX_WORDS..))
            .unwrap_or_default()
    }

    /// `pthread_mutex_destroy`, reporting its error (e.g. `EBUSY` for a mutex still locked).
    /// Only once every process that used the mutex has been reaped.
    ///
    /// # Errors
    ///
    /// The error of `pthread_mutex_destroy`.
    #[doc(alias = "pthread_mutex_destroy")]
    pub fn destroy(mut self) -> io::Result<()> {
        self.destroyed = true;
        // SAFETY: the mutex was initialized by `new` and is destroyed only here (`destroyed`
        // now keeps `drop` from doing it again); no process uses it any more (contract).
        let rc = unsafe { libc::pthread_mutex_destroy(self.raw()) };
        check(rc, "pthread_mutex_destroy")
    }
}

impl Drop for SharedMutex {
    /// `pthread_mutex_destroy` unless [`SharedMutex::destroy`] did it; the error is ignored.
    fn drop(&mut self) {
        if !self.destroyed {
            // SAFETY: the mutex was initialized by `new` and not destroyed yet; the value is
            // dropped after every process that used it was reaped (module contract).
            let _ = unsafe { libc::pthread_mutex_destroy(self.raw()) };
        }
    }
}

/// The lock of a [`SharedMutex`], held by this thread until dropped (it is not `Send`: a
/// pthread mutex is unlocked by the thread that locked it).
pub struct SharedMutexGuard<'a> {
    mutex: &'a SharedMutex,
    not_send: PhantomData<*const ()>,
}

impl Drop for SharedMutexGuard<'_> {
    /// `pthread_mutex_unlock`; it cannot fail for a mutex of the default type that this
    /// process holds, so its result is ignored.
    fn drop(&mut self) {
        // SAFETY: the guard exists only while this thread holds the initialized mutex,
        // which the guard's borrow keeps from being destroyed.
        let _ = unsafe { libc::pthread_mutex_unlock(self.mutex.raw()) };
    }
}

/// A pthread function's return value as a result naming `call`.
fn check(rc: libc::c_int, call: &str) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        let e = io::Error::from_raw_os_error(rc);
        Err(io::Error::new(e.kind(), format!("{call}: {e}")))
    }
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
