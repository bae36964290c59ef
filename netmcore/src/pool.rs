//! A pool of worker processes for parallel map (DESIGN §8): many small tasks on a fixed set of
//! processes, so that a task costs a message, not a fork.
//!
//! A [`Task<A, R>`] is defined like a process type, before startup or in the master, with
//! [`def_task`]. A worker starts a [`Pool`] of processes that run it and maps items through
//! it: [`Pool::map`] in order, [`Pool::map_each`] with a result per item,
//! [`Pool::imap_unordered`] as results arrive. [`map`] is a whole run in one call.
//!
//! ```
//! use netmcore::{Config, pool};
//!
//! let square = pool::def_task(|n: u64| n * n)?;
//! let dir = tempfile::tempdir()?;
//! let squares = pool::map(Config::new(dir.path().join("job")), &square, (1..=100).collect(), 2)?;
//! assert_eq!(squares.iter().sum::<u64>(), 338_350);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Failures
//!
//! A task that panics fails alone, with [`TaskFailure::Panicked`] and its message; its worker
//! goes on with the next item. A worker that dies in a task (killed, a crash, `exit`) is
//! replaced by a new process, and the items it held that had no result yet are retried one
//! by one on the other workers; an item whose worker dies a second time fails with
//! [`TaskFailure::Died`]. While it waits for results, the pool reads the master's death board
//! every 10 ms, so it learns of a death that soon, whether the worker was busy or idle; it
//! never waits for a dead process, and gives exactly one outcome per item.
//!
//! # Streaming
//!
//! Items are taken from the input iterator only as workers need them: at most
//! [`DEPTH`] chunks per worker are in flight, so an iterator of millions of items runs in
//! bounded memory (with [`Pool::imap_unordered`], or with results that take no room).
//!
//! # Chunks
//!
//! Items travel in chunks, one message each way per chunk. By default the pool sizes chunks so
//! that a chunk takes a worker about [`TARGET_CHUNK`] of work, measured from the replies, and
//! no more than a quarter of a worker's share of what is left when the input's length is
//! known, so that trivial tasks cost little and the last chunks keep every core busy.
//! [`Pool::chunk_size`] fixes the size instead.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::num::NonZeroUsize;
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use netmcore_ipc::death_board::{DeathBoard, tag_of};
use netmcore_resources::ProcessId;
use netmcore_shared::{Error, Handle, Receiver, Result, Sender, channel};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use netmcore_shared::TaskFailure;

use crate::Config;
use crate::process::{self, ProcessType};

/// The largest encoded message of the pool's channels, in bytes: a chunk of items or a reply
/// of results. A chunk that would be larger is split; a single item or result that is larger
/// fails with [`TaskFailure::TooLarge`].
pub const MAX_MESSAGE: usize = 256 << 10;

/// How many chunks a worker holds at most (one it works on, the others queued in its channel).
pub const DEPTH: usize = 4;

/// The work a default chunk aims at, from the time the workers report per item.
pub const TARGET_CHUNK: Duration = Duration::from_millis(2);

/// The most items in a default chunk.
const MAX_CHUNK: usize = 1 << 13;

/// How often a pool waiting for results looks at the death board.
const POLL: Duration = Duration::from_millis(10);

/// A task of a pool: its body runs in the pool's worker processes. `Copy`, like
/// [`ProcessType`].
pub struct Task<A, R> {
    worker: ProcessType<Start<A, R>, ()>,
}

impl<A, R> Clone for Task<A, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<A, R> Copy for Task<A, R> {}

impl<A, R> fmt::Debug for Task<A, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("fork_point", &self.worker.fork_point())
            .field("arg", &std::any::type_name::<A>())
            .field("result", &std::any::type_name::<R>())
            .finish()
    }
}

/// What a worker process of a pool starts with: the ends of its channels.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
struct Start<A, R> {
    worker: u32,
    tasks: Handle<Receiver<Chunk<A>>>,
    results: Handle<Sender<Reply<R>>>,
}

