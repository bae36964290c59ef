//! The master process of a run: started by the supervisor in a process group of its own, it
//! defines the process types, becomes the master with `netmcore::run`, and after `run`
//! returned checks what the master left: children, descriptors, the ledger. It writes what it
//! found to the report file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use netmcore::{Config, ResourceRepr};
use netmcore_resources::ledger::{self, Record};
use rustix::process::Signal;

use crate::bodies::{self, types};
use crate::coordinator::{CoordArg, RootArg};
use crate::procs;
use crate::report::Report;
use crate::rng::Rng;
use crate::shared::{self, Counter, Settings};

/// How long the master's children get to be reaped after `run` returned.
const CHILD_GRACE: Duration = Duration::from_secs(5);

/// What the supervisor tells the master process, as `key=value` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The run's scratch directory: the socket directory is `sock` in it, the files `files`,
    /// the report `report`.
    pub scratch: PathBuf,
    /// The name of the progress region.
    pub region: String,
    /// The prefix of every object name.
    pub prefix: String,
    /// The seed.
    pub seed: u64,
    /// Coordinators.
    pub coordinators: u64,
    /// Processes per coordinator.
    pub budget: u64,
    /// The deadline in ms since the Unix epoch, 0 for none.
    pub deadline_ms: u64,
    /// The most actions in a wave.
    pub wave_max: u64,
    /// Actions left out of the mix (a bit per action, see `tally::ACTION_NAMES`).
    pub disabled: u64,
    /// The supervisor's pid: the master process ends if its supervisor is gone.
    pub supervisor: u32,
}

impl Plan {
    /// The socket directory.
    pub fn socket_dir(&self) -> PathBuf {
        self.scratch.join("sock")
    }

    /// The directory of the files the run registers.
    pub fn files_dir(&self) -> PathBuf {
        self.scratch.join("files")
    }

    /// The report file.
    pub fn report_path(&self) -> PathBuf {
        self.scratch.join("report")
    }

    /// The plan as arguments.
    pub fn to_args(&self) -> Vec<String> {
        vec![
            format!("scratch={}", self.scratch.display()),
            format!("region={}", self.region),
            format!("prefix={}", self.prefix),
            format!("seed={}", self.seed),
            format!("coordinators={}", self.coordinators),
            format!("budget={}", self.budget),
            format!("deadline_ms={}", self.deadline_ms),
            format!("wave_max={}", self.wave_max),
            format!("disabled={}", self.disabled),
            format!("supervisor={}", self.supervisor),
        ]
    }

    /// Parses [`Plan::to_args`].
    pub fn from_args(args: &[String]) -> anyhow::Result<Plan> {
        let map: BTreeMap<&str, &str> = args.iter().filter_map(|a| a.split_once('=')).collect();
        let get = |key: &str| {
            map.get(key)
                .copied()
                .with_context(|| format!("no {key}= argument"))
        };
        let num = |key: &str| -> anyhow::Result<u64> {
            get(key)?
                .parse()
                .with_context(|| format!("{key}= wants a number"))
        };
        Ok(Plan {
            scratch: PathBuf::from(get("scratch")?),
            region: get("region")?.to_owned(),
            prefix: get("prefix")?.to_owned(),
            seed: num("seed")?,
            coordinators: num("coordinators")?,
            budget: num("budget")?,
            deadline_ms: num("deadline_ms")?,
            wave_max: num("wave_max")?,
            disabled: num("disabled")?,
            supervisor: u32::try_from(num("supervisor")?).context("supervisor= is no pid")?,
        })
    }
}

