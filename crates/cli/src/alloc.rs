//! A counting global allocator: peak heap bytes, for the memory column of
//! `memlab bench` on the CPU backend (where every tensor lives on the heap)
//! and for the MRBP memory benchmark. The `memlab` binary and that
//! benchmark install it with `#[global_allocator]`; elsewhere
//! [`peak_during`] reports nothing.
//!
//! Hand-written because the ecosystem's allocation counters (e.g. `stats_alloc`)
//! report totals, not the running peak this needs.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use mimalloc::MiMalloc;

/// mimalloc, counting the bytes it holds and their peak.
pub struct Counting;

static INSTALLED: AtomicBool = AtomicBool::new(false);
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call forwards to the system allocator with the caller's
// arguments; the counters are plain atomics and never touch the memory.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        INSTALLED.store(true, Ordering::Relaxed);
        let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { MiMalloc.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }
}

/// Heap bytes held now (0 when the allocator is not installed).
pub fn current() -> usize {
    CURRENT.load(Ordering::Relaxed)
}

/// The most heap bytes held at once while `f` ran (everything held before
/// included), or `None` when [`Counting`] is not the global allocator.
pub fn peak_during(f: impl FnOnce()) -> Option<usize> {
    PEAK.store(CURRENT.load(Ordering::Relaxed), Ordering::Relaxed);
    f();
    INSTALLED
        .load(Ordering::Relaxed)
        .then(|| PEAK.load(Ordering::Relaxed))
}
