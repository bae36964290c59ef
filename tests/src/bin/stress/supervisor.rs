//! The supervisor: the process the user started. It creates the run's scratch directory and
//! progress region, starts the master process (this same program with `--master`) in a
//! process group of its own, shows progress while it runs, and afterwards checks that nothing
//! of the run is left: no process of its group, no stray child, no object in `/dev/shm`, no
//! file. Then it prints the summary.
//!
//! It is a child subreaper, so that a process that escapes the master is adopted here (and
//! counted) rather than by init.

use std::io::{IsTerminal as _, Write as _};
use std::os::unix::fs::DirBuilderExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use netmcore_ipc::shm::ShmObject;
use rustix::io::Errno;
use rustix::process::{Pid, Resource, Rlimit, Signal, WaitOptions};

use crate::master::Plan;
use crate::procs;
use crate::report::Report;
use crate::rng::mix;
use crate::shared::{self, Counter, MAX_COORDINATORS};
use crate::tally::{ACTION_KEYS, ACTION_NAMES, FAULT_NAMES, OBJECT_NAMES};

/// The default number of processes of a run.
const DEFAULT_PROCESSES: u64 = 10_000;

/// How long the group of a finished master gets to disappear.
const GROUP_GRACE: Duration = Duration::from_secs(10);

/// The start of the names of the objects that netmcore names itself in `/dev/shm` (the
/// segments of structures), and of the run's own objects.
const NETMCORE_PREFIX: &str = "netmcore-";

/// How long objects of a killed master get to disappear (its guardian cleans them).
const GUARDIAN_GRACE: Duration = Duration::from_secs(3);

const USAGE: &str = "\
usage: stress [--processes N] [--duration D] [--seed S] [--coordinators K] [--wave W]
              [--without ACTIONS] [--no-resources] [--stall D]

  --processes N     processes to run (default 10000 unless --duration is given)
  --duration D      run for this long (e.g. 60s, 2m, 500ms); with --processes, whichever
                    comes first
  --seed S          the seed of the mix (default: from the clock; printed to replay a run)
  --coordinators K  coordinator processes running waves side by side (default 4, at most 16)
  --wave W          the most actions in one wave (default 6)
  --without ACTIONS leave these actions out of the mix, comma-separated, from: plain, nowait,
                    fault, kill, nest, shm, prealloc, sem, file, misuse, hostile, mutex, churn,
                    claims, barrier, channel, pipe
  --no-resources    the same as --without shm,prealloc,sem,file,mutex,churn,claims,barrier,
                    channel,pipe
  --stall D         declare a hang when no process starts for this long (default 90s)";

/// The actions `--no-resources` leaves out: those that create objects.
const NO_RESOURCES: &str = "shm,prealloc,sem,file,mutex,churn,claims,barrier,channel,pipe";

/// The command line.
#[derive(Debug, Clone)]
pub struct Options {
    processes: Option<u64>,
    duration: Option<Duration>,
    seed: Option<u64>,
    coordinators: u64,
    wave_max: u64,
    disabled: u64,
    stall: Duration,
}

impl Options {
    /// Parses the command line (without the program name).
    pub fn parse(args: &[String]) -> anyhow::Result<Options> {
        let mut o = Options {
            processes: None,
            duration: None,
            seed: None,
            coordinators: 4,
            wave_max: 6,
            disabled: 0,
            stall: Duration::from_secs(90),
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .with_context(|| format!("{name} wants a value\n\n{USAGE}"))
            };
            let number = |name: &str, v: &String| -> anyhow::Result<u64> {
                v.parse()
                    .with_context(|| format!("{name} wants a number, got `{v}`"))
            };
            match arg.as_str() {
                "--processes" => o.processes = Some(number(arg, value(arg)?)?),
                "--duration" => o.duration = Some(parse_duration(value(arg)?)?),
                "--seed" => o.seed = Some(number(arg, value(arg)?)?),
                "--coordinators" => o.coordinators = number(arg, value(arg)?)?,
                "--wave" => o.wave_max = number(arg, value(arg)?)?,
                "--stall" => o.stall = parse_duration(value(arg)?)?,
                "--without" => o.disabled |= parse_actions(value(arg)?)?,
                "--no-resources" => o.disabled |= parse_actions(NO_RESOURCES)?,
                "-h" | "--help" => bail!("{USAGE}"),
                other => bail!("unknown argument `{other}`\n\n{USAGE}"),
            }
        }
        if !(1..=MAX_COORDINATORS).contains(&o.coordinators) {
            bail!("--coordinators must be from 1 to {MAX_COORDINATORS}");
        }
        if o.wave_max == 0 {
            bail!("--wave must be at least 1");
        }
        if o.processes.is_none() && o.duration.is_none() {
            o.processes = Some(DEFAULT_PROCESSES);
        }
        Ok(o)
    }
}

