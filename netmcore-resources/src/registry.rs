//! The master's registry: which resources exist and who uses them, which processes run, which
//! have finished with which result, and who waits in `join` for whom.
//!
//! [`Registry`] is a pure state machine. It makes no system call and does no I/O: each
//! operation updates the bookkeeping and returns what the caller (the master's event loop) must
//! do next, as values:
//!
//! * [`Destroy`]: the last user of an object let go, so unlink it (a file, a POSIX shm or
//!   semaphore) or drop it (a fork or join point). The entry is already gone from the registry.
//! * [`Wake`]: a process waiting in `join` can now be answered with the joined process's result.
//! * [`JoinOutcome::Deferred`]: do not answer this `join` now; a later [`Registry::finished`]
//!   returns the [`Wake`] for it.
//!
//! Every call says on whose behalf it is made, as a [`Holder`]: the master itself (including
//! the program before `startup`) or a running worker process. A call on behalf of a process the
//! registry does not know as running is refused with [`RegistryError::UnknownProcess`], so that
//! a request still queued from a worker that has already been reaped cannot leave behind a user
//! that nobody would ever release.
//!
//! # Rules
//!
//! * Resource ids and process ids are separate counters that start at 0 and are never reused,
//!   not even after the object is destroyed.
//! * The users of a resource are a set: a process that fetches a resource twice and releases it
//!   once no longer uses it. The master becomes a user only of what it registers itself and of
//!   the fork and join points of [`Registry::def_process`]; its [`Registry::get`] is a lookup.
//! * When a process finishes (in any way), every resource it used is released on its behalf.
//! * A process can be joined once, through the join point of its own type. A finished process
//!   keeps its result until it is joined, or until its join point is destroyed (then nobody can
//!   join it any more and it is forgotten).
//! * Preallocated shared memory reaches a process only by inheritance at [`Registry::start`]; a
//!   process that did not inherit it gets [`RegistryError::NotShared`] from `get`. Inheriting
//!   does not make the process a user: its mapping outlives the object's name anyway.
//! * Registering the same OS object twice gives two independent ids (as in OCamlnet); the
//!   registry does not compare names.
//!
//! # Cost
//!
//! Lookups are `O(log n)` in the number of resources or processes. [`Registry::finished`] also
//! walks the resources the process used, and destroying a join point walks the finished,
//! not yet joined processes of its type. Nothing scans the whole registry except the
//! introspection iterators and [`Registry::shutdown`].
//!
//! # Example
//!
//! ```
//! use netmcore_resources::registry::{Destroy, Holder, Registry, RegistryError};
//! use netmcore_resources::{ResId, ResourceDesc};
//!
//! let mut registry: Registry = Registry::new();
//! let sem = registry.register(ResourceDesc::PosixSem("/app-lock".into()), Holder::Master)?;
//! assert_eq!(sem, ResId(0));
//!
//! // Names are checked before anything is recorded.
//! let bad = registry.register(ResourceDesc::PosixShm("no-slash".into()), Holder::Master);
//! assert_eq!(bad, Err(RegistryError::InvalidName("no-slash".into())));
//!
//! // The last user lets go: the caller is told to unlink the semaphore.
//! let destroy = registry.release(sem, Holder::Master);
//! assert_eq!(destroy, Some(Destroy { id: sem, desc: ResourceDesc::PosixSem("/app-lock".into()) }));
//! assert!(registry.is_empty());
//! # Ok::<(), RegistryError>(())
//! ```

use std::collections::btree_map::Entry as MapEntry;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::mem;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::ids::{Inherit, ProcessId, ResId, ResourceDesc, ResourceKind};

/// The longest valid POSIX shared memory name in bytes, leading `/` included.
///
/// Linux keeps the objects as files in `/dev/shm`, so the name after the slash is bounded by
/// `NAME_MAX` (255); counting the slash as well keeps a margin and matches what other systems
/// accept.
pub const SHM_NAME_MAX: usize = 255;

/// The longest valid POSIX semaphore name in bytes, leading `/` included.
///
/// glibc stores a named semaphore as `/dev/shm/sem.<name>`, so four bytes of `NAME_MAX` are
/// taken by the `sem.` prefix.
pub const SEM_NAME_MAX: usize = 251;

/// Who uses a resource or makes a call: the master or one of its worker processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Holder {
    /// The master process, or the program before `startup` (which becomes the master).
    Master,
    /// A worker process, by its netmcore process id.
    Process(ProcessId),
}

impl From<ProcessId> for Holder {
    fn from(pid: ProcessId) -> Holder {
        Holder::Process(pid)
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Holder::Master => f.write_str("master"),
            Holder::Process(pid) => pid.fmt(f),
        }
    }
}

/// Why a registry operation was refused. A refused operation changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The id names no live resource (never allocated, or already destroyed), or it names a
    /// resource of the wrong kind where a fork or join point was required.
    #[error("no such resource: {0}")]
    NoResource(ResId),
    /// The process is not known as it would have to be: not running when it makes a call, or
    /// not joinable by this `join` (unknown, already joined, already awaited by another joiner,
    /// of another process type, or the caller itself).
    #[error("unknown process: {0}")]
    UnknownProcess(ProcessId),
    /// The resource exists but is not of the kind the caller asked for.
    #[error("wrong kind of resource: {id} is a {found}, expected a {expected}")]
    WrongKind {
        /// The resource asked for.
        id: ResId,
        /// The kind the caller asked for.
        expected: ResourceKind,
        /// The kind the resource has.
        found: ResourceKind,
    },
    /// The resource is preallocated shared memory that the calling process did not inherit,
    /// so it has no mapping of it.
    #[error("not shared: {0} is preallocated shared memory this process did not inherit")]
    NotShared(ResId),
    /// A name or path that cannot name the object (see [`validate_desc`]).
    #[error("invalid name: {0:?}")]
    InvalidName(String),
    /// Fork and join points are made by [`Registry::def_process`], never registered.
    #[error("a {0} cannot be registered, only defined with def_process")]
    NotRegistrable(ResourceKind),
}

/// An object whose last user let go: the caller must destroy it.
///
/// For a file, a POSIX shm (preallocated or not) or a POSIX semaphore, that means unlinking
/// the name in `desc`; for a fork or join point, dropping whatever the caller keeps for it.
/// The registry has already forgotten `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destroy {
    /// The id the object had.
    pub id: ResId,
    /// What the object was.
    pub desc: ResourceDesc,
}

/// A process waiting in `join` must now be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wake<R> {
    /// The process waiting in `join`.
    pub joiner: ProcessId,
    /// The process it joined, which has finished and is now forgotten.
    pub target: ProcessId,
    /// The join point the joiner named.
    pub join_point: ResId,
    /// The target's result: `None` if it panicked, exited, or was killed.
    pub result: Option<R>,
}

/// Something the caller must do after [`Registry::finished`].
///
/// This enum is deliberately not `#[non_exhaustive]`: the caller must handle every action, and a
/// new one should break its `match` rather than fall into a wildcard arm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<R> {
    /// Destroy an object whose last user was the finished process.
    Destroy(Destroy),
    /// Answer a process that waited in `join` for the finished process.
    Wake(Wake<R>),
}

/// What the caller of [`Registry::start`] needs to fork the new process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// The new process's id.
    pub pid: ProcessId,
    /// The join point of its type, through which it can be joined (it may already be
    /// destroyed, if its users released it: then nobody can join the process).
    pub join_point: ResId,
    /// The preallocated shared memory it inherits, by id order: the child keeps exactly these
    /// mappings.
    pub inherited: Vec<(ResId, ResourceDesc)>,
}

/// The answer to [`Registry::join`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinOutcome<R> {
    /// The process had finished; here is its result (`None` if it panicked, exited or was
    /// killed). It is now forgotten.
    Ready(Option<R>),
    /// The process is still running; the joiner is recorded and [`Registry::finished`] will
    /// return a [`Wake`] for it.
    Deferred,
}

/// Where a known process stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProcessState {
    /// Started and not yet reported finished.
    Running,
    /// Finished, its result kept until it is joined.
    Finished {
        /// Whether it left a result (its body returned) or not (it panicked, exited, was killed).
        has_result: bool,
    },
}

