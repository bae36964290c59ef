//! The atomics protocol of the mutex, without the futex.
//!
//! The lock is one 32-bit word:
//!
//! ```text
//!    31       30      29                      0
//! +---------+-------+---------------------------+
//! | WAITERS | 0     |        holder tag         |
//! +---------+-------+---------------------------+
//! ```
//!
//! * `0` is unlocked; otherwise the word holds the tag of the holder's process, and `WAITERS`
//!   when someone may be asleep on the word. Bit 30 is always 0: a word with it set is corrupt.
//! * **lock** is a CAS `0 -> me`. When the word is held, a locker sets `WAITERS` (CAS) and
//!   parks while the word still holds `holder | WAITERS`. A locker that has parked once takes
//!   the lock *with* `WAITERS` set (Drepper's "mutex 3"): it cannot know whether other sleepers
//!   remain, so its unlock must wake one, and no wakeup is ever lost.
//! * **takeover**: when the holder's process is dead ([`Peers`]), a locker takes the lock with
//!   a CAS `w -> me | (w & WAITERS)` and reports it; the mutex is then poisoned, since the dead
//!   holder may have left the data half-written. Only one locker can win that CAS.
//! * **unlock** is a CAS `w -> 0` from a word that holds the caller's tag; if `WAITERS` was set
//!   it asks for one wake.
//! * The *poison word* beside the lock is `0` or not: set by a takeover (here) or by a guard
//!   dropped while its thread panics (the caller, through [`MutexState::poison`]), cleared by
//!   [`MutexState::clear_poison`]. It is only written while the lock is held.
//!
//! The lock is taken with `Acquire` and given back with `Release`, so whatever a holder wrote
//! is visible to the next. Setting `WAITERS` needs no ordering beyond the word's own.
//!
//! The machine never sleeps: [`Locking::step`] returns [`LockStep::Park`] with the value to
//! sleep on, and [`unlock`] returns the [`Wake`] to perform. The caller reads the death board's
//! epoch *before* each step and sleeps on both words (`futex_waitv`), so a holder's death wakes
//! it and the next step sees the death.

use crate::protocol::{BadState, MASTER_TAG, NOBODY, Peers, TAG_MASK, Wake};
use crate::sync::atomic::{AtomicU32, Ordering};

/// The flag of a lock word that says someone may be asleep on it.
pub(crate) const WAITERS: u32 = 1 << 31;

/// The bit of a lock word that no state uses.
const RESERVED: u32 = 1 << 30;

/// The words of a mutex, as laid out in its segment.
#[repr(C)]
pub(crate) struct MutexWords {
    /// The lock word (see the module docs).
    pub(crate) lock: AtomicU32,
    /// The poison word: `0`, or poisoned.
    pub(crate) poison: AtomicU32,
}

impl MutexWords {
    /// Unlocked and not poisoned: the state of zeroed memory.
    #[cfg(test)]
    pub(crate) fn new() -> MutexWords {
        MutexWords {
            lock: AtomicU32::new(0),
            poison: AtomicU32::new(0),
        }
    }
}

/// What a lock word that fails the checks of a step looks like to [`BadState`].
fn bad_lock_word(word: u32) -> BadState {
    BadState::new("lock word with the reserved bit 30 set", word)
}

/// The holder's tag in a lock word, if the word is well formed.
fn holder(word: u32) -> Result<u32, BadState> {
    if word & RESERVED != 0 {
        return Err(bad_lock_word(word));
    }
    Ok(word & TAG_MASK)
}

/// What a step of [`Locking`] leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockStep {
    /// The caller holds the lock. `took_over`: from a holder whose process had died.
    Acquired {
        /// The previous holder died holding the lock.
        took_over: bool,
    },
    /// Sleep while the lock word holds `expected` (and the board's epoch is unchanged), then
    /// step again.
    Park {
        /// The value to sleep on.
        expected: u32,
    },
}

