//! What the benchmark reports: the figures it prints (names and units of DESIGN.md §6), the
//! ratios and their targets (one table, [`TARGETS`], read by the summary and the JSON alike),
//! the medians, the stdout lines, the summary table on stderr, and the JSON file.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// What a figure is for the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// One of the machine's floors (no netmcore code).
    Floor,
    /// A floor or figure printed for context, judged by no target.
    Extra,
    /// A netmcore figure judged by a target.
    Judged,
}

/// A figure: its name as printed, its unit, its role.
#[derive(Debug, Clone, Copy)]
pub struct Figure {
    /// The name (DESIGN.md §6).
    pub name: &'static str,
    /// The unit, as printed after the value.
    pub unit: &'static str,
    /// How the summary shows it.
    pub role: Role,
}

/// Every figure, in the order of the output.
pub const FIGURES: [Figure; 30] = [
    figure("cores", "count", Role::Extra),
    figure("floor_fork_wait_us", "us", Role::Floor),
    figure("floor_socket_rtt_us", "us", Role::Floor),
    figure("floor_memcpy_gb_s", "GB/s", Role::Floor),
    figure("floor_memread_gb_s", "GB/s", Role::Extra),
    figure("floor_mutex_incr_per_s", "incr/s", Role::Floor),
    figure("floor_ring_msgs_per_s", "msgs/s", Role::Floor),
    figure("spawn_join_us", "us", Role::Judged),
    figure("spawn_join_big_requester_us", "us", Role::Judged),
    figure("parallel_tasks_per_s", "tasks/s", Role::Judged),
    figure("get_release_us", "us", Role::Judged),
    figure("arg_64mib_mb_s", "MB/s", Role::Judged),
    figure("shm_pass_mb_s", "MB/s", Role::Judged),
    figure("startup_shutdown_ms", "ms", Role::Judged),
    figure("mutex_incr_per_s", "incr/s", Role::Judged),
    figure("pipe_mb_s", "MB/s", Role::Judged),
    figure("channel_msgs_per_s", "msgs/s", Role::Judged),
    figure("channel_4k_mb_s", "MB/s", Role::Judged),
    figure("nqueens12_speedup", "x", Role::Judged),
    figure("nqueens12_sequential_ms", "ms", Role::Extra),
    figure("nqueens12_shared_ms", "ms", Role::Extra),
    figure("nqueens1_shared_ms", "ms", Role::Extra),
    figure("nqueens12_channel_ms", "ms", Role::Extra),
    figure("nqueens14_speedup", "x", Role::Extra),
    figure("nqueens14_sequential_ms", "ms", Role::Extra),
    figure("nqueens14_shared_ms", "ms", Role::Extra),
    figure("pool_tasks_per_s", "tasks/s", Role::Judged),
    figure("pool_chunk1_tasks_per_s", "tasks/s", Role::Judged),
    figure("chameneos_meetings_per_s", "meetings/s", Role::Judged),
    figure("startup_shutdown_inproc_ms", "ms", Role::Extra),
];

const fn figure(name: &'static str, unit: &'static str, role: Role) -> Figure {
    Figure { name, unit, role }
}

/// The unit of figure `name` (empty for an unknown name).
pub fn unit_of(name: &str) -> &'static str {
    FIGURES
        .iter()
        .find(|f| f.name == name)
        .map_or("", |f| f.unit)
}

/// Which side of its bound a ratio must stay on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    /// The ratio must be at most this.
    AtMost(f64),
    /// The ratio must be at least this.
    AtLeast(f64),
}

impl Bound {
    /// Whether `ratio` meets the bound.
    pub fn met_by(self, ratio: f64) -> bool {
        match self {
            Bound::AtMost(limit) => ratio <= limit,
            Bound::AtLeast(limit) => ratio >= limit,
        }
    }

