//! Stage 3, route: the declarative route table, which method and path go where, under which
//! Cedar action, on which resource, with which credentials.
//!
//! Routes live in a TOML file beside the policies (the security team reviews both together).
//! The file is validated as a whole at load: unknown upstreams, parameters a template uses but
//! the path does not bind, duplicate routes and unsafe methods are refused, naming the route.
//! Matching runs on the canonical raw path ([`super::sanitise::canonical_path`]) so the path
//! that matched is byte for byte the path forwarded.
//!
//! A file may be an overlay on another: `extends = "path"` (relative to the overlay) loads the
//! base first; the overlay's `[[route]]`s are added (a name the base has already is refused),
//! and each `[[override]]` changes named fields of one base route (credentials, upstream,
//! rate_limit). Tests and deployments that add a route or open one to other credentials say
//! only that, instead of copying the table.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{EntityId, EntityTypeName, EntityUid};

use super::metrics::{Metrics, RouteMetrics};
use crate::domain::policy::{PolicyError, PolicyStore};
use percent_encoding::percent_decode_str;
use serde::Deserialize;

/// Cedar namespace of every entity type and action the gateway uses.
pub const NAMESPACE: &str = "Zonegate";

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("cannot read route file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("route file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("route file {path}, route `{route}`: {reason}")]
    Invalid {
        path: PathBuf,
        route: String,
        reason: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    /// The route file this one is an overlay on, relative to this file.
    #[serde(default)]
    extends: Option<PathBuf>,
    #[serde(default, rename = "route")]
    routes: Vec<RawRoute>,
    #[serde(default, rename = "override")]
    overrides: Vec<RawOverride>,
}

/// Fields an overlay may change on a route of the file it extends.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverride {
    name: String,
    #[serde(default)]
    credentials: Option<Vec<String>>,
    #[serde(default)]
    upstream: Option<String>,
    #[serde(default)]
    rate_limit: Option<String>,
}

/// How deep `extends` may chain: a loop or a very long chain is a mistake.
const MAX_EXTENDS: usize = 4;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: String,
    methods: Vec<String>,
    path: String,
    upstream: String,
    action: String,
    resource: RawResource,
    #[serde(default)]
    org: Option<String>,
    credentials: Vec<String>,
    /// Which per-address bucket throttles the route: `auth-strict`, `auth` or `none`.
    #[serde(default)]
    rate_limit: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResource {
    #[serde(rename = "type")]
    kind: String,
    id: String,
}

/// Where a matched request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Answered by the gateway itself, in process.
    Gateway,
    /// Forwarded to the named upstream from the config.
    Upstream(String),
}

/// Which per-client-address rate limit a route is under (stage 4 of the pipeline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressLimit {
    /// Credential-guessing targets: login, signup, password reset, verification resend, TOTP.
    AuthStrict,
    /// Other account endpoints.
    Auth,
    /// Not throttled by address (API traffic is throttled per key and per org instead).
    None,
}

impl AddressLimit {
    /// The class a route gets when its entry has no `rate_limit` key, from its action: every
    /// `auth:` action is throttled, and the ones that check a password, a code or send mail
    /// strictly. Declaring the key is clearer; this default keeps a new `auth:` route from
    /// going unthrottled because someone forgot it.
    pub fn default_for(action: &str) -> AddressLimit {
        const STRICT: [&str; 5] = [
            "auth:login",
            "auth:signup",
            "auth:password-reset",
            "auth:resend-verification",
            "auth:mfa",
        ];
        // Signed-in account actions that check the password again are guessing targets too.
        if action == "account:change-password" || action == "account:mfa" {
            return AddressLimit::AuthStrict;
        }
        let Some(rest) = action.strip_prefix("auth:") else {
            return AddressLimit::None;
        };
        let strict = STRICT.iter().any(|s| action.starts_with(s)) || rest.contains("totp");
        if strict {
            AddressLimit::AuthStrict
        } else {
            AddressLimit::Auth
        }
    }
}

impl FromStr for AddressLimit {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "auth-strict" => Ok(AddressLimit::AuthStrict),
            "auth" => Ok(AddressLimit::Auth),
            "none" => Ok(AddressLimit::None),
            _ => Err(()),
        }
    }
}

