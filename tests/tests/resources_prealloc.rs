//! Preallocated shared memory (DESIGN.md §3–§4): the master fills a 64 MiB region before
//! `startup`; a worker started with `Inherit::All`, or with the region's id in
//! `Inherit::Resources`, reads exactly that pattern through `get_resource`; a worker started
//! with `Inherit::Nothing` (or with plain `start`, whose default is `Nothing`) gets `NotShared`
//! and does not have the mapping; a worker that preallocates a region gets its id and name,
//! cannot map it itself, counts as its user (a worker it starts afterwards with the region
//! inherits it), and the region goes away when that worker ends.
//!
//! Run one with `cargo test -p netmcore-tests --test resources_prealloc -- NAME`.

mod support;

use std::process::ExitCode;

use anyhow::{Context as _, bail, ensure};
use netmcore::process::{self, ProcessType};
use netmcore::{Error, Inherit, ResId, ResourceKind, ResourceRepr};
use serde::{Deserialize, Serialize};
use support::objects;
use support::{Report, Scenario, cases, coordinator, ensure_err, run_coordinator, verdict};

fn main() -> ExitCode {
    support::run_cases(cases![
        inherit_all_reads_the_masters_pattern,
        inherit_listed_reads_the_masters_pattern,
        inherit_nothing_is_not_shared_and_unmapped,
        region_made_by_a_worker_is_not_shared_with_it_and_goes_with_it,
    ])
}

/// The size of the region the master fills before `startup`.
const SIZE: usize = 64 * 1024 * 1024;

/// The seed of its pattern.
const SEED: u64 = 0x6e65_746d_636f_7265;

/// A preallocated region, as the processes of a scenario name it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Region {
    id: ResId,
    name: String,
    size: usize,
    seed: u64,
}

/// The memory of preallocated region `id` as this process maps it, after checking that
/// `get_resource` describes it as `region`.
fn memory_of(region: &Region) -> anyhow::Result<netmcore::SharedMemory> {
    let resource = netmcore::get_resource(region.id)?;
    ensure!(
        resource.id() == region.id && resource.kind() == ResourceKind::PosixShmPreallocated,
        "get_resource({:?}) gave {:?}, a {:?}",
        region.id,
        resource.id(),
        resource.kind()
    );
    match resource.repr() {
        ResourceRepr::PosixShmPreallocated { name, memory } => {
            ensure!(*name == region.name, "{:?} is named {name}", region.id);
            ensure!(
                memory.len() == region.size,
                "{:?} maps {} bytes, not {}",
                region.id,
                memory.len(),
                region.size
            );
            Ok(*memory)
        }
        other => bail!("{:?} is described as {other:?}", region.id),
    }
}

/// Preallocates the scenario's 64 MiB region before `startup`, maps it in the master-to-be and
/// fills it with the pattern.
fn master_region() -> anyhow::Result<Region> {
    let prefix = format!("/{}region-", objects::own_prefix());
    let (id, name) = netmcore::create_preallocated_shm(&prefix, SIZE)?;
    ensure!(
        name.starts_with(&prefix),
        "the region {name} does not start with {prefix}"
    );
    ensure!(objects::shm_exists(&name), "{name} is not in /dev/shm");
    let region = Region {
        id,
        name,
        size: SIZE,
        seed: SEED,
    };
    let memory = memory_of(&region).context("in the master-to-be")?;
    objects::fill_pattern(
        memory.as_atomic_u64s().context("a page-aligned region")?,
        SEED,
    );
    Ok(region)
}

/// A process that reads `region` through `get_resource` and checks its pattern and that it is
/// mapped in this process.
fn reader() -> anyhow::Result<ProcessType<Region, Report>> {
    coordinator(|region: Region| {
        let memory = memory_of(&region)?;
        let words = memory.as_atomic_u64s().context("a page-aligned region")?;
        objects::check_pattern(words, region.seed)?;
        ensure!(
            objects::mapped_here(&region.name)?,
            "/proc/self/maps does not mention {}",
            region.name
        );
        Ok(())
    })
}

/// A process that may not see `region`: `get_resource` is `NotShared`, and its name is not in
/// `/proc/self/maps`.
fn outsider() -> anyhow::Result<ProcessType<Region, Report>> {
    coordinator(|region: Region| {
        ensure_err!(netmcore::get_resource(region.id), Error::NotShared(id) if id == region.id);
        ensure!(
            !objects::mapped_here(&region.name)?,
            "{} is mapped in a process that did not inherit it",
            region.name
        );
        // Asking again changes nothing: it still is not shared.
        ensure_err!(netmcore::get_resource(region.id), Error::NotShared(id) if id == region.id);
        Ok(())
    })
}

/// A second, small region preallocated before `startup`, for the lists of
/// `Inherit::Resources` that name another region than the scenario's.
fn other_region() -> anyhow::Result<ResId> {
    let prefix = format!("/{}other-", objects::own_prefix());
    Ok(netmcore::create_preallocated_shm(&prefix, 4096)?.0)
}

