//! Waiting in a structure: the liveness of peers from the master's death board, and sleeping
//! on a structure's own word and the board's epoch together.
//!
//! Every blocking call loops the same way: read the epoch ([`Watch::epoch`]), take a step of
//! the structure's protocol (which checks the peers it waits for with [`Watch`] as its
//! [`Peers`]), and, if the step says so, [`Watch::park`] on the word *and* the epoch. A death
//! that the step did not see moves the epoch, so the sleep ends at once and the next step
//! sees it. Before `startup` there is no board: the program is alone, and nobody it could wait
//! for can end without it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use netmcore_ipc::death_board::DeathBoard;

use crate::protocol::{MASTER_TAG, Peers};
use crate::sys::{self, Woke};
use crate::{Error, Result};

/// How long a sleep lasts at most when the kernel cannot wait on two words (`futex_waitv`
/// needs Linux 5.16): the board is then polled this often.
const POLL: Duration = Duration::from_millis(20);

/// The death board, as a waiter sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Watch {
    board: Option<DeathBoard>,
}

impl Watch {
    /// The board of this program, if `startup` made one.
    #[inline]
    pub(crate) fn new() -> Watch {
        Watch {
            board: netmcore_master::death_board(),
        }
    }

    /// The board's epoch now (read with `Acquire`, before the liveness checks of a step).
    #[inline]
    pub(crate) fn epoch(&self) -> Option<u32> {
        self.board.map(|b| b.epoch().load(Ordering::Acquire))
    }

    /// Sleeps while `word` holds `expected` and the board's epoch is still `epoch`, until
    /// `deadline` at the latest; may return early for any reason (the caller steps again).
    /// Returns `false` when the deadline has passed.
    pub(crate) fn park(
        &self,
        word: &AtomicU32,
        expected: u32,
        epoch: Option<u32>,
        deadline: Option<Instant>,
    ) -> bool {
        self.park_on(&[(word, expected)], epoch, deadline)
    }

    /// Sleeps while every word of `words` (one to three) holds its expected value and the
    /// board's epoch is still `epoch`, until `deadline` at the latest; as [`Watch::park`].
    pub(crate) fn park_on(
        &self,
        words: &[(&AtomicU32, u32)],
        epoch: Option<u32>,
        deadline: Option<Instant>,
    ) -> bool {
        let timeout = match deadline {
            Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Some(left),
                _ => return false,
            },
            None => None,
        };
        let Some(&(first, first_expected)) = words.first() else {
            return true;
        };
        let mut all: Vec<(&AtomicU32, u32)> = Vec::with_capacity(words.len() + 1);
        all.extend_from_slice(words);
        if let (Some(board), Some(epoch)) = (self.board, epoch) {
            all.push((board.epoch(), epoch));
        }
        let woke = if all.len() == 1 {
            sys::futex_wait(first, first_expected, timeout)
        } else {
            match sys::futex_waitv(&all, timeout) {
                Ok(woke) => Ok(woke),
                // No futex_waitv: sleep on the first word, and watch the others by polling.
                Err(_) => sys::futex_wait(
                    first,
                    first_expected,
                    Some(timeout.map_or(POLL, |t| t.min(POLL))),
                ),
            }
        };
        match woke {
            Ok(Woke::TimedOut) => deadline.is_none_or(|d| Instant::now() < d),
            // An error of the wait itself (none is expected on a valid word): step again
            // rather than sleep, after a pause that keeps a broken futex from spinning.
            Err(_) => {
                std::thread::sleep(Duration::from_millis(1));
                true
            }
            Ok(Woke::Early) => true,
        }
    }
}

/// A process that never existed holds nothing: a tag the master never issued is as good as
/// dead (a word that names it is corrupt, and whoever meets it takes it over). Before
/// `startup` the program is alone, so every tag but its own ([`MASTER_TAG`]) is such a tag.
impl Peers for Watch {
    fn is_dead(&self, tag: u32) -> bool {
        if tag == MASTER_TAG || tag == crate::protocol::NOBODY {
            return false;
        }
        match self.board {
            Some(board) => board.is_dead(tag) || !board.was_issued(tag),
            None => true,
        }
    }
}

/// The liveness of the holders of a lock that a process takes under its segment's local
/// lock (a table's lock, a channel's ends lock): the death board, and this process itself.
/// No other thread of this process can hold such a lock while one goes for it, so a lock word
/// that names this process then names no live holder (a scribble, or a word left by a thread
/// that panicked): it is taken over, not waited for.
pub(crate) struct Holders {
    pub(crate) watch: Watch,
    pub(crate) me: u32,
}

impl Peers for Holders {
    fn is_dead(&self, tag: u32) -> bool {
        tag == self.me || self.watch.is_dead(tag)
    }
}

/// The tag of the calling process (see `netmcore_master::self_tag`).
///
/// # Errors
///
/// [`Error::Master`] for a worker beyond the tags or whose master is gone.
#[inline]
pub(crate) fn own_tag() -> Result<u32> {
    netmcore_master::self_tag().map_err(Error::Master)
}

/// The tag of the calling process for calls that cannot fail: a worker with no tag (which
/// takes a billion processes) acts as the master's tag, which never dies.
#[inline]
pub(crate) fn own_tag_or_master() -> u32 {
    own_tag().unwrap_or(MASTER_TAG)
}
