//! Hostile peers: process bodies that write what a worker must not to their channel to the
//! master — garbage, a frame that claims 4 GiB, a wrong protocol version, an undecodable
//! body, a truncated frame, two requests without waiting for the answer, requests after the
//! report of the end, a start whose argument should come through a pipe that is not attached. The master must close that worker's channel and end it (its join is
//! `None`), keep serving everyone else, and leak nothing.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use netmcore::Encap;
use netmcore_ipc::channel::{HEADER_LEN, MAGIC, encode_frame};
use netmcore_ipc::shm::ShmObject;
use netmcore_ipc::wire::{Message as _, Outcome, PROTOCOL_VERSION, Request};
use serde::{Deserialize, Serialize};

use crate::bodies::{PATIENCE, types};
use crate::rng::Rng;
use crate::shared::{self, Counter};
use crate::sys;

/// What a hostile body gives when the master let it live after its bad write: a result the
/// coordinator never expects.
pub const SURVIVED: u64 = 0x5ec0_0d1e;

/// What a hostile body reports as its result before it asks for more (see
/// [`Hostile::FinishedThenManage`]).
pub const FORGED: u64 = 0xf0_12ed;

/// How long the object registered after a forged end may take to be destroyed.
const DESTROY_GRACE: Duration = Duration::from_secs(5);

/// What a hostile body writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Hostile {
    /// `len` random bytes whose first is not the magic byte (at least a header's length).
    Garbage {
        /// The seed of the bytes.
        seed: u64,
        /// How many.
        len: u32,
    },
    /// A header that announces a body of `u32::MAX` bytes.
    Oversize,
    /// A header with another protocol version.
    BadVersion,
    /// A well-formed frame whose body is no request (an unknown variant, then `len` random
    /// bytes).
    BadBody {
        /// The seed of the bytes.
        seed: u64,
        /// How many.
        len: u32,
    },
    /// Half a frame, then the process exits.
    Truncated,
    /// A `join` of a running process (whose answer the master defers), then another request
    /// without waiting for that answer.
    RequestWhileJoining,
    /// A `StartStream` (an argument whose bytes come through a pipe) without the pipe.
    StreamWithoutPipe,
    /// The report of the end of the body (`Finished` with [`FORGED`]), then a `manage_shm`
    /// of the shm object named in the argument, as if the process went on; then the body
    /// returns.
    FinishedThenManage,
}

/// The argument of a hostile body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostileArg {
    /// What it does.
    pub what: Hostile,
    /// The shm object it creates and registers for [`Hostile::FinishedThenManage`].
    pub name: String,
}

/// Draws a hostile action.
pub fn draw(rng: &mut Rng, name: String) -> HostileArg {
    let what = match rng.range(0, 7) {
        // At least a header's worth: the master reads a whole header before it judges one.
        0 => Hostile::Garbage {
            seed: rng.next_u64(),
            len: rng.range(HEADER_LEN as u64, 64) as u32,
        },
        1 => Hostile::Oversize,
        2 => Hostile::BadVersion,
        3 => Hostile::BadBody {
            seed: rng.next_u64(),
            len: rng.range(0, 32) as u32,
        },
        4 => Hostile::Truncated,
        5 => Hostile::RequestWhileJoining,
        6 => Hostile::StreamWithoutPipe,
        _ => Hostile::FinishedThenManage,
    };
    HostileArg { what, name }
}

impl HostileArg {
    /// Processes it starts, itself included.
    pub fn processes(&self) -> u64 {
        match self.what {
            Hostile::RequestWhileJoining => 2,
            _ => 1,
        }
    }
}

/// The descriptor of this worker's channel to the master: its only socket.
fn channel_fd() -> Result<i32, String> {
    let sockets: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map_err(|e| format!("list /proc/self/fd: {e}"))?
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
        })
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    match sockets.as_slice() {
        [fd] => Ok(*fd),
        other => Err(format!(
            "expected one socket (the channel), found {other:?}"
        )),
    }
}

