//! Throughput of `Encap::wrap` and `Encap::unwrap` for byte buffers of 64 B, 64 KiB and 64 MiB,
//! as a plain `Vec<u8>` (serde handles it one byte at a time) and as a `ByteBuf` (one copy).
//!
//! Run with `cargo bench -p netmcore-encap`; add `-- --quick` for a short run.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use netmcore_encap::{ByteBuf, Encap};

/// Payload sizes with their labels.
const SIZES: [(usize, &str); 3] = [
    (64, "64B"),
    (64 * 1024, "64KiB"),
    (64 * 1024 * 1024, "64MiB"),
];

/// A buffer of `len` bytes that is not all zeros.
fn data(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from(i * 31 % 251).unwrap_or(0))
        .collect()
}

/// Keeps the 64 MiB cases short: criterion's minimum sample count and a brief measurement.
fn configure(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    len: usize,
) {
    if len >= 1024 * 1024 {
        group.sample_size(10);
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(3));
    } else {
        group.sample_size(50);
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(2));
    }
}

fn wrap(c: &mut Criterion) {
    let mut group = c.benchmark_group("wrap");
    for (len, label) in SIZES {
        configure(&mut group, len);
        group.throughput(Throughput::Bytes(len as u64));
        let vec = data(len);
        group.bench_with_input(BenchmarkId::new("vec_u8", label), &vec, |b, vec| {
            b.iter(|| Encap::wrap(black_box(vec)));
        });
        let buf = ByteBuf(vec);
        group.bench_with_input(BenchmarkId::new("byte_buf", label), &buf, |b, buf| {
            b.iter(|| Encap::wrap(black_box(buf)));
        });
    }
    group.finish();
}

fn unwrap(c: &mut Criterion) {
    let mut group = c.benchmark_group("unwrap");
    for (len, label) in SIZES {
        configure(&mut group, len);
        group.throughput(Throughput::Bytes(len as u64));
        let vec = data(len);
        let encap = Encap::wrap(&vec).expect("wrap Vec<u8>");
        group.bench_with_input(BenchmarkId::new("vec_u8", label), &encap, |b, encap| {
            b.iter(|| black_box(encap).unwrap::<Vec<u8>>());
        });
        let encap = Encap::wrap(&ByteBuf(vec)).expect("wrap ByteBuf");
        group.bench_with_input(BenchmarkId::new("byte_buf", label), &encap, |b, encap| {
            b.iter(|| black_box(encap).unwrap::<ByteBuf>());
        });
    }
    group.finish();
}

criterion_group!(benches, wrap, unwrap);
criterion_main!(benches);
