//! Renders the Mandelbrot set in parallel worker processes and writes it as a PNG.
//!
//! ```text
//! cargo run --release --example mandelbrot
//! cargo run --release --example mandelbrot -- --width 3200 --height 2400 --workers 1,2,4
//! ```
//!
//! The program turns itself into a netmcore master. Its first process, the coordinator, splits
//! the image into one band of rows per worker, starts a `band` process for each (a typed
//! process defined before startup) and joins them for their pixels. It does so once for each
//! worker count and prints how long each took, so that the speed-up is visible:
//!
//! ```text
//! workers=1  1.23 s
//! workers=2  0.64 s  speed-up 1.92
//! ```
//!
//! The speed-up is relative to the first count. The bands are equal in height, not in work:
//! with more bands than cores, or with a view that is not symmetric about the real axis, some
//! finish early and the speed-up is below the count.
//!
//! Options (`--name value` or `--name=value`):
//!
//! * `--width N`, `--height N`: the image size in pixels (default 1600 × 1200).
//! * `--max-iter N`: iterations before a point counts as in the set (default 1000).
//! * `--workers LIST`: the worker counts to time, e.g. `1,2,4`; a single number `N` means
//!   `1, 2, ..., N` (default: 1 up to the number of cores).
//! * `--output PATH`: where to write the PNG (default `mandelbrot.png` in the current
//!   directory; the repository's `.gitignore` ignores PNG files).
//!
//! The socket directory of the master is a fresh directory under the system's temporary
//! directory, named after the process, and removed at the end.

mod render;

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use netmcore::{ByteBuf, Config};
use serde::{Deserialize, Serialize};

use render::View;

const USAGE: &str = "\
usage: mandelbrot [--width N] [--height N] [--max-iter N] [--workers LIST|N] [--output PATH]

  --width N         image width in pixels (default 1600)
  --height N        image height in pixels (default 1200)
  --max-iter N      iterations before a point counts as in the set (default 1000)
  --workers LIST|N  worker counts to time, e.g. 1,2,4; N alone means 1,2,...,N
                    (default: 1 up to the number of cores)
  --output PATH     the PNG to write (default mandelbrot.png)";

/// The command line, parsed.
#[derive(Debug)]
struct Options {
    view: View,
    workers: Vec<u32>,
    output: PathBuf,
}

/// What the coordinator gets: the view and the worker counts to time.
#[derive(Debug, Serialize, Deserialize)]
struct Job {
    view: View,
    workers: Vec<u32>,
}

fn main() -> anyhow::Result<()> {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return Ok(());
        }
        Err(message) => {
            eprintln!("mandelbrot: {message}\n\n{USAGE}");
            std::process::exit(2);
        }
    };

    // Process types are defined before startup: the workers are forked from the master and
    // find the bodies in their copy of its memory.
    let band = render::def_band_process()?;
    let coordinator = netmcore::process::def_process(move |job: Job| -> Result<ByteBuf, String> {
        time_renders(&band, &job)
            .map(ByteBuf::from)
            .map_err(|e| format!("{e:#}"))
    })?;

    let socket_dir =
        std::env::temp_dir().join(format!("netmcore-mandelbrot-{}", std::process::id()));
    let job = Job {
        view: options.view,
        workers: options.workers,
    };
    // `run` makes this process the master, runs the coordinator as its first process and
    // returns the coordinator's result once every worker has ended.
    let outcome = netmcore::run(Config::new(&socket_dir), &coordinator, &job);
    let _ = std::fs::remove_dir_all(&socket_dir);
    let pixels = outcome?
        .context("the coordinator ended without a result")?
        .map_err(anyhow::Error::msg)?;

    write_png(&options.output, &options.view, &pixels)?;
    println!(
        "wrote {} ({}x{})",
        options.output.display(),
        options.view.width,
        options.view.height
    );
    Ok(())
}

/// In the coordinator: renders the image once per worker count, printing the time each took,
/// and returns the last image.
fn time_renders(band: &render::BandProcess, job: &Job) -> anyhow::Result<Vec<u8>> {
    let mut first: Option<f64> = None;
    let mut image = Vec::new();
    for &workers in &job.workers {
        let started = Instant::now();
        image = render::render_in_processes(band, &job.view, workers)?;
        let seconds = started.elapsed().as_secs_f64();
        match first {
            None => {
                println!("workers={workers:<3} {seconds:.2} s");
                first = Some(seconds);
            }
            Some(base) => println!(
                "workers={workers:<3} {seconds:.2} s  speed-up {:.2}",
                base / seconds
            ),
        }
        let _ = std::io::stdout().flush();
    }
    Ok(image)
}

/// Writes 8-bit RGB `pixels` of `view` as a PNG file.
fn write_png(path: &Path, view: &View, pixels: &[u8]) -> anyhow::Result<()> {
    let file = File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut encoder = png::Encoder::new(BufWriter::new(file), view.width, view.height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(pixels)?;
    writer.finish()?;
    Ok(())
}

/// Parses the command line; `Ok(None)` asks for the usage text.
fn parse_args(args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
    let (mut width, mut height, mut max_iter) = (1600, 1200, 1000);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let mut workers: Vec<u32> = (1..=cores).collect();
    let mut output = PathBuf::from("mandelbrot.png");

    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
            None => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match name.as_str() {
            "--width" => width = positive(&name, &value()?)?,
            "--height" => height = positive(&name, &value()?)?,
            "--max-iter" => max_iter = positive(&name, &value()?)?,
            "--workers" => {
                let text = value()?;
                workers = if text.contains(',') {
                    text.split(',')
                        .map(|n| positive(&name, n.trim()))
                        .collect::<Result<_, _>>()?
                } else {
                    (1..=positive(&name, &text)?).collect()
                };
            }
            "--output" => output = PathBuf::from(value()?),
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    if let Some(&too_many) = workers.iter().find(|&&n| n > height) {
        return Err(format!(
            "{too_many} workers for {height} rows: each needs a row at least"
        ));
    }
    Ok(Some(Options {
        view: View::whole_set(width, height, max_iter),
        workers,
        output,
    }))
}

/// Parses a positive number given for option `name`.
fn positive(name: &str, text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{name} wants a positive number, not {text:?}")),
    }
}
