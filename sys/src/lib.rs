//! The gateway's only unsafe code, kept out of the crates that forbid it: the global allocator
//! and lowering a thread's CPU priority. Each is a thin, tested shim over one C interface.

pub mod alloc;
pub mod thread;
