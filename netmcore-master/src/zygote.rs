//! The zygote: an idle fork of the master, one per definitions generation, that forks the
//! warm workers so that the master does not.
//!
//! A fork copies the page tables of the process that forks and write-protects its pages, so
//! the forking process pays the copy and then a page fault for each page it writes
//! afterwards. A master that forked its warm workers itself did that on its own core, right
//! when it had handed a process to a warm worker and was about to serve that process's
//! requests and joiner. The zygote does it instead, on whichever core is free: it is a copy
//! of the master as it was at the generation's first fork (what a warm worker must be, see
//! `warm.rs`), it writes almost nothing between forks, and it forks with
//! `clone3(CLONE_PARENT)` ([`sys::clone_sibling`]), so each warm worker is a child of the
//! master, supervised exactly like one the master forked: pidfd, `waitid`, the death signal
//! of the master.
//!
//! # Protocol
//!
//! Over the zygote's control channel, in order (several may be in flight):
//! * the master sends [`ASK`] with a request number and one descriptor, the warm worker's end
//!   of its channel (the master keeps the other end);
//! * the zygote clones (`CLONE_PIDFD`) and sends [`FORKED`] with the number and the child's
//!   Unix pid, its pidfd attached; if the clone failed, [`FAILED`] with the `errno`;
//! * the child (the warm worker) arms its death signal, checks that its parent is the master,
//!   sends [`BORN`] with the number and its pid, closes its copy of the control channel and
//!   waits on its own channel for a process.
//!
//! Whichever of `FORKED` and `BORN` comes first answers the request; the other is ignored.
//! Two reports, so that one death cannot leave a warm worker the master does not know: a
//! child killed before it reported is reported by the zygote (with a pidfd that reaps it),
//! and a zygote killed right after a clone leaves its child to report, which holds its copy
//! of the control channel until it did. The end of the control stream thus means that no
//! answer is on its way. Only both dying in the microseconds between the clone and the
//! reports leaves a zombie of the master's process that the master does not know.
//!
//! A zygote exits when it reads the end of the control stream: the master retires it when
//! the generation changes or it stops, and kills it at its end. It dies with the master
//! (`PR_SET_PDEATHSIG`).
//!
//! [`sys::clone_sibling`]: crate::sys::clone_sibling

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use netmcore_ipc::channel::Channel;
use rustix::io::Errno;
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions, WaitOptions, pidfd_send_signal};

use crate::master::EXIT_ORPHAN;
use crate::sys::{self, Cloned};

/// The master asks for a warm worker: `ASK`, the request number (8 bytes, little-endian);
/// one descriptor attached.
const ASK: u8 = b'A';
/// The zygote reports a clone: `FORKED`, the request number, the child's Unix pid (4 bytes);
/// its pidfd attached.
const FORKED: u8 = b'W';
/// A warm worker reports its birth: `BORN`, the request number, its Unix pid (4 bytes).
const BORN: u8 = b'B';
/// The zygote reports a failed clone: `FAILED`, the request number, the `errno` (4 bytes).
const FAILED: u8 = b'E';

/// How long the end of a master waits for each answer to a request in flight.
const ANSWER_AT_SHUTDOWN: Duration = Duration::from_secs(5);

/// The zygote's command name (`/proc/<pid>/comm`, what `ps` and `top` show); its warm
/// workers take the master's name back.
pub(crate) const ZYGOTE_NAME: &std::ffi::CStr = c"netmcore-zygote";

/// A report on the control channel, as the master reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Report {
    /// Request `seq` made the warm worker of this Unix pid (from the zygote, with a pidfd,
    /// or from the warm worker itself).
    Forked { seq: u64, unix: Pid },
    /// Request `seq` failed with this `errno`.
    Failed { seq: u64, errno: Errno },
}

fn encode_ask(seq: u64) -> [u8; 9] {
    let mut body = [ASK; 9];
    body[1..].copy_from_slice(&seq.to_le_bytes());
    body
}

fn decode_ask(body: &[u8]) -> Option<u64> {
    match body {
        [ASK, seq @ ..] => Some(u64::from_le_bytes(seq.try_into().ok()?)),
        _ => None,
    }
}

