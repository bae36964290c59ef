//! The OS layer of the structures: `futex` wait, wake and `futex_waitv` on words of shared
//! memory, and typed views of a mapping at checked offsets.
//!
//! # Safety
//!
//! The futex calls hold no `unsafe` code: rustix's wrappers are safe functions, which take a
//! word as `&AtomicU32` (valid, aligned and alive during the call) or, for `futex_waitv`, as
//! an address the kernel only reads through (a bad one is `EFAULT`, never undefined
//! behaviour); the addresses given here come from `&AtomicU32`s that outlive the call. None of
//! them passes `FUTEX_PRIVATE_FLAG` / `FUTEX2_PRIVATE`: the kernel then keys a waiter by the
//! page behind the address (the shared memory object and offset), so a wake in one process
//! reaches a waiter in another process that maps the same word at another address.
//!
//! The views borrow memory that stays mapped while it is borrowed ([`Mapped`]): an owned
//! [`Mapping`] of netmcore-ipc, which unmaps only when dropped (and no borrow outlives it), or a
//! [`SharedMemory`], mapped for the life of the process. On top of that:
//!
//! * [`words_at`] and [`words_slice_at`] hand out `&T` for `T: SharedWords` only. An
//!   implementor of that `unsafe` trait is a `#[repr(C)]` struct of std atomic integers with
//!   no padding (checked by a size assertion beside each impl): every bit pattern is a valid
//!   value, every byte lies inside an `UnsafeCell`, so a shared reference stays sound while
//!   other threads and processes change the words, atomically, at the same time. A view is
//!   only made in bounds (overflow-checked) and at an address aligned for `T`.
//! * [`plain_slice_at`] and [`plain_slice_mut_at`] are `unsafe fn`s: their callers promise
//!   that no one writes the bytes meanwhile (a frozen vector, an archive) or that no one else
//!   accesses them at all (a held lock, a live claim), in this process and in every other
//!   process that maps the segment. The bytes are then turned into `[T]` by zerocopy, which
//!   checks size and alignment, and `T: Plain` makes every bit pattern a valid `T`.
//! * The safe [`locked_value`], [`claimed_slice`] and [`frozen_slice`] call them with the
//!   promise kept by a *proof*: a value of a type whose only constructor is private to the
//!   module of the protocol that makes the promise true (`mutex::Held` after taking the
//!   lock, `vec::Claimed` after the claims table recorded the claim, `vec::Frozen` after the
//!   frozen flag was read), consumed by the view so that one acquisition gives one reference.
//! * [`written_bytes`] views the bytes of an archive, which are written once, before the
//!   segment is published, and never again (the promise of `archive::Written`); and
//!   [`archived_root`] is the only place that reads an archive without checking it, with the
//!   proof `archive::Validated` that its bytes were checked by bytecheck when it was opened
//!   (or made by rkyv's serializer in this process) and have not changed since.
//! * [`fresh_bytes`] writes a segment nobody else knows yet, through `&mut Mapping`.
#![cfg_attr(
    netmcore_loom,
    allow(
        dead_code,
        reason = "under loom only the state machines' models are built, not the OS layer"
    )
)]

use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::Duration;

use netmcore_ipc::shm::{Mapping, SharedMemory};
use rustix::io::Errno;
use rustix::thread::futex;
use rustix::time::{ClockId, Timespec};
use zerocopy::FromBytes;

use crate::Plain;
use crate::protocol::Wake;

/// The most words one [`futex_waitv`] can wait on (the kernel's `FUTEX_WAITV_MAX`).
pub(crate) const WAITV_MAX: usize = 128;

/// How a futex wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woke {
    /// Woken by a wake on a word, or a word no longer held its expected value (`EAGAIN`), or
    /// a signal interrupted the wait (`EINTR`), or the kernel woke it spuriously: the caller
    /// reloads its words and decides again.
    Early,
    /// The timeout elapsed (`ETIMEDOUT`).
    TimedOut,
}

/// A relative timeout as a `Timespec`.
fn timespec(timeout: Duration) -> Timespec {
    Timespec {
        tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(timeout.subsec_nanos()),
    }
}

/// The result of a futex wait, with the errors that only mean "decide again" folded in.
fn woke<T>(result: rustix::io::Result<T>) -> io::Result<Woke> {
    match result {
        Ok(_) | Err(Errno::AGAIN | Errno::INTR) => Ok(Woke::Early),
        Err(Errno::TIMEDOUT) => Ok(Woke::TimedOut),
        Err(e) => Err(e.into()),
    }
}

