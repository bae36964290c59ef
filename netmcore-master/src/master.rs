//! The master: its setup and teardown, the event loop, the fork path and reaping.
//!
//! # The event loop
//!
//! One `poll` over the signal self-pipe, and per worker its pidfd (readable once it exited)
//! and its channel (readable, and writable when replies are queued). Readable channels are
//! drained with `try_recv_msg` and each request is served at once: a `start` forks, a `join`
//! on a running process is recorded in the registry and answered when that process is
//! reaped. Replies are queued without blocking. An exited worker's channel is drained once
//! more (its `Finished` report), then it is reaped with `waitid(P_PIDFD)`, logged, and
//! reported to the registry, whose actions are carried out: answer joiners, destroy objects.
//! The only timers are the shutdown deadlines, which set poll's timeout.
//!
//! # The fork path
//!
//! `Registry::start` allocates the process id, a socketpair is made, stdout and stderr are
//! flushed, and the master forks. The child revokes every preallocated shm mapping it does not
//! inherit (`Started::inherited`) and keeps the others for `get_resource`, closes every
//! descriptor of the master (the lock, the ledger, the guardian's pipe, the signal pipe, every
//! other worker's channel and pidfd), sets
//! `PR_SET_PDEATHSIG(SIGKILL)` and checks that its parent is still the master, becomes a
//! worker, runs the body on its own copy of the argument, reports the outcome and exits. The
//! master opens a pidfd for the child and keeps the other end of the socketpair.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use netmcore_encap::{Encap, EncapError};
use netmcore_ipc::channel::Channel;
use netmcore_ipc::shm::{MapOptions, ShmObject};
use netmcore_ipc::stream;
use netmcore_ipc::wire::{Outcome, RemoteError, Request, Response};
use netmcore_resources::ledger::{Ledger, LedgerObject};
use netmcore_resources::registry::{Action, Destroy, JoinOutcome, ProcessState};
use netmcore_resources::{Holder, Inherit, ProcessId, ResId, ResourceDesc, ResourceKind};
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::io::Errno;
use rustix::process::{
    Pid, PidfdFlags, Resource, Rlimit, Signal, WaitId, WaitIdOptions, WaitIdStatus, getrlimit,
    pidfd_open, pidfd_send_signal, setrlimit,
};

use crate::admin::{self, AdminServer, AdminStatus};
use crate::config::Config;
use crate::debug::verbose;
use crate::dir::{self, Pidfile};
use crate::error::{remote, remote_error};
use crate::guardian::Guardian;
use crate::signals::{self, Signals};
use crate::state::{self, Body, Definitions, Mapped, Role};
use crate::sys::{self, Forked};
use crate::warm::{Plan, Warm, WarmPool};
use crate::zygote::{self, Zygote};
use crate::{Error, Result, worker};

/// The largest argument handed to a warm worker. A larger one (it came in a memfd) would be
/// copied into a new memfd and out of it again; a child forked now has it without a copy.
const WARM_ARG_LIMIT: usize = netmcore_ipc::channel::DEFAULT_MEMFD_THRESHOLD;

/// A worker waiting for a response busy-polls for this fraction of the master's time: the
/// master answers within microseconds when it is awake.
const WORKER_SPIN_DIVISOR: u32 = 3;

/// The exit code of a child that finds its master gone right after the fork (or a warm
/// worker right after the zygote's clone).
pub(crate) const EXIT_ORPHAN: i32 = 70;

/// A running worker, as the master sees it.
#[derive(Debug)]
struct Slot {
    unix: Pid,
    pidfd: OwnedFd,
    /// `None` once the worker closed it or broke the protocol.
    channel: Option<Channel>,
    /// What the worker reported when its body ended (for the log; the result itself went
    /// to the registry at once).
    reported: Option<Reported>,
    /// Whether a request of this worker waits for its response.
    awaiting_reply: bool,
}

/// How a worker's body ended, as it reported it.
#[derive(Debug)]
enum Reported {
    /// It returned a result of this type.
    Returned(String),
    /// It failed (panicked): the message.
    Failed(String),
}

/// What [`Master::fork_worker`] returned in this process.
enum Fork {
    /// This is the new worker, out of the master already: its end of the channel.
    Child(Channel),
    /// This is the master: the child's pid and pidfd, and the master's end of the channel.
    Parent {
        unix: Pid,
        pidfd: OwnedFd,
        channel: Channel,
    },
}

/// Why the master stops before (or besides) its first process ending.
#[derive(Debug)]
enum Stop {
    /// SIGTERM or SIGINT.
    Signal(i32),
    /// The hook or `first_process` failed, or the event loop met an error.
    Failed(Error),
}

/// The master's state while `startup` runs.
pub(crate) struct Master {
    pub(crate) defs: Definitions,
    unix_pid: Pid,
    dir: PathBuf,
    lock: Option<File>,
    ledger: Option<Ledger>,
    pidfile: Option<Pidfile>,
    signals: Option<Signals>,
    workers: BTreeMap<ProcessId, Slot>,
    /// The first process and its join point.
    first: Option<(ProcessId, ResId)>,
    /// When the first process ended: shutdown began.
    first_ended: Option<Instant>,
    stop: Option<Stop>,
    shutdown_timeout: Option<Duration>,
    kill_grace: Duration,
    /// When SIGTERM went to every worker; no process starts after it.
    terminated: Option<Instant>,
    killed: bool,
    /// The descriptor limit before the master raised it, to restore at the end.
    nofile: Option<Rlimit>,
    /// The process that cleans up if this master dies (see `guardian.rs`).
    guardian: Option<Guardian>,
    // Admin socket: `admin.sock`, bound once the directory is locked.
    admin: Option<AdminServer>,
    /// Workers forked ahead of time (see `warm.rs`).
    warm: WarmPool,
    /// How long the loop keeps polling without sleeping after an event.
    busy_poll: Duration,
}

impl Master {
    /// A master that holds nothing yet.
    pub(crate) fn new(defs: Definitions, config: &Config) -> Master {
        Master {
            defs,
            unix_pid: rustix::process::getpid(),
            dir: config.socket_directory.clone(),
            lock: None,
            ledger: None,
            pidfile: None,
            signals: None,
            workers: BTreeMap::new(),
            first: None,
            first_ended: None,
            stop: None,
            shutdown_timeout: config.shutdown_timeout,
            kill_grace: config.kill_grace,
            terminated: None,
            killed: false,
            nofile: None,
            guardian: None,
            admin: None,
            warm: WarmPool::new(config.warm_workers, config.zygote),
            busy_poll: config.busy_poll_time(),
        }
    }

    /// Takes the socket directory: checks it, locks it, writes the pidfile, cleans what a
    /// dead master left, and routes SIGTERM and SIGINT to the event loop. On an error, what
    /// was taken is given back by [`close`](Master::close).
    pub(crate) fn open(&mut self, pidfile: Option<&Path>) -> Result<()> {
        dir::prepare(&self.dir)?;
        self.lock = Some(dir::lock_patiently(&self.dir)?);
        // Admin socket: a stale one is replaced only now that the lock is ours.
        self.admin = Some(AdminServer::bind(&self.dir)?);
        if let Some(path) = pidfile {
            self.pidfile = Some(Pidfile::write(
                path,
                self.unix_pid.as_raw_pid().unsigned_abs(),
            )?);
        }
        self.ledger = Some(dir::open_ledger(&self.dir)?);
        // Before the first fork, so that every worker inherits it.
        crate::board::make()?;
        let lock_fd = self.lock.as_ref().map(AsRawFd::as_raw_fd);
        self.guardian = Some(Guardian::spawn(
            &self.dir,
            pidfile,
            &lock_fd.into_iter().collect::<Vec<_>>(),
        )?);
        self.record_pre_startup_objects()?;
        self.signals = Some(Signals::install()?);
        self.nofile = raise_nofile_limit();
        tracing::info!(
            unix_pid = self.unix_pid.as_raw_pid(),
            dir = %self.dir.display(),
            "netmcore master started"
        );
        Ok(())
    }