/// Parses a comma-separated list of action names into a bit mask.
fn parse_actions(list: &str) -> anyhow::Result<u64> {
    let mut mask = 0;
    for name in list.split(',').filter(|n| !n.is_empty()) {
        let i = ACTION_KEYS
            .iter()
            .position(|k| *k == name)
            .with_context(|| {
                format!(
                    "unknown action `{name}` (known: {})",
                    ACTION_KEYS.join(", ")
                )
            })?;
        mask |= 1 << i;
    }
    Ok(mask)
}

/// Parses `60s`, `2m`, `500ms` or a plain number of seconds.
fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let bad = || format!("`{text}` is not a duration (e.g. 60s, 2m, 500ms)");
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = digits.parse().with_context(bad)?;
    Ok(match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" | "min" => Duration::from_secs(60 * n),
        _ => bail!(bad()),
    })
}

/// How the master process ended.
#[derive(Debug)]
enum Ending {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it.
    Signaled(i32),
    /// It made no progress for the stall time and was killed with its whole group.
    Hung,
}

/// Runs a whole stress run; returns whether it passed.
pub fn run(options: &Options) -> anyhow::Result<bool> {
    let me = std::process::id();
    let seed = options.seed.unwrap_or_else(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        mix(nanos ^ u64::from(me))
    });
    let prefix_body = format!("netmcore-stress-{me}-");
    // Structures name their segments themselves (`/netmcore-<creator's pid>-mutex-…`), not
    // with the run's prefix: every such object that appears during the run, is left after
    // it, and was created by a process of the run is counted as the run's.
    let netmcore_before = procs::shm_entries(NETMCORE_PREFIX);
    let prefix = format!("/{prefix_body}");
    let scratch = std::env::temp_dir().join(format!("netmcore-stress-{me}"));
    let deadline_ms = options.duration.map_or(0, |d| {
        let end = SystemTime::now() + d;
        end.duration_since(UNIX_EPOCH)
            .map_or(0, |t| t.as_millis() as u64)
    });
    let budget = options.processes.map_or(u64::MAX, |n| {
        (n.saturating_sub(1 + options.coordinators) / options.coordinators).max(1)
    });
    eprintln!(
        "stress: seed {seed}, {}, {} coordinators, waves of up to {}, {}",
        match (options.processes, options.duration) {
            (Some(n), Some(d)) => format!("{n} processes or {d:?}"),
            (Some(n), None) => format!("{n} processes"),
            (None, Some(d)) => format!("{d:?}"),
            (None, None) => unreachable!("parse sets a default"),
        },
        options.coordinators,
        options.wave_max,
        if options.disabled == 0 {
            "the whole mix".to_owned()
        } else {
            let left_out: Vec<&str> = (0..ACTION_KEYS.len())
                .filter(|i| options.disabled & (1 << i) != 0)
                .map(|i| ACTION_KEYS[i])
                .collect();
            format!("without {}", left_out.join(","))
        },
    );
    eprintln!("stress: replay with --seed {seed}");

    // Deliberate SIGSEGVs must not write core files.
    rustix::process::setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: rustix::process::getrlimit(Resource::Core).maximum,
        },
    )
    .context("setrlimit(RLIMIT_CORE, 0)")?;
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        .context("prctl(PR_SET_CHILD_SUBREAPER, 1)")?;

    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&scratch)
        .with_context(|| format!("mkdir {}", scratch.display()))?;
    let plan = Plan {
        scratch: scratch.clone(),
        region: format!("{prefix}progress"),
        prefix,
        seed,
        coordinators: options.coordinators,
        budget,
        deadline_ms,
        wave_max: options.wave_max,
        disabled: options.disabled,
        supervisor: me,
    };
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(plan.files_dir())
        .with_context(|| format!("mkdir {}", plan.files_dir().display()))?;
    let region =
        ShmObject::create(&plan.region).with_context(|| format!("shm_open {}", plan.region))?;
    region
        .set_size(shared::region_size())
        .with_context(|| format!("ftruncate {}", plan.region))?;
    shared::use_region(
        region
            .map_shared()
            .with_context(|| format!("mmap {}", plan.region))?,
    );
    drop(region);

    let started = Instant::now();
    let exe = std::env::current_exe().context("the path of the stress program")?;
    let child = Command::new(&exe)
        .arg("--master")
        .args(plan.to_args())
        .process_group(0)
        .spawn()
        .with_context(|| format!("spawn {} --master", exe.display()))?;
    let child_pid = child.id() as i32;
    let mut strays = Vec::new();
    let ending = supervise(child_pid, seed, options, &mut strays);
    let wall = started.elapsed();
    clear_progress();

    // The master process is gone: its group must follow.
    let pgid = Pid::from_raw(child_pid).context("the master process's pid")?;
    let survivors = wait_group_gone(pgid, &mut strays);
    let deadline = Instant::now() + GROUP_GRACE;
    while !procs::children_of(me as i32).is_empty() && Instant::now() < deadline {
        reap(&mut strays);
        std::thread::sleep(Duration::from_millis(5));
    }
    reap(&mut strays);
    let children: Vec<String> = procs::children_of(me as i32)
        .iter()
        .map(procs::Proc::describe)
        .collect();

    let _ = netmcore_ipc::shm::unlink(&plan.region);
    let mut shm_left = shm_leftovers(&prefix_body, &netmcore_before);
    if !matches!(ending, Ending::Exited(0)) {
        // A killed master's guardian cleans asynchronously.
        let deadline = Instant::now() + GUARDIAN_GRACE;
        while !shm_left.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            shm_left = shm_leftovers(&prefix_body, &netmcore_before);
        }
    }
    for name in &shm_left {
        let _ = std::fs::remove_file(Path::new("/dev/shm").join(name));
    }
    let others = procs::shm_entries(NETMCORE_PREFIX)
        .into_iter()
        .filter(|n| !n.contains(&prefix_body) && !netmcore_before.contains(n))
        .filter(|n| !shm_left.contains(n))
        .count();
    if others > 0 {
        eprintln!(
            "stress: {others} netmcore objects of other programs appeared in /dev/shm during the \
             run (not counted, not removed)"
        );
    }
    let files_left: Vec<String> = std::fs::read_dir(plan.files_dir())
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let report = Report::read(&plan.report_path());

    if matches!(ending, Ending::Hung) && !strays.is_empty() {
        // The workers of the killed master are adopted and reaped here: not strays of a run
        // that ended, and the hang is the failure to look at.
        eprintln!(
            "stress: reaped {} processes of the killed run",
            strays.len()
        );
        strays.clear();
    }
    let leaks = Leaks {
        shm: shm_left,
        files: files_left,
        survivors,
        strays,
        children,
    };
    let passed = summarize(seed, wall, &ending, report.as_ref(), &leaks);
    if passed {
        std::fs::remove_dir_all(&scratch)
            .with_context(|| format!("remove {}", scratch.display()))?;
    } else {
        eprintln!(
            "stress: the scratch directory is kept for inspection: {}",
            scratch.display()
        );
    }
    Ok(passed)
}

