//! The protocol of the hash tables, without the futex: one lock word (the mutex protocol of
//! [`crate::mutex::state`], a dead holder taken over) over an open-addressing table of slots.
//!
//! A table is `slots` entries (a power of two) of 64-bit words, linearly probed from the
//! key's hash:
//!
//! ```text
//! | state | key words ... | value words ... |
//! ```
//!
//! * `state` is [`EMPTY`], [`FULL`] or [`TOMBSTONE`]; any other value (a corrupt segment) is
//!   read as a tombstone: skipped by lookups, reused by inserts.
//! * Every write of a slot happens with the lock held; the lock is taken with `Acquire` and
//!   given back with `Release`.
//! * **Commit.** An insert of a new key writes the key and value words of a free slot first,
//!   then its state (`FULL`, with `Release`, for the readers below), then bumps `len`. A holder that dies before the state write
//!   leaves a free slot with stray words (nothing inserted); one that dies after it leaves the
//!   key inserted, and the `len` that the next holder recounts when it takes the lock over
//!   ([`Table::repair`]). A replace writes the value words in place: a holder that dies in the
//!   middle of one leaves a torn value, which is still a valid value of a `Plain` type.
//! * **Remove** writes `TOMBSTONE` (one word: atomic with respect to a death), so that probe
//!   chains stay intact; or, when the next slot is empty, `EMPTY`, and turns the tombstones
//!   right before it empty too, so that chains do not grow for nothing.
//! * `len` never exceeds the capacity the user asked for; an insert of a new key into a full
//!   table is [`Full`] and changes nothing.
//!
//! **Readers without the lock** ([`Table::read`]). A lookup may probe without the lock, as a
//! seqlock reader: every write that could make a concurrent probe answer wrongly — a remove
//! (a `FULL` slot freed, whose words a later insert rewrites; tombstones emptied, which ends
//! chains), a replace (value words rewritten in place) — is a *change*, bracketed by the
//! `version` word: made odd before (then a `Release` fence), even again after (`Release`).
//! An insert of a new key is not a change: it only turns a free slot `FULL` after its words,
//! so a reader that loads the state with `Acquire` and sees `FULL` sees the words. It writes
//! the words after a `Release` fence, though: the slot may have been freed by a remove of
//! another process, and a reader that read the old `FULL` and then one of the new words must
//! see that remove's odd `version` on its second load (the fence orders the remove, which the
//! lock put before this insert, before the words the reader saw). A reader
//! loads `version` (`Acquire`), probes, fences (`Acquire`) and loads `version` again; its
//! answer stands only if both loads saw the same even value, and otherwise it takes the lock
//! and asks again. A holder that dies in the middle of a change leaves `version` odd, so
//! readers take the lock, and the takeover ([`Table::repair`]) makes it even again. The
//! version word is on a cache line of its own, so that readers do not share one with the
//! lock word that every locker writes.

use crate::mutex::state::{LockStep, Locking, WAITERS};
use crate::protocol::{BadState, Peers, Wake};
use crate::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

/// A slot that never held a key since the table was made (or since the chain after it ended).
pub(crate) const EMPTY: u64 = 0;
/// A slot that holds a key and its value.
pub(crate) const FULL: u64 = 1;
/// A slot whose key was removed: lookups probe past it, inserts reuse it.
pub(crate) const TOMBSTONE: u64 = 2;

/// The words of a hash table, as laid out in its segment: the lockers' words, then the
/// readers' `version` on a cache line of its own.
#[repr(C, align(64))]
pub(crate) struct MapWords {
    /// The lock word (the mutex protocol: `0` free, else the holder's tag and `WAITERS`).
    pub(crate) lock: AtomicU32,
    /// How many slots are `FULL`; exact while the lock is held, except just after a takeover
    /// (which recounts it).
    pub(crate) len: AtomicU32,
    _pad0: [AtomicU64; 7],
    /// Even while no change is under way, odd during one (see the module docs).
    pub(crate) version: AtomicU64,
    _pad1: [AtomicU64; 7],
}

