//! Multi-process tests of shared memory and semaphores.
//!
//! `harness = false`: `main` is single-threaded and runs each case in a forked process of its
//! own (see `support::run_cases`), which checks afterwards that the case left nothing in
//! `/dev/shm`. The cases fork their own children from that single-threaded process.
//! Run one case with `cargo test -p netmcore-ipc --test multiprocess_shm_sem -- NAME`.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use netmcore_ipc::futex_sem::FutexSemaphore;
use netmcore_ipc::sem::NamedSemaphore;
use netmcore_ipc::shm::{SharedMemory, ShmObject};
use support::sys::{Status, fork_child};
use support::{Case, run_cases};

/// A generous bound for waits that must succeed: it only keeps a broken case from hanging.
const NO_HANG: Duration = Duration::from_secs(60);

fn main() -> std::process::ExitCode {
    run_cases(&[
        Case {
            name: "shm_written_by_child_is_seen_by_parent",
            run: shm_written_by_child_is_seen_by_parent,
        },
        Case {
            name: "shm_inherited_mapping_is_shared",
            run: shm_inherited_mapping_is_shared,
        },
        Case {
            name: "named_sem_posted_by_child_wakes_parent",
            run: named_sem_posted_by_child_wakes_parent,
        },
        Case {
            name: "named_sem_ping_pong",
            run: named_sem_ping_pong,
        },
        Case {
            name: "futex_sem_wakes_waiter_in_other_process",
            run: futex_sem_wakes_waiter_in_other_process,
        },
        Case {
            name: "futex_sem_hammered_by_processes_keeps_exact_count",
            run: futex_sem_hammered_by_processes_keeps_exact_count,
        },
        Case {
            name: "futex_sem_in_separately_mapped_object",
            run: futex_sem_in_separately_mapped_object,
        },
    ])
}

/// Waits for a child and asserts that it exited with 0.
fn expect_success(child: support::sys::Child, what: &str) {
    let outcome = child.wait();
    assert_eq!(
        outcome.status,
        Status::Exited(0),
        "{what} (pid {})",
        outcome.pid
    );
}

/// A child that opens the object by name (no inherited mapping), maps it and writes; the parent
/// sees the bytes through its own mapping.
fn shm_written_by_child_is_seen_by_parent() {
    let name = support::unique_name("mp-shm");
    let shm = ShmObject::create(&name).expect("create");
    shm.set_size(64 * 1024).expect("set_size");
    let child = fork_child(|| {
        let shm = ShmObject::open(&name).expect("child: open");
        let mapping = shm.map().expect("child: map");
        for (i, word) in mapping
            .as_atomic_u64s()
            .expect("aligned")
            .iter()
            .enumerate()
        {
            word.store(i as u64 * 3 + 1, Ordering::Relaxed);
        }
        0
    });
    expect_success(child, "writer child");
    let mapping = shm.map().expect("parent: map");
    shm.unlink().expect("unlink");
    let words = mapping.as_atomic_u64s().expect("aligned");
    assert_eq!(words.len(), 8 * 1024);
    for (i, word) in words.iter().enumerate() {
        assert_eq!(word.load(Ordering::Relaxed), i as u64 * 3 + 1, "word {i}");
    }
}

/// A `SharedMemory` made before the fork is the same memory in the child.
fn shm_inherited_mapping_is_shared() {
    let memory = page("mp-inherit");
    let counters = memory.as_atomic_u64s().expect("aligned");
    counters[0].store(10, Ordering::Relaxed);
    let child = fork_child(|| {
        let seen = counters[0].load(Ordering::Relaxed);
        counters[1].store(seen + 1, Ordering::Relaxed);
        0
    });
    expect_success(child, "child");
    assert_eq!(counters[1].load(Ordering::Relaxed), 11);
}

/// The parent blocks in `sem_wait` until a child, which opened the semaphore by name, posts.
fn named_sem_posted_by_child_wakes_parent() {
    let name = support::unique_name("mp-sem");
    let sem = NamedSemaphore::create(&name, 0).expect("create");
    let child = fork_child(|| {
        let sem = NamedSemaphore::open(&name).expect("child: open");
        sem.post().expect("child: post");
        0
    });
    sem.wait_timeout(NO_HANG).expect("woken by the child");
    expect_success(child, "poster child");
    assert_eq!(sem.value().expect("value"), 0);
    sem.unlink().expect("unlink");
}

