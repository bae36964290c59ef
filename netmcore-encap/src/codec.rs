//! The private codec seam: the only module of this crate that names postcard.
//!
//! Everything postcard-specific (its serializer flavor, its error type, its error messages) stays
//! in here, so that the public API never exposes a postcard type and the payload encoding could
//! be replaced by bumping [`crate::FORMAT_VERSION`] without touching any caller. The functions
//! return plain lowercase messages; the caller wraps them in an [`crate::EncapError`] that names
//! the type.

use std::cell::Cell;

use postcard::ser_flavors::Flavor;
use serde::{Deserialize, Serialize};

/// Serializes `value` by appending its encoding to `buf`, in one pass and without any
/// intermediate buffer, and returns the grown buffer.
///
/// `limit_end` is the largest length the buffer may reach; going past it fails with a message
/// that names `limit` (the payload limit the caller enforces). On error the buffer is dropped.
pub(crate) fn encode_into<T>(
    value: &T,
    buf: Vec<u8>,
    limit_end: usize,
    limit: u64,
) -> Result<Vec<u8>, String>
where
    T: Serialize + ?Sized,
{
    let over_limit = Cell::new(false);
    let flavor = AppendVec {
        buf,
        limit_end,
        over_limit: &over_limit,
    };
    match postcard::serialize_with_flavor(value, flavor) {
        Ok(buf) => Ok(buf),
        // Our flavor is the only thing that can fail a write, and postcard reports every flavor
        // failure as `SerializeBufferFull`; the flag says whether it was the limit.
        Err(_) if over_limit.get() => Err(format!(
            "the encoded payload exceeds the limit of {limit} bytes"
        )),
        Err(error) => Err(encode_message(&error)),
    }
}

/// Deserializes a `T` from the front of `bytes`, borrowing from it (no copy of the payload), and
/// returns the value with the number of bytes it used. The caller decides what to do with the
/// bytes that remain.
pub(crate) fn decode_prefix<'a, T>(bytes: &'a [u8]) -> Result<(T, usize), String>
where
    T: Deserialize<'a>,
{
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((value, rest)) => Ok((value, bytes.len() - rest.len())),
        Err(error) => Err(decode_message(&error)),
    }
}

/// The length of the encoding of `value`, found by serializing it into a counter (nothing is
/// written anywhere; a byte string counts its length at once).
pub(crate) fn encoded_len<T>(value: &T) -> Result<usize, String>
where
    T: Serialize + ?Sized,
{
    postcard::serialize_with_flavor(value, Count(0)).map_err(|error| encode_message(&error))
}

/// Serializes `value` into the front of `out` and returns how many bytes it used.
///
/// `Ok(None)` when the encoding does not fit in `out` (what was written before the end is left
/// there, meaningless).
pub(crate) fn encode_to_slice<T>(value: &T, out: &mut [u8]) -> Result<Option<usize>, String>
where
    T: Serialize + ?Sized,
{
    match postcard::to_slice(value, out) {
        Ok(used) => Ok(Some(used.len())),
        // The slice flavor fails only when it is full.
        Err(postcard::Error::SerializeBufferFull) => Ok(None),
        Err(error) => Err(encode_message(&error)),
    }
}

/// A postcard flavor that only counts the bytes it is given.
struct Count(usize);

impl Flavor for Count {
    type Output = usize;

    #[inline]
    fn try_push(&mut self, _data: u8) -> postcard::Result<()> {
        self.0 += 1;
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0 += data.len();
        Ok(())
    }

    fn finalize(self) -> postcard::Result<usize> {
        Ok(self.0)
    }
}

/// A postcard flavor that appends to a `Vec<u8>` it owns for the duration of the serialization.
///
/// Unlike postcard's own `AllocVec` it starts from a vector that already holds the envelope
/// header, so the payload lands in its final place, and it checks the size limit only when the
/// vector must grow (rarely, since growth doubles), keeping the per-byte path to a push. The
/// vector is owned rather than borrowed because a borrowed one costs an extra pointer chase per
/// byte, about half the speed for byte sequences. The limit flag lives outside, in a `Cell`,
/// because postcard drops the flavor on error.
struct AppendVec<'a> {
    buf: Vec<u8>,
    limit_end: usize,
    over_limit: &'a Cell<bool>,
}

impl AppendVec<'_> {
    /// Makes room for `additional` more bytes, unless that would pass the limit.
    #[cold]
    #[inline(never)]
    fn grow(&mut self, additional: usize) -> postcard::Result<()> {
        match self.buf.len().checked_add(additional) {
            Some(end) if end <= self.limit_end => {
                self.buf.reserve(additional);
                Ok(())
            }
            _ => {
                self.over_limit.set(true);
                Err(postcard::Error::SerializeBufferFull)
            }
        }
    }
}

