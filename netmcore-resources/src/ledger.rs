//! The on-disk ledger (being written).
