//! `netmcore::shared::{HashMap, HashSet}` across processes: workers inserting disjoint and
//! overlapping keys at once end with exactly the union, `Full` at capacity changes nothing, and
//! a worker killed in the middle of its inserts — between two of them, or while it holds the
//! map's lock with a half-written slot, or in the middle of a remove — leaves a map the others
//! keep using, with every insert it completed. Lookups do not wait for a live holder of the
//! lock.
//!
//! Run one with `cargo test -p netmcore-tests --test shared_map -- NAME`.

mod support;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use anyhow::{Context as _, ensure};
use netmcore::shared::{Error, Handle, HashMap, HashSet, SharedAtomics};
use rustix::process::{Pid, Signal, getpid, kill_process};
use support::{Scenario, cases, coordinator, run_coordinator, verdict};

fn main() -> ExitCode {
    support::run_cases(cases![
        workers_insert_overlapping_keys_and_get_the_union,
        full_at_capacity_changes_nothing,
        a_worker_killed_between_inserts_leaves_its_completed_ones,
        a_worker_killed_holding_the_lock_does_not_wedge_the_map,
        a_worker_killed_in_the_middle_of_a_remove_leaves_lookups_working,
    ])
}

/// The value every worker gives key `k`.
fn value_of(k: u64) -> [u64; 2] {
    [k * 3, !k]
}

/// Three workers insert 1500 keys each from `1000 × i`: the ranges overlap pairwise (and
/// insert the same values). The map holds exactly the union, with the right values.
fn workers_insert_overlapping_keys_and_get_the_union(s: &Scenario) -> anyhow::Result<()> {
    let inserter = coordinator(|(handle, first): (Handle<HashMap<u64, [u64; 2]>>, u64)| {
        let map = HashMap::open(handle)?;
        for k in first..first + 1500 {
            let old = map.insert(k, value_of(k))?;
            ensure!(old.is_none_or(|v| v == value_of(k)), "key {k} held {old:?}");
        }
        Ok(())
    })?;
    let first = coordinator(move |()| {
        let map = HashMap::<u64, [u64; 2]>::with_capacity(3500)?;
        let pids = (0..3)
            .map(|i| inserter.start(&(map.handle(), 1000 * i)))
            .collect::<Result<Vec<_>, _>>()?;
        for pid in pids {
            verdict(inserter.join(pid)?)?;
        }
        ensure!(map.len() == 3500, "the map holds {} keys", map.len());
        for k in 0..3500 {
            ensure!(
                map.get(&k) == Some(value_of(k)),
                "key {k}: {:?}",
                map.get(&k)
            );
        }
        let mut all = map.to_vec();
        all.sort_unstable();
        ensure!(
            all == (0..3500).map(|k| (k, value_of(k))).collect::<Vec<_>>(),
            "to_vec is not the union"
        );
        ensure!(
            matches!(map.insert(9999, [0, 0]), Err(Error::Full)),
            "a key beyond the capacity"
        );
        Ok(())
    })?;
    run_coordinator(s, &first, &())
}

