//! POSIX shared memory: the `shm_open` family, `ftruncate`, `fstat`, `mmap` and `munmap`
//! through rustix, and the two types that hold a mapping, [`Mapping`] (owned, unmapped when
//! dropped) and [`SharedMemory`] (a `Copy` handle to a mapping that is never unmapped).
//!
//! # Safety
//!
//! The contract of this module, on which every `unsafe` block below relies:
//!
//! * A `Region { ptr, len }` describes either `len > 0` bytes that this module mapped with
//!   `mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)`, starting at the page-aligned
//!   `ptr`, or, when `len == 0`, no memory at all behind a dangling pointer aligned for every
//!   atomic type (a zero-length slice there is valid, and nothing is mapped or unmapped).
//! * The bytes of a region stay mapped while anything that can reach them exists. A
//!   [`Mapping`] owns its region, unmaps it in `Drop`, and every view it hands out borrows the
//!   `Mapping`. A [`SharedMemory`] is only made by [`Mapping::leak`], which consumes the
//!   `Mapping` without running its `Drop`: nothing in this crate ever unmaps that region, so
//!   views of it may live for `'static`. ([`SharedMemory::subrange`] only narrows a region.)
//!   The one exception is [`SharedMemory::revoke`], an `unsafe fn` for a freshly forked child
//!   that must not keep an inherited mapping: its caller promises that no view or copy of the
//!   handle is used afterwards, and the range is replaced by an inaccessible reservation
//!   (never unmapped outright), so nothing else can ever be mapped at those addresses and a
//!   stale access faults instead of reading other memory. The other exception is
//!   [`SharedMemory::unmap`], an `unsafe fn` whose caller promises the same (no view or copy
//!   of the handle is used afterwards) and which unmaps the region outright (`munmap`).
//! * The safe views are slices of atomic integers: every bit pattern is a valid integer, and
//!   atomics are interior-mutable and data-race free, so `&[AtomicU64]` over memory that other
//!   threads or processes change (atomically) at the same time is sound. A view is only made
//!   when the region's start is aligned for the type and its length is a multiple of its size.
//! * The byte views, `as_slice` and `as_mut_slice`, are `unsafe fn`: their callers promise
//!   that no one writes the bytes meanwhile (shared view) or that no one else accesses them at
//!   all (exclusive view), in this process and in every other process that maps the object.
//!   Mixing byte views and atomic views of the same bytes at the same time is excluded by
//!   those promises.

use std::fmt;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64};

use rustix::fs::Mode;
use rustix::mm::{MapFlags, ProtFlags};
use rustix::shm::OFlags;

use crate::{Error, Result};

/// `shm_open(name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600)`: creates a new shared memory
/// object of size 0, failing if one of that name exists.
///
/// # Errors
///
/// [`Error::Os`] naming `shm_open` and `name`, e.g. `EEXIST` when the name is taken or
/// `EACCES`.
#[doc(alias = "shm_open")]
pub(crate) fn shm_create(name: &str) -> Result<OwnedFd> {
    rustix::shm::open(
        name,
        OFlags::CREATE | OFlags::EXCL | OFlags::RDWR,
        Mode::RUSR | Mode::WUSR,
    )
    .map_err(|e| Error::os("shm_open", name, e))
}

/// `shm_open(name, O_RDWR | O_CLOEXEC, 0)`: opens an existing shared memory object for reading
/// and writing.
///
/// # Errors
///
/// [`Error::Os`] naming `shm_open` and `name`, e.g. `ENOENT` when there is no such object.
#[doc(alias = "shm_open")]
pub(crate) fn shm_open_existing(name: &str) -> Result<OwnedFd> {
    rustix::shm::open(name, OFlags::RDWR, Mode::empty()).map_err(|e| Error::os("shm_open", name, e))
}

/// `shm_unlink(name)`: removes the name of a shared memory object; the memory lives on until
/// the last descriptor and mapping of it are gone.
///
/// # Errors
///
/// [`Error::Os`] naming `shm_unlink` and `name`, e.g. `ENOENT`.
pub(crate) fn shm_unlink(name: &str) -> Result<()> {
    rustix::shm::unlink(name).map_err(|e| Error::os("shm_unlink", name, e))
}

