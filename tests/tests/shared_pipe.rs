//! `netmcore::shared::pipe` across processes: a stream of 16 MiB from a writer process to a
//! reader process, end-of-file after the writer's drop; a writer killed mid-stream is a broken
//! pipe for the reader after the data it wrote, never end-of-file; a reader killed is a broken
//! pipe for the writer, also while it waits on a full ring; a reader waiting on an empty ring
//! when the writer is killed gets a broken pipe; an end moved by handle opens exactly once; an
//! end given away and never opened counts as open while its giver lives, and once the giver
//! ended (or was killed) the peer that waits on it gets a broken pipe and the handle is
//! `Disconnected`.
//!
//! Run one with `cargo test -p netmcore-tests --test shared_pipe -- NAME`.

mod support;

use std::io::{self, BufRead as _, Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use netmcore::shared::{Error, Handle, PipeReader, PipeWriter, pipe};
use rustix::process::{Pid, Signal, kill_process};
use support::{Scenario, cases, coordinator, ensure_err, run_coordinator, verdict};

fn main() -> ExitCode {
    support::run_cases(cases![
        a_writer_streams_16_mib_to_a_reader_then_end_of_file,
        a_writer_killed_mid_stream_is_a_broken_pipe_after_its_data,
        a_reader_killed_is_a_broken_pipe_for_a_waiting_writer,
        an_end_moved_to_another_process_opens_exactly_once,
        an_end_whose_giver_ended_unopened_is_a_dead_peer,
        a_reader_waiting_when_the_writer_is_killed_gets_a_broken_pipe,
        a_writer_that_closed_and_ended_is_end_of_file_after_its_data,
        a_reader_waits_on_an_unopened_writer_until_its_giver_ends,
        a_writer_waits_on_an_unopened_reader_until_its_giver_is_killed,
    ])
}

/// The ring of the scenarios.
const CAPACITY: usize = 64 << 10;

/// The length of the long stream.
const STREAM: usize = 16 << 20;

/// The `i`th byte of every test stream.
fn byte(i: usize) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 11)) as u8
}

/// A checksum that sees order: FNV-1a, continued from `h`.
fn fnv(h: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// FNV-1a's start.
const FNV: u64 = 0xcbf2_9ce4_8422_2325;

/// Writes the test stream from byte `from` to byte `to`, in chunks of 8 KiB.
fn write_stream(writer: &mut PipeWriter, from: usize, to: usize) -> io::Result<()> {
    let mut chunk = Vec::with_capacity(8192);
    let mut at = from;
    while at < to {
        chunk.clear();
        chunk.extend((at..to.min(at + 8192)).map(byte));
        writer.write_all(&chunk)?;
        at += chunk.len();
    }
    Ok(())
}

/// Reads with `fill_buf` until the end or an error, checking every byte against the test
/// stream from byte `from`: how many bytes came, and how the stream ended.
fn read_stream(reader: &mut PipeReader, from: usize) -> (usize, io::Result<()>) {
    let mut at = from;
    loop {
        let bytes = match reader.fill_buf() {
            Ok([]) => return (at - from, Ok(())),
            Ok(bytes) => bytes,
            Err(e) => return (at - from, Err(e)),
        };
        if let Some(bad) = bytes
            .iter()
            .enumerate()
            .position(|(i, &b)| b != byte(at + i))
        {
            let e = io::Error::other(format!("byte {} is wrong", at + bad));
            return (at - from, Err(e));
        }
        let n = bytes.len();
        at += n;
        reader.consume(n);
    }
}

/// Reads the Unix pid a worker wrote to `path`.
fn pid_in(path: &std::path::Path) -> anyhow::Result<Pid> {
    Pid::from_raw(support::read_pid(path)?).context("a positive pid")
}

/// A writer process streams 16 MiB through a ring of 64 KiB to a reader process, which
/// checks a checksum and the end-of-file after the writer's drop. Both ends were made by the
/// coordinator and moved by handle.
fn a_writer_streams_16_mib_to_a_reader_then_end_of_file(s: &Scenario) -> anyhow::Result<()> {
    let writer = coordinator(|handle: Handle<PipeWriter>| {
        let mut writer = PipeWriter::open(handle)?;
        write_stream(&mut writer, 0, STREAM)?;
        Ok(())
    })?;
    let reader = coordinator(|handle: Handle<PipeReader>| {
        let mut reader = PipeReader::open(handle)?;
        let started = Instant::now();
        let mut sum = FNV;
        let mut len = 0;
        let mut buf = vec![0; 32 << 10];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            sum = fnv(sum, &buf[..n]);
            len += n;
        }
        let took = started.elapsed();
        let expected = fnv(FNV, &(0..STREAM).map(byte).collect::<Vec<_>>());
        ensure!(len == STREAM, "{len} bytes came, not {STREAM}");
        ensure!(
            sum == expected,
            "the checksum is {sum:#x}, not {expected:#x}"
        );
        eprintln!(
            "    16 MiB through a pipe of 64 KiB in {took:?}: {:.0} MiB/s",
            16.0 / took.as_secs_f64().max(1e-9)
        );
        Ok(())
    })?;
    let first = coordinator(move |()| {
        let (w, r) = pipe(CAPACITY)?;
        let reading = reader.start(&r.into_handle())?;
        let writing = writer.start(&w.into_handle())?;
        verdict(writer.join(writing)?)?;
        verdict(reader.join(reading)?)
    })?;
    run_coordinator(s, &first, &())
}

