//! [`HashMap`] and [`HashSet`] over the protocol of [`super::state`], in a segment.
//!
//! Keys and values live in the segment as 64-bit atomic words (their bytes, zero-padded to a
//! whole word) and are copied through them, so this module needs no view of the payload as
//! `K` or `V` and no `unsafe` code: every access goes through `sys::words_slice_at`, and a
//! corrupt word is at worst a wrong value of a `Plain` type, which has no invalid bit pattern.
//! Keys and values of up to [`INLINE`] words are copied on the stack, larger ones in a `Vec`.
//!
//! A lookup ([`HashMap::get`], [`HashSet::contains`], and [`HashSet::insert`] of a key that is
//! there already) first probes without the lock ([`state::Table::read`]) and takes the lock
//! only if a change ran meanwhile; an insert of a new key, a replace or a remove takes it.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use super::state::{self, Full, Locked, MapStep, MapWords, Read};
use crate::handle::{Handle, fingerprint};
use crate::header::Kind;
use crate::mutex::state::Locking;
use crate::segment::{Element, Layout, Segment, map_entry, map_slots, open};
use crate::sys;
use crate::wait::{Holders, Watch, own_tag_or_master};
use crate::{Error, Plain, Result};
use zerocopy::IntoBytes as _;

/// How many times a locker looks at a held lock before it sleeps (as the mutex does).
const SPINS: u32 = 100;

/// The words that hold `size` bytes.
fn words_for(size: usize) -> usize {
    size.div_ceil(8)
}

/// Keys and values of up to this many words are copied on the stack.
const INLINE: usize = 4;

/// The words of a key or a value: on the stack up to [`INLINE`] words, else in a `Vec`.
enum Words {
    /// The first `len` words are the value.
    Inline([u64; INLINE], usize),
    /// Longer ones.
    Heap(Vec<u64>),
}

impl Words {
    /// `len` zero words.
    fn zeroed(len: usize) -> Words {
        if len <= INLINE {
            Words::Inline([0; INLINE], len)
        } else {
            Words::Heap(vec![0; len])
        }
    }

