//! What happens after a master dies (DESIGN.md §4, issue 5 "Crash safety"): a master killed
//! with SIGKILL mid-run, holding a managed shm object, a named semaphore, a file and a
//! preallocated region, leaves nothing of its run in `/dev/shm` within one second, its managed
//! file is gone, and none of its workers survives. When a dead master's objects are still there
//! (its guardian died too), the next `startup` on the same socket directory destroys them, and
//! so does `destroy_resources_in` from any process, which reports what it removed; on a
//! directory whose master is alive, `destroy_resources_in` refuses with `SocketDirectoryInUse`.
//!
//! The dead master's state is made by hand for the last three: real objects, and a ledger that
//! lists them, in a socket directory no master holds. That is exactly what a master and its
//! guardian killed together leave, without depending on how the guardian is found.
//!
//! Run one with `cargo test -p netmcore-tests --test crash_recovery -- NAME`.

mod support;

use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use netmcore::process::{self, ProcessType};
use netmcore::{Config, Error, Inherit, ResId};
use netmcore_resources::ledger::{Ledger, LedgerObject};
use rustix::process::Signal;
use serde::{Deserialize, Serialize};
use support::objects;
use support::{Scenario, cases, coordinator, ensure_err, sys};

fn main() -> ExitCode {
    support::run_cases(cases![
        master_sigkilled_mid_run_leaves_nothing_within_a_second,
        next_startup_after_master_and_guardian_killed,
        next_startup_destroys_a_dead_masters_leftovers,
        destroy_resources_in_removes_and_reports_leftovers,
        destroy_resources_in_refuses_a_live_master,
    ])
}

/// The bound the issue sets: after SIGKILL of the master, nothing of its run is left in
/// `/dev/shm` within one second. The only time bound any scenario asserts.
const CLEANUP_BOUND: Duration = Duration::from_secs(1);

/// The OS objects of a crash scenario, by name.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Objects {
    shm: String,
    sem: String,
    file: PathBuf,
}

impl Objects {
    /// New names for the scenario `s`.
    fn new(s: &Scenario, tag: &str) -> Objects {
        Objects {
            shm: objects::unique_name(&format!("{tag}-shm")),
            sem: objects::unique_name(&format!("{tag}-sem")),
            file: s.path(&format!("{tag}.txt")),
        }
    }

    /// Creates the three objects.
    fn create(&self) -> anyhow::Result<()> {
        objects::create_shm(&self.shm, 4096)?;
        objects::create_sem(&self.sem)?;
        objects::create_file(&self.file)
    }

    /// Where each appears in the file system.
    fn paths(&self) -> [PathBuf; 3] {
        [
            objects::shm_path(&self.shm),
            objects::sem_path(&self.sem),
            self.file.clone(),
        ]
    }

    /// Those of them that still exist.
    fn existing(&self) -> Vec<PathBuf> {
        self.paths().into_iter().filter(|p| p.exists()).collect()
    }

    /// Their ledger records.
    fn ledger_objects(&self) -> [LedgerObject; 3] {
        [
            LedgerObject::shm(&self.shm),
            LedgerObject::sem(&self.sem),
            LedgerObject::file(&self.file),
        ]
    }
}

