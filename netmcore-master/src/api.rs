//! The calls of the dynamically typed process API, dispatched on the caller's role.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;

use netmcore_encap::{Encap, Pieces};
use netmcore_ipc::stream;
use netmcore_ipc::wire::{Request, Response};
use netmcore_resources::{Holder, Inherit, ProcessId, ResId};

use crate::config::Config;
use crate::master::{Argument, Master};
use crate::state::{self, Phase, Role, role};
use crate::{Error, Result, worker};

/// Turns the calling process into the master, runs `first_process` in it, and serves the
/// workers until the first process ended and every other worker is gone.
///
/// In order: the socket directory is created (mode 0700) if missing and checked (a real
/// directory of this user that nobody else may write to), its lock `netmcore.lock` is taken,
/// the pidfile is written, objects that a dead master left in the directory's ledger are
/// destroyed, SIGTERM and SIGINT are routed to the master, the
/// [`on_master_start`](Config::on_master_start) hook runs, and `first_process` is called — it
/// usually calls [`start`], which forks the first process. Then the event loop runs.
///
/// When the first process ends, shutdown begins: the other workers are waited for (or, with
/// a [shutdown timeout](Config::shutdown_timeout), get SIGTERM after it and SIGKILL a little
/// later). Then every object the master still holds is destroyed, the pidfile removed and the
/// directory unlocked. The process types defined so far stay defined, so that a program may
/// call `startup` again.
///
/// # Errors
///
/// * [`Error::AlreadyStarted`] in a master or a worker;
/// * [`Error::SocketDirectoryInUse`] when a live master holds the directory;
/// * [`Error::InsecureSocketDirectory`] for a directory that is not safe to use;
/// * [`Error::Stopped`] when SIGTERM or SIGINT stopped the master (its workers got SIGTERM,
///   were reaped, and its objects were destroyed);
/// * the error of the hook or of `first_process`, after the workers they started were
///   stopped;
/// * [`Error::Io`] or [`Error::Ledger`] when the directory, the pidfile or the ledger cannot
///   be used.
///
/// # Panics
///
/// A panic of the hook or of `first_process` is resumed once the workers are stopped and
/// the directory released.
pub fn startup(config: Config, first_process: impl FnOnce() -> Result<ProcessId>) -> Result<()> {
    run_master("startup", config, first_process).map(drop)
}

/// [`startup`], returning the result of the first process: `Some` when its body returned and
/// nobody joined it, `None` when it panicked, exited or was killed.
///
/// This is what the facade's typed `run` is built on.
///
/// # Errors
///
/// As [`startup`].
pub fn startup_with_result(
    config: Config,
    first_process: impl FnOnce() -> Result<ProcessId>,
) -> Result<Option<Encap>> {
    run_master("run", config, first_process)
}

fn run_master(
    call: &'static str,
    mut config: Config,
    first_process: impl FnOnce() -> Result<ProcessId>,
) -> Result<Option<Encap>> {
    if role() != Role::PreStartup {
        return Err(Error::AlreadyStarted { call });
    }
    let mut guard = state::lock();
    let defs = match std::mem::replace(&mut *guard, Phase::Moving) {
        Phase::Idle(defs) => defs,
        other => {
            *guard = other;
            return Err(Error::AlreadyStarted { call });
        }
    };
    // Large arguments and results are allocated with huge pages here and in every worker
    // forked from here (see `sys::advise_huge_pages`).
    netmcore_encap::set_large_buffer_hook(crate::sys::advise_huge_pages);
    let mut master = Master::new(defs, &config);
    if let Err(e) = master.open(config.pidfile.as_deref()) {
        *guard = Phase::Idle(master.close());
        return Err(e);
    }
    warn_if_threaded();
    *guard = Phase::Running(Box::new(master));
    state::set_role(Role::Master);
    drop(guard);

    // User code runs without the lock: it calls `def_process` and `start`.
    let hook = config.on_master_start.take();
    let first = catch_unwind(AssertUnwindSafe(|| {
        if let Some(hook) = hook {
            hook()?;
        }
        first_process()
    }));

    let mut guard = state::lock();
    let Phase::Running(master) = std::mem::replace(&mut *guard, Phase::Moving) else {
        unreachable!("only startup moves the master out of the state");
    };
    let mut master = master;
    let panic = match first {
        Ok(first) => {
            master.set_first(first);
            None
        }
        Err(payload) => {
            master.fail(Error::Stopped {
                signal: "a panic in the master",
            });
            Some(payload)
        }
    };
    // The loop runs with the master out of the shared state but the lock held: no user code
    // runs in the master meanwhile, and a worker never takes this lock.
    master.run();
    let (result, defs) = master.finish();
    *guard = Phase::Idle(defs);
    state::set_role(Role::PreStartup);
    drop(guard);
    if let Some(payload) = panic {
        resume_unwind(payload);
    }
    result
}

