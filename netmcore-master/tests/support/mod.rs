//! Shared support of the multi-process tests of netmcore-master.
//!
//! A test binary has `harness = false`: its `main` is single-threaded, so it may fork safely
//! and a case may call `startup`. [`run_cases`] runs each case in a forked process of its own,
//! in a process group of its own, with the runner as the child subreaper, so that after each
//! case it can reap whatever the case orphaned and check that no process of the case is left
//! and nothing new is in `/dev/shm`.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the support code"
)]

pub mod sys;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::process::{Pid, Signal, WaitOptions};

/// One named case of a multi-process test binary.
pub struct Case {
    /// The name a filter argument matches against.
    pub name: &'static str,
    /// The body; a panic fails the case.
    pub run: fn(),
}

/// How long a case may run before the runner kills it: a safety net against a hang, far
/// above what any case needs.
const CASE_LIMIT: Duration = Duration::from_secs(300);

/// The names in `/dev/shm`.
pub fn dev_shm() -> BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn pid(raw: i32) -> Pid {
    Pid::from_raw(raw).expect("a positive pid")
}

/// Whether any process of group `pgid` still exists (zombies of the runner are reaped first).
fn group_alive(pgid: i32) -> bool {
    while let Ok(Some(_)) = rustix::process::wait(WaitOptions::NOHANG) {}
    !matches!(
        rustix::process::test_kill_process_group(pid(pgid)),
        Err(Errno::SRCH)
    )
}

/// Runs every case whose name contains the first non-flag argument (all when there is none),
/// each in a forked child; prints a line per case and returns failure if any case failed,
/// left a process behind, or left something new in `/dev/shm`.
pub fn run_cases(cases: &[Case]) -> ExitCode {
    // Orphans of a case (workers of a killed master) are reparented here and reaped.
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        .expect("PR_SET_CHILD_SUBREAPER");
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let mut failed = Vec::new();
    let mut ran = 0;
    for case in cases {
        if filter.as_deref().is_some_and(|f| !case.name.contains(f)) {
            continue;
        }
        ran += 1;
        let before = dev_shm();
        let child = sys::fork_child(|| {
            let _ = rustix::process::setpgid(None, None);
            match std::panic::catch_unwind(case.run) {
                Ok(()) => 0,
                Err(_) => 101,
            }
        });
        let _ = rustix::process::setpgid(Some(pid(child)), None);
        let started = Instant::now();
        let status = loop {
            match rustix::process::waitpid(Some(pid(child)), WaitOptions::NOHANG) {
                Ok(Some((_, status))) => break Some(status),
                Ok(None) if started.elapsed() > CASE_LIMIT => {
                    let _ = rustix::process::kill_process_group(pid(child), Signal::KILL);
                    let _ = rustix::process::waitpid(Some(pid(child)), WaitOptions::empty());
                    break None;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => panic!("waitpid: {e}"),
            }
        };
        let mut problems = Vec::new();
        match status {
            Some(s) if s.exit_status() == Some(0) => {}
            Some(s) => problems.push(format!("ended with {s:?}")),
            None => problems.push("killed after running too long".to_owned()),
        }
        // Workers killed with their master take a moment to go.
        let settle = Instant::now();
        while group_alive(child) && settle.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(5));
        }
        if group_alive(child) {
            let _ = rustix::process::kill_process_group(pid(child), Signal::KILL);
            problems.push("left processes running".to_owned());
        }
        let new: Vec<String> = dev_shm().difference(&before).cloned().collect();
        if !new.is_empty() {
            problems.push(format!("left in /dev/shm: {new:?}"));
        }
        if problems.is_empty() {
            println!("test {} ... ok", case.name);
        } else {
            println!("test {} ... FAILED: {}", case.name, problems.join("; "));
            failed.push(case.name);
        }
    }
    println!("\n{} cases run, {} failed", ran, failed.len());
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("failed: {failed:?}");
        ExitCode::FAILURE
    }
}

/// The pids of this process's children, zombies included (from `/proc`).
pub fn children() -> Vec<i32> {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            // The fields after the parenthesised command name: state, ppid, ...
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1).map(|ppid| ppid == me))
                .unwrap_or(false)
        })
        .collect()
}

/// Whether a process with this pid exists (a zombie counts).
pub fn alive(raw: i32) -> bool {
    !matches!(
        rustix::process::test_kill_process(pid(raw)),
        Err(Errno::SRCH)
    )
}

/// Waits until `path` exists (written by another process).
pub fn wait_for_file(path: &Path) -> String {
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Writes `text` and a newline to `path` in one go (readers wait for the newline).
pub fn write_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{text}\n")).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// The descriptors of this process that are sockets, from `/proc/self/fd`.
pub fn socket_fds() -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path())
                .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
        })
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// A `tracing` subscriber that keeps every event as a line `LEVEL message field=value…`, for
/// tests that check what the master logs.
pub mod log {
    use std::fmt::{self, Write};
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    /// The captured lines.
    #[derive(Clone, Default)]
    pub struct Lines(Arc<Mutex<Vec<String>>>);

    impl Lines {
        /// Installs a capturing subscriber as the global default and returns its lines.
        pub fn install() -> Lines {
            let lines = Lines::default();
            tracing::subscriber::set_global_default(Capture(lines.clone()))
                .expect("no subscriber yet");
            lines
        }

        /// The lines so far.
        pub fn get(&self) -> Vec<String> {
            self.0.lock().unwrap().clone()
        }

        /// Whether a line contains `needle`.
        pub fn contains(&self, needle: &str) -> bool {
            self.get().iter().any(|line| line.contains(needle))
        }
    }

    struct Capture(Lines);

    struct Text(String);

    impl Visit for Text {
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            if field.name() == "message" {
                let _ = write!(self.0, "{value:?}");
            } else {
                let _ = write!(self.0, " {}={value:?}", field.name());
            }
        }
    }

    impl Subscriber for Capture {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }

        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }

        fn record(&self, _: &Id, _: &Record<'_>) {}

        fn record_follows_from(&self, _: &Id, _: &Id) {}

        fn event(&self, event: &Event<'_>) {
            let mut text = Text(format!("{} ", event.metadata().level()));
            event.record(&mut text);
            (self.0).0.lock().unwrap().push(text.0);
        }

        fn enter(&self, _: &Id) {}

        fn exit(&self, _: &Id) {}
    }
}

/// A fresh temporary directory and the socket directory `sock` inside it (created by
/// `startup`); the directory goes when the first value is dropped.
pub fn socket_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("sock");
    (dir, sock)
}

/// A unique name prefix for this case's OS objects.
pub fn prefix(tag: &str) -> String {
    format!("/netmcore-test-{}-{tag}-", std::process::id())
}

/// Whether the shm object `name` exists.
pub fn shm_exists(name: &str) -> bool {
    Path::new(&format!("/dev/shm{name}")).exists()
}

/// The list of failures that a first process returned, from what `startup_with_result` gave.
pub fn failures_of(result: netmcore_master::Result<Option<netmcore_encap::Encap>>) -> Vec<String> {
    result
        .expect("startup")
        .expect("the first process returned")
        .unwrap::<Vec<String>>()
        .expect("a list of failures")
}
