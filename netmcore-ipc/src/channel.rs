//! Framed channels over Unix stream sockets, with file-descriptor passing.
//!
//! ```
//! use netmcore_ipc::channel::Channel;
//! use netmcore_ipc::memfd::Memfd;
//! use std::os::fd::AsFd;
//!
//! let (mut master, mut worker) = Channel::pair()?;
//! worker.send(b"ping")?;
//! assert_eq!(master.recv()?.body(), b"ping");
//!
//! // A descriptor travels with a frame; the receiver owns its copy.
//! let memfd = Memfd::from_bytes("note", b"in memory")?;
//! master.send_with_fds(b"see fd", &[memfd.as_fd()])?;
//! let mut frame = worker.recv()?;
//! let received = Memfd::from_fd(frame.take_fds().remove(0))?;
//! assert_eq!(received.read_to_vec()?, b"in memory");
//!
//! // A large body goes through a sealed memfd instead of the socket, transparently.
//! let big = vec![7u8; 1 << 20];
//! master.send(&big)?;
//! let frame = worker.recv()?;
//! assert!(frame.is_memfd());
//! assert_eq!(frame.body(), &big[..]);
//!
//! // Non-blocking receive for a poll loop: `None` means "nothing complete yet".
//! assert!(master.try_recv()?.is_none());
//! drop(worker);
//! assert!(matches!(master.recv(), Err(netmcore_ipc::Error::Closed)));
//! # Ok::<(), netmcore_ipc::Error>(())
//! ```
//!
//! A [`Channel`] is one end of a connected Unix stream socket, usually half of an anonymous
//! socketpair made with [`Channel::pair`] before a `fork` (each side keeps one end). It carries
//! length-prefixed **frames**: a body of bytes plus up to [`MAX_FDS`] file descriptors.
//!
//! # Frame layout
//!
//! Every frame starts with an 8-byte header, integers little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | magic, `0x4E` (`'N'`) |
//! | 1 | 1 | protocol version, [`PROTOCOL_VERSION`] |
//! | 2 | 1 | flags: bit 0 = the body is in a memfd; the other bits must be 0 |
//! | 3 | 1 | number of descriptors attached, at most [`MAX_FDS`] + 1 |
//! | 4 | 4 | body length `len` (`u32`) |
//!
//! Without the memfd flag, `len` body bytes follow the header on the socket, and `len` is at
//! most the receiver's frame limit (default [`DEFAULT_FRAME_LIMIT`], 16 MiB). With it, nothing
//! follows: the first attached descriptor is a memfd sealed against writing and shrinking
//! whose first `len` bytes are the body (at most the memfd limit, default
//! [`DEFAULT_MEMFD_LIMIT`]); the receiver maps it read-only instead of copying it through the
//! socket. A sender puts every body larger than its threshold (default
//! [`DEFAULT_MEMFD_THRESHOLD`], 64 KiB) in a memfd, so the socket never carries large frames.
//!
//! Descriptors are attached (`SCM_RIGHTS`) to the first byte of their frame: Linux hands them
//! to the `recvmsg` call that reads that byte and never mixes the descriptors of two frames in
//! one call, so the receiver knows which frame they belong to. Received descriptors are
//! close-on-exec (`MSG_CMSG_CLOEXEC`) and owned (`OwnedFd`) from the moment they arrive: the
//! ones of a rejected frame, and any that no frame announced, are closed, never leaked.
//!
//! # Blocking and non-blocking use
//!
//! A worker uses the blocking [`send`](Channel::send) and [`recv`](Channel::recv). The
//! master's single-threaded poll loop polls [`as_fd`](AsFd::as_fd) for `POLLIN` and then
//! calls [`try_recv`](Channel::try_recv) **until it returns `Ok(None)`** (several frames may
//! arrive in one read); a peer that sent half a frame never blocks it. Replies that must not
//! block go through [`queue`](Channel::queue) and [`flush`](Channel::flush), with `POLLOUT`
//! polled while [`has_pending_output`](Channel::has_pending_output) is true. Queued output is
//! sent only by `queue`, `flush` and the blocking sends (which flush it first), never by a
//! receive.
//!
//! Descriptors: [`send_with_fds`](Channel::send_with_fds) borrows them (the kernel takes its
//! own reference, the caller's stay open); [`queue`](Channel::queue) takes ownership until
//! they are sent; a received [`Frame`] owns its descriptors, and dropping it closes them.
//!
//! The end of the stream at a frame boundary is [`Error::Closed`]; in the middle of a frame it
//! is [`Error::Truncated`]. A malformed or oversized frame is [`Error::Protocol`] or
//! [`Error::FrameTooLarge`], after which the channel only returns errors: close it. A
//! well-formed frame whose body is not the expected message ([`recv_msg`](Channel::recv_msg))
//! is an [`Error::Protocol`] too, but the stream stays usable (the frame is consumed); the
//! master's rule is to close the channel of a worker that sends one all the same.

use std::collections::VecDeque;
use std::fmt;
use std::io::IoSlice;
use std::ops::Deref;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::io::Errno;

use crate::memfd::{Memfd, MemfdMap};
use crate::sys::socket as sys;
use crate::wire::{Message, PROTOCOL_VERSION};
use crate::{Error, Result};

/// Length of a frame header in bytes.
pub const HEADER_LEN: usize = 8;
/// The first byte of every frame.
pub const MAGIC: u8 = 0x4E;
/// The most descriptors a caller may attach to one frame.
pub const MAX_FDS: usize = 16;
/// The default limit on a body carried inline on the socket: 16 MiB.
pub const DEFAULT_FRAME_LIMIT: usize = 16 << 20;
/// The default limit on a body carried in a memfd: 4 GiB − 1, the most a header can announce.
pub const DEFAULT_MEMFD_LIMIT: usize = u32::MAX as usize;
/// Bodies larger than this many bytes are sent in a memfd by default: 64 KiB.
pub const DEFAULT_MEMFD_THRESHOLD: usize = 64 << 10;

const FLAG_MEMFD: u8 = 0x01;
const KNOWN_FLAGS: u8 = FLAG_MEMFD;
/// The smallest read the decoder offers the socket.
const MIN_READ: usize = 4096;
/// Room made at once for a frame whose header is in: an inline frame below the default memfd
/// threshold fits, and a larger one grows the buffer only as its bytes arrive.
const EAGER_ROOM: usize = DEFAULT_MEMFD_THRESHOLD + HEADER_LEN;
/// The alignment of a frame body in the receive buffer, when the buffer allows it.
const BODY_ALIGN: usize = 64;
/// A receive buffer that grew beyond this is freed once empty, so an idle channel stays small.
const KEEP_BUFFER: usize = EAGER_ROOM;
const MEMFD_LABEL: &str = "netmcore-frame";
const TARGET: &str = "channel";

/// The size limits of a channel (both directions use the same values).
///
/// ```
/// use netmcore_ipc::channel::Limits;
/// let limits = Limits::default().with_frame_limit(1 << 20).with_memfd_threshold(4096);
/// assert_eq!(limits.frame_limit(), 1 << 20);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    frame: usize,
    memfd: usize,
    threshold: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            frame: DEFAULT_FRAME_LIMIT,
            memfd: DEFAULT_MEMFD_LIMIT,
            threshold: DEFAULT_MEMFD_THRESHOLD,
        }
    }
}

