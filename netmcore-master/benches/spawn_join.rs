//! A quick measure of the process API's costs, printed as `name value unit` lines:
//! `spawn_join_us` (a worker starts and joins a trivial process, sequentially) and
//! `parallel_tasks_per_s` (200 trivial processes in waves of two). The full benchmark with
//! the machine's floors is `cargo xtask bench`.

use std::time::Instant;

use netmcore_encap::Encap;
use netmcore_master::{Config, def_process, join, start, startup_with_result};

fn main() {
    let quick = std::env::args().any(|a| a == "--quick" || a == "--bench");
    let rounds: u64 = if quick { 200 } else { 2000 };
    let (noop, noop_jp) = def_process(|a| a).expect("def_process");
    let (first, _) = def_process(move |arg| {
        let rounds: u64 = arg.unwrap().expect("u64");
        let unit = Encap::wrap(&()).expect("wrap");
        // Warm up.
        for _ in 0..10 {
            let pid = start(noop, unit.clone()).expect("start");
            join(noop_jp, pid).expect("join");
        }
        let t = Instant::now();
        for _ in 0..rounds {
            let pid = start(noop, unit.clone()).expect("start");
            join(noop_jp, pid).expect("join");
        }
        let spawn_join_us = t.elapsed().as_secs_f64() * 1e6 / rounds as f64;
        let t = Instant::now();
        for _ in 0..100 {
            let a = start(noop, unit.clone()).expect("start");
            let b = start(noop, unit.clone()).expect("start");
            join(noop_jp, a).expect("join");
            join(noop_jp, b).expect("join");
        }
        let tasks_per_s = 200.0 / t.elapsed().as_secs_f64();
        Encap::wrap(&(spawn_join_us, tasks_per_s)).expect("wrap")
    })
    .expect("def_process");
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Instant::now();
    let result = startup_with_result(Config::new(dir.path().join("bench")), || {
        start(first, Encap::wrap(&rounds)?)
    })
    .expect("startup");
    let total = t.elapsed();
    let (spawn_join_us, tasks_per_s): (f64, f64) =
        result.expect("a result").unwrap().expect("a pair");
    println!("spawn_join_us {spawn_join_us:.1} us");
    println!("parallel_tasks_per_s {tasks_per_s:.0} tasks/s");
    println!("whole_run_ms {:.1} ms", total.as_secs_f64() * 1e3);
}
