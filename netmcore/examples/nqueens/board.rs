//! The search of the `nqueens` example, with no netmcore in it: boards as bit masks, the
//! openings that split the search into units of work, the eight symmetries of the square and
//! the canonical form of a solution. The example's modes, the test
//! `tests/tests/nqueens_example.rs` and the bench include this module, so that they all run
//! the same search.
//!
//! A board of size `n` is the column of the queen in each row (a permutation of `0..n`). Its
//! *key* packs the columns into a `u64`, four bits a row with row 0 in the highest nibble used,
//! so that comparing keys compares boards row by row; that is why sizes stop at 16. Two
//! solutions are the same *up to symmetry* when one of the eight symmetries of the square (the
//! rotations and reflections) turns one into the other; the *canonical form* of a solution is
//! the smallest key of its eight images, the same for every solution of its class.

use std::collections::HashSet;

/// The largest size: sixteen rows of four bits fill a `u64` key.
pub const MAX_SIZE: usize = 16;

/// How many rows an opening places: the search is split into one unit of work per valid
/// placement of the first three rows (for n = 12, 378 units of about 10 µs each, so that the
/// processes that share them end at nearly the same time although the units differ in cost).
const OPENING_ROWS: usize = 3;

/// The key of `columns`: four bits a row, row 0 highest, so that keys compare like boards.
#[allow(
    dead_code,
    reason = "the tests of the example use it; the example does not"
)]
pub fn key(columns: &[u8]) -> u64 {
    columns
        .iter()
        .fold(0, |key, &column| (key << 4) | u64::from(column))
}

/// The board of size `n` whose key is `key` (the inverse of [`key`]).
#[allow(
    dead_code,
    reason = "the tests of the example use it; the example does not"
)]
pub fn board_of(key: u64, n: usize) -> Vec<u8> {
    (0..n)
        .rev()
        .map(|row| ((key >> (4 * row)) & 0xf) as u8)
        .collect()
}

/// Whether `columns` is a solution: `n` queens, one per row, none attacking another (no two
/// share a column or a diagonal).
#[allow(
    dead_code,
    reason = "the tests of the example use it; the example does not"
)]
pub fn is_solution(columns: &[u8]) -> bool {
    let n = columns.len();
    columns.iter().all(|&c| usize::from(c) < n)
        && (0..n).all(|a| {
            (a + 1..n).all(|b| {
                let (ca, cb) = (i64::from(columns[a]), i64::from(columns[b]));
                ca != cb && (ca - cb).unsigned_abs() != (b - a) as u64
            })
        })
}

/// The keys of the eight images of a board under the symmetries of the square.
///
/// A board maps row `r` to column `c`. The eight symmetries send square `(r, c)` to
/// `(r, c)`, `(r, m - c)`, `(m - r, c)`, `(m - r, m - c)` (the identity, the two mirrors and
/// the half turn, where `m = n - 1`) and to the same four with row and column exchanged
/// (the transpose, the two quarter turns and the anti-transpose). Exchanging rows and columns
/// turns a board into its inverse permutation, so the eight images are the board and its
/// inverse, each as it is, with its columns mirrored, with its rows reversed, or both.
pub fn symmetries(columns: &[u8]) -> [u64; 8] {
    let n = columns.len();
    let last = u8::try_from(n.saturating_sub(1)).unwrap_or(u8::MAX);
    let mut inverse = [0u8; MAX_SIZE];
    for (row, &column) in columns.iter().enumerate() {
        if let Some(slot) = inverse.get_mut(usize::from(column)) {
            *slot = row as u8;
        }
    }
    let mut keys = [0u64; 8];
    for (pair, board) in [columns, &inverse[..n]].into_iter().enumerate() {
        let (mut same, mut mirrored, mut reversed, mut turned) = (0u64, 0u64, 0u64, 0u64);
        for (row, &column) in board.iter().enumerate() {
            let flipped = last.wrapping_sub(column);
            same = (same << 4) | u64::from(column);
            mirrored = (mirrored << 4) | u64::from(flipped);
            // Row `row` of the board is row `n - 1 - row` of the reversed one: its nibble goes
            // lowest-first.
            reversed |= u64::from(column) << (4 * row);
            turned |= u64::from(flipped) << (4 * row);
        }
        keys[4 * pair..4 * pair + 4].copy_from_slice(&[same, mirrored, reversed, turned]);
    }
    keys
}

/// The canonical form of a solution: the smallest key of its eight images.
pub fn canonical(columns: &[u8]) -> u64 {
    symmetries(columns).into_iter().min().unwrap_or(0)
}

/// A unit of work: the columns of the queens of the first rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opening {
    columns: [u8; OPENING_ROWS],
    rows: usize,
}

