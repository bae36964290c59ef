//! The death board: how processes that wait in shared memory learn that a peer has ended.
//!
//! A structure in shared memory (a lock, a channel, a barrier) names the processes that hold or
//! use it by a *tag* (a `u32`, see [`tag_of`]). A process blocked in such a structure waits for
//! another one to act; if that one has ended, the waiter must learn it, not sleep forever. The
//! board is a page-granular bitmap with one bit per tag, set when the process of that tag has
//! ended, and a futex word, the *epoch*, bumped after every bit that is set and woken for every
//! waiter. A waiter reads the epoch, checks the bits of the processes it waits for, and then
//! sleeps on its own word *and* the epoch (`futex_waitv`), so a death that it did not see yet
//! wakes it at once.
//!
//! The master makes the board once, before it forks anyone, and every worker inherits the
//! mapping (it is anonymous shared memory: no name, nothing in `/dev/shm`, nothing to clean
//! after a crash). Only the master sets bits; it does so when it has reaped a process, so a bit
//! is never set for a process that still runs. Process ids are never reused within a program,
//! so a set bit never goes stale.
//!
//! ```
//! use netmcore_ipc::death_board::{DeathBoard, MASTER_TAG, tag_of};
//! use netmcore_resources::ProcessId;
//!
//! let board = DeathBoard::create()?;
//! let tag = tag_of(ProcessId(41)).expect("a small id has a tag");
//! let epoch = board.epoch().load(std::sync::atomic::Ordering::Acquire);
//! assert!(!board.is_dead(tag));
//! board.mark_dead(ProcessId(41));
//! assert!(board.is_dead(tag));
//! assert_ne!(board.epoch().load(std::sync::atomic::Ordering::Acquire), epoch);
//! assert!(!board.is_dead(MASTER_TAG), "the master never ends while the board is in use");
//! # Ok::<(), netmcore_ipc::Error>(())
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use netmcore_resources::ProcessId;

use crate::Result;
use crate::memfd::Memfd;
use crate::shm::SharedMemory;

/// The tag of nobody: a free lock, an empty slot.
pub const NO_TAG: u32 = 0;

/// The tag of the master, and of the program before `startup` (which becomes the master). It
/// is never dead: when the master ends, every process that could wait ends with it.
pub const MASTER_TAG: u32 = (1 << TAG_BITS) - 1;

/// Tags use the low 30 bits of a word, so that structures may keep two flags beside a tag in
/// one 32-bit futex word.
pub const TAG_BITS: u32 = 30;

/// The tag of process `pid`: `pid + 1`, for ids below `MASTER_TAG - 1`; `None` beyond (a
/// program would have to start about a billion processes to get there).
#[must_use]
pub fn tag_of(pid: ProcessId) -> Option<u32> {
    u32::try_from(pid.0)
        .ok()
        .filter(|&n| n < MASTER_TAG - 1)
        .map(|n| n + 1)
}

/// The process a tag names: `None` for [`NO_TAG`], [`MASTER_TAG`] and anything that is not a
/// tag (a word read from shared memory is untrusted).
#[must_use]
pub fn pid_of(tag: u32) -> Option<ProcessId> {
    (tag != NO_TAG && tag < MASTER_TAG).then(|| ProcessId(u64::from(tag - 1)))
}

/// The bytes before the bitmap: the epoch word, the count of issued process ids, padding to a
/// cache line.
const HEADER: usize = 64;

/// Where the count of issued process ids lies: one more than the highest id the master has
/// started a process with.
const ISSUED: usize = 8;

/// The bitmap covers every tag below [`MASTER_TAG`]: 2^30 bits, 128 MiB of address space, of
/// which only the pages of tags in use are ever touched (a page covers 32,768 processes).
const BITMAP_BYTES: usize = 1 << (TAG_BITS - 3);

/// The death board of a program; see the [module](self) docs.
///
/// It is a reference to a mapping kept for the life of the process, so it is `Copy`, and a
/// copy in a forked child refers to the same board.
#[derive(Clone, Copy)]
pub struct DeathBoard {
    memory: SharedMemory,
}

impl DeathBoard {
    /// `memfd_create` and `mmap(MAP_SHARED)` of 128 MiB + 64 bytes of zeroes, kept mapped for
    /// the life of the process (pages are allocated only where bits are set or read). Processes
    /// forked afterwards share it.
    ///
    /// # Errors
    ///
    /// [`Error::Os`](crate::Error::Os) naming `memfd_create`, `ftruncate` or `mmap`.
    pub fn create() -> Result<DeathBoard> {
        let memfd = Memfd::create("netmcore-death-board", HEADER + BITMAP_BYTES)?;
        let memory = memfd.map_shared()?.leak();
        Ok(DeathBoard { memory })
    }

