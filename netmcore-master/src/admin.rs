//! The admin socket: `admin.sock` in the socket directory, through which `netmcore-admin`
//! (or [`admin_status`]) asks a live master what it runs and holds.
//!
//! # Protocol, version 1
//!
//! A client connects to `admin.sock` and sends one frame of the channel format (see
//! `netmcore_ipc::channel`) whose body is one UTF-8 line, [`AdminRequest::Status`]:
//!
//! ```text
//! netmcore-admin 1 status
//! ```
//!
//! The master answers with one frame of UTF-8 lines and closes the connection. The first
//! line is `netmcore-admin 1 ok` or `netmcore-admin 1 error <message>`; after `ok` come the
//! status lines and a final `end`:
//!
//! ```text
//! netmcore-admin 1 ok
//! master unix-pid 1234 state running
//! process 0 running unix-pid 1240 join-point 1 started-by master uses 4
//! process 2 finished-with-result unix-pid - join-point 1 started-by 0 uses -
//! resource 0 fork-point users master join-point 1
//! resource 1 join-point users master fork-point 0
//! resource 4 posix-shm users master,0 name /netmcore-1234-5e1f-counter
//! resource 5 file users 0 path /tmp/job/out file.txt
//! resource 6 posix-shm-preallocated users master size 65536 name /netmcore-1234-77ab-pool
//! end
//! ```
//!
//! A name or path is the rest of its line, with `\\`, control characters and bytes that are
//! not UTF-8 escaped (`\\`, `\n`, `\xNN`). A reader ignores lines it does not know, so that
//! the master may add some within version 1.
//!
//! # Limits
//!
//! Only a client of the master's own user is served (`SO_PEERCRED`); another is closed at
//! once and logged. A request is at most [`ADMIN_REQUEST_LIMIT`] bytes, and must arrive whole
//! within [`ADMIN_REQUEST_DEADLINE`] of the connection (the reply must be taken within the same
//! time); at most [`ADMIN_MAX_CLIENTS`] connections are served at once, and further ones get an
//! error reply and are closed. Garbage, an oversized or descriptor-carrying frame get an
//! error reply and are closed. The master never blocks on a client and never reads more than
//! one request per connection.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use netmcore_ipc::channel::{Channel, Limits, Listener, PeerCredentials};
use netmcore_resources::registry::{ProcessState, Registry};
use netmcore_resources::{Holder, ProcessId, ResId, ResourceDesc};
use rustix::event::{PollFd, PollFlags};

use crate::{Error, Result};

/// The name of the admin socket in the socket directory.
pub const ADMIN_SOCKET_NAME: &str = "admin.sock";

/// The version of the admin protocol, the second word of every request and reply.
pub const ADMIN_PROTOCOL_VERSION: u32 = 1;

/// The first word of every request and reply.
const MAGIC_WORD: &str = "netmcore-admin";

/// The largest request the master reads, in bytes; a longer one is refused.
pub const ADMIN_REQUEST_LIMIT: usize = 4096;

/// How long a client has, from its connection, to send its whole request (and, once
/// answered, to take the reply); then it is dropped.
pub const ADMIN_REQUEST_DEADLINE: Duration = Duration::from_secs(2);

/// How many admin connections the master serves at once; more are refused.
pub const ADMIN_MAX_CLIENTS: usize = 16;

/// At most this many connections are accepted per wake-up of the event loop, so that a
/// flood of them cannot starve the workers.
const ACCEPTS_PER_WAKE: usize = 16;

/// How long the listener is left alone after `accept4` failed (`EMFILE`, …), so that a
/// listener that stays readable does not spin the event loop.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// How long [`admin_status`] waits for the master's reply.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest reply [`admin_status`] accepts, in bytes.
const REPLY_LIMIT: usize = 64 << 20;

// Requests ------------------------------------------------------------------------------

/// A request to the admin socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AdminRequest {
    /// `netmcore-admin 1 status`: the master's pid, its processes and its resources.
    Status,
}

impl AdminRequest {
    /// The request's line, e.g. `netmcore-admin 1 status` (without a newline).
    pub fn to_line(&self) -> String {
        let command = match self {
            AdminRequest::Status => "status",
        };
        format!("{MAGIC_WORD} {ADMIN_PROTOCOL_VERSION} {command}")
    }

    /// Parses a request body: one line (a final newline is allowed), three words.
    ///
    /// # Errors
    ///
    /// A message for the error reply when the body is not UTF-8, not a netmcore-admin
    /// request, of another protocol version, or an unknown command.
    pub fn parse(body: &[u8]) -> std::result::Result<AdminRequest, String> {
        let text =
            std::str::from_utf8(body).map_err(|_| "the request is not UTF-8 text".to_owned())?;
        let line = text.strip_suffix('\n').unwrap_or(text);
        if line.contains(['\n', '\r']) {
            return Err("the request must be a single line".to_owned());
        }
        let mut words = line.split(' ');
        if words.next() != Some(MAGIC_WORD) {
            return Err(format!("the request must start with {MAGIC_WORD:?}"));
        }
        let version = words.next().unwrap_or("");
        if version != ADMIN_PROTOCOL_VERSION.to_string() {
            return Err(format!(
                "unsupported protocol version {:?}, this master speaks {ADMIN_PROTOCOL_VERSION}",
                truncate(version, 32)
            ));
        }
        let request = match words.next() {
            Some("status") => AdminRequest::Status,
            Some(other) => return Err(format!("unknown command {:?}", truncate(other, 32))),
            None => return Err("the request names no command".to_owned()),
        };
        if words.next().is_some() {
            return Err("unexpected words after the command".to_owned());
        }
        Ok(request)
    }
}

