//! Streams bytes from a producer process to a consumer process through a shared-memory pipe,
//! and checks that what arrived is what was sent.
//!
//! ```text
//! cargo run --release --example pipeline                  # 256 MiB
//! cargo run --release --example pipeline -- 1048576       # 1 MiB
//! ```
//!
//! The program turns itself into a netmcore master. Its first process, the coordinator,
//! creates a `netmcore::shared::pipe` with a ring of 64 KiB and moves its two ends, by handle,
//! to two processes: the producer writes a deterministic stream (SplitMix64 words) in chunks of
//! 64 KiB; the consumer sums the bytes where the ring lends them (`fill_buf` / `consume`, no
//! copy out of the ring) until the end of the stream. The coordinator then computes the
//! checksum of the same stream alone and compares:
//!
//! ```text
//! pipeline: 268435456 bytes in 0.105 s, 2556 MB/s
//! checksum through the pipe 0x…, computed sequentially 0x…: the checksums match
//! ```
//!
//! The time is the consumer's, from opening its end to the end of the stream. The socket
//! directory of the master is a fresh directory under the system's temporary directory, named
//! after the process, and removed at the end. This is OCamlnet's `pipeline` example over
//! netmcore's pipe instead of a Netcamlbox.

mod stream;

use std::time::Instant;

use anyhow::{Context as _, ensure};
use netmcore::Config;
use netmcore::process::{self, ProcessType};
use netmcore::shared::{Handle, PipeReader, PipeWriter, pipe};

/// The size when none is given: 256 MiB.
const DEFAULT_SIZE: u64 = 256 << 20;

/// What the consumer returns: the bytes that came, their checksum and the seconds it took.
type Consumed = (u64, u64, f64);

fn main() -> anyhow::Result<()> {
    let size = match std::env::args().nth(1) {
        None => DEFAULT_SIZE,
        Some(arg) => match arg.parse::<u64>() {
            Ok(n) => n,
            Err(_) => {
                eprintln!("usage: pipeline [BYTES]   (a byte count; default {DEFAULT_SIZE})");
                std::process::exit(2);
            }
        },
    };

    // Process types are defined before startup: the workers are forked from the master and
    // find the bodies in their copy of its memory.
    let producer = process::def_process(
        |(handle, len): (Handle<PipeWriter>, u64)| -> Result<(), String> {
            let writer = PipeWriter::open(handle).map_err(|e| format!("open the writer: {e}"))?;
            stream::produce(writer, len).map_err(|e| format!("write: {e}"))
        },
    )?;
    let consumer =
        process::def_process(|handle: Handle<PipeReader>| -> Result<Consumed, String> {
            let reader = PipeReader::open(handle).map_err(|e| format!("open the reader: {e}"))?;
            let started = Instant::now();
            let (len, sum) = stream::consume(reader).map_err(|e| format!("read: {e}"))?;
            Ok((len, sum, started.elapsed().as_secs_f64()))
        })?;
    let coordinator = process::def_process(move |len: u64| -> Result<(), String> {
        stream_through_pipe(&producer, &consumer, len).map_err(|e| format!("{e:#}"))
    })?;

    let socket_dir = std::env::temp_dir().join(format!("netmcore-pipeline-{}", std::process::id()));
    let outcome = netmcore::run(Config::new(&socket_dir), &coordinator, &size);
    let _ = std::fs::remove_dir_all(&socket_dir);
    outcome?
        .context("the coordinator ended without a result")?
        .map_err(anyhow::Error::msg)
}

/// In the coordinator: the stream of `len` bytes from a producer process to a consumer
/// process, its checksum against the sequential one.
fn stream_through_pipe(
    producer: &ProcessType<(Handle<PipeWriter>, u64), Result<(), String>>,
    consumer: &ProcessType<Handle<PipeReader>, Result<Consumed, String>>,
    len: u64,
) -> anyhow::Result<()> {
    let (writer, reader) = pipe(stream::CHUNK).context("pipe")?;
    let consuming = consumer.start(&reader.into_handle())?;
    let producing = producer.start(&(writer.into_handle(), len))?;
    producer
        .join(producing)?
        .context("the producer ended without a result")?
        .map_err(anyhow::Error::msg)?;
    let (got, sum, seconds) = consumer
        .join(consuming)?
        .context("the consumer ended without a result")?
        .map_err(anyhow::Error::msg)?;
    ensure!(got == len, "{got} bytes came through the pipe, not {len}");
    println!(
        "pipeline: {got} bytes in {seconds:.3} s, {:.0} MB/s",
        got as f64 / 1e6 / seconds.max(1e-9)
    );
    let expected = stream::sequential(len);
    let verdict = if sum == expected {
        "the checksums match"
    } else {
        "the checksums DIFFER"
    };
    println!(
        "checksum through the pipe {sum:#018x}, computed sequentially {expected:#018x}: {verdict}"
    );
    ensure!(sum == expected, "the stream arrived changed");
    Ok(())
}