fn encode_report(tag: u8, seq: u64, value: i32) -> [u8; 13] {
    let mut body = [tag; 13];
    body[1..9].copy_from_slice(&seq.to_le_bytes());
    body[9..].copy_from_slice(&value.to_le_bytes());
    body
}

/// Decodes a report; `None` for anything else (never panics).
pub(crate) fn decode_report(body: &[u8]) -> Option<Report> {
    let [tag, rest @ ..] = body else {
        return None;
    };
    let (seq, value) = rest.split_at_checked(8)?;
    let seq = u64::from_le_bytes(seq.try_into().ok()?);
    let value = i32::from_le_bytes(value.try_into().ok()?);
    match *tag {
        // `Pid::from_raw` asserts on a negative value: none reaches it.
        FORKED | BORN => Some(Report::Forked {
            seq,
            unix: Pid::from_raw(value.max(0))?,
        }),
        // `Errno::from_raw_os_error` asserts on a value outside 1..4096: none reaches it.
        FAILED if (1..4096).contains(&value) => Some(Report::Failed {
            seq,
            errno: Errno::from_raw_os_error(value),
        }),
        _ => None,
    }
}

/// The report a frame of the control channel holds, with its descriptor (a `FORKED`
/// report's pidfd); `None` for anything else, or more than one descriptor.
fn report_of(frame: netmcore_ipc::channel::Frame) -> Option<(Report, Option<OwnedFd>)> {
    let (body, mut fds) = frame.into_parts();
    let fd = fds.pop();
    if !fds.is_empty() {
        return None;
    }
    Some((decode_report(body.as_ref())?, fd))
}

/// A request in flight: its number and the master's end of the warm worker's channel.
#[derive(Debug)]
struct Pending {
    seq: u64,
    channel: Channel,
}

/// A zygote, as the master sees it.
#[derive(Debug)]
pub(crate) struct Zygote {
    unix: Pid,
    /// `None` once reaped.
    pidfd: Option<OwnedFd>,
    /// The master's end of the control channel; `None` once its stream ended or the zygote
    /// was retired with no request in flight.
    control: Option<Channel>,
    /// The generation of the definitions it was forked at.
    pub(crate) generation: u64,
    /// No more requests: a newer generation, or the master stops.
    retired: bool,
    /// The requests in flight, oldest first.
    pending: Vec<Pending>,
    next_seq: u64,
}

/// What the master learned from a zygote's events.
#[derive(Debug)]
pub(crate) enum Event {
    /// A warm worker: its pid, pidfd, the master's end of its channel, its generation.
    Warm {
        unix: Pid,
        pidfd: OwnedFd,
        channel: Box<Channel>,
        generation: u64,
    },
    /// A warm worker born after its zygote was retired: it reads the end of its channel and
    /// exits; to reap.
    Retired { unix: Pid, pidfd: OwnedFd },
    /// A clone failed, or its child could not be taken in (it was killed and reaped).
    Failed(Errno),
    /// The zygote's stream ended although it was not retired (it died, or broke the
    /// protocol).
    Lost,
}

impl Zygote {
    /// The zygote the master just forked, with the master's end of the control channel.
    pub(crate) fn new(unix: Pid, pidfd: OwnedFd, control: Channel, generation: u64) -> Zygote {
        Zygote {
            unix,
            pidfd: Some(pidfd),
            control: Some(control),
            generation,
            retired: false,
            pending: Vec::new(),
            next_seq: 0,
        }
    }

    /// Whether it can be asked for a warm worker of `generation`.
    pub(crate) fn can_ask(&self, generation: u64) -> bool {
        self.is_current(generation)
    }

    /// Whether it serves `generation` (a request may be in flight).
    pub(crate) fn is_current(&self, generation: u64) -> bool {
        !self.retired && self.control.is_some() && self.generation == generation
    }

    /// How many requests are in flight.
    pub(crate) fn asking(&self) -> usize {
        self.pending.len()
    }

    /// Whether nothing of it is left: reaped, and its stream closed.
    pub(crate) fn gone(&self) -> bool {
        self.pidfd.is_none() && self.control.is_none()
    }

