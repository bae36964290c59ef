//! Identifiers, resource kinds, inheritance requests and resource descriptions.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A resource id (the seed's `` `Resource n ``): a counter of the master that starts at 0 and
/// is never reused during one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ResId(pub u64);

impl fmt::Display for ResId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "resource {}", self.0)
    }
}

/// A process id (the seed's `` `Process n ``). This is not the Unix pid: it is a counter of the
/// master, separate from the resource counter, and the first process started is 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProcessId(pub u64);

impl fmt::Display for ProcessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "process {}", self.0)
    }
}

/// What kind of object a resource id stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ResourceKind {
    /// A file in the file system, named by an absolute path.
    File,
    /// The start half of a process type: `start` forks a process through it.
    ForkPoint,
    /// The finish half of a process type: `join` waits for a process through it.
    JoinPoint,
    /// A POSIX named semaphore (`sem_open`).
    PosixSem,
    /// A POSIX shared memory object (`shm_open`) that workers map themselves.
    PosixShm,
    /// A POSIX shared memory object mapped by the master and inherited by the workers it forks.
    PosixShmPreallocated,
}

impl ResourceKind {
    /// Every kind, in declaration order.
    pub const ALL: [ResourceKind; 6] = [
        ResourceKind::File,
        ResourceKind::ForkPoint,
        ResourceKind::JoinPoint,
        ResourceKind::PosixSem,
        ResourceKind::PosixShm,
        ResourceKind::PosixShmPreallocated,
    ];

    /// A short lowercase name for messages, e.g. `"posix shm"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::File => "file",
            ResourceKind::ForkPoint => "fork point",
            ResourceKind::JoinPoint => "join point",
            ResourceKind::PosixSem => "posix semaphore",
            ResourceKind::PosixShm => "posix shm",
            ResourceKind::PosixShmPreallocated => "preallocated posix shm",
        }
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which inheritable resources a newly started process receives.
///
/// Only preallocated shared memory is inherited: it is mapped by the master before the fork and
/// so appears in the child at the same address. The default is [`Inherit::Nothing`], as the
/// seed's documentation says (least privilege).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Inherit {
    /// Inherit nothing.
    #[default]
    Nothing,
    /// Inherit every inheritable resource the master has.
    All,
    /// Inherit exactly these resources.
    Resources(Vec<ResId>),
}

/// The description of a resource, as the master's registry keeps it and as it travels to a
/// worker that asks for it. It names the object; it does not hold any OS handle.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ResourceDesc {
    /// A file, by absolute path (serialized as raw bytes, so non-UTF-8 paths travel too).
    File(#[serde(with = "path_bytes")] PathBuf),
    /// A fork point; processes started through it are joined through `join_point`.
    ForkPoint {
        /// The join point defined together with this fork point.
        join_point: ResId,
    },
    /// A join point for the processes started through `fork_point`.
    JoinPoint {
        /// The fork point defined together with this join point.
        fork_point: ResId,
    },
    /// A named POSIX semaphore, by its name (starting with `/`).
    PosixSem(String),
    /// A POSIX shared memory object, by its name (starting with `/`).
    PosixShm(String),
    /// A POSIX shared memory object that the master created and mapped.
    PosixShmPreallocated {
        /// The object's name (starting with `/`).
        name: String,
        /// Its fixed size in bytes.
        size: usize,
    },
}

impl ResourceDesc {
    /// The kind of resource this describes.
    pub fn kind(&self) -> ResourceKind {
        match self {
            ResourceDesc::File(_) => ResourceKind::File,
            ResourceDesc::ForkPoint { .. } => ResourceKind::ForkPoint,
            ResourceDesc::JoinPoint { .. } => ResourceKind::JoinPoint,
            ResourceDesc::PosixSem(_) => ResourceKind::PosixSem,
            ResourceDesc::PosixShm(_) => ResourceKind::PosixShm,
            ResourceDesc::PosixShmPreallocated { .. } => ResourceKind::PosixShmPreallocated,
        }
    }
}

/// Serde helpers that write a path as its raw bytes, for
/// `#[serde(with = "netmcore_resources::path_bytes")]`: Unix paths need not be UTF-8, and the
/// default `PathBuf` encoding refuses those that are not.
pub mod path_bytes {
    use std::ffi::OsString;
    use std::fmt;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::path::{Path, PathBuf};

    use serde::de::{self, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    /// Writes `path` as a byte string.
    ///
    /// # Errors
    ///
    /// Whatever the serializer reports.
    pub fn serialize<S: Serializer>(path: &Path, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(path.as_os_str().as_bytes())
    }

    /// Reads a path written by [`serialize`] (a byte string, or a sequence of bytes).
    ///
    /// # Errors
    ///
    /// Whatever the deserializer reports, or a type error for input that is not bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<PathBuf, D::Error> {
        struct PathVisitor;

        impl<'de> Visitor<'de> for PathVisitor {
            type Value = PathBuf;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a path as bytes")
            }

            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<PathBuf, E> {
                Ok(PathBuf::from(OsString::from_vec(v.to_vec())))
            }

            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<PathBuf, E> {
                Ok(PathBuf::from(OsString::from_vec(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<PathBuf, E> {
                Ok(PathBuf::from(v))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PathBuf, A::Error> {
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(b) = seq.next_element::<u8>()? {
                    bytes.push(b);
                }
                Ok(PathBuf::from(OsString::from_vec(bytes)))
            }
        }

        deserializer.deserialize_bytes(PathVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inherit_defaults_to_nothing() {
        assert_eq!(Inherit::default(), Inherit::Nothing);
    }

    #[test]
    fn display_names_the_id() {
        assert_eq!(ResId(7).to_string(), "resource 7");
        assert_eq!(ProcessId(0).to_string(), "process 0");
        assert_eq!(
            ResourceKind::PosixShmPreallocated.to_string(),
            "preallocated posix shm"
        );
    }

    #[test]
    fn desc_kind_matches_variant() {
        let descs = [
            ResourceDesc::File("/tmp/x".into()),
            ResourceDesc::ForkPoint {
                join_point: ResId(1),
            },
            ResourceDesc::JoinPoint {
                fork_point: ResId(0),
            },
            ResourceDesc::PosixSem("/s".into()),
            ResourceDesc::PosixShm("/m".into()),
            ResourceDesc::PosixShmPreallocated {
                name: "/p".into(),
                size: 4096,
            },
        ];
        let kinds: Vec<_> = descs.iter().map(ResourceDesc::kind).collect();
        assert_eq!(kinds, ResourceKind::ALL);
    }
}