impl MapWords {
    /// Unlocked and empty: the state of zeroed memory.
    #[cfg(test)]
    pub(crate) fn new() -> MapWords {
        MapWords {
            lock: AtomicU32::new(0),
            len: AtomicU32::new(0),
            _pad0: std::array::from_fn(|_| AtomicU64::new(0)),
            version: AtomicU64::new(0),
            _pad1: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// An insert of a new key into a table that holds its capacity already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full;

/// The proof that the caller holds the table's lock: only [`Table::lock_step`] and
/// [`Table::seize`] make one, and [`Table::unlock`] consumes it.
#[derive(Debug)]
pub(crate) struct Locked {
    me: u32,
}

/// What a step of [`Table::lock_step`] leads to.
#[derive(Debug)]
pub(crate) enum MapStep {
    /// The caller holds the lock. `took_over`: from a dead holder (the table was repaired).
    Locked {
        /// The proof of the lock.
        locked: Locked,
        /// The previous holder died holding it.
        took_over: bool,
    },
    /// Sleep while the lock word holds `expected` (and the epoch is unchanged), then step
    /// again.
    Park {
        /// The value to sleep on.
        expected: u32,
    },
}

/// What a reader without the lock learnt (see [`Table::read`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Read {
    /// The key is there; its value was copied out.
    Found,
    /// The key is not there.
    Absent,
    /// A change ran meanwhile (or one was left under way by a dead holder): ask again under
    /// the lock.
    Retry,
}

/// Where a probe for a key ended.
enum Probe {
    /// The key is in this slot.
    Found(usize),
    /// The key is absent; this is the first slot it could go to, if any.
    Absent(Option<usize>),
}

/// The protocol over the words and slots of one table.
#[derive(Clone, Copy)]
pub(crate) struct Table<'a> {
    words: &'a MapWords,
    slots: &'a [AtomicU64],
    key_words: usize,
    value_words: usize,
    capacity: u32,
}

/// FNV-1a over `bytes`: the same in every process, whatever its address space or seed.
pub(crate) fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl<'a> Table<'a> {
    /// The table in `words` and `slots` (entries of `1 + key_words + value_words` words), for
    /// at most `capacity` keys.
    pub(crate) fn attach(
        words: &'a MapWords,
        slots: &'a [AtomicU64],
        key_words: usize,
        value_words: usize,
        capacity: u32,
    ) -> Table<'a> {
        Table {
            words,
            slots,
            key_words,
            value_words,
            capacity,
        }
    }

