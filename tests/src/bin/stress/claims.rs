//! Claims of a `netmcore::shared::SharedVec` (or of the rows of a `SharedMatrix`) in the mix:
//! workers fill disjoint bands beside a victim that dies holding a claim.
//!
//! The action has the shape of the others in `structures.rs`. The array holds the workers'
//! bands one after the other from unit 0 (a unit is an element of a vector, a row of a
//! matrix), then the victim's own band if it has one, then one *guard* unit that the creator
//! claims before it starts anyone and holds until every process is joined: every worker
//! checks that claiming it is [`Error::Overlap`] naming it (a live claim of another process,
//! without a race). The victim starts first, claims its band (its own, or one overlapping the
//! workers' bands), writes part of it, says so in a mailbox and waits for the creator, which
//! checks that its own claim of that band is `Overlap` too; then the victim ends by its fault
//! holding the claim (or drops it and returns), and the workers start. A worker whose band
//! overlaps the victim's retries while the victim's claim is what it meets: it is released
//! when the victim dies (met by the next claim), so the worker's pattern comes after the
//! victim's writes. After the joins the creator claims the victim's band again (a claim left
//! by a death was released), finds `freeze` `Busy` while its guard lives, drops the guard,
//! freezes, and reads every element through `as_slice`.

use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use netmcore::ProcessId;
use netmcore::shared::{Claim, Error, Handle, SharedAtomics, SharedMatrix, SharedVec};
use serde::{Deserialize, Serialize};

use crate::bodies::{Fault, PATIENCE, err, inject, pattern_word, types};
use crate::rng::{Rng, mix};
use crate::shared::{self, Counter};
use crate::structures::{Launched, Seen, draw_holding_fault, hosted_or_local};
use crate::tally::FaultKind;

/// The handle of the array of an action: a vector, or a matrix claimed by rows.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum ArrayHandle {
    /// A vector: a unit is an element.
    Vec(Handle<SharedVec<u64>>),
    /// A matrix: a unit is a row.
    Matrix(Handle<SharedMatrix<u64>>),
}

/// The array of an action, opened.
enum Array {
    Vec(SharedVec<u64>),
    Matrix(SharedMatrix<u64>),
}

impl Array {
    /// A new array of `units` zeroed units: a vector, or a matrix of `cols` columns.
    fn create(units: usize, cols: Option<u32>) -> Result<Array, String> {
        let array = match cols {
            None => Array::Vec(SharedVec::zeroed(units).map_err(err("SharedVec::zeroed"))?),
            Some(cols) => Array::Matrix(
                SharedMatrix::zeroed(units, cols as usize).map_err(err("SharedMatrix::zeroed"))?,
            ),
        };
        shared::add(Counter::Resources, 1);
        Ok(array)
    }

    fn open(handle: ArrayHandle) -> Result<Array, String> {
        Ok(match handle {
            ArrayHandle::Vec(h) => Array::Vec(SharedVec::open(h).map_err(err("open the vector"))?),
            ArrayHandle::Matrix(h) => {
                Array::Matrix(SharedMatrix::open(h).map_err(err("open the matrix"))?)
            }
        })
    }

    fn handle(&self) -> ArrayHandle {
        match self {
            Array::Vec(v) => ArrayHandle::Vec(v.handle()),
            Array::Matrix(m) => ArrayHandle::Matrix(m.handle()),
        }
    }

    /// Elements per unit.
    fn unit(&self) -> usize {
        match self {
            Array::Vec(_) => 1,
            Array::Matrix(m) => m.cols(),
        }
    }

    /// Claims the units `range`.
    fn claim(&self, range: Range<usize>) -> Result<Claim<'_, u64>, Error> {
        match self {
            Array::Vec(v) => v.claim(range),
            Array::Matrix(m) => m.claim_rows(range),
        }
    }

    fn freeze(&self) -> Result<(), Error> {
        match self {
            Array::Vec(v) => v.freeze(),
            Array::Matrix(m) => m.freeze(),
        }
    }

    fn as_slice(&self) -> Result<&[u64], Error> {
        match self {
            Array::Vec(v) => v.as_slice(),
            Array::Matrix(m) => m.as_slice(),
        }
    }
}

