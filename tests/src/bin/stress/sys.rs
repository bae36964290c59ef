//! Raw writes to this worker's channel to the master, for the hostile-peer actions.
//!
//! # Safety
//!
//! [`write_all`] borrows a descriptor by its number. That is sound only while the descriptor
//! stays open for the whole call. The caller found it in `/proc/self/fd` just before, and
//! runs in a worker's process body, which is single-threaded (netmcore runs a body on the
//! worker's main thread and neither it nor the stress bodies start threads), so nothing else
//! can close it or reuse the number meanwhile.

use std::io;
use std::os::fd::{BorrowedFd, RawFd};

/// `write(fd, bytes)` until every byte is written, retrying after `EINTR`.
///
/// # Errors
///
/// The error of `write` (e.g. `EPIPE` once the master closed the channel).
pub fn write_all(fd: RawFd, mut bytes: &[u8]) -> io::Result<()> {
    // SAFETY: `fd` is open for the whole call (see the module's contract), and the borrow
    // does not outlive the call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    while !bytes.is_empty() {
        match rustix::io::write(fd, bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
