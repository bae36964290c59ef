//! The figures of DESIGN.md §6, measured through the public API of the `netmcore` facade.
//!
//! Each function runs in a measuring process of its own (this program with `--child`): it
//! defines its process types, becomes the master with [`netmcore::run`] (or `startup`) on a
//! socket directory in a temporary directory, and its first process measures and returns one
//! value per repetition. The measuring process allocates nothing big before `startup`, so the
//! master stays small (a fork copies its page tables); big buffers live in the workers.
//!
//! `startup_shutdown_ms` is timed by the driver around a whole run of this program
//! ([`startup_once`] is that run's body).

use std::hint::black_box;
use std::io::{Read as _, Write as _};
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{Context as _, bail, ensure};
use netmcore::process::{self, ProcessType};
use netmcore::shared::{
    Error as SharedError, Handle, Mutex, PipeReader, PipeWriter, Receiver, Sender, channel, pipe,
};
use netmcore::{Config, Inherit, ResId, ResourceRepr, SharedMemory};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::floors::{MEMORY_BYTES, sum_words};
use crate::{Sample, Scale, Setting, game, sys};

/// How many trivial processes `parallel_tasks_per_s` runs per repetition.
const PARALLEL_TASKS: usize = 200;

/// The heap of the big requester: 1 GiB.
const BIG_HEAP: usize = 1 << 30;

/// The size of the argument of `arg_64mib_mb_s`: 64 MiB.
const ARG_BYTES: usize = 64 << 20;

/// What a measuring first process is told.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Plan {
    /// Repetitions, each giving one value.
    pub(crate) reps: usize,
    /// Operations per repetition.
    pub(crate) batch: usize,
    /// Operations before the first repetition, not measured.
    pub(crate) warmup: usize,
}

/// What a measuring process's body returns: one value per repetition, or what went wrong.
pub(crate) type Values = Result<Vec<f64>, String>;

/// Turns a body's `anyhow` outcome into what travels back to the master.
pub(crate) fn report(outcome: anyhow::Result<Vec<f64>>) -> Values {
    outcome.map_err(|e| format!("{e:#}"))
}

/// Runs `first` with `arg` as the first process of a master on a fresh socket directory and
/// returns its values.
pub(crate) fn under_master<A>(first: &ProcessType<A, Values>, arg: &A) -> anyhow::Result<Vec<f64>>
where
    A: Serialize + DeserializeOwned + 'static,
{
    let dir = tempfile::tempdir().context("a temporary directory")?;
    let outcome = netmcore::run(Config::new(dir.path().join("sockets")), first, arg)
        .context("netmcore::run")?;
    match outcome {
        Some(values) => values.map_err(|e| anyhow::anyhow!("{e}")),
        None => bail!("the measuring process ended without a result (a panic?)"),
    }
}

/// Names every value `name`.
pub(crate) fn named(name: &'static str, values: Vec<f64>) -> Vec<Sample> {
    values
        .into_iter()
        .map(|value| Sample { name, value })
        .collect()
}

/// Starts and joins one trivial process; its join must give its result.
fn spawn_join_once(noop: ProcessType<(), ()>) -> anyhow::Result<()> {
    let pid = noop.start(&()).context("start")?;
    noop.join(pid)
        .context("join")?
        .context("a trivial process ended without a result")
}

/// `plan.warmup` spawn+joins, then `plan.reps` batches of `plan.batch`; µs per spawn+join.
fn spawn_join_loop(noop: ProcessType<(), ()>, plan: &Plan) -> anyhow::Result<Vec<f64>> {
    for _ in 0..plan.warmup {
        spawn_join_once(noop)?;
    }
    let mut values = Vec::with_capacity(plan.reps);
    for _ in 0..plan.reps {
        let start = Instant::now();
        for _ in 0..plan.batch {
            spawn_join_once(noop)?;
        }
        values.push(crate::micros_per(start, plan.batch));
    }
    Ok(values)
}

/// The plan of the two spawn+join figures.
fn spawn_join_plan(setting: &Setting) -> Plan {
    Plan {
        reps: setting.reps,
        batch: setting.pick(Scale {
            quick: 100,
            full: 1_000,
        }),
        warmup: 50,
    }
}

