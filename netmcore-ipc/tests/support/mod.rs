//! Shared support of the multi-process tests of netmcore-ipc.
//!
//! A multi-process test binary has `harness = false`: its `main` is single-threaded, so it may
//! fork safely. [`run_cases`] runs each case in a forked process of its own, so that a case
//! which crashes, or leaves a child behind, cannot disturb the next one, and checks after each
//! case that nothing with the case's prefix is left in `/dev/shm`.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the support code"
)]

pub mod sys;

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

/// One named case of a multi-process test binary.
pub struct Case {
    /// The name a filter argument matches against.
    pub name: &'static str,
    /// The body; a panic fails the case.
    pub run: fn(),
}

/// The prefix every OS object of this test process is named with; cases check it in
/// `/dev/shm` afterwards.
pub fn prefix() -> String {
    format!("netmcore-test-{}", std::process::id())
}

/// A fresh object name under [`prefix`], e.g. `/netmcore-test-123-shm-4`.
pub fn unique_name(tag: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "/{}-{tag}-{}",
        prefix(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Entries of `/dev/shm` (shm objects and `sem.`-prefixed semaphores) whose names contain
/// `needle`.
pub fn shm_leftovers(needle: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/dev/shm") else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(needle))
        .collect()
}

/// Runs every case whose name contains the first non-flag argument (all when there is none),
/// each in a forked child; prints a line per case and returns failure if any case failed or
/// left an object in `/dev/shm`.
pub fn run_cases(cases: &[Case]) -> ExitCode {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let mut failed = Vec::new();
    let mut ran = 0;
    for case in cases {
        if filter.as_deref().is_some_and(|f| !case.name.contains(f)) {
            continue;
        }
        ran += 1;
        let outcome = sys::fork_child(|| {
            // Objects of this case are named after the child's pid (see `prefix`).
            match std::panic::catch_unwind(case.run) {
                Ok(()) => 0,
                Err(_) => 101,
            }
        })
        .wait();
        let child_prefix = format!("netmcore-test-{}", outcome.pid);
        let left = shm_leftovers(&child_prefix);
        for name in &left {
            let _ = std::fs::remove_file(format!("/dev/shm/{name}"));
        }
        let verdict = match (&outcome.status, left.is_empty()) {
            (sys::Status::Exited(0), true) => "ok",
            (sys::Status::Exited(0), false) => "FAILED (left objects in /dev/shm)",
            _ => "FAILED",
        };
        println!("test {} ... {verdict} ({:?})", case.name, outcome.status);
        if !left.is_empty() {
            println!("    left in /dev/shm: {left:?}");
        }
        if verdict != "ok" {
            failed.push(case.name);
        }
    }
    println!("\n{} cases run, {} failed", ran, failed.len());
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("failed: {failed:?}");
        ExitCode::FAILURE
    }
}
