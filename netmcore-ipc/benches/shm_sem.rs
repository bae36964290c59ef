//! Benchmarks of shared memory and semaphores: futex semaphore post+wait in one process and as a
//! ping-pong between two processes (next to the same with named semaphores), and shm
//! create+size+map+unlink.
//!
//! `harness = false`; criterion's `main` is single-threaded, so the ping-pong benches may fork.
//! Short runs: `cargo bench -p netmcore-ipc --bench shm_sem -- --quick`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use netmcore_ipc::futex_sem::FutexSemaphore;
use netmcore_ipc::sem::NamedSemaphore;
use netmcore_ipc::shm::ShmObject;

#[allow(dead_code, reason = "the benches use only fork_child and wait")]
#[path = "../tests/support/sys.rs"]
mod sys;

/// A bound for waits that must succeed, so that a broken run fails instead of hanging.
const NO_HANG: Duration = Duration::from_secs(60);

fn prefix() -> String {
    format!("/netmcore-bench-{}-", std::process::id())
}

/// `rounds` round trips between this process and a forked child over two semaphores: this side
/// posts `ping` and waits for `pong`, the child the other way round. Returns the time of the
/// round trips on this side, fork excluded.
fn ping_pong(
    rounds: u64,
    ping: impl Fn() + Copy,
    ping_wait: impl Fn() + Copy,
    pong: impl Fn() + Copy,
    pong_wait: impl Fn() + Copy,
) -> Duration {
    let child = sys::fork_child(|| {
        for _ in 0..rounds {
            ping_wait();
            pong();
        }
        0
    });
    let start = Instant::now();
    for _ in 0..rounds {
        ping();
        pong_wait();
    }
    let elapsed = start.elapsed();
    let outcome = child.wait();
    assert_eq!(outcome.status, sys::Status::Exited(0), "ping-pong child");
    elapsed
}

fn futex_semaphore(c: &mut Criterion) {
    let mut group = c.benchmark_group("futex_sem");
    let shm = ShmObject::create_unique(&prefix()).expect("create");
    shm.set_size(4096).expect("set_size");
    let memory = shm.map_shared().expect("map");
    shm.unlink().expect("unlink");

    let sem = FutexSemaphore::new_in(&memory, 0, 0).expect("sem");
    group.bench_function("post_wait_uncontended", |b| {
        b.iter(|| {
            sem.post().expect("post");
            sem.wait().expect("wait");
        });
    });

    // The two words sit on different cache lines.
    let ping = FutexSemaphore::new_in(&memory, 0, 0).expect("ping");
    let pong = FutexSemaphore::new_in(&memory, 128, 0).expect("pong");
    group.bench_function("ping_pong_two_processes", |b| {
        b.iter_custom(|rounds| {
            ping_pong(
                rounds,
                || ping.post().expect("ping"),
                || ping.wait_timeout(NO_HANG).expect("wait ping"),
                || pong.post().expect("pong"),
                || pong.wait_timeout(NO_HANG).expect("wait pong"),
            )
        });
    });
    group.finish();
}

fn named_semaphore(c: &mut Criterion) {
    let mut group = c.benchmark_group("named_sem");
    let sem = NamedSemaphore::create_unique(&prefix(), 0).expect("sem");
    sem.unlink().expect("unlink");
    group.bench_function("post_wait_uncontended", |b| {
        b.iter(|| {
            sem.post().expect("post");
            sem.wait().expect("wait");
        });
    });

    let ping = NamedSemaphore::create_unique(&prefix(), 0).expect("ping");
    let pong = NamedSemaphore::create_unique(&prefix(), 0).expect("pong");
    ping.unlink().expect("unlink ping");
    pong.unlink().expect("unlink pong");
    let (ping, pong) = (&ping, &pong);
    group.bench_function("ping_pong_two_processes", |b| {
        b.iter_custom(|rounds| {
            ping_pong(
                rounds,
                || ping.post().expect("ping"),
                || ping.wait_timeout(NO_HANG).expect("wait ping"),
                || pong.post().expect("pong"),
                || pong.wait_timeout(NO_HANG).expect("wait pong"),
            )
        });
    });
    group.finish();
}

fn shared_memory(c: &mut Criterion) {
    let mut group = c.benchmark_group("shm");
    let prefix = prefix();
    group.bench_function("create_size_map_unlink_4k", |b| {
        b.iter(|| {
            let shm = ShmObject::create_unique(&prefix).expect("create");
            shm.set_size(4096).expect("set_size");
            let mapping = shm.map().expect("map");
            shm.unlink().expect("unlink");
            black_box(mapping.as_ptr());
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = futex_semaphore, named_semaphore, shared_memory
}
criterion_main!(benches);