    /// Asks for a warm worker: a socketpair, whose other end goes to the zygote.
    ///
    /// # Errors
    ///
    /// `socketpair` or the send failed (the request is not in flight then).
    pub(crate) fn ask(&mut self) -> Result<(), netmcore_ipc::Error> {
        let Some(control) = &mut self.control else {
            return Err(netmcore_ipc::Error::Closed);
        };
        let (ours, theirs) = Channel::pair()?;
        let seq = self.next_seq;
        self.next_seq += 1;
        let fd = theirs.into_fd();
        control.send_with_fds(&encode_ask(seq), &[fd.as_fd()])?;
        self.pending.push(Pending { seq, channel: ours });
        Ok(())
    }

    /// No more requests; its stream is closed now unless requests are in flight (then once
    /// they were answered), which tells the zygote to exit.
    pub(crate) fn retire(&mut self) {
        if !self.retired {
            tracing::trace!(unix_pid = self.unix.as_raw_pid(), "retiring a zygote");
        }
        self.retired = true;
        if self.pending.is_empty() {
            self.control = None;
        }
    }

    /// Its descriptors to poll: the pidfd (once it exited) and the control channel.
    pub(crate) fn push_poll_fds<'a>(&'a self, fds: &mut Vec<rustix::event::PollFd<'a>>) {
        use rustix::event::{PollFd, PollFlags};
        if let Some(pidfd) = &self.pidfd {
            fds.push(PollFd::new(pidfd, PollFlags::IN));
        }
        if let Some(control) = &self.control {
            fds.push(PollFd::new(control, PollFlags::IN));
        }
    }

    /// How many descriptors [`push_poll_fds`](Zygote::push_poll_fds) pushes.
    pub(crate) fn poll_fd_count(&self) -> usize {
        usize::from(self.pidfd.is_some()) + usize::from(self.control.is_some())
    }

    /// Serves the events `revents` (in [`push_poll_fds`](Zygote::push_poll_fds) order):
    /// reads the reports, reaps the zygote once it exited.
    pub(crate) fn serve(&mut self, revents: &[rustix::event::PollFlags], out: &mut Vec<Event>) {
        let mut events = revents.iter();
        let exited = self.pidfd.is_some() && events.next().is_some_and(|e| !e.is_empty());
        let control = self.control.is_some() && events.next().is_some_and(|e| !e.is_empty());
        if control {
            self.read_reports(out);
        }
        if exited {
            self.reap();
        }
    }

    /// Reads every report there is; on the end of the stream (or a broken one), closes it.
    fn read_reports(&mut self, out: &mut Vec<Event>) {
        loop {
            let Some(control) = &mut self.control else {
                return;
            };
            let frame = match control.try_recv() {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(e) => {
                    if !matches!(e, netmcore_ipc::Error::Closed) {
                        tracing::error!(error = %e, "a zygote's control channel broke: killing it");
                        self.kill();
                    }
                    self.end_of_stream(out);
                    return;
                }
            };
            let Some((report, pidfd)) = report_of(frame) else {
                tracing::error!("a zygote sent something else than a report: killing it");
                self.kill();
                self.end_of_stream(out);
                return;
            };
            self.take_report(report, pidfd, out);
        }
    }

    /// The stream ended: no report can come any more.
    fn end_of_stream(&mut self, out: &mut Vec<Event>) {
        self.control = None;
        self.pending.clear();
        if !self.retired {
            self.retired = true;
            out.push(Event::Lost);
        }
    }

    /// Takes a report: the first for a request in flight answers it; any other (the second
    /// report of a clone) is dropped.
    fn take_report(&mut self, report: Report, pidfd: Option<OwnedFd>, out: &mut Vec<Event>) {
        let (seq, result) = match report {
            Report::Forked { seq, unix } => (seq, Ok(unix)),
            Report::Failed { seq, errno } => (seq, Err(errno)),
        };
        let Some(at) = self.pending.iter().position(|p| p.seq == seq) else {
            return;
        };
        let pending = self.pending.remove(at);
        if self.retired && self.pending.is_empty() {
            // Its stream stayed open only for these answers.
            self.control = None;
        }
        let unix = match result {
            Ok(unix) => unix,
            Err(errno) => {
                out.push(Event::Failed(errno));
                return;
            }
        };
        let pidfd = match adopt(unix, pidfd) {
            Ok(pidfd) => pidfd,
            Err(errno) => {
                out.push(Event::Failed(errno));
                return;
            }
        };
        if self.retired {
            drop(pending);
            out.push(Event::Retired { unix, pidfd });
        } else {
            out.push(Event::Warm {
                unix,
                pidfd,
                channel: Box::new(pending.channel),
                generation: self.generation,
            });
        }
    }

    /// SIGKILL to the zygote (not to its warm workers: they are the master's children).
    fn kill(&self) {
        if let Some(pidfd) = &self.pidfd {
            let _ = pidfd_send_signal(pidfd, Signal::KILL);
        }
    }

    /// Reaps the zygote if it exited.
    fn reap(&mut self) {
        let Some(pidfd) = &self.pidfd else {
            return;
        };
        match rustix::process::waitid(
            WaitId::PidFd(pidfd.as_fd()),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
        ) {
            Ok(None) => {}
            Ok(Some(_)) | Err(Errno::CHILD) => self.pidfd = None,
            Err(e) => {
                tracing::error!(unix_pid = self.unix.as_raw_pid(), error = %e, "waitid failed");
            }
        }
    }

    /// The end of the master: kills the zygote and waits for it, then for the answers to the
    /// requests in flight (a warm worker born then comes out as [`Event::Retired`], to be
    /// killed and reaped).
    pub(crate) fn shut_down(mut self, out: &mut Vec<Event>) {
        self.retired = true;
        self.kill();
        if let Some(pidfd) = self.pidfd.take() {
            while let Err(Errno::INTR) =
                rustix::process::waitid(WaitId::PidFd(pidfd.as_fd()), WaitIdOptions::EXITED)
            {
            }
        }
        // A clone made before the kill reports on its own; the stream ends once no copy of
        // the zygote's end is left.
        while !self.pending.is_empty()
            && let Some(control) = &mut self.control
        {
            let Some((report, pidfd)) = control
                .recv_timeout(ANSWER_AT_SHUTDOWN)
                .ok()
                .and_then(report_of)
            else {
                break;
            };
            self.take_report(report, pidfd, out);
        }
    }

    /// Its descriptors (for a forked child that closes them by number).
    pub(crate) fn raw_fds(&self, out: &mut Vec<std::os::fd::RawFd>) {
        use std::os::fd::AsRawFd;
        out.extend(self.pidfd.as_ref().map(AsRawFd::as_raw_fd));
        if let Some(control) = &self.control {
            control.raw_fds(out);
        }
        for pending in &self.pending {
            pending.channel.raw_fds(out);
        }
    }
}

