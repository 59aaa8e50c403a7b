//! TOTP seeds at rest: XChaCha20-Poly1305 under the key ring's active `totp` key.
//!
//! Sealed form: `zt1$<key id>$<base64url(nonce || ciphertext+tag)>`. The key id travels with the
//! ciphertext so a rotated ring still opens seeds sealed under older keys (every present `totp`
//! key is tried by id). The 24-byte nonce is random, which XChaCha's extended nonce makes safe
//! without a counter. The user id is associated data: a sealed seed copied onto another user's
//! row fails authentication instead of letting that user log in with someone else's app.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::rngs::OsRng;
use rand::RngCore;
use zeroize::Zeroizing;

use super::totp::Secret;
use super::MfaError;
use crate::domain::keyring::{KeyRing, Purpose};

const VERSION: &str = "zt1";
const NONCE_BYTES: usize = 24;
const TAG_BYTES: usize = 16;

/// Domain-separated associated data, so a ciphertext made for another purpose under the same
/// key (there is none today) could never be mistaken for a seed.
fn associated_data(user_id: &str) -> Vec<u8> {
    format!("zonegate totp seed v1\0{user_id}").into_bytes()
}

fn cipher(secret: &[u8; 32]) -> Result<XChaCha20Poly1305, MfaError> {
    XChaCha20Poly1305::new_from_slice(secret).map_err(|_| MfaError::Crypto)
}

/// Encrypt `secret` for `user_id` under the active `totp` key.
pub fn seal(keys: &KeyRing, user_id: &str, secret: &Secret) -> Result<String, MfaError> {
    let key = keys.active(Purpose::Totp).ok_or(MfaError::Crypto)?;
    let mut nonce = [0u8; NONCE_BYTES];
    OsRng.fill_bytes(&mut nonce);
    let aad = associated_data(user_id);
    let sealed = cipher(key.secret.expose())?
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: secret.expose(),
                aad: &aad,
            },
        )
        .map_err(|_| MfaError::Crypto)?;
    let mut blob = Vec::with_capacity(NONCE_BYTES + sealed.len());
    blob.extend_from_slice(&nonce);
    blob.extend_from_slice(&sealed);
    Ok(format!(
        "{VERSION}${}${}",
        key.id,
        URL_SAFE_NO_PAD.encode(blob)
    ))
}

/// Decrypt a seed sealed for `user_id`. Any problem (unknown version or key, bad encoding,
/// failed authentication) is the same [`MfaError::Crypto`]: nothing about the data is revealed.
pub fn open(keys: &KeyRing, user_id: &str, sealed: &str) -> Result<Secret, MfaError> {
    let mut parts = sealed.splitn(3, '$');
    let (Some(VERSION), Some(key_id), Some(blob)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(MfaError::Crypto);
    };
    let key = keys
        .all(Purpose::Totp)
        .find(|k| k.id == key_id)
        .ok_or(MfaError::Crypto)?;
    let blob = URL_SAFE_NO_PAD.decode(blob).map_err(|_| MfaError::Crypto)?;
    if blob.len() < NONCE_BYTES + TAG_BYTES {
        return Err(MfaError::Crypto);
    }
    let (nonce, ciphertext) = blob.split_at(NONCE_BYTES);
    let nonce = <[u8; NONCE_BYTES]>::try_from(nonce).map_err(|_| MfaError::Crypto)?;
    let aad = associated_data(user_id);
    let plain = Zeroizing::new(
        cipher(key.secret.expose())?
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| MfaError::Crypto)?,
    );
    Ok(Secret::from_bytes(plain.to_vec()))
}

/// The id of the key a sealed seed was made with, so operators can find seeds to re-seal
/// before retiring a key.
pub fn key_id(sealed: &str) -> Option<&str> {
    let mut parts = sealed.splitn(3, '$');
    match (parts.next(), parts.next()) {
        (Some(VERSION), Some(id)) => Some(id),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn ring() -> (tempfile::TempDir, std::path::PathBuf, KeyRing) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        KeyRing::init(&dir).unwrap();
        let ring = KeyRing::load(&dir).unwrap();
        (tmp, dir, ring)
    }

    #[test]
    fn round_trip_tagged_with_the_key_id() {
        let (_tmp, _dir, keys) = ring();
        let secret = Secret::generate();
        let sealed = seal(&keys, "u1", &secret).unwrap();
        assert!(sealed.starts_with("zt1$totp-1$"), "{sealed}");
        assert_eq!(key_id(&sealed), Some("totp-1"));
        assert!(!sealed.contains(&secret.base32()));
        let opened = open(&keys, "u1", &sealed).unwrap();
        assert_eq!(opened.expose(), secret.expose());
        // A fresh nonce every time: the same seed never seals to the same text.
        assert_ne!(seal(&keys, "u1", &secret).unwrap(), sealed);
    }

    #[test]
    fn a_seed_sealed_for_one_user_does_not_open_for_another() {
        let (_tmp, _dir, keys) = ring();
        let sealed = seal(&keys, "u1", &Secret::generate()).unwrap();
        assert!(matches!(open(&keys, "u2", &sealed), Err(MfaError::Crypto)));
    }

    #[test]
    fn tampering_and_garbage_are_refused() {
        let (_tmp, _dir, keys) = ring();
        let sealed = seal(&keys, "u1", &Secret::generate()).unwrap();
        let (head, blob) = sealed.rsplit_once('$').unwrap();
        let mut bytes = URL_SAFE_NO_PAD.decode(blob).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let flipped = format!("{head}${}", URL_SAFE_NO_PAD.encode(&bytes));
        for bad in [
            flipped.as_str(),
            "",
            "zt1",
            "zt1$totp-1$",
            "zt1$totp-1$!!!",
            "zt1$totp-9$AAAA",
            "zt2$totp-1$AAAA",
            &sealed.replacen("totp-1", "pepper-1", 1),
            &sealed[..sealed.len() - 4],
        ] {
            assert!(
                matches!(open(&keys, "u1", bad), Err(MfaError::Crypto)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn seeds_sealed_before_a_rotation_still_open() {
        let (_tmp, dir, keys) = ring();
        let secret = Secret::generate();
        let old = seal(&keys, "u1", &secret).unwrap();
        KeyRing::rotate(&dir).unwrap();
        let rotated = KeyRing::load(&dir).unwrap();
        let new = seal(&rotated, "u1", &secret).unwrap();
        assert_eq!(key_id(&new), Some("totp-2"));
        assert_eq!(
            open(&rotated, "u1", &old).unwrap().expose(),
            secret.expose()
        );
        assert_eq!(
            open(&rotated, "u1", &new).unwrap().expose(),
            secret.expose()
        );
        // The old ring does not have the new key.
        assert!(matches!(open(&keys, "u1", &new), Err(MfaError::Crypto)));
    }
}
