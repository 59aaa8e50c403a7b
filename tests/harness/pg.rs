//! A scratch PostgreSQL database for a test, on the server `ZONEGATE_TEST_POSTGRES_URL` names
//! (`.ci/run` sets it), dropped with the guard.

use sqlx::Connection;

pub struct ScratchDatabase {
    admin_url: String,
    pub name: String,
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

impl ScratchDatabase {
    /// A new, empty database; `None` (and a line saying the test skips) when no server is
    /// configured.
    pub fn create(test: &str) -> Option<ScratchDatabase> {
        let Ok(admin_url) = std::env::var("ZONEGATE_TEST_POSTGRES_URL") else {
            eprintln!("ZONEGATE_TEST_POSTGRES_URL is not set: skipping {test}");
            return None;
        };
        let name = format!("zg_e2e_{}", uuid::Uuid::new_v4().simple());
        block_on(async {
            let mut c = sqlx::PgConnection::connect(&admin_url).await.unwrap();
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut c)
                .await
                .unwrap();
        });
        Some(ScratchDatabase { admin_url, name })
    }

    /// The URL of the database through `host:port` (a proxy in front of the server), with the
    /// configured user.
    pub fn url_via(&self, host_port: std::net::SocketAddr) -> String {
        let url = url_parts(&self.admin_url);
        format!("postgres://{}@{host_port}/{}", url.user, self.name)
    }

    /// The server's address, as configured.
    pub fn server(&self) -> std::net::SocketAddr {
        let url = url_parts(&self.admin_url);
        std::net::ToSocketAddrs::to_socket_addrs(&url.host_port)
            .unwrap()
            .next()
            .unwrap()
    }
}

struct Parts {
    user: String,
    host_port: String,
}

/// `postgres://user@host:port/db` (no password: the test server trusts loopback).
fn url_parts(url: &str) -> Parts {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (authority, _) = rest.split_once('/').unwrap_or((rest, ""));
    let (user, host_port) = authority.split_once('@').unwrap_or(("postgres", authority));
    let host_port = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5432")
    };
    Parts {
        user: user.to_owned(),
        host_port,
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Best effort, on a thread of its own (a test may hold a runtime).
        let _ = std::thread::spawn(move || {
            block_on(async {
                let mut c = sqlx::PgConnection::connect(&admin_url).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut c)
                    .await
                    .ok()
            })
        })
        .join();
    }
}
