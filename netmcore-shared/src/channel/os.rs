//! [`channel`], [`Sender`] and [`Receiver`] over the protocols of [`super::state`], in a
//! segment.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use netmcore_resources::ResId;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::state::{
    ChannelWords, Claim, EndsState, Park, QueueState, Refused, Role, SlotWords, Slots, Spot,
    TableFull, Take, Ticket, VOID, Waker,
};
use crate::given::{Given, GivenEnds};
use crate::handle::{Handle, fingerprint};
use crate::header::Kind;
use crate::mutex::state::{LockStep, Locking, WAITERS, unlock};
use crate::protocol::Wake;
use crate::segment::{CHANNEL_SLOT_WORDS, Layout, Segment, channel_element, channel_slot};
use crate::sys;
use crate::wait::{Holders, Watch, own_tag};
use crate::{Error, Result};

/// How long a side looks at an empty (or full) queue before it sleeps: the other side on
/// another core usually moves within a microsecond or two, far sooner than a sleep and a
/// wake (tens of microseconds for a process asleep on an idle core). Between two looks the
/// side yields its core, for a peer that waits for it.
const SPIN: Duration = Duration::from_micros(20);

/// The proof that the calling process claimed a channel slot for writing, which
/// `sys::slot_bytes_mut` consumes. Only this module makes one.
pub(crate) struct Writing(());

/// The proof that the calling process took a channel slot for reading, which
/// `sys::slot_bytes` consumes. Only this module makes one.
pub(crate) struct Reading(());

/// The type whose fingerprint a channel's header records: the queue of `T`s, shared by both
/// kinds of ends.
struct Queue<T>(PhantomData<fn(T) -> T>);

/// The type whose fingerprint, mixed with the end's ticket, a moved end's handle carries.
struct Moved<S>(PhantomData<fn(S) -> S>);

/// The futex, for the queue's transitions.
struct Futex;

impl Waker for Futex {
    fn wake_all(&self, word: &AtomicU32) {
        let _ = sys::futex_wake(word, u32::MAX);
    }
}

/// The slots of a mapped channel.
struct MappedSlots<'a> {
    segment: &'a Segment,
    layout: &'a Layout,
    stride: usize,
}

impl Slots for MappedSlots<'_> {
    #[inline]
    fn slot(&self, index: usize) -> &SlotWords {
        sys::words_at::<SlotWords, _>(
            self.segment.mapping(),
            self.layout.payload + index * self.stride,
        )
        .unwrap_or_else(|| unreachable!("the layout of a mapped channel holds its slots"))
    }
}

/// Ends given away by this process and not opened yet, checked at the next `channel`, `open`
/// or `into_handle` of this module.
static GIVEN: GivenEnds<Ticket> = GivenEnds::new();

/// Lets go of the ends given away that someone opened since.
fn sweep() {
    GIVEN.sweep(|g| ends(&g.segment, &g.layout).in_transit_from(g.end, g.tag));
}

/// The ends of each role this process has open, by channel: every value of one role in one
/// process shares an [`End`], and so one entry of the ends table.
static LOCAL: Mutex<Vec<Local>> = Mutex::new(Vec::new());

/// An entry of [`LOCAL`].
struct Local {
    id: ResId,
    role: Role,
    pid: u32,
    end: Weak<End>,
}

/// This process's open end of `role` in channel `id`, if it has one.
fn local_end(id: ResId, role: Role) -> Option<Arc<End>> {
    let me = std::process::id();
    let mut local = LOCAL.lock().unwrap_or_else(PoisonError::into_inner);
    local.retain(|l| l.end.strong_count() > 0 && l.pid == me);
    local
        .iter()
        .find(|l| l.id == id && l.role == role)
        .and_then(|l| l.end.upgrade())
}

/// Records `end` as this process's open end of its role.
fn register(end: &Arc<End>) {
    let mut local = LOCAL.lock().unwrap_or_else(PoisonError::into_inner);
    local.push(Local {
        id: end.segment.id(),
        role: end.role,
        pid: end.pid,
        end: Arc::downgrade(end),
    });
}

/// The words of the channel in `segment`, laid out as `layout`: computed at creation or
/// checked against the header at open, so they are always in bounds and aligned.
#[inline]
fn words<'a>(segment: &'a Segment, layout: &Layout) -> &'a ChannelWords {
    sys::words_at::<ChannelWords, _>(segment.mapping(), layout.words)
        .unwrap_or_else(|| unreachable!("the layout of a mapped channel holds its words"))
}

/// The ends protocol of the channel in `segment`.
#[inline]
fn ends<'a>(segment: &'a Segment, layout: &Layout) -> EndsState<'a> {
    let entries =
        sys::words_slice_at::<AtomicU64, _>(segment.mapping(), layout.table, layout.table_entries)
            .unwrap_or_else(|| unreachable!("the layout of a mapped channel holds its ends"));
    EndsState::attach(words(segment, layout), entries)
}

