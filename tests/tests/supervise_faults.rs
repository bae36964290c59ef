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
        requester_killed_while_streaming_an_argument,
        taker_killed_while_reading_its_argument,
        hostile_stream_requests,
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

/// The size of the arguments streamed below: large enough that the stream lasts a while
/// (about 0.2 s on the reference machine).
const STREAMED: usize = 512 << 20;

/// The master's Unix pid, seen from one of its workers.
fn master_pid() -> i32 {
    rustix::process::Pid::as_raw(rustix::process::getppid())
}

/// A worker of `master` blocked reading a pipe (not the guardian, which reads its own pipe
/// from a session of its own), if there is one.
fn worker_reading_a_pipe(master: i32) -> Option<i32> {
    support::children_of(master)
        .iter()
        .filter(|p| p.pgrp != p.pid)
        .map(|p| p.pid)
        .find(|&pid| support::reads_a_pipe(pid))
}

/// A worker is SIGKILLed while it writes a large `Vec<u8>` argument into the pipe of the
/// process it starts: that process reads a cut argument and ends on its own (nothing is left
/// reading a pipe), and the master goes on. The coordinator finds the reader by the pipe it
/// shares with the worker and stops it, so that the worker is surely blocked writing when it
/// is killed, then lets the reader go on.
fn requester_killed_while_streaming_an_argument(s: &Scenario) -> anyhow::Result<()> {
    let taker = process::def_process(|buf: Vec<u8>| buf.len() as u64)?;
    let requester = process::def_process(move |pid_file: PathBuf| -> u64 {
        support::write_own_pid(&pid_file).expect("write the pid file");
        let pid = taker.start(&vec![7u8; STREAMED]).expect("start");
        taker.join(pid).ok().flatten().unwrap_or(0)
    })?;
    let (_, plain) = types()?;
    let coordinator = coordinator(move |dir: PathBuf| {
        let master = master_pid();
        for attempt in 0..5 {
            let (r, unix) = start_requester(&requester, &dir, attempt)?;
            match stop_the_reader(master, unix) {
                Some((reader, true)) => {
                    support::send_signal(unix, Signal::KILL)?;
                    support::wait_until("the killed requester ends", || support::has_ended(unix))?;
                    support::send_signal(reader, Signal::CONT)?;
                    let out = requester.join(r)?;
                    ensure!(out.is_none(), "the killed requester gave {out:?}");
                    support::wait_until("the reader of the cut argument ends", || {
                        support::has_ended(reader)
                    })?;
                    ensure!(
                        worker_reading_a_pipe(master).is_none(),
                        "a worker still reads a pipe"
                    );
                    let pid = plain.start(&1)?;
                    ensure!(plain.join(pid)? == Some(2), "after it");
                    return Ok(());
                }
                // The stream was over before its reader could be stopped: again.
                Some((reader, false)) => {
                    support::send_signal(reader, Signal::CONT)?;
                    requester.join(r)?;
                }
                None => {
                    let out = requester.join(r)?;
                    ensure!(
                        out == Some(STREAMED as u64),
                        "an unhindered requester gave {out:?}"
                    );
                }
            }
        }
        anyhow::bail!("five streams ended before their reader could be stopped")
    })?;
    run_coordinator(s, &coordinator, &s.dir().to_path_buf())
}

/// Starts `requester` with the pid file of attempt `attempt` in `dir`, waits for the file,
/// and returns the process id and the Unix pid it wrote.
fn start_requester<R>(
    requester: &ProcessType<PathBuf, R>,
    dir: &std::path::Path,
    attempt: u32,
) -> anyhow::Result<(netmcore::ProcessId, i32)>
where
    R: serde::Serialize + serde::de::DeserializeOwned + 'static,
{
    let pid_file = dir.join(format!("requester-{attempt}.pid"));
    let r = requester.start(&pid_file)?;
    support::wait_for_file(&pid_file)?;
    Ok((r, support::read_pid(&pid_file)?))
}