/// `futex(word, FUTEX_WAIT, expected, timeout)`: sleeps while `*word == expected`, until a
/// wake on the same word (from any process), a signal, or the relative `timeout` (on
/// `CLOCK_MONOTONIC`; `None` waits without limit).
///
/// The comparison and the going to sleep are atomic with respect to wakes, which is what
/// makes the state machines' `Park { expected }` free of lost wakeups. Without
/// `FUTEX_PRIVATE_FLAG`, so it works across processes.
///
/// # Errors
///
/// The OS error of `futex` other than `EAGAIN`, `EINTR` and `ETIMEDOUT`.
#[doc(alias = "futex")]
#[doc(alias = "FUTEX_WAIT")]
pub(crate) fn futex_wait(
    word: &AtomicU32,
    expected: u32,
    timeout: Option<Duration>,
) -> io::Result<Woke> {
    let timeout = timeout.map(timespec);
    woke(futex::wait(
        word,
        futex::Flags::empty(),
        expected,
        timeout.as_ref(),
    ))
}

/// `futex(word, FUTEX_WAKE, n)`: wakes up to `n` sleepers on `word`, in any process; returns
/// how many were woken. `n` above `i32::MAX` counts as `i32::MAX` (the kernel reads it as an
/// `int`, and a negative count would wake a single sleeper).
///
/// # Errors
///
/// The OS error of `futex` (none is expected for a valid word).
#[doc(alias = "futex")]
#[doc(alias = "FUTEX_WAKE")]
pub(crate) fn futex_wake(word: &AtomicU32, n: u32) -> io::Result<usize> {
    let n = n.min(i32::MAX.unsigned_abs());
    futex::wake(word, futex::Flags::empty(), n).map_err(Into::into)
}

/// Performs what a step of a state machine asked for on `word`: nothing, one wake or a wake
/// of every sleeper.
///
/// # Errors
///
/// As [`futex_wake`].
pub(crate) fn wake(word: &AtomicU32, wake: Wake) -> io::Result<usize> {
    match wake {
        Wake::None => Ok(0),
        Wake::One => futex_wake(word, 1),
        Wake::All => futex_wake(word, u32::MAX),
    }
}

/// `futex_waitv(words, flags = 0, timeout, CLOCK_MONOTONIC)` (Linux 5.16): sleeps while every
/// word holds its expected value, until a [`futex_wake`] on any of them (from any process), a
/// signal, or the relative `timeout` (`None` waits without limit).
///
/// This is how a structure's wait also watches the master's death board: its own word and the
/// board's epoch, so that a death wakes it at once. Each word is a 32-bit futex without
/// `FUTEX2_PRIVATE`, so the wait works across processes.
///
/// # Errors
///
/// `EINVAL` for no word or more than [`WAITV_MAX`] words; the OS error of `futex_waitv`
/// other than `EAGAIN`, `EINTR` and `ETIMEDOUT` (e.g. `ENOSYS` before Linux 5.16).
pub(crate) fn futex_waitv(
    words: &[(&AtomicU32, u32)],
    timeout: Option<Duration>,
) -> io::Result<Woke> {
    if words.is_empty() || words.len() > WAITV_MAX {
        return Err(Errno::INVAL.into());
    }
    let waiters: Vec<futex::Wait> = words
        .iter()
        .map(|&(word, expected)| {
            let mut wait = futex::Wait::new();
            wait.val = u64::from(expected);
            wait.uaddr = futex::WaitPtr::new(word.as_ptr().cast());
            wait.flags = futex::WaitFlags::SIZE_U32;
            wait
        })
        .collect();
    // futex_waitv takes an absolute deadline on the clock it is given.
    let deadline = timeout.map(|t| {
        let now = rustix::time::clock_gettime(ClockId::Monotonic);
        let nanos = now.tv_nsec + i64::from(t.subsec_nanos());
        let secs = i64::try_from(t.as_secs()).unwrap_or(i64::MAX);
        Timespec {
            tv_sec: now
                .tv_sec
                .saturating_add(secs)
                .saturating_add(nanos / 1_000_000_000),
            tv_nsec: nanos % 1_000_000_000,
        }
    });
    woke(futex::waitv(
        &waiters,
        futex::WaitvFlags::empty(),
        deadline.as_ref(),
        ClockId::Monotonic,
    ))
}

/// Types that may be viewed in shared memory by [`words_at`] and [`words_slice_at`].
///
/// # Safety
///
/// Implementors are `#[repr(C)]` structs made only of std atomic integers, with no padding:
/// every bit pattern is a valid value and every byte lies inside an `UnsafeCell`.
pub(crate) unsafe trait SharedWords: Sized + Sync {}

// SAFETY: an atomic integer is its own single `UnsafeCell`; every bit pattern is valid.
unsafe impl SharedWords for AtomicU32 {}
// SAFETY: as above.
unsafe impl SharedWords for AtomicU64 {}