/// At most `max` characters of `s`, for echoing untrusted input in a message.
fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}

// The status snapshot -------------------------------------------------------------------

/// What a live master runs and holds, as its admin socket reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdminStatus {
    /// The master's Unix pid.
    pub unix_pid: u32,
    /// Whether shutdown began (the first process ended, or the master was stopped).
    pub shutting_down: bool,
    /// The processes the master knows: running, or finished and not yet joined.
    pub processes: Vec<AdminProcess>,
    /// The live resources: process types (fork and join points) and shared objects.
    pub resources: Vec<AdminResource>,
}

/// One process in an [`AdminStatus`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdminProcess {
    /// Its netmcore process id.
    pub id: ProcessId,
    /// Running, or finished (with or without a result) and not yet joined.
    pub state: ProcessState,
    /// Its Unix pid while the master supervises it.
    pub unix_pid: Option<u32>,
    /// The join point of its type.
    pub join_point: ResId,
    /// Who started it.
    pub started_by: Holder,
    /// The resources it uses.
    pub uses: Vec<ResId>,
}

/// One resource in an [`AdminStatus`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdminResource {
    /// Its id.
    pub id: ResId,
    /// What it is.
    pub desc: ResourceDesc,
    /// Who uses it.
    pub users: Vec<Holder>,
}

impl AdminStatus {
    /// The snapshot of a master with pid `unix_pid`: every process and resource of
    /// `registry`, with the Unix pids that `unix_pid_of` knows.
    pub(crate) fn capture<R>(
        unix_pid: u32,
        shutting_down: bool,
        registry: &Registry<R>,
        unix_pid_of: impl Fn(ProcessId) -> Option<u32>,
    ) -> AdminStatus {
        AdminStatus {
            unix_pid,
            shutting_down,
            processes: registry
                .processes()
                .map(|p| AdminProcess {
                    id: p.pid(),
                    state: p.state(),
                    unix_pid: unix_pid_of(p.pid()),
                    join_point: p.join_point(),
                    started_by: p.started_by(),
                    uses: p.used().collect(),
                })
                .collect(),
            resources: registry
                .resources()
                .map(|r| AdminResource {
                    id: r.id(),
                    desc: r.desc().clone(),
                    users: r.users().collect(),
                })
                .collect(),
        }
    }

    /// The `ok` reply that carries this status: its lines, each ending in a newline.
    pub fn to_reply(&self) -> String {
        let mut out = format!("{MAGIC_WORD} {ADMIN_PROTOCOL_VERSION} ok\n");
        let state = if self.shutting_down {
            "shutting-down"
        } else {
            "running"
        };
        out.push_str(&format!(
            "master unix-pid {} state {state}\n",
            self.unix_pid
        ));
        for p in &self.processes {
            let unix = p.unix_pid.map_or("-".to_owned(), |u| u.to_string());
            out.push_str(&format!(
                "process {} {} unix-pid {unix} join-point {} started-by {} uses {}\n",
                p.id.0,
                state_token(p.state),
                p.join_point.0,
                holder_token(p.started_by),
                list_token(p.uses.iter().map(|id| id.0.to_string())),
            ));
        }
        for r in &self.resources {
            let detail = match &r.desc {
                ResourceDesc::File(path) => format!("path {}", escape(path.as_os_str())),
                ResourceDesc::ForkPoint { join_point } => format!("join-point {}", join_point.0),
                ResourceDesc::JoinPoint { fork_point } => format!("fork-point {}", fork_point.0),
                ResourceDesc::PosixSem(name) => format!("name {}", escape(OsStr::new(name))),
                ResourceDesc::PosixShm(name) => format!("name {}", escape(OsStr::new(name))),
                ResourceDesc::PosixShmPreallocated { name, size } => {
                    format!("size {size} name {}", escape(OsStr::new(name)))
                }
                other => format!("desc {}", escape(OsStr::new(&format!("{other:?}")))),
            };
            out.push_str(&format!(
                "resource {} {} users {} {detail}\n",
                r.id.0,
                kind_token(&r.desc),
                list_token(r.users.iter().map(|h| holder_token(*h))),
            ));
        }
        out.push_str("end\n");
        out
    }

