//! The atomics protocol of the claims table, without the futex.
//!
//! A `SharedVec` (or the rows of a `SharedMatrix`) is written in a phase of exclusive,
//! disjoint claims, checked across processes like a `RefCell`, then frozen and read by all.
//! The table that keeps the claims:
//!
//! * a **lock word** with the mutex protocol (`mutex::state`): a holder that died is taken
//!   over, and needs no repair, because every change below leaves the table consistent at
//!   every instant;
//! * a **flags word**: `0`, or `FROZEN`, set once and for good;
//! * fixed **slots** of `{owner tag, start, end}`; a slot is live while its owner is not 0.
//!
//! **claim(range)**, under the lock: free every slot whose owner is dead; refuse if frozen;
//! refuse if the range overlaps a live slot (reporting it); take a free slot, writing `start`
//! and `end` first and the owner last, so that a claimer that dies half-way leaves a free slot.
//! Refuse when no slot is free.
//!
//! **release**, without the lock: a CAS of the owner from the caller's tag to 0 (`Release`).
//! Only a lock holder ever takes a free slot or frees a dead owner's, so the owner's own
//! release never races with a change of its slot; and the owner is read with `Acquire`, so a
//! later claim of the same elements, and the freeze, see what the released claim wrote.
//!
//! **freeze**, under the lock: free dead owners' slots; refuse while a live claim remains
//! (busy); set `FROZEN` with `Release`. Readers check it with `Acquire` before they read the
//! elements in place, so they see every write of every claim.
//!
//! Every word read is untrusted: an owner that is not a tag, a live slot whose range is
//! reversed or beyond the vector, a flags word other than `0` or `FROZEN` are reported as
//! [`BadState`], never obeyed.

use std::ops::Range;

use crate::mutex::state::{self as mutex, LockStep, Locking};
use crate::protocol::{BadState, NOBODY, Peers, Wake, is_tag};
use crate::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// The value of the flags word once the vector is frozen.
pub(crate) const FROZEN: u32 = 1;

/// The words of a claims table, as laid out in its segment (the slots follow them).
#[repr(C)]
pub(crate) struct ClaimsWords {
    /// The lock word (the mutex protocol).
    pub(crate) lock: AtomicU32,
    /// `0`, or [`FROZEN`].
    pub(crate) flags: AtomicU32,
}

/// One slot of a claims table.
#[repr(C)]
pub(crate) struct ClaimSlot {
    /// The tag of the claiming process; 0 for a free slot.
    pub(crate) owner: AtomicU32,
    /// Unused; keeps `start` and `end` 8-aligned.
    pub(crate) reserved: AtomicU32,
    /// The first element (or row) of the claim.
    pub(crate) start: AtomicU64,
    /// One past the last element (or row) of the claim.
    pub(crate) end: AtomicU64,
}

#[cfg(test)]
impl ClaimsWords {
    /// The state of zeroed memory: unlocked, not frozen.
    pub(crate) fn new() -> ClaimsWords {
        ClaimsWords {
            lock: AtomicU32::new(0),
            flags: AtomicU32::new(0),
        }
    }
}

#[cfg(test)]
impl ClaimSlot {
    /// The state of zeroed memory: free.
    pub(crate) fn new() -> ClaimSlot {
        ClaimSlot {
            owner: AtomicU32::new(0),
            reserved: AtomicU32::new(0),
            start: AtomicU64::new(0),
            end: AtomicU64::new(0),
        }
    }
}

/// Why a claim was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClaimRefused {
    /// The range is reversed or reaches beyond the vector.
    OutOfBounds,
    /// The vector is frozen.
    Frozen,
    /// The range overlaps the live claim `held`.
    Overlap {
        /// The live claim.
        held: Range<u64>,
    },
    /// Every slot holds a live claim.
    Full,
    /// The table is corrupt.
    Bad(BadState),
}

impl From<BadState> for ClaimRefused {
    fn from(bad: BadState) -> ClaimRefused {
        ClaimRefused::Bad(bad)
    }
}

/// Why a freeze was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FreezeRefused {
    /// A live claim remains.
    Busy,
    /// The table is corrupt.
    Bad(BadState),
}

