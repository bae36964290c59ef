//! The process-shared barrier: its protocol, in [`state`].

pub(crate) mod state;
