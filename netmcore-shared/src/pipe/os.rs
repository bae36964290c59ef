//! [`pipe`], [`PipeWriter`] and [`PipeReader`] over the protocol of [`super::state`], in a
//! segment.

use std::fmt;
use std::io::{self, BufRead, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::state::{End, PipeState, PipeWords, ReadStep, Refused, WriteStep};
use crate::given::{Given, GivenEnds};
use crate::handle::{Handle, fingerprint};
use crate::header::Kind;
use crate::protocol::BadState;
use crate::segment::{Element, Layout, Segment};
use crate::sys;
use crate::wait::{Watch, own_tag};
use crate::{Error, Result};

/// How long an end keeps looking at an empty (or full) ring before it sleeps: the other side
/// moves its counter a piece at a time, every few microseconds while it copies, far sooner
/// than a sleep and a wake.
const SPIN_FOR: Duration = Duration::from_micros(50);

/// The look before a sleep: for [`SPIN_FOR`] from the first time the ring was found empty
/// (or full), yielding the core between looks. The yield matters when both ends run on one
/// core (a wake tends to put the woken process beside its waker): a spin that keeps the core
/// only delays the other side, which cannot move before the spinner gives up; on a core of
/// its own, a yield with nobody else to run returns at once.
struct Spin {
    /// When the look ends, from the first turn.
    until: Option<Instant>,
    /// Set when it has ended: the next step raises the flag and may sleep.
    over: bool,
}

impl Spin {
    fn new() -> Spin {
        Spin {
            until: None,
            over: false,
        }
    }

    /// Whether the look is over (the step announces a sleep).
    fn over(&self) -> bool {
        self.over
    }

    /// One more look at the ring after this one: yields the core, or ends the look.
    fn turn(&mut self) {
        let now = Instant::now();
        if now < *self.until.get_or_insert(now + SPIN_FOR) {
            std::thread::yield_now();
        } else {
            self.over = true;
        }
    }
}

/// The proof that the calling process owns a pipe's reader end and that the protocol's last
/// step found the bytes it covers between the head and the tail (all of them, or one piece
/// that the head has not passed yet), which `sys::readable_bytes` consumes. Only this module
/// makes one.
pub(crate) struct Readable(());

/// The proof that the calling process owns a pipe's writer end and that the protocol's last
/// step found the bytes it covers free (all of them, or one piece that the tail has not
/// passed yet), which `sys::writable_bytes` consumes. Only this module makes one.
pub(crate) struct Writable(());

/// The type whose fingerprint a pipe's header records: both ends' handles name the one
/// segment.
struct PipeSegment;

/// Ends given away by this process and not opened yet, checked at the next call of this
/// module.
static GIVEN: GivenEnds<End> = GivenEnds::new();

/// Lets go of the ends given away that someone opened since.
fn sweep() {
    GIVEN.sweep(|g| state(&g.segment, &g.layout).in_transit_from(g.end, g.tag));
}

/// Creates a pipe whose ring holds `capacity` bytes (0 acts as 1), in a segment of its own:
/// the counterpart of the `Netmcore_buffer` of OCamlnet's pipeline example and of Python's
/// `multiprocessing.Pipe` (one way, bytes).
///
/// ```
/// use std::io::{BufRead, Read, Write};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (mut writer, reader) = netmcore_shared::pipe(16)?;
/// // Another process would open the reader: `PipeReader::open(reader.into_handle())`.
/// let consumer = std::thread::spawn(move || {
///     let mut text = String::new();
///     reader.take(1 << 20).read_to_string(&mut text).map(|_| text)
/// });
/// writer.write_all(b"more bytes than the ring holds at once\n")?;
/// drop(writer); // the end of the stream
/// assert_eq!(consumer.join().expect("reader")?, "more bytes than the ring holds at once\n");
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`Error::Master`] when no master can create the segment (a worker whose master is gone or
/// beyond the tags, a ledger or `shm_open` failure); [`Error::TooLarge`] for a capacity that
/// does not fit the address space.
pub fn pipe(capacity: usize) -> Result<(PipeWriter, PipeReader)> {
    sweep();
    let capacity = capacity.max(1);
    let layout = Layout::pipe(capacity).ok_or(Error::TooLarge {
        size: capacity,
        max: isize::MAX.unsigned_abs(),
    })?;
    let me = own_tag()?;
    // Zeroes are the initial counters and flags; the ends are written below, before anyone
    // else can know the segment's id.
    let segment = Segment::create(
        Kind::Pipe,
        fingerprint::<PipeSegment>(),
        layout.sizes(),
        |_| Ok(()),
    )?;
    PipeState::init(words(&segment, &layout), me, me);
    let end = |end| Pipe {
        segment: segment.clone(),
        layout,
        tag: me,
        pid: std::process::id(),
        end,
        given: false,
    };
    Ok((
        PipeWriter {
            pipe: end(End::Writer),
        },
        PipeReader {
            pipe: end(End::Reader),
            lent: None,
        },
    ))
}

/// One end of a pipe in this process.
struct Pipe {
    segment: Arc<Segment>,
    layout: Layout,
    /// The tag the end is owned with.
    tag: u32,
    /// The Unix pid of the process that owns the end: a child forked with a copy of the value
    /// neither uses nor closes it.
    pid: u32,
    end: End,
    /// Given away with `into_handle`: the drop closes nothing.
    given: bool,
}

impl Pipe {
    /// Opens the end `end` given away as `handle`.
    fn open<S: 'static>(handle: Handle<S>, end: End) -> Result<Pipe> {
        if !handle.is_of_its_type() {
            return Err(Error::WrongType {
                expected: format!("a handle of {}", std::any::type_name::<S>()),
                found: "a handle of another type".to_owned(),
            });
        }
        let me = own_tag()?;
        let segment = Segment::open(handle.id(), Kind::Pipe, fingerprint::<PipeSegment>())?;
        let layout = Layout::check(segment.header(), Element::of::<u8>(), segment.id())?;
        if layout.total > segment.mapping().len() {
            return Err(segment.corrupt(format!(
                "the layout needs {} bytes, the mapping has {}",
                layout.total,
                segment.mapping().len()
            )));
        }
        let opened = state(&segment, &layout).open(end, me, &Watch::new());
        // The holds of ends this process gave away and someone opened (this call, say) can go
        // now that the segment is mapped here.
        sweep();
        match opened {
            Ok(()) => {}
            Err(Refused::Busy) => return Err(Error::Busy),
            Err(Refused::Gone) => return Err(Error::Disconnected),
        }
        Ok(Pipe {
            segment,
            layout,
            tag: me,
            pid: std::process::id(),
            end,
            given: false,
        })
    }

    /// The protocol over this pipe's words.
    fn state(&self) -> PipeState<'_> {
        state(&self.segment, &self.layout)
    }

    /// The ring's capacity.
    fn capacity(&self) -> u64 {
        self.layout.payload_len as u64
    }

    /// Where byte `at` of the stream lies in the ring, from its start.
    fn ring_offset(&self, at: u64) -> usize {
        // Below the capacity, which is a `usize`.
        usize::try_from(at % self.capacity()).unwrap_or(0)
    }

    /// An error unless the calling process owns this end (not a child forked with a copy).
    fn check_process(&self) -> io::Result<()> {
        if std::process::id() == self.pid {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "pipe {}: this end belongs to the process that forked this one",
                self.segment.id()
            )))
        }
    }

    /// The `InvalidData` error of a word no state allows.
    fn corrupt(&self, bad: BadState) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            bad.into_error(self.segment.id()),
        )
    }

    /// The broken pipe error: the other end closed or its process died.
    fn broken(&self) -> io::Error {
        let what = match self.end {
            End::Writer => "the reader closed its end or its process died",
            End::Reader => "the writer's process died before it closed its end",
        };
        io::Error::new(
            io::ErrorKind::BrokenPipe,
            format!("pipe {}: {what}", self.segment.id()),
        )
    }

    /// Gives this end away: it stays this process's until one process opens it.
    fn give(mut self) -> Arc<Segment> {
        self.given = true;
        if self.check_process().is_ok() && self.state().give(self.end, self.tag) {
            GIVEN.hold(Given {
                segment: self.segment.clone(),
                layout: self.layout,
                end: self.end,
                tag: self.tag,
                pid: self.pid,
            });
        }
        self.segment.clone()
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        if !self.given && self.check_process().is_ok() {
            let (word, wake) = self.state().close(self.end, self.tag);
            let _ = sys::wake(word, wake);
        }
    }
}

