//! The envelope byte layout: writing a header and parsing (validating) a whole envelope.
//!
//! ```text
//! offset    size  field
//! 0         4     magic, the bytes "NMEC"
//! 4         2     format version, u16 little-endian (currently 1)
//! 6         8     type identity, u64 little-endian
//! 14        4     type name length n, u32 little-endian, n <= MAX_TYPE_NAME_LEN
//! 18        n     type name, utf-8
//! 18+n      8     payload length m, u64 little-endian, m <= MAX_PAYLOAD_LEN
//! 26+n      m     payload
//! ```
//!
//! The envelope is exactly `26 + n + m` bytes: a shorter input is truncated, a longer one has
//! trailing bytes. The magic and version come first so that a later format can change everything
//! after them and still be recognised (and refused) by this one.

use crate::error::EncapError;
use crate::{FORMAT_VERSION, MAGIC, MAX_PAYLOAD_LEN, MAX_TYPE_NAME_LEN};

/// Bytes before the type name: magic, version, identity and the name length.
const NAME_OFFSET: usize = 4 + 2 + 8 + 4;

/// Size of the payload length field that sits between the type name and the payload.
const PAYLOAD_LEN_FIELD: usize = 8;

/// Envelope bytes that are not type name or payload.
pub(crate) const FIXED_OVERHEAD: usize = NAME_OFFSET + PAYLOAD_LEN_FIELD;

/// The largest whole envelope [`parse`] accepts.
pub(crate) const MAX_ENVELOPE_LEN: u64 =
    FIXED_OVERHEAD as u64 + MAX_TYPE_NAME_LEN as u64 + MAX_PAYLOAD_LEN;

/// What [`parse`] found in a valid envelope.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Header<'a> {
    pub(crate) type_name: &'a str,
    pub(crate) type_identity: u64,
    /// Offset of the payload; the payload runs to the end of the input.
    pub(crate) payload_start: usize,
}

/// Starts an envelope: a vector holding the header for `type_name` with a zero payload length,
/// ready for the payload to be appended and [`finish`] to fill the length in. `reserve` is extra
/// capacity for the payload.
///
/// The caller has checked `type_name` against [`MAX_TYPE_NAME_LEN`].
pub(crate) fn begin(type_name: &str, type_identity: u64, reserve: usize) -> Vec<u8> {
    let mut buf = crate::large::buffer(FIXED_OVERHEAD + type_name.len() + reserve);
    buf.extend_from_slice(&MAGIC);
    buf.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    buf.extend_from_slice(&type_identity.to_le_bytes());
    // The caller checked the name against MAX_TYPE_NAME_LEN, far below u32::MAX.
    let name_len = u32::try_from(type_name.len()).unwrap_or(u32::MAX);
    buf.extend_from_slice(&name_len.to_le_bytes());
    buf.extend_from_slice(type_name.as_bytes());
    buf.extend_from_slice(&[0; PAYLOAD_LEN_FIELD]);
    buf
}

/// Writes the payload length of an envelope begun with [`begin`] whose payload starts at
/// `payload_start` and runs to the end of `buf`.
pub(crate) fn finish(buf: &mut [u8], payload_start: usize) {
    let payload_len = (buf.len() - payload_start) as u64;
    buf[payload_start - PAYLOAD_LEN_FIELD..payload_start]
        .copy_from_slice(&payload_len.to_le_bytes());
}

/// Writes the payload length field of an envelope begun with [`begin`] whose payload starts at
/// `payload_start`; part of the payload may travel apart.
pub(crate) fn set_payload_len(buf: &mut [u8], payload_start: usize, payload_len: u64) {
    buf[payload_start - PAYLOAD_LEN_FIELD..payload_start]
        .copy_from_slice(&payload_len.to_le_bytes());
}

/// Validates that `input` is exactly one envelope of the supported format and returns its
/// header. Never panics, whatever the input.
pub(crate) fn parse(input: &[u8]) -> Result<Header<'_>, EncapError> {
    parse_head(input, 0)
}

