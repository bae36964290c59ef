//! `netmcore::shared::{Condvar, Semaphore, Barrier}` across processes: a producer/consumer
//! hand-off and notify_all with a condition variable, timeouts, a waiter whose mutex holder
//! is killed; a semaphore as a limit on how many workers are inside, and a blocked acquire
//! released from another process; barrier rounds with one leader each, a participant killed
//! while the others wait, and the table of openers. The support module checks after each
//! scenario that no segment is left in `/dev/shm`.
//!
//! Run one with `cargo test -p netmcore-tests --test shared_sync -- NAME`.

mod support;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail, ensure};
use netmcore::shared::{Barrier, Condvar, Error, Handle, Mutex, MutexGuard, Plain, Semaphore};
use rustix::process::{Pid, Signal, kill_process};
use support::{Scenario, WAIT_DEADLINE, cases, coordinator, ensure_err, run_coordinator, verdict};

fn main() -> ExitCode {
    support::run_cases(cases![
        a_consumer_takes_every_value_a_producer_hands_over,
        notify_all_wakes_every_waiter,
        wait_timeout_times_out_without_a_notify_and_not_with_one,
        a_condvar_waiter_gets_the_relock_poisoned_when_the_holder_is_killed,
        a_semaphore_lets_at_most_k_workers_in,
        acquire_timeout_fails_on_an_empty_semaphore,
        a_blocked_acquire_is_released_by_another_process,
        a_barrier_of_three_has_one_leader_per_round,
        a_killed_participant_breaks_the_barrier_for_its_waiters,
        openers_leave_the_table_and_a_full_table_is_refused,
    ])
}

/// How many values the producer hands over.
const HANDOVERS: u64 = 300;

/// How many times each semaphore worker goes in and out.
const ENTRIES: u32 = 200;

/// How many rounds the barrier participants go through.
const ROUNDS: usize = 40;

/// Locks `mutex`, as a scenario step that fails if it is poisoned.
fn lock<T: Plain>(mutex: &Mutex<T>) -> anyhow::Result<MutexGuard<'_, T>> {
    mutex.lock().map_err(|_| anyhow!("the mutex is poisoned"))
}

/// Reads the Unix pid a worker wrote to `path`.
fn pid_in(path: &Path) -> anyhow::Result<Pid> {
    let raw = support::read_pid(path)?;
    Pid::from_raw(raw).context("a positive pid")
}

/// A slot that holds at most one value: `[full, value]`.
type Slot = Mutex<[u64; 2]>;

/// A producer puts `1..=HANDOVERS` one by one into a one-value slot, waiting while it is
/// full; a consumer in another process takes them, waiting while it is empty. Both wait with
/// `wait_while` on one condition variable and notify all after each change. The consumer gets
/// every value, in order, once.
fn a_consumer_takes_every_value_a_producer_hands_over(s: &Scenario) -> anyhow::Result<()> {
    let producer = coordinator(|(slot, changed): (Handle<Slot>, Handle<Condvar>)| {
        let (slot, changed) = (Mutex::open(slot)?, Condvar::open(changed)?);
        for value in 1..=HANDOVERS {
            let guard = lock(&slot)?;
            let mut guard = changed
                .wait_while(guard, |s| s[0] == 1)
                .map_err(|_| anyhow!("poisoned"))?;
            *guard = [1, value];
            drop(guard);
            changed.notify_all();
        }
        Ok(())
    })?;
    let consumer = coordinator(|(slot, changed): (Handle<Slot>, Handle<Condvar>)| {
        let (slot, changed) = (Mutex::open(slot)?, Condvar::open(changed)?);
        for expected in 1..=HANDOVERS {
            let guard = lock(&slot)?;
            let mut guard = changed
                .wait_while(guard, |s| s[0] == 0)
                .map_err(|_| anyhow!("poisoned"))?;
            ensure!(guard[1] == expected, "took {}, not {expected}", guard[1]);
            *guard = [0, 0];
            drop(guard);
            changed.notify_all();
        }
        Ok(())
    })?;
    let first = coordinator(move |()| {
        let slot: Slot = Mutex::new([0, 0])?;
        let changed = Condvar::new()?;
        let args = (slot.handle(), changed.handle());
        let taking = consumer.start(&args)?;
        let giving = producer.start(&args)?;
        verdict(producer.join(giving)?)?;
        verdict(consumer.join(taking)?)?;
        ensure!(*lock(&slot)? == [0, 0], "the slot is not empty at the end");
        Ok(())
    })?;
    run_coordinator(s, &first, &())
}

