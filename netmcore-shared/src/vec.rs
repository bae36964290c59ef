//! Fixed-size arrays of plain data in shared memory: [`SharedVec<T>`] and [`SharedMatrix<T>`],
//! written through exclusive claims of disjoint ranges and read after `freeze`.
//!
//! Both are an [`Array`] over a segment: the claims table of [`crate::claims::state`] (its
//! lock word, its flags word and [`CLAIM_SLOTS`](crate::segment::CLAIM_SLOTS) slots), then
//! the elements. A vector's table counts elements, a matrix's counts rows; the array knows
//! how many elements one counted *unit* holds (1, or the number of columns).
//!
//! The elements are only ever handed out through the two proofs below, which only this
//! module makes: [`Claimed`] right after the table recorded a claim for this process, and
//! [`Frozen`] right after the frozen flag was read set.

mod matrix;

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut, Range};
use std::sync::Arc;

use netmcore_resources::ResId;
use zerocopy::IntoBytes;

use crate::claims::state::{ClaimRefused, ClaimSlot, ClaimsTable, ClaimsWords, FreezeRefused};
use crate::handle::{Handle, fingerprint};
use crate::header::Kind;
use crate::mutex::state::{LockStep, Locking};
use crate::protocol::Peers;
use crate::segment::{Element, Layout, Segment, open};
use crate::sys;
use crate::wait::{Watch, own_tag};
use crate::{Error, Plain, Result};

pub use matrix::SharedMatrix;

/// How many times a claimer looks at a held table lock before it sleeps: the lock is held
/// only for a scan of the slots, far shorter than a sleep and a wake.
const SPINS: u32 = 100;

/// The proof that the claims table of a segment holds a live claim of a range for the calling
/// process, which `sys::claimed_slice` consumes to hand out the elements. Only this module
/// makes one (its field is private), right after the table recorded the claim, and the
/// `Claim` that owns the slice releases the claim only when the slice is gone.
pub(crate) struct Claimed(());

/// The proof that a vector's frozen flag was read set (with `Acquire`), which
/// `sys::frozen_slice` consumes to hand out the elements. Only this module makes one.
pub(crate) struct Frozen(());

