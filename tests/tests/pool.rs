//! `netmcore::pool` across processes: ordered maps, outcomes per item and results as they
//! arrive; a panicking task fails alone; a worker that exits, segfaults or is killed in a task
//! is replaced and the task retried once, then `Died`; a worker killed while idle is replaced; an input of
//! ten million items runs in bounded memory; `close` joins every worker; `pool::map` is a whole
//! run.
//!
//! Run one with `cargo test -p netmcore-tests --test pool -- NAME`.

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use netmcore::pool::{self, Pool, TaskFailure};
use netmcore::shared::Error;
use rustix::process::{Pid, Signal, kill_process};
use support::{Scenario, cases, coordinator, run_coordinator};

fn main() -> ExitCode {
    support::run_cases(cases![
        map_keeps_the_input_order_and_every_item_has_one_outcome,
        a_panicking_task_fails_alone_and_its_worker_goes_on,
        a_worker_that_exits_in_a_task_is_replaced_and_the_task_retried,
        a_worker_that_segfaults_in_a_task_is_replaced_and_the_task_retried,
        a_task_that_kills_every_worker_it_runs_on_fails_with_died,
        a_worker_killed_while_idle_is_replaced,
        a_worker_killed_while_busy_loses_nothing_and_duplicates_nothing,
        ten_million_items_stream_through_in_bounded_memory,
        items_and_results_too_large_for_a_message,
        close_joins_every_worker,
        the_workers_of_a_killed_owner_end,
        pool_map_is_a_whole_run,
    ])
}

/// Squares, the trivial task.
fn square(n: u64) -> u64 {
    n.wrapping_mul(n)
}

/// Peak resident memory of this process, in KiB (`VmHWM`).
fn peak_rss_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM line")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("no number")?
        .parse()?)
}

/// `map`, `map_each` and `imap_unordered` over 100,000 items with default chunks, and with
/// chunks of 1 over 2,000: the results in order, one outcome per index.
fn map_keeps_the_input_order_and_every_item_has_one_outcome(s: &Scenario) -> anyhow::Result<()> {
    let task = pool::def_task(square)?;
    let first = coordinator(move |()| {
        let pool = Pool::start(&task, 2)?;
        let n = 100_000u64;
        let got = pool.map(0..n)?;
        ensure!(got.len() == n as usize, "{} results", got.len());
        ensure!(
            got.iter().enumerate().all(|(i, &r)| r == square(i as u64)),
            "a result is out of place"
        );
        let each = pool.map_each((0..1000).map(|i: u64| i + 7))?;
        ensure!(
            each.iter()
                .enumerate()
                .all(|(i, r)| r.as_ref().ok() == Some(&square(i as u64 + 7))),
            "map_each is wrong"
        );
        let mut seen = BTreeSet::new();
        for (index, result) in pool.imap_unordered(0..n)? {
            ensure!(seen.insert(index), "index {index} came twice");
            ensure!(
                result == Ok(square(index as u64)),
                "item {index}: {result:?}"
            );
        }
        ensure!(seen.len() == n as usize, "{} outcomes", seen.len());
        let pool = pool.chunk_size(1);
        let got = pool.map((0..2000).collect::<Vec<u64>>())?;
        ensure!(
            got.iter().enumerate().all(|(i, &r)| r == square(i as u64)),
            "chunks of 1 are wrong"
        );
        ensure!(
            pool.map(std::iter::empty())?.is_empty(),
            "nothing in, nothing out"
        );
        pool.close()?;
        Ok(())
    })?;
    run_coordinator(s, &first, &())
}

/// Every seventh item panics: `map_each` gives those `Panicked` with the message and the others
/// their results; `map` gives the first failure in input order; the workers are the same
/// processes before and after.
fn a_panicking_task_fails_alone_and_its_worker_goes_on(s: &Scenario) -> anyhow::Result<()> {
    let task = pool::def_task(|n: u64| {
        assert!(n % 7 != 3, "item {n} is unlucky");
        n + 1
    })?;
    let first = coordinator(move |()| {
        let pool = Pool::start(&task, 2)?;
        let before = pool.worker_ids();
        let each = pool.map_each(0..200)?;
        for (i, outcome) in each.iter().enumerate() {
            if i % 7 == 3 {
                match outcome {
                    Err(TaskFailure::Panicked(message)) => ensure!(
                        message == &format!("item {i} is unlucky"),
                        "item {i}: the message is {message:?}"
                    ),
                    other => bail!("item {i} gave {other:?}"),
                }
            } else {
                ensure!(outcome == &Ok(i as u64 + 1), "item {i} gave {outcome:?}");
            }
        }
        match pool.map(0..200) {
            Err(Error::Task {
                index: 3,
                failure: TaskFailure::Panicked(_),
            }) => {}
            other => bail!("map gave {other:?}"),
        }
        ensure!(pool.worker_ids() == before, "a worker was replaced");
        pool.close()?;
        Ok(())
    })?;
    run_coordinator(s, &first, &())
}

