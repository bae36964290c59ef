//! The supervisor of [netmcore](https://crates.io/crates/netmcore): the master's
//! single-threaded event loop, forking and reaping of workers, shutdown, and the worker-side
//! client that talks to the master. The `netmcore` facade re-exports this crate's calls and
//! adds a typed layer on top; use this crate directly for the dynamically typed API alone.
//!
//! # Example
//!
//! The sum of squares: a coordinator process starts ten `square` processes and joins them.
//!
//! ```
//! use netmcore_encap::Encap;
//! use netmcore_master::{Config, def_process, join, start, startup_with_result};
//!
//! let (square, square_done) = def_process(|arg: Encap| {
//!     let n: u64 = arg.unwrap().expect("a u64");
//!     Encap::wrap(&(n * n)).expect("a u64 encodes")
//! })?;
//! let (sum, _) = def_process(move |arg: Encap| {
//!     let n: u64 = arg.unwrap().expect("a u64");
//!     let pids: Vec<_> = (1..=n)
//!         .map(|i| start(square, Encap::wrap(&i).expect("encodes")).expect("started"))
//!         .collect();
//!     let total: u64 = pids
//!         .into_iter()
//!         .map(|pid| {
//!             let result = join(square_done, pid).expect("joined").expect("returned");
//!             result.unwrap::<u64>().expect("a u64")
//!         })
//!         .sum();
//!     Encap::wrap(&total).expect("a u64 encodes")
//! })?;
//!
//! // The calling process becomes the master until the first process (`sum`) ended.
//! let dir = tempfile::tempdir()?;
//! let config = Config::new(dir.path().join("job"));
//! let result = startup_with_result(config, || start(sum, Encap::wrap(&10u64)?))?;
//! assert_eq!(result.expect("sum returned").unwrap::<u64>()?, 385);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Roles
//!
//! Every call checks the [`role`] of the calling process: before `startup` (process types
//! are defined), the master (inside `startup`: its hook and `first_process`), or a worker (a
//! process started with [`start`], always forked from the master). A worker talks to the
//! master over a private socketpair; the master serves all workers from one `poll` loop and
//! never blocks on any of them, so that a `join` on a running process is simply answered
//! later.
#![deny(unsafe_code)]

mod admin;
mod api;
mod board;
mod config;
pub mod debug;
mod dir;
mod error;
mod guardian;
mod master;
mod resources;
mod signals;
mod state;
#[allow(
    unsafe_code,
    reason = "the fork, guardian and mapping wrappers; each block has its SAFETY comment"
)]
mod sys;
mod warm;
mod worker;
mod zygote;

pub use admin::{
    ADMIN_MAX_CLIENTS, ADMIN_PROTOCOL_VERSION, ADMIN_REQUEST_DEADLINE, ADMIN_REQUEST_LIMIT,
    ADMIN_SOCKET_NAME, AdminProcess, AdminRequest, AdminResource, AdminStatus, admin_socket_path,
    admin_status,
};
pub use api::{
    STREAM_AT_LEAST, def_process, join, join_nowait, self_process_id, start, start_pieces,
    start_with, startup, startup_with_result,
};
pub use board::{death_board, self_tag};
pub use config::Config;
pub use dir::{DestroyReport, LOCK_FILE_NAME};
pub use error::{Error, Result};
pub use netmcore_ipc::shm::SharedMemory;
pub use resources::{
    ComputeResource, ResourceRepr, create_preallocated_shm, create_shm, destroy_resources,
    destroy_resources_in, get_file, get_resource, get_sem, get_shm, manage_file, manage_sem,
    manage_shm, release,
};
pub use state::{Role, role};
