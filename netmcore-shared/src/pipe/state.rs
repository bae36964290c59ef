//! The atomics protocol of the pipe: a single-producer, single-consumer byte ring, without the
//! futex.
//!
//! # Counters
//!
//! `head` (written only by the reader) and `tail` (written only by the writer) count the bytes
//! ever read and ever written; they only grow, and byte `i` of the stream lies at `i %
//! capacity` of the ring. `tail - head` bytes are readable, `capacity - (tail - head)` are
//! free. The writer fills bytes `tail..` and then publishes them by storing a larger `tail`;
//! the reader reads bytes `head..tail` and then frees them by storing a larger `head`. So the
//! ring bytes that the counters give to one side are never touched by the other, and what the
//! writer wrote is visible to the reader that read the `tail` published after it (and the
//! same for the space the reader freed). Every counter read from shared memory is checked:
//! `tail < head` or `tail - head > capacity` is a [`BadState`], never a panic.
//!
//! # Pieces
//!
//! Neither side moves its counter once per call: the writer publishes, and the reader frees,
//! every [`PipeState::piece`] bytes (a quarter of the ring, from 4 KiB to 16 KiB, never more
//! than the ring). So while the writer copies one piece the reader already copies the one
//! before, and the writer refills the piece the reader has just freed: both copy at the same
//! time instead of taking turns over the whole ring. A piece never crosses the end of the
//! ring ([`PipeState::next_piece`]), and the free or readable bytes a step found stay so until
//! the same side moves its own counter past them, so one step serves several pieces.
//!
//! # Sleeping
//!
//! The reader sleeps while the ring is empty on `data_seq`, the writer while it is full on
//! `space_seq`. A side about to sleep reads the sequence word, raises its `*_sleeping` flag
//! with a swap and checks its condition again; the other side changes the counters or its
//! end and then swaps the sleeper's flag to 0: if it was raised, it bumps the sequence word
//! and asks for a wake. Both are read-modify-writes of one word, so the later reads the
//! earlier: if the sleeper's swap comes second it synchronizes with the notifier's and its
//! re-check sees the change; if the notifier's comes second it sees the flag, and the sequence
//! moves under the sleeper's `expected`. No wakeup is lost, and no store-then-load on two
//! words is relied on. A flag that is already down costs the notifier no syscall.
//!
//! # Ends
//!
//! Each end has a word: the tag of the process that owns it in bits 0..30, and its state in
//! bits 30 and 31:
//!
//! * `OPEN` (00): owned by the live or dead process `tag`;
//! * `TRANSIT` (01): given away by `tag` with `into_handle`, until one process opens it (a CAS
//!   to its own tag; a second open finds no `TRANSIT` and is refused);
//! * `CLOSED` (10): dropped by its owner; the writer's close is the end of the stream;
//! * `BROKEN` (11): its process (`tag`) was found dead by the other side, for good.
//!
//! The reader, when the ring is empty: end-of-file if the writer's end is `CLOSED` (set after
//! its last `tail`, so the reader that sees it sees all the data), a broken pipe if it is
//! `BROKEN` or its process is dead (then it marks it `BROKEN` so that a late open cannot bring
//! it back), else it sleeps. The writer: a broken pipe as soon as the reader's end is `CLOSED`,
//! `BROKEN` or dead. A death wakes sleepers through the death board's epoch.

use crate::protocol::{BadState, Peers, TAG_MASK, Wake};
use crate::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// The state bits of an end word.
const STATE: u32 = !TAG_MASK;
/// An end given away by its tag, not opened yet.
pub(crate) const TRANSIT: u32 = 1 << 30;
/// An end its owner dropped.
const CLOSED: u32 = 1 << 31;
/// An end whose process was found dead.
const BROKEN: u32 = CLOSED | TRANSIT;