/// Three waiters register under the mutex and wait until a flag is set; the coordinator waits
/// until all three are inside `wait_while` (each has released the mutex, so it has read the
/// condition variable's sequence), sets the flag and notifies all, once: every waiter wakes.
fn notify_all_wakes_every_waiter(s: &Scenario) -> anyhow::Result<()> {
    // `[waiting, go]`.
    let waiter = coordinator(|(state, go): (Handle<Mutex<[u32; 2]>>, Handle<Condvar>)| {
        let (state, go) = (Mutex::open(state)?, Condvar::open(go)?);
        let mut guard = lock(&state)?;
        guard[0] += 1;
        let guard = go
            .wait_while(guard, |s| s[1] == 0)
            .map_err(|_| anyhow!("poisoned"))?;
        ensure!(guard[1] == 1, "woke with the flag {}", guard[1]);
        Ok(())
    })?;
    let first = coordinator(move |()| {
        let state = Mutex::new([0u32; 2])?;
        let go = Condvar::new()?;
        let pids = (0..3)
            .map(|_| waiter.start(&(state.handle(), go.handle())))
            .collect::<Result<Vec<_>, _>>()?;
        support::wait_until("three waiters wait", || {
            state.lock().map(|g| g[0] == 3).unwrap_or(false)
        })?;
        lock(&state)?[1] = 1;
        go.notify_all();
        for pid in pids {
            verdict(waiter.join(pid)?)?;
        }
        Ok(())
    })?;
    run_coordinator(s, &first, &())
}

/// Nobody notifies: `wait_timeout` returns with the flag `true`, holding the lock again. A
/// waiter in another process with a long timeout is woken by a notify: its flag is `false`.
fn wait_timeout_times_out_without_a_notify_and_not_with_one(s: &Scenario) -> anyhow::Result<()> {
    let waiter = coordinator(|(state, go): (Handle<Mutex<[u32; 2]>>, Handle<Condvar>)| {
        let (state, go) = (Mutex::open(state)?, Condvar::open(go)?);
        let mut guard = lock(&state)?;
        guard[0] = 1;
        while guard[1] == 0 {
            let (again, timed_out) = go
                .wait_timeout(guard, WAIT_DEADLINE)
                .map_err(|_| anyhow!("poisoned"))?;
            ensure!(!timed_out, "timed out although the coordinator notifies");
            guard = again;
        }
        Ok(())
    })?;
    let first = coordinator(move |()| {
        let state = Mutex::new([0u32; 2])?;
        let go = Condvar::new()?;
        // Alone: the time runs out.
        let guard = lock(&state)?;
        let (guard, timed_out) = go
            .wait_timeout(guard, Duration::from_millis(30))
            .map_err(|_| anyhow!("poisoned"))?;
        ensure!(timed_out, "a wait that nobody notifies did not time out");
        ensure!(*guard == [0, 0], "the value changed: {:?}", *guard);
        drop(guard);
        ensure!(
            state.try_lock().is_ok(),
            "the lock is not free after the guard of a timed-out wait was dropped"
        );
        // With a notifier.
        let pid = waiter.start(&(state.handle(), go.handle()))?;
        support::wait_until("the waiter waits", || {
            state.lock().map(|g| g[0] == 1).unwrap_or(false)
        })?;
        lock(&state)?[1] = 1;
        go.notify_one();
        verdict(waiter.join(pid)?)
    })?;
    run_coordinator(s, &first, &())
}