/// One locker's way through a blocking lock of a lock word: a step at a time, since the
/// machine never sleeps itself.
#[derive(Debug, Default)]
pub(crate) struct Locking {
    /// The locker has been told to park, so it may have slept, and other sleepers may remain
    /// when it gets the lock: it then takes it with `WAITERS` set.
    parked: bool,
}

impl Locking {
    /// A locker that has not tried yet.
    pub(crate) fn new() -> Locking {
        Locking::default()
    }

    /// Tries to take the lock `word` for the process `me`: takes it if it is free or its
    /// holder is dead, or else marks it as waited on and says what to sleep on.
    ///
    /// `me` is a tag other than [`NOBODY`] (at most [`MASTER_TAG`]).
    ///
    /// # Errors
    ///
    /// [`BadState`] for a word with the reserved bit set.
    pub(crate) fn step(
        &mut self,
        word: &AtomicU32,
        me: u32,
        peers: &impl Peers,
    ) -> Result<LockStep, BadState> {
        debug_assert!(me != NOBODY && me <= MASTER_TAG, "bad own tag {me:#x}");
        let mut w = word.load(Ordering::Relaxed);
        loop {
            let h = holder(w)?;
            let waiters = if self.parked { WAITERS } else { w & WAITERS };
            let take = if h == NOBODY {
                Some(false)
            } else if peers.is_dead(h) {
                Some(true)
            } else {
                None
            };
            if let Some(took_over) = take {
                match word.compare_exchange(w, me | waiters, Ordering::Acquire, Ordering::Relaxed) {
                    Ok(_) => return Ok(LockStep::Acquired { took_over }),
                    Err(now) => {
                        w = now;
                        continue;
                    }
                }
            }
            if w & WAITERS == 0
                && let Err(now) =
                    word.compare_exchange(w, w | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
            {
                w = now;
                continue;
            }
            self.parked = true;
            return Ok(LockStep::Park {
                expected: w | WAITERS,
            });
        }
    }
}

/// What [`try_lock`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TryLock {
    /// The caller holds the lock (`took_over`: from a dead holder).
    Acquired {
        /// The previous holder died holding the lock.
        took_over: bool,
    },
    /// A live process holds it.
    WouldBlock,
}

/// Takes the lock `word` for `me` if it is free or its holder is dead, without waiting.
///
/// # Errors
///
/// [`BadState`] for a word with the reserved bit set.
pub(crate) fn try_lock(word: &AtomicU32, me: u32, peers: &impl Peers) -> Result<TryLock, BadState> {
    debug_assert!(me != NOBODY && me <= MASTER_TAG, "bad own tag {me:#x}");
    let mut w = match word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
        Ok(_) => return Ok(TryLock::Acquired { took_over: false }),
        Err(now) => now,
    };
    loop {
        let h = holder(w)?;
        let took_over = if h == NOBODY {
            false
        } else if peers.is_dead(h) {
            true
        } else {
            return Ok(TryLock::WouldBlock);
        };
        match word.compare_exchange(w, me | (w & WAITERS), Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => return Ok(TryLock::Acquired { took_over }),
            Err(now) => w = now,
        }
    }
}

/// Gives back the lock `word` that `me` holds; says whether a sleeper must be woken.
///
/// # Errors
///
/// [`BadState`] if the word does not hold `me` (nothing is changed then).
pub(crate) fn unlock(word: &AtomicU32, me: u32) -> Result<Wake, BadState> {
    let mut w = word.load(Ordering::Relaxed);
    loop {
        if holder(w)? != me {
            return Err(BadState::new(
                "lock word that does not hold the unlocking process",
                w,
            ));
        }
        match word.compare_exchange(w, 0, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => {
                return Ok(if w & WAITERS == 0 {
                    Wake::None
                } else {
                    Wake::One
                });
            }
            Err(now) => w = now,
        }
    }
}

