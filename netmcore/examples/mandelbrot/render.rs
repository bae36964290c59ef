//! The pixels of the Mandelbrot set, and their computation in parallel worker processes.
//!
//! This module is part of the `mandelbrot` example (see `main.rs` beside it); the test
//! `tests/tests/mandelbrot_render.rs` of the workspace includes it too, to check that the
//! image computed in processes equals the one computed in one process.

use anyhow::{Context as _, ensure};
use netmcore::ByteBuf;
use netmcore::process::{self, ProcessType};
use serde::{Deserialize, Serialize};

/// What to draw: the image size, the region of the complex plane, and the iteration limit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct View {
    /// Width of the image in pixels.
    pub width: u32,
    /// Height of the image in pixels.
    pub height: u32,
    /// The point of the complex plane at the centre of the image.
    pub center: (f64, f64),
    /// The distance in the complex plane between two neighbouring pixels.
    pub pixel_size: f64,
    /// How many iterations of `z -> z² + c` decide that `c` is in the set.
    pub max_iter: u32,
}

impl View {
    /// The whole set, `[-2.5, 1] × [-1.3, 1.3]`, fitted into `width × height` pixels.
    pub fn whole_set(width: u32, height: u32, max_iter: u32) -> View {
        View {
            width,
            height,
            center: (-0.75, 0.0),
            pixel_size: f64::max(3.5 / f64::from(width), 2.6 / f64::from(height)),
            max_iter,
        }
    }

    /// The point of the complex plane at the centre of pixel `(x, y)`; `y` grows downwards.
    pub fn point(&self, x: u32, y: u32) -> (f64, f64) {
        let dx = f64::from(x) + 0.5 - f64::from(self.width) / 2.0;
        let dy = f64::from(y) + 0.5 - f64::from(self.height) / 2.0;
        (
            self.center.0 + dx * self.pixel_size,
            self.center.1 - dy * self.pixel_size,
        )
    }
}

/// Iterates `z -> z² + c` from `z = c`, `c = cx + i·cy`. Returns how many steps it took until
/// `|z| > 2` (0 when `c` itself lies outside that circle) or `max_iter` when it never escaped
/// (`c` is taken to be in the set), together with `|z|²` at that point.
pub fn escape(cx: f64, cy: f64, max_iter: u32) -> (u32, f64) {
    let (mut x, mut y) = (cx, cy);
    for i in 0..max_iter {
        let (x2, y2) = (x * x, y * y);
        if x2 + y2 > 4.0 {
            return (i, x2 + y2);
        }
        y = 2.0 * x * y + cy;
        x = x2 - y2 + cx;
    }
    (max_iter, x * x + y * y)
}

/// The colour of a point that escaped after `steps` with `|z|² = norm`: a smooth
/// (continuous) iteration count mapped through a cosine palette from deep blue over white to
/// orange. Points of the set are black.
pub fn color(steps: u32, norm: f64, max_iter: u32) -> [u8; 3] {
    if steps >= max_iter {
        return [0, 0, 0];
    }
    // The normalised iteration count: continuous across the escape boundary, so the
    // bands of equal step counts blend into each other.
    let smooth = f64::from(steps) + 1.0 - (0.5 * norm.ln()).ln() / std::f64::consts::LN_2;
    let t = 0.35 * smooth.max(0.0).sqrt();
    let channel = |phase: f64| {
        let v = 0.5 + 0.5 * (std::f64::consts::TAU * (t + phase)).cos();
        (v * 255.0).round() as u8
    };
    [channel(0.0), channel(0.15), channel(0.35)]
}

/// The RGB pixels (3 bytes each, rows top to bottom) of rows `start..end` of `view`.
pub fn render_rows(view: &View, start: u32, end: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(3 * view.width as usize * end.saturating_sub(start) as usize);
    for y in start..end {
        for x in 0..view.width {
            let (cx, cy) = view.point(x, y);
            let (steps, norm) = escape(cx, cy, view.max_iter);
            out.extend_from_slice(&color(steps, norm, view.max_iter));
        }
    }
    out
}

/// Splits rows `0..height` into `bands` contiguous bands of nearly equal height.
pub fn bands(height: u32, bands: u32) -> Vec<(u32, u32)> {
    let (height, bands) = (u64::from(height), u64::from(bands.max(1)));
    (0..bands)
        .map(|k| {
            (
                (k * height / bands) as u32,
                ((k + 1) * height / bands) as u32,
            )
        })
        .collect()
}

/// The process type that renders one band: its argument is the view and the band's rows, its
/// result the band's pixels. A [`ByteBuf`] travels in one piece, not byte by byte.
pub type BandProcess = ProcessType<(View, u32, u32), ByteBuf>;

/// Defines [`BandProcess`]. Call it before `startup`, in the program that becomes the master.
pub fn def_band_process() -> netmcore::Result<BandProcess> {
    process::def_process(|(view, start, end): (View, u32, u32)| {
        ByteBuf::from(render_rows(&view, start, end))
    })
}

/// In a worker: renders `view` in `workers` band processes, started all at once and then
/// joined in order, and returns the image's RGB pixels.
pub fn render_in_processes(
    band: &BandProcess,
    view: &View,
    workers: u32,
) -> anyhow::Result<Vec<u8>> {
    let pids = bands(view.height, workers)
        .into_iter()
        .map(|(start, end)| band.start(&(*view, start, end)))
        .collect::<Result<Vec<_>, _>>()
        .context("start a band process")?;
    let mut image = Vec::with_capacity(3 * view.width as usize * view.height as usize);
    for pid in pids {
        let pixels = band
            .join(pid)
            .context("join a band process")?
            .with_context(|| format!("band process {} ended without a result", pid.0))?;
        image.extend_from_slice(&pixels);
    }
    ensure!(
        image.len() == 3 * view.width as usize * view.height as usize,
        "the bands hold {} bytes, not {}x{}x3",
        image.len(),
        view.width,
        view.height
    );
    Ok(image)
}
