//! The process-shared mutex: [`Mutex<T>`] and its guard; the protocol is in [`state`].

#[cfg(not(netmcore_loom))]
mod os;
pub(crate) mod state;

#[cfg(not(netmcore_loom))]
pub(crate) use os::Held;
#[cfg(not(netmcore_loom))]
pub use os::{Mutex, MutexGuard};