/// What a step of [`MutexState::lock_step`] leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MutexStep {
    /// The caller holds the mutex.
    Locked {
        /// The previous holder died holding it (the mutex is now poisoned).
        took_over: bool,
        /// The mutex is poisoned: `lock` reports a `PoisonError`.
        poisoned: bool,
    },
    /// Sleep while the lock word holds `expected` (and the epoch is unchanged), then step
    /// again.
    Park {
        /// The value to sleep on.
        expected: u32,
    },
}

/// The protocol over the words of a mutex: a lock word and a poison word.
#[derive(Clone, Copy)]
pub(crate) struct MutexState<'a> {
    words: &'a MutexWords,
}

impl<'a> MutexState<'a> {
    /// The mutex in `words`, as it is.
    pub(crate) fn attach(words: &'a MutexWords) -> MutexState<'a> {
        MutexState { words }
    }

    /// The lock word, the one to sleep on and wake.
    pub(crate) fn lock_word(&self) -> &'a AtomicU32 {
        &self.words.lock
    }

    /// A step of a blocking lock (see [`Locking::step`]); a takeover poisons the mutex.
    ///
    /// # Errors
    ///
    /// [`BadState`] for a corrupt lock word.
    pub(crate) fn lock_step(
        &self,
        locking: &mut Locking,
        me: u32,
        peers: &impl Peers,
    ) -> Result<MutexStep, BadState> {
        Ok(match locking.step(&self.words.lock, me, peers)? {
            LockStep::Acquired { took_over } => self.locked(took_over),
            LockStep::Park { expected } => MutexStep::Park { expected },
        })
    }

    /// Takes the mutex if it is free or its holder is dead; `None` if a live process holds it.
    ///
    /// # Errors
    ///
    /// [`BadState`] for a corrupt lock word.
    pub(crate) fn try_lock(
        &self,
        me: u32,
        peers: &impl Peers,
    ) -> Result<Option<MutexStep>, BadState> {
        Ok(match try_lock(&self.words.lock, me, peers)? {
            TryLock::Acquired { took_over } => Some(self.locked(took_over)),
            TryLock::WouldBlock => None,
        })
    }

    /// The report of a lock just taken, poisoning the mutex after a takeover.
    fn locked(&self, took_over: bool) -> MutexStep {
        if took_over {
            self.poison();
        }
        MutexStep::Locked {
            took_over,
            poisoned: self.is_poisoned(),
        }
    }

    /// Gives the mutex back; says whether a sleeper must be woken.
    ///
    /// # Errors
    ///
    /// [`BadState`] if the lock word does not hold `me`.
    pub(crate) fn unlock(&self, me: u32) -> Result<Wake, BadState> {
        unlock(&self.words.lock, me)
    }

    /// Marks the mutex poisoned; called by its holder (a guard dropped while its thread
    /// panics).
    pub(crate) fn poison(&self) {
        self.words.poison.store(1, Ordering::Relaxed);
    }

    /// Whether the mutex is poisoned. Exact while the lock is held (the lock orders the
    /// poison word); a hint otherwise.
    pub(crate) fn is_poisoned(&self) -> bool {
        self.words.poison.load(Ordering::Relaxed) != 0
    }

    /// Clears the poison.
    pub(crate) fn clear_poison(&self) {
        self.words.poison.store(0, Ordering::Relaxed);
    }
}

/// Scenarios shared by the loom models and the tests with std threads. Each checks mutual
/// exclusion with a counter that is read and written non-atomically under the lock (`load`
/// then `store`), so an overlap or a missing happens-before loses an increment, and relies on
/// the emulated futex to hang on a lost wakeup.
#[cfg(test)]
pub(crate) mod scenarios {
    use super::*;
    use crate::sync::atomic::AtomicUsize;
    use crate::sync::{Arc, thread};
    use crate::testing::{Board, Futex};

    /// A mutex, a board and a futex, and the data the mutex guards.
    pub(crate) struct Shared {
        pub(crate) words: MutexWords,
        pub(crate) board: Board,
        pub(crate) futex: Futex,
        pub(crate) counter: AtomicUsize,
        pub(crate) inside: AtomicUsize,
    }

