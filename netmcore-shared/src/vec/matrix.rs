//! [`SharedMatrix<T>`]: a row-major [`Array`] whose claims table counts rows.

use std::fmt;
use std::ops::Range;

use super::{Array, Claim};
use crate::handle::Handle;
use crate::header::Kind;
use crate::segment::{Element, Layout};
use crate::{Error, Plain, Result};

/// A fixed-size matrix of [`Plain`] values in shared memory, row-major, written by processes
/// through exclusive claims of disjoint bands of rows, then frozen and read by all: the
/// counterpart of OCamlnet's `Netmcore_matrix`, with the discipline of [`SharedVec`].
///
/// ```
/// use netmcore_shared::{Error, SharedMatrix};
///
/// # fn main() -> netmcore_shared::Result<()> {
/// let m = SharedMatrix::<f64>::zeroed(3, 2)?;
/// {
///     // Each worker would claim a band of rows: here rows 1 and 2.
///     let mut band = m.claim_rows(1..3)?;
///     assert_eq!((band.range(), band.len()), (1..3, 4));
///     band.copy_from_slice(&[1.0, 2.0, 3.0, 4.0]);
/// }
/// m.freeze()?;
/// assert_eq!(m.row(2)?, [3.0, 4.0]);
/// assert_eq!(m.as_slice()?, [0.0, 0.0, 1.0, 2.0, 3.0, 4.0]);
/// assert!(matches!(m.row(3), Err(Error::OutOfBounds { .. })));
/// # Ok(())
/// # }
/// ```
///
/// [`SharedVec`]: crate::SharedVec
pub struct SharedMatrix<T: Plain> {
    array: Array<T>,
}

impl<T: Plain> SharedMatrix<T> {
    /// A new `rows` × `cols` matrix of zeroes, in a segment of its own; the calling process
    /// is its user.
    ///
    /// # Errors
    ///
    /// [`Error::Master`] when no master can create the segment; [`Error::TooLarge`] for
    /// sizes too large to map.
    pub fn zeroed(rows: usize, cols: usize) -> Result<SharedMatrix<T>> {
        let layout = Layout::matrix(Element::of::<T>(), rows, cols).ok_or(Error::TooLarge {
            size: rows.saturating_mul(cols).saturating_mul(size_of::<T>()),
            max: isize::MAX.unsigned_abs(),
        })?;
        let array = Array::create::<SharedMatrix<T>>(layout, cols, None)?;
        Ok(SharedMatrix { array })
    }

    /// Opens the matrix named by `handle` (made by [`SharedMatrix::handle`] in any process
    /// of the run).
    ///
    /// # Errors
    ///
    /// As [`SharedVec::open`](crate::SharedVec::open).
    pub fn open(handle: Handle<SharedMatrix<T>>) -> Result<SharedMatrix<T>> {
        let array = Array::open(handle, Kind::Matrix, |layout| layout.columns)?;
        Ok(SharedMatrix { array })
    }

    /// The handle of this matrix, to pass to other processes.
    #[must_use]
    pub fn handle(&self) -> Handle<SharedMatrix<T>> {
        Handle::new(self.array.id())
    }

    /// The number of rows.
    #[must_use]
    pub fn rows(&self) -> usize {
        self.array.units()
    }

    /// The number of columns.
    #[must_use]
    pub fn cols(&self) -> usize {
        self.array.unit
    }

    /// Claims the whole rows `rows` for the calling process: the [`Claim`] derefs to the
    /// elements `rows.start * cols .. rows.end * cols`, row-major, exclusively, until it is
    /// dropped. Its [`range`](Claim::range), and the ranges of an [`Error::Overlap`], are in
    /// rows.
    ///
    /// # Errors
    ///
    /// As [`SharedVec::claim`](crate::SharedVec::claim), in rows.
    pub fn claim_rows(&self, rows: Range<usize>) -> Result<Claim<'_, T>> {
        self.array.claim(rows)
    }

    /// Ends the write phase for good (idempotent).
    ///
    /// # Errors
    ///
    /// As [`SharedVec::freeze`](crate::SharedVec::freeze).
    pub fn freeze(&self) -> Result<()> {
        self.array.freeze()
    }

    /// Whether the matrix is frozen (a corrupt flags word reads as not frozen).
    #[must_use]
    pub fn is_frozen(&self) -> bool {
        self.array.is_frozen()
    }

    /// Every element, row-major, in place, once the matrix is frozen.
    ///
    /// # Errors
    ///
    /// As [`SharedVec::as_slice`](crate::SharedVec::as_slice).
    pub fn as_slice(&self) -> Result<&[T]> {
        self.array.frozen(0, self.array.elements())
    }

    /// Row `i`, in place, once the matrix is frozen.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfBounds`] (with `requested: i..i + 1`) when `i` is not below
    /// [`rows`](SharedMatrix::rows); otherwise as [`SharedMatrix::as_slice`].
    pub fn row(&self, i: usize) -> Result<&[T]> {
        if i >= self.rows() {
            return Err(Error::OutOfBounds {
                requested: i..i.saturating_add(1),
                len: self.rows(),
            });
        }
        self.array.frozen(i * self.cols(), self.cols())
    }
}

