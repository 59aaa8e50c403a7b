//! HMAC-SHA-256 (RFC 2104), the one MAC the gateway computes: API-key digests at rest, CSRF
//! tokens and their keys, HS256 identity assertions. One key type over ring's implementation
//! ([`MacKey`], prepared once for keys used on every request) and [`hmac_sha256`] for a key
//! used once, both checked against RFC 4231's known answers, so every use is the same
//! verified code.

/// `HMAC-SHA-256(key, data)`. Any key length: keys longer than SHA-256's 64-byte block are
/// hashed first, as RFC 2104 says.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    MacKey::new(key).sign(data)
}

/// An HMAC-SHA-256 key prepared once: the hash states of its inner and outer pads are
/// computed here, so each [`MacKey::sign`] hashes only the data (two SHA-256 blocks fewer
/// than [`hmac_sha256`] for a key used on every request, such as the API-key pepper). Debug
/// shows no key material.
#[derive(Clone)]
pub struct MacKey(ring::hmac::Key);

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacKey")
    }
}

impl MacKey {
    pub fn new(key: &[u8]) -> MacKey {
        MacKey(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key))
    }

    /// `HMAC-SHA-256(key, data)`.
    pub fn sign(&self, data: &[u8]) -> [u8; 32] {
        let tag = ring::hmac::sign(&self.0, data);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }
}

/// Keys for CSRF tokens that are a MAC of an id (a login, a platform session), so they need
/// no storage and are useless for any other id. One key per pepper of the ring, newest first,
/// each derived under `label`: new tokens use the newest, and tokens made before a rotation
/// keep matching until their login ends. Debug shows how many keys, never a key.
#[derive(Clone)]
pub struct CsrfKeys {
    keys: Vec<MacKey>,
    /// The pepper new tokens are made under.
    newest: String,
}

impl std::fmt::Debug for CsrfKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsrfKeys")
            .field("keys", &self.keys.len())
            .field("newest", &self.newest)
            .finish()
    }
}

impl CsrfKeys {
    pub fn derive(ring: &crate::domain::keyring::KeyRing, label: &[u8]) -> CsrfKeys {
        let mut peppers: Vec<_> = ring.all(crate::domain::keyring::Purpose::Pepper).collect();
        peppers.sort_by_key(|k| std::cmp::Reverse(k.number));
        CsrfKeys {
            keys: peppers
                .iter()
                .map(|k| MacKey::new(&hmac_sha256(k.secret.expose(), label)))
                .collect(),
            newest: peppers.first().map(|k| k.id.clone()).unwrap_or_default(),
        }
    }

    /// The id of the pepper new tokens are made under.
    pub fn newest_id(&self) -> &str {
        &self.newest
    }

    fn token_with(key: &MacKey, id: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.sign(id.as_bytes()))
    }

    /// The token of `id` under the newest key (empty without a pepper: it matches nothing).
    pub fn token(&self, id: &str) -> String {
        self.keys
            .first()
            .map(|k| Self::token_with(k, id))
            .unwrap_or_default()
    }

    /// Constant-time check of a presented token against `id`, under every key.
    pub fn matches(&self, id: &str, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        !presented.is_empty()
            && self.keys.iter().any(|k| {
                bool::from(
                    Self::token_with(k, id)
                        .as_bytes()
                        .ct_eq(presented.as_bytes()),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// RFC 4231 §4.2–4.8, test cases 1–7 (case 5's expected value truncated to 128 bits, as the
    /// RFC gives it).
    #[test]
    fn rfc_4231_known_answers() {
        let cases: [(Vec<u8>, Vec<u8>, &str); 7] = [
            (
                vec![0x0b; 20],
                b"Hi There".to_vec(),
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            ),
            (
                b"Jefe".to_vec(),
                b"what do ya want for nothing?".to_vec(),
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                vec![0xaa; 20],
                vec![0xdd; 50],
                "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
            ),
            (
                (1..=25).collect(),
                vec![0xcd; 50],
                "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
            ),
            (
                vec![0x0c; 20],
                b"Test With Truncation".to_vec(),
                "a3b6167473100ee06e0c796c2955552b",
            ),
            (
                vec![0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
            (
                vec![0xaa; 131],
                b"This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.".to_vec(),
                "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
            ),
        ];
        for (i, (key, data, expected)) in cases.iter().enumerate() {
            let got = hex::encode(hmac_sha256(key, data));
            assert_eq!(
                &got[..expected.len()],
                *expected,
                "RFC 4231 test case {}",
                i + 1
            );
            // A prepared key gives the same answers, signing more than once.
            let prepared = MacKey::new(key);
            for _ in 0..2 {
                assert_eq!(
                    hex::encode(prepared.sign(data))[..expected.len()],
                    **expected
                );
            }
        }
        assert_eq!(format!("{:?}", MacKey::new(b"secret")), "MacKey");
    }
}
