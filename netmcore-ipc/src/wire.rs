//! The wire protocol between a worker and the master: what a worker asks ([`Request`]) and
//! what the master sends back or tells it unprompted ([`Response`]).
//!
//! ```
//! use netmcore_encap::Encap;
//! use netmcore_ipc::channel::Channel;
//! use netmcore_ipc::wire::{Outcome, Request, Response};
//! use netmcore_resources::{Inherit, ProcessId, ResId};
//!
//! let (mut master, mut worker) = Channel::pair()?;
//!
//! // The worker asks; the master serves the request and answers.
//! let arg = Encap::wrap(&vec![1u32, 2, 3]).expect("wrap");
//! worker.send_msg(&Request::Start { fork_point: ResId(0), arg, inherit: Inherit::Nothing })?;
//! let request: Request = master.recv_msg()?;
//! assert!(request.expects_response());
//! master.send_msg(&Response::Started(ProcessId(1)))?;
//! assert_eq!(worker.recv_msg::<Response>()?, Response::Started(ProcessId(1)));
//!
//! // A release is answered once the master has let go for the worker (and destroyed the
//! // object if the worker was its last user).
//! worker.send_msg(&Request::Release(ResId(4)))?;
//! assert!(master.recv_msg::<Request>()?.expects_response());
//! master.send_msg(&Response::Ok)?;
//! assert_eq!(worker.recv_msg::<Response>()?, Response::Ok);
//!
//! // The report of a process's end is the one message nobody answers.
//! worker.send_msg(&Request::Finished(Outcome::Failed("panicked".into())))?;
//! assert!(!master.recv_msg::<Request>()?.expects_response());
//! # Ok::<(), netmcore_ipc::Error>(())
//! ```
//!
//! # Conversation rules
//!
//! * Every frame carries [`PROTOCOL_VERSION`] in its header (see the
//!   [channel docs](crate::channel#frame-layout)); a frame of another version is an
//!   [`Error::Protocol`] that names both versions. There is no handshake.
//! * A worker has at most one request in flight: it sends a request and reads until the
//!   response comes. The master answers every request for which
//!   [`Request::expects_response`] is true with exactly one [`Response`], in the order the
//!   requests came, so no correlation id is needed. A deferred answer (a `join` on a running
//!   process) simply comes later; the worker sends nothing meanwhile. A worker whose threads
//!   share one channel must hold a lock from sending a request to reading its response.
//! * [`Request::Finished`] is the only one-way request. The master reads a `Finished` before
//!   the end of the stream that follows the worker's exit, so the worker need not wait for an
//!   acknowledgement; and nobody can observe its effects too early: the worker exits right
//!   after sending it, and a joiner learns of the end only from the master's answer, which
//!   the master sends after it has released (and destroyed) what the process used.
//! * Every request that destroys or changes something on the worker's behalf is answered
//!   only after it happened. [`Request::Release`] in particular is answered with
//!   [`Response::Ok`] once the worker is no longer a user and, if it was the last one, the
//!   object is destroyed and its ledger record written: a worker that writes a new file at
//!   the same path after `release` returned never loses it to a late `unlink`.
//! * Between responses, the master may send the unprompted [`Response::Run`] and
//!   [`Response::Shutdown`] (see [`Response::is_unprompted`]); a worker waiting for a
//!   response must be ready for them.
//! * Large messages (a 256 MiB argument or result) travel in a sealed memfd, which the
//!   channel does on its own; messages carry no descriptors of their own.
//! * Decoding any byte string gives a message or an error, never a panic; a message must use
//!   all of its frame's body.

use std::fmt;
use std::path::PathBuf;

use netmcore_encap::Encap;
use netmcore_resources::{Inherit, ProcessId, ResId, ResourceDesc, ResourceKind};
use serde::{Deserialize, Serialize};

use crate::{Error, Result, codec};

/// The version of the frame layout, the message encoding and the conversation rules, sent in
/// every frame header. Version 2: [`Request::Release`] is answered. Version 3:
/// [`Request::StartStream`].
pub const PROTOCOL_VERSION: u8 = 3;

