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
//!
//! # Segments
//!
//! A [`Segment`] is the POSIX shm object of one structure, created through the master, mapped
//! by each process wherever the kernel likes, and let go when the process's last value of the
//! structure is dropped.
//!
//! # Users
//!
//! The master counts *processes* as users of a segment. A process becomes one when it creates
//! the segment ([`Segment::create`], through `create_shm`) or opens it ([`Segment::open`],
//! through `get_shm`), and stops being one when its last value of the structure is dropped
//! (`release`, which returns after the master destroyed the segment if this was its last
//! user) or when it ends. Within a process, every value of one structure shares one
//! [`Segment`] through an [`Arc`] found in a process-wide table, so that opening a handle twice
//! maps it once and counts once.
//!
//! A worker forked from a process that had the segment open (a value captured by a process
//! body, say) inherits the mapping and the table, but the master does not count it: the first
//! `open` in the child registers it, and a drop in a child that never did releases nothing.
//!
//! In the master, `get_shm` is a lookup that adds no user (the master is the user only of what
//! it creates), so a segment the master merely opened lives as long as its workers' uses.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use netmcore_ipc::shm::{Mapping, ShmObject};
use netmcore_resources::ResId;

use crate::handle::Handle;

use crate::barrier::state::opener_slots;
use crate::header::{self, HEADER_LEN, HEADER_WORDS, Header, Kind, Sizes};
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
/// Bytes of a pipe's words (`PipeWords`: three cache lines: the reader's, the writer's, the
/// ends).
pub(crate) const PIPE_WORDS: usize = 192;
/// The number of claim slots of a vector or matrix: at most this many claims are live at
/// once (more is `Error::Full`).
pub(crate) const CLAIM_SLOTS: usize = 64;
/// Bytes of a channel's words (`ChannelWords`: three cache lines: the senders', the
/// receivers', the ends').
pub(crate) const CHANNEL_WORDS: usize = 192;
/// Bytes of the words at the start of a channel slot (`SlotWords`: stamp, seq, length).
pub(crate) const CHANNEL_SLOT_WORDS: usize = 16;
/// Bytes of one entry of a channel's ends table.
pub(crate) const CHANNEL_END: usize = 8;
/// The alignment of a channel's slots: a cache line, so that neighbours do not share one.
pub(crate) const CHANNEL_SLOT_ALIGN: usize = 64;

/// The bytes of one slot of a channel whose messages are at most `max_message` bytes: its
/// words, then the message, rounded up to whole cache lines.
pub(crate) fn channel_slot(max_message: usize) -> Option<usize> {
    align_up(
        CHANNEL_SLOT_WORDS.checked_add(max_message)?,
        CHANNEL_SLOT_ALIGN,
    )
}

/// The element of a channel with messages of at most `max_message` bytes, as its header
/// records it.
pub(crate) fn channel_element(max_message: usize) -> Element {
    Element {
        size: max_message,
        align: CHANNEL_SLOT_ALIGN,
    }
}

/// Bytes of a hash table's words (`MapWords`: lock and length, then the readers' version on
/// a cache line of its own).
pub(crate) const MAP_WORDS: usize = 128;

/// The slots of a hash table for `capacity` keys: twice the capacity rounded up to a power of
/// two, at least 8, so that probe chains stay short; `None` beyond `u32::MAX` keys (the length
/// word is 32 bits) or on overflow.
pub(crate) fn map_slots(capacity: usize) -> Option<usize> {
    u32::try_from(capacity).ok()?;
    Some(capacity.checked_mul(2)?.checked_next_power_of_two()?.max(8))
}

/// The entry of a hash table of keys `key` and values `value`: a state word, then the key's
/// bytes and the value's, each zero-padded to whole 64-bit words.
pub(crate) fn map_entry(key: Element, value: Element) -> Option<Element> {
    let words = 1 + key.size.div_ceil(8) + value.size.div_ceil(8);
    Some(Element {
        size: words.checked_mul(8)?,
        align: 8,
    })
}

