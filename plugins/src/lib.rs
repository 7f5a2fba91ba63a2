//! modelgate's pipeline stages. No Pingora here: stages see plain `http` types, so each is
//! unit-testable and a Pingora upgrade touches only the gateway.
//!
//! A stage returns a [`Verdict`]: continue, or a [`Denial`] with a stable [`Code`]. `Err`
//! ([`StageError`]) means the stage itself broke; the route decides fail-closed or fail-open.

pub mod auth;
pub mod body;
pub mod extraction;
pub mod json_limits;
pub mod ratelimit;
pub mod schema;
pub mod stage;
pub mod verdict;

pub use stage::{RequestView, Stage, StageError};
pub use verdict::{Code, Denial, ErrorDetail, Verdict};
