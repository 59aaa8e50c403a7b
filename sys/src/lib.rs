//! The gateway's only unsafe code, kept out of the crates that forbid it: the global allocator
//! lowering a thread's CPU priority and the file creation mask. Each is a thin, tested shim over one C interface.

pub mod alloc;
pub mod files;
pub mod thread;