    /// Parses a reply of the master: the status after an `ok` line.
    ///
    /// # Errors
    ///
    /// [`Error::InMaster`] with the master's message for an `error` reply;
    /// [`Error::Protocol`] naming the line for a reply that is not a well-formed status.
    pub fn parse_reply(reply: &[u8]) -> Result<AdminStatus> {
        let bad = |reason: String| Error::Protocol {
            call: "admin status",
            source: netmcore_ipc::Error::Protocol {
                what: "admin reply",
                reason,
            },
        };
        let text = std::str::from_utf8(reply).map_err(|_| bad("not UTF-8 text".to_owned()))?;
        let mut lines = text.lines();
        let head = lines.next().unwrap_or("");
        let prefix = format!("{MAGIC_WORD} {ADMIN_PROTOCOL_VERSION} ");
        let Some(verdict) = head.strip_prefix(&prefix) else {
            return Err(bad(format!(
                "first line {:?} is not a version {ADMIN_PROTOCOL_VERSION} reply",
                truncate(head, 80)
            )));
        };
        if let Some(message) = verdict.strip_prefix("error ") {
            return Err(Error::InMaster {
                op: "admin status".to_owned(),
                target: ADMIN_SOCKET_NAME.to_owned(),
                message: message.to_owned(),
            });
        }
        if verdict != "ok" {
            return Err(bad(format!("first line {:?}", truncate(head, 80))));
        }
        let mut status: Option<AdminStatus> = None;
        let mut ended = false;
        for (n, line) in lines.enumerate() {
            let at = |reason: &str| {
                bad(format!(
                    "line {}: {reason}: {:?}",
                    n + 2,
                    truncate(line, 80)
                ))
            };
            let (keyword, rest) = line.split_once(' ').unwrap_or((line, ""));
            match keyword {
                "master" => {
                    let fields = Fields::new(rest);
                    let unix_pid = fields
                        .get("unix-pid")
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(|| at("no unix-pid"))?;
                    status = Some(AdminStatus {
                        unix_pid,
                        shutting_down: fields.get("state") == Some("shutting-down"),
                        processes: Vec::new(),
                        resources: Vec::new(),
                    });
                }
                "process" => {
                    let status = status
                        .as_mut()
                        .ok_or_else(|| at("before the master line"))?;
                    let process = parse_process(rest).ok_or_else(|| at("malformed process"))?;
                    status.processes.push(process);
                }
                "resource" => {
                    let status = status
                        .as_mut()
                        .ok_or_else(|| at("before the master line"))?;
                    let resource = parse_resource(rest).ok_or_else(|| at("malformed resource"))?;
                    status.resources.push(resource);
                }
                "end" => {
                    ended = true;
                    break;
                }
                // A line of a later master within version 1.
                _ => {}
            }
        }
        if !ended {
            return Err(bad("the reply has no end line (truncated)".to_owned()));
        }
        status.ok_or_else(|| bad("the reply has no master line".to_owned()))
    }
}

impl fmt::Display for AdminStatus {
    /// A report for people: the master, then a line per process and per resource.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.shutting_down {
            "shutting down"
        } else {
            "running"
        };
        writeln!(f, "master: unix pid {}, {state}", self.unix_pid)?;
        let running = self
            .processes
            .iter()
            .filter(|p| p.state == ProcessState::Running)
            .count();
        writeln!(f, "processes: {} ({running} running)", self.processes.len())?;
        for p in &self.processes {
            let state = match p.state {
                ProcessState::Running => "running",
                ProcessState::Finished { has_result: true } => "finished with a result",
                ProcessState::Finished { has_result: false } => "finished without a result",
            };
            write!(f, "  {}: {state}", p.id)?;
            if let Some(unix) = p.unix_pid {
                write!(f, ", unix pid {unix}")?;
            }
            write!(
                f,
                ", joined through {}, started by {}",
                p.join_point, p.started_by
            )?;
            if !p.uses.is_empty() {
                let uses: Vec<String> = p.uses.iter().map(ToString::to_string).collect();
                write!(f, ", uses {}", uses.join(", "))?;
            }
            writeln!(f)?;
        }
        writeln!(f, "resources: {}", self.resources.len())?;
        for r in &self.resources {
            let what = match &r.desc {
                ResourceDesc::File(path) => format!("file {}", path.display()),
                ResourceDesc::ForkPoint { join_point } => {
                    format!("fork point (joined through {join_point})")
                }
                ResourceDesc::JoinPoint { fork_point } => format!("join point (of {fork_point})"),
                ResourceDesc::PosixSem(name) => format!("posix semaphore {name}"),
                ResourceDesc::PosixShm(name) => format!("posix shm {name}"),
                ResourceDesc::PosixShmPreallocated { name, size } => {
                    format!("preallocated posix shm {name} ({size} bytes)")
                }
                other => format!("{other:?}"),
            };
            let users: Vec<String> = r.users.iter().map(ToString::to_string).collect();
            let users = if users.is_empty() {
                "nobody".to_owned()
            } else {
                users.join(", ")
            };
            writeln!(f, "  {}: {what}, used by {users}", r.id)?;
        }
        Ok(())
    }
}

fn state_token(state: ProcessState) -> &'static str {
    match state {
        ProcessState::Running => "running",
        ProcessState::Finished { has_result: true } => "finished-with-result",
        ProcessState::Finished { has_result: false } => "finished-without-result",
    }
}

fn kind_token(desc: &ResourceDesc) -> &'static str {
    match desc {
        ResourceDesc::File(_) => "file",
        ResourceDesc::ForkPoint { .. } => "fork-point",
        ResourceDesc::JoinPoint { .. } => "join-point",
        ResourceDesc::PosixSem(_) => "posix-sem",
        ResourceDesc::PosixShm(_) => "posix-shm",
        ResourceDesc::PosixShmPreallocated { .. } => "posix-shm-preallocated",
        _ => "other",
    }
}

fn holder_token(holder: Holder) -> String {
    match holder {
        Holder::Master => "master".to_owned(),
        Holder::Process(pid) => pid.0.to_string(),
    }
}

fn parse_holder(token: &str) -> Option<Holder> {
    match token {
        "master" => Some(Holder::Master),
        n => n.parse().ok().map(|n| Holder::Process(ProcessId(n))),
    }
}

