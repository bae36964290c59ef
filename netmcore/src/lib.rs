//! netmcore (being written).
#![deny(unsafe_code)]

pub use netmcore_resources::{Inherit, ProcessId, ResId, ResourceKind};