    /// `<= 1.0` or `>= 0.8`, as the JSON and the summary show it.
    pub fn text(self) -> String {
        match self {
            Bound::AtMost(limit) => format!("<= {limit:.1}"),
            Bound::AtLeast(limit) => format!(">= {limit:.1}"),
        }
    }
}

/// A target of DESIGN.md §6: a ratio of the run's own figures and the bound it must meet.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// The ratio's name, as printed.
    pub ratio: &'static str,
    /// The figure it judges.
    pub figure: &'static str,
    /// What the figure is divided by, in words (for the summary).
    pub against: &'static str,
    /// The bound.
    pub bound: Bound,
    /// Computes the ratio from the run's medians; `None` when a figure is missing.
    pub compute: fn(&Medians) -> Option<f64>,
}

/// The targets, in the order of the output.
pub const TARGETS: [Target; 15] = [
    Target {
        ratio: "spawn_join_vs_fork",
        figure: "spawn_join_us",
        against: "floor_fork_wait_us",
        bound: Bound::AtMost(1.0),
        compute: |m| Some(m.get("spawn_join_us")? / m.get("floor_fork_wait_us")?),
    },
    Target {
        ratio: "big_requester_vs_spawn_join",
        figure: "spawn_join_big_requester_us",
        against: "spawn_join_us",
        bound: Bound::AtMost(1.1),
        compute: |m| Some(m.get("spawn_join_big_requester_us")? / m.get("spawn_join_us")?),
    },
    Target {
        ratio: "parallel_vs_fork_floor",
        figure: "parallel_tasks_per_s",
        against: "cores x 1e6 / floor_fork_wait_us",
        bound: Bound::AtLeast(0.8),
        compute: |m| {
            let floor = m.get("cores")? * 1e6 / m.get("floor_fork_wait_us")?;
            Some(m.get("parallel_tasks_per_s")? / floor)
        },
    },
    Target {
        ratio: "get_release_vs_rtt",
        figure: "get_release_us",
        against: "floor_socket_rtt_us",
        bound: Bound::AtMost(1.2),
        compute: |m| Some(m.get("get_release_us")? / m.get("floor_socket_rtt_us")?),
    },
    Target {
        ratio: "arg_64mib_vs_target",
        figure: "arg_64mib_mb_s",
        against: "2000 MB/s",
        bound: Bound::AtLeast(1.0),
        compute: |m| Some(m.get("arg_64mib_mb_s")? / 2000.0),
    },
    Target {
        ratio: "shm_pass_vs_memcpy",
        figure: "shm_pass_mb_s",
        against: "floor_memcpy_gb_s x 1000",
        bound: Bound::AtLeast(0.8),
        compute: |m| Some(m.get("shm_pass_mb_s")? / (m.get("floor_memcpy_gb_s")? * 1000.0)),
    },
    Target {
        ratio: "startup_shutdown_vs_target",
        figure: "startup_shutdown_ms",
        against: "5 ms",
        bound: Bound::AtMost(1.0),
        compute: |m| Some(m.get("startup_shutdown_ms")? / 5.0),
    },
    Target {
        ratio: "mutex_vs_pthread",
        figure: "mutex_incr_per_s",
        against: "floor_mutex_incr_per_s",
        bound: Bound::AtLeast(0.5),
        compute: |m| Some(m.get("mutex_incr_per_s")? / m.get("floor_mutex_incr_per_s")?),
    },
    Target {
        ratio: "pipe_vs_memcpy",
        figure: "pipe_mb_s",
        against: "floor_memcpy_gb_s x 1000",
        bound: Bound::AtLeast(0.4),
        compute: |m| Some(m.get("pipe_mb_s")? / (m.get("floor_memcpy_gb_s")? * 1000.0)),
    },
    Target {
        ratio: "nqueens12_speedup_vs_target",
        figure: "nqueens12_speedup",
        against: "1.7 (on 2 cores)",
        bound: Bound::AtLeast(1.0),
        compute: |m| Some(m.get("nqueens12_speedup")? / 1.7),
    },
    Target {
        ratio: "pool_vs_target",
        figure: "pool_tasks_per_s",
        against: "10,000,000 tasks/s",
        bound: Bound::AtLeast(1.0),
        compute: |m| Some(m.get("pool_tasks_per_s")? / 10_000_000.0),
    },
    Target {
        ratio: "pool_chunk1_vs_target",
        figure: "pool_chunk1_tasks_per_s",
        against: "300,000 tasks/s",
        bound: Bound::AtLeast(1.0),
        compute: |m| Some(m.get("pool_chunk1_tasks_per_s")? / 300_000.0),
    },
    Target {
        ratio: "channel_vs_ring",
        figure: "channel_msgs_per_s",
        against: "floor_ring_msgs_per_s",
        bound: Bound::AtLeast(0.2),
        compute: |m| Some(m.get("channel_msgs_per_s")? / m.get("floor_ring_msgs_per_s")?),
    },
    Target {
        ratio: "channel_4k_vs_memcpy",
        figure: "channel_4k_mb_s",
        against: "floor_memcpy_gb_s x 1000",
        bound: Bound::AtLeast(0.3),
        compute: |m| Some(m.get("channel_4k_mb_s")? / (m.get("floor_memcpy_gb_s")? * 1000.0)),
    },
    Target {
        ratio: "chameneos_vs_target",
        figure: "chameneos_meetings_per_s",
        against: "200,000 meetings/s",
        bound: Bound::AtLeast(1.0),
        compute: |m| Some(m.get("chameneos_meetings_per_s")? / 200_000.0),
    },
];

