//! How a master ends: after its first process (waiting for the other workers, or terminating
//! them after `shutdown_timeout`), on SIGTERM or SIGINT, and when it is killed; and what it
//! guards: its socket directory (created 0700, locked, refused when others could write it or
//! own it) and its pidfile.
//!
//! Run one with `cargo test -p netmcore-tests --test supervise_shutdown -- NAME`.

mod support;

use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use netmcore::process::{self, ProcessType};
use netmcore::{Config, Error};
use rustix::process::Signal;
use support::{Scenario, cases, coordinator, ensure_err, sys, verdict};

fn main() -> ExitCode {
    support::run_cases(cases![
        startup_waits_for_running_worker,
        shutdown_timeout_terminates_sleeper,
        sigterm_to_master_stops_startup,
        sigint_to_master_stops_startup,
        master_sigkilled_workers_die,
        second_master_is_socket_directory_in_use,
        pidfile_holds_master_pid_then_is_removed,
        socket_dir_is_created_0700,
        socket_dir_mode_0777_is_refused,
        socket_dir_of_another_user_is_refused,
    ])
}

/// A process that writes its Unix pid to the file it is given and sleeps until killed.
fn sleeper() -> anyhow::Result<ProcessType<PathBuf, ()>> {
    Ok(process::def_process(|pid_file: PathBuf| {
        support::write_own_pid(&pid_file).expect("write the pid file");
        support::sleep_forever()
    })?)
}

/// A process that returns `n + 1`, to check that a master works.
fn plain() -> anyhow::Result<ProcessType<u64, u64>> {
    Ok(process::def_process(|n: u64| n + 1)?)
}

/// The first process ends while another worker still runs: `startup` waits for that worker.
/// The worker waits until the first process has ended before it leaves its mark, so it surely
/// outlives it.
fn startup_waits_for_running_worker(s: &Scenario) -> anyhow::Result<()> {
    let marker = s.path("worker-done");
    let worker = process::def_process(|(first, marker): (i32, PathBuf)| {
        support::wait_until("the first process has ended", || support::has_ended(first))
            .expect("the first process ends");
        support::touch(&marker).expect("touch");
    })?;
    let coordinator = coordinator(move |marker: PathBuf| {
        worker.start(&(std::process::id() as i32, marker))?;
        Ok(())
    })?;
    support::run_coordinator(s, &coordinator, &marker)?;
    ensure!(
        marker.exists(),
        "startup returned before the other worker ended"
    );
    Ok(())
}

/// With `shutdown_timeout`, a worker that sleeps forever is terminated after the first process
/// ended, and `startup` returns.
fn shutdown_timeout_terminates_sleeper(s: &Scenario) -> anyhow::Result<()> {
    let sleeper = sleeper()?;
    let coordinator = coordinator(move |pid_file: PathBuf| {
        sleeper.start(&pid_file)?;
        support::read_pid(&pid_file)?;
        Ok(())
    })?;
    let pid_file = s.path("sleeper.pid");
    let config = s.config().shutdown_timeout(Duration::from_millis(200));
    verdict(netmcore::run(config, &coordinator, &pid_file).context("run")?)?;
    let pid = support::read_pid(&pid_file)?;
    ensure!(support::has_ended(pid), "the sleeper {pid} still runs");
    Ok(())
}

/// A worker sends `signal` to the master while two others sleep: `startup` returns an error
/// that says the master was stopped, and every worker has ended.
fn stop_master_with(s: &Scenario, signal: Signal) -> anyhow::Result<()> {
    let sleeper = sleeper()?;
    let master = std::process::id() as i32;
    let stopper = process::def_process(move |dir: PathBuf| -> () {
        let prepare = || -> anyhow::Result<()> {
            support::write_own_pid(&dir.join("stopper.pid"))?;
            for name in ["sleeper-0.pid", "sleeper-1.pid"] {
                sleeper.start(&dir.join(name))?;
                support::read_pid(&dir.join(name))?;
            }
            Ok(())
        };
        // The signal goes out even when the preparation failed, so that the scenario ends and
        // reports the failure rather than hanging.
        let outcome = prepare().and_then(|()| support::send_signal(master, signal));
        if let Err(e) = outcome {
            support::write_file(&dir.join("stopper-failed"), &format!("{e:#}")).ok();
            support::send_signal(master, signal).ok();
        }
        support::sleep_forever()
    })?;
    let outcome = netmcore::startup(s.config(), || stopper.start(&s.dir().to_owned()));
    if let Ok(text) = std::fs::read_to_string(s.path("stopper-failed")) {
        bail!("the stopping worker failed: {text}");
    }
    let expected_name = if signal == Signal::TERM {
        "SIGTERM"
    } else {
        "SIGINT"
    };
    match outcome {
        Ok(()) => bail!("startup returned Ok(()) after {signal:?}"),
        Err(e) => {
            let message = e.to_string();
            ensure!(
                message.contains("stopped") && message.contains(expected_name),
                "the error does not say that {expected_name} stopped the master: {message:?}"
            );
            ensure!(
                matches!(e, Error::Stopped { signal } if signal == expected_name),
                "not Error::Stopped {{ signal: {expected_name:?} }}: {e:?}"
            );
        }
    }
    for name in ["stopper.pid", "sleeper-0.pid", "sleeper-1.pid"] {
        let pid = support::read_pid(&s.path(name))?;
        ensure!(support::has_ended(pid), "worker {pid} ({name}) still runs");
    }
    let admin = s.socket_dir().join("admin.sock");
    ensure!(!admin.exists(), "{} is still there", admin.display());
    Ok(())
}

