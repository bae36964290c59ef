//! The parallel modes of the `nqueens` example: worker processes take openings (see
//! [`board::openings`]) from a shared counter until none is left, and either put the canonical
//! form of each solution they find in a shared `HashSet` (the `shared` mode) or send it over
//! a channel to a collecting process that keeps the forms in a set of its own (the `channel`
//! mode). The test `tests/tests/nqueens_example.rs` and the bench include this module, so that
//! they run the example's own code.
//!
//! Each worker computes the list of openings itself (it is the same in every process) and
//! takes the next index with a `fetch_add` on a `SharedAtomics` word: a worker that drew cheap
//! openings takes more of them, so the workers end at nearly the same time.

use std::sync::atomic::Ordering;

use anyhow::{Context as _, ensure};
use netmcore::process::{self, ProcessType};
use netmcore::shared::{Error, Handle, HashSet, Sender, SharedAtomics, channel};
use serde::{Deserialize, Serialize};

use super::board;

/// What a worker of the `shared` mode is told.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct SetJob {
    /// The size of the board.
    pub n: usize,
    /// Word 0 is the index of the next opening to take.
    pub next: Handle<SharedAtomics>,
    /// The canonical forms found so far, by every worker.
    pub classes: Handle<HashSet<u64>>,
}

/// A worker of the `shared` mode; its result is the number of solutions it found, or what
/// went wrong.
pub type SetWorker = ProcessType<SetJob, Result<u64, String>>;

/// Defines [`SetWorker`]. Call it before `startup`, in the program that becomes the master.
pub fn def_set_worker() -> netmcore::Result<SetWorker> {
    process::def_process(|job: SetJob| set_worker(&job).map_err(|e| format!("{e:#}")))
}

/// The index of the next opening for this process, from the shared counter, until there is
/// none left.
fn take_openings(next: &SharedAtomics, count: usize) -> impl Iterator<Item = usize> + '_ {
    std::iter::from_fn(move || {
        let index = next.as_slice().first()?.fetch_add(1, Ordering::Relaxed);
        usize::try_from(index).ok().filter(|&i| i < count)
    })
}

/// In a worker of the `shared` mode: opens the counter and the set, and searches.
fn set_worker(job: &SetJob) -> anyhow::Result<u64> {
    ensure!(
        (1..=board::MAX_SIZE).contains(&job.n),
        "size {} is not 1 to {}",
        job.n,
        board::MAX_SIZE
    );
    let next = SharedAtomics::open(job.next).context("open the counter of openings")?;
    let classes = HashSet::open(job.classes).context("open the set of canonical forms")?;
    search_into_set(job.n, &next, &classes)
}

/// Takes openings of size `n` from `next` until none is left, and inserts the canonical form
/// of every solution of each into `classes`; returns the number of solutions found.
fn search_into_set(n: usize, next: &SharedAtomics, classes: &HashSet<u64>) -> anyhow::Result<u64> {
    let openings = board::openings(n);
    let mut found = 0;
    let mut failure = None;
    for index in take_openings(next, openings.len()) {
        found += board::canonical_forms(n, &openings[index], |form| {
            if failure.is_none() {
                failure = classes.insert(form).err();
            }
        });
        if let Some(e) = failure {
            return Err(e).context("insert into the set of canonical forms");
        }
    }
    Ok(found)
}

/// The capacity of the set of canonical forms for size `n`.
///
/// The number of classes grows about fivefold from one size to the next, a little less each
/// time; `5^(n - 7)` (at least 64) holds them at every size up to 16: 92 classes for 125 at
/// n = 10, 1,787 for 3,125 at 12, 45,752 for 78,125 at 14, 1,846,955 for 1,953,125 at 16. A
/// set that fills up anyway is an error, never a wrong count. The table has twice the
/// capacity of slots (see `HashSet`): sized closer, it misses the cache less (at n = 14, 4
/// MiB of slots rather than 8 took the shared mode from 1.48 × to 1.55 ×, medians of
/// interleaved runs).
pub fn capacity(n: usize) -> usize {
    let exponent = u32::try_from(n.saturating_sub(7)).unwrap_or(u32::MAX);
    5usize.checked_pow(exponent).unwrap_or(usize::MAX).max(64)
}