/// Logs a warning if the process has other threads than the caller's: forking it is only
/// safe because the master is single-threaded.
fn warn_if_threaded() {
    let threads = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse::<u64>().ok())
        });
    if let Some(n) = threads
        && n > 1
    {
        tracing::warn!(
            threads = n,
            "netmcore startup: this process has {n} threads; the master forks its workers, and \
             a forked child gets a copy of only the forking thread, with every lock another \
             thread held still locked: start no threads before startup"
        );
    }
}

/// Defines a process type whose processes run `body` on their argument; returns its fork
/// point and join point (two consecutive ids, the master being their user).
///
/// Call it before [`startup`], or in the master (its hook or `first_process`). Process types
/// stay defined when `startup` returns.
///
/// ```
/// use netmcore_encap::Encap;
/// let (fork_point, join_point) = netmcore_master::def_process(|arg: Encap| arg)?;
/// assert_eq!(join_point.0, fork_point.0 + 1);
/// # Ok::<(), netmcore_master::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::NotInMaster`] in a worker.
pub fn def_process(
    body: impl Fn(Encap) -> Encap + Send + Sync + 'static,
) -> Result<(ResId, ResId)> {
    if role() == Role::Worker {
        return Err(Error::NotInMaster);
    }
    let mut guard = state::lock();
    let defs = match &mut *guard {
        Phase::Idle(defs) => defs,
        Phase::Running(master) => &mut master.defs,
        Phase::Moving => return Err(Error::NotInMaster),
    };
    let (fork_point, join_point) = defs.registry.def_process();
    defs.bodies.insert(fork_point, Arc::new(body));
    defs.changed();
    Ok((fork_point, join_point))
}

/// Starts a process through `fork_point` with `arg`, inheriting nothing: [`start_with`] with
/// [`Inherit::Nothing`].
///
/// # Errors
///
/// As [`start_with`].
pub fn start(fork_point: ResId, arg: Encap) -> Result<ProcessId> {
    start_with(fork_point, arg, Inherit::Nothing)
}

/// Starts a process through `fork_point` with `arg`: the master allocates the next process id
/// and forks; the call returns once the process exists.
///
/// # Errors
///
/// * [`Error::NotStarted`] before `startup`;
/// * [`Error::NoResource`] when `fork_point` is not a live fork point (or an inherited id is
///   unknown);
/// * [`Error::ShuttingDown`] when the master is stopping;
/// * [`Error::MasterGone`] in a worker whose master is gone.
pub fn start_with(fork_point: ResId, arg: Encap, inherit: Inherit) -> Result<ProcessId> {
    match role() {
        Role::Worker => {
            let request = Request::Start {
                fork_point,
                arg,
                inherit,
            };
            match worker::call("start", &request)? {
                Response::Started(pid) => Ok(pid),
                Response::Error(e) => Err(Error::from_remote(e)),
                other => Err(worker::unexpected("start", &other)),
            }
        }
        Role::Master => match &mut *state::lock() {
            Phase::Running(master) => {
                master.spawn(fork_point, Argument::Whole(arg), &inherit, Holder::Master)
            }
            _ => Err(Error::NotStarted),
        },
        Role::PreStartup => Err(Error::NotStarted),
    }
}

