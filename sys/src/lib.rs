//! The gateway's only unsafe code, kept out of the crates that forbid it: the global allocator,
//! lowering a thread's CPU priority, the file creation mask, the process's user and a second
//! handle on a socket. Each is a thin, tested shim over one C interface.

pub mod alloc;
pub mod files;
pub mod sockets;
pub mod thread;
pub mod users;
