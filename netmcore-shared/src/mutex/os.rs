//! [`Mutex<T>`] and [`MutexGuard`] over the protocol of [`super::state`], in a segment.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, LockResult, PoisonError, TryLockError, TryLockResult};

use super::state::{Locking, MutexState, MutexStep, MutexWords, WAITERS};
use crate::handle::{Handle, fingerprint};
use crate::header::Kind;
use crate::segment::{Element, Layout, Segment, open};
use crate::sys;
use crate::wait::{Watch, own_tag_or_master};
use crate::{Error, Plain, Result};

/// The proof that the calling process holds a mutex, which `sys::locked_value` consumes to
/// hand out the value. Only this module makes one (its field is private), right after taking
/// the lock, and [`MutexGuard`] gives the lock back only when the value is gone.
pub(crate) struct Held(());

/// A mutual exclusion lock around a [`Plain`] value in shared memory, for processes (and the
/// threads in them): the counterpart of OCamlnet's `Netmcore_mutex` and Python's
/// `multiprocessing.Lock` with a `Value`, shaped like `std::sync::Mutex`.
///
/// ```
/// use netmcore_shared::Mutex;
///
/// # fn main() -> netmcore_shared::Result<()> {
/// let counter = Mutex::new(0u64)?;
/// // Another process opens it from its handle (in a process argument, say).
/// let same = Mutex::open(counter.handle())?;
/// *same.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) += 1;
/// assert_eq!(*counter.lock().unwrap(), 1);
/// # Ok(())
/// # }
/// ```
///
/// **Robust.** A process that dies holding the lock — killed, crashed, or exited with a guard
/// alive — does not leave the others waiting: the next locker takes the lock over, within
/// moments of the death, and gets a [`PoisonError`] (the dead holder may have left the value
/// half-written; every bit pattern is still a valid `T`). A guard dropped while its thread
/// panics poisons the mutex too, as in std. [`Mutex::clear_poison`] clears it.
///
/// **Lifetime.** The mutex lives in a segment of its own, which the master destroys when the
/// last process that created or opened it has dropped its values or ended.
pub struct Mutex<T: Plain> {
    segment: Arc<Segment>,
    layout: Layout,
    _value: PhantomData<T>,
}

/// An RAII guard of a locked [`Mutex`]: it derefs to the value, and unlocks when dropped.
#[must_use = "the mutex is unlocked as soon as the guard is dropped"]
pub struct MutexGuard<'a, T: Plain> {
    mutex: &'a Mutex<T>,
    value: &'a mut T,
    /// Whether the thread was panicking when it took the lock (std's rule: only a panic that
    /// starts while the guard lives poisons).
    panicking: bool,
    /// The tag the lock was taken with.
    tag: u32,
}

impl<T: Plain> Mutex<T> {
    /// A new mutex holding `value`, in a segment of its own; the calling process is its user.
    ///
    /// # Errors
    ///
    /// [`Error::Master`] when no master can create the segment (a worker whose master is
    /// gone, a ledger or `shm_open` failure); [`Error::TooLarge`] for a `T` too large to map.
    pub fn new(value: T) -> Result<Mutex<T>> {
        let layout = layout::<T>()?;
        let segment = Segment::create(
            Kind::Mutex,
            fingerprint::<Mutex<T>>(),
            layout.sizes(),
            |bytes| {
                let at = bytes
                    .get_mut(layout.payload..layout.payload + size_of::<T>())
                    .ok_or(Error::TooLarge {
                        size: layout.total,
                        max: layout.total,
                    })?;
                at.copy_from_slice(value.as_bytes());
                Ok(())
            },
        )?;
        Ok(Mutex {
            segment,
            layout,
            _value: PhantomData,
        })
    }

    /// Opens the mutex named by `handle` (made by [`Mutex::handle`] in any process of the run):
    /// the calling process becomes a user, and maps it wherever it likes.
    ///
    /// # Errors
    ///
    /// [`Error::WrongType`] for a handle of another structure or type; [`Error::Corrupt`] for
    /// a segment whose header does not hold; [`Error::Master`] for an unknown id
    /// (`NoResource`: the mutex is gone) or no master.
    pub fn open(handle: Handle<Mutex<T>>) -> Result<Mutex<T>> {
        let (segment, layout) = open::<Mutex<T>>(handle, Kind::Mutex, Element::of::<T>())?;
        Ok(Mutex {
            segment,
            layout,
            _value: PhantomData,
        })
    }

