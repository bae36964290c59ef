//! The supervisor of [netmcore](https://crates.io/crates/netmcore): the master's
//! single-threaded event loop, forking and reaping of workers, shutdown, crash cleanup, and the
//! worker-side client that talks to the master.
//!
//! **Status: not written yet.** This crate is a placeholder in the workspace; it exports
//! nothing. It will be built on `netmcore-encap`, `netmcore-resources` and `netmcore-ipc`.
#![deny(unsafe_code)]
