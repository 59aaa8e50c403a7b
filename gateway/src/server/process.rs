//! The process around the listeners: which signals do what, and graceful upgrades.
//!
//! A graceful upgrade replaces the binary without refusing a connection: the new process is
//! started with `zonegate serve --upgrade`, which waits (up to 5 s) on `[server]
//! upgrade_socket` for the listening sockets; `SIGQUIT` to the old process sends them there
//! (pingora's fd transfer), keeps it accepting for 5 more seconds, then drains it like
//! `SIGTERM`. Both processes accept on the same sockets meanwhile, so no connection attempt is
//! refused and requests in flight on the old one finish.
//!
//! The socket is an opening into the process: whoever connects to it first while a new process
//! waits hands it listening sockets. pingora makes it mode 0666, so its directory is what
//! protects it: it must be owned by the gateway's user and closed to everyone else (0700), or
//! the gateway refuses to start.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};

/// Why the upgrade socket cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("server.upgrade_socket: directory {dir} does not exist; create it with `mkdir -m 700 {dir}` as the gateway's user")]
    NoDirectory { dir: PathBuf },
    #[error("server.upgrade_socket: {dir} is not a directory")]
    NotDirectory { dir: PathBuf },
    #[error("server.upgrade_socket: {dir} is open to group or others (mode {mode:o}); run `chmod 700 {dir}`")]
    Open { dir: PathBuf, mode: u32 },
    #[error("server.upgrade_socket: {dir} belongs to uid {owner}, not to the gateway's user (uid {uid})")]
    Owner { dir: PathBuf, owner: u32, uid: u32 },
    #[error("`serve --upgrade` needs [server] upgrade_socket, where the running gateway sends its sockets")]
    NotConfigured,
}

/// Check the directory of the upgrade socket: owned by this process's user, 0700.
pub fn check_upgrade_socket(socket: &Path) -> Result<(), UpgradeError> {
    let dir = match socket.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let meta = match std::fs::metadata(&dir) {
        Ok(m) => m,
        Err(_) => return Err(UpgradeError::NoDirectory { dir }),
    };
    if !meta.is_dir() {
        return Err(UpgradeError::NotDirectory { dir });
    }
    let uid = zonegate_sys::users::effective_uid();
    if meta.uid() != uid {
        return Err(UpgradeError::Owner {
            dir,
            owner: meta.uid(),
            uid,
        });
    }
    if meta.mode() & 0o077 != 0 {
        return Err(UpgradeError::Open {
            dir,
            mode: meta.mode() & 0o777,
        });
    }
    Ok(())
}

/// The signals the gateway answers: `SIGINT` stops at once, `SIGTERM` drains, and `SIGQUIT`
/// hands the sockets to a waiting new process and then drains (or, without an upgrade
/// socket, only drains: pingora would otherwise send them to its default path in /tmp).
#[derive(Debug)]
pub struct Signals {
    pub upgrades: bool,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut quit), Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::quit()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            // Without signal handlers the process could not be stopped cleanly; it stops now.
            tracing::error!(target: "zonegate::server", event = "signals_unavailable");
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = quit.recv() => {
                tracing::info!(target: "zonegate::server", event = "upgrade_requested", upgrades = self.upgrades);
                if self.upgrades {
                    ShutdownSignal::GracefulUpgrade
                } else {
                    ShutdownSignal::GracefulTerminate
                }
            }
            _ = term.recv() => ShutdownSignal::GracefulTerminate,
            _ = int.recv() => ShutdownSignal::FastShutdown,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_socket_directory_must_be_closed_to_others() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        let socket = dir.join("upgrade.sock");
        assert!(matches!(
            check_upgrade_socket(&socket),
            Err(UpgradeError::NoDirectory { .. })
        ));
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = check_upgrade_socket(&socket).unwrap_err().to_string();
        assert!(e.contains("chmod 700") && e.contains("755"), "{e}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        check_upgrade_socket(&socket).unwrap();
    }
}