/// A waiter waits on the condition variable; another worker locks the mutex, changes the
/// value, notifies, and is killed with SIGKILL while it still holds the lock. The waiter's
/// relock takes the lock over from the dead holder and returns it poisoned, with the value
/// the holder wrote.
fn a_condvar_waiter_gets_the_relock_poisoned_when_the_holder_is_killed(
    s: &Scenario,
) -> anyhow::Result<()> {
    // `[waiting, changed]`.
    type Args = (Handle<Mutex<[u32; 2]>>, Handle<Condvar>, PathBuf);
    let waiter = coordinator(|(state, changed, _): Args| {
        let (state, changed) = (Mutex::open(state)?, Condvar::open(changed)?);
        let mut guard = lock(&state)?;
        guard[0] = 1;
        match changed.wait_while(guard, |s| s[1] == 0) {
            Ok(guard) => bail!("the relock is not poisoned (value {:?})", *guard),
            Err(poisoned) => {
                let guard = poisoned.into_inner();
                ensure!(guard[1] == 7, "the value is {:?}", *guard);
            }
        }
        Ok(())
    })?;
    let holder = coordinator(|(state, changed, pid_file): Args| {
        let (state, changed) = (Mutex::open(state)?, Condvar::open(changed)?);
        let mut guard = lock(&state)?;
        guard[1] = 7;
        changed.notify_all();
        support::write_own_pid(&pid_file)?;
        support::sleep_forever()
    })?;
    let first = coordinator(move |pid_file: PathBuf| {
        let state = Mutex::new([0u32; 2])?;
        let changed = Condvar::new()?;
        let args = (state.handle(), changed.handle(), pid_file.clone());
        let waiting = waiter.start(&args)?;
        support::wait_until("the waiter waits", || {
            state.lock().map(|g| g[0] == 1).unwrap_or(false)
        })?;
        let holding = holder.start(&args)?;
        kill_process(pid_in(&pid_file)?, Signal::KILL)?;
        ensure!(
            holder.join(holding)?.is_none(),
            "the killed holder returned"
        );
        verdict(waiter.join(waiting)?)?;
        ensure!(state.is_poisoned(), "not poisoned after the takeover");
        Ok(())
    })?;
    run_coordinator(s, &first, &s.path("holder.pid"))
}

/// Three workers go `ENTRIES` times each through a section guarded by a semaphore of 2,
/// counting who is inside in a mutex (and the most ever inside): never more than 2, and the
/// semaphore is back to 2 at the end.
fn a_semaphore_lets_at_most_k_workers_in(s: &Scenario) -> anyhow::Result<()> {
    // `[inside, most]`.
    let worker = coordinator(
        |(gate, count): (Handle<Semaphore>, Handle<Mutex<[u32; 2]>>)| {
            let (gate, count) = (Semaphore::open(gate)?, Mutex::open(count)?);
            for _ in 0..ENTRIES {
                gate.acquire()?;
                {
                    let mut guard = lock(&count)?;
                    guard[0] += 1;
                    guard[1] = guard[1].max(guard[0]);
                }
                // Stay inside a moment, so that the others come knocking.
                for _ in 0..20 {
                    std::thread::yield_now();
                }
                lock(&count)?[0] -= 1;
                gate.release()?;
            }
            Ok(())
        },
    )?;
    let first = coordinator(move |()| {
        let gate = Semaphore::new(2)?;
        let count = Mutex::new([0u32; 2])?;
        let pids = (0..3)
            .map(|_| worker.start(&(gate.handle(), count.handle())))
            .collect::<Result<Vec<_>, _>>()?;
        for pid in pids {
            verdict(worker.join(pid)?)?;
        }
        let [inside, most] = *lock(&count)?;
        ensure!(inside == 0, "{inside} inside at the end");
        ensure!((1..=2).contains(&most), "{most} were inside at once");
        ensure!(
            gate.value() == 2,
            "the value is {} at the end",
            gate.value()
        );
        Ok(())
    })?;
    run_coordinator(s, &first, &())
}

/// An empty semaphore: `try_acquire` and `acquire_timeout` fail; after a release both
/// directions work. A semaphore at its maximum refuses a release with `Full`, and one cannot
/// be made beyond it.
fn acquire_timeout_fails_on_an_empty_semaphore(s: &Scenario) -> anyhow::Result<()> {
    let first = coordinator(|()| {
        let empty = Semaphore::new(0)?;
        ensure!(!empty.try_acquire(), "took from an empty semaphore");
        ensure!(
            !empty.acquire_timeout(Duration::from_millis(30)),
            "acquire_timeout took from an empty semaphore"
        );
        empty.release()?;
        ensure!(empty.value() == 1, "the value is {}", empty.value());
        ensure!(
            empty.acquire_timeout(Duration::from_millis(30)),
            "acquire_timeout did not take the unit released"
        );
        ensure!(empty.value() == 0, "the value is {}", empty.value());
        let full = Semaphore::new(Semaphore::MAX_VALUE)?;
        ensure_err!(full.release(), Error::Full);
        ensure!(full.value() == Semaphore::MAX_VALUE, "the value changed");
        ensure_err!(Semaphore::new(Semaphore::MAX_VALUE + 1), Error::Full);
        Ok(())
    })?;
    run_coordinator(s, &first, &())
}

