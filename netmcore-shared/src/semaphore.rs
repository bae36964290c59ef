//! [`Semaphore`]: netmcore-ipc's futex semaphore over the word of a segment.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use netmcore_ipc::futex_sem::FutexSemaphore;

use crate::handle::{Handle, fingerprint};
use crate::header::Kind;
use crate::segment::{Element, Layout, SEMAPHORE_WORDS, Segment, open};
use crate::sys;
use crate::{Error, Result};

/// A counting semaphore in shared memory, for processes (and the threads in them): the
/// counterpart of OCamlnet's `Netmcore_sem` and Python's `multiprocessing.Semaphore`.
///
/// ```
/// use netmcore_shared::Semaphore;
///
/// # fn main() -> netmcore_shared::Result<()> {
/// // At most two at once; another process would open it with `Semaphore::open(slots.handle())`.
/// let slots = Semaphore::new(2)?;
/// slots.acquire()?;
/// assert!(slots.try_acquire());
/// assert!(!slots.try_acquire(), "both taken");
/// std::thread::scope(|s| {
///     // A waiter blocks until a release.
///     let waiter = s.spawn(|| slots.acquire());
///     slots.release()?;
///     waiter.join().expect("the waiter")
/// })?;
/// assert_eq!(slots.value(), 0);
/// # Ok(())
/// # }
/// ```
///
/// It is netmcore-ipc's [`FutexSemaphore`] in the one word of a segment: an uncontended
/// acquire or release is one atomic instruction, and a wait sleeps in the kernel's futex.
///
/// **Not owned.** A semaphore counts; it does not know who took a unit. A process that dies
/// after [`Semaphore::acquire`] keeps what it took (there is no poison and nothing is given
/// back for it), as with std's and Python's semaphores: the others go on, with one unit less.
///
/// **Lifetime.** The semaphore lives in a segment of its own, which the master destroys when
/// the last process that created or opened it has dropped its values or ended.
pub struct Semaphore {
    segment: Arc<Segment>,
    layout: Layout,
}

impl Semaphore {
    /// The largest value a semaphore holds: 2²² − 1 (that of [`FutexSemaphore`]).
    pub const MAX_VALUE: u32 = FutexSemaphore::MAX_VALUE;

    /// A new semaphore of value `initial`, in a segment of its own; the calling process is
    /// its user.
    ///
    /// # Errors
    ///
    /// [`Error::Full`] if `initial` exceeds [`Semaphore::MAX_VALUE`] (nothing is created);
    /// [`Error::Master`] when no master can create the segment (a worker whose master is
    /// gone, a ledger or `shm_open` failure).
    pub fn new(initial: u32) -> Result<Semaphore> {
        if initial > Semaphore::MAX_VALUE {
            return Err(Error::Full);
        }
        let layout = Layout::semaphore().ok_or(Error::TooLarge {
            size: SEMAPHORE_WORDS,
            max: isize::MAX.unsigned_abs(),
        })?;
        // Zeroes are a semaphore of value 0 with no waiter; the value is set below, before
        // anyone else can know the segment.
        let segment = Segment::create(
            Kind::Semaphore,
            fingerprint::<Semaphore>(),
            layout.sizes(),
            |_| Ok(()),
        )?;
        let semaphore = Semaphore { segment, layout };
        FutexSemaphore::new(semaphore.word(), initial).map_err(|e| semaphore.error(e))?;
        Ok(semaphore)
    }

    /// Opens the semaphore named by `handle` (made by [`Semaphore::handle`] in any process of
    /// the run): the calling process becomes a user, and maps it wherever it likes.
    ///
    /// # Errors
    ///
    /// [`Error::WrongType`] for a handle of another structure; [`Error::Corrupt`] for a
    /// segment whose header does not hold; [`Error::Master`] for an unknown id (`NoResource`:
    /// the semaphore is gone) or no master.
    pub fn open(handle: Handle<Semaphore>) -> Result<Semaphore> {
        let (segment, layout) = open::<Semaphore>(handle, Kind::Semaphore, Element::NONE)?;
        Ok(Semaphore { segment, layout })
    }

    /// The handle of this semaphore, to pass to other processes.
    #[must_use]
    pub fn handle(&self) -> Handle<Semaphore> {
        Handle::new(self.segment.id())
    }

