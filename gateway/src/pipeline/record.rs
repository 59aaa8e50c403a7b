//! Stage 10, record: one structured access event per request, with the decision and the
//! policies behind it. Values are JSON-escaped by the formatter, so CR, LF and control
//! characters from requests cannot forge log lines; the path is logged without its query.
//!
//! Never a credential: events take ids and kinds, not header values.

use std::net::IpAddr;
use std::time::Duration;

use crate::domain::policy::Decision;

/// The one access event per request.
#[derive(Debug)]
pub struct AccessEvent<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub route: Option<&'a str>,
    pub status: u16,
    pub duration: Duration,
    pub client: Option<IpAddr>,
    pub principal_kind: Option<&'a str>,
    pub principal_id: Option<&'a str>,
    pub decision: Option<&'a Decision>,
    pub rejection: Option<&'static str>,
}

impl AccessEvent<'_> {
    pub fn emit(&self) {
        // The joins below allocate: skip them (and the event) when access logging is off.
        if !tracing::enabled!(target: "zonegate::access", tracing::Level::INFO) {
            return;
        }
        let policies = self.decision.map(|d| d.policies.join(","));
        let errors = self
            .decision
            .filter(|d| !d.errors.is_empty())
            .map(|d| d.errors.join("; "));
        tracing::info!(
            target: "zonegate::access",
            event = "http_request",
            request_id = self.request_id,
            method = self.method,
            path = self.path,
            route = self.route,
            status = self.status,
            duration_us = u64::try_from(self.duration.as_micros()).unwrap_or(u64::MAX),
            client = self.client.map(tracing::field::display),
            principal_kind = self.principal_kind,
            principal_id = self.principal_id,
            decision = self.decision.map(Decision::label),
            policies = policies.as_deref(),
            policy_errors = errors.as_deref(),
            rejection = self.rejection,
        );
    }
}
