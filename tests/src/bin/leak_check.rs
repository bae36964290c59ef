//! `leak_check`: named crash scenarios of netmcore, each checked from outside for leftovers.
//!
//! Run by `cargo xtask leak-check`. Every scenario gets a scratch directory of its own under the
//! temp dir (its socket directory is `sock` inside it) and an object-name prefix of its own
//! (`/netmcore-leak-<pid>-<scenario>-`). The master runs in a child process of its own: this
//! program re-executes itself with [`ROLE_VAR`] naming the role, in a process group of its own.
//! After the scenario, this program (a child subreaper, so orphans are adopted and reaped here)
//! checks that nothing with the scenario's prefix is left in `/dev/shm`, that no managed file
//! is left, that the segments of the shared structures the holder was using (a locked
//! `Mutex`, a `SharedVec` with a live claim) are gone, that no process of the scenario's group is alive, that no zombie child is left, and
//! that the ledger lists no live entry. It prints one line per scenario and a summary table,
//! and exits non-zero on any failure.
//!
//! `netmcore-admin` is looked up in `NETMCORE_ADMIN`, then next to this program; when it is not
//! found, `netmcore::destroy_resources_in` does the cleanup instead (the line says which).

#![deny(unsafe_code)]

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use netmcore::ipc::sem::NamedSemaphore;
use netmcore::ipc::shm::ShmObject;
use netmcore::shared::{Mutex, SharedVec};
use netmcore::{Config, Error, process};
use rustix::io::Errno;
use rustix::process::{Pid, Signal, WaitOptions};
use serde::{Deserialize, Serialize};

/// The environment variable that selects the role of a re-executed child.
const ROLE_VAR: &str = "NETMCORE_LEAK_CHECK_ROLE";
/// The environment variable that carries the scenario's scratch directory to a child.
const DIR_VAR: &str = "NETMCORE_LEAK_CHECK_DIR";
/// The environment variable that carries the scenario's object-name prefix to a child.
const PREFIX_VAR: &str = "NETMCORE_LEAK_CHECK_PREFIX";

/// The bound after SIGKILL of a master within which nothing of its run may be left.
const CLEANUP_BOUND: Duration = Duration::from_secs(1);
/// How long any wait may take before the scenario fails (only a hang reaches it).
const WAIT_DEADLINE: Duration = Duration::from_secs(30);

/// What the holding process does once it holds its objects.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
enum Then {
    /// Writes its pid and sleeps until killed.
    Sleep,
    /// Panics.
    Panic,
}

/// The file in the scratch directory where the holder lists the names of its segments.
const SEGMENTS: &str = "segments";

/// How many objects the holder holds: a shm object, a semaphore and a file it manages, and the
/// segments of a mutex and a vector.
const HELD: usize = 5;

/// The objects of a scenario, by name.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Names {
    shm: String,
    sem: String,
    file: PathBuf,
    scratch: PathBuf,
}

impl Names {
    /// The names of the scenario with scratch directory `scratch` and prefix `prefix`.
    fn new(scratch: &Path, prefix: &str) -> Names {
        Names {
            shm: format!("{prefix}shm"),
            sem: format!("{prefix}sem"),
            file: scratch.join("managed.txt"),
            scratch: scratch.to_owned(),
        }
    }

    /// Where each object appears in the file system.
    fn paths(&self) -> [PathBuf; 3] {
        [
            shm_path(&self.shm),
            Path::new("/dev/shm").join(format!("sem.{}", self.sem.trim_start_matches('/'))),
            self.file.clone(),
        ]
    }

    /// The objects that still exist: the three managed ones, and the segments of the shared
    /// structures the holder listed in `segments` (netmcore names those itself).
    fn existing(&self) -> Vec<PathBuf> {
        let segments = std::fs::read_to_string(self.scratch.join(SEGMENTS)).unwrap_or_default();
        self.paths()
            .into_iter()
            .chain(segments.lines().map(shm_path))
            .filter(|p| p.exists())
            .collect()
    }
}

/// Where the shm object `name` appears.
fn shm_path(name: &str) -> PathBuf {
    Path::new("/dev/shm").join(name.trim_start_matches('/'))
}

/// One crash scenario.
struct Scenario {
    name: &'static str,
    run: fn(&Ctx) -> anyhow::Result<()>,
}