/// `ftruncate(fd, len)`: sets the size of the object; new bytes read as zero.
///
/// # Errors
///
/// [`Error::Os`] naming `ftruncate` and `target`, e.g. `EINVAL` for a size the file system
/// refuses.
pub(crate) fn ftruncate(fd: BorrowedFd<'_>, len: u64, target: &str) -> Result<()> {
    rustix::fs::ftruncate(fd, len).map_err(|e| Error::os("ftruncate", target, e))
}

/// `fstat(fd)`: the size of the object in bytes (`st_size`).
///
/// # Errors
///
/// [`Error::Os`] naming `fstat` and `target`.
#[doc(alias = "fstat")]
pub(crate) fn fstat_size(fd: BorrowedFd<'_>, target: &str) -> Result<u64> {
    let stat = rustix::fs::fstat(fd).map_err(|e| Error::os("fstat", target, e))?;
    // A regular file or shm object never has a negative size.
    Ok(u64::try_from(stat.st_size).unwrap_or(0))
}

/// The address and length of the bytes of a mapping; see the module's safety contract.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Region {
    ptr: NonNull<u8>,
    len: usize,
}

/// Atomic integer types that a region can be viewed as.
///
/// Implemented only for the atomic integers of `std`, whose every bit pattern is valid and
/// whose size equals their alignment.
trait AtomicInt: Sized {}
impl AtomicInt for AtomicU8 {}
impl AtomicInt for AtomicU32 {}
impl AtomicInt for AtomicU64 {}

impl Region {
    fn empty() -> Region {
        // A non-null address, aligned for every atomic type, that is never dereferenced.
        Region {
            ptr: NonNull::<AtomicU64>::dangling().cast(),
            len: 0,
        }
    }

    /// The region as a slice of `T`, if its start is aligned for `T` and its length a
    /// multiple of `T`'s size.
    fn atomics<'a, T: AtomicInt>(self) -> Option<&'a [T]> {
        let size = std::mem::size_of::<T>();
        if !(self.ptr.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>())
            || !self.len.is_multiple_of(size)
        {
            return None;
        }
        // SAFETY: by the module contract the region's `len` bytes are mapped (or `len` is 0)
        // for as long as the caller's lifetime `'a` (the callers tie it to a borrow of the
        // owning `Mapping`, or to `'static` for a never-unmapped `SharedMemory`). The start is
        // aligned for `T` and `len / size` elements exactly cover it (checked above). `T` is
        // an atomic integer (sealed trait), valid for any bit pattern and interior-mutable,
        // so shared references to it may alias concurrent atomic writers.
        Some(unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<T>(), self.len / size) })
    }

    /// The `T` at byte `offset`, if it lies inside the region and is aligned.
    fn atomic_at<'a, T: AtomicInt>(self, offset: usize) -> Option<&'a T> {
        let size = std::mem::size_of::<T>();
        let end = offset.checked_add(size)?;
        if end > self.len {
            return None;
        }
        let sub = Region {
            ptr: self.ptr.map_addr(|a| a.saturating_add(offset)),
            len: size,
        };
        sub.atomics::<T>().and_then(|s| s.first())
    }

    fn subrange(self, offset: usize, len: usize) -> Option<Region> {
        let end = offset.checked_add(len)?;
        if end > self.len {
            return None;
        }
        if len == 0 {
            return Some(Region::empty());
        }
        // The new start lies inside the mapping (offset < end <= self.len), so it is non-null.
        Some(Region {
            ptr: self.ptr.map_addr(|a| a.saturating_add(offset)),
            len,
        })
    }

    /// # Safety
    ///
    /// No one (in any process) writes the region's bytes while the slice lives, and the
    /// region stays mapped for `'a`.
    unsafe fn bytes<'a>(self) -> &'a [u8] {
        // SAFETY: the bytes are mapped (or `len == 0` with an aligned non-null pointer) for
        // `'a`, any bit pattern is a valid `u8`, and the caller promises no concurrent writer.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// # Safety
    ///
    /// No one else (in any process) reads or writes the region's bytes while the slice lives,
    /// and the region stays mapped for `'a`.
    unsafe fn bytes_mut<'a>(self) -> &'a mut [u8] {
        // SAFETY: the bytes are mapped read-write (or `len == 0`) for `'a`, any bit pattern is
        // a valid `u8`, and the caller promises exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:p}+{}", self.ptr, self.len)
    }
}

