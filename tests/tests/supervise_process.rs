//! Starting and joining processes: every row and error of DESIGN.md §4 for the process calls,
//! many processes at once, inheritance of globals, large arguments and results, and `run`.
//!
//! Each scenario runs in a process of its own (see `support`); run one with
//! `cargo test -p netmcore-tests --test supervise_process -- NAME`.

mod support;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, ensure};
use netmcore::process::{self, ProcessType};
use netmcore::{ByteBuf, Encap, Error, Inherit, ProcessId, ResId};
use support::{
    Scenario, cases, coordinator, ensure_err, file_verdict, reporting_coordinator, run_coordinator,
    verdict,
};

fn main() -> ExitCode {
    support::run_cases(cases![
        start_before_startup_is_not_started,
        def_process_in_worker_is_not_in_master,
        def_process_in_master_hook_works,
        join_in_master_is_not_in_worker,
        join_unknown_pid_is_unknown_process,
        second_join_is_unknown_process,
        wrong_join_point_is_unknown_process,
        self_process_id_in_master_is_not_in_worker,
        self_process_id_in_worker_equals_start_result,
        start_unknown_or_non_fork_point_is_no_resource,
        join_nowait_before_and_after_the_end,
        start_with_inherit_works,
        dynamic_layer_round_trip,
        two_hundred_in_waves_of_two,
        two_hundred_at_once_joined_in_order,
        grandchild_not_joined,
        global_seen_with_master_value,
        run_returns_first_process_result,
        startup_in_a_worker_is_already_started,
        argument_of_256_mib,
        vec_argument_of_256_mib_streams_whole,
        result_of_256_mib,
    ])
}

/// A process id no scenario ever reaches.
const NO_SUCH_PROCESS: ProcessId = ProcessId(1_000_000);

/// A resource id no scenario ever reaches.
const NO_SUCH_RESOURCE: ResId = ResId(1_000_000);

/// `n -> n * n`, the typical small process.
fn square() -> anyhow::Result<ProcessType<u64, u64>> {
    Ok(process::def_process(|n: u64| n * n)?)
}

/// `start` before `startup` is `NotStarted`, in both layers; `startup` works afterwards.
fn start_before_startup_is_not_started(s: &Scenario) -> anyhow::Result<()> {
    let square = square()?;
    ensure_err!(square.start(&3), Error::NotStarted);
    ensure_err!(square.start_with(&3, Inherit::Nothing), Error::NotStarted);
    ensure_err!(
        netmcore::start(square.fork_point(), Encap::wrap(&3u64)?),
        Error::NotStarted
    );
    ensure_err!(
        netmcore::start_with(square.fork_point(), Encap::wrap(&3u64)?, Inherit::All),
        Error::NotStarted
    );
    let out = netmcore::run(s.config(), &square, &3)?;
    ensure!(
        out == Some(9),
        "run after the failed starts returned {out:?}"
    );
    Ok(())
}

/// `def_process` in a worker is `NotInMaster`, in both layers.
fn def_process_in_worker_is_not_in_master(s: &Scenario) -> anyhow::Result<()> {
    let coordinator = coordinator(|()| {
        ensure_err!(process::def_process(|n: u64| n), Error::NotInMaster);
        ensure_err!(netmcore::def_process(|e: Encap| e), Error::NotInMaster);
        Ok(())
    })?;
    run_coordinator(s, &coordinator, &())
}

/// `def_process` in the master (the `on_master_start` hook) works, and its process type is
/// usable from a worker through the dynamic layer.
fn def_process_in_master_hook_works(s: &Scenario) -> anyhow::Result<()> {
    use std::cell::Cell;
    use std::rc::Rc;

    let defined: Rc<Cell<Option<(ResId, ResId)>>> = Rc::default();
    let in_hook = Rc::clone(&defined);
    let config = s.config().on_master_start(move || {
        let incr = process::def_process(|n: u64| n + 1)?;
        in_hook.set(Some((incr.fork_point(), incr.join_point())));
        Ok(())
    });
    let report = s.path("report");
    let coordinator = reporting_coordinator(
        report.clone(),
        |(fork_point, join_point): (ResId, ResId)| {
            let pid = netmcore::start(fork_point, Encap::wrap(&41u64)?)?;
            let out = netmcore::join(join_point, pid)?.context("the process had no result")?;
            ensure!(out.unwrap::<u64>()? == 42);
            Ok(())
        },
    )?;
    netmcore::startup(config, || {
        let ids = defined
            .get()
            .expect("on_master_start ran before first_process");
        coordinator.start(&ids)
    })?;
    file_verdict(&report)
}