/// `spawn_join_us`: a worker starts and joins a trivial typed process, sequentially.
pub fn spawn_join(setting: &Setting) -> anyhow::Result<Vec<Sample>> {
    let noop = process::def_process(|(): ()| ())?;
    let measure = process::def_process(move |plan: Plan| report(spawn_join_loop(noop, &plan)))?;
    let values = under_master(&measure, &spawn_join_plan(setting))?;
    Ok(named("spawn_join_us", values))
}

/// `spawn_join_big_requester_us`: the same, from a worker that first allocated and touched
/// 1 GiB of heap. The requester is big; the master, which forks, is not.
pub fn spawn_join_big_requester(setting: &Setting) -> anyhow::Result<Vec<Sample>> {
    let noop = process::def_process(|(): ()| ())?;
    let measure = process::def_process(move |plan: Plan| {
        let mut heap = vec![1u8; BIG_HEAP];
        for (i, byte) in heap.iter_mut().enumerate().step_by(4096) {
            *byte = i.to_le_bytes()[2];
        }
        black_box(&mut heap);
        let values = spawn_join_loop(noop, &plan);
        black_box(&heap);
        report(values)
    })?;
    let values = under_master(&measure, &spawn_join_plan(setting))?;
    Ok(named("spawn_join_big_requester_us", values))
}

/// `parallel_tasks_per_s`: 200 trivial processes in waves of the core count (start as many
/// as there are cores, join them all, repeat); tasks per second.
pub fn parallel(setting: &Setting) -> anyhow::Result<Vec<Sample>> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let noop = process::def_process(|(): ()| ())?;
    let measure = process::def_process(move |plan: Plan| {
        let wave = |size: usize| -> anyhow::Result<()> {
            let pids = (0..size)
                .map(|_| noop.start(&()).context("start"))
                .collect::<anyhow::Result<Vec<_>>>()?;
            for pid in pids {
                noop.join(pid)
                    .context("join")?
                    .context("a trivial process ended without a result")?;
            }
            Ok(())
        };
        let run = || -> anyhow::Result<Vec<f64>> {
            wave(plan.warmup)?;
            let mut values = Vec::with_capacity(plan.reps);
            for _ in 0..plan.reps {
                let start = Instant::now();
                let mut left = plan.batch;
                while left > 0 {
                    let size = left.min(cores);
                    wave(size)?;
                    left -= size;
                }
                values.push(plan.batch as f64 / start.elapsed().as_secs_f64());
            }
            Ok(values)
        };
        report(run())
    })?;
    let plan = Plan {
        reps: setting.reps,
        batch: PARALLEL_TASKS,
        warmup: cores,
    };
    let values = under_master(&measure, &plan)?;
    Ok(named("parallel_tasks_per_s", values))
}

/// What the holder of `get_release_us` is told: where to make its file, and the plan of the
/// process that gets and releases it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Holding {
    path: std::path::PathBuf,
    plan: Plan,
}

/// `get_release_us`: `get_resource` + `release` by a worker, of a file that another worker
/// holds all along (so a release never destroys it); µs per pair.
///
/// The first process is the holder: it makes a file, registers it with `manage_file`, starts
/// the looping process with the id, joins it, and releases the file.
pub fn get_release(setting: &Setting) -> anyhow::Result<Vec<Sample>> {
    let looper = process::def_process(|(id, plan): (ResId, Plan)| {
        let pair = || -> anyhow::Result<()> {
            netmcore::get_resource(id).context("get_resource")?;
            netmcore::release(id).context("release")
        };
        let run = || -> anyhow::Result<Vec<f64>> {
            for _ in 0..plan.warmup {
                pair()?;
            }
            let mut values = Vec::with_capacity(plan.reps);
            for _ in 0..plan.reps {
                let start = Instant::now();
                for _ in 0..plan.batch {
                    pair()?;
                }
                values.push(crate::micros_per(start, plan.batch));
            }
            Ok(values)
        };
        report(run())
    })?;
    let holder = process::def_process(move |holding: Holding| {
        let run = || -> anyhow::Result<Vec<f64>> {
            std::fs::write(&holding.path, b"held")
                .with_context(|| format!("create {}", holding.path.display()))?;
            let file = netmcore::manage_file(&holding.path).context("manage_file")?;
            let pid = looper
                .start(&(file.id(), holding.plan.clone()))
                .context("start")?;
            let values = looper.join(pid).context("join")?;
            file.release().context("release of the held file")?;
            values
                .context("the looping process ended without a result")?
                .map_err(|e| anyhow::anyhow!("{e}"))
        };
        report(run())
    })?;
    let dir = tempfile::tempdir().context("a temporary directory")?;
    let holding = Holding {
        path: dir.path().join("held"),
        plan: Plan {
            reps: setting.reps,
            batch: setting.pick(Scale {
                quick: 1_000,
                full: 10_000,
            }),
            warmup: 500,
        },
    };
    let values = under_master(&holder, &holding)?;
    ensure!(
        !holding.path.exists(),
        "the held file outlived its last release"
    );
    Ok(named("get_release_us", values))
}

