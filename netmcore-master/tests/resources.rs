//! Multi-process tests of the resource calls: lookups and their errors, users as sets,
//! release when a worker ends in any way, preallocated shared memory and its inheritance,
//! and what `startup` leaves behind. Each case runs in a forked process of its own (see
//! `support::run_cases`), which becomes a master with `startup`.

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use netmcore_encap::Encap;
use netmcore_ipc::sem::NamedSemaphore;
use netmcore_ipc::shm::ShmObject;
use netmcore_master::{
    ComputeResource, Config, Error, ResourceRepr, create_preallocated_shm, def_process,
    destroy_resources, destroy_resources_in, get_file, get_resource, get_sem, get_shm, join,
    manage_file, manage_sem, manage_shm, release, self_process_id, start, start_with,
    startup_with_result,
};
use netmcore_resources::{Inherit, ResId, ResourceKind};
use rustix::process::{Signal, getpid, kill_process};
use support::{Case, children, failures_of, prefix, run_cases, shm_exists, socket_dir};

fn main() -> std::process::ExitCode {
    run_cases(&[
        Case {
            name: "preallocated_64_mib_is_read_exactly_by_inheriting_workers_only",
            run: preallocated_64_mib_is_read_exactly_by_inheriting_workers_only,
        },
        Case {
            name: "a_worker_that_creates_preallocated_shm_uses_it_without_a_mapping",
            run: a_worker_that_creates_preallocated_shm_uses_it_without_a_mapping,
        },
        Case {
            name: "kind_name_and_id_errors_in_every_role",
            run: kind_name_and_id_errors_in_every_role,
        },
        Case {
            name: "users_are_sets_and_the_last_release_destroys",
            run: users_are_sets_and_the_last_release_destroys,
        },
        Case {
            name: "a_worker_that_ends_in_any_way_releases_what_it_used",
            run: a_worker_that_ends_in_any_way_releases_what_it_used,
        },
        Case {
            name: "fork_and_join_points_are_dropped_by_their_last_release",
            run: fork_and_join_points_are_dropped_by_their_last_release,
        },
        Case {
            name: "destroy_resources_in_the_master_and_before_startup",
            run: destroy_resources_in_the_master_and_before_startup,
        },
        Case {
            name: "destroyed_preallocated_shm_leaves_no_mapping_in_the_master",
            run: destroyed_preallocated_shm_leaves_no_mapping_in_the_master,
        },
    ])
}

/// `Encap::wrap(value)`, which must succeed.
macro_rules! wrap {
    ($value:expr) => {
        Encap::wrap($value).expect("encodes")
    };
}

/// Records a failed check with its description.
macro_rules! check {
    ($failures:expr, $ok:expr, $($what:tt)+) => {
        if !$ok {
            $failures.push(format!($($what)+));
        }
    };
}

/// Whether the named semaphore `name` exists (glibc keeps it as `/dev/shm/sem.<name>`).
fn sem_exists(name: &str) -> bool {
    Path::new(&format!("/dev/shm/sem.{}", &name[1..])).exists()
}

/// Whether this process maps an object named `name`.
fn mapped_here(name: &str) -> bool {
    std::fs::read_to_string("/proc/self/maps")
        .expect("maps")
        .lines()
        .any(|line| line.contains(&format!("/dev/shm{name}")))
}

