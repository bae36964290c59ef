//! Support for the tests and loom models of the state machines: a futex emulated with a lock
//! and a condition variable, and a death board whose deaths a test decides.
//!
//! Both are written over `crate::sync`, so the same scenarios run under loom (which explores
//! their interleavings and reports a sleeper that is never woken as a deadlock) and with std
//! threads.

use crate::protocol::{Peers, Wake};
use crate::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use crate::sync::{Condvar, Mutex};

/// A futex: sleepers wait on one or more words (as `futex_waitv` does), and a wake on a word
/// wakes up to `n` of the sleepers that wait on it, and no other.
///
/// A park checks the words under the lock and registers before it sleeps, and a wake marks
/// sleepers under the same lock, which makes check-and-sleep atomic with respect to wakes, as
/// the kernel's is. There are no spurious wakeups and no timeouts, so a protocol that loses a
/// wakeup hangs here (and loom reports the hang).
pub(crate) struct Futex {
    sleepers: Mutex<Sleepers>,
    cond: Condvar,
}

#[derive(Default)]
struct Sleepers {
    next_ticket: u64,
    asleep: Vec<Sleeper>,
}

struct Sleeper {
    ticket: u64,
    words: Vec<usize>,
    woken: bool,
}

fn address(word: &AtomicU32) -> usize {
    std::ptr::from_ref(word) as usize
}

impl Futex {
    pub(crate) fn new() -> Futex {
        Futex {
            sleepers: Mutex::new(Sleepers::default()),
            cond: Condvar::new(),
        }
    }

    /// Sleeps while every word holds its expected value, until a wake on one of them; returns
    /// at once if one of them does not.
    pub(crate) fn park(&self, words: &[(&AtomicU32, u32)]) {
        let mut sleepers = self.sleepers.lock().expect("futex lock");
        if words
            .iter()
            .any(|(word, expected)| word.load(Ordering::Relaxed) != *expected)
        {
            return;
        }
        let ticket = sleepers.next_ticket;
        sleepers.next_ticket += 1;
        sleepers.asleep.push(Sleeper {
            ticket,
            words: words.iter().map(|(word, _)| address(word)).collect(),
            woken: false,
        });
        loop {
            sleepers = self.cond.wait(sleepers).expect("futex lock");
            if let Some(at) = sleepers
                .asleep
                .iter()
                .position(|s| s.ticket == ticket && s.woken)
            {
                sleepers.asleep.remove(at);
                return;
            }
        }
    }

    /// Wakes the sleepers on `word` that `wake` asks for.
    pub(crate) fn wake(&self, word: &AtomicU32, wake: Wake) {
        let n = match wake {
            Wake::None => return,
            Wake::One => 1,
            Wake::All => usize::MAX,
        };
        let at = address(word);
        let mut sleepers = self.sleepers.lock().expect("futex lock");
        let mut woken = 0;
        for sleeper in sleepers
            .asleep
            .iter_mut()
            .filter(|s| !s.woken && s.words.contains(&at))
            .take(n)
        {
            sleeper.woken = true;
            woken += 1;
        }
        if woken > 0 {
            self.cond.notify_all();
        }
    }
}

/// A death board for tags 1 to 3: a test marks a tag dead with [`Board::die`], which bumps the
/// epoch and wakes everyone who sleeps on it, as the master does when a process ends.
pub(crate) struct Board {
    dead: [AtomicBool; 4],
    pub(crate) epoch: AtomicU32,
}

impl Board {
    pub(crate) fn new() -> Board {
        Board {
            dead: std::array::from_fn(|_| AtomicBool::new(false)),
            epoch: AtomicU32::new(0),
        }
    }

    /// The process `tag` has ended: mark it, bump the epoch, wake every sleeper on it.
    pub(crate) fn die(&self, tag: u32, futex: &Futex) {
        self.dead[tag as usize].store(true, Ordering::Release);
        self.epoch.fetch_add(1, Ordering::Release);
        futex.wake(&self.epoch, Wake::All);
    }

