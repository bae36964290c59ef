//! Round trips through `Encap` for a range of types, and type mismatches between them.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;

use netmcore_encap::{ByteBuf, Encap, EncapError};
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Inner {
    id: u64,
    label: String,
    weights: Vec<i16>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Shape {
    Empty,
    Circle { radius: u32 },
    Polygon(Vec<(i32, i32)>),
    Named(String, Option<Box<Inner>>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Outer {
    name: String,
    flag: bool,
    letter: char,
    inner: Inner,
    items: Vec<Inner>,
    shape: Option<Shape>,
    index: BTreeMap<String, u8>,
    unit: (),
}

fn inner() -> impl Strategy<Value = Inner> {
    (
        any::<u64>(),
        ".{0,12}",
        prop::collection::vec(any::<i16>(), 0..8),
    )
        .prop_map(|(id, label, weights)| Inner { id, label, weights })
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        Just(Shape::Empty),
        any::<u32>().prop_map(|radius| Shape::Circle { radius }),
        prop::collection::vec(any::<(i32, i32)>(), 0..6).prop_map(Shape::Polygon),
        (".{0,8}", prop::option::of(inner().prop_map(Box::new)))
            .prop_map(|(name, inner)| Shape::Named(name, inner)),
    ]
}

fn outer() -> impl Strategy<Value = Outer> {
    (
        ".{0,16}",
        any::<bool>(),
        any::<char>(),
        inner(),
        prop::collection::vec(inner(), 0..4),
        prop::option::of(shape()),
        prop::collection::btree_map(".{0,6}", any::<u8>(), 0..5),
    )
        .prop_map(|(name, flag, letter, inner, items, shape, index)| Outer {
            name,
            flag,
            letter,
            inner,
            items,
            shape,
            index,
            unit: (),
        })
}

/// Wraps `value`, checks the envelope, and unwraps it both directly and after a trip through
/// bytes.
fn round_trip<T>(value: &T) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug + 'static,
{
    let encap = Encap::wrap(value).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(encap.type_name(), std::any::type_name::<T>());
    prop_assert!(encap.is::<T>());
    prop_assert_eq!(
        encap.as_bytes().len(),
        26 + encap.type_name().len() + encap.payload_len()
    );
    prop_assert_eq!(&encap.unwrap::<T>().unwrap(), value);

    let received = Encap::from_bytes(&encap.to_bytes()).unwrap();
    prop_assert_eq!(&received, &encap);
    prop_assert_eq!(received.type_identity(), encap.type_identity());
    prop_assert_eq!(&received.unwrap::<T>().unwrap(), value);
    Ok(())
}

/// Checks that `encap` does not unwrap as `B` and that the error names both types.
fn mismatch<B>(encap: &Encap) -> Result<(), TestCaseError>
where
    B: DeserializeOwned + Debug + 'static,
{
    prop_assert!(!encap.is::<B>());
    match encap.unwrap::<B>() {
        Err(EncapError::TypeMismatch { expected, found }) => {
            prop_assert_eq!(expected, std::any::type_name::<B>());
            prop_assert_eq!(found, encap.type_name());
        }
        other => prop_assert!(false, "expected a type mismatch, got {:?}", other),
    }
    Ok(())
}

proptest! {
    #[test]
    fn integers_round_trip(
        a in any::<u8>(), b in any::<i8>(), c in any::<u16>(), d in any::<i32>(),
        e in any::<u64>(), f in any::<i64>(), g in any::<u128>(), h in any::<i128>(),
        i in any::<usize>(), j in any::<isize>(),
    ) {
        round_trip(&a)?;
        round_trip(&b)?;
        round_trip(&c)?;
        round_trip(&d)?;
        round_trip(&e)?;
        round_trip(&f)?;
        round_trip(&g)?;
        round_trip(&h)?;
        round_trip(&i)?;
        round_trip(&j)?;
    }

    #[test]
    fn scalars_round_trip(b in any::<bool>(), c in any::<char>(), x in proptest::num::f64::ANY) {
        round_trip(&b)?;
        round_trip(&c)?;
        // NaN is not equal to itself, so compare the bits.
        let back: f64 = Encap::wrap(&x).unwrap().unwrap().unwrap();
        prop_assert_eq!(back.to_bits(), x.to_bits());
        round_trip(&())?;
    }

    #[test]
    fn strings_and_vecs_round_trip(
        s in ".{0,64}",
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        words in prop::collection::vec(".{0,10}", 0..10),
        wide in prop::collection::vec(any::<u64>(), 0..50),
    ) {
        round_trip(&s)?;
        round_trip(&bytes)?;
        round_trip(&ByteBuf(bytes.clone()))?;
        round_trip(&words)?;
        round_trip(&wide)?;
        round_trip(&(s, wide, words))?;
    }

    #[test]
    fn options_and_maps_round_trip(
        maybe in prop::option::of(any::<i64>()),
        maybe_text in prop::option::of(".{0,10}"),
        ordered in prop::collection::btree_map(".{0,8}", any::<i32>(), 0..10),
        hashed in prop::collection::hash_map(any::<u16>(), prop::collection::vec(any::<u8>(), 0..5), 0..10),
    ) {
        round_trip(&maybe)?;
        round_trip(&maybe_text)?;
        round_trip(&ordered)?;
        round_trip(&hashed)?;
    }

    #[test]
    fn nested_structs_and_enums_round_trip(value in outer(), shapes in prop::collection::vec(shape(), 0..5)) {
        round_trip(&value)?;
        round_trip(&shapes)?;
        round_trip(&Some(value))?;
    }

    #[test]
    fn unwrapping_as_another_type_is_a_mismatch(n in any::<u32>(), value in outer()) {
        let number = Encap::wrap(&n).unwrap();
        mismatch::<i32>(&number)?;
        mismatch::<u64>(&number)?;
        mismatch::<u8>(&number)?;
        mismatch::<String>(&number)?;
        mismatch::<Option<u32>>(&number)?;
        mismatch::<Outer>(&number)?;

        let outer = Encap::wrap(&value).unwrap();
        mismatch::<Inner>(&outer)?;
        mismatch::<Option<Outer>>(&outer)?;
        mismatch::<Vec<u8>>(&outer)?;
        mismatch::<HashMap<String, u8>>(&outer)?;

        // The same bytes behind another tag: a `Vec<u8>` and a `ByteBuf` encode alike, yet the
        // tag keeps them apart.
        let bytes = Encap::wrap(&vec![1_u8, 2, 3]).unwrap();
        mismatch::<ByteBuf>(&bytes)?;
    }
}

#[test]
fn type_mismatch_names_both_types() {
    let encap = Encap::wrap(&Inner {
        id: 1,
        label: "x".into(),
        weights: vec![],
    })
    .unwrap();
    let error = encap.unwrap::<Outer>().unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "type mismatch: expected a value of type `{}`, found `{}`",
            std::any::type_name::<Outer>(),
            std::any::type_name::<Inner>()
        )
    );
}

