//! The byte stream between two processes: [`pipe`], [`PipeWriter`] and [`PipeReader`]; the
//! protocol is in [`state`].

#[cfg(not(netmcore_loom))]
mod os;
pub(crate) mod state;

#[cfg(not(netmcore_loom))]
pub use os::{PipeReader, PipeWriter, pipe};
#[cfg(not(netmcore_loom))]
pub(crate) use os::{Readable, Writable};
