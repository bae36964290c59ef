//! [`Barrier`] over the protocol of [`super::state`], in a segment.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use super::state::{Arrival, BarrierState, BarrierWords, NoFreeSlot, WaitStep};
use crate::handle::{Handle, fingerprint};
use crate::header::Kind;
use crate::segment::{Element, Layout, Segment, open};
use crate::sys;
use crate::wait::{Watch, own_tag};
use crate::{Error, Result};

/// A barrier in shared memory: `n` processes (or threads) wait until all of them have
/// arrived, round after round. The counterpart of Python's `multiprocessing.Barrier`, shaped
/// like `std::sync::Barrier` (OCamlnet has none).
///
/// ```
/// use netmcore_shared::Barrier;
///
/// # fn main() -> netmcore_shared::Result<()> {
/// // Another process would open it with `Barrier::open(meeting.handle())`.
/// let meeting = Barrier::new(2)?;
/// let leaders = std::thread::scope(|s| {
///     let other = s.spawn(|| meeting.wait());
///     let mine = meeting.wait()?;
///     let theirs = other.join().expect("the other participant")?;
///     Ok::<_, netmcore_shared::Error>(u8::from(mine) + u8::from(theirs))
/// })?;
/// assert_eq!(leaders, 1, "one leader per round");
/// # Ok(())
/// # }
/// ```
///
/// **Robust.** Every process that has the barrier open is written in a table of its segment
/// (once, however many values of it the process holds) and taken out when it drops its last
/// value. If one of them dies first — killed, crashed, or ended with the barrier open — the
/// round cannot complete: every process waiting in it, and every later wait, gets
/// [`Error::Broken`] instead of sleeping forever. A round that completed before the death
/// has passed.
///
/// **Lifetime.** The barrier lives in a segment of its own, which the master destroys when
/// the last process that created or opened it has dropped its values or ended.
pub struct Barrier {
    segment: Arc<Segment>,
    layout: Layout,
}

impl Barrier {
    /// A new barrier of `n` participants (0 acts as 1, as in std), in a segment of its own;
    /// the calling process is its user and its first opener.
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] for an `n` beyond `u32::MAX` or whose table does not fit the
    /// address space; [`Error::Master`] when no master can create the segment (a worker whose
    /// master is gone or beyond the tags, a ledger or `shm_open` failure).
    pub fn new(n: usize) -> Result<Barrier> {
        let too_large = || Error::TooLarge {
            size: n,
            max: u32::MAX as usize,
        };
        let count = u32::try_from(n).map_err(|_| too_large())?;
        let layout = Layout::barrier(count).ok_or_else(too_large)?;
        // Zeroes are the initial state: generation 0, no arrival, every opener slot free.
        let segment = Segment::create(
            Kind::Barrier,
            fingerprint::<Barrier>(),
            layout.sizes(),
            |_| Ok(()),
        )?;
        let barrier = Barrier { segment, layout };
        barrier.enter()?;
        Ok(barrier)
    }

    /// Opens the barrier named by `handle` (made by [`Barrier::handle`] in any process of the
    /// run): the calling process becomes a user and an opener, and maps it wherever it likes.
    ///
    /// # Errors
    ///
    /// [`Error::Full`] when the openers table (`2n + 8` processes) has no free slot;
    /// [`Error::WrongType`] for a handle of another structure; [`Error::Corrupt`] for a
    /// segment whose header does not hold; [`Error::Master`] for an unknown id (`NoResource`:
    /// the barrier is gone) or no master.
    pub fn open(handle: Handle<Barrier>) -> Result<Barrier> {
        let (segment, layout) = open::<Barrier>(handle, Kind::Barrier, Element::NONE)?;
        let barrier = Barrier { segment, layout };
        barrier.enter()?;
        Ok(barrier)
    }

    /// The handle of this barrier, to pass to other processes.
    #[must_use]
    pub fn handle(&self) -> Handle<Barrier> {
        Handle::new(self.segment.id())
    }

    /// Waits until `n` participants have called `wait` in this round; `true` for exactly one
    /// of them, the round's leader (the last to arrive).
    ///
    /// A barrier orders memory as std's does: what every participant wrote before it arrived
    /// is seen by every participant after the round.
    ///
    /// # Errors
    ///
    /// [`Error::Broken`] when a process that had the barrier open has died before the round
    /// completed (this wait returns as soon as a waiter sees the death), and from then on for
    /// every wait; [`Error::Corrupt`] for words that no state of the barrier allows.
    pub fn wait(&self) -> Result<bool> {
        let state = state(&self.segment, &self.layout);
        let corrupt = |bad: crate::protocol::BadState| bad.into_error(self.segment.id());
        let generation = match state.arrive().map_err(corrupt)? {
            Arrival::Leader { wake } => {
                let _ = sys::wake(state.word(), wake);
                return Ok(true);
            }
            Arrival::Broken => return Err(Error::Broken),
            Arrival::Wait { generation } => generation,
        };
        let watch = Watch::new();
        loop {
            let epoch = watch.epoch();
            match state.wait_step(generation, &watch).map_err(corrupt)? {
                WaitStep::Passed => return Ok(false),
                WaitStep::Broken { wake } => {
                    let _ = sys::wake(state.word(), wake);
                    return Err(Error::Broken);
                }
                WaitStep::Park { expected } => {
                    watch.park(state.word(), expected, epoch, None);
                }
            }
        }
    }

    /// Whether the barrier is broken: a process that had it open died before a round
    /// completed, and every wait now fails with [`Error::Broken`] (Python's `broken`).
    #[must_use]
    pub fn is_broken(&self) -> bool {
        state(&self.segment, &self.layout).is_broken()
    }

    /// Writes the calling process in the openers table, unless it is there already; it is
    /// taken out when the process drops its last value of the barrier.
    fn enter(&self) -> Result<()> {
        let me = own_tag()?;
        let layout = self.layout;
        self.segment.enter_once(|segment| {
            let slot = state(segment, &layout)
                .register(me)
                .map_err(|NoFreeSlot| Error::Full)?;
            Ok(move |segment: &Segment| {
                if let Err(bad) = state(segment, &layout).unregister(slot, me) {
                    tracing::warn!(
                        id = segment.id().0,
                        "barrier {}: cannot leave: {}",
                        segment.id(),
                        bad.into_error(segment.id())
                    );
                }
            })
        })
    }
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("id", &self.segment.id())
            .field("n", &self.layout.count)
            .field("broken", &self.is_broken())
            .finish_non_exhaustive()
    }
}