impl Limits {
    /// The largest body accepted inline on the socket; at most `u32::MAX`.
    pub fn with_frame_limit(mut self, bytes: usize) -> Limits {
        self.frame = bytes.min(u32::MAX as usize);
        self
    }

    /// The largest body accepted in a memfd; at most `u32::MAX`.
    pub fn with_memfd_limit(mut self, bytes: usize) -> Limits {
        self.memfd = bytes.min(u32::MAX as usize);
        self
    }

    /// Bodies longer than this are sent in a memfd (it should not exceed the peer's frame
    /// limit).
    pub fn with_memfd_threshold(mut self, bytes: usize) -> Limits {
        self.threshold = bytes;
        self
    }

    /// The largest body accepted inline.
    pub fn frame_limit(&self) -> usize {
        self.frame
    }

    /// The largest body accepted in a memfd.
    pub fn memfd_limit(&self) -> usize {
        self.memfd
    }

    /// The body length above which a sender uses a memfd.
    pub fn memfd_threshold(&self) -> usize {
        self.threshold
    }
}

/// The body of a received frame: bytes read from the socket, or a read-only mapping of the
/// sealed memfd that carried it. Either way it derefs to `[u8]`.
#[derive(Debug)]
#[non_exhaustive]
pub enum Body {
    /// Read from the socket.
    Inline(Vec<u8>),
    /// Mapped from the memfd that carried it.
    Memfd(MemfdMap),
}

impl Deref for Body {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Body::Inline(v) => v,
            Body::Memfd(m) => m,
        }
    }
}

impl Body {
    /// The bytes as a vector (copies a mapped body).
    pub fn into_vec(self) -> Vec<u8> {
        match self {
            Body::Inline(v) => v,
            Body::Memfd(m) => m.to_vec(),
        }
    }
}

/// A received frame: its body and the descriptors that came with it (without the memfd that
/// carried a large body, which is internal).
#[derive(Debug)]
pub struct Frame {
    body: Body,
    fds: Vec<OwnedFd>,
}

impl Frame {
    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The descriptors that came with the frame, in the order they were sent.
    pub fn fds(&self) -> &[OwnedFd] {
        &self.fds
    }

    /// Takes the descriptors out of the frame (the caller owns them).
    pub fn take_fds(&mut self) -> Vec<OwnedFd> {
        std::mem::take(&mut self.fds)
    }

    /// Whether the body arrived in a memfd rather than on the socket.
    pub fn is_memfd(&self) -> bool {
        matches!(self.body, Body::Memfd(_))
    }

    /// The body and the descriptors.
    pub fn into_parts(self) -> (Body, Vec<OwnedFd>) {
        (self.body, self.fds)
    }
}

/// A frame body where the decoder has it.
enum RawBody<'a> {
    /// In the receive buffer.
    Buffered(&'a [u8]),
    /// Mapped from its memfd.
    Mapped(MemfdMap),
}

impl Deref for RawBody<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            RawBody::Buffered(b) => b,
            RawBody::Mapped(m) => m,
        }
    }
}

/// A parsed, validated frame header.
#[derive(Debug, Clone, Copy)]
struct Header {
    memfd: bool,
    nfds: usize,
    len: usize,
}

impl Header {
    /// Bytes of the frame on the socket, header included.
    fn wire_len(&self) -> usize {
        HEADER_LEN + if self.memfd { 0 } else { self.len }
    }

    fn encode(&self) -> [u8; HEADER_LEN] {
        let flags = if self.memfd { FLAG_MEMFD } else { 0 };
        let len = u32::try_from(self.len)
            .expect("length checked against a u32 limit")
            .to_le_bytes();
        [
            MAGIC,
            PROTOCOL_VERSION,
            flags,
            self.nfds as u8,
            len[0],
            len[1],
            len[2],
            len[3],
        ]
    }

    /// Checks the first bytes of a header, however few arrived (the magic byte, the version,
    /// the flags, the descriptor count), so that garbage fails at once.
    fn check_prefix(bytes: &[u8]) -> Result<()> {
        let bad = |reason: String| Error::Protocol {
            what: "frame header",
            reason,
        };
        if let Some(&magic) = bytes.first()
            && magic != MAGIC
        {
            return Err(bad(format!(
                "magic byte {magic:#04x}, expected {MAGIC:#04x}"
            )));
        }
        if let Some(&version) = bytes.get(1)
            && version != PROTOCOL_VERSION
        {
            return Err(bad(format!(
                "protocol version {version}, this side speaks {PROTOCOL_VERSION}"
            )));
        }
        let Some(&flags) = bytes.get(2) else {
            return Ok(());
        };
        if flags & !KNOWN_FLAGS != 0 {
            return Err(bad(format!("unknown flags {flags:#04x}")));
        }
        let Some(&nfds) = bytes.get(3) else {
            return Ok(());
        };
        let nfds = usize::from(nfds);
        if nfds > MAX_FDS + 1 {
            return Err(bad(format!(
                "{nfds} descriptors announced, at most {}",
                MAX_FDS + 1
            )));
        }
        if flags & FLAG_MEMFD != 0 && nfds == 0 {
            return Err(bad("a memfd body announced without a descriptor".to_owned()));
        }
        Ok(())
    }

    fn parse(bytes: &[u8; HEADER_LEN], limits: &Limits) -> Result<Header> {
        Header::check_prefix(bytes)?;
        let memfd = bytes[2] & FLAG_MEMFD != 0;
        let nfds = usize::from(bytes[3]);
        let len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
        let limit = if memfd { limits.memfd } else { limits.frame };
        if len > limit {
            return Err(Error::FrameTooLarge {
                len: len as u64,
                limit: limit as u64,
            });
        }
        Ok(Header { memfd, nfds, len })
    }
}

/// Descriptors that arrived with one read, and the stream offsets that read covered.
struct FdBatch {
    fds: Vec<OwnedFd>,
    from: u64,
    to: u64,
}

/// An incremental frame decoder: bytes and descriptors go in as they arrive, complete frames
/// come out. It buffers a partial frame and never waits, so it is what a non-blocking reader
/// stands on; it does no socket I/O (it maps the memfd of a large body) and can be driven from
/// a test with any bytes.
///
/// ```
/// use netmcore_ipc::channel::{FrameDecoder, Limits, encode_frame};
///
/// let wire = encode_frame(b"hello")?;
/// let mut decoder = FrameDecoder::new(Limits::default());
/// decoder.feed(&wire[..3], Vec::new());
/// assert!(decoder.next_frame()?.is_none()); // half a header: wait for more
/// decoder.feed(&wire[3..], Vec::new());
/// assert_eq!(decoder.next_frame()?.unwrap().body(), b"hello");
/// assert!(matches!(decoder.end_of_stream(), netmcore_ipc::Error::Closed));
/// # Ok::<(), netmcore_ipc::Error>(())
/// ```
///
/// After an error the decoder is spent: every later call fails, and what it buffered
/// (descriptors included) is dropped.
pub struct FrameDecoder {
    limits: Limits,
    /// Received bytes live in `buf[start..end]`; `buf[end..]` is zeroed room for reads.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Stream offset of `buf[end]`: bytes fed in total.
    fed: u64,
    batches: VecDeque<FdBatch>,
    failed: bool,
}

