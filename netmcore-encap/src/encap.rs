//! [`Encap`]: a serialized value with the name and identity of its type.

use std::any::{Any, TypeId};
use std::borrow::Cow;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use serde::de::{DeserializeOwned, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::bytes::ByteBuf;
use crate::envelope::{self, MAX_ENVELOPE_LEN};
use crate::error::EncapError;
use crate::{MAX_PAYLOAD_LEN, MAX_TYPE_NAME_LEN, codec};

/// Payload capacity reserved up front by [`Encap::wrap`]; larger payloads grow the buffer by
/// doubling, which for big buffers the allocator does by remapping pages, not copying them.
const INITIAL_PAYLOAD_CAPACITY: usize = 64;

/// A serialized ("encapsulated") value together with the name and identity of its type.
///
/// An `Encap` is one contiguous envelope (see the [crate docs](crate) for its layout):
/// [`as_bytes`](Encap::as_bytes) and [`into_bytes`](Encap::into_bytes) hand it out without a
/// copy, [`from_vec`](Encap::from_vec) takes one in without a copy, and
/// [`unwrap`](Encap::unwrap) decodes straight from it.
///
/// An envelope decoded from a large received message may stay in that message's buffer
/// instead of being copied out of it ([`is_shared`](Encap::is_shared),
/// [`with_shared_source`]).
///
/// Two `Encap`s are equal when their envelopes are byte for byte equal. `Debug` shows the type
/// name, identity and payload length, never the payload.
#[derive(Clone)]
pub struct Encap {
    /// The whole envelope, exactly what `as_bytes` returns.
    bytes: Storage,
    /// The type name, also inside `bytes`; kept apart so that `type_name` needs no utf-8 check.
    type_name: Cow<'static, str>,
    /// The type identity, also inside `bytes`.
    type_identity: u64,
    /// Where the payload starts in `bytes`; it runs to the end.
    payload_start: usize,
}

impl Encap {
    /// Serializes `value` into a new envelope tagged with the name and identity of `T`.
    ///
    /// The value is serialized once, straight into the envelope's buffer.
    ///
    /// # Errors
    ///
    /// [`EncapError::Encode`] when `T`'s `Serialize` impl fails, when it serializes a sequence
    /// or map without announcing its length (as `#[serde(flatten)]` does), or when the payload
    /// would exceed [`MAX_PAYLOAD_LEN`].
    pub fn wrap<T: Serialize + 'static>(value: &T) -> Result<Encap, EncapError> {
        let type_name = std::any::type_name::<T>();
        if type_name.len() > MAX_TYPE_NAME_LEN {
            return Err(EncapError::Encode {
                type_name: type_name.to_owned(),
                message: format!(
                    "the type name is {} bytes, more than the limit of {MAX_TYPE_NAME_LEN}",
                    type_name.len()
                ),
            });
        }
        let type_identity = type_identity_of::<T>();
        // serde sees a `Vec<u8>` as a sequence, one call per byte; as a byte string it encodes
        // to the same bytes (a length, then the bytes) in one copy, into a buffer of its size.
        let (value, reserve): (&dyn ErasedSerialize, usize) =
            match (value as &dyn Any).downcast_ref::<Vec<u8>>() {
                Some(bytes) => (&ByteString(bytes), bytes.len().saturating_add(10)),
                None => (value, INITIAL_PAYLOAD_CAPACITY),
            };
        let header = envelope::begin(type_name, type_identity, reserve);
        let payload_start = header.len();
        let max_payload = usize::try_from(MAX_PAYLOAD_LEN).unwrap_or(usize::MAX);
        let limit_end = payload_start.saturating_add(max_payload);
        let mut bytes =
            value
                .serialize_into(header, limit_end)
                .map_err(|message| EncapError::Encode {
                    type_name: type_name.to_owned(),
                    message,
                })?;
        envelope::finish(&mut bytes, payload_start);
        Ok(Encap {
            bytes: Storage::Owned(bytes),
            type_name: Cow::Borrowed(type_name),
            type_identity,
            payload_start,
        })
    }

    /// Deserializes the value, which must have been wrapped as exactly the type `T`.
    ///
    /// Decoding borrows from the envelope: the payload is not copied first. It must be used
    /// completely; bytes left over are an error.
    ///
    /// # Errors
    ///
    /// - [`EncapError::TypeMismatch`] when the envelope holds another type: its name differs,
    ///   or its name is the same but its identity differs.
    /// - [`EncapError::Decode`] when the payload does not decode as `T`.
    /// - [`EncapError::PayloadTrailingBytes`] when it decodes but leaves bytes over.
    pub fn unwrap<T: DeserializeOwned + 'static>(&self) -> Result<T, EncapError> {
        let expected = std::any::type_name::<T>();
        if self.type_identity != type_identity_of::<T>() || self.type_name != expected {
            return Err(EncapError::TypeMismatch {
                expected: expected.to_owned(),
                found: self.type_name.clone().into_owned(),
            });
        }
        let payload = self.payload();
        // A `Vec<u8>` decodes as a byte string in one copy (see `wrap`); anything amiss
        // falls through to the serde path, which reports it.
        if TypeId::of::<T>() == TypeId::of::<Vec<u8>>()
            && let Ok((bytes, used)) = codec::decode_prefix::<ByteBuf>(payload)
            && used == payload.len()
            && let Ok(value) = (Box::new(bytes.into_inner()) as Box<dyn Any>).downcast::<T>()
        {
            return Ok(*value);
        }
        let (value, used) =
            codec::decode_prefix::<T>(payload).map_err(|message| EncapError::Decode {
                type_name: expected.to_owned(),
                payload_len: payload.len(),
                message,
            })?;
        if used != payload.len() {
            return Err(EncapError::PayloadTrailingBytes {
                type_name: expected.to_owned(),
                trailing: payload.len() - used,
                payload_len: payload.len(),
            });
        }
        Ok(value)
    }

    /// Whether the envelope holds a `T` (same type name and identity), that is whether
    /// [`unwrap::<T>`](Encap::unwrap) can get past the type check.
    #[must_use]
    pub fn is<T: 'static>(&self) -> bool {
        self.type_identity == type_identity_of::<T>()
            && self.type_name == std::any::type_name::<T>()
    }

    /// The name of the wrapped type, as [`std::any::type_name`] gave it in the wrapping process.
    #[must_use]
    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    /// The identity of the wrapped type: a hash of its [`TypeId`], meaningful only between
    /// processes that run the same binary (see the [crate docs](crate#type-identity)).
    #[must_use]
    pub fn type_identity(&self) -> u64 {
        self.type_identity
    }

    /// The length of the serialized value in bytes (the envelope without its header).
    #[must_use]
    pub fn payload_len(&self) -> usize {
        self.bytes.len().saturating_sub(self.payload_start)
    }

    /// The whole envelope: header and payload, ready to send.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.as_slice()
    }

    /// A copy of the whole envelope; [`as_bytes`](Encap::as_bytes) and
    /// [`into_bytes`](Encap::into_bytes) avoid the copy.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        self.bytes.as_slice().to_vec()
    }

    /// The whole envelope, without a copy (with one when it lies in a shared buffer, see
    /// [`is_shared`](Encap::is_shared)).
    #[must_use]
    pub fn into_bytes(self) -> Vec<u8> {
        match self.bytes {
            Storage::Owned(bytes) => bytes,
            Storage::Split {
                head,
                run,
                mut joined,
            } => joined.take().unwrap_or_else(|| {
                let mut all = crate::large::buffer(head.len() + run.len());
                all.extend_from_slice(&head);
                all.extend_from_slice(&run);
                all
            }),
            shared @ Storage::Shared { .. } => shared.as_slice().to_vec(),
        }
    }

    /// Checks that `owner`'s bytes in `range` are exactly one envelope and makes an `Encap`
    /// of them without a copy: the `Encap` (and each of its clones) keeps `owner` alive.
    ///
    /// Deserializing an `Encap` inside [`with_shared_source`] does this on its own; a
    /// large message mapped from a memfd is how netmcore uses it.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use netmcore_encap::Encap;
    ///
    /// let message: Arc<Vec<u8>> = Arc::new(Encap::wrap(&vec![7u8; 1000])?.into_bytes());
    /// let len = message.len();
    /// let encap = Encap::from_shared(message, 0..len)?;
    /// assert!(encap.is_shared());
    /// assert_eq!(encap.unwrap::<Vec<u8>>()?, vec![7u8; 1000]);
    /// # Ok::<(), netmcore_encap::EncapError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`from_bytes`](Encap::from_bytes); a range outside `owner`'s bytes is
    /// [`EncapError::Truncated`].
    pub fn from_shared(owner: SharedBytes, range: Range<usize>) -> Result<Encap, EncapError> {
        let all: &[u8] = (*owner).as_ref();
        let Some(bytes) = all.get(range.clone()) else {
            return Err(EncapError::Truncated {
                part: "envelope",
                needed: range.end.max(range.start) as u64,
                available: all.len() as u64,
            });
        };
        let make = with_header(&envelope::parse(bytes)?);
        Ok(make(Storage::Shared {
            owner,
            start: range.start,
            len: range.len(),
        }))
    }

    /// Whether the envelope lies in a buffer shared with others (see
    /// [`from_shared`](Encap::from_shared)) rather than in a buffer of its own.
    #[must_use]
    pub fn is_shared(&self) -> bool {
        matches!(self.bytes, Storage::Shared { .. })
    }

    /// Checks that `bytes` is exactly one envelope and copies it into a new `Encap`.
    ///
    /// The payload itself is checked only by [`unwrap`](Encap::unwrap), which knows its type.
    ///
    /// # Errors
    ///
    /// [`EncapError::BadMagic`], [`EncapError::UnsupportedVersion`], [`EncapError::Truncated`],
    /// [`EncapError::TooLarge`], [`EncapError::TrailingBytes`] or
    /// [`EncapError::InvalidTypeName`], as described there. Never panics, whatever the input.
    pub fn from_bytes(bytes: &[u8]) -> Result<Encap, EncapError> {
        // Validate before copying, so that garbage is never copied.
        let make = with_header(&envelope::parse(bytes)?);
        Ok(make(Storage::Owned(crate::large::copy_of(bytes))))
    }

    /// Like [`from_bytes`](Encap::from_bytes), but takes the buffer over instead of copying it.
    ///
    /// # Errors
    ///
    /// As [`from_bytes`](Encap::from_bytes).
    pub fn from_vec(bytes: Vec<u8>) -> Result<Encap, EncapError> {
        let make = with_header(&envelope::parse(&bytes)?);
        Ok(make(Storage::Owned(bytes)))
    }

    /// Wraps `value` like [`wrap`](Encap::wrap), in two pieces that make the envelope when put
    /// end to end: a head of its own and a run of bytes borrowed from `value`. A `Vec<u8>` is
    /// not copied at all: its bytes are the run and the head is the envelope's header and the
    /// vector's length. Any other value is wrapped whole into the head, with an empty run.
    ///
    /// A large byte vector can so be sent without a copy of it being made first; the receiver
    /// puts the pieces back together with [`from_pieces`](Encap::from_pieces).
    ///
    /// ```
    /// use netmcore_encap::Encap;
    ///
    /// let data = vec![7u8; 100_000];
    /// let pieces = Encap::wrap_pieces(&data)?;
    /// assert_eq!(pieces.run().as_ptr(), data.as_ptr());
    /// let mut whole = pieces.head().to_vec();
    /// whole.extend_from_slice(pieces.run());
    /// assert_eq!(whole, Encap::wrap(&data)?.into_bytes());
    /// # Ok::<(), netmcore_encap::EncapError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`wrap`](Encap::wrap).
    pub fn wrap_pieces<T: Serialize + 'static>(value: &T) -> Result<Pieces<'_>, EncapError> {
        let Some(bytes) = (value as &dyn Any).downcast_ref::<Vec<u8>>() else {
            return Ok(Pieces {
                head: Encap::wrap(value)?.into_bytes(),
                run: &[],
            });
        };
        let type_name = std::any::type_name::<T>();
        let prefix = codec::encode_into(&(bytes.len() as u64), Vec::new(), 16, MAX_PAYLOAD_LEN)
            .map_err(|message| EncapError::Encode {
                type_name: type_name.to_owned(),
                message,
            })?;
        let payload_len = (prefix.len() as u64).saturating_add(bytes.len() as u64);
        if payload_len > MAX_PAYLOAD_LEN {
            return Err(EncapError::Encode {
                type_name: type_name.to_owned(),
                message: format!(
                    "the payload would be {payload_len} bytes, more than the limit of {MAX_PAYLOAD_LEN}"
                ),
            });
        }
        // A `Vec<u8>`'s name is far below the limit.
        let mut head = envelope::begin(type_name, type_identity_of::<T>(), prefix.len());
        let payload_start = head.len();
        head.extend_from_slice(&prefix);
        envelope::set_payload_len(&mut head, payload_start, payload_len);
        Ok(Pieces { head, run: bytes })
    }

    /// Checks that `head` followed by `run_len` more bytes would be exactly one envelope
    /// (as [`from_pieces`](Encap::from_pieces) will), before the run has arrived. Never panics,
    /// whatever the input.
    ///
    /// # Errors
    ///
    /// As [`from_bytes`](Encap::from_bytes).
    pub fn check_head(head: &[u8], run_len: u64) -> Result<(), EncapError> {
        envelope::parse_head(head, run_len).map(|_| ())
    }

    /// Puts an envelope sent in two pieces (see [`wrap_pieces`](Encap::wrap_pieces)) back
    /// together, taking both buffers over. They are joined into one only if the whole
    /// envelope is asked for; [`into_value`](Encap::into_value) of a `Vec<u8>` returns `run`
    /// itself.
    ///
    /// ```
    /// use netmcore_encap::Encap;
    ///
    /// let data = vec![7u8; 100_000];
    /// let pieces = Encap::wrap_pieces(&data)?;
    /// let run = pieces.run().to_vec();
    /// let at = run.as_ptr();
    /// let encap = Encap::from_pieces(pieces.head().to_vec(), run)?;
    /// let value: Vec<u8> = encap.into_value()?;
    /// assert_eq!((value.as_ptr(), value.len()), (at, 100_000));
    /// # Ok::<(), netmcore_encap::EncapError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`from_bytes`](Encap::from_bytes), for `head` followed by `run`. Never panics,
    /// whatever the input.
    pub fn from_pieces(head: Vec<u8>, run: Vec<u8>) -> Result<Encap, EncapError> {
        if run.is_empty() {
            return Encap::from_vec(head);
        }
        let make = with_header(&envelope::parse_head(&head, run.len() as u64)?);
        Ok(make(Storage::Split {
            head,
            run,
            joined: OnceLock::new(),
        }))
    }

    /// [`unwrap`](Encap::unwrap), consuming the `Encap`: a `Vec<u8>` put together by
    /// [`from_pieces`](Encap::from_pieces) is returned without a copy.
    ///
    /// # Errors
    ///
    /// As [`unwrap`](Encap::unwrap).
    pub fn into_value<T: DeserializeOwned + 'static>(self) -> Result<T, EncapError> {
        // The head's payload is exactly the run's length: the run is the vector's bytes.
        if TypeId::of::<T>() == TypeId::of::<Vec<u8>>()
            && self.is::<T>()
            && let Storage::Split { head, run, .. } = &self.bytes
            && let Some(prefix) = head.get(self.payload_start..)
            && let Ok((len, used)) = codec::decode_prefix::<u64>(prefix)
            && used == prefix.len()
            && len == run.len() as u64
            && let Storage::Split { run, .. } = self.bytes
        {
            return match (Box::new(run) as Box<dyn Any>).downcast::<T>() {
                Ok(value) => Ok(*value),
                Err(_) => unreachable!("T is Vec<u8>, checked above"),
            };
        }
        self.unwrap()
    }

    /// The payload: the serialized value without the envelope header.
    fn payload(&self) -> &[u8] {
        self.bytes
            .as_slice()
            .get(self.payload_start..)
            .unwrap_or_default()
    }
}

