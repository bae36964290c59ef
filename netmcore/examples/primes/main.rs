//! Counts the primes below `N` with a pool of worker processes, shows the progress on the
//! terminal, and prints the speed-up over a pool of one worker.
//!
//! ```text
//! cargo run --release --example primes                 # below 100,000,000, one worker per core
//! cargo run --release --example primes -- 10000000     # below 10,000,000
//! cargo run --release --example primes -- 10000000 4   # with 4 workers
//! ```
//!
//! The numbers below `N` are cut into blocks of [`BLOCK`] numbers; a task counts the primes of
//! one block with a sieve of its own (the primes up to the square root of the block's end,
//! then the block's multiples of them crossed out). The program turns itself into a netmcore
//! master whose first process maps the blocks through a pool twice — with one worker per core
//! (or the count given), then with one — taking the results as they arrive
//! (`imap_unordered`) to move a progress bar (on the terminal only) and sum the counts. It
//! prints:
//!
//! ```text
//! primes below 10000000: 664579
//! 2 workers  0.041 s
//! 1 worker   0.079 s  speed-up 1.93
//! ```
//!
//! The socket directory of the master is a fresh directory under the system's temporary
//! directory, removed at the end.

mod sieve;

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use indicatif::{ProgressBar, ProgressStyle};
use netmcore::Config;
use netmcore::pool::{self, Pool, Task};
use netmcore::process;

use sieve::{BLOCK, count_primes_in};

/// `N` when none is given.
const DEFAULT_LIMIT: u64 = 100_000_000;

/// What the coordinator gets.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Job {
    limit: u64,
    workers: usize,
}

/// What the coordinator returns: the count and the two times, or what went wrong.
type Outcome = Result<(u64, usize, Duration, Duration), String>;

/// Maps the blocks below `limit` through a pool of `workers` processes; the number of primes
/// and how long it took (the pool's start included).
fn count(
    task: &Task<(u64, u64), u64>,
    limit: u64,
    workers: usize,
) -> anyhow::Result<(u64, usize, Duration)> {
    let started = Instant::now();
    let pool = Pool::start(task, workers)
        .context("start the pool")?
        .chunk_size(1);
    let workers = pool.workers();
    let blocks = (0..limit.div_ceil(BLOCK)).map(|b| (b * BLOCK, ((b + 1) * BLOCK).min(limit)));
    let bar = ProgressBar::new(limit).with_style(
        ProgressStyle::with_template(
            "{prefix:>9} [{bar:40}] {percent:>3}% {human_pos}/{human_len} numbers, {eta} left",
        )
        .context("the progress bar's template")?
        .progress_chars("=> "),
    );
    bar.set_prefix(format!(
        "{workers} worker{}",
        if workers == 1 { "" } else { "s" }
    ));
    let mut primes = 0;
    for (index, outcome) in pool.imap_unordered(blocks)? {
        let found = outcome.map_err(|failure| anyhow::anyhow!("block {index}: {failure}"))?;
        primes += found;
        let start = index as u64 * BLOCK;
        bar.inc((start + BLOCK).min(limit) - start);
    }
    bar.finish_and_clear();
    pool.close().context("close the pool")?;
    Ok((primes, workers, started.elapsed()))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let limit = match args.first() {
        Some(text) => text
            .parse()
            .with_context(|| format!("N must be a number, not {text:?}"))?,
        None => DEFAULT_LIMIT,
    };
    let workers = match args.get(1) {
        Some(text) => text
            .parse()
            .with_context(|| format!("the number of workers must be a number, not {text:?}"))?,
        None => 0,
    };
    ensure!(args.len() <= 2, "usage: primes [N] [WORKERS]");

    let task = pool::def_task(|(from, to): (u64, u64)| count_primes_in(from, to))?;
    let coordinator = process::def_process(move |job: Job| -> Outcome {
        let run = || -> anyhow::Result<(u64, usize, Duration, Duration)> {
            let (many, workers, parallel) = count(&task, job.limit, job.workers)?;
            let (one, _, alone) = count(&task, job.limit, 1)?;
            ensure!(
                many == one,
                "{workers} workers counted {many} primes, one worker {one}"
            );
            Ok((many, workers, parallel, alone))
        };
        run().map_err(|e| format!("{e:#}"))
    })?;
    let dir = std::env::temp_dir().join(format!("netmcore-primes-{}", std::process::id()));
    let outcome = netmcore::run(Config::new(&dir), &coordinator, &Job { limit, workers });
    let _ = std::fs::remove_dir_all(&dir);
    let (primes, workers, parallel, alone) = outcome?
        .context("the coordinator ended without a result")?
        .map_err(|e| anyhow::anyhow!(e))?;
    println!("primes below {limit}: {primes}");
    let label = format!("{workers} worker{}", if workers == 1 { "" } else { "s" });
    println!("{label:<10} {:.3} s", parallel.as_secs_f64());
    println!(
        "{:<10} {:.3} s  speed-up {:.2}",
        "1 worker",
        alone.as_secs_f64(),
        alone.as_secs_f64() / parallel.as_secs_f64().max(1e-9)
    );
    Ok(())
}