/// The pattern word at index `i` of a filled region.
fn pattern(i: usize) -> u64 {
    (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5A5A
}

/// Waits until the master has served every message sent before: a request is answered in
/// order.
fn sync_with_master() {
    let _ = get_resource(ResId(u64::MAX));
}

const SIZE_64_MIB: usize = 64 << 20;

fn preallocated_64_mib_is_read_exactly_by_inheriting_workers_only() {
    // Before startup: create and fill the region.
    let (id, name) = create_preallocated_shm(&prefix("pool"), SIZE_64_MIB).unwrap();
    assert!(name.starts_with(&prefix("pool")));
    let memory = match get_resource(id).unwrap().repr().clone() {
        ResourceRepr::PosixShmPreallocated { memory, .. } => memory,
        other => panic!("not preallocated: {other:?}"),
    };
    assert_eq!(memory.len(), SIZE_64_MIB);
    let words = memory.as_atomic_u64s().expect("page-aligned");
    for (i, word) in words.iter().enumerate() {
        word.store(pattern(i), Ordering::Relaxed);
    }
    // A second region that only one worker asks for.
    let (other_id, other_name) = create_preallocated_shm(&prefix("other"), 4096).unwrap();

    // A reader checks the whole pattern through get_resource, and whether it maps the regions.
    let (reader, reader_jp) = def_process(move |arg| {
        let (id, name, other_name): (ResId, String, String) = arg.unwrap().unwrap();
        let mut failures: Vec<String> = Vec::new();
        match get_resource(id) {
            Ok(resource) => match resource.repr() {
                ResourceRepr::PosixShmPreallocated { name: got, memory } => {
                    check!(failures, *got == name, "name {got}");
                    let words = memory.as_atomic_u64s().expect("aligned");
                    let bad = words
                        .iter()
                        .enumerate()
                        .filter(|(i, w)| w.load(Ordering::Relaxed) != pattern(*i))
                        .count();
                    check!(
                        failures,
                        words.len() == SIZE_64_MIB / 8,
                        "len {}",
                        words.len()
                    );
                    check!(failures, bad == 0, "{bad} words differ");
                    check!(failures, mapped_here(&name), "the region is not mapped");
                }
                other => failures.push(format!("repr {other:?}")),
            },
            Err(e) => failures.push(format!("get_resource: {e}")),
        }
        failures.push(format!("maps other: {}", mapped_here(&other_name)));
        wrap!(&failures)
    })
    .unwrap();
    // A worker that inherits nothing: NotShared, and no mapping at all.
    let (outsider, outsider_jp) = def_process(move |arg| {
        let (id, name): (ResId, String) = arg.unwrap().unwrap();
        let mut failures: Vec<String> = Vec::new();
        let got = get_resource(id);
        check!(
            failures,
            matches!(got, Err(Error::NotShared(i)) if i == id),
            "get_resource: {got:?}"
        );
        check!(failures, !mapped_here(&name), "the region is mapped");
        wrap!(&failures)
    })
    .unwrap();
    let n = name.clone();
    let on = other_name.clone();
    let (first, _) = def_process(move |_| {
        let mut failures: Vec<String> = Vec::new();
        // Inherit::All: both regions; Inherit::Resources([id]): only the first.
        for (inherit, maps_other) in [(Inherit::All, true), (Inherit::Resources(vec![id]), false)] {
            let label = format!("{inherit:?}");
            let pid = start_with(reader, wrap!(&(id, n.clone(), on.clone())), inherit).unwrap();
            let mut got: Vec<String> = join(reader_jp, pid)
                .unwrap()
                .map(|r| r.unwrap().unwrap())
                .unwrap_or_else(|| vec!["no result".to_owned()]);
            let other = got.pop();
            check!(
                failures,
                other == Some(format!("maps other: {maps_other}")),
                "{label}: {other:?}"
            );
            failures.extend(got.into_iter().map(|f| format!("{label}: {f}")));
        }
        for inherit in [Inherit::Nothing, Inherit::Resources(vec![other_id])] {
            let label = format!("{inherit:?}");
            let pid = start_with(outsider, wrap!(&(id, n.clone())), inherit).unwrap();
            let got: Vec<String> = join(outsider_jp, pid)
                .unwrap()
                .map(|r| r.unwrap().unwrap())
                .unwrap_or_else(|| vec!["no result".to_owned()]);
            failures.extend(got.into_iter().map(|f| format!("{label}: {f}")));
        }
        wrap!(&failures)
    })
    .unwrap();

    // The master also manages a shm and a semaphore of its own, created in its hook.
    let (tmp, sock) = socket_dir();
    let s = sock.clone();
    let created = tmp.path().join("created");
    let c = created.clone();
    let n = name.clone();
    let result = startup_with_result(
        Config::new(&sock).on_master_start(move || {
            // The region created before startup is in the ledger before any process starts.
            let live = netmcore_resources::ledger::replay_dir(&s).expect("ledger");
            assert!(
                live.iter().any(|o| o.name() == n.as_str()),
                "not recorded: {live:?}"
            );
            let shm = ShmObject::create_unique(&prefix("master-shm")).expect("shm");
            let sem = NamedSemaphore::create_unique(&prefix("master-sem"), 0).expect("sem");
            let shm_r = manage_shm(shm.name())?;
            let sem_r = manage_sem(sem.name())?;
            assert_eq!(get_shm(shm_r.id())?, shm.name());
            assert_eq!(get_sem(sem_r.id())?, sem.name());
            support::write_file(&c, &format!("{} {}", shm.name(), sem.name()));
            Ok(())
        }),
        || start(first, wrap!(&())),
    );
    assert_eq!(failures_of(result), Vec::<String>::new());
    assert_eq!(children(), Vec::<i32>::new(), "children left after startup");
    // Nothing of the run is left, the ledger lists nothing, and the mapping stays readable.
    let text = std::fs::read_to_string(&created).unwrap();
    let (shm, sem) = text.trim().split_once(' ').unwrap();
    for (what, gone) in [
        ("the 64 MiB region", !shm_exists(&name)),
        ("the other region", !shm_exists(&other_name)),
        ("the master's shm", !shm_exists(shm)),
        ("the master's semaphore", !sem_exists(sem)),
    ] {
        assert!(gone, "{what} is left in /dev/shm");
    }
    assert!(
        netmcore_resources::ledger::replay_dir(&sock)
            .unwrap()
            .is_empty()
    );
    assert!(
        words
            .iter()
            .enumerate()
            .step_by(4099)
            .all(|(i, w)| w.load(Ordering::Relaxed) == pattern(i))
    );
    assert!(matches!(get_resource(id), Err(Error::NoResource(_))));
}

fn a_worker_that_creates_preallocated_shm_uses_it_without_a_mapping() {
    let (creator, creator_jp) = def_process(|arg| {
        let release_it: bool = arg.unwrap().unwrap();
        let mut failures: Vec<String> = Vec::new();
        let (id, name) = create_preallocated_shm(&prefix("by-worker"), 1 << 20).unwrap();
        check!(failures, shm_exists(&name), "{name} does not exist");
        check!(
            failures,
            matches!(get_resource(id), Err(Error::NotShared(i)) if i == id),
            "get_resource of its own"
        );
        check!(failures, !mapped_here(&name), "mapped in the worker");
        if release_it {
            release(id).unwrap();
            sync_with_master();
            check!(failures, !shm_exists(&name), "{name} survives its release");
        }
        wrap!(&(id, name, failures))
    })
    .unwrap();
    // A worker started afterwards with Inherit::All gets the master's mapping.
    let (reader, reader_jp) = def_process(|arg| {
        let id: ResId = arg.unwrap().unwrap();
        let ok = matches!(get_resource(id).map(|r| r.repr().clone()),
            Ok(ResourceRepr::PosixShmPreallocated { memory, .. }) if memory.len() == 1 << 20);
        wrap!(&ok)
    })
    .unwrap();
    let (holder, _) = def_process(|arg| {
        // Creates one, reports it, and waits for the gate.
        let gate: String = arg.unwrap().unwrap();
        let (id, _name) = create_preallocated_shm(&prefix("held"), 1 << 20).unwrap();
        support::write_file(Path::new(&format!("{gate}.id")), &id.0.to_string());
        support::wait_for_file(Path::new(&gate));
        wrap!(&())
    })
    .unwrap();
    let (tmp, sock) = socket_dir();
    let gate = tmp.path().join("gate").to_string_lossy().into_owned();
    let (first, _) = def_process(move |_| {
        let mut failures: Vec<String> = Vec::new();
        for release_it in [false, true] {
            let pid = start(creator, wrap!(&release_it)).unwrap();
            let (id, name, got): (ResId, String, Vec<String>) =
                join(creator_jp, pid).unwrap().unwrap().unwrap().unwrap();
            failures.extend(got);
            check!(failures, !shm_exists(&name), "{name} survives its creator");
            check!(
                failures,
                matches!(get_resource(id), Err(Error::NoResource(_))),
                "{id} still known"
            );
        }
        // While its creator lives, a worker that inherits it has the master's mapping.
        let h = start(holder, wrap!(&gate)).unwrap();
        let id = ResId(
            support::wait_for_file(Path::new(&format!("{gate}.id")))
                .trim()
                .parse()
                .unwrap(),
        );
        let r = start_with(reader, wrap!(&id), Inherit::All).unwrap();
        let ok: bool = join(reader_jp, r).unwrap().unwrap().unwrap().unwrap();
        check!(failures, ok, "the inheriting reader");
        support::write_file(Path::new(&gate), "go");
        let _ = h;
        wrap!(&failures)
    })
    .unwrap();
    let result = startup_with_result(Config::new(&sock), || start(first, wrap!(&())));
    assert_eq!(failures_of(result), Vec::<String>::new());
    assert_eq!(children(), Vec::<i32>::new());
}

/// The error rows of the resource calls, checked in the calling role.
fn error_rows(failures: &mut Vec<String>, role: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, b"x").unwrap();
    let shm = ShmObject::create_unique(&prefix("err-shm")).unwrap();
    let sem = NamedSemaphore::create_unique(&prefix("err-sem"), 0).unwrap();
    let file = manage_file(&path).unwrap();
    let shm_r = manage_shm(shm.name()).unwrap();
    let sem_r = manage_sem(sem.name()).unwrap();
    check!(
        failures,
        file.kind() == ResourceKind::File,
        "{role}: file kind"
    );
    check!(
        failures,
        *shm_r.repr() == ResourceRepr::PosixShm(shm.name().to_owned()),
        "{role}: shm repr"
    );
    let wrong = |r: &ComputeResource, got: netmcore_master::Result<String>, expected| {
        matches!(got, Err(Error::WrongKind { id, expected: e, found })
            if id == r.id() && e == expected && found == r.kind())
    };
    check!(
        failures,
        matches!(get_file(shm_r.id()), Err(Error::WrongKind { id, expected: ResourceKind::File, found: ResourceKind::PosixShm }) if id == shm_r.id()),
        "{role}: get_file on a shm"
    );
    check!(
        failures,
        matches!(get_sem(file.id()), Err(Error::WrongKind { id, expected: ResourceKind::PosixSem, found: ResourceKind::File }) if id == file.id()),
        "{role}: get_sem on a file"
    );
    check!(
        failures,
        wrong(&sem_r, get_shm(sem_r.id()), ResourceKind::PosixShm),
        "{role}: get_shm on a semaphore"
    );
    check!(
        failures,
        get_file(file.id()).ok() == Some(path.clone()),
        "{role}: get_file"
    );
    for bad in ["no-slash", "", "/a/b"] {
        check!(
            failures,
            matches!(manage_shm(bad), Err(Error::InvalidName(n)) if n == bad),
            "{role}: manage_shm {bad:?}"
        );
        check!(
            failures,
            matches!(manage_sem(bad), Err(Error::InvalidName(n)) if n == bad),
            "{role}: manage_sem {bad:?}"
        );
    }
    check!(
        failures,
        matches!(manage_file("relative/path"), Err(Error::InvalidName(_))),
        "{role}: manage_file of a relative path"
    );
    check!(
        failures,
        matches!(
            create_preallocated_shm("no-slash-", 4096),
            Err(Error::InvalidName(_))
        ),
        "{role}: create_preallocated_shm without a slash"
    );
    let unknown = ResId(987_654);
    check!(
        failures,
        matches!(get_resource(unknown), Err(Error::NoResource(i)) if i == unknown),
        "{role}: get_resource of an unknown id"
    );
    check!(
        failures,
        matches!(get_file(unknown), Err(Error::NoResource(_))),
        "{role}: get_file of an unknown id"
    );
    check!(
        failures,
        release(unknown).is_ok(),
        "{role}: release of an unknown id"
    );
    // The caller is the only user: releasing destroys each object.
    for r in [file, shm_r, sem_r] {
        r.release().unwrap();
    }
    sync_with_master();
    check!(failures, !path.exists(), "{role}: the file survives");
    check!(
        failures,
        !shm_exists(shm.name()),
        "{role}: the shm survives"
    );
    check!(
        failures,
        !sem_exists(sem.name()),
        "{role}: the semaphore survives"
    );
}