impl From<BadState> for FreezeRefused {
    fn from(bad: BadState) -> FreezeRefused {
        FreezeRefused::Bad(bad)
    }
}

/// The protocol over the words and slots of a claims table for a vector of `len` elements
/// (or a matrix of `len` rows).
#[derive(Clone, Copy)]
pub(crate) struct ClaimsTable<'a> {
    words: &'a ClaimsWords,
    slots: &'a [ClaimSlot],
    len: u64,
}

impl<'a> ClaimsTable<'a> {
    /// The table in `words` and `slots` of a vector of `len`, as it is.
    pub(crate) fn attach(
        words: &'a ClaimsWords,
        slots: &'a [ClaimSlot],
        len: u64,
    ) -> ClaimsTable<'a> {
        ClaimsTable { words, slots, len }
    }

    /// The lock word, the one to sleep on and wake.
    pub(crate) fn lock_word(&self) -> &'a AtomicU32 {
        &self.words.lock
    }

    /// A step of taking the table's lock (the mutex protocol, without poison: the table is
    /// consistent whenever a holder dies).
    ///
    /// # Errors
    ///
    /// [`BadState`] for a corrupt lock word.
    pub(crate) fn lock_step(
        &self,
        locking: &mut Locking,
        me: u32,
        peers: &impl Peers,
    ) -> Result<LockStep, BadState> {
        locking.step(&self.words.lock, me, peers)
    }

    /// Gives the table's lock back; says whether a sleeper must be woken.
    ///
    /// # Errors
    ///
    /// [`BadState`] if the lock word does not hold `me`.
    pub(crate) fn unlock(&self, me: u32) -> Result<Wake, BadState> {
        mutex::unlock(&self.words.lock, me)
    }

    /// Whether the vector is frozen (`Acquire`: what the claims wrote is visible after).
    ///
    /// # Errors
    ///
    /// [`BadState`] for a flags word other than `0` or [`FROZEN`].
    pub(crate) fn is_frozen(&self) -> Result<bool, BadState> {
        match self.words.flags.load(Ordering::Acquire) {
            0 => Ok(false),
            FROZEN => Ok(true),
            other => Err(BadState::new("claims flags word", other)),
        }
    }

    /// Claims `range` for `me`; the caller holds the lock. Returns the slot, which
    /// [`release`](Self::release) takes back.
    ///
    /// # Errors
    ///
    /// See [`ClaimRefused`].
    pub(crate) fn claim_locked(
        &self,
        me: u32,
        peers: &impl Peers,
        range: Range<u64>,
    ) -> Result<usize, ClaimRefused> {
        debug_assert!(me != NOBODY && is_tag(me), "bad own tag {me:#x}");
        if range.start > range.end || range.end > self.len {
            return Err(ClaimRefused::OutOfBounds);
        }
        if self.is_frozen()? {
            return Err(ClaimRefused::Frozen);
        }
        let mut free = None;
        for (at, slot) in self.slots.iter().enumerate() {
            match self.live_range(slot, peers)? {
                None => {
                    free.get_or_insert(at);
                }
                Some(held) => {
                    if held.start.max(range.start) < held.end.min(range.end) {
                        return Err(ClaimRefused::Overlap { held });
                    }
                }
            }
        }
        let at = free.ok_or(ClaimRefused::Full)?;
        let slot = &self.slots[at];
        slot.start.store(range.start, Ordering::Relaxed);
        slot.end.store(range.end, Ordering::Relaxed);
        slot.owner.store(me, Ordering::Relaxed);
        Ok(at)
    }

    /// Takes back the claim in `slot` that [`claim_locked`](Self::claim_locked) gave `me`.
    /// Needs no lock.
    ///
    /// # Errors
    ///
    /// [`BadState`] if the slot does not exist or does not hold `me` (nothing is changed).
    pub(crate) fn release(&self, slot: usize, me: u32) -> Result<(), BadState> {
        let Some(word) = self.slots.get(slot).map(|s| &s.owner) else {
            return Err(BadState::new("claim slot out of the table", slot as u64));
        };
        word.compare_exchange(me, NOBODY, Ordering::Release, Ordering::Relaxed)
            .map(drop)
            .map_err(|found| BadState::new("claim slot that does not hold its process", found))
    }

    /// Freezes the vector if no live claim remains; the caller holds the lock. Freezing a
    /// frozen vector does nothing.
    ///
    /// # Errors
    ///
    /// See [`FreezeRefused`].
    pub(crate) fn freeze_locked(&self, peers: &impl Peers) -> Result<(), FreezeRefused> {
        if self.is_frozen()? {
            return Ok(());
        }
        for slot in self.slots {
            if self.live_range(slot, peers)?.is_some() {
                return Err(FreezeRefused::Busy);
            }
        }
        self.words.flags.store(FROZEN, Ordering::Release);
        Ok(())
    }

    /// The range of a live claim in `slot`, or `None` for a free slot; frees the slot of a
    /// dead owner (the caller holds the lock).
    fn live_range(
        &self,
        slot: &ClaimSlot,
        peers: &impl Peers,
    ) -> Result<Option<Range<u64>>, BadState> {
        let owner = slot.owner.load(Ordering::Acquire);
        if !is_tag(owner) {
            return Err(BadState::new("claim slot owner that is not a tag", owner));
        }
        if owner == NOBODY {
            return Ok(None);
        }
        if peers.is_dead(owner) {
            slot.owner.store(NOBODY, Ordering::Relaxed);
            return Ok(None);
        }
        let (start, end) = (
            slot.start.load(Ordering::Relaxed),
            slot.end.load(Ordering::Relaxed),
        );
        if start > end {
            return Err(BadState::new("claim slot with a reversed range", start));
        }
        if end > self.len {
            return Err(BadState::new("claim slot beyond the vector", end));
        }
        Ok(Some(start..end))
    }
}

