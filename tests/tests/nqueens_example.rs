//! The `nqueens` example of the facade counts right: the eight symmetries of a board are the
//! rotations and reflections of the square, worked out by hand and by moving squares; the
//! canonical form is the same for every image; the openings cover the search; the bit-mask
//! search agrees with a brute force over permutations; and both parallel modes (a shared set,
//! a channel to a collector) count 12 classes for n = 8 and 92 for n = 10 (the published
//! counts of the problem up to symmetry) with any number of processes.
//!
//! The example's modules are included from `netmcore/examples/nqueens/`, so that this checks
//! the example's own code.

mod support;

#[allow(
    dead_code,
    reason = "the example's module has parts that only the example uses"
)]
#[path = "../../netmcore/examples/nqueens/board.rs"]
mod board;

#[allow(
    dead_code,
    reason = "the example's module has parts that only the example uses"
)]
#[path = "../../netmcore/examples/nqueens/parallel.rs"]
mod parallel;

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::ensure;
use support::{Scenario, cases, coordinator, run_coordinator};

fn main() -> ExitCode {
    support::run_cases(cases![
        keys_pack_rows_so_that_they_compare_like_boards,
        the_symmetries_of_a_board_are_the_ones_worked_out_by_hand,
        the_symmetries_are_the_rotations_and_reflections_of_the_square,
        every_image_has_the_same_canonical_form,
        the_openings_are_valid_distinct_and_in_the_left_half,
        the_search_agrees_with_a_brute_force_over_permutations,
        the_sequential_count_is_12_for_8_and_92_for_10,
        the_shared_set_counts_12_for_8_and_92_for_10,
        the_channel_counts_12_for_8_and_92_for_10,
    ])
}

/// The board of key `key`, as a list.
fn board(key: u64, n: usize) -> Vec<u8> {
    board::board_of(key, n)
}

/// `[1, 3, 0, 2]` packs as `0x1302`; the key of a board that is smaller in its first
/// differing row is smaller.
fn keys_pack_rows_so_that_they_compare_like_boards(_: &Scenario) -> anyhow::Result<()> {
    ensure!(board::key(&[1, 3, 0, 2]) == 0x1302);
    ensure!(board(0x1302, 4) == [1, 3, 0, 2]);
    let full: Vec<u8> = (0..16).rev().collect();
    ensure!(board::key(&full) == 0xfedc_ba98_7654_3210);
    ensure!(board(0xfedc_ba98_7654_3210, 16) == full);
    ensure!(board::key(&[2, 0, 3, 1]) > board::key(&[1, 3, 0, 2]));
    ensure!(board::key(&[0, 9, 9, 9]) < board::key(&[1, 0, 0, 0]));
    Ok(())
}

/// The solution `[0, 2, 4, 1, 3]` of size 5 (queen of row `r` in column `c`): its mirror
/// `c -> 4 - c` is `[4, 2, 0, 3, 1]`, its rows reversed `[3, 1, 4, 2, 0]`, its half turn
/// `[1, 3, 0, 2, 4]`; its transpose (the inverse permutation: row 0 has its queen in the
/// column of the row whose queen is in column 0, ...) is `[0, 3, 1, 4, 2]`, and that one
/// mirrored, reversed and turned is `[4, 1, 3, 0, 2]`, `[2, 4, 1, 3, 0]`, `[2, 0, 3, 1, 4]`.
/// Its canonical form is the smallest of the eight, `[0, 2, 4, 1, 3]` itself.
fn the_symmetries_of_a_board_are_the_ones_worked_out_by_hand(_: &Scenario) -> anyhow::Result<()> {
    let solution = [0, 2, 4, 1, 3];
    let by_hand: [[u8; 5]; 8] = [
        [0, 2, 4, 1, 3],
        [4, 2, 0, 3, 1],
        [3, 1, 4, 2, 0],
        [1, 3, 0, 2, 4],
        [0, 3, 1, 4, 2],
        [4, 1, 3, 0, 2],
        [2, 4, 1, 3, 0],
        [2, 0, 3, 1, 4],
    ];
    let images: Vec<Vec<u8>> = board::symmetries(&solution)
        .iter()
        .map(|&k| board(k, 5))
        .collect();
    ensure!(images == by_hand, "images {images:?}");
    ensure!(board::canonical(&solution) == board::key(&[0, 2, 4, 1, 3]));
    // The half turn of this solution is its rotation by a quarter turn twice.
    ensure!(board::canonical(&[1, 3, 0, 2, 4]) == board::canonical(&solution));
    Ok(())
}

