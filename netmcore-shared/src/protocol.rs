//! What the state machines share: the tags that name processes in shared memory, the
//! liveness of peers, what a step asks of the futex, and the report of a word that no
//! protocol state allows.
//!
//! # Tags
//!
//! Every process is named in a shared word by a 30-bit *tag*: `0` is nobody, `pid + 1` is
//! `ProcessId(pid)` (for `pid < 2^30 - 2`; see `netmcore_ipc::death_board::tag_of`), and
//! [`MASTER_TAG`] is the master and the code that runs before startup, which never dies while
//! a structure exists. Bits 30 and 31 of a word that holds a tag are free for the protocols'
//! flags.

use netmcore_resources::ResId;

use crate::Error;

// The tags are the death board's (netmcore-ipc), which the master marks: one definition.
pub(crate) use netmcore_ipc::death_board::{MASTER_TAG, NO_TAG as NOBODY};

/// The bits of a word that hold a tag.
pub(crate) const TAG_MASK: u32 = MASTER_TAG;

/// Whether `word` is a tag and nothing else (no flag bits).
pub(crate) fn is_tag(word: u32) -> bool {
    word & !TAG_MASK == 0
}

/// The liveness of the processes that share a structure: the master's death board, or in the
/// models and tests a simulation of it.
pub(crate) trait Peers {
    /// Whether the process named by `tag` has ended. Never true for [`NOBODY`] or
    /// [`MASTER_TAG`].
    fn is_dead(&self, tag: u32) -> bool;
}

/// Peers when there is no board (before startup, or a single process): nobody ever dies.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NoDeaths;

impl Peers for NoDeaths {
    fn is_dead(&self, _tag: u32) -> bool {
        false
    }
}

/// What a step asks the caller to wake on the word it changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a step that found sleepers must wake them"]
pub(crate) enum Wake {
    /// Nobody can be asleep on it.
    None,
    /// One sleeper.
    One,
    /// Every sleeper.
    All,
}

/// A word read from shared memory that no state of its protocol allows: the segment is
/// corrupt (or written by something else than this library).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadState {
    /// Which word, and why it is wrong.
    pub(crate) what: &'static str,
    /// The value found.
    pub(crate) value: u64,
}

impl BadState {
    /// The report of `value` found in the word described by `what`.
    pub(crate) fn new(what: &'static str, value: impl Into<u64>) -> BadState {
        BadState {
            what,
            value: value.into(),
        }
    }

    /// The error of the segment `id`: [`Error::Corrupt`] naming the word and the value.
    pub(crate) fn into_error(self, id: ResId) -> Error {
        Error::Corrupt {
            id,
            what: format!("{} (found {:#x})", self.what, self.value),
        }
    }
}

#[cfg(test)]
mod tests {
    use netmcore_ipc::death_board::tag_of;
    use netmcore_resources::ProcessId;

    use super::*;

    #[test]
    fn tags_name_processes() {
        assert_eq!(tag_of(ProcessId(0)), Some(1));
        assert_eq!(tag_of(ProcessId(41)), Some(42));
        let last = u64::from(MASTER_TAG) - 2;
        assert_eq!(tag_of(ProcessId(last)), Some(MASTER_TAG - 1));
        assert_eq!(tag_of(ProcessId(last + 1)), None);
        assert_eq!(tag_of(ProcessId(u64::MAX)), None);
        assert!(is_tag(NOBODY) && is_tag(MASTER_TAG) && is_tag(7));
        assert!(!is_tag(1 << 30) && !is_tag(1 << 31 | 7));
        assert!(!NoDeaths.is_dead(3));
    }

    #[test]
    fn bad_states_are_corrupt_errors() {
        let e =
            BadState::new("mutex word with a reserved bit", 0x4000_0001u32).into_error(ResId(4));
        assert_eq!(
            e.to_string(),
            "resource 4 is corrupt: mutex word with a reserved bit (found 0x40000001)"
        );
    }
}
