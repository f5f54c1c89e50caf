//! Futures built straight into their heap allocation. A request's future is kilobytes;
//! `Box::pin(f())` builds it on the stack first and then copies all of it into the box, and
//! `tokio::spawn(f())` copies it several times on its way into the task.

use std::future::Future;
use std::pin::Pin;

/// The future `make` returns, allocated first and built in place (the call writes its
/// arguments into the allocation; no copy of the whole future follows). Spawn the result,
/// rather than the future itself, and only the pointer moves.
#[inline(always)]
pub fn boxed<F: Future>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}
