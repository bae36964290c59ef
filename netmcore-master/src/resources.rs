//! The resource calls of the facade: looking resources up and releasing them, registering
//! files, shm objects and semaphores, preallocated shared memory, and destroying everything.
//!
//! Each call dispatches on the caller's [`role`]: before `startup` it works on the
//! registry that `startup` will take over (the program is the master-to-be, and objects it
//! creates are recorded in the ledger as soon as `startup` opens it, before the first process
//! starts); in the master it works on the master's registry directly; in a worker it asks the
//! master over the worker's channel.

use std::fmt;
use std::path::{Path, PathBuf};

use netmcore_ipc::shm::SharedMemory;
use netmcore_ipc::wire::{Request, Response};
use netmcore_resources::{Holder, ResId, ResourceDesc, ResourceKind};

use crate::dir::{self, DestroyReport};
use crate::master::{self, Master};
use crate::state::{self, Definitions, Phase, Role, role};
use crate::{Error, Result, worker};

/// What a resource is, as [`get_resource`] shows it to the calling process.
///
/// The names of shm objects and semaphores start with `/`; a preallocated shm comes with the
/// calling process's mapping of it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResourceRepr {
    /// A file, by absolute path.
    File(PathBuf),
    /// A fork point (of [`def_process`](crate::def_process)).
    ForkPoint,
    /// A join point (of [`def_process`](crate::def_process)).
    JoinPoint,
    /// A named POSIX semaphore, by name.
    PosixSem(String),
    /// A POSIX shared memory object, by name; map it with
    /// [`ShmObject::open`](netmcore_ipc::shm::ShmObject::open).
    PosixShm(String),
    /// Preallocated shared memory: its name, and this process's mapping of it, made by the
    /// master (in a worker: inherited from it at the fork).
    PosixShmPreallocated {
        /// The object's name.
        name: String,
        /// The mapping; it stays valid for the life of the process, even after the object
        /// is destroyed (its name removed).
        memory: SharedMemory,
    },
}

impl ResourceRepr {
    /// The kind of resource this is.
    #[must_use]
    pub fn kind(&self) -> ResourceKind {
        match self {
            ResourceRepr::File(_) => ResourceKind::File,
            ResourceRepr::ForkPoint => ResourceKind::ForkPoint,
            ResourceRepr::JoinPoint => ResourceKind::JoinPoint,
            ResourceRepr::PosixSem(_) => ResourceKind::PosixSem,
            ResourceRepr::PosixShm(_) => ResourceKind::PosixShm,
            ResourceRepr::PosixShmPreallocated { .. } => ResourceKind::PosixShmPreallocated,
        }
    }
}

/// A resource the calling process got from [`get_resource`] or registered with a
/// `manage_*` call: its id and what it is.
///
/// It does not release the resource when dropped (the master counts users, not handles):
/// call [`ComputeResource::release`] or [`release`], or let the process end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComputeResource {
    id: ResId,
    repr: ResourceRepr,
}

impl ComputeResource {
    /// The resource's id.
    #[must_use]
    pub fn id(&self) -> ResId {
        self.id
    }

    /// The resource's kind.
    #[must_use]
    pub fn kind(&self) -> ResourceKind {
        self.repr.kind()
    }

    /// What the resource is.
    #[must_use]
    pub fn repr(&self) -> &ResourceRepr {
        &self.repr
    }

    /// [`release`] of this resource.
    ///
    /// # Errors
    ///
    /// As [`release`].
    pub fn release(self) -> Result<()> {
        release(self.id)
    }
}

impl fmt::Display for ComputeResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            ResourceRepr::File(path) => write!(f, "{}: file {}", self.id, path.display()),
            ResourceRepr::PosixSem(name) => write!(f, "{}: posix semaphore {name}", self.id),
            ResourceRepr::PosixShm(name) => write!(f, "{}: posix shm {name}", self.id),
            ResourceRepr::PosixShmPreallocated { name, memory } => write!(
                f,
                "{}: preallocated posix shm {name} of {} bytes",
                self.id,
                memory.len()
            ),
            other => write!(f, "{}: {}", self.id, other.kind()),
        }
    }
}