/// CLOCK_MONOTONIC in nanoseconds: the same clock in every process of the host.
fn monotonic_ns() -> i128 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    i128::from(now.tv_sec) * 1_000_000_000 + i128::from(now.tv_nsec)
}

/// `arg_64mib_mb_s`: starting a process with a 64 MiB `Vec<u8>` argument until its body has
/// the decoded vector. The requester reads CLOCK_MONOTONIC just before `start`, the body as
/// its first act, and returns it. MB = 1e6 bytes.
pub fn arg_64mib(setting: &Setting) -> anyhow::Result<Vec<Sample>> {
    let taker = process::def_process(|arg: Vec<u8>| -> (i128, usize) {
        let now = monotonic_ns();
        (now, black_box(&arg).len())
    })?;
    let measure = process::def_process(move |plan: Plan| {
        let run = || -> anyhow::Result<Vec<f64>> {
            // Built before any timer starts.
            let payload: Vec<u8> = (0..ARG_BYTES)
                .map(|i| u8::try_from(i % 251).unwrap_or(0))
                .collect();
            let once = || -> anyhow::Result<f64> {
                let before = monotonic_ns();
                let pid = taker.start(&payload).context("start")?;
                let (arrived, len) = taker
                    .join(pid)
                    .context("join")?
                    .context("the receiving process ended without a result")?;
                ensure!(
                    len == ARG_BYTES,
                    "the body got {len} bytes, not {ARG_BYTES}"
                );
                let seconds = (arrived - before) as f64 / 1e9;
                Ok(ARG_BYTES as f64 / 1e6 / seconds)
            };
            for _ in 0..plan.warmup {
                once()?;
            }
            (0..plan.reps).map(|_| once()).collect()
        };
        report(run())
    })?;
    let plan = Plan {
        reps: setting.reps,
        batch: 1,
        warmup: 1,
    };
    let values = under_master(&measure, &plan)?;
    Ok(named("arg_64mib_mb_s", values))
}

/// What the coordinator of `shm_pass_mb_s` is told.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pass {
    region: ResId,
    expected: u64,
    plan: Plan,
}

/// The memory of preallocated region `id` as this process maps it.
fn memory_of(id: ResId) -> anyhow::Result<SharedMemory> {
    let resource = netmcore::get_resource(id).context("get_resource")?;
    match resource.repr() {
        ResourceRepr::PosixShmPreallocated { memory, .. } => Ok(*memory),
        other => bail!("{id} is not preallocated shared memory but {other:?}"),
    }
}

/// `shm_pass_mb_s`: a fresh worker per repetition sums (wrapping, as `u64` words) a 64 MiB
/// preallocated shm that the master filled before `startup`. Timed in the worker from its
/// first access (`get_resource` included, and the page faults) to the end of the sum.
pub fn shm_pass(setting: &Setting) -> anyhow::Result<Vec<Sample>> {
    let summer = process::def_process(|region: ResId| -> Result<(u64, u64), String> {
        let run = || -> anyhow::Result<(u64, u64)> {
            let start = Instant::now();
            let words = sys::shm_words(memory_of(region)?);
            let sum = black_box(sum_words(black_box(words)));
            let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
            Ok((nanos, sum))
        };
        run().map_err(|e| format!("{e:#}"))
    })?;
    let coordinator = process::def_process(move |pass: Pass| {
        let once = || -> anyhow::Result<f64> {
            let pid = summer
                .start_with(&pass.region, Inherit::Resources(vec![pass.region]))
                .context("start_with")?;
            let (nanos, sum) = summer
                .join(pid)
                .context("join")?
                .context("the summing process ended without a result")?
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            ensure!(
                sum == pass.expected,
                "the worker summed {sum:#x}, the master wrote {:#x}",
                pass.expected
            );
            Ok(MEMORY_BYTES as f64 / 1e6 / (nanos as f64 / 1e9))
        };
        let run = || -> anyhow::Result<Vec<f64>> {
            for _ in 0..pass.plan.warmup {
                once()?;
            }
            (0..pass.plan.reps).map(|_| once()).collect()
        };
        report(run())
    })?;

    // The region is created and filled here, before `startup`: it is a shared mapping, which a
    // fork does not copy page by page, so the master stays small.
    let prefix = format!("/{}shm-", crate::object_prefix());
    let (region, _name) = netmcore::create_preallocated_shm(&prefix, MEMORY_BYTES)
        .context("create_preallocated_shm")?;
    let words = memory_of(region)?
        .as_atomic_u64s()
        .context("a page-aligned region")?;
    let mut expected = 0u64;
    for (i, word) in (0u64..).zip(words) {
        let value = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        word.store(value, Ordering::Relaxed);
        expected = expected.wrapping_add(value);
    }
    let pass = Pass {
        region,
        expected,
        plan: Plan {
            reps: setting.reps,
            batch: 1,
            warmup: 1,
        },
    };
    let values = under_master(&coordinator, &pass)?;
    Ok(named("shm_pass_mb_s", values))
}