/// Validates that `input` followed by `missing` more payload bytes (which travel apart) is
/// exactly one envelope of the supported format and returns its header. Never panics,
/// whatever the input.
pub(crate) fn parse_head(input: &[u8], missing: u64) -> Result<Header<'_>, EncapError> {
    let mut reader = Reader { input, pos: 0 };

    let magic = reader.array::<4>("magic")?;
    if magic != MAGIC {
        return Err(EncapError::BadMagic { found: magic });
    }
    let version = u16::from_le_bytes(reader.array("format version")?);
    if version != FORMAT_VERSION {
        return Err(EncapError::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let type_identity = u64::from_le_bytes(reader.array("type identity")?);

    let name_len = u64::from(u32::from_le_bytes(reader.array("type name length")?));
    if name_len > MAX_TYPE_NAME_LEN as u64 {
        return Err(EncapError::TooLarge {
            part: "type name",
            declared: name_len,
            limit: MAX_TYPE_NAME_LEN as u64,
        });
    }
    let name = reader.take(name_len, "type name")?;
    let type_name = std::str::from_utf8(name).map_err(|error| EncapError::InvalidTypeName {
        valid_up_to: error.valid_up_to(),
    })?;

    let payload_len = u64::from_le_bytes(reader.array("payload length")?);
    if payload_len > MAX_PAYLOAD_LEN {
        return Err(EncapError::TooLarge {
            part: "payload",
            declared: payload_len,
            limit: MAX_PAYLOAD_LEN,
        });
    }
    let payload_start = reader.pos;
    let input_len = (input.len() as u64).saturating_add(missing);
    let Some(here) = payload_len.checked_sub(missing) else {
        return Err(EncapError::TrailingBytes {
            envelope_len: (payload_start as u64).saturating_add(payload_len),
            input_len,
        });
    };
    reader.take(here, "payload")?;

    if reader.pos != input.len() {
        return Err(EncapError::TrailingBytes {
            envelope_len: (reader.pos as u64).saturating_add(missing),
            input_len,
        });
    }
    Ok(Header {
        type_name,
        type_identity,
        payload_start,
    })
}

/// A cursor over the input that turns every short read into [`EncapError::Truncated`].
struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// The next `len` bytes, which hold the envelope part named `part`.
    fn take(&mut self, len: u64, part: &'static str) -> Result<&'a [u8], EncapError> {
        let rest = self.input.get(self.pos..).unwrap_or_default();
        let split = usize::try_from(len)
            .ok()
            .and_then(|len| rest.split_at_checked(len));
        match split {
            Some((taken, _)) => {
                self.pos += taken.len();
                Ok(taken)
            }
            None => Err(EncapError::Truncated {
                part,
                needed: (self.pos as u64).saturating_add(len),
                available: self.input.len() as u64,
            }),
        }
    }

    /// The next `N` bytes as an array.
    fn array<const N: usize>(&mut self, part: &'static str) -> Result<[u8; N], EncapError> {
        let taken = self.take(N as u64, part)?;
        let mut array = [0; N];
        array.copy_from_slice(taken);
        Ok(array)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut buf = begin("a::B", 0x0102_0304_0506_0708, 0);
        let payload_start = buf.len();
        buf.extend_from_slice(&[9, 8, 7]);
        finish(&mut buf, payload_start);
        buf
    }

    #[test]
    fn layout_is_as_documented() {
        let expected: Vec<u8> = [
            &b"NMEC"[..],
            &[1, 0],
            &[8, 7, 6, 5, 4, 3, 2, 1],
            &[4, 0, 0, 0],
            b"a::B",
            &[3, 0, 0, 0, 0, 0, 0, 0],
            &[9, 8, 7],
        ]
        .concat();
        assert_eq!(sample(), expected);
        assert_eq!(sample().len(), FIXED_OVERHEAD + 4 + 3);
    }

    #[test]
    fn parse_finds_the_header() {
        let buf = sample();
        let header = parse(&buf).unwrap();
        assert_eq!(
            header,
            Header {
                type_name: "a::B",
                type_identity: 0x0102_0304_0506_0708,
                payload_start: FIXED_OVERHEAD + 4,
            }
        );
    }

    #[test]
    fn every_part_is_named_when_truncated() {
        let buf = sample();
        let parts: Vec<&str> = (0..buf.len())
            .map(|len| match parse(&buf[..len]) {
                Err(EncapError::Truncated { part, .. }) => part,
                other => panic!("prefix of {len} bytes gave {other:?}"),
            })
            .collect();
        let mut distinct = parts.clone();
        distinct.dedup();
        assert_eq!(
            distinct,
            [
                "magic",
                "format version",
                "type identity",
                "type name length",
                "type name",
                "payload length",
                "payload"
            ]
        );
    }

    #[test]
    fn bad_magic_is_reported() {
        let mut buf = sample();
        buf[0] = b'X';
        assert_eq!(parse(&buf), Err(EncapError::BadMagic { found: *b"XMEC" }));
    }

    #[test]
    fn version_is_checked_before_the_rest() {
        // Only magic and version: a future format may lay out the rest differently.
        let buf = [&MAGIC[..], &2_u16.to_le_bytes()].concat();
        assert_eq!(
            parse(&buf),
            Err(EncapError::UnsupportedVersion {
                found: 2,
                supported: 1
            })
        );
    }

    #[test]
    fn oversized_type_name_is_refused_before_reading_it() {
        let mut buf = sample();
        buf[14..18].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            parse(&buf),
            Err(EncapError::TooLarge {
                part: "type name",
                declared: u64::from(u32::MAX),
                limit: MAX_TYPE_NAME_LEN as u64,
            })
        );
    }

    #[test]
    fn non_utf8_type_name_is_refused() {
        let mut buf = sample();
        buf[NAME_OFFSET + 1] = 0xff;
        assert_eq!(
            parse(&buf),
            Err(EncapError::InvalidTypeName { valid_up_to: 1 })
        );
    }

    #[test]
    fn max_envelope_len_adds_up() {
        assert_eq!(MAX_ENVELOPE_LEN, 26 + 64 * 1024 + (1 << 32));
    }
}
