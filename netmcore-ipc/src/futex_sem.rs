//! A process-shared counting semaphore that lives in one 32-bit word of shared memory, built on
//! an atomic state word and `futex` wait/wake.
//!
//! ```
//! use std::time::Duration;
//! use netmcore_ipc::futex_sem::FutexSemaphore;
//! use netmcore_ipc::shm::ShmObject;
//!
//! // A page of shared memory; the semaphore is the word at offset 0.
//! let shm = ShmObject::create_unique("/netmcore-doc-futex-")?;
//! shm.set_size(4096)?;
//! let memory = shm.map_shared()?;
//! shm.unlink()?;
//!
//! let sem = FutexSemaphore::new_in(&memory, 0, 0)?;
//! // A process forked from here (or one that maps the same object and calls
//! // `FutexSemaphore::attach_in(&memory, 0)`) shares it.
//! sem.post()?;
//! sem.wait()?;
//! assert!(!sem.try_wait());
//! assert!(sem.wait_timeout(Duration::from_millis(1)).is_err());
//! # Ok::<(), netmcore_ipc::Error>(())
//! ```
//!
//! Compared with a [named semaphore](crate::sem::NamedSemaphore), a futex semaphore needs no
//! name and no file in `/dev/shm` of its own, and an uncontended post or wait is a single atomic
//! instruction with no system call. It lives exactly as long as the memory that holds it.
//!
//! # The state word
//!
//! The low 22 bits hold the count (at most [`FutexSemaphore::MAX_VALUE`]), the high 10 bits the
//! number of waiters registered to be woken. A waiter registers (a CAS that adds a waiter while
//! the count is 0) and then sleeps in `futex(FUTEX_WAIT)` only while the word still holds the
//! value it registered into; a post adds one to the count with a CAS and, if the word it
//! replaced had waiters, wakes one with `futex(FUTEX_WAKE)`. A woken, interrupted or timed-out
//! waiter takes a token if there is one before it sleeps again or gives up, so no wakeup is
//! lost. The futex calls do not use `FUTEX_PRIVATE_FLAG`, so they work across processes that
//! map the word at different addresses. More than 1023 simultaneous waiters still work: the
//! extra ones poll every millisecond instead of registering.
//!
//! The word must be initialised once (by [`FutexSemaphore::new`] or
//! [`FutexSemaphore::new_in`]) before anyone uses it; the others attach to it. Changing the
//! word by other means while the semaphore is in use breaks it (though never memory safety).

mod state;

#[cfg(not(netmcore_loom))]
pub use os::FutexSemaphore;

/// The semaphore over the real futex. Under `cfg(netmcore_loom)` only the state machine is
/// compiled (its word is then a loom atomic, which the kernel cannot wait on).
#[cfg(not(netmcore_loom))]
mod os {
    use std::fmt;
    use std::sync::atomic::AtomicU32;
    use std::time::{Duration, Instant};

    use super::state::{self, Park, Parked, SemState, Wake};
    use crate::shm::SharedMemory;
    use crate::sys::futex::{self, Woke};
    use crate::{Error, Result};

    /// How long a waiter that could not register (beyond 1023 waiters) sleeps between checks.
    const POLL_INTERVAL: Duration = Duration::from_millis(1);

