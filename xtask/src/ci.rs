//! `cargo xtask ci`, `lint` and `test`: the checks CI runs, in order, stopping at the first
//! failure and ending with a table of what ran and how long it took.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// One cargo invocation of the pipeline.
pub struct Step {
    /// A short name for the summary table.
    pub name: &'static str,
    /// The arguments after `cargo`.
    pub args: &'static [&'static str],
    /// Extra environment variables for this step.
    pub env: &'static [(&'static str, &'static str)],
}

const FMT: Step = Step {
    name: "fmt",
    args: &["fmt", "--all", "--check"],
    env: &[],
};
const CLIPPY: Step = Step {
    name: "clippy",
    args: &[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ],
    env: &[],
};
const TEST: Step = Step {
    name: "test",
    args: &["test", "--workspace"],
    env: &[],
};
const DOC: Step = Step {
    name: "doc",
    args: &["doc", "--workspace", "--no-deps"],
    env: &[("RUSTDOCFLAGS", "-D warnings")],
};

/// What `cargo xtask ci` runs.
pub const CI_STEPS: [Step; 4] = [FMT, CLIPPY, TEST, DOC];
/// What `cargo xtask lint` runs.
pub const LINT_STEPS: [Step; 2] = [FMT, CLIPPY];
/// What `cargo xtask test` runs.
pub const TEST_STEPS: [Step; 1] = [TEST];

/// Runs `steps` in order from the workspace root; the first failing step ends the run.
pub fn run(steps: &[Step]) -> anyhow::Result<()> {
    let root = workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut done: Vec<(&str, Duration, bool)> = Vec::new();
    let mut failure = None;
    for step in steps {
        eprintln!("==> cargo {}", step.args.join(" "));
        let started = Instant::now();
        let status = Command::new(&cargo)
            .args(step.args)
            .envs(step.env.iter().copied())
            .current_dir(&root)
            .status()
            .with_context(|| format!("spawn cargo {}", step.args.join(" ")))?;
        done.push((step.name, started.elapsed(), status.success()));
        if !status.success() {
            failure = Some((step.name, status));
            break;
        }
    }
    eprintln!("\n{:<8} {:>9}  result", "step", "seconds");
    for (name, took, ok) in &done {
        let verdict = if *ok { "ok" } else { "FAILED" };
        eprintln!("{name:<8} {:>9.1}  {verdict}", took.as_secs_f64());
    }
    if let Some((name, status)) = failure {
        bail!("step `{name}` failed ({status})");
    }
    Ok(())
}

/// Builds a program of the `netmcore-tests` crate in release mode and runs it with `args`
/// from the workspace root (`cargo run --release -p netmcore-tests --bin <bin> -- <args>`);
/// fails when it does.
pub fn run_tests_program(bin: &str, args: &[String]) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "==> cargo run --release -p netmcore-tests --bin {bin} -- {}",
        args.join(" ")
    );
    let status = Command::new(&cargo)
        .args([
            "run",
            "--quiet",
            "--release",
            "--package",
            "netmcore-tests",
            "--bin",
            bin,
            "--",
        ])
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("spawn cargo run --bin {bin}"))?;
    if !status.success() {
        bail!("the {bin} run failed ({status})");
    }
    Ok(())
}

/// The workspace root: the parent of this crate's manifest directory.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(PathBuf::from)
        .unwrap_or(manifest_dir)
}