/// The alignment of an archive's payload: that of the buffers rkyv serializes into
/// (`rkyv::util::AlignedVec`), which its archived types never exceed.
pub(crate) const ARCHIVE_ALIGN: usize = 16;

/// The element of an archive: bytes, 16-aligned as a whole ([`ARCHIVE_ALIGN`]).
pub(crate) const ARCHIVE_ELEMENT: Element = Element {
    size: 1,
    align: ARCHIVE_ALIGN,
};

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
    pub(crate) const NONE: Element = Element { size: 0, align: 1 };
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

    /// A `HashMap<K, V>` for `capacity` keys: its words, then [`map_slots`] entries of 64-bit
    /// words (a state word, the key's bytes and the value's, each zero-padded to whole words).
    /// The layout's element is the entry ([`map_entry`]), so that the header records its size.
    pub(crate) fn hash_map(key: Element, value: Element, capacity: usize) -> Option<Layout> {
        Layout::hash_table(Kind::HashMap, map_entry(key, value)?, capacity)
    }

    /// A `HashSet<K>` for `capacity` keys: a hash map without values.
    pub(crate) fn hash_set(key: Element, capacity: usize) -> Option<Layout> {
        Layout::hash_table(Kind::HashSet, map_entry(key, Element::NONE)?, capacity)
    }

    /// The layout of both hash tables, of entries `entry` (whole 64-bit words, at least one).
    fn hash_table(kind: Kind, entry: Element, capacity: usize) -> Option<Layout> {
        if entry.size == 0 || !entry.size.is_multiple_of(8) || entry.align != 8 {
            return None;
        }
        let payload_len = map_slots(capacity)?.checked_mul(entry.size)?;
        build(kind, entry, capacity, 0, MAP_WORDS, (0, 0, 4), payload_len)
    }

    /// A pipe of `capacity` bytes (at least 1): its words, 64-aligned (the header's length is a
    /// multiple of 64), then the ring.
    pub(crate) fn pipe(capacity: usize) -> Option<Layout> {
        if capacity == 0 {
            return None;
        }
        const _: () = assert!(HEADER_LEN.is_multiple_of(64));
        build(
            Kind::Pipe,
            Element::of::<u8>(),
            capacity,
            0,
            PIPE_WORDS,
            (0, 0, 64),
            capacity,
        )
    }

    /// A channel of `capacity` slots (at least 1) for messages of at most `max_message` bytes
    /// (less than `u32::MAX`): its words, 64-aligned, the ends table, then the slots, each
    /// [`channel_slot`] bytes and 64-aligned.
    pub(crate) fn channel(capacity: usize, max_message: usize) -> Option<Layout> {
        if capacity == 0 || max_message >= u32::MAX as usize {
            return None;
        }
        const _: () = assert!(HEADER_LEN.is_multiple_of(64));
        build(
            Kind::Channel,
            channel_element(max_message),
            capacity,
            0,
            CHANNEL_WORDS,
            (crate::channel::state::ENDS, CHANNEL_END, 8),
            capacity.checked_mul(channel_slot(max_message)?)?,
        )
    }

    /// An `Archive<T>` of `len` archived bytes: no words, the bytes right after the header,
    /// [`ARCHIVE_ALIGN`]-aligned as rkyv's root and the values under it need.
    pub(crate) fn archive(len: usize) -> Option<Layout> {
        const _: () = assert!(HEADER_LEN.is_multiple_of(ARCHIVE_ALIGN));
        build(Kind::Archive, ARCHIVE_ELEMENT, len, 0, 0, (0, 0, 4), len)
    }

    /// The layout of `kind` for `element` with the counts a header records, if it has one.
    ///
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
            Kind::HashMap | Kind::HashSet if columns == 0 => {
                Layout::hash_table(kind, element, count_usize)
            }
            Kind::Pipe if columns == 0 && element == Element::of::<u8>() => {
                Layout::pipe(count_usize)
            }
            Kind::Channel if columns == 0 && element.align == CHANNEL_SLOT_ALIGN => {
                Layout::channel(count_usize, element.size)
            }
            Kind::Archive if columns == 0 && element == ARCHIVE_ELEMENT => {
                Layout::archive(count_usize)
            }
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

