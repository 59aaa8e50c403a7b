//! Every way the gateway refuses a request, and the one place that turns a refusal into HTTP.
//!
//! Stages of the pipeline, the API's handlers and the admin listener return a [`Rejection`];
//! domain errors become one here ([`From`] impls below), refusals pingora makes are mapped to
//! one by the pipeline; nothing else in the gateway chooses an error status or writes an error
//! body. Bodies are RFC 9457 `application/problem+json` ([`zonegate_common::Problem`]) and carry
//! only fixed text: never a header value, a path, a credential or an internal error message, so
//! a client learns what class of thing went wrong and nothing that helps an attacker. Internal
//! detail goes to the log, here, as the error is mapped.
//!
//! Writers (the pipeline's respond stage, the admin listener) add the security headers that
//! every response carries ([`super::security`]).

use bytes::Bytes;
use http::HeaderValue;
pub use zonegate_common::{Problem, PROBLEM_JSON};

use crate::domain::accounts::AccountError;
use crate::domain::apikeys::KeyError;
use crate::domain::audit::AuditError;
use crate::domain::mfa::MfaError;
use crate::domain::operators::OperatorError;
use crate::domain::orgs::OrgError;
use crate::domain::ratelimit::Limited;

/// A refusal decided by one stage of the request pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Ambiguous message framing (Content-Length with Transfer-Encoding, repeated or conflicting
    /// lengths): the connection is closed after the answer so nothing smuggled behind it runs.
    AmbiguousFraming,
    /// A request target that could route differently after decoding (dot segments, encoded
    /// slashes, backslashes, NUL, ...). We refuse rather than guess.
    AmbiguousPath,
    /// A request the gateway cannot parse into something meaningful.
    BadRequest(&'static str),
    /// No route matches the path.
    NotFound,
    /// A route matches the path but not the method.
    MethodNotAllowed { allow: String },
    /// The request's body stopped arriving: a read of it waited the body read timeout. What
    /// came of the body is unknown, so the connection is closed after the answer.
    RequestTimeout,
    /// Missing or invalid credentials. One fixed message whatever was wrong; the challenge
    /// names the credentials that would do (`WWW-Authenticate`).
    Unauthenticated(Challenge),
    /// The policy decision was deny (or evaluation failed, which also denies).
    Forbidden,
    /// The request body is larger than the route accepts.
    PayloadTooLarge,
    /// The request head is over the size or field-count limit.
    HeaderFieldsTooLarge,
    /// The body is not `application/json` where JSON is required.
    UnsupportedMediaType,
    /// Well-formed input that breaks a rule; the text is a fixed, safe message.
    Unprocessable(&'static str),
    /// The account exists and the password is right, but the email is not verified yet.
    EmailNotVerified,
    /// The current password given to confirm a change is wrong.
    WrongPassword,
    /// A verification or reset token that is unknown, spent or expired.
    InvalidToken,
    /// A second-factor code that is wrong, replayed, malformed or over its attempts.
    InvalidCode,
    /// A cookie-authenticated unsafe request without a matching CSRF token and Origin.
    CsrfRejected,
    /// The change would break an invariant (an org must keep an owner).
    Conflict(&'static str),
    /// A rate limit refused the request; carries the policy and the wait for the
    /// `Retry-After`, `RateLimit-Policy` and `RateLimit` headers.
    TooManyRequests(Limited),
    /// Too many consecutive failed logins for this account: the next attempt must wait.
    /// Answered before the password is checked, so waiting cannot be skipped by guessing.
    LoginDelayed { retry_after_secs: u64 },
    /// Password login is blocked after too many consecutive failures until the owner resets
    /// the password through the emailed link.
    AccountLocked,
    /// A policy set offered for reload failed validation; the previous set stays in force.
    /// The reasons go to the operator's log, not into the body.
    InvalidPolicySet,
    /// The certificate files did not load; the served certificate stays.
    InvalidCertificate,
    /// Too much password work is queued (a login storm): retry shortly.
    Busy,
    /// The upstream could not be reached or broke the exchange.
    BadGateway,
    /// The upstream did not answer in time.
    GatewayTimeout,
    /// A service the gateway depends on (its database) is not answering: retry shortly.
    /// Nothing was decided or changed.
    Unavailable,
    /// A fault inside the gateway; details go to the log, never to the client.
    Internal,
}

/// The credentials a 401 asks for, in its `WWW-Authenticate` header (RFC 9110 §11.6.1): an
/// API key as a bearer token (RFC 6750), a dashboard session cookie, or either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    Bearer,
    Cookie,
    Either,
}

impl Challenge {
    pub fn header_value(self) -> &'static str {
        match self {
            Challenge::Bearer => r#"Bearer realm="zonegate""#,
            Challenge::Cookie => r#"Cookie realm="zonegate""#,
            Challenge::Either => r#"Bearer realm="zonegate", Cookie realm="zonegate""#,
        }
    }
}