/// Scenarios shared by the loom models and the tests with std threads.
#[cfg(test)]
mod scenarios {
    use super::*;
    use crate::sync::atomic::AtomicUsize;
    use crate::sync::{Arc, thread};
    use crate::testing::{Board, Futex};

    /// The length of the vector in the scenarios.
    const LEN: u64 = 8;

    struct Shared {
        words: ClaimsWords,
        slots: Vec<ClaimSlot>,
        board: Board,
        futex: Futex,
        /// The vector's elements, written under claims.
        elements: Vec<AtomicUsize>,
    }

    fn shared(slots: usize) -> Arc<Shared> {
        Arc::new(Shared {
            words: ClaimsWords::new(),
            slots: (0..slots).map(|_| ClaimSlot::new()).collect(),
            board: Board::new(),
            futex: Futex::new(),
            elements: (0..LEN).map(|_| AtomicUsize::new(0)).collect(),
        })
    }

    fn table(s: &Shared) -> ClaimsTable<'_> {
        ClaimsTable::attach(&s.words, &s.slots, LEN)
    }

    /// Runs `f` under the table's lock, taken and given back as the OS layer does.
    fn locked<R>(s: &Shared, me: u32, f: impl FnOnce(&ClaimsTable<'_>) -> R) -> R {
        let table = table(s);
        let mut locking = Locking::new();
        loop {
            let epoch = s.board.epoch();
            match table
                .lock_step(&mut locking, me, &s.board)
                .expect("well formed")
            {
                LockStep::Acquired { .. } => break,
                LockStep::Park { expected } => s
                    .futex
                    .park(&[(table.lock_word(), expected), (&s.board.epoch, epoch)]),
            }
        }
        let result = f(&table);
        let wake = table.unlock(me).expect("held");
        s.futex.wake(table.lock_word(), wake);
        result
    }

    fn claim(s: &Shared, me: u32, range: Range<u64>) -> Result<usize, ClaimRefused> {
        locked(s, me, |t| t.claim_locked(me, &s.board, range))
    }

    /// Writes `value` into the claimed elements, as a `Claim` does through `DerefMut`.
    fn write(s: &Shared, range: Range<u64>, value: usize) {
        for i in range {
            s.elements[i as usize].store(value, Ordering::Relaxed);
        }
    }

    /// Two processes claim overlapping ranges and keep them: exactly one gets its claim, the
    /// other is told which range it overlaps.
    pub(super) fn overlapping_claims_exclude_each_other() {
        let s = shared(4);
        let s2 = Arc::clone(&s);
        let other = thread::spawn(move || claim(&s2, 2, 2..6));
        let mine = claim(&s, 1, 0..4);
        let theirs = other.join().expect("claimer");
        match (mine, theirs) {
            (Ok(_), Err(ClaimRefused::Overlap { held })) => assert_eq!(held, 0..4),
            (Err(ClaimRefused::Overlap { held }), Ok(_)) => assert_eq!(held, 2..6),
            outcome => panic!("not exactly one claim: {outcome:?}"),
        }
    }

    /// A released claim's writes are seen by the next claimer of the same elements. The
    /// second claimer keeps its claim, so if both claims succeed, the first one was taken and
    /// released before the second.
    pub(super) fn a_released_claim_publishes_its_writes() {
        let s = shared(1);
        let s2 = Arc::clone(&s);
        let writer = thread::spawn(move || {
            let slot = claim(&s2, 1, 0..2)?;
            write(&s2, 0..2, 7);
            table(&s2).release(slot, 1).expect("mine");
            Ok::<(), ClaimRefused>(())
        });
        let mine = claim(&s, 2, 1..3);
        let seen = s.elements[1].load(Ordering::Relaxed);
        let theirs = writer.join().expect("writer");
        match (mine, theirs) {
            (Ok(_), Ok(())) => assert_eq!(seen, 7, "the released claim's write"),
            (Ok(_), Err(refused)) => assert_eq!(refused, ClaimRefused::Overlap { held: 1..3 }),
            (Err(refused), Ok(())) => assert_eq!(refused, ClaimRefused::Overlap { held: 0..2 }),
            outcome => panic!("{outcome:?}"),
        }
    }

    /// A claimer dies holding its claim: once it is known dead, its slot is taken back and
    /// the range can be claimed again.
    pub(super) fn a_dead_claimers_slot_is_reclaimed() {
        let s = shared(1);
        let s2 = Arc::clone(&s);
        let dying = thread::spawn(move || {
            match claim(&s2, 1, 0..4) {
                Ok(_) => {}
                Err(refused) => assert_eq!(refused, ClaimRefused::Overlap { held: 2..6 }),
            }
            s2.board.die(1, &s2.futex);
        });
        let first = claim(&s, 2, 2..6);
        dying.join().expect("dying");
        match first {
            // Before the dying claimer's claim (which was then refused), or after its death.
            Ok(_) => {}
            // Between the two: the claim was live.
            Err(ClaimRefused::Overlap { held }) => {
                assert_eq!(held, 0..4);
                claim(&s, 2, 2..6).expect("the dead claimer's slot is free again");
            }
            Err(other) => panic!("refused: {other:?}"),
        }
        assert_eq!(s.slots[0].owner.load(Ordering::Relaxed), 2);
    }

    /// A claimer dies holding the table's lock, half-way through writing a slot: the next
    /// claimer takes the lock over and finds a consistent table.
    pub(super) fn a_claimer_dying_under_the_lock_is_taken_over() {
        let s = shared(2);
        let s2 = Arc::clone(&s);
        let dying = thread::spawn(move || {
            locked_then_die(&s2, 1);
        });
        let slot = claim(&s, 2, 0..8).expect("the half-written slot was never live");
        table(&s).release(slot, 2).expect("mine");
        dying.join().expect("dying");
    }

    /// Takes the lock, writes a slot's range but not its owner, and dies.
    fn locked_then_die(s: &Shared, me: u32) {
        let table = table(s);
        let mut locking = Locking::new();
        loop {
            let epoch = s.board.epoch();
            match table
                .lock_step(&mut locking, me, &s.board)
                .expect("well formed")
            {
                LockStep::Acquired { .. } => break,
                LockStep::Park { expected } => s
                    .futex
                    .park(&[(table.lock_word(), expected), (&s.board.epoch, epoch)]),
            }
        }
        s.slots[0].start.store(0, Ordering::Relaxed);
        s.slots[0].end.store(8, Ordering::Relaxed);
        s.board.die(me, &s.futex);
    }

    /// A freeze races a claim: either the claim wins (and the freeze is busy) or the freeze
    /// wins (and the claim is refused), never both.
    pub(super) fn freeze_races_a_claim() {
        let s = shared(2);
        let s2 = Arc::clone(&s);
        let claimer = thread::spawn(move || claim(&s2, 2, 0..4));
        let frozen = locked(&s, 1, |t| t.freeze_locked(&s.board));
        let claimed = claimer.join().expect("claimer");
        match (claimed, frozen) {
            (Ok(_), Err(FreezeRefused::Busy)) => {
                assert_eq!(table(&s).is_frozen(), Ok(false));
            }
            (Err(ClaimRefused::Frozen), Ok(())) => {
                assert_eq!(table(&s).is_frozen(), Ok(true));
            }
            outcome => panic!("{outcome:?}"),
        }
    }
}

