//! The OS layer of [netmcore](https://crates.io/crates/netmcore): POSIX shared memory, named and
//! futex-based semaphores, socketpair channels with file-descriptor passing, and the versioned
//! wire protocol between workers and the master.
//!
//! **Status: not written yet.** This crate is a placeholder in the workspace; it exports
//! nothing. Its contents are specified by the project's design (the OS primitives layer) and
//! will arrive in a later release.
#![deny(unsafe_code)]
