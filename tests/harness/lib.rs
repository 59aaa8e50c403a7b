//! The end-to-end harness: real `zonegate` and `zone-backend` processes on free loopback ports,
//! a test upstream that reports what it received, and a small HTTPS client that speaks raw
//! HTTP/1.1 over rustls so tests can send exactly the bytes an attacker would.
//!
//! Binaries are built once per test run with the same cargo and profile as the tests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_debug_implementations
)]

pub mod client;
pub mod dev;
pub mod echo;
pub mod otlp;
pub mod pg;
pub mod pki;
pub mod stack;
pub mod tcp_proxy;

pub use client::{Client, Response};
pub use echo::EchoUpstream;
pub use stack::{copy_policies, EchoTls, NewOperator, Peer, Stack, StackOptions};

/// Every value of the header `name` (any case) in `headers`, in order.
pub fn header_values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}
