//! `cargo xtask stress`: builds the `stress` program of the `netmcore-tests` crate in release
//! mode and runs it with the given arguments; its exit status is the command's.
//!
//! The program runs a random mix of processes, faults, resource traffic and structures in
//! shared memory under one master, checks every result, reports a run that stops making
//! progress (a deadlock) as a failure, and checks afterwards that nothing is left: objects in
//! `/dev/shm` (the segments netmcore names included), processes, descriptors of the master,
//! entries of the ledger. It prints its seed, a live counter (plain lines when stderr is not
//! a terminal) and a summary table; see `tests/src/bin/stress/main.rs`.

use anyhow::bail;

use crate::ci::run_tests_program;

/// The options `stress` takes; others are refused here, before the build.
const OPTIONS: &[&str] = &[
    "--processes",
    "--duration",
    "--seed",
    "--coordinators",
    "--wave",
    "--without",
    "--stall",
];

/// Builds and runs the stress program with `args` (`--processes N`, `--duration D`,
/// `--seed S`, and the program's other options).
pub fn run(args: &[String]) -> anyhow::Result<()> {
    check_args(args)?;
    run_tests_program("stress", args)
}

/// Checks that every option is one `stress` takes and has its value.
fn check_args(args: &[String]) -> anyhow::Result<()> {
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--no-resources" | "--help" | "-h" => {}
            option if OPTIONS.contains(&option) => {
                if it.next().is_none() {
                    bail!("{option} wants a value\n\n{USAGE}");
                }
            }
            other => bail!("unknown argument `{other}`\n\n{USAGE}"),
        }
    }
    Ok(())
}

/// The usage line of `cargo xtask stress`.
const USAGE: &str = "usage: cargo xtask stress [--processes N] [--duration D] [--seed S] \
                     [--coordinators K] [--wave W] [--without ACTIONS] [--no-resources] [--stall D]";

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn arguments_are_checked_before_the_build() {
        assert!(check_args(&args("--processes 1000 --seed 7")).is_ok());
        assert!(check_args(&args("--duration 60s --no-resources")).is_ok());
        assert!(check_args(&args("--processes")).is_err());
        assert!(check_args(&args("--fast")).is_err());
    }
}