    pub(crate) fn shared() -> Arc<Shared> {
        Arc::new(Shared {
            words: MutexWords::new(),
            board: Board::new(),
            futex: Futex::new(),
            counter: AtomicUsize::new(0),
            inside: AtomicUsize::new(0),
        })
    }

    /// A blocking lock as the OS layer does it: epoch first, then a step, then sleep on the
    /// lock word and the epoch. Returns the step that acquired.
    pub(crate) fn lock(s: &Shared, me: u32) -> MutexStep {
        let state = MutexState::attach(&s.words);
        let mut locking = Locking::new();
        loop {
            let epoch = s.board.epoch();
            match state
                .lock_step(&mut locking, me, &s.board)
                .expect("well formed")
            {
                MutexStep::Park { expected } => s
                    .futex
                    .park(&[(state.lock_word(), expected), (&s.board.epoch, epoch)]),
                locked => return locked,
            }
        }
    }

    pub(crate) fn unlock(s: &Shared, me: u32) {
        let state = MutexState::attach(&s.words);
        let wake = state.unlock(me).expect("held by me");
        s.futex.wake(state.lock_word(), wake);
    }

    /// The critical section: alone inside, a non-atomic increment.
    fn critical(s: &Shared) {
        assert_eq!(s.inside.fetch_add(1, Ordering::Relaxed), 0, "alone inside");
        let n = s.counter.load(Ordering::Relaxed);
        s.counter.store(n + 1, Ordering::Relaxed);
        s.inside.fetch_sub(1, Ordering::Relaxed);
    }

    fn lock_unlock(s: &Shared, me: u32) {
        let step = lock(s, me);
        assert_eq!(
            step,
            MutexStep::Locked {
                took_over: false,
                poisoned: false
            }
        );
        critical(s);
        unlock(s, me);
    }

    /// Two lockers: mutual exclusion, and every write of one is seen by the other.
    pub(crate) fn two_lockers() {
        let s = shared();
        let s2 = Arc::clone(&s);
        let other = thread::spawn(move || lock_unlock(&s2, 2));
        lock_unlock(&s, 1);
        other.join().expect("locker");
        assert_eq!(s.counter.load(Ordering::Relaxed), 2);
        assert_eq!(
            s.words.lock.load(Ordering::Relaxed),
            0,
            "unlocked at the end"
        );
    }

    /// Three lockers: a woken waiter must take the lock with `WAITERS` set, or the third one
    /// sleeps forever.
    pub(crate) fn three_lockers() {
        let s = shared();
        let lockers: Vec<_> = [2, 3]
            .into_iter()
            .map(|me| {
                let s = Arc::clone(&s);
                thread::spawn(move || lock_unlock(&s, me))
            })
            .collect();
        lock_unlock(&s, 1);
        for l in lockers {
            l.join().expect("locker");
        }
        assert_eq!(s.counter.load(Ordering::Relaxed), 3);
        assert_eq!(
            s.words.lock.load(Ordering::Relaxed),
            0,
            "unlocked at the end"
        );
    }

    /// The holder dies holding the lock: a waiter, asleep or not yet, takes it over, sees the
    /// dead holder's writes and gets it poisoned; the mutex works on afterwards.
    pub(crate) fn dead_holder_is_taken_over() {
        let s = shared();
        assert!(matches!(
            lock(&s, 1),
            MutexStep::Locked {
                took_over: false,
                ..
            }
        ));
        let s2 = Arc::clone(&s);
        let holder = thread::spawn(move || {
            s2.counter.store(10, Ordering::Relaxed);
            // The process ends without unlocking; the master marks it dead.
            s2.board.die(1, &s2.futex);
        });
        let step = lock(&s, 2);
        assert_eq!(
            step,
            MutexStep::Locked {
                took_over: true,
                poisoned: true
            }
        );
        assert_eq!(
            s.counter.load(Ordering::Relaxed),
            10,
            "the dead holder's write"
        );
        unlock(&s, 2);
        holder.join().expect("holder");
        let state = MutexState::attach(&s.words);
        assert!(state.is_poisoned());
        state.clear_poison();
        assert_eq!(
            lock(&s, 3),
            MutexStep::Locked {
                took_over: false,
                poisoned: false
            }
        );
    }