/// In a worker: the number of solutions of size `n` up to symmetry, counted into a shared
/// set by `searchers` processes: this one and `searchers - 1` workers of type `worker`.
///
/// The calling process searches too rather than wait in `join`: `searchers` processes search
/// at the cost of `searchers - 1` forks.
pub fn count_with_set(worker: &SetWorker, n: usize, searchers: usize) -> anyhow::Result<usize> {
    ensure!(
        (1..=board::MAX_SIZE).contains(&n),
        "size {n} is not 1 to {}",
        board::MAX_SIZE
    );
    let next = SharedAtomics::new(1).context("create the counter of openings")?;
    let classes = HashSet::<u64>::with_capacity(capacity(n)).context("create the set")?;
    let job = SetJob {
        n,
        next: next.handle(),
        classes: classes.handle(),
    };
    let pids = (1..searchers)
        .map(|_| worker.start(&job))
        .collect::<Result<Vec<_>, _>>()
        .context("start a worker")?;
    let searched = search_into_set(n, &next, &classes);
    for pid in pids {
        worker
            .join(pid)
            .context("join a worker")?
            .with_context(|| format!("worker {} ended without a result", pid.0))?
            .map_err(anyhow::Error::msg)?;
    }
    searched?;
    Ok(classes.len())
}

/// How many canonical forms a worker of the `channel` mode sends in one message, at most.
pub const BATCH: usize = 256;

/// The largest encoding of a batch: a length and [`BATCH`] `u64`s of at most 10 bytes each
/// (variable-length integers), with room to spare.
const MAX_MESSAGE: usize = 16 + 10 * BATCH;

/// How many messages the channel of the `channel` mode holds.
const CHANNEL_SLOTS: usize = 64;

/// What a worker of the `channel` mode is told.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct SendJob {
    /// The size of the board.
    pub n: usize,
    /// Word 0 is the index of the next opening to take.
    pub next: Handle<SharedAtomics>,
    /// Where the worker sends the canonical forms it finds, in batches (a sender moved to it).
    pub forms: Handle<Sender<Vec<u64>>>,
}

/// A worker of the `channel` mode; its result is the number of solutions it found, or what
/// went wrong.
pub type SendWorker = ProcessType<SendJob, Result<u64, String>>;

/// Defines [`SendWorker`]. Call it before `startup`, in the program that becomes the master.
pub fn def_send_worker() -> netmcore::Result<SendWorker> {
    process::def_process(|job: SendJob| send_worker(&job).map_err(|e| format!("{e:#}")))
}

/// In a worker of the `channel` mode: opens the counter and its sender, takes openings and
/// sends the canonical forms of their solutions in batches of [`BATCH`] (the last one
/// shorter).
fn send_worker(job: &SendJob) -> anyhow::Result<u64> {
    ensure!(
        (1..=board::MAX_SIZE).contains(&job.n),
        "size {} is not 1 to {}",
        job.n,
        board::MAX_SIZE
    );
    let next = SharedAtomics::open(job.next).context("open the counter of openings")?;
    let forms = Sender::open(job.forms).context("open the sender")?;
    let openings = board::openings(job.n);
    let mut batch = Vec::with_capacity(BATCH);
    let mut found = 0;
    let mut failure = None;
    for index in take_openings(&next, openings.len()) {
        found += board::canonical_forms(job.n, &openings[index], |form| {
            batch.push(form);
            if batch.len() == BATCH && failure.is_none() {
                failure = forms.send(&batch).err();
                batch.clear();
            }
        });
        if let Some(e) = failure {
            return Err(e).context("send canonical forms");
        }
    }
    if !batch.is_empty() {
        forms.send(&batch).context("send canonical forms")?;
    }
    Ok(found)
}

/// In a worker: the number of solutions of size `n` up to symmetry, found by `workers`
/// processes of type `worker` that send the canonical forms over a channel to this process,
/// which keeps them in a `std` set.
///
/// The ends are counted: each worker gets a sender of its own (moved to it by handle), and
/// this process keeps none, so the channel disconnects — and the collecting loop ends — once
/// every worker has dropped its sender, whether it finished or died. A worker that died is
/// then caught by its join.
pub fn count_with_channel(worker: &SendWorker, n: usize, workers: usize) -> anyhow::Result<usize> {
    ensure!(
        (1..=board::MAX_SIZE).contains(&n),
        "size {n} is not 1 to {}",
        board::MAX_SIZE
    );
    let next = SharedAtomics::new(1).context("create the counter of openings")?;
    let (sender, receiver) =
        channel::<Vec<u64>>(CHANNEL_SLOTS, MAX_MESSAGE).context("create the channel")?;
    let mut pids = Vec::new();
    for _ in 0..workers.max(1) {
        let job = SendJob {
            n,
            next: next.handle(),
            forms: sender.clone().into_handle(),
        };
        pids.push(worker.start(&job).context("start a worker")?);
    }
    drop(sender);
    let mut classes = std::collections::HashSet::new();
    loop {
        match receiver.recv() {
            Ok(batch) => classes.extend(batch),
            Err(Error::Disconnected) => break,
            Err(e) => return Err(e).context("receive canonical forms"),
        }
    }
    for pid in pids {
        worker
            .join(pid)
            .context("join a worker")?
            .with_context(|| format!("worker {} ended without a result", pid.0))?
            .map_err(anyhow::Error::msg)?;
    }
    Ok(classes.len())
}