/// A comma-separated list, `-` when empty.
fn list_token(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(",")
    }
}

fn parse_list<T>(token: &str, item: impl Fn(&str) -> Option<T>) -> Option<Vec<T>> {
    if token == "-" {
        return Some(Vec::new());
    }
    token.split(',').map(item).collect()
}

fn parse_res_id(token: &str) -> Option<ResId> {
    token.parse().ok().map(ResId)
}

/// `key value` pairs of a status line, looked up by key.
struct Fields<'a>(Vec<&'a str>);

impl<'a> Fields<'a> {
    fn new(text: &'a str) -> Fields<'a> {
        Fields(text.split(' ').collect())
    }

    fn get(&self, key: &str) -> Option<&'a str> {
        self.0
            .chunks(2)
            .find(|pair| pair.first() == Some(&key))
            .and_then(|pair| pair.get(1).copied())
    }
}

/// `<id> <state> unix-pid <n|-> join-point <id> started-by <holder> uses <ids|->`.
fn parse_process(rest: &str) -> Option<AdminProcess> {
    let mut words = rest.splitn(3, ' ');
    let id = ProcessId(words.next()?.parse().ok()?);
    let state = match words.next()? {
        "running" => ProcessState::Running,
        "finished-with-result" => ProcessState::Finished { has_result: true },
        "finished-without-result" => ProcessState::Finished { has_result: false },
        _ => return None,
    };
    let fields = Fields::new(words.next().unwrap_or(""));
    let unix_pid = match fields.get("unix-pid")? {
        "-" => None,
        n => Some(n.parse().ok()?),
    };
    Some(AdminProcess {
        id,
        state,
        unix_pid,
        join_point: parse_res_id(fields.get("join-point")?)?,
        started_by: parse_holder(fields.get("started-by")?)?,
        uses: parse_list(fields.get("uses")?, parse_res_id)?,
    })
}

/// `<id> <kind> users <holders|-> <detail>`, the detail (a name last) as `to_reply` wrote it.
fn parse_resource(rest: &str) -> Option<AdminResource> {
    let mut words = rest.splitn(5, ' ');
    let id = parse_res_id(words.next()?)?;
    let kind = words.next()?;
    if words.next()? != "users" {
        return None;
    }
    let users = parse_list(words.next()?, parse_holder)?;
    let detail = words.next().unwrap_or("");
    let text_name = |escaped: &str| String::from_utf8(unescape(escaped)?).ok();
    let desc = match kind {
        "file" => ResourceDesc::File(PathBuf::from(OsString::from_vec(unescape(
            detail.strip_prefix("path ")?,
        )?))),
        "fork-point" => ResourceDesc::ForkPoint {
            join_point: parse_res_id(detail.strip_prefix("join-point ")?)?,
        },
        "join-point" => ResourceDesc::JoinPoint {
            fork_point: parse_res_id(detail.strip_prefix("fork-point ")?)?,
        },
        "posix-sem" => ResourceDesc::PosixSem(text_name(detail.strip_prefix("name ")?)?),
        "posix-shm" => ResourceDesc::PosixShm(text_name(detail.strip_prefix("name ")?)?),
        "posix-shm-preallocated" => {
            let (size, name) = detail.strip_prefix("size ")?.split_once(" name ")?;
            ResourceDesc::PosixShmPreallocated {
                name: text_name(name)?,
                size: size.parse().ok()?,
            }
        }
        _ => return None,
    };
    Some(AdminResource { id, desc, users })
}

/// A name for the rest of a line: `\` as `\\`, control characters as `\n`, `\r`, `\t` or
/// `\xNN`, bytes that are not UTF-8 as `\xNN`.
fn escape(name: &OsStr) -> String {
    let mut out = String::new();
    for chunk in name.as_bytes().utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if c.is_control() && c.is_ascii() => {
                    out.push_str(&format!("\\x{:02x}", c as u32));
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// The bytes that [`escape`] wrote as `text`; `None` for a malformed escape.
fn unescape(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next()? {
            b'\\' => out.push(b'\\'),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'x' => {
                let hex = [bytes.next()?, bytes.next()?];
                let hex = std::str::from_utf8(&hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
            }
            _ => return None,
        }
    }
    Some(out)
}

/// The `error` reply with `message` (on one line).
fn error_reply(message: &str) -> String {
    let message = message.replace(['\n', '\r'], " ");
    format!("{MAGIC_WORD} {ADMIN_PROTOCOL_VERSION} error {message}\n")
}

// The client ------------------------------------------------------------------------------

/// The path of the admin socket in `socket_directory`.
pub fn admin_socket_path(socket_directory: &Path) -> PathBuf {
    socket_directory.join(ADMIN_SOCKET_NAME)
}

/// Asks the master of `socket_directory` for its status through its admin socket.
///
/// # Errors
///
/// [`Error::Io`] naming `connect` and the socket when no master listens there (or
/// `send`/`recv` when the exchange fails or times out after 5 s); [`Error::InMaster`] when
/// the master refused the request; [`Error::Protocol`] for a malformed reply.
pub fn admin_status(socket_directory: &Path) -> Result<AdminStatus> {
    let path = admin_socket_path(socket_directory);
    let target = || path.display().to_string();
    let io = |call: &'static str, e: netmcore_ipc::Error| match e {
        netmcore_ipc::Error::Os { op, target, source } => Error::Io { op, target, source },
        netmcore_ipc::Error::Timeout { .. } => Error::io(
            call,
            target(),
            std::io::Error::from(std::io::ErrorKind::TimedOut),
        ),
        netmcore_ipc::Error::Closed => Error::io(
            call,
            target(),
            std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "the master closed the connection without a reply",
            ),
        ),
        e => Error::Protocol {
            call: "admin status",
            source: e,
        },
    };
    let mut channel = Channel::connect(&path).map_err(|e| io("connect", e))?;
    channel.set_limits(
        Limits::default()
            .with_frame_limit(REPLY_LIMIT)
            .with_memfd_limit(REPLY_LIMIT),
    );
    // A master that refuses the connection (too many clients) replies and closes at once,
    // perhaps before the request is sent: its reply is read even if the send failed.
    let sent = channel.send(AdminRequest::Status.to_line().as_bytes());
    match (channel.recv_timeout(CLIENT_TIMEOUT), sent) {
        (Ok(frame), _) => AdminStatus::parse_reply(frame.body()),
        (Err(_), Err(e)) => Err(io("send", e)),
        (Err(e), Ok(())) => Err(io("recv", e)),
    }
}

