//! The machine's floors, measured with plain syscalls and no netmcore code (beyond a memfd
//! that gives the shared-memory floors their anonymous shared memory), so that every figure
//! can be read as a ratio taken in the same run (DESIGN.md §6).
//!
//! Each function runs in a measuring process of its own (this program with `--child`), which
//! is small and single-threaded: that is what `fork` costs at best.

use std::hint::{black_box, spin_loop};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use netmcore::ipc::memfd::Memfd;
use netmcore::ipc::shm::Mapping;
use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};
use rustix::process::{Pid, Signal};

use crate::sys::{self, SharedMutex};
use crate::{Sample, Scale, Setting};

/// The size of the buffers of the memory floors (and of the shm figure): 64 MiB.
pub const MEMORY_BYTES: usize = 64 << 20;

/// The length of a message of the socket floor.
const MESSAGE: usize = 64;

/// The page size the memcpy buffers are aligned to.
const PAGE: usize = 4096;

/// `floor_fork_wait_us`: `fork`, the child calls `_exit(0)` at once, `waitpid`; each sample
/// is the mean over a batch.
pub fn fork_wait(setting: &Setting) -> anyhow::Result<Vec<Sample>> {
    let batch = setting.pick(Scale {
        quick: 200,
        full: 1_000,
    });
    let one = || -> anyhow::Result<()> {
        let pid = sys::fork_child(|| 0).context("fork")?;
        let code = sys::wait_child(pid).context("waitpid")?;
        ensure!(code == Some(0), "the forked child ended with {code:?}");
        Ok(())
    };
    timed_batches("floor_fork_wait_us", setting, batch, one)
}

