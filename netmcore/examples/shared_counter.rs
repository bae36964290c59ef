//! Workers that count together: a shared counter in preallocated shared memory, guarded by a
//! named semaphore that the master manages.
//!
//! * Before `startup`, the program preallocates a small shared memory region (the counter)
//!   and keeps its own mapping of it.
//! * The first process creates a named semaphore (a mutex: its value starts at 1) and hands it
//!   to the master with `manage_sem`, so that the master destroys it even if everything crashes.
//! * It starts `WORKERS` workers that inherit the region (`Inherit::Resources`) and each add 1
//!   to the counter `ROUNDS` times, holding the semaphore around each read-modify-write.
//! * It joins them, checks the total, and releases the semaphore: as the workers ended, they
//!   are no longer its users, so the release by the last user destroys it at once.
//! * When `startup` returns, the master has destroyed the region too; its own mapping still
//!   reads the final count, and nothing is left in `/dev/shm`.
//!
//! ```text
//! cargo run --example shared_counter
//! ```

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use netmcore::process::{self, ProcessType};
use netmcore::{Config, Inherit, ResId, ResourceRepr, SharedMemory};
use netmcore_ipc::sem::NamedSemaphore;
use serde::{Deserialize, Serialize};

/// How many workers count.
const WORKERS: u64 = 4;

/// How many times each adds 1.
const ROUNDS: u64 = 5_000;

/// What a counting worker is told: the region that holds the counter and the semaphore that
/// guards it, both as resource ids (ids are plain numbers that any process of the run can use).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Counting {
    region: ResId,
    mutex: ResId,
    rounds: u64,
}

/// What the coordinator is told: the region, and the name of the semaphore to create.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Plan {
    region: ResId,
    sem_name: String,
}

type Error = Box<dyn std::error::Error>;

/// The memory of preallocated region `id`, as this process has it mapped. A process that did
/// not inherit the region gets `Error::NotShared` here.
fn memory_of(id: ResId) -> netmcore::Result<SharedMemory> {
    let resource = netmcore::get_resource(id)?;
    match resource.repr() {
        ResourceRepr::PosixShmPreallocated { memory, .. } => Ok(*memory),
        other => panic!("{id} is not preallocated shared memory but {other:?}"),
    }
}

/// The counter: the first `u64` of the region, viewed as an atomic (the safe view; the region
/// is page-aligned, so the view always exists). A `SharedMemory` is never unmapped, so the view
/// lives as long as the process.
fn counter(memory: SharedMemory) -> &'static AtomicU64 {
    &memory
        .as_atomic_u64s()
        .expect("a preallocated region is page-aligned")[0]
}

/// A counting worker's body: `rounds` times, take the semaphore, read the counter, write it
/// back plus one, give the semaphore back. Returns how many times it counted.
fn count(job: Counting) -> Result<u64, String> {
    let body = || -> Result<u64, Error> {
        let counter = counter(memory_of(job.region)?);
        // `get_sem` tells the semaphore's name and makes this process one of its users, so the
        // master will not destroy it while this worker runs (and forgets the use when it ends).
        let mutex = NamedSemaphore::open(&netmcore::get_sem(job.mutex)?)?;
        for _ in 0..job.rounds {
            mutex.wait()?;
            // A separate load and store: without the semaphore, two workers could read the same
            // value and one increment would be lost. The semaphore also orders memory between
            // processes, so relaxed accesses are enough inside it.
            let value = counter.load(Ordering::Relaxed);
            counter.store(value + 1, Ordering::Relaxed);
            mutex.post()?;
        }
        Ok(job.rounds)
    };
    body().map_err(|e| e.to_string())
}

