//! The layouts of the segments: where the header, the protocol's words, its table and the
//! payload of each structure lie, computed with overflow-checked arithmetic.
//!
//! Every segment is laid out the same way, each part aligned for what it holds:
//!
//! ```text
//! 0           HEADER_LEN      words        table                  payload             total
//! | header    | state words   | (padding)  | slots (if any)       | (pad) | elements  |
//! ```
//!
//! A layout depends only on the kind, the element type's size and alignment and the counts
//! the header records, so a process that opens a segment recomputes it from the header and
//! refuses a segment whose recorded offsets differ ([`Layout::check`]): after that, every
//! offset it uses is one it computed itself.

use netmcore_resources::ResId;

use crate::barrier::state::opener_slots;
use crate::header::{HEADER_LEN, Header, Kind, Sizes};
use crate::{Error, Result};

/// Bytes of a mutex's words (`MutexWords`: lock and poison).
pub(crate) const MUTEX_WORDS: usize = 8;
/// Bytes of a condition variable's words (`CondvarWords`: the sequence).
pub(crate) const CONDVAR_WORDS: usize = 4;
/// Bytes of a semaphore's word.
pub(crate) const SEMAPHORE_WORDS: usize = 4;
/// Bytes of a barrier's words (`BarrierWords`: generation and arrivals).
pub(crate) const BARRIER_WORDS: usize = 8;
/// Bytes of one opener slot of a barrier (a tag).
pub(crate) const OPENER_SLOT: usize = 4;
/// Bytes of a claims table's words (`ClaimsWords`: lock and flags).
pub(crate) const CLAIMS_WORDS: usize = 8;
/// Bytes of one claim slot (`ClaimSlot`), which is 8-aligned.
pub(crate) const CLAIM_SLOT: usize = 24;
/// The number of claim slots of a vector or matrix: at most this many claims are live at
/// once (more is `Error::Full`).
pub(crate) const CLAIM_SLOTS: usize = 64;

/// The size and alignment of an element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Element {
    /// `size_of::<T>()`.
    pub(crate) size: usize,
    /// `align_of::<T>()`.
    pub(crate) align: usize,
}

impl Element {
    /// The element `T`.
    pub(crate) fn of<T>() -> Element {
        Element {
            size: size_of::<T>(),
            align: align_of::<T>(),
        }
    }

    /// No element (structures without a payload).
    const NONE: Element = Element { size: 0, align: 1 };
}

/// Where the parts of one segment lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    /// The structure.
    pub(crate) kind: Kind,
    /// The element type.
    pub(crate) element: Element,
    /// Elements (rows for a matrix; participants for a barrier).
    pub(crate) count: usize,
    /// Columns for a matrix; 0 otherwise.
    pub(crate) columns: usize,
    /// Offset of the state words.
    pub(crate) words: usize,
    /// Offset of the table (openers or claim slots); where it would be if there is none.
    pub(crate) table: usize,
    /// Entries of the table.
    pub(crate) table_entries: usize,
    /// Offset of the payload.
    pub(crate) payload: usize,
    /// Bytes of the payload.
    pub(crate) payload_len: usize,
    /// Bytes of the whole segment.
    pub(crate) total: usize,
}

/// `at` rounded up to a multiple of `align` (a power of two), or `None` on overflow.
fn align_up(at: usize, align: usize) -> Option<usize> {
    debug_assert!(align.is_power_of_two());
    Some(at.checked_add(align - 1)? & !(align - 1))
}

/// The common shape: header, `words` bytes of state words (4-aligned), a table of
/// `table_entries` entries of `entry` bytes aligned to `entry_align`, and `payload_len` bytes
/// of payload aligned for `element` (and at least 8).
fn build(
    kind: Kind,
    element: Element,
    count: usize,
    columns: usize,
    words: usize,
    (table_entries, entry, entry_align): (usize, usize, usize),
    payload_len: usize,
) -> Option<Layout> {
    let words_at = HEADER_LEN;
    let table = align_up(words_at.checked_add(words)?, entry_align)?;
    let table_end = table.checked_add(table_entries.checked_mul(entry)?)?;
    let payload = align_up(table_end, element.align.max(8))?;
    let total = payload.checked_add(payload_len)?;
    // The header records u64s; a layout must also be one this process can map.
    u64::try_from(total).ok()?;
    isize::try_from(total).ok()?;
    Some(Layout {
        kind,
        element,
        count,
        columns,
        words: words_at,
        table,
        table_entries,
        payload,
        payload_len,
        total,
    })
}

impl Layout {
    /// A `Mutex<T>`: its words, then one `T`.
    pub(crate) fn mutex(element: Element) -> Option<Layout> {
        build(
            Kind::Mutex,
            element,
            1,
            0,
            MUTEX_WORDS,
            (0, 0, 4),
            element.size,
        )
    }

