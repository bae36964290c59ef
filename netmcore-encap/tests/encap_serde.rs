//! An `Encap` inside other serialized messages.

use netmcore_encap::{ByteBuf, Encap};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

/// A message another crate might send, with an encapsulated argument inside.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Request {
    id: u64,
    arg: Encap,
    extra: Option<Encap>,
    note: String,
}

#[test]
fn an_encap_is_one_byte_string_on_the_wire() {
    let encap = Encap::wrap(&(1_u8, "two".to_owned())).unwrap();
    let wire = postcard::to_allocvec(&encap).unwrap();
    let envelope = encap.as_bytes();
    // A varint length, then the envelope unchanged.
    assert!(envelope.len() < 128);
    assert_eq!(wire[0] as usize, envelope.len());
    assert_eq!(&wire[1..], envelope);
    let back: Encap = postcard::from_bytes(&wire).unwrap();
    assert_eq!(back, encap);
}

#[test]
fn a_damaged_embedded_envelope_is_an_error() {
    let request = Request {
        id: 1,
        arg: Encap::wrap(&5_i32).unwrap(),
        extra: None,
        note: String::new(),
    };
    let mut wire = postcard::to_allocvec(&request).unwrap();
    // Byte 0 is the id, byte 1 the envelope's length prefix, byte 2 the first magic byte.
    wire[2] = b'X';
    assert!(postcard::from_bytes::<Request>(&wire).is_err());
}

#[test]
fn large_embedded_payloads_survive() {
    let data = ByteBuf(vec![0x5a; 1 << 20]);
    let request = Request {
        id: 2,
        arg: Encap::wrap(&data).unwrap(),
        extra: Some(Encap::wrap(&"small").unwrap()),
        note: "big".into(),
    };
    let wire = postcard::to_allocvec(&request).unwrap();
    let back: Request = postcard::from_bytes(&wire).unwrap();
    assert_eq!(back.arg.unwrap::<ByteBuf>().unwrap(), data);
    assert_eq!(back, request);
}

proptest! {
    #[test]
    fn encap_round_trips_inside_a_struct(
        id in any::<u64>(),
        value in prop::collection::vec(".{0,8}", 0..8),
        extra in prop::option::of(any::<i128>()),
        note in ".{0,16}",
    ) {
        let request = Request {
            id,
            arg: Encap::wrap(&value).unwrap(),
            extra: extra.map(|n| Encap::wrap(&n).unwrap()),
            note,
        };
        let wire = postcard::to_allocvec(&request).unwrap();
        let back: Request = postcard::from_bytes(&wire).unwrap();
        prop_assert_eq!(&back, &request);
        prop_assert_eq!(back.arg.unwrap::<Vec<String>>().unwrap(), value);
        prop_assert_eq!(back.extra.map(|e| e.unwrap::<i128>().unwrap()), extra);
    }

    #[test]
    fn arbitrary_wire_bytes_never_panic(wire in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(request) = postcard::from_bytes::<Request>(&wire) {
            let _ = request.arg.unwrap::<Vec<String>>();
        }
    }
}