/// A writer writes 1 MiB and more, and is killed while it waits for room: the reader gets the
/// stream up to where the writer got, intact, then a broken pipe — never end-of-file.
fn a_writer_killed_mid_stream_is_a_broken_pipe_after_its_data(s: &Scenario) -> anyhow::Result<()> {
    let writer = coordinator(|(handle, pid_file): (Handle<PipeWriter>, PathBuf)| {
        let mut writer = PipeWriter::open(handle)?;
        write_stream(&mut writer, 0, 1 << 20)?;
        support::write_own_pid(&pid_file)?;
        // More than the ring holds: it blocks until it is killed.
        write_stream(&mut writer, 1 << 20, usize::MAX >> 1)?;
        bail!("the writer was not killed")
    })?;
    let first = coordinator(move |pid_file: PathBuf| {
        let (w, mut r) = pipe(CAPACITY)?;
        let pid = writer.start(&(w.into_handle(), pid_file.clone()))?;
        let mut first = vec![0; 1 << 20];
        r.read_exact(&mut first)?;
        ensure!(
            first.iter().enumerate().all(|(i, &b)| b == byte(i)),
            "the first MiB is wrong"
        );
        support::wait_for_file(&pid_file)?;
        // Let the writer fill the ring and go to sleep; it passes either way.
        std::thread::sleep(Duration::from_millis(20));
        kill_process(pid_in(&pid_file)?, Signal::KILL)?;
        ensure!(writer.join(pid)?.is_none(), "the killed writer returned");
        let (rest, end) = read_stream(&mut r, 1 << 20);
        ensure!(rest <= CAPACITY + 8192, "{rest} bytes after the first MiB");
        match end {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
            other => bail!("the stream of a killed writer ended with {other:?}"),
        }
        // And it stays broken.
        let again = r.read(&mut [0; 8]);
        ensure!(
            again
                .as_ref()
                .is_err_and(|e| e.kind() == io::ErrorKind::BrokenPipe),
            "a second read gave {again:?}"
        );
        Ok(())
    })?;
    run_coordinator(s, &first, &s.path("writer.pid"))
}

/// The coordinator writes more than the ring holds to a reader process that reads nothing;
/// the reader is killed while the writer sleeps: the write fails with a broken pipe.
fn a_reader_killed_is_a_broken_pipe_for_a_waiting_writer(s: &Scenario) -> anyhow::Result<()> {
    let reader = coordinator(|(handle, pid_file): (Handle<PipeReader>, PathBuf)| {
        let _reader = PipeReader::open(handle)?;
        support::write_own_pid(&pid_file)?;
        support::sleep_forever()
    })?;
    let first = coordinator(move |pid_file: PathBuf| {
        let (mut w, r) = pipe(CAPACITY)?;
        let pid = reader.start(&(r.into_handle(), pid_file.clone()))?;
        support::wait_for_file(&pid_file)?;
        let victim = pid_in(&pid_file)?;
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            kill_process(victim, Signal::KILL)
        });
        let written = write_stream(&mut w, 0, 4 * CAPACITY);
        killer
            .join()
            .map_err(|_| anyhow::anyhow!("the killer panicked"))??;
        ensure!(reader.join(pid)?.is_none(), "the killed reader returned");
        match written {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            other => bail!("writing to a killed reader gave {other:?}"),
        }
    })?;
    run_coordinator(s, &first, &s.path("reader.pid"))
}

