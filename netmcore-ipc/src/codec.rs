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

/// Encodes `value` into `memfd` with `pwrite`, from offset 0: small pieces are gathered in a
/// buffer, a large byte string (an `Encap`'s envelope) is written straight from where it lies.
/// Writing a memfd with `pwrite` costs half of touching a fresh mapping of it: the kernel need
/// not zero the pages first, and takes no page fault per page. Fails unless exactly `len`
/// bytes were written.
pub(crate) fn encode_to_memfd<T: Serialize + ?Sized>(
    what: &'static str,
    value: &T,
    memfd: &crate::memfd::Memfd,
    len: usize,
) -> Result<()> {
    let failure = std::cell::RefCell::new(None);
    let flavor = MemfdWriter {
        memfd,
        buf: Vec::with_capacity(WRITE_BUFFER),
        offset: 0,
        failure: &failure,
    };
    let written = match postcard::serialize_with_flavor(value, flavor) {
        Ok(written) => written,
        Err(e) => return Err(failure.into_inner().unwrap_or_else(|| protocol(what, e))),
    };
    if written != len as u64 {
        return Err(Error::Protocol {
            what,
            reason: format!("encoded to {written} bytes, {len} announced"),
        });
    }
    Ok(())
}

/// Gathered writes of [`MemfdWriter`] go out in pieces of this size; a byte string at least
/// this long is written directly.
const WRITE_BUFFER: usize = 64 << 10;

/// A postcard flavor that writes into a memfd with `pwrite`.
struct MemfdWriter<'a> {
    memfd: &'a crate::memfd::Memfd,
    buf: Vec<u8>,
    /// Where `buf` goes in the file.
    offset: u64,
    /// The error of a failed write (postcard's own error type cannot carry it).
    failure: &'a std::cell::RefCell<Option<Error>>,
}

impl MemfdWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        match self.memfd.write_at(self.offset, bytes) {
            Ok(()) => {
                self.offset += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                *self.failure.borrow_mut() = Some(e);
                Err(postcard::Error::SerializeBufferFull)
            }
        }
    }

    fn flush(&mut self) -> postcard::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.buf);
        let result = self.write(&buf);
        self.buf = buf;
        self.buf.clear();
        result
    }
}

impl postcard::ser_flavors::Flavor for MemfdWriter<'_> {
    /// The number of bytes written.
    type Output = u64;

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        if self.buf.len() == WRITE_BUFFER {
            self.flush()?;
        }
        self.buf.push(data);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if data.len() >= WRITE_BUFFER {
            self.flush()?;
            return self.write(data);
        }
        if self.buf.len() + data.len() > WRITE_BUFFER {
            self.flush()?;
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    fn finalize(mut self) -> postcard::Result<u64> {
        self.flush()?;
        Ok(self.offset)
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
    fn encoding_into_a_memfd_writes_the_same_bytes() {
        let big = vec![9u8; 3 * WRITE_BUFFER + 17];
        let values = [
            (1u32, "small".to_owned(), vec![1u8, 2, 3]),
            (2u32, "x".repeat(WRITE_BUFFER - 1), big.clone()),
            (3u32, "y".repeat(2 * WRITE_BUFFER), vec![]),
        ];
        for value in values {
            let expected = encode("t", &value).unwrap();
            let memfd = crate::memfd::Memfd::create("codec-test", 0).unwrap();
            encode_to_memfd("t", &value, &memfd, expected.len()).unwrap();
            assert_eq!(memfd.read_to_vec().unwrap(), expected);
            // Another announced length is an error.
            let memfd = crate::memfd::Memfd::create("codec-test", 0).unwrap();
            let wrong = encode_to_memfd("t", &value, &memfd, expected.len() + 1);
            assert!(
                matches!(wrong, Err(Error::Protocol { what: "t", .. })),
                "{wrong:?}"
            );
        }
        // A sealed memfd cannot be written: the error names pwrite.
        let memfd = crate::memfd::Memfd::create("codec-test", 0).unwrap();
        memfd.seal().unwrap();
        let sealed = encode_to_memfd("t", &big, &memfd, big.len() + 3);
        assert!(
            matches!(sealed, Err(Error::Os { op: "pwrite", .. })),
            "{sealed:?}"
        );
    }

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
