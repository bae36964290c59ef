//! Anonymous shared memory files (`memfd`): how large payloads travel between processes.
//!
//! ```
//! use std::os::fd::OwnedFd;
//! use netmcore_ipc::memfd::Memfd;
//!
//! let memfd = Memfd::from_bytes("example", b"hello, other process")?;
//! memfd.seal()?;
//! // The descriptor is what travels; the receiver turns it back into a Memfd.
//! let fd: OwnedFd = memfd.into();
//! let received = Memfd::from_fd(fd)?;
//! assert_eq!(received.size()?, 20);
//! assert_eq!(&received.map()?[..5], b"hello");
//! # Ok::<(), netmcore_ipc::Error>(())
//! ```
//!
//! A [`Memfd`] is a file that lives only in memory and has no name in any file system (nothing
//! appears in `/dev/shm`). It disappears when the last descriptor and mapping of it are gone,
//! so it cannot be left behind by a crash. Its descriptor can be sent to another process over
//! a [`Channel`](crate::channel::Channel) (it converts into and from an [`OwnedFd`]).
//!
//! A memfd is mapped only once it is **sealed** ([`Memfd::seal`]): the seals forbid every
//! further write and size change, by anyone, so the mapped bytes are immutable and the safe
//! `&[u8]` view of [`MemfdMap`] is sound even when another process holds the same file. To
//! fill a memfd, write with [`Memfd::write_at`] or build it with [`Memfd::create_with`].

use std::fmt;
use std::ops::Deref;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::sys::memfd as sys;
use crate::{Error, Result};

/// An anonymous shared memory file, created close-on-exec and sealable.
///
/// See the [module docs](self) for how it is filled, sealed, mapped and passed on.
pub struct Memfd {
    fd: OwnedFd,
    label: String,
}

impl fmt::Debug for Memfd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Memfd")
            .field("fd", &self.fd)
            .field("label", &self.label)
            .finish()
    }
}

impl Memfd {
    /// `memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING)` and `ftruncate(size)`: a new
    /// memfd of `size` zero bytes. `name` is only a label for `/proc/<pid>/fd` and messages.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] naming `memfd_create` or `ftruncate` (e.g. a name over 249 bytes).
    #[doc(alias = "memfd_create")]
    pub fn create(name: &str, size: usize) -> Result<Memfd> {
        let memfd = Memfd::create_empty(name)?;
        memfd.set_size(size as u64)?;
        Ok(memfd)
    }

    /// A new memfd holding a copy of `bytes` (written with `pwrite`, no mapping).
    ///
    /// # Errors
    ///
    /// [`Error::Os`] naming `memfd_create` or `pwrite`.
    pub fn from_bytes(name: &str, bytes: &[u8]) -> Result<Memfd> {
        let memfd = Memfd::create_empty(name)?;
        memfd.write_at(0, bytes)?;
        Ok(memfd)
    }

    /// A new memfd of `size` bytes that `fill` writes in place through a private, writable
    /// mapping (no copy through a buffer); returns it, unsealed, with what `fill` returned.
    ///
    /// No other process or descriptor can reach the memfd while `fill` runs.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] naming `memfd_create`, `ftruncate` or `mmap`.
    pub fn create_with<R>(
        name: &str,
        size: usize,
        fill: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<(Memfd, R)> {
        let (fd, r) = sys::create_filled(name, size, fill)
            .map_err(|(op, e)| Error::os(op, format!("memfd {name:?}"), e))?;
        Ok((
            Memfd {
                fd,
                label: format!("memfd {name:?}"),
            },
            r,
        ))
    }

    /// Takes over a descriptor received from another process (or inherited), after checking
    /// with `fcntl(F_GET_SEALS)` that it is a memfd.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] naming `fcntl(F_GET_SEALS)` when the descriptor is not a sealable memory
    /// file (`EINVAL`); the descriptor is closed.
    pub fn from_fd(fd: OwnedFd) -> Result<Memfd> {
        sys::seals(fd.as_fd()).map_err(|e| Error::os("fcntl(F_GET_SEALS)", "received memfd", e))?;
        Ok(Memfd {
            fd,
            label: "received memfd".to_owned(),
        })
    }

    pub(crate) fn create_empty(name: &str) -> Result<Memfd> {
        let label = format!("memfd {name:?}");
        let fd = sys::create(name).map_err(|e| Error::os("memfd_create", label.clone(), e))?;
        Ok(Memfd { fd, label })
    }

    /// `fstat`: the size in bytes.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] naming `fstat`.
    #[doc(alias = "fstat")]
    pub fn size(&self) -> Result<u64> {
        sys::len(self.fd.as_fd()).map_err(|e| Error::os("fstat", self.label.clone(), e))
    }

    /// `ftruncate`: grows (with zeros) or shrinks the file.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] naming `ftruncate` (`EPERM` once sealed).
    #[doc(alias = "ftruncate")]
    pub fn set_size(&self, size: u64) -> Result<()> {
        sys::set_len(self.fd.as_fd(), size)
            .map_err(|e| Error::os("ftruncate", self.label.clone(), e))
    }

    /// `pwrite`: writes all of `bytes` at `offset`, growing the file if needed.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] naming `pwrite` (`EPERM` once sealed).
    #[doc(alias = "pwrite")]
    pub fn write_at(&self, offset: u64, bytes: &[u8]) -> Result<()> {
        sys::write_all_at(self.fd.as_fd(), bytes, offset)
            .map_err(|e| Error::os("pwrite", self.label.clone(), e))
    }

    /// `pread`: reads up to `buf.len()` bytes at `offset`; returns how many were read (fewer
    /// at the end of the file).
    ///
    /// # Errors
    ///
    /// [`Error::Os`] naming `pread`.
    #[doc(alias = "pread")]
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        sys::read_at(self.fd.as_fd(), buf, offset)
            .map_err(|e| Error::os("pread", self.label.clone(), e))
    }