/// Three workers each try to add 100 keys of their own to a set of 150: exactly 150 adds
/// succeed, the others are `Full` and add nothing, and the set holds exactly the added keys.
fn full_at_capacity_changes_nothing(s: &Scenario) -> anyhow::Result<()> {
    let adder = netmcore::process::def_process(
        |(handle, first): (Handle<HashSet<u32>>, u32)| -> Result<Vec<u32>, String> {
            let set = HashSet::open(handle).map_err(|e| e.to_string())?;
            let mut added = Vec::new();
            for k in first..first + 100 {
                match set.insert(k) {
                    Ok(true) => added.push(k),
                    Ok(false) => return Err(format!("{k} was there already")),
                    Err(Error::Full) => {
                        if set.contains(&k) {
                            return Err(format!("{k} is there after Full"));
                        }
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
            Ok(added)
        },
    )?;
    let first = coordinator(move |()| {
        let set = HashSet::<u32>::with_capacity(150)?;
        let pids = (0..3)
            .map(|i| adder.start(&(set.handle(), 1000 * i)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut added = Vec::new();
        for pid in pids {
            let mine = adder
                .join(pid)?
                .context("an adder ended")?
                .map_err(anyhow::Error::msg)?;
            added.extend(mine);
        }
        added.sort_unstable();
        ensure!(added.len() == 150, "{} adds succeeded", added.len());
        let mut held = set.to_vec();
        held.sort_unstable();
        ensure!(held == added, "the set holds other keys than were added");
        ensure!(
            set.len() == 150 && set.capacity() == 150,
            "len {}",
            set.len()
        );
        // A removal makes room for exactly one more.
        ensure!(set.remove(&added[0]), "remove");
        ensure!(set.insert(5000)?, "the freed room");
        ensure!(matches!(set.insert(5001), Err(Error::Full)), "full again");
        Ok(())
    })?;
    run_coordinator(s, &first, &())
}

/// A worker counts its completed inserts in a shared word and kills itself with SIGKILL in
/// the middle of its loop. Every insert it completed is in the map, and another worker then
/// fills the map on without hanging.
fn a_worker_killed_between_inserts_leaves_its_completed_ones(s: &Scenario) -> anyhow::Result<()> {
    let doomed = coordinator(
        |(handle, done): (Handle<HashMap<u32, u32>>, Handle<SharedAtomics>)| {
            let map = HashMap::open(handle)?;
            let done = SharedAtomics::open(done)?;
            for k in 0..1000u32 {
                if k == 600 {
                    kill_process(getpid(), Signal::KILL)?;
                }
                map.insert(k, k + 1)?;
                done.as_slice()[0].store(u64::from(k) + 1, Ordering::Release);
            }
            Ok(())
        },
    )?;
    let survivor = coordinator(|handle: Handle<HashMap<u32, u32>>| {
        let map = HashMap::open(handle)?;
        for k in 0..2000u32 {
            map.insert(k, k + 1)?;
        }
        Ok(())
    })?;
    let first = coordinator(move |()| {
        let map = HashMap::<u32, u32>::with_capacity(2000)?;
        let done = SharedAtomics::new(1)?;
        let pid = doomed.start(&(map.handle(), done.handle()))?;
        ensure!(doomed.join(pid)?.is_none(), "the killed worker returned");
        let completed = done.as_slice()[0].load(Ordering::Acquire);
        ensure!(completed == 600, "{completed} inserts completed");
        for k in 0..600u32 {
            ensure!(map.get(&k) == Some(k + 1), "completed key {k} is missing");
        }
        ensure!(map.len() == 600, "len {}", map.len());
        let pid = survivor.start(&map.handle())?;
        verdict(survivor.join(pid)?)?;
        ensure!(map.len() == 2000, "len {} after the survivor", map.len());
        Ok(())
    })?;
    run_coordinator(s, &first, &())
}

/// The index of a map's lock word among its 32-bit words: right after the 128-byte segment
/// header.
const LOCK_WORD: usize = 128 / 4;

/// The index of a map's version word (the readers' seqlock) among its 64-bit words: on the
/// second cache line of the map's words.
const VERSION_WORD: usize = (128 + 64) / 8;

/// The index of a set's first slot among its 64-bit words: after the header and the map's
/// 128 bytes of words. A slot of a `HashSet<u64>` is two words, its state and its key.
const SLOTS: usize = 256 / 8;

/// A slot's state word: a removed key.
const TOMBSTONE: u64 = 2;

/// In a worker: maps the set's segment and takes its lock as the library does — its
/// process's tag in the lock word.
fn take_the_lock(set: &HashSet<u64>) -> anyhow::Result<netmcore::ipc::shm::Mapping> {
    let tag = u32::try_from(netmcore::self_process_id()?.0 + 1)?;
    let name = netmcore::get_shm(set.handle().id())?;
    let mapping = netmcore::ipc::shm::ShmObject::open(&name)?.map()?;
    let words = mapping.as_atomic_u32s().context("a map is 4-aligned")?;
    words[LOCK_WORD]
        .compare_exchange(0, tag, Ordering::Acquire, Ordering::Relaxed)
        .map_err(|w| anyhow::anyhow!("the lock word is {w:#x}"))?;
    Ok(mapping)
}

/// A worker takes the map's lock and starts an insert (the key's words written, not yet
/// committed), then waits to be killed. Meanwhile lookups of keys that are there answer
/// without waiting for it (an insert of a key that is there is one). A second worker is
/// already asleep in an insert of a new key when the holder is killed: it takes the lock over
/// and goes on; the half-written slot is no key, and the completed inserts are there.
fn a_worker_killed_holding_the_lock_does_not_wedge_the_map(s: &Scenario) -> anyhow::Result<()> {
    let holder = coordinator(|(handle, pid_file): (Handle<HashSet<u64>>, PathBuf)| {
        let set = HashSet::open(handle)?;
        let mapping = take_the_lock(&set)?;
        // A key's word in a free slot, its state word left free: an insert not committed.
        let words = mapping.as_atomic_u64s().context("8-aligned")?;
        let free = (SLOTS..words.len())
            .step_by(2)
            .find(|&i| words[i].load(Ordering::Relaxed) == 0)
            .context("a free slot")?;
        words[free + 1].store(77, Ordering::Relaxed);
        support::write_own_pid(&pid_file)?;
        support::sleep_forever()
    })?;
    let waiter = coordinator(|(handle, asleep): (Handle<HashSet<u64>>, PathBuf)| {
        let set = HashSet::open(handle)?;
        support::touch(&asleep)?;
        ensure!(set.insert(2)?, "2 is new");
        ensure!(!set.contains(&77), "the uncommitted key is there");
        Ok(())
    })?;
    let first = coordinator(move |(pid_file, asleep): (PathBuf, PathBuf)| {
        let set = HashSet::<u64>::with_capacity(8)?;
        ensure!(set.insert(1)?, "1 is new");
        let holding = holder.start(&(set.handle(), pid_file.clone()))?;
        let holder_pid = Pid::from_raw(support::read_pid(&pid_file)?).context("a pid")?;
        // The holder is alive and holds the lock: lookups of a key that is there do not wait.
        ensure!(set.contains(&1), "1 is not found while the lock is held");
        ensure!(!set.insert(1)?, "1 is new while the lock is held");
        let waiting = waiter.start(&(set.handle(), asleep.clone()))?;
        support::wait_for_file(&asleep)?;
        // Give the waiter a moment to go to sleep in `insert`; it passes either way.
        std::thread::sleep(std::time::Duration::from_millis(20));
        kill_process(holder_pid, Signal::KILL)?;
        ensure!(
            holder.join(holding)?.is_none(),
            "the killed holder returned"
        );
        verdict(waiter.join(waiting)?)?;
        let mut all = set.to_vec();
        all.sort_unstable();
        ensure!(all == [1, 2], "the set holds {all:?}");
        ensure!(set.insert(3)? && set.len() == 3, "len {}", set.len());
        Ok(())
    })?;
    run_coordinator(s, &first, &(s.path("holder.pid"), s.path("asleep")))
}

/// A worker takes the set's lock and starts a remove of key 1 as the library does — the
/// version word odd, the slot a tombstone — then waits to be killed. A lookup started before
/// the kill cannot trust what it reads, waits for the lock, and answers after the kill (key 1
/// is gone: the remove was under way); the takeover ends the change, and the set goes on.
fn a_worker_killed_in_the_middle_of_a_remove_leaves_lookups_working(
    s: &Scenario,
) -> anyhow::Result<()> {
    let remover = coordinator(|(handle, pid_file): (Handle<HashSet<u64>>, PathBuf)| {
        let set = HashSet::open(handle)?;
        let mapping = take_the_lock(&set)?;
        let words = mapping.as_atomic_u64s().context("8-aligned")?;
        let slot = (SLOTS..words.len())
            .step_by(2)
            .find(|&i| {
                words[i].load(Ordering::Relaxed) == 1 && words[i + 1].load(Ordering::Relaxed) == 1
            })
            .context("the slot of key 1")?;
        words[VERSION_WORD].fetch_or(1, Ordering::Relaxed);
        words[slot].store(TOMBSTONE, Ordering::Release);
        support::write_own_pid(&pid_file)?;
        support::sleep_forever()
    })?;
    let reader = coordinator(|(handle, asleep): (Handle<HashSet<u64>>, PathBuf)| {
        let set = HashSet::open(handle)?;
        support::touch(&asleep)?;
        ensure!(!set.contains(&1), "1 is there after its remove");
        ensure!(set.contains(&2), "2 is gone");
        Ok(())
    })?;
    let first = coordinator(move |(pid_file, asleep): (PathBuf, PathBuf)| {
        let set = HashSet::<u64>::with_capacity(8)?;
        ensure!(set.insert(1)? && set.insert(2)?, "1 and 2 are new");
        let removing = remover.start(&(set.handle(), pid_file.clone()))?;
        let remover_pid = Pid::from_raw(support::read_pid(&pid_file)?).context("a pid")?;
        let reading = reader.start(&(set.handle(), asleep.clone()))?;
        support::wait_for_file(&asleep)?;
        // Give the reader a moment to go to sleep in `contains`; it passes either way.
        std::thread::sleep(std::time::Duration::from_millis(20));
        kill_process(remover_pid, Signal::KILL)?;
        ensure!(
            remover.join(removing)?.is_none(),
            "the killed remover returned"
        );
        verdict(reader.join(reading)?)?;
        ensure!(set.to_vec() == [2], "the set holds {:?}", set.to_vec());
        ensure!(set.len() == 1, "len {}", set.len());
        ensure!(set.insert(1)?, "1 is new again");
        ensure!(set.contains(&1) && set.contains(&2), "1 and 2 are there");
        Ok(())
    })?;
    run_coordinator(s, &first, &(s.path("remover.pid"), s.path("asleep")))
}
