//! The configuration of a master: [`Config`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::Result;

/// A hook run in the master once it holds its socket directory, before the first process
/// starts (the seed's `init_ctrl`).
pub(crate) type Hook = Box<dyn FnOnce() -> Result<()>>;

/// How long the master busy-polls after an event, by default (on more than one CPU).
const DEFAULT_BUSY_POLL: Duration = Duration::from_micros(30);

/// How long workers get between SIGTERM and SIGKILL when the master stops them.
pub(crate) const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(1);

/// How a master is started: its socket directory, an optional pidfile, a hook, and how long
/// it waits for workers at shutdown.
///
/// ```
/// use std::time::Duration;
/// use netmcore_master::Config;
///
/// let config = Config::new("/tmp/my-job")
///     .pidfile("/tmp/my-job.pid")
///     .shutdown_timeout(Duration::from_secs(30))
///     .on_master_start(|| Ok(()));
/// assert_eq!(config.socket_directory(), std::path::Path::new("/tmp/my-job"));
/// ```
pub struct Config {
    pub(crate) socket_directory: PathBuf,
    pub(crate) pidfile: Option<PathBuf>,
    pub(crate) on_master_start: Option<Hook>,
    pub(crate) shutdown_timeout: Option<Duration>,
    pub(crate) kill_grace: Duration,
    pub(crate) warm_workers: Option<usize>,
    pub(crate) zygote: bool,
    pub(crate) busy_poll: Option<Duration>,
}

impl Config {
    /// A configuration with the socket directory `socket_directory`: created (mode 0700) if
    /// missing, locked while the master lives; it holds the lock file and the ledger.
    pub fn new(socket_directory: impl Into<PathBuf>) -> Config {
        Config {
            socket_directory: socket_directory.into(),
            pidfile: None,
            on_master_start: None,
            shutdown_timeout: None,
            kill_grace: DEFAULT_KILL_GRACE,
            warm_workers: None,
            zygote: cfg!(target_env = "gnu"),
            busy_poll: None,
        }
    }

    /// Writes the master's Unix pid to `path` while it runs; the file is removed when
    /// `startup` returns.
    pub fn pidfile(mut self, path: impl Into<PathBuf>) -> Config {
        self.pidfile = Some(path.into());
        self
    }

    /// Runs `hook` in the master after it took its socket directory and before the first
    /// process starts (the seed's `init_ctrl`). It may call `def_process` and `start`; an
    /// error stops the master, and `startup` returns it.
    pub fn on_master_start(mut self, hook: impl FnOnce() -> Result<()> + 'static) -> Config {
        self.on_master_start = Some(Box::new(hook));
        self
    }

    /// After the first process ended, waits at most `after` for the other workers; then they
    /// get SIGTERM, and SIGKILL a little later. By default the master waits for them as long
    /// as they run.
    pub fn shutdown_timeout(mut self, after: Duration) -> Config {
        self.shutdown_timeout = Some(after);
        self
    }

    /// How long a worker has between the SIGTERM of a stopping master and SIGKILL (default:
    /// one second).
    pub fn kill_grace(mut self, grace: Duration) -> Config {
        self.kill_grace = grace;
        self
    }

    /// How many workers the master keeps forked ahead of time (default: the number of CPUs
    /// this process may run on, at most 8; `0` forks every process on demand).
    ///
    /// A warm worker is a fork of the master made while the master had nothing else to do.
    /// It waits until a `start` hands it a process, then it runs that one process and exits,
    /// so the fork is off the path from `start` to the body. It is exactly what a fork at the
    /// time of `start` would be: the master forks it again when a process type is defined or
    /// a preallocated shm is created, and it keeps only the preallocated shm the new process
    /// inherits.
    ///
    /// The master does not fork them itself: per generation of its definitions it forks one
    /// idle copy of itself, the zygote (named `netmcore-zygote` in `ps`), which makes them with
    /// `clone3(CLONE_PARENT)`, so that they are the master's children all the same and the
    /// master's core is free while they are made (see [`zygote`](Config::zygote)).
    pub fn warm_workers(mut self, count: usize) -> Config {
        self.warm_workers = Some(count);
        self
    }

    /// Whether warm workers are made by a zygote rather than forked by the master (default:
    /// `true` with glibc; the zygote is not used with other C libraries).
    ///
    /// The zygote is forked from the master like any worker, once per generation of the
    /// definitions, and clones each warm worker from itself with `clone3(CLONE_PARENT)`.
    /// What a body sees is the same either way, with one exception: `pthread_atfork` child
    /// handlers (registered by C libraries the program uses) run once, in the zygote, not in
    /// each warm worker. A library that resets per-process state in such a handler, rather
    /// than by comparing `getpid()`, shares that state among the warm workers of one
    /// zygote; turn the zygote off for it. Where `clone3` is refused (a kernel before 5.3, a
    /// container's filter), or three zygotes in a row die before a warm worker is born of
    /// them, the master forks its warm workers itself.
    pub fn zygote(mut self, on: bool) -> Config {
        self.zygote = on && cfg!(target_env = "gnu");
        self
    }

    /// How long the master keeps polling its channels without sleeping after it served
    /// something; a worker waiting for a response polls for a third of that before it
    /// sleeps (ten times that for a request the master answers after work on the file
    /// system: creating, registering or releasing an object). Waking a sleeping process on
    /// another core costs tens of microseconds, more than a request; the spin saves that in a
    /// conversation, at the price of CPU time.
    /// Default: 30 µs when this process may run on more than one CPU, otherwise zero (never
    /// spin).
    pub fn busy_poll(mut self, spin: Duration) -> Config {
        self.busy_poll = Some(spin);
        self
    }

    /// The busy-poll time in effect (see [`busy_poll`](Config::busy_poll)).
    pub(crate) fn busy_poll_time(&self) -> Duration {
        self.busy_poll.unwrap_or_else(|| {
            match std::thread::available_parallelism().map_or(1, std::num::NonZero::get) {
                1 => Duration::ZERO,
                _ => DEFAULT_BUSY_POLL,
            }
        })
    }

    /// The socket directory.
    pub fn socket_directory(&self) -> &Path {
        &self.socket_directory
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("socket_directory", &self.socket_directory)
            .field("pidfile", &self.pidfile)
            .field("on_master_start", &self.on_master_start.is_some())
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("kill_grace", &self.kill_grace)
            .field("warm_workers", &self.warm_workers)
            .field("zygote", &self.zygote)
            .field("busy_poll", &self.busy_poll)
            .finish()
    }
}
