//! HTTP endpoints for accounts (`/auth/*`). Every one is a route in the route table and reached
//! only after the pipeline authorised it; handlers translate between HTTP and [`Accounts`].
//!
//! Tokens leave only in Set-Cookie headers. Bodies never echo a password, token or cookie.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{AppendHeaders, IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::{CurrentUser, Handlers, JsonBody};
use crate::domain::accounts::second_factor::LoginOutcome;
use crate::domain::accounts::tokens::Token;
use crate::domain::accounts::{Accounts, Issued};
use crate::web::{cookies, csrf, Challenge, Rejection};

type Shared = State<Arc<Accounts>>;

pub fn handlers(accounts: Arc<Accounts>) -> Handlers {
    Handlers::new()
        .post("/auth/signup", signup)
        .post("/auth/verify-email", verify_email)
        .post("/auth/verify-email/resend", resend_verification)
        .post("/auth/login", login)
        .post("/auth/refresh", refresh)
        .post("/auth/logout", logout)
        .get("/auth/session", whoami)
        .get("/auth/sessions", list_sessions)
        .delete("/auth/sessions/{id}", end_session)
        .post("/auth/password", change_password)
        .post("/auth/password-reset", request_reset)
        .post("/auth/password-reset/confirm", confirm_reset)
        .with_state(accounts)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmailPassword {
    email: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    token: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmailBody {
    email: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetConfirm {
    token: String,
    new_password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

pub fn user_agent(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
}

pub fn session_cookie(headers: &HeaderMap) -> Option<Token> {
    cookies::read(headers, cookies::SESSION).and_then(Token::from_presented)
}

const ACCEPTED: &str = "If the address can be used, an email is on its way.";

async fn signup(
    State(accounts): Shared,
    JsonBody(body): JsonBody<EmailPassword>,
) -> Result<Response, Rejection> {
    accounts.signup_detached(&body.email, &body.password)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "status": "accepted", "detail": ACCEPTED })),
    )
        .into_response())
}

async fn verify_email(
    State(accounts): Shared,
    JsonBody(body): JsonBody<TokenBody>,
) -> Result<Response, Rejection> {
    accounts.verify_email(&body.token).await?;
    Ok(Json(json!({ "status": "verified" })).into_response())
}

async fn resend_verification(
    State(accounts): Shared,
    JsonBody(body): JsonBody<EmailBody>,
) -> Result<Response, Rejection> {
    accounts.resend_verification_detached(&body.email)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "status": "accepted", "detail": ACCEPTED })),
    )
        .into_response())
}

/// The answer to a login or refresh: the three cookies and who is logged in.
pub fn issued_response(issued: &Issued, now: i64) -> Response {
    let cookies = [
        (
            http::header::SET_COOKIE,
            cookies::session(issued.session.expose(), issued.session_expires_at - now),
        ),
        (
            http::header::SET_COOKIE,
            cookies::refresh(issued.refresh.expose(), issued.refresh_expires_at - now),
        ),
        (
            http::header::SET_COOKIE,
            cookies::csrf(&issued.csrf, issued.refresh_expires_at - now),
        ),
    ];
    let body = json!({
        "user": { "id": issued.user_id, "email": issued.email },
        "session_expires_at": issued.session_expires_at,
        "refresh_expires_at": issued.refresh_expires_at,
    });
    (AppendHeaders(cookies), Json(body)).into_response()
}

