//! The atomics protocol of the barrier, without the futex.
//!
//! Two words and a table:
//!
//! * `generation` counts completed rounds in its low 31 bits; bit 31 is `BROKEN`. It is the
//!   futex word: waiters sleep on it, and both a completed round and a break change it.
//! * `arrived` counts the arrivals of the current round.
//! * The *openers* table has one slot per process that has the barrier open (2n + 8 slots):
//!   a process writes its tag into a free slot when it opens the barrier and clears it when
//!   it drops its last value of it. A process that dies leaves its tag behind, which is how
//!   the others learn that a participant is gone.
//!
//! **wait**: read `generation` (`g`); if broken, fail. Add one to `arrived`. The n-th arrival
//! is the leader: it resets `arrived` to 0 and moves `generation` from `g` to `g + 1` with a
//! CAS (which fails only if the barrier broke meanwhile), then wakes all. Every other arrival
//! waits until `generation` is no longer `g`: before each sleep, and on every wake, it checks
//! the openers, and if one of them is dead it sets `BROKEN` (a CAS from `g`), wakes all and
//! fails. A waiter that sees the round counter moved on has passed, even if the barrier broke
//! after its round completed. Once broken, every wait fails: the barrier cannot know whether a
//! dead participant would have come.
//!
//! The reset of `arrived` comes before the `Release` of the new generation, and a process can
//! only arrive for the next round after it has seen that generation (`Acquire`), so the next
//! round always counts from 0. The arrivals are read-modify-writes of one word (`AcqRel`), so
//! the leader has seen what every participant wrote before it arrived, and publishes it with
//! the new generation: a barrier orders memory as std's does.

use crate::protocol::{BadState, NOBODY, Peers, Wake, is_tag};
use crate::sync::atomic::{AtomicU32, Ordering};

/// The flag of the generation word that says the barrier is broken.
pub(crate) const BROKEN: u32 = 1 << 31;

/// The round counter of the generation word.
const ROUNDS: u32 = !BROKEN;

/// The words of a barrier, as laid out in its segment (the openers table follows them).
#[repr(C)]
pub(crate) struct BarrierWords {
    /// Completed rounds, and `BROKEN`: the word to sleep on and wake.
    pub(crate) generation: AtomicU32,
    /// Arrivals of the current round.
    pub(crate) arrived: AtomicU32,
}

impl BarrierWords {
    /// The state of zeroed memory.
    #[cfg(test)]
    pub(crate) fn new() -> BarrierWords {
        BarrierWords {
            generation: AtomicU32::new(0),
            arrived: AtomicU32::new(0),
        }
    }
}

/// The number of opener slots of a barrier of `n`: `2n + 8`, or `None` if it overflows.
pub(crate) fn opener_slots(n: u32) -> Option<usize> {
    usize::try_from(n).ok()?.checked_mul(2)?.checked_add(8)
}

/// Every opener slot is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NoFreeSlot;

/// What an arrival at the barrier leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// The last arrival of the round: the round is complete, the caller is its leader and
    /// wakes the others.
    Leader {
        /// What to wake on the generation word.
        wake: Wake,
    },
    /// Wait (with [`BarrierState::wait_step`]) until the generation is no longer this one.
    Wait {
        /// The generation of the round the caller arrived in.
        generation: u32,
    },
    /// The barrier is broken.
    Broken,
}

/// What a step of a waiting arrival leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitStep {
    /// The round completed.
    Passed,
    /// Sleep while the generation word holds `expected` (and the epoch is unchanged), then
    /// step again.
    Park {
        /// The value to sleep on.
        expected: u32,
    },
    /// The barrier is broken; the caller performs `wake` on the generation word (it is the
    /// one that found the dead participant) and fails.
    Broken {
        /// What to wake on the generation word.
        wake: Wake,
    },
}

/// The protocol over the words and openers of a barrier of `n` participants.
#[derive(Clone, Copy)]
pub(crate) struct BarrierState<'a> {
    words: &'a BarrierWords,
    openers: &'a [AtomicU32],
    n: u32,
}