    /// The lock word, the one to sleep on and wake.
    pub(crate) fn lock_word(&self) -> &'a AtomicU32 {
        &self.words.lock
    }

    /// Words of one entry.
    fn entry(&self) -> usize {
        1 + self.key_words + self.value_words
    }

    /// The number of slots (whole entries that fit).
    fn slot_count(&self) -> usize {
        self.slots.len() / self.entry()
    }

    /// The words of slot `i` (`i < slot_count`).
    fn slot(&self, i: usize) -> &'a [AtomicU64] {
        let at = i * self.entry();
        &self.slots[at..at + self.entry()]
    }

    /// A step of a blocking lock (see [`Locking::step`]); a takeover repairs the table.
    ///
    /// # Errors
    ///
    /// [`BadState`] for a corrupt lock word (the caller then [`seize`](Table::seize)s it).
    pub(crate) fn lock_step(
        &self,
        locking: &mut Locking,
        me: u32,
        peers: &impl Peers,
    ) -> Result<MapStep, BadState> {
        Ok(match locking.step(&self.words.lock, me, peers)? {
            LockStep::Acquired { took_over } => {
                if took_over {
                    self.repair();
                }
                MapStep::Locked {
                    locked: Locked { me },
                    took_over,
                }
            }
            LockStep::Park { expected } => MapStep::Park { expected },
        })
    }

    /// Takes a lock word that no state of the protocol allows (the segment was written by
    /// something else), and repairs the table: the lock is the caller's.
    pub(crate) fn seize(&self, me: u32) -> Locked {
        let lock = &self.words.lock;
        let mut found = lock.load(Ordering::Relaxed);
        while let Err(now) =
            lock.compare_exchange(found, me | WAITERS, Ordering::Acquire, Ordering::Relaxed)
        {
            found = now;
        }
        self.repair();
        Locked { me }
    }

    /// Gives the lock back; says whether a sleeper must be woken.
    ///
    /// # Errors
    ///
    /// [`BadState`] if the lock word no longer holds the caller (the segment is corrupt).
    pub(crate) fn unlock(&self, locked: Locked) -> Result<Wake, BadState> {
        crate::mutex::state::unlock(&self.words.lock, locked.me)
    }

    /// Recounts `len` from the slots, after a holder died at any point of an operation, and
    /// ends the change it may have left under way.
    fn repair(&self) {
        let version = self.words.version.load(Ordering::Relaxed);
        if version % 2 == 1 {
            self.words
                .version
                .store(version.wrapping_add(1), Ordering::Release);
        }
        let full = (0..self.slot_count())
            .filter(|&i| self.slot(i)[0].load(Ordering::Relaxed) == FULL)
            .count();
        let len = u32::try_from(full).unwrap_or(u32::MAX);
        self.words.len.store(len, Ordering::Relaxed);
    }

    /// Starts a change (see the module docs): `version` odd, then a fence that orders it
    /// before the writes of the change. Returns the odd value, for [`Table::end_change`].
    fn begin_change(&self) -> u64 {
        let odd = self.words.version.load(Ordering::Relaxed) | 1;
        self.words.version.store(odd, Ordering::Relaxed);
        fence(Ordering::Release);
        odd
    }

    /// Ends the change that [`Table::begin_change`] started: `version` even again, after the
    /// writes of the change.
    fn end_change(&self, odd: u64) {
        self.words
            .version
            .store(odd.wrapping_add(1), Ordering::Release);
    }

    /// `len`, recounted first if it exceeds the capacity (a corrupt word).
    fn checked_len(&self) -> u32 {
        let len = self.words.len.load(Ordering::Relaxed);
        if len <= self.capacity {
            return len;
        }
        self.repair();
        self.words.len.load(Ordering::Relaxed)
    }

    /// Whether slot `i` holds `key`.
    fn holds(&self, i: usize, key: &[u64]) -> bool {
        let slot = self.slot(i);
        slot[1..=self.key_words]
            .iter()
            .zip(key)
            .all(|(w, k)| w.load(Ordering::Relaxed) == *k)
    }

    /// Probes for `key` (of hash `hash`) from its home slot, with the lock held.
    fn probe(&self, key: &[u64], hash: u64, _: &Locked) -> Probe {
        self.find(key, hash)
    }

    /// Probes for `key` (of hash `hash`) from its home slot, with or without the lock. Each
    /// state is loaded with `Acquire`, so that a reader without the lock that sees `FULL` sees
    /// the words written before it (see the module docs); under the lock it costs nothing more.
    fn find(&self, key: &[u64], hash: u64) -> Probe {
        let n = self.slot_count();
        if n == 0 || key.len() != self.key_words {
            return Probe::Absent(None);
        }
        // `n` is a power of two in every layout; `%` keeps a corrupt one in bounds too.
        let home = usize::try_from(hash % n as u64).unwrap_or(0);
        let mut free = None;
        for step in 0..n {
            let i = (home + step) % n;
            match self.slot(i)[0].load(Ordering::Acquire) {
                EMPTY => return Probe::Absent(free.or(Some(i))),
                FULL if self.holds(i, key) => return Probe::Found(i),
                FULL => {}
                _ => {
                    free = free.or(Some(i));
                }
            }
        }
        Probe::Absent(free)
    }

    /// Copies the value words of slot `i` into `out`.
    fn read_value(&self, i: usize, out: &mut [u64]) {
        let values = &self.slot(i)[1 + self.key_words..];
        for (o, w) in out.iter_mut().zip(values) {
            *o = w.load(Ordering::Relaxed);
        }
    }

    /// Inserts `key` with `value`. If the key was there, its value is replaced and the old
    /// one copied into `old` (`Ok(true)`); a new key is `Ok(false)`.
    ///
    /// # Errors
    ///
    /// [`Full`] for a new key when the table holds its capacity (nothing is changed).
    pub(crate) fn insert(
        &self,
        key: &[u64],
        hash: u64,
        value: &[u64],
        old: &mut [u64],
        locked: &Locked,
    ) -> Result<bool, Full> {
        match self.probe(key, hash, locked) {
            Probe::Found(i) => {
                self.read_value(i, old);
                let values = &self.slot(i)[1 + self.key_words..];
                if !values.is_empty() {
                    let change = self.begin_change();
                    for (w, v) in values.iter().zip(value) {
                        w.store(*v, Ordering::Relaxed);
                    }
                    self.end_change(change);
                }
                Ok(true)
            }
            Probe::Absent(free) => {
                let len = self.checked_len();
                let Some(i) = free.filter(|_| len < self.capacity) else {
                    return Err(Full);
                };
                let slot = self.slot(i);
                // A reader that sees one of these words must also see the change that freed
                // the slot, if another locker made it (see the module docs).
                fence(Ordering::Release);
                for (w, k) in slot[1..].iter().zip(key.iter().chain(value)) {
                    w.store(*k, Ordering::Relaxed);
                }
                // The commit point: before it the slot is free, after it the key is in (and a
                // reader that sees it sees the words).
                slot[0].store(FULL, Ordering::Release);
                self.words.len.store(len + 1, Ordering::Relaxed);
                Ok(false)
            }
        }
    }

    /// Looks `key` (of hash `hash`) up without the lock, copying its value into `out` if it is
    /// there: [`Read::Found`] or [`Read::Absent`] if no change ran meanwhile, else
    /// [`Read::Retry`] (and `out` may hold anything).
    pub(crate) fn read(&self, key: &[u64], hash: u64, out: &mut [u64]) -> Read {
        let before = self.words.version.load(Ordering::Acquire);
        if before % 2 == 1 {
            return Read::Retry;
        }
        let found = match self.find(key, hash) {
            Probe::Found(i) => {
                self.read_value(i, out);
                Read::Found
            }
            Probe::Absent(_) => Read::Absent,
        };
        fence(Ordering::Acquire);
        if self.words.version.load(Ordering::Relaxed) == before {
            found
        } else {
            Read::Retry
        }
    }

    /// Copies the value of `key` into `out`; whether it was there.
    pub(crate) fn get(&self, key: &[u64], hash: u64, out: &mut [u64], locked: &Locked) -> bool {
        match self.probe(key, hash, locked) {
            Probe::Found(i) => {
                self.read_value(i, out);
                true
            }
            Probe::Absent(_) => false,
        }
    }

    /// Removes `key`, copying its value into `out`; whether it was there.
    pub(crate) fn remove(&self, key: &[u64], hash: u64, out: &mut [u64], locked: &Locked) -> bool {
        let Probe::Found(i) = self.probe(key, hash, locked) else {
            return false;
        };
        self.read_value(i, out);
        let change = self.begin_change();
        let n = self.slot_count();
        let next_empty = self.slot((i + 1) % n)[0].load(Ordering::Relaxed) == EMPTY;
        if next_empty {
            // No probe chain goes on past an empty slot, so this slot and the tombstones
            // right before it end no chain: they become empty (one word each, so a death in
            // the middle leaves some tombstones, which are still correct).
            self.slot(i)[0].store(EMPTY, Ordering::Relaxed);
            let mut j = i;
            for _ in 1..n {
                j = (j + n - 1) % n;
                let state = &self.slot(j)[0];
                if state.load(Ordering::Relaxed) != TOMBSTONE {
                    break;
                }
                state.store(EMPTY, Ordering::Relaxed);
            }
        } else {
            self.slot(i)[0].store(TOMBSTONE, Ordering::Relaxed);
        }
        self.end_change(change);
        let len = self.checked_len();
        self.words
            .len
            .store(len.saturating_sub(1), Ordering::Relaxed);
        true
    }

    /// How many keys the table holds: never more than its capacity, even in a corrupt
    /// segment.
    pub(crate) fn len(&self, _: &Locked) -> usize {
        let len = self.checked_len().min(self.capacity);
        // A u32 always fits a usize on the targets netmcore builds for.
        usize::try_from(len).unwrap_or(usize::MAX)
    }

    /// Calls `f` with the key and value words of every key, in slot order.
    pub(crate) fn for_each(&self, _: &Locked, mut f: impl FnMut(&[u64], &[u64])) {
        let mut key = vec![0; self.key_words];
        let mut value = vec![0; self.value_words];
        for i in 0..self.slot_count() {
            let slot = self.slot(i);
            if slot[0].load(Ordering::Relaxed) != FULL {
                continue;
            }
            for (k, w) in key.iter_mut().zip(&slot[1..]) {
                *k = w.load(Ordering::Relaxed);
            }
            self.read_value(i, &mut value);
            f(&key, &value);
        }
    }
}

