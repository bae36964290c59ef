//! The process-global state: which role this process plays, the process types defined so
//! far, and (in the master) the master itself.
//!
//! The role is an atomic read first by every call, so that a worker never touches the
//! master's lock: a worker is forked while the master holds it, and in the child it stays
//! locked for good. The master is single-threaded and never calls user code while it holds
//! the lock in its event loop; before the loop (its hook and `first_process`) every call
//! takes the lock for its own duration.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

use netmcore_encap::Encap;
use netmcore_ipc::shm::SharedMemory;
use netmcore_resources::{Registry, ResId};

use crate::master::Master;

/// The body of a process type, as `def_process` registered it.
pub(crate) type Body = Arc<dyn Fn(Encap) -> Encap + Send + Sync>;

/// What role the calling process plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// Before `startup`/`run`, or after it returned: process types may be defined.
    PreStartup,
    /// Inside `startup`/`run`: the master (its hook and `first_process`).
    Master,
    /// A process started with `start`, forked from the master.
    Worker,
}

const PRE_STARTUP: u8 = 0;
const MASTER: u8 = 1;
const WORKER: u8 = 2;

static ROLE: AtomicU8 = AtomicU8::new(PRE_STARTUP);

/// The role of the calling process.
///
/// ```
/// use netmcore_master::{Role, role};
/// assert_eq!(role(), Role::PreStartup);
/// ```
pub fn role() -> Role {
    match ROLE.load(Ordering::Acquire) {
        MASTER => Role::Master,
        WORKER => Role::Worker,
        _ => Role::PreStartup,
    }
}

pub(crate) fn set_role(role: Role) {
    let value = match role {
        Role::PreStartup => PRE_STARTUP,
        Role::Master => MASTER,
        Role::Worker => WORKER,
    };
    ROLE.store(value, Ordering::Release);
}

/// The process types: the registry that numbers them (and, in the master, everything
/// else), the body of each fork point, and the preallocated shared memory mapped here.
pub(crate) struct Definitions {
    pub(crate) registry: Registry<Encap>,
    pub(crate) bodies: BTreeMap<ResId, Body>,
    /// The preallocated shm this process mapped (before `startup` or as the master): every
    /// live one, and the destroyed ones whose mapping was handed out here (it outlives the
    /// name). A destroyed one nobody here holds is removed and unmapped; a worker forked later
    /// revokes every entry it does not inherit.
    pub(crate) mappings: BTreeMap<ResId, Mapped>,
    /// Counts the changes of what a forked worker can see of the definitions: a body defined
    /// or dropped, a preallocated shm mapped (an unmapped one needs no change: a worker
    /// revokes every mapping it does not inherit). A warm worker forked at an older
    /// generation is stale and is never handed a process.
    pub(crate) generation: u64,
}

/// A preallocated shm mapped in this process.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mapped {
    pub(crate) memory: SharedMemory,
    /// Whether `get_resource` handed the mapping out in this process (before `startup` or in
    /// the master): user code may hold it, so it is never unmapped here.
    pub(crate) handed_out: bool,
}

impl Definitions {
    fn new() -> Definitions {
        Definitions {
            registry: Registry::new(),
            bodies: BTreeMap::new(),
            mappings: BTreeMap::new(),
            generation: 0,
        }
    }

    /// Records a change of what a forked worker can see (see `generation`).
    pub(crate) fn changed(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }
}

/// Where the state is.
pub(crate) enum Phase {
    /// No master runs: the definitions wait for `startup`.
    Idle(Definitions),
    /// A master runs in this process.
    Running(Box<Master>),
    /// `startup` is moving the definitions into a master.
    Moving,
}

static STATE: LazyLock<Mutex<Phase>> =
    LazyLock::new(|| Mutex::new(Phase::Idle(Definitions::new())));

/// Locks the state. A panic while it was held (in user code called by the master, say)
/// leaves it consistent, so poisoning is ignored.
pub(crate) fn lock() -> MutexGuard<'static, Phase> {
    STATE.lock().unwrap_or_else(PoisonError::into_inner)
}