    /// Two waiters race for a dead holder's lock: exactly one takes it over, the other gets it
    /// after, poisoned but not taken over, and nobody hangs.
    pub(crate) fn two_waiters_race_for_a_dead_holder() {
        let s = shared();
        assert!(matches!(lock(&s, 1), MutexStep::Locked { .. }));
        s.board.die(1, &s.futex);
        let s2 = Arc::clone(&s);
        let other = thread::spawn(move || {
            let step = lock(&s2, 2);
            critical(&s2);
            unlock(&s2, 2);
            step
        });
        let mine = lock(&s, 3);
        critical(&s);
        unlock(&s, 3);
        let theirs = other.join().expect("waiter");
        let took_over = |step| match step {
            MutexStep::Locked {
                took_over,
                poisoned,
            } => {
                assert!(poisoned);
                took_over
            }
            MutexStep::Park { .. } => panic!("parked after lock"),
        };
        assert!(took_over(mine) ^ took_over(theirs), "{mine:?} {theirs:?}");
        assert_eq!(s.counter.load(Ordering::Relaxed), 2);
    }
}

#[cfg(all(test, netmcore_loom))]
mod loom_mutex {
    use super::scenarios;

    #[test]
    fn loom_two_lockers() {
        loom::model(scenarios::two_lockers);
    }

    #[test]
    fn loom_three_lockers() {
        loom::model(scenarios::three_lockers);
    }

    #[test]
    fn loom_dead_holder_is_taken_over() {
        loom::model(scenarios::dead_holder_is_taken_over);
    }

    #[test]
    fn loom_two_waiters_race_for_a_dead_holder() {
        loom::model(scenarios::two_waiters_race_for_a_dead_holder);
    }
}

#[cfg(all(test, not(netmcore_loom)))]
mod tests {
    use super::*;
    use crate::protocol::NoDeaths;

    /// Runs a scenario many times with real threads (the loom models explore it exhaustively).
    fn repeat(scenario: fn()) {
        for _ in 0..200 {
            scenario();
        }
    }

    #[test]
    fn scenarios_pass_with_threads() {
        repeat(scenarios::two_lockers);
        repeat(scenarios::three_lockers);
        repeat(scenarios::dead_holder_is_taken_over);
        repeat(scenarios::two_waiters_race_for_a_dead_holder);
    }

    /// Tags 5 and 6 are dead; everyone else lives.
    struct FiveAndSixDead;
    impl Peers for FiveAndSixDead {
        fn is_dead(&self, tag: u32) -> bool {
            tag == 5 || tag == 6
        }
    }

