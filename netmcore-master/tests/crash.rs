//! Crash safety: a master killed with SIGKILL leaves nothing of its run behind for long (its
//! guardian cleans up), and when the guardian died too, `destroy_resources_in` and the next
//! `startup` clean up. Each case runs in a forked process of its own (see
//! `support::run_cases`).

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use netmcore_encap::Encap;
use netmcore_ipc::sem::NamedSemaphore;
use netmcore_ipc::shm::ShmObject;
use netmcore_master::{
    Config, Error, create_preallocated_shm, def_process, destroy_resources_in, manage_file,
    manage_sem, manage_shm, start, startup,
};
use netmcore_resources::ResId;
use netmcore_resources::ledger::{LedgerObject, ObjectKind};
use rustix::process::{Pid, Signal, WaitOptions, kill_process};
use support::{Case, run_cases, wait_for_file, write_file};

fn main() -> std::process::ExitCode {
    run_cases(&[
        Case {
            name: "sigkill_of_the_master_leaves_nothing_of_its_run_within_a_second",
            run: sigkill_of_the_master_leaves_nothing_of_its_run_within_a_second,
        },
        Case {
            name: "without_its_guardian_a_dead_master_is_cleaned_by_destroy_resources_in",
            run: without_its_guardian_a_dead_master_is_cleaned_by_destroy_resources_in,
        },
        Case {
            name: "without_its_guardian_a_dead_master_is_cleaned_by_the_next_startup",
            run: without_its_guardian_a_dead_master_is_cleaned_by_the_next_startup,
        },
    ])
}

/// The bound the issue sets for the guardian's cleanup.
const GUARDIAN_BOUND: Duration = Duration::from_secs(1);
/// A generous bound for what has no bound of its own (a worker's death signal, say).
const GENEROUS: Duration = Duration::from_secs(20);

