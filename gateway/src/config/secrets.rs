//! Secrets the config names but never holds: the database and SMTP passwords come from
//! environment variables or files (container secrets), the admin listener's bearer token from
//! a file. The config file can
//! then be committed, printed and shared; a secret written into it is refused by validation.
//!
//! Each is read when the gateway is prepared (by `serve` and `check-config` alike), so a
//! variable that is not set or a token file that cannot be read stops the start by name
//! instead of becoming an empty password.

use std::fmt;

use zeroize::Zeroizing;

use super::error::invalid;
use super::{Config, ConfigError};

/// Where secrets are looked up by name: the process environment in the binary, a table in
/// tests.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// A secret value: zeroed when dropped, never printed by `Debug`.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

/// Shortest admin token accepted: 32 characters, e.g. `openssl rand -hex 16`.
const MIN_ADMIN_TOKEN_CHARS: usize = 32;

fn from_env(key: &'static str, var: &str, env: Env<'_>) -> Result<Secret, ConfigError> {
    match env(var) {
        Some(v) if !v.is_empty() => Ok(Secret(Zeroizing::new(v))),
        Some(_) => Err(invalid(
            key,
            format!("environment variable `{var}` is empty"),
        )),
        None => Err(invalid(
            key,
            format!("environment variable `{var}` is not set"),
        )),
    }
}

/// Where a password comes from: `password_env` or `password_file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(std::path::PathBuf),
}

impl SecretSource {
    /// The source named by a section's `password_env` and `password_file`: at most one.
    pub(super) fn either(
        key: &'static str,
        env: Option<String>,
        file: Option<std::path::PathBuf>,
    ) -> Result<Option<SecretSource>, ConfigError> {
        match (env, file) {
            (Some(_), Some(_)) => Err(invalid(
                key,
                "name the password's environment variable (password_env) or its file (password_file), not both",
            )),
            (Some(var), None) => Ok(Some(SecretSource::Env(var))),
            (None, Some(path)) => Ok(Some(SecretSource::File(path))),
            (None, None) => Ok(None),
        }
    }

    /// Read the secret; errors name `env_key` or `file_key` (whichever this source came
    /// from) and the variable or file, never the content.
    fn read(
        &self,
        env_key: &'static str,
        file_key: &'static str,
        env: Env<'_>,
    ) -> Result<Secret, ConfigError> {
        match self {
            SecretSource::Env(var) => from_env(env_key, var, env),
            SecretSource::File(path) => {
                let value = read_trimmed(file_key, path)?;
                if value.is_empty() {
                    return Err(invalid(file_key, format!("{} is empty", path.display())));
                }
                Ok(Secret(value))
            }
        }
    }
}

/// A secret file's content, trimmed of surrounding white space (a trailing newline, as `echo`
/// writes). The error names the file, never the content.
fn read_trimmed(
    key: &'static str,
    path: &std::path::Path,
) -> Result<Zeroizing<String>, ConfigError> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))?,
    );
    Ok(Zeroizing::new(text.trim().to_owned()))
}

impl Config {
    /// The URL to connect to the database with: the configured URL, plus the password from
    /// `database.password_env` or `password_file` when one is named.
    pub fn database_connect_url(&self, env: Env<'_>) -> Result<Secret, ConfigError> {
        let Some(source) = &self.database_password else {
            return Ok(Secret(Zeroizing::new(self.database_url.clone())));
        };
        let password = source.read("database.password_env", "database.password_file", env)?;
        zonegate_common::dburl::with_password(&self.database_url, password.expose())
            .map(|url| Secret(Zeroizing::new(url)))
            .ok_or_else(|| {
                invalid(
                    "database.url",
                    "a database password (password_env or password_file) needs a postgres:// URL with a user",
                )
            })
    }