// The server ------------------------------------------------------------------------------

/// One admin connection.
#[derive(Debug)]
struct Client {
    channel: Channel,
    peer: PeerCredentials,
    /// When it is dropped if it is not done by then.
    deadline: Instant,
    /// Its reply is queued: only writing remains.
    answered: bool,
}

/// The master side of the admin socket: the listener and its connections, served from the
/// master's event loop without ever blocking it.
#[derive(Debug)]
pub(crate) struct AdminServer {
    listener: Listener,
    clients: Vec<Client>,
    /// No accepting until then, after `accept4` failed.
    paused_until: Option<Instant>,
}

impl AdminServer {
    /// Binds `admin.sock` in `dir` (mode 0600), after removing a socket a dead master left
    /// there. Call it only with the directory's lock held: then no live master uses the file.
    pub(crate) fn bind(dir: &Path) -> Result<AdminServer> {
        let path = admin_socket_path(dir);
        match std::fs::remove_file(&path) {
            Ok(()) => verbose_stale(&path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("unlink", path.display().to_string(), e)),
        }
        let listener = Listener::bind(&path).map_err(|e| crate::master::from_ipc("bind", e))?;
        Ok(AdminServer {
            listener,
            clients: Vec::new(),
            paused_until: None,
        })
    }

    /// Every descriptor it holds: the listener's and each client channel's (for a forked child
    /// that closes them by number).
    pub(crate) fn raw_fds(&self, out: &mut Vec<std::os::fd::RawFd>) {
        use std::os::fd::{AsFd, AsRawFd};
        out.push(self.listener.as_fd().as_raw_fd());
        for client in &self.clients {
            client.channel.raw_fds(out);
        }
    }

    /// Removes the socket file (the master's end); the descriptors close with `self`.
    pub(crate) fn close(self) {
        let path = self.listener.path().to_owned();
        drop(self);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove the admin socket");
        }
    }

    /// How many descriptors [`push_poll_fds`](AdminServer::push_poll_fds) adds.
    pub(crate) fn poll_fd_count(&self) -> usize {
        1 + self.clients.len()
    }

    /// Adds the listener and then each connection to a poll set: the listener for `POLLIN`
    /// (nothing while accepting is paused), a connection for `POLLIN` until it is answered,
    /// then for `POLLOUT` while its reply is queued.
    pub(crate) fn push_poll_fds<'a>(&'a self, fds: &mut Vec<PollFd<'a>>, now: Instant) {
        let listen = if self.paused_until.is_some_and(|until| now < until) {
            PollFlags::empty()
        } else {
            PollFlags::IN
        };
        fds.push(PollFd::new(&self.listener, listen));
        for client in &self.clients {
            let events = if !client.answered {
                PollFlags::IN
            } else if client.channel.has_pending_output() {
                PollFlags::OUT
            } else {
                PollFlags::empty()
            };
            fds.push(PollFd::new(&client.channel, events));
        }
    }

    /// The earliest time the loop must wake up for the admin socket: a client's deadline, or
    /// the end of an accept pause.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.clients
            .iter()
            .map(|c| c.deadline)
            .chain(self.paused_until)
            .min()
    }

    /// Serves what `ready` (the events of the descriptors of
    /// [`push_poll_fds`](AdminServer::push_poll_fds), in order, or nothing) says is ready,
    /// drops the clients whose deadline passed, and accepts new connections. `status` is
    /// called at most once, when a request needs it.
    pub(crate) fn serve(
        &mut self,
        ready: &[PollFlags],
        now: Instant,
        status: impl FnOnce() -> AdminStatus,
    ) {
        let mut status = Some(status);
        let mut reply: Option<String> = None;
        let mut status_reply = || {
            reply
                .get_or_insert_with(|| status.take().map(|f| f().to_reply()).unwrap_or_default())
                .clone()
        };
        // Events that do not match the descriptors (a poll that failed) count as none.
        let aligned = ready.len() == self.poll_fd_count();
        let listener_ready = aligned && !ready[0].is_empty();
        let mut index = 0;
        self.clients.retain_mut(|client| {
            index += 1;
            let events = if aligned {
                ready[index]
            } else {
                PollFlags::empty()
            };
            if events.is_empty() {
                client.expire(now)
            } else {
                client.progress(events, now, &mut status_reply) && client.expire(now)
            }
        });
        if self.paused_until.is_some_and(|until| now >= until) {
            self.paused_until = None;
        }
        if listener_ready && self.paused_until.is_none() {
            self.accept(now);
        }
    }

    /// Accepts the pending connections (up to a batch): another user's are closed at once,
    /// those beyond [`ADMIN_MAX_CLIENTS`] get an error reply and are closed.
    fn accept(&mut self, now: Instant) {
        for _ in 0..ACCEPTS_PER_WAKE {
            let mut channel = match self.listener.try_accept() {
                Ok(Some(channel)) => channel,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket: cannot accept a connection");
                    self.paused_until = Some(now + ACCEPT_PAUSE);
                    return;
                }
            };
            let peer = match channel.peer_credentials() {
                Ok(peer) => peer,
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket: a client without credentials was closed");
                    continue;
                }
            };
            if !peer.is_same_user() {
                tracing::warn!(
                    client_pid = peer.pid,
                    client_uid = peer.uid,
                    "admin socket: refused a client of uid {} (pid {}): only the master's user may use it",
                    peer.uid,
                    peer.pid
                );
                continue;
            }
            if self.clients.len() >= ADMIN_MAX_CLIENTS {
                tracing::warn!(
                    client_pid = peer.pid,
                    "admin socket: refused a client (pid {}): {ADMIN_MAX_CLIENTS} connections are open",
                    peer.pid
                );
                let _ = channel.queue(
                    error_reply(&format!(
                        "busy: {ADMIN_MAX_CLIENTS} admin connections are open"
                    ))
                    .as_bytes(),
                    Vec::new(),
                );
                continue;
            }
            channel.set_limits(request_limits());
            self.clients.push(Client {
                channel,
                peer,
                deadline: now + ADMIN_REQUEST_DEADLINE,
                answered: false,
            });
        }
    }
}