/// Items for a worker; `id` is unique in the pool's life.
#[derive(Serialize, Deserialize)]
#[serde(bound(serialize = "A: Serialize", deserialize = "A: DeserializeOwned"))]
struct Chunk<A> {
    id: u64,
    items: Vec<A>,
}

/// The outcomes of `outcomes.len()` items of chunk `id`, from its item `first` on; `nanos`
/// is the time the worker spent on them.
#[derive(Serialize, Deserialize)]
#[serde(bound(serialize = "R: Serialize", deserialize = "R: DeserializeOwned"))]
struct Reply<R> {
    worker: u32,
    id: u64,
    first: u32,
    nanos: u64,
    outcomes: Vec<std::result::Result<R, TaskFailure>>,
}

/// Defines a task whose body maps an `A` to an `R`, for pools to run (before startup or in the
/// master, like [`process::def_process`]).
///
/// # Errors
///
/// [`Error::Master`] with [`crate::Error::NotInMaster`] in a worker.
pub fn def_task<A, R, F>(body: F) -> Result<Task<A, R>>
where
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + 'static,
    F: Fn(A) -> R + Send + Sync + 'static,
{
    let worker = process::def_process(move |start: Start<A, R>| serve(&body, start))?;
    Ok(Task { worker })
}

/// The life of a worker process: chunks in, replies out, until the pool closes its channel.
fn serve<A, R, F>(body: &F, start: Start<A, R>)
where
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + 'static,
    F: Fn(A) -> R,
{
    // A task's panic is its outcome, with the message; the worker does not print it too.
    let print = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        if !IN_TASK.get() {
            print(info);
        }
    }));
    let tasks = Receiver::open(start.tasks)
        .unwrap_or_else(|e| panic!("a pool worker cannot open its task channel: {e}"));
    let results = Sender::open(start.results)
        .unwrap_or_else(|e| panic!("a pool worker cannot open its result channel: {e}"));
    while let Ok(chunk) = tasks.recv() {
        let began = Instant::now();
        let outcomes: Vec<_> = chunk
            .items
            .into_iter()
            .map(|item| run_one(body, item))
            .collect();
        let nanos = u64::try_from(began.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if deliver(&results, start.worker, chunk.id, 0, nanos, outcomes).is_err() {
            // The pool is gone: nobody waits for what is left.
            return;
        }
    }
}

thread_local! {
    /// Whether this worker runs a task now (its panics are not printed).
    static IN_TASK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs the body on one item; a panic becomes the item's failure.
fn run_one<A, R, F: Fn(A) -> R>(body: &F, item: A) -> std::result::Result<R, TaskFailure> {
    IN_TASK.set(true);
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| body(item)));
    IN_TASK.set(false);
    outcome.map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic with a payload that is not a string".to_owned());
        TaskFailure::Panicked(message)
    })
}

/// Sends outcomes back, split in halves while a reply is too large; a single result that is
/// too large by itself is replaced by its failure.
fn deliver<R: Serialize + DeserializeOwned + 'static>(
    results: &Sender<Reply<R>>,
    worker: u32,
    id: u64,
    first: u32,
    nanos: u64,
    outcomes: Vec<std::result::Result<R, TaskFailure>>,
) -> Result<()> {
    let reply = Reply {
        worker,
        id,
        first,
        nanos,
        outcomes,
    };
    match results.send(&reply) {
        Err(Error::TooLarge { size, max }) => {
            let mut outcomes = reply.outcomes;
            if outcomes.len() <= 1 {
                let failure = TaskFailure::TooLarge(format!(
                    "its result takes {size} bytes encoded, more than the pool's {max}"
                ));
                return deliver(results, worker, id, first, nanos, vec![Err(failure)]);
            }
            let tail = outcomes.split_off(outcomes.len() / 2);
            let half = u32::try_from(outcomes.len()).unwrap_or(u32::MAX);
            deliver(results, worker, id, first, nanos / 2, outcomes)?;
            deliver(
                results,
                worker,
                id,
                first.saturating_add(half),
                nanos / 2,
                tail,
            )
        }
        other => other,
    }
}

