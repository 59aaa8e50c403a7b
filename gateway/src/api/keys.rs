//! HTTP endpoints for an org's API keys (`/v1/orgs/{org}/api-keys`). The full key appears in
//! exactly one response: the one that created (or rolled) it.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::{CurrentUser, Handlers, JsonBody};
use crate::domain::apikeys::{ApiKeys, IssuedKey};
use crate::web::Rejection;

type Shared = State<Arc<ApiKeys>>;

pub fn handlers(keys: Arc<ApiKeys>) -> Handlers {
    Handlers::new()
        .get("/v1/orgs/{org}/api-keys", list)
        .post("/v1/orgs/{org}/api-keys", create)
        .delete("/v1/orgs/{org}/api-keys/{key}", revoke)
        .post("/v1/orgs/{org}/api-keys/{key}/roll", roll)
        .with_state(keys)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    scopes: Vec<String>,
    /// Unix seconds.
    #[serde(default)]
    expires_at: Option<i64>,
}

/// The one response that carries a key's secret.
fn issued(issued: &IssuedKey) -> Result<Response, Rejection> {
    let mut value = serde_json::to_value(&issued.view).map_err(|_| Rejection::Internal)?;
    value["key"] = json!(issued.key.as_str());
    if let Some(until) = issued.previous_valid_until {
        value["previous_valid_until"] = json!(until);
    }
    Ok((StatusCode::CREATED, Json(value)).into_response())
}

async fn create(
    State(keys): Shared,
    CurrentUser(me): CurrentUser,
    Path(org): Path<String>,
    JsonBody(body): JsonBody<NewKey>,
) -> Result<Response, Rejection> {
    let key = keys
        .create(&org, &me.user_id, &body.name, &body.scopes, body.expires_at)
        .await?;
    issued(&key)
}

async fn list(State(keys): Shared, Path(org): Path<String>) -> Result<Response, Rejection> {
    Ok(Json(json!({ "api_keys": keys.list(&org).await? })).into_response())
}

async fn revoke(
    State(keys): Shared,
    CurrentUser(me): CurrentUser,
    Path((org, key)): Path<(String, String)>,
) -> Result<Response, Rejection> {
    keys.revoke(&org, &key, &me.user_id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn roll(
    State(keys): Shared,
    CurrentUser(me): CurrentUser,
    Path((org, key)): Path<(String, String)>,
) -> Result<Response, Rejection> {
    issued(&keys.roll(&org, &key, &me.user_id).await?)
}