/// A pidfd for the warm worker `unix` (the one the zygote sent, or a new one), once it is
/// known to be a child of this process: a report cannot make the master adopt, and later
/// kill, another process. A child that cannot be taken in is killed and reaped.
fn adopt(unix: Pid, pidfd: Option<OwnedFd>) -> Result<OwnedFd, Errno> {
    let pidfd = match pidfd {
        Some(pidfd) => Ok(pidfd),
        None => rustix::process::pidfd_open(unix, rustix::process::PidfdFlags::empty()),
    };
    let checked = pidfd.and_then(|pidfd| {
        rustix::process::waitid(
            WaitId::PidFd(pidfd.as_fd()),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT,
        )
        .map(|_| pidfd)
    });
    checked.inspect_err(|e| {
        tracing::error!(unix_pid = unix.as_raw_pid(), error = %e, "cannot take in a warm worker");
        discard_child(unix);
    })
}

/// Kills and reaps `unix` if it is a child of this process (`waitid(WNOWAIT)` says so, and
/// until it is reaped its pid cannot be reused).
fn discard_child(unix: Pid) {
    if rustix::process::waitid(
        WaitId::Pid(unix),
        WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT,
    )
    .is_err()
    {
        return;
    }
    let _ = rustix::process::kill_process(unix, Signal::KILL);
    while let Err(Errno::INTR) = rustix::process::waitpid(Some(unix), WaitOptions::empty()) {}
}