/// Where the registry is in this process: before `startup` (the definitions) or in the
/// master.
enum Here<'a> {
    PreStartup(&'a mut Definitions),
    Master(&'a mut Master),
}

impl Here<'_> {
    fn defs(&mut self) -> &mut Definitions {
        match self {
            Here::PreStartup(defs) => defs,
            Here::Master(master) => &mut master.defs,
        }
    }
}

/// Runs `f` on the registry of this process (not in a worker).
fn here<T>(f: impl FnOnce(Here<'_>) -> Result<T>) -> Result<T> {
    let mut guard = state::lock();
    match &mut *guard {
        Phase::Idle(defs) => f(Here::PreStartup(defs)),
        Phase::Running(master) => f(Here::Master(master)),
        Phase::Moving => Err(Error::NotStarted),
    }
}

/// The resource `id` described by `desc`, with the mapping `memory` finds for a
/// preallocated shm.
fn resource(
    id: ResId,
    desc: &ResourceDesc,
    memory: impl FnOnce() -> Option<SharedMemory>,
) -> Result<ComputeResource> {
    let repr = match desc {
        ResourceDesc::File(path) => ResourceRepr::File(path.clone()),
        ResourceDesc::ForkPoint { .. } => ResourceRepr::ForkPoint,
        ResourceDesc::JoinPoint { .. } => ResourceRepr::JoinPoint,
        ResourceDesc::PosixSem(name) => ResourceRepr::PosixSem(name.clone()),
        ResourceDesc::PosixShm(name) => ResourceRepr::PosixShm(name.clone()),
        ResourceDesc::PosixShmPreallocated { name, .. } => ResourceRepr::PosixShmPreallocated {
            name: name.clone(),
            memory: memory().ok_or(Error::NotShared(id))?,
        },
        other => {
            return Err(Error::InMaster {
                op: "get_resource".to_owned(),
                target: id.to_string(),
                message: format!("a resource this version does not know: {other:?}"),
            });
        }
    };
    Ok(ComputeResource { id, repr })
}

/// Looks `id` up for `call`, expecting a resource of kind `expected` if given.
fn lookup(
    call: &'static str,
    id: ResId,
    expected: Option<ResourceKind>,
) -> Result<ComputeResource> {
    if role() == Role::Worker {
        return match worker::call(call, &Request::GetResource { id, expected })? {
            Response::Resource { id, desc } => resource(id, &desc, || worker::inherited(id)),
            Response::Error(e) => Err(Error::from_remote(e)),
            other => Err(worker::unexpected(call, &other)),
        };
    }
    here(|mut here| {
        let defs = here.defs();
        let desc = match expected {
            None => defs.registry.get(id, Holder::Master)?,
            Some(kind) => defs.registry.get_kind(id, Holder::Master, kind)?,
        }
        .clone();
        resource(id, &desc, || {
            defs.mappings.get_mut(&id).map(|mapped| {
                mapped.handed_out = true;
                mapped.memory
            })
        })
    })
}

/// The resource `id`: marks the calling worker as one of its users (once, however often it
/// asks) and returns what it is. Before `startup` and in the master it is a lookup that adds
/// no user.
///
/// A preallocated shm comes with this process's mapping: the master's own, or in a worker
/// the one it inherited when it was started (with [`Inherit::All`] or its id in
/// [`Inherit::Resources`]).
///
/// ```
/// use netmcore_master::{ResourceRepr, create_preallocated_shm, get_resource, release};
///
/// let (id, name) = create_preallocated_shm("/netmcore-doc-get-", 4096)?;
/// let resource = get_resource(id)?;
/// let ResourceRepr::PosixShmPreallocated { memory, .. } = *resource.repr() else {
///     unreachable!("a preallocated shm");
/// };
/// assert_eq!(memory.len(), 4096);
/// // The program is its only user: releasing it destroys it, and the mapping stays valid.
/// resource.release()?;
/// assert!(!std::path::Path::new(&format!("/dev/shm{name}")).exists());
/// assert_eq!(memory.as_atomic_u8s()[0].load(std::sync::atomic::Ordering::Relaxed), 0);
/// # Ok::<(), netmcore_master::Error>(())
/// ```
///
/// [`Inherit::All`]: netmcore_resources::Inherit::All
/// [`Inherit::Resources`]: netmcore_resources::Inherit::Resources
///
/// # Errors
///
/// * [`Error::NoResource`] when `id` names no live resource;
/// * [`Error::NotShared`] in a worker for a preallocated shm it did not inherit (it does not
///   become a user);
/// * [`Error::MasterGone`] in a worker whose master is gone.
pub fn get_resource(id: ResId) -> Result<ComputeResource> {
    lookup("get_resource", id, None)
}

/// [`get_resource`] of a file: its path.
///
/// # Errors
///
/// As [`get_resource`], and [`Error::WrongKind`] when `id` is not a file (the caller does not
/// become a user).
pub fn get_file(id: ResId) -> Result<PathBuf> {
    match lookup("get_file", id, Some(ResourceKind::File))?.repr {
        ResourceRepr::File(path) => Ok(path),
        other => Err(wrong_kind(id, ResourceKind::File, &other)),
    }
}

/// [`get_resource`] of a POSIX shm object (not a preallocated one): its name.
///
/// # Errors
///
/// As [`get_resource`], and [`Error::WrongKind`] when `id` is not a shm object.
pub fn get_shm(id: ResId) -> Result<String> {
    match lookup("get_shm", id, Some(ResourceKind::PosixShm))?.repr {
        ResourceRepr::PosixShm(name) => Ok(name),
        other => Err(wrong_kind(id, ResourceKind::PosixShm, &other)),
    }
}

/// [`get_resource`] of a named POSIX semaphore: its name.
///
/// # Errors
///
/// As [`get_resource`], and [`Error::WrongKind`] when `id` is not a semaphore.
pub fn get_sem(id: ResId) -> Result<String> {
    match lookup("get_sem", id, Some(ResourceKind::PosixSem))?.repr {
        ResourceRepr::PosixSem(name) => Ok(name),
        other => Err(wrong_kind(id, ResourceKind::PosixSem, &other)),
    }
}

fn wrong_kind(id: ResId, expected: ResourceKind, found: &ResourceRepr) -> Error {
    Error::WrongKind {
        id,
        expected,
        found: found.kind(),
    }
}

/// Removes the calling process from the users of `id`; when none remains the object is
/// destroyed: a file is unlinked, a shm object or semaphore unlinked (`shm_unlink`,
/// `sem_unlink`), a fork or join point dropped (then [`start`](crate::start) through it fails
/// with [`Error::NoResource`]). An unknown id, or one the caller does not use, is ignored.
///
/// It returns only after all this happened: when it returns, a destroyed object is gone from
/// the file system (and its ledger record written), so the caller may at once create a new
/// object at the same path or name without the master touching it. In a worker this is a
/// round trip to the master.
///
/// ```
/// use netmcore_master::{get_file, manage_file, release};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("data.bin");
/// std::fs::write(&path, b"x")?;
/// let file = manage_file(&path)?;
/// assert_eq!(get_file(file.id())?, path);
/// release(file.id())?;
/// assert!(!path.exists(), "the last user let go");
/// release(file.id())?; // unknown now: ignored
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`Error::MasterGone`] in a worker whose master is gone; the error of destroying the object
/// (in a worker [`Error::InMaster`]; the object is forgotten anyway).
pub fn release(id: ResId) -> Result<()> {
    if role() == Role::Worker {
        return match worker::call("release", &Request::Release(id))? {
            Response::Ok => Ok(()),
            Response::Error(e) => Err(Error::from_remote(e)),
            other => Err(worker::unexpected("release", &other)),
        };
    }
    here(|here| match here {
        Here::PreStartup(defs) => match defs.registry.release(id, Holder::Master) {
            Some(destroy) => master::destroy_in(defs, None, destroy),
            None => Ok(()),
        },
        Here::Master(master) => master.release(id),
    })
}