/// `n` as the `u64` of a claims table (a `usize` has at most 64 bits on every target).
fn wide(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// The segment of a vector or matrix, seen as a claims table of `units` and elements `T`.
struct Array<T: Plain> {
    segment: Arc<Segment>,
    layout: Layout,
    /// Elements per unit of the claims table: 1 for a vector, the columns for a matrix.
    unit: usize,
    _elements: PhantomData<T>,
}

impl<T: Plain> Array<T> {
    /// A new segment of `layout` for the structure `S`, all zeroes (an unlocked, unfrozen,
    /// empty claims table and zeroed elements), then `values` copied in if given.
    fn create<S: 'static>(layout: Layout, unit: usize, values: Option<&[T]>) -> Result<Array<T>> {
        let segment = Segment::create(layout.kind, fingerprint::<S>(), layout.sizes(), |bytes| {
            if let Some(values) = values {
                let source = values.as_bytes();
                let end = layout.payload.checked_add(source.len());
                let at = end
                    .and_then(|end| bytes.get_mut(layout.payload..end))
                    .ok_or(Error::TooLarge {
                        size: source.len(),
                        max: layout.payload_len,
                    })?;
                at.copy_from_slice(source);
            }
            Ok(())
        })?;
        Ok(Array {
            segment,
            layout,
            unit,
            _elements: PhantomData,
        })
    }

    /// Opens the segment of `handle`, a structure `S` of `kind`; the unit is computed from the
    /// checked layout by `unit`.
    fn open<S: 'static>(
        handle: Handle<S>,
        kind: Kind,
        unit: impl FnOnce(&Layout) -> usize,
    ) -> Result<Array<T>> {
        let (segment, layout) = open::<S>(handle, kind, Element::of::<T>())?;
        Ok(Array {
            segment,
            unit: unit(&layout),
            layout,
            _elements: PhantomData,
        })
    }

    fn id(&self) -> ResId {
        self.segment.id()
    }

    /// The units the claims table counts (elements or rows).
    fn units(&self) -> usize {
        self.layout.count
    }

    /// All the elements.
    fn elements(&self) -> usize {
        self.layout.count * self.unit
    }

    /// The claims table: the layout was computed here (at creation) or checked against the
    /// header (at open), so its words and slots are in bounds and aligned.
    fn table(&self) -> ClaimsTable<'_> {
        let mapping = self.segment.mapping();
        let words = sys::words_at::<ClaimsWords, _>(mapping, self.layout.words)
            .unwrap_or_else(|| unreachable!("the layout of a mapped array holds its words"));
        let slots = sys::words_slice_at::<ClaimSlot, _>(
            mapping,
            self.layout.table,
            self.layout.table_entries,
        )
        .unwrap_or_else(|| unreachable!("the layout of a mapped array holds its slots"));
        ClaimsTable::attach(words, slots, wide(self.units()))
    }

    /// Runs `f` with the table's lock held by `me`. The lock is the mutex protocol without
    /// poison: a holder that died is taken over (every change of the table leaves it
    /// consistent), and a wait watches the death board beside the lock word.
    ///
    /// The threads of this process take the lock one at a time (the segment's local lock),
    /// so a lock word that names this process while this thread goes for it is held by
    /// nobody: written by a stray writer, or left by a thread that panicked holding it. It
    /// is taken over like a dead holder's, where waiting for it would never end.
    fn locked<R>(&self, me: u32, f: impl FnOnce(&ClaimsTable<'_>, &Watch) -> R) -> Result<R> {
        let _alone = self.segment.local_lock();
        let table = self.table();
        let watch = Watch::new();
        let holders = Holders { me, watch: &watch };
        let mut locking = Locking::new();
        let mut spins = 0;
        loop {
            let epoch = watch.epoch();
            match table.lock_step(&mut locking, me, &holders) {
                Ok(LockStep::Acquired { took_over }) => {
                    if took_over {
                        tracing::debug!(
                            id = self.id().0,
                            "{}: took the claims table's lock over from a holder that is gone",
                            self.id()
                        );
                    }
                    break;
                }
                Ok(LockStep::Park { expected }) => {
                    if spins < SPINS {
                        spins += 1;
                        std::hint::spin_loop();
                        continue;
                    }
                    watch.park(table.lock_word(), expected, epoch, None);
                }
                Err(bad) => return Err(bad.into_error(self.id())),
            }
        }
        let result = f(&table, &watch);
        match table.unlock(me) {
            Ok(wake) => {
                let _ = sys::wake(table.lock_word(), wake);
            }
            // Someone else wrote the lock word while this process held it: the segment is
            // corrupt. What `f` did stands; leave the word as it is and wake everyone, who
            // will report it.
            Err(bad) => {
                tracing::warn!(
                    id = self.id().0,
                    "{}: {} (found {:#x}) at unlock",
                    self.id(),
                    bad.what,
                    bad.value
                );
                let _ = sys::futex_wake(table.lock_word(), u32::MAX);
            }
        }
        Ok(result)
    }

    /// Claims the units `range` (elements or rows) for the calling process.
    fn claim(&self, range: Range<usize>) -> Result<Claim<'_, T>> {
        let out_of_bounds = || Error::OutOfBounds {
            requested: range.clone(),
            len: self.units(),
        };
        if range.start > range.end || range.end > self.units() {
            return Err(out_of_bounds());
        }
        let me = own_tag()?;
        let wanted = wide(range.start)..wide(range.end);
        let slot = match self.locked(me, |table, watch| table.claim_locked(me, watch, wanted))? {
            Ok(slot) => slot,
            Err(ClaimRefused::OutOfBounds) => return Err(out_of_bounds()),
            Err(ClaimRefused::Frozen) => return Err(Error::Frozen),
            Err(ClaimRefused::Full) => return Err(Error::Full),
            Err(ClaimRefused::Overlap { held }) => {
                // The table checked `held` against its length, which is a usize.
                let narrow = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
                return Err(Error::Overlap {
                    requested: range,
                    held: narrow(held.start)..narrow(held.end),
                });
            }
            Err(ClaimRefused::Bad(bad)) => return Err(bad.into_error(self.id())),
        };
        let table = self.table();
        // In bounds: `range.end <= units`, and the layout holds `units * unit` elements.
        let first = range.start * self.unit;
        let count = (range.end - range.start) * self.unit;
        let offset = self.layout.payload + first * size_of::<T>();
        match sys::claimed_slice::<T, _>(self.segment.mapping(), offset, count, Claimed(())) {
            Some(elements) => Ok(Claim {
                elements,
                table,
                slot,
                tag: me,
                range,
                id: self.id(),
            }),
            None => {
                let _ = table.release(slot, me);
                Err(self
                    .segment
                    .corrupt("the claimed elements lie outside the mapping"))
            }
        }
    }

    /// Freezes the array (idempotent).
    fn freeze(&self) -> Result<()> {
        if self.table().is_frozen() == Ok(true) {
            return Ok(());
        }
        let me = own_tag()?;
        match self.locked(me, |table, watch| table.freeze_locked(watch))? {
            Ok(()) => Ok(()),
            Err(FreezeRefused::Busy) => Err(Error::Busy),
            Err(FreezeRefused::Bad(bad)) => Err(bad.into_error(self.id())),
        }
    }

    /// Whether the array is frozen; a corrupt flags word reads as not frozen.
    fn is_frozen(&self) -> bool {
        self.table().is_frozen() == Ok(true)
    }

    /// `count` elements from element `first`, once frozen.
    fn frozen(&self, first: usize, count: usize) -> Result<&[T]> {
        match self.table().is_frozen() {
            Ok(true) => {}
            Ok(false) => return Err(Error::NotFrozen),
            Err(bad) => return Err(bad.into_error(self.id())),
        }
        let offset = first
            .checked_mul(size_of::<T>())
            .and_then(|at| at.checked_add(self.layout.payload));
        offset
            .and_then(|offset| {
                sys::frozen_slice::<T, _>(self.segment.mapping(), offset, count, Frozen(()))
            })
            .ok_or_else(|| self.segment.corrupt("the elements lie outside the mapping"))
    }

    fn debug(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(name)
            .field("id", &self.id())
            .field("frozen", &self.is_frozen())
            .finish_non_exhaustive()
    }
}

