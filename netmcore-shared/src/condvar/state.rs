//! The atomics protocol of the condition variable, without the futex.
//!
//! The whole state is one 32-bit sequence word, bumped by every notify:
//!
//! * **wait**: while holding the mutex, read the sequence ([`CondvarState::prepare_wait`]);
//!   unlock the mutex; sleep while the sequence still holds what was read (and the death
//!   board's epoch is unchanged); lock the mutex again.
//! * **notify_one** / **notify_all**: bump the sequence, wake one / every sleeper.
//!
//! No wakeup is lost: a notifier that changed the condition did so under the mutex, so either
//! before the waiter checked it (the waiter does not wait) or after the waiter released the
//! mutex, which is after its read of the sequence; the bump then gives the word a value other
//! than the one read, and the kernel does not put the waiter to sleep on a word that no longer
//! holds its value. Wakeups may be spurious (a notify meant for another waiter, a death on the
//! board, the sequence wrapping after 2^32 notifies), which `wait_while` loops absorb.
//!
//! There is no waiter state in shared memory, so a waiter that dies costs nothing; the price
//! is a wake call on every notify, waiters or not. The sequence needs no ordering of its own:
//! the mutex orders the data, and the word's modification order orders read and bump.

use crate::protocol::Wake;
use crate::sync::atomic::{AtomicU32, Ordering};

/// The words of a condition variable, as laid out in its segment.
#[repr(C)]
pub(crate) struct CondvarWords {
    /// The sequence word, bumped by every notify: the one to sleep on and wake.
    pub(crate) seq: AtomicU32,
}

impl CondvarWords {
    /// The state of zeroed memory.
    #[cfg(test)]
    pub(crate) fn new() -> CondvarWords {
        CondvarWords {
            seq: AtomicU32::new(0),
        }
    }
}

/// The protocol over the sequence word of a condition variable.
#[derive(Clone, Copy)]
pub(crate) struct CondvarState<'a> {
    words: &'a CondvarWords,
}

impl<'a> CondvarState<'a> {
    /// The condition variable in `words`, as it is.
    pub(crate) fn attach(words: &'a CondvarWords) -> CondvarState<'a> {
        CondvarState { words }
    }

    /// The sequence word, the one to sleep on and wake.
    pub(crate) fn word(&self) -> &'a AtomicU32 {
        &self.words.seq
    }

    /// The first step of a wait, taken while the caller still holds the mutex: the value to
    /// sleep on once the mutex is released.
    pub(crate) fn prepare_wait(&self) -> u32 {
        self.words.seq.load(Ordering::Relaxed)
    }

    /// Whether a notify has come since [`prepare_wait`](Self::prepare_wait) returned `token`
    /// (or the sequence moved on for another reason): a waiter that sees it does not sleep.
    pub(crate) fn notified_since(&self, token: u32) -> bool {
        self.words.seq.load(Ordering::Relaxed) != token
    }

    /// Bumps the sequence for one waiter.
    pub(crate) fn notify_one(&self) -> Wake {
        self.words.seq.fetch_add(1, Ordering::Relaxed);
        Wake::One
    }

    /// Bumps the sequence for every waiter.
    pub(crate) fn notify_all(&self) -> Wake {
        self.words.seq.fetch_add(1, Ordering::Relaxed);
        Wake::All
    }
}

/// Scenarios shared by the loom models and the tests with std threads, over the crate's own
/// mutex protocol: a waiter that waits on a condition that a notifier sets must wake up,
/// whatever the order of wait and notify.
#[cfg(test)]
mod scenarios {
    use super::*;
    use crate::mutex::state::scenarios::{Shared as MutexShared, lock, shared, unlock};
    use crate::sync::{Arc, thread};

    struct Shared {
        mutex: Arc<MutexShared>,
        cv: CondvarWords,
    }

    /// The condition lives in the mutex scenario's counter.
    fn condition(s: &Shared) -> usize {
        s.mutex.counter.load(Ordering::Relaxed)
    }

