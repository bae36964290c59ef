//! The error type of the OS layer.

use std::io;

/// What can go wrong in an OS primitive, a channel or the wire protocol.
///
/// Messages are lowercase without a trailing period and name the operation (usually the
/// syscall) and the object it was applied to.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call failed. `op` names the call (e.g. `"shm_open"`), `target` the object
    /// (e.g. the shm name or `"channel"`).
    #[error("{op} {target}: {source}")]
    Os {
        /// The system call or operation, e.g. `"shm_open"`.
        op: &'static str,
        /// The object it was applied to.
        target: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A shm or semaphore name that the OS would not accept or that could be misread.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A wait with a deadline ran out.
    #[error("{op} {target}: timed out")]
    Timeout {
        /// The waiting operation.
        op: &'static str,
        /// The object waited on.
        target: String,
    },
    /// The peer closed its end of a channel (at a frame boundary).
    #[error("channel closed by the peer")]
    Closed,
    /// The peer closed its end, or died, in the middle of a frame.
    #[error("channel closed by the peer in the middle of a frame ({got} of {expected} bytes)")]
    Truncated {
        /// Bytes of the frame received.
        got: usize,
        /// Bytes the frame announced.
        expected: usize,
    },
    /// A frame larger than the channel's limit was sent or announced.
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge {
        /// The frame's length.
        len: u64,
        /// The channel's limit.
        limit: u64,
    },
    /// A message could not be decoded or encoded.
    #[error("{what}: {reason}")]
    Protocol {
        /// What was being decoded, e.g. `"request frame"`.
        what: &'static str,
        /// What was wrong with it.
        reason: String,
    },
    /// An argument outside what a primitive supports, e.g. a misaligned offset into shared
    /// memory or a semaphore value above its maximum.
    #[error("{op} {target}: {reason}")]
    OutOfRange {
        /// The operation, e.g. `"futex semaphore post"`.
        op: &'static str,
        /// The object it was applied to.
        target: String,
        /// What is out of range.
        reason: String,
    },
    // Further variants are appended above this line, one per kind of failure.
}

impl Error {
    /// An [`Error::Os`] from the calling thread's last OS error or an `io::Error`.
    pub(crate) fn os(
        op: &'static str,
        target: impl Into<String>,
        source: impl Into<io::Error>,
    ) -> Error {
        Error::Os {
            op,
            target: target.into(),
            source: source.into(),
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
