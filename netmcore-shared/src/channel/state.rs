//! The atomics protocols of the channel, without the futex: the queue of slots, and the table
//! of ends.
//!
//! # The queue
//!
//! A bounded multi-producer multi-consumer queue of `capacity` slots in the manner of Vyukov's
//! (crossbeam's `ArrayQueue`): `tail` counts the positions ever claimed by senders, `head` the
//! positions ever claimed by receivers, and position `p` lives in slot `p % capacity` during
//! *lap* `p / capacity`. Each slot has a 64-bit *stamp*:
//!
//! ```text
//!  63         33   32      31..30    29            0
//! +-------------+--------+---------+----------------+
//! | lap (31 b.) | WAITER |  state  |  tag (30 bits) |
//! +-------------+--------+---------+----------------+
//! ```
//!
//! with the states `FREE` (the slot waits for the sender of position `lap * capacity + i`),
//! `WRITING` (a sender, `tag`, claimed it and is writing its message), `FULL` (a message waits
//! for a receiver) and `READING` (a receiver, `tag`, took it and is reading it). A slot goes
//! `FREE(L) → WRITING(L) → FULL(L) → READING(L) → FREE(L + 1)`; zeroed memory is an empty queue
//! (every slot `FREE(0)`, `head = tail = 0`).
//!
//! A sender at `tail = t` claims its slot with a CAS `FREE(L) → WRITING(L, me)` on the stamp
//! *first*, and only then moves `tail` to `t + 1`; a receiver at `head = h` takes with a CAS
//! `FULL(L) → READING(L, me)`, then moves `head`. Anyone who finds the stamp of the position at
//! `tail` (or `head`) already claimed moves the counter on for the claimer, so a process that
//! dies right after its claim leaves a stamp that names it, never a counter that is stuck.
//! The message bytes are written between the claim and the publication (`WRITING → FULL`, a
//! swap) and read between the take and the release (`READING → FREE(L + 1)`, a swap): the
//! stamp's read-modify-writes order the bytes between the two sides.
//!
//! **Death.** Tags name processes (see [`crate::protocol`]), so a stamp that a dead process
//! left is repaired by whoever meets it:
//!
//! * `WRITING(L, dead)` at the head: the message was never finished. A receiver skips it:
//!   `FREE(L + 1)`, and the head moves on. Nothing half-written is ever delivered.
//! * `READING(L, dead)` blocking a sender: the receiver died with the message in hand. A sender
//!   frees the slot (`FREE(L + 1)`): the message is lost with the process that took it, as if
//!   it had died right after its `recv` returned. Re-delivering it is not possible without
//!   moving the head back, which other receivers may have passed.
//!
//! **Sleeping.** Every slot has a 32-bit `seq` beside its stamp. A side that will sleep on a
//! slot (a receiver on an empty or half-written head slot, a sender on a full one) reads `seq`,
//! sets `WAITER` in the stamp with a CAS, and sleeps while `seq` is unchanged (and the death
//! board's epoch, and the ends' sequence). The transitions that make progress on a slot — a
//! publication, a release, a repair — are swaps or CASes on the same stamp, so they see the bit:
//! they bump `seq` and ask for a wake of every sleeper on it. A claim and a take carry the bit
//! over to the next state, whose publication or release does the wake. One word, read-modify-
//! writes on both sides: no wakeup is lost, and a side that finds no `WAITER` makes no
//! syscall.
//!
//! **Bad bytes.** Laps are compared modulo 2^31, and a stamp whose lap is neither the one the
//! counter expects nor the one before, while the counter has not moved, is a [`BadState`], as
//! is a stamp that a process finds taken from under it.
//!
//! # The ends
//!
//! A table of [`ENDS`] 64-bit entries counts the ends in each process: an entry is `FREE`,
//! `OPEN` (the process `tag` has senders, or receivers, open — however many values it holds
//! counts once), `TRANSIT` (an end given away with `into_handle` by `tag`, not opened yet) or
//! `GONE` (an end in transit whose giver died before anyone opened it). An entry also says its
//! role (sender or receiver) and a generation, bumped each time it goes into transit, which the
//! handle of the moved end carries: exactly one open matches it.
//!
//! An end is *live* when it is `OPEN` or `TRANSIT` and its process is alive. Once no sender is
//! live, the `SENDERS_GONE` flag is set, for good; once no receiver is, `RECEIVERS_GONE`. Every
//! change to the table and the decision to set a flag are made under the *ends lock*, a robust
//! lock word (the mutex's protocol: taken over from a dead holder), so an open that adds an end
//! and a decision that none is left never cross: an open checks the flag under the lock and
//! refuses once it is set. The flags are read without the lock by the queue's fast paths.
//! Setting a flag bumps `ends_seq`, on which every sleeper also sleeps.

use crate::protocol::{BadState, Peers, TAG_MASK, Wake};
use crate::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Entries of the ends table.
pub(crate) const ENDS: usize = 128;

/// The `WAITER` bit of a stamp.
const WAITER: u64 = 1 << 32;
/// The lap field's mask, after the shift.
const LAP_MASK: u32 = (1 << 31) - 1;
/// Where the lap starts.
const LAP_SHIFT: u32 = 33;
/// Where the state starts.
const STATE_SHIFT: u32 = 30;

/// A slot waiting for its sender.
const FREE: u64 = 0;
/// A slot a sender is writing.
const WRITING: u64 = 1;
/// A slot holding a message.
const FULL: u64 = 2;
/// A slot a receiver is reading.
const READING: u64 = 3;

/// The message length of a slot whose sender could not encode its message after it claimed
/// the slot (a `Serialize` impl that failed the second time): receivers skip it.
pub(crate) const VOID: u32 = u32::MAX;