/// The first process: creates and manages the semaphore, starts the workers, joins them,
/// checks the total and releases the semaphore.
fn coordinate(
    plan: Plan,
    counting: ProcessType<Counting, Result<u64, String>>,
) -> Result<u64, String> {
    let body = || -> Result<u64, Error> {
        // Create the semaphore (value 1: free), then register it: from now on the master
        // unlinks it when its last user releases it or ends, and after a crash.
        drop(NamedSemaphore::create(&plan.sem_name, 1)?);
        let mutex = netmcore::manage_sem(&plan.sem_name)?;

        // Start the workers. Preallocated memory is shared only with the processes started
        // with it: `Inherit::Resources` lists it (plain `start` inherits nothing).
        let job = Counting {
            region: plan.region,
            mutex: mutex.id(),
            rounds: ROUNDS,
        };
        let mut pids = Vec::new();
        for _ in 0..WORKERS {
            pids.push(counting.start_with(&job, Inherit::Resources(vec![plan.region]))?);
        }
        let mut counted = 0;
        for pid in pids {
            // `None` would mean the worker panicked or was killed.
            counted += counting
                .join(pid)?
                .ok_or("a worker ended without a result")??;
        }

        // This process was started with the region too, so it can read the total.
        let total = counter(memory_of(plan.region)?).load(Ordering::Relaxed);
        if total != counted || total != WORKERS * ROUNDS {
            return Err(format!("lost updates: the counter is {total}, not {counted}").into());
        }

        // The workers have ended, so this process is the semaphore's last user: releasing it
        // unlinks it now rather than at shutdown.
        let sem_path = Path::new("/dev/shm").join(format!("sem.{}", &plan.sem_name[1..]));
        mutex.release()?;
        wait_until_gone(&sem_path)?;
        println!(
            "coordinator: released the semaphore; {} is gone",
            sem_path.display()
        );
        Ok(total)
    };
    // `startup` does not return the first process's result (`run` would), so say it here.
    body().map_err(|e| {
        eprintln!("coordinator: {e}");
        e.to_string()
    })
}

/// Waits until `path` no longer exists: a release is a message that the master handles a
/// moment after it was sent. Gives up after ten seconds, which only a bug reaches.
fn wait_until_gone(path: &Path) -> Result<(), Error> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while path.exists() {
        if std::time::Instant::now() > deadline {
            return Err(format!("{} is still there", path.display()).into());
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Ok(())
}

fn main() -> Result<(), Error> {
    let tag = format!("netmcore-shared-counter-{}", std::process::id());

    // Before startup: preallocate the region. It is created and mapped here, in the process
    // that becomes the master, so every worker forked later can inherit the mapping.
    let (region, region_name) = netmcore::create_preallocated_shm(&format!("/{tag}-"), 4096)?;
    let memory = memory_of(region)?;
    println!(
        "master: preallocated {region_name} ({} bytes) as {region}",
        memory.len()
    );

    // Process types, defined before startup so that workers find them in their copy of the
    // master's memory.
    let counting = process::def_process(count)?;
    let coordinator = process::def_process(move |plan: Plan| coordinate(plan, counting))?;

    // The first process needs the region as well, so it is started with `start_with` inside
    // `startup` rather than by `run` (which starts it with `Inherit::Nothing`).
    let plan = Plan {
        region,
        sem_name: format!("/{tag}-mutex"),
    };
    let socket_dir = std::env::temp_dir().join(&tag);
    let outcome = netmcore::startup(Config::new(&socket_dir), || {
        coordinator.start_with(&plan, Inherit::Resources(vec![region]))
    });
    let _ = std::fs::remove_dir_all(&socket_dir);
    outcome?;

    // The master destroyed the region when startup returned; its own mapping stays valid and
    // shows the final count.
    let total = counter(memory).load(Ordering::Relaxed);
    println!("master: {WORKERS} workers x {ROUNDS} rounds = {total}");
    assert_eq!(total, WORKERS * ROUNDS, "lost updates");

    // Nothing of this run is left in /dev/shm.
    let left: Vec<String> = std::fs::read_dir("/dev/shm")?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(&tag))
        .collect();
    assert!(left.is_empty(), "left in /dev/shm: {left:?}");
    println!("master: nothing left in /dev/shm");
    Ok(())
}