    /// Releases the socket directory and the signals, and gives the definitions back.
    pub(crate) fn close(mut self) -> Definitions {
        if let Some(limit) = self.nofile.take() {
            let _ = setrlimit(Resource::Nofile, limit);
        }
        if let Some(mut signals) = self.signals.take() {
            signals.uninstall();
        }
        if let Some(pidfile) = self.pidfile.take() {
            pidfile.remove();
        }
        if let Some(guardian) = self.guardian.take() {
            guardian.finish();
        }
        self.ledger = None;
        // Admin socket: removed before the lock goes, so it never outlives its master.
        if let Some(admin) = self.admin.take() {
            admin.close();
        }
        // Closing the only descriptor of the lock file releases the lock.
        self.lock = None;
        self.defs
    }

    // The first process and the shutdown ------------------------------------------------

    /// Records what `first_process` (after the hook) returned.
    pub(crate) fn set_first(&mut self, first: Result<ProcessId>) {
        match first {
            Ok(pid) => match self.defs.registry.process(pid) {
                Some(view) if view.state() == ProcessState::Running => {
                    self.first = Some((pid, view.join_point()));
                }
                _ => self.fail(Error::UnknownProcess(pid)),
            },
            Err(e) => self.fail(e),
        }
    }

    /// Stops the master because of `e`: workers get SIGTERM, and `startup` returns `e`.
    pub(crate) fn fail(&mut self, e: Error) {
        tracing::error!(error = %e, "the master stops");
        if self.stop.is_none() {
            self.stop = Some(Stop::Failed(e));
        }
        self.terminate_all();
    }

    fn stop_by_signal(&mut self, signal: i32) {
        tracing::warn!(
            workers = self.workers.len(),
            "the master got {}: stopping its workers",
            signals::signal_name(signal)
        );
        if self.stop.is_none() {
            self.stop = Some(Stop::Signal(signal));
        }
        self.terminate_all();
    }

    /// SIGTERM to every worker; from now on no process starts.
    fn terminate_all(&mut self) {
        if self.terminated.is_some() {
            return;
        }
        self.terminated = Some(Instant::now());
        self.warm.retire_all();
        self.signal_all(Signal::TERM);
    }

    fn signal_all(&self, signal: Signal) {
        for (pid, slot) in &self.workers {
            match pidfd_send_signal(&slot.pidfd, signal) {
                Ok(()) | Err(Errno::SRCH) => {}
                Err(e) => tracing::warn!(pid = pid.0, error = %e, "cannot signal {pid}"),
            }
        }
    }

    /// Whether the loop is done: the first process ended (or the master stops) and no
    /// worker is left.
    fn done(&self) -> bool {
        self.workers.is_empty() && (self.first_ended.is_some() || self.stop.is_some())
    }

    /// Sends the signals whose time has come; returns when the next one is due.
    fn deadlines(&mut self, now: Instant) -> Option<Instant> {
        if let Some(at) = self.terminated {
            if self.killed {
                return None;
            }
            let kill_at = at + self.kill_grace;
            if now < kill_at {
                return Some(kill_at);
            }
            tracing::warn!(
                workers = self.workers.len(),
                "workers still run after SIGTERM: sending SIGKILL"
            );
            self.killed = true;
            self.signal_all(Signal::KILL);
            return None;
        }
        let (Some(ended), Some(timeout)) = (self.first_ended, self.shutdown_timeout) else {
            return None;
        };
        let term_at = ended + timeout;
        if now < term_at {
            return Some(term_at);
        }
        tracing::warn!(
            workers = self.workers.len(),
            "the shutdown timeout expired: sending SIGTERM to the remaining workers"
        );
        self.terminate_all();
        Some(now + self.kill_grace)
    }

    // The event loop --------------------------------------------------------------------

