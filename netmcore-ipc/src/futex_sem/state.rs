//! The atomics protocol of the futex semaphore, without the futex.
//!
//! The whole state is one 32-bit word:
//!
//! ```text
//!  31            22 21                           0
//! +----------------+------------------------------+
//! |    waiters     |            count             |
//! +----------------+------------------------------+
//! ```
//!
//! * `count` (22 bits) is the semaphore's value.
//! * `waiters` (10 bits) counts the waiters that have *registered* and may be asleep in the
//!   futex. A waiter registers (with a CAS) only when it has seen `count == 0`, then sleeps
//!   only while the word still holds exactly the value it registered into (the kernel compares
//!   and sleeps atomically), and unregisters in the same CAS that takes a token, or in the CAS
//!   that gives up at a timeout.
//! * `post` adds one to `count` with a CAS and, if the word it replaced had `waiters > 0`,
//!   asks for one futex wake. Since every change to the word goes through the one atomic word,
//!   a registration is either before a post in its modification order (the post sees it and
//!   wakes) or after it (the registration CAS fails or sees `count > 0`, so it does not sleep).
//! * A waiter that is woken, or wakes spuriously, or times out, reloads the word and takes a
//!   token if `count > 0` *before* it goes back to sleep or gives up. So a wake is never spent
//!   on a waiter that leaves without a token while one is available, and each post either
//!   wakes a sleeper who will take its token, or finds no sleeper in the futex (the registered
//!   ones are then awake and will see the token when they reload).
//! * When 1023 waiters are registered, a further waiter does not register: it sleeps in short
//!   polls instead (see [`Park::park`]), which keeps the protocol exact beyond that number.
//!
//! Tokens move with `Release` (post) and `Acquire` (take) on the word, so whatever a process
//! wrote before a post is visible to the waiter that takes the token. Registration and
//! giving-up need no ordering beyond the word's own modification order.
//!
//! The futex is injected as a [`Park`] (for sleeping) and returned as a [`Wake`] decision (for
//! waking), so the loom models below can replace it with a lock and a condition variable.
#![cfg_attr(
    netmcore_loom,
    allow(
        dead_code,
        reason = "under loom the state machine is used by the loom models only"
    )
)]

use std::time::Instant;

use crate::sync::atomic::{AtomicU32, Ordering};

/// Bits of the count.
const COUNT_BITS: u32 = 22;
/// The mask of the count in the word.
const COUNT_MASK: u32 = (1 << COUNT_BITS) - 1;
/// The largest value the semaphore holds.
pub(crate) const MAX_COUNT: u32 = COUNT_MASK;
/// One registered waiter, in the word.
const ONE_WAITER: u32 = 1 << COUNT_BITS;
/// The most waiters that register; further ones poll.
pub(crate) const MAX_WAITERS: u32 = u32::MAX >> COUNT_BITS;

/// The count in a state word.
pub(crate) fn count(word: u32) -> u32 {
    word & COUNT_MASK
}

/// What a waiter that registered takes off the waiters field of `word` when it leaves: one
/// waiter, unless the field is already 0. The word lives in shared memory and is untrusted:
/// another process may have rewritten it while this one waited, and the subtraction must not
/// overflow into the count or panic.
fn unregistering(word: u32, registered: bool) -> u32 {
    if registered && waiters(word) > 0 {
        ONE_WAITER
    } else {
        0
    }
}

/// The number of registered waiters in `word`.
pub(crate) fn waiters(word: u32) -> u32 {
    word >> COUNT_BITS
}

/// How a [`Park::park`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parked {
    /// Woken, or the word had changed, or a spurious wakeup: reload and decide again.
    Woken,
    /// The deadline has passed.
    TimedOut,
}

/// The sleeping half of a futex.
pub(crate) trait Park {
    /// What a failed park reports.
    type Error;