/// A running master (a child of the scenario) that holds objects of every kind: it
/// preallocated `region` before `startup`; its first process manages the shm object, the
/// named semaphore and the file of `objects`, and started a sleeper that inherited the region
/// and fetched the shm object; both workers sleep.
struct HoldingMaster {
    master: sys::Child,
    objects: Objects,
    region: String,
    workers: [(&'static str, i32); 2],
}

impl HoldingMaster {
    /// Starts the master and waits until its workers hold everything.
    fn start(s: &Scenario, tag: &str) -> anyhow::Result<HoldingMaster> {
        let names = Objects::new(s, tag);
        let dir = s.dir().to_owned();
        let socket_dir = s.socket_dir();
        let prefix = format!("/{}{tag}-region-", objects::own_prefix());
        let master = {
            let names = names.clone();
            sys::fork_child(move || {
                let run = || -> anyhow::Result<()> {
                    let (region, region_name) =
                        netmcore::create_preallocated_shm(&prefix, 1 << 20)?;
                    support::write_file(&dir.join("region.name"), &region_name)?;
                    let sleeper =
                        process::def_process(|(shm, pid_file): (ResId, PathBuf)| -> () {
                            netmcore::get_resource(shm)
                                .expect("the sleeper fetches the shm object");
                            support::write_own_pid(&pid_file).expect("write the pid file");
                            support::sleep_forever()
                        })?;
                    let first =
                        process::def_process(move |(names, dir): (Objects, PathBuf)| -> () {
                            let hold = || -> anyhow::Result<()> {
                                names.create()?;
                                let shm = netmcore::manage_shm(&names.shm)?.id();
                                netmcore::manage_sem(&names.sem)?;
                                netmcore::manage_file(&names.file)?;
                                sleeper.start_with(
                                    &(shm, dir.join("sleeper.pid")),
                                    Inherit::Resources(vec![region]),
                                )?;
                                support::read_pid(&dir.join("sleeper.pid"))?;
                                support::write_own_pid(&dir.join("first.pid"))
                            };
                            if let Err(e) = hold() {
                                support::write_file(&dir.join("first-failed"), &format!("{e:#}"))
                                    .ok();
                            }
                            support::sleep_forever()
                        })?;
                    netmcore::run(Config::new(socket_dir), &first, &(names, dir.clone()))?;
                    Ok(())
                };
                match run() {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("the master to be killed failed: {e:#}");
                        1
                    }
                }
            })
        };
        let (first_file, failed) = (s.path("first.pid"), s.path("first-failed"));
        support::wait_until("the first process holds its objects, or failed", || {
            first_file.exists() || failed.exists() || support::has_ended(master.pid)
        })?;
        if !first_file.exists() {
            let _ = support::send_signal(master.pid, Signal::KILL);
            let status = master.wait();
            match std::fs::read_to_string(&failed) {
                Ok(text) => bail!("the first process failed: {text}"),
                Err(_) => {
                    bail!("the master ended with {status:?} before its first process was ready")
                }
            }
        }
        let workers = [
            ("first process", support::read_pid(&first_file)?),
            ("sleeper", support::read_pid(&s.path("sleeper.pid"))?),
        ];
        let region = std::fs::read_to_string(s.path("region.name")).context("the region's name")?;
        for path in names.paths() {
            objects::ensure_exists(&path, "an object of the live run")?;
        }
        ensure!(
            objects::shm_exists(&region),
            "the region {region} is not there"
        );
        Ok(HoldingMaster {
            master,
            objects: names,
            region,
            workers,
        })
    }

    /// What is left of its run: its named objects that still exist, and any `/dev/shm` entry
    /// with the scenario's prefix or the master's library prefix (`netmcore-<pid>-`).
    fn left(&self) -> Vec<String> {
        let mut left: Vec<String> = self
            .objects
            .existing()
            .into_iter()
            .map(|p| p.display().to_string())
            .collect();
        if objects::shm_exists(&self.region) {
            left.push(objects::shm_path(&self.region).display().to_string());
        }
        left.extend(objects::dev_shm_containing(&objects::own_prefix()));
        left.extend(objects::dev_shm_containing(&format!(
            "netmcore-{}-",
            self.master.pid
        )));
        left.sort();
        left.dedup();
        left
    }

    /// Waits until both workers have died.
    fn wait_workers_dead(&self) -> anyhow::Result<()> {
        for (what, pid) in self.workers {
            support::wait_until(&format!("the {what} ({pid}) has died"), || {
                support::has_ended(pid)
            })?;
        }
        Ok(())
    }
}

/// A master holding a managed shm object, a named semaphore, a file and a preallocated region
/// (see [`HoldingMaster`]) is killed with SIGKILL: within one second none of those objects
/// exists and nothing of the run is left in `/dev/shm`; both workers die.
fn master_sigkilled_mid_run_leaves_nothing_within_a_second(s: &Scenario) -> anyhow::Result<()> {
    let held = HoldingMaster::start(s, "crash")?;
    support::send_signal(held.master.pid, Signal::KILL)?;
    let killed = Instant::now();
    let mut left = held.left();
    while !left.is_empty() && killed.elapsed() < CLEANUP_BOUND {
        std::thread::sleep(Duration::from_millis(5));
        left = held.left();
    }
    ensure!(
        left.is_empty(),
        "{CLEANUP_BOUND:?} after SIGKILL of the master, these are left: {left:?}"
    );
    held.wait_workers_dead()?;
    let HoldingMaster { master, .. } = held;
    let status = master.wait();
    ensure!(
        status == sys::Status::Signaled(Signal::KILL.as_raw()),
        "the master ended with {status:?}"
    );
    Ok(())
}

/// A master holding objects of every kind (see [`HoldingMaster`]) is stopped with SIGSTOP,
/// so that it forks nothing more; every child of it (its guardian, which `startup` forks, and
/// its workers) is killed with SIGKILL, then the master itself. Nobody is left to clean up, so
/// the objects stay; the next `startup` on the same socket directory destroys them.
fn next_startup_after_master_and_guardian_killed(s: &Scenario) -> anyhow::Result<()> {
    let held = HoldingMaster::start(s, "dead")?;
    let master = held.master.pid;
    support::send_signal(master, Signal::STOP)?;
    support::wait_until("the master is stopped", || {
        support::Proc::read(master).is_some_and(|p| p.state == 'T')
    })?;
    let children = support::children_of(master);
    for child in &children {
        support::send_signal(child.pid, Signal::KILL)?;
    }
    support::send_signal(master, Signal::KILL)?;
    let HoldingMaster {
        master: child,
        objects: names,
        region,
        workers,
    } = held;
    let status = child.wait();
    ensure!(
        status == sys::Status::Signaled(Signal::KILL.as_raw()),
        "the master ended with {status:?}"
    );
    for (what, pid) in workers {
        support::wait_until(&format!("the {what} ({pid}) has died"), || {
            support::has_ended(pid)
        })?;
    }
    for child in &children {
        support::wait_until(&format!("the master's child {child:?} has died"), || {
            support::has_ended(child.pid)
        })?;
    }
    // The objects must still be there, or this scenario proves nothing: a guardian that is not
    // a child of the master would have escaped.
    let mut missing: Vec<String> = names
        .paths()
        .into_iter()
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if !objects::shm_exists(&region) {
        missing.push(region.clone());
    }
    ensure!(
        missing.is_empty(),
        "a dead master's objects were destroyed before the next startup (did a guardian survive \
         outside the master's children {children:?}?): {missing:?}"
    );
    let live = objects::ledger_live(&s.socket_dir())?;
    ensure!(
        live.len() >= 4,
        "the dead master's ledger lists only {live:?}"
    );

    let first: ProcessType<(Objects, String), support::Report> =
        coordinator(|(names, region): (Objects, String)| {
            let mut left = names.existing();
            if objects::shm_exists(&region) {
                left.push(objects::shm_path(&region));
            }
            ensure!(
                left.is_empty(),
                "the first process of the next master finds {left:?}"
            );
            Ok(())
        })?;
    support::run_coordinator(s, &first, &(names, region)).context("the next startup")?;
    let live = objects::ledger_live(&s.socket_dir())?;
    ensure!(live.is_empty(), "the ledger still lists {live:?}");
    Ok(())
}

/// The state a master and its guardian leave when both are killed: in a socket directory no
/// master holds, a ledger that lists `live` (created for real), an object registered and never
/// created, and `untouchable`, which exists but is recorded as destroyed (its name was reused
/// by someone else) and must be left alone.
fn dead_master_state(
    s: &Scenario,
    live: &Objects,
    untouchable: &str,
) -> anyhow::Result<LedgerObject> {
    let dir = s.socket_dir();
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("create {}", dir.display()))?;
    live.create()?;
    objects::create_shm(untouchable, 4096)?;
    let mut ledger = Ledger::open(&dir).context("open the ledger")?;
    let never_created = LedgerObject::shm(objects::unique_name("never-created"));
    let reused = LedgerObject::shm(untouchable);
    ledger.registered(&reused)?;
    for object in live.ledger_objects() {
        ledger.registered(&object)?;
    }
    ledger.registered(&never_created)?;
    ledger.destroyed(&reused)?;
    Ok(never_created)
}