    #[test]
    fn an_uncontended_lock_is_one_cas() {
        let word = AtomicU32::new(0);
        let mut locking = Locking::new();
        assert_eq!(
            locking.step(&word, 7, &NoDeaths),
            Ok(LockStep::Acquired { took_over: false })
        );
        assert_eq!(word.load(Ordering::Relaxed), 7);
        assert_eq!(unlock(&word, 7), Ok(Wake::None));
        assert_eq!(word.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_contended_lock_sets_waiters_and_parks_on_it() {
        let word = AtomicU32::new(3);
        let mut locking = Locking::new();
        assert_eq!(
            locking.step(&word, 7, &NoDeaths),
            Ok(LockStep::Park {
                expected: 3 | WAITERS
            })
        );
        assert_eq!(word.load(Ordering::Relaxed), 3 | WAITERS);
        // The holder unlocks and must wake.
        assert_eq!(unlock(&word, 3), Ok(Wake::One));
        // The woken locker takes the lock with WAITERS, since others may still sleep.
        assert_eq!(
            locking.step(&word, 7, &NoDeaths),
            Ok(LockStep::Acquired { took_over: false })
        );
        assert_eq!(word.load(Ordering::Relaxed), 7 | WAITERS);
        assert_eq!(unlock(&word, 7), Ok(Wake::One));
    }

    #[test]
    fn a_dead_holder_is_taken_over_keeping_waiters() {
        let word = AtomicU32::new(5 | WAITERS);
        let mut locking = Locking::new();
        assert_eq!(
            locking.step(&word, 7, &FiveAndSixDead),
            Ok(LockStep::Acquired { took_over: true })
        );
        assert_eq!(word.load(Ordering::Relaxed), 7 | WAITERS);
        word.store(6, Ordering::Relaxed);
        assert_eq!(
            try_lock(&word, 7, &FiveAndSixDead),
            Ok(TryLock::Acquired { took_over: true })
        );
        assert_eq!(word.load(Ordering::Relaxed), 7);
        // The master never dies.
        word.store(MASTER_TAG, Ordering::Relaxed);
        assert_eq!(try_lock(&word, 7, &FiveAndSixDead), Ok(TryLock::WouldBlock));
    }

    #[test]
    fn try_lock_takes_a_free_lock_and_leaves_a_held_one() {
        let word = AtomicU32::new(0);
        assert_eq!(
            try_lock(&word, 7, &NoDeaths),
            Ok(TryLock::Acquired { took_over: false })
        );
        assert_eq!(try_lock(&word, 8, &NoDeaths), Ok(TryLock::WouldBlock));
        assert_eq!(word.load(Ordering::Relaxed), 7, "unchanged");
        // A lone WAITERS flag (no holder) counts as free, and the flag is kept.
        word.store(WAITERS, Ordering::Relaxed);
        assert_eq!(
            try_lock(&word, 8, &NoDeaths),
            Ok(TryLock::Acquired { took_over: false })
        );
        assert_eq!(word.load(Ordering::Relaxed), 8 | WAITERS);
    }

    #[test]
    fn corrupt_lock_words_are_reported_not_obeyed() {
        let bad = RESERVED | 3;
        let word = AtomicU32::new(bad);
        let mut locking = Locking::new();
        let err = locking.step(&word, 7, &NoDeaths).expect_err("reserved bit");
        assert_eq!(err.value, u64::from(bad));
        assert!(try_lock(&word, 7, &NoDeaths).is_err());
        assert!(unlock(&word, 3).is_err());
        assert_eq!(word.load(Ordering::Relaxed), bad, "left as found");
        // Unlocking a lock someone else holds changes nothing.
        word.store(4 | WAITERS, Ordering::Relaxed);
        let err = unlock(&word, 3).expect_err("not mine");
        assert_eq!(err.value, u64::from(4 | WAITERS));
        assert_eq!(word.load(Ordering::Relaxed), 4 | WAITERS);
        assert!(unlock(&AtomicU32::new(0), 3).is_err(), "not locked at all");
    }

    #[test]
    fn poison_follows_takeovers_and_guards() {
        let words = MutexWords::new();
        let state = MutexState::attach(&words);
        let mut locking = Locking::new();
        assert_eq!(
            state.lock_step(&mut locking, 7, &NoDeaths),
            Ok(MutexStep::Locked {
                took_over: false,
                poisoned: false
            })
        );
        // The guard is dropped while its thread panics.
        state.poison();
        assert_eq!(state.unlock(7), Ok(Wake::None));
        assert_eq!(
            state.try_lock(8, &NoDeaths),
            Ok(Some(MutexStep::Locked {
                took_over: false,
                poisoned: true
            }))
        );
        state.clear_poison();
        assert!(!state.is_poisoned());
        // Process 8 dies holding it.
        struct EightDead;
        impl Peers for EightDead {
            fn is_dead(&self, tag: u32) -> bool {
                tag == 8
            }
        }
        assert_eq!(state.try_lock(9, &NoDeaths), Ok(None));
        assert_eq!(
            state.try_lock(9, &EightDead),
            Ok(Some(MutexStep::Locked {
                took_over: true,
                poisoned: true
            }))
        );
        assert!(state.is_poisoned());
    }
}
