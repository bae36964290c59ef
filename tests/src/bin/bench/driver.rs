//! The driver: runs each measurement in a measuring process of its own, times the whole runs
//! of `startup_shutdown_ms`, prints the medians and ratios, and checks that nothing is left
//! behind (no process of this program but the driver, no new object in `/dev/shm`).

use std::collections::BTreeSet;
use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::process::{Pid, PidfdFlags, pidfd_open};

use crate::report::{self, Machine, Medians};
use crate::{JOBS, Options};

/// Repetitions of every figure, each one sample of its median.
const REPS_QUICK: usize = 5;
const REPS_FULL: usize = 21;

/// How long a measuring process may take before it counts as hung and is killed.
const TIMEOUT_QUICK: Duration = Duration::from_secs(60);
const TIMEOUT_FULL: Duration = Duration::from_secs(180);

/// How long the processes and `/dev/shm` objects of a finished measurement get to go away.
const GRACE: Duration = Duration::from_secs(5);

/// Runs every measurement and reports. `Ok(false)` when something broke (the figures that
/// could be measured are still reported).
pub fn run(options: &Options) -> anyhow::Result<bool> {
    let started = Instant::now();
    let exe = std::env::current_exe().context("the path of this program")?;
    let machine = Machine::this();
    let reps = if options.quick { REPS_QUICK } else { REPS_FULL };
    let timeout = if options.quick {
        TIMEOUT_QUICK
    } else {
        TIMEOUT_FULL
    };
    let shm_before = shm_names();
    eprintln!(
        "bench: {} run on {} ({} cores); every figure is the median of {reps} repetitions",
        if options.quick { "quick" } else { "full" },
        machine.cpu,
        machine.cores
    );

    let mut medians = Medians::default();
    let cores = machine.cores as f64;
    medians.insert("cores", cores);
    println!("{}", report::figure_line("cores", cores));
    let mut broke = Vec::new();
    for job in &JOBS {
        let began = Instant::now();
        let mut command = Command::new(&exe);
        command.args(["--child", job.name, "--reps", &reps.to_string()]);
        if options.quick {
            command.arg("--quick");
        }
        let outcome = measure(command, timeout)
            .and_then(|(samples, _)| record(&mut medians, job.figures, &samples));
        if let Err(e) = outcome {
            eprintln!("bench: {} broke: {e:#}", job.name);
            broke.push(job.name);
        }
        eprintln!("  ({}: {:.1} s)", job.name, began.elapsed().as_secs_f64());
        if let Err(e) = no_stray_processes(&exe) {
            eprintln!("bench: after {}: {e:#}", job.name);
            broke.push("stray processes");
        }
    }

    let began = Instant::now();
    match startup_shutdown(&exe, reps, timeout, &mut medians) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("bench: startup_shutdown broke: {e:#}");
            broke.push("startup_shutdown");
        }
    }
    eprintln!(
        "  (startup_shutdown: {:.1} s)",
        began.elapsed().as_secs_f64()
    );
    if let Err(e) = no_stray_processes(&exe) {
        eprintln!("bench: after startup_shutdown: {e:#}");
        broke.push("stray processes");
    }

    let ratios = report::ratios(&medians);
    for ratio in &ratios {
        println!("{}", report::ratio_line(ratio));
    }
    eprint!("\n{}", report::summary(&medians, &ratios));

    if let Err(e) = nothing_new_in_dev_shm(&shm_before) {
        eprintln!("bench: {e:#}");
        broke.push("/dev/shm");
    }
    if let Some(path) = &options.json {
        let text = report::json(&medians, &ratios, &machine, reps, options.quick);
        match std::fs::write(path, text) {
            Ok(()) => eprintln!("bench: wrote {}", path.display()),
            Err(e) => {
                eprintln!("bench: write {}: {e}", path.display());
                broke.push("json");
            }
        }
    }
    eprintln!(
        "bench: done in {:.1} s{}",
        started.elapsed().as_secs_f64(),
        if broke.is_empty() {
            String::new()
        } else {
            format!("; broke: {}", broke.join(", "))
        }
    );
    Ok(broke.is_empty())
}

