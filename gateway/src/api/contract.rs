//! The API contract: `gateway/openapi.json` (OpenAPI 3.1), served as it is committed at
//! `/openapi.json`. It is written by hand and held to the route table by the tests below, so an
//! operation cannot be added, removed or renamed in one without the other; schemathesis checks
//! its schemas against the running gateway (`tools/contract-check`).

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
    use std::collections::BTreeSet;

    use super::*;
    use crate::pipeline::route::RouteTable;

    /// (operationId, METHOD, path) of every operation in the document.
    fn operations() -> BTreeSet<(String, String, String)> {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut out = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if let Some(id) = op.get("operationId") {
                    out.insert((
                        id.as_str().unwrap().to_owned(),
                        method.to_ascii_uppercase(),
                        path.clone(),
                    ));
                }
            }
        }
        out
    }

    #[test]
    fn every_route_is_an_operation_and_every_operation_a_route() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let upstreams = BTreeSet::from(["zones".to_owned()]);
        let table = RouteTable::load(&root.join("policies/routes.toml"), &upstreams).unwrap();
        let mut routes = BTreeSet::new();
        for route in table.routes() {
            for method in &route.methods {
                // A route with two methods has one operation each: `zones-update` is the PUT,
                // its PATCH is `zones-patch`.
                let id = match (route.name.as_str(), method.as_str()) {
                    ("zones-update", "PATCH") => "zones-patch".to_owned(),
                    (name, _) => name.to_owned(),
                };
                routes.insert((id, method.to_string(), route.pattern.clone()));
            }
        }
        let documented = operations();
        let undocumented: Vec<_> = routes.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&routes).collect();
        assert!(
            undocumented.is_empty(),
            "routes without an operation: {undocumented:?}"
        );
        assert!(
            unrouted.is_empty(),
            "operations without a route: {unrouted:?}"
        );
    }

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