/// The claims action: `bands.len()` workers each fill a band of the array with a pattern of
/// their own, beside a victim that may die holding a claim.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimsArg {
    /// The columns of a matrix (whose units are rows), or `None` for a vector.
    pub cols: Option<u32>,
    /// The units of each worker's band, in order from unit 0.
    pub bands: Vec<u32>,
    /// The seed of the patterns.
    pub seed: u64,
    /// The victim, if any.
    pub victim: Option<ClaimVictim>,
}

/// What the victim of a claims action does: it claims `band` (units), writes its first
/// `written` elements, and ends by `fault` holding the claim (or drops it and returns).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ClaimVictim {
    /// Its band, in units: its own (after the workers' bands), or overlapping theirs.
    pub band: (u32, u32),
    /// Whether the band is its own.
    pub own: bool,
    /// Elements of its band it writes.
    pub written: u32,
    /// How it ends while holding the claim.
    pub fault: Option<Fault>,
}

impl ClaimsArg {
    /// The units of the workers' bands.
    fn worker_units(&self) -> u32 {
        self.bands.iter().sum()
    }

    /// All the units: the workers' bands, the victim's own band, the guard unit.
    fn units(&self) -> u32 {
        let own = match self.victim {
            Some(v) if v.own => v.band.1 - v.band.0,
            _ => 0,
        };
        self.worker_units() + own + 1
    }

    /// The band of worker `i`, in units.
    fn band(&self, i: usize) -> Range<usize> {
        let start: u32 = self.bands[..i].iter().sum();
        start as usize..(start + self.bands[i]) as usize
    }

    /// The guard unit.
    fn guard(&self) -> usize {
        self.units() as usize - 1
    }
}

/// The seed of worker `i`'s pattern.
fn worker_seed(seed: u64, i: usize) -> u64 {
    mix(seed ^ (i as u64 + 1))
}

/// The seed of the victim's writes.
fn victim_seed(seed: u64) -> u64 {
    mix(seed ^ 0x7669_6374_696d)
}

/// The seed of the guard's pattern.
fn guard_seed(seed: u64) -> u64 {
    mix(seed ^ 0x67_7561_7264)
}

/// The creator's claim of the guard unit, held by a thread of its own (a claim borrows the
/// array, and the array goes into the action's closure) until [`Guard::release`]. Threads
/// are safe here: workers are forked by the master, never by a worker.
struct Guard {
    release: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<Result<(), String>>,
}

impl Guard {
    /// Claims the unit `guard`, fills it with the pattern `seed`, and returns once it holds it.
    fn hold(array: Arc<Array>, guard: usize, seed: u64) -> Result<Guard, String> {
        let (held_tx, held_rx) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let mut claim = match array.claim(guard..guard + 1) {
                Ok(claim) => claim,
                Err(e) => {
                    let _ = held_tx.send(false);
                    return Err(format!("claim the guard {guard}: {e}"));
                }
            };
            for (k, x) in claim.iter_mut().enumerate() {
                *x = pattern_word(seed, k);
            }
            let _ = held_tx.send(true);
            // Until the creator says so (or drops the sender).
            let _ = release_rx.recv();
            drop(claim);
            Ok(())
        });
        let guard = Guard { release, thread };
        match held_rx.recv() {
            Ok(true) => Ok(guard),
            _ => Err(guard
                .release()
                .err()
                .unwrap_or_else(|| "the guard's thread ended".to_owned())),
        }
    }

    /// Drops the guard's claim and joins its thread.
    fn release(self) -> Result<(), String> {
        let _ = self.release.send(());
        self.thread
            .join()
            .map_err(|_| "the guard's thread panicked".to_owned())?
    }
}

