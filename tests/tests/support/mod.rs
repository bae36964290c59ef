//! Shared support of the multi-process scenarios of netmcore.
//!
//! A scenario calls `startup` (or `run`), which turns the calling process into a master; so
//! each scenario owns a fresh process. A test binary has `harness = false`, and its `main` calls
//! [`run_cases`], which forks one child per scenario. The child puts itself in a process group
//! of its own, gets a scratch directory of its own (the socket directory lives inside it), runs
//! the scenario, checks that it has no child process left (no zombie, no straggler), and exits 0
//! on success. `main` then checks that no process of the scenario's group still exists and that
//! nothing new was left in `/dev/shm`, prints one line per scenario, and fails if any did.
//!
//! `main` is a child subreaper, so the processes a scenario orphans (a detached master, the
//! workers of a master that was killed) are adopted by it and reaped, never left as zombies of an
//! init that may not reap.
//!
//! Scenarios assert behaviour, never time: every wait below has a generous deadline that only a
//! hang reaches.
#![allow(
    dead_code,
    unused_macros,
    reason = "each test binary uses a different part of the support code"
)]

pub mod objects;
pub mod sys;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use netmcore::Config;
use netmcore::process::{self, ProcessType};
use rustix::io::Errno;
use rustix::process::{Pid, Signal, WaitOptions, waitpid};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// How long a whole scenario may take before `main` declares it hung and kills its group.
pub const CASE_DEADLINE: Duration = Duration::from_secs(180);

/// How long a wait inside a scenario (for a file, a process to die, ...) may take before the
/// scenario fails. Only a hang reaches it.
pub const WAIT_DEADLINE: Duration = Duration::from_secs(30);

/// How long `main` waits for stragglers of a finished scenario before it fails the scenario.
const STRAGGLER_DEADLINE: Duration = Duration::from_secs(10);

/// How long a new `/dev/shm` entry may take to disappear after a scenario (a guardian that
/// cleans up after a killed master works asynchronously) before it counts as a leak.
const SHM_GRACE: Duration = Duration::from_secs(3);

/// One named scenario of a test binary.
pub struct Case {
    /// The name a filter argument matches against.
    pub name: &'static str,
    /// The body; an `Err` or a panic fails the scenario.
    pub run: fn(&Scenario) -> anyhow::Result<()>,
}

/// Builds a `&[Case]` from function names, each case named after its function.
macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        &[$($crate::support::Case { name: stringify!($case), run: $case }),*]
    };
}
pub(crate) use cases;

/// Fails the surrounding function (which returns `anyhow::Result`) unless `$call` returned an
/// `Err` matching the pattern; the message shows what it returned instead.
macro_rules! ensure_err {
    ($call:expr, $pattern:pat $(if $guard:expr)? $(,)?) => {
        match $call {
            Err($pattern) $(if $guard)? => {}
            other => anyhow::bail!(
                "`{}` returned {:?}, expected Err({})",
                stringify!($call),
                other,
                stringify!($pattern $(if $guard)?)
            ),
        }
    };
}
#[allow(unused_imports, reason = "not every test binary asserts on errors")]
pub(crate) use ensure_err;

/// The environment of one scenario: a scratch directory named after the scenario's process,
/// created before the scenario runs and removed by `main` afterwards.
#[derive(Debug)]
pub struct Scenario {
    dir: PathBuf,
}

impl Scenario {
    /// The scratch directory (mode 0700).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A path in the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The scenario's socket directory: `sock` in the scratch directory. It does not exist
    /// before `startup` creates it.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.join("sock")
    }

    /// A configuration on [`Scenario::socket_dir`].
    pub fn config(&self) -> Config {
        Config::new(self.socket_dir())
    }
}

/// The scratch directory of the scenario run by process `pid`.
fn scratch_dir(pid: i32) -> PathBuf {
    std::env::temp_dir().join(format!("netmcore-tests-{pid}"))
}

/// What a coordinating process reports to the scenario: `Err` carries the failure.
pub type Report = Result<(), String>;

/// Defines a coordinating process type: its body returns `anyhow::Result<()>`, which travels
/// back as a [`Report`] (the error with its whole chain of context).
pub fn coordinator<A>(
    body: impl Fn(A) -> anyhow::Result<()> + Send + Sync + 'static,
) -> anyhow::Result<ProcessType<A, Report>>
where
    A: Serialize + DeserializeOwned + 'static,
{
    Ok(process::def_process(move |arg: A| {
        body(arg).map_err(|e| format!("{e:#}"))
    })?)
}

