//! Forking for the multi-process tests.
//!
//! # Safety
//!
//! `fork` is only sound here because the callers are single-threaded: the test binaries using
//! this module have `harness = false`, and their cases fork from the main thread (or from a
//! child that is itself single-threaded). The child runs its closure and leaves with `exit`,
//! never returning into the caller's stack.

use nix::unistd::{ForkResult, fork};

/// Forks; the child runs `body` and exits with its return value (101 if it panics). Returns
/// the child's pid in the parent.
pub fn fork_child(body: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the callers are single-threaded (see the module's safety contract), so the child
    // owns a consistent copy of the whole address space, and it leaves through `exit` below.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Parent { child } => child.as_raw(),
        ForkResult::Child => {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(101);
            std::process::exit(code)
        }
    }
}

/// `write(fd, bytes)` on a descriptor known only by its number, e.g. found in `/proc/self/fd`
/// (a test that plays a misbehaving worker writes garbage to its own channel this way).
pub fn write_raw_fd(fd: i32, bytes: &[u8]) -> std::io::Result<usize> {
    // SAFETY: the caller names a descriptor that is open in this process for the whole call
    // (it was just listed in /proc/self/fd, and this single-threaded process closes nothing
    // meanwhile); the borrow does not outlive the call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    rustix::io::write(fd, bytes).map_err(Into::into)
}

/// Makes `clone3` fail with `ENOSYS` in this process and every process it forks from now on
/// (a seccomp filter, after `PR_SET_NO_NEW_PRIVS`), as an older kernel or a container's
/// filter does; every other system call is allowed. Only for a forked case, which the filter
/// outlives by nothing.
///
/// # Panics
///
/// If the kernel refuses the filter.
pub fn refuse_clone3() {
    // The classic BPF program: load the system call number, and answer `ENOSYS` for clone3.
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    let nr_offset = std::mem::offset_of!(libc::seccomp_data, nr) as u32;
    let clone3 = u32::try_from(libc::SYS_clone3).expect("a small number");
    let enosys = u32::try_from(libc::ENOSYS).expect("a small number");
    let mut program = [
        libc::sock_filter {
            code: LD_W_ABS,
            jt: 0,
            jf: 0,
            k: nr_offset,
        },
        libc::sock_filter {
            code: JEQ_K,
            jt: 0,
            jf: 1,
            k: clone3,
        },
        libc::sock_filter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ERRNO | enosys,
        },
        libc::sock_filter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ALLOW,
        },
    ];
    let filter = libc::sock_fprog {
        len: u16::try_from(program.len()).expect("four instructions"),
        filter: program.as_mut_ptr(),
    };
    // SAFETY: `PR_SET_NO_NEW_PRIVS` takes plain integers.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    assert_eq!(
        rc,
        0,
        "PR_SET_NO_NEW_PRIVS: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `filter` points to `program`, a valid classic BPF program of `len`
    // instructions, both alive for the call (the kernel copies the program).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0 as libc::c_uint,
            &raw const filter,
        )
    };
    assert_eq!(rc, 0, "seccomp: {}", std::io::Error::last_os_error());
}
