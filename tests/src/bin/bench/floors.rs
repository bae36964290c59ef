//! The machine's floors, measured with plain syscalls and no netmcore code, so that every
//! figure can be read as a ratio taken in the same run (DESIGN.md §6).
//!
//! Each function runs in a measuring process of its own (this program with `--child`), which
//! is small and single-threaded: that is what `fork` costs at best.

use std::hint::black_box;
use std::os::fd::OwnedFd;
use std::time::Instant;

use anyhow::{Context as _, bail, ensure};
use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};

use crate::sys;
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
