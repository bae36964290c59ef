//! The process-shared barrier: [`Barrier`]; the protocol is in [`state`].

#[cfg(not(netmcore_loom))]
mod os;
pub(crate) mod state;

#[cfg(not(netmcore_loom))]
pub use os::Barrier;
