//! What a coordinator counts and checks, added up by the root process.

use serde::{Deserialize, Serialize};

/// How many failure messages a tally keeps (the rest are only counted).
const KEPT_FAILURES: usize = 20;

/// The kinds of fault the mix injects, as indexes of [`Tally::injected`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The body panics.
    Panic = 0,
    /// The body calls `std::process::exit` (with a code from 0 to 255).
    Exit = 1,
    /// Another worker kills the body's process with SIGKILL.
    Sigkill = 2,
    /// The body's process dies of SIGSEGV.
    Sigsegv = 3,
    /// The body outlives its starter, which returns without joining it.
    Outlive = 4,
    /// The body ends by one of the faults above while it holds a resource, which the master
    /// must release on its behalf (counted here, not under the fault itself).
    Holding = 5,
    /// The body writes what a worker must not to its channel (see `hostile.rs`).
    Hostile = 6,
}

/// The number of [`FaultKind`]s.
pub const FAULT_KINDS: usize = 7;

/// The names of the [`FaultKind`]s, by index.
pub const FAULT_NAMES: [&str; FAULT_KINDS] = [
    "panic",
    "exit(code)",
    "SIGKILL by another worker",
    "SIGSEGV",
    "outlives its joiner",
    "dies holding resources",
    "hostile peer (bad frames)",
];

/// The kinds of object the mix creates, as indexes of [`Tally::created`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// A POSIX shm object registered with `manage_shm`.
    Shm = 0,
    /// Preallocated shm (`create_preallocated_shm`).
    Preallocated = 1,
    /// A named semaphore registered with `manage_sem`.
    Sem = 2,
    /// A file registered with `manage_file`.
    File = 3,
    /// A segment of a structure in shared memory (`netmcore::shared`).
    Segment = 4,
}

/// The number of [`ObjectKind`]s.
pub const OBJECT_KINDS: usize = 5;

/// The names of the [`ObjectKind`]s, by index.
pub const OBJECT_NAMES: [&str; OBJECT_KINDS] = [
    "shm (manage_shm)",
    "preallocated shm",
    "semaphores",
    "files",
    "segments (netmcore::shared)",
];

/// The short names of the actions, for `--without`, by index of [`ACTION_NAMES`].
pub const ACTION_KEYS: [&str; 17] = [
    "plain", "nowait", "fault", "kill", "nest", "shm", "prealloc", "sem", "file", "misuse",
    "hostile", "mutex", "churn", "claims", "barrier", "channel", "pipe",
];

/// The kinds of action a coordinator draws, as indexes of [`Tally::actions`].
pub const ACTION_NAMES: [&str; 17] = [
    "plain start+join",
    "plain join_nowait",
    "fault",
    "kill pair",
    "nested",
    "shm churn",
    "preallocated shm",
    "semaphore traffic",
    "file churn",
    "calls made wrong",
    "hostile peer",
    "shared mutex",
    "mutex churn",
    "shared vector claims",
    "shared barrier",
    "shared channel",
    "shared pipe",
];

/// The counts of a coordinator (or, summed, of the whole run).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Tally {
    /// Processes started, nested ones included (what the budget counts).
    pub processes: u64,
    /// Results checked against what they should be.
    pub checked: u64,
    /// Faults injected, by [`FaultKind`].
    pub injected: [u64; FAULT_KINDS],
    /// Faults after which every check passed, by [`FaultKind`].
    pub survived: [u64; FAULT_KINDS],
    /// Objects created, by [`ObjectKind`].
    pub created: [u64; OBJECT_KINDS],
    /// Semaphore posts and waits.
    pub sem_ops: u64,
    /// Locks of shared mutexes found poisoned (taken over from a holder that died, or
    /// poisoned by a panic).
    pub takeovers: u64,
    /// Locks of shared mutexes taken.
    pub lock_ops: u64,
    /// Claims of shared vectors and matrices granted.
    pub claims: u64,
    /// Claims refused as overlapping a live claim of another process.
    pub overlaps: u64,
    /// Claims of holders that died holding them (no unwinding), found released.
    pub dead_claims: u64,
    /// Rounds of shared barriers completed.
    pub rounds: u64,
    /// Shared barriers broken by a participant's death.
    pub broken: u64,
    /// Messages that came through shared channels.
    pub messages: u64,
    /// Bytes that came through shared pipes, each checked.
    pub piped: u64,
    /// Broken pipes seen by the survivor of a death.
    pub pipe_breaks: u64,
    /// Actions drawn, by the index of [`ACTION_NAMES`].
    pub actions: [u64; ACTION_NAMES.len()],
    /// Waves run.
    pub waves: u64,
    /// The first failure messages.
    pub failures: Vec<String>,
    /// Failed checks in all.
    pub failure_count: u64,
}

impl Tally {
    /// Records a failed check.
    pub fn fail(&mut self, message: String) {
        crate::shared::add(crate::shared::Counter::Failures, 1);
        self.failure_count += 1;
        if self.failures.len() < KEPT_FAILURES {
            self.failures.push(message);
        }
    }

    /// Records a passed check.
    pub fn pass(&mut self) {
        crate::shared::add(crate::shared::Counter::Checked, 1);
        self.checked += 1;
    }

    /// Adds `other` to this tally.
    pub fn merge(&mut self, other: Tally) {
        self.processes += other.processes;
        self.checked += other.checked;
        add_all(&mut self.injected, &other.injected);
        add_all(&mut self.survived, &other.survived);
        add_all(&mut self.created, &other.created);
        self.sem_ops += other.sem_ops;
        self.takeovers += other.takeovers;
        self.lock_ops += other.lock_ops;
        self.claims += other.claims;
        self.overlaps += other.overlaps;
        self.dead_claims += other.dead_claims;
        self.rounds += other.rounds;
        self.broken += other.broken;
        self.messages += other.messages;
        self.piped += other.piped;
        self.pipe_breaks += other.pipe_breaks;
        add_all(&mut self.actions, &other.actions);
        self.waves += other.waves;
        self.failure_count += other.failure_count;
        for f in other.failures {
            if self.failures.len() < KEPT_FAILURES {
                self.failures.push(f);
            }
        }
    }
}

fn add_all(sum: &mut [u64], other: &[u64]) {
    for (s, o) in sum.iter_mut().zip(other) {
        *s += o;
    }
}
