//! `cargo xtask leak-check`: the crash scenarios of the `leak_check` program of the
//! `netmcore-tests` crate, then the multi-process tests of the test suite, with `/dev/shm`, the
//! process table and this process's open descriptors compared before and after.
//!
//! `/dev/shm` must hold no new entry. A process counts as leaked when it is new, still alive
//! (zombies included) and either a descendant of this process or an orphan whose program lies in
//! the workspace's target directory and which has no other cargo among its ancestors; unrelated
//! processes (the system's, someone else's concurrent cargo runs) are never counted. This process's open descriptors must be back to their starting count.
//!
//! `--valgrind` adds a step: the `memcheck_probe` program of `netmcore-tests`, which drives
//! every layer below the master in one process, runs under valgrind's memcheck, and any block
//! it reports as definitely lost fails the check. The master itself cannot run under valgrind
//! 3.19, which does not know `pidfd_open`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::ci::workspace_root;

/// How long processes and `/dev/shm` entries may take to disappear after the last step.
const GRACE: Duration = Duration::from_secs(5);

/// What is compared before and after.
struct Snapshot {
    /// The entries of `/dev/shm`.
    shm: BTreeSet<String>,
    /// Every process: pid to (state, ppid, command line).
    procs: BTreeMap<u32, (char, u32, String)>,
    /// The number of this process's open descriptors.
    fds: usize,
}

impl Snapshot {
    /// Takes a snapshot now.
    fn take() -> anyhow::Result<Snapshot> {
        let shm = std::fs::read_dir("/dev/shm")
            .context("read /dev/shm")?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let fds = std::fs::read_dir("/proc/self/fd")
            .context("read /proc/self/fd")?
            .count();
        Ok(Snapshot {
            shm,
            procs: processes(),
            fds,
        })
    }
}

/// Every process: pid to (state, ppid, command line).
fn processes() -> BTreeMap<u32, (char, u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let rest = &stat[stat.rfind(')')? + 2..];
            let mut fields = rest.split_whitespace();
            let state = fields.next()?.chars().next()?;
            let ppid = fields.next()?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            Some((pid, (state, ppid, cmdline.trim().to_owned())))
        })
        .collect()
}

/// The target directory cargo builds into.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Builds `memcheck_probe` and runs it under valgrind's memcheck; a definitely lost block or
/// any memcheck error fails.
fn memcheck() -> anyhow::Result<()> {
    cargo(
        &[
            "build",
            "--quiet",
            "-p",
            "netmcore-tests",
            "--bin",
            "memcheck_probe",
        ],
        &[],
    )?;
    let probe = target_dir().join("debug").join("memcheck_probe");
    eprintln!("==> valgrind --tool=memcheck {}", probe.display());
    let status = Command::new("valgrind")
        .args([
            "--tool=memcheck",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite",
            "--error-exitcode=99",
            "--quiet",
        ])
        .arg(&probe)
        .status()
        .context("spawn valgrind (is it installed?)")?;
    match status.code() {
        Some(0) => Ok(()),
        Some(99) => bail!("memcheck found errors or definitely lost blocks (see its report above)"),
        _ => bail!("the probe failed under valgrind ({status})"),
    }
}

