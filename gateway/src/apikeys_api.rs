//! HTTP endpoints for an org's API keys (`/v1/orgs/{org}/api-keys`). The full key appears in
//! exactly one response: the one that created (or rolled) it.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::api::Caller;
use crate::apikeys::ApiKeys;
use crate::auth_api::{user, JsonBody};
use crate::error::Rejection;

type Shared = State<Arc<ApiKeys>>;

pub fn router(keys: Arc<ApiKeys>) -> Router {
    Router::new()
        .route("/v1/orgs/{org}/api-keys", get(list).post(create))
        .route("/v1/orgs/{org}/api-keys/{key}", delete(revoke))
        .route("/v1/orgs/{org}/api-keys/{key}/roll", post(roll))
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

async fn create(
    State(keys): Shared,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
    JsonBody(body): JsonBody<NewKey>,
) -> Result<Response, Rejection> {
    let issued = keys
        .create(
            &org,
            &user(&caller)?.user_id,
            &body.name,
            &body.scopes,
            body.expires_at,
        )
        .await?;
    let mut value = serde_json::to_value(&issued.view).map_err(|_| Rejection::Internal)?;
    value["key"] = json!(issued.key.as_str());
    Ok((StatusCode::CREATED, Json(value)).into_response())
}

async fn list(State(keys): Shared, Path(org): Path<String>) -> Result<Response, Rejection> {
    Ok(Json(json!({ "api_keys": keys.list(&org).await? })).into_response())
}

async fn revoke(
    State(keys): Shared,
    Extension(caller): Extension<Caller>,
    Path((org, key)): Path<(String, String)>,
) -> Result<Response, Rejection> {
    keys.revoke(&org, &key, &user(&caller)?.user_id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn roll(
    State(keys): Shared,
    Extension(caller): Extension<Caller>,
    Path((org, key)): Path<(String, String)>,
) -> Result<Response, Rejection> {
    let issued = keys.roll(&org, &key, &user(&caller)?.user_id).await?;
    let mut value = serde_json::to_value(&issued.view).map_err(|_| Rejection::Internal)?;
    value["key"] = json!(issued.key.as_str());
    value["previous_valid_until"] = json!(issued.previous_valid_until);
    Ok((StatusCode::CREATED, Json(value)).into_response())
}
