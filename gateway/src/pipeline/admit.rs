//! Stage 1, admit: give the request its id, and find out who is on the other end of the socket
//! (the client address, believed from a forwarded header only when the socket peer is a
//! configured trusted proxy) and what it says it is (its user agent, for the audit trail).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderMap;
use ipnet::IpNet;
use rand::RngCore;

/// Request ids: a random per-process prefix and a counter. Unique, unguessable across restarts
/// and cheap (no syscall per request).
#[derive(Debug)]
pub struct RequestIds {
    /// 16 hex digits of a random prefix, unique to this process.
    prefix: String,
    counter: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        RequestIds {
            prefix: format!("{:016x}", rand::rngs::OsRng.next_u64()),
            counter: AtomicU64::new(0),
        }
    }
}

impl RequestIds {
    /// The prefix and a counter of at least 8 hex digits. Written by hand: `format!` cost
    /// more than the rest of admission.
    pub fn next(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let digits = (16 - n.leading_zeros() as usize / 4).max(8);
        let mut id = String::with_capacity(self.prefix.len() + digits);
        id.push_str(&self.prefix);
        for shift in (0..digits).rev() {
            let nibble = (n >> (shift * 4)) & 0xf;
            id.push(char::from(HEX[nibble as usize]));
        }
        id
    }
}

/// What admission learned about a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admitted {
    pub client: Option<IpAddr>,
    pub user_agent: Option<String>,
}

/// Admit a request from the socket peer `peer` (none for a non-IP socket).
pub fn admit(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> Admitted {
    Admitted {
        client: peer.map(|p| client_address(p, headers, trusted)),
        user_agent: headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    }
}

/// Whether `ip` is one of the configured trusted proxies.
pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// The address of the client: the socket peer, unless the peer is a trusted proxy, in which case
/// the right-most X-Forwarded-For entry that is not itself a trusted proxy.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| is_trusted(*ip, trusted);
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            // A malformed hop ends the chain we can believe.
            Err(_) => break,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    use crate::pipeline::sanitise::tests::headers;

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = headers(&[("x-forwarded-for", "203.0.113.9, 10.1.1.1")]);
        let direct: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(client_address(direct, &h, &trusted), direct);
        let proxy: IpAddr = "10.2.2.2".parse().unwrap();
        assert_eq!(
            client_address(proxy, &h, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        let junk = headers(&[("x-forwarded-for", "nonsense")]);
        assert_eq!(client_address(proxy, &junk, &trusted), proxy);
    }

    #[test]
    fn request_ids_are_unique_and_fixed_width() {
        let ids = RequestIds::default();
        let (a, b) = (ids.next(), ids.next());
        assert_ne!(a, b);
        assert_eq!(a.len(), 24);
        assert!(
            a.ends_with("00000000") && b.ends_with("00000001"),
            "{a} {b}"
        );
        ids.counter.store(0xabc_def01_u64, Ordering::Relaxed);
        assert!(ids.next().ends_with("abcdef01"));
        ids.counter.store(0x1_0000_0000, Ordering::Relaxed);
        assert_eq!(&ids.next()[16..], "100000000");
    }
}