    /// A counting semaphore in a 32-bit word of (shared) memory; see the
    /// [module](crate::futex_sem) docs.
    ///
    /// It is a reference to the word, so it is `Copy`, `Send` and `Sync`. A copy in a forked
    /// child refers to the same word if the word lies in shared memory (a `MAP_SHARED`
    /// mapping such as a [`SharedMemory`]); a word on the heap or stack is copied by the fork,
    /// and the two processes then hold two separate semaphores.
    ///
    /// ```
    /// use std::sync::atomic::AtomicU32;
    /// use netmcore_ipc::futex_sem::FutexSemaphore;
    ///
    /// // Over any word, e.g. between threads of one process.
    /// let word = AtomicU32::new(0);
    /// let sem = FutexSemaphore::new(&word, 2)?;
    /// std::thread::scope(|s| {
    ///     s.spawn(|| sem.wait());
    ///     s.spawn(|| sem.wait());
    ///     s.spawn(|| sem.wait());
    ///     sem.post()
    /// })?;
    /// # Ok::<(), netmcore_ipc::Error>(())
    /// ```
    #[derive(Clone, Copy)]
    pub struct FutexSemaphore<'a> {
        state: SemState<'a>,
    }

    impl<'a> FutexSemaphore<'a> {
        /// The largest value the semaphore holds: 2²² − 1.
        pub const MAX_VALUE: u32 = state::MAX_COUNT;

        /// The size of the semaphore in memory: one 4-aligned 32-bit word.
        pub const SIZE: usize = 4;

        /// Initialises `word` as a semaphore with value `initial` and no waiters.
        ///
        /// Call it once, before any other thread or process uses the word; they
        /// [`attach`](FutexSemaphore::attach) to it (or use a copy of the returned value).
        ///
        /// # Errors
        ///
        /// [`Error::OutOfRange`] if `initial` exceeds [`MAX_VALUE`](Self::MAX_VALUE).
        pub fn new(word: &'a AtomicU32, initial: u32) -> Result<FutexSemaphore<'a>> {
            match SemState::init(word, initial) {
                Ok(state) => Ok(FutexSemaphore { state }),
                Err(state::Overflow) => Err(Error::OutOfRange {
                    op: "futex semaphore init",
                    target: target(word),
                    reason: format!("initial value {initial} exceeds {}", Self::MAX_VALUE),
                }),
            }
        }

        /// The semaphore that `word` already holds (initialised by [`new`](Self::new), here or
        /// in another process).
        #[must_use]
        pub fn attach(word: &'a AtomicU32) -> FutexSemaphore<'a> {
            FutexSemaphore {
                state: SemState::attach(word),
            }
        }

        /// The word the semaphore lives in.
        #[must_use]
        pub fn word(&self) -> &'a AtomicU32 {
            self.state.word()
        }

        /// Adds one to the value and, if waiters are registered, wakes one with
        /// `futex(word, FUTEX_WAKE, 1)`.
        ///
        /// # Errors
        ///
        /// [`Error::OutOfRange`] if the value is already [`MAX_VALUE`](Self::MAX_VALUE);
        /// [`Error::Os`] naming `futex_wake` if the wake fails (the post has happened).
        #[doc(alias = "futex")]
        pub fn post(&self) -> Result<()> {
            match self.state.post() {
                Ok(Wake::None) => Ok(()),
                Ok(Wake::One) => futex::wake(self.word(), 1)
                    .map(drop)
                    .map_err(|e| Error::os("futex_wake", target(self.word()), e)),
                Err(state::Overflow) => Err(Error::OutOfRange {
                    op: "futex semaphore post",
                    target: target(self.word()),
                    reason: format!("the value is already {}", Self::MAX_VALUE),
                }),
            }
        }

        /// Takes one from the value, sleeping in `futex(word, FUTEX_WAIT, …)` while it is 0.
        /// Signals and spurious wakeups are absorbed.
        ///
        /// # Errors
        ///
        /// [`Error::Os`] naming `futex_wait` if the wait fails (not expected).
        #[doc(alias = "futex")]
        pub fn wait(&self) -> Result<()> {
            self.state.acquire(&OsFutex, None).map(drop)
        }

        /// Takes one from the value if it is positive, without blocking.
        #[must_use = "whether a token was taken"]
        pub fn try_wait(&self) -> bool {
            self.state.try_acquire()
        }

        /// [`wait`](Self::wait), for at most `timeout` (on the monotonic clock; the remaining
        /// time is recomputed after every wakeup). A timeout too large for an `Instant` waits
        /// without limit.
        ///
        /// # Errors
        ///
        /// [`Error::Timeout`] naming `futex_wait` and the semaphore when the time runs out;
        /// [`Error::Os`] if the wait fails.
        #[doc(alias = "futex")]
        pub fn wait_timeout(&self, timeout: Duration) -> Result<()> {
            match Instant::now().checked_add(timeout) {
                Some(deadline) => self.wait_until(deadline),
                None => self.wait(),
            }
        }

        /// [`wait`](Self::wait) until `deadline` at the latest.
        ///
        /// # Errors
        ///
        /// [`Error::Timeout`] naming `futex_wait` and the semaphore when the deadline passes;
        /// [`Error::Os`] if the wait fails.
        #[doc(alias = "futex")]
        pub fn wait_until(&self, deadline: Instant) -> Result<()> {
            if self.state.acquire(&OsFutex, Some(deadline))? {
                Ok(())
            } else {
                Err(Error::Timeout {
                    op: "futex_wait",
                    target: target(self.word()),
                })
            }
        }

        /// The current value (a snapshot that may be stale at once).
        #[must_use]
        pub fn value(&self) -> u32 {
            self.state.value()
        }

        /// How many waiters are registered right now (a snapshot, for diagnostics and tests).
        #[must_use]
        pub fn waiters(&self) -> u32 {
            self.state.waiters()
        }
    }

    impl FutexSemaphore<'static> {
        /// Initialises the word at byte `offset` of `memory` as a semaphore with value
        /// `initial` (see [`new`](Self::new)).
        ///
        /// # Errors
        ///
        /// [`Error::OutOfRange`] if `offset` is not a multiple of 4, the word does not fit in
        /// `memory`, or `initial` exceeds [`MAX_VALUE`](Self::MAX_VALUE).
        pub fn new_in(
            memory: &SharedMemory,
            offset: usize,
            initial: u32,
        ) -> Result<FutexSemaphore<'static>> {
            FutexSemaphore::new(word_in(memory, offset, "futex semaphore init")?, initial)
        }

        /// The semaphore at byte `offset` of `memory`, initialised before (see
        /// [`attach`](Self::attach)).
        ///
        /// # Errors
        ///
        /// [`Error::OutOfRange`] if `offset` is not a multiple of 4 or the word does not fit in
        /// `memory`.
        pub fn attach_in(memory: &SharedMemory, offset: usize) -> Result<FutexSemaphore<'static>> {
            Ok(FutexSemaphore::attach(word_in(
                memory,
                offset,
                "futex semaphore attach",
            )?))
        }
    }

    impl fmt::Debug for FutexSemaphore<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("FutexSemaphore")
                .field("word", &std::ptr::from_ref(self.word()))
                .field("value", &self.value())
                .field("waiters", &self.waiters())
                .finish()
        }
    }

    fn word_in(
        memory: &SharedMemory,
        offset: usize,
        op: &'static str,
    ) -> Result<&'static AtomicU32> {
        memory
            .atomic_u32_at(offset)
            .ok_or_else(|| Error::OutOfRange {
                op,
                target: format!("shared memory {:p}+{}", memory.as_ptr(), memory.len()),
                reason: format!("offset {offset} is not a 4-aligned word inside the memory"),
            })
    }

    /// How errors name a futex semaphore: by the address of its word.
    fn target(word: &AtomicU32) -> String {
        format!("futex semaphore {:p}", std::ptr::from_ref(word))
    }

    /// The real futex, as the state machine's [`Park`].
    struct OsFutex;

    impl Park for OsFutex {
        type Error = Error;

        fn park(
            &self,
            word: &AtomicU32,
            expected: u32,
            deadline: Option<Instant>,
            poll: bool,
        ) -> Result<Parked> {
            let mut timeout = match deadline {
                None => None,
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    None => return Ok(Parked::TimedOut),
                    Some(left) if left.is_zero() => return Ok(Parked::TimedOut),
                    Some(left) => Some(left),
                },
            };
            if poll {
                timeout = Some(timeout.map_or(POLL_INTERVAL, |t| t.min(POLL_INTERVAL)));
            }
            match futex::wait(word, expected, timeout) {
                Ok(Woke::Early) => Ok(Parked::Woken),
                // The timeout may have been a poll interval, or the clock may round: only a
                // deadline that has passed ends the wait.
                Ok(Woke::TimedOut) => match deadline {
                    Some(deadline) if Instant::now() >= deadline => Ok(Parked::TimedOut),
                    _ => Ok(Parked::Woken),
                },
                Err(e) => Err(Error::os("futex_wait", target(word), e)),
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use std::sync::atomic::Ordering;

        use super::*;

        #[test]
        fn errors_name_the_semaphore() {
            let word = AtomicU32::new(0);
            let err = FutexSemaphore::new(&word, FutexSemaphore::MAX_VALUE + 1).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::OutOfRange {
                        op: "futex semaphore init",
                        ..
                    }
                ),
                "{err}"
            );
            let sem = FutexSemaphore::new(&word, FutexSemaphore::MAX_VALUE).expect("fits");
            let err = sem.post().unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("futex semaphore post futex semaphore 0x"),
                "{err}"
            );
            let sem = FutexSemaphore::new(&word, 0).expect("fits");
            let err = sem.wait_timeout(Duration::ZERO).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Timeout {
                        op: "futex_wait",
                        ..
                    }
                ),
                "{err}"
            );
            assert_eq!(word.load(Ordering::Relaxed), 0, "no waiter left registered");
        }

        #[test]
        fn a_poller_beyond_the_waiter_limit_still_gets_a_token() {
            // Pretend that the maximum number of waiters is registered.
            let word = AtomicU32::new(state::MAX_WAITERS << 22);
            let sem = FutexSemaphore::attach(&word);
            let err = sem.wait_timeout(Duration::from_millis(3)).unwrap_err();
            assert!(matches!(err, Error::Timeout { .. }));
            std::thread::scope(|s| {
                let waiter = s.spawn(|| sem.wait());
                sem.post().expect("post");
                waiter.join().expect("waiter").expect("wait");
            });
            assert_eq!((sem.value(), sem.waiters()), (0, state::MAX_WAITERS));
        }
    }
}