impl Opening {
    /// The columns of the rows it places.
    pub fn columns(&self) -> &[u8] {
        &self.columns[..self.rows]
    }
}

/// The openings of size `n` (1 ..= [`MAX_SIZE`]), in a fixed order: every valid placement of
/// the first three rows (of all the rows when `n` is smaller) whose first queen is in the left
/// half of the row, the middle column included.
///
/// The right half is left out because mirroring a solution left to right moves its first queen
/// from column `c` to `n - 1 - c` and keeps its class: every class has a solution whose first
/// queen is in the left half, so searching the left half finds every canonical form, in half
/// the time.
pub fn openings(n: usize) -> Vec<Opening> {
    assert!((1..=MAX_SIZE).contains(&n), "sizes are 1 to {MAX_SIZE}");
    let rows = n.min(OPENING_ROWS);
    let all = (1u32 << n) - 1;
    let mut out = Vec::new();
    let mut opening = Opening {
        columns: [0; OPENING_ROWS],
        rows,
    };
    for first in 0..n.div_ceil(2) {
        opening.columns[0] = first as u8;
        extend(
            all,
            1,
            Masks::EMPTY.place(1 << first),
            &mut opening,
            &mut out,
        );
    }
    out
}

/// Pushes to `out` every valid placement of the rows of `opening` from `row` on, below the
/// rows before it (whose attacks are `masks`).
fn extend(all: u32, row: usize, masks: Masks, opening: &mut Opening, out: &mut Vec<Opening>) {
    if row == opening.rows {
        out.push(*opening);
        return;
    }
    let mut free = masks.free(all);
    while free != 0 {
        let bit = free & free.wrapping_neg();
        free ^= bit;
        opening.columns[row] = bit.trailing_zeros() as u8;
        extend(all, row + 1, masks.place(bit), opening, out);
    }
}

/// The state of a search below some placed rows: the columns taken, and the squares of the
/// next row attacked along each diagonal direction, as bit masks of `n` bits.
#[derive(Debug, Clone, Copy)]
struct Masks {
    columns: u32,
    left: u32,
    right: u32,
}

impl Masks {
    /// No queen yet.
    const EMPTY: Masks = Masks {
        columns: 0,
        left: 0,
        right: 0,
    };

    /// The squares of the next row that no queen attacks, among `all`.
    fn free(self, all: u32) -> u32 {
        all & !(self.columns | self.left | self.right)
    }

    /// The masks after one more queen, on bit `bit`, for the next row.
    fn place(self, bit: u32) -> Masks {
        Masks {
            columns: self.columns | bit,
            left: (self.left | bit) << 1,
            right: (self.right | bit) >> 1,
        }
    }
}

/// Calls `found` with every solution of size `n` that starts with `opening`, by backtracking
/// over bit masks; `board` holds the rows placed so far.
fn descend(
    all: u32,
    row: usize,
    masks: Masks,
    board: &mut [u8; MAX_SIZE],
    found: &mut impl FnMut(&[u8]),
) {
    if masks.columns == all {
        found(&board[..row]);
        return;
    }
    let mut free = masks.free(all);
    while free != 0 {
        let bit = free & free.wrapping_neg();
        free ^= bit;
        board[row] = bit.trailing_zeros() as u8;
        descend(all, row + 1, masks.place(bit), board, found);
    }
}

/// Calls `found` with every solution of size `n` whose first rows are `opening` (none if the
/// opening itself does not hold, or is not of size `n`).
pub fn solutions(n: usize, opening: &Opening, mut found: impl FnMut(&[u8])) {
    if n == 0 || n > MAX_SIZE {
        return;
    }
    let all = (1u32 << n) - 1;
    let mut board = [0u8; MAX_SIZE];
    let mut masks = Masks::EMPTY;
    for (row, &column) in opening.columns().iter().enumerate() {
        if usize::from(column) >= n || masks.free(all) & (1 << column) == 0 {
            return;
        }
        board[row] = column;
        masks = masks.place(1 << column);
    }
    descend(all, opening.rows, masks, &mut board, &mut found);
}

/// Calls `found` with the canonical form of every solution of size `n` that starts with
/// `opening` (a class may come several times); returns how many solutions there were.
pub fn canonical_forms(n: usize, opening: &Opening, mut found: impl FnMut(u64)) -> u64 {
    let mut count = 0;
    solutions(n, opening, |board| {
        count += 1;
        found(canonical(board));
    });
    count
}

/// The number of solutions of size `n` up to symmetry, in this process: the canonical forms
/// of the solutions of every opening in a `std` set.
pub fn sequential(n: usize) -> usize {
    let mut classes = HashSet::new();
    for opening in openings(n) {
        canonical_forms(n, &opening, |form| {
            classes.insert(form);
        });
    }
    classes.len()
}
