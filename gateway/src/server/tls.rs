//! TLS material: loading the server certificate into a resolver that can be swapped at run
//! time, the client side for upstreams (their CA, optionally our client certificate), and
//! generating the ECDSA development certificate for `zonegate dev`.
//!
//! Protocol versions are not configurable: the listener offers TLS 1.3 and 1.2 only (rustls has
//! nothing older), so no configuration can weaken it.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// Serves the current certificate for every handshake; [`CertResolver::reload`] swaps it
/// atomically so a renewed certificate applies to new connections without a restart.
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
    cert_path: PathBuf,
    key_path: PathBuf,
    reload_fault: std::sync::Mutex<Option<String>>,
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertResolver")
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

impl CertResolver {
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<CertResolver, TlsError> {
        let key = load_certified_key(cert_path, key_path)?;
        Ok(CertResolver {
            current: ArcSwap::from_pointee(key),
            reload_fault: std::sync::Mutex::new(None),
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
        })
    }

    /// Re-read the files; on any error the old certificate stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = load_certified_key(&self.cert_path, &self.key_path)?;
        self.current.store(Arc::new(key));
        Ok(())
    }

    /// [`reload`](Self::reload), logged: `tls_certificate_reloaded` with the new fingerprint,
    /// or `tls_certificate_reload_failed` (an error) naming why. `trigger` says who asked.
    pub fn reload_logged(&self, trigger: &str) -> Result<(), TlsError> {
        let outcome = self.reload();
        if let Ok(mut fault) = self.reload_fault.lock() {
            *fault = outcome.as_ref().err().map(ToString::to_string);
        }
        match &outcome {
            Ok(()) => tracing::info!(
                target: "zonegate::tls",
                event = "tls_certificate_reloaded",
                trigger,
                tls_certificate_sha256 = %self.fingerprint(),
                "the TLS certificate was re-read; new connections get it"
            ),
            Err(e) => tracing::error!(
                target: "zonegate::tls",
                event = "tls_certificate_reload_failed",
                trigger,
                error = %e,
                "the TLS certificate files could not be loaded; the old certificate stays in use"
            ),
        }
        outcome
    }

    /// Why the last reload was refused, until one succeeds (the old certificate serves).
    pub fn reload_fault(&self) -> Option<String> {
        self.reload_fault.lock().ok().and_then(|f| f.clone())
    }

    /// The SHA-256 of the served leaf certificate (DER), hex: what `openssl x509 -fingerprint
    /// -sha256` prints, so an operator can tell which certificate a reload left in use.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let current = self.current.load();
        current
            .cert
            .first()
            .map(|leaf| hex::encode(Sha256::digest(leaf.as_ref())))
            .unwrap_or_default()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The client configuration for TLS to an upstream: only certificates chaining to the CA in
/// `ca_file` are trusted (never the system's roots: an upstream is an internal service), TLS 1.3
/// and 1.2 only, and `client` (certificate and key files) presented for mutual TLS.
pub fn upstream_client_config(
    ca_file: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let invalid = |path: &Path, reason: &str| TlsError::Invalid {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(ca_file)? {
        roots
            .add(cert)
            .map_err(|_| invalid(ca_file, "not a usable CA certificate"))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|_| invalid(ca_file, "no TLS versions available"))?
    .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert_path, key_path)) => {
            let certs = read_certs(cert_path)?;
            let key = read_key(key_path)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|_| invalid(key_path, "the key does not match the client certificate"))?
        }
    };
    Ok(Arc::new(config))
}

fn read_certs(path: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, TlsError> {
    let pem = fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_owned(),
        source,
    })?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| TlsError::Invalid {
            path: path.to_owned(),
            reason: "not a PEM certificate chain".to_owned(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Invalid {
            path: path.to_owned(),
            reason: "no certificate found".to_owned(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<rustls::pki_types::PrivateKeyDer<'static>, TlsError> {
    let invalid = |reason: &str| TlsError::Invalid {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let pem = fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_owned(),
        source,
    })?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|_| invalid("not a PEM private key"))?
        .ok_or_else(|| invalid("no private key found"))
}

fn load_certified_key(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, TlsError> {
    let certs = read_certs(cert_path)?;
    let key = read_key(key_path)?;
    let signing =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(|_| TlsError::Invalid {
            path: key_path.to_owned(),
            reason: "unsupported private key type".to_owned(),
        })?;
    Ok(CertifiedKey::new(certs, signing))
}

/// Write a self-signed ECDSA P-256 certificate for `localhost`, 127.0.0.1 and ::1 unless the
/// files already exist. Returns whether it generated one. The key file is created 0600.
pub fn ensure_dev_certificate(cert_path: &Path, key_path: &Path) -> Result<bool, TlsError> {
    if cert_path.exists() && key_path.exists() {
        return Ok(false);
    }
    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let generated = rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Invalid {
        path: cert_path.to_owned(),
        reason: format!("generating the development certificate failed: {e}"),
    })?;
    for path in [cert_path, key_path] {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|source| TlsError::Io {
                path: dir.to_owned(),
                source,
            })?;
        }
    }
    write_file(
        key_path,
        generated.signing_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_file(cert_path, generated.cert.pem().as_bytes(), 0o644)?;
    Ok(true)
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let io = |source| TlsError::Io {
        path: path.to_owned(),
        source,
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn dev_certificate_is_ecdsa_and_loads() {
        let tmp = tempfile::tempdir().unwrap();
        let (c, k) = (
            tmp.path().join("tls/cert.pem"),
            tmp.path().join("tls/key.pem"),
        );
        assert!(ensure_dev_certificate(&c, &k).unwrap());
        assert!(
            !ensure_dev_certificate(&c, &k).unwrap(),
            "existing files are kept"
        );
        let resolver = CertResolver::load(&c, &k).unwrap();
        let key = resolver.current.load();
        assert_eq!(key.key.algorithm(), rustls::SignatureAlgorithm::ECDSA);
        resolver.reload().unwrap();
    }

    #[test]
    fn a_broken_key_file_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let (c, k) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
        ensure_dev_certificate(&c, &k).unwrap();
        fs::write(&k, "garbage").unwrap();
        let e = CertResolver::load(&c, &k).unwrap_err().to_string();
        assert!(e.contains("key.pem"), "{e}");
    }
}
