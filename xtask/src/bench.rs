//! `cargo xtask bench`: builds the `bench` program of the `netmcore-tests` crate in release
//! mode and runs it; its exit status is the command's.
//!
//! The program measures the figures of DESIGN.md §6 through the public API, next to the
//! machine's floors (fork + wait, a socket round trip, memcpy, a process-shared pthread mutex,
//! a busy-wait ring in shared memory) taken in the same run, and prints `name value unit` per
//! figure (the median of several repetitions) and `name value ratio` per ratio on stdout, and
//! a summary of the targets met on stderr. An unmet target is a result, not a failure; the
//! command fails only when a measurement broke or left something behind. See
//! `tests/src/bin/bench/main.rs`.

use std::path::PathBuf;

use anyhow::{Context, bail};

use crate::ci::run_tests_program;

/// Builds and runs the bench program with `args` (`--quick`, `--json PATH`).
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let args = check_args(args)?;
    run_tests_program("bench", &args)
}

/// Checks that every option is one `bench` takes and has its value, and returns the
/// arguments to pass on: a relative `--json` path is made absolute against the current
/// directory, since the program runs in the workspace root.
fn check_args(args: &[String]) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::with_capacity(args.len());
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" | "--help" | "-h" => out.push(arg.clone()),
            "--json" => {
                let Some(path) = it.next() else {
                    bail!("--json wants a path\n\n{USAGE}");
                };
                let path = std::path::absolute(PathBuf::from(path))
                    .with_context(|| format!("the absolute path of {path}"))?;
                out.push(arg.clone());
                out.push(path.display().to_string());
            }
            other => bail!("unknown argument `{other}`\n\n{USAGE}"),
        }
    }
    Ok(out)
}

/// The usage line of `cargo xtask bench`.
const USAGE: &str = "usage: cargo xtask bench [--quick] [--json PATH]";

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn arguments_are_checked_before_the_build() {
        assert_eq!(check_args(&args("--quick")).unwrap(), args("--quick"));
        assert!(check_args(&[]).unwrap().is_empty());
        assert!(check_args(&args("--json")).is_err());
        assert!(check_args(&args("--fast")).is_err());
        assert!(check_args(&args("--quick 3")).is_err());
    }

    #[test]
    fn a_relative_json_path_is_made_absolute() {
        let passed = check_args(&args("--json out/bench.json --quick")).unwrap();
        assert_eq!(passed[0], "--json");
        assert!(PathBuf::from(&passed[1]).is_absolute());
        assert!(passed[1].ends_with("out/bench.json"));
        assert_eq!(passed[2], "--quick");
        let absolute = check_args(&args("--json /tmp/b.json")).unwrap();
        assert_eq!(absolute, args("--json /tmp/b.json"));
    }
}