/// The body of one run of `startup_shutdown_ms`: a whole program whose first process returns
/// at once. Prints `startup_shutdown_inproc_ms`, the `netmcore::run` call alone.
pub fn startup_once() -> anyhow::Result<Vec<Sample>> {
    let noop = process::def_process(|(): ()| ())?;
    let dir = tempfile::tempdir().context("a temporary directory")?;
    let config = Config::new(dir.path().join("sockets"));
    let start = Instant::now();
    let outcome = netmcore::run(config, &noop, &()).context("netmcore::run")?;
    let millis = start.elapsed().as_secs_f64() * 1e3;
    outcome.context("the first process ended without a result")?;
    Ok(vec![Sample {
        name: "startup_shutdown_inproc_ms",
        value: millis,
    }])
}

/// What an incrementing worker of `mutex_incr_per_s` is told.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Increments {
    mutex: Handle<Mutex<[u64; 2]>>,
    /// Increments to make.
    count: u64,
}

/// `mutex_incr_per_s`: two workers increment one `u64` under a `netmcore::shared::Mutex`, each
/// `batch` times; increments per second over both, from the moment both are ready (each waits
/// under the lock until the other has arrived) until the last one finished. The counter must
/// come out exact.
pub fn mutex_incr(setting: &Setting) -> anyhow::Result<Vec<Sample>> {
    let incrementer = process::def_process(|job: Increments| -> Result<(u64, u64), String> {
        let run = || -> anyhow::Result<(u64, u64)> {
            let mutex = Mutex::open(job.mutex).context("open the mutex")?;
            let lock = || mutex.lock().map_err(|_| anyhow::anyhow!("poisoned"));
            lock()?[1] += 1;
            while lock()?[1] < 2 {
                std::hint::spin_loop();
            }
            let start = monotonic_nanos();
            for _ in 0..job.count {
                lock()?[0] += 1;
            }
            Ok((start, monotonic_nanos()))
        };
        run().map_err(|e| format!("{e:#}"))
    })?;
    let measure = process::def_process(move |plan: Plan| {
        let once = || -> anyhow::Result<f64> {
            let mutex = Mutex::new([0u64; 2]).context("Mutex::new")?;
            let job = Increments {
                mutex: mutex.handle(),
                count: plan.batch as u64,
            };
            let pids = [incrementer.start(&job)?, incrementer.start(&job)?];
            let mut spans = Vec::new();
            for pid in pids {
                spans.push(
                    incrementer
                        .join(pid)
                        .context("join")?
                        .context("an incrementer ended without a result")?
                        .map_err(|e| anyhow::anyhow!("{e}"))?,
                );
            }
            let total = mutex.lock().map_err(|_| anyhow::anyhow!("poisoned"))?[0];
            ensure!(
                total == 2 * job.count,
                "the counter is {total}, not {}",
                2 * job.count
            );
            let start = spans.iter().map(|s| s.0).min().unwrap_or(0);
            let end = spans.iter().map(|s| s.1).max().unwrap_or(0);
            ensure!(end > start, "no time passed");
            Ok(total as f64 / ((end - start) as f64 / 1e9))
        };
        let run = || -> anyhow::Result<Vec<f64>> {
            for _ in 0..plan.warmup {
                once()?;
            }
            (0..plan.reps).map(|_| once()).collect()
        };
        report(run())
    })?;
    let plan = Plan {
        reps: setting.reps,
        batch: setting.pick(Scale {
            quick: 200_000,
            full: 1_000_000,
        }),
        warmup: 1,
    };
    Ok(named("mutex_incr_per_s", under_master(&measure, &plan)?))
}