    /// The epoch, read (with `Acquire`, pairing with [`Board::die`]) before the liveness
    /// checks of a step, and slept on beside the step's own word.
    pub(crate) fn epoch(&self) -> u32 {
        self.epoch.load(Ordering::Acquire)
    }
}

impl Peers for Board {
    fn is_dead(&self, tag: u32) -> bool {
        self.dead
            .get(tag as usize)
            .is_some_and(|dead| dead.load(Ordering::Acquire))
    }
}

/// Scribbling over a live segment, for the property tests of the structures: what another
/// process (or a stray writer) could do to the bytes of a shm object it maps.
#[cfg(not(netmcore_loom))]
pub(crate) mod scribble {
    use std::sync::atomic::Ordering;

    use netmcore_ipc::shm::ShmObject;
    use netmcore_resources::ResId;
    use proptest::prelude::*;

    use crate::Error;
    use crate::header::Kind;
    use crate::protocol::MASTER_TAG;
    use crate::segment::{Element, Layout, Segment};

    /// Words that the protocols give a meaning to: free, the master's own tag (which a
    /// program before startup holds itself), with the waiters bit, the reserved bit, a tag
    /// nobody was issued, all ones.
    const MEANINGFUL: [u32; 8] = [
        0,
        1,
        5,
        MASTER_TAG,
        MASTER_TAG | 1 << 31,
        1 << 30,
        1 << 31,
        u32::MAX,
    ];

    /// A scribble: an offset in `regions` (one region drawn first, so that a small header
    /// or word area is hit as often as a large table) and the bytes to write there, either
    /// random or one word the protocols give a meaning to, written at a 4-aligned offset.
    pub(crate) fn scribbles(
        regions: &[std::ops::Range<usize>],
    ) -> impl Strategy<Value = (usize, Vec<u8>)> + use<> {
        let offsets = proptest::sample::select(regions.to_vec())
            .prop_flat_map(|region| region.start..region.end.max(region.start + 1));
        let random = (
            offsets.clone(),
            proptest::collection::vec(any::<u8>(), 1..48),
        );
        let word = (
            offsets,
            prop_oneof![proptest::sample::select(MEANINGFUL.to_vec()), any::<u32>()],
        )
            .prop_map(|(offset, word)| (offset & !3, word.to_ne_bytes().to_vec()));
        prop_oneof![random, word]
    }

    /// Writes `bytes` at `offset` of the shm object of segment `id` (what fits of them)
    /// through a mapping of its own, and returns the object's name.
    pub(crate) fn write(id: ResId, offset: usize, bytes: &[u8]) -> String {
        let name = netmcore_master::get_shm(id).expect("the name of a live segment");
        let scribbler = ShmObject::open(&name)
            .and_then(|shm| shm.map())
            .expect("a second mapping");
        for (i, byte) in bytes.iter().enumerate() {
            if let Some(cell) = scribbler.as_atomic_u8s().get(offset + i) {
                cell.store(*byte, Ordering::Relaxed);
            }
        }
        name
    }

    /// Maps the scribbled segment again and checks it as an open would: its header, then
    /// its layout. `Ok`, `Corrupt` and `WrongType` are answers; any other error is returned
    /// as a failure (a panic fails the property by itself).
    pub(crate) fn recheck(
        id: ResId,
        name: &str,
        kind: Kind,
        fingerprint: u64,
        element: Element,
    ) -> Result<(), String> {
        match Segment::map_checked(id, name, kind, fingerprint)
            .and_then(|segment| Layout::check(segment.header(), element, id))
        {
            Ok(_) | Err(Error::Corrupt { .. } | Error::WrongType { .. }) => Ok(()),
            Err(other) => Err(format!("unexpected error {other:?}")),
        }
    }
}