/// `join` in the master is `NotInWorker`, in both layers.
fn join_in_master_is_not_in_worker(s: &Scenario) -> anyhow::Result<()> {
    let square = square()?;
    let mut seen = None;
    netmcore::startup(s.config(), || {
        let pid = square.start(&4)?;
        seen = Some((square.join(pid), netmcore::join(square.join_point(), pid)));
        Ok(pid)
    })?;
    let (typed, dynamic) = seen.context("first_process did not run")?;
    ensure_err!(typed, Error::NotInWorker);
    ensure_err!(dynamic, Error::NotInWorker);
    Ok(())
}

/// `join` of a pid that was never started is `UnknownProcess`, in both layers.
fn join_unknown_pid_is_unknown_process(s: &Scenario) -> anyhow::Result<()> {
    let square = square()?;
    let coordinator = coordinator(move |()| {
        ensure_err!(
            square.join(NO_SUCH_PROCESS),
            Error::UnknownProcess(p) if p == NO_SUCH_PROCESS
        );
        ensure_err!(
            netmcore::join(square.join_point(), NO_SUCH_PROCESS),
            Error::UnknownProcess(p) if p == NO_SUCH_PROCESS
        );
        Ok(())
    })?;
    run_coordinator(s, &coordinator, &())
}

/// A second `join` of one process is `UnknownProcess`; `join_nowait` then is `None`.
fn second_join_is_unknown_process(s: &Scenario) -> anyhow::Result<()> {
    let square = square()?;
    let coordinator = coordinator(move |()| {
        let pid = square.start(&5)?;
        ensure!(square.join(pid)? == Some(25));
        ensure_err!(square.join(pid), Error::UnknownProcess(p) if p == pid);
        ensure_err!(
            netmcore::join(square.join_point(), pid),
            Error::UnknownProcess(p) if p == pid
        );
        ensure!(square.join_nowait(pid)?.is_none());
        Ok(())
    })?;
    run_coordinator(s, &coordinator, &())
}

/// A `join` through another type's join point is `UnknownProcess`, and the process stays
/// joinable through its own.
fn wrong_join_point_is_unknown_process(s: &Scenario) -> anyhow::Result<()> {
    let square = square()?;
    let double = process::def_process(|n: u64| 2 * n)?;
    let coordinator = coordinator(move |()| {
        let pid = square.start(&6)?;
        ensure_err!(double.join(pid), Error::UnknownProcess(p) if p == pid);
        ensure_err!(
            netmcore::join(double.join_point(), pid),
            Error::UnknownProcess(p) if p == pid
        );
        ensure!(double.join_nowait(pid)?.is_none());
        ensure!(
            square.join(pid)? == Some(36),
            "not joinable through its own"
        );
        Ok(())
    })?;
    run_coordinator(s, &coordinator, &())
}

/// `self_process_id` in the master is `NotInWorker`.
fn self_process_id_in_master_is_not_in_worker(s: &Scenario) -> anyhow::Result<()> {
    let square = square()?;
    let mut seen = None;
    netmcore::startup(s.config(), || {
        seen = Some(netmcore::self_process_id());
        square.start(&1)
    })?;
    ensure_err!(
        seen.context("first_process did not run")?,
        Error::NotInWorker
    );
    Ok(())
}

