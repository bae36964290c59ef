//! The process types of the mix and their bodies.
//!
//! Every type is defined in the master before `startup`, and the set is kept in a global
//! ([`types`]) so that bodies can start processes of any type, their own included. Every body
//! first counts itself in the progress region. A body that checks something returns
//! `Err(message)` rather than panicking, so that a failed check is told apart from an
//! injected panic (whose join is `None`).

use std::fmt::Display;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::Duration;

use netmcore::process::{self, ProcessType};
use netmcore::{Error, Inherit, ResId, ResourceRepr, SharedMemory};
use netmcore_ipc::sem::NamedSemaphore;
use netmcore_ipc::shm::ShmObject;
use rustix::process::Signal;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::barriers::{self, BarrierArg, BarrierUse};
use crate::channels::{self, ChannelArg, ReceiverUse, SenderUse};
use crate::claims::{self, ClaimSeen, ClaimUse, ClaimVictimUse, ClaimsArg};
use crate::coordinator::{self, CoordArg, RootArg};
use crate::pipes::{self, Got, PipeArg, PipeReaderUse, PipeWriterUse, Wrote};
use crate::rng::mix;
use crate::shared::{self, Counter};
use crate::structures::{self, ChurnArg, MutexArg, MutexUse, Seen, VictimUse};
use crate::tally::Tally;

/// How long a body waits for something another process must do (a post, a published pid)
/// before it reports a failure. Only a bug reaches it.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The size of a shm object of the shm churn.
const SHM_SIZE: u64 = 4096;

/// How a faulty body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fault {
    /// It panics.
    Panic,
    /// It calls `std::process::exit` with this code (0 included: no result is no result).
    Exit(i32),
    /// It dies of SIGSEGV.
    Segv,
    /// It sends itself SIGKILL.
    Sigkill,
}

/// The argument of a nested process: it starts `fanout` children (nested ones while `depth`
/// is above 1, else plain ones), joins them and folds their results.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct NestArg {
    /// The seed of its children's arguments.
    pub seed: u64,
    /// Levels of nesting below this process (1: its children are plain).
    pub depth: u32,
    /// Children per level.
    pub fanout: u32,
    /// If set, after its joins it starts a sleeper of this many milliseconds, does not join
    /// it, and returns: the sleeper outlives its starter.
    pub abandon: Option<u64>,
}

/// Shm churn: the owner creates a shm object, registers it, fills it with a pattern and has
/// `users` processes map it and check the pattern.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ShmArg {
    /// The pattern's seed.
    pub pattern: u64,
    /// Users started.
    pub users: u32,
    /// The first user ends by this fault while it holds the object.
    pub user_fault: Option<Fault>,
    /// The owner ends by this fault instead of releasing the object.
    pub owner_fault: Option<Fault>,
}

/// What a shm user checks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShmUse {
    id: ResId,
    name: String,
    pattern: u64,
    fault: Option<Fault>,
}

/// Preallocated shm: the owner (a worker) creates it; a writer that inherits it by id fills
/// it, a reader that inherits everything checks it, an outsider that inherits nothing gets
/// `NotShared`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct PreArg {
    /// The pattern's seed.
    pub pattern: u64,
    /// The size in pages.
    pub pages: u64,
    /// The owner ends by this fault instead of releasing the object.
    pub owner_fault: Option<Fault>,
}

/// What a user of preallocated shm does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PreRole {
    /// Fills it with the pattern (it inherited it through `Inherit::Resources`).
    Write,
    /// Checks the pattern (it inherited it through `Inherit::All`).
    Read,
    /// Checks that `get_resource` is `NotShared` (it inherited nothing).
    Outsider,
}

/// The argument of a user of preallocated shm.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct PreUse {
    id: ResId,
    pattern: u64,
    role: PreRole,
}

/// Semaphore traffic: the owner creates a counting semaphore that `posters` processes post
/// `posts` times each, and a ping and a pong semaphore that it and a partner bounce `rounds`
/// times.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct SemArg {
    /// Posters started.
    pub posters: u32,
    /// Posts per poster.
    pub posts: u32,
    /// Ping-pong rounds.
    pub rounds: u32,
    /// The first poster ends by this fault after its posts, holding the semaphore.
    pub poster_fault: Option<Fault>,
    /// The owner ends by this fault instead of releasing the semaphores.
    pub owner_fault: Option<Fault>,
}

