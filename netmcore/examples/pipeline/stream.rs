//! The computation of the `pipeline` example: a deterministic byte stream, a checksum over it,
//! and the two ends that move it through a `netmcore::shared` pipe — the producer writes it in
//! chunks, the consumer sums the bytes the ring lends (`fill_buf` / `consume`, no copy). The
//! test `tests/tests/pipeline_example.rs` includes this module, so it checks the example's own
//! code.

use std::io::{self, BufRead as _, Write as _};

use netmcore::shared::{PipeReader, PipeWriter};

/// The size of the producer's chunks and of the pipe's ring: 64 KiB.
pub const CHUNK: usize = 64 << 10;

/// The `i`th 64-bit word of the stream: SplitMix64 of `i`, so that any part of the stream can
/// be made without making what comes before it.
pub fn word(i: u64) -> u64 {
    let mut z = i.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The stream's bytes from byte `offset` on, into `buf`: the words in little-endian order.
pub fn fill(buf: &mut [u8], offset: u64) {
    let byte = |at: u64| word(at / 8).to_le_bytes()[(at % 8) as usize];
    // Byte by byte up to a word boundary, then whole words, then the last bytes.
    let lead = usize::try_from((8 - offset % 8) % 8)
        .unwrap_or(0)
        .min(buf.len());
    let (head, body) = buf.split_at_mut(lead);
    let mut at = offset;
    for b in head {
        *b = byte(at);
        at += 1;
    }
    let mut words = body.chunks_exact_mut(8);
    for w in &mut words {
        w.copy_from_slice(&word(at / 8).to_le_bytes());
        at += 8;
    }
    for b in words.into_remainder() {
        *b = byte(at);
        at += 1;
    }
}

/// A Fletcher-style checksum over the stream's 64-bit little-endian words (the last one
/// padded with zero bytes): `a` is the sum of the words, `b` the sum of the running sums `a`,
/// so that it sees the order of the words as well as their values; the result is
/// `a ^ b.rotate_left(32)`. Two additions a word, so it keeps up with memory, which FNV-1a's
/// multiplication per byte does not.
///
/// It takes the bytes in slices of any length, cut anywhere: the result depends only on the
/// bytes.
#[derive(Debug, Clone, Default)]
pub struct Checksum {
    a: u64,
    b: u64,
    /// The bytes of a word that a slice ended in the middle of.
    pending: [u8; 8],
    /// How many of `pending` are filled.
    filled: usize,
}

impl Checksum {
    /// The checksum of no bytes yet.
    pub fn new() -> Checksum {
        Checksum::default()
    }

    /// Adds the next bytes of the stream.
    pub fn update(&mut self, mut bytes: &[u8]) {
        if self.filled > 0 {
            let n = (8 - self.filled).min(bytes.len());
            self.pending[self.filled..self.filled + n].copy_from_slice(&bytes[..n]);
            self.filled += n;
            bytes = &bytes[n..];
            if self.filled < 8 {
                return;
            }
            self.add(u64::from_le_bytes(self.pending));
            self.filled = 0;
        }
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut le = [0; 8];
            le.copy_from_slice(w);
            self.add(u64::from_le_bytes(le));
        }
        let rest = words.remainder();
        self.pending[..rest.len()].copy_from_slice(rest);
        self.filled = rest.len();
    }

    /// The checksum of the bytes added.
    pub fn finish(mut self) -> u64 {
        if self.filled > 0 {
            self.pending[self.filled..].fill(0);
            self.add(u64::from_le_bytes(self.pending));
        }
        self.a ^ self.b.rotate_left(32)
    }

    fn add(&mut self, word: u64) {
        self.a = self.a.wrapping_add(word);
        self.b = self.b.wrapping_add(self.a);
    }
}

/// The checksum of the first `len` bytes of the stream, computed in this process alone.
pub fn sequential(len: u64) -> u64 {
    let mut sum = Checksum::new();
    let mut buf = vec![0; CHUNK];
    let mut at = 0;
    while at < len {
        let n = usize::try_from(len - at).map_or(CHUNK, |left| left.min(CHUNK));
        fill(&mut buf[..n], at);
        sum.update(&buf[..n]);
        at += n as u64;
    }
    sum.finish()
}

/// The producer: writes the first `len` bytes of the stream into `writer`, in chunks of
/// [`CHUNK`] bytes, then drops it (the consumer sees the end of the stream).
///
/// # Errors
///
/// What a write gives: `BrokenPipe` when the consumer died.
pub fn produce(mut writer: PipeWriter, len: u64) -> io::Result<()> {
    let mut buf = vec![0; CHUNK];
    let mut at = 0;
    while at < len {
        let n = usize::try_from(len - at).map_or(CHUNK, |left| left.min(CHUNK));
        fill(&mut buf[..n], at);
        writer.write_all(&buf[..n])?;
        at += n as u64;
    }
    Ok(())
}

/// The consumer: sums the bytes of `reader` where the ring lends them, until the end of the
/// stream; returns how many bytes came and their checksum.
///
/// # Errors
///
/// What a read gives: `BrokenPipe` when the producer died before it finished.
pub fn consume(mut reader: PipeReader) -> io::Result<(u64, u64)> {
    let mut sum = Checksum::new();
    let mut len = 0;
    loop {
        let bytes = reader.fill_buf()?;
        if bytes.is_empty() {
            return Ok((len, sum.finish()));
        }
        sum.update(bytes);
        let n = bytes.len();
        len += n as u64;
        reader.consume(n);
    }
}