    /// Serves the workers until the first process ended (or the master stops) and every
    /// worker is reaped.
    pub(crate) fn run(&mut self) {
        let mut ready: Vec<(ProcessId, PollFlags, PollFlags)> = Vec::new();
        // Admin socket: the events of its descriptors, in `AdminServer::push_poll_fds` order.
        let mut admin_ready: Vec<PollFlags> = Vec::new();
        // Warm pool: the events of its descriptors, in `WarmPool::push_poll_fds` order.
        let mut warm_ready: Vec<PollFlags> = Vec::new();
        let mut last_event = Instant::now();
        while !self.done() {
            let due = self.deadlines(Instant::now());
            // Admin socket: a client's deadline wakes the loop too.
            let due = admin::earliest(due, self.admin.as_ref().and_then(AdminServer::deadline));
            // So does the end of a pause of the warm pool: an idle master would otherwise
            // sleep with fewer warm workers (or no zygote) than it wants until a request came.
            let due = admin::earliest(due, self.warm.resume_at(Instant::now()));
            let mut timeout = due.map(|at| timespec(at.saturating_duration_since(Instant::now())));
            if self.done() {
                break;
            }
            // Warm workers forked before a change of the definitions go at once.
            self.warm.retire_stale(self.defs.generation);
            // A warm worker is forked only when nothing else waits: look without blocking.
            let prefork = self.warm_wanted();
            // Busy-poll: right after an event, look again without sleeping for a while (the
            // next request of a conversation is usually on its way).
            if !self.busy_poll.is_zero() && last_event.elapsed() < self.busy_poll {
                timeout = Some(Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                });
            }
            if prefork {
                timeout = Some(Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                });
            }
            ready.clear();
            let signal_ready = match self.poll_once(
                timeout.as_ref(),
                &mut ready,
                &mut admin_ready,
                &mut warm_ready,
            ) {
                Ok(signal_ready) => signal_ready,
                Err(e) => {
                    self.abort(Error::io("poll", "worker channels", e));
                    break;
                }
            };
            let idle = !signal_ready
                && ready.is_empty()
                && warm_ready.iter().all(PollFlags::is_empty)
                && admin_ready.iter().all(PollFlags::is_empty);
            if !idle {
                last_event = Instant::now();
            }
            if prefork && idle {
                self.prefork();
                continue;
            }
            self.warm.serve(&warm_ready);
            if signal_ready && let Some(signal) = self.signals.as_ref().and_then(Signals::take) {
                self.stop_by_signal(signal);
            }
            for &(pid, exit, channel) in &ready {
                if channel.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR) {
                    self.read_requests(pid);
                }
                if channel.contains(PollFlags::OUT) {
                    self.flush(pid);
                }
                if !exit.is_empty() {
                    self.reap(pid);
                }
            }
            self.serve_admin(&admin_ready);
        }
    }

    /// Admin socket: accepts, answers and expires its clients (never blocks).
    fn serve_admin(&mut self, ready: &[PollFlags]) {
        let Some(mut admin) = self.admin.take() else {
            return;
        };
        admin.serve(ready, Instant::now(), || self.admin_status());
        self.admin = Some(admin);
    }

    /// Admin socket: the snapshot of the registry and the worker table it reports.
    fn admin_status(&self) -> AdminStatus {
        AdminStatus::capture(
            self.unix_pid.as_raw_pid().unsigned_abs(),
            self.first_ended.is_some() || self.stop.is_some(),
            &self.defs.registry,
            |pid| {
                self.workers
                    .get(&pid)
                    .map(|slot| slot.unix.as_raw_pid().unsigned_abs())
            },
        )
    }

    /// One `poll`; fills `ready` with the workers that have events and returns whether the
    /// signal pipe is readable.
    fn poll_once(
        &self,
        timeout: Option<&Timespec>,
        ready: &mut Vec<(ProcessId, PollFlags, PollFlags)>,
        admin_ready: &mut Vec<PollFlags>,
        warm_ready: &mut Vec<PollFlags>,
    ) -> std::io::Result<bool> {
        let mut fds = Vec::with_capacity(1 + 2 * self.workers.len() + self.warm.len());
        if let Some(signals) = &self.signals {
            fds.push(PollFd::new(signals.fd(), PollFlags::IN));
        }
        for slot in self.workers.values() {
            fds.push(PollFd::new(&slot.pidfd, PollFlags::IN));
            if let Some(channel) = &slot.channel {
                let mut events = PollFlags::IN;
                if channel.has_pending_output() {
                    events |= PollFlags::OUT;
                }
                fds.push(PollFd::new(channel, events));
            }
        }
        let warm_at = fds.len();
        self.warm.push_poll_fds(&mut fds);
        let warm_fds = fds.len() - warm_at;
        // Admin socket: its descriptors go last, and their events are the last ones.
        let admin_fds = self.admin.as_ref().map_or(0, AdminServer::poll_fd_count);
        if let Some(admin) = &self.admin {
            admin.push_poll_fds(&mut fds, Instant::now());
        }
        loop {
            match poll(&mut fds, timeout) {
                Ok(_) => break,
                Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        admin_ready.clear();
        admin_ready.extend(fds[fds.len() - admin_fds..].iter().map(PollFd::revents));
        warm_ready.clear();
        warm_ready.extend(fds[warm_at..warm_at + warm_fds].iter().map(PollFd::revents));
        let mut events = fds.iter().map(PollFd::revents);
        let signal_ready = self.signals.is_some() && events.next().is_some_and(|e| !e.is_empty());
        for (pid, slot) in &self.workers {
            let exit = events.next().unwrap_or(PollFlags::empty());
            let channel = if slot.channel.is_some() {
                events.next().unwrap_or(PollFlags::empty())
            } else {
                PollFlags::empty()
            };
            if !exit.is_empty() || !channel.is_empty() {
                ready.push((*pid, exit, channel));
            }
        }
        Ok(signal_ready)
    }

    /// Kills every worker and reaps them, after an error of the loop itself.
    fn abort(&mut self, e: Error) {
        self.fail(e);
        self.warm.shut_down();
        self.signal_all(Signal::KILL);
        let pids: Vec<ProcessId> = self.workers.keys().copied().collect();
        for pid in pids {
            if let Some(slot) = self.workers.get(&pid) {
                let _ = rustix::process::waitid(
                    WaitId::PidFd(std::os::fd::AsFd::as_fd(&slot.pidfd)),
                    WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
                );
            }
            self.reap(pid);
        }
    }

    /// Reads and serves every complete request of worker `pid`.
    fn read_requests(&mut self, pid: ProcessId) {
        loop {
            let Some(channel) = self
                .workers
                .get_mut(&pid)
                .and_then(|slot| slot.channel.as_mut())
            else {
                return;
            };
            match channel.try_recv_msg_with_fds::<Request>() {
                Ok(Some((request, fds))) => self.serve(pid, request, fds),
                Ok(None) => return,
                Err(netmcore_ipc::Error::Closed | netmcore_ipc::Error::Truncated { .. }) => {
                    // The worker is ending; its pidfd tells when it is gone.
                    verbose!(pid = pid.0, "{pid} closed its channel");
                    self.drop_channel(pid);
                    return;
                }
                Err(e) => {
                    self.violation(pid, &e.to_string());
                    return;
                }
            }
        }
    }

    fn drop_channel(&mut self, pid: ProcessId) {
        if let Some(slot) = self.workers.get_mut(&pid) {
            slot.channel = None;
        }
    }

    /// A worker broke the protocol: close its channel, log it, kill it.
    fn violation(&mut self, pid: ProcessId, what: &str) {
        let Some(slot) = self.workers.get_mut(&pid) else {
            return;
        };
        tracing::error!(
            pid = pid.0,
            unix_pid = slot.unix.as_raw_pid(),
            "{pid} broke the protocol ({what}): closing its channel and killing it"
        );
        slot.channel = None;
        let _ = pidfd_send_signal(&slot.pidfd, Signal::KILL);
    }

    fn flush(&mut self, pid: ProcessId) {
        let Some(channel) = self
            .workers
            .get_mut(&pid)
            .and_then(|slot| slot.channel.as_mut())
        else {
            return;
        };
        if let Err(e) = channel.flush() {
            verbose!(pid = pid.0, error = %e, "cannot send to {pid}");
            self.drop_channel(pid);
        }
    }

    /// Queues `response` for worker `to` (a worker that is gone is skipped).
    fn reply(&mut self, to: ProcessId, response: &Response) {
        let Some(slot) = self.workers.get_mut(&to) else {
            return;
        };
        slot.awaiting_reply = false;
        let Some(channel) = slot.channel.as_mut() else {
            return;
        };
        verbose!(pid = to.0, "reply to {to}: {}", describe(response));
        if let Err(e) = channel.queue_msg(response) {
            verbose!(pid = to.0, error = %e, "cannot send to {to}");
            self.drop_channel(to);
        }
    }

    /// Serves one request of worker `from`, which came with the descriptors `fds` (only a
    /// `StartStream` has one).
    fn serve(&mut self, from: ProcessId, request: Request, mut fds: Vec<OwnedFd>) {
        verbose!(pid = from.0, %request, "request from {from}");
        let wanted = usize::from(matches!(request, Request::StartStream { .. }));
        if fds.len() != wanted {
            self.violation(
                from,
                &format!(
                    "{} descriptors with a request that takes {wanted}",
                    fds.len()
                ),
            );
            return;
        }
        if self
            .workers
            .get(&from)
            .is_some_and(|slot| slot.reported.is_some())
        {
            self.violation(from, "a request after its Finished report");
            return;
        }
        if request.expects_response() {
            let Some(slot) = self.workers.get_mut(&from) else {
                return;
            };
            if slot.awaiting_reply {
                self.violation(from, "a second request before the response to the first");
                return;
            }
            slot.awaiting_reply = true;
        }
        let by = Holder::Process(from);
        let response = match request {
            Request::Start {
                fork_point,
                arg,
                inherit,
            } => match self.spawn(fork_point, Argument::Whole(arg), &inherit, by) {
                Ok(pid) => Response::Started(pid),
                Err(e) => Response::Error(remote_error(&e)),
            },
            Request::StartStream {
                fork_point,
                head,
                run_len,
                inherit,
            } => match Argument::stream(head, run_len, fds.pop())
                .and_then(|arg| self.spawn(fork_point, arg, &inherit, by))
            {
                Ok(pid) => Response::Started(pid),
                Err(e) => Response::Error(remote_error(&e)),
            },
            Request::Join { join_point, pid } => {
                match self.defs.registry.join(join_point, pid, from) {
                    Ok(JoinOutcome::Ready(result)) => Response::Joined(result),
                    // Answered when `pid` is reaped.
                    Ok(JoinOutcome::Deferred) => return,
                    Err(e) => Response::Error(remote(e)),
                }
            }
            Request::JoinNowait { join_point, pid } => {
                Response::Joined(self.defs.registry.join_nowait(join_point, pid))
            }
            Request::Finished(outcome) => {
                self.finished(from, outcome);
                return;
            }
            // Answered only after the object is gone, so that nothing the worker does next
            // (a new file at the same path, say) meets a late destruction.
            Request::Release(id) => match self.defs.registry.release(id, by) {
                Some(destroy) => match destroy_in(&mut self.defs, self.ledger.as_mut(), destroy) {
                    Ok(()) => Response::Ok,
                    Err(e) => {
                        tracing::warn!(id = id.0, error = %e, "cannot destroy {id}");
                        Response::Error(remote_error(&e))
                    }
                },
                None => Response::Ok,
            },
            Request::GetResource { id, expected } => {
                let found = match expected {
                    None => self.defs.registry.get(id, by),
                    Some(kind) => self.defs.registry.get_kind(id, by, kind),
                };
                match found {
                    Ok(desc) => Response::Resource {
                        id,
                        desc: desc.clone(),
                    },
                    Err(e) => Response::Error(remote(e)),
                }
            }
            Request::ManageFile(path) => self.manage(ResourceDesc::File(path), by),
            Request::ManageShm(name) => self.manage(ResourceDesc::PosixShm(name), by),
            Request::ManageSem(name) => self.manage(ResourceDesc::PosixSem(name), by),
            Request::CreatePreallocatedShm { prefix, size } => {
                match usize::try_from(size)
                    .map_err(|_| Error::InvalidName(format!("{prefix} of {size} bytes")))
                    .and_then(|size| self.create_preallocated(&prefix, size, by))
                {
                    Ok((id, name)) => Response::Preallocated { id, name },
                    Err(e) => Response::Error(remote_error(&e)),
                }
            }
            Request::CreateShm { prefix, size } => match usize::try_from(size)
                .map_err(|_| Error::InvalidName(format!("{prefix} of {size} bytes")))
                .and_then(|size| self.create_shm(&prefix, size, by))
            {
                Ok((id, name)) => Response::Resource {
                    id,
                    desc: ResourceDesc::PosixShm(name),
                },
                Err(e) => Response::Error(remote_error(&e)),
            },
            Request::SelfProcessId => Response::ProcessId(from),
            other => Response::Error(RemoteError::Io {
                op: "request".to_owned(),
                target: other.to_string(),
                message: "not understood by this master".to_owned(),
            }),
        };
        self.reply(from, &response);
    }

    /// Registers an existing object for `by` (`manage_*`), recording it in the ledger first.
    fn manage(&mut self, desc: ResourceDesc, by: Holder) -> Response {
        match register_in(&mut self.defs, self.ledger.as_mut(), desc.clone(), by) {
            Ok(id) => Response::Resource { id, desc },
            Err(e) => Response::Error(remote_error(&e)),
        }
    }

    /// `release` in the master: the master lets go of `id`; destroys it if it was the last
    /// user.
    pub(crate) fn release(&mut self, id: ResId) -> Result<()> {
        match self.defs.registry.release(id, Holder::Master) {
            Some(destroy) => destroy_in(&mut self.defs, self.ledger.as_mut(), destroy),
            None => Ok(()),
        }
    }

    /// `manage_*` in the master: registers an existing object, the master being its user.
    pub(crate) fn register_object(&mut self, desc: ResourceDesc) -> Result<ResId> {
        register_in(&mut self.defs, self.ledger.as_mut(), desc, Holder::Master)
    }

    /// `create_preallocated_shm` for `by`: creates, sizes and maps the object in the master
    /// (recorded in the ledger before it is created).
    pub(crate) fn create_preallocated(
        &mut self,
        prefix: &str,
        size: usize,
        by: Holder,
    ) -> Result<(ResId, String)> {
        self.ensure_running(by)?;
        create_preallocated_in(&mut self.defs, self.ledger.as_mut(), prefix, size, by)
    }

    /// Fails with [`Error::UnknownProcess`] unless `by` is the master or a running process: a
    /// request of a process that already reported its end creates nothing for it.
    fn ensure_running(&self, by: Holder) -> Result<()> {
        match by {
            Holder::Process(pid)
                if !self
                    .defs
                    .registry
                    .process(pid)
                    .is_some_and(|p| p.state() == ProcessState::Running) =>
            {
                Err(Error::UnknownProcess(pid))
            }
            _ => Ok(()),
        }
    }

    /// `create_shm` for `by`: creates and sizes a shm object that the caller maps itself
    /// (recorded in the ledger before it is created).
    pub(crate) fn create_shm(
        &mut self,
        prefix: &str,
        size: usize,
        by: Holder,
    ) -> Result<(ResId, String)> {
        self.ensure_running(by)?;
        create_shm_in(&mut self.defs, self.ledger.as_mut(), prefix, size, by)
    }

    /// Records the objects registered before `startup` (preallocated shm, say) in the
    /// ledger, which was not open then; before the first process starts.
    fn record_pre_startup_objects(&mut self) -> Result<()> {
        let Some(ledger) = &mut self.ledger else {
            return Ok(());
        };
        for resource in self.defs.registry.resources() {
            if let Some(object) = LedgerObject::from_desc(resource.desc()) {
                ledger.registered(&object)?;
            }
        }
        Ok(())
    }

    /// `destroy_resources` in the master: destroys every object it knows (fork and join
    /// points stay) and everything its ledger lists.
    pub(crate) fn destroy_everything(&mut self) -> Result<()> {
        let mut failures = destroy_registered(&mut self.defs, self.ledger.as_mut());
        if let Some(ledger) = &mut self.ledger {
            let report = dir::clean(&self.dir, ledger, false)?;
            failures.extend(
                report
                    .failed
                    .into_iter()
                    .map(|(object, why)| format!("{object}: {why}")),
            );
        }
        match failures.is_empty() {
            true => Ok(()),
            false => Err(Error::InMaster {
                op: "destroy_resources".to_owned(),
                target: self.dir.display().to_string(),
                message: failures.join("; "),
            }),
        }
    }

    /// The child side of the fork path, first step: keeps the mappings of the preallocated
    /// shm the new worker inherits and revokes every other one this process mapped.
    fn keep_inherited_mappings(&mut self, inherited: &[ResId]) {
        let mut kept = BTreeMap::new();
        for (&id, &Mapped { memory, .. }) in &self.defs.mappings {
            if inherited.contains(&id) {
                kept.insert(id, memory);
            } else if let Err(e) = sys::revoke_in_worker(memory) {
                tracing::warn!(id = id.0, error = %e, "cannot revoke the mapping of {id}");
            }
        }
        worker::set_inherited(kept);
    }

    /// Destroys an object whose last user let go.
    fn destroy(&mut self, destroy: Destroy) {
        let id = destroy.id;
        if let Err(e) = destroy_in(&mut self.defs, self.ledger.as_mut(), destroy) {
            tracing::warn!(id = id.0, error = %e, "cannot destroy {id}");
        }
    }

    fn perform(&mut self, actions: Vec<Action<Encap>>) {
        for action in actions {
            match action {
                Action::Destroy(destroy) => self.destroy(destroy),
                Action::Wake(wake) => {
                    verbose!(
                        pid = wake.joiner.0,
                        "{} joined {}",
                        wake.joiner,
                        wake.target
                    );
                    self.reply(wake.joiner, &Response::Joined(wake.result));
                }
            }
        }
    }

    // Forking and reaping ---------------------------------------------------------------

    /// Starts a process through `fork_point` on behalf of `by`: the fork path.
    pub(crate) fn spawn(
        &mut self,
        fork_point: ResId,
        arg: Argument,
        inherit: &Inherit,
        by: Holder,
    ) -> Result<ProcessId> {
        if self.terminated.is_some() {
            return Err(Error::ShuttingDown);
        }
        let Some(body) = self.defs.bodies.get(&fork_point).cloned() else {
            return Err(Error::NoResource(fork_point));
        };
        let started = self.defs.registry.start(fork_point, inherit, by)?;
        let pid = started.pid;
        // Before the process runs, so that any tag it writes in shared memory is known.
        if let Some(board) = crate::board::death_board() {
            board.issue(pid);
        }
        let inherited: Vec<ResId> = started.inherited.iter().map(|(id, _)| *id).collect();
        let arg = match self.hand_to_warm(pid, fork_point, arg, inherited.clone()) {
            Ok(()) => {
                verbose!(
                    pid = pid.0,
                    "{pid} runs in a warm worker, through {fork_point} for {by}"
                );
                return Ok(pid);
            }
            Err(arg) => arg,
        };
        match self.fork_worker(&pid.to_string()) {
            Ok(Fork::Child(channel)) => {
                self.keep_inherited_mappings(&inherited);
                self.run_process(pid, channel, &body, arg)
            }
            Ok(Fork::Parent {
                unix,
                pidfd,
                channel,
            }) => {
                verbose!(
                    pid = pid.0,
                    unix_pid = unix.as_raw_pid(),
                    "forked {pid} through {fork_point} for {by}"
                );
                self.workers.insert(
                    pid,
                    Slot {
                        unix,
                        pidfd,
                        channel: Some(channel),
                        reported: None,
                        awaiting_reply: false,
                    },
                );
                // The child has its own copy of the argument (and of its pipe); the master
                // keeps none.
                drop(arg);
                Ok(pid)
            }
            Err(e) => {
                let actions = self.defs.registry.finished(pid, None);
                self.perform(actions);
                Err(e)
            }
        }
    }

    /// The fork of a worker, on demand or warm: a socketpair, stdout and stderr flushed (output
    /// buffered in the master must not be written once more by the child), `fork`, and in the
    /// parent a pidfd for the child (without one the child cannot be supervised: it is killed
    /// and reaped). In the child, the master is left (`leave_master`) before this returns.
    /// `what` names the child in errors.
    fn fork_worker(&mut self, what: &str) -> Result<Fork> {
        let (ours, theirs) = Channel::pair().map_err(|e| from_ipc("socketpair", e))?;
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        match sys::fork() {
            Ok(Forked::Child) => {
                drop(ours);
                self.leave_master();
                Ok(Fork::Child(theirs))
            }
            Ok(Forked::Parent(unix)) => {
                drop(theirs);
                match pidfd_open(unix, PidfdFlags::empty()) {
                    Ok(pidfd) => Ok(Fork::Parent {
                        unix,
                        pidfd,
                        channel: ours,
                    }),
                    Err(e) => {
                        let _ = rustix::process::kill_process(unix, Signal::KILL);
                        let _ = rustix::process::waitpid(
                            Some(unix),
                            rustix::process::WaitOptions::empty(),
                        );
                        Err(Error::io("pidfd_open", format!("unix pid {unix:?}"), e))
                    }
                }
            }
            Err(e) => Err(Error::io("fork", what.to_owned(), e)),
        }
    }

    /// Hands process `pid` to a warm worker of the current generation, if there is one;
    /// gives `arg` back when there is none (or it could not be told).
    fn hand_to_warm(
        &mut self,
        pid: ProcessId,
        fork_point: ResId,
        arg: Argument,
        inherited: Vec<ResId>,
    ) -> std::result::Result<(), Argument> {
        let arg = match arg {
            Argument::Whole(arg) if arg.as_bytes().len() <= WARM_ARG_LIMIT => arg,
            // A stream goes to a child forked now, which inherits its pipe.
            arg => return Err(arg),
        };
        let Some(mut warm) = self.warm.take(self.defs.generation) else {
            return Err(Argument::Whole(arg));
        };
        let Some(mut channel) = warm.channel.take() else {
            return Err(Argument::Whole(arg));
        };
        let run = Response::Run {
            pid,
            fork_point,
            arg,
            inherited,
        };
        if let Err(e) = channel.queue_msg(&run) {
            tracing::warn!(error = %e, "cannot hand {pid} to a warm worker: forking instead");
            self.warm.discard(warm);
            let Response::Run { arg, .. } = run else {
                unreachable!("built as a Run above")
            };
            return Err(Argument::Whole(arg));
        }
        self.workers.insert(
            pid,
            Slot {
                unix: warm.unix,
                pidfd: warm.pidfd,
                channel: Some(channel),
                reported: None,
                awaiting_reply: false,
            },
        );
        Ok(())
    }

    /// Whether the loop should fork a warm worker when it has nothing else to do.
    fn warm_wanted(&self) -> bool {
        self.terminated.is_none()
            && self.stop.is_none()
            && self.first_ended.is_none()
            && self.warm.wanted(self.defs.generation, Instant::now())
    }

    /// Gets a warm worker of the current generation (retiring the stale ones): asks the
    /// zygote, forks one, or forks the warm worker itself (see [`Plan`]).
    fn prefork(&mut self) {
        let generation = self.defs.generation;
        self.warm.retire_stale(generation);
        match self.warm.plan(generation) {
            Plan::Ask => {
                if let Err(e) = self.warm.ask(generation) {
                    tracing::warn!(error = %e, "cannot ask a zygote for a warm worker: forking on demand for a while");
                    self.warm.pause(Instant::now());
                }
                return;
            }
            Plan::ForkZygote => {
                match self.fork_worker("a zygote") {
                    Ok(Fork::Child(control)) => {
                        let channel = zygote::serve_requests(control, self.unix_pid);
                        self.wait_for_process(channel)
                    }
                    Ok(Fork::Parent {
                        unix,
                        pidfd,
                        channel,
                    }) => {
                        self.warm
                            .push_zygote(Zygote::new(unix, pidfd, channel, generation));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot fork a zygote: forking on demand for a while");
                        self.warm.pause(Instant::now());
                    }
                }
                return;
            }
            Plan::Fork => {}
        }
        match self.fork_worker("a warm worker") {
            Ok(Fork::Child(channel)) => self.wait_for_process(channel),
            Ok(Fork::Parent {
                unix,
                pidfd,
                channel,
            }) => self.warm.push(Warm {
                unix,
                pidfd,
                channel: Some(channel),
                generation,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot fork a warm worker: forking on demand for a while");
                self.warm.pause(Instant::now());
            }
        }
    }

    /// The child side of a warm worker: waits for its process, then runs it; never returns.
    fn wait_for_process(&mut self, mut channel: Channel) -> ! {
        match channel.recv_msg::<Response>() {
            Ok(Response::Run {
                pid,
                fork_point,
                arg,
                inherited,
            }) => {
                self.keep_inherited_mappings(&inherited);
                let Some(body) = self.defs.bodies.get(&fork_point).cloned() else {
                    // The generation rules this out; report it rather than hang the joiner.
                    worker::install(channel, pid);
                    worker::finish(Outcome::Failed(format!(
                        "no body for {fork_point} in this warm worker"
                    )));
                    std::process::exit(0)
                };
                self.run_process(pid, channel, &body, Argument::Whole(arg))
            }
            // Retired (the end of the stream), told to exit, or a master gone.
            Ok(_) | Err(netmcore_ipc::Error::Closed) => std::process::exit(0),
            Err(e) => {
                tracing::error!(error = %e, "a warm worker could not read its process");
                std::process::exit(0)
            }
        }
    }

    /// The child side of a fork: closes everything of the master, arms the death signal and
    /// becomes a worker.
    fn leave_master(&mut self) {
        // Nothing of the master stays open here: its lock must go with it, a sibling's channel
        // held here would hide that sibling's end from the master, and only the master may
        // hold the guardian's pipe (its end tells the guardian the master is gone). The admin
        // socket's file stays the master's. The descriptors are closed by number and their
        // owners forgotten: dropping the tables would free memory, writing to pages this
        // child shares with the master, each write a page copy.
        let mut fds = Vec::with_capacity(8 + 2 * (self.workers.len() + self.warm.len()));
        fds.extend(self.lock.as_ref().map(AsRawFd::as_raw_fd));
        fds.extend(
            self.ledger
                .as_ref()
                .map(|ledger| std::os::fd::AsFd::as_fd(ledger).as_raw_fd()),
        );
        fds.extend(self.guardian.as_ref().map(Guardian::raw_fd));
        if let Some(admin) = &self.admin {
            admin.raw_fds(&mut fds);
        }
        for slot in self.workers.values() {
            fds.push(slot.pidfd.as_raw_fd());
            if let Some(channel) = &slot.channel {
                channel.raw_fds(&mut fds);
            }
        }
        self.warm.raw_fds(&mut fds);
        sys::close_in_child(&fds);
        std::mem::forget(self.lock.take());
        std::mem::forget(self.ledger.take());
        std::mem::forget(self.guardian.take());
        std::mem::forget(self.admin.take());
        std::mem::forget(std::mem::take(&mut self.workers));
        self.warm.forget_in_child();
        signals::reset_in_child(self.signals.take());
        // The pidfile is the master's to remove; this copy is forgotten, not removed.
        std::mem::forget(self.pidfile.take());
        // Die with the master. If it died between the fork and this call, the death signal
        // came too early for us: the parent is no longer the master.
        let armed = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
        if armed.is_err() || rustix::process::getppid() != Some(self.unix_pid) {
            std::process::exit(EXIT_ORPHAN);
        }
        state::set_role(Role::Worker);
    }

    /// Runs process `pid` in this worker, then reports and exits.
    fn run_process(
        &mut self,
        pid: ProcessId,
        mut channel: Channel,
        body: &Body,
        arg: Argument,
    ) -> ! {
        channel.set_busy_poll(self.busy_poll / WORKER_SPIN_DIVISOR);
        worker::install(channel, pid);
        let outcome = match arg.into_encap() {
            Ok(arg) => worker::run_body(pid, body, arg),
            Err(message) => {
                tracing::error!(pid = pid.0, "{pid} did not get its argument: {message}");
                Outcome::Failed(message)
            }
        };
        worker::finish(outcome);
        std::process::exit(0)
    }

    /// Worker `from` reported the end of its body: its joiner gets the result and its
    /// resources are released now, without waiting for the process to exit (it exits right
    /// after the report; it is reaped when it did).
    fn finished(&mut self, from: ProcessId, outcome: Outcome) {
        let Some(mut slot) = self.workers.remove(&from) else {
            return;
        };
        self.report(from, &mut slot, outcome);
        self.workers.insert(from, slot);
    }

    /// Records `outcome` for worker `pid` (whose slot is out of the table) and carries out
    /// what the registry says.
    fn report(&mut self, pid: ProcessId, slot: &mut Slot, outcome: Outcome) {
        if slot.reported.is_some() {
            return;
        }
        let result = match outcome {
            Outcome::Returned(result) => {
                slot.reported = Some(Reported::Returned(result.type_name().to_owned()));
                Some(result)
            }
            Outcome::Failed(message) => {
                slot.reported = Some(Reported::Failed(message));
                None
            }
            other => {
                slot.reported = Some(Reported::Failed(format!("{other:?}")));
                None
            }
        };
        let actions = self.defs.registry.finished(pid, result);
        self.perform(actions);
    }

    /// Reaps worker `pid` if it exited: logs how it ended and reports it to the registry.
    fn reap(&mut self, pid: ProcessId) {
        let status = {
            let Some(slot) = self.workers.get(&pid) else {
                return;
            };
            match rustix::process::waitid(
                WaitId::PidFd(std::os::fd::AsFd::as_fd(&slot.pidfd)),
                WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
            ) {
                Ok(Some(status)) => Some(status),
                // Not exited after all.
                Ok(None) => return,
                // Reaped by someone else: a program that set SIGCHLD to SIG_IGN has its
                // children reaped by the kernel. The pidfd said it exited.
                Err(Errno::CHILD) => None,
                Err(e) => {
                    tracing::error!(pid = pid.0, error = %e, "waitid failed for {pid}");
                    return;
                }
            }
        };
        let Some(mut slot) = self.workers.remove(&pid) else {
            return;
        };
        // Reaped: whoever waits for it in shared memory may now give up on it.
        if let Some(board) = crate::board::death_board() {
            board.mark_dead(pid);
        }
        // Its last words may still be in the channel.
        if let Some(mut channel) = slot.channel.take() {
            while let Ok(Some(request)) = channel.try_recv_msg::<Request>() {
                match request {
                    Request::Finished(outcome) => self.report(pid, &mut slot, outcome),
                    // A release whose answer the worker did not live to read: it is carried
                    // out all the same (the end of the process would release it anyway).
                    Request::Release(id) => {
                        if let Some(destroy) = self.defs.registry.release(id, Holder::Process(pid))
                        {
                            self.destroy(destroy);
                        }
                    }
                    // Any other request nobody will read the answer to.
                    _ => {}
                }
            }
        }
        let how = describe_end(slot.reported.as_ref(), status.as_ref());
        tracing::info!(
            pid = pid.0,
            unix_pid = slot.unix.as_raw_pid(),
            "{pid} (unix pid {}) ended: {how}",
            slot.unix.as_raw_pid()
        );
        drop(slot.pidfd);
        if slot.reported.is_none() {
            // It died without a report: no result, and its resources are released now.
            let actions = self.defs.registry.finished(pid, None);
            self.perform(actions);
        }
        if self.first.is_some_and(|(first, _)| first == pid) {
            self.first_ended = Some(Instant::now());
            verbose!(pid = pid.0, "the first process ended: shutdown begins");
        }
    }

    // The end -----------------------------------------------------------------------------

    /// After the loop: takes the first process's result, forgets the finished processes,
    /// destroys every object the master still holds (the process types stay defined),
    /// releases the directory, and gives the definitions back with `startup`'s result.
    pub(crate) fn finish(mut self) -> (Result<Option<Encap>>, Definitions) {
        self.warm.shut_down();
        let first_result = self
            .first
            .and_then(|(pid, join_point)| self.defs.registry.join_nowait(join_point, pid));
        let finished: Vec<(ProcessId, ResId)> = self
            .defs
            .registry
            .processes()
            .filter(|p| p.state() != ProcessState::Running)
            .map(|p| (p.pid(), p.join_point()))
            .collect();
        for (pid, join_point) in finished {
            let _ = self.defs.registry.join_nowait(join_point, pid);
        }
        let held: Vec<ResId> = self
            .defs
            .registry
            .resources()
            .filter(|r| !matches!(r.kind(), ResourceKind::ForkPoint | ResourceKind::JoinPoint))
            .map(|r| r.id())
            .collect();
        for id in held {
            if let Some(destroy) = self.defs.registry.release(id, Holder::Master) {
                self.destroy(destroy);
            }
        }
        if let Some(ledger) = &mut self.ledger
            && ledger.live().is_ok_and(|live| live.is_empty())
            && let Err(e) = ledger.truncate()
        {
            tracing::warn!(error = %e, "cannot truncate the ledger");
        }
        let result = match self.stop.take() {
            None => Ok(first_result),
            Some(Stop::Signal(signal)) => Err(Error::Stopped {
                signal: signals::signal_name(signal),
            }),
            Some(Stop::Failed(e)) => Err(e),
        };
        tracing::info!(
            unix_pid = self.unix_pid.as_raw_pid(),
            "netmcore master stopped"
        );
        (result, self.close())
    }
}

/// Registers an existing object for `by`, recording it in `ledger` (when open) first.
pub(crate) fn register_in(
    defs: &mut Definitions,
    mut ledger: Option<&mut Ledger>,
    desc: ResourceDesc,
    by: Holder,
) -> Result<ResId> {
    netmcore_resources::registry::validate_desc(&desc)?;
    let object = LedgerObject::from_desc(&desc);
    if let (Some(object), Some(ledger)) = (&object, ledger.as_deref_mut()) {
        ledger.registered(object)?;
    }
    match defs.registry.register(desc, by) {
        Ok(id) => Ok(id),
        Err(e) => {
            // Not registered after all: the record must not make a cleanup destroy it.
            if let (Some(object), Some(ledger)) = (&object, ledger) {
                let _ = ledger.destroyed(object);
            }
            Err(e.into())
        }
    }
}

/// How many names `create_preallocated_shm` draws before it gives up on collisions.
const UNIQUE_ATTEMPTS: usize = 8;

/// `prefix` followed by 16 random hex digits.
fn unique_name(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(now);
    hasher.write_u32(std::process::id());
    hasher.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    format!("{prefix}{:016x}", hasher.finish())
}

/// Draws a name from `prefix`, records it in `ledger` (when open) and creates exactly that
/// name (`O_CREAT | O_EXCL`, 0600), drawing again when it exists; for `call`.
fn create_recorded_shm(
    mut ledger: Option<&mut Ledger>,
    prefix: &str,
    call: &'static str,
) -> Result<(ShmObject, LedgerObject)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let name = unique_name(prefix);
        netmcore_resources::registry::validate_shm_name(&name)
            .map_err(|_| Error::InvalidName(prefix.to_owned()))?;
        let object = LedgerObject::shm(name.as_str());
        if let Some(ledger) = ledger.as_deref_mut() {
            ledger.registered(&object)?;
        }
        match ShmObject::create(&name) {
            Ok(shm) => return Ok((shm, object)),
            Err(e) => {
                // Not ours: the record must not make a cleanup destroy someone else's object.
                if let Some(ledger) = ledger.as_deref_mut() {
                    let _ = ledger.destroyed(&object);
                }
                let exists = matches!(&e, netmcore_ipc::Error::Os { source, .. }
                    if source.kind() == std::io::ErrorKind::AlreadyExists);
                if !exists || attempt >= UNIQUE_ATTEMPTS {
                    return Err(from_ipc(call, e));
                }
            }
        }
    }
}