impl fmt::Debug for FrameDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameDecoder")
            .field("buffered", &self.buffered())
            .field("fd_batches", &self.batches.len())
            .field("failed", &self.failed)
            .finish()
    }
}

impl FrameDecoder {
    /// An empty decoder that enforces `limits`.
    pub fn new(limits: Limits) -> FrameDecoder {
        FrameDecoder {
            limits,
            buf: Vec::new(),
            start: 0,
            end: 0,
            fed: 0,
            batches: VecDeque::new(),
            failed: false,
        }
    }

    /// Adds bytes read from the stream and the descriptors that arrived with them.
    pub fn feed(&mut self, bytes: &[u8], fds: Vec<OwnedFd>) {
        if self.failed {
            return;
        }
        let room = self.room(bytes.len());
        room[..bytes.len()].copy_from_slice(bytes);
        self.commit(bytes.len(), fds);
    }

    /// Bytes buffered that are not yet part of a returned frame.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Whether [`next_frame`](FrameDecoder::next_frame) would return a frame (or an error)
    /// without more input.
    pub fn has_complete_frame(&self) -> bool {
        if self.failed {
            return true;
        }
        let avail = &self.buf[self.start..self.end];
        match avail
            .first_chunk::<HEADER_LEN>()
            .map(|h| Header::parse(h, &self.limits))
        {
            // The start of a bad header is "complete" too.
            None => Header::check_prefix(avail).is_err(),
            // A bad header is "complete": `next_frame` reports it without more input.
            Some(Err(_)) => true,
            Some(Ok(h)) => avail.len() >= h.wire_len(),
        }
    }

    /// The error that the end of the stream means now: [`Error::Closed`] at a frame boundary,
    /// [`Error::Truncated`] inside a frame.
    pub fn end_of_stream(&self) -> Error {
        let got = self.buffered();
        if got == 0 {
            return Error::Closed;
        }
        let expected = self.buf[self.start..self.end]
            .first_chunk::<HEADER_LEN>()
            .and_then(|h| Header::parse(h, &self.limits).ok())
            .map_or(HEADER_LEN, |h| h.wire_len());
        Error::Truncated { got, expected }
    }

    /// The next complete frame, `Ok(None)` when more input is needed.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] for a malformed header, a version mismatch, descriptors missing,
    /// unannounced or in excess, or a memfd body that is not a sealed memfd of the announced
    /// length; [`Error::FrameTooLarge`] for a length over the limit, as soon as the header is
    /// in (nothing of that size is allocated). The decoder is spent afterwards.
    pub fn next_frame(&mut self) -> Result<Option<Frame>> {
        self.next_with(|body, fds| {
            let body = match body {
                RawBody::Buffered(bytes) => Body::Inline(bytes.to_vec()),
                RawBody::Mapped(map) => Body::Memfd(map),
            };
            Ok(Frame { body, fds })
        })
    }

    /// Like [`next_frame`](FrameDecoder::next_frame), but hands the body to `f` where it lies
    /// (in the receive buffer, or mapped), so that a message is decoded without a copy.
    fn next_with<R>(
        &mut self,
        f: impl FnOnce(RawBody<'_>, Vec<OwnedFd>) -> Result<R>,
    ) -> Result<Option<R>> {
        if self.failed {
            return Err(Error::Protocol {
                what: "channel",
                reason: "unusable after an earlier error".to_owned(),
            });
        }
        match self.decode_with(f) {
            // What `f` makes of a well-formed frame does not spoil the stream.
            Ok(Some(r)) => r.map(Some),
            Ok(None) => Ok(None),
            Err(e) => {
                self.fail();
                Err(e)
            }
        }
    }

    /// Frame-level errors come out as the outer `Err`, what `f` returns as the inner value.
    fn decode_with<R>(
        &mut self,
        f: impl FnOnce(RawBody<'_>, Vec<OwnedFd>) -> Result<R>,
    ) -> Result<Option<Result<R>>> {
        let avail = &self.buf[self.start..self.end];
        let Some(header) = avail.first_chunk::<HEADER_LEN>() else {
            // Garbage fails as soon as it arrives, before the header is complete.
            Header::check_prefix(avail)?;
            return Ok(None);
        };
        let header = Header::parse(header, &self.limits)?;
        if avail.len() < header.wire_len() {
            return Ok(None);
        }
        let frame_at = self.fed - avail.len() as u64;
        let mut fds = self.take_fds(frame_at, header.nfds)?;
        let body_at = self.start + HEADER_LEN;
        // The frame is consumed whatever `f` makes of it.
        self.start += header.wire_len();
        let result = if header.memfd {
            let memfd = Memfd::from_fd(fds.remove(0)).map_err(|e| Error::Protocol {
                what: "frame body",
                reason: format!("the descriptor of a memfd body is no memfd: {e}"),
            })?;
            let map = memfd.map_len(header.len).map_err(|e| Error::Protocol {
                what: "frame body",
                reason: format!("memfd body of {} bytes: {e}", header.len),
            })?;
            f(RawBody::Mapped(map), fds)
        } else {
            f(
                RawBody::Buffered(&self.buf[body_at..body_at + header.len]),
                fds,
            )
        };
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > KEEP_BUFFER {
                self.buf = Vec::new();
            }
        }
        Ok(Some(result))
    }

    /// The descriptors of the frame that starts at stream offset `frame_at`.
    fn take_fds(&mut self, frame_at: u64, nfds: usize) -> Result<Vec<OwnedFd>> {
        let bad = |reason: String| Error::Protocol {
            what: "frame descriptors",
            reason,
        };
        if let Some(batch) = self.batches.front()
            && batch.to <= frame_at
        {
            return Err(bad(format!(
                "{} descriptors arrived that no frame announced",
                batch.fds.len()
            )));
        }
        if nfds == 0 {
            return Ok(Vec::new());
        }
        match self.batches.front() {
            Some(b) if b.from <= frame_at && frame_at < b.to && b.fds.len() == nfds => {
                Ok(self.batches.pop_front().map(|b| b.fds).unwrap_or_default())
            }
            Some(b) if b.from <= frame_at && frame_at < b.to => Err(bad(format!(
                "frame announces {nfds} descriptors, {} arrived with it",
                b.fds.len()
            ))),
            _ => Err(bad(format!(
                "frame announces {nfds} descriptors, none arrived with it"
            ))),
        }
    }

    fn fail(&mut self) {
        self.failed = true;
        self.batches.clear();
        self.buf = Vec::new();
        self.start = 0;
        self.end = 0;
    }

    /// Room for at least `min` more bytes (more if the frame being received needs it).
    fn room(&mut self, min: usize) -> &mut [u8] {
        let avail = self.end - self.start;
        let frame = self.buf[self.start..self.end]
            .first_chunk::<HEADER_LEN>()
            .and_then(|h| Header::parse(h, &self.limits).ok())
            .map_or(0, |h| h.wire_len());
        // Room for the whole frame being received, but beyond `EAGER_ROOM` only as fast as
        // its bytes arrive (doubling), so that a header alone cannot make a channel allocate
        // its announced length.
        let frame = frame.min(EAGER_ROOM.max(avail.saturating_mul(2)));
        let want = frame.max(avail + min.max(1));
        if self.buf.len() < want + BODY_ALIGN {
            self.buf.resize(want + BODY_ALIGN, 0);
        }
        // Buffered data starts where the body of a frame starting there is 64-byte aligned.
        // Copying a body out of the buffer (into a `Vec`, an `Encap`) is then never the
        // `rep movsb` with a destination 1 to 15 bytes past the source modulo 4 KiB that some
        // CPUs (AMD Zen) run 20 times slower than any other.
        let pad =
            (BODY_ALIGN - (self.buf.as_ptr() as usize + HEADER_LEN) % BODY_ALIGN) % BODY_ALIGN;
        if avail == 0 {
            self.start = pad;
            self.end = pad;
        } else if self.buf.len() - self.start < want {
            self.buf.copy_within(self.start..self.end, pad);
            self.start = pad;
            self.end = pad + avail;
        }
        &mut self.buf[self.end..]
    }

    /// Records that `n` bytes were written into [`room`](FrameDecoder::room), with `fds`.
    fn commit(&mut self, n: usize, fds: Vec<OwnedFd>) {
        let from = self.fed;
        self.end += n;
        self.fed += n as u64;
        if !fds.is_empty() {
            self.batches.push_back(FdBatch {
                fds,
                from,
                to: self.fed.max(from + 1),
            });
        }
    }
}

/// Encodes one frame with `body` inline and no descriptors: header then body, as it travels
/// on the socket (for tests and for peers that write frames themselves).
///
/// # Errors
///
/// [`Error::FrameTooLarge`] when `body` is longer than `u32::MAX` bytes.
pub fn encode_frame(body: &[u8]) -> Result<Vec<u8>> {
    if body.len() > u32::MAX as usize {
        return Err(Error::FrameTooLarge {
            len: body.len() as u64,
            limit: u32::MAX.into(),
        });
    }
    let header = Header {
        memfd: false,
        nfds: 0,
        len: body.len(),
    };
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(body);
    Ok(out)
}

/// A frame waiting in the output queue.
struct Pending {
    bytes: Vec<u8>,
    sent: usize,
    /// Sent with the first byte, then dropped (the kernel holds its own references).
    fds: Vec<OwnedFd>,
}

/// One end of a framed channel over a connected Unix stream socket. See the
/// [module docs](self) for the frame layout and the blocking and non-blocking paths.
pub struct Channel {
    fd: OwnedFd,
    limits: Limits,
    decoder: FrameDecoder,
    out: VecDeque<Pending>,
    scratch: Vec<u8>,
    busy_poll: Duration,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("fd", &self.fd)
            .field("limits", &self.limits)
            .field("decoder", &self.decoder)
            .field("queued_frames", &self.out.len())
            .finish()
    }
}

