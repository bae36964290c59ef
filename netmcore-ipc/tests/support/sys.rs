//! Forking for the multi-process tests.
//!
//! # Safety
//!
//! `fork` is only sound here because the callers are single-threaded: the test binaries using
//! this module have `harness = false`, and their cases fork from the main thread (or from a
//! child that is itself single-threaded). The child runs its closure and leaves with `exit`,
//! never returning into the caller's stack.

use nix::unistd::{ForkResult, fork};
use rustix::process::{Pid, Signal, WaitOptions, kill_process, waitpid};

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// It called `_exit` or returned with this code.
    Exited(i32),
    /// It was killed by this signal number.
    Signaled(i32),
}

/// A forked child that has not been waited for yet.
#[derive(Debug)]
pub struct Child {
    /// The child's Unix pid.
    pub pid: i32,
}

/// The end of a child: its pid and how it ended.
#[derive(Debug)]
pub struct Outcome {
    /// The child's Unix pid.
    pub pid: i32,
    /// How it ended.
    pub status: Status,
}

/// Forks; the child runs `body` and exits with its return value (101 if it panics).
pub fn fork_child(body: impl FnOnce() -> i32) -> Child {
    // SAFETY: the callers are single-threaded (see the module's safety contract), so the child
    // owns a consistent copy of the whole address space, and it leaves through `exit` below.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Parent { child } => Child {
            pid: child.as_raw(),
        },
        ForkResult::Child => {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(101);
            std::process::exit(code)
        }
    }
}

impl Child {
    fn rustix_pid(&self) -> Pid {
        Pid::from_raw(self.pid).expect("a child pid is positive")
    }

    /// Waits for the child to end and reaps it.
    pub fn wait(self) -> Outcome {
        let (_, status) = waitpid(Some(self.rustix_pid()), WaitOptions::empty())
            .expect("waitpid")
            .expect("a blocking waitpid returns a status");
        let status = if let Some(code) = status.exit_status() {
            Status::Exited(code)
        } else {
            Status::Signaled(status.terminating_signal().unwrap_or(0))
        };
        Outcome {
            pid: self.pid,
            status,
        }
    }

    /// Sends SIGKILL to the child (it still has to be waited for).
    pub fn kill(&self) {
        let _ = kill_process(self.rustix_pid(), Signal::KILL);
    }
}

/// Gives `SIGPIPE` its default disposition (the process dies of it) in this process: for a
/// case, which runs in a process of its own, that checks nothing raises it.
pub fn default_sigpipe() {
    // SAFETY: installs no handler; the callers are single-threaded (see above).
    let before = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    assert_ne!(before, libc::SIG_ERR, "signal(SIGPIPE, SIG_DFL)");
}
