//! The header at the start of every segment: what the segment holds and how it is laid out.
//!
//! One layout for every structure, written once by the creator and checked by every process
//! that opens the segment:
//!
//! ```text
//! offset  size  field
//!      0     8  magic, the bytes "NMCSHARD" (written last, with Release)
//!      8     4  layout version (LAYOUT_VERSION)
//!     12     4  kind (Kind as u32)
//!     16     8  fingerprint of the structure's type (handle::fingerprint)
//!     24     8  element size in bytes
//!     32     8  element count (rows for a matrix)
//!     40     8  second dimension (columns for a matrix; 0 for every other kind)
//!     48     8  total length of the segment in bytes
//!     56     8  offset of the payload (the elements) from the start of the segment
//!     64    64  reserved (zero)
//! ```
//!
//! Integers are native-endian: a segment is shared by processes of one host. The header is
//! published through atomic 64-bit words ([`Header::publish`]): every field first, then the
//! magic with `Release`, so a reader that sees the magic (with `Acquire`, [`snapshot`]) sees
//! the whole header. Nothing writes the header afterwards.
//!
//! Every byte of it is untrusted on open: [`Header::check`] refuses, without panicking on any
//! input, a segment that is not a structure, one of another layout version, kind or type, and
//! one whose sizes do not fit the object.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use netmcore_resources::ResId;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::{Error, Result};

/// The first eight bytes of every segment.
pub(crate) const MAGIC: u64 = u64::from_ne_bytes(*b"NMCSHARD");

/// The version of the segment layouts this library writes and reads (2: the hash tables'
/// words grew a readers' version word on a cache line of its own).
pub(crate) const LAYOUT_VERSION: u32 = 2;

/// The size of the header in bytes; the rest of a segment starts after it.
pub(crate) const HEADER_LEN: usize = size_of::<Header>();

/// The header as 64-bit words, the unit in which it is published and read.
pub(crate) const HEADER_WORDS: usize = HEADER_LEN / 8;

/// What a segment holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub(crate) enum Kind {
    /// A `Mutex<T>`.
    Mutex = 1,
    /// A `Condvar`.
    Condvar = 2,
    /// A `Semaphore`.
    Semaphore = 3,
    /// A `Barrier`.
    Barrier = 4,
    /// A `SharedVec<T>`.
    Vec = 5,
    /// A `SharedMatrix<T>`.
    Matrix = 6,
    /// A `SharedAtomics`.
    Atomics = 7,
    /// A `HashMap<K, V>`.
    HashMap = 8,
    /// A `HashSet<K>`.
    HashSet = 9,
    /// A channel's queue, shared by its senders and receivers.
    Channel = 10,
    /// A pipe's ring, shared by its writer and reader.
    Pipe = 11,
    /// An `Archive<T>`.
    Archive = 12,
}

impl Kind {
    /// Every kind, in the order of their numbers.
    pub(crate) const ALL: [Kind; 12] = [
        Kind::Mutex,
        Kind::Condvar,
        Kind::Semaphore,
        Kind::Barrier,
        Kind::Vec,
        Kind::Matrix,
        Kind::Atomics,
        Kind::HashMap,
        Kind::HashSet,
        Kind::Channel,
        Kind::Pipe,
        Kind::Archive,
    ];

    /// The kind numbered `n` in a header, if there is one.
    pub(crate) fn from_u32(n: u32) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| *k as u32 == n)
    }

    /// The name of the structure, as users know it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Mutex => "Mutex",
            Kind::Condvar => "Condvar",
            Kind::Semaphore => "Semaphore",
            Kind::Barrier => "Barrier",
            Kind::Vec => "SharedVec",
            Kind::Matrix => "SharedMatrix",
            Kind::Atomics => "SharedAtomics",
            Kind::HashMap => "HashMap",
            Kind::HashSet => "HashSet",
            Kind::Channel => "channel",
            Kind::Pipe => "pipe",
            Kind::Archive => "Archive",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The sizes a header records (see the module docs for their meaning).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Sizes {
    /// The size of one element in bytes.
    pub(crate) element_size: u64,
    /// The number of elements (rows for a matrix).
    pub(crate) element_count: u64,
    /// Columns for a matrix; 0 for every other kind.
    pub(crate) second_dimension: u64,
    /// The length of the segment in bytes.
    pub(crate) total_len: u64,
    /// Where the elements start.
    pub(crate) payload_offset: u64,
}

