//! The on-disk ledger: an append-only record of the OS objects a master has created, so that
//! whoever comes after a dead master (its guardian, the next master on the same socket
//! directory, or the admin tool) can destroy what it left behind.
//!
//! The ledger is the file [`LEDGER_FILE_NAME`] in the master's socket directory, mode `0600`.
//! The master appends a *registered* record **before** it creates an object and a *destroyed*
//! record **after** it has destroyed one. Whatever crash happens in between, replaying the
//! ledger gives a superset of the objects that may still exist: the objects registered and not
//! destroyed ([`replay`], [`replay_dir`], [`Ledger::live`]). Destroying an object that was
//! registered but never created simply finds nothing to destroy.
//!
//! # Example
//!
//! ```
//! use netmcore_resources::ledger::{self, Ledger, LedgerObject};
//!
//! let dir = tempfile::tempdir()?;
//! let mut ledger = Ledger::open(dir.path())?;
//!
//! let shm = LedgerObject::shm("/netmcore-42-example");
//! let data = LedgerObject::file("/tmp/my data.bin");
//! ledger.registered(&shm)?; // before shm_open
//! ledger.registered(&data)?; // before the file is created
//! ledger.destroyed(&shm)?; // after shm_unlink
//!
//! // Another process (the guardian, the next master, the admin tool) reads it without writing:
//! assert_eq!(ledger::replay_dir(dir.path())?, [data]);
//!
//! // After cleaning up, the owner empties it.
//! ledger.truncate()?;
//! assert!(ledger.live()?.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Format
//!
//! A text file of lines, each ended by `\n`. The first line is the header
//! `netmcore-ledger 1` ([`LEDGER_VERSION`]); a header with another version is refused with an
//! error rather than misread. An empty file is an empty ledger. Every further line is one
//! record of three fields separated by single spaces:
//!
//! ```text
//! netmcore-ledger 1
//! R shm /netmcore-4711-k3x9-pool
//! R file /tmp/job%20data/out.bin
//! U shm /netmcore-4711-k3x9-pool
//! ```
//!
//! * the record type: `R` (registered) or `U` (destroyed);
//! * the object kind: `file`, `shm` or `sem` ([`ObjectKind`]);
//! * the name, as bytes: every byte outside `0x21..=0x7E` (space, controls, newline, non-ASCII)
//!   and `%` itself is written as `%` and two uppercase hex digits; every other byte stands for
//!   itself. So names with spaces, quotes, newlines and invalid UTF-8 round-trip exactly, and a
//!   line never contains a space inside a field. Names are never empty.
//!
//! Replaying has set semantics and keeps the order of registration: an object registered twice
//! and destroyed once is gone; a destroyed record for an object never registered is ignored.
//!
//! Anything else (an unknown record type or kind, a bad escape, a raw byte outside the printable
//! range, a missing or extra field, an invalid header, a last line without its newline) is a
//! [`LedgerError::Malformed`] naming the file and the 1-based line, never a panic.
//!
//! # Concurrency and durability
//!
//! Each record is one `write_all` of a complete line to a file opened with `O_APPEND`, made
//! while holding an exclusive [`File::lock`] (`flock`) that is released right after. Readers
//! ([`replay`], [`Ledger::live`]) hold a shared lock while they read, so a reader in another
//! process never sees half a record from a live writer, and two writers never interleave their
//! bytes. If a write fails part-way (a full disk, say), the writer cuts the file back to its
//! previous length before releasing the lock, so no partial line stays behind.
//!
//! The lock belongs to the open file description, which a forked child shares with its parent.
//! That is harmless here because the master is single-threaded, never forks while inside a
//! ledger call, and workers never use the master's [`Ledger`].
//!
//! There is no `fsync`. A `write` that has returned is in the kernel's page cache, and the
//! kernel keeps it when the writer dies, even by `SIGKILL`: the guardian or the next master sees
//! every completed record. Only a crash of the whole machine can lose records, and it also
//! clears what most records describe: POSIX shared memory and named semaphores live in
//! `/dev/shm`, a `tmpfs`. Files are the exception: a managed file on a persistent file system
//! whose registered record was lost in a machine crash outlives it, and the ledger cannot list
//! it. A flush to disk on every registration would cost far more than that rare leak.
//!
//! # Trust
//!
//! Replaying a ledger leads to unlinking the files it lists, so its contents must come from the
//! same user. The socket directory is `0700` and checked by the master. In addition, a ledger
//! that is writable by group or others, or that is not a regular file (a symbolic link, a FIFO),
//! is refused by [`Ledger::open`] and by [`replay`] ([`LedgerError::InsecureMode`],
//! [`LedgerError::NotAFile`]): anyone could have added records to it, so it is left to an
//! administrator to inspect. A ledger that is only *readable* by others leaks object names but
//! nothing else, so [`Ledger::open`] (whose caller owns the file) tightens it to `0600`.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{ResourceDesc, ResourceKind};