/// The impls for the words of the state machines: in a normal build, `crate::sync::atomic`
/// is `std::sync::atomic`. (Under loom those structs hold loom atomics and are never viewed
/// in shared memory.)
#[cfg(not(netmcore_loom))]
mod words {
    use super::SharedWords;
    use crate::barrier::state::BarrierWords;
    use crate::channel::state::{ChannelWords, SlotWords};
    use crate::claims::state::{ClaimSlot, ClaimsWords};
    use crate::condvar::state::CondvarWords;
    use crate::map::state::MapWords;
    use crate::mutex::state::MutexWords;
    use crate::pipe::state::PipeWords;

    use crate::segment::{
        BARRIER_WORDS, CHANNEL_SLOT_WORDS, CHANNEL_WORDS, CLAIM_SLOT, CLAIMS_WORDS, CONDVAR_WORDS,
        MAP_WORDS, MUTEX_WORDS, PIPE_WORDS,
    };

    // No padding: each size is the sum of the sizes of the fields. The segment layouts use
    // the same sizes.
    const _: () = assert!(size_of::<MutexWords>() == 8 && MUTEX_WORDS == 8);
    const _: () = assert!(size_of::<CondvarWords>() == 4 && CONDVAR_WORDS == 4);
    const _: () = assert!(size_of::<BarrierWords>() == 8 && BARRIER_WORDS == 8);
    const _: () = assert!(size_of::<ClaimsWords>() == 8 && CLAIMS_WORDS == 8);
    const _: () = assert!(size_of::<ClaimSlot>() == 24 && CLAIM_SLOT == 24);
    const _: () = assert!(align_of::<ClaimSlot>() == 8);
    const _: () = assert!(size_of::<MapWords>() == 128 && MAP_WORDS == 128);
    const _: () = assert!(align_of::<MapWords>() == 64);
    const _: () = assert!(size_of::<PipeWords>() == 192 && PIPE_WORDS == 192);
    const _: () = assert!(align_of::<PipeWords>() == 64);
    const _: () = assert!(size_of::<ChannelWords>() == 192 && CHANNEL_WORDS == 192);
    const _: () = assert!(align_of::<ChannelWords>() == 64);
    const _: () = assert!(size_of::<SlotWords>() == 16 && CHANNEL_SLOT_WORDS == 16);

    // SAFETY: `#[repr(C)]` of two `AtomicU32`, no padding (asserted above).
    unsafe impl SharedWords for MutexWords {}
    // SAFETY: `#[repr(C)]` of one `AtomicU32` (asserted above).
    unsafe impl SharedWords for CondvarWords {}
    // SAFETY: `#[repr(C)]` of two `AtomicU32`, no padding (asserted above).
    unsafe impl SharedWords for BarrierWords {}
    // SAFETY: `#[repr(C)]` of two `AtomicU32`, no padding (asserted above).
    unsafe impl SharedWords for ClaimsWords {}
    // SAFETY: `#[repr(C)]` of two `AtomicU32` then two `AtomicU64`: 4 + 4 + 8 + 8 = 24 bytes,
    // no padding (asserted above).
    unsafe impl SharedWords for ClaimSlot {}
    // SAFETY: `#[repr(C, align(64))]` of two lines: two `AtomicU32` and seven `AtomicU64`,
    // then eight `AtomicU64`: 128 bytes, no padding (asserted above).
    unsafe impl SharedWords for MapWords {}
    // SAFETY: `#[repr(C, align(64))]` of three lines of atomics: an `AtomicU64`, two
    // `AtomicU32` and six `AtomicU64` (64 bytes), twice, then two `AtomicU32` and seven
    // `AtomicU64` (64 bytes): 192 bytes, no padding (asserted above).
    unsafe impl SharedWords for PipeWords {}
    // SAFETY: `#[repr(C, align(64))]` of three lines of atomics: an `AtomicU64` and seven
    // `AtomicU64` (64 bytes), twice, then four `AtomicU32` and six `AtomicU64` (64 bytes): 192
    // bytes, no padding (asserted above).
    unsafe impl SharedWords for ChannelWords {}
    // SAFETY: `#[repr(C)]` of an `AtomicU64` then two `AtomicU32`: 16 bytes, no padding
    // (asserted above).
    unsafe impl SharedWords for SlotWords {}
}

/// Memory that stays mapped while it is borrowed: an owned [`Mapping`] (unmapped only when it
/// is dropped, which no borrow outlives) or a [`SharedMemory`] (mapped for the life of the
/// process).
pub(crate) trait Mapped {
    /// The first byte.
    fn base(&self) -> *mut u8;
    /// The length in bytes.
    fn size(&self) -> usize;
}