/// The zygote's life, after it left the master: serves requests until the end of the
/// stream, then exits. In each warm worker it clones, this returns the warm worker's end of
/// its channel (after the report); the caller makes it wait for its process.
pub(crate) fn serve_requests(mut control: Channel, master: Pid) -> Channel {
    let words = sys::thread_words();
    let name = rustix::thread::name().ok();
    let _ = rustix::thread::set_name(ZYGOTE_NAME);
    loop {
        let mut frame = match control.recv() {
            Ok(frame) => frame,
            // Retired, or the master is gone.
            Err(_) => std::process::exit(0),
        };
        let mut fds = frame.take_fds();
        let (Some(seq), Some(fd), true) = (decode_ask(frame.body()), fds.pop(), fds.is_empty())
        else {
            tracing::error!("a zygote got something else than a request: exiting");
            std::process::exit(0)
        };
        let cloned = match &words {
            Ok(words) => sys::clone_sibling(words),
            Err(e) => Err(*e),
        };
        let sent = match cloned {
            Ok(Cloned::Child) => {
                // The master's child now, not the zygote's: die with it.
                let armed = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
                if armed.is_err() || rustix::process::getppid() != Some(master) {
                    std::process::exit(EXIT_ORPHAN);
                }
                if let Some(name) = &name {
                    let _ = rustix::thread::set_name(name);
                }
                let me = rustix::process::getpid().as_raw_pid();
                let _ = control.send(&encode_report(BORN, seq, me));
                // With it go the descriptors of later requests that the zygote had read
                // already (a warm worker keeps only its own).
                drop(control);
                return match Channel::from_fd(fd) {
                    Ok(channel) => channel,
                    Err(_) => std::process::exit(0),
                };
            }
            Ok(Cloned::Parent(child, pidfd)) => control.send_with_fds(
                &encode_report(FORKED, seq, child.as_raw_pid()),
                &[pidfd.as_fd()],
            ),
            Err(errno) => control.send(&encode_report(FAILED, seq, errno.raw_os_error())),
        };
        drop(fd);
        if sent.is_err() {
            std::process::exit(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip_and_anything_else_is_refused() {
        let unix = Pid::from_raw(4321).unwrap();
        assert_eq!(
            decode_report(&encode_report(FORKED, 7, 4321)),
            Some(Report::Forked { seq: 7, unix })
        );
        assert_eq!(
            decode_report(&encode_report(
                FAILED,
                u64::MAX,
                Errno::NOSYS.raw_os_error()
            )),
            Some(Report::Failed {
                seq: u64::MAX,
                errno: Errno::NOSYS
            })
        );
        assert_eq!(
            decode_report(&encode_report(BORN, 7, 4321)),
            Some(Report::Forked { seq: 7, unix })
        );
        // An errno outside 1..4096 is none.
        for errno in [0, -1, 4096, i32::MAX, i32::MIN] {
            assert_eq!(
                decode_report(&encode_report(FAILED, 1, errno)),
                None,
                "{errno}"
            );
        }
        // A pid of 0 or below is no process.
        assert_eq!(decode_report(&encode_report(FORKED, 1, 0)), None);
        assert_eq!(decode_report(&encode_report(FORKED, 1, -5)), None);
        assert_eq!(decode_report(&encode_report(ASK, 1, 1)), None);
        let whole = encode_report(FORKED, 3, 99);
        for len in 0..whole.len() {
            assert_eq!(decode_report(&whole[..len]), None, "{len} bytes");
        }
        assert_eq!(decode_report(&[whole.as_slice(), &[0]].concat()), None);
    }

    #[test]
    fn asks_round_trip_and_anything_else_is_refused() {
        assert_eq!(decode_ask(&encode_ask(42)), Some(42));
        assert_eq!(decode_ask(&encode_ask(42)[..8]), None);
        assert_eq!(decode_ask(&[]), None);
        assert_eq!(decode_ask(&encode_report(FORKED, 1, 1)), None);
    }
}