#[test]
fn envelope_buffers_move_without_copies() {
    let encap = Encap::wrap(&vec![5_u32; 1000]).unwrap();
    let bytes = encap.into_bytes();
    let address = bytes.as_ptr();
    let encap = Encap::from_vec(bytes).unwrap();
    assert_eq!(encap.as_bytes().as_ptr(), address);
    let bytes = encap.into_bytes();
    assert_eq!(bytes.as_ptr(), address);
}

#[test]
fn large_byte_buffers_round_trip() {
    let data: Vec<u8> = (0..1_000_000_u32).map(|i| (i % 251) as u8).collect();
    let plain = Encap::wrap(&data).unwrap();
    assert_eq!(plain.unwrap::<Vec<u8>>().unwrap(), data);
    let fast = Encap::wrap(&ByteBuf(data.clone())).unwrap();
    // Both are a varint length followed by the bytes.
    assert_eq!(fast.payload_len(), plain.payload_len());
    assert_eq!(fast.unwrap::<ByteBuf>().unwrap().into_inner(), data);
}

// Envelopes in two pieces --------------------------------------------------------------------

mod pieces {
    use netmcore_encap::{Encap, EncapError};

    fn joined(head: &[u8], run: &[u8]) -> Vec<u8> {
        let mut all = head.to_vec();
        all.extend_from_slice(run);
        all
    }