    /// A `Condvar`: its sequence word.
    pub(crate) fn condvar() -> Option<Layout> {
        build(
            Kind::Condvar,
            Element::NONE,
            0,
            0,
            CONDVAR_WORDS,
            (0, 0, 4),
            0,
        )
    }

    /// A `Semaphore`: its word.
    pub(crate) fn semaphore() -> Option<Layout> {
        build(
            Kind::Semaphore,
            Element::NONE,
            0,
            0,
            SEMAPHORE_WORDS,
            (0, 0, 4),
            0,
        )
    }

    /// A `Barrier` of `n`: its words, then `2n + 8` opener slots.
    pub(crate) fn barrier(n: u32) -> Option<Layout> {
        build(
            Kind::Barrier,
            Element::NONE,
            usize::try_from(n).ok()?,
            0,
            BARRIER_WORDS,
            (opener_slots(n)?, OPENER_SLOT, 4),
            0,
        )
    }

    /// A `SharedVec<T>` of `len`: the claims table, then the elements.
    pub(crate) fn vec(element: Element, len: usize) -> Option<Layout> {
        build(
            Kind::Vec,
            element,
            len,
            0,
            CLAIMS_WORDS,
            (CLAIM_SLOTS, CLAIM_SLOT, 8),
            element.size.checked_mul(len)?,
        )
    }

    /// A `SharedMatrix<T>` of `rows` × `columns`, row-major: the claims table (of rows), then
    /// the elements.
    pub(crate) fn matrix(element: Element, rows: usize, columns: usize) -> Option<Layout> {
        build(
            Kind::Matrix,
            element,
            rows,
            columns,
            CLAIMS_WORDS,
            (CLAIM_SLOTS, CLAIM_SLOT, 8),
            element.size.checked_mul(rows)?.checked_mul(columns)?,
        )
    }

    /// A `SharedAtomics` of `len` 64-bit words: the words, right after the header.
    pub(crate) fn atomics(len: usize) -> Option<Layout> {
        let element = Element::of::<u64>();
        build(
            Kind::Atomics,
            element,
            len,
            0,
            0,
            (0, 0, 4),
            element.size.checked_mul(len)?,
        )
    }

    /// The layout of `kind` for `element` with the counts a header records, if it has one.
    ///
    /// The kinds whose layouts are not defined yet (maps, channels, pipes, archives) have
    /// none.
    pub(crate) fn of(kind: Kind, element: Element, count: u64, columns: u64) -> Option<Layout> {
        let count_usize = usize::try_from(count).ok()?;
        let columns_usize = usize::try_from(columns).ok()?;
        match kind {
            Kind::Mutex if count == 1 && columns == 0 => Layout::mutex(element),
            Kind::Condvar if count == 0 && columns == 0 => Layout::condvar(),
            Kind::Semaphore if count == 0 && columns == 0 => Layout::semaphore(),
            Kind::Barrier if columns == 0 => Layout::barrier(u32::try_from(count).ok()?),
            Kind::Vec if columns == 0 => Layout::vec(element, count_usize),
            Kind::Matrix => Layout::matrix(element, count_usize, columns_usize),
            Kind::Atomics if columns == 0 => Layout::atomics(count_usize),
            _ => None,
        }
    }

    /// The sizes the header of this layout records.
    pub(crate) fn sizes(&self) -> Sizes {
        // A usize has at most 64 bits on every target netmcore builds for.
        let wide = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        Sizes {
            element_size: wide(self.element.size),
            element_count: wide(self.count),
            second_dimension: wide(self.columns),
            total_len: wide(self.total),
            payload_offset: wide(self.payload),
        }
    }

    /// The layout of the segment `id` whose header passed [`Header::check`], for elements
    /// `element`: recomputed from the header's counts, and equal to what the header records.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] if the counts give no layout or one other than the header's.
    pub(crate) fn check(header: &Header, element: Element, id: ResId) -> Result<Layout> {
        let recorded = header.sizes();
        let corrupt = |what: String| Error::Corrupt { id, what };
        let Some(kind) = header.kind() else {
            return Err(corrupt(format!("{header:?} names no kind")));
        };
        let Some(layout) = Layout::of(
            kind,
            element,
            recorded.element_count,
            recorded.second_dimension,
        ) else {
            return Err(corrupt(format!(
                "no {kind} layout for {} × {} elements",
                recorded.element_count, recorded.second_dimension
            )));
        };
        if layout.sizes() != recorded {
            return Err(corrupt(format!(
                "the header records {recorded:?}, the layout of a {kind} of these counts is {:?}",
                layout.sizes()
            )));
        }
        Ok(layout)
    }
}

#[cfg(test)]
mod tests {
    use zerocopy::IntoBytes;

    use super::*;