/// Runs `f` with the ends lock of the channel in `segment` held by `me`.
fn with_ends_lock<R>(
    segment: &Segment,
    layout: &Layout,
    me: u32,
    f: impl FnOnce(EndsState<'_>) -> R,
) -> R {
    let state = ends(segment, layout);
    // The lock word names the process: no other thread of it may hold it meanwhile.
    let _local = segment.local_lock();
    let word = state.lock_word();
    // Under the local lock, a word that names this process is a scribble: taken over.
    let holders = Holders {
        watch: Watch::new(),
        me,
    };
    let mut locking = Locking::new();
    loop {
        let epoch = holders.watch.epoch();
        match locking.step(word, me, &holders) {
            Ok(LockStep::Acquired { .. }) => break,
            Ok(LockStep::Park { expected }) => {
                holders.watch.park(word, expected, epoch, None);
            }
            Err(bad) => {
                // A word no state allows: take it, as the mutex does.
                tracing::warn!(
                    id = segment.id().0,
                    "channel {}: corrupt ends lock ({bad:?}), taken over",
                    segment.id()
                );
                let mut found = word.load(Ordering::Relaxed);
                while let Err(now) =
                    word.compare_exchange(found, me | WAITERS, Ordering::Acquire, Ordering::Relaxed)
                {
                    found = now;
                }
                break;
            }
        }
    }
    let result = f(state);
    if let Ok(wake) = unlock(word, me) {
        let _ = sys::wake(word, wake);
    }
    result
}

/// One end of a channel in this process: every [`Sender`] (or every [`Receiver`]) of one
/// channel in one process shares one, and with it one entry of the ends table.
struct End {
    segment: Arc<Segment>,
    layout: Layout,
    /// Bytes of one slot.
    stride: usize,
    role: Role,
    /// The entry of the ends table.
    index: usize,
    /// The tag the entry is owned with.
    tag: u32,
    /// The Unix pid of the process that owns the entry: a child forked with a copy of the
    /// value neither uses nor closes it.
    pid: u32,
    /// The death board's epoch at which the other side was last found live (`u64::MAX`:
    /// never).
    checked: AtomicU64,
    /// Given away with `into_handle`: the drop closes nothing.
    given: bool,
}

impl End {
    /// A new end over `segment`, owning entry `index` for `role`.
    fn new(segment: Arc<Segment>, layout: Layout, role: Role, index: usize, tag: u32) -> End {
        End {
            stride: channel_slot(layout.element.size)
                .unwrap_or_else(|| unreachable!("the layout has slots")),
            segment,
            layout,
            role,
            index,
            tag,
            pid: std::process::id(),
            checked: AtomicU64::new(u64::MAX),
            given: false,
        }
    }

    /// Opens an end of `role` from a handle of type `S` whose channel carries `T`s.
    fn open<S: 'static, T: 'static>(handle: Handle<S>, role: Role) -> Result<Arc<End>> {
        let how = if handle.fingerprint() == fingerprint::<S>() {
            None
        } else {
            match Ticket::from_bits(handle.fingerprint() ^ fingerprint::<Moved<S>>()) {
                Some(ticket) => Some(ticket),
                None => {
                    return Err(Error::WrongType {
                        expected: format!("a handle of {}", std::any::type_name::<S>()),
                        found: "a handle of another type".to_owned(),
                    });
                }
            }
        };
        let me = own_tag()?;
        let segment = Segment::open(handle.id(), Kind::Channel, fingerprint::<Queue<T>>())?;
        let max_message = usize::try_from(segment.header().sizes().element_size)
            .map_err(|_| segment.corrupt("a message size beyond the address space"))?;
        let layout = Layout::check(segment.header(), channel_element(max_message), segment.id())?;
        if layout.total > segment.mapping().len() {
            return Err(segment.corrupt(format!(
                "the layout needs {} bytes, the mapping has {}",
                layout.total,
                segment.mapping().len()
            )));
        }
        let opened = match how {
            None => Self::open_shared(&segment, layout, role, me),
            Some(ticket) => Self::open_moved(&segment, layout, role, me, ticket),
        };
        // The holds of ends this process gave away and someone opened (this call, say) can go
        // now that the segment is mapped here.
        sweep();
        opened
    }

    /// Opens one more end of `role` (the handle of [`Sender::handle`]).
    fn open_shared(
        segment: &Arc<Segment>,
        layout: Layout,
        role: Role,
        me: u32,
    ) -> Result<Arc<End>> {
        if let Some(end) = local_end(segment.id(), role) {
            return Ok(end);
        }
        let watch = Watch::new();
        let (added, wake) = with_ends_lock(segment, &layout, me, |ends| ends.add(role, me, &watch))
            .map_err(|TableFull| Error::Full)?;
        wake_ends(segment, &layout, wake);
        let Some(index) = added else {
            return Err(Error::Disconnected);
        };
        let end = Arc::new(End::new(segment.clone(), layout, role, index, me));
        register(&end);
        Ok(end)
    }

    /// Opens the moved end `ticket` of `role` (the handle of [`Sender::into_handle`]).
    fn open_moved(
        segment: &Arc<Segment>,
        layout: Layout,
        role: Role,
        me: u32,
        ticket: Ticket,
    ) -> Result<Arc<End>> {
        let watch = Watch::new();
        let taken = with_ends_lock(segment, &layout, me, |ends| {
            let index = ends.take(ticket, role, me, &watch)?;
            // This process has an end of the role already: the moved one joins it, and its
            // entry is let go (the role stays live through the other).
            if let Some(end) = local_end(segment.id(), role) {
                let _ = ends.close(index, role, me, &watch);
                return Ok(Err(end));
            }
            Ok(Ok(index))
        });
        match taken {
            Ok(Ok(index)) => {
                let end = Arc::new(End::new(segment.clone(), layout, role, index, me));
                register(&end);
                Ok(end)
            }
            Ok(Err(end)) => Ok(end),
            Err(Refused::Busy) => Err(Error::Busy),
            Err(Refused::Gone) => Err(Error::Disconnected),
        }
    }

    /// The queue's protocol.
    #[inline]
    fn queue(&self) -> QueueState<'_, MappedSlots<'_>> {
        QueueState::attach(
            words(&self.segment, &self.layout),
            MappedSlots {
                segment: &self.segment,
                layout: &self.layout,
                stride: self.stride,
            },
            self.layout.count,
        )
    }

    /// The ends' protocol.
    #[inline]
    fn ends(&self) -> EndsState<'_> {
        ends(&self.segment, &self.layout)
    }

    /// The largest message.
    #[inline]
    fn max_message(&self) -> usize {
        self.layout.element.size
    }

    /// Where the message bytes of slot `index` start.
    #[inline]
    fn message_at(&self, index: usize) -> usize {
        self.layout.payload + index * self.stride + CHANNEL_SLOT_WORDS
    }

    /// An error unless the calling process owns this end (not a child forked with a copy).
    ///
    /// Every process the master forks gets a tag of its own (one atomic load, where the pid
    /// would be a system call), so a child forked by the master from the owner has another
    /// tag.
    #[inline]
    fn check_process(&self) -> Result<()> {
        if netmcore_master::self_tag().is_ok_and(|tag| tag == self.tag) {
            Ok(())
        } else {
            Err(Error::Busy)
        }
    }

    /// Whether this value belongs to the calling process itself, for what must not happen in
    /// a child forked with a copy by any means (the drop's close, a give).
    fn owned_here(&self) -> bool {
        std::process::id() == self.pid && self.check_process().is_ok()
    }

    /// The [`Error::Corrupt`] of a word no state allows.
    fn corrupt(&self, bad: crate::protocol::BadState) -> Error {
        bad.into_error(self.segment.id())
    }

    /// Whether the other side (`role`) has gone for good: its flag, or, when the death board
    /// moved since the last look, a look at the table (and, if it shows no live end, the
    /// decision under the lock).
    #[inline]
    fn gone(&self, role: Role, epoch: Option<u32>, watch: &Watch) -> bool {
        let ends = self.ends();
        if ends.is_gone(role) {
            return true;
        }
        let seen = epoch.map_or(0, u64::from);
        if self.checked.load(Ordering::Relaxed) == seen {
            return false;
        }
        if !ends.has_live(role, watch) {
            let (live, wake) = with_ends_lock(&self.segment, &self.layout, self.tag, |ends| {
                ends.settle(role, watch)
            });
            wake_ends(&self.segment, &self.layout, wake);
            if !live {
                return true;
            }
        }
        self.checked.store(seen, Ordering::Relaxed);
        false
    }

    /// Sends `value`: blocks while the queue is full (with `wait`, until `deadline` if any),
    /// or fails at once with [`Error::Full`] without `wait`.
    fn send<T: Serialize + 'static>(
        &self,
        value: &T,
        wait: bool,
        deadline: Option<Instant>,
    ) -> Result<()> {
        self.check_process()?;
        let len = netmcore_encap::encoded_len(value)
            .map_err(|e| Error::Master(netmcore_master::Error::Encap(e)))?;
        let max = self.max_message();
        if len > max {
            return Err(Error::TooLarge { size: len, max });
        }
        let queue = self.queue();
        let ends = self.ends();
        let watch = Watch::new();
        let mut spin_until: Option<Instant> = None;
        let mut spins = 0u32;
        loop {
            let ends_seq = ends.seq_word().load(Ordering::SeqCst);
            let epoch = watch.epoch();
            if self.gone(Role::Receiver, epoch, &watch) {
                return Err(Error::Disconnected);
            }
            let announce = wait && spun(&mut spin_until, &mut spins);
            match queue
                .claim(self.tag, announce, &watch, &Futex)
                .map_err(|b| self.corrupt(b))?
            {
                Claim::Claimed(spot) => return self.write(&queue, spot, value, len),
                Claim::Full(_) if !wait => return Err(Error::Full),
                Claim::Full(None) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(Error::Timeout);
                    }
                    // A yield, not a pause: when there are more busy processes than cores,
                    // the peer this side waits for may be waiting for this very core, and a
                    // pause would keep it off for the whole spin. Alone on its core, a yield
                    // returns at once.
                    std::thread::yield_now();
                }
                Claim::Full(Some(park)) => {
                    if !self.park(&queue, park, ends_seq, epoch, &watch, deadline) {
                        return Err(Error::Timeout);
                    }
                }
            }
        }
    }

    /// Writes `value` (`len` bytes encoded) into the claimed slot of `spot` and publishes it.
    #[inline]
    fn write<T: Serialize + 'static>(
        &self,
        queue: &QueueState<'_, MappedSlots<'_>>,
        spot: Spot,
        value: &T,
        len: usize,
    ) -> Result<()> {
        let bytes = sys::slot_bytes_mut(
            self.segment.mapping(),
            self.message_at(spot.index),
            len,
            Writing(()),
        )
        .unwrap_or_else(|| unreachable!("a slot holds max_message bytes"));
        let written = netmcore_encap::encode_to_slice(value, bytes);
        // A `Serialize` impl that encodes differently the second time: the slot is published
        // empty, for receivers to skip.
        let published = match &written {
            Ok(n) => u32::try_from(*n).unwrap_or(VOID),
            Err(_) => VOID,
        };
        queue
            .publish(spot, self.tag, published, &Futex)
            .map_err(|b| self.corrupt(b))?;
        written
            .map(|_| ())
            .map_err(|e| Error::Master(netmcore_master::Error::Encap(e)))
    }

    /// Receives a message: blocks while the queue is empty (with `wait`, until `deadline` if
    /// any), or returns `None` at once without `wait`.
    fn recv<T: DeserializeOwned + 'static>(
        &self,
        wait: bool,
        deadline: Option<Instant>,
    ) -> Result<Option<T>> {
        self.check_process()?;
        let queue = self.queue();
        let ends = self.ends();
        let watch = Watch::new();
        let mut spin_until: Option<Instant> = None;
        let mut spins = 0u32;
        loop {
            let ends_seq = ends.seq_word().load(Ordering::SeqCst);
            let epoch = watch.epoch();
            // Read before the step: a last sender sets it after its last message, so a step
            // that comes after it and finds the queue empty finds it empty for good.
            let senders_gone = ends.is_gone(Role::Sender);
            let announce = wait && spun(&mut spin_until, &mut spins);
            let park = match queue
                .take(self.tag, announce, &watch, &Futex)
                .map_err(|b| self.corrupt(b))?
            {
                Take::Taken { spot, len } => match self.read(&queue, spot, len)? {
                    Some(value) => return Ok(Some(value)),
                    None => continue,
                },
                Take::Empty(park) => {
                    if senders_gone {
                        return Err(Error::Disconnected);
                    }
                    if self.gone(Role::Sender, epoch, &watch) {
                        // Look at the queue once more, after the flag.
                        continue;
                    }
                    park
                }
                Take::InFlight(park) => park,
            };
            if !wait {
                return Ok(None);
            }
            match park {
                None => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(Error::Timeout);
                    }
                    // A yield, not a pause: when there are more busy processes than cores,
                    // the peer this side waits for may be waiting for this very core, and a
                    // pause would keep it off for the whole spin. Alone on its core, a yield
                    // returns at once.
                    std::thread::yield_now();
                }
                Some(park) => {
                    if !self.park(&queue, park, ends_seq, epoch, &watch, deadline) {
                        return Err(Error::Timeout);
                    }
                }
            }
        }
    }

    /// Decodes the message of `len` bytes in the taken slot of `spot`, and releases the slot:
    /// `None` for a slot its sender left empty.
    #[inline]
    fn read<T: DeserializeOwned + 'static>(
        &self,
        queue: &QueueState<'_, MappedSlots<'_>>,
        spot: Spot,
        len: u32,
    ) -> Result<Option<T>> {
        let (pos, index) = (spot.pos, spot.index);
        let decoded = if len == VOID {
            Ok(None)
        } else {
            match usize::try_from(len)
                .ok()
                .filter(|&n| n <= self.max_message())
            {
                None => Err(self.segment.corrupt(format!(
                    "message {pos} of {len} bytes, beyond the {} of a slot",
                    self.max_message()
                ))),
                Some(n) => {
                    let bytes = sys::slot_bytes(
                        self.segment.mapping(),
                        self.message_at(index),
                        n,
                        Reading(()),
                    )
                    .unwrap_or_else(|| unreachable!("a slot holds max_message bytes"));
                    netmcore_encap::decode_exact::<T>(bytes)
                        .map(Some)
                        .map_err(|e| self.segment.corrupt(format!("message {pos}: {e}")))
                }
            }
        };
        queue
            .release(spot, self.tag, &Futex)
            .map_err(|b| self.corrupt(b))?;
        decoded
    }

    /// Sleeps on the slot of `park`, the ends' sequence and the death board, until `deadline`
    /// at the latest; `false` when the deadline passed.
    fn park(
        &self,
        queue: &QueueState<'_, MappedSlots<'_>>,
        park: Park,
        ends_seq: u32,
        epoch: Option<u32>,
        watch: &Watch,
        deadline: Option<Instant>,
    ) -> bool {
        let slot = queue.slot(park.index);
        watch.park_on(
            &[
                (&slot.seq, park.expected),
                (self.ends().seq_word(), ends_seq),
            ],
            epoch,
            deadline,
        )
    }

    /// Gives this end away (the last value of it in this process: its entry goes into
    /// transit) and returns its ticket, or `None` when it cannot be (a forked child's copy,
    /// a corrupt entry).
    fn give_own(mut self) -> Option<Ticket> {
        self.given = true;
        if !self.owned_here() {
            return None;
        }
        let ticket = with_ends_lock(&self.segment, &self.layout, self.tag, |ends| {
            ends.give(Some(self.index), self.role, self.tag)
        })
        .ok()?;
        self.hold(ticket);
        Some(ticket)
    }

    /// Gives one more end of this process's role away (the process keeps others): a new entry
    /// in transit.
    fn give_another(&self) -> Option<Ticket> {
        if !self.owned_here() {
            return None;
        }
        match with_ends_lock(&self.segment, &self.layout, self.tag, |ends| {
            ends.give(None, self.role, self.tag)
        }) {
            Ok(ticket) => {
                self.hold(ticket);
                Some(ticket)
            }
            Err(TableFull) => {
                tracing::warn!(
                    id = self.segment.id().0,
                    "channel {}: the ends table is full; the end moves as a shared handle",
                    self.segment.id()
                );
                None
            }
        }
    }

    /// Keeps the segment mapped (and this process its user) until the moved end is opened.
    fn hold(&self, ticket: Ticket) {
        GIVEN.hold(Given {
            segment: self.segment.clone(),
            layout: self.layout,
            end: ticket,
            tag: self.tag,
            pid: self.pid,
        });
    }
}