/// The argument of a claims worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimUse {
    array: ArrayHandle,
    /// Its band, in units.
    band: (u32, u32),
    /// The seed of its pattern.
    seed: u64,
    /// The unit the creator holds.
    guard: u32,
    /// The victim's band, when it overlaps this worker's.
    victim: Option<(u32, u32)>,
}

/// What a claims worker saw.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ClaimSeen {
    /// Overlapping claims refused.
    overlaps: u64,
}

/// The argument of the claims victim.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ClaimVictimUse {
    array: ArrayHandle,
    plan: ClaimVictim,
    seed: u64,
    /// Word 0: 1 once it holds its claim and wrote; word 1: 1 once the creator checked.
    mailbox: Handle<SharedAtomics>,
}

fn range(band: (u32, u32)) -> Range<usize> {
    band.0 as usize..band.1 as usize
}

/// Draws and starts a claims action.
pub fn launch_claims(rng: &mut Rng) -> Result<Launched, String> {
    let t = types();
    let cols = rng.one_in(2).then(|| rng.range(1, 8) as u32);
    let workers = rng.range(2, 4);
    let bands: Vec<u32> = (0..workers).map(|_| rng.range(1, 40) as u32).collect();
    let seed = rng.next_u64();
    let worker_units: u32 = bands.iter().sum();
    let victim = (!rng.one_in(5)).then(|| {
        let own = rng.one_in(2);
        let band = if own {
            (worker_units, worker_units + rng.range(1, 16) as u32)
        } else {
            let start = rng.range(0, u64::from(worker_units) - 1);
            let end = rng.range(start + 1, (start + 24).min(u64::from(worker_units)));
            (start as u32, end as u32)
        };
        let elements = u64::from(band.1 - band.0) * u64::from(cols.unwrap_or(1));
        ClaimVictim {
            band,
            own,
            written: rng.range(1, elements) as u32,
            fault: (!rng.one_in(4)).then(|| draw_holding_fault(rng)),
        }
    });
    let arg = ClaimsArg {
        cols,
        bands,
        seed,
        victim,
    };
    let hosted = rng.one_in(3);
    let faults = match arg.victim {
        Some(ClaimVictim { fault: Some(_), .. }) => vec![FaultKind::Holding],
        _ => Vec::new(),
    };
    let processes = workers + u64::from(arg.victim.is_some()) + u64::from(hosted);
    let (what, finish) = hosted_or_local(hosted, t.claims_host, "claims", arg, start_claims)?;
    Ok(Launched {
        what,
        processes,
        faults,
        finish,
    })
}

/// The body of a host: the whole claims action in a worker.
pub fn claims_host(arg: ClaimsArg) -> Result<Seen, String> {
    let (_, finish) = start_claims(arg)?;
    finish()
}