    /// `bytes` as zero-padded native-endian words.
    fn of(bytes: &[u8]) -> Words {
        let mut words = Words::zeroed(words_for(bytes.len()));
        for (word, chunk) in words.as_mut_slice().iter_mut().zip(bytes.chunks(8)) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            *word = u64::from_ne_bytes(buf);
        }
        words
    }

    fn as_slice(&self) -> &[u64] {
        match self {
            Words::Inline(words, len) => &words[..*len],
            Words::Heap(words) => words,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [u64] {
        match self {
            Words::Inline(words, len) => &mut words[..*len],
            Words::Heap(words) => words,
        }
    }

    /// The `T` whose bytes start these words, if they hold enough.
    fn to<T: Plain>(&self) -> Option<T> {
        from_words(self.as_slice())
    }
}

/// The `T` whose bytes start `words`, if they hold enough.
fn from_words<T: Plain>(words: &[u64]) -> Option<T> {
    T::read_from_bytes(words.as_bytes().get(..size_of::<T>())?).ok()
}

/// The untyped table under both structures.
struct Table {
    segment: Arc<Segment>,
    layout: Layout,
    /// Words of a key.
    key_words: usize,
    /// Words of a value.
    value_words: usize,
}

impl Table {
    /// A new empty table of `layout` for keys `key` and values `value` (zeroed memory is
    /// unlocked and empty).
    fn create(layout: Layout, key: Element, value: Element, fingerprint: u64) -> Result<Table> {
        let segment = Segment::create(layout.kind, fingerprint, layout.sizes(), |_| Ok(()))?;
        Ok(Table {
            segment,
            layout,
            key_words: words_for(key.size),
            value_words: words_for(value.size),
        })
    }

    /// Opens the table of `handle`, of `kind` with keys `key` and values `value`.
    fn open<S: 'static>(
        handle: Handle<S>,
        kind: Kind,
        key: Element,
        value: Element,
    ) -> Result<Table> {
        let entry = map_entry(key, value).ok_or(Error::TooLarge {
            size: key.size.saturating_add(value.size),
            max: isize::MAX.unsigned_abs(),
        })?;
        let (segment, layout) = open::<S>(handle, kind, entry)?;
        Ok(Table {
            segment,
            layout,
            key_words: words_for(key.size),
            value_words: words_for(value.size),
        })
    }

    /// The capacity the table was created with.
    fn capacity(&self) -> usize {
        self.layout.count
    }

    /// The protocol's view of the words and slots; `None` only if the mapping does not hold
    /// the layout, which was checked against it at open.
    fn state(&self) -> Option<state::Table<'_>> {
        let mapping = self.segment.mapping();
        let words = sys::words_at::<MapWords, _>(mapping, self.layout.words)?;
        let entries =
            map_slots(self.layout.count)?.checked_mul(1 + self.key_words + self.value_words)?;
        let slots = sys::words_slice_at::<AtomicU64, _>(mapping, self.layout.payload, entries)?;
        let capacity = u32::try_from(self.layout.count).ok()?;
        Some(state::Table::attach(
            words,
            slots,
            self.key_words,
            self.value_words,
            capacity,
        ))
    }

    /// Runs `f` with the table's lock held, taking it over from a dead holder (or seizing a
    /// corrupt lock word); `None` if the segment holds no table.
    fn locked<R>(&self, f: impl FnOnce(&state::Table<'_>, &Locked) -> R) -> Option<R> {
        let table = self.state()?;
        let _local = self.segment.local_lock();
        let me = own_tag_or_master();
        let holders = Holders {
            watch: Watch::new(),
            me,
        };
        let id = self.segment.id();
        let mut locking = Locking::new();
        let mut spins = 0;
        let locked = loop {
            let epoch = holders.watch.epoch();
            match table.lock_step(&mut locking, me, &holders) {
                Ok(MapStep::Locked { locked, took_over }) => {
                    if took_over {
                        tracing::debug!(
                            id = id.0,
                            "table {id}: lock taken over from a dead holder"
                        );
                    }
                    break locked;
                }
                Ok(MapStep::Park { expected }) => {
                    if spins < SPINS {
                        spins += 1;
                        std::hint::spin_loop();
                        continue;
                    }
                    holders.watch.park(table.lock_word(), expected, epoch, None);
                }
                Err(bad) => {
                    tracing::warn!(
                        id = id.0,
                        "table {id}: {} ({:#x}), seized",
                        bad.what,
                        bad.value
                    );
                    break table.seize(me);
                }
            }
        };
        let result = f(&table, &locked);
        match table.unlock(locked) {
            Ok(wake) => {
                let _ = sys::wake(table.lock_word(), wake);
            }
            // Someone else wrote the lock word meanwhile: the segment is corrupt. Leave the
            // word (the next locker seizes it) and wake everyone.
            Err(bad) => {
                tracing::warn!(id = id.0, "table {id}: {} at unlock", bad.what);
                let _ = sys::futex_wake(table.lock_word(), u32::MAX);
            }
        }
        Some(result)
    }

    /// Inserts `key` with `value` (bytes); the old value's words if the key was there.
    ///
    /// A table without values (a set) first looks the key up without the lock: a key that is
    /// there already is the whole answer, since there is no value to replace.
    fn insert(&self, key: &[u8], value: &[u8]) -> Result<Option<Words>> {
        let key_words = Words::of(key);
        let value_words = Words::of(value);
        let hash = state::hash(key);
        let mut old = Words::zeroed(value_words.as_slice().len());
        if self.value_words == 0
            && let Some(table) = self.state()
            && table.read(key_words.as_slice(), hash, old.as_mut_slice()) == Read::Found
        {
            return Ok(Some(old));
        }
        match self.locked(|t, l| {
            t.insert(
                key_words.as_slice(),
                hash,
                value_words.as_slice(),
                old.as_mut_slice(),
                l,
            )
        }) {
            Some(Ok(true)) => Ok(Some(old)),
            Some(Ok(false)) => Ok(None),
            Some(Err(Full)) => Err(Error::Full),
            None => Err(self.segment.corrupt("the segment does not hold its table")),
        }
    }

    /// The value words of `key`, if it is there: looked up without the lock, and again under
    /// it if a change ran meanwhile.
    fn get(&self, key: &[u8]) -> Option<Words> {
        let key_words = Words::of(key);
        let hash = state::hash(key);
        let mut out = Words::zeroed(self.value_words);
        match self
            .state()?
            .read(key_words.as_slice(), hash, out.as_mut_slice())
        {
            Read::Found => return Some(out),
            Read::Absent => return None,
            Read::Retry => {}
        }
        self.locked(|t, l| t.get(key_words.as_slice(), hash, out.as_mut_slice(), l))?
            .then_some(out)
    }

    /// Removes `key`; its value words if it was there.
    fn remove(&self, key: &[u8]) -> Option<Words> {
        let key_words = Words::of(key);
        let hash = state::hash(key);
        let mut out = Words::zeroed(self.value_words);
        self.locked(|t, l| t.remove(key_words.as_slice(), hash, out.as_mut_slice(), l))?
            .then_some(out)
    }

    /// The number of keys.
    fn len(&self) -> usize {
        self.locked(|t, l| t.len(l)).unwrap_or(0)
    }

    /// The key and value words of every key, copied under the lock.
    fn entries(&self) -> Vec<(Vec<u64>, Vec<u64>)> {
        self.locked(|t, l| {
            let mut all = Vec::new();
            t.for_each(l, |k, v| all.push((k.to_vec(), v.to_vec())));
            all
        })
        .unwrap_or_default()
    }
}

