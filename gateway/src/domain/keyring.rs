//! The key ring: secret keys kept in a directory of their own, apart from the config and the
//! database (NIST SP 800-63B: a pepper is stored separately from the hashes it protects).
//!
//! Layout: one file per key, `<purpose>-<n>.key`, holding standard base64 of 32 bytes from the
//! OS CSPRNG. The file stem is the key id that travels with whatever the key made (an identity
//! assertion's `kid`, a hash's pepper id), so keys rotate without breaking older material: the
//! highest `n` of a purpose signs or hashes new things, every present key still verifies, and a
//! key is retired by deleting its file. The directory must be 0700 and each key 0600; anything
//! group- or world-readable is refused at start, naming the path.
//!
//! This module must never print key material: [`SecretKey`] has no Display and a redacted Debug.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::rngs::OsRng;
use rand::RngCore;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// What a key is for. Each purpose rotates on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// Signs the identity assertion sent to backends.
    Identity,
    /// HMAC pepper for stored API-key secrets and password pre-hashing.
    Pepper,
    /// AEAD key for TOTP seeds at rest.
    Totp,
    /// Ed25519 seed that signs identity assertions when backends hold only a public key
    /// (`signing-<n>.pub`, written beside it).
    Signing,
}

impl Purpose {
    pub const ALL: [Purpose; 4] = [
        Purpose::Identity,
        Purpose::Pepper,
        Purpose::Totp,
        Purpose::Signing,
    ];

    /// Purposes a ring must have to load. A ring made before Ed25519 assertions existed has no
    /// signing key; it still loads, and only the EdDSA signer asks for one.
    const REQUIRED: [Purpose; 3] = [Purpose::Identity, Purpose::Pepper, Purpose::Totp];

    pub fn name(self) -> &'static str {
        match self {
            Purpose::Identity => "identity",
            Purpose::Pepper => "pepper",
            Purpose::Totp => "totp",
            Purpose::Signing => "signing",
        }
    }

    fn from_name(name: &str) -> Option<Purpose> {
        Purpose::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// 32 bytes of key material. Zeroed on drop; never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    fn generate() -> SecretKey {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        SecretKey(bytes)
    }

    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// One key of the ring.