/// The name of the ledger file inside a socket directory.
pub const LEDGER_FILE_NAME: &str = "netmcore.ledger";

/// The version of the line format that this build writes and reads.
pub const LEDGER_VERSION: u32 = 1;

/// The first word of the header line; the version follows after one space.
const HEADER_MAGIC: &[u8] = b"netmcore-ledger";

/// The permission bits the ledger is created with and tightened to.
const LEDGER_MODE: u32 = 0o600;

/// Permission bits that make a ledger untrustworthy: write access for group or others.
const UNTRUSTED_BITS: u32 = 0o022;

/// How many bytes of a bad field an error message quotes.
const QUOTE_LIMIT: usize = 40;

/// The path of the ledger in the socket directory `dir`.
pub fn ledger_path(dir: impl AsRef<Path>) -> PathBuf {
    dir.as_ref().join(LEDGER_FILE_NAME)
}

/// The kind of an OS object recorded in the ledger.
///
/// Fork and join points are not OS objects, so they never appear in the ledger; both kinds of
/// POSIX shared memory (mapped by workers or preallocated by the master) are [`ObjectKind::Shm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ObjectKind {
    /// A file, by path; destroyed with `unlink`.
    File,
    /// A POSIX shared memory object, by name; destroyed with `shm_unlink`.
    Shm,
    /// A POSIX named semaphore, by name; destroyed with `sem_unlink`.
    Sem,
}

impl ObjectKind {
    /// Every kind, in declaration order.
    pub const ALL: [ObjectKind; 3] = [ObjectKind::File, ObjectKind::Shm, ObjectKind::Sem];

    /// The kind's token in the ledger and in messages: `"file"`, `"shm"` or `"sem"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::File => "file",
            ObjectKind::Shm => "shm",
            ObjectKind::Sem => "sem",
        }
    }

    /// The ledger kind of objects of a resource kind, or `None` for kinds that are not OS
    /// objects (fork and join points).
    pub fn of_resource_kind(kind: ResourceKind) -> Option<ObjectKind> {
        match kind {
            ResourceKind::File => Some(ObjectKind::File),
            ResourceKind::PosixShm | ResourceKind::PosixShmPreallocated => Some(ObjectKind::Shm),
            ResourceKind::PosixSem => Some(ObjectKind::Sem),
            ResourceKind::ForkPoint | ResourceKind::JoinPoint => None,
        }
    }

    fn from_token(token: &[u8]) -> Option<ObjectKind> {
        ObjectKind::ALL
            .into_iter()
            .find(|kind| kind.as_str().as_bytes() == token)
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An OS object as the ledger names it: its kind and its name, as bytes.
///
/// Two objects are the same when both kind and name are equal: the file `/a` and the shm `/a`
/// are different objects.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LedgerObject {
    kind: ObjectKind,
    name: OsString,
}

impl LedgerObject {
    /// An object of `kind` named `name`.
    ///
    /// The name must not be empty for the object to be recorded: [`Ledger::registered`] and
    /// [`Ledger::destroyed`] refuse an empty name with [`LedgerError::EmptyName`].
    pub fn new(kind: ObjectKind, name: impl Into<OsString>) -> LedgerObject {
        LedgerObject {
            kind,
            name: name.into(),
        }
    }

    /// A file, by its path (which may be any bytes, not only UTF-8).
    pub fn file(path: impl Into<PathBuf>) -> LedgerObject {
        LedgerObject::new(ObjectKind::File, path.into().into_os_string())
    }

    /// A POSIX shared memory object, by its name (e.g. `/netmcore-4711-k3x9-pool`).
    pub fn shm(name: impl Into<OsString>) -> LedgerObject {
        LedgerObject::new(ObjectKind::Shm, name)
    }