/// Like [`coordinator`], and the body's report is also written to `report` (in the scratch
/// directory), for scenarios that call `startup`, which returns no result: read it with
/// [`file_verdict`] after `startup` returned.
pub fn reporting_coordinator<A>(
    report: PathBuf,
    body: impl Fn(A) -> anyhow::Result<()> + Send + Sync + 'static,
) -> anyhow::Result<ProcessType<A, Report>>
where
    A: Serialize + DeserializeOwned + 'static,
{
    coordinator(move |arg: A| {
        let outcome = body(arg);
        let text = match &outcome {
            Ok(()) => "ok".to_owned(),
            Err(e) => format!("failed: {e:#}"),
        };
        write_file(&report, &text)?;
        outcome
    })
}

/// The verdict that a [`reporting_coordinator`] wrote to `report`.
pub fn file_verdict(report: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(report).with_context(|| {
        format!(
            "no report at {}: the coordinator did not finish (it panicked, exited or was killed)",
            report.display()
        )
    })?;
    match text.as_str() {
        "ok" => Ok(()),
        message => Err(anyhow!("in a worker: {message}")),
    }
}

/// Turns what a coordinator's join (or `run`) returned into the scenario's verdict.
pub fn verdict(out: Option<Report>) -> anyhow::Result<()> {
    match out {
        Some(Ok(())) => Ok(()),
        Some(Err(message)) => Err(anyhow!("in a worker: {message}")),
        None => bail!("the coordinator ended without a result (it panicked, exited or was killed)"),
    }
}

/// `run`s `coordinator` with `arg` on the scenario's socket directory and returns its verdict.
pub fn run_coordinator<A>(
    scenario: &Scenario,
    coordinator: &ProcessType<A, Report>,
    arg: &A,
) -> anyhow::Result<()>
where
    A: Serialize + DeserializeOwned + 'static,
{
    verdict(netmcore::run(scenario.config(), coordinator, arg).context("run")?)
}

/// Polls `done` every 2 ms until it holds; fails with `what` after [`WAIT_DEADLINE`].
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT_DEADLINE;
    while !done() {
        if Instant::now() > deadline {
            bail!("gave up after {WAIT_DEADLINE:?} waiting until {what}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// Waits until `path` exists.
pub fn wait_for_file(path: &Path) -> anyhow::Result<()> {
    wait_until(&format!("{} exists", path.display()), || path.exists())
}

/// Creates `path` with `contents`, atomically (a reader never sees it half written).
pub fn write_file(path: &Path, contents: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, contents).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))
}

/// Creates `path`, empty: opens a gate that another process waits for.
pub fn touch(path: &Path) -> anyhow::Result<()> {
    write_file(path, "")
}

/// Writes the calling process's Unix pid to `path`.
pub fn write_own_pid(path: &Path) -> anyhow::Result<()> {
    write_file(path, &std::process::id().to_string())
}

/// Waits for `path` and reads the Unix pid written to it.
pub fn read_pid(path: &Path) -> anyhow::Result<i32> {
    wait_for_file(path)?;
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("{} holds {text:?}, not a pid", path.display()))
}

/// Sleeps until killed.
pub fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Sends `signal` to Unix process `pid`.
pub fn send_signal(pid: i32, signal: Signal) -> anyhow::Result<()> {
    let target = Pid::from_raw(pid).with_context(|| format!("{pid} is not a pid"))?;
    rustix::process::kill_process(target, signal)
        .with_context(|| format!("kill({pid}, {signal:?})"))
}

pub use netmcore_tests::procs::{Proc, children_of, processes};

/// Whether Unix process `pid` has ended (it is gone, or a zombie waiting to be reaped).
pub fn has_ended(pid: i32) -> bool {
    Proc::read(pid).is_none_or(|p| p.is_zombie())
}

/// Waits until no child of `pid` is a zombie, i.e. until the process (a master) has reaped
/// every child that ended.
pub fn wait_no_zombie_children(pid: i32) -> anyhow::Result<()> {
    wait_until(&format!("process {pid} has no zombie child"), || {
        !children_of(pid).iter().any(Proc::is_zombie)
    })
    .with_context(|| format!("zombies: {:?}", children_of(pid)))
}

/// Names in `/dev/shm` (shm objects, and `sem.`-prefixed semaphores), except those of the
/// netmcore-ipc tests (`netmcore-test-<pid>-…`), which may run at the same time and check their
/// own.
fn shm_names() -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir("/dev/shm") else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.trim_start_matches("sem.").starts_with("netmcore-test-"))
        .collect()
}