/// The stamp of lap `lap`, `state`, `tag`.
fn stamp(lap: u32, state: u64, tag: u32) -> u64 {
    u64::from(lap & LAP_MASK) << LAP_SHIFT | state << STATE_SHIFT | u64::from(tag & TAG_MASK)
}

/// The lap of a stamp.
fn lap_of(s: u64) -> u32 {
    (s >> LAP_SHIFT) as u32 & LAP_MASK
}

/// The state of a stamp.
fn state_of(s: u64) -> u64 {
    (s >> STATE_SHIFT) & 3
}

/// The tag of a stamp.
fn tag_of(s: u64) -> u32 {
    s as u32 & TAG_MASK
}

/// How far lap `a` is ahead of lap `b`, modulo 2^31.
fn lap_diff(a: u32, b: u32) -> u32 {
    a.wrapping_sub(b) & LAP_MASK
}

/// One lap back.
const BEHIND: u32 = LAP_MASK;

/// The counters and control words of a channel, as laid out in its segment: the senders'
/// line, the receivers' line, then the ends' words.
#[repr(C, align(64))]
pub(crate) struct ChannelWords {
    /// Positions ever claimed by senders.
    pub(crate) tail: AtomicU64,
    _pad0: [AtomicU64; 7],
    /// Positions ever taken by receivers.
    pub(crate) head: AtomicU64,
    _pad1: [AtomicU64; 7],
    /// `SENDERS_GONE` and `RECEIVERS_GONE`.
    pub(crate) flags: AtomicU32,
    /// Bumped when a flag is set; every sleeper sleeps on it too.
    pub(crate) ends_seq: AtomicU32,
    /// The ends lock (the mutex's lock word: a holder tag and a waiters bit).
    pub(crate) ends_lock: AtomicU32,
    _reserved: AtomicU32,
    _pad2: [AtomicU64; 6],
}

impl ChannelWords {
    /// Zeroed words: an empty queue, no flag, the lock free.
    #[cfg(test)]
    pub(crate) fn new() -> ChannelWords {
        ChannelWords {
            tail: AtomicU64::new(0),
            _pad0: std::array::from_fn(|_| AtomicU64::new(0)),
            head: AtomicU64::new(0),
            _pad1: std::array::from_fn(|_| AtomicU64::new(0)),
            flags: AtomicU32::new(0),
            ends_seq: AtomicU32::new(0),
            ends_lock: AtomicU32::new(0),
            _reserved: AtomicU32::new(0),
            _pad2: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// The words at the start of each slot; the message bytes follow.
#[repr(C)]
pub(crate) struct SlotWords {
    /// The stamp (see the module docs).
    pub(crate) stamp: AtomicU64,
    /// Bumped by a transition that found `WAITER`; sleepers on the slot sleep on it.
    pub(crate) seq: AtomicU32,
    /// The length of the message, written by its sender before the publication.
    pub(crate) len: AtomicU32,
}

impl SlotWords {
    /// A free slot of lap 0.
    #[cfg(test)]
    pub(crate) fn new() -> SlotWords {
        SlotWords {
            stamp: AtomicU64::new(0),
            seq: AtomicU32::new(0),
            len: AtomicU32::new(0),
        }
    }
}

/// The slots of a queue, wherever they lie.
pub(crate) trait Slots {
    /// The words of slot `index` (less than the capacity).
    fn slot(&self, index: usize) -> &SlotWords;
}

/// Wakes every sleeper on a word: the futex, or its emulation in the models.
pub(crate) trait Waker {
    /// Wakes every sleeper on `word`.
    fn wake_all(&self, word: &AtomicU32);
}

/// Where to sleep: slot `index`'s `seq`, while it holds `expected`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Park {
    /// The slot.
    pub(crate) index: usize,
    /// The value of its `seq` read before the `WAITER` bit was set.
    pub(crate) expected: u32,
}

/// A position and where it lives: what a claim or a take hands to the publication or the
/// release that follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spot {
    /// The position.
    pub(crate) pos: u64,
    /// Its slot.
    pub(crate) index: usize,
    /// Its lap.
    lap: u32,
}

/// What a sender's step found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// The slot of this spot is the caller's to write (`WRITING`).
    Claimed(Spot),
    /// The queue is full. With a [`Park`] when the step announced a sleeper.
    Full(Option<Park>),
}

/// What a receiver's step found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Take {
    /// The message of this spot, `len` bytes, is the caller's to read (`READING`).
    Taken {
        /// Where it is.
        spot: Spot,
        /// The message's length ([`VOID`]: none, release and go on).
        len: u32,
    },
    /// No message: the head slot waits for its sender. With a [`Park`] when announced.
    Empty(Option<Park>),
    /// A live sender is writing the message at the head.
    InFlight(Option<Park>),
}

/// The protocol over the queue of one channel.
pub(crate) struct QueueState<'a, S: Slots> {
    words: &'a ChannelWords,
    slots: S,
    capacity: u64,
}