/// Unlinks `shm`, made by [`create_recorded_shm`], and records that, after a later step
/// failed.
fn undo_recorded_shm(shm: &ShmObject, object: &LedgerObject, ledger: Option<&mut Ledger>) {
    let _ = shm.unlink();
    if let Some(ledger) = ledger {
        let _ = ledger.destroyed(object);
    }
}

/// Creates a preallocated shm for `by`: draws a name, records it in `ledger` (when open),
/// creates exactly that name (`O_CREAT | O_EXCL`, 0600), sizes it, maps it here with
/// `MAP_POPULATE` for the life of the process, and registers it.
pub(crate) fn create_preallocated_in(
    defs: &mut Definitions,
    mut ledger: Option<&mut Ledger>,
    prefix: &str,
    size: usize,
    by: Holder,
) -> Result<(ResId, String)> {
    let len = u64::try_from(size).map_err(|_| Error::InvalidName(prefix.to_owned()))?;
    let (shm, object) =
        create_recorded_shm(ledger.as_deref_mut(), prefix, "create_preallocated_shm")?;
    let mapped = shm
        .set_size(len)
        .and_then(|()| shm.map_shared_with(MapOptions::new().populate(true)));
    let memory = match mapped {
        Ok(memory) => memory,
        Err(e) => {
            undo_recorded_shm(&shm, &object, ledger);
            return Err(from_ipc("create_preallocated_shm", e));
        }
    };
    let name = shm.name().to_owned();
    let desc = ResourceDesc::PosixShmPreallocated {
        name: name.clone(),
        size,
    };
    match defs.registry.register(desc, by) {
        Ok(id) => {
            defs.mappings.insert(
                id,
                Mapped {
                    memory,
                    handed_out: false,
                },
            );
            defs.changed();
            Ok((id, name))
        }
        Err(e) => {
            undo_recorded_shm(&shm, &object, ledger);
            Err(e.into())
        }
    }
}

