//! Fast byte buffers: serde sees a `Vec<u8>` as a sequence of `u8`, one element at a time; these
//! helpers make it one byte string, which the payload encoding copies in one piece.
//!
//! A value that is itself a `Vec<u8>` needs neither: [`Encap::wrap`](crate::Encap::wrap) and
//! [`Encap::unwrap`](crate::Encap::unwrap) copy it in one piece on their own. Use [`ByteBuf`]
//! for a buffer inside a tuple or enum, or `#[serde(with = "netmcore_encap::bytes")]` on a
//! `Vec<u8>` field (the same trick as the `serde_bytes` crate, without the dependency):
//!
//! ```
//! use netmcore_encap::{ByteBuf, Encap};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Block {
//!     offset: u64,
//!     #[serde(with = "netmcore_encap::bytes")]
//!     data: Vec<u8>,
//! }
//!
//! let block = Encap::wrap(&Block { offset: 0, data: vec![7; 4096] })?;
//! assert_eq!(block.unwrap::<Block>()?.data.len(), 4096);
//!
//! let raw = Encap::wrap(&ByteBuf::from(vec![1, 2, 3]))?;
//! assert_eq!(raw.unwrap::<ByteBuf>()?.into_inner(), [1, 2, 3]);
//! # Ok::<(), netmcore_encap::EncapError>(())
//! ```
//!
//! In the payload both forms are the same bytes (a length, then the bytes); only the speed
//! differs. A `ByteBuf` and a `Vec<u8>` are still different types to
//! [`Encap::unwrap`](crate::Encap::unwrap).

use std::fmt;
use std::ops::{Deref, DerefMut};

use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Serializes bytes as one byte string (`serialize_bytes`); for
/// `#[serde(with = "netmcore_encap::bytes")]` or `serialize_with`.
///
/// # Errors
///
/// Whatever the serializer returns.
pub fn serialize<T, S>(bytes: &T, serializer: S) -> Result<S::Ok, S::Error>
where
    T: AsRef<[u8]> + ?Sized,
    S: Serializer,
{
    serializer.serialize_bytes(bytes.as_ref())
}

/// Deserializes a byte string (or a sequence of `u8`) into a `Vec<u8>`; for
/// `#[serde(with = "netmcore_encap::bytes")]` or `deserialize_with`.
///
/// # Errors
///
/// Whatever the deserializer returns, or a type error when the input is not bytes.
pub fn deserialize<'de, D>(deserializer: D) -> Result<Vec<u8>, D::Error>
where
    D: Deserializer<'de>,
{
    deserializer.deserialize_byte_buf(BytesVisitor)
}

/// A `Vec<u8>` that serializes as one byte string: wrapping and unwrapping it copies the bytes
/// with `memcpy` instead of handling them one at a time.
///
/// `Debug` shows the length only.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteBuf(
    /// The bytes.
    pub Vec<u8>,
);

impl ByteBuf {
    /// The bytes, as a `Vec<u8>`.
    #[must_use]
    pub fn into_inner(self) -> Vec<u8> {
        self.0
    }
}

impl fmt::Debug for ByteBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ByteBuf(<{} bytes>)", self.0.len())
    }
}

impl From<Vec<u8>> for ByteBuf {
    fn from(bytes: Vec<u8>) -> Self {
        ByteBuf(bytes)
    }
}

impl From<ByteBuf> for Vec<u8> {
    fn from(bytes: ByteBuf) -> Self {
        bytes.0
    }
}

impl Deref for ByteBuf {
    type Target = Vec<u8>;

    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl DerefMut for ByteBuf {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

impl AsRef<[u8]> for ByteBuf {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Serialize for ByteBuf {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize(deserializer).map(ByteBuf)
    }
}

/// The serde visitor behind [`deserialize`].
struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
        Ok(crate::large::copy_of(bytes))
    }

    fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(bytes)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        // Trust the size hint only so far: it comes from the input.
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64 * 1024));
        while let Some(byte) = seq.next_element()? {
            bytes.push(byte);
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use serde::de::value::{BytesDeserializer, Error as ValueError, SeqDeserializer};

    use super::*;
    use crate::Encap;

    #[test]
    fn byte_buf_round_trips_through_encap() {
        let data = ByteBuf::from((0..=255).collect::<Vec<u8>>());
        let encap = Encap::wrap(&data).unwrap();
        // A two-byte varint length, then the bytes.
        assert_eq!(encap.payload_len(), 2 + 256);
        assert_eq!(encap.unwrap::<ByteBuf>().unwrap(), data);
        assert!(encap.unwrap::<Vec<u8>>().is_err());
    }

    #[test]
    fn field_attribute_round_trips() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Block {
            id: u8,
            #[serde(with = "crate::bytes")]
            data: Vec<u8>,
        }
        let block = Block {
            id: 3,
            data: vec![9; 1000],
        };
        let encap = Encap::wrap(&block).unwrap();
        assert_eq!(encap.unwrap::<Block>().unwrap(), block);
    }

    #[test]
    fn accepts_bytes_and_sequences() {
        let from_bytes = deserialize(BytesDeserializer::<ValueError>::new(b"abc")).unwrap();
        assert_eq!(from_bytes, b"abc");
        let from_seq = deserialize(SeqDeserializer::<_, ValueError>::new(
            b"xyz".iter().copied(),
        ))
        .unwrap();
        assert_eq!(from_seq, b"xyz");
        assert_eq!(
            BytesVisitor.visit_byte_buf::<ValueError>(vec![1]).unwrap(),
            [1]
        );
    }

    #[test]
    fn debug_shows_the_length_only() {
        assert_eq!(
            format!("{:?}", ByteBuf(vec![0; 5000])),
            "ByteBuf(<5000 bytes>)"
        );
    }

    #[test]
    fn deref_and_conversions() {
        let mut buf = ByteBuf::default();
        buf.push(1);
        assert_eq!(buf.len(), 1);
        assert_eq!(buf.as_ref(), [1]);
        assert_eq!(Vec::from(buf.clone()), [1]);
        assert_eq!(buf.into_inner(), [1]);
    }
}