/// Makes the `Encap` of an envelope whose validated header is `header`, given where its bytes
/// are: the header's fields are copied out first, so that the buffer it was read from can
/// move into the `Encap`.
fn with_header(header: &envelope::Header<'_>) -> impl FnOnce(Storage) -> Encap + use<> {
    let type_name = Cow::Owned(header.type_name.to_owned());
    let (type_identity, payload_start) = (header.type_identity, header.payload_start);
    move |bytes| Encap {
        bytes,
        type_name,
        type_identity,
        payload_start,
    }
}

/// An envelope in two pieces, made by [`Encap::wrap_pieces`]: [`head`](Pieces::head) then
/// [`run`](Pieces::run), end to end, are the envelope [`Encap::wrap`] makes. `Debug` shows
/// the lengths, never the bytes.
#[derive(Clone)]
pub struct Pieces<'a> {
    head: Vec<u8>,
    run: &'a [u8],
}

impl fmt::Debug for Pieces<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pieces")
            .field("head_len", &self.head.len())
            .field("run_len", &self.run.len())
            .finish()
    }
}

impl<'a> Pieces<'a> {
    /// The first piece: the envelope's header and the start of its payload.
    #[must_use]
    pub fn head(&self) -> &[u8] {
        &self.head
    }

    /// The second piece, borrowed from the wrapped value (empty unless it is a `Vec<u8>`).
    #[must_use]
    pub fn run(&self) -> &'a [u8] {
        self.run
    }

    /// The length of the whole envelope.
    #[must_use]
    pub fn len(&self) -> usize {
        self.head.len() + self.run.len()
    }

    /// Never: an envelope has a header.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The two pieces in one [`Encap`], the run copied after the head.
    ///
    /// # Errors
    ///
    /// None for pieces made by [`Encap::wrap_pieces`]; the check is that of
    /// [`Encap::from_vec`].
    pub fn into_encap(self) -> Result<Encap, EncapError> {
        if self.run.is_empty() {
            return Encap::from_vec(self.head);
        }
        let mut all = crate::large::buffer(self.len());
        all.extend_from_slice(&self.head);
        all.extend_from_slice(self.run);
        Encap::from_vec(all)
    }
}