/// The words of the pipe in `segment`, laid out as `layout`: computed at creation or checked
/// against the header at open, so they are always in bounds and aligned.
fn words<'a>(segment: &'a Segment, layout: &Layout) -> &'a PipeWords {
    sys::words_at::<PipeWords, _>(segment.mapping(), layout.words)
        .unwrap_or_else(|| unreachable!("the layout of a mapped pipe holds its words"))
}

/// The protocol over the pipe in `segment`.
fn state<'a>(segment: &'a Segment, layout: &Layout) -> PipeState<'a> {
    PipeState::attach(words(segment, layout), layout.payload_len as u64)
}

/// The writing end of a [`pipe`]: [`io::Write`]. Dropping it closes the stream: the reader
/// reads what was written, then end-of-file.
///
/// A `write` blocks while the ring is full, and writes as much as fits: a piece at a time (a
/// quarter of the ring, from 4 to 16 KiB), each readable as soon as it is in, so that the
/// reader copies one out while the next is copied in. It fails with
/// [`io::ErrorKind::BrokenPipe`] once the reader dropped its end or its process died;
/// with [`io::ErrorKind::InvalidData`] when the ring's counters are corrupt.
///
/// **Moving.** [`PipeWriter::into_handle`] gives the end away; exactly one process (this one
/// or another) opens it with [`PipeWriter::open`], and a second open is [`Error::Busy`]. Until
/// then the end is this process's: if it ends first, the reader gets a broken pipe (a read
/// waiting on it is woken by the death).
pub struct PipeWriter {
    pipe: Pipe,
}