impl Drop for End {
    fn drop(&mut self) {
        if self.given || !self.owned_here() {
            return;
        }
        let watch = Watch::new();
        let wake = with_ends_lock(&self.segment, &self.layout, self.tag, |ends| {
            ends.close(self.index, self.role, self.tag, &watch)
        });
        wake_ends(&self.segment, &self.layout, wake);
    }
}

/// Wakes every sleeper on the ends' sequence of the channel in `segment` if `wake` says so.
fn wake_ends(segment: &Segment, layout: &Layout, wake: Wake) {
    let _ = sys::wake(ends(segment, layout).seq_word(), wake);
}

/// Whether a waiting side has spun long enough to sleep. The clock starts after the first
/// few turns (most waits end sooner, and reading it costs more than a look at the queue), and
/// is read once every 32 turns, after a `sched_yield`: on a busy machine the other side may
/// be waiting for this very CPU, and a spin that does not give it up only delays the message
/// it waits for (measured: about three times the messages per second between two processes).
#[inline]
fn spun(until: &mut Option<Instant>, spins: &mut u32) -> bool {
    *spins = spins.wrapping_add(1);
    if *spins < 64 || !spins.is_multiple_of(32) {
        return false;
    }
    std::thread::yield_now();
    let now = Instant::now();
    match until {
        None => {
            *until = Some(now + SPIN);
            false
        }
        Some(until) => now >= *until,
    }
}

