//! The life of a shared resource (DESIGN.md §4): its users are a set of processes; the last
//! user's `release` destroys it (a file is unlinked, a shm object and a named semaphore are
//! unlinked, fork and join points are dropped); releasing an unknown id is ignored; a worker that
//! ends in any way (return, panic, exit, SIGKILL) releases everything it used; and when
//! `startup` returns, nothing the run created is left in `/dev/shm` or live in the ledger, while
//! the master's own mappings stay readable.
//!
//! `release` returns only after the master destroyed what it had to, and a `join` only after
//! the joined process's objects are gone, so both are checked the moment the call returns,
//! never by polling. The `rewrite_after_release_*` scenarios are the user's view of it: an
//! object released and at once made again under the same name must survive (200 rounds each).
//!
//! Run one with `cargo test -p netmcore-tests --test resources_lifecycle -- NAME`.

mod support;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, anyhow, bail, ensure};
use netmcore::process::{self, ProcessType};
use netmcore::{Encap, Error, ResId, ResourceKind, ResourceRepr};
use rustix::process::Signal;
use serde::{Deserialize, Serialize};
use support::objects;
use support::{
    Report, Scenario, cases, coordinator, ensure_err, reporting_coordinator, run_coordinator,
    verdict,
};

fn main() -> ExitCode {
    support::run_cases(cases![
        users_are_a_set,
        holder_keeps_it_alive_through_2000_fetches_and_releases,
        last_release_unlinks_a_file,
        last_release_unlinks_a_shm,
        last_release_unlinks_a_sem,
        last_release_drops_fork_and_join_points,
        rewrite_after_release_keeps_the_new_file,
        rewrite_after_release_keeps_the_new_shm,
        rewrite_after_release_keeps_the_new_sem,
        release_of_an_unknown_id_is_ignored,
        worker_that_returns_releases_everything,
        worker_that_panics_releases_everything,
        worker_that_exits_releases_everything,
        worker_killed_by_sigkill_releases_everything,
        startup_return_leaves_nothing_and_master_mappings_stay,
    ])
}

/// An id that no run of these scenarios ever allocates.
const UNKNOWN: ResId = ResId(u64::MAX - 7);

/// A round trip to the master that changes nothing (a lookup of an unknown id): when it
/// returns, the master has handled every earlier message of this process.
fn sync_with_master() -> anyhow::Result<()> {
    ensure_err!(netmcore::get_resource(UNKNOWN), Error::NoResource(id) if id == UNKNOWN);
    Ok(())
}

/// A managed OS object of one of the three kinds, by name (a path for a file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Object {
    File(PathBuf),
    Shm(String),
    Sem(String),
}

impl Object {
    /// Creates the OS object.
    fn create(&self) -> anyhow::Result<()> {
        match self {
            Object::File(path) => objects::create_file(path),
            Object::Shm(name) => objects::create_shm(name, 4096),
            Object::Sem(name) => objects::create_sem(name),
        }
    }

    /// Hands it to the master (`manage_*`): the caller becomes its only user.
    fn manage(&self) -> anyhow::Result<ResId> {
        let resource = match self {
            Object::File(path) => netmcore::manage_file(path),
            Object::Shm(name) => netmcore::manage_shm(name),
            Object::Sem(name) => netmcore::manage_sem(name),
        }
        .with_context(|| format!("manage {self:?}"))?;
        ensure!(
            resource.kind() == self.kind(),
            "manage {self:?} gave a {:?}",
            resource.kind()
        );
        Ok(resource.id())
    }

    /// Its resource kind.
    fn kind(&self) -> ResourceKind {
        match self {
            Object::File(_) => ResourceKind::File,
            Object::Shm(_) => ResourceKind::PosixShm,
            Object::Sem(_) => ResourceKind::PosixSem,
        }
    }

    /// Fetches `id` with the kind's own call (`get_file`, `get_shm`, `get_sem`), which makes
    /// the caller a user, and checks that it names this object.
    fn get(&self, id: ResId) -> anyhow::Result<()> {
        let same = match self {
            Object::File(path) => netmcore::get_file(id)? == *path,
            Object::Shm(name) => netmcore::get_shm(id)? == *name,
            Object::Sem(name) => netmcore::get_sem(id)? == *name,
        };
        ensure!(same, "{id:?} does not name {self:?}");
        Ok(())
    }

