//! The system calls of this crate that the safe wrappers cannot express: `fork`, closing the
//! descriptors inherited by the guardian, and revoking inherited mappings in a worker.
//!
//! # Safety
//!
//! `fork` duplicates only the calling thread. The child of a process that has other threads
//! inherits their locks in whatever state they were, and may only call async-signal-safe
//! functions until it execs. netmcore forks only in the master, which is single-threaded by
//! design (DESIGN §2: it never starts a thread, and `startup` warns when the program already
//! has other threads), and clones (`clone3` without `CLONE_VM`: a fork) only in the zygote, a
//! fork of the master that never starts a thread either. The child never returns into the caller's frames in a way that could
//! observe a half-updated state: [`fork`] is called between complete updates of the master's
//! state, and the child leaves through `std::process::exit`.
//!
//! [`close_in_child`] closes, in a worker child right after the fork, the descriptors of
//! values of the master that the child then forgets (never drops, never uses): closing by
//! number spares the child the work of dropping the master's tables, whose frees would write
//! to (and so copy) pages it shares with the master.
//!
//! [`close_fds_in_guardian`] closes descriptors that values of the master own; it is called
//! only in the guardian child, which never returns into the frames holding those values and
//! never drops them (it exits). [`revoke_in_worker`] replaces a shared mapping by an
//! inaccessible reservation in a worker child before its body runs, when no view of it exists.
//!
//! [`clone_sibling`] is the zygote's fork of a warm worker (`clone3(CLONE_PARENT)`), with
//! [`thread_words`], what it restores in the child of the C library's view of the thread.
//!
//! [`advise_huge_pages`] asks for transparent huge pages for the spare capacity of a vector
//! that this process owns and nothing reads yet (the hook of `netmcore_encap`'s large buffers).

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use netmcore_ipc::shm::SharedMemory;
use rustix::io::Errno;
use rustix::process::Pid;

/// Asks the kernel to back the whole pages of `buffer`'s spare capacity with transparent huge
/// pages (`madvise(MADV_HUGEPAGE)`), so that filling it takes a page fault every 2 MiB rather
/// than every 4 KiB: a fresh 64 MiB buffer filled by `memcpy` took 41 ms with 4 KiB pages and
/// 8 ms with huge pages on the reference machine (C, medians of 5). Best effort: a kernel
/// without THP, or with them off, refuses or ignores the advice, which changes nothing else.
pub(crate) fn advise_huge_pages(buffer: &mut Vec<u8>) {
    let spare = buffer.spare_capacity_mut();
    let start = spare.as_mut_ptr() as usize;
    let end = start.saturating_add(spare.len());
    let page = rustix::param::page_size();
    let Some(first) = start.checked_next_multiple_of(page) else {
        return;
    };
    let last = end - end % page;
    if last <= first {
        return;
    }
    // SAFETY: `[first, last)` lies inside the spare capacity of `buffer`: memory of this
    // process's allocator, owned by the vector, which holds no value there and which nothing
    // reads while this runs (`&mut`). `MADV_HUGEPAGE` only changes how the kernel backs those
    // pages (their contents stay, and are unset anyway); it unmaps and invalidates nothing.
    let _ = unsafe {
        rustix::mm::madvise(
            first as *mut std::ffi::c_void,
            last - first,
            rustix::mm::Advice::LinuxHugepage,
        )
    };
}

/// What [`fork`] returned in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forked {
    /// This is the parent; the child has this pid.
    Parent(Pid),
    /// This is the child.
    Child,
}

/// `fork()`: a copy of the calling process.
///
/// The caller must be the master (see the module's safety contract): single-threaded by
/// design, and not in the middle of an update of its state.
///
/// # Errors
///
/// The `errno` of `fork` (`EAGAIN` when the process limit is reached, `ENOMEM`).
pub(crate) fn fork() -> Result<Forked, Errno> {
    // SAFETY: only the master calls this, and the master is single-threaded by design (the
    // module's safety contract); a program that started threads anyway was warned by
    // `startup`. The child leaves through `std::process::exit` after running one body.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { child }) => Ok(Forked::Parent(
            Pid::from_raw(child.as_raw()).ok_or(Errno::SRCH)?,
        )),
        Ok(nix::unistd::ForkResult::Child) => Ok(Forked::Child),
        Err(e) => Err(Errno::from_raw_os_error(e as i32)),
    }
}