impl<T: Plain> fmt::Debug for SharedMatrix<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.array.debug("SharedMatrix", f)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::handle::fingerprint;
    use crate::testing::scribble;

    #[test]
    fn bands_of_rows_are_claimed_whole() {
        let m = SharedMatrix::<u16>::zeroed(4, 3).expect("a matrix");
        assert_eq!((m.rows(), m.cols()), (4, 3));
        let mut top = m.claim_rows(0..1).expect("free");
        let mut rest = m.claim_rows(1..4).expect("disjoint");
        assert_eq!((top.len(), rest.len()), (3, 9));
        match m.claim_rows(3..4) {
            Err(Error::Overlap { requested, held }) => assert_eq!((requested, held), (3..4, 1..4)),
            other => panic!("{other:?}"),
        }
        top.copy_from_slice(&[1, 2, 3]);
        for (i, x) in rest.iter_mut().enumerate() {
            *x = 10 + u16::try_from(i).expect("small");
        }
        assert!(matches!(m.row(0), Err(Error::NotFrozen)));
        drop((top, rest));
        m.freeze().expect("no claim left");
        assert_eq!(m.row(0).expect("frozen"), [1, 2, 3]);
        assert_eq!(m.row(3).expect("frozen"), [16, 17, 18]);
        assert_eq!(m.as_slice().expect("frozen").len(), 12);
        match m.row(4) {
            Err(Error::OutOfBounds { requested, len }) => assert_eq!((requested, len), (4..5, 4)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(m.claim_rows(0..5), Err(Error::OutOfBounds { .. })));
    }

    #[test]
    fn a_matrix_reopens_with_its_columns() {
        let m = SharedMatrix::<f32>::zeroed(2, 5).expect("a matrix");
        let same = SharedMatrix::open(m.handle()).expect("same type");
        assert_eq!((same.rows(), same.cols()), (2, 5));
        drop(same.claim_rows(1..2).expect("free"));
        assert!(matches!(
            crate::SharedVec::<f32>::open(Handle::new(m.handle().id())),
            Err(Error::WrongType { .. })
        ));
    }

    proptest! {
        /// Random bytes written anywhere over a matrix's segment — header, lock and flags
        /// words, claim slots or elements — give an error when the segment is checked again
        /// (`Corrupt` or `WrongType`), or a matrix that still works; and the value already
        /// open keeps working without a panic: its shape is the one computed at creation,
        /// and a claim of rows, a write through it, a freeze and reads of the whole and of a
        /// row each return a value or an error.
        #[test]
        fn scribbled_matrix_segments_give_errors_never_panics(
            (offset, bytes) in scribble::scribbles(&[0..128, 128..136, 136..1672, 1672..1700]),
        ) {
            let m = SharedMatrix::<u32>::zeroed(3, 2).expect("a matrix before startup");
            let id = m.handle().id();
            let name = scribble::write(id, offset, &bytes);
            let checked = scribble::recheck(
                id,
                &name,
                Kind::Matrix,
                fingerprint::<SharedMatrix<u32>>(),
                Element::of::<u32>(),
            );
            prop_assert!(checked.is_ok(), "{checked:?}");
            prop_assert_eq!((m.rows(), m.cols()), (3, 2));
            match m.claim_rows(1..2) {
                Ok(mut claim) => {
                    prop_assert_eq!(claim.len(), 2);
                    claim[1] = claim[0].wrapping_add(7);
                }
                Err(Error::Frozen | Error::Overlap { .. } | Error::Full | Error::Corrupt { .. }) => {}
                Err(other) => prop_assert!(false, "unexpected error {other:?}"),
            }
            match m.freeze() {
                Ok(()) => prop_assert!(m.is_frozen()),
                Err(Error::Busy | Error::Corrupt { .. }) => {}
                Err(other) => prop_assert!(false, "unexpected error {other:?}"),
            }
            match (m.as_slice(), m.row(2)) {
                (Ok(elements), Ok(row)) => prop_assert_eq!((elements.len(), row.len()), (6, 2)),
                (
                    Err(Error::NotFrozen | Error::Corrupt { .. }),
                    Err(Error::NotFrozen | Error::Corrupt { .. }),
                ) => prop_assert!(!m.is_frozen()),
                other => prop_assert!(false, "unexpected {other:?}"),
            }
            prop_assert!(
                matches!(m.row(3), Err(Error::OutOfBounds { .. })),
                "row 3 of 3"
            );
        }
    }
}
