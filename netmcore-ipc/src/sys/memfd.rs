//! Anonymous shared memory files: `memfd_create`, sizing, sealing, positional I/O, mapping.
//!
//! # Safety
//!
//! Mapping a file is unsafe in general because the bytes behind a `&[u8]` may change, or
//! vanish (a truncation turns reads into `SIGBUS`), when another holder of the file writes or
//! truncates it. The two mapping functions here are safe because each establishes, itself,
//! that nobody else can do either:
//!
//! * [`map_sealed`] maps a memfd read-only only after it observed the seals `F_SEAL_WRITE` and
//!   `F_SEAL_SHRINK` on it, and a size that covers the mapping. Seals can be added but never
//!   removed, so once seen they hold for the life of the file: no process can write to it (by
//!   `write` or through any mapping) or make it shorter.
//! * [`create_filled`] maps read-write a memfd that it has just created and not yet handed to
//!   anyone: no other descriptor, mapping or process refers to it while the closure runs, so
//!   the `&mut [u8]` is exclusive. (Opening `/proc/<pid>/fd/<n>` from another process of the
//!   same user is outside Rust's model, as writing `/proc/self/mem` is.)
//!
//! Every other call goes through rustix's safe wrappers.

use std::os::fd::{BorrowedFd, OwnedFd};

use memmap2::{Mmap, MmapOptions};
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::io::Errno;

/// The seals that make a memfd immutable and safe to map: no writes, no size change, and no
/// further changes to the seals.
pub(crate) const IMMUTABLE: SealFlags = SealFlags::WRITE
    .union(SealFlags::SHRINK)
    .union(SealFlags::GROW)
    .union(SealFlags::SEAL);

/// `memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_NOEXEC_SEAL)`: a new, empty,
/// anonymous shared memory file that can be sealed. On kernels before 6.3, which do not know
/// `MFD_NOEXEC_SEAL`, the call is repeated without it.
///
/// The name is only a label (it shows in `/proc/<pid>/fd` as `/memfd:name`); nothing appears in
/// `/dev/shm` or anywhere else in the file system.
///
/// # Errors
///
/// The OS error of `memfd_create`: `EINVAL` for a name longer than 249 bytes or containing a
/// NUL byte, `EMFILE`, `ENOMEM`, ….
#[doc(alias = "memfd_create")]
pub(crate) fn create(name: &str) -> rustix::io::Result<OwnedFd> {
    let flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
    match rustix::fs::memfd_create(name, flags | MemfdFlags::NOEXEC_SEAL) {
        Err(Errno::INVAL) if !name.contains('\0') && name.len() <= 249 => {
            rustix::fs::memfd_create(name, flags)
        }
        other => other,
    }
}

/// `ftruncate(fd, len)`: sets the file's size; new bytes read as zero.
///
/// # Errors
///
/// The OS error of `ftruncate`: `EPERM` when a seal forbids the change, `EFBIG`, ….
#[doc(alias = "ftruncate")]
pub(crate) fn set_len(fd: BorrowedFd<'_>, len: u64) -> rustix::io::Result<()> {
    rustix::fs::ftruncate(fd, len)
}

/// `fstat(fd)`: the file's size in bytes.
///
/// # Errors
///
/// The OS error of `fstat`.
#[doc(alias = "fstat")]
pub(crate) fn len(fd: BorrowedFd<'_>) -> rustix::io::Result<u64> {
    Ok(u64::try_from(rustix::fs::fstat(fd)?.st_size).unwrap_or(0))
}

/// `fcntl(fd, F_GET_SEALS)`: the seals set on the file.
///
/// # Errors
///
/// `EINVAL` when the file is not a memfd (or another file that supports sealing).
#[doc(alias = "F_GET_SEALS")]
pub(crate) fn seals(fd: BorrowedFd<'_>) -> rustix::io::Result<SealFlags> {
    rustix::fs::fcntl_get_seals(fd)
}

/// `fcntl(fd, F_ADD_SEALS, seals)`: adds seals to the file.
///
/// # Errors
///
/// `EBUSY` when `F_SEAL_WRITE` is asked for while a writable shared mapping exists, `EPERM`
/// when the file is already sealed with `F_SEAL_SEAL`, `EINVAL` when it cannot be sealed.
#[doc(alias = "F_ADD_SEALS")]
pub(crate) fn add_seals(fd: BorrowedFd<'_>, seals: SealFlags) -> rustix::io::Result<()> {
    rustix::fs::fcntl_add_seals(fd, seals)
}