/// The median of each figure measured so far.
#[derive(Debug, Clone, Default)]
pub struct Medians {
    values: BTreeMap<&'static str, f64>,
}

impl Medians {
    /// Records figure `name`.
    pub fn insert(&mut self, name: &'static str, value: f64) {
        self.values.insert(name, value);
    }

    /// The median of figure `name`, if it was measured.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.values.get(name).copied()
    }
}

/// A ratio of the run: its target, its value, and whether the target is met.
#[derive(Debug, Clone, Copy)]
pub struct Ratio {
    /// The target it belongs to.
    pub target: &'static Target,
    /// Its value.
    pub value: f64,
}

impl Ratio {
    /// Whether the ratio meets its target.
    pub fn met(&self) -> bool {
        self.target.bound.met_by(self.value)
    }
}

/// The ratios whose figures were all measured.
pub fn ratios(medians: &Medians) -> Vec<Ratio> {
    TARGETS
        .iter()
        .filter_map(|target| {
            let value = (target.compute)(medians)?;
            value.is_finite().then_some(Ratio { target, value })
        })
        .collect()
}

/// The median of `values` (the mean of the middle two for an even count); `None` if empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// A value with as many decimals as its size calls for.
pub fn format_value(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 1000.0 {
        format!("{value:.0}")
    } else if magnitude >= 100.0 {
        format!("{value:.1}")
    } else if magnitude >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

/// The stdout line of a figure: `name value unit`.
pub fn figure_line(name: &str, value: f64) -> String {
    format!("{name} {} {}", format_figure(name, value), unit_of(name))
}

/// A figure's value as printed: counts as integers, the rest by [`format_value`].
pub fn format_figure(name: &str, value: f64) -> String {
    if unit_of(name) == "count" {
        format!("{value:.0}")
    } else {
        format_value(value)
    }
}

/// The stdout line of a ratio: `name value ratio`.
pub fn ratio_line(ratio: &Ratio) -> String {
    format!("{} {:.3} ratio", ratio.target.ratio, ratio.value)
}

/// The summary table for stderr: every figure with its value, its floor or target, the ratio
/// and whether the target is met.
pub fn summary(medians: &Medians, ratios: &[Ratio]) -> String {
    let mut rows = vec![[
        "figure".to_owned(),
        "value".to_owned(),
        "floor/target".to_owned(),
        "ratio".to_owned(),
        "met".to_owned(),
    ]];
    for figure in &FIGURES {
        let value = medians.get(figure.name).map_or_else(
            || "(missing)".to_owned(),
            |v| format!("{} {}", format_figure(figure.name, v), figure.unit),
        );
        let target = TARGETS.iter().find(|t| t.figure == figure.name);
        let ratio = ratios.iter().find(|r| r.target.figure == figure.name);
        let (goal, ratio_text, met) = match (figure.role, target) {
            (Role::Floor, _) => ("(floor)".to_owned(), String::new(), String::new()),
            (Role::Extra, _) | (Role::Judged, None) => {
                ("(extra)".to_owned(), String::new(), String::new())
            }
            (Role::Judged, Some(target)) => (
                format!("{} x {}", target.bound.text(), target.against),
                ratio.map_or_else(String::new, |r| format!("{:.3}", r.value)),
                ratio.map_or_else(
                    || "?".to_owned(),
                    |r| if r.met() { "met" } else { "not met" }.to_owned(),
                ),
            ),
        };
        rows.push([figure.name.to_owned(), value, goal, ratio_text, met]);
    }
    let mut widths = [0usize; 5];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let _ = write!(line, "{cell:<width$}");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let met = ratios.iter().filter(|r| r.met()).count();
    let _ = writeln!(out, "{met} of {} targets met", TARGETS.len());
    out
}

/// The machine the run measured.
#[derive(Debug, Clone)]
pub struct Machine {
    /// Available parallelism.
    pub cores: usize,
    /// The CPU's model name from `/proc/cpuinfo`.
    pub cpu: String,
}

impl Machine {
    /// This machine.
    pub fn this() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, model)| model.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        Machine {
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            cpu,
        }
    }
}

