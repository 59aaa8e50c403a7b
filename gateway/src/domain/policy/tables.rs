//! Decision tables: the security team's tests of the policy set, under `<policies>/tests/*.toml`.
//!
//! ```toml
//! [[case]]
//! name = "a viewer cannot delete a zone"
//! principal = { user = "alice", role = "viewer" }       # role in the resource's org
//! action = "zones:delete"
//! resource = { zone = "z1", org = "acme" }
//! expect = "deny"
//! policies = []                                          # optional: the determining policy ids
//! ```
//!
//! Principals: `{ anonymous = true }`; `{ user = "id", role = "viewer"|"developer"|"admin"|
//! "owner", verified = true, mfa = false }`; `{ api_key = "id", org = "acme", scopes = [...] }`; `{ operator = "id" }`.
//! Resources: `{ gateway = "auth" }`; `{ org = "acme", suspended = false, require_mfa = false }`;
//! `{ zone = "z1", org = "acme" }`; `{ type = "Member", id = "u2", org = "acme", member_role =
//! "owner" }`; or any type: `{ type = "ApiKey", id = "k1", org = "acme" }`.
//! `context = { ... }` is passed to Cedar as the request context.
//!
//! Cases are decided by the same [`PolicyEngine::decide`] the gateway uses.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{Context, EntityId, EntityTypeName, EntityUid};
use serde::Deserialize;

use super::{Decision, OrgContext, PolicyEngine, Query};
use crate::domain::apikeys::ApiKeyPrincipal;
use crate::domain::orgs::{OrgFacts, Role};
use crate::domain::principal::{Principal, UserPrincipal};

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: case `{case}`: {message}")]
    Case {
        path: PathBuf,
        case: String,
        message: String,
    },
    #[error("no decision tables (*.toml) in {0}")]
    Empty(PathBuf),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    #[serde(rename = "case", default)]
    cases: Vec<Case>,
}

/// One row of a decision table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    pub principal: PrincipalSpec,
    pub action: String,
    pub resource: ResourceSpec,
    #[serde(default)]
    pub context: Option<toml::Table>,
    pub expect: Expect,
    /// When given, the ids of the policies that must determine the decision (any order).
    #[serde(default)]
    pub policies: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    Allow,
    Deny,
}

impl Expect {
    fn allowed(self) -> bool {
        self == Expect::Allow
    }
}

/// Who asks, as a table writes it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalSpec {
    #[serde(default)]
    pub anonymous: bool,
    pub user: Option<String>,
    pub role: Option<String>,
    pub verified: Option<bool>,
    #[serde(default)]
    pub mfa: bool,
    /// A platform operator's id.
    pub operator: Option<String>,
    pub api_key: Option<String>,
    pub org: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// What is asked about, as a table writes it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceSpec {
    pub gateway: Option<String>,
    pub org: Option<String>,
    pub zone: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub id: Option<String>,
    #[serde(default)]
    pub suspended: bool,
    #[serde(default)]
    pub require_mfa: bool,
    /// For a `Member` resource: the role the member holds now.
    pub member_role: Option<String>,
}

/// A principal, resource and org context built from specs: the owned parts of a [`Query`].
#[derive(Debug)]
pub struct Subject {
    pub principal: Principal,
    pub action: EntityUid,
    pub resource: EntityUid,
    pub org: Option<OrgContext>,
    pub context: Option<Context>,
}

impl Subject {
    pub fn query(&self) -> Query<'_> {
        Query {
            principal: &self.principal,
            action: &self.action,
            resource: self.resource.clone(),
            org: self.org.as_ref(),
            context: self.context.clone(),
        }
    }
}

fn entity_uid(type_basename: &str, id: &str) -> Result<EntityUid, String> {
    let name = EntityTypeName::from_str(&format!("Zonegate::{type_basename}"))
        .map_err(|_| format!("`{type_basename}` is not a valid entity type name"))?;
    Ok(EntityUid::from_type_name_and_id(name, EntityId::new(id)))
}