/// The layout of a table of `capacity` keys of `K` and values of `value_size` bytes.
fn layout_of<K>(kind: Kind, value: Element, capacity: usize) -> Result<Layout> {
    let layout = match kind {
        Kind::HashSet => Layout::hash_set(Element::of::<K>(), capacity),
        _ => Layout::hash_map(Element::of::<K>(), value, capacity),
    };
    layout.ok_or(Error::TooLarge {
        size: capacity,
        max: u32::MAX as usize,
    })
}

/// A fixed-capacity hash map of [`Plain`] keys and values in shared memory, for processes
/// (and the threads in them): the counterpart of OCamlnet's `Netmcore_hashtbl` and of
/// Python's `multiprocessing.Manager().dict()`, shaped like `std::collections::HashMap`.
///
/// ```
/// use netmcore_shared::{Error, HashMap};
///
/// # fn main() -> netmcore_shared::Result<()> {
/// let squares = HashMap::<u32, u64>::with_capacity(2)?;
/// // Another process opens it from its handle (in a process argument, say).
/// let same = HashMap::open(squares.handle())?;
/// assert_eq!(same.insert(3, 9)?, None);
/// assert_eq!(squares.insert(4, 16)?, None);
/// assert_eq!(squares.insert(3, 10)?, Some(9), "a replace returns the old value");
/// assert!(matches!(squares.insert(5, 25), Err(Error::Full)));
/// assert_eq!(squares.get(&3), Some(10));
/// assert_eq!(squares.remove(&4), Some(16));
/// assert!(!squares.contains_key(&4));
/// assert_eq!((squares.len(), squares.capacity()), (1, 2));
/// assert_eq!(squares.to_vec(), vec![(3, 10)]);
/// # Ok(())
/// # }
/// ```
///
/// **Keys** are hashed (FNV-1a) and compared by their bytes, so the same key finds the same
/// slot in every process; two keys are equal when their bytes are. The table is open
/// addressing with linear probing over twice the capacity rounded up to a power of two (at
/// least 8 slots); a removed key leaves a tombstone that keeps the probe chains intact and
/// that inserts reuse.
///
/// **Capacity** is fixed at creation: [`HashMap::capacity`] is the number of keys asked for,
/// and an insert of a new key into a map that holds that many is `Err(Error::Full)` and changes
/// nothing (replacing the value of a key already there always works).
///
/// **Concurrency.** A lookup ([`get`](HashMap::get), [`contains_key`](HashMap::contains_key))
/// probes without a lock, as a seqlock reader: it answers from what it read when no remove or
/// replace ran meanwhile, and otherwise asks again under the map's lock. Inserts, replaces
/// and removes take that lock (one word, the protocol of [`Mutex`](crate::Mutex)) for the few
/// slots they probe, so readers on every core scale and writers take turns. A process that
/// dies holding it —
/// killed in the middle of an insert, say — does not wedge the map: the next operation takes
/// the lock over within moments and recounts the keys. A new key is committed by one word, so
/// it is either in or not; a *replace* interrupted by a death may leave a torn value (still a
/// valid `V`).
///
/// **Bad bytes.** Reading calls ([`get`](HashMap::get), [`contains_key`](HashMap::contains_key),
/// [`len`](HashMap::len), [`to_vec`](HashMap::to_vec)) return values, not `Result`s: on a
/// corrupt segment they answer as best they can (a key not found, the entries that look
/// whole) and never panic or hang.
///
/// **Lifetime.** The map lives in a segment of its own, which the master destroys when the
/// last process that created or opened it has dropped its values or ended.
pub struct HashMap<K: Plain, V: Plain> {
    table: Table,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K: Plain, V: Plain> HashMap<K, V> {
    /// A new empty map for up to `capacity` keys, in a segment of its own; the calling
    /// process is its user.
    ///
    /// # Errors
    ///
    /// [`Error::Master`] when no master can create the segment; [`Error::TooLarge`] for a
    /// capacity beyond `u32::MAX` or a table too large to map.
    pub fn with_capacity(capacity: usize) -> Result<HashMap<K, V>> {
        let layout = layout_of::<K>(Kind::HashMap, Element::of::<V>(), capacity)?;
        Ok(HashMap {
            table: Table::create(
                layout,
                Element::of::<K>(),
                Element::of::<V>(),
                fingerprint::<HashMap<K, V>>(),
            )?,
            _types: PhantomData,
        })
    }

    /// Opens the map named by `handle` (made by [`HashMap::handle`] in any process of the
    /// run): the calling process becomes a user, and maps it wherever it likes.
    ///
    /// # Errors
    ///
    /// [`Error::WrongType`] for a handle of another structure or type; [`Error::Corrupt`] for
    /// a segment whose header does not hold; [`Error::Master`] for an unknown id
    /// (`NoResource`: the map is gone) or no master.
    pub fn open(handle: Handle<HashMap<K, V>>) -> Result<HashMap<K, V>> {
        let table = Table::open(
            handle,
            Kind::HashMap,
            Element::of::<K>(),
            Element::of::<V>(),
        )?;
        Ok(HashMap {
            table,
            _types: PhantomData,
        })
    }

    /// The handle of this map, to pass to other processes.
    #[must_use]
    pub fn handle(&self) -> Handle<HashMap<K, V>> {
        Handle::new(self.table.segment.id())
    }

    /// Inserts `key` with `value`: `None` for a new key, the old value for a key that was
    /// there (its value is replaced).
    ///
    /// # Errors
    ///
    /// [`Error::Full`] for a new key when the map holds [`capacity`](HashMap::capacity) keys:
    /// nothing is changed. [`Error::Corrupt`] for a segment that holds no table.
    pub fn insert(&self, key: K, value: V) -> Result<Option<V>> {
        let old = self.table.insert(key.as_bytes(), value.as_bytes())?;
        Ok(old.and_then(|words| words.to()))
    }

    /// The value of `key`, if it is there (a copy: another process may change it at once).
    #[must_use]
    pub fn get(&self, key: &K) -> Option<V> {
        self.table.get(key.as_bytes()).and_then(|words| words.to())
    }

    /// Whether `key` is there.
    #[must_use]
    pub fn contains_key(&self, key: &K) -> bool {
        self.table.get(key.as_bytes()).is_some()
    }

    /// Removes `key`; its value if it was there.
    pub fn remove(&self, key: &K) -> Option<V> {
        self.table
            .remove(key.as_bytes())
            .and_then(|words| words.to())
    }

    /// The number of keys (another process may change it at once).
    #[must_use]
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the map holds no key.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of keys the map was created for: the most it ever holds.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }

    /// A snapshot of every key and its value, in no particular order, taken under the lock.
    #[must_use]
    pub fn to_vec(&self) -> Vec<(K, V)> {
        self.table
            .entries()
            .into_iter()
            .filter_map(|(k, v)| Some((from_words(&k)?, from_words(&v)?)))
            .collect()
    }
}

impl<K: Plain, V: Plain> fmt::Debug for HashMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HashMap")
            .field("id", &self.table.segment.id())
            .field("capacity", &self.capacity())
            .finish_non_exhaustive()
    }
}

/// A fixed-capacity hash set of [`Plain`] keys in shared memory, for processes (and the
/// threads in them): a [`HashMap`] without values, shaped like `std::collections::HashSet`.
///
/// ```
/// use netmcore_shared::{Error, HashSet};
///
/// # fn main() -> netmcore_shared::Result<()> {
/// let seen = HashSet::<[u8; 4]>::with_capacity(2)?;
/// // Another process opens it from its handle (in a process argument, say).
/// let same = HashSet::open(seen.handle())?;
/// assert!(same.insert(*b"abcd")?, "new");
/// assert!(!seen.insert(*b"abcd")?, "already there");
/// assert!(seen.insert(*b"efgh")?);
/// assert!(matches!(seen.insert(*b"ijkl"), Err(Error::Full)));
/// assert!(seen.contains(b"efgh"));
/// assert!(seen.remove(b"abcd"));
/// assert_eq!((seen.len(), seen.capacity()), (1, 2));
/// assert_eq!(seen.to_vec(), vec![*b"efgh"]);
/// # Ok(())
/// # }
/// ```
///
/// Keys, capacity, concurrency, bad bytes and lifetime are as for [`HashMap`]: keys hashed and
/// compared by their bytes, `Err(Error::Full)` for a new key beyond the capacity (nothing
/// changed), lookups without a lock — an [`insert`](HashSet::insert) of a key that is there
/// already is one, so that many processes adding mostly known keys do not queue on the lock —
/// a holder's death repaired by the next operation, and the reading calls
/// ([`contains`](HashSet::contains), [`len`](HashSet::len), [`to_vec`](HashSet::to_vec)) never
/// panic or hang on a corrupt segment.
pub struct HashSet<K: Plain> {
    table: Table,
    _types: PhantomData<fn() -> K>,
}

