//! The root process and the coordinators: waves of randomly drawn actions, each started,
//! then joined and checked against what it should give.
//!
//! A coordinator draws a wave of actions from its own generator (seeded by the run's seed and
//! its index), starts them all so that they run side by side, then joins them in order. What
//! every action should give is known when it is drawn: a plain body gives `mix(x)`, a nested
//! one the fold of its children's results, a faulty one nothing, an owner of resources
//! `Ok` after its own checks.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use netmcore::{Inherit, ProcessId, ResId, ResourceRepr};
use serde::{Deserialize, Serialize};

use crate::bodies::{
    Fault, FileArg, NestArg, Owned, PATIENCE, PreArg, SemArg, ShmArg, check, child_nest,
    child_seed, types,
};
use crate::hostile::{self, HostileArg};
use crate::rng::{Rng, mix};
use crate::shared::{self, SLOTS_PER_COORDINATOR};
use crate::structures;
use crate::tally::{FaultKind, ObjectKind, Tally};
use crate::{barriers, channels, claims, pipes};

/// The argument of a coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CoordArg {
    /// Its index, from 0: it selects its generator and its kill slots.
    pub index: u64,
    /// The run's seed.
    pub seed: u64,
    /// Processes it may start (nested ones included) before it stops drawing waves.
    pub budget: u64,
    /// When it stops drawing waves, in milliseconds since the Unix epoch; 0 for never.
    pub deadline_ms: u64,
    /// Preallocated shm that the master created before `startup` and filled with a pattern
    /// (the pattern's seed), inherited with `Inherit::All`.
    pub global: Option<(ResId, u64)>,
    /// Actions left out of the mix: bit `i` for the action `ACTION_NAMES[i]`.
    pub disabled: u64,
    /// The most actions in one wave.
    pub wave_max: u64,
}

/// The argument of the root process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootArg {
    /// Coordinators started.
    pub coordinators: u64,
    /// Their argument (the index is set per coordinator).
    pub coordinator: CoordArg,
}

/// The first process: starts the coordinators (inheriting every preallocated shm), joins
/// them and adds up their tallies.
pub fn root(arg: RootArg) -> Tally {
    let t = types();
    let mut tally = Tally {
        processes: 1,
        ..Tally::default()
    };
    let mut pids = Vec::new();
    for index in 0..arg.coordinators {
        let coordinator = CoordArg {
            index,
            ..arg.coordinator.clone()
        };
        match t.coordinator.start_with(&coordinator, Inherit::All) {
            Ok(pid) => pids.push((index, pid)),
            Err(e) => tally.fail(format!("start coordinator {index}: {e}")),
        }
        tally.processes += 1;
    }
    for (index, pid) in pids {
        match t.coordinator.join(pid) {
            Ok(Some(done)) => tally.merge(done),
            other => tally.fail(format!("coordinator {index} ({pid}) gave {other:?}")),
        }
    }
    tally
}

/// The actions a coordinator draws from, with their weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Plain,
    PlainNowait,
    Fault,
    Kill,
    Nest,
    Shm,
    Preallocated,
    Sem,
    File,
    Misuse,
    Hostile,
    SharedMutex,
    MutexChurn,
    Claims,
    Barrier,
    Channel,
    Pipe,
}

const ACTIONS: [Action; 17] = [
    Action::Plain,
    Action::PlainNowait,
    Action::Fault,
    Action::Kill,
    Action::Nest,
    Action::Shm,
    Action::Preallocated,
    Action::Sem,
    Action::File,
    Action::Misuse,
    Action::Hostile,
    Action::SharedMutex,
    Action::MutexChurn,
    Action::Claims,
    Action::Barrier,
    Action::Channel,
    Action::Pipe,
];

/// The weights of [`ACTIONS`]: about a quarter of the actions inject a fault (besides the
/// holders of resources that die holding them), a third move resources, and one in six uses
/// structures in shared memory (where most of them inject a fault in a holder).
const WEIGHTS: [u64; 17] = [22, 4, 14, 7, 14, 9, 8, 9, 7, 4, 3, 7, 5, 5, 4, 4, 5];

/// Exit codes an `exit` fault uses; 0 included, since a process that exits 0 without
/// returning from its body has no result either.
const EXIT_CODES: [i32; 6] = [0, 1, 3, 42, 101, 255];