/// `zones:list` → `Zonegate::Action::"zones:list"`.
pub fn action_uid(action: &str) -> Result<EntityUid, String> {
    entity_uid("Action", action)
}

impl PrincipalSpec {
    fn build(&self) -> Result<(Principal, Option<Role>), String> {
        let kinds = [
            self.anonymous,
            self.user.is_some(),
            self.api_key.is_some(),
            self.operator.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err("principal: give exactly one of anonymous = true, user = \"id\", api_key = \"id\" or operator = \"id\"".into());
        }
        if let Some(user) = &self.user {
            if self.org.is_some() || !self.scopes.is_empty() {
                return Err("principal: org and scopes belong to api_key principals; a user's org is the resource's".into());
            }
            let role = self
                .role
                .as_deref()
                .map(|r| {
                    Role::from_str(r).map_err(|_| {
                        format!(
                            "principal: role `{r}` is not one of viewer, developer, admin, owner"
                        )
                    })
                })
                .transpose()?;
            let principal = Principal::User(Arc::new(UserPrincipal {
                user_id: user.clone(),
                email: String::new(),
                email_verified: self.verified.unwrap_or(true),
                mfa: self.mfa,
                session_id: String::new(),
                family_id: String::new(),
            }));
            return Ok((principal, role));
        }
        if self.role.is_some() || self.verified.is_some() || self.mfa {
            return Err("principal: role, verified and mfa belong to user principals".into());
        }
        if let Some(operator) = &self.operator {
            if self.org.is_some() || !self.scopes.is_empty() {
                return Err("principal: an operator has no org or scopes".into());
            }
            let principal =
                Principal::Operator(Arc::new(crate::domain::principal::OperatorPrincipal {
                    operator_id: operator.clone(),
                    email: String::new(),
                    session_id: String::new(),
                }));
            return Ok((principal, None));
        }
        if let Some(key) = &self.api_key {
            let org = self
                .org
                .clone()
                .ok_or("principal: an api_key needs the org it belongs to")?;
            let principal = Principal::ApiKey(Arc::new(ApiKeyPrincipal {
                key_id: key.clone(),
                org_id: org,
                scopes: self.scopes.clone(),
            }));
            return Ok((principal, None));
        }
        if self.org.is_some() || !self.scopes.is_empty() {
            return Err("principal: anonymous callers have no org or scopes".into());
        }
        Ok((Principal::Anonymous, None))
    }
}

impl ResourceSpec {
    /// The resource uid and, when it lies in an org, that org's facts.
    fn build(&self) -> Result<(EntityUid, Option<OrgFacts>), String> {
        let facts = self.org.as_ref().map(|id| OrgFacts {
            id: id.clone(),
            suspended: self.suspended,
            require_mfa: self.require_mfa,
        });
        if facts.is_none() && (self.suspended || self.require_mfa) {
            return Err("resource: suspended and require_mfa describe an org; give org".into());
        }
        let uid = match (&self.gateway, &self.zone, &self.kind, &self.org) {
            (Some(g), None, None, None) => entity_uid("Gateway", g)?,
            (None, Some(z), None, Some(_)) => entity_uid("Zone", z)?,
            (None, None, Some(kind), _) => {
                let id = self.id.as_deref().ok_or("resource: `type` needs an `id`")?;
                entity_uid(kind, id)?
            }
            (None, None, None, Some(org)) => entity_uid("Org", org)?,
            _ => {
                return Err("resource: give one of { gateway }, { org }, { zone, org } or { type, id[, org] }".into());
            }
        };
        Ok((uid, facts))
    }
}