/// Moves `end` into a handle of type `S`: the end's own entry goes into transit when this is
/// the process's last value of it, a new entry otherwise.
fn into_handle<S: 'static>(end: Arc<End>) -> Handle<S> {
    sweep();
    let id = end.segment.id();
    let ticket = match Arc::try_unwrap(end) {
        Ok(end) => end.give_own(),
        Err(shared) => shared.give_another(),
    };
    match ticket {
        Some(ticket) => Handle::from_parts(id, fingerprint::<Moved<S>>() ^ ticket.to_bits()),
        None => Handle::new(id),
    }
}

/// Creates a channel of `capacity` slots (0 acts as 1) for messages of type `T` whose
/// encoding is at most `max_message` bytes, in a segment of its own: the counterpart of
/// OCamlnet's camlboxes and of Python's `multiprocessing.Queue`.
///
/// ```
/// # fn main() -> netmcore_shared::Result<()> {
/// let (tx, rx) = netmcore_shared::channel::<(u32, String)>(16, 64)?;
/// // Another process would open the ends from their handles: `Receiver::open(rx.into_handle())`.
/// let producer = std::thread::spawn(move || {
///     for i in 0..100 {
///         tx.send(&(i, format!("message {i}")))?;
///     }
///     Ok::<_, netmcore_shared::Error>(())
///     // The last sender is dropped here: the receiver sees the end after the messages.
/// });
/// let total: u32 = rx.iter().map(|(i, _)| i).sum();
/// producer.join().expect("producer")?;
/// assert_eq!(total, 4950);
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`Error::Master`] when no master can create the segment (a worker whose master is gone or
/// beyond the tags, a ledger or `shm_open` failure); [`Error::TooLarge`] for sizes that do not
/// fit the address space, or a `max_message` of `u32::MAX` bytes or more.
pub fn channel<T: Serialize + DeserializeOwned + 'static>(
    capacity: usize,
    max_message: usize,
) -> Result<(Sender<T>, Receiver<T>)> {
    sweep();
    let capacity = capacity.max(1);
    let layout = Layout::channel(capacity, max_message).ok_or(Error::TooLarge {
        size: max_message,
        max: (u32::MAX - 1) as usize,
    })?;
    let me = own_tag()?;
    // Zeroes are an empty queue and a free table; the ends are written below, before anyone
    // else can know the segment's id.
    let segment = Segment::create(
        Kind::Channel,
        fingerprint::<Queue<T>>(),
        layout.sizes(),
        |_| Ok(()),
    )?;
    ends(&segment, &layout).init(me);
    let sender = Arc::new(End::new(segment.clone(), layout, Role::Sender, 0, me));
    let receiver = Arc::new(End::new(segment, layout, Role::Receiver, 1, me));
    register(&sender);
    register(&receiver);
    Ok((
        Sender {
            end: sender,
            _type: PhantomData,
        },
        Receiver {
            end: receiver,
            _type: PhantomData,
        },
    ))
}

