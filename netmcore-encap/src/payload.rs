//! Bare payloads: a value's encoding without an envelope, written into and read from a byte
//! slice that the caller owns.
//!
//! This is the encoding of an [`Encap`](crate::Encap)'s payload and nothing else: no magic, no
//! version, no type name or identity. It is for containers that already know the type of what
//! they hold and check it themselves — a queue in shared memory whose header records the type
//! of its messages, say — and want each message in place, in a fixed slot, with no allocation
//! and no envelope per message.
//!
//! ```
//! let mut slot = [0u8; 32];
//! let value = (7u32, String::from("seven"));
//! let len = netmcore_encap::encoded_len(&value)?;
//! assert_eq!(netmcore_encap::encode_to_slice(&value, &mut slot)?, len);
//! let back: (u32, String) = netmcore_encap::decode_exact(&slot[..len])?;
//! assert_eq!(back, value);
//! # Ok::<(), netmcore_encap::EncapError>(())
//! ```
//!
//! As for envelopes, a value that is itself a `Vec<u8>` is copied in one piece (to the same
//! bytes as serde's sequence path), and decoding never panics on any input.

use std::any::{Any, TypeId};

use serde::de::DeserializeOwned;
use serde::{Serialize, Serializer};

use crate::bytes::ByteBuf;
use crate::codec;
use crate::error::EncapError;

/// A byte slice serialized with `serialize_bytes`: the same bytes as serde's sequence of
/// `u8`, a length then the bytes, copied in one piece.
struct ByteString<'a>(&'a [u8]);

impl Serialize for ByteString<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// The error of a failed encoding of a `T`.
fn encode_error<T>(message: String) -> EncapError {
    EncapError::Encode {
        type_name: std::any::type_name::<T>().to_owned(),
        message,
    }
}

/// The length in bytes of the payload encoding of `value`, without writing it anywhere.
///
/// # Errors
///
/// [`EncapError::Encode`] when `T`'s `Serialize` impl fails or serializes a sequence or map
/// without announcing its length.
pub fn encoded_len<T: Serialize + 'static>(value: &T) -> Result<usize, EncapError> {
    match (value as &dyn Any).downcast_ref::<Vec<u8>>() {
        Some(bytes) => codec::encoded_len(&ByteString(bytes)),
        None => codec::encoded_len(value),
    }
    .map_err(encode_error::<T>)
}

/// Writes the payload encoding of `value` at the front of `out` and returns its length (what
/// [`encoded_len`] says).
///
/// # Errors
///
/// [`EncapError::Encode`] when the encoding does not fit in `out` (the bytes of `out` are then
/// meaningless), or as [`encoded_len`].
pub fn encode_to_slice<T: Serialize + 'static>(
    value: &T,
    out: &mut [u8],
) -> Result<usize, EncapError> {
    let room = out.len();
    let written = match (value as &dyn Any).downcast_ref::<Vec<u8>>() {
        Some(bytes) => codec::encode_to_slice(&ByteString(bytes), out),
        None => codec::encode_to_slice(value, out),
    }
    .map_err(encode_error::<T>)?;
    written.ok_or_else(|| {
        encode_error::<T>(format!(
            "the encoding does not fit in the {room} bytes given"
        ))
    })
}