/// Scenarios shared by the loom models and the tests with std threads: tables of 4 slots of
/// one key word and one value word.
#[cfg(test)]
pub(crate) mod scenarios {
    use super::*;
    use crate::sync::{Arc, thread};
    use crate::testing::{Board, Futex};

    /// Slots of the scenarios.
    const SLOTS: usize = 4;

    pub(crate) struct Shared {
        pub(crate) words: MapWords,
        pub(crate) slots: Vec<AtomicU64>,
        pub(crate) board: Board,
        pub(crate) futex: Futex,
    }

    pub(crate) fn shared() -> Arc<Shared> {
        Arc::new(Shared {
            words: MapWords::new(),
            slots: (0..SLOTS * 3).map(|_| AtomicU64::new(0)).collect(),
            board: Board::new(),
            futex: Futex::new(),
        })
    }

    /// The table, for 3 keys.
    pub(crate) fn table(s: &Shared) -> Table<'_> {
        Table::attach(&s.words, &s.slots, 1, 1, 3)
    }

    /// A blocking lock as the OS layer does it.
    pub(crate) fn lock(s: &Shared, me: u32) -> (Locked, bool) {
        let t = table(s);
        let mut locking = Locking::new();
        loop {
            let epoch = s.board.epoch();
            match t
                .lock_step(&mut locking, me, &s.board)
                .expect("well formed")
            {
                MapStep::Park { expected } => s
                    .futex
                    .park(&[(t.lock_word(), expected), (&s.board.epoch, epoch)]),
                MapStep::Locked { locked, took_over } => return (locked, took_over),
            }
        }
    }

    pub(crate) fn unlock(s: &Shared, locked: Locked) {
        let t = table(s);
        let wake = t.unlock(locked).expect("held by me");
        s.futex.wake(t.lock_word(), wake);
    }

    /// One insert under the lock; the old value if the key was there.
    pub(crate) fn insert(s: &Shared, me: u32, key: u64, value: u64) -> Result<Option<u64>, Full> {
        let (locked, _) = lock(s, me);
        let mut old = [0];
        let done = table(s).insert(&[key], key, &[value], &mut old, &locked);
        unlock(s, locked);
        done.map(|replaced| replaced.then_some(old[0]))
    }

    /// The value of `key`.
    pub(crate) fn get(s: &Shared, me: u32, key: u64) -> Option<u64> {
        let (locked, _) = lock(s, me);
        let mut out = [0];
        let found = table(s).get(&[key], key, &mut out, &locked);
        let len = table(s).len(&locked);
        assert!(len <= 3, "len {len} beyond the capacity");
        unlock(s, locked);
        found.then_some(out[0])
    }

    /// Two inserters of the same key (both homed on the same slot as a third key): exactly
    /// one inserts it, the other replaces its value, and the key is there once.
    pub(crate) fn two_inserters_of_one_key() {
        let s = shared();
        let s2 = Arc::clone(&s);
        let other = thread::spawn(move || insert(&s2, 2, 5, 20).expect("room"));
        let mine = insert(&s, 1, 5, 10).expect("room");
        let theirs = other.join().expect("inserter");
        match (mine, theirs) {
            (None, Some(10)) => assert_eq!(get(&s, 1, 5), Some(20)),
            (Some(20), None) => assert_eq!(get(&s, 1, 5), Some(10)),
            other => panic!("both inserted or neither: {other:?}"),
        }
        let (locked, _) = lock(&s, 1);
        assert_eq!(table(&s).len(&locked), 1);
        unlock(&s, locked);
    }

    /// Two inserters of different keys that collide (same hash) against a third thread that
    /// removes: probe chains stay intact, and the capacity is never passed.
    pub(crate) fn colliding_inserts_and_a_remove() {
        let s = shared();
        assert_eq!(insert(&s, 1, 4, 40), Ok(None));
        let s2 = Arc::clone(&s);
        let inserter = thread::spawn(move || {
            let (locked, _) = lock(&s2, 2);
            let mut old = [0];
            // Key 8, given hash 4, is homed on slot 0 as key 4 is.
            let done = table(&s2).insert(&[8], 4, &[80], &mut old, &locked);
            unlock(&s2, locked);
            done
        });
        let (locked, _) = lock(&s, 3);
        let mut out = [0];
        let removed = table(&s).remove(&[4], 4, &mut out, &locked);
        unlock(&s, locked);
        assert!(removed && out[0] == 40);
        assert_eq!(inserter.join().expect("inserter"), Ok(false));
        let (locked, _) = lock(&s, 1);
        let mut out = [0];
        assert!(table(&s).get(&[8], 4, &mut out, &locked), "key 8 is found");
        assert_eq!(out[0], 80);
        assert!(!table(&s).get(&[4], 4, &mut out, &locked), "key 4 is gone");
        assert_eq!(table(&s).len(&locked), 1);
        unlock(&s, locked);
    }

    /// An inserter dies holding the lock after it committed a new key but before it counted
    /// it: a waiter takes the lock over, sees the key, recounts `len`, and an insert of the
    /// same key replaces rather than duplicates.
    pub(crate) fn a_dead_inserter_is_taken_over() {
        let s = shared();
        let _ = lock(&s, 1);
        let s2 = Arc::clone(&s);
        let dying = thread::spawn(move || {
            // The prefix of an insert of key 6 up to its commit point, then the process ends.
            let slot = 6 % SLOTS * 3;
            s2.slots[slot + 1].store(6, Ordering::Relaxed);
            s2.slots[slot + 2].store(60, Ordering::Relaxed);
            s2.slots[slot].store(FULL, Ordering::Relaxed);
            s2.board.die(1, &s2.futex);
        });
        let (locked, took_over) = lock(&s, 2);
        assert!(took_over, "the dead inserter's lock is taken over");
        assert_eq!(table(&s).len(&locked), 1, "recounted");
        let mut old = [0];
        assert_eq!(
            table(&s).insert(&[6], 6, &[61], &mut old, &locked),
            Ok(true)
        );
        assert_eq!(old[0], 60);
        unlock(&s, locked);
        dying.join().expect("dying");
        assert_eq!(insert(&s, 3, 7, 70), Ok(None));
        assert_eq!(get(&s, 3, 6), Some(61));
    }

    /// An inserter dies holding the lock before its commit point: the stray words are not a
    /// key, and a waiter that is already asleep (or not yet) inserts the key itself.
    pub(crate) fn a_waiter_recovers_from_an_inserter_dead_before_its_commit() {
        let s = shared();
        let _ = lock(&s, 1);
        let s2 = Arc::clone(&s);
        let waiter = thread::spawn(move || insert(&s2, 2, 6, 62));
        let slot = 6 % SLOTS * 3;
        s.slots[slot + 1].store(6, Ordering::Relaxed);
        s.board.die(1, &s.futex);
        assert_eq!(waiter.join().expect("waiter"), Ok(None));
        assert_eq!(get(&s, 3, 6), Some(62));
    }

    /// One read without the lock of `key` (given hash `hash`).
    pub(crate) fn read(s: &Shared, key: u64, hash: u64) -> (Read, u64) {
        let mut out = [0];
        let read = table(s).read(&[key], hash, &mut out);
        (read, out[0])
    }

    /// A reader without the lock looks key 8 up while a locker removes key 4 and inserts key
    /// 8 into the slot it freed (both homed on slot 0): the reader finds key 8 with its own
    /// value, or not at all, or is told to retry — never with key 4's value. Then it finds
    /// it.
    pub(crate) fn a_reader_never_mixes_a_removed_key_with_its_successor() {
        let s = shared();
        assert_eq!(insert(&s, 1, 4, 40), Ok(None));
        let s2 = Arc::clone(&s);
        let reader = thread::spawn(move || read(&s2, 8, 4));
        let (locked, _) = lock(&s, 2);
        let t = table(&s);
        assert!(t.remove(&[4], 4, &mut [0], &locked));
        assert_eq!(t.insert(&[8], 4, &[80], &mut [0], &locked), Ok(false));
        unlock(&s, locked);
        match reader.join().expect("reader") {
            (Read::Found, 80) | (Read::Absent | Read::Retry, _) => {}
            other => panic!("key 8 read as {other:?}"),
        }
        assert_eq!(read(&s, 8, 4), (Read::Found, 80));
        assert_eq!(read(&s, 4, 4).0, Read::Absent);
    }

    /// A reader without the lock looks key 8 up while one locker removes key 4 and another
    /// then inserts key 8 into the slot it freed (both homed on slot 0): as above, the reader
    /// never finds key 8 with key 4's value, although the remove's bracket was made by
    /// another thread than the insert's words.
    pub(crate) fn a_reader_never_mixes_a_key_removed_by_one_locker_with_another_lockers_key() {
        let s = shared();
        assert_eq!(insert(&s, 1, 4, 40), Ok(None));
        let s2 = Arc::clone(&s);
        let reader = thread::spawn(move || read(&s2, 8, 4));
        let s3 = Arc::clone(&s);
        let remover = thread::spawn(move || {
            let (locked, _) = lock(&s3, 3);
            assert!(table(&s3).remove(&[4], 4, &mut [0], &locked));
            unlock(&s3, locked);
        });
        let (locked, _) = lock(&s, 2);
        // The insert goes into slot 0 only if the remove came first; otherwise nothing to see.
        if s.slots[0].load(Ordering::Relaxed) != FULL {
            assert_eq!(
                table(&s).insert(&[8], 4, &[80], &mut [0], &locked),
                Ok(false)
            );
        }
        unlock(&s, locked);
        remover.join().expect("remover");
        match reader.join().expect("reader") {
            (Read::Found, 80) | (Read::Absent | Read::Retry, _) => {}
            other => panic!("key 8 read as {other:?}"),
        }
    }

    /// A reader without the lock looks a key up while a locker inserts it: it finds it with
    /// its value or not at all, and is never told to retry (an insert is not a change).
    pub(crate) fn a_reader_sees_a_new_key_whole_or_not_at_all() {
        let s = shared();
        let s2 = Arc::clone(&s);
        let reader = thread::spawn(move || read(&s2, 6, 6));
        assert_eq!(insert(&s, 1, 6, 60), Ok(None));
        match reader.join().expect("reader") {
            (Read::Found, 60) | (Read::Absent, _) => {}
            other => panic!("key 6 read as {other:?}"),
        }
    }

    /// A table of 4 slots of one key word and two value words, for 3 keys.
    pub(crate) fn wide(s: &Shared) -> Table<'_> {
        Table::attach(&s.words, &s.slots, 1, 2, 3)
    }

    /// The shared words of [`wide`].
    pub(crate) fn shared_wide() -> Arc<Shared> {
        Arc::new(Shared {
            words: MapWords::new(),
            slots: (0..SLOTS * 4).map(|_| AtomicU64::new(0)).collect(),
            board: Board::new(),
            futex: Futex::new(),
        })
    }

    /// A reader without the lock reads a two-word value while a locker replaces it: it sees
    /// the old value or the new one, never half of each.
    pub(crate) fn a_reader_never_sees_a_torn_replace() {
        let s = shared_wide();
        let (locked, _) = lock(&s, 1);
        assert_eq!(
            wide(&s).insert(&[5], 5, &[1, 1], &mut [0, 0], &locked),
            Ok(false)
        );
        unlock(&s, locked);
        let s2 = Arc::clone(&s);
        let reader = thread::spawn(move || {
            let mut out = [0, 0];
            let read = wide(&s2).read(&[5], 5, &mut out);
            (read, out)
        });
        let (locked, _) = lock(&s, 1);
        let mut old = [0, 0];
        assert_eq!(
            wide(&s).insert(&[5], 5, &[2, 2], &mut old, &locked),
            Ok(true)
        );
        assert_eq!(old, [1, 1]);
        unlock(&s, locked);
        match reader.join().expect("reader") {
            (Read::Found, [1, 1] | [2, 2]) | (Read::Retry, _) => {}
            other => panic!("key 5 read as {other:?}"),
        }
    }

    /// A locker dies in the middle of a remove, leaving `version` odd: a reader retries (and
    /// does not hang), a waiter takes the lock over and ends the change, and readers answer
    /// again.
    pub(crate) fn a_change_left_by_a_dead_holder_is_ended_by_the_takeover() {
        let s = shared();
        assert_eq!(insert(&s, 3, 4, 40), Ok(None));
        let _ = lock(&s, 1);
        let s2 = Arc::clone(&s);
        let dying = thread::spawn(move || {
            let t = table(&s2);
            // The prefix of a remove of key 4: the change begun, the slot freed, then the end.
            let _ = t.begin_change();
            s2.slots[0].store(EMPTY, Ordering::Relaxed);
            s2.board.die(1, &s2.futex);
        });
        let s3 = Arc::clone(&s);
        let reader = thread::spawn(move || read(&s3, 4, 4));
        let (locked, took_over) = lock(&s, 2);
        assert!(took_over);
        unlock(&s, locked);
        dying.join().expect("dying");
        match reader.join().expect("reader") {
            (Read::Found, 40) | (Read::Absent | Read::Retry, _) => {}
            other => panic!("key 4 read as {other:?}"),
        }
        assert_eq!(read(&s, 4, 4).0, Read::Absent, "the version is even again");
    }
}