/// The segments this process has open, by id.
static OPEN: Mutex<BTreeMap<ResId, Weak<Segment>>> = Mutex::new(BTreeMap::new());

/// A callback run when the process lets a segment go (its last value dropped).
type Leave = Box<dyn Fn(&Segment) + Send + Sync>;

/// What a process undoes when it lets a segment go, and the Unix pid of that process: a child
/// forked from it inherits the value, and must neither undo its parent's entry nor take it for
/// its own.
struct Entered {
    pid: u32,
    leave: Leave,
}

/// One mapped segment; see the [module](self) docs.
pub(crate) struct Segment {
    id: ResId,
    header: Header,
    mapping: Mapping,
    /// The Unix pid of the process that the master counts as a user through this value (0:
    /// none). A forked child inherits the value with its parent's pid in it.
    user_in: AtomicU32,
    /// What to undo in the segment when this process lets it go (a barrier's opener slot).
    leave: Mutex<Option<Entered>>,
    /// Taken by a thread of this process before it goes for a lock word of the segment that
    /// the process holds as a whole (a claims table's lock), so that no other thread of it
    /// holds that word meanwhile: a word that then names this process names no live holder.
    local: Mutex<()>,
}

impl Segment {
    /// Creates a segment of `kind` for the type `fingerprint` with the given sizes (its
    /// `total_len` is the object's size), lets `init` write its initial state into the bytes of
    /// the new object (all zeroes before; nobody else maps it yet), and publishes the header.
    /// The caller is the only user.
    ///
    /// # Errors
    ///
    /// [`Error::Master`] when the master cannot create it (no master in a worker, a ledger or
    /// `shm_open` failure); [`Error::TooLarge`] when the sizes do not fit the address space;
    /// the error of `init`. Nothing is left behind on any error.
    pub(crate) fn create(
        kind: Kind,
        fingerprint: u64,
        sizes: Sizes,
        init: impl FnOnce(&mut [u8]) -> Result<()>,
    ) -> Result<Arc<Segment>> {
        let total = usize::try_from(sizes.total_len).map_err(|_| Error::TooLarge {
            size: usize::MAX,
            max: isize::MAX.unsigned_abs(),
        })?;
        let prefix = format!(
            "/netmcore-{}-{}-",
            std::process::id(),
            kind.name().to_ascii_lowercase()
        );
        let (id, name) = netmcore_master::create_shm(&prefix, total)?;
        let made = map(id, &name).and_then(|mut mapping| {
            init(crate::sys::fresh_bytes(&mut mapping))?;
            let segment = Segment {
                id,
                header: Header::new(kind, fingerprint, sizes),
                mapping,
                user_in: AtomicU32::new(std::process::id()),
                leave: Mutex::new(None),
                local: Mutex::new(()),
            };
            if !segment.header.publish(segment.words64()?) {
                return Err(segment.corrupt("the segment is shorter than its header"));
            }
            Ok(segment)
        });
        match made {
            Ok(segment) => {
                let segment = Arc::new(segment);
                table().insert(id, Arc::downgrade(&segment));
                Ok(segment)
            }
            Err(e) => {
                let _ = netmcore_master::release(id);
                Err(e)
            }
        }
    }