/// The board that `map` makes of `columns`, where `map` moves square `(row, column)` of an
/// `n` × `n` board.
fn moved(columns: &[u8], map: impl Fn(usize, usize) -> (usize, usize)) -> Vec<u8> {
    let mut out = vec![u8::MAX; columns.len()];
    for (row, &column) in columns.iter().enumerate() {
        let (r, c) = map(row, usize::from(column));
        out[r] = c as u8;
    }
    out
}

/// For every solution of sizes 1 to 8, the eight keys are those of the board moved square by
/// square by the identity, the quarter, half and three-quarter turns, and the reflections in
/// the vertical and horizontal axes and both diagonals; each image is a solution.
fn the_symmetries_are_the_rotations_and_reflections_of_the_square(
    _: &Scenario,
) -> anyhow::Result<()> {
    let mut checked = 0;
    for n in 1..=8 {
        let m = n - 1;
        let maps: [&dyn Fn(usize, usize) -> (usize, usize); 8] = [
            &|r, c| (r, c),
            &|r, c| (c, m - r),
            &|r, c| (m - r, m - c),
            &|r, c| (m - c, r),
            &|r, c| (r, m - c),
            &|r, c| (m - r, c),
            &|r, c| (c, r),
            &|r, c| (m - c, m - r),
        ];
        for solution in brute_force(n) {
            let expected: BTreeSet<u64> = maps
                .iter()
                .map(|map| board::key(&moved(&solution, map)))
                .collect();
            let got: BTreeSet<u64> = board::symmetries(&solution).into_iter().collect();
            ensure!(got == expected, "{solution:?}: {got:x?} != {expected:x?}");
            for image in &got {
                ensure!(board::is_solution(&board(*image, n)), "{image:x}");
            }
            checked += 1;
        }
    }
    ensure!(checked > 100, "only {checked} solutions checked");
    Ok(())
}

/// Every image of a solution has the solution's canonical form, which is the key of one of the
/// images; solutions of different classes have different forms.
fn every_image_has_the_same_canonical_form(_: &Scenario) -> anyhow::Result<()> {
    for n in [5, 6, 8] {
        let mut forms = BTreeSet::new();
        for solution in brute_force(n) {
            let form = board::canonical(&solution);
            let images = board::symmetries(&solution);
            ensure!(images.contains(&form));
            ensure!(images.iter().all(|&k| k >= form));
            for &image in &images {
                ensure!(board::canonical(&board(image, n)) == form);
            }
            forms.insert(form);
        }
        // Every class is a set of images of one solution: their number is the solutions'
        // number of distinct image sets.
        let classes: BTreeSet<BTreeSet<u64>> = brute_force(n)
            .iter()
            .map(|s| board::symmetries(s).into_iter().collect())
            .collect();
        ensure!(forms.len() == classes.len(), "n = {n}");
    }
    Ok(())
}

/// The openings place `min(n, 3)` queens that do not attack each other, are all different,
/// put the first queen in the left half (the middle column included), and together are
/// every such placement.
fn the_openings_are_valid_distinct_and_in_the_left_half(_: &Scenario) -> anyhow::Result<()> {
    for n in 1..=board::MAX_SIZE {
        let openings = board::openings(n);
        let rows = n.min(3);
        let mut seen = BTreeSet::new();
        for opening in &openings {
            let columns = opening.columns();
            ensure!(columns.len() == rows, "n = {n}: {columns:?}");
            ensure!(
                usize::from(columns[0]) < n.div_ceil(2),
                "n = {n}: {columns:?}"
            );
            ensure!(no_attack(columns, n), "n = {n}: {columns:?}");
            ensure!(seen.insert(columns.to_vec()), "n = {n}: {columns:?} twice");
        }
        // Every placement of the first rows counted by brute force.
        let expected = placements(n, rows)
            .into_iter()
            .filter(|p| usize::from(p[0]) < n.div_ceil(2))
            .count();
        ensure!(openings.len() == expected, "n = {n}");
    }
    Ok(())
}

/// For sizes 1 to 9, the solutions found from the openings are the brute force's solutions
/// whose first queen is in the left half, and the classes they give are all the classes.
fn the_search_agrees_with_a_brute_force_over_permutations(_: &Scenario) -> anyhow::Result<()> {
    for n in 1..=9 {
        let all = brute_force(n);
        let mut found = BTreeSet::new();
        for opening in board::openings(n) {
            board::solutions(n, &opening, |s| {
                found.insert(s.to_vec());
            });
        }
        let left: BTreeSet<Vec<u8>> = all
            .iter()
            .filter(|s| usize::from(s[0]) < n.div_ceil(2))
            .cloned()
            .collect();
        ensure!(found == left, "n = {n}");
        let classes: BTreeSet<u64> = all.iter().map(|s| board::canonical(s)).collect();
        ensure!(board::sequential(n) == classes.len(), "n = {n}");
    }
    Ok(())
}

