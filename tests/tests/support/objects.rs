//! Real OS objects for the resource scenarios: names unique to the scenario, creation of shm
//! objects, named semaphores and files that a test then hands to the master (`manage_*`), and
//! checks of whether an object still exists, in `/dev/shm`, in the file system, in this
//! process's mappings or in a socket directory's ledger.
//!
//! Every name made here starts with `/netmcore-tests-<pid>-`, where `<pid>` is the Unix pid of
//! the process that made it (make names in the scenario process and pass them on, so that all
//! objects of one scenario share the scenario's prefix).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, bail};
use netmcore_ipc::sem::NamedSemaphore;
use netmcore_ipc::shm::ShmObject;
use netmcore_resources::ledger::{self, LedgerObject};

/// The prefix of every object name made by this process, without the leading `/`:
/// `netmcore-tests-<pid>-`.
pub fn own_prefix() -> String {
    format!("netmcore-tests-{}-", std::process::id())
}

/// A new name for a shm object or a semaphore, unique in this process and tagged with `tag`:
/// `/netmcore-tests-<pid>-<n>-<tag>`.
pub fn unique_name(tag: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("/{}{n}-{tag}", own_prefix())
}

/// Creates the shm object `name` (`O_EXCL`) with `size` bytes and closes it: it exists until
/// someone unlinks it.
pub fn create_shm(name: &str, size: u64) -> anyhow::Result<()> {
    let shm = ShmObject::create(name).with_context(|| format!("create shm {name}"))?;
    shm.set_size(size)
        .with_context(|| format!("set the size of shm {name}"))?;
    Ok(())
}

/// Creates the named semaphore `name` (`O_EXCL`, value 0) and closes it: it exists until
/// someone unlinks it.
pub fn create_sem(name: &str) -> anyhow::Result<()> {
    NamedSemaphore::create(name, 0).with_context(|| format!("create semaphore {name}"))?;
    Ok(())
}

/// Creates the file `path` with a few bytes in it.
pub fn create_file(path: &Path) -> anyhow::Result<()> {
    std::fs::write(path, b"managed by netmcore\n")
        .with_context(|| format!("create {}", path.display()))
}

/// Where the shm object `name` (which starts with `/`) appears: `/dev/shm/<name>`.
pub fn shm_path(name: &str) -> PathBuf {
    Path::new("/dev/shm").join(name.trim_start_matches('/'))
}

/// Where the named semaphore `name` appears: `/dev/shm/sem.<name>`.
pub fn sem_path(name: &str) -> PathBuf {
    Path::new("/dev/shm").join(format!("sem.{}", name.trim_start_matches('/')))
}

/// Whether the shm object `name` exists.
pub fn shm_exists(name: &str) -> bool {
    shm_path(name).exists()
}

/// Whether the named semaphore `name` exists.
pub fn sem_exists(name: &str) -> bool {
    sem_path(name).exists()
}

/// Waits (with the support module's generous deadline) until `path` no longer exists.
pub fn wait_gone(path: &Path) -> anyhow::Result<()> {
    super::wait_until(&format!("{} is gone", path.display()), || !path.exists())
}

/// Fails unless `path` exists; `what` says what it is.
pub fn ensure_exists(path: &Path, what: &str) -> anyhow::Result<()> {
    if !path.exists() {
        bail!("{what} ({}) does not exist any more", path.display());
    }
    Ok(())
}

/// The entries of `/dev/shm` whose names contain `needle` (semaphores appear as `sem.<name>`).
pub fn dev_shm_containing(needle: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/dev/shm") else {
        return Vec::new();
    };
    let mut found: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(needle))
        .collect();
    found.sort();
    found
}

/// Whether this process's `/proc/self/maps` mentions the shm object `name`.
pub fn mapped_here(name: &str) -> anyhow::Result<bool> {
    let maps = std::fs::read_to_string("/proc/self/maps").context("read /proc/self/maps")?;
    Ok(maps.contains(&shm_path(name).display().to_string()))
}

/// The objects the ledger of socket directory `dir` lists as live (registered, not destroyed);
/// empty when there is no ledger.
pub fn ledger_live(dir: &Path) -> anyhow::Result<Vec<LedgerObject>> {
    if !ledger::ledger_path(dir).exists() {
        return Ok(Vec::new());
    }
    ledger::replay_dir(dir).with_context(|| format!("replay the ledger in {}", dir.display()))
}

/// The `u64` that the pattern of `seed` holds at word `i`: different in every word and for
/// every seed, so a region that was copied, shifted or filled by someone else does not match.
pub fn pattern(seed: u64, i: usize) -> u64 {
    (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed.rotate_left(17)
}

/// Fills `words` with the pattern of `seed`.
pub fn fill_pattern(words: &[AtomicU64], seed: u64) {
    for (i, word) in words.iter().enumerate() {
        word.store(pattern(seed, i), Ordering::Relaxed);
    }
}

/// Checks that `words` hold the pattern of `seed`; the error names the first word that does
/// not.
pub fn check_pattern(words: &[AtomicU64], seed: u64) -> anyhow::Result<()> {
    match (0..words.len()).find(|&i| words[i].load(Ordering::Relaxed) != pattern(seed, i)) {
        Some(i) => bail!(
            "word {i} of {} holds {:#x}, not {:#x} (the pattern of seed {seed})",
            words.len(),
            words[i].load(Ordering::Relaxed),
            pattern(seed, i)
        ),
        None => Ok(()),
    }
}