/// Registers `desc` for the calling process, its only user.
fn manage(call: &'static str, desc: ResourceDesc, request: Request) -> Result<ComputeResource> {
    if role() == Role::Worker {
        return match worker::call(call, &request)? {
            Response::Resource { id, desc } => resource(id, &desc, || None),
            Response::Error(e) => Err(Error::from_remote(e)),
            other => Err(worker::unexpected(call, &other)),
        };
    }
    here(|here| {
        let id = match here {
            Here::PreStartup(defs) => {
                master::register_in(defs, None, desc.clone(), Holder::Master)?
            }
            Here::Master(master) => master.register_object(desc.clone())?,
        };
        resource(id, &desc, || None)
    })
}

/// Registers an existing file, by absolute path: the calling process is its only user, and
/// the file is unlinked when the last user releases it or ends (see [`release`]).
///
/// The master records it in its ledger, so that a crash leaves it listed for cleanup. Before
/// `startup`, the program registers it for the master-to-be (recorded when `startup` opens
/// the ledger).
///
/// # Errors
///
/// [`Error::InvalidName`] for a path that is not absolute; [`Error::MasterGone`] in a worker
/// whose master is gone; [`Error::Ledger`] when the ledger cannot be written.
pub fn manage_file(path: impl AsRef<Path>) -> Result<ComputeResource> {
    let path = path.as_ref().to_owned();
    manage(
        "manage_file",
        ResourceDesc::File(path.clone()),
        Request::ManageFile(path),
    )
}