/// [`start_with`] of an argument in two pieces ([`Encap::wrap_pieces`]), for a large byte
/// vector: from a worker, the run goes through a pipe straight from `arg`'s buffer to the new
/// process, which reads it into its own; no copy of it is made before. The call returns once
/// the process exists and has read all but the last pipe's worth (1 MiB) of the run, so the
/// buffer `arg` borrows is free again. A small run, or a call in the master, is put together
/// and started as [`start_with`] does.
///
/// ```no_run
/// use netmcore_encap::Encap;
/// use netmcore_resources::{Inherit, ResId};
///
/// # fn example(fork_point: ResId) -> netmcore_master::Result<()> {
/// let data = vec![0u8; 64 << 20];
/// let pid = netmcore_master::start_pieces(fork_point, Encap::wrap_pieces(&data)?, Inherit::Nothing)?;
/// # let _ = pid;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// As [`start_with`], and [`Error::Protocol`] when the pipe cannot be made.
pub fn start_pieces(fork_point: ResId, arg: Pieces<'_>, inherit: Inherit) -> Result<ProcessId> {
    if role() != Role::Worker || arg.run().len() < STREAM_AT_LEAST {
        return start_with(fork_point, arg.into_encap()?, inherit);
    }
    let pipe = stream::stream().map_err(|e| Error::channel("start", e))?;
    let request = Request::StartStream {
        fork_point,
        head: arg.head().to_vec(),
        run_len: arg.run().len() as u64,
        inherit,
    };
    match worker::call_stream("start", &request, pipe, arg.run())? {
        Response::Started(pid) => Ok(pid),
        Response::Error(e) => Err(Error::from_remote(e)),
        other => Err(worker::unexpected("start", &other)),
    }
}

/// The shortest run [`start_pieces`] sends through a pipe: 1 MiB. A shorter argument goes
/// whole, in a message (a memfd above 64 KiB).
pub const STREAM_AT_LEAST: usize = 1 << 20;

/// Waits for process `pid`, started through the fork point of `join_point`, and returns its
/// result: `Some` when its body returned, `None` when it panicked, exited, was killed or died
/// by a signal. The process is then forgotten.
///
/// # Errors
///
/// * [`Error::NotInWorker`] in the master or before `startup`;
/// * [`Error::UnknownProcess`] for an unknown pid, a second join, a process another worker
///   already waits for, or the wrong join point (the process stays joinable through its
///   own);
/// * [`Error::NoResource`] when `join_point` is not a live join point;
/// * [`Error::MasterGone`] when the master is gone.
pub fn join(join_point: ResId, pid: ProcessId) -> Result<Option<Encap>> {
    if role() != Role::Worker {
        return Err(Error::NotInWorker);
    }
    match worker::call("join", &Request::Join { join_point, pid })? {
        Response::Joined(result) => Ok(result),
        Response::Error(e) => Err(Error::from_remote(e)),
        other => Err(worker::unexpected("join", &other)),
    }
}

/// The result of process `pid` if it has finished with one (it is then forgotten), else
/// `None`: it runs, left no result, is unknown, or was joined already. Never
/// [`Error::UnknownProcess`].
///
/// # Errors
///
/// [`Error::NotStarted`] before `startup`; [`Error::MasterGone`] in a worker whose master is
/// gone.
pub fn join_nowait(join_point: ResId, pid: ProcessId) -> Result<Option<Encap>> {
    match role() {
        Role::Worker => {
            match worker::call("join_nowait", &Request::JoinNowait { join_point, pid })? {
                Response::Joined(result) => Ok(result),
                Response::Error(e) => Err(Error::from_remote(e)),
                other => Err(worker::unexpected("join_nowait", &other)),
            }
        }
        Role::Master => match &mut *state::lock() {
            Phase::Running(master) => Ok(master.defs.registry.join_nowait(join_point, pid)),
            _ => Err(Error::NotStarted),
        },
        Role::PreStartup => Err(Error::NotStarted),
    }
}

/// The id of the calling worker's process: what its starter got from `start`.
///
/// # Errors
///
/// [`Error::NotInWorker`] in the master or before `startup`.
pub fn self_process_id() -> Result<ProcessId> {
    if role() != Role::Worker {
        return Err(Error::NotInWorker);
    }
    worker::self_pid()
}