    /// `fcntl(F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)`: makes
    /// the content immutable for every holder of the file, for good, so that it can be
    /// [mapped](Memfd::map). Sealing a memfd that is already sealed this way succeeds.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] naming `fcntl(F_ADD_SEALS)`: `EBUSY` while a writable mapping exists,
    /// `EPERM` when it was sealed against further seals without being made immutable.
    #[doc(alias = "F_ADD_SEALS")]
    pub fn seal(&self) -> Result<()> {
        if self.is_sealed()? {
            return Ok(());
        }
        sys::add_seals(self.fd.as_fd(), sys::IMMUTABLE)
            .map_err(|e| Error::os("fcntl(F_ADD_SEALS)", self.label.clone(), e))
    }

    /// `fcntl(F_GET_SEALS)`: whether the content can no longer change (sealed against writing
    /// and shrinking), which [`map`](Memfd::map) requires.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] naming `fcntl(F_GET_SEALS)`.
    #[doc(alias = "F_GET_SEALS")]
    pub fn is_sealed(&self) -> Result<bool> {
        let seals = sys::seals(self.fd.as_fd())
            .map_err(|e| Error::os("fcntl(F_GET_SEALS)", self.label.clone(), e))?;
        Ok(seals.contains(rustix::fs::SealFlags::WRITE | rustix::fs::SealFlags::SHRINK))
    }

    /// `mmap(PROT_READ, MAP_SHARED)` of the whole file, which must be sealed.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] when the memfd is not sealed against writing and shrinking;
    /// [`Error::Os`] naming `fstat` or `mmap`.
    #[doc(alias = "mmap")]
    pub fn map(&self) -> Result<MemfdMap> {
        let len = usize::try_from(self.size()?).map_err(|_| Error::Protocol {
            what: "memfd",
            reason: "larger than the address space".to_owned(),
        })?;
        self.map_len(len)
    }

    /// Like [`map`](Memfd::map), but maps only the first `len` bytes (the file must be at
    /// least that long).
    ///
    /// # Errors
    ///
    /// As [`map`](Memfd::map), and [`Error::Protocol`] when the file is shorter than `len`.
    pub fn map_len(&self, len: usize) -> Result<MemfdMap> {
        if len == 0 {
            // An empty mapping is not allowed by mmap; an empty slice needs none, but the
            // seals are checked all the same.
            if !self.is_sealed()? {
                return Err(not_sealed(&self.label));
            }
            return Ok(MemfdMap { map: None });
        }
        match sys::map_sealed(self.fd.as_fd(), len) {
            Ok(map) => Ok(MemfdMap { map: Some(map) }),
            Err(sys::MapError::Os(op, e)) => Err(Error::os(op, self.label.clone(), e)),
            Err(sys::MapError::NotSealed) => Err(not_sealed(&self.label)),
            Err(sys::MapError::TooShort { len, want }) => Err(Error::Protocol {
                what: "memfd",
                reason: format!("{} holds {len} bytes, {want} expected", self.label),
            }),
        }
    }

    /// `mmap(PROT_READ | PROT_WRITE, MAP_SHARED)` of the whole file, for memory that this
    /// process and the processes it forks afterwards share (no seal is needed or checked).
    ///
    /// ```
    /// use netmcore_ipc::memfd::Memfd;
    ///
    /// let memfd = Memfd::create("netmcore-doc-shared", 4096)?;
    /// let mapping = memfd.map_shared()?;
    /// drop(memfd); // the mapping keeps the memory
    /// mapping.as_atomic_u8s()[7].store(1, std::sync::atomic::Ordering::Relaxed);
    /// # Ok::<(), netmcore_ipc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Os`] naming `fstat` or `mmap`; [`Error::Protocol`] for a file larger than the
    /// address space.
    #[doc(alias = "mmap")]
    pub fn map_shared(&self) -> Result<crate::shm::Mapping> {
        let len = usize::try_from(self.size()?).map_err(|_| Error::Protocol {
            what: "memfd",
            reason: "larger than the address space".to_owned(),
        })?;
        crate::shm::Mapping::map(
            self.fd.as_fd(),
            len,
            crate::shm::MapOptions::new(),
            &self.label,
        )
    }