/// Registers an existing POSIX shm object, by name: the calling process is its only user,
/// and it is unlinked when the last user releases it or ends.
///
/// ```
/// use netmcore_ipc::shm::ShmObject;
/// use netmcore_master::{get_shm, manage_shm};
///
/// let shm = ShmObject::create_unique("/netmcore-doc-manage-")?;
/// let resource = manage_shm(shm.name())?;
/// assert_eq!(get_shm(resource.id())?, shm.name());
/// resource.release()?;
/// assert!(ShmObject::open(shm.name()).is_err(), "unlinked");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`Error::InvalidName`] for a name that does not start with `/` (or is otherwise no shm
/// name); the others of [`manage_file`].
pub fn manage_shm(name: &str) -> Result<ComputeResource> {
    manage(
        "manage_shm",
        ResourceDesc::PosixShm(name.to_owned()),
        Request::ManageShm(name.to_owned()),
    )
}

/// Registers an existing named POSIX semaphore: the calling process is its only user, and it
/// is unlinked when the last user releases it or ends.
///
/// ```
/// use netmcore_ipc::sem::NamedSemaphore;
/// use netmcore_master::{Error, get_sem, manage_sem};
///
/// let sem = NamedSemaphore::create_unique("/netmcore-doc-manage-", 1)?;
/// let resource = manage_sem(sem.name())?;
/// assert_eq!(get_sem(resource.id())?, sem.name());
/// resource.release()?;
/// assert!(NamedSemaphore::open(sem.name()).is_err(), "unlinked");
/// assert!(matches!(manage_sem("no-slash"), Err(Error::InvalidName(_))));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// As [`manage_shm`].
pub fn manage_sem(name: &str) -> Result<ComputeResource> {
    manage(
        "manage_sem",
        ResourceDesc::PosixSem(name.to_owned()),
        Request::ManageSem(name.to_owned()),
    )
}