/// Polls `done` until it holds or `bound` has passed; whether it held.
fn within(bound: Duration, done: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if done() {
            return true;
        }
        if start.elapsed() > bound {
            return done();
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The fields of `/proc/<pid>/stat` after the command name: state, ppid, pgrp, session, …
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Whether process `pid` runs (a zombie does not).
fn running(pid: i32) -> bool {
    stat_fields(pid).is_some_and(|f| f[0] != "Z" && f[0] != "X")
}

/// The guardian of the master `master`: its child that leads a session of its own.
fn guardian_of(master: i32) -> Option<i32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .find(|&p| {
            stat_fields(p).is_some_and(|f| f[1] == master.to_string() && f[3] == p.to_string())
        })
}

/// The children of process `parent` (zombies included).
fn children_of(parent: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Whether process `pid` is a zygote (by its command name).
fn is_zygote(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|name| name.trim_end() == "netmcore-zygote")
}

/// What a crashed run had created, as its processes reported it.
struct Run {
    master: i32,
    worker: i32,
    sock: PathBuf,
    file: PathBuf,
    shm: String,
    sem: String,
    worker_pool: String,
    master_pool: String,
}

impl Run {
    /// Whether each object of the run still exists.
    fn existing(&self) -> Vec<String> {
        let mut left = Vec::new();
        if self.file.exists() {
            left.push(self.file.display().to_string());
        }
        for name in [&self.shm, &self.worker_pool, &self.master_pool] {
            if Path::new(&format!("/dev/shm{name}")).exists() {
                left.push(name.clone());
            }
        }
        if Path::new(&format!("/dev/shm/sem.{}", &self.sem[1..])).exists() {
            left.push(self.sem.clone());
        }
        left
    }

    /// The run's objects as the ledger names them.
    fn objects(&self) -> Vec<LedgerObject> {
        let mut objects = vec![
            LedgerObject::file(&self.file),
            LedgerObject::shm(self.shm.as_str()),
            LedgerObject::sem(self.sem.as_str()),
            LedgerObject::shm(self.worker_pool.as_str()),
            LedgerObject::shm(self.master_pool.as_str()),
        ];
        objects.sort();
        objects
    }

    fn kill_master(&self) {
        kill_process(Pid::from_raw(self.master).unwrap(), Signal::KILL).unwrap();
        let (_, status) =
            rustix::process::waitpid(Pid::from_raw(self.master), WaitOptions::empty())
                .unwrap()
                .unwrap();
        assert_eq!(status.terminating_signal(), Some(Signal::KILL.as_raw()));
    }
}

/// Forks a master that creates a preallocated shm before startup and whose first process
/// manages a file, a shm and a semaphore and has the master create a preallocated shm for
/// it, then sleeps; returns once everything exists.
fn crashing_run(tmp: &Path) -> Run {
    let sock = tmp.join("sock");
    let ready = tmp.join("ready");
    let file = tmp.join("data.bin");
    let prefix = format!("/netmcore-test-{}-crash-", std::process::id());
    let (r, f, p) = (ready.clone(), file.clone(), prefix.clone());
    let (busy, _) = def_process(move |_| {
        std::fs::write(&f, b"data").unwrap();
        let shm = ShmObject::create_unique(&format!("{p}shm-")).unwrap();
        let sem = NamedSemaphore::create_unique(&format!("{p}sem-"), 0).unwrap();
        manage_file(&f).unwrap();
        manage_shm(shm.name()).unwrap();
        manage_sem(sem.name()).unwrap();
        let (_, pool) = create_preallocated_shm(&format!("{p}worker-pool-"), 1 << 20).unwrap();
        write_file(
            &r,
            &format!(
                "{} {} {} {pool}",
                rustix::process::getpid().as_raw_pid(),
                shm.name(),
                sem.name()
            ),
        );
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    })
    .unwrap();
    let master_ready = tmp.join("master-ready");
    let (m, s) = (master_ready.clone(), sock.clone());
    let master = support::sys::fork_child(move || {
        let (_, pool) = create_preallocated_shm(&format!("{prefix}master-pool-"), 1 << 20)
            .expect("preallocated before startup");
        write_file(&m, &pool);
        let _ = startup(Config::new(&s).warm_workers(2), || {
            start(busy, Encap::wrap(&()).unwrap())
        });
        1
    });
    let master_pool = wait_for_file(&master_ready).trim().to_owned();
    let fields: Vec<String> = wait_for_file(&ready)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let run = Run {
        master,
        worker: fields[0].parse().unwrap(),
        sock,
        file,
        shm: fields[1].clone(),
        sem: fields[2].clone(),
        worker_pool: fields[3].clone(),
        master_pool,
    };
    assert_eq!(run.existing().len(), 5, "every object exists");
    run
}

fn sigkill_of_the_master_leaves_nothing_of_its_run_within_a_second() {
    let tmp = tempfile::tempdir().unwrap();
    let run = crashing_run(tmp.path());
    // Every object is in the ledger, and the directory is in use.
    let mut live = netmcore_resources::ledger::replay_dir(&run.sock).unwrap();
    live.sort();
    assert_eq!(live, run.objects());
    assert!(matches!(
        destroy_resources_in(&run.sock),
        Err(Error::SocketDirectoryInUse(d)) if d == run.sock
    ));
    let guardian = guardian_of(run.master).expect("the master has a guardian");
    // Its zygote and warm workers too (all children of the master, made by the zygote).
    assert!(
        within(GENEROUS, || children_of(run.master).len() == 5
            && children_of(run.master).into_iter().any(is_zygote)),
        "the guardian, the worker, the zygote and two warm workers: {:?}",
        children_of(run.master)
    );
    let forked = children_of(run.master);
    run.kill_master();
    assert!(
        within(GUARDIAN_BOUND, || run.existing().is_empty()),
        "left a second after the master's death: {:?}",
        run.existing()
    );
    assert!(
        within(GENEROUS, || !running(run.worker)),
        "the worker survived its master"
    );
    assert!(
        within(GENEROUS, || !running(guardian)),
        "the guardian did not end"
    );
    assert!(
        within(GENEROUS, || forked.iter().all(|&p| !running(p))),
        "a child of the master survived it: {:?}",
        forked.iter().filter(|&&p| running(p)).collect::<Vec<_>>()
    );
    assert!(
        netmcore_resources::ledger::replay_dir(&run.sock)
            .unwrap()
            .is_empty()
    );
    // Nothing is left to clean, and the directory is free for a new master.
    let report = destroy_resources_in(&run.sock).unwrap();
    assert!(report.destroyed.is_empty() && report.is_clean(), "{report}");
}

/// Kills the guardian of `run`, then its master; the objects stay.
fn kill_guardian_then_master(run: &Run) {
    let guardian = guardian_of(run.master).expect("the master has a guardian");
    let master_session = stat_fields(run.master).unwrap()[3].clone();
    assert_ne!(
        master_session,
        guardian.to_string(),
        "the guardian leads a session of its own"
    );
    kill_process(Pid::from_raw(guardian).unwrap(), Signal::KILL).unwrap();
    assert!(within(GENEROUS, || !running(guardian)));
    run.kill_master();
    assert!(
        within(GENEROUS, || !running(run.worker)),
        "the worker survived its master"
    );
    assert_eq!(run.existing().len(), 5, "nobody cleaned up");
}

fn without_its_guardian_a_dead_master_is_cleaned_by_destroy_resources_in() {
    let tmp = tempfile::tempdir().unwrap();
    let run = crashing_run(tmp.path());
    let had_socket = run.sock.join("admin.sock").exists();
    kill_guardian_then_master(&run);
    let report = destroy_resources_in(&run.sock).unwrap();
    let mut destroyed = report.destroyed.clone();
    destroyed.sort();
    assert_eq!(destroyed, run.objects(), "{report}");
    assert!(
        report.is_clean() && report.already_gone.is_empty(),
        "{report}"
    );
    if had_socket {
        assert_eq!(report.sockets_removed, [run.sock.join("admin.sock")]);
    }
    assert_eq!(run.existing(), Vec::<String>::new());
    assert!(
        netmcore_resources::ledger::replay_dir(&run.sock)
            .unwrap()
            .is_empty()
    );
    assert!(
        report
            .to_string()
            .contains(&format!("destroyed shm {}", run.shm))
    );
    // A second call finds nothing more.
    let again = destroy_resources_in(&run.sock).unwrap();
    assert!(again.is_empty(), "{again}");
    // An object listed but already gone is reported as such.
    let mut ledger = netmcore_resources::ledger::Ledger::open(&run.sock).unwrap();
    let ghost = LedgerObject::new(ObjectKind::Shm, "/netmcore-test-never-created");
    ledger.registered(&ghost).unwrap();
    drop(ledger);
    let report = destroy_resources_in(&run.sock).unwrap();
    assert_eq!(report.already_gone, [ghost]);
}

fn without_its_guardian_a_dead_master_is_cleaned_by_the_next_startup() {
    let tmp = tempfile::tempdir().unwrap();
    let run = crashing_run(tmp.path());
    kill_guardian_then_master(&run);
    let (echo, _) = def_process(|arg| arg).unwrap();
    startup(Config::new(&run.sock), || {
        start(echo, Encap::wrap(&ResId(0)).unwrap())
    })
    .unwrap();
    assert_eq!(run.existing(), Vec::<String>::new());
    assert!(
        netmcore_resources::ledger::replay_dir(&run.sock)
            .unwrap()
            .is_empty()
    );
}
