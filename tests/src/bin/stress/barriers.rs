//! A `netmcore::shared::Barrier` in the mix: `n` participants meet round after round, and a
//! victim among them may die before some round, which must break the barrier for the others
//! (each gets `Err(Broken)` from its wait instead of hanging).
//!
//! The action has the shape of the others in `structures.rs`. A `SharedAtomics` of `2R` words
//! counts, for each round `r`, the arrivals (word `r`, added to before the wait) and the
//! leaders (word `R + r`, added to by the participant whose wait said it leads). After each
//! wait a participant checks that the round's arrivals are complete (`n`: the barrier orders
//! memory), and the creator checks after the joins that every round before the victim's death
//! had `n` arrivals and one leader, the round it died before `n - 1` arrivals and no leader,
//! and the later rounds nothing.

use std::sync::atomic::Ordering;

use netmcore::ProcessId;
use netmcore::shared::{Barrier, Error, Handle, SharedAtomics};
use serde::{Deserialize, Serialize};

use crate::bodies::{Fault, err, inject, types};
use crate::rng::Rng;
use crate::shared::{self, Counter};
use crate::structures::{Launched, Seen, hosted_or_local};
use crate::tally::FaultKind;

/// The barrier action.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct BarrierArg {
    /// Participants.
    pub n: u32,
    /// Rounds.
    pub rounds: u32,
    /// The victim, if any.
    pub victim: Option<BarrierVictim>,
}

/// A participant that dies, with the barrier open, before it arrives in round `before`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct BarrierVictim {
    /// Which participant.
    pub index: u32,
    /// The round it does not arrive in.
    pub before: u32,
    /// How it dies: SIGKILL, `exit` or SIGSEGV (a panic would unwind and close the barrier
    /// first, which is a departure, not a death).
    pub fault: Fault,
}

impl BarrierArg {
    /// The rounds that complete.
    fn completed(&self) -> u32 {
        self.victim.map_or(self.rounds, |v| v.before)
    }
}

/// The argument of a participant.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct BarrierUse {
    barrier: Handle<Barrier>,
    counts: Handle<SharedAtomics>,
    n: u32,
    rounds: u32,
    /// For the victim: the round before which it dies, and how.
    dies: Option<(u32, Fault)>,
    /// For the others when there is a victim: the round whose wait must be `Broken`.
    broken_in: Option<u32>,
}

/// Draws and starts a barrier action.
pub fn launch_barrier(rng: &mut Rng) -> Result<Launched, String> {
    let t = types();
    let n = rng.range(2, 4) as u32;
    let rounds = rng.range(1, 20) as u32;
    let victim = rng.one_in(2).then(|| BarrierVictim {
        index: rng.range(0, u64::from(n) - 1) as u32,
        before: rng.range(0, u64::from(rounds) - 1) as u32,
        fault: match rng.range(0, 2) {
            0 => Fault::Sigkill,
            1 => Fault::Exit(rng.pick(&[0, 1, 42, 255])),
            _ => Fault::Segv,
        },
    });
    let arg = BarrierArg { n, rounds, victim };
    let hosted = rng.one_in(3);
    let faults = if arg.victim.is_some() {
        vec![FaultKind::Holding]
    } else {
        Vec::new()
    };
    let processes = u64::from(n) + u64::from(hosted);
    let (what, finish) = hosted_or_local(hosted, t.barrier_host, "barrier", arg, start_barrier)?;
    Ok(Launched {
        what,
        processes,
        faults,
        finish,
    })
}

/// The body of a host: the whole barrier action in a worker.
pub fn barrier_host(arg: BarrierArg) -> Result<Seen, String> {
    let (_, finish) = start_barrier(arg)?;
    finish()
}