/// The argument of a poster.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct PostArg {
    id: ResId,
    posts: u32,
    fault: Option<Fault>,
}

/// The argument of the ping-pong partner.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct PingArg {
    ping: ResId,
    pong: ResId,
    rounds: u32,
}

/// File churn: the owner writes a file, registers it, and `readers` processes check its
/// contents.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct FileArg {
    /// The contents' seed, also the file's name.
    pub pattern: u64,
    /// Readers started.
    pub readers: u32,
    /// The first reader ends by this fault while it holds the file.
    pub reader_fault: Option<Fault>,
    /// The owner ends by this fault instead of releasing the file.
    pub owner_fault: Option<Fault>,
}

/// The argument of a file reader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileUse {
    id: ResId,
    path: PathBuf,
    pattern: u64,
    fault: Option<Fault>,
}

/// What an owner of resources returns: `Ok` with the semaphore operations it made (0 for the
/// others), or what failed.
pub type Owned = Result<u64, String>;

/// Every process type of the mix.
#[derive(Debug, Clone, Copy)]
pub struct Types {
    /// Returns `mix(x)`.
    pub compute: ProcessType<u64, u64>,
    /// Ends by its fault.
    pub faulty: ProcessType<Fault, u64>,
    /// Publishes its pid in a kill slot and waits to be killed.
    pub victim: ProcessType<u64, u64>,
    /// Kills the victim of a kill slot; returns its pid.
    pub killer: ProcessType<u64, Result<u32, String>>,
    /// Starts and joins children.
    pub nest: ProcessType<NestArg, Result<u64, String>>,
    /// Sleeps, then returns its argument.
    pub sleeper: ProcessType<u64, u64>,
    /// Owns a shm object.
    pub shm_owner: ProcessType<ShmArg, Owned>,
    /// Uses a shm object.
    pub shm_user: ProcessType<ShmUse, Result<(), String>>,
    /// Owns preallocated shm.
    pub pre_owner: ProcessType<PreArg, Owned>,
    /// Uses preallocated shm.
    pub pre_user: ProcessType<PreUse, Result<(), String>>,
    /// Owns the semaphores.
    pub sem_owner: ProcessType<SemArg, Owned>,
    /// Posts a semaphore.
    pub poster: ProcessType<PostArg, Result<(), String>>,
    /// Plays ping-pong.
    pub partner: ProcessType<PingArg, Owned>,
    /// Owns a file.
    pub file_owner: ProcessType<FileArg, Owned>,
    /// Reads a file.
    pub file_reader: ProcessType<FileUse, Result<(), String>>,
    /// Hosts a shared mutex action (see `structures.rs`).
    pub mutex_host: ProcessType<MutexArg, Result<Seen, String>>,
    /// Increments under a shared mutex; returns the poisoned locks it found.
    pub mutex_worker: ProcessType<MutexUse, Result<u64, String>>,
    /// Takes a shared mutex and may die holding it.
    pub mutex_victim: ProcessType<VictimUse, Result<u64, String>>,
    /// Creates and drops mutexes; may die holding the only value of some.
    pub churner: ProcessType<ChurnArg, Result<u64, String>>,
    /// Hosts a claims action (see `claims.rs`).
    pub claims_host: ProcessType<ClaimsArg, Result<Seen, String>>,
    /// Fills a band of a shared vector or matrix.
    pub claims_worker: ProcessType<ClaimUse, Result<ClaimSeen, String>>,
    /// Claims a band and may die holding the claim.
    pub claims_victim: ProcessType<ClaimVictimUse, Result<(), String>>,
    /// Hosts a barrier action (see `barriers.rs`).
    pub barrier_host: ProcessType<BarrierArg, Result<Seen, String>>,
    /// Meets the others at a shared barrier, round after round; may die before a round.
    pub participant: ProcessType<BarrierUse, Result<u32, String>>,
    /// Hosts a channel action (see `channels.rs`).
    pub channel_host: ProcessType<ChannelArg, Result<Seen, String>>,
    /// Streams messages into a shared channel; may die mid-stream.
    pub channel_sender: ProcessType<SenderUse, Result<u32, String>>,
    /// Receives messages from a shared channel until it is disconnected; may die mid-stream.
    pub channel_receiver: ProcessType<ReceiverUse, Result<u64, String>>,
    /// Hosts a pipe action (see `pipes.rs`).
    pub pipe_host: ProcessType<PipeArg, Result<Seen, String>>,
    /// Streams bytes into a shared pipe; may die mid-stream.
    pub pipe_writer: ProcessType<PipeWriterUse, Result<Wrote, String>>,
    /// Reads and checks the bytes of a shared pipe; may die mid-stream.
    pub pipe_reader: ProcessType<PipeReaderUse, Result<Got, String>>,
    /// Writes what it must not to its channel.
    pub hostile: ProcessType<crate::hostile::HostileArg, Result<u64, String>>,
    /// Runs waves of the mix.
    pub coordinator: ProcessType<CoordArg, Tally>,
    /// The first process: starts the coordinators and adds up their tallies.
    pub root: ProcessType<RootArg, Tally>,
}

