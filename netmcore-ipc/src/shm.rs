//! POSIX shared memory objects (`shm_open`) and their mappings.
//!
//! ```
//! use std::sync::atomic::Ordering;
//! use netmcore_ipc::shm::{self, ShmObject};
//!
//! // Create a fresh object under a random name, size it, and map it.
//! let shm = ShmObject::create_unique("/netmcore-doc-")?;
//! shm.set_size(4096)?;
//! let mapping = shm.map()?;
//!
//! // Another process (or this one) opens it by name and sees the same bytes.
//! let again = ShmObject::open(shm.name())?;
//! assert_eq!(again.size()?, 4096);
//! let view = again.map()?;
//! mapping.as_atomic_u64s().unwrap()[0].store(7, Ordering::Relaxed);
//! assert_eq!(view.as_atomic_u64s().unwrap()[0].load(Ordering::Relaxed), 7);
//!
//! // Remove the name; the memory lives on until the last mapping is gone.
//! shm::unlink(shm.name())?;
//! assert!(ShmObject::open(shm.name()).is_err());
//! # Ok::<(), netmcore_ipc::Error>(())
//! ```
//!
//! Objects are created with `O_CREAT | O_EXCL` and mode 0600, so that creating never adopts an
//! object someone else prepared. Names are checked before any call (see [`validate_name`]), and
//! every OS error names the call and the object, e.g. `shm_open /netmcore-…: File exists`.
//!
//! A [`Mapping`] is owned and unmapped when dropped; a [`SharedMemory`] is a copyable handle to
//! a mapping kept for the life of the process (see [`Mapping::leak`]).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::sys::shm as sys;
pub use crate::sys::shm::{MapOptions, Mapping, SharedMemory};
use crate::{Error, Result};

/// The longest shm name Linux accepts, leading `/` included (`NAME_MAX`).
pub const MAX_NAME_LEN: usize = 255;

/// How many times [`ShmObject::create_unique`] draws a new suffix after a name collision.
const UNIQUE_ATTEMPTS: usize = 8;

/// Checks that `name` is a portable shm name: a leading `/`, no further `/`, no NUL, not `/.`
/// or `/..`, at most [`MAX_NAME_LEN`] bytes.
///
/// ```
/// use netmcore_ipc::{Error, shm::validate_name};
///
/// assert!(validate_name("/netmcore-1-data").is_ok());
/// assert!(matches!(validate_name("netmcore"), Err(Error::InvalidName { .. })));
/// assert!(matches!(validate_name("/a/b"), Err(Error::InvalidName { .. })));
/// ```
///
/// # Errors
///
/// [`Error::InvalidName`] with the reason.
pub fn validate_name(name: &str) -> Result<()> {
    check_name(name, MAX_NAME_LEN)
}