/// Item 10 exits its worker the first time it runs (a marker file says whether it ran): the
/// worker is replaced, the item runs again elsewhere and every result is right.
fn a_worker_that_exits_in_a_task_is_replaced_and_the_task_retried(
    s: &Scenario,
) -> anyhow::Result<()> {
    let marker = s.path("ran-once");
    let task = pool::def_task(move |n: u64| {
        if n == 10
            && std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&marker)
                .is_ok()
        {
            std::process::exit(3);
        }
        square(n)
    })?;
    let first = coordinator(move |()| {
        let pool = Pool::start(&task, 2)?.chunk_size(4);
        let before = pool.worker_ids();
        let got = pool.map(0..100)?;
        ensure!(
            got.iter().enumerate().all(|(i, &r)| r == square(i as u64)),
            "a result is wrong"
        );
        let after = pool.worker_ids();
        ensure!(after.len() == 2, "{} workers", after.len());
        ensure!(
            after.iter().filter(|pid| !before.contains(pid)).count() == 1,
            "one worker is new: {before:?} then {after:?}"
        );
        pool.close()?;
        Ok(())
    })?;
    run_coordinator(s, &first, &())
}

/// Item 17 dies of SIGSEGV the first time it runs (a marker file says whether it ran): the
/// worker is replaced, the item runs again and every result is right; with chunks of 1 and of
/// the default size.
fn a_worker_that_segfaults_in_a_task_is_replaced_and_the_task_retried(
    s: &Scenario,
) -> anyhow::Result<()> {
    let marker = s.path("crashed-once");
    let task = pool::def_task(move |n: u64| {
        if n == 17
            && std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&marker)
                .is_ok()
        {
            // The Rust runtime's SIGSEGV handler (stack overflow detection) takes the first
            // signal, restores the default action and returns; the second one kills.
            for _ in 0..2 {
                let _ = kill_process(rustix::process::getpid(), Signal::SEGV);
            }
        }
        square(n)
    })?;
    let marker = s.path("crashed-once");
    let first = coordinator(move |()| {
        for chunk in [Some(1), None] {
            let _ = std::fs::remove_file(&marker);
            let pool = Pool::start(&task, 2)?;
            let pool = match chunk {
                Some(items) => pool.chunk_size(items),
                None => pool,
            };
            let before = pool.worker_ids();
            let got = pool.map(0..300)?;
            ensure!(
                got.iter().enumerate().all(|(i, &r)| r == square(i as u64)),
                "a result is wrong with chunks of {chunk:?}"
            );
            ensure!(marker.exists(), "item 17 never crashed");
            let after = pool.worker_ids();
            ensure!(
                after.iter().filter(|pid| !before.contains(pid)).count() == 1,
                "one worker is new: {before:?} then {after:?}"
            );
            pool.close()?;
        }
        Ok(())
    })?;
    run_coordinator(s, &first, &())
}

/// Item 5 SIGKILLs the process it runs in, every time: it fails with `Died` after its retry,
/// every other item has its result, and the pool goes on with two workers.
fn a_task_that_kills_every_worker_it_runs_on_fails_with_died(s: &Scenario) -> anyhow::Result<()> {
    let task = pool::def_task(|n: u64| {
        if n == 5 {
            let _ = kill_process(rustix::process::getpid(), Signal::KILL);
        }
        n * 3
    })?;
    let first = coordinator(move |()| {
        let pool = Pool::start(&task, 2)?;
        let each = pool.map_each(0..40)?;
        for (i, outcome) in each.iter().enumerate() {
            if i == 5 {
                ensure!(
                    matches!(outcome, Err(TaskFailure::Died(_))),
                    "item 5 gave {outcome:?}"
                );
            } else {
                ensure!(outcome == &Ok(i as u64 * 3), "item {i} gave {outcome:?}");
            }
        }
        ensure!(pool.workers() == 2, "{} workers", pool.workers());
        ensure!(
            pool.map(6..10)? == vec![18, 21, 24, 27],
            "the pool does not go on"
        );
        pool.close()?;
        Ok(())
    })?;
    run_coordinator(s, &first, &())
}

