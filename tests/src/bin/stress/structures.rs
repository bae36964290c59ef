//! Structures in shared memory (`netmcore::shared`) in the mix, with faults in the processes
//! that use them.
//!
//! Every structure action has the same shape, so that more structures join the mix as more
//! actions of it: `launch_*` draws the action's argument from the coordinator's generator,
//! creates the structure (in the coordinator, or in a *host* worker when the draw says so) and
//! starts the processes that use it by handle; the [`Launched::finish`] it returns joins them,
//! checks the structure's contents against what the argument says they must be, checks that
//! the others saw each death the documented way (a lock taken over comes poisoned), and gives
//! what it [`Seen`] for the tally. A deadlock is not checked here: a process stuck in a wait
//! stops the run's progress, which the supervisor reports as a hang with the seed.

use std::hint::black_box;
use std::sync::TryLockError;
use std::time::{Duration, Instant};

use netmcore::process::ProcessType;
use netmcore::shared::{self as sh, Handle, Mutex, MutexGuard, Plain};
use netmcore::{ProcessId, ResId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::bodies::{Fault, PATIENCE, err, inject, types};
use crate::rng::{Rng, mix};
use crate::shared::{self, Counter};
use crate::tally::FaultKind;

/// What a structure action saw, added to the tally.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// Locks found poisoned: taken over from a holder that died, or poisoned by a panic.
    pub takeovers: u64,
    /// Locks taken.
    pub lock_ops: u64,
    /// Segments created.
    pub segments: u64,
    /// Claims of a shared vector or matrix granted.
    pub claims: u64,
    /// Claims refused as overlapping a live claim of another process.
    pub overlaps: u64,
    /// Claims whose holder died holding them (by SIGKILL, SIGSEGV or `exit`: no unwinding
    /// dropped them), found released afterwards.
    pub dead_claims: u64,
    /// Rounds of shared barriers completed.
    pub rounds: u64,
    /// Shared barriers broken by the death of a participant.
    pub broken: u64,
    /// Messages that came through shared channels.
    pub messages: u64,
    /// Bytes that came through shared pipes, each checked.
    pub piped: u64,
    /// Broken pipes seen by the survivor of a death.
    pub pipe_breaks: u64,
}

/// Joins the processes of a structure action and checks the structure.
pub type Finish = Box<dyn FnOnce() -> Result<Seen, String>>;

/// A structure action that was started.
pub struct Launched {
    /// What it is, for failure messages.
    pub what: String,
    /// The processes it starts.
    pub processes: u64,
    /// The faults it injects.
    pub faults: Vec<FaultKind>,
    /// Joins and checks.
    pub finish: Finish,
}

/// Faults a process of a structure action ends by while it holds a part of it: the three of
/// the rest of the mix and a SIGKILL it sends itself.
pub fn draw_holding_fault(rng: &mut Rng) -> Fault {
    match rng.range(0, 3) {
        0 => Fault::Panic,
        1 => Fault::Exit(rng.pick(&[0, 1, 42, 255])),
        2 => Fault::Segv,
        _ => Fault::Sigkill,
    }
}

/// Takes `mutex`'s lock with `lock`, or with a loop of `try_lock` when `try_lock` is set.
/// A poisoned lock is taken as it is and its poison cleared (the values of the mix are
/// consistent between any two lock operations); the flag says whether it was poisoned.
fn acquire<T: Plain>(
    mutex: &Mutex<T>,
    try_lock: bool,
) -> Result<(MutexGuard<'_, T>, bool), String> {
    let (guard, poisoned) = if try_lock {
        let deadline = Instant::now() + PATIENCE;
        let mut tries = 0u32;
        loop {
            match mutex.try_lock() {
                Ok(guard) => break (guard, false),
                Err(TryLockError::Poisoned(poisoned)) => break (poisoned.into_inner(), true),
                Err(TryLockError::WouldBlock) if Instant::now() > deadline => {
                    return Err(format!(
                        "{mutex:?}: try_lock would still block after {PATIENCE:?}"
                    ));
                }
                Err(TryLockError::WouldBlock) => {
                    tries += 1;
                    if tries < 100 {
                        std::thread::yield_now();
                    } else {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                }
            }
        }
    } else {
        match mutex.lock() {
            Ok(guard) => (guard, false),
            Err(poisoned) => (poisoned.into_inner(), true),
        }
    };
    if poisoned {
        mutex.clear_poison();
    }
    Ok((guard, poisoned))
}

/// Takes `mutex`'s lock, which nobody may have poisoned.
fn lock_clean<T: Plain>(mutex: &Mutex<T>) -> Result<MutexGuard<'_, T>, String> {
    mutex
        .lock()
        .map_err(|_| format!("{mutex:?} is poisoned, though no holder of it died"))
}