/// Finds the process that reads the stream the worker `unix` writes (a child of `master`
/// holding the other end of its pipe) and stops it (`SIGSTOP`). Returns it, and whether the
/// worker is then blocked writing (the stream is not over); `None` when the stream ended
/// before the reader was found.
fn stop_the_reader(master: i32, unix: i32) -> Option<(i32, bool)> {
    let pipe = look_while(|| true, || pipe_ends(unix, true).pop())?;
    let writing = || pipe_ends(unix, true).contains(&pipe);
    let reader = look_while(writing, || {
        support::children_of(master)
            .iter()
            .map(|p| p.pid)
            .find(|&pid| pid != unix && pipe_ends(pid, false).contains(&pipe))
    })?;
    support::send_signal(reader, Signal::STOP).ok()?;
    let blocked = look_while(writing, || {
        support::syscall_of(unix).filter(|&(n, _)| n == libc::SYS_vmsplice || n == libc::SYS_write)
    });
    Some((reader, blocked.is_some()))
}

/// The pipes Unix process `pid` holds open for writing (`write`) or for reading, by inode:
/// those opened close-on-exec, as netmcore's streams are (not stdout or stderr, say).
fn pipe_ends(pid: i32, write: bool) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let target = std::fs::read_link(entry.path()).ok()?;
            let target = target.to_str()?.strip_prefix("pipe:")?.to_owned();
            let fd = entry.file_name().into_string().ok()?;
            let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
            let flags = info
                .lines()
                .find_map(|l| l.strip_prefix("flags:"))?
                .trim()
                .to_owned();
            let flags = u32::from_str_radix(&flags, 8).ok()?;
            let cloexec = flags & libc::O_CLOEXEC as u32 != 0;
            (cloexec && flags & 3 == u32::from(write)).then_some(target)
        })
        .collect()
}