/// Checks that `desc` may be registered with [`Registry::register`]: its name must be able to
/// name the object, and it must not be a fork or join point.
///
/// See [`validate_file_path`], [`validate_shm_name`] and [`validate_sem_name`] for the rules;
/// a preallocated shm follows the shm rules.
///
/// # Errors
///
/// [`RegistryError::InvalidName`] for a bad name, [`RegistryError::NotRegistrable`] for a fork
/// or join point.
pub fn validate_desc(desc: &ResourceDesc) -> Result<(), RegistryError> {
    match desc {
        ResourceDesc::File(path) => validate_file_path(path),
        ResourceDesc::PosixSem(name) => validate_sem_name(name),
        ResourceDesc::PosixShm(name) | ResourceDesc::PosixShmPreallocated { name, .. } => {
            validate_shm_name(name)
        }
        ResourceDesc::ForkPoint { .. } | ResourceDesc::JoinPoint { .. } => {
            Err(RegistryError::NotRegistrable(desc.kind()))
        }
    }
}

/// Checks a file path: it must be absolute and contain no NUL byte (which no system call
/// accepts).
///
/// # Errors
///
/// [`RegistryError::InvalidName`] with the path (lossily converted to UTF-8).
pub fn validate_file_path(path: &Path) -> Result<(), RegistryError> {
    if path.is_absolute() && !path.as_os_str().as_encoded_bytes().contains(&0) {
        Ok(())
    } else {
        Err(RegistryError::InvalidName(
            path.to_string_lossy().into_owned(),
        ))
    }
}

/// Checks a POSIX shared memory name: a `/` followed by at least one byte, with no further `/`
/// and no NUL, not `/.` or `/..`, at most [`SHM_NAME_MAX`] bytes in all.
///
/// # Errors
///
/// [`RegistryError::InvalidName`] with the name.
pub fn validate_shm_name(name: &str) -> Result<(), RegistryError> {
    validate_posix_name(name, SHM_NAME_MAX)
}

/// Checks a POSIX semaphore name: the rules of [`validate_shm_name`] with a limit of
/// [`SEM_NAME_MAX`] bytes.
///
/// # Errors
///
/// [`RegistryError::InvalidName`] with the name.
pub fn validate_sem_name(name: &str) -> Result<(), RegistryError> {
    validate_posix_name(name, SEM_NAME_MAX)
}

fn validate_posix_name(name: &str, max: usize) -> Result<(), RegistryError> {
    let valid = match name.strip_prefix('/') {
        Some(rest) => {
            !rest.is_empty()
                && rest != "."
                && rest != ".."
                && !rest.contains(['/', '\0'])
                && name.len() <= max
        }
        None => false,
    };
    if valid {
        Ok(())
    } else {
        Err(RegistryError::InvalidName(name.to_owned()))
    }
}

/// A live resource.
#[derive(Debug, Clone)]
struct Resource {
    desc: ResourceDesc,
    users: BTreeSet<Holder>,
}

/// A process that has been started and not yet reported finished.
#[derive(Debug, Clone)]
struct Running {
    join_point: ResId,
    started_by: Holder,
    /// The preallocated shm it inherited (ids may have been destroyed since).
    inherited: BTreeSet<ResId>,
    /// The resources it is a user of; kept equal to the resources whose users contain it.
    used: BTreeSet<ResId>,
    /// The process waiting in `join` for this one.
    waiter: Option<ProcessId>,
    /// The processes this one waits for in `join`; several if it has threads. Kept equal to
    /// the running processes whose `waiter` is this one.
    awaiting: BTreeSet<ProcessId>,
}

/// A finished process whose result nobody has joined yet. It has no waiter: a waiter is woken
/// when the process finishes.
#[derive(Debug, Clone)]
struct Finished<R> {
    join_point: ResId,
    started_by: Holder,
    result: Option<R>,
}

/// The master's state: resources and their users, processes and their joiners.
///
/// `R` is the opaque result a finished process passes back (the master uses an `Encap`). See
/// the [module documentation](self) for the rules and an example.
#[derive(Debug, Clone)]
pub struct Registry<R = Vec<u8>> {
    next_res: u64,
    next_pid: u64,
    resources: BTreeMap<ResId, Resource>,
    /// The live preallocated shm, for `Inherit::All`.
    preallocated: BTreeSet<ResId>,
    running: BTreeMap<ProcessId, Running>,
    finished: BTreeMap<ProcessId, Finished<R>>,
    /// `finished` by join point, so that destroying a join point finds its processes.
    finished_by_join_point: BTreeSet<(ResId, ProcessId)>,
}

impl<R> Default for Registry<R> {
    fn default() -> Self {
        Registry::new()
    }
}

impl<R> Registry<R> {
    /// An empty registry: the first resource id and the first process id will both be 0.
    pub fn new() -> Registry<R> {
        Registry {
            next_res: 0,
            next_pid: 0,
            resources: BTreeMap::new(),
            preallocated: BTreeSet::new(),
            running: BTreeMap::new(),
            finished: BTreeMap::new(),
            finished_by_join_point: BTreeSet::new(),
        }
    }

    fn alloc_res(&mut self) -> ResId {
        let id = ResId(self.next_res);
        self.next_res += 1;
        id
    }

    fn insert(&mut self, id: ResId, desc: ResourceDesc, user: Holder) {
        if let ResourceDesc::PosixShmPreallocated { .. } = desc {
            self.preallocated.insert(id);
        }
        if let Holder::Process(pid) = user
            && let Some(running) = self.running.get_mut(&pid)
        {
            running.used.insert(id);
        }
        self.resources.insert(
            id,
            Resource {
                desc,
                users: BTreeSet::from([user]),
            },
        );
    }

    /// Refuses a call on behalf of a process that is not running.
    fn check_caller(&self, by: Holder) -> Result<(), RegistryError> {
        match by {
            Holder::Process(pid) if !self.running.contains_key(&pid) => {
                Err(RegistryError::UnknownProcess(pid))
            }
            _ => Ok(()),
        }
    }

    fn is_join_point(&self, id: ResId) -> bool {
        matches!(
            self.resources.get(&id),
            Some(Resource {
                desc: ResourceDesc::JoinPoint { .. },
                ..
            })
        )
    }

    /// Defines a process type (the seed's `def_process`): allocates two consecutive resource
    /// ids, a fork point `n` and its join point `n + 1`, whose user is the master.
    pub fn def_process(&mut self) -> (ResId, ResId) {
        let fork_point = self.alloc_res();
        let join_point = self.alloc_res();
        self.insert(
            fork_point,
            ResourceDesc::ForkPoint { join_point },
            Holder::Master,
        );
        self.insert(
            join_point,
            ResourceDesc::JoinPoint { fork_point },
            Holder::Master,
        );
        (fork_point, join_point)
    }

    /// Registers an object (`manage_file`, `manage_shm`, `manage_sem`,
    /// `create_preallocated_shm`) and returns its new id; `by` is its only user.
    ///
    /// # Errors
    ///
    /// Nothing is recorded and no id is used up when:
    ///
    /// * `by` is a process that is not running: [`RegistryError::UnknownProcess`];
    /// * the name is invalid ([`validate_desc`]): [`RegistryError::InvalidName`];
    /// * `desc` is a fork or join point: [`RegistryError::NotRegistrable`].
    pub fn register(&mut self, desc: ResourceDesc, by: Holder) -> Result<ResId, RegistryError> {
        self.check_caller(by)?;
        validate_desc(&desc)?;
        let id = self.alloc_res();
        self.insert(id, desc, by);
        Ok(id)
    }

    /// Looks up a resource (`get_resource`). A process becomes one of its users (once, however
    /// often it asks); the master only looks it up.
    ///
    /// # Errors
    ///
    /// * `by` is a process that is not running: [`RegistryError::UnknownProcess`];
    /// * `id` is not a live resource: [`RegistryError::NoResource`];
    /// * it is preallocated shared memory that the calling process did not inherit:
    ///   [`RegistryError::NotShared`], and the process does not become a user.
    pub fn get(&mut self, id: ResId, by: Holder) -> Result<&ResourceDesc, RegistryError> {
        self.lookup(id, by, None)
    }

    /// [`get`](Registry::get) for a resource that must be of kind `expected` (`get_file`,
    /// `get_shm`, `get_sem`).
    ///
    /// # Errors
    ///
    /// Those of [`get`](Registry::get), and [`RegistryError::WrongKind`] when the resource is
    /// of another kind (checked before [`RegistryError::NotShared`]; the caller does not become
    /// a user).
    pub fn get_kind(
        &mut self,
        id: ResId,
        by: Holder,
        expected: ResourceKind,
    ) -> Result<&ResourceDesc, RegistryError> {
        self.lookup(id, by, Some(expected))
    }