/// `self_process_id` in a worker is what its starter got; the first process is process 0.
fn self_process_id_in_worker_equals_start_result(s: &Scenario) -> anyhow::Result<()> {
    let whoami =
        process::def_process(|(): ()| netmcore::self_process_id().map_err(|e| e.to_string()))?;
    let report = s.path("report");
    let own_id = s.path("own-id");
    let coordinator = reporting_coordinator(report.clone(), move |own_id: PathBuf| {
        let me = netmcore::self_process_id()?;
        support::write_file(&own_id, &me.0.to_string())?;
        for _ in 0..5 {
            let pid = whoami.start(&())?;
            let got = whoami.join(pid)?.context("no result")?;
            ensure!(got == Ok(pid), "started {pid:?}, it says {got:?}");
        }
        Ok(())
    })?;
    let mut first = None;
    netmcore::startup(s.config(), || {
        let pid = coordinator.start(&own_id)?;
        first = Some(pid);
        Ok(pid)
    })?;
    file_verdict(&report)?;
    let said: u64 = std::fs::read_to_string(&own_id)?.parse()?;
    ensure!(
        first == Some(ProcessId(said)),
        "the master got {first:?}, the process says it is {said}"
    );
    ensure!(first == Some(ProcessId(0)), "the first process is not 0");
    Ok(())
}

/// `start` through an unknown id or one that is not a fork point is `NoResource`, in the
/// master and in a worker.
fn start_unknown_or_non_fork_point_is_no_resource(s: &Scenario) -> anyhow::Result<()> {
    let square = square()?;
    let report = s.path("report");
    let coordinator = reporting_coordinator(report.clone(), move |()| {
        ensure_err!(
            netmcore::start(NO_SUCH_RESOURCE, Encap::wrap(&1u64)?),
            Error::NoResource(id) if id == NO_SUCH_RESOURCE
        );
        ensure_err!(
            netmcore::start_with(NO_SUCH_RESOURCE, Encap::wrap(&1u64)?, Inherit::Nothing),
            Error::NoResource(id) if id == NO_SUCH_RESOURCE
        );
        let join_point = square.join_point();
        ensure_err!(
            netmcore::start(join_point, Encap::wrap(&1u64)?),
            Error::NoResource(id) if id == join_point
        );
        // The failures changed nothing.
        let pid = square.start(&7)?;
        ensure!(square.join(pid)? == Some(49));
        Ok(())
    })?;
    let one = Encap::wrap(&1u64)?;
    let mut in_master = None;
    netmcore::startup(s.config(), || {
        in_master = Some((
            netmcore::start(NO_SUCH_RESOURCE, one.clone()),
            netmcore::start(square.join_point(), one.clone()),
        ));
        coordinator.start(&())
    })?;
    let (unknown, join_point) = in_master.context("first_process did not run")?;
    ensure_err!(unknown, Error::NoResource(id) if id == NO_SUCH_RESOURCE);
    ensure_err!(join_point, Error::NoResource(id) if id == square.join_point());
    file_verdict(&report)
}

/// `join_nowait` is `None` while the process runs (in the master and in a worker), `Some` once
/// it ended with a result, `None` after that (it is forgotten: `join` is `UnknownProcess`), and
/// `None` for a pid that never existed.
fn join_nowait_before_and_after_the_end(s: &Scenario) -> anyhow::Result<()> {
    // Doubles its number once the gate file exists.
    let gated = process::def_process(|(gate, n): (PathBuf, u64)| {
        support::wait_for_file(&gate).expect("the gate opens");
        2 * n
    })?;
    let report = s.path("report");
    let coordinator = reporting_coordinator(
        report.clone(),
        move |(first, first_gate, dir): (ProcessId, PathBuf, PathBuf)| {
            // The process that the master started and polled is joinable here.
            support::touch(&first_gate)?;
            ensure!(gated.join(first)? == Some(2), "the master's gated process");

            let gate = dir.join("gate");
            let pid = gated.start(&(gate.clone(), 21))?;
            ensure!(gated.join_nowait(pid)?.is_none(), "before the end");
            support::touch(&gate)?;
            let mut result = None;
            support::wait_until("join_nowait has the result", || {
                result = gated.join_nowait(pid).expect("join_nowait");
                result.is_some()
            })?;
            ensure!(result == Some(42), "after the end: {result:?}");
            ensure!(gated.join_nowait(pid)?.is_none(), "after it was taken");
            ensure_err!(gated.join(pid), Error::UnknownProcess(p) if p == pid);
            ensure!(gated.join_nowait(NO_SUCH_PROCESS)?.is_none());
            ensure!(netmcore::join_nowait(gated.join_point(), NO_SUCH_PROCESS)?.is_none());
            Ok(())
        },
    )?;
    let first_gate = s.path("first-gate");
    let mut in_master = None;
    netmcore::startup(s.config(), || {
        let first = gated.start(&(first_gate.clone(), 1))?;
        in_master = Some((
            gated.join_nowait(first),
            netmcore::join_nowait(gated.join_point(), first).map(|e| e.is_some()),
        ));
        coordinator.start(&(first, first_gate.clone(), s.dir().to_owned()))
    })?;
    file_verdict(&report)?;
    let (typed, dynamic) = in_master.context("first_process did not run")?;
    ensure!(matches!(typed, Ok(None)), "typed, in the master: {typed:?}");
    ensure!(
        matches!(dynamic, Ok(false)),
        "dynamic, in the master: {dynamic:?}"
    );
    Ok(())
}