/// The reader end moves to a worker, which opens it and reads the stream; a second worker,
/// and the coordinator, opening the same handle get `Busy`.
fn an_end_moved_to_another_process_opens_exactly_once(s: &Scenario) -> anyhow::Result<()> {
    let reader = coordinator(|handle: Handle<PipeReader>| {
        let mut reader = PipeReader::open(handle)?;
        let mut text = String::new();
        reader.read_to_string(&mut text)?;
        ensure!(text == "through another process", "the reader got {text:?}");
        Ok(())
    })?;
    let late = coordinator(|handle: Handle<PipeReader>| {
        ensure_err!(PipeReader::open(handle), Error::Busy);
        Ok(())
    })?;
    let first = coordinator(move |()| {
        let (mut w, r) = pipe(16)?;
        let handle = r.into_handle();
        let pid = reader.start(&handle)?;
        w.write_all(b"through another process")?;
        drop(w);
        verdict(reader.join(pid)?)?;
        let pid = late.start(&handle)?;
        verdict(late.join(pid)?)?;
        ensure_err!(PipeReader::open(handle), Error::Busy);
        Ok(())
    })?;
    run_coordinator(s, &first, &())
}

/// A worker opens the writer end, writes, gives it away again and ends before anyone opened
/// it: the reader gets the data, then a broken pipe, and the handle is `Disconnected`.
fn an_end_whose_giver_ended_unopened_is_a_dead_peer(s: &Scenario) -> anyhow::Result<()> {
    let giver = netmcore::process::def_process(|handle: Handle<PipeWriter>| {
        let mut writer = PipeWriter::open(handle).expect("the first open");
        writer.write_all(b"last words").expect("the reader lives");
        writer.into_handle()
    })?;
    let first = coordinator(move |()| {
        let (w, mut r) = pipe(64)?;
        let pid = giver.start(&w.into_handle())?;
        let handle = giver.join(pid)?.context("the giver returned")?;
        let mut got = [0; 10];
        r.read_exact(&mut got)?;
        ensure!(&got == b"last words", "the reader got {got:?}");
        let end = r.read(&mut [0; 8]);
        ensure!(
            end.as_ref()
                .is_err_and(|e| e.kind() == io::ErrorKind::BrokenPipe),
            "after a giver that ended, a read gave {end:?}"
        );
        ensure_err!(PipeWriter::open(handle), Error::Disconnected);
        Ok(())
    })?;
    run_coordinator(s, &first, &())
}

/// A writer process writes 1000 bytes and waits to be killed; the coordinator reads them and
/// waits for more on the empty ring, and is woken by the writer's death with a broken pipe,
/// never end-of-file.
fn a_reader_waiting_when_the_writer_is_killed_gets_a_broken_pipe(
    s: &Scenario,
) -> anyhow::Result<()> {
    let writer = coordinator(|(handle, pid_file): (Handle<PipeWriter>, PathBuf)| {
        let mut writer = PipeWriter::open(handle)?;
        write_stream(&mut writer, 0, 1000)?;
        support::write_own_pid(&pid_file)?;
        support::sleep_forever()
    })?;
    let first = coordinator(move |pid_file: PathBuf| {
        let (w, mut r) = pipe(CAPACITY)?;
        let pid = writer.start(&(w.into_handle(), pid_file.clone()))?;
        let mut first = vec![0; 1000];
        r.read_exact(&mut first)?;
        ensure!(
            first.iter().enumerate().all(|(i, &b)| b == byte(i)),
            "the 1000 bytes are wrong"
        );
        support::wait_for_file(&pid_file)?;
        let victim = pid_in(&pid_file)?;
        // The read below waits on the empty ring before or after the kill; either way the
        // death must end it.
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            kill_process(victim, Signal::KILL)
        });
        let end = r.read(&mut [0; 64]);
        killer
            .join()
            .map_err(|_| anyhow::anyhow!("the killer panicked"))??;
        ensure!(writer.join(pid)?.is_none(), "the killed writer returned");
        match end {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            other => bail!("a read waiting on a killed writer gave {other:?}"),
        }
    })?;
    run_coordinator(s, &first, &s.path("writer.pid"))
}

/// A writer process writes less than the ring holds, drops its end and ends before anyone
/// reads: the reader gets every byte, then end-of-file (a closed end is not a dead one).
fn a_writer_that_closed_and_ended_is_end_of_file_after_its_data(
    s: &Scenario,
) -> anyhow::Result<()> {
    const LEN: usize = 60 << 10;
    let writer = coordinator(|handle: Handle<PipeWriter>| {
        let mut writer = PipeWriter::open(handle)?;
        write_stream(&mut writer, 0, LEN)?;
        Ok(())
    })?;
    let first = coordinator(move |()| {
        let (w, mut r) = pipe(CAPACITY)?;
        let pid = writer.start(&w.into_handle())?;
        verdict(writer.join(pid)?)?;
        let (len, end) = read_stream(&mut r, 0);
        end.context("the stream of a writer that closed its end")?;
        ensure!(len == LEN, "{len} bytes came, not {LEN}");
        ensure!(r.read(&mut [0; 8])? == 0, "end-of-file does not last");
        Ok(())
    })?;
    run_coordinator(s, &first, &())
}