/// `op` a quarter of `batch` times to warm up, then `setting.reps` samples named `name`, each
/// the mean time of `op` over `batch` calls.
fn timed_batches(
    name: &'static str,
    setting: &Setting,
    batch: usize,
    mut op: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Vec<Sample>> {
    for _ in 0..batch / 4 {
        op()?;
    }
    let mut samples = Vec::new();
    for _ in 0..setting.reps {
        let start = Instant::now();
        for _ in 0..batch {
            op()?;
        }
        samples.push(Sample::per_op(name, start, batch));
    }
    Ok(samples)
}

/// `floor_socket_rtt_us`: 64-byte ping-pong with blocking `write` and `read` over a Unix
/// stream socketpair, between this process and a forked child that echoes; each sample is
/// the mean round trip over a batch.
pub fn socket_rtt(setting: &Setting) -> anyhow::Result<Vec<Sample>> {
    let batch = setting.pick(Scale {
        quick: 2_000,
        full: 10_000,
    });
    let (ours, theirs) = socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .context("socketpair")?;
    let mut ours = Some(ours);
    let echo = sys::fork_child(|| {
        // The child must not keep the parent's end, or it would never see the end of stream.
        drop(ours.take());
        let mut message = [0u8; MESSAGE];
        while read_exact(&theirs, &mut message).is_ok() {
            if write_all(&theirs, &message).is_err() {
                break;
            }
        }
        0
    })
    .context("fork the echo process")?;
    drop(theirs);
    let ours = ours.take().context("the parent keeps its end")?;

    let mut message = [7u8; MESSAGE];
    let round_trip = || -> anyhow::Result<()> {
        write_all(&ours, &message).context("write to the echo process")?;
        read_exact(&ours, &mut message).context("read from the echo process")
    };
    let samples = timed_batches("floor_socket_rtt_us", setting, batch, round_trip);
    // Closing our end ends the echo loop; reap the child whatever happened.
    drop(ours);
    let code = sys::wait_child(echo).context("waitpid of the echo process")?;
    let samples = samples?;
    ensure!(code == Some(0), "the echo process ended with {code:?}");
    Ok(samples)
}

/// `floor_memcpy_gb_s` and `floor_memread_gb_s`: `copy_from_slice` of 64 MiB between two
/// touched, page-aligned buffers, and a wrapping sum of 64 MiB of touched `u64`s; each sample
/// is the mean over a few passes. GB = 1e9 bytes.
///
/// Both buffers of the copy start at a page boundary: on some machines (an AMD EPYC among
/// them) glibc's `memcpy` is many times slower when the destination sits a few bytes past the
/// source modulo 4 KiB, and the floor is meant to be the fast case.
pub fn memory(setting: &Setting) -> anyhow::Result<Vec<Sample>> {
    let passes = setting.pick(Scale { quick: 2, full: 8 });
    // Filled with non-zero bytes, so that every page is written (touched) now; zeroed memory
    // could come from untouched pages.
    let mut src_buf = vec![1u8; MEMORY_BYTES + PAGE];
    let mut dst_buf = vec![2u8; MEMORY_BYTES + PAGE];
    let src: &[u8] = page_aligned(&mut src_buf)?;
    let dst = page_aligned(&mut dst_buf)?;
    ensure!(
        (src.as_ptr() as usize) % PAGE == (dst.as_ptr() as usize) % PAGE,
        "the buffers are not aligned alike"
    );

    let mut samples = Vec::new();
    dst.copy_from_slice(src);
    for _ in 0..setting.reps {
        let start = Instant::now();
        for _ in 0..passes {
            dst.copy_from_slice(black_box(src));
            black_box(&mut *dst);
        }
        samples.push(Sample::rate(
            "floor_memcpy_gb_s",
            start,
            (MEMORY_BYTES * passes) as f64 / 1e9,
        ));
    }
    if dst != src {
        bail!("memcpy copied wrong bytes");
    }
    drop((src_buf, dst_buf));

    let words = vec![3u64; MEMORY_BYTES / 8];
    black_box(sum_words(&words));
    for _ in 0..setting.reps {
        let start = Instant::now();
        for _ in 0..passes {
            black_box(sum_words(black_box(&words)));
        }
        samples.push(Sample::rate(
            "floor_memread_gb_s",
            start,
            (MEMORY_BYTES * passes) as f64 / 1e9,
        ));
    }
    Ok(samples)
}

/// The wrapping sum of `words`: what the memread floor and the shm figure compute.
pub fn sum_words(words: &[u64]) -> u64 {
    words.iter().fold(0u64, |sum, &w| sum.wrapping_add(w))
}

/// The `MEMORY_BYTES` of `buf` that start at its first page boundary.
fn page_aligned(buf: &mut [u8]) -> anyhow::Result<&mut [u8]> {
    let offset = buf.as_ptr().align_offset(PAGE);
    buf.get_mut(offset..offset + MEMORY_BYTES)
        .context("a buffer one page longer than the copy holds an aligned copy")
}

/// The start flag of the shared-memory floors: the forked processes wait while it is
/// `WAIT`...
const WAIT: u64 = 0;
/// ...and begin when it is `GO`.
const GO: u64 = 1;

/// Where the mutex floor keeps its words, after the mutex: the counter right next to it (in
/// its cache line, as a C struct of the two would place it), then the start flag and the
/// count of processes ready, 128 bytes further so that waiting on them touches no line of the
/// mutex.
const COUNTER: usize = 0;
const MUTEX_START: usize = 16;
const MUTEX_READY: usize = 17;

/// `floor_mutex_incr_per_s`: two forked processes each lock a `PTHREAD_PROCESS_SHARED`
/// pthread mutex in anonymous shared memory, increment a `u64` next to it and unlock, `batch`
/// times. They wait for a start flag in the same memory; each sample is the increments per
/// second from the flag until both are reaped, and the counter must then be `2 × batch`.
pub fn mutex_incr(setting: &Setting) -> anyhow::Result<Vec<Sample>> {
    let batch = setting.pick(Scale {
        quick: 200_000,
        full: 1_000_000,
    });
    let memory = Memfd::create("netmcore-bench-floor-mutex", PAGE)
        .and_then(|memfd| memfd.map_shared())
        .context("a page of anonymous shared memory")?;
    let mutex = SharedMutex::new(memory).context("a process-shared mutex")?;
    ensure!(
        mutex.words().len() > MUTEX_READY,
        "the page holds too few words after the mutex"
    );
    mutex_batch(&mutex, batch)?;
    let mut samples = Vec::with_capacity(setting.reps);
    for _ in 0..setting.reps {
        let seconds = mutex_batch(&mutex, batch)?;
        samples.push(Sample {
            name: "floor_mutex_incr_per_s",
            value: (2 * batch) as f64 / seconds,
        });
    }
    mutex.destroy().context("destroy the shared mutex")?;
    Ok(samples)
}

/// One batch of the mutex floor: forks the two incrementing processes, starts them, reaps
/// them; the seconds from the start to the second reap.
fn mutex_batch(mutex: &SharedMutex, batch: usize) -> anyhow::Result<f64> {
    let words = mutex.words();
    words[COUNTER].store(0, Ordering::Relaxed);
    words[MUTEX_READY].store(0, Ordering::Relaxed);
    words[MUTEX_START].store(WAIT, Ordering::Release);
    let parent = rustix::process::getpid();
    let mut children = Vec::with_capacity(2);
    let started = (|| -> anyhow::Result<Instant> {
        for _ in 0..2 {
            let pid = sys::fork_child(|| increment(mutex, batch, parent))
                .context("fork an incrementing process")?;
            children.push(pid);
        }
        wait_until_ready(&words[MUTEX_READY], 2, &children)?;
        let start = Instant::now();
        words[MUTEX_START].store(GO, Ordering::Release);
        Ok(start)
    })();
    let seconds = match started {
        Ok(start) => {
            let reaped = reap(&children);
            let seconds = start.elapsed().as_secs_f64();
            reaped?;
            seconds
        }
        Err(e) => {
            // The processes wait for a start that will never come: end them.
            abandon(&children);
            return Err(e);
        }
    };
    let count = words[COUNTER].load(Ordering::Acquire);
    ensure!(
        count == 2 * batch as u64,
        "two processes incremented {batch} times each and the counter is {count}"
    );
    Ok(seconds)
}

/// The body of an incrementing process: waits for the start, then `batch` times locks,
/// increments the counter and unlocks. Its exit code: 0, 2 when it cannot die with `parent`,
/// 3 when a lock fails.
fn increment(mutex: &SharedMutex, batch: usize, parent: Pid) -> i32 {
    if die_with(parent).is_err() {
        return 2;
    }
    let words = mutex.words();
    let counter = &words[COUNTER];
    words[MUTEX_READY].fetch_add(1, Ordering::AcqRel);
    let mut spin = Spin::default();
    while words[MUTEX_START].load(Ordering::Acquire) == WAIT {
        spin.wait();
    }
    for _ in 0..batch {
        let Ok(_guard) = mutex.lock() else {
            return 3;
        };
        // A plain read and write, as `counter++` in C: the mutex orders them.
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
    0
}

/// The slots of the ring floor: a power of two, 8 KiB of messages.
const RING_SLOTS: usize = 1024;

/// Where the ring floor keeps its words: the consumer's `head` and the producer's `tail` 128
/// bytes apart (so that each stays on a cache line, and a pair of lines, of its own), the
/// start flag and the ready flag on another, then the slots.
const HEAD: usize = 0;
const TAIL: usize = 16;
const RING_START: usize = 32;
const RING_READY: usize = 33;
const SLOTS: usize = 48;

/// A single-producer single-consumer ring of `u64`s in anonymous shared memory.
struct Ring {
    memory: Mapping,
}

impl Ring {
    /// A fresh ring.
    fn new() -> anyhow::Result<Ring> {
        let memory = Memfd::create("netmcore-bench-floor-ring", (SLOTS + RING_SLOTS) * 8)
            .and_then(|memfd| memfd.map_shared())
            .context("anonymous shared memory for the ring")?;
        ensure!(
            memory
                .as_atomic_u64s()
                .is_some_and(|words| words.len() == SLOTS + RING_SLOTS),
            "the ring's memory is not made of its words"
        );
        Ok(Ring { memory })
    }

    /// The ring's control word `index`.
    fn word(&self, index: usize) -> &AtomicU64 {
        &self.words()[index]
    }

    /// The slots.
    fn slots(&self) -> &[AtomicU64; RING_SLOTS] {
        self.words()[SLOTS..]
            .try_into()
            .expect("the ring holds its slots (checked by new)")
    }

    /// All the words of the ring's memory.
    fn words(&self) -> &[AtomicU64] {
        self.memory.as_atomic_u64s().unwrap_or_default()
    }
}

/// `floor_ring_msgs_per_s`: a forked producer writes the `u64`s `1..=batch` into a
/// single-producer single-consumer ring in anonymous shared memory ([`RING_SLOTS`] slots,
/// each index published with a release store per message), and this process reads them; both
/// busy-wait. Each sample is the messages per second from the start flag until the last
/// message is read; the messages must be exactly `1..=batch` in order.
pub fn ring(setting: &Setting) -> anyhow::Result<Vec<Sample>> {
    let batch = setting.pick(Scale {
        quick: 1_000_000,
        full: 10_000_000,
    }) as u64;
    let ring = Ring::new()?;
    ring_batch(&ring, batch)?;
    let mut samples = Vec::with_capacity(setting.reps);
    for _ in 0..setting.reps {
        let seconds = ring_batch(&ring, batch)?;
        samples.push(Sample {
            name: "floor_ring_msgs_per_s",
            value: batch as f64 / seconds,
        });
    }
    Ok(samples)
}

/// One batch of the ring floor: forks the producer, starts it, consumes `batch` messages,
/// reaps it; the seconds from the start to the last message.
fn ring_batch(ring: &Ring, batch: u64) -> anyhow::Result<f64> {
    for index in [HEAD, TAIL, RING_READY] {
        ring.word(index).store(0, Ordering::Relaxed);
    }
    ring.word(RING_START).store(WAIT, Ordering::Release);
    let parent = rustix::process::getpid();
    let producer =
        sys::fork_child(|| produce(ring, batch, parent)).context("fork the producing process")?;
    let consumed = (|| -> anyhow::Result<(f64, u64)> {
        wait_until_ready(ring.word(RING_READY), 1, &[producer])?;
        let start = Instant::now();
        ring.word(RING_START).store(GO, Ordering::Release);
        let sum = consume(ring, batch, producer)?;
        Ok((start.elapsed().as_secs_f64(), sum))
    })();
    let (seconds, sum) = match consumed {
        Ok(consumed) => {
            reap(&[producer])?;
            consumed
        }
        Err(e) => {
            abandon(&[producer]);
            return Err(e);
        }
    };
    ensure!(
        sum == batch * (batch + 1) / 2,
        "the messages 1..={batch} summed to {sum}"
    );
    let tail = ring.word(TAIL).load(Ordering::Acquire);
    ensure!(
        tail == batch,
        "the producer wrote {tail} messages, not {batch}"
    );
    Ok(seconds)
}

/// The body of the producing process: waits for the start, then writes `1..=batch`, each
/// when a slot is free. Its exit code: 0, or 2 when it cannot die with `parent`.
fn produce(ring: &Ring, batch: u64, parent: Pid) -> i32 {
    if die_with(parent).is_err() {
        return 2;
    }
    let (head, tail, slots) = (ring.word(HEAD), ring.word(TAIL), ring.slots());
    ring.word(RING_READY).store(1, Ordering::Release);
    let mut spin = Spin::default();
    while ring.word(RING_START).load(Ordering::Acquire) == WAIT {
        spin.wait();
    }
    // The consumer's head as last seen: read again only when the ring looks full.
    let mut seen_head = 0u64;
    let mut written = 0u64;
    for value in 1..=batch {
        if written - seen_head == RING_SLOTS as u64 {
            let mut spin = Spin::default();
            loop {
                seen_head = head.load(Ordering::Acquire);
                if written - seen_head < RING_SLOTS as u64 {
                    break;
                }
                spin.wait();
            }
        }
        slots[written as usize % RING_SLOTS].store(value, Ordering::Relaxed);
        written += 1;
        tail.store(written, Ordering::Release);
    }
    0
}

/// How many looks at an empty ring the consumer makes between checks that the producer still
/// runs.
const LOOKS_PER_CHECK: u64 = 1 << 16;

/// Reads `batch` messages from the ring, checking that they are `1..=batch` in order; their
/// sum. Fails if the producer ended while the ring was empty.
fn consume(ring: &Ring, batch: u64, producer: Pid) -> anyhow::Result<u64> {
    let (head, tail, slots) = (ring.word(HEAD), ring.word(TAIL), ring.slots());
    // The producer's tail as last seen: read again only when the ring looks empty.
    let mut seen_tail = 0u64;
    let mut read = 0u64;
    let mut sum = 0u64;
    while read < batch {
        if read == seen_tail {
            let mut spin = Spin::default();
            loop {
                seen_tail = tail.load(Ordering::Acquire);
                if read != seen_tail {
                    break;
                }
                spin.wait();
                if spin.looks.is_multiple_of(LOOKS_PER_CHECK)
                    && sys::has_ended(producer).context("waitid on the producer")?
                {
                    bail!("the producer ended after {read} of {batch} messages");
                }
            }
        }
        let value = slots[read as usize % RING_SLOTS].load(Ordering::Relaxed);
        read += 1;
        head.store(read, Ordering::Release);
        ensure!(value == read, "message {read} of {batch} was {value}");
        sum += value;
    }
    Ok(sum)
}

/// How many fruitless looks a busy-wait makes between two `sched_yield`s.
const LOOKS_PER_YIELD: u64 = 256;

/// A busy-wait of the shared-memory floors: `spin_loop` between two looks, and a
/// `sched_yield` instead every [`LOOKS_PER_YIELD`]th time. While the two processes each have
/// a core the yield hardly ever happens (a few times per million messages: the other side
/// answers within a few looks). When they share one, because another program runs on the
/// other, it hands the core over instead of spinning out the time slice: with pure spinning
/// the ring then passes one ring's worth of messages per time slice, about 130,000 messages/s
/// instead of tens of millions, and a run takes minutes.
#[derive(Debug, Default)]
struct Spin {
    looks: u64,
}

impl Spin {
    /// After one more fruitless look.
    fn wait(&mut self) {
        self.looks += 1;
        if self.looks.is_multiple_of(LOOKS_PER_YIELD) {
            std::thread::yield_now();
        } else {
            spin_loop();
        }
    }
}

/// Makes this forked process die with `parent` (`PR_SET_PDEATHSIG`), so that a busy-waiting
/// process never outlives a measuring process that was killed; fails if `parent` is already
/// gone.
fn die_with(parent: Pid) -> rustix::io::Result<()> {
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
    if rustix::process::getppid() == Some(parent) {
        Ok(())
    } else {
        Err(rustix::io::Errno::SRCH)
    }
}

/// Waits until `ready` reaches `count`, looking every 20 µs (the forked processes busy-wait
/// meanwhile, and the cores are theirs); fails if one of `children` ends first.
fn wait_until_ready(ready: &AtomicU64, count: u64, children: &[Pid]) -> anyhow::Result<()> {
    while ready.load(Ordering::Acquire) < count {
        for &pid in children {
            if sys::has_ended(pid).context("waitid")? {
                bail!("process {} ended before the start", pid.as_raw_nonzero());
            }
        }
        std::thread::sleep(Duration::from_micros(20));
    }
    Ok(())
}

/// Reaps every one of `children`; an error if any could not be reaped or did not exit with
/// 0 (the first such).
fn reap(children: &[Pid]) -> anyhow::Result<()> {
    let mut first_error = None;
    for &pid in children {
        let outcome = sys::wait_child(pid)
            .context("waitpid")
            .and_then(|code| match code {
                Some(0) => Ok(()),
                _ => bail!("process {} ended with {code:?}", pid.as_raw_nonzero()),
            });
        if let Err(e) = outcome {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Kills and reaps every one of `children`, after a failure (whose error is the one that
/// counts, so theirs are dropped).
fn abandon(children: &[Pid]) {
    for &pid in children {
        let _ = rustix::process::kill_process(pid, Signal::KILL);
    }
    let _ = reap(children);
}

/// `write` until every byte of `bytes` is written.
fn write_all(fd: &OwnedFd, mut bytes: &[u8]) -> rustix::io::Result<()> {
    while !bytes.is_empty() {
        match rustix::io::write(fd, bytes) {
            Ok(0) => return Err(rustix::io::Errno::PIPE),
            Ok(n) => bytes = &bytes[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `read` until `buf` is full; end of stream is an error.
fn read_exact(fd: &OwnedFd, buf: &mut [u8]) -> rustix::io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        match rustix::io::read(fd, &mut buf[filled..]) {
            Ok(0) => return Err(rustix::io::Errno::PIPE),
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