/// 12 classes for n = 8 and 92 for n = 10 (OEIS A002562), with no class counted twice: 92
/// solutions for 8 fall into them (A000170).
fn the_sequential_count_is_12_for_8_and_92_for_10(_: &Scenario) -> anyhow::Result<()> {
    ensure!(board::sequential(8) == 12);
    ensure!(board::sequential(10) == 92);
    ensure!(brute_force(8).len() == 92);
    Ok(())
}

/// The `shared` mode: 1, 2 and 3 processes counting into a shared set find 12 classes for
/// n = 8 and 92 for n = 10; the set's capacity leaves room.
fn the_shared_set_counts_12_for_8_and_92_for_10(s: &Scenario) -> anyhow::Result<()> {
    // The published counts of classes (OEIS A002562) fit at every size up to 16.
    let classes = [
        (8, 12),
        (9, 46),
        (10, 92),
        (11, 341),
        (12, 1_787),
        (13, 9_233),
        (14, 45_752),
        (15, 285_053),
        (16, 1_846_955),
    ];
    for (n, count) in classes {
        ensure!(
            parallel::capacity(n) >= count,
            "capacity({n}) = {} for {count} classes",
            parallel::capacity(n)
        );
    }
    let worker = parallel::def_set_worker()?;
    let first = coordinator(move |()| {
        for searchers in [1, 2, 3] {
            for (n, classes) in [(8, 12), (10, 92)] {
                let counted = parallel::count_with_set(&worker, n, searchers)?;
                ensure!(
                    counted == classes,
                    "{searchers} processes counted {counted} classes for n = {n}"
                );
            }
        }
        Ok(())
    })?;
    run_coordinator(s, &first, &())
}

/// The `channel` mode: 1, 2 and 3 workers sending canonical forms to a collector find 12
/// classes for n = 8 and 92 for n = 10. For n = 13 (9233 classes, 40,891 solutions from the
/// left half) the batches fill, and more of them come than the channel holds at once.
fn the_channel_counts_12_for_8_and_92_for_10(s: &Scenario) -> anyhow::Result<()> {
    let worker = parallel::def_send_worker()?;
    let first = coordinator(move |()| {
        for workers in [1, 2, 3] {
            for (n, classes) in [(8, 12), (10, 92)] {
                let counted = parallel::count_with_channel(&worker, n, workers)?;
                ensure!(
                    counted == classes,
                    "{workers} workers counted {counted} classes for n = {n}"
                );
            }
        }
        let counted = parallel::count_with_channel(&worker, 13, 2)?;
        ensure!(counted == board::sequential(13), "{counted} classes for 13");
        Ok(())
    })?;
    run_coordinator(s, &first, &())
}

/// Whether no two of the queens `columns` (one per row, from row 0) on a board of size `n`
/// attack each other.
fn no_attack(columns: &[u8], n: usize) -> bool {
    columns.iter().all(|&c| usize::from(c) < n)
        && (0..columns.len()).all(|a| {
            (a + 1..columns.len()).all(|b| {
                let (ca, cb) = (usize::from(columns[a]), usize::from(columns[b]));
                ca != cb && ca.abs_diff(cb) != b - a
            })
        })
}

/// Every placement of `rows` queens on the first rows of a board of size `n`, one per row,
/// none attacking another, by trying every column for every row.
fn placements(n: usize, rows: usize) -> Vec<Vec<u8>> {
    let mut out = vec![Vec::new()];
    for _ in 0..rows {
        out = out
            .into_iter()
            .flat_map(|prefix: Vec<u8>| {
                (0..n as u8).filter_map(move |c| {
                    let mut longer = prefix.clone();
                    longer.push(c);
                    no_attack(&longer, n).then_some(longer)
                })
            })
            .collect();
    }
    out
}

/// Every solution of size `n`, by trying every permutation of the columns (Heap's algorithm)
/// and keeping those where no two queens share a diagonal.
fn brute_force(n: usize) -> Vec<Vec<u8>> {
    let mut columns: Vec<u8> = (0..n as u8).collect();
    let mut out = Vec::new();
    let mut counters = vec![0; n];
    if board::is_solution(&columns) {
        out.push(columns.clone());
    }
    let mut i = 1;
    while i < n {
        if counters[i] < i {
            let other = if i % 2 == 0 { 0 } else { counters[i] };
            columns.swap(other, i);
            if board::is_solution(&columns) {
                out.push(columns.clone());
            }
            counters[i] += 1;
            i = 1;
        } else {
            counters[i] = 0;
            i += 1;
        }
    }
    out.sort();
    out
}
