//! `bench`: the figures of DESIGN.md §6, next to the machine's floors measured in the same
//! run, and the ratios that the targets are stated in.
//!
//! Run it through `cargo xtask bench [--quick] [--json PATH]`, or directly with
//! `cargo run --release -p netmcore-tests --bin bench -- --help`.
//!
//! stdout gets one line per figure, `name value unit` (each the median of several
//! repetitions), then one line per ratio, `name value ratio`; stderr gets the notes, the
//! samples behind each median and a summary table of figures, targets and whether each is
//! met. An unmet target is a result, not a failure: the program fails only when something
//! broke (a measurement failed or hung, or a run left a process or an object in `/dev/shm`).
//!
//! The program is a *driver* that runs every measurement in a fresh *measuring process*
//! (this program again, with `--child NAME`), which prints its samples as `sample NAME VALUE`
//! lines. So the floors are taken from a small single-threaded process, each netmcore
//! figure has a master of its own that allocated nothing big before `startup` (a fork copies
//! the master's page tables), and a measurement that breaks cannot spoil the others.
//! `startup_shutdown_ms` is the driver's own timing of a whole run of this program with
//! `--startup-once`, from spawn to exit.
//!
//! Modules: [`floors`] (plain syscalls, no netmcore), [`figures`] (the public API of the
//! `netmcore` facade), [`board`] and [`parallel`] (the search of the `nqueens` example, whose
//! modules are included from `netmcore/examples/nqueens/` so that the bench times the
//! example's own code), [`game`] (the `chameneos` example's game, included likewise),
//! [`driver`] (the measuring processes and the leak checks), [`report`]
//! (figures, targets, medians, the summary and the JSON).
#![deny(unsafe_code)]

#[allow(
    dead_code,
    reason = "the example's module has parts that only the example and its tests use"
)]
#[path = "../../../../netmcore/examples/nqueens/board.rs"]
mod board;
mod driver;
mod figures;
mod floors;
#[allow(
    dead_code,
    reason = "the example's module has parts that only the example and its tests use"
)]
#[path = "../../../../netmcore/examples/chameneos/game.rs"]
mod game;
#[path = "../../../../netmcore/examples/nqueens/parallel.rs"]
mod parallel;
mod pool;
mod report;
#[allow(
    unsafe_code,
    reason = "the floors' bare fork and _exit and their process-shared pthread mutex, and a \
              plain view of a read-only shm region; see the SAFETY comments"
)]
mod sys;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, bail};

const USAGE: &str = "\
usage: bench [--quick] [--json PATH]

  --quick      fewer repetitions and smaller batches (under 30 s once built)
  --json PATH  also write the figures, the ratios and the machine to PATH as JSON

Prints `name value unit` per figure (medians) and `name value ratio` per ratio on stdout;
notes and a summary table go to stderr. Exits non-zero only when something broke.";

/// One measured value of a figure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// The figure's name (one of [`report::FIGURES`]).
    pub name: &'static str,
    /// Its value, in the figure's unit.
    pub value: f64,
}

impl Sample {
    /// The mean time per operation in µs of `ops` operations begun at `start`.
    pub fn per_op(name: &'static str, start: Instant, ops: usize) -> Sample {
        Sample {
            name,
            value: micros_per(start, ops),
        }
    }

    /// `amount` per second since `start`.
    pub fn rate(name: &'static str, start: Instant, amount: f64) -> Sample {
        Sample {
            name,
            value: amount / start.elapsed().as_secs_f64(),
        }
    }
}

/// The mean time in µs of `ops` operations begun at `start`.
pub fn micros_per(start: Instant, ops: usize) -> f64 {
    start.elapsed().as_secs_f64() * 1e6 / ops.max(1) as f64
}

/// A size that depends on the mode.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    /// With `--quick`.
    pub quick: usize,
    /// Otherwise.
    pub full: usize,
}

/// How a measuring process measures: repetitions, and the mode for batch sizes.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// Repetitions: one sample each.
    pub reps: usize,
    /// Whether this is a `--quick` run.
    pub quick: bool,
}

impl Setting {
    /// The size of `scale` for this mode.
    pub fn pick(&self, scale: Scale) -> usize {
        if self.quick { scale.quick } else { scale.full }
    }
}

/// The prefix of the names of the objects this measuring process names itself:
/// `netmcore-bench-<pid>-`.
pub fn object_prefix() -> String {
    format!("netmcore-bench-{}-", std::process::id())
}

/// A measurement that a measuring process runs.
pub struct Job {
    /// Its name, as `--child` takes it.
    pub name: &'static str,
    /// The figures it gives.
    pub figures: &'static [&'static str],
    /// Measures.
    pub run: fn(&Setting) -> anyhow::Result<Vec<Sample>>,
}