/// Every scenario, in the order they run.
const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "worker_sigkill_holding_objects",
        run: worker_sigkill,
    },
    Scenario {
        name: "worker_panic_holding_objects",
        run: worker_panic,
    },
    Scenario {
        name: "master_sigterm_mid_run",
        run: master_sigterm,
    },
    Scenario {
        name: "master_sigkill_mid_run",
        run: master_sigkill,
    },
    Scenario {
        name: "master_and_guardian_sigkill_then_admin_cleanup",
        run: killed_then_admin_cleanup,
    },
    Scenario {
        name: "master_and_guardian_sigkill_then_new_startup",
        run: killed_then_new_startup,
    },
    Scenario {
        name: "second_master_on_live_directory",
        run: second_master,
    },
];

/// The context of one scenario run by the supervisor.
struct Ctx {
    scratch: PathBuf,
    prefix: String,
    names: Names,
    /// The process groups of the children spawned so far (each leads its own).
    groups: std::cell::RefCell<Vec<i32>>,
}

impl Ctx {
    /// The socket directory.
    fn socket_dir(&self) -> PathBuf {
        self.scratch.join("sock")
    }

    /// Spawns this program in `role`, in a process group of its own.
    fn spawn(&self, role: &str) -> anyhow::Result<Child> {
        let exe = std::env::current_exe().context("current_exe")?;
        let child = Command::new(exe)
            .env(ROLE_VAR, role)
            .env(DIR_VAR, &self.scratch)
            .env(PREFIX_VAR, &self.prefix)
            .process_group(0)
            .spawn()
            .with_context(|| format!("spawn the {role} child"))?;
        self.groups
            .borrow_mut()
            .push(i32::try_from(child.id()).context("pid")?);
        Ok(child)
    }

    /// Spawns a holding master in `role` and waits until its first process holds the objects.
    fn holding_master(&self, role: &str) -> anyhow::Result<(Child, i32)> {
        let mut master = self.spawn(role)?;
        let pid_file = self.scratch.join("holder.pid");
        let waited = wait_until("the holder holds its objects", || {
            pid_file.exists() || matches!(master.try_wait(), Ok(Some(_)))
        });
        if let Err(e) = waited.and_then(|()| read_pid(&pid_file)) {
            let _ = master.kill();
            let _ = master.wait();
            return Err(e);
        }
        let holder = read_pid(&pid_file)?;
        for path in self.names.paths() {
            ensure!(
                path.exists(),
                "{} does not exist while held",
                path.display()
            );
        }
        Ok((master, holder))
    }
}

/// Polls `done` every 2 ms; fails with `what` after [`WAIT_DEADLINE`].
fn wait_until(what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT_DEADLINE;
    while !done() {
        if Instant::now() > deadline {
            bail!("timed out waiting until {what}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// Reads a pid written by [`write_own_pid`] (written to a temporary name, then renamed).
fn read_pid(path: &Path) -> anyhow::Result<i32> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("parse the pid in {}", path.display()))
}

/// Writes this process's pid to `path` atomically.
fn write_own_pid(path: &Path) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, std::process::id().to_string())?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Sends `signal` to process `pid`.
fn signal(pid: i32, signal: Signal) -> anyhow::Result<()> {
    let target = Pid::from_raw(pid).context("a pid is positive")?;
    rustix::process::kill_process(target, signal).with_context(|| format!("kill {pid}"))
}

/// One line of `/proc/<pid>/stat`: (state, ppid, pgrp).
fn proc_stat(pid: i32) -> Option<(char, i32, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
}

/// Every process as (pid, state, ppid, pgrp).
fn all_procs() -> Vec<(i32, char, i32, i32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| proc_stat(pid).map(|(s, pp, pg)| (pid, s, pp, pg)))
        .collect()
}

/// Whether process `pid` is gone or a zombie.
fn ended(pid: i32) -> bool {
    proc_stat(pid).is_none_or(|(state, _, _)| state == 'Z' || state == 'X')
}

/// Reaps every child that has ended.
fn reap() {
    while let Ok(Some(_)) = rustix::process::wait(WaitOptions::NOHANG) {}
}

/// What is left of a scenario: `/dev/shm` entries with its prefix and its objects.
fn leftovers(ctx: &Ctx) -> Vec<String> {
    let needle = ctx.prefix.trim_start_matches('/');
    let mut left: Vec<String> = std::fs::read_dir("/dev/shm")
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(needle))
                .map(|n| format!("/dev/shm/{n}"))
                .collect()
        })
        .unwrap_or_default();
    left.extend(
        ctx.names
            .existing()
            .into_iter()
            .map(|p| p.display().to_string()),
    );
    left.sort();
    left.dedup();
    left
}

