//! Type-tagged, versioned serialization of values: the "encapsulated" values that netmcore
//! passes between its processes.
//!
//! ```
//! use netmcore_encap::{Encap, EncapError};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! struct Job {
//!     name: String,
//!     inputs: Vec<u32>,
//! }
//!
//! let job = Job { name: "sum".into(), inputs: vec![1, 2, 3] };
//! let encap = Encap::wrap(&job)?;
//! assert_eq!(encap.type_name(), std::any::type_name::<Job>());
//!
//! // The envelope is plain bytes that another process (of the same binary) can read back.
//! let received = Encap::from_bytes(encap.as_bytes())?;
//! assert_eq!(received.unwrap::<Job>()?, job);
//!
//! // Asking for another type is an error, not a misreading of the bytes.
//! match received.unwrap::<String>() {
//!     Err(EncapError::TypeMismatch { expected, found }) => {
//!         assert_eq!(expected, std::any::type_name::<String>());
//!         assert_eq!(found, std::any::type_name::<Job>());
//!     }
//!     other => panic!("expected a type mismatch, got {other:?}"),
//! }
//! # Ok::<(), EncapError>(())
//! ```
//!
//! An [`Encap`] holds a value serialized with serde together with the name and identity of its
//! type. [`Encap::wrap`] makes one from any `T: Serialize + 'static`; [`Encap::unwrap`] gives the
//! value back, but only as the very type it was wrapped as. The crate has no OS code: moving the
//! bytes between processes is the job of the crates above it.
//!
//! # Envelope format
//!
//! An `Encap` is one contiguous byte buffer, the envelope, laid out as follows (all integers
//! little-endian):
//!
//! | offset   | size | field                                               |
//! |----------|------|-----------------------------------------------------|
//! | 0        | 4    | magic [`MAGIC`], the bytes `NMEC`                   |
//! | 4        | 2    | format version, `u16`, [`FORMAT_VERSION`] (now 1)    |
//! | 6        | 8    | type identity, `u64`                                |
//! | 14       | 4    | type name length *n*, `u32`, at most [`MAX_TYPE_NAME_LEN`] |
//! | 18       | *n*  | type name, utf-8                                    |
//! | 18 + *n* | 8    | payload length *m*, `u64`, at most [`MAX_PAYLOAD_LEN`] |
//! | 26 + *n* | *m*  | payload: the serialized value                       |
//!
//! The envelope is exactly 26 + *n* + *m* bytes. [`Encap::from_bytes`] checks all of it except
//! the payload and never panics: a wrong magic, a version other than [`FORMAT_VERSION`] (checked
//! right after the magic, so a later format may change everything behind it), a length over its
//! limit, an input that ends early and an input with bytes after the envelope are each their own
//! [`EncapError`] variant. A length field that claims more bytes than the input holds is reported
//! as [`EncapError::Truncated`], since that is indistinguishable from a cut-off input.
//!
//! The payload encoding is private to this crate: today it is postcard's compact, non
//! self-describing format, but it may change with the format version and no API exposes it. The
//! payload is checked by [`Encap::unwrap`], which decodes straight from the envelope without
//! copying it and refuses bytes left over after the value.
//!
//! [`Encap`] also implements `Serialize` and `Deserialize`, as one byte string holding the whole
//! envelope, so that an `Encap` can travel inside other serialized messages.
//!
//! # Type identity
//!
//! Type names alone are ambiguous (two versions of a crate can both define `mycrate::Point`) and
//! are only a debugging aid by the standard library's own account. So the envelope also carries
//! an identity: the [`TypeId`](std::any::TypeId) of the type hashed to a `u64` with the
//! standard library's fixed-key hasher. [`Encap::unwrap`] requires both the name and the identity
//! to match; when only the identity differs, the [`EncapError::TypeMismatch`] message says that
//! a different type with the same name was found.
//!
//! **The identity is only meaningful between processes running the same binary.** A `TypeId`
//! may differ between builds, compilers and programs, and so may the hasher. That is netmcore's
//! situation, since every worker is forked from the master; an envelope written by another build
//! is refused with `TypeMismatch` rather than misread. Do not store envelopes for later runs.
//!
//! # Limits
//!
//! - A payload is at most [`MAX_PAYLOAD_LEN`] (4 GiB) and a type name at most
//!   [`MAX_TYPE_NAME_LEN`] (64 KiB). Larger lengths in an envelope are refused before anything
//!   is allocated; larger values fail to wrap.
//! - The payload encoding is not self-describing. Types whose serde impls need
//!   `deserialize_any` (untagged or internally tagged enums, `#[serde(flatten)]`,
//!   `serde_json::Value`) fail to unwrap or even to wrap, and `#[serde(skip_serializing_if)]`
//!   makes a value unreadable; [`EncapError::Encode`] and [`EncapError::Decode`] say which.
//! - serde sees a `Vec<u8>` as a sequence, one `u8` at a time. A value that *is* a `Vec<u8>`
//!   is wrapped and unwrapped in one copy all the same (the same bytes as the serde path); a
//!   `Vec<u8>` *inside* another type goes byte by byte unless it is a [`ByteBuf`] or marked
//!   `#[serde(with = "netmcore_encap::bytes")]` (see the [`bytes`] module).
//! - Buffers of [`LARGE_BUFFER`] bytes or more that the crate allocates (an envelope, a decoded
//!   `Vec<u8>`) go through a hook that the program may set with [`set_large_buffer_hook`]
//!   before they are filled; netmcore's master sets one that asks for huge pages.
//! - Decoding a recursive type (a tree of `Box`es, say) recurses once per nesting level, so a
//!   damaged payload with deep nesting can exhaust the stack. Payloads come from processes of
//!   the same program, which is why there is no depth limit.
#![deny(unsafe_code)]

pub mod bytes;
mod codec;
mod encap;
mod envelope;
mod error;
mod large;
mod payload;

pub use bytes::ByteBuf;
pub use encap::{Encap, Pieces, SharedBytes, with_shared_source};
pub use error::EncapError;
pub use large::{LARGE_BUFFER, buffer_with_capacity, set_large_buffer_hook};
pub use payload::{decode_exact, encode_to_slice, encoded_len};

/// The first four bytes of every envelope: `NMEC`.
pub const MAGIC: [u8; 4] = *b"NMEC";

/// The envelope format version this build writes and the only one it reads.
pub const FORMAT_VERSION: u16 = 1;

/// The longest type name an envelope may carry, in bytes (64 KiB).
pub const MAX_TYPE_NAME_LEN: usize = 64 * 1024;

/// The longest payload an envelope may carry, in bytes (4 GiB).
///
/// Wrapping a value whose encoding is longer fails with [`EncapError::Encode`]; an envelope that
/// declares a longer payload fails to decode with [`EncapError::TooLarge`].
pub const MAX_PAYLOAD_LEN: u64 = 4 * 1024 * 1024 * 1024;
