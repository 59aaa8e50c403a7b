//! Single-use recovery codes, for a user who has lost their authenticator.
//!
//! A code is 25 Crockford base32 characters from the OS CSPRNG (125 bits), shown as five groups
//! of five: `XXXXX-XXXXX-XXXXX-XXXXX-XXXXX`. With that much entropy a guess is hopeless, so the
//! store keeps a plain SHA-256 of the canonical form (no per-code salt or slow hash needed).
//!
//! Codes are read off paper and typed by hand, so input is the one place we normalise: ASCII
//! case is ignored, dashes are optional, and Crockford's look-alikes are folded (`O`→`0`,
//! `I`/`L`→`1`). Anything else (spaces, other characters, wrong length) is simply not a code.

use std::fmt;

use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// How many codes a confirmation hands out.
pub const COUNT: usize = 10;
const GROUPS: usize = 5;
const GROUP_LEN: usize = 5;
const CHARS: usize = GROUPS * GROUP_LEN;
/// Crockford base32: digits and letters without I, L, O, U.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Freshly made recovery codes, to show the user once. Zeroed on drop; redacted Debug.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct RecoveryCodes(Vec<String>);

impl RecoveryCodes {
    /// The codes, formatted with dashes.
    pub fn codes(&self) -> &[String] {
        &self.0
    }
}

impl fmt::Debug for RecoveryCodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecoveryCodes(<{} redacted>)", self.0.len())
    }
}

fn one_code() -> String {
    let mut random = Zeroizing::new([0u8; CHARS]);
    OsRng.fill_bytes(random.as_mut());
    let mut code = String::with_capacity(CHARS + GROUPS - 1);
    for (i, byte) in random.iter().enumerate() {
        if i > 0 && i % GROUP_LEN == 0 {
            code.push('-');
        }
        // 256 is a multiple of 32, so the low five bits are uniform: no modulo bias.
        code.push(char::from(ALPHABET[usize::from(byte & 31)]));
    }
    code
}

/// [`COUNT`] new codes and their hashes (what the store keeps), in the same order.
pub fn generate() -> (RecoveryCodes, Vec<String>) {
    let codes: Vec<String> = (0..COUNT).map(|_| one_code()).collect();
    let hashes = codes.iter().filter_map(|c| hash(c)).collect();
    (RecoveryCodes(codes), hashes)
}

/// The canonical form: 25 upper-case Crockford characters, or `None` if `input` is not a code.
fn canonical(input: &str) -> Option<Zeroizing<String>> {
    let mut out = Zeroizing::new(String::with_capacity(CHARS));
    for c in input.chars() {
        let c = match c.to_ascii_uppercase() {
            '-' => continue,
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        };
        if !c.is_ascii() || !ALPHABET.contains(&(c as u8)) || out.len() == CHARS {
            return None;
        }
        out.push(c);
    }
    (out.len() == CHARS).then_some(out)
}

/// The hex SHA-256 of a code's canonical form, or `None` if `input` cannot be a recovery code.
pub fn hash(input: &str) -> Option<String> {
    canonical(input).map(|c| hex::encode(Sha256::digest(c.as_bytes())))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ten_distinct_well_formed_codes_with_matching_hashes() {
        let (codes, hashes) = generate();
        assert_eq!(codes.codes().len(), COUNT);
        assert_eq!(hashes.len(), COUNT);
        for (code, h) in codes.codes().iter().zip(&hashes) {
            assert_eq!(code.len(), 29);
            let groups: Vec<&str> = code.split('-').collect();
            assert_eq!(groups.len(), 5, "{code}");
            assert!(groups
                .iter()
                .all(|g| g.len() == 5 && g.bytes().all(|b| ALPHABET.contains(&b))));
            assert_eq!(hash(code).as_deref(), Some(h.as_str()));
            assert_eq!(h.len(), 64);
        }
        let unique: HashSet<_> = codes.codes().iter().collect();
        assert_eq!(unique.len(), COUNT);
    }

    #[test]
    fn input_is_normalised_for_case_dashes_and_look_alikes_only() {
        let code = "0A1B2-C3D4E-5F6G7-H8J9K-MNPQR";
        let want = hash(code).unwrap();
        for same in [
            "0a1b2-c3d4e-5f6g7-h8j9k-mnpqr",
            "0A1B2C3D4E5F6G7H8J9KMNPQR",
            "0a1b2c3d4e5f6g7h8j9kmnpqr",
            "OA1B2-C3D4E-5F6G7-H8J9K-MNPQR", // O for 0
            "0AIB2-C3D4E-5F6G7-H8J9K-MNPQR", // I for 1
            "0alb2-c3d4e-5f6g7-h8j9k-mnpqr", // l for 1
        ] {
            assert_eq!(hash(same).as_deref(), Some(want.as_str()), "{same}");
        }
        for not_a_code in [
            "",
            "0A1B2-C3D4E-5F6G7-H8J9K-MNPQ",   // too short
            "0A1B2-C3D4E-5F6G7-H8J9K-MNPQRS", // too long
            "0A1B2 C3D4E 5F6G7 H8J9K MNPQR",  // spaces are not dashes
            " 0A1B2-C3D4E-5F6G7-H8J9K-MNPQR",
            "0A1B2-C3D4E-5F6G7-H8J9K-MNPQU", // U is not in the alphabet
            "０A1B2-C3D4E-5F6G7-H8J9K-MNPQR", // full-width zero
            "123456",
        ] {
            assert!(hash(not_a_code).is_none(), "{not_a_code:?}");
        }
    }

    #[test]
    fn debug_never_shows_a_code() {
        let (codes, _) = generate();
        let printed = format!("{codes:?}");
        for code in codes.codes() {
            assert!(!printed.contains(code.as_str()));
        }
    }
}
