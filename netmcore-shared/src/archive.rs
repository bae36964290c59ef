//! [`Archive<T>`]: a value archived with rkyv into a segment of its own, written once and read
//! in place by every process that opens it.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use rkyv::api::high::{HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;

use crate::handle::{Handle, fingerprint};
use crate::header::Kind;
use crate::segment::{ARCHIVE_ELEMENT, Layout, Segment, open};
use crate::{Error, Result, sys};

/// The proof that bytes are the payload of an archive, which `sys::written_bytes` consumes to
/// view them. Only this module makes one, for the segment of an [`Archive`], whose payload was
/// written before the segment was published and is never written again: [`Archive`] offers
/// no way to change it.
pub(crate) struct Written(());

/// The proof that the bytes of an archive hold a valid `T::Archived`, which
/// `sys::archived_root` consumes to read them without a check. Only this module makes one, in
/// [`Archive::get`]: an [`Archive`] exists only after [`Archive::new`] had rkyv's serializer
/// write its bytes or [`Archive::open`] validated them with bytecheck, and its bytes do not
/// change afterwards ([`Written`]).
pub(crate) struct Validated(());

/// A value archived with [rkyv](https://docs.rs/rkyv) in shared memory: written once, by
/// [`Archive::new`], then read in place by every process that opens it — no copy and no
/// deserialization, whatever the value holds (vectors, strings, maps, enums, nested structs).
/// The counterpart of OCamlnet's `Netcamlbox` messages and of Python's `shared_memory` with a
/// pickle, for data computed once and read by many: a lookup table, a configuration, an index.
///
/// ```
/// use netmcore_shared::Archive;
///
/// #[derive(rkyv::Archive, rkyv::Serialize)]
/// struct Table {
///     names: Vec<String>,
///     scale: u32,
/// }
///
/// # fn main() -> netmcore_shared::Result<()> {
/// // Before `startup` the program makes structures for itself; in a run, a worker does the
/// // same and passes the handle on.
/// let table = Archive::new(&Table {
///     names: vec!["ada".to_owned(), "grace".to_owned()],
///     scale: 3,
/// })?;
/// // Another process opens it by handle: the archive is validated once, here.
/// let same = Archive::<Table>::open(table.handle())?;
/// let archived = same.get(); // an `&ArchivedTable`, read where it lies
/// assert_eq!(archived.names[1], "grace");
/// assert_eq!(archived.scale.to_native(), 3);
/// # Ok(())
/// # }
/// ```
///
/// **Checked.** [`Archive::open`] validates the archived bytes with bytecheck (every relative
/// pointer, length, tag and character) before it returns, so a corrupt archive is an
/// [`Error::Corrupt`], never undefined behaviour; afterwards [`Archive::get`] costs nothing.
/// That check stays true because nobody writes an archive after it is created: the library
/// has no call that does, and the segment is not published before it is written. (A program
/// that writes into another structure's shm object behind the library's back breaks that
/// promise, as it would break a frozen vector's.)
///
/// **Lifetime.** The archive lives in a segment of its own, which the master destroys when
/// the last process that created or opened it has dropped its values or ended.
pub struct Archive<T: rkyv::Archive> {
    segment: Arc<Segment>,
    layout: Layout,
    // An archive hands out `&T::Archived` to every thread that shares it, and owns no `T`.
    _archived: PhantomData<Arc<T::Archived>>,
}