/// The reading end of a [`pipe`]: [`io::Read`] and [`io::BufRead`], whose `fill_buf` lends
/// the ring's bytes without a copy.
///
/// A read blocks while the ring is empty; it frees the ring a piece at a time as it copies.
/// It returns end-of-file (`Ok(0)`) after the last
/// byte once the writer dropped its end, and fails with [`io::ErrorKind::BrokenPipe`] after
/// the last byte when the writer's process died without closing it — never a clean end;
/// with [`io::ErrorKind::InvalidData`] when the ring's counters are corrupt.
///
/// **Moving.** As [`PipeWriter`]: [`PipeReader::into_handle`], then one
/// [`PipeReader::open`].
pub struct PipeReader {
    pipe: Pipe,
    /// What the last `fill_buf` lent: the head and how many bytes.
    lent: Option<(u64, usize)>,
}

impl PipeWriter {
    /// Gives this end away, to be opened by exactly one process with [`PipeWriter::open`]
    /// (the handle travels in a process argument or a message). This process keeps the
    /// segment, and the end counts as its own, until then or until it ends.
    #[must_use = "the end can only be opened from its handle"]
    pub fn into_handle(self) -> Handle<PipeWriter> {
        Handle::new(self.pipe.give().id())
    }

    /// Opens the writer end given away as `handle`.
    ///
    /// # Errors
    ///
    /// [`Error::Busy`] when the end was opened already; [`Error::Disconnected`] when the
    /// process that gave it away died first; [`Error::WrongType`] for a handle of another
    /// structure; [`Error::Corrupt`] for a segment whose header does not hold;
    /// [`Error::Master`] for an unknown id (`NoResource`: the pipe is gone) or no master.
    pub fn open(handle: Handle<PipeWriter>) -> Result<PipeWriter> {
        Ok(PipeWriter {
            pipe: Pipe::open(handle, End::Writer)?,
        })
    }
}

impl Write for PipeWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_some(buf, true)
    }

    /// Nothing to do: a write is in the ring when it returns.
    fn flush(&mut self) -> io::Result<()> {
        self.pipe.check_process()
    }
}

