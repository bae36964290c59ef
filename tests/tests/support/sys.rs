//! Forking for the multi-process scenarios.
//!
//! # Safety
//!
//! `fork` is only sound here because every caller is single-threaded: the test binaries using
//! this module have `harness = false`, their `main` forks one child per scenario from the main
//! thread, and a scenario forks only before it calls `startup` (a process that has not become a
//! master yet is still single-threaded) or from a child that is itself single-threaded. A child
//! runs its closure and leaves with `exit`, never returning into the caller's stack.

use nix::unistd::{ForkResult, fork};
use rustix::process::{Pid, WaitOptions, waitpid};

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// It called `exit` or returned with this code.
    Exited(i32),
    /// It was killed by this signal number.
    Signaled(i32),
}

impl Status {
    /// Converts a raw wait status.
    pub fn from_wait(status: rustix::process::WaitStatus) -> Status {
        match status.exit_status() {
            Some(code) => Status::Exited(code),
            None => Status::Signaled(status.terminating_signal().unwrap_or(0)),
        }
    }
}

/// A forked child that has not been waited for yet.
#[derive(Debug)]
pub struct Child {
    /// The child's Unix pid.
    pub pid: i32,
}

/// Forks; the child runs `body` and exits with its return value (101 if it panics).
pub fn fork_child(body: impl FnOnce() -> i32) -> Child {
    // SAFETY: the caller is single-threaded (see the module's safety contract), so the child
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

/// Forks a process that is nobody's child: an intermediate child forks the process that runs
/// `body` and exits at once, so the process is adopted by the nearest subreaper (the test
/// binary's `main`) and never by a master running in the caller. Returns once the intermediate
/// child has been reaped.
pub fn fork_detached(body: impl FnOnce() -> i32) {
    let intermediate = fork_child(|| {
        fork_child(body);
        0
    });
    let pid = Pid::from_raw(intermediate.pid).expect("a child pid is positive");
    waitpid(Some(pid), WaitOptions::empty()).expect("waitpid of the intermediate child");
}

impl Child {
    /// The child's pid as rustix wants it.
    pub fn rustix_pid(&self) -> Pid {
        Pid::from_raw(self.pid).expect("a child pid is positive")
    }

    /// Waits for the child to end and reaps it.
    pub fn wait(self) -> Status {
        let (_, status) = waitpid(Some(self.rustix_pid()), WaitOptions::empty())
            .expect("waitpid")
            .expect("a blocking waitpid returns a status");
        Status::from_wait(status)
    }
}

/// A copy of this worker's channel to the master (its only socket), for a scenario that
/// writes to the master what the API never would.
pub fn own_channel() -> anyhow::Result<netmcore_ipc::channel::Channel> {
    let sockets: Vec<i32> = netmcore_tests::procs::open_fds()
        .into_iter()
        .filter(|(_, target)| target.starts_with("socket:"))
        .filter_map(|(fd, _)| i32::try_from(fd).ok())
        .collect();
    let [fd] = sockets.as_slice() else {
        anyhow::bail!("expected one socket (the channel), found {sockets:?}");
    };
    // SAFETY: `fd` is open (listed in /proc/self/fd just now) and stays open while it is
    // borrowed: the worker's own client holds it, and nothing closes it during the `dup`.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(*fd) };
    let copy = rustix::io::fcntl_dupfd_cloexec(borrowed, 0)?;
    Ok(netmcore_ipc::channel::Channel::from_fd(copy)?)
}
