//! RFC 9457 problem details: the one shape every error body of the gateway and the zone
//! backend takes.
//!
//! Every field is a `&'static str`: an error body can only ever carry text written into the
//! program, never a header value, a path, a parser's message, a credential or an internal
//! error. Each service keeps its own table of problems (the gateway's `Rejection`, the
//! backend's `ApiError`); this type is how both put them on the wire.

use serde::Serialize;

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One problem details object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// A stable `urn:` naming the kind of problem; clients branch on it.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: &'static str,
    pub status: u16,
    pub detail: &'static str,
}

impl Problem {
    /// The body, as JSON. Serialising four constant fields cannot fail; if it somehow did, a
    /// fixed body of the same shape is returned, so this never panics and never lies about
    /// the status.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|_| {
            format!(
                r#"{{"type":"urn:zonegate:problem:internal","title":"Error","status":{},"detail":"The request failed."}}"#,
                self.status
            )
            .into_bytes()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_with_the_rfc_field_names() {
        let p = Problem {
            kind: "urn:example:problem:x",
            title: "X",
            status: 418,
            detail: "Short and stout.",
        };
        let v: serde_json::Value = serde_json::from_slice(&p.to_json()).unwrap_or_default();
        assert_eq!(v["type"], "urn:example:problem:x");
        assert_eq!(v["title"], "X");
        assert_eq!(v["status"], 418);
        assert_eq!(v["detail"], "Short and stout.");
    }
}