/// Creates preallocated shared memory: a POSIX shm object named `prefix` followed by 16
/// random hex digits (`O_CREAT | O_EXCL`, mode 0600), of `size` bytes, mapped in the master
/// (with `MAP_POPULATE`) for the life of the master process. Returns its id and name.
///
/// The object is recorded in the ledger before it is created (before `startup`, as soon as
/// `startup` opens the ledger). Its user is the caller. Workers forked afterwards see it only
/// if they inherit it ([`start_with`](crate::start_with) with [`Inherit::All`] or its id in
/// [`Inherit::Resources`]): they keep the master's mapping, at the same address, and
/// [`get_resource`] hands it out. Every other worker does not have the mapping at all
/// (`get_resource` gives [`Error::NotShared`]); a worker that asked for the object counts as
/// its user but cannot map it through netmcore, and the object is destroyed when it releases
/// it or ends.
///
/// A [`SharedMemory`] copied into a global or a closure before a worker was started must not
/// be used in a worker that did not inherit it: the range is not mapped there (an access
/// faults).
///
/// ```
/// use std::sync::atomic::Ordering;
/// use netmcore_master::{create_preallocated_shm, destroy_resources, get_resource, ResourceRepr};
///
/// let (id, name) = create_preallocated_shm("/netmcore-doc-pool-", 1 << 16)?;
/// assert!(name.starts_with("/netmcore-doc-pool-"));
/// let ResourceRepr::PosixShmPreallocated { memory, .. } = get_resource(id)?.repr().clone() else {
///     unreachable!()
/// };
/// memory.as_atomic_u64s().expect("page-aligned")[0].store(42, Ordering::Relaxed);
/// destroy_resources()?;
/// assert!(!std::path::Path::new(&format!("/dev/shm{name}")).exists());
/// # Ok::<(), netmcore_master::Error>(())
/// ```
///
/// [`Inherit::All`]: netmcore_resources::Inherit::All
/// [`Inherit::Resources`]: netmcore_resources::Inherit::Resources
///
/// # Errors
///
/// [`Error::InvalidName`] when `prefix` does not make a shm name (it must start with `/` and
/// contain no other `/`); [`Error::Io`] (in a worker [`Error::InMaster`]) naming `shm_open`,
/// `ftruncate` or `mmap` when the object cannot be made; [`Error::Ledger`] when the ledger
/// cannot be written; [`Error::MasterGone`] in a worker whose master is gone.
pub fn create_preallocated_shm(prefix: &str, size: usize) -> Result<(ResId, String)> {
    if role() == Role::Worker {
        let request = Request::CreatePreallocatedShm {
            prefix: prefix.to_owned(),
            size: u64::try_from(size).map_err(|_| Error::InvalidName(prefix.to_owned()))?,
        };
        return match worker::call("create_preallocated_shm", &request)? {
            Response::Preallocated { id, name } => Ok((id, name)),
            Response::Error(e) => Err(Error::from_remote(e)),
            other => Err(worker::unexpected("create_preallocated_shm", &other)),
        };
    }
    here(|here| match here {
        Here::PreStartup(defs) => {
            master::create_preallocated_in(defs, None, prefix, size, Holder::Master)
        }
        Here::Master(master) => master.create_preallocated(prefix, size, Holder::Master),
    })
}

