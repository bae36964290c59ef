//! Handles: what names a structure between processes.

use std::any::{TypeId, type_name};
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::marker::PhantomData;

use netmcore_resources::ResId;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The name of a structure of type `S` in shared memory: the [`ResId`] of its segment and a
/// fingerprint of `S`.
///
/// A handle is small and `Copy`, and it serializes, so it travels inside process arguments,
/// channel messages or other structures; the receiving process opens it with `S::open`. It
/// holds nothing: the segment lives as long as some process has the structure open, so the
/// creator keeps its value until the others have opened theirs.
///
/// Opening checks the fingerprint against the segment's header, so a handle that was
/// deserialized as `Handle<Mutex<u32>>` from the bytes of a `Handle<Mutex<u64>>` is refused
/// with a `WrongType` error instead of reading garbage. Like [`netmcore_encap::Encap`]'s type
/// identity, the fingerprint is only meaningful between processes running the same binary.
///
/// Every impl is written by hand with no bound on `S`: a handle is `Copy`, `Eq`, `Hash`,
/// `Debug`, `Send`, `Sync`, `Serialize` and `Deserialize` whatever `S` is.
pub struct Handle<S> {
    id: ResId,
    fingerprint: u64,
    // `fn() -> S`: a handle owns no `S`, so it is `Send`, `Sync` and `Unpin` for every `S`.
    _structure: PhantomData<fn() -> S>,
}

/// The fingerprint of `S`: its [`TypeId`] hashed to a `u64` with `DefaultHasher::new()`, as
/// `Encap` computes its type identity.
///
/// `DefaultHasher::new()` is SipHash with fixed keys, so every process of one binary computes
/// the same value for the same type.
pub(crate) fn fingerprint<S: ?Sized + 'static>() -> u64 {
    let mut hasher = DefaultHasher::new();
    TypeId::of::<S>().hash(&mut hasher);
    hasher.finish()
}

impl<S> Handle<S> {
    /// The handle of the segment `id`, whose header holds `fingerprint`.
    pub(crate) fn from_parts(id: ResId, fingerprint: u64) -> Handle<S> {
        Handle {
            id,
            fingerprint,
            _structure: PhantomData,
        }
    }

    /// The resource id of the structure's segment.
    #[must_use]
    pub fn id(&self) -> ResId {
        self.id
    }

    /// The fingerprint the handle carries (that of `S` when it was made by this binary).
    pub(crate) fn fingerprint(&self) -> u64 {
        self.fingerprint
    }
}

impl<S: 'static> Handle<S> {
    /// The handle of a structure of type `S` in the segment `id`.
    pub(crate) fn new(id: ResId) -> Handle<S> {
        Handle::from_parts(id, fingerprint::<S>())
    }

    /// Whether the handle's fingerprint is that of `S`.
    pub(crate) fn is_of_its_type(&self) -> bool {
        self.fingerprint == fingerprint::<S>()
    }
}

impl<S> Clone for Handle<S> {
    fn clone(&self) -> Handle<S> {
        *self
    }
}

impl<S> Copy for Handle<S> {}

impl<S> PartialEq for Handle<S> {
    fn eq(&self, other: &Handle<S>) -> bool {
        self.id == other.id && self.fingerprint == other.fingerprint
    }
}

impl<S> Eq for Handle<S> {}

impl<S> Hash for Handle<S> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state);
        self.fingerprint.hash(state);
    }
}

impl<S> fmt::Debug for Handle<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("type", &type_name::<S>())
            .field("id", &self.id)
            .field("fingerprint", &format_args!("{:#018x}", self.fingerprint))
            .finish()
    }
}

/// The serialized form of every handle: no type parameter, so the derives need no bound.
#[derive(Serialize, Deserialize)]
#[serde(rename = "Handle")]
struct Repr {
    id: ResId,
    fingerprint: u64,
}