/// What a worker sends to the master: one variant per facade call a worker can make, plus
/// the delivery of its process's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Request {
    /// `start_with`: fork a process through `fork_point`, passing `arg`; answered with
    /// [`Response::Started`] once the process exists.
    Start {
        /// The fork point of the process type.
        fork_point: ResId,
        /// The argument of the process body.
        arg: Encap,
        /// Which inheritable resources the new process receives.
        inherit: Inherit,
    },
    /// `join`: wait for a process started through the fork point of `join_point`; answered
    /// with [`Response::Joined`] when it ended (a deferred answer while it runs).
    Join {
        /// The join point of the process type.
        join_point: ResId,
        /// The process to join.
        pid: ProcessId,
    },
    /// `join_nowait`: [`Response::Joined`] at once, `None` while the process runs.
    JoinNowait {
        /// The join point of the process type.
        join_point: ResId,
        /// The process to join.
        pid: ProcessId,
    },
    /// The process body of this worker ended; one-way.
    Finished(Outcome),
    /// `get_resource` (with `expected: None`) or `get_file` / `get_shm` / `get_sem` (with the
    /// kind the caller needs, so the master answers `WrongKind` for another one); answered
    /// with [`Response::Resource`].
    GetResource {
        /// The resource.
        id: ResId,
        /// The kind the caller expects, if it expects one.
        expected: Option<ResourceKind>,
    },
    /// `release`: the worker is no longer a user of the resource; answered with
    /// [`Response::Ok`] after the master let go for it and destroyed the object if the worker
    /// was its last user (or [`Response::Error`] when destroying it failed; it is forgotten
    /// anyway).
    Release(ResId),
    /// `manage_file`: register an existing file by absolute path; answered with
    /// [`Response::Resource`].
    ManageFile(#[serde(with = "netmcore_resources::path_bytes")] PathBuf),
    /// `manage_shm`: register an existing POSIX shm object by name; answered with
    /// [`Response::Resource`].
    ManageShm(String),
    /// `manage_sem`: register an existing named semaphore; answered with
    /// [`Response::Resource`].
    ManageSem(String),
    /// `create_preallocated_shm`: answered with [`Response::Preallocated`].
    CreatePreallocatedShm {
        /// The name prefix, starting with `/`; the master adds a unique suffix.
        prefix: String,
        /// The fixed size in bytes.
        size: u64,
    },
    /// `self_process_id`: answered with [`Response::ProcessId`].
    SelfProcessId,
    /// `create_shm`: the master records, creates (`O_EXCL`, 0600) and sizes a shm object
    /// that the worker maps itself, the worker being its only user; answered with
    /// [`Response::Resource`] (a `PosixShm` with its name).
    CreateShm {
        /// The name prefix, starting with `/`; the master adds a unique suffix.
        prefix: String,
        /// The size in bytes.
        size: u64,
    },
    /// `start_with` of an argument in two pieces (`Encap::wrap_pieces`): the `head` here, and
    /// the `run_len` bytes that complete it through the pipe whose read end comes with the
    /// frame, the one descriptor a request may carry. The master passes the pipe to the new
    /// process, which reads the run; answered as [`Start`](Request::Start). The worker
    /// writes the run once the request is sent and reads the answer after.
    StartStream {
        /// The fork point of the process type.
        fork_point: ResId,
        /// The envelope's first piece.
        #[serde(with = "netmcore_encap::bytes")]
        head: Vec<u8>,
        /// The length of the second piece, which comes through the pipe.
        run_len: u64,
        /// Which inheritable resources the new process receives.
        inherit: Inherit,
    },
}

impl Request {
    /// Whether the master answers this request with a [`Response`] (all but the one-way
    /// [`Finished`](Request::Finished)).
    pub fn expects_response(&self) -> bool {
        !matches!(self, Request::Finished(_))
    }
}

/// How the process body of a worker ended, as the worker reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Outcome {
    /// The body returned this result.
    Returned(Encap),
    /// The body failed (panicked, or its result could not be encoded); the message says how.
    /// Its `join` gives `None`.
    Failed(String),
}

/// What the master sends to a worker: the answer to its request, or an unprompted command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Response {
    /// The process was started and has this id.
    Started(ProcessId),
    /// The outcome of a join: `Some(result)` when the body returned, `None` when it failed,
    /// exited or was killed (or, for `join_nowait`, still runs).
    Joined(Option<Encap>),
    /// A resource, for `get_resource`, `get_*` and `manage_*`.
    Resource {
        /// Its id.
        id: ResId,
        /// What it is.
        desc: ResourceDesc,
    },
    /// The preallocated shm that was created.
    Preallocated {
        /// Its id.
        id: ResId,
        /// Its full name.
        name: String,
    },
    /// The id of the asking worker's process.
    ProcessId(ProcessId),
    /// Done, nothing to report.
    Ok,
    /// The request failed.
    Error(RemoteError),
    /// Unprompted, to a warm, idle worker: become process `pid`, running the body of
    /// `fork_point` with `arg`, keeping exactly the preallocated shm resources `inherited`.
    Run {
        /// The id of the process this worker becomes.
        pid: ProcessId,
        /// The fork point whose body to run.
        fork_point: ResId,
        /// The argument of the body.
        arg: Encap,
        /// The preallocated shm resources the process inherits (the resolved `Inherit`).
        inherited: Vec<ResId>,
    },
    /// Unprompted: exit now (an idle worker that is no longer needed, or the end of the run).
    Shutdown,
}