/// The checks after every scenario: the group `pgid` gone, no zombie child, nothing left,
/// the ledger without live entries.
fn check_after(ctx: &Ctx, pgids: &[i32]) -> anyhow::Result<()> {
    for &pgid in pgids {
        let group = Pid::from_raw(pgid).context("a pgid is positive")?;
        let gone = wait_until(&format!("process group {pgid} is gone"), || {
            reap();
            rustix::process::test_kill_process_group(group) == Err(Errno::SRCH)
        });
        if gone.is_err() {
            let members: Vec<i32> = all_procs()
                .into_iter()
                .filter(|p| p.3 == pgid)
                .map(|p| p.0)
                .collect();
            let _ = rustix::process::kill_process_group(group, Signal::KILL);
            bail!("processes of group {pgid} still alive: {members:?}");
        }
    }
    // A process of another group (the guardian, in a session of its own) may still be ending:
    // it is reaped here as soon as it has, and only one that stays a zombie is a failure.
    let me = i32::try_from(std::process::id()).context("pid")?;
    let zombies = || -> Vec<i32> {
        all_procs()
            .into_iter()
            .filter(|p| p.2 == me && p.1 == 'Z')
            .map(|p| p.0)
            .collect()
    };
    if wait_until("no zombie child is left", || {
        reap();
        zombies().is_empty()
    })
    .is_err()
    {
        bail!("zombie children: {:?}", zombies());
    }
    let mut left = leftovers(ctx);
    let deadline = Instant::now() + Duration::from_secs(3);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        left = leftovers(ctx);
    }
    ensure!(left.is_empty(), "left behind: {left:?}");
    let dir = ctx.socket_dir();
    if netmcore_resources::ledger::ledger_path(&dir).exists() {
        let live = netmcore_resources::ledger::replay_dir(&dir).context("replay the ledger")?;
        ensure!(live.is_empty(), "the ledger still lists {live:?}");
    }
    Ok(())
}

/// Waits for the master child and checks its exit code is 0.
fn expect_clean_exit(mut child: Child, what: &str) -> anyhow::Result<()> {
    let status = child
        .wait()
        .with_context(|| format!("wait for the {what}"))?;
    ensure!(status.success(), "the {what} ended with {status}");
    Ok(())
}

/// Kills the stopped master `pid`'s children (its guardian and workers), then the master.
fn kill_master_and_guardian(master: &mut Child) -> anyhow::Result<()> {
    let pid = i32::try_from(master.id()).context("pid")?;
    signal(pid, Signal::STOP)?;
    wait_until("the master is stopped", || {
        proc_stat(pid).is_some_and(|(s, _, _)| s == 'T')
    })?;
    let children: Vec<i32> = all_procs()
        .into_iter()
        .filter(|p| p.2 == pid)
        .map(|p| p.0)
        .collect();
    ensure!(!children.is_empty(), "the master has no child to kill");
    for child in &children {
        signal(*child, Signal::KILL)?;
    }
    signal(pid, Signal::KILL)?;
    master.wait().context("wait for the master")?;
    for child in children {
        wait_until(&format!("the master's child {child} has died"), || {
            reap();
            ended(child)
        })?;
    }
    Ok(())
}

/// A worker holding a shm object, a semaphore and a file is killed with SIGKILL; the master
/// ends normally and destroys them.
fn worker_sigkill(ctx: &Ctx) -> anyhow::Result<()> {
    let (master, holder) = ctx.holding_master("hold-sleep")?;
    signal(holder, Signal::KILL)?;
    expect_clean_exit(master, "master")
}

/// A worker panics while holding a shm object, a semaphore and a file; the master ends
/// normally and destroys them.
fn worker_panic(ctx: &Ctx) -> anyhow::Result<()> {
    let master = ctx.spawn("hold-panic")?;
    expect_clean_exit(master, "master")
}

/// SIGTERM to a master whose worker holds objects: `run` returns `Err(Stopped)`.
fn master_sigterm(ctx: &Ctx) -> anyhow::Result<()> {
    let (master, _) = ctx.holding_master("hold-sleep-expect-stopped")?;
    signal(i32::try_from(master.id())?, Signal::TERM)?;
    expect_clean_exit(master, "master")
}