/// Creates a POSIX shm object for the calling process to map itself: a name of `prefix`
/// followed by 16 random hex digits, recorded in the ledger before it exists, created
/// (`O_CREAT | O_EXCL`, mode 0600) and sized to `size` zero bytes by the master. Returns its id
/// and name; the caller is its only user, and others become users with [`get_shm`]. Like
/// every resource it is unlinked when its last user releases it or ends, and after a crash.
///
/// Unlike [`create_preallocated_shm`], the master does not map it: any process that knows the
/// name maps it wherever it likes (`ShmObject::open(name)?.map()`), so a structure made by a
/// worker can be opened by a sibling that was forked before it existed.
///
/// ```
/// use netmcore_ipc::shm::ShmObject;
/// use netmcore_master::{create_shm, get_shm, release};
///
/// let (id, name) = create_shm("/netmcore-doc-segment-", 4096)?;
/// assert_eq!(get_shm(id)?, name);
/// let mapping = ShmObject::open(&name)?.map()?;
/// assert_eq!(mapping.len(), 4096);
/// release(id)?; // the only user let go: unlinked, and the mapping stays valid
/// assert!(ShmObject::open(&name).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`Error::InvalidName`] when `prefix` does not make a shm name (it must start with `/` and
/// contain no other `/`); [`Error::Io`] (in a worker [`Error::InMaster`]) naming `shm_open` or
/// `ftruncate`; [`Error::Ledger`] when the ledger cannot be written; [`Error::MasterGone`] in
/// a worker whose master is gone.
pub fn create_shm(prefix: &str, size: usize) -> Result<(ResId, String)> {
    if role() == Role::Worker {
        let request = Request::CreateShm {
            prefix: prefix.to_owned(),
            size: u64::try_from(size).map_err(|_| Error::InvalidName(prefix.to_owned()))?,
        };
        return match worker::call("create_shm", &request)? {
            Response::Resource {
                id,
                desc: ResourceDesc::PosixShm(name),
            } => Ok((id, name)),
            Response::Error(e) => Err(Error::from_remote(e)),
            other => Err(worker::unexpected("create_shm", &other)),
        };
    }
    here(|here| match here {
        Here::PreStartup(defs) => master::create_shm_in(defs, None, prefix, size, Holder::Master),
        Here::Master(master) => master.create_shm(prefix, size, Holder::Master),
    })
}

/// Destroys every object the master knows — files, shm objects, semaphores, preallocated
/// shm, whoever uses them — and everything its ledger lists. Process types (fork and join
/// points) stay. Before `startup`, destroys the objects registered so far.
///
/// # Errors
///
/// [`Error::NotInMaster`] in a worker; [`Error::InMaster`] listing the objects that could
/// not be destroyed (every other one is gone); [`Error::Ledger`] when the ledger cannot be
/// read or written.
pub fn destroy_resources() -> Result<()> {
    if role() == Role::Worker {
        return Err(Error::NotInMaster);
    }
    here(|here| match here {
        Here::PreStartup(defs) => {
            let failures = master::destroy_registered(defs, None);
            match failures.is_empty() {
                true => Ok(()),
                false => Err(Error::InMaster {
                    op: "destroy_resources".to_owned(),
                    target: "the objects registered before startup".to_owned(),
                    message: failures.join("; "),
                }),
            }
        }
        Here::Master(master) => master.destroy_everything(),
    })
}

/// Cleans up after a dead master, from any process: destroys everything the ledger of the
/// socket directory lists (`shm_unlink`, `sem_unlink`, `unlink`; an object already gone is
/// reported as such), removes its stale sockets, empties the ledger, and reports what it did.
///
/// The directory's lock is held meanwhile, so no master starts on it during the cleanup. A
/// directory no master ever used (no lock file, ledger or socket in it) is left untouched
/// with an empty report.
///
/// ```
/// use netmcore_master::{Config, Error, def_process, destroy_resources_in, start, startup};
///
/// let (echo, _) = def_process(|arg| arg)?;
/// let dir = tempfile::tempdir()?;
/// let sock = dir.path().join("job");
/// let sock2 = sock.clone();
/// startup(Config::new(&sock), move || {
///     // A live master holds the directory.
///     assert!(matches!(destroy_resources_in(&sock2), Err(Error::SocketDirectoryInUse(_))));
///     start(echo, netmcore_encap::Encap::wrap(&())?)
/// })?;
/// // The master ended normally and left nothing to clean.
/// assert!(destroy_resources_in(&sock)?.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// * [`Error::SocketDirectoryInUse`] when a live master holds the directory;
/// * [`Error::InsecureSocketDirectory`] for a directory that is not this user's or that
///   others may write to;
/// * [`Error::Io`] when the directory does not exist or its lock cannot be taken;
/// * [`Error::Ledger`] for a ledger that cannot be read (a malformed line is named).
pub fn destroy_resources_in(socket_directory: &Path) -> Result<DestroyReport> {
    let report = dir::destroy_in(socket_directory)?;
    dir::log_report(&report, "destroy_resources_in");
    Ok(report)
}