/// A started action and what it should give.
enum Pending {
    Plain {
        pid: ProcessId,
        x: u64,
        nowait: bool,
    },
    Fault {
        pid: ProcessId,
        fault: Fault,
    },
    Kill {
        victim: ProcessId,
        killer: ProcessId,
    },
    Nest {
        pid: ProcessId,
        arg: NestArg,
    },
    Misuse {
        pid: ProcessId,
        x: u64,
    },
    Hostile {
        pid: ProcessId,
        arg: HostileArg,
    },
    Owner {
        what: String,
        join: Box<dyn FnOnce() -> netmcore::Result<Option<Owned>>>,
        faulted: bool,
        sem_ops: u64,
    },
    /// A structure in shared memory (see `structures.rs`).
    Structure {
        what: String,
        finish: structures::Finish,
    },
}

/// A started action, with the faults it injects (counted as survived once it checks out).
struct Started {
    action: Action,
    pending: Pending,
    faults: Vec<FaultKind>,
}

/// The coordinator's body: waves until its budget or deadline is reached.
pub fn coordinator(arg: CoordArg) -> Tally {
    let mut tally = Tally::default();
    let mut rng = Rng::new(arg.seed, arg.index + 1);
    if let Some((id, pattern)) = arg.global {
        match check_global(id, pattern) {
            Ok(()) => tally.pass(),
            Err(e) => tally.fail(format!("coordinator {}: {e}", arg.index)),
        }
    }
    let mut weights: Vec<u64> = ACTIONS
        .iter()
        .zip(WEIGHTS)
        .map(|(&action, w)| {
            if arg.disabled & (1 << action as u64) != 0 {
                0
            } else {
                w
            }
        })
        .collect();
    if weights.iter().all(|&w| w == 0) {
        weights[Action::Plain as usize] = 1;
    }
    while tally.processes < arg.budget && !past(arg.deadline_ms) {
        tally.waves += 1;
        let width = rng.range(1, arg.wave_max);
        let mut started = Vec::new();
        let mut kills = 0;
        for _ in 0..width {
            let mut action = ACTIONS[rng.weighted(&weights)];
            if action == Action::Kill && kills == SLOTS_PER_COORDINATOR {
                action = Action::Plain;
            }
            let slot = arg.index * SLOTS_PER_COORDINATOR + kills;
            if action == Action::Kill {
                kills += 1;
            }
            tally.actions[action as usize] += 1;
            match launch(action, &mut rng, slot, &mut tally) {
                Ok(s) => started.push(s),
                Err(e) => tally.fail(format!("coordinator {}: {e}", arg.index)),
            }
        }
        for (i, s) in started.into_iter().enumerate() {
            // Shown by the supervisor if the run hangs here.
            shared::set_joining(arg.index, tally.waves, i as u64, s.action as u64);
            match finish(s.pending, &mut tally) {
                Ok(()) => {
                    tally.pass();
                    for f in s.faults {
                        tally.survived[f as usize] += 1;
                    }
                }
                Err(e) => tally.fail(format!("coordinator {}: {e}", arg.index)),
            }
        }
    }
    tally
}

/// Whether the deadline (ms since the epoch, 0 for none) has passed.
fn past(deadline_ms: u64) -> bool {
    deadline_ms != 0
        && SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .is_ok_and(|now| now.as_millis() >= u128::from(deadline_ms))
}

/// Checks the master's preallocated shm, inherited through `Inherit::All`.
fn check_global(id: ResId, pattern: u64) -> Result<(), String> {
    let resource = netmcore::get_resource(id).map_err(|e| format!("get_resource {id}: {e}"))?;
    let ResourceRepr::PosixShmPreallocated { name, memory } = resource.repr() else {
        return Err(format!("the master's region {id} is {resource}"));
    };
    check(memory, pattern, name)?;
    resource
        .release()
        .map_err(|e| format!("release the master's region {id}: {e}"))
}

/// A fault drawn at random.
fn draw_fault(rng: &mut Rng) -> Fault {
    match rng.range(0, 2) {
        0 => Fault::Panic,
        1 => Fault::Exit(rng.pick(&EXIT_CODES)),
        _ => Fault::Segv,
    }
}

/// The kind under which a fault is counted.
fn kind(fault: Fault) -> FaultKind {
    match fault {
        Fault::Panic => FaultKind::Panic,
        Fault::Exit(_) => FaultKind::Exit,
        Fault::Segv => FaultKind::Sigsegv,
        Fault::Sigkill => FaultKind::Sigkill,
    }
}

/// A fault with probability `1 / n`.
fn maybe_fault(rng: &mut Rng, n: u64) -> Option<Fault> {
    rng.one_in(n).then(|| draw_fault(rng))
}

