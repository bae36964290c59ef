//! Ends of a structure given away with `into_handle` and not opened yet (channel and pipe
//! ends): each keeps its segment mapped, and the giving process a user of it, until someone
//! opens it or the process ends (DESIGN §7, "Lifetime").

use std::sync::{Arc, Mutex, PoisonError};

use crate::segment::{Layout, Segment};

/// An end given away by this process.
pub(crate) struct Given<E> {
    /// The structure's segment, kept mapped.
    pub(crate) segment: Arc<Segment>,
    /// Its layout.
    pub(crate) layout: Layout,
    /// What names the end in its structure (a channel's ticket, a pipe's side).
    pub(crate) end: E,
    /// The giver's tag, which the end names while it is in transit.
    pub(crate) tag: u32,
    /// The giver's Unix pid: a child forked after the giving is no user through this list.
    pub(crate) pid: u32,
}

/// The ends one module gave away.
pub(crate) struct GivenEnds<E>(Mutex<Vec<Given<E>>>);

impl<E> GivenEnds<E> {
    /// An empty list.
    pub(crate) const fn new() -> GivenEnds<E> {
        GivenEnds(Mutex::new(Vec::new()))
    }

    /// Keeps `given` until it is opened.
    pub(crate) fn hold(&self, given: Given<E>) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(given);
    }

    /// Lets go of the ends that someone opened since (`in_transit` says whether one still
    /// waits), and of those that a parent of this process gave.
    pub(crate) fn sweep(&self, in_transit: impl Fn(&Given<E>) -> bool) {
        let me = std::process::id();
        let opened: Vec<Given<E>> = {
            let mut given = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            let (keep, opened) = std::mem::take(&mut *given)
                .into_iter()
                .partition(|g| g.pid == me && in_transit(g));
            *given = keep;
            opened
        };
        // Dropped with the list unlocked: the last drop of a segment asks the master.
        drop(opened);
    }
}