impl Rejection {
    /// The HTTP status this refusal is answered with.
    pub fn status(&self) -> u16 {
        match self {
            Rejection::AmbiguousFraming
            | Rejection::AmbiguousPath
            | Rejection::BadRequest(_)
            | Rejection::InvalidToken => 400,
            Rejection::Unauthenticated(_) | Rejection::InvalidCode => 401,
            Rejection::TooManyRequests(_) | Rejection::LoginDelayed { .. } => 429,
            Rejection::Forbidden
            | Rejection::AccountLocked
            | Rejection::EmailNotVerified
            | Rejection::WrongPassword
            | Rejection::CsrfRejected => 403,
            Rejection::Conflict(_) => 409,
            Rejection::UnsupportedMediaType => 415,
            Rejection::Unprocessable(_)
            | Rejection::InvalidPolicySet
            | Rejection::InvalidCertificate => 422,
            Rejection::NotFound => 404,
            Rejection::MethodNotAllowed { .. } => 405,
            Rejection::RequestTimeout => 408,
            Rejection::PayloadTooLarge => 413,
            Rejection::HeaderFieldsTooLarge => 431,
            Rejection::Internal => 500,
            Rejection::Busy | Rejection::Unavailable => 503,
            Rejection::BadGateway => 502,
            Rejection::GatewayTimeout => 504,
        }
    }

    /// Whether the connection must be closed after the answer: where the request ends is no
    /// longer known, so no further request may be read from it (what still arrives is read
    /// and dropped, never parsed).
    pub fn closes_connection(&self) -> bool {
        // Ambiguous framing; a head refused unread, its body (if any) still on the connection;
        // a body that stopped partway.
        matches!(
            self,
            Rejection::AmbiguousFraming
                | Rejection::HeaderFieldsTooLarge
                | Rejection::RequestTimeout
        )
    }