/// A buffer shared between owners, which [`Encap::from_shared`] and [`with_shared_source`]
/// take: anything that shows its bytes (a `Vec<u8>`, a read-only mapping), behind an `Arc`.
pub type SharedBytes = Arc<dyn AsRef<[u8]> + Send + Sync + std::panic::RefUnwindSafe>;

/// Where an envelope's bytes are.
#[derive(Clone)]
enum Storage {
    /// A buffer of its own.
    Owned(Vec<u8>),
    /// `len` bytes from `start` of a buffer shared with others.
    Shared {
        owner: SharedBytes,
        start: usize,
        len: usize,
    },
    /// Two buffers, the head and the run of bytes that completes it (see [`Encap::from_pieces`]),
    /// joined into one only when the whole envelope is asked for.
    Split {
        head: Vec<u8>,
        run: Vec<u8>,
        joined: OnceLock<Vec<u8>>,
    },
}

impl Storage {
    /// The envelope's bytes in order, in at most two pieces, without joining them.
    fn pieces(&self) -> [&[u8]; 2] {
        match self {
            Storage::Split { head, run, .. } => [head, run],
            other => [other.as_slice(), &[]],
        }
    }

    /// The envelope's length.
    fn len(&self) -> usize {
        let [first, second] = self.pieces();
        first.len() + second.len()
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Storage::Owned(bytes) => bytes,
            Storage::Split { head, run, joined } => joined.get_or_init(|| {
                let mut all = crate::large::buffer(head.len() + run.len());
                all.extend_from_slice(head);
                all.extend_from_slice(run);
                all
            }),
            Storage::Shared { owner, start, len } => (**owner)
                .as_ref()
                .get(*start..start.saturating_add(*len))
                .unwrap_or_default(),
        }
    }
}