/// `CLOCK_MONOTONIC` in nanoseconds: comparable between the processes of one host.
fn monotonic_nanos() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(now.tv_nsec).unwrap_or(0)
}

/// The ring of `pipe_mb_s`, and the size of its writes and reads: 64 KiB.
const PIPE_CHUNK: usize = 64 << 10;

/// A word stamped at both ends of the `i`th chunk of `pipe_mb_s`, so that the reader can tell
/// a chunk lost, doubled or out of order cheaply.
fn pipe_stamp(i: u64) -> [u8; 8] {
    (i ^ 0x5a5a_5a5a_5a5a_5a5a).to_le_bytes()
}

/// `pipe_mb_s`: the measuring process creates `pipe(64 KiB)` and moves its ends by handle to
/// a writer worker, which writes `batch` chunks of 64 KiB, and a reader worker, which reads
/// them in chunks of 64 KiB (`read_exact`: copied out of the ring), checks the stamp at both
/// ends of each chunk and then the end of the stream. MB/s over the transfer, from the moment
/// both ends are open (the later of the two) until the reader has the end of the stream.
/// Before that moment the writer may have filled the ring once: 64 KiB of the count.
pub fn pipe_mb_s(setting: &Setting) -> anyhow::Result<Vec<Sample>> {
    let writer = process::def_process(
        |(handle, chunks): (Handle<PipeWriter>, u64)| -> Result<u64, String> {
            let run = || -> anyhow::Result<u64> {
                let mut writer = PipeWriter::open(handle).context("open the writer")?;
                let ready = monotonic_nanos();
                let mut chunk = vec![0xa5u8; PIPE_CHUNK];
                for i in 0..chunks {
                    let stamp = pipe_stamp(i);
                    chunk[..8].copy_from_slice(&stamp);
                    chunk[PIPE_CHUNK - 8..].copy_from_slice(&stamp);
                    writer.write_all(&chunk).context("write")?;
                }
                Ok(ready)
            };
            run().map_err(|e| format!("{e:#}"))
        },
    )?;
    let reader = process::def_process(
        |(handle, chunks): (Handle<PipeReader>, u64)| -> Result<(u64, u64), String> {
            let run = || -> anyhow::Result<(u64, u64)> {
                let mut reader = PipeReader::open(handle).context("open the reader")?;
                let ready = monotonic_nanos();
                let mut chunk = vec![0u8; PIPE_CHUNK];
                for i in 0..chunks {
                    reader
                        .read_exact(&mut chunk)
                        .with_context(|| format!("read chunk {i}"))?;
                    let stamp = pipe_stamp(i);
                    ensure!(
                        chunk[..8] == stamp && chunk[PIPE_CHUNK - 8..] == stamp,
                        "chunk {i} is not the {i}th chunk written"
                    );
                }
                let extra = reader.read(&mut chunk).context("read the end")?;
                ensure!(
                    extra == 0,
                    "more than {chunks} chunks came ({extra} bytes more)"
                );
                Ok((ready, monotonic_nanos()))
            };
            run().map_err(|e| format!("{e:#}"))
        },
    )?;
    let measure = process::def_process(move |plan: Plan| {
        let once = || -> anyhow::Result<f64> {
            let chunks = plan.batch as u64;
            let (w, r) = pipe(PIPE_CHUNK).context("pipe")?;
            let reading = reader.start(&(r.into_handle(), chunks))?;
            let writing = writer.start(&(w.into_handle(), chunks))?;
            let writer_ready = writer
                .join(writing)
                .context("join the writer")?
                .context("the writer ended without a result")?
                .map_err(|e| anyhow::anyhow!("the writer: {e}"))?;
            let (reader_ready, end) = reader
                .join(reading)
                .context("join the reader")?
                .context("the reader ended without a result")?
                .map_err(|e| anyhow::anyhow!("the reader: {e}"))?;
            let start = writer_ready.max(reader_ready);
            ensure!(end > start, "no time passed");
            let bytes = chunks as f64 * PIPE_CHUNK as f64;
            Ok(bytes / 1e6 / ((end - start) as f64 / 1e9))
        };
        let run = || -> anyhow::Result<Vec<f64>> {
            for _ in 0..plan.warmup {
                once()?;
            }
            (0..plan.reps).map(|_| once()).collect()
        };
        report(run())
    })?;
    let plan = Plan {
        reps: setting.reps,
        // 16 MiB with --quick, 256 MiB otherwise.
        batch: setting.pick(Scale {
            quick: (16 << 20) / PIPE_CHUNK,
            full: (256 << 20) / PIPE_CHUNK,
        }),
        warmup: 1,
    };
    Ok(named("pipe_mb_s", under_master(&measure, &plan)?))
}

