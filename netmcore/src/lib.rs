//! netmcore: multi-process compute jobs on one Linux host.
//!
//! A program turns itself into a supervising *master*; compute happens in worker processes
//! that are always forked from the master, started from predefined process types with a
//! type-checked serialized argument, and joined for their result. Shared POSIX memory, named
//! semaphores and files are registered with the master, which destroys each object when its
//! last user lets go, when that user dies, and after a crash.
//!
//! # Example
//!
//! The sum of squares: a coordinator process starts ten `square` processes and joins them.
//!
//! ```
//! use netmcore::{Config, process};
//!
//! // Process types are defined before the master starts; workers inherit them by fork.
//! let square = process::def_process(|n: u64| n * n)?;
//! let sum_of_squares = process::def_process(move |n: u64| -> u64 {
//!     let pids: Vec<_> = (1..=n).map(|i| square.start(&i).expect("started")).collect();
//!     pids.into_iter().map(|pid| square.join(pid).expect("joined").expect("returned")).sum()
//! })?;
//!
//! // The calling process becomes the master until `sum_of_squares` has ended.
//! let dir = tempfile::tempdir()?;
//! let total = netmcore::run(Config::new(dir.path().join("job")), &sum_of_squares, &10)?;
//! assert_eq!(total, Some(385));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Values cross process boundaries as [`Encap`]s, which check their type when unwrapped:
//!
//! ```
//! use netmcore::{Encap, EncapError, Inherit, ProcessId};
//!
//! let arg = Encap::wrap(&(ProcessId(3), "band 3".to_string()))?;
//! let (pid, label): (ProcessId, String) = arg.unwrap()?;
//! assert_eq!((pid, label.as_str()), (ProcessId(3), "band 3"));
//! assert!(matches!(arg.unwrap::<u64>(), Err(EncapError::TypeMismatch { .. })));
//!
//! // A new process inherits no preallocated shared memory unless asked to.
//! assert_eq!(Inherit::default(), Inherit::Nothing);
//! # Ok::<(), EncapError>(())
//! ```
//!
//! # Who may call what
//!
//! Before [`startup`] or [`run`], process types are defined with [`def_process`] (or the
//! typed [`process::def_process`]). Inside `startup` the calling process is the master: its
//! [hook](Config::on_master_start) and the `first_process` closure may define process types,
//! [`start`] processes and [`join_nowait`] them. Inside a started process (a worker) [`start`],
//! [`join`], [`join_nowait`] and [`self_process_id`] talk to the master. A call made where it
//! is not allowed fails with [`Error::NotStarted`], [`Error::NotInWorker`] or
//! [`Error::NotInMaster`].
//!
//! # Shared resources
//!
//! Files, POSIX shm objects and named semaphores are registered with the master
//! ([`manage_file`], [`manage_shm`], [`manage_sem`]) and looked up by id ([`get_resource`],
//! [`get_file`], [`get_shm`], [`get_sem`]). The master counts each object's users as a set of
//! processes and destroys the object when the last one [`release`]s it or ends, in any way.
//! Preallocated shared memory ([`create_preallocated_shm`]) is created and mapped by the
//! master; a worker sees it only if it inherits it when it is started:
//!
//! ```
//! use std::sync::atomic::Ordering;
//! use netmcore::{Config, Inherit, ResId, ResourceRepr, create_preallocated_shm, get_resource, process};
//!
//! // The program fills a region before startup.
//! let (pool, name) = create_preallocated_shm("/netmcore-doc-facade-", 4096)?;
//! let ResourceRepr::PosixShmPreallocated { memory, .. } = *get_resource(pool)?.repr() else {
//!     unreachable!()
//! };
//! memory.as_atomic_u64s().expect("page-aligned")[0].store(42, Ordering::Relaxed);
//!
//! let reader = process::def_process(|id: ResId| -> u64 {
//!     match *get_resource(id).expect("inherited").repr() {
//!         ResourceRepr::PosixShmPreallocated { memory, .. } => {
//!             memory.as_atomic_u64s().expect("aligned")[0].load(Ordering::Relaxed)
//!         }
//!         _ => unreachable!(),
//!     }
//! })?;
//! let coordinator = process::def_process(move |id: ResId| -> u64 {
//!     let pid = reader.start_with(&id, Inherit::All).expect("started");
//!     reader.join(pid).expect("joined").expect("returned")
//! })?;
//! let dir = tempfile::tempdir()?;
//! assert_eq!(netmcore::run(Config::new(dir.path().join("job")), &coordinator, &pool)?, Some(42));
//!
//! // When run returns, the region's name is gone; the program's mapping stays readable.
//! assert!(!std::path::Path::new(&format!("/dev/shm{name}")).exists());
//! assert_eq!(memory.as_atomic_u64s().expect("aligned")[0].load(Ordering::Relaxed), 42);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Every object is recorded in a ledger in the socket directory before it is created. If the
//! master is killed, a small guardian process destroys what the ledger lists; the next
//! [`startup`] on the directory and [`destroy_resources_in`] (from any process) clean up too.
#![deny(unsafe_code)]