fn kind_name_and_id_errors_in_every_role() {
    let mut failures = Vec::new();
    error_rows(&mut failures, "pre-startup");
    let (tmp, sock) = socket_dir();
    let s = sock.clone();
    let (worker, _) = def_process(move |_| {
        let mut failures = Vec::new();
        error_rows(&mut failures, "worker");
        check!(
            failures,
            matches!(destroy_resources(), Err(Error::NotInMaster)),
            "worker: destroy_resources"
        );
        check!(
            failures,
            matches!(destroy_resources_in(&s), Err(Error::SocketDirectoryInUse(d)) if d == s),
            "worker: destroy_resources_in of its master's directory"
        );
        wrap!(&failures)
    })
    .unwrap();
    let in_master = tmp.path().join("in-master");
    let m = in_master.clone();
    let s = sock.clone();
    let result = startup_with_result(
        Config::new(&sock).on_master_start(move || {
            let mut failures = Vec::new();
            error_rows(&mut failures, "master");
            check!(
                failures,
                matches!(
                    destroy_resources_in(&s),
                    Err(Error::SocketDirectoryInUse(_))
                ),
                "master: destroy_resources_in of its own directory"
            );
            support::write_file(&m, &failures.join(" | "));
            Ok(())
        }),
        || start(worker, wrap!(&())),
    );
    failures.extend(failures_of(result));
    let text = std::fs::read_to_string(&in_master).unwrap();
    failures.extend(
        text.trim()
            .split(" | ")
            .filter(|f| !f.is_empty())
            .map(str::to_owned),
    );
    assert_eq!(failures, Vec::<String>::new());
    assert_eq!(children(), Vec::<i32>::new());
}