    /// Where the shared rate limits live, when `[redis]` is configured: the client, with the
    /// password from `redis.password_env` or `password_file` and the CA from `ca_file`.
    /// Connects to nothing yet.
    pub fn shared_limits(
        &self,
        env: Env<'_>,
    ) -> Result<Option<crate::domain::ratelimit::shared::SharedConfig>, ConfigError> {
        let Some(r) = &self.redis else {
            return Ok(None);
        };
        let mut info = redis::IntoConnectionInfo::into_connection_info(r.url.as_str())
            .map_err(|e| invalid("redis.url", format!("is not a Redis URL: {e}")))?;
        if let Some(source) = &r.password {
            let password = source.read("redis.password_env", "redis.password_file", env)?;
            let settings = info
                .redis_settings()
                .clone()
                .set_password(password.expose());
            info = info.set_redis_settings(settings);
        }
        let client = match &r.ca_file {
            Some(path) => {
                let root_cert = std::fs::read(path).map_err(|e| {
                    invalid(
                        "redis.ca_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                redis::Client::build_with_tls(
                    info,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(root_cert),
                    },
                )
            }
            None => redis::Client::open(info),
        }
        .map_err(|e| invalid("redis.url", format!("cannot be used: {e}")))?;
        Ok(Some(crate::domain::ratelimit::shared::SharedConfig {
            client,
            key_prefix: r.key_prefix.clone(),
            timeout: r.timeout,
        }))
    }

    /// The SMTP password, when the relay takes a user name.
    pub fn smtp_password(&self, env: Env<'_>) -> Result<Option<Secret>, ConfigError> {
        match &self.smtp {
            Some(smtp) if smtp.username.is_some() => {
                // Parsing refused naming both, so this is the one named, if any.
                let source = SecretSource::either(
                    "mail.smtp.password_file",
                    smtp.password_env.clone(),
                    smtp.password_file.clone(),
                )?
                .ok_or_else(|| {
                    invalid(
                        "mail.smtp.password_env",
                        "mail.smtp.username is set: name the environment variable (password_env) or file (password_file) holding its password",
                    )
                })?;
                source
                    .read("mail.smtp.password_env", "mail.smtp.password_file", env)
                    .map(Some)
            }
            _ => Ok(None),
        }
    }

    /// The bearer token the admin listener requires for changes, read from
    /// `listen.admin_token_file`.
    pub fn admin_token(&self) -> Result<Option<Secret>, ConfigError> {
        let Some(path) = &self.listen.admin_token_file else {
            return Ok(None);
        };
        // A token others on the host can read is no credential: refused like a loose key.
        if let Ok(meta) = std::fs::metadata(path) {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(invalid(
                    "listen.admin_token_file",
                    format!(
                        "{} is readable or writable by group or others (mode {mode:o}); run `chmod 600 {}`",
                        path.display(),
                        path.display()
                    ),
                ));
            }
        }
        let token = read_trimmed("listen.admin_token_file", path)?;
        if token.chars().count() < MIN_ADMIN_TOKEN_CHARS
            || token.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid(
                "listen.admin_token_file",
                format!(
                    "{} must hold one token of at least {MIN_ADMIN_TOKEN_CHARS} characters without spaces \
                     (e.g. `openssl rand -hex 32`)",
                    path.display()
                ),
            ));
        }
        Ok(Some(Secret(token)))
    }
}

/// The `user:password@` of a postgres URL's authority, if it has one with a password.
pub(super) fn url_has_password(url: &str) -> bool {
    let Some((_, rest)) = split_scheme(url) else {
        return false;
    };
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let in_userinfo = authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'));
    // The driver percent-decodes query keys, so `pass%77ord` is a password too.
    let in_query = rest.split_once('?').is_some_and(|(_, query)| {
        query.split('&').any(|pair| {
            let key = pair.split('=').next().unwrap_or_default();
            percent_encoding::percent_decode_str(key)
                .decode_utf8_lossy()
                .eq_ignore_ascii_case("password")
        })
    });
    in_userinfo || in_query
}

/// Whether a `redis://` URL carries a password (`redis://:pw@host`, `redis://user:pw@host`).
pub(super) fn redis_url_has_password(url: &str) -> bool {
    let rest = url
        .strip_prefix("rediss://")
        .or_else(|| url.strip_prefix("redis://"))
        .unwrap_or(url);
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
        || rest.split_once('?').is_some_and(|(_, query)| {
            query.split('&').any(|pair| {
                let key = pair.split('=').next().unwrap_or_default();
                percent_encoding::percent_decode_str(key)
                    .decode_utf8_lossy()
                    .eq_ignore_ascii_case("password")
            })
        })
}

fn split_scheme(url: &str) -> Option<(&str, &str)> {
    ["postgres://", "postgresql://"]
        .into_iter()
        .find_map(|scheme| url.strip_prefix(scheme).map(|rest| (scheme, rest)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn passwords_in_urls_are_found_where_libpq_reads_them() {
        assert!(url_has_password("postgres://u:p@db/x"));
        assert!(url_has_password("postgresql://u:@db/x"));
        assert!(url_has_password(
            "postgres://u@db/x?sslmode=require&password=p"
        ));
        assert!(!url_has_password(
            "postgres://u@db:5432/x?sslmode=verify-full"
        ));
        assert!(!url_has_password("postgres://db/x"));
        assert!(url_has_password("postgres://u@db/x?pass%77ord=p"));
        assert!(url_has_password("postgres://u@[::1]:5432/x?PASSWORD=p"));
        assert!(url_has_password("postgres://u:p@[::1]:5432/x"));
        assert!(!url_has_password(
            "postgres://u@[::1]:5432/x?application_name=a@b"
        ));
        assert!(!url_has_password("sqlite://data/zonegate.db"));
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret(Zeroizing::new("hunter2-hunter2".into()));
        assert_eq!(format!("{s:?}"), "Secret(redacted)");
    }
}
