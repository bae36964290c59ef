//! A `netmcore::shared::pipe` in the mix: a writer process streams bytes to a reader process
//! through a ring that is often much smaller than the stream, and one of the two may die
//! mid-stream.
//!
//! The action has the shape of the others in `structures.rs`. Byte `i` of a stream is
//! [`stream_byte`]`(seed, i)`, and the reader checks every byte it gets against it: what it
//! receives is always a prefix of what was written, never a byte lost, doubled or made up.
//! How the stream ends is checked against the draw:
//!
//! * nobody dies: the writer writes every byte and drops its end; the reader gets them all,
//!   then end-of-file;
//! * the writer dies without unwinding (SIGKILL, `exit`, SIGSEGV) after `after` bytes: the
//!   reader gets exactly those, then a broken pipe, never end-of-file;
//! * the writer panics after `after` bytes: the unwinding drops its end, which closes the
//!   stream, so the reader gets exactly those, then end-of-file;
//! * the reader dies (by any fault: a panic drops its end, the others leave it to the death
//!   board) once it has `after` bytes: the writer gets a broken pipe, having written at least
//!   what the reader got and at most a ring and a read more; or, when the rest of the stream
//!   fits in that, it finishes without one.

use std::io::{self, BufRead as _, Read as _, Write as _};

use netmcore::ProcessId;
use netmcore::shared::{Handle, PipeReader, PipeWriter, pipe};
use serde::{Deserialize, Serialize};

use crate::bodies::{Fault, err, inject, types};
use crate::rng::{Rng, mix};
use crate::shared::{self, Counter};
use crate::structures::{Launched, Seen, draw_holding_fault, hosted_or_local};
use crate::tally::FaultKind;

/// The pipe action.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct PipeArg {
    /// The bytes of the stream.
    pub len: u64,
    /// The ring's capacity.
    pub capacity: u32,
    /// The seed of the stream's bytes and of the sizes of the writes and reads.
    pub seed: u64,
    /// The largest write.
    pub max_write: u32,
    /// The largest read.
    pub max_read: u32,
    /// Whether the reader reads with `fill_buf` and `consume` (else with `read`).
    pub fill_buf: bool,
    /// The end that dies, if any.
    pub victim: Option<PipeVictim>,
}

/// Which end of the pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Side {
    /// The writer.
    Writer,
    /// The reader.
    Reader,
}

/// An end whose process dies mid-stream.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct PipeVictim {
    /// Which end.
    pub side: Side,
    /// The writer dies once it has written this many bytes, the reader once it has read at
    /// least this many.
    pub after: u64,
    /// How it dies.
    pub fault: Fault,
}

impl PipeArg {
    /// The victim on `side`, if it is there.
    fn victim_on(&self, side: Side) -> Option<PipeVictim> {
        self.victim.filter(|v| v.side == side)
    }

    /// How many more bytes than the reader got the writer may have written when the reader
    /// died: the ring, and what the reader took in its last read beyond `after`.
    fn slack(&self) -> u64 {
        u64::from(self.capacity) + u64::from(self.max_read.max(self.capacity))
    }
}

/// The argument of the writer process.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct PipeWriterUse {
    handle: Handle<PipeWriter>,
    arg: PipeArg,
}

/// The argument of the reader process.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct PipeReaderUse {
    handle: Handle<PipeReader>,
    arg: PipeArg,
}

/// What the writer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wrote {
    /// Bytes written.
    pub written: u64,
    /// Whether a write failed with a broken pipe.
    pub broken: bool,
}

/// How a stream ended for the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ending {
    /// End-of-file.
    Eof,
    /// A broken pipe.
    Broken,
}

/// What the reader got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Got {
    /// Bytes read, each checked.
    pub received: u64,
    /// How the stream ended.
    pub ending: Ending,
}

/// Byte `i` of the stream `seed`.
pub fn stream_byte(seed: u64, i: u64) -> u8 {
    (mix(seed ^ (i >> 3)) >> ((i & 7) * 8)) as u8
}