fn users_are_sets_and_the_last_release_destroys() {
    let (fetcher, fetcher_jp) = def_process(|arg| {
        let id: ResId = arg.unwrap().unwrap();
        let mut failures: Vec<String> = Vec::new();
        for round in 0..2000 {
            match get_resource(id) {
                Ok(r) => r.release().unwrap(),
                Err(e) => {
                    failures.push(format!("round {round}: {e}"));
                    break;
                }
            }
        }
        wrap!(&failures)
    })
    .unwrap();
    let (first, _) = def_process(move |_| {
        let mut failures: Vec<String> = Vec::new();
        // Two gets and one release by the same worker: it no longer uses the object.
        let shm = ShmObject::create_unique(&prefix("set")).unwrap();
        let r = manage_shm(shm.name()).unwrap();
        get_resource(r.id()).unwrap();
        get_resource(r.id()).unwrap();
        release(r.id()).unwrap();
        sync_with_master();
        check!(failures, !shm_exists(shm.name()), "a set of users");
        // Held by this worker, fetched and released 2000 times by another: alive until
        // this one lets go.
        let held = ShmObject::create_unique(&prefix("held")).unwrap();
        let r = manage_shm(held.name()).unwrap();
        let pid = start(fetcher, wrap!(&r.id())).unwrap();
        let got: Vec<String> = join(fetcher_jp, pid).unwrap().unwrap().unwrap().unwrap();
        failures.extend(got);
        check!(
            failures,
            shm_exists(held.name()),
            "destroyed while still held"
        );
        check!(failures, get_shm(r.id()).is_ok(), "forgotten while held");
        r.release().unwrap();
        sync_with_master();
        check!(failures, !shm_exists(held.name()), "the last release");
        wrap!(&failures)
    })
    .unwrap();
    let (_tmp, sock) = socket_dir();
    let result = startup_with_result(Config::new(&sock), || start(first, wrap!(&())));
    assert_eq!(failures_of(result), Vec::<String>::new());
}