/// The header of a segment, as laid out in memory (see the module docs).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct Header {
    magic: u64,
    version: u32,
    kind: u32,
    fingerprint: u64,
    element_size: u64,
    element_count: u64,
    second_dimension: u64,
    total_len: u64,
    payload_offset: u64,
    reserved: [u64; 8],
}

const _: () = assert!(HEADER_LEN == 128 && HEADER_LEN.is_multiple_of(8));

impl Header {
    /// The header of a new segment of `kind` for the type whose fingerprint is `fingerprint`.
    pub(crate) fn new(kind: Kind, fingerprint: u64, sizes: Sizes) -> Header {
        Header {
            magic: MAGIC,
            version: LAYOUT_VERSION,
            kind: kind as u32,
            fingerprint,
            element_size: sizes.element_size,
            element_count: sizes.element_count,
            second_dimension: sizes.second_dimension,
            total_len: sizes.total_len,
            payload_offset: sizes.payload_offset,
            reserved: [0; 8],
        }
    }

    /// Reads and checks the header at the start of `bytes`, a copy of the first bytes of the
    /// segment `id`, whose object is `object_len` bytes long, for a structure of `kind` and
    /// type `fingerprint`.
    ///
    /// Pure, and never panics on any input.
    ///
    /// # Errors
    ///
    /// * [`Error::Corrupt`]: fewer bytes than a header, a bad magic (not a structure), another
    ///   layout version, an unknown kind, sizes that overflow or do not fit the object (the
    ///   payload beyond the recorded length, the recorded length beyond the object, the payload
    ///   inside the header), or a second dimension for a kind other than a matrix.
    /// * [`Error::WrongType`]: a structure of another kind, or of the same kind for another
    ///   type.
    pub(crate) fn check(
        bytes: &[u8],
        object_len: u64,
        kind: Kind,
        fingerprint: u64,
        id: ResId,
    ) -> Result<Header> {
        let corrupt = |what: String| Error::Corrupt { id, what };
        let header_len = HEADER_LEN as u64;
        if object_len < header_len {
            return Err(corrupt(format!(
                "the object has {object_len} bytes, fewer than a segment header ({HEADER_LEN})"
            )));
        }
        let Ok((header, _)) = Header::read_from_prefix(bytes) else {
            return Err(corrupt(format!(
                "{} bytes of header read, fewer than {HEADER_LEN}",
                bytes.len()
            )));
        };
        if header.magic != MAGIC {
            return Err(corrupt(format!(
                "not a netmcore structure (magic {:02x?})",
                header.magic.to_ne_bytes()
            )));
        }
        if header.version != LAYOUT_VERSION {
            return Err(corrupt(format!(
                "layout version {}, this library reads version {LAYOUT_VERSION}",
                header.version
            )));
        }
        let Some(found) = Kind::from_u32(header.kind) else {
            return Err(corrupt(format!("unknown structure kind {}", header.kind)));
        };
        if found != kind {
            return Err(Error::WrongType {
                expected: format!("a {kind}"),
                found: format!("a {found}"),
            });
        }
        if header.fingerprint != fingerprint {
            return Err(Error::WrongType {
                expected: format!("a {kind} of type fingerprint {fingerprint:#018x}"),
                found: format!("a {kind} of type fingerprint {:#018x}", header.fingerprint),
            });
        }
        if header.total_len > object_len {
            return Err(corrupt(format!(
                "the header records {} bytes, the object has {object_len}",
                header.total_len
            )));
        }
        if header.payload_offset < header_len || header.payload_offset > header.total_len {
            return Err(corrupt(format!(
                "payload offset {} outside {header_len}..={}",
                header.payload_offset, header.total_len
            )));
        }
        let columns = match (kind, header.second_dimension) {
            (Kind::Matrix, columns) => columns,
            (_, 0) => 1,
            (_, n) => {
                return Err(corrupt(format!(
                    "second dimension {n} for a {kind}, which has one"
                )));
            }
        };
        let payload_end = header
            .element_size
            .checked_mul(header.element_count)
            .and_then(|n| n.checked_mul(columns))
            .and_then(|n| n.checked_add(header.payload_offset));
        match payload_end {
            Some(end) if end <= header.total_len => Ok(header),
            _ => Err(corrupt(format!(
                "{} × {} × {columns} elements of {} bytes at offset {} do not fit in {} bytes",
                header.element_count,
                columns,
                header.element_size,
                header.payload_offset,
                header.total_len
            ))),
        }
    }

