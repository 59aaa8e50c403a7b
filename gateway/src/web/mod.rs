//! What the gateway's two HTTP layers (the [`crate::pipeline`] and the [`crate::api`]) share:
//! the one rejection type and the one place it becomes a response, the security headers every
//! response carries, the cookies, and the CSRF rules.

pub mod authz;
pub mod cookies;
pub mod csrf;
pub mod rejection;
pub mod security;

pub use rejection::{Challenge, Rejection};
