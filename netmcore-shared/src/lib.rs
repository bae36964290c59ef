//! Data structures in shared memory for [netmcore](https://crates.io/crates/netmcore): locks,
//! condition variables, semaphores, barriers, vectors, matrices, hash maps and sets, atomic
//! counters, typed channels, byte pipes and write-once archives that the processes of one
//! netmcore run share, each in a POSIX shared memory *segment* of its own that the master
//! registers like any other resource.
//!
//! ```
//! use netmcore_shared::{Mutex, SharedVec};
//!
//! # fn main() -> netmcore_shared::Result<()> {
//! // Before `startup` the program makes structures for itself (they are registered for the
//! // master-to-be); in a run, workers make and open them the same way, by handle.
//! let total = Mutex::new(0u64)?;
//! let squares = SharedVec::<u64>::zeroed(8)?;
//! {
//!     // A claim is exclusive: another process claiming an overlapping range gets
//!     // `Error::Overlap` until this one is dropped.
//!     let mut claim = squares.claim(0..8)?;
//!     for (i, x) in claim.iter_mut().enumerate() {
//!         *x = (i * i) as u64;
//!     }
//! }
//! squares.freeze()?; // from now on everyone reads, nobody writes
//! *total.lock().expect("not poisoned") = squares.as_slice()?.iter().sum();
//! assert_eq!(*total.lock().expect("not poisoned"), 140);
//! // Another process would open them with `Mutex::open(total.handle())` and
//! // `SharedVec::open(squares.handle())`.
//! # Ok(())
//! # }
//! ```
//!
//! The structures are the Rust-shaped counterparts of OCamlnet's netmulticore ones (mempool,
//! heap, array, matrix, hashtbl, queue, buffer, mutex, sem, condition, camlboxes):
//!
//! * **Typed.** Element types are [`Plain`]: zerocopy's `FromBytes + IntoBytes + KnownLayout +
//!   Immutable`, so no pointer ever lands in shared memory and any bytes are a valid value. An
//!   [`Archive`] holds any value rkyv can archive instead, written once and read in place,
//!   its bytes validated with bytecheck when it is opened.
//! * **Position independent.** Contents are addressed by offsets, never pointers, so any process
//!   maps a segment at any address: a structure created by a worker can be opened by a sibling
//!   that was not forked after it, through a [`Handle`] passed in an argument or a message.
//! * **Checked.** Every segment starts with one header layout (magic, layout version, kind,
//!   the fingerprint of the element types, sizes). Opening checks it against the handle and the
//!   object's real size, and every offset, index and tag read from shared memory is checked
//!   again where it is used: a corrupt segment is an [`Error::Corrupt`] in the process that
//!   meets it, never undefined behaviour and never a panic.
//! * **Robust when a process dies.** Holders and peers are named in shared memory by a tag of
//!   their process. A wait watches the master's death board beside its own word, so a lock
//!   whose holder died is taken over (and reported poisoned), a barrier a participant died at is
//!   [`Error::Broken`], claims of a dead process are released, and the lock of a [`HashMap`] or
//!   [`HashSet`] is taken over by the next operation, which finds every insert that completed;
//!   a pipe whose writer died without closing it is a broken pipe after its data, never a clean
//!   end-of-file; a [`channel`] whose senders all died is [`Error::Disconnected`] for its
//!   receivers once drained (and whose receivers all died, for its senders), and a slot a
//!   process died in the middle of is skipped or freed by the next one that needs it.
//! * **Leak-free.** A segment is a resource of the master: it is destroyed when its last user
//!   lets go or dies, and after a crash.
//!
//! Every protocol over shared words is a pure state machine, model-checked with loom under
//! `cfg(netmcore_loom)`; the futex calls and the views of a mapping around them are thin
//! wrappers in one private `sys` module, the only place with `unsafe` code.
#![deny(unsafe_code)]

#[cfg(not(netmcore_loom))]
mod archive;
#[cfg(not(netmcore_loom))]
mod atomics;
mod error;
#[cfg(not(netmcore_loom))]
mod given;
#[cfg_attr(
    not(test),
    allow(
        dead_code,
        reason = "the crate-private constructors serve the structures, which come with the \
                  master's segment glue"
    )
)]
mod handle;
#[cfg_attr(
    not(test),
    allow(
        dead_code,
        reason = "read and written by the segments, which come with the master's glue"
    )
)]
mod header;
mod plain;
#[cfg(not(netmcore_loom))]
mod segment;
#[cfg(not(netmcore_loom))]
mod semaphore;
mod task;
#[cfg(not(netmcore_loom))]
mod vec;

// The protocols, pure state machines over `sync` atomics; the structures drive them.
#[cfg_attr(
    netmcore_loom,
    allow(dead_code, reason = "under loom only the models run, not the OS layer")
)]
mod barrier;
#[cfg_attr(
    netmcore_loom,
    allow(dead_code, reason = "under loom only the models run, not the OS layer")
)]
mod channel;
#[cfg_attr(
    netmcore_loom,
    allow(dead_code, reason = "under loom only the models run, not the vectors")
)]
mod claims;
#[cfg_attr(
    netmcore_loom,
    allow(dead_code, reason = "under loom only the models run, not the OS layer")
)]
mod condvar;
#[cfg_attr(
    netmcore_loom,
    allow(dead_code, reason = "under loom only the models run, not the OS layer")
)]
mod map;
#[cfg_attr(
    netmcore_loom,
    allow(dead_code, reason = "under loom only the models run, not the OS layer")
)]
mod mutex;
#[cfg_attr(
    netmcore_loom,
    allow(dead_code, reason = "under loom only the models run, not the OS layer")
)]
mod pipe;
#[cfg_attr(
    any(not(test), netmcore_loom),
    allow(
        dead_code,
        reason = "driven by the structures, which come with the master's segment glue; under \
                  loom only the models run"
    )
)]
mod protocol;
mod sync;
#[cfg(not(netmcore_loom))]
#[allow(
    unsafe_code,
    reason = "the typed views of a mapping; each block has its SAFETY comment"
)]
#[cfg_attr(
    not(test),
    allow(
        dead_code,
        reason = "a few views serve only the structures that come next and the tests"
    )
)]
mod sys;
#[cfg(test)]
mod testing;
#[cfg(not(netmcore_loom))]
mod wait;

#[cfg(not(netmcore_loom))]
pub use archive::Archive;
#[cfg(not(netmcore_loom))]
pub use atomics::SharedAtomics;
#[cfg(not(netmcore_loom))]
pub use barrier::Barrier;
#[cfg(not(netmcore_loom))]
pub use channel::{Receiver, Sender, channel};
#[cfg(not(netmcore_loom))]
pub use condvar::Condvar;
pub use error::{Error, Result};
pub use handle::Handle;
#[cfg(not(netmcore_loom))]
pub use map::{HashMap, HashSet};
#[cfg(not(netmcore_loom))]
pub use mutex::{Mutex, MutexGuard};
#[cfg(not(netmcore_loom))]
pub use pipe::{PipeReader, PipeWriter, pipe};
pub use plain::Plain;
#[cfg(not(netmcore_loom))]
pub use semaphore::Semaphore;
pub use task::TaskFailure;
#[cfg(not(netmcore_loom))]
pub use vec::{Claim, SharedMatrix, SharedVec};
