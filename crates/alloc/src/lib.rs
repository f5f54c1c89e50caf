//! The `strait` binary's memory allocator, and handing memory freed after a burst back to the
//! system.
//!
//! mimalloc rather than the system allocator: the control plane's work comes in bursts (a cold
//! sync of every proxy, a full push) whose memory glibc keeps resident afterwards; mimalloc
//! returns it to the system, and is faster for the many small allocations of translation.
//! It returns freed pages lazily, though — only when the thread that freed them allocates again
//! — so a proxy that goes quiet after applying a large configuration would keep the transient
//! memory of decoding it. [`release_free_memory`] returns it at once; the proxy calls it after
//! each configuration update, as Envoy releases free memory to the system on an interval
//! (`memory_allocator_manager`).

#[cfg(feature = "mimalloc")]
mod natural;

#[cfg(feature = "mimalloc")]
type Chosen = natural::Mimalloc;
#[cfg(all(feature = "count-allocations", not(feature = "mimalloc")))]
type Chosen = std::alloc::System;

#[cfg(all(feature = "mimalloc", not(feature = "count-allocations")))]
#[global_allocator]
static ALLOCATOR: Chosen = natural::Mimalloc;

/// Tests that hold a hot path to the allocations it may make turn on `count-allocations` (as a
/// dev-dependency's feature, so never in a binary built for use): the chosen allocator then
/// counts each thread's allocations.
#[cfg(feature = "count-allocations")]
#[global_allocator]
static ALLOCATOR: counting::Counting<Chosen> = counting::Counting(Chosen {});

/// The allocations (and reallocations) the calling thread has made so far.
#[cfg(feature = "count-allocations")]
pub fn allocations() -> u64 {
    counting::ALLOCATIONS.with(std::cell::Cell::get)
}

#[cfg(feature = "count-allocations")]
mod counting {
    //! An allocator that counts each thread's allocations before handing them to another.

    use std::alloc::{GlobalAlloc, Layout};
    use std::cell::Cell;

    thread_local! {
        pub static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    }

    pub struct Counting<A>(pub A);

    fn count() {
        // Not while the thread is being torn down and its counter may be gone.
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }

    // SAFETY: every method hands its arguments to the inner allocator unchanged and returns
    // what it returns; counting touches only a const-initialised thread-local without a
    // destructor, which never allocates.
    #[allow(unsafe_code)]
    unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            count();
            // SAFETY: the caller's guarantees for `layout` are the inner allocator's.
            unsafe { self.0.alloc(layout) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            count();
            // SAFETY: as for `alloc`.
            unsafe { self.0.alloc_zeroed(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: `ptr` came from the inner allocator, through this one, with `layout`.
            unsafe { self.0.dealloc(ptr, layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            count();
            // SAFETY: as for `dealloc`; `new_size` comes with the caller's guarantees.
            unsafe { self.0.realloc(ptr, layout, new_size) }
        }
    }
}

/// Returns the memory the allocator holds free to the system (a no-op with the system
/// allocator).
pub fn release_free_memory() {
    #[cfg(feature = "mimalloc")]
    #[allow(unsafe_code)]
    // SAFETY: `mi_collect` takes no pointers and has no preconditions: it walks mimalloc's own
    // free lists and returns unused pages to the system, from any thread, at any time.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
}

#[cfg(test)]
mod tests {
    #[cfg(feature = "count-allocations")]
    #[test]
    fn each_threads_allocations_are_counted() {
        let before = super::allocations();
        let boxed = std::hint::black_box(Box::new([7u8; 64]));
        let mut grown = std::hint::black_box(Vec::<u8>::with_capacity(1));
        grown.extend_from_slice(&[1; 100]);
        assert_eq!(super::allocations() - before, 3);
        drop((boxed, grown));
        // Another thread counts its own.
        let counted_there = std::thread::spawn(|| {
            let before = super::allocations();
            drop(std::hint::black_box(vec![0u8; 10]));
            super::allocations() - before
        })
        .join()
        .unwrap();
        assert_eq!(counted_there, 1);
    }

    #[test]
    fn releasing_free_memory_leaves_live_allocations_alone() {
        let live: Vec<u64> = (0..100_000).collect();
        let freed: Vec<u8> = vec![7; 8 << 20];
        drop(freed);
        super::release_free_memory();
        assert_eq!(live.iter().sum::<u64>(), 99_999 * 100_000 / 2);
    }
}