#[cfg(all(test, netmcore_loom))]
mod loom_map {
    use super::scenarios;

    #[test]
    fn loom_two_inserters_of_one_key() {
        loom::model(scenarios::two_inserters_of_one_key);
    }

    #[test]
    fn loom_colliding_inserts_and_a_remove() {
        loom::model(scenarios::colliding_inserts_and_a_remove);
    }

    #[test]
    fn loom_a_dead_inserter_is_taken_over() {
        loom::model(scenarios::a_dead_inserter_is_taken_over);
    }

    #[test]
    fn loom_a_waiter_recovers_from_an_inserter_dead_before_its_commit() {
        loom::model(scenarios::a_waiter_recovers_from_an_inserter_dead_before_its_commit);
    }

    #[test]
    fn loom_a_reader_never_mixes_a_removed_key_with_its_successor() {
        loom::model(scenarios::a_reader_never_mixes_a_removed_key_with_its_successor);
    }

    #[test]
    fn loom_a_reader_never_mixes_a_key_removed_by_one_locker_with_another_lockers_key() {
        loom::model(
            scenarios::a_reader_never_mixes_a_key_removed_by_one_locker_with_another_lockers_key,
        );
    }

    #[test]
    fn loom_a_reader_sees_a_new_key_whole_or_not_at_all() {
        loom::model(scenarios::a_reader_sees_a_new_key_whole_or_not_at_all);
    }

