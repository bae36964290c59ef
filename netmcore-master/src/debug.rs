//! A global switch for verbose events (the seed's `Debug.enable`).
//!
//! netmcore always logs through [`tracing`]: errors and warnings, and one `info` event per
//! process that ends. With debugging enabled, the master and its workers also emit `debug`
//! events for every request served, every fork and every reply. Which events are shown is
//! still up to the program's `tracing` subscriber.
//!
//! ```
//! netmcore_master::debug::enable(true);
//! assert!(netmcore_master::debug::is_enabled());
//! netmcore_master::debug::enable(false);
//! ```

use std::sync::atomic::{AtomicBool, Ordering};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns the verbose events on or off, in this process and in the workers it forks later.
pub fn enable(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether the verbose events are on.
pub fn is_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// A `tracing::debug!` event that is only emitted when debugging is [enabled](enable).
macro_rules! verbose {
    ($($arg:tt)*) => {
        if $crate::debug::is_enabled() {
            ::tracing::debug!($($arg)*);
        }
    };
}
pub(crate) use verbose;