/// Polls `found` every millisecond while `going_on` holds (at most 30 s); its last answer.
fn look_while<T>(
    mut going_on: impl FnMut() -> bool,
    mut found: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while going_on() && std::time::Instant::now() < deadline {
        if let Some(it) = found() {
            return Some(it);
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    found()
}

/// The process being started is SIGKILLed while it reads its large `Vec<u8>` argument from
/// the pipe: its starter's `start` returns (the process existed) without a `SIGPIPE`, and its
/// `join` gives `None`. The coordinator finds the new process by the pipe it shares with its
/// starter, stops it, and kills it only if the starter is then blocked writing (the stream is
/// not over); otherwise it lets it go and tries again.
fn taker_killed_while_reading_its_argument(s: &Scenario) -> anyhow::Result<()> {
    let taker = process::def_process(|buf: Vec<u8>| buf.len() as u64)?;
    let requester =
        process::def_process(move |pid_file: PathBuf| -> Result<Option<u64>, String> {
            support::write_own_pid(&pid_file).map_err(|e| format!("{e:#}"))?;
            let pid = taker
                .start(&vec![7u8; STREAMED])
                .map_err(|e| format!("{e:#}"))?;
            taker.join(pid).map_err(|e| format!("{e:#}"))
        })?;
    let (_, plain) = types()?;
    let coordinator = coordinator(move |dir: PathBuf| {
        let master = master_pid();
        for attempt in 0..5 {
            let (r, unix) = start_requester(&requester, &dir, attempt)?;
            if let Some((reader, blocked)) = stop_the_reader(master, unix) {
                if blocked {
                    support::send_signal(reader, Signal::KILL)?;
                    let out = requester.join(r)?;
                    ensure!(out == Some(Ok(None)), "the requester gave {out:?}");
                    let pid = plain.start(&1)?;
                    ensure!(plain.join(pid)? == Some(2), "after it");
                    return Ok(());
                }
                support::send_signal(reader, Signal::CONT)?;
            }
            // The stream was over before the reader could be stopped: again.
            let out = requester.join(r)?;
            ensure!(
                out == Some(Ok(Some(STREAMED as u64))),
                "an unhindered requester gave {out:?}"
            );
        }
        anyhow::bail!("five streams ended before their reader could be stopped")
    })?;
    run_coordinator(s, &coordinator, &s.dir().to_path_buf())
}

/// A worker writes `StartStream` requests the API never would. A head that is no envelope,
/// a descriptor that is no pipe, or a pipe's write end, is refused with an error and the
/// worker goes on; a pipe
/// closed without its run starts a process that fails (its join is `None`). A `StartStream`
/// without its pipe, or another request with a descriptor, breaks the protocol: the master
/// kills that worker. The master serves on after each.
fn hostile_stream_requests(s: &Scenario) -> anyhow::Result<()> {
    use netmcore::{Encap, Inherit};
    use netmcore_ipc::stream;
    use netmcore_ipc::wire::{Request, Response};
    use std::os::fd::AsFd as _;

    let taker = process::def_process(|buf: Vec<u8>| buf.len() as u64)?;
    let fork_point = taker.fork_point();
    let probe = process::def_process(move |what: u8| -> Result<String, String> {
        let run = || -> anyhow::Result<String> {
            let mut channel = support::sys::own_channel()?;
            let data = vec![1u8; 2 << 20];
            let pieces = Encap::wrap_pieces(&data)?;
            let start = |head: &[u8]| Request::StartStream {
                fork_point,
                head: head.to_vec(),
                run_len: data.len() as u64,
                inherit: Inherit::Nothing,
            };
            let (reader, writer) = stream::stream()?;
            let memfd = netmcore_ipc::memfd::Memfd::from_bytes("not a pipe", b"x")?;
            match what {
                0 => channel.send_msg_with_fds(&start(b"no envelope"), &[reader.as_fd()])?,
                1 => channel.send_msg_with_fds(&start(pieces.head()), &[memfd.as_fd()])?,
                2 => {
                    channel.send_msg_with_fds(&start(pieces.head()), &[reader.as_fd()])?;
                    drop((reader, writer));
                }
                3 => channel.send_msg(&start(pieces.head()))?,
                4 => channel.send_msg_with_fds(&Request::SelfProcessId, &[reader.as_fd()])?,
                _ => channel.send_msg_with_fds(&start(pieces.head()), &[writer.as_fd()])?,
            }
            let answer = channel.recv_msg::<Response>()?;
            let told = match answer {
                Response::Error(e) => format!("refused: {e:?}"),
                Response::Started(pid) => {
                    let out = taker.join(pid)?;
                    anyhow::ensure!(out.is_none(), "a process with a cut argument gave {out:?}");
                    "started, failed".to_owned()
                }
                other => anyhow::bail!("answered {other:?}"),
            };
            // The conversation goes on.
            channel.send_msg(&Request::SelfProcessId)?;
            match channel.recv_msg::<Response>()? {
                Response::ProcessId(_) => Ok(told),
                other => anyhow::bail!("then answered {other:?}"),
            }
        };
        run().map_err(|e| format!("{e:#}"))
    })?;
    let (_, plain) = types()?;
    let coordinator = coordinator(move |()| {
        for what in 0..6u8 {
            let pid = probe.start(&what)?;
            let out = probe.join(pid)?;
            match (what, &out) {
                (0 | 1 | 5, Some(Ok(told))) if told.starts_with("refused") => {}
                (2, Some(Ok(told))) if told == "started, failed" => {}
                (3 | 4, None) => {}
                _ => anyhow::bail!("probe {what} gave {out:?}"),
            }
            let pid = plain.start(&1)?;
            ensure!(plain.join(pid)? == Some(2), "after probe {what}");
        }
        Ok(())
    })?;
    run_coordinator(s, &coordinator, &())
}