    /// Where it appears in the file system.
    fn path(&self) -> PathBuf {
        match self {
            Object::File(path) => path.clone(),
            Object::Shm(name) => objects::shm_path(name),
            Object::Sem(name) => objects::sem_path(name),
        }
    }

    /// Fails unless it still exists.
    fn ensure_exists(&self) -> anyhow::Result<()> {
        objects::ensure_exists(&self.path(), &format!("{self:?}"))
    }

    /// Fails if it still exists: checked the moment a `release` or `join` returned.
    fn ensure_gone(&self) -> anyhow::Result<()> {
        ensure!(
            !self.path().exists(),
            "{self:?} still exists after the call that destroys it returned"
        );
        Ok(())
    }

    /// Creates it again, as a new object that [`Object::ensure_new`] can tell from the one
    /// [`Object::create`] makes: a file with other contents, a shm object of another size (the
    /// semaphore is told by existing at all).
    fn create_new(&self, round: usize) -> anyhow::Result<()> {
        match self {
            Object::File(path) => support::write_file(path, &format!("new {round}")),
            Object::Shm(name) => objects::create_shm(name, NEW_SHM_SIZE),
            Object::Sem(name) => objects::create_sem(name),
        }
    }

    /// Fails unless the object made by [`Object::create_new`] in `round` is still there.
    fn ensure_new(&self, round: usize) -> anyhow::Result<()> {
        let path = self.path();
        let what = format!("round {round}: the new {self:?}, made right after the release");
        objects::ensure_exists(&path, &what)?;
        match self {
            Object::File(_) => {
                let text = std::fs::read_to_string(&path).with_context(|| what.clone())?;
                ensure!(text == format!("new {round}"), "{what} holds {text:?}");
            }
            Object::Shm(_) => {
                let size = std::fs::metadata(&path)
                    .with_context(|| what.clone())?
                    .len();
                ensure!(size == NEW_SHM_SIZE, "{what} has {size} bytes");
            }
            Object::Sem(_) => {}
        }
        Ok(())
    }

    /// Removes it without the master (it is not managed).
    fn remove(&self) -> anyhow::Result<()> {
        match self {
            Object::File(path) => std::fs::remove_file(path)?,
            Object::Shm(name) => netmcore_ipc::shm::unlink(name)?,
            Object::Sem(name) => netmcore_ipc::sem::unlink(name)?,
        }
        Ok(())
    }
}

/// The size of the shm object that [`Object::create_new`] makes (the first one has a page).
const NEW_SHM_SIZE: u64 = 2 * 4096;

/// One worker manages a shm object, fetches it twice more (once with `get_resource`, once with
/// `get_shm`) and releases it once: it was one user, so the object is destroyed, and its id is
/// then unknown.
fn users_are_a_set(s: &Scenario) -> anyhow::Result<()> {
    let object = Object::Shm(objects::unique_name("set"));
    let coordinator = coordinator(|object: Object| {
        object.create()?;
        let id = object.manage()?;
        let again = netmcore::get_resource(id)?;
        ensure!(
            again.id() == id,
            "get_resource({id:?}) gave {:?}",
            again.id()
        );
        ensure!(
            matches!(again.repr(), ResourceRepr::PosixShm(name) if Object::Shm(name.clone()) == object),
            "get_resource({id:?}) describes {:?}",
            again.repr()
        );
        object.get(id)?;
        netmcore::release(id)?;
        object.ensure_gone()?;
        ensure_err!(netmcore::get_resource(id), Error::NoResource(i) if i == id);
        Ok(())
    })?;
    run_coordinator(s, &coordinator, &object)
}