/// A pool of worker processes running one task (see the [module](self) documentation).
///
/// It belongs to the process that started it and is not `Sync`: one call at a time maps items.
/// Dropping it closes it, as [`Pool::close`] does.
pub struct Pool<A, R> {
    task: Task<A, R>,
    chunk_size: Option<NonZeroUsize>,
    inner: RefCell<Inner<A, R>>,
}

struct Inner<A, R> {
    workers: Vec<Worker<A>>,
    results: Option<Receiver<Reply<R>>>,
    results_end: Sender<Reply<R>>,
    board: Option<DeathBoard>,
    next_worker: u32,
    next_chunk: u64,
    /// Nanoseconds a worker spent per item, from the last replies (`None` before any).
    nanos_per_item: Option<f64>,
    /// Workers that died in a row without having answered or held anything: processes that
    /// cannot even start serving (e.g. their channels cannot be opened).
    barren_deaths: usize,
}

/// A worker process and its channel.
struct Worker<A> {
    number: u32,
    pid: ProcessId,
    tag: Option<u32>,
    tasks: Sender<Chunk<A>>,
    /// Keeps the channel's receiving side counted, so that a worker that dies before it opened
    /// its end never makes a send fail; the pool learns of deaths from the board.
    _tasks_end: Receiver<Chunk<A>>,
    /// The chunks it holds (sent, not fully answered).
    held: Vec<u64>,
    /// Whether it holds a retry, alone.
    solo: bool,
    /// Whether a reply of it came.
    answered: bool,
}

