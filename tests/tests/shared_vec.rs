//! `netmcore::shared::{SharedVec, SharedMatrix, SharedAtomics}` across processes: workers fill
//! disjoint bands of a matrix that the coordinator reads frozen, overlapping claims refused
//! across processes, freeze refused while another process holds a claim, the claim of a
//! killed process released, lock-free counters, and handles decoded as another type refused.
//!
//! Run one with `cargo test -p netmcore-tests --test shared_vec -- NAME`.

mod support;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use anyhow::{Context as _, ensure};
use netmcore::shared::{Error, Handle, SharedAtomics, SharedMatrix, SharedVec};
use rustix::process::{Pid, Signal, kill_process};
use support::{Scenario, cases, coordinator, ensure_err, run_coordinator, verdict};

fn main() -> ExitCode {
    support::run_cases(cases![
        workers_fill_disjoint_bands_and_the_coordinator_reads_them_frozen,
        a_worker_opens_a_vector_whose_length_is_no_multiple_of_8,
        an_overlapping_claim_from_another_process_names_the_held_range,
        freeze_is_busy_while_another_process_holds_a_claim,
        the_claim_of_a_killed_claimer_is_released,
        workers_add_to_shared_atomics_without_losing_one,
        a_handle_decoded_as_another_type_is_wrong_type,
    ])
}

/// Rows and columns of the matrix the workers fill.
const ROWS: usize = 13;
const COLS: usize = 7;

/// How many times each counting worker adds to the atomics.
const ROUNDS: u64 = 20_000;

/// What element `(i, j)` of the filled matrix holds.
fn cell(i: usize, j: usize) -> u64 {
    (i * 1000 + j) as u64
}

/// Three workers each claim a band of rows of a matrix and fill it; the coordinator joins
/// them, freezes the matrix and finds every element, row by row and as one slice.
fn workers_fill_disjoint_bands_and_the_coordinator_reads_them_frozen(
    s: &Scenario,
) -> anyhow::Result<()> {
    let filler = coordinator(
        |(handle, rows): (Handle<SharedMatrix<u64>>, std::ops::Range<usize>)| {
            let m = SharedMatrix::open(handle)?;
            ensure!((m.rows(), m.cols()) == (ROWS, COLS), "another shape");
            let mut band = m.claim_rows(rows.clone())?;
            ensure!(band.range() == rows, "the claim is of {:?}", band.range());
            for (k, x) in band.iter_mut().enumerate() {
                *x = cell(rows.start + k / COLS, k % COLS);
            }
            Ok(())
        },
    )?;
    let first = coordinator(move |()| {
        let m = SharedMatrix::<u64>::zeroed(ROWS, COLS)?;
        let pids = [0..4, 4..9, 9..ROWS]
            .into_iter()
            .map(|rows| filler.start(&(m.handle(), rows)))
            .collect::<Result<Vec<_>, _>>()?;
        for pid in pids {
            verdict(filler.join(pid)?)?;
        }
        m.freeze()?;
        for i in 0..ROWS {
            let row = m.row(i)?;
            let expected: Vec<u64> = (0..COLS).map(|j| cell(i, j)).collect();
            ensure!(row == expected, "row {i} is {row:?}");
        }
        let all = m.as_slice()?;
        ensure!(all.len() == ROWS * COLS);
        ensure!(
            all.iter()
                .enumerate()
                .all(|(k, &x)| x == cell(k / COLS, k % COLS)),
            "the slice differs from the rows"
        );
        ensure_err!(m.row(ROWS), Error::OutOfBounds { .. });
        Ok(())
    })?;
    run_coordinator(s, &first, &())
}

