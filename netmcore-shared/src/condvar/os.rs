//! [`Condvar`] over the protocol of [`super::state`], in a segment.

use std::fmt;
use std::sync::{Arc, LockResult, PoisonError};
use std::time::{Duration, Instant};

use super::state::{CondvarState, CondvarWords};
use crate::handle::{Handle, fingerprint};
use crate::header::Kind;
use crate::mutex::{Mutex, MutexGuard};
use crate::segment::{CONDVAR_WORDS, Element, Layout, Segment, open};
use crate::sys;
use crate::wait::Watch;
use crate::{Error, Plain, Result};

/// A condition variable in shared memory, for processes (and the threads in them) that share
/// a [`Mutex`]: the counterpart of OCamlnet's `Netmcore_condition` and Python's
/// `multiprocessing.Condition`, shaped like `std::sync::Condvar`.
///
/// ```
/// use netmcore_shared::{Condvar, Mutex};
///
/// # fn main() -> netmcore_shared::Result<()> {
/// let ready = Mutex::new(0u32)?;
/// let changed = Condvar::new()?;
/// // Another process would open both from their handles (in a process argument, say):
/// // `Mutex::open(ready.handle())`, `Condvar::open(changed.handle())`.
/// std::thread::scope(|s| {
///     s.spawn(|| {
///         *ready.lock().unwrap() = 42;
///         changed.notify_all();
///     });
///     let guard = changed.wait_while(ready.lock().unwrap(), |v| *v == 0).unwrap();
///     assert_eq!(*guard, 42);
/// });
/// # Ok(())
/// # }
/// ```
///
/// **Waiting.** [`Condvar::wait`] gives the guard's lock back, sleeps until a notify, and
/// takes the lock again. Wakeups may be spurious: a notify meant for another waiter, or the
/// death of any process of the run (a wait watches the master's death board, so that a
/// waiter can look again at a condition a dead process will never change). Check the
/// condition in a loop, or use [`Condvar::wait_while`], which does.
///
/// **Robust.** A condition variable holds no waiter state in shared memory, so a waiter that
/// dies costs nothing. When the process holding the mutex dies, the waiter that takes the
/// lock again gets it poisoned, as [`Mutex::lock`] does: the wait returns a
/// [`PoisonError`] that holds the guard.
///
/// A notify does not need the mutex, but the change of the condition it announces must be
/// made under it, or a waiter may miss it. Unlike std's, a condition variable may be used with
/// several mutexes over its life; every waiter at one time should use the same one.
///
/// **Lifetime.** The condition variable lives in a segment of its own, which the master
/// destroys when the last process that created or opened it has dropped its values or ended.
pub struct Condvar {
    segment: Arc<Segment>,
    layout: Layout,
}

impl Condvar {
    /// A new condition variable, in a segment of its own; the calling process is its user.
    ///
    /// # Errors
    ///
    /// [`Error::Master`] when no master can create the segment (a worker whose master is
    /// gone, a ledger or `shm_open` failure).
    pub fn new() -> Result<Condvar> {
        let layout = layout()?;
        // All zeroes is the initial state: sequence 0.
        let segment = Segment::create(
            Kind::Condvar,
            fingerprint::<Condvar>(),
            layout.sizes(),
            |_| Ok(()),
        )?;
        Ok(Condvar { segment, layout })
    }

    /// Opens the condition variable named by `handle` (made by [`Condvar::handle`] in any
    /// process of the run): the calling process becomes a user, and maps it wherever it likes.
    ///
    /// # Errors
    ///
    /// [`Error::WrongType`] for a handle of another structure; [`Error::Corrupt`] for a
    /// segment whose header does not hold; [`Error::Master`] for an unknown id (`NoResource`:
    /// the condition variable is gone) or no master.
    pub fn open(handle: Handle<Condvar>) -> Result<Condvar> {
        let (segment, layout) = open::<Condvar>(handle, Kind::Condvar, Element::NONE)?;
        Ok(Condvar { segment, layout })
    }

    /// The handle of this condition variable, to pass to other processes.
    #[must_use]
    pub fn handle(&self) -> Handle<Condvar> {
        Handle::new(self.segment.id())
    }