impl PipeWriter {
    /// Writes what fits of `buf`, a piece at a time, each published as soon as it is in the
    /// ring so that the reader copies it out while the next one is copied in. Returns once
    /// `buf` is written, or once some of it is and the ring is full (the caller comes back);
    /// when the ring is full before the first byte, spins a little and then sleeps if
    /// `blocking`, or else fails with [`io::ErrorKind::WouldBlock`].
    fn write_some(&mut self, buf: &[u8], blocking: bool) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let pipe = &self.pipe;
        pipe.check_process()?;
        let state = pipe.state();
        let watch = Watch::new();
        let mut spin = Spin::new();
        let mut done = 0;
        loop {
            let epoch = watch.epoch();
            let announce = spin.over();
            let step = match state.write_step(announce, &watch) {
                Ok(step) => step,
                // What is written stays written; the next call reports the rest.
                Err(_) if done > 0 => return Ok(done),
                Err(bad) => return Err(pipe.corrupt(bad)),
            };
            match step {
                WriteStep::Space { tail, len } => {
                    let len = len.min((buf.len() - done) as u64);
                    let mut moved = 0;
                    while moved < len {
                        let at = tail.wrapping_add(moved);
                        let n = state.next_piece(at, len - moved);
                        let n_usize = usize::try_from(n).unwrap_or(usize::MAX);
                        let to = sys::writable_bytes(
                            pipe.segment.mapping(),
                            pipe.layout.payload + pipe.ring_offset(at),
                            n_usize,
                            Writable(()),
                        )
                        .unwrap_or_else(|| unreachable!("the ring holds its free bytes"));
                        to.copy_from_slice(&buf[done..done + n_usize]);
                        let wake = state.publish(at, n);
                        let _ = sys::wake(&state.words().data_seq, wake);
                        moved += n;
                        done += n_usize;
                    }
                    if done == buf.len() {
                        return Ok(done);
                    }
                }
                WriteStep::Broken if done > 0 => return Ok(done),
                WriteStep::Broken => return Err(pipe.broken()),
                WriteStep::Park { .. } if done > 0 => return Ok(done),
                WriteStep::Park { .. } if !blocking => {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                WriteStep::Park { expected } => {
                    if announce {
                        watch.park(&state.words().space_seq, expected, epoch, None);
                    } else {
                        spin.turn();
                    }
                }
            }
        }
    }
}

impl PipeReader {
    /// Gives this end away, as [`PipeWriter::into_handle`].
    #[must_use = "the end can only be opened from its handle"]
    pub fn into_handle(self) -> Handle<PipeReader> {
        Handle::new(self.pipe.give().id())
    }

    /// Opens the reader end given away as `handle`.
    ///
    /// # Errors
    ///
    /// As [`PipeWriter::open`].
    pub fn open(handle: Handle<PipeReader>) -> Result<PipeReader> {
        Ok(PipeReader {
            pipe: Pipe::open(handle, End::Reader)?,
            lent: None,
        })
    }
}

impl BufRead for PipeReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.fill(true)
    }

    fn consume(&mut self, amt: usize) {
        let Some((head, lent)) = self.lent.take() else {
            return;
        };
        let n = amt.min(lent);
        if n > 0 {
            let state = self.pipe.state();
            let wake = state.consume(head, n as u64);
            let _ = sys::wake(&state.words().space_seq, wake);
        }
        if n < lent {
            self.lent = Some((head.wrapping_add(n as u64), lent - n));
        }
    }
}