impl<'a, S: Slots> QueueState<'a, S> {
    /// The queue over `words` and `slots`, of `capacity` slots (at least 1).
    pub(crate) fn attach(words: &'a ChannelWords, slots: S, capacity: usize) -> QueueState<'a, S> {
        QueueState {
            words,
            slots,
            capacity: capacity.max(1) as u64,
        }
    }

    /// The slot and lap of position `pos`: one division, or a mask and a shift for a
    /// capacity that is a power of two.
    fn place(&self, pos: u64) -> (usize, &SlotWords, u32) {
        let (index, lap) = if self.capacity.is_power_of_two() {
            (
                pos & (self.capacity - 1),
                pos >> self.capacity.trailing_zeros(),
            )
        } else {
            let lap = pos / self.capacity;
            (pos - lap * self.capacity, lap)
        };
        // The index is below the capacity, a usize.
        let index = index as usize;
        (index, self.slots.slot(index), lap as u32 & LAP_MASK)
    }

    /// The words of slot `index`.
    pub(crate) fn slot(&self, index: usize) -> &SlotWords {
        self.slots.slot(index)
    }

    /// Moves `counter` from `at` to `at + 1` for whoever claimed position `at`, if nobody did.
    fn help(counter: &AtomicU64, at: u64) {
        let _ =
            counter.compare_exchange(at, at.wrapping_add(1), Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Sets `WAITER` on `slot`, whose stamp was `s`: the [`Park`] to sleep on, or `None` when
    /// the stamp changed meanwhile (step again).
    fn announce(slot: &SlotWords, index: usize, s: u64) -> Option<Park> {
        let expected = slot.seq.load(Ordering::SeqCst);
        if s & WAITER != 0 {
            // Set already: still set if the stamp did not change since it was read, which the
            // sleep itself checks through `seq` (a transition that clears it bumps `seq`). Read
            // the stamp again to be sure this `expected` is not from after that bump.
            return (slot.stamp.load(Ordering::SeqCst) == s).then_some(Park { index, expected });
        }
        slot.stamp
            .compare_exchange(s, s | WAITER, Ordering::SeqCst, Ordering::SeqCst)
            .ok()
            .map(|_| Park { index, expected })
    }

    /// The wake a transition from stamp `old` asks for on `slot`: none, or (if `old` had
    /// `WAITER`) a bump of `seq` and a wake of every sleeper.
    fn wake_if_waited(slot: &SlotWords, old: u64, waker: &impl Waker) {
        if old & WAITER != 0 {
            slot.seq.fetch_add(1, Ordering::SeqCst);
            waker.wake_all(&slot.seq);
        }
    }

    /// A sender's step: claims the slot at the tail for `me`, or finds the queue full (and,
    /// with `announce`, sets `WAITER` on the slot it waits for). Frees a slot that a dead
    /// receiver held on the way.
    ///
    /// # Errors
    ///
    /// [`BadState`] for a stamp out of step with the tail.
    #[inline]
    pub(crate) fn claim(
        &self,
        me: u32,
        announce: bool,
        peers: &impl Peers,
        waker: &impl Waker,
    ) -> Result<Claim, BadState> {
        let tail = &self.words.tail;
        let mut t = tail.load(Ordering::SeqCst);
        loop {
            let (index, slot, lap) = self.place(t);
            let s = slot.stamp.load(Ordering::SeqCst);
            match (lap_diff(lap_of(s), lap), state_of(s)) {
                (0, FREE) => {
                    let claimed = stamp(lap, WRITING, me) | (s & WAITER);
                    if slot
                        .stamp
                        .compare_exchange(s, claimed, Ordering::SeqCst, Ordering::SeqCst)
                        .is_ok()
                    {
                        Self::help(tail, t);
                        return Ok(Claim::Claimed(Spot { pos: t, index, lap }));
                    }
                }
                // Claimed by another sender: move the tail on for it.
                (0, _) => Self::help(tail, t),
                (BEHIND, READING) if peers.is_dead(tag_of(s)) => {
                    if slot
                        .stamp
                        .compare_exchange(
                            s,
                            stamp(lap, FREE, 0),
                            Ordering::SeqCst,
                            Ordering::SeqCst,
                        )
                        .is_ok()
                    {
                        Self::wake_if_waited(slot, s, waker);
                    }
                }
                (BEHIND, WRITING | FULL | READING) => {
                    if !announce {
                        return Ok(Claim::Full(None));
                    }
                    if let Some(park) = Self::announce(slot, index, s) {
                        return Ok(Claim::Full(Some(park)));
                    }
                }
                _ => {
                    let now = tail.load(Ordering::SeqCst);
                    if now == t {
                        return Err(BadState::new(
                            "channel slot stamp out of step with the tail",
                            s,
                        ));
                    }
                }
            }
            t = tail.load(Ordering::SeqCst);
        }
    }

    /// The sender of `spot` publishes its message of `len` bytes (or [`VOID`]) written in its
    /// slot: `WRITING → FULL`, waking the receivers that wait for it.
    ///
    /// # Errors
    ///
    /// [`BadState`] when the slot is no longer the caller's (its stamp was changed by another
    /// process, which took the caller for dead: a corrupt tag).
    #[inline]
    pub(crate) fn publish(
        &self,
        spot: Spot,
        me: u32,
        len: u32,
        waker: &impl Waker,
    ) -> Result<(), BadState> {
        let (slot, lap) = (self.slots.slot(spot.index), spot.lap);
        slot.len.store(len, Ordering::Relaxed);
        let mine = stamp(lap, WRITING, me);
        let mut s = slot.stamp.load(Ordering::SeqCst);
        loop {
            if s & !WAITER != mine {
                return Err(BadState::new("channel slot taken from its sender", s));
            }
            match slot.stamp.compare_exchange(
                s,
                stamp(lap, FULL, me),
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => {
                    Self::wake_if_waited(slot, s, waker);
                    return Ok(());
                }
                Err(now) => s = now,
            }
        }
    }

    /// A receiver's step: takes the message at the head for `me`, or finds the queue empty
    /// (or the head message still being written by a live sender) and, with `announce`, sets
    /// `WAITER` on the head slot. Skips a slot whose sender died while writing it.
    ///
    /// # Errors
    ///
    /// [`BadState`] for a stamp out of step with the head.
    #[inline]
    pub(crate) fn take(
        &self,
        me: u32,
        announce: bool,
        peers: &impl Peers,
        waker: &impl Waker,
    ) -> Result<Take, BadState> {
        let head = &self.words.head;
        let mut h = head.load(Ordering::SeqCst);
        loop {
            let (index, slot, lap) = self.place(h);
            let s = slot.stamp.load(Ordering::SeqCst);
            match (lap_diff(lap_of(s), lap), state_of(s)) {
                (0, FULL) => {
                    let taken = stamp(lap, READING, me) | (s & WAITER);
                    if slot
                        .stamp
                        .compare_exchange(s, taken, Ordering::SeqCst, Ordering::SeqCst)
                        .is_ok()
                    {
                        Self::help(head, h);
                        let len = slot.len.load(Ordering::Relaxed);
                        return Ok(Take::Taken {
                            spot: Spot { pos: h, index, lap },
                            len,
                        });
                    }
                }
                (0, WRITING) if peers.is_dead(tag_of(s)) => {
                    let next = stamp(lap.wrapping_add(1), FREE, 0);
                    if slot
                        .stamp
                        .compare_exchange(s, next, Ordering::SeqCst, Ordering::SeqCst)
                        .is_ok()
                    {
                        Self::wake_if_waited(slot, s, waker);
                        Self::help(head, h);
                    }
                }
                // Waiting for its sender, or for a live sender to finish it, or still being
                // read in the lap before (by a receiver that has not released it yet).
                (0, FREE | WRITING) | (BEHIND, READING) => {
                    let in_flight = lap_diff(lap_of(s), lap) == 0 && state_of(s) == WRITING;
                    let park = if announce {
                        match Self::announce(slot, index, s) {
                            Some(park) => Some(park),
                            None => {
                                h = head.load(Ordering::SeqCst);
                                continue;
                            }
                        }
                    } else {
                        None
                    };
                    return Ok(if in_flight {
                        Take::InFlight(park)
                    } else {
                        Take::Empty(park)
                    });
                }
                // Taken by another receiver (READING), or done and perhaps claimed again in
                // the next lap: move the head on.
                (0, _) | (1, _) => Self::help(head, h),
                _ => {
                    let now = head.load(Ordering::SeqCst);
                    if now == h {
                        return Err(BadState::new(
                            "channel slot stamp out of step with the head",
                            s,
                        ));
                    }
                }
            }
            h = head.load(Ordering::SeqCst);
        }
    }

    /// The receiver of `spot` is done with its message: `READING → FREE` of the next lap,
    /// waking the senders that wait for the slot.
    ///
    /// # Errors
    ///
    /// [`BadState`] when the slot is no longer the caller's.
    #[inline]
    pub(crate) fn release(&self, spot: Spot, me: u32, waker: &impl Waker) -> Result<(), BadState> {
        let (slot, lap) = (self.slots.slot(spot.index), spot.lap);
        let mine = stamp(lap, READING, me);
        let mut s = slot.stamp.load(Ordering::SeqCst);
        loop {
            if s & !WAITER != mine {
                return Err(BadState::new("channel slot taken from its receiver", s));
            }
            match slot.stamp.compare_exchange(
                s,
                stamp(lap.wrapping_add(1), FREE, 0),
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => {
                    Self::wake_if_waited(slot, s, waker);
                    return Ok(());
                }
                Err(now) => s = now,
            }
        }
    }
}

/// A role of an end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Role {
    /// A sender.
    Sender,
    /// A receiver.
    Receiver,
}

impl Role {
    /// The flag set once no end of this role is live.
    pub(crate) fn gone_flag(self) -> u32 {
        match self {
            Role::Sender => SENDERS_GONE,
            Role::Receiver => RECEIVERS_GONE,
        }
    }

    /// The role bit of an entry.
    fn bit(self) -> u64 {
        match self {
            Role::Sender => 0,
            Role::Receiver => ROLE,
        }
    }
}

/// No sender is live, for good.
pub(crate) const SENDERS_GONE: u32 = 1;
/// No receiver is live, for good.
pub(crate) const RECEIVERS_GONE: u32 = 2;

/// An entry state: nothing.
const E_FREE: u64 = 0;
/// An entry state: ends open in the process `tag`.
const E_OPEN: u64 = 1;
/// An entry state: an end given away by `tag`, not opened yet.
const E_TRANSIT: u64 = 2;
/// An entry state: an end given away by a process that died before anyone opened it.
const E_GONE: u64 = 3;
/// The role bit of an entry (set: receiver).
const ROLE: u64 = 1 << 32;
/// Where an entry's generation starts (31 bits).
const GEN_SHIFT: u32 = 33;

/// An entry.
fn entry(tag: u32, state: u64, role: Role, generation: u32) -> u64 {
    u64::from(tag & TAG_MASK)
        | state << STATE_SHIFT
        | role.bit()
        | u64::from(generation & LAP_MASK) << GEN_SHIFT
}

/// The role of an entry.
fn role_of(e: u64) -> Role {
    if e & ROLE == 0 {
        Role::Sender
    } else {
        Role::Receiver
    }
}

/// The generation of an entry.
fn generation_of(e: u64) -> u32 {
    (e >> GEN_SHIFT) as u32 & LAP_MASK
}

/// Whether entry `e` is `OPEN` for `role` in `me` (of any generation).
fn is_open_by(e: u64, me: u32, role: Role) -> bool {
    e & !(u64::from(LAP_MASK) << GEN_SHIFT) == entry(me, E_OPEN, role, 0)
}

/// The name of a moved end: its entry and the generation the entry had when it went into
/// transit. Fits in 39 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    /// The entry.
    pub(crate) index: usize,
    /// Its generation in transit.
    pub(crate) generation: u32,
}

impl Ticket {
    /// The ticket as a number below 2^39.
    pub(crate) fn to_bits(self) -> u64 {
        (self.index as u64 & 0xff) | u64::from(self.generation & LAP_MASK) << 8
    }