impl Response {
    /// Whether this is a command the master sends on its own, not the answer to a request.
    pub fn is_unprompted(&self) -> bool {
        matches!(self, Response::Run { .. } | Response::Shutdown)
    }
}

/// A failure of a request, as it crosses the wire; it mirrors the facade's errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// No resource has this id (or it is not a fork point where one is needed).
    #[error("no {0}")]
    NoResource(ResId),
    /// No process with this id can be joined through the join point used.
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
    /// A preallocated shm that the asking process did not inherit.
    #[error("{0} was not inherited by this process")]
    NotShared(ResId),
    /// The call is only allowed in the master.
    #[error("only the master may do this")]
    NotInMaster,
    /// A shm or semaphore name or a file path that is not absolute, or otherwise refused.
    #[error("invalid name {0:?}")]
    InvalidName(String),
    /// The master is shutting down and starts no more processes.
    #[error("the master is shutting down")]
    ShuttingDown,
    /// An OS call failed in the master.
    #[error("{op} {target}: {message}")]
    Io {
        /// The call, e.g. `"shm_open"`.
        op: String,
        /// The object, e.g. the shm name.
        target: String,
        /// The OS error's message.
        message: String,
    },
}

/// A message that travels in a frame body: [`Request`] or [`Response`]. Sealed.
pub trait Message: Sized + sealed::Sealed {
    /// What a frame of this message is called in errors, e.g. `"request"`.
    const WHAT: &'static str;

    /// The length of the encoded message in bytes.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] when it cannot be encoded.
    fn encoded_len(&self) -> Result<usize>;

    /// Encodes the message into `out`, which is exactly
    /// [`encoded_len`](Message::encoded_len) bytes long.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] when it cannot be encoded or `out` has another length.
    fn encode_into(&self, out: &mut [u8]) -> Result<()>;

    /// Encodes the message into `memfd` from offset 0 with `pwrite`; it must come to exactly
    /// `len` bytes ([`encoded_len`](Message::encoded_len)).
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] when it cannot be encoded or has another length, [`Error::Os`]
    /// naming `pwrite`.
    fn encode_to_memfd(&self, memfd: &crate::memfd::Memfd, len: usize) -> Result<()>;

    /// Encodes the message into a frame body.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] when it cannot be encoded.
    fn encode(&self) -> Result<Vec<u8>>;

    /// Decodes a frame body; all of it must be used.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] naming [`WHAT`](Message::WHAT) for anything that is not exactly
    /// one message. Never panics.
    fn decode(body: &[u8]) -> Result<Self>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Request {}
    impl Sealed for super::Response {}
}

macro_rules! message {
    ($ty:ty, $what:literal) => {
        impl Message for $ty {
            const WHAT: &'static str = $what;

            fn encoded_len(&self) -> Result<usize> {
                codec::encoded_len(Self::WHAT, self)
            }

            fn encode_into(&self, out: &mut [u8]) -> Result<()> {
                codec::encode_into(Self::WHAT, self, out)
            }

            fn encode(&self) -> Result<Vec<u8>> {
                codec::encode(Self::WHAT, self)
            }

            fn decode(body: &[u8]) -> Result<Self> {
                codec::decode(Self::WHAT, body)
            }

            fn encode_to_memfd(&self, memfd: &crate::memfd::Memfd, len: usize) -> Result<()> {
                codec::encode_to_memfd(Self::WHAT, self, memfd, len)
            }
        }
    };
}

message!(Request, "request");
message!(Response, "response");