/// The run as JSON: `{"figures": [{"name", "value", "unit"}], "ratios": [{"name", "value",
/// "figure", "target", "met"}], "machine": {"cores", "cpu"}, "repetitions", "quick"}`.
pub fn json(
    medians: &Medians,
    ratios: &[Ratio],
    machine: &Machine,
    repetitions: usize,
    quick: bool,
) -> String {
    let figures: Vec<String> = FIGURES
        .iter()
        .filter_map(|f| {
            let value = medians.get(f.name)?;
            Some(format!(
                "{{\"name\": {}, \"value\": {}, \"unit\": {}}}",
                json_string(f.name),
                json_number(value),
                json_string(f.unit)
            ))
        })
        .collect();
    let ratios: Vec<String> = ratios
        .iter()
        .map(|r| {
            format!(
                "{{\"name\": {}, \"value\": {}, \"unit\": \"ratio\", \"figure\": {}, \
                 \"target\": {}, \"met\": {}}}",
                json_string(r.target.ratio),
                json_number(r.value),
                json_string(r.target.figure),
                json_string(&r.target.bound.text()),
                r.met()
            )
        })
        .collect();
    format!(
        "{{\n  \"figures\": [\n    {}\n  ],\n  \"ratios\": [\n    {}\n  ],\n  \"machine\": \
         {{\"cores\": {}, \"cpu\": {}}},\n  \"repetitions\": {repetitions},\n  \"quick\": \
         {quick}\n}}\n",
        figures.join(",\n    "),
        ratios.join(",\n    "),
        machine.cores,
        json_string(&machine.cpu),
    )
}

