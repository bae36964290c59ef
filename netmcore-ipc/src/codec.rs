//! The one place that knows the message encoding (postcard): encode and decode helpers that
//! return this crate's [`Error`]. Nothing public names the encoding, so it can change with the
//! protocol version.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

fn protocol(what: &'static str, e: postcard::Error) -> Error {
    Error::Protocol {
        what,
        reason: e.to_string(),
    }
}

/// The number of bytes `value` encodes to.
pub(crate) fn encoded_len<T: Serialize + ?Sized>(what: &'static str, value: &T) -> Result<usize> {
    postcard::serialize_with_flavor(value, postcard::ser_flavors::Size::default())
        .map_err(|e| protocol(what, e))
}

/// Encodes `value` into `out`, which must be exactly [`encoded_len`] bytes long.
pub(crate) fn encode_into<T: Serialize + ?Sized>(
    what: &'static str,
    value: &T,
    out: &mut [u8],
) -> Result<()> {
    let len = out.len();
    let used = postcard::to_slice(value, out)
        .map_err(|e| protocol(what, e))?
        .len();
    if used != len {
        return Err(Error::Protocol {
            what,
            reason: format!("encoded to {used} bytes, {len} announced"),
        });
    }
    Ok(())
}

/// Encodes `value` into a new vector.
pub(crate) fn encode<T: Serialize + ?Sized>(what: &'static str, value: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(value).map_err(|e| protocol(what, e))
}

/// Decodes a `T` that must use all of `bytes`.
pub(crate) fn decode<'de, T: Deserialize<'de>>(what: &'static str, bytes: &'de [u8]) -> Result<T> {
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(|e| protocol(what, e))?;
    if !rest.is_empty() {
        return Err(Error::Protocol {
            what,
            reason: format!("{} bytes left over after the message", rest.len()),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_exact_length() {
        let value = (7u32, "text".to_owned(), vec![1u8, 2, 3]);
        let len = encoded_len("t", &value).unwrap();
        let mut buf = vec![0; len];
        encode_into("t", &value, &mut buf).unwrap();
        assert_eq!(buf, encode("t", &value).unwrap());
        assert_eq!(decode::<(u32, String, Vec<u8>)>("t", &buf).unwrap(), value);
    }

    #[test]
    fn trailing_and_short_input_are_errors() {
        let mut buf = encode("t", &5u8).unwrap();
        buf.push(0);
        assert!(matches!(
            decode::<u8>("t", &buf),
            Err(Error::Protocol { what: "t", .. })
        ));
        assert!(matches!(
            decode::<u32>("t", &[]),
            Err(Error::Protocol { .. })
        ));
        let mut small = [0u8; 1];
        assert!(encode_into("t", &1000u32, &mut small).is_err());
        let mut big = [0u8; 9];
        assert!(encode_into("t", &1u32, &mut big).is_err());
    }
}
