//! The claims table of `SharedVec` and `SharedMatrix`: its protocol, in [`state`].

pub(crate) mod state;