/// `start_with` works with each kind of inheritance, in both layers.
fn start_with_inherit_works(s: &Scenario) -> anyhow::Result<()> {
    let square = square()?;
    let coordinator = coordinator(move |()| {
        for (n, inherit) in [
            (2u64, Inherit::Nothing),
            (3, Inherit::All),
            (4, Inherit::Resources(Vec::new())),
        ] {
            let pid = square.start_with(&n, inherit.clone())?;
            ensure!(square.join(pid)? == Some(n * n), "typed, {inherit:?}");
            let pid = netmcore::start_with(square.fork_point(), Encap::wrap(&n)?, inherit)?;
            let out = netmcore::join(square.join_point(), pid)?.context("no result")?;
            ensure!(out.unwrap::<u64>()? == n * n, "dynamic");
        }
        Ok(())
    })?;
    run_coordinator(s, &coordinator, &())
}

/// The dynamically typed layer: `def_process` with an `Encap -> Encap` body, `start`, `join`,
/// and a typed process joined through the dynamic layer.
fn dynamic_layer_round_trip(s: &Scenario) -> anyhow::Result<()> {
    let (fork_point, join_point) = netmcore::def_process(|arg: Encap| {
        let text: String = arg.unwrap().expect("a String argument");
        Encap::wrap(&text.to_uppercase()).expect("wrap")
    })?;
    let coordinator = coordinator(move |()| {
        let pid = netmcore::start(fork_point, Encap::wrap(&"netmcore".to_string())?)?;
        let out = netmcore::join(join_point, pid)?.context("no result")?;
        ensure!(out.unwrap::<String>()? == "NETMCORE");
        Ok(())
    })?;
    run_coordinator(s, &coordinator, &())
}

/// A cheap function of `i` that differs for every process.
fn mix(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17)
}

/// 200 processes started two at a time, each pair joined before the next starts; no zombie is
/// left in the master.
fn two_hundred_in_waves_of_two(s: &Scenario) -> anyhow::Result<()> {
    let mixer = process::def_process(mix)?;
    let master = std::process::id() as i32;
    let coordinator = coordinator(move |()| {
        for i in (0..200).step_by(2) {
            let a = mixer.start(&i)?;
            let b = mixer.start(&(i + 1))?;
            ensure!(mixer.join(a)? == Some(mix(i)), "process {i}");
            ensure!(mixer.join(b)? == Some(mix(i + 1)), "process {}", i + 1);
        }
        support::wait_no_zombie_children(master)
    })?;
    run_coordinator(s, &coordinator, &())
}

/// 200 processes started at once, then joined in order; no zombie is left in the master.
fn two_hundred_at_once_joined_in_order(s: &Scenario) -> anyhow::Result<()> {
    let mixer = process::def_process(mix)?;
    let master = std::process::id() as i32;
    let coordinator = coordinator(move |()| {
        let pids = (0..200)
            .map(|i| mixer.start(&i))
            .collect::<Result<Vec<_>, _>>()?;
        let distinct: std::collections::BTreeSet<_> = pids.iter().collect();
        ensure!(distinct.len() == pids.len(), "process ids repeat: {pids:?}");
        for (i, pid) in (0..).zip(pids) {
            ensure!(mixer.join(pid)? == Some(mix(i)), "process {i}");
        }
        support::wait_no_zombie_children(master)
    })?;
    run_coordinator(s, &coordinator, &())
}

