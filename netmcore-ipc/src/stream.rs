//! Byte streams through a pipe: how a large run of bytes goes from one process to another
//! without being copied before it is read, and read straight into the buffer that keeps it.
//!
//! [`stream`] makes a pipe as large as the system lets an unprivileged process have (1 MiB by
//! default). The [`Writer`] hands the reader most of the bytes by reference (`vmsplice`: the
//! pipe holds the writer's pages, and the reader's `read` is the only copy) and copies only
//! the last pipe's worth with `write`. When that last write returns, the reader has read
//! every page handed by reference, so the caller may change or free its bytes as soon as
//! [`Writer::write_all`] returns. The [`Reader`] reads a known length into a buffer of that
//! size, prepared for a large buffer as `netmcore-encap`'s
//! [`buffer_with_capacity`](netmcore_encap::buffer_with_capacity) prepares it.
//!
//! A reader that is gone makes `write_all` fail with [`Error::Closed`] (never a `SIGPIPE`); a
//! writer that is gone before the end makes `read_exact` fail with [`Error::Truncated`].
//!
//! ```
//! use netmcore_ipc::stream;
//!
//! let (mut reader, mut writer) = stream::stream()?;
//! let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
//! let sender = std::thread::spawn(move || writer.write_all(&data).map(|()| data));
//! let received = reader.read_exact(3_000_000)?;
//! assert_eq!(received, sender.join().unwrap()?);
//! # Ok::<(), netmcore_ipc::Error>(())
//! ```

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::OFlags;
use rustix::io::Errno;
use rustix::pipe::PipeFlags;

use crate::error::{Error, Result};
use crate::sys::pipe::{splice_in, without_sigpipe};

/// The capacity asked for a new pipe: 1 MiB, the default most an unprivileged process may set
/// (`/proc/sys/fs/pipe-max-size`).
pub const PIPE_CAPACITY: usize = 1 << 20;

const TARGET: &str = "stream";

/// The sending end of a [`stream`].
#[derive(Debug)]
pub struct Writer {
    fd: OwnedFd,
    /// The pipe's capacity in bytes, as the kernel reported it.
    capacity: usize,
}

/// The receiving end of a [`stream`].
#[derive(Debug)]
pub struct Reader {
    fd: OwnedFd,
}

/// A new pipe (close-on-exec), enlarged to [`PIPE_CAPACITY`] when the system allows it.
///
/// # Errors
///
/// [`Error::Os`] when the pipe cannot be made.
pub fn stream() -> Result<(Reader, Writer)> {
    let (read, write) =
        rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(|e| Error::os("pipe2", TARGET, e))?;
    // A smaller pipe only makes the stream slower (a user over its pipe budget gets one page).
    let _ = rustix::pipe::fcntl_setpipe_size(&write, PIPE_CAPACITY);
    let capacity = rustix::pipe::fcntl_getpipe_size(&write)
        .map_err(|e| Error::os("fcntl(F_GETPIPE_SZ)", TARGET, e))?;
    Ok((
        Reader { fd: read },
        Writer {
            fd: write,
            capacity,
        },
    ))
}