    fn lookup(
        &mut self,
        id: ResId,
        by: Holder,
        expected: Option<ResourceKind>,
    ) -> Result<&ResourceDesc, RegistryError> {
        let running = match by {
            Holder::Master => None,
            Holder::Process(pid) => Some(
                self.running
                    .get_mut(&pid)
                    .ok_or(RegistryError::UnknownProcess(pid))?,
            ),
        };
        let resource = self
            .resources
            .get_mut(&id)
            .ok_or(RegistryError::NoResource(id))?;
        let found = resource.desc.kind();
        if let Some(expected) = expected
            && expected != found
        {
            return Err(RegistryError::WrongKind {
                id,
                expected,
                found,
            });
        }
        if let Some(running) = running {
            if found == ResourceKind::PosixShmPreallocated && !running.inherited.contains(&id) {
                return Err(RegistryError::NotShared(id));
            }
            running.used.insert(id);
            resource.users.insert(by);
        }
        Ok(&resource.desc)
    }

    /// Removes `by` from the users of `id`. When no user remains, the resource is removed and
    /// returned for destruction.
    ///
    /// An unknown id, or a caller that is not a user, is ignored: `None`, nothing changes.
    /// When a join point is destroyed, the finished processes of its type that nobody joined
    /// are forgotten with it; its running processes are forgotten when they finish (unless a
    /// joiner already waits for them, which is still woken).
    #[must_use = "a returned resource must be destroyed by the caller"]
    pub fn release(&mut self, id: ResId, by: Holder) -> Option<Destroy> {
        let resource = self.resources.get_mut(&id)?;
        if !resource.users.remove(&by) {
            return None;
        }
        let last = resource.users.is_empty();
        if let Holder::Process(pid) = by
            && let Some(running) = self.running.get_mut(&pid)
        {
            running.used.remove(&id);
        }
        last.then(|| self.destroy(id)).flatten()
    }

    /// Removes a resource that has no users left.
    fn destroy(&mut self, id: ResId) -> Option<Destroy> {
        let Resource { desc, .. } = self.resources.remove(&id)?;
        match desc {
            ResourceDesc::PosixShmPreallocated { .. } => {
                self.preallocated.remove(&id);
            }
            ResourceDesc::JoinPoint { .. } => {
                // Nobody can join these any more.
                let orphans: Vec<_> = self
                    .finished_by_join_point
                    .range((id, ProcessId(0))..=(id, ProcessId(u64::MAX)))
                    .copied()
                    .collect();
                for key in orphans {
                    self.finished_by_join_point.remove(&key);
                    self.finished.remove(&key.1);
                }
            }
            _ => {}
        }
        Some(Destroy { id, desc })
    }

    /// Records the start of a process through `fork_point` on behalf of `by`, and returns its
    /// new id (the next of the process counter), its join point and what it inherits.
    ///
    /// `inherit` selects preallocated shared memory: [`Inherit::All`] is every live one,
    /// [`Inherit::Resources`] the listed ones (duplicates count once), [`Inherit::Nothing`]
    /// none. The caller must fork the process right away and report its end with
    /// [`finished`](Registry::finished).
    ///
    /// # Errors
    ///
    /// Nothing is recorded and no process id is used up when:
    ///
    /// * `by` is a process that is not running: [`RegistryError::UnknownProcess`];
    /// * `fork_point` is not a live fork point: [`RegistryError::NoResource`];
    /// * a listed id is not a live resource: [`RegistryError::NoResource`] with that id;
    /// * a listed id is not preallocated shared memory: [`RegistryError::WrongKind`] with
    ///   `expected` [`ResourceKind::PosixShmPreallocated`].
    ///
    /// The list is checked in order and the first bad id is reported.
    pub fn start(
        &mut self,
        fork_point: ResId,
        inherit: &Inherit,
        by: Holder,
    ) -> Result<Started, RegistryError> {
        self.check_caller(by)?;
        let join_point = match self.resources.get(&fork_point) {
            Some(Resource {
                desc: ResourceDesc::ForkPoint { join_point },
                ..
            }) => *join_point,
            _ => return Err(RegistryError::NoResource(fork_point)),
        };
        let inherited = match inherit {
            Inherit::Nothing => BTreeSet::new(),
            Inherit::All => self.preallocated.clone(),
            Inherit::Resources(ids) => {
                for &id in ids {
                    let resource = self
                        .resources
                        .get(&id)
                        .ok_or(RegistryError::NoResource(id))?;
                    let found = resource.desc.kind();
                    if found != ResourceKind::PosixShmPreallocated {
                        return Err(RegistryError::WrongKind {
                            id,
                            expected: ResourceKind::PosixShmPreallocated,
                            found,
                        });
                    }
                }
                ids.iter().copied().collect()
            }
        };
        let pid = ProcessId(self.next_pid);
        self.next_pid += 1;
        let inherited_descs = inherited
            .iter()
            .filter_map(|id| Some((*id, self.resources.get(id)?.desc.clone())))
            .collect();
        self.running.insert(
            pid,
            Running {
                join_point,
                started_by: by,
                inherited,
                used: BTreeSet::new(),
                waiter: None,
                awaiting: BTreeSet::new(),
            },
        );
        Ok(Started {
            pid,
            join_point,
            inherited: inherited_descs,
        })
    }

    /// Records that process `pid` ended, in any way; `result` is `None` if it panicked, exited
    /// or was killed.
    ///
    /// In this order: every resource it used is released on its behalf (each one it was the
    /// last user of comes back as [`Action::Destroy`], by id order); the joins it was itself
    /// waiting in are cancelled (their targets stay joinable); then, if a process waits in
    /// `join` for it, an [`Action::Wake`] carries the result and `pid` is forgotten. Otherwise
    /// the result is kept for a later `join` if its join point still exists, and `pid` is
    /// forgotten if not.
    ///
    /// A `pid` that is not running (unknown, or already reported finished) gives no actions.
    #[must_use = "the actions must be carried out by the caller"]
    pub fn finished(&mut self, pid: ProcessId, result: Option<R>) -> Vec<Action<R>> {
        let Some(running) = self.running.remove(&pid) else {
            return Vec::new();
        };
        let mut actions: Vec<Action<R>> = running
            .used
            .iter()
            .filter_map(|&id| self.release(id, Holder::Process(pid)))
            .map(Action::Destroy)
            .collect();
        for target in &running.awaiting {
            if let Some(target) = self.running.get_mut(target) {
                target.waiter = None;
            }
        }
        if let Some(joiner) = running.waiter {
            if let Some(joiner) = self.running.get_mut(&joiner) {
                joiner.awaiting.remove(&pid);
            }
            actions.push(Action::Wake(Wake {
                joiner,
                target: pid,
                join_point: running.join_point,
                result,
            }));
        } else if self.is_join_point(running.join_point) {
            self.finished_by_join_point
                .insert((running.join_point, pid));
            self.finished.insert(
                pid,
                Finished {
                    join_point: running.join_point,
                    started_by: running.started_by,
                    result,
                },
            );
        }
        actions
    }

    /// Joins process `pid` through `join_point` on behalf of the running process `by`.
    ///
    /// A finished process gives [`JoinOutcome::Ready`] with its result and is forgotten. A
    /// running one gives [`JoinOutcome::Deferred`]: `by` is recorded as its joiner and
    /// [`finished`](Registry::finished) will wake it (or cancel the wait if `by` ends first).
    ///
    /// # Errors
    ///
    /// Nothing changes when:
    ///
    /// * `by` is not running: [`RegistryError::UnknownProcess`] with `by`;
    /// * `join_point` is not a live join point: [`RegistryError::NoResource`];
    /// * `pid` is unknown or already joined, is `by` itself, belongs to another process type
    ///   (another join point), or another process already waits for it:
    ///   [`RegistryError::UnknownProcess`] with `pid`. In the last two cases it stays joinable
    ///   through its own join point, by its first joiner.
    pub fn join(
        &mut self,
        join_point: ResId,
        pid: ProcessId,
        by: ProcessId,
    ) -> Result<JoinOutcome<R>, RegistryError> {
        self.check_caller(Holder::Process(by))?;
        if !self.is_join_point(join_point) {
            return Err(RegistryError::NoResource(join_point));
        }
        if pid == by {
            return Err(RegistryError::UnknownProcess(pid));
        }
        if let MapEntry::Occupied(entry) = self.finished.entry(pid) {
            if entry.get().join_point != join_point {
                return Err(RegistryError::UnknownProcess(pid));
            }
            self.finished_by_join_point.remove(&(join_point, pid));
            return Ok(JoinOutcome::Ready(entry.remove().result));
        }
        let target = self
            .running
            .get_mut(&pid)
            .filter(|target| target.join_point == join_point && target.waiter.is_none())
            .ok_or(RegistryError::UnknownProcess(pid))?;
        target.waiter = Some(by);
        if let Some(joiner) = self.running.get_mut(&by) {
            joiner.awaiting.insert(pid);
        }
        Ok(JoinOutcome::Deferred)
    }