    /// The ticket of `bits`, if they are one.
    pub(crate) fn from_bits(bits: u64) -> Option<Ticket> {
        if bits >> 39 != 0 {
            return None;
        }
        let index = (bits & 0xff) as usize;
        (index < ENDS).then_some(Ticket {
            index,
            generation: (bits >> 8) as u32 & LAP_MASK,
        })
    }
}

/// Why the open of a moved end was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Opened already (or never given).
    Busy,
    /// Its giver died before anyone opened it.
    Gone,
}

/// The table of ends is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TableFull;

/// The protocol over the ends of one channel. Every method but [`EndsState::is_gone`] and
/// [`EndsState::has_live`] is called with the ends lock held by the caller.
#[derive(Clone, Copy)]
pub(crate) struct EndsState<'a> {
    words: &'a ChannelWords,
    entries: &'a [AtomicU64],
}

impl<'a> EndsState<'a> {
    /// The ends in `entries`, beside `words`.
    pub(crate) fn attach(words: &'a ChannelWords, entries: &'a [AtomicU64]) -> EndsState<'a> {
        EndsState { words, entries }
    }

    /// The lock word.
    pub(crate) fn lock_word(&self) -> &'a AtomicU32 {
        &self.words.ends_lock
    }

    /// The word bumped when a flag is set.
    #[inline]
    pub(crate) fn seq_word(&self) -> &'a AtomicU32 {
        &self.words.ends_seq
    }

    /// Writes the ends of a new channel, whose sender and receiver are open in `me`: entries
    /// 0 and 1.
    pub(crate) fn init(&self, me: u32) {
        self.entries[0].store(entry(me, E_OPEN, Role::Sender, 0), Ordering::SeqCst);
        self.entries[1].store(entry(me, E_OPEN, Role::Receiver, 0), Ordering::SeqCst);
    }

    /// Whether no end of `role` is live any more (the flag, read without the lock).
    #[inline]
    pub(crate) fn is_gone(&self, role: Role) -> bool {
        self.words.flags.load(Ordering::SeqCst) & role.gone_flag() != 0
    }

    /// Whether the table shows a live end of `role`, read without the lock and changing
    /// nothing: a hint that spares the lock when the answer is yes.
    pub(crate) fn has_live(&self, role: Role, peers: &impl Peers) -> bool {
        self.entries.iter().any(|e| {
            let e = e.load(Ordering::SeqCst);
            let state = state_of(e);
            role_of(e) == role
                && (state == E_OPEN || state == E_TRANSIT)
                && !peers.is_dead(tag_of(e))
        })
    }

    /// Decides whether an end of `role` is live (lock held): clears the entries of dead
    /// processes on the way (`OPEN` → `FREE`, `TRANSIT` → `GONE`), and when none is live sets
    /// the role's flag and says to wake every sleeper on `ends_seq`.
    pub(crate) fn settle(&self, role: Role, peers: &impl Peers) -> (bool, Wake) {
        if self.is_gone(role) {
            return (false, Wake::None);
        }
        let mut live = false;
        for word in self.entries {
            let e = word.load(Ordering::SeqCst);
            if role_of(e) != role {
                continue;
            }
            let state = state_of(e);
            if state != E_OPEN && state != E_TRANSIT {
                continue;
            }
            if peers.is_dead(tag_of(e)) {
                let next = if state == E_OPEN { E_FREE } else { E_GONE };
                word.store(entry(0, next, role, generation_of(e)), Ordering::SeqCst);
            } else {
                live = true;
            }
        }
        if live {
            return (true, Wake::None);
        }
        self.words
            .flags
            .fetch_or(role.gone_flag(), Ordering::SeqCst);
        self.words.ends_seq.fetch_add(1, Ordering::SeqCst);
        (false, Wake::All)
    }

    /// A free entry (`FREE` or `GONE`), for `role`.
    fn vacant(&self) -> Option<(usize, u64)> {
        self.entries.iter().enumerate().find_map(|(i, word)| {
            let e = word.load(Ordering::SeqCst);
            matches!(state_of(e), E_FREE | E_GONE).then_some((i, e))
        })
    }

    /// Adds an entry `OPEN` for `me` and `role` (lock held), unless no end of `role` is live
    /// any more (`Ok(None)`: the channel is disconnected on that side).
    ///
    /// # Errors
    ///
    /// [`TableFull`] when every entry is taken.
    pub(crate) fn add(
        &self,
        role: Role,
        me: u32,
        peers: &impl Peers,
    ) -> Result<(Option<usize>, Wake), TableFull> {
        let (live, wake) = self.settle(role, peers);
        if !live {
            return Ok((None, wake));
        }
        let (index, e) = self.vacant().ok_or(TableFull)?;
        self.entries[index].store(entry(me, E_OPEN, role, generation_of(e)), Ordering::SeqCst);
        Ok((Some(index), Wake::None))
    }

    /// Closes the entry `index` that `me` has open for `role` (lock held), then settles the
    /// role: the wake to do on `ends_seq` if it was the last live end. An entry that is not
    /// `me`'s (corrupt, or cleared as dead) is left as it is.
    pub(crate) fn close(&self, index: usize, role: Role, me: u32, peers: &impl Peers) -> Wake {
        if let Some(word) = self.entries.get(index) {
            let e = word.load(Ordering::SeqCst);
            if is_open_by(e, me, role) {
                word.store(entry(0, E_FREE, role, generation_of(e)), Ordering::SeqCst);
            }
        }
        self.settle(role, peers).1
    }

    /// Puts an end of `role` that `me` gives away into transit (lock held): the entry `index`
    /// itself when the caller is giving up its last end there (`reuse`), or else a vacant one.
    ///
    /// # Errors
    ///
    /// [`TableFull`] when a vacant entry is needed and none is left.
    pub(crate) fn give(
        &self,
        reuse: Option<usize>,
        role: Role,
        me: u32,
    ) -> Result<Ticket, TableFull> {
        let own = reuse.and_then(|i| {
            let e = self.entries.get(i)?.load(Ordering::SeqCst);
            is_open_by(e, me, role).then_some((i, e))
        });
        let (index, e) = match own {
            Some(found) => found,
            None => self.vacant().ok_or(TableFull)?,
        };
        let generation = generation_of(e).wrapping_add(1) & LAP_MASK;
        self.entries[index].store(entry(me, E_TRANSIT, role, generation), Ordering::SeqCst);
        Ok(Ticket { index, generation })
    }

    /// Opens the moved end `ticket` of `role` for `me` (lock held): its entry becomes `me`'s
    /// `OPEN` one.
    ///
    /// # Errors
    ///
    /// [`Refused::Busy`] when it is not in transit under that ticket (opened already);
    /// [`Refused::Gone`] when its giver died first (the entry is marked `GONE`).
    pub(crate) fn take(
        &self,
        ticket: Ticket,
        role: Role,
        me: u32,
        peers: &impl Peers,
    ) -> Result<usize, Refused> {
        let word = self.entries.get(ticket.index).ok_or(Refused::Busy)?;
        let e = word.load(Ordering::SeqCst);
        if role_of(e) != role || generation_of(e) != ticket.generation {
            return Err(Refused::Busy);
        }
        match state_of(e) {
            E_TRANSIT if peers.is_dead(tag_of(e)) => {
                word.store(entry(0, E_GONE, role, ticket.generation), Ordering::SeqCst);
                Err(Refused::Gone)
            }
            E_TRANSIT => {
                word.store(entry(me, E_OPEN, role, ticket.generation), Ordering::SeqCst);
                Ok(ticket.index)
            }
            E_GONE => Err(Refused::Gone),
            _ => Err(Refused::Busy),
        }
    }

    /// Whether the moved end `ticket` is still in transit from `me` (read without the lock).
    pub(crate) fn in_transit_from(&self, ticket: Ticket, me: u32) -> bool {
        self.entries.get(ticket.index).is_some_and(|word| {
            let e = word.load(Ordering::SeqCst);
            state_of(e) == E_TRANSIT
                && tag_of(e) == me & TAG_MASK
                && generation_of(e) == ticket.generation
        })
    }
}