/// `text` as a JSON string literal, quotes included.
pub fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `value` as a JSON number; JSON has no NaN or infinity, so those are `null`.
fn json_number(value: f64) -> String {
    if value.is_finite() {
        format!("{value}")
    } else {
        "null".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[7.5]), Some(7.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("AMD EPYC"), "\"AMD EPYC\"");
        assert_eq!(json_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(json_string("x\ny\t\u{1}"), "\"x\\ny\\t\\u0001\"");
        assert_eq!(json_string("µs"), "\"µs\"");
        assert_eq!(json_number(f64::NAN), "null");
        assert_eq!(json_number(1.5), "1.5");
    }

    #[test]
    fn every_target_judges_a_known_figure() {
        for target in &TARGETS {
            let figure = FIGURES.iter().find(|f| f.name == target.figure);
            assert!(
                figure.is_some_and(|f| f.role == Role::Judged),
                "{} judges {}, which is not a judged figure",
                target.ratio,
                target.figure
            );
        }
    }

    #[test]
    fn ratios_follow_the_targets() {
        let mut medians = Medians::default();
        for (name, value) in [
            ("floor_fork_wait_us", 100.0),
            ("floor_socket_rtt_us", 40.0),
            ("floor_memcpy_gb_s", 10.0),
            ("cores", 2.0),
            ("spawn_join_us", 80.0),
            ("spawn_join_big_requester_us", 100.0),
            ("parallel_tasks_per_s", 16_000.0),
            ("get_release_us", 40.0),
            ("arg_64mib_mb_s", 1000.0),
            ("shm_pass_mb_s", 9000.0),
            ("startup_shutdown_ms", 2.0),
            ("floor_mutex_incr_per_s", 14e6),
            ("mutex_incr_per_s", 6e6),
            ("pipe_mb_s", 3000.0),
            ("nqueens12_speedup", 1.53),
            ("pool_tasks_per_s", 12e6),
            ("pool_chunk1_tasks_per_s", 150_000.0),
            ("floor_ring_msgs_per_s", 30e6),
            ("channel_msgs_per_s", 3e6),
            ("channel_4k_mb_s", 3500.0),
            ("chameneos_meetings_per_s", 250_000.0),
        ] {
            medians.insert(name, value);
        }
        let ratios = ratios(&medians);
        let by_name = |name: &str| {
            ratios
                .iter()
                .find(|r| r.target.ratio == name)
                .expect("every ratio is computed")
        };
        assert_eq!(ratios.len(), TARGETS.len());
        assert!(by_name("spawn_join_vs_fork").met());
        assert!(!by_name("big_requester_vs_spawn_join").met());
        assert!((by_name("parallel_vs_fork_floor").value - 0.8).abs() < 1e-9);
        assert!(by_name("parallel_vs_fork_floor").met());
        assert!(!by_name("arg_64mib_vs_target").met());
        assert!((by_name("shm_pass_vs_memcpy").value - 0.9).abs() < 1e-9);
        assert!(!by_name("mutex_vs_pthread").met());
        assert!(!by_name("channel_vs_ring").met(), "0.1 of the ring");
        assert!(by_name("channel_4k_vs_memcpy").met(), "0.35 of memcpy");
        assert!((by_name("pipe_vs_memcpy").value - 0.3).abs() < 1e-9);
        assert!(!by_name("pipe_vs_memcpy").met());
        assert!((by_name("nqueens12_speedup_vs_target").value - 0.9).abs() < 1e-9);
        assert!(!by_name("nqueens12_speedup_vs_target").met());
        assert!((by_name("pool_vs_target").value - 1.2).abs() < 1e-9);
        assert!(by_name("pool_vs_target").met());
        assert!((by_name("pool_chunk1_vs_target").value - 0.5).abs() < 1e-9);
        assert!(!by_name("pool_chunk1_vs_target").met());
        assert!((by_name("chameneos_vs_target").value - 1.25).abs() < 1e-9);
        assert!(by_name("chameneos_vs_target").met());
        let json = json(
            &medians,
            &ratios,
            &Machine {
                cores: 2,
                cpu: "Test \"CPU\"".to_owned(),
            },
            5,
            true,
        );
        assert!(json.contains("\"cpu\": \"Test \\\"CPU\\\"\""));
        assert!(json.contains("{\"name\": \"cores\", \"value\": 2, \"unit\": \"count\"}"));
    }
}
