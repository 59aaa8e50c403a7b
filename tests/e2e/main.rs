//! End-to-end tests: the real `zonegate` and `zone-backend` binaries on loopback, driven over
//! TLS by a real client, as an integrator (or an attacker) would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod accounts;
mod apikeys;
mod assertions;
mod canary;
mod cluster;
mod contract;
mod dashboard;
mod decisions;
mod deploy;
mod hygiene;
mod lifecycle;
mod limits;
mod listeners;
mod metrics;
mod mfa;
mod orgs;
mod outages;
mod platform;
mod policy;
mod rotation;
mod slow_clients;
mod traces;
mod upstream_tls;
mod walkthrough;
mod zones;