impl<A, R> fmt::Debug for Pool<A, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner.borrow();
        f.debug_struct("Pool")
            .field("task", &self.task)
            .field("chunk_size", &self.chunk_size)
            .field(
                "workers",
                &inner.workers.iter().map(|w| w.pid).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl<A, R> Pool<A, R>
where
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + 'static,
{
    /// Starts `workers` worker processes running `task` (0: one per CPU). Called in a worker
    /// (or in the master's first process code).
    ///
    /// # Errors
    ///
    /// [`Error::Master`] when the processes cannot be started (e.g. `NotStarted` before
    /// startup), and the errors of creating the channels.
    pub fn start(task: &Task<A, R>, workers: usize) -> Result<Pool<A, R>> {
        let workers = if workers == 0 {
            std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
        } else {
            workers
        };
        let (results_end, results) = channel::<Reply<R>>(workers * DEPTH + 1, MAX_MESSAGE)?;
        let mut inner = Inner {
            workers: Vec::with_capacity(workers),
            results: Some(results),
            results_end,
            board: netmcore_master::death_board(),
            next_worker: 0,
            next_chunk: 0,
            nanos_per_item: None,
            barren_deaths: 0,
        };
        for _ in 0..workers {
            let worker = inner.spawn(task)?;
            inner.workers.push(worker);
        }
        Ok(Pool {
            task: *task,
            chunk_size: None,
            inner: RefCell::new(inner),
        })
    }

    /// Fixes the number of items per chunk (at least 1), instead of the default that adapts
    /// to the input and to the time a task takes.
    #[must_use]
    pub fn chunk_size(mut self, items: usize) -> Pool<A, R> {
        self.chunk_size = NonZeroUsize::new(items.max(1));
        self
    }

    /// The number of worker processes.
    pub fn workers(&self) -> usize {
        self.inner.borrow().workers.len()
    }

    /// The process ids of the workers now (a dead worker's replacement has a new id).
    pub fn worker_ids(&self) -> Vec<ProcessId> {
        self.inner.borrow().workers.iter().map(|w| w.pid).collect()
    }

    /// Maps every item through the task; the results in input order.
    ///
    /// # Errors
    ///
    /// [`Error::Task`] with the first failure in input order (every item ran); the errors of
    /// the channels and of starting a replacement worker; [`Error::Broken`] when new worker
    /// processes keep dying before they serve anything.
    pub fn map(&self, items: impl IntoIterator<Item = A>) -> Result<Vec<R>> {
        let mut results = Vec::new();
        let mut failed = None;
        self.in_order(items, |index, outcome| match outcome {
            Ok(result) if failed.is_none() => results.push(result),
            Ok(_) => {}
            Err(failure) => {
                failed.get_or_insert((index, failure));
            }
        })?;
        match failed {
            Some((index, failure)) => Err(Error::Task { index, failure }),
            None => Ok(results),
        }
    }

    /// Maps every item through the task; an outcome per item, in input order.
    ///
    /// # Errors
    ///
    /// The errors of the channels and of starting a replacement worker; [`Error::Broken`] when
    /// new worker processes keep dying before they serve anything.
    pub fn map_each(
        &self,
        items: impl IntoIterator<Item = A>,
    ) -> Result<Vec<std::result::Result<R, TaskFailure>>> {
        let mut outcomes = Vec::new();
        self.in_order(items, |_, outcome| outcomes.push(outcome))?;
        Ok(outcomes)
    }

    /// Runs the items and hands their outcomes to `take` in input order; outcomes that arrive
    /// early wait in a buffer, so only those take room.
    fn in_order(
        &self,
        items: impl IntoIterator<Item = A>,
        mut take: impl FnMut(usize, std::result::Result<R, TaskFailure>),
    ) -> Result<()> {
        let mut early = std::collections::BTreeMap::new();
        let mut next = 0;
        let mut run = self.run(items.into_iter());
        while let Some((index, outcome)) = run.next_outcome()? {
            if index != next {
                early.insert(index, outcome);
                continue;
            }
            take(index, outcome);
            next += 1;
            while let Some(outcome) = early.remove(&next) {
                take(next, outcome);
                next += 1;
            }
        }
        if early.is_empty() {
            Ok(())
        } else {
            // Every index gets an outcome by construction; should one be missing, the error
            // names the pool's results channel rather than panic.
            let inner = self.inner.borrow();
            let results = inner.results.as_ref().ok_or(Error::Disconnected)?;
            Err(Error::Corrupt {
                id: results.handle().id(),
                what: format!("the pool gave no outcome for item {next}"),
            })
        }
    }

    /// Maps every item through the task, giving each outcome with its index as soon as it
    /// arrives. Items are taken from `items` as workers need them.
    ///
    /// When the pool cannot go on (its master is gone, no replacement worker can start, or new
    /// workers keep dying before they serve anything),
    /// the items without an outcome get [`TaskFailure::Died`] with the reason.
    ///
    /// # Errors
    ///
    /// None so far at the start; the result type leaves room for checks before the first item.
    pub fn imap_unordered(
        &self,
        items: impl IntoIterator<Item = A>,
    ) -> Result<impl Iterator<Item = (usize, std::result::Result<R, TaskFailure>)>> {
        let mut run = self.run(items.into_iter());
        Ok(std::iter::from_fn(move || match run.next_outcome() {
            Ok(next) => next,
            Err(e) => run.abandon(&e),
        }))
    }

    /// Ends the workers and joins them (after the chunks they hold, if any).
    ///
    /// # Errors
    ///
    /// [`Error::Master`] when a join fails.
    pub fn close(self) -> Result<()> {
        self.shut()
    }

    fn run<I: Iterator<Item = A>>(&self, items: I) -> Run<'_, A, R, I> {
        Run {
            pool: self,
            input: items,
            next_index: 0,
            exhausted: false,
            retries: VecDeque::new(),
            flight: HashMap::new(),
            ready: VecDeque::new(),
            failed: None,
        }
    }

    fn shut(&self) -> Result<()> {
        let mut inner = self.inner.borrow_mut();
        // No more chunks, and no more room for replies: a worker that waits to send ends too.
        inner.results = None;
        let workers = std::mem::take(&mut inner.workers);
        drop(inner);
        let mut first_error = None;
        for worker in workers {
            let Worker { pid, tasks, .. } = worker;
            drop(tasks);
            if let Err(e) = self.task.worker.join(pid) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), |e| Err(e.into()))
    }
}

impl<A, R> Drop for Pool<A, R> {
    fn drop(&mut self) {
        let inner = self.inner.get_mut();
        inner.results = None;
        for worker in std::mem::take(&mut inner.workers) {
            let Worker { pid, tasks, .. } = worker;
            drop(tasks);
            let _ = netmcore_master::join(self.task.worker.join_point(), pid);
        }
    }
}

