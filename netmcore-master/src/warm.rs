//! Warm workers: children of the master forked ahead of time, while the master had nothing
//! else to do, each waiting on its own channel to be handed one process.
//!
//! A `start` that finds a warm worker of the current generation sends it
//! [`Response::Run`](netmcore_ipc::wire::Response::Run) (the process id, the fork point, the
//! argument and the preallocated shm it inherits) instead of forking, so the fork is off the
//! path from `start` to the body. The worker then does what a worker forked at that moment
//! would do: it revokes the preallocated shm it does not inherit, runs the body once and
//! exits. Whatever a fork can see of the master's definitions (the bodies, the preallocated
//! shm mapped in the master) is counted by `Definitions::generation`; a warm worker of an
//! older generation is retired, never used.
//!
//! Retiring a warm worker closes the master's end of its channel: the worker reads the end
//! of the stream and exits. Its pidfd stays polled until it is reaped.
//!
//! The warm workers of a generation are forked by its zygote (see `zygote.rs`), an idle fork
//! of the master that clones them as children of the master, so that the master's core does
//! not pay for the fork. Where the zygote cannot clone (`clone3` refused, or
//! `PR_GET_TID_ADDRESS` missing), or zygotes keep dying, the master forks its warm workers
//! itself.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use netmcore_ipc::channel::Channel;
use rustix::event::PollFlags;
use rustix::io::Errno;
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions, pidfd_send_signal};

use crate::zygote::{self, Zygote};

/// The most warm workers the default keeps.
const DEFAULT_MAX: usize = 8;

/// After this many warm workers in a row died before they were used, the pool stops forking
/// (something kills them: a policy, a sandbox that refuses their set-up).
const UNUSED_DEATHS_LIMIT: u32 = 8;

/// How long the pool forks nothing after a fork (or its socketpair or pidfd) failed: the
/// process or descriptor limit may be reached for a moment.
const PAUSE_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// After this many zygotes in a row were lost (died, or broke the protocol) before one of
/// their warm workers was born, the master forks its warm workers itself.
const ZYGOTE_LOSSES_LIMIT: u32 = 3;

/// A warm worker, as the master sees it.
#[derive(Debug)]
pub(crate) struct Warm {
    pub(crate) unix: Pid,
    pub(crate) pidfd: OwnedFd,
    /// The master's end of its channel; `None` once retired.
    pub(crate) channel: Option<Channel>,
    /// The generation of the definitions it was forked at.
    pub(crate) generation: u64,
}

/// The warm workers of a master.
#[derive(Debug)]
pub(crate) struct WarmPool {
    /// How many ready warm workers the master keeps.
    target: usize,
    members: Vec<Warm>,
    /// Warm workers that died unused since one was last used.
    unused_deaths: u32,
    /// No forking before then, after a failure.
    paused_until: Option<Instant>,
    /// The zygotes: at most one current, and retired ones until they are reaped.
    zygotes: Vec<Zygote>,
    /// Whether warm workers are forked by a zygote (otherwise by the master).
    by_zygote: bool,
    /// Zygotes lost since a warm worker was last born of one.
    zygote_losses: u32,
}

/// How the master gets its next warm worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// It forks it itself.
    Fork,
    /// It forks a zygote for the current generation first.
    ForkZygote,
    /// It asks the current zygote.
    Ask,
}

