//! `cargo xtask prop`: every property test of the workspace with a high case count.
//!
//! Property tests read `PROPTEST_CASES` (proptest's default configuration does, and the tests
//! with their own configuration go through a `cases(default)` helper that does too). The run
//! builds in release mode, since the properties are CPU-bound.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

use crate::ci::workspace_root;

/// The crates with property tests: encap round trips and decoding, the registry model and
/// ledger replay, wire and frame decoding of arbitrary and mutated input, segment headers.
const CRATES: &[&str] = &[
    "netmcore-encap",
    "netmcore-resources",
    "netmcore-ipc",
    "netmcore-shared",
];

/// The default number of cases per property.
const DEFAULT_CASES: u32 = 10_000;

/// Runs the property tests; `args` may hold `--cases N`.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let cases = match args {
        [] => DEFAULT_CASES,
        [flag, n] if flag == "--cases" => n
            .parse()
            .with_context(|| format!("--cases wants a number, got `{n}`"))?,
        _ => bail!("usage: cargo xtask prop [--cases N]"),
    };
    let root = workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut rows = Vec::new();
    for krate in CRATES {
        eprintln!("==> property tests of {krate} with PROPTEST_CASES={cases}");
        let started = Instant::now();
        let status = Command::new(&cargo)
            .args(["test", "--release", "--package", krate, "--lib", "--tests"])
            .env("PROPTEST_CASES", cases.to_string())
            .current_dir(&root)
            .status()
            .with_context(|| format!("spawn cargo test for {krate}"))?;
        rows.push((*krate, started.elapsed().as_secs_f64(), status.success()));
    }
    eprintln!(
        "\n{:<20} {:>9}  result   (PROPTEST_CASES={cases})",
        "crate", "seconds"
    );
    for (krate, secs, ok) in &rows {
        eprintln!(
            "{krate:<20} {secs:>9.1}  {}",
            if *ok { "ok" } else { "FAILED" }
        );
    }
    let failed: Vec<&str> = rows.iter().filter(|r| !r.2).map(|r| r.0).collect();
    if !failed.is_empty() {
        bail!("property tests failed in {}", failed.join(", "));
    }
    Ok(())
}