/// A worker starts a grandchild and returns without joining it: the system still shuts down
/// cleanly, after the grandchild ended. The grandchild waits until the worker has ended before
/// it leaves its mark, so it surely outlives it.
fn grandchild_not_joined(s: &Scenario) -> anyhow::Result<()> {
    let marker = s.path("grandchild-done");
    let grandchild = process::def_process(|(parent, marker): (i32, PathBuf)| {
        support::wait_until("the starting worker has ended", || {
            support::has_ended(parent)
        })
        .expect("the starting worker ends");
        support::touch(&marker).expect("touch");
    })?;
    let child = process::def_process(move |marker: PathBuf| {
        grandchild
            .start(&(std::process::id() as i32, marker))
            .is_ok()
    })?;
    let coordinator = coordinator(move |marker: PathBuf| {
        let pid = child.start(&marker)?;
        ensure!(child.join(pid)? == Some(true), "the child could not start");
        Ok(())
    })?;
    run_coordinator(s, &coordinator, &marker)?;
    ensure!(
        marker.exists(),
        "startup returned before the grandchild ended"
    );
    Ok(())
}

/// A global that a worker changes is seen by the processes it starts with its master value.
static GLOBAL: AtomicU64 = AtomicU64::new(1);

/// A worker changes [`GLOBAL`] and starts a process: that process sees the master's value,
/// which the `on_master_start` hook set.
fn global_seen_with_master_value(s: &Scenario) -> anyhow::Result<()> {
    GLOBAL.store(42, Ordering::SeqCst);
    let peek = process::def_process(|(): ()| GLOBAL.load(Ordering::SeqCst))?;
    let coordinator = coordinator(move |()| {
        let seen = GLOBAL.load(Ordering::SeqCst);
        ensure!(
            seen == 43,
            "the coordinator sees {seen}, not the master's 43"
        );
        GLOBAL.store(1000, Ordering::SeqCst);
        for _ in 0..3 {
            let pid = peek.start(&())?;
            let seen = peek.join(pid)?;
            ensure!(
                seen == Some(43),
                "a process started after the change sees {seen:?}"
            );
        }
        Ok(())
    })?;
    let config = s.config().on_master_start(|| {
        GLOBAL.store(43, Ordering::SeqCst);
        Ok(())
    });
    verdict(netmcore::run(config, &coordinator, &())?)
}

/// `run` returns the first process's result.
fn run_returns_first_process_result(s: &Scenario) -> anyhow::Result<()> {
    let square = square()?;
    ensure!(netmcore::run(s.config(), &square, &12)? == Some(144));
    let describe = process::def_process(|(name, n): (String, u32)| format!("{name}={n}"))?;
    let out = netmcore::run(s.config(), &describe, &("answer".to_string(), 42))?;
    ensure!(out.as_deref() == Some("answer=42"), "{out:?}");
    Ok(())
}

/// `startup` and `run` in a worker are refused (`AlreadyStarted`) and run nothing.
fn startup_in_a_worker_is_already_started(s: &Scenario) -> anyhow::Result<()> {
    let square = square()?;
    let socket_dir = s.path("nested-sock");
    let coordinator = coordinator(move |socket_dir: PathBuf| {
        let mut ran = false;
        let nested = netmcore::startup(netmcore::Config::new(&socket_dir), || {
            ran = true;
            square.start(&1)
        });
        ensure_err!(nested, Error::AlreadyStarted { .. });
        ensure!(!ran, "the nested startup ran its first process");
        ensure_err!(
            netmcore::run(netmcore::Config::new(&socket_dir), &square, &1),
            Error::AlreadyStarted { .. }
        );
        // The worker still works.
        let pid = square.start(&3)?;
        ensure!(square.join(pid)? == Some(9));
        Ok(())
    })?;
    run_coordinator(s, &coordinator, &socket_dir)
}

/// 256 MiB.
const BIG: usize = 256 << 20;

