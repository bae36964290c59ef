//! The synchronisation primitives that the atomics protocols of this crate are written against:
//! std's in a normal build, loom's under `cfg(netmcore_loom)`, so that the loom models run the
//! very code that ships. Code using this module never names either crate.
//!
//! Only the pure state machines use it (`mutex::state`, `condvar::state`, `barrier::state`,
//! `claims::state`, `pipe::state`, `channel::state`); what meets the kernel (the futex calls
//! and the views of a mapping in `sys`) is std's, and in a normal build the two are the same
//! types.

#[cfg(not(netmcore_loom))]
pub(crate) use std::sync::atomic;

#[cfg(netmcore_loom)]
pub(crate) use loom::sync::atomic;

/// Threads, locks and shared ownership for the tests of the state machines.
#[cfg(all(test, not(netmcore_loom)))]
pub(crate) use std::{
    sync::{Arc, Condvar, Mutex},
    thread,
};

/// Threads, locks and shared ownership for the tests of the state machines.
#[cfg(all(test, netmcore_loom))]
pub(crate) use loom::{
    sync::{Arc, Condvar, Mutex},
    thread,
};
