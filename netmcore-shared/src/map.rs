//! The fixed-capacity hash table and set, [`HashMap`] and [`HashSet`], over the protocol of
//! [`state`].

#[cfg(not(netmcore_loom))]
mod os;
pub(crate) mod state;

#[cfg(not(netmcore_loom))]
pub use os::{HashMap, HashSet};