impl Flavor for AppendVec<'_> {
    type Output = Vec<u8>;

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        if self.buf.len() == self.buf.capacity() {
            self.grow(1)?;
        }
        self.buf.push(data);
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if data.len() > self.buf.capacity() - self.buf.len() {
            self.grow(data.len())?;
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        // Capacity grows without the limit check while it is below capacity, so check the final
        // length once here.
        if self.buf.len() > self.limit_end {
            self.over_limit.set(true);
            return Err(postcard::Error::SerializeBufferFull);
        }
        Ok(self.buf)
    }
}

/// A lowercase message for a postcard error met while encoding.
fn encode_message(error: &postcard::Error) -> String {
    use postcard::Error as E;
    match error {
        E::SerializeSeqLengthUnknown => {
            "a sequence or map did not report its length up front (the payload encoding needs it; \
             #[serde(flatten)] and iterator-based Serialize impls cause this)"
                .to_owned()
        }
        // postcard drops the message of `serde::ser::Error::custom`, so this is all we know.
        E::SerdeSerCustom => "the value's Serialize impl reported an error".to_owned(),
        E::CollectStrError => "formatting a value through collect_str failed".to_owned(),
        other => lowercase_first(&other.to_string()),
    }
}

/// A lowercase message for a postcard error met while decoding.
fn decode_message(error: &postcard::Error) -> String {
    use postcard::Error as E;
    let message = match error {
        E::DeserializeUnexpectedEnd => "the payload ended before the value was complete",
        E::DeserializeBadVarint => "an integer is malformed or too large for its type",
        E::DeserializeBadBool => "a bool byte is neither 0 nor 1",
        E::DeserializeBadChar => "a char is not a unicode scalar value",
        E::DeserializeBadUtf8 => "a string is not valid utf-8",
        E::DeserializeBadOption => "an option tag is neither 0 nor 1",
        E::DeserializeBadEnum => "an enum discriminant is larger than u32::MAX",
        E::DeserializeBadEncoding => "the payload is not well encoded",
        // postcard drops the message of `serde::de::Error::custom`, so this is all we know.
        E::SerdeDeCustom => {
            "the type's Deserialize impl rejected the data (for example an unknown enum variant \
             or an out-of-range value)"
        }
        E::WontImplement => {
            "the type needs a self-describing format (deserialize_any: untagged or internally \
             tagged enums, #[serde(flatten)], serde_json::Value and the like), which the payload \
             encoding is not"
        }
        other => return lowercase_first(&other.to_string()),
    };
    message.to_owned()
}

/// `message` with its first character lowercased, for postcard messages that start capitalised.
fn lowercase_first(message: &str) -> String {
    let mut chars = message.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_appends_after_existing_bytes() {
        let buf = encode_into(&(7_u8, "ab"), b"head".to_vec(), usize::MAX, u64::MAX).unwrap();
        assert_eq!(buf, b"head\x07\x02ab");
    }

    #[test]
    fn encode_stops_at_the_limit() {
        let err = encode_into(&vec![0_u8; 100], Vec::new(), 50, 50).unwrap_err();
        assert_eq!(err, "the encoded payload exceeds the limit of 50 bytes");

        let err = encode_into(&"x".repeat(100), Vec::new(), 50, 50).unwrap_err();
        assert_eq!(err, "the encoded payload exceeds the limit of 50 bytes");
    }

    #[test]
    fn encode_at_exactly_the_limit_succeeds() {
        // A 3-byte Vec<u8> encodes as a one-byte length and three bytes.
        let buf = encode_into(&vec![1_u8, 2, 3], Vec::with_capacity(64), 4, 4).unwrap();
        assert_eq!(buf, [3, 1, 2, 3]);
        let err = encode_into(&vec![1_u8, 2, 3], Vec::with_capacity(64), 3, 3).unwrap_err();
        assert_eq!(err, "the encoded payload exceeds the limit of 3 bytes");
    }

    #[test]
    fn decode_reports_consumed_bytes() {
        let (value, used) = decode_prefix::<u8>(&[5, 9, 9]).unwrap();
        assert_eq!((value, used), (5, 1));
    }

    #[test]
    fn decode_messages_are_lowercase() {
        let err = decode_prefix::<String>(&[3, b'a']).unwrap_err();
        assert_eq!(err, "the payload ended before the value was complete");
        let err = decode_prefix::<bool>(&[2]).unwrap_err();
        assert_eq!(err, "a bool byte is neither 0 nor 1");
    }

    #[test]
    fn unknown_length_sequences_fail_to_encode() {
        struct Unsized;
        impl Serialize for Unsized {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq((0..3_u8).filter(|n| n % 2 == 0))
            }
        }
        let err = encode_into(&Unsized, Vec::new(), usize::MAX, u64::MAX).unwrap_err();
        assert!(
            err.starts_with("a sequence or map did not report its length"),
            "{err}"
        );
    }

    #[test]
    fn lowercase_first_handles_edges() {
        assert_eq!(lowercase_first(""), "");
        assert_eq!(lowercase_first("Hit the end"), "hit the end");
    }
}