    /// A POSIX named semaphore, by its name (e.g. `/netmcore-4711-k3x9-lock`).
    pub fn sem(name: impl Into<OsString>) -> LedgerObject {
        LedgerObject::new(ObjectKind::Sem, name)
    }

    /// The object that a resource description names, or `None` for fork and join points,
    /// which are not OS objects.
    pub fn from_desc(desc: &ResourceDesc) -> Option<LedgerObject> {
        match desc {
            ResourceDesc::File(path) => Some(LedgerObject::file(path.clone())),
            ResourceDesc::PosixShm(name) | ResourceDesc::PosixShmPreallocated { name, .. } => {
                Some(LedgerObject::shm(name))
            }
            ResourceDesc::PosixSem(name) => Some(LedgerObject::sem(name)),
            ResourceDesc::ForkPoint { .. } | ResourceDesc::JoinPoint { .. } => None,
        }
    }

    /// The object's kind.
    pub fn kind(&self) -> ObjectKind {
        self.kind
    }

    /// The object's name: a path for a file, a name starting with `/` for shm and semaphores.
    pub fn name(&self) -> &OsStr {
        &self.name
    }

    /// The name as a path, convenient for files.
    pub fn path(&self) -> &Path {
        Path::new(&self.name)
    }

    /// The name, by value.
    pub fn into_name(self) -> OsString {
        self.name
    }
}

impl fmt::Display for LedgerObject {
    /// The kind and the name, e.g. `shm /netmcore-4711-k3x9-pool`; bytes of the name that are
    /// not UTF-8 are shown as U+FFFD.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.name.display())
    }
}

/// One line of the ledger after the header.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Record {
    /// `R`: the object is about to be created (written before it exists).
    Registered(LedgerObject),
    /// `U`: the object has been destroyed (written after it is gone).
    Destroyed(LedgerObject),
}

impl Record {
    /// The object the record is about.
    pub fn object(&self) -> &LedgerObject {
        match self {
            Record::Registered(object) | Record::Destroyed(object) => object,
        }
    }

    /// The record's line in the ledger, with its trailing newline.
    pub fn to_line(&self) -> Vec<u8> {
        match self {
            Record::Registered(object) => encode_line(b'R', object),
            Record::Destroyed(object) => encode_line(b'U', object),
        }
    }
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Record::Registered(object) => write!(f, "registered {object}"),
            Record::Destroyed(object) => write!(f, "destroyed {object}"),
        }
    }
}

/// What can go wrong with a ledger.
///
/// Messages are lowercase without a trailing period and name the operation and the ledger's
/// path, e.g. `open ledger /run/app/netmcore.ledger: Permission denied (os error 13)`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// A file operation failed. `op` says which, e.g. `"open"`, `"lock"`, `"append to"`.
    #[error("{op} ledger {}: {source}", path.display())]
    Io {
        /// The operation, worded to precede "ledger", e.g. `"read"` or `"append to"`.
        op: &'static str,
        /// The ledger file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A line of the ledger could not be read as a header or a record.
    #[error("ledger {}, line {line}: {reason}", path.display())]
    Malformed {
        /// The ledger file.
        path: PathBuf,
        /// The 1-based line number; the header is line 1.
        line: usize,
        /// What is wrong with the line.
        reason: String,
    },
    /// The ledger is writable by group or others, so its records cannot be trusted to come
    /// from the master; nothing is read from it or written to it.
    #[error(
        "open ledger {}: writable by group or others (mode {mode:04o}), its records cannot be \
         trusted; inspect it, then remove it or chmod it to 0600",
        path.display()
    )]
    InsecureMode {
        /// The ledger file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The ledger path names something other than a regular file (a symbolic link, a directory,
    /// a FIFO, ...).
    #[error("open ledger {}: not a regular file", path.display())]
    NotAFile {
        /// The ledger path.
        path: PathBuf,
    },
    /// An object with an empty name was to be recorded; no OS object has an empty name.
    #[error("append to ledger {}: empty {kind} name", path.display())]
    EmptyName {
        /// The ledger file.
        path: PathBuf,
        /// The kind of the object.
        kind: ObjectKind,
    },
}

impl LedgerError {
    fn io(op: &'static str, path: &Path, source: io::Error) -> LedgerError {
        LedgerError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    }
}

/// The writer's handle on a ledger: the master (or a test) appends records through it.
///
/// Several handles, in one process or in several, may append to the same ledger at once; each
/// record is written whole under an exclusive file lock.
#[derive(Debug)]
pub struct Ledger {
    file: File,
    path: PathBuf,
}