/// The kinds of credential a route can accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    Anonymous,
    Session,
    ApiKey,
    /// A platform operator's session (platform routes only).
    Operator,
}

/// Which listener answers a route. Told by the path: everything under `/platform/` is the
/// platform listener's and nothing else is, so the public listener cannot serve a platform
/// route whatever the table says, and the platform listener serves nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    Public,
    Platform,
}

impl Surface {
    pub fn of_path(path: &str) -> Surface {
        if path == "/platform" || path.starts_with("/platform/") {
            Surface::Platform
        } else {
            Surface::Public
        }
    }
}

impl FromStr for CredentialKind {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "anonymous" => Ok(CredentialKind::Anonymous),
            "session" => Ok(CredentialKind::Session),
            "api_key" => Ok(CredentialKind::ApiKey),
            "operator" => Ok(CredentialKind::Operator),
            _ => Err(()),
        }
    }
}

/// A string that is either fixed or taken from one path parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Template {
    Literal(String),
    Param(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param,
}

/// One validated route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Shared: each request's record and metrics labels hold it without a copy.
    pub name: std::sync::Arc<str>,
    pub methods: Vec<http::Method>,
    pub pattern: String,
    segments: Vec<Segment>,
    pub param_names: Vec<String>,
    pub target: Target,
    /// The Cedar action, e.g. `Zonegate::Action::"zones:list"`.
    pub action: EntityUid,
    pub resource_type: EntityTypeName,
    pub resource_id: Template,
    /// The org the request is about, when the path names one.
    pub org: Option<Template>,
    pub credentials: Vec<CredentialKind>,
    /// The per-client-address bucket (`rate_limit` in the file, or from the action).
    pub address_limit: AddressLimit,
    /// The listener that answers it.
    pub surface: Surface,
    /// Its series in the metrics, bound once they exist ([`RouteTable::bind_metrics`]).
    pub metrics: RouteMetrics,
    /// Its place in its table ([`RouteTable::get`]), so that a request can name its route
    /// without holding a reference to it. Only the table that holds it resolves it: a
    /// listener's table ([`RouteTable::surface`]) numbers its routes afresh.
    index: usize,
}

impl Route {
    pub fn index(&self) -> usize {
        self.index
    }

    pub fn accepts(&self, kind: CredentialKind) -> bool {
        self.credentials.contains(&kind)
    }

    /// The resource entity for a request with these parameters.
    pub fn resource_uid(&self, params: &Params) -> EntityUid {
        EntityUid::from_type_name_and_id(
            self.resource_type.clone(),
            EntityId::new(params.resolve(&self.resource_id)),
        )
    }

    pub fn org_id<'a>(&'a self, params: &'a Params) -> Option<&'a str> {
        self.org.as_ref().map(|t| params.resolve(t))
    }
}

/// Decoded path parameter values, in the order of [`Route::param_names`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<String>);

impl Params {
    pub fn resolve<'a>(&'a self, t: &'a Template) -> &'a str {
        match t {
            Template::Literal(s) => s,
            Template::Param(i) => self.0.get(*i).map_or("", String::as_str),
        }
    }
}

/// The outcome of matching a request.
#[derive(Debug)]
pub enum Match<'a> {
    Found(&'a Route, Params),
    /// The path exists with other methods; the value is the Allow header.
    MethodNotAllowed(String),
    NotFound,
}

/// The validated route table.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<Route>,
    /// Route indexes by segment count, in file order: a path is only compared with routes of
    /// its own length.
    by_length: Vec<Vec<usize>>,
}

/// Paths with more segments than this match no route without being split further.
const MAX_SEGMENTS: usize = 16;

const ALLOWED_METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

impl RouteTable {
    /// Load and validate a route file (and the files it extends). `upstreams` are the names
    /// the config defines.
    pub fn load(path: &Path, upstreams: &BTreeSet<String>) -> Result<RouteTable, RouteError> {
        let raw = read_raw(path, 0)?;
        RouteTable::compile_all(raw, path, upstreams)
    }