/// Creates the array, claims the guard, starts the victim and has its claim checked, then
/// starts the workers; the closure joins and checks them.
fn start_claims(arg: ClaimsArg) -> Result<(String, impl FnOnce() -> Result<Seen, String>), String> {
    let t = types();
    let array = Array::create(arg.units() as usize, arg.cols)?;
    let handle = array.handle();
    let what = format!("claims of {handle:?} ({arg:?})");
    let mut seen = Seen {
        segments: 1,
        ..Seen::default()
    };
    let array = Arc::new(array);
    let guard = Guard::hold(Arc::clone(&array), arg.guard(), guard_seed(arg.seed))?;
    seen.claims += 1;
    let victim = match arg.victim {
        Some(plan) => Some(start_victim(&arg, &array, plan, &mut seen)?),
        None => None,
    };
    let workers = (0..arg.bands.len())
        .map(|i| {
            let band = arg.band(i);
            let overlaps = arg
                .victim
                .map(|v| v.band)
                .filter(|&(s, e)| (s as usize) < band.end && band.start < e as usize);
            t.claims_worker.start(&ClaimUse {
                array: handle,
                band: (band.start as u32, band.end as u32),
                seed: worker_seed(arg.seed, i),
                guard: arg.guard() as u32,
                victim: overlaps,
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(err("start a claims worker"))?;
    Ok((what, move || {
        check_claims(&arg, &array, guard, &workers, victim, seen)
    }))
}

/// Starts the victim, waits until it holds its claim and checks that the creator's claim of
/// its band is refused naming it; then lets it go on to its end.
fn start_victim(
    arg: &ClaimsArg,
    array: &Array,
    plan: ClaimVictim,
    seen: &mut Seen,
) -> Result<ProcessId, String> {
    let t = types();
    let mailbox = SharedAtomics::new(2).map_err(err("SharedAtomics::new (the mailbox)"))?;
    shared::add(Counter::Resources, 1);
    seen.segments += 1;
    let pid = t
        .claims_victim
        .start(&ClaimVictimUse {
            array: array.handle(),
            plan,
            seed: victim_seed(arg.seed),
            mailbox: mailbox.handle(),
        })
        .map_err(err("start the claims victim"))?;
    let words = mailbox.as_slice();
    let deadline = Instant::now() + PATIENCE;
    let checked = loop {
        if words[0].load(Ordering::Acquire) == 1 {
            break match array.claim(range(plan.band)) {
                Err(Error::Overlap { held, .. }) if held == range(plan.band) => {
                    seen.overlaps += 1;
                    Ok(())
                }
                other => Err(format!(
                    "the creator's claim of the band {:?} the victim {pid} holds gave {:?}, \
                     expected Overlap naming it",
                    plan.band,
                    other.map(|c| c.range())
                )),
            };
        }
        if Instant::now() > deadline {
            break Err(format!("the victim {pid} held no claim after {PATIENCE:?}"));
        }
        std::thread::sleep(Duration::from_micros(100));
    };
    // Let it go on in any case, so that it is not left waiting.
    words[1].store(1, Ordering::Release);
    checked.map(|()| pid)
}

/// Joins the workers and the victim, then checks the claims left and the elements.
fn check_claims(
    arg: &ClaimsArg,
    array: &Array,
    guard: Guard,
    workers: &[ProcessId],
    victim: Option<ProcessId>,
    mut seen: Seen,
) -> Result<Seen, String> {
    let t = types();
    let mut problems = Vec::new();
    for &pid in workers {
        match t.claims_worker.join(pid) {
            Ok(Some(Ok(s))) => {
                seen.claims += 1;
                seen.overlaps += s.overlaps;
            }
            other => problems.push(format!("worker {pid} gave {other:?}")),
        }
    }
    if let (Some(pid), Some(plan)) = (victim, arg.victim) {
        seen.claims += 1;
        match (plan.fault, t.claims_victim.join(pid)) {
            (Some(_), Ok(None)) | (None, Ok(Some(Ok(())))) => {}
            (fault, other) => problems.push(format!(
                "victim {pid} ({fault:?}) gave {other:?}, expected {}",
                if fault.is_some() {
                    "Ok(None)"
                } else {
                    "Ok(Some(Ok(())))"
                }
            )),
        }
        // Its claim was released: by its drop, by the unwinding of its panic, or (for the
        // other deaths) by the first claim that met it after its death.
        match array.claim(range(plan.band)) {
            Ok(_) => seen.claims += 1,
            Err(e) => problems.push(format!(
                "the band {:?} of the victim {pid}, joined, cannot be claimed: {e}",
                plan.band
            )),
        }
        if matches!(plan.fault, Some(f) if f != Fault::Panic) {
            seen.dead_claims += 1;
        }
    }
    if let Some(first) = problems.into_iter().next() {
        return Err(first);
    }
    match array.freeze() {
        Err(Error::Busy) => {}
        other => return Err(format!("freeze while the guard is claimed gave {other:?}")),
    }
    guard.release()?;
    array
        .freeze()
        .map_err(err("freeze with no claim left (a claim was not released)"))?;
    let elements = array.as_slice().map_err(err("as_slice after freeze"))?;
    let expected = expected(arg, array.unit());
    if elements.len() != expected.len() {
        return Err(format!(
            "{} elements, expected {}",
            elements.len(),
            expected.len()
        ));
    }
    if let Some(k) = (0..expected.len()).find(|&k| elements[k] != expected[k]) {
        return Err(format!(
            "element {k} (unit {}) is {:#x}, expected {:#x}",
            k / array.unit(),
            elements[k],
            expected[k]
        ));
    }
    Ok(seen)
}

/// The elements after the action: each worker's pattern over its band (written after any
/// write of the victim there), the victim's writes over the start of its own band, zeroes
/// after them, and the guard's pattern.
fn expected(arg: &ClaimsArg, unit: usize) -> Vec<u64> {
    let mut all = vec![0; arg.units() as usize * unit];
    for i in 0..arg.bands.len() {
        let band = arg.band(i);
        for (k, x) in all[band.start * unit..band.end * unit]
            .iter_mut()
            .enumerate()
        {
            *x = pattern_word(worker_seed(arg.seed, i), k);
        }
    }
    if let Some(plan) = arg.victim.filter(|v| v.own) {
        let start = plan.band.0 as usize * unit;
        for (k, x) in all[start..start + plan.written as usize]
            .iter_mut()
            .enumerate()
        {
            *x = pattern_word(victim_seed(arg.seed), k);
        }
    }
    let guard = arg.guard() * unit;
    for (k, x) in all[guard..guard + unit].iter_mut().enumerate() {
        *x = pattern_word(guard_seed(arg.seed), k);
    }
    all
}

/// A claims worker: checks that the guard is refused, claims its band (waiting while the
/// victim's claim is what it meets) and fills it with its pattern.
pub fn claims_worker(arg: ClaimUse) -> Result<ClaimSeen, String> {
    let array = Array::open(arg.array)?;
    let mut seen = ClaimSeen { overlaps: 0 };
    let guard = arg.guard as usize..arg.guard as usize + 1;
    match array.claim(guard.clone()) {
        Err(Error::Overlap { requested, held }) if requested == guard && held == guard => {
            seen.overlaps += 1;
        }
        other => {
            return Err(format!(
                "a claim of the guard {guard:?}, which the creator holds, gave {:?}",
                other.map(|c| c.range())
            ));
        }
    }
    let band = range(arg.band);
    let deadline = Instant::now() + PATIENCE;
    let mut claim = loop {
        match array.claim(band.clone()) {
            Ok(claim) => break claim,
            Err(Error::Overlap { held, .. }) if arg.victim.map(range) == Some(held.clone()) => {
                seen.overlaps += 1;
                if Instant::now() > deadline {
                    return Err(format!(
                        "the victim's claim {held:?} still refuses {band:?} after {PATIENCE:?}"
                    ));
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(e) => return Err(format!("claim {band:?}: {e}")),
        }
    };
    if claim.range() != band {
        return Err(format!("claimed {band:?}, got {:?}", claim.range()));
    }
    for (k, x) in claim.iter_mut().enumerate() {
        *x = pattern_word(arg.seed, k);
    }
    Ok(seen)
}

/// The claims victim: see [`ClaimVictim`].
pub fn claims_victim(arg: ClaimVictimUse) -> Result<(), String> {
    let array = Array::open(arg.array)?;
    let mailbox = SharedAtomics::open(arg.mailbox).map_err(err("open the mailbox"))?;
    let words = mailbox.as_slice();
    let band = range(arg.plan.band);
    let mut claim = array
        .claim(band.clone())
        .map_err(err(format!("the victim's claim of {band:?}")))?;
    for (k, x) in claim.iter_mut().take(arg.plan.written as usize).enumerate() {
        *x = pattern_word(arg.seed, k);
    }
    words[0].store(1, Ordering::Release);
    let deadline = Instant::now() + PATIENCE;
    while words[1].load(Ordering::Acquire) == 0 {
        if Instant::now() > deadline {
            return Err(format!("the creator did not check within {PATIENCE:?}"));
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    if let Some(fault) = arg.plan.fault {
        // The claim is alive: the process ends holding it (a panic drops it as it unwinds).
        inject(fault);
    }
    drop(claim);
    Ok(())
}