/// Records the medians of `expected` figures from `samples`, printing each figure's line on
/// stdout and its samples on stderr.
fn record(
    medians: &mut Medians,
    expected: &[&'static str],
    samples: &[(String, f64)],
) -> anyhow::Result<()> {
    for &name in expected {
        let values: Vec<f64> = samples
            .iter()
            .filter(|(n, _)| n == name)
            .map(|&(_, v)| v)
            .collect();
        let median = report::median(&values).with_context(|| format!("no sample of {name}"))?;
        medians.insert(name, median);
        println!("{}", report::figure_line(name, median));
        let shown: Vec<String> = values.iter().map(|&v| report::format_value(v)).collect();
        eprintln!("  {name}: median of [{}]", shown.join(", "));
    }
    Ok(())
}

/// Runs `command` as a measuring process in a process group of its own, with its stdout
/// piped; returns its `sample` lines and how long it took from spawn to exit.
///
/// # Errors
///
/// When it cannot be spawned, hangs past `timeout` (it is then killed), or fails.
fn measure(mut command: Command, timeout: Duration) -> anyhow::Result<(Vec<(String, f64)>, f64)> {
    command.stdout(Stdio::piped()).process_group(0);
    let start = Instant::now();
    let mut child = command.spawn().context("spawn a measuring process")?;
    let Some((status, ended)) = wait_timeout(&mut child, timeout)? else {
        let _ = child.kill();
        let _ = child.wait();
        bail!("no end after {timeout:?}: killed");
    };
    let elapsed_ms = ended.duration_since(start).as_secs_f64() * 1e3;
    // The output is complete once the process ended; it is read without waiting for the end
    // of the pipe, which a stray worker could hold open.
    let text = child
        .stdout
        .take()
        .map(read_available)
        .transpose()?
        .unwrap_or_default();
    if !status.success() {
        bail!("the measuring process failed ({status})");
    }
    Ok((parse_samples(&text)?, elapsed_ms))
}

/// Waits for `child` to end, at most `timeout`; the status and the moment it ended, or
/// `None` on timeout.
fn wait_timeout(
    child: &mut Child,
    timeout: Duration,
) -> anyhow::Result<Option<(ExitStatus, Instant)>> {
    let pidfd = pidfd_open(Pid::from_child(child), PidfdFlags::empty()).context("pidfd_open")?;
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        let left = Timespec::try_from(left).context("a timeout as a timespec")?;
        let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
        match poll(&mut fds, Some(&left)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => {}
            Ok(_) => {
                let ended = Instant::now();
                return Ok(Some((child.wait().context("wait")?, ended)));
            }
            Err(e) => return Err(e).context("poll on a pidfd"),
        }
    }
}

/// What is in the pipe `out` now, without waiting for more.
fn read_available(mut out: std::process::ChildStdout) -> anyhow::Result<String> {
    rustix::io::ioctl_fionbio(&out, true).context("ioctl(FIONBIO) on the pipe")?;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match out.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("read the measuring process's output"),
        }
    }
    String::from_utf8(bytes).context("the measuring process's output is not UTF-8")
}

/// The `sample NAME VALUE` lines of `text` (other lines are ignored).
fn parse_samples(text: &str) -> anyhow::Result<Vec<(String, f64)>> {
    text.lines()
        .filter_map(|line| line.strip_prefix("sample "))
        .map(|rest| {
            let (name, value) = rest
                .split_once(' ')
                .with_context(|| format!("a malformed sample line: {rest}"))?;
            let value: f64 = value
                .trim()
                .parse()
                .with_context(|| format!("a malformed value: {rest}"))?;
            Ok((name.to_owned(), value))
        })
        .collect()
}