/// [`validate_name`] with a length limit of `max_len` bytes (semaphores have a shorter one).
pub(crate) fn check_name(name: &str, max_len: usize) -> Result<()> {
    let reason = if !name.starts_with('/') {
        Some("must start with '/'")
    } else if name.len() == 1 {
        Some("must have at least one character after the '/'")
    } else if name[1..].contains('/') {
        Some("must not contain '/' after the leading one")
    } else if name.contains('\0') {
        Some("must not contain NUL")
    } else if name == "/." || name == "/.." {
        Some("must not be '/.' or '/..'")
    } else if name.len() > max_len {
        Some(if max_len == MAX_NAME_LEN {
            "longer than 255 bytes"
        } else {
            "longer than 251 bytes (the limit of semaphore names)"
        })
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// A fresh 64-bit value that is hard to guess and differs between calls and processes.
///
/// It hashes the time, the process id and a counter with std's randomly keyed SipHash (whose
/// keys come from the OS's random source), so no random-number crate is needed.
pub(crate) fn nonce() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(now);
    hasher.write_u32(std::process::id());
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

/// A name for an object the library names itself: `/netmcore-<pid>-<nonce>-<tag>` (DESIGN §5),
/// where the nonce is 16 random hex digits.
///
/// ```
/// let name = netmcore_ipc::shm::library_name("shm");
/// assert!(name.starts_with(&format!("/netmcore-{}-", std::process::id())));
/// assert!(name.ends_with("-shm"));
/// netmcore_ipc::shm::validate_name(&name)?;
/// # Ok::<(), netmcore_ipc::Error>(())
/// ```
#[must_use]
pub fn library_name(tag: &str) -> String {
    format!("/netmcore-{}-{:016x}-{tag}", std::process::id(), nonce())
}

/// Creates a name from `prefix` plus 16 random hex digits with `create`, drawing a new suffix
/// while `create` fails with `EEXIST`. Shared by shm objects and semaphores.
pub(crate) fn create_with_unique_name<T>(
    prefix: &str,
    max_len: usize,
    mut create: impl FnMut(&str) -> Result<T>,
) -> Result<T> {
    let mut last = None;
    for _ in 0..UNIQUE_ATTEMPTS {
        let name = format!("{prefix}{:016x}", nonce());
        check_name(&name, max_len)?;
        match create(&name) {
            Err(e @ Error::Os { .. }) if is_exists(&e) => last = Some(e),
            other => return other,
        }
    }
    // Every draw collided: report the last collision as the OS did.
    Err(last.unwrap_or_else(|| Error::os("create", prefix, rustix::io::Errno::EXIST)))
}

fn is_exists(e: &Error) -> bool {
    matches!(e, Error::Os { source, .. }
        if source.raw_os_error() == Some(rustix::io::Errno::EXIST.raw_os_error()))
}

/// An open POSIX shared memory object: a descriptor and the name it was opened under.
///
/// Dropping it closes the descriptor but neither unmaps its mappings nor removes the name: call
/// [`ShmObject::unlink`] (or [`unlink`]) once no one needs to open it any more.
#[derive(Debug)]
pub struct ShmObject {
    fd: OwnedFd,
    name: String,
}

impl ShmObject {
    /// `shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600)`: creates a new, empty object.
    ///
    /// ```
    /// use netmcore_ipc::{Error, shm::ShmObject};
    ///
    /// let name = format!("/netmcore-doc-create-{}", std::process::id());
    /// let shm = ShmObject::create(&name)?;
    /// let err = ShmObject::create(&name).unwrap_err();
    /// assert!(err.to_string().starts_with(&format!("shm_open {name}: ")), "{err}");
    /// shm.unlink()?;
    /// # Ok::<(), netmcore_ipc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a name [`validate_name`] refuses; [`Error::Os`] naming
    /// `shm_open` and the name, e.g. `EEXIST` when an object of that name exists.
    #[doc(alias = "shm_open")]
    pub fn create(name: &str) -> Result<ShmObject> {
        validate_name(name)?;
        let fd = sys::shm_create(name)?;
        Ok(ShmObject {
            fd,
            name: name.to_owned(),
        })
    }

    /// `shm_open(prefix + suffix, O_CREAT | O_EXCL | O_RDWR, 0600)`: creates a new, empty
    /// object whose name is `prefix` followed by 16 random hex digits (drawing again if the name
    /// is taken). [`ShmObject::name`] tells the name.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] if `prefix` does not make a valid name; [`Error::Os`] naming
    /// `shm_open` and the name.
    #[doc(alias = "shm_open")]
    pub fn create_unique(prefix: &str) -> Result<ShmObject> {
        create_with_unique_name(prefix, MAX_NAME_LEN, ShmObject::create)
    }

    /// `shm_open(name, O_RDWR, 0)`: opens an existing object for reading and writing.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a name [`validate_name`] refuses; [`Error::Os`] naming
    /// `shm_open` and the name, e.g. `ENOENT`.
    #[doc(alias = "shm_open")]
    pub fn open(name: &str) -> Result<ShmObject> {
        validate_name(name)?;
        let fd = sys::shm_open_existing(name)?;
        Ok(ShmObject {
            fd,
            name: name.to_owned(),
        })
    }

    /// The name the object was created or opened under.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ftruncate(fd, size)`: sets the size in bytes; bytes added read as zero.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] naming `ftruncate` and the object.
    #[doc(alias = "ftruncate")]
    pub fn set_size(&self, size: u64) -> Result<()> {
        sys::ftruncate(self.fd.as_fd(), size, &self.name)
    }

    /// `fstat(fd).st_size`: the size in bytes.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] naming `fstat` and the object.
    #[doc(alias = "fstat")]
    pub fn size(&self) -> Result<u64> {
        sys::fstat_size(self.fd.as_fd(), &self.name)
    }

    /// `mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)`: maps the whole object
    /// (its current [`size`](ShmObject::size)); the mapping stays valid after the object is
    /// closed or unlinked.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] naming `fstat` or `mmap` and the object.
    #[doc(alias = "mmap")]
    pub fn map(&self) -> Result<Mapping> {
        self.map_with(MapOptions::new())
    }

    /// [`map`](ShmObject::map) with options, e.g. `MAP_POPULATE`:
    ///
    /// ```
    /// use netmcore_ipc::shm::{MapOptions, ShmObject};
    ///
    /// let shm = ShmObject::create_unique("/netmcore-doc-populate-")?;
    /// shm.set_size(1 << 20)?;
    /// let mapping = shm.map_with(MapOptions::new().populate(true))?;
    /// shm.unlink()?;
    /// assert_eq!(mapping.len(), 1 << 20);
    /// # Ok::<(), netmcore_ipc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Os`] naming `fstat` or `mmap` and the object.
    #[doc(alias = "mmap")]
    pub fn map_with(&self, options: MapOptions) -> Result<Mapping> {
        let size = self.size()?;
        let len = usize::try_from(size)
            .map_err(|_| Error::os("mmap", self.name.as_str(), rustix::io::Errno::OVERFLOW))?;
        Mapping::map(self.fd.as_fd(), len, options, &self.name)
    }

    /// Maps the whole object and keeps the mapping for the life of the process:
    /// `self.map_with(options)?.leak()`.
    ///
    /// # Errors
    ///
    /// As [`map_with`](ShmObject::map_with).
    pub fn map_shared_with(&self, options: MapOptions) -> Result<SharedMemory> {
        Ok(self.map_with(options)?.leak())
    }

    /// Maps the whole object and keeps the mapping for the life of the process:
    /// `self.map()?.leak()`.
    ///
    /// # Errors
    ///
    /// As [`map`](ShmObject::map).
    pub fn map_shared(&self) -> Result<SharedMemory> {
        self.map_shared_with(MapOptions::new())
    }

    /// `shm_unlink(name)`: removes the object's name (see [`unlink`]).
    ///
    /// # Errors
    ///
    /// [`Error::Os`] naming `shm_unlink` and the object, e.g. `ENOENT` if it is already gone.
    #[doc(alias = "shm_unlink")]
    pub fn unlink(&self) -> Result<()> {
        sys::shm_unlink(&self.name)
    }
}

impl AsFd for ShmObject {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<ShmObject> for OwnedFd {
    fn from(shm: ShmObject) -> OwnedFd {
        shm.fd
    }
}

/// `shm_unlink(name)`: removes the name of a shared memory object. Processes that have it open
/// or mapped keep it; the memory is freed when the last of them lets go.
///
/// ```
/// use netmcore_ipc::shm::{self, ShmObject};
///
/// let shm = ShmObject::create_unique("/netmcore-doc-unlink-")?;
/// shm::unlink(shm.name())?;
/// assert!(shm::unlink(shm.name()).is_err(), "already gone");
/// # Ok::<(), netmcore_ipc::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::InvalidName`] for a name [`validate_name`] refuses; [`Error::Os`] naming
/// `shm_unlink` and the name, e.g. `ENOENT`.
#[doc(alias = "shm_unlink")]
pub fn unlink(name: &str) -> Result<()> {
    validate_name(name)?;
    sys::shm_unlink(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        let refused = |name: &str| match check_name(name, MAX_NAME_LEN) {
            Err(Error::InvalidName { reason, .. }) => reason,
            other => panic!("{name:?} was not refused: {other:?}"),
        };
        assert_eq!(refused("x"), "must start with '/'");
        assert_eq!(refused(""), "must start with '/'");
        assert_eq!(
            refused("/"),
            "must have at least one character after the '/'"
        );
        assert_eq!(
            refused("/a/b"),
            "must not contain '/' after the leading one"
        );
        assert_eq!(refused("/a\0b"), "must not contain NUL");
        assert_eq!(refused("/.."), "must not be '/.' or '/..'");
        let long = format!("/{}", "x".repeat(255));
        assert_eq!(refused(&long), "longer than 255 bytes");
        assert!(check_name(&long[..255], MAX_NAME_LEN).is_ok());
        assert!(check_name(&long[..252], 251).is_err());
        assert!(check_name("/...", MAX_NAME_LEN).is_ok());
    }

    #[test]
    fn nonces_differ() {
        let a: Vec<u64> = (0..64).map(|_| nonce()).collect();
        let mut b = a.clone();
        b.sort_unstable();
        b.dedup();
        assert_eq!(a.len(), b.len());
    }

    #[test]
    fn unique_names_retry_on_collision() {
        let mut calls = 0;
        let result = create_with_unique_name("/netmcore-unit-", MAX_NAME_LEN, |name| {
            calls += 1;
            if calls < 3 {
                Err(Error::os("shm_open", name, rustix::io::Errno::EXIST))
            } else {
                Ok(name.to_owned())
            }
        });
        let name = result.expect("third draw succeeds");
        assert_eq!(calls, 3);
        assert_eq!(name.len(), "/netmcore-unit-".len() + 16);

        let always = create_with_unique_name("/netmcore-unit-", MAX_NAME_LEN, |name| {
            Err::<(), _>(Error::os("shm_open", name, rustix::io::Errno::EXIST))
        });
        assert!(matches!(always, Err(Error::Os { op: "shm_open", .. })));

        let other = create_with_unique_name("/netmcore-unit-", MAX_NAME_LEN, |name| {
            Err::<(), _>(Error::os("shm_open", name, rustix::io::Errno::ACCESS))
        });
        assert!(matches!(other, Err(Error::Os { .. })));
        let bad = create_with_unique_name("no-slash", MAX_NAME_LEN, |_| Ok(()));
        assert!(matches!(bad, Err(Error::InvalidName { .. })));
    }
}