/// The ledger's open file, e.g. for a forked child that must close it without touching the
/// ledger.
impl std::os::fd::AsFd for Ledger {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl Ledger {
    /// Opens the ledger in the socket directory `dir` for appending, creating it with mode
    /// `0600` (and the header line) if it does not exist.
    ///
    /// An existing ledger is read whole, so that records are never appended to a ledger that
    /// could not be replayed (an unknown version, a line cut short). If it is readable by group
    /// or others, its mode is tightened to `0600`.
    ///
    /// # Errors
    ///
    /// [`LedgerError::Io`] if the directory is missing or the file cannot be opened, locked,
    /// read or written; [`LedgerError::InsecureMode`] if it is writable by group or others;
    /// [`LedgerError::NotAFile`] if the path is not a regular file;
    /// [`LedgerError::Malformed`] if its contents cannot be replayed.
    pub fn open(dir: impl AsRef<Path>) -> Result<Ledger, LedgerError> {
        let path = ledger_path(dir);
        // The socket directory is 0700 and checked by the master, so nobody else can swap the
        // entry between this check and the open; the check is against our own mistakes (a
        // symbolic link or a FIFO left there), and the open is checked again below.
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if !meta.file_type().is_file() => return Err(LedgerError::NotAFile { path }),
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(LedgerError::io("inspect", &path, err)),
        }
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(LEDGER_MODE)
            .open(&path)
            .map_err(|err| LedgerError::io("open", &path, err))?;
        let mode = check_file(&file, &path)?;
        if mode != LEDGER_MODE {
            // Only read bits for group or others (or owner bits removed by the umask) get here;
            // set exactly 0600. This fails for a file owned by another user, which is right.
            file.set_permissions(std::fs::Permissions::from_mode(LEDGER_MODE))
                .map_err(|err| LedgerError::io("set permissions of", &path, err))?;
        }
        let ledger = Ledger { file, path };
        {
            let _lock = FileLock::exclusive(&ledger.file, &ledger.path)?;
            let data = read_all(&ledger.file, &ledger.path)?;
            if data.is_empty() {
                ledger.write_locked(&header_line(), 0)?;
            } else {
                parse(&ledger.path, &data)?;
            }
        }
        Ok(ledger)
    }

    /// The path of the ledger file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records that `object` is about to be created. Call it **before** creating the object,
    /// so that a crash right after the creation still leaves it listed.
    ///
    /// # Errors
    ///
    /// [`LedgerError::EmptyName`] for an empty name; [`LedgerError::Io`] if the lock or the
    /// write fails (then the object must not be created).
    pub fn registered(&mut self, object: &LedgerObject) -> Result<(), LedgerError> {
        self.append_line(b'R', object)
    }

    /// Records that `object` has been destroyed. Call it **after** destroying the object, so
    /// that a crash before the destruction still leaves it listed.
    ///
    /// # Errors
    ///
    /// [`LedgerError::EmptyName`] for an empty name; [`LedgerError::Io`] if the lock or the
    /// write fails.
    pub fn destroyed(&mut self, object: &LedgerObject) -> Result<(), LedgerError> {
        self.append_line(b'U', object)
    }

    /// Appends one record: [`Ledger::registered`] or [`Ledger::destroyed`] by value.
    ///
    /// # Errors
    ///
    /// As those two.
    pub fn append(&mut self, record: &Record) -> Result<(), LedgerError> {
        match record {
            Record::Registered(object) => self.registered(object),
            Record::Destroyed(object) => self.destroyed(object),
        }
    }

    /// Every record in the ledger, in file order (for a history view; [`Ledger::live`] is what
    /// cleanup needs).
    ///
    /// # Errors
    ///
    /// [`LedgerError::Io`] if the lock or the read fails; [`LedgerError::Malformed`] if a line
    /// is malformed (another writer may have damaged the file since it was opened).
    pub fn records(&self) -> Result<Vec<Record>, LedgerError> {
        let data = {
            let _lock = FileLock::shared(&self.file, &self.path)?;
            read_all(&self.file, &self.path)?
        };
        parse(&self.path, &data)
    }

    /// The objects registered and not destroyed since, in order of (first) registration.
    ///
    /// # Errors
    ///
    /// As [`Ledger::records`].
    pub fn live(&self) -> Result<Vec<LedgerObject>, LedgerError> {
        Ok(live_set(self.records()?))
    }