impl Mapped for Mapping {
    #[inline]
    fn base(&self) -> *mut u8 {
        self.as_ptr()
    }
    #[inline]
    fn size(&self) -> usize {
        self.len()
    }
}

impl Mapped for SharedMemory {
    #[inline]
    fn base(&self) -> *mut u8 {
        self.as_ptr()
    }
    #[inline]
    fn size(&self) -> usize {
        self.len()
    }
}

/// The address of the `len` bytes at `offset` of `memory`, if they lie inside it.
fn region<M: Mapped>(memory: &M, offset: usize, len: usize) -> Option<*mut u8> {
    let end = offset.checked_add(len)?;
    (end <= memory.size()).then(|| memory.base().wrapping_add(offset))
}

/// The atomic 32-bit word at byte `offset` of `memory`, or `None` if it is misaligned or does
/// not fit.
pub(crate) fn atomic_u32_at<M: Mapped>(memory: &M, offset: usize) -> Option<&AtomicU32> {
    words_at::<AtomicU32, M>(memory, offset)
}

/// The atomic 64-bit word at byte `offset` of `memory`, or `None` if it is misaligned or does
/// not fit.
pub(crate) fn atomic_u64_at<M: Mapped>(memory: &M, offset: usize) -> Option<&AtomicU64> {
    words_at::<AtomicU64, M>(memory, offset)
}

/// The `T` at byte `offset` of `memory`, or `None` if it does not fit or is misaligned.
pub(crate) fn words_at<T: SharedWords, M: Mapped>(memory: &M, offset: usize) -> Option<&T> {
    words_slice_at::<T, M>(memory, offset, 1).and_then(<[T]>::first)
}

/// The `count` values of `T` from byte `offset` of `memory`, or `None` if they do not fit
/// (the size overflowing included) or are misaligned.
pub(crate) fn words_slice_at<T: SharedWords, M: Mapped>(
    memory: &M,
    offset: usize,
    count: usize,
) -> Option<&[T]> {
    let len = count.checked_mul(size_of::<T>())?;
    let ptr = region(memory, offset, len)?.cast::<T>().cast_const();
    if ptr.is_null() || !ptr.is_aligned() {
        return None;
    }
    // SAFETY: the `len = count * size_of::<T>()` bytes at `ptr` lie inside `memory` (checked
    // by `region`), which stays mapped while it is borrowed (`Mapped`); `ptr` is non-null and
    // aligned for `T` (checked above); `T: SharedWords` is valid for every bit pattern and
    // interior-mutable in every byte, so a shared slice of it over memory that others change
    // atomically is sound.
    Some(unsafe { std::slice::from_raw_parts(ptr, count) })
}

/// The `count` plain values of `T` from byte `offset` of `memory`, shared, or `None` if they
/// do not fit (the size overflowing included) or are misaligned for `T`.
///
/// # Safety
///
/// While the slice lives, no one writes these bytes: no thread of this process and no other
/// process that maps the segment (e.g. the vector is frozen).
pub(crate) unsafe fn plain_slice_at<T: Plain, M: Mapped>(
    memory: &M,
    offset: usize,
    count: usize,
) -> Option<&[T]> {
    let len = count.checked_mul(size_of::<T>())?;
    let ptr = region(memory, offset, len)?;
    if ptr.is_null() {
        return None;
    }
    // SAFETY: the `len` bytes at `ptr` lie inside `memory` (checked by `region`), which stays
    // mapped while it is borrowed (`Mapped`), at a non-null address; the caller promises that
    // no one writes them while the slice lives.
    let bytes = unsafe { std::slice::from_raw_parts(ptr.cast_const(), len) };
    <[T]>::ref_from_bytes_with_elems(bytes, count).ok()
}

/// The `count` plain values of `T` from byte `offset` of `memory`, exclusively, or `None` if
/// they do not fit (the size overflowing included) or are misaligned for `T`.
///
/// # Safety
///
/// While the slice lives, no one else reads or writes these bytes: no thread of this process
/// and no other process that maps the segment (e.g. the caller holds the lock or the claim
/// that covers them).
#[expect(
    clippy::mut_from_ref,
    reason = "shared memory: exclusivity is the caller's promise"
)]
pub(crate) unsafe fn plain_slice_mut_at<T: Plain, M: Mapped>(
    memory: &M,
    offset: usize,
    count: usize,
) -> Option<&mut [T]> {
    let len = count.checked_mul(size_of::<T>())?;
    let ptr = region(memory, offset, len)?;
    if ptr.is_null() {
        return None;
    }
    // SAFETY: the `len` bytes at `ptr` lie inside `memory` (checked by `region`), which stays
    // mapped while it is borrowed (`Mapped`), at a non-null address; the caller promises
    // exclusive access to them while the slice lives.
    let bytes = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
    <[T]>::mut_from_bytes_with_elems(bytes, count).ok()
}