/// What [`clone_sibling`] restores in its child of the calling thread's C library state,
/// read once, in the zygote, before its first clone. It stays with the thread that read it:
/// neither `Send` nor `Clone`, so no other thread can clone with it.
#[derive(Debug)]
pub(crate) struct ThreadWords {
    /// The address of the C library's copy of the thread id (`pthread`'s `tid` field):
    /// what `set_tid_address` was given when the thread started.
    tid_address: u64,
    /// The thread's robust-futex list head and its length, as registered with the kernel.
    robust_head: usize,
    robust_len: usize,
    /// Not `Send`: the words are this thread's.
    _thread: std::marker::PhantomData<*const ()>,
}

/// Reads the calling thread's [`ThreadWords`]: `prctl(PR_GET_TID_ADDRESS)` and
/// `get_robust_list`.
///
/// # Errors
///
/// The `errno` of either call: `EINVAL` from a kernel built without
/// `CONFIG_CHECKPOINT_RESTORE` (no `PR_GET_TID_ADDRESS`), `ENOSYS` under a filter that
/// forbids them, and `ENOSYS` with a C library other than glibc, whose thread-id word is not
/// where `PR_GET_TID_ADDRESS` points (musl's points to a lock). Without them a clone's child
/// would keep its parent's thread id in the C library, so the caller then forks the usual
/// way.
pub(crate) fn thread_words() -> Result<ThreadWords, Errno> {
    if !cfg!(target_env = "gnu") {
        return Err(Errno::NOSYS);
    }
    let mut tid_address: *mut libc::c_int = std::ptr::null_mut();
    // SAFETY: `PR_GET_TID_ADDRESS` writes one pointer to the address passed, which is that of
    // a live local of that type.
    let rc = unsafe {
        libc::prctl(
            libc::PR_GET_TID_ADDRESS,
            &raw mut tid_address,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if rc != 0 {
        return Err(last_errno());
    }
    if tid_address.is_null() {
        return Err(Errno::INVAL);
    }
    let mut robust_head: *mut libc::c_void = std::ptr::null_mut();
    let mut robust_len: libc::size_t = 0;
    // SAFETY: `get_robust_list(0, …)` reads the calling thread's registration and writes one
    // pointer and one `size_t` to the two addresses passed, those of live locals of these
    // types.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            0 as libc::c_int,
            &raw mut robust_head,
            &raw mut robust_len,
        )
    };
    if rc != 0 {
        return Err(last_errno());
    }
    Ok(ThreadWords {
        tid_address: tid_address as u64,
        robust_head: robust_head as usize,
        robust_len,
        _thread: std::marker::PhantomData,
    })
}

/// What [`clone_sibling`] returned in this process.
#[derive(Debug)]
pub(crate) enum Cloned {
    /// This is the caller; the child has this pid, and this pidfd refers to it.
    Parent(Pid, OwnedFd),
    /// This is the child.
    Child,
}

