//! Unix stream sockets: socketpairs, `sendmsg`/`recvmsg` with `SCM_RIGHTS`, peer credentials,
//! `poll` on one descriptor, and a listening socket at a path.
//!
//! # Safety
//!
//! This module holds no `unsafe` code: every call goes through rustix's safe wrappers, which
//! take `BorrowedFd`/`OwnedFd` and build the `msghdr` and its control messages themselves (no
//! hand-built `cmsg` as in servo/ipc-channel). File descriptors received with `SCM_RIGHTS`
//! arrive as `OwnedFd` and are closed when dropped, so none can leak; the receive buffer for
//! control messages is sized for [`MAX_FDS_PER_MESSAGE`] descriptors, and a message that
//! brought more is reported through [`Received::fds_truncated`] (the kernel has closed the
//! excess ones).

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::io::Errno;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
    UCred,
};

/// The most descriptors one `recvmsg` accepts; more are truncated by the kernel.
pub(crate) const MAX_FDS_PER_MESSAGE: usize = 32;

/// `socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)`: two connected, anonymous stream
/// sockets.
///
/// # Errors
///
/// The OS error of `socketpair` (e.g. `EMFILE`).
#[doc(alias = "socketpair")]
pub(crate) fn stream_pair() -> rustix::io::Result<(OwnedFd, OwnedFd)> {
    rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
}

/// `getsockopt(SO_DOMAIN)` and `getsockopt(SO_TYPE)`: whether `fd` is a Unix stream socket.
///
/// # Errors
///
/// `ENOTSOCK` when `fd` is not a socket, or another OS error of `getsockopt`.
#[doc(alias = "getsockopt")]
pub(crate) fn is_unix_stream(fd: BorrowedFd<'_>) -> rustix::io::Result<bool> {
    Ok(
        rustix::net::sockopt::socket_domain(fd)? == AddressFamily::UNIX
            && rustix::net::sockopt::socket_type(fd)? == SocketType::STREAM,
    )
}