/// The block size of [`big_buffer`]'s pattern.
const BLOCK: usize = 1 << 20;

/// A 256 MiB buffer in which every 1 MiB block differs from the others (its first 8 bytes
/// number it) and whose bytes are not all alike, so that a lost, repeated or reordered block
/// or byte shows.
fn big_buffer() -> ByteBuf {
    let base: Vec<u8> = (0..BLOCK).map(|i| (i % 251) as u8).collect();
    let mut out = Vec::with_capacity(BIG);
    for block in 0..BIG / BLOCK {
        out.extend_from_slice(&(block as u64).to_le_bytes());
        out.extend_from_slice(&base[8..]);
    }
    ByteBuf::from(out)
}

/// Whether `buf` is exactly [`big_buffer`].
fn is_big_buffer(buf: &[u8]) -> bool {
    let base: Vec<u8> = (0..BLOCK).map(|i| (i % 251) as u8).collect();
    buf.len() == BIG
        && buf
            .chunks(BLOCK)
            .zip(0u64..)
            .all(|(chunk, block)| chunk[..8] == block.to_le_bytes() && chunk[8..] == base[8..])
}

/// A 256 MiB argument arrives whole.
fn argument_of_256_mib(s: &Scenario) -> anyhow::Result<()> {
    let check = process::def_process(|buf: ByteBuf| is_big_buffer(&buf))?;
    let coordinator = coordinator(move |()| {
        let pid = check.start(&big_buffer())?;
        ensure!(
            check.join(pid)? == Some(true),
            "the argument arrived damaged"
        );
        Ok(())
    })?;
    run_coordinator(s, &coordinator, &())
}

/// A digest of `bytes` that sees their order.
fn digest(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A 256 MiB `Vec<u8>` argument, which a worker streams through a pipe to the new process,
/// arrives whole, and its buffer is the caller's again once `start` returns (the caller
/// overwrites it at once). So do arguments around the size where the stream begins, and the
/// same argument from the master, which sends it whole.
fn vec_argument_of_256_mib_streams_whole(s: &Scenario) -> anyhow::Result<()> {
    let check = process::def_process(|buf: Vec<u8>| is_big_buffer(&buf))?;
    let sum = process::def_process(|buf: Vec<u8>| (buf.len(), digest(&buf)))?;
    let coordinator = coordinator(move |()| {
        let mut buf = big_buffer().into_inner();
        let pid = check.start(&buf)?;
        buf.fill(0);
        ensure!(
            check.join(pid)? == Some(true),
            "the argument arrived damaged"
        );
        let edge = netmcore::STREAM_AT_LEAST;
        for len in [edge - 1, edge, edge + 4097, 3 * edge + 1] {
            let mut bytes: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let expected = (len, digest(&bytes));
            let pid = sum.start(&bytes)?;
            bytes.fill(0xff);
            let got = sum.join(pid)?;
            ensure!(got == Some(expected), "{len} bytes arrived as {got:?}");
        }
        Ok(())
    })?;
    run_coordinator(s, &coordinator, &())?;
    let check = process::def_process(|buf: Vec<u8>| is_big_buffer(&buf))?;
    let out = netmcore::run(s.config(), &check, &big_buffer().into_inner())?;
    ensure!(out == Some(true), "the argument of run arrived damaged");
    Ok(())
}

/// A 256 MiB result arrives whole, through `join` and through `run`.
fn result_of_256_mib(s: &Scenario) -> anyhow::Result<()> {
    let make = process::def_process(|(): ()| big_buffer())?;
    let coordinator = coordinator(move |()| {
        let pid = make.start(&())?;
        let out = make.join(pid)?.context("no result")?;
        ensure!(is_big_buffer(&out), "the result arrived damaged");
        Ok(())
    })?;
    run_coordinator(s, &coordinator, &())?;
    // A process type of its own for the second run: DESIGN.md has the master destroy its fork
    // and join points when it shuts down, so a type is not relied on to outlive its run.
    let make = process::def_process(|(): ()| big_buffer())?;
    let out = netmcore::run(s.config(), &make, &())?.context("no result from run")?;
    ensure!(is_big_buffer(&out), "the result of run arrived damaged");
    Ok(())
}