    /// Sleeps while `word` holds `expected`, until woken by a wake on the same word, or
    /// spuriously, or until `deadline` (`None`: no deadline). The check of the word and the
    /// going to sleep must be atomic with respect to wakes.
    ///
    /// With `poll`, the caller is not registered as a waiter, so no post will wake it for
    /// sure: the sleep must also end after a short interval (returning [`Parked::Woken`]).
    /// Returns [`Parked::TimedOut`] only once `deadline` has passed.
    fn park(
        &self,
        word: &AtomicU32,
        expected: u32,
        deadline: Option<Instant>,
        poll: bool,
    ) -> Result<Parked, Self::Error>;
}

/// What a post asks of the futex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a post that found waiters must wake one"]
pub(crate) enum Wake {
    /// No one is registered: nothing to wake.
    None,
    /// Waiters are registered: wake one sleeper on the word.
    One,
}

/// A post would take the count beyond [`MAX_COUNT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Overflow;

/// The protocol over one state word.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SemState<'a> {
    word: &'a AtomicU32,
}

impl<'a> SemState<'a> {
    /// The state in `word`, as it is.
    pub(crate) fn attach(word: &'a AtomicU32) -> SemState<'a> {
        SemState { word }
    }

    /// Sets the state to `initial` with no waiters; before anyone else uses the word.
    pub(crate) fn init(word: &'a AtomicU32, initial: u32) -> Result<SemState<'a>, Overflow> {
        if initial > MAX_COUNT {
            return Err(Overflow);
        }
        word.store(initial, Ordering::Release);
        Ok(SemState { word })
    }

    /// The word.
    pub(crate) fn word(&self) -> &'a AtomicU32 {
        self.word
    }

    /// The current count.
    pub(crate) fn value(&self) -> u32 {
        count(self.word.load(Ordering::Relaxed))
    }

    /// The current number of registered waiters.
    pub(crate) fn waiters(&self) -> u32 {
        waiters(self.word.load(Ordering::Relaxed))
    }

    /// Adds one to the count; says whether a sleeper must be woken.
    pub(crate) fn post(&self) -> Result<Wake, Overflow> {
        let mut v = self.word.load(Ordering::Relaxed);
        loop {
            if count(v) == MAX_COUNT {
                return Err(Overflow);
            }
            match self
                .word
                .compare_exchange_weak(v, v + 1, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => {
                    return Ok(if waiters(v) > 0 {
                        Wake::One
                    } else {
                        Wake::None
                    });
                }
                Err(now) => v = now,
            }
        }
    }

    /// Takes one from the count if it is positive.
    pub(crate) fn try_acquire(&self) -> bool {
        let mut v = self.word.load(Ordering::Relaxed);
        while count(v) > 0 {
            match self
                .word
                .compare_exchange_weak(v, v - 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => v = now,
            }
        }
        false
    }

    /// Takes one from the count, sleeping through `park` while it is 0, until `deadline`.
    /// Returns whether a token was taken (`false`: the deadline passed).
    ///
    /// On an error from `park` the waiter unregisters and returns the error without a token.
    pub(crate) fn acquire<P: Park>(
        &self,
        park: &P,
        deadline: Option<Instant>,
    ) -> Result<bool, P::Error> {
        let mut registered = false;
        let mut v = self.word.load(Ordering::Relaxed);
        loop {
            if count(v) > 0 {
                let next = v - 1 - unregistering(v, registered);
                match self
                    .word
                    .compare_exchange_weak(v, next, Ordering::Acquire, Ordering::Relaxed)
                {
                    Ok(_) => return Ok(true),
                    Err(now) => {
                        v = now;
                        continue;
                    }
                }
            }
            // The count is 0 in `v`: register (unless done, or full), then sleep on `v`.
            let poll = !registered && waiters(v) == MAX_WAITERS;
            if !registered && !poll {
                let next = v + ONE_WAITER;
                match self
                    .word
                    .compare_exchange_weak(v, next, Ordering::Relaxed, Ordering::Relaxed)
                {
                    Ok(_) => {
                        registered = true;
                        v = next;
                    }
                    Err(now) => {
                        v = now;
                        continue;
                    }
                }
            }
            match park.park(self.word, v, deadline, poll) {
                Ok(Parked::Woken) => v = self.word.load(Ordering::Relaxed),
                Ok(Parked::TimedOut) => return Ok(self.give_up(registered)),
                Err(e) => {
                    if registered {
                        self.word.fetch_sub(ONE_WAITER, Ordering::Relaxed);
                    }
                    return Err(e);
                }
            }
        }
    }

    /// At the deadline: takes a token if one is there after all, else unregisters. Returns
    /// whether a token was taken.
    fn give_up(&self, registered: bool) -> bool {
        let mut v = self.word.load(Ordering::Relaxed);
        loop {
            let (next, success) = if count(v) > 0 {
                (v - 1, Ordering::Acquire)
            } else if registered {
                (v, Ordering::Relaxed)
            } else {
                return false;
            };
            let next = next - unregistering(v, registered);
            match self
                .word
                .compare_exchange_weak(v, next, success, Ordering::Relaxed)
            {
                Ok(_) => return count(v) > 0,
                Err(now) => v = now,
            }
        }
    }
}

/// Scenarios shared by the loom models and the plain thread tests: each runs a few threads
/// over one word with a futex emulated by a lock and a condition variable, and checks that
/// nothing hangs (a lost wakeup hangs a waiter; loom reports it as a deadlock) and that the
/// count is exact at the end.
#[cfg(test)]
mod scenarios {
    use std::convert::Infallible;
    use std::time::Instant;

