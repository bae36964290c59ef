//! netmcore: multi-process compute jobs on one Linux host.
//!
//! A program turns itself into a supervising *master*; compute happens in worker processes
//! that are always forked from the master, started from predefined process types with a
//! type-checked serialized argument, and joined for their result. Shared POSIX memory, named
//! semaphores and files are registered with the master, which destroys each object when its
//! last user lets go, when that user dies, and after a crash.
//!
//! **Status:** this facade re-exports the finished foundation — encapsulation and the ids and
//! kinds of resources. `startup`, `run`, `start`, `join` and the resource calls arrive with the
//! master; until then they do not exist here.
//!
//! # Example
//!
//! ```
//! use netmcore::{Encap, EncapError, Inherit, ProcessId};
//!
//! // Process arguments and results travel as type-checked envelopes.
//! let arg = Encap::wrap(&(ProcessId(3), "band 3".to_string()))?;
//! let (pid, label): (ProcessId, String) = arg.unwrap()?;
//! assert_eq!((pid, label.as_str()), (ProcessId(3), "band 3"));
//! assert!(matches!(arg.unwrap::<u64>(), Err(EncapError::TypeMismatch { .. })));
//!
//! // A new process inherits no preallocated shared memory unless asked to.
//! assert_eq!(Inherit::default(), Inherit::Nothing);
//! # Ok::<(), EncapError>(())
//! ```
#![deny(unsafe_code)]

pub use netmcore_encap::{ByteBuf, Encap, EncapError};
pub use netmcore_resources::{Inherit, ProcessId, ResId, ResourceKind};

// The README's Rust examples compile and run as doctests of this crate.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
