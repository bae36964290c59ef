//! [`SharedAtomics`]: a fixed array of `AtomicU64` in a segment, right after its header.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crate::handle::{Handle, fingerprint};
use crate::header::Kind;
use crate::segment::{Element, Layout, Segment, open};
use crate::sys;
use crate::{Error, Result};

/// A fixed array of lock-free 64-bit counters and flags in shared memory, for processes (and
/// the threads in them): the counterpart of OCamlnet's atomic `Netmcore_ref`s of ints and of
/// Python's `multiprocessing.Value` without a lock.
///
/// Every process that creates or opens it reads and writes the same words with std's
/// [`AtomicU64`] operations, at any address it mapped them, with no lock and nothing to
/// recover when a process dies (a word is never torn).
///
/// ```
/// use std::sync::atomic::Ordering;
/// use netmcore_shared::SharedAtomics;
///
/// # fn main() -> netmcore_shared::Result<()> {
/// let counters = SharedAtomics::new(2)?;
/// // Another process opens it from its handle (in a process argument, say).
/// let same = SharedAtomics::open(counters.handle())?;
/// same.as_slice()[1].fetch_add(5, Ordering::Relaxed);
/// assert_eq!(counters.as_slice()[1].load(Ordering::Relaxed), 5);
/// assert_eq!(counters.len(), 2);
/// # Ok(())
/// # }
/// ```
///
/// **Lifetime.** The array lives in a segment of its own, which the master destroys when the
/// last process that created or opened it has dropped its values or ended.
pub struct SharedAtomics {
    segment: Arc<Segment>,
    layout: Layout,
}

impl SharedAtomics {
    /// A new array of `len` words, all zero, in a segment of its own; the calling process is
    /// its user.
    ///
    /// # Errors
    ///
    /// [`Error::Master`] when no master can create the segment; [`Error::TooLarge`] for a
    /// length too large to map.
    pub fn new(len: usize) -> Result<SharedAtomics> {
        let layout = Layout::atomics(len).ok_or(Error::TooLarge {
            size: len.saturating_mul(size_of::<u64>()),
            max: isize::MAX.unsigned_abs(),
        })?;
        let segment = Segment::create(
            Kind::Atomics,
            fingerprint::<SharedAtomics>(),
            layout.sizes(),
            |_| Ok(()),
        )?;
        Ok(SharedAtomics { segment, layout })
    }

    /// Opens the array named by `handle` (made by [`SharedAtomics::handle`] in any process of
    /// the run).
    ///
    /// # Errors
    ///
    /// [`Error::WrongType`] for a handle of another structure; [`Error::Corrupt`] for a
    /// segment whose header does not hold; [`Error::Master`] for an unknown id
    /// (`NoResource`: the array is gone) or no master.
    pub fn open(handle: Handle<SharedAtomics>) -> Result<SharedAtomics> {
        let (segment, layout) = open(handle, Kind::Atomics, Element::of::<u64>())?;
        Ok(SharedAtomics { segment, layout })
    }

    /// The handle of this array, to pass to other processes.
    #[must_use]
    pub fn handle(&self) -> Handle<SharedAtomics> {
        Handle::new(self.segment.id())
    }

    /// The number of words.
    #[must_use]
    pub fn len(&self) -> usize {
        self.layout.count
    }

    /// Whether the array has no word.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The words, shared with every process that has the array open.
    #[must_use]
    pub fn as_slice(&self) -> &[AtomicU64] {
        sys::words_slice_at::<AtomicU64, _>(
            self.segment.mapping(),
            self.layout.payload,
            self.layout.count,
        )
        .unwrap_or_else(|| unreachable!("the layout of a mapped array holds its words"))
    }
}

impl fmt::Debug for SharedAtomics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedAtomics")
            .field("id", &self.segment.id())
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use proptest::prelude::*;

    use super::*;
    use crate::testing::scribble;

    #[test]
    fn words_start_at_zero_and_are_shared_between_openings() {
        let a = SharedAtomics::new(3).expect("an array");
        assert_eq!((a.len(), a.is_empty()), (3, false));
        assert!(a.as_slice().iter().all(|w| w.load(Ordering::Relaxed) == 0));
        let b = SharedAtomics::open(a.handle()).expect("same type");
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        b.as_slice()[2].fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        assert_eq!(a.as_slice()[2].load(Ordering::Relaxed), 4000);
        assert!(SharedAtomics::new(0).expect("empty").is_empty());
    }

    proptest! {
        /// Random bytes written anywhere over an atomics array's segment — header or words —
        /// give an error when the segment is checked again (`Corrupt` or `WrongType`), or an
        /// array that still works; and the value already open keeps working without a panic:
        /// its words are plain counters, every value of which is valid, and its length is
        /// the one computed at creation, never read back.
        #[test]
        fn scribbled_atomics_segments_give_errors_never_panics(
            (offset, bytes) in scribble::scribbles(&[0..128, 128..160, 0..164]),
        ) {
            let atomics = SharedAtomics::new(4).expect("an array before startup");
            let id = atomics.handle().id();
            let name = scribble::write(id, offset, &bytes);
            let checked = scribble::recheck(
                id,
                &name,
                Kind::Atomics,
                fingerprint::<SharedAtomics>(),
                Element::of::<u64>(),
            );
            prop_assert!(checked.is_ok(), "{checked:?}");
            let words = atomics.as_slice();
            prop_assert_eq!(words.len(), 4);
            for word in words {
                let before = word.fetch_add(1, Ordering::Relaxed);
                prop_assert_eq!(word.load(Ordering::Relaxed), before.wrapping_add(1));
            }
        }
    }

    #[test]
    fn a_vector_handle_is_no_atomics_handle() {
        let v = crate::SharedVec::<u64>::zeroed(3).expect("a vector");
        assert!(matches!(
            SharedAtomics::open(Handle::new(v.handle().id())),
            Err(Error::WrongType { .. })
        ));
    }
}
