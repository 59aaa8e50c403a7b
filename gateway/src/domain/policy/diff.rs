//! Two policy sets' answers to the same requests, compared and grouped: what `zonegate policy
//! diff` prints for a candidate set replayed on the decision log, and what the admin listener
//! shows for the live shadow set. One type for both, so a shadow run and an offline replay read
//! alike.
//!
//! Changes are grouped by direction (allow→deny, deny→allow), route, principal kind and the
//! policies that determined each side, with a few request ids per group to look up.

use std::collections::BTreeMap;

use serde::Serialize;

/// Request ids kept per group.
pub const SAMPLES: usize = 5;
/// Groups kept; changes beyond are counted (in the totals and `ungrouped`) but not grouped, so
/// a live report stays bounded whatever the traffic.
pub const MAX_GROUPS: usize = 1000;

/// How an answer changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    AllowToDeny,
    DenyToAllow,
}

impl Direction {
    /// The change from `before` to `after`, if the answer changed.
    pub fn of(before: bool, after: bool) -> Option<Direction> {
        match (before, after) {
            (true, false) => Some(Direction::AllowToDeny),
            (false, true) => Some(Direction::DenyToAllow),
            _ => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Direction::AllowToDeny => "allow→deny",
            Direction::DenyToAllow => "deny→allow",
        }
    }
}

/// One side of a comparison: the answer and the policies that determined it.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    pub allowed: bool,
    pub policies: &'a [String],
}

/// Where a change was seen: by how many requests, and the ids of some.
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    pub route: &'a str,
    pub principal_kind: &'a str,
    pub count: u64,
    pub request_ids: &'a [String],
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct GroupKey {
    direction: Direction,
    route: String,
    principal_kind: String,
    before: Vec<String>,
    after: Vec<String>,
}

/// One group of equal changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Group {
    pub direction: Direction,
    pub route: String,
    pub principal_kind: String,
    /// The policies that determined the answer before (empty: denied by default).
    pub before_policies: Vec<String>,
    /// The policies that determine it after.
    pub after_policies: Vec<String>,
    pub count: u64,
    /// The first few request ids, to find the requests in logs and the decision log.
    pub sample_request_ids: Vec<String>,
}

/// Changed answers, grouped. Unchanged answers are not kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    allow_to_deny: u64,
    deny_to_allow: u64,
    ungrouped: u64,
    groups: BTreeMap<GroupKey, (u64, Vec<String>)>,
}

/// [`Changes`] as reported (JSON), groups largest first.
#[derive(Debug, Clone, Serialize)]
pub struct ChangesView {
    pub allow_to_deny: u64,
    pub deny_to_allow: u64,
    /// Changes counted but not grouped, past [`MAX_GROUPS`] groups.
    pub ungrouped: u64,
    pub groups: Vec<Group>,
}

impl Changes {
    /// Compare two answers to one request; a change is counted and grouped. Returns the
    /// direction of the change, if any.
    pub fn compare(
        &mut self,
        seen: Seen<'_>,
        before: Answer<'_>,
        after: Answer<'_>,
    ) -> Option<Direction> {
        let direction = Direction::of(before.allowed, after.allowed)?;
        match direction {
            Direction::AllowToDeny => self.allow_to_deny += seen.count,
            Direction::DenyToAllow => self.deny_to_allow += seen.count,
        }
        let key = GroupKey {
            direction,
            route: seen.route.to_owned(),
            principal_kind: seen.principal_kind.to_owned(),
            before: before.policies.to_vec(),
            after: after.policies.to_vec(),
        };
        let sample = |samples: &mut Vec<String>| {
            for id in seen.request_ids {
                if samples.len() >= SAMPLES {
                    break;
                }
                samples.push(id.clone());
            }
        };
        if let Some((count, samples)) = self.groups.get_mut(&key) {
            *count += seen.count;
            sample(samples);
        } else if self.groups.len() < MAX_GROUPS {
            let mut samples = Vec::new();
            sample(&mut samples);
            self.groups.insert(key, (seen.count, samples));
        } else {
            self.ungrouped += seen.count;
        }
        Some(direction)
    }

    pub fn allow_to_deny(&self) -> u64 {
        self.allow_to_deny
    }

    pub fn deny_to_allow(&self) -> u64 {
        self.deny_to_allow
    }

    pub fn is_empty(&self) -> bool {
        self.allow_to_deny == 0 && self.deny_to_allow == 0
    }