    /// Empties the ledger, leaving only its header, under the exclusive lock. Call it after
    /// every object it listed has been destroyed.
    ///
    /// # Errors
    ///
    /// [`LedgerError::Io`] if the lock, the truncation or the write of the header fails. A
    /// ledger left empty without its header is still valid: the next append writes the header.
    pub fn truncate(&mut self) -> Result<(), LedgerError> {
        let _lock = FileLock::exclusive(&self.file, &self.path)?;
        self.file
            .set_len(0)
            .map_err(|err| LedgerError::io("truncate", &self.path, err))?;
        self.write_locked(&header_line(), 0)
    }

    fn append_line(&mut self, tag: u8, object: &LedgerObject) -> Result<(), LedgerError> {
        if object.name.is_empty() {
            return Err(LedgerError::EmptyName {
                path: self.path.clone(),
                kind: object.kind,
            });
        }
        let line = encode_line(tag, object);
        let _lock = FileLock::exclusive(&self.file, &self.path)?;
        let len = self
            .file
            .metadata()
            .map_err(|err| LedgerError::io("inspect", &self.path, err))?
            .len();
        if len == 0 {
            // Someone emptied the file (a truncate whose header write failed, or an admin):
            // the header goes first so that the file stays readable.
            let mut with_header = header_line();
            with_header.extend_from_slice(&line);
            self.write_locked(&with_header, 0)
        } else {
            self.write_locked(&line, len)
        }
    }

    /// Appends `bytes` while the caller holds the exclusive lock and the file is `len` bytes
    /// long. On failure, cuts the file back to `len` so that no partial line remains.
    fn write_locked(&self, bytes: &[u8], len: u64) -> Result<(), LedgerError> {
        // The file is opened with O_APPEND, so every write lands at the end even if another
        // handle wrote since `len` was taken (which the lock rules out among cooperating
        // writers anyway).
        (&self.file).write_all(bytes).map_err(|err| {
            // Best effort: if the cut fails too, the original error is the one to report, and
            // the next replay names the damaged line.
            let _ = self.file.set_len(len);
            LedgerError::io("append to", &self.path, err)
        })
    }
}

/// The objects registered and not destroyed in the ledger file at `path`, in order of (first)
/// registration. Read-only: it takes a shared lock while reading and never writes.
///
/// # Errors
///
/// [`LedgerError::Io`] if the file does not exist or cannot be opened, locked or read;
/// [`LedgerError::InsecureMode`] if it is writable by group or others;
/// [`LedgerError::NotAFile`] if the path is not a regular file;
/// [`LedgerError::Malformed`] if a line is malformed.
pub fn replay(path: impl AsRef<Path>) -> Result<Vec<LedgerObject>, LedgerError> {
    Ok(live_set(read_records(path)?))
}

/// The objects registered and not destroyed in the ledger of the socket directory `dir`, or
/// none if there is no ledger there. Read-only, for the guardian, the admin tool and the next
/// master before it opens the ledger itself.
///
/// # Errors
///
/// As [`replay`], except that a missing ledger file is `Ok` and empty.
pub fn replay_dir(dir: impl AsRef<Path>) -> Result<Vec<LedgerObject>, LedgerError> {
    let path = ledger_path(dir);
    match open_for_reading(&path)? {
        Some(file) => Ok(live_set(read_records_from(&file, &path)?)),
        None => Ok(Vec::new()),
    }
}

/// Every record of the ledger file at `path`, in file order. Read-only, as [`replay`].
///
/// # Errors
///
/// As [`replay`].
pub fn read_records(path: impl AsRef<Path>) -> Result<Vec<Record>, LedgerError> {
    let path = path.as_ref();
    match open_for_reading(path)? {
        Some(file) => read_records_from(&file, path),
        None => Err(LedgerError::io(
            "open",
            path,
            io::ErrorKind::NotFound.into(),
        )),
    }
}

/// Opens an existing ledger read-only after the same checks as [`Ledger::open`], or `None` if
/// there is none.
fn open_for_reading(path: &Path) -> Result<Option<File>, LedgerError> {
    // Checked before opening, because opening a FIFO for reading would block.
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_file() => {
            return Err(LedgerError::NotAFile {
                path: path.to_owned(),
            });
        }
        Ok(_) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(LedgerError::io("inspect", path, err)),
    }
    let file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(LedgerError::io("open", path, err)),
    };
    check_file(&file, path)?;
    Ok(Some(file))
}

