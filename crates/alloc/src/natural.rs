//! mimalloc behind Rust's allocator interface, through its plain entry points wherever their
//! blocks are aligned enough. Every Rust allocation states an alignment, and the `mimalloc`
//! crate hands each one to mimalloc's aligned entry points; mimalloc 3 serves those from its
//! fast path only while the size class's current page has a free block at hand, and otherwise
//! over-allocates (size + alignment - 1) from a larger class, whose block is slower to get and
//! up to a class too big. In a sidecar a fifth of the allocations of each HTTP/2 request went
//! that way (callgrind: 4.2 of 21.7); mimalloc's plain `malloc` would have served them all
//! from the size's own class, recycling what the request before had freed.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys::{
    mi_free, mi_malloc, mi_malloc_aligned, mi_realloc, mi_realloc_aligned, mi_zalloc,
    mi_zalloc_aligned,
};

/// The alignment mimalloc's plain allocations always have, given the size: its size classes
/// step by two machine words from 16 bytes up and a page's first block is 16-byte aligned, so
/// blocks of 16 bytes or more are 16-byte aligned and the 8-byte ones 8-byte aligned
/// (`MI_MAX_ALIGN_SIZE`, as `max_align_t` for C's `malloc`).
const PLAIN_ALIGN: usize = 16;

/// Whether a plain allocation of `size` bytes is aligned to `align` already.
fn plain(size: usize, align: usize) -> bool {
    align <= PLAIN_ALIGN && align <= size
}

/// The allocator: mimalloc, asked for an alignment only when its plain blocks lack it.
pub struct Mimalloc;

// SAFETY: each method returns memory from mimalloc (or null when it has none) of at least the
// layout's size, aligned to the layout's alignment: by mimalloc's aligned entry points, or by its
// plain ones where `plain` holds for the size, whose blocks are aligned so (`PLAIN_ALIGN`).
// Memory is freed and reallocated only through mimalloc, which takes blocks from any of its
// entry points.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        // SAFETY: FFI calls with no preconditions beyond a power-of-two alignment, which a
        // `Layout` guarantees.
        unsafe {
            if plain(size, align) {
                mi_malloc(size).cast()
            } else {
                mi_malloc_aligned(size, align).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        // SAFETY: as for `alloc`.
        unsafe {
            if plain(size, align) {
                mi_zalloc(size).cast()
            } else {
                mi_zalloc_aligned(size, align).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: the caller passes memory this allocator returned, which mimalloc allocated.
        unsafe { mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        // SAFETY: `ptr` is mimalloc's (as for `dealloc`); a block it moves to is aligned as
        // `alloc` would align it for the new size.
        unsafe {
            if plain(new_size, align) {
                mi_realloc(ptr.cast(), new_size).cast()
            } else {
                mi_realloc_aligned(ptr.cast(), new_size, align).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALIGNS: [usize; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 4096];

    fn sizes() -> impl Iterator<Item = usize> {
        (1..=300).chain([384, 1000, 4096, 5000, 70_000, 1 << 20])
    }

    #[test]
    #[allow(unsafe_code)]
    fn every_layout_gets_memory_aligned_as_it_asks_and_keeps_it_when_grown() {
        let a = Mimalloc;
        for align in ALIGNS {
            for size in sizes() {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero sizes; every block is written and read within its size and
                // freed once with its layout.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size}, align {align}");
                    p.write_bytes(0xab, size);

                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "zeroed: size {size}, align {align}");
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|b| *b == 0));
                    a.dealloc(z, layout);

                    let grown = a.realloc(p, layout, size * 2 + 3);
                    assert_eq!(
                        grown as usize % align,
                        0,
                        "grown: size {size}, align {align}"
                    );
                    assert!(
                        std::slice::from_raw_parts(grown, size)
                            .iter()
                            .all(|b| *b == 0xab)
                    );
                    a.dealloc(grown, Layout::from_size_align(size * 2 + 3, align).unwrap());
                }
            }
        }
    }

    #[test]
    #[allow(unsafe_code)]
    fn blocks_stay_aligned_across_many_pages_of_a_size_class() {
        // Thousands of live blocks of each size: mimalloc goes on to fresh pages of the class,
        // and plain blocks must stay aligned on every one of them.
        let a = Mimalloc;
        for (size, align) in [(8, 8), (24, 8), (48, 16), (80, 16), (40, 8), (200, 8)] {
            let layout = Layout::from_size_align(size, align).unwrap();
            // SAFETY: as above.
            unsafe {
                let blocks: Vec<*mut u8> = (0..5000).map(|_| a.alloc(layout)).collect();
                for p in &blocks {
                    assert!(!p.is_null());
                    assert_eq!(*p as usize % align, 0, "size {size}, align {align}");
                }
                for p in blocks {
                    a.dealloc(p, layout);
                }
            }
        }
    }
}