/// Who can hold a claims table's lock, for a thread of the process `me` that holds the
/// segment's local lock: nobody of `me` (no other thread of it can hold the table's lock
/// meanwhile), and of the others whoever the death board says is alive. A tag that holds
/// nothing counts as dead, so that a word naming it is taken over.
struct Holders<'a> {
    me: u32,
    watch: &'a Watch,
}

impl Peers for Holders<'_> {
    fn is_dead(&self, tag: u32) -> bool {
        tag == self.me || self.watch.is_dead(tag)
    }
}

/// `len` elements of `T` as a vector's layout.
fn vec_layout<T: Plain>(len: usize) -> Result<Layout> {
    Layout::vec(Element::of::<T>(), len).ok_or(Error::TooLarge {
        size: len.saturating_mul(size_of::<T>()),
        max: isize::MAX.unsigned_abs(),
    })
}

/// A fixed-size array of [`Plain`] values in shared memory, written by processes through
/// exclusive claims of disjoint ranges, then frozen and read by all: the counterpart of
/// OCamlnet's `Netmcore_array` (and of a `multiprocessing.Array`), with a borrow discipline
/// checked across processes like a `RefCell`'s.
///
/// * **Write phase.** [`claim`](SharedVec::claim) hands out a [`Claim`], a `&mut [T]` over a
///   range, as long as no live claim (of any process) overlaps it; the claim ends when the
///   `Claim` is dropped, or when its process dies. At most
///   [`CLAIM_SLOTS`](SharedVec::CLAIM_SLOTS) claims are live at once.
/// * **Read phase.** [`freeze`](SharedVec::freeze), once no claim is live, ends the write
///   phase for good; from then on every process reads the elements in place with
///   [`as_slice`](SharedVec::as_slice), without a lock.
///
/// ```
/// use netmcore_shared::{Error, SharedVec};
///
/// # fn main() -> netmcore_shared::Result<()> {
/// let squares = SharedVec::<u64>::zeroed(8)?;
/// {
///     // Workers would open `squares.handle()` and claim a part each.
///     let mut low = squares.claim(0..4)?;
///     let mut high = squares.claim(4..8)?;
///     assert!(matches!(squares.claim(3..5), Err(Error::Overlap { .. })));
///     for (i, x) in low.iter_mut().chain(high.iter_mut()).enumerate() {
///         *x = (i * i) as u64;
///     }
///     assert!(matches!(squares.freeze(), Err(Error::Busy)));
/// } // the claims end here
/// assert!(matches!(squares.as_slice(), Err(Error::NotFrozen)));
/// squares.freeze()?;
/// assert_eq!(squares.as_slice()?, [0, 1, 4, 9, 16, 25, 36, 49]);
/// assert!(matches!(squares.claim(0..1), Err(Error::Frozen)));
/// # Ok(())
/// # }
/// ```
///
/// **Robust.** A claim of a process that died (killed in the middle of its writes, say) is
/// released by the next claim or freeze that meets it; its elements hold whatever it wrote,
/// torn values included (every bit pattern is a valid `T`). A process that dies holding the
/// lock of the claims table, which is held only for a scan of the slots, is taken over.
///
/// **Lifetime.** The vector lives in a segment of its own, which the master destroys when the
/// last process that created or opened it has dropped its values or ended.
pub struct SharedVec<T: Plain> {
    array: Array<T>,
}