impl Writer {
    /// Sends all of `bytes`, blocking while the pipe is full, and returns once the pipe no
    /// longer refers to them: the reader has read all but the last pipe's worth, which was
    /// copied.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the reader's end is closed (its process died, say), before or
    /// during the call: nobody can read the pipe any more. [`Error::Os`] when a `write`
    /// fails otherwise (out of memory, say): bytes lent before may then still be in the pipe,
    /// to be read after the caller changes them, so the stream must be abandoned (the writer
    /// dropped, which the reader sees as a stream cut short).
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        let by_reference = bytes.len().saturating_sub(self.capacity);
        let (referenced, copied) = bytes.split_at(by_reference);
        let broken = |outcome: &Result<()>| matches!(outcome, Err(Error::Closed));
        let lend_and_copy = || {
            let mut rest = referenced;
            while !rest.is_empty() {
                match splice_in(self.fd.as_fd(), rest) {
                    Ok(n) => rest = rest.get(n..).unwrap_or_default(),
                    Err(Errno::INTR) => {}
                    Err(Errno::PIPE) => return Err(Error::Closed),
                    // `vmsplice` refused or failed (a filter, no memory): copy the rest, whose
                    // tail still ensures that nothing lent stays in the pipe.
                    Err(_) => break,
                }
            }
            // The last pipe's worth is copied: when it is all in, every page put in by
            // reference has been read (the pipe holds no more than its capacity).
            let mut rest = if rest.is_empty() {
                copied
            } else {
                &bytes[by_reference - rest.len()..]
            };
            while !rest.is_empty() {
                match rustix::io::write(&self.fd, rest) {
                    Ok(n) => rest = rest.get(n..).unwrap_or_default(),
                    Err(Errno::INTR) => {}
                    Err(e) => return Err(write_error("write", e)),
                }
            }
            Ok(())
        };
        without_sigpipe(lend_and_copy, broken)
    }

    /// The pipe's capacity in bytes.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

fn write_error(op: &'static str, e: Errno) -> Error {
    if e == Errno::PIPE {
        Error::Closed
    } else {
        Error::os(op, TARGET, e)
    }
}

impl Reader {
    /// Takes over `fd`, which must be a blocking read-only end of a pipe (one received from
    /// another process, say). Checked without asking any file system: `F_GETPIPE_SZ` answers
    /// for pipes only, and `F_GETFL` gives the access mode.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] when `fd` is not a pipe, is open for writing, or is non-blocking.
    pub fn from_fd(fd: OwnedFd) -> Result<Reader> {
        let refuse = |reason: &str| Error::Protocol {
            what: "stream descriptor",
            reason: reason.to_owned(),
        };
        if rustix::pipe::fcntl_getpipe_size(&fd).is_err() {
            return Err(refuse("not a pipe"));
        }
        let flags =
            rustix::fs::fcntl_getfl(&fd).map_err(|e| Error::os("fcntl(F_GETFL)", TARGET, e))?;
        if flags.contains(OFlags::NONBLOCK) {
            return Err(refuse("a non-blocking pipe"));
        }
        if flags.intersects(OFlags::WRONLY | OFlags::RDWR) {
            return Err(refuse("not the read end of a pipe (open for writing)"));
        }
        Ok(Reader { fd })
    }

    /// Reads exactly `len` bytes into a new vector of that capacity (see the
    /// [module docs](self)), blocking until they are in.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] when the writer's end is closed before `len` bytes came (its
    /// process died, say); [`Error::Os`] when a read fails.
    pub fn read_exact(&mut self, len: usize) -> Result<Vec<u8>> {
        let mut buffer = netmcore_encap::buffer_with_capacity(len);
        while buffer.len() < len {
            match rustix::io::read(&self.fd, rustix::buffer::spare_capacity(&mut buffer)) {
                Ok(0) => {
                    return Err(Error::Truncated {
                        got: buffer.len(),
                        expected: len,
                    });
                }
                Ok(_) => {}
                Err(Errno::INTR) => {}
                Err(e) => return Err(Error::os("read", TARGET, e)),
            }
        }
        // A buffer with more room than asked may have taken more than `len` bytes.
        if buffer.len() > len {
            return Err(Error::Protocol {
                what: "stream",
                reason: format!("more than the {len} bytes announced"),
            });
        }
        Ok(buffer)
    }
}

