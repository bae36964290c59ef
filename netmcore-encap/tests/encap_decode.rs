//! Decoding envelopes from bytes: malformed input gives a precise error and never a panic.

use netmcore_encap::{Encap, EncapError, FORMAT_VERSION, MAGIC, MAX_PAYLOAD_LEN};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Sample {
    id: u32,
    name: String,
    values: Vec<i64>,
    tag: Option<char>,
}

fn sample() -> Sample {
    Sample {
        id: 7,
        name: "seven".into(),
        values: vec![-1, 0, 1 << 40],
        tag: Some('x'),
    }
}

/// The offset of the payload length field in `bytes`, a valid envelope.
fn payload_len_offset(bytes: &[u8]) -> usize {
    let name_len = u32::from_le_bytes(bytes[14..18].try_into().unwrap()) as usize;
    18 + name_len
}

/// Exercises everything a receiver might do with `bytes`, checking only that nothing panics
/// and that a successful decode is self-consistent.
fn decode_all_ways(bytes: &[u8]) {
    if let Ok(encap) = Encap::from_bytes(bytes) {
        assert_eq!(encap.as_bytes(), bytes);
        let _ = format!("{encap:?}");
        let _ = encap.unwrap::<Sample>();
        let _ = encap.unwrap::<String>();
        let _ = encap.unwrap::<Vec<u8>>();
        let _ = encap.unwrap::<u64>();
    }
    if let Err(error) = Encap::from_vec(bytes.to_vec()) {
        assert!(!error.to_string().is_empty());
    }
}

#[test]
fn every_prefix_is_truncated() {
    let bytes = Encap::wrap(&sample()).unwrap().into_bytes();
    for len in 0..bytes.len() {
        match Encap::from_bytes(&bytes[..len]) {
            Err(EncapError::Truncated {
                part,
                needed,
                available,
            }) => {
                assert_eq!(available, len as u64, "prefix of {len}");
                assert!(needed > available, "prefix of {len}: needs {needed}");
                assert!(!part.is_empty());
            }
            other => panic!("prefix of {len} bytes gave {other:?}"),
        }
    }
    assert!(Encap::from_bytes(&bytes).is_ok());
}

#[test]
fn trailing_bytes_are_refused() {
    let mut bytes = Encap::wrap(&sample()).unwrap().into_bytes();
    let len = bytes.len() as u64;
    bytes.push(0);
    assert_eq!(
        Encap::from_bytes(&bytes),
        Err(EncapError::TrailingBytes {
            envelope_len: len,
            input_len: len + 1
        })
    );
    // Two envelopes back to back are not one envelope either.
    let doubled = [&bytes[..len as usize], &bytes[..len as usize]].concat();
    assert!(matches!(
        Encap::from_bytes(&doubled),
        Err(EncapError::TrailingBytes { .. })
    ));
}

#[test]
fn future_version_is_refused() {
    let mut bytes = Encap::wrap(&sample()).unwrap().into_bytes();
    for version in [FORMAT_VERSION + 1, u16::MAX, 0] {
        bytes[4..6].copy_from_slice(&version.to_le_bytes());
        let error = Encap::from_bytes(&bytes).unwrap_err();
        assert_eq!(
            error,
            EncapError::UnsupportedVersion {
                found: version,
                supported: FORMAT_VERSION
            }
        );
        assert_eq!(
            error.to_string(),
            format!("unsupported encap format version {version} (this build reads version 1)")
        );
    }
}

#[test]
fn future_version_is_refused_whatever_follows() {
    // A later format may put anything after the version, even nothing.
    let bytes = [&MAGIC[..], &(FORMAT_VERSION + 1).to_le_bytes()].concat();
    assert!(matches!(
        Encap::from_bytes(&bytes),
        Err(EncapError::UnsupportedVersion { found: 2, .. })
    ));
}

#[test]
fn payload_length_claiming_more_than_the_input_is_refused() {
    let mut bytes = Encap::wrap(&sample()).unwrap().into_bytes();
    let at = payload_len_offset(&bytes);
    let real = bytes.len() as u64;
    let payload_len = real - at as u64 - 8;
    bytes[at..at + 8].copy_from_slice(&(payload_len + 1000).to_le_bytes());
    let error = Encap::from_bytes(&bytes).unwrap_err();
    assert_eq!(
        error,
        EncapError::Truncated {
            part: "payload",
            needed: real + 1000,
            available: real
        }
    );
    assert_eq!(
        error.to_string(),
        format!(
            "truncated encap envelope: the payload ends at byte {} but the input has only {real} bytes",
            real + 1000
        )
    );
}