/// Build what a query needs from table specs (also used by `policy explain`).
pub fn subject(
    principal: &PrincipalSpec,
    action: &str,
    resource: &ResourceSpec,
    context: Option<&toml::Table>,
    engine: &PolicyEngine,
) -> Result<Subject, String> {
    let (principal, role) = principal.build()?;
    let (resource_uid, facts) = resource.build()?;
    if role.is_some() && facts.is_none() {
        return Err(
            "principal: a role is a role in the resource's org; give the resource an org".into(),
        );
    }
    let member_role = resource
        .member_role
        .as_deref()
        .map(|r| {
            Role::from_str(r).map_err(|_| format!("resource: member_role `{r}` is not a role"))
        })
        .transpose()?;
    let action = action_uid(action)?;
    let context = match context {
        None => None,
        Some(table) => {
            let json = serde_json::to_value(table).map_err(|e| format!("context: {e}"))?;
            let store = engine.active();
            let context = Context::from_json_value(json, Some((store.schema(), &action)))
                .map_err(|e| format!("context: {e}"))?;
            Some(context)
        }
    };
    Ok(Subject {
        principal,
        action,
        resource: resource_uid,
        org: facts.map(|facts| OrgContext {
            facts,
            role,
            member_role,
        }),
        context,
    })
}

/// A case whose decision was not the expected one.
#[derive(Debug, Clone)]
pub struct Failure {
    pub file: PathBuf,
    pub case: String,
    pub expected: Expect,
    pub expected_policies: Option<Vec<String>>,
    pub got: Decision,
}

/// The result of running every table.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub files: usize,
    pub cases: usize,
    pub failures: Vec<Failure>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// A readable account: each mismatch as expected/got, then a summary line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for f in &self.failures {
            let got_policies = if f.got.policies.is_empty() {
                "no policy (denied by default)".to_owned()
            } else {
                f.got.policies.join(", ")
            };
            let _ = writeln!(out, "FAIL {} :: {}", f.file.display(), f.case);
            let _ = writeln!(
                out,
                "  - expected: {}{}",
                super::label(f.expected.allowed()),
                f.expected_policies
                    .as_ref()
                    .map(|p| format!(" by [{}]", p.join(", ")))
                    .unwrap_or_default()
            );
            let _ = writeln!(out, "  + got:      {} by {}", f.got.label(), got_policies);
            for e in &f.got.errors {
                let _ = writeln!(out, "    evaluation error: {e}");
            }
        }
        let _ = writeln!(
            out,
            "{} cases in {} files: {} passed, {} failed",
            self.cases,
            self.files,
            self.cases - self.failures.len(),
            self.failures.len()
        );
        out
    }
}

/// Run every `*.toml` table in `dir` against the engine's enforced set.
pub fn run(engine: &PolicyEngine, dir: &Path) -> Result<Report, TableError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| TableError::Io { path, source }
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(TableError::Empty(dir.to_owned()));
    }
    let mut report = Report {
        files: files.len(),
        ..Report::default()
    };
    for path in &files {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        let table: TableFile = toml::from_str(&text).map_err(|e| TableError::Invalid {
            path: path.clone(),
            message: e.to_string(),
        })?;
        // A table emptied by mistake would otherwise pass every run without testing anything.
        if table.cases.is_empty() {
            return Err(TableError::Invalid {
                path: path.clone(),
                message: "no [[case]]: a decision table needs at least one case".into(),
            });
        }
        for case in table.cases {
            let subject = subject(
                &case.principal,
                &case.action,
                &case.resource,
                case.context.as_ref(),
                engine,
            )
            .map_err(|message| TableError::Case {
                path: path.clone(),
                case: case.name.clone(),
                message,
            })?;
            let got = engine.decide(&subject.query());
            report.cases += 1;
            let policies_match = case.policies.as_ref().is_none_or(|want| {
                let mut want = want.clone();
                want.sort();
                let mut have = got.policies.clone();
                have.sort();
                want == have
            });
            if got.allowed != case.expect.allowed() || !policies_match {
                report.failures.push(Failure {
                    file: path.clone(),
                    case: case.name,
                    expected: case.expect,
                    expected_policies: case.policies,
                    got: Arc::unwrap_or_clone(got),
                });
            }
        }
    }
    Ok(report)
}