/// SIGKILL to a master whose worker holds objects: nothing is left within one second and no
/// worker survives.
fn master_sigkill(ctx: &Ctx) -> anyhow::Result<()> {
    let (mut master, holder) = ctx.holding_master("hold-sleep")?;
    signal(i32::try_from(master.id())?, Signal::KILL)?;
    let killed = Instant::now();
    let mut left = leftovers(ctx);
    while !left.is_empty() && killed.elapsed() < CLEANUP_BOUND {
        std::thread::sleep(Duration::from_millis(5));
        left = leftovers(ctx);
    }
    ensure!(
        left.is_empty(),
        "{CLEANUP_BOUND:?} after SIGKILL of the master: {left:?}"
    );
    master.wait()?;
    wait_until("the holding worker has died", || {
        reap();
        ended(holder)
    })
}

/// The master and its guardian are killed; `netmcore-admin cleanup DIR` removes what is left.
fn killed_then_admin_cleanup(ctx: &Ctx) -> anyhow::Result<()> {
    let (mut master, _) = ctx.holding_master("hold-sleep")?;
    kill_master_and_guardian(&mut master)?;
    let existing = ctx.names.existing();
    ensure!(
        existing.len() == HELD,
        "the objects were destroyed without a cleanup: only {existing:?} are left"
    );
    match admin_binary() {
        Some(admin) => {
            let status = Command::new(&admin)
                .arg("cleanup")
                .arg(ctx.socket_dir())
                .stdout(std::process::Stdio::null())
                .status()
                .with_context(|| format!("run {}", admin.display()))?;
            ensure!(
                status.success(),
                "netmcore-admin cleanup ended with {status}"
            );
        }
        None => {
            eprintln!("  (netmcore-admin not found: using netmcore::destroy_resources_in)");
            netmcore::destroy_resources_in(&ctx.socket_dir())?;
        }
    }
    Ok(())
}

/// The `netmcore-admin` binary: `NETMCORE_ADMIN`, or next to this program.
fn admin_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("NETMCORE_ADMIN") {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.join("netmcore-admin")).filter(|p| p.is_file())
}

/// The master and its guardian are killed; a new `startup` on the same directory cleans.
fn killed_then_new_startup(ctx: &Ctx) -> anyhow::Result<()> {
    let (mut master, _) = ctx.holding_master("hold-sleep")?;
    kill_master_and_guardian(&mut master)?;
    ensure!(
        ctx.names.existing().len() == HELD,
        "the objects were destroyed before the new startup"
    );
    let fresh = ctx.spawn("fresh")?;
    expect_clean_exit(fresh, "new master")
}

/// A second master on a live directory gets `SocketDirectoryInUse` and disturbs nothing.
fn second_master(ctx: &Ctx) -> anyhow::Result<()> {
    let (master, _) = ctx.holding_master("hold-sleep-expect-stopped")?;
    let second = ctx.spawn("second")?;
    let outcome = expect_clean_exit(second, "second master");
    let existing = ctx.names.existing();
    let alive = !ended(i32::try_from(master.id())?);
    signal(i32::try_from(master.id())?, Signal::TERM)?;
    expect_clean_exit(master, "first master")?;
    outcome?;
    ensure!(alive, "the first master died when the second started");
    ensure!(
        existing.len() == HELD,
        "the second master disturbed the first's objects: only {existing:?} were left"
    );
    Ok(())
}

