//! The `pipeline` example of the facade computes the right checksum: the checksum of a few
//! words is the one worked out by hand, it does not depend on where the bytes are cut, the
//! stream is the same made whole or in parts, and the stream moved by the example's producer
//! and consumer processes through a pipe has the sequential checksum.
//!
//! The example's module is included from `netmcore/examples/pipeline/stream.rs`, so that this
//! checks the example's own code.

mod support;

#[allow(
    dead_code,
    reason = "the example's module has parts that only the example uses"
)]
#[path = "../../netmcore/examples/pipeline/stream.rs"]
mod stream;

use std::process::ExitCode;

use anyhow::{Context as _, ensure};
use netmcore::shared::{Handle, PipeReader, PipeWriter, pipe};
use stream::Checksum;
use support::{Scenario, cases, coordinator, run_coordinator, verdict};

fn main() -> ExitCode {
    support::run_cases(cases![
        the_checksum_of_a_few_words_is_the_one_worked_out_by_hand,
        the_checksum_does_not_depend_on_where_the_bytes_are_cut,
        the_stream_is_the_same_whole_or_in_parts,
        the_stream_through_a_pipe_has_the_sequential_checksum,
    ])
}

/// The checksum of `bytes` added in one slice.
fn checksum(bytes: &[u8]) -> u64 {
    let mut sum = Checksum::new();
    sum.update(bytes);
    sum.finish()
}

/// Words 1, 2, 3: `a` = 1 + 2 + 3 = 6, `b` = 1 + 3 + 6 = 10, so `6 ^ (10 << 32)`. A last
/// partial word is padded with zeros: bytes `[5, 0, 0]` are the word 5, so `5 ^ (5 << 32)`.
/// No bytes: 0.
fn the_checksum_of_a_few_words_is_the_one_worked_out_by_hand(_: &Scenario) -> anyhow::Result<()> {
    let words: Vec<u8> = [1u64, 2, 3].iter().flat_map(|w| w.to_le_bytes()).collect();
    ensure!(
        checksum(&words) == 6 ^ (10 << 32),
        "{:#x}",
        checksum(&words)
    );
    ensure!(checksum(&[5, 0, 0]) == 5 ^ (5 << 32));
    ensure!(checksum(&[]) == 0);
    // The order of the words counts: 2, 1 gives b = 2 + 3 = 5.
    let swapped: Vec<u8> = [2u64, 1].iter().flat_map(|w| w.to_le_bytes()).collect();
    ensure!(checksum(&swapped) == 3 ^ (5 << 32));
    Ok(())
}

/// Any cut of 1000 bytes into slices gives the checksum of the whole.
fn the_checksum_does_not_depend_on_where_the_bytes_are_cut(_: &Scenario) -> anyhow::Result<()> {
    let mut bytes = vec![0; 1000];
    stream::fill(&mut bytes, 0);
    let whole = checksum(&bytes);
    for step in [1, 3, 7, 8, 9, 13, 64, 999] {
        let mut sum = Checksum::new();
        for part in bytes.chunks(step) {
            sum.update(part);
        }
        ensure!(sum.finish() == whole, "slices of {step} bytes");
    }
    ensure!(stream::sequential(1000) == whole);
    Ok(())
}

/// Filling from any offset gives the same bytes as filling the whole; the bytes are the
/// words in little-endian order.
fn the_stream_is_the_same_whole_or_in_parts(_: &Scenario) -> anyhow::Result<()> {
    let mut whole = vec![0; 200];
    stream::fill(&mut whole, 0);
    ensure!(whole[..8] == stream::word(0).to_le_bytes());
    ensure!(whole[8..16] == stream::word(1).to_le_bytes());
    ensure!(stream::word(0) != stream::word(1));
    for from in [0, 1, 5, 8, 17, 100] {
        for to in [from, from + 1, from + 7, from + 8, from + 63, 200] {
            let to = to.min(200);
            let mut part = vec![0; to - from];
            stream::fill(&mut part, from as u64);
            ensure!(part == whole[from..to], "bytes {from}..{to}");
        }
    }
    Ok(())
}

/// 3 MiB and 5 bytes from the example's producer to its consumer, each a process with its
/// end moved by handle: every byte comes, with the sequential checksum.
fn the_stream_through_a_pipe_has_the_sequential_checksum(s: &Scenario) -> anyhow::Result<()> {
    const LEN: u64 = (3 << 20) + 5;
    let producer = coordinator(|handle: Handle<PipeWriter>| {
        Ok(stream::produce(PipeWriter::open(handle)?, LEN)?)
    })?;
    let consumer = coordinator(|handle: Handle<PipeReader>| {
        let (len, sum) = stream::consume(PipeReader::open(handle)?)?;
        ensure!(len == LEN, "{len} bytes came, not {LEN}");
        let expected = stream::sequential(LEN);
        ensure!(sum == expected, "checksum {sum:#x}, not {expected:#x}");
        Ok(())
    })?;
    let first = coordinator(move |()| {
        let (w, r) = pipe(stream::CHUNK).context("pipe")?;
        let consuming = consumer.start(&r.into_handle())?;
        let producing = producer.start(&w.into_handle())?;
        verdict(producer.join(producing)?)?;
        verdict(consumer.join(consuming)?)
    })?;
    run_coordinator(s, &first, &())
}