/// The sending side of a [`channel`]. `Clone` makes one more sender.
///
/// [`Sender::send`] blocks while the channel is full and fails with [`Error::Disconnected`]
/// once no receiver is left (all dropped, or their processes dead — a sender blocked on a full
/// channel learns of their death within moments).
///
/// **Ends.** The channel counts its senders by process: every value of it in one process
/// (clones, opens of a handle) counts once, until the last one is dropped or the process
/// ends. [`Sender::handle`] names the channel's senders: [`Sender::open`] with it adds a
/// sender in the opening process while any sender is still open. [`Sender::into_handle`] moves
/// this sender: it keeps counting (and this process keeps the channel) until exactly one
/// process opens it — a second open is [`Error::Busy`] — or this process ends. So a process
/// that hands its sender to a worker it starts never lets the receivers see a moment without
/// senders.
///
/// A copy of the value in a child forked from the owning process (a global, say) is inert
/// there: its calls fail with [`Error::Busy`]; pass a handle instead.
pub struct Sender<T> {
    end: Arc<End>,
    _type: PhantomData<fn(T) -> T>,
}

/// The receiving side of a [`channel`]. `Clone` makes one more receiver; receivers share the
/// messages (each message goes to one of them).
///
/// [`Receiver::recv`] blocks while the channel is empty, and fails with
/// [`Error::Disconnected`] once it is empty and no sender is left (all dropped, or their
/// processes dead, or a moved sender whose giver ended before anyone opened it).
///
/// **Death.** A message whose sender died while writing it is never delivered; a message
/// whose receiver died while reading it is lost with that process, as if it had died just
/// after its `recv`. A slot left by a dead process is freed by the next process that needs
/// it, so the channel never wedges.
///
/// **Ends.** As [`Sender`]: counted by process, [`Receiver::handle`] adds a receiver,
/// [`Receiver::into_handle`] moves this one.
pub struct Receiver<T> {
    end: Arc<End>,
    _type: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Sender<T> {
        Sender {
            end: self.end.clone(),
            _type: PhantomData,
        }
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Receiver<T> {
        Receiver {
            end: self.end.clone(),
            _type: PhantomData,
        }
    }
}

impl<T: Serialize + DeserializeOwned + 'static> Sender<T> {
    /// Sends `value`, blocking while the channel is full.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] when no receiver is left; [`Error::TooLarge`] when the encoding
    /// of `value` exceeds the channel's `max_message` (nothing is sent);
    /// [`Error::Master`] with [`netmcore_master::Error::Encap`] when `T`'s `Serialize` impl
    /// fails; [`Error::Corrupt`] for a segment whose words no state allows; [`Error::Busy`]
    /// in a forked child's copy.
    pub fn send(&self, value: &T) -> Result<()> {
        self.end.send(value, true, None)
    }

