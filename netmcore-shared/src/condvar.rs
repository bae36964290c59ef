//! The process-shared condition variable: its protocol, in [`state`].

pub(crate) mod state;