/// Two named semaphores bounce a token between two processes; each side blocks every round.
fn named_sem_ping_pong() {
    const ROUNDS: usize = 2_000;
    let ping = NamedSemaphore::create(&support::unique_name("mp-ping"), 0).expect("ping");
    let pong = NamedSemaphore::create(&support::unique_name("mp-pong"), 0).expect("pong");
    let child = fork_child(|| {
        for _ in 0..ROUNDS {
            ping.wait_timeout(NO_HANG).expect("child: ping");
            pong.post().expect("child: pong");
        }
        0
    });
    for _ in 0..ROUNDS {
        ping.post().expect("ping");
        pong.wait_timeout(NO_HANG).expect("pong");
    }
    expect_success(child, "ponger child");
    assert_eq!(
        (ping.value().expect("value"), pong.value().expect("value")),
        (0, 0)
    );
    ping.unlink().expect("unlink ping");
    pong.unlink().expect("unlink pong");
}

/// A child sleeps in the futex until the parent posts; the wake crosses the process boundary.
fn futex_sem_wakes_waiter_in_other_process() {
    let memory = page("mp-futex-wake");
    let sem = FutexSemaphore::new_in(&memory, 0, 0).expect("new_in");
    let child = fork_child(|| {
        sem.wait_timeout(NO_HANG).expect("child: woken");
        0
    });
    // Post once the child is registered (asleep or about to be), so the wake path is used.
    while sem.waiters() == 0 {
        std::thread::yield_now();
    }
    sem.post().expect("post");
    expect_success(child, "waiter child");
    assert_eq!((sem.value(), sem.waiters()), (0, 0));
}

/// Four processes hammer one futex semaphore: two do post+wait pairs, one only posts, one only
/// waits. The count is exact at the end and no waiter is left registered.
fn futex_sem_hammered_by_processes_keeps_exact_count() {
    const ROUNDS: usize = 100_000;
    let memory = page("mp-futex-hammer");
    let sem = FutexSemaphore::new_in(&memory, 128, 0).expect("new_in");
    let pairs: Vec<_> = (0..2)
        .map(|_| {
            fork_child(|| {
                for _ in 0..ROUNDS {
                    sem.post().expect("pair: post");
                    sem.wait_timeout(NO_HANG).expect("pair: wait");
                }
                0
            })
        })
        .collect();
    let consumer = fork_child(|| {
        for _ in 0..ROUNDS {
            sem.wait_timeout(NO_HANG).expect("consumer: wait");
        }
        0
    });
    let producer = fork_child(|| {
        for _ in 0..ROUNDS {
            sem.post().expect("producer: post");
        }
        0
    });
    for child in pairs {
        expect_success(child, "post+wait child");
    }
    expect_success(consumer, "consumer child");
    expect_success(producer, "producer child");
    assert_eq!((sem.value(), sem.waiters()), (0, 0));
    assert_eq!(
        memory
            .atomic_u32_at(128)
            .expect("word")
            .load(Ordering::Relaxed),
        0
    );
}

/// The futex needs no common address: a child that maps the object anew (at another address)
/// and attaches to the word still wakes and is woken by the parent.
fn futex_sem_in_separately_mapped_object() {
    const ROUNDS: usize = 1_000;
    let name = support::unique_name("mp-futex-map");
    let shm = ShmObject::create(&name).expect("create");
    shm.set_size(4096).expect("set_size");
    let parent_map = shm.map().expect("map");
    let words = parent_map.as_atomic_u32s().expect("aligned");
    let ping = FutexSemaphore::new(&words[0], 0).expect("ping");
    let pong = FutexSemaphore::new(&words[1], 0).expect("pong");
    let child = fork_child(|| {
        let shm = ShmObject::open(&name).expect("child: open");
        let own = shm.map().expect("child: map");
        assert_ne!(
            own.as_ptr(),
            parent_map.as_ptr(),
            "a second mapping has its own address"
        );
        let words = own.as_atomic_u32s().expect("aligned");
        let (ping, pong) = (
            FutexSemaphore::attach(&words[0]),
            FutexSemaphore::attach(&words[1]),
        );
        for _ in 0..ROUNDS {
            ping.wait_timeout(NO_HANG).expect("child: ping");
            pong.post().expect("child: pong");
        }
        0
    });
    for _ in 0..ROUNDS {
        ping.post().expect("ping");
        pong.wait_timeout(NO_HANG).expect("pong");
    }
    expect_success(child, "ponger child");
    shm.unlink().expect("unlink");
    assert_eq!(
        (ping.value(), pong.value(), ping.waiters(), pong.waiters()),
        (0, 0, 0, 0)
    );
}

/// A page of shared memory kept for the process, whose name is already gone.
fn page(tag: &str) -> SharedMemory {
    let shm = ShmObject::create(&support::unique_name(tag)).expect("create");
    shm.set_size(4096).expect("set_size");
    let memory = shm.map_shared().expect("map");
    shm.unlink().expect("unlink");
    memory
}
