//! Opaque secret tokens (sessions, refresh tokens, email links): 256 bits from the OS CSPRNG,
//! base64url on the wire, stored only as their SHA-256. A [`Token`] cannot be printed.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// A secret token value as handed to a client.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Zeroizing<String>);

impl Token {
    pub fn generate() -> Token {
        let mut bytes = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(bytes.as_mut());
        Token(Zeroizing::new(URL_SAFE_NO_PAD.encode(bytes.as_ref())))
    }

    /// Wrap a value a client presented. Anything that is not 43 base64url characters cannot be
    /// one of ours and is refused before it reaches a lookup.
    pub fn from_presented(value: &str) -> Option<Token> {
        let ok = value.len() == 43
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| Token(Zeroizing::new(value.to_owned())))
    }

    /// The value, for a Set-Cookie header or an email link only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the store keeps: hex SHA-256 of the value. Lookups by this hash go through a
    /// unique index, so nothing compares secrets byte by byte.
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_256_bit_and_unprintable() {
        let a = Token::generate();
        let b = Token::generate();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 43);
        assert_eq!(a.hash().len(), 64);
        assert!(!format!("{a:?}").contains(a.expose()));
        assert_eq!(
            Token::from_presented(a.expose()).map(|t| t.hash()),
            Some(a.hash())
        );
        assert!(Token::from_presented("short").is_none());
        assert!(Token::from_presented(&"a".repeat(42).replace('a', "+")).is_none());
    }
}
