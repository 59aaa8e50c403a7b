//! The gateway's cookies: names, attributes, and reading them from requests.
//!
//! - session: `__Host-zonegate-session`, Secure, HttpOnly, SameSite=Lax, Path=/, no Domain.
//! - refresh: `__Secure-zonegate-refresh`, Secure, HttpOnly, SameSite=Strict, Path=/auth/refresh,
//!   so browsers send it to the refresh endpoint only.
//! - csrf: `__Host-zonegate-csrf`, Secure, SameSite=Strict, Path=/, readable by the page, which
//!   echoes it in `X-CSRF-Token` (double submit; the value is a MAC of the login, see accounts).
//!
//! - pending MFA: `__Host-zonegate-mfa`, Secure, HttpOnly, SameSite=Strict, Path=/, five minutes:
//!   the password step passed and the second factor is due; it is not a session.
//!
//! - device: `__Host-zonegate-device`, Secure, HttpOnly, SameSite=Strict, Path=/, a year: this
//!   browser logged in to the account before, so its logins get their own failed-login
//!   allowance (accounts/lockout.rs). Not a credential: it never authenticates anything, and
//!   logging out keeps it.
//!
//! Values are set only through Set-Cookie, never in a body or URL.

use cookie::{Cookie, SameSite};
use http::HeaderMap;

pub const SESSION: &str = "__Host-zonegate-session";
pub const REFRESH: &str = "__Secure-zonegate-refresh";
pub const CSRF: &str = "__Host-zonegate-csrf";
pub const REFRESH_PATH: &str = "/auth/refresh";
/// The pending-login cookie between the password and the second factor. Not a session: only
/// `POST /auth/login/totp` reads it.
pub const PENDING_MFA: &str = "__Host-zonegate-mfa";
/// The device cookie: the browser's own failed-login allowance for an account it logged in to.
pub const DEVICE: &str = "__Host-zonegate-device";
/// A platform operator's session (platform listener only). Its own name, so a customer
/// session is never mistaken for one, and the reverse.
pub const PLATFORM: &str = "__Host-zonegate-platform";
/// The platform session's CSRF token, readable by the operator's page script.
pub const PLATFORM_CSRF: &str = "__Host-zonegate-platform-csrf";

/// The value of the named cookie, if the request carries exactly one. Parsed by the `cookie`
/// crate (RFC 6265 pairs separated by `;`); values are not percent-decoded, since ours never
/// need it.
pub fn read<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let mut found = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .filter(|c| c.name() == name)
        .filter_map(|c| c.value_raw());
    let first = found.next()?;
    // Two cookies of one name (say one planted for a parent domain) is ambiguous: use neither.
    found.next().is_none().then_some(first)
}

fn build(
    name: &str,
    value: &str,
    path: &str,
    http_only: bool,
    same_site: SameSite,
    max_age: i64,
) -> String {
    Cookie::build((name, value))
        .path(path)
        .secure(true)
        .http_only(http_only)
        .same_site(same_site)
        .max_age(cookie::time::Duration::seconds(max_age.max(0)))
        .build()
        .to_string()
}

pub fn pending_mfa(value: &str, max_age: i64) -> String {
    build(PENDING_MFA, value, "/", true, SameSite::Strict, max_age)
}

pub fn device(value: &str, max_age: i64) -> String {
    build(DEVICE, value, "/", true, SameSite::Strict, max_age)
}

pub fn session(value: &str, max_age: i64) -> String {
    build(SESSION, value, "/", true, SameSite::Lax, max_age)
}

pub fn refresh(value: &str, max_age: i64) -> String {
    build(
        REFRESH,
        value,
        REFRESH_PATH,
        true,
        SameSite::Strict,
        max_age,
    )
}

pub fn csrf(value: &str, max_age: i64) -> String {
    build(CSRF, value, "/", false, SameSite::Strict, max_age)
}

/// Set-Cookie values that delete all three cookies.
/// The platform session cookie: `SameSite=Strict`, as nothing links into the platform surface.
pub fn platform(value: &str, max_age: i64) -> String {
    build(PLATFORM, value, "/", true, SameSite::Strict, max_age)
}

pub fn platform_csrf(value: &str, max_age: i64) -> String {
    build(PLATFORM_CSRF, value, "/", false, SameSite::Strict, max_age)
}

pub fn platform_cleared() -> [String; 2] {
    [platform("", 0), platform_csrf("", 0)]
}

pub fn cleared() -> [String; 3] {
    [session("", 0), refresh("", 0), csrf("", 0)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_exact() {
        assert_eq!(
            session("abc", 900),
            "__Host-zonegate-session=abc; HttpOnly; SameSite=Lax; Secure; Path=/; Max-Age=900"
        );
        assert_eq!(
            refresh("def", 60),
            "__Secure-zonegate-refresh=def; HttpOnly; SameSite=Strict; Secure; Path=/auth/refresh; Max-Age=60"
        );
        assert_eq!(
            csrf("x", 60),
            "__Host-zonegate-csrf=x; SameSite=Strict; Secure; Path=/; Max-Age=60"
        );
    }

    #[test]
    fn duplicate_cookies_are_ignored() {
        let mut h = HeaderMap::new();
        h.append(
            http::header::COOKIE,
            "a=1; __Host-zonegate-session=s1"
                .parse()
                .unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(read(&h, SESSION), Some("s1"));
        h.append(
            http::header::COOKIE,
            "__Host-zonegate-session=s2"
                .parse()
                .unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(read(&h, SESSION), None);
    }
}