    /// A short, stable name for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::AmbiguousFraming => "ambiguous_framing",
            Rejection::AmbiguousPath => "ambiguous_path",
            Rejection::BadRequest(_) => "bad_request",
            Rejection::NotFound => "not_found",
            Rejection::MethodNotAllowed { .. } => "method_not_allowed",
            Rejection::RequestTimeout => "request_timeout",
            Rejection::Unauthenticated(_) => "unauthenticated",
            Rejection::Forbidden => "forbidden",
            Rejection::PayloadTooLarge => "payload_too_large",
            Rejection::HeaderFieldsTooLarge => "header_fields_too_large",
            Rejection::UnsupportedMediaType => "unsupported_media_type",
            Rejection::Unprocessable(_) => "unprocessable",
            Rejection::InvalidPolicySet => "invalid_policy_set",
            Rejection::InvalidCertificate => "invalid_certificate",
            Rejection::EmailNotVerified => "email_not_verified",
            Rejection::WrongPassword => "wrong_password",
            Rejection::InvalidToken => "invalid_token",
            Rejection::InvalidCode => "invalid_code",
            Rejection::CsrfRejected => "csrf_rejected",
            Rejection::Conflict(_) => "conflict",
            Rejection::TooManyRequests(_) => "rate_limited",
            Rejection::LoginDelayed { .. } => "login_delayed",
            Rejection::AccountLocked => "account_locked",
            Rejection::Busy => "busy",
            Rejection::BadGateway => "bad_gateway",
            Rejection::GatewayTimeout => "gateway_timeout",
            Rejection::Unavailable => "unavailable",
            Rejection::Internal => "internal",
        }
    }

    /// The problem body. Every string is a constant: no request data can reach it.
    pub fn problem(&self) -> Problem {
        let (kind, title, detail) = match self {
            Rejection::AmbiguousFraming => (
                "urn:zonegate:problem:ambiguous-framing",
                "Ambiguous request framing",
                "The request carries conflicting or repeated Content-Length/Transfer-Encoding headers.",
            ),
            Rejection::AmbiguousPath => (
                "urn:zonegate:problem:ambiguous-path",
                "Ambiguous request path",
                "The path contains dot segments, encoded separators or other forms that are refused.",
            ),
            Rejection::BadRequest(detail) => {
                ("urn:zonegate:problem:bad-request", "Bad request", *detail)
            }
            Rejection::NotFound => (
                "urn:zonegate:problem:not-found",
                "Not found",
                "No route matches this path.",
            ),
            Rejection::MethodNotAllowed { .. } => (
                "urn:zonegate:problem:method-not-allowed",
                "Method not allowed",
                "This path does not accept this method; see the Allow header.",
            ),
            Rejection::RequestTimeout => (
                "urn:zonegate:problem:request-timeout",
                "Request timeout",
                "The request body stopped arriving before its end. Send the request again.",
            ),
            Rejection::Unauthenticated(_) => (
                "urn:zonegate:problem:unauthenticated",
                "Authentication required",
                "Missing or invalid credentials.",
            ),
            Rejection::Forbidden => (
                "urn:zonegate:problem:forbidden",
                "Forbidden",
                "The access policy does not allow this request.",
            ),
            Rejection::HeaderFieldsTooLarge => (
                "urn:zonegate:problem:header-fields-too-large",
                "Request header fields too large",
                "The request head has too many or too large header fields.",
            ),
            Rejection::PayloadTooLarge => (
                "urn:zonegate:problem:payload-too-large",
                "Payload too large",
                "The request body exceeds the limit for this route.",
            ),
            Rejection::UnsupportedMediaType => (
                "urn:zonegate:problem:unsupported-media-type",
                "Unsupported media type",
                "Send the body as application/json.",
            ),
            Rejection::Unprocessable(detail) => (
                "urn:zonegate:problem:invalid-input",
                "Invalid input",
                *detail,
            ),
            Rejection::EmailNotVerified => (
                "urn:zonegate:problem:email-not-verified",
                "Email not verified",
                "Verify your email address with the link we sent before logging in.",
            ),
            Rejection::WrongPassword => (
                "urn:zonegate:problem:wrong-password",
                "Current password is wrong",
                "The current password does not match.",
            ),
            Rejection::InvalidToken => (
                "urn:zonegate:problem:invalid-token",
                "Invalid or expired link",
                "The link is invalid, already used or expired. Ask for a new one.",
            ),
            Rejection::InvalidCode => (
                "urn:zonegate:problem:invalid-code",
                "Invalid code",
                "The code is wrong, already used or expired. Codes are six digits from your authenticator app, or a recovery code.",
            ),
            Rejection::CsrfRejected => (
                "urn:zonegate:problem:csrf",
                "Cross-site request refused",
                "Send the X-CSRF-Token header from the csrf cookie, from the configured origin.",
            ),
            Rejection::Conflict(detail) => ("urn:zonegate:problem:conflict", "Conflict", *detail),
            Rejection::TooManyRequests(_) => (
                "urn:zonegate:problem:rate-limited",
                "Too many requests",
                "Slow down: retry after the number of seconds in the Retry-After header.",
            ),
            Rejection::LoginDelayed { .. } => (
                "urn:zonegate:problem:login-delayed",
                "Too many failed logins",
                "Too many failed logins for this account: retry after the number of seconds in the Retry-After header.",
            ),
            Rejection::Busy => (
                "urn:zonegate:problem:busy",
                "Busy",
                "Too many password checks are waiting: retry after the number of seconds in the Retry-After header.",
            ),
            Rejection::AccountLocked => (
                "urn:zonegate:problem:account-locked",
                "Password login blocked",
                "Password login is blocked after too many failed attempts. Reset the password with the emailed link to unblock it.",
            ),
            Rejection::InvalidPolicySet => (
                "urn:zonegate:problem:invalid-policy-set",
                "Invalid policy set",
                "The policy set was refused; the previous set stays in force. The gateway's log names the errors.",
            ),
            Rejection::InvalidCertificate => (
                "urn:zonegate:problem:invalid-certificate",
                "Invalid certificate",
                "The certificate files were refused; the served certificate stays in use. The gateway's log names the error.",
            ),
            Rejection::BadGateway => (
                "urn:zonegate:problem:bad-gateway",
                "Bad gateway",
                "The service behind the gateway is unavailable.",
            ),
            Rejection::GatewayTimeout => (
                "urn:zonegate:problem:gateway-timeout",
                "Gateway timeout",
                "The service behind the gateway did not answer in time.",
            ),
            Rejection::Unavailable => (
                "urn:zonegate:problem:unavailable",
                "Service unavailable",
                "A service the gateway depends on is not answering; nothing was changed. Retry after the number of seconds in the Retry-After header.",
            ),
            Rejection::Internal => (
                "urn:zonegate:problem:internal",
                "Internal error",
                "The gateway could not complete the request.",
            ),
        };
        Problem {
            kind,
            title,
            status: self.status(),
            detail,
        }
    }

    /// Extra response headers this refusal carries (429s say when to come back).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            Rejection::MethodNotAllowed { allow } => vec![("allow", allow.clone())],
            Rejection::Unauthenticated(challenge) => {
                vec![("www-authenticate", challenge.header_value().to_owned())]
            }
            // A wrong second-factor code: the pending login (a cookie) is what to try again.
            Rejection::InvalidCode => vec![(
                "www-authenticate",
                Challenge::Cookie.header_value().to_owned(),
            )],
            Rejection::TooManyRequests(limited) => {
                let reset = limited.retry_after_secs();
                vec![
                    ("retry-after", reset.to_string()),
                    ("ratelimit-policy", limited.policy.header_value()),
                    (
                        "ratelimit",
                        format!(
                            "limit={}, remaining=0, reset={reset}",
                            limited.policy.limit()
                        ),
                    ),
                ]
            }
            Rejection::LoginDelayed { retry_after_secs } => {
                vec![("retry-after", (*retry_after_secs).max(1).to_string())]
            }
            Rejection::Busy => vec![("retry-after", "2".to_owned())],
            Rejection::Unavailable => vec![("retry-after", "5".to_owned())],
            _ => Vec::new(),
        }
    }

    /// The serialised problem body.
    pub fn body(&self) -> Vec<u8> {
        self.problem().to_json()
    }

    /// The response for this refusal: problem+json, plus `Allow` for 405, the rate-limit
    /// headers for 429, and `Connection: close` when framing can no longer be trusted. The
    /// writer adds the security headers.
    pub fn response(&self) -> http::Response<Bytes> {
        let mut response = http::Response::new(Bytes::from(self.body()));
        *response.status_mut() = http::StatusCode::from_u16(self.status())
            .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(PROBLEM_JSON),
        );
        for (name, value) in self.headers() {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
        if self.closes_connection() {
            headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// Left in a response's extensions by a refusal from the gateway's own API, so the pipeline
/// can log and count it like a refusal of its own stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused(pub &'static str);

impl axum::response::IntoResponse for Rejection {
    fn into_response(self) -> axum::response::Response {
        let mut response = self.response().map(axum::body::Body::from);
        response.extensions_mut().insert(Refused(self.code()));
        response
    }
}

/// A storage error: the database out of reach is 503 `unavailable` (retry shortly); anything
/// else is an internal fault. The detail goes to the log only.
pub fn storage(err: &sqlx::Error) -> Rejection {
    if crate::domain::storage::is_unavailable(err) {
        tracing::warn!(event = "storage_unavailable", error = %err);
        Rejection::Unavailable
    } else {
        internal("storage", err)
    }
}

/// A storage or other internal fault: the detail goes to the log, the client gets a fixed 500.
fn internal(what: &'static str, error: &dyn std::fmt::Display) -> Rejection {
    tracing::error!(event = "internal_error", what, error = %error);
    Rejection::Internal
}

impl From<AccountError> for Rejection {
    fn from(e: AccountError) -> Rejection {
        match e {
            AccountError::InvalidEmail => {
                Rejection::Unprocessable("The email address is not valid.")
            }
            AccountError::WeakPassword(p) => Rejection::Unprocessable(p.message()),
            AccountError::InvalidCredentials => Rejection::Unauthenticated(Challenge::Cookie),
            AccountError::WrongPassword => Rejection::WrongPassword,
            AccountError::EmailNotVerified => Rejection::EmailNotVerified,
            AccountError::InvalidToken => Rejection::InvalidToken,
            AccountError::NotFound => Rejection::NotFound,
            AccountError::Csrf => Rejection::CsrfRejected,
            AccountError::InvalidCode => Rejection::InvalidCode,
            AccountError::MfaNotEnabled => {
                Rejection::Conflict("Two-factor authentication is not enabled on this account.")
            }
            AccountError::NoPendingEnrolment => {
                Rejection::Conflict("Start an enrolment before confirming it.")
            }
            AccountError::LoginDelayed(secs) => Rejection::LoginDelayed {
                retry_after_secs: secs,
            },
            AccountError::LoginBlocked => Rejection::AccountLocked,
            AccountError::Busy => Rejection::Busy,
            AccountError::Storage(err) => storage(&err),
            AccountError::Internal(what) => internal(what, &"account service"),
        }
    }
}

impl From<OperatorError> for Rejection {
    fn from(e: OperatorError) -> Rejection {
        match e {
            OperatorError::InvalidEmail => {
                Rejection::Unprocessable("The email address is not valid.")
            }
            OperatorError::WeakPassword(p) => Rejection::Unprocessable(p.message()),
            OperatorError::InvalidCredentials => Rejection::Unauthenticated(Challenge::Cookie),
            OperatorError::LoginDelayed(secs) => Rejection::LoginDelayed {
                retry_after_secs: secs,
            },
            OperatorError::NotFound => Rejection::NotFound,
            OperatorError::Exists => Rejection::Conflict("An operator with this email exists."),
            OperatorError::Busy => Rejection::Busy,
            OperatorError::Storage(err) => storage(&err),
            OperatorError::Internal(what) => internal(what, &"operator service"),
        }
    }
}

impl From<MfaError> for Rejection {
    fn from(e: MfaError) -> Rejection {
        Rejection::from(AccountError::from(e))
    }
}

impl From<OrgError> for Rejection {
    fn from(e: OrgError) -> Rejection {
        match e {
            OrgError::InvalidName => Rejection::Unprocessable(
                "The org name must be 1 to 100 characters, without control characters.",
            ),
            OrgError::InvalidEmail => Rejection::Unprocessable("The email address is not valid."),
            OrgError::NotFound => Rejection::NotFound,
            OrgError::LastOwner => Rejection::Conflict("An org must keep at least one owner."),
            OrgError::InvalidInvitation => Rejection::InvalidToken,
            OrgError::Storage(err) => storage(&err),
        }
    }
}

impl From<KeyError> for Rejection {
    fn from(e: KeyError) -> Rejection {
        match e {
            KeyError::Invalid(msg) => Rejection::Unprocessable(msg),
            KeyError::NotFound => Rejection::NotFound,
            KeyError::Storage(err) => storage(&err),
        }
    }
}

impl From<AuditError> for Rejection {
    fn from(e: AuditError) -> Rejection {
        internal("audit", &e)
    }
}

/// One refusal of each kind, for tests that must cover them all.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn every_kind() -> Vec<Rejection> {
    vec![
        Rejection::AmbiguousFraming,
        Rejection::AmbiguousPath,
        Rejection::BadRequest("x"),
        Rejection::NotFound,
        Rejection::MethodNotAllowed {
            allow: "GET".into(),
        },
        Rejection::RequestTimeout,
        Rejection::Unauthenticated(Challenge::Either),
        Rejection::Forbidden,
        Rejection::PayloadTooLarge,
        Rejection::HeaderFieldsTooLarge,
        Rejection::UnsupportedMediaType,
        Rejection::Unprocessable("x"),
        Rejection::EmailNotVerified,
        Rejection::WrongPassword,
        Rejection::InvalidToken,
        Rejection::InvalidCode,
        Rejection::CsrfRejected,
        Rejection::Conflict("x"),
        Rejection::TooManyRequests(crate::domain::ratelimit::Limited {
            retry_after: std::time::Duration::from_secs(3),
            policy: crate::domain::ratelimit::RatePolicy::new(5, 60).unwrap(),
            overflow: false,
        }),
        Rejection::LoginDelayed {
            retry_after_secs: 4,
        },
        Rejection::AccountLocked,
        Rejection::Busy,
        Rejection::InvalidPolicySet,
        Rejection::InvalidCertificate,
        Rejection::BadGateway,
        Rejection::GatewayTimeout,
        Rejection::Unavailable,
        Rejection::Internal,
    ]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_rejection_is_a_client_or_gateway_status_with_a_typed_body() {
        let all = every_kind();
        for r in all {
            let v: serde_json::Value = serde_json::from_slice(&r.body()).unwrap_or_default();
            assert_eq!(v["status"], r.status(), "{r:?}");
            assert!(v["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("urn:zonegate:problem:")));
            assert!((400..600).contains(&r.status()));
            // RFC 9110 §15.5.2: every 401 names a scheme to authenticate with.
            if r.status() == 401 {
                assert!(
                    r.response().headers().contains_key("www-authenticate"),
                    "{r:?}"
                );
            }
        }
    }

    #[test]
    fn too_many_requests_carries_the_rate_limit_headers() {
        let policy = crate::domain::ratelimit::RatePolicy::new(5, 60).unwrap();
        let r = Rejection::TooManyRequests(crate::domain::ratelimit::Limited {
            retry_after: std::time::Duration::from_millis(11_500),
            policy,
            overflow: false,
        });
        assert_eq!(r.status(), 429);
        let h = r.headers();
        assert!(h.contains(&("retry-after", "12".to_owned())));
        assert!(h.contains(&("ratelimit-policy", "5;w=60".to_owned())));
        assert!(h.contains(&("ratelimit", "limit=5, remaining=0, reset=12".to_owned())));
        let d = Rejection::LoginDelayed {
            retry_after_secs: 0,
        };
        assert_eq!(d.status(), 429);
        assert_eq!(d.headers(), vec![("retry-after", "1".to_owned())]);
    }

    #[test]
    fn only_refusals_that_leave_the_framing_unknown_close_the_connection() {
        let closing: Vec<&str> = every_kind()
            .iter()
            .filter(|r| r.closes_connection())
            .map(Rejection::code)
            .collect();
        assert_eq!(
            closing,
            [
                "ambiguous_framing",
                "request_timeout",
                "header_fields_too_large"
            ]
        );
    }
}
