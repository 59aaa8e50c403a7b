//! The platform surface (`/platform/...`): Delivery Zone's operators look up and suspend orgs.
//! Separately gated by policy (platform admins from `[platform] admins`, with a verified email
//! and a second factor); org roles never reach it. Every change is a security event.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::{CurrentUser, Handlers, JsonBody};
use crate::domain::orgs::Orgs;
use crate::web::Rejection;

type Shared = State<Arc<Orgs>>;

pub fn handlers(orgs: Arc<Orgs>) -> Handlers {
    Handlers::new()
        .get("/platform/v1/orgs/{org}", show)
        .put("/platform/v1/orgs/{org}/suspension", suspension)
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
    CurrentUser(admin): CurrentUser,
    Path(org): Path<String>,
    JsonBody(body): JsonBody<Suspension>,
) -> Result<Response, Rejection> {
    orgs.set_suspended(&org, &admin.user_id, body.suspended)
        .await?;
    Ok(Json(orgs.platform_view(&org).await?).into_response())
}
