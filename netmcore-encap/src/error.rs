//! The error type of this crate.

use crate::MAGIC;

/// Everything that can go wrong when wrapping, unwrapping or decoding an [`Encap`](crate::Encap).
///
/// The variants fall in three groups: the type does not match ([`TypeMismatch`]); the value
/// does not fit the payload encoding ([`Encode`], [`Decode`], [`PayloadTrailingBytes`]); the bytes
/// are not one valid envelope ([`BadMagic`], [`UnsupportedVersion`], [`Truncated`], [`TooLarge`],
/// [`TrailingBytes`], [`InvalidTypeName`]).
///
/// [`TypeMismatch`]: EncapError::TypeMismatch
/// [`Encode`]: EncapError::Encode
/// [`Decode`]: EncapError::Decode
/// [`PayloadTrailingBytes`]: EncapError::PayloadTrailingBytes
/// [`BadMagic`]: EncapError::BadMagic
/// [`UnsupportedVersion`]: EncapError::UnsupportedVersion
/// [`Truncated`]: EncapError::Truncated
/// [`TooLarge`]: EncapError::TooLarge
/// [`TrailingBytes`]: EncapError::TrailingBytes
/// [`InvalidTypeName`]: EncapError::InvalidTypeName
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncapError {
    /// [`Encap::unwrap`](crate::Encap::unwrap) asked for a type other than the one wrapped.
    ///
    /// Both names come from [`std::any::type_name`]. They can be equal: two distinct types may
    /// share a name (two versions of one crate, or an envelope made by another binary), and the
    /// type identity tells them apart; the message says so.
    #[error("{}", type_mismatch_message(.expected, .found))]
    TypeMismatch {
        /// The name of the type asked for.
        expected: String,
        /// The name of the type stored in the envelope.
        found: String,
    },

    /// The value could not be serialized (its `Serialize` impl failed, a sequence did not know
    /// its length, or the payload passed [`MAX_PAYLOAD_LEN`](crate::MAX_PAYLOAD_LEN)).
    #[error("cannot encode a value of type `{type_name}`: {message}")]
    Encode {
        /// The name of the type being wrapped.
        type_name: String,
        /// What went wrong.
        message: String,
    },

    /// The payload does not decode as the requested type although the type matches: the
    /// envelope was damaged, or the type's serde impls do not round trip.
    #[error(
        "cannot decode a value of type `{type_name}` from its {payload_len}-byte payload: {message}"
    )]
    Decode {
        /// The name of the type being unwrapped.
        type_name: String,
        /// The length of the payload in bytes.
        payload_len: usize,
        /// What went wrong.
        message: String,
    },

    /// The payload decoded as the requested type but did not use all of its bytes.
    #[error(
        "payload of type `{type_name}` has {trailing} trailing bytes after the value ({payload_len} bytes in all)"
    )]
    PayloadTrailingBytes {
        /// The name of the type being unwrapped.
        type_name: String,
        /// How many bytes were left over.
        trailing: usize,
        /// The length of the payload in bytes.
        payload_len: usize,
    },

    /// The input does not start with the envelope magic: it is not an envelope at all.
    #[error("not an encap envelope: it starts with {found:02x?} instead of the magic {MAGIC:02x?}")]
    BadMagic {
        /// The first four bytes of the input.
        found: [u8; 4],
    },

    /// The envelope has a format version this build cannot read (usually one written by a newer
    /// build).
    #[error("unsupported encap format version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        /// The version in the envelope.
        found: u16,
        /// The version this build reads and writes, [`FORMAT_VERSION`](crate::FORMAT_VERSION).
        supported: u16,
    },

    /// The input ends inside the envelope, or a length field claims more bytes than the input
    /// holds (the two cannot be told apart).
    #[error(
        "truncated encap envelope: the {part} ends at byte {needed} but the input has only {available} bytes"
    )]
    Truncated {
        /// The envelope part that is cut short: `"magic"`, `"format version"`, `"type identity"`,
        /// `"type name length"`, `"type name"`, `"payload length"` or `"payload"`.
        part: &'static str,
        /// The input length that part needs.
        needed: u64,
        /// The input length.
        available: u64,
    },

    /// A length field declares more than the documented limit, whatever the input length.
    #[error(
        "encap envelope too large: the {part} declares {declared} bytes, more than the limit of {limit}"
    )]
    TooLarge {
        /// `"type name"` or `"payload"`.
        part: &'static str,
        /// The length the envelope declares.
        declared: u64,
        /// The limit: [`MAX_TYPE_NAME_LEN`](crate::MAX_TYPE_NAME_LEN) or
        /// [`MAX_PAYLOAD_LEN`](crate::MAX_PAYLOAD_LEN).
        limit: u64,
    },

    /// The input holds a valid envelope followed by more bytes.
    #[error(
        "trailing bytes after an encap envelope: the envelope is {envelope_len} bytes but the input has {input_len}"
    )]
    TrailingBytes {
        /// The length of the envelope.
        envelope_len: u64,
        /// The length of the input.
        input_len: u64,
    },

    /// The type name in the envelope is not utf-8.
    #[error("invalid encap envelope: its type name is not utf-8 after byte {valid_up_to}")]
    InvalidTypeName {
        /// The length of the valid utf-8 prefix of the name.
        valid_up_to: usize,
    },
}