    /// The upstream names a route file (with what it extends) refers to, for checking a route
    /// file without a config (`zonegate policy validate --policies DIR --routes FILE`).
    pub fn upstream_names(path: &Path) -> Result<BTreeSet<String>, RouteError> {
        Ok(read_raw(path, 0)?
            .into_iter()
            .map(|r| r.upstream)
            .filter(|u| u != "gateway")
            .collect())
    }

    /// Parse one self-contained route file's text (`extends` is refused: there is no file to
    /// resolve it against). `path` names the file in errors.
    pub fn parse(
        text: &str,
        path: &Path,
        upstreams: &BTreeSet<String>,
    ) -> Result<RouteTable, RouteError> {
        let raw = parse_raw(text, path)?;
        if raw.extends.is_some() {
            return Err(RouteError::Parse {
                path: path.to_owned(),
                message: "`extends` needs a file to resolve it against".into(),
            });
        }
        RouteTable::compile_all(merge(Vec::new(), raw, path)?, path, upstreams)
    }

    fn compile_all(
        raw: Vec<RawRoute>,
        path: &Path,
        upstreams: &BTreeSet<String>,
    ) -> Result<RouteTable, RouteError> {
        let mut routes: Vec<Route> = Vec::with_capacity(raw.len());
        for r in raw {
            let fail = |reason: String| RouteError::Invalid {
                path: path.to_owned(),
                route: r.name.clone(),
                reason,
            };
            let route = compile(&r, upstreams).map_err(fail)?;
            if let Some(other) = routes.iter().find(|o| {
                o.segments == route.segments && o.methods.iter().any(|m| route.methods.contains(m))
            }) {
                return Err(fail(format!(
                    "same method and path as route `{}`",
                    other.name
                )));
            }
            if routes.iter().any(|o| o.name == route.name) {
                return Err(fail("the name is used by another route".into()));
            }
            routes.push(route);
        }
        Ok(RouteTable::of(routes))
    }

    /// Every route must name an action the policy set's schema declares, on a resource type
    /// it knows: checked at start, at reload and by `policy validate`.
    pub fn check(&self, store: &PolicyStore) -> Result<(), PolicyError> {
        store.check_uses(
            self.routes
                .iter()
                .map(|r| (&*r.name, &r.action, &r.resource_type)),
        )
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The routes one listener answers: a table of their own, so the other listener's routes
    /// are not even looked at (a 404, like any path nobody serves).
    pub fn surface(&self, surface: Surface) -> RouteTable {
        let routes: Vec<Route> = self
            .routes
            .iter()
            .filter(|r| r.surface == surface)
            .cloned()
            .collect();
        RouteTable::of(routes)
    }

    /// A table of `routes`, in their order.
    fn of(mut routes: Vec<Route>) -> RouteTable {
        for (i, route) in routes.iter_mut().enumerate() {
            route.index = i;
        }
        let by_length = index_by_length(&routes);
        RouteTable { routes, by_length }
    }

    /// The route at `index` ([`Route::index`]).
    pub fn get(&self, index: usize) -> Option<&Route> {
        self.routes.get(index)
    }

    /// Look up each route's series once, so that recording a request hashes no label. A table
    /// never bound records no per-route metrics.
    pub fn bind_metrics(&mut self, metrics: &Metrics) {
        for route in &mut self.routes {
            route.metrics = metrics.for_route(&route.name);
        }
    }

    /// Match a canonical path (no query) and method. The path is split once, on the stack.
    pub fn find(&self, method: &http::Method, path: &str) -> Match<'_> {
        let Some(rest) = path.strip_prefix('/') else {
            return Match::NotFound;
        };
        let mut parts = [""; MAX_SEGMENTS];
        let mut count = 0;
        // Split on the byte with memchr, as `str::split('/')` would, without its char searcher
        // (a tenth of this path's cost per segment).
        let mut rest = Some(rest);
        while let Some(text) = rest {
            let (part, tail) = match memchr::memchr(b'/', text.as_bytes()) {
                // `/` is one byte, so both sides of it are whole UTF-8.
                Some(i) => match (text.get(..i), text.get(i + 1..)) {
                    (Some(part), Some(tail)) => (part, Some(tail)),
                    _ => return Match::NotFound,
                },
                None => (text, None),
            };
            match parts.get_mut(count) {
                Some(slot) => *slot = part,
                None => return Match::NotFound,
            }
            count += 1;
            rest = tail;
        }
        let parts = &parts[..count];
        let candidates = self.by_length.get(count).map_or(&[][..], Vec::as_slice);
        let mut allow: Vec<&str> = Vec::new();
        for route in candidates.iter().filter_map(|&i| self.routes.get(i)) {
            if !segments_match(&route.segments, parts) {
                continue;
            }
            if route.methods.contains(method) {
                return match decode_params(&route.segments, parts) {
                    Some(params) => Match::Found(route, params),
                    // A parameter that is not valid UTF-8 once decoded names no entity.
                    None => Match::NotFound,
                };
            }
            allow.extend(route.methods.iter().map(http::Method::as_str));
        }
        if allow.is_empty() {
            Match::NotFound
        } else {
            allow.sort_unstable();
            allow.dedup();
            Match::MethodNotAllowed(allow.join(", "))
        }
    }
}