    #[test]
    fn fixed_layouts() {
        let m = Layout::mutex(Element::of::<u64>()).expect("small");
        assert_eq!(
            (m.words, m.payload, m.payload_len, m.total),
            (128, 136, 8, 144)
        );
        let m = Layout::mutex(Element::of::<u8>()).expect("small");
        assert_eq!((m.payload, m.total), (136, 137));
        let m = Layout::mutex(Element::of::<u128>()).expect("small");
        assert_eq!(m.payload % align_of::<u128>(), 0);
        let c = Layout::condvar().expect("small");
        assert_eq!((c.words, c.payload_len, c.total), (128, 0, 136));
        assert_eq!(Layout::semaphore().expect("small").total, 136);
        let b = Layout::barrier(3).expect("small");
        assert_eq!((b.table, b.table_entries, b.total), (136, 14, 136 + 56));
        let a = Layout::atomics(4).expect("small");
        assert_eq!((a.payload, a.payload_len, a.total), (128, 32, 160));
    }

    #[test]
    fn vectors_and_matrices_put_the_claims_before_the_elements() {
        let v = Layout::vec(Element::of::<u32>(), 10).expect("small");
        assert_eq!(v.table, 136);
        assert_eq!(v.table_entries, CLAIM_SLOTS);
        assert_eq!(v.payload, 136 + CLAIM_SLOTS * CLAIM_SLOT);
        assert_eq!(v.total, v.payload + 40);
        let m = Layout::matrix(Element::of::<[u8; 3]>(), 4, 5).expect("small");
        assert_eq!(m.payload_len, 60);
        assert_eq!(m.payload % 8, 0);
        assert_eq!(
            Layout::vec(Element::of::<u32>(), 0)
                .expect("empty")
                .payload_len,
            0
        );
    }

    #[test]
    fn overflowing_sizes_have_no_layout() {
        assert_eq!(Layout::vec(Element::of::<u64>(), usize::MAX / 4), None);
        assert_eq!(Layout::vec(Element::of::<u8>(), usize::MAX - 100), None);
        assert_eq!(Layout::matrix(Element::of::<u8>(), 1 << 40, 1 << 40), None);
        assert_eq!(Layout::atomics(usize::MAX / 8), None);
        assert!(
            Layout::barrier(u32::MAX).is_some(),
            "8 GiB of slots still computes"
        );
        // Beyond isize::MAX: no process could map it.
        assert_eq!(Layout::vec(Element::of::<u8>(), isize::MAX as usize), None);
    }

    #[test]
    fn a_created_header_checks_back_to_its_layout() {
        let cases = [
            Layout::mutex(Element::of::<[u16; 3]>()).expect("small"),
            Layout::condvar().expect("small"),
            Layout::semaphore().expect("small"),
            Layout::barrier(5).expect("small"),
            Layout::vec(Element::of::<u64>(), 1000).expect("small"),
            Layout::matrix(Element::of::<f32>(), 7, 9).expect("small"),
            Layout::atomics(3).expect("small"),
        ];
        for layout in cases {
            let header = Header::new(layout.kind, 42, layout.sizes());
            let checked = Header::check(
                header.as_bytes(),
                layout.total as u64,
                layout.kind,
                42,
                ResId(1),
            )
            .expect("the header fits its own layout");
            assert_eq!(
                Layout::check(&checked, layout.element, ResId(1)).expect("same layout"),
                layout
            );
        }
    }

    #[test]
    fn a_header_that_disagrees_with_its_layout_is_corrupt() {
        let layout = Layout::vec(Element::of::<u64>(), 10).expect("small");
        // Another element size than the opener's type.
        let header = Header::new(Kind::Vec, 42, layout.sizes());
        let err = Layout::check(&header, Element::of::<u32>(), ResId(3)).expect_err("u32");
        assert!(matches!(err, Error::Corrupt { id: ResId(3), .. }), "{err}");
        // A payload offset inside the claims table.
        let mut sizes = layout.sizes();
        sizes.payload_offset = 136;
        let header = Header::new(Kind::Vec, 42, sizes);
        assert!(Layout::check(&header, Element::of::<u64>(), ResId(3)).is_err());
        // A mutex of two elements, a condvar with a count: no such layouts.
        let mut sizes = Layout::mutex(Element::of::<u64>()).expect("small").sizes();
        sizes.element_count = 2;
        let header = Header::new(Kind::Mutex, 42, sizes);
        assert!(Layout::check(&header, Element::of::<u64>(), ResId(3)).is_err());
        let mut sizes = Layout::condvar().expect("small").sizes();
        sizes.element_count = 1;
        let header = Header::new(Kind::Condvar, 42, sizes);
        assert!(Layout::check(&header, Element::NONE, ResId(3)).is_err());
        // Kinds whose layout is not defined yet.
        let header = Header::new(Kind::Channel, 42, Sizes::default());
        let err = Layout::check(&header, Element::NONE, ResId(3)).expect_err("no layout");
        assert!(err.to_string().contains("no channel layout"), "{err}");
    }
}
