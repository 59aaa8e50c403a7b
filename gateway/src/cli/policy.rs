//! `zonegate policy validate | test | explain | diff`: the security team's workflow. The commands load
//! the set exactly as the gateway does (the policy directory, held against the route table)
//! and decide through the same engine, so what passes here is what the gateway enforces.
//!
//! Exit codes: 0 success, 1 a decision table mismatch (`test`) or a widening candidate
//! (`diff`), 2 invalid input (config, policies, tables, arguments, an unreadable log).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::fail;
use crate::config::Config;
use crate::domain::policy::{self, tables, PolicyEngine};
use crate::pipeline::route::{Match, RouteTable};

/// Where the policies and routes come from: explicit paths, else the config's.
#[derive(Debug)]
pub struct Sources {
    pub policies: Option<PathBuf>,
    pub routes: Option<PathBuf>,
    pub config: PathBuf,
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Routes(#[from] crate::pipeline::route::RouteError),
    #[error("{0}")]
    Policy(#[from] policy::PolicyError),
    #[error("{0}")]
    Tables(#[from] tables::TableError),
    #[error("{0}")]
    Usage(String),
}

struct Loaded {
    engine: PolicyEngine,
    routes: RouteTable,
    dir: PathBuf,
}

impl Sources {
    fn load(&self) -> Result<Loaded, CliError> {
        // The config is read only for the paths and upstream names it names; with both paths
        // given explicitly, a missing config is fine.
        let config = match (&self.policies, &self.routes) {
            (Some(_), Some(_)) if !self.config.exists() => None,
            _ => Some(Config::load(&self.config)?),
        };
        let dir = self
            .policies
            .clone()
            .or_else(|| config.as_ref().map(|c| c.policies_dir.clone()))
            .ok_or_else(|| CliError::Usage("no policy directory".into()))?;
        let routes_file = self
            .routes
            .clone()
            .or_else(|| config.as_ref().map(|c| c.routes_file.clone()))
            .ok_or_else(|| CliError::Usage("no route table".into()))?;
        let upstreams: BTreeSet<String> = match &config {
            Some(c) => c.upstreams.keys().cloned().collect(),
            None => RouteTable::upstream_names(&routes_file)?,
        };
        let routes = RouteTable::load(&routes_file, &upstreams)?;
        let store = policy::PolicyStore::load(&dir)?;
        routes.check(&store)?;
        Ok(Loaded {
            engine: PolicyEngine::new(store),
            routes,
            dir,
        })
    }
}

pub fn validate(sources: &Sources) -> ExitCode {
    match sources.load() {
        Ok(l) => {
            let store = l.engine.active();
            println!(
                "policy set OK: {} policies in {}, {} routes, sha256 {}",
                store.len(),
                l.dir.display(),
                l.routes.routes().len(),
                store.hash()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(2, &e),
    }
}

pub fn test(sources: &Sources, tables_dir: Option<&Path>) -> ExitCode {
    let loaded = match sources.load() {
        Ok(l) => l,
        Err(e) => return fail(2, &e),
    };
    let dir = tables_dir.map_or_else(|| loaded.dir.join("tests"), Path::to_owned);
    match tables::run(&loaded.engine, &dir) {
        Ok(report) => {
            print!("{}", report.render());
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => fail(2, &CliError::from(e)),
    }
}

/// What `policy explain` was asked.
#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// Who asks, as in a decision table: '{ user = "u", role = "viewer", mfa = true }',
    /// '{ api_key = "k", org = "acme", scopes = ["zones:read"] }' or '{ anonymous = true }'.
    #[arg(long)]
    pub principal: String,
    /// A request line, 'METHOD /path': the route table gives the action and resource.
    #[arg(long, conflicts_with_all = ["action", "resource"])]
    pub request: Option<String>,
    /// The action, e.g. zones:read (with --resource, instead of --request).
    #[arg(long, requires = "resource")]
    pub action: Option<String>,
    /// The resource, as in a decision table: '{ zone = "z1", org = "acme" }'.
    #[arg(long, requires = "action")]
    pub resource: Option<String>,
    /// With --request: the org is suspended.
    #[arg(long)]
    pub suspended: bool,
    /// With --request: the org requires MFA.
    #[arg(long)]
    pub require_mfa: bool,
    /// Request context as a TOML inline table.
    #[arg(long)]
    pub context: Option<String>,
}

pub fn explain(sources: &Sources, args: &ExplainArgs) -> ExitCode {
    let result = sources.load().and_then(|loaded| {
        let subject = explain_subject(&loaded, args)?;
        let explanation = policy::explain::explain(&loaded.engine, &subject);
        Ok(explanation.render(&subject))
    });
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(2, &e),
    }
}

/// Parse a TOML inline table given on the command line.
fn inline<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T, CliError> {
    toml::from_str::<toml::Table>(&format!("v = {text}"))
        .map_err(|e| e.to_string())
        .and_then(|mut t| t.remove("v").ok_or_else(|| "empty".to_owned()))
        .and_then(|v| v.try_into().map_err(|e: toml::de::Error| e.to_string()))
        .map_err(|e| CliError::Usage(format!("--{what}: {e}")))
}

fn explain_subject(loaded: &Loaded, args: &ExplainArgs) -> Result<tables::Subject, CliError> {
    let principal: tables::PrincipalSpec = inline("principal", &args.principal)?;
    let context: Option<toml::Table> = args
        .context
        .as_deref()
        .map(|c| inline("context", c))
        .transpose()?;
    let (action, resource) = match (&args.request, &args.action, &args.resource) {
        (Some(line), None, None) => resolve_request(loaded, line, args)?,
        (None, Some(action), Some(resource)) => (
            action.clone(),
            inline::<tables::ResourceSpec>("resource", resource)?,
        ),
        _ => {
            return Err(CliError::Usage(
                "give --request 'METHOD /path', or --action with --resource".into(),
            ))
        }
    };
    tables::subject(
        &principal,
        &action,
        &resource,
        context.as_ref(),
        &loaded.engine,
    )
    .map_err(CliError::Usage)
}

/// Turn 'METHOD /path' into the route's action and resource, as the gateway would.
fn resolve_request(
    loaded: &Loaded,
    line: &str,
    args: &ExplainArgs,
) -> Result<(String, tables::ResourceSpec), CliError> {
    let usage = || CliError::Usage(format!("--request `{line}`: expected 'METHOD /path'"));
    let (method, path) = line.trim().split_once(' ').ok_or_else(usage)?;
    let method = http::Method::from_bytes(method.as_bytes()).map_err(|_| usage())?;
    let path = path.trim();
    let (route, params) = match loaded.routes.find(&method, path) {
        Match::Found(route, params) => (route, params),
        Match::MethodNotAllowed(allow) => {
            return Err(CliError::Usage(format!(
                "--request: {path} does not take {method} (it allows {allow})"
            )))
        }
        Match::NotFound => {
            return Err(CliError::Usage(format!(
                "--request: no route matches {path}"
            )))
        }
    };
    let resource_uid = route.resource_uid(&params);
    let org = route.org_id(&params).map(str::to_owned);
    let kind = resource_uid.type_name().basename().to_owned();
    let id = resource_uid.id().unescaped().to_owned();
    let resource = tables::ResourceSpec {
        kind: Some(kind),
        id: Some(id),
        org,
        suspended: args.suspended,
        require_mfa: args.require_mfa,
        ..tables::ResourceSpec::default()
    };
    let action = route.action.id().unescaped().to_owned();
    Ok((action, resource))
}

/// What `policy diff` was asked.
#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The candidate policy directory (schema.cedarschema and *.cedar): the change to try.
    #[arg(long)]
    pub candidate: PathBuf,
    #[command(flatten)]
    pub select: super::decisions::SelectArgs,
    /// Replay the decisions in this file (from `zonegate decisions export`) instead of the
    /// database; roles and org flags are then as logged.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Output: a report for people, or JSON for tools.
    #[arg(long, value_enum, default_value_t = DiffFormat::Text)]
    pub format: DiffFormat,
    /// Exit 0 even when the candidate allows requests the current set denies.
    #[arg(long)]
    pub allow_widening: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DiffFormat {
    Text,
    Json,
}

#[derive(Debug, thiserror::Error)]
enum DiffError {
    #[error("{0}")]
    Cli(#[from] CliError),
    #[error("{0}")]
    Input(#[from] super::decisions::DecisionsCliError),
    #[error("{0}")]
    Db(#[from] crate::domain::storage::DbError),
    #[error("{0}")]
    Log(#[from] crate::domain::decisions::DecisionLogError),
    #[error("the gateway config is needed to reach the decision log: {0}")]
    Config(crate::config::ConfigError),
}

/// Replay logged decisions against a candidate set. Exit 0: nothing widens (or
/// `--allow-widening`); 1: the candidate allows something the current set denies; 2: bad
/// input or the log could not be read.
pub fn diff(sources: &Sources, args: &DiffArgs) -> ExitCode {
    match run_diff(sources, args) {
        Ok((report, text)) => {
            let widens = report.widens();
            match args.format {
                DiffFormat::Text => print!("{text}"),
                DiffFormat::Json => match serde_json::to_string_pretty(&report) {
                    Ok(json) => println!("{json}"),
                    Err(e) => return fail(2, &e),
                },
            }
            if widens && !args.allow_widening {
                eprintln!(
                    "zonegate: the candidate allows {} requests the current set denies; \
                     review them, then pass --allow-widening",
                    report.changes.deny_to_allow
                );
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => fail(2, &e),
    }
}

fn run_diff(
    sources: &Sources,
    args: &DiffArgs,
) -> Result<(crate::domain::decisions::replay::Report, String), DiffError> {
    use crate::domain::decisions::replay::{Facts, Replay};
    use crate::domain::decisions::DecisionTable;

    let loaded = sources.load()?;
    let candidate = policy::PolicyStore::load(&args.candidate).map_err(CliError::from)?;
    loaded.routes.check(&candidate).map_err(CliError::from)?;
    let candidate = PolicyEngine::new(candidate);
    let selection = args.select.selection()?;
    let runtime = super::decisions::runtime()?;
    runtime.block_on(async {
        if let Some(input) = &args.input {
            let records = super::decisions::read_file(input, &selection)?;
            let mut replay = Replay::new(&loaded.engine, &candidate, Facts::AsLogged);
            for r in &records {
                replay.add(r).await?;
            }
            return Ok((replay.report(), replay.render()));
        }
        let config = Config::load(&sources.config).map_err(DiffError::Config)?;
        let url = config
            .database_connect_url(&crate::config::secrets::process_env)
            .map_err(DiffError::Config)?;
        let db = crate::domain::storage::Db::connect(url.expose(), 2).await?;
        let table = DecisionTable::new(db.clone());
        let mut replay = Replay::new(&loaded.engine, &candidate, Facts::Stored(&db));
        let mut after = None;
        loop {
            let (records, position) = table.read(&selection, after.as_ref()).await?;
            for r in &records {
                replay.add(r).await?;
            }
            if position.is_none() {
                break;
            }
            after = position;
        }
        Ok((replay.report(), replay.render()))
    })
}