/// What the supervisor found left after the run.
struct Leaks {
    shm: Vec<String>,
    files: Vec<String>,
    survivors: Vec<String>,
    strays: Vec<String>,
    children: Vec<String>,
}

/// The objects of the run in `/dev/shm`: those named with its prefix, and those that netmcore
/// named after a creator that was a process of the run and that were not there before it
/// (`before`).
fn shm_leftovers(prefix_body: &str, before: &[String]) -> Vec<String> {
    let mut left = procs::shm_entries(prefix_body);
    left.extend(
        procs::shm_entries(NETMCORE_PREFIX)
            .into_iter()
            .filter(|n| !before.contains(n) && creator(n).is_some_and(shared::was_of_the_run)),
    );
    left
}

/// The Unix pid after which netmcore named the `/dev/shm` entry `name`
/// (`netmcore-<pid>-…`, or `sem.netmcore-<pid>-…`); `None` for names of another shape, such
/// as the run's own prefix or another program's.
fn creator(name: &str) -> Option<u32> {
    name.trim_start_matches("sem.")
        .strip_prefix(NETMCORE_PREFIX)?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// Waits for the master process, reaping adopted orphans and showing progress; kills the
/// master's group if the run stalls.
fn supervise(child: i32, seed: u64, options: &Options, strays: &mut Vec<String>) -> Ending {
    let tty = std::io::stderr().is_terminal();
    let every = if tty {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(5)
    };
    let started = Instant::now();
    let mut last_print = Instant::now();
    let mut last_change = Instant::now();
    let mut last_seen = (0, 0);
    loop {
        loop {
            match rustix::process::wait(WaitOptions::NOHANG) {
                Ok(Some((pid, status))) if pid.as_raw_nonzero().get() == child => {
                    return match status.exit_status() {
                        Some(code) => Ending::Exited(code),
                        None => Ending::Signaled(status.terminating_signal().unwrap_or(0)),
                    };
                }
                Ok(Some((pid, status))) => strays.push(format!(
                    "process {} escaped the master, was adopted by the supervisor and ended ({status:?})",
                    pid.as_raw_nonzero()
                )),
                Ok(None) | Err(_) => break,
            }
        }
        let seen = (
            shared::get(Counter::Processes),
            shared::get(Counter::Checked),
        );
        if seen != last_seen {
            last_seen = seen;
            last_change = Instant::now();
        } else if last_change.elapsed() > options.stall {
            clear_progress();
            eprintln!(
                "stress: no progress for {:?}: the run hangs (a deadlock, or a wait that never \
                 ends); replay with --seed {seed}",
                options.stall
            );
            for c in 0..options.coordinators {
                if let Some((wave, position, action)) = shared::joining(c) {
                    eprintln!(
                        "  coordinator {c} was joining action {position} of its wave {wave}: {}",
                        ACTION_NAMES.get(action).copied().unwrap_or("(unknown)")
                    );
                }
            }
            eprintln!("  the processes of the run:");
            for p in procs::group(child) {
                eprintln!("  {}", p.describe());
            }
            if let Some(pgid) = Pid::from_raw(child) {
                let _ = rustix::process::kill_process_group(pgid, Signal::KILL);
            }
            // Reap the master process; its group goes on being reaped afterwards.
            while let Ok(Some((pid, _))) = rustix::process::wait(WaitOptions::empty()) {
                if pid.as_raw_nonzero().get() == child {
                    break;
                }
            }
            return Ending::Hung;
        }
        if last_print.elapsed() >= every {
            last_print = Instant::now();
            let line = progress_line(started.elapsed(), options);
            if tty {
                eprint!("\r\x1b[K{line}");
                let _ = std::io::stderr().flush();
            } else {
                eprintln!("{line}");
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One line of progress.
fn progress_line(elapsed: Duration, options: &Options) -> String {
    let processes = shared::get(Counter::Processes);
    let secs = elapsed.as_secs_f64().max(1e-3);
    let target = match options.processes {
        Some(n) => format!("/{n}"),
        None => String::new(),
    };
    format!(
        "stress: {:6.1}s  processes {processes}{target} ({:.0}/s)  checked {}  faults {}  objects {}  failures {}",
        secs,
        processes as f64 / secs,
        shared::get(Counter::Checked),
        shared::get(Counter::Faults),
        shared::get(Counter::Resources),
        shared::get(Counter::Failures),
    )
}

/// Ends a live progress line on a terminal.
fn clear_progress() {
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[K");
    }
}

/// Reaps every adopted child that has ended.
fn reap(strays: &mut Vec<String>) {
    while let Ok(Some((pid, status))) = rustix::process::wait(WaitOptions::NOHANG) {
        strays.push(format!(
            "process {} outlived the master process and was reaped by the supervisor ({status:?})",
            pid.as_raw_nonzero()
        ));
    }
}

/// Waits until no process of group `pgid` exists (`kill(-pgid, 0)` gives `ESRCH`); after
/// [`GROUP_GRACE`] kills the group and returns the processes that were still in it.
fn wait_group_gone(pgid: Pid, strays: &mut Vec<String>) -> Vec<String> {
    let deadline = Instant::now() + GROUP_GRACE;
    let mut seen = Vec::new();
    loop {
        reap(strays);
        if rustix::process::test_kill_process_group(pgid) == Err(Errno::SRCH) {
            return seen;
        }
        if seen.is_empty() {
            seen = procs::group(pgid.as_raw_nonzero().get())
                .iter()
                .map(procs::Proc::describe)
                .collect();
        }
        if Instant::now() > deadline {
            let _ = rustix::process::kill_process_group(pgid, Signal::KILL);
            std::thread::sleep(Duration::from_millis(100));
            reap(strays);
            if seen.is_empty() {
                seen.push(format!(
                    "a process of group {pgid:?} that ended while listed"
                ));
            }
            return seen;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Prints the summary table; returns whether the run passed.
fn summarize(
    seed: u64,
    wall: Duration,
    ending: &Ending,
    report: Result<&Report, &anyhow::Error>,
    leaks: &Leaks,
) -> bool {
    let mut problems: Vec<String> = Vec::new();
    let row = |label: &str, value: String| eprintln!("  {label:<34} {value}");
    eprintln!("\nstress summary (seed {seed})");
    match ending {
        Ending::Exited(0) => {}
        Ending::Exited(code) => problems.push(format!("the master process exited with {code}")),
        Ending::Signaled(sig) => {
            problems.push(format!("the master process was killed by signal {sig}"))
        }
        Ending::Hung => problems.push("the run hung and was killed".to_owned()),
    }
    let empty = Report::default();
    let r = match report {
        Ok(r) => r,
        Err(e) => {
            problems.push(format!("{e:#}"));
            &empty
        }
    };
    let mut leak_count = (leaks.shm.len() + leaks.files.len() + leaks.survivors.len()) as u64
        + (leaks.strays.len() + leaks.children.len()) as u64
        + (r.ledger_live.len() + r.children_left.len()) as u64
        + r.fds_after.abs_diff(r.fds_before);
    if r.ledger_registered != r.ledger_destroyed {
        leak_count += r.ledger_registered.abs_diff(r.ledger_destroyed);
    }
    let secs = r.run_seconds.max(1e-3);
    row("processes run", format!("{}", r.bodies));
    row(
        "time",
        format!(
            "{:.1} s in run(), {:.1} s in all",
            r.run_seconds,
            wall.as_secs_f64()
        ),
    );
    row(
        "processes per second",
        format!("{:.0}", r.bodies as f64 / secs),
    );
    if let Some(t) = &r.tally {
        row(
            "processes counted by coordinators",
            format!("{}", t.processes),
        );
        row("waves", format!("{}", t.waves));
        for (i, name) in ACTION_NAMES.iter().enumerate() {
            row(&format!("  action: {name}"), format!("{}", t.actions[i]));
        }
        row("results checked", format!("{}", t.checked));
        row(
            "faults injected / survived",
            format!(
                "{} / {}",
                t.injected.iter().sum::<u64>(),
                t.survived.iter().sum::<u64>()
            ),
        );
        for (i, name) in FAULT_NAMES.iter().enumerate() {
            row(
                &format!("  {name}"),
                format!("{} / {}", t.injected[i], t.survived[i]),
            );
        }
        row(
            "objects created (by the mix)",
            format!("{}", t.created.iter().sum::<u64>()),
        );
        for (name, created) in OBJECT_NAMES.iter().zip(t.created) {
            row(&format!("  {name}"), format!("{created}"));
        }
        row("semaphore posts and waits", format!("{}", t.sem_ops));
        row("shared mutex locks", format!("{}", t.lock_ops));
        row("  found poisoned (takeovers)", format!("{}", t.takeovers));
        row("shared vector claims", format!("{}", t.claims));
        row("  refused as overlapping", format!("{}", t.overlaps));
        row(
            "  released after their holder died",
            format!("{}", t.dead_claims),
        );
        row("shared barrier rounds", format!("{}", t.rounds));
        row("  barriers broken by a death", format!("{}", t.broken));
        row("shared channel messages", format!("{}", t.messages));
        row("bytes through shared pipes", format!("{}", t.piped));
        row("  broken pipes after a death", format!("{}", t.pipe_breaks));
        if t.failure_count > 0 {
            problems.push(format!("{} checks failed", t.failure_count));
            for f in &t.failures {
                problems.push(format!("failed: {f}"));
            }
        }
        let missing: u64 = t
            .injected
            .iter()
            .zip(&t.survived)
            .map(|(i, s)| i - s.min(i))
            .sum();
        if missing > 0 && t.failure_count == 0 {
            problems.push(format!("{missing} injected faults were not survived"));
        }
    }
    if let Some(e) = &r.run_error {
        problems.push(e.clone());
    }
    // The master truncates its ledger when it ends with nothing live, so the records left
    // are those of objects it could not destroy.
    let left = (leaks.shm.len() + leaks.files.len()) as u64;
    row(
        "objects created / destroyed",
        format!("{} / {}", r.objects, r.objects.saturating_sub(left)),
    );
    row(
        "ledger records left (R / U)",
        format!("{} / {}", r.ledger_registered, r.ledger_destroyed),
    );
    if let Some(e) = &r.ledger_error {
        problems.push(e.clone());
    }
    eprintln!("  leak checks");
    row("  /dev/shm objects left", format!("{}", leaks.shm.len()));
    row("  files left", format!("{}", leaks.files.len()));
    row("  ledger live entries", format!("{}", r.ledger_live.len()));
    row(
        "  master fds before / after",
        format!("{} / {}", r.fds_before, r.fds_after),
    );
    row(
        "  master children left",
        format!("{}", r.children_left.len()),
    );
    row(
        "  process group survivors",
        format!("{}", leaks.survivors.len()),
    );
    row(
        "  stray processes",
        format!("{}", leaks.strays.len() + leaks.children.len()),
    );
    row("leaks found", format!("{leak_count}"));
    let details = [
        ("left in /dev/shm", &leaks.shm),
        ("file left", &leaks.files),
        ("ledger still lists", &r.ledger_live),
        ("fd", &r.fd_changes),
        ("master child left", &r.children_left),
        ("group survivor", &leaks.survivors),
        ("stray", &leaks.strays),
        ("supervisor child left", &leaks.children),
    ];
    for (what, items) in details {
        for item in items {
            problems.push(format!("{what}: {item}"));
        }
    }
    if leak_count > 0 && problems.is_empty() {
        problems.push(format!("{leak_count} leaks"));
    }
    if problems.is_empty() {
        eprintln!("result: ok");
        true
    } else {
        eprintln!("result: FAILED (replay with --seed {seed})");
        for p in &problems {
            eprintln!("  {p}");
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn options_parse_with_defaults() {
        let o = Options::parse(&[]).expect("no arguments");
        assert_eq!(
            (o.processes, o.duration, o.coordinators),
            (Some(10_000), None, 4)
        );
        let o = Options::parse(&args("--duration 2m --seed 7 --no-resources")).expect("parses");
        assert_eq!(o.processes, None);
        assert_eq!(o.duration, Some(Duration::from_secs(120)));
        assert_eq!((o.seed, o.disabled), (Some(7), 0b1_1111_1001_1110_0000));
        let o = Options::parse(&args("--without kill,nest")).expect("parses");
        assert_eq!(o.disabled, 0b1_1000);
        assert!(Options::parse(&args("--without fork")).is_err());
        assert!(Options::parse(&args("--processes")).is_err());
        assert!(Options::parse(&args("--coordinators 0")).is_err());
        assert!(Options::parse(&args("--bogus")).is_err());
    }

    #[test]
    fn objects_named_by_netmcore_give_their_creator() {
        assert_eq!(creator("netmcore-4242-mutex-00ff00ff00ff00ff"), Some(4242));
        assert_eq!(creator("sem.netmcore-17-0123456789abcdef-sem"), Some(17));
        assert_eq!(creator("netmcore-stress-99-shm-1"), None);
        assert_eq!(creator("netmcore-leak-24390-4-shm"), None);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("60s").ok(), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("90").ok(), Some(Duration::from_secs(90)));
        assert_eq!(
            parse_duration("500ms").ok(),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_duration("3m").ok(), Some(Duration::from_secs(180)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5h").is_err());
    }
}
