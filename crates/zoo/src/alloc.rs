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

/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (`mimalloc.h`, the
/// same index in its v2 and v3), which `libmimalloc-sys` does not name.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc to keep the memory the process frees for reuse instead of
/// handing it back to the OS after its `purge_delay` (1 s; −1 = never).
///
/// A training step frees and reallocates the same tensor buffers every
/// segment. At `cpu-mid.toml` (steps of about half a second, score tensors
/// of several MiB) the freed buffers were handed back between steps and
/// faulted in and zeroed again by the kernel, 2 MiB huge pages at a time:
/// 1,800 page faults a step, 9% of a Transformer-XL training step in
/// `clear_page_erms` (docs/benchmarks.md). With this: about 500 faults in
/// the whole run. The peak is unchanged: freed memory is reused, not added
/// to. Called once, first thing, by `main`.
pub fn keep_freed_memory() {
    // SAFETY: `mi_option_set` only stores an option's value; every value of
    // `purge_delay` is valid, and mimalloc reads it at its next purge.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
    }
}
