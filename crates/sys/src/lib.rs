//! The few Linux system calls Strait makes that no safe crate in its tree wraps (`rustix` and
//! `socket2` cover the rest), each behind a safe function.

pub mod sched;