impl<T: rkyv::Archive + 'static> Archive<T> {
    /// Archives `value` with rkyv's high-level serializer into a new segment of its own; the
    /// calling process is its user.
    ///
    /// # Errors
    ///
    /// [`Error::Unarchivable`] when rkyv cannot serialize `value`; [`Error::TooLarge`] for an
    /// archive too large to map; [`Error::Master`] when no master can create the segment (a
    /// worker whose master is gone, a ledger or `shm_open` failure).
    pub fn new(value: &T) -> Result<Archive<T>>
    where
        T: for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
    {
        let bytes = rkyv::to_bytes::<rancor::Error>(value).map_err(|e| Error::Unarchivable {
            what: e.to_string(),
        })?;
        let too_large = || Error::TooLarge {
            size: bytes.len(),
            max: isize::MAX.unsigned_abs(),
        };
        let layout = Layout::archive(bytes.len()).ok_or_else(too_large)?;
        let segment = Segment::create(
            Kind::Archive,
            fingerprint::<Archive<T>>(),
            layout.sizes(),
            |at| {
                at.get_mut(layout.payload..layout.total)
                    .ok_or_else(too_large)?
                    .copy_from_slice(&bytes);
                Ok(())
            },
        )?;
        Ok(Archive {
            segment,
            layout,
            _archived: PhantomData,
        })
    }

    /// Opens the archive named by `handle` (made by [`Archive::handle`] in any process of the
    /// run) and validates its bytes as a `T::Archived`, once: the calling process becomes a
    /// user, and maps it wherever it likes.
    ///
    /// # Errors
    ///
    /// [`Error::WrongType`] for a handle of another structure or type; [`Error::Corrupt`] for
    /// a segment whose header does not hold or whose bytes are no valid archive of `T`;
    /// [`Error::Master`] for an unknown id (`NoResource`: the archive is gone) or no master.
    pub fn open(handle: Handle<Archive<T>>) -> Result<Archive<T>>
    where
        T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
    {
        let (segment, layout) = open::<Archive<T>>(handle, Kind::Archive, ARCHIVE_ELEMENT)?;
        let archive = Archive {
            segment,
            layout,
            _archived: PhantomData,
        };
        let checked = archive.bytes().and_then(|bytes| {
            rkyv::access::<T::Archived, rancor::Error>(bytes)
                .map(|_| ())
                .map_err(|e| {
                    archive
                        .segment
                        .corrupt(format!("the archived value does not check: {e}"))
                })
        });
        checked.map(|()| archive)
    }

    /// The handle of this archive, to pass to other processes.
    #[must_use]
    pub fn handle(&self) -> Handle<Archive<T>> {
        Handle::new(self.segment.id())
    }

    /// The archived value, read in place in shared memory.
    #[must_use]
    pub fn get(&self) -> &T::Archived {
        let bytes = self
            .bytes()
            .expect("the payload was found inside the mapping when the archive was made");
        sys::archived_root::<T::Archived>(bytes, Validated(()))
    }

    /// The archived bytes.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] if the layout's payload lies outside the mapping (never, once
    /// [`open`] checked the layout against the mapping, and the mapping does not change).
    fn bytes(&self) -> Result<&[u8]> {
        sys::written_bytes(
            self.segment.mapping(),
            self.layout.payload,
            self.layout.payload_len,
            Written(()),
        )
        .ok_or_else(|| self.segment.corrupt("the archive lies outside the mapping"))
    }
}