impl PipeReader {
    /// The readable bytes up to the end of the ring; when the ring is empty and the writer
    /// alive, spins a little and then sleeps if `blocking`, or else fails with
    /// [`io::ErrorKind::WouldBlock`].
    fn fill(&mut self, blocking: bool) -> io::Result<&[u8]> {
        let pipe = &self.pipe;
        pipe.check_process()?;
        let state = pipe.state();
        let capacity = pipe.capacity();
        let watch = Watch::new();
        let mut spin = Spin::new();
        loop {
            let epoch = watch.epoch();
            let announce = spin.over();
            match state
                .read_step(announce, &watch)
                .map_err(|b| pipe.corrupt(b))?
            {
                ReadStep::Data { head, len } => {
                    // Up to the end of the ring; the rest comes at the next call.
                    let start = pipe.ring_offset(head);
                    let to_end = capacity - head % capacity;
                    let n = usize::try_from(len.min(to_end)).unwrap_or(usize::MAX);
                    self.lent = Some((head, n));
                    return Ok(sys::readable_bytes(
                        pipe.segment.mapping(),
                        pipe.layout.payload + start,
                        n,
                        Readable(()),
                    )
                    .unwrap_or_else(|| unreachable!("the ring holds its readable bytes")));
                }
                ReadStep::Eof => {
                    self.lent = None;
                    return Ok(&[]);
                }
                ReadStep::Broken => return Err(pipe.broken()),
                ReadStep::Park { .. } if !blocking => {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                ReadStep::Park { expected } => {
                    if announce {
                        watch.park(&state.words().data_seq, expected, epoch, None);
                    } else {
                        spin.turn();
                    }
                }
            }
        }
    }

    /// Reads into `buf` a piece at a time, each freed as soon as it is copied out so that
    /// the writer refills it while the next one is copied. Returns once `buf` is full, or once
    /// some bytes came and no more are there now; before the first byte, as
    /// [`PipeReader::fill`].
    fn read_some(&mut self, buf: &mut [u8], blocking: bool) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // A `consume` after a `read` has nothing of the last `fill_buf` left to free.
        self.lent = None;
        let pipe = &self.pipe;
        pipe.check_process()?;
        let state = pipe.state();
        let watch = Watch::new();
        let mut spin = Spin::new();
        let mut done = 0;
        loop {
            let epoch = watch.epoch();
            let announce = spin.over();
            let step = match state.read_step(announce, &watch) {
                Ok(step) => step,
                Err(_) if done > 0 => return Ok(done),
                Err(bad) => return Err(pipe.corrupt(bad)),
            };
            match step {
                ReadStep::Data { head, len } => {
                    let len = len.min((buf.len() - done) as u64);
                    let mut moved = 0;
                    while moved < len {
                        let at = head.wrapping_add(moved);
                        let n = state.next_piece(at, len - moved);
                        let n_usize = usize::try_from(n).unwrap_or(usize::MAX);
                        let from = sys::readable_bytes(
                            pipe.segment.mapping(),
                            pipe.layout.payload + pipe.ring_offset(at),
                            n_usize,
                            Readable(()),
                        )
                        .unwrap_or_else(|| unreachable!("the ring holds its readable bytes"));
                        buf[done..done + n_usize].copy_from_slice(from);
                        let wake = state.consume(at, n);
                        let _ = sys::wake(&state.words().space_seq, wake);
                        moved += n;
                        done += n_usize;
                    }
                    if done == buf.len() {
                        return Ok(done);
                    }
                }
                ReadStep::Eof => return Ok(done),
                // The bytes before the break are the caller's; the next call reports it.
                ReadStep::Broken if done > 0 => return Ok(done),
                ReadStep::Broken => return Err(pipe.broken()),
                ReadStep::Park { .. } if done > 0 => return Ok(done),
                ReadStep::Park { .. } if !blocking => {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                ReadStep::Park { expected } => {
                    if announce {
                        watch.park(&state.words().data_seq, expected, epoch, None);
                    } else {
                        spin.turn();
                    }
                }
            }
        }
    }
}

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_some(buf, true)
    }
}