/// Creates the barrier and the counts and starts the participants; the closure joins and
/// checks them.
fn start_barrier(
    arg: BarrierArg,
) -> Result<(String, impl FnOnce() -> Result<Seen, String>), String> {
    let t = types();
    let barrier = Barrier::new(arg.n as usize).map_err(err("Barrier::new"))?;
    shared::add(Counter::Resources, 1);
    let counts = SharedAtomics::new(2 * arg.rounds as usize).map_err(err("SharedAtomics::new"))?;
    shared::add(Counter::Resources, 1);
    let participants = (0..arg.n)
        .map(|i| {
            let victim = arg.victim.filter(|v| v.index == i);
            t.participant.start(&BarrierUse {
                barrier: barrier.handle(),
                counts: counts.handle(),
                n: arg.n,
                rounds: arg.rounds,
                dies: victim.map(|v| (v.before, v.fault)),
                broken_in: match (arg.victim, victim) {
                    (Some(v), None) => Some(v.before),
                    _ => None,
                },
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(err("start a participant"))?;
    let what = format!("barrier {} ({arg:?})", barrier.handle().id());
    Ok((what, move || {
        check_barrier(&arg, &barrier, &counts, &participants)
    }))
}

/// Joins the participants and checks what they and the counts say.
fn check_barrier(
    arg: &BarrierArg,
    barrier: &Barrier,
    counts: &SharedAtomics,
    participants: &[ProcessId],
) -> Result<Seen, String> {
    let t = types();
    let completed = arg.completed();
    let mut problems = Vec::new();
    for (i, &pid) in participants.iter().enumerate() {
        let victim = arg.victim.filter(|v| v.index as usize == i);
        match (victim, t.participant.join(pid)) {
            (Some(_), Ok(None)) => {}
            (None, Ok(Some(Ok(passed)))) if passed == completed => {}
            (victim, other) => problems.push(format!(
                "participant {i} ({pid}) gave {other:?}, expected {}",
                if victim.is_some() {
                    "Ok(None) (it dies)".to_owned()
                } else {
                    format!("Ok(Some(Ok({completed}))) (the rounds that complete)")
                }
            )),
        }
    }
    if let Some(first) = problems.into_iter().next() {
        return Err(first);
    }
    let words = counts.as_slice();
    for r in 0..arg.rounds {
        let arrived = words[r as usize].load(Ordering::Acquire);
        let leaders = words[(arg.rounds + r) as usize].load(Ordering::Acquire);
        let expected = match r.cmp(&completed) {
            std::cmp::Ordering::Less => (u64::from(arg.n), 1),
            std::cmp::Ordering::Equal => (u64::from(arg.n) - 1, 0),
            std::cmp::Ordering::Greater => (0, 0),
        };
        if (arrived, leaders) != expected {
            return Err(format!(
                "round {r}: {arrived} arrivals and {leaders} leaders, expected {expected:?}"
            ));
        }
    }
    let died = arg.victim.is_some();
    if barrier.is_broken() != died {
        return Err(format!(
            "is_broken is {}, though {}",
            barrier.is_broken(),
            if died {
                "a participant died"
            } else {
                "nobody died"
            }
        ));
    }
    if died {
        match barrier.wait() {
            Err(Error::Broken) => {}
            other => return Err(format!("a wait on the broken barrier gave {other:?}")),
        }
    }
    Ok(Seen {
        segments: 2,
        rounds: u64::from(completed),
        broken: u64::from(died),
        ..Seen::default()
    })
}

/// A participant: see [`BarrierUse`]. It returns the rounds it passed.
pub fn participant(arg: BarrierUse) -> Result<u32, String> {
    let barrier = Barrier::open(arg.barrier).map_err(err("open the barrier"))?;
    let counts = SharedAtomics::open(arg.counts).map_err(err("open the counts"))?;
    let words = counts.as_slice();
    for r in 0..arg.rounds {
        if let Some((before, fault)) = arg.dies
            && before == r
        {
            // The barrier is open: this is a death, not a departure.
            inject(fault);
        }
        words[r as usize].fetch_add(1, Ordering::AcqRel);
        match barrier.wait() {
            Ok(leader) => {
                if arg.broken_in.is_some_and(|b| b <= r) {
                    return Err(format!(
                        "round {r} passed, though a participant died before it"
                    ));
                }
                if leader {
                    words[(arg.rounds + r) as usize].fetch_add(1, Ordering::AcqRel);
                }
                let arrived = words[r as usize].load(Ordering::Acquire);
                if arrived != u64::from(arg.n) {
                    return Err(format!(
                        "round {r} passed with {arrived} arrivals of {}",
                        arg.n
                    ));
                }
            }
            Err(Error::Broken) if arg.broken_in == Some(r) => {
                if !barrier.is_broken() {
                    return Err(format!("round {r}: Broken, but is_broken is false"));
                }
                return Ok(r);
            }
            Err(e) => {
                return Err(format!(
                    "round {r}: wait gave {e} (the victim dies before round {:?})",
                    arg.broken_in
                ));
            }
        }
    }
    Ok(arg.rounds)
}
