//! `netmcore::shared::Mutex` across processes: mutual exclusion between workers, a handle
//! opened by a sibling forked before the mutex existed, robustness when a holder dies (the
//! next locker, and a locker already asleep, get the lock poisoned), poison from a panic, and
//! the segment destroyed with its last user.
//!
//! Run one with `cargo test -p netmcore-tests --test shared_mutex -- NAME`.

mod support;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, ensure};
use netmcore::shared::{Handle, Mutex};
use rustix::process::{Pid, Signal, kill_process};
use support::{Scenario, cases, coordinator, run_coordinator, verdict};

fn main() -> ExitCode {
    support::run_cases(cases![
        workers_increment_under_the_lock_without_losing_one,
        a_sibling_forked_before_it_opens_it_by_handle,
        a_holder_killed_while_holding_leaves_it_poisoned_for_the_next_locker,
        a_sleeping_locker_takes_over_from_a_killed_holder,
        a_guard_dropped_in_a_panic_poisons_it,
        the_segment_goes_with_its_last_user,
    ])
}

/// How many times each counting worker increments.
const ROUNDS: u64 = 20_000;

/// Reads the Unix pid a worker wrote to `path`.
fn pid_in(path: &std::path::Path) -> anyhow::Result<Pid> {
    let raw = support::read_pid(path)?;
    Pid::from_raw(raw).context("a positive pid")
}

/// Locks `mutex`, taking a poisoned lock as it is.
fn lock<T: netmcore::shared::Plain>(mutex: &Mutex<T>) -> netmcore::shared::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Three workers each increment a shared `u64` `ROUNDS` times under the mutex, with a separate
/// load and store, so that any overlap would lose an increment. The total is exact.
fn workers_increment_under_the_lock_without_losing_one(s: &Scenario) -> anyhow::Result<()> {
    let counter = coordinator(|handle: Handle<Mutex<u64>>| {
        let mutex = Mutex::open(handle)?;
        for _ in 0..ROUNDS {
            let mut guard = mutex.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            let value = *guard;
            std::hint::black_box(&value);
            *guard = value + 1;
        }
        Ok(())
    })?;
    let first = coordinator(move |()| {
        let mutex = Mutex::new(0u64)?;
        let pids = (0..3)
            .map(|_| counter.start(&mutex.handle()))
            .collect::<Result<Vec<_>, _>>()?;
        for pid in pids {
            verdict(counter.join(pid)?)?;
        }
        let total = *mutex.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        ensure!(
            total == 3 * ROUNDS,
            "the counter is {total}, not {}",
            3 * ROUNDS
        );
        ensure!(!mutex.is_poisoned(), "poisoned after a clean run");
        Ok(())
    })?;
    run_coordinator(s, &first, &())
}

/// The reader is started before the mutex exists and waits for its handle in a file; it maps
/// the segment at an address of its own and sees the value the creator stored.
fn a_sibling_forked_before_it_opens_it_by_handle(s: &Scenario) -> anyhow::Result<()> {
    let reader = coordinator(|path: PathBuf| {
        let mutex = Mutex::open(read_handle::<Mutex<[u32; 4]>>(&path)?)?;
        let guard = lock(&mutex);
        ensure!(*guard == [1, 2, 3, 4], "the reader sees {:?}", *guard);
        Ok(())
    })?;
    let first = coordinator(move |path: PathBuf| {
        let pid = reader.start(&path)?;
        let mutex = Mutex::new([1u32, 2, 3, 4])?;
        write_handle(&path, mutex.handle())?;
        verdict(reader.join(pid)?)
    })?;
    run_coordinator(s, &first, &s.path("handle"))
}

/// Writes `handle` to `path` as the bytes of an `Encap`, as a process would send it (the
/// file appears whole: written aside, then renamed).
fn write_handle<S: 'static>(path: &std::path::Path, handle: Handle<S>) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, netmcore::Encap::wrap(&handle)?.as_bytes())?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Waits for the handle that [`write_handle`] writes to `path`.
fn read_handle<S: 'static>(path: &std::path::Path) -> anyhow::Result<Handle<S>> {
    support::wait_for_file(path)?;
    let bytes = std::fs::read(path)?;
    Ok(netmcore::Encap::from_bytes(&bytes)?.unwrap()?)
}