/// A giver process opens the writer end, writes, gives the end away again and waits; a
/// reader process reads the data and waits for more. While the giver lives the end counts as
/// open, so the reader keeps waiting; once the giver ends the reader gets a broken pipe (no
/// later call of the giver is needed for it), and the handle is `Disconnected`.
fn a_reader_waits_on_an_unopened_writer_until_its_giver_ends(s: &Scenario) -> anyhow::Result<()> {
    let giver = netmcore::process::def_process(
        |(handle, given, go): (Handle<PipeWriter>, PathBuf, PathBuf)| {
            let mut writer = PipeWriter::open(handle).expect("the first open");
            writer.write_all(b"given away").expect("the reader lives");
            let handle = writer.into_handle();
            support::touch(&given).expect("tell the coordinator");
            support::wait_for_file(&go).expect("the go-ahead");
            handle
        },
    )?;
    let reader = coordinator(|(handle, got): (Handle<PipeReader>, PathBuf)| {
        let mut reader = PipeReader::open(handle)?;
        let mut data = [0; 10];
        reader.read_exact(&mut data)?;
        ensure!(&data == b"given away", "the reader got {data:?}");
        support::touch(&got)?;
        let end = reader.read(&mut [0; 8]);
        ensure!(
            end.as_ref()
                .is_err_and(|e| e.kind() == io::ErrorKind::BrokenPipe),
            "after a giver that ended, a waiting read gave {end:?}"
        );
        Ok(())
    })?;
    let first = coordinator(move |(given, go, got): (PathBuf, PathBuf, PathBuf)| {
        let (w, r) = pipe(64)?;
        let reading = reader.start(&(r.into_handle(), got.clone()))?;
        let giving = giver.start(&(w.into_handle(), given.clone(), go.clone()))?;
        support::wait_for_file(&given)?;
        support::wait_for_file(&got)?;
        // The reader waits on an end nobody opened: it must still be waiting while the giver
        // lives (a reader that ended here took the end for closed or dead too early).
        std::thread::sleep(Duration::from_millis(50));
        ensure!(
            reader.join_nowait(reading)?.is_none(),
            "the reader ended while the giver of the writer end lived"
        );
        support::touch(&go)?;
        let handle = giver.join(giving)?.context("the giver returned")?;
        verdict(reader.join(reading)?)?;
        ensure_err!(PipeWriter::open(handle), Error::Disconnected);
        Ok(())
    })?;
    let paths = (s.path("given"), s.path("go"), s.path("got"));
    run_coordinator(s, &first, &paths)
}

/// A giver process opens the reader end, gives it away again and waits; a writer process
/// writes more than the ring holds and waits for room. While the giver lives the reader end
/// counts as open and the writer keeps waiting; when the giver is killed the write fails
/// with a broken pipe.
fn a_writer_waits_on_an_unopened_reader_until_its_giver_is_killed(
    s: &Scenario,
) -> anyhow::Result<()> {
    let giver = coordinator(|(handle, pid_file): (Handle<PipeReader>, PathBuf)| {
        let reader = PipeReader::open(handle)?;
        let _unopened = reader.into_handle();
        support::write_own_pid(&pid_file)?;
        support::sleep_forever()
    })?;
    let writer = coordinator(|(handle, writing): (Handle<PipeWriter>, PathBuf)| {
        let mut writer = PipeWriter::open(handle)?;
        support::touch(&writing)?;
        let written = write_stream(&mut writer, 0, 4 * CAPACITY);
        ensure!(
            written
                .as_ref()
                .is_err_and(|e| e.kind() == io::ErrorKind::BrokenPipe),
            "writing to a reader end whose giver was killed gave {written:?}"
        );
        Ok(())
    })?;
    let first = coordinator(move |(pid_file, writing): (PathBuf, PathBuf)| {
        let (w, r) = pipe(CAPACITY)?;
        let giving = giver.start(&(r.into_handle(), pid_file.clone()))?;
        support::wait_for_file(&pid_file)?;
        let writing_pid = writer.start(&(w.into_handle(), writing.clone()))?;
        support::wait_for_file(&writing)?;
        std::thread::sleep(Duration::from_millis(50));
        ensure!(
            writer.join_nowait(writing_pid)?.is_none(),
            "the writer ended while the giver of the reader end lived"
        );
        kill_process(pid_in(&pid_file)?, Signal::KILL)?;
        ensure!(giver.join(giving)?.is_none(), "the killed giver returned");
        verdict(writer.join(writing_pid)?)
    })?;
    run_coordinator(s, &first, &(s.path("giver.pid"), s.path("writing")))
}