impl<T: Plain> SharedVec<T> {
    /// The most claims that can be live at once in one vector or matrix, over all processes;
    /// one more is [`Error::Full`].
    pub const CLAIM_SLOTS: usize = crate::segment::CLAIM_SLOTS;

    /// A new vector of `len` zeroes, in a segment of its own; the calling process is its user.
    ///
    /// # Errors
    ///
    /// [`Error::Master`] when no master can create the segment (a worker whose master is
    /// gone, a ledger or `shm_open` failure); [`Error::TooLarge`] for a length too large to
    /// map.
    pub fn zeroed(len: usize) -> Result<SharedVec<T>> {
        let array = Array::create::<SharedVec<T>>(vec_layout::<T>(len)?, 1, None)?;
        Ok(SharedVec { array })
    }

    /// A new vector holding a copy of `values`, in a segment of its own.
    ///
    /// # Errors
    ///
    /// As [`SharedVec::zeroed`].
    pub fn from_slice(values: &[T]) -> Result<SharedVec<T>> {
        let layout = vec_layout::<T>(values.len())?;
        let array = Array::create::<SharedVec<T>>(layout, 1, Some(values))?;
        Ok(SharedVec { array })
    }

    /// Opens the vector named by `handle` (made by [`SharedVec::handle`] in any process of
    /// the run): the calling process becomes a user, and maps it wherever it likes.
    ///
    /// # Errors
    ///
    /// [`Error::WrongType`] for a handle of another structure or element type;
    /// [`Error::Corrupt`] for a segment whose header does not hold; [`Error::Master`] for an
    /// unknown id (`NoResource`: the vector is gone) or no master.
    pub fn open(handle: Handle<SharedVec<T>>) -> Result<SharedVec<T>> {
        let array = Array::open(handle, Kind::Vec, |_| 1)?;
        Ok(SharedVec { array })
    }