/// Processes a nested process starts, itself included.
fn nest_count(arg: &NestArg) -> u64 {
    let below = if arg.depth > 1 {
        nest_count(&child_nest(arg, 0))
    } else {
        1
    };
    1 + u64::from(arg.fanout) * below + u64::from(arg.abandon.is_some())
}

/// What a nested process gives (see `bodies::nest`).
fn nest_expected(arg: &NestArg) -> u64 {
    let mut acc = arg.seed;
    for i in 0..arg.fanout {
        let r = if arg.depth > 1 {
            nest_expected(&child_nest(arg, i))
        } else {
            mix(child_seed(arg.seed, i))
        };
        acc = mix(acc ^ r);
    }
    acc
}

/// Draws the details of `action`, counts it, and starts its processes.
fn launch(action: Action, rng: &mut Rng, slot: u64, tally: &mut Tally) -> Result<Started, String> {
    let t = types();
    let start_err = |what: &'static str| move |e: netmcore::Error| format!("start {what}: {e}");
    let mut faults = Vec::new();
    let pending = match action {
        Action::Plain | Action::PlainNowait => {
            tally.processes += 1;
            let x = rng.next_u64();
            Pending::Plain {
                pid: t.compute.start(&x).map_err(start_err("compute"))?,
                x,
                nowait: action == Action::PlainNowait,
            }
        }
        Action::Hostile => {
            faults.push(FaultKind::Hostile);
            let name = format!(
                "{}hostile-{:016x}",
                shared::settings().prefix,
                rng.next_u64()
            );
            let arg = hostile::draw(rng, name);
            tally.processes += arg.processes();
            Pending::Hostile {
                pid: t.hostile.start(&arg).map_err(start_err("hostile"))?,
                arg,
            }
        }
        Action::Misuse => {
            tally.processes += 1;
            let x = rng.next_u64();
            Pending::Misuse {
                pid: t.compute.start(&x).map_err(start_err("compute"))?,
                x,
            }
        }
        Action::Fault => {
            tally.processes += 1;
            let fault = draw_fault(rng);
            faults.push(kind(fault));
            Pending::Fault {
                pid: t.faulty.start(&fault).map_err(start_err("faulty"))?,
                fault,
            }
        }
        Action::Kill => {
            tally.processes += 2;
            faults.push(FaultKind::Sigkill);
            let victim = t.victim.start(&slot).map_err(start_err("victim"))?;
            let killer = t.killer.start(&slot).map_err(start_err("killer"))?;
            Pending::Kill { victim, killer }
        }
        Action::Nest => {
            let arg = NestArg {
                seed: rng.next_u64(),
                depth: rng.range(1, 2) as u32,
                fanout: rng.range(1, 3) as u32,
                abandon: rng.one_in(3).then(|| rng.range(1, 20)),
            };
            if arg.abandon.is_some() {
                faults.push(FaultKind::Outlive);
            }
            tally.processes += nest_count(&arg);
            Pending::Nest {
                pid: t.nest.start(&arg).map_err(start_err("nest"))?,
                arg,
            }
        }
        Action::Shm => {
            let arg = ShmArg {
                pattern: rng.next_u64(),
                users: rng.range(1, 3) as u32,
                user_fault: maybe_fault(rng, 4),
                owner_fault: maybe_fault(rng, 6),
            };
            tally.processes += 1 + u64::from(arg.users);
            tally.created[ObjectKind::Shm as usize] += 1;
            owner(
                &mut faults,
                "shm owner",
                [arg.user_fault, arg.owner_fault],
                0,
                t.shm_owner.start(&arg).map_err(start_err("shm owner"))?,
                t.shm_owner,
            )
        }
        Action::Preallocated => {
            let arg = PreArg {
                pattern: rng.next_u64(),
                pages: rng.range(1, 4),
                owner_fault: maybe_fault(rng, 6),
            };
            tally.processes += 4;
            tally.created[ObjectKind::Preallocated as usize] += 1;
            owner(
                &mut faults,
                "preallocated shm owner",
                [None, arg.owner_fault],
                0,
                t.pre_owner
                    .start(&arg)
                    .map_err(start_err("preallocated shm owner"))?,
                t.pre_owner,
            )
        }
        Action::Sem => {
            let arg = SemArg {
                posters: rng.range(1, 3) as u32,
                posts: rng.range(1, 20) as u32,
                rounds: rng.range(1, 20) as u32,
                poster_fault: maybe_fault(rng, 4),
                owner_fault: maybe_fault(rng, 6),
            };
            tally.processes += 2 + u64::from(arg.posters);
            tally.created[ObjectKind::Sem as usize] += 3;
            let ops = 2 * u64::from(arg.posters * arg.posts) + 4 * u64::from(arg.rounds);
            owner(
                &mut faults,
                "semaphore owner",
                [arg.poster_fault, arg.owner_fault],
                ops,
                t.sem_owner
                    .start(&arg)
                    .map_err(start_err("semaphore owner"))?,
                t.sem_owner,
            )
        }
        Action::SharedMutex
        | Action::MutexChurn
        | Action::Claims
        | Action::Barrier
        | Action::Channel
        | Action::Pipe => {
            let launched = match action {
                Action::SharedMutex => structures::launch_mutex(rng)?,
                Action::MutexChurn => structures::launch_churn(rng)?,
                Action::Claims => claims::launch_claims(rng)?,
                Action::Barrier => barriers::launch_barrier(rng)?,
                Action::Pipe => pipes::launch_pipe(rng)?,
                _ => channels::launch_channel(rng)?,
            };
            tally.processes += launched.processes;
            faults = launched.faults;
            Pending::Structure {
                what: launched.what,
                finish: launched.finish,
            }
        }
        Action::File => {
            let arg = FileArg {
                pattern: rng.next_u64(),
                readers: rng.range(1, 2) as u32,
                reader_fault: maybe_fault(rng, 4),
                owner_fault: maybe_fault(rng, 6),
            };
            tally.processes += 1 + u64::from(arg.readers);
            tally.created[ObjectKind::File as usize] += 1;
            owner(
                &mut faults,
                "file owner",
                [arg.reader_fault, arg.owner_fault],
                0,
                t.file_owner.start(&arg).map_err(start_err("file owner"))?,
                t.file_owner,
            )
        }
    };
    for f in &faults {
        tally.injected[*f as usize] += 1;
    }
    Ok(Started {
        action,
        pending,
        faults,
    })
}

