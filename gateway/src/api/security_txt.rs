//! `/.well-known/security.txt` (RFC 9116): where researchers report a vulnerability. Built
//! from `[security_txt]` in the config once at start; without that section the path is 404.
//!
//! The file has exactly one `Expires`, which must lie in the future: the gateway refuses to
//! start with one in the past and warns (in `check-config` and the log) 30 days before.

use std::sync::Arc;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::web::Rejection;

/// The fields of the file, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityTxt {
    /// `mailto:`, `https://` or `tel:` URIs, most preferred first.
    pub contact: Vec<String>,
    pub expires: OffsetDateTime,
    pub encryption: Option<String>,
    pub policy: Option<String>,
    pub preferred_languages: Vec<String>,
    /// The file's own URL, on the public origin.
    pub canonical: String,
}

/// What the expiry is, seen from a moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expiry {
    Fine,
    /// Within 30 days: renew it.
    Soon {
        days: i64,
    },
    Past,
}

const WARN_DAYS: i64 = 30;

impl SecurityTxt {
    /// The file, in the field order of RFC 9116's examples, CRLF-free (LF lines are allowed).
    pub fn render(&self) -> String {
        let mut out = String::new();
        for contact in &self.contact {
            out.push_str(&format!("Contact: {contact}\n"));
        }
        let expires = self
            .expires
            .to_offset(time::UtcOffset::UTC)
            .format(&Rfc3339)
            .unwrap_or_default();
        out.push_str(&format!("Expires: {expires}\n"));
        if let Some(encryption) = &self.encryption {
            out.push_str(&format!("Encryption: {encryption}\n"));
        }
        if let Some(policy) = &self.policy {
            out.push_str(&format!("Policy: {policy}\n"));
        }
        if !self.preferred_languages.is_empty() {
            out.push_str(&format!(
                "Preferred-Languages: {}\n",
                self.preferred_languages.join(", ")
            ));
        }
        out.push_str(&format!("Canonical: {}\n", self.canonical));
        out
    }

    pub fn expiry(&self, now_unix: i64) -> Expiry {
        let left = self.expires.unix_timestamp() - now_unix;
        if left <= 0 {
            Expiry::Past
        } else if left < WARN_DAYS * 86_400 {
            Expiry::Soon {
                days: left / 86_400,
            }
        } else {
            Expiry::Fine
        }
    }
}

/// `GET /.well-known/security.txt`
pub fn answer(text: Option<Arc<str>>) -> Response {
    match text {
        Some(text) => (
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "public, max-age=86400"),
            ],
            text.to_string(),
        )
            .into_response(),
        None => Rejection::NotFound.into_response(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn example() -> SecurityTxt {
        SecurityTxt {
            contact: vec![
                "mailto:security@zones.example.com".into(),
                "https://zones.example.com/security".into(),
            ],
            expires: OffsetDateTime::parse("2027-06-01T00:00:00+02:00", &Rfc3339).unwrap(),
            encryption: None,
            policy: Some("https://zones.example.com/security-policy".into()),
            preferred_languages: vec!["en".into(), "de".into()],
            canonical: "https://zones.example.com/.well-known/security.txt".into(),
        }
    }

    #[test]
    fn renders_each_field_once_with_expires_in_utc() {
        assert_eq!(
            example().render(),
            "Contact: mailto:security@zones.example.com\n\
             Contact: https://zones.example.com/security\n\
             Expires: 2027-05-31T22:00:00Z\n\
             Policy: https://zones.example.com/security-policy\n\
             Preferred-Languages: en, de\n\
             Canonical: https://zones.example.com/.well-known/security.txt\n"
        );
    }

    #[test]
    fn expiry_warns_thirty_days_ahead() {
        let t = example();
        let at = t.expires.unix_timestamp();
        assert_eq!(t.expiry(at - 31 * 86_400), Expiry::Fine);
        assert_eq!(t.expiry(at - 29 * 86_400 - 1), Expiry::Soon { days: 29 });
        assert_eq!(t.expiry(at), Expiry::Past);
        assert_eq!(t.expiry(at + 1), Expiry::Past);
    }
}
