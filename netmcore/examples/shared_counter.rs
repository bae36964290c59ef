//! Workers that count together under a lock in shared memory, and what happens when one of
//! them dies holding it.
//!
//! * The first process creates a `netmcore::shared::Mutex<Tally>` (a counter and the number of
//!   the last worker that wrote it) and hands its *handle* to `WORKERS` workers, which open it
//!   wherever their address space has room and add 1 to the counter `ROUNDS` times each.
//! * It joins them and checks the total: nothing was lost.
//! * Then a worker takes the lock, starts an update and dies (it aborts, as a crashing program
//!   would) while it holds the lock. Nobody is left waiting: the next `lock` takes the lock over
//!   and reports it *poisoned*, with the half-written value. The first process repairs the
//!   value, clears the poison and goes on.
//! * When the last user drops the mutex, its segment is destroyed: nothing is left in
//!   `/dev/shm`, even if the program is killed (the master's ledger and guardian see to that).
//!
//! ```text
//! cargo run --example shared_counter
//! ```

use netmcore::Config;
use netmcore::process::{self, ProcessType};
use netmcore::shared::{Handle, Mutex};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// How many workers count.
const WORKERS: u64 = 4;

/// How many times each adds 1.
const ROUNDS: u64 = 50_000;

/// What the mutex guards: plain data (`#[repr(C)]`, no padding, every bit pattern valid), so
/// that it can live in shared memory and a torn write leaves a value, never garbage.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
struct Tally {
    count: u64,
    last_writer: u64,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The counting workers: a handle and a worker number in, the rounds counted out.
type Counting = ProcessType<(Handle<Mutex<Tally>>, u64), Result<u64, String>>;

/// A counting worker: opens the mutex by handle and adds 1 to the count `ROUNDS` times.
fn count((mutex, worker): (Handle<Mutex<Tally>>, u64)) -> Result<u64, String> {
    let body = || -> Result<u64, Error> {
        let mutex = Mutex::open(mutex)?;
        for _ in 0..ROUNDS {
            let mut tally = mutex.lock().map_err(|_| "the lock was poisoned")?;
            // A separate read and write: without the lock, two workers could read the same
            // count and one increment would be lost.
            let count = tally.count;
            tally.count = count + 1;
            tally.last_writer = worker;
        }
        Ok(ROUNDS)
    };
    body().map_err(|e| e.to_string())
}

/// A worker that dies in the middle of an update, holding the lock.
fn crash(mutex: Handle<Mutex<Tally>>) {
    let mutex = Mutex::open(mutex).expect("open the mutex");
    let mut tally = mutex.lock().expect("a clean lock");
    tally.last_writer = u64::MAX; // the first half of an update...
    eprintln!("crasher: dying while holding the lock");
    std::process::abort(); // ...and the second half never comes.
}

/// The first process.
fn coordinate(
    counting: Counting,
    crasher: ProcessType<Handle<Mutex<Tally>>, ()>,
) -> Result<u64, String> {
    let body = || -> Result<u64, Error> {
        let mutex = Mutex::new(Tally {
            count: 0,
            last_writer: 0,
        })?;
        let pids = (1..=WORKERS)
            .map(|worker| counting.start(&(mutex.handle(), worker)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut counted = 0;
        for pid in pids {
            counted += counting
                .join(pid)?
                .ok_or("a worker ended without a result")??;
        }
        let total = mutex.lock().map_err(|_| "poisoned")?.count;
        if total != WORKERS * ROUNDS || total != counted {
            return Err(format!("lost updates: the count is {total}, not {counted}").into());
        }
        println!("coordinator: {WORKERS} workers x {ROUNDS} rounds = {total}");

        // A holder dies: the next locker is not left waiting, it gets the lock poisoned.
        let pid = crasher.start(&mutex.handle())?;
        if crasher.join(pid)?.is_some() {
            return Err("the crasher returned".into());
        }
        let repaired = match mutex.lock() {
            Ok(_) => return Err("the lock of a dead holder was not poisoned".into()),
            Err(poisoned) => {
                let mut tally = poisoned.into_inner();
                println!(
                    "coordinator: the lock came back poisoned; last writer {:#x}, count {}",
                    tally.last_writer, tally.count
                );
                // Repair what the dead holder left half-done; the count was never touched.
                tally.last_writer = 0;
                tally.count
            }
        };
        mutex.clear_poison();
        let tally = mutex
            .lock()
            .map_err(|_| "still poisoned after clear_poison")?;
        println!(
            "coordinator: repaired and unpoisoned; the count is still {}",
            tally.count
        );
        Ok(repaired)
    };
    body().map_err(|e| {
        eprintln!("coordinator: {e}");
        e.to_string()
    })
}

fn main() -> Result<(), Error> {
    let tag = format!("netmcore-shared-counter-{}", std::process::id());
    let counting = process::def_process(count)?;
    let crasher = process::def_process(crash)?;
    // Process types are two ids: the coordinator's body captures them (defined before
    // startup, they reach every worker by fork).
    let coordinator = process::def_process(move |()| coordinate(counting, crasher))?;

    let before = netmcore_objects()?;
    let socket_dir = std::env::temp_dir().join(&tag);
    let outcome = netmcore::run(Config::new(&socket_dir), &coordinator, &());
    let _ = std::fs::remove_dir_all(&socket_dir);
    let total = outcome?.ok_or("the coordinator ended without a result")??;
    assert_eq!(total, WORKERS * ROUNDS, "lost updates");

    // The segment went with its last user; nothing of this run is left in /dev/shm.
    let left: Vec<String> = netmcore_objects()?.difference(&before).cloned().collect();
    assert!(left.is_empty(), "left in /dev/shm: {left:?}");
    println!("master: {total} counted; nothing left in /dev/shm");
    Ok(())
}

/// The netmcore objects in `/dev/shm` now.
fn netmcore_objects() -> Result<std::collections::BTreeSet<String>, Error> {
    Ok(std::fs::read_dir("/dev/shm")?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("netmcore"))
        .collect())
}
