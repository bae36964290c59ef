//! The process-shared mutex: its protocol, in [`state`].

pub(crate) mod state;
