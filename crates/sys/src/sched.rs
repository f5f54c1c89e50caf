//! The calling thread's scheduling policy, between the two time-sharing policies any thread may
//! move between without privileges: `SCHED_OTHER` (the default) and `SCHED_BATCH`.
//!
//! The one difference between them that matters to a proxy: a `SCHED_OTHER` thread woken by
//! data on its socket may preempt the thread running on its CPU at once, while a `SCHED_BATCH`
//! thread waits for that thread to block or for the next scheduler tick. Socket wake-ups are
//! *synchronous* — the kernel places the woken thread on the writer's CPU, expecting the writer
//! to sleep soon — so in a chain of processes relaying one request (client, sidecar, sidecar,
//! server) every hop otherwise preempts the one before it just before that one would have
//! slept, and the switch back costs as much again. The nice value is not touched.

use std::io;

/// A time-sharing scheduling policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// `SCHED_OTHER`: woken threads may preempt the running one.
    Normal,
    /// `SCHED_BATCH`: woken threads wait for the running one to block or for the tick.
    Batch,
}

impl Policy {
    fn to_raw(self) -> libc::c_int {
        match self {
            Policy::Normal => libc::SCHED_OTHER,
            Policy::Batch => libc::SCHED_BATCH,
        }
    }
}

/// Puts the calling thread (not its process: Linux schedules threads) under `policy`.
pub fn set_current_thread(policy: Policy) -> io::Result<()> {
    // Time-sharing policies take static priority 0.
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid, initialised `sched_param` that outlives the call, which only
    // reads it; pid 0 names the calling thread.
    #[allow(unsafe_code)]
    let result = unsafe { libc::sched_setscheduler(0, policy.to_raw(), &param) };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The calling thread's policy; `Err` for a policy other than the two above (a real-time or
/// idle one set from outside), naming it.
pub fn current_thread() -> io::Result<Policy> {
    // SAFETY: takes no pointers; pid 0 names the calling thread.
    #[allow(unsafe_code)]
    let raw = unsafe { libc::sched_getscheduler(0) };
    match raw {
        libc::SCHED_OTHER => Ok(Policy::Normal),
        libc::SCHED_BATCH => Ok(Policy::Batch),
        -1 => Err(io::Error::last_os_error()),
        other => Err(io::Error::other(format!(
            "the thread runs under scheduling policy {other}, neither SCHED_OTHER nor SCHED_BATCH"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a thread of its own: the test harness's threads keep their policy.
    fn on_a_new_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(f).join().unwrap()
    }

    #[test]
    fn a_thread_moves_to_batch_and_back_and_others_keep_theirs() {
        let own = current_thread().unwrap();
        let (after_batch, after_normal) = on_a_new_thread(move || {
            // A new thread starts under its creator's policy.
            assert_eq!(current_thread().unwrap(), own);
            set_current_thread(Policy::Batch).unwrap();
            let after_batch = current_thread().unwrap();
            // So does a thread started from a batch thread.
            let child = std::thread::spawn(|| current_thread().unwrap())
                .join()
                .unwrap();
            assert_eq!(child, Policy::Batch);
            set_current_thread(Policy::Normal).unwrap();
            (after_batch, current_thread().unwrap())
        });
        assert_eq!((after_batch, after_normal), (Policy::Batch, Policy::Normal));
        // The calling (test) thread was never changed.
        assert_eq!(current_thread().unwrap(), own);
    }
}