impl AsFd for Channel {
    /// The socket, for `poll`: readable (`POLLIN`) when [`try_recv`](Channel::try_recv) may
    /// make progress, writable (`POLLOUT`) when [`flush`](Channel::flush) may.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Channel {
    /// `socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC)`: two connected ends with the default
    /// [`Limits`]. Create the pair before `fork`; each process then drops the end it does not
    /// use.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] naming `socketpair`.
    #[doc(alias = "socketpair")]
    pub fn pair() -> Result<(Channel, Channel)> {
        let (a, b) = sys::stream_pair().map_err(|e| Error::os("socketpair", TARGET, e))?;
        Ok((Channel::wrap(a), Channel::wrap(b)))
    }

    /// An end made of a connected Unix stream socket, e.g. one inherited across `exec`.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] naming `getsockopt` when `fd` is no socket; [`Error::Protocol`] when it
    /// is a socket of another domain or type.
    pub fn from_fd(fd: OwnedFd) -> Result<Channel> {
        let ok = sys::is_unix_stream(fd.as_fd()).map_err(|e| Error::os("getsockopt", TARGET, e))?;
        if !ok {
            return Err(Error::Protocol {
                what: "channel",
                reason: "the descriptor is not a Unix stream socket".to_owned(),
            });
        }
        Ok(Channel::wrap(fd))
    }

    /// `socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC)` and `connect(path)`: an end connected to
    /// a [`Listener`].
    ///
    /// # Errors
    ///
    /// [`Error::Os`] naming the failing call and the path (`ENOENT`, `ECONNREFUSED`, …).
    pub fn connect(path: impl AsRef<Path>) -> Result<Channel> {
        let path = path.as_ref();
        let fd = sys::connect_to(path)
            .map_err(|(op, e)| Error::os(op, path.display().to_string(), e))?;
        Ok(Channel::wrap(fd))
    }

    fn wrap(fd: OwnedFd) -> Channel {
        let limits = Limits::default();
        Channel {
            fd,
            limits,
            decoder: FrameDecoder::new(limits),
            out: VecDeque::new(),
            scratch: Vec::new(),
            busy_poll: Duration::ZERO,
        }
    }

    /// Replaces the limits (applies to frames not yet started).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
        self.decoder.limits = limits;
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Every descriptor this channel owns: its socket, those attached to frames still queued
    /// for sending, and those received with a frame that is not complete yet. For a forked
    /// child that closes them by number instead of dropping the channel.
    pub fn raw_fds(&self, out: &mut Vec<std::os::fd::RawFd>) {
        use std::os::fd::AsRawFd;
        out.push(self.fd.as_raw_fd());
        for pending in &self.out {
            out.extend(pending.fds.iter().map(AsRawFd::as_raw_fd));
        }
        for batch in &self.decoder.batches {
            out.extend(batch.fds.iter().map(AsRawFd::as_raw_fd));
        }
    }

    /// Makes the blocking receives try non-blocking reads for up to `spin` before they sleep
    /// in `poll`. Waking a sleeping process on another core costs tens of microseconds; a
    /// short spin saves that when the answer is about to come, at the price of CPU time.
    /// Zero (the default) never spins.
    pub fn set_busy_poll(&mut self, spin: Duration) {
        self.busy_poll = spin;
    }

    /// The spin of the blocking receives (see [`set_busy_poll`](Channel::set_busy_poll)).
    #[must_use]
    pub fn busy_poll(&self) -> Duration {
        self.busy_poll
    }

    /// The socket; bytes and descriptors buffered in this end are dropped.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// `getsockopt(SO_PEERCRED)`: who is at the other end.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] naming `getsockopt(SO_PEERCRED)`.
    pub fn peer_credentials(&self) -> Result<PeerCredentials> {
        peer_credentials(self)
    }

    // Sending ---------------------------------------------------------------------------

    /// Sends a frame and blocks until the socket took all of it (a body over the memfd
    /// threshold goes in a sealed memfd). Frames queued with [`queue`](Channel::queue) go
    /// first.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the peer is gone; [`Error::FrameTooLarge`] over the limits;
    /// [`Error::Os`] naming `sendmsg` or a memfd call.
    pub fn send(&mut self, body: &[u8]) -> Result<()> {
        self.send_with_fds(body, &[])
    }

    /// Like [`send`](Channel::send), with descriptors attached (at most [`MAX_FDS`]). The
    /// receiver gets its own copies; the caller's stay open.
    ///
    /// # Errors
    ///
    /// As [`send`](Channel::send), and [`Error::Protocol`] for more than [`MAX_FDS`]
    /// descriptors.
    pub fn send_with_fds(&mut self, body: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
        check_fds(fds.len())?;
        self.flush_blocking()?;
        if body.len() > self.limits.threshold {
            let memfd = self.memfd_from_bytes(body)?;
            return self.send_memfd(&memfd, body.len(), fds);
        }
        let header = self.inline_header(body.len(), fds.len())?.encode();
        self.send_all(&header, body, fds)
    }