    /// The kind, if the header names one (always, after [`Header::check`]).
    pub(crate) fn kind(&self) -> Option<Kind> {
        Kind::from_u32(self.kind)
    }

    /// The fingerprint of the structure's type.
    pub(crate) fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// The sizes the header records.
    pub(crate) fn sizes(&self) -> Sizes {
        Sizes {
            element_size: self.element_size,
            element_count: self.element_count,
            second_dimension: self.second_dimension,
            total_len: self.total_len,
            payload_offset: self.payload_offset,
        }
    }

    /// The header as the 64-bit words it is published in (native-endian, magic first).
    pub(crate) fn words(&self) -> [u64; HEADER_WORDS] {
        let mut words = [0u64; HEADER_WORDS];
        words.as_mut_bytes().copy_from_slice(self.as_bytes());
        words
    }

    /// Writes the header into the first [`HEADER_WORDS`] words of a new segment: every word
    /// but the magic with `Relaxed`, then the magic with `Release`, so that whoever reads the
    /// magic with `Acquire` ([`snapshot`]) reads the whole header.
    ///
    /// Returns `false`, writing nothing, if `words` is shorter than a header.
    #[must_use]
    pub(crate) fn publish(&self, words: &[AtomicU64]) -> bool {
        let Some((magic, rest)) = words.get(..HEADER_WORDS).and_then(<[_]>::split_first) else {
            return false;
        };
        let values = self.words();
        for (word, value) in rest.iter().zip(&values[1..]) {
            word.store(*value, Ordering::Relaxed);
        }
        magic.store(values[0], Ordering::Release);
        true
    }
}

