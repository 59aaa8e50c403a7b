//! The gateway's only unsafe code, kept out of the crates that forbid it: the global allocator
//! lowering a thread's CPU priority, the file creation mask and the process's user. Each is a thin, tested shim over one C interface.

pub mod alloc;
pub mod files;
pub mod thread;
pub mod users;