impl<A, R> Inner<A, R>
where
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + 'static,
{
    /// Starts one more worker process with a channel of its own.
    fn spawn(&mut self, task: &Task<A, R>) -> Result<Worker<A>> {
        let (tasks, tasks_end) = channel::<Chunk<A>>(DEPTH, MAX_MESSAGE)?;
        let number = self.next_worker;
        self.next_worker += 1;
        let start = Start {
            worker: number,
            tasks: tasks_end.handle(),
            results: self.results_end.handle(),
        };
        let pid = task.worker.start(&start)?;
        Ok(Worker {
            number,
            pid,
            tag: tag_of(pid),
            tasks,
            _tasks_end: tasks_end,
            held: Vec::new(),
            solo: false,
            answered: false,
        })
    }

    fn is_dead(&self, worker: &Worker<A>) -> bool {
        match (self.board, worker.tag) {
            (Some(board), Some(tag)) => board.is_dead(tag),
            _ => false,
        }
    }
}

/// One chunk on its way: where its items come from, which have an outcome, who holds it.
struct Flight<A> {
    chunk: Chunk<A>,
    /// The input index of each item.
    indices: Vec<usize>,
    answered: Vec<bool>,
    left: usize,
    worker: u32,
    /// How many workers died holding these items (0 or 1).
    deaths: u8,
    /// How the workers that died holding it ended, for the failure's message.
    history: Vec<ProcessId>,
}

/// Items to send (again): after their worker died (one item each), or the halves of a chunk
/// too large for a message, or a chunk that could not be sent.
struct Pending<A> {
    items: Vec<A>,
    indices: Vec<usize>,
    deaths: u8,
    history: Vec<ProcessId>,
}

/// A map in progress.
struct Run<'p, A, R, I> {
    pool: &'p Pool<A, R>,
    input: I,
    next_index: usize,
    exhausted: bool,
    retries: VecDeque<Pending<A>>,
    flight: HashMap<u64, Flight<A>>,
    ready: VecDeque<(usize, std::result::Result<R, TaskFailure>)>,
    /// Set when the pool cannot go on: every item left fails with it.
    failed: Option<String>,
}

