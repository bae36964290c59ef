//! The errors of the resource calls (DESIGN.md §3–§4): a typed lookup of a resource of another
//! kind is `WrongKind` with the id, the kind asked for and the kind found; a shm or semaphore
//! name (or a file path) that is not absolute is `InvalidName`; an unknown id is `NoResource`.
//! Each is checked in a worker, where the master answers, and, where allowed, in the master
//! and before `startup`.
//!
//! Run one with `cargo test -p netmcore-tests --test resources_errors -- NAME`.

mod support;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use netmcore::process;
use netmcore::{Encap, Error, ResId, ResourceKind};
use support::objects;
use support::{Scenario, cases, coordinator, ensure_err, reporting_coordinator, run_coordinator};

fn main() -> ExitCode {
    support::run_cases(cases![
        typed_lookup_of_another_kind_is_wrong_kind,
        relative_names_are_invalid,
        unknown_ids_are_no_resource,
    ])
}

/// An id that no run of these scenarios ever allocates.
const UNKNOWN: ResId = ResId(u64::MAX - 11);

/// The names of a shm object, a named semaphore and a file, created and managed by a worker.
type Names = (String, String, PathBuf);

/// `get_file` on a shm object, `get_sem` on a file, `get_shm` on a semaphore, and each of them
/// on a fork point: `WrongKind { id, expected, found }`. The failed lookups add no user: the
/// one release of each object by its manager destroys it.
fn typed_lookup_of_another_kind_is_wrong_kind(s: &Scenario) -> anyhow::Result<()> {
    let marker = process::def_process(|n: u64| n)?;
    let (fork, join) = (marker.fork_point(), marker.join_point());
    let coordinator = coordinator(move |(shm_name, sem_name, file): Names| {
        objects::create_shm(&shm_name, 4096)?;
        objects::create_sem(&sem_name)?;
        objects::create_file(&file)?;
        let shm = netmcore::manage_shm(&shm_name)?.id();
        let sem = netmcore::manage_sem(&sem_name)?.id();
        let file_id = netmcore::manage_file(&file)?.id();

        use ResourceKind::{File, ForkPoint, JoinPoint, PosixSem, PosixShm};
        ensure_err!(
            netmcore::get_file(shm),
            Error::WrongKind { id, expected: File, found: PosixShm } if id == shm
        );
        ensure_err!(
            netmcore::get_sem(file_id),
            Error::WrongKind { id, expected: PosixSem, found: File } if id == file_id
        );
        ensure_err!(
            netmcore::get_shm(sem),
            Error::WrongKind { id, expected: PosixShm, found: PosixSem } if id == sem
        );
        ensure_err!(
            netmcore::get_file(sem),
            Error::WrongKind { id, expected: File, found: PosixSem } if id == sem
        );
        ensure_err!(
            netmcore::get_shm(file_id),
            Error::WrongKind { id, expected: PosixShm, found: File } if id == file_id
        );
        ensure_err!(
            netmcore::get_sem(shm),
            Error::WrongKind { id, expected: PosixSem, found: PosixShm } if id == shm
        );
        // The fork and join points of a process type defined before startup.
        ensure_err!(
            netmcore::get_shm(fork),
            Error::WrongKind { id, expected: PosixShm, found: ForkPoint } if id == fork
        );
        ensure_err!(
            netmcore::get_file(join),
            Error::WrongKind { id, expected: File, found: JoinPoint } if id == join
        );

        // The correct calls still work, and one release by the only user destroys each.
        anyhow::ensure!(netmcore::get_shm(shm)? == shm_name, "get_shm({shm:?})");
        anyhow::ensure!(netmcore::get_sem(sem)? == sem_name, "get_sem({sem:?})");
        anyhow::ensure!(
            netmcore::get_file(file_id)? == file,
            "get_file({file_id:?})"
        );
        for id in [shm, sem, file_id] {
            netmcore::release(id)?;
        }
        objects::wait_gone(&objects::shm_path(&shm_name))?;
        objects::wait_gone(&objects::sem_path(&sem_name))?;
        objects::wait_gone(&file)
    })?;
    let names = (
        objects::unique_name("kind-shm"),
        objects::unique_name("kind-sem"),
        s.path("kind.txt"),
    );
    run_coordinator(s, &coordinator, &names)
}

/// A shm or semaphore name without the leading `/`, and a relative file path, are
/// `InvalidName`, in a worker and in the master; nothing is registered for them.
fn relative_names_are_invalid(s: &Scenario) -> anyhow::Result<()> {
    fn check_all() -> anyhow::Result<()> {
        let shm = format!("{}relative-shm", objects::own_prefix());
        let sem = format!("{}relative-sem", objects::own_prefix());
        ensure_err!(netmcore::manage_shm(&shm), Error::InvalidName(name) if name.contains(&shm));
        ensure_err!(netmcore::manage_sem(&sem), Error::InvalidName(name) if name.contains(&sem));
        ensure_err!(
            netmcore::manage_file("relative/managed.txt"),
            Error::InvalidName(name) if name.contains("relative/managed.txt")
        );
        ensure_err!(netmcore::manage_shm(""), Error::InvalidName(_));
        ensure_err!(netmcore::manage_sem(""), Error::InvalidName(_));
        Ok(())
    }
    let report = s.path("report");
    let coordinator = reporting_coordinator(report.clone(), |()| check_all())?;
    let mut in_master = Ok(());
    netmcore::startup(s.config(), || {
        in_master = check_all();
        coordinator.start(&())
    })
    .context("startup")?;
    in_master.context("in the master")?;
    support::file_verdict(&report).context("in a worker")
}

/// An id nobody allocated is `NoResource(id)` for `get_resource`, `get_file`, `get_shm`,
/// `get_sem` and `start`, before `startup`, in the master and in a worker.
fn unknown_ids_are_no_resource(s: &Scenario) -> anyhow::Result<()> {
    fn check_lookups() -> anyhow::Result<()> {
        ensure_err!(netmcore::get_resource(UNKNOWN), Error::NoResource(id) if id == UNKNOWN);
        ensure_err!(netmcore::get_file(UNKNOWN), Error::NoResource(id) if id == UNKNOWN);
        ensure_err!(netmcore::get_shm(UNKNOWN), Error::NoResource(id) if id == UNKNOWN);
        ensure_err!(netmcore::get_sem(UNKNOWN), Error::NoResource(id) if id == UNKNOWN);
        Ok(())
    }
    fn check_all() -> anyhow::Result<()> {
        check_lookups()?;
        ensure_err!(
            netmcore::start(UNKNOWN, Encap::wrap(&())?),
            Error::NoResource(id) if id == UNKNOWN
        );
        Ok(())
    }
    check_lookups().context("before startup")?;
    let report = s.path("report");
    let coordinator = reporting_coordinator(report.clone(), |()| check_all())?;
    let mut in_master = Ok(());
    netmcore::startup(s.config(), || {
        in_master = check_all();
        coordinator.start(&())
    })
    .context("startup")?;
    in_master.context("in the master")?;
    support::file_verdict(&report).context("in a worker")
}