/// The coordinator manages a shm object (and so holds it); a second worker fetches and releases
/// it 2,000 times, alternating `release(id)` and `ComputeResource::release`. The object outlives
/// all that, and the second worker; the coordinator's own release then destroys it.
fn holder_keeps_it_alive_through_2000_fetches_and_releases(s: &Scenario) -> anyhow::Result<()> {
    let object = Object::Shm(objects::unique_name("held"));
    let fetcher = coordinator(|id: ResId| {
        for round in 0..2000 {
            let resource = netmcore::get_resource(id)
                .with_context(|| format!("round {round}: get_resource({id:?})"))?;
            if round % 2 == 0 {
                resource.release()?;
            } else {
                netmcore::release(id)?;
            }
        }
        let resource = netmcore::get_resource(id).context("after 2,000 releases")?;
        resource.release()?;
        Ok(())
    })?;
    let coordinator = coordinator(move |object: Object| {
        object.create()?;
        let id = object.manage()?;
        let pid = fetcher.start(&id)?;
        verdict(fetcher.join(pid)?).context("the fetcher")?;
        object.ensure_exists()?;
        object
            .get(id)
            .context("the holder fetches it after the fetcher ended")?;
        netmcore::release(id)?;
        object.ensure_gone()
    })?;
    run_coordinator(s, &coordinator, &object)
}

/// A user that fetches `object` as `id`, then waits at the gate `go` before it releases it and
/// sees it destroyed.
type LastUser = ProcessType<(Object, ResId, PathBuf, PathBuf), Report>;

/// The last user of a managed object releases it: it is destroyed. The coordinator manages it,
/// a second worker fetches it, the coordinator releases it (the object stays: the second worker
/// still uses it), then the second worker releases it and it is gone.
fn last_release_destroys(s: &Scenario, object: Object) -> anyhow::Result<()> {
    let last_user: LastUser =
        coordinator(|(object, id, got, go): (Object, ResId, PathBuf, PathBuf)| {
            object.get(id)?;
            support::touch(&got)?;
            support::wait_for_file(&go)?;
            object.ensure_exists().context("before the last release")?;
            netmcore::release(id)?;
            object.ensure_gone()?;
            ensure_err!(netmcore::get_resource(id), Error::NoResource(i) if i == id);
            Ok(())
        })?;
    let coordinator = coordinator(move |(object, got, go): (Object, PathBuf, PathBuf)| {
        object.create()?;
        let id = object.manage()?;
        let pid = last_user.start(&(object.clone(), id, got.clone(), go.clone()))?;
        support::wait_for_file(&got)?;
        netmcore::release(id)?;
        object
            .ensure_exists()
            .context("after the first of two users released it")?;
        support::touch(&go)?;
        verdict(last_user.join(pid)?).context("the last user")?;
        object.ensure_gone()
    })?;
    run_coordinator(s, &coordinator, &(object, s.path("got"), s.path("go")))
}

/// A managed file is unlinked when its last user releases it.
fn last_release_unlinks_a_file(s: &Scenario) -> anyhow::Result<()> {
    last_release_destroys(s, Object::File(s.path("managed.txt")))
}

/// A managed shm object is unlinked when its last user releases it.
fn last_release_unlinks_a_shm(s: &Scenario) -> anyhow::Result<()> {
    last_release_destroys(s, Object::Shm(objects::unique_name("last-shm")))
}

/// A managed named semaphore is unlinked when its last user releases it.
fn last_release_unlinks_a_sem(s: &Scenario) -> anyhow::Result<()> {
    last_release_destroys(s, Object::Sem(objects::unique_name("last-sem")))
}

/// A worker makes an object, manages it, releases it (it was the only user) and at once makes
/// a new object under the same name, as a program that rewrites its output does: 200 times,
/// and after a round trip to the master (which has then handled everything the worker sent)
/// the new object must still be there. A `release` that returned before the destruction would
/// let the master's late `unlink` remove the new object (or, for `O_EXCL` objects, make the
/// new `create` fail).
fn rewrite_after_release(s: &Scenario, object: Object) -> anyhow::Result<()> {
    let coordinator = coordinator(|object: Object| {
        for round in 0..200 {
            object.create().with_context(|| format!("round {round}"))?;
            let id = object.manage()?;
            netmcore::release(id).with_context(|| format!("round {round}: release"))?;
            object
                .create_new(round)
                .with_context(|| format!("round {round}: make it again after the release"))?;
            sync_with_master()?;
            object.ensure_new(round)?;
            object.remove()?;
        }
        Ok(())
    })?;
    run_coordinator(s, &coordinator, &object)
}

