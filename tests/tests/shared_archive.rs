//! `netmcore::shared::Archive` across processes: a worker archives a lookup table (vectors
//! and strings) that other workers open by handle and read in place — one of them forked
//! before the archive existed, mapping it at an address of its own; a handle decoded as
//! another type is `WrongType`; the segment goes with its last user.
//!
//! Run one with `cargo test -p netmcore-tests --test shared_archive -- NAME`.

mod support;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::ensure;
use netmcore::shared::{Archive, Error, Handle, Mutex};
use support::{Scenario, cases, coordinator, ensure_err, run_coordinator, verdict};

fn main() -> ExitCode {
    support::run_cases(cases![
        workers_read_a_lookup_table_in_place,
        a_handle_decoded_as_another_type_is_wrong_type,
        the_segment_goes_with_its_last_user,
    ])
}

/// The archived value: a lookup table of names to scores.
#[derive(Debug, PartialEq, rkyv::Archive, rkyv::Serialize)]
struct Lookup {
    title: String,
    names: Vec<String>,
    scores: Vec<u32>,
}

/// The table the scenarios archive: `n` names and their scores.
fn lookup(n: u32) -> Lookup {
    Lookup {
        title: format!("scores of {n} players"),
        names: (0..n).map(|i| format!("player-{i}")).collect(),
        scores: (0..n).map(|i| i * 7 % 101).collect(),
    }
}

/// Checks, in place, that `archived` is `lookup(n)`: every name and score.
fn check_lookup(archived: &ArchivedLookup, n: u32) -> anyhow::Result<()> {
    ensure!(
        archived.title == *format!("scores of {n} players"),
        "the title is {:?}",
        archived.title.as_str()
    );
    ensure!(
        archived.names.len() == n as usize && archived.scores.len() == n as usize,
        "{} names and {} scores",
        archived.names.len(),
        archived.scores.len()
    );
    for (i, (name, score)) in (0..n).zip(archived.names.iter().zip(archived.scores.iter())) {
        ensure!(
            *name == *format!("player-{i}"),
            "name {i} is {:?}",
            name.as_str()
        );
        ensure!(score.to_native() == i * 7 % 101, "score {i} is {score}");
    }
    Ok(())
}

/// How many entries the table of the scenarios has.
const ENTRIES: u32 = 5_000;

/// A reader is started before the archive exists and waits for its handle in a file; two
/// more get the handle as their argument. Each maps the archive wherever it likes and reads
/// every entry in place; the creator still reads it afterwards.
fn workers_read_a_lookup_table_in_place(s: &Scenario) -> anyhow::Result<()> {
    let reader = coordinator(|handle: Handle<Archive<Lookup>>| {
        let archive = Archive::open(handle)?;
        check_lookup(archive.get(), ENTRIES)
    })?;
    let early = coordinator(|path: PathBuf| {
        let archive = Archive::<Lookup>::open(read_handle(&path)?)?;
        check_lookup(archive.get(), ENTRIES)
    })?;
    let first = coordinator(move |path: PathBuf| {
        let early_pid = early.start(&path)?;
        let archive = Archive::new(&lookup(ENTRIES))?;
        write_handle(&path, archive.handle())?;
        let pids = (0..2)
            .map(|_| reader.start(&archive.handle()))
            .collect::<Result<Vec<_>, _>>()?;
        verdict(early.join(early_pid)?)?;
        for pid in pids {
            verdict(reader.join(pid)?)?;
        }
        check_lookup(archive.get(), ENTRIES)
    })?;
    run_coordinator(s, &first, &s.path("handle"))
}

/// The handle of an `Archive<Lookup>` travels as postcard bytes to a worker, which decodes it
/// as the handle of an `Archive<String>` and of a `Mutex<u64>` (the bytes carry no type):
/// opening either is `WrongType`. Decoded as what it is, it opens.
fn a_handle_decoded_as_another_type_is_wrong_type(s: &Scenario) -> anyhow::Result<()> {
    let opener = coordinator(|bytes: Vec<u8>| {
        let as_string: Handle<Archive<String>> = postcard::from_bytes(&bytes)?;
        ensure_err!(Archive::open(as_string), Error::WrongType { .. });
        let as_mutex: Handle<Mutex<u64>> = postcard::from_bytes(&bytes)?;
        ensure_err!(Mutex::open(as_mutex), Error::WrongType { .. });
        let right: Handle<Archive<Lookup>> = postcard::from_bytes(&bytes)?;
        check_lookup(Archive::open(right)?.get(), 3)
    })?;
    let first = coordinator(move |()| {
        let archive = Archive::new(&lookup(3))?;
        let bytes = postcard::to_allocvec(&archive.handle())?;
        verdict(opener.join(opener.start(&bytes)?)?)
    })?;
    run_coordinator(s, &first, &())
}

/// A worker archives a table and returns its handle without keeping it: its end released the
/// segment, so opening the handle is `NoResource`. An archive the coordinator creates and
/// drops is gone from `/dev/shm` the moment the drop returns.
fn the_segment_goes_with_its_last_user(s: &Scenario) -> anyhow::Result<()> {
    let maker = netmcore::process::def_process(|()| -> Handle<Archive<Lookup>> {
        Archive::new(&lookup(10)).expect("an archive").handle()
    })?;
    let first = coordinator(move |()| {
        let pid = maker.start(&())?;
        let handle = maker
            .join(pid)?
            .ok_or_else(|| anyhow::anyhow!("no handle"))?;
        let opened = Archive::open(handle);
        ensure!(
            matches!(opened, Err(Error::Master(netmcore::Error::NoResource(_)))),
            "opening an archive whose only user ended gave {opened:?}"
        );
        let archive = Archive::new(&lookup(10))?;
        let name = netmcore::get_shm(archive.handle().id())?;
        let path = support::objects::shm_path(&name);
        ensure!(path.exists(), "{} does not exist", path.display());
        drop(archive);
        ensure!(!path.exists(), "{} is left after the drop", path.display());
        Ok(())
    })?;
    run_coordinator(s, &first, &())
}

/// Writes `handle` to `path` as the bytes of an `Encap`, as a process would send it (the
/// file appears whole: written aside, then renamed).
fn write_handle<S: 'static>(path: &Path, handle: Handle<S>) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, netmcore::Encap::wrap(&handle)?.as_bytes())?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Waits for the handle that [`write_handle`] writes to `path`.
fn read_handle<S: 'static>(path: &Path) -> anyhow::Result<Handle<S>> {
    support::wait_for_file(path)?;
    let bytes = std::fs::read(path)?;
    Ok(netmcore::Encap::from_bytes(&bytes)?.unwrap()?)
}
