//! The master's registry (being written).