    #[test]
    fn loom_a_reader_never_sees_a_torn_replace() {
        loom::model(scenarios::a_reader_never_sees_a_torn_replace);
    }

    #[test]
    fn loom_a_change_left_by_a_dead_holder_is_ended_by_the_takeover() {
        loom::model(scenarios::a_change_left_by_a_dead_holder_is_ended_by_the_takeover);
    }
}

#[cfg(all(test, not(netmcore_loom)))]
mod tests {
    use super::*;
    use crate::protocol::NoDeaths;

    #[test]
    fn scenarios_pass_with_threads() {
        for _ in 0..200 {
            scenarios::two_inserters_of_one_key();
            scenarios::colliding_inserts_and_a_remove();
            scenarios::a_dead_inserter_is_taken_over();
            scenarios::a_waiter_recovers_from_an_inserter_dead_before_its_commit();
            scenarios::a_reader_never_mixes_a_removed_key_with_its_successor();
            scenarios::a_reader_never_mixes_a_key_removed_by_one_locker_with_another_lockers_key();
            scenarios::a_reader_sees_a_new_key_whole_or_not_at_all();
            scenarios::a_reader_never_sees_a_torn_replace();
            scenarios::a_change_left_by_a_dead_holder_is_ended_by_the_takeover();
        }
    }

