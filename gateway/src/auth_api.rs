//! HTTP endpoints for accounts (`/auth/*`). Every one is a route in the route table and reached
//! only after the pipeline authorised it; handlers translate between HTTP and [`Accounts`].
//!
//! Tokens leave only in Set-Cookie headers. Bodies never echo a password, token or cookie.

use std::sync::Arc;

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{AppendHeaders, IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use crate::accounts::second_factor::LoginOutcome;
use crate::accounts::tokens::Token;
use crate::accounts::{Accounts, Issued};
use crate::api::Caller;
use crate::authn;
use crate::cookies;
use crate::error::Rejection;
use crate::principal::{Principal, UserPrincipal};

type Shared = State<Arc<Accounts>>;

pub fn router(accounts: Arc<Accounts>) -> Router {
    Router::new()
        .route("/auth/signup", post(signup))
        .route("/auth/verify-email", post(verify_email))
        .route("/auth/verify-email/resend", post(resend_verification))
        .route("/auth/login", post(login))
        .route("/auth/refresh", post(refresh))
        .route("/auth/logout", post(logout))
        .route("/auth/session", get(whoami))
        .route("/auth/sessions", get(list_sessions))
        .route("/auth/sessions/{id}", delete(end_session))
        .route("/auth/password", post(change_password))
        .route("/auth/password-reset", post(request_reset))
        .route("/auth/password-reset/confirm", post(confirm_reset))
        .merge(crate::mfa_api::routes())
        .with_state(accounts)
}

/// A JSON body: 415 unless `application/json`, 400 if unparseable, 422 if it does not match.
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Rejection;

    async fn from_request(req: Request, state: &S) -> Result<Self, Rejection> {
        let is_json = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(Rejection::UnsupportedMediaType);
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|_| Rejection::PayloadTooLarge)?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            if e.is_data() {
                Rejection::Unprocessable("The body does not have the expected fields.")
            } else {
                Rejection::BadRequest("The body is not valid JSON.")
            }
        })
    }
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

pub(crate) fn user(caller: &Caller) -> Result<&Arc<UserPrincipal>, Rejection> {
    match &caller.principal {
        Principal::User(u) => Ok(u),
        Principal::Anonymous | Principal::ApiKey(_) => Err(Rejection::Unauthenticated),
    }
}

pub(crate) fn user_agent(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
}

pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<Token> {
    cookies::read(headers, cookies::SESSION).and_then(Token::from_presented)
}

const ACCEPTED: &str = "If the address can be used, an email is on its way.";

async fn signup(
    State(accounts): Shared,
    JsonBody(body): JsonBody<EmailPassword>,
) -> Result<Response, Rejection> {
    accounts.signup(&body.email, &body.password).await?;
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
    accounts.resend_verification(&body.email).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "status": "accepted", "detail": ACCEPTED })),
    )
        .into_response())
}

/// The answer to a login or refresh: the three cookies and who is logged in.
pub(crate) fn issued_response(issued: &Issued, now: i64) -> Response {
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
    let outcome = accounts
        .login(
            &body.email,
            &body.password,
            previous.as_ref(),
            user_agent(&headers),
        )
        .await?;
    Ok(match outcome {
        LoginOutcome::Complete(issued) => issued_response(&issued, accounts.now()),
        // The password was right and a second factor is due: no session yet, only the
        // pending-login cookie that POST /auth/login/totp accepts.
        LoginOutcome::SecondFactor { token, expires_at } => (
            StatusCode::ACCEPTED,
            [(
                http::header::SET_COOKIE,
                cookies::pending_mfa(token.expose(), expires_at - accounts.now()),
            )],
            Json(json!({
                "status": "second_factor_required",
                "methods": ["totp", "recovery_code"],
                "complete_at": "/auth/login/totp",
                "expires_at": expires_at,
            })),
        )
            .into_response(),
    })
}

async fn refresh(State(accounts): Shared, headers: HeaderMap) -> Result<Response, Rejection> {
    authn::check_origin(&accounts, &http::Method::POST, &headers, true)?;
    let presented = cookies::read(&headers, cookies::REFRESH).ok_or(Rejection::Unauthenticated)?;
    let csrf = headers
        .get(cookies::CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let previous = session_cookie(&headers);
    let issued = accounts
        .refresh(presented, csrf, previous.as_ref(), user_agent(&headers))
        .await?;
    Ok(issued_response(&issued, accounts.now()))
}

async fn logout(
    State(accounts): Shared,
    Extension(caller): Extension<Caller>,
) -> Result<Response, Rejection> {
    accounts.logout(user(&caller)?).await?;
    let cleared = cookies::cleared().map(|c| (http::header::SET_COOKIE, c));
    Ok((StatusCode::NO_CONTENT, AppendHeaders(cleared)).into_response())
}

async fn whoami(Extension(caller): Extension<Caller>) -> Result<Response, Rejection> {
    let u = user(&caller)?;
    Ok(Json(json!({
        "id": u.user_id,
        "email": u.email,
        "email_verified": u.email_verified,
        "factors": u.factors,
        "session_id": u.session_id,
    }))
    .into_response())
}

async fn list_sessions(
    State(accounts): Shared,
    Extension(caller): Extension<Caller>,
) -> Result<Response, Rejection> {
    let u = user(&caller)?;
    let sessions = accounts.list_sessions(u).await?;
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
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, Rejection> {
    accounts.end_session(user(&caller)?, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn change_password(
    State(accounts): Shared,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<PasswordChange>,
) -> Result<Response, Rejection> {
    accounts
        .change_password(user(&caller)?, &body.current_password, &body.new_password)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn request_reset(
    State(accounts): Shared,
    JsonBody(body): JsonBody<EmailBody>,
) -> Result<Response, Rejection> {
    accounts.request_password_reset(&body.email).await?;
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
