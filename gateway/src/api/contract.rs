//! The API contract: `gateway/openapi.json` (OpenAPI 3.1), served as it is committed at
//! `/openapi.json`. It is written by hand and held to the route table by a test, so an
//! operation cannot be added, removed or renamed in one without the other; schemathesis checks
//! its schemas against the running gateway (`tools/contract-check`). The route-table test lives
//! with the route table (`pipeline::route`), which may import this module.

use axum::http::header;
use axum::response::IntoResponse;

/// The document, embedded in the binary.
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// `GET /openapi.json`
pub async fn openapi() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            // The same for everyone and changes only with a new binary.
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        OPENAPI,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn every_problem_type_the_gateway_answers_is_documented() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let documented = doc.to_string();
        for rejection in crate::web::rejection::every_kind() {
            let kind = rejection.problem().kind;
            assert!(documented.contains(kind), "{kind} is not in openapi.json");
        }
    }
}
