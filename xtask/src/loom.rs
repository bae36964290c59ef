//! `cargo xtask loom`: runs the loom models of the workspace's atomics protocols.
//!
//! The models live in test modules whose names contain `loom`, compiled only under the
//! namespaced cfg `netmcore_loom`. They build in a target directory of their own so that the
//! cfg does not invalidate the normal build.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

use crate::ci::workspace_root;

/// Crates that contain loom models.
const CRATES: &[&str] = &["netmcore-ipc", "netmcore-shared"];

/// Runs every loom model with `LOOM_MAX_PREEMPTIONS=2` in release mode.
pub fn run() -> anyhow::Result<()> {
    let root = workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut rows = Vec::new();
    for krate in CRATES {
        eprintln!("==> loom models of {krate} (LOOM_MAX_PREEMPTIONS=2, release)");
        let started = Instant::now();
        let status = Command::new(&cargo)
            .args(["test", "--release", "--lib", "--package", krate, "loom"])
            .env("RUSTFLAGS", "--cfg netmcore_loom")
            .env("LOOM_MAX_PREEMPTIONS", "2")
            .env("CARGO_TARGET_DIR", root.join("target").join("loom"))
            .current_dir(&root)
            .status()
            .with_context(|| format!("spawn cargo test for the loom models of {krate}"))?;
        rows.push((*krate, started.elapsed().as_secs_f64(), status.success()));
    }
    eprintln!("\n{:<20} {:>9}  result", "crate", "seconds");
    for (krate, secs, ok) in &rows {
        eprintln!(
            "{krate:<20} {secs:>9.1}  {}",
            if *ok { "ok" } else { "FAILED" }
        );
    }
    let failed: Vec<&str> = rows.iter().filter(|r| !r.2).map(|r| r.0).collect();
    if !failed.is_empty() {
        bail!("loom models failed in {}", failed.join(", "));
    }
    Ok(())
}
