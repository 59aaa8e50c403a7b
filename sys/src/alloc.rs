//! The global allocator: mimalloc, called the way the system allocator is.
//!
//! PERF-NOTES measured the system allocator at ~20% of the instructions of a proxied request;
//! mimalloc fixes that. The `mimalloc` crate's wrapper, though, sends every allocation through
//! `mi_malloc_aligned`, whose fast path only covers blocks up to 1 KiB: the 4 KiB header and
//! TLS buffers a request allocates took its slow path (~3% of a request's instructions under
//! callgrind). Plain `mi_malloc` already guarantees the alignment of any layout whose
//! alignment is at most 16 and at most its size, which is every allocation on the hot path;
//! only larger alignments use the aligned entry points.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// mimalloc's guaranteed alignment for any block (`MI_MAX_ALIGN_SIZE`).
const MIN_ALIGN: usize = 16;

/// mimalloc as the global allocator; install it in a binary with `#[global_allocator]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MiMalloc;

fn plain(layout: Layout) -> bool {
    layout.align() <= MIN_ALIGN && layout.align() <= layout.size()
}

// SAFETY: each method forwards to the mimalloc function with the same contract as the
// GlobalAlloc method, asking for an alignment mimalloc guarantees for that layout (`plain`).
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for the impl; the caller guarantees a non-zero size.
        unsafe {
            if plain(layout) {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        unsafe {
            if plain(layout) {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: the caller passes a block this allocator returned; mimalloc frees any of
        // its blocks, aligned or not, with `mi_free`.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` is a block of this allocator; the new block keeps `layout`'s
        // alignment by the same rule as `alloc`.
        unsafe {
            if layout.align() <= MIN_ALIGN && layout.align() <= new_size {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Every layout gets a block aligned as asked, through both entry points and realloc.
    #[test]
    fn blocks_are_aligned_for_every_layout() {
        let a = MiMalloc;
        for align in [1usize, 2, 4, 8, 16, 32, 64, 4096] {
            for size in [align, align * 3, 1000, 4096, 70_000] {
                let size = size.max(align);
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero sizes; each block is freed once, with its layout.
                unsafe {
                    for p in [a.alloc(layout), a.alloc_zeroed(layout)] {
                        assert!(!p.is_null());
                        assert_eq!(p as usize % align, 0, "size {size} align {align}");
                        p.write(7);
                        let grown = a.realloc(p, layout, size * 2);
                        assert_eq!(grown as usize % align, 0, "realloc {size} align {align}");
                        assert_eq!(grown.read(), 7);
                        a.dealloc(grown, Layout::from_size_align_unchecked(size * 2, align));
                    }
                }
            }
        }
    }
}