/// [`rewrite_after_release`] of a file.
fn rewrite_after_release_keeps_the_new_file(s: &Scenario) -> anyhow::Result<()> {
    rewrite_after_release(s, Object::File(s.path("rewritten.txt")))
}

/// [`rewrite_after_release`] of a shm object.
fn rewrite_after_release_keeps_the_new_shm(s: &Scenario) -> anyhow::Result<()> {
    rewrite_after_release(s, Object::Shm(objects::unique_name("rewritten-shm")))
}

/// [`rewrite_after_release`] of a named semaphore.
fn rewrite_after_release_keeps_the_new_sem(s: &Scenario) -> anyhow::Result<()> {
    rewrite_after_release(s, Object::Sem(objects::unique_name("rewritten-sem")))
}

/// The master is the user of the fork and join points that `def_process` makes. A worker that
/// fetches and releases a fork point does not drop it (the master still uses it), and a release
/// by a worker that never fetched it is ignored. When the master releases them, they are
/// dropped: `start` with the fork point and any lookup of either fail with `NoResource`.
fn last_release_drops_fork_and_join_points(s: &Scenario) -> anyhow::Result<()> {
    let doubled = process::def_process(|n: u64| 2 * n)?;
    let report = s.path("report");
    let coordinator = reporting_coordinator(
        report.clone(),
        move |(fork, join): (ResId, ResId)| {
            ensure_err!(netmcore::start(fork, Encap::wrap(&())?), Error::NoResource(id) if id == fork);
            ensure_err!(netmcore::get_resource(join), Error::NoResource(id) if id == join);
            // The typed type's points are alive: fetching and releasing one here, and releasing the
            // other without having fetched it, leaves the master as their user.
            let point = netmcore::get_resource(doubled.fork_point())?;
            ensure!(
                point.kind() == ResourceKind::ForkPoint,
                "a fork point is a {:?}",
                point.kind()
            );
            ensure!(
                matches!(point.repr(), ResourceRepr::ForkPoint),
                "{:?}",
                point.repr()
            );
            point.release()?;
            netmcore::release(doubled.join_point())?;
            let pid = doubled.start(&21)?;
            ensure!(doubled.join(pid)? == Some(42), "doubled after the releases");
            Ok(())
        },
    )?;
    let mut outcome = Err(anyhow!("startup did not call first_process"));
    netmcore::startup(s.config(), || {
        let dropped = || -> anyhow::Result<(ResId, ResId)> {
            let (fork, join) = netmcore::def_process(|arg| arg)?;
            let points = netmcore::get_resource(join)?;
            ensure!(
                points.kind() == ResourceKind::JoinPoint,
                "a join point is a {:?}",
                points.kind()
            );
            netmcore::release(fork)?;
            netmcore::release(join)?;
            ensure_err!(netmcore::start(fork, Encap::wrap(&())?), Error::NoResource(id) if id == fork);
            ensure_err!(netmcore::get_resource(fork), Error::NoResource(id) if id == fork);
            ensure_err!(netmcore::get_resource(join), Error::NoResource(id) if id == join);
            // The same through the typed layer.
            let typed = process::def_process(|n: u64| n)?;
            netmcore::release(typed.fork_point())?;
            ensure_err!(typed.start(&1), Error::NoResource(id) if id == typed.fork_point());
            Ok((fork, join))
        };
        // The coordinator starts either way, so that the run ends; with unknown ids when
        // the checks in the master failed.
        let points = dropped();
        let arg = points.as_ref().map_or((UNKNOWN, UNKNOWN), |p| *p);
        outcome = points.map(drop);
        coordinator.start(&arg)
    })
    .context("startup")?;
    outcome.context("in the master")?;
    support::file_verdict(&report)
}

/// Releasing an id nobody knows is ignored, before `startup`, in the master and in a worker.
fn release_of_an_unknown_id_is_ignored(s: &Scenario) -> anyhow::Result<()> {
    netmcore::release(UNKNOWN).context("release before startup")?;
    let report = s.path("report");
    let coordinator = reporting_coordinator(report.clone(), |()| {
        netmcore::release(UNKNOWN).context("release in a worker")?;
        netmcore::release(ResId(0)).context("release by a non-user in a worker")?;
        sync_with_master()
    })?;
    let mut in_master = Ok(());
    netmcore::startup(s.config(), || {
        in_master = netmcore::release(UNKNOWN);
        coordinator.start(&())
    })
    .context("startup")?;
    in_master.context("release in the master")?;
    support::file_verdict(&report)
}