    /// The handle of this mutex, to pass to other processes.
    #[must_use]
    pub fn handle(&self) -> Handle<Mutex<T>> {
        Handle::new(self.segment.id())
    }

    /// Locks the mutex, blocking until it is free, and returns a guard.
    ///
    /// # Errors
    ///
    /// A [`PoisonError`] holding the guard when the mutex is poisoned: a holder died holding
    /// it (this call took it over), or a guard was dropped during a panic, or the lock word
    /// was found corrupt (this call took it over too). The lock is held either way.
    pub fn lock(&self) -> LockResult<MutexGuard<'_, T>> {
        let me = own_tag_or_master();
        let words = self.words();
        let state = MutexState::attach(words);
        // The fast path: a free lock.
        if words
            .lock
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return self.guard(me, state.is_poisoned());
        }
        let watch = Watch::new();
        let mut locking = Locking::new();
        loop {
            let epoch = watch.epoch();
            match state.lock_step(&mut locking, me, &watch) {
                Ok(MutexStep::Locked { poisoned, .. }) => return self.guard(me, poisoned),
                Ok(MutexStep::Park { expected }) => {
                    watch.park(&words.lock, expected, epoch, None);
                }
                Err(_) => return self.seize(me),
            }
        }
    }

    /// Locks the mutex if no live process holds it, without blocking.
    ///
    /// # Errors
    ///
    /// [`TryLockError::WouldBlock`] when a live process holds it;
    /// [`TryLockError::Poisoned`] holding the guard when it is poisoned (as [`Mutex::lock`]).
    pub fn try_lock(&self) -> TryLockResult<MutexGuard<'_, T>> {
        let me = own_tag_or_master();
        let state = MutexState::attach(self.words());
        match state.try_lock(me, &Watch::new()) {
            Ok(Some(MutexStep::Locked { poisoned, .. })) => {
                self.guard(me, poisoned).map_err(TryLockError::Poisoned)
            }
            Ok(Some(MutexStep::Park { .. }) | None) => Err(TryLockError::WouldBlock),
            Err(_) => self.seize(me).map_err(TryLockError::Poisoned),
        }
    }

    /// Whether the mutex is poisoned (a holder died, or a guard was dropped during a panic).
    /// Another process may change that at any moment.
    #[must_use]
    pub fn is_poisoned(&self) -> bool {
        MutexState::attach(self.words()).is_poisoned()
    }

    /// Clears the poison, after the value was checked or repaired.
    pub fn clear_poison(&self) {
        MutexState::attach(self.words()).clear_poison();
    }

    /// The words of the lock: the layout was computed here (at creation) or checked against
    /// the header (at open), so they are always in bounds and aligned.
    fn words(&self) -> &MutexWords {
        sys::words_at::<MutexWords, _>(self.segment.mapping(), self.layout.words)
            .unwrap_or_else(|| unreachable!("the layout of a mapped mutex holds its words"))
    }

    /// The guard of a lock just taken with tag `me`; poisoned as the protocol reported.
    fn guard(&self, me: u32, poisoned: bool) -> LockResult<MutexGuard<'_, T>> {
        let value =
            sys::locked_value::<T, _>(self.segment.mapping(), self.layout.payload, Held(()))
                .unwrap_or_else(|| unreachable!("the layout of a mapped mutex holds its value"));
        let guard = MutexGuard {
            mutex: self,
            value,
            panicking: std::thread::panicking(),
            tag: me,
        };
        if poisoned {
            Err(PoisonError::new(guard))
        } else {
            Ok(guard)
        }
    }

    /// Takes over a lock word that no state of the protocol allows (the segment was written by
    /// something else): the lock is the caller's, poisoned.
    fn seize(&self, me: u32) -> LockResult<MutexGuard<'_, T>> {
        let words = self.words();
        let lock: &AtomicU32 = &words.lock;
        let mut found = lock.load(Ordering::Relaxed);
        while let Err(now) =
            lock.compare_exchange(found, me | WAITERS, Ordering::Acquire, Ordering::Relaxed)
        {
            found = now;
        }
        tracing::warn!(
            id = self.segment.id().0,
            "mutex {}: corrupt lock word {found:#x}, taken over as poisoned",
            self.segment.id()
        );
        MutexState::attach(words).poison();
        self.guard(me, true)
    }
}

