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
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::accounts::Accounts;
use crate::api::Caller;
use crate::auth_api::{issued_response, session_cookie, user, user_agent, JsonBody};
use crate::cookies;
use crate::error::Rejection;

type Shared = State<Arc<Accounts>>;

pub fn routes() -> Router<Arc<Accounts>> {
    Router::new()
        .route("/auth/login/totp", post(login_totp))
        .route("/auth/mfa/totp", get(status))
        .route("/auth/mfa/totp/enroll", post(enrol))
        .route("/auth/mfa/totp/confirm", post(confirm))
        .route("/auth/mfa/totp/disable", post(disable))
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
    let pending =
        cookies::read(&headers, cookies::PENDING_MFA).ok_or(Rejection::Unauthenticated)?;
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
    Extension(caller): Extension<Caller>,
) -> Result<Response, Rejection> {
    let (enabled, left) = accounts.mfa_status(user(&caller)?).await?;
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
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<Reauthenticate>,
) -> Result<Response, Rejection> {
    let enrolment = accounts
        .mfa_enrol(user(&caller)?, &body.password, body.code.as_deref())
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
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<Code>,
) -> Result<Response, Rejection> {
    let codes = accounts.mfa_confirm(user(&caller)?, &body.code).await?;
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
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<Disable>,
) -> Result<Response, Rejection> {
    accounts
        .mfa_disable(user(&caller)?, &body.password, &body.code)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