/// The measurements, in the order of the run (the floors first).
pub const JOBS: [Job; 19] = [
    Job {
        name: "floor_fork",
        figures: &["floor_fork_wait_us"],
        run: floors::fork_wait,
    },
    Job {
        name: "floor_rtt",
        figures: &["floor_socket_rtt_us"],
        run: floors::socket_rtt,
    },
    Job {
        name: "floor_memory",
        figures: &["floor_memcpy_gb_s", "floor_memread_gb_s"],
        run: floors::memory,
    },
    Job {
        name: "floor_mutex",
        figures: &["floor_mutex_incr_per_s"],
        run: floors::mutex_incr,
    },
    Job {
        name: "floor_ring",
        figures: &["floor_ring_msgs_per_s"],
        run: floors::ring,
    },
    Job {
        name: "spawn_join",
        figures: &["spawn_join_us"],
        run: figures::spawn_join,
    },
    Job {
        name: "big_requester",
        figures: &["spawn_join_big_requester_us"],
        run: figures::spawn_join_big_requester,
    },
    Job {
        name: "parallel",
        figures: &["parallel_tasks_per_s"],
        run: figures::parallel,
    },
    Job {
        name: "get_release",
        figures: &["get_release_us"],
        run: figures::get_release,
    },
    Job {
        name: "arg_64mib",
        figures: &["arg_64mib_mb_s"],
        run: figures::arg_64mib,
    },
    Job {
        name: "shm_pass",
        figures: &["shm_pass_mb_s"],
        run: figures::shm_pass,
    },
    Job {
        name: "mutex_incr",
        figures: &["mutex_incr_per_s"],
        run: figures::mutex_incr,
    },
    Job {
        name: "pipe",
        figures: &["pipe_mb_s"],
        run: figures::pipe_mb_s,
    },
    Job {
        name: "channel_msgs",
        figures: &["channel_msgs_per_s"],
        run: figures::channel_msgs,
    },
    Job {
        name: "channel_4k",
        figures: &["channel_4k_mb_s"],
        run: figures::channel_4k,
    },
    Job {
        name: "nqueens",
        figures: &[
            "nqueens12_speedup",
            "nqueens12_sequential_ms",
            "nqueens12_shared_ms",
            "nqueens1_shared_ms",
            "nqueens12_channel_ms",
        ],
        run: figures::nqueens12_speedup,
    },
    Job {
        name: "nqueens14",
        figures: &[
            "nqueens14_speedup",
            "nqueens14_sequential_ms",
            "nqueens14_shared_ms",
        ],
        run: figures::nqueens14_speedup,
    },
    Job {
        name: "pool",
        figures: &["pool_tasks_per_s", "pool_chunk1_tasks_per_s"],
        run: pool::pool_tasks,
    },
    Job {
        name: "chameneos",
        figures: &["chameneos_meetings_per_s"],
        run: figures::chameneos,
    },
];

/// The command line of the driver.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// `--quick`.
    pub quick: bool,
    /// `--json PATH`.
    pub json: Option<PathBuf>,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    /// The driver: run everything and report.
    Drive(Options),
    /// `--help`.
    Help,
    /// `--child NAME --reps N [--quick]`: one measurement, samples on stdout.
    Child {
        job: String,
        reps: usize,
        quick: bool,
    },
    /// `--startup-once`: one whole run for `startup_shutdown_ms`.
    StartupOnce,
}

/// Parses the command line (without the program name).
fn parse(args: &[String]) -> anyhow::Result<Mode> {
    let mut options = Options::default();
    let mut child: Option<String> = None;
    let mut reps = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--help" | "-h" => return Ok(Mode::Help),
            "--quick" => options.quick = true,
            "--json" => {
                let path = it.next().context("--json wants a path")?;
                options.json = Some(PathBuf::from(path));
            }
            "--child" => child = Some(it.next().context("--child wants a name")?.clone()),
            "--reps" => {
                let n = it.next().context("--reps wants a number")?;
                reps = Some(n.parse().with_context(|| format!("--reps {n}"))?);
            }
            "--startup-once" => return Ok(Mode::StartupOnce),
            other => bail!("unknown argument `{other}`\n\n{USAGE}"),
        }
    }
    Ok(match child {
        Some(job) => Mode::Child {
            job,
            reps: reps.context("--child wants --reps")?,
            quick: options.quick,
        },
        None => Mode::Drive(options),
    })
}

/// Prints samples as `sample NAME VALUE` lines, for the driver.
fn print_samples(samples: &[Sample]) {
    for s in samples {
        println!("sample {} {}", s.name, s.value);
    }
}

/// The measuring process: becomes SIGTERM'd when the driver dies (so that a master left by
/// a killed driver stops and cleans up), runs the job, prints its samples.
fn child_main(job: &str, setting: Setting) -> anyhow::Result<()> {
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))
        .context("prctl(PR_SET_PDEATHSIG)")?;
    let job = JOBS
        .iter()
        .find(|j| j.name == job)
        .with_context(|| format!("no measurement named {job}"))?;
    let samples = (job.run)(&setting)?;
    print_samples(&samples);
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match parse(&args) {
        Ok(Mode::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Mode::Child { job, reps, quick }) => child_main(&job, Setting { reps, quick })
            .map(|()| true)
            .with_context(|| format!("measuring {job}")),
        Ok(Mode::StartupOnce) => {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))
                .context("prctl(PR_SET_PDEATHSIG)")
                .and_then(|()| figures::startup_once())
                .map(|samples| {
                    print_samples(&samples);
                    true
                })
        }
        Ok(Mode::Drive(options)) => driver::run(&options),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn the_command_line_is_parsed() {
        assert_eq!(parse(&[]).unwrap(), Mode::Drive(Options::default()));
        assert_eq!(
            parse(&args("--quick --json out.json")).unwrap(),
            Mode::Drive(Options {
                quick: true,
                json: Some("out.json".into())
            })
        );
        assert_eq!(
            parse(&args("--child spawn_join --reps 3 --quick")).unwrap(),
            Mode::Child {
                job: "spawn_join".to_owned(),
                reps: 3,
                quick: true
            }
        );
        assert!(parse(&args("--json")).is_err());
        assert!(parse(&args("--child spawn_join")).is_err());
        assert!(parse(&args("--fast")).is_err());
    }

    #[test]
    fn every_job_figure_is_a_reported_figure() {
        for job in &JOBS {
            for name in job.figures {
                assert!(
                    report::FIGURES.iter().any(|f| f.name == *name),
                    "{} gives {name}, which the report does not know",
                    job.name
                );
            }
        }
    }
}