/// Envelopes smaller than this are copied even inside [`with_shared_source`]: a copy is
/// cheaper than keeping a large buffer alive for a few bytes.
const SHARE_AT_LEAST: usize = 64 * 1024;

thread_local! {
    /// The buffer [`with_shared_source`] decodes from, on this thread, while it runs.
    static SOURCE: std::cell::RefCell<Option<SharedBytes>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `decode` on `owner`'s bytes; every `Encap` of at least 64 KiB that it deserializes
/// from a slice of them shares `owner` instead of copying its envelope (see
/// [`Encap::from_shared`]). Formats that hand serde slices of their input (postcard, which
/// netmcore uses, does) benefit; the others are unaffected.
///
/// ```
/// use std::sync::Arc;
/// use netmcore_encap::{Encap, with_shared_source};
///
/// let big = Encap::wrap(&vec![1u8; 100_000])?;
/// let message: Arc<Vec<u8>> = Arc::new(postcard_like_bytes(&big));
/// let decoded: Encap = with_shared_source(message, |bytes| decode(bytes));
/// assert!(decoded.is_shared());
/// assert_eq!(decoded, big);
///
/// // A stand-in for a message format: the envelope as a serde byte string.
/// fn postcard_like_bytes(encap: &Encap) -> Vec<u8> { encap.as_bytes().to_vec() }
/// fn decode(bytes: &[u8]) -> Encap {
///     use serde::de::{Deserialize, value::BorrowedBytesDeserializer};
///     let de = BorrowedBytesDeserializer::<serde::de::value::Error>::new(bytes);
///     Encap::deserialize(de).expect("an envelope")
/// }
/// # Ok::<(), netmcore_encap::EncapError>(())
/// ```
pub fn with_shared_source<R>(owner: SharedBytes, decode: impl FnOnce(&[u8]) -> R) -> R {
    struct Restore(Option<SharedBytes>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            SOURCE.with(|source| *source.borrow_mut() = previous);
        }
    }
    let previous = SOURCE.with(|source| source.borrow_mut().replace(Arc::clone(&owner)));
    let _restore = Restore(previous);
    decode((*owner).as_ref())
}

