//! POSIX named semaphores (`sem_open`).
//!
//! ```
//! use std::time::Duration;
//! use netmcore_ipc::sem::{self, NamedSemaphore};
//!
//! // Create a semaphore under a random name with value 1.
//! let sem = NamedSemaphore::create_unique("/netmcore-doc-", 1)?;
//! assert!(sem.try_wait()?);
//! assert!(!sem.try_wait()?, "the value is 0 now");
//!
//! // Another process (or this one) opens it by name; a post through one handle is seen by all.
//! let other = NamedSemaphore::open(sem.name())?;
//! other.post()?;
//! sem.wait_timeout(Duration::from_secs(5))?;
//! assert_eq!(sem.value()?, 0);
//!
//! // Remove the name; open handles keep working until they are dropped (`sem_close`).
//! sem::unlink(sem.name())?;
//! # Ok::<(), netmcore_ipc::Error>(())
//! ```
//!
//! Semaphores are created with `O_CREAT | O_EXCL` and mode 0600. Linux keeps a semaphore named
//! `/NAME` as the file `/dev/shm/sem.NAME`, which is why names are limited to
//! [`MAX_NAME_LEN`] bytes. A handle is `Send` and `Sync`, and it stays valid in a child forked
//! after it was opened.
//!
//! For a semaphore that lives inside shared memory and needs no name, see
//! [`futex_sem`](crate::futex_sem).

use std::time::Duration;

use crate::shm::{check_name, create_with_unique_name};
use crate::sys::sem::{self as sys, RawSemaphore};
use crate::{Error, Result};

/// The longest semaphore name accepted, leading `/` included: Linux stores `/NAME` as
/// `/dev/shm/sem.NAME`, whose file name must fit in `NAME_MAX` (255) bytes.
pub const MAX_NAME_LEN: usize = 251;

/// The largest value a named semaphore can hold (`SEM_VALUE_MAX`).
pub const MAX_VALUE: u32 = sys::SEM_VALUE_MAX;

/// Checks that `name` is a valid semaphore name: a leading `/`, no further `/`, no NUL, not
/// `/.` or `/..`, at most [`MAX_NAME_LEN`] bytes.
///
/// ```
/// use netmcore_ipc::{Error, sem::validate_name};
///
/// assert!(validate_name("/netmcore-1-lock").is_ok());
/// assert!(matches!(validate_name(&format!("/{}", "x".repeat(251))), Err(Error::InvalidName { .. })));
/// ```
///
/// # Errors
///
/// [`Error::InvalidName`] with the reason.
pub fn validate_name(name: &str) -> Result<()> {
    check_name(name, MAX_NAME_LEN)
}

/// An open POSIX named semaphore; closed (`sem_close`) when dropped.
///
/// Dropping the handle does not remove the name: call [`NamedSemaphore::unlink`] (or
/// [`unlink`]) once no one needs to open it any more.
#[derive(Debug)]
pub struct NamedSemaphore {
    raw: RawSemaphore,
    name: String,
}

impl NamedSemaphore {
    /// `sem_open(name, O_CREAT | O_EXCL, 0600, initial)`: creates a new semaphore with value
    /// `initial`.
    ///
    /// ```
    /// use netmcore_ipc::{Error, sem::NamedSemaphore};
    ///
    /// let name = format!("/netmcore-doc-sem-create-{}", std::process::id());
    /// let sem = NamedSemaphore::create(&name, 0)?;
    /// let err = NamedSemaphore::create(&name, 0).unwrap_err();
    /// assert!(err.to_string().starts_with(&format!("sem_open {name}: ")), "{err}");
    /// sem.unlink()?;
    /// # Ok::<(), netmcore_ipc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a name [`validate_name`] refuses; [`Error::Os`] naming
    /// `sem_open` and the name, e.g. `EEXIST` when a semaphore of that name exists or `EINVAL`
    /// when `initial` exceeds [`MAX_VALUE`].
    #[doc(alias = "sem_open")]
    pub fn create(name: &str, initial: u32) -> Result<NamedSemaphore> {
        validate_name(name)?;
        let raw = RawSemaphore::create(name, initial)?;
        Ok(NamedSemaphore {
            raw,
            name: name.to_owned(),
        })
    }

    /// `sem_open(prefix + suffix, O_CREAT | O_EXCL, 0600, initial)`: creates a new semaphore
    /// whose name is `prefix` followed by 16 random hex digits (drawing again if the name is
    /// taken). [`NamedSemaphore::name`] tells the name.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] if `prefix` does not make a valid name; [`Error::Os`] naming
    /// `sem_open` and the name.
    #[doc(alias = "sem_open")]
    pub fn create_unique(prefix: &str, initial: u32) -> Result<NamedSemaphore> {
        create_with_unique_name(prefix, MAX_NAME_LEN, |name| {
            NamedSemaphore::create(name, initial)
        })
    }