/// SIGTERM to the master stops it.
fn sigterm_to_master_stops_startup(s: &Scenario) -> anyhow::Result<()> {
    stop_master_with(s, Signal::TERM)
}

/// SIGINT to the master stops it.
fn sigint_to_master_stops_startup(s: &Scenario) -> anyhow::Result<()> {
    stop_master_with(s, Signal::INT)
}

/// A master (a child of the scenario) is killed with SIGKILL while its first process and two
/// more workers sleep: they all die with it, and the next `startup` on the same socket directory
/// works.
fn master_sigkilled_workers_die(s: &Scenario) -> anyhow::Result<()> {
    let dir = s.dir().to_owned();
    let config_dir = s.socket_dir();
    let master = sys::fork_child(move || {
        let run = || -> anyhow::Result<()> {
            let sleeper = sleeper()?;
            let first = process::def_process(move |dir: PathBuf| -> () {
                for name in ["sleeper-0.pid", "sleeper-1.pid"] {
                    sleeper.start(&dir.join(name)).expect("start a sleeper");
                }
                support::write_own_pid(&dir.join("first.pid")).expect("write the pid file");
                support::sleep_forever()
            })?;
            netmcore::run(Config::new(config_dir), &first, &dir)?;
            Ok(())
        };
        match run() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("the master to be killed failed: {e:#}");
                1
            }
        }
    });
    let mut workers = Vec::new();
    for name in ["first.pid", "sleeper-0.pid", "sleeper-1.pid"] {
        workers.push((name, support::read_pid(&s.path(name))?));
    }
    support::send_signal(master.pid, Signal::KILL)?;
    let status = master.wait();
    ensure!(
        status == sys::Status::Signaled(Signal::KILL.as_raw()),
        "the master ended with {status:?}"
    );
    for (name, pid) in workers {
        support::wait_until(&format!("worker {pid} ({name}) has died"), || {
            support::has_ended(pid)
        })?;
    }
    let plain = plain()?;
    let out = netmcore::run(s.config(), &plain, &1).context("the next startup")?;
    ensure!(
        out == Some(2),
        "the next startup's first process gave {out:?}"
    );
    Ok(())
}

/// Whether `a` and `b` name the same directory.
fn same_dir(a: &Path, b: &Path) -> bool {
    a == b
        || a.canonicalize()
            .ok()
            .is_some_and(|a| b.canonicalize().ok() == Some(a))
}

/// While a master (a detached process) runs on a socket directory, `startup` on the same
/// directory is `SocketDirectoryInUse` and never runs its first process; the running master's
/// pidfile holds its pid and is removed when it ends; then `startup` on the directory works.
fn second_master_is_socket_directory_in_use(s: &Scenario) -> anyhow::Result<()> {
    let socket_dir = s.socket_dir();
    let pidfile = s.path("first-master.pid");
    let (ready, release, done) = (
        s.path("first-ready"),
        s.path("release"),
        s.path("first-done"),
    );
    let own_pid = s.path("first-own.pid");
    {
        let (socket_dir, pidfile, ready, release, done) = (
            socket_dir.clone(),
            pidfile.clone(),
            ready.clone(),
            release.clone(),
            done.clone(),
        );
        sys::fork_detached(move || {
            let run = || -> anyhow::Result<()> {
                support::write_own_pid(&own_pid)?;
                let first = process::def_process(|(ready, release): (PathBuf, PathBuf)| {
                    support::touch(&ready).expect("touch");
                    support::wait_for_file(&release).expect("the release comes");
                })?;
                let config = Config::new(socket_dir).pidfile(pidfile);
                let out = netmcore::run(config, &first, &(ready, release))?;
                ensure!(out == Some(()), "its first process gave {out:?}");
                Ok(())
            };
            let text = match run() {
                Ok(()) => "ok".to_owned(),
                Err(e) => format!("{e:#}"),
            };
            support::write_file(&done, &text).map_or(1, |()| 0)
        });
    }
    support::wait_for_file(&ready)?;
    let first_master = support::read_pid(&s.path("first-own.pid"))?;
    let in_pidfile = support::read_pid(&pidfile)?;
    ensure!(
        in_pidfile == first_master,
        "the pidfile holds {in_pidfile}, the master is {first_master}"
    );

    let marker = s.path("second-ran");
    let second = process::def_process(|marker: PathBuf| support::touch(&marker).is_ok())?;
    let outcome = netmcore::run(Config::new(&socket_dir), &second, &marker);
    ensure_err!(
        outcome,
        Error::SocketDirectoryInUse(dir) if same_dir(&dir, &socket_dir)
    );
    ensure!(!marker.exists(), "the second master ran its first process");

    support::touch(&release)?;
    support::wait_for_file(&done)?;
    let text = std::fs::read_to_string(&done)?;
    ensure!(text == "ok", "the first master failed: {text}");
    support::wait_until("the first master has ended", || {
        support::has_ended(first_master)
    })?;
    ensure!(!pidfile.exists(), "the pidfile outlived its master");

    let plain = plain()?;
    let out = netmcore::run(Config::new(&socket_dir), &plain, &1).context("the next startup")?;
    ensure!(
        out == Some(2),
        "the next startup's first process gave {out:?}"
    );
    Ok(())
}

