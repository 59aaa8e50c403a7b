//! HTTP handlers for zones and coverage.
//!
//! Handlers translate HTTP into calls on the geometry and store modules and
//! shape the responses; they hold no business rules of their own beyond input
//! limits.
//!
//! Handlers must never:
//! - reach the store without an [`AuthorizedOrg`] (the extractor is the org
//!   check);
//! - reveal whether a zone id exists in another org: that is a 404, exactly
//!   like an id that exists nowhere;
//! - validate geometry on an async worker thread (it is CPU-bound).

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::extract::{JsonBody, PathParams, QueryParams};
use crate::geometry::{is_valid_lon_lat, Area};
use crate::identity::AuthorizedOrg;
use crate::problem::ApiError;
use crate::store::Zone;
use crate::AppState;

/// Longest accepted zone name, in Unicode scalar values.
pub const MAX_NAME_CHARS: usize = 200;

/// Request body of create and replace.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneBody {
    pub name: String,
    pub area: geojson::Geometry,
}

/// Request body of `PATCH`, a JSON Merge Patch (RFC 7396): the members given replace the
/// stored ones, the others stay. A zone always has a name and an area, so `null` (which would
/// remove a member) is refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZonePatch {
    #[serde(default, deserialize_with = "present")]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub area: Option<Option<geojson::Geometry>>,
}

/// A member that is present: `Some(None)` for `null`, so it is told apart from an absent one.
fn present<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[derive(Debug, Serialize)]
pub struct ZoneList {
    pub zones: Vec<Zone>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoverageQuery {
    pub lat: f64,
    pub lon: f64,
}

#[derive(Debug, Serialize)]
pub struct Coverage {
    pub lat: f64,
    pub lon: f64,
    pub zones: Vec<Zone>,
}

/// `GET /v1/orgs/{org}/zones`
pub async fn list_zones(
    State(state): State<AppState>,
    org: AuthorizedOrg,
) -> Result<Json<ZoneList>, ApiError> {
    let zones = state.store.list(&org).await?;
    Ok(Json(ZoneList { zones }))
}

/// `POST /v1/orgs/{org}/zones`
pub async fn create_zone(
    State(state): State<AppState>,
    org: AuthorizedOrg,
    uri: Uri,
    JsonBody(body): JsonBody<ZoneBody>,
) -> Result<Response, ApiError> {
    let (name, area) = validate(body).await?;
    let zone = state
        .store
        .create(&org, name, area, state.clock.now())
        .await?;
    // Built from the path as the client sent it, so any percent-encoding in
    // the org segment round-trips unchanged.
    let location =
        HeaderValue::try_from(format!("{}/{}", uri.path(), zone.id)).map_err(ApiError::internal)?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(zone),
    )
        .into_response())
}

/// `GET /v1/orgs/{org}/zones/{zone}`
pub async fn get_zone(
    State(state): State<AppState>,
    org: AuthorizedOrg,
    PathParams((_, zone)): PathParams<(String, String)>,
) -> Result<Json<Zone>, ApiError> {
    let zone = state.store.get(&org, zone_id(&zone)?).await?;
    zone.map(Json).ok_or(ApiError::NotFound)
}

/// `PUT /v1/orgs/{org}/zones/{zone}`: replaces name and area.
pub async fn replace_zone(
    State(state): State<AppState>,
    org: AuthorizedOrg,
    PathParams((_, zone)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<ZoneBody>,
) -> Result<Json<Zone>, ApiError> {
    // Unknown ids are answered before the body is validated: there is nothing
    // to replace, and validation is the expensive part.
    let id = zone_id(&zone)?;
    let (name, area) = validate(body).await?;
    let zone = state
        .store
        .update(&org, id, name, area, state.clock.now())
        .await?;
    zone.map(Json).ok_or(ApiError::NotFound)
}

/// `PATCH /v1/orgs/{org}/zones/{zone}`: changes the name, the area or both
/// (`application/merge-patch+json`, or `application/json`).
pub async fn patch_zone(
    State(state): State<AppState>,
    org: AuthorizedOrg,
    PathParams((_, zone)): PathParams<(String, String)>,
    JsonBody(patch): JsonBody<ZonePatch>,
) -> Result<Json<Zone>, ApiError> {
    let id = zone_id(&zone)?;
    let removed = || ApiError::Unprocessable("a zone's name and area cannot be removed");
    let name = match patch.name {
        None => None,
        Some(None) => return Err(removed()),
        Some(Some(name)) => Some(validate_name(name)?),
    };
    let area = match patch.area {
        None => None,
        Some(None) => return Err(removed()),
        Some(Some(area)) => Some(validate_area(area).await?),
    };
    if name.is_none() && area.is_none() {
        // An empty patch changes nothing, not even `updated_at`.
        let zone = state.store.get(&org, id).await?;
        return zone.map(Json).ok_or(ApiError::NotFound);
    }
    let zone = state
        .store
        .patch(&org, id, name, area, state.clock.now())
        .await?;
    zone.map(Json).ok_or(ApiError::NotFound)
}

/// `DELETE /v1/orgs/{org}/zones/{zone}`
pub async fn delete_zone(
    State(state): State<AppState>,
    org: AuthorizedOrg,
    PathParams((_, zone)): PathParams<(String, String)>,
) -> Result<StatusCode, ApiError> {
    if state.store.delete(&org, zone_id(&zone)?).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

/// `GET /v1/orgs/{org}/coverage?lat=&lon=`: the org's zones covering a point
/// (boundary included, see `geometry`).
pub async fn coverage(
    State(state): State<AppState>,
    org: AuthorizedOrg,
    QueryParams(CoverageQuery { lat, lon }): QueryParams<CoverageQuery>,
) -> Result<Json<Coverage>, ApiError> {
    if !is_valid_lon_lat(lon, lat) {
        return Err(ApiError::BadRequest(
            "lat must be within -90..=90 and lon within -180..=180",
        ));
    }
    // SQL narrows to zones whose bounding box holds the point; the exact test
    // is linear in each candidate's vertices, cheap enough to run inline.
    let candidates = state
        .store
        .zones_with_bounds_containing(&org, lon, lat)
        .await?;
    let zones = candidates
        .into_iter()
        .filter(|zone| zone.area.covers(lon, lat))
        .collect();
    Ok(Json(Coverage { lat, lon, zones }))
}

/// Zone ids are UUIDs in hyphenated form (either case). Anything else cannot
/// name a zone, so it is "not found" rather than a distinct 400.
fn zone_id(raw: &str) -> Result<Uuid, ApiError> {
    match Uuid::parse_str(raw) {
        Ok(id) if raw.len() == 36 => Ok(id),
        _ => Err(ApiError::NotFound),
    }
}

async fn validate(body: ZoneBody) -> Result<(String, Area), ApiError> {
    let ZoneBody { name, area } = body;
    Ok((validate_name(name)?, validate_area(area).await?))
}

fn validate_name(name: String) -> Result<String, ApiError> {
    let chars = name.chars().count();
    if !(1..=MAX_NAME_CHARS).contains(&chars) {
        return Err(ApiError::Unprocessable("name must be 1 to 200 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::Unprocessable(
            "name must not contain control characters",
        ));
    }
    Ok(name)
}

/// Geometry validation is CPU-bound: off the async workers.
async fn validate_area(area: geojson::Geometry) -> Result<Area, ApiError> {
    tokio::task::spawn_blocking(move || Area::parse(area))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::from)
}