    /// Opens the segment `id`, which must hold a structure of `kind` for the type
    /// `fingerprint`: the value this process already has, or a new mapping after `get_shm`
    /// made this process a user and the header was checked against the object.
    ///
    /// # Errors
    ///
    /// [`Error::Master`] for an id the master does not know (`NoResource`) or no master;
    /// [`Error::WrongType`] for a resource that is no shm object, or a structure of another
    /// kind or type; [`Error::Corrupt`] for a header that does not hold.
    pub(crate) fn open(id: ResId, kind: Kind, fingerprint: u64) -> Result<Arc<Segment>> {
        let mut table = table();
        if let Some(segment) = table.get(&id).and_then(Weak::upgrade) {
            segment.check_is(kind, fingerprint)?;
            let me = std::process::id();
            if segment.user_in.load(Ordering::Relaxed) != me {
                // Inherited from the process that forked this one: become a user now.
                get_shm(id)?;
                segment.user_in.store(me, Ordering::Relaxed);
            }
            return Ok(segment);
        }
        let name = get_shm(id)?;
        let opened = Segment::map_checked(id, &name, kind, fingerprint);
        match opened {
            Ok(segment) => {
                segment.user_in.store(std::process::id(), Ordering::Relaxed);
                let segment = Arc::new(segment);
                table.insert(id, Arc::downgrade(&segment));
                Ok(segment)
            }
            Err(e) => {
                // This process became a user with `get_shm`; it holds no value, so it lets go.
                let _ = netmcore_master::release(id);
                Err(e)
            }
        }
    }

    /// Maps the shm object `name` of segment `id` and checks its header against the object
    /// and the expected `kind` and `fingerprint`; the table of open segments is not involved.
    ///
    /// # Errors
    ///
    /// As [`Segment::open`], but for the master's part.
    pub(crate) fn map_checked(
        id: ResId,
        name: &str,
        kind: Kind,
        fingerprint: u64,
    ) -> Result<Segment> {
        let mapping = map(id, name)?;
        let words = header_words(&mapping).ok_or_else(|| Error::Corrupt {
            id,
            what: "the segment is not 8-byte aligned".to_owned(),
        })?;
        let bytes = header::snapshot(words);
        let header = Header::check(&bytes, mapping.len() as u64, kind, fingerprint, id)?;
        Ok(Segment {
            id,
            header,
            mapping,
            // Not registered: dropping it releases nothing.
            user_in: AtomicU32::new(0),
            leave: Mutex::new(None),
            local: Mutex::new(()),
        })
    }

    /// The segment's resource id.
    #[inline]
    pub(crate) fn id(&self) -> ResId {
        self.id
    }

    /// The header, as checked when the segment was opened (or as written at creation).
    pub(crate) fn header(&self) -> &Header {
        &self.header
    }

    /// The mapping.
    #[inline]
    pub(crate) fn mapping(&self) -> &Mapping {
        &self.mapping
    }

    /// [`Error::Corrupt`] of this segment, saying `what`.
    pub(crate) fn corrupt(&self, what: impl Into<String>) -> Error {
        Error::Corrupt {
            id: self.id,
            what: what.into(),
        }
    }

    /// The 64-bit words of the header.
    fn words64(&self) -> Result<&[AtomicU64]> {
        header_words(&self.mapping).ok_or_else(|| self.corrupt("the segment is not 8-byte aligned"))
    }

    /// Runs `enter` the first time a process calls this for the segment, and the `leave` it
    /// returns when that process lets the segment go (its last value dropped). Later calls in
    /// the same process do nothing; in a child forked after the call, the next call enters
    /// again for the child (the parent's `leave` is forgotten there, never run), so each
    /// process undoes exactly what it did itself. An error of `enter` is returned and nothing
    /// is recorded.
    ///
    /// This is how a barrier writes the calling process into its openers table once, however
    /// many values of it the process opens, and clears the slot when the last one goes.
    ///
    /// # Errors
    ///
    /// The error of `enter`.
    pub(crate) fn enter_once<L>(&self, enter: impl FnOnce(&Segment) -> Result<L>) -> Result<()>
    where
        L: Fn(&Segment) + Send + Sync + 'static,
    {
        let me = std::process::id();
        // Held while `enter` runs, so that two threads of one process opening the segment at
        // once enter it once.
        let mut entered = self.leave.lock().unwrap_or_else(PoisonError::into_inner);
        if entered.as_ref().is_some_and(|e| e.pid == me) {
            return Ok(());
        }
        let leave = enter(self)?;
        *entered = Some(Entered {
            pid: me,
            leave: Box::new(leave),
        });
        Ok(())
    }