/// The shared buffer and range `bytes` lie in, when they lie in the buffer of the running
/// [`with_shared_source`] and are large enough to share.
fn shared_range(bytes: &[u8]) -> Option<(SharedBytes, Range<usize>)> {
    if bytes.len() < SHARE_AT_LEAST {
        return None;
    }
    SOURCE
        .try_with(|source| {
            let source = source.borrow();
            let owner = source.as_ref()?;
            let all: &[u8] = (**owner).as_ref();
            let base = all.as_ptr() as usize;
            let at = (bytes.as_ptr() as usize).checked_sub(base)?;
            let range = at..at.checked_add(bytes.len())?;
            (range.end <= all.len()).then(|| (Arc::clone(owner), range))
        })
        .ok()
        .flatten()
}

/// A `Vec<u8>` to serialize as one byte string (the same payload bytes as the sequence serde
/// makes of it).
struct ByteString<'a>(&'a [u8]);

impl Serialize for ByteString<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// `Serialize` as a trait object, for [`Encap::wrap`]'s two paths.
trait ErasedSerialize {
    fn serialize_into(&self, buf: Vec<u8>, limit_end: usize) -> Result<Vec<u8>, String>;
}

impl<T: Serialize + ?Sized> ErasedSerialize for T {
    fn serialize_into(&self, buf: Vec<u8>, limit_end: usize) -> Result<Vec<u8>, String> {
        codec::encode_into(self, buf, limit_end, MAX_PAYLOAD_LEN)
    }
}

/// The identity of `T`: its [`TypeId`] hashed to a `u64`.
///
/// `DefaultHasher::new()` is `SipHash` with fixed keys, so every process running the same binary
/// computes the same value; `TypeId` itself is only stable within one build, hence the rule that
/// identities are compared only between processes of the same binary.
fn type_identity_of<T: 'static>() -> u64 {
    let mut hasher = DefaultHasher::new();
    TypeId::of::<T>().hash(&mut hasher);
    hasher.finish()
}

impl fmt::Debug for Encap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encap")
            .field("type_name", &self.type_name())
            .field(
                "type_identity",
                &format_args!("{:#018x}", self.type_identity),
            )
            .field("payload_len", &self.payload_len())
            // The payload itself is left out on purpose: it can be megabytes.
            .finish_non_exhaustive()
    }
}

impl PartialEq for Encap {
    /// Byte for byte, however each envelope is stored (an envelope in two pieces is compared
    /// piece by piece, not joined).
    fn eq(&self, other: &Self) -> bool {
        self.bytes.len() == other.bytes.len()
            && same_bytes(self.bytes.pieces(), other.bytes.pieces())
    }
}

impl Eq for Encap {}

impl Hash for Encap {
    /// The envelope's length, then its bytes in chunks of 4 KiB counted from its
    /// start, so that equal envelopes hash alike however they are stored.
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_usize(self.bytes.len());
        let [first, second] = self.bytes.pieces();
        let (whole, rest) = first.split_at(first.len() - first.len() % HASH_CHUNK);
        whole
            .chunks(HASH_CHUNK)
            .for_each(|chunk| state.write(chunk));
        // The chunk that straddles the two pieces, put together.
        let (bridge, second) = second.split_at(second.len().min(HASH_CHUNK - rest.len()));
        let mut straddling = [0u8; HASH_CHUNK];
        let straddling = straddling
            .get_mut(..rest.len() + bridge.len())
            .unwrap_or_default();
        let (left, right) = straddling.split_at_mut(rest.len());
        left.copy_from_slice(rest);
        right.copy_from_slice(bridge);
        if !straddling.is_empty() {
            state.write(straddling);
        }
        second
            .chunks(HASH_CHUNK)
            .for_each(|chunk| state.write(chunk));
    }
}