/// Draws and starts a pipe action.
pub fn launch_pipe(rng: &mut Rng) -> Result<Launched, String> {
    let t = types();
    let capacity = rng.pick(&[1, 7, 64, 4096, 10_000, 64 << 10]);
    let len = match rng.range(0, 3) {
        0 => rng.range(0, 64),
        1 => rng.range(0, 64 << 10),
        _ => rng.range(0, 1 << 20),
    };
    let victim = rng.one_in(2).then(|| {
        let side = if rng.one_in(2) {
            Side::Writer
        } else {
            Side::Reader
        };
        PipeVictim {
            side,
            after: rng.range(0, len),
            fault: draw_holding_fault(rng),
        }
    });
    let arg = PipeArg {
        len,
        capacity,
        seed: rng.next_u64(),
        max_write: rng.pick(&[1, 100, 5000, 3 * capacity.max(100)]),
        max_read: rng.pick(&[1, 100, 5000, 3 * capacity.max(100)]),
        fill_buf: rng.one_in(3),
        victim,
    };
    let hosted = rng.one_in(3);
    let faults = if arg.victim.is_some() {
        vec![FaultKind::Holding]
    } else {
        Vec::new()
    };
    let (what, finish) = hosted_or_local(hosted, t.pipe_host, "pipe", arg, start_pipe)?;
    Ok(Launched {
        what,
        processes: 2 + u64::from(hosted),
        faults,
        finish,
    })
}

/// The body of a host: the whole pipe action in a worker.
pub fn pipe_host(arg: PipeArg) -> Result<Seen, String> {
    let (_, finish) = start_pipe(arg)?;
    finish()
}

/// Creates the pipe and starts the writer and the reader, each with its end; the closure
/// joins and checks them.
fn start_pipe(arg: PipeArg) -> Result<(String, impl FnOnce() -> Result<Seen, String>), String> {
    let t = types();
    let (writer, reader) = pipe(arg.capacity as usize).map_err(err("pipe"))?;
    shared::add(Counter::Resources, 1);
    let what = format!("pipe {writer:?} ({arg:?})");
    let reading = t
        .pipe_reader
        .start(&PipeReaderUse {
            handle: reader.into_handle(),
            arg,
        })
        .map_err(err("start the reader"))?;
    let writing = t
        .pipe_writer
        .start(&PipeWriterUse {
            handle: writer.into_handle(),
            arg,
        })
        .map_err(err("start the writer"))?;
    Ok((what, move || check_pipe(&arg, writing, reading)))
}

/// Joins the writer and the reader and checks what each saw against the draw.
fn check_pipe(arg: &PipeArg, writing: ProcessId, reading: ProcessId) -> Result<Seen, String> {
    let t = types();
    let wrote = t.pipe_writer.join(writing);
    let got = t.pipe_reader.join(reading);
    let fail = |expected: &str| {
        Err(format!(
            "the writer {writing} gave {wrote:?} and the reader {reading} {got:?}; expected \
             {expected}"
        ))
    };
    let seen = |received: u64, breaks: u64| Seen {
        segments: 1,
        piped: received,
        pipe_breaks: breaks,
        ..Seen::default()
    };
    match arg.victim {
        None => match (&wrote, &got) {
            (
                Ok(Some(Ok(Wrote {
                    written,
                    broken: false,
                }))),
                Ok(Some(Ok(Got {
                    received,
                    ending: Ending::Eof,
                }))),
            ) if *written == arg.len && *received == arg.len => Ok(seen(arg.len, 0)),
            _ => fail("every byte written and read, then end-of-file"),
        },
        Some(PipeVictim {
            side: Side::Writer,
            after,
            fault,
        }) => {
            let ending = if fault == Fault::Panic {
                Ending::Eof
            } else {
                Ending::Broken
            };
            match (&wrote, &got) {
                (
                    Ok(None),
                    Ok(Some(Ok(Got {
                        received,
                        ending: e,
                    }))),
                ) if *received == after && *e == ending => {
                    Ok(seen(after, u64::from(ending == Ending::Broken)))
                }
                _ => fail(&format!(
                    "the writer dead ({fault:?}) after {after} bytes, the reader with exactly \
                     those, then {ending:?}"
                )),
            }
        }
        Some(PipeVictim {
            side: Side::Reader,
            after,
            fault,
        }) => match (&wrote, &got) {
            (Ok(Some(Ok(Wrote { written, broken }))), Ok(None))
                if *written >= after
                    && *written <= arg.len
                    && *written <= after + arg.slack()
                    && (*broken || (*written == arg.len && arg.len <= after + arg.slack())) =>
            {
                Ok(seen(after, u64::from(*broken)))
            }
            _ => fail(&format!(
                "the reader dead ({fault:?}) after {after} bytes or a read more, the writer with \
                 at least those and at most {} more, broken unless it wrote all {}",
                arg.slack(),
                arg.len
            )),
        },
    }
}

