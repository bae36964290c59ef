//! Type-tagged, versioned serialization of values (being written).
#![deny(unsafe_code)]