async fn login(
    State(accounts): Shared,
    headers: HeaderMap,
    JsonBody(body): JsonBody<EmailPassword>,
) -> Result<Response, Rejection> {
    let previous = session_cookie(&headers);
    let device = cookies::read(&headers, cookies::DEVICE).and_then(Token::from_presented);
    let login = accounts
        .login_from_device(
            &body.email,
            &body.password,
            previous.as_ref(),
            user_agent(&headers),
            device.as_ref(),
        )
        .await?;
    let now = accounts.now();
    let mut response = match login.outcome {
        LoginOutcome::Complete(issued) => issued_response(&issued, now),
        // The password was right and a second factor is due: no session yet, only the
        // pending-login cookie that POST /auth/login/totp accepts.
        LoginOutcome::SecondFactor { token, expires_at } => (
            StatusCode::ACCEPTED,
            [(
                http::header::SET_COOKIE,
                cookies::pending_mfa(token.expose(), expires_at - now),
            )],
            Json(json!({
                "status": "second_factor_required",
                "methods": ["totp", "recovery_code"],
                "complete_at": "/auth/login/totp",
                "expires_at": expires_at,
            })),
        )
            .into_response(),
    };
    // The browser's own allowance for its next login (accounts/lockout.rs).
    if let Ok(value) = http::HeaderValue::from_str(&cookies::device(
        login.device.expose(),
        login.device_expires_at - now,
    )) {
        response
            .headers_mut()
            .append(http::header::SET_COOKIE, value);
    }
    Ok(response)
}

async fn refresh(State(accounts): Shared, headers: HeaderMap) -> Result<Response, Rejection> {
    csrf::check_origin(
        &accounts.config().public_origin,
        &http::Method::POST,
        &headers,
        true,
    )?;
    let presented = cookies::read(&headers, cookies::REFRESH)
        .ok_or(Rejection::Unauthenticated(Challenge::Cookie))?;
    let previous = session_cookie(&headers);
    let issued = accounts
        .refresh(
            presented,
            csrf::presented(&headers),
            previous.as_ref(),
            user_agent(&headers),
        )
        .await?;
    Ok(issued_response(&issued, accounts.now()))
}

async fn logout(
    State(accounts): Shared,
    CurrentUser(user): CurrentUser,
) -> Result<Response, Rejection> {
    accounts.logout(&user).await?;
    let cleared = cookies::cleared().map(|c| (http::header::SET_COOKIE, c));
    Ok((StatusCode::NO_CONTENT, AppendHeaders(cleared)).into_response())
}

async fn whoami(CurrentUser(u): CurrentUser) -> Result<Response, Rejection> {
    Ok(Json(json!({
        "id": u.user_id,
        "email": u.email,
        "email_verified": u.email_verified,
        "factors": u.factors(),
        "session_id": u.session_id,
    }))
    .into_response())
}

async fn list_sessions(
    State(accounts): Shared,
    CurrentUser(u): CurrentUser,
) -> Result<Response, Rejection> {
    let sessions = accounts.list_sessions(&u).await?;
    let listed: Vec<_> = sessions
        .into_iter()
        .map(|s| {
            json!({
                "id": s.id,
                "created_at": s.created_at,
                "expires_at": s.expires_at,
                "user_agent": s.user_agent,
                "current": s.id == u.session_id,
            })
        })
        .collect();
    Ok(Json(json!({ "sessions": listed })).into_response())
}

async fn end_session(
    State(accounts): Shared,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
) -> Result<Response, Rejection> {
    accounts.end_session(&user, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn change_password(
    State(accounts): Shared,
    CurrentUser(user): CurrentUser,
    JsonBody(body): JsonBody<PasswordChange>,
) -> Result<Response, Rejection> {
    accounts
        .change_password(&user, &body.current_password, &body.new_password)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn request_reset(
    State(accounts): Shared,
    JsonBody(body): JsonBody<EmailBody>,
) -> Result<Response, Rejection> {
    accounts.request_password_reset_detached(&body.email)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "status": "accepted", "detail": ACCEPTED })),
    )
        .into_response())
}

async fn confirm_reset(
    State(accounts): Shared,
    JsonBody(body): JsonBody<ResetConfirm>,
) -> Result<Response, Rejection> {
    accounts
        .confirm_password_reset(&body.token, &body.new_password)
        .await?;
    let cleared = cookies::cleared().map(|c| (http::header::SET_COOKIE, c));
    Ok((StatusCode::NO_CONTENT, AppendHeaders(cleared)).into_response())
}