/// The words of a pipe, as laid out in its segment: the reader's and the writer's words on
/// cache lines of their own, then the ends.
#[repr(C, align(64))]
pub(crate) struct PipeWords {
    /// Bytes ever read (written only by the reader).
    pub(crate) head: AtomicU64,
    /// Bumped when the reader frees space or closes while the writer sleeps; the writer
    /// sleeps on it.
    pub(crate) space_seq: AtomicU32,
    /// The reader's flag: the writer may sleep on `space_seq`.
    pub(crate) writer_sleeping: AtomicU32,
    _pad0: [AtomicU64; 6],
    /// Bytes ever written (written only by the writer).
    pub(crate) tail: AtomicU64,
    /// Bumped when the writer publishes or closes while the reader sleeps; the reader sleeps
    /// on it.
    pub(crate) data_seq: AtomicU32,
    /// The writer's flag: the reader may sleep on `data_seq`.
    pub(crate) reader_sleeping: AtomicU32,
    _pad1: [AtomicU64; 6],
    /// The writer's end (see the module docs).
    pub(crate) writer_end: AtomicU32,
    /// The reader's end.
    pub(crate) reader_end: AtomicU32,
    _pad2: [AtomicU64; 7],
}

impl PipeWords {
    /// A new pipe whose ends are owned by `writer` and `reader`.
    #[cfg(test)]
    pub(crate) fn new(writer: u32, reader: u32) -> PipeWords {
        let words = PipeWords {
            head: AtomicU64::new(0),
            space_seq: AtomicU32::new(0),
            writer_sleeping: AtomicU32::new(0),
            _pad0: std::array::from_fn(|_| AtomicU64::new(0)),
            tail: AtomicU64::new(0),
            data_seq: AtomicU32::new(0),
            reader_sleeping: AtomicU32::new(0),
            _pad1: std::array::from_fn(|_| AtomicU64::new(0)),
            writer_end: AtomicU32::new(0),
            reader_end: AtomicU32::new(0),
            _pad2: std::array::from_fn(|_| AtomicU64::new(0)),
        };
        PipeState::init(&words, writer, reader);
        words
    }
}

/// Which end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The writing end.
    Writer,
    /// The reading end.
    Reader,
}

/// What a step of the reader leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadStep {
    /// `len` bytes (at least one) are readable from byte `head` of the stream.
    Data {
        /// The reader's counter.
        head: u64,
        /// Readable bytes.
        len: u64,
    },
    /// The writer closed the stream and every byte was read.
    Eof,
    /// The writer's process died without closing, and every byte it wrote was read.
    Broken,
    /// Empty: sleep while `data_seq` holds `expected`.
    Park {
        /// The value to sleep on.
        expected: u32,
    },
}

/// What a step of the writer leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteStep {
    /// `len` bytes (at least one) are free from byte `tail` of the stream.
    Space {
        /// The writer's counter.
        tail: u64,
        /// Free bytes.
        len: u64,
    },
    /// The reader closed its end or its process died.
    Broken,
    /// Full: sleep while `space_seq` holds `expected`.
    Park {
        /// The value to sleep on.
        expected: u32,
    },
}

/// Why an open of an end in transit was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The end is not in transit: someone opened it already (or it was never given away).
    Busy,
    /// The process that gave it away died before anyone opened it.
    Gone,
}

/// The smallest piece a ring that holds more is moved in.
const PIECE_MIN: u64 = 4 << 10;
/// The largest piece: a few of them in flight keep both sides busy, and one fits the cache
/// of a core beside the caller's buffer.
const PIECE_MAX: u64 = 16 << 10;

/// The protocol over the words of one pipe of `capacity` bytes.
#[derive(Clone, Copy)]
pub(crate) struct PipeState<'a> {
    words: &'a PipeWords,
    capacity: u64,
    piece: u64,
}