/// How [`ShmObject::map_with`](crate::shm::ShmObject::map_with) maps an object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MapOptions {
    /// Whether to pass `MAP_POPULATE`.
    pub populate: bool,
}

impl MapOptions {
    /// The default: a plain `MAP_SHARED` read-write mapping, faulted in lazily.
    #[must_use]
    pub fn new() -> MapOptions {
        MapOptions::default()
    }

    /// With `MAP_POPULATE`: the kernel faults every page in while mapping, so that later
    /// accesses take no page faults (the master maps preallocated memory like this before it
    /// forks, so that its workers inherit populated page tables).
    #[must_use]
    pub fn populate(mut self, populate: bool) -> MapOptions {
        self.populate = populate;
        self
    }
}

/// An owned shared (`MAP_SHARED`) read-write mapping of a shared memory object; unmapped when
/// dropped.
///
/// Other processes may map the same object, and children forked while the mapping exists
/// inherit it at the same address. Views of the bytes borrow the `Mapping`. To keep a mapping
/// for the rest of the process, turn it into a [`SharedMemory`] with [`Mapping::leak`].
///
/// # Example
///
/// ```
/// use std::sync::atomic::Ordering;
/// use netmcore_ipc::shm::ShmObject;
///
/// let name = format!("/netmcore-doc-mapping-{}", std::process::id());
/// let shm = ShmObject::create(&name)?;
/// shm.set_size(4096)?;
/// let mapping = shm.map()?;
/// shm.unlink()?;
/// let words = mapping.as_atomic_u64s().expect("a mapping is page-aligned");
/// words[0].store(42, Ordering::Relaxed);
/// assert_eq!(mapping.len(), 4096);
/// # Ok::<(), netmcore_ipc::Error>(())
/// ```
pub struct Mapping {
    region: Region,
}

// SAFETY: a `Mapping` is an address range of shared memory; it is not tied to the thread that
// mapped it, and unmapping it from another thread is allowed.
unsafe impl Send for Mapping {}
// SAFETY: `&Mapping` only hands out atomic views (data-race free) and `unsafe` byte views
// whose callers promise the absence of concurrent access.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// `mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED [| MAP_POPULATE], fd, 0)`: maps
    /// the first `len` bytes of the object `fd`. A `len` of 0 maps nothing and yields an empty
    /// mapping.
    ///
    /// `target` names the object in errors.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] naming `mmap` and `target`, e.g. `ENOMEM`, or `EACCES` for an object not
    /// opened read-write.
    #[doc(alias = "mmap")]
    pub(crate) fn map(
        fd: BorrowedFd<'_>,
        len: usize,
        options: MapOptions,
        target: &str,
    ) -> Result<Mapping> {
        if len == 0 {
            return Ok(Mapping {
                region: Region::empty(),
            });
        }
        let mut flags = MapFlags::SHARED;
        if options.populate {
            flags |= MapFlags::POPULATE;
        }
        // SAFETY: a null hint lets the kernel choose a fresh range, so no existing memory (and
        // no Rust reference to it) is affected. The returned range is owned by the `Mapping`
        // built below, which is the only thing that unmaps it.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                flags,
                fd,
                0,
            )
        }
        .map_err(|e| Error::os("mmap", target, e))?;
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| Error::os("mmap", target, std::io::ErrorKind::InvalidData))?;
        Ok(Mapping {
            region: Region { ptr, len },
        })
    }

    /// The first byte of the mapping.
    #[must_use]
    #[inline]
    pub fn as_ptr(&self) -> *mut u8 {
        self.region.ptr.as_ptr()
    }

    /// The length of the mapping in bytes.
    #[must_use]
    #[inline]
    pub fn len(&self) -> usize {
        self.region.len
    }

    /// Whether the mapping has no bytes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.region.len == 0
    }

    /// The bytes, shared.
    ///
    /// # Safety
    ///
    /// While the slice lives, no one writes these bytes: no thread of this process and no
    /// other process that maps the same object (through any view, atomic ones included).
    #[must_use]
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the region stays mapped while `self` is borrowed, and the caller promises
        // that no one writes it meanwhile.
        unsafe { self.region.bytes() }
    }

    /// The bytes, exclusively.
    ///
    /// # Safety
    ///
    /// While the slice lives, no one else reads or writes these bytes: no thread of this
    /// process and no other process that maps the same object, and no other view of this
    /// mapping is used.
    #[must_use]
    #[expect(
        clippy::mut_from_ref,
        reason = "shared memory: exclusivity is the caller's promise"
    )]
    pub unsafe fn as_mut_slice(&self) -> &mut [u8] {
        // SAFETY: the region stays mapped while `self` is borrowed, and the caller promises
        // exclusive access meanwhile.
        unsafe { self.region.bytes_mut() }
    }

    /// The bytes as atomic bytes.
    #[must_use]
    pub fn as_atomic_u8s(&self) -> &[AtomicU8] {
        self.region.atomics().unwrap_or_default()
    }

    /// The bytes as atomic 32-bit words, or `None` if the length is not a multiple of 4.
    #[must_use]
    pub fn as_atomic_u32s(&self) -> Option<&[AtomicU32]> {
        self.region.atomics()
    }

    /// The bytes as atomic 64-bit words, or `None` if the length is not a multiple of 8.
    #[must_use]
    pub fn as_atomic_u64s(&self) -> Option<&[AtomicU64]> {
        self.region.atomics()
    }

    /// Keeps the mapping for the rest of the process and returns a copyable handle to it.
    ///
    /// The memory is never unmapped afterwards (it goes away with the process, or with
    /// `exec`), which is what makes [`SharedMemory`] safe to copy and to view for `'static`.
    #[must_use]
    pub fn leak(self) -> SharedMemory {
        let region = self.region;
        std::mem::forget(self);
        SharedMemory { region }
    }
}