/// A queue's slots in a vector, for the models and tests.
#[cfg(test)]
impl Slots for &[SlotWords] {
    fn slot(&self, index: usize) -> &SlotWords {
        &self[index]
    }
}

/// The emulated futex of the models.
#[cfg(test)]
impl Waker for crate::testing::Futex {
    fn wake_all(&self, word: &AtomicU32) {
        self.wake(word, Wake::All);
    }
}

/// Scenarios of senders and receivers over a tiny queue and its ends, with the futex and the
/// death board of `crate::testing`: run exhaustively by loom, and many times with threads.
#[cfg(test)]
mod scenarios {
    use super::*;
    use crate::mutex::state::{LockStep, Locking, unlock};
    use crate::sync::{Arc, thread};
    use crate::testing::{Board, Futex};

    /// A channel of `capacity` slots holding one `u64` each.
    pub(super) struct Chan {
        words: ChannelWords,
        slots: Vec<SlotWords>,
        data: Vec<AtomicU64>,
        entries: Vec<AtomicU64>,
        pub(super) futex: Futex,
        pub(super) board: Board,
    }

    impl Chan {
        pub(super) fn new(capacity: usize) -> Arc<Chan> {
            Arc::new(Chan {
                words: ChannelWords::new(),
                slots: (0..capacity).map(|_| SlotWords::new()).collect(),
                data: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
                entries: (0..4).map(|_| AtomicU64::new(0)).collect(),
                futex: Futex::new(),
                board: Board::new(),
            })
        }