fn a_worker_that_ends_in_any_way_releases_what_it_used() {
    let (tmp, sock) = socket_dir();
    let base = tmp.path().to_string_lossy().into_owned();
    let (user, user_jp) = def_process(move |arg| {
        let how: String = arg.unwrap().unwrap();
        let path = PathBuf::from(format!("{base}/{how}.bin"));
        std::fs::write(&path, b"x").unwrap();
        let shm = ShmObject::create_unique(&prefix(&how)).unwrap();
        let sem = NamedSemaphore::create_unique(&prefix(&how), 0).unwrap();
        manage_file(&path).unwrap();
        manage_shm(shm.name()).unwrap();
        manage_sem(sem.name()).unwrap();
        support::write_file(
            Path::new(&format!("{base}/{how}.names")),
            &format!("{} {}", shm.name(), sem.name()),
        );
        match how.as_str() {
            "panic" => panic!("this body panics on purpose"),
            "exit" => std::process::exit(3),
            "sigkill" => {
                kill_process(getpid(), Signal::KILL).unwrap();
                std::thread::sleep(std::time::Duration::from_secs(60));
            }
            _ => {}
        }
        wrap!(&how)
    })
    .unwrap();
    let base = tmp.path().to_owned();
    let (first, _) = def_process(move |_| {
        let mut failures: Vec<String> = Vec::new();
        for how in ["return", "panic", "exit", "sigkill"] {
            let pid = start(user, wrap!(&how.to_owned())).unwrap();
            let result = join(user_jp, pid).unwrap();
            check!(
                failures,
                result.is_some() == (how == "return"),
                "{how}: join gave {result:?}"
            );
            // join answers after the master released what the process used.
            let names = std::fs::read_to_string(base.join(format!("{how}.names"))).unwrap();
            let (shm, sem) = names.trim().split_once(' ').unwrap();
            check!(
                failures,
                !base.join(format!("{how}.bin")).exists(),
                "{how}: the file"
            );
            check!(failures, !shm_exists(shm), "{how}: the shm");
            check!(failures, !sem_exists(sem), "{how}: the semaphore");
        }
        wrap!(&failures)
    })
    .unwrap();
    let result = startup_with_result(Config::new(&sock), || start(first, wrap!(&())));
    assert_eq!(failures_of(result), Vec::<String>::new());
    assert_eq!(children(), Vec::<i32>::new());
}