    /// Takes the result of `pid` if it has finished (`join_nowait`; the master may call it).
    ///
    /// A process that finished through `join_point` (a live join point) is forgotten and its
    /// result returned, `None` if it left none. Otherwise nothing changes and the answer is
    /// `None`: the process is running, unknown, already joined, or of another type, or
    /// `join_point` is not a live join point. This is never an error.
    #[must_use = "the result is forgotten by the registry"]
    pub fn join_nowait(&mut self, join_point: ResId, pid: ProcessId) -> Option<R> {
        if !self.is_join_point(join_point) {
            return None;
        }
        match self.finished.entry(pid) {
            MapEntry::Occupied(entry) if entry.get().join_point == join_point => {
                self.finished_by_join_point.remove(&(join_point, pid));
                entry.remove().result
            }
            _ => None,
        }
    }

    /// Removes every resource and returns them all for destruction, by id order (when the
    /// master stops, or for `destroy_resources`).
    ///
    /// Finished processes are forgotten with their join points. Running processes stay known,
    /// without resources, so that their end can still be reported with
    /// [`finished`](Registry::finished) (and their joiners woken). The counters go on: the
    /// registry stays usable and never reuses an id.
    #[must_use = "the returned resources must be destroyed by the caller"]
    pub fn shutdown(&mut self) -> Vec<Destroy> {
        let resources = mem::take(&mut self.resources);
        self.preallocated.clear();
        self.finished.clear();
        self.finished_by_join_point.clear();
        for running in self.running.values_mut() {
            running.used.clear();
        }
        resources
            .into_iter()
            .map(|(id, resource)| Destroy {
                id,
                desc: resource.desc,
            })
            .collect()
    }

    /// The live resource `id`, without becoming a user.
    pub fn resource(&self, id: ResId) -> Option<ResourceView<'_>> {
        self.resources
            .get(&id)
            .map(|resource| ResourceView { id, resource })
    }

    /// Every live resource, by id order.
    pub fn resources(&self) -> impl Iterator<Item = ResourceView<'_>> + '_ {
        self.resources
            .iter()
            .map(|(&id, resource)| ResourceView { id, resource })
    }

    /// The number of live resources.
    pub fn resource_count(&self) -> usize {
        self.resources.len()
    }

    /// The known process `pid`: running, or finished and not yet joined.
    pub fn process(&self, pid: ProcessId) -> Option<ProcessView<'_, R>> {
        if let Some(running) = self.running.get(&pid) {
            return Some(ProcessView {
                pid,
                inner: ProcessInner::Running(running),
            });
        }
        self.finished.get(&pid).map(|finished| ProcessView {
            pid,
            inner: ProcessInner::Finished(finished),
        })
    }

    /// Every known process: the running ones by id order, then the finished, not yet joined
    /// ones by id order.
    pub fn processes(&self) -> impl Iterator<Item = ProcessView<'_, R>> + '_ {
        let running = self.running.iter().map(|(&pid, running)| ProcessView {
            pid,
            inner: ProcessInner::Running(running),
        });
        let finished = self.finished.iter().map(|(&pid, finished)| ProcessView {
            pid,
            inner: ProcessInner::Finished(finished),
        });
        running.chain(finished)
    }

    /// The running processes, by id order (those the master must wait for before it stops).
    pub fn running_processes(&self) -> impl Iterator<Item = ProcessId> + '_ {
        self.running.keys().copied()
    }

    /// The number of running processes.
    pub fn running_count(&self) -> usize {
        self.running.len()
    }

    /// The number of known processes: running, or finished and not yet joined.
    pub fn process_count(&self) -> usize {
        self.running.len() + self.finished.len()
    }

    /// Whether the registry knows no resource and no process.
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty() && self.running.is_empty() && self.finished.is_empty()
    }
}

/// A live resource, as [`Registry::resources`] shows it.
#[derive(Debug, Clone, Copy)]
pub struct ResourceView<'a> {
    id: ResId,
    resource: &'a Resource,
}

impl<'a> ResourceView<'a> {
    /// Its id.
    pub fn id(&self) -> ResId {
        self.id
    }

    /// Its description.
    pub fn desc(&self) -> &'a ResourceDesc {
        &self.resource.desc
    }

    /// Its kind.
    pub fn kind(&self) -> ResourceKind {
        self.resource.desc.kind()
    }

    /// Its users, the master first, then processes by id order. Never empty.
    pub fn users(&self) -> impl Iterator<Item = Holder> + 'a {
        self.resource.users.iter().copied()
    }

    /// Whether `holder` is one of its users.
    pub fn is_used_by(&self, holder: Holder) -> bool {
        self.resource.users.contains(&holder)
    }
}

/// A known process, as [`Registry::processes`] shows it.
#[derive(Debug)]
pub struct ProcessView<'a, R> {
    pid: ProcessId,
    inner: ProcessInner<'a, R>,
}

