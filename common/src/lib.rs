//! What the gateway (`zonegate`) and the zone backend share, so the two cannot drift apart:
//!
//! - [`clock`]: the one time source both take by injection, so tests control time;
//! - [`time`]: RFC 3339 formatting and parsing (on the `time` crate, never by hand);
//! - [`problem`]: the RFC 9457 problem details object both render every error as;
//! - [`digest`]: the RFC 9530 body digest the identity assertion binds;
//! - [`dburl`]: a database password joined to its URL only to connect.
//!
//! Nothing here knows HTTP servers, databases or the proxy.

pub mod clock;
pub mod dburl;
pub mod digest;
pub mod problem;
pub mod time;

pub use clock::{Clock, ManualClock, SystemClock};
pub use digest::{content_digest, EMPTY_CONTENT_DIGEST};
pub use problem::{Problem, PROBLEM_JSON};