    #[test]
    fn a_byte_vector_is_split_into_its_header_and_its_own_bytes() {
        for len in [0usize, 1, 127, 128, 300_000] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let pieces = Encap::wrap_pieces(&data).unwrap();
            assert_eq!(pieces.run().as_ptr(), data.as_ptr(), "len {len}");
            assert_eq!(pieces.run().len(), len);
            let whole = Encap::wrap(&data).unwrap().into_bytes();
            assert_eq!(joined(pieces.head(), pieces.run()), whole, "len {len}");
            assert_eq!(pieces.len(), whole.len());
            assert_eq!(pieces.into_encap().unwrap().into_bytes(), whole);
        }
    }

    #[test]
    fn other_values_go_whole_into_the_head() {
        let value = (7u32, String::from("seven"), vec![1u8, 2, 3]);
        let pieces = Encap::wrap_pieces(&value).unwrap();
        assert!(pieces.run().is_empty());
        assert_eq!(pieces.head(), Encap::wrap(&value).unwrap().as_bytes());
        let encap = Encap::from_pieces(pieces.head().to_vec(), Vec::new()).unwrap();
        assert_eq!(encap.into_value::<(u32, String, Vec<u8>)>().unwrap(), value);
    }

    #[test]
    fn put_back_together_a_byte_vector_is_its_run_without_a_copy() {
        let data = vec![9u8; 5 << 20];
        let pieces = Encap::wrap_pieces(&data).unwrap();
        let run = pieces.run().to_vec();
        let at = run.as_ptr();
        let encap = Encap::from_pieces(pieces.head().to_vec(), run).unwrap();
        assert!(encap.is::<Vec<u8>>());
        assert_eq!(encap.payload_len(), data.len() + 4);
        let value: Vec<u8> = encap.into_value().unwrap();
        assert_eq!(value.as_ptr(), at);
        assert_eq!(value, data);
    }

    #[test]
    fn put_back_together_an_envelope_is_the_whole_one() {
        let data: Vec<u8> = (0..70_000u32).map(|i| (i % 13) as u8).collect();
        let pieces = Encap::wrap_pieces(&data).unwrap();
        let encap = Encap::from_pieces(pieces.head().to_vec(), pieces.run().to_vec()).unwrap();
        let whole = Encap::wrap(&data).unwrap();
        assert_eq!(encap.as_bytes(), whole.as_bytes());
        assert_eq!(encap, whole);
        assert_eq!(encap.unwrap::<Vec<u8>>().unwrap(), data);
        assert_eq!(encap.clone().into_bytes(), whole.clone().into_bytes());
        // Asked as another type, it is refused by its type as a whole one is.
        assert!(matches!(
            encap.into_value::<Vec<u16>>(),
            Err(EncapError::TypeMismatch { .. })
        ));
    }

    #[test]
    fn pieces_that_do_not_make_one_envelope_are_refused() {
        let data = vec![1u8; 1000];
        let pieces = Encap::wrap_pieces(&data).unwrap();
        let head = pieces.head().to_vec();
        // A run too short or too long for the length in the head.
        assert!(matches!(
            Encap::from_pieces(head.clone(), vec![1u8; 999]),
            Err(EncapError::Truncated { .. })
        ));
        assert!(matches!(
            Encap::from_pieces(head.clone(), vec![1u8; 1001]),
            Err(EncapError::TrailingBytes { .. })
        ));
        assert!(Encap::check_head(&head, 1000).is_ok());
        assert!(Encap::check_head(&head, 1001).is_err());
        assert!(Encap::check_head(&head, u64::MAX).is_err());
        // Every truncation of the head, and garbage.
        for cut in 0..head.len() {
            assert!(Encap::from_pieces(head[..cut].to_vec(), vec![1u8; 1000]).is_err());
        }
        assert!(matches!(
            Encap::from_pieces(b"not an envelope".to_vec(), vec![0; 4]),
            Err(EncapError::BadMagic { .. })
        ));
    }

    #[test]
    fn a_run_whose_prefix_is_wrong_is_decoded_as_a_whole_and_refused() {
        // The head says 1004 payload bytes: a length prefix of 1000 and 1000 bytes. Give it a
        // head whose prefix says 999 for a run of 1000: the fast path must not take it.
        let data = vec![1u8; 1000];
        let pieces = Encap::wrap_pieces(&data).unwrap();
        let mut head = pieces.head().to_vec();
        let prefix_at = head.len() - 2; // 1000 is a two-byte varint
        let shorter = vec![0u8; 999];
        let short = Encap::wrap_pieces(&shorter).unwrap();
        head[prefix_at..].copy_from_slice(&short.head()[short.head().len() - 2..]);
        let encap = Encap::from_pieces(head, vec![1u8; 1000]).unwrap();
        assert!(matches!(
            encap.into_value::<Vec<u8>>(),
            Err(EncapError::PayloadTrailingBytes { trailing: 1, .. })
        ));
    }
}