/// A copy of the header bytes at the start of a segment, read through its first
/// [`HEADER_WORDS`] atomic words: the magic with `Acquire` first (pairing with
/// [`Header::publish`]), then the rest. Fewer words give fewer bytes, which
/// [`Header::check`] refuses.
pub(crate) fn snapshot(words: &[AtomicU64]) -> Vec<u8> {
    let words = &words[..words.len().min(HEADER_WORDS)];
    let mut values = Vec::with_capacity(words.len());
    for (i, word) in words.iter().enumerate() {
        let order = if i == 0 {
            Ordering::Acquire
        } else {
            Ordering::Relaxed
        };
        values.push(word.load(order));
    }
    values.as_bytes().to_vec()
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Header")
            .field("magic", &format_args!("{:02x?}", self.magic.to_ne_bytes()))
            .field("version", &self.version)
            .field("kind", &self.kind().map_or("unknown", Kind::name))
            .field("fingerprint", &format_args!("{:#018x}", self.fingerprint))
            .field("element_size", &self.element_size)
            .field("element_count", &self.element_count)
            .field("second_dimension", &self.second_dimension)
            .field("total_len", &self.total_len)
            .field("payload_offset", &self.payload_offset)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const ID: ResId = ResId(9);
    const FP: u64 = 0x0123_4567_89ab_cdef;

    fn vec_sizes(count: u64) -> Sizes {
        Sizes {
            element_size: 8,
            element_count: count,
            second_dimension: 0,
            total_len: HEADER_LEN as u64 + 8 * count,
            payload_offset: HEADER_LEN as u64,
        }
    }

    fn valid() -> Header {
        Header::new(Kind::Vec, FP, vec_sizes(10))
    }

    fn check(header: &Header, object_len: u64) -> Result<Header> {
        Header::check(header.as_bytes(), object_len, Kind::Vec, FP, ID)
    }

    fn corrupt_what(result: Result<Header>) -> String {
        match result {
            Err(Error::Corrupt { id, what }) => {
                assert_eq!(id, ID);
                what
            }
            other => panic!("not Corrupt: {other:?}"),
        }
    }

    #[test]
    fn the_layout_is_fixed() {
        assert_eq!(HEADER_LEN, 128);
        let bytes = valid().words();
        assert_eq!(&bytes.as_bytes()[..8], b"NMCSHARD");
        assert_eq!(bytes.as_bytes()[8..12], LAYOUT_VERSION.to_ne_bytes());
        assert_eq!(bytes.as_bytes()[12..16], (Kind::Vec as u32).to_ne_bytes());
        assert_eq!(bytes.as_bytes()[16..24], FP.to_ne_bytes());
        assert_eq!(bytes.as_bytes()[56..64], (HEADER_LEN as u64).to_ne_bytes());
        assert!(bytes.as_bytes()[64..].iter().all(|&b| b == 0));
        for (n, kind) in Kind::ALL.into_iter().enumerate() {
            assert_eq!(kind as u32 as usize, n + 1);
            assert_eq!(Kind::from_u32(kind as u32), Some(kind));
        }
        assert_eq!(Kind::from_u32(0), None);
        assert_eq!(Kind::from_u32(13), None);
    }

    #[test]
    fn a_valid_header_passes_and_reads_back() {
        let header = valid();
        let total = header.sizes().total_len;
        assert_eq!(check(&header, total).expect("valid"), header);
        // A larger object is fine: only the recorded length is used.
        assert_eq!(check(&header, total + 4096).expect("valid"), header);
        assert_eq!(header.kind(), Some(Kind::Vec));
        assert_eq!(header.fingerprint(), FP);
        assert_eq!(header.sizes(), vec_sizes(10));
        let debug = format!("{header:?}");
        assert!(debug.contains("SharedVec"), "{debug}");
    }

    #[test]
    fn too_few_bytes_are_corrupt() {
        let header = valid();
        let what = corrupt_what(Header::check(
            &header.as_bytes()[..HEADER_LEN - 1],
            1 << 20,
            Kind::Vec,
            FP,
            ID,
        ));
        assert!(what.contains("127 bytes of header"), "{what}");
        let what = corrupt_what(check(&header, 64));
        assert!(what.contains("the object has 64 bytes"), "{what}");
    }

    #[test]
    fn a_bad_magic_is_corrupt() {
        let mut header = valid();
        header.magic = u64::from_ne_bytes(*b"NMCSHARE");
        let what = corrupt_what(check(&header, 1 << 20));
        assert!(what.starts_with("not a netmcore structure"), "{what}");
        let zeros = [0u8; HEADER_LEN];
        corrupt_what(Header::check(&zeros, 1 << 20, Kind::Vec, FP, ID));
    }

    #[test]
    fn another_layout_version_is_corrupt() {
        let mut header = valid();
        header.version = LAYOUT_VERSION + 1;
        let what = corrupt_what(check(&header, 1 << 20));
        assert_eq!(
            what,
            format!(
                "layout version {}, this library reads version {LAYOUT_VERSION}",
                LAYOUT_VERSION + 1
            )
        );
    }

    #[test]
    fn another_kind_is_the_wrong_type() {
        let header = Header::new(Kind::Matrix, FP, vec_sizes(10));
        match check(&header, 1 << 20) {
            Err(Error::WrongType { expected, found }) => {
                assert_eq!(expected, "a SharedVec");
                assert_eq!(found, "a SharedMatrix");
            }
            other => panic!("not WrongType: {other:?}"),
        }
        let mut unknown = valid();
        unknown.kind = 99;
        let what = corrupt_what(check(&unknown, 1 << 20));
        assert_eq!(what, "unknown structure kind 99");
    }

    #[test]
    fn another_fingerprint_is_the_wrong_type() {
        let header = Header::new(Kind::Vec, FP ^ 1, vec_sizes(10));
        match check(&header, 1 << 20) {
            Err(Error::WrongType { expected, found }) => {
                assert!(expected.contains("0x0123456789abcdef"), "{expected}");
                assert!(found.contains("0x0123456789abcdee"), "{found}");
            }
            other => panic!("not WrongType: {other:?}"),
        }
    }

    #[test]
    fn sizes_that_do_not_fit_are_corrupt() {
        let total = valid().sizes().total_len;
        // The recorded length beyond the object.
        let what = corrupt_what(check(&valid(), total - 1));
        assert!(what.contains("the header records"), "{what}");
        // The payload beyond the recorded length.
        let mut sizes = vec_sizes(10);
        sizes.element_count = 11;
        corrupt_what(check(&Header::new(Kind::Vec, FP, sizes), 1 << 20));
        // The payload inside the header, or beyond the end.
        let mut sizes = vec_sizes(0);
        sizes.payload_offset = 64;
        corrupt_what(check(&Header::new(Kind::Vec, FP, sizes), 1 << 20));
        let mut sizes = vec_sizes(0);
        sizes.payload_offset = sizes.total_len + 8;
        corrupt_what(check(&Header::new(Kind::Vec, FP, sizes), 1 << 20));
        // Products that overflow.
        let mut sizes = vec_sizes(1);
        sizes.element_size = u64::MAX;
        sizes.element_count = 2;
        corrupt_what(check(&Header::new(Kind::Vec, FP, sizes), u64::MAX));
        let mut sizes = vec_sizes(1);
        sizes.element_size = 1;
        sizes.payload_offset = u64::MAX;
        sizes.total_len = u64::MAX;
        corrupt_what(check(&Header::new(Kind::Vec, FP, sizes), u64::MAX));
        // A second dimension where there is none.
        let mut sizes = vec_sizes(10);
        sizes.second_dimension = 1;
        let what = corrupt_what(check(&Header::new(Kind::Vec, FP, sizes), 1 << 20));
        assert!(what.contains("second dimension 1"), "{what}");
    }

    #[test]
    fn a_matrix_counts_rows_times_columns() {
        let sizes = Sizes {
            element_size: 4,
            element_count: 3,
            second_dimension: 5,
            total_len: HEADER_LEN as u64 + 60,
            payload_offset: HEADER_LEN as u64,
        };
        let header = Header::new(Kind::Matrix, FP, sizes);
        let ok = Header::check(header.as_bytes(), 1 << 20, Kind::Matrix, FP, ID);
        assert_eq!(ok.expect("fits"), header);
        let too_big = Header::new(
            Kind::Matrix,
            FP,
            Sizes {
                second_dimension: 6,
                ..sizes
            },
        );
        corrupt_what(Header::check(
            too_big.as_bytes(),
            1 << 20,
            Kind::Matrix,
            FP,
            ID,
        ));
        // Zero columns: an empty payload, whatever the rows.
        let empty = Header::new(
            Kind::Matrix,
            FP,
            Sizes {
                second_dimension: 0,
                element_count: 1 << 40,
                total_len: HEADER_LEN as u64,
                ..sizes
            },
        );
        assert!(Header::check(empty.as_bytes(), 1 << 20, Kind::Matrix, FP, ID).is_ok());
    }

    #[test]
    fn publish_then_snapshot_round_trips() {
        let words: Vec<AtomicU64> = (0..HEADER_WORDS + 2).map(|_| AtomicU64::new(0)).collect();
        let header = valid();
        assert!(header.publish(&words));
        let bytes = snapshot(&words);
        assert_eq!(bytes.len(), HEADER_LEN);
        assert_eq!(check_bytes(&bytes), Ok(header));
        assert!(!header.publish(&words[..HEADER_WORDS - 1]));
        // Unpublished memory reads as zeros: not a structure.
        let fresh: Vec<AtomicU64> = (0..4).map(|_| AtomicU64::new(0)).collect();
        let bytes = snapshot(&fresh);
        assert_eq!(bytes.len(), 32);
        corrupt_what(Header::check(&bytes, 1 << 20, Kind::Vec, FP, ID));
    }

    fn check_bytes(bytes: &[u8]) -> std::result::Result<Header, String> {
        Header::check(bytes, 1 << 20, Kind::Vec, FP, ID).map_err(|e| e.to_string())
    }

    fn arb_kind() -> impl Strategy<Value = Kind> {
        (0..Kind::ALL.len()).prop_map(|i| Kind::ALL[i])
    }

    proptest! {
        /// Any bytes, any object length, any expectation: an answer, never a panic.
        #[test]
        fn check_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
            object_len in any::<u64>(),
            kind in arb_kind(),
            fingerprint in any::<u64>(),
        ) {
            let _ = Header::check(&bytes, object_len, kind, fingerprint, ID);
        }

        /// A well-formed header with random sizes: accepted exactly when its payload fits.
        #[test]
        fn well_formed_headers_are_judged_by_their_sizes(
            kind in arb_kind(),
            element_size in 0u64..1 << 20,
            element_count in 0u64..1 << 20,
            columns in 0u64..64,
            slack in 0u64..4096,
        ) {
            let columns = if kind == Kind::Matrix { columns } else { 0 };
            let payload = element_size * element_count * if kind == Kind::Matrix { columns } else { 1 };
            let total = HEADER_LEN as u64 + payload;
            let header = Header::new(kind, FP, Sizes {
                element_size,
                element_count,
                second_dimension: columns,
                total_len: total,
                payload_offset: HEADER_LEN as u64,
            });
            let checked = Header::check(header.as_bytes(), total + slack, kind, FP, ID);
            prop_assert_eq!(checked.ok(), Some(header));
            if total > HEADER_LEN as u64 {
                let short = Header::check(header.as_bytes(), total - 1, kind, FP, ID);
                prop_assert!(
                    matches!(short, Err(Error::Corrupt { .. })),
                    "an object one byte short passes"
                );
            }
        }

        /// Any sizes at all in an otherwise valid header: a header that passes has its payload
        /// inside its recorded length, and that inside the object.
        #[test]
        fn passing_headers_fit_their_object(
            kind in arb_kind(),
            sizes in (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>())
                .prop_map(|(a, b, c, d, e)| Sizes {
                    element_size: a >> (a % 64),
                    element_count: b >> (b % 64),
                    second_dimension: c >> (c % 64),
                    total_len: d >> (d % 64),
                    payload_offset: e >> (e % 64),
                }),
            object_len in any::<u64>().prop_map(|n| n >> (n % 64)),
        ) {
            let header = Header::new(kind, FP, sizes);
            if let Ok(h) = Header::check(header.as_bytes(), object_len, kind, FP, ID) {
                let s = h.sizes();
                let columns = if kind == Kind::Matrix { s.second_dimension } else { 1 };
                let end = u128::from(s.payload_offset)
                    + u128::from(s.element_size) * u128::from(s.element_count) * u128::from(columns);
                prop_assert!(end <= u128::from(s.total_len));
                prop_assert!(s.total_len <= object_len);
                prop_assert!(s.payload_offset >= HEADER_LEN as u64);
            }
        }

        /// One flipped byte of a valid header: still an answer, never a panic.
        #[test]
        fn a_flipped_byte_never_panics(at in 0..HEADER_LEN, value in any::<u8>()) {
            let mut bytes = valid().as_bytes().to_vec();
            bytes[at] = value;
            let _ = Header::check(&bytes, 1 << 20, Kind::Vec, FP, ID);
        }
    }
}