/// The pidfile holds the master's pid while it runs and is removed when `startup` returns.
fn pidfile_holds_master_pid_then_is_removed(s: &Scenario) -> anyhow::Result<()> {
    let pidfile = s.path("netmcore.pid");
    let master = std::process::id() as i32;
    let coordinator = coordinator(move |pidfile: PathBuf| {
        let text = std::fs::read_to_string(&pidfile)
            .with_context(|| format!("read {}", pidfile.display()))?;
        ensure!(
            text.trim() == master.to_string(),
            "the pidfile holds {text:?}, the master is {master}"
        );
        Ok(())
    })?;
    let config = s.config().pidfile(&pidfile);
    verdict(netmcore::run(config, &coordinator, &pidfile)?)?;
    ensure!(!pidfile.exists(), "the pidfile outlived its master");
    Ok(())
}

/// `startup` creates a missing socket directory with mode 0700, and the files it keeps there
/// are 0600.
fn socket_dir_is_created_0700(s: &Scenario) -> anyhow::Result<()> {
    let socket_dir = s.socket_dir();
    ensure!(!socket_dir.exists());
    let coordinator = coordinator(|socket_dir: PathBuf| {
        let meta = std::fs::metadata(&socket_dir)?;
        let mode = meta.permissions().mode() & 0o7777;
        ensure!(meta.is_dir(), "{} is not a directory", socket_dir.display());
        ensure!(mode == 0o700, "the socket directory has mode {mode:o}");
        for entry in std::fs::read_dir(&socket_dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            let mode = meta.permissions().mode() & 0o7777;
            if meta.is_file() {
                ensure!(
                    mode == 0o600,
                    "{} has mode {mode:o}",
                    entry.path().display()
                );
            }
        }
        Ok(())
    })?;
    support::run_coordinator(s, &coordinator, &socket_dir)
}

/// `startup` on a socket directory that others could write or own fails with an error that
/// names the directory, and runs no process.
fn refused(s: &Scenario, socket_dir: &Path) -> anyhow::Result<()> {
    let marker = s.path("first-ran");
    let first = process::def_process(|marker: PathBuf| support::touch(&marker).is_ok())?;
    match netmcore::run(Config::new(socket_dir), &first, &marker) {
        Ok(out) => bail!(
            "startup on {} succeeded (first process: {out:?})",
            socket_dir.display()
        ),
        Err(e) => {
            ensure!(
                e.to_string().contains(&socket_dir.display().to_string()),
                "the error does not name the directory: {e}"
            );
            ensure!(
                matches!(&e, Error::InsecureSocketDirectory { path, .. } if same_dir(path, socket_dir)),
                "not Error::InsecureSocketDirectory for {}: {e:?}",
                socket_dir.display()
            );
        }
    }
    ensure!(!marker.exists(), "the first process ran");
    Ok(())
}

/// A socket directory with mode 0777 is refused.
fn socket_dir_mode_0777_is_refused(s: &Scenario) -> anyhow::Result<()> {
    let socket_dir = s.socket_dir();
    std::fs::DirBuilder::new().mode(0o700).create(&socket_dir)?;
    std::fs::set_permissions(&socket_dir, std::fs::Permissions::from_mode(0o777))?;
    refused(s, &socket_dir)
}

/// A socket directory owned by another user is refused. Only root can give a directory away,
/// so elsewhere this scenario checks nothing.
fn socket_dir_of_another_user_is_refused(s: &Scenario) -> anyhow::Result<()> {
    if !rustix::process::getuid().is_root() {
        println!("    (not root: cannot chown a directory to another user; nothing checked)");
        return Ok(());
    }
    let socket_dir = s.socket_dir();
    std::fs::DirBuilder::new().mode(0o700).create(&socket_dir)?;
    // 65534 is `nobody` on Linux distributions.
    let nobody = rustix::process::Uid::from_raw(65534);
    let nogroup = rustix::process::Gid::from_raw(65534);
    rustix::fs::chown(&socket_dir, Some(nobody), Some(nogroup))
        .with_context(|| format!("chown {}", socket_dir.display()))?;
    refused(s, &socket_dir)
}