/// The writer: writes the stream in writes of random sizes, or stops at a broken pipe; the
/// victim dies after its bytes.
pub fn pipe_writer(u: PipeWriterUse) -> Result<Wrote, String> {
    let arg = u.arg;
    let mut writer = PipeWriter::open(u.handle).map_err(err("open the writer"))?;
    let victim = arg.victim_on(Side::Writer);
    let end = victim.map_or(arg.len, |v| v.after.min(arg.len));
    let mut rng = Rng::new(arg.seed, 1);
    let mut buf = Vec::new();
    let mut at = 0;
    while at < end {
        let n = rng.range(1, u64::from(arg.max_write)).min(end - at);
        buf.clear();
        buf.extend((at..at + n).map(|i| stream_byte(arg.seed, i)));
        let mut from = 0;
        while from < buf.len() {
            match writer.write(&buf[from..]) {
                Ok(0) => return Err(format!("a write at byte {at} returned 0")),
                Ok(k) => {
                    from += k;
                    at += k as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                    return Ok(Wrote {
                        written: at,
                        broken: true,
                    });
                }
                Err(e) => return Err(format!("a write at byte {at}: {e}")),
            }
        }
    }
    if let Some(v) = victim {
        inject(v.fault);
    }
    drop(writer);
    Ok(Wrote {
        written: at,
        broken: false,
    })
}

/// The reader: reads until the end, checking every byte; the victim dies once it has read
/// its bytes.
pub fn pipe_reader(u: PipeReaderUse) -> Result<Got, String> {
    let arg = u.arg;
    let mut reader = PipeReader::open(u.handle).map_err(err("open the reader"))?;
    let victim = arg.victim_on(Side::Reader);
    let mut rng = Rng::new(arg.seed, 2);
    let mut buf = vec![0; arg.max_read as usize];
    let mut at = 0;
    loop {
        if let Some(v) = victim
            && at >= v.after
        {
            inject(v.fault);
        }
        let want = rng.range(1, u64::from(arg.max_read)) as usize;
        let read = if arg.fill_buf {
            let checked = reader.fill_buf().and_then(|bytes| {
                let n = bytes.len().min(want);
                check(arg.seed, at, &bytes[..n]).map(|()| n)
            });
            if let Ok(n) = checked {
                reader.consume(n);
            }
            checked
        } else {
            reader
                .read(&mut buf[..want])
                .and_then(|n| check(arg.seed, at, &buf[..n]).map(|()| n))
        };
        match read {
            Ok(0) => {
                return Ok(Got {
                    received: at,
                    ending: Ending::Eof,
                });
            }
            Ok(n) => at += n as u64,
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                return Ok(Got {
                    received: at,
                    ending: Ending::Broken,
                });
            }
            Err(e) => return Err(format!("a read at byte {at}: {e}")),
        }
        if at > arg.len {
            return Err(format!("{at} bytes came of a stream of {}", arg.len));
        }
    }
}

/// Checks that `bytes` are the stream's from byte `at`.
fn check(seed: u64, at: u64, bytes: &[u8]) -> io::Result<()> {
    match (at..).zip(bytes).find(|&(i, &b)| b != stream_byte(seed, i)) {
        None => Ok(()),
        Some((i, &b)) => Err(io::Error::other(format!(
            "byte {i} is {b:#04x}, not {:#04x}",
            stream_byte(seed, i)
        ))),
    }
}