/// `len` random bytes.
fn random_bytes(seed: u64, len: u32) -> Vec<u8> {
    let mut rng = Rng::new(seed, 0);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// A frame holding `request`.
fn frame(request: &Request) -> Result<Vec<u8>, String> {
    let body = request
        .encode()
        .map_err(|e| format!("encode {request:?}: {e}"))?;
    encode_frame(&body).map_err(|e| format!("frame {request:?}: {e}"))
}

/// The hostile body.
pub fn hostile(arg: HostileArg) -> Result<u64, String> {
    let fd = channel_fd()?;
    let header = |version: u8, len: u32| {
        let mut h = vec![MAGIC, version, 0, 0];
        h.extend_from_slice(&len.to_le_bytes());
        debug_assert_eq!(h.len(), HEADER_LEN);
        h
    };
    let bytes = match arg.what {
        Hostile::Garbage { seed, len } => {
            let mut bytes = random_bytes(seed, len);
            if bytes[0] == MAGIC {
                bytes[0] = !MAGIC;
            }
            bytes
        }
        Hostile::Oversize => header(PROTOCOL_VERSION, u32::MAX),
        Hostile::BadVersion => {
            let mut bytes = header(PROTOCOL_VERSION.wrapping_add(99), 1);
            bytes.push(0);
            bytes
        }
        Hostile::BadBody { seed, len } => {
            let mut body = vec![0x7f];
            body.extend(random_bytes(seed, len));
            encode_frame(&body).map_err(|e| format!("frame: {e}"))?
        }
        Hostile::Truncated => {
            let mut bytes = header(PROTOCOL_VERSION, 100);
            bytes.extend_from_slice(&[0; 10]);
            bytes
        }
        Hostile::RequestWhileJoining => {
            let sleeper = types().sleeper;
            let pid = sleeper
                .start(&SLEEPER_MILLIS)
                .map_err(|e| format!("start a sleeper: {e}"))?;
            let mut bytes = frame(&Request::Join {
                join_point: sleeper.join_point(),
                pid,
            })?;
            bytes.extend(frame(&Request::SelfProcessId)?);
            bytes
        }
        Hostile::StreamWithoutPipe => {
            let data = vec![0u8; 2 << 20];
            let pieces = Encap::wrap_pieces(&data).map_err(|e| e.to_string())?;
            frame(&Request::StartStream {
                fork_point: types().sleeper.fork_point(),
                head: pieces.head().to_vec(),
                run_len: data.len() as u64,
                inherit: netmcore::Inherit::Nothing,
            })?
        }
        Hostile::FinishedThenManage => {
            let forged = Encap::wrap(&Ok::<u64, String>(FORGED)).map_err(|e| e.to_string())?;
            frame(&Request::Finished(Outcome::Returned(forged)))?
        }
    };
    // The object exists (sized, marked pending) before the forged end lets the joiner look.
    let marker = match arg.what {
        Hostile::FinishedThenManage => {
            shared::add(Counter::Resources, 1);
            Some(create_marked(&arg.name)?)
        }
        _ => None,
    };
    shared::add(Counter::Faults, 1);
    // The master may close the channel before every byte is written: that is its answer.
    let _ = sys::write_all(fd, &bytes);
    match (arg.what, marker) {
        (Hostile::Truncated, _) => std::process::exit(0),
        (Hostile::FinishedThenManage, Some(marker)) => {
            // The master should refuse or end this process; if it registers the object, it
            // must still destroy it when this process ends, which it does right away.
            let outcome = match netmcore::manage_shm(&arg.name) {
                Ok(_) => REGISTERED,
                Err(_) => REFUSED,
            };
            marker.store(outcome, Ordering::Release);
            return Ok(SURVIVED);
        }
        _ => {}
    }
    std::thread::sleep(PATIENCE);
    Ok(SURVIVED)
}

/// How long the sleeper that a hostile body joins sleeps.
const SLEEPER_MILLIS: u64 = 300;

/// The marker of an object whose `manage_shm` has not returned yet.
const PENDING: u64 = 0;
/// The marker of an object that `manage_shm` registered.
const REGISTERED: u64 = 1;
/// The marker of an object whose `manage_shm` failed.
const REFUSED: u64 = 2;

/// Creates the shm object `name` with a word that tells whether it was registered.
fn create_marked(name: &str) -> Result<&'static AtomicU64, String> {
    let object = ShmObject::create(name).map_err(|e| format!("shm_open {name}: {e}"))?;
    object
        .set_size(8)
        .map_err(|e| format!("ftruncate {name}: {e}"))?;
    let memory = object
        .map_shared()
        .map_err(|e| format!("mmap {name}: {e}"))?;
    memory
        .atomic_u64_at(0)
        .ok_or_else(|| format!("{name} is not 8-byte aligned"))
}

/// What became of the `manage_shm` of the object `name` (made by [`create_marked`]): its
/// marker once it is no longer [`PENDING`] (or after [`DESTROY_GRACE`]), or `None` when the
/// object is gone.
fn registration(name: &str) -> Result<Option<u64>, String> {
    let object = match ShmObject::open(name) {
        Ok(object) => object,
        Err(_) if !shm_path(name).exists() => return Ok(None),
        Err(e) => return Err(format!("shm_open {name}: {e}")),
    };
    let memory = object
        .map_shared()
        .map_err(|e| format!("mmap {name}: {e}"))?;
    let marker = memory
        .atomic_u64_at(0)
        .ok_or_else(|| format!("{name} is not 8-byte aligned"))?;
    let deadline = Instant::now() + DESTROY_GRACE;
    while marker.load(Ordering::Acquire) == PENDING && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(Some(marker.load(Ordering::Acquire)))
}

/// The file of the shm object `name`.
fn shm_path(name: &str) -> std::path::PathBuf {
    Path::new("/dev/shm").join(name.trim_start_matches('/'))
}

/// Checks what the join of a hostile process gave.
pub fn check(
    arg: &HostileArg,
    joined: netmcore::Result<Option<Result<u64, String>>>,
) -> Result<(), String> {
    match (arg.what, &joined) {
        (Hostile::FinishedThenManage, Ok(Some(Ok(FORGED)) | None)) => {
            // Whatever the master made of it, an object it registered must not outlive the
            // process; one it refused is this test's own to remove.
            match registration(&arg.name)? {
                None => return Ok(()),
                Some(REGISTERED) => {}
                Some(_) => {
                    return netmcore_ipc::shm::unlink(&arg.name)
                        .map_err(|e| format!("shm_unlink {}: {e}", arg.name));
                }
            }
            let deadline = Instant::now() + DESTROY_GRACE;
            while shm_path(&arg.name).exists() {
                if Instant::now() > deadline {
                    let _ = netmcore_ipc::shm::unlink(&arg.name);
                    return Err(format!(
                        "{:?}: {} was registered by the process after its forged end, and \
                         still exists {DESTROY_GRACE:?} after the process returned",
                        arg.what, arg.name
                    ));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(())
        }
        (_, Ok(None)) => Ok(()),
        _ => Err(format!(
            "hostile {:?} gave {joined:?}, expected Ok(None) (the master ends the process)",
            arg.what
        )),
    }
}