    /// Sends `message`, encoded to `len` bytes: in place into a reused buffer, or into a
    /// memfd when it is large (see [`message_memfd`](Channel::message_memfd)).
    fn send_encoded<M: Message>(
        &mut self,
        message: &M,
        len: usize,
        fds: &[BorrowedFd<'_>],
    ) -> Result<()> {
        check_fds(fds.len())?;
        self.flush_blocking()?;
        if len > self.limits.threshold {
            let memfd = self.message_memfd(message, len)?;
            return self.send_memfd(&memfd, len, fds);
        }
        let header = self.inline_header(len, fds.len())?.encode();
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        scratch.extend_from_slice(&header);
        scratch.resize(HEADER_LEN + len, 0);
        let result = message
            .encode_into(&mut scratch[HEADER_LEN..])
            .and_then(|()| self.send_all(&scratch, &[], fds));
        self.scratch = scratch;
        result
    }

    /// Appends a frame to the output queue and sends as much of the queue as the socket takes
    /// without blocking. The descriptors are owned by the queue until they are sent. Call
    /// [`flush`](Channel::flush) when the socket is writable while
    /// [`has_pending_output`](Channel::has_pending_output).
    ///
    /// # Errors
    ///
    /// As [`send_with_fds`](Channel::send_with_fds).
    pub fn queue(&mut self, body: &[u8], fds: Vec<OwnedFd>) -> Result<()> {
        check_fds(fds.len())?;
        if body.len() > self.limits.threshold {
            let memfd = self.memfd_from_bytes(body)?;
            return self.queue_memfd(memfd, body.len(), fds);
        }
        let header = self.inline_header(body.len(), fds.len())?.encode();
        self.enqueue(&header, body, fds)
    }

    /// Queues `message`, encoded to `len` bytes (see [`send_encoded`](Channel::send_encoded)).
    fn queue_encoded<M: Message>(&mut self, message: &M, len: usize) -> Result<()> {
        if len > self.limits.threshold {
            let memfd = self.message_memfd(message, len)?;
            return self.queue_memfd(memfd, len, Vec::new());
        }
        let header = self.inline_header(len, 0)?.encode();
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        scratch.extend_from_slice(&header);
        scratch.resize(HEADER_LEN + len, 0);
        let result = message
            .encode_into(&mut scratch[HEADER_LEN..])
            .and_then(|()| self.enqueue(&scratch, &[], Vec::new()));
        self.scratch = scratch;
        result
    }

    /// Queues the frame `head` + `tail` with `fds`. When nothing is queued before it, it is
    /// offered to the socket at once, and only what the socket did not take is copied into
    /// the queue: the usual small reply costs one `sendmsg` and no allocation.
    fn enqueue(&mut self, head: &[u8], tail: &[u8], fds: Vec<OwnedFd>) -> Result<()> {
        let mut sent = 0;
        if self.out.is_empty() {
            let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
            let storage = [IoSlice::new(head), IoSlice::new(tail)];
            let bufs = if tail.is_empty() {
                &storage[..1]
            } else {
                &storage[..]
            };
            sent = loop {
                match sys::send(self.fd.as_fd(), bufs, &borrowed, true) {
                    Ok(n) => break n,
                    Err(Errno::INTR) => {}
                    Err(Errno::AGAIN) => break 0,
                    Err(e) => return Err(send_error(e)),
                }
            };
            if sent == head.len() + tail.len() {
                return Ok(());
            }
        }
        let mut bytes = Vec::with_capacity(head.len() + tail.len() - sent);
        if sent < head.len() {
            bytes.extend_from_slice(&head[sent..]);
            bytes.extend_from_slice(tail);
        } else {
            bytes.extend_from_slice(&tail[sent - head.len()..]);
        }
        // Descriptors went with the first byte sent, if any was.
        let fds = if sent > 0 { Vec::new() } else { fds };
        self.out.push_back(Pending {
            bytes,
            sent: 0,
            fds,
        });
        self.flush().map(drop)
    }

    /// Sends queued frames without blocking; returns true when the queue is empty.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the peer is gone; [`Error::Os`] naming `sendmsg`.
    pub fn flush(&mut self) -> Result<bool> {
        while let Some(p) = self.out.front_mut() {
            let fds: Vec<BorrowedFd<'_>> = p.fds.iter().map(AsFd::as_fd).collect();
            match sys::send(
                self.fd.as_fd(),
                &[IoSlice::new(&p.bytes[p.sent..])],
                &fds,
                true,
            ) {
                Ok(n) => {
                    drop(fds);
                    if n > 0 {
                        p.fds.clear();
                    }
                    p.sent += n;
                    if p.sent == p.bytes.len() {
                        self.out.pop_front();
                    }
                }
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => return Ok(false),
                Err(e) => return Err(send_error(e)),
            }
        }
        Ok(true)
    }

    /// Whether queued frames wait for the socket to become writable.
    pub fn has_pending_output(&self) -> bool {
        !self.out.is_empty()
    }

    fn flush_blocking(&mut self) -> Result<()> {
        while !self.flush()? {
            self.wait(true, None)?;
        }
        Ok(())
    }

    fn inline_header(&self, len: usize, nfds: usize) -> Result<Header> {
        if len > self.limits.frame {
            return Err(Error::FrameTooLarge {
                len: len as u64,
                limit: self.limits.frame as u64,
            });
        }
        Ok(Header {
            memfd: false,
            nfds,
            len,
        })
    }

    fn memfd_header(&self, len: usize, nfds: usize) -> Result<Header> {
        if len > self.limits.memfd {
            return Err(Error::FrameTooLarge {
                len: len as u64,
                limit: self.limits.memfd as u64,
            });
        }
        Ok(Header {
            memfd: true,
            nfds: nfds + 1,
            len,
        })
    }

    fn memfd_from_bytes(&self, body: &[u8]) -> Result<Memfd> {
        self.memfd_header(body.len(), 0)?;
        let memfd = Memfd::from_bytes(MEMFD_LABEL, body)?;
        memfd.seal()?;
        Ok(memfd)
    }

    /// A sealed memfd holding `message` (`len` bytes, within the memfd limit), written with
    /// `pwrite` (see `codec::encode_to_memfd`).
    fn message_memfd<M: Message>(&self, message: &M, len: usize) -> Result<Memfd> {
        self.memfd_header(len, 0)?;
        let memfd = Memfd::create_empty(MEMFD_LABEL)?;
        message.encode_to_memfd(&memfd, len)?;
        memfd.seal()?;
        Ok(memfd)
    }

    fn send_memfd(&mut self, memfd: &Memfd, len: usize, fds: &[BorrowedFd<'_>]) -> Result<()> {
        let header = self.memfd_header(len, fds.len())?.encode();
        let mut all = Vec::with_capacity(fds.len() + 1);
        all.push(memfd.as_fd());
        all.extend_from_slice(fds);
        self.send_all(&header, &[], &all)
    }

    fn queue_memfd(&mut self, memfd: Memfd, len: usize, fds: Vec<OwnedFd>) -> Result<()> {
        let header = self.memfd_header(len, fds.len())?.encode();
        let mut all = Vec::with_capacity(fds.len() + 1);
        all.push(memfd.into_fd());
        all.extend(fds);
        self.enqueue(&header, &[], all)
    }

    /// Sends `head` then `tail`, blocking until all is sent, with `fds` on the first byte.
    fn send_all(&mut self, head: &[u8], tail: &[u8], mut fds: &[BorrowedFd<'_>]) -> Result<()> {
        let mut storage = [IoSlice::new(head), IoSlice::new(tail)];
        let mut bufs = if tail.is_empty() {
            &mut storage[..1]
        } else {
            &mut storage[..]
        };
        while !bufs.is_empty() {
            match sys::send(self.fd.as_fd(), bufs, fds, false) {
                Ok(n) => {
                    if n > 0 {
                        fds = &[];
                    }
                    IoSlice::advance_slices(&mut bufs, n);
                }
                Err(Errno::INTR) => {}
                // The descriptor may have been made non-blocking by its creator.
                Err(Errno::AGAIN) => self.wait(true, None).map(drop)?,
                Err(e) => return Err(send_error(e)),
            }
        }
        Ok(())
    }

    // Receiving -------------------------------------------------------------------------

    /// Blocks until a whole frame has arrived and returns it.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the peer closed at a frame boundary, [`Error::Truncated`] in
    /// the middle of a frame; [`Error::Protocol`] or [`Error::FrameTooLarge`] for a bad
    /// frame; [`Error::Os`] naming `recvmsg` or `poll`.
    pub fn recv(&mut self) -> Result<Frame> {
        self.recv_deadline(None)
    }

    /// Like [`recv`](Channel::recv), giving up after `timeout`.
    ///
    /// # Errors
    ///
    /// As [`recv`](Channel::recv), and [`Error::Timeout`] when no whole frame arrived in time
    /// (a partial one stays buffered for the next call).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Frame> {
        self.recv_deadline(Some(Instant::now() + timeout))
    }

    fn recv_deadline(&mut self, deadline: Option<Instant>) -> Result<Frame> {
        loop {
            self.wait_for_frame(deadline)?;
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(frame);
            }
        }
    }

    /// Reads until a whole frame (or an error) is buffered in the decoder.
    fn wait_for_frame(&mut self, deadline: Option<Instant>) -> Result<()> {
        let spin_until = (!self.busy_poll.is_zero()).then(|| Instant::now() + self.busy_poll);
        while !self.decoder.has_complete_frame() {
            let spinning = spin_until.is_some_and(|t| Instant::now() < t);
            if !spinning && deadline.is_none() {
                // The common case. A reader blocked in `recvmsg` would also be woken each
                // time the peer consumes what this end sent (the kernel signals free room on
                // the same wait queue, without a key), a wake-up for nothing that costs a
                // context switch on the other core; a reader waiting in `poll` for `POLLIN`
                // only wakes for data.
                if !self.read_some(false)? {
                    self.wait(false, None)?;
                }
                continue;
            }
            if self.read_some(false)? {
                continue;
            }
            if spinning {
                std::hint::spin_loop();
                continue;
            }
            let left = deadline.and_then(|d| d.checked_duration_since(Instant::now()));
            match left {
                Some(left) if !left.is_zero() => {
                    self.wait(false, Some(left))?;
                }
                _ => {
                    return Err(Error::Timeout {
                        op: "recv",
                        target: TARGET.to_owned(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Returns a frame if a whole one is buffered or can be read without blocking, else
    /// `Ok(None)`. Bytes of a partial frame are kept for the next call. In a poll loop, call
    /// it until it returns `Ok(None)`: one readable event may bring several frames.
    ///
    /// # Errors
    ///
    /// As [`recv`](Channel::recv).
    pub fn try_recv(&mut self) -> Result<Option<Frame>> {
        if self.fill_nonblocking()? {
            self.decoder.next_frame()
        } else {
            Ok(None)
        }
    }

    /// Reads without blocking until a whole frame (or an error) is buffered; false when the
    /// socket has nothing more for now.
    fn fill_nonblocking(&mut self) -> Result<bool> {
        while !self.decoder.has_complete_frame() {
            if !self.read_some(false)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether a whole frame is already buffered (so `try_recv` returns it without reading).
    pub fn has_buffered_frame(&self) -> bool {
        self.decoder.has_complete_frame()
    }

    /// One `recvmsg` into the decoder, blocking or not; false when nothing was there (and
    /// the call would have blocked).
    fn read_some(&mut self, blocking: bool) -> Result<bool> {
        let fd = self.fd.as_fd();
        let room = self.decoder.room(MIN_READ);
        let received = loop {
            match sys::recv(fd, room, !blocking) {
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => return Ok(false),
                // A peer that closed with unread data in its buffer resets the connection:
                // for us, that is its end of stream like any other.
                Err(Errno::CONNRESET) => {
                    break sys::Received {
                        bytes: 0,
                        fds: Vec::new(),
                        fds_truncated: false,
                    };
                }
                Err(e) => return Err(Error::os("recvmsg", TARGET, e)),
                Ok(r) => break r,
            }
        };
        if received.fds_truncated {
            self.decoder.fail();
            return Err(Error::Protocol {
                what: "frame descriptors",
                reason: format!(
                    "more than {} descriptors in one message",
                    sys::MAX_FDS_PER_MESSAGE
                ),
            });
        }
        if received.bytes == 0 {
            // Descriptors cannot come without bytes on a stream socket; drop any all the same.
            drop(received.fds);
            return Err(self.decoder.end_of_stream());
        }
        self.decoder.commit(received.bytes, received.fds);
        Ok(true)
    }

    /// `poll` for readability or writability, retrying on `EINTR`; false on timeout.
    fn wait(&self, writable: bool, timeout: Option<Duration>) -> Result<bool> {
        loop {
            match sys::wait(self.fd.as_fd(), writable, timeout) {
                Err(Errno::INTR) => {}
                other => return other.map_err(|e| Error::os("poll", TARGET, e)),
            }
        }
    }

    // Messages --------------------------------------------------------------------------

    /// Encodes `message` and sends it (blocking), as a memfd when it is large.
    ///
    /// # Errors
    ///
    /// As [`send`](Channel::send), and [`Error::Protocol`] when it cannot be encoded.
    pub fn send_msg<M: Message>(&mut self, message: &M) -> Result<()> {
        let len = message.encoded_len()?;
        self.send_encoded(message, len, &[])
    }

    /// [`send_msg`](Channel::send_msg) with descriptors attached (at most [`MAX_FDS`]), for
    /// the few messages that carry one (a [`Request::StartStream`](crate::wire::Request)'s
    /// pipe). The receiver takes them with [`recv_msg_with_fds`](Channel::recv_msg_with_fds)
    /// or [`try_recv_msg_with_fds`](Channel::try_recv_msg_with_fds); the caller's stay open.
    ///
    /// # Errors
    ///
    /// As [`send_with_fds`](Channel::send_with_fds), and [`Error::Protocol`] when the message
    /// cannot be encoded.
    pub fn send_msg_with_fds<M: Message>(
        &mut self,
        message: &M,
        fds: &[BorrowedFd<'_>],
    ) -> Result<()> {
        let len = message.encoded_len()?;
        self.send_encoded(message, len, fds)
    }

    /// Encodes `message` and [queues](Channel::queue) it (never blocks).
    ///
    /// # Errors
    ///
    /// As [`queue`](Channel::queue), and [`Error::Protocol`] when it cannot be encoded.
    pub fn queue_msg<M: Message>(&mut self, message: &M) -> Result<()> {
        let len = message.encoded_len()?;
        self.queue_encoded(message, len)
    }

    /// Receives a frame (blocking) and decodes it as an `M`.
    ///
    /// # Errors
    ///
    /// As [`recv`](Channel::recv), and [`Error::Protocol`] when the body is not an `M` or the
    /// frame carries descriptors (messages carry none; they are closed). After such an error
    /// the frame is consumed and the channel still usable. A message is decoded where it lies
    /// in the receive buffer (or its memfd mapping), without a copy of the body.
    pub fn recv_msg<M: Message>(&mut self) -> Result<M> {
        loop {
            self.wait_for_frame(None)?;
            if let Some(message) = self.decoder.next_with(decode_message)? {
                return Ok(message);
            }
        }
    }

    /// [`try_recv`](Channel::try_recv), decoding the frame as an `M`.
    ///
    /// # Errors
    ///
    /// As [`recv_msg`](Channel::recv_msg).
    pub fn try_recv_msg<M: Message>(&mut self) -> Result<Option<M>> {
        if self.fill_nonblocking()? {
            self.decoder.next_with(decode_message)
        } else {
            Ok(None)
        }
    }

    /// [`recv_msg`](Channel::recv_msg) of a message that may come with descriptors: they are
    /// returned with it, for the caller to check against what the message says.
    ///
    /// # Errors
    ///
    /// As [`recv_msg`](Channel::recv_msg), descriptors aside.
    pub fn recv_msg_with_fds<M: Message>(&mut self) -> Result<(M, Vec<OwnedFd>)> {
        loop {
            self.wait_for_frame(None)?;
            if let Some(message) = self.decoder.next_with(decode_message_with_fds)? {
                return Ok(message);
            }
        }
    }

    /// [`try_recv_msg`](Channel::try_recv_msg) of a message that may come with descriptors
    /// (see [`recv_msg_with_fds`](Channel::recv_msg_with_fds)).
    ///
    /// # Errors
    ///
    /// As [`try_recv_msg`](Channel::try_recv_msg), descriptors aside.
    pub fn try_recv_msg_with_fds<M: Message>(&mut self) -> Result<Option<(M, Vec<OwnedFd>)>> {
        if self.fill_nonblocking()? {
            self.decoder.next_with(decode_message_with_fds)
        } else {
            Ok(None)
        }
    }
}

/// Decodes a message from a frame body where it lies, with the descriptors that came with it.
fn decode_message_with_fds<M: Message>(
    body: RawBody<'_>,
    fds: Vec<OwnedFd>,
) -> Result<(M, Vec<OwnedFd>)> {
    decode_message(body, Vec::new()).map(|message| (message, fds))
}

/// Decodes a message from a frame body where it lies; messages carry no descriptors.
fn decode_message<M: Message>(body: RawBody<'_>, fds: Vec<OwnedFd>) -> Result<M> {
    if !fds.is_empty() {
        return Err(Error::Protocol {
            what: M::WHAT,
            reason: format!("{} unexpected descriptors", fds.len()),
        });
    }
    match body {
        RawBody::Buffered(bytes) => M::decode(bytes),
        // A large body stays mapped: an `Encap` in it (an argument or a result) shares the
        // mapping instead of being copied out of it.
        RawBody::Mapped(map) => {
            netmcore_encap::with_shared_source(std::sync::Arc::new(map), |bytes| M::decode(bytes))
        }
    }
}

fn check_fds(n: usize) -> Result<()> {
    if n > MAX_FDS {
        return Err(Error::Protocol {
            what: "frame descriptors",
            reason: format!("{n} descriptors, at most {MAX_FDS} per frame"),
        });
    }
    Ok(())
}

fn send_error(e: Errno) -> Error {
    match e {
        Errno::PIPE | Errno::CONNRESET => Error::Closed,
        e => Error::os("sendmsg", TARGET, e),
    }
}

// Peer credentials and the listening socket ------------------------------------------------

/// The process at the other end of a Unix socket, as the kernel recorded it when the socket
/// was connected (or, for a socketpair, created).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerCredentials {
    /// Its process id (as `std::process::id()` reports it).
    pub pid: u32,
    /// Its effective user id.
    pub uid: u32,
    /// Its effective group id.
    pub gid: u32,
}

impl PeerCredentials {
    /// Whether the peer runs as the real user id of this process (`getuid`): the admin
    /// socket's test.
    pub fn is_same_user(&self) -> bool {
        self.uid == sys::current_uid()
    }
}

/// `getsockopt(SO_PEERCRED)`: the credentials of the peer of a connected Unix socket, such as
/// a [`Channel`] or a `std::os::unix::net::UnixStream`.
///
/// A socketpair reports the process that created it: after a `fork`, both ends name the
/// parent, so a worker's channel does not identify the worker (its pid comes from `fork`).
///
/// # Errors
///
/// [`Error::Os`] naming `getsockopt(SO_PEERCRED)` (`ENOTSOCK`, …).
#[doc(alias = "SO_PEERCRED")]
pub fn peer_credentials(socket: &impl AsFd) -> Result<PeerCredentials> {
    let cred = sys::peer_credentials(socket.as_fd())
        .map_err(|e| Error::os("getsockopt(SO_PEERCRED)", "socket", e))?;
    Ok(PeerCredentials {
        pid: cred.pid.as_raw_nonzero().get().unsigned_abs(),
        uid: cred.uid.as_raw(),
        gid: cred.gid.as_raw(),
    })
}

/// A listening Unix stream socket at a path (the master's admin socket). Non-blocking: poll
/// it for `POLLIN` and call [`try_accept`](Listener::try_accept), or block in
/// [`accept`](Listener::accept).
///
/// The socket file is not removed on drop (a forked child dropping its copy must not remove
/// the parent's socket): its owner removes [`path`](Listener::path) when it is done.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
    path: PathBuf,
}

impl Listener {
    /// `socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK)`, `bind(path)`,
    /// `chmod(path, 0600)`, `listen`: a listening socket that only this user can connect to
    /// (the directory around it should be private too; the `chmod` comes after `bind`).
    ///
    /// # Errors
    ///
    /// [`Error::Os`] naming the failing call and the path (`EADDRINUSE` when it exists).
    #[doc(alias = "listen")]
    pub fn bind(path: impl AsRef<Path>) -> Result<Listener> {
        let path = path.as_ref();
        let target = || path.display().to_string();
        let fd = sys::listen_at(path, 64).map_err(|(op, e)| Error::os(op, target(), e))?;
        if let Err(e) = sys::chmod(path, 0o600) {
            // Do not leave a socket behind that others might be able to use.
            let _ = std::fs::remove_file(path);
            return Err(Error::os("chmod", target(), e));
        }
        Ok(Listener {
            fd,
            path: path.to_owned(),
        })
    }

    /// The path the socket is bound to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `accept4(SOCK_CLOEXEC)`: the next connection if one is pending, else `Ok(None)`.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] naming `accept4` (`EMFILE`, …). A connection aborted before it was
    /// accepted is skipped.
    #[doc(alias = "accept4")]
    pub fn try_accept(&self) -> Result<Option<Channel>> {
        loop {
            match sys::accept(self.fd.as_fd()) {
                Ok(fd) => return Ok(Some(Channel::wrap(fd))),
                Err(Errno::INTR | Errno::CONNABORTED) => {}
                Err(Errno::AGAIN) => return Ok(None),
                Err(e) => return Err(Error::os("accept4", self.path.display().to_string(), e)),
            }
        }
    }

    /// Blocks until a connection comes and returns it.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] naming `accept4` or `poll`.
    pub fn accept(&self) -> Result<Channel> {
        loop {
            if let Some(channel) = self.try_accept()? {
                return Ok(channel);
            }
            match sys::wait(self.fd.as_fd(), false, None) {
                Ok(_) | Err(Errno::INTR) => {}
                Err(e) => return Err(Error::os("poll", self.path.display().to_string(), e)),
            }
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_fds_lists_every_descriptor_the_channel_owns() {
        use std::os::fd::AsRawFd;
        let (mut a, _b) = Channel::pair().unwrap();
        let own = a.fd.as_raw_fd();
        let mut fds = Vec::new();
        a.raw_fds(&mut fds);
        assert_eq!(fds, vec![own]);
        // A descriptor that came with a frame not complete yet.
        let received = Memfd::create("raw-fds-in", 0).unwrap().into_fd();
        let received_raw = received.as_raw_fd();
        let header = Header {
            memfd: false,
            nfds: 1,
            len: 10,
        }
        .encode();
        a.decoder.feed(&header, vec![received]);
        // A descriptor of a frame the socket did not take: fill the socket first (the peer
        // reads nothing).
        let filler = vec![0u8; 60_000];
        for _ in 0..1000 {
            if a.has_pending_output() {
                break;
            }
            a.queue(&filler, Vec::new()).unwrap();
        }
        assert!(a.has_pending_output());
        let queued = Memfd::create("raw-fds-out", 0).unwrap().into_fd();
        let queued_raw = queued.as_raw_fd();
        a.queue(b"with a descriptor", vec![queued]).unwrap();
        let mut fds = Vec::new();
        a.raw_fds(&mut fds);
        fds.sort_unstable();
        let mut expected = vec![own, received_raw, queued_raw];
        expected.sort_unstable();
        assert_eq!(fds, expected);
    }

    #[test]
    fn a_header_alone_does_not_allocate_the_announced_length() {
        let mut decoder = FrameDecoder::new(Limits::default());
        let header = Header {
            memfd: false,
            nfds: 0,
            len: DEFAULT_FRAME_LIMIT,
        }
        .encode();
        decoder.feed(&header, Vec::new());
        assert!(decoder.next_frame().unwrap().is_none());
        let _ = decoder.room(MIN_READ);
        assert!(
            decoder.buf.len() <= EAGER_ROOM + MIN_READ,
            "{}",
            decoder.buf.len()
        );
    }

    #[test]
    fn a_large_inline_frame_grows_the_buffer_as_it_arrives_and_frees_it() {
        let body: Vec<u8> = (0..3_000_000u32).map(|i| i as u8).collect();
        let wire = encode_frame(&body).unwrap();
        let mut decoder = FrameDecoder::new(Limits::default());
        let mut sizes = Vec::new();
        for chunk in wire.chunks(100_000) {
            assert!(decoder.next_frame().unwrap().is_none());
            decoder.feed(chunk, Vec::new());
            sizes.push(decoder.buf.len());
        }
        assert!(sizes.windows(2).all(|w| w[0] <= w[1]));
        assert!(sizes[0] < 2 * EAGER_ROOM + BODY_ALIGN, "{sizes:?}");
        assert_eq!(decoder.next_frame().unwrap().unwrap().body(), &body[..]);
        assert!(decoder.buf.is_empty(), "a big buffer is freed once empty");
    }

    #[test]
    fn the_buffer_is_compacted_not_grown_for_a_stream_of_small_frames() {
        let mut decoder = FrameDecoder::new(Limits::default());
        let wire = encode_frame(&[1; 1000]).unwrap();
        decoder.feed(&wire[..500], Vec::new());
        for _ in 0..1000 {
            // Half a frame stays behind each time, so the start moves through the buffer.
            decoder.feed(&wire[500..], Vec::new());
            decoder.feed(&wire[..500], Vec::new());
            assert_eq!(
                decoder.next_frame().unwrap().unwrap().body(),
                &[1; 1000][..]
            );
            assert!(decoder.next_frame().unwrap().is_none());
        }
        assert!(
            decoder.buf.len() <= 2 * MIN_READ + BODY_ALIGN,
            "{}",
            decoder.buf.len()
        );
    }

    #[test]
    fn garbage_shorter_than_a_header_fails_at_once() {
        let good = encode_frame(b"x").unwrap();
        let mut memfd_no_fd = good.clone();
        memfd_no_fd[2] = FLAG_MEMFD;
        let cases: [&[u8]; 6] = [
            &[0x00],
            &[MAGIC, PROTOCOL_VERSION.wrapping_add(1)],
            &[MAGIC, PROTOCOL_VERSION, 0x80],
            &[MAGIC, PROTOCOL_VERSION, 0, (MAX_FDS + 2) as u8],
            &memfd_no_fd[..4],
            &[0x4F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00],
        ];
        for garbage in cases {
            for len in 1..=garbage.len() {
                let mut decoder = FrameDecoder::new(Limits::default());
                decoder.feed(&garbage[..len], Vec::new());
                let bad = Header::check_prefix(&garbage[..len]).is_err();
                assert_eq!(decoder.has_complete_frame(), bad, "{:?}", &garbage[..len]);
                match decoder.next_frame() {
                    Err(Error::Protocol {
                        what: "frame header",
                        ..
                    }) => assert!(bad),
                    Ok(None) => assert!(!bad),
                    other => panic!("{:?}: {other:?}", &garbage[..len]),
                }
            }
            // The whole prefix is always bad.
            let mut decoder = FrameDecoder::new(Limits::default());
            decoder.feed(garbage, Vec::new());
            assert!(decoder.next_frame().is_err(), "{garbage:?}");
        }
        // Every prefix of a good header waits for more.
        for len in 1..HEADER_LEN {
            let mut decoder = FrameDecoder::new(Limits::default());
            decoder.feed(&good[..len], Vec::new());
            assert!(!decoder.has_complete_frame());
            assert!(decoder.next_frame().unwrap().is_none());
        }
    }

    #[test]
    fn an_error_spends_the_decoder_and_drops_its_descriptors() {
        let mut decoder = FrameDecoder::new(Limits::default());
        let memfd = Memfd::from_bytes("t", b"x").unwrap();
        decoder.feed(&[0xff; HEADER_LEN], vec![memfd.into_fd()]);
        assert!(matches!(
            decoder.next_frame(),
            Err(Error::Protocol {
                what: "frame header",
                ..
            })
        ));
        assert!(decoder.batches.is_empty() && decoder.buf.is_empty());
        assert!(decoder.has_complete_frame());
        decoder.feed(&encode_frame(b"late").unwrap(), Vec::new());
        assert!(matches!(
            decoder.next_frame(),
            Err(Error::Protocol {
                what: "channel",
                ..
            })
        ));
    }
}