    /// Waits under the mutex until the counter reaches `n` (a `wait_while` loop).
    fn wait_for(s: &Shared, me: u32, n: usize) {
        lock(&s.mutex, me);
        let state = CondvarState::attach(&s.cv);
        while condition(s) < n {
            let epoch = s.mutex.board.epoch();
            let token = state.prepare_wait();
            unlock(&s.mutex, me);
            s.mutex
                .futex
                .park(&[(state.word(), token), (&s.mutex.board.epoch, epoch)]);
            lock(&s.mutex, me);
        }
        unlock(&s.mutex, me);
    }

    /// Adds one to the counter under the mutex, then notifies (after unlocking, which std
    /// allows too).
    fn bump_and_notify(s: &Shared, me: u32, all: bool) {
        lock(&s.mutex, me);
        let n = condition(s);
        s.mutex.counter.store(n + 1, Ordering::Relaxed);
        unlock(&s.mutex, me);
        let state = CondvarState::attach(&s.cv);
        let wake = if all {
            state.notify_all()
        } else {
            state.notify_one()
        };
        s.mutex.futex.wake(state.word(), wake);
    }

    fn new_shared() -> Arc<Shared> {
        Arc::new(Shared {
            mutex: shared(),
            cv: CondvarWords::new(),
        })
    }

    /// One waiter, one notify_one: the waiter wakes whether it waits before or after.
    pub(super) fn notify_one_wakes_the_waiter() {
        let s = new_shared();
        let s2 = Arc::clone(&s);
        let waiter = thread::spawn(move || wait_for(&s2, 2, 1));
        bump_and_notify(&s, 1, false);
        waiter.join().expect("waiter");
    }

    /// Two waiters, one notify_all: both wake.
    pub(super) fn notify_all_wakes_every_waiter() {
        let s = new_shared();
        let waiters: Vec<_> = [2, 3]
            .into_iter()
            .map(|me| {
                let s = Arc::clone(&s);
                thread::spawn(move || wait_for(&s, me, 1))
            })
            .collect();
        bump_and_notify(&s, 1, true);
        for w in waiters {
            w.join().expect("waiter");
        }
    }

    /// Two waiters, two notify_one: both wake. A waiter sleeps only if it saw the condition
    /// false, so before the first bump; each notify either wakes a sleeper or finds a waiter
    /// that has not gone to sleep yet, whose sleep then ends at once on the moved sequence.
    pub(super) fn two_notify_one_wake_two_waiters() {
        let s = new_shared();
        let waiters: Vec<_> = [2, 3]
            .into_iter()
            .map(|me| {
                let s = Arc::clone(&s);
                thread::spawn(move || wait_for(&s, me, 1))
            })
            .collect();
        bump_and_notify(&s, 1, false);
        bump_and_notify(&s, 1, false);
        for w in waiters {
            w.join().expect("waiter");
        }
    }
}

#[cfg(all(test, netmcore_loom))]
mod loom_condvar {
    use super::scenarios;

    #[test]
    fn loom_notify_one_wakes_the_waiter() {
        loom::model(scenarios::notify_one_wakes_the_waiter);
    }

    #[test]
    fn loom_notify_all_wakes_every_waiter() {
        loom::model(scenarios::notify_all_wakes_every_waiter);
    }

    #[test]
    fn loom_two_notify_one_wake_two_waiters() {
        loom::model(scenarios::two_notify_one_wake_two_waiters);
    }
}

#[cfg(all(test, not(netmcore_loom)))]
mod tests {
    use super::*;

    #[test]
    fn scenarios_pass_with_threads() {
        for _ in 0..200 {
            scenarios::notify_one_wakes_the_waiter();
            scenarios::notify_all_wakes_every_waiter();
            scenarios::two_notify_one_wake_two_waiters();
        }
    }

    #[test]
    fn a_notify_moves_the_sequence_on() {
        let words = CondvarWords::new();
        let state = CondvarState::attach(&words);
        let token = state.prepare_wait();
        assert!(!state.notified_since(token));
        assert_eq!(state.notify_one(), Wake::One);
        assert!(state.notified_since(token));
        let token = state.prepare_wait();
        assert_eq!(state.notify_all(), Wake::All);
        assert!(state.notified_since(token));
        // The sequence wraps.
        words.seq.store(u32::MAX, Ordering::Relaxed);
        let token = state.prepare_wait();
        assert_eq!(state.notify_one(), Wake::One);
        assert_eq!(words.seq.load(Ordering::Relaxed), 0);
        assert!(state.notified_since(token));
    }
}