/// The bytes of a mapping of a segment that was just created: nobody else has its id yet,
/// and `&mut` excludes every other view in this process, so the creator may write its
/// initial state with plain stores.
pub(crate) fn fresh_bytes(mapping: &mut Mapping) -> &mut [u8] {
    // SAFETY: `mapping` is `len()` bytes mapped read-write while it lives; the caller holds
    // it by `&mut`, so no other reference into it exists in this process, and no other
    // process maps the object yet (its id has not been handed to anyone).
    unsafe { mapping.as_mut_slice() }
}

/// The value a process may read and write while it holds a mutex: the `T` at byte `offset`
/// of `memory`, exclusively for as long as `memory` is borrowed, or `None` if it does not fit
/// or is misaligned.
///
/// `held` is the proof, consumed here so that one lock gives one reference: only
/// `crate::mutex` makes one, right after taking the lock, and the guard that owns the
/// reference gives the lock back only when the reference is gone.
#[expect(
    clippy::mut_from_ref,
    reason = "shared memory: exclusivity comes from the lock"
)]
pub(crate) fn locked_value<T: Plain, M: Mapped>(
    memory: &M,
    offset: usize,
    held: crate::mutex::Held,
) -> Option<&mut T> {
    let crate::mutex::Held { .. } = held;
    // SAFETY: the calling process holds the mutex whose payload this is (the contract of
    // `Held`), so no other thread or process reads or writes it until the reference, owned by
    // the guard, is gone and the guard gives the lock back.
    let slice = unsafe { plain_slice_mut_at::<T, M>(memory, offset, 1) }?;
    slice.first_mut()
}

/// The elements a process may read and write while it holds a claim: `count` values of `T`
/// from byte `offset` of `memory`, or `None` if they do not fit or are misaligned.
///
/// `claimed` is the proof, consumed here so that one claim gives one slice: only
/// `crate::vec` makes one, right after the claims table recorded the claim of exactly these
/// elements for this process, and the `Claim` that owns the slice releases the claim only
/// when the slice is gone.
#[expect(
    clippy::mut_from_ref,
    reason = "shared memory: exclusivity comes from the claims table"
)]
pub(crate) fn claimed_slice<T: Plain, M: Mapped>(
    memory: &M,
    offset: usize,
    count: usize,
    claimed: crate::vec::Claimed,
) -> Option<&mut [T]> {
    let crate::vec::Claimed { .. } = claimed;
    // SAFETY: the claims table of the segment holds a live claim of exactly these elements
    // for this process (the contract of `Claimed`), and no other claim overlaps it, so no one
    // else reads or writes them until the claim is released.
    unsafe { plain_slice_mut_at::<T, M>(memory, offset, count) }
}

/// The elements of a frozen vector or matrix, shared: `count` values of `T` from byte
/// `offset` of `memory`, or `None` if they do not fit or are misaligned.
///
/// `frozen` is the proof: only `crate::vec` makes one, after reading the segment's frozen
/// flag with `Acquire`; a frozen vector takes no claim, so no one writes its elements again.
pub(crate) fn frozen_slice<T: Plain, M: Mapped>(
    memory: &M,
    offset: usize,
    count: usize,
    frozen: crate::vec::Frozen,
) -> Option<&[T]> {
    let crate::vec::Frozen { .. } = frozen;
    // SAFETY: the vector is frozen (the contract of `Frozen`): every claim was released
    // before the flag was set (with Release, read here after an Acquire), and no claim is
    // taken afterwards, so no one writes these bytes while the slice lives.
    unsafe { plain_slice_at::<T, M>(memory, offset, count) }
}

/// The bytes of a pipe's ring that its reader may read: `len` bytes at byte `offset` of
/// `memory`, shared, or `None` if they do not fit.
///
/// `readable` is the proof, consumed here so that one proof gives one slice: only
/// `crate::pipe` makes one, for bytes between the head and the tail that the protocol's last
/// step read (all of them, or a piece the head has not passed yet), in the process that owns
/// the reader end (the only one that moves the head); the `PipeReader` that owns the slice
/// frees the bytes (moves the head) only when it is gone.
pub(crate) fn readable_bytes<M: Mapped>(
    memory: &M,
    offset: usize,
    len: usize,
    readable: crate::pipe::Readable,
) -> Option<&[u8]> {
    let crate::pipe::Readable { .. } = readable;
    // SAFETY: the bytes lie between the head and the tail of the ring (the contract of
    // `Readable`): the writer wrote them before it published the tail and touches them again
    // only after the reader moved the head past them, which the owner of the slice does only
    // once the slice is gone; so no one writes them while it lives.
    unsafe { plain_slice_at::<u8, M>(memory, offset, len) }
}