/// A worker blocks in `acquire` on an empty semaphore; a release from the coordinator lets it
/// through. Then the other way round: the coordinator blocks and the worker releases.
fn a_blocked_acquire_is_released_by_another_process(s: &Scenario) -> anyhow::Result<()> {
    let worker = coordinator(
        |(there, back, asleep): (Handle<Semaphore>, Handle<Semaphore>, PathBuf)| {
            let (there, back) = (Semaphore::open(there)?, Semaphore::open(back)?);
            support::touch(&asleep)?;
            there.acquire()?;
            back.release()?;
            Ok(())
        },
    )?;
    let first = coordinator(move |asleep: PathBuf| {
        let there = Semaphore::new(0)?;
        let back = Semaphore::new(0)?;
        let pid = worker.start(&(there.handle(), back.handle(), asleep.clone()))?;
        support::wait_for_file(&asleep)?;
        // Give the worker a moment to go to sleep in `acquire`; it passes either way.
        std::thread::sleep(Duration::from_millis(20));
        there.release()?;
        back.acquire()?;
        verdict(worker.join(pid)?)?;
        ensure!(
            there.value() == 0 && back.value() == 0,
            "values {} and {}",
            there.value(),
            back.value()
        );
        Ok(())
    })?;
    run_coordinator(s, &first, &s.path("asleep"))
}

/// The shared state of the barrier rounds: the round each participant has written, and how
/// many leaders each round had.
type Progress = Mutex<[u32; 3]>;
type Leaders = Mutex<[u32; ROUNDS]>;

/// Three processes go through `ROUNDS` rounds of a barrier: each writes its round before it
/// waits, and after the wait sees the others' writes of that round. Each round has exactly
/// one leader.
fn a_barrier_of_three_has_one_leader_per_round(s: &Scenario) -> anyhow::Result<()> {
    type Args = (Handle<Barrier>, Handle<Progress>, Handle<Leaders>, usize);
    let participant = coordinator(|(barrier, progress, leaders, me): Args| {
        let barrier = Barrier::open(barrier)?;
        let (progress, leaders) = (Mutex::open(progress)?, Mutex::open(leaders)?);
        for round in 0..ROUNDS {
            let written = u32::try_from(round + 1)?;
            lock(&progress)?[me] = written;
            if barrier.wait()? {
                lock(&leaders)?[round] += 1;
            }
            let seen = *lock(&progress)?;
            ensure!(
                seen.iter().all(|&r| r >= written),
                "after round {round} participant {me} sees {seen:?}"
            );
        }
        Ok(())
    })?;
    let first = coordinator(move |()| {
        let barrier = Barrier::new(3)?;
        let progress = Mutex::new([0u32; 3])?;
        let leaders = Mutex::new([0u32; ROUNDS])?;
        let pids = (0..3)
            .map(|me| {
                participant.start(&(barrier.handle(), progress.handle(), leaders.handle(), me))
            })
            .collect::<Result<Vec<_>, _>>()?;
        for pid in pids {
            verdict(participant.join(pid)?)?;
        }
        let leaders = *lock(&leaders)?;
        ensure!(
            leaders.iter().all(|&n| n == 1),
            "leaders per round: {leaders:?}"
        );
        ensure!(!barrier.is_broken(), "broken after a clean run");
        Ok(())
    })?;
    run_coordinator(s, &first, &())
}