    /// The lock that keeps the other threads of this process away from the segment's
    /// process-wide lock words while the caller takes one, holds it and gives it back (see
    /// the `local` field). A guard dropped during a panic leaves nothing to repair here.
    pub(crate) fn local_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Checks that an open segment holds a structure of `kind` and type `fingerprint`.
    fn check_is(&self, kind: Kind, fingerprint: u64) -> Result<()> {
        let found = self.header.kind();
        if found != Some(kind) || self.header.fingerprint() != fingerprint {
            return Err(Error::WrongType {
                expected: format!("a {kind} of type fingerprint {fingerprint:#018x}"),
                found: match found {
                    Some(found) => format!(
                        "a {found} of type fingerprint {:#018x}",
                        self.header.fingerprint()
                    ),
                    None => "no structure".to_owned(),
                },
            });
        }
        Ok(())
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        if let Some(entered) = self
            .leave
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            && entered.pid == std::process::id()
        {
            (entered.leave)(self);
        }
        let mut table = table();
        if table.get(&self.id).is_some_and(|w| w.strong_count() == 0) {
            table.remove(&self.id);
        }
        // Released with the table locked, so that an `open` of the same id in another thread
        // waits and then registers again, rather than racing with this release.
        if self.user_in.load(Ordering::Relaxed) == std::process::id()
            && let Err(e) = netmcore_master::release(self.id)
        {
            tracing::debug!(id = self.id.0, error = %e, "cannot release segment {}", self.id);
        }
    }
}

impl fmt::Debug for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segment")
            .field("id", &self.id)
            .field("kind", &self.header.kind())
            .field("len", &self.mapping.len())
            .finish_non_exhaustive()
    }
}

/// The table of open segments.
fn table() -> std::sync::MutexGuard<'static, BTreeMap<ResId, Weak<Segment>>> {
    OPEN.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `get_shm(id)`: the name, and this process becomes a user. A resource of another kind is
/// [`Error::WrongType`].
fn get_shm(id: ResId) -> Result<String> {
    netmcore_master::get_shm(id).map_err(|e| match e {
        netmcore_master::Error::WrongKind { found, .. } => Error::WrongType {
            expected: "a structure in shared memory (a shm object)".to_owned(),
            found: format!("a resource of kind {found:?}"),
        },
        e => Error::Master(e),
    })
}

/// The header of a mapping as 64-bit words, or `None` if the mapping is shorter than a
/// header or not 8-aligned. Only the header: the length of a segment need not be a multiple
/// of 8 (a vector of three bytes ends three bytes after its payload offset).
fn header_words(mapping: &Mapping) -> Option<&[AtomicU64]> {
    crate::sys::words_slice_at::<AtomicU64, _>(mapping, 0, HEADER_WORDS)
}

/// Maps the shm object `name` of segment `id` whole.
fn map(id: ResId, name: &str) -> Result<Mapping> {
    let io = |e: netmcore_ipc::Error| match e {
        netmcore_ipc::Error::Os { op, target, source } => {
            Error::Master(netmcore_master::Error::Io { op, target, source })
        }
        e => Error::Corrupt {
            id,
            what: format!("cannot map {name}: {e}"),
        },
    };
    let shm = ShmObject::open(name).map_err(io)?;
    let mapping = shm.map().map_err(io)?;
    if mapping.len() < HEADER_LEN {
        return Err(Error::Corrupt {
            id,
            what: format!("{name} has {} bytes, fewer than a header", mapping.len()),
        });
    }
    Ok(mapping)
}