/// The size of `nqueens12_speedup`.
const NQUEENS_SIZE: usize = 12;

/// The size of `nqueens14_speedup`: a search of about 100 ms in one process, the time of
/// OCamlnet's sequential n = 12 on this machine kind.
const NQUEENS_LARGE: usize = 14;

/// One timing of the `nqueens` example at size `n`: its `sequential` mode, then its `shared`
/// mode with `cores` searchers (`worker`), which must count the same; the count, and the
/// speed-up and the two times in milliseconds.
fn sequential_against_shared(
    worker: &crate::parallel::SetWorker,
    n: usize,
    cores: usize,
) -> anyhow::Result<(usize, [f64; 3])> {
    let start = Instant::now();
    let alone = black_box(crate::board::sequential(black_box(n)));
    let sequential = millis_since(start);
    let start = Instant::now();
    let shared = crate::parallel::count_with_set(worker, n, cores)?;
    let parallel = millis_since(start);
    ensure!(
        shared == alone,
        "the shared set counted {shared} classes, one process {alone}"
    );
    Ok((alone, [sequential / parallel, sequential, parallel]))
}

/// Milliseconds since `start`.
fn millis_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

/// `plan.warmup` calls of `once`, then the values of `plan.reps` more, one after the other.
fn repeated<const N: usize>(
    plan: &Plan,
    mut once: impl FnMut() -> anyhow::Result<[f64; N]>,
) -> anyhow::Result<Vec<f64>> {
    for _ in 0..plan.warmup {
        once()?;
    }
    let mut values = Vec::with_capacity(N * plan.reps);
    for _ in 0..plan.reps {
        values.extend(once()?);
    }
    Ok(values)
}

/// The values of repetitions of several figures, `names.len()` a repetition, as samples.
fn columns(names: &[&'static str], values: &[f64]) -> Vec<Sample> {
    values
        .chunks_exact(names.len())
        .flat_map(|rep| {
            names
                .iter()
                .zip(rep)
                .map(|(&name, &value)| Sample { name, value })
        })
        .collect()
}

/// `nqueens14_speedup`, for reading `nqueens12_speedup`: the same comparison at n = 14, where
/// the search dominates the fixed costs of a parallel run (creating the counter and the set,
/// starting and joining a worker, destroying both); beside it, `nqueens14_sequential_ms` and
/// `nqueens14_shared_ms`. One repetition per sample, after one warm-up.
pub fn nqueens14_speedup(setting: &Setting) -> anyhow::Result<Vec<Sample>> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let worker = crate::parallel::def_set_worker()?;
    let measure = process::def_process(move |plan: Plan| {
        report(repeated(&plan, || {
            sequential_against_shared(&worker, NQUEENS_LARGE, cores).map(|(_, times)| times)
        }))
    })?;
    let plan = Plan {
        reps: setting.reps,
        batch: 1,
        warmup: 1,
    };
    let values = under_master(&measure, &plan)?;
    Ok(columns(
        &[
            "nqueens14_speedup",
            "nqueens14_sequential_ms",
            "nqueens14_shared_ms",
        ],
        &values,
    ))
}