/// Creates a shm object for `by` that the caller maps itself (`create_shm`): draws a name,
/// records it in `ledger` (when open), creates exactly that name (`O_CREAT | O_EXCL`, 0600),
/// sizes it and registers it as a [`ResourceDesc::PosixShm`] whose only user is `by`. The
/// master does not map it.
pub(crate) fn create_shm_in(
    defs: &mut Definitions,
    mut ledger: Option<&mut Ledger>,
    prefix: &str,
    size: usize,
    by: Holder,
) -> Result<(ResId, String)> {
    let len = u64::try_from(size).map_err(|_| Error::InvalidName(prefix.to_owned()))?;
    let (shm, object) = create_recorded_shm(ledger.as_deref_mut(), prefix, "create_shm")?;
    if let Err(e) = shm.set_size(len) {
        undo_recorded_shm(&shm, &object, ledger);
        return Err(from_ipc("create_shm", e));
    }
    let name = shm.name().to_owned();
    match defs
        .registry
        .register(ResourceDesc::PosixShm(name.clone()), by)
    {
        Ok(id) => Ok((id, name)),
        Err(e) => {
            undo_recorded_shm(&shm, &object, ledger);
            Err(e.into())
        }
    }
}

/// Destroys an object whose last user let go: unlinks it and records that in `ledger` (when
/// open), or drops a fork point's body.
pub(crate) fn destroy_in(
    defs: &mut Definitions,
    ledger: Option<&mut Ledger>,
    destroy: Destroy,
) -> Result<()> {
    verbose!(id = destroy.id.0, "destroying {}", destroy.id);
    match &destroy.desc {
        ResourceDesc::ForkPoint { .. } => {
            defs.bodies.remove(&destroy.id);
            defs.changed();
            Ok(())
        }
        desc => {
            if matches!(desc, ResourceDesc::PosixShmPreallocated { .. }) {
                forget_mapping(defs, destroy.id);
            }
            let Some(object) = LedgerObject::from_desc(desc) else {
                return Ok(());
            };
            dir::destroy_object(&object)?;
            if let Some(ledger) = ledger {
                ledger.destroyed(&object)?;
            }
            Ok(())
        }
    }
}

