//! Configuration: the library's [`BackendConfig`] and the command line that
//! fills it.
//!
//! Flags can also be set through `ZONE_BACKEND_*` environment variables. This
//! module only parses; it must never read key files, open the database or bind
//! sockets (that happens in `serve`, where errors name the offending flag).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::{NonEmptyStringValueParser, TypedValueParser as _};
use clap::{Args, Parser, Subcommand};

use crate::identity::{DEFAULT_AUDIENCE, DEFAULT_REPLAY_CACHE_ENTRIES};

/// Everything the backend needs to run.
#[derive(Clone, PartialEq, Eq)]
pub struct BackendConfig {
    /// Address to listen on; port 0 picks a free port (see [`crate::bind`]).
    pub listen: SocketAddr,
    /// `sqlite://PATH` (the file is created if missing) or `postgres://...` for several
    /// instances. May hold a password: never printed (see the Debug impl).
    pub database_url: String,
    /// Directory holding the `identity-<n>.key` files shared with the gateway.
    pub key_dir: PathBuf,
    /// Expected `aud` claim of identity assertions.
    pub audience: String,
    /// Assertion ids remembered at once to refuse replays.
    pub replay_cache_entries: usize,
}

impl std::fmt::Debug for BackendConfig {
    // The database URL may hold a password: only its scheme is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = self.database_url.split("://").next().unwrap_or("");
        f.debug_struct("BackendConfig")
            .field("listen", &self.listen)
            .field("database", &format_args!("{scheme}://<redacted>"))
            .field("key_dir", &self.key_dir)
            .field("audience", &self.audience)
            .field("replay_cache_entries", &self.replay_cache_entries)
            .finish()
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "zone-backend",
    version,
    about = "Delivery-zone service behind zonegate"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API until SIGTERM or Ctrl-C.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "ZONE_BACKEND_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,

    /// Database URL: sqlite:///var/lib/zone-backend/zones.db (created if missing), or
    /// postgres://zones@db/zones?sslmode=verify-full&sslrootcert=/etc/ca.pem for a fleet. Give
    /// a URL with a password through ZONE_BACKEND_DATABASE, never on the command line.
    #[arg(
        long,
        env = "ZONE_BACKEND_DATABASE",
        value_name = "URL",
        value_parser = NonEmptyStringValueParser::new()
    )]
    pub database: String,

    /// A file holding the PostgreSQL password (a container secret, e.g.
    /// /run/secrets/zones-db-password), joined to the --database URL's user to connect, so the
    /// URL itself can hold none.
    #[arg(long, env = "ZONE_BACKEND_DATABASE_PASSWORD_FILE", value_name = "FILE")]
    pub database_password_file: Option<PathBuf>,

    /// Directory with the gateway's keys: identity-<n>.key files (HS256, shared)
    /// and/or signing-<n>.pub files (Ed25519 public keys).
    #[arg(long, env = "ZONE_BACKEND_KEY_DIR", value_name = "DIR")]
    pub key_dir: PathBuf,

    /// Assertion ids remembered at once to refuse replays; when every slot
    /// holds a live id, requests get 503 until ids expire.
    #[arg(
        long,
        env = "ZONE_BACKEND_REPLAY_CACHE_ENTRIES",
        default_value_t = DEFAULT_REPLAY_CACHE_ENTRIES,
        value_parser = clap::value_parser!(u64).range(1..=100_000_000).map(|n| n as usize)
    )]
    pub replay_cache_entries: usize,

    /// Expected audience (aud claim) of identity assertions.
    #[arg(
        long,
        env = "ZONE_BACKEND_AUDIENCE",
        default_value = DEFAULT_AUDIENCE,
        value_parser = NonEmptyStringValueParser::new()
    )]
    pub audience: String,
}

/// Why `--database-password-file` could not be used. Never holds the password.
#[derive(Debug, thiserror::Error)]
pub enum PasswordFileError {
    #[error("--database-password-file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--database-password-file {}: the file is empty", path.display())]
    Empty { path: PathBuf },
    #[error(
        "--database-password-file needs a postgres:// --database URL with a user and no password"
    )]
    Url,
}

impl TryFrom<ServeArgs> for BackendConfig {
    type Error = PasswordFileError;

    fn try_from(args: ServeArgs) -> Result<Self, PasswordFileError> {
        let database_url = match &args.database_password_file {
            None => args.database,
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| PasswordFileError::Read {
                        path: path.clone(),
                        source,
                    })?;
                // A trailing newline (as `echo` writes) is not part of the password.
                let password = text.trim();
                if password.is_empty() {
                    return Err(PasswordFileError::Empty { path: path.clone() });
                }
                zonegate_common::dburl::with_password(&args.database, password)
                    .ok_or(PasswordFileError::Url)?
            }
        };
        Ok(Self {
            listen: args.listen,
            database_url,
            key_dir: args.key_dir,
            audience: args.audience,
            replay_cache_entries: args.replay_cache_entries,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<BackendConfig, clap::Error> {
        let cli = Cli::try_parse_from(args)?;
        let Command::Serve(serve) = cli.command;
        Ok(BackendConfig::try_from(serve).unwrap())
    }

    #[test]
    fn parses_flags_with_defaults() {
        let config = parse(&[
            "zone-backend",
            "serve",
            "--database",
            "sqlite://z.db",
            "--key-dir",
            "/k",
        ])
        .unwrap();
        assert_eq!(
            config,
            BackendConfig {
                listen: "127.0.0.1:8081".parse().unwrap(),
                database_url: "sqlite://z.db".to_owned(),
                key_dir: PathBuf::from("/k"),
                audience: "zone-backend".to_owned(),
                replay_cache_entries: DEFAULT_REPLAY_CACHE_ENTRIES,
            }
        );
    }

    #[test]
    fn bad_flags_name_the_flag() {
        let err = parse(&[
            "zone-backend",
            "serve",
            "--listen",
            "nope",
            "--database",
            "sqlite://z.db",
            "--key-dir",
            "/k",
        ])
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
        assert!(err.to_string().contains("--listen"), "{err}");
        let err = parse(&[
            "zone-backend",
            "serve",
            "--database",
            "sqlite://z.db",
            "--key-dir",
            "/k",
            "--audience",
            "",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("--audience"), "{err}");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn the_database_password_comes_from_a_file_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("db-password");
        std::fs::write(&file, "s3cret/pw\n").unwrap();
        let file_arg = file.to_str().unwrap();
        let args = |url: &str| {
            let cli = Cli::try_parse_from([
                "zone-backend",
                "serve",
                "--database",
                url,
                "--database-password-file",
                file_arg,
                "--key-dir",
                "/k",
            ])
            .unwrap();
            let Command::Serve(serve) = cli.command;
            serve
        };
        let config = BackendConfig::try_from(args("postgres://zones@db/zones")).unwrap();
        assert_eq!(config.database_url, "postgres://zones:s3cret%2Fpw@db/zones");
        assert!(!format!("{config:?}").contains("s3cret"));
        // A URL that cannot take it, an empty file, a missing one: refused, by name.
        let e = BackendConfig::try_from(args("sqlite://z.db")).unwrap_err();
        assert!(e.to_string().contains("postgres://"), "{e}");
        std::fs::write(&file, "\n").unwrap();
        let e = BackendConfig::try_from(args("postgres://zones@db/zones")).unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
        std::fs::remove_file(&file).unwrap();
        let e = BackendConfig::try_from(args("postgres://zones@db/zones")).unwrap_err();
        assert!(e.to_string().contains("--database-password-file"), "{e}");
    }
}
