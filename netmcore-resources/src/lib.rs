//! Ids, resource kinds, the registry state machine and the on-disk ledger of netmcore.
//!
//! (Crate docs with an opening example are written together with the registry and ledger.)
#![deny(unsafe_code)]

mod ids;
pub mod ledger;
pub mod registry;

pub use ids::{Inherit, ProcessId, ResId, ResourceDesc, ResourceKind};