impl WarmPool {
    /// A pool that keeps `target` warm workers (by default one per CPU, at most
    /// [`DEFAULT_MAX`]), made by a zygote if `by_zygote`.
    pub(crate) fn new(target: Option<usize>, by_zygote: bool) -> WarmPool {
        let target = target.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, |n| n.get().min(DEFAULT_MAX))
        });
        WarmPool {
            target,
            members: Vec::new(),
            unused_deaths: 0,
            paused_until: None,
            zygotes: Vec::new(),
            by_zygote,
            zygote_losses: 0,
        }
    }

    /// Forks warm workers in the master from now on, never through a zygote.
    pub(crate) fn without_zygote(&mut self) {
        if self.by_zygote {
            self.by_zygote = false;
            for zygote in &mut self.zygotes {
                zygote.retire();
            }
        }
    }

    /// How to get the next warm worker at `generation` (when [`wanted`](WarmPool::wanted)).
    pub(crate) fn plan(&self, generation: u64) -> Plan {
        if !self.by_zygote {
            Plan::Fork
        } else if self.zygotes.iter().any(|z| z.can_ask(generation)) {
            Plan::Ask
        } else {
            Plan::ForkZygote
        }
    }

    /// Adds the zygote the master just forked.
    pub(crate) fn push_zygote(&mut self, zygote: Zygote) {
        self.zygotes.push(zygote);
    }

    /// Asks the current zygote of `generation` for a warm worker.
    ///
    /// # Errors
    ///
    /// No current zygote, or `socketpair` or the send failed.
    pub(crate) fn ask(&mut self, generation: u64) -> Result<(), netmcore_ipc::Error> {
        match self.zygotes.iter_mut().find(|z| z.can_ask(generation)) {
            Some(zygote) => zygote.ask(),
            None => Err(netmcore_ipc::Error::Closed),
        }
    }

    /// Stops forking warm workers (after a fork failed, say); those there stay usable.
    pub(crate) fn disable(&mut self) {
        self.target = 0;
    }

    /// Stops forking warm workers for a while after a failure at `now`.
    pub(crate) fn pause(&mut self, now: Instant) {
        self.paused_until = Some(now + PAUSE_AFTER_FAILURE);
    }

    /// When a pause after a failure ends, if it has not yet at `now`: the loop must wake then,
    /// for nothing else may come to wake it.
    pub(crate) fn resume_at(&self, now: Instant) -> Option<Instant> {
        self.paused_until.filter(|&until| until > now)
    }

    /// Whether, at `now`, fewer than the target are ready at `generation` and forking is not
    /// paused. The requests in flight to the current zygote count as ready: their reports
    /// wake the loop.
    pub(crate) fn wanted(&self, generation: u64, now: Instant) -> bool {
        let asked: usize = self
            .zygotes
            .iter()
            .filter(|z| z.is_current(generation))
            .map(Zygote::asking)
            .sum();
        self.paused_until.is_none_or(|until| now >= until)
            && self.ready(generation) + asked < self.target
    }

    fn ready(&self, generation: u64) -> usize {
        self.members
            .iter()
            .filter(|w| w.channel.is_some() && w.generation == generation)
            .count()
    }

    /// Adds a freshly forked warm worker.
    pub(crate) fn push(&mut self, warm: Warm) {
        self.members.push(warm);
    }

    /// Takes a warm worker of `generation` out of the pool (retiring the stale ones).
    pub(crate) fn take(&mut self, generation: u64) -> Option<Warm> {
        self.retire_stale(generation);
        let at = self
            .members
            .iter()
            .position(|w| w.channel.is_some() && w.generation == generation)?;
        self.unused_deaths = 0;
        Some(self.members.swap_remove(at))
    }

    /// Retires the warm workers forked at another generation than `generation`.
    pub(crate) fn retire_stale(&mut self, generation: u64) {
        for zygote in &mut self.zygotes {
            if zygote.generation != generation {
                zygote.retire();
            }
        }
        for warm in &mut self.members {
            if warm.generation != generation && warm.channel.take().is_some() {
                tracing::trace!(
                    unix_pid = warm.unix.as_raw_pid(),
                    "retiring a stale warm worker"
                );
            }
        }
    }

    /// Retires every warm worker.
    pub(crate) fn retire_all(&mut self) {
        for zygote in &mut self.zygotes {
            zygote.retire();
        }
        for warm in &mut self.members {
            warm.channel = None;
        }
    }

    /// Takes back a warm worker that could not be handed its process: it is killed and
    /// reaped like a retired one.
    pub(crate) fn discard(&mut self, mut warm: Warm) {
        warm.channel = None;
        let _ = pidfd_send_signal(&warm.pidfd, Signal::KILL);
        self.members.push(warm);
    }

    /// The descriptors to poll: every warm worker's pidfd, then each zygote's.
    pub(crate) fn push_poll_fds<'a>(&'a self, fds: &mut Vec<rustix::event::PollFd<'a>>) {
        for warm in &self.members {
            fds.push(rustix::event::PollFd::new(&warm.pidfd, PollFlags::IN));
        }
        for zygote in &self.zygotes {
            zygote.push_poll_fds(fds);
        }
    }

    /// Serves the events `revents` of the descriptors of
    /// [`push_poll_fds`](WarmPool::push_poll_fds), in that order: reaps warm workers that
    /// exited, takes the zygotes' reports, reaps zygotes.
    pub(crate) fn serve(&mut self, revents: &[PollFlags]) {
        let (members, mut rest) = revents.split_at(self.members.len().min(revents.len()));
        let exited: Vec<Pid> = self
            .members
            .iter()
            .zip(members)
            .filter(|(_, e)| !e.is_empty())
            .map(|(w, _)| w.unix)
            .collect();
        let mut events = Vec::new();
        for zygote in &mut self.zygotes {
            let (mine, after) = rest.split_at(zygote.poll_fd_count().min(rest.len()));
            rest = after;
            if mine.iter().any(|e| !e.is_empty()) {
                zygote.serve(mine, &mut events);
            }
        }
        self.zygotes.retain(|z| !z.gone());
        for unix in exited {
            self.reap(unix);
        }
        for event in events {
            self.on_event(event);
        }
    }

    /// Acts on what a zygote's events told.
    fn on_event(&mut self, event: zygote::Event) {
        match event {
            zygote::Event::Warm {
                unix,
                pidfd,
                channel,
                generation,
            } => {
                self.zygote_losses = 0;
                self.members.push(Warm {
                    unix,
                    pidfd,
                    channel: Some(*channel),
                    generation,
                });
            }
            zygote::Event::Retired { unix, pidfd } => self.members.push(Warm {
                unix,
                pidfd,
                channel: None,
                generation: 0,
            }),
            zygote::Event::Failed(errno) => {
                if matches!(
                    errno,
                    Errno::NOSYS | Errno::PERM | Errno::INVAL | Errno::ACCESS
                ) {
                    tracing::warn!(
                        error = %errno,
                        "a zygote cannot clone warm workers: the master forks them itself"
                    );
                    self.without_zygote();
                } else {
                    tracing::warn!(error = %errno, "a zygote could not clone a warm worker: forking on demand for a while");
                    self.pause(Instant::now());
                }
            }
            zygote::Event::Lost => {
                self.zygote_losses += 1;
                tracing::warn!("a zygote died before it was retired");
                if self.zygote_losses >= ZYGOTE_LOSSES_LIMIT && self.by_zygote {
                    tracing::warn!(
                        "{ZYGOTE_LOSSES_LIMIT} zygotes in a row were lost: the master forks warm workers itself"
                    );
                    self.without_zygote();
                }
            }
        }
    }

    /// How many descriptors the pool holds, about (for a capacity).
    pub(crate) fn len(&self) -> usize {
        self.members.len() + 2 * self.zygotes.len()
    }

    /// Reaps the warm worker `unix` if it exited.
    fn reap(&mut self, unix: Pid) {
        let Some(at) = self.members.iter().position(|w| w.unix == unix) else {
            return;
        };
        let warm = &self.members[at];
        match rustix::process::waitid(
            WaitId::PidFd(std::os::fd::AsFd::as_fd(&warm.pidfd)),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
        ) {
            Ok(None) => return,
            Ok(Some(_)) | Err(Errno::CHILD) => {}
            Err(e) => {
                tracing::error!(unix_pid = unix.as_raw_pid(), error = %e, "waitid failed");
                return;
            }
        }
        let warm = self.members.swap_remove(at);
        if warm.channel.is_some() {
            self.unused_deaths += 1;
            tracing::warn!(
                unix_pid = unix.as_raw_pid(),
                "a warm worker died before it was used"
            );
            if self.unused_deaths >= UNUSED_DEATHS_LIMIT && self.target > 0 {
                tracing::warn!(
                    "{UNUSED_DEATHS_LIMIT} warm workers in a row died unused: forking on demand from now on"
                );
                self.disable();
            }
        }
    }

    /// Retires and kills every warm worker and waits for each (the end of the master).
    pub(crate) fn shut_down(&mut self) {
        let mut events = Vec::new();
        for zygote in self.zygotes.drain(..) {
            zygote.shut_down(&mut events);
        }
        for event in events {
            self.on_event(event);
        }
        for warm in self.members.drain(..) {
            drop(warm.channel);
            let _ = pidfd_send_signal(&warm.pidfd, Signal::KILL);
            while let Err(Errno::INTR) = rustix::process::waitid(
                WaitId::PidFd(std::os::fd::AsFd::as_fd(&warm.pidfd)),
                WaitIdOptions::EXITED,
            ) {}
        }
    }

    /// Every descriptor of the pool: pidfds and channels (for a forked child that closes them
    /// by number).
    pub(crate) fn raw_fds(&self, out: &mut Vec<std::os::fd::RawFd>) {
        use std::os::fd::AsRawFd;
        for warm in &self.members {
            out.push(warm.pidfd.as_raw_fd());
            if let Some(channel) = &warm.channel {
                channel.raw_fds(out);
            }
        }
        for zygote in &self.zygotes {
            zygote.raw_fds(out);
        }
    }

    /// In a child whose copies of the descriptors were closed by number: forgets the pool
    /// without dropping it.
    pub(crate) fn forget_in_child(&mut self) {
        std::mem::forget(std::mem::take(&mut self.members));
        std::mem::forget(std::mem::take(&mut self.zygotes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A warm worker stand-in: a child process that exits at once, with a channel whose
    /// other end is dropped.
    fn short_lived(generation: u64) -> Warm {
        let child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let unix = Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
        let pidfd = rustix::process::pidfd_open(unix, rustix::process::PidfdFlags::empty())
            .expect("pidfd_open");
        // The pool reaps it, not `Child`.
        std::mem::forget(child);
        let (ours, _theirs) = Channel::pair().unwrap();
        Warm {
            unix,
            pidfd,
            channel: Some(ours),
            generation,
        }
    }

    fn reap_all(pool: &mut WarmPool) {
        while pool.len() > 0 {
            let pids: Vec<Pid> = pool.members.iter().map(|w| w.unix).collect();
            for unix in pids {
                pool.reap(unix);
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    #[test]
    fn stale_workers_are_never_taken_and_fresh_ones_are() {
        let mut pool = WarmPool::new(Some(2), true);
        pool.push(short_lived(1));
        assert!(pool.wanted(1, Instant::now()), "one of two");
        pool.push(short_lived(2));
        assert!(
            pool.wanted(2, Instant::now()),
            "the stale one does not count"
        );
        let taken = pool.take(2).expect("a fresh one");
        assert_eq!(taken.generation, 2);
        assert!(
            pool.take(2).is_none(),
            "the stale one was retired, not taken"
        );
        pool.discard(taken);
        reap_all(&mut pool);
        assert!(pool.wanted(2, Instant::now()));
    }

    #[test]
    fn the_master_forks_warm_workers_itself_after_lost_zygotes_or_a_refused_clone() {
        let mut pool = WarmPool::new(Some(1), true);
        assert_eq!(pool.plan(0), Plan::ForkZygote);
        for _ in 0..ZYGOTE_LOSSES_LIMIT - 1 {
            pool.on_event(zygote::Event::Lost);
        }
        assert_eq!(pool.plan(0), Plan::ForkZygote);
        // A warm worker born of a zygote starts the count again.
        let warm = short_lived(0);
        pool.on_event(zygote::Event::Warm {
            unix: warm.unix,
            pidfd: warm.pidfd,
            channel: Box::new(warm.channel.expect("a channel")),
            generation: 0,
        });
        for _ in 0..ZYGOTE_LOSSES_LIMIT - 1 {
            pool.on_event(zygote::Event::Lost);
        }
        assert_eq!(pool.plan(0), Plan::ForkZygote);
        pool.on_event(zygote::Event::Lost);
        assert_eq!(
            pool.plan(0),
            Plan::Fork,
            "{ZYGOTE_LOSSES_LIMIT} losses in a row"
        );
        pool.retire_all();
        reap_all(&mut pool);

        // A clone that failed for the moment pauses; one the system refuses ends zygotes.
        let mut pool = WarmPool::new(Some(1), true);
        pool.on_event(zygote::Event::Failed(Errno::AGAIN));
        assert_eq!(pool.plan(0), Plan::ForkZygote);
        assert!(!pool.wanted(0, Instant::now()), "paused");
        pool.on_event(zygote::Event::Failed(Errno::NOSYS));
        assert_eq!(pool.plan(0), Plan::Fork);
    }

    #[test]
    fn a_failure_pauses_forking_for_a_while() {
        let mut pool = WarmPool::new(Some(1), true);
        let now = Instant::now();
        assert!(pool.wanted(0, now));
        pool.pause(now);
        assert!(!pool.wanted(0, now));
        assert!(!pool.wanted(0, now + PAUSE_AFTER_FAILURE / 2));
        assert!(pool.wanted(0, now + PAUSE_AFTER_FAILURE));
        // The loop is told when to wake for it, until then.
        assert_eq!(pool.resume_at(now), Some(now + PAUSE_AFTER_FAILURE));
        assert_eq!(pool.resume_at(now + PAUSE_AFTER_FAILURE), None);
    }

    #[test]
    fn the_pool_gives_up_after_workers_keep_dying_unused() {
        let mut pool = WarmPool::new(Some(1), true);
        for _ in 0..UNUSED_DEATHS_LIMIT - 1 {
            pool.push(short_lived(0));
            reap_all(&mut pool);
        }
        assert!(
            pool.wanted(0, Instant::now()),
            "still forking after {} deaths",
            UNUSED_DEATHS_LIMIT - 1
        );
        // One taken in between starts the count again.
        pool.push(short_lived(0));
        let used = pool.take(0).expect("a warm worker");
        pool.discard(used);
        reap_all(&mut pool);
        for _ in 0..UNUSED_DEATHS_LIMIT - 1 {
            pool.push(short_lived(0));
            reap_all(&mut pool);
        }
        assert!(pool.wanted(0, Instant::now()));
        pool.push(short_lived(0));
        reap_all(&mut pool);
        assert!(
            !pool.wanted(0, Instant::now()),
            "disabled after {UNUSED_DEATHS_LIMIT} deaths in a row"
        );
    }
}