/// The limits on a request: small, and no memfd bodies either.
fn request_limits() -> Limits {
    Limits::default()
        .with_frame_limit(ADMIN_REQUEST_LIMIT)
        .with_memfd_limit(ADMIN_REQUEST_LIMIT)
}

fn verbose_stale(path: &Path) {
    crate::debug::verbose!(path = %path.display(), "removed a stale admin socket");
}

impl Client {
    /// Handles the events of this connection; false when it is done (answered and flushed,
    /// gone, or refused).
    fn progress(
        &mut self,
        events: PollFlags,
        now: Instant,
        status_reply: &mut impl FnMut() -> String,
    ) -> bool {
        if self.answered {
            if events.intersects(PollFlags::HUP | PollFlags::ERR)
                && !events.contains(PollFlags::OUT)
            {
                return false;
            }
            return self.flush();
        }
        let reply = match self.channel.try_recv() {
            Ok(None) => return true,
            Ok(Some(frame)) if !frame.fds().is_empty() => {
                self.log_refusal("a request with descriptors");
                error_reply("a request carries no descriptors")
            }
            Ok(Some(frame)) => match AdminRequest::parse(frame.body()) {
                Ok(AdminRequest::Status) => status_reply(),
                Err(message) => {
                    self.log_refusal(&message);
                    error_reply(&message)
                }
            },
            Err(netmcore_ipc::Error::Closed | netmcore_ipc::Error::Truncated { .. }) => {
                crate::debug::verbose!(
                    client_pid = self.peer.pid,
                    "admin socket: client (pid {}) left without a request",
                    self.peer.pid
                );
                return false;
            }
            Err(netmcore_ipc::Error::FrameTooLarge { len, .. }) => {
                self.log_refusal(&format!("a request of {len} bytes"));
                error_reply(&format!(
                    "a request of {len} bytes exceeds the limit of {ADMIN_REQUEST_LIMIT} bytes"
                ))
            }
            Err(e) => {
                self.log_refusal(&e.to_string());
                error_reply(&format!("malformed request: {e}"))
            }
        };
        self.answered = true;
        self.deadline = now + ADMIN_REQUEST_DEADLINE;
        // The reply may be larger than a request: lift the limits for sending it.
        self.channel.set_limits(Limits::default());
        if self.channel.queue(reply.as_bytes(), Vec::new()).is_err() {
            return false;
        }
        self.flush()
    }

    /// Sends what is queued; false when it is all sent (the connection is done) or the
    /// client is gone.
    fn flush(&mut self) -> bool {
        matches!(self.channel.flush(), Ok(false))
    }

    /// False (drop it) when its deadline passed.
    fn expire(&self, now: Instant) -> bool {
        if now < self.deadline {
            return true;
        }
        let what = if self.answered {
            "did not take its reply"
        } else {
            "sent no complete request"
        };
        tracing::warn!(
            client_pid = self.peer.pid,
            "admin socket: client (pid {}) {what} within {:?}: dropped",
            self.peer.pid,
            ADMIN_REQUEST_DEADLINE
        );
        false
    }

    fn log_refusal(&self, what: &str) {
        tracing::warn!(
            client_pid = self.peer.pid,
            "admin socket: refused {what} from pid {}",
            self.peer.pid
        );
    }
}

