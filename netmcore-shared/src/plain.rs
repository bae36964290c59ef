//! Plain data: the element types that may live in shared memory.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Data that can be stored in shared memory and read back by any process: no pointers, no
/// padding, no interior mutability, and every bit pattern a valid value.
///
/// It is [zerocopy]'s `FromBytes + IntoBytes + KnownLayout + Immutable`, plus `Send + Sync +
/// 'static`, and every such type is `Plain` (a blanket impl): the integers, floats, arrays of
/// them, and your own `#[repr(C)]` structs that derive zerocopy's traits. Since every bit
/// pattern is valid, a process killed in the middle of a write leaves torn bytes behind, never
/// an invalid value; since there are no pointers, a value means the same in every process,
/// wherever each maps the segment.
///
/// ```
/// use netmcore_shared::Plain;
/// use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
///
/// /// A particle of a simulation, shared between processes.
/// #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, PartialEq)]
/// #[repr(C)]
/// struct Particle {
///     position: [f64; 3],
///     velocity: [f64; 3],
///     id: u64,
/// }
///
/// fn shareable<T: Plain>() {}
/// shareable::<Particle>();
/// shareable::<u64>();
/// shareable::<[f32; 16]>();
///
/// // What a structure does with it: the value is its bytes, and any bytes are a value.
/// let p = Particle { position: [1.0, 2.0, 3.0], velocity: [0.0; 3], id: 7 };
/// let bytes = p.as_bytes().to_vec();
/// assert_eq!(Particle::read_from_bytes(&bytes), Ok(p));
/// assert!(Particle::read_from_bytes(&[0xff; 56]).is_ok());
/// ```
///
/// Types with padding (a `#[repr(C)]` struct of a `u8` and a `u64`), references, `bool`,
/// `char` and enums are refused at compile time: zerocopy's derives reject them.
///
/// ```compile_fail
/// fn shareable<T: netmcore_shared::Plain>() {}
/// shareable::<bool>(); // not every byte is a valid bool
/// ```
pub trait Plain: FromBytes + IntoBytes + KnownLayout + Immutable + Send + Sync + 'static {}

impl<T> Plain for T where T: FromBytes + IntoBytes + KnownLayout + Immutable + Send + Sync + 'static {}
