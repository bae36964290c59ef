//! The program's death board (see [`netmcore_ipc::death_board`]): made by the first `startup`,
//! before the master forks anyone, kept for the life of the program (process ids keep counting
//! from one run to the next, so its bits stay true), and inherited by every worker. The master
//! marks a process dead once it has reaped it.

use std::sync::OnceLock;

use std::sync::atomic::{AtomicU32, Ordering};

use netmcore_ipc::death_board::{DeathBoard, MASTER_TAG, NO_TAG, tag_of};
use netmcore_resources::ProcessId;

use crate::{Error, Result, worker};

/// The board, once the first `startup` made it. A worker has the master's copy: the value was
/// set before the fork and the memory it points to is shared.
static BOARD: OnceLock<DeathBoard> = OnceLock::new();

/// The board, made now if this is the first `startup` of the program.
pub(crate) fn make() -> Result<DeathBoard> {
    if let Some(board) = BOARD.get() {
        return Ok(*board);
    }
    let board = DeathBoard::create().map_err(|e| crate::master::from_ipc("startup", e))?;
    Ok(*BOARD.get_or_init(|| board))
}

/// The program's death board: how a process waiting in a structure in shared memory learns
/// that a peer ended. `None` before the first `startup` (when the program is alone, so nobody
/// it waits for can end without it).
///
/// ```
/// use netmcore_master::death_board;
///
/// // Before startup there is nobody else to wait for.
/// assert!(death_board().is_none());
/// ```
#[must_use]
#[inline]
pub fn death_board() -> Option<DeathBoard> {
    BOARD.get().copied()
}

/// The tag of this process: [`MASTER_TAG`] until the process becomes a worker, whose
/// `install` sets it once, right after the fork (a worker never becomes another one). An
/// atomic, so that a lock in shared memory knows who takes it without a system call.
static OWN_TAG: AtomicU32 = AtomicU32::new(MASTER_TAG);

/// Records that this process is the worker of process `pid` (0, no tag, beyond the tags).
pub(crate) fn set_own_tag(pid: ProcessId) {
    OWN_TAG.store(tag_of(pid).unwrap_or(NO_TAG), Ordering::Relaxed);
}

/// The tag that names the calling process in shared memory (see
/// [`netmcore_ipc::death_board::tag_of`]): its process id plus one in a worker;
/// [`MASTER_TAG`] in the master and before `startup`, whose program becomes the master and
/// never ends while a worker could wait for it. One atomic load.
///
/// # Errors
///
/// [`Error::UnknownProcess`] for a worker whose id is beyond the tags (about a billion
/// processes into the program).
#[inline]
pub fn self_tag() -> Result<u32> {
    match OWN_TAG.load(Ordering::Relaxed) {
        NO_TAG => Err(Error::UnknownProcess(worker::self_pid()?)),
        tag => Ok(tag),
    }
}