    /// Takes one unit, sleeping while the value is 0.
    ///
    /// # Errors
    ///
    /// [`Error::Master`] holding the OS error if the futex wait fails (not expected).
    pub fn acquire(&self) -> Result<()> {
        self.semaphore().wait().map_err(|e| self.error(e))
    }

    /// Takes one unit if the value is positive, without blocking; `true` if it did.
    #[must_use = "whether a unit was taken"]
    pub fn try_acquire(&self) -> bool {
        self.semaphore().try_wait()
    }

    /// [`Semaphore::acquire`] for at most `timeout` (on the monotonic clock); `true` if a
    /// unit was taken, `false` if the time ran out (or, not expected, the futex wait failed).
    /// A timeout too large for an `Instant` waits without limit.
    #[must_use = "whether a unit was taken"]
    pub fn acquire_timeout(&self, timeout: Duration) -> bool {
        match self.semaphore().wait_timeout(timeout) {
            Ok(()) => true,
            Err(netmcore_ipc::Error::Timeout { .. }) => false,
            Err(e) => {
                tracing::warn!(
                    id = self.segment.id().0,
                    error = %e,
                    "semaphore {}: wait failed",
                    self.segment.id()
                );
                false
            }
        }
    }

    /// Gives one unit back, waking one waiter if there is one.
    ///
    /// # Errors
    ///
    /// [`Error::Full`] if the value is already [`Semaphore::MAX_VALUE`] (nothing changed);
    /// [`Error::Master`] holding the OS error if the futex wake fails (the unit was given
    /// back).
    pub fn release(&self) -> Result<()> {
        self.semaphore().post().map_err(|e| self.error(e))
    }

    /// The value now: the units free (a snapshot that another process may change at once).
    #[must_use]
    pub fn value(&self) -> u32 {
        self.semaphore().value()
    }

    /// The word of the semaphore: the layout was computed here (at creation) or checked
    /// against the header (at open), so it is always in bounds and aligned.
    fn word(&self) -> &AtomicU32 {
        sys::atomic_u32_at(self.segment.mapping(), self.layout.words)
            .unwrap_or_else(|| unreachable!("the layout of a mapped semaphore holds its word"))
    }

    /// The futex semaphore in the word.
    fn semaphore(&self) -> FutexSemaphore<'_> {
        FutexSemaphore::attach(self.word())
    }

    /// The error of this semaphore for an error of the futex semaphore: an out-of-range value
    /// is [`Error::Full`], an OS error passes through as the master's `Io`.
    fn error(&self, e: netmcore_ipc::Error) -> Error {
        match e {
            netmcore_ipc::Error::OutOfRange { .. } => Error::Full,
            netmcore_ipc::Error::Os { op, target, source } => {
                Error::Master(netmcore_master::Error::Io { op, target, source })
            }
            e => self.segment.corrupt(format!("semaphore: {e}")),
        }
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("id", &self.segment.id())
            .field("value", &self.value())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;
    use crate::testing::scribble;

    proptest! {
        /// Random bytes written anywhere over a semaphore's segment — header or its word —
        /// give an error when the segment is checked again (`Corrupt` or `WrongType`), or a
        /// semaphore that still works; and the value already open keeps working without a
        /// panic: whatever count and waiters the word says, a try or a timed acquire returns,
        /// and a release gives a unit back or says `Full`.
        #[test]
        fn scribbled_semaphore_segments_give_errors_never_panics(
            (offset, bytes) in scribble::scribbles(&[0..128, 128..136, 0..140]),
        ) {
            let semaphore = Semaphore::new(1).expect("a semaphore before startup");
            let id = semaphore.handle().id();
            let name = scribble::write(id, offset, &bytes);
            let checked = scribble::recheck(
                id,
                &name,
                Kind::Semaphore,
                fingerprint::<Semaphore>(),
                Element::NONE,
            );
            prop_assert!(checked.is_ok(), "{checked:?}");
            let before = semaphore.value();
            prop_assert!(before <= Semaphore::MAX_VALUE);
            let took = semaphore.try_acquire();
            prop_assert_eq!(took, before > 0);
            match semaphore.release() {
                Ok(()) | Err(Error::Full) => {}
                Err(other) => prop_assert!(false, "unexpected error {other:?}"),
            }
            let _ = semaphore.acquire_timeout(Duration::from_micros(50));
            let _ = semaphore.value();
            match semaphore.release() {
                Ok(()) | Err(Error::Full) => {}
                Err(other) => prop_assert!(false, "unexpected error {other:?}"),
            }
        }
    }
}