    /// The epoch: a futex word bumped (and woken) after each death. Read it before checking
    /// [`is_dead`](DeathBoard::is_dead), and sleep only while it still holds that value.
    #[must_use]
    #[inline]
    pub fn epoch(&self) -> &'static AtomicU32 {
        self.memory
            .atomic_u32_at(0)
            .expect("the board's first word is in its page-aligned mapping")
    }

    /// The count of issued process ids.
    fn issued(&self) -> &'static AtomicU64 {
        self.memory
            .atomic_u64_at(ISSUED)
            .expect("the board's second word is in its page-aligned mapping")
    }

    /// Records that process `pid` exists (the master calls it before the process runs), so
    /// that its tag is one [`was_issued`](DeathBoard::was_issued) knows.
    pub fn issue(&self, pid: ProcessId) {
        self.issued()
            .fetch_max(pid.0.saturating_add(1), Ordering::Release);
    }

    /// Whether `tag` names a process the master has started (alive or not). A word read from
    /// shared memory that names a process that never existed is corrupt: nobody holds what it
    /// says it holds.
    #[must_use]
    pub fn was_issued(&self, tag: u32) -> bool {
        pid_of(tag).is_some_and(|pid| pid.0 < self.issued().load(Ordering::Acquire))
    }

    /// The bitmap word holding the bit of `tag`, and the bit.
    fn bit(&self, tag: u32) -> Option<(&'static AtomicU64, u64)> {
        if tag == NO_TAG || tag >= MASTER_TAG {
            return None;
        }
        let index = usize::try_from(tag).ok()?;
        let word = self.memory.atomic_u64_at(HEADER + index / 64 * 8)?;
        Some((word, 1 << (index % 64)))
    }

    /// Whether the process of `tag` has ended. Never true for [`NO_TAG`], [`MASTER_TAG`] or a
    /// word that is no tag.
    #[must_use]
    #[inline]
    pub fn is_dead(&self, tag: u32) -> bool {
        self.bit(tag)
            .is_some_and(|(word, bit)| word.load(Ordering::Acquire) & bit != 0)
    }

    /// Records that process `pid` has ended and wakes every process sleeping on the epoch.
    /// The master calls it once it has reaped the process; the bit is set before the epoch
    /// moves, so a waiter that sees the new epoch sees the bit.
    pub fn mark_dead(&self, pid: ProcessId) {
        let Some((word, bit)) = tag_of(pid).and_then(|tag| self.bit(tag)) else {
            return;
        };
        word.fetch_or(bit, Ordering::Release);
        let epoch = self.epoch();
        epoch.fetch_add(1, Ordering::Release);
        // A failed wake leaves sleepers to their own timeouts; nothing else can be done here.
        let _ = crate::sys::futex::wake(epoch, u32::MAX);
    }
}

impl fmt::Debug for DeathBoard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeathBoard")
            .field("epoch", &self.epoch().load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn tags_round_trip_and_reject_what_is_no_tag() {
        assert_eq!(tag_of(ProcessId(0)), Some(1));
        assert_eq!(pid_of(1), Some(ProcessId(0)));
        let last = ProcessId(u64::from(MASTER_TAG) - 2);
        assert_eq!(tag_of(last), Some(MASTER_TAG - 1));
        assert_eq!(pid_of(MASTER_TAG - 1), Some(last));
        assert_eq!(tag_of(ProcessId(u64::from(MASTER_TAG) - 1)), None);
        assert_eq!(tag_of(ProcessId(u64::MAX)), None);
        assert_eq!(pid_of(NO_TAG), None);
        assert_eq!(pid_of(MASTER_TAG), None);
        assert_eq!(pid_of(u32::MAX), None);
    }

    #[test]
    fn deaths_set_bits_and_move_the_epoch() {
        let board = DeathBoard::create().unwrap();
        let before = board.epoch().load(Ordering::Acquire);
        for pid in [0, 63, 64, 65, 32_767, 32_768, u64::from(MASTER_TAG) - 2] {
            let tag = tag_of(ProcessId(pid)).unwrap();
            assert!(!board.is_dead(tag), "{pid}");
            board.mark_dead(ProcessId(pid));
            assert!(board.is_dead(tag), "{pid}");
        }
        assert_eq!(board.epoch().load(Ordering::Acquire), before + 7);
        assert!(!board.is_dead(tag_of(ProcessId(1)).unwrap()));
        assert!(!board.is_dead(NO_TAG));
        assert!(!board.is_dead(MASTER_TAG));
        assert!(!board.is_dead(u32::MAX));
        board.mark_dead(ProcessId(u64::MAX));
        assert_eq!(board.epoch().load(Ordering::Acquire), before + 7);
        assert!(!board.was_issued(tag_of(ProcessId(3)).unwrap()));
        board.issue(ProcessId(3));
        assert!(board.was_issued(tag_of(ProcessId(3)).unwrap()));
        assert!(board.was_issued(tag_of(ProcessId(0)).unwrap()));
        assert!(!board.was_issued(tag_of(ProcessId(4)).unwrap()));
        assert!(!board.was_issued(NO_TAG) && !board.was_issued(MASTER_TAG));
        board.issue(ProcessId(1));
        assert!(
            board.was_issued(tag_of(ProcessId(3)).unwrap()),
            "the count only grows"
        );
    }

    #[test]
    fn a_sleeper_on_the_epoch_is_woken_by_a_death() {
        let board = DeathBoard::create().unwrap();
        let epoch = board.epoch().load(Ordering::Acquire);
        // Another thread stands in for another process: the memory is shared either way, and
        // the multi-process case is covered by the master's tests.
        let waiter = std::thread::spawn(move || {
            while board.epoch().load(Ordering::Acquire) == epoch {
                let _ = crate::sys::futex::wait(board.epoch(), epoch, None);
            }
            board.is_dead(tag_of(ProcessId(9)).unwrap())
        });
        board.mark_dead(ProcessId(9));
        assert!(waiter.join().unwrap());
    }

    #[test]
    fn a_death_wakes_every_sleeper_on_the_epoch() {
        let board = DeathBoard::create().unwrap();
        let epoch = board.epoch().load(Ordering::Acquire);
        // Each thread sleeps once, with a long timeout: a wake that reached only one of them
        // (a count the kernel read as -1) would leave the others to time out.
        let sleepers: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    crate::sys::futex::wait(board.epoch(), epoch, Some(Duration::from_secs(60)))
                        .unwrap()
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        board.mark_dead(ProcessId(5));
        for sleeper in sleepers {
            assert_eq!(sleeper.join().unwrap(), crate::sys::futex::Woke::Early);
        }
    }
}
