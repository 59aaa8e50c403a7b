//! HTTP endpoints for organisations (`/v1/orgs...` answered by the gateway). Access is decided
//! by the pipeline's authorise call before a handler runs; where the body carries what a rule
//! needs (the role granted, the settings changed), the handler asks Cedar again with it in the
//! context. Handlers themselves only read and write.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cedar_policy::EntityUid;
use serde::Deserialize;
use serde_json::json;

use super::{Authorizer, Caller, CurrentUser, Handlers, JsonBody};
use crate::domain::orgs::{Orgs, Role};
use crate::domain::policy::{member_uid, org_uid};
use crate::domain::principal::Principal;
use crate::web::authz::{Asker, BodyQuestion};
use crate::web::Rejection;

#[derive(Debug, Clone)]
struct OrgsApi {
    orgs: Arc<Orgs>,
    authorizer: Authorizer,
}

type Shared = State<OrgsApi>;

pub fn handlers(orgs: Arc<Orgs>, authorizer: Authorizer) -> Handlers {
    Handlers::new()
        .get("/v1/orgs", list_mine)
        .post("/v1/orgs", create)
        .get("/v1/orgs/{org}", show)
        .patch("/v1/orgs/{org}", update)
        .get("/v1/orgs/{org}/members", members)
        .put("/v1/orgs/{org}/members/{user}", change_role)
        .delete("/v1/orgs/{org}/members/{user}", remove)
        .post("/v1/orgs/{org}/invitations", invite)
        .get("/v1/orgs/{org}/invitations", invitations)
        .delete("/v1/orgs/{org}/invitations/{invitation}", revoke_invitation)
        .post("/v1/orgs/{org}/leave", leave)
        .post("/v1/invitations/accept", accept)
        .with_state(OrgsApi { orgs, authorizer })
}

/// A Cedar context of one attribute.
fn context(name: &str, value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    serde_json::Map::from_iter([(name.to_owned(), value)])
}

/// Ask Cedar about the part of a request only its body tells.
async fn require(
    api: &OrgsApi,
    caller: &Caller,
    action: &str,
    resource: EntityUid,
    org: &str,
    context: serde_json::Map<String, serde_json::Value>,
) -> Result<(), Rejection> {
    api.authorizer
        .require(
            Asker {
                principal: &caller.principal,
                request_id: &caller.request_id,
                route: &caller.route,
            },
            BodyQuestion {
                action,
                resource,
                org_id: org,
                context,
            },
        )
        .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrg {
    name: String,
}

async fn create(
    State(api): Shared,
    CurrentUser(me): CurrentUser,
    JsonBody(body): JsonBody<NewOrg>,
) -> Result<Response, Rejection> {
    let org = api.orgs.create(&me.user_id, &body.name).await?;
    let location = format!("/v1/orgs/{}", org.id);
    Ok((
        StatusCode::CREATED,
        [(http::header::LOCATION, location)],
        Json(org),
    )
        .into_response())
}

async fn list_mine(
    State(api): Shared,
    CurrentUser(me): CurrentUser,
) -> Result<Response, Rejection> {
    let mine = api.orgs.mine(&me.user_id).await?;
    Ok(Json(json!({ "orgs": mine })).into_response())
}

async fn show(
    State(api): Shared,
    caller: Caller,
    Path(org): Path<String>,
) -> Result<Response, Rejection> {
    let viewer = match &caller.principal {
        Principal::User(u) => Some(u.user_id.as_str()),
        Principal::Anonymous | Principal::ApiKey(_) | Principal::Operator(_) => None,
    };
    Ok(Json(api.orgs.get(&org, viewer).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    require_mfa: bool,
}

/// Owners change the org's settings; the policy decides with the new settings in the context
/// (requiring MFA needs a session that used it).
async fn update(
    State(api): Shared,
    caller: Caller,
    Path(org): Path<String>,
    JsonBody(body): JsonBody<Settings>,
) -> Result<Response, Rejection> {
    let ctx = context("require_mfa", body.require_mfa.into());
    require(&api, &caller, "orgs:update", org_uid(&org), &org, ctx).await?;
    api.orgs
        .set_require_mfa(&org, caller.principal.id(), body.require_mfa)
        .await?;
    Ok(Json(api.orgs.get(&org, Some(caller.principal.id())).await?).into_response())
}

async fn members(State(api): Shared, Path(org): Path<String>) -> Result<Response, Rejection> {
    Ok(Json(json!({ "members": api.orgs.members(&org).await? })).into_response())
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
    role.parse().map_err(|_| {
        Rejection::Unprocessable("The role must be one of owner, admin, developer, viewer.")
    })
}

fn role_context(role: Role) -> serde_json::Map<String, serde_json::Value> {
    context("role", role.as_str().into())
}

async fn invite(
    State(api): Shared,
    caller: Caller,
    Path(org): Path<String>,
    JsonBody(body): JsonBody<Invite>,
) -> Result<Response, Rejection> {
    let role = parse_role(&body.role)?;
    require(
        &api,
        &caller,
        "members:invite",
        org_uid(&org),
        &org,
        role_context(role),
    )
    .await?;
    api.orgs
        .invite(&org, caller.principal.id(), &body.email, role)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "status": "invited" }))).into_response())
}