impl<A, R, I> Run<'_, A, R, I>
where
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + 'static,
    I: Iterator<Item = A>,
{
    /// The next outcome, `None` when every item has one.
    fn next_outcome(&mut self) -> Result<Option<(usize, std::result::Result<R, TaskFailure>)>> {
        loop {
            if let Some(next) = self.ready.pop_front() {
                return Ok(Some(next));
            }
            if let Some(reason) = &self.failed {
                let reason = reason.clone();
                return Ok(self.fail_next(&reason));
            }
            self.dispatch()?;
            if self.flight.is_empty() && self.retries.is_empty() && self.exhausted {
                return Ok(None);
            }
            self.collect()?;
        }
    }

    /// After an error the pool cannot go on: every item without an outcome fails with it.
    fn abandon(&mut self, error: &Error) -> Option<(usize, std::result::Result<R, TaskFailure>)> {
        if self.failed.is_none() {
            self.failed = Some(format!("the pool cannot go on: {error}"));
        }
        if let Some(next) = self.ready.pop_front() {
            return Some(next);
        }
        let reason = self.failed.clone().unwrap_or_default();
        self.fail_next(&reason)
    }

    fn fail_next(&mut self, reason: &str) -> Option<(usize, std::result::Result<R, TaskFailure>)> {
        let failure = || Err(TaskFailure::Died(reason.to_owned()));
        if let Some(pending) = self.retries.pop_front() {
            for &index in &pending.indices {
                self.ready.push_back((index, failure()));
            }
            return self.ready.pop_front();
        }
        if let Some(&id) = self.flight.keys().next() {
            let flight = self.flight.remove(&id)?;
            for (k, &index) in flight.indices.iter().enumerate() {
                if !flight.answered[k] {
                    self.ready.push_back((index, failure()));
                }
            }
            return self.ready.pop_front();
        }
        if self.exhausted {
            return None;
        }
        match self.input.next() {
            Some(_) => {
                let index = self.next_index;
                self.next_index += 1;
                Some((index, failure()))
            }
            None => {
                self.exhausted = true;
                None
            }
        }
    }

    /// Gives chunks to workers that hold fewer than [`DEPTH`]. An item retried after a death
    /// goes alone to a worker that holds nothing else, and that worker gets nothing more until
    /// it answered: if it dies too, the item is the one that killed it.
    fn dispatch(&mut self) -> Result<()> {
        let pool = self.pool;
        let mut inner = pool.inner.borrow_mut();
        let count = inner.workers.len();
        for w in 0..count {
            while inner.workers[w].held.len() < DEPTH && !inner.workers[w].solo {
                let idle = inner.workers[w].held.is_empty();
                let Some((id, mut flight)) = self.next_chunk(&mut inner, idle) else {
                    break;
                };
                let worker = &mut inner.workers[w];
                match worker.tasks.try_send(&flight.chunk) {
                    Ok(()) => {
                        flight.worker = worker.number;
                        worker.held.push(id);
                        worker.solo = flight.deaths > 0;
                        self.flight.insert(id, flight);
                    }
                    Err(Error::TooLarge { size, max }) => self.split(flight, size, max),
                    Err(Error::Full) => {
                        // Cannot happen while `held` counts right; give the items back.
                        self.give_back(flight);
                        break;
                    }
                    Err(e) => {
                        self.give_back(flight);
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }

    /// The next chunk to send: what waits to be sent again first (a retry only when `idle`),
    /// then fresh items.
    fn next_chunk(&mut self, inner: &mut Inner<A, R>, idle: bool) -> Option<(u64, Flight<A>)> {
        let id = inner.next_chunk;
        let waiting = self.retries.iter().position(|p| idle || p.deaths == 0);
        if let Some(pending) = waiting.and_then(|at| self.retries.remove(at)) {
            inner.next_chunk += 1;
            let len = pending.items.len();
            return Some((
                id,
                Flight {
                    chunk: Chunk {
                        id,
                        items: pending.items,
                    },
                    indices: pending.indices,
                    answered: vec![false; len],
                    left: len,
                    worker: 0,
                    deaths: pending.deaths,
                    history: pending.history,
                },
            ));
        }
        if self.exhausted {
            return None;
        }
        let size = self.size(inner);
        let mut items = Vec::with_capacity(size.min(1024));
        let mut indices = Vec::with_capacity(size.min(1024));
        while items.len() < size {
            match self.input.next() {
                Some(item) => {
                    items.push(item);
                    indices.push(self.next_index);
                    self.next_index += 1;
                }
                None => {
                    self.exhausted = true;
                    break;
                }
            }
        }
        if items.is_empty() {
            return None;
        }
        inner.next_chunk += 1;
        let len = items.len();
        Some((
            id,
            Flight {
                chunk: Chunk { id, items },
                indices,
                answered: vec![false; len],
                left: len,
                worker: 0,
                deaths: 0,
                history: Vec::new(),
            },
        ))
    }

    /// The number of items of the next fresh chunk.
    fn size(&self, inner: &Inner<A, R>) -> usize {
        if let Some(fixed) = self.pool.chunk_size {
            return fixed.get();
        }
        let workers = inner.workers.len().max(1);
        // A chunk of about TARGET_CHUNK of work; small while nothing is measured.
        let by_time = inner.nanos_per_item.map_or(1, |nanos| {
            let items = TARGET_CHUNK.as_nanos() as f64 / nanos.max(1.0);
            (items as usize).clamp(1, MAX_CHUNK)
        });
        // No more than a quarter of a worker's share of what is left, when that is known.
        match self.input.size_hint() {
            (low, Some(high)) if low == high => by_time.min((low / (4 * workers)).max(1)),
            _ => by_time,
        }
    }

    /// A chunk too large for a message: its halves, sent next, or the failure of its single
    /// item.
    fn split(&mut self, flight: Flight<A>, size: usize, max: usize) {
        let Flight {
            chunk,
            mut indices,
            deaths,
            history,
            ..
        } = flight;
        let mut items = chunk.items;
        if items.len() == 1 {
            let failure = TaskFailure::TooLarge(format!(
                "the item takes {size} bytes encoded, more than the pool's {max}"
            ));
            self.ready.push_back((indices[0], Err(failure)));
            return;
        }
        let half = items.len() / 2;
        let tail = Pending {
            items: items.split_off(half),
            indices: indices.split_off(half),
            deaths,
            history: history.clone(),
        };
        self.retries.push_front(tail);
        self.retries.push_front(Pending {
            items,
            indices,
            deaths,
            history,
        });
    }

    /// Items of a chunk that could not be sent go back to be sent next.
    fn give_back(&mut self, flight: Flight<A>) {
        self.retries.push_front(Pending {
            items: flight.chunk.items,
            indices: flight.indices,
            deaths: flight.deaths,
            history: flight.history,
        });
    }

    /// Waits for replies (or deaths) and turns them into outcomes.
    fn collect(&mut self) -> Result<()> {
        let pool = self.pool;
        let reply = {
            let inner = pool.inner.borrow();
            let results = inner.results.as_ref().ok_or(Error::Disconnected)?;
            match results.recv_timeout(POLL) {
                Ok(reply) => Some(reply),
                Err(Error::Timeout) => None,
                Err(e) => return Err(e),
            }
        };
        if let Some(reply) = reply {
            self.apply(reply);
            self.drain()?;
        }
        self.bury()
    }

    /// Takes every reply that is in the results channel now, without waiting.
    fn drain(&mut self) -> Result<()> {
        loop {
            let more = {
                let inner = self.pool.inner.borrow();
                let results = inner.results.as_ref().ok_or(Error::Disconnected)?;
                results.try_recv()?
            };
            match more {
                Some(reply) => self.apply(reply),
                None => return Ok(()),
            }
        }
    }

    fn apply(&mut self, reply: Reply<R>) {
        let pool = self.pool;
        {
            let mut inner = pool.inner.borrow_mut();
            inner.barren_deaths = 0;
            if let Some(w) = inner.workers.iter_mut().find(|w| w.number == reply.worker) {
                w.answered = true;
            }
        }
        let Some(flight) = self.flight.get_mut(&reply.id) else {
            // A chunk of an earlier map that was abandoned, or answered already.
            return;
        };
        if reply.nanos > 0 && !reply.outcomes.is_empty() {
            let per_item = reply.nanos as f64 / reply.outcomes.len() as f64;
            let mut inner = pool.inner.borrow_mut();
            inner.nanos_per_item = Some(match inner.nanos_per_item {
                Some(old) => 0.5 * old + 0.5 * per_item,
                None => per_item,
            });
        }
        let first = reply.first as usize;
        for (k, outcome) in reply.outcomes.into_iter().enumerate() {
            let at = first + k;
            if at < flight.answered.len() && !flight.answered[at] {
                flight.answered[at] = true;
                flight.left -= 1;
                self.ready.push_back((flight.indices[at], outcome));
            }
        }
        if flight.left == 0 {
            let worker = flight.worker;
            self.flight.remove(&reply.id);
            let mut inner = pool.inner.borrow_mut();
            if let Some(w) = inner.workers.iter_mut().find(|w| w.number == worker) {
                w.held.retain(|&id| id != reply.id);
                w.solo &= !w.held.is_empty();
            }
        }
    }

    /// Replaces the workers that died; what they held without an outcome is retried or fails.
    fn bury(&mut self) -> Result<()> {
        let pool = self.pool;
        let dead: Vec<usize> = {
            let inner = pool.inner.borrow();
            (0..inner.workers.len())
                .filter(|&w| inner.is_dead(&inner.workers[w]))
                .collect()
        };
        if dead.is_empty() {
            return Ok(());
        }
        // Everything a dead worker sent before it ended is in the channel now: take it first,
        // so that nothing it answered runs twice.
        self.drain()?;
        for w in dead {
            let (held, pid) = {
                let mut inner = pool.inner.borrow_mut();
                let barren = {
                    let old = &inner.workers[w];
                    !old.answered && old.held.is_empty()
                };
                inner.barren_deaths = if barren { inner.barren_deaths + 1 } else { 0 };
                if inner.barren_deaths > 2 * inner.workers.len() + 2 {
                    // Replacing them again would only start more of the same.
                    return Err(Error::Broken);
                }
                let replacement = inner.spawn(&pool.task);
                let old = match replacement {
                    Ok(new) => std::mem::replace(&mut inner.workers[w], new),
                    Err(e) => {
                        drop(inner);
                        return Err(e);
                    }
                };
                let pid = old.pid;
                // Its process has ended: the join returns at once and forgets it.
                let _ = netmcore_master::join(pool.task.worker.join_point(), pid);
                (old.held, pid)
            };
            for id in held {
                let Some(flight) = self.flight.remove(&id) else {
                    continue;
                };
                self.orphan(flight, pid);
            }
        }
        Ok(())
    }

    /// The items of a chunk whose worker died: retried alone once, then failed.
    fn orphan(&mut self, flight: Flight<A>, pid: ProcessId) {
        let Flight {
            chunk,
            indices,
            answered,
            deaths,
            mut history,
            ..
        } = flight;
        history.push(pid);
        for ((index, item), done) in indices.into_iter().zip(chunk.items).zip(answered) {
            if done {
                continue;
            }
            if deaths >= 1 {
                let who: Vec<String> = history.iter().map(ToString::to_string).collect();
                let failure = TaskFailure::Died(format!(
                    "its worker ended while it ran, twice: {}",
                    who.join(", then ")
                ));
                self.ready.push_back((index, Err(failure)));
            } else {
                self.retries.push_back(Pending {
                    items: vec![item],
                    indices: vec![index],
                    deaths: 1,
                    history: history.clone(),
                });
            }
        }
    }
}

/// A whole run, like [`crate::run`]: starts a master whose first process maps `items` through
/// `task` on a pool of `workers` processes (0: one per CPU), and returns the results in order.
///
/// ```
/// use netmcore::{Config, pool};
///
/// let length = pool::def_task(|word: String| word.len())?;
/// let dir = tempfile::tempdir()?;
/// let words = vec!["one".to_owned(), "three".to_owned()];
/// assert_eq!(pool::map(Config::new(dir.path().join("job")), &length, words, 2)?, vec![3, 5]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`Error::Task`] with the first failure in input order; [`Error::Master`] as
/// [`crate::startup`], or when the process that ran the pool died.
pub fn map<A, R>(config: Config, task: &Task<A, R>, items: Vec<A>, workers: usize) -> Result<Vec<R>>
where
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + 'static,
{
    let task = *task;
    let runner = process::def_process(
        move |items: Vec<A>| -> std::result::Result<Vec<R>, Failed> {
            let pool = Pool::start(&task, workers).map_err(|e| Failed::Other(e.to_string()))?;
            let outcome = pool.map(items);
            let closed = pool.close();
            match (outcome, closed) {
                (Err(Error::Task { index, failure }), _) => Err(Failed::Task { index, failure }),
                (Err(e), _) | (Ok(_), Err(e)) => Err(Failed::Other(e.to_string())),
                (Ok(results), Ok(())) => Ok(results),
            }
        },
    )?;
    match crate::run(config, &runner, &items)? {
        Some(Ok(results)) => Ok(results),
        Some(Err(Failed::Task { index, failure })) => Err(Error::Task { index, failure }),
        Some(Err(Failed::Other(what))) => Err(Error::Master(crate::Error::Io {
            op: "pool::map",
            target: "the pool".to_owned(),
            source: std::io::Error::other(what),
        })),
        None => Err(Error::Master(crate::Error::Io {
            op: "pool::map",
            target: "the process that ran the pool".to_owned(),
            source: std::io::Error::other("it ended without a result"),
        })),
    }
}

/// Why the process of [`map`] gave no results.
#[derive(Serialize, Deserialize)]
enum Failed {
    Task { index: usize, failure: TaskFailure },
    Other(String),
}