impl AsFd for Writer {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsFd for Reader {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<Reader> for OwnedFd {
    fn from(reader: Reader) -> OwnedFd {
        reader.fd
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn a_large_run_arrives_whole() {
        let (mut reader, mut writer) = stream().unwrap();
        assert!(writer.capacity() >= 4096);
        let data = pattern(7 << 20 | 123);
        let expected = data.clone();
        let sender = std::thread::spawn(move || writer.write_all(&data));
        assert_eq!(reader.read_exact(expected.len()).unwrap(), expected);
        sender.join().unwrap().unwrap();
    }

    #[test]
    fn a_short_run_is_copied_in_one_write() {
        let (mut reader, mut writer) = stream().unwrap();
        writer.write_all(b"short").unwrap();
        drop(writer);
        assert_eq!(reader.read_exact(5).unwrap(), b"short");
        assert_eq!(reader.read_exact(0).unwrap(), b"");
    }

    #[test]
    fn the_writers_bytes_are_free_once_write_all_returns() {
        let (mut reader, mut writer) = stream().unwrap();
        let capacity = writer.capacity();
        let len = 4 * capacity + 1000;
        let expected = pattern(len);
        let (returned, has_returned) = mpsc::channel();
        let mut data = expected.clone();
        let sender = std::thread::spawn(move || {
            writer.write_all(&data).unwrap();
            // Were the pipe still to refer to these pages, the reader would see this.
            data.fill(0xff);
            returned.send(()).unwrap();
            data
        });
        let mut got = reader.read_exact(len - capacity).unwrap();
        // With the pages read, the rest fits in the pipe: the writer returns.
        has_returned
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("write_all returns once all but a pipe's worth is read");
        got.extend(reader.read_exact(capacity).unwrap());
        assert!(
            got == expected,
            "the reader saw bytes changed after write_all returned"
        );
        assert!(sender.join().unwrap().iter().all(|&b| b == 0xff));
    }

    #[test]
    fn a_gone_reader_is_closed_for_the_writer() {
        let (reader, mut writer) = stream().unwrap();
        drop(reader);
        assert!(matches!(
            writer.write_all(&pattern(3 << 20)),
            Err(Error::Closed)
        ));
        assert!(matches!(writer.write_all(b"x"), Err(Error::Closed)));
    }

    #[test]
    fn a_reader_that_goes_in_the_middle_ends_the_write() {
        let (mut reader, mut writer) = stream().unwrap();
        let len = 8 * writer.capacity();
        let sender = std::thread::spawn(move || writer.write_all(&pattern(len)));
        assert_eq!(reader.read_exact(len / 4).unwrap(), pattern(len)[..len / 4]);
        drop(reader);
        assert!(matches!(sender.join().unwrap(), Err(Error::Closed)));
    }

    #[test]
    fn a_gone_writer_truncates_the_run() {
        let (mut reader, mut writer) = stream().unwrap();
        writer.write_all(&pattern(10_000)).unwrap();
        drop(writer);
        match reader.read_exact(20_000) {
            Err(Error::Truncated { got, expected }) => {
                assert_eq!((got, expected), (10_000, 20_000))
            }
            other => panic!("expected a truncated stream, got {other:?}"),
        }
    }

    #[test]
    fn only_a_pipe_is_taken_as_a_reader() {
        let memfd = crate::memfd::Memfd::from_bytes("not a pipe", b"x").unwrap();
        let fd: OwnedFd = memfd.as_fd().try_clone_to_owned().unwrap();
        assert!(matches!(Reader::from_fd(fd), Err(Error::Protocol { .. })));
        let (reader, writer) = stream().unwrap();
        let fd: OwnedFd = reader.into();
        assert!(Reader::from_fd(fd).is_ok());
        // The write end, and a non-blocking read end, are refused.
        let write_end = writer.fd.try_clone().unwrap();
        assert!(matches!(
            Reader::from_fd(write_end),
            Err(Error::Protocol { .. })
        ));
        let (read, _write) = rustix::pipe::pipe_with(PipeFlags::NONBLOCK).unwrap();
        assert!(matches!(Reader::from_fd(read), Err(Error::Protocol { .. })));
    }
}
