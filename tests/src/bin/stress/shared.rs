//! What every process of a run shares: the run's settings and the progress region.
//!
//! The master sets both before `startup`, so that every worker, forked from it, has them. The
//! progress region is a shm object that the supervisor created and the master mapped (the
//! mapping is inherited by fork, since netmcore does not know it); it holds counters that
//! the supervisor shows while the run goes on, the slots through which a victim tells a
//! killer its Unix pid, and a bitmap of the Unix pids of the run's processes (after the first
//! [`COUNTERS_SIZE`] bytes), by which the leak check knows which objects named after their
//! creator's pid are the run's.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use netmcore::SharedMemory;
use netmcore_ipc::shm::ShmObject;

/// The size of the counters and slots at the start of the progress region.
pub const COUNTERS_SIZE: u64 = 8192;

/// The most Unix pids the bitmap holds (Linux's largest `pid_max`).
const MAX_PIDS: u64 = 1 << 22;

/// The size of the progress region on this system: the counters and a bit per possible pid
/// (`/proc/sys/kernel/pid_max`).
pub fn region_size() -> u64 {
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .unwrap_or(MAX_PIDS)
        .min(MAX_PIDS);
    COUNTERS_SIZE + pid_max.div_ceil(64) * 8
}

/// Kill slots per coordinator (at most this many kill pairs run at once in one coordinator).
pub const SLOTS_PER_COORDINATOR: u64 = 32;

/// The most coordinators a run may have (the region has slots for this many).
pub const MAX_COORDINATORS: u64 = 16;

/// The word of the first kill slot.
const FIRST_SLOT: usize = 64;

/// The word of the first coordinator's *joining* word, after the kill slots: what it is
/// joining now, for the report of a hang.
const FIRST_JOINING: usize = FIRST_SLOT + (MAX_COORDINATORS * SLOTS_PER_COORDINATOR) as usize;

/// A counter of the progress region.
#[derive(Debug, Clone, Copy)]
pub enum Counter {
    /// Process bodies entered.
    Processes = 0,
    /// Results checked against their expected value.
    Checked = 1,
    /// Faults injected.
    Faults = 2,
    /// Failed checks.
    Failures = 3,
    /// Objects created (shm, preallocated shm, semaphores, files).
    Resources = 4,
    /// Set to 1 by the master once it has mapped the region.
    Mapped = 5,
}

/// The settings of a run, the same in every process of it.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The prefix of every shm object and semaphore the run names (`/netmcore-stress-<pid>-`).
    pub prefix: String,
    /// The directory of the files the run creates and registers.
    pub files: PathBuf,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();
static REGION: OnceLock<SharedMemory> = OnceLock::new();

/// Sets the run's settings (once, in the master before `startup`).
pub fn set_settings(settings: Settings) {
    let _ = SETTINGS.set(settings);
}

/// The run's settings.
///
/// # Panics
///
/// Before [`set_settings`] (a bug of the stress program).
pub fn settings() -> &'static Settings {
    SETTINGS
        .get()
        .expect("the stress settings are set before startup")
}

/// Maps the progress region `name` for this process (and the workers forked from it).
pub fn map_region(name: &str) -> anyhow::Result<()> {
    let object = ShmObject::open(name).with_context(|| format!("open progress region {name}"))?;
    let memory = object
        .map_shared()
        .with_context(|| format!("map progress region {name}"))?;
    if memory.as_atomic_u64s().is_none() || memory.len() < COUNTERS_SIZE as usize {
        bail!("progress region {name} is not {COUNTERS_SIZE} aligned bytes or more");
    }
    let _ = REGION.set(memory);
    Ok(())
}

/// Uses an already mapped progress region (in the supervisor, which created it).
pub fn use_region(memory: SharedMemory) {
    let _ = REGION.set(memory);
}

fn words() -> &'static [AtomicU64] {
    REGION
        .get()
        .and_then(SharedMemory::as_atomic_u64s)
        .expect("the progress region is mapped before startup")
}

/// Adds `n` to `counter`.
pub fn add(counter: Counter, n: u64) {
    words()[counter as usize].fetch_add(n, Ordering::Relaxed);
}

/// The value of `counter`.
pub fn get(counter: Counter) -> u64 {
    words()[counter as usize].load(Ordering::Relaxed)
}

/// Sets `counter` to `value`.
pub fn set(counter: Counter, value: u64) {
    words()[counter as usize].store(value, Ordering::Relaxed);
}

/// The kill slot `slot` (a global index: coordinator × [`SLOTS_PER_COORDINATOR`] + local).
fn slot(slot: u64) -> &'static AtomicU64 {
    &words()[FIRST_SLOT + slot as usize]
}

/// Coordinator `coordinator` is joining action `position` of its wave `wave`, of kind
/// `action` (an index of `tally::ACTION_NAMES`).
pub fn set_joining(coordinator: u64, wave: u64, position: u64, action: u64) {
    let word = (wave << 24) | ((position & 0xffff) << 8) | (action + 1);
    words()[FIRST_JOINING + coordinator as usize].store(word, Ordering::Relaxed);
}

/// What coordinator `coordinator` is joining: `(wave, position in it, action)`, or `None`
/// before its first join.
pub fn joining(coordinator: u64) -> Option<(u64, u64, usize)> {
    let word = words()[FIRST_JOINING + coordinator as usize].load(Ordering::Relaxed);
    (word != 0).then(|| (word >> 24, (word >> 8) & 0xffff, (word & 0xff) as usize - 1))
}

/// The word and bit of `pid` in the pid bitmap.
fn pid_bit(pid: u32) -> (usize, u64) {
    (
        COUNTERS_SIZE as usize / 8 + pid as usize / 64,
        1 << (pid % 64),
    )
}

/// Records the calling process as a process of the run.
pub fn mark_own_pid() {
    let (word, bit) = pid_bit(std::process::id());
    if let Some(w) = words().get(word) {
        w.fetch_or(bit, Ordering::Relaxed);
    }
}

/// Whether `pid` was a process of the run; `true` for a pid beyond the bitmap, which cannot
/// tell.
pub fn was_of_the_run(pid: u32) -> bool {
    let (word, bit) = pid_bit(pid);
    words()
        .get(word)
        .is_none_or(|w| w.load(Ordering::Relaxed) & bit != 0)
}

/// A victim publishes its Unix pid in `slot`.
pub fn publish_pid(at: u64) {
    slot(at).store(u64::from(std::process::id()), Ordering::Release);
}

/// A killer takes the pid published in `slot` (and empties the slot), waiting for it up to
/// `patience`.
pub fn take_pid(at: u64, patience: Duration) -> Result<u32, String> {
    let deadline = Instant::now() + patience;
    loop {
        let pid = slot(at).swap(0, Ordering::Acquire);
        if pid != 0 {
            return u32::try_from(pid).map_err(|_| format!("slot {at} holds {pid}, not a pid"));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no victim published its pid in slot {at} within {patience:?}"
            ));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}
