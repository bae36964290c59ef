//! Multi-process tests of the master and the process API: each case runs in a forked process
//! of its own (see `support::run_cases`), which becomes a master with `startup`.

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use netmcore_encap::{ByteBuf, Encap};
use netmcore_master::{
    Config, Error, Role, create_preallocated_shm, def_process, join, join_nowait, role,
    self_process_id, start, start_with, startup, startup_with_result,
};
use netmcore_resources::{Inherit, ProcessId, ResId};
use rustix::process::{Pid, Signal, getpid, getppid, kill_process};
use support::{Case, alive, children, run_cases, socket_dir, wait_for_file, write_file};

fn main() -> std::process::ExitCode {
    run_cases(&[
        Case {
            name: "sum_of_squares_end_to_end",
            run: sum_of_squares_end_to_end,
        },
        Case {
            name: "calls_fail_where_they_are_not_allowed",
            run: calls_fail_where_they_are_not_allowed,
        },
        Case {
            name: "join_errors_and_join_nowait",
            run: join_errors_and_join_nowait,
        },
        Case {
            name: "abnormal_ends_join_none_and_the_system_goes_on",
            run: abnormal_ends_join_none_and_the_system_goes_on,
        },
        Case {
            name: "two_hundred_processes_in_waves_of_two",
            run: two_hundred_processes_in_waves_of_two,
        },
        Case {
            name: "three_hundred_processes_at_once_joined_by_three_joiners",
            run: three_hundred_processes_at_once_joined_by_three_joiners,
        },
        Case {
            name: "argument_and_result_of_256_mib",
            run: argument_and_result_of_256_mib,
        },
        Case {
            name: "a_global_changed_in_a_worker_keeps_its_master_value",
            run: a_global_changed_in_a_worker_keeps_its_master_value,
        },
        Case {
            name: "warm_workers_run_processes_as_forks_of_the_current_master",
            run: warm_workers_run_processes_as_forks_of_the_current_master,
        },
        Case {
            name: "without_warm_workers_every_process_is_forked_on_demand",
            run: without_warm_workers_every_process_is_forked_on_demand,
        },
        Case {
            name: "a_killed_zygote_is_replaced_and_warm_workers_keep_coming",
            run: a_killed_zygote_is_replaced_and_warm_workers_keep_coming,
        },
        Case {
            name: "a_zygote_killed_with_a_request_in_flight_is_replaced",
            run: a_zygote_killed_with_a_request_in_flight_is_replaced,
        },
        Case {
            name: "a_killed_warm_worker_of_a_zygote_is_reaped_and_replaced",
            run: a_killed_warm_worker_of_a_zygote_is_reaped_and_replaced,
        },
        Case {
            name: "where_clone3_is_refused_the_master_forks_its_warm_workers_itself",
            run: where_clone3_is_refused_the_master_forks_its_warm_workers_itself,
        },
        Case {
            name: "without_a_zygote_the_master_forks_its_warm_workers_itself",
            run: without_a_zygote_the_master_forks_its_warm_workers_itself,
        },
        Case {
            name: "sigterm_stops_the_master_and_every_worker",
            run: sigterm_stops_the_master_and_every_worker,
        },
        Case {
            name: "sigint_stops_the_master_too",
            run: sigint_stops_the_master_too,
        },
        Case {
            name: "shutdown_waits_for_workers_or_terminates_them_after_the_timeout",
            run: shutdown_waits_for_workers_or_terminates_them_after_the_timeout,
        },
        Case {
            name: "second_master_gets_in_use_and_the_pidfile_lives_with_the_master",
            run: second_master_gets_in_use_and_the_pidfile_lives_with_the_master,
        },
        Case {
            name: "unsafe_socket_directories_are_refused",
            run: unsafe_socket_directories_are_refused,
        },
        Case {
            name: "a_worker_gets_master_gone_when_the_master_is_killed",
            run: a_worker_gets_master_gone_when_the_master_is_killed,
        },
        Case {
            name: "hook_and_first_process_errors_stop_the_master",
            run: hook_and_first_process_errors_stop_the_master,
        },
        Case {
            name: "a_worker_that_breaks_the_protocol_is_killed",
            run: a_worker_that_breaks_the_protocol_is_killed,
        },
        Case {
            name: "startup_destroys_what_a_dead_master_left_in_the_ledger",
            run: startup_destroys_what_a_dead_master_left_in_the_ledger,
        },
        Case {
            name: "startup_runs_again_after_it_returned",
            run: startup_runs_again_after_it_returned,
        },
        Case {
            name: "a_request_after_finished_is_a_protocol_violation",
            run: a_request_after_finished_is_a_protocol_violation,
        },
    ])
}

/// `Encap::wrap(value)`, which must succeed (a macro, so that no `Serialize` bound needs
/// naming here).
macro_rules! wrap {
    ($value:expr) => {
        Encap::wrap($value).expect("encodes")
    };
}

/// After `startup` returned: no child of this process is left, not even a zombie.
fn assert_no_children() {
    assert_eq!(children(), Vec::<i32>::new(), "children left after startup");
}

fn u64_of(e: Encap) -> u64 {
    e.unwrap::<u64>().expect("a u64")
}

fn sum_of_squares_end_to_end() {
    let (square, square_jp) = def_process(|arg| wrap!(&(u64_of(arg).pow(2)))).unwrap();
    let (coordinator, _) = def_process(move |arg| {
        let n = u64_of(arg);
        let pids: Vec<ProcessId> = (1..=n).map(|i| start(square, wrap!(&i)).unwrap()).collect();
        let total: u64 = pids
            .into_iter()
            .map(|pid| u64_of(join(square_jp, pid).unwrap().expect("a result")))
            .sum();
        wrap!(&total)
    })
    .unwrap();
    let (_dir, sock) = socket_dir();
    let result = startup_with_result(Config::new(&sock), || start(coordinator, wrap!(&10u64)));
    assert_eq!(result.unwrap().map(u64_of), Some(385));
    assert_eq!(role(), Role::PreStartup);
    assert_no_children();
    // The directory was created private, and the ledger lists nothing.
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&sock).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o700);
    assert!(
        netmcore_resources::ledger::replay_dir(&sock)
            .unwrap()
            .is_empty()
    );
}