/// `clone3(CLONE_PARENT | CLONE_PIDFD)`: a copy of the calling process, like [`fork`], whose
/// parent is the caller's parent (the master, when the zygote calls it), so that the master
/// supervises it as its own child: pidfd, `waitid`, `PR_SET_PDEATHSIG`. The caller gets a
/// pidfd of the child, to pass on to the master.
///
/// The child gets what the C library's `fork` gives its child of the thread's state: the
/// kernel writes the child's thread id into the library's copy (`CLONE_CHILD_SETTID`, at the
/// address in `words`) and clears it at exit (`CLONE_CHILD_CLEARTID`), and the child
/// registers the (copied, empty) robust-futex list again, which a new process starts
/// without.
///
/// The caller must be the zygote (see the module's safety contract for [`fork`]): a
/// single-threaded process between complete updates of its state, whose `words` were read in
/// this thread (the type keeps them there), holding no robust lock. `atfork` handlers do not
/// run: what they would reset in a child stays as it is in the caller.
///
/// # Errors
///
/// The `errno` of `clone3`: `ENOSYS` on kernels before 5.3 or under filters that forbid it,
/// `EAGAIN` when the process limit is reached, `ENOMEM`.
pub(crate) fn clone_sibling(words: &ThreadWords) -> Result<Cloned, Errno> {
    let flags = libc::CLONE_PARENT
        | libc::CLONE_PIDFD
        | libc::CLONE_CHILD_SETTID
        | libc::CLONE_CHILD_CLEARTID;
    let mut pidfd: libc::c_int = -1;
    let mut args = libc::clone_args {
        flags: u64::try_from(flags).map_err(|_| Errno::INVAL)?,
        pidfd: &raw mut pidfd as u64,
        child_tid: words.tid_address,
        parent_tid: 0,
        // With CLONE_PARENT the child's exit signal is the caller's; clone3 wants 0 here.
        exit_signal: 0,
        // No stack: the child runs on its copy of the caller's, like a fork's child.
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: 0,
    };
    // SAFETY: a `clone3` without `CLONE_VM`, `CLONE_THREAD` or a new stack is a fork: the
    // child gets its own copy of the address space and returns here on its copy of this
    // stack. The caller is single-threaded (the function's contract), so no lock of another
    // thread is copied held. `args` is a live, initialized `clone_args` of the size passed;
    // `child_tid` is the C library's thread-id word of this thread (read by `thread_words`),
    // valid in the child's copy too; `pidfd` is a live local the kernel writes the new
    // descriptor to.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &raw mut args,
            std::mem::size_of::<libc::clone_args>(),
        )
    };
    match rc {
        -1 => Err(last_errno()),
        0 => {
            // SAFETY: registers the robust-list head the C library keeps for this thread, at
            // the same address in this copy, which the kernel dropped for the new process; the
            // list is empty (the caller held no robust lock). On failure only a robust
            // pthread mutex held at this process's death would not be marked; netmcore's
            // own locks do not use them.
            let _ = unsafe {
                libc::syscall(
                    libc::SYS_set_robust_list,
                    words.robust_head,
                    words.robust_len,
                )
            };
            Ok(Cloned::Child)
        }
        child => {
            if pidfd < 0 {
                return Err(Errno::BADF);
            }
            // SAFETY: with `CLONE_PIDFD` the kernel stored a new descriptor, owned by nobody
            // else, in `pidfd` (checked valid above).
            let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
            let unix = i32::try_from(child)
                .ok()
                .filter(|&raw| raw > 0)
                .and_then(Pid::from_raw)
                .ok_or(Errno::SRCH)?;
            Ok(Cloned::Parent(unix, pidfd))
        }
    }
}

/// The calling thread's `errno`, after a libc call that failed.
fn last_errno() -> Errno {
    match std::io::Error::last_os_error().raw_os_error() {
        Some(raw @ 1..4096) => Errno::from_raw_os_error(raw),
        _ => Errno::IO,
    }
}

/// Closes every descriptor of this process except those in `keep`: those listed in
/// `/proc/self/fd` (or, without `/proc`, every number below the descriptor limit).
///
/// The caller must be the guardian, right after it was forked from the master: a process
/// that never returns into the frames it was forked from and never drops or uses a value
/// that owned one of the closed descriptors (it leaves through `std::process::exit`). Only
/// descriptors it opens afterwards are used.
pub(crate) fn close_fds_in_guardian(keep: &[RawFd]) {
    let fds = open_fds().unwrap_or_else(|| {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(1024)
            .min(65_536);
        (0..RawFd::try_from(limit).unwrap_or(1024)).collect()
    });
    for fd in fds.into_iter().filter(|fd| !keep.contains(fd)) {
        // SAFETY: by this function's contract the calling process is the freshly forked
        // guardian, which never again uses or drops the value that owned `fd` in the master
        // (it never returns into those frames and leaves through `exit`), so closing the
        // number leaves no owner behind that could close or use a reused number.
        unsafe { rustix::io::close(fd) };
    }
}