#[cfg(all(test, netmcore_loom))]
mod loom_claims {
    use super::scenarios;

    #[test]
    fn loom_overlapping_claims_exclude_each_other() {
        loom::model(scenarios::overlapping_claims_exclude_each_other);
    }

    #[test]
    fn loom_a_released_claim_publishes_its_writes() {
        loom::model(scenarios::a_released_claim_publishes_its_writes);
    }

    #[test]
    fn loom_a_dead_claimers_slot_is_reclaimed() {
        loom::model(scenarios::a_dead_claimers_slot_is_reclaimed);
    }

    #[test]
    fn loom_a_claimer_dying_under_the_lock_is_taken_over() {
        loom::model(scenarios::a_claimer_dying_under_the_lock_is_taken_over);
    }

    #[test]
    fn loom_freeze_races_a_claim() {
        loom::model(scenarios::freeze_races_a_claim);
    }
}

#[cfg(all(test, not(netmcore_loom)))]
mod tests {
    use super::*;
    use crate::protocol::NoDeaths;

    #[test]
    fn scenarios_pass_with_threads() {
        for _ in 0..200 {
            scenarios::overlapping_claims_exclude_each_other();
            scenarios::a_released_claim_publishes_its_writes();
            scenarios::a_dead_claimers_slot_is_reclaimed();
            scenarios::a_claimer_dying_under_the_lock_is_taken_over();
            scenarios::freeze_races_a_claim();
        }
    }

