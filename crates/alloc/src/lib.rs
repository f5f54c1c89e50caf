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
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    #[test]
    fn releasing_free_memory_leaves_live_allocations_alone() {
        let live: Vec<u64> = (0..100_000).collect();
        let freed: Vec<u8> = vec![7; 8 << 20];
        drop(freed);
        super::release_free_memory();
        assert_eq!(live.iter().sum::<u64>(), 99_999 * 100_000 / 2);
    }
}