fn calls_fail_where_they_are_not_allowed() {
    let (fork_point, join_point) = def_process(|arg| arg).unwrap();
    // Before startup.
    assert!(matches!(
        start(fork_point, wrap!(&1u8)),
        Err(Error::NotStarted)
    ));
    assert!(matches!(
        join_nowait(join_point, ProcessId(0)),
        Err(Error::NotStarted)
    ));
    assert!(matches!(
        join(join_point, ProcessId(0)),
        Err(Error::NotInWorker)
    ));
    assert!(matches!(self_process_id(), Err(Error::NotInWorker)));

    let (checks, _) = def_process(move |_| {
        let mut failures = Vec::new();
        let me = self_process_id().unwrap();
        if !matches!(def_process(|a| a), Err(Error::NotInMaster)) {
            failures.push("def_process in a worker".to_owned());
        }
        let (_dir, sock) = socket_dir();
        if !matches!(
            startup(Config::new(sock), || Ok(ProcessId(0))),
            Err(Error::AlreadyStarted { .. })
        ) {
            failures.push("startup in a worker".to_owned());
        }
        // A started process has the id its starter got.
        let child = start(fork_point, wrap!(&7u32)).unwrap();
        if child.0 <= me.0 {
            failures.push(format!("{child} started after {me}"));
        }
        // Unknown fork points.
        for bad in [ResId(999), join_point] {
            if !matches!(start(bad, wrap!(&1u8)), Err(Error::NoResource(id)) if id == bad) {
                failures.push(format!("start through {bad}"));
            }
        }
        if join(join_point, child)
            .unwrap()
            .map(|r| r.unwrap::<u32>().unwrap())
            != Some(7)
        {
            failures.push("join of the echo".to_owned());
        }
        wrap!(&failures)
    })
    .unwrap();
    let (_dir, sock) = socket_dir();
    let result = startup_with_result(
        Config::new(&sock).on_master_start(move || {
            // In the master: join and self_process_id are refused, join_nowait answers.
            assert_eq!(role(), Role::Master);
            assert!(matches!(
                join(join_point, ProcessId(0)),
                Err(Error::NotInWorker)
            ));
            assert!(matches!(self_process_id(), Err(Error::NotInWorker)));
            assert_eq!(join_nowait(join_point, ProcessId(0)).unwrap(), None);
            Ok(())
        }),
        || {
            let pid = start(checks, wrap!(&()))?;
            assert_eq!(pid, ProcessId(0), "the first process is 0");
            Ok(pid)
        },
    );
    let failures: Vec<String> = result.unwrap().unwrap().unwrap().unwrap();
    assert_eq!(failures, Vec::<String>::new());
    assert_no_children();
}

