//! The error type of the shared structures (DESIGN §7).

use std::ops::Range;

use netmcore_resources::ResId;

use crate::TaskFailure;

/// What can go wrong with a structure in shared memory.
///
/// Messages are lowercase without a trailing period. Errors of the master (no master, an
/// unknown resource, an OS call) pass through unchanged as [`Error::Master`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The master refused or failed a call the structure needed (creating, opening or
    /// releasing its segment), e.g. [`netmcore_master::Error::NotStarted`] or
    /// [`netmcore_master::Error::NoResource`].
    #[error(transparent)]
    Master(#[from] netmcore_master::Error),
    /// A handle or segment of another structure or element type than the one asked for.
    #[error("wrong type: expected {expected}, found {found}")]
    WrongType {
        /// What the caller asked for.
        expected: String,
        /// What the segment holds.
        found: String,
    },
    /// The contents of a segment are not what this library writes: a bad header, an offset or
    /// length out of bounds, a word that no protocol state allows.
    #[error("{id} is corrupt: {what}")]
    Corrupt {
        /// The segment.
        id: ResId,
        /// What was found wrong.
        what: String,
    },
    /// A value or structure larger than its limit, e.g. a message longer than the channel's
    /// `max_message`.
    #[error("too large: {size} bytes exceed the limit of {max} bytes")]
    TooLarge {
        /// The size asked for.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// rkyv could not serialize a value into an [`Archive`](crate::Archive), e.g. an offset
    /// beyond its 32-bit relative pointers.
    #[error("cannot archive the value: {what}")]
    Unarchivable {
        /// rkyv's error.
        what: String,
    },
    /// No room left: a full channel, table or map, or every slot of a fixed table taken.
    #[error("full")]
    Full,
    /// The structure is in use in a way that forbids the call, e.g. `freeze` while claims are
    /// live, or a second open of an end that moved.
    #[error("busy")]
    Busy,
    /// A claim overlaps a live claim of the same vector or matrix.
    #[error("range {requested:?} overlaps the claimed range {held:?}")]
    Overlap {
        /// The range asked for.
        requested: Range<usize>,
        /// The live claim it overlaps.
        held: Range<usize>,
    },
    /// A range or index outside a vector or matrix: a claim of a reversed range or one that
    /// reaches beyond the end, or a row past the last. `requested` is in the units of the
    /// call (elements, or rows for a matrix; `i..i + 1` for a single row), and so is `len`.
    #[error("range {requested:?} is out of bounds of length {len}")]
    OutOfBounds {
        /// The range asked for.
        requested: Range<usize>,
        /// The length it must lie within.
        len: usize,
    },
    /// Reading in place needs a frozen vector or matrix.
    #[error("not frozen")]
    NotFrozen,
    /// Claims are refused once a vector or matrix is frozen.
    #[error("frozen")]
    Frozen,
    /// The other side is gone: no receiver left for a sender, or no sender left for a
    /// receiver once the queue is empty.
    #[error("disconnected")]
    Disconnected,
    /// A wait with a timeout ran out.
    #[error("timed out")]
    Timeout,
    /// A process that had the barrier open died before the round completed.
    #[error("broken: a participant died")]
    Broken,
    /// A task of a pool failed; `index` is its position in the input.
    #[error("task {index} failed: {failure}")]
    Task {
        /// The position of the task in the input.
        index: usize,
        /// How it failed.
        failure: TaskFailure,
    },
}

/// The result of the shared structures' calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_lowercase_without_a_period() {
        let errors = [
            Error::Master(netmcore_master::Error::NotStarted),
            Error::WrongType {
                expected: "Mutex<u64>".to_owned(),
                found: "SharedVec<u8>".to_owned(),
            },
            Error::Corrupt {
                id: ResId(7),
                what: "bad magic".to_owned(),
            },
            Error::TooLarge { size: 9, max: 8 },
            Error::Full,
            Error::Busy,
            Error::Overlap {
                requested: 0..4,
                held: 2..6,
            },
            Error::NotFrozen,
            Error::Frozen,
            Error::OutOfBounds {
                requested: 3..5,
                len: 4,
            },
            Error::Disconnected,
            Error::Timeout,
            Error::Broken,
            Error::Task {
                index: 3,
                failure: TaskFailure::Panicked("boom".to_owned()),
            },
        ];
        for e in &errors {
            let text = e.to_string();
            assert!(!text.ends_with('.'), "{text}");
            assert!(
                !text.starts_with(|c: char| c.is_ascii_uppercase()),
                "{text}"
            );
        }
        assert_eq!(errors[2].to_string(), "resource 7 is corrupt: bad magic");
        assert_eq!(
            errors[6].to_string(),
            "range 0..4 overlaps the claimed range 2..6"
        );
        assert_eq!(
            errors[9].to_string(),
            "range 3..5 is out of bounds of length 4"
        );
        assert_eq!(
            errors[13].to_string(),
            "task 3 failed: the task panicked: boom"
        );
        assert_eq!(
            errors[0].to_string(),
            netmcore_master::Error::NotStarted.to_string()
        );
    }

    #[test]
    fn master_errors_convert() {
        fn fails() -> Result<()> {
            Err(netmcore_master::Error::MasterGone)?
        }
        assert!(matches!(
            fails(),
            Err(Error::Master(netmcore_master::Error::MasterGone))
        ));
    }
}