/// Accepting is decided twice: the pipeline lets a verified user reach this route; then, once
/// the invitation is read, Cedar decides `invitations:join` with the org as resource (so the
/// suspended-org and MFA guards apply) and, in the context, the role it grants and the
/// inviter's role now (an inviter demoted or removed since can no longer bring anyone in).
async fn accept(
    State(api): Shared,
    caller: Caller,
    CurrentUser(me): CurrentUser,
    JsonBody(body): JsonBody<Accept>,
) -> Result<Response, Rejection> {
    let pending = api.orgs.pending_invitation(&me.email, &body.token).await?;
    let mut ctx = context("role", pending.role.as_str().into());
    ctx.insert(
        "inviter_role".into(),
        pending.inviter_role.map_or("none", Role::as_str).into(),
    );
    require(
        &api,
        &caller,
        "invitations:join",
        org_uid(&pending.org_id),
        &pending.org_id,
        ctx,
    )
    .await?;
    Ok(Json(api.orgs.accept(&me.user_id, &me.email, &body.token).await?).into_response())
}

async fn invitations(State(api): Shared, Path(org): Path<String>) -> Result<Response, Rejection> {
    Ok(Json(json!({ "invitations": api.orgs.invitations(&org).await? })).into_response())
}

async fn revoke_invitation(
    State(api): Shared,
    CurrentUser(me): CurrentUser,
    Path((org, invitation)): Path<(String, String)>,
) -> Result<Response, Rejection> {
    api.orgs
        .revoke_invitation(&org, &me.user_id, &invitation)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn change_role(
    State(api): Shared,
    caller: Caller,
    Path((org, member)): Path<(String, String)>,
    JsonBody(body): JsonBody<RoleChange>,
) -> Result<Response, Rejection> {
    let role = parse_role(&body.role)?;
    require(
        &api,
        &caller,
        "members:update",
        member_uid(&member),
        &org,
        role_context(role),
    )
    .await?;
    api.orgs
        .change_role(&org, caller.principal.id(), &member, role)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn remove(
    State(api): Shared,
    CurrentUser(me): CurrentUser,
    Path((org, member)): Path<(String, String)>,
) -> Result<Response, Rejection> {
    api.orgs.remove(&org, &me.user_id, &member).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn leave(
    State(api): Shared,
    CurrentUser(me): CurrentUser,
    Path(org): Path<String>,
) -> Result<Response, Rejection> {
    api.orgs.remove(&org, &me.user_id, &me.user_id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
