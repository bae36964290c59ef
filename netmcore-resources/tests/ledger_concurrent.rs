//! Several handles on one ledger: appends interleave record by record and readers never see
//! half a record. Each handle has its own open file description, so its file lock conflicts
//! with the others' exactly as it would between processes.

use std::collections::HashSet;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use netmcore_resources::ledger::{self, Ledger, LedgerObject};

#[test]
fn two_handles_interleave_appends() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut first = Ledger::open(dir.path()).expect("open first");
    let mut second = Ledger::open(dir.path()).expect("open second");
    let [a, b, c] = ["/a", "/b", "/c"].map(LedgerObject::shm);

    first.registered(&a).expect("R a");
    second.registered(&b).expect("R b");
    first.destroyed(&b).expect("U b by the other handle");
    second.registered(&c).expect("R c");
    first
        .registered(&LedgerObject::file("/tmp/f"))
        .expect("R f");
    second.destroyed(&a).expect("U a");

    let expected = [c, LedgerObject::file("/tmp/f")];
    assert_eq!(first.live().expect("first live"), expected);
    assert_eq!(second.live().expect("second live"), expected);
    assert_eq!(ledger::replay_dir(dir.path()).expect("replay"), expected);

    // A truncate through one handle is seen through the other, whose appends follow it.
    second.truncate().expect("truncate");
    first.registered(&LedgerObject::sem("/s")).expect("R s");
    assert_eq!(second.live().expect("live"), [LedgerObject::sem("/s")]);
}

#[test]
fn concurrent_writers_and_a_reader() {
    const WRITERS: usize = 2;
    const ROUNDS: usize = 300;

    let dir = tempfile::tempdir().expect("temp dir");
    // Created once up front so that every writer finds the header in place.
    drop(Ledger::open(dir.path()).expect("create"));
    let start = Barrier::new(WRITERS + 1);
    let done = AtomicBool::new(false);

    thread::scope(|scope| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let (dir, start) = (dir.path(), &start);
                scope.spawn(move || {
                    let mut ledger = Ledger::open(dir).expect("open in writer");
                    start.wait();
                    for round in 0..ROUNDS {
                        // A long name makes a torn write more likely to show if locking failed.
                        let name = format!("/w{writer}-{round}-{}", "x y".repeat(50));
                        let object = LedgerObject::shm(name);
                        ledger.registered(&object).expect("register");
                        // Keep every third object live; destroy the others.
                        if round % 3 != 0 {
                            ledger.destroyed(&object).expect("destroy");
                        }
                    }
                })
            })
            .collect();
        let reader = scope.spawn(|| {
            start.wait();
            let mut replays = 0_usize;
            while !done.load(Ordering::Acquire) {
                ledger::replay_dir(dir.path()).expect("a replay during appends");
                replays += 1;
            }
            replays
        });
        for writer in writers {
            writer.join().expect("writer thread");
        }
        done.store(true, Ordering::Release);
        assert!(reader.join().expect("reader thread") > 0);
    });

    let live = ledger::replay_dir(dir.path()).expect("final replay");
    let expected: HashSet<LedgerObject> = (0..WRITERS)
        .flat_map(|writer| {
            (0..ROUNDS).step_by(3).map(move |round| {
                LedgerObject::shm(format!("/w{writer}-{round}-{}", "x y".repeat(50)))
            })
        })
        .collect();
    assert_eq!(live.len(), expected.len());
    assert_eq!(live.iter().cloned().collect::<HashSet<_>>(), expected);
    // Each writer's objects appear in the order it registered them.
    for writer in 0..WRITERS {
        let prefix = format!("/w{writer}-");
        let rounds: Vec<usize> = live
            .iter()
            .filter_map(|object| object.name().to_str()?.strip_prefix(&prefix))
            .map(|rest| {
                rest.split('-')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("round")
            })
            .collect();
        assert!(
            rounds.windows(2).all(|pair| pair[0] < pair[1]),
            "{rounds:?}"
        );
    }
}