    /// Sends `value` if there is room now.
    ///
    /// # Errors
    ///
    /// [`Error::Full`] when the channel is full; otherwise as [`Sender::send`].
    pub fn try_send(&self, value: &T) -> Result<()> {
        self.end.send(value, false, None)
    }

    /// Sends `value`, blocking while the channel is full for `timeout` at most.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when the channel stayed full; otherwise as [`Sender::send`].
    pub fn send_timeout(&self, value: &T, timeout: Duration) -> Result<()> {
        self.end.send(value, true, Some(Instant::now() + timeout))
    }

    /// The handle of the channel's senders: [`Sender::open`] with it adds a sender in the
    /// opening process, while any sender is still open.
    #[must_use]
    pub fn handle(&self) -> Handle<Sender<T>> {
        Handle::new(self.end.segment.id())
    }

    /// Moves this sender into a handle, to be opened by exactly one process with
    /// [`Sender::open`] (the handle travels in a process argument or a message). Until then
    /// the sender still counts, and this process keeps the channel, unless it ends first.
    #[must_use = "the sender can only be opened from its handle"]
    pub fn into_handle(self) -> Handle<Sender<T>> {
        into_handle(self.end)
    }

    /// Opens a sender from `handle`: a moved sender ([`Sender::into_handle`]), or one more
    /// sender ([`Sender::handle`]).
    ///
    /// # Errors
    ///
    /// [`Error::Busy`] for a moved sender opened already; [`Error::Disconnected`] for a moved
    /// sender whose giver ended before anyone opened it, or a channel whose senders are all
    /// gone; [`Error::WrongType`] for a handle of another structure or message type;
    /// [`Error::Full`] when the channel's table of ends is full; [`Error::Corrupt`] for a
    /// segment whose header does not hold; [`Error::Master`] for an unknown id (`NoResource`:
    /// the channel is gone) or no master.
    pub fn open(handle: Handle<Sender<T>>) -> Result<Sender<T>> {
        Ok(Sender {
            end: End::open::<Sender<T>, T>(handle, Role::Sender)?,
            _type: PhantomData,
        })
    }
}

impl<T: Serialize + DeserializeOwned + 'static> Receiver<T> {
    /// Receives a message, blocking while the channel is empty.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] once the channel is empty and no sender is left;
    /// [`Error::Corrupt`] for a message that does not decode as a `T` or a segment whose words
    /// no state allows; [`Error::Busy`] in a forked child's copy.
    pub fn recv(&self) -> Result<T> {
        self.end
            .recv(true, None)?
            .ok_or_else(|| unreachable!("a blocking receive returns a message or an error"))
    }

    /// Receives a message if one is there: `Ok(None)` when the channel is empty (or its next
    /// message is still being written) and some sender is left.
    ///
    /// # Errors
    ///
    /// As [`Receiver::recv`].
    pub fn try_recv(&self) -> Result<Option<T>> {
        self.end.recv(false, None)
    }

    /// Receives a message, blocking while the channel is empty for `timeout` at most.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when the channel stayed empty; otherwise as [`Receiver::recv`].
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T> {
        self.end
            .recv(true, Some(Instant::now() + timeout))?
            .ok_or_else(|| unreachable!("a blocking receive returns a message or an error"))
    }

    /// The messages, as they come, until the channel is disconnected (or a receive fails).
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        std::iter::from_fn(move || self.recv().ok())
    }

    /// The handle of the channel's receivers: [`Receiver::open`] with it adds a receiver in
    /// the opening process, while any receiver is still open.
    #[must_use]
    pub fn handle(&self) -> Handle<Receiver<T>> {
        Handle::new(self.end.segment.id())
    }

    /// Moves this receiver into a handle, as [`Sender::into_handle`].
    #[must_use = "the receiver can only be opened from its handle"]
    pub fn into_handle(self) -> Handle<Receiver<T>> {
        into_handle(self.end)
    }

    /// Opens a receiver from `handle`, as [`Sender::open`].
    ///
    /// # Errors
    ///
    /// As [`Sender::open`].
    pub fn open(handle: Handle<Receiver<T>>) -> Result<Receiver<T>> {
        Ok(Receiver {
            end: End::open::<Receiver<T>, T>(handle, Role::Receiver)?,
            _type: PhantomData,
        })
    }
}