fn fork_and_join_points_are_dropped_by_their_last_release() {
    let (doomed, doomed_jp) = def_process(|arg| arg).unwrap();
    let (echo, echo_jp) = def_process(|arg| arg).unwrap();
    let (first, _) = def_process(move |_| {
        let mut failures: Vec<String> = Vec::new();
        // A worker's get and release of a fork point leave the master's use in place.
        get_resource(echo).unwrap();
        release(echo).unwrap();
        check!(
            failures,
            matches!(start(doomed, wrap!(&())), Err(Error::NoResource(id)) if id == doomed),
            "start through a dropped fork point"
        );
        check!(
            failures,
            matches!(get_resource(doomed_jp), Err(Error::NoResource(_))),
            "the dropped join point"
        );
        let pid = start(echo, wrap!(&5u8)).unwrap();
        check!(
            failures,
            join(echo_jp, pid).unwrap().is_some(),
            "the other type still works"
        );
        check!(failures, self_process_id().is_ok(), "self_process_id");
        wrap!(&failures)
    })
    .unwrap();
    let (_tmp, sock) = socket_dir();
    let result = startup_with_result(
        Config::new(&sock).on_master_start(move || {
            // The master is the only user of both points: releasing drops them.
            assert_eq!(get_resource(doomed)?.repr(), &ResourceRepr::ForkPoint);
            release(doomed)?;
            release(doomed_jp)?;
            Ok(())
        }),
        || start(first, wrap!(&())),
    );
    assert_eq!(failures_of(result), Vec::<String>::new());
}