impl<K: Plain> HashSet<K> {
    /// A new empty set for up to `capacity` keys, in a segment of its own; the calling
    /// process is its user.
    ///
    /// # Errors
    ///
    /// As [`HashMap::with_capacity`].
    pub fn with_capacity(capacity: usize) -> Result<HashSet<K>> {
        let layout = layout_of::<K>(Kind::HashSet, Element::NONE, capacity)?;
        Ok(HashSet {
            table: Table::create(
                layout,
                Element::of::<K>(),
                Element::NONE,
                fingerprint::<HashSet<K>>(),
            )?,
            _types: PhantomData,
        })
    }

    /// Opens the set named by `handle` (made by [`HashSet::handle`] in any process of the run).
    ///
    /// # Errors
    ///
    /// As [`HashMap::open`].
    pub fn open(handle: Handle<HashSet<K>>) -> Result<HashSet<K>> {
        let table = Table::open(handle, Kind::HashSet, Element::of::<K>(), Element::NONE)?;
        Ok(HashSet {
            table,
            _types: PhantomData,
        })
    }

    /// The handle of this set, to pass to other processes.
    #[must_use]
    pub fn handle(&self) -> Handle<HashSet<K>> {
        Handle::new(self.table.segment.id())
    }

    /// Adds `key`: `true` if it was new, `false` if it was there already.
    ///
    /// # Errors
    ///
    /// [`Error::Full`] for a new key when the set holds [`capacity`](HashSet::capacity) keys:
    /// nothing is changed. [`Error::Corrupt`] for a segment that holds no table.
    pub fn insert(&self, key: K) -> Result<bool> {
        Ok(self.table.insert(key.as_bytes(), &[])?.is_none())
    }

