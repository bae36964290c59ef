//! The pool's figures (DESIGN §6): `pool_tasks_per_s`, a trivial `u64 -> u64` task mapped over
//! 1,000,000 items by 2 workers with the default chunks, and `pool_chunk1_tasks_per_s`, the
//! same over 100,000 items with chunks of one item.

use anyhow::{Context as _, ensure};
use netmcore::pool::{self, Pool, Task};
use netmcore::process;

use crate::figures::{Plan, named, report, under_master};
use crate::{Sample, Scale, Setting};

/// The trivial task.
fn mix(n: u64) -> u64 {
    n.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17)
}

/// Maps `plan.batch` items through a pool of 2 workers (`chunk`: fixed chunks, else the
/// default) `plan.reps` times after `plan.warmup` maps; tasks per second of each map, from
/// the call of `map` until it returned the checked results. The pool's start is not counted.
fn tasks_per_s(
    task: Task<u64, u64>,
    plan: &Plan,
    chunk: Option<usize>,
) -> anyhow::Result<Vec<f64>> {
    let pool = Pool::start(&task, 2).context("start the pool")?;
    let pool = match chunk {
        Some(items) => pool.chunk_size(items),
        None => pool,
    };
    let n = plan.batch as u64;
    let once = || -> anyhow::Result<f64> {
        let start = std::time::Instant::now();
        let results = pool.map(0..n).context("map")?;
        let took = start.elapsed().as_secs_f64();
        ensure!(results.len() == plan.batch, "{} results", results.len());
        ensure!(
            results.iter().enumerate().all(|(i, &r)| r == mix(i as u64)),
            "a result is wrong"
        );
        Ok(n as f64 / took.max(1e-9))
    };
    for _ in 0..plan.warmup {
        once()?;
    }
    let values = (0..plan.reps)
        .map(|_| once())
        .collect::<anyhow::Result<Vec<f64>>>()?;
    pool.close().context("close the pool")?;
    Ok(values)
}

/// `pool_tasks_per_s` and `pool_chunk1_tasks_per_s`.
pub fn pool_tasks(setting: &Setting) -> anyhow::Result<Vec<Sample>> {
    let task = pool::def_task(mix)?;
    let default = process::def_process(move |plan: Plan| report(tasks_per_s(task, &plan, None)))?;
    let chunk1 = process::def_process(move |plan: Plan| report(tasks_per_s(task, &plan, Some(1))))?;
    let plan = |scale: Scale| Plan {
        reps: setting.reps,
        batch: setting.pick(scale),
        warmup: 1,
    };
    let mut samples = named(
        "pool_tasks_per_s",
        under_master(
            &default,
            &plan(Scale {
                quick: 200_000,
                full: 1_000_000,
            }),
        )?,
    );
    samples.extend(named(
        "pool_chunk1_tasks_per_s",
        under_master(
            &chunk1,
            &plan(Scale {
                quick: 20_000,
                full: 100_000,
            }),
        )?,
    ));
    Ok(samples)
}