    use super::*;
    use crate::sync::atomic::AtomicUsize;
    use crate::sync::{Arc, Condvar, Mutex, thread};

    /// A futex emulated with a lock and a condition variable: `park` checks the word under the
    /// lock and sleeps on the condition variable, and `wake` notifies under the lock, which
    /// makes the check-and-sleep atomic with respect to wakes as the kernel's is.
    ///
    /// A park with a deadline (or a poll) times out at once instead of sleeping, which models
    /// the timer firing at the worst moment.
    pub(super) struct Futex {
        lock: Mutex<()>,
        cond: Condvar,
    }

    impl Futex {
        pub(super) fn new() -> Futex {
            Futex {
                lock: Mutex::new(()),
                cond: Condvar::new(),
            }
        }

        pub(super) fn wake(&self, wake: Wake) {
            if wake == Wake::One {
                let _guard = self.lock.lock().expect("futex lock");
                self.cond.notify_one();
            }
        }
    }

    impl Park for Futex {
        type Error = Infallible;

        fn park(
            &self,
            word: &AtomicU32,
            expected: u32,
            deadline: Option<Instant>,
            poll: bool,
        ) -> Result<Parked, Infallible> {
            let guard = self.lock.lock().expect("futex lock");
            if word.load(Ordering::Relaxed) != expected {
                return Ok(Parked::Woken);
            }
            if deadline.is_some() {
                return Ok(Parked::TimedOut);
            }
            if poll {
                return Ok(Parked::Woken);
            }
            let _guard = self.cond.wait(guard).expect("futex lock");
            Ok(Parked::Woken)
        }
    }

    struct Shared {
        word: AtomicU32,
        futex: Futex,
        data: AtomicUsize,
    }

    fn shared(initial: u32) -> Arc<Shared> {
        let shared = Shared {
            word: AtomicU32::new(0),
            futex: Futex::new(),
            data: AtomicUsize::new(0),
        };
        SemState::init(&shared.word, initial).expect("initial count fits");
        Arc::new(shared)
    }

    fn post(s: &Shared) {
        let wake = SemState::attach(&s.word).post().expect("no overflow");
        s.futex.wake(wake);
    }

    fn wait(s: &Shared) {
        let taken = SemState::attach(&s.word).acquire(&s.futex, None);
        assert_eq!(taken, Ok(true));
    }

    fn end_state(s: &Shared) -> (u32, u32) {
        let state = SemState::attach(&s.word);
        (state.value(), state.waiters())
    }

    /// A post wakes a sleeping waiter, and what was written before the post is visible after
    /// the wait (Release/Acquire on the word).
    pub(super) fn post_wakes_waiter_and_publishes() {
        let s = shared(0);
        let s2 = Arc::clone(&s);
        let waiter = thread::spawn(move || {
            wait(&s2);
            assert_eq!(
                s2.data.load(Ordering::Relaxed),
                42,
                "the post's write is visible"
            );
        });
        s.data.store(42, Ordering::Relaxed);
        post(&s);
        waiter.join().expect("waiter");
        assert_eq!(end_state(&s), (0, 0));
    }