/// The earlier of two optional deadlines.
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_request_round_trips_and_tolerates_a_final_newline() {
        let line = AdminRequest::Status.to_line();
        assert_eq!(line, "netmcore-admin 1 status");
        assert_eq!(
            AdminRequest::parse(line.as_bytes()),
            Ok(AdminRequest::Status)
        );
        assert_eq!(
            AdminRequest::parse(b"netmcore-admin 1 status\n"),
            Ok(AdminRequest::Status)
        );
    }

    #[test]
    fn malformed_requests_get_a_message() {
        let cases: [(&[u8], &str); 8] = [
            (b"", "must start with"),
            (b"\xff\xfe", "not UTF-8"),
            (b"GET / HTTP/1.1", "must start with"),
            (
                b"netmcore-admin 2 status",
                "unsupported protocol version \"2\"",
            ),
            (b"netmcore-admin 1", "names no command"),
            (b"netmcore-admin 1 reboot", "unknown command \"reboot\""),
            (b"netmcore-admin 1 status now", "unexpected words"),
            (b"netmcore-admin 1 status\nstatus", "single line"),
        ];
        for (body, expected) in cases {
            let message = AdminRequest::parse(body).expect_err("refused");
            assert!(message.contains(expected), "{body:?}: {message}");
        }
    }

    #[test]
    fn echoed_input_is_truncated() {
        let long = format!("netmcore-admin 1 {}", "x".repeat(1000));
        let message = AdminRequest::parse(long.as_bytes()).expect_err("refused");
        assert!(message.len() < 100, "{message}");
    }

    fn sample() -> AdminStatus {
        AdminStatus {
            unix_pid: 1234,
            shutting_down: false,
            processes: vec![
                AdminProcess {
                    id: ProcessId(0),
                    state: ProcessState::Running,
                    unix_pid: Some(1240),
                    join_point: ResId(1),
                    started_by: Holder::Master,
                    uses: vec![ResId(4), ResId(6)],
                },
                AdminProcess {
                    id: ProcessId(2),
                    state: ProcessState::Finished { has_result: false },
                    unix_pid: None,
                    join_point: ResId(1),
                    started_by: Holder::Process(ProcessId(0)),
                    uses: vec![],
                },
            ],
            resources: vec![
                AdminResource {
                    id: ResId(0),
                    desc: ResourceDesc::ForkPoint {
                        join_point: ResId(1),
                    },
                    users: vec![Holder::Master],
                },
                AdminResource {
                    id: ResId(1),
                    desc: ResourceDesc::JoinPoint {
                        fork_point: ResId(0),
                    },
                    users: vec![Holder::Master],
                },
                AdminResource {
                    id: ResId(4),
                    desc: ResourceDesc::PosixShm("/netmcore-1-a-counter".into()),
                    users: vec![Holder::Master, Holder::Process(ProcessId(0))],
                },
                AdminResource {
                    id: ResId(5),
                    desc: ResourceDesc::PosixSem("/sem with space".into()),
                    users: vec![],
                },
                AdminResource {
                    id: ResId(6),
                    desc: ResourceDesc::File(PathBuf::from(OsString::from_vec(
                        b"/tmp/a b\\c\nd\xffe".to_vec(),
                    ))),
                    users: vec![Holder::Process(ProcessId(0))],
                },
                AdminResource {
                    id: ResId(7),
                    desc: ResourceDesc::PosixShmPreallocated {
                        name: "/pool name".into(),
                        size: 65536,
                    },
                    users: vec![Holder::Master],
                },
            ],
        }
    }

    #[test]
    fn a_status_reply_has_one_line_per_item_and_round_trips() {
        let status = sample();
        let reply = status.to_reply();
        let lines: Vec<&str> = reply.lines().collect();
        assert_eq!(lines[0], "netmcore-admin 1 ok");
        assert_eq!(lines[1], "master unix-pid 1234 state running");
        assert_eq!(
            lines[2],
            "process 0 running unix-pid 1240 join-point 1 started-by master uses 4,6"
        );
        assert_eq!(
            lines[3],
            "process 2 finished-without-result unix-pid - join-point 1 started-by 0 uses -"
        );
        assert_eq!(lines[4], "resource 0 fork-point users master join-point 1");
        assert_eq!(
            lines[6],
            "resource 4 posix-shm users master,0 name /netmcore-1-a-counter"
        );
        assert_eq!(
            lines[7],
            "resource 5 posix-sem users - name /sem with space"
        );
        assert_eq!(
            lines[8],
            "resource 6 file users 0 path /tmp/a b\\\\c\\nd\\xffe"
        );
        assert_eq!(
            lines[9],
            "resource 7 posix-shm-preallocated users master size 65536 name /pool name"
        );
        assert_eq!(lines.last(), Some(&"end"));
        assert_eq!(lines.len(), 11);
        assert_eq!(AdminStatus::parse_reply(reply.as_bytes()).unwrap(), status);
    }

    #[test]
    fn unknown_lines_are_ignored_and_truncated_replies_refused() {
        let reply = sample()
            .to_reply()
            .replace("end\n", "guardian unix-pid 9\nend\n");
        assert_eq!(
            AdminStatus::parse_reply(reply.as_bytes()).unwrap(),
            sample()
        );
        let truncated = sample().to_reply().replace("end\n", "");
        let e = AdminStatus::parse_reply(truncated.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("no end line"), "{e}");
        let broken = sample().to_reply().replace("uses 4,6", "uses 4,x");
        let e = AdminStatus::parse_reply(broken.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("line 3: malformed process"), "{e}");
    }

    #[test]
    fn an_error_reply_becomes_an_error_with_the_message() {
        let reply = error_reply("unknown command \"x\"\nsecond line");
        assert_eq!(reply.lines().count(), 1);
        let e = AdminStatus::parse_reply(reply.as_bytes()).unwrap_err();
        assert!(
            matches!(&e, Error::InMaster { message, .. } if message.starts_with("unknown command")),
            "{e:?}"
        );
        let e = AdminStatus::parse_reply(b"HTTP/1.1 200 OK\n").unwrap_err();
        assert!(matches!(e, Error::Protocol { .. }), "{e:?}");
    }

    #[test]
    fn escapes_round_trip_any_bytes() {
        let all: Vec<u8> = (0..=255u8).collect();
        let escaped = escape(OsStr::from_bytes(&all));
        assert!(!escaped.contains(['\n', '\r']), "{escaped}");
        assert_eq!(unescape(&escaped), Some(all));
        assert_eq!(unescape("bad\\q"), None);
        assert_eq!(unescape("short\\x4"), None);
    }

    #[test]
    fn the_report_for_people_names_processes_and_resources() {
        let text = sample().to_string();
        assert!(
            text.starts_with("master: unix pid 1234, running\n"),
            "{text}"
        );
        assert!(text.contains("processes: 2 (1 running)"), "{text}");
        assert!(
            text.contains("process 0: running, unix pid 1240, joined through resource 1"),
            "{text}"
        );
        assert!(
            text.contains("resource 4: posix shm /netmcore-1-a-counter, used by master, process 0"),
            "{text}"
        );
        assert!(text.contains("resource 5: posix semaphore /sem with space, used by nobody"));
    }

    #[test]
    fn a_server_refuses_garbage_and_oversize_requests_and_answers_status() {
        let dir = tempfile::tempdir().unwrap();
        let mut server = AdminServer::bind(dir.path()).unwrap();
        let path = admin_socket_path(dir.path());
        let serve = |server: &mut AdminServer| {
            // Every descriptor reported ready: the server must cope with spurious readiness.
            let ready = vec![PollFlags::IN | PollFlags::OUT; server.poll_fd_count()];
            server.serve(&ready, Instant::now(), sample);
        };
        let ask = |server: &mut AdminServer, body: &[u8]| {
            let mut client = Channel::connect(&path).unwrap();
            client.send(body).unwrap();
            // Accept, then read and answer.
            serve(server);
            serve(server);
            let reply = client.recv_timeout(Duration::from_secs(5)).unwrap();
            String::from_utf8(reply.body().to_vec()).unwrap()
        };
        let reply = ask(&mut server, b"netmcore-admin 1 status");
        assert_eq!(reply, sample().to_reply());
        let reply = ask(&mut server, b"\x00garbage");
        assert!(reply.starts_with("netmcore-admin 1 error "), "{reply}");
        let reply = ask(&mut server, &vec![b'x'; ADMIN_REQUEST_LIMIT + 1]);
        assert!(reply.contains("exceeds the limit of 4096 bytes"), "{reply}");
        assert!(server.clients.is_empty(), "{:?}", server.clients);
        server.close();
        assert!(!path.exists());
    }

    #[test]
    fn a_server_refuses_connections_beyond_its_cap_and_drops_late_clients() {
        let dir = tempfile::tempdir().unwrap();
        let mut server = AdminServer::bind(dir.path()).unwrap();
        let path = admin_socket_path(dir.path());
        let mut silent: Vec<Channel> = (0..ADMIN_MAX_CLIENTS)
            .map(|_| Channel::connect(&path).unwrap())
            .collect();
        let ready = vec![PollFlags::IN];
        server.serve(&ready, Instant::now(), sample);
        assert_eq!(server.clients.len(), ADMIN_MAX_CLIENTS);
        let mut extra = Channel::connect(&path).unwrap();
        let mut ready = vec![PollFlags::empty(); server.poll_fd_count()];
        ready[0] = PollFlags::IN;
        server.serve(&ready, Instant::now(), sample);
        assert_eq!(server.clients.len(), ADMIN_MAX_CLIENTS);
        let reply = extra.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(reply.body().starts_with(b"netmcore-admin 1 error busy"));
        // Past their deadline, the silent clients are dropped: they see the end of stream.
        let later = Instant::now() + ADMIN_REQUEST_DEADLINE;
        assert!(server.deadline().is_some_and(|d| d <= later));
        server.serve(&[], later, sample);
        assert!(server.clients.is_empty());
        assert!(server.deadline().is_none());
        for client in &mut silent {
            assert!(matches!(
                client.recv_timeout(Duration::from_secs(5)),
                Err(netmcore_ipc::Error::Closed)
            ));
        }
        server.close();
    }

    #[test]
    fn binding_replaces_a_stale_socket() {
        let dir = tempfile::tempdir().unwrap();
        let first = AdminServer::bind(dir.path()).unwrap();
        // A master that died without removing its socket file.
        drop(first);
        assert!(admin_socket_path(dir.path()).exists());
        let second = AdminServer::bind(dir.path()).unwrap();
        second.close();
    }

    #[test]
    fn earliest_picks_the_earlier_deadline() {
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        assert_eq!(earliest(Some(later), Some(now)), Some(now));
        assert_eq!(earliest(None, Some(later)), Some(later));
        assert_eq!(earliest(Some(now), None), Some(now));
        assert_eq!(earliest(None, None), None);
    }
}