    /// Gives back the lock of `guard`, sleeps until this condition variable is notified (or
    /// spuriously), and locks the mutex again.
    ///
    /// # Errors
    ///
    /// A [`PoisonError`] holding the new guard when the mutex is poisoned once locked again
    /// (a holder died meanwhile, say); the lock is held either way.
    pub fn wait<'a, T: Plain>(&self, guard: MutexGuard<'a, T>) -> LockResult<MutexGuard<'a, T>> {
        let (mutex, _) = self.sleep(guard, None);
        mutex.lock()
    }

    /// Waits (as [`Condvar::wait`]) as long as `condition` holds for the value, and returns
    /// the guard once it does not. The condition is checked first, under the lock, so a
    /// condition that is already false returns at once.
    ///
    /// # Errors
    ///
    /// A [`PoisonError`] holding the guard as soon as a relock finds the mutex poisoned (the
    /// condition is not checked again then).
    pub fn wait_while<'a, T: Plain>(
        &self,
        mut guard: MutexGuard<'a, T>,
        mut condition: impl FnMut(&mut T) -> bool,
    ) -> LockResult<MutexGuard<'a, T>> {
        while condition(&mut *guard) {
            guard = self.wait(guard)?;
        }
        Ok(guard)
    }

    /// [`Condvar::wait`] for at most `timeout` (on the monotonic clock); the flag is `true`
    /// when the time ran out without a notify. A timeout too large for an `Instant` waits
    /// without limit. Like every wait, it may also return early and spuriously, with `false`.
    ///
    /// # Errors
    ///
    /// As [`Condvar::wait`]; the error holds the guard and the flag.
    pub fn wait_timeout<'a, T: Plain>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> LockResult<(MutexGuard<'a, T>, bool)> {
        let deadline = Instant::now().checked_add(timeout);
        let (mutex, timed_out) = match deadline {
            Some(deadline) => self.sleep(guard, Some(deadline)),
            None => self.sleep(guard, None),
        };
        match mutex.lock() {
            Ok(guard) => Ok((guard, timed_out)),
            Err(poisoned) => Err(PoisonError::new((poisoned.into_inner(), timed_out))),
        }
    }

    /// Wakes one process (or thread) waiting on this condition variable, if any.
    pub fn notify_one(&self) {
        let state = self.state();
        let wake = state.notify_one();
        let _ = sys::wake(state.word(), wake);
    }

    /// Wakes every process (and thread) waiting on this condition variable.
    pub fn notify_all(&self) {
        let state = self.state();
        let wake = state.notify_all();
        let _ = sys::wake(state.word(), wake);
    }

    /// The first half of a wait: reads the sequence while the guard still holds the lock,
    /// gives the lock back, and sleeps until the sequence moves on, the death board's epoch
    /// moves on, or `deadline` passes. Returns the mutex, unlocked, and whether the deadline
    /// passed without a notify.
    fn sleep<'a, T: Plain>(
        &self,
        guard: MutexGuard<'a, T>,
        deadline: Option<Instant>,
    ) -> (&'a Mutex<T>, bool) {
        let watch = Watch::new();
        let state = self.state();
        // The epoch before the token: a death after this read ends the sleep at once.
        let epoch = watch.epoch();
        let token = state.prepare_wait();
        let mutex = MutexGuard::unlock(guard);
        let timed_out = loop {
            if state.notified_since(token) || watch.epoch() != epoch {
                break false;
            }
            if !watch.park(state.word(), token, epoch, deadline) {
                break !state.notified_since(token);
            }
        };
        (mutex, timed_out)
    }

    /// The protocol over the sequence word: the layout was computed here (at creation) or
    /// checked against the header (at open), so the word is always in bounds and aligned.
    fn state(&self) -> CondvarState<'_> {
        let words = sys::words_at::<CondvarWords, _>(self.segment.mapping(), self.layout.words)
            .unwrap_or_else(|| unreachable!("the layout of a mapped condvar holds its word"));
        CondvarState::attach(words)
    }
}

impl fmt::Debug for Condvar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condvar")
            .field("id", &self.segment.id())
            .finish_non_exhaustive()
    }
}

/// The layout of a condition variable (a fixed, small one).
fn layout() -> Result<Layout> {
    Layout::condvar().ok_or(Error::TooLarge {
        size: CONDVAR_WORDS,
        max: isize::MAX.unsigned_abs(),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;
    use crate::testing::scribble;

    proptest! {
        /// Random bytes written anywhere over a condition variable's segment — header or
        /// sequence word — give an error when the segment is checked again (`Corrupt` or
        /// `WrongType`), or a condition variable that still works; and the value already open
        /// keeps working without a panic. Its only word is a sequence, which any value is, so
        /// notifies bump it and a timed wait (on a mutex of its own segment) returns.
        #[test]
        fn scribbled_condvar_segments_give_errors_never_panics(
            (offset, bytes) in scribble::scribbles(&[0..128, 128..136, 0..140]),
        ) {
            let condvar = Condvar::new().expect("a condvar before startup");
            let mutex = Mutex::new(0u32).expect("a mutex before startup");
            let id = condvar.handle().id();
            let name = scribble::write(id, offset, &bytes);
            let checked =
                scribble::recheck(id, &name, Kind::Condvar, fingerprint::<Condvar>(), Element::NONE);
            prop_assert!(checked.is_ok(), "{checked:?}");
            condvar.notify_one();
            condvar.notify_all();
            // The deadline ends the sleep whatever the sequence holds, and the mutex is
            // nobody's: the wait cannot block for longer than the timeout.
            let guard = mutex.lock().expect("a fresh mutex");
            let (guard, _timed_out) = condvar
                .wait_timeout(guard, Duration::from_micros(50))
                .expect("nobody poisons it");
            drop(guard);
            condvar.notify_one();
        }
    }
}