/// `nqueens12_speedup`: the `nqueens` example's count of the solutions of n = 12 up to
/// symmetry, in one process (its `sequential` mode: the search, the canonical forms in a `std`
/// set) against the same search by one process per core counting into a shared `HashSet`
/// (its `shared` mode: creating the counter of openings and the set, starting and joining
/// the workers included). Each repetition times both, one after the other, in the same
/// process; its sample is their quotient. The two counts must agree.
///
/// Beside it, for reading the speed-up: `nqueens12_sequential_ms` and `nqueens12_shared_ms`,
/// the two times; `nqueens1_shared_ms`, the shared mode for n = 1 (one trivial opening): its
/// fixed costs alone; and `nqueens12_channel_ms`, the example's `channel` mode (one worker per
/// core sends the canonical forms over a `shared::channel` to the measuring process).
pub fn nqueens12_speedup(setting: &Setting) -> anyhow::Result<Vec<Sample>> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let worker = crate::parallel::def_set_worker()?;
    let sender = crate::parallel::def_send_worker()?;
    let measure = process::def_process(move |plan: Plan| {
        let once = || -> anyhow::Result<[f64; 5]> {
            let (alone, [speedup, sequential, parallel]) =
                sequential_against_shared(&worker, NQUEENS_SIZE, cores)?;
            let start = Instant::now();
            crate::parallel::count_with_set(&worker, 1, cores)?;
            let fixed = millis_since(start);
            let start = Instant::now();
            let sent = crate::parallel::count_with_channel(&sender, NQUEENS_SIZE, cores)?;
            let channel = millis_since(start);
            ensure!(
                sent == alone,
                "the channel's collector counted {sent} classes, one process {alone}"
            );
            Ok([speedup, sequential, parallel, fixed, channel])
        };
        report(repeated(&plan, once))
    })?;
    let plan = Plan {
        reps: setting.reps * setting.pick(Scale { quick: 4, full: 2 }),
        batch: 1,
        warmup: 3,
    };
    let values = under_master(&measure, &plan)?;
    Ok(columns(
        &[
            "nqueens12_speedup",
            "nqueens12_sequential_ms",
            "nqueens12_shared_ms",
            "nqueens1_shared_ms",
            "nqueens12_channel_ms",
        ],
        &values,
    ))
}

/// The messages of a channel figure: how one is made from its number, and checked.
#[derive(Clone, Copy)]
struct ChannelLoad<T> {
    /// The figure.
    name: &'static str,
    /// Slots of the channel.
    slots: usize,
    /// Its `max_message`.
    max_message: usize,
    /// Writes message `i` into the sender's buffer (made once, by `make(0)`).
    fill: fn(&mut T, u64),
    /// Makes the sender's buffer.
    make: fn() -> T,
    /// Whether a received message is message `i`.
    check: fn(&T, u64) -> bool,
    /// Bytes a message counts for: 0 for a rate of messages.
    bytes: usize,
}

/// One measurement of a channel figure: the measuring process creates the channel and moves
/// its ends by handle to a sender worker, which sends `batch` messages, and a receiver
/// worker, which receives and checks them in order, then `Disconnected`. Messages (or MB) per
/// second from the moment both ends are open (the later of the two) until the receiver has
/// the end. Before that moment the sender may have filled the channel once: a few messages of
/// the count.
fn channel_figure<T>(
    load: ChannelLoad<T>,
    setting: &Setting,
    batch: Scale,
) -> anyhow::Result<Vec<Sample>>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    let sender = process::def_process(
        move |(handle, count): (Handle<Sender<T>>, u64)| -> Result<u64, String> {
            let run = || -> anyhow::Result<u64> {
                let tx = Sender::open(handle).context("open the sender")?;
                let ready = monotonic_nanos();
                let mut message = (load.make)();
                for i in 0..count {
                    (load.fill)(&mut message, i);
                    tx.send(&message).with_context(|| format!("send {i}"))?;
                }
                Ok(ready)
            };
            run().map_err(|e| format!("{e:#}"))
        },
    )?;
    let receiver = process::def_process(
        move |(handle, count): (Handle<Receiver<T>>, u64)| -> Result<(u64, u64), String> {
            let run = || -> anyhow::Result<(u64, u64)> {
                let rx = Receiver::open(handle).context("open the receiver")?;
                let ready = monotonic_nanos();
                for i in 0..count {
                    let message = rx.recv().with_context(|| format!("receive {i}"))?;
                    ensure!(
                        (load.check)(&message, i),
                        "message {i} is not the {i}th sent"
                    );
                }
                match rx.recv() {
                    Err(SharedError::Disconnected) => {}
                    other => bail!("after {count} messages, recv gave {:?}", other.map(|_| ())),
                }
                Ok((ready, monotonic_nanos()))
            };
            run().map_err(|e| format!("{e:#}"))
        },
    )?;
    let measure = process::def_process(move |plan: Plan| {
        let once = || -> anyhow::Result<f64> {
            let count = plan.batch as u64;
            let (tx, rx) = channel::<T>(load.slots, load.max_message).context("channel")?;
            let receiving = receiver.start(&(rx.into_handle(), count))?;
            let sending = sender.start(&(tx.into_handle(), count))?;
            let sender_ready = sender
                .join(sending)
                .context("join the sender")?
                .context("the sender ended without a result")?
                .map_err(|e| anyhow::anyhow!("the sender: {e}"))?;
            let (receiver_ready, end) = receiver
                .join(receiving)
                .context("join the receiver")?
                .context("the receiver ended without a result")?
                .map_err(|e| anyhow::anyhow!("the receiver: {e}"))?;
            let start = sender_ready.max(receiver_ready);
            ensure!(end > start, "no time passed");
            let seconds = (end - start) as f64 / 1e9;
            Ok(if load.bytes == 0 {
                count as f64 / seconds
            } else {
                count as f64 * load.bytes as f64 / 1e6 / seconds
            })
        };
        let run = || -> anyhow::Result<Vec<f64>> {
            for _ in 0..plan.warmup {
                once()?;
            }
            (0..plan.reps).map(|_| once()).collect()
        };
        report(run())
    })?;
    let plan = Plan {
        reps: setting.reps,
        batch: setting.pick(batch),
        warmup: 1,
    };
    Ok(named(load.name, under_master(&measure, &plan)?))
}

