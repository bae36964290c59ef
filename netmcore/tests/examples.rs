//! The examples run and print what they promise. `cargo test` builds every example of this
//! package before it runs its tests, into `examples/` beside the directory of this test
//! binary, so each is run from there as a user would run it.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs the example `name` with `args`; returns its standard output, failing if it did not
/// exit with 0.
fn run_example(name: &str, args: &[&str]) -> String {
    run_example_in_group(name, args).0
}

/// Runs the example `name` with `args` in a process group of its own; returns its standard
/// output and its pid (the group's id), failing if it did not exit with 0.
fn run_example_in_group(name: &str, args: &[&str]) -> (String, u32) {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir: PathBuf = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("a target directory")
        .join("examples");
    let child = Command::new(dir.join(name))
        .args(args)
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run the example {name} from {}: {e}", dir.display()));
    let pid = child.id();
    let output = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("cannot run the example {name} from {}: {e}", dir.display()));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{name} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    (stdout, pid)
}

/// The processes of group `pgid` (from `/proc/*/stat`: pid, state, group).
fn processes_in_group(pgid: u32) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            // After the command name in parentheses: state, ppid, pgrp.
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
            fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgid)
        })
        .collect()
}

/// The netmcore objects in `/dev/shm` now.
fn netmcore_shm_objects() -> BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains("netmcore"))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits up to `limit` until `done` holds; whether it did.
fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Runs `nqueens` with `args` and checks that it left no process of its group and nothing in
/// `/dev/shm` (an object that another test made meanwhile goes away within the grace period;
/// one left by this run does not). Returns its output.
fn run_nqueens(args: &[&str]) -> String {
    let before = netmcore_shm_objects();
    let (out, pgid) = run_example_in_group("nqueens", args);
    assert!(
        eventually(Duration::from_secs(10), || processes_in_group(pgid)
            .is_empty()),
        "nqueens {args:?} left processes: {:?}",
        processes_in_group(pgid)
    );
    let new = || -> Vec<String> {
        netmcore_shm_objects()
            .difference(&before)
            .cloned()
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(5), || new().is_empty()),
        "nqueens {args:?} left in /dev/shm: {:?}",
        new()
    );
    out
}

/// The count that `nqueens` printed for `mode` (its line is `MODE COUNT solutions ...`).
fn nqueens_count(out: &str, mode: &str) -> Option<u64> {
    out.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some(mode)).then(|| words.next()?.parse().ok())?
    })
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

#[test]
fn nqueens_counts_12_and_92_in_every_mode_and_leaves_nothing() {
    for (n, classes) in [("8", 12), ("10", 92)] {
        let all = run_nqueens(&[n]);
        assert!(all.contains(&format!("nqueens {n}: ")), "{all}");
        for mode in ["sequential", "shared", "channel"] {
            assert_eq!(nqueens_count(&all, mode), Some(classes), "{all}");
            let alone = run_nqueens(&[n, mode]);
            assert_eq!(nqueens_count(&alone, mode), Some(classes), "{alone}");
            let others = alone.lines().filter(|l| l.contains("solutions  "));
            assert_eq!(others.count(), 1, "{mode} alone ran one mode:\n{alone}");
        }
    }
}

/// The sieve of the `primes` example, whose unit tests run here.
#[path = "../examples/primes/sieve.rs"]
mod primes_sieve;

/// `primes 2000000` counts 148,933 primes with a pool per core and with one worker, prints
/// both times and the speed-up, and leaves no process and nothing in `/dev/shm`.
#[test]
fn primes_counts_below_two_million_with_a_pool_and_leaves_nothing() {
    assert_eq!(
        primes_sieve::count_primes_in(0, primes_sieve::BLOCK),
        82_025
    );
    let before = netmcore_shm_objects();
    let (out, pgid) = run_example_in_group("primes", &["2000000"]);
    assert!(out.contains("primes below 2000000: 148933\n"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("1 worker ") && l.contains("speed-up")),
        "{out}"
    );
    assert!(
        eventually(Duration::from_secs(5), || processes_in_group(pgid)
            .is_empty()),
        "primes left processes: {:?}",
        processes_in_group(pgid)
    );
    // Other tests of this binary run at the same time and make objects of their own, which
    // go away within the grace period; one left by this run does not.
    let left = || -> Vec<String> {
        netmcore_shm_objects()
            .difference(&before)
            .cloned()
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(10), || left().is_empty()),
        "primes left in /dev/shm: {:?}",
        left()
    );
    let out = run_example("primes", &["100000", "3"]);
    assert!(out.contains("primes below 100000: 9592\n"), "{out}");
    assert!(out.contains("3 workers "), "{out}");
}

/// `chameneos 6000` prints the complements table and both games, each creature's meetings
/// summing to twice the meetings and the total spelled.
#[test]
fn chameneos_prints_the_table_and_two_games_of_6000_meetings() {
    let out = run_example("chameneos", &["6000"]);
    let lines: Vec<&str> = out.lines().collect();
    // The complements table, then each game: a blank line, the colours, a line per creature,
    // the total spelled, the summary.
    assert_eq!(lines.len(), 9 + (4 + 3) + (4 + 10), "{out}");
    assert_eq!(lines[0], "blue + blue -> blue", "{out}");
    assert_eq!(lines[1], "blue + red -> yellow", "{out}");
    assert_eq!(lines[5], "red + yellow -> blue", "{out}");
    assert_eq!(lines[8], "yellow + yellow -> yellow", "{out}");
    let mut at = 9;
    for colours in [
        " blue red yellow",
        " blue red yellow red yellow blue red yellow red blue",
    ] {
        let creatures = colours.split_whitespace().count();
        assert_eq!(lines[at], "", "{out}");
        assert_eq!(lines[at + 1], colours, "{out}");
        let mut sum = 0;
        for line in &lines[at + 2..at + 2 + creatures] {
            let (meetings, self_meetings) = line.split_once(' ').expect("count and spelling");
            sum += meetings.parse::<u64>().expect("a count of meetings");
            assert_eq!(self_meetings, "zero", "{out}");
        }
        assert_eq!(sum, 12_000, "{out}");
        assert_eq!(
            lines[at + 2 + creatures],
            " one two zero zero zero",
            "{out}"
        );
        let summary = lines[at + 3 + creatures];
        assert!(
            summary.starts_with(&format!("{creatures} creatures: 6000 meetings in ")),
            "{out}"
        );
        assert!(summary.ends_with(" meetings/s"), "{out}");
        at += creatures + 4;
    }
}
