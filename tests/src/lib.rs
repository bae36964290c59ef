//! Multi-process integration tests of netmcore (crate `netmcore-tests`, not published).
//!
//! **Status: empty.** The scenarios that call `startup` arrive with the master; each will run
//! in a process of its own and check that it leaves nothing in `/dev/shm`.
#![deny(unsafe_code)]
