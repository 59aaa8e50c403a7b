//! Database URLs and their passwords: both binaries take a PostgreSQL URL without a password
//! (it is shown in process lists, configs and logs) and the password apart, from the
//! environment or a file, and join the two only to connect.

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

/// `url` (`postgres://user@host/db?...`) with `password` added to its user, percent-encoded.
/// `None` when the URL is not PostgreSQL's, has no user, or already has a password.
pub fn with_password(url: &str, password: &str) -> Option<String> {
    let (scheme, rest) = ["postgres://", "postgresql://"]
        .into_iter()
        .find_map(|scheme| url.strip_prefix(scheme).map(|rest| (scheme, rest)))?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (user, host) = rest[..end].rsplit_once('@')?;
    if user.is_empty() || user.contains(':') {
        return None;
    }
    let encoded = utf8_percent_encode(password, NON_ALPHANUMERIC);
    Some(format!("{scheme}{user}:{encoded}@{host}{}", &rest[end..]))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_password_joins_the_user_encoded() {
        assert_eq!(
            with_password("postgres://z@db:5432/z?sslmode=verify-full", "p@ss/w:rd").unwrap(),
            "postgres://z:p%40ss%2Fw%3Ard@db:5432/z?sslmode=verify-full"
        );
        assert_eq!(
            with_password("postgresql://z@db", "x").unwrap(),
            "postgresql://z:x@db"
        );
        assert_eq!(with_password("postgres://db/z", "x"), None, "no user");
        assert_eq!(with_password("postgres://z:y@db/z", "x"), None, "has one");
        assert_eq!(with_password("sqlite://z.db", "x"), None);
    }
}