/// The bytes of a pipe's ring that its writer may write: `len` bytes at byte `offset` of
/// `memory`, exclusively, or `None` if they do not fit.
///
/// `writable` is the proof, consumed here so that one proof gives one slice: only
/// `crate::pipe` makes one, for free bytes between the tail and the head plus the capacity
/// that the protocol's last step read (all of them, or a piece the tail has not passed yet),
/// in the process that owns the writer end (the only one that moves the tail); the slice is
/// gone before the tail is published past it.
#[expect(
    clippy::mut_from_ref,
    reason = "shared memory: exclusivity comes from the head and tail protocol"
)]
pub(crate) fn writable_bytes<M: Mapped>(
    memory: &M,
    offset: usize,
    len: usize,
    writable: crate::pipe::Writable,
) -> Option<&mut [u8]> {
    let crate::pipe::Writable { .. } = writable;
    // SAFETY: the bytes are free (the contract of `Writable`): the reader read them, if ever,
    // before it moved the head past them, and reads them again only after the writer
    // published a tail past them, which it does only once the slice is gone; so no one else
    // reads or writes them while it lives.
    unsafe { plain_slice_mut_at::<u8, M>(memory, offset, len) }
}

/// The bytes of a channel slot that its sender may write: `len` bytes at byte `offset` of
/// `memory`, exclusively, or `None` if they do not fit.
///
/// `writing` is the proof, consumed here so that one claim gives one slice: only
/// `crate::channel` makes one, right after the queue's step claimed the slot for the calling
/// process (its stamp says `WRITING` with this process's tag), for the message bytes of that
/// slot; the slice is gone before the slot is published.
#[expect(
    clippy::mut_from_ref,
    reason = "shared memory: exclusivity comes from the slot's stamp"
)]
pub(crate) fn slot_bytes_mut<M: Mapped>(
    memory: &M,
    offset: usize,
    len: usize,
    writing: crate::channel::Writing,
) -> Option<&mut [u8]> {
    let crate::channel::Writing { .. } = writing;
    // SAFETY: the slot is claimed by this process (the contract of `Writing`): receivers read
    // a slot only once it is published, and other senders claim it only after a receiver
    // released it in the next lap, which needs the publication first; so no one else reads or
    // writes these bytes while the slice lives.
    unsafe { plain_slice_mut_at::<u8, M>(memory, offset, len) }
}

/// The bytes of a channel slot that its receiver may read: `len` bytes at byte `offset` of
/// `memory`, shared, or `None` if they do not fit.
///
/// `reading` is the proof, consumed here so that one take gives one slice: only
/// `crate::channel` makes one, right after the queue's step took the slot for the calling
/// process (its stamp says `READING` with this process's tag); the slice is gone before the
/// slot is released.
pub(crate) fn slot_bytes<M: Mapped>(
    memory: &M,
    offset: usize,
    len: usize,
    reading: crate::channel::Reading,
) -> Option<&[u8]> {
    let crate::channel::Reading { .. } = reading;
    // SAFETY: the slot is taken by this process (the contract of `Reading`): its sender
    // published it before, and no sender claims it again before this process releases it,
    // which it does only once the slice is gone; so no one writes these bytes meanwhile.
    unsafe { plain_slice_at::<u8, M>(memory, offset, len) }
}

/// The archived bytes of an archive: `len` bytes at byte `offset` of `memory`, shared, or
/// `None` if they do not fit.
///
/// `written` is the proof: only `crate::archive` makes one, for the payload of a segment whose
/// header was checked (or that it has just created). The payload is written once, by
/// `Segment::create`'s initializer, before the header is published with `Release` (read back
/// with `Acquire` by every opener), and no code of this crate writes it again.
pub(crate) fn written_bytes<M: Mapped>(
    memory: &M,
    offset: usize,
    len: usize,
    written: crate::archive::Written,
) -> Option<&[u8]> {
    let crate::archive::Written { .. } = written;
    // SAFETY: the bytes are an archive's payload (the contract of `Written`): written before
    // the segment was published, which happens-before this read, and never written again by
    // anyone, so no one writes them while the slice lives.
    unsafe { plain_slice_at::<u8, M>(memory, offset, len) }
}