/// Route indexes by segment count, in table order.
fn index_by_length(routes: &[Route]) -> Vec<Vec<usize>> {
    let mut by_length = vec![Vec::new(); MAX_SEGMENTS + 1];
    for (i, route) in routes.iter().enumerate() {
        if let Some(bucket) = by_length.get_mut(route.segments.len()) {
            bucket.push(i);
        }
    }
    by_length
}

fn parse_raw(text: &str, path: &Path) -> Result<RawFile, RouteError> {
    toml::from_str(text).map_err(|e| RouteError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// The raw routes of `path`, with every file it extends merged in.
fn read_raw(path: &Path, depth: usize) -> Result<Vec<RawRoute>, RouteError> {
    let text = std::fs::read_to_string(path).map_err(|source| RouteError::Read {
        path: path.to_owned(),
        source,
    })?;
    let raw = parse_raw(&text, path)?;
    let base = match &raw.extends {
        Some(_) if depth >= MAX_EXTENDS => {
            return Err(RouteError::Parse {
                path: path.to_owned(),
                message: format!("`extends` chains more than {MAX_EXTENDS} files deep"),
            })
        }
        Some(base) => {
            let dir = path.parent().unwrap_or_else(|| Path::new("."));
            read_raw(&dir.join(base), depth + 1)?
        }
        None => Vec::new(),
    };
    merge(base, raw, path)
}

/// Apply a file's routes and overrides on top of `base`.
fn merge(mut base: Vec<RawRoute>, file: RawFile, path: &Path) -> Result<Vec<RawRoute>, RouteError> {
    if file.extends.is_none() && !file.overrides.is_empty() {
        return Err(RouteError::Parse {
            path: path.to_owned(),
            message: "`[[override]]` needs `extends`: there is no route to override".into(),
        });
    }
    for o in file.overrides {
        let invalid = |reason: &str| RouteError::Invalid {
            path: path.to_owned(),
            route: o.name.clone(),
            reason: reason.to_owned(),
        };
        let route = base
            .iter_mut()
            .find(|r| r.name == o.name)
            .ok_or_else(|| invalid("`[[override]]` names no route of the extended file"))?;
        if let Some(credentials) = o.credentials {
            route.credentials = credentials;
        }
        if let Some(upstream) = o.upstream {
            route.upstream = upstream;
        }
        if let Some(rate_limit) = o.rate_limit {
            route.rate_limit = Some(rate_limit);
        }
    }
    for r in file.routes {
        if base.iter().any(|b| b.name == r.name) {
            return Err(RouteError::Invalid {
                path: path.to_owned(),
                route: r.name,
                reason: "the extended file has a route of this name: use `[[override]]`".into(),
            });
        }
        base.push(r);
    }
    Ok(base)
}

fn segments_match(segments: &[Segment], parts: &[&str]) -> bool {
    segments.len() == parts.len()
        && segments.iter().zip(parts).all(|(s, part)| match s {
            Segment::Literal(l) => l == part,
            Segment::Param => !part.is_empty(),
        })
}

fn decode_params(segments: &[Segment], parts: &[&str]) -> Option<Params> {
    let mut values = Vec::new();
    for (s, part) in segments.iter().zip(parts) {
        if *s == Segment::Param {
            values.push(percent_decode_str(part).decode_utf8().ok()?.into_owned());
        }
    }
    Some(Params(values))
}

fn compile(r: &RawRoute, upstreams: &BTreeSet<String>) -> Result<Route, String> {
    if r.methods.is_empty() {
        return Err("`methods` must name at least one method".into());
    }
    let methods = r
        .methods
        .iter()
        .map(|m| {
            if ALLOWED_METHODS.contains(&m.as_str()) {
                http::Method::from_str(m).map_err(|_| format!("bad method `{m}`"))
            } else {
                Err(format!(
                    "method `{m}` is not allowed (use one of {ALLOWED_METHODS:?})"
                ))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;

    let body = r
        .path
        .strip_prefix('/')
        .ok_or_else(|| format!("path `{}` must start with /", r.path))?;
    let mut segments = Vec::new();
    let mut param_names: Vec<String> = Vec::new();
    for part in body.split('/') {
        if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!("bad parameter name `{part}` in path"));
            }
            if param_names.iter().any(|n| n == name) {
                return Err(format!("parameter `{name}` appears twice in the path"));
            }
            param_names.push(name.to_owned());
            segments.push(Segment::Param);
        } else {
            let canonical = crate::pipeline::sanitise::canonical_path(&format!("/{part}")).is_ok();
            if part.is_empty() && body != part || !canonical || part.contains(['{', '}']) {
                return Err(format!("path segment `{part}` is not a canonical literal"));
            }
            segments.push(Segment::Literal(part.to_owned()));
        }
    }
    if segments.len() > MAX_SEGMENTS {
        return Err(format!(
            "the path has {} segments; at most {MAX_SEGMENTS} are supported",
            segments.len()
        ));
    }

    let template = |key: &str, v: &str| -> Result<Template, String> {
        match v.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            Some(name) => param_names
                .iter()
                .position(|n| n == name)
                .map(Template::Param)
                .ok_or_else(|| format!("`{key}` uses `{{{name}}}`, which the path does not bind")),
            None if v.is_empty() => Err(format!("`{key}` must not be empty")),
            None => Ok(Template::Literal(v.to_owned())),
        }
    };

    let target = match r.upstream.as_str() {
        "gateway" => Target::Gateway,
        name if upstreams.contains(name) => Target::Upstream(name.to_owned()),
        name => return Err(format!("upstream `{name}` is not defined in the config")),
    };
    let action = EntityUid::from_str(&format!(
        "{NAMESPACE}::Action::{}",
        serde_json::Value::String(r.action.clone())
    ))
    .map_err(|_| format!("`action` `{}` is not a valid Cedar action id", r.action))?;
    let resource_type = EntityTypeName::from_str(&format!("{NAMESPACE}::{}", r.resource.kind))
        .map_err(|_| {
            format!(
                "resource type `{}` is not a Cedar type name",
                r.resource.kind
            )
        })?;
    let credentials = r
        .credentials
        .iter()
        .map(|c| {
            c.parse().map_err(|()| {
                format!("unknown credential kind `{c}` (anonymous, session, api_key, operator)")
            })
        })
        .collect::<Result<Vec<CredentialKind>, _>>()?;
    if credentials.is_empty() {
        return Err("`credentials` must name at least one kind".into());
    }
    let surface = Surface::of_path(&r.path);
    match surface {
        // Operators never reach the customer surface, and nothing but an operator (or the
        // anonymous login and contract) reaches the platform's; its answers come from the
        // gateway itself, never an upstream.
        Surface::Public if credentials.contains(&CredentialKind::Operator) => {
            return Err("the `operator` credential is for /platform/ routes only".into())
        }
        Surface::Platform
            if credentials
                .iter()
                .any(|c| !matches!(c, CredentialKind::Operator | CredentialKind::Anonymous)) =>
        {
            return Err(
                "a /platform/ route accepts only `operator` (or `anonymous`) credentials".into(),
            )
        }
        Surface::Platform if target != Target::Gateway => {
            return Err(
                "a /platform/ route is answered by the gateway (upstream = \"gateway\")".into(),
            )
        }
        _ => {}
    }
    let address_limit = match r.rate_limit.as_deref() {
        Some(v) => v
            .parse()
            .map_err(|()| format!("unknown rate_limit `{v}` (auth-strict, auth, none)"))?,
        None => AddressLimit::default_for(&r.action),
    };
    Ok(Route {
        address_limit,
        name: r.name.as_str().into(),
        methods,
        pattern: r.path.clone(),
        segments,
        target,
        action,
        resource_type,
        resource_id: template("resource.id", &r.resource.id)?,
        org: r.org.as_deref().map(|o| template("org", o)).transpose()?,
        credentials,
        param_names,
        surface,
        metrics: RouteMetrics::default(),
        // Set by the table.
        index: 0,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// (operationId, METHOD, path) of every operation in a document.
    fn operations(document: &str) -> std::collections::BTreeSet<(String, String, String)> {
        let doc: serde_json::Value = serde_json::from_str(document).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut out = std::collections::BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if let Some(id) = op.get("operationId") {
                    out.insert((
                        id.as_str().unwrap().to_owned(),
                        method.to_ascii_uppercase(),
                        path.clone(),
                    ));
                }
            }
        }
        out
    }

    /// Each listener's routes are the operations of its own contract: the public one
    /// (`openapi.json`) and the platform's (`platform-openapi.json`).
    #[test]
    fn every_route_is_an_operation_and_every_operation_a_route() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let upstreams = std::collections::BTreeSet::from(["zones".to_owned()]);
        let table = RouteTable::load(&root.join("policies/routes.toml"), &upstreams).unwrap();
        for (surface, document) in [
            (Surface::Public, crate::api::contract::OPENAPI),
            (Surface::Platform, crate::api::platform::OPENAPI),
        ] {
            routes_are_operations(&table.surface(surface), document);
        }
    }

    fn routes_are_operations(table: &RouteTable, document: &str) {
        let mut routes = std::collections::BTreeSet::new();
        for route in table.routes() {
            for method in &route.methods {
                // A route with two methods has one operation each: `zones-update` is the PUT,
                // its PATCH is `zones-patch`.
                let id = match (&*route.name, method.as_str()) {
                    ("zones-update", "PATCH") => "zones-patch".to_owned(),
                    (name, _) => name.to_owned(),
                };
                routes.insert((id, method.to_string(), route.pattern.clone()));
            }
        }
        let documented = operations(document);
        let undocumented: Vec<_> = routes.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&routes).collect();
        assert!(
            undocumented.is_empty(),
            "routes without an operation: {undocumented:?}"
        );
        assert!(
            unrouted.is_empty(),
            "operations without a route: {unrouted:?}"
        );
    }

    const TABLE: &str = r#"