/// The body of a re-executed child in `role`; returns its exit code.
fn child_main(role: &str) -> anyhow::Result<()> {
    let scratch = PathBuf::from(std::env::var_os(DIR_VAR).context("no scratch directory")?);
    let prefix = std::env::var(PREFIX_VAR).context("no prefix")?;
    let names = Names::new(&scratch, &prefix);
    let config = Config::new(scratch.join("sock"));
    let holder = process::def_process(|(names, then): (Names, Then)| -> () {
        let hold = || -> anyhow::Result<()> {
            ShmObject::create(&names.shm)?.set_size(4096)?;
            NamedSemaphore::create(&names.sem, 0)?;
            std::fs::write(&names.file, b"managed by netmcore\n")?;
            netmcore::manage_shm(&names.shm)?;
            netmcore::manage_sem(&names.sem)?;
            netmcore::manage_file(&names.file)?;
            Ok(())
        };
        hold().expect("the holder holds its objects");
        // Shared structures too, held in the middle of their use: a locked mutex and a live
        // claim. Their segments are named by netmcore; the scenario checks them by name.
        let mutex = Mutex::new(7u64).expect("a mutex");
        let vector = SharedVec::<u64>::zeroed(64).expect("a vector");
        let segments = [mutex.handle().id(), vector.handle().id()]
            .map(|id| netmcore::get_shm(id).expect("a segment's name"))
            .join("\n");
        std::fs::write(names.scratch.join(SEGMENTS), segments).expect("list the segments");
        let _guard = mutex.lock().expect("a fresh mutex");
        let _claim = vector.claim(8..16).expect("a fresh claim");
        match then {
            Then::Panic => panic!("the holder panics while holding its objects"),
            Then::Sleep => {
                write_own_pid(&names.scratch.join("holder.pid")).expect("write the pid");
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
        }
    })?;
    let nothing = process::def_process(|(): ()| -> () {})?;
    let clean = process::def_process(|names: Names| -> bool { names.existing().is_empty() })?;
    match role {
        "hold-sleep" => {
            netmcore::run(config, &holder, &(names, Then::Sleep))?;
        }
        "hold-panic" => {
            // The panic is expected: keep its message out of the report.
            std::panic::set_hook(Box::new(|_| {}));
            let out = netmcore::run(config, &holder, &(names, Then::Panic))?;
            ensure!(out.is_none(), "the panicking holder returned a result");
        }
        "hold-sleep-expect-stopped" => {
            match netmcore::run(config, &holder, &(names, Then::Sleep)) {
                Err(Error::Stopped { signal: "SIGTERM" }) => {}
                other => bail!("run returned {other:?}, not Err(Stopped {{ SIGTERM }})"),
            }
        }
        "fresh" => {
            let out = netmcore::run(config, &clean, &names)?;
            ensure!(
                out == Some(true),
                "the first process of the new master found the dead master's objects ({out:?})"
            );
        }
        "second" => match netmcore::run(config, &nothing, &()) {
            Err(Error::SocketDirectoryInUse(_)) => {}
            other => bail!("run returned {other:?}, not Err(SocketDirectoryInUse)"),
        },
        other => bail!("unknown role {other}"),
    }
    Ok(())
}

/// Runs `scenario` from start to checks; cleans its scratch directory.
fn run_scenario(scenario: &Scenario, index: usize) -> anyhow::Result<()> {
    let scratch =
        std::env::temp_dir().join(format!("netmcore-leak-{}-{index}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).with_context(|| format!("mkdir {}", scratch.display()))?;
    let prefix = format!("/netmcore-leak-{}-{index}-", std::process::id());
    let ctx = Ctx {
        names: Names::new(&scratch, &prefix),
        scratch,
        prefix,
        groups: std::cell::RefCell::new(Vec::new()),
    };
    let outcome = (scenario.run)(&ctx);
    let groups = ctx.groups.borrow().clone();
    let checked = outcome.and_then(|()| check_after(&ctx, &groups));
    if checked.is_err() {
        for g in &groups {
            if let Some(group) = Pid::from_raw(*g) {
                let _ = rustix::process::kill_process_group(group, Signal::KILL);
            }
        }
        reap();
    }
    let _ = std::fs::remove_dir_all(&ctx.scratch);
    checked
}

fn main() -> ExitCode {
    if let Ok(role) = std::env::var(ROLE_VAR) {
        return match child_main(&role) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("leak_check {role}: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
        eprintln!("leak_check: prctl(PR_SET_CHILD_SUBREAPER): {e}");
        return ExitCode::FAILURE;
    }
    let filter: Vec<String> = std::env::args().skip(1).collect();
    let started = Instant::now();
    let mut rows = Vec::new();
    for (index, scenario) in SCENARIOS.iter().enumerate() {
        if !filter.is_empty() && !filter.iter().any(|f| scenario.name.contains(f.as_str())) {
            continue;
        }
        let t = Instant::now();
        let outcome = run_scenario(scenario, index);
        let line = match &outcome {
            Ok(()) => "ok".to_owned(),
            Err(e) => format!("FAILED: {e:#}"),
        };
        println!("leak-check {} ... {line}", scenario.name);
        rows.push((scenario.name, outcome.is_ok(), t.elapsed()));
    }
    let failed = rows.iter().filter(|r| !r.1).count();
    println!("\nleak-check summary");
    for (name, ok, time) in &rows {
        let verdict = if *ok { "ok" } else { "FAILED" };
        println!("  {name:<50} {verdict:<7} {:>6} ms", time.as_millis());
    }
    println!(
        "  {} scenarios, {} passed, {failed} failed, {:.1} s",
        rows.len(),
        rows.len() - failed,
        started.elapsed().as_secs_f64()
    );
    if failed == 0 && !rows.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