/// How a worker ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum End {
    Return,
    Panic,
    Exit,
    Sigkill,
}

/// What the ending worker gets: the objects to create and manage, and a resource of the
/// coordinator's to fetch.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EndingArg {
    end: End,
    own: Vec<Object>,
    borrowed: ResId,
    borrowed_object: Object,
}

/// A worker manages a file, a shm object and a named semaphore and fetches a shm object the
/// coordinator manages, then ends as `end` says. When its join returns, its three objects are
/// gone, and the coordinator's object is gone when the coordinator's release returns (so the
/// worker no longer counts as its user).
fn worker_end_releases(s: &Scenario, end: End) -> anyhow::Result<()> {
    let ending = process::def_process(|arg: EndingArg| -> u64 {
        let prepare = || -> anyhow::Result<()> {
            for object in &arg.own {
                object.create()?;
                object.manage()?;
            }
            arg.borrowed_object.get(arg.borrowed)
        };
        if let Err(e) = prepare() {
            // Returning leaves a result, which the coordinator reports as a failure.
            eprintln!("the ending worker failed: {e:#}");
            return 0;
        }
        match arg.end {
            End::Return => 1,
            End::Panic => {
                // A silent hook keeps the output readable; the worker still catches the unwind.
                std::panic::set_hook(Box::new(|_| {}));
                panic!("a deliberate panic while holding resources")
            }
            End::Exit => std::process::exit(3),
            End::Sigkill => {
                let _ = rustix::process::kill_process(rustix::process::getpid(), Signal::KILL);
                support::sleep_forever()
            }
        }
    })?;
    let coordinator = coordinator(move |arg: EndingArg| {
        arg.borrowed_object.create()?;
        let borrowed = arg.borrowed_object.manage()?;
        let pid = ending.start(&EndingArg {
            borrowed,
            ..arg.clone()
        })?;
        let out = ending.join(pid)?;
        let expected = (arg.end == End::Return).then_some(1);
        ensure!(out == expected, "the {:?} worker gave {out:?}", arg.end);
        for object in &arg.own {
            object.ensure_gone().context("after the join")?;
        }
        arg.borrowed_object
            .ensure_exists()
            .context("the coordinator still uses it")?;
        netmcore::release(borrowed)?;
        arg.borrowed_object
            .ensure_gone()
            .context("the ended worker still counts as a user")
    })?;
    let arg = EndingArg {
        end,
        own: vec![
            Object::File(s.path("ending.txt")),
            Object::Shm(objects::unique_name("ending-shm")),
            Object::Sem(objects::unique_name("ending-sem")),
        ],
        borrowed: UNKNOWN,
        borrowed_object: Object::Shm(objects::unique_name("borrowed")),
    };
    run_coordinator(s, &coordinator, &arg)
}

/// A worker that returns releases everything it used.
fn worker_that_returns_releases_everything(s: &Scenario) -> anyhow::Result<()> {
    worker_end_releases(s, End::Return)
}

/// A worker that panics releases everything it used.
fn worker_that_panics_releases_everything(s: &Scenario) -> anyhow::Result<()> {
    worker_end_releases(s, End::Panic)
}

/// A worker that calls `exit(3)` releases everything it used.
fn worker_that_exits_releases_everything(s: &Scenario) -> anyhow::Result<()> {
    worker_end_releases(s, End::Exit)
}

/// A worker killed by SIGKILL releases everything it used.
fn worker_killed_by_sigkill_releases_everything(s: &Scenario) -> anyhow::Result<()> {
    worker_end_releases(s, End::Sigkill)
}

/// The size of the regions the master preallocates in the scenario below.
const REGION: usize = 64 * 1024;

/// The memory of a preallocated shm resource, as this process maps it.
fn memory_of(id: ResId) -> anyhow::Result<netmcore::SharedMemory> {
    match netmcore::get_resource(id)?.repr() {
        ResourceRepr::PosixShmPreallocated { memory, .. } => Ok(*memory),
        other => bail!("{id:?} is described as {other:?}"),
    }
}

