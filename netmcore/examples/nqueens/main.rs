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
//! * `shared`: one process per core searches. The search is split into *openings* (the queens
//!   of the first three rows); each process takes the next opening from a counter in a
//!   `SharedAtomics` until none is left, and inserts the canonical form of every solution it
//!   finds into a `shared::HashSet<u64>` that every process opens by handle. The count is the
//!   size of the set. The coordinator is one of the searching processes.
//! * `channel`: one worker per core takes openings the same way and sends the canonical forms,
//!   in batches, over a `shared::channel` to the coordinator, which keeps them in a `std` set
//!   until the channel disconnects (every worker has dropped its sender).
//!
//! The search backtracks over bit masks (columns and both diagonals), leaves out the first
//! queens right of the middle (their mirror images are in the same classes), and computes the
//! canonical form — the smallest key of the eight images of a solution — only for solutions.
//! The program turns itself into a netmcore master; its first process, the coordinator, runs
//! the modes, checks that they agree and prints:
//!
//! ```text
//! nqueens 12: solutions up to symmetry; 2 processes in the parallel modes
//! sequential  1787 solutions  4.41 ms
//! shared      1787 solutions  3.62 ms  speed-up 1.22
//! channel     1787 solutions  3.55 ms  speed-up 1.24
//! ```
//!
//! Each time covers the whole mode: for the parallel ones, creating the shared structures,
//! starting and joining the workers, and dropping the structures. The socket directory of the
//! master is a fresh directory under the system's temporary directory, named after the
//! process, and removed at the end. This is OCamlnet's `nqueens` example (a shared hash table,
//! or message passing) over netmcore's shared structures.

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
    Channel,
}

impl Mode {
    /// Every mode, in the order they run.
    const ALL: [Mode; 3] = [Mode::Sequential, Mode::Shared, Mode::Channel];

    /// The name on the command line and in the output.
    fn name(self) -> &'static str {
        match self {
            Mode::Sequential => "sequential",
            Mode::Shared => "shared",
            Mode::Channel => "channel",
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
    let workers = Workers {
        set: parallel::def_set_worker()?,
        send: parallel::def_send_worker()?,
    };
    let coordinator = netmcore::process::def_process(move |job: Job| -> Result<(), String> {
        run_modes(&workers, &job).map_err(|e| format!("{e:#}"))
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

/// The process types of the parallel modes.
struct Workers {
    set: parallel::SetWorker,
    send: parallel::SendWorker,
}

/// In the coordinator: runs each mode of `job`, timed, and checks that they agree.
fn run_modes(workers: &Workers, job: &Job) -> anyhow::Result<()> {
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
            Mode::Shared => parallel::count_with_set(&workers.set, n, job.searchers)?,
            Mode::Channel => parallel::count_with_channel(&workers.send, n, job.searchers)?,
        };
        let seconds = started.elapsed().as_secs_f64();
        print!(
            "{:<11} {count} solutions  {:.2} ms",
            mode.name(),
            seconds * 1e3
        );
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