/// Closes `fds` in a child right after the fork.
///
/// The caller must be a worker child that forgets (`mem::forget`) every value owning one of
/// `fds` right after this call, without using it: no owner is left that could close or use
/// a number the child reuses later.
pub(crate) fn close_in_child(fds: &[RawFd]) {
    for &fd in fds {
        // SAFETY: by this function's contract each owner of `fd` in this process is forgotten
        // right after, never used or dropped, so closing the number leaves no owner behind.
        unsafe { rustix::io::close(fd) };
    }
}

/// The open descriptors of this process, from `/proc/self/fd`, without the one used to
/// read that directory; `None` without `/proc`.
fn open_fds() -> Option<Vec<RawFd>> {
    use rustix::fs::{Mode, OFlags};
    let dir_fd = rustix::fs::open(
        "/proc/self/fd",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let own = std::os::fd::AsRawFd::as_raw_fd(&dir_fd);
    let mut dir = rustix::fs::Dir::new(dir_fd).ok()?;
    let mut fds = Vec::new();
    while let Some(entry) = dir.read() {
        let entry = entry.ok()?;
        if let Some(fd) = entry
            .file_name()
            .to_str()
            .ok()
            .and_then(|n| n.parse::<RawFd>().ok())
            && fd != own
        {
            fds.push(fd);
        }
    }
    Some(fds)
}

/// Removes a preallocated shared memory mapping that a worker did not inherit from the
/// worker: [`SharedMemory::revoke`] (the range becomes an inaccessible reservation).
///
/// The caller must be a worker child right after the fork, before its body runs: nothing in
/// the child has taken a view of the region, and netmcore hands the handle out again only for
/// the regions the worker inherited. A copy of the handle that user code kept in the master
/// (in a global, say) must not be used in a worker that did not inherit the region; the
/// facade documents this on `create_preallocated_shm`, and such a use faults (SIGSEGV)
/// instead of touching other memory.
///
/// # Errors
///
/// The error of `mmap`.
pub(crate) fn revoke_in_worker(memory: SharedMemory) -> Result<(), netmcore_ipc::Error> {
    // SAFETY: the function's contract: a freshly forked worker child holds no view of the
    // region, and the documented rule of the facade forbids using a stale copy of a handle
    // to a region the worker did not inherit.
    unsafe { memory.revoke() }
}

/// Unmaps, in the process that created it (before `startup` or the master), a preallocated
/// shared memory mapping whose object was destroyed: [`SharedMemory::unmap`].
///
/// The caller passes the handle of a mapping that was never handed out in this process (no
/// `get_resource` of it returned it here) and removes it from its table first: no view or
/// copy of it exists outside the table, and it is never used again. Workers forked earlier
/// hold their own copies of the address space, unaffected.
///
/// # Errors
///
/// The error of `munmap`.
pub(crate) fn unmap_in_master(memory: SharedMemory) -> Result<(), netmcore_ipc::Error> {
    // SAFETY: the function's contract: the handle was never handed out in this process and
    // its only copy left the table, so no view or copy of it is used afterwards.
    unsafe { memory.unmap() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_page_advice_leaves_a_buffer_empty_and_whole() {
        for capacity in [0, 100, 8 << 20] {
            let mut buffer = Vec::with_capacity(capacity);
            advise_huge_pages(&mut buffer);
            assert!(buffer.is_empty() && buffer.capacity() >= capacity);
            buffer.extend((0..capacity).map(|i| (i % 251) as u8));
            assert!(
                buffer
                    .iter()
                    .enumerate()
                    .all(|(i, &b)| b == (i % 251) as u8)
            );
        }
    }
}
