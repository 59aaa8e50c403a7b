//! The process around the listeners: who it runs as, which signals do what, and graceful
//! upgrades.
//!
//! Least privilege: started as root (to bind 443 and 80), the gateway binds its listeners
//! first, then becomes `[server] user` (and `group`) for good, before it opens the database or
//! reads a key, so everything it creates belongs to that user. pingora binds inside its own
//! runtimes, so the listeners bound as root reach it through its socket hand-over, the same
//! path a graceful upgrade takes, over a socket in a fresh directory only the new user can
//! enter. As root without `[server] user` the gateway refuses to start; `user = "root"` says
//! so on purpose (a container whose root is unprivileged).
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

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::io::AsRawFd;
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

/// Why the gateway cannot become the user it should run as.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("running as root: set [server] user (and group) to the account the gateway should become after binding its listeners, or start it as that user (with CAP_NET_BIND_SERVICE for ports below 1024); `user = \"root\"` keeps root on purpose")]
    Root,
    #[error("server.user: no user `{0}` on this system")]
    UnknownUser(String),
    #[error("server.group: no group `{0}` on this system")]
    UnknownGroup(String),
    #[error("server.user is `{user}` (uid {wanted}) but the gateway runs as uid {actual} and cannot switch; start it as root or as `{user}`")]
    CannotSwitch {
        user: String,
        wanted: u32,
        actual: u32,
    },
    #[error("cannot look up server.user or server.group: {0}")]
    Lookup(std::io::Error),
    #[error("cannot bind {addr} before dropping root: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source} (is another gateway running? each instance needs its own listen addresses, the platform listener's included)")]
    InUse {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot become uid {uid} gid {gid}: {source}")]
    Switch {
        uid: u32,
        gid: u32,
        source: std::io::Error,
    },
    #[error("cannot create the socket hand-over directory {path}: {source}")]
    Handover {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Who the configured user is, when the process must become someone else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
}

/// What `[server] user` and `group` ask of a process running as `euid`: nothing (`None`), or
/// a switch. Errors name what is wrong; `check-config` runs this too.
pub fn plan(server: &crate::config::Server, euid: u32) -> Result<Option<Switch>, IdentityError> {
    let Some(user) = &server.user else {
        return if euid == 0 {
            Err(IdentityError::Root)
        } else {
            Ok(None)
        };
    };
    let account = zonegate_sys::users::user(user)
        .map_err(IdentityError::Lookup)?
        .ok_or_else(|| IdentityError::UnknownUser(user.clone()))?;
    let gid = match &server.group {
        Some(group) => zonegate_sys::users::group(group)
            .map_err(IdentityError::Lookup)?
            .ok_or_else(|| IdentityError::UnknownGroup(group.clone()))?,
        None => account.gid,
    };
    if account.uid == euid {
        return Ok(None);
    }
    if euid != 0 {
        return Err(IdentityError::CannotSwitch {
            user: user.clone(),
            wanted: account.uid,
            actual: euid,
        });
    }
    Ok(Some(Switch {
        user: user.clone(),
        uid: account.uid,
        gid,
    }))
}

/// Listeners bound as root, waiting to be handed to pingora after the switch.
#[derive(Debug)]
pub struct Handover {
    listeners: Vec<(String, std::net::TcpListener)>,
    dir: PathBuf,
}

impl Handover {
    /// The socket pingora receives the listeners on (its "upgrade" path).
    pub fn socket(&self) -> PathBuf {
        self.dir.join("handover.sock")
    }

    /// Send the listeners to pingora's bootstrap, which waits on [`Self::socket`]; runs on a
    /// thread of its own while the bootstrap blocks. The listeners are closed here afterwards:
    /// pingora holds its own descriptors for them.
    pub fn send(self) -> Result<(), String> {
        let mut fds = pingora::server::Fds::new();
        for (addr, listener) in &self.listeners {
            fds.add(addr.clone(), listener.as_raw_fd());
        }
        let socket = self.socket().display().to_string();
        fds.send_to_sock(socket.as_str())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Remove the hand-over directory once pingora has the listeners.
    pub fn clean_up(dir: &Path) {
        let _ = std::fs::remove_dir_all(dir);
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// How the listening sockets reach pingora.
#[derive(Debug)]
pub enum Sockets {
    /// pingora binds them itself.
    Bind,
    /// From a running gateway (`serve --upgrade`).
    Upgrade,
    /// Bound as root before the switch to `[server] user`.
    Handover(Handover),
}

/// Check that every address in `listen` can be bound now. pingora binds in its own threads and
/// aborts the process when it cannot, after the other listeners already serve: a taken
/// address is found first, and named.
pub fn ensure_free(listen: &[String]) -> Result<(), IdentityError> {
    for addr in listen {
        std::net::TcpListener::bind(addr.as_str()).map_err(|source| IdentityError::InUse {
            addr: addr.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Become the configured user, binding `listen` first when that means giving up root (unless
/// the sockets will come from a running gateway, `upgrade`). Called before anything is opened
/// or created, so the database, the outbox and exports belong to the new user.
pub fn become_configured_user(
    server: &crate::config::Server,
    listen: &[String],
    upgrade: bool,
) -> Result<Sockets, IdentityError> {
    let plain = if upgrade {
        Sockets::Upgrade
    } else {
        Sockets::Bind
    };
    let Some(switch) = plan(server, zonegate_sys::users::effective_uid())? else {
        if server.user.as_deref() == Some("root") {
            tracing::warn!(target: "zonegate::server", event = "running_as_root", "server.user is root: the gateway keeps full privileges");
        }
        if !upgrade {
            ensure_free(listen)?;
        }
        return Ok(plain);
    };
    let mut listeners = Vec::new();
    if !upgrade {
        for addr in listen {
            let bound = std::net::TcpListener::bind(addr.as_str())
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|source| IdentityError::Bind {
                    addr: addr.clone(),
                    source,
                })?;
            listeners.push((addr.clone(), bound));
        }
    }
    zonegate_sys::users::switch_to(switch.uid, switch.gid).map_err(|source| {
        IdentityError::Switch {
            uid: switch.uid,
            gid: switch.gid,
            source,
        }
    })?;
    tracing::info!(
        target: "zonegate::server",
        event = "privileges_dropped",
        user = %switch.user,
        uid = switch.uid,
        gid = switch.gid
    );
    if upgrade {
        return Ok(plain);
    }
    // Made by the new user, 0700: only it can reach the socket pingora makes 0666 in there.
    let dir = std::env::temp_dir().join(format!(
        "zonegate-handover-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|source| IdentityError::Handover {
            path: dir.clone(),
            source,
        })?;
    Ok(Sockets::Handover(Handover { listeners, dir }))
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