mod pieces_compare {
    use std::hash::{Hash, Hasher};

    use netmcore_encap::Encap;

    /// A hasher that records every call, so that two values hash alike only if they feed it
    /// the same writes (a stricter test than any one hash function).
    #[derive(Default, PartialEq, Debug)]
    struct Recorder(Vec<Vec<u8>>);

    impl Hasher for Recorder {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.push(bytes.to_vec());
        }
    }

    fn recorded(encap: &Encap) -> Recorder {
        let mut recorder = Recorder::default();
        encap.hash(&mut recorder);
        recorder
    }

    #[test]
    fn an_envelope_in_two_pieces_equals_and_hashes_as_the_whole_one() {
        for len in [1usize, 4000, 4096 * 3 - 40, 4096 * 3, 70_001] {
            let data: Vec<u8> = (0..len).map(|i| (i % 239) as u8).collect();
            let pieces = Encap::wrap_pieces(&data).unwrap();
            let split = Encap::from_pieces(pieces.head().to_vec(), pieces.run().to_vec()).unwrap();
            let whole = Encap::wrap(&data).unwrap();
            assert_eq!(split, whole, "len {len}");
            assert_eq!(recorded(&split), recorded(&whole), "len {len}");
            assert_eq!(split.payload_len(), whole.payload_len());
            assert!(
                format!("{split:?}").contains(&format!("payload_len: {}", whole.payload_len()))
            );
            // One byte changed is seen, in either piece: a letter of the type name in the
            // head (offset 18 on), the last byte of the run.
            let mut head = pieces.head().to_vec();
            head[18] ^= 1;
            let other = Encap::from_pieces(head, pieces.run().to_vec()).unwrap();
            assert_ne!(other, whole, "len {len}, in the head");
            let mut run = pieces.run().to_vec();
            let last = run.len() - 1;
            run[last] ^= 1;
            let other = Encap::from_pieces(pieces.head().to_vec(), run).unwrap();
            assert_ne!(other, whole, "len {len}, in the run");
        }
        let ten = vec![1u8; 10];
        let pieces = Encap::wrap_pieces(&ten).unwrap();
        assert_eq!(
            format!("{pieces:?}"),
            format!(
                "Pieces {{ head_len: {}, run_len: 10 }}",
                pieces.head().len()
            )
        );
    }
}