/// The chunk size of [`Encap`]'s `Hash`.
const HASH_CHUNK: usize = 4096;

/// Whether two byte sequences, each in at most two pieces, of the same total length are equal.
fn same_bytes(a: [&[u8]; 2], b: [&[u8]; 2]) -> bool {
    let (mut a, mut b) = (a.into_iter(), b.into_iter());
    let (mut x, mut y): (&[u8], &[u8]) = (&[], &[]);
    loop {
        while x.is_empty() {
            match a.next() {
                Some(piece) => x = piece,
                // The lengths are equal: `b` is used up too.
                None => return true,
            }
        }
        while y.is_empty() {
            match b.next() {
                Some(piece) => y = piece,
                None => return false,
            }
        }
        let n = x.len().min(y.len());
        let ((x_now, x_rest), (y_now, y_rest)) = (x.split_at(n), y.split_at(n));
        if x_now != y_now {
            return false;
        }
        (x, y) = (x_rest, y_rest);
    }
}

impl TryFrom<Vec<u8>> for Encap {
    type Error = EncapError;

    /// As [`Encap::from_vec`].
    fn try_from(bytes: Vec<u8>) -> Result<Self, Self::Error> {
        Encap::from_vec(bytes)
    }
}

impl TryFrom<&[u8]> for Encap {
    type Error = EncapError;

    /// As [`Encap::from_bytes`].
    fn try_from(bytes: &[u8]) -> Result<Self, Self::Error> {
        Encap::from_bytes(bytes)
    }
}

impl From<Encap> for Vec<u8> {
    /// As [`Encap::into_bytes`].
    fn from(encap: Encap) -> Self {
        encap.into_bytes()
    }
}

/// An `Encap` serializes as one byte string holding the whole envelope (`serialize_bytes`), so
/// that binary formats copy it in one piece and it can travel inside other messages.
impl Serialize for Encap {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.as_bytes())
    }
}

/// Accepts a byte string (borrowed, transient or owned; an owned buffer is taken over without a
/// copy) or, for formats that write bytes as a sequence, a sequence of `u8`. The envelope is
/// validated as by [`Encap::from_bytes`].
impl<'de> Deserialize<'de> for Encap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_byte_buf(EnvelopeVisitor)
    }
}

/// The serde visitor behind `Encap`'s `Deserialize` impl.
struct EnvelopeVisitor;

