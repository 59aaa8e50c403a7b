//! HTTP endpoints for organisations (`/v1/orgs...` answered by the gateway). Access is decided
//! by the pipeline's authorise call before a handler runs; handlers only read and write.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};

use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::api::Caller;
use crate::auth_api::{user, JsonBody};
use crate::error::Rejection;
use crate::orgs::{Orgs, Role};

type Shared = State<Arc<Orgs>>;

pub fn router(orgs: Arc<Orgs>) -> Router {
    Router::new()
        .route("/v1/orgs", get(list_mine).post(create))
        .route("/v1/orgs/{org}", get(show).patch(update))
        .route("/v1/orgs/{org}/members", get(members))
        .route(
            "/v1/orgs/{org}/members/{user}",
            put(change_role).delete(remove),
        )
        .route("/v1/orgs/{org}/invitations", post(invite))
        .route("/v1/orgs/{org}/leave", post(leave))
        .route("/v1/invitations/accept", post(accept))
        .with_state(orgs)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrg {
    name: String,
}

async fn create(
    State(orgs): Shared,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<NewOrg>,
) -> Result<Response, Rejection> {
    let org = orgs.create(&user(&caller)?.user_id, &body.name).await?;
    let location = format!("/v1/orgs/{}", org.id);
    Ok((
        StatusCode::CREATED,
        [(http::header::LOCATION, location)],
        Json(org),
    )
        .into_response())
}

async fn list_mine(
    State(orgs): Shared,
    Extension(caller): Extension<Caller>,
) -> Result<Response, Rejection> {
    let mine = orgs.mine(&user(&caller)?.user_id).await?;
    Ok(Json(json!({ "orgs": mine })).into_response())
}

async fn show(
    State(orgs): Shared,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
) -> Result<Response, Rejection> {
    let viewer = match &caller.principal {
        crate::principal::Principal::User(u) => Some(u.user_id.as_str()),
        crate::principal::Principal::Anonymous | crate::principal::Principal::ApiKey(_) => None,
    };
    Ok(Json(orgs.get(&org, viewer).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    require_mfa: bool,
}

/// Owners change the org's settings. Requiring MFA needs a session that used it: otherwise the
/// owner would lock themselves out with the very request that turns it on.
async fn update(
    State(orgs): Shared,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
    JsonBody(body): JsonBody<Settings>,
) -> Result<Response, Rejection> {
    let me = user(&caller)?;
    if body.require_mfa && !me.factors.iter().any(|f| f == "otp") {
        return Err(Rejection::Conflict(
            "Sign in with a second factor before requiring one of every member.",
        ));
    }
    orgs.set_require_mfa(&org, body.require_mfa).await?;
    Ok(Json(orgs.get(&org, Some(&me.user_id)).await?).into_response())
}

async fn members(State(orgs): Shared, Path(org): Path<String>) -> Result<Response, Rejection> {
    Ok(Json(json!({ "members": orgs.members(&org).await? })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Invite {
    email: String,
    role: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleChange {
    role: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Accept {
    token: String,
}

fn parse_role(role: &str) -> Result<Role, Rejection> {
    role.parse().map_err(|()| {
        Rejection::Unprocessable("The role must be one of owner, admin, developer, viewer.")
    })
}

async fn invite(
    State(orgs): Shared,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
    JsonBody(body): JsonBody<Invite>,
) -> Result<Response, Rejection> {
    let role = parse_role(&body.role)?;
    orgs.invite(&org, &user(&caller)?.user_id, &body.email, role)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "status": "invited" }))).into_response())
}

async fn accept(
    State(orgs): Shared,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<Accept>,
) -> Result<Response, Rejection> {
    let me = user(&caller)?;
    Ok(Json(orgs.accept(&me.user_id, &me.email, &body.token).await?).into_response())
}

async fn change_role(
    State(orgs): Shared,
    Extension(caller): Extension<Caller>,
    Path((org, member)): Path<(String, String)>,
    JsonBody(body): JsonBody<RoleChange>,
) -> Result<Response, Rejection> {
    let role = parse_role(&body.role)?;
    orgs.change_role(&org, &user(&caller)?.user_id, &member, role)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn remove(
    State(orgs): Shared,
    Extension(caller): Extension<Caller>,
    Path((org, member)): Path<(String, String)>,
) -> Result<Response, Rejection> {
    orgs.remove(&org, &user(&caller)?.user_id, &member).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn leave(
    State(orgs): Shared,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
) -> Result<Response, Rejection> {
    let me = &user(&caller)?.user_id;
    orgs.remove(&org, me, me).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