impl<'a, T: Plain> MutexGuard<'a, T> {
    /// The mutex this guard locks.
    fn state(&self) -> MutexState<'_> {
        MutexState::attach(self.mutex.words())
    }

    /// Gives the lock back (as dropping the guard does, poisoning it if the thread started
    /// panicking meanwhile) and returns the mutex, to lock it again with [`Mutex::lock`]: how
    /// a condition variable waits. The guard, and with it the `&mut T`, is gone before the
    /// lock is, so the value is never reachable without the lock.
    pub(crate) fn unlock(guard: MutexGuard<'a, T>) -> &'a Mutex<T> {
        let mutex = guard.mutex;
        drop(guard);
        mutex
    }
}

impl<T: Plain> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.value
    }
}

impl<T: Plain> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.value
    }
}

impl<T: Plain> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        let state = self.state();
        if !self.panicking && std::thread::panicking() {
            state.poison();
        }
        match state.unlock(self.tag) {
            Ok(wake) => {
                let _ = sys::wake(state.lock_word(), wake);
            }
            // Someone else wrote the lock word while this process held it: the segment is
            // corrupt. Leave the word as it is (a locker will seize it) and wake everyone.
            Err(bad) => {
                tracing::warn!(
                    id = self.mutex.segment.id().0,
                    "mutex {}: {} at unlock",
                    self.mutex.segment.id(),
                    bad.what
                );
                let _ = sys::futex_wake(state.lock_word(), u32::MAX);
            }
        }
    }
}

impl<T: Plain + fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: Plain> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mutex")
            .field("id", &self.segment.id())
            .field("poisoned", &self.is_poisoned())
            .finish_non_exhaustive()
    }
}

/// The layout of a mutex of `T`.
fn layout<T: Plain>() -> Result<Layout> {
    Layout::mutex(Element::of::<T>()).ok_or(Error::TooLarge {
        size: size_of::<T>(),
        max: isize::MAX.unsigned_abs(),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::TryLockError;
    use std::sync::atomic::Ordering;

    use netmcore_ipc::shm::ShmObject;
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Random bytes written anywhere over a mutex's segment — header, lock words or value —
        /// give an error when the segment is opened again (`Corrupt` or `WrongType`), or a
        /// mutex that still works; and the value already open keeps working without a panic:
        /// a lock word that names no live process is taken over, poisoned.
        #[test]
        fn scribbled_mutex_segments_give_errors_never_panics(
            offset in 0usize..200,
            bytes in proptest::collection::vec(any::<u8>(), 1..48),
        ) {
            let mutex = Mutex::new([1u64, 2, 3]).expect("a mutex before startup");
            let id = mutex.handle().id();
            let name = netmcore_master::get_shm(id).expect("its name");
            let scribbler = ShmObject::open(&name).and_then(|shm| shm.map()).expect("map");
            for (i, byte) in bytes.iter().enumerate() {
                if let Some(cell) = scribbler.as_atomic_u8s().get(offset + i) {
                    cell.store(*byte, Ordering::Relaxed);
                }
            }
            match Segment::map_checked(id, &name, Kind::Mutex, fingerprint::<Mutex<[u64; 3]>>())
                .and_then(|segment| Layout::check(segment.header(), Element::of::<[u64; 3]>(), id))
            {
                Ok(_) | Err(Error::Corrupt { .. } | Error::WrongType { .. }) => {}
                Err(other) => prop_assert!(false, "unexpected error {other:?}"),
            }
            // The program is alone before startup: a lock word naming anyone but itself is
            // taken over; one naming itself is held (by this process), so try_lock is used.
            match mutex.try_lock() {
                Ok(mut guard) => guard[0] = guard[0].wrapping_add(1),
                Err(TryLockError::Poisoned(poisoned)) => {
                    let mut guard = poisoned.into_inner();
                    guard[1] = 0;
                }
                Err(TryLockError::WouldBlock) => {}
            }
            let _ = mutex.is_poisoned();
            mutex.clear_poison();
        }
    }
}