    /// The handle of this vector, to pass to other processes.
    #[must_use]
    pub fn handle(&self) -> Handle<SharedVec<T>> {
        Handle::new(self.array.id())
    }

    /// The number of elements.
    #[must_use]
    pub fn len(&self) -> usize {
        self.array.units()
    }

    /// Whether the vector has no element.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Claims the elements `range` for the calling process: the [`Claim`] derefs to them,
    /// exclusively, until it is dropped. An empty range overlaps nothing (but still takes a
    /// slot while it lives).
    ///
    /// Blocks only while another process holds the lock of the claims table, for a scan of
    /// its slots (or until that process is known dead); a claim of a process that died is
    /// released here when met.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfBounds`] for a reversed range or one that reaches beyond the vector;
    /// [`Error::Overlap`] naming a live claim that overlaps `range` (the first found);
    /// [`Error::Frozen`] once the vector is frozen; [`Error::Full`] when
    /// [`CLAIM_SLOTS`](SharedVec::CLAIM_SLOTS) claims are live; [`Error::Corrupt`] for a claims
    /// table that no protocol state allows; [`Error::Master`] in a worker with no tag.
    pub fn claim(&self, range: Range<usize>) -> Result<Claim<'_, T>> {
        self.array.claim(range)
    }

    /// Ends the write phase for good: from now on claims are refused and everyone may read.
    /// Freezing a frozen vector does nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Busy`] while a live claim remains (of this or another process; a dead
    /// process's claim is released here); [`Error::Corrupt`] as [`SharedVec::claim`].
    pub fn freeze(&self) -> Result<()> {
        self.array.freeze()
    }

    /// Whether the vector is frozen. A corrupt flags word reads as not frozen (and
    /// [`SharedVec::as_slice`] reports it).
    #[must_use]
    pub fn is_frozen(&self) -> bool {
        self.array.is_frozen()
    }

    /// The elements, in place, once the vector is frozen.
    ///
    /// # Errors
    ///
    /// [`Error::NotFrozen`] before [`SharedVec::freeze`]; [`Error::Corrupt`] for a flags word
    /// that is neither frozen nor not.
    pub fn as_slice(&self) -> Result<&[T]> {
        self.array.frozen(0, self.array.elements())
    }
}

impl<T: Plain> fmt::Debug for SharedVec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.array.debug("SharedVec", f)
    }
}

/// An exclusive claim of a range of a [`SharedVec`] (or of rows of a [`SharedMatrix`]): it
/// derefs to the claimed elements, and releases the claim when dropped (one atomic
/// compare-and-swap, no lock).
///
/// While it lives, no other claim of any process overlaps it, and the vector cannot be
/// frozen.
#[must_use = "the claim is released as soon as it is dropped"]
pub struct Claim<'a, T: Plain> {
    elements: &'a mut [T],
    table: ClaimsTable<'a>,
    slot: usize,
    tag: u32,
    range: Range<usize>,
    id: ResId,
}

impl<T: Plain> Claim<'_, T> {
    /// The range claimed, in the units of the call that made it: elements for
    /// [`SharedVec::claim`], **rows** for [`SharedMatrix::claim_rows`] (the claim then derefs
    /// to `range.len() * cols` elements).
    #[must_use]
    pub fn range(&self) -> Range<usize> {
        self.range.clone()
    }
}

impl<T: Plain> Deref for Claim<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.elements
    }
}

impl<T: Plain> DerefMut for Claim<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.elements
    }
}

impl<T: Plain> Drop for Claim<'_, T> {
    fn drop(&mut self) {
        // Another writer of the slot's owner: the segment is corrupt; the claim cannot be
        // given back more than it is.
        if let Err(bad) = self.table.release(self.slot, self.tag) {
            tracing::warn!(
                id = self.id.0,
                "{}: {} (found {:#x}) at the release of claim {:?}",
                self.id,
                bad.what,
                bad.value,
                self.range
            );
        }
    }
}