/// Checks that the segment `id` is gone (the master answers `NoResource` for it); a segment
/// still there is released again, so that the failure does not leak it as well.
fn check_gone(id: ResId, what: &str) -> Result<(), String> {
    match netmcore::get_shm(id) {
        Err(netmcore::Error::NoResource(gone)) if gone == id => Ok(()),
        Ok(name) => {
            let _ = netmcore::release(id);
            Err(format!("{what} ({id}, {name}) outlived its last user"))
        }
        Err(e) => Err(format!("get_shm {id} of {what}: {e}")),
    }
}

/// Checks that opening `handle` gives `NoResource`: its segment went with its last user.
fn check_unopenable<T: Plain>(handle: Handle<Mutex<T>>, what: &str) -> Result<(), String> {
    match Mutex::open(handle) {
        Err(sh::Error::Master(netmcore::Error::NoResource(id))) if id == handle.id() => Ok(()),
        Ok(mutex) => Err(format!("{what} ({mutex:?}) outlived its last user")),
        Err(e) => Err(format!("open {what} ({}): {e}", handle.id())),
    }
}

// The shared mutex --------------------------------------------------------------------------

/// The value of the shared mutex: word 0 counts the workers' increments, word 1 is what the
/// victim writes.
type Counted = [u64; 2];

/// The shared mutex: `workers` processes each increment word 0 `increments` times under the
/// lock (a load and a separate store, so that any overlap loses an increment), beside a
/// victim that may die holding the lock.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct MutexArg {
    /// Counting workers started.
    pub workers: u32,
    /// Increments per worker.
    pub increments: u32,
    /// Bit `i`: worker `i` takes the lock with a `try_lock` loop rather than `lock`.
    pub try_mask: u32,
    /// The victim, if any.
    pub victim: Option<VictimPlan>,
}

/// What the victim of the shared mutex does: after `delay_us` it takes the lock, writes
/// `marker` to word 1, holds the lock `hold_us`, and then ends by `fault` while it holds it
/// (or unlocks and returns when there is none).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct VictimPlan {
    /// Microseconds before it locks.
    pub delay_us: u64,
    /// Microseconds it holds the lock before its end.
    pub hold_us: u64,
    /// What it writes to word 1.
    pub marker: u64,
    /// How it ends while holding the lock.
    pub fault: Option<Fault>,
}

/// The argument of a counting worker.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct MutexUse {
    handle: Handle<Mutex<Counted>>,
    increments: u32,
    try_lock: bool,
}

/// The argument of the victim.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct VictimUse {
    handle: Handle<Mutex<Counted>>,
    plan: VictimPlan,
}

/// Draws and starts a shared mutex action.
pub fn launch_mutex(rng: &mut Rng) -> Result<Launched, String> {
    let t = types();
    let arg = MutexArg {
        workers: rng.range(2, 4) as u32,
        increments: rng.range(100, 3000) as u32,
        try_mask: if rng.one_in(3) {
            rng.next_u64() as u32 & 0b1111
        } else {
            0
        },
        victim: (!rng.one_in(5)).then(|| VictimPlan {
            delay_us: rng.range(0, 2000),
            hold_us: if rng.one_in(2) { rng.range(0, 3000) } else { 0 },
            marker: rng.next_u64() | 1,
            fault: (!rng.one_in(4)).then(|| draw_holding_fault(rng)),
        }),
    };
    let hosted = rng.one_in(3);
    let faults = match arg.victim {
        Some(VictimPlan { fault: Some(_), .. }) => vec![FaultKind::Holding],
        _ => Vec::new(),
    };
    let processes = u64::from(arg.workers) + u64::from(arg.victim.is_some()) + u64::from(hosted);
    let (what, finish) = hosted_or_local(hosted, t.mutex_host, "shared mutex", arg, start_mutex)?;
    Ok(Launched {
        what,
        processes,
        faults,
        finish,
    })
}