#[test]
fn type_name_length_claiming_more_than_the_input_is_refused() {
    let mut bytes = Encap::wrap(&sample()).unwrap().into_bytes();
    bytes[14..18].copy_from_slice(&60_000_u32.to_le_bytes());
    assert!(matches!(
        Encap::from_bytes(&bytes),
        Err(EncapError::Truncated {
            part: "type name",
            needed: 60_018,
            ..
        })
    ));
}

#[test]
fn lengths_over_the_limits_are_too_large() {
    let mut bytes = Encap::wrap(&sample()).unwrap().into_bytes();
    let at = payload_len_offset(&bytes);
    for declared in [MAX_PAYLOAD_LEN + 1, u64::MAX] {
        bytes[at..at + 8].copy_from_slice(&declared.to_le_bytes());
        assert_eq!(
            Encap::from_bytes(&bytes),
            Err(EncapError::TooLarge {
                part: "payload",
                declared,
                limit: MAX_PAYLOAD_LEN
            })
        );
    }
    let mut bytes = Encap::wrap(&sample()).unwrap().into_bytes();
    bytes[14..18].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        Encap::from_bytes(&bytes),
        Err(EncapError::TooLarge {
            part: "type name",
            ..
        })
    ));
}

#[test]
fn wrong_magic_is_not_an_envelope() {
    let mut bytes = Encap::wrap(&sample()).unwrap().into_bytes();
    bytes[..4].copy_from_slice(b"JSON");
    assert_eq!(
        Encap::from_bytes(&bytes),
        Err(EncapError::BadMagic { found: *b"JSON" })
    );
}

#[test]
fn damaged_payload_is_a_decode_error_not_a_panic() {
    let encap = Encap::wrap(&"hello".to_owned()).unwrap();
    let mut bytes = encap.into_bytes();
    let last = bytes.len() - 1;
    bytes[last] = 0xff; // not utf-8
    let error = Encap::from_vec(bytes)
        .unwrap()
        .unwrap::<String>()
        .unwrap_err();
    assert_eq!(
        error,
        EncapError::Decode {
            type_name: std::any::type_name::<String>().into(),
            payload_len: 6,
            message: "a string is not valid utf-8".into()
        }
    );
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        decode_all_ways(&bytes);
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_start_never_panic(
        version in prop_oneof![Just(FORMAT_VERSION), any::<u16>()],
        rest in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let bytes = [&MAGIC[..], &version.to_le_bytes(), &rest].concat();
        decode_all_ways(&bytes);
    }

    #[test]
    fn mutated_envelopes_never_panic(
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1..=255_u8), 1..4),
    ) {
        let mut bytes = Encap::wrap(&sample()).unwrap().into_bytes();
        for (at, mask) in flips {
            let at = at.index(bytes.len());
            bytes[at] ^= mask;
        }
        decode_all_ways(&bytes);
    }

    #[test]
    fn mutated_payloads_give_errors_or_values(at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        // Damage only the payload: the envelope stays valid and the type still matches.
        let encap = Encap::wrap(&sample()).unwrap();
        let payload_start = encap.as_bytes().len() - encap.payload_len();
        let mut bytes = encap.into_bytes();
        let at = payload_start + at.index(bytes.len() - payload_start);
        bytes[at] = byte;
        let encap = Encap::from_vec(bytes).unwrap();
        match encap.unwrap::<Sample>() {
            Ok(_)
            | Err(EncapError::Decode { .. })
            | Err(EncapError::PayloadTrailingBytes { .. }) => {}
            Err(other) => prop_assert!(false, "unexpected error {:?}", other),
        }
    }

    #[test]
    fn cut_and_spliced_envelopes_never_panic(
        cut in any::<prop::sample::Index>(),
        insert in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let bytes = Encap::wrap(&sample()).unwrap().into_bytes();
        let at = cut.index(bytes.len());
        let spliced = [&bytes[..at], &insert, &bytes[at..]].concat();
        decode_all_ways(&spliced);
        let removed = [&bytes[..at], &bytes[(at + insert.len()).min(bytes.len())..]].concat();
        decode_all_ways(&removed);
    }
}
