//! Counts the solutions of the n-queens problem up to symmetry — the ways to put `n` queens
//! on an `n` × `n` board with none attacking another, two ways counting once when a rotation or
//! a reflection of the board turns one into the other — in one process and in parallel worker
//! processes, and prints how long each mode took.
//!
//! ```text
//! cargo run --release --example nqueens               # n = 12, every mode
//! cargo run --release --example nqueens -- 10         # n = 10
//! cargo run --release --example nqueens -- 10 shared  # n = 10, one mode
//! ```
//!
//! The modes:
//!
//! * `sequential`: the whole search in one process, the canonical forms in a `std` set.
//! * `shared`: one worker process per core. The search is split into *openings* (the queens of
//!   the first two rows); each worker takes the next opening from a counter in a
//!   `SharedAtomics` until none is left, and inserts the canonical form of every solution it
//!   finds into a `shared::HashSet<u64>` that every worker opens by handle. The count is the
//!   size of the set.
//!
//! The search backtracks over bit masks (columns and both diagonals) and computes the
//! canonical form — the smallest key of the eight images of a solution — only for solutions.
//! The program turns itself into a netmcore master; its first process, the coordinator, runs
//! the modes, checks that they agree and prints:
//!
//! ```text
//! nqueens 12: solutions up to symmetry, 2 workers
//! sequential  1787 solutions  0.006 s
//! shared      1787 solutions  0.004 s  speed-up 1.50
//! ```
//!
//! Each time covers the whole mode: for `shared`, creating the counter and the set, starting
//! and joining the workers. The socket directory of the master is a fresh directory under the
//! system's temporary directory, named after the process, and removed at the end. This is
//! OCamlnet's `nqueens` example over netmcore's shared structures.

mod board;
mod parallel;

use std::io::Write as _;
use std::time::Instant;

use anyhow::{Context as _, ensure};
use netmcore::Config;
use serde::{Deserialize, Serialize};

/// The size when none is given.
const DEFAULT_SIZE: usize = 12;

/// A way to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Mode {
    Sequential,
    Shared,
}

impl Mode {
    /// Every mode, in the order they run.
    const ALL: [Mode; 2] = [Mode::Sequential, Mode::Shared];

    /// The name on the command line and in the output.
    fn name(self) -> &'static str {
        match self {
            Mode::Sequential => "sequential",
            Mode::Shared => "shared",
        }
    }
}

/// What the coordinator gets: the size, the modes to run and how many processes search in
/// the parallel modes.
#[derive(Debug, Serialize, Deserialize)]
struct Job {
    n: usize,
    modes: Vec<Mode>,
    searchers: usize,
}

/// The command line: `[SIZE] [MODE]`, in either order.
fn parse(args: &[String]) -> Result<(usize, Vec<Mode>), String> {
    let mut n = None;
    let mut modes = None;
    for arg in args {
        if let Ok(size) = arg.parse::<usize>() {
            if !(1..=board::MAX_SIZE).contains(&size) || n.is_some() {
                return Err(format!("bad size {arg}"));
            }
            n = Some(size);
        } else if arg == "all" && modes.is_none() {
            modes = Some(Mode::ALL.to_vec());
        } else {
            let mode = Mode::ALL
                .into_iter()
                .find(|m| m.name() == arg)
                .filter(|_| modes.is_none())
                .ok_or_else(|| format!("bad mode {arg}"))?;
            modes = Some(vec![mode]);
        }
    }
    Ok((
        n.unwrap_or(DEFAULT_SIZE),
        modes.unwrap_or_else(|| Mode::ALL.to_vec()),
    ))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (n, modes) = match parse(&args) {
        Ok(parsed) => parsed,
        Err(problem) => {
            let names: Vec<&str> = Mode::ALL.iter().map(|m| m.name()).collect();
            eprintln!(
                "nqueens: {problem}\nusage: nqueens [SIZE] [MODE]   (SIZE 1 to {}, default \
                 {DEFAULT_SIZE}; MODE one of {}, or all, the default)",
                board::MAX_SIZE,
                names.join(", ")
            );
            std::process::exit(2);
        }
    };
    let searchers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);

    // Process types are defined before startup: the workers are forked from the master and
    // find the bodies in their copy of its memory.
    let set_worker = parallel::def_set_worker()?;
    let coordinator = netmcore::process::def_process(move |job: Job| -> Result<(), String> {
        run_modes(&set_worker, &job).map_err(|e| format!("{e:#}"))
    })?;

    let socket_dir = std::env::temp_dir().join(format!("netmcore-nqueens-{}", std::process::id()));
    let job = Job {
        n,
        modes,
        searchers,
    };
    let outcome = netmcore::run(Config::new(&socket_dir), &coordinator, &job);
    let _ = std::fs::remove_dir_all(&socket_dir);
    outcome?
        .context("the coordinator ended without a result")?
        .map_err(anyhow::Error::msg)
}

/// In the coordinator: runs each mode of `job`, timed, and checks that they agree.
fn run_modes(set_worker: &parallel::SetWorker, job: &Job) -> anyhow::Result<()> {
    let n = job.n;
    println!(
        "nqueens {n}: solutions up to symmetry; {} processes in the parallel modes",
        job.searchers
    );
    let mut first: Option<(usize, f64)> = None;
    for &mode in &job.modes {
        let started = Instant::now();
        let count = match mode {
            Mode::Sequential => board::sequential(n),
            Mode::Shared => parallel::count_with_set(set_worker, n, job.searchers)?,
        };
        let seconds = started.elapsed().as_secs_f64();
        print!("{:<11} {count} solutions  {seconds:.3} s", mode.name());
        match first {
            None => first = Some((count, seconds)),
            Some((expected, base)) => {
                print!("  speed-up {:.2}", base / seconds.max(1e-9));
                ensure!(
                    count == expected,
                    "{} counted {count}, {} counted {expected}",
                    mode.name(),
                    job.modes[0].name()
                );
            }
        }
        println!();
        let _ = std::io::stdout().flush();
    }
    Ok(())
}
