//! Fixed-size arrays of plain data in shared memory: `SharedVec<T>` and `SharedMatrix<T>`,
//! written through exclusive claims of disjoint ranges and read after `freeze`.

/// The proof that the claims table of a segment holds a live claim of a range for the calling
/// process, which `sys::claimed_slice` consumes to hand out the elements. Only this module
/// makes one (its field is private), right after the table recorded the claim, and the
/// `Claim` that owns the slice releases the claim only when the slice is gone.
pub(crate) struct Claimed(());

/// The proof that a vector's frozen flag was read set (with `Acquire`), which
/// `sys::frozen_slice` consumes to hand out the elements. Only this module makes one.
pub(crate) struct Frozen(());