/// The archived root of `bytes`, read in place without a check: rkyv's `access_unchecked`.
///
/// `validated` is the proof: only `crate::archive` makes one, for bytes seen through
/// [`written_bytes`] (so they do not change while borrowed) that bytecheck validated as an
/// `A` when the archive was opened, or that rkyv's serializer wrote as an `A` when this
/// process created it, at an address as aligned as rkyv's own buffers.
pub(crate) fn archived_root<A: rkyv::Portable>(
    bytes: &[u8],
    validated: crate::archive::Validated,
) -> &A {
    let crate::archive::Validated { .. } = validated;
    // SAFETY: `bytes` hold a valid archived `A` at rkyv's root position (the contract of
    // `Validated`: `rkyv::access` checked these very bytes, or rkyv's serializer wrote them,
    // at the same 16-aligned offset of a page-aligned mapping), and they do not change while
    // borrowed (the contract of `Written`), so the check still holds.
    unsafe { rkyv::access_unchecked::<A>(bytes) }
}

#[cfg(all(test, not(netmcore_loom)))]
mod tests {
    use std::sync::atomic::Ordering;
    use std::thread;

    use netmcore_ipc::shm::ShmObject;

    use super::*;
    use crate::mutex::state::MutexWords;

    /// A fresh shared memory object of `len` bytes, mapped twice (at two addresses), its name
    /// already removed so that nothing is left in /dev/shm.
    fn mapped_twice(len: u64) -> (SharedMemory, SharedMemory) {
        let shm = ShmObject::create_unique("/netmcore-test-shared-sys-").expect("create");
        shm.set_size(len).expect("size");
        let a = shm.map_shared().expect("map");
        let b = shm.map_shared().expect("map again");
        shm.unlink().expect("unlink");
        assert_ne!(a.as_ptr(), b.as_ptr());
        (a, b)
    }

    #[test]
    fn a_wait_on_a_changed_word_returns_at_once_and_a_timeout_times_out() {
        let word = AtomicU32::new(1);
        assert_eq!(futex_wait(&word, 2, None).expect("wait"), Woke::Early);
        assert_eq!(
            futex_wait(&word, 1, Some(Duration::from_millis(1))).expect("wait"),
            Woke::TimedOut
        );
        let other = AtomicU32::new(5);
        assert_eq!(
            futex_waitv(&[(&word, 1), (&other, 4)], None).expect("waitv"),
            Woke::Early
        );
        assert_eq!(
            futex_waitv(&[(&word, 1), (&other, 5)], Some(Duration::from_millis(1))).expect("waitv"),
            Woke::TimedOut
        );
        assert_eq!(futex_wake(&word, 1).expect("wake"), 0, "nobody asleep");
        assert_eq!(wake(&word, Wake::None).expect("wake"), 0);
    }

    #[test]
    fn waitv_refuses_no_word_and_too_many() {
        let err = futex_waitv(&[], None).expect_err("no word");
        assert_eq!(err.raw_os_error(), Some(Errno::INVAL.raw_os_error()));
        let word = AtomicU32::new(0);
        let many = vec![(&word, 1); WAITV_MAX + 1];
        assert!(futex_waitv(&many, None).is_err());
    }