/// Removes the mapping of the destroyed preallocated shm `id` from the table and unmaps it,
/// unless it was handed out in this process (user code may hold it: it stays valid).
fn forget_mapping(defs: &mut Definitions, id: ResId) {
    if defs
        .mappings
        .get(&id)
        .is_some_and(|mapped| mapped.handed_out)
    {
        return;
    }
    if let Some(mapped) = defs.mappings.remove(&id) {
        // No change of generation: a worker forked before revokes this mapping like every
        // one it does not inherit, and a destroyed region is never inherited.
        if let Err(e) = sys::unmap_in_master(mapped.memory) {
            tracing::warn!(id = id.0, error = %e, "cannot unmap {id}");
        }
    }
}

/// Destroys every OS object of the registry, whoever uses it (fork and join points stay);
/// returns what failed.
pub(crate) fn destroy_registered(
    defs: &mut Definitions,
    mut ledger: Option<&mut Ledger>,
) -> Vec<String> {
    let objects: Vec<(ResId, Vec<Holder>)> = defs
        .registry
        .resources()
        .filter(|r| !matches!(r.kind(), ResourceKind::ForkPoint | ResourceKind::JoinPoint))
        .map(|r| (r.id(), r.users().collect()))
        .collect();
    let mut failures = Vec::new();
    for (id, users) in objects {
        for user in users {
            if let Some(destroy) = defs.registry.release(id, user)
                && let Err(e) = destroy_in(defs, ledger.as_deref_mut(), destroy)
            {
                failures.push(format!("{id}: {e}"));
            }
        }
    }
    failures
}