/// Which cases to run, from the command line, in the manner of libtest: the first argument
/// that is not a flag filters by substring (by equality with `--exact`), `--skip NAME` leaves
/// out cases whose names contain `NAME`; `--list` lists the cases instead (in the format that
/// cargo-nextest asks for); `--ignored` selects none, since no case is ignored. Other libtest
/// flags are accepted and have no effect.
struct Args {
    filter: Option<String>,
    skip: Vec<String>,
    exact: bool,
    list: bool,
    ignored: bool,
}

impl Args {
    fn parse() -> Args {
        let mut parsed = Args {
            filter: None,
            skip: Vec::new(),
            exact: false,
            list: false,
            ignored: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--exact" => parsed.exact = true,
                "--list" => parsed.list = true,
                "--ignored" => parsed.ignored = true,
                "--skip" => parsed.skip.extend(args.next()),
                // libtest flags that take a value.
                "--format" | "--test-threads" | "--color" | "--logfile" | "-Z" => {
                    args.next();
                }
                flag if flag.starts_with('-') => {}
                name => {
                    parsed.filter.get_or_insert_with(|| name.to_owned());
                }
            }
        }
        parsed
    }

    fn selects(&self, name: &str) -> bool {
        if self.ignored || self.skip.iter().any(|s| name.contains(s.as_str())) {
            return false;
        }
        match &self.filter {
            None => true,
            Some(f) if self.exact => name == f,
            Some(f) => name.contains(f.as_str()),
        }
    }
}

/// Runs the selected cases, each in a forked child of its own, checks what each left behind,
/// prints one line per case and returns failure if any case failed.
pub fn run_cases(cases: &[Case]) -> ExitCode {
    let args = Args::parse();
    if args.list {
        for case in cases.iter().filter(|c| args.selects(c.name)) {
            println!("{}: test", case.name);
        }
        return ExitCode::SUCCESS;
    }
    // rustix passes the pid as the flag: any `Some` turns subreaping on, `None` turns it off.
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        .expect("prctl(PR_SET_CHILD_SUBREAPER, 1)");
    let selected: Vec<&Case> = cases.iter().filter(|c| args.selects(c.name)).collect();
    println!("\nrunning {} scenarios", selected.len());
    let mut failed = Vec::new();
    for case in selected {
        let problems = run_case(case);
        if problems.is_empty() {
            println!("test {} ... ok", case.name);
        } else {
            println!("test {} ... FAILED", case.name);
            for problem in &problems {
                println!("    {problem}");
            }
            failed.push(case.name);
        }
        let _ = std::io::stdout().flush();
    }
    println!(
        "\nscenario result: {}. {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        failed.len()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("failed: {failed:?}");
        ExitCode::FAILURE
    }
}

/// Runs one case in a child and returns what went wrong (nothing when it passed).
fn run_case(case: &Case) -> Vec<String> {
    let shm_before = shm_names();
    // Anything buffered would be written twice, by this process and by the child.
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    let child = sys::fork_child(|| child_main(case));
    // Also set the group from this side, so that it exists before any check below, whichever
    // of the two runs first. This fails harmlessly when the child has already ended.
    let pgid = child.rustix_pid();
    let _ = rustix::process::setpgid(Some(pgid), Some(pgid));

    let mut problems = Vec::new();
    match wait_for_case(child.pid) {
        Some(sys::Status::Exited(0)) => {}
        Some(status) => problems.push(format!("the scenario process ended with {status:?}")),
        None => problems.push(format!(
            "hung: killed after {CASE_DEADLINE:?} (a wait that should have ended did not)"
        )),
    }
    let survivors = wait_group_gone(pgid);
    if !survivors.is_empty() {
        problems.push(format!(
            "processes of the scenario survived it (killed now): {survivors:?}"
        ));
    }
    let leaked = shm_leaks(&shm_before);
    if !leaked.is_empty() {
        problems.push(format!("left in /dev/shm (removed now): {leaked:?}"));
    }
    let _ = std::fs::remove_dir_all(scratch_dir(child.pid));
    problems
}

/// The body of a case's child process; returns its exit code.
fn child_main(case: &Case) -> i32 {
    let _ = rustix::process::setpgid(None, None);
    let me = std::process::id() as i32;
    let dir = scratch_dir(me);
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        eprintln!("{}: cannot create {}: {e}", case.name, dir.display());
        return 1;
    }
    let scenario = Scenario { dir };
    let outcome = std::panic::catch_unwind(|| (case.run)(&scenario))
        .unwrap_or_else(|_| Err(anyhow!("the scenario panicked")))
        .and_then(|()| no_children_left(me));
    match outcome {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{}: {e:#}", case.name);
            1
        }
    }
}