    /// Whether the thread `tid` of this process is asleep (state `S` in its `stat`).
    fn asleep(tid: i32) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
            .expect("the thread's stat");
        // The state follows the command name, which is in parentheses.
        let after = &stat[stat.rfind(')').expect("a command name") + 1..];
        after.trim_start().starts_with('S')
    }

    /// Sleepers on one mapping are woken by wakes through the other mapping of the same
    /// object: the futex is keyed by the object, not the address, which a private futex would
    /// not be. `futex_waitv` sleepers are woken through either of their words. The wakes are
    /// sent once every sleeper is asleep, so the counts of woken sleepers are exact.
    #[test]
    fn wakes_reach_sleepers_through_another_mapping() {
        let (a, b) = mapped_twice(4096);
        let word_a = atomic_u32_at(&a, 64).expect("aligned");
        let epoch_a = atomic_u32_at(&a, 128).expect("aligned");
        let word_b = atomic_u32_at(&b, 64).expect("aligned");
        let epoch_b = atomic_u32_at(&b, 128).expect("aligned");
        let until_asleep = |tids: &[i32]| {
            while !tids.iter().all(|&tid| asleep(tid)) {
                thread::yield_now();
            }
        };
        let woken = thread::scope(|s| {
            let (tx, rx) = std::sync::mpsc::channel();
            for i in 0..3 {
                let tx = tx.clone();
                s.spawn(move || {
                    tx.send(rustix::thread::gettid().as_raw_nonzero().get())
                        .expect("send");
                    while word_a.load(Ordering::Acquire) == 0 {
                        let woke = if i == 0 {
                            futex_wait(word_a, 0, None)
                        } else {
                            let epoch = epoch_a.load(Ordering::Acquire);
                            futex_waitv(&[(word_a, 0), (epoch_a, epoch)], None)
                        };
                        assert_eq!(woke.expect("wait"), Woke::Early);
                    }
                });
            }
            let tids: Vec<i32> = rx.iter().take(3).collect();
            until_asleep(&tids);
            // The epoch, through the other mapping: only the two waitv sleepers watch it.
            epoch_b.store(1, Ordering::Release);
            let by_epoch = wake(epoch_b, Wake::All).expect("wake");
            until_asleep(&tids);
            // The word, through the other mapping: everyone.
            word_b.store(1, Ordering::Release);
            let by_word = wake(word_b, Wake::All).expect("wake");
            // Through the sleepers' own mapping too, so that a failure below does not leave
            // them asleep.
            while wake(word_a, Wake::All).expect("wake") > 0 {}
            (by_epoch, by_word)
        });
        assert_eq!(woken, (2, 3));
    }

    #[test]
    fn a_wake_of_one_wakes_one() {
        let (a, _b) = mapped_twice(4096);
        let word = atomic_u32_at(&a, 0).expect("aligned");
        let done = AtomicU32::new(0);
        thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    // Each sleeper consumes one "token": the word counts them down.
                    loop {
                        let v = word.load(Ordering::Acquire);
                        if v > 0
                            && word
                                .compare_exchange(v, v - 1, Ordering::AcqRel, Ordering::Relaxed)
                                .is_ok()
                        {
                            break;
                        }
                        if v == 0 {
                            futex_wait(word, 0, None).expect("wait");
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                });
            }
            for _ in 0..2 {
                word.fetch_add(1, Ordering::Release);
                futex_wake(word, 1).expect("wake");
            }
        });
        assert_eq!(done.load(Ordering::Relaxed), 2);
        assert_eq!(word.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn word_views_are_bounds_and_alignment_checked() {
        let (a, b) = mapped_twice(4096);
        let words: &MutexWords = words_at(&a, 8).expect("fits");
        words.lock.store(7, Ordering::Relaxed);
        let same: &MutexWords = words_at(&b, 8).expect("fits");
        assert_eq!(same.lock.load(Ordering::Relaxed), 7);
        assert_eq!(
            atomic_u32_at(&b, 8)
                .expect("aligned")
                .load(Ordering::Relaxed),
            7
        );
        assert!(words_at::<MutexWords, _>(&a, 2).is_none(), "misaligned");
        assert!(
            words_at::<MutexWords, _>(&a, 4092).is_none(),
            "does not fit"
        );
        assert!(
            words_at::<MutexWords, _>(&a, 4088).is_some(),
            "fits exactly"
        );
        assert!(words_at::<MutexWords, _>(&a, usize::MAX).is_none());
        let slots = words_slice_at::<AtomicU64, _>(&a, 512, 64).expect("fits");
        assert_eq!(slots.len(), 64);
        assert!(
            words_slice_at::<AtomicU64, _>(&a, 4, 1).is_none(),
            "misaligned"
        );
        assert!(
            words_slice_at::<AtomicU64, _>(&a, 0, 513).is_none(),
            "too many"
        );
        assert!(
            words_slice_at::<AtomicU64, _>(&a, 0, usize::MAX).is_none(),
            "overflow"
        );
        assert_eq!(
            words_slice_at::<AtomicU64, _>(&a, 4096, 0).map(<[_]>::len),
            Some(0)
        );
        assert!(atomic_u64_at(&a, 4092).is_none());
        assert!(atomic_u64_at(&a, 4088).is_some());
    }

    #[test]
    fn plain_views_read_what_was_written() {
        let (a, b) = mapped_twice(4096);
        // SAFETY: this thread is the only user of both mappings, and the slice is not used
        // once a view of the other mapping is made.
        let values = unsafe { plain_slice_mut_at::<u64, _>(&a, 128, 4) }.expect("fits");
        values.copy_from_slice(&[1, 2, 3, u64::MAX]);
        // SAFETY: as above; the exclusive slice is no longer used.
        let seen = unsafe { plain_slice_at::<u64, _>(&b, 128, 4) }.expect("fits");
        assert_eq!(seen, [1, 2, 3, u64::MAX]);
        // SAFETY: as above.
        unsafe {
            assert!(plain_slice_at::<u64, _>(&b, 4, 1).is_none(), "misaligned");
        }
        // SAFETY: as above.
        unsafe {
            assert!(
                plain_slice_at::<u64, _>(&b, 4096 - 8, 2).is_none(),
                "does not fit"
            );
        }
        // SAFETY: as above.
        unsafe {
            assert!(
                plain_slice_at::<u64, _>(&b, 0, usize::MAX).is_none(),
                "overflow"
            );
        }
        // SAFETY: as above.
        let bytes = unsafe { plain_slice_at::<[u8; 3], _>(&b, 129, 2) }.expect("any alignment");
        assert_eq!(bytes, [[0, 0, 0], [0, 0, 0]]);
    }
}
