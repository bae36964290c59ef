//! Ids, resource kinds, the registry state machine and the on-disk ledger of netmcore.
//!
//! This crate is the master's bookkeeping, with no process, socket or shared memory code in
//! it. [`registry::Registry`] is a pure state machine: it records which resources exist and who
//! uses them, which processes run and who joins them, and each operation returns what its
//! caller must do (destroy an object, wake a joiner). The ids and descriptions it deals in
//! ([`ResId`], [`ProcessId`], [`ResourceKind`], [`ResourceDesc`], [`Inherit`]) are the ones the
//! other netmcore crates share.
//!
//! # Example
//!
//! ```
//! use netmcore_resources::registry::{Action, Holder, JoinOutcome, Registry, RegistryError, Wake};
//! use netmcore_resources::{Inherit, ProcessId, ResId, ResourceDesc};
//!
//! let mut registry: Registry<String> = Registry::new();
//!
//! // The master defines a process type and preallocates shared memory.
//! let (fork_point, join_point) = registry.def_process();
//! let shm = ResourceDesc::PosixShmPreallocated { name: "/netmcore-doc-pool".into(), size: 4096 };
//! let pool = registry.register(shm.clone(), Holder::Master)?;
//! assert_eq!((fork_point, join_point, pool), (ResId(0), ResId(1), ResId(2)));
//!
//! // It starts a first process that inherits the shared memory, and the first process uses it.
//! let first = registry.start(fork_point, &Inherit::All, Holder::Master)?;
//! assert_eq!(first.pid, ProcessId(0));
//! assert_eq!(first.inherited, [(pool, shm)]);
//! registry.get(pool, Holder::Process(first.pid))?;
//!
//! // The first process starts a second one, which inherits nothing, and waits for it.
//! let second = registry.start(fork_point, &Inherit::Nothing, Holder::Process(first.pid))?;
//! let second_user = Holder::Process(second.pid);
//! assert_eq!(registry.get(pool, second_user), Err(RegistryError::NotShared(pool)));
//! assert_eq!(registry.join(join_point, second.pid, first.pid)?, JoinOutcome::Deferred);
//!
//! // When the second process ends, the master is told to answer the first.
//! let actions = registry.finished(second.pid, Some("42".to_string()));
//! assert_eq!(
//!     actions,
//!     [Action::Wake(Wake {
//!         joiner: first.pid,
//!         target: second.pid,
//!         join_point,
//!         result: Some("42".to_string()),
//!     })]
//! );
//!
//! // The first process ends: the master still uses everything, so nothing is destroyed yet.
//! assert!(registry.finished(first.pid, None).is_empty());
//! // The master stops and destroys what is left.
//! let destroyed: Vec<ResId> = registry.shutdown().into_iter().map(|d| d.id).collect();
//! assert_eq!(destroyed, [fork_point, join_point, pool]);
//! assert!(registry.is_empty());
//! # Ok::<(), RegistryError>(())
//! ```
//!
//! The registry lives only in the master's memory. What it would take to clean up after a
//! master that dies without running its own shutdown is kept in the [`ledger`]: an append-only
//! file in the socket directory, written before each OS object is created and after it is
//! destroyed, that the master's guardian, the next master on the same directory or the admin
//! tool replays to destroy whatever a crashed master left behind.
#![deny(unsafe_code)]

mod ids;
pub mod ledger;
pub mod registry;

pub use ids::{Inherit, ProcessId, ResId, ResourceDesc, ResourceKind, path_bytes};
pub use registry::{Holder, Registry, RegistryError};