/// Starts a structure action `label` either in a host worker (`host`, which runs the whole
/// action there and returns what it saw) or here (`local`); the result joins and checks it.
pub fn hosted_or_local<A, F>(
    hosted: bool,
    host: ProcessType<A, Result<Seen, String>>,
    label: &str,
    arg: A,
    local: impl FnOnce(A) -> Result<(String, F), String>,
) -> Result<(String, Finish), String>
where
    A: Serialize + DeserializeOwned + std::fmt::Debug + 'static,
    F: FnOnce() -> Result<Seen, String> + 'static,
{
    if hosted {
        let pid = host
            .start(&arg)
            .map_err(err(format!("start a {label} host")))?;
        let what = format!("{label} host {pid} ({arg:?})");
        let finish = move || match host.join(pid) {
            Ok(Some(Ok(seen))) => Ok(seen),
            Ok(Some(Err(e))) => Err(e),
            other => Err(format!("its join gave {other:?}, expected Ok(Some(Ok(_)))")),
        };
        Ok((what, Box::new(finish)))
    } else {
        let (what, finish) = local(arg)?;
        Ok((what, Box::new(finish)))
    }
}

/// The body of a host: the whole shared mutex action in a worker.
pub fn mutex_host(arg: MutexArg) -> Result<Seen, String> {
    let (_, finish) = start_mutex(arg)?;
    finish()
}

