//! Replaying logged decisions against a candidate policy set: "if I merge this change, whose
//! requests change, and which?"
//!
//! Each record's question is rebuilt and decided twice, by the baseline set (the one in force,
//! as configured) and by the candidate, with the same engine the gateway runs; where the two
//! differ, the change is grouped ([`Changes`]). Comparing the two sets on the same rebuilt
//! question, rather than the candidate against the logged answer, keeps what the candidate
//! changes apart from what changed since the request was made (a role, a flag, or the policies
//! themselves); the latter is counted separately as drift.
//!
//! Roles and org flags come from the store as it is now ([`Facts::Stored`]: a member promoted
//! since is replayed with the new role), or as logged ([`Facts::AsLogged`], for an exported
//! file where no database is reachable). The report says which.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::{DecisionLogError, DecisionRecord, LoggedPrincipal};
use crate::domain::orgs::{self, OrgFacts, Role};
use crate::domain::policy::diff::{Answer, Changes, ChangesView, Direction, Seen};
use crate::domain::policy::{is_member, PolicyEngine};
use crate::domain::storage::Db;

/// Where roles and org flags come from.
#[derive(Debug)]
pub enum Facts<'a> {
    /// As recorded with each decision.
    AsLogged,
    /// As the store holds them now.
    Stored(&'a Db),
}

/// The replay of a stream of records.
#[derive(Debug)]
pub struct Replay<'a> {
    baseline: &'a PolicyEngine,
    candidate: &'a PolicyEngine,
    facts: Facts<'a>,
    org_facts: HashMap<String, Option<OrgFacts>>,
    roles: HashMap<(String, String), Option<Role>>,
    replayed: u64,
    drift: u64,
    changes: Changes,
    logged_hashes: BTreeMap<String, u64>,
}

/// What a replay found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub replayed: u64,
    pub unchanged: u64,
    /// `stored` (roles and org flags as the store holds them now) or `logged`.
    pub facts: &'static str,
    pub baseline_hash: String,
    pub candidate_hash: String,
    /// Decisions the baseline itself now answers differently from the log (roles, flags or
    /// the policies changed since the request); they are still compared baseline to
    /// candidate.
    pub drift: u64,
    /// The policy set hashes the replayed decisions were made under, with their counts.
    pub logged_policy_hashes: BTreeMap<String, u64>,
    pub changes: ChangesView,
}

impl Report {
    /// Whether the candidate would allow anything the baseline denies.
    pub fn widens(&self) -> bool {
        self.changes.deny_to_allow > 0
    }
}

impl<'a> Replay<'a> {
    pub fn new(
        baseline: &'a PolicyEngine,
        candidate: &'a PolicyEngine,
        facts: Facts<'a>,
    ) -> Replay<'a> {
        Replay {
            baseline,
            candidate,
            facts,
            org_facts: HashMap::new(),
            roles: HashMap::new(),
            replayed: 0,
            drift: 0,
            changes: Changes::default(),
            logged_hashes: BTreeMap::new(),
        }
    }

    /// Replay one record (standing for `record.count` requests); returns the direction of
    /// the change, if the candidate changes it.
    pub async fn add(
        &mut self,
        record: &DecisionRecord,
    ) -> Result<Option<Direction>, DecisionLogError> {
        let mut question = record.question()?;
        if let (Facts::Stored(db), Some(org)) = (&self.facts, question.org.as_mut()) {
            let db = *db;
            let id = org.facts.id.clone();
            org.facts = self
                .org_facts(db, &id)
                .await?
                .unwrap_or_else(|| OrgFacts::unknown(&id));
            if let LoggedPrincipal::User { id: user, .. } = &record.principal {
                org.role = self.role(db, user, &id).await?;
            }
            if is_member(question.resource.type_name()) {
                let member = question.resource.id().unescaped().to_owned();
                org.member_role = self.role(db, &member, &id).await?;
            }
        }
        let query = question.query();
        let before = self.baseline.decide(&query);
        let after = self.candidate.decide(&query);
        self.replayed += record.count;
        if before.allowed != record.decision.allowed() {
            self.drift += record.count;
        }
        *self
            .logged_hashes
            .entry(record.policy_hash.clone())
            .or_default() += record.count;
        Ok(self.changes.compare(
            Seen {
                route: &record.route,
                principal_kind: record.principal.kind(),
                count: record.count,
                request_ids: &record.request_ids,
            },
            Answer {
                allowed: before.allowed,
                policies: &before.policies,
            },
            Answer {
                allowed: after.allowed,
                policies: &after.policies,
            },
        ))
    }

    async fn org_facts(
        &mut self,
        db: &Db,
        org: &str,
    ) -> Result<Option<OrgFacts>, DecisionLogError> {
        if let Some(f) = self.org_facts.get(org) {
            return Ok(f.clone());
        }
        let facts = orgs::store::facts(&mut *db.acquire().await?, org).await?;
        self.org_facts.insert(org.to_owned(), facts.clone());
        Ok(facts)
    }

    async fn role(
        &mut self,
        db: &Db,
        user: &str,
        org: &str,
    ) -> Result<Option<Role>, DecisionLogError> {
        let key = (user.to_owned(), org.to_owned());
        if let Some(r) = self.roles.get(&key) {
            return Ok(*r);
        }
        let role = orgs::store::role(&mut *db.acquire().await?, org, user).await?;
        self.roles.insert(key, role);
        Ok(role)
    }

    pub fn report(&self) -> Report {
        let view = self.changes.view();
        Report {
            replayed: self.replayed,
            unchanged: self.replayed - view.allow_to_deny - view.deny_to_allow,
            facts: match self.facts {
                Facts::AsLogged => "logged",
                Facts::Stored(_) => "stored",
            },
            baseline_hash: self.baseline.active_hash(),
            candidate_hash: self.candidate.active_hash(),
            drift: self.drift,
            logged_policy_hashes: self.logged_hashes.clone(),
            changes: view,
        }
    }

    /// The report as text.
    pub fn render(&self) -> String {
        let r = self.report();
        let facts = match self.facts {
            Facts::AsLogged => "roles and org flags as logged with each decision",
            Facts::Stored(_) => "roles and org flags as stored now",
        };
        let mut out = format!(
            "replayed {} decisions ({facts})\nbaseline  sha256 {}\ncandidate sha256 {}\nunchanged: {}\n",
            r.replayed, r.baseline_hash, r.candidate_hash, r.unchanged
        );
        out.push_str(&self.changes.render());
        if r.drift > 0 {
            out.push_str(&format!(
                "\nnote: {} decisions are answered differently by the baseline today than when \
                 they were logged (a role, an org flag or the policies changed since); the \
                 comparison above is baseline against candidate on today's facts.\n",
                r.drift
            ));
        }
        out
    }
}
