//! `GET /v1/orgs/{org}/audit-events`: an org's security events, newest first, for its admins
//! and owners (the pipeline's authorise call on `audit:read` / `AuditLog::"{org}"` decides
//! that before this handler runs).
//!
//! Query: `from` and `to` (RFC 3339, inclusive), `event` (an event name), `cursor` (from the
//! previous page's `next_cursor`), `limit` (1..=200, default 50). Anything malformed is a 400:
//! a filter silently ignored would show an admin the wrong events.

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::Handlers;
use crate::domain::audit::{AuditTrail, OrgQuery, Page, MAX_PAGE};
use crate::web::Rejection;
use zonegate_common::time::parse_rfc3339_millis;

const DEFAULT_LIMIT: u32 = 50;

pub fn handlers(trail: AuditTrail) -> Handlers {
    Handlers::new()
        .get("/v1/orgs/{org}/audit-events", list)
        .with_state(trail)
}

/// The parsed query string: what the trail is asked.
pub type AuditQuery = OrgQuery;

/// Parse the query string; every error is a fixed 400 message naming the parameter.
pub fn parse_query(raw: Option<&str>) -> Result<AuditQuery, Rejection> {
    parse_query_with(raw, &[]).map(|(q, _)| q)
}

/// Query parameters beyond the common ones, by name, with their decoded values.
pub type Extras = Vec<(&'static str, String)>;

/// [`parse_query`], also accepting the parameters named in `extra` (each at most once).
pub fn parse_query_with(
    raw: Option<&str>,
    extra: &[&'static str],
) -> Result<(AuditQuery, Extras), Rejection> {
    let mut extras = Vec::new();
    let mut q = AuditQuery {
        limit: DEFAULT_LIMIT,
        ..AuditQuery::default()
    };
    let mut seen: Vec<String> = Vec::new();
    for (key, value) in url_pairs(raw.unwrap_or(""))? {
        if seen.contains(&key) {
            return Err(Rejection::BadRequest("A query parameter is repeated."));
        }
        match key.as_str() {
            "from" => {
                q.from = Some(parse_rfc3339_millis(&value).ok_or(Rejection::BadRequest(
                    "`from` must be an RFC 3339 time, like 2027-01-15T08:00:00Z.",
                ))?);
            }
            "to" => {
                q.to = Some(parse_rfc3339_millis(&value).ok_or(Rejection::BadRequest(
                    "`to` must be an RFC 3339 time, like 2027-01-15T08:00:00Z.",
                ))?);
            }
            "event" => {
                q.event = Some(value.parse().map_err(|_| {
                    Rejection::BadRequest("`event` is not a known security event name.")
                })?);
            }
            "cursor" => {
                q.cursor = Some(value.parse().map_err(|_| {
                    Rejection::BadRequest("`cursor` must be a next_cursor from a previous page.")
                })?);
            }
            "limit" => {
                q.limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|l| (1..=MAX_PAGE).contains(l))
                    .ok_or(Rejection::BadRequest(
                        "`limit` must be a whole number from 1 to 200.",
                    ))?;
            }
            other => match extra.iter().find(|e| **e == other) {
                Some(name) => extras.push((*name, value)),
                None => {
                    return Err(Rejection::BadRequest(
                        "Unknown query parameter: use from, to, event, cursor or limit (and on the platform, org and principal).",
                    ))
                }
            },
        }
        seen.push(key);
    }
    if let (Some(from), Some(to)) = (q.from, q.to) {
        if from > to {
            return Err(Rejection::BadRequest("`from` must not be after `to`."));
        }
    }
    Ok((q, extras))
}

pub(super) fn url_pairs(raw: &str) -> Result<Vec<(String, String)>, Rejection> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| Rejection::BadRequest("The query string is not valid UTF-8."))
    };
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

async fn list(
    State(trail): State<AuditTrail>,
    Path(org): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, Rejection> {
    let q = parse_query(raw.as_deref())?;
    Ok(page_response(trail.query(&org, &q).await?))
}

/// A page of events as the API answers it: the events, newest first, and the cursor of the
/// next page (`null` on the last).
pub fn page_response(page: Page) -> Response {
    Json(json!({
        "events": page.events,
        "next_cursor": page.next_cursor.map(|c| c.encode()),
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::domain::audit::SecurityEvent;

    #[test]
    fn query_parameters_are_parsed_and_checked() {
        let q = parse_query(None).unwrap();
        assert_eq!(q.limit, DEFAULT_LIMIT);
        let q = parse_query(Some(
            "from=2027-01-15T08%3A00%3A00Z&to=2027-01-16T08:00:00Z&event=authz_fail&limit=10",
        ))
        .unwrap();
        assert_eq!(q.from, parse_rfc3339_millis("2027-01-15T08:00:00Z"));
        assert_eq!(q.event, Some(SecurityEvent::AuthzFail));
        assert_eq!(q.limit, 10);
        for bad in [
            "from=yesterday",
            "to=1",
            "event=nope",
            "cursor=x",
            "limit=0",
            "limit=201",
            "limit=-1",
            "colour=red",
            "limit=1&limit=2",
            "from=2027-01-16T00:00:00Z&to=2027-01-15T00:00:00Z",
        ] {
            let e = parse_query(Some(bad)).unwrap_err();
            assert_eq!(e.status(), 400, "{bad}");
        }
    }
}