fn join_errors_and_join_nowait() {
    let (echo, echo_jp) = def_process(|arg| arg).unwrap();
    let (other, other_jp) = def_process(|arg| arg).unwrap();
    let (waiter, _) = def_process(|arg| {
        // Waits for its argument file, then returns.
        let path: String = arg.unwrap().unwrap();
        wait_for_file(Path::new(&path));
        wrap!(&1u64)
    })
    .unwrap();
    let (tmp, sock) = socket_dir();
    let gate = tmp.path().join("gate").to_string_lossy().into_owned();
    let (first, _) = def_process(move |_| {
        let mut failures = Vec::new();
        let mut check = |ok: bool, what: &str| {
            if !ok {
                failures.push(what.to_owned());
            }
        };
        // Unknown pid.
        check(
            matches!(
                join(echo_jp, ProcessId(12345)),
                Err(Error::UnknownProcess(ProcessId(12345)))
            ),
            "unknown pid",
        );
        // Wrong join point: refused, and the process stays joinable through its own.
        let a = start(echo, wrap!(&5u64)).unwrap();
        check(
            matches!(join(other_jp, a), Err(Error::UnknownProcess(p)) if p == a),
            "wrong join point",
        );
        check(
            join(echo_jp, a).unwrap().map(u64_of) == Some(5),
            "join through its own",
        );
        // Second join.
        check(
            matches!(join(echo_jp, a), Err(Error::UnknownProcess(p)) if p == a),
            "second join",
        );
        // join_nowait: None while it runs, Some once it finished, then forgotten.
        let w = start(waiter, wrap!(&gate)).unwrap();
        check(
            join_nowait(echo_jp, w).unwrap().is_none(),
            "join_nowait while it runs",
        );
        write_file(Path::new(&gate), "go");
        let mut got = None;
        while got.is_none() {
            got = join_nowait(
                // The waiter's join point is the one after its fork point.
                ResId(waiter.0 + 1),
                w,
            )
            .unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        check(got.map(u64_of) == Some(1), "join_nowait after the end");
        check(
            join_nowait(ResId(waiter.0 + 1), w).unwrap().is_none(),
            "join_nowait forgets",
        );
        check(
            matches!(join(ResId(waiter.0 + 1), w), Err(Error::UnknownProcess(_))),
            "join after join_nowait",
        );
        // join of another type's process through `other` works too.
        let b = start(other, wrap!(&9u64)).unwrap();
        check(
            join(other_jp, b).unwrap().map(u64_of) == Some(9),
            "other type",
        );
        wrap!(&failures)
    })
    .unwrap();
    let result = startup_with_result(Config::new(&sock), || start(first, wrap!(&())));
    let failures: Vec<String> = result.unwrap().unwrap().unwrap().unwrap();
    assert_eq!(failures, Vec::<String>::new());
    assert_no_children();
}

fn abnormal_ends_join_none_and_the_system_goes_on() {
    let (bad, bad_jp) = def_process(|arg| {
        let how: String = arg.unwrap().unwrap();
        let me = getpid();
        match how.as_str() {
            "panic" => panic!("this body panics on purpose"),
            "exit" => std::process::exit(3),
            "sigkill" => {
                kill_process(me, Signal::KILL).unwrap();
            }
            "sigsegv" => {
                // The first SIGSEGV meets std's stack-overflow handler, which restores the
                // default action and returns; the second one kills.
                kill_process(me, Signal::SEGV).unwrap();
                kill_process(me, Signal::SEGV).unwrap();
            }
            _ => {}
        }
        // A killed process does not get here.
        std::thread::sleep(Duration::from_secs(60));
        wrap!(&how)
    })
    .unwrap();
    let (first, _) = def_process(move |_| {
        let mut outcomes = Vec::new();
        for how in ["panic", "exit", "sigkill", "sigsegv", "fine"] {
            let pid = start(bad, wrap!(&how.to_owned())).unwrap();
            let joined = join(bad_jp, pid)
                .unwrap()
                .map(|r| r.unwrap::<String>().unwrap());
            outcomes.push((how.to_owned(), joined));
        }
        wrap!(&outcomes)
    })
    .unwrap();
    let (_dir, sock) = socket_dir();
    let log = support::log::Lines::install();
    let result = startup_with_result(Config::new(&sock), || start(first, wrap!(&())));
    let outcomes: Vec<(String, Option<String>)> = result.unwrap().unwrap().unwrap().unwrap();
    // The master logs which process ended how.
    for (pid, how) in [
        (1, "panicked: this body panics on purpose"),
        (2, "exited with 3"),
        (3, "killed by SIGKILL"),
        (4, "killed by SIGSEGV"),
        (5, "returned a result"),
    ] {
        let needle = format!("process {pid} (unix pid ");
        assert!(
            log.get()
                .iter()
                .any(|line| line.contains(&needle) && line.contains(how)),
            "no log line for {pid} {how}: {:#?}",
            log.get()
        );
    }
    let expected: Vec<(String, Option<String>)> = vec![
        ("panic".into(), None),
        ("exit".into(), None),
        ("sigkill".into(), None),
        ("sigsegv".into(), None),
        ("fine".into(), Some("fine".into())),
    ];
    assert_eq!(outcomes, expected);
    assert_no_children();
}

fn two_hundred_processes_in_waves_of_two() {
    let (square, square_jp) = def_process(|arg| wrap!(&(u64_of(arg).pow(2)))).unwrap();
    let (first, _) = def_process(move |_| {
        let mut results = Vec::new();
        for wave in (0..200u64).collect::<Vec<_>>().chunks(2) {
            let pids: Vec<ProcessId> = wave
                .iter()
                .map(|i| start(square, wrap!(i)).unwrap())
                .collect();
            for pid in pids {
                results.push(u64_of(join(square_jp, pid).unwrap().unwrap()));
            }
        }
        wrap!(&results)
    })
    .unwrap();
    let (_dir, sock) = socket_dir();
    let result = startup_with_result(Config::new(&sock), || start(first, wrap!(&())));
    let results: Vec<u64> = result.unwrap().unwrap().unwrap().unwrap();
    assert_eq!(results, (0..200u64).map(|i| i * i).collect::<Vec<_>>());
    assert_no_children();
}

fn three_hundred_processes_at_once_joined_by_three_joiners() {
    let (square, square_jp) = def_process(|arg| wrap!(&(u64_of(arg).pow(2)))).unwrap();
    // Each joiner joins its share of the processes, so that many joins wait at once.
    let (joiner, joiner_jp) = def_process(move |arg| {
        let pids: Vec<ProcessId> = arg.unwrap().unwrap();
        let results: Vec<u64> = pids
            .into_iter()
            .map(|pid| u64_of(join(square_jp, pid).unwrap().unwrap()))
            .collect();
        wrap!(&results)
    })
    .unwrap();
    let (first, _) = def_process(move |_| {
        let pids: Vec<ProcessId> = (0..300u64)
            .map(|i| start(square, wrap!(&i)).unwrap())
            .collect();
        let joiners: Vec<ProcessId> = pids
            .chunks(100)
            .map(|chunk| start(joiner, wrap!(&chunk.to_vec())).unwrap())
            .collect();
        let mut results = Vec::new();
        for pid in joiners {
            let part: Vec<u64> = join(joiner_jp, pid).unwrap().unwrap().unwrap().unwrap();
            results.extend(part);
        }
        wrap!(&results)
    })
    .unwrap();
    let (_dir, sock) = socket_dir();
    let result = startup_with_result(Config::new(&sock), || start(first, wrap!(&())));
    let results: Vec<u64> = result.unwrap().unwrap().unwrap().unwrap();
    assert_eq!(results, (0..300u64).map(|i| i * i).collect::<Vec<_>>());
    assert_no_children();
}

fn argument_and_result_of_256_mib() {
    const LEN: usize = 256 << 20;
    let (reverse, reverse_jp) = def_process(|arg| {
        let mut bytes = arg.unwrap::<ByteBuf>().unwrap().into_inner();
        assert_eq!(bytes.len(), LEN);
        assert!(bytes.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
        bytes.reverse();
        wrap!(&ByteBuf::from(bytes))
    })
    .unwrap();
    let (first, _) = def_process(move |_| {
        let arg: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
        let pid = start(reverse, wrap!(&ByteBuf::from(arg))).unwrap();
        let result = join(reverse_jp, pid).unwrap().expect("a result");
        let bytes = result.unwrap::<ByteBuf>().unwrap().into_inner();
        let ok = bytes.len() == LEN
            && bytes
                .iter()
                .rev()
                .enumerate()
                .all(|(i, b)| *b == (i % 251) as u8);
        wrap!(&ok)
    })
    .unwrap();
    let (_dir, sock) = socket_dir();
    let result = startup_with_result(Config::new(&sock), || start(first, wrap!(&())));
    assert!(result.unwrap().unwrap().unwrap::<bool>().unwrap());
    assert_no_children();
}

static GLOBAL: AtomicU64 = AtomicU64::new(1);

fn a_global_changed_in_a_worker_keeps_its_master_value() {
    let (read, read_jp) = def_process(|_| wrap!(&GLOBAL.load(Ordering::SeqCst))).unwrap();
    let (first, _) = def_process(move |_| {
        GLOBAL.store(2, Ordering::SeqCst);
        let pid = start(read, wrap!(&())).unwrap();
        let seen = u64_of(join(read_jp, pid).unwrap().unwrap());
        wrap!(&(GLOBAL.load(Ordering::SeqCst), seen))
    })
    .unwrap();
    let (_dir, sock) = socket_dir();
    // The master's value is 3 when the processes are forked.
    GLOBAL.store(3, Ordering::SeqCst);
    let result = startup_with_result(Config::new(&sock), || start(first, wrap!(&())));
    let (own, seen): (u64, u64) = result.unwrap().unwrap().unwrap().unwrap();
    assert_eq!((own, seen), (2, 3));
    assert_no_children();
}

/// The Unix pids of the children of process `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    let text = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
        .expect("/proc/<pid>/task/<pid>/children");
    text.split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

/// In a worker: the master's children once `until` holds for them, none being a zombie
/// (or, after ten seconds, as they are).
fn master_children(until: impl Fn(&[u32]) -> bool) -> Vec<u32> {
    let master = getppid().expect("a parent").as_raw_pid().unsigned_abs();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = children_of(master);
        let settled = now.iter().all(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            !stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        });
        if (settled && until(&now)) || std::time::Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A process that reports its Unix pid, the global's value, and whether it maps the
/// preallocated shm `id` (writing and reading it back when it does).
fn def_probe() -> (ResId, ResId) {
    def_process(|arg| {
        let id: Option<ResId> = arg.unwrap().unwrap();
        let maps = id.map(|id| match netmcore_master::get_resource(id) {
            Ok(resource) => match resource.repr() {
                netmcore_master::ResourceRepr::PosixShmPreallocated { memory, .. } => {
                    let word = memory.atomic_u64_at(0).expect("aligned");
                    word.store(0xfeed, Ordering::SeqCst);
                    word.load(Ordering::SeqCst) == 0xfeed
                }
                _ => false,
            },
            Err(_) => false,
        });
        wrap!(&(std::process::id(), GLOBAL.load(Ordering::SeqCst), maps))
    })
    .unwrap()
}

type Probe = (u32, u64, Option<bool>);

fn warm_workers_run_processes_as_forks_of_the_current_master() {
    let (probe, probe_jp) = def_probe();
    let (first, _) = def_process(move |_| {
        let run = |id: Option<ResId>| -> Probe {
            let inherit = id.map_or(Inherit::Nothing, |id| Inherit::Resources(vec![id]));
            let pid = start_with(probe, wrap!(&id), inherit).unwrap();
            join(probe_jp, pid).unwrap().unwrap().unwrap().unwrap()
        };
        // A global this worker changes: the processes it starts see the master's value.
        GLOBAL.store(2, Ordering::SeqCst);
        let before = master_children(|now| now.len() == 5);
        let plain = run(None);
        // A region created now changes what a fork sees: the warm workers forked before are
        // retired with their zygote, and the process that inherits it runs in a newer one
        // that maps it.
        let (id, _) = create_preallocated_shm("/netmcore-test-warm-", 4096).unwrap();
        let after = master_children(|now| {
            now.len() == 5 && now.iter().filter(|p| before.contains(p)).count() == 2
        });
        let inheriting = run(Some(id));
        let finally = master_children(|now| !now.contains(&inheriting.0));
        wrap!(&(before, plain, after, inheriting, finally))
    })
    .unwrap();
    let (_dir, sock) = socket_dir();
    GLOBAL.store(3, Ordering::SeqCst);
    let result = startup_with_result(Config::new(&sock).warm_workers(2), || {
        start(first, wrap!(&()))
    });
    type Seen = (Vec<u32>, Probe, Vec<u32>, Probe, Vec<u32>);
    let (before, plain, after, inheriting, finally): Seen =
        result.unwrap().unwrap().unwrap().unwrap();
    // The guardian, the first process, the zygote and two warm workers: the zygote's clones
    // are children of the master.
    assert_eq!(before.len(), 5, "{before:?}");
    assert!(
        before.contains(&plain.0),
        "{plain:?} ran in a warm worker of {before:?}"
    );
    assert_eq!((plain.1, plain.2), (3, None));
    // Stale warm workers and their zygote are gone, a new zygote and two new warm workers
    // wait, and one of them ran the process.
    assert_eq!(after.len(), 5, "{after:?}");
    assert!(!after.contains(&plain.0));
    assert!(
        before.iter().filter(|p| after.contains(p)).count() == 2,
        "{before:?} {after:?}"
    );
    assert!(after.contains(&inheriting.0), "{inheriting:?} in {after:?}");
    assert_eq!((inheriting.1, inheriting.2), (3, Some(true)));
    assert!(!finally.contains(&inheriting.0));
    assert_no_children();
}

fn without_warm_workers_every_process_is_forked_on_demand() {
    let (probe, probe_jp) = def_probe();
    let (first, _) = def_process(move |_| {
        // Give a master that would fork warm workers the time to do it.
        std::thread::sleep(Duration::from_millis(200));
        let before = master_children(|now| now.len() == 2);
        let pid = start(probe, wrap!(&None::<ResId>)).unwrap();
        let probe: Probe = join(probe_jp, pid).unwrap().unwrap().unwrap().unwrap();
        wrap!(&(before, probe))
    })
    .unwrap();
    let (_dir, sock) = socket_dir();
    GLOBAL.store(3, Ordering::SeqCst);
    let result = startup_with_result(Config::new(&sock).warm_workers(0), || {
        start(first, wrap!(&()))
    });
    let (before, probe): (Vec<u32>, Probe) = result.unwrap().unwrap().unwrap().unwrap();
    assert_eq!(
        before.len(),
        2,
        "the guardian and the first process: {before:?}"
    );
    assert!(!before.contains(&probe.0));
    assert_eq!((probe.1, probe.2), (3, None));
    assert_no_children();
}

/// The zygote among `children` (by its command name).
fn zygote_of(children: &[u32]) -> Option<u32> {
    children.iter().copied().find(|p| {
        std::fs::read_to_string(format!("/proc/{p}/comm"))
            .is_ok_and(|name| name.trim_end() == "netmcore-zygote")
    })
}

/// In a worker: starts a probe (no region inherited) and joins it.
fn run_probe(probe: ResId, probe_jp: ResId) -> Probe {
    let pid = start(probe, wrap!(&None::<ResId>)).unwrap();
    join(probe_jp, pid).unwrap().unwrap().unwrap().unwrap()
}

fn a_killed_zygote_is_replaced_and_warm_workers_keep_coming() {
    let (probe, probe_jp) = def_probe();
    let (first, _) = def_process(move |_| {
        let before = master_children(|now| now.len() == 5 && zygote_of(now).is_some());
        let zygote = zygote_of(&before).expect("a zygote");
        kill_process(Pid::from_raw(zygote.cast_signed()).unwrap(), Signal::KILL).unwrap();
        // The warm workers it made are the master's: one runs this process.
        let during = run_probe(probe, probe_jp);
        // A new zygote makes the next one.
        let after = master_children(|now| {
            now.len() == 5
                && !now.contains(&during.0)
                && zygote_of(now).is_some_and(|z| z != zygote)
        });
        let next = run_probe(probe, probe_jp);
        wrap!(&(before, zygote, during, after, next))
    })
    .unwrap();
    let (_dir, sock) = socket_dir();
    GLOBAL.store(3, Ordering::SeqCst);
    let result = startup_with_result(Config::new(&sock).warm_workers(2), || {
        start(first, wrap!(&()))
    });
    type Seen = (Vec<u32>, u32, Probe, Vec<u32>, Probe);
    let (before, zygote, during, after, next): Seen = result.unwrap().unwrap().unwrap().unwrap();
    // The guardian, the first process, the zygote and two warm workers.
    assert_eq!(before.len(), 5, "{before:?}");
    assert!(before.contains(&during.0), "{during:?} in {before:?}");
    assert_eq!((during.1, during.2), (3, None));
    assert_eq!(after.len(), 5, "{after:?}");
    assert!(
        !after.contains(&zygote),
        "the killed zygote was reaped: {after:?}"
    );
    // New: the zygote and the warm worker it made in place of the one used.
    assert_eq!(
        after.iter().filter(|p| !before.contains(p)).count(),
        2,
        "{before:?} {after:?}"
    );
    assert!(after.contains(&next.0), "{next:?} in {after:?}");
    assert_eq!((next.1, next.2), (3, None));
    assert_no_children();
}

fn a_zygote_killed_with_a_request_in_flight_is_replaced() {
    let (probe, probe_jp) = def_probe();
    let (first, _) = def_process(move |_| {
        let before = master_children(|now| now.len() == 5 && zygote_of(now).is_some());
        let zygote = zygote_of(&before).expect("a zygote");
        let raw = Pid::from_raw(zygote.cast_signed()).unwrap();
        // Stopped, it reads no request: the one the master sends for the warm worker the probe
        // takes stays in flight.
        kill_process(raw, Signal::STOP).unwrap();
        let ran = run_probe(probe, probe_jp);
        let asked = master_children(|now| now.len() == 4 && !now.contains(&ran.0));
        // The master, idle now, asks at once; a kill before that takes the other path (a
        // zygote lost with nothing in flight), with the same outcome.
        std::thread::sleep(Duration::from_millis(50));
        kill_process(raw, Signal::KILL).unwrap();
        let after = master_children(|now| {
            now.len() == 5 && !now.contains(&zygote) && zygote_of(now).is_some()
        });
        let zygote_after = zygote_of(&after);
        let next = run_probe(probe, probe_jp);
        wrap!(&(before, zygote, ran, asked, after, zygote_after, next))
    })
    .unwrap();
    let (_dir, sock) = socket_dir();
    GLOBAL.store(3, Ordering::SeqCst);
    let result = startup_with_result(Config::new(&sock).warm_workers(2), || {
        start(first, wrap!(&()))
    });
    type Seen = (Vec<u32>, u32, Probe, Vec<u32>, Vec<u32>, Option<u32>, Probe);
    let (before, zygote, ran, asked, after, zygote_after, next): Seen =
        result.unwrap().unwrap().unwrap().unwrap();
    assert_eq!(before.len(), 5, "{before:?}");
    assert!(before.contains(&ran.0), "{ran:?} in {before:?}");
    // While the zygote was stopped, no warm worker came in place of the one used.
    assert_eq!(asked.len(), 4, "{asked:?}");
    assert!(asked.contains(&zygote));
    // Its death ended the request: a new zygote made the missing warm worker.
    assert_eq!(after.len(), 5, "{after:?}");
    assert!(
        zygote_after.is_some_and(|z| z != zygote),
        "{zygote_after:?}"
    );
    assert!(after.contains(&next.0), "{next:?} in {after:?}");
    assert_eq!((next.1, next.2), (3, None));
    assert_no_children();
}

fn a_killed_warm_worker_of_a_zygote_is_reaped_and_replaced() {
    let (probe, probe_jp) = def_probe();
    let (first, _) = def_process(move |_| {
        let before = master_children(|now| now.len() == 5 && zygote_of(now).is_some());
        let zygote = zygote_of(&before).expect("a zygote");
        let me = getpid().as_raw_pid().unsigned_abs();
        // The newest child that is neither this process nor the zygote: a warm worker (the
        // guardian was forked first).
        let warm = before
            .iter()
            .copied()
            .filter(|&p| p != me && p != zygote)
            .max()
            .expect("a warm worker");
        kill_process(Pid::from_raw(warm.cast_signed()).unwrap(), Signal::KILL).unwrap();
        let after = master_children(|now| now.len() == 5 && !now.contains(&warm));
        let zygote_after = zygote_of(&after);
        let ran = run_probe(probe, probe_jp);
        wrap!(&(before, zygote, warm, after, zygote_after, ran))
    })
    .unwrap();
    let (_dir, sock) = socket_dir();
    GLOBAL.store(3, Ordering::SeqCst);
    let result = startup_with_result(Config::new(&sock).warm_workers(2), || {
        start(first, wrap!(&()))
    });
    type Seen = (Vec<u32>, u32, u32, Vec<u32>, Option<u32>, Probe);
    let (before, zygote, warm, after, zygote_after, ran): Seen =
        result.unwrap().unwrap().unwrap().unwrap();
    assert_eq!(before.len(), 5, "{before:?}");
    // Reaped (a zombie would still be listed) and replaced by the same zygote.
    assert_eq!(after.len(), 5, "{after:?}");
    assert!(!after.contains(&warm));
    assert_eq!(zygote_after, Some(zygote));
    assert!(after.contains(&ran.0), "{ran:?} in {after:?}");
    assert_eq!((ran.1, ran.2), (3, None));
    assert_no_children();
}

fn where_clone3_is_refused_the_master_forks_its_warm_workers_itself() {
    let (_dir, sock) = socket_dir();
    support::sys::refuse_clone3();
    forked_by_the_master(Config::new(&sock).warm_workers(2));
}

fn without_a_zygote_the_master_forks_its_warm_workers_itself() {
    let (_dir, sock) = socket_dir();
    forked_by_the_master(Config::new(&sock).warm_workers(2).zygote(false));
}

/// Runs a master with `config` and checks that it forked its two warm workers itself: its
/// children are the guardian, the first process and two warm workers, no zygote (one that
/// could not clone has exited); a probe runs in one of them, and the master forks another.
fn forked_by_the_master(config: Config) {
    let (probe, probe_jp) = def_probe();
    let (first, _) = def_process(move |_| {
        let before = master_children(|now| now.len() == 4 && zygote_of(now).is_none());
        let zygote_before = zygote_of(&before);
        let ran = run_probe(probe, probe_jp);
        let after = master_children(|now| now.len() == 4 && !now.contains(&ran.0));
        let zygotes = [zygote_before, zygote_of(&after)];
        wrap!(&(before, ran, after, zygotes))
    })
    .unwrap();
    GLOBAL.store(3, Ordering::SeqCst);
    let result = startup_with_result(config, || start(first, wrap!(&())));
    let (before, ran, after, zygotes): (Vec<u32>, Probe, Vec<u32>, [Option<u32>; 2]) =
        result.unwrap().unwrap().unwrap().unwrap();
    assert_eq!(before.len(), 4, "{before:?}");
    assert_eq!(zygotes, [None, None], "{before:?} {after:?}");
    assert!(
        before.contains(&ran.0),
        "{ran:?} ran in a warm worker of {before:?}"
    );
    assert_eq!((ran.1, ran.2), (3, None));
    assert_eq!(after.len(), 4, "{after:?}");
    assert_no_children();
}

fn sigterm_stops_the_master_and_every_worker() {
    let (tmp, sock) = socket_dir();
    let pids_dir = tmp.path().to_string_lossy().into_owned();
    let (sleeper, _) = def_process(|arg| {
        let (dir, name): (String, String) = arg.unwrap().unwrap();
        write_file(
            &Path::new(&dir).join(name),
            &getpid().as_raw_pid().to_string(),
        );
        if arg_is_stubborn(&dir) {
            // A stopped process does not act on SIGTERM: only SIGKILL ends it.
            let _ = kill_process(getpid(), Signal::STOP);
        }
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    })
    .unwrap();
    let dir = pids_dir.clone();
    let (first, _) = def_process(move |_| {
        write_file(
            &Path::new(&dir).join("pid-first"),
            &getpid().as_raw_pid().to_string(),
        );
        for name in ["pid-a", "pid-b"] {
            start(sleeper, wrap!(&(dir.clone(), name.to_owned()))).unwrap();
        }
        for name in ["pid-a", "pid-b"] {
            wait_for_file(&Path::new(&dir).join(name));
        }
        kill_process(getppid().unwrap(), Signal::TERM).unwrap();
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    })
    .unwrap();
    // One sleeper stops itself, so the master must escalate to SIGKILL.
    write_file(&tmp.path().join("stubborn"), "yes");
    let result = startup(
        Config::new(&sock).kill_grace(Duration::from_millis(100)),
        || start(first, wrap!(&())),
    );
    let err = result.unwrap_err();
    assert!(
        matches!(err, Error::Stopped { signal: "SIGTERM" }),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "the master was stopped by SIGTERM");
    for name in ["pid-first", "pid-a", "pid-b"] {
        let pid: i32 = wait_for_file(&tmp.path().join(name))
            .trim()
            .parse()
            .unwrap();
        assert!(!alive(pid), "{name} ({pid}) survived");
    }
    assert_no_children();
    // SIGTERM has its default action again, and the directory can be used again.
    assert_eq!(role(), Role::PreStartup);
    let (echo, _) = def_process(|a| a).unwrap();
    let again = startup_with_result(Config::new(&sock), || start(echo, wrap!(&4u64)));
    assert_eq!(again.unwrap().map(u64_of), Some(4));
}

fn sigint_stops_the_master_too() {
    let (first, _) = def_process(|_| {
        kill_process(getppid().unwrap(), Signal::INT).unwrap();
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    })
    .unwrap();
    let (_dir, sock) = socket_dir();
    let result = startup(Config::new(&sock), || start(first, wrap!(&())));
    assert!(
        matches!(result, Err(Error::Stopped { signal: "SIGINT" })),
        "{result:?}"
    );
    assert_no_children();
}

/// Only the first sleeper to look is stubborn: it removes the marker.
fn arg_is_stubborn(dir: &str) -> bool {
    std::fs::remove_file(Path::new(dir).join("stubborn")).is_ok()
}

fn shutdown_waits_for_workers_or_terminates_them_after_the_timeout() {
    let (tmp, sock) = socket_dir();
    let dir = tmp.path().to_string_lossy().into_owned();
    // A worker that outlives the first process by a little: the master waits for it.
    let (late, _) = def_process(|arg| {
        let dir: String = arg.unwrap().unwrap();
        wait_for_file(&Path::new(&dir).join("first-done"));
        write_file(&Path::new(&dir).join("late-done"), "done");
        wrap!(&())
    })
    .unwrap();
    let d = dir.clone();
    let (first, _) = def_process(move |_| {
        start(late, wrap!(&d)).unwrap();
        write_file(&Path::new(&d).join("first-done"), "done");
        wrap!(&())
    })
    .unwrap();
    startup(Config::new(&sock), || start(first, wrap!(&()))).unwrap();
    assert!(tmp.path().join("late-done").exists(), "the master waited");
    assert_no_children();

    // A worker that never ends: SIGTERM after the timeout.
    let (forever, _) = def_process(|arg| {
        let dir: String = arg.unwrap().unwrap();
        write_file(
            &Path::new(&dir).join("forever"),
            &getpid().as_raw_pid().to_string(),
        );
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    })
    .unwrap();
    let d = dir.clone();
    let (first, _) = def_process(move |_| {
        start(forever, wrap!(&d)).unwrap();
        wait_for_file(&Path::new(&d).join("forever"));
        wrap!(&())
    })
    .unwrap();
    startup(
        Config::new(&sock).shutdown_timeout(Duration::from_millis(50)),
        || start(first, wrap!(&())),
    )
    .unwrap();
    let pid: i32 = wait_for_file(&tmp.path().join("forever"))
        .trim()
        .parse()
        .unwrap();
    assert!(!alive(pid));
    assert_no_children();
}

fn second_master_gets_in_use_and_the_pidfile_lives_with_the_master() {
    let (tmp, sock) = socket_dir();
    let pidfile = tmp.path().join("master.pid");
    let go = tmp.path().join("go");
    let verdict = tmp.path().join("verdict");
    // The second master is forked before the first starts (a worker may not call startup),
    // and tries once the first one's first process runs.
    let second = {
        let (sock, go, verdict) = (sock.clone(), go.clone(), verdict.clone());
        support::sys::fork_child(move || {
            let (echo, _) = def_process(|a| a).unwrap();
            wait_for_file(&go);
            let outcome = match startup(Config::new(&sock), || start(echo, wrap!(&()))) {
                Err(Error::SocketDirectoryInUse(dir)) if dir == sock => "in use".to_owned(),
                other => format!("{other:?}"),
            };
            write_file(&verdict, &outcome);
            0
        })
    };
    let (first, _) = {
        let (pidfile, go, verdict) = (pidfile.clone(), go.clone(), verdict.clone());
        def_process(move |_| {
            // The pidfile names the master while it runs.
            let text = std::fs::read_to_string(&pidfile).unwrap();
            let master = getppid().unwrap().as_raw_pid();
            assert_eq!(text, format!("{master}\n"));
            write_file(&go, "go");
            wrap!(&wait_for_file(&verdict))
        })
        .unwrap()
    };
    let result = startup_with_result(Config::new(&sock).pidfile(&pidfile), || {
        start(first, wrap!(&()))
    });
    let verdict: String = result.unwrap().unwrap().unwrap().unwrap();
    assert_eq!(verdict, "in use\n");
    assert!(!pidfile.exists(), "the pidfile is removed");
    assert!(sock.join(netmcore_master::LOCK_FILE_NAME).exists());
    let (_, status) = rustix::process::waitpid(
        rustix::process::Pid::from_raw(second),
        rustix::process::WaitOptions::empty(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(status.exit_status(), Some(0));
    assert_no_children();
}

fn unsafe_socket_directories_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let (echo, _) = def_process(|a| a).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let open = tmp.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let link = tmp.path().join("link");
    let private = tmp.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink(&private, &link).unwrap();
    let file = tmp.path().join("file");
    std::fs::write(&file, b"").unwrap();
    for dir in [&open, &link, &file] {
        let started = std::cell::Cell::new(false);
        let result = startup(Config::new(dir), || {
            started.set(true);
            start(echo, wrap!(&()))
        });
        assert!(
            matches!(&result, Err(Error::InsecureSocketDirectory { path, .. }) if path == dir),
            "{}: {result:?}",
            dir.display()
        );
        assert!(!started.get());
        assert_eq!(role(), Role::PreStartup);
    }
    let message = startup(Config::new(&open), || start(echo, wrap!(&())))
        .unwrap_err()
        .to_string();
    assert!(message.contains("0777"), "{message}");
    // The private directory itself is fine.
    startup(Config::new(&private), || start(echo, wrap!(&()))).unwrap();
}

fn a_worker_gets_master_gone_when_the_master_is_killed() {
    let (tmp, sock) = socket_dir();
    let verdict = tmp.path().join("verdict");
    let (sleeper, sleeper_jp) = def_process(|_| {
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    })
    .unwrap();
    let v = verdict.clone();
    let (first, _) = def_process(move |_| {
        let pid = start(sleeper, wrap!(&())).unwrap();
        // This worker outlives its master on purpose, to see what its calls return.
        rustix::process::set_parent_process_death_signal(None).unwrap();
        kill_process(getppid().unwrap(), Signal::KILL).unwrap();
        let joined = join(sleeper_jp, pid);
        let again = start(sleeper, wrap!(&()));
        let outcome = format!(
            "{} {}",
            matches!(joined, Err(Error::MasterGone)),
            matches!(again, Err(Error::MasterGone))
        );
        write_file(&v, &outcome);
        wrap!(&())
    })
    .unwrap();
    let master = support::sys::fork_child(move || {
        let _ = startup(Config::new(&sock), || start(first, wrap!(&())));
        1
    });
    let (_, status) = rustix::process::waitpid(
        rustix::process::Pid::from_raw(master),
        rustix::process::WaitOptions::empty(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(status.terminating_signal(), Some(Signal::KILL.as_raw()));
    assert_eq!(wait_for_file(&verdict), "true true\n");
}

fn hook_and_first_process_errors_stop_the_master() {
    let (tmp, sock) = socket_dir();
    let (sleeper, _) = def_process(|arg| {
        let path: String = arg.unwrap().unwrap();
        write_file(Path::new(&path), &getpid().as_raw_pid().to_string());
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    })
    .unwrap();
    let marker = tmp.path().join("sleeper").to_string_lossy().into_owned();
    // The hook starts a process, then fails: the process is stopped, the error returned.
    let m = marker.clone();
    let result = startup(
        Config::new(&sock).on_master_start(move || {
            start(sleeper, wrap!(&m))?;
            wait_for_file(Path::new(&m));
            Err(Error::NoResource(ResId(77)))
        }),
        || panic!("first_process must not run after the hook failed"),
    );
    assert!(
        matches!(result, Err(Error::NoResource(ResId(77)))),
        "{result:?}"
    );
    let pid: i32 = wait_for_file(Path::new(&marker)).trim().parse().unwrap();
    assert!(!alive(pid));
    assert_no_children();
    // first_process returning an id that names no process.
    let result = startup(Config::new(&sock), || Ok(ProcessId(4242)));
    assert!(
        matches!(result, Err(Error::UnknownProcess(ProcessId(4242)))),
        "{result:?}"
    );
    // A hook may define process types and run them.
    let result = startup_with_result(
        Config::new(&sock).on_master_start(|| {
            def_process(|a| a)?;
            Ok(())
        }),
        || {
            let (echo, _) = def_process(|a| a)?;
            start(echo, wrap!(&11u64))
        },
    );
    assert_eq!(result.unwrap().map(u64_of), Some(11));
    assert_no_children();
}

fn startup_runs_again_after_it_returned() {
    let (double, _) = def_process(|arg| wrap!(&(2 * u64_of(arg)))).unwrap();
    let (_dir, sock) = socket_dir();
    for n in 0..3u64 {
        let result = startup_with_result(Config::new(&sock), || start(double, wrap!(&n)));
        assert_eq!(result.unwrap().map(u64_of), Some(2 * n));
    }
    // A panicking first process: run's result is None.
    let (boom, _) = def_process(|_| panic!("boom")).unwrap();
    let result = startup_with_result(Config::new(&sock), || start(boom, wrap!(&())));
    assert!(result.unwrap().is_none());
    assert_no_children();
}

fn a_worker_that_breaks_the_protocol_is_killed() {
    let (rogue, rogue_jp) = def_process(|_| {
        // Garbage where a frame header belongs, on every socket (the channel is the only
        // one), then wait to be killed.
        for fd in support::socket_fds() {
            let _ = support::sys::write_raw_fd(fd, &[0xff; 16]);
        }
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    })
    .unwrap();
    let (echo, echo_jp) = def_process(|a| a).unwrap();
    let (first, _) = def_process(move |_| {
        let bad = start(rogue, wrap!(&())).unwrap();
        let bad_joined = join(rogue_jp, bad).unwrap().is_some();
        let good = start(echo, wrap!(&8u64)).unwrap();
        let good_joined = join(echo_jp, good).unwrap().map(u64_of);
        wrap!(&(bad_joined, good_joined))
    })
    .unwrap();
    let (_dir, sock) = socket_dir();
    let log = support::log::Lines::install();
    let result = startup_with_result(Config::new(&sock), || start(first, wrap!(&())));
    let outcome: (bool, Option<u64>) = result.unwrap().unwrap().unwrap().unwrap();
    assert_eq!(outcome, (false, Some(8)));
    assert!(
        log.contains("process 1 broke the protocol"),
        "{:#?}",
        log.get()
    );
    assert!(log.contains("killed by SIGKILL"), "{:#?}", log.get());
    assert_no_children();
}

fn a_request_after_finished_is_a_protocol_violation() {
    use netmcore_ipc::channel::encode_frame;
    use netmcore_ipc::wire::{Message, Outcome, Request};
    let (rogue, rogue_jp) = def_process(|_| {
        // A well-formed `Finished` report, then a request, in one write on the channel (the
        // only socket), then wait to be killed.
        let mut bytes = Vec::new();
        for request in [
            Request::Finished(Outcome::Returned(wrap!(&5u64))),
            Request::SelfProcessId,
        ] {
            bytes.extend(encode_frame(&request.encode().unwrap()).unwrap());
        }
        for fd in support::socket_fds() {
            let _ = support::sys::write_raw_fd(fd, &bytes);
        }
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    })
    .unwrap();
    let (echo, echo_jp) = def_process(|a| a).unwrap();
    let (first, _) = def_process(move |_| {
        let bad = start(rogue, wrap!(&())).unwrap();
        // The report itself was well-formed: its result is delivered.
        let bad_joined = join(rogue_jp, bad).unwrap().map(u64_of);
        let good = start(echo, wrap!(&8u64)).unwrap();
        let good_joined = join(echo_jp, good).unwrap().map(u64_of);
        wrap!(&(bad_joined, good_joined))
    })
    .unwrap();
    let (_dir, sock) = socket_dir();
    let log = support::log::Lines::install();
    let result = startup_with_result(Config::new(&sock), || start(first, wrap!(&())));
    let outcome: (Option<u64>, Option<u64>) = result.unwrap().unwrap().unwrap().unwrap();
    assert_eq!(outcome, (Some(5), Some(8)));
    assert!(
        log.contains("process 1 broke the protocol (a request after its Finished report)"),
        "{:#?}",
        log.get()
    );
    assert!(log.contains("killed by SIGKILL"), "{:#?}", log.get());
    assert_no_children();
}

fn startup_destroys_what_a_dead_master_left_in_the_ledger() {
    use netmcore_resources::ledger::{Ledger, LedgerObject};
    let (tmp, sock) = socket_dir();
    std::fs::create_dir(&sock).unwrap();
    std::fs::set_permissions(&sock, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    // A dead master registered a shm object and a file, and destroyed neither.
    let name = format!("/netmcore-test-{}-leftover", std::process::id());
    let shm = netmcore_ipc::shm::ShmObject::create(&name).unwrap();
    let file = tmp.path().join("leftover.bin");
    std::fs::write(&file, b"x").unwrap();
    {
        let mut ledger = Ledger::open(&sock).unwrap();
        ledger
            .registered(&LedgerObject::shm(name.as_str()))
            .unwrap();
        ledger.registered(&LedgerObject::file(&file)).unwrap();
    }
    drop(shm);
    let (echo, _) = def_process(|a| a).unwrap();
    startup(Config::new(&sock), || start(echo, wrap!(&()))).unwrap();
    assert!(!Path::new(&format!("/dev/shm{name}")).exists());
    assert!(!file.exists());
    assert!(
        netmcore_resources::ledger::replay_dir(&sock)
            .unwrap()
            .is_empty()
    );
    assert_no_children();
}
