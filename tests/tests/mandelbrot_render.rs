//! The `mandelbrot` example of the facade computes the right image: escape counts at known
//! points, and the image rendered in band processes, for several worker counts, equals the one
//! rendered in a single process.
//!
//! The example's render module is included from `netmcore/examples/mandelbrot/render.rs`, so
//! that this checks the example's own code.

mod support;

#[allow(
    dead_code,
    reason = "the example's module has parts that only the example uses"
)]
#[path = "../../netmcore/examples/mandelbrot/render.rs"]
mod render;

use std::process::ExitCode;

use anyhow::ensure;
use render::View;
use support::{Scenario, cases, coordinator, run_coordinator};

fn main() -> ExitCode {
    support::run_cases(cases![
        points_inside_reach_max_iter_and_far_points_escape_at_once,
        bands_cover_every_row_once,
        colors_are_black_inside_and_vary_outside,
        parallel_render_equals_single_process,
    ])
}

/// Points of the set reach `max_iter`; a point far outside escapes at once.
fn points_inside_reach_max_iter_and_far_points_escape_at_once(_: &Scenario) -> anyhow::Result<()> {
    for (cx, cy) in [
        (0.0, 0.0),
        (-1.0, 0.0),
        (-0.1, 0.1),
        (0.25, 0.0),
        (-2.0, 0.0),
    ] {
        let (steps, _) = render::escape(cx, cy, 500);
        ensure!(
            steps == 500,
            "({cx}, {cy}) is in the set, escaped after {steps}"
        );
    }
    for (cx, cy) in [(10.0, 10.0), (-3.0, 0.0), (0.0, 2.5)] {
        let (steps, norm) = render::escape(cx, cy, 500);
        ensure!(
            steps == 0 && norm > 4.0,
            "({cx}, {cy}) is far outside, took {steps}"
        );
    }
    // Just outside the cusp of the cardioid: escapes, but only after a while.
    let (steps, _) = render::escape(0.26, 0.0, 500);
    ensure!(steps > 5 && steps < 500, "(0.26, 0) took {steps}");
    Ok(())
}

/// The bands split the rows without gap or overlap, for any count.
fn bands_cover_every_row_once(_: &Scenario) -> anyhow::Result<()> {
    for height in [1, 2, 7, 100, 1200] {
        for count in 1..=height.min(9) {
            let bands = render::bands(height, count);
            ensure!(bands.len() == count as usize);
            ensure!(bands[0].0 == 0 && bands[bands.len() - 1].1 == height);
            ensure!(bands.windows(2).all(|w| w[0].1 == w[1].0));
            ensure!(
                bands.iter().all(|&(a, b)| a < b),
                "an empty band: {bands:?}"
            );
        }
    }
    Ok(())
}

/// Points of the set are black; outside, the palette gives several colours.
fn colors_are_black_inside_and_vary_outside(_: &Scenario) -> anyhow::Result<()> {
    let view = View::whole_set(64, 48, 200);
    let pixels = render::render_rows(&view, 0, view.height);
    ensure!(pixels.len() == 64 * 48 * 3);
    // The centre of the main cardioid, (-0.25, 0) in the plane, is near the image centre.
    let centre = 3 * (24 * 64 + 32);
    ensure!(
        pixels[centre..centre + 3] == [0, 0, 0],
        "the centre is not black"
    );
    let distinct: std::collections::BTreeSet<&[u8]> = pixels.chunks(3).collect();
    ensure!(distinct.len() > 20, "only {} colours", distinct.len());
    Ok(())
}

/// The image rendered in 1, 2, 3 and 7 band processes equals the one rendered in one process.
fn parallel_render_equals_single_process(s: &Scenario) -> anyhow::Result<()> {
    let band = render::def_band_process()?;
    let coordinator = coordinator(move |view: View| {
        let expected = render::render_rows(&view, 0, view.height);
        for workers in [1, 2, 3, 7] {
            let image = render::render_in_processes(&band, &view, workers)?;
            ensure!(
                image == expected,
                "{workers} workers rendered another image"
            );
        }
        Ok(())
    })?;
    run_coordinator(s, &coordinator, &View::whole_set(120, 81, 300))
}