impl fmt::Debug for PipeWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipeWriter")
            .field("id", &self.pipe.segment.id())
            .field("capacity", &self.pipe.capacity())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for PipeReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipeReader")
            .field("id", &self.pipe.segment.id())
            .field("capacity", &self.pipe.capacity())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, Read, Write};

    use proptest::prelude::*;

    use super::*;
    use crate::testing::scribble;

    /// A checksum that sees order: FNV-1a over the bytes.
    fn fnv(bytes: impl IntoIterator<Item = u8>) -> u64 {
        bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    /// The `i`th byte of the test stream.
    fn byte(i: usize) -> u8 {
        (i.wrapping_mul(31) ^ (i >> 9)) as u8
    }

    #[test]
    fn a_megabyte_streams_through_a_small_ring_then_end_of_file() {
        const LEN: usize = 1 << 20;
        let (mut writer, mut reader) = pipe(4093).expect("a pipe before startup");
        let producer = std::thread::spawn(move || {
            let data: Vec<u8> = (0..LEN).map(byte).collect();
            for chunk in data.chunks(1000) {
                writer.write_all(chunk).expect("the reader lives");
            }
        });
        let mut got = Vec::new();
        reader
            .read_to_end(&mut got)
            .expect("end-of-file after the data");
        producer.join().expect("writer");
        assert_eq!(got.len(), LEN);
        assert_eq!(fnv(got), fnv((0..LEN).map(byte)));
        assert_eq!(reader.read(&mut [0; 4]).expect("still the end"), 0);
    }

    #[test]
    fn fill_buf_lends_the_ring_up_to_its_end() {
        let (mut writer, mut reader) = pipe(8).expect("a pipe");
        writer.write_all(b"abcdef").expect("fits");
        assert_eq!(reader.fill_buf().expect("data"), b"abcdef");
        reader.consume(4);
        assert_eq!(reader.fill_buf().expect("data"), b"ef");
        reader.consume(2);
        // Six more bytes wrap around the end of the ring.
        assert_eq!(writer.write(b"ghijkl").expect("room"), 6);
        assert_eq!(reader.fill_buf().expect("data"), b"gh");
        reader.consume(2);
        assert_eq!(reader.fill_buf().expect("data"), b"ijkl");
        reader.consume(9);
        assert_eq!(
            writer.write(b"0123456789").expect("room"),
            8,
            "as much as fits"
        );
        drop(writer);
        let mut rest = String::new();
        reader
            .read_to_string(&mut rest)
            .expect("the rest, then the end");
        assert_eq!(rest, "01234567");
    }

    #[test]
    fn a_dropped_reader_breaks_the_writer_even_while_it_waits() {
        let (mut writer, reader) = pipe(16).expect("a pipe");
        let closer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            drop(reader);
        });
        let err = writer.write_all(&[7; 64]).expect_err("nobody reads");
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe, "{err}");
        closer.join().expect("closer");
        assert_eq!(
            writer.write(b"x").expect_err("still broken").kind(),
            io::ErrorKind::BrokenPipe
        );
    }

    #[test]
    fn an_end_given_away_opens_exactly_once() {
        let (writer, reader) = pipe(16).expect("a pipe");
        let handle = writer.into_handle();
        let mut writer = PipeWriter::open(handle).expect("the first open");
        assert!(matches!(PipeWriter::open(handle), Err(Error::Busy)));
        writer.write_all(b"moved").expect("the reader lives");
        drop(writer);
        let handle = reader.into_handle();
        // A reader handle forged from the writer's type is refused.
        let forged = Handle::<PipeReader>::from_parts(handle.id(), fingerprint::<PipeWriter>());
        assert!(matches!(
            PipeReader::open(forged),
            Err(Error::WrongType { .. })
        ));
        let mut reader = PipeReader::open(handle).expect("the first open");
        let mut text = String::new();
        reader
            .read_to_string(&mut text)
            .expect("the data, then the end");
        assert_eq!(text, "moved");
        assert!(matches!(PipeReader::open(handle), Err(Error::Busy)));
        // An end never given away cannot be opened either.
        let (writer, _reader) = pipe(4).expect("a pipe");
        let never = Handle::<PipeWriter>::new(writer.pipe.segment.id());
        assert!(matches!(PipeWriter::open(never), Err(Error::Busy)));
    }

    proptest! {
        /// Random bytes written anywhere over a pipe's segment — header, counters, flags, end
        /// words, ring — give an error when the segment is checked again (`Corrupt` or
        /// `WrongType`), or a pipe that still works; and the ends already open keep working
        /// without a panic: a write or read that would block says so (the test's own
        /// non-blocking calls), corrupt counters are `InvalidData`, an end word naming another
        /// process (dead before startup) is a broken pipe.
        #[test]
        fn scribbled_pipe_segments_give_errors_never_panics(
            (offset, bytes) in scribble::scribbles(&[0..128, 128..320, 320..384, 0..384]),
        ) {
            let (mut writer, mut reader) = pipe(64).expect("a pipe before startup");
            writer.write_all(b"0123456789").expect("fits");
            let id = writer.pipe.segment.id();
            let name = scribble::write(id, offset, &bytes);
            let checked = scribble::recheck(
                id,
                &name,
                Kind::Pipe,
                fingerprint::<PipeSegment>(),
                Element::of::<u8>(),
            );
            prop_assert!(checked.is_ok(), "{checked:?}");
            for _ in 0..2 {
                match writer.write_some(b"abc", false) {
                    Ok(n) => prop_assert!((1..=3).contains(&n)),
                    Err(e) => prop_assert!(
                        matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock
                                | io::ErrorKind::InvalidData
                                | io::ErrorKind::BrokenPipe
                        ),
                        "{e}"
                    ),
                }
                let mut out = [0; 5];
                match reader.read_some(&mut out, false) {
                    Ok(n) => prop_assert!(n <= 5),
                    Err(e) => prop_assert!(
                        matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock
                                | io::ErrorKind::InvalidData
                                | io::ErrorKind::BrokenPipe
                        ),
                        "{e}"
                    ),
                }
                match reader.fill(false).map(<[u8]>::len) {
                    Ok(n) => {
                        prop_assert!(n <= 64);
                        reader.consume(n);
                    }
                    Err(e) => prop_assert!(
                        matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock
                                | io::ErrorKind::InvalidData
                                | io::ErrorKind::BrokenPipe
                        ),
                        "{e}"
                    ),
                }
            }
        }
    }
}