/// The protocol over the words and openers of the barrier in `segment`, laid out as `layout`:
/// computed at creation or checked against the header at open, so the words and the table are
/// always in bounds and aligned.
fn state<'a>(segment: &'a Segment, layout: &Layout) -> BarrierState<'a> {
    let words = sys::words_at::<BarrierWords, _>(segment.mapping(), layout.words)
        .unwrap_or_else(|| unreachable!("the layout of a mapped barrier holds its words"));
    let openers =
        sys::words_slice_at::<AtomicU32, _>(segment.mapping(), layout.table, layout.table_entries)
            .unwrap_or_else(|| unreachable!("the layout of a mapped barrier holds its openers"));
    // The layout's count came from a `u32` (at creation) or was checked to make one (at open).
    let n = u32::try_from(layout.count).unwrap_or(u32::MAX);
    BarrierState::attach(words, openers, n)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    use crate::testing::scribble;

    proptest! {
        /// Random bytes written anywhere over a barrier's segment — header, generation and
        /// arrival words, openers table — give an error when the segment is checked again
        /// (`Corrupt` or `WrongType`), or a barrier that still works; and the value already
        /// open keeps working without a panic. Its `n` is 1, so a wait never sleeps: the
        /// arrival leads the round, or finds the barrier broken, or finds more arrivals
        /// counted than a round has (`Corrupt`, for good: the count only grows).
        #[test]
        fn scribbled_barrier_segments_give_errors_never_panics(
            (offset, bytes) in scribble::scribbles(&[0..128, 128..136, 136..176, 0..180]),
        ) {
            let barrier = Barrier::new(1).expect("a barrier before startup");
            let id = barrier.handle().id();
            let name = scribble::write(id, offset, &bytes);
            let checked =
                scribble::recheck(id, &name, Kind::Barrier, fingerprint::<Barrier>(), Element::NONE);
            prop_assert!(checked.is_ok(), "{checked:?}");
            for _ in 0..2 {
                let broken = barrier.is_broken();
                match barrier.wait() {
                    Ok(leader) => prop_assert!(leader && !broken, "a round of one leads"),
                    Err(Error::Broken) => prop_assert!(broken),
                    Err(Error::Corrupt { .. }) => prop_assert!(!broken),
                    Err(other) => prop_assert!(false, "unexpected error {other:?}"),
                }
            }
        }
    }
}