impl Drop for Mapping {
    /// `munmap(ptr, len)`; an error (which would mean a bug) is logged, never raised.
    fn drop(&mut self) {
        if self.region.len == 0 {
            return;
        }
        let (ptr, len) = (self.region.ptr.as_ptr().cast(), self.region.len);
        // SAFETY: the region was mapped by `Mapping::map` and is owned by `self`, which is
        // being dropped: no view of it outlives this borrow, and no one else unmaps it.
        let result = unsafe { rustix::mm::munmap(ptr, len) };
        if let Err(e) = result {
            tracing::warn!(pid = std::process::id(), region = ?self.region, error = %e, "munmap failed");
        }
    }
}

impl fmt::Debug for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mapping")
            .field("ptr", &self.region.ptr)
            .field("len", &self.region.len)
            .finish()
    }
}

/// A shared memory mapping that stays valid for the life of the process.
///
/// A `SharedMemory` is a copyable handle (pointer and length) to a `MAP_SHARED` read-write
/// mapping that is never unmapped: it is made by [`Mapping::leak`] (or
/// [`ShmObject::map_shared`](crate::shm::ShmObject::map_shared)), so it can be stored in
/// globals, copied into closures, sent to other threads, and it is inherited, at the same
/// address, by every process forked after it was made. Each call to `leak` keeps its mapping
/// for good, so make these for long-lived regions, not in a loop.
///
/// Reading and writing the bytes needs care, because other processes may access them at the
/// same time: the byte views are `unsafe` with written contracts, and the atomic views are safe.
///
/// # Example
///
/// ```
/// use std::sync::atomic::Ordering;
/// use netmcore_ipc::shm::ShmObject;
///
/// let name = format!("/netmcore-doc-shared-{}", std::process::id());
/// let shm = ShmObject::create(&name)?;
/// shm.set_size(64)?;
/// let memory = shm.map_shared()?;
/// shm.unlink()?;
///
/// let counters = memory.as_atomic_u64s().expect("64 bytes at a page boundary");
/// counters[0].fetch_add(1, Ordering::Relaxed);
/// // SAFETY (of this example): nothing else accesses the memory while the slice lives.
/// let bytes = unsafe { memory.as_slice() };
/// assert_eq!(bytes[0], 1);
/// # Ok::<(), netmcore_ipc::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SharedMemory {
    region: Region,
}

// SAFETY: the region is never unmapped and is not tied to a thread.
unsafe impl Send for SharedMemory {}
// SAFETY: `&SharedMemory` only hands out atomic views (data-race free) and `unsafe` byte views
// whose callers promise the absence of concurrent access.
unsafe impl Sync for SharedMemory {}

impl SharedMemory {
    /// The first byte of the memory.
    #[must_use]
    #[inline]
    pub fn as_ptr(&self) -> *mut u8 {
        self.region.ptr.as_ptr()
    }