impl<'a> PipeState<'a> {
    /// The protocol over `words`, for a ring of `capacity` bytes (at least 1), moved in pieces
    /// of a quarter of the ring between 4 and 16 KiB (the whole ring when it is smaller).
    pub(crate) fn attach(words: &'a PipeWords, capacity: u64) -> PipeState<'a> {
        let piece = (capacity / 4)
            .clamp(PIECE_MIN, PIECE_MAX)
            .min(capacity)
            .max(1);
        PipeState {
            words,
            capacity,
            piece,
        }
    }

    /// The protocol with pieces of `piece` bytes (at least 1), for the models' tiny rings.
    #[cfg(test)]
    pub(crate) fn with_piece(words: &'a PipeWords, capacity: u64, piece: u64) -> PipeState<'a> {
        PipeState {
            words,
            capacity,
            piece: piece.clamp(1, capacity.max(1)),
        }
    }

    /// How many bytes a side moves between two updates of its counter.
    #[cfg(test)]
    pub(crate) fn piece(&self) -> u64 {
        self.piece
    }

    /// The length of the next piece from byte `at` of the stream when `left` bytes (at least
    /// one) remain of what a step found: at most a piece, and never across the end of the
    /// ring, so that it is one slice of the ring from `at % capacity`.
    pub(crate) fn next_piece(&self, at: u64, left: u64) -> u64 {
        let to_end = self.capacity.max(1) - at % self.capacity.max(1);
        left.min(self.piece).min(to_end)
    }

    /// Writes the ends of a new pipe: owned by `writer` and `reader` (tags).
    pub(crate) fn init(words: &PipeWords, writer: u32, reader: u32) {
        words.writer_end.store(writer & TAG_MASK, Ordering::SeqCst);
        words.reader_end.store(reader & TAG_MASK, Ordering::SeqCst);
    }

    /// The words.
    pub(crate) fn words(&self) -> &'a PipeWords {
        self.words
    }

    /// The word of `end`.
    fn end_word(&self, end: End) -> &'a AtomicU32 {
        match end {
            End::Writer => &self.words.writer_end,
            End::Reader => &self.words.reader_end,
        }
    }

    /// The counters, checked: `head <= tail <= head + capacity`.
    fn counters(&self) -> Result<(u64, u64), BadState> {
        let head = self.words.head.load(Ordering::SeqCst);
        let tail = self.words.tail.load(Ordering::SeqCst);
        if tail < head {
            return Err(BadState::new("pipe tail behind its head", head - tail));
        }
        if tail - head > self.capacity {
            return Err(BadState::new(
                "pipe holds more bytes than its capacity",
                tail - head,
            ));
        }
        Ok((head, tail))
    }

    /// Whether the other side of `end` can no longer act: its word is `BROKEN`, or it names a
    /// dead process while open or in transit (then it is marked `BROKEN`). `Ok(Some(closed))`
    /// tells a closed end (`true`) from a broken one.
    fn peer_gone(&self, end: End, peers: &impl Peers) -> Option<bool> {
        let word = self.end_word(end);
        let mut found = word.load(Ordering::SeqCst);
        loop {
            match found & STATE {
                CLOSED => return Some(true),
                BROKEN => return Some(false),
                _ if peers.is_dead(found & TAG_MASK) => {
                    match word.compare_exchange(
                        found,
                        (found & TAG_MASK) | BROKEN,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    ) {
                        Ok(_) => return Some(false),
                        Err(now) => found = now,
                    }
                }
                _ => return None,
            }
        }
    }

    /// What the reader can do without sleeping: read, end, or `None` (empty, writer alive).
    fn read_ready(&self, peers: &impl Peers) -> Result<Option<ReadStep>, BadState> {
        let (head, tail) = self.counters()?;
        if tail > head {
            return Ok(Some(ReadStep::Data {
                head,
                len: tail - head,
            }));
        }
        // Empty. The writer's close comes after its last tail: read the end, then the tail
        // again.
        let Some(closed) = self.peer_gone(End::Writer, peers) else {
            return Ok(None);
        };
        let (head, tail) = self.counters()?;
        Ok(Some(if tail > head {
            ReadStep::Data {
                head,
                len: tail - head,
            }
        } else if closed {
            ReadStep::Eof
        } else {
            ReadStep::Broken
        }))
    }