    fn locked(t: &Table<'_>) -> Locked {
        match t.lock_step(&mut Locking::new(), 7, &NoDeaths) {
            Ok(MapStep::Locked { locked, .. }) => locked,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn full_changes_nothing_and_tombstones_are_reused() {
        let words = MapWords::new();
        let slots: Vec<_> = (0..8 * 2).map(|_| AtomicU64::new(0)).collect();
        let t = Table::attach(&words, &slots, 1, 0, 3);
        let l = locked(&t);
        for k in [1, 9, 17] {
            // All three collide on slot 1.
            assert_eq!(t.insert(&[k], 1, &[], &mut [], &l), Ok(false));
        }
        let before: Vec<u64> = slots.iter().map(|w| w.load(Ordering::Relaxed)).collect();
        assert_eq!(t.insert(&[25], 1, &[], &mut [], &l), Err(Full));
        let after: Vec<u64> = slots.iter().map(|w| w.load(Ordering::Relaxed)).collect();
        assert_eq!(before, after, "Full changes nothing");
        assert_eq!(
            t.insert(&[9], 1, &[], &mut [], &l),
            Ok(true),
            "a replace fits"
        );
        // Removing the middle of the chain leaves a tombstone; the end stays findable.
        assert!(t.remove(&[9], 1, &mut [], &l));
        assert_eq!(slots[2 * 2].load(Ordering::Relaxed), TOMBSTONE);
        assert!(t.get(&[17], 1, &mut [], &l));
        assert_eq!(t.insert(&[25], 1, &[], &mut [], &l), Ok(false), "reuses it");
        assert_eq!(slots[2 * 2 + 1].load(Ordering::Relaxed), 25);
        assert_eq!(t.len(&l), 3);
        // Removing the end of a chain empties its slot, and the tombstones right before it.
        assert!(t.remove(&[17], 1, &mut [], &l));
        assert_eq!(slots[3 * 2].load(Ordering::Relaxed), EMPTY);
        assert!(t.remove(&[25], 1, &mut [], &l));
        assert_eq!(
            slots[2 * 2].load(Ordering::Relaxed),
            EMPTY,
            "slot 3 is empty"
        );
        assert!(t.insert(&[33], 1, &[], &mut [], &l).is_ok());
        assert!(t.insert(&[41], 1, &[], &mut [], &l).is_ok());
        assert!(t.remove(&[1], 1, &mut [], &l));
        assert!(t.remove(&[33], 1, &mut [], &l));
        assert_eq!(slots[2].load(Ordering::Relaxed), TOMBSTONE);
        assert!(t.remove(&[41], 1, &mut [], &l));
        let states: Vec<u64> = (0..8)
            .map(|i| slots[i * 2].load(Ordering::Relaxed))
            .collect();
        assert_eq!(states, [EMPTY; 8], "every tombstone cleared");
        assert_eq!(t.len(&l), 0);
        assert_eq!(t.unlock(l), Ok(Wake::None));
    }

    #[test]
    fn unknown_slot_states_are_skipped_and_a_corrupt_lock_is_seized() {
        let words = MapWords::new();
        let slots: Vec<_> = (0..4 * 3).map(|_| AtomicU64::new(0)).collect();
        let t = Table::attach(&words, &slots, 1, 1, 4);
        slots[0].store(77, Ordering::Relaxed);
        words.lock.store(1 << 30, Ordering::Relaxed);
        words.len.store(9, Ordering::Relaxed);
        assert!(t.lock_step(&mut Locking::new(), 7, &NoDeaths).is_err());
        let l = t.seize(7);
        assert_eq!(t.len(&l), 0, "recounted");
        assert!(!t.get(&[0], 0, &mut [0], &l));
        assert_eq!(t.insert(&[0], 0, &[5], &mut [0], &l), Ok(false));
        assert_eq!(
            slots[0].load(Ordering::Relaxed),
            FULL,
            "the odd slot was reused"
        );
        assert_eq!(t.unlock(l), Ok(Wake::One));
        // A table whose slots hold no whole entry finds nothing and takes nothing.
        let t = Table::attach(&words, &slots[..2], 1, 1, 4);
        let l = locked(&t);
        assert_eq!(t.insert(&[0], 0, &[5], &mut [0], &l), Err(Full));
        assert_eq!(t.unlock(l), Ok(Wake::None));
    }

    #[test]
    fn fnv1a_is_the_published_function() {
        assert_eq!(hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