impl<'a> BarrierState<'a> {
    /// The barrier of `n` in `words` with its `openers` table, as it is. A barrier of 0
    /// behaves as one of 1 (every wait leads), as std's does.
    pub(crate) fn attach(
        words: &'a BarrierWords,
        openers: &'a [AtomicU32],
        n: u32,
    ) -> BarrierState<'a> {
        BarrierState {
            words,
            openers,
            n: n.max(1),
        }
    }

    /// The generation word, the one to sleep on and wake.
    pub(crate) fn word(&self) -> &'a AtomicU32 {
        &self.words.generation
    }

    /// Registers the process `me` as an opener; returns its slot.
    ///
    /// # Errors
    ///
    /// [`NoFreeSlot`] when every slot holds a tag.
    pub(crate) fn register(&self, me: u32) -> Result<usize, NoFreeSlot> {
        debug_assert!(me != NOBODY && is_tag(me), "bad own tag {me:#x}");
        for (slot, word) in self.openers.iter().enumerate() {
            if word
                .compare_exchange(NOBODY, me, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                return Ok(slot);
            }
        }
        Err(NoFreeSlot)
    }

    /// Clears the slot that [`register`](Self::register) gave `me`.
    ///
    /// # Errors
    ///
    /// [`BadState`] if the slot does not exist or does not hold `me` (nothing is changed).
    pub(crate) fn unregister(&self, slot: usize, me: u32) -> Result<(), BadState> {
        let Some(word) = self.openers.get(slot) else {
            return Err(BadState::new("opener slot out of the table", slot as u64));
        };
        word.compare_exchange(me, NOBODY, Ordering::Relaxed, Ordering::Relaxed)
            .map(drop)
            .map_err(|found| BadState::new("opener slot that does not hold its process", found))
    }

    /// Whether the barrier is broken.
    pub(crate) fn is_broken(&self) -> bool {
        self.words.generation.load(Ordering::Relaxed) & BROKEN != 0
    }

    /// Arrives at the barrier.
    ///
    /// # Errors
    ///
    /// [`BadState`] if more than `n` arrivals are counted in a round, or the generation word
    /// changed in a way no state allows.
    pub(crate) fn arrive(&self) -> Result<Arrival, BadState> {
        let generation = self.words.generation.load(Ordering::Acquire);
        if generation & BROKEN != 0 {
            return Ok(Arrival::Broken);
        }
        let before = self.words.arrived.fetch_add(1, Ordering::AcqRel);
        if before >= self.n {
            return Err(BadState::new(
                "arrival counter beyond the barrier's participants",
                before,
            ));
        }
        if before + 1 < self.n {
            return Ok(Arrival::Wait { generation });
        }
        self.words.arrived.store(0, Ordering::Relaxed);
        let next = (generation + 1) & ROUNDS;
        match self.words.generation.compare_exchange(
            generation,
            next,
            Ordering::Release,
            Ordering::Relaxed,
        ) {
            Ok(_) => Ok(Arrival::Leader { wake: Wake::All }),
            Err(now) if now == generation | BROKEN => Ok(Arrival::Broken),
            Err(now) => Err(BadState::new(
                "generation word that moved during its round's last arrival",
                now,
            )),
        }
    }

    /// A step of an arrival that waits for the round of `generation` to complete: passes if it
    /// has, breaks the barrier if an opener is dead, or else says what to sleep on.
    ///
    /// The caller reads the death board's epoch *before* this step and sleeps on it too.
    ///
    /// # Errors
    ///
    /// [`BadState`] for an opener slot that holds no tag.
    pub(crate) fn wait_step(
        &self,
        generation: u32,
        peers: &impl Peers,
    ) -> Result<WaitStep, BadState> {
        let mut now = self.words.generation.load(Ordering::Acquire);
        loop {
            if now & ROUNDS != generation & ROUNDS {
                return Ok(WaitStep::Passed);
            }
            if now & BROKEN != 0 {
                return Ok(WaitStep::Broken { wake: Wake::None });
            }
            if !self.an_opener_is_dead(peers)? {
                return Ok(WaitStep::Park { expected: now });
            }
            match self.words.generation.compare_exchange(
                now,
                now | BROKEN,
                Ordering::Relaxed,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(WaitStep::Broken { wake: Wake::All }),
                Err(moved) => now = moved,
            }
        }
    }

    /// Whether an opener slot holds the tag of a dead process.
    fn an_opener_is_dead(&self, peers: &impl Peers) -> Result<bool, BadState> {
        for word in self.openers {
            let tag = word.load(Ordering::Relaxed);
            if !is_tag(tag) {
                return Err(BadState::new("opener slot that holds no tag", tag));
            }
            if tag != NOBODY && peers.is_dead(tag) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Scenarios shared by the loom models and the tests with std threads: rounds of two and three
/// participants, each writing before it waits and reading the others' writes after, and a
/// participant that dies.
#[cfg(test)]
mod scenarios {
    use super::*;
    use crate::sync::atomic::AtomicUsize;
    use crate::sync::{Arc, thread};
    use crate::testing::{Board, Futex};

    struct Shared {
        words: BarrierWords,
        openers: Vec<AtomicU32>,
        n: u32,
        board: Board,
        futex: Futex,
        /// What each participant (by tag) wrote before its latest wait.
        written: [AtomicUsize; 4],
    }

    fn shared(n: u32) -> Arc<Shared> {
        let slots = opener_slots(n).expect("small");
        Arc::new(Shared {
            words: BarrierWords::new(),
            openers: (0..slots).map(|_| AtomicU32::new(0)).collect(),
            n,
            board: Board::new(),
            futex: Futex::new(),
            written: std::array::from_fn(|_| AtomicUsize::new(0)),
        })
    }

    fn state(s: &Shared) -> BarrierState<'_> {
        BarrierState::attach(&s.words, &s.openers, s.n)
    }

    /// A blocking wait as the OS layer does it. `Ok(leader)`, or `Err(())` when broken.
    fn wait(s: &Shared) -> Result<bool, ()> {
        let state = state(s);
        let generation = match state.arrive().expect("well formed") {
            Arrival::Leader { wake } => {
                s.futex.wake(state.word(), wake);
                return Ok(true);
            }
            Arrival::Broken => return Err(()),
            Arrival::Wait { generation } => generation,
        };
        loop {
            let epoch = s.board.epoch();
            match state.wait_step(generation, &s.board).expect("well formed") {
                WaitStep::Passed => return Ok(false),
                WaitStep::Broken { wake } => {
                    s.futex.wake(state.word(), wake);
                    return Err(());
                }
                WaitStep::Park { expected } => s
                    .futex
                    .park(&[(state.word(), expected), (&s.board.epoch, epoch)]),
            }
        }
    }

    /// `rounds` rounds of the participant `me`: write the round, wait, check that every other
    /// participant has written it too. Returns how many rounds it led.
    fn participate(s: &Shared, me: u32, tags: &[u32], rounds: usize) -> usize {
        let mut led = 0;
        for round in 1..=rounds {
            s.written[me as usize].store(round, Ordering::Relaxed);
            if wait(s).expect("not broken") {
                led += 1;
            }
            for &tag in tags {
                assert!(
                    s.written[tag as usize].load(Ordering::Relaxed) >= round,
                    "the write of {tag} before round {round} is visible"
                );
            }
        }
        led
    }

    fn open_all(s: &Shared, tags: &[u32]) {
        for &tag in tags {
            state(s).register(tag).expect("a free slot");
        }
    }

    /// Two participants, two rounds: one leader per round, and every write before a round is
    /// seen after it.
    pub(super) fn two_participants_two_rounds() {
        let tags = [1, 2];
        let s = shared(2);
        open_all(&s, &tags);
        let s2 = Arc::clone(&s);
        let other = thread::spawn(move || participate(&s2, 2, &tags, 2));
        let mine = participate(&s, 1, &tags, 2);
        let theirs = other.join().expect("participant");
        assert_eq!(mine + theirs, 2, "one leader per round");
        assert_eq!(s.words.arrived.load(Ordering::Relaxed), 0);
        assert_eq!(s.words.generation.load(Ordering::Relaxed), 2);
    }

    /// Three participants, one round: exactly one leader.
    pub(super) fn three_participants_one_round() {
        let tags = [1, 2, 3];
        let s = shared(3);
        open_all(&s, &tags);
        let others: Vec<_> = [2, 3]
            .into_iter()
            .map(|me| {
                let s = Arc::clone(&s);
                thread::spawn(move || participate(&s, me, &tags, 1))
            })
            .collect();
        let mut leaders = participate(&s, 1, &tags, 1);
        for o in others {
            leaders += o.join().expect("participant");
        }
        assert_eq!(leaders, 1);
    }

    /// A participant dies before it arrives: the other, asleep or not yet, gets `Broken`, and
    /// so does every later wait.
    pub(super) fn a_death_breaks_the_barrier() {
        let s = shared(2);
        open_all(&s, &[1, 2]);
        let s2 = Arc::clone(&s);
        let dying = thread::spawn(move || s2.board.die(1, &s2.futex));
        assert_eq!(wait(&s), Err(()));
        dying.join().expect("dying");
        assert!(state(&s).is_broken());
        assert_eq!(wait(&s), Err(()));
    }

    /// Two participants of three wait while the third dies: both fail, whichever breaks it.
    pub(super) fn a_death_breaks_every_waiter() {
        let s = shared(3);
        open_all(&s, &[1, 2, 3]);
        let s2 = Arc::clone(&s);
        let waiter = thread::spawn(move || wait(&s2));
        let s3 = Arc::clone(&s);
        let dying = thread::spawn(move || s3.board.die(3, &s3.futex));
        assert_eq!(wait(&s), Err(()));
        assert_eq!(waiter.join().expect("waiter"), Err(()));
        dying.join().expect("dying");
    }

    /// An opener is already dead when the last two participants of a round arrive: either
    /// the round completes (the waiter passes before it looks at the openers, and one leads)
    /// or the waiter breaks the barrier and the last arrival fails too; never one of each.
    pub(super) fn a_death_races_the_last_arrival() {
        let s = shared(2);
        open_all(&s, &[1, 2, 3]);
        s.board.die(3, &s.futex);
        let s2 = Arc::clone(&s);
        let other = thread::spawn(move || wait(&s2));
        let mine = wait(&s);
        let theirs = other.join().expect("participant");
        match (mine, theirs) {
            (Ok(a), Ok(b)) => assert!(a ^ b, "one leader"),
            (Err(()), Err(())) => assert!(state(&s).is_broken()),
            outcome => panic!("one passed and one failed: {outcome:?}"),
        }
    }
}

#[cfg(all(test, netmcore_loom))]
mod loom_barrier {
    use super::scenarios;

    #[test]
    fn loom_two_participants_two_rounds() {
        loom::model(scenarios::two_participants_two_rounds);
    }

    #[test]
    fn loom_three_participants_one_round() {
        loom::model(scenarios::three_participants_one_round);
    }

    #[test]
    fn loom_a_death_breaks_the_barrier() {
        loom::model(scenarios::a_death_breaks_the_barrier);
    }

    #[test]
    fn loom_a_death_breaks_every_waiter() {
        loom::model(scenarios::a_death_breaks_every_waiter);
    }

    #[test]
    fn loom_a_death_races_the_last_arrival() {
        loom::model(scenarios::a_death_races_the_last_arrival);
    }
}

#[cfg(all(test, not(netmcore_loom)))]
mod tests {
    use super::*;
    use crate::protocol::NoDeaths;

    #[test]
    fn scenarios_pass_with_threads() {
        for _ in 0..200 {
            scenarios::two_participants_two_rounds();
            scenarios::three_participants_one_round();
            scenarios::a_death_breaks_the_barrier();
            scenarios::a_death_breaks_every_waiter();
            scenarios::a_death_races_the_last_arrival();
        }
    }

    fn table(slots: usize) -> Vec<AtomicU32> {
        (0..slots).map(|_| AtomicU32::new(0)).collect()
    }

    #[test]
    fn openers_register_and_unregister() {
        assert_eq!(opener_slots(2), Some(12));
        assert_eq!(opener_slots(u32::MAX), Some(2 * u32::MAX as usize + 8));
        let words = BarrierWords::new();
        let openers = table(2);
        let state = BarrierState::attach(&words, &openers, 2);
        assert_eq!(state.register(5), Ok(0));
        assert_eq!(state.register(6), Ok(1));
        assert_eq!(state.register(7), Err(NoFreeSlot));
        assert!(state.unregister(0, 6).is_err(), "not 6's slot");
        assert!(state.unregister(9, 6).is_err(), "no such slot");
        assert_eq!(state.unregister(0, 5), Ok(()));
        assert_eq!(state.register(7), Ok(0));
    }

    #[test]
    fn the_last_arrival_leads_and_resets() {
        let words = BarrierWords::new();
        let openers = table(12);
        let state = BarrierState::attach(&words, &openers, 2);
        assert_eq!(state.arrive(), Ok(Arrival::Wait { generation: 0 }));
        assert_eq!(
            state.wait_step(0, &NoDeaths),
            Ok(WaitStep::Park { expected: 0 })
        );
        assert_eq!(state.arrive(), Ok(Arrival::Leader { wake: Wake::All }));
        assert_eq!(state.wait_step(0, &NoDeaths), Ok(WaitStep::Passed));
        assert_eq!(words.arrived.load(Ordering::Relaxed), 0);
        assert_eq!(words.generation.load(Ordering::Relaxed), 1);
        // A barrier of one (or zero) leads every time.
        let single = BarrierState::attach(&words, &openers, 0);
        assert_eq!(single.arrive(), Ok(Arrival::Leader { wake: Wake::All }));
        // The round counter wraps within its 31 bits.
        words.generation.store(ROUNDS, Ordering::Relaxed);
        assert_eq!(single.arrive(), Ok(Arrival::Leader { wake: Wake::All }));
        assert_eq!(words.generation.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_dead_opener_breaks_the_round_for_good() {
        struct SixDead;
        impl Peers for SixDead {
            fn is_dead(&self, tag: u32) -> bool {
                tag == 6
            }
        }
        let words = BarrierWords::new();
        let openers = table(12);
        let state = BarrierState::attach(&words, &openers, 3);
        state.register(5).expect("slot");
        state.register(6).expect("slot");
        assert_eq!(state.arrive(), Ok(Arrival::Wait { generation: 0 }));
        assert_eq!(
            state.wait_step(0, &SixDead),
            Ok(WaitStep::Broken { wake: Wake::All })
        );
        assert!(state.is_broken());
        // Whoever looks next needs not wake anyone; new arrivals fail at once.
        assert_eq!(
            state.wait_step(0, &NoDeaths),
            Ok(WaitStep::Broken { wake: Wake::None })
        );
        assert_eq!(state.arrive(), Ok(Arrival::Broken));
    }

    #[test]
    fn a_round_that_completed_before_the_break_has_passed() {
        let words = BarrierWords::new();
        let openers = table(12);
        let state = BarrierState::attach(&words, &openers, 2);
        words.generation.store(4 | BROKEN, Ordering::Relaxed);
        assert_eq!(state.wait_step(3, &NoDeaths), Ok(WaitStep::Passed));
        assert_eq!(
            state.wait_step(4, &NoDeaths),
            Ok(WaitStep::Broken { wake: Wake::None })
        );
    }

    #[test]
    fn corrupt_words_are_reported() {
        let words = BarrierWords::new();
        let openers = table(12);
        let state = BarrierState::attach(&words, &openers, 2);
        words.arrived.store(2, Ordering::Relaxed);
        assert!(state.arrive().is_err(), "a third arrival in a round of two");
        openers[3].store(1 << 30, Ordering::Relaxed);
        let err = state.wait_step(0, &NoDeaths).expect_err("not a tag");
        assert_eq!(err.value, 1 << 30);
    }
}
