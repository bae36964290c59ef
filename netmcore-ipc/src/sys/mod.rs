//! Thin wrappers over the system calls the safe API stands on.
//!
//! # Safety
//!
//! Every `unsafe` block of this crate lives below this module, each with a `// SAFETY:` comment
//! naming the invariant that makes it sound. Nothing here hands out a raw file descriptor: OS
//! handles are `OwnedFd` and `BorrowedFd`.

pub(crate) mod futex;
pub(crate) mod memfd;
pub(crate) mod pipe;
pub(crate) mod sem;
pub(crate) mod shm;
pub(crate) mod socket;
