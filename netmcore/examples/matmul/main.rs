//! Multiplies two square matrices in parallel worker processes over shared matrices, and
//! prints how long each number of workers took.
//!
//! ```text
//! cargo run --release --example matmul            # 300 × 300
//! cargo run --release --example matmul -- 600     # 600 × 600
//! ```
//!
//! The program turns itself into a netmcore master. Its first process, the coordinator, puts
//! `A` and `B` in two `SharedMatrix<f64>`s and freezes them, so that every process reads them
//! in place. Then, for each worker count `N` from 1 up to the number of cores, it creates a
//! zeroed `C`, starts `N` band processes, each of which opens the three matrices by handle,
//! claims a band of rows of `C` (`claim_rows`: no two bands can overlap, checked across
//! processes) and writes its part of the product there, joins them, freezes `C` and compares
//! it with the product computed in the coordinator alone. Both sum in the same order, so they
//! are equal exactly, not just closely:
//!
//! ```text
//! matmul 300 x 300: sequential 0.12 s
//! workers=1  0.13 s
//! workers=2  0.07 s  speed-up 1.91
//! ```
//!
//! The speed-up is relative to one worker; each time includes creating `C` and starting and
//! joining the processes. The socket directory of the master is a fresh directory under the
//! system's temporary directory, named after the process, and removed at the end.

mod product;

use std::io::Write as _;
use std::time::Instant;

use anyhow::{Context as _, ensure};
use netmcore::Config;
use serde::{Deserialize, Serialize};

/// The size when none is given.
const DEFAULT_SIZE: usize = 300;

/// What the coordinator gets: the size and the worker counts to time.
#[derive(Debug, Serialize, Deserialize)]
struct Job {
    n: usize,
    workers: Vec<usize>,
}

fn main() -> anyhow::Result<()> {
    let n = match std::env::args().nth(1) {
        None => DEFAULT_SIZE,
        Some(arg) => match arg.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                eprintln!("usage: matmul [SIZE]   (a positive size; default {DEFAULT_SIZE})");
                std::process::exit(2);
            }
        },
    };
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);

    // Process types are defined before startup: the workers are forked from the master and
    // find the bodies in their copy of its memory.
    let band = product::def_band_process()?;
    let coordinator = netmcore::process::def_process(move |job: Job| -> Result<(), String> {
        time_products(&band, &job).map_err(|e| format!("{e:#}"))
    })?;

    let socket_dir = std::env::temp_dir().join(format!("netmcore-matmul-{}", std::process::id()));
    let job = Job {
        n,
        workers: (1..=cores).collect(),
    };
    let outcome = netmcore::run(Config::new(&socket_dir), &coordinator, &job);
    let _ = std::fs::remove_dir_all(&socket_dir);
    outcome?
        .context("the coordinator ended without a result")?
        .map_err(anyhow::Error::msg)
}

/// In the coordinator: the sequential product, then the product in processes for each worker
/// count, checked against it and timed.
fn time_products(band: &product::BandProcess, job: &Job) -> anyhow::Result<()> {
    let n = job.n;
    let (a, b) = product::inputs(n);
    let started = Instant::now();
    let expected = product::sequential(&a, &b, n);
    println!(
        "matmul {n} x {n}: sequential {:.3} s",
        started.elapsed().as_secs_f64()
    );
    let (a, b) = product::shared_inputs(n)?;
    let mut first: Option<f64> = None;
    for &workers in &job.workers {
        let started = Instant::now();
        let c = product::multiply_in_processes(band, &a, &b, workers)?;
        let seconds = started.elapsed().as_secs_f64();
        ensure!(
            c.as_slice()? == expected.as_slice(),
            "{workers} workers computed another product than the sequential one"
        );
        match first {
            None => {
                println!("workers={workers:<3} {seconds:.3} s");
                first = Some(seconds);
            }
            Some(base) => println!(
                "workers={workers:<3} {seconds:.3} s  speed-up {:.2}",
                base / seconds
            ),
        }
        let _ = std::io::stdout().flush();
    }
    println!("every product equals the sequential one");
    Ok(())
}