/// Of a barrier of three, two workers wait and the third, which has it open, is killed with
/// SIGKILL before it arrives. Both waiters return `Broken` (they do not hang), and so does
/// every later wait, theirs and the coordinator's.
fn a_killed_participant_breaks_the_barrier_for_its_waiters(s: &Scenario) -> anyhow::Result<()> {
    let waiter = coordinator(|(barrier, arrived): (Handle<Barrier>, PathBuf)| {
        let barrier = Barrier::open(barrier)?;
        support::touch(&arrived)?;
        ensure_err!(barrier.wait(), Error::Broken);
        ensure!(barrier.is_broken(), "is_broken after Broken");
        ensure_err!(barrier.wait(), Error::Broken);
        Ok(())
    })?;
    let victim = coordinator(|(barrier, pid_file): (Handle<Barrier>, PathBuf)| {
        let _barrier = Barrier::open(barrier)?;
        support::write_own_pid(&pid_file)?;
        support::sleep_forever()
    })?;
    let first = coordinator(move |dir: PathBuf| {
        let barrier = Barrier::new(3)?;
        let pid_file = dir.join("victim.pid");
        let doomed = victim.start(&(barrier.handle(), pid_file.clone()))?;
        let victim_pid = pid_in(&pid_file)?;
        let waiting = (0..2)
            .map(|i| {
                let arrived = dir.join(format!("arrived-{i}"));
                let pid = waiter.start(&(barrier.handle(), arrived.clone()))?;
                Ok((pid, arrived))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        for (_, arrived) in &waiting {
            support::wait_for_file(arrived)?;
        }
        // Give the waiters a moment to go to sleep in `wait`; it passes either way.
        std::thread::sleep(Duration::from_millis(20));
        kill_process(victim_pid, Signal::KILL)?;
        ensure!(victim.join(doomed)?.is_none(), "the killed victim returned");
        for (pid, _) in waiting {
            verdict(waiter.join(pid)?)?;
        }
        ensure!(barrier.is_broken(), "not broken");
        ensure_err!(barrier.wait(), Error::Broken);
        Ok(())
    })?;
    run_coordinator(s, &first, &s.dir().to_path_buf())
}

/// A barrier of 0 (which acts as 1) has 8 opener slots; the coordinator takes one, however
/// many times it opens it. Eight workers try at once to open it twice and hold it: seven get
/// in (one slot each) and one gets `Full`. Once they have ended, their slots are free again:
/// one more worker gets in.
///
/// A worker that opens a barrier of two and ends normally leaves the table too: the next
/// round, between the coordinator and another worker, completes (the first of them to arrive
/// looks at the openers, and a slot left behind by the ended worker would break it).
fn openers_leave_the_table_and_a_full_table_is_refused(s: &Scenario) -> anyhow::Result<()> {
    type Args = (Handle<Barrier>, PathBuf, PathBuf);
    let opener =
        netmcore::process::def_process(|(barrier, tried, go): Args| -> Result<bool, String> {
            let opened = Barrier::open(barrier);
            let again = Barrier::open(barrier);
            support::touch(&tried).map_err(|e| format!("{e:#}"))?;
            support::wait_for_file(&go).map_err(|e| format!("{e:#}"))?;
            match (opened, again) {
                (Ok(_), Ok(_)) => Ok(true),
                (Err(Error::Full), Err(Error::Full)) => Ok(false),
                other => Err(format!("opening twice gave {other:?}")),
            }
        })?;
    let leaver = coordinator(|barrier: Handle<Barrier>| {
        Barrier::open(barrier)?;
        Ok(())
    })?;
    let partner = coordinator(|barrier: Handle<Barrier>| {
        Barrier::open(barrier)?.wait()?;
        Ok(())
    })?;
    let first = coordinator(move |dir: PathBuf| {
        let barrier = Barrier::new(0)?;
        let _same = Barrier::open(barrier.handle())?;
        let go = dir.join("go");
        let open = |i: usize| -> anyhow::Result<_> {
            let tried = dir.join(format!("tried-{i}"));
            let pid = opener.start(&(barrier.handle(), tried.clone(), go.clone()))?;
            Ok((pid, tried))
        };
        let started = (0..8).map(open).collect::<anyhow::Result<Vec<_>>>()?;
        for (_, tried) in &started {
            support::wait_for_file(tried)?;
        }
        support::touch(&go)?;
        let mut opened = 0;
        for (pid, _) in started {
            match opener.join(pid)? {
                Some(Ok(true)) => opened += 1,
                Some(Ok(false)) => {}
                Some(Err(e)) => bail!("an opener failed: {e}"),
                None => bail!("an opener ended without a result"),
            }
        }
        ensure!(opened == 7, "{opened} of 8 openers got in, not 7");
        let (pid, _) = open(8)?;
        ensure!(
            opener.join(pid)? == Some(Ok(true)),
            "no slot is free after the openers ended"
        );

        let pair = Barrier::new(2)?;
        let pid = leaver.start(&pair.handle())?;
        verdict(leaver.join(pid)?)?;
        let pid = partner.start(&pair.handle())?;
        pair.wait()?;
        verdict(partner.join(pid)?)?;
        ensure!(!pair.is_broken(), "broken by a worker that ended cleanly");
        Ok(())
    })?;
    run_coordinator(s, &first, &s.dir().to_path_buf())
}