/// Sleeps `ms` and returns the Unix pid of the worker.
fn pid_after(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

/// Asks the workers for their Unix pids until both have answered.
fn unix_pids(pool: &Pool<u64, u32>) -> anyhow::Result<BTreeSet<u32>> {
    for _ in 0..20 {
        let pids: BTreeSet<u32> = pool.map(vec![20; 8])?.into_iter().collect();
        if pids.len() == pool.workers() {
            return Ok(pids);
        }
    }
    bail!("the workers never both answered")
}

/// A worker is SIGKILLed while it waits for work: the pool replaces it and the next map runs
/// on two live workers.
fn a_worker_killed_while_idle_is_replaced(s: &Scenario) -> anyhow::Result<()> {
    let task = pool::def_task(pid_after)?;
    let first = coordinator(move |()| {
        let pool = Pool::start(&task, 2)?.chunk_size(1);
        let pids = unix_pids(&pool)?;
        let victim = *pids.iter().next().context("a pid")?;
        kill_process(Pid::from_raw(victim as i32).context("a pid")?, Signal::KILL)?;
        support::wait_until("the victim is gone", || support::has_ended(victim as i32))?;
        let now = unix_pids(&pool)?;
        ensure!(
            !now.contains(&victim),
            "the killed worker still answers: {now:?}"
        );
        ensure!(now.len() == 2, "workers now: {now:?}");
        pool.close()?;
        Ok(())
    })?;
    run_coordinator(s, &first, &())
}

/// Items take 5 ms each; as soon as the first result arrives its worker is SIGKILLed (it is in
/// its next item by then): every index still gets exactly one result, and it is right.
fn a_worker_killed_while_busy_loses_nothing_and_duplicates_nothing(
    s: &Scenario,
) -> anyhow::Result<()> {
    let task = pool::def_task(|n: u64| (n, pid_after(5)))?;
    let first = coordinator(move |()| {
        let pool = Pool::start(&task, 2)?.chunk_size(3);
        let mut seen = BTreeSet::new();
        let mut killed = None;
        for (index, outcome) in pool.imap_unordered(0..200)? {
            let (n, pid) = outcome.map_err(|f| anyhow::anyhow!("item {index}: {f}"))?;
            ensure!(n == index as u64, "item {index} gave the result of {n}");
            ensure!(seen.insert(index), "index {index} came twice");
            if killed.is_none() {
                kill_process(Pid::from_raw(pid as i32).context("a pid")?, Signal::KILL)?;
                killed = Some(pid);
            }
        }
        ensure!(seen.len() == 200, "{} outcomes", seen.len());
        ensure!(pool.workers() == 2, "{} workers", pool.workers());
        pool.close()?;
        Ok(())
    })?;
    run_coordinator(s, &first, &())
}

/// `map` over a counting iterator of ten million items with a result that takes no room: the
/// process's peak memory grows by far less than the input would take held at once (80 MB).
fn ten_million_items_stream_through_in_bounded_memory(s: &Scenario) -> anyhow::Result<()> {
    let task = pool::def_task(|n: u64| {
        std::hint::black_box(n);
    })?;
    let first = coordinator(move |()| {
        let pool = Pool::start(&task, 2)?;
        let before = peak_rss_kib()?;
        let count = std::cell::Cell::new(0u64);
        let items = std::iter::from_fn(|| {
            let n = count.get();
            (n < 10_000_000).then(|| {
                count.set(n + 1);
                n
            })
        });
        let results = pool.map(items)?;
        ensure!(results.len() == 10_000_000, "{} results", results.len());
        ensure!(count.get() == 10_000_000, "{} items taken", count.get());
        let grew = peak_rss_kib()?.saturating_sub(before);
        ensure!(grew < 16 << 10, "the peak memory grew by {grew} KiB");
        pool.close()?;
        Ok(())
    })?;
    run_coordinator(s, &first, &())
}

/// Items of 100 KiB go in chunks split to fit a message and come back right; an item, or a
/// result, larger than a message fails alone with `TooLarge`, and its neighbours have theirs.
fn items_and_results_too_large_for_a_message(s: &Scenario) -> anyhow::Result<()> {
    // Item `(n, len, back)`: `len` bytes of `n` in; `back` bytes of `n` out.
    let task = pool::def_task(|(n, bytes, back): (u8, Vec<u8>, usize)| -> Vec<u8> {
        assert!(bytes.iter().all(|&b| b == n), "item {n} came damaged");
        vec![n; back]
    })?;
    let first = coordinator(move |()| {
        let big = pool::MAX_MESSAGE + 1;
        let pool = Pool::start(&task, 2)?.chunk_size(8);
        let items: Vec<(u8, Vec<u8>, usize)> = (0..24u8)
            .map(|n| match n {
                5 => (n, vec![n; big], 1),
                9 => (n, vec![n; 1], big),
                _ => (n, vec![n; 100 << 10], 100 << 10),
            })
            .collect();
        let each = pool.map_each(items)?;
        ensure!(each.len() == 24, "{} outcomes", each.len());
        for (i, outcome) in each.iter().enumerate() {
            match (i, outcome) {
                (5 | 9, Err(TaskFailure::TooLarge(_))) => {}
                (5 | 9, other) => bail!("item {i} gave {:?}", other.as_ref().map(Vec::len)),
                (_, Ok(bytes)) => ensure!(
                    bytes.len() == 100 << 10 && bytes.iter().all(|&b| usize::from(b) == i),
                    "item {i} came back wrong"
                ),
                (_, Err(failure)) => bail!("item {i} failed: {failure}"),
            }
        }
        pool.close()?;
        Ok(())
    })?;
    run_coordinator(s, &first, &())
}

/// After `close`, every worker process ends (at once: a join returns when the body has
/// returned, the exit follows).
fn close_joins_every_worker(s: &Scenario) -> anyhow::Result<()> {
    let task = pool::def_task(pid_after)?;
    let first = coordinator(move |()| {
        let pool = Pool::start(&task, 3)?.chunk_size(1);
        ensure!(pool.workers() == 3, "{} workers", pool.workers());
        let pids: BTreeSet<u32> = pool.map(vec![10; 30])?.into_iter().collect();
        pool.close()?;
        // A join returns once the worker's body returned; its process exits right after.
        for pid in pids {
            support::wait_until(&format!("worker {pid} ends after close"), || {
                support::has_ended(pid as i32)
            })?;
        }
        let pool = Pool::start(&task, 0)?;
        let cpus = std::thread::available_parallelism()?.get();
        ensure!(
            pool.workers() == cpus,
            "0 workers gave {}, not {cpus}",
            pool.workers()
        );
        drop(pool);
        Ok(())
    })?;
    run_coordinator(s, &first, &())
}

/// The process that owns a pool is SIGKILLed while its workers wait for work: they see their
/// task channels disconnected and end, leaving nothing behind.
fn the_workers_of_a_killed_owner_end(s: &Scenario) -> anyhow::Result<()> {
    let task = pool::def_task(pid_after)?;
    let owner = netmcore::process::def_process(move |(pids, me): (PathBuf, PathBuf)| -> () {
        let pool = Pool::start(&task, 2).expect("a pool");
        let pids_of_workers = unix_pids(&pool).expect("the workers answer");
        let text: Vec<String> = pids_of_workers.iter().map(ToString::to_string).collect();
        support::write_file(&pids, &text.join(" ")).expect("the pids written");
        support::write_own_pid(&me).expect("the own pid written");
        // Holding the pool, until it is killed.
        support::sleep_forever();
    })?;
    let first = coordinator(move |(pids, me): (PathBuf, PathBuf)| {
        let pid = owner.start(&(pids.clone(), me.clone()))?;
        support::wait_for_file(&me)?;
        let workers: Vec<i32> = std::fs::read_to_string(&pids)?
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        ensure!(workers.len() == 2, "workers: {workers:?}");
        support::send_signal(support::read_pid(&me)?, Signal::KILL)?;
        ensure!(owner.join(pid)?.is_none(), "the killed owner returned");
        for worker in workers {
            support::wait_until(&format!("worker {worker} ends after its owner"), || {
                support::has_ended(worker)
            })?;
        }
        Ok(())
    })?;
    run_coordinator(s, &first, &(s.path("workers"), s.path("owner.pid")))
}

/// `pool::map` starts a master, maps and shuts down: the results, then the first failure.
fn pool_map_is_a_whole_run(s: &Scenario) -> anyhow::Result<()> {
    let double = pool::def_task(|n: i64| {
        assert!(n >= 0, "negative: {n}");
        2 * n
    })?;
    let got = pool::map(s.config(), &double, (0..1000).collect(), 2)?;
    ensure!(
        got == (0..1000).map(|n| 2 * n).collect::<Vec<_>>(),
        "wrong results"
    );
    let items: Vec<i64> = vec![1, 2, -3, 4, -5];
    match pool::map(s.config(), &double, items, 2) {
        Err(Error::Task {
            index: 2,
            failure: TaskFailure::Panicked(message),
        }) => ensure!(message == "negative: -3", "the message is {message:?}"),
        other => bail!("a failing map gave {other:?}"),
    }
    Ok(())
}