/// After a scenario: the scenario's process (a former master) has no child left. A child that
/// is still running gets [`WAIT_DEADLINE`] to end; a zombie fails at once, since nobody would
/// ever reap it.
fn no_children_left(me: i32) -> anyhow::Result<()> {
    let _ = wait_until("the scenario process has no running child", || {
        children_of(me).iter().all(Proc::is_zombie)
    });
    let left = children_of(me);
    if !left.is_empty() {
        bail!("child processes left after the scenario (zombies are state Z): {left:?}");
    }
    Ok(())
}

/// Waits for the case's child to end, reaping any orphan adopted meanwhile; after
/// [`CASE_DEADLINE`] kills its whole group and returns `None`.
fn wait_for_case(child: i32) -> Option<sys::Status> {
    let deadline = Instant::now() + CASE_DEADLINE;
    loop {
        match rustix::process::wait(WaitOptions::NOHANG) {
            Ok(Some((pid, status))) if pid.as_raw_nonzero().get() == child => {
                return Some(sys::Status::from_wait(status));
            }
            // An orphan of an earlier scenario or of this one, adopted and now reaped.
            Ok(Some(_)) => continue,
            Ok(None) => {}
            Err(e) => panic!("waitpid: {e}"),
        }
        if Instant::now() > deadline {
            let pid = Pid::from_raw(child).expect("a child pid is positive");
            let _ = rustix::process::kill_process_group(pid, Signal::KILL);
            let _ = rustix::process::kill_process(pid, Signal::KILL);
            let _ = waitpid(Some(pid), WaitOptions::empty());
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reaps every adopted orphan that has ended.
fn reap_adopted() {
    while let Ok(Some(_)) = rustix::process::wait(WaitOptions::NOHANG) {}
}

/// Waits until no process of group `pgid` exists; after [`STRAGGLER_DEADLINE`] kills the
/// group and returns the processes that were still in it.
fn wait_group_gone(pgid: Pid) -> Vec<Proc> {
    let deadline = Instant::now() + STRAGGLER_DEADLINE;
    loop {
        reap_adopted();
        if rustix::process::test_kill_process_group(pgid) == Err(Errno::SRCH) {
            return Vec::new();
        }
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let raw = pgid.as_raw_nonzero().get();
    let survivors: Vec<Proc> = processes().into_iter().filter(|p| p.pgrp == raw).collect();
    let _ = rustix::process::kill_process_group(pgid, Signal::KILL);
    let cleanup = Instant::now() + STRAGGLER_DEADLINE;
    while Instant::now() < cleanup
        && rustix::process::test_kill_process_group(pgid) != Err(Errno::SRCH)
    {
        reap_adopted();
        std::thread::sleep(Duration::from_millis(5));
    }
    if survivors.is_empty() {
        // Gone between the last check and the listing: still a straggler past the deadline.
        vec![Proc {
            pid: 0,
            comm: "(ended while listed)".into(),
            state: '?',
            ppid: 0,
            pgrp: raw,
        }]
    } else {
        survivors
    }
}

/// New entries in `/dev/shm` since `before` that do not disappear within [`SHM_GRACE`];
/// removes them so that they do not disturb later scenarios.
fn shm_leaks(before: &BTreeSet<String>) -> Vec<String> {
    let deadline = Instant::now() + SHM_GRACE;
    loop {
        let new: Vec<String> = shm_names().difference(before).cloned().collect();
        if new.is_empty() || Instant::now() > deadline {
            for name in &new {
                let _ = std::fs::remove_file(Path::new("/dev/shm").join(name));
            }
            return new;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The number of the system call Unix process `pid` (its main thread) is in, if it is blocked
/// in one (`/proc/PID/syscall`), and its first argument.
pub fn syscall_of(pid: i32) -> Option<(i64, u64)> {
    let line = std::fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
    let mut fields = line.split_whitespace();
    let number = fields.next()?.parse().ok()?;
    let first = u64::from_str_radix(fields.next()?.trim_start_matches("0x"), 16).ok()?;
    Some((number, first))
}

/// Whether Unix process `pid` is blocked reading a pipe.
pub fn reads_a_pipe(pid: i32) -> bool {
    syscall_of(pid).is_some_and(|(number, fd)| {
        number == libc::SYS_read
            && std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
                .is_ok_and(|target| target.to_string_lossy().starts_with("pipe:"))
    })
}