/// Opens the segment of `handle`, a structure `S` of `kind` with elements `element`, and
/// checks its layout against the header.
pub(crate) fn open<S: 'static>(
    handle: Handle<S>,
    kind: Kind,
    element: Element,
) -> Result<(Arc<Segment>, Layout)> {
    if !handle.is_of_its_type() {
        return Err(Error::WrongType {
            expected: format!("a handle of {}", std::any::type_name::<S>()),
            found: "a handle of another type".to_owned(),
        });
    }
    let segment = Segment::open(handle.id(), kind, handle.fingerprint())?;
    let layout = Layout::check(segment.header(), element, segment.id())?;
    if layout.total > segment.mapping().len() {
        return Err(segment.corrupt(format!(
            "the layout needs {} bytes, the mapping has {}",
            layout.total,
            segment.mapping().len()
        )));
    }
    Ok((segment, layout))
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
        let p = Layout::pipe(1000).expect("small");
        assert_eq!((p.words, p.payload, p.total), (128, 320, 1320));
        assert_eq!(Layout::pipe(0), None);
        let r = Layout::archive(100).expect("small");
        assert_eq!(
            (r.words, r.payload, r.payload_len, r.total),
            (128, 128, 100, 228)
        );
        assert_eq!(r.payload % ARCHIVE_ALIGN, 0);
        assert_eq!(Layout::archive(0).expect("empty").total, 128);
        // An archive's layout is found again from its counts, and from no others.
        let of = |element, count, columns| Layout::of(Kind::Archive, element, count, columns);
        assert_eq!(of(ARCHIVE_ELEMENT, 100, 0), Some(r));
        assert_eq!(of(ARCHIVE_ELEMENT, 100, 1), None);
        assert_eq!(of(Element::of::<u8>(), 100, 0), None);
    }

    /// A segment is as long as its layout, which need not be a multiple of 8: only the
    /// header is viewed as 64-bit words.
    #[test]
    fn a_segment_of_an_odd_length_is_created() {
        let layout = Layout::mutex(Element::of::<u32>()).expect("small");
        assert_eq!(layout.total, 140);
        let segment =
            Segment::create(Kind::Mutex, 42, layout.sizes(), |_| Ok(())).expect("a segment");
        assert_eq!(segment.mapping().len(), 140);
        assert_eq!(segment.header().kind(), Some(Kind::Mutex));
        let again = Segment::open(segment.id(), Kind::Mutex, 42).expect("the same segment");
        assert!(Arc::ptr_eq(&segment, &again));
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

    /// A mutex of one byte is a segment of 137 bytes: its header is still read and written
    /// as 64-bit words, whatever the length.
    #[test]
    fn a_segment_whose_length_is_no_multiple_of_8_is_created() {
        let layout = Layout::mutex(Element::of::<u8>()).expect("small");
        assert_eq!(layout.total % 8, 1);
        let mutex = crate::Mutex::new(7u8).expect("a segment of 137 bytes");
        assert_eq!(*mutex.lock().expect("not poisoned"), 7);
    }

    #[test]
    fn hash_tables_have_twice_their_capacity_of_slots() {
        assert_eq!(map_slots(0), Some(8));
        assert_eq!(map_slots(5), Some(16));
        assert_eq!(map_slots(8), Some(16));
        assert_eq!(map_slots(u32::MAX as usize + 1), None);
        let m = Layout::hash_map(Element::of::<u32>(), Element::of::<[u8; 9]>(), 5).expect("small");
        // 16 slots of a state word, one key word and two value words.
        assert_eq!((m.words, m.payload, m.payload_len), (128, 256, 16 * 4 * 8));
        assert_eq!((m.count, m.columns, m.element.size), (5, 0, 32));
        let s = Layout::hash_set(Element::of::<u64>(), 3).expect("small");
        assert_eq!(s.payload_len, 8 * 2 * 8);
        assert_eq!(Layout::hash_set(Element::of::<u8>(), usize::MAX), None);
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
            Layout::hash_map(Element::of::<u64>(), Element::of::<[u8; 3]>(), 10).expect("small"),
            Layout::hash_set(Element::of::<[u32; 3]>(), 0).expect("small"),
            Layout::pipe(7).expect("small"),
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
        // A channel without slots has no layout.
        let header = Header::new(Kind::Channel, 42, Sizes::default());
        let err = Layout::check(&header, Element::NONE, ResId(3)).expect_err("no layout");
        assert!(err.to_string().contains("no channel layout"), "{err}");
    }
}