/// Checks that `untouchable` survived a cleanup, then removes it.
fn untouched(untouchable: &str) -> anyhow::Result<()> {
    ensure!(
        objects::shm_exists(untouchable),
        "{untouchable}, recorded as destroyed, was destroyed by the cleanup"
    );
    netmcore_ipc::shm::unlink(untouchable).context("unlink the untouchable object")
}

/// A dead master left a shm object, a named semaphore and a file listed in its ledger. The
/// next `startup` on the same socket directory destroys them before its first process runs,
/// and leaves the ledger with nothing live.
fn next_startup_destroys_a_dead_masters_leftovers(s: &Scenario) -> anyhow::Result<()> {
    let live = Objects::new(s, "left");
    let untouchable = objects::unique_name("reused");
    dead_master_state(s, &live, &untouchable)?;
    let first: ProcessType<Objects, support::Report> = coordinator(|live: Objects| {
        let left = live.existing();
        ensure!(
            left.is_empty(),
            "the first process of the next master finds {left:?}"
        );
        Ok(())
    })?;
    support::run_coordinator(s, &first, &live).context("the next startup")?;
    let live_now = objects::ledger_live(&s.socket_dir())?;
    ensure!(live_now.is_empty(), "the ledger still lists {live_now:?}");
    untouched(&untouchable)
}