/// An owner of resources, started as `pid` of `ty`; `[child_fault, owner_fault]` are the
/// faults it and its children inject while holding resources.
fn owner<A>(
    faults: &mut Vec<FaultKind>,
    what: &'static str,
    [child_fault, owner_fault]: [Option<Fault>; 2],
    sem_ops: u64,
    pid: ProcessId,
    ty: netmcore::process::ProcessType<A, Owned>,
) -> Pending
where
    A: Serialize + serde::de::DeserializeOwned + 'static,
{
    for _ in child_fault.iter().chain(owner_fault.iter()) {
        faults.push(FaultKind::Holding);
    }
    Pending::Owner {
        what: format!("{what} {pid}"),
        join: Box::new(move || ty.join(pid)),
        faulted: owner_fault.is_some(),
        sem_ops,
    }
}

/// Joins a started action and checks what it gave.
fn finish(pending: Pending, tally: &mut Tally) -> Result<(), String> {
    let t = types();
    match pending {
        Pending::Plain { pid, x, nowait } => {
            let got = if nowait {
                poll(|| t.compute.join_nowait(pid))
            } else {
                t.compute.join(pid)
            };
            match got {
                Ok(Some(r)) if r == mix(x) => Ok(()),
                other => Err(format!(
                    "compute {pid} of {x:#x} gave {other:?}, expected Ok(Some({:#x}))",
                    mix(x)
                )),
            }
        }
        Pending::Misuse { pid, x } => misuse(pid, x),
        Pending::Structure { what, finish } => {
            let seen = finish().map_err(|e| format!("{what}: {e}"))?;
            tally.takeovers += seen.takeovers;
            tally.lock_ops += seen.lock_ops;
            tally.claims += seen.claims;
            tally.overlaps += seen.overlaps;
            tally.dead_claims += seen.dead_claims;
            tally.rounds += seen.rounds;
            tally.broken += seen.broken;
            tally.messages += seen.messages;
            tally.piped += seen.piped;
            tally.pipe_breaks += seen.pipe_breaks;
            tally.created[ObjectKind::Segment as usize] += seen.segments;
            Ok(())
        }
        Pending::Hostile { pid, arg } => hostile::check(&arg, t.hostile.join(pid)),
        Pending::Fault { pid, fault } => match t.faulty.join(pid) {
            Ok(None) => Ok(()),
            other => Err(format!(
                "faulty {pid} ({fault:?}) gave {other:?}, expected Ok(None)"
            )),
        },
        Pending::Kill { victim, killer } => {
            let killed = t.killer.join(killer);
            let died = t.victim.join(victim);
            match (&killed, &died) {
                (Ok(Some(Ok(pid))), Ok(None)) if *pid != 0 => Ok(()),
                _ => Err(format!(
                    "kill pair: killer {killer} gave {killed:?} (expected Ok(Some(Ok(pid)))), \
                     victim {victim} gave {died:?} (expected Ok(None))"
                )),
            }
        }
        Pending::Nest { pid, arg } => {
            let expected = nest_expected(&arg);
            match t.nest.join(pid) {
                Ok(Some(Ok(r))) if r == expected => Ok(()),
                other => Err(format!(
                    "nest {pid} {arg:?} gave {other:?}, expected Ok(Some(Ok({expected:#x})))"
                )),
            }
        }
        Pending::Owner {
            what,
            join,
            faulted,
            sem_ops,
        } => match (join(), faulted) {
            (Ok(None), true) => Ok(()),
            (Ok(Some(Ok(ops))), false) => {
                if ops != sem_ops {
                    return Err(format!(
                        "{what} made {ops} semaphore operations, expected {sem_ops}"
                    ));
                }
                tally.sem_ops += ops;
                Ok(())
            }
            (Ok(Some(Err(e))), _) => Err(format!("{what}: {e}")),
            (other, faulted) => Err(format!(
                "{what} gave {other:?}, expected {}",
                if faulted {
                    "Ok(None) (it faults)"
                } else {
                    "Ok(Some(Ok(_)))"
                }
            )),
        },
    }
}