impl fmt::Display for Request {
    /// A short description for logs: the call and its ids, never the argument's bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Start {
                fork_point, arg, ..
            } => {
                write!(f, "start through {fork_point} with a {}", arg.type_name())
            }
            Request::Join { join_point, pid } => write!(f, "join {pid} through {join_point}"),
            Request::JoinNowait { join_point, pid } => {
                write!(f, "join_nowait {pid} through {join_point}")
            }
            Request::Finished(Outcome::Returned(r)) => {
                write!(f, "finished with a {}", r.type_name())
            }
            Request::Finished(Outcome::Failed(m)) => write!(f, "failed: {m}"),
            Request::GetResource { id, expected: None } => write!(f, "get {id}"),
            Request::GetResource {
                id,
                expected: Some(k),
            } => write!(f, "get {id} as a {k}"),
            Request::Release(id) => write!(f, "release {id}"),
            Request::ManageFile(p) => write!(f, "manage file {}", p.display()),
            Request::ManageShm(n) => write!(f, "manage shm {n:?}"),
            Request::ManageSem(n) => write!(f, "manage semaphore {n:?}"),
            Request::CreatePreallocatedShm { prefix, size } => {
                write!(f, "create preallocated shm {prefix:?} of {size} bytes")
            }
            Request::SelfProcessId => f.write_str("self_process_id"),
            Request::CreateShm { prefix, size } => {
                write!(f, "create shm {prefix:?} of {size} bytes")
            }
            Request::StartStream {
                fork_point,
                head,
                run_len,
                ..
            } => write!(
                f,
                "start through {fork_point} with {} + {run_len} bytes through a pipe",
                head.len()
            ),
        }
    }
}