fn destroy_resources_in_the_master_and_before_startup() {
    // Before startup: the objects registered so far.
    let (id, name) = create_preallocated_shm(&prefix("pre"), 4096).unwrap();
    destroy_resources().unwrap();
    assert!(!shm_exists(&name));
    assert!(matches!(get_resource(id), Err(Error::NoResource(_))));

    let (echo, _) = def_process(|arg| arg).unwrap();
    let (tmp, sock) = socket_dir();
    let path = tmp.path().join("managed.bin");
    std::fs::write(&path, b"x").unwrap();
    let s = sock.clone();
    let p = path.clone();
    let result = startup_with_result(Config::new(&sock), move || {
        // The master's user code runs before its event loop serves anyone: the objects it
        // knows now are its own.
        let sem = NamedSemaphore::create_unique(&prefix("master-sem"), 0).unwrap();
        manage_sem(sem.name())?;
        manage_file(&p)?;
        let (pool, pool_name) = create_preallocated_shm(&prefix("master-pool"), 4096)?;
        assert!(shm_exists(&pool_name) && sem_exists(sem.name()) && p.exists());
        assert_eq!(
            netmcore_resources::ledger::replay_dir(&s).unwrap().len(),
            3,
            "the ledger lists the three objects"
        );
        destroy_resources()?;
        assert!(!shm_exists(&pool_name), "the master's region");
        assert!(!sem_exists(sem.name()), "the master's semaphore");
        assert!(!p.exists(), "the managed file");
        assert!(matches!(get_resource(pool), Err(Error::NoResource(_))));
        assert!(
            netmcore_resources::ledger::replay_dir(&s)
                .unwrap()
                .is_empty()
        );
        // Process types stay.
        start(echo, wrap!(&()))
    });
    assert!(result.is_ok(), "{result:?}");
    assert!(
        netmcore_resources::ledger::replay_dir(&sock)
            .unwrap()
            .is_empty()
    );
}

/// How many lines of `/proc/<pid>/maps` map an object whose name starts with `prefix`.
fn mappings_of(pid: &str, prefix: &str) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .expect("maps")
        .lines()
        .filter(|line| line.contains(&format!("/dev/shm{prefix}")))
        .count()
}

fn destroyed_preallocated_shm_leaves_no_mapping_in_the_master() {
    const ROUNDS: usize = 200;
    // Handed out before startup, then destroyed: the mapping stays valid and readable.
    let (kept, kept_name) = create_preallocated_shm(&prefix("kept"), 4096).unwrap();
    let ResourceRepr::PosixShmPreallocated { memory, .. } = *get_resource(kept).unwrap().repr()
    else {
        panic!("a preallocated shm");
    };
    memory.as_atomic_u8s()[0].store(42, Ordering::Relaxed);
    // Never handed out, then destroyed: unmapped.
    let (gone, gone_name) = create_preallocated_shm(&prefix("gone"), 4096).unwrap();
    release(kept).unwrap();
    release(gone).unwrap();
    assert!(mapped_here(&kept_name));
    assert!(!mapped_here(&gone_name));
    assert_eq!(memory.as_atomic_u8s()[0].load(Ordering::Relaxed), 42);

    let churn = prefix("churn");
    let churn_in_worker = churn.clone();
    let (churner, churner_jp) = def_process(move |_| {
        let mut failures: Vec<String> = Vec::new();
        let master = rustix::process::getppid()
            .expect("a parent")
            .as_raw_pid()
            .to_string();
        for _ in 0..ROUNDS {
            let (id, _name) = create_preallocated_shm(&churn_in_worker, 1 << 16).unwrap();
            release(id).unwrap();
        }
        sync_with_master();
        let left = mappings_of(&master, &churn_in_worker);
        check!(
            failures,
            left == 0,
            "the master maps {left} destroyed regions of {ROUNDS}"
        );
        wrap!(&failures)
    })
    .unwrap();
    let (tmp, sock) = socket_dir();
    let _ = &tmp;
    let (first, _) = def_process(move |_| {
        let pid = start(churner, wrap!(&())).unwrap();
        let failures: Vec<String> = join(churner_jp, pid).unwrap().unwrap().unwrap().unwrap();
        wrap!(&failures)
    })
    .unwrap();
    let result = startup_with_result(Config::new(&sock), || start(first, wrap!(&())));
    assert_eq!(failures_of(result), Vec::<String>::new());
    let here = getpid().as_raw_pid().to_string();
    assert_eq!(mappings_of(&here, &churn), 0);
    assert!(mapped_here(&kept_name));
    assert_eq!(memory.as_atomic_u8s()[0].load(Ordering::Relaxed), 42);
    assert_eq!(children(), Vec::<i32>::new());
}