        fn queue(&self) -> QueueState<'_, &[SlotWords]> {
            QueueState::attach(&self.words, &self.slots[..], self.slots.len())
        }

        pub(super) fn ends(&self) -> EndsState<'_> {
            EndsState::attach(&self.words, &self.entries)
        }

        /// Claims a slot for `me` (sleeping while the queue is full), without publishing it.
        pub(super) fn claim(&self, me: u32) -> Spot {
            let queue = self.queue();
            loop {
                let epoch = self.board.epoch();
                match queue
                    .claim(me, true, &self.board, &self.futex)
                    .expect("valid stamps")
                {
                    Claim::Claimed(spot) => return spot,
                    Claim::Full(Some(park)) => self.futex.park(&[
                        (&self.slots[park.index].seq, park.expected),
                        (&self.board.epoch, epoch),
                    ]),
                    Claim::Full(None) => {}
                }
            }
        }

        /// Sends `value` as `me`.
        pub(super) fn send(&self, me: u32, value: u64) {
            let spot = self.claim(me);
            // Relaxed: the publication orders it.
            self.data[spot.index].store(value, Ordering::Relaxed);
            self.queue()
                .publish(spot, me, 8, &self.futex)
                .expect("the slot is ours");
        }

        /// Takes a message as `me` (sleeping while the queue is empty), without releasing it.
        pub(super) fn take(&self, me: u32) -> (Spot, u64) {
            let queue = self.queue();
            loop {
                let epoch = self.board.epoch();
                match queue
                    .take(me, true, &self.board, &self.futex)
                    .expect("valid stamps")
                {
                    Take::Taken { spot, len } => {
                        assert_eq!(len, 8);
                        return (spot, self.data[spot.index].load(Ordering::Relaxed));
                    }
                    Take::Empty(Some(park)) | Take::InFlight(Some(park)) => self.futex.park(&[
                        (&self.slots[park.index].seq, park.expected),
                        (&self.board.epoch, epoch),
                    ]),
                    Take::Empty(None) | Take::InFlight(None) => {}
                }
            }
        }

        /// Receives a message as `me`.
        pub(super) fn recv(&self, me: u32) -> u64 {
            let (spot, value) = self.take(me);
            self.queue()
                .release(spot, me, &self.futex)
                .expect("the slot is ours");
            value
        }

        /// Runs `f` with the ends lock held by `me`.
        pub(super) fn locked<R>(&self, me: u32, f: impl FnOnce(EndsState<'_>) -> R) -> R {
            let ends = self.ends();
            let mut locking = Locking::new();
            loop {
                let epoch = self.board.epoch();
                match locking
                    .step(ends.lock_word(), me, &self.board)
                    .expect("a valid lock word")
                {
                    LockStep::Acquired { .. } => break,
                    LockStep::Park { expected } => self
                        .futex
                        .park(&[(ends.lock_word(), expected), (&self.board.epoch, epoch)]),
                }
            }
            let result = f(ends);
            let wake = unlock(ends.lock_word(), me).expect("held");
            self.futex.wake(ends.lock_word(), wake);
            result
        }
    }

    /// Two senders and a receiver over a queue of one slot: both messages arrive, once each.
    pub(super) fn two_senders_one_slot() {
        let chan = Chan::new(1);
        let senders: Vec<_> = [(1, 10), (2, 20)]
            .into_iter()
            .map(|(me, value)| {
                let chan = chan.clone();
                thread::spawn(move || chan.send(me, value))
            })
            .collect();
        let mut got = [chan.recv(3), chan.recv(3)];
        for s in senders {
            s.join().expect("sender");
        }
        got.sort_unstable();
        assert_eq!(got, [10, 20]);
    }

    /// A sender claims the only slot and dies before publishing: the receiver skips the slot
    /// and gets the next sender's message, and nothing half-written.
    pub(super) fn a_dead_writer_is_skipped() {
        let chan = Chan::new(1);
        let dying = {
            let chan = chan.clone();
            thread::spawn(move || {
                let _ = chan.claim(1);
                chan.board.die(1, &chan.futex);
            })
        };
        let sender = {
            let chan = chan.clone();
            thread::spawn(move || {
                chan.send(2, 20);
            })
        };
        assert_eq!(chan.recv(3), 20);
        dying.join().expect("dying sender");
        sender.join().expect("sender");
    }

    /// A receiver takes the message of the only slot and dies before releasing it: a sender
    /// that waits for the slot frees it and sends, and the next receiver gets that message.
    pub(super) fn a_dead_reader_frees_its_slot() {
        let chan = Chan::new(1);
        chan.send(1, 10);
        let dying = {
            let chan = chan.clone();
            thread::spawn(move || {
                let (_, value) = chan.take(3);
                chan.board.die(3, &chan.futex);
                value
            })
        };
        let sender = {
            let chan = chan.clone();
            thread::spawn(move || chan.send(1, 20))
        };
        assert_eq!(dying.join().expect("dying receiver"), 10);
        assert_eq!(chan.recv(2), 20);
        sender.join().expect("sender");
    }

    /// The last sender closes while another process opens a sender from the shared handle:
    /// either the open comes first (and the senders are not gone) or it is refused (and they
    /// are gone for good) — never an open sender beside the flag.
    pub(super) fn an_open_and_the_last_close_never_cross() {
        let chan = Chan::new(1);
        chan.ends().init(1);
        let closer = {
            let chan = chan.clone();
            thread::spawn(move || {
                chan.locked(1, |ends| ends.close(0, Role::Sender, 1, &chan.board))
            })
        };
        let opened = chan.locked(2, |ends| {
            ends.add(Role::Sender, 2, &chan.board)
                .expect("room in the table")
                .0
        });
        let _ = closer.join().expect("closer");
        let gone = chan.ends().is_gone(Role::Sender);
        assert_eq!(gone, opened.is_none(), "opened {opened:?}, gone {gone}");
        assert_eq!(chan.ends().has_live(Role::Sender, &chan.board), !gone);
    }

    /// A moved end is opened by two processes at once: exactly one gets it. Its giver dies
    /// meanwhile: then nobody may, and the role is gone once settled.
    pub(super) fn a_moved_end_opens_once() {
        let chan = Chan::new(1);
        chan.ends().init(1);
        let ticket = chan.locked(1, |ends| {
            ends.give(Some(0), Role::Sender, 1).expect("own entry")
        });
        let other = {
            let chan = chan.clone();
            thread::spawn(move || {
                chan.locked(2, |ends| ends.take(ticket, Role::Sender, 2, &chan.board))
            })
        };
        let mine = chan.locked(3, |ends| ends.take(ticket, Role::Sender, 3, &chan.board));
        let theirs = other.join().expect("other opener");
        assert!(
            matches!(
                (mine, theirs),
                (Ok(0), Err(Refused::Busy)) | (Err(Refused::Busy), Ok(0))
            ),
            "{mine:?} {theirs:?}"
        );
    }

    /// The giver of a moved end dies while a receiver settles: the end counts until then,
    /// and is gone after.
    pub(super) fn a_moved_end_whose_giver_dies_is_gone() {
        let chan = Chan::new(1);
        chan.ends().init(1);
        let ticket = chan.locked(1, |ends| {
            ends.give(Some(0), Role::Sender, 1).expect("own entry")
        });
        let dying = {
            let chan = chan.clone();
            thread::spawn(move || chan.board.die(1, &chan.futex))
        };
        let (live, _) = chan.locked(2, |ends| ends.settle(Role::Sender, &chan.board));
        dying.join().expect("dying giver");
        let opened = chan.locked(3, |ends| ends.take(ticket, Role::Sender, 3, &chan.board));
        if live {
            assert!(matches!(opened, Err(Refused::Gone)), "{opened:?}");
        } else {
            assert!(chan.ends().is_gone(Role::Sender));
            assert!(opened.is_err());
        }
    }
}