pub mod pool;
pub mod process;

pub use netmcore_encap::{ByteBuf, Encap, EncapError, Pieces};
pub use netmcore_master::{
    ComputeResource, Config, DestroyReport, Error, ResourceRepr, Result, Role, STREAM_AT_LEAST,
    SharedMemory, create_preallocated_shm, create_shm, def_process, destroy_resources,
    destroy_resources_in, get_file, get_resource, get_sem, get_shm, join, join_nowait, manage_file,
    manage_sem, manage_shm, release, role, self_process_id, start, start_pieces, start_with,
    startup,
};
pub use netmcore_resources::ledger::{LedgerObject, ObjectKind};
pub use netmcore_resources::{Inherit, ProcessId, ResId, ResourceKind};

/// The OS layer, for creating the objects that `manage_shm` and `manage_sem` register (e.g.
/// [`ipc::shm::ShmObject::create`], [`ipc::sem::NamedSemaphore::create`]) and for the
/// primitives on their own.
pub use netmcore_ipc as ipc;

/// Data structures in shared memory — locks, vectors, matrices, hash tables, typed channels,
/// byte pipes and archives — that the processes of a run share by handle (the
/// `netmcore-shared` crate).
pub use netmcore_shared as shared;

/// A global switch for verbose events (the seed's `Debug.enable`); logging itself goes
/// through [`tracing`](https://docs.rs/tracing).
pub mod debug {
    pub use netmcore_master::debug::{enable, is_enabled};
}

/// [`startup`] whose first process is `process` started with `arg`; returns that process's
/// result: `Some` when its body returned, `None` when it panicked, exited or was killed (or
/// when another process joined it first).
///
/// ```
/// use netmcore::{Config, process};
///
/// let parse = process::def_process(|text: String| -> u32 { text.parse().expect("a number") })?;
/// let dir = tempfile::tempdir()?;
/// let config = || Config::new(dir.path().join("job"));
/// assert_eq!(netmcore::run(config(), &parse, &"42".to_string())?, Some(42));
/// // A body that panics leaves no result; the master goes on, and may run again.
/// assert_eq!(netmcore::run(config(), &parse, &"forty-two".to_string())?, None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// As [`startup`], and [`Error::Encap`] when `arg` cannot be encoded or the result is not an
/// `R`.
pub fn run<A, R>(config: Config, process: &process::ProcessType<A, R>, arg: &A) -> Result<Option<R>>
where
    A: serde::Serialize + serde::de::DeserializeOwned + 'static,
    R: serde::Serialize + serde::de::DeserializeOwned + 'static,
{
    let first = *process;
    let result = netmcore_master::startup_with_result(config, || first.start(arg))?;
    Ok(result.map(|r| r.unwrap()).transpose()?)
}

// The README's Rust examples compile and run as doctests of this crate.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