/// Raises the soft limit on open descriptors to the hard limit (the master holds two per
/// worker, and `poll` has no limit of its own); returns the old limit if it changed.
fn raise_nofile_limit() -> Option<Rlimit> {
    let old = getrlimit(Resource::Nofile);
    if old.current == old.maximum {
        return None;
    }
    let raised = Rlimit {
        current: old.maximum,
        maximum: old.maximum,
    };
    setrlimit(Resource::Nofile, raised).ok().map(|()| old)
}

/// How a worker ended, for the log.
fn describe_end(reported: Option<&Reported>, status: Option<&WaitIdStatus>) -> String {
    if let Some(status) = status
        && let Some(signal) = status.terminating_signal()
    {
        let dumped = if status.dumped() {
            " (core dumped)"
        } else {
            ""
        };
        return format!("killed by {}{dumped}", signals::signal_name(signal));
    }
    match (reported, status.and_then(WaitIdStatus::exit_status)) {
        (Some(Reported::Returned(type_name)), _) => format!("returned a result ({type_name})"),
        (Some(Reported::Failed(message)), _) => message.clone(),
        (_, Some(code)) => format!("exited with {code}"),
        _ => "ended".to_owned(),
    }
}

/// A response for the log, without its payload.
fn describe(response: &Response) -> String {
    match response {
        Response::Joined(Some(result)) => format!("joined with a {}", result.type_name()),
        Response::Joined(None) => "joined without a result".to_owned(),
        other => format!("{other:?}"),
    }
}