static TYPES: OnceLock<Types> = OnceLock::new();

/// The process types (defined by [`define`]).
///
/// # Panics
///
/// Before [`define`] (a bug of the stress program).
pub fn types() -> &'static Types {
    TYPES
        .get()
        .expect("the process types are defined before startup")
}

/// Defines a process type whose body counts itself in the progress region first (and marks its
/// pid as the run's).
fn def<A, R>(body: impl Fn(A) -> R + Send + Sync + 'static) -> anyhow::Result<ProcessType<A, R>>
where
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + 'static,
{
    Ok(process::def_process(move |arg: A| {
        shared::add(Counter::Processes, 1);
        shared::mark_own_pid();
        body(arg)
    })?)
}

/// Defines every process type of the mix (in the master, before `startup`).
pub fn define() -> anyhow::Result<()> {
    let types = Types {
        compute: def(mix)?,
        faulty: def(|fault: Fault| -> u64 { inject(fault) })?,
        victim: def(victim)?,
        killer: def(killer)?,
        nest: def(nest)?,
        sleeper: def(|millis: u64| {
            std::thread::sleep(Duration::from_millis(millis));
            millis
        })?,
        shm_owner: def(shm_owner)?,
        shm_user: def(shm_user)?,
        pre_owner: def(pre_owner)?,
        pre_user: def(pre_user)?,
        sem_owner: def(sem_owner)?,
        poster: def(poster)?,
        partner: def(partner)?,
        file_owner: def(file_owner)?,
        file_reader: def(file_reader)?,
        mutex_host: def(structures::mutex_host)?,
        mutex_worker: def(structures::mutex_worker)?,
        mutex_victim: def(structures::mutex_victim)?,
        churner: def(structures::churner)?,
        claims_host: def(claims::claims_host)?,
        claims_worker: def(claims::claims_worker)?,
        claims_victim: def(claims::claims_victim)?,
        barrier_host: def(barriers::barrier_host)?,
        participant: def(barriers::participant)?,
        channel_host: def(channels::channel_host)?,
        channel_sender: def(channels::channel_sender)?,
        channel_receiver: def(channels::channel_receiver)?,
        pipe_host: def(pipes::pipe_host)?,
        pipe_writer: def(pipes::pipe_writer)?,
        pipe_reader: def(pipes::pipe_reader)?,
        hostile: def(crate::hostile::hostile)?,
        coordinator: def(coordinator::coordinator)?,
        root: def(coordinator::root)?,
    };
    let _ = TYPES.set(types);
    Ok(())
}

/// Ends the calling process as `fault` says.
pub fn inject(fault: Fault) -> ! {
    shared::add(Counter::Faults, 1);
    match fault {
        Fault::Panic => {
            // A silent hook keeps thousands of deliberate panics off the terminal; the worker
            // catches the unwinding either way.
            std::panic::set_hook(Box::new(|_| {}));
            panic!("a deliberate panic of the stress mix")
        }
        Fault::Exit(code) => std::process::exit(code),
        Fault::Sigkill => {
            let _ = rustix::process::kill_process(rustix::process::getpid(), Signal::KILL);
        }
        Fault::Segv => {
            // The Rust runtime's SIGSEGV handler (stack overflow detection) catches the first
            // signal, restores the default action and returns; the second one kills.
            let me = rustix::process::getpid();
            for _ in 0..2 {
                let _ = rustix::process::kill_process(me, Signal::SEGV);
            }
        }
    }
    // A signal sent to oneself is delivered before `kill` returns; this is not reached.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Ends by `fault` if there is one.
fn maybe_inject(fault: Option<Fault>) {
    if let Some(fault) = fault {
        inject(fault);
    }
}

/// Formats an error with what failed.
pub fn err<E: Display>(what: impl Display) -> impl FnOnce(E) -> String {
    move |e| format!("{what}: {e}")
}

/// The word `i` of the pattern `seed`.
pub fn pattern_word(seed: u64, i: usize) -> u64 {
    mix(seed ^ (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d))
}

/// Fills `memory` with the pattern `seed`.
pub fn fill(memory: &SharedMemory, seed: u64) -> Result<(), String> {
    let words = memory
        .as_atomic_u64s()
        .ok_or("the mapping is not 8-byte aligned")?;
    for (i, w) in words.iter().enumerate() {
        w.store(pattern_word(seed, i), Ordering::Relaxed);
    }
    Ok(())
}

/// Checks that `memory` holds the pattern `seed`.
pub fn check(memory: &SharedMemory, seed: u64, what: &str) -> Result<(), String> {
    let words = memory
        .as_atomic_u64s()
        .ok_or("the mapping is not 8-byte aligned")?;
    match words
        .iter()
        .enumerate()
        .find(|(i, w)| w.load(Ordering::Relaxed) != pattern_word(seed, *i))
    {
        None => Ok(()),
        Some((i, w)) => Err(format!(
            "{what}: word {i} of {} is {:#x}, expected {:#x}",
            words.len(),
            w.load(Ordering::Relaxed),
            pattern_word(seed, i)
        )),
    }
}

/// Joins `pid` of `ty` and expects `None` (its body faulted).
fn expect_none<A, R>(
    ty: &ProcessType<A, R>,
    pid: netmcore::ProcessId,
    what: &str,
) -> Result<(), String>
where
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + std::fmt::Debug + 'static,
{
    match ty.join(pid) {
        Ok(None) => Ok(()),
        other => Err(format!(
            "{what} faulted, but its join gave {other:?}, not Ok(None)"
        )),
    }
}

/// Joins `pid` of `ty` and expects `Some(Ok(x))`.
fn expect_ok<A, T>(
    ty: &ProcessType<A, Result<T, String>>,
    pid: netmcore::ProcessId,
    what: &str,
) -> Result<T, String>
where
    A: Serialize + DeserializeOwned + 'static,
    T: Serialize + DeserializeOwned + 'static,
{
    match ty.join(pid) {
        Ok(Some(Ok(x))) => Ok(x),
        Ok(Some(Err(e))) => Err(format!("{what}: {e}")),
        Ok(None) => Err(format!("{what} ended without a result")),
        Err(e) => Err(format!("join of {what}: {e}")),
    }
}

/// Joins a child that faults when `fault` is set, else expects `Some(Ok(_))`.
fn join_child<A, T>(
    ty: &ProcessType<A, Result<T, String>>,
    pid: netmcore::ProcessId,
    fault: Option<Fault>,
    what: &str,
) -> Result<(), String>
where
    A: Serialize + DeserializeOwned + 'static,
    T: Serialize + DeserializeOwned + std::fmt::Debug + 'static,
{
    match fault {
        Some(_) => expect_none(ty, pid, what),
        None => expect_ok(ty, pid, what).map(drop),
    }
}

fn victim(slot: u64) -> u64 {
    shared::publish_pid(slot);
    // Only a killer that never comes lets it return; the coordinator then sees a result
    // where it expects none.
    std::thread::sleep(Duration::from_secs(60));
    u64::MAX
}

fn killer(slot: u64) -> Result<u32, String> {
    let pid = shared::take_pid(slot, PATIENCE)?;
    let target = rustix::process::Pid::from_raw(pid as i32).ok_or("pid 0 in a kill slot")?;
    shared::add(Counter::Faults, 1);
    rustix::process::kill_process(target, Signal::KILL)
        .map_err(err(format!("kill({pid}, SIGKILL)")))?;
    Ok(pid)
}

/// The seed of child `i` of a nested process with seed `seed`.
pub fn child_seed(seed: u64, i: u32) -> u64 {
    mix(seed ^ u64::from(i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// A nested process's arguments for its child `i`.
pub fn child_nest(arg: &NestArg, i: u32) -> NestArg {
    NestArg {
        seed: child_seed(arg.seed, i),
        depth: arg.depth - 1,
        fanout: arg.fanout,
        abandon: None,
    }
}

fn nest(arg: NestArg) -> Result<u64, String> {
    let t = types();
    let mut acc = arg.seed;
    if arg.depth > 1 {
        let pids = (0..arg.fanout)
            .map(|i| t.nest.start(&child_nest(&arg, i)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(err("start a nested child"))?;
        for pid in pids {
            acc = mix(acc ^ expect_ok(&t.nest, pid, &format!("nested child {pid}"))?);
        }
    } else {
        let pids = (0..arg.fanout)
            .map(|i| t.compute.start(&child_seed(arg.seed, i)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(err("start a child"))?;
        for pid in pids {
            match t.compute.join(pid) {
                Ok(Some(r)) => acc = mix(acc ^ r),
                other => return Err(format!("child {pid} gave {other:?}")),
            }
        }
    }
    if let Some(millis) = arg.abandon {
        // Started last and never joined: it outlives this body.
        t.sleeper.start(&millis).map_err(err("start a sleeper"))?;
    }
    Ok(acc)
}

fn shm_owner(arg: ShmArg) -> Owned {
    let t = types();
    let prefix = format!("{}shm-", shared::settings().prefix);
    let object = ShmObject::create_unique(&prefix).map_err(err("shm_open"))?;
    let name = object.name().to_owned();
    object
        .set_size(SHM_SIZE)
        .map_err(err(format!("ftruncate {name}")))?;
    let memory = object.map_shared().map_err(err(format!("mmap {name}")))?;
    fill(&memory, arg.pattern)?;
    let resource = netmcore::manage_shm(&name).map_err(err(format!("manage_shm {name}")))?;
    shared::add(Counter::Resources, 1);
    let id = resource.id();
    let users: Vec<_> = (0..arg.users)
        .map(|i| {
            let fault = if i == 0 { arg.user_fault } else { None };
            let use_ = ShmUse {
                id,
                name: name.clone(),
                pattern: arg.pattern,
                fault,
            };
            t.shm_user.start(&use_).map(|pid| (pid, fault))
        })
        .collect::<Result<_, _>>()
        .map_err(err("start a shm user"))?;
    for (i, (pid, fault)) in users.into_iter().enumerate() {
        join_child(&t.shm_user, pid, fault, &format!("shm user {i} of {name}"))?;
    }
    maybe_inject(arg.owner_fault);
    resource
        .release()
        .map_err(err(format!("release {id} ({name})")))?;
    Ok(0)
}

fn shm_user(arg: ShmUse) -> Result<(), String> {
    let name = netmcore::get_shm(arg.id).map_err(err(format!("get_shm {}", arg.id)))?;
    if name != arg.name {
        return Err(format!(
            "get_shm {} gave {name}, expected {}",
            arg.id, arg.name
        ));
    }
    let object = ShmObject::open(&name).map_err(err(format!("shm_open {name}")))?;
    let memory = object.map_shared().map_err(err(format!("mmap {name}")))?;
    check(&memory, arg.pattern, &name)?;
    maybe_inject(arg.fault);
    netmcore::release(arg.id).map_err(err(format!("release {}", arg.id)))
}

fn pre_owner(arg: PreArg) -> Owned {
    let t = types();
    let prefix = format!("{}pre-", shared::settings().prefix);
    let size = (arg.pages * 4096) as usize;
    let (id, name) =
        netmcore::create_preallocated_shm(&prefix, size).map_err(err("create_preallocated_shm"))?;
    shared::add(Counter::Resources, 1);
    if !name.starts_with(&prefix) {
        return Err(format!(
            "create_preallocated_shm({prefix:?}) named it {name}"
        ));
    }
    // The worker that asked for it did not inherit it: it is a user, without a mapping.
    match netmcore::get_resource(id) {
        Err(Error::NotShared(e)) if e == id => {}
        other => {
            return Err(format!(
                "get_resource {id} in its creator gave {other:?}, not NotShared"
            ));
        }
    }
    let use_ = |role| PreUse {
        id,
        pattern: arg.pattern,
        role,
    };
    let writer = t
        .pre_user
        .start_with(&use_(PreRole::Write), Inherit::Resources(vec![id]))
        .map_err(err("start the writer"))?;
    expect_ok(&t.pre_user, writer, &format!("the writer of {name}"))?;
    let reader = t
        .pre_user
        .start_with(&use_(PreRole::Read), Inherit::All)
        .map_err(err("start the reader"))?;
    let outsider = t
        .pre_user
        .start(&use_(PreRole::Outsider))
        .map_err(err("start the outsider"))?;
    expect_ok(&t.pre_user, reader, &format!("the reader of {name}"))?;
    expect_ok(&t.pre_user, outsider, &format!("the outsider of {name}"))?;
    maybe_inject(arg.owner_fault);
    netmcore::release(id).map_err(err(format!("release {id} ({name})")))?;
    Ok(0)
}

fn pre_user(arg: PreUse) -> Result<(), String> {
    let got = netmcore::get_resource(arg.id);
    if arg.role == PreRole::Outsider {
        return match got {
            Err(Error::NotShared(id)) if id == arg.id => Ok(()),
            other => Err(format!(
                "get_resource {} without inheriting it gave {other:?}",
                arg.id
            )),
        };
    }
    let resource = got.map_err(err(format!("get_resource {} ({:?})", arg.id, arg.role)))?;
    let ResourceRepr::PosixShmPreallocated { name, memory } = resource.repr() else {
        return Err(format!(
            "get_resource {} gave {resource}, not preallocated shm",
            arg.id
        ));
    };
    match arg.role {
        PreRole::Write => fill(memory, arg.pattern)?,
        _ => check(memory, arg.pattern, name)?,
    }
    resource
        .release()
        .map_err(err(format!("release {}", arg.id)))
}

/// Creates a semaphore with value 0 and registers it.
fn new_sem(tag: &str) -> Result<(NamedSemaphore, ResId), String> {
    let prefix = format!("{}{tag}-", shared::settings().prefix);
    let sem = NamedSemaphore::create_unique(&prefix, 0).map_err(err("sem_open"))?;
    let resource =
        netmcore::manage_sem(sem.name()).map_err(err(format!("manage_sem {}", sem.name())))?;
    shared::add(Counter::Resources, 1);
    Ok((sem, resource.id()))
}

/// Opens the semaphore `id` through `get_sem`.
fn open_sem(id: ResId) -> Result<NamedSemaphore, String> {
    let name = netmcore::get_sem(id).map_err(err(format!("get_sem {id}")))?;
    NamedSemaphore::open(&name).map_err(err(format!("sem_open {name}")))
}

fn sem_owner(arg: SemArg) -> Owned {
    let t = types();
    let (count, count_id) = new_sem("sem")?;
    let (ping, ping_id) = new_sem("ping")?;
    let (pong, pong_id) = new_sem("pong")?;
    let posters: Vec<_> = (0..arg.posters)
        .map(|i| {
            let fault = if i == 0 { arg.poster_fault } else { None };
            let post = PostArg {
                id: count_id,
                posts: arg.posts,
                fault,
            };
            t.poster.start(&post).map(|pid| (pid, fault))
        })
        .collect::<Result<_, _>>()
        .map_err(err("start a poster"))?;
    let partner = t
        .partner
        .start(&PingArg {
            ping: ping_id,
            pong: pong_id,
            rounds: arg.rounds,
        })
        .map_err(err("start the partner"))?;
    for round in 0..arg.rounds {
        ping.post().map_err(err(format!("round {round}")))?;
        pong.wait_timeout(PATIENCE)
            .map_err(err(format!("round {round}")))?;
    }
    let expected = arg.posters * arg.posts;
    for n in 0..expected {
        count
            .wait_timeout(PATIENCE)
            .map_err(err(format!("post {n} of {expected}")))?;
    }
    for (i, (pid, fault)) in posters.into_iter().enumerate() {
        join_child(&t.poster, pid, fault, &format!("poster {i}"))?;
    }
    let rounds = expect_ok(&t.partner, partner, "the ping-pong partner")?;
    if rounds != u64::from(arg.rounds) {
        return Err(format!(
            "the partner played {rounds} rounds, not {}",
            arg.rounds
        ));
    }
    if count.try_wait().map_err(err("sem_trywait"))? {
        return Err(format!(
            "{} has more than the {expected} posts made",
            count.name()
        ));
    }
    maybe_inject(arg.owner_fault);
    for id in [count_id, ping_id, pong_id] {
        netmcore::release(id).map_err(err(format!("release {id}")))?;
    }
    Ok(2 * u64::from(expected) + 4 * u64::from(arg.rounds))
}

fn poster(arg: PostArg) -> Result<(), String> {
    let sem = open_sem(arg.id)?;
    for n in 0..arg.posts {
        sem.post().map_err(err(format!("post {n}")))?;
    }
    maybe_inject(arg.fault);
    netmcore::release(arg.id).map_err(err(format!("release {}", arg.id)))
}

fn partner(arg: PingArg) -> Owned {
    let ping = open_sem(arg.ping)?;
    let pong = open_sem(arg.pong)?;
    for round in 0..arg.rounds {
        ping.wait_timeout(PATIENCE)
            .map_err(err(format!("round {round}")))?;
        pong.post().map_err(err(format!("round {round}")))?;
    }
    netmcore::release(arg.ping).map_err(err(format!("release {}", arg.ping)))?;
    netmcore::release(arg.pong).map_err(err(format!("release {}", arg.pong)))?;
    Ok(u64::from(arg.rounds))
}

/// The contents of the file of pattern `seed`.
fn file_contents(seed: u64) -> String {
    format!("netmcore stress {seed:#x} {:#x}\n", mix(seed))
}

fn file_owner(arg: FileArg) -> Owned {
    let t = types();
    let path =
        shared::settings()
            .files
            .join(format!("f-{}-{:016x}", std::process::id(), arg.pattern));
    std::fs::write(&path, file_contents(arg.pattern))
        .map_err(err(format!("write {}", path.display())))?;
    let resource =
        netmcore::manage_file(&path).map_err(err(format!("manage_file {}", path.display())))?;
    shared::add(Counter::Resources, 1);
    let id = resource.id();
    let readers: Vec<_> = (0..arg.readers)
        .map(|i| {
            let fault = if i == 0 { arg.reader_fault } else { None };
            let use_ = FileUse {
                id,
                path: path.clone(),
                pattern: arg.pattern,
                fault,
            };
            t.file_reader.start(&use_).map(|pid| (pid, fault))
        })
        .collect::<Result<_, _>>()
        .map_err(err("start a file reader"))?;
    for (i, (pid, fault)) in readers.into_iter().enumerate() {
        join_child(
            &t.file_reader,
            pid,
            fault,
            &format!("reader {i} of {}", path.display()),
        )?;
    }
    maybe_inject(arg.owner_fault);
    resource.release().map_err(err(format!("release {id}")))?;
    Ok(0)
}

fn file_reader(arg: FileUse) -> Result<(), String> {
    let path = netmcore::get_file(arg.id).map_err(err(format!("get_file {}", arg.id)))?;
    if path != arg.path {
        return Err(format!(
            "get_file {} gave {}, expected {}",
            arg.id,
            path.display(),
            arg.path.display()
        ));
    }
    let text = std::fs::read_to_string(&path).map_err(err(format!("read {}", path.display())))?;
    if text != file_contents(arg.pattern) {
        return Err(format!("{} holds {text:?}", path.display()));
    }
    maybe_inject(arg.fault);
    netmcore::release(arg.id).map_err(err(format!("release {}", arg.id)))
}