/// A dead master left a shm object, a named semaphore and a file listed in its ledger.
/// `destroy_resources_in`, called by a process that never was a master, destroys them and
/// reports each; the ledger then lists nothing live, and a second call finds nothing to do.
fn destroy_resources_in_removes_and_reports_leftovers(s: &Scenario) -> anyhow::Result<()> {
    let live = Objects::new(s, "left");
    let untouchable = objects::unique_name("reused");
    let never_created = &dead_master_state(s, &live, &untouchable)?;
    let report = netmcore::destroy_resources_in(&s.socket_dir()).context("destroy_resources_in")?;
    let left = live.existing();
    ensure!(left.is_empty(), "left after destroy_resources_in: {left:?}");
    let mut destroyed = report.destroyed.clone();
    destroyed.sort();
    let mut expected = live.ledger_objects().to_vec();
    expected.sort();
    ensure!(
        destroyed == expected && report.failed.is_empty(),
        "the report does not list exactly the three objects as destroyed: {report:?}"
    );
    ensure!(
        report.already_gone.len() == 1 && report.already_gone[0] == *never_created,
        "the report does not list the object never created as already gone: {report:?}"
    );
    let live_now = objects::ledger_live(&s.socket_dir())?;
    ensure!(live_now.is_empty(), "the ledger still lists {live_now:?}");
    let again = netmcore::destroy_resources_in(&s.socket_dir()).context("a second time")?;
    ensure!(
        again.destroyed.is_empty() && again.already_gone.is_empty() && again.failed.is_empty(),
        "a second destroy_resources_in found something to do: {again:?}"
    );
    untouched(&untouchable)
}

/// Whether `a` and `b` name the same directory.
fn same_dir(a: &Path, b: &Path) -> bool {
    a == b
        || a.canonicalize()
            .ok()
            .is_some_and(|a| b.canonicalize().ok() == Some(a))
}

/// While a master (a child of the scenario) runs with a managed shm object, `destroy_resources_in`
/// on its socket directory is `SocketDirectoryInUse`, from the scenario and from the master's
/// own first process, and destroys nothing; once the master has ended, the object is gone.
fn destroy_resources_in_refuses_a_live_master(s: &Scenario) -> anyhow::Result<()> {
    let shm = objects::unique_name("alive");
    let (ready, go, report) = (s.path("ready"), s.path("go"), s.path("report"));
    let socket_dir = s.socket_dir();
    let master = {
        let (shm, ready, go, report, socket_dir) = (
            shm.clone(),
            ready.clone(),
            go.clone(),
            report.clone(),
            socket_dir.clone(),
        );
        sys::fork_child(move || {
            let run = || -> anyhow::Result<()> {
                let first = support::reporting_coordinator(
                    report,
                    |(shm, dir, ready, go): (String, PathBuf, PathBuf, PathBuf)| {
                        objects::create_shm(&shm, 4096)?;
                        netmcore::manage_shm(&shm)?;
                        ensure_err!(
                            netmcore::destroy_resources_in(&dir),
                            Error::SocketDirectoryInUse(d) if same_dir(&d, &dir)
                        );
                        support::touch(&ready)?;
                        support::wait_for_file(&go)
                    },
                )?;
                let out = netmcore::run(
                    Config::new(socket_dir.clone()),
                    &first,
                    &(shm, socket_dir, ready, go),
                )?;
                support::verdict(out)
            };
            match run() {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("the live master failed: {e:#}");
                    1
                }
            }
        })
    };
    let checks = || -> anyhow::Result<()> {
        support::wait_until("the first process is ready or has failed", || {
            ready.exists() || report.exists()
        })?;
        ensure_err!(
            netmcore::destroy_resources_in(&socket_dir),
            Error::SocketDirectoryInUse(d) if same_dir(&d, &socket_dir)
        );
        ensure!(
            objects::shm_exists(&shm),
            "{shm} of the live master was destroyed"
        );
        Ok(())
    };
    let outcome = checks();
    // The gate opens whatever happened, so that the master ends.
    support::touch(&go)?;
    let status = master.wait();
    outcome?;
    support::file_verdict(&report).context("the first process")?;
    ensure!(
        status == sys::Status::Exited(0),
        "the master ended with {status:?}"
    );
    ensure!(
        !objects::shm_exists(&shm),
        "{shm} is left after the master ended"
    );
    Ok(())
}