#[derive(Debug)]
enum ProcessInner<'a, R> {
    Running(&'a Running),
    Finished(&'a Finished<R>),
}

impl<R> Clone for ProcessView<'_, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for ProcessView<'_, R> {}

impl<R> Clone for ProcessInner<'_, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for ProcessInner<'_, R> {}

impl<'a, R> ProcessView<'a, R> {
    fn running(&self) -> Option<&'a Running> {
        match self.inner {
            ProcessInner::Running(running) => Some(running),
            ProcessInner::Finished(_) => None,
        }
    }

    /// Its id.
    pub fn pid(&self) -> ProcessId {
        self.pid
    }

    /// Running, or finished with or without a result.
    pub fn state(&self) -> ProcessState {
        match self.inner {
            ProcessInner::Running(_) => ProcessState::Running,
            ProcessInner::Finished(finished) => ProcessState::Finished {
                has_result: finished.result.is_some(),
            },
        }
    }

    /// The join point of its type.
    pub fn join_point(&self) -> ResId {
        match self.inner {
            ProcessInner::Running(running) => running.join_point,
            ProcessInner::Finished(finished) => finished.join_point,
        }
    }

    /// Who started it.
    pub fn started_by(&self) -> Holder {
        match self.inner {
            ProcessInner::Running(running) => running.started_by,
            ProcessInner::Finished(finished) => finished.started_by,
        }
    }

    /// The process waiting in `join` for it, if any (never one for a finished process: its
    /// joiner was woken when it finished).
    pub fn waiter(&self) -> Option<ProcessId> {
        self.running().and_then(|running| running.waiter)
    }

    /// The processes it waits for in `join` (none once it has finished).
    pub fn awaiting(&self) -> impl Iterator<Item = ProcessId> + 'a {
        self.running()
            .into_iter()
            .flat_map(|running| running.awaiting.iter().copied())
    }

    /// The resources it uses, by id order (none once it has finished).
    pub fn used(&self) -> impl Iterator<Item = ResId> + 'a {
        self.running()
            .into_iter()
            .flat_map(|running| running.used.iter().copied())
    }

    /// The preallocated shared memory it inherited, by id order, including ids destroyed
    /// since (none once it has finished).
    pub fn inherited(&self) -> impl Iterator<Item = ResId> + 'a {
        self.running()
            .into_iter()
            .flat_map(|running| running.inherited.iter().copied())
    }

    /// Its result, if it has finished and left one.
    pub fn result(&self) -> Option<&'a R> {
        match self.inner {
            ProcessInner::Running(_) => None,
            ProcessInner::Finished(finished) => finished.result.as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    type Reg = Registry<u32>;

    fn shm(name: &str) -> ResourceDesc {
        ResourceDesc::PosixShm(name.into())
    }

    fn prealloc(name: &str) -> ResourceDesc {
        ResourceDesc::PosixShmPreallocated {
            name: name.into(),
            size: 4096,
        }
    }

    fn file(path: &str) -> ResourceDesc {
        ResourceDesc::File(PathBuf::from(path))
    }

    /// A registry with one process type and one running process started by the master.
    fn with_process() -> (Reg, ResId, ResId, ProcessId) {
        let mut reg = Reg::new();
        let (fork, join) = reg.def_process();
        let pid = reg
            .start(fork, &Inherit::Nothing, Holder::Master)
            .unwrap()
            .pid;
        (reg, fork, join, pid)
    }

    fn start(reg: &mut Reg, fork: ResId, by: Holder) -> ProcessId {
        reg.start(fork, &Inherit::Nothing, by).unwrap().pid
    }

    fn users(reg: &Reg, id: ResId) -> Vec<Holder> {
        reg.resource(id)
            .map(|r| r.users().collect())
            .unwrap_or_default()
    }

    #[test]
    fn ids_start_at_zero_and_a_process_type_takes_two_consecutive_ids() {
        let mut reg = Reg::new();
        assert_eq!(reg.def_process(), (ResId(0), ResId(1)));
        assert_eq!(reg.def_process(), (ResId(2), ResId(3)));
        let view = reg.resource(ResId(2)).unwrap();
        assert_eq!(
            view.desc(),
            &ResourceDesc::ForkPoint {
                join_point: ResId(3)
            }
        );
        assert_eq!(view.users().collect::<Vec<_>>(), [Holder::Master]);
        assert_eq!(
            reg.resource(ResId(3)).unwrap().desc(),
            &ResourceDesc::JoinPoint {
                fork_point: ResId(2)
            }
        );
    }

    #[test]
    fn resource_and_process_counters_are_separate() {
        let mut reg = Reg::new();
        let (fork, join) = reg.def_process();
        let first = reg.start(fork, &Inherit::Nothing, Holder::Master).unwrap();
        assert_eq!(first.pid, ProcessId(0));
        assert_eq!(first.join_point, join);
        assert_eq!(reg.register(shm("/a"), Holder::Master), Ok(ResId(2)));
        let second = start(&mut reg, fork, Holder::Process(first.pid));
        assert_eq!(second, ProcessId(1));
        assert_eq!(reg.register(shm("/b"), Holder::Master), Ok(ResId(3)));
    }

    #[test]
    fn ids_are_never_reused_after_release_or_join() {
        let (mut reg, fork, join, pid) = with_process();
        let a = reg.register(file("/tmp/a"), Holder::Master).unwrap();
        assert!(reg.release(a, Holder::Master).is_some());
        let b = reg.register(file("/tmp/a"), Holder::Master).unwrap();
        assert_ne!(a, b);
        assert_eq!(b, ResId(a.0 + 1));
        assert!(reg.finished(pid, Some(1)).is_empty());
        assert_eq!(reg.join_nowait(join, pid), Some(1));
        assert_eq!(start(&mut reg, fork, Holder::Master), ProcessId(pid.0 + 1));
        // Failed calls use up no id either.
        assert!(reg.register(shm("bad"), Holder::Master).is_err());
        assert!(
            reg.start(ResId(99), &Inherit::Nothing, Holder::Master)
                .is_err()
        );
        assert_eq!(reg.register(shm("/c"), Holder::Master), Ok(ResId(b.0 + 1)));
        assert_eq!(start(&mut reg, fork, Holder::Master), ProcessId(pid.0 + 2));
    }

    #[test]
    fn unknown_ids_are_no_resource() {
        let (mut reg, _fork, join, pid) = with_process();
        let nope = ResId(77);
        let me = Holder::Process(pid);
        assert_eq!(reg.get(nope, me), Err(RegistryError::NoResource(nope)));
        assert_eq!(
            reg.get(nope, Holder::Master),
            Err(RegistryError::NoResource(nope))
        );
        assert_eq!(
            reg.get_kind(nope, me, ResourceKind::File),
            Err(RegistryError::NoResource(nope))
        );
        assert_eq!(
            reg.start(nope, &Inherit::Nothing, me),
            Err(RegistryError::NoResource(nope))
        );
        // A live resource that is not a fork point cannot be started through.
        assert_eq!(
            reg.start(join, &Inherit::Nothing, me),
            Err(RegistryError::NoResource(join))
        );
        let other = start(&mut reg, ResId(0), Holder::Master);
        assert_eq!(
            reg.join(nope, other, pid),
            Err(RegistryError::NoResource(nope))
        );
        // A live resource that is not a join point cannot be joined through.
        assert_eq!(
            reg.join(ResId(0), other, pid),
            Err(RegistryError::NoResource(ResId(0)))
        );
    }

    #[test]
    fn users_are_a_set_get_twice_release_once_destroys() {
        let (mut reg, _, _, pid) = with_process();
        let me = Holder::Process(pid);
        let id = reg.register(shm("/x"), Holder::Master).unwrap();
        assert_eq!(reg.get(id, me), Ok(&shm("/x")));
        assert_eq!(reg.get(id, me), Ok(&shm("/x")));
        assert_eq!(users(&reg, id), [Holder::Master, me]);
        assert!(reg.release(id, Holder::Master).is_none());
        assert_eq!(
            reg.release(id, me),
            Some(Destroy {
                id,
                desc: shm("/x")
            })
        );
        assert!(reg.resource(id).is_none());
        assert_eq!(reg.get(id, me), Err(RegistryError::NoResource(id)));
        assert_eq!(reg.process(pid).unwrap().used().count(), 0);
    }

    #[test]
    fn a_resource_held_by_one_process_survives_another_fetching_and_releasing_it() {
        let (mut reg, fork, _, a) = with_process();
        let b = start(&mut reg, fork, Holder::Master);
        let id = reg
            .register(ResourceDesc::PosixSem("/s".into()), Holder::Process(a))
            .unwrap();
        for _ in 0..2000 {
            reg.get(id, Holder::Process(b)).unwrap();
            assert!(reg.release(id, Holder::Process(b)).is_none());
        }
        assert_eq!(users(&reg, id), [Holder::Process(a)]);
        let destroyed = reg.release(id, Holder::Process(a)).unwrap();
        assert_eq!(destroyed.id, id);
        assert_eq!(reg.resource_count(), 2);
    }

    #[test]
    fn releasing_an_unknown_id_or_by_a_non_user_is_ignored() {
        let (mut reg, fork, _, pid) = with_process();
        assert!(reg.release(ResId(1000), Holder::Master).is_none());
        assert!(reg.release(ResId(1000), Holder::Process(pid)).is_none());
        // The process is not a user of the fork point.
        assert!(reg.release(fork, Holder::Process(pid)).is_none());
        // Nor is an unknown process.
        assert!(reg.release(fork, Holder::Process(ProcessId(55))).is_none());
        assert_eq!(users(&reg, fork), [Holder::Master]);
        let id = reg.register(shm("/y"), Holder::Process(pid)).unwrap();
        assert!(reg.release(id, Holder::Master).is_none());
        assert_eq!(users(&reg, id), [Holder::Process(pid)]);
        // Releasing twice: the second one is ignored.
        assert!(reg.release(id, Holder::Process(pid)).is_some());
        assert!(reg.release(id, Holder::Process(pid)).is_none());
    }

    #[test]
    fn the_master_looks_up_without_becoming_a_user() {
        let (mut reg, _, _, pid) = with_process();
        let id = reg.register(prealloc("/p"), Holder::Process(pid)).unwrap();
        assert_eq!(reg.get(id, Holder::Master), Ok(&prealloc("/p")));
        assert_eq!(
            reg.get_kind(id, Holder::Master, ResourceKind::PosixShmPreallocated),
            Ok(&prealloc("/p"))
        );
        assert_eq!(users(&reg, id), [Holder::Process(pid)]);
        assert!(reg.release(id, Holder::Master).is_none());
        assert!(reg.release(id, Holder::Process(pid)).is_some());
    }

    #[test]
    fn a_finished_process_releases_everything_it_used() {
        let (mut reg, fork, join, pid) = with_process();
        let me = Holder::Process(pid);
        let own = reg.register(file("/tmp/own"), me).unwrap();
        let shared = reg.register(shm("/shared"), Holder::Master).unwrap();
        let sem = reg
            .register(ResourceDesc::PosixSem("/sem".into()), me)
            .unwrap();
        reg.get(shared, me).unwrap();
        reg.get(fork, me).unwrap();
        reg.get(sem, me).unwrap();
        let other = start(&mut reg, fork, Holder::Master);
        reg.get(sem, Holder::Process(other)).unwrap();
        assert_eq!(
            reg.process(pid).unwrap().used().collect::<Vec<_>>(),
            [fork, own, shared, sem]
        );

        let actions = reg.finished(pid, Some(7));
        assert_eq!(
            actions,
            [Action::Destroy(Destroy {
                id: own,
                desc: file("/tmp/own")
            })]
        );
        assert_eq!(users(&reg, shared), [Holder::Master]);
        assert_eq!(users(&reg, fork), [Holder::Master]);
        assert_eq!(users(&reg, sem), [Holder::Process(other)]);
        assert_eq!(reg.join_nowait(join, pid), Some(7));

        // Its last release destroys the semaphore.
        assert_eq!(
            reg.finished(other, None),
            [Action::Destroy(Destroy {
                id: sem,
                desc: ResourceDesc::PosixSem("/sem".into())
            })]
        );
    }

    #[test]
    fn finishing_twice_or_unknown_gives_no_actions() {
        let (mut reg, _, join, pid) = with_process();
        assert!(reg.finished(ProcessId(42), Some(1)).is_empty());
        assert!(reg.finished(pid, Some(1)).is_empty());
        assert!(reg.finished(pid, Some(2)).is_empty());
        assert_eq!(reg.join_nowait(join, pid), Some(1));
        assert!(reg.finished(pid, Some(3)).is_empty());
        assert!(reg.process(pid).is_none());
    }

    #[test]
    fn join_of_a_running_process_is_deferred_and_woken_by_finished() {
        let (mut reg, fork, join, joiner) = with_process();
        let target = start(&mut reg, fork, Holder::Process(joiner));
        assert_eq!(reg.join(join, target, joiner), Ok(JoinOutcome::Deferred));
        let view = reg.process(target).unwrap();
        assert_eq!(view.waiter(), Some(joiner));
        assert_eq!(view.started_by(), Holder::Process(joiner));
        assert_eq!(
            reg.process(joiner).unwrap().awaiting().collect::<Vec<_>>(),
            [target]
        );
        assert_eq!(
            reg.finished(target, Some(5)),
            [Action::Wake(Wake {
                joiner,
                target,
                join_point: join,
                result: Some(5)
            })]
        );
        assert!(reg.process(target).is_none());
        assert_eq!(reg.process(joiner).unwrap().awaiting().count(), 0);
        assert_eq!(
            reg.join(join, target, joiner),
            Err(RegistryError::UnknownProcess(target))
        );
    }

    #[test]
    fn join_of_a_finished_process_returns_the_kept_result_once() {
        let (mut reg, fork, join, joiner) = with_process();
        let with = start(&mut reg, fork, Holder::Master);
        let without = start(&mut reg, fork, Holder::Master);
        assert!(reg.finished(with, Some(11)).is_empty());
        assert!(reg.finished(without, None).is_empty());
        assert_eq!(
            reg.process(with).unwrap().state(),
            ProcessState::Finished { has_result: true }
        );
        assert_eq!(reg.process(with).unwrap().result(), Some(&11));
        assert_eq!(
            reg.process(without).unwrap().state(),
            ProcessState::Finished { has_result: false }
        );
        assert_eq!(
            reg.join(join, with, joiner),
            Ok(JoinOutcome::Ready(Some(11)))
        );
        assert_eq!(
            reg.join(join, without, joiner),
            Ok(JoinOutcome::Ready(None))
        );
        assert_eq!(
            reg.join(join, with, joiner),
            Err(RegistryError::UnknownProcess(with))
        );
        assert_eq!(reg.process_count(), 1);
    }

    #[test]
    fn a_second_join_is_unknown_process_and_the_first_still_completes() {
        let (mut reg, fork, join, first) = with_process();
        let second = start(&mut reg, fork, Holder::Master);
        let target = start(&mut reg, fork, Holder::Master);
        assert_eq!(reg.join(join, target, first), Ok(JoinOutcome::Deferred));
        assert_eq!(
            reg.join(join, target, second),
            Err(RegistryError::UnknownProcess(target))
        );
        // The same joiner asking twice is a second join too.
        assert_eq!(
            reg.join(join, target, first),
            Err(RegistryError::UnknownProcess(target))
        );
        assert_eq!(reg.process(second).unwrap().awaiting().count(), 0);
        let actions = reg.finished(target, Some(3));
        assert_eq!(
            actions,
            [Action::Wake(Wake {
                joiner: first,
                target,
                join_point: join,
                result: Some(3)
            })]
        );
    }

    #[test]
    fn a_wrong_join_point_is_unknown_process_and_the_process_stays_joinable() {
        let (mut reg, fork_a, join_a, joiner) = with_process();
        let (fork_b, join_b) = reg.def_process();
        let running = start(&mut reg, fork_a, Holder::Master);
        let done = start(&mut reg, fork_b, Holder::Master);
        assert!(reg.finished(done, Some(9)).is_empty());

        assert_eq!(
            reg.join(join_b, running, joiner),
            Err(RegistryError::UnknownProcess(running))
        );
        assert_eq!(
            reg.join(join_a, done, joiner),
            Err(RegistryError::UnknownProcess(done))
        );
        assert_eq!(reg.join_nowait(join_a, done), None);
        assert_eq!(reg.process(running).unwrap().waiter(), None);

        assert_eq!(
            reg.join(join_b, done, joiner),
            Ok(JoinOutcome::Ready(Some(9)))
        );
        assert_eq!(reg.join(join_a, running, joiner), Ok(JoinOutcome::Deferred));
    }

    #[test]
    fn joining_oneself_or_an_unknown_process_is_unknown_process() {
        let (mut reg, _, join, pid) = with_process();
        assert_eq!(
            reg.join(join, pid, pid),
            Err(RegistryError::UnknownProcess(pid))
        );
        assert_eq!(
            reg.join(join, ProcessId(9), pid),
            Err(RegistryError::UnknownProcess(ProcessId(9)))
        );
        assert_eq!(reg.process(pid).unwrap().waiter(), None);
    }

    #[test]
    fn a_joiner_that_ends_cancels_its_join_and_the_target_stays_joinable() {
        let (mut reg, fork, join, joiner) = with_process();
        let target = start(&mut reg, fork, Holder::Master);
        let other = start(&mut reg, fork, Holder::Master);
        assert_eq!(reg.join(join, target, joiner), Ok(JoinOutcome::Deferred));
        assert!(reg.finished(joiner, None).is_empty());
        assert_eq!(reg.process(target).unwrap().waiter(), None);
        assert_eq!(reg.join(join, target, other), Ok(JoinOutcome::Deferred));
        assert_eq!(
            reg.finished(target, Some(1)),
            [Action::Wake(Wake {
                joiner: other,
                target,
                join_point: join,
                result: Some(1)
            })]
        );
    }

    #[test]
    fn a_process_with_threads_may_wait_for_several_processes() {
        let (mut reg, fork, join, joiner) = with_process();
        let a = start(&mut reg, fork, Holder::Master);
        let b = start(&mut reg, fork, Holder::Master);
        assert_eq!(reg.join(join, a, joiner), Ok(JoinOutcome::Deferred));
        assert_eq!(reg.join(join, b, joiner), Ok(JoinOutcome::Deferred));
        assert_eq!(
            reg.process(joiner).unwrap().awaiting().collect::<Vec<_>>(),
            [a, b]
        );
        assert_eq!(reg.finished(b, None).len(), 1);
        assert_eq!(
            reg.process(joiner).unwrap().awaiting().collect::<Vec<_>>(),
            [a]
        );
    }

    #[test]
    fn join_nowait_takes_a_finished_result_and_is_never_an_error() {
        let (mut reg, fork, join, running) = with_process();
        let (_, other_join) = reg.def_process();
        let done = start(&mut reg, fork, Holder::Master);
        let empty = start(&mut reg, fork, Holder::Master);
        assert!(reg.finished(done, Some(4)).is_empty());
        assert!(reg.finished(empty, None).is_empty());

        assert_eq!(reg.join_nowait(join, running), None);
        assert_eq!(reg.process(running).unwrap().state(), ProcessState::Running);
        assert_eq!(reg.join_nowait(join, ProcessId(100)), None);
        assert_eq!(reg.join_nowait(ResId(100), done), None);
        assert_eq!(reg.join_nowait(fork, done), None);
        assert_eq!(reg.join_nowait(other_join, done), None);
        assert!(reg.process(done).is_some());

        assert_eq!(reg.join_nowait(join, done), Some(4));
        assert_eq!(reg.join_nowait(join, done), None);
        assert!(reg.process(done).is_none());
        // Finished without a result: forgotten as well.
        assert_eq!(reg.join_nowait(join, empty), None);
        assert!(reg.process(empty).is_none());
        assert_eq!(
            reg.join(join, empty, running),
            Err(RegistryError::UnknownProcess(empty))
        );
    }

    #[test]
    fn a_released_fork_point_makes_start_fail() {
        let mut reg = Reg::new();
        let (fork, join) = reg.def_process();
        assert_eq!(
            reg.release(fork, Holder::Master),
            Some(Destroy {
                id: fork,
                desc: ResourceDesc::ForkPoint { join_point: join }
            })
        );
        assert_eq!(
            reg.start(fork, &Inherit::Nothing, Holder::Master),
            Err(RegistryError::NoResource(fork))
        );
        assert_eq!(reg.process_count(), 0);
        assert!(reg.resource(join).is_some());
    }

    #[test]
    fn a_released_join_point_forgets_the_processes_nobody_can_join() {
        let (mut reg, fork, join, first) = with_process();
        // A finished process of the type, not joined.
        assert!(reg.finished(first, None).is_empty());
        // The joiner is of another type, so that its own join point stays.
        let (other_fork, _) = reg.def_process();
        let joiner = start(&mut reg, other_fork, Holder::Master);
        let done = start(&mut reg, fork, Holder::Master);
        let running = start(&mut reg, fork, Holder::Master);
        let awaited = start(&mut reg, fork, Holder::Master);
        assert!(reg.finished(done, Some(1)).is_empty());
        assert_eq!(reg.join(join, awaited, joiner), Ok(JoinOutcome::Deferred));

        let destroyed = reg.release(join, Holder::Master).unwrap();
        assert_eq!(destroyed.id, join);
        // Finished ones are forgotten at once.
        assert!(reg.process(done).is_none());
        assert!(reg.process(first).is_none());
        assert_eq!(reg.join_nowait(join, done), None);
        assert_eq!(
            reg.join(join, running, joiner),
            Err(RegistryError::NoResource(join))
        );
        // Processes can still be started through the fork point; they run unjoinably.
        let late = reg.start(fork, &Inherit::Nothing, Holder::Master).unwrap();
        assert_eq!(late.join_point, join);
        // A running one is forgotten when it finishes.
        assert!(reg.finished(running, Some(2)).is_empty());
        assert!(reg.process(running).is_none());
        // A joiner already waiting is still woken.
        assert_eq!(
            reg.finished(awaited, Some(3)),
            [Action::Wake(Wake {
                joiner,
                target: awaited,
                join_point: join,
                result: Some(3)
            })]
        );
        assert!(reg.finished(late.pid, None).is_empty());
        assert_eq!(
            reg.processes().map(|p| p.pid()).collect::<Vec<_>>(),
            [joiner]
        );
    }

    #[test]
    fn a_join_point_destroyed_by_a_finishing_process_forgets_it() {
        let (mut reg, fork, join, pid) = with_process();
        reg.get(join, Holder::Process(pid)).unwrap();
        assert!(reg.release(join, Holder::Master).is_none());
        let actions = reg.finished(pid, Some(1));
        assert_eq!(
            actions,
            [Action::Destroy(Destroy {
                id: join,
                desc: ResourceDesc::JoinPoint { fork_point: fork }
            })]
        );
        assert!(reg.process(pid).is_none());
    }

    #[test]
    fn preallocated_shm_is_shared_only_with_processes_that_inherit_it() {
        let mut reg = Reg::new();
        let (fork, _) = reg.def_process();
        let pool = reg.register(prealloc("/pool"), Holder::Master).unwrap();
        let plain = start(&mut reg, fork, Holder::Master);
        assert_eq!(
            reg.get(pool, Holder::Process(plain)),
            Err(RegistryError::NotShared(pool))
        );
        assert_eq!(
            reg.get_kind(
                pool,
                Holder::Process(plain),
                ResourceKind::PosixShmPreallocated
            ),
            Err(RegistryError::NotShared(pool))
        );
        assert_eq!(users(&reg, pool), [Holder::Master]);
        assert_eq!(reg.process(plain).unwrap().used().count(), 0);

        // A worker that creates one is its user but cannot fetch it.
        let own = reg
            .register(prealloc("/own"), Holder::Process(plain))
            .unwrap();
        assert_eq!(users(&reg, own), [Holder::Process(plain)]);
        assert_eq!(
            reg.get(own, Holder::Process(plain)),
            Err(RegistryError::NotShared(own))
        );

        let heir = reg
            .start(
                fork,
                &Inherit::Resources(vec![pool]),
                Holder::Process(plain),
            )
            .unwrap();
        assert_eq!(heir.inherited, [(pool, prealloc("/pool"))]);
        assert_eq!(
            reg.get(pool, Holder::Process(heir.pid)),
            Ok(&prealloc("/pool"))
        );
        assert_eq!(
            reg.get(own, Holder::Process(heir.pid)),
            Err(RegistryError::NotShared(own))
        );
        assert_eq!(
            users(&reg, pool),
            [Holder::Master, Holder::Process(heir.pid)]
        );
        assert_eq!(
            reg.process(heir.pid)
                .unwrap()
                .inherited()
                .collect::<Vec<_>>(),
            [pool]
        );
    }

    #[test]
    fn inherit_all_takes_every_live_preallocated_shm() {
        let mut reg = Reg::new();
        let (fork, _) = reg.def_process();
        let a = reg.register(prealloc("/a"), Holder::Master).unwrap();
        let _plain = reg.register(shm("/plain"), Holder::Master).unwrap();
        let b = reg.register(prealloc("/b"), Holder::Master).unwrap();
        let c = reg.register(prealloc("/c"), Holder::Master).unwrap();
        assert!(reg.release(b, Holder::Master).is_some());
        let started = reg.start(fork, &Inherit::All, Holder::Master).unwrap();
        assert_eq!(
            started.inherited,
            [(a, prealloc("/a")), (c, prealloc("/c"))]
        );
        let nothing = reg.start(fork, &Inherit::Nothing, Holder::Master).unwrap();
        assert!(nothing.inherited.is_empty());
        let default = reg
            .start(fork, &Inherit::default(), Holder::Master)
            .unwrap();
        assert!(default.inherited.is_empty());
    }

    #[test]
    fn inherit_resources_takes_the_listed_ones_and_checks_them() {
        let mut reg = Reg::new();
        let (fork, join) = reg.def_process();
        let a = reg.register(prealloc("/a"), Holder::Master).unwrap();
        let b = reg.register(prealloc("/b"), Holder::Master).unwrap();
        let plain = reg.register(shm("/plain"), Holder::Master).unwrap();

        let started = reg
            .start(fork, &Inherit::Resources(vec![b, a, b]), Holder::Master)
            .unwrap();
        assert_eq!(
            started.inherited,
            [(a, prealloc("/a")), (b, prealloc("/b"))]
        );

        let missing = ResId(50);
        assert_eq!(
            reg.start(
                fork,
                &Inherit::Resources(vec![a, missing, plain]),
                Holder::Master
            ),
            Err(RegistryError::NoResource(missing))
        );
        assert_eq!(
            reg.start(
                fork,
                &Inherit::Resources(vec![a, plain, missing]),
                Holder::Master
            ),
            Err(RegistryError::WrongKind {
                id: plain,
                expected: ResourceKind::PosixShmPreallocated,
                found: ResourceKind::PosixShm
            })
        );
        assert_eq!(
            reg.start(fork, &Inherit::Resources(vec![join]), Holder::Master),
            Err(RegistryError::WrongKind {
                id: join,
                expected: ResourceKind::PosixShmPreallocated,
                found: ResourceKind::JoinPoint
            })
        );
        // The failures used up no process id.
        assert_eq!(start(&mut reg, fork, Holder::Master), ProcessId(1));
    }

    #[test]
    fn get_kind_refuses_the_wrong_kind_without_adding_a_user() {
        let (mut reg, _, _, pid) = with_process();
        let me = Holder::Process(pid);
        let id = reg.register(shm("/m"), Holder::Master).unwrap();
        assert_eq!(
            reg.get_kind(id, me, ResourceKind::File),
            Err(RegistryError::WrongKind {
                id,
                expected: ResourceKind::File,
                found: ResourceKind::PosixShm
            })
        );
        assert_eq!(users(&reg, id), [Holder::Master]);
        // A non-inherited preallocated shm asked for as a file: the kind is checked first.
        let pool = reg.register(prealloc("/pool"), Holder::Master).unwrap();
        assert_eq!(
            reg.get_kind(pool, me, ResourceKind::PosixShm),
            Err(RegistryError::WrongKind {
                id: pool,
                expected: ResourceKind::PosixShm,
                found: ResourceKind::PosixShmPreallocated
            })
        );
        assert_eq!(reg.get_kind(id, me, ResourceKind::PosixShm), Ok(&shm("/m")));
        assert_eq!(users(&reg, id), [Holder::Master, me]);
    }

    #[test]
    fn invalid_names_are_refused() {
        let mut reg = Reg::new();
        let long_shm = format!("/{}", "x".repeat(SHM_NAME_MAX));
        let long_sem = format!("/{}", "x".repeat(SEM_NAME_MAX));
        let cases = [
            shm(""),
            shm("/"),
            shm("noslash"),
            shm("/a/b"),
            shm("//a"),
            shm("/a\0b"),
            shm("/."),
            shm("/.."),
            shm(&long_shm),
            prealloc("pool"),
            prealloc(&long_shm),
            ResourceDesc::PosixSem("sem".into()),
            ResourceDesc::PosixSem("/s/t".into()),
            ResourceDesc::PosixSem(long_sem.clone()),
            file(""),
            file("relative/path"),
            file("./x"),
            file("/tmp/a\0b"),
        ];
        for desc in cases {
            let result = reg.register(desc.clone(), Holder::Master);
            assert!(
                matches!(result, Err(RegistryError::InvalidName(_))),
                "{desc:?} gave {result:?}"
            );
        }
        assert_eq!(
            reg.register(shm("nope"), Holder::Master),
            Err(RegistryError::InvalidName("nope".into()))
        );
        assert!(reg.is_empty());

        // The limits themselves are fine, and so are dots inside a name.
        let max_shm = format!("/{}", "x".repeat(SHM_NAME_MAX - 1));
        let max_sem = format!("/{}", "x".repeat(SEM_NAME_MAX - 1));
        assert_eq!(validate_shm_name(&max_shm), Ok(()));
        assert_eq!(validate_sem_name(&max_sem), Ok(()));
        assert!(validate_sem_name(&max_shm).is_err());
        assert_eq!(validate_shm_name("/a.b"), Ok(()));
        assert_eq!(validate_shm_name("/..."), Ok(()));
        assert_eq!(validate_file_path(Path::new("/tmp/x y")), Ok(()));
        assert_eq!(reg.register(shm("/ok"), Holder::Master), Ok(ResId(0)));
    }

    #[test]
    fn fork_and_join_points_cannot_be_registered() {
        let mut reg = Reg::new();
        assert_eq!(
            reg.register(
                ResourceDesc::ForkPoint {
                    join_point: ResId(1)
                },
                Holder::Master
            ),
            Err(RegistryError::NotRegistrable(ResourceKind::ForkPoint))
        );
        assert_eq!(
            reg.register(
                ResourceDesc::JoinPoint {
                    fork_point: ResId(0)
                },
                Holder::Master
            ),
            Err(RegistryError::NotRegistrable(ResourceKind::JoinPoint))
        );
        assert!(reg.is_empty());
    }

    #[test]
    fn calls_on_behalf_of_a_process_that_is_not_running_are_refused() {
        let (mut reg, fork, join, pid) = with_process();
        let ghost = ProcessId(17);
        let id = reg.register(shm("/z"), Holder::Master).unwrap();
        assert!(reg.finished(pid, None).is_empty());
        for by in [ghost, pid] {
            let holder = Holder::Process(by);
            assert_eq!(
                reg.register(shm("/w"), holder),
                Err(RegistryError::UnknownProcess(by))
            );
            assert_eq!(reg.get(id, holder), Err(RegistryError::UnknownProcess(by)));
            assert_eq!(
                reg.start(fork, &Inherit::Nothing, holder),
                Err(RegistryError::UnknownProcess(by))
            );
        }
        let target = start(&mut reg, fork, Holder::Master);
        assert_eq!(
            reg.join(join, target, ghost),
            Err(RegistryError::UnknownProcess(ghost))
        );
        assert_eq!(users(&reg, id), [Holder::Master]);
        assert_eq!(reg.resource_count(), 3);
    }

    #[test]
    fn shutdown_destroys_every_resource_and_keeps_running_processes() {
        let (mut reg, fork, join, running) = with_process();
        let done = start(&mut reg, fork, Holder::Master);
        let joiner = start(&mut reg, fork, Holder::Master);
        assert_eq!(reg.join(join, running, joiner), Ok(JoinOutcome::Deferred));
        let mine = reg
            .register(file("/tmp/f"), Holder::Process(running))
            .unwrap();
        let pool = reg.register(prealloc("/pool"), Holder::Master).unwrap();
        assert!(reg.finished(done, Some(1)).is_empty());

        let destroyed: Vec<ResId> = reg.shutdown().into_iter().map(|d| d.id).collect();
        assert_eq!(destroyed, [fork, join, mine, pool]);
        assert_eq!(reg.resource_count(), 0);
        assert!(reg.process(done).is_none());
        assert_eq!(
            reg.running_processes().collect::<Vec<_>>(),
            [running, joiner]
        );
        assert_eq!(reg.process(running).unwrap().used().count(), 0);
        assert!(!reg.is_empty());

        // Ending later destroys nothing more, and the joiner is still answered.
        assert_eq!(
            reg.finished(running, Some(2)),
            [Action::Wake(Wake {
                joiner,
                target: running,
                join_point: join,
                result: Some(2)
            })]
        );
        assert!(reg.finished(joiner, None).is_empty());
        assert!(reg.is_empty());
        assert!(reg.shutdown().is_empty());
        // Ids go on.
        assert_eq!(reg.def_process(), (ResId(pool.0 + 1), ResId(pool.0 + 2)));
    }

    #[test]
    fn introspection_shows_resources_and_processes() {
        let (mut reg, fork, join, pid) = with_process();
        let done = start(&mut reg, fork, Holder::Process(pid));
        assert!(reg.finished(done, None).is_empty());
        let id = reg.register(shm("/i"), Holder::Process(pid)).unwrap();
        let views: Vec<_> = reg
            .resources()
            .map(|r| (r.id(), r.kind(), r.users().collect::<Vec<_>>()))
            .collect();
        assert_eq!(
            views,
            [
                (fork, ResourceKind::ForkPoint, vec![Holder::Master]),
                (join, ResourceKind::JoinPoint, vec![Holder::Master]),
                (id, ResourceKind::PosixShm, vec![Holder::Process(pid)]),
            ]
        );
        assert!(reg.resource(id).unwrap().is_used_by(Holder::Process(pid)));
        assert!(!reg.resource(id).unwrap().is_used_by(Holder::Master));
        let procs: Vec<_> = reg
            .processes()
            .map(|p| (p.pid(), p.state(), p.join_point(), p.started_by()))
            .collect();
        assert_eq!(
            procs,
            [
                (pid, ProcessState::Running, join, Holder::Master),
                (
                    done,
                    ProcessState::Finished { has_result: false },
                    join,
                    Holder::Process(pid)
                ),
            ]
        );
        assert_eq!(reg.running_count(), 1);
        assert_eq!(reg.process_count(), 2);
        assert_eq!(reg.resource_count(), 3);
    }

    #[test]
    fn error_messages_name_ids_and_names() {
        assert_eq!(
            RegistryError::NoResource(ResId(4)).to_string(),
            "no such resource: resource 4"
        );
        assert_eq!(
            RegistryError::UnknownProcess(ProcessId(2)).to_string(),
            "unknown process: process 2"
        );
        assert_eq!(
            RegistryError::WrongKind {
                id: ResId(3),
                expected: ResourceKind::File,
                found: ResourceKind::PosixShm
            }
            .to_string(),
            "wrong kind of resource: resource 3 is a posix shm, expected a file"
        );
        assert_eq!(
            RegistryError::NotShared(ResId(5)).to_string(),
            "not shared: resource 5 is preallocated shared memory this process did not inherit"
        );
        assert_eq!(
            RegistryError::InvalidName("a/b".into()).to_string(),
            "invalid name: \"a/b\""
        );
        assert_eq!(
            RegistryError::NotRegistrable(ResourceKind::ForkPoint).to_string(),
            "a fork point cannot be registered, only defined with def_process"
        );
        assert_eq!(Holder::Master.to_string(), "master");
        assert_eq!(Holder::from(ProcessId(3)).to_string(), "process 3");
    }
}
