//! The platform surface (`/platform/...`): Delivery Zone's operators look up and suspend orgs.
//! Separately gated by policy (platform admins from `[platform] admins`, with a verified email
//! and a second factor); org roles never reach it. Every change is a security event.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Extension, Json, Router};
use serde::Deserialize;

use crate::api::Caller;
use crate::auth_api::{user, JsonBody};
use crate::error::Rejection;
use crate::orgs::Orgs;

type Shared = State<Arc<Orgs>>;

pub fn router(orgs: Arc<Orgs>) -> Router {
    Router::new()
        .route("/platform/v1/orgs/{org}", get(show))
        .route("/platform/v1/orgs/{org}/suspension", put(suspension))
        .with_state(orgs)
}

async fn show(State(orgs): Shared, Path(org): Path<String>) -> Result<Response, Rejection> {
    Ok(Json(orgs.platform_view(&org).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Suspension {
    suspended: bool,
}

async fn suspension(
    State(orgs): Shared,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
    JsonBody(body): JsonBody<Suspension>,
) -> Result<Response, Rejection> {
    let admin = user(&caller)?;
    orgs.set_suspended(&org, body.suspended).await?;
    tracing::warn!(
        target: "zonegate::security",
        event = if body.suspended { "platform_org_suspended" } else { "platform_org_reinstated" },
        org_id = %org,
        user_id = %admin.user_id,
        request_id = %caller.request_id,
    );
    Ok(Json(orgs.platform_view(&org).await?).into_response())
}