/// `sendmsg(fd, iov, SCM_RIGHTS(fds), MSG_NOSIGNAL [| MSG_DONTWAIT])`: sends the bytes of
/// `iov` in order, with `fds` attached to the first byte sent.
///
/// Returns how many bytes the kernel took, which may be fewer than offered (a signal or a full
/// buffer); the descriptors travel with the first call that sends at least one byte. A closed
/// peer is `EPIPE`, never `SIGPIPE`.
///
/// # Errors
///
/// The OS error of `sendmsg`: `EAGAIN` when `nonblocking` and the buffer is full, `EINTR`,
/// `EPIPE`, `ECONNRESET`, `ETOOMANYREFS`, ….
#[doc(alias = "sendmsg")]
pub(crate) fn send(
    fd: BorrowedFd<'_>,
    iov: &[IoSlice<'_>],
    fds: &[BorrowedFd<'_>],
    nonblocking: bool,
) -> rustix::io::Result<usize> {
    let mut flags = SendFlags::NOSIGNAL;
    if nonblocking {
        flags |= SendFlags::DONTWAIT;
    }
    if fds.is_empty() {
        return rustix::net::sendmsg(fd, iov, &mut SendAncillaryBuffer::default(), flags);
    }
    let mut space = vec![MaybeUninit::<u8>::uninit(); SendAncillaryMessage::ScmRights(fds).size()];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(Errno::NOBUFS);
    }
    rustix::net::sendmsg(fd, iov, &mut control, flags)
}

/// What one [`recv`] brought.
#[derive(Debug)]
pub(crate) struct Received {
    /// Bytes written to the buffer; 0 is end of stream.
    pub(crate) bytes: usize,
    /// The descriptors that came with these bytes (`SCM_RIGHTS`, close-on-exec).
    pub(crate) fds: Vec<OwnedFd>,
    /// The kernel dropped control data that did not fit (`MSG_CTRUNC`): descriptors were lost.
    pub(crate) fds_truncated: bool,
}

/// `recvmsg(fd, buf, MSG_CMSG_CLOEXEC [| MSG_DONTWAIT])`: reads up to `buf.len()` bytes and
/// the descriptors attached to them.
///
/// On a stream socket, Linux never returns the descriptors of two `sendmsg` calls in one
/// `recvmsg`: it stops right after the bytes whose descriptors it delivered, and those
/// descriptors belong to the first byte of that `sendmsg` call.
///
/// # Errors
///
/// The OS error of `recvmsg`: `EAGAIN` when `nonblocking` and nothing is there, `EINTR`,
/// `ECONNRESET`, ….
#[doc(alias = "recvmsg")]
pub(crate) fn recv(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    nonblocking: bool,
) -> rustix::io::Result<Received> {
    let mut space =
        [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MESSAGE))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut flags = RecvFlags::CMSG_CLOEXEC;
    if nonblocking {
        flags |= RecvFlags::DONTWAIT;
    }
    let msg = rustix::net::recvmsg(fd, &mut [IoSliceMut::new(buf)], &mut control, flags)?;
    let mut fds = Vec::new();
    for message in control.drain() {
        // Credentials and other messages are dropped here; only descriptors are kept.
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    Ok(Received {
        bytes: msg.bytes,
        fds,
        fds_truncated: msg.flags.contains(ReturnFlags::CTRUNC),
    })
}

/// `getsockopt(fd, SOL_SOCKET, SO_PEERCRED)`: the pid, uid and gid of the process that
/// connected the peer end of a Unix socket (for a socketpair: the process that created it).
///
/// # Errors
///
/// The OS error of `getsockopt`, e.g. `ENOTSOCK`.
#[doc(alias = "SO_PEERCRED")]
pub(crate) fn peer_credentials(fd: BorrowedFd<'_>) -> rustix::io::Result<UCred> {
    rustix::net::sockopt::socket_peercred(fd)
}

/// `poll([{fd, events}], timeout)`: waits until `fd` is readable (`writable == false`) or
/// writable, or has hung up or failed. `None` waits forever. Returns false on timeout.
///
/// # Errors
///
/// The OS error of `poll`, including `EINTR` (the caller retries).
#[doc(alias = "poll")]
pub(crate) fn wait(
    fd: BorrowedFd<'_>,
    writable: bool,
    timeout: Option<Duration>,
) -> rustix::io::Result<bool> {
    let events = if writable {
        PollFlags::OUT
    } else {
        PollFlags::IN
    };
    let mut fds = [PollFd::from_borrowed_fd(fd, events)];
    let timeout = timeout.map(|t| Timespec {
        tv_sec: t.as_secs().try_into().unwrap_or(i64::MAX),
        tv_nsec: t.subsec_nanos().into(),
    });
    Ok(poll(&mut fds, timeout.as_ref())? > 0)
}

/// `socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK)`, `bind(path)`,
/// `listen(backlog)`: a non-blocking listening socket at `path`.
///
/// # Errors
///
/// The OS error of the failing call and its name: `EADDRINUSE` from `bind` when `path`
/// exists, `ENAMETOOLONG` when it does not fit a `sockaddr_un`, ….
#[doc(alias = "bind")]
#[doc(alias = "listen")]
pub(crate) fn listen_at(path: &Path, backlog: i32) -> Result<OwnedFd, (&'static str, Errno)> {
    let addr = SocketAddrUnix::new(path).map_err(|e| ("sockaddr_un", e))?;
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .map_err(|e| ("socket", e))?;
    rustix::net::bind(&fd, &addr).map_err(|e| ("bind", e))?;
    rustix::net::listen(&fd, backlog).map_err(|e| ("listen", e))?;
    Ok(fd)
}

/// `socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC)` and `connect(path)`: a blocking stream
/// socket connected to the listener at `path`. `connect` is retried on `EINTR`.
///
/// # Errors
///
/// The OS error of the failing call and its name: `ENOENT` or `ECONNREFUSED` from `connect`
/// when nobody listens there, `EACCES`, ….
#[doc(alias = "connect")]
pub(crate) fn connect_to(path: &Path) -> Result<OwnedFd, (&'static str, Errno)> {
    let addr = SocketAddrUnix::new(path).map_err(|e| ("sockaddr_un", e))?;
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| ("socket", e))?;
    loop {
        match rustix::net::connect(&fd, &addr) {
            Ok(()) => return Ok(fd),
            Err(Errno::INTR) => {}
            Err(e) => return Err(("connect", e)),
        }
    }
}

/// `accept4(fd, SOCK_CLOEXEC)`: the next pending connection, as a blocking socket.
///
/// # Errors
///
/// The OS error of `accept4`: `EAGAIN` when none is pending (the listener is non-blocking),
/// `EINTR`, `ECONNABORTED`, `EMFILE`, ….
#[doc(alias = "accept4")]
pub(crate) fn accept(fd: BorrowedFd<'_>) -> rustix::io::Result<OwnedFd> {
    rustix::net::accept_with(fd, SocketFlags::CLOEXEC)
}

/// `chmod(path, mode)`: sets the permission bits of a socket file.
///
/// # Errors
///
/// The OS error of `chmod`.
pub(crate) fn chmod(path: &Path, mode: u32) -> rustix::io::Result<()> {
    rustix::fs::chmod(path, rustix::fs::Mode::from_raw_mode(mode))
}

/// `getuid()`: the real user id of the calling process.
#[doc(alias = "getuid")]
pub(crate) fn current_uid() -> u32 {
    rustix::process::getuid().as_raw()
}