impl fmt::Debug for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("End")
            .field("id", &self.segment.id())
            .field("role", &self.role)
            .field("capacity", &self.layout.count)
            .field("max_message", &self.max_message())
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").field("end", &self.end).finish()
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").field("end", &self.end).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::testing::scribble;

    /// An ends lock word that names this process (a scribble: no other thread of it can hold
    /// the lock while one goes for it) is taken over, not waited for: moving, cloning and
    /// dropping ends goes on.
    #[test]
    fn an_ends_lock_naming_this_process_is_taken_over() {
        let (tx, rx) = channel::<u32>(2, 8).expect("a channel before startup");
        let lock = ends(&tx.end.segment, &tx.end.layout).lock_word();
        lock.store(tx.end.tag, Ordering::SeqCst);
        let moved = tx.clone().into_handle();
        let again = Sender::open(moved).expect("the moved end opens");
        again.send(&7).expect("room");
        assert_eq!(rx.recv().expect("a message"), 7);
        lock.store(tx.end.tag | WAITERS, Ordering::SeqCst);
        drop(again);
        drop(tx);
        assert!(matches!(rx.recv(), Err(Error::Disconnected)));
    }

    #[test]
    fn messages_pass_between_threads_exactly_once() {
        const SENDERS: u64 = 3;
        const EACH: u64 = 2000;
        let (tx, rx) = channel::<(u64, String)>(4, 64).expect("a channel before startup");
        let senders: Vec<_> = (0..SENDERS)
            .map(|s| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for i in 0..EACH {
                        tx.send(&(s * EACH + i, format!("{s}:{i}")))
                            .expect("receivers live");
                    }
                })
            })
            .collect();
        drop(tx);
        let receivers: Vec<_> = (0..2)
            .map(|_| {
                let rx = rx.clone();
                std::thread::spawn(move || rx.iter().collect::<Vec<_>>())
            })
            .collect();
        let mut seen = BTreeMap::new();
        for r in receivers {
            for (n, text) in r.join().expect("receiver") {
                assert_eq!(text, format!("{}:{}", n / EACH, n % EACH));
                *seen.entry(n).or_insert(0) += 1;
            }
        }
        for s in senders {
            s.join().expect("sender");
        }
        assert_eq!(seen.len() as u64, SENDERS * EACH);
        assert!(seen.values().all(|&n| n == 1));
        assert!(matches!(rx.try_recv(), Err(Error::Disconnected)));
        assert!(matches!(rx.recv(), Err(Error::Disconnected)));
    }

    #[test]
    fn big_byte_messages_keep_their_bytes() {
        let (tx, rx) = channel::<Vec<u8>>(3, 4100).expect("a channel");
        let producer = std::thread::spawn(move || {
            for i in 0..200u32 {
                let message: Vec<u8> = (0..4096).map(|j| (i as usize * 7 + j) as u8).collect();
                tx.send(&message).expect("the receiver lives");
            }
        });
        for i in 0..200u32 {
            let message = rx.recv().expect("a message");
            assert_eq!(message.len(), 4096);
            assert!(
                message
                    .iter()
                    .enumerate()
                    .all(|(j, &b)| b == (i as usize * 7 + j) as u8)
            );
        }
        producer.join().expect("producer");
        assert!(matches!(rx.recv(), Err(Error::Disconnected)));
    }

    #[test]
    fn full_empty_too_large_and_timeouts() {
        let (tx, rx) = channel::<String>(2, 8).expect("a channel");
        assert!(matches!(rx.try_recv(), Ok(None)));
        assert!(matches!(
            rx.recv_timeout(Duration::from_millis(5)),
            Err(Error::Timeout)
        ));
        tx.try_send(&"a".to_owned()).expect("room");
        tx.send(&"b".to_owned()).expect("room");
        assert!(matches!(tx.try_send(&"c".to_owned()), Err(Error::Full)));
        assert!(matches!(
            tx.send_timeout(&"c".to_owned(), Duration::from_millis(5)),
            Err(Error::Timeout)
        ));
        // Eight bytes: a length byte and seven.
        assert!(matches!(
            tx.send(&"12345678".to_owned()),
            Err(Error::TooLarge { size: 9, max: 8 })
        ));
        assert_eq!(rx.recv().expect("a"), "a");
        tx.send(&"1234567".to_owned()).expect("fits exactly");
        assert_eq!(rx.try_recv().expect("b"), Some("b".to_owned()));
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)).expect("c"),
            "1234567"
        );
        assert!(channel::<u8>(1, u32::MAX as usize).is_err());
        let (one, _rx) = channel::<u8>(0, 0).expect("capacity 0 acts as 1");
        assert!(matches!(
            one.send(&7),
            Err(Error::TooLarge { size: 1, max: 0 })
        ));
        let (unit, unit_rx) = channel::<()>(0, 0).expect("a channel of units");
        unit.send(&()).expect("room");
        assert!(matches!(unit.try_send(&()), Err(Error::Full)));
        unit_rx.recv().expect("a unit");
    }

    #[test]
    fn a_blocked_sender_learns_that_the_receivers_are_gone() {
        let (tx, rx) = channel::<u64>(1, 16).expect("a channel");
        tx.send(&1).expect("room");
        let rx2 = rx.clone();
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            drop(rx);
            drop(rx2);
        });
        assert!(matches!(tx.send(&2), Err(Error::Disconnected)));
        closer.join().expect("closer");
        assert!(matches!(tx.try_send(&3), Err(Error::Disconnected)));
        // And a receiver opened from a handle after that is refused.
        assert!(matches!(
            Receiver::<u64>::open(Handle::new(tx.end.segment.id())),
            Err(Error::Disconnected)
        ));
    }

    #[test]
    fn a_waiting_receiver_learns_that_the_senders_are_gone() {
        let (tx, rx) = channel::<u64>(4, 16).expect("a channel");
        let late = tx.clone();
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            late.send(&9).expect("the receiver lives");
            drop(late);
        });
        drop(tx);
        assert_eq!(rx.recv().expect("the last message first"), 9);
        assert!(matches!(rx.recv(), Err(Error::Disconnected)));
        closer.join().expect("closer");
        // Sticky: no sender can be added once the receivers saw them all gone.
        assert!(matches!(
            Sender::<u64>::open(Handle::new(rx.end.segment.id())),
            Err(Error::Disconnected)
        ));
    }

    #[test]
    fn a_moved_end_opens_exactly_once_and_counts_until_then() {
        let (tx, rx) = channel::<u32>(4, 8).expect("a channel");
        let handle = tx.into_handle();
        // The only sender is in transit: the channel is not disconnected.
        assert!(matches!(rx.try_recv(), Ok(None)));
        let tx = Sender::open(handle).expect("the first open");
        assert!(matches!(Sender::open(handle), Err(Error::Busy)));
        tx.send(&5).expect("the receiver lives");
        // A clone moves: a new entry, the others stay.
        let moved = tx.clone().into_handle();
        drop(tx);
        assert_eq!(rx.recv().expect("5"), 5);
        assert!(matches!(rx.try_recv(), Ok(None)), "the moved sender counts");
        let tx = Sender::open(moved).expect("opens");
        assert!(matches!(Sender::open(moved), Err(Error::Busy)));
        // A shared handle adds a sender while one is open.
        let more = Sender::open(tx.handle()).expect("one more");
        drop(tx);
        more.send(&6).expect("the receiver lives");
        drop(more);
        assert_eq!(rx.recv().expect("6"), 6);
        assert!(matches!(rx.recv(), Err(Error::Disconnected)));
        // Receivers move the same way.
        let (tx, rx) = channel::<u32>(4, 8).expect("a channel");
        let handle = rx.into_handle();
        tx.send(&1).expect("a receiver in transit counts");
        let rx = Receiver::open(handle).expect("opens");
        assert!(matches!(Receiver::open(handle), Err(Error::Busy)));
        assert_eq!(rx.recv().expect("1"), 1);
    }

    #[test]
    fn handles_of_other_types_are_refused() {
        let (tx, rx) = channel::<u32>(4, 8).expect("a channel");
        let id = tx.end.segment.id();
        // Another message type: the segment's fingerprint differs.
        assert!(matches!(
            Sender::<u64>::open(Handle::new(id)),
            Err(Error::WrongType { .. })
        ));
        // A receiver's handle forged as a sender's.
        let forged = Handle::<Sender<u32>>::from_parts(id, fingerprint::<Receiver<u32>>());
        assert!(matches!(Sender::open(forged), Err(Error::WrongType { .. })));
        // A moved handle of one role opened as the other.
        let moved = rx.into_handle();
        let forged = Handle::<Sender<u32>>::from_parts(id, moved.fingerprint());
        assert!(matches!(Sender::open(forged), Err(Error::WrongType { .. })));
        // Another structure.
        let mutex = crate::Mutex::new(0u32).expect("a mutex");
        assert!(matches!(
            Sender::<u32>::open(Handle::new(mutex.handle().id())),
            Err(Error::WrongType { .. })
        ));
        drop(Receiver::open(moved).expect("opens"));
    }

    proptest! {
        /// Random bytes written anywhere over a channel's segment — header, counters, flags,
        /// ends, slots — give an error when the segment is checked again, or a channel that
        /// still works; and the ends already open keep working without a panic: their calls
        /// return values or errors.
        #[test]
        fn scribbled_channel_segments_give_errors_never_panics(
            (offset, bytes) in scribble::scribbles(&[0..128, 128..320, 320..1344, 1344..1600, 0..1600]),
        ) {
            let (tx, rx) = channel::<(u32, String)>(4, 48).expect("a channel before startup");
            tx.send(&(1, "one".to_owned())).expect("room");
            tx.send(&(2, "two".to_owned())).expect("room");
            let id = tx.end.segment.id();
            let name = scribble::write(id, offset, &bytes);
            let checked = scribble::recheck(
                id,
                &name,
                Kind::Channel,
                fingerprint::<Queue<(u32, String)>>(),
                channel_element(48),
            );
            prop_assert!(checked.is_ok(), "{checked:?}");
            for i in 0..3 {
                match tx.try_send(&(i, "x".repeat(i as usize))) {
                    Ok(()) | Err(Error::Full | Error::Disconnected | Error::Corrupt { .. }) => {}
                    Err(e) => prop_assert!(false, "unexpected {e:?}"),
                }
                match rx.try_recv() {
                    Ok(_) | Err(Error::Disconnected | Error::Corrupt { .. }) => {}
                    Err(e) => prop_assert!(false, "unexpected {e:?}"),
                }
                match rx.recv_timeout(Duration::from_millis(1)) {
                    Ok(_) | Err(Error::Disconnected | Error::Corrupt { .. } | Error::Timeout) => {}
                    Err(e) => prop_assert!(false, "unexpected {e:?}"),
                }
            }
            let moved = tx.clone().into_handle();
            let _ = Sender::open(moved);
            let _ = Sender::open(tx.handle());
        }
    }
}
