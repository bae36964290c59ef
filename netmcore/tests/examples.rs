//! The examples run and print what they promise. `cargo test` builds every example of this
//! package before it runs its tests, into `examples/` beside the directory of this test
//! binary, so each is run from there as a user would run it.

use std::path::PathBuf;
use std::process::Command;

/// Runs the example `name` with `args`; returns its standard output, failing if it did not
/// exit with 0.
fn run_example(name: &str, args: &[&str]) -> String {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir: PathBuf = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("a target directory")
        .join("examples");
    let output = Command::new(dir.join(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the example {name} from {}: {e}", dir.display()));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{name} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn sum_of_squares_prints_385() {
    let out = run_example("sum_of_squares", &[]);
    assert!(out.contains("385"), "{out}");
}

#[test]
fn shared_counter_counts_exactly_and_recovers_a_poisoned_lock() {
    let out = run_example("shared_counter", &[]);
    assert!(out.contains("4 workers x 50000 rounds = 200000"), "{out}");
    assert!(out.contains("the lock came back poisoned"), "{out}");
    assert!(
        out.contains("repaired and unpoisoned; the count is still 200000"),
        "{out}"
    );
    assert!(out.contains("nothing left in /dev/shm"), "{out}");
}

#[test]
fn matmul_computes_the_sequential_product_in_every_band_count() {
    let out = run_example("matmul", &["40"]);
    assert!(out.contains("matmul 40 x 40"), "{out}");
    assert!(
        out.contains("workers=1") && out.contains("workers=2"),
        "{out}"
    );
    assert!(
        out.contains("every product equals the sequential one"),
        "{out}"
    );
}

#[test]
fn pipeline_streams_1_mib_and_the_checksums_match() {
    let out = run_example("pipeline", &["1048576"]);
    assert!(out.contains("pipeline: 1048576 bytes in"), "{out}");
    assert!(out.contains("the checksums match"), "{out}");
}