fn timespec(d: Duration) -> Timespec {
    Timespec {
        tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        // Round up so that the deadline has passed when poll returns.
        tv_nsec: i64::from(d.subsec_nanos()) + 1,
    }
    .normalize()
}

trait Normalize {
    fn normalize(self) -> Self;
}

impl Normalize for Timespec {
    fn normalize(mut self) -> Timespec {
        if self.tv_nsec >= 1_000_000_000 {
            self.tv_sec = self.tv_sec.saturating_add(1);
            self.tv_nsec -= 1_000_000_000;
        }
        self
    }
}

/// A process's argument as the master has it.
#[derive(Debug)]
pub(crate) enum Argument {
    /// One envelope.
    Whole(Encap),
    /// In two pieces (`Encap::wrap_pieces`): the head, and `run_len` bytes that the new
    /// process reads from `pipe`, written there by the process that starts it.
    Stream {
        head: Vec<u8>,
        run_len: usize,
        pipe: stream::Reader,
    },
}

impl Argument {
    /// The argument of a `StartStream` request, checked: a head that makes one envelope with
    /// `run_len` more bytes, and the read end of a pipe.
    fn stream(head: Vec<u8>, run_len: u64, pipe: Option<OwnedFd>) -> Result<Argument> {
        Encap::check_head(&head, run_len)?;
        let run_len = usize::try_from(run_len).map_err(|_| EncapError::TooLarge {
            part: "streamed payload",
            declared: run_len,
            limit: usize::MAX as u64,
        })?;
        let pipe = pipe.ok_or(Error::Protocol {
            call: "start",
            source: netmcore_ipc::Error::Protocol {
                what: "start request",
                reason: "no pipe for the argument".to_owned(),
            },
        })?;
        let pipe = stream::Reader::from_fd(pipe).map_err(|e| from_ipc("start", e))?;
        Ok(Argument::Stream {
            head,
            run_len,
            pipe,
        })
    }

    /// The argument as one envelope; for a stream, in the new process, once its run is read
    /// from the pipe. The error says what went wrong, for the process's report.
    fn into_encap(self) -> std::result::Result<Encap, String> {
        match self {
            Argument::Whole(arg) => Ok(arg),
            Argument::Stream {
                head,
                run_len,
                mut pipe,
            } => {
                let run = pipe.read_exact(run_len).map_err(|e| match e {
                    netmcore_ipc::Error::Truncated { got, expected } => format!(
                        "its argument stopped after {got} of the {expected} bytes sent through a pipe (the starting process died?)"
                    ),
                    e => format!("its argument could not be read from its pipe: {e}"),
                })?;
                Encap::from_pieces(head, run).map_err(|e| format!("its argument: {e}"))
            }
        }
    }
}

/// An error of the OS layer met by the master itself.
pub(crate) fn from_ipc(call: &'static str, e: netmcore_ipc::Error) -> Error {
    match e {
        netmcore_ipc::Error::Os { op, target, source } => Error::Io { op, target, source },
        netmcore_ipc::Error::InvalidName { name, .. } => Error::InvalidName(name),
        e => Error::Protocol { call, source: e },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timespecs_round_up_and_stay_normal() {
        let t = timespec(Duration::from_millis(1500));
        assert_eq!((t.tv_sec, t.tv_nsec), (1, 500_000_001));
        let t = timespec(Duration::new(2, 999_999_999));
        assert_eq!((t.tv_sec, t.tv_nsec), (3, 0));
    }

    #[test]
    fn responses_are_described_without_their_payload() {
        let big = Encap::wrap(&vec![0u8; 1000]).unwrap();
        let text = describe(&Response::Joined(Some(big)));
        assert!(text.starts_with("joined with a "), "{text}");
        assert!(text.len() < 100, "{text}");
    }
}
