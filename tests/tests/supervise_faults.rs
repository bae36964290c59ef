//! Process bodies that do not return: a panic, `exit(3)`, SIGKILL (from the process itself or
//! from another worker) and SIGSEGV. Each `join` returns `Ok(None)` and the system goes on: a
//! following start and join work, and the scenario still shuts down cleanly.
//!
//! "Promptly" is checked by `support`'s deadline: a join that hangs fails the scenario.
//! Run one with `cargo test -p netmcore-tests --test supervise_faults -- NAME`.

mod support;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::ensure;
use netmcore::process::{self, ProcessType};
use rustix::process::Signal;
use support::{Scenario, cases, coordinator, run_coordinator};

fn main() -> ExitCode {
    support::run_cases(cases![
        body_panics_join_is_none,
        body_exits_3_join_is_none,
        body_sigkills_itself_join_is_none,
        body_killed_by_another_worker_join_is_none,
        body_segv_join_is_none,
        faults_side_by_side_with_a_waiting_join,
        first_process_panics_run_is_none,
    ])
}

/// How a faulty body ends.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
enum Fault {
    /// It panics.
    Panic,
    /// It calls `std::process::exit(3)`.
    Exit3,
    /// It sends SIGKILL to itself.
    Sigkill,
    /// It sends SIGSEGV to itself.
    Sigsegv,
}

/// Ends the calling process as `fault` says; never returns normally.
fn fail(fault: Fault) -> u64 {
    let me = rustix::process::getpid();
    match fault {
        Fault::Panic => {
            // A silent hook keeps the test output readable; the unwinding is the same, and the
            // worker catches it, not the hook.
            std::panic::set_hook(Box::new(|_| {}));
            panic!("a deliberate panic in a process body")
        }
        Fault::Exit3 => std::process::exit(3),
        Fault::Sigkill => {
            let _ = rustix::process::kill_process(me, Signal::KILL);
        }
        Fault::Sigsegv => {
            // The Rust runtime's SIGSEGV handler (stack overflow detection) catches the first
            // signal, restores the default action and returns; the second one kills.
            for _ in 0..2 {
                let _ = rustix::process::kill_process(me, Signal::SEGV);
            }
        }
    }
    // Signals sent to oneself are delivered before `kill` returns; this is not reached.
    support::sleep_forever()
}

/// A process type whose body ends by `fault`, and a plain one.
fn types() -> anyhow::Result<(ProcessType<Fault, u64>, ProcessType<u64, u64>)> {
    Ok((
        process::def_process(fail)?,
        process::def_process(|n: u64| n + 1)?,
    ))
}

/// A coordinator: the faulty process's join is `Ok(None)`, then a start and join work, twice.
fn fault_scenario(s: &Scenario, fault: Fault) -> anyhow::Result<()> {
    let (faulty, plain) = types()?;
    let coordinator = coordinator(move |fault: Fault| {
        for round in 0..2 {
            let pid = faulty.start(&fault)?;
            let out = faulty.join(pid)?;
            ensure!(out.is_none(), "round {round}: {fault:?} gave {out:?}");
            let pid = plain.start(&round)?;
            ensure!(
                plain.join(pid)? == Some(round + 1),
                "round {round}: after it"
            );
        }
        Ok(())
    })?;
    run_coordinator(s, &coordinator, &fault)
}

/// A body that panics: `join` is `Ok(None)`.
fn body_panics_join_is_none(s: &Scenario) -> anyhow::Result<()> {
    fault_scenario(s, Fault::Panic)
}

/// A body that calls `exit(3)`: `join` is `Ok(None)`.
fn body_exits_3_join_is_none(s: &Scenario) -> anyhow::Result<()> {
    fault_scenario(s, Fault::Exit3)
}

/// A body that sends itself SIGKILL: `join` is `Ok(None)`.
fn body_sigkills_itself_join_is_none(s: &Scenario) -> anyhow::Result<()> {
    fault_scenario(s, Fault::Sigkill)
}

/// A body that dies of SIGSEGV: `join` is `Ok(None)`.
fn body_segv_join_is_none(s: &Scenario) -> anyhow::Result<()> {
    fault_scenario(s, Fault::Sigsegv)
}

/// A victim writes its Unix pid to a file and sleeps; another worker reads it and kills the
/// victim with SIGKILL. The victim's join is `Ok(None)`; the killer's is its result.
fn body_killed_by_another_worker_join_is_none(s: &Scenario) -> anyhow::Result<()> {
    let victim = process::def_process(|pid_file: PathBuf| -> u64 {
        support::write_own_pid(&pid_file).expect("write the pid file");
        support::sleep_forever()
    })?;
    let killer = process::def_process(|pid_file: PathBuf| -> Result<i32, String> {
        let pid = support::read_pid(&pid_file).map_err(|e| format!("{e:#}"))?;
        support::send_signal(pid, Signal::KILL).map_err(|e| format!("{e:#}"))?;
        Ok(pid)
    })?;
    let (_, plain) = types()?;
    let coordinator = coordinator(move |pid_file: PathBuf| {
        let v = victim.start(&pid_file)?;
        let k = killer.start(&pid_file)?;
        let killed = killer.join(k)?;
        ensure!(
            matches!(killed, Some(Ok(_))),
            "the killer failed: {killed:?}"
        );
        let out = victim.join(v)?;
        ensure!(out.is_none(), "the killed victim gave {out:?}");
        let pid = plain.start(&1)?;
        ensure!(plain.join(pid)? == Some(2), "after it");
        Ok(())
    })?;
    run_coordinator(s, &coordinator, &s.path("victim.pid"))
}

/// Four faulty processes and a plain one run side by side while the coordinator waits in
/// `join` for each in turn: every fault gives `Ok(None)`, the plain one its result.
fn faults_side_by_side_with_a_waiting_join(s: &Scenario) -> anyhow::Result<()> {
    let (faulty, plain) = types()?;
    let coordinator = coordinator(move |()| {
        let plain_pid = plain.start(&10)?;
        let faults = [Fault::Panic, Fault::Exit3, Fault::Sigkill, Fault::Sigsegv];
        let pids = faults
            .iter()
            .map(|f| faulty.start(f))
            .collect::<Result<Vec<_>, _>>()?;
        for (fault, pid) in faults.iter().zip(pids) {
            let out = faulty.join(pid)?;
            ensure!(out.is_none(), "{fault:?} gave {out:?}");
        }
        ensure!(plain.join(plain_pid)? == Some(11), "the plain process");
        Ok(())
    })?;
    run_coordinator(s, &coordinator, &())
}

/// A first process that panics: `run` returns `Ok(None)`, and a following `run` works.
fn first_process_panics_run_is_none(s: &Scenario) -> anyhow::Result<()> {
    // Each run gets process types of its own: DESIGN.md has the master destroy its fork and
    // join points when it shuts down, so a type is not relied on to outlive its run.
    let (faulty, _) = types()?;
    let out = netmcore::run(s.config(), &faulty, &Fault::Panic)?;
    ensure!(out.is_none(), "run gave {out:?}");
    let (faulty, _) = types()?;
    let out = netmcore::run(s.config(), &faulty, &Fault::Sigkill)?;
    ensure!(out.is_none(), "run gave {out:?}");
    let (_, plain) = types()?;
    let out = netmcore::run(s.config(), &plain, &1)?;
    ensure!(out == Some(2), "the run after it gave {out:?}");
    Ok(())
}
