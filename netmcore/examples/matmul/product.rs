//! The computation of the `matmul` example: the inputs, the product of a band of rows, the
//! sequential product, and the product in band processes over shared matrices. The test
//! `tests/tests/matmul_example.rs` includes this module, so it checks the example's own code.

use std::ops::Range;

use anyhow::{Context as _, ensure};
use netmcore::process::{self, ProcessType};
use netmcore::shared::{Handle, SharedMatrix};
use serde::{Deserialize, Serialize};

/// The `n` × `n` input matrices `A` and `B`, row-major: sevenths between -1 and 1, which
/// no binary fraction holds exactly, so that a sum rounds differently in another order.
pub fn inputs(n: usize) -> (Vec<f64>, Vec<f64>) {
    let value = |i: usize, j: usize, p: usize, q: usize| ((i * p + j * q) % 15) as f64 / 7.0 - 1.0;
    let a = (0..n * n).map(|x| value(x / n, x % n, 7, 3)).collect();
    let b = (0..n * n).map(|x| value(x / n, x % n, 5, 11)).collect();
    (a, b)
}

/// Rows `rows` of `A × B` for `n` × `n` matrices, into `out` (`rows.len() * n` elements).
///
/// Each element is a sum over `k` in ascending order, starting from `0.0`, whichever band it
/// lies in: so the product in bands equals the sequential one exactly, not just closely. The
/// loops run `i`, `k`, `j`, so that the rows of `B` are read in order.
pub fn multiply_rows(a: &[f64], b: &[f64], n: usize, rows: Range<usize>, out: &mut [f64]) {
    out.fill(0.0);
    for (i, out_row) in rows.zip(out.chunks_exact_mut(n)) {
        let a_row = &a[i * n..(i + 1) * n];
        for (k, &a_ik) in a_row.iter().enumerate() {
            let b_row = &b[k * n..(k + 1) * n];
            for (c, &b_kj) in out_row.iter_mut().zip(b_row) {
                *c += a_ik * b_kj;
            }
        }
    }
}

/// `A × B` in this process.
pub fn sequential(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut c = vec![0.0; n * n];
    multiply_rows(a, b, n, 0..n, &mut c);
    c
}

/// Splits rows `0..n` into `count` contiguous bands of nearly equal height (some empty when
/// there are more bands than rows).
pub fn bands(n: usize, count: usize) -> Vec<Range<usize>> {
    let count = count.max(1);
    (0..count)
        .map(|k| k * n / count..(k + 1) * n / count)
        .collect()
}

/// What a band process is told: the frozen inputs, the product to write, and its rows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Band {
    /// `A`, frozen.
    pub a: Handle<SharedMatrix<f64>>,
    /// `B`, frozen.
    pub b: Handle<SharedMatrix<f64>>,
    /// `C`, whose rows `rows` this process claims and writes.
    pub c: Handle<SharedMatrix<f64>>,
    /// The band of rows.
    pub rows: Range<usize>,
}

/// The process type that computes one band of `C`; its result is an error message, if any.
pub type BandProcess = ProcessType<Band, Result<(), String>>;

/// Defines [`BandProcess`]. Call it before `startup`, in the program that becomes the master.
pub fn def_band_process() -> netmcore::Result<BandProcess> {
    process::def_process(|band: Band| compute_band(&band).map_err(|e| format!("{e:#}")))
}

/// In a band process: opens the three matrices, claims the band's rows of `C` and writes
/// them. The claim ends when this returns (and would end with the process if it died).
fn compute_band(band: &Band) -> anyhow::Result<()> {
    let a = SharedMatrix::open(band.a).context("open A")?;
    let b = SharedMatrix::open(band.b).context("open B")?;
    let c = SharedMatrix::open(band.c).context("open C")?;
    let n = c.rows();
    let mut rows = c
        .claim_rows(band.rows.clone())
        .with_context(|| format!("claim rows {:?} of C", band.rows))?;
    multiply_rows(
        a.as_slice()?,
        b.as_slice()?,
        n,
        band.rows.clone(),
        &mut rows,
    );
    Ok(())
}

/// In a worker: computes `A × B` in `workers` band processes, started all at once and then
/// joined, freezes the product and returns it. `a` and `b` are frozen `n` × `n` matrices.
pub fn multiply_in_processes(
    band: &BandProcess,
    a: &SharedMatrix<f64>,
    b: &SharedMatrix<f64>,
    workers: usize,
) -> anyhow::Result<SharedMatrix<f64>> {
    let n = a.rows();
    ensure!(
        a.cols() == n && b.rows() == n && b.cols() == n,
        "not two square matrices of the same size"
    );
    let c = SharedMatrix::zeroed(n, n).context("create C")?;
    let pids = bands(n, workers)
        .into_iter()
        .map(|rows| {
            band.start(&Band {
                a: a.handle(),
                b: b.handle(),
                c: c.handle(),
                rows,
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .context("start a band process")?;
    for pid in pids {
        band.join(pid)
            .context("join a band process")?
            .with_context(|| format!("band process {} ended without a result", pid.0))?
            .map_err(anyhow::Error::msg)?;
    }
    c.freeze().context("freeze C")?;
    Ok(c)
}

/// In a worker: `A` and `B` for size `n` (see [`inputs`]), in frozen shared matrices.
pub fn shared_inputs(n: usize) -> anyhow::Result<(SharedMatrix<f64>, SharedMatrix<f64>)> {
    let (a, b) = inputs(n);
    Ok((frozen(n, &a)?, frozen(n, &b)?))
}

/// An `n` × `n` shared matrix holding `values`, frozen.
fn frozen(n: usize, values: &[f64]) -> anyhow::Result<SharedMatrix<f64>> {
    let m = SharedMatrix::zeroed(n, n)?;
    m.claim_rows(0..n)?.copy_from_slice(values);
    m.freeze()?;
    Ok(m)
}