impl<T: rkyv::Archive> fmt::Debug for Archive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Archive")
            .field("id", &self.segment.id())
            .field("len", &self.layout.payload_len)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::testing::scribble;

    #[derive(Debug, PartialEq, rkyv::Archive, rkyv::Serialize)]
    #[rkyv(derive(Debug))]
    struct Table {
        names: Vec<String>,
        weights: Vec<u64>,
        title: String,
    }

    fn table() -> Table {
        Table {
            names: vec!["ada".to_owned(), "grace".to_owned(), "barbara".to_owned()],
            weights: (0..100).map(|i| i * i).collect(),
            title: "a lookup table".to_owned(),
        }
    }

    fn assert_reads_back(archived: &ArchivedTable) {
        let names: Vec<&str> = archived.names.iter().map(|n| n.as_str()).collect();
        assert_eq!(names, ["ada", "grace", "barbara"]);
        assert_eq!(archived.weights.len(), 100);
        assert_eq!(archived.weights[7].to_native(), 49);
        assert_eq!(archived.title, "a lookup table");
    }

    #[test]
    fn a_value_reads_back_in_place() {
        let archive = Archive::new(&table()).expect("an archive before startup");
        assert_reads_back(archive.get());
        let opened = Archive::<Table>::open(archive.handle()).expect("open");
        assert_reads_back(opened.get());
        // The same segment, mapped once in this process: the same bytes.
        assert!(std::ptr::eq(archive.get(), opened.get()));
        assert_eq!(archive.layout.payload % crate::segment::ARCHIVE_ALIGN, 0);
        let debug = format!("{archive:?}");
        assert!(debug.starts_with("Archive { id: "), "{debug}");
    }

    #[test]
    fn scalars_and_empty_values_archive_too() {
        let unit = Archive::new(&()).expect("unit");
        Archive::<()>::open(unit.handle()).expect("open unit");
        let empty = Archive::new(&Vec::<u8>::new()).expect("empty");
        assert!(
            Archive::<Vec<u8>>::open(empty.handle())
                .expect("open")
                .get()
                .is_empty()
        );
        let number = Archive::new(&0x0102_0304_u32).expect("number");
        assert_eq!(number.get().to_native(), 0x0102_0304);
    }

    #[test]
    fn a_handle_of_another_type_is_the_wrong_type() {
        let archive = Archive::new(&table()).expect("archive");
        let id = archive.handle().id();
        let as_string = Handle::<Archive<String>>::new(id);
        assert!(matches!(
            Archive::<String>::open(as_string),
            Err(Error::WrongType { .. })
        ));
        let forged = Handle::<Archive<String>>::from_parts(id, fingerprint::<Archive<Table>>());
        assert!(matches!(
            Archive::<String>::open(forged),
            Err(Error::WrongType { .. })
        ));
        let mutex = crate::Mutex::new(1u64).expect("mutex");
        let not_an_archive = Handle::<Archive<u64>>::new(mutex.handle().id());
        assert!(matches!(
            Archive::<u64>::open(not_an_archive),
            Err(Error::WrongType { .. })
        ));
    }

    /// Opens the archive of `text` after writing `bytes` at `at` bytes into its payload.
    fn open_scribbled(text: &str, at: usize, bytes: &[u8]) -> Result<Archive<String>> {
        let archive = Archive::new(&text.to_owned()).expect("archive");
        scribble::write(archive.handle().id(), archive.layout.payload + at, bytes);
        Archive::<String>::open(archive.handle())
    }

    fn assert_corrupt(result: Result<Archive<String>>) {
        match result {
            Err(Error::Corrupt { what, .. }) => {
                assert!(what.contains("does not check"), "{what}");
            }
            other => panic!("not Corrupt: {other:?}"),
        }
    }

    #[test]
    fn archived_bytes_that_do_not_check_are_corrupt() {
        // A long string lies before its root: its first bytes made 0xff are no longer UTF-8.
        let text = "héllo, wörld";
        assert_corrupt(open_scribbled(text, 0, &[0xff; 4]));
        // The root (the last 8 bytes, a length tagged `0b10` in its first byte's top bits,
        // then a relative offset) made an out-of-line string far longer than the archive.
        let root = text.len().next_multiple_of(4);
        assert_corrupt(open_scribbled(
            text,
            root,
            &[0xbf, 0xff, 0xff, 0x7f, 0, 0, 0, 0],
        ));
    }

    proptest! {
        /// Random bytes written over an archive's segment — header or archived bytes — make
        /// opening it again give a valid archive (possibly of other values), `Corrupt` or
        /// `WrongType`: never a panic, never a fault. (The value made by `new` is not read
        /// after the scribble: its bytes were never validated, they were written by rkyv.)
        #[test]
        fn scribbled_archives_give_errors_never_panics(
            (offset, bytes) in scribble::scribbles(&[0..128, 128..1200]),
        ) {
            let archive = Archive::new(&table()).expect("an archive before startup");
            let handle = archive.handle();
            let name = scribble::write(handle.id(), offset, &bytes);
            scribble::recheck(
                handle.id(),
                &name,
                Kind::Archive,
                fingerprint::<Archive<Table>>(),
                ARCHIVE_ELEMENT,
            )
            .map_err(TestCaseError::fail)?;
            match Archive::<Table>::open(handle) {
                Ok(opened) => {
                    // Valid, so every part of it can be read.
                    let archived = opened.get();
                    let total: usize = archived.names.iter().map(|n| n.len()).sum();
                    let sum = archived.weights.iter().fold(0u64, |s, w| s.wrapping_add(w.to_native()));
                    std::hint::black_box((total, sum, archived.title.len(), format!("{archived:?}")));
                }
                Err(Error::Corrupt { .. } | Error::WrongType { .. }) => {}
                Err(other) => prop_assert!(false, "unexpected error {other:?}"),
            }
        }
    }
}
