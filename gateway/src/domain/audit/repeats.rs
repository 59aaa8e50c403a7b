//! Repeated identical denials, aggregated: a caller hammering a route it may not use would
//! otherwise write one `authz_fail` row per request into the victim org's trail (300 rows in
//! a second, in the review that found it). Refused changes on the admin listener
//! (`authn_admin_token_fail`, someone guessing its token) are aggregated the same way.
//!
//! The first denial of a kind (same event, principal, org and details: route, policies; for a
//! refused admin change also the client address) is recorded as usual and opens a window of
//! [`WINDOW_MS`]. Identical denials inside the window are only counted. When the window
//! closes (the next identical denial after it, or the maintenance sweep), one summary event is
//! recorded: the first repeated event, with `details.repeated` (how many),
//! `details.first_repeat_at` (Unix milliseconds) and `details.window_seconds`. Nothing is
//! lost: every denial is in the first event or a summary's count.

use std::collections::HashMap;

use super::{AuditEvent, SecurityEvent};

/// How long identical denials are counted rather than recorded one by one.
pub const WINDOW_MS: i64 = 60_000;
/// Open windows kept; past it, new kinds of denial are recorded one by one (never dropped).
const MAX_WINDOWS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    event: SecurityEvent,
    principal: Option<String>,
    org: Option<String>,
    /// For refused admin changes only.
    client: Option<std::net::IpAddr>,
    details: String,
}

#[derive(Debug)]
struct Window {
    opened: i64,
    repeated: u64,
    /// The first repeated event: the summary is built on it.
    first: Option<AuditEvent>,
}

/// What to record for an event.
#[derive(Debug, PartialEq)]
pub(super) enum Verdict {
    /// Record it (after the summary of a window it closed, if any).
    Record(Option<Box<AuditEvent>>),
    /// A repeat inside an open window: counted, not recorded.
    Counted,
}

/// The open windows.
#[derive(Debug, Default)]
pub(super) struct Repeats {
    windows: HashMap<Key, Window>,
}

impl SecurityEvent {
    /// Events aggregated when repeated (see the module docs).
    fn aggregates(self) -> bool {
        matches!(
            self,
            SecurityEvent::AuthzFail | SecurityEvent::AdminTokenRefused
        )
    }
}

/// The summary of a window: the first repeat, counting all of them; recorded (and stamped)
/// when the window closes.
fn summary(mut first: AuditEvent, repeated: u64) -> AuditEvent {
    first.id = uuid::Uuid::new_v4().to_string();
    let first_at = first.at;
    first
        .detail("repeated", repeated)
        .detail("first_repeat_at", first_at)
        .detail("window_seconds", WINDOW_MS / 1000)
}

impl Repeats {
    /// Decide on `event` (already stamped with its time).
    pub(super) fn observe(&mut self, event: &AuditEvent) -> Verdict {
        if !event.event.aggregates() {
            return Verdict::Record(None);
        }
        let key = Key {
            event: event.event,
            principal: event.principal_id.clone(),
            org: event.org_id.clone(),
            // Refused admin changes from two addresses are two kinds: a guessing loop from
            // one must not hide another's first attempt. Not denials: their address is the
            // raw one, and a client rotating through its IPv6 /64 would write a row each.
            client: (event.event == SecurityEvent::AdminTokenRefused)
                .then_some(event.client)
                .flatten(),
            details: event.details_json(),
        };
        let closed = match self.windows.get_mut(&key) {
            Some(w) if event.at < w.opened + WINDOW_MS => {
                w.repeated += 1;
                if w.first.is_none() {
                    w.first = Some(event.clone());
                }
                return Verdict::Counted;
            }
            Some(w) => {
                let closed = w
                    .first
                    .take()
                    .map(|first| Box::new(summary(first, w.repeated)));
                w.opened = event.at;
                w.repeated = 0;
                closed
            }
            None => {
                if self.windows.len() < MAX_WINDOWS {
                    self.windows.insert(
                        key,
                        Window {
                            opened: event.at,
                            repeated: 0,
                            first: None,
                        },
                    );
                }
                None
            }
        };
        Verdict::Record(closed)
    }

    /// Close the windows that ended by `now`; returns their summaries.
    pub(super) fn sweep(&mut self, now: i64) -> Vec<AuditEvent> {
        let mut summaries = Vec::new();
        self.windows.retain(|_, w| {
            if now < w.opened + WINDOW_MS {
                return true;
            }
            if let Some(first) = w.first.take() {
                summaries.push(summary(first, w.repeated));
            }
            false
        });
        summaries
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn denial(at: i64, route: &str) -> AuditEvent {
        let mut e = AuditEvent::new(SecurityEvent::AuthzFail)
            .principal("stranger")
            .org("victim")
            .detail("route", route);
        e.at = at;
        e
    }

    #[test]
    fn a_flood_of_identical_denials_is_one_event_and_one_summary_with_the_count() {
        let mut r = Repeats::default();
        assert_eq!(r.observe(&denial(0, "zones-list")), Verdict::Record(None));
        for i in 1..300 {
            assert_eq!(r.observe(&denial(i, "zones-list")), Verdict::Counted);
        }
        // Another route is another kind: recorded.
        assert_eq!(r.observe(&denial(5, "members")), Verdict::Record(None));
        // Other events are never aggregated.
        let login = AuditEvent::new(SecurityEvent::LoginFail);
        assert_eq!(r.observe(&login), Verdict::Record(None));
        assert_eq!(r.observe(&login), Verdict::Record(None));

        // The window has not ended: nothing to sweep.
        assert!(r.sweep(WINDOW_MS - 1).is_empty());
        // The next identical denial after it closes it with a summary, and opens a new one.
        let Verdict::Record(Some(s)) = r.observe(&denial(WINDOW_MS, "zones-list")) else {
            panic!("expected a summary")
        };
        assert_eq!(s.details["repeated"], 299);
        assert_eq!(s.details["window_seconds"], 60);
        assert_eq!(s.details["route"], "zones-list");
        assert_eq!(s.details["first_repeat_at"], 1);
        assert_eq!(
            r.observe(&denial(WINDOW_MS + 1, "zones-list")),
            Verdict::Counted
        );
        // The sweep closes the rest: the repeat counted just now; nothing for `members`.
        let swept = r.sweep(3 * WINDOW_MS);
        assert_eq!(swept.len(), 1);
        assert_eq!(swept[0].details["repeated"], 1);
        assert!(r.windows.is_empty());
    }

    #[test]
    fn refused_admin_changes_are_aggregated_per_client_address() {
        let refused = |at: i64, client: [u8; 4]| {
            let mut e = AuditEvent::new(SecurityEvent::AdminTokenRefused)
                .detail("method", "POST")
                .detail("path", "/policies/reload")
                .client(std::net::IpAddr::from(client));
            e.at = at;
            e
        };
        let mut r = Repeats::default();
        assert_eq!(r.observe(&refused(0, [10, 0, 0, 1])), Verdict::Record(None));
        for i in 1..100 {
            assert_eq!(r.observe(&refused(i, [10, 0, 0, 1])), Verdict::Counted);
        }
        // Another address is another kind: its first attempt is on record with it.
        assert_eq!(r.observe(&refused(5, [10, 0, 0, 2])), Verdict::Record(None));
        let summaries = r.sweep(WINDOW_MS + 100);
        assert_eq!(summaries.len(), 1);
        assert_eq!(summaries[0].details["repeated"], 99);
        assert_eq!(
            summaries[0].client,
            Some(std::net::IpAddr::from([10, 0, 0, 1]))
        );
    }
}