    /// `sem_open(name, 0)`: opens an existing semaphore.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a name [`validate_name`] refuses; [`Error::Os`] naming
    /// `sem_open` and the name, e.g. `ENOENT`.
    #[doc(alias = "sem_open")]
    pub fn open(name: &str) -> Result<NamedSemaphore> {
        validate_name(name)?;
        let raw = RawSemaphore::open(name)?;
        Ok(NamedSemaphore {
            raw,
            name: name.to_owned(),
        })
    }

    /// The name the semaphore was created or opened under.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `sem_post(sem)`: adds one to the value, waking one waiter if any.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] naming `sem_post` and the semaphore: `EOVERFLOW` at [`MAX_VALUE`].
    #[doc(alias = "sem_post")]
    pub fn post(&self) -> Result<()> {
        self.raw
            .post()
            .map_err(|e| Error::os("sem_post", self.name.as_str(), e))
    }

    /// `sem_wait(sem)`: takes one from the value, blocking while it is 0 (retrying after a
    /// signal).
    ///
    /// # Errors
    ///
    /// [`Error::Os`] naming `sem_wait` and the semaphore.
    #[doc(alias = "sem_wait")]
    pub fn wait(&self) -> Result<()> {
        self.raw
            .wait()
            .map_err(|e| Error::os("sem_wait", self.name.as_str(), e))
    }

    /// `sem_trywait(sem)`: takes one from the value if it is positive; `Ok(false)` if it was 0.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] naming `sem_trywait` and the semaphore.
    #[doc(alias = "sem_trywait")]
    pub fn try_wait(&self) -> Result<bool> {
        self.raw
            .try_wait()
            .map_err(|e| Error::os("sem_trywait", self.name.as_str(), e))
    }

    /// `sem_timedwait(sem, deadline)`: takes one from the value, blocking while it is 0 but no
    /// longer than `timeout`.
    ///
    /// `sem_timedwait` takes an absolute `CLOCK_REALTIME` deadline, computed here as now plus
    /// `timeout`; a jump of the system clock during the wait shifts it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use netmcore_ipc::{Error, sem::NamedSemaphore};
    ///
    /// let sem = NamedSemaphore::create_unique("/netmcore-doc-timeout-", 0)?;
    /// let err = sem.wait_timeout(Duration::from_millis(1)).unwrap_err();
    /// assert!(matches!(err, Error::Timeout { op: "sem_timedwait", .. }));
    /// sem.unlink()?;
    /// # Ok::<(), netmcore_ipc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] naming `sem_timedwait` and the semaphore when the time runs out;
    /// [`Error::Os`] for other failures.
    #[doc(alias = "sem_timedwait")]
    pub fn wait_timeout(&self, timeout: Duration) -> Result<()> {
        match self.raw.timed_wait(timeout) {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::Timeout {
                op: "sem_timedwait",
                target: self.name.clone(),
            }),
            Err(e) => Err(Error::os("sem_timedwait", self.name.as_str(), e)),
        }
    }

    /// `sem_getvalue(sem)`: the current value (a snapshot that may be stale at once).
    ///
    /// # Errors
    ///
    /// [`Error::Os`] naming `sem_getvalue` and the semaphore.
    #[doc(alias = "sem_getvalue")]
    pub fn value(&self) -> Result<u32> {
        self.raw
            .value()
            .map_err(|e| Error::os("sem_getvalue", self.name.as_str(), e))
    }

    /// `sem_unlink(name)`: removes the semaphore's name (see [`unlink`]).
    ///
    /// # Errors
    ///
    /// [`Error::Os`] naming `sem_unlink` and the semaphore, e.g. `ENOENT` if it is gone.
    #[doc(alias = "sem_unlink")]
    pub fn unlink(&self) -> Result<()> {
        sys::unlink(&self.name)
    }
}

/// `sem_unlink(name)`: removes the name of a semaphore. Processes that have it open keep
/// using it; it is destroyed when the last of them closes it.
///
/// ```
/// use netmcore_ipc::sem::{self, NamedSemaphore};
///
/// let sem = NamedSemaphore::create_unique("/netmcore-doc-sem-unlink-", 0)?;
/// sem::unlink(sem.name())?;
/// assert!(NamedSemaphore::open(sem.name()).is_err());
/// sem.post()?; // the open handle still works
/// # Ok::<(), netmcore_ipc::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::InvalidName`] for a name [`validate_name`] refuses; [`Error::Os`] naming
/// `sem_unlink` and the name, e.g. `ENOENT`.
#[doc(alias = "sem_unlink")]
pub fn unlink(name: &str) -> Result<()> {
    validate_name(name)?;
    sys::unlink(name)
}