#[derive(Debug, Clone)]
pub struct Key {
    pub id: String,
    pub purpose: Purpose,
    pub number: u32,
    pub secret: SecretKey,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyRingError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is readable or writable by group or others (mode {mode:o}); run `chmod {want:o} {path}`")]
    Permissions { path: PathBuf, mode: u32, want: u32 },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: &'static str },
    #[error("{path} already holds keys; use `zonegate keys rotate` to add new ones")]
    AlreadyInitialised { path: PathBuf },
    #[error("no key `{id}` in {path}")]
    NotFound { path: PathBuf, id: String },
    #[error("{id} is the active {purpose} key; it cannot be retired")]
    Active { id: String, purpose: &'static str },
    #[error("key directory {path} has no {purpose} key; run `zonegate keys init --dir {path}`")]
    Missing {
        path: PathBuf,
        purpose: &'static str,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyRingError + '_ {
    move |source| KeyRingError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The loaded key ring.
#[derive(Debug, Clone)]
pub struct KeyRing {
    keys: Vec<Key>,
}

impl KeyRing {
    /// Create `dir` (0700) with a first key of every purpose. Refuses a directory that already
    /// holds keys, so a typo cannot silently replace production keys.
    pub fn init(dir: &Path) -> Result<Vec<String>, KeyRingError> {
        if dir.exists() {
            check_dir_permissions(dir)?;
            if !list_key_files(dir)?.is_empty() {
                return Err(KeyRingError::AlreadyInitialised {
                    path: dir.to_owned(),
                });
            }
        } else {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io(dir))?;
        }
        Purpose::ALL
            .into_iter()
            .map(|p| write_key(dir, p, 1))
            .collect()
    }

    /// Add a new key for each purpose; it becomes the active one. Old keys stay until removed.
    pub fn rotate(dir: &Path) -> Result<Vec<String>, KeyRingError> {
        let ring = KeyRing::load(dir)?;
        Purpose::ALL
            .into_iter()
            .map(|p| {
                let next = ring.active(p).map_or(1, |k| k.number + 1);
                write_key(dir, p, next)
            })
            .collect()
    }

    /// Load every key, refusing loose permissions. Every purpose must have a key.
    pub fn load(dir: &Path) -> Result<KeyRing, KeyRingError> {
        check_dir_permissions(dir)?;
        let mut keys = Vec::new();
        for (path, purpose, number) in list_key_files(dir)? {
            let meta = fs::symlink_metadata(&path).map_err(io(&path))?;
            if !meta.file_type().is_file() {
                return Err(KeyRingError::Invalid {
                    path,
                    reason: "a key must be a regular file, not a link or directory",
                });
            }
            if meta.mode() & 0o077 != 0 {
                return Err(KeyRingError::Permissions {
                    path,
                    mode: meta.mode() & 0o777,
                    want: 0o600,
                });
            }
            let text = fs::read_to_string(&path).map_err(io(&path))?;
            let mut bytes = STANDARD
                .decode(text.trim())
                .map_err(|_| KeyRingError::Invalid {
                    path: path.clone(),
                    reason: "not base64",
                })?;
            let secret = <[u8; 32]>::try_from(bytes.as_slice())
                .map(SecretKey)
                .map_err(|_| KeyRingError::Invalid {
                    path: path.clone(),
                    reason: "a key must be exactly 32 bytes",
                });
            bytes.zeroize();
            keys.push(Key {
                id: format!("{}-{number}", purpose.name()),
                purpose,
                number,
                secret: secret?,
            });
        }
        let ring = KeyRing { keys };
        for p in Purpose::REQUIRED {
            if ring.active(p).is_none() {
                return Err(KeyRingError::Missing {
                    path: dir.to_owned(),
                    purpose: p.name(),
                });
            }
        }
        Ok(ring)
    }

    /// The key that makes new material for `purpose`: the highest number.
    pub fn active(&self, purpose: Purpose) -> Option<&Key> {
        self.keys
            .iter()
            .filter(|k| k.purpose == purpose)
            .max_by_key(|k| k.number)
    }

    /// Every key, by purpose and then number.
    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.keys.iter()
    }

    /// The ids of the keys that make new material, one per purpose present.
    pub fn active_ids(&self) -> Vec<String> {
        Purpose::ALL
            .into_iter()
            .filter_map(|p| self.active(p).map(|k| k.id.clone()))
            .collect()
    }

    /// Delete an old key's file (and a signing key's public half), after the caller has made
    /// sure nothing depends on it (`crate::domain::rotation`). The active key of a purpose is
    /// refused: deleting it would make an older key active again.
    pub fn retire(dir: &Path, id: &str) -> Result<(), KeyRingError> {
        let ring = KeyRing::load(dir)?;
        let key = ring
            .keys()
            .find(|k| k.id == id)
            .ok_or_else(|| KeyRingError::NotFound {
                path: dir.to_owned(),
                id: id.to_owned(),
            })?;
        if ring.active(key.purpose).map(|a| a.number) == Some(key.number) {
            return Err(KeyRingError::Active {
                id: id.to_owned(),
                purpose: key.purpose.name(),
            });
        }
        let path = dir.join(format!("{id}.key"));
        fs::remove_file(&path).map_err(io(&path))?;
        let public = dir.join(format!("{id}.pub"));
        match fs::remove_file(&public) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&public)(e)),
            _ => Ok(()),
        }
    }

    /// Every key of a purpose, for verifying what older keys made.
    pub fn all(&self, purpose: Purpose) -> impl Iterator<Item = &Key> {
        self.keys.iter().filter(move |k| k.purpose == purpose)
    }
}

fn check_dir_permissions(dir: &Path) -> Result<(), KeyRingError> {
    let meta = fs::metadata(dir).map_err(io(dir))?;
    if !meta.is_dir() {
        return Err(KeyRingError::Invalid {
            path: dir.to_owned(),
            reason: "not a directory",
        });
    }
    if meta.mode() & 0o077 != 0 {
        return Err(KeyRingError::Permissions {
            path: dir.to_owned(),
            mode: meta.mode() & 0o777,
            want: 0o700,
        });
    }
    Ok(())
}

/// Key files in `dir`, parsed from their names; other files are ignored.
fn list_key_files(dir: &Path) -> Result<Vec<(PathBuf, Purpose, u32)>, KeyRingError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".key")) else {
            continue;
        };
        let Some((purpose, number)) = stem.rsplit_once('-') else {
            continue;
        };
        if let (Some(purpose), Ok(number)) = (Purpose::from_name(purpose), number.parse::<u32>()) {
            found.push((entry.path(), purpose, number));
        }
    }
    found.sort_by_key(|(_, p, n)| (p.name(), *n));
    Ok(found)
}

fn write_key(dir: &Path, purpose: Purpose, number: u32) -> Result<String, KeyRingError> {
    let id = format!("{}-{number}", purpose.name());
    let path = dir.join(format!("{id}.key"));
    let secret = SecretKey::generate();
    let mut encoded = STANDARD.encode(secret.expose());
    encoded.push('\n');
    // create_new: never overwrite an existing key; mode 0600 from the first byte written.
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(io(&path))?;
    let written = file
        .write_all(encoded.as_bytes())
        .and_then(|()| file.sync_all());
    encoded.zeroize();
    written.map_err(io(&path))?;
    if purpose == Purpose::Signing {
        write_public_key(dir, &id, &secret)?;
    }
    Ok(id)
}