    struct Table {
        words: ClaimsWords,
        slots: Vec<ClaimSlot>,
    }

    fn new(slots: usize) -> Table {
        Table {
            words: ClaimsWords::new(),
            slots: (0..slots).map(|_| ClaimSlot::new()).collect(),
        }
    }

    impl Table {
        fn table(&self, len: u64) -> ClaimsTable<'_> {
            ClaimsTable::attach(&self.words, &self.slots, len)
        }
    }

    #[test]
    fn disjoint_claims_coexist_and_overlaps_are_refused() {
        let t = new(3);
        let table = t.table(10);
        assert_eq!(table.claim_locked(1, &NoDeaths, 0..4), Ok(0));
        assert_eq!(table.claim_locked(2, &NoDeaths, 4..10), Ok(1));
        assert_eq!(
            table.claim_locked(3, &NoDeaths, 3..5),
            Err(ClaimRefused::Overlap { held: 0..4 })
        );
        // Empty ranges overlap nothing.
        assert_eq!(table.claim_locked(3, &NoDeaths, 4..4), Ok(2));
        assert_eq!(
            table.claim_locked(3, &NoDeaths, 9..9),
            Err(ClaimRefused::Full)
        );
        assert_eq!(table.release(0, 1), Ok(()));
        assert_eq!(table.claim_locked(3, &NoDeaths, 1..2), Ok(0));
    }

    #[test]
    fn ranges_outside_the_vector_are_refused() {
        let t = new(2);
        let table = t.table(10);
        assert_eq!(
            table.claim_locked(1, &NoDeaths, 5..11),
            Err(ClaimRefused::OutOfBounds)
        );
        #[expect(
            clippy::reversed_empty_ranges,
            reason = "a reversed range is what is refused"
        )]
        let reversed = 6..5;
        assert_eq!(
            table.claim_locked(1, &NoDeaths, reversed),
            Err(ClaimRefused::OutOfBounds)
        );
        assert_eq!(table.claim_locked(1, &NoDeaths, 10..10), Ok(0));
    }

    #[test]
    fn release_checks_the_owner() {
        let t = new(2);
        let table = t.table(10);
        let slot = table.claim_locked(1, &NoDeaths, 0..4).expect("free");
        let err = table.release(slot, 2).expect_err("not 2's claim");
        assert_eq!(err.value, 1);
        assert!(table.release(7, 1).is_err(), "no such slot");
        assert_eq!(table.release(slot, 1), Ok(()));
        assert!(table.release(slot, 1).is_err(), "released twice");
    }

    #[test]
    fn freeze_waits_for_live_claims_and_ignores_dead_ones() {
        struct OneDead;
        impl Peers for OneDead {
            fn is_dead(&self, tag: u32) -> bool {
                tag == 1
            }
        }
        let t = new(2);
        let table = t.table(10);
        table.claim_locked(1, &NoDeaths, 0..4).expect("free");
        assert_eq!(table.freeze_locked(&NoDeaths), Err(FreezeRefused::Busy));
        assert_eq!(table.is_frozen(), Ok(false));
        // Process 1 died: its claim no longer counts, and its slot is freed.
        assert_eq!(table.freeze_locked(&OneDead), Ok(()));
        assert_eq!(t.slots[0].owner.load(Ordering::Relaxed), 0);
        assert_eq!(table.is_frozen(), Ok(true));
        assert_eq!(table.freeze_locked(&NoDeaths), Ok(()), "idempotent");
        assert_eq!(
            table.claim_locked(2, &NoDeaths, 0..1),
            Err(ClaimRefused::Frozen)
        );
    }

    #[test]
    fn a_dead_owners_slot_is_freed_by_the_next_claim() {
        struct OneDead;
        impl Peers for OneDead {
            fn is_dead(&self, tag: u32) -> bool {
                tag == 1
            }
        }
        let t = new(1);
        let table = t.table(10);
        table.claim_locked(1, &NoDeaths, 0..10).expect("free");
        assert_eq!(
            table.claim_locked(2, &NoDeaths, 5..6),
            Err(ClaimRefused::Overlap { held: 0..10 })
        );
        assert_eq!(table.claim_locked(2, &OneDead, 5..6), Ok(0));
        assert_eq!(t.slots[0].owner.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn corrupt_slots_and_flags_are_reported() {
        let t = new(2);
        let table = t.table(10);
        let refused = |range| match table.claim_locked(3, &NoDeaths, range) {
            Err(ClaimRefused::Bad(bad)) => bad,
            other => panic!("not reported as bad: {other:?}"),
        };
        // An owner that is not a tag.
        t.slots[1].owner.store(1 << 31, Ordering::Relaxed);
        assert_eq!(refused(0..1).value, 1 << 31);
        assert!(matches!(
            table.freeze_locked(&NoDeaths),
            Err(FreezeRefused::Bad(_))
        ));
        // A live slot with a reversed range.
        t.slots[1].owner.store(2, Ordering::Relaxed);
        t.slots[1].start.store(5, Ordering::Relaxed);
        t.slots[1].end.store(4, Ordering::Relaxed);
        assert_eq!(refused(0..1).value, 5);
        // A live slot beyond the vector.
        t.slots[1].end.store(11, Ordering::Relaxed);
        assert_eq!(refused(0..1).value, 11);
        // A free slot's range is never looked at.
        t.slots[1].owner.store(0, Ordering::Relaxed);
        assert_eq!(table.claim_locked(3, &NoDeaths, 0..1), Ok(0));
        // A flags word that is neither 0 nor FROZEN.
        t.words.flags.store(2, Ordering::Relaxed);
        assert_eq!(refused(1..2).value, 2);
        assert!(table.is_frozen().is_err());
    }
}