/// Decodes a `T` from `bytes`, which must hold its payload encoding and nothing more.
///
/// Never panics, whatever the bytes: damaged input is an error. (As for envelopes, a deeply
/// nested recursive type recurses once per level.)
///
/// # Errors
///
/// [`EncapError::Decode`] when the bytes do not decode as a `T`;
/// [`EncapError::PayloadTrailingBytes`] when they do with bytes left over.
pub fn decode_exact<T: DeserializeOwned + 'static>(bytes: &[u8]) -> Result<T, EncapError> {
    let type_name = std::any::type_name::<T>();
    // A `Vec<u8>` decodes as a byte string in one copy; anything amiss falls through to the
    // serde path, which reports it.
    if TypeId::of::<T>() == TypeId::of::<Vec<u8>>()
        && let Ok((buf, used)) = codec::decode_prefix::<ByteBuf>(bytes)
        && used == bytes.len()
        && let Ok(value) = (Box::new(buf.into_inner()) as Box<dyn Any>).downcast::<T>()
    {
        return Ok(*value);
    }
    let (value, used) = codec::decode_prefix::<T>(bytes).map_err(|message| EncapError::Decode {
        type_name: type_name.to_owned(),
        payload_len: bytes.len(),
        message,
    })?;
    if used != bytes.len() {
        return Err(EncapError::PayloadTrailingBytes {
            type_name: type_name.to_owned(),
            trailing: bytes.len() - used,
            payload_len: bytes.len(),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde::Deserialize;

    use super::*;
    use crate::Encap;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Sample {
        id: u32,
        name: String,
        values: Vec<i64>,
        tag: Option<char>,
    }

    /// The bytes after the envelope header: the payload of an `Encap` of `value`.
    fn envelope_payload<T: Serialize + 'static>(value: &T) -> Vec<u8> {
        let encap = Encap::wrap(value).expect("wraps");
        let bytes = encap.as_bytes();
        bytes[bytes.len() - encap.payload_len()..].to_vec()
    }

    #[test]
    fn payloads_are_those_of_envelopes() {
        let sample = Sample {
            id: 3,
            name: "three".into(),
            values: vec![-5, 1 << 50],
            tag: Some('é'),
        };
        let mut out = [0u8; 64];
        let len = encode_to_slice(&sample, &mut out).expect("fits");
        assert_eq!(len, encoded_len(&sample).expect("counts"));
        assert_eq!(&out[..len], envelope_payload(&sample));
        assert_eq!(
            decode_exact::<Sample>(&out[..len]).expect("decodes"),
            sample
        );
        let bytes: Vec<u8> = (0..300).map(|i| (i % 251) as u8).collect();
        let mut out = vec![0u8; 400];
        let len = encode_to_slice(&bytes, &mut out).expect("fits");
        assert_eq!(len, 302, "a two-byte length, then the bytes");
        assert_eq!(len, encoded_len(&bytes).expect("counts"));
        assert_eq!(&out[..len], envelope_payload(&bytes));
        assert_eq!(
            decode_exact::<Vec<u8>>(&out[..len]).expect("decodes"),
            bytes
        );
        assert_eq!(encoded_len(&()).expect("counts"), 0);
        assert_eq!(encode_to_slice(&(), &mut []).expect("fits in nothing"), 0);
        decode_exact::<()>(&[]).expect("nothing is a unit");
    }

    #[test]
    fn an_encoding_that_does_not_fit_is_an_error() {
        let mut out = [0u8; 301];
        let err = encode_to_slice(&vec![1u8; 300], &mut out).expect_err("one byte short");
        assert!(
            err.to_string().contains("does not fit in the 301 bytes"),
            "{err}"
        );
        let err = encode_to_slice(&"abcdef".to_owned(), &mut out[..6]).expect_err("short");
        assert!(matches!(err, EncapError::Encode { .. }), "{err}");
        assert_eq!(
            encode_to_slice(&"abcdef".to_owned(), &mut out[..7]).expect("fits"),
            7
        );
    }

    #[test]
    fn bad_payloads_are_errors() {
        assert!(matches!(
            decode_exact::<u64>(&[7, 0]),
            Err(EncapError::PayloadTrailingBytes { trailing: 1, .. })
        ));
        assert!(matches!(
            decode_exact::<String>(&[3, b'a']),
            Err(EncapError::Decode { .. })
        ));
        // A byte vector whose length says more than there is, or less.
        assert!(decode_exact::<Vec<u8>>(&[3, 1, 2]).is_err());
        assert!(decode_exact::<Vec<u8>>(&[1, 1, 2]).is_err());
        assert_eq!(decode_exact::<Vec<u8>>(&[2, 1, 2]).expect("exact"), [1, 2]);
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_fail_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_exact::<Sample>(&bytes);
            let _ = decode_exact::<Vec<u8>>(&bytes);
            let _ = decode_exact::<(u64, String)>(&bytes);
            if let Ok(v) = decode_exact::<Vec<u8>>(&bytes) {
                let mut out = vec![0u8; bytes.len()];
                prop_assert_eq!(encode_to_slice(&v, &mut out).expect("fits back"), bytes.len());
                prop_assert_eq!(out, bytes);
            }
        }

        #[test]
        fn values_round_trip(id: u32, name in ".{0,20}", values in proptest::collection::vec(any::<i64>(), 0..8), tag: Option<char>) {
            let sample = Sample { id, name, values, tag };
            let len = encoded_len(&sample).expect("counts");
            let mut out = vec![0u8; len];
            prop_assert_eq!(encode_to_slice(&sample, &mut out).expect("fits exactly"), len);
            prop_assert_eq!(decode_exact::<Sample>(&out).expect("decodes"), sample);
        }
    }
}