/// `startup_shutdown_ms` and `startup_shutdown_inproc_ms`: `reps` whole runs of this program
/// with `--startup-once` (after one unmeasured run), each timed from spawn to exit.
fn startup_shutdown(
    exe: &Path,
    reps: usize,
    timeout: Duration,
    medians: &mut Medians,
) -> anyhow::Result<()> {
    let mut samples = Vec::new();
    for rep in 0..=reps {
        let mut command = Command::new(exe);
        command.arg("--startup-once");
        let (inproc, whole_ms) = measure(command, timeout)?;
        if rep > 0 {
            samples.push(("startup_shutdown_ms".to_owned(), whole_ms));
            samples.extend(inproc);
        }
    }
    record(
        medians,
        &["startup_shutdown_ms", "startup_shutdown_inproc_ms"],
        &samples,
    )
}

/// Waits (at most [`GRACE`]) until no process but this one runs this program; the leftovers
/// are an error.
fn no_stray_processes(exe: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + GRACE;
    loop {
        let strays = others_running(exe);
        if strays.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("processes of this program are still running: {strays:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Processes other than this one whose executable is `exe`.
fn others_running(exe: &Path) -> Vec<String> {
    let own = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != own)
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|path| path == exe))
        .map(|pid| {
            netmcore_tests::procs::Proc::read(i32::try_from(pid).unwrap_or(-1))
                .map_or_else(|| format!("pid {pid}"), |p| p.describe())
        })
        .collect()
}

/// The names in `/dev/shm` that mention netmcore.
fn shm_names() -> BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains("netmcore"))
                .collect()
        })
        .unwrap_or_default()
}

/// Checks that no netmcore object appeared in `/dev/shm` during the run and stayed (after
/// [`GRACE`]). Objects named by this benchmark (`netmcore-bench-…`) and library objects
/// (`netmcore-<pid>-…`) of a process that no longer exists count; other new objects, which
/// a concurrent test run may own, are only mentioned.
fn nothing_new_in_dev_shm(before: &BTreeSet<String>) -> anyhow::Result<()> {
    let deadline = Instant::now() + GRACE;
    loop {
        let new: Vec<String> = shm_names().difference(before).cloned().collect();
        let (ours, others): (Vec<String>, Vec<String>) =
            new.into_iter().partition(|name| left_by_us(name));
        if ours.is_empty() {
            if !others.is_empty() {
                eprintln!(
                    "bench: note: new netmcore objects in /dev/shm that another live process \
                     owns: {others:?}"
                );
            }
            eprintln!("bench: nothing of this run is left in /dev/shm");
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("left in /dev/shm: {ours:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a new `/dev/shm` entry is a leftover of this run: named by the benchmark, or by
/// the library for a process that is gone.
fn left_by_us(name: &str) -> bool {
    let name = name.strip_prefix("sem.").unwrap_or(name);
    if name.starts_with("netmcore-bench-") {
        return true;
    }
    let pid = name
        .strip_prefix("netmcore-")
        .and_then(|rest| rest.split('-').next())
        .and_then(|pid| pid.parse::<u32>().ok());
    pid.is_some_and(|pid| !PathBuf::from(format!("/proc/{pid}")).exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_lines_are_parsed_and_other_lines_ignored() {
        let text = "sample spawn_join_us 120.5\nnoise\nsample cores 2\n";
        let samples = parse_samples(text).unwrap();
        assert_eq!(
            samples,
            vec![
                ("spawn_join_us".to_owned(), 120.5),
                ("cores".to_owned(), 2.0)
            ]
        );
        assert!(parse_samples("sample spawn_join_us fast\n").is_err());
        assert!(parse_samples("sample lonely\n").is_err());
    }

    #[test]
    fn leftovers_are_told_apart() {
        assert!(left_by_us("netmcore-bench-12-shm-00ff"));
        assert!(left_by_us("sem.netmcore-bench-12-x"));
        // The library's name of a live process (this one) may belong to someone else.
        assert!(!left_by_us(&format!(
            "netmcore-{}-0123456789abcdef-shm",
            std::process::id()
        )));
        assert!(!left_by_us("netmcore-test-x"));
    }
}