/// `<id>.pub`: the Ed25519 public key of a signing seed, standard base64 of 32 bytes, the one
/// file a backend needs to verify assertions. Public, so readable by all (0644); it is copied to
/// the backend's key directory.
fn write_public_key(dir: &Path, id: &str, seed: &SecretKey) -> Result<(), KeyRingError> {
    let path = dir.join(format!("{id}.pub"));
    let public = ring::signature::Ed25519KeyPair::from_seed_unchecked(seed.expose())
        .map(|pair| STANDARD.encode(ring::signature::KeyPair::public_key(&pair)))
        .map_err(|_| KeyRingError::Invalid {
            path: path.clone(),
            reason: "not an Ed25519 seed",
        })?;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&path)
        .map_err(io(&path))?;
    // Readable by all: it is copied to backends that may run as other users. Set explicitly,
    // since the process umask (077, see the CLI) masks the mode given to open.
    file.write_all(format!("{public}\n").as_bytes())
        .and_then(|()| file.set_permissions(fs::Permissions::from_mode(0o644)))
        .and_then(|()| file.sync_all())
        .map_err(io(&path))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn init_creates_owner_only_keys_for_every_purpose() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        let ids = KeyRing::init(&dir).unwrap();
        assert_eq!(ids, ["identity-1", "pepper-1", "totp-1", "signing-1"]);
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        assert_eq!(
            fs::metadata(dir.join("identity-1.key")).unwrap().mode() & 0o777,
            0o600
        );
        let ring = KeyRing::load(&dir).unwrap();
        assert_ne!(
            ring.active(Purpose::Identity).unwrap().secret.expose(),
            ring.active(Purpose::Pepper).unwrap().secret.expose()
        );
    }

    #[test]
    fn init_refuses_to_overwrite_existing_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        KeyRing::init(&dir).unwrap();
        assert!(matches!(
            KeyRing::init(&dir),
            Err(KeyRingError::AlreadyInitialised { .. })
        ));
    }

    #[test]
    fn rotate_adds_a_new_active_key_and_keeps_the_old() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        KeyRing::init(&dir).unwrap();
        let old = KeyRing::load(&dir).unwrap();
        KeyRing::rotate(&dir).unwrap();
        let ring = KeyRing::load(&dir).unwrap();
        assert_eq!(ring.active(Purpose::Identity).unwrap().id, "identity-2");
        assert_eq!(ring.all(Purpose::Identity).count(), 2);
        let old_key = old.active(Purpose::Identity).unwrap();
        assert!(ring
            .all(Purpose::Identity)
            .any(|k| k.id == old_key.id && k.secret.expose() == old_key.secret.expose()));
    }

    #[test]
    fn retire_deletes_an_old_key_and_refuses_the_active_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        KeyRing::init(&dir).unwrap();
        KeyRing::rotate(&dir).unwrap();
        assert!(matches!(
            KeyRing::retire(&dir, "signing-2"),
            Err(KeyRingError::Active { .. })
        ));
        assert!(matches!(
            KeyRing::retire(&dir, "signing-7"),
            Err(KeyRingError::NotFound { .. })
        ));
        KeyRing::retire(&dir, "signing-1").unwrap();
        assert!(!dir.join("signing-1.key").exists());
        assert!(!dir.join("signing-1.pub").exists());
        assert!(dir.join("signing-2.pub").exists());
        let ring = KeyRing::load(&dir).unwrap();
        assert_eq!(ring.all(Purpose::Signing).count(), 1);
        assert_eq!(
            ring.active_ids(),
            ["identity-2", "pepper-2", "totp-2", "signing-2"]
        );
    }

    #[test]
    fn loose_permissions_are_refused_naming_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        KeyRing::init(&dir).unwrap();
        let key = dir.join("pepper-1.key");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o640)).unwrap();
        let e = KeyRing::load(&dir).unwrap_err().to_string();
        assert!(e.contains("pepper-1.key"), "{e}");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let e = KeyRing::load(&dir).unwrap_err().to_string();
        assert!(
            e.contains(dir.to_str().unwrap()) && e.contains("755"),
            "{e}"
        );
    }

    #[test]
    fn debug_output_never_shows_key_material() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        KeyRing::init(&dir).unwrap();
        let ring = KeyRing::load(&dir).unwrap();
        let printed = format!("{ring:?}");
        for k in ring.all(Purpose::Identity) {
            assert!(!printed.contains(&STANDARD.encode(k.secret.expose())));
        }
        assert!(printed.contains("<redacted>"));
    }
}
