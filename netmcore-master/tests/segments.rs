//! Multi-process tests of what the shared structures stand on: `create_shm` (a shm object the
//! master records and creates, and every process maps itself, wherever it likes) and the
//! death board (a bit per ended process and an epoch that wakes sleepers). Each case runs in a
//! forked process of its own (see `support::run_cases`), which becomes a master with `startup`.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use netmcore_encap::Encap;
use netmcore_ipc::death_board::{MASTER_TAG, tag_of};
use netmcore_ipc::shm::ShmObject;
use netmcore_master::{
    Config, Error, create_shm, death_board, def_process, get_shm, join, release, self_tag, start,
    startup_with_result,
};
use netmcore_resources::ledger::{self, LedgerObject};
use netmcore_resources::{ProcessId, ResId};
use rustix::process::{Signal, getpid, kill_process};
use support::{
    Case, failures_of, prefix, run_cases, shm_exists, socket_dir, wait_for_file, write_file,
};

fn main() -> std::process::ExitCode {
    run_cases(&[
        Case {
            name: "a_shm_a_worker_creates_is_mapped_by_a_sibling_forked_before_it",
            run: a_shm_a_worker_creates_is_mapped_by_a_sibling_forked_before_it,
        },
        Case {
            name: "a_created_shm_is_in_the_ledger_and_gone_with_its_killed_creator",
            run: a_created_shm_is_in_the_ledger_and_gone_with_its_killed_creator,
        },
        Case {
            name: "create_shm_before_startup_and_in_the_master",
            run: create_shm_before_startup_and_in_the_master,
        },
        Case {
            name: "the_death_board_wakes_a_sleeper_when_a_sibling_is_killed",
            run: the_death_board_wakes_a_sleeper_when_a_sibling_is_killed,
        },
        Case {
            name: "self_tag_in_every_role",
            run: self_tag_in_every_role,
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

/// The reader is started first and waits for a file naming the id; the creator, started
/// after it, makes a shm object with `create_shm`, maps it, writes a word, and names the id.
/// The reader (which was forked before the object existed) maps it by name at an address of
/// its own and reads the word. The object lives while either uses it, and is unlinked the
/// moment the last one releases it.
fn a_shm_a_worker_creates_is_mapped_by_a_sibling_forked_before_it() {
    let (tmp, sock) = socket_dir();
    let said = tmp.path().join("id");
    let read = tmp.path().join("read");
    let (said2, read2) = (said.clone(), read.clone());
    let (reader, reader_jp) = def_process(move |_| {
        let id = ResId(wait_for_file(&said2).trim().parse().expect("an id"));
        let name = get_shm(id).expect("get_shm makes the reader a user");
        let mapping = ShmObject::open(&name)
            .and_then(|shm| shm.map())
            .expect("map");
        let word = mapping.as_atomic_u64s().expect("page-aligned")[3].load(Ordering::Acquire);
        write_file(&read2, "read");
        release(id).expect("release");
        wrap!(&(word, name))
    })
    .unwrap();
    let prefix = prefix("segment");
    let (creator, creator_jp) = def_process(move |_| {
        let mut failures: Vec<String> = Vec::new();
        let (id, name) = create_shm(&prefix, 8192).expect("create_shm");
        check!(failures, name.starts_with(&prefix), "the name {name}");
        let shm = ShmObject::open(&name).expect("open");
        check!(failures, shm.size().ok() == Some(8192), "the size");
        let mapping = shm.map().expect("map");
        mapping.as_atomic_u64s().expect("page-aligned")[3].store(0xfeed, Ordering::Release);
        write_file(&said, &id.0.to_string());
        wait_for_file(&read);
        release(id).expect("release");
        wrap!(&(failures, name))
    })
    .unwrap();
    let (first, _) = def_process(move |_| {
        let mut failures: Vec<String> = Vec::new();
        let reader_pid = start(reader, wrap!(&())).unwrap();
        let creator_pid = start(creator, wrap!(&())).unwrap();
        let (mut theirs, name): (Vec<String>, String) = join(creator_jp, creator_pid)
            .unwrap()
            .unwrap()
            .unwrap()
            .unwrap();
        failures.append(&mut theirs);
        let (word, read_name): (u64, String) = join(reader_jp, reader_pid)
            .unwrap()
            .unwrap()
            .unwrap()
            .unwrap();
        check!(failures, word == 0xfeed, "the reader read {word:#x}");
        check!(failures, read_name == name, "{read_name} is not {name}");
        check!(
            failures,
            !shm_exists(&name),
            "{name} outlived its two users' releases"
        );
        wrap!(&failures)
    })
    .unwrap();
    let result = startup_with_result(Config::new(&sock), || start(first, wrap!(&())));
    assert_eq!(failures_of(result), Vec::<String>::new());
}

/// A worker creates a shm object: the ledger lists it while it lives. The worker is then
/// killed with SIGKILL; when its join returns the object is gone and the ledger lists nothing.
fn a_created_shm_is_in_the_ledger_and_gone_with_its_killed_creator() {
    let (tmp, sock) = socket_dir();
    let named = tmp.path().join("name");
    let go = tmp.path().join("go");
    let (named2, go2) = (named.clone(), go.clone());
    let prefix = prefix("killed");
    let (creator, creator_jp) = def_process(move |_| {
        let (_, name) = create_shm(&prefix, 4096).expect("create_shm");
        write_file(&named2, &name);
        wait_for_file(&go2);
        kill_process(getpid(), Signal::KILL).expect("kill");
        std::thread::sleep(Duration::from_secs(60));
        wrap!(&())
    })
    .unwrap();
    let sock2 = sock.clone();
    let (first, _) = def_process(move |_| {
        let mut failures: Vec<String> = Vec::new();
        let pid = start(creator, wrap!(&())).unwrap();
        let name = wait_for_file(&named).trim().to_owned();
        let live = ledger::replay_dir(&sock2).map_err(|e| e.to_string());
        check!(
            failures,
            live.as_ref()
                .is_ok_and(|l| l.contains(&LedgerObject::shm(name.as_str()))),
            "the ledger does not list {name}: {live:?}"
        );
        write_file(&go, "die");
        let out = join(creator_jp, pid).unwrap();
        check!(failures, out.is_none(), "a killed creator gave {out:?}");
        check!(
            failures,
            !shm_exists(&name),
            "{name} outlived its killed creator"
        );
        wrap!(&failures)
    })
    .unwrap();
    let result = startup_with_result(Config::new(&sock), || start(first, wrap!(&())));
    assert_eq!(failures_of(result), Vec::<String>::new());
}

/// Before startup and in the master, `create_shm` works on the registry directly; the master
/// is the user, so the objects live until it releases them or the run ends. A bad prefix is
/// `InvalidName` everywhere.
fn create_shm_before_startup_and_in_the_master() {
    let (_tmp, sock) = socket_dir();
    let (before, before_name) = create_shm(&prefix("before"), 4096).unwrap();
    assert!(shm_exists(&before_name));
    assert!(matches!(
        create_shm("no-slash", 4096),
        Err(Error::InvalidName(_))
    ));
    let (checker, checker_jp) = def_process(|_| {
        let bad = create_shm("/a/b", 4096);
        wrap!(&matches!(bad, Err(Error::InvalidName(_))))
    })
    .unwrap();
    let prefix_master = prefix("master");
    let mut in_master = None;
    let (first, _) = def_process(move |_| {
        let pid = start(checker, wrap!(&())).unwrap();
        let refused: bool = join(checker_jp, pid).unwrap().unwrap().unwrap().unwrap();
        wrap!(&refused)
    })
    .unwrap();
    let result = startup_with_result(Config::new(&sock), || {
        let (id, name) = create_shm(&prefix_master, 4096)?;
        assert!(shm_exists(&name));
        release(id)?;
        in_master = Some(name);
        start(first, wrap!(&()))
    });
    let refused: bool = result.unwrap().unwrap().unwrap().unwrap();
    assert!(
        refused,
        "a worker's create_shm with a bad prefix was not InvalidName"
    );
    let in_master = in_master.expect("the master made one");
    assert!(!shm_exists(&in_master), "released by the master");
    assert!(
        !shm_exists(&before_name),
        "the run ended: {before:?} is destroyed"
    );
}

/// A sleeper and a watcher run side by side. The watcher reads the board's epoch, sees the
/// sleeper alive, and sleeps on the epoch with no timeout. The coordinator kills the sleeper
/// with SIGKILL: the watcher wakes, finds the sleeper's bit set, and returns. The epoch moved.
fn the_death_board_wakes_a_sleeper_when_a_sibling_is_killed() {
    let (tmp, sock) = socket_dir();
    let asleep = tmp.path().join("asleep");
    let asleep2 = asleep.clone();
    let unix_pid = tmp.path().join("sleeper.pid");
    let unix_pid2 = unix_pid.clone();
    let (sleeper, sleeper_jp) = def_process(move |_| {
        write_file(&unix_pid2, &getpid().as_raw_nonzero().to_string());
        std::thread::sleep(Duration::from_secs(600));
        wrap!(&())
    })
    .unwrap();
    let (watcher, watcher_jp) = def_process(move |arg| {
        let target: ProcessId = arg.unwrap().unwrap();
        let board = death_board().expect("a worker inherits the board");
        let tag = tag_of(target).expect("a tag");
        let mut rounds = 0u32;
        loop {
            let epoch = board.epoch().load(Ordering::Acquire);
            if board.is_dead(tag) {
                break;
            }
            if rounds == 0 {
                write_file(&asleep2, "asleep");
            }
            rounds += 1;
            let _ = rustix::thread::futex::wait(
                board.epoch(),
                rustix::thread::futex::Flags::empty(),
                epoch,
                None,
            );
        }
        wrap!(&rounds)
    })
    .unwrap();
    let (first, _) = def_process(move |_| {
        let mut failures: Vec<String> = Vec::new();
        let board = death_board().expect("the board");
        let sleeper_pid = start(sleeper, wrap!(&())).unwrap();
        let watcher_pid = start(watcher, wrap!(&sleeper_pid)).unwrap();
        wait_for_file(&asleep);
        let tag = tag_of(sleeper_pid).unwrap();
        check!(failures, !board.is_dead(tag), "alive, yet marked dead");
        let before = board.epoch().load(Ordering::Acquire);
        let unix: i32 = wait_for_file(&unix_pid).trim().parse().expect("a pid");
        kill_process(
            rustix::process::Pid::from_raw(unix).expect("a pid"),
            Signal::KILL,
        )
        .expect("kill the sleeper");
        let rounds: u32 = join(watcher_jp, watcher_pid)
            .unwrap()
            .unwrap()
            .unwrap()
            .unwrap();
        check!(failures, rounds >= 1, "the watcher never slept");
        check!(
            failures,
            join(sleeper_jp, sleeper_pid).unwrap().is_none(),
            "killed"
        );
        check!(
            failures,
            board.is_dead(tag),
            "not marked dead after the join"
        );
        check!(
            failures,
            board.epoch().load(Ordering::Acquire) != before,
            "the epoch did not move"
        );
        wrap!(&failures)
    })
    .unwrap();
    let result = startup_with_result(Config::new(&sock), || start(first, wrap!(&())));
    assert_eq!(failures_of(result), Vec::<String>::new());
}

/// The tag is the process id plus one in a worker, and the master's tag elsewhere.
fn self_tag_in_every_role() {
    let (_tmp, sock) = socket_dir();
    assert_eq!(self_tag().unwrap(), MASTER_TAG);
    let (tagger, tagger_jp) = def_process(|_| {
        let pid = netmcore_master::self_process_id().unwrap();
        wrap!(&(pid, self_tag().unwrap()))
    })
    .unwrap();
    let (first, _) = def_process(move |_| {
        let pid = start(tagger, wrap!(&())).unwrap();
        let (own, tag): (ProcessId, u32) = join(tagger_jp, pid).unwrap().unwrap().unwrap().unwrap();
        wrap!(&(own == pid && tag_of(pid) == Some(tag)))
    })
    .unwrap();
    let mut in_master = 0;
    let result = startup_with_result(Config::new(&sock), || {
        in_master = self_tag()?;
        start(first, wrap!(&()))
    });
    assert!(result.unwrap().unwrap().unwrap::<bool>().unwrap());
    assert_eq!(in_master, MASTER_TAG);
}
