//! The futex semaphore in one process: over a plain word and inside a shared memory mapping,
//! post, wait, try_wait, timeouts, value, limits, and threads contending for it. Every test
//! that creates a shm object checks that it left nothing in `/dev/shm`.

mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use netmcore_ipc::Error;
use netmcore_ipc::futex_sem::FutexSemaphore;
use netmcore_ipc::shm::{SharedMemory, ShmObject};

/// A generous bound for waits that must succeed: it only keeps a broken test from hanging.
const NO_HANG: Duration = Duration::from_secs(30);

/// A page of shared memory whose name is already gone.
fn page(tag: &str) -> SharedMemory {
    let name = support::unique_name(tag);
    let shm = ShmObject::create(&name).expect("create");
    shm.set_size(4096).expect("set_size");
    let memory = shm.map_shared().expect("map");
    shm.unlink().expect("unlink");
    let file = name.trim_start_matches('/');
    assert!(!support::shm_leftovers(file).iter().any(|n| n == file));
    memory
}

#[test]
fn basics_over_a_word() {
    let word = AtomicU32::new(123);
    let sem = FutexSemaphore::new(&word, 2).expect("new");
    assert_eq!(sem.value(), 2);
    sem.wait().expect("wait");
    assert!(sem.try_wait());
    assert!(!sem.try_wait());
    sem.post().expect("post");
    assert_eq!(sem.value(), 1);
    sem.wait_timeout(NO_HANG).expect("a token is there");
    assert_eq!((sem.value(), sem.waiters()), (0, 0));
    assert_eq!(
        word.load(Ordering::Relaxed),
        0,
        "the word is the whole state"
    );
    let again = FutexSemaphore::attach(&word);
    again.post().expect("post through a second handle");
    assert_eq!(sem.value(), 1);
    assert!(std::ptr::eq(sem.word(), &word));
}

#[test]
fn timeouts_report_timeout_and_leave_no_waiter() {
    let word = AtomicU32::new(0);
    let sem = FutexSemaphore::new(&word, 0).expect("new");
    let err = sem.wait_timeout(Duration::from_millis(5)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Timeout {
                op: "futex_wait",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().ends_with("timed out"), "{err}");
    assert!(matches!(
        sem.wait_timeout(Duration::ZERO),
        Err(Error::Timeout { .. })
    ));
    assert!(matches!(
        sem.wait_until(Instant::now()),
        Err(Error::Timeout { .. })
    ));
    assert_eq!(word.load(Ordering::Relaxed), 0, "no waiter left registered");
    // A huge timeout is a wait without limit; with a token there it returns at once.
    sem.post().expect("post");
    sem.wait_timeout(Duration::MAX).expect("token");
}

#[test]
fn a_post_wakes_a_sleeping_thread() {
    let word = AtomicU32::new(0);
    let sem = FutexSemaphore::new(&word, 0).expect("new");
    std::thread::scope(|s| {
        let waiter = s.spawn(|| sem.wait_timeout(NO_HANG));
        // Post only once the waiter is registered, so that the wake path is taken.
        while sem.waiters() == 0 {
            std::thread::yield_now();
        }
        sem.post().expect("post");
        waiter.join().expect("waiter").expect("woken");
    });
    assert_eq!((sem.value(), sem.waiters()), (0, 0));
}

#[test]
fn threads_contending_keep_the_count_exact() {
    let memory = page("futex-threads");
    let sem = FutexSemaphore::new_in(&memory, 64, 0).expect("new_in");
    const ROUNDS: u32 = 20_000;
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..ROUNDS {
                    sem.post().expect("post");
                    sem.wait_timeout(NO_HANG).expect("wait");
                }
            });
        }
        s.spawn(|| {
            for _ in 0..ROUNDS {
                sem.wait_timeout(NO_HANG).expect("consumer wait");
            }
        });
        s.spawn(|| {
            for _ in 0..ROUNDS {
                sem.post().expect("producer post");
            }
        });
    });
    assert_eq!((sem.value(), sem.waiters()), (0, 0));
}

#[test]
fn in_shared_memory_at_an_offset() {
    let memory = page("futex-shm");
    let sem = FutexSemaphore::new_in(&memory, 8, 5).expect("new_in");
    assert_eq!(
        memory.as_atomic_u32s().expect("aligned")[2].load(Ordering::Relaxed),
        5
    );
    let attached = FutexSemaphore::attach_in(&memory, 8).expect("attach_in");
    assert!(attached.try_wait());
    assert_eq!(sem.value(), 4);
    assert_eq!(FutexSemaphore::SIZE, 4);

    for bad in [2, 4094, 4096, usize::MAX] {
        let err = FutexSemaphore::new_in(&memory, bad, 0).unwrap_err();
        assert!(matches!(err, Error::OutOfRange { .. }), "{bad}: {err:?}");
        assert!(matches!(
            FutexSemaphore::attach_in(&memory, bad),
            Err(Error::OutOfRange { .. })
        ));
    }
    let err = FutexSemaphore::new_in(&memory, 0, FutexSemaphore::MAX_VALUE + 1).unwrap_err();
    assert!(matches!(err, Error::OutOfRange { .. }), "{err:?}");
}

#[test]
fn the_value_is_bounded() {
    let word = AtomicU32::new(0);
    let sem = FutexSemaphore::new(&word, FutexSemaphore::MAX_VALUE - 1).expect("new");
    sem.post().expect("up to the maximum");
    let err = sem.post().unwrap_err();
    assert!(
        matches!(
            err,
            Error::OutOfRange {
                op: "futex semaphore post",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(sem.value(), FutexSemaphore::MAX_VALUE);
}