    /// All bytes of the file, read with `pread` into a new vector.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] naming `fstat` or `pread`.
    pub fn read_to_vec(&self) -> Result<Vec<u8>> {
        let size = usize::try_from(self.size()?).unwrap_or(usize::MAX);
        let mut out = vec![0; size];
        let mut done = 0;
        while done < size {
            let n = self.read_at(done as u64, &mut out[done..])?;
            if n == 0 {
                break;
            }
            done += n;
        }
        out.truncate(done);
        Ok(out)
    }

    /// The descriptor, to send it to another process.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

fn not_sealed(label: &str) -> Error {
    Error::Protocol {
        what: "memfd",
        reason: format!(
            "{label} is not sealed against writing and shrinking, so it cannot be mapped"
        ),
    }
}

impl AsFd for Memfd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<Memfd> for OwnedFd {
    fn from(memfd: Memfd) -> OwnedFd {
        memfd.fd
    }
}

/// A read-only mapping of a sealed [`Memfd`]: its bytes as a `&[u8]`, valid as long as the
/// value lives (the memfd itself may be dropped earlier).
pub struct MemfdMap {
    // `None` for an empty mapping, which `mmap` cannot make.
    map: Option<memmap2::Mmap>,
}

impl Deref for MemfdMap {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}

impl AsRef<[u8]> for MemfdMap {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl fmt::Debug for MemfdMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemfdMap")
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_bytes_are_mapped_after_sealing() {
        let memfd = Memfd::from_bytes("t", b"abcdef").unwrap();
        memfd.write_at(2, b"XY").unwrap();
        assert_eq!(memfd.size().unwrap(), 6);
        assert!(!memfd.is_sealed().unwrap());
        assert!(matches!(memfd.map(), Err(Error::Protocol { .. })));
        memfd.seal().unwrap();
        memfd.seal().unwrap();
        assert!(memfd.is_sealed().unwrap());
        assert_eq!(&*memfd.map().unwrap(), b"abXYef");
        assert_eq!(&*memfd.map_len(3).unwrap(), b"abX");
        assert!(matches!(memfd.map_len(7), Err(Error::Protocol { .. })));
        assert_eq!(memfd.read_to_vec().unwrap(), b"abXYef");
    }

    #[test]
    fn sealed_memfd_refuses_writes_and_resizes() {
        let memfd = Memfd::create("t", 10).unwrap();
        memfd.seal().unwrap();
        assert!(matches!(
            memfd.write_at(0, b"x"),
            Err(Error::Os { op: "pwrite", .. })
        ));
        assert!(matches!(
            memfd.set_size(1),
            Err(Error::Os {
                op: "ftruncate",
                ..
            })
        ));
        assert!(matches!(
            memfd.set_size(100),
            Err(Error::Os {
                op: "ftruncate",
                ..
            })
        ));
        assert_eq!(memfd.map().unwrap().len(), 10);
    }

    #[test]
    fn create_with_fills_in_place() {
        let (memfd, r) = Memfd::create_with("t", 5000, |buf| {
            buf.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
            buf.len()
        })
        .unwrap();
        assert_eq!(r, 5000);
        memfd.seal().unwrap();
        let map = memfd.map().unwrap();
        drop(memfd);
        assert!(map.iter().enumerate().all(|(i, &b)| b == i as u8));
        let (empty, ()) = Memfd::create_with("t", 0, |_| ()).unwrap();
        empty.seal().unwrap();
        assert!(empty.map().unwrap().is_empty());
    }

    #[test]
    fn round_trip_through_owned_fd() {
        let memfd = Memfd::from_bytes("t", b"x").unwrap();
        let back = Memfd::from_fd(memfd.into_fd()).unwrap();
        assert_eq!(back.read_to_vec().unwrap(), b"x");
    }

    #[test]
    fn from_fd_refuses_other_files() {
        let (a, _b) = crate::sys::socket::stream_pair().unwrap();
        assert!(matches!(
            Memfd::from_fd(a),
            Err(Error::Os {
                op: "fcntl(F_GET_SEALS)",
                ..
            })
        ));
    }

    #[test]
    fn bad_name_is_an_os_error() {
        assert!(matches!(
            Memfd::create(&"n".repeat(300), 1),
            Err(Error::Os {
                op: "memfd_create",
                ..
            })
        ));
    }
}
