//! Authentication: issued API keys ([`keys`], stored by [`keystore`]) and JWTs ([`jwt`],
//! keys from [`jwks`]), producing a [`Caller`]; [`failures`] slows brute force.

pub mod caller;
pub mod failure;
pub mod failures;
pub mod jwks;
pub mod jwt;
pub mod keys;
pub mod keystore;
pub mod token_cache;

pub use caller::{Caller, CredentialKind, HeaderValues, Scopes};
pub use failure::AuthFailure;