#[cfg(all(test, netmcore_loom))]
mod loom_channel {
    use super::scenarios;

    #[test]
    fn loom_two_senders_one_slot() {
        loom::model(scenarios::two_senders_one_slot);
    }

    #[test]
    fn loom_a_dead_writer_is_skipped() {
        loom::model(scenarios::a_dead_writer_is_skipped);
    }

    #[test]
    fn loom_a_dead_reader_frees_its_slot() {
        loom::model(scenarios::a_dead_reader_frees_its_slot);
    }

    #[test]
    fn loom_an_open_and_the_last_close_never_cross() {
        loom::model(scenarios::an_open_and_the_last_close_never_cross);
    }

    #[test]
    fn loom_a_moved_end_opens_once() {
        loom::model(scenarios::a_moved_end_opens_once);
    }

    #[test]
    fn loom_a_moved_end_whose_giver_dies_is_gone() {
        loom::model(scenarios::a_moved_end_whose_giver_dies_is_gone);
    }
}

#[cfg(all(test, not(netmcore_loom)))]
mod tests {
    use super::*;
    use crate::protocol::NoDeaths;
    use crate::testing::Futex;

    #[test]
    fn scenarios_pass_with_threads() {
        for _ in 0..200 {
            scenarios::two_senders_one_slot();
            scenarios::a_dead_writer_is_skipped();
            scenarios::a_dead_reader_frees_its_slot();
            scenarios::an_open_and_the_last_close_never_cross();
            scenarios::a_moved_end_opens_once();
            scenarios::a_moved_end_whose_giver_dies_is_gone();
        }
    }

