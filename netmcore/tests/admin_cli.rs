//! The `netmcore-admin` binary against a live master, a dead master's directory, and bad
//! command lines.
//!
//! A live master needs a process of its own that runs nothing else: the test re-runs this
//! test binary filtered to [`helper_master_process`], with the socket directory in an
//! environment variable, and that process becomes the master.

use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use netmcore::{Config, process};
use netmcore_resources::ledger::{Ledger, LedgerObject, replay_dir};

/// Set for the re-run that plays the master: its socket directory.
const MASTER_DIR_VAR: &str = "NETMCORE_ADMIN_CLI_MASTER_DIR";

/// Runs `netmcore-admin` with `args`.
fn admin(args: &[&str], dir: Option<&Path>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_netmcore-admin"));
    command.args(args);
    if let Some(dir) = dir {
        command.arg(dir);
    }
    command.output().expect("run netmcore-admin")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The files the master process and its test share, next to the socket directory.
fn stop_file(dir: &Path) -> PathBuf {
    dir.with_extension("stop")
}

fn ready_file(dir: &Path) -> PathBuf {
    dir.with_extension("ready")
}

/// Not a test of its own: in the re-run with [`MASTER_DIR_VAR`] set, this process becomes a
/// master whose first process starts two workers, writes the ready file, and joins them once
/// the stop file exists. Without the variable it does nothing.
#[test]
fn helper_master_process() {
    let Some(dir) = std::env::var_os(MASTER_DIR_VAR).map(PathBuf::from) else {
        return;
    };
    let sleeper = process::def_process(|stop: PathBuf| -> u32 {
        while !stop.exists() {
            std::thread::sleep(Duration::from_millis(5));
        }
        1
    })
    .expect("def_process");
    let coordinator = process::def_process(move |(stop, ready): (PathBuf, PathBuf)| -> u32 {
        let pids: Vec<_> = (0..2)
            .map(|_| sleeper.start(&stop).expect("start"))
            .collect();
        std::fs::write(&ready, "ready\n").expect("write the ready file");
        pids.into_iter()
            .map(|pid| sleeper.join(pid).expect("join").expect("a result"))
            .sum()
    })
    .expect("def_process");
    let result = netmcore::run(
        Config::new(&dir),
        &coordinator,
        &(stop_file(&dir), ready_file(&dir)),
    );
    assert_eq!(result.expect("run"), Some(2));
}

/// The master process of a test; if the test fails, it is stopped (its workers die with
/// it) rather than left waiting for its stop file.
struct MasterProcess(std::process::Child);

impl Drop for MasterProcess {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn status_and_cleanup_follow_a_master_through_its_life() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("job");
    let mut master = MasterProcess(
        Command::new(std::env::current_exe().expect("the test binary"))
            .args(["helper_master_process", "--exact", "--nocapture"])
            .env(MASTER_DIR_VAR, &dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn the master"),
    );
    while !ready_file(&dir).exists() {
        if let Some(status) = master.0.try_wait().expect("try_wait") {
            panic!("the master ended early with {status}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }

    // Alive: its pid, its three processes (the coordinator and two workers) and its two
    // process types (four points), through the admin socket.
    let live = admin(&["status"], Some(&dir));
    let text = stdout(&live);
    assert!(live.status.success(), "{live:?}");
    assert!(
        text.contains(&format!("master: unix pid {}, running", master.0.id())),
        "{text}"
    );
    assert!(text.contains("processes: 3 (3 running)"), "{text}");
    assert!(text.contains("process 0: running, unix pid "), "{text}");
    assert!(text.contains("resources: 4"), "{text}");
    assert!(
        text.contains("fork point (joined through resource 1)"),
        "{text}"
    );

    // A live master's directory is not cleaned.
    let refused = admin(&["cleanup"], Some(&dir));
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        stderr(&refused).contains("a live master holds"),
        "{refused:?}"
    );

    std::fs::write(stop_file(&dir), "").expect("write the stop file");
    let ended = master.0.wait().expect("wait for the master");
    assert!(ended.success(), "the master ended with {ended}");

    // Dead: nothing left over, no admin socket.
    let dead = admin(&["status"], Some(&dir));
    let text = stdout(&dead);
    assert!(dead.status.success(), "{dead:?}");
    assert!(text.contains("no master is running"), "{text}");
    assert!(
        text.contains("left over (per the ledger): nothing"),
        "{text}"
    );
    assert!(!text.contains("stale admin socket"), "{text}");
    let cleaned = admin(&["cleanup"], Some(&dir));
    assert!(cleaned.status.success(), "{cleaned:?}");
    assert!(stdout(&cleaned).contains("nothing to clean"), "{cleaned:?}");
}

#[test]
fn status_and_cleanup_of_what_a_dead_master_left() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("job");
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .expect("mkdir");
    // What a killed master leaves: an unlocked lock file, a ledger that lists a file, the
    // file itself, and its admin socket.
    std::fs::write(dir.join(netmcore_master::LOCK_FILE_NAME), "").expect("lock file");
    let left = tmp.path().join("left over.dat");
    let mut ledger = Ledger::open(&dir).expect("ledger");
    ledger
        .registered(&LedgerObject::file(&left))
        .expect("record");
    drop(ledger);
    std::fs::write(&left, "data").expect("the left-over file");
    drop(UnixListener::bind(dir.join(netmcore_master::ADMIN_SOCKET_NAME)).expect("bind"));

    let status = admin(&["status"], Some(&dir));
    let text = stdout(&status);
    assert!(status.status.success(), "{status:?}");
    assert!(text.contains("no master is running"), "{text}");
    assert!(text.contains("left over (per the ledger): 1"), "{text}");
    assert!(text.contains(&left.display().to_string()), "{text}");
    assert!(text.contains("stale admin socket"), "{text}");
    assert!(text.contains("netmcore-admin cleanup"), "{text}");

    let cleaned = admin(&["cleanup"], Some(&dir));
    assert!(cleaned.status.success(), "{cleaned:?}");
    let text = stdout(&cleaned);
    assert!(
        text.contains(&format!("destroyed file {}", left.display())),
        "{text}"
    );
    assert!(text.contains("removed socket "), "{text}");
    assert!(!left.exists(), "the left-over file is still there");
    assert!(replay_dir(&dir).expect("replay").is_empty());

    let again = admin(&["status"], Some(&dir));
    let text = stdout(&again);
    assert!(
        text.contains("left over (per the ledger): nothing"),
        "{text}"
    );
    assert!(!text.contains("stale admin socket"), "{text}");
}

#[test]
fn bad_command_lines_are_usage_errors() {
    for args in [
        &[][..],
        &["frobnicate", "/tmp"][..],
        &["status"][..],
        &["cleanup", "a", "b"][..],
        &["status", "--verbose"][..],
    ] {
        let output = admin(args, None);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
        assert!(
            stderr(&output).contains("usage: netmcore-admin"),
            "{output:?}"
        );
    }
    let help = admin(&["--help"], None);
    assert!(help.status.success(), "{help:?}");
    assert!(
        stdout(&help).contains("netmcore-admin status DIR"),
        "{help:?}"
    );
}

#[test]
fn a_missing_directory_is_a_failure_that_names_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = tmp.path().join("missing");
    for command in ["status", "cleanup"] {
        let output = admin(&[command], Some(&missing));
        assert_eq!(output.status.code(), Some(1), "{output:?}");
        let message = stderr(&output);
        assert!(
            message.contains(&format!("stat {}", missing.display())),
            "{message}"
        );
    }
}
