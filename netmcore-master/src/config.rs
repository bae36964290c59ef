//! The configuration of a master: [`Config`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::Result;

/// A hook run in the master once it holds its socket directory, before the first process
/// starts (the seed's `init_ctrl`).
pub(crate) type Hook = Box<dyn FnOnce() -> Result<()>>;

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
            .finish()
    }
}
