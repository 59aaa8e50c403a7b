//! RFC 9530 `Content-Digest` (SHA-256) of a body, as the gateway binds it in the identity
//! assertion's `cd` claim and the backend checks it: one definition, so the two cannot differ
//! by a byte (padding, alphabet, the `sha-256=:…:` framing).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};

/// The `Content-Digest` of an empty body, which most forwarded requests have.
pub const EMPTY_CONTENT_DIGEST: &str = "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:";

/// `sha-256=:<standard base64 of SHA-256(body)>:`.
pub fn content_digest(body: &[u8]) -> String {
    if body.is_empty() {
        return EMPTY_CONTENT_DIGEST.to_owned();
    }
    format!("sha-256=:{}:", STANDARD.encode(Sha256::digest(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_digests_are_rfc_9530_sha_256() {
        // RFC 9530, appendix B.1: the digest of `{"hello": "world"}`.
        assert_eq!(
            content_digest(b"{\"hello\": \"world\"}"),
            "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
        );
        assert_eq!(
            format!("sha-256=:{}:", STANDARD.encode(Sha256::digest(b""))),
            EMPTY_CONTENT_DIGEST
        );
    }
}