/// A vector of three bytes (a segment whose length is no multiple of 8) made from a slice is
/// opened in a worker, which reads it frozen.
fn a_worker_opens_a_vector_whose_length_is_no_multiple_of_8(s: &Scenario) -> anyhow::Result<()> {
    let reader = coordinator(|handle: Handle<SharedVec<u8>>| {
        let v = SharedVec::open(handle)?;
        ensure!(
            v.as_slice()? == [1, 2, 3],
            "the reader sees {:?}",
            v.as_slice()
        );
        Ok(())
    })?;
    let first = coordinator(move |()| {
        let v = SharedVec::from_slice(&[1u8, 2, 3])?;
        v.freeze()?;
        verdict(reader.join(reader.start(&v.handle())?)?)
    })?;
    run_coordinator(s, &first, &())
}

/// The coordinator holds rows 2..5; a worker's claim of rows 4..6 is refused, naming 2..5 in
/// rows, while its claim of rows 0..2 is granted.
fn an_overlapping_claim_from_another_process_names_the_held_range(
    s: &Scenario,
) -> anyhow::Result<()> {
    let claimer = coordinator(|handle: Handle<SharedMatrix<u32>>| {
        let m = SharedMatrix::open(handle)?;
        match m.claim_rows(4..6) {
            Err(Error::Overlap { requested, held }) => {
                ensure!(requested == (4..6), "requested {requested:?}");
                ensure!(held == (2..5), "held {held:?}");
            }
            other => anyhow::bail!("an overlapping claim gave {other:?}"),
        }
        let below = m.claim_rows(0..2)?;
        ensure!(below.len() == 2 * 3);
        Ok(())
    })?;
    let first = coordinator(move |()| {
        let m = SharedMatrix::<u32>::zeroed(8, 3)?;
        let held = m.claim_rows(2..5)?;
        verdict(claimer.join(claimer.start(&m.handle())?)?)?;
        drop(held);
        m.freeze()?;
        Ok(())
    })?;
    run_coordinator(s, &first, &())
}

/// A worker holds a claim and waits at a gate: meanwhile the coordinator's freeze is
/// `Busy` and reading is `NotFrozen`. Once the worker dropped its claim (and ended), the
/// freeze succeeds and shows what it wrote.
fn freeze_is_busy_while_another_process_holds_a_claim(s: &Scenario) -> anyhow::Result<()> {
    let holder = coordinator(
        |(handle, claimed, gate): (Handle<SharedVec<u32>>, PathBuf, PathBuf)| {
            let v = SharedVec::open(handle)?;
            let mut claim = v.claim(1..3)?;
            claim.copy_from_slice(&[11, 12]);
            support::touch(&claimed)?;
            support::wait_for_file(&gate)?;
            drop(claim);
            Ok(())
        },
    )?;
    let first = coordinator(move |(claimed, gate): (PathBuf, PathBuf)| {
        let v = SharedVec::<u32>::zeroed(4)?;
        let pid = holder.start(&(v.handle(), claimed.clone(), gate.clone()))?;
        support::wait_for_file(&claimed)?;
        ensure_err!(v.freeze(), Error::Busy);
        ensure!(!v.is_frozen(), "frozen while a claim is live");
        ensure_err!(v.as_slice(), Error::NotFrozen);
        ensure_err!(v.claim(2..4), Error::Overlap { .. });
        support::touch(&gate)?;
        verdict(holder.join(pid)?)?;
        v.freeze()?;
        ensure!(v.as_slice()? == [0, 11, 12, 0], "{:?}", v.as_slice());
        Ok(())
    })?;
    run_coordinator(s, &first, &(s.path("claimed"), s.path("gate")))
}

