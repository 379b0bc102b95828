//! An allocator that counts the bytes live, for tests that measure what a table costs (the
//! RIB's, the agent's FIB's). A test binary makes it its global allocator:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOCATOR: gingham_bgp::counting_alloc::Counting = gingham_bgp::counting_alloc::Counting;
//! ```
//!
//! and reads [`live`] before and after building the table. Counts are of the whole process:
//! such a test is the only one in its binary.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

static LIVE: AtomicIsize = AtomicIsize::new(0);

/// The system allocator, counting.
pub struct Counting;

// SAFETY: every call goes to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as above; `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Bytes allocated and not yet freed, since the process started (with [`Counting`] as its
/// global allocator; 0 otherwise).
pub fn live() -> isize {
    LIVE.load(Ordering::SeqCst)
}