impl<'de> Visitor<'de> for EnvelopeVisitor {
    type Value = Encap;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an encap envelope as a byte string")
    }

    /// Bytes that lie in the buffer of a running [`with_shared_source`] are not copied: the
    /// `Encap` takes a reference to that buffer and the range, whatever lifetime the
    /// deserializer gives the slice (postcard hands out a slice of its input either way).
    fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Encap, E> {
        match shared_range(bytes) {
            Some((owner, range)) => Encap::from_shared(owner, range).map_err(E::custom),
            None => Encap::from_bytes(bytes).map_err(E::custom),
        }
    }

    fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<Encap, E> {
        Encap::from_vec(bytes).map_err(E::custom)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Encap, A::Error> {
        // Trust the size hint only so far: it comes from the input.
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64 * 1024));
        while let Some(byte) = seq.next_element::<u8>()? {
            if bytes.len() as u64 >= MAX_ENVELOPE_LEN {
                return Err(serde::de::Error::custom(EncapError::TooLarge {
                    part: "envelope",
                    declared: bytes.len() as u64 + 1,
                    limit: MAX_ENVELOPE_LEN,
                }));
            }
            bytes.push(byte);
        }
        Encap::from_vec(bytes).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::de::value::{
        BorrowedBytesDeserializer, BytesDeserializer, Error as ValueError, SeqDeserializer,
    };

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Point {
        x: i32,
        y: i32,
    }

    mod other {
        use serde::{Deserialize, Serialize};

        /// Same name as the outer `Point` apart from the module path.
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        pub(super) struct Point {
            pub(super) x: i32,
            pub(super) y: i32,
        }
    }

    /// The same bytes as a `Vec<u8>`, but serialized through serde's generic path.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Generic(Vec<u8>);

    /// An envelope claiming a `Vec<u8>` whose payload is `payload`, whatever it holds.
    fn byte_vec_envelope(payload: &[u8]) -> Encap {
        let mut buf = envelope::begin(
            std::any::type_name::<Vec<u8>>(),
            type_identity_of::<Vec<u8>>(),
            payload.len(),
        );
        let start = buf.len();
        buf.extend_from_slice(payload);
        envelope::finish(&mut buf, start);
        Encap::from_vec(buf).unwrap()
    }

    #[test]
    fn byte_vectors_encode_exactly_as_the_serde_path() {
        for len in [0usize, 1, 127, 128, 300, 16_383, 16_384, 100_000] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let fast = Encap::wrap(&bytes).unwrap();
            let generic = Encap::wrap(&Generic(bytes.clone())).unwrap();
            assert_eq!(fast.payload(), generic.payload(), "length {len}");
            assert_eq!(fast.type_name(), std::any::type_name::<Vec<u8>>());
            assert_eq!(fast.unwrap::<Vec<u8>>().unwrap(), bytes, "length {len}");
            // A payload the serde path wrote decodes through the fast path, and back.
            let through = byte_vec_envelope(generic.payload());
            assert_eq!(through.unwrap::<Vec<u8>>().unwrap(), bytes, "length {len}");
            assert_eq!(fast.unwrap::<Generic>().ok(), None, "the type still counts");
        }
    }

    #[test]
    fn malformed_byte_vectors_fail_as_on_the_serde_path() {
        // The length says 5, three bytes follow.
        let short = byte_vec_envelope(&[5, 1, 2, 3]);
        assert!(matches!(
            short.unwrap::<Vec<u8>>(),
            Err(EncapError::Decode { .. })
        ));
        // The length says 2, three bytes follow.
        let long = byte_vec_envelope(&[2, 1, 2, 3]);
        assert!(matches!(
            long.unwrap::<Vec<u8>>(),
            Err(EncapError::PayloadTrailingBytes { trailing: 1, .. })
        ));
        // No length at all.
        assert!(matches!(
            byte_vec_envelope(&[]).unwrap::<Vec<u8>>(),
            Err(EncapError::Decode { .. })
        ));
    }

    /// Deserializes an `Encap` from a borrowed byte string, as a zero-copy format does.
    fn decode_borrowed(bytes: &[u8]) -> Encap {
        Encap::deserialize(BorrowedBytesDeserializer::<ValueError>::new(bytes)).unwrap()
    }

    #[test]
    fn an_encap_crosses_threads_and_unwind_boundaries() {
        fn assert_traits<T: Send + Sync + std::panic::UnwindSafe + std::panic::RefUnwindSafe>() {}
        assert_traits::<Encap>();
    }

    #[test]
    fn shared_envelopes_read_like_owned_ones() {
        let big = Encap::wrap(&vec![9u8; SHARE_AT_LEAST]).unwrap();
        let mut message = vec![0xAAu8; 3];
        message.extend_from_slice(big.as_bytes());
        let end = message.len();
        let owner: SharedBytes = Arc::new(message);
        let shared = Encap::from_shared(Arc::clone(&owner), 3..end).unwrap();
        assert!(shared.is_shared() && !big.is_shared());
        assert_eq!(shared, big);
        assert_eq!(shared.type_name(), big.type_name());
        assert_eq!(shared.payload_len(), big.payload_len());
        assert_eq!(
            shared.unwrap::<Vec<u8>>().unwrap(),
            vec![9u8; SHARE_AT_LEAST]
        );
        let copy = shared.clone();
        assert!(copy.is_shared());
        assert_eq!(copy.into_bytes(), big.to_bytes());
        // A range that is not an envelope, or not inside the buffer, is refused.
        assert!(matches!(
            Encap::from_shared(Arc::clone(&owner), 0..end),
            Err(EncapError::BadMagic { .. })
        ));
        assert!(matches!(
            Encap::from_shared(owner, 3..end + 1),
            Err(EncapError::Truncated { .. })
        ));
    }

    #[test]
    fn with_shared_source_shares_only_large_envelopes_inside_its_buffer() {
        let big = Encap::wrap(&vec![1u8; SHARE_AT_LEAST]).unwrap();
        let small = Encap::wrap(&vec![2u8; 100]).unwrap();
        let source: SharedBytes = Arc::new(big.to_bytes());
        let decoded = with_shared_source(Arc::clone(&source), decode_borrowed);
        assert!(decoded.is_shared());
        assert_eq!(decoded, big);
        // Small ones are copied.
        let small_source: SharedBytes = Arc::new(small.to_bytes());
        let decoded = with_shared_source(small_source, decode_borrowed);
        assert!(!decoded.is_shared());
        assert_eq!(decoded, small);
        // Bytes from elsewhere are copied, and outside the call nothing is shared.
        let elsewhere = big.to_bytes();
        let decoded = with_shared_source(source, |_| decode_borrowed(&elsewhere));
        assert!(!decoded.is_shared());
        assert!(!decode_borrowed(&elsewhere).is_shared());
    }

    #[test]
    fn nested_shared_sources_restore_the_outer_one() {
        let big = Encap::wrap(&vec![3u8; SHARE_AT_LEAST]).unwrap();
        let outer: SharedBytes = Arc::new(big.to_bytes());
        let inner: SharedBytes = Arc::new(big.to_bytes());
        let (from_inner, from_outer) = with_shared_source(outer, |outer_bytes| {
            let from_inner = with_shared_source(inner, decode_borrowed);
            (from_inner, decode_borrowed(outer_bytes))
        });
        assert!(from_inner.is_shared() && from_outer.is_shared());
        assert_eq!(from_inner, from_outer);
    }

    #[test]
    fn wrap_and_unwrap() {
        let encap = Encap::wrap(&Point { x: 1, y: -2 }).unwrap();
        assert_eq!(encap.type_name(), std::any::type_name::<Point>());
        assert_eq!(encap.payload_len(), 2);
        assert!(encap.is::<Point>());
        assert!(!encap.is::<other::Point>());
        assert_eq!(encap.unwrap::<Point>().unwrap(), Point { x: 1, y: -2 });
    }

    #[test]
    fn unwrap_as_another_type_is_a_mismatch() {
        let encap = Encap::wrap(&Point { x: 1, y: 2 }).unwrap();
        assert_eq!(
            encap.unwrap::<other::Point>(),
            Err(EncapError::TypeMismatch {
                expected: std::any::type_name::<other::Point>().to_owned(),
                found: std::any::type_name::<Point>().to_owned(),
            })
        );
        // Same encoding, different type: the tag catches what the payload cannot.
        assert!(matches!(
            encap.unwrap::<(i32, i32)>(),
            Err(EncapError::TypeMismatch { .. })
        ));
    }

    #[test]
    fn same_name_different_identity_is_a_mismatch() {
        let encap = Encap::wrap(&5_u32).unwrap();
        let mut bytes = encap.into_bytes();
        // Flip a bit of the type identity (offset 6).
        bytes[6] ^= 1;
        let forged = Encap::from_vec(bytes).unwrap();
        assert_eq!(forged.type_name(), "u32");
        let error = forged.unwrap::<u32>().unwrap_err();
        assert_eq!(
            error,
            EncapError::TypeMismatch {
                expected: "u32".into(),
                found: "u32".into()
            }
        );
        assert!(error.to_string().contains("same name"), "{error}");
    }

    #[test]
    fn payload_must_be_used_completely() {
        // Forge an envelope that says u8 but carries two bytes.
        let mut bytes = envelope::begin("u8", type_identity_of::<u8>(), 0);
        let start = bytes.len();
        bytes.extend_from_slice(&[1, 2]);
        envelope::finish(&mut bytes, start);
        let encap = Encap::from_vec(bytes).unwrap();
        assert_eq!(
            encap.unwrap::<u8>(),
            Err(EncapError::PayloadTrailingBytes {
                type_name: "u8".into(),
                trailing: 1,
                payload_len: 2
            })
        );
    }

    #[test]
    fn damaged_payload_is_a_decode_error() {
        let mut bytes = envelope::begin("bool", type_identity_of::<bool>(), 0);
        let start = bytes.len();
        bytes.push(7);
        envelope::finish(&mut bytes, start);
        let encap = Encap::from_vec(bytes).unwrap();
        assert_eq!(
            encap.unwrap::<bool>(),
            Err(EncapError::Decode {
                type_name: "bool".into(),
                payload_len: 1,
                message: "a bool byte is neither 0 nor 1".into()
            })
        );
    }

    #[test]
    fn failing_serialize_is_an_encode_error() {
        struct Fails;
        impl Serialize for Fails {
            fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("no"))
            }
        }
        let error = Encap::wrap(&Fails).unwrap_err();
        assert!(
            matches!(&error, EncapError::Encode { type_name, .. } if type_name.ends_with("Fails"))
        );
        assert!(
            error
                .to_string()
                .starts_with("cannot encode a value of type `")
        );
    }

    #[test]
    fn bytes_round_trip_and_equality() {
        let mut map = BTreeMap::new();
        map.insert("a".to_owned(), vec![1_u64, 2]);
        let encap = Encap::wrap(&map).unwrap();
        let copy = Encap::from_bytes(encap.as_bytes()).unwrap();
        assert_eq!(copy, encap);
        assert_eq!(copy.type_name(), encap.type_name());
        assert_eq!(copy.type_identity(), encap.type_identity());
        assert_eq!(copy.unwrap::<BTreeMap<String, Vec<u64>>>().unwrap(), map);
        let moved = Encap::try_from(Vec::from(copy)).unwrap();
        assert_eq!(moved, encap);
        assert_eq!(encap.to_bytes(), encap.as_bytes());
        assert_eq!(Encap::try_from(encap.as_bytes()).unwrap(), encap);
    }

    #[test]
    fn debug_does_not_dump_the_payload() {
        let encap = Encap::wrap(&vec![0xAB_u8; 10_000]).unwrap();
        let debug = format!("{encap:?}");
        assert!(
            debug.starts_with("Encap { type_name: \"alloc::vec::Vec<u8>\""),
            "{debug}"
        );
        assert!(debug.ends_with("payload_len: 10002, .. }"), "{debug}");
        assert!(debug.len() < 200, "{debug}");
    }

    #[test]
    fn deserializes_from_every_byte_shape() {
        let encap = Encap::wrap(&"hello").unwrap();
        let bytes = encap.to_bytes();

        let borrowed = BorrowedBytesDeserializer::<ValueError>::new(&bytes);
        assert_eq!(Encap::deserialize(borrowed).unwrap(), encap);

        let transient = BytesDeserializer::<ValueError>::new(&bytes);
        assert_eq!(Encap::deserialize(transient).unwrap(), encap);

        let seq = SeqDeserializer::<_, ValueError>::new(bytes.iter().copied());
        assert_eq!(Encap::deserialize(seq).unwrap(), encap);

        assert_eq!(
            EnvelopeVisitor
                .visit_byte_buf::<ValueError>(bytes.clone())
                .unwrap(),
            encap
        );
    }

    #[test]
    fn deserialize_reports_envelope_errors() {
        let encap = Encap::wrap(&1_u8).unwrap();
        let bytes = encap.as_bytes();
        let short = BytesDeserializer::<ValueError>::new(&bytes[..bytes.len() - 1]);
        let error = Encap::deserialize(short).unwrap_err().to_string();
        assert!(error.starts_with("truncated encap envelope"), "{error}");
    }
}
