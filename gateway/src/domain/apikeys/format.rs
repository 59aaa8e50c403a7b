//! The API key format, documented for secret scanners:
//!
//! ```text
//! zgk_<id>_<secret><checksum>
//! regex: zgk_[0-9a-f]{16}_[0-9A-Za-z]{38}
//! ```
//!
//! `id` is 16 lowercase hex characters (public: it names the key in lists and logs). `secret`
//! is 32 base62 characters from the OS CSPRNG (about 190 bits). `checksum` is 6 base62
//! characters of CRC32 over everything before it, so a scanner (or the gateway, before any
//! lookup) can tell a real key from a typo without a database.

use rand::rngs::OsRng;
use rand::RngCore;
use zeroize::Zeroizing;

pub const PREFIX: &str = "zgk_";
const ID_LEN: usize = 16;
const SECRET_LEN: usize = 32;
const CHECKSUM_LEN: usize = 6;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A parsed key: parts of the presented string, borrowed rather than copied, so checking a key
/// makes no copy of its secret to zero later. The secret is never printed.
pub struct ParsedKey<'a> {
    pub id: &'a str,
    pub secret: &'a str,
}

impl std::fmt::Debug for ParsedKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParsedKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The checksum characters of `body` (ASCII base62).
fn checksum(body: &str) -> [u8; CHECKSUM_LEN] {
    let mut n = u64::from(crc32fast::hash(body.as_bytes()));
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        // `n % 62` is below 62, so the index is in range.
        *slot = BASE62
            .get(usize::try_from(n % 62).unwrap_or(0))
            .copied()
            .unwrap_or(b'0');
        n /= 62;
    }
    out
}

/// A fresh key: (id, full key string). The full string is shown to the user once.
pub fn generate() -> (String, Zeroizing<String>) {
    let mut id_bytes = [0u8; ID_LEN / 2];
    OsRng.fill_bytes(&mut id_bytes);
    let id = hex::encode(id_bytes);
    let key = with_new_secret(&id);
    (id, key)
}

/// A key with the given id and a fresh secret (a roll keeps the id).
pub fn with_new_secret(id: &str) -> Zeroizing<String> {
    // Rejection sampling keeps every base62 character equally likely.
    let mut secret = Zeroizing::new(String::with_capacity(SECRET_LEN));
    while secret.len() < SECRET_LEN {
        let mut b = [0u8; 1];
        OsRng.fill_bytes(&mut b);
        if b[0] < 248 {
            secret.push(char::from(BASE62[usize::from(b[0] % 62)]));
        }
    }
    // Sized once: a reallocation would leave a copy of the secret behind, not zeroed.
    let mut key = Zeroizing::new(String::with_capacity(
        PREFIX.len() + id.len() + 1 + SECRET_LEN + CHECKSUM_LEN,
    ));
    key.push_str(PREFIX);
    key.push_str(id);
    key.push('_');
    key.push_str(&secret);
    let sum = checksum(&key);
    key.extend(sum.iter().copied().map(char::from));
    key
}

/// Whether `s` is lowercase hex digits only, as the gateway writes key ids and stored MACs.
pub fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Parse a presented key; `None` for anything malformed or with a wrong checksum.
pub fn parse(key: &str) -> Option<ParsedKey<'_>> {
    let rest = key.strip_prefix(PREFIX)?;
    // The id has a fixed length, so the separator's place is known: no search for it.
    if rest.as_bytes().get(ID_LEN) != Some(&b'_') {
        return None;
    }
    let (id, tail) = (rest.get(..ID_LEN)?, rest.get(ID_LEN + 1..)?);
    let well_formed = is_lower_hex(id)
        && tail.len() == SECRET_LEN + CHECKSUM_LEN
        && tail.bytes().all(|b| b.is_ascii_alphanumeric());
    if !well_formed {
        return None;
    }
    let (secret, sum) = tail.split_at(SECRET_LEN);
    let body = key.get(..key.len() - CHECKSUM_LEN)?;
    if checksum(body) != sum.as_bytes() {
        return None;
    }
    Some(ParsedKey { id, secret })
}

/// What lists show: prefix, id, and the last four characters (checksum, not secret).
pub fn hint(id: &str, full: &str) -> String {
    let tail: String = full
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("{PREFIX}{id}_…{tail}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn generated_keys_parse_and_match_the_documented_pattern() {
        let (id, key) = generate();
        assert_eq!(key.len(), 4 + 16 + 1 + 38);
        let parsed = parse(&key).unwrap();
        assert_eq!(parsed.id, id);
        assert!(!format!("{parsed:?}").contains(parsed.secret));
        let (_, other) = generate();
        assert_ne!(key, other);
    }

    #[test]
    fn malformed_keys_and_bad_checksums_are_refused_without_a_lookup() {
        let (_, key) = generate();
        let mut flipped = key.to_string();
        let last = flipped.pop().unwrap();
        flipped.push(if last == 'a' { 'b' } else { 'a' });
        assert!(parse(&flipped).is_none(), "checksum");
        let mut typo = key.to_string();
        typo.replace_range(25..26, if &key[25..26] == "x" { "y" } else { "x" });
        assert!(
            parse(&typo).is_none(),
            "a typo in the secret breaks the checksum"
        );
        for bad in [
            "",
            "zgk_",
            "zgk_abc_def",
            "Bearer zgk_",
            &key[1..],
            &format!("{}x", key.as_str()),
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }
}
