//! The OS layer of [netmcore](https://crates.io/crates/netmcore): POSIX shared memory, named and
//! futex-based semaphores, socketpair channels with file-descriptor passing, and the versioned
//! wire protocol between workers and the master.
//!
//! Each primitive stands alone; the master and its workers are built from them, but nothing
//! here knows about process types, registries or the master's event loop.
//!
//! ```
//! use std::time::Duration;
//! use netmcore_ipc::channel::Channel;
//! use netmcore_ipc::futex_sem::FutexSemaphore;
//! use netmcore_ipc::shm::ShmObject;
//! use netmcore_ipc::wire::{Request, Response};
//! use netmcore_resources::{ProcessId, ResId};
//!
//! // Shared memory with a semaphore in its first word: what one process posts, another
//! // process that maps the same object can take.
//! let shm = ShmObject::create_unique("/netmcore-doc-crate-")?;
//! shm.set_size(4096)?;
//! let memory = shm.map_shared()?;
//! let sem = FutexSemaphore::new_in(&memory, 0, 0)?;
//! sem.post()?;
//! sem.wait_timeout(Duration::from_secs(5))?;
//! shm.unlink()?;
//!
//! // A worker asks the master a question over its socketpair; the master answers.
//! let (mut master, mut worker) = Channel::pair()?;
//! worker.send_msg(&Request::SelfProcessId)?;
//! assert_eq!(master.recv_msg::<Request>()?, Request::SelfProcessId);
//! master.send_msg(&Response::ProcessId(ProcessId(4)))?;
//! assert_eq!(worker.recv_msg::<Response>()?, Response::ProcessId(ProcessId(4)));
//! worker.send_msg(&Request::Release(ResId(2)))?; // answered once the master let go
//! assert!(master.recv_msg::<Request>()?.expects_response());
//! # Ok::<(), netmcore_ipc::Error>(())
//! ```
//!
//! | module | what it holds | OS interface |
//! |---|---|---|
//! | [`shm`] | named POSIX shared memory: create (exclusive, 0600), open, size, map, unlink; [`shm::SharedMemory`] views | `shm_open`, `ftruncate`, `mmap` |
//! | [`memfd`] | anonymous shared memory that can be sealed and passed over a socket | `memfd_create`, `fcntl(F_ADD_SEALS)` |
//! | [`sem`] | POSIX named semaphores | `sem_open`, `sem_post`, `sem_timedwait`, … (with [`stream`], the only user of libc) |
//! | [`futex_sem`] | a counting semaphore living in shared memory, on one atomic word | `futex` (not private: it works across processes) |
//! | [`channel`] | socketpair channels: length-prefixed frames, fd passing, big bodies as memfds, a non-blocking path for poll loops, peer credentials, a listener | `socketpair`, `sendmsg`/`recvmsg` with `SCM_RIGHTS`, `SO_PEERCRED` |
//! | [`stream`] | one run of bytes through a pipe of 1 MiB, lent by reference and read straight into the receiver's buffer; no `SIGPIPE` | `pipe2`, `fcntl(F_SETPIPE_SZ)`, `vmsplice`, `pthread_sigmask` |
//! | [`death_board`] | how waiters in shared memory learn that a process ended: a bit per process and a futex epoch, in memory every worker inherits | `memfd_create`, `mmap`, `futex` |
//! | [`wire`] | the versioned protocol between a worker and the master: [`wire::Request`], [`wire::Response`] | — |
//!
//! Every unsafe block of the crate is in a private `sys` module with a `// SAFETY:` comment;
//! the public API is safe except [`shm::SharedMemory::as_slice`] and
//! [`shm::SharedMemory::as_mut_slice`], whose contracts are written on them. Errors are one
//! [`Error`] enum whose messages name the call and the object, e.g.
//! `shm_open /netmcore-…: File exists (os error 17)`.
#![deny(unsafe_code)]

mod codec;
mod error;
mod sync;
#[allow(
    unsafe_code,
    reason = "the sys modules wrap the syscalls; each block has its SAFETY comment"
)]
mod sys;

pub mod channel;
pub mod death_board;
pub mod futex_sem;
pub mod memfd;
pub mod sem;
pub mod shm;
pub mod stream;
pub mod wire;

pub use error::{Error, Result};