    /// The length in bytes.
    #[must_use]
    #[inline]
    pub fn len(&self) -> usize {
        self.region.len
    }

    /// Whether there are no bytes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.region.len == 0
    }

    /// The bytes, shared.
    ///
    /// # Safety
    ///
    /// While the slice lives, no one writes these bytes: no thread of this process and no
    /// other process that maps the same object (through any view, atomic ones included).
    #[must_use]
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the region is never unmapped (module contract), and the caller promises that
        // no one writes it meanwhile.
        unsafe { self.region.bytes() }
    }

    /// The bytes, exclusively.
    ///
    /// # Safety
    ///
    /// While the slice lives, no one else reads or writes these bytes: no thread of this
    /// process and no other process that maps the same object, through any view or copy of
    /// this handle.
    #[must_use]
    #[expect(
        clippy::mut_from_ref,
        reason = "shared memory: exclusivity is the caller's promise"
    )]
    pub unsafe fn as_mut_slice(&self) -> &mut [u8] {
        // SAFETY: the region is never unmapped (module contract), and the caller promises
        // exclusive access meanwhile.
        unsafe { self.region.bytes_mut() }
    }

    /// The bytes as atomic bytes.
    #[must_use]
    pub fn as_atomic_u8s(&self) -> &'static [AtomicU8] {
        self.region.atomics().unwrap_or_default()
    }

    /// The bytes as atomic 32-bit words, or `None` if the start is not 4-aligned or the length
    /// not a multiple of 4.
    #[must_use]
    pub fn as_atomic_u32s(&self) -> Option<&'static [AtomicU32]> {
        self.region.atomics()
    }

    /// The bytes as atomic 64-bit words, or `None` if the start is not 8-aligned or the length
    /// not a multiple of 8.
    #[must_use]
    pub fn as_atomic_u64s(&self) -> Option<&'static [AtomicU64]> {
        self.region.atomics()
    }

    /// The atomic 32-bit word at byte `offset`, or `None` if it is misaligned or does not fit.
    #[must_use]
    #[inline]
    pub fn atomic_u32_at(&self, offset: usize) -> Option<&'static AtomicU32> {
        self.region.atomic_at(offset)
    }

    /// The atomic 64-bit word at byte `offset`, or `None` if it is misaligned or does not fit.
    #[must_use]
    #[inline]
    pub fn atomic_u64_at(&self, offset: usize) -> Option<&'static AtomicU64> {
        self.region.atomic_at(offset)
    }

    /// Removes the mapping of the shared memory object from this process, keeping its address
    /// range reserved: `mmap(ptr, len, PROT_NONE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1,
    /// 0)`.
    ///
    /// Afterwards the object no longer appears in this process's mappings (`/proc/self/maps`)
    /// and this process no longer keeps its memory alive; the range stays reserved, so no later
    /// mapping can take those addresses, and an access through a stale copy of the handle is a
    /// segmentation fault rather than a read of unrelated memory. Other processes that map the
    /// object are unaffected. This is meant for a process forked from one that holds the
    /// mapping, which must not keep it (netmcore's master gives a worker only the preallocated
    /// shared memory it inherits).
    ///
    /// ```
    /// use netmcore_ipc::shm::ShmObject;
    ///
    /// let shm = ShmObject::create_unique("/netmcore-doc-revoke-")?;
    /// shm.set_size(4096)?;
    /// let memory = shm.map_shared()?;
    /// let name = shm.name().to_owned();
    /// shm.unlink()?;
    /// // SAFETY (of this example): no view or other copy of `memory` is used afterwards.
    /// unsafe { memory.revoke()? };
    /// let maps = std::fs::read_to_string("/proc/self/maps")?;
    /// assert!(!maps.contains(&name));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Safety
    ///
    /// No reference obtained from this handle or from any copy of it (byte slices, atomic
    /// views, subranges) is alive, and no copy of the handle is used afterwards, in this
    /// process.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] naming `mmap` (e.g. `ENOMEM`); the mapping is then unchanged.
    #[doc(alias = "mmap")]
    pub unsafe fn revoke(self) -> Result<()> {
        if self.region.len == 0 {
            return Ok(());
        }
        // SAFETY: the region was mapped by this module and nothing in this crate unmaps it
        // (module contract); the caller promises that no reference into it is alive and that
        // no copy of the handle is used again, so replacing its pages with an inaccessible
        // private reservation at the same addresses invalidates nothing that is still used.
        let result = unsafe {
            rustix::mm::mmap_anonymous(
                self.region.ptr.as_ptr().cast(),
                self.region.len,
                ProtFlags::empty(),
                MapFlags::FIXED | MapFlags::PRIVATE,
            )
        };
        result
            .map(drop)
            .map_err(|e| Error::os("mmap", format!("{:?}", self.region), e))
    }

    /// Unmaps the shared memory object from this process outright: `munmap(ptr, len)`.
    ///
    /// Unlike [`SharedMemory::revoke`], no reservation is left behind: the address range is
    /// free for later mappings. This is meant for a handle that nothing else holds any more
    /// (netmcore's master unmaps a destroyed preallocated region it never handed out).
    ///
    /// ```
    /// use netmcore_ipc::shm::ShmObject;
    ///
    /// let shm = ShmObject::create_unique("/netmcore-doc-unmap-")?;
    /// shm.set_size(4096)?;
    /// let memory = shm.map_shared()?;
    /// let name = shm.name().to_owned();
    /// shm.unlink()?;
    /// // SAFETY (of this example): no view or other copy of `memory` is used afterwards.
    /// unsafe { memory.unmap()? };
    /// let maps = std::fs::read_to_string("/proc/self/maps")?;
    /// assert!(!maps.contains(&name));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Safety
    ///
    /// No reference obtained from this handle or from any copy of it (byte slices, atomic
    /// views, subranges) is alive, and no copy of the handle is used afterwards, in this
    /// process.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] naming `munmap`; the mapping is then unchanged.
    #[doc(alias = "munmap")]
    pub unsafe fn unmap(self) -> Result<()> {
        if self.region.len == 0 {
            return Ok(());
        }
        let (ptr, len) = (self.region.ptr.as_ptr().cast(), self.region.len);
        // SAFETY: the region was mapped by this module and nothing in this crate unmaps it
        // (module contract); the caller promises that no reference into it is alive and that
        // no copy of the handle is used again, so unmapping it invalidates nothing still used.
        let result = unsafe { rustix::mm::munmap(ptr, len) };
        result.map_err(|e| Error::os("munmap", format!("{:?}", self.region), e))
    }

    /// The `len` bytes at `offset`, or `None` if they do not fit.
    ///
    /// ```
    /// # use netmcore_ipc::shm::ShmObject;
    /// # let name = format!("/netmcore-doc-subrange-{}", std::process::id());
    /// # let shm = ShmObject::create(&name)?;
    /// # shm.set_size(4096)?;
    /// # let memory = shm.map_shared()?;
    /// # shm.unlink()?;
    /// let tail = memory.subrange(4000, 96).expect("inside");
    /// assert_eq!(tail.len(), 96);
    /// assert!(memory.subrange(4000, 97).is_none());
    /// assert!(memory.subrange(2, 8).unwrap().as_atomic_u64s().is_none(), "misaligned");
    /// # Ok::<(), netmcore_ipc::Error>(())
    /// ```
    #[must_use]
    pub fn subrange(&self, offset: usize, len: usize) -> Option<SharedMemory> {
        self.region
            .subrange(offset, len)
            .map(|region| SharedMemory { region })
    }
}