[[route]]
name = "list-zones"
methods = ["GET"]
path = "/v1/orgs/{org}/zones"
upstream = "zones"
action = "zones:list"
resource = { type = "Org", id = "{org}" }
org = "{org}"
credentials = ["anonymous"]

[[route]]
name = "create-zone"
methods = ["POST"]
path = "/v1/orgs/{org}/zones"
upstream = "zones"
action = "zones:create"
resource = { type = "Org", id = "{org}" }
org = "{org}"
credentials = ["anonymous"]

[[route]]
name = "get-zone"
methods = ["GET"]
path = "/v1/orgs/{org}/zones/{zone}"
upstream = "zones"
action = "zones:read"
resource = { type = "Zone", id = "{zone}" }
org = "{org}"
credentials = ["session", "api_key"]

[[route]]
name = "health"
methods = ["GET"]
path = "/healthz"
upstream = "gateway"
action = "health"
resource = { type = "Gateway", id = "public" }
credentials = ["anonymous"]
"#;

    fn table(text: &str) -> Result<RouteTable, RouteError> {
        RouteTable::parse(
            text,
            Path::new("routes.toml"),
            &BTreeSet::from(["zones".to_owned()]),
        )
    }

    #[test]
    fn address_limit_is_declared_or_derived_from_the_action() {
        use AddressLimit as A;
        assert_eq!(A::default_for("auth:login"), A::AuthStrict);
        assert_eq!(A::default_for("auth:login-totp"), A::AuthStrict);
        assert_eq!(A::default_for("auth:mfa-enrol"), A::AuthStrict);
        assert_eq!(A::default_for("auth:password-reset"), A::AuthStrict);
        assert_eq!(A::default_for("auth:resend-verification"), A::AuthStrict);
        assert_eq!(A::default_for("auth:signup"), A::AuthStrict);
        assert_eq!(A::default_for("auth:refresh"), A::Auth);
        assert_eq!(A::default_for("account:change-password"), A::AuthStrict);
        assert_eq!(A::default_for("account:mfa"), A::AuthStrict);
        assert_eq!(A::default_for("zones:list"), A::None);
        let ups: BTreeSet<String> = ["zones".to_owned()].into();
        let one = |extra: &str| {
            format!(
                "[[route]]\nname = \"r\"\nmethods = [\"POST\"]\npath = \"/auth/x\"\nupstream = \"gateway\"\n\
                 action = \"auth:x\"\nresource = {{ type = \"Gateway\", id = \"auth\" }}\n\
                 credentials = [\"anonymous\"]\n{extra}"
            )
        };
        let t = RouteTable::parse(&one(""), Path::new("r.toml"), &ups).unwrap();
        assert_eq!(t.routes()[0].address_limit, A::Auth);
        let t = RouteTable::parse(
            &one("rate_limit = \"auth-strict\""),
            Path::new("r.toml"),
            &ups,
        )
        .unwrap();
        assert_eq!(t.routes()[0].address_limit, A::AuthStrict);
        let e = RouteTable::parse(&one("rate_limit = \"loose\""), Path::new("r.toml"), &ups)
            .unwrap_err()
            .to_string();
        assert!(e.contains("rate_limit"), "{e}");
    }

    #[test]
    fn matches_method_and_path_and_decodes_parameters() {
        let t = table(TABLE).unwrap();
        let Match::Found(r, p) = t.find(&http::Method::GET, "/v1/orgs/acme%20co/zones/z1") else {
            panic!("no match")
        };
        assert_eq!(&*r.name, "get-zone");
        assert_eq!(r.org_id(&p), Some("acme co"));
        assert_eq!(r.resource_uid(&p).to_string(), r#"Zonegate::Zone::"z1""#);
        assert_eq!(r.action.to_string(), r#"Zonegate::Action::"zones:read""#);
        assert!(!r.accepts(CredentialKind::Anonymous));
    }

    #[test]
    fn unknown_path_is_not_found_and_wrong_method_lists_allowed() {
        let t = table(TABLE).unwrap();
        assert!(matches!(
            t.find(&http::Method::GET, "/v1/orgs/a"),
            Match::NotFound
        ));
        assert!(matches!(
            t.find(&http::Method::GET, "/v1/orgs//zones"),
            Match::NotFound
        ));
        assert!(matches!(
            t.find(&http::Method::GET, "/healthz/"),
            Match::NotFound
        ));
        match t.find(&http::Method::DELETE, "/v1/orgs/a/zones") {
            Match::MethodNotAllowed(allow) => assert_eq!(allow, "GET, POST"),
            other => panic!("{other:?}"),
        }
        // Longer than any route can be: refused without being split further.
        let long = "/x".repeat(MAX_SEGMENTS + 1);
        assert!(matches!(t.find(&http::Method::GET, &long), Match::NotFound));
    }

    #[test]
    fn invalid_tables_name_the_route_and_the_problem() {
        let cases = [
            (
                TABLE.replace("upstream = \"gateway\"", "upstream = \"nope\""),
                "nope",
            ),
            (TABLE.replace("id = \"{zone}\"", "id = \"{zon}\""), "{zon}"),
            (TABLE.replace("[\"POST\"]", "[\"TRACE\"]"), "TRACE"),
            (
                TABLE.replace("[\"POST\"]", "[\"GET\"]"),
                "same method and path",
            ),
            (TABLE.replace("\"anonymous\"]", "\"magic\"]"), "magic"),
            (TABLE.replace("/healthz", "/a/../healthz"), "canonical"),
            (
                TABLE.replace(
                    "path = \"/healthz\"",
                    &format!("path = \"{}\"", "/x".repeat(17)),
                ),
                "at most 16",
            ),
        ];
        for (text, needle) in cases {
            let e = table(&text).unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains("route `"), "{needle}: {e}");
        }
    }

    const PLATFORM: &str = r#"
[[route]]
name = "platform-orgs-read"
methods = ["GET"]
path = "/platform/v1/orgs/{org}"
upstream = "gateway"
action = "platform:orgs-read"
resource = { type = "Platform", id = "orgs" }
credentials = ["operator"]
"#;

    #[test]
    fn each_listener_serves_its_own_surface_and_operators_stay_on_theirs() {
        let both = table(&format!("{TABLE}{PLATFORM}")).unwrap();
        let public = both.surface(Surface::Public);
        let platform = both.surface(Surface::Platform);
        assert!(matches!(
            public.find(&http::Method::GET, "/platform/v1/orgs/acme"),
            Match::NotFound
        ));
        assert!(matches!(
            platform.find(&http::Method::GET, "/platform/v1/orgs/acme"),
            Match::Found(r, _) if &*r.name == "platform-orgs-read"
        ));
        for path in ["/healthz", "/v1/orgs/acme/zones"] {
            assert!(matches!(
                platform.find(&http::Method::GET, path),
                Match::NotFound
            ));
            assert!(matches!(
                public.find(&http::Method::GET, path),
                Match::Found(..)
            ));
        }
        let refused = [
            (
                PLATFORM.replace("[\"operator\"]", "[\"session\"]"),
                "accepts only `operator`",
            ),
            (
                PLATFORM.replace("upstream = \"gateway\"", "upstream = \"zones\""),
                "answered by the gateway",
            ),
            (
                TABLE.replace("[\"session\", \"api_key\"]", "[\"operator\"]"),
                "for /platform/ routes only",
            ),
        ];
        for (text, needle) in refused {
            let e = table(&text).unwrap_err().to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
        assert_eq!(Surface::of_path("/platform"), Surface::Platform);
        assert_eq!(Surface::of_path("/platformx/a"), Surface::Public);
    }

    #[test]
    fn an_overlay_adds_routes_and_overrides_fields_of_the_base() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("base.toml"), TABLE).unwrap();
        let overlay = dir.path().join("overlay.toml");
        let ups = BTreeSet::from(["zones".to_owned(), "echo".to_owned()]);
        std::fs::write(
            &overlay,
            r#"extends = "base.toml"

[[route]]
name = "echo"
methods = ["GET"]
path = "/echo"
upstream = "echo"
action = "health"
resource = { type = "Gateway", id = "public" }
credentials = ["anonymous"]

[[override]]
name = "get-zone"
credentials = ["anonymous"]
upstream = "echo"
"#,
        )
        .unwrap();
        let t = RouteTable::load(&overlay, &ups).unwrap();
        assert_eq!(t.routes().len(), 5);
        let Match::Found(r, _) = t.find(&http::Method::GET, "/v1/orgs/a/zones/z") else {
            panic!("no match")
        };
        assert!(r.accepts(CredentialKind::Anonymous) && !r.accepts(CredentialKind::Session));
        assert_eq!(r.target, Target::Upstream("echo".into()));
        assert!(matches!(
            t.find(&http::Method::GET, "/echo"),
            Match::Found(..)
        ));
        assert_eq!(
            RouteTable::upstream_names(&overlay).unwrap(),
            BTreeSet::from(["echo".to_owned(), "zones".to_owned()])
        );

        let refused = |text: &str, needle: &str| {
            std::fs::write(&overlay, text).unwrap();
            let e = RouteTable::load(&overlay, &ups).unwrap_err().to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        };
        refused(
            "extends = \"base.toml\"\n[[override]]\nname = \"nope\"\ncredentials = []\n",
            "route `nope`",
        );
        refused(
            &format!(
                "extends = \"base.toml\"\n{}",
                &TABLE[TABLE.find("[[route]]").unwrap()..]
            ),
            "use `[[override]]`",
        );
        refused("extends = \"overlay.toml\"\n", "deep");
        refused("extends = \"missing.toml\"\n", "missing.toml");
        refused("[[override]]\nname = \"get-zone\"\n", "needs `extends`");
    }
}