    /// Two waiters and two posts: both waiters get a token, none is lost.
    pub(super) fn two_waiters_two_posts() {
        let s = shared(0);
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let s = Arc::clone(&s);
                thread::spawn(move || wait(&s))
            })
            .collect();
        post(&s);
        post(&s);
        for w in waiters {
            w.join().expect("waiter");
        }
        assert_eq!(end_state(&s), (0, 0));
    }

    /// A waiter that times out races with posts and with an untimed waiter: the untimed
    /// waiter still gets woken (the timed-out one never swallows its wake), and every token is
    /// either taken or still counted.
    pub(super) fn timeout_races_post() {
        let s = shared(0);
        let s1 = Arc::clone(&s);
        let timed = thread::spawn(move || {
            SemState::attach(&s1.word)
                .acquire(&s1.futex, Some(Instant::now()))
                .expect("park")
        });
        let s2 = Arc::clone(&s);
        let untimed = thread::spawn(move || wait(&s2));
        post(&s);
        post(&s);
        let timed_took = timed.join().expect("timed waiter");
        untimed.join().expect("untimed waiter");
        let expected = if timed_took { 0 } else { 1 };
        assert_eq!(end_state(&s), (expected, 0));
    }

    /// Posts, try-acquires and a blocking wait mixed: the count is exact.
    pub(super) fn try_acquire_and_post_keep_count() {
        let s = shared(1);
        let s1 = Arc::clone(&s);
        let trier = thread::spawn(move || SemState::attach(&s1.word).try_acquire());
        let s2 = Arc::clone(&s);
        let poster = thread::spawn(move || post(&s2));
        wait(&s);
        let tried = trier.join().expect("trier");
        poster.join().expect("poster");
        let expected = if tried { 0 } else { 1 };
        assert_eq!(end_state(&s), (expected, 0));
    }
}

#[cfg(all(test, netmcore_loom))]
mod loom_tests {
    use super::scenarios;

    #[test]
    fn loom_post_wakes_waiter_and_publishes() {
        loom::model(scenarios::post_wakes_waiter_and_publishes);
    }

    #[test]
    fn loom_two_waiters_two_posts() {
        loom::model(scenarios::two_waiters_two_posts);
    }

    #[test]
    fn loom_timeout_races_post() {
        loom::model(scenarios::timeout_races_post);
    }

    #[test]
    fn loom_try_acquire_and_post_keep_count() {
        loom::model(scenarios::try_acquire_and_post_keep_count);
    }
}

#[cfg(all(test, not(netmcore_loom)))]
mod tests {
    use std::convert::Infallible;

    use super::*;

    /// Runs a scenario many times with real threads (the loom models explore it exhaustively).
    fn repeat(scenario: fn()) {
        for _ in 0..200 {
            scenario();
        }
    }

    #[test]
    fn scenarios_pass_with_threads() {
        repeat(scenarios::post_wakes_waiter_and_publishes);
        repeat(scenarios::two_waiters_two_posts);
        repeat(scenarios::timeout_races_post);
        repeat(scenarios::try_acquire_and_post_keep_count);
    }

    /// A park that must not be reached.
    struct NoPark;
    impl Park for NoPark {
        type Error = Infallible;
        fn park(
            &self,
            _: &AtomicU32,
            _: u32,
            _: Option<Instant>,
            _: bool,
        ) -> Result<Parked, Infallible> {
            panic!("parked although a token was there")
        }
    }

    /// A park that records its arguments and times out.
    #[derive(Default)]
    struct Recorder(std::sync::Mutex<Vec<(u32, bool)>>);
    impl Park for Recorder {
        type Error = Infallible;
        fn park(
            &self,
            _: &AtomicU32,
            expected: u32,
            _: Option<Instant>,
            poll: bool,
        ) -> Result<Parked, Infallible> {
            self.0.lock().expect("recorder").push((expected, poll));
            Ok(Parked::TimedOut)
        }
    }