/// Paths travel as their raw bytes, so that a file name that is not utf-8 works too.
impl From<RemoteError> for Error {
    /// A remote error as a [`Error::Protocol`] of this crate (the facade maps each variant to
    /// its own error instead).
    fn from(e: RemoteError) -> Error {
        Error::Protocol {
            what: "master",
            reason: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encap() -> Encap {
        Encap::wrap(&(1u8, "two".to_owned())).unwrap()
    }

    #[test]
    fn a_large_argument_or_result_stays_in_its_memfd_mapping() {
        let (mut a, mut b) = crate::channel::Channel::pair().unwrap();
        let big = Encap::wrap(&vec![5u8; 1 << 20]).unwrap();
        let start = Request::Start {
            fork_point: ResId(3),
            arg: big.clone(),
            inherit: Inherit::Nothing,
        };
        a.send_msg(&start).unwrap();
        let Request::Start { arg, .. } = b.recv_msg::<Request>().unwrap() else {
            panic!("not a start")
        };
        assert!(arg.is_shared(), "a memfd-borne argument is not copied out");
        assert_eq!(arg, big);
        // It outlives the channel and the frame, and reads the same.
        drop((a, b));
        assert_eq!(arg.unwrap::<Vec<u8>>().unwrap(), vec![5u8; 1 << 20]);
        // A small one arrives inline and is a copy of its own.
        let (mut a, mut b) = crate::channel::Channel::pair().unwrap();
        a.send_msg(&Response::Joined(Some(encap()))).unwrap();
        let Response::Joined(Some(small)) = b.recv_msg::<Response>().unwrap() else {
            panic!("not joined")
        };
        assert!(!small.is_shared());
        assert_eq!(small, encap());
    }

    pub(crate) fn every_request() -> Vec<Request> {
        use std::os::unix::ffi::OsStrExt;
        vec![
            Request::Start {
                fork_point: ResId(0),
                arg: encap(),
                inherit: Inherit::Nothing,
            },
            Request::Start {
                fork_point: ResId(2),
                arg: encap(),
                inherit: Inherit::All,
            },
            Request::Start {
                fork_point: ResId(2),
                arg: encap(),
                inherit: Inherit::Resources(vec![ResId(5), ResId(9)]),
            },
            Request::Join {
                join_point: ResId(1),
                pid: ProcessId(3),
            },
            Request::JoinNowait {
                join_point: ResId(1),
                pid: ProcessId(u64::MAX),
            },
            Request::Finished(Outcome::Returned(encap())),
            Request::Finished(Outcome::Failed("panicked at 'boom'".into())),
            Request::GetResource {
                id: ResId(7),
                expected: None,
            },
            Request::GetResource {
                id: ResId(7),
                expected: Some(ResourceKind::PosixSem),
            },
            Request::Release(ResId(7)),
            Request::ManageFile("/tmp/data".into()),
            Request::ManageFile(std::ffi::OsStr::from_bytes(b"/tmp/\xff\xfe").into()),
            Request::ManageShm("/shm".into()),
            Request::ManageSem("/sem".into()),
            Request::CreatePreallocatedShm {
                prefix: "/pre".into(),
                size: 1 << 30,
            },
            Request::SelfProcessId,
            Request::CreateShm {
                prefix: "/netmcore-shared-".into(),
                size: 4096,
            },
            Request::StartStream {
                fork_point: ResId(5),
                head: b"NMEC head".to_vec(),
                run_len: 64 << 20,
                inherit: Inherit::All,
            },
        ]
    }

    pub(crate) fn every_response() -> Vec<Response> {
        vec![
            Response::Started(ProcessId(0)),
            Response::Joined(None),
            Response::Joined(Some(encap())),
            Response::Resource {
                id: ResId(1),
                desc: ResourceDesc::File("/f".into()),
            },
            Response::Resource {
                id: ResId(3),
                // A path that is not UTF-8 travels as raw bytes.
                desc: ResourceDesc::File(std::path::PathBuf::from(
                    <std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(
                        b"/tmp/\xff\xfe name".to_vec(),
                    ),
                )),
            },
            Response::Resource {
                id: ResId(2),
                desc: ResourceDesc::PosixShmPreallocated {
                    name: "/p".into(),
                    size: 4096,
                },
            },
            Response::Preallocated {
                id: ResId(3),
                name: "/pre-123".into(),
            },
            Response::ProcessId(ProcessId(4)),
            Response::Ok,
            Response::Error(RemoteError::NoResource(ResId(1))),
            Response::Error(RemoteError::UnknownProcess(ProcessId(1))),
            Response::Error(RemoteError::WrongKind {
                id: ResId(1),
                expected: ResourceKind::File,
                found: ResourceKind::PosixShm,
            }),
            Response::Error(RemoteError::NotShared(ResId(1))),
            Response::Error(RemoteError::NotInMaster),
            Response::Error(RemoteError::InvalidName("x".into())),
            Response::Error(RemoteError::ShuttingDown),
            Response::Error(RemoteError::Io {
                op: "shm_open".into(),
                target: "/x".into(),
                message: "permission denied".into(),
            }),
            Response::Run {
                pid: ProcessId(5),
                fork_point: ResId(0),
                arg: encap(),
                inherited: vec![ResId(8)],
            },
            Response::Shutdown,
        ]
    }

    #[test]
    fn every_request_round_trips() {
        for request in every_request() {
            let body = request.encode().unwrap();
            assert_eq!(request.encoded_len().unwrap(), body.len());
            assert_eq!(Request::decode(&body).unwrap(), request, "{request}");
        }
    }

    #[test]
    fn every_response_round_trips() {
        for response in every_response() {
            let body = response.encode().unwrap();
            let mut exact = vec![0; response.encoded_len().unwrap()];
            response.encode_into(&mut exact).unwrap();
            assert_eq!(exact, body);
            assert_eq!(Response::decode(&body).unwrap(), response);
        }
    }

    #[test]
    fn one_way_and_unprompted_messages_are_marked() {
        let one_way: Vec<_> = every_request()
            .into_iter()
            .filter(|r| !r.expects_response())
            .collect();
        assert_eq!(one_way.len(), 2);
        assert!(one_way.iter().all(|r| matches!(r, Request::Finished(_))));
        assert!(Request::Release(ResId(7)).expects_response());
        let unprompted = every_response()
            .into_iter()
            .filter(Response::is_unprompted)
            .count();
        assert_eq!(unprompted, 2);
    }

    #[test]
    fn trailing_bytes_and_garbage_are_protocol_errors() {
        let mut body = Request::SelfProcessId.encode().unwrap();
        body.push(0);
        assert!(matches!(
            Request::decode(&body),
            Err(Error::Protocol {
                what: "request",
                ..
            })
        ));
        assert!(matches!(
            Response::decode(&[]),
            Err(Error::Protocol {
                what: "response",
                ..
            })
        ));
        assert!(matches!(
            Response::decode(&[200]),
            Err(Error::Protocol { .. })
        ));
    }

    #[test]
    fn remote_errors_read_well() {
        let e = RemoteError::WrongKind {
            id: ResId(3),
            expected: ResourceKind::File,
            found: ResourceKind::PosixSem,
        };
        assert_eq!(e.to_string(), "resource 3 is a posix semaphore, not a file");
        assert_eq!(
            RemoteError::NoResource(ResId(9)).to_string(),
            "no resource 9"
        );
        assert_eq!(
            RemoteError::UnknownProcess(ProcessId(2)).to_string(),
            "unknown process 2"
        );
    }
}