/// The master process's `main`: runs the plan and writes the report.
pub fn main(args: &[String]) -> anyhow::Result<()> {
    let plan = Plan::from_args(args)?;
    // Die with the supervisor: SIGTERM makes the master stop its workers and clean up.
    rustix::process::set_parent_process_death_signal(Some(Signal::TERM))
        .context("prctl(PR_SET_PDEATHSIG, SIGTERM)")?;
    if std::os::unix::process::parent_id() != plan.supervisor {
        bail!("the supervisor {} is gone", plan.supervisor);
    }
    shared::map_region(&plan.region)?;
    // The supervisor keeps its own mapping; the name is not needed any more.
    netmcore_ipc::shm::unlink(&plan.region)
        .with_context(|| format!("shm_unlink {}", plan.region))?;
    shared::set(Counter::Mapped, 1);
    shared::mark_own_pid();
    shared::set_settings(Settings {
        prefix: plan.prefix.clone(),
        files: plan.files_dir(),
    });
    let mut report = Report::default();
    let fds_before = procs::open_fds();
    report.fds_before = fds_before.len() as u64;

    bodies::define()?;
    // Preallocated shm made before `startup`: recorded in the ledger when `startup` opens it,
    // inherited by the coordinators (`Inherit::All`), destroyed when `run` returns.
    let pattern = Rng::new(plan.seed, 0).next_u64();
    let (global, name) =
        netmcore::create_preallocated_shm(&format!("{}global-", plan.prefix), 4096)
            .context("create_preallocated_shm before startup")?;
    shared::add(Counter::Resources, 1);
    let resource = netmcore::get_resource(global).context("get_resource before startup")?;
    let ResourceRepr::PosixShmPreallocated { memory, .. } = resource.repr() else {
        bail!("get_resource {global} ({name}) gave {resource}");
    };
    bodies::fill(memory, pattern).map_err(anyhow::Error::msg)?;

    let arg = RootArg {
        coordinators: plan.coordinators,
        coordinator: CoordArg {
            index: 0,
            seed: plan.seed,
            budget: plan.budget,
            deadline_ms: plan.deadline_ms,
            global: Some((global, pattern)),
            disabled: plan.disabled,
            wave_max: plan.wave_max,
        },
    };
    let started = Instant::now();
    let outcome = netmcore::run(Config::new(plan.socket_dir()), &types().root, &arg);
    report.run_seconds = started.elapsed().as_secs_f64();
    match outcome {
        Ok(Some(tally)) => report.tally = Some(tally),
        Ok(None) => report.run_error = Some("the root process ended without a result".into()),
        Err(e) => report.run_error = Some(format!("run: {e}")),
    }
    report.bodies = shared::get(Counter::Processes);
    report.objects = shared::get(Counter::Resources);

    let me = std::process::id() as i32;
    let deadline = Instant::now() + CHILD_GRACE;
    while !procs::children_of(me).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    report.children_left = procs::children_of(me)
        .iter()
        .map(procs::Proc::describe)
        .collect();

    let fds_after = procs::open_fds();
    report.fds_after = fds_after.len() as u64;
    for (fd, target) in &fds_after {
        if fds_before.get(fd) != Some(target) {
            report
                .fd_changes
                .push(format!("open after, not before: {fd} -> {target}"));
        }
    }
    for (fd, target) in &fds_before {
        if !fds_after.contains_key(fd) {
            report
                .fd_changes
                .push(format!("open before, closed after: {fd} -> {target}"));
        }
    }

    let sock = plan.socket_dir();
    match ledger::read_records(ledger::ledger_path(&sock)) {
        Ok(records) => {
            for r in &records {
                match r {
                    Record::Registered(_) => report.ledger_registered += 1,
                    Record::Destroyed(_) => report.ledger_destroyed += 1,
                }
            }
        }
        Err(e) => report.ledger_error = Some(format!("read the ledger records: {e}")),
    }
    match ledger::replay_dir(&sock) {
        Ok(live) => report.ledger_live = live.iter().map(ToString::to_string).collect(),
        Err(e) => report.ledger_error = Some(format!("replay the ledger: {e}")),
    }
    report.write(&plan.report_path())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_survives_its_arguments() {
        let plan = Plan {
            scratch: PathBuf::from("/tmp/netmcore-stress-1"),
            region: "/netmcore-stress-1-progress".into(),
            prefix: "/netmcore-stress-1-".into(),
            seed: u64::MAX,
            coordinators: 4,
            budget: 2500,
            deadline_ms: 0,
            wave_max: 6,
            disabled: 0b1_0100,
            supervisor: 1,
        };
        assert_eq!(Plan::from_args(&plan.to_args()).expect("parses"), plan);
    }
}