/// A claimer writes into its claim and is killed with SIGKILL while it holds it. While it
/// lives its range is refused; after its join the range can be claimed again (the dead
/// claim is released when met), and the vector freezes: nothing waits for the dead.
fn the_claim_of_a_killed_claimer_is_released(s: &Scenario) -> anyhow::Result<()> {
    let claimer = coordinator(|(handle, pid_file): (Handle<SharedVec<u64>>, PathBuf)| {
        let v = SharedVec::open(handle)?;
        let mut claim = v.claim(0..4)?;
        claim[0] = 7;
        support::write_own_pid(&pid_file)?;
        support::sleep_forever()
    })?;
    let first = coordinator(move |pid_file: PathBuf| {
        let v = SharedVec::<u64>::zeroed(8)?;
        let pid = claimer.start(&(v.handle(), pid_file.clone()))?;
        let unix = Pid::from_raw(support::read_pid(&pid_file)?).context("a pid")?;
        ensure_err!(
            v.claim(3..5),
            Error::Overlap { held, .. } if held == (0..4)
        );
        kill_process(unix, Signal::KILL)?;
        ensure!(claimer.join(pid)?.is_none(), "the killed claimer returned");
        {
            let claim = v.claim(0..4).context("the killed claimer's range")?;
            ensure!(claim[0] == 7, "its write is gone: {:?}", &*claim);
        }
        v.freeze()?;
        ensure!(v.as_slice()?[..2] == [7, 0], "{:?}", v.as_slice());
        Ok(())
    })?;
    run_coordinator(s, &first, &s.path("claimer.pid"))
}

/// Three workers each `fetch_add` 1 to a shared word `ROUNDS` times, and their own index to a
/// second word: both sums are exact.
fn workers_add_to_shared_atomics_without_losing_one(s: &Scenario) -> anyhow::Result<()> {
    let adder = coordinator(|(handle, index): (Handle<SharedAtomics>, u64)| {
        let atomics = SharedAtomics::open(handle)?;
        let words = atomics.as_slice();
        ensure!(words.len() == 2);
        for _ in 0..ROUNDS {
            words[0].fetch_add(1, Ordering::Relaxed);
        }
        words[1].fetch_add(index, Ordering::Relaxed);
        Ok(())
    })?;
    let first = coordinator(move |()| {
        let atomics = SharedAtomics::new(2)?;
        let pids = (1..=3)
            .map(|index| adder.start(&(atomics.handle(), index)))
            .collect::<Result<Vec<_>, _>>()?;
        for pid in pids {
            verdict(adder.join(pid)?)?;
        }
        let words = atomics.as_slice();
        let (total, indices) = (
            words[0].load(Ordering::Relaxed),
            words[1].load(Ordering::Relaxed),
        );
        ensure!(total == 3 * ROUNDS, "the counter is {total}");
        ensure!(indices == 1 + 2 + 3, "the indices add up to {indices}");
        Ok(())
    })?;
    run_coordinator(s, &first, &())
}

/// The handle of a `SharedVec<u32>` travels as postcard bytes to a worker, which decodes it
/// as the handle of a `SharedVec<u64>` and of a `SharedMatrix<u32>` (the bytes carry no type):
/// opening either is `WrongType`. Decoded as what it is, it opens.
fn a_handle_decoded_as_another_type_is_wrong_type(s: &Scenario) -> anyhow::Result<()> {
    let opener = coordinator(|bytes: Vec<u8>| {
        let as_u64: Handle<SharedVec<u64>> = postcard::from_bytes(&bytes)?;
        ensure_err!(SharedVec::open(as_u64), Error::WrongType { .. });
        let as_matrix: Handle<SharedMatrix<u32>> = postcard::from_bytes(&bytes)?;
        ensure_err!(SharedMatrix::open(as_matrix), Error::WrongType { .. });
        let as_atomics: Handle<SharedAtomics> = postcard::from_bytes(&bytes)?;
        ensure_err!(SharedAtomics::open(as_atomics), Error::WrongType { .. });
        let right: Handle<SharedVec<u32>> = postcard::from_bytes(&bytes)?;
        let v = SharedVec::open(right)?;
        ensure!(v.len() == 5, "the vector has {} elements", v.len());
        Ok(())
    })?;
    let first = coordinator(move |()| {
        let v = SharedVec::<u32>::zeroed(5)?;
        let bytes = postcard::to_allocvec(&v.handle())?;
        verdict(opener.join(opener.start(&bytes)?)?)
    })?;
    run_coordinator(s, &first, &())
}