/// `channel_msgs_per_s`: one sender and one receiver worker, `u64` messages through
/// `channel(256, 16)`.
pub fn channel_msgs(setting: &Setting) -> anyhow::Result<Vec<Sample>> {
    let load = ChannelLoad::<u64> {
        name: "channel_msgs_per_s",
        slots: 256,
        max_message: 16,
        make: || 0,
        fill: |m, i| *m = i,
        check: |m, i| *m == i,
        bytes: 0,
    };
    channel_figure(
        load,
        setting,
        Scale {
            quick: 500_000,
            full: 5_000_000,
        },
    )
}

/// The size of the messages of `channel_4k_mb_s`.
const PAGE: usize = 4096;

/// `channel_4k_mb_s`: the same with 4 KiB `Vec<u8>` messages through `channel(64, 4 KiB +
/// 16)`, stamped with their number at both ends.
pub fn channel_4k(setting: &Setting) -> anyhow::Result<Vec<Sample>> {
    let load = ChannelLoad::<Vec<u8>> {
        name: "channel_4k_mb_s",
        slots: 64,
        max_message: PAGE + 16,
        make: || vec![0xa5; PAGE],
        fill: |m, i| {
            let stamp = pipe_stamp(i);
            m[..8].copy_from_slice(&stamp);
            m[PAGE - 8..].copy_from_slice(&stamp);
        },
        check: |m, i| {
            let stamp = pipe_stamp(i);
            m.len() == PAGE && m[..8] == stamp && m[PAGE - 8..] == stamp
        },
        bytes: PAGE,
    };
    channel_figure(
        load,
        setting,
        Scale {
            quick: (64 << 20) / PAGE,
            full: (512 << 20) / PAGE,
        },
    )
}

/// `chameneos_meetings_per_s`: the `chameneos` example's game of a meeting place and three
/// creatures (blue, red, yellow), each a process, talking through channels; the meetings per
/// second from the first arrival at the meeting place to the last meeting. Each repetition is
/// a whole game, its processes started afresh.
pub fn chameneos(setting: &Setting) -> anyhow::Result<Vec<Sample>> {
    let game = game::Game::define()?;
    let measure = process::def_process(move |plan: Plan| {
        let once = || -> anyhow::Result<f64> {
            let played = game.play(&game::THREE, plan.batch as u64)?;
            let game::Hosted { meetings, seconds } = played.hosted;
            ensure!(seconds > 0.0, "no time passed");
            Ok(meetings as f64 / seconds)
        };
        let run = || -> anyhow::Result<Vec<f64>> {
            for _ in 0..plan.warmup {
                once()?;
            }
            (0..plan.reps).map(|_| once()).collect()
        };
        report(run())
    })?;
    let plan = Plan {
        reps: setting.reps,
        // 20,000 meetings a game with --quick, 100,000 otherwise: a second or a few at the
        // rates of a busy 2-core machine, with a repetition a game.
        batch: setting.pick(Scale {
            quick: 20_000,
            full: 100_000,
        }),
        warmup: 1,
    };
    Ok(named(
        "chameneos_meetings_per_s",
        under_master(&measure, &plan)?,
    ))
}