/// The message of [`EncapError::TypeMismatch`], which must make sense when both names are equal.
fn type_mismatch_message(expected: &str, found: &str) -> String {
    if expected == found {
        format!(
            "type mismatch: expected a value of type `{expected}`, found a different type with the \
             same name (its type identity differs: it was wrapped by another binary or another \
             version of the crate that defines it)"
        )
    } else {
        format!("type mismatch: expected a value of type `{expected}`, found `{found}`")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_lowercase_without_period() {
        let errors = [
            EncapError::TypeMismatch {
                expected: "a::A".into(),
                found: "b::B".into(),
            },
            EncapError::TypeMismatch {
                expected: "a::A".into(),
                found: "a::A".into(),
            },
            EncapError::Encode {
                type_name: "a::A".into(),
                message: "boom".into(),
            },
            EncapError::Decode {
                type_name: "a::A".into(),
                payload_len: 3,
                message: "boom".into(),
            },
            EncapError::PayloadTrailingBytes {
                type_name: "a::A".into(),
                trailing: 1,
                payload_len: 3,
            },
            EncapError::BadMagic { found: *b"abcd" },
            EncapError::UnsupportedVersion {
                found: 9,
                supported: 1,
            },
            EncapError::Truncated {
                part: "payload",
                needed: 40,
                available: 30,
            },
            EncapError::TooLarge {
                part: "payload",
                declared: 1 << 40,
                limit: 1 << 32,
            },
            EncapError::TrailingBytes {
                envelope_len: 30,
                input_len: 31,
            },
            EncapError::InvalidTypeName { valid_up_to: 2 },
        ];
        for error in errors {
            let message = error.to_string();
            let first = message.chars().next().unwrap();
            assert!(first.is_lowercase(), "{message}");
            assert!(!message.ends_with('.'), "{message}");
        }
    }

    #[test]
    fn mismatch_messages_tell_the_two_cases_apart() {
        let different = EncapError::TypeMismatch {
            expected: "a::A".into(),
            found: "b::B".into(),
        };
        assert_eq!(
            different.to_string(),
            "type mismatch: expected a value of type `a::A`, found `b::B`"
        );
        let same_name = EncapError::TypeMismatch {
            expected: "a::A".into(),
            found: "a::A".into(),
        };
        assert!(
            same_name
                .to_string()
                .contains("a different type with the same name")
        );
    }

    #[test]
    fn messages_carry_context() {
        let error = EncapError::UnsupportedVersion {
            found: 7,
            supported: 1,
        };
        assert_eq!(
            error.to_string(),
            "unsupported encap format version 7 (this build reads version 1)"
        );
        let error = EncapError::BadMagic { found: *b"abcd" };
        assert_eq!(
            error.to_string(),
            "not an encap envelope: it starts with [61, 62, 63, 64] instead of the magic [4e, 4d, 45, 43]"
        );
    }
}
