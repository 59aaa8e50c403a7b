//! zonegate: the front door of the Delivery Zone platform.
//!
//! A pingora reverse proxy that terminates TLS, authenticates callers, asks Cedar whether each
//! request may pass, and forwards it with a signed identity to the service behind it. One module
//! per stage of the request pipeline (see [`proxy`] for the phase chart) and one per kind of
//! state. Everything a test needs is reachable from here.

pub mod accounts;
pub mod admin;
pub mod api;
pub mod apikeys;
pub mod apikeys_api;
pub mod audit;
pub mod audit_api;
pub mod auth_api;
pub mod authn;
pub mod cli;
pub mod clock;
pub mod config;
pub mod cookies;
pub mod db;
pub mod dev;
pub mod error;
pub mod identity;
pub mod keyring;
pub mod mail;
pub mod mfa;
pub mod mfa_api;
pub mod orgs;
pub mod orgs_api;
pub mod platform_api;
pub mod policy;
pub mod policy_cli;
pub mod principal;
pub mod proxy;
pub mod ratelimit;
pub mod redirect;
pub mod respond;
pub mod routes;
pub mod sanitize;
pub mod server;
pub mod telemetry;
#[cfg(test)]
mod testdb;
pub mod tls;