/// Calls made wrong, each of which must fail with the error DESIGN.md §4 gives (and the
/// right calls around them must still work): joins through the wrong join point and twice,
/// unknown ids, an id of the wrong kind, a bad name, a definition in a worker.
fn misuse(pid: ProcessId, x: u64) -> Result<(), String> {
    use netmcore::Error;
    let t = types();
    let expect = |what: &str, ok: bool, got: &dyn std::fmt::Debug| {
        if ok {
            Ok(())
        } else {
            Err(format!("misuse of {pid}: {what} gave {got:?}"))
        }
    };
    let wrong = t.faulty.join(pid);
    expect(
        "a join through another type's join point",
        matches!(wrong, Err(Error::UnknownProcess(p)) if p == pid),
        &wrong,
    )?;
    let right = t.compute.join(pid);
    expect(
        "the join after it",
        matches!(right, Ok(Some(r)) if r == mix(x)),
        &right,
    )?;
    let again = t.compute.join(pid);
    expect(
        "a second join",
        matches!(again, Err(Error::UnknownProcess(p)) if p == pid),
        &again,
    )?;
    let nowait = t.compute.join_nowait(pid);
    expect(
        "join_nowait of a joined process",
        matches!(nowait, Ok(None)),
        &nowait,
    )?;
    let unknown = ResId(u64::MAX);
    let got = netmcore::get_resource(unknown);
    expect(
        "get_resource of an unknown id",
        matches!(got, Err(Error::NoResource(id)) if id == unknown),
        &got,
    )?;
    let released = netmcore::release(unknown);
    expect("release of an unknown id", released.is_ok(), &released)?;
    let wrong_kind = netmcore::get_file(t.compute.fork_point());
    expect(
        "get_file of a fork point",
        matches!(wrong_kind, Err(Error::WrongKind { id, .. }) if id == t.compute.fork_point()),
        &wrong_kind,
    )?;
    let arg = netmcore::Encap::wrap(&x).map_err(|e| format!("wrap: {e}"))?;
    let not_fork = netmcore::start(t.compute.join_point(), arg);
    expect(
        "start through a join point",
        matches!(not_fork, Err(Error::NoResource(_))),
        &not_fork,
    )?;
    let bad = netmcore::manage_shm("no-slash");
    expect(
        "manage_shm of a name without /",
        matches!(bad, Err(Error::InvalidName(_))),
        &bad,
    )?;
    let defined = netmcore::process::def_process(|n: u64| n);
    expect(
        "def_process in a worker",
        matches!(defined, Err(Error::NotInMaster)),
        &defined.map(|_| ()),
    )
}

/// Polls `join_nowait` until it gives a result, for at most [`PATIENCE`].
fn poll<R>(
    mut join_nowait: impl FnMut() -> netmcore::Result<Option<R>>,
) -> netmcore::Result<Option<R>> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match join_nowait()? {
            Some(r) => return Ok(Some(r)),
            None if Instant::now() > deadline => return Ok(None),
            None => std::thread::sleep(Duration::from_micros(200)),
        }
    }
}
