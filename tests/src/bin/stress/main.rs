//! `stress`: a random mix of netmcore processes, faults and resource traffic, checked result
//! by result, and a check afterwards that the run left nothing behind.
//!
//! Run it through `cargo xtask stress [--processes N] [--duration D] [--seed S]`, or directly
//! with `cargo run --release -p netmcore-tests --bin stress -- --help`.
//!
//! The program is two processes. The *supervisor* (what the user started) makes a scratch
//! directory and a progress region, starts the *master process* (this program again, with
//! `--master`) in a process group of its own, shows progress, and afterwards checks for
//! leftovers and prints the summary. The master process defines the process types, becomes
//! the netmcore master with `run`, and its first process starts the coordinators, which run
//! waves of randomly drawn actions (see `coordinator.rs`) and check every result. After `run`
//! returned, the master process checks its own descriptors, children and the ledger.
//!
//! The mix (weights in `coordinator.rs`, `--without` leaves actions out): plain starts and
//! joins (also by polling `join_nowait`), nested starts with a child that outlives its
//! starter, faulty bodies (panic, `exit(code)`, SIGSEGV), a victim killed with SIGKILL by
//! another worker, shm / preallocated shm (inherited by id, by `All`, and not at all) /
//! semaphore / file churn whose holders sometimes die holding them, calls made wrong (each
//! must give its documented error), hostile peers that write bad frames to their channel
//! (`hostile.rs`), and structures in shared memory (`structures.rs`): workers that count
//! under a `netmcore::shared::Mutex` beside a victim that dies holding the lock (the count
//! must be exact, and one locker must take the lock over, poisoned, per death), mutexes
//! created and dropped quickly by a worker that is sometimes killed holding the only value of
//! some (their segments must go with it), workers that fill disjoint bands of a `SharedVec` or
//! `SharedMatrix` beside a victim that dies holding a claim (`claims.rs`: an overlapping claim
//! is refused while its holder lives, the dead claim is released, the array freezes, and each
//! band reads back exactly as its worker wrote it), and processes meeting at a `Barrier` round
//! after round (`barriers.rs`: every round has all its arrivals and one leader, and a
//! participant that dies before a round breaks it for the others, whose wait is `Broken`
//! rather than a hang), and messages streamed through a `channel` from sender workers to
//! receiver workers beside a victim that dies at a random moment mid-stream (`channels.rs`:
//! every message arrives once and intact, but the one a dying receiver had in hand, a dead
//! sender's messages that arrive are exactly its first ones, and the receivers end with
//! `Disconnected`, not a hang), and streams through a `pipe` between a writer and a reader process
//! (`pipes.rs`: every byte received is checked, so what comes is a prefix of what was sent;
//! a writer that dies without closing is a broken pipe for the reader after its last byte,
//! never an end-of-file, and a reader that dies is a broken pipe for the writer). The seed
//! replays the same draws.
//!
//! Every object the run names starts with `/netmcore-stress-<supervisor pid>-`, so that the
//! leak check sees only this run's objects; the segments of structures are named by netmcore
//! (`/netmcore-<creator's pid>-…`), so the leak check also counts every `netmcore-` object
//! that appeared during the run and is left after it. A run that makes no progress for the
//! stall time (a deadlock: a lock nobody takes over) is killed and reported as a failure with
//! its seed and the action each coordinator was joining.
#![deny(unsafe_code)]

mod barriers;
mod bodies;
mod channels;
mod claims;
mod coordinator;
mod hostile;
mod master;
mod pipes;
use netmcore_tests::procs;
mod report;
mod rng;
mod shared;
mod structures;
mod supervisor;
#[allow(
    unsafe_code,
    reason = "borrowing the channel's descriptor for the hostile-peer writes; see its SAFETY comment"
)]
mod sys;
mod tally;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--master") {
        return match master::main(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("stress (master process): {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let outcome = supervisor::Options::parse(&args).and_then(|o| supervisor::run(&o));
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("stress: {e:#}");
            ExitCode::FAILURE
        }
    }
}
