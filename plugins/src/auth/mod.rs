//! Authentication: issued API keys ([`keys`]) and JWTs ([`jwt`]), producing a [`Caller`].

pub mod caller;
pub mod failure;
pub mod jwks;
pub mod jwt;
pub mod keys;

pub use caller::{Caller, CredentialKind, Scopes};
pub use failure::AuthFailure;