/// Runs cargo with `args` in the workspace; fails unless it succeeds.
fn cargo(args: &[&str], envs: &[(&str, PathBuf)]) -> anyhow::Result<()> {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("==> cargo {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (*k, v)))
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("spawn cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Runs the leak check; `args` may hold `--valgrind`.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut valgrind = false;
    for arg in args {
        match arg.as_str() {
            "--valgrind" => valgrind = true,
            other => {
                bail!("unknown argument `{other}`\n\nusage: cargo xtask leak-check [--valgrind]")
            }
        }
    }
    let started = Instant::now();
    let before = Snapshot::take()?;
    let mut steps: Vec<(&str, Result<(), String>, Duration)> = Vec::new();
    let mut step = |name: &'static str, f: &dyn Fn() -> anyhow::Result<()>| {
        let t = Instant::now();
        let outcome = f().map_err(|e| format!("{e:#}"));
        steps.push((name, outcome, t.elapsed()));
    };
    step("build netmcore-admin", &|| {
        cargo(
            &[
                "build",
                "--quiet",
                "--release",
                "-p",
                "netmcore",
                "--bin",
                "netmcore-admin",
            ],
            &[],
        )
    });
    let admin = target_dir().join("release").join("netmcore-admin");
    if valgrind {
        step("valgrind memcheck (memcheck_probe)", &memcheck);
    }
    step("crash scenarios (leak_check)", &|| {
        cargo(
            &[
                "run",
                "--quiet",
                "--release",
                "-p",
                "netmcore-tests",
                "--bin",
                "leak_check",
            ],
            &[("NETMCORE_ADMIN", admin.clone())],
        )
    });
    step("multi-process tests", &|| {
        cargo(
            &[
                "test",
                "--quiet",
                "-p",
                "netmcore-tests",
                "-p",
                "netmcore-master",
                "-p",
                "netmcore-ipc",
                "-p",
                "netmcore-shared",
                "-p",
                "netmcore",
            ],
            &[],
        )
    });

    let me = std::process::id();
    let target = target_dir().display().to_string();
    let leaks = |after: &Snapshot| -> (Vec<String>, Vec<String>) {
        let shm: Vec<String> = after.shm.difference(&before.shm).cloned().collect();
        // Ours: a descendant of this process, or an orphan run from the target directory
        // whose ancestors include no other cargo (someone else's build or test run).
        let ours = |pid: u32| {
            let mut at = pid;
            for _ in 0..64 {
                match after.procs.get(&at) {
                    Some((_, ppid, _)) if *ppid == me => return true,
                    Some((_, _, cmd)) if at != pid && cmd.contains("cargo") => return false,
                    Some((_, ppid, _)) if *ppid > 1 => at = *ppid,
                    _ => break,
                }
            }
            after
                .procs
                .get(&pid)
                .is_some_and(|(_, _, cmd)| cmd.starts_with(&target))
        };
        let procs = after
            .procs
            .iter()
            .filter(|(pid, _)| !before.procs.contains_key(pid) && **pid != me)
            .filter(|(pid, _)| ours(**pid))
            .map(|(pid, (state, _, cmd))| format!("{pid} ({state}) {cmd}"))
            .collect();
        (shm, procs)
    };
    let deadline = Instant::now() + GRACE;
    let (after, (shm, procs)) = loop {
        let after = Snapshot::take()?;
        let found = leaks(&after);
        if (found.0.is_empty() && found.1.is_empty()) || Instant::now() > deadline {
            break (after, found);
        }
        std::thread::sleep(Duration::from_millis(50));
    };

    eprintln!("\nleak-check summary");
    let mut failed = false;
    for (name, outcome, time) in &steps {
        let verdict = match outcome {
            Ok(()) => "ok".to_owned(),
            Err(e) => {
                failed = true;
                format!("FAILED: {e}")
            }
        };
        eprintln!("  {name:<34} {:>7.1} s  {verdict}", time.as_secs_f64());
    }
    let mut row = |label: &str, count: usize, detail: String| {
        failed |= count != 0;
        eprintln!("  {label:<34} {count:>9}  {detail}");
    };
    row("new /dev/shm entries", shm.len(), format!("{shm:?}"));
    row("leftover processes", procs.len(), format!("{procs:?}"));
    row(
        "extra open descriptors",
        after.fds.saturating_sub(before.fds),
        format!("{} before, {} after", before.fds, after.fds),
    );
    eprintln!(
        "  {:<34} {:>7.1} s",
        "wall time",
        started.elapsed().as_secs_f64()
    );
    if !valgrind {
        eprintln!("  (valgrind memcheck: run with --valgrind)");
    }
    if failed {
        bail!("leak-check failed");
    }
    Ok(())
}
