//! The typed channel between processes: [`channel`], [`Sender`] and [`Receiver`]; the
//! protocols are in [`state`].

#[cfg(not(netmcore_loom))]
mod os;
pub(crate) mod state;

#[cfg(not(netmcore_loom))]
pub(crate) use os::{Reading, Writing};
#[cfg(not(netmcore_loom))]
pub use os::{Receiver, Sender, channel};
