//! The `matmul` example of the facade computes the right product: the bands split the rows,
//! a small product is the one worked out by hand, and the product computed by band processes
//! over shared matrices, for several worker counts, equals the sequential one exactly.
//!
//! The example's module is included from `netmcore/examples/matmul/product.rs`, so that this
//! checks the example's own code.

mod support;

#[allow(
    dead_code,
    reason = "the example's module has parts that only the example uses"
)]
#[path = "../../netmcore/examples/matmul/product.rs"]
mod product;

use std::process::ExitCode;

use anyhow::ensure;
use support::{Scenario, cases, coordinator, run_coordinator};

fn main() -> ExitCode {
    support::run_cases(cases![
        bands_cover_every_row_once,
        a_small_product_is_the_one_worked_out_by_hand,
        the_product_in_processes_equals_the_sequential_one,
    ])
}

/// The bands split the rows without gap or overlap, for any count.
fn bands_cover_every_row_once(_: &Scenario) -> anyhow::Result<()> {
    for n in [0, 1, 2, 7, 100, 301] {
        for count in 1..=9 {
            let bands = product::bands(n, count);
            ensure!(bands.len() == count);
            ensure!(bands[0].start == 0 && bands[count - 1].end == n);
            ensure!(bands.windows(2).all(|w| w[0].end == w[1].start));
        }
    }
    Ok(())
}

/// `[[1, 2], [3, 4]] × [[5, 6], [7, 8]] = [[19, 22], [43, 50]]`, whole and row by row.
fn a_small_product_is_the_one_worked_out_by_hand(_: &Scenario) -> anyhow::Result<()> {
    let (a, b) = ([1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]);
    ensure!(product::sequential(&a, &b, 2) == [19.0, 22.0, 43.0, 50.0]);
    let mut second = [-1.0; 2];
    product::multiply_rows(&a, &b, 2, 1..2, &mut second);
    ensure!(second == [43.0, 50.0], "row 1 is {second:?}");
    Ok(())
}

/// For a 40 × 40 product, 1, 2, 3 and 7 band processes compute exactly the sequential
/// product, which rounds (the inputs are sevenths): so the processes summed in its order.
fn the_product_in_processes_equals_the_sequential_one(s: &Scenario) -> anyhow::Result<()> {
    let band = product::def_band_process()?;
    let coordinator = coordinator(move |n: usize| {
        let (a, b) = product::inputs(n);
        let expected = product::sequential(&a, &b, n);
        let reordered = {
            let mut c = vec![0.0; n * n];
            for i in 0..n {
                for j in 0..n {
                    c[i * n + j] = (0..n).rev().map(|k| a[i * n + k] * b[k * n + j]).sum();
                }
            }
            c
        };
        ensure!(
            reordered != expected,
            "the inputs do not tell summation orders apart"
        );
        let (a, b) = product::shared_inputs(n)?;
        for workers in [1, 2, 3, 7] {
            let c = product::multiply_in_processes(&band, &a, &b, workers)?;
            ensure!((c.rows(), c.cols()) == (n, n));
            ensure!(
                c.as_slice()? == expected.as_slice(),
                "{workers} workers computed another product"
            );
        }
        Ok(())
    })?;
    run_coordinator(s, &coordinator, &40)
}