/// Runs a coordinator that starts `process` on the master's region with what `inherit` makes
/// of that region and of another one, and joins it.
fn start_on_region(
    s: &Scenario,
    process: ProcessType<Region, Report>,
    inherit: fn(&Region, ResId) -> Inherit,
) -> anyhow::Result<()> {
    let region = master_region()?;
    let other = other_region()?;
    let coordinator = coordinator(move |region: Region| {
        let pid = process.start_with(&region, inherit(&region, other))?;
        verdict(process.join(pid)?)
    })?;
    run_coordinator(s, &coordinator, &region)
}

/// A worker started with `Inherit::All` reads the master's pattern.
fn inherit_all_reads_the_masters_pattern(s: &Scenario) -> anyhow::Result<()> {
    start_on_region(s, reader()?, |_, _| Inherit::All)
}

/// A worker started with the region's id in `Inherit::Resources` reads the master's pattern.
fn inherit_listed_reads_the_masters_pattern(s: &Scenario) -> anyhow::Result<()> {
    start_on_region(s, reader()?, |region, other| {
        Inherit::Resources(vec![other, region.id])
    })
}

/// A worker started with `Inherit::Nothing`, one started with `Inherit::Resources` that lists
/// only another region, and one started with plain `start` (and so is the coordinator, the first process)
/// get `NotShared` and have no mapping of the region.
fn inherit_nothing_is_not_shared_and_unmapped(s: &Scenario) -> anyhow::Result<()> {
    let region = master_region()?;
    let other = other_region()?;
    let outsider = outsider()?;
    let coordinator = coordinator(move |region: Region| {
        ensure_err!(netmcore::get_resource(region.id), Error::NotShared(id) if id == region.id);
        ensure!(
            !objects::mapped_here(&region.name)?,
            "the first process (plain start) has {} mapped",
            region.name
        );
        let nothing = outsider.start_with(&region, Inherit::Nothing)?;
        verdict(outsider.join(nothing)?).context("Inherit::Nothing")?;
        let others = outsider.start_with(&region, Inherit::Resources(vec![other]))?;
        verdict(outsider.join(others)?).context("Inherit::Resources without the region")?;
        let plain = outsider.start(&region)?;
        verdict(outsider.join(plain)?).context("start, which inherits nothing")
    })?;
    run_coordinator(s, &coordinator, &region)
}

/// A worker preallocates a region: it gets its id and a name that starts with its prefix, the
/// object exists, but the worker itself cannot map it (`NotShared`). A worker it starts
/// afterwards with the region inherits it and finds it zeroed; the creator writes a pattern
/// the inheritor then checks. The region outlives the inheritor (the creator still uses it) and
/// goes away once the creator has ended.
fn region_made_by_a_worker_is_not_shared_with_it_and_goes_with_it(
    s: &Scenario,
) -> anyhow::Result<()> {
    const SMALL: usize = 1024 * 1024;
    let inheritor = coordinator(|region: Region| {
        let memory = memory_of(&region)?;
        let words = memory.as_atomic_u64s().context("a page-aligned region")?;
        ensure!(
            words
                .iter()
                .all(|w| w.load(std::sync::atomic::Ordering::Relaxed) == 0),
            "a new region is not zeroed"
        );
        objects::fill_pattern(words, region.seed);
        Ok(())
    })?;
    let checker = reader()?;
    let creator = process::def_process(move |prefix: String| -> Result<Region, String> {
        let body = || -> anyhow::Result<Region> {
            let (id, name) = netmcore::create_preallocated_shm(&prefix, SMALL)?;
            ensure!(
                name.starts_with(&prefix),
                "{name} does not start with {prefix}"
            );
            ensure!(objects::shm_exists(&name), "{name} is not in /dev/shm");
            ensure_err!(netmcore::get_resource(id), Error::NotShared(i) if i == id);
            ensure!(
                !objects::mapped_here(&name)?,
                "{name} is mapped in its creator"
            );
            let region = Region {
                id,
                name,
                size: SMALL,
                seed: 7,
            };
            let pid = inheritor.start_with(&region, Inherit::Resources(vec![id]))?;
            verdict(inheritor.join(pid)?).context("the inheritor")?;
            let pid = checker.start_with(&region, Inherit::All)?;
            verdict(checker.join(pid)?).context("the checker")?;
            ensure!(
                objects::shm_exists(&region.name),
                "{} is gone while its creator still runs",
                region.name
            );
            Ok(region)
        };
        body().map_err(|e| format!("{e:#}"))
    })?;
    let coordinator = coordinator(move |prefix: String| {
        let pid = creator.start(&prefix)?;
        let region = match creator.join(pid)? {
            Some(Ok(region)) => region,
            Some(Err(message)) => bail!("in the creator: {message}"),
            None => bail!("the creator ended without a result"),
        };
        objects::wait_gone(&objects::shm_path(&region.name))
            .context("the region outlived its only user, the creator")?;
        ensure_err!(netmcore::get_resource(region.id), Error::NoResource(id) if id == region.id);
        Ok(())
    })?;
    let prefix = format!("/{}made-", objects::own_prefix());
    run_coordinator(s, &coordinator, &prefix)
}