    /// Whether `key` is there.
    #[must_use]
    pub fn contains(&self, key: &K) -> bool {
        self.table.get(key.as_bytes()).is_some()
    }

    /// Removes `key`; whether it was there.
    pub fn remove(&self, key: &K) -> bool {
        self.table.remove(key.as_bytes()).is_some()
    }

    /// The number of keys (another process may change it at once).
    #[must_use]
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the set holds no key.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of keys the set was created for: the most it ever holds.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }

    /// A snapshot of every key, in no particular order, taken under the lock.
    #[must_use]
    pub fn to_vec(&self) -> Vec<K> {
        self.table
            .entries()
            .into_iter()
            .filter_map(|(k, _)| from_words(&k))
            .collect()
    }
}

impl<K: Plain> fmt::Debug for HashSet<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HashSet")
            .field("id", &self.table.segment.id())
            .field("capacity", &self.capacity())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::testing::scribble;

    #[test]
    fn a_map_inserts_replaces_removes_and_fills_up() {
        let map = HashMap::<u64, [u32; 3]>::with_capacity(100).expect("a map");
        assert!(map.is_empty());
        for k in 0..100u64 {
            assert_eq!(map.insert(k, [k as u32, 1, 2]).expect("room"), None);
        }
        assert!(matches!(map.insert(100, [0; 3]), Err(Error::Full)));
        assert_eq!(map.len(), 100);
        assert_eq!(map.get(&100), None, "Full inserted nothing");
        assert_eq!(map.insert(7, [9; 3]).expect("a replace"), Some([7, 1, 2]));
        assert_eq!(map.get(&7), Some([9; 3]));
        for k in (0..100u64).step_by(2) {
            assert_eq!(map.remove(&k).map(|v| v[1]), Some(1));
        }
        assert_eq!(map.remove(&0), None);
        assert_eq!(map.len(), 50);
        // The freed room (tombstones among them) takes new keys, and the old ones are found.
        for k in 1000..1050u64 {
            assert_eq!(map.insert(k, [0; 3]).expect("room again"), None);
        }
        assert!(matches!(map.insert(2000, [0; 3]), Err(Error::Full)));
        for k in (1..100u64).step_by(2) {
            assert!(map.contains_key(&k), "{k}");
        }
        let mut all = map.to_vec();
        all.sort_unstable_by_key(|(k, _)| *k);
        assert_eq!(all.len(), 100);
        assert_eq!(all[0], (1, [1, 1, 2]));
        assert_eq!(all[3], (7, [9; 3]));
        let again = HashMap::open(map.handle()).expect("the same map");
        assert_eq!((again.len(), again.capacity()), (100, 100));
    }

    #[test]
    fn keys_are_compared_by_all_their_bytes() {
        let set = HashSet::<[u8; 11]>::with_capacity(4).expect("a set");
        let mut a = [0u8; 11];
        assert!(set.insert(a).expect("room"));
        a[10] = 1;
        assert!(set.insert(a).expect("room"), "differs in the last byte");
        assert!(!set.insert(a).expect("room"));
        assert_eq!(set.len(), 2);
        let unit = HashSet::<()>::with_capacity(1).expect("a set of ()");
        assert!(unit.insert(()).expect("room"));
        assert!(!unit.insert(()).expect("room"));
        assert_eq!(unit.to_vec(), vec![()]);
        let empty = HashMap::<u8, u8>::with_capacity(0).expect("no room");
        assert!(matches!(empty.insert(1, 1), Err(Error::Full)));
    }

    #[test]
    fn opening_as_another_type_is_an_error() {
        let map = HashMap::<u32, u32>::with_capacity(3).expect("a map");
        let as_set =
            Handle::<HashSet<u32>>::from_parts(map.handle().id(), fingerprint::<HashSet<u32>>());
        assert!(matches!(
            HashSet::open(as_set),
            Err(Error::WrongType { .. })
        ));
        let other = Handle::<HashMap<u32, u64>>::from_parts(
            map.handle().id(),
            fingerprint::<HashMap<u32, u64>>(),
        );
        assert!(matches!(HashMap::open(other), Err(Error::WrongType { .. })));
        assert!(
            HashMap::<u32, u32>::with_capacity(u32::MAX as usize + 1).is_err(),
            "beyond u32::MAX keys"
        );
    }

    /// Threads of one process insert overlapping keys at once: the union, each key once.
    #[test]
    fn threads_insert_at_once() {
        let map = Arc::new(HashMap::<u32, u32>::with_capacity(3000).expect("a map"));
        let threads: Vec<_> = (0..4u32)
            .map(|t| {
                let map = Arc::clone(&map);
                std::thread::spawn(move || {
                    for k in t * 500..t * 500 + 1000 {
                        map.insert(k, k * 2).expect("room");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("inserter");
        }
        assert_eq!(map.len(), 2500);
        let mut keys: Vec<u32> = map
            .to_vec()
            .into_iter()
            .map(|(k, v)| {
                assert_eq!(v, k * 2);
                k
            })
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, (0..2500).collect::<Vec<_>>());
    }

    /// A lock word left naming this process (a scribble, or a thread that was killed in the
    /// middle of an operation) is taken over by the next operation: no hang.
    #[test]
    fn a_lock_left_by_this_process_is_taken_over() {
        let set = HashSet::<u64>::with_capacity(4).expect("a set");
        assert!(set.insert(1).expect("room"));
        let words = set.table.state().expect("a table");
        words
            .lock_word()
            .store(own_tag_or_master(), std::sync::atomic::Ordering::Relaxed);
        assert!(set.contains(&1));
        assert!(set.insert(2).expect("room"));
        assert_eq!(set.len(), 2);
    }

    fn regions(layout: &Layout) -> Vec<std::ops::Range<usize>> {
        vec![
            0..layout.words,
            layout.words..layout.payload,
            layout.payload..layout.total,
        ]
    }

    proptest! {
        /// Random bytes anywhere over a map's segment give an error when it is opened again
        /// (`Corrupt` or `WrongType`) or a map that works; the value already open never panics
        /// or hangs, and its length stays within its capacity.
        #[test]
        fn scribbled_maps_give_errors_never_panics(
            (offset, bytes) in scribble::scribbles(&regions(
                &Layout::hash_map(Element::of::<u32>(), Element::of::<u64>(), 6).expect("small"),
            )),
        ) {
            let map = HashMap::<u32, u64>::with_capacity(6).expect("a map");
            for k in 0..4 {
                map.insert(k, u64::from(k) + 10).expect("room");
            }
            let id = map.handle().id();
            let name = scribble::write(id, offset, &bytes);
            let checked = scribble::recheck(
                id, &name, Kind::HashMap, fingerprint::<HashMap<u32, u64>>(),
                map_entry(Element::of::<u32>(), Element::of::<u64>()).expect("small"),
            );
            prop_assert!(checked.is_ok(), "{checked:?}");
            for k in 0..8 {
                let _ = map.get(&k);
                let _ = map.insert(k, 1);
                let _ = map.remove(&(k + 2));
            }
            prop_assert!(map.len() <= map.capacity());
            prop_assert!(map.to_vec().len() <= 16);
        }

        #[test]
        fn scribbled_sets_give_errors_never_panics(
            (offset, bytes) in scribble::scribbles(&regions(
                &Layout::hash_set(Element::of::<[u8; 5]>(), 3).expect("small"),
            )),
        ) {
            let set = HashSet::<[u8; 5]>::with_capacity(3).expect("a set");
            set.insert(*b"abcde").expect("room");
            let id = set.handle().id();
            let name = scribble::write(id, offset, &bytes);
            let checked = scribble::recheck(
                id, &name, Kind::HashSet, fingerprint::<HashSet<[u8; 5]>>(),
                map_entry(Element::of::<[u8; 5]>(), Element::NONE).expect("small"),
            );
            prop_assert!(checked.is_ok(), "{checked:?}");
            let _ = set.contains(b"abcde");
            let _ = set.insert(*b"fghij");
            let _ = set.remove(b"abcde");
            let _ = set.to_vec();
            let _ = set.is_empty();
        }
    }
}
