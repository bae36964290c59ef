//! Repository automation for netmcore, run as `cargo xtask <command>`.
//!
//! Each subcommand lives in a module of its own. The repository's hygiene rules are ordinary
//! `#[test]`s in `tidy.rs`, so a plain `cargo test --workspace` keeps them.
#![deny(unsafe_code)]

mod bench;
mod ci;
mod leak_check;
mod loom;
mod prop;
mod stress;
#[cfg(test)]
mod tidy;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  ci      fmt --check, clippy -D warnings, test, doc -D warnings (what CI runs)
  lint    fmt --check and clippy -D warnings
  test    cargo test --workspace (includes the tidy checks)
  loom    the loom models (cfg netmcore_loom, LOOM_MAX_PREEMPTIONS=2, --release)
  prop    every property test with PROPTEST_CASES (default 10000; --cases N)
  stress  a random mix of processes, faults and resources, checked for leaks
          ([--processes N] [--duration D] [--seed S]; default 10000 processes)
  leak-check  crash scenarios and the multi-process tests, checked for leftover shm
          objects, processes and descriptors
  bench   the performance figures (README, Performance) next to the machine's floors, as
          `name value unit` lines, ratios and a table of targets met
          ([--quick] under 30 s; [--json PATH] also writes them as JSON)
  help    print this text";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci::run(&ci::CI_STEPS),
        Some("lint") => ci::run(&ci::LINT_STEPS),
        Some("test") => ci::run(&ci::TEST_STEPS),
        Some("loom") => loom::run(),
        Some("prop") => prop::run(&args[1..]),
        Some("stress") => stress::run(&args[1..]),
        Some("leak-check") => leak_check::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("help" | "-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(anyhow::anyhow!("unknown command `{other}`\n\n{USAGE}")),
        None => Err(anyhow::anyhow!("no command given\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}
