//! zonegate: the front door of the Delivery Zone platform.
//!
//! A pingora reverse proxy that terminates TLS, authenticates callers, asks Cedar whether each
//! request may pass, and forwards it with a signed identity to the service behind it.
//!
//! The layers are folders, each importing only the ones below it:
//!
//! ```text
//! cli/       the command line: parses arguments, calls config and server
//! server/    assembly: builds everything from a validated config, listeners, admin, jobs, TLS
//! config/    the config file as written, and its validated form
//! pipeline/  the request pipeline, one file per stage (DESIGN.md), on pingora
//! api/       the gateway's own endpoints, an axum application behind the pipeline
//! web/       what both HTTP layers share: the one rejection type and its rendering,
//!            security headers, cookies, CSRF rules
//! domain/    accounts, orgs, API keys, MFA, audit, policy, and what they stand on (storage,
//!            keys, mail, rate limits); knows nothing of HTTP, axum or pingora
//! ```
//!
//! Everything a test needs is reachable from here.

pub mod api;
pub mod cli;
pub mod config;
pub mod domain;
pub mod pipeline;
pub mod server;
pub mod web;

#[cfg(test)]
mod fuzz;

/// The clock shared with the zone backend.
pub use zonegate_common::clock;