impl<S> Serialize for Handle<S> {
    fn serialize<Z: Serializer>(&self, serializer: Z) -> Result<Z::Ok, Z::Error> {
        Repr {
            id: self.id,
            fingerprint: self.fingerprint,
        }
        .serialize(serializer)
    }
}

impl<'de, S> Deserialize<'de> for Handle<S> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Handle<S>, D::Error> {
        let Repr { id, fingerprint } = Repr::deserialize(deserializer)?;
        Ok(Handle::from_parts(id, fingerprint))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use netmcore_encap::Encap;

    use super::*;

    /// A structure type with no traits at all (not even `Sync`): handles to it still have all
    /// of theirs. Only the type is used, never a value.
    enum Opaque {}
    impl Opaque {
        fn _not_sync(self) -> std::cell::Cell<u8> {
            match self {}
        }
    }
    enum Other {}

    fn assert_traits<T: Copy + Eq + Hash + fmt::Debug + Send + Sync + Serialize + 'static>() {}

    #[test]
    fn handles_have_their_traits_for_any_structure_type() {
        assert_traits::<Handle<Opaque>>();
        assert_traits::<Handle<*const u8>>();
        let a = Handle::<Opaque>::new(ResId(3));
        let b = a;
        assert_eq!(a, b);
        assert_eq!(a.id(), ResId(3));
        let set: HashSet<_> = [a, b, Handle::new(ResId(4))].into_iter().collect();
        assert_eq!(set.len(), 2);
        let debug = format!("{a:?}");
        assert!(
            debug.contains("Opaque") && debug.contains("ResId(3)"),
            "{debug}"
        );
    }

    #[test]
    fn fingerprints_tell_types_apart_and_are_stable() {
        assert_eq!(fingerprint::<Opaque>(), fingerprint::<Opaque>());
        assert_ne!(fingerprint::<Opaque>(), fingerprint::<Other>());
        assert_ne!(fingerprint::<Vec<u32>>(), fingerprint::<Vec<u64>>());
        let h = Handle::<Opaque>::new(ResId(1));
        assert_eq!(h.fingerprint(), fingerprint::<Opaque>());
        assert!(h.is_of_its_type());
        let forged = Handle::<Other>::from_parts(h.id(), h.fingerprint());
        assert!(!forged.is_of_its_type());
        assert_ne!(Handle::<Opaque>::from_parts(ResId(1), 0), h);
    }

    #[test]
    fn handles_round_trip_through_encap() {
        let h = Handle::<Opaque>::new(ResId(42));
        let wrapped = Encap::wrap(&h).expect("wraps");
        let back: Handle<Opaque> = wrapped.unwrap().expect("unwraps");
        assert_eq!(back, h);
        assert_eq!(back.fingerprint(), fingerprint::<Opaque>());
        // Encap checks the whole handle type, structure included.
        assert!(wrapped.unwrap::<Handle<Other>>().is_err());
        // Inside a bigger value.
        let pair = (7u8, h, vec![h, Handle::new(ResId(43))]);
        let back: (u8, Handle<Opaque>, Vec<Handle<Opaque>>) = Encap::wrap(&pair)
            .expect("wraps")
            .unwrap()
            .expect("unwraps");
        assert_eq!(back, pair);
    }

    #[test]
    fn the_fingerprint_travels_with_the_bytes() {
        // A handle serialized as one structure type and read back as another keeps the
        // fingerprint it was made with, which is what lets `open` refuse it.
        let h = Handle::<Opaque>::new(ResId(5));
        let repr: (ResId, u64) = Encap::wrap(&h)
            .map(|e| e.unwrap::<Handle<Opaque>>().expect("unwraps"))
            .map(|h| (h.id(), h.fingerprint()))
            .expect("wraps");
        let forged = Handle::<Other>::from_parts(repr.0, repr.1);
        let back: Handle<Other> = Encap::wrap(&forged)
            .expect("wraps")
            .unwrap()
            .expect("unwraps");
        assert_eq!(back.fingerprint(), fingerprint::<Opaque>());
        assert!(!back.is_of_its_type());
    }
}