/// `pwrite(fd, bytes, offset)`, repeated until every byte is written and on `EINTR`.
///
/// # Errors
///
/// The OS error of `pwrite`: `EPERM` on a file sealed against writing or growing, `ENOSPC`, ….
#[doc(alias = "pwrite")]
pub(crate) fn write_all_at(
    fd: BorrowedFd<'_>,
    mut bytes: &[u8],
    mut offset: u64,
) -> rustix::io::Result<()> {
    while !bytes.is_empty() {
        match rustix::io::pwrite(fd, bytes, offset) {
            Ok(0) => return Err(Errno::NOSPC),
            Ok(n) => {
                bytes = &bytes[n..];
                offset += n as u64;
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `pread(fd, buf, offset)`, repeated on `EINTR`: reads up to `buf.len()` bytes; fewer (0 at
/// the end) when the file ends first.
///
/// # Errors
///
/// The OS error of `pread`.
#[doc(alias = "pread")]
pub(crate) fn read_at(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    offset: u64,
) -> rustix::io::Result<usize> {
    loop {
        match rustix::io::pread(fd, &mut *buf, offset) {
            Err(Errno::INTR) => {}
            other => return other,
        }
    }
}

/// Why [`map_sealed`] refused or failed.
#[derive(Debug)]
pub(crate) enum MapError {
    /// `F_GET_SEALS`, `fstat` or `mmap` failed.
    Os(&'static str, Errno),
    /// The file lacks `F_SEAL_WRITE` or `F_SEAL_SHRINK`.
    NotSealed,
    /// The file is shorter than the mapping asked for.
    TooShort { len: u64, want: u64 },
}

/// `fcntl(F_GET_SEALS)`, `fstat`, then `mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0)`: maps
/// the first `len` bytes of a memfd read-only, after checking that it is sealed against writing
/// and shrinking and at least `len` bytes long.
///
/// # Errors
///
/// [`MapError::NotSealed`] or [`MapError::TooShort`] when the checks fail; the OS error of the
/// failing call otherwise (`EINVAL` from `F_GET_SEALS` when the file is no memfd).
#[doc(alias = "mmap")]
pub(crate) fn map_sealed(fd: BorrowedFd<'_>, len: usize) -> Result<Mmap, MapError> {
    let seals = seals(fd).map_err(|e| MapError::Os("fcntl(F_GET_SEALS)", e))?;
    if !seals.contains(SealFlags::WRITE | SealFlags::SHRINK) {
        return Err(MapError::NotSealed);
    }
    let size = self::len(fd).map_err(|e| MapError::Os("fstat", e))?;
    if size < len as u64 {
        return Err(MapError::TooShort {
            len: size,
            want: len as u64,
        });
    }
    // No `MAP_POPULATE`: the master maps a large `Start` only to read its head and fork with
    // it, and a fork does not copy the page tables of a shared file mapping, so populating
    // them cost the master about 7 ms per 64 MiB for nothing (`arg_64mib_mb_s` 883–965 →
    // 1,087–1,159 MB/s without it, interleaved quick runs); a reader of every byte faults them
    // in 16 pages at a time.
    let mut options = MmapOptions::new();
    options.len(len);
    // SAFETY: the file carries F_SEAL_WRITE and F_SEAL_SHRINK (checked above; seals are never
    // removed) and is at least `len` bytes long, so the mapped bytes can neither change nor
    // disappear while the mapping lives (see the module's safety contract).
    let map = unsafe { options.map(&fd) };
    map.map_err(|e| MapError::Os("mmap", Errno::from_io_error(&e).unwrap_or(Errno::IO)))
}

/// Creates a memfd named `name` of `len` bytes with [`create`] and `ftruncate`, maps it
/// read-write (`mmap(PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE)`), lets `fill` write
/// into it, and unmaps it before returning the file (unsealed) with what `fill` returned.
///
/// # Errors
///
/// The name and OS error of the failing call.
#[doc(alias = "mmap")]
pub(crate) fn create_filled<R>(
    name: &str,
    len: usize,
    fill: impl FnOnce(&mut [u8]) -> R,
) -> Result<(OwnedFd, R), (&'static str, Errno)> {
    let fd = create(name).map_err(|e| ("memfd_create", e))?;
    set_len(std::os::fd::AsFd::as_fd(&fd), len as u64).map_err(|e| ("ftruncate", e))?;
    if len == 0 {
        let r = fill(&mut []);
        return Ok((fd, r));
    }
    let mut options = MmapOptions::new();
    options.len(len).populate();
    // SAFETY: `fd` was created by this function and has not been handed to anyone: no other
    // descriptor, mapping or process refers to the file, so this mapping is the only way to
    // its bytes while `fill` runs, and its size was set to `len` just above (see the module's
    // safety contract).
    let map = unsafe { options.map_mut(&fd) };
    let mut map = map.map_err(|e| ("mmap", Errno::from_io_error(&e).unwrap_or(Errno::IO)))?;
    let r = fill(&mut map);
    drop(map);
    Ok((fd, r))
}
