//! The hook for large buffers: a function that netmcore's master sets, and that this crate
//! calls on each large buffer it allocates before filling it. The crate itself makes no OS call.

use std::sync::OnceLock;

/// Buffers of at least this many bytes that this crate allocates — the envelope of a value
/// being wrapped, a `Vec<u8>` being decoded — go through the hook set with
/// [`set_large_buffer_hook`] right after they are allocated, before anything is written to
/// them: 4 MiB.
pub const LARGE_BUFFER: usize = 4 << 20;

static HOOK: OnceLock<fn(&mut Vec<u8>)> = OnceLock::new();

/// Sets the function that prepares the large buffers this crate allocates (see
/// [`LARGE_BUFFER`]): it gets each one empty, with its capacity allocated, and may do anything
/// with its memory that leaves the vector as it is. The first call sets it, for the life of the
/// process; it returns whether this call did.
///
/// netmcore's master sets one that asks the kernel for transparent huge pages, which makes
/// filling a fresh 64 MiB buffer about five times cheaper on Linux.
///
/// ```
/// fn prepare(buffer: &mut Vec<u8>) {
///     assert!(buffer.is_empty() && buffer.capacity() >= netmcore_encap::LARGE_BUFFER);
/// }
/// netmcore_encap::set_large_buffer_hook(prepare);
/// let big = netmcore_encap::Encap::wrap(&vec![7u8; 5 << 20])?;
/// assert_eq!(big.unwrap::<Vec<u8>>()?.len(), 5 << 20);
/// # Ok::<(), netmcore_encap::EncapError>(())
/// ```
pub fn set_large_buffer_hook(hook: fn(&mut Vec<u8>)) -> bool {
    HOOK.set(hook).is_ok()
}

/// An empty vector with room for `capacity` bytes, prepared by the hook set with
/// [`set_large_buffer_hook`] when it is large: for a buffer about to be filled from
/// elsewhere (a pipe, say).
///
/// ```
/// let buffer = netmcore_encap::buffer_with_capacity(1 << 20);
/// assert!(buffer.is_empty() && buffer.capacity() >= 1 << 20);
/// ```
#[must_use]
pub fn buffer_with_capacity(capacity: usize) -> Vec<u8> {
    buffer(capacity)
}

/// A copy of `bytes` in a vector of their length, through the hook if it is large.
pub(crate) fn copy_of(bytes: &[u8]) -> Vec<u8> {
    let mut copy = buffer(bytes.len());
    copy.extend_from_slice(bytes);
    copy
}

/// An empty vector of at least `capacity` bytes, through the hook if it is large.
pub(crate) fn buffer(capacity: usize) -> Vec<u8> {
    let mut buffer = Vec::with_capacity(capacity);
    if capacity >= LARGE_BUFFER
        && let Some(hook) = HOOK.get()
    {
        hook(&mut buffer);
        // A hook that broke the contract gets a fresh buffer rather than a wrong one.
        if !buffer.is_empty() || buffer.capacity() < capacity {
            return Vec::with_capacity(capacity);
        }
    }
    buffer
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    static LARGE_SEEN: AtomicUsize = AtomicUsize::new(0);

    fn count(buffer: &mut Vec<u8>) {
        assert!(buffer.is_empty());
        if buffer.capacity() == LARGE_BUFFER + 1 {
            LARGE_SEEN.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn large_buffers_go_through_the_hook_and_small_ones_do_not() {
        // Other tests of this binary may have set it first; then only the contract is checked.
        let mine = set_large_buffer_hook(count);
        let small = buffer(LARGE_BUFFER - 1);
        let large = buffer(LARGE_BUFFER + 1);
        assert!(small.is_empty() && large.is_empty() && large.capacity() > LARGE_BUFFER);
        if mine {
            assert_eq!(LARGE_SEEN.load(Ordering::Relaxed), 1);
        }
    }
}