/// Creates the mutex and starts its workers and victim; the closure joins and checks them.
fn start_mutex(arg: MutexArg) -> Result<(String, impl FnOnce() -> Result<Seen, String>), String> {
    let t = types();
    let mutex = Mutex::new(Counted::default()).map_err(err("Mutex::new"))?;
    shared::add(Counter::Resources, 1);
    let handle = mutex.handle();
    let workers = (0..arg.workers)
        .map(|i| {
            t.mutex_worker.start(&MutexUse {
                handle,
                increments: arg.increments,
                try_lock: arg.try_mask & (1 << i) != 0,
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(err("start a mutex worker"))?;
    let victim = arg
        .victim
        .map(|plan| t.mutex_victim.start(&VictimUse { handle, plan }))
        .transpose()
        .map_err(err("start the mutex victim"))?;
    let what = format!("shared mutex {} ({arg:?})", handle.id());
    Ok((what, move || check_mutex(&arg, &mutex, &workers, victim)))
}

/// Joins the workers and the victim of `mutex`, then checks its value and the takeovers seen.
fn check_mutex(
    arg: &MutexArg,
    mutex: &Mutex<Counted>,
    workers: &[ProcessId],
    victim: Option<ProcessId>,
) -> Result<Seen, String> {
    let t = types();
    let mut seen = Seen {
        segments: 1,
        ..Seen::default()
    };
    // Every process is joined before the first failure is reported, so that the count holds
    // the increments of exactly the workers that returned.
    let mut problems = Vec::new();
    let mut counted = 0;
    for &pid in workers {
        match t.mutex_worker.join(pid) {
            Ok(Some(Ok(poisoned))) => {
                seen.takeovers += poisoned;
                seen.lock_ops += u64::from(arg.increments);
                counted += u64::from(arg.increments);
            }
            other => problems.push(format!("worker {pid} gave {other:?}")),
        }
    }
    if let (Some(pid), Some(plan)) = (victim, arg.victim) {
        seen.lock_ops += 1;
        match (plan.fault, t.mutex_victim.join(pid)) {
            (Some(_), Ok(None)) => {}
            (None, Ok(Some(Ok(poisoned)))) => seen.takeovers += poisoned,
            (fault, other) => problems.push(format!(
                "victim {pid} ({fault:?}) gave {other:?}, expected {}",
                if fault.is_some() {
                    "Ok(None)"
                } else {
                    "Ok(Some(Ok(_)))"
                }
            )),
        }
    }
    if let Some(first) = problems.into_iter().next() {
        return Err(first);
    }
    let (guard, poisoned) = acquire(mutex, false)?;
    seen.lock_ops += 1;
    seen.takeovers += u64::from(poisoned);
    let marker = arg.victim.map_or(0, |plan| plan.marker);
    if *guard != [counted, marker] {
        return Err(format!(
            "the value is {:?}, expected [{counted}, {marker:#x}] (a lost increment is a lock \
             held twice at once)",
            *guard
        ));
    }
    drop(guard);
    // One death while holding is one poisoned lock, seen by exactly one locker: a blocked
    // locker that took over, a later one, or the final lock above.
    let died = u64::from(arg.victim.is_some_and(|plan| plan.fault.is_some()));
    if seen.takeovers != died {
        return Err(format!(
            "{} lockers found it poisoned, expected {died} (one per holder that died)",
            seen.takeovers
        ));
    }
    if mutex.is_poisoned() {
        return Err("still poisoned after clear_poison".to_owned());
    }
    Ok(seen)
}

/// A counting worker: returns how many times it found the lock poisoned.
pub fn mutex_worker(arg: MutexUse) -> Result<u64, String> {
    let mutex = Mutex::open(arg.handle).map_err(err(format!("open {:?}", arg.handle)))?;
    let mut poisoned = 0;
    for _ in 0..arg.increments {
        let (mut guard, p) = acquire(&mutex, arg.try_lock)?;
        poisoned += u64::from(p);
        let value = black_box(guard[0]);
        guard[0] = value + 1;
    }
    Ok(poisoned)
}

/// The victim: see [`VictimPlan`]. It returns how many times it found the lock poisoned.
pub fn mutex_victim(arg: VictimUse) -> Result<u64, String> {
    let mutex = Mutex::open(arg.handle).map_err(err(format!("open {:?}", arg.handle)))?;
    std::thread::sleep(Duration::from_micros(arg.plan.delay_us));
    let (mut guard, poisoned) = acquire(&mutex, false)?;
    guard[1] = arg.plan.marker;
    if arg.plan.hold_us > 0 {
        std::thread::sleep(Duration::from_micros(arg.plan.hold_us));
    }
    if let Some(fault) = arg.plan.fault {
        // The guard is alive: the process ends holding the lock (a panic drops it poisoned).
        inject(fault);
    }
    drop(guard);
    Ok(u64::from(poisoned))
}

// Mutex churn --------------------------------------------------------------------------------

/// The mailbox of a churner: word 0 is 1 once it published, word 1 its Unix pid, word 2 the id
/// of the segment it keeps.
type Mailbox = [u64; 4];

/// How a churner ends.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum ChurnEnd {
    /// It returns the number of rounds.
    Return,
    /// It creates a mutex (locked when `hold`), publishes, and waits to be killed with SIGKILL
    /// by the coordinator, which first dropped its value of the mailbox: the churner dies
    /// holding the only value of both.
    Killed {
        /// It holds the lock of the mutex it keeps.
        hold: bool,
    },
    /// It creates a mutex (locked when `hold`), publishes, and ends by `fault`.
    Fault {
        /// How it ends.
        fault: Fault,
        /// It holds the lock of the mutex it keeps.
        hold: bool,
    },
}

/// Mutex churn: a worker creates and drops `rounds` mutexes (half of them opened a second
/// time by handle and written through that value), checks after each drop that its segment
/// is gone, and ends as `end` says.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ChurnArg {
    /// Mutexes created and dropped.
    pub rounds: u32,
    /// The seed of their values.
    pub seed: u64,
    /// How it ends.
    pub end: ChurnEnd,
    /// The mailbox the coordinator created.
    pub mailbox: Handle<Mutex<Mailbox>>,
}

/// Draws and starts a mutex churn action.
pub fn launch_churn(rng: &mut Rng) -> Result<Launched, String> {
    let t = types();
    let rounds = rng.range(1, 12) as u32;
    let seed = rng.next_u64();
    let end = match rng.range(0, 3) {
        0 | 1 => ChurnEnd::Return,
        2 => ChurnEnd::Killed {
            hold: rng.one_in(2),
        },
        _ => ChurnEnd::Fault {
            fault: draw_holding_fault(rng),
            hold: rng.one_in(2),
        },
    };
    let mailbox = Mutex::new(Mailbox::default()).map_err(err("Mutex::new (the mailbox)"))?;
    shared::add(Counter::Resources, 1);
    let arg = ChurnArg {
        rounds,
        seed,
        end,
        mailbox: mailbox.handle(),
    };
    let pid = t.churner.start(&arg).map_err(err("start a churner"))?;
    let faults = match end {
        ChurnEnd::Return => Vec::new(),
        _ => vec![FaultKind::Holding],
    };
    Ok(Launched {
        what: format!("mutex churner {pid} ({arg:?})"),
        processes: 1,
        faults,
        finish: Box::new(move || check_churn(&arg, mailbox, pid)),
    })
}

/// Joins the churner and checks that every segment it had went with it.
fn check_churn(arg: &ChurnArg, mailbox: Mutex<Mailbox>, pid: ProcessId) -> Result<Seen, String> {
    let t = types();
    let mut seen = Seen {
        segments: 1 + u64::from(arg.rounds),
        lock_ops: 1 + 2 * u64::from(arg.rounds),
        ..Seen::default()
    };
    match arg.end {
        ChurnEnd::Return => {
            match t.churner.join(pid) {
                Ok(Some(Ok(rounds))) if rounds == u64::from(arg.rounds) => {}
                other => return Err(format!("its join gave {other:?}")),
            }
            let letter = *lock_clean(&mailbox)?;
            seen.lock_ops += 1;
            if letter != Mailbox::default() {
                return Err(format!("it returned, but its mailbox holds {letter:?}"));
            }
        }
        ChurnEnd::Killed { .. } => {
            seen.segments += 1;
            let deadline = Instant::now() + PATIENCE;
            let letter = loop {
                let letter = *lock_clean(&mailbox)?;
                seen.lock_ops += 1;
                if letter[0] == 1 {
                    break letter;
                }
                if Instant::now() > deadline {
                    return Err(format!("it published nothing within {PATIENCE:?}"));
                }
                std::thread::sleep(Duration::from_micros(500));
            };
            let handle = mailbox.handle();
            // The churner now holds the only value of the mailbox, and of the mutex it keeps.
            drop(mailbox);
            let unix = rustix::process::Pid::from_raw(letter[1] as i32)
                .ok_or_else(|| format!("its mailbox holds no pid: {letter:?}"))?;
            shared::add(Counter::Faults, 1);
            rustix::process::kill_process(unix, rustix::process::Signal::KILL)
                .map_err(err(format!("kill({}, SIGKILL)", letter[1])))?;
            match t.churner.join(pid) {
                Ok(None) => {}
                other => return Err(format!("killed, its join gave {other:?}, not Ok(None)")),
            }
            check_unopenable(handle, "the mailbox, whose last value was killed")?;
            check_gone(ResId(letter[2]), "the mutex a killed churner kept")?;
        }
        ChurnEnd::Fault { fault, .. } => {
            seen.segments += 1;
            match t.churner.join(pid) {
                Ok(None) => {}
                other => {
                    return Err(format!(
                        "it faulted ({fault:?}), but its join gave {other:?}, not Ok(None)"
                    ));
                }
            }
            let letter = *lock_clean(&mailbox)?;
            seen.lock_ops += 1;
            if letter[0] != 1 {
                return Err(format!("it published nothing before its fault: {letter:?}"));
            }
            check_gone(ResId(letter[2]), "the mutex a faulted churner kept")?;
            let handle = mailbox.handle();
            drop(mailbox);
            check_unopenable(handle, "the mailbox, after its last value was dropped")?;
        }
    }
    Ok(seen)
}

/// The churner: see [`ChurnArg`]. It returns the number of rounds.
pub fn churner(arg: ChurnArg) -> Result<u64, String> {
    let mailbox = Mutex::open(arg.mailbox).map_err(err("open the mailbox"))?;
    for round in 0..arg.rounds {
        let value = [u64::from(round), mix(arg.seed ^ u64::from(round))];
        let mutex = Mutex::new(value).map_err(err(format!("Mutex::new (round {round})")))?;
        shared::add(Counter::Resources, 1);
        let handle = mutex.handle();
        let mut expected = value;
        if round % 2 == 0 {
            let again = Mutex::open(handle).map_err(err(format!("open {handle:?}")))?;
            lock_clean(&again)?[0] += 1;
            expected[0] += 1;
        }
        let got = *lock_clean(&mutex)?;
        if got != expected {
            return Err(format!("{mutex:?} holds {got:?}, expected {expected:?}"));
        }
        drop(mutex);
        check_unopenable(handle, &format!("the mutex of round {round}, dropped"))?;
    }
    let (hold, fault) = match arg.end {
        ChurnEnd::Return => return Ok(u64::from(arg.rounds)),
        ChurnEnd::Killed { hold } => (hold, None),
        ChurnEnd::Fault { fault, hold } => (hold, Some(fault)),
    };
    let kept = Mutex::new([0u64; 2]).map_err(err("Mutex::new (kept)"))?;
    shared::add(Counter::Resources, 1);
    let guard = if hold { Some(lock_clean(&kept)?) } else { None };
    *lock_clean(&mailbox)? = [1, u64::from(std::process::id()), kept.handle().id().0, 0];
    if let Some(fault) = fault {
        inject(fault);
    }
    // Only a coordinator that never kills lets it return; it then sees a result where it
    // expects none.
    std::thread::sleep(2 * PATIENCE);
    drop(guard);
    Err("not killed".to_owned())
}