    pub fn view(&self) -> ChangesView {
        let mut groups: Vec<Group> = self
            .groups
            .iter()
            .map(|(k, (count, samples))| Group {
                direction: k.direction,
                route: k.route.clone(),
                principal_kind: k.principal_kind.clone(),
                before_policies: k.before.clone(),
                after_policies: k.after.clone(),
                count: *count,
                sample_request_ids: samples.clone(),
            })
            .collect();
        // Largest first; the key order (direction, route, ...) breaks ties, so output is stable.
        groups.sort_by_key(|g| std::cmp::Reverse(g.count));
        ChangesView {
            allow_to_deny: self.allow_to_deny,
            deny_to_allow: self.deny_to_allow,
            ungrouped: self.ungrouped,
            groups,
        }
    }

    /// The groups as text, one block per group.
    pub fn render(&self) -> String {
        let view = self.view();
        let mut out = format!(
            "allow→deny: {}\ndeny→allow: {}\n",
            view.allow_to_deny, view.deny_to_allow
        );
        let policies = |p: &[String]| {
            if p.is_empty() {
                "no policy (denied by default)".to_owned()
            } else {
                p.join(", ")
            }
        };
        for g in &view.groups {
            out.push_str(&format!(
                "\n{} {} request{} on route {} by {}\n  before: {}\n  after:  {}\n  e.g. request ids: {}\n",
                g.direction.label(),
                g.count,
                if g.count == 1 { "" } else { "s" },
                g.route,
                g.principal_kind,
                policies(&g.before_policies),
                policies(&g.after_policies),
                g.sample_request_ids.join(", "),
            ));
        }
        if view.ungrouped > 0 {
            out.push_str(&format!(
                "\n{} more changes in groups beyond the first {MAX_GROUPS}\n",
                view.ungrouped
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(route: &'static str, ids: &'static [String]) -> Seen<'static> {
        Seen {
            route,
            principal_kind: "user",
            count: 1,
            request_ids: ids,
        }
    }

    fn ids(id: &str) -> &'static [String] {
        Vec::leak(vec![id.to_owned()])
    }

    #[test]
    fn equal_answers_are_not_kept_and_changes_group_by_route_and_policies() {
        let permit = ["zones-write".to_owned()];
        let mut c = Changes::default();
        let allow = Answer {
            allowed: true,
            policies: &permit,
        };
        let deny = Answer {
            allowed: false,
            policies: &[],
        };
        assert_eq!(
            c.compare(seen("zones.create", ids("r0")), allow, allow),
            None
        );
        assert!(c.is_empty());
        for id in ["r1", "r2", "r3", "r4", "r5", "r6"] {
            c.compare(seen("zones.create", ids(id)), allow, deny);
        }
        // A record standing for several requests counts them all.
        c.compare(
            Seen {
                count: 3,
                ..seen("zones.create", ids("r9"))
            },
            allow,
            deny,
        );
        c.compare(seen("zones.delete", ids("r7")), allow, deny);
        assert_eq!(
            c.compare(seen("zones.delete", ids("r8")), deny, allow),
            Some(Direction::DenyToAllow)
        );
        let v = c.view();
        assert_eq!((v.allow_to_deny, v.deny_to_allow), (10, 1));
        assert_eq!(v.groups.len(), 3);
        assert_eq!(v.groups[0].count, 9);
        assert_eq!(v.groups[0].sample_request_ids.len(), SAMPLES);
        let text = c.render();
        assert!(
            text.contains("allow→deny 9 requests on route zones.create by user"),
            "{text}"
        );
        assert!(
            text.contains("after:  no policy (denied by default)"),
            "{text}"
        );
    }

    #[test]
    fn groups_are_bounded_and_the_rest_still_counted() {
        let mut c = Changes::default();
        let routes: Vec<String> = (0..MAX_GROUPS + 10).map(|i| format!("r{i}")).collect();
        for r in &routes {
            c.compare(
                Seen {
                    route: r,
                    principal_kind: "api_key",
                    count: 1,
                    request_ids: &[],
                },
                Answer {
                    allowed: false,
                    policies: &[],
                },
                Answer {
                    allowed: true,
                    policies: &[],
                },
            );
        }
        let v = c.view();
        assert_eq!(v.deny_to_allow, (MAX_GROUPS + 10) as u64);
        assert_eq!(v.groups.len(), MAX_GROUPS);
        assert_eq!(v.ungrouped, 10);
    }
}