/// Fills `memory` with the pattern of `seed`.
fn fill(memory: netmcore::SharedMemory, seed: u64) -> anyhow::Result<()> {
    objects::fill_pattern(
        memory.as_atomic_u64s().context("a page-aligned region")?,
        seed,
    );
    Ok(())
}

/// Checks that `memory` holds the pattern of `seed`.
fn check(memory: netmcore::SharedMemory, seed: u64) -> anyhow::Result<()> {
    objects::check_pattern(
        memory.as_atomic_u64s().context("a page-aligned region")?,
        seed,
    )
}

/// What the master made in the scenario below, by name.
#[derive(Debug, Default)]
struct Made {
    objects: Vec<Object>,
    preallocated: Vec<String>,
}

/// Before `startup` the program preallocates a region and fills it; inside the master, the
/// master preallocates another and manages a file, a shm object and a named semaphore, all of
/// which it never releases; the first process fetches the master's shm object and preallocates
/// a region of its own. When `startup` returns, none of these objects exists any more, nothing
/// of this scenario is left in `/dev/shm`, the ledger lists nothing live, and both regions the
/// master mapped are still readable with their contents.
fn startup_return_leaves_nothing_and_master_mappings_stay(s: &Scenario) -> anyhow::Result<()> {
    let prefix = format!("/{}pre-", objects::own_prefix());
    let (before_id, before_name) = netmcore::create_preallocated_shm(&prefix, REGION)?;
    let before = memory_of(before_id)?;
    ensure!(
        before.len() == REGION,
        "the region has {} bytes",
        before.len()
    );
    fill(before, 1)?;

    let report = s.path("report");
    let first = reporting_coordinator(report.clone(), |(shm, prefix): (ResId, String)| {
        netmcore::get_resource(shm)?;
        netmcore::create_preallocated_shm(&prefix, REGION)?;
        Ok(())
    })?;
    let mut made = Made::default();
    let mut in_master = Ok(());
    let mut master_memory = None;
    netmcore::startup(s.config(), || {
        let mut setup = || -> anyhow::Result<ResId> {
            let (id, name) = netmcore::create_preallocated_shm(&prefix, REGION)?;
            made.preallocated.push(name);
            let memory = memory_of(id)?;
            fill(memory, 2)?;
            master_memory = Some(memory);
            let mut shm = UNKNOWN;
            for object in [
                Object::File(s.path("master.txt")),
                Object::Shm(objects::unique_name("master-shm")),
                Object::Sem(objects::unique_name("master-sem")),
            ] {
                object.create()?;
                made.objects.push(object.clone());
                let id = object.manage()?;
                if matches!(object, Object::Shm(_)) {
                    shm = id;
                }
            }
            Ok(shm)
        };
        let shm = setup().unwrap_or_else(|e| {
            in_master = Err(e);
            UNKNOWN
        });
        first.start(&(shm, prefix.clone()))
    })
    .context("startup")?;
    in_master.context("in the master")?;
    support::file_verdict(&report).context("the first process")?;

    // Nothing is polled here: all this holds the moment startup returns.
    made.preallocated.push(before_name);
    for object in &made.objects {
        ensure!(
            !object.path().exists(),
            "{object:?} is left after startup returned"
        );
    }
    for name in &made.preallocated {
        ensure!(
            !objects::shm_exists(name),
            "the preallocated {name} is left after startup returned"
        );
    }
    let left = objects::dev_shm_containing(&objects::own_prefix());
    ensure!(
        left.is_empty(),
        "left in /dev/shm after startup returned: {left:?}"
    );
    let master_named = objects::dev_shm_containing(&format!("netmcore-{}-", std::process::id()));
    ensure!(
        master_named.is_empty(),
        "objects the master named are left in /dev/shm: {master_named:?}"
    );
    let live = objects::ledger_live(&s.socket_dir())?;
    ensure!(live.is_empty(), "the ledger still lists {live:?}");

    check(before, 1).context("the region filled before startup")?;
    check(
        master_memory.context("the master did not map its region")?,
        2,
    )
    .context("the region the master preallocated")?;
    Ok(())
}