    #[test]
    fn layout_and_limits() {
        assert_eq!(MAX_COUNT, 4_194_303);
        assert_eq!(MAX_WAITERS, 1023);
        assert_eq!(count(ONE_WAITER * 3 + 5), 5);
        assert_eq!(waiters(ONE_WAITER * 3 + 5), 3);
        // A registered waiter leaving a word whose waiters field someone else cleared takes
        // nothing off it: no overflow into the count, no panic.
        assert_eq!(unregistering(ONE_WAITER * 3 + 5, true), ONE_WAITER);
        assert_eq!(unregistering(5, true), 0);
        assert_eq!(unregistering(ONE_WAITER + 5, false), 0);
        let word = AtomicU32::new(0);
        assert_eq!(SemState::init(&word, MAX_COUNT + 1).err(), Some(Overflow));
        let state = SemState::init(&word, MAX_COUNT).expect("fits");
        assert_eq!(state.post(), Err(Overflow));
        assert_eq!(state.value(), MAX_COUNT);
    }

    #[test]
    fn tokens_are_taken_without_parking() {
        let word = AtomicU32::new(0);
        let state = SemState::init(&word, 2).expect("fits");
        assert_eq!(state.acquire(&NoPark, None), Ok(true));
        assert!(state.try_acquire());
        assert!(!state.try_acquire());
        assert_eq!(state.post(), Ok(Wake::None));
        assert_eq!(state.value(), 1);
    }

    #[test]
    fn a_waiter_registers_sleeps_on_its_value_and_unregisters_at_timeout() {
        let word = AtomicU32::new(0);
        let state = SemState::init(&word, 0).expect("fits");
        let park = Recorder::default();
        assert_eq!(state.acquire(&park, None), Ok(false));
        assert_eq!(*park.0.lock().expect("recorder"), [(ONE_WAITER, false)]);
        assert_eq!(word.load(Ordering::Relaxed), 0, "unregistered");
    }

    #[test]
    fn a_post_with_registered_waiters_asks_for_a_wake() {
        let word = AtomicU32::new(2 * ONE_WAITER);
        let state = SemState::attach(&word);
        assert_eq!(state.post(), Ok(Wake::One));
        assert_eq!((state.value(), state.waiters()), (1, 2));
    }

    #[test]
    fn beyond_max_waiters_a_waiter_polls_unregistered() {
        let word = AtomicU32::new(MAX_WAITERS * ONE_WAITER);
        let state = SemState::attach(&word);
        let park = Recorder::default();
        assert_eq!(state.acquire(&park, None), Ok(false));
        assert_eq!(
            *park.0.lock().expect("recorder"),
            [(MAX_WAITERS * ONE_WAITER, true)]
        );
        assert_eq!(
            state.waiters(),
            MAX_WAITERS,
            "the poller did not touch the waiters"
        );
    }

    #[test]
    fn a_token_that_arrives_at_the_deadline_is_taken() {
        /// Posts (as another thread would) right before reporting the timeout.
        struct PostThenTimeout;
        impl Park for PostThenTimeout {
            type Error = Infallible;
            fn park(
                &self,
                word: &AtomicU32,
                _: u32,
                _: Option<Instant>,
                _: bool,
            ) -> Result<Parked, Infallible> {
                assert_eq!(SemState::attach(word).post(), Ok(Wake::One));
                Ok(Parked::TimedOut)
            }
        }
        let word = AtomicU32::new(0);
        let state = SemState::attach(&word);
        assert_eq!(
            state.acquire(&PostThenTimeout, Some(Instant::now())),
            Ok(true)
        );
        assert_eq!(word.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_park_error_unregisters() {
        struct Fails;
        impl Park for Fails {
            type Error = &'static str;
            fn park(
                &self,
                _: &AtomicU32,
                _: u32,
                _: Option<Instant>,
                _: bool,
            ) -> Result<Parked, &'static str> {
                Err("boom")
            }
        }
        let word = AtomicU32::new(0);
        assert_eq!(SemState::attach(&word).acquire(&Fails, None), Err("boom"));
        assert_eq!(word.load(Ordering::Relaxed), 0);
    }
}
