//! The synchronisation primitives that the atomics protocols of this crate are written against:
//! std's in a normal build, loom's under `cfg(netmcore_loom)`, so that the loom models run the
//! very code that ships. Code using this module never names either crate.
//!
//! Only the pure state machines use it (see `futex_sem::state`); atomics that live in real
//! shared memory and meet the kernel (the futex word itself, the views of a mapping) are std's.

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
