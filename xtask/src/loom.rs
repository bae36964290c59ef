//! `cargo xtask loom`: runs the loom models of the workspace's atomics protocols.
//!
//! The models live in test modules whose names contain `loom`, compiled only under the
//! namespaced cfg `netmcore_loom`. They build in a target directory of their own so that the
//! cfg does not invalidate the normal build.

use std::process::Command;

use anyhow::{Context, bail};

use crate::ci::workspace_root;

/// Crates that contain loom models.
const CRATES: &[&str] = &["netmcore-ipc"];

/// Runs every loom model with `LOOM_MAX_PREEMPTIONS=2` in release mode.
pub fn run() -> anyhow::Result<()> {
    let root = workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    for krate in CRATES {
        eprintln!("==> loom models of {krate}");
        let status = Command::new(&cargo)
            .args(["test", "--release", "--lib", "--package", krate, "loom"])
            .env("RUSTFLAGS", "--cfg netmcore_loom")
            .env("LOOM_MAX_PREEMPTIONS", "2")
            .env("CARGO_TARGET_DIR", root.join("target").join("loom"))
            .current_dir(&root)
            .status()
            .with_context(|| format!("spawn cargo test for the loom models of {krate}"))?;
        if !status.success() {
            bail!("loom models of {krate} failed ({status})");
        }
    }
    Ok(())
}