impl<T: Plain + fmt::Debug> fmt::Debug for Claim<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claim")
            .field("range", &self.range)
            .field("elements", &&*self.elements)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use proptest::prelude::*;

    use super::*;
    use crate::testing::scribble;

    proptest! {
        /// Random bytes written anywhere over a vector's segment — header, lock and flags
        /// words, claim slots or elements — give an error when the segment is checked again
        /// (`Corrupt` or `WrongType`), or a vector that still works; and the value already
        /// open keeps working without a panic: a claim, a write through it, a freeze and a
        /// read each return a value or an error. The program is alone before startup, so a
        /// lock word or slot owner naming anyone but itself is taken over or freed.
        #[test]
        fn scribbled_vec_segments_give_errors_never_panics(
            (offset, bytes) in scribble::scribbles(&[0..128, 128..136, 136..1672, 1672..1692]),
        ) {
            let v = SharedVec::from_slice(&[1u32, 2, 3, 4]).expect("a vector before startup");
            let id = v.handle().id();
            let name = scribble::write(id, offset, &bytes);
            let checked = scribble::recheck(
                id,
                &name,
                Kind::Vec,
                fingerprint::<SharedVec<u32>>(),
                Element::of::<u32>(),
            );
            prop_assert!(checked.is_ok(), "{checked:?}");
            prop_assert_eq!(v.len(), 4);
            match v.claim(1..3) {
                Ok(mut claim) => {
                    prop_assert_eq!(claim.len(), 2);
                    claim[1] = claim[0].wrapping_add(7);
                }
                Err(Error::Frozen | Error::Overlap { .. } | Error::Full | Error::Corrupt { .. }) => {}
                Err(other) => prop_assert!(false, "unexpected error {other:?}"),
            }
            match v.freeze() {
                Ok(()) => prop_assert!(v.is_frozen()),
                Err(Error::Busy | Error::Corrupt { .. }) => {}
                Err(other) => prop_assert!(false, "unexpected error {other:?}"),
            }
            match v.as_slice() {
                Ok(elements) => prop_assert_eq!(elements.len(), 4),
                Err(Error::NotFrozen | Error::Corrupt { .. }) => prop_assert!(!v.is_frozen()),
                Err(other) => prop_assert!(false, "unexpected error {other:?}"),
            }
        }
    }

    #[test]
    fn claims_exclude_each_other_and_freeze_publishes() {
        let v = SharedVec::<u32>::zeroed(10).expect("a vector");
        assert_eq!((v.len(), v.is_empty()), (10, false));
        let mut a = v.claim(0..4).expect("free");
        let b = v.claim(4..10).expect("disjoint");
        assert_eq!(
            (a.len(), b.len(), a.range(), b.range()),
            (4, 6, 0..4, 4..10)
        );
        match v.claim(3..5) {
            Err(Error::Overlap { requested, held }) => {
                assert_eq!((requested, held), (3..5, 0..4));
            }
            other => panic!("{other:?}"),
        }
        a.copy_from_slice(&[1, 2, 3, 4]);
        assert!(matches!(v.freeze(), Err(Error::Busy)));
        drop((a, b));
        assert!(matches!(v.as_slice(), Err(Error::NotFrozen)));
        assert!(!v.is_frozen());
        v.freeze().expect("no claim left");
        v.freeze().expect("idempotent");
        assert!(v.is_frozen());
        assert_eq!(
            v.as_slice().expect("frozen"),
            [1, 2, 3, 4, 0, 0, 0, 0, 0, 0]
        );
        assert!(matches!(v.claim(0..1), Err(Error::Frozen)));
    }

    /// A table lock word that names this very process (written by a stray writer) is held
    /// by nobody: the threads of a process take it one at a time, so a claim takes it over
    /// rather than wait for itself forever.
    #[test]
    fn a_lock_word_naming_this_process_is_taken_over() {
        let v = SharedVec::<u32>::zeroed(4).expect("a vector");
        let me = own_tag().expect("the program's tag");
        for word in [me, me | crate::mutex::state::WAITERS] {
            v.array.table().lock_word().store(word, Ordering::Relaxed);
            drop(v.claim(0..4).expect("taken over"));
            assert_eq!(v.array.table().lock_word().load(Ordering::Relaxed), 0);
        }
        v.array.table().lock_word().store(me, Ordering::Relaxed);
        v.freeze().expect("taken over");
        assert!(v.is_frozen());
    }

    /// Threads of one process still exclude each other: every claim of the same elements
    /// sees what the previous one wrote.
    #[test]
    fn threads_of_one_process_claim_in_turn() {
        let v = SharedVec::<u64>::zeroed(2).expect("a vector");
        let same = SharedVec::open(v.handle()).expect("the same vector");
        std::thread::scope(|s| {
            for vector in [&v, &same, &v, &same] {
                s.spawn(move || {
                    let mut done = 0;
                    while done < 200 {
                        match vector.claim(0..2) {
                            Ok(mut claim) => {
                                claim[0] += 1;
                                claim[1] = claim[0];
                                done += 1;
                            }
                            Err(Error::Overlap { .. }) => std::thread::yield_now(),
                            Err(e) => panic!("{e}"),
                        }
                    }
                });
            }
        });
        v.freeze().expect("no claim left");
        assert_eq!(v.as_slice().expect("frozen"), [800, 800]);
    }

    #[test]
    fn out_of_bounds_ranges_are_refused() {
        let v = SharedVec::from_slice(&[1u8, 2, 3]).expect("a vector");
        match v.claim(2..4) {
            Err(Error::OutOfBounds { requested, len }) => assert_eq!((requested, len), (2..4, 3)),
            other => panic!("{other:?}"),
        }
        #[expect(
            clippy::reversed_empty_ranges,
            reason = "a reversed range is what is refused"
        )]
        let reversed = 2..1;
        assert!(matches!(v.claim(reversed), Err(Error::OutOfBounds { .. })));
        assert_eq!(&*v.claim(3..3).expect("empty at the end"), &[] as &[u8]);
        v.freeze().expect("freeze");
        assert_eq!(v.as_slice().expect("frozen"), [1, 2, 3]);
    }

    #[test]
    fn the_table_holds_claim_slots_claims_at_once() {
        let v = SharedVec::<u8>::zeroed(100).expect("a vector");
        let claims: Vec<_> = (0..SharedVec::<u8>::CLAIM_SLOTS)
            .map(|i| v.claim(i..i + 1).expect("a free slot"))
            .collect();
        assert!(matches!(v.claim(99..100), Err(Error::Full)));
        drop(claims);
        drop(v.claim(0..100).expect("every slot released"));
    }

    #[test]
    fn an_empty_vector_works() {
        let v = SharedVec::<u64>::from_slice(&[]).expect("a vector");
        assert!(v.is_empty());
        v.freeze().expect("freeze");
        assert_eq!(v.as_slice().expect("frozen"), &[] as &[u64]);
    }

    #[test]
    fn opening_checks_the_type() {
        let v = SharedVec::<u32>::zeroed(4).expect("a vector");
        let same = SharedVec::open(v.handle()).expect("the same type");
        drop(same.claim(0..4).expect("free"));
        // A handle deserialized as another element type keeps its fingerprint.
        let forged =
            Handle::<SharedVec<u64>>::from_parts(v.handle().id(), v.handle().fingerprint());
        assert!(matches!(
            SharedVec::open(forged),
            Err(Error::WrongType { .. })
        ));
        // A handle that claims the right type for another segment: the header says no.
        for err in [
            SharedVec::<u64>::open(Handle::new(v.handle().id())).map(drop),
            SharedMatrix::<u32>::open(Handle::new(v.handle().id())).map(drop),
            crate::SharedAtomics::open(Handle::new(v.handle().id())).map(drop),
        ] {
            assert!(matches!(err, Err(Error::WrongType { .. })), "{err:?}");
        }
    }
}
