//! The error type of the master and of the process API.

use std::io;
use std::path::PathBuf;

use netmcore_encap::EncapError;
use netmcore_ipc::wire::RemoteError;
use netmcore_resources::ledger::LedgerError;
use netmcore_resources::{ProcessId, RegistryError, ResId, ResourceKind};

/// What can go wrong in a netmcore call.
///
/// Messages are lowercase without a trailing period and name what failed: the call, the
/// resource or process id, the syscall and the object it was applied to.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No live resource has this id, or it is not of the kind the call needs (e.g. `start`
    /// with an id that is not a fork point).
    #[error("no {0}")]
    NoResource(ResId),
    /// No process with this id can be joined through the join point used: unknown, already
    /// joined, awaited by another joiner, or of another process type.
    #[error("unknown {0}")]
    UnknownProcess(ProcessId),
    /// The resource is of another kind than the call needs.
    #[error("{id} is a {found}, not a {expected}")]
    WrongKind {
        /// The resource.
        id: ResId,
        /// The kind the call needs.
        expected: ResourceKind,
        /// Its kind.
        found: ResourceKind,
    },
    /// Preallocated shared memory that the calling process did not inherit.
    #[error("{0} was not inherited by this process")]
    NotShared(ResId),
    /// The call is only allowed before `startup` or in the master (e.g. `def_process` in a
    /// worker).
    #[error("only the master may do this")]
    NotInMaster,
    /// The call is only allowed in a worker process (e.g. `join` in the master).
    #[error("only a worker process may do this")]
    NotInWorker,
    /// The call needs a running master: `startup` or `run` has not been called.
    #[error("the master is not started: call startup or run first")]
    NotStarted,
    /// The master of this worker is gone (it died or closed the channel).
    #[error("the master is gone")]
    MasterGone,
    /// A shm or semaphore name, or a file path, that is not absolute or otherwise refused.
    #[error("invalid name {0:?}")]
    InvalidName(String),
    /// The socket directory is locked by a live master.
    #[error("socket directory {} is in use by a live master", .0.display())]
    SocketDirectoryInUse(PathBuf),
    /// A value could not be encapsulated, or an encapsulated value is not of the expected
    /// type.
    #[error("encapsulation: {0}")]
    Encap(#[from] EncapError),
    /// An OS call failed: `op` names it, `target` the object it was applied to.
    #[error("{op} {target}: {source}")]
    Io {
        /// The call, e.g. `"mkdir"`.
        op: &'static str,
        /// The object, e.g. the path.
        target: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The master was stopped by a signal (SIGTERM or SIGINT): it forwarded SIGTERM to its
    /// workers, reaped them and destroyed its resources.
    #[error("the master was stopped by {signal}")]
    Stopped {
        /// The signal's name, e.g. `"SIGTERM"`.
        signal: &'static str,
    },
    /// The master is shutting down (it was stopped, or its shutdown timeout expired) and
    /// starts no more processes.
    #[error("the master is shutting down and starts no more processes")]
    ShuttingDown,
    /// `startup` or `run` in a process that already is a master or a worker.
    #[error("{call}: this process already is a netmcore master or worker")]
    AlreadyStarted {
        /// The call, `"startup"` or `"run"`.
        call: &'static str,
    },
    /// The socket directory exists but may not be used: not a directory (a symbolic link is
    /// refused too), owned by another user, or writable by group or others.
    #[error("socket directory {} refused: {reason}", path.display())]
    InsecureSocketDirectory {
        /// The directory.
        path: PathBuf,
        /// Why it is refused.
        reason: String,
    },
    /// The socket directory's path is so long that `admin.sock` inside it would not fit in a
    /// Unix socket address (`sun_path` holds 107 bytes and a NUL).
    #[error(
        "socket directory {} refused: {len} bytes long, but a socket inside it must fit in {limit} bytes",
        path.display()
    )]
    SocketDirectoryPathTooLong {
        /// The directory.
        path: PathBuf,
        /// The length of the admin socket's path inside it, in bytes.
        len: usize,
        /// The longest socket path the OS accepts, in bytes.
        limit: usize,
    },
    /// The ledger of the socket directory could not be read or written.
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
    /// A malformed message or another protocol violation between a worker and its master.
    #[error("{call}: protocol error with the master: {source}")]
    Protocol {
        /// The call that was talking to the master, e.g. `"join"`.
        call: &'static str,
        /// What went wrong on the channel.
        #[source]
        source: netmcore_ipc::Error,
    },
    /// An OS call failed in the master while it served a worker's request.
    #[error("{op} {target} failed in the master: {message}")]
    InMaster {
        /// The call, e.g. `"shm_open"`.
        op: String,
        /// The object.
        target: String,
        /// The OS error's message.
        message: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`].
    pub(crate) fn io(
        op: &'static str,
        target: impl Into<String>,
        source: impl Into<io::Error>,
    ) -> Error {
        Error::Io {
            op,
            target: target.into(),
            source: source.into(),
        }
    }

    /// The error a worker reports when its channel to the master failed during `call`.
    pub(crate) fn channel(call: &'static str, e: netmcore_ipc::Error) -> Error {
        match e {
            netmcore_ipc::Error::Closed | netmcore_ipc::Error::Truncated { .. } => {
                Error::MasterGone
            }
            e => Error::Protocol { call, source: e },
        }
    }

    /// The error for a request the master refused.
    pub(crate) fn from_remote(e: RemoteError) -> Error {
        match e {
            RemoteError::NoResource(id) => Error::NoResource(id),
            RemoteError::UnknownProcess(pid) => Error::UnknownProcess(pid),
            RemoteError::WrongKind {
                id,
                expected,
                found,
            } => Error::WrongKind {
                id,
                expected,
                found,
            },
            RemoteError::NotShared(id) => Error::NotShared(id),
            RemoteError::NotInMaster => Error::NotInMaster,
            RemoteError::InvalidName(name) => Error::InvalidName(name),
            RemoteError::ShuttingDown => Error::ShuttingDown,
            RemoteError::Io {
                op,
                target,
                message,
            } => Error::InMaster {
                op,
                target,
                message,
            },
            other => Error::InMaster {
                op: "request".to_owned(),
                target: String::new(),
                message: other.to_string(),
            },
        }
    }
}

impl From<RegistryError> for Error {
    fn from(e: RegistryError) -> Error {
        match e {
            RegistryError::NoResource(id) => Error::NoResource(id),
            RegistryError::UnknownProcess(pid) => Error::UnknownProcess(pid),
            RegistryError::WrongKind {
                id,
                expected,
                found,
            } => Error::WrongKind {
                id,
                expected,
                found,
            },
            RegistryError::NotShared(id) => Error::NotShared(id),
            RegistryError::InvalidName(name) => Error::InvalidName(name),
            other => Error::InvalidName(other.to_string()),
        }
    }
}

/// The wire form of a registry refusal, for a worker's request.
pub(crate) fn remote(e: RegistryError) -> RemoteError {
    match e {
        RegistryError::NoResource(id) => RemoteError::NoResource(id),
        RegistryError::UnknownProcess(pid) => RemoteError::UnknownProcess(pid),
        RegistryError::WrongKind {
            id,
            expected,
            found,
        } => RemoteError::WrongKind {
            id,
            expected,
            found,
        },
        RegistryError::NotShared(id) => RemoteError::NotShared(id),
        RegistryError::InvalidName(name) => RemoteError::InvalidName(name),
        other => RemoteError::InvalidName(other.to_string()),
    }
}

/// The wire form of an error the master met while serving a request.
pub(crate) fn remote_error(e: &Error) -> RemoteError {
    match e {
        Error::NoResource(id) => RemoteError::NoResource(*id),
        Error::UnknownProcess(pid) => RemoteError::UnknownProcess(*pid),
        Error::ShuttingDown => RemoteError::ShuttingDown,
        Error::NotShared(id) => RemoteError::NotShared(*id),
        Error::InvalidName(name) => RemoteError::InvalidName(name.clone()),
        Error::WrongKind {
            id,
            expected,
            found,
        } => RemoteError::WrongKind {
            id: *id,
            expected: *expected,
            found: *found,
        },
        Error::InMaster {
            op,
            target,
            message,
        } => RemoteError::Io {
            op: op.clone(),
            target: target.clone(),
            message: message.clone(),
        },
        Error::Io { op, target, source } => RemoteError::Io {
            op: (*op).to_owned(),
            target: target.clone(),
            message: source.to_string(),
        },
        other => RemoteError::Io {
            op: "request".to_owned(),
            target: String::new(),
            message: other.to_string(),
        },
    }
}
