//! HTTP endpoints for the second factor: completing a login with a code, and enrolling,
//! confirming and disabling TOTP. Routes in the route table like every other; the pipeline
//! authorised each request before a handler runs.
//!
//! The enrolment answer is the one place a seed leaves the gateway: the user must see it once
//! to add it to an app. It is never logged and never shown again.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::auth::{issued_response, session_cookie, user_agent};
use super::{CurrentUser, Handlers, JsonBody};
use crate::domain::accounts::Accounts;
use crate::web::{cookies, Challenge, Rejection};

type Shared = State<Arc<Accounts>>;

pub fn handlers(accounts: Arc<Accounts>) -> Handlers {
    Handlers::new()
        .post("/auth/login/totp", login_totp)
        .get("/auth/mfa/totp", status)
        .post("/auth/mfa/totp/enroll", enrol)
        .post("/auth/mfa/totp/confirm", confirm)
        .post("/auth/mfa/totp/disable", disable)
        .with_state(accounts)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Code {
    code: String,
}

/// Complete a pending login. The code is passed on exactly as sent: six ASCII digits or a
/// recovery code, never normalised here.
async fn login_totp(
    State(accounts): Shared,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Code>,
) -> Result<Response, Rejection> {
    let pending = cookies::read(&headers, cookies::PENDING_MFA)
        .ok_or(Rejection::Unauthenticated(Challenge::Cookie))?;
    let previous = session_cookie(&headers);
    let issued = accounts
        .login_second_factor(pending, &body.code, previous.as_ref(), user_agent(&headers))
        .await?;
    let mut response = issued_response(&issued, accounts.now());
    if let Ok(clear) = http::HeaderValue::from_str(&cookies::pending_mfa("", 0)) {
        response
            .headers_mut()
            .append(http::header::SET_COOKIE, clear);
    }
    Ok(response)
}

async fn status(
    State(accounts): Shared,
    CurrentUser(user): CurrentUser,
) -> Result<Response, Rejection> {
    let (enabled, left) = accounts.mfa_status(&user).await?;
    Ok(Json(json!({ "totp": enabled, "recovery_codes_left": left })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reauthenticate {
    password: String,
    /// A current code or a recovery code; required when TOTP is already on.
    #[serde(default)]
    code: Option<String>,
}

async fn enrol(
    State(accounts): Shared,
    CurrentUser(user): CurrentUser,
    JsonBody(body): JsonBody<Reauthenticate>,
) -> Result<Response, Rejection> {
    let enrolment = accounts
        .mfa_enrol(&user, &body.password, body.code.as_deref())
        .await?;
    Ok((
        StatusCode::CREATED,
        [(http::header::CACHE_CONTROL, "no-store")],
        Json(json!({
            "otpauth_uri": enrolment.otpauth_uri(),
            "secret": enrolment.manual_key(),
            "qr_svg": enrolment.qr_svg(),
            "confirm_at": "/auth/mfa/totp/confirm",
        })),
    )
        .into_response())
}

async fn confirm(
    State(accounts): Shared,
    CurrentUser(user): CurrentUser,
    JsonBody(body): JsonBody<Code>,
) -> Result<Response, Rejection> {
    let codes = accounts.mfa_confirm(&user, &body.code).await?;
    Ok((
        [(http::header::CACHE_CONTROL, "no-store")],
        Json(json!({ "recovery_codes": codes.codes() })),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Disable {
    password: String,
    code: String,
}

async fn disable(
    State(accounts): Shared,
    CurrentUser(user): CurrentUser,
    JsonBody(body): JsonBody<Disable>,
) -> Result<Response, Rejection> {
    accounts
        .mfa_disable(&user, &body.password, &body.code)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