    /// A step of the reader. With `announce`, an empty ring raises the reader's sleeping flag
    /// and checks again before it says [`ReadStep::Park`]; without, it says `Park` at once
    /// (the caller spins).
    ///
    /// # Errors
    ///
    /// [`BadState`] for counters that do not fit the capacity.
    pub(crate) fn read_step(
        &self,
        announce: bool,
        peers: &impl Peers,
    ) -> Result<ReadStep, BadState> {
        let expected = self.words.data_seq.load(Ordering::SeqCst);
        if let Some(step) = self.read_ready(peers)? {
            return Ok(step);
        }
        if announce {
            // A swap, as the notifier's: of two RMWs on one word, the later reads the
            // earlier, so this re-check sees the change or the notifier sees the flag.
            let _ = self.words.reader_sleeping.swap(1, Ordering::SeqCst);
            if let Some(step) = self.read_ready(peers)? {
                return Ok(step);
            }
        }
        Ok(ReadStep::Park { expected })
    }

    /// The reader has read `n` bytes from `head`, its counter now (within what its last
    /// [`ReadStep::Data`] found: one piece of it, or all): frees them, and says whom to wake
    /// on `space_seq`.
    pub(crate) fn consume(&self, head: u64, n: u64) -> Wake {
        // A counter that would wrap is found behind the other at the next step: corrupt.
        self.words
            .head
            .store(head.wrapping_add(n), Ordering::SeqCst);
        notify(&self.words.writer_sleeping, &self.words.space_seq)
    }

    /// What the writer can do without sleeping: write, or stop, or `None` (full, reader
    /// alive).
    fn write_ready(&self, peers: &impl Peers) -> Result<Option<WriteStep>, BadState> {
        if self.peer_gone(End::Reader, peers).is_some() {
            return Ok(Some(WriteStep::Broken));
        }
        let (head, tail) = self.counters()?;
        let free = self.capacity - (tail - head);
        Ok((free > 0).then_some(WriteStep::Space { tail, len: free }))
    }

    /// A step of the writer, as [`PipeState::read_step`] for the free space.
    ///
    /// # Errors
    ///
    /// [`BadState`] for counters that do not fit the capacity.
    pub(crate) fn write_step(
        &self,
        announce: bool,
        peers: &impl Peers,
    ) -> Result<WriteStep, BadState> {
        let expected = self.words.space_seq.load(Ordering::SeqCst);
        if let Some(step) = self.write_ready(peers)? {
            return Ok(step);
        }
        if announce {
            // A swap, as the notifier's: of two RMWs on one word, the later reads the
            // earlier, so this re-check sees the change or the notifier sees the flag.
            let _ = self.words.writer_sleeping.swap(1, Ordering::SeqCst);
            if let Some(step) = self.write_ready(peers)? {
                return Ok(step);
            }
        }
        Ok(WriteStep::Park { expected })
    }

    /// The writer has written `n` bytes from `tail`, its counter now (within what its last
    /// [`WriteStep::Space`] found: one piece of it, or all): publishes them, and says whom to
    /// wake on `data_seq`.
    pub(crate) fn publish(&self, tail: u64, n: u64) -> Wake {
        self.words
            .tail
            .store(tail.wrapping_add(n), Ordering::SeqCst);
        notify(&self.words.reader_sleeping, &self.words.data_seq)
    }