fn read_records_from(file: &File, path: &Path) -> Result<Vec<Record>, LedgerError> {
    let data = {
        let _lock = FileLock::shared(file, path)?;
        read_all(file, path)?
    };
    parse(path, &data)
}

/// Checks that an open ledger is a regular file that only its owner may write, and returns its
/// permission bits.
fn check_file(file: &File, path: &Path) -> Result<u32, LedgerError> {
    let meta = file
        .metadata()
        .map_err(|err| LedgerError::io("inspect", path, err))?;
    if !meta.file_type().is_file() {
        return Err(LedgerError::NotAFile {
            path: path.to_owned(),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & UNTRUSTED_BITS != 0 {
        return Err(LedgerError::InsecureMode {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(mode)
}

fn read_all(file: &File, path: &Path) -> Result<Vec<u8>, LedgerError> {
    let mut reader = file;
    reader
        .seek(SeekFrom::Start(0))
        .map_err(|err| LedgerError::io("read", path, err))?;
    let mut data = Vec::new();
    reader
        .read_to_end(&mut data)
        .map_err(|err| LedgerError::io("read", path, err))?;
    Ok(data)
}

/// A held `flock`, released when dropped (and in any case when the file is closed).
struct FileLock<'a> {
    file: &'a File,
}

impl<'a> FileLock<'a> {
    fn exclusive(file: &'a File, path: &Path) -> Result<FileLock<'a>, LedgerError> {
        file.lock()
            .map_err(|err| LedgerError::io("lock", path, err))?;
        Ok(FileLock { file })
    }

    fn shared(file: &'a File, path: &Path) -> Result<FileLock<'a>, LedgerError> {
        file.lock_shared()
            .map_err(|err| LedgerError::io("lock", path, err))?;
        Ok(FileLock { file })
    }
}

impl Drop for FileLock<'_> {
    fn drop(&mut self) {
        // An unlock of a lock we hold does not fail in practice, and closing the file releases
        // it anyway; there is nobody to report an error to.
        let _ = self.file.unlock();
    }
}

fn header_line() -> Vec<u8> {
    let mut line = HEADER_MAGIC.to_vec();
    line.extend_from_slice(format!(" {LEDGER_VERSION}\n").as_bytes());
    line
}

fn encode_line(tag: u8, object: &LedgerObject) -> Vec<u8> {
    let name = object.name.as_bytes();
    let kind = object.kind.as_str().as_bytes();
    let mut line = Vec::with_capacity(4 + kind.len() + name.len() * 3);
    line.push(tag);
    line.push(b' ');
    line.extend_from_slice(kind);
    line.push(b' ');
    escape_into(&mut line, name);
    line.push(b'\n');
    line
}

const HEX_DIGITS: &[u8; 16] = b"0123456789ABCDEF";

/// Whether a name byte is written as itself.
fn is_plain(byte: u8) -> bool {
    (0x21..=0x7E).contains(&byte) && byte != b'%'
}

fn escape_into(out: &mut Vec<u8>, name: &[u8]) {
    for &byte in name {
        if is_plain(byte) {
            out.push(byte);
        } else {
            out.extend_from_slice(&[
                b'%',
                HEX_DIGITS[usize::from(byte >> 4)],
                HEX_DIGITS[usize::from(byte & 0xF)],
            ]);
        }
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}

fn unescape(field: &[u8]) -> Result<Vec<u8>, String> {
    let mut name = Vec::with_capacity(field.len());
    let mut rest = field;
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let digits = match tail {
                [hi, lo, ..] => hex_value(*hi).zip(hex_value(*lo)),
                _ => None,
            };
            let Some((hi, lo)) = digits else {
                let shown = &rest[..rest.len().min(3)];
                return Err(format!(
                    "bad escape `{}` in name: `%` must be followed by two hex digits",
                    quote(shown)
                ));
            };
            name.push((hi << 4) | lo);
            rest = &tail[2..];
        } else if is_plain(byte) {
            name.push(byte);
            rest = tail;
        } else {
            return Err(format!("unescaped byte 0x{byte:02x} in name"));
        }
    }
    Ok(name)
}

/// A bad field for an error message: at most [`QUOTE_LIMIT`] bytes, escaped as ASCII.
fn quote(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(QUOTE_LIMIT)];
    let ellipsis = if bytes.len() > QUOTE_LIMIT { "..." } else { "" };
    format!("{}{ellipsis}", shown.escape_ascii())
}

/// Parses a whole ledger. `path` is only for error messages.
fn parse(path: &Path, data: &[u8]) -> Result<Vec<Record>, LedgerError> {
    let malformed = |line: usize, reason: String| LedgerError::Malformed {
        path: path.to_owned(),
        line,
        reason,
    };
    let mut records = Vec::new();
    for (index, chunk) in data.split_inclusive(|&byte| byte == b'\n').enumerate() {
        let number = index + 1;
        let Some(line) = chunk.strip_suffix(b"\n") else {
            return Err(malformed(
                number,
                "last line has no newline (a record cut short)".to_owned(),
            ));
        };
        if index == 0 {
            check_header(line).map_err(|reason| malformed(number, reason))?;
        } else {
            records.push(parse_record(line).map_err(|reason| malformed(number, reason))?);
        }
    }
    Ok(records)
}

fn check_header(line: &[u8]) -> Result<(), String> {
    let expected = String::from_utf8_lossy(&header_line())
        .trim_end()
        .to_owned();
    let Some(version) = line
        .strip_prefix(HEADER_MAGIC)
        .and_then(|rest| rest.strip_prefix(b" "))
    else {
        return Err(format!(
            "invalid header `{}`, expected `{expected}`",
            quote(line)
        ));
    };
    if version == LEDGER_VERSION.to_string().as_bytes() {
        Ok(())
    } else {
        Err(format!(
            "unsupported ledger version `{}`, this build reads version {LEDGER_VERSION}",
            quote(version)
        ))
    }
}

fn parse_record(line: &[u8]) -> Result<Record, String> {
    if line.is_empty() {
        return Err("empty line".to_owned());
    }
    let mut fields = line.split(|&byte| byte == b' ');
    let tag = fields.next().unwrap_or_default();
    let registered = match tag {
        b"R" => true,
        b"U" => false,
        _ => {
            return Err(format!(
                "unknown record type `{}`, expected `R` or `U`",
                quote(tag)
            ));
        }
    };
    let kind = match fields.next() {
        None | Some(b"") => return Err("missing object kind".to_owned()),
        Some(token) => ObjectKind::from_token(token).ok_or_else(|| {
            format!(
                "unknown object kind `{}`, expected `file`, `shm` or `sem`",
                quote(token)
            )
        })?,
    };
    let name = match fields.next() {
        None | Some(b"") => return Err("missing object name".to_owned()),
        Some(field) => unescape(field)?,
    };
    if fields.next().is_some() {
        return Err("unexpected space after the name (names escape spaces as %20)".to_owned());
    }
    let object = LedgerObject::new(kind, OsString::from_vec(name));
    Ok(if registered {
        Record::Registered(object)
    } else {
        Record::Destroyed(object)
    })
}

/// The objects registered and not destroyed, in order of first registration since their last
/// destruction.
fn live_set(records: impl IntoIterator<Item = Record>) -> Vec<LedgerObject> {
    let mut live: HashMap<LedgerObject, usize> = HashMap::new();
    for (seq, record) in records.into_iter().enumerate() {
        match record {
            Record::Registered(object) => {
                live.entry(object).or_insert(seq);
            }
            Record::Destroyed(object) => {
                live.remove(&object);
            }
        }
    }
    let mut ordered: Vec<(LedgerObject, usize)> = live.into_iter().collect();
    ordered.sort_unstable_by_key(|&(_, seq)| seq);
    ordered.into_iter().map(|(object, _)| object).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_bytes(data: &[u8]) -> Result<Vec<Record>, LedgerError> {
        parse(Path::new("/test/netmcore.ledger"), data)
    }

    #[test]
    fn escaping_covers_exactly_the_unsafe_bytes() {
        let mut out = Vec::new();
        escape_into(&mut out, b"a b%c\n\x7f\xff~!");
        assert_eq!(out, b"a%20b%25c%0A%7F%FF~!");
        assert_eq!(unescape(&out).as_deref(), Ok(&b"a b%c\n\x7f\xff~!"[..]));
    }

    #[test]
    fn lowercase_hex_is_accepted() {
        assert_eq!(unescape(b"%2f%7E").as_deref(), Ok(&b"/~"[..]));
    }

    #[test]
    fn bad_escapes_are_refused() {
        for field in [&b"%"[..], b"%2", b"%zz", b"a%2g", b"%%"] {
            let err = unescape(field).expect_err("a bad escape");
            assert!(err.starts_with("bad escape"), "{err}");
        }
        let err = unescape(b"a\tb").expect_err("a raw tab");
        assert_eq!(err, "unescaped byte 0x09 in name");
    }

    #[test]
    fn header_line_is_versioned() {
        assert_eq!(header_line(), b"netmcore-ledger 1\n");
        assert!(check_header(b"netmcore-ledger 1").is_ok());
        let err = check_header(b"netmcore-ledger 2").expect_err("version 2");
        assert!(err.contains("unsupported ledger version `2`"), "{err}");
        let err = check_header(b"netmcore-ledger  1").expect_err("two spaces");
        assert!(err.contains("unsupported"), "{err}");
        let err = check_header(b"R shm /x").expect_err("no header");
        assert!(err.starts_with("invalid header"), "{err}");
    }

    #[test]
    fn record_lines_round_trip() {
        let object = LedgerObject::file(PathBuf::from(OsString::from_vec(b"/t/a b\xff".to_vec())));
        let record = Record::Registered(object.clone());
        let line = record.to_line();
        assert_eq!(line, b"R file /t/a%20b%FF\n");
        assert_eq!(parse_record(&line[..line.len() - 1]), Ok(record));
        assert_eq!(Record::Destroyed(object).to_line(), b"U file /t/a%20b%FF\n");
    }

    #[test]
    fn object_kinds_map_from_resource_kinds() {
        let mapped: Vec<_> = ResourceKind::ALL
            .into_iter()
            .map(ObjectKind::of_resource_kind)
            .collect();
        assert_eq!(
            mapped,
            [
                Some(ObjectKind::File),
                None,
                None,
                Some(ObjectKind::Sem),
                Some(ObjectKind::Shm),
                Some(ObjectKind::Shm),
            ]
        );
        let desc = ResourceDesc::PosixShmPreallocated {
            name: "/p".into(),
            size: 4096,
        };
        assert_eq!(
            LedgerObject::from_desc(&desc),
            Some(LedgerObject::shm("/p"))
        );
        assert_eq!(
            LedgerObject::from_desc(&ResourceDesc::ForkPoint {
                join_point: crate::ResId(1)
            }),
            None
        );
    }

    #[test]
    fn display_is_lowercase_and_names_things() {
        assert_eq!(LedgerObject::sem("/s").to_string(), "sem /s");
        assert_eq!(
            Record::Destroyed(LedgerObject::shm("/m")).to_string(),
            "destroyed shm /m"
        );
        let err = parse_bytes(b"netmcore-ledger 1\nX shm /m\n").expect_err("bad type");
        assert_eq!(
            err.to_string(),
            "ledger /test/netmcore.ledger, line 2: unknown record type `X`, expected `R` or `U`"
        );
    }

    #[test]
    fn empty_input_is_an_empty_ledger() {
        assert_eq!(parse_bytes(b"").map(|records| records.len()).ok(), Some(0));
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_bytes(&data);
        }

        #[test]
        fn parsing_near_valid_lines_never_panics(
            body in proptest::collection::vec(
                prop_oneof![
                    Just(b'R'), Just(b'U'), Just(b' '), Just(b'%'), Just(b'\n'), Just(b'f'),
                    Just(b's'), Just(b'h'), Just(b'm'), Just(b'A'), Just(b'0'), Just(0xFF),
                ],
                0..256,
            )
        ) {
            let mut data = header_line();
            data.extend_from_slice(&body);
            let _ = parse_bytes(&data);
        }

        #[test]
        fn names_round_trip(name in proptest::collection::vec(any::<u8>(), 1..64)) {
            let object = LedgerObject::new(ObjectKind::Shm, OsString::from_vec(name));
            let line = Record::Destroyed(object.clone()).to_line();
            prop_assert_eq!(line.iter().filter(|&&byte| byte == b'\n').count(), 1);
            prop_assert_eq!(line.iter().filter(|&&byte| byte == b' ').count(), 2);
            prop_assert_eq!(parse_record(&line[..line.len() - 1]), Ok(Record::Destroyed(object)));
        }
    }
}