impl fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemory")
            .field("ptr", &self.region.ptr)
            .field("len", &self.region.len)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use std::os::fd::AsFd;

    use super::*;

    fn name(tag: &str) -> String {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        format!("/netmcore-unit-{}-{tag}-{n}", std::process::id())
    }

    fn mapped(len: u64, tag: &str) -> Mapping {
        let name = name(tag);
        let fd = shm_create(&name).expect("create");
        shm_unlink(&name).expect("unlink");
        ftruncate(fd.as_fd(), len, &name).expect("ftruncate");
        assert_eq!(fstat_size(fd.as_fd(), &name).expect("fstat"), len);
        Mapping::map(
            fd.as_fd(),
            usize::try_from(len).expect("fits"),
            MapOptions::new(),
            &name,
        )
        .expect("mmap")
    }

    #[test]
    fn byte_views_see_each_others_writes() {
        let mapping = mapped(4096, "bytes");
        // SAFETY: this test is the only user of the fresh mapping.
        let bytes = unsafe { mapping.as_mut_slice() };
        bytes[..5].copy_from_slice(b"hello");
        // SAFETY: the exclusive slice above is no longer used.
        let read = unsafe { mapping.as_slice() };
        assert_eq!(&read[..5], b"hello");
        assert!(read[5..].iter().all(|&b| b == 0), "new bytes read as zero");
        let leaked = mapping.leak();
        // SAFETY: as above; the leaked handle is the only user.
        assert_eq!(unsafe { &leaked.as_slice()[..5] }, b"hello");
    }

    #[test]
    fn two_mappings_of_one_object_share_bytes() {
        let name = name("twice");
        let fd = shm_create(&name).expect("create");
        ftruncate(fd.as_fd(), 8192, &name).expect("ftruncate");
        let a = Mapping::map(fd.as_fd(), 8192, MapOptions::new(), &name).expect("mmap a");
        let other = shm_open_existing(&name).expect("open");
        shm_unlink(&name).expect("unlink");
        let b = Mapping::map(other.as_fd(), 8192, MapOptions::new().populate(true), &name)
            .expect("mmap b");
        assert_ne!(a.as_ptr(), b.as_ptr());
        a.as_atomic_u64s().expect("aligned")[1023].store(7, Ordering::Relaxed);
        assert_eq!(
            b.as_atomic_u64s().expect("aligned")[1023].load(Ordering::Relaxed),
            7
        );
        assert_eq!(b.as_atomic_u8s()[8191 - 7].load(Ordering::Relaxed), 7);
    }

    #[test]
    fn empty_mapping_has_empty_views() {
        let mapping = mapped(0, "empty");
        assert!(mapping.is_empty());
        assert_eq!(mapping.as_atomic_u32s().map(<[_]>::len), Some(0));
        // SAFETY: zero bytes; nothing to race with.
        assert!(unsafe { mapping.as_slice() }.is_empty());
        let shared = mapping.leak();
        assert_eq!(shared.as_atomic_u64s().map(<[_]>::len), Some(0));
        assert!(shared.atomic_u32_at(0).is_none());
    }

    #[test]
    fn a_revoked_mapping_is_gone_from_the_maps_but_stays_reserved() {
        let name = name("revoke");
        let fd = shm_create(&name).expect("create");
        ftruncate(fd.as_fd(), 8192, &name).expect("ftruncate");
        let shared = Mapping::map(fd.as_fd(), 8192, MapOptions::new(), &name)
            .expect("mmap")
            .leak();
        shm_unlink(&name).expect("unlink");
        let maps = || std::fs::read_to_string("/proc/self/maps").expect("maps");
        let addr = shared.as_ptr() as usize;
        let covers = |line: &&str| {
            let range = line.split_whitespace().next().unwrap_or_default();
            let (a, b) = range.split_once('-').unwrap_or_default();
            let a = usize::from_str_radix(a, 16).unwrap_or(usize::MAX);
            let b = usize::from_str_radix(b, 16).unwrap_or(0);
            a <= addr && addr < b
        };
        assert!(maps().contains(&name), "mapped before");
        // SAFETY: no view or other copy of `shared` is used after this call.
        unsafe { shared.revoke() }.expect("revoke");
        let after = maps();
        assert!(!after.contains(&name), "the object is no longer mapped");
        let line = after
            .lines()
            .find(covers)
            .expect("the range stays reserved");
        assert!(line.contains("---p"), "inaccessible: {line}");
    }

    #[test]
    fn atomic_views_refuse_misalignment() {
        let shared = mapped(64, "align").leak();
        assert_eq!(shared.as_atomic_u64s().map(<[_]>::len), Some(8));
        let odd = shared.subrange(4, 56).expect("inside");
        assert!(odd.as_atomic_u64s().is_none());
        assert_eq!(odd.as_atomic_u32s().map(<[_]>::len), Some(14));
        assert!(
            shared
                .subrange(0, 6)
                .expect("inside")
                .as_atomic_u32s()
                .is_none()
        );
        assert!(shared.atomic_u32_at(62).is_none());
        assert!(shared.atomic_u32_at(2).is_none());
        assert!(shared.atomic_u64_at(56).is_some());
        assert!(shared.atomic_u64_at(usize::MAX).is_none());
        assert!(shared.subrange(usize::MAX, 2).is_none());
    }
}