/// A holder locks the mutex, writes half of an update and is killed with SIGKILL while it
/// holds it. The next locker gets the lock, poisoned, with the half-written value; after
/// `clear_poison` the mutex is clean again.
fn a_holder_killed_while_holding_leaves_it_poisoned_for_the_next_locker(
    s: &Scenario,
) -> anyhow::Result<()> {
    let holder = coordinator(|(handle, pid_file): (Handle<Mutex<[u64; 2]>>, PathBuf)| {
        let mutex = Mutex::open(handle)?;
        let mut guard = lock(&mutex);
        guard[0] = 7;
        support::write_own_pid(&pid_file)?;
        support::sleep_forever()
    })?;
    let first = coordinator(move |pid_file: PathBuf| {
        let mutex = Mutex::new([0u64; 2])?;
        let pid = holder.start(&(mutex.handle(), pid_file.clone()))?;
        kill_process(pid_in(&pid_file)?, Signal::KILL)?;
        ensure!(holder.join(pid)?.is_none(), "the killed holder returned");
        match mutex.lock() {
            Ok(_) => anyhow::bail!("the lock of a killed holder is not poisoned"),
            Err(poisoned) => {
                let guard = poisoned.into_inner();
                ensure!(*guard == [7, 0], "the value is {:?}", *guard);
            }
        }
        ensure!(mutex.is_poisoned(), "is_poisoned after the takeover");
        mutex.clear_poison();
        ensure!(mutex.lock().is_ok(), "still poisoned after clear_poison");
        Ok(())
    })?;
    run_coordinator(s, &first, &s.path("holder.pid"))
}

/// A locker is already asleep in `lock` when the holder is killed: it wakes, takes the lock
/// over and returns it poisoned.
fn a_sleeping_locker_takes_over_from_a_killed_holder(s: &Scenario) -> anyhow::Result<()> {
    let holder = coordinator(|(handle, pid_file): (Handle<Mutex<u64>>, PathBuf)| {
        let mutex = Mutex::open(handle)?;
        let _guard = lock(&mutex);
        support::write_own_pid(&pid_file)?;
        support::sleep_forever()
    })?;
    let locker = coordinator(|(handle, asleep): (Handle<Mutex<u64>>, PathBuf)| {
        let mutex = Mutex::open(handle)?;
        support::touch(&asleep)?;
        let poisoned = mutex.lock().is_err();
        ensure!(
            poisoned,
            "the lock taken over from a killed holder is not poisoned"
        );
        Ok(())
    })?;
    let first = coordinator(move |(pid_file, asleep): (PathBuf, PathBuf)| {
        let mutex = Mutex::new(0u64)?;
        let holding = holder.start(&(mutex.handle(), pid_file.clone()))?;
        let holder_pid = pid_in(&pid_file)?;
        let waiting = locker.start(&(mutex.handle(), asleep.clone()))?;
        support::wait_for_file(&asleep)?;
        // Give the locker a moment to go to sleep in `lock`; it passes either way.
        std::thread::sleep(std::time::Duration::from_millis(20));
        kill_process(holder_pid, Signal::KILL)?;
        ensure!(
            holder.join(holding)?.is_none(),
            "the killed holder returned"
        );
        verdict(locker.join(waiting)?)
    })?;
    run_coordinator(s, &first, &(s.path("holder.pid"), s.path("asleep")))
}

/// A worker panics while it holds a guard: the mutex is poisoned for the next locker, as
/// `std::sync::Mutex` would be.
fn a_guard_dropped_in_a_panic_poisons_it(s: &Scenario) -> anyhow::Result<()> {
    let panicker = coordinator(|handle: Handle<Mutex<u64>>| {
        let mutex = Mutex::open(handle)?;
        std::panic::set_hook(Box::new(|_| {}));
        let _guard = lock(&mutex);
        panic!("a deliberate panic while holding the lock");
    })?;
    let first = coordinator(move |()| {
        let mutex = Mutex::new(0u64)?;
        let pid = panicker.start(&mutex.handle())?;
        ensure!(
            panicker.join(pid)?.is_none(),
            "the panicking worker returned"
        );
        ensure!(
            mutex.lock().is_err(),
            "not poisoned after a panic while held"
        );
        Ok(())
    })?;
    run_coordinator(s, &first, &())
}

/// A worker creates a mutex and returns its handle without keeping it: its end released the
/// segment, so opening the handle is `NoResource`. A mutex the coordinator creates and drops
/// is gone from `/dev/shm` the moment the drop returns.
fn the_segment_goes_with_its_last_user(s: &Scenario) -> anyhow::Result<()> {
    let maker = netmcore::process::def_process(|()| -> Handle<Mutex<u64>> {
        Mutex::new(5u64).expect("a mutex").handle()
    })?;
    let first = coordinator(move |()| {
        let pid = maker.start(&())?;
        let handle = maker.join(pid)?.context("the maker returned")?;
        let opened = Mutex::open(handle);
        ensure!(
            matches!(
                opened,
                Err(netmcore::shared::Error::Master(
                    netmcore::Error::NoResource(_)
                ))
            ),
            "opening a mutex whose only user ended gave {opened:?}"
        );
        let mutex = Mutex::new(1u64)?;
        let name = netmcore::get_shm(mutex.handle().id())?;
        let path = support::objects::shm_path(&name);
        ensure!(path.exists(), "{} does not exist", path.display());
        drop(mutex);
        ensure!(!path.exists(), "{} is left after the drop", path.display());
        Ok(())
    })?;
    run_coordinator(s, &first, &())
}