    /// Closes `end`, owned by `me`: the other side sees it (end-of-file for the reader, a
    /// broken pipe for the writer). Returns the word to wake the other side on, and the wake.
    /// An end that `me` does not own (taken over as broken, or corrupt) is left as it is.
    pub(crate) fn close(&self, end: End, me: u32) -> (&'a AtomicU32, Wake) {
        let word = self.end_word(end);
        let _ = word.compare_exchange(
            me & TAG_MASK,
            (me & TAG_MASK) | CLOSED,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        match end {
            End::Writer => (
                &self.words.data_seq,
                notify(&self.words.reader_sleeping, &self.words.data_seq),
            ),
            End::Reader => (
                &self.words.space_seq,
                notify(&self.words.writer_sleeping, &self.words.space_seq),
            ),
        }
    }

    /// Gives `end`, owned by `me`, away: it stays `me`'s until one process opens it.
    /// Returns `false` if `me` does not own it (a corrupt word): nobody can open it then.
    pub(crate) fn give(&self, end: End, me: u32) -> bool {
        self.end_word(end)
            .compare_exchange(
                me & TAG_MASK,
                (me & TAG_MASK) | TRANSIT,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
    }

    /// Opens `end`, given away, for `me`.
    ///
    /// # Errors
    ///
    /// [`Refused::Busy`] when it is not in transit (opened already, or never given);
    /// [`Refused::Gone`] when the process that gave it died first (it is marked broken).
    pub(crate) fn open(&self, end: End, me: u32, peers: &impl Peers) -> Result<(), Refused> {
        let word = self.end_word(end);
        let found = word.load(Ordering::SeqCst);
        match found & STATE {
            TRANSIT => {}
            BROKEN => return Err(Refused::Gone),
            _ => return Err(Refused::Busy),
        }
        if peers.is_dead(found & TAG_MASK) {
            let _ = word.compare_exchange(
                found,
                (found & TAG_MASK) | BROKEN,
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
            return Err(Refused::Gone);
        }
        match word.compare_exchange(found, me & TAG_MASK, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => Ok(()),
            Err(now) if now & STATE == BROKEN => Err(Refused::Gone),
            Err(_) => Err(Refused::Busy),
        }
    }

    /// Whether `end` is in transit from `me` (given away by this process, not opened yet).
    pub(crate) fn in_transit_from(&self, end: End, me: u32) -> bool {
        self.end_word(end).load(Ordering::SeqCst) == (me & TAG_MASK) | TRANSIT
    }
}

/// Lowers `flag` and, if the other side had raised it, moves `seq` and asks for a wake on it.
fn notify(flag: &AtomicU32, seq: &AtomicU32) -> Wake {
    if flag.swap(0, Ordering::SeqCst) != 0 {
        seq.fetch_add(1, Ordering::SeqCst);
        Wake::One
    } else {
        Wake::None
    }
}

/// Scenarios of a writer and a reader over a tiny ring, with the futex and the death board of
/// `crate::testing`: run exhaustively by loom, and many times with threads.
#[cfg(test)]
mod scenarios {
    use super::*;
    use crate::sync::atomic::AtomicU8;
    use crate::sync::{Arc, thread};
    use crate::testing::{Board, Futex};

    const WRITER: u32 = 1;
    const READER: u32 = 2;

    /// A pipe of `ring.len()` bytes moved in pieces of `piece`, whose ends belong to `WRITER`
    /// and `READER`.
    struct Pipe {
        words: PipeWords,
        ring: Vec<AtomicU8>,
        piece: u64,
        futex: Futex,
        board: Board,
    }

    impl Pipe {
        fn new(capacity: usize, piece: u64) -> Arc<Pipe> {
            Arc::new(Pipe {
                words: PipeWords::new(WRITER, READER),
                ring: (0..capacity).map(|_| AtomicU8::new(0)).collect(),
                piece,
                futex: Futex::new(),
                board: Board::new(),
            })
        }

        fn state(&self) -> PipeState<'_> {
            PipeState::with_piece(&self.words, self.ring.len() as u64, self.piece)
        }

        /// Writes every byte, or stops at a broken pipe (`Err` with how many were written).
        /// The free bytes a step finds are filled and published a piece at a time, as the
        /// writer end does.
        fn write_all(&self, bytes: &[u8]) -> Result<(), usize> {
            let state = self.state();
            let capacity = self.ring.len() as u64;
            let mut at = 0;
            while at < bytes.len() {
                let epoch = self.board.epoch();
                match state.write_step(true, &self.board).expect("valid counters") {
                    WriteStep::Space { tail, len } => {
                        let len = len.min((bytes.len() - at) as u64);
                        let mut done = 0;
                        while done < len {
                            let from = tail + done;
                            let n = state.next_piece(from, len - done);
                            assert!((1..=self.piece).contains(&n), "a piece of {n}");
                            for i in 0..n {
                                let slot = ((from + i) % capacity) as usize;
                                // Relaxed: the tail published after it orders it.
                                self.ring[slot].store(bytes[at + i as usize], Ordering::Relaxed);
                            }
                            self.futex
                                .wake(&self.words.data_seq, state.publish(from, n));
                            at += n as usize;
                            done += n;
                        }
                    }
                    WriteStep::Broken => return Err(at),
                    WriteStep::Park { expected } => self.futex.park(&[
                        (&self.words.space_seq, expected),
                        (&self.board.epoch, epoch),
                    ]),
                }
            }
            Ok(())
        }

        /// Reads up to `limit` bytes, until the end: the bytes, and `Eof` or `Broken` (or
        /// `Park` when the limit was reached first). The readable bytes a step finds are read
        /// and freed a piece at a time, as the reader end does.
        fn read(&self, limit: usize) -> (Vec<u8>, ReadStep) {
            let state = self.state();
            let capacity = self.ring.len() as u64;
            let mut got = Vec::new();
            loop {
                if got.len() == limit {
                    return (got, ReadStep::Park { expected: 0 });
                }
                let epoch = self.board.epoch();
                match state.read_step(true, &self.board).expect("valid counters") {
                    ReadStep::Data { head, len } => {
                        let len = len.min((limit - got.len()) as u64);
                        let mut done = 0;
                        while done < len {
                            let from = head + done;
                            let n = state.next_piece(from, len - done);
                            assert!((1..=self.piece).contains(&n), "a piece of {n}");
                            for i in 0..n {
                                let slot = ((from + i) % capacity) as usize;
                                got.push(self.ring[slot].load(Ordering::Relaxed));
                            }
                            self.futex
                                .wake(&self.words.space_seq, state.consume(from, n));
                            done += n;
                        }
                    }
                    end @ (ReadStep::Eof | ReadStep::Broken) => return (got, end),
                    ReadStep::Park { expected } => self
                        .futex
                        .park(&[(&self.words.data_seq, expected), (&self.board.epoch, epoch)]),
                }
            }
        }

        fn close(&self, end: End, me: u32) {
            let (word, wake) = self.state().close(end, me);
            self.futex.wake(word, wake);
        }
    }

    /// Three bytes through a ring of two, then the writer closes: the reader gets them all,
    /// in order, once each, then end-of-file.
    pub(super) fn bytes_pass_through_a_tiny_ring() {
        let pipe = Pipe::new(2, 2);
        let writer = {
            let pipe = pipe.clone();
            thread::spawn(move || {
                pipe.write_all(&[1, 2, 3]).expect("the reader lives");
                pipe.close(End::Writer, WRITER);
            })
        };
        let (got, end) = pipe.read(usize::MAX);
        writer.join().expect("writer");
        assert_eq!(got, [1, 2, 3]);
        assert_eq!(end, ReadStep::Eof);
    }

    /// Five bytes through a ring of three moved a byte at a time (so a step's space or data
    /// wraps the ring's end and is split into pieces), then the writer closes: the reader gets
    /// them all, in order, once each, then end-of-file.
    pub(super) fn bytes_pass_in_pieces_in_order() {
        let pipe = Pipe::new(3, 1);
        let writer = {
            let pipe = pipe.clone();
            thread::spawn(move || {
                pipe.write_all(&[1, 2, 3, 4, 5]).expect("the reader lives");
                pipe.close(End::Writer, WRITER);
            })
        };
        let (got, end) = pipe.read(usize::MAX);
        writer.join().expect("writer");
        assert_eq!(got, [1, 2, 3, 4, 5]);
        assert_eq!(end, ReadStep::Eof);
    }

    /// The writer writes two bytes through a ring of one and dies without closing: the reader
    /// gets both, then a broken pipe, never end-of-file.
    pub(super) fn a_dead_writer_is_a_broken_pipe_after_its_data() {
        let pipe = Pipe::new(1, 1);
        let writer = {
            let pipe = pipe.clone();
            thread::spawn(move || {
                pipe.write_all(&[7, 8]).expect("the reader lives");
                pipe.board.die(WRITER, &pipe.futex);
            })
        };
        let (got, end) = pipe.read(usize::MAX);
        writer.join().expect("writer");
        assert_eq!(got, [7, 8]);
        assert_eq!(end, ReadStep::Broken);
    }

    /// The reader takes one byte and closes while the writer has more to write than fits: the
    /// writer stops with a broken pipe instead of sleeping forever.
    pub(super) fn a_closed_reader_breaks_the_writer() {
        let pipe = Pipe::new(1, 1);
        let writer = {
            let pipe = pipe.clone();
            thread::spawn(move || pipe.write_all(&[1, 2, 3]))
        };
        let (got, _) = pipe.read(1);
        pipe.close(End::Reader, READER);
        let written = writer.join().expect("writer");
        assert_eq!(got, [1]);
        assert!(matches!(written, Err(1 | 2)), "{written:?}");
    }

    /// The reader dies (before or while the writer waits for space): the writer stops with a
    /// broken pipe.
    pub(super) fn a_dead_reader_breaks_the_writer() {
        let pipe = Pipe::new(1, 1);
        let writer = {
            let pipe = pipe.clone();
            thread::spawn(move || pipe.write_all(&[1, 2]))
        };
        pipe.board.die(READER, &pipe.futex);
        let written = writer.join().expect("writer");
        assert!(matches!(written, Err(0 | 1)), "{written:?}");
    }
}

#[cfg(all(test, netmcore_loom))]
mod loom_pipe {
    use super::scenarios;

    #[test]
    fn loom_bytes_pass_through_a_tiny_ring() {
        loom::model(scenarios::bytes_pass_through_a_tiny_ring);
    }

    #[test]
    fn loom_bytes_pass_in_pieces_in_order() {
        loom::model(scenarios::bytes_pass_in_pieces_in_order);
    }

    #[test]
    fn loom_a_dead_writer_is_a_broken_pipe_after_its_data() {
        loom::model(scenarios::a_dead_writer_is_a_broken_pipe_after_its_data);
    }

    #[test]
    fn loom_a_closed_reader_breaks_the_writer() {
        loom::model(scenarios::a_closed_reader_breaks_the_writer);
    }

    #[test]
    fn loom_a_dead_reader_breaks_the_writer() {
        loom::model(scenarios::a_dead_reader_breaks_the_writer);
    }
}

#[cfg(all(test, not(netmcore_loom)))]
mod tests {
    use super::*;
    use crate::protocol::NoDeaths;

    #[test]
    fn scenarios_pass_with_threads() {
        for _ in 0..200 {
            scenarios::bytes_pass_through_a_tiny_ring();
            scenarios::bytes_pass_in_pieces_in_order();
            scenarios::a_dead_writer_is_a_broken_pipe_after_its_data();
            scenarios::a_closed_reader_breaks_the_writer();
            scenarios::a_dead_reader_breaks_the_writer();
        }
    }

    #[test]
    fn counters_that_do_not_fit_are_bad_states() {
        let words = PipeWords::new(1, 2);
        let state = PipeState::attach(&words, 4);
        words.head.store(10, Ordering::SeqCst);
        words.tail.store(9, Ordering::SeqCst);
        let bad = state
            .read_step(true, &NoDeaths)
            .expect_err("tail behind head");
        assert!(bad.what.contains("behind"), "{bad:?}");
        assert!(state.write_step(true, &NoDeaths).is_err());
        words.tail.store(15, Ordering::SeqCst);
        let bad = state
            .write_step(false, &NoDeaths)
            .expect_err("5 bytes in 4");
        assert!(bad.what.contains("capacity"), "{bad:?}");
        words.head.store(u64::MAX, Ordering::SeqCst);
        words.tail.store(u64::MAX, Ordering::SeqCst);
        let Ok(WriteStep::Space { tail, len }) = state.write_step(false, &NoDeaths) else {
            panic!("room at the end of the counters");
        };
        let _ = state.publish(tail, len);
        assert!(state.read_step(false, &NoDeaths).is_err(), "a wrapped tail");
    }

    #[test]
    fn pieces_are_a_quarter_of_the_ring_from_4_to_16_kib() {
        let words = PipeWords::new(1, 2);
        let piece = |capacity| PipeState::attach(&words, capacity).piece();
        assert_eq!(piece(64 << 10), 16 << 10);
        assert_eq!(piece(1 << 30), 16 << 10);
        assert_eq!(piece(32 << 10), 8 << 10);
        assert_eq!(piece(8 << 10), 4 << 10);
        assert_eq!(piece(4093), 4093, "a small ring is one piece");
        assert_eq!(piece(1), 1);
        let state = PipeState::attach(&words, 64 << 10);
        assert_eq!(state.next_piece(0, 100), 100);
        assert_eq!(state.next_piece(3, 1 << 20), 16 << 10);
        // Never across the end of the ring.
        assert_eq!(state.next_piece((64 << 10) * 5 - 10, 1 << 20), 10);
        assert_eq!(state.next_piece(u64::MAX, 1 << 20), 1);
    }

    #[test]
    fn an_end_in_transit_opens_once() {
        let words = PipeWords::new(1, 2);
        let state = PipeState::attach(&words, 4);
        assert_eq!(state.open(End::Writer, 3, &NoDeaths), Err(Refused::Busy));
        assert!(state.give(End::Writer, 1));
        assert!(state.in_transit_from(End::Writer, 1));
        assert!(!state.give(End::Writer, 1), "given already");
        assert_eq!(state.open(End::Writer, 3, &NoDeaths), Ok(()));
        assert_eq!(state.open(End::Writer, 4, &NoDeaths), Err(Refused::Busy));
        assert!(!state.in_transit_from(End::Writer, 1));
        // The new owner closes it: end-of-file for the reader.
        let _ = state.close(End::Writer, 3);
        assert_eq!(state.read_step(false, &NoDeaths), Ok(ReadStep::Eof));
    }

    /// Tag 1 is dead.
    struct OneDead;
    impl Peers for OneDead {
        fn is_dead(&self, tag: u32) -> bool {
            tag == 1
        }
    }

    #[test]
    fn an_end_whose_giver_died_is_gone_for_good() {
        let words = PipeWords::new(1, 2);
        let state = PipeState::attach(&words, 4);
        assert!(state.give(End::Writer, 1));
        assert_eq!(state.open(End::Writer, 3, &OneDead), Err(Refused::Gone));
        // Marked: even a process that does not know of the death cannot open it.
        assert_eq!(state.open(End::Writer, 3, &NoDeaths), Err(Refused::Gone));
        assert_eq!(state.read_step(false, &NoDeaths), Ok(ReadStep::Broken));
    }
}