    #[test]
    fn stamps_pack_and_unpack() {
        let s = stamp(LAP_MASK, READING, 0x3fff_ffff) | WAITER;
        assert_eq!(
            (lap_of(s), state_of(s), tag_of(s)),
            (LAP_MASK, READING, 0x3fff_ffff)
        );
        assert_eq!(lap_diff(0, LAP_MASK), 1, "laps wrap");
        assert_eq!(lap_diff(LAP_MASK, 0), BEHIND);
        for ticket in [
            Ticket {
                index: 0,
                generation: 0,
            },
            Ticket {
                index: ENDS - 1,
                generation: LAP_MASK,
            },
        ] {
            assert_eq!(Ticket::from_bits(ticket.to_bits()), Some(ticket));
        }
        assert_eq!(Ticket::from_bits(1 << 39), None);
        assert_eq!(Ticket::from_bits(ENDS as u64), None);
    }

    #[test]
    fn positions_wrap_around_the_laps() {
        let words = ChannelWords::new();
        let slots: Vec<SlotWords> = (0..3).map(|_| SlotWords::new()).collect();
        let queue = QueueState::attach(&words, &slots[..], 3);
        // Far into the counters: lap 2^31 - 1 of slot 0, the next position wraps the lap.
        let start = u64::from(LAP_MASK) * 3;
        words.tail.store(start, Ordering::SeqCst);
        words.head.store(start, Ordering::SeqCst);
        for s in &slots {
            s.stamp.store(stamp(LAP_MASK, FREE, 0), Ordering::SeqCst);
        }
        for i in 0..10 {
            let Ok(Claim::Claimed(spot)) = queue.claim(1, false, &NoDeaths, &Futex::new()) else {
                panic!("room");
            };
            assert_eq!(spot.pos, start + i);
            queue.publish(spot, 1, 0, &Futex::new()).expect("ours");
            let Ok(Take::Taken { spot: got, .. }) = queue.take(2, false, &NoDeaths, &Futex::new())
            else {
                panic!("a message");
            };
            assert_eq!(got, spot);
            queue.release(got, 2, &Futex::new()).expect("ours");
        }
    }

    #[test]
    fn stamps_out_of_step_are_bad_states() {
        let words = ChannelWords::new();
        let slots: Vec<SlotWords> = (0..2).map(|_| SlotWords::new()).collect();
        let queue = QueueState::attach(&words, &slots[..], 2);
        // A stamp three laps ahead of the counters.
        slots[0].stamp.store(stamp(3, FULL, 1), Ordering::SeqCst);
        assert!(queue.claim(1, false, &NoDeaths, &Futex::new()).is_err());
        assert!(queue.take(2, false, &NoDeaths, &Futex::new()).is_err());
        // A publication of a slot that is not the caller's.
        slots[0].stamp.store(stamp(0, WRITING, 5), Ordering::SeqCst);
        let spot = Spot {
            pos: 0,
            index: 0,
            lap: 0,
        };
        assert!(queue.publish(spot, 1, 0, &Futex::new()).is_err());
        assert!(queue.release(spot, 1, &Futex::new()).is_err());
    }

    #[test]
    fn the_ends_table_fills_and_settles() {
        let words = ChannelWords::new();
        let entries: Vec<AtomicU64> = (0..3).map(|_| AtomicU64::new(0)).collect();
        let ends = EndsState::attach(&words, &entries);
        ends.init(1);
        let (added, _) = ends.add(Role::Receiver, 2, &NoDeaths).expect("room");
        assert_eq!(added, Some(2));
        assert_eq!(ends.add(Role::Sender, 3, &NoDeaths), Err(TableFull));
        assert_eq!(ends.give(None, Role::Sender, 1), Err(TableFull));
        assert_eq!(ends.close(1, Role::Receiver, 1, &NoDeaths), Wake::None);
        assert!(!ends.is_gone(Role::Receiver));
        assert_eq!(ends.close(2, Role::Receiver, 2, &NoDeaths), Wake::All);
        assert!(ends.is_gone(Role::Receiver));
        assert_eq!(
            ends.add(Role::Receiver, 4, &NoDeaths),
            Ok((None, Wake::None))
        );
    }
}
